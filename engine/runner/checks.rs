//! Evaluating checks on a frame: OCR text, SSIM against a reference image,
//! and locating click targets (text by OCR, images by template match).
//! Pure decisions on one frame; the runner does the polling.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::frame::Frame;
use crate::geometry::{Point, Rect};
use crate::project::display_path;
use crate::scenario::model::{Check, Expect, OcrCheck, Reference, SsimCheck, SsimWindowKind, TextMatch};
use crate::scenario::plan::UpdateReferences;
use crate::vision;

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
    update: UpdateReferences,
    /// References written by this run.
    pub created: Vec<PathBuf>,
}

impl Checker {
    pub fn new(update: UpdateReferences) -> Checker {
        Checker { ocr: vision::ocr::Ocr::default(), references: HashMap::new(), update, created: Vec::new() }
    }

    /// Evaluate one expectation on `frame`.
    pub async fn evaluate(&mut self, expect: &Expect, frame: &Frame) -> Result<Evaluation, CheckError> {
        let mut e = match &expect.check {
            Check::Ocr(c) => self.ocr_check(c, frame).await?,
            Check::Ssim(c) => self.ssim_check(c, frame)?,
        };
        if expect.negate {
            e.passed = !e.passed;
        }
        Ok(e)
    }

    async fn ocr_check(&self, c: &OcrCheck, frame: &Frame) -> Result<Evaluation, CheckError> {
        let region = checked_region(c.region, frame)?;
        let found =
            self.ocr.find(frame, region, &text_query(&c.query)).await.map_err(|e| CheckError::Infra(e.to_string()))?;
        Ok(Evaluation {
            passed: found.found.is_some(),
            score: None,
            threshold: None,
            text: Some(found.text.clone()),
            found: found.found,
            note: Some(format!("OCR pass: {}", found.variant)),
            diff: None,
        })
    }

    fn ssim_check(&mut self, c: &SsimCheck, frame: &Frame) -> Result<Evaluation, CheckError> {
        let region = checked_region(c.region, frame)?.unwrap_or_else(|| frame.bounds());
        let actual = frame.crop(region).ok_or_else(|| CheckError::Invalid(format!("region {region} is empty")))?;
        let path = reference_path(&c.reference)?;
        let exists = path.is_file();
        if self.update == UpdateReferences::All || (self.update == UpdateReferences::Missing && !exists) {
            self.save_reference(&path, &actual)?;
            return Ok(Evaluation {
                passed: true,
                score: Some(1.0),
                threshold: Some(c.threshold),
                text: None,
                found: Some(region),
                note: Some(format!("reference {} {}", if exists { "updated" } else { "created" }, display_path(&path))),
                diff: None,
            });
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
        let mask = vision::Mask::from_rects(c.mask.iter().copied()).relative_to(region);
        let window = match c.window {
            SsimWindowKind::Gaussian => vision::ssim::SsimWindow::Gaussian { sigma: 1.5 },
            SsimWindowKind::Box => vision::ssim::SsimWindow::Box { size: 7 },
        };
        let options = vision::ssim::SsimOptions { mask, window, ..Default::default() };
        let score = vision::ssim::ssim_frames(&reference, &actual, &options)
            .map_err(|e| CheckError::Invalid(e.to_string()))?
            .score;
        let passed = score >= c.threshold;
        let diff = (!passed).then(|| vision::diff::heatmap(&reference, &actual));
        Ok(Evaluation {
            passed,
            score: Some(score),
            threshold: Some(c.threshold),
            text: None,
            found: Some(region),
            note: None,
            diff,
        })
    }

    fn save_reference(&mut self, path: &Path, actual: &Frame) -> Result<(), CheckError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| CheckError::Infra(format!("create {}: {e}", dir.display())))?;
        }
        actual.save_png(path).map_err(|e| CheckError::Infra(e.to_string()))?;
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
    }
}

/// The click point for a found box, moved by `offset` and kept on screen.
pub fn target_point(found: Rect, offset: (i32, i32), frame: &Frame) -> Point {
    let c = found.center();
    let x = (c.x as i64 + offset.0 as i64).clamp(0, frame.width() as i64 - 1);
    let y = (c.y as i64 + offset.1 as i64).clamp(0, frame.height() as i64 - 1);
    Point::new(x as u32, y as u32)
}
