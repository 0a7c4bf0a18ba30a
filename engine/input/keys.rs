//! Key combos as scenarios write them: `ctrl+alt+t`, `shift+tab`, `F5`,
//! `Return`, `ctrl+shift+T`, `ctrl++` (the `+` key itself).

use crate::input::keysym;
use crate::input::layout::{Layout, scancode_of_keysym};
use crate::input::text::KeyEvent;

/// A parsed key combo: modifiers held while one key is pressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCombo {
    pub text: String,
    pub modifiers: Vec<u32>,
    pub key: u32,
}

/// Why a key combo could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("empty key combo")]
    Empty,
    #[error("unknown key '{name}'")]
    UnknownKey { name: String, suggestion: Option<String> },
    #[error("'{name}' is a modifier; a combo ends with the key to press, e.g. '{name}+t'")]
    OnlyModifiers { name: String },
    #[error("a key combo presses one key: '{first}' and '{second}' are both keys")]
    TwoKeys { first: String, second: String },
}

impl KeyError {
    /// A hint for the user.
    pub fn help(&self) -> Option<String> {
        match self {
            KeyError::UnknownKey { suggestion: Some(s), .. } => Some(format!("did you mean '{s}'?")),
            KeyError::UnknownKey { .. } => Some(
                "use a single character, F1..F35, or a name such as enter, tab, escape, \
                 backspace, delete, home, end, pageup, pagedown, up, down, left, right, space"
                    .into(),
            ),
            _ => None,
        }
    }
}

impl KeyCombo {
    pub fn parse(text: &str) -> Result<KeyCombo, KeyError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(KeyError::Empty);
        }
        let parts = split_plus(trimmed);
        let mut modifiers = Vec::new();
        let mut key: Option<(String, u32)> = None;
        let last = parts.len() - 1;
        for (i, part) in parts.iter().enumerate() {
            let lower = part.to_ascii_lowercase();
            let modifier = keysym::MODIFIERS.iter().find(|(n, _)| *n == lower).map(|(_, k)| *k);
            match modifier {
                Some(m) if i < last => {
                    if !modifiers.contains(&m) {
                        modifiers.push(m);
                    }
                }
                // a lone modifier as the last part presses it on its own (e.g. `super`)
                Some(m) if parts.len() == 1 => key = Some((part.clone(), m)),
                Some(_) => return Err(KeyError::OnlyModifiers { name: part.clone() }),
                None => {
                    if let Some((first, _)) = &key {
                        return Err(KeyError::TwoKeys { first: first.clone(), second: part.clone() });
                    }
                    let k = keysym::of_name(part)
                        .ok_or_else(|| KeyError::UnknownKey { name: part.clone(), suggestion: suggest(part) })?;
                    if i < last {
                        return Err(KeyError::TwoKeys { first: part.clone(), second: parts[last].clone() });
                    }
                    key = Some((part.clone(), k));
                }
            }
        }
        let (_, mut key) = key.ok_or(KeyError::Empty)?;
        // With Shift held, send the shifted keysym of a letter (`X`, not `x`):
        // QEMU's caps-lock sync flips the case otherwise.
        if modifiers.contains(&keysym::SHIFT_L)
            && let Some(c) = char::from_u32(key).filter(|c| c.is_ascii_lowercase())
        {
            key = c.to_ascii_uppercase() as u32;
        }
        Ok(KeyCombo { text: trimmed.to_string(), modifiers, key })
    }

    /// Press the modifiers in order, tap the key, release in reverse order
    /// (keysyms only).
    pub fn events(&self) -> Vec<KeyEvent> {
        self.events_on(None)
    }

    /// Like [`KeyCombo::events`], with scancodes of `layout` when given.
    pub fn events_on(&self, layout: Option<Layout>) -> Vec<KeyEvent> {
        let mut out = self.press(layout);
        out.extend(self.release(layout));
        out
    }

    /// The modifiers and the key, each with its scancode on `layout` (0 when
    /// it has none or no layout is given). A character that needs Shift or
    /// AltGr on the layout gets it added.
    fn keys_on(&self, layout: Option<Layout>) -> (Vec<KeyEvent>, KeyEvent) {
        let Some(layout) = layout else {
            let mods = self.modifiers.iter().map(|&m| KeyEvent::sym(m, true)).collect();
            return (mods, KeyEvent::sym(self.key, true));
        };
        let mut mods: Vec<KeyEvent> =
            self.modifiers.iter().map(|&m| KeyEvent::key(m, scancode_of_keysym(m).unwrap_or(0), true)).collect();
        let fixed = scancode_of_keysym(self.key).filter(|_| self.key > 0xff);
        let stroke = char::from_u32(self.key)
            .filter(|_| fixed.is_none() && self.key <= 0xff)
            .and_then(|c| layout.strokes(c))
            .and_then(|s| s.first().copied());
        let key = match (fixed, stroke) {
            (Some(code), _) => KeyEvent::key(self.key, code, true),
            (None, Some(s)) => {
                let mut add = |k: u32, code: u16| {
                    if !mods.iter().any(|e| e.keysym == k) {
                        mods.push(KeyEvent::key(k, code, true));
                    }
                };
                if s.shift {
                    add(keysym::SHIFT_L, crate::input::layout::SC_SHIFT_L);
                }
                if s.altgr {
                    add(keysym::ALTGR, crate::input::layout::SC_ALT_R);
                }
                KeyEvent::key(s.keysym, s.scancode, true)
            }
            (None, None) => KeyEvent::sym(self.key, true),
        };
        (mods, key)
    }

    /// The modifiers down in order, then the key down (a held combo).
    pub fn press(&self, layout: Option<Layout>) -> Vec<KeyEvent> {
        let (mut out, key) = self.keys_on(layout);
        out.push(key);
        out
    }

    /// The key up, then the modifiers up in reverse order.
    pub fn release(&self, layout: Option<Layout>) -> Vec<KeyEvent> {
        let (mods, key) = self.keys_on(layout);
        let mut out = vec![KeyEvent { down: false, ..key }];
        out.extend(mods.iter().rev().map(|m| KeyEvent { down: false, ..*m }));
        out
    }
}

/// Split on '+', keeping a '+' that is itself the key (`ctrl++`, `+`).
fn split_plus(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '+' && !cur.is_empty() {
            parts.push(std::mem::take(&mut cur));
        } else if c == '+' && (i + 1 == chars.len() || chars[i + 1] == '+') {
            cur.push('+');
        } else if c != '+' {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts.into_iter().map(|p| p.trim().to_string()).collect()
}

fn suggest(name: &str) -> Option<String> {
    let names = keysym::NAMED_KEYS.iter().map(|(n, _)| *n).chain(keysym::MODIFIERS.iter().map(|(n, _)| *n));
    crate::scenario::diagnostic::did_you_mean(name, names).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::keysym::*;

    #[test]
    fn parses_combos() {
        let c = KeyCombo::parse("ctrl+alt+t").unwrap();
        assert_eq!(c.modifiers, vec![CONTROL_L, ALT_L]);
        assert_eq!(c.key, b't' as u32);
        let c = KeyCombo::parse("Shift+Tab").unwrap();
        assert_eq!((c.modifiers.clone(), c.key), (vec![SHIFT_L], TAB));
        assert_eq!(KeyCombo::parse("F5").unwrap().key, F1 + 4);
        assert_eq!(KeyCombo::parse("return").unwrap().key, RETURN);
        assert_eq!(KeyCombo::parse("Enter").unwrap().key, RETURN);
        assert_eq!(KeyCombo::parse("super").unwrap().key, SUPER_L);
    }

    #[test]
    fn shift_sends_the_shifted_letter() {
        let c = KeyCombo::parse("ctrl+shift+t").unwrap();
        assert_eq!(c.key, b'T' as u32);
        let ev = c.events();
        assert_eq!(ev.first(), Some(&KeyEvent::sym(CONTROL_L, true)));
        assert_eq!(ev.last(), Some(&KeyEvent::sym(CONTROL_L, false)));
        assert_eq!(ev.len(), 6);
    }

    #[test]
    fn scancodes_of_combos() {
        let c = KeyCombo::parse("ctrl+alt+t").unwrap();
        let ev = c.events_on(Some(Layout::Us));
        let codes: Vec<(u16, bool)> = ev.iter().map(|e| (e.scancode, e.down)).collect();
        assert_eq!(codes, vec![(0x1d, true), (0x38, true), (0x14, true), (0x14, false), (0x38, false), (0x1d, false)]);
        // on a German keyboard, z is where US has y; `ctrl+@` needs AltGr there
        assert_eq!(KeyCombo::parse("ctrl+z").unwrap().press(Some(Layout::De))[1].scancode, 0x15);
        let at = KeyCombo::parse("ctrl+@").unwrap().press(Some(Layout::De));
        assert_eq!(at.iter().map(|e| e.scancode).collect::<Vec<_>>(), vec![0x1d, 0xb8, 0x10]);
        assert_eq!(KeyCombo::parse("F12").unwrap().press(Some(Layout::De))[0].scancode, 0x58);
        // no scancodes without a layout
        assert!(c.events().iter().all(|e| e.scancode == 0));
    }

    #[test]
    fn plus_key_itself() {
        assert_eq!(KeyCombo::parse("ctrl++").unwrap().key, b'+' as u32);
        assert_eq!(KeyCombo::parse("+").unwrap().key, b'+' as u32);
    }

    #[test]
    fn errors_are_specific() {
        assert!(matches!(KeyCombo::parse(""), Err(KeyError::Empty)));
        let e = KeyCombo::parse("ctrl+entr").unwrap_err();
        assert_eq!(e.help().as_deref(), Some("did you mean 'enter'?"));
        assert!(matches!(KeyCombo::parse("ctrl+alt"), Err(KeyError::OnlyModifiers { .. })));
        assert!(matches!(KeyCombo::parse("a+b"), Err(KeyError::TwoKeys { .. })));
        assert!(matches!(KeyCombo::parse("ctrl+banana"), Err(KeyError::UnknownKey { .. })));
    }
}
