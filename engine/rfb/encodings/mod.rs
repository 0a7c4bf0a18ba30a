//! Rectangle decoders: pure functions (and, for encodings with per-connection
//! state such as ZRLE's zlib stream, structs) from the bytes of one
//! rectangle to pixels in a [`Framebuffer`]. No I/O: fuzzers and benchmarks
//! call them on byte slices.
//!
//! # The decoder contract
//!
//! A decoder is handed everything received so far, starting at the first byte
//! after the rectangle header, and answers either
//! [`DecodeStatus::Complete`] (with how many bytes it used) or
//! [`DecodeStatus::NeedMore`] (with how many bytes, counted from the start of
//! the rectangle, it needs before it can make progress). The connection reads
//! until that many bytes are there and calls again. A decoder must not change
//! persistent state (a zlib stream) before it has all the bytes it is going to
//! feed to it, so a repeated call sees the same state.
//!
//! Length-prefixed encodings (ZRLE) ask once for the prefix and once for the
//! body. Encodings without a length prefix (Hextile, Tight, TRLE)
//! can walk their sub-headers and ask for more step by step, keeping their
//! scan position in their own struct between calls: the connection code does
//! not change for them.

pub mod copyrect;
pub mod hextile;
pub mod pseudo;
pub mod raw;
pub mod tight;
pub mod tiles;
pub mod trle;
pub mod zrle;

use crate::geometry::Rect;
use crate::rfb::error::RfbError;
use crate::rfb::framebuffer::Framebuffer;
use crate::rfb::protocol::Encoding;

pub use zrle::ZrleDecoder;

/// The answer of a decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeStatus {
    /// The rectangle is in the framebuffer; `consumed` bytes of input were its.
    Complete { consumed: usize },
    /// Call again once at least `total` bytes (from the start of the
    /// rectangle's data) are available.
    NeedMore { total: usize },
}

/// All decoders of one connection, with their per-connection state.
#[derive(Default)]
pub struct Decoders {
    zrle: ZrleDecoder,
    hextile: hextile::HextileDecoder,
    trle: trle::TrleDecoder,
    tight: tight::TightDecoder,
    /// The last cursor shape decoded (taken by the session).
    cursor: Option<pseudo::CursorShape>,
}

impl Decoders {
    pub fn new() -> Decoders {
        Decoders::default()
    }

    /// The cursor shape decoded since the last call, if any.
    pub fn take_cursor(&mut self) -> Option<pseudo::CursorShape> {
        self.cursor.take()
    }

    /// Decode one rectangle of `encoding` at `rect` from `input` into `fb`.
    /// DesktopSize resizes `fb`. Encodings this client never asks for are
    /// [`RfbError::Unsupported`]: their length is unknown, so the stream
    /// cannot continue.
    pub fn decode(
        &mut self,
        encoding: Encoding,
        rect: Rect,
        input: &[u8],
        fb: &mut Framebuffer,
    ) -> Result<DecodeStatus, RfbError> {
        match encoding {
            Encoding::Raw => raw::decode(rect, input, fb),
            Encoding::CopyRect => copyrect::decode(rect, input, fb),
            Encoding::Zrle => self.zrle.decode(rect, input, fb),
            Encoding::Hextile => self.hextile.decode(rect, input, fb),
            Encoding::Trle => self.trle.decode(rect, input, fb),
            Encoding::Tight => self.tight.decode(rect, input, fb),
            Encoding::ExtendedDesktopSize => pseudo::extended_desktop_size(rect, input, fb),
            Encoding::LastRect => Ok(DecodeStatus::Complete { consumed: 0 }),
            Encoding::Cursor => {
                let (status, shape) = pseudo::cursor(rect, input)?;
                if shape.is_some() {
                    self.cursor = shape;
                }
                Ok(status)
            }
            Encoding::DesktopSize => {
                fb.resize(rect.w, rect.h)?;
                Ok(DecodeStatus::Complete { consumed: 0 })
            }
            Encoding::Other(code) => Err(RfbError::unsupported(format!(
                "encoding {code} in a FramebufferUpdate (this client never asked for it)"
            ))),
        }
    }
}

/// A cursor over a byte slice whose reads fail with a protocol error instead
/// of panicking when the data runs out.
pub(crate) struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
    place: &'static str,
    /// Set when a read failed only because the data ran out: how many bytes
    /// (from the start of `data`) that read needed.
    pub(crate) short_of: Option<usize>,
}

impl<'a> ByteReader<'a> {
    pub(crate) fn new(data: &'a [u8], place: &'static str) -> ByteReader<'a> {
        ByteReader { data, pos: 0, place, short_of: None }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], RfbError> {
        if self.remaining() < n {
            self.short_of = Some(self.pos + n);
            return Err(RfbError::protocol(
                self.place,
                format!(
                    "data ends after {} bytes, {} more needed at offset {}",
                    self.data.len(),
                    n - self.remaining(),
                    self.pos
                ),
            ));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, RfbError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }
}
