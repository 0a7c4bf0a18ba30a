//! The runner's VM steps: `boot` (classified from the serial console),
//! serial `expect` / `send`, `checkpoint` snapshots with their retention,
//! and rewinding to a checkpoint after a failed step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Runner, StepError};
use crate::events::Event;
use crate::scenario::model::{BOOT_TIMEOUT, BootAction, SerialExpect, SerialSend};
use crate::scenario::plan::PlannedStep;
use crate::vm::boot::{BootOutcome, BootRules, BootWatch};
use crate::vm::serial::{SerialConsole, SerialError};
use crate::vm::{VmError, VmStatus};

/// Between looks at the serial transcript while booting.
const BOOT_POLL: Duration = Duration::from_millis(100);
/// Between asking the VM whether it still runs while booting.
const STATUS_POLL: Duration = Duration::from_secs(1);
/// After a failure marker: keep reading (the backtrace follows) until this much silence...
const FAILURE_QUIET: Duration = Duration::from_millis(500);
/// ...but no longer than this.
const FAILURE_GRACE: Duration = Duration::from_secs(3);
/// Characters of the transcript kept in the boot event (the log has all of it).
const TRANSCRIPT_TAIL: usize = 6000;
/// Before a checkpoint the screen must be still this long: keys typed just
/// before are still in the hypervisor's input queue (QEMU hands VNC key
/// events to the guest 10 ms apart) and a snapshot taken then loses them...
const SETTLE_QUIET: Duration = Duration::from_millis(500);
/// ...but a screen that never stops changing (a clock, a video) gets this long.
const SETTLE_BUDGET: Duration = Duration::from_secs(5);

/// Where the main steps start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StartAt {
    #[default]
    Beginning,
    /// `--from-step N`: main step N (1-based); earlier ones are skipped.
    Step(usize),
    /// `--from-checkpoint NAME`: roll the VM back to the snapshot an earlier
    /// run left and start after that checkpoint step.
    Checkpoint(String),
}

impl StartAt {
    /// Check against the plan: the index of the first main step to run.
    pub fn first_index(&self, plan: &crate::scenario::plan::Plan) -> Result<usize, String> {
        match self {
            StartAt::Beginning => Ok(0),
            StartAt::Step(n) if *n >= 1 && *n <= plan.steps.len() => Ok(n - 1),
            StartAt::Step(n) => Err(format!(
                "--from-step {n}: the scenario has main steps 1 to {} (see `smoke validate --plan`)",
                plan.steps.len()
            )),
            StartAt::Checkpoint(name) => match plan.checkpoint(name) {
                Some(ps) => Ok(plan.steps.iter().position(|s| s.number == ps.number).map_or(0, |i| i + 1)),
                None => {
                    let names = plan.checkpoint_names();
                    Err(if names.is_empty() {
                        format!("--from-checkpoint {name}: the scenario has no checkpoint steps")
                    } else {
                        format!("--from-checkpoint {name}: no such checkpoint; the scenario has {}", names.join(", "))
                    })
                }
            },
        }
    }
}

/// The snapshot name of a checkpoint.
pub fn snapshot_name(checkpoint: &str) -> String {
    format!("smoke-{checkpoint}")
}

/// A checkpoint whose snapshot exists on the VM.
#[derive(Debug, Clone)]
pub(super) struct LiveCheckpoint {
    pub name: String,
    pub step: usize,
    /// Made by this run (deleted at the end unless kept); `false` for the
    /// one `--from-checkpoint` started from.
    pub ours: bool,
}

/// The VM state the runner keeps.
#[derive(Default)]
pub(super) struct VmState {
    pub serial: Option<Arc<SerialConsole>>,
    /// Snapshots alive, oldest first.
    pub checkpoints: Vec<LiveCheckpoint>,
    /// Checkpoints already rewound to (each is used once).
    pub rewound: Vec<String>,
    /// How each boot step ended (step number -> outcome).
    pub boots: Vec<(usize, BootOutcome)>,
}

fn vm_error(e: VmError) -> StepError {
    StepError::Infra(e.to_string())
}

fn serial_error(e: SerialError) -> StepError {
    match e {
        e @ (SerialError::Timeout { .. } | SerialError::Closed { .. }) => StepError::Failed(e.to_string()),
        e => StepError::Infra(e.to_string()),
    }
}

impl Runner<'_> {
    fn vm(&mut self) -> Result<&mut dyn crate::vm::VmBackend, StepError> {
        match self.vm.as_deref_mut() {
            Some(vm) => Ok(vm),
            None => Err(StepError::Infra("this target is not a VM".into())),
        }
    }

    /// The VM's serial console (opened once).
    async fn console(&mut self) -> Result<Arc<SerialConsole>, StepError> {
        if let Some(c) = &self.vm_state.serial {
            return Ok(c.clone());
        }
        let c = self.vm()?.serial().await.map_err(vm_error)?;
        self.vm_state.serial = Some(c.clone());
        Ok(c)
    }

    /// Wait for something that may take long, giving up when the run is interrupted.
    async fn cancellable<T>(&mut self, fut: impl std::future::Future<Output = T>) -> Result<T, StepError> {
        if *self.cancel.borrow() >= self.interrupt_at {
            return Err(StepError::Cancelled);
        }
        let mut cancel = self.cancel.clone();
        let at = self.interrupt_at;
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Ok(out),
                changed = cancel.changed() => {
                    if changed.is_err() {
                        return Ok(fut.await);
                    }
                    if *cancel.borrow() >= at {
                        return Err(StepError::Cancelled);
                    }
                }
            }
        }
    }

    /// `boot:`: follow the serial console until the system is up, fails,
    /// stalls or runs out of time.
    pub(super) async fn boot(
        &mut self,
        n: usize,
        b: &BootAction,
        step_timeout: Option<Duration>,
    ) -> Result<(), StepError> {
        let console = self.console().await?;
        let rules = BootRules {
            marker: b.marker.clone(),
            login: b.login,
            failures: b.failures.clone(),
            stall: b.stall,
            timeout: b.timeout.or(step_timeout).unwrap_or(BOOT_TIMEOUT),
        };
        let mut watch = BootWatch::new(rules);
        let start = Instant::now();
        let mut seen = 0usize;
        let mut exited = false;
        let mut last_status = Instant::now();
        let outcome = loop {
            feed(&console, &mut watch, &mut seen, start.elapsed());
            if console.is_closed() {
                exited = true;
            }
            if !exited && last_status.elapsed() >= STATUS_POLL {
                last_status = Instant::now();
                if let Ok(VmStatus::Stopped) = self.vm()?.status().await {
                    exited = true;
                    // what it printed last may still be in flight
                    feed(&console, &mut watch, &mut seen, start.elapsed());
                }
            }
            if let Some(o) = watch.decide(start.elapsed(), exited) {
                break o;
            }
            self.sleep(BOOT_POLL).await?;
        };
        if outcome == BootOutcome::BootFailed && !exited {
            // the panic's backtrace follows the marker: keep it for the evidence
            let grace = Instant::now();
            while grace.elapsed() < FAILURE_GRACE && watch.silence(start.elapsed()) < FAILURE_QUIET {
                self.sleep(BOOT_POLL).await?;
                feed(&console, &mut watch, &mut seen, start.elapsed());
            }
        }
        let report = watch.report(Some(outcome), start.elapsed(), exited);
        let text = console.transcript();
        let log = self.serial_log(&text);
        let skip = text.chars().count().saturating_sub(TRANSCRIPT_TAIL);
        self.events.emit(Event::Boot {
            step: n,
            outcome,
            label: outcome.label().into(),
            exit_code: outcome.exit_code(),
            stage: report.stage,
            stages: report.stages.clone(),
            failure: report.failure.clone(),
            summary: report.summary.clone(),
            elapsed_ms: report.elapsed_ms,
            silent_ms: report.silent_ms,
            transcript: text.chars().skip(skip).collect(),
            log,
        });
        self.vm_state.boots.retain(|(s, _)| *s != n);
        self.vm_state.boots.push((n, outcome));
        if outcome.passed() {
            // later `expect` steps see what came after the ready line
            if let Some(hit) = report.stages.iter().find(|h| h.stage == crate::vm::boot::Stage::Login)
                && let Ok(r) = regex::Regex::new(&format!("(?m){}", regex::escape(&hit.line)))
            {
                let _ = console.expect(&r, Duration::ZERO).await;
            }
            Ok(())
        } else {
            Err(StepError::Failed(report.summary))
        }
    }

    /// The serial log in the results: QEMU writes `logs/serial.log` itself;
    /// for a backend that does not, the cleaned transcript is written there.
    fn serial_log(&self, transcript: &str) -> Option<String> {
        let path = self.results.logs().join("serial.log");
        if !path.is_file() {
            let text = self.events.redactor().redact(transcript);
            if let Err(e) = std::fs::write(&path, text) {
                tracing::warn!("cannot write {}: {e}", path.display());
                return None;
            }
        }
        Some(self.results.relative(&path))
    }

    /// `expect: {serial: REGEX}`.
    pub(super) async fn serial_expect(
        &mut self,
        n: usize,
        e: &SerialExpect,
        budget: Duration,
    ) -> Result<(), StepError> {
        let console = self.console().await?;
        let start = Instant::now();
        let budget = e.timeout.unwrap_or(budget);
        let found = self.cancellable(console.expect(&e.pattern, budget)).await?.map_err(serial_error)?;
        self.events.emit(Event::Serial {
            step: n,
            direction: "expect".into(),
            text: found.matched,
            pattern: Some(e.pattern.as_str().to_string()),
            elapsed_ms: start.elapsed().as_millis() as u64,
        });
        Ok(())
    }

    /// `send: {serial: TEXT}`.
    pub(super) async fn serial_send(&mut self, n: usize, s: &SerialSend) -> Result<(), StepError> {
        let console = self.console().await?;
        let start = Instant::now();
        console.send(s.text.as_bytes()).await.map_err(serial_error)?;
        self.events.emit(Event::Serial {
            step: n,
            direction: "send".into(),
            text: s.text.clone(),
            pattern: None,
            elapsed_ms: start.elapsed().as_millis() as u64,
        });
        Ok(())
    }

    /// Wait until the screen is still for [`SETTLE_QUIET`] (blinking cells
    /// aside), at most [`SETTLE_BUDGET`]; whether it settled (a screen that
    /// cannot be captured has nothing to wait for).
    async fn settle_screen(&mut self) -> Result<bool, StepError> {
        let start = Instant::now();
        let Ok(first) = self.screen.capture().await else { return Ok(true) };
        let mut watcher = crate::vision::still::ChangeWatcher::new(&first, None, 0, Duration::ZERO);
        watcher.learn(&self.blinkers);
        while start.elapsed() < SETTLE_BUDGET {
            self.sleep(BOOT_POLL).await?;
            let Ok(frame) = self.screen.capture().await else { return Ok(true) };
            if watcher.observe(&frame, start.elapsed()).still_for >= SETTLE_QUIET {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `checkpoint: NAME`: let the input settle, snapshot the VM (replacing
    /// an older snapshot of the same name), then delete the oldest beyond
    /// the retention.
    pub(super) async fn checkpoint(&mut self, n: usize, name: &str) -> Result<(), StepError> {
        let snapshot = snapshot_name(name);
        if !self.settle_screen().await? {
            self.events.emit(Event::Warning {
                message: format!(
                    "step {n}: checkpoint {name} taken while the screen was still changing after {:.0}s",
                    SETTLE_BUDGET.as_secs_f64()
                ),
            });
        }
        let start = Instant::now();
        if let Some(i) = self.vm_state.checkpoints.iter().position(|c| c.name == name) {
            // taken again after a rewind: the old one goes first
            self.vm_state.checkpoints.remove(i);
            if let Err(e) = self.vm()?.snapshot_delete(&snapshot).await {
                tracing::debug!("deleting the old snapshot {snapshot}: {e}");
            }
        } else if self.vm()?.snapshot_list().await.is_ok_and(|l| l.iter().any(|s| s.name == snapshot)) {
            // kept by an earlier run (names are unique on Proxmox VE): this run's replaces it
            self.vm()?.snapshot_delete(&snapshot).await.map_err(vm_error)?;
            self.events.emit(Event::Checkpoint {
                step: n,
                name: name.to_string(),
                snapshot: snapshot.clone(),
                action: "replaced".into(),
                duration_ms: start.elapsed().as_millis() as u64,
                error: None,
            });
        }
        self.vm()?.snapshot_create(&snapshot).await.map_err(vm_error)?;
        self.events.emit(Event::Checkpoint {
            step: n,
            name: name.to_string(),
            snapshot,
            action: "created".into(),
            duration_ms: start.elapsed().as_millis() as u64,
            error: None,
        });
        self.vm_state.checkpoints.push(LiveCheckpoint { name: name.to_string(), step: n, ours: true });
        while self.vm_state.checkpoints.len() > self.plan.checkpoints.retain {
            let old = self.vm_state.checkpoints.remove(0);
            self.delete_checkpoint(&old, n).await;
        }
        Ok(())
    }

    async fn delete_checkpoint(&mut self, c: &LiveCheckpoint, step: usize) {
        let snapshot = snapshot_name(&c.name);
        let start = Instant::now();
        let error = match self.vm.as_deref_mut() {
            Some(vm) => vm.snapshot_delete(&snapshot).await.err().map(|e| e.to_string()),
            None => Some("this target is not a VM".into()),
        };
        self.events.emit(Event::Checkpoint {
            step,
            name: c.name.clone(),
            snapshot,
            action: "deleted".into(),
            duration_ms: start.elapsed().as_millis() as u64,
            error,
        });
    }

    /// After the run: delete this run's checkpoint snapshots, or keep them
    /// (`keep_checkpoints`, `--keep-checkpoints`).
    pub(super) async fn finish_checkpoints(&mut self) {
        let live = std::mem::take(&mut self.vm_state.checkpoints);
        for c in live.iter().filter(|c| c.ours) {
            if self.keep_checkpoints {
                self.events.emit(Event::Checkpoint {
                    step: c.step,
                    name: c.name.clone(),
                    snapshot: snapshot_name(&c.name),
                    action: "kept".into(),
                    duration_ms: 0,
                    error: None,
                });
            } else {
                self.delete_checkpoint(c, c.step).await;
            }
        }
    }

    /// A main step failed: with `rewind_on_failure`, roll back to the latest
    /// checkpoint before it that was not rewound to yet, and return the index
    /// of the main step to go on with.
    pub(super) async fn rewind(&mut self, failed: &PlannedStep, error: &str) -> Option<usize> {
        if !self.plan.checkpoints.rewind_on_failure || self.vm.is_none() {
            return None;
        }
        let c = self
            .vm_state
            .checkpoints
            .iter()
            .rev()
            .find(|c| c.step < failed.number && !self.vm_state.rewound.contains(&c.name))?
            .clone();
        self.vm_state.rewound.push(c.name.clone());
        let start = Instant::now();
        let snapshot = snapshot_name(&c.name);
        let rolled = match self.vm.as_deref_mut() {
            Some(vm) => vm.snapshot_rollback(&snapshot).await,
            None => return None,
        };
        if let Err(e) = rolled {
            self.events.emit(Event::Warning {
                message: format!("step {}: rolling back to checkpoint {} failed: {e}", failed.number, c.name),
            });
            return None;
        }
        // text printed before the rollback is history now
        if let Some(console) = &self.vm_state.serial {
            console.mark_end();
        }
        self.events.emit(Event::Rewind {
            step: failed.number,
            checkpoint: c.name.clone(),
            to_step: c.step,
            error: error.to_string(),
            duration_ms: start.elapsed().as_millis() as u64,
        });
        // checkpoints taken after this one describe a future that is gone
        self.vm_state.checkpoints.retain(|x| x.step <= c.step);
        self.plan.steps.iter().position(|s| s.number == c.step).map(|i| i + 1)
    }

    /// `--from-checkpoint NAME`: roll back to the snapshot an earlier run left.
    pub(super) async fn resume_from(&mut self, name: &str) -> Result<(), String> {
        let snapshot = snapshot_name(name);
        let step = self.plan.checkpoint(name).map(|s| s.number).unwrap_or(0);
        let Some(vm) = self.vm.as_deref_mut() else {
            return Err("--from-checkpoint needs a VM target".into());
        };
        let known = vm.snapshot_list().await.map_err(|e| format!("listing the VM's snapshots: {e}"))?;
        if !known.iter().any(|s| s.name == snapshot) {
            let ours: Vec<String> =
                known.iter().filter_map(|s| s.name.strip_prefix("smoke-")).map(str::to_string).collect();
            let have = if ours.is_empty() { "none".to_string() } else { ours.join(", ") };
            return Err(format!(
                "--from-checkpoint {name}: the VM has no snapshot {snapshot} (checkpoints on it: {have}); \
                 run the scenario with `keep_checkpoints: true` or --keep-checkpoints first"
            ));
        }
        let start = Instant::now();
        vm.snapshot_rollback(&snapshot).await.map_err(|e| format!("rolling back to {snapshot}: {e}"))?;
        if let Some(console) = &self.vm_state.serial {
            console.mark_end();
        }
        self.events.emit(Event::Checkpoint {
            step,
            name: name.to_string(),
            snapshot,
            action: "resumed".into(),
            duration_ms: start.elapsed().as_millis() as u64,
            error: None,
        });
        self.vm_state.checkpoints.push(LiveCheckpoint { name: name.to_string(), step, ours: false });
        Ok(())
    }
}

/// Hand the transcript's new text to the watch. The transcript is bounded:
/// when its front was dropped (it got shorter), everything is fed again
/// (a stage or failure is recorded once, so repeats do no harm).
fn feed(console: &SerialConsole, watch: &mut BootWatch, seen: &mut usize, at: Duration) {
    let text = console.transcript();
    let from = if text.len() >= *seen && text.is_char_boundary(*seen) { *seen } else { 0 };
    watch.feed(&text[from..], at);
    *seen = text.len();
}
