//! Reference images: the PNG an `ssim` check compares with, its JSON sidecar
//! (how and from which run it was made), and `smoke approve`, which turns the
//! actual images of a past run into references.
//!
//! A reference lives at `reference/<scenario>/<os>/<name>.png` (or one of the
//! fallbacks the plan looks in) with `<name>.json` beside it:
//!
//! ```json
//! {"schema": "smoke.reference/1", "region": [482, 230, 314, 48], "mask": [],
//!  "threshold": 0.98, "window": "gaussian", "colour": false,
//!  "scenario": "calculator", "os": "local", "run": "results/2026-...", "step": 5,
//!  "created": "2026-11-24T12:37:19.000Z", "how": "approve"}
//! ```
//!
//! The runner saves the actual image of every image check
//! (`screenshots/NNN-actual-<name>.png`) and names it in the check event with
//! the reference's path, so [`approve`] needs nothing but the results folder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::events::{Event, Record};
use crate::frame::Frame;
use crate::scenario::model::{SsimCheck, SsimWindowKind};

pub const SCHEMA: &str = "smoke.reference/1";

/// Where references written now come from.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    pub scenario: Option<String>,
    pub os: Option<String>,
    /// The run's results folder.
    pub run: Option<String>,
    /// The step being run (set by the runner per check).
    pub step: Option<usize>,
}

/// The sidecar of a reference image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    pub schema: String,
    /// The screen rectangle the image shows (`None`: the whole screen).
    pub region: Option<[u32; 4]>,
    #[serde(default)]
    pub mask: Vec<[u32; 4]>,
    pub threshold: f64,
    pub window: String,
    #[serde(default)]
    pub colour: bool,
    #[serde(default)]
    pub scenario: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    /// The results folder of the run the image came from.
    #[serde(default)]
    pub run: Option<String>,
    #[serde(default)]
    pub step: Option<usize>,
    pub created: String,
    /// `update-references` or `approve`.
    pub how: String,
}

impl Sidecar {
    /// The sidecar for a reference created by `--update-references`.
    pub fn for_check(c: &SsimCheck, p: &Provenance) -> Sidecar {
        let rect = |r: crate::geometry::Rect| [r.x, r.y, r.w, r.h];
        Sidecar {
            schema: SCHEMA.into(),
            region: c.region.map(rect),
            mask: c.mask.iter().copied().map(rect).collect(),
            threshold: c.threshold,
            window: match c.window {
                SsimWindowKind::Gaussian => "gaussian".into(),
                SsimWindowKind::Box => "box".into(),
            },
            colour: c.colour,
            scenario: p.scenario.clone(),
            os: p.os.clone(),
            run: p.run.clone(),
            step: p.step,
            created: crate::events::now_rfc3339(),
            how: "update-references".into(),
        }
    }
}

/// `NAME.png` -> `NAME.json`.
pub fn sidecar_path(png: &Path) -> PathBuf {
    png.with_extension("json")
}

/// Write a reference image and its sidecar (creating folders).
pub fn write(png: &Path, image: &Frame, sidecar: &Sidecar) -> Result<(), String> {
    if let Some(dir) = png.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    image.save_png(png).map_err(|e| format!("cannot write {}: {e}", png.display()))?;
    let json = serde_json::to_string_pretty(sidecar).unwrap_or_default() + "\n";
    let side = sidecar_path(png);
    std::fs::write(&side, json).map_err(|e| format!("cannot write {}: {e}", side.display()))
}

/// Read a sidecar, if there is a valid one.
pub fn read_sidecar(png: &Path) -> Option<Sidecar> {
    serde_json::from_str(&std::fs::read_to_string(sidecar_path(png)).ok()?).ok()
}

/// Which checks of a run to approve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// The image checks of one step.
    Step(usize),
    /// Every image check of the run.
    All,
    /// The image checks that failed.
    Failed,
}

/// One reference written by [`approve`].
#[derive(Debug, Clone, PartialEq)]
pub struct Approved {
    pub step: usize,
    pub check: String,
    pub reference: PathBuf,
    /// False when the reference already had exactly these pixels.
    pub changed: bool,
}

/// Why approving failed.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    #[error("cannot read {path}: {message}")]
    Events { path: String, message: String },
    #[error("{0}")]
    Nothing(String),
    #[error("{0}")]
    Write(String),
}

/// Copy the actual images of a past run's image checks into their reference
/// files (with sidecars naming the run). The last check event per reference
/// wins (retries and polls report the final frame).
pub fn approve(results: &Path, selection: Selection) -> Result<Vec<Approved>, ApproveError> {
    let events = results.join("events.jsonl");
    let (records, _) = crate::events::read_jsonl(&events)
        .map_err(|e| ApproveError::Events { path: events.display().to_string(), message: e.to_string() })?;
    let run_info = records.iter().find_map(|r| match &r.event {
        Event::RunStarted { scenario, os, .. } => Some((scenario.clone(), os.clone())),
        _ => None,
    });
    type Chosen = (usize, String, PathBuf, PathBuf, Option<crate::geometry::Rect>, Option<f64>);
    let mut chosen: Vec<Chosen> = Vec::new();
    let mut image_checks = 0;
    for Record { event, .. } in &records {
        let Event::Check {
            step,
            kind,
            passed,
            check,
            region,
            threshold,
            actual: Some(actual),
            reference_path: Some(reference),
            ..
        } = event
        else {
            continue;
        };
        if kind != "ssim" {
            continue;
        }
        image_checks += 1;
        let wanted = match selection {
            Selection::Step(n) => *step == n,
            Selection::All => true,
            Selection::Failed => !passed,
        };
        if !wanted {
            continue;
        }
        let reference = PathBuf::from(reference);
        chosen.retain(|(_, _, r, ..)| *r != reference);
        chosen.push((*step, check.clone(), reference, results.join(actual), *region, *threshold));
    }
    if chosen.is_empty() {
        let why = match selection {
            Selection::Step(n) if image_checks > 0 => format!("step {n} has no image check in this run"),
            Selection::Failed if image_checks > 0 => "no image check failed in this run".to_string(),
            _ => format!("{} has no image checks with saved actual images", events.display()),
        };
        return Err(ApproveError::Nothing(why));
    }
    let mut out = Vec::new();
    for (step, check, reference, actual, region, threshold) in chosen {
        let image = Frame::load_png(&actual).map_err(|e| ApproveError::Write(format!("{}: {e}", actual.display())))?;
        let changed = Frame::load_png(&reference).map(|old| old != image).unwrap_or(true);
        let mut sidecar = read_sidecar(&reference).unwrap_or(Sidecar {
            schema: SCHEMA.into(),
            region: region.map(|r| [r.x, r.y, r.w, r.h]),
            mask: Vec::new(),
            threshold: threshold.unwrap_or(0.0),
            window: "gaussian".into(),
            colour: false,
            scenario: None,
            os: None,
            run: None,
            step: None,
            created: String::new(),
            how: String::new(),
        });
        if let Some((scenario, os)) = &run_info {
            sidecar.scenario = Some(scenario.clone());
            sidecar.os = Some(os.clone());
        }
        sidecar.run = Some(crate::project::display_path(results));
        sidecar.step = Some(step);
        sidecar.created = crate::events::now_rfc3339();
        sidecar.how = "approve".into();
        write(&reference, &image, &sidecar).map_err(ApproveError::Write)?;
        out.push(Approved { step, check, reference, changed });
    }
    Ok(out)
}
