//! A streaming GIF encoder for screen recordings.
//!
//! Frames are pushed with their capture time and written as they come, so memory
//! stays bounded whatever the length of the recording: the writer holds what the GIF
//! currently displays (RGBA and palette indices, one canvas each), the one frame
//! waiting for its delay, and a scratch buffer. Nothing else.
//!
//! Encoding rules:
//! - One global palette, the fixed [`DesktopPalette`]; no dithering.
//! - Every image uses disposal "do not dispose", so images stack. A pixel whose
//!   palette index equals what is already displayed is written as
//!   [`TRANSPARENT_INDEX`], and each image is cropped to the bounding box of the
//!   pixels that do change. A pushed frame that changes nothing writes nothing: the
//!   displayed image just stays up longer. The first image is the whole frame.
//! - Delays: an image stays up until the capture time of the next changed frame
//!   (or the end time given to [`GifWriter::finish`]). Times are rounded to
//!   centiseconds from the first frame, and each delay is the difference of two
//!   rounded times, so rounding never accumulates. Browsers play delays of 0 or 1 cs
//!   as 10 cs, so a delay is never under 2 cs; when that floor puts the GIF ahead of
//!   real time, the following delays shrink (still never under 2 cs) until it has
//!   caught up. A delay over the GIF maximum (65,535 cs = 655.35 s) is split: the
//!   image gets up to the maximum and 1x1 fully transparent images carry the rest.
//! - The GIF loops forever (NETSCAPE2.0 extension).
//! - An image is written (and the output flushed) as soon as its delay is known, that
//!   is when the next changed frame arrives. If the process dies, the file holds every
//!   image but the last one and lacks only the trailer byte: decoders that tolerate a
//!   missing trailer (browsers, ffmpeg) show the recording up to that point.
//! - A frame whose size differs from the GIF's (the screen was resized mid-run) is
//!   fitted to the GIF canvas: if it is larger in either dimension it is scaled down
//!   (nearest neighbour, aspect ratio kept) until it fits, then it is placed at the
//!   top-left corner and the rest of the canvas is black. It never fails or panics.

use std::borrow::Cow;
use std::io::Write;
use std::time::Duration;

use crate::frame::Frame;
use crate::geometry::Rect;

use super::palette::{DesktopPalette, TRANSPARENT_INDEX};

/// The longest delay one GIF image can carry, in centiseconds.
pub const MAX_DELAY_CS: u16 = u16::MAX;
/// The shortest delay written, in centiseconds (browsers slow down shorter ones).
pub const MIN_DELAY_CS: u16 = 2;

/// Errors writing a GIF.
#[derive(Debug, thiserror::Error)]
pub enum GifWriteError {
    #[error("a GIF canvas must be 1 to 65535 pixels per side, not {width}x{height}")]
    CanvasSize { width: u32, height: u32 },
    #[error("writing the GIF failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding the GIF failed: {0}")]
    Encoding(String),
    #[error("an earlier write failed, so the GIF writer accepts no more frames")]
    Failed,
}

impl From<gif::EncodingError> for GifWriteError {
    fn from(error: gif::EncodingError) -> Self {
        match error {
            gif::EncodingError::Io(io) => GifWriteError::Io(io),
            other => GifWriteError::Encoding(other.to_string()),
        }
    }
}

/// What a pushed frame changed on the displayed GIF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameChange {
    /// Pixels inside this rectangle (the minimal bounding box) changed; an image
    /// covering it was queued.
    Changed(Rect),
    /// No palette index changed: nothing was queued, the displayed image stays up.
    Unchanged,
}

/// Counters of what a writer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GifWriterStats {
    /// Frames given to [`GifWriter::push`].
    pub frames_pushed: u64,
    /// Pushed frames that changed nothing.
    pub frames_unchanged: u64,
    /// Pushed frames whose size differed from the canvas and were fitted to it.
    pub frames_resized: u64,
    /// Image blocks written, including the transparent ones that split long delays.
    pub images_written: u64,
    /// Transparent 1x1 images written to split delays over the GIF maximum.
    pub filler_images: u64,
    /// Total delay of the images written so far, in centiseconds.
    pub played_cs: u64,
    /// Bytes written to the output so far.
    pub bytes: u64,
}

/// A finished GIF: the output writer and what was written.
#[derive(Debug)]
pub struct FinishedGif<W> {
    pub output: W,
    pub stats: GifWriterStats,
}

/// A `Write` that counts the bytes going through it.
#[derive(Debug)]
struct CountingWriter<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The image waiting for its delay: already LZW-compressed, placed at `rect`.
struct PendingImage {
    image: gif::Frame<'static>,
    at: Duration,
}

/// Streams frames into a GIF over any writer. See the module docs for the rules.
pub struct GifWriter<W: Write> {
    encoder: Option<gif::Encoder<CountingWriter<W>>>,
    width: u32,
    height: u32,
    palette: DesktopPalette,
    /// The last pushed (fitted) frame, RGBA. Empty until the first frame.
    displayed_rgba: Vec<u8>,
    /// The palette index displayed at each pixel.
    displayed_index: Vec<u8>,
    /// Capture time of the first frame: the origin of every delay.
    origin: Option<Duration>,
    pending: Option<PendingImage>,
    scratch: Vec<u8>,
    stats: GifWriterStats,
}

impl<W: Write> std::fmt::Debug for GifWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GifWriter")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<W: Write> GifWriter<W> {
    /// Start a `width` x `height` GIF: writes the header, the palette and the loop
    /// extension at once.
    pub fn new(out: W, width: u32, height: u32) -> Result<GifWriter<W>, GifWriteError> {
        let (w16, h16) = match (u16::try_from(width), u16::try_from(height)) {
            (Ok(w), Ok(h)) if w > 0 && h > 0 => (w, h),
            _ => return Err(GifWriteError::CanvasSize { width, height }),
        };
        let palette = DesktopPalette::new();
        let counting = CountingWriter { inner: out, bytes: 0 };
        let mut encoder = gif::Encoder::new(counting, w16, h16, &palette.gif_color_table())?;
        encoder.set_repeat(gif::Repeat::Infinite)?;
        encoder.get_mut().flush()?;
        let mut writer = GifWriter {
            encoder: Some(encoder),
            width,
            height,
            palette,
            displayed_rgba: Vec::new(),
            displayed_index: Vec::new(),
            origin: None,
            pending: None,
            scratch: Vec::new(),
            stats: GifWriterStats::default(),
        };
        writer.refresh_byte_count();
        Ok(writer)
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn stats(&self) -> GifWriterStats {
        self.stats
    }

    /// Add a frame captured at `at` (any time origin, but the same for every call;
    /// a time earlier than the previous frame's counts as equal to it).
    pub fn push(&mut self, frame: &Frame, at: Duration) -> Result<FrameChange, GifWriteError> {
        if self.encoder.is_none() {
            return Err(GifWriteError::Failed);
        }
        self.stats.frames_pushed += 1;
        let frame: Cow<'_, Frame> = if frame.width() == self.width && frame.height() == self.height {
            Cow::Borrowed(frame)
        } else {
            self.stats.frames_resized += 1;
            Cow::Owned(fit_to_canvas(frame, self.width, self.height))
        };
        let at = match &self.pending {
            Some(pending) => at.max(pending.at),
            None => at,
        };
        if self.origin.is_none() {
            self.origin = Some(at);
            let image = self.first_image(&frame);
            self.pending = Some(PendingImage { image, at });
            return Ok(FrameChange::Changed(Rect::screen(self.width, self.height)));
        }
        let Some((rect, image)) = self.change_image(&frame) else {
            self.stats.frames_unchanged += 1;
            return Ok(FrameChange::Unchanged);
        };
        self.write_pending(at)?;
        self.pending = Some(PendingImage { image, at });
        Ok(FrameChange::Changed(rect))
    }

    /// Write the last image, shown until `end` (at least 2 cs), and the trailer.
    /// Returns the flushed output writer and the final counters.
    pub fn finish(mut self, end: Duration) -> Result<FinishedGif<W>, GifWriteError> {
        if self.encoder.is_none() {
            return Err(GifWriteError::Failed);
        }
        self.write_pending(end)?;
        let encoder = self.encoder.take().ok_or(GifWriteError::Failed)?;
        let mut counting = encoder.into_inner()?;
        counting.flush()?;
        self.stats.bytes = counting.bytes;
        Ok(FinishedGif { output: counting.inner, stats: self.stats })
    }

    /// The first image: the whole frame, opaque.
    fn first_image(&mut self, frame: &Frame) -> gif::Frame<'static> {
        let pixels = frame.pixels();
        self.displayed_rgba = pixels.to_vec();
        self.displayed_index = vec![0; pixels.len() / 4];
        self.palette.quantize_rgba(pixels, &mut self.displayed_index);
        let mut image = gif::Frame {
            width: self.width as u16,
            height: self.height as u16,
            buffer: Cow::Owned(self.displayed_index.clone()),
            ..gif::Frame::default()
        };
        image.make_lzw_pre_encoded();
        image
    }

    /// Diff `frame` against what is displayed, update the displayed state, and
    /// build the cropped image of the change. `None` when no palette index changed.
    fn change_image(&mut self, frame: &Frame) -> Option<(Rect, gif::Frame<'static>)> {
        let width = self.width as usize;
        let pixels = frame.pixels();
        let raw_box = changed_box(&self.displayed_rgba, pixels, width)?;
        let (bx, by, bw, bh) = (raw_box.x as usize, raw_box.y as usize, raw_box.w as usize, raw_box.h as usize);

        // Pass 1, over the box of changed RGB values: the new indices (transparent
        // where the index stays the same) and the box of changed indices.
        self.scratch.clear();
        self.scratch.resize(bw * bh, TRANSPARENT_INDEX);
        let (mut min_x, mut min_y, mut max_x, mut max_y) = (usize::MAX, usize::MAX, 0, 0);
        for row in 0..bh {
            let y = by + row;
            let start = (y * width + bx) * 4;
            let new_row = pixels.get(start..start + bw * 4)?;
            let old_row = self.displayed_rgba.get_mut(start..start + bw * 4)?;
            let index_row = self.displayed_index.get_mut(y * width + bx..y * width + bx + bw)?;
            let out_row = self.scratch.get_mut(row * bw..(row + 1) * bw)?;
            let mut changed_in_row = false;
            for (col, ((new_px, old_px), (shown, out))) in new_row
                .chunks_exact(4)
                .zip(old_row.chunks_exact(4))
                .zip(index_row.iter_mut().zip(out_row.iter_mut()))
                .enumerate()
            {
                if new_px[..3] == old_px[..3] {
                    continue;
                }
                let index = self.palette.index_of(new_px[0], new_px[1], new_px[2]);
                if index == *shown {
                    continue;
                }
                *shown = index;
                *out = index;
                changed_in_row = true;
                min_x = min_x.min(col);
                max_x = max_x.max(col);
            }
            if changed_in_row {
                min_y = min_y.min(row);
                max_y = max_y.max(row);
            }
            old_row.copy_from_slice(new_row);
        }
        if min_x == usize::MAX {
            return None;
        }

        // Pass 2: crop the scratch to the box of changed indices.
        let (cw, ch) = (max_x - min_x + 1, max_y - min_y + 1);
        let mut cropped = Vec::with_capacity(cw * ch);
        for row in min_y..=max_y {
            let start = row * bw + min_x;
            cropped.extend_from_slice(self.scratch.get(start..start + cw)?);
        }
        let rect = Rect::new((bx + min_x) as u32, (by + min_y) as u32, cw as u32, ch as u32);
        let mut image = gif::Frame {
            left: rect.x as u16,
            top: rect.y as u16,
            width: rect.w as u16,
            height: rect.h as u16,
            transparent: Some(TRANSPARENT_INDEX),
            buffer: Cow::Owned(cropped),
            ..gif::Frame::default()
        };
        image.make_lzw_pre_encoded();
        Some((rect, image))
    }

    /// Write the pending image with a delay lasting until `until`, splitting delays
    /// over the GIF maximum with transparent 1x1 images.
    fn write_pending(&mut self, until: Duration) -> Result<(), GifWriteError> {
        let Some(mut pending) = self.pending.take() else {
            return Ok(());
        };
        let origin = self.origin.unwrap_or(pending.at);
        let end_cs = centiseconds(until.max(pending.at).saturating_sub(origin));
        let total = end_cs.saturating_sub(self.stats.played_cs).max(MIN_DELAY_CS as u64);
        let mut chunks = split_delay(total).into_iter();
        pending.image.delay = chunks.next().unwrap_or(MIN_DELAY_CS);
        let result = self.write_image(&pending.image, false);
        let result = result.and_then(|()| {
            for delay in chunks {
                let filler = gif::Frame {
                    width: 1,
                    height: 1,
                    delay,
                    transparent: Some(TRANSPARENT_INDEX),
                    buffer: Cow::Owned(vec![TRANSPARENT_INDEX]),
                    ..gif::Frame::default()
                };
                self.write_image(&filler, true)?;
            }
            Ok(())
        });
        if result.is_err() {
            // A partial write leaves the stream in an unknown state: stop here.
            self.encoder = None;
        }
        result
    }

    fn write_image(&mut self, image: &gif::Frame<'_>, filler: bool) -> Result<(), GifWriteError> {
        let encoder = self.encoder.as_mut().ok_or(GifWriteError::Failed)?;
        if filler {
            encoder.write_frame(image)?;
        } else {
            encoder.write_lzw_pre_encoded_frame(image)?;
        }
        encoder.get_mut().flush()?;
        self.stats.images_written += 1;
        self.stats.filler_images += filler as u64;
        self.stats.played_cs += image.delay as u64;
        self.refresh_byte_count();
        Ok(())
    }

    fn refresh_byte_count(&mut self) {
        if let Some(encoder) = self.encoder.as_ref() {
            self.stats.bytes = encoder.get_ref().bytes;
        }
    }
}

/// A duration in centiseconds, rounded to the nearest.
fn centiseconds(d: Duration) -> u64 {
    ((d.as_micros() + 5_000) / 10_000) as u64
}

/// Split a delay into GIF-sized pieces: each at most [`MAX_DELAY_CS`] and at least
/// [`MIN_DELAY_CS`], summing to `total` (which must be at least the minimum).
fn split_delay(total: u64) -> Vec<u16> {
    let max = MAX_DELAY_CS as u64;
    let min = MIN_DELAY_CS as u64;
    let mut pieces = Vec::new();
    let mut left = total.max(min);
    while left > max {
        let piece = if left - max < min { left - min } else { max };
        pieces.push(piece as u16);
        left -= piece;
    }
    pieces.push(left as u16);
    pieces
}

/// The bounding box of pixels whose RGB differs between two same-size RGBA buffers
/// of `width` pixels per row; `None` when they are equal.
fn changed_box(old: &[u8], new: &[u8], width: usize) -> Option<Rect> {
    let stride = width * 4;
    if stride == 0 || old.len() != new.len() {
        return None;
    }
    let (mut min_x, mut min_y, mut max_x, mut max_y) = (usize::MAX, usize::MAX, 0, 0);
    for (y, (old_row, new_row)) in old.chunks_exact(stride).zip(new.chunks_exact(stride)).enumerate() {
        if old_row == new_row {
            continue;
        }
        let differs = |(a, b): (&[u8], &[u8])| a[..3] != b[..3];
        let pairs = || old_row.chunks_exact(4).zip(new_row.chunks_exact(4));
        let Some(first) = pairs().position(differs) else {
            continue; // only alpha differs
        };
        let last = width - 1 - pairs().rev().position(differs).unwrap_or(0);
        min_x = min_x.min(first);
        max_x = max_x.max(last);
        min_y = min_y.min(y);
        max_y = max_y.max(y);
    }
    (min_x != usize::MAX)
        .then(|| Rect::new(min_x as u32, min_y as u32, (max_x - min_x + 1) as u32, (max_y - min_y + 1) as u32))
}

/// Fit a frame of another size onto a `width` x `height` canvas: scale down
/// (nearest neighbour, aspect kept) if it is larger, place it top-left, pad black.
pub fn fit_to_canvas(frame: &Frame, width: u32, height: u32) -> Frame {
    let mut out = Frame::new(width, height);
    let (fw, fh) = (frame.width(), frame.height());
    if fw == 0 || fh == 0 || width == 0 || height == 0 {
        return out;
    }
    let scale = (fw as f64 / width as f64).max(fh as f64 / height as f64).max(1.0);
    let sw = ((fw as f64 / scale).round() as u32).clamp(1, width);
    let sh = ((fh as f64 / scale).round() as u32).clamp(1, height);
    let source_x: Vec<usize> = (0..sw).map(|x| (((x as f64 + 0.5) * scale) as usize).min(fw as usize - 1)).collect();
    let src = frame.pixels();
    let src_stride = fw as usize * 4;
    let dst_stride = width as usize * 4;
    let dst = out.pixels_mut();
    for y in 0..sh as usize {
        let sy = (((y as f64 + 0.5) * scale) as usize).min(fh as usize - 1);
        let src_row = &src[sy * src_stride..(sy + 1) * src_stride];
        let dst_row = &mut dst[y * dst_stride..y * dst_stride + sw as usize * 4];
        for (px, &sx) in dst_row.chunks_exact_mut(4).zip(source_x.iter()) {
            px.copy_from_slice(&src_row[sx * 4..sx * 4 + 4]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_split_into_gif_sized_pieces() {
        assert_eq!(split_delay(0), vec![2]);
        assert_eq!(split_delay(10), vec![10]);
        assert_eq!(split_delay(65_535), vec![65_535]);
        assert_eq!(split_delay(65_536), vec![65_534, 2]);
        assert_eq!(split_delay(70_000), vec![65_535, 4_465]);
        assert_eq!(split_delay(200_000), vec![65_535, 65_535, 65_535, 3_395]);
        for total in [2u64, 65_537, 131_071, 131_072, 1_000_000] {
            let pieces = split_delay(total);
            assert_eq!(pieces.iter().map(|&p| p as u64).sum::<u64>(), total);
            assert!(pieces.iter().all(|&p| p >= MIN_DELAY_CS));
        }
    }

    #[test]
    fn rounding_to_centiseconds() {
        assert_eq!(centiseconds(Duration::from_millis(104)), 10);
        assert_eq!(centiseconds(Duration::from_millis(105)), 11);
        assert_eq!(centiseconds(Duration::from_secs(700)), 70_000);
    }

    #[test]
    fn changed_box_is_tight() {
        let a = Frame::new(10, 8);
        let mut b = a.clone();
        assert_eq!(changed_box(a.pixels(), b.pixels(), 10), None);
        b.set_rgb(3, 2, [1, 0, 0]);
        b.set_rgb(7, 5, [0, 0, 1]);
        assert_eq!(changed_box(a.pixels(), b.pixels(), 10), Some(Rect::new(3, 2, 5, 4)));
    }

    #[test]
    fn canvas_size_is_checked() {
        assert!(matches!(GifWriter::new(Vec::new(), 0, 10), Err(GifWriteError::CanvasSize { .. })));
        assert!(matches!(GifWriter::new(Vec::new(), 70_000, 10), Err(GifWriteError::CanvasSize { .. })));
    }

    #[test]
    fn fitting_scales_down_and_pads() {
        let mut big = Frame::new(200, 100);
        for y in 0..100 {
            for x in 0..200 {
                big.set_rgb(x, y, [255, 255, 255]);
            }
        }
        // 200x100 onto 100x100: scaled to 100x50, black below.
        let fitted = fit_to_canvas(&big, 100, 100);
        assert_eq!((fitted.width(), fitted.height()), (100, 100));
        assert_eq!(fitted.rgb(99, 49), [255, 255, 255]);
        assert_eq!(fitted.rgb(0, 50), [0, 0, 0]);
        // Smaller frame: copied 1:1 at the top-left.
        let small = Frame::new(3, 3);
        let fitted = fit_to_canvas(&small, 5, 4);
        assert_eq!((fitted.width(), fitted.height()), (5, 4));
        let empty = fit_to_canvas(&Frame::new(0, 0), 4, 4);
        assert_eq!(empty.width(), 4);
    }
}
