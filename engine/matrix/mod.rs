//! The matrix: every selected scenario on every selected OS target.
//!
//! Selection: scenario files (default: every `*.yaml` directly in the
//! project's `scenarios/`), targets from the inventory filtered by name,
//! family and scenario tags. A scenario may be forked per OS:
//! `scenarios/<os>/NAME.yaml`, then `scenarios/<family>/NAME.yaml`, are
//! preferred over `scenarios/NAME.yaml`. [`exec`] runs the cells in
//! parallel; [`emit`] prints them as a CI matrix instead.

pub mod emit;
pub mod exec;
pub mod merge;

use std::path::{Path, PathBuf};

use crate::inventory::{Inventory, Target};
use crate::scenario::source::SourceMap;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Scenario files or folders; empty: the project's `scenarios/`.
    pub scenarios: Vec<PathBuf>,
    /// Target names (empty: all).
    pub os: Vec<String>,
    pub families: Vec<String>,
    /// Keep scenarios that have any of these tags (empty: all).
    pub tags: Vec<String>,
}

/// One (scenario, target) pair.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The scenario as selected (its name in the matrix).
    pub name: String,
    /// The file run on this target (an OS fork when there is one).
    pub file: PathBuf,
    pub target: Target,
}

/// Why a matrix could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("{0}")]
    Inventory(String),
    #[error("no scenarios found in {0}")]
    NoScenarios(String),
    #[error("no target matches the filters (the inventory has: {0})")]
    NoTargets(String),
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Expand a selection into cells, in a stable order (scenario, then target).
pub fn select(sel: &Selection, inv: &Inventory, project_root: &Path) -> Result<Vec<Cell>, SelectError> {
    let mut files = Vec::new();
    let inputs = if sel.scenarios.is_empty() { vec![project_root.join("scenarios")] } else { sel.scenarios.clone() };
    for input in &inputs {
        if input.is_dir() {
            let rd = std::fs::read_dir(input)
                .map_err(|source| SelectError::Io { path: input.display().to_string(), source })?;
            let mut v: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            v.sort();
            files.extend(v);
        } else {
            files.push(input.clone());
        }
    }
    if files.is_empty() {
        return Err(SelectError::NoScenarios(
            inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        ));
    }
    let targets: Vec<&Target> = inv
        .targets
        .iter()
        .filter(|t| sel.os.is_empty() || sel.os.contains(&t.name))
        .filter(|t| sel.families.is_empty() || sel.families.contains(&t.family))
        .collect();
    for os in &sel.os {
        if !inv.targets.iter().any(|t| &t.name == os) {
            return Err(SelectError::Inventory(inv.target(Some(os)).err().unwrap_or_default()));
        }
    }
    if targets.is_empty() {
        return Err(SelectError::NoTargets(inv.targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")));
    }
    let mut cells = Vec::new();
    for file in &files {
        if !sel.tags.is_empty() {
            let tags = scenario_tags(file);
            if !tags.iter().any(|t| sel.tags.contains(t)) {
                continue;
            }
        }
        let name = file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        for t in &targets {
            cells.push(Cell { name: name.clone(), file: fork(file, &t.name, &t.family), target: (*t).clone() });
        }
    }
    Ok(cells)
}

/// The OS fork of a scenario file, if there is one.
pub fn fork(file: &Path, os: &str, family: &str) -> PathBuf {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else { return file.to_path_buf() };
    [os, family].iter().map(|sub| dir.join(sub).join(name)).find(|p| p.is_file()).unwrap_or_else(|| file.to_path_buf())
}

/// A scenario's `tags:` (empty when the file cannot be read; validation reports that later).
pub fn scenario_tags(file: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(file) else { return Vec::new() };
    let name: std::sync::Arc<str> = std::sync::Arc::from(file.display().to_string());
    let Ok(root) = crate::scenario::yaml::parse(&name, &bytes) else { return Vec::new() };
    root.get("tags")
        .and_then(|e| e.value.as_seq().map(|s| s.iter().filter_map(|n| n.as_str().map(str::to_string)).collect()))
        .unwrap_or_default()
}

/// Load the inventory for a matrix (diagnostics rendered as text).
pub fn inventory(explicit: Option<&Path>, project_root: &Path) -> Result<Inventory, SelectError> {
    let mut sources = SourceMap::new();
    Inventory::locate(explicit, Some(project_root), &mut sources)
        .map_err(|d| SelectError::Inventory(d.render(&sources)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> Inventory {
        let text = b"default: a\ntargets:\n  a: {backend: local-desktop, family: linux}\n  b: {backend: local-desktop, family: linux}\n  w: {backend: vnc, family: windows, vnc: {host: 127.0.0.2}}\n";
        Inventory::parse("inv.yaml", text, &mut SourceMap::new()).unwrap()
    }

    #[test]
    fn selects_scenarios_times_targets_with_forks_and_filters() {
        let d = tempfile::tempdir().unwrap();
        let sc = d.path().join("scenarios");
        std::fs::create_dir_all(sc.join("b")).unwrap();
        std::fs::create_dir_all(sc.join("windows")).unwrap();
        std::fs::write(sc.join("one.yaml"), "tags: [smoke]\nsteps: [{key: a}]\n").unwrap();
        std::fs::write(sc.join("two.yaml"), "steps: [{key: a}]\n").unwrap();
        std::fs::write(sc.join("b/one.yaml"), "steps: [{key: b}]\n").unwrap();
        std::fs::write(sc.join("windows/two.yaml"), "steps: [{key: w}]\n").unwrap();
        let all = select(&Selection::default(), &inv(), d.path()).unwrap();
        let shown: Vec<String> = all
            .iter()
            .map(|c| format!("{}@{}={}", c.name, c.target.name, c.file.strip_prefix(&sc).unwrap().display()))
            .collect();
        assert_eq!(
            shown,
            [
                "one@a=one.yaml",
                "one@b=b/one.yaml",
                "one@w=one.yaml",
                "two@a=two.yaml",
                "two@b=two.yaml",
                "two@w=windows/two.yaml"
            ]
        );
        let sel = Selection { families: vec!["linux".into()], tags: vec!["smoke".into()], ..Default::default() };
        let some = select(&sel, &inv(), d.path()).unwrap();
        assert_eq!(some.iter().map(|c| c.target.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let sel = Selection { os: vec!["x".into()], ..Default::default() };
        assert!(select(&sel, &inv(), d.path()).unwrap_err().to_string().contains("unknown target 'x'"));
    }
}
