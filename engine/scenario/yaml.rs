//! Reading YAML into the positioned tree.
//!
//! The parser is serde-saphyr with strict booleans (`yes`/`no`/`on` stay
//! strings) and duplicate keys passed through so smoke can name both places.
//! Where the parser's own position is misleading, smoke finds the real cause
//! (measured cases in FACTS.md): a tab in the indentation, a `[` or `{` that is
//! never closed, a byte that is not UTF-8, and duplicate keys.

use std::fmt;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::scenario::diagnostic::{Diagnostic, Diagnostics};
use crate::scenario::node::{Entry, Node, Value};
use crate::scenario::source::{Span, line_col};

/// Parse one YAML document. An empty document is `null`.
pub fn parse(file: &Arc<str>, bytes: &[u8]) -> Result<Node, Diagnostics> {
    let mut diags = Diagnostics::new();
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.valid_up_to();
            let (line, col) = line_col(bytes, at);
            diags.push(
                Diagnostic::new(
                    &Span::new(file, line, col),
                    format!("the file is not valid UTF-8 (byte 0x{:02X})", bytes[at]),
                )
                .with_help("save the file as UTF-8"),
            );
            return Err(diags);
        }
    };
    let options = serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        with_snippet: false,
    };
    match serde_saphyr::from_str_with_options::<Spanned<RawValue>>(text, options) {
        Ok(raw) => {
            let node = convert(file, raw, &mut diags);
            if diags.is_empty() { Ok(node) } else { Err(diags) }
        }
        Err(e) => {
            let (line, col) = e.location().map(|l| (l.line() as u32, l.column() as u32)).unwrap_or((1, 1));
            let message = parser_message(&e.to_string());
            diags.push(better_position(file, text, line, col, message));
            Err(diags)
        }
    }
}

/// The parser's message without its trailing position (smoke prints that itself),
/// with advice rewritten for scenario authors.
fn parser_message(raw: &str) -> String {
    let trimmed = match raw.rfind(" at line ") {
        Some(i) if raw[i..].contains(", column ") => &raw[..i],
        _ => raw,
    };
    if trimmed.starts_with("multiple YAML documents") {
        return "a file holds one YAML document, but a second one starts here (`---`)".into();
    }
    trimmed.to_string()
}

/// Replace a misleading parser position with the real cause when one is found.
fn better_position(file: &Arc<str>, text: &str, line: u32, col: u32, message: String) -> Diagnostic {
    if let Some((tl, tc)) = tab_in_indentation(text, line + 1) {
        return Diagnostic::new(&Span::new(file, tl, tc), "a tab character is used for indentation")
            .with_help("YAML indents with spaces only; replace the tab with spaces")
            .with_note(&Span::new(file, line, col), format!("the parser reported: {message}"));
    }
    if let Some((open, bl, bc)) = unclosed_flow(text, line, col) {
        let close = if open == '[' { ']' } else { '}' };
        return Diagnostic::new(&Span::new(file, bl, bc), format!("'{open}' is never closed"))
            .with_help(format!("add the matching '{close}'"))
            .with_note(&Span::new(file, line, col), format!("the parser reported: {message}"));
    }
    Diagnostic::new(&Span::new(file, line, col), message)
}

/// The first tab in a line's leading whitespace, on a line up to `max_line`.
fn tab_in_indentation(text: &str, max_line: u32) -> Option<(u32, u32)> {
    for (i, line) in text.lines().enumerate().take(max_line as usize) {
        for (c, ch) in line.chars().enumerate() {
            match ch {
                ' ' => continue,
                '\t' => return Some((i as u32 + 1, c as u32 + 1)),
                _ => break,
            }
        }
    }
    None
}

/// An opening `[` or `{` of a flow collection, before the error position, that
/// has no matching close. Quoted strings and comments are skipped; a bracket in
/// the middle of a plain scalar (`a[b`) is text, not a flow collection.
fn unclosed_flow(text: &str, err_line: u32, err_col: u32) -> Option<(char, u32, u32)> {
    let mut stack: Vec<(char, u32, u32)> = Vec::new();
    let mut block_indent: Option<usize> = None; // inside a block scalar deeper than this
    for (li, line) in text.lines().enumerate() {
        let lno = li as u32 + 1;
        if lno > err_line {
            break;
        }
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(parent) = block_indent {
            if line.trim().is_empty() || indent > parent {
                continue;
            }
            block_indent = None;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        // A flow indicator counts when it starts a value: at line start, after
        // "- ", after ": ", or anywhere inside an open flow collection.
        let mut value_start = true;
        while i < chars.len() {
            if lno == err_line && i as u32 + 1 >= err_col {
                break;
            }
            let ch = chars[i];
            match ch {
                ' ' => {}
                '#' if i == 0 || chars[i - 1] == ' ' => break,
                '"' | '\'' if value_start || !stack.is_empty() => {
                    // skip a quoted scalar on this line
                    let quote = ch;
                    i += 1;
                    while i < chars.len() {
                        if quote == '"' && chars[i] == '\\' {
                            i += 2;
                            continue;
                        }
                        if chars[i] == quote {
                            if quote == '\'' && chars.get(i + 1) == Some(&'\'') {
                                i += 2;
                                continue;
                            }
                            break;
                        }
                        i += 1;
                    }
                    value_start = false;
                }
                '[' | '{' if value_start || !stack.is_empty() => {
                    stack.push((ch, lno, i as u32 + 1));
                    value_start = true;
                    i += 1;
                    continue;
                }
                ']' | '}' if !stack.is_empty() => {
                    stack.pop();
                    value_start = false;
                }
                ',' if !stack.is_empty() => {
                    value_start = true;
                    i += 1;
                    continue;
                }
                '-' if value_start && chars.get(i + 1).is_none_or(|c| *c == ' ') => {
                    value_start = true;
                    i += 1;
                    continue;
                }
                ':' if chars.get(i + 1).is_none_or(|c| *c == ' ') => {
                    value_start = true;
                    i += 1;
                    continue;
                }
                '|' | '>' if value_start && stack.is_empty() => {
                    block_indent = Some(indent);
                    break;
                }
                _ => value_start = false,
            }
            i += 1;
        }
    }
    stack.first().copied()
}

/// The serde-saphyr view of a node, before it is given a file name.
enum RawValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<RawValue>>),
    Map(Vec<(Spanned<RawKey>, Spanned<RawValue>)>),
}

/// A mapping key: any scalar, read as text.
struct RawKey(Option<String>);

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_unit<E>(self) -> Result<RawValue, E> {
                Ok(RawValue::Null)
            }
            fn visit_none<E>(self) -> Result<RawValue, E> {
                Ok(RawValue::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
                RawValue::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<RawValue, E> {
                Ok(RawValue::Bool(b))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawValue, E> {
                Ok(RawValue::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawValue, E> {
                Ok(i64::try_from(v).map_or(RawValue::Float(v as f64), RawValue::Int))
            }
            fn visit_i128<E>(self, v: i128) -> Result<RawValue, E> {
                Ok(i64::try_from(v).map_or(RawValue::Float(v as f64), RawValue::Int))
            }
            fn visit_u128<E>(self, v: u128) -> Result<RawValue, E> {
                Ok(i64::try_from(v).map_or(RawValue::Float(v as f64), RawValue::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawValue, E> {
                Ok(RawValue::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawValue, E> {
                Ok(RawValue::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<RawValue, E> {
                Ok(RawValue::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(RawValue::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(RawValue::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match RawValue::deserialize(d)? {
            RawValue::Str(s) => RawKey(Some(s)),
            RawValue::Int(i) => RawKey(Some(i.to_string())),
            RawValue::Float(f) => RawKey(Some(f.to_string())),
            RawValue::Bool(b) => RawKey(Some(b.to_string())),
            RawValue::Null => RawKey(Some("null".into())),
            RawValue::Seq(_) | RawValue::Map(_) => RawKey(None),
        })
    }
}

fn span_of<T>(file: &Arc<str>, s: &Spanned<T>) -> Span {
    let line = s.referenced.line().max(1) as u32;
    let col = s.referenced.column().max(1) as u32;
    Span::new(file, line, col)
}

fn convert(file: &Arc<str>, raw: Spanned<RawValue>, diags: &mut Diagnostics) -> Node {
    let span = span_of(file, &raw);
    let value = match raw.value {
        RawValue::Null => Value::Null,
        RawValue::Bool(b) => Value::Bool(b),
        RawValue::Int(i) => Value::Int(i),
        RawValue::Float(f) => Value::Float(f),
        RawValue::Str(s) => Value::Str(s),
        RawValue::Seq(items) => Value::Seq(items.into_iter().map(|i| convert(file, i, diags)).collect()),
        RawValue::Map(pairs) => {
            let mut entries: Vec<Entry> = Vec::with_capacity(pairs.len());
            for (k, v) in pairs {
                let key_span = span_of(file, &k);
                let Some(key) = k.value.0 else {
                    diags.push(
                        Diagnostic::new(&key_span, "a key must be a plain name, not a list or map")
                            .with_help("write the key as text, e.g. `name:`"),
                    );
                    continue;
                };
                let value = convert(file, v, diags);
                if let Some(first) = entries.iter().find(|e| e.key == key) {
                    diags.push(
                        Diagnostic::new(&key_span, format!("duplicate key '{key}'"))
                            .with_help("remove one of the two, or merge them")
                            .with_note(&first.key_span, format!("'{key}' was first given here")),
                    );
                    continue;
                }
                entries.push(Entry { key, key_span, value });
            }
            Value::Map(entries)
        }
    };
    Node::new(span, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &[u8]) -> Diagnostics {
        parse(&Arc::from("t.yaml"), text).expect_err("must fail")
    }

    fn pos(d: &Diagnostic) -> (u32, u32) {
        (d.span.line, d.span.col)
    }

    #[test]
    fn parses_with_positions_and_strict_booleans() {
        let n = parse(&Arc::from("t.yaml"), b"a: yes\nb:\n  - 1\n  - \"2\"\nc: true\n").unwrap();
        let a = n.get("a").unwrap();
        assert_eq!(a.value.value, Value::Str("yes".into()));
        assert_eq!((a.key_span.line, a.key_span.col), (1, 1));
        assert_eq!((a.value.span.line, a.value.span.col), (1, 4));
        let b = n.get("b").unwrap().value.as_seq().unwrap();
        assert_eq!(b[0].value, Value::Int(1));
        assert_eq!(b[1].value, Value::Str("2".into()));
        assert_eq!((b[1].span.line, b[1].span.col), (4, 5));
        assert_eq!(n.get("c").unwrap().value.value, Value::Bool(true));
    }

    #[test]
    fn tab_indentation_is_reported_at_the_tab() {
        let d = err(b"name: x\nsteps:\n  - key: a\n\t- key: b\n");
        assert_eq!(pos(&d.items[0]), (4, 1), "{d}");
        assert!(d.items[0].message.contains("tab"));
    }

    #[test]
    fn unclosed_bracket_is_reported_at_the_bracket() {
        let d = err(b"name: x\nsteps:\n  - click: [10, 20\n  - key: a\n");
        assert_eq!(pos(&d.items[0]), (3, 12), "{d}");
        assert!(d.items[0].message.contains("'[' is never closed"), "{d}");
        let d = err(b"a: {x: 1, y: [1, 2]\nb: 2\n");
        assert_eq!(pos(&d.items[0]), (1, 4), "{d}");
    }

    #[test]
    fn brackets_in_text_and_quotes_are_not_collections() {
        // the error here is the unclosed quote, not the bracket inside it
        let d = err(b"a: \"[x\nb: 'y'\nc: [\"]\", d\n");
        assert!(!d.items[0].message.contains("'[' is never closed") || pos(&d.items[0]) == (3, 4), "{d}");
    }

    #[test]
    fn non_utf8_byte_gets_a_position() {
        let d = err(b"name: x\nsteps:\n  - type: \"ab\xffcd\"\n");
        assert_eq!(pos(&d.items[0]), (3, 14), "{d}");
        assert!(d.items[0].message.contains("0xFF"));
    }

    #[test]
    fn duplicate_keys_name_both_places() {
        let d = err(b"steps:\n  - key: a\n    label: x\n    label: y\n");
        assert_eq!(pos(&d.items[0]), (4, 5));
        assert_eq!(d.items[0].notes[0].0.line, 3);
        assert!(d.items[0].message.contains("duplicate key 'label'"));
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(parse(&Arc::from("t"), b"").unwrap().value, Value::Null);
        assert_eq!(parse(&Arc::from("t"), b"# only a comment\n").unwrap().value, Value::Null);
    }

    #[test]
    fn second_document_is_an_error() {
        let d = err(b"a: 1\n---\nb: 2\n");
        assert!(d.items[0].message.contains("second one"), "{d}");
    }
}
