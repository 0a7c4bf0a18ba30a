//! Plays a GIF back frame by frame, the way a browser composites it.
//!
//! A GIF image may cover part of the canvas, leave pixels transparent, and ask for
//! the canvas to be kept, cleared or restored afterwards (disposal). [`GifPlayback`]
//! applies all of that and yields, for every image, the full canvas as it is shown,
//! with the image's delay. Memory is one canvas (two when an image asks for
//! "restore previous"), whatever the length of the GIF.
//!
//! Used to check recordings (tests, benchmarks) and to pull frames out of a GIF for
//! reports. A file cut short after a complete image (a recorder killed mid-run) plays
//! up to that image and then reports itself as [`GifPlayback::truncated`].

use std::io::Read;

use crate::frame::Frame;
use crate::geometry::Rect;

/// Errors reading a GIF.
#[derive(Debug, thiserror::Error)]
pub enum GifReadError {
    #[error("not a readable GIF: {0}")]
    Decode(String),
    #[error("image {index} at {rect} lies outside the {width}x{height} canvas")]
    OutOfCanvas { index: u64, rect: Rect, width: u32, height: u32 },
    #[error("image {index} has no colour table")]
    NoPalette { index: u64 },
}

/// One displayed state of the GIF.
#[derive(Debug, Clone)]
pub struct PlayedFrame {
    /// The whole canvas as shown while this image is up. Pixels no image has
    /// painted yet are black.
    pub frame: Frame,
    /// Where this image was drawn.
    pub rect: Rect,
    /// How long it stays up, in centiseconds.
    pub delay_cs: u16,
    /// Pixels of `rect` this image left transparent.
    pub transparent_pixels: u64,
    /// Canvas pixels no image has painted yet.
    pub unpainted_pixels: u64,
}

/// Reads a GIF image by image and composites each onto the canvas.
pub struct GifPlayback<R: Read> {
    decoder: gif::Decoder<R>,
    width: u32,
    height: u32,
    global_palette: Option<Vec<u8>>,
    /// RGBA canvas; alpha 0 marks pixels never painted.
    canvas: Vec<u8>,
    /// What the previous image asks to do once its delay is over.
    dispose_after: Option<(Rect, gif::DisposalMethod)>,
    saved_canvas: Option<Vec<u8>>,
    images_read: u64,
    truncated: bool,
}

impl<R: Read> std::fmt::Debug for GifPlayback<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GifPlayback")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("images_read", &self.images_read)
            .finish_non_exhaustive()
    }
}

fn decode_error(error: gif::DecodingError) -> GifReadError {
    GifReadError::Decode(error.to_string())
}

fn is_unexpected_eof(error: &gif::DecodingError) -> bool {
    match error {
        gif::DecodingError::UnexpectedEof => true,
        gif::DecodingError::Io(io) => io.kind() == std::io::ErrorKind::UnexpectedEof,
        _ => false,
    }
}

impl<R: Read> GifPlayback<R> {
    /// Read the GIF header (the decoder refuses images over 50 MB of pixels).
    pub fn open(reader: R) -> Result<GifPlayback<R>, GifReadError> {
        let mut options = gif::DecodeOptions::new();
        options.set_color_output(gif::ColorOutput::Indexed);
        let decoder = options.read_info(reader).map_err(decode_error)?;
        let width = decoder.width() as u32;
        let height = decoder.height() as u32;
        let global_palette = decoder.global_palette().map(<[u8]>::to_vec);
        Ok(GifPlayback {
            decoder,
            width,
            height,
            global_palette,
            canvas: vec![0; width as usize * height as usize * 4],
            dispose_after: None,
            saved_canvas: None,
            images_read: 0,
            truncated: false,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// True once the file ended before its trailer (after the last full image).
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The loop count the GIF asks for.
    pub fn repeat(&self) -> gif::Repeat {
        self.decoder.repeat()
    }

    /// The next displayed state, or `None` at the end of the GIF.
    pub fn next_frame(&mut self) -> Result<Option<PlayedFrame>, GifReadError> {
        let image = match self.decoder.read_next_frame() {
            Ok(Some(image)) => image,
            Ok(None) => return Ok(None),
            Err(error) if is_unexpected_eof(&error) => {
                self.truncated = true;
                return Ok(None);
            }
            Err(error) => return Err(decode_error(error)),
        };
        let index = self.images_read;
        self.images_read += 1;
        let rect = Rect::new(image.left as u32, image.top as u32, image.width as u32, image.height as u32);
        if !Rect::screen(self.width, self.height).contains_rect(&rect) {
            return Err(GifReadError::OutOfCanvas { index, rect, width: self.width, height: self.height });
        }
        let palette =
            image.palette.clone().or_else(|| self.global_palette.clone()).ok_or(GifReadError::NoPalette { index })?;
        let transparent = image.transparent;
        let delay_cs = image.delay;
        let dispose = image.dispose;
        let buffer = image.buffer.to_vec();

        // Dispose of the previous image first.
        match self.dispose_after.take() {
            Some((r, gif::DisposalMethod::Background)) => self.clear(r),
            Some((_, gif::DisposalMethod::Previous)) => {
                if let Some(saved) = self.saved_canvas.take() {
                    self.canvas = saved;
                }
            }
            _ => {}
        }
        if dispose == gif::DisposalMethod::Previous {
            self.saved_canvas = Some(self.canvas.clone());
        }

        let mut transparent_pixels = 0u64;
        let stride = self.width as usize * 4;
        for (row, indices) in buffer.chunks_exact(rect.w.max(1) as usize).take(rect.h as usize).enumerate() {
            let y = rect.y as usize + row;
            for (col, &i) in indices.iter().enumerate() {
                if Some(i) == transparent {
                    transparent_pixels += 1;
                    continue;
                }
                let x = rect.x as usize + col;
                let at = y * stride + x * 4;
                let rgb = palette.get(i as usize * 3..i as usize * 3 + 3).unwrap_or(&[0, 0, 0]);
                if let Some(px) = self.canvas.get_mut(at..at + 4) {
                    px[..3].copy_from_slice(rgb);
                    px[3] = 255;
                }
            }
        }
        self.dispose_after = Some((rect, dispose));

        let mut shown = self.canvas.clone();
        let mut unpainted_pixels = 0u64;
        for px in shown.chunks_exact_mut(4) {
            if px[3] == 0 {
                unpainted_pixels += 1;
            }
        }
        let frame =
            Frame::from_rgba(self.width, self.height, shown).map_err(|e| GifReadError::Decode(e.to_string()))?;
        Ok(Some(PlayedFrame { frame, rect, delay_cs, transparent_pixels, unpainted_pixels }))
    }

    fn clear(&mut self, rect: Rect) {
        let stride = self.width as usize * 4;
        for y in rect.y..rect.bottom() {
            let start = y as usize * stride + rect.x as usize * 4;
            if let Some(row) = self.canvas.get_mut(start..start + rect.w as usize * 4) {
                row.fill(0);
            }
        }
    }
}
