//! Tight encoding (7), lossless parts only: a compression-control byte
//! (low four bits reset zlib streams 0-3; high four bits: 8 = fill with one
//! pixel, 9 = JPEG, below 8 = basic compression with stream `bits 4-5` and,
//! with bit 6, a filter byte: 0 copy, 1 palette, 2 gradient), then the
//! pixel data: under 12 bytes as is, else a compact length (7 bits per byte,
//! high bit: another byte follows) and that much zlib data from the chosen
//! stream. Pixels are TPIXELs: 3 bytes, R, G, B, for the client's format.
//!
//! smoke never asks for JPEG (no quality-level pseudo-encoding): a JPEG
//! rectangle is an error, never a silently lossy frame.

use flate2::{Decompress, FlushDecompress, Status};

use crate::geometry::Rect;
use crate::rfb::encodings::{ByteReader, DecodeStatus};
use crate::rfb::error::RfbError;
use crate::rfb::framebuffer::{BYTES_PER_PIXEL, Framebuffer};

const TPIXEL: usize = 3;
const PLACE: &str = "Tight rectangle";
/// Tight's widest rectangle (the protocol splits wider ones).
const MAX_WIDTH: u32 = 2048;

/// The Tight decoder of one connection: its four zlib streams.
pub struct TightDecoder {
    streams: [Decompress; 4],
    data: Vec<u8>,
}

impl Default for TightDecoder {
    fn default() -> TightDecoder {
        TightDecoder { streams: std::array::from_fn(|_| Decompress::new(true)), data: Vec::new() }
    }
}

impl std::fmt::Debug for TightDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TightDecoder")
    }
}

enum Filter {
    Copy,
    Palette(Vec<[u8; 3]>),
    Gradient,
}

/// Everything a basic-compression rectangle holds, read before anything is decoded.
struct Basic<'a> {
    stream: usize,
    filter: Filter,
    /// Bytes after filtering: raw (under 12 bytes) or zlib data.
    payload: &'a [u8],
    compressed: bool,
    len: usize,
}

/// The control byte, the fill colour or the basic-compression parts.
type Parsed<'a> = (u8, Option<[u8; 3]>, Option<Basic<'a>>);

fn tpixel(r: &mut ByteReader<'_>) -> Result<[u8; 3], RfbError> {
    let p = r.take(TPIXEL)?;
    Ok([p[0], p[1], p[2]])
}

/// The compact length: 1 to 3 bytes of 7 (7, 8) bits.
fn compact_len(r: &mut ByteReader<'_>) -> Result<usize, RfbError> {
    let mut len = 0usize;
    for (i, shift) in [0u32, 7, 14].into_iter().enumerate() {
        let b = r.u8()?;
        let bits = if i == 2 { usize::from(b) } else { usize::from(b & 0x7f) };
        len |= bits << shift;
        if i == 2 || b & 0x80 == 0 {
            break;
        }
    }
    Ok(len)
}

impl TightDecoder {
    /// Decode one Tight rectangle (see the [decoder contract](super)).
    pub fn decode(&mut self, rect: Rect, input: &[u8], fb: &mut Framebuffer) -> Result<DecodeStatus, RfbError> {
        fb.check_rect(rect, "Tight")?;
        if rect.w > MAX_WIDTH {
            return Err(RfbError::limit(format!("a Tight rectangle {} pixels wide (at most {MAX_WIDTH})", rect.w)));
        }
        let mut r = ByteReader::new(input, PLACE);
        let parsed = (|| -> Result<Parsed<'_>, RfbError> {
            let control = r.u8()?;
            let kind = control >> 4;
            match kind {
                8 => Ok((control, Some(tpixel(&mut r)?), None)),
                9 => Err(RfbError::protocol(
                    PLACE,
                    "the server sent JPEG, which smoke never asks for (lossy frames would spoil image checks)",
                )),
                0..=7 => {
                    let filter = if kind & 4 != 0 {
                        match r.u8()? {
                            0 => Filter::Copy,
                            1 => {
                                let n = usize::from(r.u8()?) + 1;
                                if n < 2 {
                                    return Err(RfbError::protocol(PLACE, "a palette of one colour"));
                                }
                                Filter::Palette((0..n).map(|_| tpixel(&mut r)).collect::<Result<_, _>>()?)
                            }
                            2 => Filter::Gradient,
                            other => return Err(RfbError::protocol(PLACE, format!("filter {other} is not defined"))),
                        }
                    } else {
                        Filter::Copy
                    };
                    let (w, h) = (rect.w as usize, rect.h as usize);
                    let len = match &filter {
                        Filter::Palette(p) if p.len() == 2 => w.div_ceil(8) * h,
                        Filter::Palette(_) => w * h,
                        _ => w * h * TPIXEL,
                    };
                    let (compressed, payload) = if len < 12 {
                        (false, r.take(len)?)
                    } else {
                        let clen = compact_len(&mut r)?;
                        if clen > len + len / 64 + 1024 {
                            return Err(RfbError::limit(format!(
                                "{clen} bytes of zlib data for {len} bytes of pixels in a {}x{} rectangle",
                                rect.w, rect.h
                            )));
                        }
                        (true, r.take(clen)?)
                    };
                    Ok((control, None, Some(Basic { stream: usize::from(kind & 3), filter, payload, compressed, len })))
                }
                other => Err(RfbError::protocol(PLACE, format!("compression type {other} is not defined"))),
            }
        })();
        let (control, fill, basic) = match parsed {
            Ok(p) => p,
            Err(_) if r.short_of.is_some() => return Ok(DecodeStatus::NeedMore { total: r.short_of.unwrap_or(0) }),
            Err(e) => return Err(e),
        };
        let consumed = r.position();
        // all bytes are here: now the streams may change
        for (i, s) in self.streams.iter_mut().enumerate() {
            if control & (1 << i) != 0 {
                *s = Decompress::new(true);
            }
        }
        if let Some(rgb) = fill {
            fb.fill(rect, rgb)?;
            return Ok(DecodeStatus::Complete { consumed });
        }
        let Some(b) = basic else { return Ok(DecodeStatus::Complete { consumed }) };
        let pixels: &[u8] = if b.compressed {
            inflate(&mut self.streams[b.stream], b.payload, b.len, &mut self.data)?;
            &self.data
        } else {
            b.payload
        };
        paint(rect, &b.filter, pixels, fb)?;
        Ok(DecodeStatus::Complete { consumed })
    }
}

/// Inflate `compressed` with `stream` into exactly `len` bytes.
fn inflate(stream: &mut Decompress, compressed: &[u8], len: usize, out: &mut Vec<u8>) -> Result<(), RfbError> {
    out.clear();
    // one byte of room past `len` notices a stream that gives too much
    out.reserve(len + 1);
    let before_in = stream.total_in();
    let status = stream
        .decompress_vec(compressed, out, FlushDecompress::Sync)
        .map_err(|e| RfbError::protocol("Tight zlib stream", e.to_string()))?;
    let used = (stream.total_in() - before_in) as usize;
    if out.len() != len || (used < compressed.len() && status != Status::StreamEnd) {
        return Err(RfbError::protocol(
            "Tight zlib stream",
            format!("{} bytes of zlib data gave {} bytes, {len} expected", compressed.len(), out.len()),
        ));
    }
    Ok(())
}

/// Turn filtered pixel data into framebuffer pixels.
fn paint(rect: Rect, filter: &Filter, data: &[u8], fb: &mut Framebuffer) -> Result<(), RfbError> {
    let (w, h) = (rect.w as usize, rect.h as usize);
    let mut rgbx = vec![0u8; w * h * BYTES_PER_PIXEL];
    match filter {
        Filter::Copy => {
            for (dst, src) in rgbx.chunks_exact_mut(BYTES_PER_PIXEL).zip(data.chunks_exact(TPIXEL)) {
                dst[..TPIXEL].copy_from_slice(src);
            }
        }
        Filter::Palette(p) => {
            let row_bytes = if p.len() == 2 { w.div_ceil(8) } else { w };
            for y in 0..h {
                let row = &data[y * row_bytes..(y + 1) * row_bytes];
                for x in 0..w {
                    let index =
                        if p.len() == 2 { usize::from((row[x / 8] >> (7 - x % 8)) & 1) } else { usize::from(row[x]) };
                    let colour = p.get(index).ok_or_else(|| {
                        RfbError::protocol(
                            PLACE,
                            format!("palette index {index} with a palette of {} colours", p.len()),
                        )
                    })?;
                    let at = (y * w + x) * BYTES_PER_PIXEL;
                    rgbx[at..at + TPIXEL].copy_from_slice(colour);
                }
            }
        }
        Filter::Gradient => {
            // each component: the prediction left + above - above-left, clamped, plus the data
            for y in 0..h {
                for x in 0..w {
                    for c in 0..TPIXEL {
                        let get = |xx: usize, yy: usize| i32::from(rgbx[(yy * w + xx) * BYTES_PER_PIXEL + c]);
                        let left = if x > 0 { get(x - 1, y) } else { 0 };
                        let up = if y > 0 { get(x, y - 1) } else { 0 };
                        let corner = if x > 0 && y > 0 { get(x - 1, y - 1) } else { 0 };
                        let predicted = (left + up - corner).clamp(0, 255) as u8;
                        rgbx[(y * w + x) * BYTES_PER_PIXEL + c] =
                            predicted.wrapping_add(data[(y * w + x) * TPIXEL + c]);
                    }
                }
            }
        }
    }
    fb.put_rgbx(rect, &rgbx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    fn deflate(c: &mut Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        out
    }

    fn with_len(mut head: Vec<u8>, z: &[u8]) -> Vec<u8> {
        let n = z.len();
        if n < 128 {
            head.push(n as u8);
        } else if n < 16384 {
            head.extend([(n & 0x7f) as u8 | 0x80, (n >> 7) as u8]);
        } else {
            head.extend([(n & 0x7f) as u8 | 0x80, ((n >> 7) & 0x7f) as u8 | 0x80, (n >> 14) as u8]);
        }
        head.extend_from_slice(z);
        head
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn fill_copy_palette_and_gradient() {
        let mut fb = Framebuffer::new(64, 64).unwrap();
        let mut d = TightDecoder::default();
        // fill
        let fill = [0x80, 10, 20, 30];
        assert_eq!(d.decode(Rect::new(0, 0, 64, 64), &fill, &mut fb).unwrap(), DecodeStatus::Complete { consumed: 4 });
        assert_eq!(fb.to_frame().rgb(63, 63), [10, 20, 30]);
        // copy filter, stream 1, compressed: 8x4 pixels
        let mut z1 = Compress::new(Compression::default(), true);
        let px: Vec<u8> = (0..32u8).flat_map(|i| [i, i * 2, 255 - i]).collect();
        let msg = with_len(vec![0x10], &deflate(&mut z1, &px));
        assert_eq!(
            d.decode(Rect::new(8, 8, 8, 4), &msg, &mut fb).unwrap(),
            DecodeStatus::Complete { consumed: msg.len() }
        );
        assert_eq!(fb.to_frame().rgb(8 + 3, 8 + 1), [11, 22, 244]);
        // the same stream goes on in the next rectangle
        let px2: Vec<u8> = (0..32u8).flat_map(|i| [i, i, i]).collect();
        let msg = with_len(vec![0x10], &deflate(&mut z1, &px2));
        d.decode(Rect::new(8, 8, 8, 4), &msg, &mut fb).unwrap();
        assert_eq!(fb.to_frame().rgb(8 + 7, 8 + 3), [31, 31, 31]);
        // palette of 2, 10x2 pixels: rows of 2 bytes, 4 bytes < 12: raw
        let msg = [0x40, 1, 1, 0, 0, 0, 0, 255, 0, 0b1000_0000, 0b0100_0000, 0xff, 0xc0];
        assert_eq!(d.decode(Rect::new(0, 20, 10, 2), &msg, &mut fb).unwrap(), DecodeStatus::Complete { consumed: 13 });
        let f = fb.to_frame();
        assert_eq!(
            (f.rgb(0, 20), f.rgb(1, 20), f.rgb(9, 20), f.rgb(9, 21)),
            ([0, 255, 0], [0, 0, 0], [0, 255, 0], [0, 255, 0])
        );
        // gradient: a smooth ramp encodes to constant differences
        let (w, h) = (16usize, 4usize);
        let want: Vec<[u8; 3]> = (0..w * h).map(|i| [(i % w * 3) as u8, (i / w * 5) as u8, 100]).collect();
        let mut diffs = Vec::new();
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let g = |xx: usize, yy: usize| i32::from(want[yy * w + xx][c]);
                    let l = if x > 0 { g(x - 1, y) } else { 0 };
                    let u = if y > 0 { g(x, y - 1) } else { 0 };
                    let ul = if x > 0 && y > 0 { g(x - 1, y - 1) } else { 0 };
                    diffs.push(want[y * w + x][c].wrapping_sub((l + u - ul).clamp(0, 255) as u8));
                }
            }
        }
        let mut z2 = Compress::new(Compression::default(), true);
        let msg = with_len(vec![0x60, 2], &deflate(&mut z2, &diffs));
        d.decode(Rect::new(30, 30, 16, 4), &msg, &mut fb).unwrap();
        let f = fb.to_frame();
        for (i, px) in want.iter().enumerate() {
            assert_eq!(f.rgb(30 + (i % w) as u32, 30 + (i / w) as u32), *px);
        }
    }

    #[test]
    fn pieces_jpeg_bombs_and_resets() {
        let mut fb = Framebuffer::new(64, 64).unwrap();
        let mut d = TightDecoder::default();
        let fill = [0x80, 1, 2, 3];
        assert_eq!(d.decode(Rect::new(0, 0, 4, 4), &fill[..1], &mut fb).unwrap(), DecodeStatus::NeedMore { total: 4 });
        let e = d.decode(Rect::new(0, 0, 4, 4), &[0x90, 0, 0], &mut fb).unwrap_err().to_string();
        assert!(e.contains("JPEG"), "{e}");
        assert!(d.decode(Rect::new(0, 0, 4, 4), &[0xa0], &mut fb).is_err());
        // a zlib bomb: 64 KiB of zeros claimed for a 4x4 copy rectangle (48 bytes)
        let mut z = Compress::new(Compression::best(), true);
        let bomb = deflate(&mut z, &vec![0u8; 65536]);
        let msg = with_len(vec![0x00], &bomb);
        let e = d.decode(Rect::new(0, 0, 4, 4), &msg, &mut fb).unwrap_err().to_string();
        assert!(e.contains("expected"), "{e}");
        // an absurd length is refused before waiting for it
        let e = d.decode(Rect::new(0, 0, 4, 4), &[0x00, 0xff, 0xff, 0x7f], &mut fb).unwrap_err().to_string();
        assert!(e.contains("zlib data for 48 bytes"), "{e}");
        // a reset bit starts stream 0 afresh: a new stream's data decodes after it
        let mut fresh = Compress::new(Compression::default(), true);
        let px = vec![7u8; 48];
        let msg = with_len(vec![0x01], &deflate(&mut fresh, &px));
        d.decode(Rect::new(0, 0, 4, 4), &msg, &mut fb).unwrap();
        assert_eq!(fb.to_frame().rgb(3, 3), [7, 7, 7]);
    }
}
