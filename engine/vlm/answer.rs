//! Reading model answers: reasoning models think first (strip everything up
//! to the last `</think>`; the answer may sit in `reasoning_content` when
//! `content` is empty), yes/no judgements, and click points from grounding
//! models (a point or a box, on a 0-1000 grid or in pixels, in the formats
//! those models write).

use crate::geometry::{Point, Rect};

/// The text that counts as the answer.
pub fn answer_text(content: Option<&str>, reasoning: Option<&str>) -> String {
    let content = content.map(strip_thinking).unwrap_or_default();
    if !content.trim().is_empty() {
        return content.trim().to_string();
    }
    // some servers put everything into reasoning_content: its last part is the answer
    reasoning.map(strip_thinking).unwrap_or_default().trim().to_string()
}

/// Everything after the last `</think>` (all of it when there is none; an
/// unclosed `<think>` means the model never got to an answer).
pub fn strip_thinking(s: &str) -> String {
    if let Some(i) = s.rfind("</think>") {
        return s[i + "</think>".len()..].to_string();
    }
    if let Some(i) = s.find("<think>") {
        return s[..i].to_string();
    }
    s.to_string()
}

/// A yes/no judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Yes,
    No,
    /// Neither: counts as "no" and is recorded as such.
    Unparseable,
}

impl Verdict {
    pub fn is_yes(self) -> bool {
        self == Verdict::Yes
    }
}

/// The rule: the first word of the answer (ignoring markdown and punctuation)
/// is yes or no; else a JSON `"answer"` field; else exactly one of the words
/// yes/no occurs on its own. Anything else is unparseable.
pub fn yes_no(answer: &str) -> Verdict {
    let words: Vec<String> = answer
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
        .collect();
    match words.first().map(String::as_str) {
        Some("yes") | Some("true") => return Verdict::Yes,
        Some("no") | Some("false") => return Verdict::No,
        _ => {}
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(answer.trim().trim_matches('`').trim_start_matches("json"))
    {
        for key in ["answer", "result", "verdict"] {
            match v.get(key) {
                Some(serde_json::Value::Bool(b)) => return if *b { Verdict::Yes } else { Verdict::No },
                Some(serde_json::Value::String(s)) => return yes_no(s),
                _ => {}
            }
        }
    }
    let yes = words.iter().any(|w| w == "yes");
    let no = words.iter().any(|w| w == "no");
    match (yes, no) {
        (true, false) => Verdict::Yes,
        (false, true) => Verdict::No,
        _ => Verdict::Unparseable,
    }
}

/// How a grounding model gives coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Grid {
    /// 0..1000 on both axes, whatever the screen size (most grounding models).
    Thousand,
    /// Screen pixels.
    Pixels,
    /// Decide per answer: pixels when a value exceeds 1000, else the grid.
    Auto,
}

/// A location a model pointed at, in screen pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Located {
    pub point: Point,
    /// The box, when the model gave one.
    pub bbox: Option<Rect>,
}

/// Why a location answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    #[error("no coordinates in the answer")]
    NoCoordinates,
    #[error("the answer points off the {width}x{height} screen ({x}, {y})")]
    OffScreen { x: i64, y: i64, width: u32, height: u32 },
}

/// Numbers in the answer, in order (integers and decimals, signed).
fn numbers(s: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<f64>| {
        if let Ok(v) = cur.trim_end_matches('.').parse::<f64>() {
            out.push(v);
        }
        cur.clear();
    };
    for c in s.chars() {
        if c.is_ascii_digit() || (c == '.' && !cur.is_empty()) || (c == '-' && cur.is_empty()) {
            cur.push(c);
        } else {
            flush(&mut cur, &mut out);
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// Parse a point or box from a grounding answer. Understands `(x, y)`,
/// `[x1, y1, x2, y2]`, `{"x": .., "y": ..}`, `{"bbox": [...]}`,
/// `<point>x y</point>`, `<|box_start|>(x1,y1),(x2,y2)<|box_end|>`,
/// `click(x=.., y=..)`, and normalised floats (0..1).
pub fn locate(answer: &str, grid: Grid, width: u32, height: u32) -> Result<Located, LocateError> {
    let text = strip_thinking(answer);
    // prefer the bracketed part that holds the coordinates
    let focus = ["<|box_start|>", "<point>", "<box>", "bbox", "click(", "point", "[", "("]
        .iter()
        .find_map(|m| text.find(m).map(|i| &text[i..]))
        .unwrap_or(&text);
    let mut n = numbers(focus);
    if n.len() < 2 {
        n = numbers(&text);
    }
    let (coords, bbox) = match n.len() {
        0 | 1 => return Err(LocateError::NoCoordinates),
        2 | 3 => ([n[0], n[1]], None),
        _ => ([(n[0] + n[2]) / 2.0, (n[1] + n[3]) / 2.0], Some([n[0], n[1], n[2], n[3]])),
    };
    let all: Vec<f64> = bbox.map(|b| b.to_vec()).unwrap_or_else(|| coords.to_vec());
    let normalised = all.iter().all(|v| (0.0..=1.0).contains(v)) && all.iter().any(|v| v.fract() != 0.0);
    let scale = |v: f64, size: u32| -> f64 {
        if normalised {
            return v * size as f64;
        }
        match grid {
            Grid::Pixels => v,
            Grid::Thousand => v * size as f64 / 1000.0,
            Grid::Auto => {
                if all.iter().any(|x| *x > 1000.0) {
                    v
                } else {
                    v * size as f64 / 1000.0
                }
            }
        }
    };
    let x = scale(coords[0], width).round() as i64;
    let y = scale(coords[1], height).round() as i64;
    if x < 0 || y < 0 || x >= width as i64 || y >= height as i64 {
        return Err(LocateError::OffScreen { x, y, width, height });
    }
    let bbox = bbox.map(|b| {
        let (x1, y1) = (scale(b[0], width).max(0.0) as u32, scale(b[1], height).max(0.0) as u32);
        let (x2, y2) = (scale(b[2], width).max(0.0) as u32, scale(b[3], height).max(0.0) as u32);
        Rect::new(x1.min(x2), y1.min(y2), x1.abs_diff(x2).max(1), y1.abs_diff(y2).max(1))
    });
    Ok(Located { point: Point::new(x as u32, y as u32), bbox })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinking_is_stripped_and_reasoning_is_a_fallback() {
        assert_eq!(answer_text(Some("<think>hmm, no wait</think>\nYes."), None), "Yes.");
        assert_eq!(answer_text(Some("<think>a</think>x<think>b</think> No"), None), "No");
        assert_eq!(answer_text(Some(""), Some("let me look... </think> yes")), "yes");
        assert_eq!(answer_text(None, Some("Yes")), "Yes");
        assert_eq!(answer_text(Some("<think>never finished"), None), "");
    }

    #[test]
    fn yes_no_rule() {
        for (a, v) in [
            ("Yes", Verdict::Yes),
            ("**No**, the dialog is gone.", Verdict::No),
            ("yes.", Verdict::Yes),
            ("```json\n{\"answer\": \"yes\"}\n```", Verdict::Yes),
            ("{\"answer\": false}", Verdict::No),
            ("The login form is visible, so the answer is yes", Verdict::Yes),
            ("Maybe. Yes and no.", Verdict::Unparseable),
            ("I cannot tell", Verdict::Unparseable),
            ("", Verdict::Unparseable),
            ("Nothing like that", Verdict::Unparseable),
        ] {
            assert_eq!(yes_no(a), v, "{a:?}");
        }
    }

    #[test]
    fn points_and_boxes_in_many_formats() {
        let (w, h) = (1280, 720);
        let p = |a: &str, g| locate(a, g, w, h).map(|l| (l.point.x, l.point.y));
        assert_eq!(p("(500, 500)", Grid::Thousand), Ok((640, 360)));
        assert_eq!(p("click(x=250, y=100)", Grid::Thousand), Ok((320, 72)));
        assert_eq!(p("<point>100 200</point>", Grid::Pixels), Ok((100, 200)));
        assert_eq!(p("{\"x\": 640, \"y\": 360}", Grid::Pixels), Ok((640, 360)));
        assert_eq!(p("<|box_start|>(100,100),(300,200)<|box_end|>", Grid::Thousand), Ok((256, 108)));
        assert_eq!(p("The field is at [400, 300, 600, 350].", Grid::Thousand), Ok((640, 234)));
        assert_eq!(p("(0.5, 0.25)", Grid::Thousand), Ok((640, 180)));
        // auto: values above 1000 must be pixels
        assert_eq!(p("(1200, 700)", Grid::Auto), Ok((1200, 700)));
        assert_eq!(p("(500, 500)", Grid::Auto), Ok((640, 360)));
        let b = locate("[400, 300, 600, 350]", Grid::Thousand, w, h).unwrap().bbox.unwrap();
        assert_eq!(b, Rect::new(512, 216, 256, 36));
        assert_eq!(
            p("(1500, 300)", Grid::Pixels),
            Err(LocateError::OffScreen { x: 1500, y: 300, width: w, height: h })
        );
        assert_eq!(p("I don't see it", Grid::Thousand), Err(LocateError::NoCoordinates));
        assert_eq!(p("<think>maybe (1,1)</think> (900, 100)", Grid::Thousand), Ok((1152, 72)));
    }
}
