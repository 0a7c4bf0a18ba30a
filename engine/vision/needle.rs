//! Needles: a reference screenshot with a JSON sidecar saying which parts of it
//! must be on screen, which parts to ignore, which text must be read there, and
//! where to click.
//!
//! A needle is two files side by side, `NAME.png` and `NAME.json`:
//!
//! ```json
//! {
//!   "schema": "smoke.needle/1",
//!   "areas": [
//!     {"type": "match", "rect": [412, 300, 220, 40], "threshold": 0.95, "margin": 50},
//!     {"type": "exclude", "rect": [560, 310, 60, 20]},
//!     {"type": "ocr", "rect": [420, 350, 200, 24], "text": "Delete file?"}
//!   ],
//!   "points": [{"id": "ok", "at": [470, 410]}],
//!   "tags": ["dialog"]
//! }
//! ```
//!
//! Rectangles and points are pixels of the PNG (usually a full screenshot).
//!
//! * `match` areas are cut from the PNG and searched on the screen with ZNCC plus
//!   the pixel check of [`crate::vision::template`] (so a colour change or one
//!   changed character fails). The FIRST match area is searched within `margin`
//!   pixels around where it sits in the PNG, and, when it is not there, on the
//!   whole screen; where it is found gives the needle's displacement. Every
//!   other match area must then be found within its own margin around its
//!   displaced position: the areas move together, as a window's parts do.
//!   All match areas must pass.
//! * `exclude` areas are ignored inside match areas (clocks, user names).
//! * `ocr` areas must read `text` (case-insensitive, whitespace-normalised,
//!   `max_distance` edits allowed, or a `threshold` of similarity) at their
//!   displaced position, widened by their `margin`; they are judged by
//!   [`crate::vision::ocr`] after the image areas passed.
//! * `points` are click points; `click: {needle: NAME, point: ID}` clicks the
//!   displaced point. Without points the centre of the first match area is the
//!   click point. Several points need ids.
//!
//! Defaults: `threshold` 0.95 (ZNCC), `margin` 50 px, `max_block_difference` 24.
//! [`import_openqa`] converts openQA needles (`area` with `xpos`, `ypos`,
//! `width`, `height`, `type`, `match` percentage, `margin`, `click_point`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::frame::Frame;
use crate::geometry::{Point, Rect};
use crate::vision::gray::Mask;
use crate::vision::template::{self, BLOCK_DIFFERENCE_LIMIT, MatchOptions, TemplateError, TemplateMatch};

/// The sidecar's schema tag.
pub const SCHEMA: &str = "smoke.needle/1";
/// Default ZNCC threshold of a match area.
pub const DEFAULT_THRESHOLD: f64 = 0.95;
/// Default search margin around an area's expected place, in pixels.
pub const DEFAULT_MARGIN: u32 = 50;

/// Why a needle could not be loaded or searched.
#[derive(Debug, thiserror::Error)]
pub enum NeedleError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Json { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("cannot load the needle image {path}: {message}")]
    Image { path: String, message: String },
    #[error("{path}: match area {index}: {source}")]
    Area { path: String, index: usize, source: TemplateError },
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
}

/// What an area is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AreaKind {
    #[default]
    Match,
    Exclude,
    Ocr,
}

/// One area of the sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreaSpec {
    #[serde(rename = "type", default)]
    pub kind: AreaKind,
    /// `[x, y, width, height]` in PNG pixels.
    pub rect: [u32; 4],
    /// Match: minimum ZNCC (default 0.95). Ocr: minimum similarity of the text
    /// read, 1 - edits / length (used when `max_distance` is not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Match: how far from its expected place the area may be found (default 50).
    /// Ocr: how far around its displaced place the text is read (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<u32>,
    /// Match: the largest mean RGB difference of any 4x4 block (default 24; 255 turns
    /// the pixel check off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_block_difference: Option<f64>,
    /// Ocr: the text that must be read there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Ocr: edits (insertions, deletions, substitutions) the reading may differ by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_distance: Option<u32>,
}

impl AreaSpec {
    pub fn rect(&self) -> Rect {
        Rect::new(self.rect[0], self.rect[1], self.rect[2], self.rect[3])
    }
}

/// A click point of the sidecar, in PNG pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub at: [u32; 2],
}

/// The JSON sidecar of a needle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeedleSpec {
    #[serde(default)]
    pub schema: Option<String>,
    pub areas: Vec<AreaSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<PointSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Where the needle came from (an imported file, a run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A needle loaded and prepared for searching.
#[derive(Debug, Clone)]
pub struct NeedleImage {
    pub name: String,
    /// The sidecar file.
    pub path: PathBuf,
    pub spec: NeedleSpec,
    pub image: Frame,
    /// One prepared template per match area, in file order, with its area index.
    templates: Vec<(usize, template::Needle)>,
}

impl NeedleImage {
    /// Load `NAME.json` and `NAME.png` (either path may be given).
    pub fn load(path: &Path) -> Result<NeedleImage, NeedleError> {
        let json = path.with_extension("json");
        let png = path.with_extension("png");
        let shown = json.display().to_string();
        let text =
            std::fs::read_to_string(&json).map_err(|source| NeedleError::Read { path: shown.clone(), source })?;
        let spec: NeedleSpec = serde_json::from_str(&text).map_err(|e| NeedleError::Json {
            path: format!("{shown}:{}:{}", e.line(), e.column()),
            message: e.to_string(),
        })?;
        let image = Frame::load_png(&png)
            .map_err(|e| NeedleError::Image { path: png.display().to_string(), message: e.to_string() })?;
        let name = json.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        NeedleImage::from_parts(name, json, spec, image)
    }

    /// Check a spec against its image and prepare the match areas.
    pub fn from_parts(name: String, path: PathBuf, spec: NeedleSpec, image: Frame) -> Result<NeedleImage, NeedleError> {
        let shown = path.display().to_string();
        let invalid = |message: String| NeedleError::Invalid { path: shown.clone(), message };
        if let Some(schema) = &spec.schema
            && schema != SCHEMA
        {
            return Err(invalid(format!("unknown schema '{schema}' (this smoke reads {SCHEMA})")));
        }
        let bounds = image.bounds();
        for (i, a) in spec.areas.iter().enumerate() {
            let r = a.rect();
            if r.is_empty() || !bounds.contains_rect(&r) {
                return Err(invalid(format!(
                    "area {i} ({r}) is empty or lies outside the {}x{} image",
                    image.width(),
                    image.height()
                )));
            }
            if let Some(t) = a.threshold
                && !(0.0..=1.0).contains(&t)
            {
                return Err(invalid(format!("area {i}: threshold {t} is not in 0..1")));
            }
            if a.kind == AreaKind::Ocr && a.text.as_deref().is_none_or(|t| t.trim().is_empty()) {
                return Err(invalid(format!("ocr area {i} needs \"text\": the text that must be read there")));
            }
        }
        if !spec.areas.iter().any(|a| a.kind == AreaKind::Match) {
            return Err(invalid("a needle needs at least one area of type \"match\"".into()));
        }
        for p in &spec.points {
            if !bounds.contains(Point::new(p.at[0], p.at[1])) {
                return Err(invalid(format!("click point {:?} lies outside the image", p.at)));
            }
        }
        if spec.points.len() > 1 && spec.points.iter().any(|p| p.id.is_none()) {
            return Err(invalid("with several click points, each needs an \"id\"".into()));
        }
        let excludes: Vec<Rect> =
            spec.areas.iter().filter(|a| a.kind == AreaKind::Exclude).map(AreaSpec::rect).collect();
        let mut templates = Vec::new();
        for (i, a) in spec.areas.iter().enumerate().filter(|(_, a)| a.kind == AreaKind::Match) {
            let r = a.rect();
            let crop = image.crop(r).ok_or_else(|| invalid(format!("area {i} lies outside the image")))?;
            let mask = Mask::from_rects(excludes.iter().copied()).relative_to(r);
            let t = template::Needle::with_mask(&crop, &mask).map_err(|source| NeedleError::Area {
                path: shown.clone(),
                index: i,
                source,
            })?;
            templates.push((i, t));
        }
        Ok(NeedleImage { name, path, spec, image, templates })
    }

    /// The ids of the click points (`None` for an unnamed single point).
    pub fn point_ids(&self) -> Vec<Option<&str>> {
        self.spec.points.iter().map(|p| p.id.as_deref()).collect()
    }

    /// The click point `id` in PNG pixels (the only point, or the centre of the
    /// first match area, when `id` is `None`).
    pub fn point(&self, id: Option<&str>) -> Option<Point> {
        match id {
            Some(id) => {
                self.spec.points.iter().find(|p| p.id.as_deref() == Some(id)).map(|p| Point::new(p.at[0], p.at[1]))
            }
            None => match self.spec.points.as_slice() {
                [one] => Some(Point::new(one.at[0], one.at[1])),
                [] => self.spec.areas.iter().find(|a| a.kind == AreaKind::Match).map(|a| a.rect().center()),
                _ => None,
            },
        }
    }
}

/// How one area fared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AreaResult {
    /// Index in the sidecar's `areas`.
    pub index: usize,
    pub kind: AreaKind,
    /// Where the area would be without displacement (PNG = screen coordinates).
    pub expected: Rect,
    /// Where it was found (or the best candidate).
    pub found: Rect,
    /// ZNCC for match areas; 1 - distance/len for ocr areas.
    pub score: f64,
    pub threshold: f64,
    /// Match areas: the pixel check's block difference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_difference: Option<f64>,
    pub passed: bool,
    /// `margin` when found near its expected place, `screen` when found
    /// elsewhere, `displaced` for areas after the first.
    pub searched: &'static str,
    /// Ocr areas: what was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The outcome of a needle search.
#[derive(Debug, Clone, PartialEq)]
pub struct NeedleMatch {
    /// True when every match area passed (ocr areas are judged separately, see
    /// [`NeedleMatch::passed`]).
    pub found: bool,
    /// How far the needle sits from where it is in the PNG.
    pub offset: (i64, i64),
    pub areas: Vec<AreaResult>,
}

impl NeedleMatch {
    /// True when every area (match and ocr) passed.
    pub fn passed(&self) -> bool {
        self.found && self.areas.iter().all(|a| a.passed)
    }

    /// The lowest ZNCC of the match areas (ocr areas have scores of their own
    /// in [`Self::areas`]).
    pub fn score(&self) -> f64 {
        let low =
            self.areas.iter().filter(|a| a.kind == AreaKind::Match).map(|a| a.score).fold(f64::INFINITY, f64::min);
        if low.is_finite() { low } else { 0.0 }
    }

    /// The threshold of the match area with the lowest score.
    pub fn threshold(&self) -> Option<f64> {
        self.areas
            .iter()
            .filter(|a| a.kind == AreaKind::Match)
            .min_by(|a, b| a.score.total_cmp(&b.score))
            .map(|a| a.threshold)
    }

    /// The box of the first match area (found or best candidate).
    pub fn first_box(&self) -> Option<Rect> {
        self.areas.iter().find(|a| a.kind == AreaKind::Match).map(|a| a.found)
    }

    /// Move a PNG point by the match's displacement, kept inside `bounds`.
    pub fn displace(&self, p: Point, bounds: Rect) -> Point {
        let x = (p.x as i64 + self.offset.0).clamp(bounds.x as i64, bounds.right() as i64 - 1);
        let y = (p.y as i64 + self.offset.1).clamp(bounds.y as i64, bounds.bottom() as i64 - 1);
        Point::new(x.max(0) as u32, y.max(0) as u32)
    }

    /// A one-line account for events and errors.
    pub fn describe(&self) -> String {
        self.areas
            .iter()
            .filter(|a| a.kind != AreaKind::Exclude)
            .map(|a| {
                let what = match a.kind {
                    AreaKind::Ocr => format!("read {:?}", a.text.as_deref().unwrap_or("")),
                    _ => format!("zncc {:.3}, block diff {:.1}", a.score, a.block_difference.unwrap_or(0.0)),
                };
                format!(
                    "area {} {} at {} ({what}, {}, threshold {})",
                    a.index,
                    if a.passed { "ok" } else { "FAILED" },
                    a.found,
                    a.searched,
                    a.threshold
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Options that override a needle's own per-area settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct NeedleOptions {
    /// Use this ZNCC threshold for every match area.
    pub threshold: Option<f64>,
    /// Search only here (screen coordinates); the whole screen when `None`.
    pub region: Option<Rect>,
}

/// Search `needle`'s match areas on `screen` (ocr areas are listed, not judged:
/// see [`NeedleMatch::areas`] with `kind == Ocr`, filled in by the caller).
pub fn find_needle(
    screen: &Frame,
    needle: &NeedleImage,
    options: &NeedleOptions,
) -> Result<NeedleMatch, TemplateError> {
    let limit = options.region.and_then(|r| r.intersect(&screen.bounds())).unwrap_or(screen.bounds());
    let spec_of = |i: usize| &needle.spec.areas[i];
    let opts_for = |a: &AreaSpec, region: Rect| MatchOptions {
        region: Some(region),
        threshold: options.threshold.or(a.threshold).unwrap_or(DEFAULT_THRESHOLD),
        max_block_difference: match a.max_block_difference.unwrap_or(BLOCK_DIFFERENCE_LIMIT) {
            d if d >= 255.0 => None,
            d => Some(d),
        },
        ..Default::default()
    };
    let fits = |t: &template::Needle, r: Rect| r.w >= t.width() && r.h >= t.height();
    let mut results = Vec::new();
    let mut offset = (0i64, 0i64);
    let mut found_all = true;
    for (n, (index, t)) in needle.templates.iter().enumerate() {
        let a = spec_of(*index);
        let expected = a.rect();
        let margin = a.margin.unwrap_or(DEFAULT_MARGIN);
        let threshold = options.threshold.or(a.threshold).unwrap_or(DEFAULT_THRESHOLD);
        let shifted = shift(expected, offset);
        let near = shifted.and_then(|s| s.expand(margin, &limit).intersect(&limit)).filter(|r| fits(t, *r));
        let mut best: Option<(TemplateMatch, &'static str)> = None;
        if let Some(region) = near {
            let m = template::find_template(screen, t, &opts_for(a, region))?;
            best = Some((m, if n == 0 { "margin" } else { "displaced" }));
        }
        let first_missing = n == 0 && best.as_ref().is_none_or(|(m, _)| !m.found);
        if first_missing && fits(t, limit) {
            let m = template::find_template(screen, t, &opts_for(a, limit))?;
            let better = best.as_ref().is_none_or(|(b, _)| m.found || (!b.found && m.score > b.score));
            if better {
                best = Some((m, "screen"));
            }
        }
        let Some((m, searched)) = best else {
            found_all = false;
            results.push(AreaResult {
                index: *index,
                kind: AreaKind::Match,
                expected,
                found: expected,
                score: 0.0,
                threshold,
                block_difference: None,
                passed: false,
                searched: "nowhere (the area does not fit the search region)",
                text: None,
            });
            continue;
        };
        if n == 0 {
            offset = (m.rect.x as i64 - expected.x as i64, m.rect.y as i64 - expected.y as i64);
        }
        found_all &= m.found;
        results.push(AreaResult {
            index: *index,
            kind: AreaKind::Match,
            expected,
            found: m.rect,
            score: m.score,
            threshold,
            block_difference: Some(m.block_difference),
            passed: m.found,
            searched,
            text: None,
        });
    }
    for (index, a) in needle.spec.areas.iter().enumerate().filter(|(_, a)| a.kind == AreaKind::Ocr) {
        let expected = a.rect();
        let found = shift(expected, offset).and_then(|r| r.intersect(&screen.bounds())).unwrap_or(expected);
        results.push(AreaResult {
            index,
            kind: AreaKind::Ocr,
            expected,
            found,
            score: 0.0,
            threshold: 1.0,
            block_difference: None,
            passed: false,
            searched: "displaced",
            text: None,
        });
    }
    Ok(NeedleMatch { found: found_all, offset, areas: results })
}

/// `r` moved by `offset`; `None` when it would leave the positive quadrant.
fn shift(r: Rect, offset: (i64, i64)) -> Option<Rect> {
    let x = r.x as i64 + offset.0;
    let y = r.y as i64 + offset.1;
    (x >= 0 && y >= 0 && x <= u32::MAX as i64 && y <= u32::MAX as i64).then(|| Rect::new(x as u32, y as u32, r.w, r.h))
}

/// Write a needle (`NAME.png` + `NAME.json`) into `dir`; returns the JSON path.
pub fn save(dir: &Path, name: &str, spec: &NeedleSpec, image: &Frame) -> Result<PathBuf, NeedleError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| NeedleError::Write { path: dir.display().to_string(), message: e.to_string() })?;
    let png = dir.join(format!("{name}.png"));
    image.save_png(&png).map_err(|e| NeedleError::Write { path: png.display().to_string(), message: e.to_string() })?;
    let json = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(spec).unwrap_or_default() + "\n";
    std::fs::write(&json, text)
        .map_err(|e| NeedleError::Write { path: json.display().to_string(), message: e.to_string() })?;
    Ok(json)
}

/// Convert an openQA needle sidecar (JSON text) to smoke's.
///
/// openQA areas have `xpos`, `ypos`, `width`, `height`, `type` (`match`,
/// `exclude`, `ocr`), `match` (a similarity percentage, default 96), `margin`
/// (default 50) and `click_point` (`{xpos, ypos}` relative to the area, or
/// `"center"`). openQA's similarity is not a correlation; its percentage is
/// taken as the ZNCC threshold (96 -> 0.96), and smoke's pixel check is added,
/// which openQA does not have (its matcher compares grayscale only). openQA ocr
/// areas carry no expected text: they are dropped with a note.
pub fn import_openqa(json: &str, source: &str) -> Result<(NeedleSpec, Vec<String>), String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("{}:{}: {e}", e.line(), e.column()))?;
    let areas = v.get("area").and_then(|a| a.as_array()).ok_or("no \"area\" list: not an openQA needle")?;
    let mut notes = Vec::new();
    let mut spec = NeedleSpec {
        schema: Some(SCHEMA.into()),
        areas: Vec::new(),
        points: Vec::new(),
        tags: v
            .get("tags")
            .and_then(|t| t.as_array())
            .map(|t| t.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        source: Some(format!("openQA needle {source}")),
    };
    let num = |a: &serde_json::Value, k: &str| -> Result<u32, String> {
        match a.get(k) {
            None | Some(serde_json::Value::Null) => Ok(0),
            Some(n) => n
                .as_f64()
                .filter(|f| *f >= 0.0 && *f <= u32::MAX as f64)
                .map(|f| f.round() as u32)
                .ok_or_else(|| format!("area field {k} is not a non-negative number: {n}")),
        }
    };
    for (i, a) in areas.iter().enumerate() {
        let rect = [num(a, "xpos")?, num(a, "ypos")?, num(a, "width")?, num(a, "height")?];
        let kind = match a.get("type").and_then(|t| t.as_str()).unwrap_or("match") {
            "match" => AreaKind::Match,
            "exclude" => AreaKind::Exclude,
            "ocr" => {
                notes.push(format!("area {i}: openQA ocr area dropped (it has no expected text; add one by hand)"));
                continue;
            }
            other => return Err(format!("area {i}: unknown type '{other}'")),
        };
        let mut area = AreaSpec {
            kind,
            rect,
            threshold: None,
            margin: None,
            max_block_difference: None,
            text: None,
            max_distance: None,
        };
        if kind == AreaKind::Match {
            let pct = a.get("match").and_then(|m| m.as_f64()).unwrap_or(96.0);
            area.threshold = Some((pct / 100.0).clamp(0.0, 1.0));
            area.margin = Some(a.get("margin").and_then(|m| m.as_f64()).map_or(DEFAULT_MARGIN, |m| m.max(0.0) as u32));
            match a.get("click_point") {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(s)) if s == "center" => {
                    spec.points.push(PointSpec { id: None, at: [rect[0] + rect[2] / 2, rect[1] + rect[3] / 2] })
                }
                Some(cp) => {
                    let (x, y) = (num(cp, "xpos")?, num(cp, "ypos")?);
                    spec.points.push(PointSpec { id: None, at: [rect[0] + x, rect[1] + y] });
                }
            }
        }
        spec.areas.push(area);
    }
    if spec.points.len() > 1 {
        for (i, p) in spec.points.iter_mut().enumerate() {
            p.id = Some(format!("point{}", i + 1));
        }
        notes.push("several click points: named point1, point2, ... in area order".into());
    }
    if !spec.areas.iter().any(|a| a.kind == AreaKind::Match) {
        return Err("the needle has no match area".into());
    }
    Ok((spec, notes))
}

/// Import one openQA needle (`NAME.json` with `NAME.png` beside it) into
/// `to` as a smoke needle; returns the new sidecar's path and notes on what was
/// changed. The result is checked (areas inside the image, a match area with
/// structure) before anything is written.
pub fn import_openqa_file(json: &Path, to: &Path) -> Result<(PathBuf, Vec<String>), NeedleError> {
    let shown = json.display().to_string();
    let text = std::fs::read_to_string(json).map_err(|source| NeedleError::Read { path: shown.clone(), source })?;
    let (spec, notes) =
        import_openqa(&text, &shown).map_err(|message| NeedleError::Invalid { path: shown.clone(), message })?;
    let png = json.with_extension("png");
    let image = Frame::load_png(&png)
        .map_err(|e| NeedleError::Image { path: png.display().to_string(), message: e.to_string() })?;
    let name = json.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    NeedleImage::from_parts(name.clone(), json.to_path_buf(), spec.clone(), image.clone())?;
    Ok((save(to, &name, &spec, &image)?, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openqa_needles_convert() {
        let json = r#"{"area": [
            {"xpos": 10, "ypos": 20, "width": 100, "height": 30, "type": "match", "match": 90,
             "click_point": {"xpos": 5, "ypos": 6}},
            {"xpos": 50, "ypos": 25, "width": 10, "height": 10, "type": "exclude"},
            {"xpos": 0, "ypos": 0, "width": 10, "height": 10, "type": "ocr"}
        ], "tags": ["login", "ENV-X"], "properties": []}"#;
        let (spec, notes) = import_openqa(json, "login.json").unwrap();
        assert_eq!(spec.areas.len(), 2);
        assert_eq!(spec.areas[0].rect, [10, 20, 100, 30]);
        assert_eq!(spec.areas[0].threshold, Some(0.9));
        assert_eq!(spec.areas[0].margin, Some(50));
        assert_eq!(spec.areas[1].kind, AreaKind::Exclude);
        assert_eq!(spec.points, vec![PointSpec { id: None, at: [15, 26] }]);
        assert_eq!(spec.tags, vec!["login", "ENV-X"]);
        assert_eq!(notes.len(), 1);
        assert!(import_openqa(r#"{"area": [{"xpos": 0, "type": "exclude"}]}"#, "x").is_err());
        assert!(import_openqa("{}", "x").is_err());
        assert!(import_openqa("not json", "x").unwrap_err().contains("1:"));
    }

    #[test]
    fn points_and_displacement() {
        let mut image = Frame::new(200, 100);
        for y in 0..100 {
            for x in 0..200 {
                let v = ((x * 7 + y * 13) % 251) as u8;
                image.set_rgb(x, y, [v, v, 255 - v]);
            }
        }
        let spec = NeedleSpec {
            schema: Some(SCHEMA.into()),
            areas: vec![AreaSpec {
                kind: AreaKind::Match,
                rect: [20, 10, 60, 40],
                threshold: None,
                margin: None,
                max_block_difference: None,
                text: None,
                max_distance: None,
            }],
            points: vec![],
            tags: vec![],
            source: None,
        };
        let n = NeedleImage::from_parts("n".into(), "n.json".into(), spec.clone(), image.clone()).unwrap();
        assert_eq!(n.point(None), Some(Point::new(50, 30)));
        let m = find_needle(&image, &n, &NeedleOptions::default()).unwrap();
        assert!(m.passed() && m.offset == (0, 0), "{m:?}");
        assert_eq!(m.displace(Point::new(50, 30), image.bounds()), Point::new(50, 30));
        let mut bad = spec.clone();
        bad.points = vec![PointSpec { id: None, at: [1, 1] }, PointSpec { id: Some("b".into()), at: [2, 2] }];
        assert!(NeedleImage::from_parts("n".into(), "n.json".into(), bad, image.clone()).is_err());
        let mut outside = spec;
        outside.areas[0].rect = [190, 10, 60, 40];
        assert!(NeedleImage::from_parts("n".into(), "n.json".into(), outside, image).is_err());
    }
}
