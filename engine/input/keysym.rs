//! X11 keysym values (the codes RFB key events carry) and their names.

pub const BACKSPACE: u32 = 0xff08;
pub const TAB: u32 = 0xff09;
pub const RETURN: u32 = 0xff0d;
pub const ESCAPE: u32 = 0xff1b;
pub const DELETE: u32 = 0xffff;
pub const HOME: u32 = 0xff50;
pub const LEFT: u32 = 0xff51;
pub const UP: u32 = 0xff52;
pub const RIGHT: u32 = 0xff53;
pub const DOWN: u32 = 0xff54;
pub const PAGE_UP: u32 = 0xff55;
pub const PAGE_DOWN: u32 = 0xff56;
pub const END: u32 = 0xff57;
pub const INSERT: u32 = 0xff63;
pub const MENU: u32 = 0xff67;
pub const PRINT: u32 = 0xff61;
pub const F1: u32 = 0xffbe;
pub const SHIFT_L: u32 = 0xffe1;
pub const SHIFT_R: u32 = 0xffe2;
pub const CONTROL_L: u32 = 0xffe3;
pub const CONTROL_R: u32 = 0xffe4;
pub const CAPS_LOCK: u32 = 0xffe5;
pub const META_L: u32 = 0xffe7;
pub const ALT_L: u32 = 0xffe9;
pub const ALT_R: u32 = 0xffea;
/// ISO_Level3_Shift: AltGr on European layouts.
pub const ALTGR: u32 = 0xfe03;
pub const SUPER_L: u32 = 0xffeb;
pub const SUPER_R: u32 = 0xffec;
pub const KP_ENTER: u32 = 0xff8d;
pub const SPACE: u32 = 0x20;

/// Named keys users may write in `key:` steps (lower case; matched
/// case-insensitively). Single characters are not listed: any printable
/// character is its own key.
pub const NAMED_KEYS: &[(&str, u32)] = &[
    ("enter", RETURN),
    ("return", RETURN),
    ("tab", TAB),
    ("space", SPACE),
    ("backspace", BACKSPACE),
    ("escape", ESCAPE),
    ("esc", ESCAPE),
    ("delete", DELETE),
    ("del", DELETE),
    ("insert", INSERT),
    ("ins", INSERT),
    ("home", HOME),
    ("end", END),
    ("pageup", PAGE_UP),
    ("page_up", PAGE_UP),
    ("pgup", PAGE_UP),
    ("pagedown", PAGE_DOWN),
    ("page_down", PAGE_DOWN),
    ("pgdn", PAGE_DOWN),
    ("up", UP),
    ("down", DOWN),
    ("left", LEFT),
    ("right", RIGHT),
    ("menu", MENU),
    ("print", PRINT),
    ("printscreen", PRINT),
    ("capslock", CAPS_LOCK),
    ("caps_lock", CAPS_LOCK),
    ("kp_enter", KP_ENTER),
    ("minus", b'-' as u32),
    ("plus", b'+' as u32),
    ("comma", b',' as u32),
    ("period", b'.' as u32),
    ("slash", b'/' as u32),
    ("backslash", b'\\' as u32),
    ("semicolon", b';' as u32),
    ("apostrophe", b'\'' as u32),
    ("grave", b'`' as u32),
    ("equal", b'=' as u32),
    ("bracketleft", b'[' as u32),
    ("bracketright", b']' as u32),
];

/// Modifier names and the keysym each presses.
pub const MODIFIERS: &[(&str, u32)] = &[
    ("ctrl", CONTROL_L),
    ("control", CONTROL_L),
    ("shift", SHIFT_L),
    ("alt", ALT_L),
    ("altgr", ALTGR),
    ("super", SUPER_L),
    ("win", SUPER_L),
    ("meta", META_L),
];

/// The keysym of a character: Latin-1 characters are their code point; other
/// Unicode characters use the 0x01000000 + code point form.
pub fn of_char(c: char) -> Option<u32> {
    let cp = c as u32;
    match c {
        '\n' => Some(RETURN),
        '\t' => Some(TAB),
        '\u{8}' => Some(BACKSPACE),
        _ if c.is_control() => None,
        _ if (0x20..=0x7e).contains(&cp) || (0xa0..=0xff).contains(&cp) => Some(cp),
        _ => Some(0x0100_0000 + cp),
    }
}

/// The keysym for a name: a named key, F1..F35, or a single character.
pub fn of_name(name: &str) -> Option<u32> {
    let lower = name.to_ascii_lowercase();
    if let Some((_, k)) = NAMED_KEYS.iter().find(|(n, _)| *n == lower) {
        return Some(*k);
    }
    if let Some(n) = lower.strip_prefix('f').and_then(|d| d.parse::<u32>().ok())
        && (1..=35).contains(&n)
    {
        return Some(F1 + n - 1);
    }
    let mut chars = name.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => of_char(c),
        _ => None,
    }
}

/// A readable name for a keysym, for events and logs.
pub fn name(keysym: u32) -> String {
    if let Some((n, _)) = MODIFIERS.iter().find(|(_, k)| *k == keysym) {
        return n.to_string();
    }
    if let Some((n, _)) = NAMED_KEYS.iter().find(|(_, k)| *k == keysym)
        && keysym > 0xff
    {
        return n.to_string();
    }
    if (F1..F1 + 35).contains(&keysym) {
        return format!("F{}", keysym - F1 + 1);
    }
    let cp = if keysym >= 0x0100_0000 { keysym - 0x0100_0000 } else { keysym };
    match char::from_u32(cp) {
        Some(' ') => "space".into(),
        Some(c) if !c.is_control() && cp < 0xff00 => c.to_string(),
        _ => format!("0x{keysym:x}"),
    }
}
