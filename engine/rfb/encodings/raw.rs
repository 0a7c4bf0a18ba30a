//! Raw encoding (0): `width * height` pixels, left to right, top to bottom,
//! in the client's RGBX pixel format (4 bytes: R, G, B, unused).

use crate::geometry::Rect;
use crate::rfb::encodings::DecodeStatus;
use crate::rfb::error::RfbError;
use crate::rfb::framebuffer::{BYTES_PER_PIXEL, Framebuffer};

/// Bytes a Raw rectangle of this size takes on the wire.
pub fn encoded_len(rect: Rect) -> usize {
    rect.w as usize * rect.h as usize * BYTES_PER_PIXEL
}

/// Decode a Raw rectangle.
pub fn decode(rect: Rect, input: &[u8], fb: &mut Framebuffer) -> Result<DecodeStatus, RfbError> {
    // Check first: the size of a rect outside the framebuffer is meaningless.
    fb.check_rect(rect, "Raw")?;
    let len = encoded_len(rect);
    if input.len() < len {
        return Ok(DecodeStatus::NeedMore { total: len });
    }
    fb.put_rgbx(rect, &input[..len])?;
    Ok(DecodeStatus::Complete { consumed: len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_decodes_after_asking_for_the_exact_size() {
        let mut fb = Framebuffer::new(4, 4).unwrap();
        let rect = Rect::new(1, 2, 3, 2);
        let data: Vec<u8> = (0..24).map(|i| i as u8 * 10).collect();
        assert_eq!(decode(rect, &data[..5], &mut fb).unwrap(), DecodeStatus::NeedMore { total: 24 });
        let mut input = data.clone();
        input.extend_from_slice(&[99, 99]); // the next message's bytes
        assert_eq!(decode(rect, &input, &mut fb).unwrap(), DecodeStatus::Complete { consumed: 24 });
        let frame = fb.to_frame();
        assert_eq!(frame.rgb(1, 2), [0, 10, 20]);
        assert_eq!(frame.rgb(3, 3), [200, 210, 220]);
        assert_eq!(frame.rgb(0, 0), [0, 0, 0]);
    }

    #[test]
    fn raw_outside_framebuffer_is_an_error_before_any_size_request() {
        let mut fb = Framebuffer::new(4, 4).unwrap();
        let err = decode(Rect::new(0, 0, 65535, 65535), &[], &mut fb).unwrap_err();
        assert!(matches!(err, RfbError::LimitExceeded { .. }), "{err}");
        assert!(decode(Rect::new(4, 0, 1, 1), &[0; 4], &mut fb).is_err());
        assert_eq!(decode(Rect::new(4, 0, 0, 0), &[], &mut fb).unwrap(), DecodeStatus::Complete { consumed: 0 });
    }
}
