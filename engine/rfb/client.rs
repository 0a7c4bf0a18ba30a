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

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::debug;

use crate::frame::Frame;
use crate::rfb::capture::{CaptureEvent, CaptureGuard, Started};
use crate::rfb::error::RfbError;
use crate::rfb::framebuffer::Framebuffer;
use crate::rfb::handshake::{self, ServerInfo};
use crate::rfb::protocol::{self, ClientMessage, Encoding, PixelFormat};
use crate::rfb::session::{self, ClientStats, Shared};
use crate::rfb::transport::{self, BoxedStream, Endpoint};

/// A capture with no fresh answer after this long sends its request again.
const RESEND_AFTER: Duration = Duration::from_millis(500);

/// How to connect.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Password for VNC authentication (only the first 8 bytes count).
    pub password: Option<String>,
    /// Limit for connecting, for the handshake, and for each write.
    pub timeout: Duration,
    /// Encodings in order of preference, pseudo-encodings included.
    pub encodings: Vec<Encoding>,
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
        }
    }
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("encodings", &self.encodings)
            .finish()
    }
}

/// A connected VNC session. Clone it to share it between tasks.
#[derive(Clone)]
pub struct VncClient {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Captures take turns: one full-screen request in flight at a time.
    capture_turn: tokio::sync::Mutex<()>,
    updates: watch::Receiver<u64>,
    info: ServerInfo,
    label: String,
    /// Where the last pointer event put the pointer.
    pointer_at: std::sync::Mutex<(u16, u16)>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.terminate("the client was dropped");
    }
}

impl std::fmt::Debug for VncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VncClient({}, {:?})", self.inner.label, self.inner.info.name)
    }
}

impl VncClient {
    /// Connect to `endpoint`, run the handshake, start the session and wait
    /// for the first full framebuffer update (so [`VncClient::snapshot`] is the
    /// real screen from the start).
    pub async fn connect(endpoint: &Endpoint, opts: &ConnectOptions) -> Result<VncClient, RfbError> {
        let stream = transport::connect(endpoint, opts.timeout).await?;
        VncClient::connect_stream(stream, &endpoint.to_string(), opts).await
    }

    /// Like [`VncClient::connect`] over an already open stream (any
    /// transport); `label` names the peer in logs and errors.
    pub async fn connect_stream(
        stream: BoxedStream,
        label: &str,
        opts: &ConnectOptions,
    ) -> Result<VncClient, RfbError> {
        let (stream, info) =
            match tokio::time::timeout(opts.timeout, handshake::handshake(stream, opts.password.as_deref())).await {
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
        let client = VncClient {
            inner: Arc::new(Inner {
                shared,
                capture_turn: tokio::sync::Mutex::new(()),
                updates,
                info,
                label: label.to_string(),
                pointer_at: std::sync::Mutex::new((0, 0)),
            }),
        };
        let deadline = Instant::now() + opts.timeout;
        client.await_capture(initial.id, initial.events, false, deadline, opts.timeout).await.map_err(|e| match e {
            RfbError::Timeout { after, .. } => {
                RfbError::timeout(format!("the first framebuffer update from {label}"), after)
            }
            other => other,
        })?;
        Ok(client)
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
        let st = self.inner.shared.lock();
        (st.frame.width(), st.frame.height())
    }

    /// The framebuffer as of the last complete update, with no freshness
    /// promise (what a recorder samples).
    pub fn snapshot(&self) -> Frame {
        self.inner.shared.lock().frame.clone()
    }

    /// How many complete FramebufferUpdates have been applied.
    pub fn update_seq(&self) -> u64 {
        self.inner.shared.lock().seq
    }

    /// A receiver that changes after each complete update (its value is
    /// [`VncClient::update_seq`]); `changed()` fails once the session ends.
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.inner.updates.clone()
    }

    /// Counters for diagnostics.
    pub fn stats(&self) -> ClientStats {
        let shared = &self.inner.shared;
        let mut stats = shared.lock().stats.clone();
        stats.bytes_received = shared.bytes_received.load(std::sync::atomic::Ordering::SeqCst);
        stats
    }

    pub fn is_connected(&self) -> bool {
        self.inner.shared.lock().disconnected.is_none()
    }

    /// A frame that reflects the screen after this call began (see the
    /// module docs), or [`RfbError::Timeout`] after `timeout`.
    pub async fn capture(&self, timeout: Duration) -> Result<Frame, RfbError> {
        let deadline = Instant::now() + timeout;
        let _turn = tokio::time::timeout_at(deadline, self.inner.capture_turn.lock())
            .await
            .map_err(|_| RfbError::timeout("the previous capture on this connection", timeout))?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let id = self.inner.shared.register_capture(events_tx)?;
        self.await_capture(id, events, true, deadline, timeout).await
    }

    /// Drive capture `id` to its end: send its request (unless already
    /// sent), wait for coverage, ask again after a resize.
    async fn await_capture(
        &self,
        id: u64,
        mut events: mpsc::UnboundedReceiver<CaptureEvent>,
        mut send_request: bool,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Frame, RfbError> {
        let shared = &*self.inner.shared;
        let guard = CaptureGuard { shared, id };
        let answer = async {
            loop {
                while send_request {
                    let request = session::full_request(false, self.size());
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
                Err(RfbError::timeout(format!("a fresh frame from {} ({progress})", self.inner.label), timeout))
            }
        }
    }

    /// Press (`down`) or release a key, by X11 keysym.
    pub async fn key(&self, keysym: u32, down: bool) -> Result<(), RfbError> {
        let message = ClientMessage::KeyEvent { down, keysym }.encode();
        self.inner.shared.write(message, "a KeyEvent").await.map(|_| ())
    }

    /// True once the server acknowledged QEMU Extended Key Event: keys can
    /// go by scancode, through the target's own keymap.
    pub fn takes_scancodes(&self) -> bool {
        self.inner.shared.lock().scancodes
    }

    /// What the server last said about its pointer (QEMU Pointer Motion
    /// Change): `Some(false)` for a relative pointer, `None` if it never said.
    pub fn pointer_absolute(&self) -> Option<bool> {
        self.inner.shared.lock().pointer_absolute
    }

    /// Press or release a key by `scancode` (qnum numbering) when the server
    /// takes scancodes and `scancode` is not 0, else by `keysym`.
    pub async fn key_code(&self, keysym: u32, scancode: u16, down: bool) -> Result<(), RfbError> {
        if scancode == 0 || !self.takes_scancodes() {
            return self.key(keysym, down).await;
        }
        let message = ClientMessage::QemuKeyEvent { down, keysym, scancode: u32::from(scancode) }.encode();
        self.inner.shared.write(message, "a QEMU extended KeyEvent").await.map(|_| ())
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
        self.inner.shared.write(message, "a PointerEvent").await.map(|_| ())
    }

    /// Put `text` in the server's clipboard (Latin-1; other characters
    /// become `?`).
    pub async fn cut_text(&self, text: &str) -> Result<(), RfbError> {
        let message = ClientMessage::ClientCutText(protocol::latin1(text)).encode();
        self.inner.shared.write(message, "ClientCutText").await.map(|_| ())
    }

    /// End the session and close the connection: pending captures fail, and
    /// later calls on any handle return [`RfbError::Disconnected`].
    pub async fn close(&self) {
        self.inner.shared.terminate("closed by the client");
        // Let the aborted tasks drop their halves of the stream.
        tokio::task::yield_now().await;
    }
}
