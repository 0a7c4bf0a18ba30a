//! [`VncClient`]: a connected RFB session that keeps a current copy of the
//! remote screen, sends key and pointer events, and captures frames that are
//! guaranteed fresh.
//!
//! A `VncClient` is a cheap handle (`Clone`, an `Arc` inside); every method
//! takes `&self`, so tasks share one connection. Background tasks (see
//! [`session`]) keep the framebuffer current; they stop
//! when the last handle is dropped or [`VncClient::close`] is called. Every
//! message is written whole by a writer task, so dropping a pending call (for
//! example under `tokio::time::timeout`) never corrupts the stream; a message
//! already queued is still sent.
//!
//! # Freshness
//!
//! [`VncClient::snapshot`] returns the framebuffer as of the last complete
//! update: cheap, but possibly behind the screen.
//!
//! [`VncClient::capture`] returns a frame that reflects the screen after the
//! call began. It sends one non-incremental request for the whole screen and
//! takes the count of bytes received from the server right after writing it.
//! Only rectangles of updates whose first byte lies beyond that count can
//! complete the capture; it returns once they have covered every pixel.
//! Servers may split the answer over several updates or merge it with pending
//! incremental ones; updates finished while the request was being written are
//! kept and counted once the count is known. A DesktopSize change restarts
//! coverage for the new size with a new request.
//!
//! The byte count alone cannot tell the answer to our request from a late
//! answer to an *older* full-screen request, which the server encoded before
//! it saw ours. So older full answers must not be in flight: `connect` waits
//! for the answer to its own initial full-screen request, captures on one
//! connection take turns, and each sends exactly one request (plus one per
//! resize). What remains: when the whole screen changes, an incremental
//! update covering all of it, encoded just before the server read our request,
//! can complete a capture; such a frame predates the call by at most one
//! server update, and a capture started right after may take the late answer
//! of the previous one (bounded the same way). A server-side sync (TigerVNC's
//! Fence extension) would close this; base RFB has none.
//!
//! "Received" means read from the socket by the session's pump task, which
//! reads as soon as data is there; bytes the kernel held but the pump had not
//! yet read count as later ones.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::frame::Frame;
use crate::rfb::capture::{CaptureEvent, CaptureGuard, Started};
use crate::rfb::error::RfbError;
use crate::rfb::framebuffer::Framebuffer;
use crate::rfb::handshake::{self, ServerInfo};
use crate::rfb::protocol::{self, ClientMessage, Encoding, PixelFormat};
use crate::rfb::renewal::AccessRenewal;
use crate::rfb::session::{self, ClientStats, Shared};
use crate::rfb::tls::TlsSettings;
use crate::rfb::transport::{self, BoxedStream, Endpoint};
use crate::rfb::vencrypt::Credentials;

/// A capture with no fresh answer after this long sends its request again.
const RESEND_AFTER: Duration = Duration::from_millis(500);
/// A capture that heard nothing from the server this long forces a small
/// non-incremental update (reconnection on).
pub const STALL_PROBE: Duration = Duration::from_secs(2);
/// ...and after this long ends the session as stalled and reconnects.
pub const STALL_RECONNECT: Duration = Duration::from_secs(4);
/// Between reconnection attempts.
const RECONNECT_GAP: Duration = Duration::from_millis(250);

/// How to connect.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Password for VNC authentication (only the first 8 bytes count).
    pub password: Option<String>,
    /// Limit for connecting, for the handshake, and for each write.
    pub timeout: Duration,
    /// Encodings in order of preference, pseudo-encodings included.
    pub encodings: Vec<Encoding>,
    /// Username for VeNCrypt Plain subtypes (TigerVNC `-PlainUsers`).
    pub username: Option<String>,
    /// Certificate checks for VeNCrypt X509 subtypes.
    pub tls: TlsSettings,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            password: None,
            timeout: Duration::from_secs(10),
            // ZRLE first: QEMU uses the first encoding it knows.
            encodings: vec![
                Encoding::Zrle,
                Encoding::CopyRect,
                Encoding::Raw,
                Encoding::DesktopSize,
                protocol::QEMU_EXTENDED_KEY_EVENT,
                protocol::QEMU_POINTER_MOTION_CHANGE,
            ],
            username: None,
            tls: TlsSettings::default(),
        }
    }
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("encodings", &self.encodings)
            .field("username", &self.username)
            .field("tls", &self.tls)
            .finish()
    }
}

/// A connected VNC session. Clone it to share it between tasks.
#[derive(Clone)]
pub struct VncClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// The live session; replaced when the client reconnects.
    session: Mutex<Session>,
    /// Captures take turns: one full-screen request in flight at a time.
    capture_turn: tokio::sync::Mutex<()>,
    /// One reconnection at a time.
    reconnect_turn: tokio::sync::Mutex<()>,
    info: ServerInfo,
    label: String,
    /// Where the last pointer event put the pointer.
    pointer_at: Mutex<(u16, u16)>,
    /// How to connect again (none for a stream handed in by the caller).
    endpoint: Option<Endpoint>,
    /// Asked for a new endpoint and password before each reconnect attempt
    /// (single-use tickets); wins over `endpoint`.
    renewal: Mutex<Option<Arc<dyn AccessRenewal>>>,
    opts: ConnectOptions,
    /// Reconnect when the connection is lost or stalls (off by default).
    reconnect: AtomicBool,
    /// Set by [`VncClient::close`]: never reconnect after it.
    closed: AtomicBool,
    reconnects: AtomicU64,
}

/// One connection's shared state and its update counter.
#[derive(Clone)]
struct Session {
    shared: Arc<Shared>,
    updates: watch::Receiver<u64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.session.lock().unwrap_or_else(|p| p.into_inner()).shared.terminate("the client was dropped");
    }
}

impl std::fmt::Debug for VncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VncClient({}, {:?})", self.inner.label, self.inner.info.name)
    }
}

/// Handshake, setup and first full frame over `stream`.
async fn open_session(
    stream: BoxedStream,
    label: &str,
    host: Option<&str>,
    opts: &ConnectOptions,
) -> Result<(Session, ServerInfo), RfbError> {
    let creds =
        Credentials { password: opts.password.as_deref(), username: opts.username.as_deref(), tls: &opts.tls, host };
    let (stream, info) = match tokio::time::timeout(opts.timeout, handshake::handshake_with(stream, &creds)).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(RfbError::timeout(format!("the RFB handshake with {label}"), opts.timeout));
        }
    };
    let size = (u32::from(info.width), u32::from(info.height));
    let work = Framebuffer::new(size.0, size.1)?;
    let (read_half, mut write_half) = tokio::io::split(stream);

    // Pixel format and encodings go out before the first request, so every
    // update uses them.
    let codes = opts.encodings.iter().map(|e| e.code()).collect();
    let mut setup = ClientMessage::SetPixelFormat(PixelFormat::RGBX).encode();
    setup.extend_from_slice(&ClientMessage::SetEncodings(codes).encode());
    setup.extend_from_slice(&session::full_request(false, size));
    session::write_message(&mut write_half, &setup, opts.timeout, "the session setup").await?;

    let (shared, updates, initial) = session::start(read_half, write_half, work, opts.timeout);
    debug!(peer = label, name = %info.name, width = size.0, height = size.1, version = %info.version, "RFB session started");
    let deadline = Instant::now() + opts.timeout;
    let first = await_capture(&shared, label, initial.id, initial.events, false, deadline, opts.timeout, false).await;
    if let Err(e) = first {
        shared.terminate("the first framebuffer update failed");
        return Err(match e {
            RfbError::Timeout { after, .. } => {
                RfbError::timeout(format!("the first framebuffer update from {label}"), after)
            }
            other => other,
        });
    }
    Ok((Session { shared, updates }, info))
}

/// Drive capture `id` on `shared` to its end: send its request (unless
/// already sent), wait for coverage, ask again after a resize. With `stall`
/// set, a server silent for [`STALL_PROBE`] gets a small non-incremental
/// request, and one silent for [`STALL_RECONNECT`] has its session ended as
/// lost (the caller reconnects).
#[allow(clippy::too_many_arguments)]
async fn await_capture(
    shared: &Arc<Shared>,
    label: &str,
    id: u64,
    mut events: mpsc::UnboundedReceiver<CaptureEvent>,
    mut send_request: bool,
    deadline: Instant,
    timeout: Duration,
    stall: bool,
) -> Result<Frame, RfbError> {
    let guard = CaptureGuard { shared, id };
    let size = || {
        let st = shared.lock();
        (st.frame.width(), st.frame.height())
    };
    let answer = async {
        let mut heard = (shared.bytes_received.load(Ordering::SeqCst), Instant::now());
        let mut probed = false;
        loop {
            while send_request {
                let request = session::full_request(false, size());
                let received = shared.write(request, "a FramebufferUpdateRequest").await?;
                match shared.start_capture(id, received)? {
                    Started::Complete(frame) => return Ok(frame),
                    Started::Resized => continue,
                    Started::Waiting | Started::Finished => send_request = false,
                }
            }
            // The cut-off is read after the write returns; if the writer
            // was preempted between the two, the server's whole answer can
            // land before it and look stale. Ask again rather than wait
            // for an answer that was already discarded.
            match tokio::time::timeout(RESEND_AFTER, events.recv()).await {
                Ok(Some(CaptureEvent::Done(frame))) => return Ok(frame),
                Ok(Some(CaptureEvent::Resized)) => send_request = true,
                Ok(None) => return Err(shared.disconnected_error()),
                Err(_) => {
                    debug!(capture = id, "no fresh answer yet; sending the request again");
                    send_request = true;
                    let now = shared.bytes_received.load(Ordering::SeqCst);
                    if now != heard.0 {
                        heard = (now, Instant::now());
                        probed = false;
                    }
                    let quiet = heard.1.elapsed();
                    if stall && quiet >= STALL_RECONNECT {
                        let reason = format!("no data from the server for {:.1}s (stalled)", quiet.as_secs_f64());
                        shared.lose(&reason);
                        return Err(RfbError::disconnected(reason));
                    }
                    if stall && quiet >= STALL_PROBE && !probed {
                        debug!(capture = id, "server silent; forcing a small non-incremental update");
                        let probe = ClientMessage::FramebufferUpdateRequest {
                            incremental: false,
                            x: 0,
                            y: 0,
                            width: 1,
                            height: 1,
                        };
                        shared.write(probe.encode(), "a FramebufferUpdateRequest").await?;
                        probed = true;
                    }
                }
            }
        }
    };
    match tokio::time::timeout_at(deadline, answer).await {
        Ok(result) => result,
        Err(_) => {
            let progress = match guard.progress() {
                Some((fraction, (w, h))) => {
                    format!("updates sent after the request covered {:.1}% of the {w}x{h} screen", fraction * 100.0)
                }
                None => "the capture is no longer pending".to_string(),
            };
            Err(RfbError::timeout(format!("a fresh frame from {label} ({progress})"), timeout))
        }
    }
}

impl VncClient {
    /// Connect to `endpoint`, run the handshake, start the session and wait
    /// for the first full framebuffer update (so [`VncClient::snapshot`] is the
    /// real screen from the start).
    pub async fn connect(endpoint: &Endpoint, opts: &ConnectOptions) -> Result<VncClient, RfbError> {
        let stream = transport::connect(endpoint, opts.timeout).await?;
        let label = endpoint.to_string();
        let (session, info) = open_session(stream, &label, endpoint.host(), opts).await?;
        Ok(VncClient::new(session, info, label, Some(endpoint.clone()), opts))
    }

    /// Like [`VncClient::connect`] over an already open stream (any
    /// transport); `label` names the peer in logs and errors. Such a client
    /// cannot reconnect.
    pub async fn connect_stream(
        stream: BoxedStream,
        label: &str,
        opts: &ConnectOptions,
    ) -> Result<VncClient, RfbError> {
        let (session, info) = open_session(stream, label, None, opts).await?;
        Ok(VncClient::new(session, info, label.to_string(), None, opts))
    }

    fn new(
        session: Session,
        info: ServerInfo,
        label: String,
        endpoint: Option<Endpoint>,
        opts: &ConnectOptions,
    ) -> Self {
        VncClient {
            inner: Arc::new(Inner {
                session: Mutex::new(session),
                capture_turn: tokio::sync::Mutex::new(()),
                reconnect_turn: tokio::sync::Mutex::new(()),
                info,
                label,
                pointer_at: Mutex::new((0, 0)),
                endpoint,
                renewal: Mutex::new(None),
                opts: opts.clone(),
                reconnect: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                reconnects: AtomicU64::new(0),
            }),
        }
    }

    /// Reconnect (and authenticate again) when the connection is lost or
    /// the server stalls: a capture with no data from the server for
    /// [`STALL_RECONNECT`] ends its session and opens a new one, and a
    /// capture or input event that finds the session gone opens a new one,
    /// all within the call's own time limit. Off by default; the runner and
    /// the `smoke vnc` verbs turn it on.
    pub fn set_reconnect(&self, on: bool) {
        self.inner.reconnect.store(on, Ordering::SeqCst);
    }

    /// Reconnect through `renewal`: before each attempt it hands out a new
    /// endpoint and password (servers whose tickets admit one connection).
    /// Reconnection itself is still switched by [`VncClient::set_reconnect`].
    pub fn set_renewal(&self, renewal: Arc<dyn AccessRenewal>) {
        *self.inner.renewal.lock().unwrap_or_else(|p| p.into_inner()) = Some(renewal);
    }

    fn renewal(&self) -> Option<Arc<dyn AccessRenewal>> {
        self.inner.renewal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How often this client reconnected.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::SeqCst)
    }

    fn session(&self) -> Session {
        self.inner.session.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn shared(&self) -> Arc<Shared> {
        self.session().shared
    }

    /// Whether a failure on `shared` may be healed by reconnecting.
    fn may_reconnect(&self, shared: &Shared) -> bool {
        self.inner.reconnect.load(Ordering::SeqCst)
            && !self.inner.closed.load(Ordering::SeqCst)
            && (self.inner.endpoint.is_some() || self.renewal().is_some())
            && shared.lock().lost
    }

    /// Replace the session `old` by a new connection, trying until
    /// `deadline`; `cause` is why the old one ended.
    async fn reconnect(&self, old: &Arc<Shared>, deadline: Instant, cause: &RfbError) -> Result<(), RfbError> {
        let _turn = tokio::time::timeout_at(deadline, self.inner.reconnect_turn.lock())
            .await
            .map_err(|_| RfbError::disconnected(format!("{cause}; no time left to reconnect")))?;
        if !Arc::ptr_eq(&self.shared(), old) {
            return Ok(()); // another task reconnected meanwhile
        }
        let renewal = self.renewal();
        if self.inner.endpoint.is_none() && renewal.is_none() {
            return Err(RfbError::disconnected(cause.to_string()));
        }
        let label = &self.inner.label;
        warn!(peer = %label, %cause, "VNC connection lost; reconnecting");
        let mut last = String::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(RfbError::disconnected(format!(
                    "{}; reconnecting to {label} did not succeed in time (last attempt: {last})",
                    match cause {
                        RfbError::Disconnected { reason } => reason.clone(),
                        other => other.to_string(),
                    }
                )));
            }
            let mut opts = self.inner.opts.clone();
            opts.timeout = opts.timeout.min(remaining);
            let attempt = async {
                let endpoint = match &renewal {
                    Some(r) => {
                        let fresh = tokio::time::timeout(opts.timeout, r.renew())
                            .await
                            .map_err(|_| RfbError::timeout("a fresh VNC access", opts.timeout))??;
                        opts.password = fresh.password;
                        fresh.endpoint
                    }
                    None => self.inner.endpoint.clone().ok_or_else(|| RfbError::disconnected(cause.to_string()))?,
                };
                let stream = transport::connect(&endpoint, opts.timeout).await?;
                open_session(stream, label, endpoint.host(), &opts).await
            };
            match attempt.await {
                Ok((session, _)) => {
                    *self.inner.session.lock().unwrap_or_else(|p| p.into_inner()) = session;
                    self.inner.reconnects.fetch_add(1, Ordering::SeqCst);
                    warn!(peer = %label, "reconnected");
                    return Ok(());
                }
                Err(e @ (RfbError::AuthFailed { .. } | RfbError::AuthRequired)) => return Err(e),
                Err(e) => {
                    debug!(error = %e, "reconnect attempt failed");
                    last = e.to_string();
                    tokio::time::sleep(RECONNECT_GAP.min(deadline.saturating_duration_since(Instant::now()))).await;
                }
            }
        }
    }

    /// Write an input message; if the session was lost, reconnect (within
    /// the connect timeout) and send it on the new one.
    async fn send_input(&self, message: Vec<u8>, what: &'static str) -> Result<(), RfbError> {
        let shared = self.shared();
        match shared.write(message.clone(), what).await {
            Err(e @ RfbError::Disconnected { .. }) if self.may_reconnect(&shared) => {
                self.reconnect(&shared, Instant::now() + self.inner.opts.timeout, &e).await?;
                self.shared().write(message, what).await.map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }

    /// The desktop name from ServerInit.
    pub fn desktop_name(&self) -> String {
        self.inner.info.name.clone()
    }

    /// What the handshake agreed on and ServerInit said.
    pub fn server_info(&self) -> &ServerInfo {
        &self.inner.info
    }

    /// Current framebuffer size.
    pub fn size(&self) -> (u32, u32) {
        let shared = self.shared();
        let st = shared.lock();
        (st.frame.width(), st.frame.height())
    }

    /// The framebuffer as of the last complete update, with no freshness
    /// promise (what a recorder samples).
    pub fn snapshot(&self) -> Frame {
        self.shared().lock().frame.clone()
    }

    /// How many complete FramebufferUpdates have been applied.
    pub fn update_seq(&self) -> u64 {
        self.shared().lock().seq
    }

    /// A receiver that changes after each complete update (its value is
    /// [`VncClient::update_seq`]); `changed()` fails once the session ends.
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.session().updates
    }

    /// Counters for diagnostics.
    pub fn stats(&self) -> ClientStats {
        let shared = self.shared();
        let mut stats = shared.lock().stats.clone();
        stats.bytes_received = shared.bytes_received.load(std::sync::atomic::Ordering::SeqCst);
        stats
    }

    pub fn is_connected(&self) -> bool {
        self.shared().lock().disconnected.is_none()
    }

    /// A frame that reflects the screen after this call began (see the
    /// module docs), or [`RfbError::Timeout`] after `timeout`. With
    /// reconnection on, a lost or stalled session is replaced within
    /// `timeout`.
    pub async fn capture(&self, timeout: Duration) -> Result<Frame, RfbError> {
        let deadline = Instant::now() + timeout;
        let _turn = tokio::time::timeout_at(deadline, self.inner.capture_turn.lock())
            .await
            .map_err(|_| RfbError::timeout("the previous capture on this connection", timeout))?;
        loop {
            let shared = self.shared();
            let stall = self.inner.reconnect.load(Ordering::SeqCst) && self.inner.endpoint.is_some();
            let result = async {
                let (events_tx, events) = mpsc::unbounded_channel();
                let id = shared.register_capture(events_tx)?;
                await_capture(&shared, &self.inner.label, id, events, true, deadline, timeout, stall).await
            }
            .await;
            match result {
                Err(e @ RfbError::Disconnected { .. }) if self.may_reconnect(&shared) => {
                    self.reconnect(&shared, deadline, &e).await?;
                }
                other => return other,
            }
        }
    }

    /// Press (`down`) or release a key, by X11 keysym.
    pub async fn key(&self, keysym: u32, down: bool) -> Result<(), RfbError> {
        let message = ClientMessage::KeyEvent { down, keysym }.encode();
        self.send_input(message, "a KeyEvent").await
    }

    /// True once the server acknowledged QEMU Extended Key Event: keys can
    /// go by scancode, through the target's own keymap.
    pub fn takes_scancodes(&self) -> bool {
        self.shared().lock().scancodes
    }

    /// The pointer's shape, when the Cursor pseudo-encoding was asked for
    /// and the server sent one (the server then leaves it out of frames).
    pub fn cursor(&self) -> Option<Arc<crate::rfb::encodings::pseudo::CursorShape>> {
        self.shared().lock().cursor.clone()
    }

    /// What the server last said about its pointer (QEMU Pointer Motion
    /// Change): `Some(false)` for a relative pointer, `None` if it never said.
    pub fn pointer_absolute(&self) -> Option<bool> {
        self.shared().lock().pointer_absolute
    }

    /// Press or release a key by `scancode` (qnum numbering) when the server
    /// takes scancodes and `scancode` is not 0, else by `keysym`.
    pub async fn key_code(&self, keysym: u32, scancode: u16, down: bool) -> Result<(), RfbError> {
        if scancode == 0 || !self.takes_scancodes() {
            return self.key(keysym, down).await;
        }
        let message = ClientMessage::QemuKeyEvent { down, keysym, scancode: u32::from(scancode) }.encode();
        self.send_input(message, "a QEMU extended KeyEvent").await
    }

    /// Move the pointer to (x, y) with `buttons` held (bit 0 left, 1 middle,
    /// 2 right, 3/4 wheel up/down, 5/6 wheel left/right). On a server whose
    /// pointer is relative (QEMU without a tablet) the move is sent as the
    /// difference from the last position, as QEMU expects it (offset from
    /// 0x7fff).
    pub async fn pointer(&self, x: u16, y: u16, buttons: u8) -> Result<(), RfbError> {
        let (sx, sy) = if self.pointer_absolute() == Some(false) {
            let mut last = self.inner.pointer_at.lock().unwrap_or_else(|p| p.into_inner());
            let dx = i32::from(x) - i32::from(last.0);
            let dy = i32::from(y) - i32::from(last.1);
            *last = (x, y);
            let rel = |d: i32| (0x7fff + d).clamp(0, 0xffff) as u16;
            (rel(dx), rel(dy))
        } else {
            *self.inner.pointer_at.lock().unwrap_or_else(|p| p.into_inner()) = (x, y);
            (x, y)
        };
        let message = ClientMessage::PointerEvent { buttons, x: sx, y: sy }.encode();
        self.send_input(message, "a PointerEvent").await
    }

    /// Put `text` in the server's clipboard (Latin-1; other characters
    /// become `?`).
    pub async fn cut_text(&self, text: &str) -> Result<(), RfbError> {
        let message = ClientMessage::ClientCutText(protocol::latin1(text)).encode();
        self.send_input(message, "ClientCutText").await
    }

    /// End the session and close the connection: pending captures fail, and
    /// later calls on any handle return [`RfbError::Disconnected`].
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.shared().terminate("closed by the client");
        // Let the aborted tasks drop their halves of the stream.
        tokio::task::yield_now().await;
    }
}
