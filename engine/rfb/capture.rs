//! Bookkeeping of pending captures: which fresh updates have covered the
//! screen since a capture's request was written (the mechanism behind
//! [`VncClient::capture`](crate::rfb::VncClient::capture); the module docs of
//! [`client`](crate::rfb::client) explain the rule).
//!
//! A capture is registered before its request is written, with no cut-off
//! yet; updates the reader finishes meanwhile are kept and replayed once the
//! writer reports the byte count at the write. The reader advances captures
//! at the end of every update and tells each one when it is complete or when
//! a DesktopSize change needs a new request.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::frame::Frame;
use crate::rfb::coverage::Coverage;
use crate::rfb::error::RfbError;
use crate::rfb::protocol::{Encoding, RectHeader};
use crate::rfb::session::Shared;

/// What the reader tells a waiting capture.
#[derive(Debug)]
pub(crate) enum CaptureEvent {
    /// Fresh updates covered the screen; the frame as of that update.
    Done(Frame),
    /// The screen changed size before coverage completed: send a new request
    /// for the whole new screen.
    Resized,
}

/// How a capture stands after applying updates.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    Complete,
    Resized,
    Waiting,
}

/// A capture waiting for fresh updates to cover the screen.
pub(crate) struct PendingCapture {
    pub id: u64,
    /// Stream offset from which updates count; `None` while its request is
    /// being written (updates meanwhile are kept in `deferred`).
    pub offset: Option<u64>,
    /// Updates applied while `offset` was unknown: (start offset, rectangles).
    pub deferred: Vec<(u64, Arc<[RectHeader]>)>,
    pub coverage: Coverage,
    pub events: mpsc::UnboundedSender<CaptureEvent>,
}

impl PendingCapture {
    /// A capture of a `size` screen whose cut-off is not known yet.
    pub fn new(id: u64, size: (u32, u32), events: mpsc::UnboundedSender<CaptureEvent>) -> PendingCapture {
        PendingCapture { id, offset: None, deferred: Vec::new(), coverage: Coverage::new(size.0, size.1), events }
    }

    /// Mark the rectangles of one fresh update; true when a DesktopSize
    /// restarted coverage.
    pub fn apply(&mut self, rects: &[RectHeader]) -> bool {
        let mut reset = false;
        for r in rects {
            if matches!(r.encoding, Encoding::DesktopSize | Encoding::ExtendedDesktopSize) {
                self.coverage.reset(r.rect.w, r.rect.h);
                reset = true;
            } else if !r.encoding.is_pseudo() {
                self.coverage.mark(r.rect);
            }
        }
        reset
    }

    /// Where the capture stands, given the current screen size.
    pub fn settle(&mut self, mut reset: bool, size: (u32, u32)) -> Progress {
        if self.coverage.size() != size {
            self.coverage.reset(size.0, size.1);
            reset = true;
        }
        if self.coverage.is_complete() {
            Progress::Complete
        } else if reset {
            Progress::Resized
        } else {
            Progress::Waiting
        }
    }
}

/// The outcome of starting a capture once its request is written.
pub(crate) enum Started {
    Complete(Frame),
    Resized,
    Waiting,
    /// The capture is no longer pending: it completed (its frame is on its
    /// event channel) while a repeated request was being written.
    Finished,
}

impl Shared {
    /// Register a capture before its request is written: updates finished
    /// meanwhile are deferred until [`Shared::start_capture`] knows the offset.
    pub fn register_capture(&self, events: mpsc::UnboundedSender<CaptureEvent>) -> Result<u64, RfbError> {
        let mut st = self.lock();
        if let Some(reason) = &st.disconnected {
            return Err(RfbError::disconnected(reason.clone()));
        }
        let id = st.next_capture_id;
        st.next_capture_id += 1;
        let size = (st.frame.width(), st.frame.height());
        st.captures.push(PendingCapture::new(id, size, events));
        Ok(id)
    }

    /// The request of capture `id` was written when `offset` bytes had been
    /// received: count updates from there, including deferred ones.
    pub fn start_capture(&self, id: u64, offset: u64) -> Result<Started, RfbError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(reason) = &st.disconnected {
            return Err(RfbError::disconnected(reason.clone()));
        }
        let size = (st.frame.width(), st.frame.height());
        let Some(index) = st.captures.iter().position(|c| c.id == id) else {
            return Ok(Started::Finished);
        };
        let capture = &mut st.captures[index];
        capture.offset = Some(offset);
        let mut reset = false;
        for (start, rects) in std::mem::take(&mut capture.deferred) {
            if start >= offset {
                reset |= capture.apply(&rects);
            }
        }
        Ok(match capture.settle(reset, size) {
            Progress::Complete => {
                st.captures.remove(index);
                Started::Complete(st.frame.clone())
            }
            Progress::Resized => {
                capture.offset = None;
                Started::Resized
            }
            Progress::Waiting => Started::Waiting,
        })
    }
}

/// Removes a pending capture when its `capture()` call ends in any way
/// (answered, timed out, cancelled).
pub(crate) struct CaptureGuard<'a> {
    pub shared: &'a Shared,
    pub id: u64,
}

impl CaptureGuard<'_> {
    /// Fraction of the screen covered so far and the screen size, if pending.
    pub fn progress(&self) -> Option<(f64, (u32, u32))> {
        let st = self.shared.lock();
        st.captures.iter().find(|c| c.id == self.id).map(|c| (c.coverage.fraction(), c.coverage.size()))
    }
}

impl Drop for CaptureGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().captures.retain(|c| c.id != self.id);
    }
}
