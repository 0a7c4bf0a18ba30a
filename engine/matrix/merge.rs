//! `smoke report merge`: put the results of runs made elsewhere (one CI job
//! per matrix cell) together as one matrix folder.

use std::path::{Path, PathBuf};

use crate::events::Verdict;
use crate::matrix::exec::{MatrixSummary, RunOutcome, overall, write_outputs};

/// Every run folder (a folder with events.jsonl) below `dir`, including `dir` itself.
pub fn find_runs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if dir.join("events.jsonl").is_file() {
        out.push(dir.to_path_buf());
        return out;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut subs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| p.is_dir() && !p.is_symlink()).collect();
        subs.sort();
        for s in subs {
            out.extend(find_runs(&s));
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)?.flatten() {
        let p = e.path();
        if p.is_symlink() {
            continue;
        }
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()))?;
        } else {
            std::fs::copy(&p, to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Copy every run found under `inputs` into `out` and write the matrix files there.
pub fn merge(inputs: &[PathBuf], out: &Path) -> std::io::Result<MatrixSummary> {
    std::fs::create_dir_all(out)?;
    let mut runs = Vec::new();
    let mut started: Option<String> = None;
    let mut total_ms = 0;
    for input in inputs {
        for run in find_runs(input) {
            let base = run.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "run".into());
            let mut dest = out.join(&base);
            let mut n = 2;
            while dest.exists() {
                dest = out.join(format!("{base}-{n}"));
                n += 1;
            }
            copy_dir(&run, &dest)?;
            let (records, _) = crate::events::read_jsonl(&dest.join("events.jsonl"))?;
            let s = crate::results::summary::from_events(&records);
            if !dest.join("report.html").is_file() {
                let _ = crate::report::run::write(&dest);
            }
            if started.as_ref().is_none_or(|t| s.started < *t) {
                started = Some(s.started.clone());
            }
            total_ms += s.duration_ms;
            runs.push(RunOutcome {
                scenario: s.scenario.clone(),
                os: s.os.clone(),
                file: s.file.clone(),
                verdict: s.verdict,
                exit_code: s.exit_code,
                timed_out: false,
                duration_ms: s.duration_ms,
                run: dest.file_name().map(|n| n.to_string_lossy().to_string()),
                reason: s.reason.clone(),
            });
        }
    }
    runs.sort_by(|a, b| (&a.scenario, &a.os).cmp(&(&b.scenario, &b.os)));
    let verdict = if runs.is_empty() { Verdict::Invalid } else { overall(&runs, false) };
    let summary = MatrixSummary {
        schema: crate::matrix::exec::SCHEMA.into(),
        started: started.unwrap_or_default(),
        duration_ms: total_ms,
        verdict,
        exit_code: verdict.exit_code(),
        jobs: 0,
        runs,
    };
    write_outputs(out, &summary, out)?;
    Ok(summary)
}
