//! Run history and flakiness: every run appends one line to
//! `<results root>/history.jsonl`; `smoke history` classifies each
//! (scenario, OS) from its recent runs and shows how check scores drift.
//!
//! Classes (over the last [`WINDOW`] finished runs, newest last):
//! - `flaky`: passed and failed with the same inputs (scenario, routines,
//!   references, vars: see [`Fingerprint`]);
//! - otherwise by the last two runs: `passing` (pass after pass, or a first
//!   pass), `recovering` (pass after a failure), `new-failure` (failure after
//!   a pass, or a first failure), `persistent-failure` (failure after failure).
//!
//! Interrupted runs are not counted. Infrastructure errors count as failures
//! of the (scenario, OS) pair: a target that cannot start needs attention too.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::events::Verdict;

/// How many recent runs a classification looks at.
pub const WINDOW: usize = 20;

/// One line of history.jsonl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub time: String,
    pub scenario: String,
    pub os: String,
    pub verdict: Verdict,
    pub duration_ms: u64,
    /// The run folder, relative to the results root.
    pub run: String,
    /// Fingerprint of the run's inputs.
    pub inputs: String,
    #[serde(default)]
    pub checks: Vec<CheckScore>,
}

/// A scored check of a run, for drift over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckScore {
    pub step: usize,
    pub label: String,
    pub kind: String,
    pub score: f64,
    #[serde(default)]
    pub threshold: Option<f64>,
    pub passed: bool,
}

/// Append one entry (the file and its folder are created when missing).
pub fn append(root: &Path, entry: &Entry) -> std::io::Result<()> {
    std::fs::create_dir_all(root)?;
    let line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(root.join("history.jsonl"))?;
    // one write per line: concurrent runs append whole lines
    f.write_all(format!("{line}\n").as_bytes())
}

/// Read every entry; lines that do not parse are skipped.
pub fn read(root: &Path) -> Vec<Entry> {
    let Ok(text) = std::fs::read_to_string(root.join("history.jsonl")) else { return Vec::new() };
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The class of a (scenario, OS) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    Passing,
    NewFailure,
    PersistentFailure,
    Flaky,
    Recovering,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Passing => "passing",
            Class::NewFailure => "new-failure",
            Class::PersistentFailure => "persistent-failure",
            Class::Flaky => "flaky",
            Class::Recovering => "recovering",
        }
    }

    /// Worth a notification.
    pub fn is_alarming(self) -> bool {
        matches!(self, Class::NewFailure | Class::PersistentFailure)
    }
}

/// The classification of one (scenario, OS) pair.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub scenario: String,
    pub os: String,
    pub class: Class,
    /// Runs in the window.
    pub runs: usize,
    pub passed: usize,
    pub pass_rate: f64,
    /// Consecutive runs, newest first, with the last verdict.
    pub streak: usize,
    pub last: Verdict,
    pub last_run: String,
    /// Verdicts in the window, oldest first (for trend displays).
    pub trend: Vec<Verdict>,
}

fn passed(v: Verdict) -> bool {
    v == Verdict::Passed
}

/// Classify the runs of one pair (oldest first). `None` when no run counts.
pub fn classify(runs: &[&Entry]) -> Option<Status> {
    let finished: Vec<&&Entry> =
        runs.iter().filter(|e| e.verdict != Verdict::Interrupted && e.verdict != Verdict::Invalid).collect();
    let window = &finished[finished.len().saturating_sub(WINDOW)..];
    let last = window.last()?;
    let prev = window.len().checked_sub(2).map(|i| window[i]);
    let mut by_inputs: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for e in window {
        let slot = by_inputs.entry(e.inputs.as_str()).or_default();
        if passed(e.verdict) {
            slot.0 = true;
        } else {
            slot.1 = true;
        }
    }
    let flaky = by_inputs.values().any(|(p, f)| *p && *f);
    let class = match (flaky, passed(last.verdict), prev.map(|p| passed(p.verdict))) {
        (true, _, _) => Class::Flaky,
        (false, true, Some(false)) => Class::Recovering,
        (false, true, _) => Class::Passing,
        (false, false, Some(false)) => Class::PersistentFailure,
        (false, false, _) => Class::NewFailure,
    };
    let passes = window.iter().filter(|e| passed(e.verdict)).count();
    let streak = window.iter().rev().take_while(|e| passed(e.verdict) == passed(last.verdict)).count();
    Some(Status {
        scenario: last.scenario.clone(),
        os: last.os.clone(),
        class,
        runs: window.len(),
        passed: passes,
        pass_rate: passes as f64 / window.len() as f64,
        streak,
        last: last.verdict,
        last_run: last.run.clone(),
        trend: window.iter().map(|e| e.verdict).collect(),
    })
}

/// Classify every (scenario, OS) pair in the history.
pub fn statuses(entries: &[Entry]) -> Vec<Status> {
    let mut pairs: BTreeMap<(&str, &str), Vec<&Entry>> = BTreeMap::new();
    for e in entries {
        pairs.entry((e.scenario.as_str(), e.os.as_str())).or_default().push(e);
    }
    pairs.values().filter_map(|runs| classify(runs)).collect()
}

/// Scores of one check over time.
#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    pub scenario: String,
    pub os: String,
    pub step: usize,
    pub label: String,
    pub kind: String,
    pub threshold: Option<f64>,
    /// (time, score), oldest first.
    pub scores: Vec<(String, f64)>,
}

impl Drift {
    /// Newest score minus the first one.
    pub fn change(&self) -> f64 {
        match (self.scores.first(), self.scores.last()) {
            (Some(a), Some(b)) => b.1 - a.1,
            _ => 0.0,
        }
    }

    pub fn min(&self) -> f64 {
        self.scores.iter().map(|s| s.1).fold(f64::INFINITY, f64::min)
    }
}

/// Every scored check over time, per (scenario, OS, step, label).
pub fn drift(entries: &[Entry]) -> Vec<Drift> {
    let mut map: BTreeMap<(String, String, usize, String), Drift> = BTreeMap::new();
    for e in entries {
        for c in &e.checks {
            let key = (e.scenario.clone(), e.os.clone(), c.step, c.label.clone());
            let d = map.entry(key).or_insert_with(|| Drift {
                scenario: e.scenario.clone(),
                os: e.os.clone(),
                step: c.step,
                label: c.label.clone(),
                kind: c.kind.clone(),
                threshold: c.threshold,
                scores: Vec::new(),
            });
            d.scores.push((e.time.clone(), c.score));
        }
    }
    map.into_values().collect()
}

/// A stable 64-bit FNV-1a fingerprint of byte strings, as hex. Not for
/// security: it tells "same inputs" apart from "changed inputs".
#[derive(Debug, Clone)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    pub fn add(&mut self, bytes: &[u8]) {
        for b in bytes.iter().chain(&(bytes.len() as u64).to_le_bytes()) {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(v: Verdict, inputs: &str) -> Entry {
        Entry {
            time: String::new(),
            scenario: "s".into(),
            os: "o".into(),
            verdict: v,
            duration_ms: 1,
            run: "r".into(),
            inputs: inputs.into(),
            checks: Vec::new(),
        }
    }

    fn class(seq: &[(Verdict, &str)]) -> Class {
        let runs: Vec<Entry> = seq.iter().map(|(v, i)| run(*v, i)).collect();
        classify(&runs.iter().collect::<Vec<_>>()).unwrap().class
    }

    use Verdict::*;

    #[test]
    fn classes_from_crafted_histories() {
        assert_eq!(class(&[(Passed, "a")]), Class::Passing);
        assert_eq!(class(&[(Failed, "a")]), Class::NewFailure);
        assert_eq!(class(&[(Passed, "a"), (Passed, "a")]), Class::Passing);
        assert_eq!(class(&[(Passed, "a"), (Failed, "b")]), Class::NewFailure);
        assert_eq!(class(&[(Passed, "a"), (Failed, "b"), (Failed, "b")]), Class::PersistentFailure);
        assert_eq!(class(&[(Failed, "a"), (Passed, "b")]), Class::Recovering);
        // the same inputs both passed and failed
        assert_eq!(class(&[(Passed, "a"), (Failed, "a"), (Passed, "a")]), Class::Flaky);
        // errors count as failures, interruptions do not count
        assert_eq!(class(&[(Passed, "a"), (Error, "b")]), Class::NewFailure);
        assert_eq!(class(&[(Passed, "a"), (Interrupted, "a"), (Passed, "a")]), Class::Passing);
        // flakiness older than the window is forgotten
        let mut seq = vec![(Passed, "x"), (Failed, "x")];
        seq.extend(std::iter::repeat_n((Passed, "y"), WINDOW));
        assert_eq!(class(&seq), Class::Passing);
    }

    #[test]
    fn rates_streaks_and_trend() {
        let runs: Vec<Entry> =
            [(Passed, "a"), (Failed, "b"), (Failed, "b"), (Failed, "b")].iter().map(|(v, i)| run(*v, i)).collect();
        let s = classify(&runs.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!((s.runs, s.passed, s.streak), (4, 1, 3));
        assert!((s.pass_rate - 0.25).abs() < 1e-9);
        assert_eq!(s.trend, vec![Passed, Failed, Failed, Failed]);
    }

    #[test]
    fn append_read_and_drift() {
        let d = tempfile::tempdir().unwrap();
        let mut e = run(Passed, "a");
        e.checks = vec![CheckScore {
            step: 3,
            label: "display".into(),
            kind: "ssim".into(),
            score: 0.99,
            threshold: Some(0.98),
            passed: true,
        }];
        append(d.path(), &e).unwrap();
        e.checks[0].score = 0.985;
        e.time = "later".into();
        append(d.path(), &e).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.path().join("history.jsonl"))
            .unwrap()
            .write_all(b"garbage\n")
            .unwrap();
        let all = read(d.path());
        assert_eq!(all.len(), 2);
        let dr = drift(&all);
        assert_eq!(dr.len(), 1);
        assert!((dr[0].change() + 0.005).abs() < 1e-9);
        assert_eq!(statuses(&all)[0].class, Class::Passing);
    }

    #[test]
    fn fingerprints_tell_inputs_apart() {
        let mut a = Fingerprint::default();
        a.add(b"ab");
        a.add(b"c");
        let mut b = Fingerprint::default();
        b.add(b"a");
        b.add(b"bc");
        assert_ne!(a.hex(), b.hex(), "boundaries count");
    }
}
