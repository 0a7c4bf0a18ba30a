//! Keyboard layouts: which physical key (an XT scancode, in QEMU's "qnum"
//! numbering) and which modifiers produce a character on the target's
//! keyboard.
//!
//! Scancodes are what QEMU's Extended Key Event carries (and TigerVNC's Xvnc
//! honours): the target's own keymap turns them into characters, exactly as
//! for a person at a physical keyboard. So the client must know the target's
//! layout to pick the key; a character the layout cannot produce is sent as a
//! keysym instead (see [`crate::input::text`]).
//!
//! qnum codes: a one-byte XT make code is itself; a two-byte code `E0 xx` is
//! `0x80 | xx` (Right Alt, `E0 38`, is `0xb8`).

use crate::input::keysym;

/// A keyboard layout the target uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// US English (QWERTY).
    #[default]
    Us,
    /// German (QWERTZ, with dead keys for `^`, `` ` `` and `´`).
    De,
}

/// The names of every layout, as inventories and `--layout` write them.
pub const LAYOUT_NAMES: &[&str] = &["us", "de"];

/// Modifier scancodes (qnum).
pub const SC_SHIFT_L: u16 = 0x2a;
pub const SC_SHIFT_R: u16 = 0x36;
pub const SC_CTRL_L: u16 = 0x1d;
pub const SC_CTRL_R: u16 = 0x9d;
pub const SC_ALT_L: u16 = 0x38;
/// Right Alt: AltGr on European layouts.
pub const SC_ALT_R: u16 = 0xb8;
pub const SC_SUPER_L: u16 = 0xdb;
pub const SC_SUPER_R: u16 = 0xdc;
pub const SC_SPACE: u16 = 0x39;

/// One key press that produces a character (or the first part of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stroke {
    /// The key (qnum).
    pub scancode: u16,
    /// Hold Shift while pressing it.
    pub shift: bool,
    /// Hold AltGr (Right Alt) while pressing it.
    pub altgr: bool,
    /// The keysym this press produces (for servers that want one alongside).
    pub keysym: u32,
}

/// (scancode, plain, shifted, altgr) for the character keys of a layout;
/// `'\0'` where the level is unused. Dead keys are listed in `dead_keys`.
type KeyRow = (u16, char, char, char);

const US: &[KeyRow] = &[
    (0x29, '`', '~', '\0'),
    (0x02, '1', '!', '\0'),
    (0x03, '2', '@', '\0'),
    (0x04, '3', '#', '\0'),
    (0x05, '4', '$', '\0'),
    (0x06, '5', '%', '\0'),
    (0x07, '6', '^', '\0'),
    (0x08, '7', '&', '\0'),
    (0x09, '8', '*', '\0'),
    (0x0a, '9', '(', '\0'),
    (0x0b, '0', ')', '\0'),
    (0x0c, '-', '_', '\0'),
    (0x0d, '=', '+', '\0'),
    (0x10, 'q', 'Q', '\0'),
    (0x11, 'w', 'W', '\0'),
    (0x12, 'e', 'E', '\0'),
    (0x13, 'r', 'R', '\0'),
    (0x14, 't', 'T', '\0'),
    (0x15, 'y', 'Y', '\0'),
    (0x16, 'u', 'U', '\0'),
    (0x17, 'i', 'I', '\0'),
    (0x18, 'o', 'O', '\0'),
    (0x19, 'p', 'P', '\0'),
    (0x1a, '[', '{', '\0'),
    (0x1b, ']', '}', '\0'),
    (0x2b, '\\', '|', '\0'),
    (0x1e, 'a', 'A', '\0'),
    (0x1f, 's', 'S', '\0'),
    (0x20, 'd', 'D', '\0'),
    (0x21, 'f', 'F', '\0'),
    (0x22, 'g', 'G', '\0'),
    (0x23, 'h', 'H', '\0'),
    (0x24, 'j', 'J', '\0'),
    (0x25, 'k', 'K', '\0'),
    (0x26, 'l', 'L', '\0'),
    (0x27, ';', ':', '\0'),
    (0x28, '\'', '"', '\0'),
    (0x2c, 'z', 'Z', '\0'),
    (0x2d, 'x', 'X', '\0'),
    (0x2e, 'c', 'C', '\0'),
    (0x2f, 'v', 'V', '\0'),
    (0x30, 'b', 'B', '\0'),
    (0x31, 'n', 'N', '\0'),
    (0x32, 'm', 'M', '\0'),
    (0x33, ',', '<', '\0'),
    (0x34, '.', '>', '\0'),
    (0x35, '/', '?', '\0'),
    (0x39, ' ', '\0', '\0'),
];

/// German (XKB `de` and kbd `de-latin1`): Y and Z swapped, umlauts, AltGr for
/// `@ € { [ ] } \ ~ |`.
const DE: &[KeyRow] = &[
    (0x29, '^', '°', '\0'),
    (0x02, '1', '!', '¹'),
    (0x03, '2', '"', '²'),
    (0x04, '3', '§', '³'),
    (0x05, '4', '$', '\0'),
    (0x06, '5', '%', '\0'),
    (0x07, '6', '&', '\0'),
    (0x08, '7', '/', '{'),
    (0x09, '8', '(', '['),
    (0x0a, '9', ')', ']'),
    (0x0b, '0', '=', '}'),
    (0x0c, 'ß', '?', '\\'),
    (0x0d, '´', '`', '\0'),
    (0x10, 'q', 'Q', '@'),
    (0x11, 'w', 'W', '\0'),
    (0x12, 'e', 'E', '€'),
    (0x13, 'r', 'R', '\0'),
    (0x14, 't', 'T', '\0'),
    (0x15, 'z', 'Z', '\0'),
    (0x16, 'u', 'U', '\0'),
    (0x17, 'i', 'I', '\0'),
    (0x18, 'o', 'O', '\0'),
    (0x19, 'p', 'P', '\0'),
    (0x1a, 'ü', 'Ü', '\0'),
    (0x1b, '+', '*', '~'),
    (0x2b, '#', '\'', '\0'),
    (0x1e, 'a', 'A', '\0'),
    (0x1f, 's', 'S', '\0'),
    (0x20, 'd', 'D', '\0'),
    (0x21, 'f', 'F', '\0'),
    (0x22, 'g', 'G', '\0'),
    (0x23, 'h', 'H', '\0'),
    (0x24, 'j', 'J', '\0'),
    (0x25, 'k', 'K', '\0'),
    (0x26, 'l', 'L', '\0'),
    (0x27, 'ö', 'Ö', '\0'),
    (0x28, 'ä', 'Ä', '\0'),
    (0x56, '<', '>', '|'),
    (0x2c, 'y', 'Y', '\0'),
    (0x2d, 'x', 'X', '\0'),
    (0x2e, 'c', 'C', '\0'),
    (0x2f, 'v', 'V', '\0'),
    (0x30, 'b', 'B', '\0'),
    (0x31, 'n', 'N', '\0'),
    (0x32, 'm', 'M', 'µ'),
    (0x33, ',', ';', '\0'),
    (0x34, '.', ':', '\0'),
    (0x35, '-', '_', '\0'),
    (0x39, ' ', '\0', '\0'),
];

/// Characters that are dead keys on German keyboards, with the dead keysym
/// the key sends: typed as the dead key followed by Space.
const DE_DEAD: &[(char, u32)] = &[('^', 0xfe52), ('`', 0xfe50), ('´', 0xfe51)];

impl Layout {
    /// The layout called `name` (case-insensitive), if known.
    pub fn parse(name: &str) -> Option<Layout> {
        match name.trim().to_ascii_lowercase().as_str() {
            "us" | "en-us" | "en_us" => Some(Layout::Us),
            "de" | "de-de" | "de_de" => Some(Layout::De),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Layout::Us => "us",
            Layout::De => "de",
        }
    }

    fn rows(self) -> &'static [KeyRow] {
        match self {
            Layout::Us => US,
            Layout::De => DE,
        }
    }

    fn dead(self) -> &'static [(char, u32)] {
        match self {
            Layout::Us => &[],
            Layout::De => DE_DEAD,
        }
    }

    /// The key presses that produce `c` on this layout, in order: one for a
    /// plain key, two for a character that sits on a dead key (the dead key,
    /// then Space). `None` if the layout cannot produce `c` with one key.
    pub fn strokes(self, c: char) -> Option<Vec<Stroke>> {
        if c == '\0' {
            return None;
        }
        for &(scancode, plain, shifted, altgr) in self.rows() {
            let (shift, alt) = if plain == c {
                (false, false)
            } else if shifted == c {
                (true, false)
            } else if altgr == c {
                (false, true)
            } else {
                continue;
            };
            let char_keysym = keysym::of_char(c)?;
            let key = match self.dead().iter().find(|(d, _)| *d == c) {
                Some(&(_, dead)) => dead,
                None => char_keysym,
            };
            let first = Stroke { scancode, shift, altgr: alt, keysym: key };
            if key == char_keysym {
                return Some(vec![first]);
            }
            let space = Stroke { scancode: SC_SPACE, shift: false, altgr: false, keysym: keysym::SPACE };
            return Some(vec![first, space]);
        }
        None
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The scancode (qnum) of a key that is the same on every layout: Return,
/// Tab, arrows, F-keys, modifiers. `None` for character keys (ask the
/// layout) and for keys with no scancode.
pub fn scancode_of_keysym(k: u32) -> Option<u16> {
    let code = match k {
        keysym::BACKSPACE => 0x0e,
        keysym::TAB => 0x0f,
        keysym::RETURN => 0x1c,
        keysym::ESCAPE => 0x01,
        keysym::DELETE => 0xd3,
        keysym::HOME => 0xc7,
        keysym::LEFT => 0xcb,
        keysym::UP => 0xc8,
        keysym::RIGHT => 0xcd,
        keysym::DOWN => 0xd0,
        keysym::PAGE_UP => 0xc9,
        keysym::PAGE_DOWN => 0xd1,
        keysym::END => 0xcf,
        keysym::INSERT => 0xd2,
        keysym::MENU => 0xdd,
        keysym::PRINT => 0xb7,
        keysym::KP_ENTER => 0x9c,
        keysym::CAPS_LOCK => 0x3a,
        keysym::SHIFT_L => SC_SHIFT_L,
        keysym::SHIFT_R => SC_SHIFT_R,
        keysym::CONTROL_L => SC_CTRL_L,
        keysym::CONTROL_R => SC_CTRL_R,
        keysym::ALT_L | keysym::META_L => SC_ALT_L,
        keysym::ALT_R | keysym::ALTGR => SC_ALT_R,
        keysym::SUPER_L => SC_SUPER_L,
        keysym::SUPER_R => SC_SUPER_R,
        keysym::SPACE => SC_SPACE,
        k if (keysym::F1..keysym::F1 + 10).contains(&k) => 0x3b + (k - keysym::F1) as u16,
        k if k == keysym::F1 + 10 => 0x57,
        k if k == keysym::F1 + 11 => 0x58,
        _ => return None,
    };
    Some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_printable_ascii_character_has_keys_on_both_layouts() {
        for layout in [Layout::Us, Layout::De] {
            for b in 0x20u8..0x7f {
                let c = char::from(b);
                let strokes = layout.strokes(c).unwrap_or_else(|| panic!("{layout} cannot type {c:?}"));
                assert!(!strokes.is_empty());
            }
        }
    }

    #[test]
    fn scancodes_of_a_layout_are_unique_and_levels_unambiguous() {
        for layout in [Layout::Us, Layout::De] {
            let mut seen = std::collections::HashSet::new();
            let mut chars = std::collections::HashSet::new();
            for &(sc, a, b, c) in layout.rows() {
                assert!(seen.insert(sc), "{layout}: scancode {sc:#x} twice");
                for ch in [a, b, c].into_iter().filter(|&ch| ch != '\0') {
                    assert!(chars.insert(ch), "{layout}: {ch:?} on two keys");
                }
            }
        }
    }

    #[test]
    fn german_keys() {
        let de = Layout::De;
        let one = |c| de.strokes(c).unwrap()[0];
        assert_eq!(one('z').scancode, 0x15);
        assert_eq!(one('y').scancode, 0x2c);
        assert_eq!(one('@'), Stroke { scancode: 0x10, shift: false, altgr: true, keysym: b'@' as u32 });
        assert_eq!(one('"'), Stroke { scancode: 0x03, shift: true, altgr: false, keysym: b'"' as u32 });
        assert_eq!(one('ß').scancode, 0x0c);
        assert_eq!(one('Ü'), Stroke { scancode: 0x1a, shift: true, altgr: false, keysym: 0xdc });
        assert_eq!(one('€'), Stroke { scancode: 0x12, shift: false, altgr: true, keysym: 0x0100_20ac });
        assert_eq!(one('|').scancode, 0x56);
        // a dead key, then space
        let caret = de.strokes('^').unwrap();
        assert_eq!(caret.len(), 2);
        assert_eq!((caret[0].scancode, caret[0].keysym), (0x29, 0xfe52));
        assert_eq!(caret[1].scancode, SC_SPACE);
        let tilde = de.strokes('~').unwrap();
        assert_eq!(tilde, vec![Stroke { scancode: 0x1b, shift: false, altgr: true, keysym: b'~' as u32 }]);
        assert!(de.strokes('ж').is_none());
        assert!(Layout::Us.strokes('ä').is_none());
    }

    #[test]
    fn names() {
        assert_eq!(Layout::parse("DE"), Some(Layout::De));
        assert_eq!(Layout::parse("us"), Some(Layout::Us));
        assert_eq!(Layout::parse("fr"), None);
        for n in LAYOUT_NAMES {
            assert_eq!(Layout::parse(n).unwrap().name(), *n);
        }
    }

    #[test]
    fn fixed_keys() {
        assert_eq!(scancode_of_keysym(keysym::RETURN), Some(0x1c));
        assert_eq!(scancode_of_keysym(keysym::F1 + 11), Some(0x58));
        assert_eq!(scancode_of_keysym(keysym::F1 + 4), Some(0x3f));
        assert_eq!(scancode_of_keysym(keysym::RIGHT), Some(0xcd));
        assert_eq!(scancode_of_keysym(b'a' as u32), None);
    }
}
