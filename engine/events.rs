//! The event stream of a run. The runner emits structured events; every
//! consumer (events.jsonl, the console, the JUnit and summary writers, later
//! the HTML report) reads the same stream. Each event is written and flushed as
//! it happens, so a run that dies halfway still leaves a readable log. Every
//! string passes the [`Redactor`] before it is written anywhere.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::geometry::{Point, Rect};
use crate::secrets::Redactor;

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Passed,
    /// A check did not hold, or a command exited wrongly: the app's fault.
    Failed,
    /// smoke or the target broke (VNC gone, tool missing): not the app's fault.
    Error,
    /// Not run because the run stopped before it.
    Skipped,
}

/// The outcome of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    Failed,
    Invalid,
    Error,
    Interrupted,
}

impl Verdict {
    /// The process exit code for this verdict (documented in the README).
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Passed => 0,
            Verdict::Failed => 1,
            Verdict::Invalid => 2,
            Verdict::Error => 3,
            Verdict::Interrupted => 130,
        }
    }
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        scenario: String,
        file: String,
        os: String,
        backend: String,
        results: String,
        smoke_version: String,
        steps: usize,
        /// Fingerprint of the inputs (scenario, routines, references, vars, target).
        #[serde(default)]
        inputs: String,
    },
    TargetReady {
        desktop_name: String,
        width: u32,
        height: u32,
        vnc: String,
        setup_ms: u64,
    },
    StepStarted {
        step: usize,
        label: String,
        kind: String,
        cleanup: bool,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        routines: Vec<String>,
        source: String,
        /// Index of the recording's latest kept frame when the step started.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frame: Option<u64>,
    },
    Input {
        step: usize,
        action: String,
        detail: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<Point>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        events: Option<usize>,
    },
    Shell {
        step: usize,
        command: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        timed_out: bool,
        duration_ms: u64,
        stdout: String,
        stderr: String,
        /// Where it ran: `local` or `ssh user@host:port`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
        /// The file `{file}` was resolved to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        /// Where the output was saved (`save:`), relative to the results.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        saved: Option<String>,
    },
    Launch {
        step: usize,
        command: String,
        process: String,
        pid: u32,
        log: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    /// One piece of evidence collected from the target after a failure.
    Forensics {
        /// What was collected (the forensics step's label).
        item: String,
        /// The saved file, relative to the results.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        bytes: u64,
        /// Earlier output was dropped to keep the size cap.
        truncated: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        duration_ms: u64,
        /// Why it could not be collected (never fails the run).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Check {
        step: usize,
        kind: String,
        negate: bool,
        passed: bool,
        /// Human description ("ocr \"42\" in 10,10 200x40").
        check: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        score: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        threshold: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        found: Option<Rect>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<Rect>,
        polls: u32,
        elapsed_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        screenshot: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        diff: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// Every partial score behind the verdict (SSIM per region and channel,
        /// needle per area, OCR edit distance), for plotting drift across runs.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        scores: Vec<CheckScore>,
        /// The actual image the check compared (results-relative), for `smoke approve`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actual: Option<String>,
        /// The reference file's absolute path, for `smoke approve`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference_path: Option<String>,
    },
    Screenshot {
        step: usize,
        path: String,
        reason: String,
    },
    /// One question to the vision-language model (or its answer from the cache).
    Vlm {
        step: usize,
        /// `check`, `guard` (if_visible), `locate` or `precheck`.
        purpose: String,
        question: String,
        model: String,
        /// The answer as the model gave it (reasoning stripped; cut at 2000 characters).
        answer: String,
        /// yes, no or unparseable (judge questions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verdict: Option<String>,
        /// Where a locate answer points (screen coordinates).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        point: Option<crate::geometry::Point>,
        cached: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        latency_ms: u64,
        prompt_tokens: u64,
        completion_tokens: u64,
        cost: f64,
        /// SHA-256 of the image's pixels (the cache key's image part).
        image: String,
        /// The image the model was shown (results-relative), for `smoke replay`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image_path: Option<String>,
        /// Where the image lies on the screen, when it is a crop.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<Rect>,
    },
    /// The model endpoint answered before the first step.
    VlmReady {
        endpoint: String,
        models: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warmup_ms: Option<u64>,
    },
    StepFinished {
        step: usize,
        label: String,
        status: StepStatus,
        duration_ms: u64,
        attempts: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure_screenshot: Option<String>,
    },
    Recording {
        path: String,
        frames_sampled: u64,
        frames_kept: u64,
        bytes: u64,
        duration_ms: u64,
    },
    Warning {
        message: String,
    },
    /// A machine lock taken for the run (VM, GPU).
    Lock {
        /// `vm qemu:/x`, `gpu 0000:01:00.0 on host`.
        resource: String,
        waited_ms: u64,
        /// A holder that died without releasing it (its pid and what it did).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<String>,
    },
    /// How a boot step ended, judged from the serial console.
    Boot {
        step: usize,
        outcome: crate::vm::boot::BootOutcome,
        /// BOOTED, BOOT-FAILED, STALLED, TIMEOUT.
        label: String,
        /// The run's exit code when this ends it (0 for BOOTED).
        exit_code: i32,
        /// The furthest stage reached.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<crate::vm::boot::Stage>,
        /// The first line of each stage, with when it came.
        stages: Vec<crate::vm::boot::Hit>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<crate::vm::boot::FailureHit>,
        summary: String,
        elapsed_ms: u64,
        silent_ms: u64,
        /// The end of the serial transcript (escape sequences stripped).
        transcript: String,
        /// The whole serial log in the results.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log: Option<String>,
    },
    /// Serial console traffic of an `expect` or `send` step.
    Serial {
        step: usize,
        /// `expect` or `send`.
        direction: String,
        /// What was sent, or the text that matched.
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pattern: Option<String>,
        elapsed_ms: u64,
    },
    /// A checkpoint snapshot was created, deleted (retention, teardown) or kept.
    Checkpoint {
        step: usize,
        name: String,
        snapshot: String,
        /// `created`, `deleted`, `kept`.
        action: String,
        duration_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A failed step made the run roll the VM back to a checkpoint and go on after it.
    Rewind {
        /// The step that failed.
        step: usize,
        checkpoint: String,
        /// The checkpoint's step: the run goes on after it.
        to_step: usize,
        /// Why the step failed.
        error: String,
        duration_ms: u64,
    },
    RunFinished {
        verdict: Verdict,
        exit_code: i32,
        duration_ms: u64,
        passed: usize,
        failed: usize,
        errors: usize,
        skipped: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// One named score of a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckScore {
    /// What was scored: `area`, `region 1`, `red`, `edit distance`...
    pub name: String,
    pub score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    pub passed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Rect>,
}

/// An event with its time: `time` (UTC, RFC 3339) and `t` (seconds since the run started).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub time: String,
    pub t: f64,
    #[serde(flatten)]
    pub event: Event,
}

/// Something that consumes events as they happen.
pub trait EventSink: Send {
    fn event(&mut self, record: &Record);
}

/// Writes one JSON object per line, flushed per event.
pub struct JsonlSink {
    out: std::io::BufWriter<std::fs::File>,
}

impl JsonlSink {
    pub fn create(path: &Path) -> std::io::Result<JsonlSink> {
        Ok(JsonlSink { out: std::io::BufWriter::new(std::fs::File::create(path)?) })
    }
}

impl EventSink for JsonlSink {
    fn event(&mut self, record: &Record) {
        if let Ok(line) = serde_json::to_string(record) {
            // A full disk must not stop the run; the console still shows progress.
            let _ = writeln!(self.out, "{line}");
            let _ = self.out.flush();
        }
    }
}

struct Inner {
    start: Instant,
    sinks: Vec<Box<dyn EventSink>>,
    records: Vec<Record>,
}

/// The event bus of one run: timestamps, redacts, fans out, and keeps a copy
/// for the end-of-run writers. Cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Mutex<Inner>>,
    redactor: Redactor,
}

impl EventLog {
    pub fn new(redactor: Redactor) -> EventLog {
        EventLog {
            inner: Arc::new(Mutex::new(Inner { start: Instant::now(), sinks: Vec::new(), records: Vec::new() })),
            redactor,
        }
    }

    pub fn add_sink(&self, sink: Box<dyn EventSink>) {
        if let Ok(mut i) = self.inner.lock() {
            i.sinks.push(sink);
        }
    }

    /// Seconds since the log was created.
    pub fn elapsed(&self) -> f64 {
        self.inner.lock().map(|i| i.start.elapsed().as_secs_f64()).unwrap_or(0.0)
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Record an event (redacted) and hand it to every sink.
    pub fn emit(&self, event: Event) {
        let event = self.redact(event);
        let Ok(mut inner) = self.inner.lock() else { return };
        let record = Record { time: now_rfc3339(), t: round_ms(inner.start.elapsed().as_secs_f64()), event };
        for sink in inner.sinks.iter_mut() {
            sink.event(&record);
        }
        inner.records.push(record);
    }

    fn redact(&self, event: Event) -> Event {
        let Ok(mut json) = serde_json::to_value(&event) else { return event };
        let before = json.clone();
        self.redactor.redact_json(&mut json);
        if json == before {
            return event;
        }
        serde_json::from_value(json).unwrap_or(event)
    }

    /// Every event so far.
    pub fn records(&self) -> Vec<Record> {
        self.inner.lock().map(|i| i.records.clone()).unwrap_or_default()
    }
}

fn round_ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

/// The current UTC time as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    now.format(&fmt).unwrap_or_default()
}

/// Read an events.jsonl file (lines that do not parse are skipped and counted).
pub fn read_jsonl(path: &Path) -> std::io::Result<(Vec<Record>, usize)> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(r) => out.push(r),
            Err(_) => bad += 1,
        }
    }
    Ok((out, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretStore;

    #[test]
    fn events_are_redacted_flushed_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::default();
        store.remember("s3cr3t-pw");
        let log = EventLog::new(store.redactor());
        let path = dir.path().join("events.jsonl");
        log.add_sink(Box::new(JsonlSink::create(&path).unwrap()));
        log.emit(Event::Input {
            step: 1,
            action: "type".into(),
            detail: "typed s3cr3t-pw!".into(),
            at: None,
            events: Some(9),
        });
        log.emit(Event::Warning { message: "plain".into() });
        // flushed per line: readable before the log is dropped
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cr3t-pw"), "{text}");
        let (records, bad) = read_jsonl(&path).unwrap();
        assert_eq!((records.len(), bad), (2, 0));
        match &records[0].event {
            Event::Input { detail, .. } => assert_eq!(detail, "typed ******!"),
            e => panic!("{e:?}"),
        }
        assert!(text.lines().next().unwrap().contains("\"event\":\"input\""));
        assert_eq!(log.records().len(), 2);
    }
}
