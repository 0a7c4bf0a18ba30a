//! ZRLE encoding (16): a U32 length, then that many bytes of zlib data which
//! inflate to 64x64 tiles, left to right, top to bottom, each a subencoding
//! byte plus data: raw, solid, packed palette (2..16 colours at 1, 2 or 4 bits
//! per pixel, rows padded to whole bytes), plain RLE and palette RLE.
//!
//! One zlib stream spans the whole connection, so the inflater lives in
//! [`ZrleDecoder`] and rectangles must be decoded in order.
//!
//! Pixels are CPIXELs: for the client's RGBX format (32 bpp, depth 24, colour
//! in the least significant 3 bytes, little-endian) a CPIXEL is 3 bytes,
//! R, G, B.

use flate2::{Decompress, FlushDecompress, Status};

use crate::geometry::Rect;
use crate::rfb::encodings::{ByteReader, DecodeStatus};
use crate::rfb::error::RfbError;
use crate::rfb::framebuffer::{BYTES_PER_PIXEL, Framebuffer};

/// Tile edge length.
pub const TILE_SIZE: u32 = 64;
/// Bytes of a CPIXEL in the client's pixel format.
pub const CPIXEL_LEN: usize = 3;
/// Largest palette (palette RLE with subencoding 255).
const MAX_PALETTE: usize = 127;

/// Most bytes a well-formed tile of `pixels` pixels can inflate to: the
/// subencoding byte plus the largest of raw (3 per pixel), plain RLE (at most
/// 4 per pixel) and palette RLE (127 palette CPIXELs plus at most 1 per pixel).
const fn max_tile_len(pixels: usize) -> usize {
    1 + MAX_PALETTE * CPIXEL_LEN + 4 * pixels
}

/// Upper bound of the inflated size of a ZRLE rectangle.
pub fn max_inflated_len(rect: Rect) -> usize {
    let tiles_x = rect.w.div_ceil(TILE_SIZE) as usize;
    let tiles_y = rect.h.div_ceil(TILE_SIZE) as usize;
    let pixels = rect.w as usize * rect.h as usize;
    tiles_x * tiles_y * max_tile_len(0) + 4 * pixels
}

/// Upper bound of the compressed length of a ZRLE rectangle: the inflated
/// bound plus deflate's worst-case expansion and flush markers.
pub fn max_compressed_len(rect: Rect) -> usize {
    let max = max_inflated_len(rect);
    max + max / 64 + 4096
}

/// The ZRLE decoder of one connection.
pub struct ZrleDecoder {
    inflater: Decompress,
    inflated: Vec<u8>,
    tile: Vec<u8>,
}

impl Default for ZrleDecoder {
    fn default() -> ZrleDecoder {
        ZrleDecoder::new()
    }
}

impl ZrleDecoder {
    pub fn new() -> ZrleDecoder {
        ZrleDecoder {
            inflater: Decompress::new(true),
            inflated: Vec::new(),
            tile: Vec::with_capacity((TILE_SIZE * TILE_SIZE) as usize * BYTES_PER_PIXEL),
        }
    }

    /// Decode one ZRLE rectangle (see the [decoder contract](super)).
    pub fn decode(&mut self, rect: Rect, input: &[u8], fb: &mut Framebuffer) -> Result<DecodeStatus, RfbError> {
        fb.check_rect(rect, "ZRLE")?;
        let Some(prefix) = input.get(..4) else {
            return Ok(DecodeStatus::NeedMore { total: 4 });
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let max_len = max_compressed_len(rect);
        if len > max_len {
            return Err(RfbError::limit(format!(
                "ZRLE length {len} for a {}x{} rectangle (at most {max_len} possible)",
                rect.w, rect.h
            )));
        }
        let total = 4 + len;
        let Some(compressed) = input.get(4..total) else {
            return Ok(DecodeStatus::NeedMore { total });
        };
        self.inflate(compressed, rect)?;
        decode_tiles(rect, &self.inflated, fb, &mut self.tile)?;
        Ok(DecodeStatus::Complete { consumed: total })
    }

    /// Inflate all of `compressed` into `self.inflated`, refusing output past
    /// what `rect` can hold.
    fn inflate(&mut self, compressed: &[u8], rect: Rect) -> Result<(), RfbError> {
        let max_out = max_inflated_len(rect);
        let too_much = || {
            RfbError::limit(format!(
                "ZRLE zlib data inflates past the {max_out} bytes a {}x{} rectangle can hold",
                rect.w, rect.h
            ))
        };
        self.inflated.clear();
        let mut input = compressed;
        loop {
            if self.inflated.len() == self.inflated.capacity() {
                // Room for one byte past the limit, to notice overflow.
                let len = self.inflated.len();
                let room = (max_out + 1).saturating_sub(len).min(len.max(64 * 1024)).max(1);
                self.inflated.reserve(room);
            }
            let in_before = self.inflater.total_in();
            let out_before = self.inflated.len();
            let status = self
                .inflater
                .decompress_vec(input, &mut self.inflated, FlushDecompress::Sync)
                .map_err(|e| RfbError::protocol("ZRLE zlib stream", e.to_string()))?;
            let consumed = usize::try_from(self.inflater.total_in() - in_before).unwrap_or(usize::MAX).min(input.len());
            input = &input[consumed..];
            let produced = self.inflated.len() - out_before;
            if self.inflated.len() > max_out {
                return Err(too_much());
            }
            if status == Status::StreamEnd {
                if !input.is_empty() {
                    return Err(RfbError::protocol(
                        "ZRLE zlib stream",
                        format!("the stream ended with {} bytes of the rectangle left", input.len()),
                    ));
                }
                return Ok(());
            }
            let output_full = self.inflated.len() == self.inflated.capacity();
            if output_full {
                continue;
            }
            if input.is_empty() {
                return Ok(());
            }
            if consumed == 0 && produced == 0 {
                return Err(RfbError::protocol(
                    "ZRLE zlib stream",
                    format!("the inflater stopped with {} bytes left", input.len()),
                ));
            }
        }
    }
}

/// Decode the inflated tiles of `rect` into `fb` (already bounds-checked).
fn decode_tiles(rect: Rect, data: &[u8], fb: &mut Framebuffer, tile: &mut Vec<u8>) -> Result<(), RfbError> {
    let mut reader = ByteReader::new(data, "ZRLE tile data");
    for ty in (0..rect.h).step_by(TILE_SIZE as usize) {
        let th = TILE_SIZE.min(rect.h - ty);
        for tx in (0..rect.w).step_by(TILE_SIZE as usize) {
            let tw = TILE_SIZE.min(rect.w - tx);
            decode_tile(&mut reader, tw as usize, th as usize, tile)?;
            let row_len = tw as usize * BYTES_PER_PIXEL;
            for (row, src) in tile.chunks_exact(row_len).enumerate() {
                fb.row_mut(rect.x + tx, rect.y + ty + row as u32, tw).copy_from_slice(src);
            }
        }
    }
    if reader.remaining() != 0 {
        return Err(RfbError::protocol(
            "ZRLE tile data",
            format!("{} bytes left over after the last tile of {rect}", reader.remaining()),
        ));
    }
    Ok(())
}

fn cpixel(reader: &mut ByteReader<'_>) -> Result<[u8; 4], RfbError> {
    let b = reader.take(CPIXEL_LEN)?;
    Ok([b[0], b[1], b[2], 255])
}

fn read_palette(reader: &mut ByteReader<'_>, size: usize) -> Result<[[u8; 4]; MAX_PALETTE], RfbError> {
    let mut palette = [[0u8; 4]; MAX_PALETTE];
    for entry in palette.iter_mut().take(size) {
        *entry = cpixel(reader)?;
    }
    Ok(palette)
}

/// A run length: one more than the sum of its bytes, where every 255 byte
/// continues. Longer than `left` pixels is an error.
fn run_length(reader: &mut ByteReader<'_>, left: usize) -> Result<usize, RfbError> {
    let mut len = 1usize;
    loop {
        let b = reader.u8()?;
        len += usize::from(b);
        if len > left {
            return Err(RfbError::protocol(
                "ZRLE tile",
                format!("a run of at least {len} pixels overflows the {left} pixels left in the tile"),
            ));
        }
        if b != 255 {
            return Ok(len);
        }
    }
}

fn palette_index_error(index: usize, size: usize) -> RfbError {
    RfbError::protocol("ZRLE tile", format!("palette index {index} with a palette of {size} colours"))
}

/// The palette a TRLE tile may reuse from the tile before it (subencodings
/// 127 and 129). ZRLE has no such reuse.
#[derive(Debug, Clone)]
pub(crate) struct PaletteMemory {
    size: usize,
    colours: [[u8; 4]; MAX_PALETTE],
}

impl Default for PaletteMemory {
    fn default() -> PaletteMemory {
        PaletteMemory { size: 0, colours: [[0; 4]; MAX_PALETTE] }
    }
}

/// Decode one `w` x `h` tile into `out` as RGBA (alpha 255).
pub(crate) fn decode_tile(reader: &mut ByteReader<'_>, w: usize, h: usize, out: &mut Vec<u8>) -> Result<(), RfbError> {
    decode_tile_with(reader, w, h, out, None)
}

/// [`decode_tile`] for ZRLE (`memory: None`) and TRLE (`Some`: palettes are
/// remembered, and subencodings 127 and 129 reuse the last one).
pub(crate) fn decode_tile_with(
    reader: &mut ByteReader<'_>,
    w: usize,
    h: usize,
    out: &mut Vec<u8>,
    mut memory: Option<&mut PaletteMemory>,
) -> Result<(), RfbError> {
    let n = w * h;
    out.clear();
    out.resize(n * BYTES_PER_PIXEL, 255);
    let subencoding = reader.u8()?;
    let remembered = |memory: &Option<&mut PaletteMemory>| -> Result<([[u8; 4]; MAX_PALETTE], usize), RfbError> {
        match memory {
            Some(m) if m.size > 0 => Ok((m.colours, m.size)),
            Some(_) => Err(RfbError::protocol(
                "TRLE tile",
                format!("subencoding {subencoding} reuses a palette, but no tile before it had one"),
            )),
            None => Err(undefined_subencoding(subencoding, reader.position() - 1)),
        }
    };
    match subencoding {
        0 => {
            let bytes = reader.take(n * CPIXEL_LEN)?;
            for (dst, src) in out.chunks_exact_mut(BYTES_PER_PIXEL).zip(bytes.chunks_exact(CPIXEL_LEN)) {
                dst[..CPIXEL_LEN].copy_from_slice(src);
            }
        }
        1 => {
            let px = cpixel(reader)?;
            for dst in out.chunks_exact_mut(BYTES_PER_PIXEL) {
                dst.copy_from_slice(&px);
            }
        }
        2..=16 | 127 => {
            let (palette, size) = if subencoding == 127 {
                remembered(&memory)?
            } else {
                let size = usize::from(subencoding);
                (read_palette(reader, size)?, size)
            };
            packed_pixels(reader, w, h, &palette, size, out)?;
            if let Some(m) = memory.as_deref_mut() {
                (m.colours, m.size) = (palette, size);
            }
        }
        128 => {
            let mut filled = 0;
            while filled < n {
                let px = cpixel(reader)?;
                let len = run_length(reader, n - filled)?;
                for dst in
                    out[filled * BYTES_PER_PIXEL..(filled + len) * BYTES_PER_PIXEL].chunks_exact_mut(BYTES_PER_PIXEL)
                {
                    dst.copy_from_slice(&px);
                }
                filled += len;
            }
        }
        129..=255 => {
            let (palette, size) = if subencoding == 129 {
                remembered(&memory)?
            } else {
                let size = usize::from(subencoding - 128);
                (read_palette(reader, size)?, size)
            };
            palette_runs(reader, n, &palette, size, out)?;
            if let Some(m) = memory {
                (m.colours, m.size) = (palette, size);
            }
        }
        other => return Err(undefined_subencoding(other, reader.position() - 1)),
    }
    Ok(())
}

fn undefined_subencoding(subencoding: u8, at: usize) -> RfbError {
    RfbError::protocol(
        "ZRLE tile",
        format!("subencoding {subencoding} at offset {at} is not defined (17..127 and 129 are unused in ZRLE)"),
    )
}

/// Packed palette indices: 1, 2 or 4 bits per pixel, rows padded to bytes.
fn packed_pixels(
    reader: &mut ByteReader<'_>,
    w: usize,
    h: usize,
    palette: &[[u8; 4]; MAX_PALETTE],
    size: usize,
    out: &mut [u8],
) -> Result<(), RfbError> {
    let bits = match size {
        1 | 2 => 1,
        3 | 4 => 2,
        _ => 4,
    };
    let mask = (1u8 << bits) - 1;
    let row_bytes = (w * bits).div_ceil(8);
    for y in 0..h {
        let row = reader.take(row_bytes)?;
        for x in 0..w {
            let bit = x * bits;
            let shift = 8 - bits - bit % 8;
            let index = usize::from((row[bit / 8] >> shift) & mask);
            if index >= size {
                return Err(palette_index_error(index, size));
            }
            let at = (y * w + x) * BYTES_PER_PIXEL;
            out[at..at + BYTES_PER_PIXEL].copy_from_slice(&palette[index]);
        }
    }
    Ok(())
}

/// Palette RLE: an index byte (top bit: a run length follows) per run.
fn palette_runs(
    reader: &mut ByteReader<'_>,
    n: usize,
    palette: &[[u8; 4]; MAX_PALETTE],
    size: usize,
    out: &mut [u8],
) -> Result<(), RfbError> {
    let mut filled = 0;
    while filled < n {
        let b = reader.u8()?;
        let index = usize::from(b & 0x7f);
        if index >= size {
            return Err(palette_index_error(index, size));
        }
        let len = if b & 0x80 != 0 { run_length(reader, n - filled)? } else { 1 };
        for dst in out[filled * BYTES_PER_PIXEL..(filled + len) * BYTES_PER_PIXEL].chunks_exact_mut(BYTES_PER_PIXEL) {
            dst.copy_from_slice(&palette[index]);
        }
        filled += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// The server side of the connection's zlib stream.
    struct Deflater(Compress);

    impl Deflater {
        fn new() -> Deflater {
            Deflater(Compress::new(Compression::default(), true))
        }

        /// One ZRLE rectangle body: length prefix plus sync-flushed zlib data.
        fn rect(&mut self, tiles: &[u8]) -> Vec<u8> {
            let mut out = Vec::with_capacity(tiles.len() * 2 + 64);
            let before = self.0.total_in();
            loop {
                let done = (self.0.total_in() - before) as usize;
                out.reserve(1024);
                self.0.compress_vec(&tiles[done..], &mut out, FlushCompress::Sync).unwrap();
                if (self.0.total_in() - before) as usize == tiles.len() && out.len() < out.capacity() {
                    break;
                }
            }
            let mut body = (out.len() as u32).to_be_bytes().to_vec();
            body.extend_from_slice(&out);
            body
        }
    }

    /// A test picture: a distinct colour per pixel.
    fn colour(x: usize, y: usize) -> [u8; 3] {
        [(x * 3) as u8, (y * 5) as u8, (x ^ y) as u8]
    }

    fn raw_tile(x0: usize, y0: usize, w: usize, h: usize) -> Vec<u8> {
        let mut t = vec![0u8];
        for y in 0..h {
            for x in 0..w {
                t.extend_from_slice(&colour(x0 + x, y0 + y));
            }
        }
        t
    }

    fn decode_one(rect: Rect, fb_size: (u32, u32), tiles: &[u8]) -> Result<Framebuffer, RfbError> {
        let mut fb = Framebuffer::new(fb_size.0, fb_size.1).unwrap();
        let body = Deflater::new().rect(tiles);
        let mut dec = ZrleDecoder::new();
        match dec.decode(rect, &body, &mut fb)? {
            DecodeStatus::Complete { consumed } => assert_eq!(consumed, body.len()),
            other => panic!("{other:?}"),
        }
        Ok(fb)
    }

    fn rgb(fb: &Framebuffer, x: u32, y: u32) -> [u8; 3] {
        fb.to_frame().rgb(x, y)
    }

    /// Pack palette indices MSB first, each row padded to a whole byte.
    fn pack(indices: &[u8], w: usize, bits: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for row in indices.chunks(w) {
            let mut bytes = vec![0u8; (w * bits).div_ceil(8)];
            for (x, &i) in row.iter().enumerate() {
                let bit = x * bits;
                bytes[bit / 8] |= i << (8 - bits - bit % 8);
            }
            out.extend_from_slice(&bytes);
        }
        out
    }

    const PALETTE: [[u8; 3]; 16] = [
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [255, 255, 0],
        [0, 255, 255],
        [255, 0, 255],
        [10, 20, 30],
        [40, 50, 60],
        [70, 80, 90],
        [100, 110, 120],
        [130, 140, 150],
        [160, 170, 180],
        [190, 200, 210],
        [220, 230, 240],
        [1, 2, 3],
        [250, 251, 252],
    ];

    #[test]
    fn raw_and_solid_tiles() {
        let rect = Rect::new(2, 1, 3, 2);
        let fb = decode_one(rect, (8, 4), &raw_tile(0, 0, 3, 2)).unwrap();
        for y in 0..2 {
            for x in 0..3 {
                assert_eq!(rgb(&fb, 2 + x, 1 + y), colour(x as usize, y as usize));
            }
        }
        assert_eq!(rgb(&fb, 0, 0), [0, 0, 0]);

        let fb = decode_one(Rect::new(0, 0, 5, 5), (5, 5), &[1, 9, 8, 7]).unwrap();
        assert!(fb.to_frame().pixels().chunks(4).all(|p| p == [9, 8, 7, 255]));
    }

    #[test]
    fn packed_palettes_with_row_padding() {
        // (palette size, bits per index, tile width): widths that leave
        // padding bits at the end of each row, and one that does not.
        for (size, bits, w) in [(2, 1, 9), (2, 1, 8), (3, 2, 5), (4, 2, 7), (5, 4, 3), (16, 4, 64), (16, 4, 11)] {
            let h = 3;
            let indices: Vec<u8> = (0..w * h).map(|i| ((i * 7 + i / w) % size) as u8).collect();
            let mut tile = vec![size as u8];
            for c in &PALETTE[..size] {
                tile.extend_from_slice(c);
            }
            tile.extend_from_slice(&pack(&indices, w, bits));
            let fb = decode_one(Rect::new(0, 0, w as u32, h as u32), (64, 4), &tile)
                .unwrap_or_else(|e| panic!("size {size} width {w}: {e}"));
            for (i, &index) in indices.iter().enumerate() {
                let (x, y) = ((i % w) as u32, (i / w) as u32);
                assert_eq!(rgb(&fb, x, y), PALETTE[usize::from(index)], "size {size} w {w} at {x},{y}");
            }
        }
    }

    #[test]
    fn plain_rle_runs_cross_rows_and_use_long_lengths() {
        // 40x20 = 800 pixels: runs of 1, 255, 256 and 288 pixels.
        let runs: [(usize, &[u8]); 4] = [(1, &[0]), (255, &[254]), (256, &[255, 0]), (288, &[255, 32])];
        let mut tile = vec![128u8];
        for (i, (_, len_bytes)) in runs.iter().enumerate() {
            tile.extend_from_slice(&PALETTE[i]);
            tile.extend_from_slice(len_bytes);
        }
        let fb = decode_one(Rect::new(0, 0, 40, 20), (40, 20), &tile).unwrap();
        let mut at = 0;
        for (i, (len, _)) in runs.iter().enumerate() {
            for p in at..at + len {
                assert_eq!(rgb(&fb, (p % 40) as u32, (p / 40) as u32), PALETTE[i], "pixel {p}");
            }
            at += len;
        }
        assert_eq!(at, 800);
    }

    #[test]
    fn palette_rle_mixes_single_pixels_and_runs() {
        // 6x2 tile, palette of 3: runs 1x0, 4x1, 1x2, 5x0, 1x1 (12 pixels).
        let mut tile = vec![128 + 3];
        for c in &PALETTE[..3] {
            tile.extend_from_slice(c);
        }
        tile.extend_from_slice(&[0, 0x81, 3, 2, 0x80, 4, 1]);
        let fb = decode_one(Rect::new(0, 0, 6, 2), (6, 2), &tile).unwrap();
        let want = [0, 1, 1, 1, 1, 2, 0, 0, 0, 0, 0, 1];
        for (p, &i) in want.iter().enumerate() {
            assert_eq!(rgb(&fb, (p % 6) as u32, (p / 6) as u32), PALETTE[i], "pixel {p}");
        }
    }

    #[test]
    fn edge_tiles_smaller_than_64() {
        // 70x66 at (3,4): tiles 64x64, 6x64, 64x2, 6x2, each another subencoding.
        let rect = Rect::new(3, 4, 70, 66);
        let mut tiles = raw_tile(0, 0, 64, 64);
        tiles.extend_from_slice(&[1, 11, 22, 33]); // 6x64 solid
        let mut rle = vec![128u8];
        rle.extend_from_slice(&[44, 55, 66]);
        rle.push(127); // 128 pixels = the whole 64x2 tile
        tiles.extend_from_slice(&rle);
        tiles.push(2); // 6x2 packed, 1 bit: 1 byte per row
        tiles.extend_from_slice(&PALETTE[0]);
        tiles.extend_from_slice(&PALETTE[1]);
        tiles.extend_from_slice(&[0b1010_1100, 0b0101_0000]);
        let fb = decode_one(rect, (80, 80), &tiles).unwrap();
        assert_eq!(rgb(&fb, 3 + 63, 4 + 63), colour(63, 63));
        assert_eq!(rgb(&fb, 3 + 64, 4), [11, 22, 33]);
        assert_eq!(rgb(&fb, 3 + 69, 4 + 63), [11, 22, 33]);
        assert_eq!(rgb(&fb, 3, 4 + 64), [44, 55, 66]);
        assert_eq!(rgb(&fb, 3 + 63, 4 + 65), [44, 55, 66]);
        let bits = [[1, 0, 1, 0, 1, 1], [0, 1, 0, 1, 0, 0]];
        for (y, row) in bits.iter().enumerate() {
            for (x, &b) in row.iter().enumerate() {
                assert_eq!(rgb(&fb, 3 + 64 + x as u32, 4 + 64 + y as u32), PALETTE[b]);
            }
        }
        assert_eq!(rgb(&fb, 3 + 70, 4), [0, 0, 0]); // right of the rect untouched
        assert_eq!(rgb(&fb, 3, 4 + 66), [0, 0, 0]); // below untouched
    }

    #[test]
    fn one_zlib_stream_spans_rectangles() {
        let mut deflater = Deflater::new();
        let first = deflater.rect(&[1, 1, 2, 3]);
        let second = deflater.rect(&[1, 4, 5, 6]);
        let mut fb = Framebuffer::new(4, 4).unwrap();
        let mut dec = ZrleDecoder::new();
        dec.decode(Rect::new(0, 0, 2, 2), &first, &mut fb).unwrap();
        // Asking for more must not disturb the stream state.
        assert_eq!(
            dec.decode(Rect::new(2, 2, 2, 2), &second[..second.len() - 1], &mut fb).unwrap(),
            DecodeStatus::NeedMore { total: second.len() }
        );
        dec.decode(Rect::new(2, 2, 2, 2), &second, &mut fb).unwrap();
        assert_eq!(rgb(&fb, 0, 0), [1, 2, 3]);
        assert_eq!(rgb(&fb, 3, 3), [4, 5, 6]);
        // A decoder that did not see the first rectangle cannot read the second.
        let err = ZrleDecoder::new().decode(Rect::new(2, 2, 2, 2), &second, &mut fb).unwrap_err();
        assert!(matches!(err, RfbError::Protocol { .. }), "{err}");
    }

    #[test]
    fn need_more_for_prefix_and_body() {
        let body = Deflater::new().rect(&[1, 1, 2, 3]);
        let mut fb = Framebuffer::new(2, 2).unwrap();
        let mut dec = ZrleDecoder::new();
        let rect = Rect::new(0, 0, 2, 2);
        assert_eq!(dec.decode(rect, &body[..3], &mut fb).unwrap(), DecodeStatus::NeedMore { total: 4 });
        assert_eq!(dec.decode(rect, &body[..4], &mut fb).unwrap(), DecodeStatus::NeedMore { total: body.len() });
        assert_eq!(dec.decode(rect, &body, &mut fb).unwrap(), DecodeStatus::Complete { consumed: body.len() });
    }

    fn expect_error(rect: Rect, fb_size: (u32, u32), tiles: &[u8], needle: &str) {
        let err = decode_one(rect, fb_size, tiles).expect_err("must fail");
        assert!(err.to_string().contains(needle), "{err} should mention {needle:?}");
    }

    #[test]
    fn malformed_tiles_are_errors() {
        let r = Rect::new(0, 0, 4, 4);
        // Truncated raw tile.
        expect_error(r, (4, 4), &raw_tile(0, 0, 4, 4)[..40], "data ends");
        // Palette index beyond a 3-colour palette (2-bit index 3).
        let mut t = vec![3u8];
        for c in &PALETTE[..3] {
            t.extend_from_slice(c);
        }
        t.extend_from_slice(&[0b1100_0000, 0, 0, 0]);
        expect_error(r, (4, 4), &t, "palette index 3");
        // Palette RLE index beyond the palette.
        let mut t = vec![130u8];
        t.extend_from_slice(&[0; 6]);
        t.push(0x85);
        expect_error(r, (4, 4), &t, "palette index 5");
        // Plain RLE run longer than the tile.
        expect_error(r, (4, 4), &[128, 1, 2, 3, 16], "overflows");
        expect_error(r, (4, 4), &[128, 1, 2, 3, 255, 255], "overflows");
        // Undefined subencodings.
        for sub in [17u8, 127, 129] {
            expect_error(r, (4, 4), &[sub, 0, 0, 0, 0, 0, 0], &format!("subencoding {sub}"));
        }
        // Bytes left after the last tile.
        expect_error(r, (4, 4), &[1, 1, 2, 3, 0], "left over");
        // Rectangle outside the framebuffer.
        let err = decode_one(Rect::new(2, 2, 4, 4), (4, 4), &[1, 1, 2, 3]).err().unwrap();
        assert!(matches!(err, RfbError::LimitExceeded { .. }), "{err}");
    }

    #[test]
    fn zlib_bombs_bogus_lengths_and_garbage_are_errors() {
        // 100 kB of zeros inflating into a 1x1 rectangle.
        let err = decode_one(Rect::new(0, 0, 1, 1), (1, 1), &vec![0u8; 100_000]).err().unwrap();
        assert!(matches!(err, RfbError::LimitExceeded { .. }), "{err}");
        assert!(err.to_string().contains("inflates past"), "{err}");

        let mut fb = Framebuffer::new(16, 16).unwrap();
        let mut dec = ZrleDecoder::new();
        let err = dec.decode(Rect::new(0, 0, 16, 16), &[0xff, 0xff, 0xff, 0xff], &mut fb).unwrap_err();
        assert!(matches!(err, RfbError::LimitExceeded { .. }), "{err}");

        let mut garbage = vec![0, 0, 0, 8];
        garbage.extend_from_slice(&[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0]);
        let err = ZrleDecoder::new().decode(Rect::new(0, 0, 4, 4), &garbage, &mut fb).unwrap_err();
        assert!(matches!(err, RfbError::Protocol { .. }), "{err}");
    }

    #[test]
    fn empty_rectangle() {
        let fb = decode_one(Rect::new(0, 0, 0, 0), (4, 4), &[]).unwrap();
        assert_eq!(rgb(&fb, 0, 0), [0, 0, 0]);
    }
}
