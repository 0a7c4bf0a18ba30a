//! Key combos as scenarios write them: `ctrl+alt+t`, `shift+tab`, `F5`,
//! `Return`, `ctrl+shift+T`, `ctrl++` (the `+` key itself).

use crate::input::keysym;
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

    /// Press the modifiers in order, tap the key, release in reverse order.
    pub fn events(&self) -> Vec<KeyEvent> {
        let mut out = Vec::with_capacity(self.modifiers.len() * 2 + 2);
        for &m in &self.modifiers {
            out.push(KeyEvent { keysym: m, down: true });
        }
        out.push(KeyEvent { keysym: self.key, down: true });
        out.push(KeyEvent { keysym: self.key, down: false });
        for &m in self.modifiers.iter().rev() {
            out.push(KeyEvent { keysym: m, down: false });
        }
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
        assert_eq!(ev.first(), Some(&KeyEvent { keysym: CONTROL_L, down: true }));
        assert_eq!(ev.last(), Some(&KeyEvent { keysym: CONTROL_L, down: false }));
        assert_eq!(ev.len(), 6);
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
