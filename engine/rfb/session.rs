//! The running side of a connection after the handshake: the state shared
//! between [`VncClient`](crate::rfb::VncClient) handles and three background
//! tasks.
//!
//! - The *pump* owns the read half and moves bytes from the socket into a
//!   queue as soon as they arrive, counting them. That count is the clock of
//!   capture freshness: an update whose first byte lies at or beyond the count
//!   taken when a request was written began arriving after that request.
//! - The *reader* parses server messages from the queue, runs the decoders on
//!   a private framebuffer, and at the end of each complete FramebufferUpdate
//!   publishes the changed rectangles to the shared [`Frame`], advances
//!   pending captures (see [`capture`](crate::rfb::capture)), and queues the next incremental FramebufferUpdateRequest
//!   so one is always outstanding.
//! - The *writer* owns the write half and writes queued messages one at a time,
//!   each whole: a caller that gives up (a dropped future) can never leave half
//!   a message on the wire. It reports the byte count read right after each
//!   write.
//!
//! The state lock is never held across an await.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tracing::{debug, trace, warn};

use crate::frame::Frame;
use crate::rfb::capture::{CaptureEvent, PendingCapture, Progress};
use crate::rfb::encodings::{DecodeStatus, Decoders};
use crate::rfb::error::RfbError;
use crate::rfb::framebuffer::Framebuffer;
use crate::rfb::protocol::{
    ClientMessage, Encoding, MAX_CUT_TEXT_LEN, QEMU_EXTENDED_KEY_EVENT, QEMU_POINTER_MOTION_CHANGE, RECT_HEADER_LEN,
    RectHeader, server_message,
};
use crate::rfb::transport::BoxedStream;

/// Read buffer of the pump.
const PUMP_CHUNK: usize = 64 * 1024;
/// Chunks queued between pump and reader before the pump waits.
const PUMP_QUEUE: usize = 256;
/// Messages queued for the writer before senders wait.
const WRITE_QUEUE: usize = 256;

/// Counters about a connection, for diagnostics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Complete FramebufferUpdates applied.
    pub updates: u64,
    /// Rectangles applied, per encoding.
    pub rects_by_encoding: BTreeMap<Encoding, u64>,
    /// Bytes received after the handshake.
    pub bytes_received: u64,
}

pub(crate) struct State {
    /// The framebuffer as of the last complete update.
    pub frame: Frame,
    pub seq: u64,
    pub captures: Vec<PendingCapture>,
    pub next_capture_id: u64,
    pub disconnected: Option<String>,
    pub stats: ClientStats,
    /// The server acknowledged QEMU Extended Key Event: keys go by scancode.
    pub scancodes: bool,
    /// The pointer's shape, when the server sends it (Cursor pseudo-encoding).
    pub cursor: Option<Arc<crate::rfb::encodings::pseudo::CursorShape>>,
    /// What the last QEMU Pointer Motion Change said (`None`: never sent).
    pub pointer_absolute: Option<bool>,
    /// The session ended because the connection was lost (closed by the
    /// server, a failed read or write, a stall), not by a protocol error or
    /// the client: reconnecting may help.
    pub lost: bool,
}

/// One message for the writer task.
pub(crate) struct WriteJob {
    bytes: Vec<u8>,
    what: &'static str,
    done: Option<oneshot::Sender<Result<u64, RfbError>>>,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Bytes the pump has received from the server so far.
    pub bytes_received: AtomicU64,
    writer: mpsc::Sender<WriteJob>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Shared {
    /// The state; a poisoned lock is taken over (critical sections only assign
    /// whole values, so the state stays consistent).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn disconnected_error(&self) -> RfbError {
        let reason = self.lock().disconnected.clone();
        RfbError::disconnected(reason.unwrap_or_else(|| "the session ended".to_string()))
    }

    pub fn check_connected(&self) -> Result<(), RfbError> {
        match &self.lock().disconnected {
            Some(reason) => Err(RfbError::disconnected(reason.clone())),
            None => Ok(()),
        }
    }

    /// End the session as lost (see [`State::lost`]).
    pub fn lose(&self, reason: &str) {
        {
            let mut st = self.lock();
            if st.disconnected.is_none() {
                st.lost = true;
            }
        }
        self.terminate(reason);
    }

    /// End the session: record why (the first reason wins), fail pending
    /// captures, stop all tasks (which drops, and so closes, the stream).
    pub fn terminate(&self, reason: &str) {
        {
            let mut st = self.lock();
            if st.disconnected.is_none() {
                debug!(%reason, "RFB session ended");
                st.disconnected = Some(reason.to_string());
            }
            st.captures.clear();
        }
        for task in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            task.abort();
        }
    }

    /// Queue `bytes` for writing and wait until they are written; returns
    /// how many bytes had been received from the server right after.
    pub async fn write(&self, bytes: Vec<u8>, what: &'static str) -> Result<u64, RfbError> {
        self.check_connected()?;
        let (done, written) = oneshot::channel();
        self.writer.send(WriteJob { bytes, what, done: Some(done) }).await.map_err(|_| self.disconnected_error())?;
        written.await.map_err(|_| self.disconnected_error())?
    }

    /// Queue `bytes` for writing without waiting.
    async fn write_later(&self, bytes: Vec<u8>, what: &'static str) -> Result<(), RfbError> {
        self.writer.send(WriteJob { bytes, what, done: None }).await.map_err(|_| self.disconnected_error())
    }
}

/// Write one message with a time limit.
pub(crate) async fn write_message(
    writer: &mut WriteHalf<BoxedStream>,
    bytes: &[u8],
    timeout: Duration,
    what: &str,
) -> Result<(), RfbError> {
    let write = async {
        writer.write_all(bytes).await?;
        writer.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RfbError::disconnected(format!("sending {what} failed: {e}"))),
        Err(_) => Err(RfbError::timeout(format!("the server to accept {what}"), timeout)),
    }
}

/// A FramebufferUpdateRequest for the whole `width` x `height` screen.
pub(crate) fn full_request(incremental: bool, size: (u32, u32)) -> Vec<u8> {
    ClientMessage::FramebufferUpdateRequest {
        incremental,
        x: 0,
        y: 0,
        width: u16::try_from(size.0).unwrap_or(u16::MAX),
        height: u16::try_from(size.1).unwrap_or(u16::MAX),
    }
    .encode()
}

/// The capture that waits for the answer to the setup's full-screen request.
pub(crate) struct InitialFrame {
    pub id: u64,
    pub events: mpsc::UnboundedReceiver<CaptureEvent>,
}

/// What the pump hands the reader: bytes, or why the stream ended.
type PumpItem = Result<Vec<u8>, String>;

/// Start the session's tasks over the two halves of a stream whose handshake
/// is done; `work` is the framebuffer at ServerInit size.
pub(crate) fn start(
    read_half: ReadHalf<BoxedStream>,
    write_half: WriteHalf<BoxedStream>,
    work: Framebuffer,
    io_timeout: Duration,
) -> (Arc<Shared>, watch::Receiver<u64>, InitialFrame) {
    let (writer_tx, writer_rx) = mpsc::channel(WRITE_QUEUE);
    // The setup's non-incremental request went out before any byte was
    // counted: a capture from offset 0 waits for its answer.
    let (initial_tx, initial_rx) = mpsc::unbounded_channel();
    let mut initial = PendingCapture::new(0, (work.width(), work.height()), initial_tx);
    initial.offset = Some(0);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            frame: work.to_frame(),
            seq: 0,
            captures: vec![initial],
            next_capture_id: 1,
            disconnected: None,
            stats: ClientStats::default(),
            scancodes: false,
            pointer_absolute: None,
            cursor: None,
            lost: false,
        }),
        bytes_received: AtomicU64::new(0),
        writer: writer_tx,
        tasks: Mutex::new(Vec::new()),
    });
    let (pump_tx, pump_rx) = mpsc::channel(PUMP_QUEUE);
    let (updates_tx, updates_rx) = watch::channel(0);
    let writer = tokio::spawn(writer_task(write_half, writer_rx, shared.clone(), io_timeout));
    let pump = tokio::spawn(pump_task(read_half, pump_tx, shared.clone()));
    let reader = Reader {
        shared: shared.clone(),
        input: Input { buf: Vec::new(), pos: 0, offset: 0, rx: pump_rx },
        decoders: Decoders::new(),
        work,
        updates_tx,
    };
    let reader = tokio::spawn(reader.run());
    *shared.tasks.lock().unwrap_or_else(|p| p.into_inner()) =
        vec![pump.abort_handle(), reader.abort_handle(), writer.abort_handle()];
    (shared, updates_rx, InitialFrame { id: 0, events: initial_rx })
}

async fn writer_task(
    mut half: WriteHalf<BoxedStream>,
    mut jobs: mpsc::Receiver<WriteJob>,
    shared: Arc<Shared>,
    io_timeout: Duration,
) {
    while let Some(WriteJob { bytes, what, done }) = jobs.recv().await {
        let result = write_message(&mut half, &bytes, io_timeout, what).await;
        let received = shared.bytes_received.load(Ordering::SeqCst);
        match result {
            Ok(()) => {
                if let Some(done) = done {
                    let _ = done.send(Ok(received));
                }
            }
            Err(e) => {
                // The stream may now hold half a message: the session is over.
                let reason = match &e {
                    RfbError::Disconnected { reason } => reason.clone(),
                    other => other.to_string(),
                };
                if let Some(done) = done {
                    let _ = done.send(Err(e));
                }
                shared.lose(&reason);
                return;
            }
        }
    }
}

async fn pump_task(mut read_half: ReadHalf<BoxedStream>, tx: mpsc::Sender<PumpItem>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; PUMP_CHUNK];
    loop {
        let item = match read_half.read(&mut buf).await {
            Ok(0) => Err("the server closed the connection".to_string()),
            Ok(n) => {
                shared.bytes_received.fetch_add(n as u64, Ordering::SeqCst);
                Ok(buf[..n].to_vec())
            }
            Err(e) => Err(format!("reading from the server failed: {e}")),
        };
        let ended = item.is_err();
        if tx.send(item).await.is_err() || ended {
            return;
        }
    }
}

/// Bytes received and not yet parsed, with their position in the stream.
struct Input {
    buf: Vec<u8>,
    pos: usize,
    /// Stream offset of `buf[pos]`.
    offset: u64,
    rx: mpsc::Receiver<PumpItem>,
}

impl Input {
    /// Wait until at least `n` unparsed bytes are buffered.
    async fn fill(&mut self, n: usize) -> Result<(), RfbError> {
        while self.buf.len() - self.pos < n {
            match self.rx.recv().await {
                Some(Ok(chunk)) => {
                    if self.pos > 0 && self.pos * 2 >= self.buf.len() {
                        self.buf.drain(..self.pos);
                        self.pos = 0;
                    }
                    self.buf.extend_from_slice(&chunk);
                }
                Some(Err(reason)) => return Err(RfbError::disconnected(reason)),
                None => return Err(RfbError::disconnected("the connection's reader stopped")),
            }
        }
        Ok(())
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.buf.len() - self.pos);
        self.pos += n;
        self.offset += n as u64;
    }

    /// Drop `n` bytes without buffering them all.
    async fn skip(&mut self, mut n: u64) -> Result<(), RfbError> {
        while n > 0 {
            if self.available().is_empty() {
                self.fill(1).await?;
            }
            let k = (self.available().len() as u64).min(n);
            self.consume(k as usize);
            n -= k;
        }
        Ok(())
    }
}

struct Reader {
    shared: Arc<Shared>,
    input: Input,
    decoders: Decoders,
    work: Framebuffer,
    updates_tx: watch::Sender<u64>,
}

/// Say which rectangle a decoder error came from.
fn in_rect(err: RfbError, index: u16, header: &RectHeader) -> RfbError {
    let at = format!("rectangle {index} ({} at {})", header.encoding, header.rect);
    match err {
        RfbError::Protocol { place, what } => RfbError::Protocol { place: format!("{place}, {at}"), what },
        RfbError::LimitExceeded { what } => RfbError::LimitExceeded { what: format!("{what} ({at})") },
        other => other,
    }
}

impl Reader {
    async fn run(mut self) {
        let (reason, lost) = match self.message_loop().await {
            Ok(never) => match never {},
            Err(RfbError::Disconnected { reason }) => (reason, true),
            Err(e) => {
                warn!(error = %e, "RFB session ended by an error");
                (e.to_string(), false)
            }
        };
        // Drop the update counter first so watchers see the end at once.
        drop(self.updates_tx);
        if lost {
            self.shared.lose(&reason);
        } else {
            self.shared.terminate(&reason);
        }
    }

    async fn message_loop(&mut self) -> Result<Infallible, RfbError> {
        loop {
            self.input.fill(1).await?;
            let kind = self.input.available()[0];
            match kind {
                server_message::FRAMEBUFFER_UPDATE => self.read_update().await?,
                server_message::SET_COLOUR_MAP_ENTRIES => {
                    self.input.fill(server_message::SET_COLOUR_MAP_ENTRIES_LEN).await?;
                    let h = self.input.available();
                    let count = u16::from_be_bytes([h[4], h[5]]);
                    self.input.consume(server_message::SET_COLOUR_MAP_ENTRIES_LEN);
                    self.input.skip(u64::from(count) * 6).await?;
                    debug!(count, "skipped SetColourMapEntries (true-colour session)");
                }
                server_message::BELL => {
                    self.input.consume(1);
                    debug!("bell");
                }
                server_message::SERVER_CUT_TEXT => {
                    self.input.fill(server_message::SERVER_CUT_TEXT_LEN).await?;
                    let h = self.input.available();
                    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                    if len > MAX_CUT_TEXT_LEN {
                        return Err(RfbError::limit(format!(
                            "ServerCutText of {len} bytes (at most {MAX_CUT_TEXT_LEN} accepted)"
                        )));
                    }
                    self.input.consume(server_message::SERVER_CUT_TEXT_LEN);
                    self.input.skip(u64::from(len)).await?;
                    debug!(len, "skipped ServerCutText");
                }
                other => {
                    return Err(RfbError::protocol(
                        "server message",
                        format!("unknown message type {other} at stream offset {}", self.input.offset),
                    ));
                }
            }
        }
    }

    async fn read_update(&mut self) -> Result<(), RfbError> {
        let start = self.input.offset;
        self.input.fill(server_message::FRAMEBUFFER_UPDATE_LEN).await?;
        let h = self.input.available();
        let count = u16::from_be_bytes([h[2], h[3]]);
        self.input.consume(server_message::FRAMEBUFFER_UPDATE_LEN);
        let mut rects = Vec::with_capacity(usize::from(count).min(256));
        for index in 0..count {
            self.input.fill(RECT_HEADER_LEN).await?;
            let mut raw = [0u8; RECT_HEADER_LEN];
            raw.copy_from_slice(&self.input.available()[..RECT_HEADER_LEN]);
            let header = RectHeader::decode(&raw);
            self.input.consume(RECT_HEADER_LEN);
            if self.qemu_pseudo(&header) {
                continue;
            }
            if header.encoding == Encoding::LastRect {
                // the server did not know the count when it started the update
                break;
            }
            loop {
                let available = self.input.available();
                let status = self
                    .decoders
                    .decode(header.encoding, header.rect, available, &mut self.work)
                    .map_err(|e| in_rect(e, index, &header))?;
                match status {
                    DecodeStatus::Complete { consumed } => {
                        self.input.consume(consumed);
                        if let Some(shape) = self.decoders.take_cursor() {
                            self.shared.lock().cursor = Some(Arc::new(shape));
                        }
                        break;
                    }
                    DecodeStatus::NeedMore { total } => {
                        if total <= available.len() {
                            return Err(RfbError::protocol(
                                format!("{} decoder", header.encoding),
                                format!("asked for {total} bytes with {} buffered", available.len()),
                            ));
                        }
                        self.input.fill(total).await?;
                    }
                }
            }
            rects.push(header);
        }
        trace!(rects = count, start, "FramebufferUpdate applied");
        self.finish_update(start, rects.into()).await
    }

    /// Note QEMU's pseudo-encoding rectangles (no pixels, not counted for
    /// captures): true when `header` was one.
    fn qemu_pseudo(&mut self, header: &RectHeader) -> bool {
        if header.encoding == QEMU_EXTENDED_KEY_EVENT {
            debug!("the server takes scancodes (QEMU Extended Key Event)");
            self.shared.lock().scancodes = true;
            true
        } else if header.encoding == QEMU_POINTER_MOTION_CHANGE {
            let absolute = header.rect.x != 0;
            if !absolute {
                warn!("the server's pointer is relative: clicks may drift (give the VM a USB tablet)");
            }
            self.shared.lock().pointer_absolute = Some(absolute);
            true
        } else {
            false
        }
    }

    /// Publish a complete update, advance captures, request the next update.
    async fn finish_update(&mut self, start: u64, rects: Arc<[RectHeader]>) -> Result<(), RfbError> {
        let size = (self.work.width(), self.work.height());
        let seq = {
            let mut guard = self.shared.lock();
            let st = &mut *guard;
            if (st.frame.width(), st.frame.height()) != size {
                st.frame = self.work.to_frame();
            } else {
                for r in rects.iter().filter(|r| !r.encoding.is_pseudo()) {
                    self.work.copy_into_frame(&mut st.frame, r.rect);
                }
            }
            st.seq += 1;
            st.stats.updates += 1;
            for r in rects.iter() {
                *st.stats.rects_by_encoding.entry(r.encoding).or_default() += 1;
            }
            let frame = &st.frame;
            st.captures.retain_mut(|capture| {
                let Some(offset) = capture.offset else {
                    capture.deferred.push((start, rects.clone()));
                    return true;
                };
                let reset = start >= offset && capture.apply(&rects);
                match capture.settle(reset, size) {
                    Progress::Complete => {
                        let _ = capture.events.send(CaptureEvent::Done(frame.clone()));
                        false
                    }
                    Progress::Resized => {
                        capture.offset = None;
                        capture.deferred.clear();
                        capture.events.send(CaptureEvent::Resized).is_ok()
                    }
                    Progress::Waiting => !capture.events.is_closed(),
                }
            });
            st.seq
        };
        self.updates_tx.send_replace(seq);
        self.shared.write_later(full_request(true, size), "a FramebufferUpdateRequest").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Rect;
    use crate::rfb::capture::Started;
    use crate::rfb::protocol::framebuffer_update_header;

    fn solid_update(rect: Rect, rgb: [u8; 3]) -> Vec<u8> {
        let mut b = framebuffer_update_header(1).to_vec();
        b.extend_from_slice(&RectHeader { rect, encoding: Encoding::Raw }.encode());
        for _ in 0..rect.area() {
            b.extend_from_slice(&[rgb[0], rgb[1], rgb[2], 0]);
        }
        b
    }

    /// A capture whose offset becomes known only after the reader finished
    /// the answering update still counts that update; one whose offset lies
    /// beyond an update does not.
    #[tokio::test]
    async fn updates_finished_before_the_offset_is_known_are_replayed() {
        let (client_end, mut server_end) = tokio::io::duplex(1 << 20);
        let stream: BoxedStream = Box::new(client_end);
        let (read_half, write_half) = tokio::io::split(stream);
        let work = Framebuffer::new(4, 2).unwrap();
        let (shared, mut updates, _initial) = start(read_half, write_half, work, Duration::from_secs(2));

        let (tx, _events) = mpsc::unbounded_channel();
        let early = shared.register_capture(tx).unwrap();
        let cut = shared.bytes_received.load(Ordering::SeqCst);
        server_end.write_all(&solid_update(Rect::new(0, 0, 4, 2), [1, 2, 3])).await.unwrap();
        updates.changed().await.unwrap();
        match shared.start_capture(early, cut).unwrap() {
            Started::Complete(frame) => assert_eq!(frame.rgb(3, 1), [1, 2, 3]),
            _ => panic!("the deferred update was not counted"),
        }

        let (tx, mut events) = mpsc::unbounded_channel();
        let late = shared.register_capture(tx).unwrap();
        server_end.write_all(&solid_update(Rect::new(0, 0, 4, 2), [4, 5, 6])).await.unwrap();
        updates.changed().await.unwrap();
        let cut = shared.bytes_received.load(Ordering::SeqCst);
        assert!(matches!(shared.start_capture(late, cut).unwrap(), Started::Waiting));
        server_end.write_all(&solid_update(Rect::new(0, 0, 2, 2), [7, 8, 9])).await.unwrap();
        server_end.write_all(&solid_update(Rect::new(2, 0, 2, 2), [7, 8, 9])).await.unwrap();
        match events.recv().await {
            Some(CaptureEvent::Done(frame)) => {
                assert_eq!(frame.rgb(0, 0), [7, 8, 9]);
                assert_eq!(frame.rgb(3, 1), [7, 8, 9]);
            }
            other => panic!("{other:?}"),
        }
        shared.terminate("test over");
    }
}
