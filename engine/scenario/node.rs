//! The positioned document tree: YAML values that remember their source span.
//!
//! Parsing produces a [`Node`] tree; templates are rendered on that tree (so a
//! rendered value keeps the position of the scalar it came from), and the typed
//! model is decoded from it.

use crate::scenario::source::Span;

/// A value with the position it was written at.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub span: Span,
    pub value: Value,
}

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One `key: value` pair of a mapping, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

impl Node {
    pub fn new(span: Span, value: Value) -> Node {
        Node { span, value }
    }

    /// What kind of value this is, for error messages ("a list", "a string").
    pub fn kind(&self) -> &'static str {
        self.value.kind()
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The entry for `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.as_map()?.iter().find(|e| e.key == key)
    }

    /// Convert to JSON (for template contexts and events). Floats that JSON
    /// cannot hold become null.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|e| (e.key.clone(), e.value.to_json())).collect()),
        }
    }

    /// Build a tree from JSON; every node gets `span`.
    pub fn from_json(json: &serde_json::Value, span: &Span) -> Node {
        use serde_json::Value as J;
        let value = match json {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => Value::Seq(items.iter().map(|j| Node::from_json(j, span)).collect()),
            J::Object(map) => Value::Map(
                map.iter()
                    .map(|(k, v)| Entry { key: k.clone(), key_span: span.clone(), value: Node::from_json(v, span) })
                    .collect(),
            ),
        };
        Node::new(span.clone(), value)
    }

    /// True when any string scalar in the tree contains template syntax.
    pub fn has_template(&self) -> bool {
        match &self.value {
            Value::Str(s) => is_template(s),
            Value::Seq(items) => items.iter().any(Node::has_template),
            Value::Map(entries) => entries.iter().any(|e| e.value.has_template()),
            _ => false,
        }
    }
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }
}

/// True when a string holds Jinja syntax (`{{`, `{%` or `{#`).
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}
