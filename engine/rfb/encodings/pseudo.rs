//! Pseudo-encodings that carry data but no pixels of the screen:
//! ExtendedDesktopSize (-308: the new size with its screen layout; x is the
//! reason, y the status of a change) and Cursor (-239: the pointer's shape,
//! `w*h` pixels and a 1-bit mask with rows padded to bytes; x, y are its
//! hotspot). LastRect (-224) and DesktopSize (-223) carry nothing.

use crate::geometry::{Point, Rect};
use crate::rfb::encodings::DecodeStatus;
use crate::rfb::error::RfbError;
use crate::rfb::framebuffer::{BYTES_PER_PIXEL, Framebuffer};

/// Most screens an ExtendedDesktopSize message may describe.
const MAX_SCREENS: usize = 64;
/// Largest cursor accepted (pixels on a side).
pub const MAX_CURSOR: u32 = 256;

/// The pointer's shape as the server draws it (for recordings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorShape {
    pub hotspot: Point,
    pub width: u32,
    pub height: u32,
    /// RGBA, row-major; alpha 0 where the mask hides the pixel.
    pub rgba: Vec<u8>,
}

/// ExtendedDesktopSize: resize `fb` to the rectangle's size (a status other
/// than 0 answers a resize request of a client and changes nothing).
pub fn extended_desktop_size(rect: Rect, input: &[u8], fb: &mut Framebuffer) -> Result<DecodeStatus, RfbError> {
    let Some(head) = input.get(..4) else { return Ok(DecodeStatus::NeedMore { total: 4 }) };
    let screens = usize::from(head[0]);
    if screens == 0 || screens > MAX_SCREENS {
        return Err(RfbError::protocol("ExtendedDesktopSize", format!("{screens} screens (1 to {MAX_SCREENS})")));
    }
    let total = 4 + screens * 16;
    if input.len() < total {
        return Ok(DecodeStatus::NeedMore { total });
    }
    let status = rect.y;
    if status == 0 && (rect.w, rect.h) != (fb.width(), fb.height()) {
        fb.resize(rect.w, rect.h)?;
    }
    Ok(DecodeStatus::Complete { consumed: total })
}

/// Cursor: the shape and its mask.
pub fn cursor(rect: Rect, input: &[u8]) -> Result<(DecodeStatus, Option<CursorShape>), RfbError> {
    if rect.w > MAX_CURSOR || rect.h > MAX_CURSOR {
        return Err(RfbError::limit(format!("a {}x{} cursor (at most {MAX_CURSOR} a side)", rect.w, rect.h)));
    }
    let (w, h) = (rect.w as usize, rect.h as usize);
    let pixels = w * h * BYTES_PER_PIXEL;
    let mask_row = w.div_ceil(8);
    let total = pixels + mask_row * h;
    if input.len() < total {
        return Ok((DecodeStatus::NeedMore { total }, None));
    }
    let mut rgba = vec![0u8; w * h * 4];
    for y in 0..h {
        for x in 0..w {
            let src = &input[(y * w + x) * BYTES_PER_PIXEL..][..3];
            let shown = input[pixels + y * mask_row + x / 8] & (0x80 >> (x % 8)) != 0;
            let dst = &mut rgba[(y * w + x) * 4..][..4];
            dst[..3].copy_from_slice(src);
            dst[3] = if shown { 255 } else { 0 };
        }
    }
    let shape = CursorShape { hotspot: Point::new(rect.x, rect.y), width: rect.w, height: rect.h, rgba };
    Ok((DecodeStatus::Complete { consumed: total }, Some(shape)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_desktop_size_resizes_unless_it_reports_an_error() {
        let mut fb = Framebuffer::new(100, 100).unwrap();
        let one = [1u8, 0, 0, 0];
        let mut msg = one.to_vec();
        msg.extend([0u8; 16]);
        assert_eq!(
            extended_desktop_size(Rect::new(0, 0, 64, 48), &msg[..3], &mut fb).unwrap(),
            DecodeStatus::NeedMore { total: 4 }
        );
        assert_eq!(
            extended_desktop_size(Rect::new(0, 0, 64, 48), &msg[..10], &mut fb).unwrap(),
            DecodeStatus::NeedMore { total: 20 }
        );
        assert_eq!(
            extended_desktop_size(Rect::new(1, 3, 64, 48), &msg, &mut fb).unwrap(),
            DecodeStatus::Complete { consumed: 20 }
        );
        assert_eq!((fb.width(), fb.height()), (100, 100), "status 3: nothing changes");
        extended_desktop_size(Rect::new(0, 0, 64, 48), &msg, &mut fb).unwrap();
        assert_eq!((fb.width(), fb.height()), (64, 48));
        assert!(extended_desktop_size(Rect::new(0, 0, 64, 48), &[0, 0, 0, 0], &mut fb).is_err());
        assert!(extended_desktop_size(Rect::new(0, 0, 65535, 65535), &msg, &mut fb).is_err());
    }

    #[test]
    fn cursor_shape_with_its_mask() {
        // 3x2: mask rows 0b101_00000 and 0b010_00000
        let mut msg = Vec::new();
        for i in 0..6u8 {
            msg.extend([i * 10, i * 20, i * 30, 0]);
        }
        msg.extend([0b1010_0000, 0b0100_0000]);
        let (status, shape) = cursor(Rect::new(1, 1, 3, 2), &msg).unwrap();
        assert_eq!(status, DecodeStatus::Complete { consumed: 26 });
        let s = shape.unwrap();
        assert_eq!(s.hotspot, Point::new(1, 1));
        let alpha: Vec<u8> = s.rgba.chunks(4).map(|p| p[3]).collect();
        assert_eq!(alpha, vec![255, 0, 255, 0, 255, 0]);
        assert_eq!(&s.rgba[4 * 4..4 * 4 + 3], &[40, 80, 120]);
        assert_eq!(cursor(Rect::new(0, 0, 3, 2), &msg[..5]).unwrap().0, DecodeStatus::NeedMore { total: 26 });
        assert!(cursor(Rect::new(0, 0, 4096, 4096), &[]).is_err());
    }
}
