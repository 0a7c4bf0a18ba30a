//! CopyRect encoding (1): the rectangle's pixels are already in the client's
//! framebuffer at (src-x, src-y); the wire carries just that position.

use crate::geometry::{Point, Rect};
use crate::rfb::encodings::DecodeStatus;
use crate::rfb::error::RfbError;
use crate::rfb::framebuffer::Framebuffer;

/// Bytes of a CopyRect rectangle on the wire.
pub const ENCODED_LEN: usize = 4;

/// Decode a CopyRect rectangle.
pub fn decode(rect: Rect, input: &[u8], fb: &mut Framebuffer) -> Result<DecodeStatus, RfbError> {
    let Some(b) = input.get(..ENCODED_LEN) else {
        return Ok(DecodeStatus::NeedMore { total: ENCODED_LEN });
    };
    let src = Point::new(u32::from(u16::from_be_bytes([b[0], b[1]])), u32::from(u16::from_be_bytes([b[2], b[3]])));
    fb.copy_rect(src, rect)?;
    Ok(DecodeStatus::Complete { consumed: ENCODED_LEN })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copyrect_copies_from_source() {
        let mut fb = Framebuffer::new(8, 8).unwrap();
        fb.fill(Rect::new(0, 0, 2, 2), [9, 8, 7]).unwrap();
        let rect = Rect::new(5, 6, 2, 2);
        assert_eq!(decode(rect, &[0, 0], &mut fb).unwrap(), DecodeStatus::NeedMore { total: 4 });
        assert_eq!(decode(rect, &[0, 0, 0, 0, 1], &mut fb).unwrap(), DecodeStatus::Complete { consumed: 4 });
        let frame = fb.to_frame();
        assert_eq!(frame.rgb(6, 7), [9, 8, 7]);
        assert_eq!(frame.rgb(4, 6), [0, 0, 0]);
    }

    #[test]
    fn copyrect_source_or_destination_outside_is_an_error() {
        let mut fb = Framebuffer::new(8, 8).unwrap();
        let err = decode(Rect::new(0, 0, 2, 2), &[0, 7, 0, 0], &mut fb).unwrap_err();
        assert!(matches!(err, RfbError::LimitExceeded { .. }), "{err}");
        assert!(decode(Rect::new(7, 7, 2, 2), &[0, 0, 0, 0], &mut fb).is_err());
        assert!(decode(Rect::new(0, 0, 2, 2), &[255, 255, 255, 255], &mut fb).is_err());
    }
}
