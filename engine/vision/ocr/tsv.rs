//! tesseract's TSV output: words with boxes, grouped into visual lines.
//!
//! Each TSV row is `level page block par line word left top width height conf
//! text`; rows of level 5 are words. Boxes come in the coordinates of the image
//! tesseract saw and are mapped back to frame coordinates here (undoing the
//! upscale, adding the region offset).
//!
//! With `--psm 11` (sparse text) tesseract often splits one visual line into
//! several blocks (`SMOKE-TEST line` | `42: ready`). Lines are therefore built in
//! two steps: words grouped by (block, paragraph, line), then groups that share a
//! row (vertical overlap of at least half the smaller height) and sit close
//! together (a gap under 2.5 line heights) merged, words ordered left to right.

use crate::geometry::Rect;

/// One word read by tesseract.
#[derive(Debug, Clone, PartialEq)]
pub struct OcrWord {
    pub text: String,
    /// tesseract's confidence, 0-100.
    pub confidence: f32,
    /// Where the word is, in frame coordinates.
    pub bbox: Rect,
}

/// Words on one visual line, left to right.
#[derive(Debug, Clone, PartialEq)]
pub struct OcrLine {
    /// The words joined by single spaces.
    pub text: String,
    /// Union of the word boxes.
    pub bbox: Rect,
    pub words: Vec<OcrWord>,
}

/// A word as parsed, before grouping.
#[derive(Debug, Clone)]
pub(crate) struct RawWord {
    pub group: LineKey,
    pub word: OcrWord,
}

/// How the image tesseract saw maps to the frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    /// The region's rectangle in the frame.
    pub region: Rect,
    /// The factor the region was enlarged by.
    pub scale: u32,
}

impl Placement {
    /// Map a box of the processed image to the frame, clipped to the region.
    fn frame_box(self, left: i64, top: i64, width: i64, height: i64) -> Option<Rect> {
        let s = self.scale.max(1) as i64;
        let (l, t) = (left.max(0), top.max(0));
        let (r, b) = ((left + width).max(l), (top + height).max(t));
        // floor for the start, ceiling for the end
        let (x0, y0) = (l / s, t / s);
        let (x1, y1) = ((r + s - 1) / s, (b + s - 1) / s);
        let reg = self.region;
        let x0 = (x0 as u64).min(reg.w as u64) as u32;
        let y0 = (y0 as u64).min(reg.h as u64) as u32;
        let x1 = (x1 as u64).min(reg.w as u64) as u32;
        let y1 = (y1 as u64).min(reg.h as u64) as u32;
        Some(Rect::new(reg.x + x0, reg.y + y0, x1.checked_sub(x0)?, y1.checked_sub(y0)?))
    }
}

/// Parse tesseract TSV. Malformed rows are skipped (and counted in the log).
pub(crate) fn parse_words(tsv: &str, placement: Placement) -> Vec<RawWord> {
    let mut words = Vec::new();
    let mut skipped = 0usize;
    for row in tsv.lines().skip_while(|l| l.starts_with("level")) {
        let fields: Vec<&str> = row.splitn(12, '\t').collect();
        if fields.len() < 12 {
            if !row.trim().is_empty() {
                skipped += 1;
            }
            continue;
        }
        let num = |i: usize| fields[i].trim().parse::<i64>().ok();
        if num(0) != Some(5) {
            continue;
        }
        let text = fields[11].trim();
        if text.is_empty() {
            continue;
        }
        let (Some(block), Some(par), Some(line), Some(page)) = (num(2), num(3), num(4), num(1)) else {
            skipped += 1;
            continue;
        };
        let (Some(left), Some(top), Some(width), Some(height)) = (num(6), num(7), num(8), num(9)) else {
            skipped += 1;
            continue;
        };
        let confidence = fields[10].trim().parse::<f32>().unwrap_or(-1.0);
        let Some(bbox) = placement.frame_box(left, top, width, height) else {
            skipped += 1;
            continue;
        };
        let g = |v: i64| v.clamp(0, u32::MAX as i64) as u32;
        words.push(RawWord {
            group: (g(page), g(block), g(par), g(line)),
            word: OcrWord { text: text.to_string(), confidence, bbox },
        });
    }
    if skipped > 0 {
        tracing::debug!(skipped, "skipped malformed tesseract TSV rows");
    }
    words
}

/// tesseract's (page, block, paragraph, line) of a word.
type LineKey = (u32, u32, u32, u32);

/// Group words into visual lines, top to bottom.
pub(crate) fn build_lines(words: Vec<RawWord>) -> Vec<OcrLine> {
    // Step 1: tesseract's own lines, in reading order of first appearance.
    let mut groups: Vec<(LineKey, Vec<OcrWord>)> = Vec::new();
    for w in words {
        match groups.iter_mut().find(|(g, _)| *g == w.group) {
            Some((_, list)) => list.push(w.word),
            None => groups.push((w.group, vec![w.word])),
        }
    }
    let mut pieces: Vec<(Rect, Vec<OcrWord>)> = groups.into_iter().map(|(_, ws)| (union_box(&ws), ws)).collect();
    pieces.sort_by_key(|(b, _)| (b.y, b.x));
    // Step 2: merge pieces on the same row that are close together.
    let mut lines: Vec<(Rect, Vec<OcrWord>)> = Vec::new();
    for (bbox, ws) in pieces {
        let target = lines.iter_mut().find(|(lb, _)| same_row(lb, &bbox) && close(lb, &bbox));
        match target {
            Some((lb, lws)) => {
                *lb = lb.union(&bbox);
                lws.extend(ws);
            }
            None => lines.push((bbox, ws)),
        }
    }
    let mut out: Vec<OcrLine> = lines
        .into_iter()
        .map(|(bbox, mut words)| {
            words.sort_by_key(|w| w.bbox.x);
            let text = words.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" ");
            OcrLine { text, bbox, words }
        })
        .collect();
    out.sort_by_key(|l| (l.bbox.y, l.bbox.x));
    out
}

fn union_box(words: &[OcrWord]) -> Rect {
    words.iter().fold(Rect::new(0, 0, 0, 0), |acc, w| acc.union(&w.bbox))
}

fn same_row(a: &Rect, b: &Rect) -> bool {
    let overlap = a.bottom().min(b.bottom()).saturating_sub(a.y.max(b.y));
    let smaller = a.h.min(b.h).max(1);
    overlap * 2 >= smaller
}

fn close(a: &Rect, b: &Rect) -> bool {
    let gap = if b.x >= a.right() {
        b.x - a.right()
    } else if a.x >= b.right() {
        a.x - b.right()
    } else {
        0
    };
    let height = a.h.max(b.h).max(1);
    gap * 2 <= height * 5
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext
1\t1\t0\t0\t0\t0\t0\t0\t640\t200\t-1\t
5\t1\t5\t1\t1\t1\t88\t178\t218\t28\t91.78\tSMOKE-TEST
5\t1\t5\t1\t1\t2\t330\t176\t84\t30\t83.39\tline
5\t1\t6\t1\t1\t1\t440\t178\t56\t28\t96.66\t42:
5\t1\t6\t1\t1\t2\t532\t176\t102\t38\t96.34\tready
5\t1\t7\t1\t1\t1\t40\t20\t30\t20\t90.0\tFile
5\t1\t7\t1\t1\t2\t-3\tbad\t1\t1\t9\tbroken
5\t1\t8\t1\t1\t1\t500\t20\t30\t20\t90.0\tHelp
";

    #[test]
    fn words_map_to_frame_and_lines_merge_blocks() {
        let placement = Placement { region: Rect::new(100, 50, 400, 150), scale: 2 };
        let words = parse_words(SAMPLE, placement);
        assert_eq!(words.len(), 6, "the malformed row is skipped");
        assert_eq!(words[0].word.bbox, Rect::new(144, 139, 109, 14));
        let lines = build_lines(words);
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        // "File" and "Help" are far apart on one row: two lines.
        assert_eq!(texts, vec!["File", "Help", "SMOKE-TEST line 42: ready"]);
        assert_eq!(lines[2].bbox, Rect::new(144, 138, 273, 19));
    }
}
