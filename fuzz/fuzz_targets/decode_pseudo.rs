#![no_main]
//! The pseudo-encodings with data: ExtendedDesktopSize and Cursor (and the
//! empty ones), chosen by the first byte.

#[path = "common.rs"]
mod common;

use smoke::rfb::Encoding;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let encoding = match pick % 4 {
        0 => Encoding::ExtendedDesktopSize,
        1 => Encoding::Cursor,
        2 => Encoding::DesktopSize,
        _ => Encoding::LastRect,
    };
    common::run(encoding, rest)
});
