//! Proxmox VE tasks: asynchronous API calls (start, stop, snapshot, clone, ...)
//! answer with a UPID; the task runs on the node until it stops with an exit
//! status: `OK`, `WARNINGS: N` (success with warnings), or an error message
//! (the task log's last line `TASK ERROR: ...`).
//!
//! UPID format (pve-common `PVE::UPID`):
//! `UPID:$node:$pid:$pstart:$starttime:$type:$id:$user:` with pid, pstart and
//! starttime in upper-case hex (8 digits; pstart may have 9).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::{PveClient, encode_component};
use super::error::PveError;

/// A parsed task id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: u64,
    /// The task type (`qmstart`, `qmsnapshot`, `vncproxy`, ...).
    pub kind: String,
    /// The object, usually the VMID (may be empty).
    pub id: String,
    pub user: String,
    raw: String,
}

impl Upid {
    pub fn parse(text: &str) -> Result<Upid, PveError> {
        let bad = || PveError::Upid(text.to_string());
        let rest = text.strip_prefix("UPID:").ok_or_else(bad)?;
        let rest = rest.strip_suffix(':').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let [node, pid, pstart, starttime, kind, id, user] = parts.as_slice() else { return Err(bad()) };
        let node_ok = !node.is_empty()
            && node.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !node.starts_with('-')
            && !node.ends_with('-');
        let hex = |s: &str, lens: &[usize]| {
            (lens.contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(s, 16).ok())
                .flatten()
        };
        let field_ok = |s: &str, may_be_empty: bool| {
            (may_be_empty || !s.is_empty()) && !s.chars().any(|c| c == '/' || c.is_whitespace())
        };
        if !node_ok || !field_ok(kind, false) || !field_ok(id, true) || !field_ok(user, false) {
            return Err(bad());
        }
        Ok(Upid {
            node: node.to_string(),
            pid: hex(pid, &[8]).and_then(|p| u32::try_from(p).ok()).ok_or_else(bad)?,
            pstart: hex(pstart, &[8, 9]).ok_or_else(bad)?,
            starttime: hex(starttime, &[8]).ok_or_else(bad)?,
            kind: kind.to_string(),
            id: id.to_string(),
            user: user.to_string(),
            raw: text.to_string(),
        })
    }

    /// From an API answer's `data` (a string).
    pub fn from_data(data: &Value, what: &str) -> Result<Upid, PveError> {
        match data.as_str() {
            Some(s) => Upid::parse(s),
            None => Err(PveError::Decode { what: what.to_string(), detail: format!("expected a task id, got {data}") }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    fn path(&self) -> String {
        format!("/nodes/{}/tasks/{}", encode_component(&self.node), encode_component(&self.raw))
    }
}

impl std::fmt::Display for Upid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

/// How a task ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    Ok,
    /// `WARNINGS: N`: done, with N warnings in its log.
    Warnings(u32),
}

/// Where a task stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Running,
    Stopped { exitstatus: String },
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
pub async fn status(client: &PveClient, upid: &Upid) -> Result<TaskState, PveError> {
    let data = client.get(&format!("{}/status", upid.path()), &[]).await?;
    match data.get("status").and_then(Value::as_str) {
        Some("running") => Ok(TaskState::Running),
        Some("stopped") => Ok(TaskState::Stopped {
            exitstatus: data.get("exitstatus").and_then(Value::as_str).unwrap_or("unexpected status").to_string(),
        }),
        other => Err(PveError::Decode {
            what: format!("task status of {upid}"),
            detail: format!("status {other:?}, expected running or stopped"),
        }),
    }
}

/// The last `lines` lines of a task's log (`GET .../log?start=&limit=`).
pub async fn log_tail(client: &PveClient, upid: &Upid, lines: u64) -> Result<Vec<String>, PveError> {
    let path = format!("{}/log", upid.path());
    let read = |start: u64| {
        let path = path.clone();
        async move { client.get(&path, &[("start", start.to_string()), ("limit", lines.to_string())]).await }
    };
    let first = read(0).await?;
    let mut entries = first.as_array().cloned().unwrap_or_default();
    // `total` sits beside `data`, which the client unwraps: page by line numbers instead.
    if entries.len() as u64 == lines {
        let mut start = lines;
        loop {
            let next = read(start).await?;
            let page = next.as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                break;
            }
            start += page.len() as u64;
            entries.extend(page);
            let keep = entries.len().saturating_sub(lines as usize);
            entries.drain(..keep);
            if start > 100_000 {
                break;
            }
        }
    }
    Ok(entries.iter().filter_map(|e| e.get("t").and_then(Value::as_str).map(str::to_string)).collect())
}

/// Poll until the task stops; an exit status other than `OK` or
/// `WARNINGS: N` is an error carrying the log's last lines.
pub async fn wait(client: &PveClient, upid: &Upid, timeout: Duration) -> Result<TaskOutcome, PveError> {
    let started = Instant::now();
    let mut interval = Duration::from_millis(100);
    loop {
        match status(client, upid).await? {
            TaskState::Running => {}
            TaskState::Stopped { exitstatus } => return outcome(client, upid, exitstatus).await,
        }
        if started.elapsed() >= timeout {
            return Err(PveError::Timeout {
                what: format!("task {} for {} ({upid})", upid.kind, upid.id),
                waited: timeout,
            });
        }
        tokio::time::sleep(interval.min(timeout.saturating_sub(started.elapsed()))).await;
        interval = (interval * 2).min(Duration::from_secs(1));
    }
}

async fn outcome(client: &PveClient, upid: &Upid, exitstatus: String) -> Result<TaskOutcome, PveError> {
    if exitstatus == "OK" {
        return Ok(TaskOutcome::Ok);
    }
    if let Some(n) = exitstatus.strip_prefix("WARNINGS: ").and_then(|n| n.trim().parse().ok()) {
        tracing::warn!(task = %upid, "Proxmox VE task {} ended with {n} warnings", upid.kind);
        return Ok(TaskOutcome::Warnings(n));
    }
    let log = log_tail(client, upid, 20).await.unwrap_or_else(|e| vec![format!("(task log unavailable: {e})")]);
    Err(PveError::TaskFailed { node: upid.node.clone(), kind: upid.kind.clone(), id: upid.id.clone(), exitstatus, log })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upids_parse_as_pve_encodes_them() {
        let u = Upid::parse("UPID:pve1:000A1B2C:0123ABCD:65F0A1B2:qmstart:100:root@pam:").unwrap();
        assert_eq!(u.node, "pve1");
        assert_eq!(u.pid, 0x000A1B2C);
        assert_eq!(u.pstart, 0x0123ABCD);
        assert_eq!(u.starttime, 0x65F0A1B2);
        assert_eq!((u.kind.as_str(), u.id.as_str(), u.user.as_str()), ("qmstart", "100", "root@pam"));
        // token users, an empty id and a 9-digit pstart are valid
        let u = Upid::parse("UPID:node-2:00000001:1FFFFFFFF:00000001:vncproxy::smoke@pve!ci:").unwrap();
        assert_eq!((u.pstart, u.id.as_str(), u.user.as_str()), (0x1FFFFFFFF, "", "smoke@pve!ci"));
        for bad in [
            "UPID:pve1:000A1B2C:0123ABCD:65F0A1B2:qmstart:100:root@pam",
            "UPID:-pve:000A1B2C:0123ABCD:65F0A1B2:qmstart:100:root@pam:",
            "UPID:pve1:A1B2C:0123ABCD:65F0A1B2:qmstart:100:root@pam:",
            "UPID:pve1:000A1B2C:0123ABCD:65F0A1B2:qm start:100:root@pam:",
            "UPID:pve1:000A1B2C:0123ABCD:65F0A1B2:qmstart:1/0:root@pam:",
            "PID:pve1:000A1B2C:0123ABCD:65F0A1B2:qmstart:100:root@pam:",
            "UPID:pve1:000A1B2C:0123ABCD:65F0A1B2:qmstart:100::",
        ] {
            assert!(Upid::parse(bad).is_err(), "{bad}");
        }
    }
}
