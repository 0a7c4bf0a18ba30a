//! Running a matrix: validate every cell first, then run the valid ones in
//! parallel up to a limit. Targets that are one shared machine (a `vnc`
//! server) run one scenario at a time; every `local-desktop` run gets its own
//! desktop. Each run has a timeout (then its cleanup still runs). Ctrl-C stops
//! starting new runs, lets running ones clean up, and still writes the
//! matrix summary, JUnit and report.
//!
//! ```text
//! results/matrix-<time>/
//!   matrix.json     schema smoke.matrix/1 (docs/RESULTS.md)
//!   junit.xml       every run's suite
//!   matrix.html     scenario x OS grid with verdicts, durations and trends
//!   <time>-<scenario>-<os>/   each run's own results
//! ```

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Semaphore, watch};

use crate::events::{Event, EventSink, Record, Verdict};
use crate::inventory::Backend;
use crate::matrix::Cell;
use crate::project::display_path;
use crate::results::{junit, summary};
use crate::run::{self, RunRequest};
use crate::runner::Cancel;
use crate::scenario::plan::UpdateReferences;

/// How to run a matrix.
#[derive(Debug, Clone)]
pub struct MatrixOptions {
    pub jobs: usize,
    pub timeout: Duration,
    /// Time a timed-out run gets for its cleanup before it is stopped hard.
    pub grace: Duration,
    pub results_root: PathBuf,
    pub inventory: Option<PathBuf>,
    pub vars: Vec<String>,
    pub update_references: UpdateReferences,
    /// `--no-cache`: every VLM question goes to the model.
    pub no_cache: bool,
}

/// The outcome of one cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOutcome {
    pub scenario: String,
    pub os: String,
    pub file: String,
    pub verdict: Verdict,
    pub exit_code: i32,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// The run folder, relative to the matrix folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// matrix.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixSummary {
    pub schema: String,
    pub started: String,
    pub duration_ms: u64,
    pub verdict: Verdict,
    pub exit_code: i32,
    pub jobs: usize,
    pub runs: Vec<RunOutcome>,
}

/// The schema id of matrix.json.
pub const SCHEMA: &str = "smoke.matrix/1";

/// The matrix verdict: interrupted, else the worst of error, failed, invalid.
pub fn overall(runs: &[RunOutcome], interrupted: bool) -> Verdict {
    let any = |v: Verdict| runs.iter().any(|r| r.verdict == v);
    if interrupted || any(Verdict::Interrupted) {
        Verdict::Interrupted
    } else if any(Verdict::Error) {
        Verdict::Error
    } else if any(Verdict::Failed) {
        Verdict::Failed
    } else if any(Verdict::Invalid) {
        Verdict::Invalid
    } else {
        Verdict::Passed
    }
}

/// Create `<root>/matrix-<UTC time>`.
pub fn create_dir(root: &Path) -> std::io::Result<PathBuf> {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let stamp = time::OffsetDateTime::now_utc().format(&fmt).unwrap_or_else(|_| "now".into());
    let mut dir = root.join(format!("matrix-{stamp}"));
    let mut n = 2;
    while dir.exists() {
        dir = root.join(format!("matrix-{stamp}-{n}"));
        n += 1;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Run every cell; returns the matrix folder and summary.
pub async fn run(
    cells: Vec<Cell>,
    opts: MatrixOptions,
    mut cancel: watch::Receiver<Cancel>,
) -> std::io::Result<(PathBuf, MatrixSummary)> {
    let start = Instant::now();
    let started = crate::events::now_rfc3339();
    let dir = create_dir(&opts.results_root)?;
    let progress = Progress::new();
    let semaphore = Arc::new(Semaphore::new(opts.jobs.max(1)));
    let mut target_locks: HashMap<String, Arc<Mutex<()>>> = HashMap::new();
    let (fanout_tx, fanout_rx) = watch::channel(Cancel::Run);
    // forward Ctrl-C to every run
    let forward = tokio::spawn(async move {
        while cancel.changed().await.is_ok() {
            let level = *cancel.borrow();
            if fanout_tx.send(level).is_err() {
                return;
            }
        }
    });
    let mut tasks = Vec::new();
    for cell in cells {
        let prepared = run::prepare(
            &cell.file,
            Some(&cell.target.name),
            &opts.vars,
            opts.inventory.as_deref(),
            opts.update_references,
        );
        let base = RunOutcome {
            scenario: cell.name.clone(),
            os: cell.target.name.clone(),
            file: display_path(&cell.file),
            verdict: Verdict::Invalid,
            exit_code: Verdict::Invalid.exit_code(),
            timed_out: false,
            duration_ms: 0,
            run: None,
            reason: None,
        };
        let p = match prepared {
            Ok(p) => p,
            Err((d, sources)) => {
                let bar = progress.bar(&cell.name, &cell.target.name);
                bar.finish_with_message("invalid (not run)");
                tasks.push(tokio::spawn(
                    async move { RunOutcome { reason: Some(d.sorted().render(&sources)), ..base } },
                ));
                continue;
            }
        };
        let shared_machine = !matches!(cell.target.backend, Backend::LocalDesktop(_));
        let lock = shared_machine.then(|| target_locks.entry(cell.target.name.clone()).or_default().clone());
        let semaphore = semaphore.clone();
        let mut matrix_cancel = fanout_rx.clone();
        let opts = opts.clone();
        let dir = dir.clone();
        let bar = progress.bar(&cell.name, &cell.target.name);
        tasks.push(tokio::spawn(async move {
            let _machine = match &lock {
                Some(l) => Some(l.lock().await),
                None => None,
            };
            let _permit = semaphore.acquire_owned().await;
            if *matrix_cancel.borrow() >= Cancel::Soft {
                bar.finish_with_message("not started (interrupted)");
                return RunOutcome {
                    verdict: Verdict::Interrupted,
                    exit_code: Verdict::Interrupted.exit_code(),
                    reason: Some("not started: interrupted".into()),
                    ..base
                };
            }
            let (tx, rx) = watch::channel(Cancel::Run);
            let tx = Arc::new(tx);
            let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let watchdog = {
                let (tx, timed_out, timeout, grace) = (tx.clone(), timed_out.clone(), opts.timeout, opts.grace);
                tokio::spawn(async move {
                    let deadline = tokio::time::Instant::now() + timeout;
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep_until(deadline) => {
                                timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
                                let _ = tx.send(Cancel::Soft);
                                tokio::time::sleep(grace).await;
                                let _ = tx.send(Cancel::Hard);
                                return;
                            }
                            changed = matrix_cancel.changed() => {
                                if changed.is_err() { return; }
                                let level = *matrix_cancel.borrow();
                                let _ = tx.send(level);
                                if level == Cancel::Hard { return; }
                            }
                        }
                    }
                })
            };
            let req = RunRequest {
                scenario: cell.file.clone(),
                os: Some(cell.target.name.clone()),
                vars: opts.vars.clone(),
                inventory: opts.inventory.clone(),
                results_root: dir.clone(),
                update_references: opts.update_references,
                verbosity: crate::console::Verbosity::Quiet,
                history_root: Some(opts.results_root.clone()),
                pause_on_failure: false,
                no_cache: opts.no_cache,
                start_at: crate::runner::vm::StartAt::Beginning,
                keep_checkpoints: false,
                lock_timeout: None,
            };
            let t0 = Instant::now();
            let report = run::run_with_sink(p, &req, rx, Box::new(BarSink { bar: bar.clone(), total: 0 })).await;
            watchdog.abort();
            let timed_out = timed_out.load(std::sync::atomic::Ordering::SeqCst);
            let run_dir = report.results.clone();
            let summary = run_dir
                .as_ref()
                .and_then(|d| std::fs::read(d.join("summary.json")).ok())
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            let mut reason =
                summary.as_ref().and_then(|s| s.get("reason")?.as_str().map(str::to_string)).or(report.message.clone());
            let verdict = if timed_out { Verdict::Error } else { report.verdict };
            if timed_out {
                reason = Some(format!("timed out after {:.0}s (cleanup ran)", opts.timeout.as_secs_f64()));
            }
            let word = if timed_out { "timeout".to_string() } else { format!("{verdict:?}").to_lowercase() };
            bar.finish_with_message(format!("{word} in {:.1}s", t0.elapsed().as_secs_f64()));
            RunOutcome {
                verdict,
                exit_code: verdict.exit_code(),
                timed_out,
                duration_ms: t0.elapsed().as_millis() as u64,
                run: run_dir.map(|d| d.strip_prefix(&dir).unwrap_or(&d).display().to_string()),
                reason,
                ..base
            }
        }));
    }
    let mut runs = Vec::new();
    for t in tasks {
        match t.await {
            Ok(r) => runs.push(r),
            Err(e) => tracing::error!("a matrix run panicked: {e}"),
        }
    }
    forward.abort();
    let interrupted = *fanout_rx.borrow() >= Cancel::Soft;
    let verdict = overall(&runs, interrupted);
    let summary = MatrixSummary {
        schema: SCHEMA.into(),
        started,
        duration_ms: start.elapsed().as_millis() as u64,
        verdict,
        exit_code: verdict.exit_code(),
        jobs: opts.jobs,
        runs,
    };
    write_outputs(&dir, &summary, &opts.results_root)?;
    Ok((dir, summary))
}

/// matrix.json, the merged junit.xml and matrix.html of a matrix folder.
pub fn write_outputs(dir: &Path, summary: &MatrixSummary, history_root: &Path) -> std::io::Result<()> {
    std::fs::write(
        dir.join("matrix.json"),
        serde_json::to_string_pretty(summary).map_err(std::io::Error::other)? + "\n",
    )?;
    let mut suites = Vec::new();
    for r in &summary.runs {
        let s = match &r.run {
            Some(rel) => match crate::events::read_jsonl(&dir.join(rel).join("events.jsonl")) {
                Ok((records, _)) => summary::from_events(&records),
                Err(_) => continue,
            },
            None => synthetic(r),
        };
        suites.push(s);
    }
    std::fs::write(dir.join("junit.xml"), junit::render_many("smoke matrix", &suites))?;
    let history = crate::history::statuses(&crate::history::read(history_root));
    let cells: Vec<crate::report::matrix::Cell> = summary
        .runs
        .iter()
        .map(|r| crate::report::matrix::Cell {
            scenario: r.scenario.clone(),
            os: r.os.clone(),
            verdict: if r.timed_out { "timeout".into() } else { format!("{:?}", r.verdict).to_lowercase() },
            duration_ms: r.duration_ms,
            report: r.run.as_ref().map(|d| format!("{d}/report.html")),
            reason: r.reason.clone(),
        })
        .collect();
    let title = format!("smoke matrix {}", summary.started);
    std::fs::write(dir.join("matrix.html"), crate::report::matrix::render(&title, &cells, &history))
}

/// A summary for a cell that never ran (invalid scenario).
fn synthetic(r: &RunOutcome) -> summary::Summary {
    let mut s = summary::from_events(&[]);
    s.scenario = r.scenario.clone();
    s.os = r.os.clone();
    s.file = r.file.clone();
    s.verdict = r.verdict;
    s.exit_code = r.exit_code;
    s.reason = r.reason.clone();
    s
}

/// One progress line per run.
struct Progress {
    multi: MultiProgress,
    tty: bool,
}

impl Progress {
    fn new() -> Progress {
        let tty = std::io::stderr().is_terminal();
        let multi = MultiProgress::new();
        if !tty {
            multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        Progress { multi, tty }
    }

    fn bar(&self, scenario: &str, os: &str) -> Bar {
        let b = self.multi.add(ProgressBar::new_spinner());
        b.set_style(
            ProgressStyle::with_template("{spinner} {prefix:<36} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.set_prefix(format!("{scenario} @ {os}"));
        b.set_message("waiting");
        if self.tty {
            b.enable_steady_tick(Duration::from_millis(150));
        }
        Bar { bar: b, tty: self.tty, name: format!("{scenario} @ {os}") }
    }
}

#[derive(Clone)]
struct Bar {
    bar: ProgressBar,
    tty: bool,
    name: String,
}

impl Bar {
    fn set(&self, msg: String) {
        self.bar.set_message(msg);
    }

    fn finish_with_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if !self.tty {
            eprintln!("{}: {msg}", self.name);
        }
        self.bar.finish_with_message(msg);
    }
}

/// Feeds a run's events into its progress line.
struct BarSink {
    bar: Bar,
    total: usize,
}

impl EventSink for BarSink {
    fn event(&mut self, r: &Record) {
        match &r.event {
            Event::RunStarted { steps, .. } => {
                self.total = *steps;
                if !self.bar.tty {
                    eprintln!("{}: started", self.bar.name);
                }
                self.bar.set("starting".into());
            }
            Event::StepStarted { step, label, .. } => self.bar.set(format!("[{step}/{}] {label}", self.total)),
            _ => {}
        }
    }
}
