//! The matrix page: scenarios x OS targets with verdict, duration and trend,
//! each cell linking to its run's report.

use std::fmt::Write as _;

use crate::history::Status;
use crate::report::page;
use crate::results::markup::escape as esc;

/// One run of a matrix, as the page shows it.
#[derive(Debug, Clone)]
pub struct Cell {
    pub scenario: String,
    pub os: String,
    pub verdict: String,
    pub duration_ms: u64,
    /// Link to the run's report, relative to the matrix page.
    pub report: Option<String>,
    pub reason: Option<String>,
}

/// Render the matrix page.
pub fn render(title: &str, cells: &[Cell], history: &[Status]) -> String {
    let mut scenarios: Vec<&str> = cells.iter().map(|c| c.scenario.as_str()).collect();
    scenarios.sort();
    scenarios.dedup();
    let mut oses: Vec<&str> = cells.iter().map(|c| c.os.as_str()).collect();
    oses.sort();
    oses.dedup();
    let count = |v: &str| cells.iter().filter(|c| c.verdict == v).count();
    let mut body = format!(
        "<header><h1>{}</h1><div class=\"meta\">{} runs: {} passed, {} failed, {} errors, {} other</div></header><main>",
        esc(title),
        cells.len(),
        count("passed"),
        count("failed"),
        count("error") + count("timeout"),
        cells.len() - count("passed") - count("failed") - count("error") - count("timeout"),
    );
    body.push_str("<table class=\"grid\" id=\"matrix\"><thead><tr><th>scenario</th>");
    for os in &oses {
        let _ = write!(body, "<th>{}</th>", esc(os));
    }
    body.push_str("</tr></thead><tbody>");
    for sc in &scenarios {
        let _ = write!(body, "<tr><th>{}</th>", esc(sc));
        for os in &oses {
            match cells.iter().find(|c| c.scenario == *sc && c.os == *os) {
                None => body.push_str("<td class=\"muted\">-</td>"),
                Some(c) => {
                    let label = match &c.report {
                        Some(r) => format!("<a href=\"{}\">{}</a>", esc(r), esc(&c.verdict)),
                        None => esc(&c.verdict),
                    };
                    let trend = history.iter().find(|h| h.scenario == *sc && h.os == *os).map(|h| {
                        let squares: String = h
                            .trend
                            .iter()
                            .map(|v| {
                                let name = serde_json::to_value(v).ok().and_then(|x| x.as_str().map(str::to_string)).unwrap_or_default();
                                format!("<i class=\"{}\" title=\"{}\"></i>", esc(&name), esc(&name))
                            })
                            .collect();
                        format!(
                            "<div><span class=\"trend\">{squares}</span> <span class=\"muted\">{} &middot; {:.0}% of {}</span></div>",
                            h.class.name(),
                            h.pass_rate * 100.0,
                            h.runs
                        )
                    });
                    let reason = c
                        .reason
                        .as_ref()
                        .filter(|_| c.verdict != "passed")
                        .map(|r| format!("<div class=\"error-msg\">{}</div>", esc(r)))
                        .unwrap_or_default();
                    let _ = write!(
                        body,
                        "<td class=\"cell {v}\" data-verdict=\"{v}\"><span class=\"badge {v}\">{label}</span> <span class=\"muted\">{:.1}s</span>{}{reason}</td>",
                        c.duration_ms as f64 / 1000.0,
                        trend.unwrap_or_default(),
                        v = esc(&c.verdict),
                    );
                }
            }
        }
        body.push_str("</tr>");
    }
    body.push_str("</tbody></table></main>");
    page(title, &body, false)
}
