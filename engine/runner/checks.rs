//! Evaluating checks on a frame: OCR text, SSIM against a reference image,
//! needles, and locating click targets (text by OCR, images by template match,
//! needle click points). Pure decisions on one frame; the runner does the polling.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::events::CheckScore;
use crate::frame::Frame;
use crate::geometry::{Point, Rect};
use crate::project::display_path;
use crate::references::{Provenance, Sidecar};
use crate::scenario::model::{
    Check, Expect, NeedleCheck, OcrCheck, Reference, SsimCheck, SsimWindowKind, TextMatch, VlmCheck,
};
use crate::scenario::plan::UpdateReferences;
use crate::vision;
use crate::vision::needle::{AreaKind, NeedleImage, NeedleMatch, NeedleOptions};

/// The result of one check on one frame.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The check's verdict after applying `verify_not`.
    pub passed: bool,
    pub score: Option<f64>,
    pub threshold: Option<f64>,
    pub text: Option<String>,
    pub found: Option<Rect>,
    pub note: Option<String>,
    /// For a failed image comparison: where the screen differs.
    pub diff: Option<Frame>,
    /// Every partial score (per region, channel, area).
    pub scores: Vec<CheckScore>,
    /// The actual image an image check compared (its region of the screen).
    pub actual: Option<Frame>,
    /// The reference file an image check compared with.
    pub reference_path: Option<PathBuf>,
    /// What the vision-language model was asked, and the image it was shown.
    pub vlm: Vec<crate::vlm::Asked>,
    pub vlm_image: Option<Frame>,
}

impl Evaluation {
    fn new(passed: bool) -> Evaluation {
        Evaluation {
            passed,
            score: None,
            threshold: None,
            text: None,
            found: None,
            note: None,
            diff: None,
            scores: Vec::new(),
            actual: None,
            reference_path: None,
            vlm: Vec::new(),
            vlm_image: None,
        }
    }
}

fn score(name: impl Into<String>, score: f64, threshold: Option<f64>, passed: bool, at: Option<Rect>) -> CheckScore {
    CheckScore { name: name.into(), score, threshold, passed, at }
}

/// Why a check could not be evaluated at all.
#[derive(Debug, Clone)]
pub enum CheckError {
    /// The scenario asks for something impossible on this screen (region outside, size mismatch).
    Invalid(String),
    /// A tool or file smoke needs is broken or missing.
    Infra(String),
}

/// Evaluates checks; caches reference images and creates them when asked to.
pub struct Checker {
    ocr: vision::ocr::Ocr,
    references: HashMap<PathBuf, Frame>,
    needles: HashMap<PathBuf, NeedleImage>,
    update: UpdateReferences,
    provenance: Provenance,
    /// References written by this run.
    pub created: Vec<PathBuf>,
    /// The run's vision-language model (None: the inventory has none).
    vlm: Option<std::sync::Arc<crate::vlm::Vlm>>,
    /// Tells whether a question would carry a secret to the model.
    redactor: crate::secrets::Redactor,
}

impl Checker {
    pub fn new(update: UpdateReferences) -> Checker {
        Checker {
            ocr: vision::ocr::Ocr::default(),
            references: HashMap::new(),
            needles: HashMap::new(),
            update,
            provenance: Provenance::default(),
            created: Vec::new(),
            vlm: None,
            redactor: crate::secrets::Redactor::default(),
        }
    }

    /// Ask `vlm` the run's `vlm` checks; `redactor` knows the run's secrets.
    pub fn set_vlm(&mut self, vlm: Option<std::sync::Arc<crate::vlm::Vlm>>, redactor: crate::secrets::Redactor) {
        self.vlm = vlm;
        self.redactor = redactor;
    }

    /// The run's model (checks and the runner's locate and guard steps share it).
    pub fn vlm(&self) -> Result<std::sync::Arc<crate::vlm::Vlm>, CheckError> {
        self.vlm.clone().ok_or_else(|| {
            CheckError::Invalid("no vision-language model is configured (`vlm:` in the inventory)".into())
        })
    }

    /// Where references written by this checker come from (recorded in their sidecars).
    pub fn set_provenance(&mut self, provenance: Provenance) {
        self.provenance = provenance;
    }

    /// The step whose checks come next (recorded in reference sidecars).
    pub fn set_step(&mut self, step: usize) {
        self.provenance.step = Some(step);
    }

    /// Evaluate one expectation on `frame`.
    pub async fn evaluate(&mut self, expect: &Expect, frame: &Frame) -> Result<Evaluation, CheckError> {
        let mut e = match &expect.check {
            Check::Ocr(c) => self.ocr_check(c, frame).await?,
            Check::Ssim(c) => self.ssim_check(c, frame)?,
            Check::Needle(c) => self.needle_check(c, frame).await?,
            Check::Vlm(c) => Box::pin(self.vlm_check(c, frame)).await?,
        };
        if expect.negate {
            e.passed = !e.passed;
        }
        if e.passed {
            // a heatmap is evidence of a failure only
            e.diff = None;
        }
        Ok(e)
    }

    /// A yes/no question: cheaper deciders first, then the model (majority of
    /// `consistent` samples, or the first yes with `accept_any`).
    async fn vlm_check(&mut self, c: &VlmCheck, frame: &Frame) -> Result<Evaluation, CheckError> {
        let mut deciders = Vec::new();
        for d in &c.decide_first {
            let got = self.evaluate(d, frame).await?;
            if got.passed {
                let mut e = Evaluation::new(true);
                e.score = Some(1.0);
                e.note = Some(format!("decided by {} without asking the model", d.check.describe()));
                e.scores = got.scores.iter().map(|s| prefixed(d, s)).collect();
                e.text = got.text;
                e.found = got.found;
                return Ok(e);
            }
            deciders.extend(got.scores.iter().map(|s| prefixed(d, s)));
            deciders.push(score(format!("{} (undecided)", d.check.describe()), 0.0, None, false, None));
        }
        let vlm = self.vlm()?;
        let region = checked_region(c.region, frame)?;
        let image = match region {
            Some(r) => frame.crop(r).ok_or_else(|| CheckError::Invalid(format!("region {r} is empty")))?,
            None => frame.clone(),
        };
        // never carry a secret to the model: ask the secret-free variant instead
        let question = match &c.without_secrets {
            Some(alt) if self.redactor.redact(&c.question) != c.question => alt.clone(),
            _ => c.question.clone(),
        };
        let n = c.consistent.max(1);
        let (mut yes, mut asked) = (0u32, Vec::new());
        for sample in 0..n {
            let a = vlm.judge(&question, &image, sample).await.map_err(vlm_error)?;
            let said_yes = a.verdict.is_some_and(|v| v.is_yes());
            asked.push(a);
            yes += u32::from(said_yes);
            let left = n - sample - 1;
            // stop as soon as the outcome cannot change
            if (c.accept_any && said_yes) || (!c.accept_any && (yes * 2 > n || (yes + left) * 2 <= n)) {
                break;
            }
        }
        let passed = if c.accept_any { yes > 0 } else { yes * 2 > n };
        let mut e = Evaluation::new(passed);
        e.score = Some(f64::from(yes) / asked.len().max(1) as f64);
        e.found = region;
        let unparseable = asked.iter().filter(|a| a.verdict == Some(crate::vlm::answer::Verdict::Unparseable)).count();
        let cached = asked.iter().filter(|a| a.cached).count();
        e.note = Some(format!(
            "{}: yes {yes} of {}{}{}",
            asked.first().map(|a| a.model.as_str()).unwrap_or("model"),
            asked.len(),
            if cached > 0 { format!(", {cached} from the cache") } else { String::new() },
            if unparseable > 0 { format!(", {unparseable} unparseable (counted as no)") } else { String::new() },
        ));
        e.text = asked.last().map(|a| a.answer.clone());
        e.scores = deciders;
        for (i, a) in asked.iter().enumerate() {
            let v = a.verdict.is_some_and(|v| v.is_yes());
            e.scores.push(score(format!("sample {}", i + 1), if v { 1.0 } else { 0.0 }, None, v, region));
        }
        e.vlm = asked;
        e.vlm_image = Some(image);
        Ok(e)
    }

    async fn ocr_check(&self, c: &OcrCheck, frame: &Frame) -> Result<Evaluation, CheckError> {
        let region = checked_region(c.region, frame)?;
        let ocr = if c.variants.is_empty() { self.ocr.clone() } else { self.ocr.clone().variants(c.variants.clone()) };
        let found =
            ocr.find(frame, region, &text_query(&c.query)).await.map_err(|e| CheckError::Infra(e.to_string()))?;
        let mut e = Evaluation::new(found.found.is_some());
        e.text = Some(found.text.clone());
        e.found = found.found;
        e.note = Some(match (&found.matched, found.distance) {
            (Some(m), Some(d)) if d > 0 => format!("OCR pass: {}; read {m:?} ({d} edit{})", found.variant, plural(d)),
            _ => format!("OCR pass: {}", found.variant),
        });
        if let (TextMatch::Fuzzy { text, max_distance, .. }, Some(d)) = (&c.query, found.distance) {
            let len = text.split_whitespace().collect::<Vec<_>>().join(" ").chars().count().max(1) as f64;
            e.score = Some(1.0 - d as f64 / len);
            e.scores.push(score("edit distance", d as f64, Some(*max_distance as f64), true, found.found));
        }
        for p in &found.passes {
            e.scores.push(score(
                format!("pass {}", p.variant),
                if p.matched { 1.0 } else { 0.0 },
                None,
                p.matched,
                None,
            ));
        }
        Ok(e)
    }

    fn ssim_check(&mut self, c: &SsimCheck, frame: &Frame) -> Result<Evaluation, CheckError> {
        let area = checked_region(c.region, frame)?.unwrap_or_else(|| frame.bounds());
        let actual = frame.crop(area).ok_or_else(|| CheckError::Invalid(format!("region {area} is empty")))?;
        let path = reference_path(&c.reference)?;
        let exists = path.is_file();
        if self.update == UpdateReferences::All || (self.update == UpdateReferences::Missing && !exists) {
            self.save_reference(&path, &actual, c)?;
            let mut e = Evaluation::new(true);
            e.score = Some(1.0);
            e.threshold = Some(c.threshold);
            e.found = Some(area);
            e.note = Some(format!("reference {} {}", if exists { "updated" } else { "created" }, display_path(&path)));
            e.actual = Some(actual);
            e.reference_path = Some(path);
            return Ok(e);
        }
        let reference = self.load_reference(&path)?;
        if (reference.width(), reference.height()) != (actual.width(), actual.height()) {
            return Err(CheckError::Invalid(format!(
                "reference {} is {}x{} but the compared region is {}x{}; re-create it with --update-references all",
                display_path(&path),
                reference.width(),
                reference.height(),
                actual.width(),
                actual.height()
            )));
        }
        let mask = vision::Mask::from_rects(c.mask.iter().copied()).relative_to(area);
        let window = match c.window {
            SsimWindowKind::Gaussian => vision::ssim::SsimWindow::Gaussian { sigma: 1.5 },
            SsimWindowKind::Box => vision::ssim::SsimWindow::Box { size: 7 },
        };
        let compare = |options: &vision::ssim::SsimOptions| {
            let r = if c.colour {
                vision::ssim::ssim_frames_colour(&reference, &actual, options)
            } else {
                vision::ssim::ssim_frames(&reference, &actual, options)
            };
            r.map_err(|e| CheckError::Invalid(e.to_string()))
        };
        let options = vision::ssim::SsimOptions { mask, window, keep_map: true, ..Default::default() };
        let whole = compare(&options)?;
        let mut passed = whole.score >= c.threshold;
        let mut e = Evaluation::new(false);
        e.scores.push(score("area", whole.score, Some(c.threshold), passed, Some(area)));
        if let Some(ch) = whole.channels {
            for (name, v) in ["red", "green", "blue"].iter().zip(ch) {
                e.scores.push(score(*name, v, Some(c.threshold), v >= c.threshold, Some(area)));
            }
        }
        if let Some((at, v)) = whole.worst {
            let at = Point::new(at.x + area.x, at.y + area.y);
            e.scores.push(score("worst window", v as f64, None, true, Some(Rect::new(at.x, at.y, 1, 1))));
        }
        for (i, r) in c.regions.iter().enumerate() {
            let rel =
                Rect::new(r.region.x.saturating_sub(area.x), r.region.y.saturating_sub(area.y), r.region.w, r.region.h);
            let sub = compare(&vision::ssim::SsimOptions { region: Some(rel), keep_map: false, ..options.clone() })?;
            let ok = sub.score >= r.threshold;
            passed &= ok;
            let name = r.name.clone().unwrap_or_else(|| format!("region {}", i + 1));
            e.scores.push(score(name, sub.score, Some(r.threshold), ok, Some(r.region)));
        }
        e.passed = passed;
        e.score =
            Some(e.scores.iter().filter(|s| s.threshold.is_some()).map(|s| s.score).fold(f64::INFINITY, f64::min));
        e.threshold = Some(c.threshold);
        e.found = Some(area);
        if !passed {
            let failing: Vec<String> = e
                .scores
                .iter()
                .filter(|s| !s.passed)
                .map(|s| format!("{} {:.4} < {}", s.name, s.score, s.threshold.unwrap_or(0.0)))
                .collect();
            e.note = Some(failing.join("; "));
            // the SSIM map as the check saw it (masked areas blue)
            e.diff = Some(match whole.map.as_ref().map(|m| vision::diff::ssim_heatmap(&actual, m)) {
                Some(Ok(img)) => img,
                _ => vision::diff::heatmap(&reference, &actual),
            });
        }
        e.actual = Some(actual);
        e.reference_path = Some(path);
        Ok(e)
    }

    /// A needle: its match areas by template search, then its ocr areas.
    async fn needle_check(&mut self, c: &NeedleCheck, frame: &Frame) -> Result<Evaluation, CheckError> {
        let region = checked_region(c.region, frame)?;
        let path = reference_path(&c.needle)?;
        let m = self.find_needle(&path, frame, NeedleOptions { threshold: c.threshold, region }).await?;
        let needle = self.needle(&path)?;
        let mut e = Evaluation::new(m.passed());
        e.score = Some(m.score());
        e.threshold = m.threshold();
        e.found = m.first_box();
        e.note = Some(format!("offset ({}, {}): {}", m.offset.0, m.offset.1, m.describe()));
        e.text = m.areas.iter().filter_map(|a| a.text.clone()).reduce(|a, b| format!("{a}\n{b}"));
        for a in &m.areas {
            let name = format!("{} area {}", if a.kind == AreaKind::Ocr { "ocr" } else { "match" }, a.index);
            e.scores.push(score(name, a.score, Some(a.threshold), a.passed, Some(a.found)));
        }
        if !e.passed {
            e.diff = needle_heatmap(needle, &m, frame);
        }
        e.reference_path = Some(path);
        Ok(e)
    }

    fn needle(&mut self, path: &Path) -> Result<&NeedleImage, CheckError> {
        if !self.needles.contains_key(path) {
            let n = NeedleImage::load(path).map_err(|e| CheckError::Invalid(e.to_string()))?;
            self.needles.insert(path.to_path_buf(), n);
        }
        self.needles.get(path).ok_or_else(|| CheckError::Infra(format!("needle {} vanished", path.display())))
    }

    /// Search a needle and judge its ocr areas (when the image areas passed).
    async fn find_needle(
        &mut self,
        path: &Path,
        frame: &Frame,
        options: NeedleOptions,
    ) -> Result<NeedleMatch, CheckError> {
        let ocr = self.ocr.clone();
        let needle = self.needle(path)?;
        let mut m = vision::needle::find_needle(frame, needle, &options)
            .map_err(|e| CheckError::Invalid(format!("needle {}: {e}", display_path(path))))?;
        if !m.found {
            return Ok(m);
        }
        for a in m.areas.iter_mut().filter(|a| a.kind == AreaKind::Ocr) {
            let spec = &needle.spec.areas[a.index];
            let want = spec.text.clone().unwrap_or_default();
            let len = want.chars().count().max(1) as f64;
            // `max_distance`, else `threshold` as the least similarity (1 - edits / length)
            let max = spec
                .max_distance
                .or(spec.threshold.map(|t| ((1.0 - t) * len + 1e-9).floor().max(0.0) as u32))
                .unwrap_or(0);
            let query = vision::ocr::TextQuery::fuzzy(want.clone(), false, max);
            let read = a.found.expand(spec.margin.unwrap_or(0), &frame.bounds());
            let found = ocr.find(frame, Some(read), &query).await.map_err(|e| CheckError::Infra(e.to_string()))?;
            a.passed = found.found.is_some();
            a.score = found.distance.map_or(0.0, |d| 1.0 - d as f64 / len);
            a.threshold = 1.0 - max as f64 / len;
            a.text = Some(found.matched.unwrap_or(found.text));
        }
        Ok(m)
    }

    fn save_reference(&mut self, path: &Path, actual: &Frame, c: &SsimCheck) -> Result<(), CheckError> {
        let sidecar = Sidecar::for_check(c, &self.provenance);
        crate::references::write(path, actual, &sidecar).map_err(CheckError::Infra)?;
        self.references.insert(path.to_path_buf(), actual.clone());
        if !self.created.contains(&path.to_path_buf()) {
            self.created.push(path.to_path_buf());
        }
        Ok(())
    }

    fn load_reference(&mut self, path: &Path) -> Result<Frame, CheckError> {
        if let Some(f) = self.references.get(path) {
            return Ok(f.clone());
        }
        let f = Frame::load_png(path).map_err(|e| CheckError::Infra(e.to_string()))?;
        self.references.insert(path.to_path_buf(), f.clone());
        Ok(f)
    }

    /// Find text on the screen for a click: the centre of the match.
    pub async fn locate_text(
        &self,
        query: &TextMatch,
        region: Option<Rect>,
        frame: &Frame,
    ) -> Result<(Option<Rect>, String), CheckError> {
        let region = checked_region(region, frame)?;
        let found =
            self.ocr.find(frame, region, &text_query(query)).await.map_err(|e| CheckError::Infra(e.to_string()))?;
        Ok((found.found, found.text))
    }

    /// Find a needle's click point on the screen: the point (when the needle
    /// passed) and the match.
    pub async fn locate_needle(
        &mut self,
        needle: &Reference,
        point: Option<&str>,
        options: NeedleOptions,
        frame: &Frame,
    ) -> Result<(Option<Point>, NeedleMatch), CheckError> {
        let region = checked_region(options.region, frame)?;
        let path = reference_path(needle)?;
        let m = self.find_needle(&path, frame, NeedleOptions { region, ..options }).await?;
        let n = self.needle(&path)?;
        let p = n.point(point).ok_or_else(|| {
            CheckError::Invalid(format!("needle {} has no click point {}", n.name, point.unwrap_or("(default)")))
        })?;
        Ok((m.passed().then(|| m.displace(p, frame.bounds())), m))
    }

    /// The heatmap of a needle that was not found, against its best candidate.
    pub fn needle_diff(&mut self, needle: &Reference, m: &NeedleMatch, frame: &Frame) -> Option<Frame> {
        let path = reference_path(needle).ok()?;
        needle_heatmap(self.needle(&path).ok()?, m, frame)
    }

    /// The heatmap of a reference image against the screen's pixels at `at`
    /// (its best candidate).
    pub fn image_diff(&mut self, reference: &Reference, at: Rect, frame: &Frame) -> Option<Frame> {
        let path = reference_path(reference).ok()?;
        let want = self.load_reference(&path).ok()?;
        Some(vision::diff::heatmap(&want, &frame.crop(at)?))
    }

    /// Find a reference image on the screen: the best match, its score, and
    /// whether it counts as found at `threshold`.
    pub fn locate_image(
        &mut self,
        reference: &Reference,
        region: Option<Rect>,
        threshold: f64,
        frame: &Frame,
    ) -> Result<(Rect, f64, bool), CheckError> {
        let region = checked_region(region, frame)?;
        let path = reference_path(reference)?;
        if !path.is_file() {
            return Err(CheckError::Invalid(format!("image {} does not exist", display_path(&path))));
        }
        let needle = self.load_reference(&path)?;
        let needle = vision::template::Needle::new(&needle)
            .map_err(|e| CheckError::Invalid(format!("image {}: {e}", display_path(&path))))?;
        let options = vision::template::MatchOptions { region, threshold, ..Default::default() };
        let m = vision::template::find_template(frame, &needle, &options)
            .map_err(|e| CheckError::Invalid(e.to_string()))?;
        Ok((m.rect, m.score, m.found))
    }
}

/// Where a needle that did not pass differs from its best candidate: the
/// first failing match area against the screen's pixels there.
fn needle_heatmap(needle: &NeedleImage, m: &NeedleMatch, frame: &Frame) -> Option<Frame> {
    let a = m.areas.iter().find(|a| a.kind == AreaKind::Match && !a.passed)?;
    let (want, got) = (needle.image.crop(a.expected)?, frame.crop(a.found)?);
    Some(vision::diff::heatmap(&want, &got))
}

/// A decider's partial score, named after the decider.
fn prefixed(d: &Expect, s: &CheckScore) -> CheckScore {
    CheckScore { name: format!("{}: {}", d.check.kind(), s.name), ..s.clone() }
}

/// A failed model call: budgets and unreachable endpoints are infrastructure.
pub fn vlm_error(e: crate::vlm::VlmError) -> CheckError {
    CheckError::Infra(format!("vision-language model: {e}"))
}

fn reference_path(r: &Reference) -> Result<PathBuf, CheckError> {
    r.path.clone().ok_or_else(|| CheckError::Infra(format!("reference {} was not resolved by the plan", r.name)))
}

/// The region, checked against the screen: it must lie inside it.
fn checked_region(region: Option<Rect>, frame: &Frame) -> Result<Option<Rect>, CheckError> {
    match region {
        Some(r) if !frame.bounds().contains_rect(&r) => {
            Err(CheckError::Invalid(format!("region {r} lies outside the {}x{} screen", frame.width(), frame.height())))
        }
        r => Ok(r),
    }
}

fn text_query(m: &TextMatch) -> vision::ocr::TextQuery {
    match m {
        TextMatch::Contains { text, case_sensitive } => {
            vision::ocr::TextQuery::Contains { text: text.clone(), case_sensitive: *case_sensitive }
        }
        TextMatch::Regex(r) => vision::ocr::TextQuery::Regex(r.clone()),
        TextMatch::Fuzzy { text, case_sensitive, max_distance } => {
            vision::ocr::TextQuery::fuzzy(text.clone(), *case_sensitive, *max_distance)
        }
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The click point for a found box, moved by `offset` and kept on screen.
pub fn target_point(found: Rect, offset: (i32, i32), frame: &Frame) -> Point {
    let c = found.center();
    let x = (c.x as i64 + offset.0 as i64).clamp(0, frame.width() as i64 - 1);
    let y = (c.y as i64 + offset.1 as i64).clamp(0, frame.height() as i64 - 1);
    Point::new(x as u32, y as u32)
}
