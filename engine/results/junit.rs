//! junit.xml: one `<testsuite>` per run, one `<testcase>` per step, derived
//! from the summary. Failed checks become `<failure>`, infrastructure errors
//! `<error>`, steps not reached `<skipped>`. A matrix merges the suites of
//! its runs into one `<testsuites>`. The output validates against the
//! Jenkins JUnit schema (junit-10.xsd), which the tests check.

use crate::events::StepStatus;
use crate::results::markup::escape as esc;
use crate::results::summary::Summary;

fn secs(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// JUnit XML for one run.
pub fn render(s: &Summary) -> String {
    render_many("smoke", std::slice::from_ref(s))
}

/// JUnit XML for several runs (a matrix).
pub fn render_many(name: &str, runs: &[Summary]) -> String {
    let tests: usize = runs.iter().map(|s| s.steps.len()).sum();
    let failures: usize = runs.iter().map(|s| s.counts.failed).sum();
    let errors: usize =
        runs.iter().map(|s| s.counts.errors + usize::from(s.steps.is_empty() && s.exit_code != 0)).sum();
    let time: u64 = runs.iter().map(|s| s.duration_ms).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{}\">\n",
        esc(name),
        secs(time)
    ));
    for s in runs {
        suite(&mut out, s);
    }
    out.push_str("</testsuites>\n");
    out
}

fn suite(out: &mut String, s: &Summary) {
    let name = format!("{}@{}", s.scenario, s.os);
    let classname = format!("smoke.{}.{}", s.scenario, s.os);
    // a run that could not start has no steps: report it as one errored testcase
    let no_steps = s.steps.is_empty() && s.exit_code != 0;
    out.push_str(&format!(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\" timestamp=\"{}\">\n",
        esc(&name),
        s.steps.len() + usize::from(no_steps),
        s.counts.failed,
        s.counts.errors + usize::from(no_steps),
        s.counts.skipped,
        secs(s.duration_ms),
        esc(s.started.trim_end_matches('Z'))
    ));
    out.push_str("    <properties>\n");
    let verdict = format!("{:?}", s.verdict).to_lowercase();
    for (k, v) in [
        ("scenario", &s.scenario),
        ("os", &s.os),
        ("backend", &s.backend),
        ("file", &s.file),
        ("verdict", &verdict),
        ("inputs", &s.inputs),
    ] {
        out.push_str(&format!("      <property name=\"{k}\" value=\"{}\"/>\n", esc(v)));
    }
    out.push_str("    </properties>\n");
    if no_steps {
        let reason = s.reason.clone().unwrap_or_default();
        out.push_str(&format!(
            "    <testcase name=\"000 prepare target\" classname=\"{}\" time=\"{}\">\n      <error message=\"{}\" type=\"infrastructure\">{}</error>\n    </testcase>\n",
            esc(&classname),
            secs(s.duration_ms),
            esc(&reason),
            esc(&reason)
        ));
    }
    for step in &s.steps {
        let name = format!("{:03} {}{}", step.step, if step.cleanup { "cleanup: " } else { "" }, step.label);
        out.push_str(&format!(
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{}\"",
            esc(&name),
            esc(&classname),
            secs(step.duration_ms)
        ));
        let message = step.error.clone().unwrap_or_default();
        let mut details = format!("{}\nsource: {}\nattempts: {}", message, step.source, step.attempts);
        if let Some(f) = &step.failure_screenshot {
            details.push_str(&format!("\nfailure screenshot: {f}"));
        }
        match step.status {
            StepStatus::Passed => out.push_str(">\n"),
            StepStatus::Failed => out.push_str(&format!(
                ">\n      <failure message=\"{}\" type=\"check\">{}</failure>\n",
                esc(&message),
                esc(&details)
            )),
            StepStatus::Error => out.push_str(&format!(
                ">\n      <error message=\"{}\" type=\"infrastructure\">{}</error>\n",
                esc(&message),
                esc(&details)
            )),
            StepStatus::Skipped => out.push_str(&format!(">\n      <skipped message=\"{}\"/>\n", esc(&message))),
        }
        if !step.screenshots.is_empty() {
            out.push_str(&format!("      <system-out>{}</system-out>\n", esc(&step.screenshots.join("\n"))));
        }
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n");
}
