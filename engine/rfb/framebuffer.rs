//! The client-side copy of the server's screen: an RGBA pixel store that the
//! decoders write rectangles into, with bounds-checked writes, copy-rect,
//! resize and snapshots to [`Frame`].
//!
//! Pixels are R, G, B, A with A always 255, the same layout as [`Frame`].
//! Every operation that takes a rectangle from the server checks it against the
//! framebuffer first and returns [`RfbError::LimitExceeded`] instead of
//! panicking.

use crate::frame::Frame;
use crate::geometry::{Point, Rect};
use crate::rfb::error::RfbError;
use crate::rfb::protocol::MAX_FRAMEBUFFER_PIXELS;

/// Bytes per pixel in the framebuffer.
pub const BYTES_PER_PIXEL: usize = 4;

/// An RGBA framebuffer.
#[derive(Clone, PartialEq, Eq)]
pub struct Framebuffer {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl std::fmt::Debug for Framebuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Framebuffer({}x{})", self.width, self.height)
    }
}

fn check_size(width: u32, height: u32) -> Result<(), RfbError> {
    if u64::from(width) * u64::from(height) > MAX_FRAMEBUFFER_PIXELS {
        return Err(RfbError::limit(format!(
            "framebuffer of {width}x{height} pixels (at most {MAX_FRAMEBUFFER_PIXELS} pixels accepted)"
        )));
    }
    Ok(())
}

fn black(width: u32, height: u32) -> Vec<u8> {
    let mut pixels = vec![0u8; width as usize * height as usize * BYTES_PER_PIXEL];
    for px in pixels.chunks_exact_mut(BYTES_PER_PIXEL) {
        px[3] = 255;
    }
    pixels
}

impl Framebuffer {
    /// A black framebuffer.
    pub fn new(width: u32, height: u32) -> Result<Framebuffer, RfbError> {
        check_size(width, height)?;
        Ok(Framebuffer { width, height, pixels: black(width, height) })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn bounds(&self) -> Rect {
        Rect::screen(self.width, self.height)
    }

    /// RGBA bytes, row by row.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Change the size. Pixels inside both the old and the new size are kept
    /// (RFC 6143 DesktopSize client semantics), the rest is black.
    pub fn resize(&mut self, width: u32, height: u32) -> Result<(), RfbError> {
        check_size(width, height)?;
        if (width, height) == (self.width, self.height) {
            return Ok(());
        }
        let mut pixels = black(width, height);
        let keep_w = self.width.min(width) as usize * BYTES_PER_PIXEL;
        for y in 0..self.height.min(height) as usize {
            let src = y * self.width as usize * BYTES_PER_PIXEL;
            let dst = y * width as usize * BYTES_PER_PIXEL;
            pixels[dst..dst + keep_w].copy_from_slice(&self.pixels[src..src + keep_w]);
        }
        self.width = width;
        self.height = height;
        self.pixels = pixels;
        Ok(())
    }

    /// Error unless `rect` lies inside the framebuffer.
    pub fn check_rect(&self, rect: Rect, what: &str) -> Result<(), RfbError> {
        // Rect::right/bottom saturate, so huge values cannot wrap around.
        if self.bounds().contains_rect(&rect) {
            Ok(())
        } else {
            Err(RfbError::limit(format!(
                "{what} rectangle {rect} lies outside the {}x{} framebuffer",
                self.width, self.height
            )))
        }
    }

    fn offset(&self, x: u32, y: u32) -> usize {
        (y as usize * self.width as usize + x as usize) * BYTES_PER_PIXEL
    }

    /// Write `rect` from pixels of 4 bytes each whose first three bytes are
    /// R, G, B (the RGBX wire format, or RGBA); alpha is forced to 255.
    pub fn put_rgbx(&mut self, rect: Rect, data: &[u8]) -> Result<(), RfbError> {
        self.check_rect(rect, "pixel")?;
        let row_len = rect.w as usize * BYTES_PER_PIXEL;
        if data.len() != row_len * rect.h as usize {
            return Err(RfbError::protocol(
                "pixel rectangle",
                format!("{} bytes for a {}x{} rectangle", data.len(), rect.w, rect.h),
            ));
        }
        if row_len == 0 {
            return Ok(());
        }
        for (row, src) in data.chunks_exact(row_len).enumerate() {
            let start = self.offset(rect.x, rect.y + row as u32);
            let dst = &mut self.pixels[start..start + row_len];
            dst.copy_from_slice(src);
            for px in dst.chunks_exact_mut(BYTES_PER_PIXEL) {
                px[3] = 255;
            }
        }
        Ok(())
    }

    /// Fill `rect` with one colour.
    pub fn fill(&mut self, rect: Rect, rgb: [u8; 3]) -> Result<(), RfbError> {
        self.check_rect(rect, "fill")?;
        let px = [rgb[0], rgb[1], rgb[2], 255];
        let row_len = rect.w as usize * BYTES_PER_PIXEL;
        for y in rect.y..rect.bottom() {
            let start = self.offset(rect.x, y);
            for dst in self.pixels[start..start + row_len].chunks_exact_mut(BYTES_PER_PIXEL) {
                dst.copy_from_slice(&px);
            }
        }
        Ok(())
    }

    /// Copy the `dst.w` x `dst.h` pixels at `src` to `dst` (CopyRect). Source
    /// and destination may overlap.
    pub fn copy_rect(&mut self, src: Point, dst: Rect) -> Result<(), RfbError> {
        self.check_rect(dst, "CopyRect destination")?;
        let src_rect = Rect::new(src.x, src.y, dst.w, dst.h);
        self.check_rect(src_rect, "CopyRect source")?;
        let row_len = dst.w as usize * BYTES_PER_PIXEL;
        if row_len == 0 {
            return Ok(());
        }
        // Walk rows in the direction that never reads an already-written row.
        let rows: Box<dyn Iterator<Item = u32>> =
            if src.y < dst.y { Box::new((0..dst.h).rev()) } else { Box::new(0..dst.h) };
        for row in rows {
            let from = self.offset(src.x, src.y + row);
            let to = self.offset(dst.x, dst.y + row);
            self.pixels.copy_within(from..from + row_len, to);
        }
        Ok(())
    }

    /// A mutable slice of `w` pixels starting at (x, y). The caller has
    /// checked the rectangle with [`Framebuffer::check_rect`].
    pub(crate) fn row_mut(&mut self, x: u32, y: u32, w: u32) -> &mut [u8] {
        let start = self.offset(x, y);
        &mut self.pixels[start..start + w as usize * BYTES_PER_PIXEL]
    }

    /// A copy as a [`Frame`].
    pub fn to_frame(&self) -> Frame {
        // The buffer always holds width*height*4 bytes with alpha 255.
        Frame::from_rgba(self.width, self.height, self.pixels.clone())
            .unwrap_or_else(|_| Frame::new(self.width, self.height))
    }

    /// Copy `rect` into `frame`, which must have the same size (used to
    /// publish the dirty parts of an update).
    pub fn copy_into_frame(&self, frame: &mut Frame, rect: Rect) {
        if frame.width() != self.width || frame.height() != self.height {
            *frame = self.to_frame();
            return;
        }
        let Some(r) = rect.intersect(&self.bounds()) else {
            return;
        };
        let row_len = r.w as usize * BYTES_PER_PIXEL;
        let out = frame.pixels_mut();
        for y in r.y..r.bottom() {
            let start = self.offset(r.x, y);
            out[start..start + row_len].copy_from_slice(&self.pixels[start..start + row_len]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(w: u32, h: u32) -> Framebuffer {
        let mut fb = Framebuffer::new(w, h).unwrap();
        for y in 0..h {
            for x in 0..w {
                fb.fill(Rect::new(x, y, 1, 1), [x as u8, y as u8, 7]).unwrap();
            }
        }
        fb
    }

    fn px(fb: &Framebuffer, x: u32, y: u32) -> [u8; 4] {
        let i = fb.offset(x, y);
        [fb.pixels[i], fb.pixels[i + 1], fb.pixels[i + 2], fb.pixels[i + 3]]
    }

    #[test]
    fn put_forces_alpha_and_checks_bounds() {
        let mut fb = Framebuffer::new(4, 3).unwrap();
        let data: Vec<u8> = (0..2 * 2 * 4).map(|i| i as u8).collect();
        fb.put_rgbx(Rect::new(2, 1, 2, 2), &data).unwrap();
        assert_eq!(px(&fb, 2, 1), [0, 1, 2, 255]);
        assert_eq!(px(&fb, 3, 2), [12, 13, 14, 255]);
        assert_eq!(px(&fb, 0, 0), [0, 0, 0, 255]);
        let err = fb.put_rgbx(Rect::new(3, 1, 2, 2), &data).unwrap_err();
        assert!(matches!(err, RfbError::LimitExceeded { .. }), "{err}");
        assert!(fb.put_rgbx(Rect::new(0, 0, 2, 2), &data[..15]).is_err());
        assert!(fb.fill(Rect::new(u32::MAX, 0, 2, 1), [1, 2, 3]).is_err());
        assert!(fb.fill(Rect::new(0, 0, 0, 0), [1, 2, 3]).is_ok());
    }

    #[test]
    fn copy_rect_handles_overlap_in_every_direction() {
        for (src, dst) in [
            (Point::new(0, 0), Rect::new(1, 1, 4, 3)),
            (Point::new(1, 1), Rect::new(0, 0, 4, 3)),
            (Point::new(0, 1), Rect::new(1, 0, 4, 3)),
            (Point::new(1, 0), Rect::new(0, 1, 4, 3)),
        ] {
            let mut fb = numbered(6, 5);
            let before = fb.clone();
            fb.copy_rect(src, dst).unwrap();
            for y in 0..dst.h {
                for x in 0..dst.w {
                    assert_eq!(
                        px(&fb, dst.x + x, dst.y + y),
                        px(&before, src.x + x, src.y + y),
                        "src {src} dst {dst} at {x},{y}"
                    );
                }
            }
        }
        let mut fb = numbered(6, 5);
        assert!(fb.copy_rect(Point::new(4, 0), Rect::new(0, 0, 3, 1)).is_err());
        assert!(fb.copy_rect(Point::new(0, 0), Rect::new(5, 0, 3, 1)).is_err());
    }

    #[test]
    fn resize_keeps_overlap_and_limits_size() {
        let mut fb = numbered(4, 3);
        fb.resize(6, 2).unwrap();
        assert_eq!((fb.width(), fb.height()), (6, 2));
        assert_eq!(px(&fb, 3, 1), [3, 1, 7, 255]);
        assert_eq!(px(&fb, 5, 1), [0, 0, 0, 255]);
        assert!(fb.resize(65535, 65535).is_err());
        assert!(Framebuffer::new(65535, 65535).is_err());
        let frame = fb.to_frame();
        assert_eq!(frame.rgb(3, 1), [3, 1, 7]);
    }

    #[test]
    fn copy_into_frame_copies_only_the_rect() {
        let fb = numbered(5, 4);
        let mut frame = Frame::new(5, 4);
        fb.copy_into_frame(&mut frame, Rect::new(1, 1, 2, 2));
        assert_eq!(frame.rgb(1, 1), [1, 1, 7]);
        assert_eq!(frame.rgb(2, 2), [2, 2, 7]);
        assert_eq!(frame.rgb(3, 3), [0, 0, 0]);
        let mut small = Frame::new(2, 2);
        fb.copy_into_frame(&mut small, Rect::new(0, 0, 1, 1));
        assert_eq!(small, fb.to_frame());
    }
}
