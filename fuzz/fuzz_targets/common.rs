//! Shared by the decoder fuzzers: a rectangle and a framebuffer size from
//! the first bytes, the rest fed to one connection's decoders the way the
//! session feeds them: in pieces, growing to exactly what the decoder asked
//! for. Several rectangles per input, so per-connection state (zlib streams,
//! carried colours, palettes) is exercised across rectangles.

use smoke::geometry::Rect;
use smoke::rfb::encodings::{DecodeStatus, Decoders};
use smoke::rfb::{Encoding, Framebuffer};

pub fn run(encoding: Encoding, data: &[u8]) {
    if data.len() < 6 {
        return;
    }
    let fb_w = u32::from(data[0] % 128) + 1;
    let fb_h = u32::from(data[1] % 128) + 1;
    let Ok(mut fb) = Framebuffer::new(fb_w, fb_h) else { return };
    let mut decoders = Decoders::new();
    let mut rest = &data[2..];
    for _ in 0..4 {
        if rest.len() < 4 {
            return;
        }
        // rectangles may lie outside the framebuffer: decoders must refuse them
        let rect = Rect::new(u32::from(rest[0] % 140), u32::from(rest[1] % 140), u32::from(rest[2]), u32::from(rest[3]));
        rest = &rest[4..];
        let mut have = rest.len().min(1);
        loop {
            match decoders.decode(encoding, rect, &rest[..have], &mut fb) {
                Ok(DecodeStatus::Complete { consumed }) => {
                    assert!(consumed <= have, "consumed {consumed} of {have}");
                    rest = &rest[consumed..];
                    break;
                }
                Ok(DecodeStatus::NeedMore { total }) => {
                    assert!(total > have, "asked for {total} with {have} given");
                    if total > rest.len() {
                        return;
                    }
                    have = total;
                }
                Err(_) => return,
            }
        }
    }
}
