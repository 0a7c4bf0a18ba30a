//! Diagnostics: errors in scenario, routine and inventory files, each with the
//! place it was found (`file:line:column`), what is wrong and what to do.
//!
//! Loading collects every diagnostic it can instead of stopping at the first,
//! so `smoke validate` lists all mistakes of a file at once.

use crate::scenario::source::{SourceMap, Span};

/// One problem found in a source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub span: Span,
    pub message: String,
    /// What to do about it ("did you mean 'label'?").
    pub help: Option<String>,
    /// Further places that explain the error (the first of two duplicate keys,
    /// the scenario line that called a routine, ...).
    pub notes: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn new(span: &Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic { span: span.clone(), message: message.into(), help: None, notes: Vec::new() }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn with_note(mut self, span: &Span, note: impl Into<String>) -> Diagnostic {
        self.notes.push((span.clone(), note.into()));
        self
    }

    /// Render with source snippets, as the CLI prints it.
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut out = format!("{}: error: {}\n", self.span, self.message);
        snippet(&mut out, sources, &self.span);
        if let Some(help) = &self.help {
            out.push_str(&format!("  = help: {help}\n"));
        }
        for (span, note) in &self.notes {
            if span.is_file() {
                out.push_str(&format!("  = note: {note} ({span})\n"));
            } else {
                out.push_str(&format!("  = note: {note}\n"));
            }
        }
        out
    }
}

fn snippet(out: &mut String, sources: &SourceMap, span: &Span) {
    let Some(line) = sources.line(span) else { return };
    let num = span.line.to_string();
    let pad = " ".repeat(num.len());
    let caret_pad: String =
        line.chars().take(span.col.saturating_sub(1) as usize).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
    out.push_str(&format!("{pad} |\n{num} | {line}\n{pad} | {caret_pad}^\n"));
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.span, self.message)?;
        if let Some(help) = &self.help {
            write!(f, " ({help})")?;
        }
        Ok(())
    }
}

/// Every diagnostic found while loading, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new() -> Diagnostics {
        Diagnostics::default()
    }

    pub fn push(&mut self, d: Diagnostic) {
        if !self.items.contains(&d) {
            self.items.push(d);
        }
    }

    pub fn error(&mut self, span: &Span, message: impl Into<String>) {
        self.push(Diagnostic::new(span, message));
    }

    pub fn extend(&mut self, other: Diagnostics) {
        for d in other.items {
            self.push(d);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Sorted by file and position, as users read them.
    pub fn sorted(mut self) -> Diagnostics {
        self.items
            .sort_by(|a, b| (&a.span.file, a.span.line, a.span.col).cmp(&(&b.span.file, b.span.line, b.span.col)));
        self
    }

    pub fn render(&self, sources: &SourceMap) -> String {
        self.items.iter().map(|d| d.render(sources)).collect::<Vec<_>>().join("\n")
    }
}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The closest candidate to a misspelt name, if one is close enough to suggest.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (c, strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase())))
        .filter(|(c, d)| *d <= 2.max(c.len() / 4) && *d < c.len().max(lower.len()))
        .min_by_key(|(_, d)| *d)
        .map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let keys = ["label", "timeout", "retries", "verify"];
        assert_eq!(did_you_mean("lable", keys), Some("label"));
        assert_eq!(did_you_mean("timout", keys), Some("timeout"));
        assert_eq!(did_you_mean("Retries", keys), Some("retries"));
        assert_eq!(did_you_mean("banana", keys), None);
        assert_eq!(did_you_mean("x", ["y"]), None);
    }

    #[test]
    fn renders_snippet_with_caret() {
        let mut sources = SourceMap::new();
        let f = sources.add("s.yaml", "steps:\n  - lable: x\n");
        let d = Diagnostic::new(&Span::new(&f, 2, 5), "unknown key 'lable'").with_help("did you mean 'label'?");
        let r = d.render(&sources);
        assert!(r.starts_with("s.yaml:2:5: error: unknown key 'lable'\n"), "{r}");
        assert!(r.contains("2 |   - lable: x\n  |     ^\n"), "{r}");
        assert!(r.contains("help: did you mean 'label'?"), "{r}");
    }
}
