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
    /// A substring read with up to `max_distance` edits (insertions, deletions,
    /// substitutions of one character; Levenshtein distance): OCR misreads
    /// single characters (`l` for `I`, `0` for `O`). Whitespace is normalised
    /// as for [`TextQuery::Contains`]; the closest match wins.
    Fuzzy { text: String, case_sensitive: bool, max_distance: u32 },
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

    /// A substring with up to `max_distance` edits (0 = exact).
    pub fn fuzzy(text: impl Into<String>, case_sensitive: bool, max_distance: u32) -> TextQuery {
        let text = text.into();
        if max_distance == 0 {
            return TextQuery::Contains { text, case_sensitive };
        }
        TextQuery::Fuzzy { text, case_sensitive, max_distance }
    }

    /// The query ready for matching.
    pub(crate) fn compile(&self) -> Result<Matcher, QueryError> {
        match self {
            TextQuery::Fuzzy { text, case_sensitive, max_distance } => {
                let norm = text.split_whitespace().collect::<Vec<_>>().join(" ");
                if norm.is_empty() {
                    return Err(QueryError::Empty);
                }
                let fold = |c: char| if *case_sensitive { c } else { c.to_lowercase().next().unwrap_or(c) };
                Ok(Matcher::Fuzzy {
                    pattern: norm.chars().map(fold).collect(),
                    case_sensitive: *case_sensitive,
                    max: *max_distance,
                })
            }
            other => Ok(Matcher::Regex(other.as_regex()?)),
        }
    }

    /// The query as one regex (not for fuzzy queries).
    fn as_regex(&self) -> Result<Regex, QueryError> {
        match self {
            TextQuery::Fuzzy { .. } => Err(QueryError::Empty),
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
            TextQuery::Fuzzy { text, case_sensitive, max_distance } => write!(
                f,
                "{text:?} (within {max_distance} edit{}{})",
                if *max_distance == 1 { "" } else { "s" },
                if *case_sensitive { "" } else { ", any case" }
            ),
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
    /// Edits between the query and the matched text (0 for exact and regex matches).
    pub distance: u32,
}

/// A compiled query.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    Regex(Regex),
    Fuzzy { pattern: Vec<char>, case_sensitive: bool, max: u32 },
}

impl Matcher {
    /// The first (regex) or closest (fuzzy) match in `text`: byte range and distance.
    fn find(&self, text: &str) -> Option<(usize, usize, u32)> {
        match self {
            Matcher::Regex(re) => re.find(text).map(|m| (m.start(), m.end(), 0)),
            Matcher::Fuzzy { pattern, case_sensitive, max } => fuzzy_find(pattern, *case_sensitive, *max, text),
        }
    }
}

/// Approximate substring search (Sellers' dynamic programme): the substring of
/// `text` with the fewest edits to `pattern`, if at most `max`. Runs of
/// whitespace in `text` count as one space. Ties go to the earliest end, then
/// the longest match.
fn fuzzy_find(pattern: &[char], case_sensitive: bool, max: u32, text: &str) -> Option<(usize, usize, u32)> {
    // Normalised characters with their byte ranges in `text`.
    let mut chars: Vec<(char, usize, usize)> = Vec::new();
    let mut last_space = false;
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        if c.is_whitespace() {
            if !last_space && !chars.is_empty() {
                chars.push((' ', i, end));
            } else if let Some(l) = chars.last_mut().filter(|l| l.0 == ' ') {
                l.2 = end;
            }
            last_space = true;
            continue;
        }
        last_space = false;
        let c = if case_sensitive { c } else { c.to_lowercase().next().unwrap_or(c) };
        chars.push((c, i, end));
    }
    let m = pattern.len();
    if m == 0 {
        return None;
    }
    // prev[i] / cur[i]: distance of pattern[..i] ending at the current text
    // position, with the text index where that alignment starts.
    let mut prev: Vec<(u32, usize)> = (0..=m).map(|i| (i as u32, 0)).collect();
    let mut cur = prev.clone();
    let mut best: Option<(u32, usize, usize)> = None;
    for (j, &(c, _, _)) in chars.iter().enumerate() {
        cur[0] = (0, j + 1);
        for i in 1..=m {
            let sub = (prev[i - 1].0 + u32::from(pattern[i - 1] != c), prev[i - 1].1);
            let del = (cur[i - 1].0 + 1, cur[i - 1].1);
            let ins = (prev[i].0 + 1, prev[i].1);
            // prefer the alignment that starts earlier (longer match) on ties
            cur[i] = [sub, del, ins].into_iter().min_by_key(|&(d, s)| (d, s)).unwrap_or(sub);
        }
        let (d, start) = cur[m];
        if d <= max && best.is_none_or(|(bd, _, _)| d < bd) && start <= j {
            best = Some((d, start, j));
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    let (d, start, end) = best?;
    // Trim a space at either end of the match.
    let (mut s, mut e) = (start, end);
    while s < e && chars[s].0 == ' ' {
        s += 1;
    }
    while e > s && chars[e].0 == ' ' {
        e -= 1;
    }
    Some((chars[s].1, chars[e].2, d))
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

/// Find the first match of `matcher` (for fuzzy queries: the closest line),
/// line by line, then across lines.
pub(crate) fn find_in_lines(lines: &[OcrLine], matcher: &Matcher) -> Option<TextMatch> {
    let mut best: Option<TextMatch> = None;
    for (index, line) in lines.iter().enumerate() {
        let mut layout = Layout::new();
        for w in &line.words {
            layout.push_word(w, " ");
        }
        if let Some((s, e, d)) = matcher.find(&layout.text)
            && best.as_ref().is_none_or(|b| d < b.distance)
        {
            best = Some(TextMatch {
                text: layout.text[s..e].to_string(),
                bbox: layout.bbox(s, e),
                line: Some(index),
                distance: d,
            });
            if d == 0 {
                break;
            }
        }
    }
    if best.is_some() {
        return best;
    }
    let mut layout = Layout::new();
    for line in lines {
        layout.push_line(line);
    }
    let (s, e, d) = matcher.find(&layout.text)?;
    Some(TextMatch { text: layout.text[s..e].to_string(), bbox: layout.bbox(s, e), line: None, distance: d })
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

    #[test]
    fn fuzzy_matches_within_the_edit_budget() {
        let lines = vec![
            line(vec![word("Pick", 0, 0), word("an", 50, 0), word("action:", 80, 0)]),
            line(vec![word("SM0KE-TEST", 0, 20), word("Iine", 110, 20), word("42:", 160, 20), word("ready", 200, 20)]),
        ];
        let exact = TextQuery::contains("SMOKE-TEST line").compile().unwrap();
        assert!(find_in_lines(&lines, &exact).is_none());
        let two = TextQuery::fuzzy("SMOKE-TEST line", true, 2).compile().unwrap();
        let m = find_in_lines(&lines, &two).unwrap();
        assert_eq!((m.text.as_str(), m.distance, m.line), ("SM0KE-TEST Iine", 2, Some(1)));
        assert_eq!(m.bbox, Rect::new(0, 20, 150, 12));
        assert!(find_in_lines(&lines, &TextQuery::fuzzy("SMOKE-TEST line", true, 1).compile().unwrap()).is_none());
        // Case folding counts no edits; the closest line wins.
        let m = find_in_lines(&lines, &TextQuery::fuzzy("PICK AN ACTlON", false, 1).compile().unwrap()).unwrap();
        assert_eq!((m.text.as_str(), m.distance), ("Pick an action", 1));
        assert_eq!(fuzzy_find(&['a', 'b', 'c'], true, 0, "xx abc"), Some((3, 6, 0)));
        assert_eq!(fuzzy_find(&['a', 'b', 'c'], true, 1, "ab"), Some((0, 2, 1)));
        assert_eq!(fuzzy_find(&['a', 'b'], true, 0, "a  b"), None);
        assert_eq!(fuzzy_find(&['a', ' ', 'b'], true, 0, "a \t b"), Some((0, 5, 0)));
        assert!(matches!(TextQuery::fuzzy(" ", true, 1).compile(), Err(QueryError::Empty)));
    }
}
