//! junit.xml: one `<testsuite>` per run, one `<testcase>` per step, derived
//! from the summary. Failed checks become `<failure>`, infrastructure errors
//! `<error>`, steps not reached `<skipped>`.

use crate::events::StepStatus;
use crate::results::summary::Summary;

/// Render JUnit XML for a run.
pub fn render(s: &Summary) -> String {
    let suite = format!("{}@{}", s.scenario, s.os);
    let classname = format!("smoke.{}.{}", s.scenario, s.os);
    let secs = |ms: u64| format!("{:.3}", ms as f64 / 1000.0);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total = s.steps.len();
    out.push_str(&format!(
        "<testsuites name=\"smoke\" tests=\"{total}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\">\n",
        s.counts.failed,
        s.counts.errors,
        s.counts.skipped,
        secs(s.duration_ms)
    ));
    out.push_str(&format!(
        "  <testsuite name=\"{}\" tests=\"{total}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\" timestamp=\"{}\">\n",
        esc(&suite),
        s.counts.failed,
        s.counts.errors,
        s.counts.skipped,
        secs(s.duration_ms),
        esc(s.started.trim_end_matches('Z'))
    ));
    out.push_str("    <properties>\n");
    for (k, v) in [("scenario", &s.scenario), ("os", &s.os), ("backend", &s.backend), ("file", &s.file)] {
        out.push_str(&format!("      <property name=\"{k}\" value=\"{}\"/>\n", esc(v)));
    }
    out.push_str(&format!(
        "      <property name=\"verdict\" value=\"{}\"/>\n",
        esc(&format!("{:?}", s.verdict).to_lowercase())
    ));
    out.push_str("    </properties>\n");
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
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// Escape for XML text and attributes; characters XML 1.0 forbids are dropped.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_drops_forbidden_characters() {
        assert_eq!(esc("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;");
    }
}
