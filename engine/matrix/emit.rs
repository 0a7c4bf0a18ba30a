//! The matrix as CI configuration, so each cell becomes a CI job:
//! `smoke matrix --emit github` prints JSON for a GitHub Actions
//! `strategy.matrix` (`fromJSON`), `--emit gitlab` a `parallel:matrix` block.
//! `smoke report merge` puts the jobs' results back together.

use crate::matrix::Cell;
use crate::project::display_path;

/// One CI job.
#[derive(Debug, serde::Serialize)]
struct Job {
    name: String,
    scenario: String,
    os: String,
}

fn jobs(cells: &[Cell]) -> Vec<Job> {
    cells
        .iter()
        .map(|c| Job {
            name: format!("{}@{}", c.name, c.target.name),
            scenario: display_path(&c.file),
            os: c.target.name.clone(),
        })
        .collect()
}

/// `{"include": [{"name", "scenario", "os"}, ...]}` for `strategy.matrix: ${{ fromJSON(...) }}`.
pub fn github(cells: &[Cell]) -> String {
    serde_json::json!({ "include": jobs(cells) }).to_string()
}

/// A `parallel:matrix` block with SCENARIO and OS per job.
pub fn gitlab(cells: &[Cell]) -> String {
    let mut out = String::from("parallel:\n  matrix:\n");
    for j in jobs(cells) {
        out.push_str(&format!("    - SCENARIO: {}\n      OS: {}\n", yaml_str(&j.scenario), yaml_str(&j.os)));
    }
    out
}

fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}
