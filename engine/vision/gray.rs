//! Grayscale images and exclusion masks: the common input of every screen check.
//!
//! A [`GrayImage`] holds 8-bit luma computed from a [`Frame`] with
//! [`Frame::to_luma`] (ITU-R BT.601 with PIL's rounding), so numbers computed here
//! agree with Python tools that read the same PNG with `PIL.Image.convert("L")`.
//! A [`Mask`] is a list of rectangles, in frame coordinates, that a check must
//! ignore (a clock, a blinking cursor, a spinner).

use crate::frame::Frame;
use crate::geometry::{Point, Rect};

/// Errors building grayscale images.
#[derive(Debug, thiserror::Error)]
pub enum GrayError {
    #[error("luma buffer of {len} bytes does not hold a {width}x{height} image")]
    Size { width: u32, height: u32, len: usize },
    #[error("cannot encode grayscale PNG: {0}")]
    Encode(String),
}

/// An 8-bit grayscale image, row by row, one byte per pixel.
#[derive(Clone, PartialEq, Eq)]
pub struct GrayImage {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl std::fmt::Debug for GrayImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GrayImage({}x{})", self.width, self.height)
    }
}

impl GrayImage {
    /// A black image.
    pub fn new(width: u32, height: u32) -> GrayImage {
        GrayImage { width, height, pixels: vec![0; width as usize * height as usize] }
    }

    /// The luma of a frame (BT.601, PIL rounding; the same values as
    /// [`Frame::to_luma`]).
    pub fn from_frame(frame: &Frame) -> GrayImage {
        let mut pixels = Vec::with_capacity(frame.pixels().len() / 4);
        luma_into(frame.pixels(), &mut pixels);
        GrayImage { width: frame.width(), height: frame.height(), pixels }
    }

    /// The luma of the part of `frame` inside `region` (clipped to the frame);
    /// `None` when the region lies entirely outside.
    pub fn from_frame_region(frame: &Frame, region: Rect) -> Option<GrayImage> {
        let r = region.intersect(&frame.bounds())?;
        let stride = frame.width() as usize * 4;
        let src = frame.pixels();
        let mut pixels = Vec::with_capacity(r.area() as usize);
        for y in r.y..r.bottom() {
            let start = y as usize * stride + r.x as usize * 4;
            luma_into(src.get(start..start + r.w as usize * 4)?, &mut pixels);
        }
        Some(GrayImage { width: r.w, height: r.h, pixels })
    }

    /// One colour channel (0 red, 1 green, 2 blue) of the part of `frame` inside
    /// `region` (clipped); `None` when the region lies outside or the channel
    /// does not exist.
    pub fn channel_of_frame(frame: &Frame, channel: usize, region: Rect) -> Option<GrayImage> {
        if channel > 2 {
            return None;
        }
        let r = region.intersect(&frame.bounds())?;
        let stride = frame.width() as usize * 4;
        let src = frame.pixels();
        let mut pixels = Vec::with_capacity(r.area() as usize);
        for y in r.y..r.bottom() {
            let start = y as usize * stride + r.x as usize * 4;
            let row = src.get(start..start + r.w as usize * 4)?;
            pixels.extend(row.chunks_exact(4).map(|p| p[channel]));
        }
        Some(GrayImage { width: r.w, height: r.h, pixels })
    }

    /// Wrap a luma buffer of `width * height` bytes.
    pub fn from_luma(width: u32, height: u32, pixels: Vec<u8>) -> Result<GrayImage, GrayError> {
        if pixels.len() != width as usize * height as usize {
            return Err(GrayError::Size { width, height, len: pixels.len() });
        }
        Ok(GrayImage { width, height, pixels })
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

    /// The luma bytes, row by row.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    pub fn pixels_mut(&mut self) -> &mut [u8] {
        &mut self.pixels
    }

    /// Row `y`; an empty slice when `y` is out of range.
    pub fn row(&self, y: u32) -> &[u8] {
        let w = self.width as usize;
        let start = y as usize * w;
        self.pixels.get(start..start + w).unwrap_or(&[])
    }

    /// The value at (x, y), or `None` out of bounds.
    pub fn get(&self, x: u32, y: u32) -> Option<u8> {
        if x >= self.width || y >= self.height {
            return None;
        }
        self.pixels.get(y as usize * self.width as usize + x as usize).copied()
    }

    /// The part inside `rect`, clipped; `None` when the rectangle lies outside.
    pub fn crop(&self, rect: Rect) -> Option<GrayImage> {
        let r = rect.intersect(&self.bounds())?;
        let mut pixels = Vec::with_capacity(r.area() as usize);
        for y in r.y..r.bottom() {
            let row = self.row(y);
            pixels.extend_from_slice(row.get(r.x as usize..r.right() as usize)?);
        }
        Some(GrayImage { width: r.w, height: r.h, pixels })
    }

    /// Half the size in each direction with a [1 3 3 1]/8 filter (a 2x2 mean
    /// smoothed once more), which aliases less than a plain 2x2 mean: fine
    /// patterns such as text keep their place in the coarse image. Borders are
    /// clamped; an odd last row/column is dropped.
    pub fn pyramid_down(&self) -> GrayImage {
        let (w, h) = (self.width as usize, self.height as usize);
        let (ow, oh) = (w / 2, h / 2);
        if ow == 0 || oh == 0 {
            return GrayImage::new(ow as u32, oh as u32);
        }
        // Horizontal pass: output column i covers source 2i-1 ..= 2i+2
        // (clamped at the borders).
        let mut tmp = vec![0u16; ow * h];
        for y in 0..h {
            let row = self.row(y as u32);
            let out = &mut tmp[y * ow..(y + 1) * ow];
            let at = |x: isize| row[x.clamp(0, w as isize - 1) as usize] as u16;
            out[0] = at(-1) + 3 * at(0) + 3 * at(1) + at(2);
            // Interior: 2i-1 >= 0 and 2i+2 < w.
            let last = (w - 3) / 2;
            for i in 1..=last.min(ow - 1) {
                let q = &row[2 * i - 1..2 * i + 3];
                out[i] = q[0] as u16 + 3 * q[1] as u16 + 3 * q[2] as u16 + q[3] as u16;
            }
            for (i, o) in out.iter_mut().enumerate().skip((last + 1).max(1)) {
                let x = 2 * i as isize;
                *o = at(x - 1) + 3 * at(x) + 3 * at(x + 1) + at(x + 2);
            }
        }
        let mut pixels = vec![0u8; ow * oh];
        for j in 0..oh {
            let y = 2 * j as isize;
            let r = |y: isize| y.clamp(0, h as isize - 1) as usize * ow;
            let (a, b, c, d) =
                (&tmp[r(y - 1)..][..ow], &tmp[r(y)..][..ow], &tmp[r(y + 1)..][..ow], &tmp[r(y + 2)..][..ow]);
            let dst = &mut pixels[j * ow..(j + 1) * ow];
            for i in 0..ow {
                let v = a[i] as u32 + 3 * b[i] as u32 + 3 * c[i] as u32 + d[i] as u32;
                dst[i] = ((v + 32) >> 6) as u8;
            }
        }
        GrayImage { width: ow as u32, height: oh as u32, pixels }
    }

    /// Twice the size in each direction, bilinear (pixel centres aligned as in
    /// PIL's `resize`). Used to make small text readable for OCR.
    pub fn upscale2(&self) -> GrayImage {
        let (w, h) = (self.width as usize, self.height as usize);
        if w == 0 || h == 0 {
            return GrayImage::new(self.width * 2, self.height * 2);
        }
        // Output pixel 2i maps to source i - 0.25, 2i+1 to i + 0.25: weights 1/4, 3/4.
        let horizontal = |row: &[u8], out: &mut Vec<u16>| {
            out.clear();
            for i in 0..w {
                let c = row[i] as u16 * 4;
                let left = row[i.saturating_sub(1)] as u16;
                let right = row[(i + 1).min(w - 1)] as u16;
                out.push(3 * c / 4 + left);
                out.push(3 * c / 4 + right);
            }
        };
        let mut rows: Vec<Vec<u16>> = Vec::with_capacity(h);
        let mut buf = Vec::with_capacity(2 * w);
        for y in 0..h as u32 {
            horizontal(self.row(y), &mut buf);
            rows.push(buf.clone());
        }
        let mut pixels = Vec::with_capacity(4 * w * h);
        for y in 0..h {
            let c = &rows[y];
            let up = &rows[y.saturating_sub(1)];
            let down = &rows[(y + 1).min(h - 1)];
            // Values are 4x scaled; vertical weights 3/4 and 1/4 give 16x.
            pixels.extend(c.iter().zip(up).map(|(&c, &u)| ((3 * c + u + 8) / 16) as u8));
            pixels.extend(c.iter().zip(down).map(|(&c, &d)| ((3 * c + d + 8) / 16) as u8));
        }
        GrayImage { width: self.width * 2, height: self.height * 2, pixels }
    }

    /// A gray RGB frame with the same values (for saving and heatmaps).
    pub fn to_frame(&self) -> Frame {
        let mut frame = Frame::new(self.width, self.height);
        for (px, &v) in frame.pixels_mut().chunks_exact_mut(4).zip(&self.pixels) {
            px[0] = v;
            px[1] = v;
            px[2] = v;
        }
        frame
    }

    /// Encode as an 8-bit grayscale PNG in memory.
    pub fn to_png(&self) -> Result<Vec<u8>, GrayError> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, self.width, self.height);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header().map_err(|e| GrayError::Encode(e.to_string()))?;
        writer.write_image_data(&self.pixels).map_err(|e| GrayError::Encode(e.to_string()))?;
        writer.finish().map_err(|e| GrayError::Encode(e.to_string()))?;
        Ok(out)
    }
}

/// Append the luma of RGBA `rgba` to `out`, eight pixels at a time (the
/// compiler vectorises the fixed-size blocks; `crate::frame::luma` per pixel
/// does not vectorise).
fn luma_into(rgba: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + rgba.len() / 4, 0);
    let dst = &mut out[start..];
    let mut src = rgba.chunks_exact(32);
    let mut blocks = dst.chunks_exact_mut(8);
    for (block, luma) in (&mut src).zip(&mut blocks) {
        for i in 0..8 {
            let (r, g, b) = (block[4 * i] as u32, block[4 * i + 1] as u32, block[4 * i + 2] as u32);
            luma[i] = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8;
        }
    }
    for (p, l) in src.remainder().chunks_exact(4).zip(blocks.into_remainder()) {
        *l = crate::frame::luma(p[0], p[1], p[2]);
    }
}

/// Rectangles, in frame coordinates, that a check ignores.
///
/// How each check uses it: SSIM leaves out every map pixel whose window touches a
/// masked pixel (see [`crate::vision::ssim`]); the diff heatmap tints masked areas
/// blue instead of marking their changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mask {
    rects: Vec<Rect>,
}

impl Mask {
    /// A mask that excludes nothing.
    pub fn new() -> Mask {
        Mask::default()
    }

    pub fn from_rects(rects: impl IntoIterator<Item = Rect>) -> Mask {
        let mut mask = Mask::new();
        for r in rects {
            mask.add(r);
        }
        mask
    }

    /// Exclude `rect` too (empty rectangles are ignored).
    pub fn add(&mut self, rect: Rect) {
        if !rect.is_empty() {
            self.rects.push(rect);
        }
    }

    pub fn rects(&self) -> &[Rect] {
        &self.rects
    }

    pub fn is_empty(&self) -> bool {
        self.rects.is_empty()
    }

    /// True when `p` lies in an excluded rectangle.
    pub fn contains(&self, p: Point) -> bool {
        self.rects.iter().any(|r| r.contains(p))
    }

    /// The same mask seen from inside `region`: rectangles clipped to it and
    /// moved so that the region's top-left corner is the origin.
    pub fn relative_to(&self, region: Rect) -> Mask {
        Mask {
            rects: self
                .rects
                .iter()
                .filter_map(|r| r.intersect(&region))
                .map(|r| Rect::new(r.x - region.x, r.y - region.y, r.w, r.h))
                .collect(),
        }
    }

    /// Each rectangle grown by `radius` on every side, clipped to `bounds`.
    pub fn dilated(&self, radius: u32, bounds: Rect) -> Mask {
        Mask {
            rects: self.rects.iter().filter_map(|r| r.intersect(&bounds).map(|r| r.expand(radius, &bounds))).collect(),
        }
    }

    /// One flag per pixel of a `width` x `height` image: true where masked.
    pub fn to_bitmap(&self, width: u32, height: u32) -> Vec<bool> {
        let mut bits = vec![false; width as usize * height as usize];
        let bounds = Rect::screen(width, height);
        for r in self.rects.iter().filter_map(|r| r.intersect(&bounds)) {
            for y in r.y..r.bottom() {
                let start = y as usize * width as usize;
                if let Some(row) = bits.get_mut(start + r.x as usize..start + r.right() as usize) {
                    row.fill(true);
                }
            }
        }
        bits
    }

    /// The x ranges of row `y` that are NOT masked, within `x0..x1`, in order.
    pub(crate) fn open_spans(&self, y: u32, x0: u32, x1: u32) -> Vec<(u32, u32)> {
        let mut closed: Vec<(u32, u32)> = self
            .rects
            .iter()
            .filter(|r| y >= r.y && y < r.bottom())
            .map(|r| (r.x.max(x0), r.right().min(x1)))
            .filter(|(a, b)| a < b)
            .collect();
        closed.sort_unstable();
        let mut spans = Vec::new();
        let mut cursor = x0;
        for (a, b) in closed {
            if a > cursor {
                spans.push((cursor, a));
            }
            cursor = cursor.max(b);
        }
        if cursor < x1 {
            spans.push((cursor, x1));
        }
        spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_and_upscale_keep_flat_values() {
        let flat = GrayImage::from_luma(3, 3, vec![77; 9]).unwrap();
        let u = flat.upscale2();
        assert_eq!((u.width(), u.height()), (6, 6));
        assert!(u.pixels().iter().all(|&v| v == 77));
        let p = flat.upscale2().pyramid_down();
        assert_eq!((p.width(), p.height()), (3, 3));
        assert!(p.pixels().iter().all(|&v| v == 77));
        // [1 3 3 1]/8 in both directions, clamped borders.
        let ramp = GrayImage::from_luma(8, 1, vec![0, 8, 16, 24, 32, 40, 48, 56]).unwrap().pyramid_down();
        assert_eq!(ramp.pixels().len(), 0);
        let ramp = GrayImage::from_luma(8, 2, [0u8, 8, 16, 24, 32, 40, 48, 56].repeat(2)).unwrap().pyramid_down();
        assert_eq!(ramp.pixels(), &[5, 20, 36, 51]);
        let step = GrayImage::from_luma(2, 1, vec![0, 200]).unwrap().upscale2();
        assert_eq!(step.row(0), &[0, 50, 150, 200]);
    }

    #[test]
    fn luma_matches_frame_to_luma() {
        let mut frame = Frame::new(13, 7);
        for y in 0..7 {
            for x in 0..13 {
                frame.set_rgb(x, y, [(x * 19) as u8, (y * 37 + x) as u8, (255 - x * y) as u8]);
            }
        }
        assert_eq!(GrayImage::from_frame(&frame).pixels(), frame.to_luma().as_slice());
        let region = Rect::new(3, 2, 9, 4);
        let cropped = GrayImage::from_frame(&frame.crop(region).unwrap());
        assert_eq!(GrayImage::from_frame_region(&frame, region).unwrap(), cropped);
    }

    #[test]
    fn mask_spans_and_relative() {
        let m = Mask::from_rects([Rect::new(2, 0, 3, 2), Rect::new(4, 1, 4, 1)]);
        assert_eq!(m.open_spans(0, 0, 10), vec![(0, 2), (5, 10)]);
        assert_eq!(m.open_spans(1, 0, 10), vec![(0, 2), (8, 10)]);
        assert_eq!(m.open_spans(5, 0, 10), vec![(0, 10)]);
        let rel = m.relative_to(Rect::new(3, 1, 10, 10));
        assert_eq!(rel.rects(), &[Rect::new(0, 0, 2, 1), Rect::new(1, 0, 4, 1)]);
        let bits = Mask::from_rects([Rect::new(1, 1, 1, 1)]).to_bitmap(3, 3);
        assert_eq!(bits.iter().filter(|&&b| b).count(), 1);
        assert!(bits[4]);
    }
}
