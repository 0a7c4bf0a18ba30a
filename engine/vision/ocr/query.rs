//! What text to look for in OCR output, and where the match lies on screen.
//!
//! A query is tried against each visual line first (so the box of a match is
//! the box of a few words on one line), then against the full text (lines joined
//! by newlines) for phrases that wrap. The box of a match is the union of the
//! boxes of the words that overlap the matched characters.

use regex::Regex;

use crate::geometry::Rect;
use crate::vision::ocr::tsv::{OcrLine, OcrWord};

/// Text to look for.
#[derive(Debug, Clone)]
pub enum TextQuery {
    /// A substring; runs of whitespace in the query match any run of whitespace
    /// in the text (OCR output and screens disagree about spacing).
    Contains { text: String, case_sensitive: bool },
    /// A regular expression over each line, then over the full text.
    Regex(Regex),
}

/// Why a query could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueryError {
    #[error("empty text query")]
    Empty,
    #[error("invalid regular expression: {0}")]
    Regex(#[from] regex::Error),
}

impl TextQuery {
    /// Case-sensitive substring.
    pub fn contains(text: impl Into<String>) -> TextQuery {
        TextQuery::Contains { text: text.into(), case_sensitive: true }
    }

    /// Case-insensitive substring.
    pub fn contains_any_case(text: impl Into<String>) -> TextQuery {
        TextQuery::Contains { text: text.into(), case_sensitive: false }
    }

    /// A regular expression (Rust `regex` syntax).
    pub fn regex(pattern: &str) -> Result<TextQuery, QueryError> {
        Ok(TextQuery::Regex(Regex::new(pattern)?))
    }

    /// The query as one regex.
    pub(crate) fn compile(&self) -> Result<Regex, QueryError> {
        match self {
            TextQuery::Regex(re) => Ok(re.clone()),
            TextQuery::Contains { text, case_sensitive } => {
                let parts: Vec<String> = text.split_whitespace().map(regex::escape).collect();
                if parts.is_empty() {
                    return Err(QueryError::Empty);
                }
                let flags = if *case_sensitive { "" } else { "(?i)" };
                Ok(Regex::new(&format!("{flags}{}", parts.join(r"\s+")))?)
            }
        }
    }
}

impl std::fmt::Display for TextQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextQuery::Contains { text, case_sensitive: true } => write!(f, "{text:?}"),
            TextQuery::Contains { text, case_sensitive: false } => write!(f, "{text:?} (any case)"),
            TextQuery::Regex(re) => write!(f, "/{}/", re.as_str()),
        }
    }
}

/// Where a query matched.
#[derive(Debug, Clone, PartialEq)]
pub struct TextMatch {
    /// The matched characters.
    pub text: String,
    /// Union of the boxes of the words the match touches, in frame coordinates.
    pub bbox: Rect,
    /// Index of the line in [`crate::vision::ocr::OcrText::lines`], or `None`
    /// when the match spans lines.
    pub line: Option<usize>,
}

/// Text with the byte range of every word in it.
struct Layout<'a> {
    text: String,
    spans: Vec<(usize, usize, &'a OcrWord)>,
}

impl<'a> Layout<'a> {
    fn new() -> Self {
        Layout { text: String::new(), spans: Vec::new() }
    }

    fn push_word(&mut self, word: &'a OcrWord, separator: &str) {
        if !self.spans.is_empty() {
            self.text.push_str(separator);
        }
        let start = self.text.len();
        self.text.push_str(&word.text);
        self.spans.push((start, self.text.len(), word));
    }

    fn push_line(&mut self, line: &'a OcrLine) {
        for (i, w) in line.words.iter().enumerate() {
            self.push_word(w, if i == 0 { "\n" } else { " " });
        }
    }

    /// The box of the words overlapping bytes `start..end` (the nearest word for
    /// an empty match).
    fn bbox(&self, start: usize, end: usize) -> Rect {
        let touched = self
            .spans
            .iter()
            .filter(|(s, e, _)| *s < end.max(start + 1) && *e > start)
            .fold(None, |acc: Option<Rect>, (_, _, w)| Some(acc.map_or(w.bbox, |a| a.union(&w.bbox))));
        touched
            .or_else(|| self.spans.iter().find(|(s, _, _)| *s >= start).map(|(_, _, w)| w.bbox))
            .or_else(|| self.spans.last().map(|(_, _, w)| w.bbox))
            .unwrap_or(Rect::new(0, 0, 0, 0))
    }
}

/// Find the first match of `re`: line by line, then across lines.
pub(crate) fn find_in_lines(lines: &[OcrLine], re: &Regex) -> Option<TextMatch> {
    for (index, line) in lines.iter().enumerate() {
        let mut layout = Layout::new();
        for w in &line.words {
            layout.push_word(w, " ");
        }
        if let Some(m) = re.find(&layout.text) {
            return Some(TextMatch {
                text: m.as_str().to_string(),
                bbox: layout.bbox(m.start(), m.end()),
                line: Some(index),
            });
        }
    }
    let mut layout = Layout::new();
    for line in lines {
        layout.push_line(line);
    }
    let m = re.find(&layout.text)?;
    Some(TextMatch { text: m.as_str().to_string(), bbox: layout.bbox(m.start(), m.end()), line: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str, x: u32, y: u32) -> OcrWord {
        OcrWord { text: text.into(), confidence: 90.0, bbox: Rect::new(x, y, 10 * text.len() as u32, 12) }
    }

    fn line(words: Vec<OcrWord>) -> OcrLine {
        let bbox = words.iter().fold(Rect::new(0, 0, 0, 0), |a, w| a.union(&w.bbox));
        let text = words.iter().map(|w| w.text.clone()).collect::<Vec<_>>().join(" ");
        OcrLine { text, bbox, words }
    }

    #[test]
    fn substring_box_covers_the_matched_words_only() {
        let lines = vec![
            line(vec![word("Pick", 0, 0), word("an", 50, 0), word("action:", 80, 0)]),
            line(vec![word("SMOKE-TEST", 0, 20), word("Line", 110, 20), word("42:", 160, 20), word("ready", 200, 20)]),
        ];
        let re = TextQuery::contains_any_case("line  42").compile().unwrap();
        let m = find_in_lines(&lines, &re).unwrap();
        assert_eq!(m.text, "Line 42");
        assert_eq!(m.line, Some(1));
        assert_eq!(m.bbox, Rect::new(110, 20, 80, 12));
        assert!(find_in_lines(&lines, &TextQuery::contains("line 42").compile().unwrap()).is_none());
        // Across lines.
        let re = TextQuery::contains("action: SMOKE").compile().unwrap();
        let m = find_in_lines(&lines, &re).unwrap();
        assert_eq!(m.line, None);
        assert_eq!(m.bbox, Rect::new(0, 0, 150, 32));
        // Regex.
        let re = TextQuery::regex(r"\d+:").unwrap().compile().unwrap();
        assert_eq!(find_in_lines(&lines, &re).unwrap().bbox, Rect::new(160, 20, 30, 12));
        assert!(matches!(TextQuery::contains("  ").compile(), Err(QueryError::Empty)));
        assert!(TextQuery::regex("(").is_err());
    }
}
