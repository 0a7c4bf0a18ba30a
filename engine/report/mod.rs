//! Single-file HTML reports for review: one per run (`report.html` in the run
//! folder) and one per matrix. Everything is embedded (CSS, JS, screenshots,
//! the recording's per-step frames, the GIF up to a size limit), so a report
//! opens anywhere without network access.
//!
//! Reports are derived from a run's files only (events.jsonl, the recording,
//! screenshots, logs); events are read as JSON values so fields that later
//! check kinds add are still shown.

pub mod matrix;
pub mod run;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a smoke run folder (no events.jsonl)")]
    NotARun { path: String },
}

pub(crate) const CSS: &str = include_str!("report.css");
pub(crate) const JS: &str = include_str!("report.js");

/// The page skeleton around `body`.
pub(crate) fn page(title: &str, body: &str, script: bool) -> String {
    let esc = crate::results::markup::escape;
    let js = if script { format!("<script>{JS}</script>") } else { String::new() };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{CSS}</style></head><body>{body}\
         <div id=\"lightbox\"><img alt=\"\"></div>{js}</body></html>\n",
        esc(title)
    )
}
