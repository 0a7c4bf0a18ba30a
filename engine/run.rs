//! One run, end to end: inventory target + scenario -> validated plan ->
//! prepared machine -> VNC connection and recording -> runner -> results.
//!
//! Nothing downstream reaches back upstream: the plan is complete before the
//! machine starts, and the results are derived from the event stream.
//! Teardown and the result files happen on every path out of a started run
//! (failure, infrastructure error, Ctrl-C).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::backend::{Machine, StartContext};
use crate::console::{Console, Verbosity};
use crate::events::{Event, EventLog, EventSink, JsonlSink, Verdict};
use crate::frame::Frame;
use crate::inventory::{Inventory, Target};
use crate::project::{Project, display_path};
use crate::recorder::{FrameSource, Recorder, RecorderOptions};
use crate::results::{ResultsDir, junit, summary};
use crate::rfb::VncClient;
use crate::runner::screen::Screen;
use crate::runner::{Cancel, Runner, RunnerParts};
use crate::scenario::diagnostic::{Diagnostic, Diagnostics};
use crate::scenario::node::{Node, Value};
use crate::scenario::plan::{self, Plan, PlanOptions, TargetInfo, UpdateReferences};
use crate::scenario::source::{SourceMap, Span};
use crate::scenario::yaml;
use crate::secrets::SecretStore;

/// What `smoke run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub scenario: PathBuf,
    pub os: Option<String>,
    /// `--var k=v`, in order.
    pub vars: Vec<String>,
    pub inventory: Option<PathBuf>,
    pub results_root: PathBuf,
    pub update_references: UpdateReferences,
    pub verbosity: Verbosity,
    /// Where history.jsonl lives (default: `results_root`).
    pub history_root: Option<PathBuf>,
    /// Keep the target up after the first failed step until the user says go on.
    pub pause_on_failure: bool,
    /// `--no-cache`: ask the model even when the cache knows the answer (and store nothing).
    pub no_cache: bool,
    /// `--from-step N` / `--from-checkpoint NAME`.
    pub start_at: crate::runner::vm::StartAt,
    /// `--keep-checkpoints`: leave checkpoint snapshots on the VM after the run.
    pub keep_checkpoints: bool,
    /// `--lock-timeout`: how long to wait for a VM another run holds.
    pub lock_timeout: Option<Duration>,
}

/// How a run ended.
#[derive(Debug)]
pub struct RunReport {
    pub verdict: Verdict,
    /// The process exit code: the verdict's, or 4 when the VLM model is missing.
    pub exit_code: i32,
    pub results: Option<PathBuf>,
    /// For invalid input: the rendered diagnostics.
    pub message: Option<String>,
}

/// Everything validated before a machine is touched.
pub struct Prepared {
    pub plan: Plan,
    pub target: Target,
    pub secrets: SecretStore,
    pub sources: SourceMap,
    /// The inventory's vision-language model, if it configures one.
    pub vlm: Option<crate::vlm::config::VlmConfig>,
}

/// Load inventory, target and plan; all mistakes at once.
pub fn prepare(
    scenario: &Path,
    os: Option<&str>,
    vars: &[String],
    inventory: Option<&Path>,
    update: UpdateReferences,
) -> Result<Prepared, (Diagnostics, SourceMap)> {
    let mut sources = SourceMap::new();
    let project = Project::of_file(scenario);
    let inv = Inventory::locate(inventory, Some(&project.root), &mut sources).map_err(|d| (d, sources.clone()))?;
    let target = inv.target(os).map_err(|m| (one(Span::command_line("--os"), m), sources.clone()))?.clone();
    let mut overrides = Vec::new();
    let mut diags = Diagnostics::new();
    for v in vars {
        match parse_var(v) {
            Ok(kv) => overrides.push(kv),
            Err(m) => diags.push(Diagnostic::new(&Span::command_line(&format!("--var {v}")), m)),
        }
    }
    if !diags.is_empty() {
        return Err((diags, sources));
    }
    let secrets = SecretStore::new(target.secrets.clone());
    let opts = PlanOptions {
        target: target_info(&target),
        overrides,
        update_references: update,
        secrets: secrets.clone(),
        vlm: inv.vlm.is_some(),
    };
    let plan = plan::load(scenario, &opts, &mut sources).map_err(|d| (d, sources.clone()))?;
    Ok(Prepared { plan, target, secrets, sources, vlm: inv.vlm.clone() })
}

/// What the plan needs to know about a target.
pub fn target_info(t: &Target) -> TargetInfo {
    TargetInfo {
        name: t.name.clone(),
        family: t.family.clone(),
        desktop: t.desktop.clone(),
        backend: t.backend.name().to_string(),
        capabilities: t.capabilities(),
        vars: t.vars.clone(),
    }
}

fn one(span: Span, m: String) -> Diagnostics {
    let mut d = Diagnostics::new();
    d.push(Diagnostic::new(&span, m));
    d
}

/// `k=v` with `v` read as a YAML value (so `n=3` is an int and `apps=[a, b]` a list).
pub fn parse_var(s: &str) -> Result<(String, Node), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("--var takes NAME=VALUE, got '{s}'"))?;
    let k = k.trim();
    if k.is_empty()
        || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || k.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(format!("'{k}' is not a variable name (letters, digits, '_')"));
    }
    let span = Span::command_line(&format!("--var {k}"));
    let node = match yaml::parse(&Arc::from(format!("--var {k}")), v.as_bytes()) {
        Ok(n) if !matches!(n.value, Value::Null) || v.trim() == "null" => Node::from_json(&n.to_json(), &span),
        _ => Node::new(span, Value::Str(v.to_string())),
    };
    Ok((k.to_string(), node))
}

/// Run a scenario. Never panics on bad input; returns the verdict.
pub async fn run(req: RunRequest, cancel: watch::Receiver<Cancel>) -> RunReport {
    let prepared =
        match prepare(&req.scenario, req.os.as_deref(), &req.vars, req.inventory.as_deref(), req.update_references) {
            Ok(p) => p,
            Err((d, sources)) => {
                return RunReport {
                    verdict: Verdict::Invalid,
                    exit_code: Verdict::Invalid.exit_code(),
                    results: None,
                    message: Some(d.sorted().render(&sources)),
                };
            }
        };
    if let Err(m) = req.start_at.first_index(&prepared.plan) {
        return RunReport {
            verdict: Verdict::Invalid,
            exit_code: Verdict::Invalid.exit_code(),
            results: None,
            message: Some(format!("smoke: {m}")),
        };
    }
    run_prepared(prepared, &req, cancel).await
}

/// Run an already validated plan, reporting to the console.
pub async fn run_prepared(p: Prepared, req: &RunRequest, cancel: watch::Receiver<Cancel>) -> RunReport {
    run_with_sink(p, req, cancel, Box::new(Console::new(req.verbosity))).await
}

/// Run an already validated plan, reporting live progress to `sink`.
pub async fn run_with_sink(
    p: Prepared,
    req: &RunRequest,
    cancel: watch::Receiver<Cancel>,
    sink: Box<dyn EventSink>,
) -> RunReport {
    let start = Instant::now();
    let results = match ResultsDir::create(&req.results_root, &p.plan.name, &p.target.name) {
        Ok(r) => r,
        Err(e) => {
            return RunReport {
                verdict: Verdict::Error,
                exit_code: Verdict::Error.exit_code(),
                results: None,
                message: Some(format!("cannot create the results folder under {}: {e}", req.results_root.display())),
            };
        }
    };
    let events = EventLog::new(p.secrets.redactor());
    match JsonlSink::create(&results.events()) {
        Ok(sink) => events.add_sink(Box::new(sink)),
        Err(e) => tracing::warn!("cannot write {}: {e}", results.events().display()),
    }
    events.add_sink(sink);
    events.emit(Event::RunStarted {
        scenario: p.plan.name.clone(),
        file: display_path(&p.plan.file),
        os: p.target.name.clone(),
        backend: p.target.backend.name().into(),
        results: display_path(&results.path),
        smoke_version: env!("CARGO_PKG_VERSION").into(),
        steps: p.plan.steps.len() + p.plan.cleanup.len(),
        inputs: fingerprint(&p),
    });
    let outcome = match vlm_preflight(&p, req, &events).await {
        Ok(vlm) => execute(&p, &results, &events, req, cancel, vlm).await.map_err(|m| (Verdict::Error.exit_code(), m)),
        Err(e) => Err(e),
    };
    let (verdict, counts, reason, exit_code) = match outcome {
        Ok(r) => (r.verdict, (r.passed, r.failed, r.errors, r.skipped), r.reason.clone(), r.exit_code()),
        Err((code, message)) => {
            let skipped = p.plan.all_steps().count();
            (Verdict::Error, (0, 0, 0, skipped), Some(message), code)
        }
    };
    events.emit(Event::RunFinished {
        verdict,
        exit_code,
        duration_ms: start.elapsed().as_millis() as u64,
        passed: counts.0,
        failed: counts.1,
        errors: counts.2,
        skipped: counts.3,
        reason,
    });
    write_reports(&results, &events);
    record_history(req.history_root.as_deref().unwrap_or(&req.results_root), &results, &events);
    RunReport { verdict, exit_code, results: Some(results.path.clone()), message: None }
}

/// Exit code of a run whose VLM model is not served by the endpoint.
pub const EXIT_MODEL_MISSING: i32 = 4;

/// Before the first step: when the plan asks a model, check that the endpoint
/// answers and serves the configured models, and warm the judge up.
async fn vlm_preflight(
    p: &Prepared,
    req: &RunRequest,
    events: &EventLog,
) -> Result<Option<Arc<crate::vlm::Vlm>>, (i32, String)> {
    if !p.plan.all_steps().any(|s| crate::scenario::model::uses_vlm(&s.step)) {
        return Ok(None);
    }
    let infra = Verdict::Error.exit_code();
    // the plan refuses VLM steps without `vlm:`; this is a second line
    let cfg = p
        .vlm
        .clone()
        .ok_or((infra, "the scenario asks a vision-language model, but the inventory has no `vlm:`".to_string()))?;
    let vlm = crate::vlm::Vlm::new(cfg, &p.secrets, !req.no_cache)
        .map_err(|e| (infra, format!("vision-language model: {e}")))?;
    match vlm.preflight().await {
        Ok(pf) => {
            events.emit(Event::VlmReady { endpoint: pf.endpoint, models: pf.models, warmup_ms: pf.warmup_ms });
            Ok(Some(Arc::new(vlm)))
        }
        Err(e @ crate::vlm::VlmError::ModelMissing { .. }) => Err((
            EXIT_MODEL_MISSING,
            format!(
                "vision-language model preflight: {e}; load the model on the server or change `vlm:` in the inventory"
            ),
        )),
        Err(e) => Err((infra, format!("vision-language model preflight: {e}"))),
    }
}

/// Fingerprint of what the run was made of: the scenario, routines and
/// references (their bytes), the variables and the target.
pub fn fingerprint(p: &Prepared) -> String {
    let mut f = crate::history::Fingerprint::default();
    for file in p.plan.input_files() {
        f.add(file.display().to_string().as_bytes());
        f.add(&std::fs::read(&file).unwrap_or_default());
    }
    f.add(p.plan.vars.to_string().as_bytes());
    f.add(p.target.name.as_bytes());
    f.hex()
}

/// Append the run to the history of its results root.
pub fn record_history(root: &Path, results: &ResultsDir, events: &EventLog) {
    let s = summary::from_events(&events.records());
    let checks = s
        .steps
        .iter()
        .flat_map(|st| {
            st.checks.iter().filter_map(move |c| {
                Some(crate::history::CheckScore {
                    step: st.step,
                    label: st.label.clone(),
                    kind: c.get("kind")?.as_str()?.to_string(),
                    score: c.get("score")?.as_f64()?,
                    threshold: c.get("threshold").and_then(|t| t.as_f64()),
                    passed: c.get("passed")?.as_bool()?,
                })
            })
        })
        .collect();
    let run = results.path.strip_prefix(root).unwrap_or(&results.path).display().to_string();
    let entry = crate::history::Entry {
        time: s.started.clone(),
        scenario: s.scenario.clone(),
        os: s.os.clone(),
        verdict: s.verdict,
        duration_ms: s.duration_ms,
        run,
        inputs: s.inputs.clone(),
        checks,
    };
    if let Err(e) = crate::history::append(root, &entry) {
        tracing::warn!("cannot append to the history in {}: {e}", root.display());
    }
}

/// summary.json and junit.xml, from the events.
pub fn write_reports(results: &ResultsDir, events: &EventLog) {
    let s = summary::from_events(&events.records());
    let mut json = serde_json::to_value(&s).unwrap_or_default();
    events.redactor().redact_json(&mut json);
    let text = serde_json::to_string_pretty(&json).unwrap_or_default();
    if let Err(e) = std::fs::write(results.summary(), text + "\n") {
        tracing::warn!("cannot write {}: {e}", results.summary().display());
    }
    let xml = events.redactor().redact(&junit::render(&s));
    if let Err(e) = std::fs::write(results.junit(), xml) {
        tracing::warn!("cannot write {}: {e}", results.junit().display());
    }
    if let Err(e) = crate::report::run::write(&results.path) {
        tracing::warn!("cannot write the HTML report: {e}");
    }
}

/// Where a local VM's checkpoints live: kept in the project
/// (`.smoke/checkpoints/TARGET/`) when the run keeps them, resumed from
/// there with `--from-checkpoint`, per run otherwise.
fn vm_disk(p: &Prepared, req: &RunRequest) -> crate::vm::qemu::InstanceDisk {
    use crate::vm::qemu::InstanceDisk;
    let kept = p.plan.project.root.join(KEPT_CHECKPOINTS).join(&p.target.name);
    if let crate::runner::vm::StartAt::Checkpoint(_) = req.start_at {
        InstanceDisk::Resume(kept)
    } else if req.keep_checkpoints || p.plan.checkpoints.keep {
        InstanceDisk::Keep(kept)
    } else {
        InstanceDisk::PerRun
    }
}

/// Under the project root: the local VMs' kept checkpoints, one folder per target.
pub const KEPT_CHECKPOINTS: &str = ".smoke/checkpoints";

/// Start the machine, connect, record, run, and always tear down.
async fn execute(
    p: &Prepared,
    results: &ResultsDir,
    events: &EventLog,
    req: &RunRequest,
    cancel: watch::Receiver<Cancel>,
    vlm: Option<Arc<crate::vlm::Vlm>>,
) -> Result<crate::runner::RunResult, String> {
    let setup = Instant::now();
    let mut lock = crate::vm::lock::LockSettings::new(crate::vm::lock::Purpose {
        what: format!("smoke run {}", display_path(&p.plan.file)),
        run: results.path.file_name().map(|n| n.to_string_lossy().to_string()),
    });
    if let Some(t) = req.lock_timeout {
        lock.timeout = t;
    }
    let ctx = StartContext {
        logs: results.logs(),
        cwd: p.plan.project.root.clone(),
        secrets: p.secrets.clone(),
        lock: Some(lock),
        vm_disk: vm_disk(p, req),
    };
    let mut machine =
        Machine::start(&p.target, &ctx).await.map_err(|e| format!("preparing target '{}': {e}", p.target.name))?;
    for g in machine.locks() {
        events.emit(Event::Lock {
            resource: g.key.to_string(),
            waited_ms: g.waited.as_millis() as u64,
            recovered: g.recovered.as_ref().map(|h| format!("pid {} ({})", h.pid, h.purpose)),
        });
        if g.recovered.is_some() {
            events.emit(Event::Warning { message: g.note() });
        }
    }
    let outcome = async {
        let client = connect(&machine, p.target.encodings.as_deref()).await?;
        let (w, h) = client.size();
        events.emit(Event::TargetReady {
            desktop_name: client.desktop_name(),
            width: w,
            height: h,
            vnc: machine.vnc().endpoint.to_string(),
            setup_ms: setup.elapsed().as_millis() as u64,
        });
        let recorder =
            Recorder::start(Arc::new(VncFrames(client.clone())), results.recording(), RecorderOptions::default())
                .map_err(|e| format!("starting the recording: {e}"))?;
        let typing =
            crate::runner::screen::TargetTyping { interval: p.target.type_interval, confirm: p.target.type_confirm };
        let screen =
            Screen::new(client.clone(), events.clone()).with_layout(p.target.keyboard_layout).with_typing(typing);
        let pause = req.pause_on_failure.then(|| crate::runner::PauseOnFailure { access: machine.access_info() });
        let (commands, vm) = machine.parts();
        let frame_index: crate::runner::FrameIndex<'_> = Box::new(|| recorder.frame_index());
        let mut runner = Runner::new(RunnerParts {
            plan: &p.plan,
            screen,
            commands,
            events: events.clone(),
            results,
            update: req.update_references,
            cancel,
            frame_index: Some(frame_index),
            pause,
            vlm,
            vm,
            start_at: req.start_at.clone(),
            keep_checkpoints: req.keep_checkpoints,
        });
        let result = runner.run().await;
        for r in runner.created_references() {
            events.emit(Event::Warning { message: format!("reference image written: {}", display_path(r)) });
        }
        drop(runner);
        let reconnects = client.reconnects();
        if reconnects > 0 {
            events.emit(Event::Warning {
                message: format!(
                    "the VNC connection was re-established {reconnects} time(s) (lost or stalled, or a rollback \
                     restarted the VM); the log says when"
                ),
            });
        }
        match recorder.stop().await {
            Ok(stats) => events.emit(Event::Recording {
                path: results.relative(&stats.path),
                frames_sampled: stats.frames_sampled,
                frames_kept: stats.frames_kept,
                bytes: stats.bytes,
                duration_ms: stats.duration.as_millis() as u64,
            }),
            Err(e) => events.emit(Event::Warning { message: format!("recording failed: {e}") }),
        }
        client.close().await;
        Ok(result)
    }
    .await;
    for note in machine.teardown().await {
        tracing::debug!("teardown: {note}");
    }
    outcome
}

/// Connect to the machine's VNC server, retrying while it comes up.
/// `encodings` (the inventory's, in preference order) win over the backend's.
async fn connect(machine: &Machine, encodings: Option<&[crate::rfb::Encoding]>) -> Result<VncClient, String> {
    let mut access = machine.vnc();
    // single-use accesses (Proxmox tickets): every attempt after the first gets a new one
    let renewal = machine.vnc_renewal();
    let mut opts = access.connect_options(Duration::from_secs(10));
    if let Some(e) = encodings {
        opts.encodings = e.to_vec();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match VncClient::connect(&access.endpoint, &opts).await {
            Ok(c) => {
                // a lost or stalled connection is replaced within the step's budget
                c.set_reconnect(true);
                if let Some(r) = renewal {
                    c.set_renewal(r);
                }
                return Ok(c);
            }
            Err(e) if Instant::now() < deadline && is_transient(&e) => {
                tracing::debug!("VNC not ready yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Some(r) = &renewal {
                    match r.renew().await {
                        Ok(fresh) => (access.endpoint, opts.password) = (fresh.endpoint, fresh.password),
                        Err(e) => tracing::debug!("a new VNC access: {e}"),
                    }
                }
            }
            Err(e) => return Err(format!("connecting to VNC at {}: {e}", access.endpoint)),
        }
    }
}

fn is_transient(e: &crate::rfb::RfbError) -> bool {
    matches!(
        e,
        crate::rfb::RfbError::Io { .. }
            | crate::rfb::RfbError::Disconnected { .. }
            | crate::rfb::RfbError::Timeout { .. }
    )
}

/// The VNC client as the recorder's frame source.
struct VncFrames(VncClient);

impl FrameSource for VncFrames {
    fn update_seq(&self) -> u64 {
        self.0.update_seq()
    }
    fn snapshot(&self) -> Option<Frame> {
        Some(self.0.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_keep_yaml_types() {
        assert_eq!(parse_var("n=3").unwrap().1.value, Value::Int(3));
        assert_eq!(parse_var("s=hello world").unwrap().1.value, Value::Str("hello world".into()));
        assert_eq!(parse_var("b=yes").unwrap().1.value, Value::Str("yes".into()));
        assert!(matches!(parse_var("l=[a, b]").unwrap().1.value, Value::Seq(ref v) if v.len() == 2));
        assert_eq!(parse_var("e=").unwrap().1.value, Value::Str(String::new()));
        assert_eq!(parse_var("q=a: [").unwrap().1.value, Value::Str("a: [".into()));
        assert!(parse_var("novalue").is_err());
        assert!(parse_var("1x=2").is_err());
    }
}
