//! Typed reading of the positioned tree. Every reader reports problems into a
//! [`Diagnostics`] at the offending node's position and returns `None`, so one
//! pass finds every mistake of a file instead of stopping at the first.

use std::time::Duration;

use crate::geometry::{Point, Rect};
use crate::scenario::diagnostic::{Diagnostic, Diagnostics, did_you_mean};
use crate::scenario::node::{Entry, Node, Value};

/// A mapping whose keys were checked against the keys allowed there.
pub struct MapReader<'a> {
    pub node: &'a Node,
    entries: &'a [Entry],
    what: String,
}

impl<'a> MapReader<'a> {
    /// Read `node` as a mapping of `what` (e.g. "an ocr check") and report every
    /// key not in `allowed`, with a suggestion when one is close.
    pub fn new(node: &'a Node, what: &str, allowed: &[&str], diags: &mut Diagnostics) -> Option<MapReader<'a>> {
        let Some(entries) = node.as_map() else {
            diags.push(Diagnostic::new(&node.span, format!("{what} must be a map, found {}", node.kind())));
            return None;
        };
        for e in entries {
            if !allowed.contains(&e.key.as_str()) {
                diags.push(unknown_key(e, what, allowed));
            }
        }
        Some(MapReader { node, entries, what: what.to_string() })
    }

    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.value)
    }

    pub fn entry(&self, key: &str) -> Option<&'a Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// A key that must be present.
    pub fn required(&self, key: &str, diags: &mut Diagnostics) -> Option<&'a Node> {
        let v = self.get(key);
        if v.is_none() {
            diags.push(Diagnostic::new(&self.node.span, format!("{} is missing '{key}'", self.what)));
        }
        v
    }

    pub fn entries(&self) -> &'a [Entry] {
        self.entries
    }
}

/// The diagnostic for a key that is not allowed where it stands.
pub fn unknown_key(e: &Entry, what: &str, allowed: &[&str]) -> Diagnostic {
    let d = Diagnostic::new(&e.key_span, format!("unknown key '{}' in {what}", e.key));
    match did_you_mean(&e.key, allowed.iter().copied()) {
        Some(s) => d.with_help(format!("did you mean '{s}'?")),
        None => d.with_help(format!("allowed here: {}", allowed.join(", "))),
    }
}

fn wrong(node: &Node, what: &str, expected: &str, diags: &mut Diagnostics) {
    diags.push(Diagnostic::new(&node.span, format!("{what} must be {expected}, found {}", describe(node))));
}

fn describe(node: &Node) -> String {
    match &node.value {
        Value::Str(s) if s.chars().count() <= 30 => format!("the string \"{s}\""),
        Value::Int(i) => format!("the integer {i}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Bool(b) => format!("{b}"),
        _ => node.kind().to_string(),
    }
}

/// A string (numbers are NOT accepted: names and paths are text).
pub fn string(node: &Node, what: &str, diags: &mut Diagnostics) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        _ => {
            wrong(node, what, "a string", diags);
            None
        }
    }
}

/// Text to type or look for: a string, or a number written without quotes.
pub fn text(node: &Node, what: &str, diags: &mut Diagnostics) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        _ => {
            wrong(node, what, "text", diags);
            None
        }
    }
}

/// A non-empty string.
pub fn non_empty(node: &Node, what: &str, diags: &mut Diagnostics) -> Option<String> {
    let s = string(node, what, diags)?;
    if s.trim().is_empty() {
        diags.push(Diagnostic::new(&node.span, format!("{what} must not be empty")));
        return None;
    }
    Some(s)
}

pub fn boolean(node: &Node, what: &str, diags: &mut Diagnostics) -> Option<bool> {
    match &node.value {
        Value::Bool(b) => Some(*b),
        Value::Str(s) if ["yes", "no", "on", "off", "y", "n"].contains(&s.to_ascii_lowercase().as_str()) => {
            diags.push(
                Diagnostic::new(&node.span, format!("{what} must be true or false, found \"{s}\""))
                    .with_help("YAML 1.2 booleans are only true and false"),
            );
            None
        }
        _ => {
            wrong(node, what, "true or false", diags);
            None
        }
    }
}

/// An integer within `min..=max`.
pub fn integer(node: &Node, what: &str, min: i64, max: i64, diags: &mut Diagnostics) -> Option<i64> {
    match &node.value {
        Value::Int(i) if (min..=max).contains(i) => Some(*i),
        Value::Int(i) => {
            diags.push(Diagnostic::new(&node.span, format!("{what} must be between {min} and {max}, found {i}")));
            None
        }
        _ => {
            wrong(node, what, "an integer", diags);
            None
        }
    }
}

/// A number within `min..=max`.
pub fn number(node: &Node, what: &str, min: f64, max: f64, diags: &mut Diagnostics) -> Option<f64> {
    let v = match &node.value {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => {
            wrong(node, what, "a number", diags);
            return None;
        }
    };
    if !(min..=max).contains(&v) {
        diags.push(Diagnostic::new(&node.span, format!("{what} must be between {min} and {max}, found {v}")));
        return None;
    }
    Some(v)
}

/// A duration: `500ms`, `2s`, `1.5s`, `1m30s`, `1h`, or a number of seconds.
pub fn duration(node: &Node, what: &str, diags: &mut Diagnostics) -> Option<Duration> {
    let parsed = match &node.value {
        Value::Int(i) if *i >= 0 => Ok(Duration::from_secs(*i as u64)),
        Value::Float(f) if *f >= 0.0 && f.is_finite() => Ok(Duration::from_secs_f64(*f)),
        Value::Str(s) => parse_duration(s),
        _ => Err(format!("found {}", describe(node))),
    };
    match parsed {
        Ok(d) => Some(d),
        Err(why) => {
            diags.push(
                Diagnostic::new(&node.span, format!("{what} must be a duration, {why}"))
                    .with_help("write e.g. 500ms, 2s, 1.5s, 1m30s, or a number of seconds"),
            );
            None
        }
    }
}

/// Parse `500ms`, `2s`, `1.5s`, `1m30s`, `1h`, `10` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("found an empty string".into());
    }
    if let Ok(secs) = t.parse::<f64>()
        && secs >= 0.0
        && secs.is_finite()
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_end == 0 {
            return Err(format!("cannot read \"{s}\""));
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| format!("cannot read \"{s}\""))?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = rest[..unit_end].trim();
        rest = &rest[unit_end..];
        let factor = match unit {
            "ms" => 0.001,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("\"{s}\" needs a unit after {n}")),
            other => return Err(format!("unknown unit '{other}' in \"{s}\"")),
        };
        total += n * factor;
    }
    Ok(Duration::from_secs_f64(total))
}

/// A list; a single item stands for a list of one when `one_or_many`.
pub fn list<'a>(node: &'a Node, what: &str, one_or_many: bool, diags: &mut Diagnostics) -> Option<Vec<&'a Node>> {
    match &node.value {
        Value::Seq(items) => Some(items.iter().collect()),
        Value::Null if one_or_many => Some(Vec::new()),
        _ if one_or_many => Some(vec![node]),
        _ => {
            wrong(node, what, "a list", diags);
            None
        }
    }
}

/// A rectangle: `[x, y, w, h]` or `{x, y, w, h}`.
pub fn rect(node: &Node, what: &str, diags: &mut Diagnostics) -> Option<Rect> {
    let nums = match &node.value {
        Value::Seq(items) if items.len() == 4 => items.iter().collect::<Vec<_>>(),
        Value::Map(_) => {
            let m = MapReader::new(node, what, &["x", "y", "w", "h"], diags)?;
            let v: Vec<_> = ["x", "y", "w", "h"].iter().filter_map(|k| m.required(k, diags)).collect();
            if v.len() != 4 {
                return None;
            }
            v
        }
        _ => {
            diags.push(
                Diagnostic::new(&node.span, format!("{what} must be a rectangle, found {}", describe(node)))
                    .with_help("write [x, y, width, height] or {x: .., y: .., w: .., h: ..}"),
            );
            return None;
        }
    };
    let x = integer(nums[0], &format!("{what} x"), 0, 65535, diags);
    let y = integer(nums[1], &format!("{what} y"), 0, 65535, diags);
    let w = integer(nums[2], &format!("{what} width"), 1, 65535, diags);
    let h = integer(nums[3], &format!("{what} height"), 1, 65535, diags);
    Some(Rect::new(x? as u32, y? as u32, w? as u32, h? as u32))
}

/// A point: `[x, y]` or `{x, y}`.
pub fn point(node: &Node, what: &str, diags: &mut Diagnostics) -> Option<Point> {
    let (xn, yn) = match &node.value {
        Value::Seq(items) if items.len() == 2 => (&items[0], &items[1]),
        Value::Map(_) => {
            let m = MapReader::new(node, what, &["x", "y"], diags)?;
            (m.required("x", diags)?, m.required("y", diags)?)
        }
        _ => {
            diags.push(
                Diagnostic::new(&node.span, format!("{what} must be a point, found {}", describe(node)))
                    .with_help("write [x, y] or {x: .., y: ..}"),
            );
            return None;
        }
    };
    let x = integer(xn, &format!("{what} x"), 0, 65535, diags);
    let y = integer(yn, &format!("{what} y"), 0, 65535, diags);
    Some(Point::new(x? as u32, y? as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("2 parsecs").is_err());
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit 'x'"));
        assert!(parse_duration("ms").is_err());
    }
}
