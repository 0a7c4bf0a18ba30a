//! Source files and positions: every value read from a scenario, routine or
//! inventory file remembers where it came from, so errors can say
//! `file:line:column`.

use std::collections::HashMap;
use std::sync::Arc;

/// A position in a source file (1-based line and column, columns in characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: Arc<str>,
    pub line: u32,
    pub col: u32,
}

impl Span {
    pub fn new(file: &Arc<str>, line: u32, col: u32) -> Span {
        Span { file: file.clone(), line, col }
    }

    /// A span for values that come from outside any file (e.g. `--var` on the command line).
    pub fn command_line(what: &str) -> Span {
        Span { file: Arc::from(what), line: 0, col: 0 }
    }

    /// True when the span points into a real file.
    pub fn is_file(&self) -> bool {
        self.line > 0
    }

    /// The same line, `n` characters further right.
    pub fn shifted(&self, n: u32) -> Span {
        Span { file: self.file.clone(), line: self.line, col: self.col + n }
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_file() { write!(f, "{}:{}:{}", self.file, self.line, self.col) } else { write!(f, "{}", self.file) }
    }
}

/// The text of every file read so far, for error snippets.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    files: HashMap<Arc<str>, Arc<str>>,
}

impl SourceMap {
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    /// Register a file's text; returns the interned file name used in spans.
    pub fn add(&mut self, name: &str, text: &str) -> Arc<str> {
        let key: Arc<str> = Arc::from(name);
        self.files.insert(key.clone(), Arc::from(text));
        key
    }

    pub fn text(&self, file: &str) -> Option<&str> {
        self.files.get(file).map(|t| &**t)
    }

    /// The source line a span points at, if known.
    pub fn line(&self, span: &Span) -> Option<&str> {
        if !span.is_file() {
            return None;
        }
        self.text(&span.file)?.lines().nth(span.line as usize - 1)
    }
}

/// Convert a byte offset in `text` into a 1-based (line, column in characters).
pub fn line_col(text: &[u8], offset: usize) -> (u32, u32) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() as u32 + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let col = String::from_utf8_lossy(&before[line_start..]).chars().count() as u32 + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let t = "ab\ncä d\n".as_bytes();
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        // 'ä' is two bytes; the space after it is column 3
        assert_eq!(line_col(t, 6), (2, 3));
    }
}
