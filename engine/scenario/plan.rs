//! The validated plan: a scenario with every template rendered, every routine
//! expanded (with typed inputs and cycle detection), every step decoded and
//! every reference image found, before the first action runs.
//!
//! Loading never stops at the first mistake: all diagnostics of the scenario
//! and the routines it calls are collected, each with its file:line:column and,
//! for routine files, the scenario line that called the routine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::project::{Project, display_path};
use crate::scenario::decode::{self, MapReader};
use crate::scenario::diagnostic::{Diagnostic, Diagnostics, did_you_mean};
use crate::scenario::model::{self, Action, Defaults, Reference, Step, Target};
use crate::scenario::node::{Entry, Node, Value};
use crate::scenario::routine::{self, Routine};
use crate::scenario::source::{SourceMap, Span};
use crate::scenario::template::{Context, Templates};
use crate::scenario::yaml;
use crate::secrets::SecretStore;

pub const SCENARIO_KEYS: &[&str] = &[
    "name",
    "description",
    "tags",
    "vars",
    "defaults",
    "steps",
    "cleanup",
    "forensics",
    "rewind_on_failure",
    "retain_checkpoints",
    "keep_checkpoints",
];
/// Checkpoints kept during a run unless the scenario says `retain_checkpoints`.
pub const RETAIN_CHECKPOINTS: usize = 3;
pub const FORENSICS_KEYS: &[&str] = &["routine", "with"];
/// The routine collecting evidence after a failure, unless the scenario names another.
pub const FORENSICS_ROUTINE: &str = "forensics";
pub const CALL_KEYS: &[&str] = &["routine", "with", "label"];
const MAX_ROUTINE_DEPTH: usize = 32;

/// What the plan needs to know about the target OS.
#[derive(Debug, Clone)]
pub struct TargetInfo {
    pub name: String,
    pub family: String,
    pub desktop: Option<String>,
    pub backend: String,
    pub capabilities: Vec<&'static str>,
    /// Inventory variables (override the scenario's `vars:`).
    pub vars: Vec<(String, Node)>,
}

impl TargetInfo {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "family": self.family,
            "desktop": self.desktop,
            "backend": self.backend,
        })
    }
}

/// Whether missing or all reference images are (re)created from this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateReferences {
    #[default]
    None,
    Missing,
    All,
}

/// Inputs of a plan build besides the scenario file.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub target: TargetInfo,
    /// `--var` values, in command-line order (they win over everything).
    pub overrides: Vec<(String, Node)>,
    pub update_references: UpdateReferences,
    pub secrets: SecretStore,
    /// The inventory configures a vision-language model (`vlm:`).
    pub vlm: bool,
}

/// A routine call on the way to a step.
#[derive(Debug, Clone)]
pub struct Call {
    pub routine: String,
    pub file: String,
    pub path: PathBuf,
    pub at: Span,
    pub label: Option<String>,
}

/// One step, ready to run.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    /// 1-based, across steps and then cleanup.
    pub number: usize,
    pub label: String,
    pub step: Step,
    /// Routine calls that led here, outermost first.
    pub calls: Vec<Call>,
    pub cleanup: bool,
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub file: PathBuf,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub project: Project,
    pub defaults: Defaults,
    pub os: String,
    pub steps: Vec<PlannedStep>,
    pub cleanup: Vec<PlannedStep>,
    /// Evidence collection after a failure (shell steps only), run before cleanup.
    pub forensics: Vec<PlannedStep>,
    /// The variables after overrides (secrets are not among them: `secret()` is a function).
    pub vars: serde_json::Value,
    /// What happens with `checkpoint` steps' snapshots.
    pub checkpoints: CheckpointPolicy,
}

/// The scenario's checkpoint settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// A failed main step after a checkpoint rolls the VM back to the latest
    /// checkpoint not yet used and goes on after it (once per checkpoint).
    pub rewind_on_failure: bool,
    /// Snapshots kept while running: older checkpoints' snapshots are deleted.
    pub retain: usize,
    /// Leave the retained snapshots on the VM after the run (for `--from-checkpoint`).
    pub keep: bool,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy { rewind_on_failure: false, retain: RETAIN_CHECKPOINTS, keep: false }
    }
}

impl Plan {
    /// The main step `checkpoint: NAME`.
    pub fn checkpoint(&self, name: &str) -> Option<&PlannedStep> {
        self.steps.iter().find(|s| matches!(&s.step.action, Action::Checkpoint(n) if n == name))
    }

    /// The names of the main steps' checkpoints, in order.
    pub fn checkpoint_names(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter_map(|s| match &s.step.action {
                Action::Checkpoint(n) => Some(n.as_str()),
                _ => None,
            })
            .collect()
    }
}

impl Plan {
    pub fn all_steps(&self) -> impl Iterator<Item = &PlannedStep> {
        self.steps.iter().chain(self.cleanup.iter())
    }

    /// Every file the plan was built from: the scenario, the routines it
    /// calls and the reference images it compares against.
    pub fn input_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.file.clone()];
        for s in self.all_steps() {
            files.extend(s.calls.iter().map(|c| c.path.clone()));
            files.extend(crate::scenario::model::references(&s.step).into_iter().filter_map(|r| r.path.clone()));
        }
        files.sort();
        files.dedup();
        files
    }

    /// The expanded plan as text (for `smoke validate --plan`).
    pub fn describe(&self) -> String {
        let mut out = format!(
            "scenario {} on {} ({} steps, {} cleanup)\n",
            self.name,
            self.os,
            self.steps.len(),
            self.cleanup.len()
        );
        for s in self.all_steps() {
            let via = s.calls.iter().map(|c| c.routine.as_str()).collect::<Vec<_>>().join(" > ");
            let via = if via.is_empty() { String::new() } else { format!("  [{via}]") };
            let phase = if s.cleanup { "cleanup " } else { "" };
            out.push_str(&format!("{:>3}. {phase}{}{via}  ({})\n", s.number, s.label, s.step.span));
        }
        for s in &self.forensics {
            out.push_str(&format!("     forensics {}  ({})\n", s.label, s.step.span));
        }
        out
    }
}

/// Parse a YAML file into the source map.
pub fn read_yaml(path: &Path, sources: &mut SourceMap) -> Result<(Arc<str>, Node), Diagnostics> {
    let name = display_path(path);
    let bytes = std::fs::read(path).map_err(|e| {
        let mut d = Diagnostics::new();
        d.push(Diagnostic::new(&Span::command_line(&name), format!("cannot read {name}: {e}")));
        d
    })?;
    let file = sources.add(&name, &String::from_utf8_lossy(&bytes));
    let node = yaml::parse(&file, &bytes)?;
    Ok((file, node))
}

/// Build the plan for a scenario file.
pub fn load(path: &Path, opts: &PlanOptions, sources: &mut SourceMap) -> Result<Plan, Diagnostics> {
    let (_, root) = read_yaml(path, sources)?;
    let project = Project::of_file(path);
    let mut b = Builder::new(opts, project.clone(), scenario_stem(path));
    b.scenario_file = Some(path.to_path_buf());
    let mut owned = std::mem::take(sources);
    let plan = b.scenario(path, &root, &mut owned);
    *sources = owned;
    match plan {
        Some(p) if b.diags.is_empty() => Ok(p),
        _ => Err(b.diags.sorted()),
    }
}

/// Validate a routine file on its own: inputs get stand-in values of their types.
pub fn validate_routine(path: &Path, opts: &PlanOptions, sources: &mut SourceMap) -> Result<usize, Diagnostics> {
    let (_, root) = read_yaml(path, sources)?;
    let project = Project::of_file(path);
    let mut b = Builder::new(opts, project, String::new());
    let name = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let Some(r) = routine::decode(&name, path, &root, &mut b.diags) else { return Err(b.diags) };
    let mut ctx = b.base_context();
    for i in &r.inputs {
        let v = i.default.clone().unwrap_or_else(|| i.ty.sample(&i.name, &i.span));
        ctx.insert(&i.name, v.to_json());
    }
    let mut out = Vec::new();
    let stack = [path.to_path_buf()];
    b.expand(&r.steps, &Scope { ctx: &ctx, stack: &stack, calls: &[], cleanup: false }, &mut out, sources);
    if b.diags.is_empty() { Ok(out.len()) } else { Err(b.diags.sorted()) }
}

fn scenario_stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default()
}

/// Where an expansion stands: the variables, the routine files entered
/// (for cycle detection), the calls that led here, and the phase.
struct Scope<'a> {
    ctx: &'a Context,
    stack: &'a [PathBuf],
    calls: &'a [Call],
    cleanup: bool,
}

struct Builder<'o> {
    opts: &'o PlanOptions,
    project: Project,
    scenario_stem: String,
    /// The scenario being planned (for the commands suggested in errors).
    scenario_file: Option<PathBuf>,
    templates: Templates,
    diags: Diagnostics,
    defaults: Defaults,
    routines: HashMap<PathBuf, Option<Routine>>,
    counter: usize,
}

impl<'o> Builder<'o> {
    fn new(opts: &'o PlanOptions, project: Project, scenario_stem: String) -> Builder<'o> {
        Builder {
            opts,
            project,
            scenario_stem,
            scenario_file: None,
            templates: Templates::new(opts.secrets.clone()),
            diags: Diagnostics::new(),
            defaults: Defaults::default(),
            routines: HashMap::new(),
            counter: 0,
        }
    }

    fn base_context(&self) -> Context {
        let mut ctx = Context::new();
        ctx.insert("os", self.opts.target.to_json());
        ctx
    }

    fn scenario(&mut self, path: &Path, root: &Node, sources: &mut SourceMap) -> Option<Plan> {
        if matches!(root.value, Value::Null) {
            self.diags.push(
                Diagnostic::new(&root.span, "the file is empty")
                    .with_help("a scenario needs at least `steps:` with one step, e.g. `steps: [{key: enter}]`"),
            );
            return None;
        }
        let m = MapReader::new(root, "a scenario file", SCENARIO_KEYS, &mut self.diags)?;
        let name = m
            .get("name")
            .and_then(|n| decode::non_empty(n, "name", &mut self.diags))
            .unwrap_or_else(|| self.scenario_stem.clone());
        let description = m.get("description").and_then(|n| decode::string(n, "description", &mut self.diags));
        let tags = m
            .get("tags")
            .and_then(|n| decode::list(n, "tags", false, &mut self.diags))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| decode::non_empty(n, "tag", &mut self.diags))
            .collect();
        if let Some(n) = m.get("defaults") {
            self.defaults = Defaults::decode(n, &mut self.diags);
        }
        let ctx = self.variables(m.get("vars"), sources);
        let step_list = |key: &str, required: bool, diags: &mut Diagnostics| -> Vec<Node> {
            let Some(n) = (if required { m.required(key, diags) } else { m.get(key) }) else { return Vec::new() };
            match &n.value {
                Value::Seq(items) if !items.is_empty() || !required => items.clone(),
                Value::Seq(_) => {
                    diags.push(Diagnostic::new(&n.span, format!("{key} must list at least one step")));
                    Vec::new()
                }
                Value::Null if !required => Vec::new(),
                _ => {
                    diags.push(Diagnostic::new(&n.span, format!("{key} must be a list of steps, found {}", n.kind())));
                    Vec::new()
                }
            }
        };
        let steps_nodes = step_list("steps", true, &mut self.diags);
        let cleanup_nodes = step_list("cleanup", false, &mut self.diags);
        let stack = [path.to_path_buf()];
        let mut steps = Vec::new();
        self.expand(&steps_nodes, &Scope { ctx: &ctx, stack: &stack, calls: &[], cleanup: false }, &mut steps, sources);
        let mut cleanup = Vec::new();
        self.expand(
            &cleanup_nodes,
            &Scope { ctx: &ctx, stack: &stack, calls: &[], cleanup: true },
            &mut cleanup,
            sources,
        );
        let forensics = self.forensics(m.get("forensics"), &root.span, path, &ctx, sources);
        let checkpoints = self.checkpoint_policy(&m, &steps, &cleanup);
        let mut vars = ctx.to_json();
        if let Some(o) = vars.as_object_mut() {
            o.remove("os");
        }
        Some(Plan {
            name,
            file: path.to_path_buf(),
            description,
            tags,
            project: self.project.clone(),
            defaults: self.defaults.clone(),
            os: self.opts.target.name.clone(),
            steps,
            cleanup,
            forensics,
            vars,
            checkpoints,
        })
    }

    /// `rewind_on_failure`, `retain_checkpoints`, `keep_checkpoints`, and
    /// the checkpoint steps they go with: unique names, main steps only, a
    /// target that can take snapshots.
    fn checkpoint_policy(
        &mut self,
        m: &MapReader<'_>,
        steps: &[PlannedStep],
        cleanup: &[PlannedStep],
    ) -> CheckpointPolicy {
        let mut p = CheckpointPolicy::default();
        let d = &mut self.diags;
        if let Some(n) = m.get("rewind_on_failure") {
            p.rewind_on_failure = decode::boolean(n, "rewind_on_failure", d).unwrap_or(false);
        }
        if let Some(n) = m.get("retain_checkpoints") {
            p.retain = decode::integer(n, "retain_checkpoints", 1, 100, d).map_or(p.retain, |v| v as usize);
        }
        if let Some(n) = m.get("keep_checkpoints") {
            p.keep = decode::boolean(n, "keep_checkpoints", d).unwrap_or(false);
        }
        let mut seen: Vec<(&str, &Span)> = Vec::new();
        for ps in steps {
            if let Action::Checkpoint(name) = &ps.step.action {
                match seen.iter().find(|(n, _)| *n == name) {
                    Some((_, first)) => d.push(
                        Diagnostic::new(&ps.step.span, format!("checkpoint '{name}' is defined twice"))
                            .with_note(first, "first defined here")
                            .with_help("give each checkpoint its own name (it names a VM snapshot)"),
                    ),
                    None => seen.push((name, &ps.step.span)),
                }
            }
        }
        for ps in cleanup {
            if matches!(ps.step.action, Action::Checkpoint(_)) {
                d.push(
                    Diagnostic::new(&ps.step.span, "a checkpoint belongs to the main steps, not to cleanup")
                        .with_help("move it into `steps:`"),
                );
            }
        }
        let t = &self.opts.target;
        for key in ["rewind_on_failure", "keep_checkpoints"] {
            let on = if key == "keep_checkpoints" { p.keep } else { p.rewind_on_failure };
            if on
                && !t.capabilities.contains(&"snapshots")
                && let Some(e) = m.entry(key)
            {
                d.push(
                    Diagnostic::new(
                        &e.key_span,
                        format!(
                            "{key} rolls back VM snapshots, but target '{}' ({} backend) cannot take snapshots",
                            t.name, t.backend
                        ),
                    )
                    .with_help("run the scenario on a VM target (backend: qemu or proxmox), or remove the key"),
                );
            }
        }
        if p.rewind_on_failure
            && seen.is_empty()
            && let Some(e) = m.entry("rewind_on_failure")
        {
            d.push(
                Diagnostic::new(&e.key_span, "rewind_on_failure needs a `checkpoint: NAME` step to rewind to")
                    .with_help("add `- checkpoint: booted` after the steps that should not run again"),
            );
        }
        p
    }

    /// The forensics steps: the scenario's `forensics:` (a routine call, or
    /// `false`), else the `forensics` routine for the target when there is one
    /// and the target can run commands.
    fn forensics(
        &mut self,
        spec: Option<&Node>,
        root: &Span,
        path: &Path,
        ctx: &Context,
        sources: &mut SourceMap,
    ) -> Vec<PlannedStep> {
        let call = match spec {
            Some(n) if matches!(n.value, Value::Bool(false)) => return Vec::new(),
            Some(n) => {
                let Some(m) = MapReader::new(n, "forensics", FORENSICS_KEYS, &mut self.diags) else {
                    return Vec::new();
                };
                let mut entries = vec![Entry {
                    key: "routine".into(),
                    key_span: n.span.clone(),
                    value: Node::new(n.span.clone(), Value::Str(FORENSICS_ROUTINE.into())),
                }];
                for e in m.entries() {
                    match e.key.as_str() {
                        "routine" => entries[0] = e.clone(),
                        "with" => entries.push(e.clone()),
                        _ => {}
                    }
                }
                Node::new(n.span.clone(), Value::Map(entries))
            }
            None => {
                let t = &self.opts.target;
                let found = routine::candidates(&self.project.routines_dir(), FORENSICS_ROUTINE, &t.name, &t.family)
                    .iter()
                    .any(|p| p.is_file());
                if !found || !t.capabilities.contains(&"shell") {
                    return Vec::new();
                }
                let name = Node::new(root.clone(), Value::Str(FORENSICS_ROUTINE.into()));
                let entry = Entry { key: "routine".into(), key_span: root.clone(), value: name };
                Node::new(root.clone(), Value::Map(vec![entry]))
            }
        };
        let stack = [path.to_path_buf()];
        let mut out = Vec::new();
        self.expand(
            std::slice::from_ref(&call),
            &Scope { ctx, stack: &stack, calls: &[], cleanup: false },
            &mut out,
            sources,
        );
        for ps in &out {
            if !matches!(ps.step.action, Action::Shell(_)) {
                self.diags.push(
                    Diagnostic::new(
                        &ps.step.span,
                        format!("forensics steps run commands only, this one is a {} step", ps.step.action.kind()),
                    )
                    .with_help("collect evidence with `shell: {command: ..., save: NAME}`"),
                );
            }
        }
        out
    }

    /// Scenario `vars:` (rendered in order), then inventory vars, then `--var`.
    fn variables(&mut self, vars: Option<&Node>, sources: &SourceMap) -> Context {
        let mut ctx = self.base_context();
        let overrides: Vec<(String, Node)> =
            self.opts.target.vars.iter().chain(self.opts.overrides.iter()).cloned().collect();
        let overridden = |name: &str| overrides.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut declared = Vec::new();
        if let Some(n) = vars {
            match &n.value {
                Value::Map(entries) => {
                    for e in entries {
                        if e.key == "os" {
                            self.diags.push(Diagnostic::new(&e.key_span, "'os' is reserved: it describes the target"));
                            continue;
                        }
                        declared.push(e.key.clone());
                        let value = match overridden(&e.key) {
                            Some(v) => v,
                            None => self.templates.render(&e.value, &ctx, sources, &mut self.diags),
                        };
                        ctx.insert(&e.key, value.to_json());
                    }
                }
                Value::Null => {}
                _ => self.diags.push(Diagnostic::new(&n.span, format!("vars must be a map, found {}", n.kind()))),
            }
        }
        for (k, v) in &self.opts.target.vars {
            if !declared.contains(k) {
                ctx.insert(k, v.to_json());
            }
        }
        for (k, v) in &self.opts.overrides {
            let known = declared.contains(k) || self.opts.target.vars.iter().any(|(t, _)| t == k);
            if !known {
                let d = Diagnostic::new(&v.span, format!("--var {k}: the scenario has no variable '{k}'"));
                self.diags.push(match did_you_mean(k, declared.iter().map(String::as_str)) {
                    Some(s) => d.with_help(format!("did you mean '{s}'?")),
                    None if declared.is_empty() => d.with_help("the scenario declares no vars"),
                    None => d.with_help(format!("its vars: {}", declared.join(", "))),
                });
            }
            ctx.insert(k, v.to_json());
        }
        ctx
    }

    /// Expand steps (and routine calls) into `out`.
    fn expand(&mut self, nodes: &[Node], at: &Scope<'_>, out: &mut Vec<PlannedStep>, sources: &mut SourceMap) {
        for node in nodes {
            if node.get("routine").is_some() {
                self.call(node, at, out, sources);
                continue;
            }
            let before = self.diags.len();
            let rendered = self.templates.render(node, at.ctx, sources, &mut self.diags);
            if self.diags.len() > before {
                continue; // don't pile type errors on top of template errors
            }
            let Some(mut step) = model::decode_step(&rendered, &self.defaults, &mut self.diags) else { continue };
            self.check_capabilities(&step);
            self.resolve_references(&mut step);
            self.counter += 1;
            let label = step.label.clone().unwrap_or_else(|| model::default_label(&step));
            out.push(PlannedStep { number: self.counter, label, step, calls: at.calls.to_vec(), cleanup: at.cleanup });
        }
    }

    fn call(&mut self, node: &Node, at: &Scope<'_>, out: &mut Vec<PlannedStep>, sources: &mut SourceMap) {
        let (ctx, stack) = (at.ctx, at.stack);
        let Some(m) = MapReader::new(node, "a routine call", CALL_KEYS, &mut self.diags) else { return };
        for e in m.entries() {
            if model::MODIFIERS.iter().any(|(k, _)| *k == e.key) && !CALL_KEYS.contains(&e.key.as_str()) {
                // reported by MapReader as unknown; add the reason
                self.diags.push(
                    Diagnostic::new(&e.key_span, format!("'{}' is not supported on a routine call", e.key))
                        .with_help("put it on the steps inside the routine"),
                );
            }
        }
        let Some(name_node) = m.get("routine") else { return };
        let before = self.diags.len();
        let name_node = self.templates.render(name_node, ctx, sources, &mut self.diags);
        let Some(name) = decode::non_empty(&name_node, "routine", &mut self.diags) else { return };
        if self.diags.len() > before {
            return;
        }
        if !routine::valid_name(&name) {
            self.diags.push(Diagnostic::new(
                &name_node.span,
                format!("'{name}' is not a routine name (letters, digits, '_', '-', '/')"),
            ));
            return;
        }
        let label = m.get("label").and_then(|n| decode::non_empty(n, "label", &mut self.diags));
        let dir = self.project.routines_dir();
        let target = &self.opts.target;
        let candidates = routine::candidates(&dir, &name, &target.name, &target.family);
        let Some(path) = candidates.iter().find(|p| p.is_file()).cloned() else {
            let looked = candidates.iter().map(|p| display_path(p)).collect::<Vec<_>>().join(", ");
            let available = routine::available(&dir);
            let d = Diagnostic::new(&name_node.span, format!("routine '{name}' not found (looked for {looked})"));
            self.diags.push(match did_you_mean(&name, available.iter().map(String::as_str)) {
                Some(s) => d.with_help(format!("did you mean '{s}'?")),
                None => {
                    d.with_help(format!("create {}", candidates.last().map(|p| display_path(p)).unwrap_or_default()))
                }
            });
            return;
        };
        if let Some(pos) = stack.iter().position(|p| p == &path) {
            let chain: Vec<String> = stack[pos..]
                .iter()
                .chain(std::iter::once(&path))
                .map(|p| p.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default())
                .collect();
            self.diags.push(
                Diagnostic::new(&name_node.span, format!("routine cycle: {}", chain.join(" -> ")))
                    .with_help("a routine must not call itself, directly or through others"),
            );
            return;
        }
        if stack.len() > MAX_ROUTINE_DEPTH {
            self.diags.push(Diagnostic::new(
                &name_node.span,
                format!("routines nest deeper than {MAX_ROUTINE_DEPTH} levels"),
            ));
            return;
        }
        let Some(routine) = self.load_routine(&name, &path, sources) else { return };
        let Some(rctx) = self.bind_inputs(&routine, m.get("with"), &node.span, ctx, sources) else { return };
        let call =
            Call { routine: name.clone(), file: display_path(&path), path: path.clone(), at: node.span.clone(), label };
        let mut calls = at.calls.to_vec();
        calls.push(call);
        let mut stack = stack.to_vec();
        stack.push(path.clone());
        let before = self.diags.len();
        let inner = Scope { ctx: &rctx, stack: &stack, calls: &calls, cleanup: at.cleanup };
        self.expand(&routine.steps, &inner, out, sources);
        // errors inside the routine say which call led there
        let file = display_path(&path);
        for d in self.diags.items.iter_mut().skip(before) {
            if d.span.file.as_ref() == file || d.notes.iter().any(|(_, n)| n.starts_with("in routine")) {
                d.notes.push((node.span.clone(), format!("in routine '{name}' called from here")));
            }
        }
    }

    fn load_routine(&mut self, name: &str, path: &Path, sources: &mut SourceMap) -> Option<Routine> {
        if let Some(r) = self.routines.get(path) {
            return r.clone();
        }
        let loaded = match read_yaml(path, sources) {
            Ok((_, root)) => routine::decode(name, path, &root, &mut self.diags),
            Err(d) => {
                self.diags.extend(d);
                None
            }
        };
        self.routines.insert(path.to_path_buf(), loaded.clone());
        loaded
    }

    /// Check a call's `with:` against the routine's inputs and build the
    /// routine's template context.
    fn bind_inputs(
        &mut self,
        r: &Routine,
        with: Option<&Node>,
        call: &Span,
        ctx: &Context,
        sources: &SourceMap,
    ) -> Option<Context> {
        let mut rctx = self.base_context();
        let before = self.diags.len();
        let given = match with {
            None => Vec::new(),
            Some(n) => {
                let rendered = self.templates.render(n, ctx, sources, &mut self.diags);
                match rendered.value {
                    Value::Map(entries) => entries,
                    Value::Null => Vec::new(),
                    _ => {
                        self.diags.push(Diagnostic::new(
                            &n.span,
                            format!("with must be a map of input values, found {}", n.kind()),
                        ));
                        return None;
                    }
                }
            }
        };
        let names: Vec<&str> = r.inputs.iter().map(|i| i.name.as_str()).collect();
        for e in &given {
            if !names.contains(&e.key.as_str()) {
                let d = Diagnostic::new(&e.key_span, format!("routine '{}' has no input '{}'", r.name, e.key));
                self.diags.push(match did_you_mean(&e.key, names.iter().copied()) {
                    Some(s) => d.with_help(format!("did you mean '{s}'?")),
                    None if names.is_empty() => d.with_help("it takes no inputs"),
                    None => d.with_help(format!("its inputs: {}", names.join(", "))),
                });
            }
        }
        for input in &r.inputs {
            let value = match given.iter().find(|e| e.key == input.name) {
                Some(e) => match input.ty.accept(&e.value) {
                    Some(v) => v,
                    None => {
                        self.diags.push(
                            Diagnostic::new(
                                &e.value.span,
                                format!(
                                    "input '{}' of routine '{}' must be {}, found {}",
                                    input.name,
                                    r.name,
                                    input.ty.name(),
                                    e.value.kind()
                                ),
                            )
                            .with_note(&input.span, "the input is declared here"),
                        );
                        continue;
                    }
                },
                None if input.required => {
                    self.diags.push(
                        Diagnostic::new(call, format!("routine '{}' needs input '{}'", r.name, input.name))
                            .with_help(format!("add it under `with:`: {}: ...", input.name))
                            .with_note(&input.span, "the input is declared here"),
                    );
                    continue;
                }
                None => match &input.default {
                    Some(d) => {
                        let d = self.templates.render(d, &rctx, sources, &mut self.diags);
                        input.ty.accept(&d).unwrap_or(d)
                    }
                    None => Node::new(input.span.clone(), Value::Null),
                },
            };
            rctx.insert(&input.name, value.to_json());
        }
        (self.diags.len() == before).then_some(rctx)
    }

    fn check_capabilities(&mut self, step: &Step) {
        if !self.opts.vlm && model::uses_vlm(step) {
            self.diags.push(
                Diagnostic::new(&step.span, "this step asks a vision-language model, but the inventory has no `vlm:` section")
                    .with_help("add `vlm: {endpoints: [http://HOST:PORT/v1], judge: {model: NAME}}` to the inventory (see docs/VLM.md), or use an ocr, needle or ssim check"),
            );
        }
        if let Action::IfVisible(g) = &step.action {
            for s in &g.then {
                self.check_capabilities(s);
                if matches!(s.action, Action::Checkpoint(_)) {
                    self.diags.push(
                        Diagnostic::new(&s.span, "a checkpoint cannot be inside an if_visible guard")
                            .with_help("put it in the main steps, before or after the guard"),
                    );
                }
            }
        }
        if let Some(cap) = step.action.vm_capability() {
            let t = &self.opts.target;
            if !t.capabilities.contains(&cap) {
                let what =
                    if cap == "serial" { "reads and writes the VM's serial console" } else { "takes a VM snapshot" };
                let ability = if cap == "serial" { "open a serial console" } else { "take snapshots" };
                self.diags.push(
                    Diagnostic::new(
                        &step.span,
                        format!(
                            "this {} step {what}, but target '{}' ({} backend) cannot {ability}",
                            step.action.kind(),
                            t.name,
                            t.backend
                        ),
                    )
                    .with_help(
                        "run the scenario on a VM target whose backend can (see `smoke targets`), or drop the step",
                    ),
                );
            }
        }
        let needs = match &step.action {
            Action::Shell(_) => Some("shell"),
            Action::Launch(_) => Some("launch"),
            _ => None,
        };
        if let Some(cap) = needs {
            let t = &self.opts.target;
            if !t.capabilities.contains(&cap) {
                self.diags.push(
                    Diagnostic::new(&step.span, format!("this {cap} step needs a way to run commands on the target, but target '{}' ({} backend) has none", t.name, t.backend))
                        .with_help("give the target `ssh:` in the inventory, run it on a local-desktop target, or drop the step"),
                );
            }
        }
    }

    fn resolve_references(&mut self, step: &mut Step) {
        if let Action::IfVisible(g) = &mut step.action {
            for s in g.then.iter_mut() {
                self.resolve_references(s);
            }
        }
        let mut refs: Vec<&mut Reference> = Vec::new();
        // needles with the click point they must have (if named)
        let mut needles: Vec<(&mut Reference, Option<Option<String>>)> = Vec::new();
        fn collect<'a>(
            e: &'a mut model::Expect,
            refs: &mut Vec<&'a mut Reference>,
            needles: &mut Vec<(&'a mut Reference, Option<Option<String>>)>,
        ) {
            match &mut e.check {
                model::Check::Ssim(s) => refs.push(&mut s.reference),
                model::Check::Needle(n) => needles.push((&mut n.needle, None)),
                model::Check::Vlm(v) => v.decide_first.iter_mut().for_each(|d| collect(d, refs, needles)),
                model::Check::Ocr(_) => {}
            }
        }
        for e in step.expect.iter_mut() {
            collect(e, &mut refs, &mut needles);
        }
        match &mut step.action {
            Action::Click(c) => match &mut c.target {
                Target::Image { reference, .. } => refs.push(reference),
                Target::Needle { needle, point, .. } => needles.push((needle, Some(point.clone()))),
                _ => {}
            },
            Action::Move(Target::Image { reference, .. }) | Action::MoveAlong(Target::Image { reference, .. }, ..) => {
                refs.push(reference)
            }
            Action::Move(Target::Needle { needle, point, .. })
            | Action::MoveAlong(Target::Needle { needle, point, .. }, ..) => {
                needles.push((needle, Some(point.clone())))
            }
            Action::Scroll(model::ScrollAction { at: Some(t), .. }) => match t {
                Target::Image { reference, .. } => refs.push(reference),
                Target::Needle { needle, point, .. } => needles.push((needle, Some(point.clone()))),
                _ => {}
            },
            Action::Drag(d) => {
                for t in [&mut d.from, &mut d.to] {
                    match t {
                        Target::Image { reference, .. } => refs.push(reference),
                        Target::Needle { needle, point, .. } => needles.push((needle, Some(point.clone()))),
                        _ => {}
                    }
                }
            }
            Action::Launch(l) => {
                if let Some(e) = &mut l.until {
                    collect(e, &mut refs, &mut needles);
                }
            }
            _ => {}
        }
        for r in refs {
            let candidates = self.reference_candidates(&r.name);
            match candidates.iter().find(|p| p.is_file()) {
                Some(p) if self.opts.update_references != UpdateReferences::All => r.path = Some(p.clone()),
                found => {
                    let create_at = found.cloned().unwrap_or_else(|| candidates[0].clone());
                    if self.opts.update_references == UpdateReferences::None {
                        let looked = candidates.iter().map(|p| display_path(p)).collect::<Vec<_>>().join(", ");
                        self.diags.push(
                            Diagnostic::new(
                                &r.span,
                                format!("reference image '{}' not found (looked for {looked})", r.name),
                            )
                            .with_help(format!(
                                "create it from a run: {} (it is written to {})",
                                self.update_command(),
                                display_path(&create_at)
                            )),
                        );
                    }
                    r.path = Some(create_at);
                }
            }
        }
        for (n, point) in needles {
            let candidates = self.needle_candidates(&n.name);
            let Some(found) = candidates.iter().find(|p| p.is_file()) else {
                let looked = candidates.iter().map(|p| display_path(p)).collect::<Vec<_>>().join(", ");
                self.diags.push(
                    Diagnostic::new(&n.span, format!("needle '{}' not found (looked for {looked})", n.name)).with_help(
                        "a needle is NAME.png + NAME.json (its areas) under needles/; \
                         `smoke needle import` converts openQA needles",
                    ),
                );
                continue;
            };
            match crate::vision::needle::NeedleImage::load(found) {
                Err(e) => self.diags.push(Diagnostic::new(&n.span, format!("needle '{}': {e}", n.name))),
                Ok(needle) => {
                    if let Some(point) = point
                        && needle.point(point.as_deref()).is_none()
                    {
                        let ids: Vec<String> =
                            needle.point_ids().iter().map(|i| i.unwrap_or("(unnamed)").to_string()).collect();
                        let msg = match &point {
                            Some(p) => format!("needle '{}' has no click point '{p}'", n.name),
                            None => format!("needle '{}' has several click points: name one", n.name),
                        };
                        self.diags
                            .push(Diagnostic::new(&n.span, msg).with_help(format!("its points: {}", ids.join(", "))));
                    }
                }
            }
            n.path = Some(found.clone());
        }
    }

    /// The command that creates missing references for this scenario and target.
    fn update_command(&self) -> String {
        let file = self.scenario_file.as_deref().map(display_path).unwrap_or_else(|| "SCENARIO".into());
        format!("smoke run {file} --os {} --update-references missing", self.opts.target.name)
    }

    /// `needles/<scenario>/<os>/NAME.json`, `.../<family>/`, `needles/<scenario>/`,
    /// `needles/<os>/`, `needles/<family>/`, `needles/NAME.json`.
    fn needle_candidates(&self, name: &str) -> Vec<PathBuf> {
        let base = name.strip_suffix(".json").or_else(|| name.strip_suffix(".png")).unwrap_or(name);
        let file = format!("{base}.json");
        let dir = self.project.needles_dir();
        let t = &self.opts.target;
        let scen = dir.join(&self.scenario_stem);
        let mut out = vec![scen.join(&t.name).join(&file)];
        if t.family != t.name {
            out.push(scen.join(&t.family).join(&file));
        }
        out.push(scen.join(&file));
        out.push(dir.join(&t.name).join(&file));
        if t.family != t.name {
            out.push(dir.join(&t.family).join(&file));
        }
        out.push(dir.join(&file));
        out
    }

    /// `reference/<scenario>/<os>/NAME`, `.../<family>/NAME`, `reference/<scenario>/NAME`, `reference/NAME`.
    fn reference_candidates(&self, name: &str) -> Vec<PathBuf> {
        let file = if Path::new(name).extension().is_some() { name.to_string() } else { format!("{name}.png") };
        let dir = self.project.reference_dir();
        let t = &self.opts.target;
        let scen = dir.join(&self.scenario_stem);
        let mut out = vec![scen.join(&t.name).join(&file)];
        if t.family != t.name {
            out.push(scen.join(&t.family).join(&file));
        }
        out.push(scen.join(&file));
        out.push(dir.join(&file));
        out
    }
}
