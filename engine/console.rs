//! The console reporter: a line per step as the run goes, with a spinner on
//! the step in progress when stderr is a terminal. It reads the same event
//! stream as every other consumer (already redacted).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::events::{Event, EventSink, Record, StepStatus, Verdict};

/// How much the console shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

pub struct Console {
    verbosity: Verbosity,
    bar: ProgressBar,
    total: usize,
}

impl Console {
    pub fn new(verbosity: Verbosity) -> Console {
        let bar = if std::io::stderr().is_terminal() && verbosity > Verbosity::Quiet {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        } else {
            ProgressBar::hidden()
        };
        Console { verbosity, bar, total: 0 }
    }

    fn line(&self, s: String) {
        if self.bar.is_hidden() {
            eprintln!("{s}");
        } else {
            self.bar.println(s);
        }
    }
}

impl EventSink for Console {
    fn event(&mut self, r: &Record) {
        let v = self.verbosity;
        match &r.event {
            Event::RunStarted { scenario, os, backend, results, steps, .. } => {
                self.total = *steps;
                if v > Verbosity::Quiet {
                    self.line(format!("smoke: {scenario} on {os} ({backend}), {steps} steps -> {results}"));
                }
            }
            Event::TargetReady { width, height, setup_ms, .. } if v > Verbosity::Quiet => {
                self.line(format!("  target ready: {width}x{height} in {:.1}s", *setup_ms as f64 / 1000.0));
            }
            Event::StepStarted { step, label, attempt, .. } => {
                let retry = if *attempt > 1 { format!(" (attempt {attempt})") } else { String::new() };
                self.bar.set_message(format!("[{step}/{}] {label}{retry}", self.total));
                self.bar.reset_elapsed();
            }
            Event::Check { passed, check, score, text, polls, elapsed_ms, note, .. }
                if (v >= Verbosity::Verbose || !passed) =>
            {
                let mark = if *passed { "ok  " } else { "FAIL" };
                let mut s = format!("      {mark} {check} ({polls} polls, {:.1}s)", *elapsed_ms as f64 / 1000.0);
                if let Some(sc) = score {
                    s.push_str(&format!(" score {sc:.4}"));
                }
                if let Some(n) = note {
                    s.push_str(&format!(" [{n}]"));
                }
                if let (false, Some(t)) = (passed, text) {
                    let t: String = t.split_whitespace().collect::<Vec<_>>().join(" ");
                    let t: String = t.chars().take(160).collect();
                    s.push_str(&format!("\n           read: {t}"));
                }
                self.line(s);
            }
            Event::Vlm { purpose, question, answer, cached, latency_ms, .. } if v >= Verbosity::Verbose => {
                let a: String = answer.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(120).collect();
                let how = if *cached { "cache".to_string() } else { format!("{latency_ms} ms") };
                self.line(format!("      vlm {purpose}: {question} -> {a} ({how})"));
            }
            Event::Shell { command, exit_code, stderr, .. } if v >= Verbosity::Verbose => {
                let first = command.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                let more = if command.trim().lines().count() > 1 { " …" } else { "" };
                self.line(format!(
                    "      $ {first}{more} -> exit {}",
                    exit_code.map_or("none (killed)".into(), |c| c.to_string())
                ));
                if !stderr.trim().is_empty() {
                    self.line(format!("        stderr: {}", stderr.trim()));
                }
            }
            Event::StepFinished { step, label, status, duration_ms, error, failure_screenshot, .. } => {
                if v == Verbosity::Quiet && *status == StepStatus::Passed {
                    return;
                }
                let mark = match status {
                    StepStatus::Passed => "ok   ",
                    StepStatus::Failed => "FAIL ",
                    StepStatus::Error => "ERROR",
                    StepStatus::Skipped => "skip ",
                };
                let mut s = format!("  {mark} {step:>3} {label} ({:.1}s)", *duration_ms as f64 / 1000.0);
                if let (Some(e), false) = (error, *status == StepStatus::Skipped) {
                    s.push_str(&format!("\n        {e}"));
                }
                if let Some(f) = failure_screenshot {
                    s.push_str(&format!("\n        failing frame: {f}"));
                }
                self.line(s);
            }
            Event::Forensics { item, path, bytes, error, .. } if v > Verbosity::Quiet => {
                let what = match (path, error) {
                    (Some(p), None) => format!("{p} ({bytes} bytes)"),
                    (Some(p), Some(e)) => format!("{p} ({bytes} bytes; {e})"),
                    (None, Some(e)) => format!("not collected: {e}"),
                    (None, None) => "nothing".to_string(),
                };
                self.line(format!("  evidence: {item} -> {what}"));
            }
            Event::Warning { message } if v > Verbosity::Quiet => self.line(format!("  note: {message}")),
            Event::Boot { summary, stages, log, .. } => {
                let ladder: Vec<String> =
                    stages.iter().map(|h| format!("{} {:.1}s", h.stage, h.at_ms as f64 / 1000.0)).collect();
                let mut s = format!("  boot: {summary}");
                if v > Verbosity::Quiet && !ladder.is_empty() {
                    s.push_str(&format!("
        stages: {}", ladder.join(" -> ")));
                }
                if let Some(l) = log {
                    s.push_str(&format!("
        serial log: {l}"));
                }
                self.line(s);
            }
            Event::Rewind { step, checkpoint, to_step, duration_ms, .. } if v > Verbosity::Quiet => self.line(format!(
                "  rewind: step {step} failed; rolled back to checkpoint {checkpoint} in {:.1}s, going on after step {to_step}",
                *duration_ms as f64 / 1000.0
            )),
            Event::Lock { resource, waited_ms, recovered } if v > Verbosity::Quiet && (*waited_ms >= 1000 || recovered.is_some()) => {
                let mut s = format!("  locked {resource} after {:.1}s", *waited_ms as f64 / 1000.0);
                if let Some(r) = recovered {
                    s.push_str(&format!(" (recovered a stale lock of {r})"));
                }
                self.line(s);
            }
            Event::RunFinished { verdict, passed, failed, errors, skipped, duration_ms, reason, .. } => {
                self.bar.finish_and_clear();
                let word = match verdict {
                    Verdict::Passed => "PASSED",
                    Verdict::Failed => "FAILED",
                    Verdict::Error => "ERROR",
                    Verdict::Invalid => "INVALID",
                    Verdict::Interrupted => "INTERRUPTED",
                };
                let mut s = format!(
                    "{word}: {passed} passed, {failed} failed, {errors} errors, {skipped} skipped in {:.1}s",
                    *duration_ms as f64 / 1000.0
                );
                if let (Some(r), true) = (reason, *verdict != Verdict::Passed) {
                    s.push_str(&format!("\n  {r}"));
                }
                self.line(s);
            }
            _ => {}
        }
    }
}
