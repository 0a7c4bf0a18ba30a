//! summary.json: the verdict of a run and each step's outcome with its check
//! numbers, derived from the event stream (schema `smoke.summary/1`,
//! documented in docs/RESULTS.md).

use serde::Serialize;

use crate::events::{Event, Record, StepStatus, Verdict};

pub const SCHEMA: &str = "smoke.summary/1";

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub schema: &'static str,
    pub scenario: String,
    pub file: String,
    pub os: String,
    pub backend: String,
    pub inputs: String,
    pub verdict: Verdict,
    pub exit_code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub started: String,
    pub duration_ms: u64,
    pub counts: Counts,
    pub steps: Vec<StepSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingSummary>,
    /// Evidence collected from the target after a failure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forensics: Vec<serde_json::Value>,
    pub warnings: Vec<String>,
    /// What the vision-language model cost this run (absent when it was not asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlm: Option<VlmTotals>,
    /// How the last boot step ended: outcome, stages, failure, transcript tail, serial log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<serde_json::Value>,
    /// Rollbacks to checkpoints after failed steps.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rewinds: Vec<serde_json::Value>,
}

/// Totals of the run's questions to the vision-language model.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VlmTotals {
    /// Questions that reached the model.
    pub calls: u64,
    /// Questions answered from the cache (no call).
    pub cached: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: f64,
    /// Time spent waiting for the model.
    pub latency_ms: u64,
    /// Answers that were neither yes nor no (counted as no).
    pub unparseable: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
    pub skipped: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepSummary {
    pub step: usize,
    pub label: String,
    pub kind: String,
    pub cleanup: bool,
    pub source: String,
    pub status: StepStatus,
    pub duration_ms: u64,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_screenshot: Option<String>,
    pub checks: Vec<serde_json::Value>,
    /// The step's questions to the vision-language model.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vlm: Vec<serde_json::Value>,
    pub screenshots: Vec<String>,
    /// Recording frame index when the step started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordingSummary {
    pub path: String,
    pub frames_sampled: u64,
    pub frames_kept: u64,
    pub bytes: u64,
}

/// Build the summary from a run's events. Works on the events of a run that
/// died halfway too: unfinished steps count as errors, the verdict as error.
pub fn from_events(records: &[Record]) -> Summary {
    let mut s = Summary {
        schema: SCHEMA,
        scenario: String::new(),
        file: String::new(),
        os: String::new(),
        backend: String::new(),
        inputs: String::new(),
        verdict: Verdict::Error,
        exit_code: Verdict::Error.exit_code(),
        reason: Some("the run ended without a run_finished event".into()),
        started: records.first().map(|r| r.time.clone()).unwrap_or_default(),
        duration_ms: records.last().map(|r| (r.t * 1000.0) as u64).unwrap_or(0),
        counts: Counts::default(),
        steps: Vec::new(),
        recording: None,
        forensics: Vec::new(),
        warnings: Vec::new(),
        vlm: None,
        boot: None,
        rewinds: Vec::new(),
    };
    for r in records {
        match &r.event {
            Event::RunStarted { scenario, file, os, backend, inputs, .. } => {
                s.scenario = scenario.clone();
                s.file = file.clone();
                s.os = os.clone();
                s.backend = backend.clone();
                s.inputs = inputs.clone();
            }
            Event::StepStarted { step, label, kind, cleanup, source, frame, .. } => {
                if let Some(existing) = s.steps.iter_mut().find(|x| x.step == *step) {
                    existing.attempts += 1;
                    continue;
                }
                s.steps.push(StepSummary {
                    step: *step,
                    label: label.clone(),
                    kind: kind.clone(),
                    cleanup: *cleanup,
                    source: source.clone(),
                    status: StepStatus::Error,
                    duration_ms: 0,
                    attempts: 1,
                    error: Some("the step did not finish".into()),
                    failure_screenshot: None,
                    checks: Vec::new(),
                    vlm: Vec::new(),
                    screenshots: Vec::new(),
                    frame: *frame,
                });
            }
            Event::Check { step, screenshot, .. } => {
                if let Some(x) = s.steps.iter_mut().find(|x| x.step == *step) {
                    if let Ok(v) = serde_json::to_value(&r.event) {
                        x.checks.push(v);
                    }
                    if let Some(p) = screenshot {
                        x.screenshots.push(p.clone());
                    }
                }
            }
            Event::Vlm { step, cached, prompt_tokens, completion_tokens, cost, latency_ms, verdict, .. } => {
                let t = s.vlm.get_or_insert_with(VlmTotals::default);
                if *cached {
                    t.cached += 1;
                } else {
                    t.calls += 1;
                }
                t.prompt_tokens += prompt_tokens;
                t.completion_tokens += completion_tokens;
                t.cost += cost;
                t.latency_ms += latency_ms;
                t.unparseable += u64::from(verdict.as_deref() == Some("unparseable"));
                if let (Some(x), Ok(mut v)) =
                    (s.steps.iter_mut().find(|x| x.step == *step), serde_json::to_value(&r.event))
                {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("event");
                    }
                    x.vlm.push(v);
                }
            }
            Event::Screenshot { step, path, .. } => {
                if let Some(x) = s.steps.iter_mut().find(|x| x.step == *step) {
                    x.screenshots.push(path.clone());
                }
            }
            Event::StepFinished { step, label, status, duration_ms, attempts, error, failure_screenshot } => {
                if !s.steps.iter().any(|x| x.step == *step) {
                    // a step that never started (skipped)
                    s.steps.push(StepSummary {
                        step: *step,
                        label: label.clone(),
                        kind: String::new(),
                        cleanup: false,
                        source: String::new(),
                        status: *status,
                        duration_ms: 0,
                        attempts: 0,
                        error: None,
                        failure_screenshot: None,
                        checks: Vec::new(),
                        vlm: Vec::new(),
                        screenshots: Vec::new(),
                        frame: None,
                    });
                }
                if let Some(x) = s.steps.iter_mut().find(|x| x.step == *step) {
                    x.status = *status;
                    x.duration_ms = *duration_ms;
                    x.attempts = *attempts;
                    x.error = error.clone();
                    x.failure_screenshot = failure_screenshot.clone();
                }
            }
            Event::Recording { path, frames_sampled, frames_kept, bytes, .. } => {
                s.recording = Some(RecordingSummary {
                    path: path.clone(),
                    frames_sampled: *frames_sampled,
                    frames_kept: *frames_kept,
                    bytes: *bytes,
                });
            }
            Event::Forensics { .. } => {
                if let Ok(mut v) = serde_json::to_value(&r.event) {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("event");
                    }
                    s.forensics.push(v);
                }
            }
            Event::Warning { message } => s.warnings.push(message.clone()),
            Event::Boot { .. } | Event::Rewind { .. } => {
                if let Ok(mut v) = serde_json::to_value(&r.event) {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("event");
                    }
                    if matches!(r.event, Event::Boot { .. }) {
                        s.boot = Some(v);
                    } else {
                        s.rewinds.push(v);
                    }
                }
            }
            Event::RunFinished { verdict, exit_code, duration_ms, reason, .. } => {
                s.verdict = *verdict;
                s.exit_code = *exit_code;
                s.duration_ms = *duration_ms;
                s.reason = reason.clone();
            }
            _ => {}
        }
    }
    s.steps.sort_by_key(|x| x.step);
    for x in &s.steps {
        match x.status {
            StepStatus::Passed => s.counts.passed += 1,
            StepStatus::Failed => s.counts.failed += 1,
            StepStatus::Error => s.counts.errors += 1,
            StepStatus::Skipped => s.counts.skipped += 1,
        }
    }
    s
}
