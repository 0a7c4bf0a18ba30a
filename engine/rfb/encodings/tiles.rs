//! Resumable scans over encodings made of 16x16 tiles without a length
//! prefix (Hextile, TRLE). Such a rectangle's length is only known by
//! walking its tiles, and its bytes may arrive in pieces: the scan remembers
//! how many tiles (and bytes) it finished, so a call with more bytes goes on
//! where the last one stopped instead of starting over.
//!
//! A tile is decoded completely or not at all: a tile function reads its
//! bytes first and touches the framebuffer (and any state carried from tile
//! to tile) only once they were all there.

use crate::geometry::Rect;
use crate::rfb::encodings::{ByteReader, DecodeStatus};
use crate::rfb::error::RfbError;
use crate::rfb::framebuffer::Framebuffer;

/// Tile edge length of Hextile and TRLE.
pub const TILE: u32 = 16;

/// How far the scan of one rectangle got.
#[derive(Debug, Default)]
pub(crate) struct TileScan {
    rect: Option<Rect>,
    tile: usize,
    offset: usize,
}

/// The `index`-th tile of `rect` (row by row), in framebuffer coordinates.
pub(crate) fn tile_at(rect: Rect, index: usize) -> Rect {
    let across = rect.w.div_ceil(TILE) as usize;
    let (tx, ty) = ((index % across) as u32 * TILE, (index / across) as u32 * TILE);
    Rect::new(rect.x + tx, rect.y + ty, TILE.min(rect.w - tx), TILE.min(rect.h - ty))
}

impl TileScan {
    /// Decode the tiles of `rect` from `input` (everything received since
    /// the rectangle header), going on from where the last call stopped.
    /// `tile` decodes one tile from a reader positioned at its first byte.
    pub(crate) fn run(
        &mut self,
        rect: Rect,
        input: &[u8],
        fb: &mut Framebuffer,
        place: &'static str,
        mut tile: impl FnMut(&mut ByteReader<'_>, Rect, &mut Framebuffer) -> Result<(), RfbError>,
    ) -> Result<DecodeStatus, RfbError> {
        if self.rect != Some(rect) || self.offset > input.len() {
            *self = TileScan { rect: Some(rect), tile: 0, offset: 0 };
        }
        let count = rect.w.div_ceil(TILE) as usize * rect.h.div_ceil(TILE) as usize;
        while self.tile < count {
            let mut reader = ByteReader::new(&input[self.offset..], place);
            match tile(&mut reader, tile_at(rect, self.tile), fb) {
                Ok(()) => {
                    self.offset += reader.position();
                    self.tile += 1;
                }
                Err(_) if reader.short_of.is_some() => {
                    let need = reader.short_of.unwrap_or(0);
                    return Ok(DecodeStatus::NeedMore { total: self.offset + need });
                }
                Err(e) => {
                    *self = TileScan::default();
                    return Err(e);
                }
            }
        }
        let consumed = self.offset;
        *self = TileScan::default();
        Ok(DecodeStatus::Complete { consumed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_rectangle_row_by_row_with_short_edges() {
        let r = Rect::new(10, 20, 40, 17);
        let tiles: Vec<Rect> = (0..6).map(|i| tile_at(r, i)).collect();
        assert_eq!(tiles[0], Rect::new(10, 20, 16, 16));
        assert_eq!(tiles[2], Rect::new(42, 20, 8, 16));
        assert_eq!(tiles[3], Rect::new(10, 36, 16, 1));
        assert_eq!(tiles[5], Rect::new(42, 36, 8, 1));
        let area: u32 = tiles.iter().map(|t| t.w * t.h).sum();
        assert_eq!(area, 40 * 17);
    }
}
