//! TRLE encoding (15): ZRLE's tiles without zlib and with 16x16 tiles, plus
//! two subencodings that reuse the palette of the tile before: 127 (packed
//! pixels) and 129 (palette RLE). Pixels are CPIXELs (3 bytes, R, G, B).

use crate::geometry::Rect;
use crate::rfb::encodings::DecodeStatus;
use crate::rfb::encodings::tiles::TileScan;
use crate::rfb::encodings::zrle::{PaletteMemory, decode_tile_with};
use crate::rfb::error::RfbError;
use crate::rfb::framebuffer::{BYTES_PER_PIXEL, Framebuffer};

/// The TRLE decoder of one connection: the scan position and the palette a
/// tile may reuse.
#[derive(Debug, Default)]
pub struct TrleDecoder {
    scan: TileScan,
    palette: PaletteMemory,
    tile: Vec<u8>,
}

impl TrleDecoder {
    /// Decode one TRLE rectangle (see the [decoder contract](super)).
    pub fn decode(&mut self, rect: Rect, input: &[u8], fb: &mut Framebuffer) -> Result<DecodeStatus, RfbError> {
        fb.check_rect(rect, "TRLE")?;
        if rect.w == 0 || rect.h == 0 {
            return Ok(DecodeStatus::Complete { consumed: 0 });
        }
        let TrleDecoder { scan, palette, tile } = self;
        scan.run(rect, input, fb, "TRLE tile", |r, at, fb| {
            let mut next = palette.clone();
            decode_tile_with(r, at.w as usize, at.h as usize, tile, Some(&mut next))?;
            let row_len = at.w as usize * BYTES_PER_PIXEL;
            for (row, src) in tile.chunks_exact(row_len).enumerate() {
                fb.row_mut(at.x, at.y + row as u32, at.w).copy_from_slice(src);
            }
            *palette = next;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb(fb: &Framebuffer, x: u32, y: u32) -> [u8; 3] {
        fb.to_frame().rgb(x, y)
    }

    #[test]
    fn palettes_are_reused_by_127_and_129() {
        // 32x16: two tiles
        let mut b = Vec::new();
        // tile 0: packed palette of 2 (red, blue), 1 bit per pixel; rows of 2 bytes
        b.push(2);
        b.extend([255, 0, 0, 0, 0, 255]);
        for _ in 0..16 {
            b.extend([0b1000_0000, 0b0000_0001]);
        }
        // tile 1: 127, the same palette, all indices 1
        b.push(127);
        for _ in 0..16 {
            b.extend([0xff, 0xff]);
        }
        let mut fb = Framebuffer::new(32, 16).unwrap();
        let mut d = TrleDecoder::default();
        let rect = Rect::new(0, 0, 32, 16);
        assert_eq!(d.decode(rect, &b, &mut fb).unwrap(), DecodeStatus::Complete { consumed: b.len() });
        assert_eq!(rgb(&fb, 0, 0), [0, 0, 255]);
        assert_eq!(rgb(&fb, 1, 0), [255, 0, 0]);
        assert_eq!(rgb(&fb, 15, 5), [0, 0, 255]);
        assert_eq!(rgb(&fb, 20, 9), [0, 0, 255]);
        // 129: palette RLE with the remembered palette: index 0 for all 256 pixels
        let mut c = vec![130, 1, 2, 3, 4, 5, 6, 0x81, 254]; // palette (1,2,3),(4,5,6); index 1 run 255
        c.extend([0x00]); // one pixel index 0: 256 in all
        c.extend([129, 0x80, 254, 0x00]); // reuse: index 0 run 255, index 0 once more
        let mut fb = Framebuffer::new(32, 16).unwrap();
        let mut d = TrleDecoder::default();
        assert_eq!(d.decode(rect, &c, &mut fb).unwrap(), DecodeStatus::Complete { consumed: c.len() });
        assert_eq!(rgb(&fb, 0, 0), [4, 5, 6]);
        assert_eq!(rgb(&fb, 15, 15), [1, 2, 3]);
        assert_eq!(rgb(&fb, 31, 15), [1, 2, 3]);
    }

    #[test]
    fn reuse_without_a_palette_and_pieces_of_input() {
        let mut fb = Framebuffer::new(16, 16).unwrap();
        let rect = Rect::new(0, 0, 16, 16);
        let e = TrleDecoder::default().decode(rect, &[127], &mut fb).unwrap_err().to_string();
        assert!(e.contains("no tile before it had one"), "{e}");
        let solid = [1u8, 9, 8, 7];
        let mut d = TrleDecoder::default();
        assert_eq!(d.decode(rect, &solid[..2], &mut fb).unwrap(), DecodeStatus::NeedMore { total: 4 });
        assert_eq!(d.decode(rect, &solid, &mut fb).unwrap(), DecodeStatus::Complete { consumed: 4 });
        assert_eq!(rgb(&fb, 7, 7), [9, 8, 7]);
    }
}
