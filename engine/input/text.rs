//! Text to key events. Shifted characters are sent as Shift_L down, the
//! SHIFTED keysym, Shift_L up: GNOME's VNC path drops shifted characters sent
//! bare, and QEMU turns a bare shifted keysym into the unshifted key.

use crate::input::keysym;

/// One key press or release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEvent {
    pub keysym: u32,
    pub down: bool,
}

/// Characters that need Shift on a US keyboard.
pub fn needs_shift(c: char) -> bool {
    c.is_ascii_uppercase() || "~!@#$%^&*()_+{}|:\"<>?".contains(c)
}

/// The key events that type `text`, grouped per character (the runner throttles
/// between groups). Characters with no keysym (control characters other than
/// newline, tab and backspace) are returned as errors with their position.
pub fn type_text(text: &str) -> Result<Vec<Vec<KeyEvent>>, (usize, char)> {
    let mut out = Vec::with_capacity(text.chars().count());
    for (i, c) in text.chars().enumerate() {
        let k = keysym::of_char(c).ok_or((i, c))?;
        let mut group = Vec::with_capacity(4);
        if needs_shift(c) {
            group.push(KeyEvent { keysym: keysym::SHIFT_L, down: true });
            group.push(KeyEvent { keysym: k, down: true });
            group.push(KeyEvent { keysym: k, down: false });
            group.push(KeyEvent { keysym: keysym::SHIFT_L, down: false });
        } else {
            group.push(KeyEvent { keysym: k, down: true });
            group.push(KeyEvent { keysym: k, down: false });
        }
        out.push(group);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_characters_get_explicit_shift() {
        let g = type_text("aA!é€\n").unwrap();
        assert_eq!(g[0], vec![KeyEvent { keysym: 0x61, down: true }, KeyEvent { keysym: 0x61, down: false }]);
        assert_eq!(g[1][0], KeyEvent { keysym: keysym::SHIFT_L, down: true });
        assert_eq!(g[1][1].keysym, 0x41);
        assert_eq!(g[2][1].keysym, b'!' as u32);
        assert_eq!(g[3][0].keysym, 0xe9);
        assert_eq!(g[4][0].keysym, 0x0100_20ac);
        assert_eq!(g[5][0].keysym, keysym::RETURN);
    }

    #[test]
    fn control_characters_are_rejected_with_position() {
        assert_eq!(type_text("ab\u{7}"), Err((2, '\u{7}')));
    }
}
