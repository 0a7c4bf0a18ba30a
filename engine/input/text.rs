//! Text to key events.
//!
//! Two ways, chosen by whether the server takes scancodes:
//! - With a [`Layout`] (the server acknowledged QEMU's Extended Key Event):
//!   each character becomes the physical key presses that produce it on that
//!   layout, with Shift and AltGr pressed explicitly around it and dead keys
//!   followed by Space. Characters the layout cannot produce are sent as
//!   keysyms alone (Unicode keysyms `0x01000000 + code point`).
//! - Without: keysyms only. Shifted characters are sent as Shift_L down, the
//!   SHIFTED keysym, Shift_L up: GNOME's VNC path drops shifted characters
//!   sent bare, and QEMU turns a bare shifted keysym into the unshifted key.

use crate::input::keysym;
use crate::input::layout::{self, Layout, Stroke};

/// One key press or release: a keysym and, when known, the key's scancode
/// (qnum; 0 for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEvent {
    pub keysym: u32,
    pub down: bool,
    pub scancode: u16,
}

impl KeyEvent {
    /// An event by keysym only.
    pub const fn sym(keysym: u32, down: bool) -> KeyEvent {
        KeyEvent { keysym, down, scancode: 0 }
    }

    /// An event with a scancode (0 for none).
    pub const fn key(keysym: u32, scancode: u16, down: bool) -> KeyEvent {
        KeyEvent { keysym, down, scancode }
    }
}

/// Characters that need Shift on a US keyboard.
pub fn needs_shift(c: char) -> bool {
    c.is_ascii_uppercase() || "~!@#$%^&*()_+{}|:\"<>?".contains(c)
}

/// Shift_L with its scancode when `scancodes` is set.
fn shift(down: bool, scancodes: bool) -> KeyEvent {
    KeyEvent::key(keysym::SHIFT_L, if scancodes { layout::SC_SHIFT_L } else { 0 }, down)
}

fn altgr(down: bool) -> KeyEvent {
    KeyEvent::key(keysym::ALTGR, layout::SC_ALT_R, down)
}

/// Press `stroke`'s modifiers, tap its key, release the modifiers.
fn push_stroke(group: &mut Vec<KeyEvent>, s: Stroke) {
    if s.shift {
        group.push(shift(true, true));
    }
    if s.altgr {
        group.push(altgr(true));
    }
    group.push(KeyEvent::key(s.keysym, s.scancode, true));
    group.push(KeyEvent::key(s.keysym, s.scancode, false));
    if s.altgr {
        group.push(altgr(false));
    }
    if s.shift {
        group.push(shift(false, true));
    }
}

/// The key events that type `text`, grouped per character (the runner
/// throttles between groups); scancodes of `layout` when given, keysyms only
/// otherwise. Characters with no keysym (control characters other than
/// newline, tab and backspace) are returned as errors with their position.
pub fn type_text(text: &str, layout: Option<Layout>) -> Result<Vec<Vec<KeyEvent>>, (usize, char)> {
    let mut out = Vec::with_capacity(text.chars().count());
    for (i, c) in text.chars().enumerate() {
        let k = keysym::of_char(c).ok_or((i, c))?;
        let mut group = Vec::with_capacity(4);
        let fixed = layout.and(layout::scancode_of_keysym(k)).filter(|_| k > 0xff);
        let strokes = layout.and_then(|l| l.strokes(c));
        match (fixed, strokes) {
            (Some(code), _) => {
                group.push(KeyEvent::key(k, code, true));
                group.push(KeyEvent::key(k, code, false));
            }
            (None, Some(strokes)) => {
                for s in strokes {
                    push_stroke(&mut group, s);
                }
            }
            // Not on the layout (or no scancodes): by keysym.
            (None, None) if needs_shift(c) => {
                group.push(shift(true, false));
                group.push(KeyEvent::sym(k, true));
                group.push(KeyEvent::sym(k, false));
                group.push(shift(false, false));
            }
            (None, None) => {
                group.push(KeyEvent::sym(k, true));
                group.push(KeyEvent::sym(k, false));
            }
        }
        out.push(group);
    }
    Ok(out)
}

/// Releases of every modifier typing may press (sent after typing, whatever
/// happened, so no key stays held).
pub fn release_modifiers(scancodes: bool) -> Vec<KeyEvent> {
    let mut out = vec![shift(false, scancodes)];
    if scancodes {
        out.push(altgr(false));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keysyms(g: &[KeyEvent]) -> Vec<u32> {
        g.iter().map(|e| e.keysym).collect()
    }

    #[test]
    fn shifted_characters_get_explicit_shift() {
        let g = type_text("aA!é€\n", None).unwrap();
        assert_eq!(g[0], vec![KeyEvent::sym(0x61, true), KeyEvent::sym(0x61, false)]);
        assert_eq!(g[1][0], KeyEvent::sym(keysym::SHIFT_L, true));
        assert_eq!(g[1][1].keysym, 0x41);
        assert_eq!(g[2][1].keysym, b'!' as u32);
        assert_eq!(g[3][0].keysym, 0xe9);
        assert_eq!(g[4][0].keysym, 0x0100_20ac);
        assert_eq!(g[5][0].keysym, keysym::RETURN);
        assert!(g.iter().flatten().all(|e| e.scancode == 0));
    }

    #[test]
    fn scancodes_on_a_layout() {
        let g = type_text("aA\n", Some(Layout::Us)).unwrap();
        assert_eq!(g[0], vec![KeyEvent::key(0x61, 0x1e, true), KeyEvent::key(0x61, 0x1e, false)]);
        // Shift, then the SHIFTED keysym on the same key
        assert_eq!(
            g[1],
            vec![
                KeyEvent::key(keysym::SHIFT_L, 0x2a, true),
                KeyEvent::key(0x41, 0x1e, true),
                KeyEvent::key(0x41, 0x1e, false),
                KeyEvent::key(keysym::SHIFT_L, 0x2a, false),
            ]
        );
        assert_eq!(g[2][0], KeyEvent::key(keysym::RETURN, 0x1c, true));
    }

    #[test]
    fn german_altgr_dead_keys_and_unicode_fallback() {
        let g = type_text("@^ж", Some(Layout::De)).unwrap();
        assert_eq!(keysyms(&g[0]), vec![keysym::ALTGR, b'@' as u32, b'@' as u32, keysym::ALTGR]);
        assert_eq!(g[0][1].scancode, 0x10);
        // dead circumflex, then space
        assert_eq!(keysyms(&g[1]), vec![0xfe52, 0xfe52, 0x20, 0x20]);
        assert_eq!(g[1][2].scancode, layout::SC_SPACE);
        // not on the layout: a Unicode keysym, no scancode
        assert_eq!(g[2], vec![KeyEvent::sym(0x0100_0436, true), KeyEvent::sym(0x0100_0436, false)]);
    }

    #[test]
    fn control_characters_are_rejected_with_position() {
        assert_eq!(type_text("ab\u{7}", None), Err((2, '\u{7}')));
    }
}
