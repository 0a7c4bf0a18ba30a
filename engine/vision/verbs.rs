//! One check on image files, for tuning thresholds: what `smoke image ssim`,
//! `smoke image match` and `smoke image ocr` print. Each returns the report as
//! text (one `key: value` per line, stable for scripts) or JSON.

use std::path::Path;

use serde_json::json;

use crate::frame::Frame;
use crate::geometry::Rect;
use crate::vision::gray::Mask;
use crate::vision::needle::{AreaKind, AreaSpec, NeedleImage, NeedleOptions, NeedleSpec, SCHEMA, find_needle};
use crate::vision::ocr::{Ocr, TextQuery};
use crate::vision::ssim::{SsimOptions, SsimWindow, ssim_frames, ssim_frames_colour};

fn load(path: &Path) -> Result<Frame, String> {
    Frame::load_png(path).map_err(|e| format!("cannot load {}: {e}", path.display()))
}

/// A report: text lines and the same as JSON.
pub struct Report {
    pub lines: Vec<String>,
    pub json: serde_json::Value,
    /// Whether the check passed (decides the exit code).
    pub passed: bool,
}

impl Report {
    pub fn render(&self, as_json: bool) -> String {
        if as_json { serde_json::to_string_pretty(&self.json).unwrap_or_default() } else { self.lines.join("\n") }
    }
}

/// Parse `x,y,w,h` (or `x,y,wxh`).
pub fn parse_rect(s: &str) -> Result<Rect, String> {
    let parts: Vec<u32> = s
        .split([',', 'x', ' '])
        .filter(|p| !p.is_empty())
        .map(|p| p.trim().parse::<u32>().map_err(|_| format!("'{s}' is not x,y,w,h")))
        .collect::<Result<_, _>>()?;
    match parts.as_slice() {
        [x, y, w, h] if *w > 0 && *h > 0 => Ok(Rect::new(*x, *y, *w, *h)),
        _ => Err(format!("'{s}' is not x,y,w,h with a positive width and height")),
    }
}

/// Options of [`ssim`].
#[derive(Debug, Clone, Default)]
pub struct SsimArgs {
    pub region: Option<Rect>,
    pub mask: Vec<Rect>,
    pub colour: bool,
    pub box_window: bool,
    pub threshold: Option<f64>,
    /// Write the SSIM heatmap here.
    pub diff: Option<std::path::PathBuf>,
}

/// SSIM of two PNG files.
pub fn ssim(a: &Path, b: &Path, args: &SsimArgs) -> Result<Report, String> {
    let (fa, fb) = (load(a)?, load(b)?);
    let window = if args.box_window { SsimWindow::Box { size: 7 } } else { SsimWindow::default() };
    let options = SsimOptions {
        window,
        region: args.region,
        mask: Mask::from_rects(args.mask.iter().copied()),
        keep_map: args.diff.is_some(),
        ..Default::default()
    };
    let s = if args.colour { ssim_frames_colour(&fa, &fb, &options) } else { ssim_frames(&fa, &fb, &options) }
        .map_err(|e| e.to_string())?;
    let passed = args.threshold.is_none_or(|t| s.score >= t);
    let mut lines = vec![format!("ssim: {:.6}", s.score)];
    if let Some(ch) = s.channels {
        lines.push(format!("channels: red {:.6} green {:.6} blue {:.6}", ch[0], ch[1], ch[2]));
    }
    if let Some((at, v)) = s.worst {
        lines.push(format!("worst window: {v:.4} at {},{}", at.x, at.y));
    }
    lines.push(format!("compared pixels: {}", s.compared_pixels));
    if let Some(t) = args.threshold {
        lines.push(format!("threshold: {t} ({})", if passed { "passed" } else { "FAILED" }));
    }
    if let (Some(out), Some(map)) = (&args.diff, &s.map) {
        let heat = crate::vision::diff::ssim_heatmap(&fb, map).map_err(|e| e.to_string())?;
        heat.save_png(out).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        lines.push(format!("heatmap: {}", out.display()));
    }
    let json = json!({
        "ssim": s.score, "channels": s.channels, "compared_pixels": s.compared_pixels,
        "worst": s.worst.map(|(p, v)| json!({"x": p.x, "y": p.y, "ssim": v})),
        "threshold": args.threshold, "passed": passed,
    });
    Ok(Report { lines, json, passed })
}

/// Find a needle (a `.json` needle, or a plain PNG taken as one match area)
/// on a screen PNG.
pub fn find(screen: &Path, needle: &Path, region: Option<Rect>, threshold: Option<f64>) -> Result<Report, String> {
    let frame = load(screen)?;
    let n = if needle.extension().is_some_and(|e| e == "json") || needle.with_extension("json").is_file() {
        NeedleImage::load(needle).map_err(|e| e.to_string())?
    } else {
        let image = load(needle)?;
        let spec = NeedleSpec {
            schema: Some(SCHEMA.into()),
            areas: vec![AreaSpec {
                kind: AreaKind::Match,
                rect: [0, 0, image.width(), image.height()],
                threshold: None,
                margin: Some(0),
                max_block_difference: None,
                text: None,
                max_distance: None,
            }],
            points: Vec::new(),
            tags: Vec::new(),
            source: None,
        };
        let name = needle.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        NeedleImage::from_parts(name, needle.to_path_buf(), spec, image).map_err(|e| e.to_string())?
    };
    let m = find_needle(&frame, &n, &NeedleOptions { threshold, region }).map_err(|e| e.to_string())?;
    let mut lines = vec![
        format!("found: {}", if m.found { "yes" } else { "no" }),
        format!("score: {:.6}", m.score()),
        format!("offset: {},{}", m.offset.0, m.offset.1),
    ];
    for a in m.areas.iter().filter(|a| a.kind == AreaKind::Match) {
        let f = a.found;
        lines.push(format!(
            "area {}: {} at {},{} {}x{} zncc {:.6} block difference {:.1} threshold {} ({})",
            a.index,
            if a.passed { "ok" } else { "FAILED" },
            f.x,
            f.y,
            f.w,
            f.h,
            a.score,
            a.block_difference.unwrap_or(0.0),
            a.threshold,
            a.searched
        ));
    }
    let mut points = Vec::new();
    for (i, p) in n.spec.points.iter().enumerate() {
        let at = m.displace(crate::geometry::Point::new(p.at[0], p.at[1]), frame.bounds());
        let id = p.id.clone().unwrap_or_else(|| format!("{i}"));
        lines.push(format!("point {id}: {},{}", at.x, at.y));
        points.push(json!({"id": p.id, "x": at.x, "y": at.y}));
    }
    if n.spec.points.is_empty()
        && let Some(b) = m.first_box()
    {
        let c = b.center();
        lines.push(format!("click: {},{}", c.x, c.y));
        points.push(json!({"id": null, "x": c.x, "y": c.y}));
    }
    let json = json!({"found": m.found, "score": m.score(), "offset": [m.offset.0, m.offset.1], "areas": m.areas, "points": points});
    Ok(Report { lines, json, passed: m.found })
}

/// Read text in an image (or look for `find`, with `max_distance` edits).
pub async fn ocr(
    image: &Path,
    region: Option<Rect>,
    find: Option<&str>,
    max_distance: u32,
    case_sensitive: bool,
) -> Result<Report, String> {
    let frame = load(image)?;
    let ocr = Ocr::new();
    match find {
        None => {
            let t = ocr.read(&frame, region).await.map_err(|e| e.to_string())?;
            let mut lines = Vec::new();
            let mut rows = Vec::new();
            for l in &t.lines {
                let b = l.bbox;
                lines.push(format!("{},{} {}x{}\t{}", b.x, b.y, b.w, b.h, l.text));
                rows.push(json!({"text": l.text, "box": b}));
            }
            Ok(Report { lines, json: json!({"lines": rows}), passed: true })
        }
        Some(text) => {
            let query = TextQuery::fuzzy(text, case_sensitive, max_distance);
            let f = ocr.find(&frame, region, &query).await.map_err(|e| e.to_string())?;
            let mut lines = vec![format!("found: {}", if f.found.is_some() { "yes" } else { "no" })];
            if let (Some(b), Some(m)) = (f.found, &f.matched) {
                lines.push(format!(
                    "match: {m:?} at {},{} {}x{} ({} edits)",
                    b.x,
                    b.y,
                    b.w,
                    b.h,
                    f.distance.unwrap_or(0)
                ));
            }
            for p in &f.passes {
                lines.push(format!("pass {}: {}", p.variant, if p.matched { "matched" } else { "no match" }));
            }
            lines.push(format!("text ({}):", f.variant));
            lines.push(f.text.clone());
            let json = json!({
                "found": f.found, "match": f.matched, "distance": f.distance, "variant": f.variant, "text": f.text,
                "passes": f.passes.iter().map(|p| json!({"variant": p.variant.name(), "matched": p.matched, "text": p.text})).collect::<Vec<_>>(),
            });
            Ok(Report { lines, json, passed: f.found.is_some() })
        }
    }
}
