//! Support for end-to-end tests of the `smoke` binary: run it in a project
//! folder, read back its results.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

pub mod browser;
pub mod openai;

use smoke::events::{Event, Record};

/// Runs that start desktops and OCR share 2 cores: one at a time per test binary,
/// so polling budgets measure the app, not the other tests.
pub static DESKTOP: Mutex<()> = Mutex::new(());

pub fn lock() -> std::sync::MutexGuard<'static, ()> {
    DESKTOP.lock().unwrap_or_else(|p| p.into_inner())
}

/// The repository root (where scenarios/, routines/ and reference/ live).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn smoke() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_smoke"));
    c.env_remove("SMOKE_INVENTORY").env("SMOKE_LOG", "warn");
    c
}

/// `smoke run` of a scenario with results under `results`; returns the output and the run folder.
pub fn run(cwd: &Path, scenario: &str, results: &Path, extra: &[&str]) -> (Output, Option<PathBuf>) {
    let out = smoke()
        .current_dir(cwd)
        .args(["run", scenario, "--results"])
        .arg(results)
        .args(extra)
        .output()
        .expect("run smoke");
    (out, run_dir(results))
}

/// The single run folder under `results` (ignoring the `latest` link).
pub fn run_dir(results: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(results)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.is_symlink())
        .collect();
    dirs.sort();
    dirs.pop()
}

pub fn events(run: &Path) -> Vec<Record> {
    let (records, bad) = smoke::events::read_jsonl(&run.join("events.jsonl")).expect("events.jsonl");
    assert_eq!(bad, 0, "every line of events.jsonl parses");
    records
}

/// The run's `summary.json`.
pub fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run.join("summary.json")).expect("summary.json"))
        .expect("summary.json parses")
}

pub fn text(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Step statuses by step number, from step_finished events.
pub fn statuses(records: &[Record]) -> Vec<(usize, String)> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepFinished { step, status, .. } => Some((*step, format!("{status:?}").to_lowercase())),
            _ => None,
        })
        .collect()
}

/// Decode a GIF fully; returns (width, height, images).
pub fn gif_frames(path: &Path) -> (u32, u32, usize) {
    let f = std::fs::File::open(path).expect("open gif");
    let mut p = smoke::recorder::GifPlayback::open(std::io::BufReader::new(f)).expect("a GIF");
    let (w, h) = (p.width(), p.height());
    let mut n = 0;
    while p.next_frame().expect("decodes").is_some() {
        n += 1;
    }
    assert!(!p.truncated(), "the GIF has its trailer");
    (w, h, n)
}

/// Copy the repository's scenarios, routines and references into a fresh project.
pub fn project_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["scenarios", "routines", "reference"] {
        copy_dir(&repo().join(sub), &dir.path().join(sub));
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Every regular file under `dir`, recursively.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_symlink() {
            continue;
        }
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}
