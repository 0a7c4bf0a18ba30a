//! A captured screen: an RGBA pixel buffer shared by the RFB client, the vision
//! checks and the recorder.
//!
//! Pixels are stored row by row, 4 bytes each, in R, G, B, A order with A always
//! 255 (screens are opaque). This is the layout the RFB client asks servers for,
//! so a framebuffer snapshot is a plain copy.

use std::path::Path;

use crate::geometry::Rect;

/// Errors reading or writing images.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a readable PNG: {message}")]
    Decode { path: String, message: String },
    #[error("{path}: cannot encode PNG: {message}")]
    Encode { path: String, message: String },
    #[error("pixel buffer of {len} bytes does not hold a {width}x{height} image")]
    Size { width: u32, height: u32, len: usize },
}

/// An opaque RGBA image.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({}x{})", self.width, self.height)
    }
}

impl Frame {
    /// A black frame.
    pub fn new(width: u32, height: u32) -> Frame {
        let mut pixels = vec![0u8; width as usize * height as usize * 4];
        for px in pixels.chunks_exact_mut(4) {
            px[3] = 255;
        }
        Frame { width, height, pixels }
    }

    /// Wrap an RGBA buffer; the alpha channel is forced to 255.
    pub fn from_rgba(width: u32, height: u32, mut pixels: Vec<u8>) -> Result<Frame, FrameError> {
        if pixels.len() != width as usize * height as usize * 4 {
            return Err(FrameError::Size { width, height, len: pixels.len() });
        }
        for px in pixels.chunks_exact_mut(4) {
            px[3] = 255;
        }
        Ok(Frame { width, height, pixels })
    }

    /// Build from packed RGB (3 bytes per pixel).
    pub fn from_rgb(width: u32, height: u32, rgb: &[u8]) -> Result<Frame, FrameError> {
        if rgb.len() != width as usize * height as usize * 3 {
            return Err(FrameError::Size { width, height, len: rgb.len() });
        }
        let mut pixels = Vec::with_capacity(rgb.len() / 3 * 4);
        for px in rgb.chunks_exact(3) {
            pixels.extend_from_slice(&[px[0], px[1], px[2], 255]);
        }
        Ok(Frame { width, height, pixels })
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

    /// Mutable RGBA bytes. Callers keep alpha at 255.
    pub fn pixels_mut(&mut self) -> &mut [u8] {
        &mut self.pixels
    }

    pub fn into_pixels(self) -> Vec<u8> {
        self.pixels
    }

    /// The RGB value at (x, y). Panics when out of bounds, like slice indexing.
    pub fn rgb(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 4;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    pub fn set_rgb(&mut self, x: u32, y: u32, rgb: [u8; 3]) {
        let i = (y as usize * self.width as usize + x as usize) * 4;
        self.pixels[i..i + 4].copy_from_slice(&[rgb[0], rgb[1], rgb[2], 255]);
    }

    /// The part of the frame inside `rect`, clipped to the frame. `None` when the
    /// rectangle lies entirely outside.
    pub fn crop(&self, rect: Rect) -> Option<Frame> {
        let r = rect.intersect(&self.bounds())?;
        let mut pixels = Vec::with_capacity(r.area() as usize * 4);
        let stride = self.width as usize * 4;
        for y in r.y..r.bottom() {
            let start = y as usize * stride + r.x as usize * 4;
            pixels.extend_from_slice(&self.pixels[start..start + r.w as usize * 4]);
        }
        Some(Frame { width: r.w, height: r.h, pixels })
    }

    /// Luma (ITU-R BT.601, as PIL's `convert("L")` computes it), one byte per pixel.
    pub fn to_luma(&self) -> Vec<u8> {
        self.pixels.chunks_exact(4).map(|p| luma(p[0], p[1], p[2])).collect()
    }

    /// Packed RGB bytes (3 per pixel).
    pub fn to_rgb(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pixels.len() / 4 * 3);
        for p in self.pixels.chunks_exact(4) {
            out.extend_from_slice(&p[..3]);
        }
        out
    }

    /// Encode as an RGB PNG into memory.
    pub fn to_png(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        self.write_png(&mut out).map_err(|message| FrameError::Encode { path: "<memory>".into(), message })?;
        Ok(out)
    }

    fn write_png<W: std::io::Write>(&self, w: W) -> Result<(), String> {
        let mut enc = png::Encoder::new(w, self.width, self.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&self.to_rgb()).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())
    }

    /// Write an RGB PNG file.
    pub fn save_png(&self, path: &Path) -> Result<(), FrameError> {
        let display = path.display().to_string();
        let file = std::fs::File::create(path).map_err(|source| FrameError::Io { path: display.clone(), source })?;
        let w = std::io::BufWriter::new(file);
        self.write_png(w).map_err(|message| FrameError::Encode { path: display, message })
    }

    /// Read a PNG file of any colour type (grayscale, RGB, RGBA, palette; 8 or 16 bit).
    pub fn load_png(path: &Path) -> Result<Frame, FrameError> {
        let display = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| FrameError::Io { path: display.clone(), source })?;
        Frame::decode_png(&bytes).map_err(|message| FrameError::Decode { path: display, message })
    }

    /// Decode PNG bytes.
    pub fn decode_png(bytes: &[u8]) -> Result<Frame, String> {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
        let size = reader.output_buffer_size().ok_or_else(|| "image too large".to_string())?;
        let mut buf = vec![0; size];
        let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
        let (w, h) = (info.width, info.height);
        let data = &buf[..info.buffer_size()];
        let n = w as usize * h as usize;
        let mut pixels = Vec::with_capacity(n * 4);
        match info.color_type {
            png::ColorType::Rgba => {
                for p in data.chunks_exact(4) {
                    pixels.extend_from_slice(&[p[0], p[1], p[2], 255]);
                }
            }
            png::ColorType::Rgb => {
                for p in data.chunks_exact(3) {
                    pixels.extend_from_slice(&[p[0], p[1], p[2], 255]);
                }
            }
            png::ColorType::GrayscaleAlpha => {
                for p in data.chunks_exact(2) {
                    pixels.extend_from_slice(&[p[0], p[0], p[0], 255]);
                }
            }
            png::ColorType::Grayscale => {
                for &g in data {
                    pixels.extend_from_slice(&[g, g, g, 255]);
                }
            }
            png::ColorType::Indexed => return Err("palette PNG was not expanded".into()),
        }
        if pixels.len() != n * 4 {
            return Err(format!("decoded {} bytes for a {w}x{h} image", pixels.len()));
        }
        Ok(Frame { width: w, height: h, pixels })
    }
}

/// BT.601 luma with PIL's fixed-point rounding.
#[inline]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip_and_crop() {
        let mut f = Frame::new(7, 5);
        f.set_rgb(3, 2, [10, 200, 30]);
        let bytes = f.to_png().unwrap();
        let g = Frame::decode_png(&bytes).unwrap();
        assert_eq!(f, g);
        let c = f.crop(Rect::new(3, 2, 10, 10)).unwrap();
        assert_eq!((c.width(), c.height()), (4, 3));
        assert_eq!(c.rgb(0, 0), [10, 200, 30]);
        assert!(f.crop(Rect::new(7, 0, 1, 1)).is_none());
    }

    #[test]
    fn luma_matches_pil() {
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(0, 0, 0), 0);
        assert_eq!(luma(255, 0, 0), 76);
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(luma(0, 0, 255), 29);
    }
}
