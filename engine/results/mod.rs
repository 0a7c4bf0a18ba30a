//! The results of a run on disk:
//!
//! ```text
//! results/<time>-<scenario>-<os>/
//!   events.jsonl      every event, one JSON object per line, flushed as it happens
//!   summary.json      verdict, per-step outcome and check numbers (schema smoke.summary/1)
//!   junit.xml         one testcase per step, for CI systems
//!   recording.gif     the motion-filtered recording of the whole run
//!   screenshots/      a PNG per check, per click (with the click marked) and the failing frame
//!   logs/             output of launched apps
//! ```
//!
//! summary.json and junit.xml are derived from the event stream only.

pub mod annotate;
pub mod junit;
pub mod markup;
pub mod summary;

use std::path::{Path, PathBuf};

/// The folder of one run.
#[derive(Debug, Clone)]
pub struct ResultsDir {
    pub path: PathBuf,
}

impl ResultsDir {
    /// Create `<root>/<UTC time>-<scenario>-<os>` (with a suffix if it exists).
    pub fn create(root: &Path, scenario: &str, os: &str) -> std::io::Result<ResultsDir> {
        let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        let stamp = time::OffsetDateTime::now_utc().format(&fmt).unwrap_or_else(|_| "run".into());
        let base = format!("{stamp}-{}-{}", slug(scenario), slug(os));
        std::fs::create_dir_all(root)?;
        let mut path = root.join(&base);
        let mut n = 2;
        while path.exists() {
            path = root.join(format!("{base}-{n}"));
            n += 1;
        }
        std::fs::create_dir_all(path.join("screenshots"))?;
        std::fs::create_dir_all(path.join("logs"))?;
        // results/latest -> this run (best effort; not on every filesystem)
        let latest = root.join("latest");
        if latest.is_symlink() || !latest.exists() {
            let _ = std::fs::remove_file(&latest);
            #[cfg(unix)]
            let _ = std::os::unix::fs::symlink(path.file_name().unwrap_or_default(), &latest);
        }
        Ok(ResultsDir { path })
    }

    pub fn events(&self) -> PathBuf {
        self.path.join("events.jsonl")
    }

    pub fn summary(&self) -> PathBuf {
        self.path.join("summary.json")
    }

    pub fn junit(&self) -> PathBuf {
        self.path.join("junit.xml")
    }

    pub fn recording(&self) -> PathBuf {
        self.path.join("recording.gif")
    }

    pub fn logs(&self) -> PathBuf {
        self.path.join("logs")
    }

    /// `screenshots/NNN-<what>.png`, unique within the run.
    pub fn screenshot(&self, step: usize, what: &str) -> PathBuf {
        let dir = self.path.join("screenshots");
        let base = format!("{step:03}-{}", slug(what));
        let mut p = dir.join(format!("{base}.png"));
        let mut n = 2;
        while p.exists() {
            p = dir.join(format!("{base}-{n}.png"));
            n += 1;
        }
        p
    }

    /// A path inside the results as written into events (relative to the folder).
    pub fn relative(&self, p: &Path) -> String {
        p.strip_prefix(&self.path).unwrap_or(p).display().to_string()
    }
}

/// A file-name-safe short form: letters, digits, `-`, `_`, `.`; at most 48 chars.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 48 {
            break;
        }
    }
    let t = out.trim_matches(|c| c == '-' || c == '.').to_string();
    if t.is_empty() { "x".into() } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_safe() {
        assert_eq!(slug("type \"12+30=\""), "type-12-30");
        assert_eq!(slug("../../etc"), "etc");
        assert_eq!(slug("***"), "x");
    }

    #[test]
    fn folders_and_screenshots_are_unique() {
        let d = tempfile::tempdir().unwrap();
        let a = ResultsDir::create(d.path(), "calc", "local").unwrap();
        let b = ResultsDir::create(d.path(), "calc", "local").unwrap();
        assert_ne!(a.path, b.path);
        let s1 = a.screenshot(3, "verify");
        std::fs::write(&s1, b"x").unwrap();
        let s2 = a.screenshot(3, "verify");
        assert_ne!(s1, s2);
        assert_eq!(a.relative(&s1), "screenshots/003-verify.png");
    }
}
