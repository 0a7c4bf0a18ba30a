//! `smoke replay`: the questions a past run asked the model, with the images
//! it was shown, so a prompt (or another model) can be tried offline.

use std::path::{Path, PathBuf};

use crate::events::Event;
use crate::frame::Frame;

/// Why a run's questions cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("step {step} of {run} asked the model nothing{hint}")]
    NoQuestions { step: usize, run: String, hint: String },
    #[error("the image of step {step} ({path}) cannot be loaded: {why}")]
    Image { step: usize, path: PathBuf, why: String },
}

/// One question of the past run, with what it was answered then.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub step: usize,
    /// `check`, `guard`, `locate` or `precheck`.
    pub purpose: String,
    pub question: String,
    pub model: String,
    pub answer: String,
    pub image: Frame,
    pub image_path: PathBuf,
    /// SHA-256 of the image's pixels.
    pub image_hash: String,
}

impl Recorded {
    /// A locate question (the answer is a point), not a yes/no one.
    pub fn is_locate(&self) -> bool {
        self.purpose == "locate"
    }
}

/// The distinct questions step `step` of the run in `run_dir` asked (a
/// question repeated on the same image by polling is listed once).
pub fn recorded(run_dir: &Path, step: usize) -> Result<Vec<Recorded>, ReplayError> {
    let events = run_dir.join("events.jsonl");
    let (records, _) =
        crate::events::read_jsonl(&events).map_err(|source| ReplayError::Read { path: events.clone(), source })?;
    let mut out: Vec<Recorded> = Vec::new();
    let mut steps_with_questions = Vec::new();
    for r in &records {
        let Event::Vlm { step: s, purpose, question, model, answer, image, image_path, .. } = &r.event else {
            continue;
        };
        steps_with_questions.push(*s);
        let Some(rel) = image_path else { continue };
        if *s != step || out.iter().any(|o| o.question == *question && o.purpose == *purpose && o.image_hash == *image)
        {
            continue;
        }
        let path = run_dir.join(rel);
        let frame =
            Frame::load_png(&path).map_err(|e| ReplayError::Image { step, path: path.clone(), why: e.to_string() })?;
        out.push(Recorded {
            step,
            purpose: purpose.clone(),
            question: question.clone(),
            model: model.clone(),
            answer: answer.clone(),
            image: frame,
            image_path: path,
            image_hash: image.clone(),
        });
    }
    if out.is_empty() {
        steps_with_questions.sort_unstable();
        steps_with_questions.dedup();
        let hint = if steps_with_questions.is_empty() {
            " (no step of this run did)".to_string()
        } else {
            format!(
                " (steps that did: {})",
                steps_with_questions.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
            )
        };
        return Err(ReplayError::NoQuestions { step, run: run_dir.display().to_string(), hint });
    }
    Ok(out)
}
