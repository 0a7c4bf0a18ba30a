//! Template rendering with minijinja, on the parsed tree.
//!
//! Rendering walks the positioned tree and renders string scalars, so every
//! rendered value keeps the position of the scalar it came from. A scalar that
//! is exactly `{{ expr }}` keeps the expression's native type (a list input
//! stays a list, an int stays an int); any other template renders to a string.
//! Undefined variables are errors (strict), nothing is HTML-escaped, and the
//! filters `shquote` (POSIX sh) and `psquote` (PowerShell) quote values for
//! safe command building; `comm` and `psname` give the name a process has on
//! Linux (15 bytes of the base name) and for Get-Process (no folder, no `.exe`). `secret("name")` reads a secret and marks it for
//! redaction.

use minijinja::{Environment, UndefinedBehavior, Value as JValue};

use crate::scenario::diagnostic::{Diagnostic, Diagnostics, did_you_mean};
use crate::scenario::node::{Entry, Node, Value, is_template};
use crate::scenario::source::{SourceMap, Span};
use crate::secrets::SecretStore;

/// The template environment of one plan build.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn new(secrets: SecretStore) -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder().keep_trailing_newline(true).build() {
            env.set_syntax(syntax);
        }
        env.add_filter("shquote", |v: JValue| -> String { quote_each(&v, shquote) });
        env.add_filter("psquote", |v: JValue| -> String { quote_each(&v, psquote) });
        // process names as the OS compares them: Linux keeps 15 bytes of the
        // base name (`pkill -x` semantics); Get-Process drops the directory and `.exe`
        env.add_filter("comm", |v: String| -> String { crate::backend::process::comm_name(&v) });
        env.add_filter("psname", |v: String| -> String { crate::guest::windows::process_name(&v) });
        env.add_function("secret", move |name: String| -> Result<String, minijinja::Error> {
            secrets.get(&name).map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string()))
        });
        Templates { env }
    }

    /// Render every string scalar of `node` in `ctx`. Keys are never rendered.
    pub fn render(&self, node: &Node, ctx: &Context, sources: &SourceMap, diags: &mut Diagnostics) -> Node {
        match &node.value {
            Value::Str(s) if is_template(s) => match self.render_scalar(s, ctx) {
                Ok(v) => v.with_span(&node.span),
                Err(e) => {
                    diags.push(self.error(e, s, &node.span, ctx, sources));
                    node.clone()
                }
            },
            Value::Seq(items) => Node::new(
                node.span.clone(),
                Value::Seq(items.iter().map(|n| self.render(n, ctx, sources, diags)).collect()),
            ),
            Value::Map(entries) => Node::new(
                node.span.clone(),
                Value::Map(
                    entries
                        .iter()
                        .map(|e| Entry {
                            key: e.key.clone(),
                            key_span: e.key_span.clone(),
                            value: self.render(&e.value, ctx, sources, diags),
                        })
                        .collect(),
                ),
            ),
            _ => node.clone(),
        }
    }

    fn render_scalar(&self, s: &str, ctx: &Context) -> Result<Rendered, minijinja::Error> {
        if let Some(expr) = single_expression(s) {
            let compiled = self.env.compile_expression(expr)?;
            let value = compiled.eval(ctx.value())?;
            if value.is_undefined() {
                return Err(minijinja::Error::new(minijinja::ErrorKind::UndefinedError, "undefined value"));
            }
            let json = serde_json::to_value(&value)
                .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string()))?;
            return Ok(Rendered::Native(json));
        }
        Ok(Rendered::Text(self.env.render_str(s, ctx.value())?))
    }

    fn error(&self, e: minijinja::Error, source: &str, span: &Span, ctx: &Context, sources: &SourceMap) -> Diagnostic {
        // minijinja's range is relative to the expression for `{{ expr }}` scalars
        let base = single_expression(source).and_then(|inner| source.find(inner)).unwrap_or(0);
        let at = e
            .range()
            .map(|r| position_in_scalar(span, sources, source, base + r.start))
            .unwrap_or_else(|| position_in_scalar(span, sources, source, base));
        let detail = e.detail().map(str::to_string).unwrap_or_else(|| e.kind().to_string());
        if e.kind() == minijinja::ErrorKind::UndefinedError {
            let names = undefined_names(&self.env, source, ctx);
            if let Some(name) = names.first() {
                let at = find_word(source, name).map_or(at, |o| position_in_scalar(span, sources, source, o));
                let mut d = Diagnostic::new(&at, format!("undefined variable '{name}'"));
                d = match did_you_mean(name, ctx.names().iter().map(String::as_str)) {
                    Some(s) => d.with_help(format!("did you mean '{s}'?")),
                    None if ctx.names().is_empty() => d.with_help("no variables are defined here"),
                    None => d.with_help(format!("defined here: {}", ctx.names().join(", "))),
                };
                return d;
            }
            return Diagnostic::new(&at, format!("template uses an undefined value: {detail}"));
        }
        Diagnostic::new(&at, format!("template error: {detail}"))
    }
}

/// Byte offset of `word` in `text` as a whole identifier.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).map(|(i, _)| i).find(|&i| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// The variables a template sees.
#[derive(Debug, Clone, Default)]
pub struct Context {
    map: serde_json::Map<String, serde_json::Value>,
}

impl Context {
    pub fn new() -> Context {
        Context::default()
    }

    pub fn insert(&mut self, name: &str, value: serde_json::Value) {
        self.map.insert(name.to_string(), value);
    }

    pub fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<&serde_json::Value> {
        self.map.get(name)
    }

    fn value(&self) -> JValue {
        JValue::from(minijinja::value::Serde(&self.map))
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.map.clone())
    }
}

enum Rendered {
    Native(serde_json::Value),
    Text(String),
}

impl Rendered {
    fn with_span(self, span: &Span) -> Node {
        match self {
            Rendered::Native(j) => Node::from_json(&j, span),
            Rendered::Text(t) => Node::new(span.clone(), Value::Str(t)),
        }
    }
}

/// `Some(expr)` when the whole scalar is one `{{ expr }}`.
fn single_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

/// Names a template reads that the context does not define.
fn undefined_names(env: &Environment<'static>, source: &str, ctx: &Context) -> Vec<String> {
    let vars = match single_expression(source) {
        Some(expr) => env.compile_expression(expr).map(|e| e.undeclared_variables(false)).ok(),
        None => env.template_from_str(source).map(|t| t.undeclared_variables(false)).ok(),
    };
    let mut names: Vec<String> =
        vars.unwrap_or_default().into_iter().filter(|n| ctx.get(n).is_none() && n != "secret").collect();
    names.sort();
    names
}

/// Where byte `offset` of a scalar's text lies in the file: quoted scalars
/// start one column after their quote; block scalars (`|`, `>`) start on the
/// line after the indicator at the content's indentation.
fn position_in_scalar(span: &Span, sources: &SourceMap, text: &str, offset: usize) -> Span {
    let before = &text[..offset.min(text.len())];
    let line_in = before.matches('\n').count() as u32;
    let col_in = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32;
    let first = sources.line(span).unwrap_or("");
    let lead = first.chars().nth(span.col.saturating_sub(1) as usize);
    match lead {
        Some('"') | Some('\'') if line_in == 0 => span.shifted(1 + col_in),
        _ if line_in == 0 => span.shifted(col_in),
        _ => {
            // later lines of a multi-line scalar: column from that line's indentation
            let line = span.line + line_in;
            let src = sources.line(&Span::new(&span.file, line, 1)).unwrap_or("");
            let indent = src.chars().take_while(|c| *c == ' ').count() as u32;
            Span::new(&span.file, line, indent + 1 + col_in)
        }
    }
}

/// Apply a quoting function to a scalar, or to each item of a list (joined with spaces).
fn quote_each(v: &JValue, quote: fn(&str) -> String) -> String {
    if let Ok(iter) = v.try_iter()
        && v.kind() == minijinja::value::ValueKind::Seq
    {
        return iter.map(|item| quote(&scalar_text(&item))).collect::<Vec<_>>().join(" ");
    }
    quote(&scalar_text(v))
}

fn scalar_text(v: &JValue) -> String {
    match v.as_str() {
        Some(s) => s.to_string(),
        None if v.is_none() || v.is_undefined() => String::new(),
        None => v.to_string(),
    }
}

/// Quote for POSIX sh: one single-quoted word; `'` becomes `'\''`.
pub fn shquote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Quote for PowerShell: one single-quoted string; every single-quote
/// character PowerShell recognises (including the typographic ones) is doubled.
pub fn psquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{201b}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::yaml;
    use std::sync::Arc;

    fn render(yaml_text: &str, ctx: serde_json::Value) -> Result<Node, Diagnostics> {
        let mut sources = SourceMap::new();
        let f = sources.add("t.yaml", yaml_text);
        let node = yaml::parse(&f, yaml_text.as_bytes())?;
        let mut c = Context::new();
        for (k, v) in ctx.as_object().unwrap() {
            c.insert(k, v.clone());
        }
        let mut diags = Diagnostics::new();
        let out = Templates::new(SecretStore::default()).render(&node, &c, &sources, &mut diags);
        if diags.is_empty() { Ok(out) } else { Err(diags) }
    }

    #[test]
    fn exact_expression_keeps_native_type() {
        let n = render(
            "a: \"{{ n }}\"\nb: \"{{ items }}\"\nc: \"x{{ n }}\"\nd: '{{ flag }}'\n",
            serde_json::json!({"n": 3, "items": ["a", "b"], "flag": true}),
        )
        .unwrap();
        assert_eq!(n.get("a").unwrap().value.value, Value::Int(3));
        let b = n.get("b").unwrap().value.as_seq().unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].as_str(), Some("b"));
        // rendered values keep the scalar's position
        assert_eq!(b[1].span.line, 2);
        assert_eq!(n.get("c").unwrap().value.as_str(), Some("x3"));
        assert_eq!(n.get("d").unwrap().value.value, Value::Bool(true));
    }

    #[test]
    fn tojson_of_a_list_input_is_json() {
        let n = render(
            "cmd: \"app --servers '{{ servers | tojson }}'\"\n",
            serde_json::json!({"servers": [{"url": "https://a"}, "b"]}),
        )
        .unwrap();
        let cmd = n.get("cmd").unwrap().value.as_str().unwrap().to_string();
        let json = cmd.strip_prefix("app --servers '").unwrap().strip_suffix('\'').unwrap();
        let parsed: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(parsed, serde_json::json!([{"url": "https://a"}, "b"]));
    }

    #[test]
    fn undefined_variable_has_position_and_suggestion() {
        let d = render("steps:\n  - type: \"x {{ exrp }}\"\n", serde_json::json!({"expr": 1})).unwrap_err();
        let d = &d.items[0];
        assert_eq!(d.message, "undefined variable 'exrp'");
        assert_eq!(d.help.as_deref(), Some("did you mean 'expr'?"));
        assert_eq!((d.span.line, d.span.col), (2, 17), "{d:?}");
    }

    #[test]
    fn undefined_in_block_scalar_points_into_the_block() {
        let d = render("run: |\n  echo ok\n  echo {{ nope }}\n", serde_json::json!({})).unwrap_err();
        assert_eq!((d.items[0].span.line, d.items[0].span.col), (3, 11), "{:?}", d.items[0]);
    }

    #[test]
    fn booleans_render_lowercase_with_tojson() {
        let n = render("a: \"{{ f | tojson }} {{ f | lower }}\"\n", serde_json::json!({"f": false})).unwrap();
        assert_eq!(n.get("a").unwrap().value.as_str(), Some("false false"));
    }

    #[test]
    fn shquote_survives_hostile_strings() {
        for hostile in ["a'b", "$(rm -rf /)", "`x`", "a\"b\\c", "", "x\ny", "'; echo pwned; '"] {
            let quoted = shquote(hostile);
            let out = std::process::Command::new("sh").arg("-c").arg(format!("printf %s {quoted}")).output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), hostile, "{quoted}");
        }
        let n = render("a: \"{{ args | shquote }}\"\n", serde_json::json!({"args": ["a b", "c'd"]})).unwrap();
        assert_eq!(n.get("a").unwrap().value.as_str(), Some("'a b' 'c'\\''d'"));
    }

    #[test]
    fn process_name_filters() {
        let n = render(
            "a: \"{{ p | comm }}\"\nb: \"{{ w | psname }}\"\n",
            serde_json::json!({"p": "/opt/Rocket.Chat/rocketchat-desktop.bin", "w": "C:\\Program Files\\App\\App.exe"}),
        )
        .unwrap();
        assert_eq!(n.get("a").unwrap().value.as_str(), Some("rocketchat-desk"));
        assert_eq!(n.get("b").unwrap().value.as_str(), Some("App"));
    }

    #[test]
    fn psquote_doubles_every_single_quote_kind() {
        assert_eq!(psquote("it's"), "'it''s'");
        assert_eq!(psquote("a\u{2019}b"), "'a\u{2019}\u{2019}b'");
        assert_eq!(psquote("$env:PATH; `whoami`"), "'$env:PATH; `whoami`'");
    }

    #[test]
    fn secrets_come_from_the_store() {
        let mut sources = SourceMap::new();
        let text = "t: \"{{ secret('pw') }}\"\n";
        let f = sources.add("t.yaml", text);
        let node = yaml::parse(&f, text.as_bytes()).unwrap();
        let dir = std::env::temp_dir().join(format!("smoke-tpl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pw"), "s3cret").unwrap();
        let store = SecretStore::new([("pw".to_string(), crate::secrets::SecretSource::File(dir.join("pw")))].into());
        let red = store.redactor();
        let mut diags = Diagnostics::new();
        let out = Templates::new(store).render(&node, &Context::new(), &sources, &mut diags);
        assert!(diags.is_empty(), "{diags}");
        assert_eq!(out.get("t").unwrap().value.as_str(), Some("s3cret"));
        assert_eq!(red.redact("x s3cret"), "x ******");
        let _ = Arc::<str>::from("x");
        std::fs::remove_dir_all(&dir).ok();
    }
}
