//! The runner: executes a validated plan on a prepared machine and reports
//! everything as events.
//!
//! Invariants:
//! - Steps run in order; the first failed main step stops the main steps (the
//!   rest are reported as skipped); cleanup steps always run, all of them.
//! - Every check is a polling wait with a budget, evaluated on fresh frames;
//!   all checks of a step are decided on the same frame.
//! - A retry first re-checks the step's expectations (for up to one more
//!   budget): if they hold, the action is not repeated (text is never typed
//!   twice).
//! - A failing step leaves its failing frame in the results.
//! - Ctrl-C once stops the main steps and still runs cleanup; twice stops now.

pub mod checks;
pub mod screen;
pub mod vm;

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::backend::BackendError;
use crate::backend::commands::{Commands, OUTPUT_CAP};
use crate::events::{Event, EventLog, StepStatus, Verdict};
use crate::frame::Frame;
use crate::geometry::Point;
use crate::results::{ResultsDir, annotate};
use crate::rfb::RfbError;
use crate::scenario::model::{
    Action, ChangeWait, Expect, IfVisible, LaunchAction, ShellAction, StillWait, TYPE_INTERVAL, Target,
};
use crate::scenario::plan::{Plan, PlannedStep, UpdateReferences};
use crate::vision::still::ChangeWatcher;
use checks::{CheckError, Checker, Evaluation};
use screen::{DragOptions, InputError, Screen, TypeOptions};

/// How far a stop request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cancel {
    Run,
    /// Stop the main steps; still run cleanup.
    Soft,
    /// Stop everything now.
    Hard,
}

/// Default budget of a shell step without a `timeout`.
pub const SHELL_TIMEOUT: Duration = Duration::from_secs(300);
/// Default budget of one forensics step.
pub const FORENSICS_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of a command's output `save:` and forensics keep (the tail).
pub const SAVE_CAP: usize = 512 * 1024;
const POLL_GAP: Duration = Duration::from_millis(200);
/// Between captures of `wait_still` / `wait_change` (cheap comparisons, no OCR).
const SCREEN_POLL: Duration = Duration::from_millis(100);
const KEY_GAP: Duration = Duration::from_millis(50);
/// How often `click: {locate}` asks again after an unusable answer.
const LOCATE_TRIES: u32 = 3;
/// The crop `precheck_click` shows the model around the point.
const PRECHECK_CROP: (u32, u32) = (240, 160);
const TAIL: usize = 2000;
/// After a launch: the screen must stay unchanged this long...
const LAUNCH_SETTLE_QUIET: Duration = Duration::from_millis(400);
/// ...but never wait longer than this (a blinking caret never settles).
const LAUNCH_SETTLE_MAX: Duration = Duration::from_secs(3);

/// Why a step did not pass.
#[derive(Debug, Clone)]
pub enum StepError {
    /// The app or the scenario's expectation: a check did not hold, a command failed.
    Failed(String),
    /// smoke or the target broke.
    Infra(String),
    Cancelled,
}

impl From<RfbError> for StepError {
    fn from(e: RfbError) -> Self {
        StepError::Infra(format!("VNC: {e}"))
    }
}

impl From<InputError> for StepError {
    fn from(e: InputError) -> Self {
        match e {
            InputError::Rfb(e) => e.into(),
            lost @ InputError::Lost { .. } => StepError::Failed(lost.to_string()),
        }
    }
}

impl From<CheckError> for StepError {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::Invalid(m) => StepError::Failed(m),
            CheckError::Infra(m) => StepError::Infra(m),
        }
    }
}

/// Counts and verdict of a run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub verdict: Verdict,
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
    pub skipped: usize,
    pub reason: Option<String>,
    /// A boot step that did not pass ended the run this way (its exit code wins).
    pub boot: Option<crate::vm::boot::BootOutcome>,
}

impl RunResult {
    /// The process exit code: a failed boot's (10, 11, 12), else the verdict's.
    pub fn exit_code(&self) -> i32 {
        match self.boot {
            Some(b) if self.verdict == Verdict::Failed && !b.passed() => b.exit_code(),
            _ => self.verdict.exit_code(),
        }
    }
}

/// Something that tells which recording frame is current (for step timelines).
pub type FrameIndex<'a> = Box<dyn Fn() -> u64 + Send + Sync + 'a>;

pub struct Runner<'a> {
    plan: &'a Plan,
    screen: Screen,
    commands: Option<&'a mut Commands>,
    events: EventLog,
    results: &'a ResultsDir,
    checker: Checker,
    cancel: watch::Receiver<Cancel>,
    frame_index: Option<FrameIndex<'a>>,
    /// The cancel level that interrupts the current phase.
    interrupt_at: Cancel,
    pause: Option<PauseOnFailure>,
    /// Cells seen blinking (a caret) by screen waits, with their two contents:
    /// later waits know them from their first frame.
    blinkers: Vec<(crate::geometry::Rect, Vec<u64>)>,
    /// Images shown to the model, saved once each (hash -> results path).
    vlm_images: std::collections::HashMap<String, String>,
    /// The VM, when the target is one (boot, serial, checkpoints).
    vm: Option<&'a mut dyn crate::vm::VmBackend>,
    vm_state: vm::VmState,
    start_at: vm::StartAt,
    keep_checkpoints: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PauseDecision {
    Continue,
    Abort,
}

/// What one attempt of a step produced.
struct Attempt {
    result: Result<(), StepError>,
    /// The frame the step was last judged on (for the failure screenshot).
    frame: Option<Frame>,
}

/// What a runner works with.
pub struct RunnerParts<'a> {
    pub plan: &'a Plan,
    pub screen: Screen,
    pub commands: Option<&'a mut Commands>,
    pub events: EventLog,
    pub results: &'a ResultsDir,
    pub update: UpdateReferences,
    pub cancel: watch::Receiver<Cancel>,
    pub frame_index: Option<FrameIndex<'a>>,
    /// Stop after the first failed step and wait for the person at the terminal.
    pub pause: Option<PauseOnFailure>,
    /// The run's vision-language model (after its preflight).
    pub vlm: Option<std::sync::Arc<crate::vlm::Vlm>>,
    /// The VM, when the target is one.
    pub vm: Option<&'a mut dyn crate::vm::VmBackend>,
    /// Where the main steps start (`--from-step`, `--from-checkpoint`).
    pub start_at: vm::StartAt,
    /// Keep checkpoint snapshots after the run (`--keep-checkpoints`; the
    /// scenario's `keep_checkpoints` counts too).
    pub keep_checkpoints: bool,
}

/// What `--pause-on-failure` prints while the target is kept up.
#[derive(Debug, Clone)]
pub struct PauseOnFailure {
    /// How to look at the target (printed to the terminal only, never to events).
    pub access: Vec<String>,
}

impl<'a> Runner<'a> {
    pub fn new(p: RunnerParts<'a>) -> Runner<'a> {
        let mut checker = Checker::new(p.update);
        checker.set_provenance(crate::references::Provenance {
            scenario: Some(p.plan.name.clone()),
            os: Some(p.plan.os.clone()),
            run: Some(crate::project::display_path(&p.results.path)),
            step: None,
        });
        checker.set_vlm(p.vlm, p.events.redactor().clone());
        Runner {
            plan: p.plan,
            screen: p.screen,
            commands: p.commands,
            events: p.events,
            results: p.results,
            checker,
            cancel: p.cancel,
            frame_index: p.frame_index,
            interrupt_at: Cancel::Soft,
            pause: p.pause,
            blinkers: Vec::new(),
            vlm_images: std::collections::HashMap::new(),
            keep_checkpoints: p.keep_checkpoints || p.plan.checkpoints.keep,
            vm: p.vm,
            vm_state: vm::VmState::default(),
            start_at: p.start_at,
        }
    }

    /// References created or updated by this run.
    pub fn created_references(&self) -> &[std::path::PathBuf] {
        &self.checker.created
    }

    pub async fn run(&mut self) -> RunResult {
        let mut r = RunResult {
            verdict: Verdict::Passed,
            passed: 0,
            failed: 0,
            errors: 0,
            skipped: 0,
            reason: None,
            boot: None,
        };
        let mut stop: Option<String> = None;
        let mut cancelled = false;
        self.interrupt_at = Cancel::Soft;
        let plan = self.plan;
        let mut i = match self.start_at.first_index(plan) {
            Ok(i) => i,
            Err(m) => {
                stop = Some(m);
                0
            }
        };
        for ps in &plan.steps[..i] {
            let why = match &self.start_at {
                vm::StartAt::Checkpoint(c) => format!("before checkpoint {c} (--from-checkpoint)"),
                _ => format!("before step {} (--from-step)", i + 1),
            };
            self.skip(ps, &why, &mut r);
        }
        if stop.is_none()
            && let vm::StartAt::Checkpoint(name) = self.start_at.clone()
            && let Err(m) = self.resume_from(&name).await
        {
            r.errors += 1;
            r.reason = Some(m.clone());
            stop = Some(m);
        }
        while let Some(ps) = plan.steps.get(i) {
            i += 1;
            if stop.is_none() && *self.cancel.borrow() >= Cancel::Soft {
                stop = Some("interrupted".into());
                cancelled = true;
            }
            if let Some(why) = &stop {
                self.skip(ps, why, &mut r);
                continue;
            }
            let status = self.step(ps, &mut r).await;
            match status {
                StepStatus::Passed => {}
                StepStatus::Skipped => {
                    cancelled = true;
                    stop = Some("interrupted".into());
                }
                _ => {
                    let error = r.reason.clone().unwrap_or_default();
                    if let Some(next) = self.rewind(ps, &error).await {
                        // the failure is superseded by the retry path: not counted
                        if status == StepStatus::Failed {
                            r.failed -= 1;
                        } else {
                            r.errors -= 1;
                        }
                        r.reason = None;
                        i = next;
                        continue;
                    }
                    if let Some((_, b)) = self.vm_state.boots.iter().find(|(n, _)| *n == ps.number) {
                        r.boot = Some(*b);
                    }
                    stop = Some(format!("step {} did not pass", ps.number));
                    if self.pause_here(ps).await == PauseDecision::Abort {
                        self.events.emit(Event::Warning { message: "aborted at the pause: cleanup skipped".into() });
                        for rest in plan.steps[i..].iter().chain(plan.cleanup.iter()) {
                            self.skip(rest, "aborted at the pause after a failure", &mut r);
                        }
                        r.verdict = if r.errors > 0 { Verdict::Error } else { Verdict::Failed };
                        self.finish_checkpoints().await;
                        return r;
                    }
                }
            }
        }
        self.interrupt_at = Cancel::Hard;
        // keys a key_down left pressed must not stay down for cleanup
        if !self.screen.held().is_empty()
            && let Err(e) = self.screen.release_held().await
        {
            self.events.emit(Event::Warning { message: format!("releasing held keys: {e}") });
        }
        // evidence first, while the target is still in the failed state; cleanup then
        if r.failed + r.errors > 0 && !self.plan.forensics.is_empty() && *self.cancel.borrow() < Cancel::Hard {
            self.forensics().await;
        }
        for ps in &self.plan.cleanup {
            if *self.cancel.borrow() >= Cancel::Hard {
                self.skip(ps, "interrupted twice: cleanup abandoned", &mut r);
                cancelled = true;
                continue;
            }
            self.step(ps, &mut r).await;
        }
        if *self.cancel.borrow() < Cancel::Hard {
            self.finish_checkpoints().await;
        }
        r.verdict = if r.errors > 0 {
            Verdict::Error
        } else if r.failed > 0 {
            Verdict::Failed
        } else if cancelled {
            Verdict::Interrupted
        } else {
            Verdict::Passed
        };
        if r.reason.is_none() && cancelled {
            r.reason = Some("interrupted".into());
        }
        r
    }

    /// `--pause-on-failure`: keep the target up and wait for the person at the
    /// terminal: Enter continues with cleanup, `a` Enter aborts. Ctrl-C, or
    /// the end of standard input, continues.
    async fn pause_here(&mut self, ps: &PlannedStep) -> PauseDecision {
        let Some(pause) = self.pause.clone() else { return PauseDecision::Continue };
        let mut text = format!("\nsmoke: step {} ({}) did not pass; the target stays up:\n", ps.number, ps.label);
        for line in &pause.access {
            text.push_str(&format!("  {line}\n"));
        }
        text.push_str("press Enter to run cleanup and tear down, or type a and Enter to abort without cleanup\n");
        eprint!("{text}");
        self.events.emit(Event::Warning { message: format!("paused after step {} for inspection", ps.number) });
        let read = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        });
        let mut cancel = self.cancel.clone();
        tokio::select! {
            line = read => match line {
                Ok(Ok(l)) if l.trim().eq_ignore_ascii_case("a") => PauseDecision::Abort,
                _ => PauseDecision::Continue,
            },
            _ = cancel.changed() => PauseDecision::Continue,
        }
    }

    fn skip(&self, ps: &PlannedStep, why: &str, r: &mut RunResult) {
        r.skipped += 1;
        self.events.emit(Event::StepFinished {
            step: ps.number,
            label: ps.label.clone(),
            status: StepStatus::Skipped,
            duration_ms: 0,
            attempts: 0,
            error: Some(why.to_string()),
            failure_screenshot: None,
        });
    }

    /// Run one step with its retries; report it; count it.
    async fn step(&mut self, ps: &PlannedStep, r: &mut RunResult) -> StepStatus {
        let start = Instant::now();
        let retries = ps.step.retries;
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            self.events.emit(Event::StepStarted {
                step: ps.number,
                label: ps.label.clone(),
                kind: ps.step.action.kind().into(),
                cleanup: ps.cleanup,
                attempt,
                routines: ps.calls.iter().map(|c| c.routine.clone()).collect(),
                source: ps.step.span.to_string(),
                frame: self.frame_index.as_ref().map(|f| f()),
            });
            let a = self.attempt(ps, attempt).await;
            // a boot happens once: watching it again would judge the same transcript
            let retryable = matches!(a.result, Err(StepError::Failed(_)) | Err(StepError::Infra(_)))
                && !matches!(ps.step.action, Action::Boot(_));
            if a.result.is_ok() || !retryable || attempt > retries {
                break a;
            }
            tracing::info!(step = ps.number, attempt, "step failed; retrying");
        };
        let (status, error) = match &outcome.result {
            Ok(()) => (StepStatus::Passed, None),
            Err(StepError::Failed(m)) => (StepStatus::Failed, Some(m.clone())),
            Err(StepError::Infra(m)) => (StepStatus::Error, Some(m.clone())),
            Err(StepError::Cancelled) => (StepStatus::Skipped, Some("interrupted".to_string())),
        };
        let mut failure_screenshot = None;
        if matches!(status, StepStatus::Failed | StepStatus::Error) {
            let frame = match outcome.frame {
                Some(f) => Some(f),
                // a connection the step already failed to restore gets no second wait
                None if matches!(status, StepStatus::Error) && !self.screen.client().is_connected() => None,
                None => self.screen.capture().await.ok(),
            };
            if let Some(f) = frame {
                let path = self.results.screenshot(ps.number, "failure");
                if f.save_png(&path).is_ok() {
                    failure_screenshot = Some(self.results.relative(&path));
                }
            }
        }
        match status {
            StepStatus::Passed => r.passed += 1,
            StepStatus::Failed => r.failed += 1,
            StepStatus::Error => r.errors += 1,
            StepStatus::Skipped => r.skipped += 1,
        }
        if r.reason.is_none() && matches!(status, StepStatus::Failed | StepStatus::Error) {
            r.reason = Some(format!("step {} ({}): {}", ps.number, ps.label, error.clone().unwrap_or_default()));
        }
        self.events.emit(Event::StepFinished {
            step: ps.number,
            label: ps.label.clone(),
            status,
            duration_ms: start.elapsed().as_millis() as u64,
            attempts: attempt,
            error,
            failure_screenshot,
        });
        status
    }

    async fn attempt(&mut self, ps: &PlannedStep, attempt: u32) -> Attempt {
        let step = &ps.step;
        let budget = step.timeout.unwrap_or(self.plan.defaults.timeout);
        let has_action = !matches!(step.action, Action::Verify | Action::WaitFor | Action::ScreenWait);
        // Before repeating an action, see whether its effect arrived after all
        // (a slow target can show typed text just after the verify budget):
        // poll for one more budget, and repeat the action only if it never holds.
        if attempt > 1 && has_action && !step.expect.is_empty() {
            match self.poll(ps.number, &step.expect, budget, "recheck").await {
                Ok((true, frame)) => {
                    self.events.emit(Event::Warning {
                        message: format!(
                            "step {}: expectations already hold on retry {attempt}; the action is not repeated",
                            ps.number
                        ),
                    });
                    return Attempt { result: Ok(()), frame: Some(frame) };
                }
                Ok(_) => {}
                Err(e) => return Attempt { result: Err(e), frame: None },
            }
        }
        // the screen before the action, for `wait_change`
        let baseline = match &step.wait_change {
            Some(_) => match self.screen.capture().await {
                Ok(f) => Some(f),
                Err(e) => return Attempt { result: Err(e.into()), frame: None },
            },
            None => None,
        };
        if let Err(e) = self.action(ps).await {
            return Attempt { result: Err(e), frame: None };
        }
        if let (Some(w), Some(before)) = (&step.wait_change, &baseline)
            && let Err((e, frame)) = self.wait_change(ps.number, before, w, budget).await
        {
            return Attempt { result: Err(e), frame };
        }
        if let Some(w) = &step.wait_still
            && let Err((e, frame)) = self.wait_still(ps.number, w, budget).await
        {
            return Attempt { result: Err(e), frame };
        }
        if step.expect.is_empty() {
            return Attempt { result: Ok(()), frame: None };
        }
        let what = if matches!(step.action, Action::WaitFor) { "wait_for" } else { "verify" };
        match self.poll(ps.number, &step.expect, budget, what).await {
            Ok((true, frame)) => Attempt { result: Ok(()), frame: Some(frame) },
            Ok((false, frame)) => {
                let msg = if matches!(step.action, Action::WaitFor) {
                    format!("timed out after {:.1}s waiting for the screen", budget.as_secs_f64())
                } else {
                    format!("check did not hold within {:.1}s", budget.as_secs_f64())
                };
                Attempt { result: Err(StepError::Failed(msg)), frame: Some(frame) }
            }
            Err(e) => Attempt { result: Err(e), frame: None },
        }
    }

    async fn action(&mut self, ps: &PlannedStep) -> Result<(), StepError> {
        let n = ps.number;
        let d = &self.plan.defaults;
        let budget = ps.step.timeout.unwrap_or(d.timeout);
        match &ps.step.action {
            Action::Verify | Action::WaitFor | Action::ScreenWait => Ok(()),
            Action::Wait(t) => self.sleep(*t).await,
            Action::IfVisible(g) => self.guard(ps, g).await,
            Action::Key(combos) => Ok(self.screen.keys(n, combos, KEY_GAP).await?),
            Action::KeyHold(combo, hold) => Ok(self.screen.key_hold(n, combo, *hold).await?),
            Action::KeyDown(combos) => Ok(self.screen.key_down(n, combos).await?),
            Action::KeyUp(combos) => Ok(self.screen.key_up(n, combos).await?),
            Action::Type(t) => {
                // step, then scenario defaults, then the target, then built in
                let target = self.screen.typing();
                let interval = t.interval.or(d.type_interval).or(target.interval).unwrap_or(TYPE_INTERVAL);
                let confirm = t.confirm.or(d.type_confirm).or(target.confirm).unwrap_or(false).then_some(budget);
                Ok(self.screen.type_with(n, &t.text, TypeOptions { interval, confirm }).await?)
            }
            Action::Click(c) => {
                let (at, mut frame) = match &c.target {
                    Target::Locate { description, region, offset } => {
                        self.locate_vlm(n, description, *region, *offset, c.precheck).await?
                    }
                    t => self.locate(n, t, budget).await?,
                };
                annotate::mark_click(&mut frame, at);
                let path = self.results.screenshot(n, "click");
                if frame.save_png(&path).is_ok() {
                    self.events.emit(Event::Screenshot {
                        step: n,
                        path: self.results.relative(&path),
                        reason: format!("click at {at}"),
                    });
                }
                let settle = d.click_settle;
                Ok(self.screen.click(n, at, c.button, c.double, settle).await?)
            }
            Action::Move(t) => {
                let (at, _) = self.locate(n, t, budget).await?;
                Ok(self.screen.move_to(n, at).await?)
            }
            Action::MoveAlong(t, path, duration) => {
                let (at, _) = self.locate(n, t, budget).await?;
                Ok(self.screen.move_along(n, at, *path, *duration).await?)
            }
            Action::Drag(g) => {
                let (from, _) = self.locate(n, &g.from, budget).await?;
                let (to, _) = self.locate(n, &g.to, budget).await?;
                let opts = DragOptions { button: g.button, path: g.path, duration: g.duration, dwell: g.dwell };
                Ok(self.screen.drag(n, from, to, opts).await?)
            }
            Action::Scroll(sc) => {
                let at = match &sc.at {
                    Some(t) => Some(self.locate(n, t, budget).await?.0),
                    None => None,
                };
                Ok(self.screen.scroll(n, at, sc.direction, sc.count).await?)
            }
            Action::Screenshot(s) => {
                let frame = self.screen.capture().await?;
                let frame = match s.region {
                    Some(r) => {
                        frame.crop(r).ok_or_else(|| StepError::Failed(format!("region {r} lies outside the screen")))?
                    }
                    None => frame,
                };
                let path = self.results.screenshot(n, &s.name);
                frame.save_png(&path).map_err(|e| StepError::Infra(e.to_string()))?;
                self.events.emit(Event::Screenshot {
                    step: n,
                    path: self.results.relative(&path),
                    reason: s.name.clone(),
                });
                Ok(())
            }
            Action::Shell(s) => self.shell(n, s, ps.step.timeout.unwrap_or(SHELL_TIMEOUT)).await,
            Action::Launch(l) => self.launch(n, l).await,
            Action::Boot(b) => self.boot(n, b, ps.step.timeout).await,
            Action::SerialExpect(e) => self.serial_expect(n, e, budget).await,
            Action::SerialSend(s) => self.serial_send(n, s).await,
            Action::Checkpoint(name) => self.checkpoint(n, name).await,
        }
    }

    /// The command of a shell step with `{file}` resolved on the target.
    async fn shell_command(commands: &mut Commands, s: &ShellAction) -> Result<(String, Option<String>), StepError> {
        match &s.file {
            Some(pattern) => {
                let path = resolve_file(commands, pattern).await?;
                let quoted = commands.shell().quote(&path);
                Ok((crate::guest::substitute_file(&s.command, &quoted), Some(path)))
            }
            None => Ok((s.command.clone(), None)),
        }
    }

    /// Write command output into the results (redacted); returns its relative path.
    fn save_output(&self, folder: &str, name: &str, text: &str) -> Option<String> {
        let dir = self.results.path.join(folder);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!("cannot create {}: {e}", dir.display());
            return None;
        }
        let path = dir.join(name);
        match std::fs::write(&path, self.events.redactor().redact(text)) {
            Ok(()) => Some(self.results.relative(&path)),
            Err(e) => {
                tracing::warn!("cannot write {}: {e}", path.display());
                None
            }
        }
    }

    async fn shell(&mut self, n: usize, s: &ShellAction, timeout: Duration) -> Result<(), StepError> {
        let commands =
            self.commands.as_deref_mut().ok_or_else(|| StepError::Infra("this target cannot run commands".into()))?;
        let (command, file) = Self::shell_command(commands, s).await?;
        let cap = if s.save.is_some() { SAVE_CAP } else { OUTPUT_CAP };
        let via = commands.describe();
        let out = commands.run(&command, timeout, cap).await.map_err(|e| StepError::Infra(e.to_string()))?;
        let saved = s.save.as_ref().and_then(|name| self.save_output("output", name, &out.stdout));
        self.events.emit(Event::Shell {
            step: n,
            command,
            exit_code: out.exit_code,
            timed_out: out.timed_out,
            duration_ms: out.duration.as_millis() as u64,
            stdout: tail(&out.stdout),
            stderr: tail(&out.stderr),
            via: Some(via),
            file,
            saved,
        });
        if out.timed_out {
            return Err(StepError::Failed(format!(
                "command timed out after {:.1}s and was killed",
                timeout.as_secs_f64()
            )));
        }
        match out.exit_code {
            Some(code) if s.ok_exit.is_empty() || s.ok_exit.contains(&code) => Ok(()),
            Some(code) => Err(StepError::Failed(format!("command exited with {code}{}", stderr_hint(&out.stderr)))),
            None => Err(StepError::Failed(format!(
                "command was killed by signal {}{}",
                out.signal.unwrap_or(0),
                stderr_hint(&out.stderr)
            ))),
        }
    }

    /// Collect evidence after a failure: every forensics step runs (with its
    /// own time limit), its output is saved under `forensics/`, and nothing
    /// here changes the verdict.
    async fn forensics(&mut self) {
        let steps = self.plan.forensics.clone();
        for ps in &steps {
            let crate::scenario::model::Action::Shell(s) = &ps.step.action else { continue };
            if *self.cancel.borrow() >= Cancel::Hard {
                break;
            }
            let start = Instant::now();
            let timeout = ps.step.timeout.unwrap_or(FORENSICS_TIMEOUT);
            let name =
                s.save.clone().unwrap_or_else(|| format!("{:03}-{}.txt", ps.number, crate::results::slug(&ps.label)));
            let result = match self.commands.as_deref_mut() {
                None => Err("this target cannot run commands".to_string()),
                Some(c) => match Self::shell_command(c, s).await {
                    Err(e) => Err(match e {
                        StepError::Failed(m) | StepError::Infra(m) => m,
                        StepError::Cancelled => "interrupted".into(),
                    }),
                    Ok((command, _)) => c.run(&command, timeout, SAVE_CAP).await.map_err(|e| e.to_string()),
                },
            };
            let event = match result {
                Ok(out) => {
                    let mut text = out.stdout.clone();
                    if !out.stderr.trim().is_empty() {
                        text.push_str(&format!("\n--- stderr ---\n{}", out.stderr));
                    }
                    let path = self.save_output("forensics", &name, &text);
                    let error = if out.timed_out {
                        Some(format!("timed out after {:.1}s (what it printed is kept)", timeout.as_secs_f64()))
                    } else if out.exit_code.is_none() {
                        Some("the command was killed".to_string())
                    } else {
                        None
                    };
                    Event::Forensics {
                        item: ps.label.clone(),
                        path,
                        bytes: text.len() as u64,
                        truncated: out.stdout.starts_with("[... "),
                        exit_code: out.exit_code,
                        duration_ms: start.elapsed().as_millis() as u64,
                        error,
                    }
                }
                Err(e) => Event::Forensics {
                    item: ps.label.clone(),
                    path: None,
                    bytes: 0,
                    truncated: false,
                    exit_code: None,
                    duration_ms: start.elapsed().as_millis() as u64,
                    error: Some(e),
                },
            };
            self.events.emit(event);
        }
    }

    async fn launch(&mut self, n: usize, l: &LaunchAction) -> Result<(), StepError> {
        self.checker.set_step(n);
        let before = self.screen.capture().await?;
        let log = self.results.logs().join(format!("launch-{n:03}.log"));
        let commands =
            self.commands.as_deref_mut().ok_or_else(|| StepError::Infra("this target cannot run commands".into()))?;
        let (command, process) = match &l.file {
            Some(pattern) => {
                let path = resolve_file(commands, pattern).await?;
                let shell = commands.shell();
                let base = crate::guest::windows::basename(&path).to_string();
                (l.command.with_file(&path, |p| shell.quote(p)), crate::guest::substitute_file(&l.process, &base))
            }
            None => (l.command.clone(), l.process.clone()),
        };
        let via = commands.describe();
        let pid = commands.launch(&command, &process, &log).await.map_err(launch_error)?;
        self.events.emit(Event::Launch {
            step: n,
            command: command.display(),
            process: process.clone(),
            pid,
            log: self.results.relative(&log),
            via: Some(via),
        });
        let start = Instant::now();
        let mut exited: Option<(bool, String)> = None;
        let mut polls = 0u32;
        // the screen condition is judged quietly on every poll and reported once, at the end
        let mut judged: Option<(Frame, Evaluation)> = None;
        loop {
            let commands = self.commands.as_deref_mut().ok_or_else(|| StepError::Infra("no commands".into()))?;
            let probe = commands.probe(&process, pid).await.map_err(|e| StepError::Infra(e.to_string()))?;
            let running = probe.running;
            if exited.is_none() {
                exited = probe.exited;
            }
            if !running && let Some((false, status)) = &exited {
                let output = commands.log_tail(pid, &log).await;
                return Err(StepError::Failed(format!(
                    "{process} exited ({status}) before its window appeared; its output:\n{output}"
                )));
            }
            if running {
                let frame = self.screen.capture().await?;
                polls += 1;
                let ok = match &l.until {
                    Some(expect) => {
                        let unchanged = judged.as_ref().is_some_and(|(f, _)| *f == frame);
                        if !unchanged {
                            let e = self.checker.evaluate(expect, &frame).await?;
                            judged = Some((frame, e));
                        }
                        judged.as_ref().is_some_and(|(_, e)| e.passed)
                    }
                    None => frame != before,
                };
                let timed_out = start.elapsed() >= l.wait;
                if let (Some(expect), Some((frame, e)), true) = (&l.until, &judged, ok || timed_out) {
                    self.report_checks(
                        n,
                        std::slice::from_ref(expect),
                        std::slice::from_ref(e),
                        frame,
                        polls,
                        start.elapsed(),
                        "launch",
                    );
                }
                if ok {
                    // A window that just appeared may not take input yet: let it settle.
                    self.settle(LAUNCH_SETTLE_QUIET, LAUNCH_SETTLE_MAX).await?;
                    return Ok(());
                }
            }
            if start.elapsed() >= l.wait {
                let why = if !running {
                    format!("no process named '{process}' appeared within {:.1}s", l.wait.as_secs_f64())
                } else if l.until.is_some() {
                    format!(
                        "'{process}' runs, but the screen condition did not hold within {:.1}s",
                        l.wait.as_secs_f64()
                    )
                } else {
                    format!("'{process}' runs, but the screen did not change within {:.1}s", l.wait.as_secs_f64())
                };
                return Err(StepError::Failed(why));
            }
            self.sleep(POLL_GAP).await?;
        }
    }

    /// Where a click or move goes; polls for text and images until `budget`.
    async fn locate(&mut self, n: usize, target: &Target, budget: Duration) -> Result<(Point, Frame), StepError> {
        let start = Instant::now();
        let mut polls = 0;
        loop {
            let frame = self.screen.capture().await?;
            polls += 1;
            let (found, best, text, score, kind, desc) = match target {
                Target::Locate { description, region, offset } => {
                    return self.locate_vlm(n, description, *region, *offset, false).await;
                }
                Target::At(p) => {
                    if p.x >= frame.width() || p.y >= frame.height() {
                        return Err(StepError::Failed(format!(
                            "point {p} lies outside the {}x{} screen",
                            frame.width(),
                            frame.height()
                        )));
                    }
                    return Ok((*p, frame));
                }
                Target::Text { query, region, offset } => {
                    let (found, text) = self.checker.locate_text(query, *region, &frame).await?;
                    (found.map(|f| (f, *offset)), None, Some(text), None, "ocr", format!("locate text {query}"))
                }
                Target::Needle { needle, point, threshold, region, offset } => {
                    let options = crate::vision::needle::NeedleOptions { threshold: *threshold, region: *region };
                    let (at, m) = self.checker.locate_needle(needle, point.as_deref(), options, &frame).await?;
                    let desc = match point {
                        Some(p) => format!("locate needle {} point {p}", needle.name),
                        None => format!("locate needle {}", needle.name),
                    };
                    let done = at.is_some() || start.elapsed() >= budget;
                    if done {
                        let (screenshot, diff) = match at {
                            Some(_) => (None, None),
                            None => {
                                let heat = self.checker.needle_diff(needle, &m, &frame);
                                self.locate_evidence(n, &frame, *region, m.first_box(), heat)
                            }
                        };
                        let scores = m
                            .areas
                            .iter()
                            .map(|a| crate::events::CheckScore {
                                name: format!("area {}", a.index),
                                score: a.score,
                                threshold: Some(a.threshold),
                                passed: a.passed,
                                at: Some(a.found),
                            })
                            .collect();
                        self.events.emit(Event::Check {
                            step: n,
                            kind: "needle".into(),
                            negate: false,
                            passed: at.is_some(),
                            check: desc.clone(),
                            score: Some(m.score()),
                            threshold: None,
                            text: None,
                            found: m.first_box(),
                            region: *region,
                            polls,
                            elapsed_ms: start.elapsed().as_millis() as u64,
                            screenshot,
                            reference: needle.path.as_ref().map(|p| crate::project::display_path(p)),
                            diff,
                            note: Some(format!("offset ({}, {}): {}", m.offset.0, m.offset.1, m.describe())),
                            scores,
                            actual: None,
                            reference_path: None,
                        });
                    }
                    if let Some(p) = at {
                        let x = (p.x as i64 + offset.0 as i64).clamp(0, frame.width() as i64 - 1) as u32;
                        let y = (p.y as i64 + offset.1 as i64).clamp(0, frame.height() as i64 - 1) as u32;
                        return Ok((Point::new(x, y), frame));
                    }
                    if done {
                        return Err(StepError::Failed(format!(
                            "{desc}: not found within {:.1}s; best: {}",
                            budget.as_secs_f64(),
                            m.describe()
                        )));
                    }
                    self.sleep(POLL_GAP).await?;
                    continue;
                }
                Target::Image { reference, region, threshold, offset } => {
                    let (rect, score, found) = self.checker.locate_image(reference, *region, *threshold, &frame)?;
                    (
                        found.then_some((rect, *offset)),
                        Some(rect),
                        None,
                        Some(score),
                        "image",
                        format!("locate image {} >= {threshold}", reference.name),
                    )
                }
            };
            let done = found.is_some() || start.elapsed() >= budget;
            if done {
                let (screenshot, diff) = match (found, target) {
                    (Some(_), _) => (None, None),
                    (None, Target::Image { reference, region, .. }) => {
                        let heat = best.and_then(|b| self.checker.image_diff(reference, b, &frame));
                        self.locate_evidence(n, &frame, *region, best, heat)
                    }
                    (None, Target::Text { region, .. }) => self.locate_evidence(n, &frame, *region, None, None),
                    (None, _) => (None, None),
                };
                self.events.emit(Event::Check {
                    step: n,
                    kind: kind.into(),
                    negate: false,
                    passed: found.is_some(),
                    check: desc.clone(),
                    score,
                    threshold: None,
                    text: text.clone(),
                    found: found.map(|(f, _)| f).or(best),
                    region: None,
                    polls,
                    elapsed_ms: start.elapsed().as_millis() as u64,
                    screenshot,
                    reference: None,
                    diff,
                    note: None,
                    scores: score
                        .map(|s| crate::events::CheckScore {
                            name: "zncc".into(),
                            score: s,
                            threshold: None,
                            passed: found.is_some(),
                            at: found.map(|(f, _)| f),
                        })
                        .into_iter()
                        .collect(),
                    actual: None,
                    reference_path: None,
                });
            }
            if let Some((rect, offset)) = found {
                return Ok((checks::target_point(rect, offset, &frame), frame));
            }
            if done {
                let detail = match (text, score) {
                    (Some(t), _) => format!("; OCR read: {}", one_line(&t, 300)),
                    (_, Some(s)) => format!("; best match scored {s:.3}"),
                    _ => String::new(),
                };
                return Err(StepError::Failed(format!(
                    "{desc}: not found within {:.1}s{detail}",
                    budget.as_secs_f64()
                )));
            }
            self.sleep(POLL_GAP).await?;
        }
    }

    /// `if_visible`: ask the model; when it says yes, run the `then` steps.
    /// Never fails the scenario: a sub-step that does not work is a warning
    /// (only an exceeded VLM budget or Ctrl-C stop the run here).
    async fn guard(&mut self, ps: &PlannedStep, g: &IfVisible) -> Result<(), StepError> {
        let n = ps.number;
        let vlm = self.checker.vlm()?;
        let frame = self.screen.capture().await?;
        region_on_screen(g.region, &frame)?;
        let image = match g.region {
            Some(r) => frame.crop(r).ok_or_else(|| StepError::Failed(format!("region {r} lies outside the screen")))?,
            None => frame,
        };
        let asked = match vlm.judge(&g.question, &image, 0).await {
            Ok(a) => a,
            Err(e @ crate::vlm::VlmError::Budget(_)) => {
                return Err(StepError::Infra(format!("vision-language model: {e}")));
            }
            Err(e) => {
                self.events.emit(Event::Warning {
                    message: format!("step {n}: if_visible could not ask the model ({e}); its steps did not run"),
                });
                return Ok(());
            }
        };
        let yes = asked.verdict.is_some_and(|v| v.is_yes());
        self.report_vlm(n, "guard", std::slice::from_ref(&asked), Some(&image), g.region, None);
        if !yes {
            return Ok(());
        }
        for (i, sub) in g.then.iter().enumerate() {
            let label = sub.label.clone().unwrap_or_else(|| crate::scenario::model::default_label(sub));
            let sp = PlannedStep {
                number: n,
                label: label.clone(),
                step: sub.clone(),
                calls: ps.calls.clone(),
                cleanup: ps.cleanup,
            };
            match Box::pin(self.attempt(&sp, 1)).await.result {
                Ok(()) => {}
                Err(StepError::Cancelled) => return Err(StepError::Cancelled),
                Err(StepError::Failed(m)) | Err(StepError::Infra(m)) => {
                    self.events.emit(Event::Warning {
                        message: format!(
                            "step {n}: if_visible's step {} ({label}) did not work: {m}; a guard never fails the scenario",
                            i + 1
                        ),
                    });
                    break;
                }
            }
        }
        Ok(())
    }

    /// `click: {locate: DESCRIPTION}`: where the model points. An unusable
    /// answer (no coordinates, off the screen, or refused by the precheck) is
    /// asked again as a fresh sample, up to [`LOCATE_TRIES`] times.
    async fn locate_vlm(
        &mut self,
        n: usize,
        description: &str,
        region: Option<crate::geometry::Rect>,
        offset: (i32, i32),
        precheck: bool,
    ) -> Result<(Point, Frame), StepError> {
        let vlm = self.checker.vlm()?;
        let frame = self.screen.capture().await?;
        region_on_screen(region, &frame)?;
        let (origin, image) = match region {
            Some(r) => (
                (r.x, r.y),
                frame.crop(r).ok_or_else(|| StepError::Failed(format!("region {r} lies outside the screen")))?,
            ),
            None => ((0, 0), frame.clone()),
        };
        let mut problems = Vec::new();
        for sample in 0..LOCATE_TRIES {
            let (located, asked) = vlm
                .locate_sample(description, &image, sample)
                .await
                .map_err(|e| StepError::from(checks::vlm_error(e)))?;
            let at = located.as_ref().ok().map(|l| {
                let x = (i64::from(l.point.x + origin.0) + i64::from(offset.0)).clamp(0, i64::from(frame.width()) - 1);
                let y = (i64::from(l.point.y + origin.1) + i64::from(offset.1)).clamp(0, i64::from(frame.height()) - 1);
                Point::new(x as u32, y as u32)
            });
            self.report_vlm(n, "locate", std::slice::from_ref(&asked), Some(&image), region, at);
            let Some(at) = at else {
                problems.push(located.err().map(|e| e.to_string()).unwrap_or_default());
                continue;
            };
            if precheck && !self.precheck(n, &vlm, description, &frame, at).await? {
                problems.push(format!("the model pointed at {at}, but asked about that spot it said it is not there"));
                continue;
            }
            return Ok((at, frame));
        }
        Err(StepError::Failed(format!(
            "locate \"{description}\": no usable answer in {LOCATE_TRIES} tries: {}",
            problems.join("; ")
        )))
    }

    /// `precheck_click`: ask the judge about a crop around `at` with the point marked.
    async fn precheck(
        &mut self,
        n: usize,
        vlm: &crate::vlm::Vlm,
        description: &str,
        frame: &Frame,
        at: Point,
    ) -> Result<bool, StepError> {
        let (w, h) = (PRECHECK_CROP.0.min(frame.width()), PRECHECK_CROP.1.min(frame.height()));
        let x = at.x.saturating_sub(w / 2).min(frame.width() - w);
        let y = at.y.saturating_sub(h / 2).min(frame.height() - h);
        let area = crate::geometry::Rect::new(x, y, w, h);
        let mut crop = frame.crop(area).ok_or_else(|| StepError::Infra(format!("cannot crop {area}")))?;
        annotate::mark_click(&mut crop, Point::new(at.x - x, at.y - y));
        let question = format!("The red cross marks where a click is about to land. Is the cross on {description}?");
        let asked = vlm.judge(&question, &crop, 0).await.map_err(|e| StepError::from(checks::vlm_error(e)))?;
        let yes = asked.verdict.is_some_and(|v| v.is_yes());
        self.report_vlm(n, "precheck", std::slice::from_ref(&asked), Some(&crop), Some(area), Some(at));
        Ok(yes)
    }

    /// One event per question to the model; the image it was shown is saved
    /// once per run (for the report and `smoke replay`).
    fn report_vlm(
        &mut self,
        n: usize,
        purpose: &str,
        asked: &[crate::vlm::Asked],
        image: Option<&Frame>,
        region: Option<crate::geometry::Rect>,
        point: Option<Point>,
    ) {
        let image_path = match (image, asked.first()) {
            (Some(img), Some(a)) => match self.vlm_images.get(&a.image) {
                Some(p) => Some(p.clone()),
                None => {
                    let path = self.results.screenshot(n, &format!("vlm-{}", &a.image[..a.image.len().min(12)]));
                    img.save_png(&path).ok().map(|_| {
                        let rel = self.results.relative(&path);
                        self.vlm_images.insert(a.image.clone(), rel.clone());
                        rel
                    })
                }
            },
            _ => None,
        };
        for a in asked {
            self.events.emit(Event::Vlm {
                step: n,
                purpose: purpose.into(),
                question: a.question.clone(),
                model: a.model.clone(),
                answer: a.answer.chars().take(2000).collect(),
                verdict: a.verdict.map(|v| {
                    match v {
                        crate::vlm::answer::Verdict::Yes => "yes",
                        crate::vlm::answer::Verdict::No => "no",
                        crate::vlm::answer::Verdict::Unparseable => "unparseable",
                    }
                    .to_string()
                }),
                point,
                cached: a.cached,
                endpoint: a.endpoint.clone(),
                latency_ms: a.latency_ms,
                prompt_tokens: a.prompt_tokens,
                completion_tokens: a.completion_tokens,
                cost: a.cost,
                image: a.image.clone(),
                image_path: image_path.clone(),
                region,
            });
        }
    }

    /// Evidence of a click target that was not found: the screen with the
    /// search region and the best candidate outlined, and the heatmap of the
    /// wanted pixels against that candidate.
    fn locate_evidence(
        &self,
        n: usize,
        frame: &Frame,
        region: Option<crate::geometry::Rect>,
        best: Option<crate::geometry::Rect>,
        heat: Option<Frame>,
    ) -> (Option<String>, Option<String>) {
        let mut shot = frame.clone();
        for r in region.into_iter().chain(best) {
            annotate::mark_region(&mut shot, r);
        }
        let path = self.results.screenshot(n, "not-found");
        let screenshot = shot.save_png(&path).ok().map(|_| self.results.relative(&path));
        let diff = heat.and_then(|d| {
            let p = self.results.screenshot(n, "diff");
            d.save_png(&p).ok().map(|_| self.results.relative(&p))
        });
        (screenshot, diff)
    }

    /// Poll expectations on fresh frames until all hold or `budget` runs out
    /// (a zero budget evaluates once). Returns whether they held and the frame
    /// they were last judged on; emits one event per check with its evidence.
    async fn poll(
        &mut self,
        n: usize,
        expects: &[Expect],
        budget: Duration,
        what: &str,
    ) -> Result<(bool, Frame), StepError> {
        self.checker.set_step(n);
        let start = Instant::now();
        let mut polls = 0u32;
        let mut last: Option<(Frame, Vec<Evaluation>)> = None;
        loop {
            // when this frame was taken: the last look at the screen is at or
            // after the budget's end, however long a look takes (OCR on a
            // loaded machine can outlast a short budget)
            let taken = start.elapsed();
            let frame = self.screen.capture().await?;
            // an unchanged screen gives the same answers: don't re-run OCR on it
            let same = last.as_ref().is_some_and(|(f, _)| *f == frame);
            if !same {
                let mut evals = Vec::with_capacity(expects.len());
                for e in expects {
                    evals.push(self.checker.evaluate(e, &frame).await?);
                }
                // every question to the model is on record, also those of
                // polls whose verdict is superseded (they cost the same)
                if let Some((_, old)) = last.replace((frame, evals)) {
                    for (e, ev) in expects.iter().zip(&old) {
                        if !ev.vlm.is_empty() {
                            self.report_vlm(n, "check", &ev.vlm, ev.vlm_image.as_ref(), e.check.region(), None);
                        }
                    }
                }
            }
            polls += 1;
            let all = last.as_ref().is_some_and(|(_, ev)| ev.iter().all(|e| e.passed));
            if all || taken >= budget {
                let (frame, evals) = last.take().unwrap_or_else(|| (Frame::new(1, 1), Vec::new()));
                self.report_checks(n, expects, &evals, &frame, polls, start.elapsed(), what);
                return Ok((all, frame));
            }
            self.sleep(POLL_GAP.min(budget.saturating_sub(start.elapsed()))).await?;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn report_checks(
        &mut self,
        n: usize,
        expects: &[Expect],
        evals: &[Evaluation],
        frame: &Frame,
        polls: u32,
        elapsed: Duration,
        what: &str,
    ) {
        // one screenshot of the frame all checks were judged on, regions outlined
        let mut shot = frame.clone();
        for e in expects {
            if let Some(r) = e.check.region() {
                annotate::mark_region(&mut shot, r);
            }
        }
        let path = self.results.screenshot(n, what);
        let screenshot = shot.save_png(&path).ok().map(|_| self.results.relative(&path));
        for (e, ev) in expects.iter().zip(evals) {
            if !ev.vlm.is_empty() {
                self.report_vlm(n, "check", &ev.vlm, ev.vlm_image.as_ref(), e.check.region(), None);
            }
            let diff = ev.diff.as_ref().and_then(|d| {
                let p = self.results.screenshot(n, "diff");
                d.save_png(&p).ok().map(|_| self.results.relative(&p))
            });
            let reference = match &e.check {
                crate::scenario::model::Check::Ssim(s) => {
                    s.reference.path.as_ref().map(|p| crate::project::display_path(p))
                }
                crate::scenario::model::Check::Needle(c) => {
                    c.needle.path.as_ref().map(|p| crate::project::display_path(p))
                }
                _ => None,
            };
            // the compared image, so `smoke approve` can turn it into the reference
            let actual = ev.actual.as_ref().and_then(|img| {
                let name = ev
                    .reference_path
                    .as_ref()
                    .and_then(|p| p.file_stem())
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_else(|| "image".into());
                let p = self.results.screenshot(n, &format!("actual-{name}"));
                img.save_png(&p).ok().map(|_| self.results.relative(&p))
            });
            let reference_path = ev.reference_path.as_ref().map(|p| crate::project::absolute(p).display().to_string());
            self.events.emit(Event::Check {
                step: n,
                kind: e.check.kind().into(),
                negate: e.negate,
                passed: ev.passed,
                check: format!("{}{}", if e.negate { "not " } else { "" }, e.check.describe()),
                score: ev.score,
                threshold: ev.threshold,
                text: ev.text.clone(),
                found: ev.found,
                region: e.check.region(),
                polls,
                elapsed_ms: elapsed.as_millis() as u64,
                screenshot: screenshot.clone(),
                reference,
                diff,
                note: ev.note.clone(),
                scores: ev.scores.clone(),
                actual,
                reference_path,
            });
        }
    }

    /// Poll until the screen differs from `before` (outside blinking cells) by
    /// at least `w.min_pixels` changed pixels.
    async fn wait_change(
        &mut self,
        n: usize,
        before: &Frame,
        w: &ChangeWait,
        budget: Duration,
    ) -> Result<(), (StepError, Option<Frame>)> {
        let start = Instant::now();
        region_on_screen(w.region, before).map_err(|e| (e, None))?;
        let mut watcher = ChangeWatcher::new(before, w.region, w.tolerance, Duration::ZERO);
        watcher.learn(&self.blinkers);
        let mut polls = 0u32;
        loop {
            let frame = self.screen.capture().await.map_err(|e| (e.into(), None))?;
            polls += 1;
            watcher.observe(&frame, start.elapsed());
            let changed = watcher.changed_since(before, &frame);
            let ok = changed >= w.min_pixels;
            if ok || start.elapsed() >= budget {
                self.remember_blinkers(&watcher);
                let region = w.region.unwrap_or(frame.bounds());
                let blinking = watcher.blinking();
                self.screen_wait_event(
                    n,
                    "wait_change",
                    ok,
                    changed as f64,
                    w.min_pixels as f64,
                    region,
                    polls,
                    start,
                    &blinking,
                );
                if ok {
                    return Ok(());
                }
                let why = format!(
                    "the screen did not change within {:.1}s ({changed} changed pixels in {region}, {} needed)",
                    budget.as_secs_f64(),
                    w.min_pixels
                );
                return Err((StepError::Failed(why), Some(frame)));
            }
            self.sleep(SCREEN_POLL).await.map_err(|e| (e, None))?;
        }
    }

    /// Poll until the screen (outside blinking cells) has not changed for `w.quiet`.
    async fn wait_still(
        &mut self,
        n: usize,
        w: &StillWait,
        budget: Duration,
    ) -> Result<(), (StepError, Option<Frame>)> {
        let budget = budget.max(w.quiet + Duration::from_secs(1));
        let start = Instant::now();
        let first = self.screen.capture().await.map_err(|e| (e.into(), None))?;
        region_on_screen(w.region, &first).map_err(|e| (e, None))?;
        let mut watcher = ChangeWatcher::new(&first, w.region, w.tolerance, Duration::ZERO);
        watcher.learn(&self.blinkers);
        let mut polls = 1u32;
        loop {
            self.sleep(SCREEN_POLL).await.map_err(|e| (e, None))?;
            let frame = self.screen.capture().await.map_err(|e| (e.into(), None))?;
            polls += 1;
            let o = watcher.observe(&frame, start.elapsed());
            let ok = o.still_for >= w.quiet;
            if ok || start.elapsed() >= budget {
                self.remember_blinkers(&watcher);
                let region = watcher.region();
                let still = o.still_for.as_secs_f64();
                self.screen_wait_event(
                    n,
                    "wait_still",
                    ok,
                    still,
                    w.quiet.as_secs_f64(),
                    region,
                    polls,
                    start,
                    &o.blinking,
                );
                if ok {
                    return Ok(());
                }
                let why = format!(
                    "the screen kept changing for {:.1}s (still for {still:.1}s at the end, {:.1}s needed; {} pixels changed last)",
                    budget.as_secs_f64(),
                    w.quiet.as_secs_f64(),
                    o.changed_pixels
                );
                return Err((StepError::Failed(why), Some(frame)));
            }
        }
    }

    fn remember_blinkers(&mut self, watcher: &ChangeWatcher) {
        for (rect, states) in watcher.blinkers() {
            self.blinkers.retain(|(r, _)| *r != rect);
            self.blinkers.push((rect, states));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn screen_wait_event(
        &self,
        n: usize,
        kind: &str,
        passed: bool,
        score: f64,
        threshold: f64,
        region: crate::geometry::Rect,
        polls: u32,
        start: Instant,
        blinking: &[crate::geometry::Rect],
    ) {
        let note = (!blinking.is_empty()).then(|| {
            let cells: Vec<String> = blinking.iter().take(8).map(|r| r.to_string()).collect();
            format!("blinking, masked: {}{}", cells.join("; "), if blinking.len() > 8 { "; ..." } else { "" })
        });
        let check = match kind {
            "wait_change" => format!("wait_change in {region}: at least {threshold} changed pixels"),
            _ => format!("wait_still in {region}: no change for {threshold:.1}s"),
        };
        self.events.emit(Event::Check {
            step: n,
            kind: kind.into(),
            negate: false,
            passed,
            check,
            score: Some(score),
            threshold: Some(threshold),
            text: None,
            found: None,
            region: Some(region),
            polls,
            elapsed_ms: start.elapsed().as_millis() as u64,
            screenshot: None,
            reference: None,
            diff: None,
            note,
            scores: Vec::new(),
            actual: None,
            reference_path: None,
        });
    }

    /// Wait until the screen has not changed for `quiet` (at most `max`).
    async fn settle(&mut self, quiet: Duration, max: Duration) -> Result<(), StepError> {
        let start = Instant::now();
        let mut last = self.screen.capture().await?;
        let mut since = Instant::now();
        while start.elapsed() < max {
            self.sleep(Duration::from_millis(100)).await?;
            let f = self.screen.capture().await?;
            if f != last {
                last = f;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return Ok(());
            }
        }
        tracing::debug!("screen still changing after {max:?}; going on");
        Ok(())
    }

    /// Sleep, unless a stop request for this phase comes first.
    async fn sleep(&mut self, d: Duration) -> Result<(), StepError> {
        if *self.cancel.borrow() >= self.interrupt_at {
            return Err(StepError::Cancelled);
        }
        let deadline = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                changed = self.cancel.changed() => {
                    if changed.is_err() {
                        // the sender is gone: nobody can cancel any more
                        tokio::time::sleep_until(deadline).await;
                        return Ok(());
                    }
                    if *self.cancel.borrow() >= self.interrupt_at {
                        return Err(StepError::Cancelled);
                    }
                }
            }
        }
    }
}

/// Resolve a `file:` pattern on the target: a pattern that does not match
/// exactly one file fails the step, a target that cannot answer is an error.
async fn resolve_file(commands: &mut Commands, pattern: &str) -> Result<String, StepError> {
    match commands.resolve_file(pattern).await {
        Ok(Ok(path)) => Ok(path),
        Ok(Err(why)) => Err(StepError::Failed(why)),
        Err(e) => Err(StepError::Infra(e.to_string())),
    }
}

/// A launch that could not start: the app's fault unless the connection or the session broke.
fn launch_error(e: BackendError) -> StepError {
    match e {
        BackendError::Ssh(_) | BackendError::Session(_) => StepError::Infra(e.to_string()),
        other => StepError::Failed(other.to_string()),
    }
}

/// A screen wait's region must lie on the screen.
fn region_on_screen(region: Option<crate::geometry::Rect>, frame: &Frame) -> Result<(), StepError> {
    match region {
        Some(r) if r.is_empty() || !frame.bounds().contains_rect(&r) => {
            Err(StepError::Failed(format!("region {r} lies outside the {}x{} screen", frame.width(), frame.height())))
        }
        _ => Ok(()),
    }
}

fn tail(s: &str) -> String {
    let n = s.chars().count();
    if n <= TAIL { s.to_string() } else { format!("…{}", s.chars().skip(n - TAIL).collect::<String>()) }
}

fn stderr_hint(stderr: &str) -> String {
    let t = stderr.trim();
    if t.is_empty() { String::new() } else { format!("; stderr: {}", one_line(t, 300)) }
}

fn one_line(s: &str, max: usize) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > max { format!("{}…", joined.chars().take(max).collect::<String>()) } else { joined }
}
