//! Hextile encoding (5): 16x16 tiles, each a subencoding byte whose bits say
//! what follows: Raw (the tile's pixels; the other bits do not count),
//! BackgroundSpecified, ForegroundSpecified, AnySubrects (a count, then
//! sub-rectangles of two bytes each: x<<4|y and (w-1)<<4|(h-1)), and
//! SubrectsColoured (each sub-rectangle starts with its own pixel).
//! Background and foreground carry over to the next tile.
//!
//! Pixels are the client's 4-byte RGBX format.

use crate::geometry::Rect;
use crate::rfb::encodings::tiles::TileScan;
use crate::rfb::encodings::{ByteReader, DecodeStatus};
use crate::rfb::error::RfbError;
use crate::rfb::framebuffer::{BYTES_PER_PIXEL, Framebuffer};

const RAW: u8 = 1;
const BACKGROUND: u8 = 2;
const FOREGROUND: u8 = 4;
const ANY_SUBRECTS: u8 = 8;
const SUBRECTS_COLOURED: u8 = 16;
const PLACE: &str = "Hextile tile";

/// The Hextile decoder of one connection: the scan position and the colours
/// that carry over from tile to tile.
#[derive(Debug, Default)]
pub struct HextileDecoder {
    scan: TileScan,
    colours: Colours,
    subrects: Vec<([u8; 3], Rect)>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Colours {
    background: Option<[u8; 3]>,
    foreground: Option<[u8; 3]>,
}

fn pixel(r: &mut ByteReader<'_>) -> Result<[u8; 3], RfbError> {
    let p = r.take(BYTES_PER_PIXEL)?;
    Ok([p[0], p[1], p[2]])
}

impl HextileDecoder {
    /// Decode one Hextile rectangle (see the [decoder contract](super)).
    pub fn decode(&mut self, rect: Rect, input: &[u8], fb: &mut Framebuffer) -> Result<DecodeStatus, RfbError> {
        fb.check_rect(rect, "Hextile")?;
        let HextileDecoder { scan, colours, subrects } = self;
        if rect.w == 0 || rect.h == 0 {
            return Ok(DecodeStatus::Complete { consumed: 0 });
        }
        scan.run(rect, input, fb, PLACE, |r, tile, fb| {
            let sub = r.u8()?;
            if sub & RAW != 0 {
                let bytes = r.take(tile.w as usize * tile.h as usize * BYTES_PER_PIXEL)?;
                return fb.put_rgbx(tile, bytes);
            }
            let mut next = *colours;
            if sub & BACKGROUND != 0 {
                next.background = Some(pixel(r)?);
            }
            if sub & FOREGROUND != 0 {
                next.foreground = Some(pixel(r)?);
            }
            let background = next.background.ok_or_else(|| {
                RfbError::protocol(PLACE, format!("tile {tile} has no background and no tile before it gave one"))
            })?;
            subrects.clear();
            if sub & ANY_SUBRECTS != 0 {
                let count = r.u8()?;
                for i in 0..count {
                    let colour = if sub & SUBRECTS_COLOURED != 0 {
                        pixel(r)?
                    } else {
                        next.foreground.ok_or_else(|| {
                            RfbError::protocol(PLACE, format!("tile {tile} has sub-rectangles but no foreground"))
                        })?
                    };
                    let (xy, wh) = (r.u8()?, r.u8()?);
                    let (x, y, w, h) =
                        (u32::from(xy >> 4), u32::from(xy & 15), u32::from(wh >> 4) + 1, u32::from(wh & 15) + 1);
                    if x + w > tile.w || y + h > tile.h {
                        return Err(RfbError::protocol(
                            PLACE,
                            format!(
                                "sub-rectangle {i} ({x},{y} {w}x{h}) lies outside the {}x{} tile {tile}",
                                tile.w, tile.h
                            ),
                        ));
                    }
                    subrects.push((colour, Rect::new(tile.x + x, tile.y + y, w, h)));
                }
            }
            // every byte of the tile is read: now paint it and carry its colours on
            fb.fill(tile, background)?;
            for (colour, at) in subrects.iter() {
                fb.fill(*at, *colour)?;
            }
            *colours = next;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn px(rgb: [u8; 3]) -> [u8; 4] {
        [rgb[0], rgb[1], rgb[2], 0]
    }

    /// A 20x18 rectangle: four tiles (16x16, 4x16, 16x2, 4x2).
    fn stream() -> Vec<u8> {
        let mut b = Vec::new();
        // tile 0: background red, foreground green, two plain sub-rectangles
        b.push(BACKGROUND | FOREGROUND | ANY_SUBRECTS);
        b.extend(px([255, 0, 0]));
        b.extend(px([0, 255, 0]));
        b.push(2);
        b.extend([0x11, 0x00]); // (1,1) 1x1
        b.extend([0xf0, 0x0f]); // (15,0) 1x16
        // tile 1: raw 4x16
        b.push(RAW);
        for i in 0..64u8 {
            b.extend(px([i, i, i]));
        }
        // tile 2: background carried over (red), coloured sub-rectangle
        b.push(ANY_SUBRECTS | SUBRECTS_COLOURED);
        b.push(1);
        b.extend(px([0, 0, 255]));
        b.extend([0x20, 0x31]); // (2,0) 4x2
        // tile 3: nothing: plain background
        b.push(0);
        b
    }

    #[test]
    fn tiles_with_carried_colours_raw_and_coloured_subrects() {
        let mut fb = Framebuffer::new(32, 32).unwrap();
        let rect = Rect::new(4, 6, 20, 18);
        let data = stream();
        let mut d = HextileDecoder::default();
        assert_eq!(d.decode(rect, &data, &mut fb).unwrap(), DecodeStatus::Complete { consumed: data.len() });
        let f = fb.to_frame();
        assert_eq!(f.rgb(4, 6), [255, 0, 0]);
        assert_eq!(f.rgb(5, 7), [0, 255, 0]);
        assert_eq!(f.rgb(19, 21), [0, 255, 0]);
        assert_eq!(f.rgb(20 + 1, 6 + 1), [5, 5, 5]);
        assert_eq!(f.rgb(4 + 2, 22), [0, 0, 255]);
        assert_eq!(f.rgb(4 + 6, 23), [255, 0, 0]);
        assert_eq!(f.rgb(23, 23), [255, 0, 0], "tile 3: the carried background");
    }

    #[test]
    fn bytes_arriving_one_at_a_time_give_the_same_pixels() {
        let data = stream();
        let rect = Rect::new(0, 0, 20, 18);
        let mut whole = Framebuffer::new(20, 18).unwrap();
        HextileDecoder::default().decode(rect, &data, &mut whole).unwrap();
        let mut fb = Framebuffer::new(20, 18).unwrap();
        let mut d = HextileDecoder::default();
        let mut have = 0;
        loop {
            match d.decode(rect, &data[..have], &mut fb).unwrap() {
                DecodeStatus::NeedMore { total } => {
                    assert!(total > have && total <= data.len(), "{total} after {have}");
                    have += 1;
                }
                DecodeStatus::Complete { consumed } => {
                    assert_eq!(consumed, data.len());
                    break;
                }
            }
        }
        assert_eq!(fb.pixels(), whole.pixels());
    }

    #[test]
    fn malformed_tiles_are_errors() {
        let mut fb = Framebuffer::new(16, 16).unwrap();
        let r = Rect::new(0, 0, 16, 16);
        let e = HextileDecoder::default().decode(r, &[0], &mut fb).unwrap_err().to_string();
        assert!(e.contains("no background"), "{e}");
        let mut sub = vec![BACKGROUND | ANY_SUBRECTS];
        sub.extend(px([1, 2, 3]));
        sub.extend([1, 0x00, 0x00]);
        let e = HextileDecoder::default().decode(r, &sub, &mut fb).unwrap_err().to_string();
        assert!(e.contains("no foreground"), "{e}");
        let mut out = vec![BACKGROUND | FOREGROUND | ANY_SUBRECTS];
        out.extend(px([1, 2, 3]));
        out.extend(px([3, 2, 1]));
        out.extend([1, 0xf0, 0x10]); // (15,0) 2x1: one column too wide
        let e = HextileDecoder::default().decode(r, &out, &mut fb).unwrap_err().to_string();
        assert!(e.contains("outside"), "{e}");
        assert!(HextileDecoder::default().decode(Rect::new(10, 10, 16, 16), &[], &mut fb).is_err());
    }
}
