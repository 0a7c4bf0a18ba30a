//! Routines: reusable step lists in `routines/NAME.yaml` with typed inputs.
//!
//! ```yaml
//! description: Start an app and wait for its window
//! inputs:
//!   command: {type: list, required: true}
//!   wait:    {type: string, default: 20s}
//! steps:
//!   - launch: {command: "{{ command }}", wait: "{{ wait }}"}
//! ```
//!
//! Lookup prefers OS overrides: `routines/<os>/NAME.yaml`, then
//! `routines/<os family>/NAME.yaml`, then `routines/NAME.yaml`.

use std::path::{Path, PathBuf};

use crate::scenario::decode::{self, MapReader};
use crate::scenario::diagnostic::{Diagnostic, Diagnostics, did_you_mean};
use crate::scenario::node::{Node, Value};
use crate::scenario::source::Span;

pub const ROUTINE_KEYS: &[&str] = &["description", "inputs", "steps"];
pub const INPUT_KEYS: &[&str] = &["type", "required", "default", "description"];
pub const INPUT_TYPES: &[&str] = &["string", "int", "float", "bool", "list", "map", "any"];

/// A loaded routine file.
#[derive(Debug, Clone)]
pub struct Routine {
    pub name: String,
    pub path: PathBuf,
    pub description: Option<String>,
    pub inputs: Vec<InputSpec>,
    pub steps: Vec<Node>,
    pub span: Span,
}

/// One declared input.
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub name: String,
    pub ty: InputType,
    pub required: bool,
    pub default: Option<Node>,
    pub description: Option<String>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    String,
    Int,
    Float,
    Bool,
    List,
    Map,
    Any,
}

impl InputType {
    fn parse(s: &str) -> Option<InputType> {
        Some(match s {
            "string" => InputType::String,
            "int" => InputType::Int,
            "float" => InputType::Float,
            "bool" => InputType::Bool,
            "list" => InputType::List,
            "map" => InputType::Map,
            "any" => InputType::Any,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Int => "int",
            InputType::Float => "float",
            InputType::Bool => "bool",
            InputType::List => "list",
            InputType::Map => "map",
            InputType::Any => "any",
        }
    }

    /// Check (and, for numbers given to a string input, convert) a value.
    pub fn accept(self, v: &Node) -> Option<Node> {
        let ok = match (self, &v.value) {
            (InputType::Any, _) => true,
            (InputType::String, Value::Str(_)) => true,
            (InputType::String, Value::Int(i)) => return Some(Node::new(v.span.clone(), Value::Str(i.to_string()))),
            (InputType::String, Value::Float(f)) => return Some(Node::new(v.span.clone(), Value::Str(f.to_string()))),
            (InputType::Int, Value::Int(_)) => true,
            (InputType::Float, Value::Int(i)) => return Some(Node::new(v.span.clone(), Value::Float(*i as f64))),
            (InputType::Float, Value::Float(_)) => true,
            (InputType::Bool, Value::Bool(_)) => true,
            (InputType::List, Value::Seq(_)) => true,
            (InputType::Map, Value::Map(_)) => true,
            _ => false,
        };
        ok.then(|| v.clone())
    }

    /// A stand-in value of this type, for validating a routine on its own.
    pub fn sample(self, name: &str, span: &Span) -> Node {
        let v = match self {
            InputType::String | InputType::Any => Value::Str(format!("<{name}>")),
            InputType::Int => Value::Int(1),
            InputType::Float => Value::Float(1.0),
            InputType::Bool => Value::Bool(false),
            InputType::List => Value::Seq(vec![Node::new(span.clone(), Value::Str(format!("<{name}>")))]),
            InputType::Map => Value::Map(Vec::new()),
        };
        Node::new(span.clone(), v)
    }
}

/// Where a routine call looks, most specific first.
pub fn candidates(routines_dir: &Path, name: &str, os: &str, family: &str) -> Vec<PathBuf> {
    let file = format!("{name}.yaml");
    let mut out = vec![routines_dir.join(os).join(&file)];
    if family != os {
        out.push(routines_dir.join(family).join(&file));
    }
    out.push(routines_dir.join(&file));
    out
}

/// Names of the routines available (for "did you mean").
pub fn available(routines_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(routines_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "yaml") {
                p.file_stem().map(|s| s.to_string_lossy().to_string())
            } else {
                None
            }
        })
        .collect();
    names.sort();
    names
}

/// Is `name` a valid routine name (letters, digits, `_`, `-`, and `/` between parts)?
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|p| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// Decode a parsed routine file.
pub fn decode(name: &str, path: &Path, root: &Node, diags: &mut Diagnostics) -> Option<Routine> {
    let m = MapReader::new(root, "a routine file", ROUTINE_KEYS, diags)?;
    let description = m.get("description").and_then(|n| decode::string(n, "description", diags));
    let mut inputs = Vec::new();
    if let Some(n) = m.get("inputs") {
        match &n.value {
            Value::Map(entries) => {
                for e in entries {
                    if let Some(i) = input_spec(&e.key, &e.key_span, &e.value, diags) {
                        inputs.push(i);
                    }
                }
            }
            Value::Null => {}
            _ => diags.push(Diagnostic::new(
                &n.span,
                format!("inputs must be a map of input name to its spec, found {}", n.kind()),
            )),
        }
    }
    let steps = match m.required("steps", diags) {
        Some(n) => match &n.value {
            Value::Seq(items) if !items.is_empty() => items.clone(),
            Value::Seq(_) => {
                diags.push(Diagnostic::new(&n.span, "a routine needs at least one step"));
                Vec::new()
            }
            _ => {
                diags.push(Diagnostic::new(&n.span, format!("steps must be a list, found {}", n.kind())));
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    Some(Routine {
        name: name.to_string(),
        path: path.to_path_buf(),
        description,
        inputs,
        steps,
        span: root.span.clone(),
    })
}

fn input_spec(name: &str, key_span: &Span, node: &Node, diags: &mut Diagnostics) -> Option<InputSpec> {
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.starts_with(|c: char| c.is_ascii_digit()) {
        diags.push(Diagnostic::new(
            key_span,
            format!("input name '{name}' must be letters, digits and '_' (usable as a template variable)"),
        ));
        return None;
    }
    let m = MapReader::new(node, &format!("input '{name}'"), INPUT_KEYS, diags)?;
    let ty = match m.get("type") {
        None => InputType::Any,
        Some(n) => {
            let s = decode::string(n, "type", diags)?;
            match InputType::parse(&s) {
                Some(t) => t,
                None => {
                    let d = Diagnostic::new(&n.span, format!("unknown input type '{s}'"));
                    diags.push(match did_you_mean(&s, INPUT_TYPES.iter().copied()) {
                        Some(x) => d.with_help(format!("did you mean '{x}'?")),
                        None => d.with_help(format!("types: {}", INPUT_TYPES.join(", "))),
                    });
                    return None;
                }
            }
        }
    };
    let required = m.get("required").and_then(|n| decode::boolean(n, "required", diags)).unwrap_or(false);
    let description = m.get("description").and_then(|n| decode::string(n, "description", diags));
    let mut default = m.get("default").cloned();
    if let Some(d) = &default {
        if required {
            diags.push(
                Diagnostic::new(&d.span, format!("input '{name}' is required and has a default"))
                    .with_help("a required input is always given by the caller: drop `required` or the default"),
            );
            // keep the input so calls that give it are not reported as well
            default = None;
            return Some(InputSpec {
                name: name.to_string(),
                ty,
                required,
                default,
                description,
                span: key_span.clone(),
            });
        }
        if !d.has_template() && ty.accept(d).is_none() {
            diags.push(Diagnostic::new(
                &d.span,
                format!("default of input '{name}' must be {}, found {}", ty.name(), d.kind()),
            ));
            return None;
        }
    }
    Some(InputSpec { name: name.to_string(), ty, required, default, description, span: key_span.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_path_safe() {
        assert!(valid_name("launch_app"));
        assert!(valid_name("desktop/launch-app"));
        assert!(!valid_name("../etc/passwd"));
        assert!(!valid_name("a//b"));
        assert!(!valid_name(""));
    }

    #[test]
    fn lookup_prefers_os_then_family() {
        let c = candidates(Path::new("/r"), "x", "fedora42", "linux");
        assert_eq!(
            c,
            vec![PathBuf::from("/r/fedora42/x.yaml"), PathBuf::from("/r/linux/x.yaml"), PathBuf::from("/r/x.yaml")]
        );
    }
}
