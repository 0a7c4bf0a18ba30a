//! A QMP (QEMU Machine Protocol) client over a Unix socket.
//!
//! QMP is JSON, one object per line: QEMU greets with `{"QMP": {...}}`, the
//! client leaves negotiation mode with `qmp_capabilities`, then sends
//! `{"execute": CMD, "arguments": {...}, "id": N}` and gets `{"return": ...,
//! "id": N}` or `{"error": {"class", "desc"}, "id": N}`. Asynchronous events
//! (`{"event": "SHUTDOWN", "data": ..., "timestamp": ...}`) can arrive at any
//! time; a background reader routes replies to their callers by id and keeps
//! the latest events (bounded) for [`QmpClient::wait_event`].
//!
//! Commands that only the human monitor has (`savevm`, `loadvm`, `delvm`,
//! `info snapshots`) go through `human-monitor-command`. HMP reports errors
//! as text inside a successful reply, so [`QmpClient::hmp_checked`] reads the
//! text and turns `Error: ...` lines into errors.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::oneshot;

/// Events kept for `wait_event`; older ones are dropped.
const KEEP_EVENTS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP at {}: {source}", path.display())]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("QMP {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    #[error("QMP {command} failed ({class}): {desc}")]
    Command { command: String, class: String, desc: String },
    #[error("HMP '{command}' failed: {message}")]
    Hmp { command: String, message: String },
    #[error("QMP {what}: no answer within {:.1}s", waited.as_secs_f64())]
    Timeout { what: String, waited: Duration },
    #[error("QMP connection closed while waiting for {what}")]
    Closed { what: String },
}

/// An asynchronous QMP event.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    /// Sequence number in the order of arrival (1 for the first event).
    pub seq: u64,
    pub name: String,
    pub data: Value,
    /// QEMU's timestamp: seconds and microseconds since the epoch.
    pub timestamp: (i64, i64),
}

type Reply = Result<Value, (String, String)>;

struct Shared {
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    events: Mutex<EventLog>,
    changed: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct EventLog {
    events: VecDeque<QmpEvent>,
    last_seq: u64,
    closed: bool,
}

/// A negotiated QMP connection.
pub struct QmpClient {
    path: PathBuf,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    /// Default time to wait for a reply.
    timeout: Duration,
    /// QEMU's version from the greeting, e.g. `10.0.2`.
    version: String,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for QmpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QmpClient({}, QEMU {})", self.path.display(), self.version)
    }
}

impl QmpClient {
    /// Connect (retrying until the socket appears or `timeout` passes), read
    /// the greeting and negotiate capabilities. Replies are awaited up to
    /// `timeout` unless a command says otherwise.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<QmpClient, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(QmpError::Connect { path: path.to_path_buf(), source: e });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let (read, write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        let greeting = match tokio::time::timeout(left, lines.next_line()).await {
            Err(_) => return Err(QmpError::Timeout { what: "greeting".into(), waited: timeout }),
            Ok(Err(e)) => return Err(QmpError::Io { what: "read the greeting".into(), source: e }),
            Ok(Ok(None)) => return Err(QmpError::Closed { what: "the greeting".into() }),
            Ok(Ok(Some(line))) => line,
        };
        let greeting: Value = serde_json::from_str(&greeting)
            .map_err(|e| QmpError::Protocol(format!("greeting is not JSON ({e}): {greeting}")))?;
        let Some(qmp) = greeting.get("QMP") else {
            return Err(QmpError::Protocol(format!("expected a greeting, got {greeting}")));
        };
        let v = &qmp["version"]["qemu"];
        let version = format!("{}.{}.{}", v["major"], v["minor"], v["micro"]);
        let (changed, _) = tokio::sync::watch::channel(0u64);
        let shared =
            Arc::new(Shared { pending: Mutex::new(HashMap::new()), events: Mutex::new(EventLog::default()), changed });
        let reader = tokio::spawn(read_loop(lines, shared.clone()));
        let client = QmpClient {
            path: path.to_path_buf(),
            writer: tokio::sync::Mutex::new(write),
            shared,
            next_id: AtomicU64::new(1),
            timeout,
            version,
            reader,
        };
        client.execute("qmp_capabilities", None).await?;
        Ok(client)
    }

    /// QEMU's version from the greeting.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Run a command and return its `return` value.
    pub async fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        self.execute_within(command, arguments, self.timeout).await
    }

    /// Run a command, waiting at most `timeout` for its reply.
    pub async fn execute_within(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.shared.pending.lock().unwrap_or_else(|p| p.into_inner());
            if self.shared.events.lock().unwrap_or_else(|p| p.into_inner()).closed {
                return Err(QmpError::Closed { what: format!("the reply to {command}") });
            }
            pending.insert(id, tx);
        }
        let mut line = msg.to_string();
        line.push('\n');
        tracing::debug!(command, id, "qmp execute");
        let sent = async {
            let mut w = self.writer.lock().await;
            w.write_all(line.as_bytes()).await?;
            w.flush().await
        }
        .await;
        if let Err(e) = sent {
            self.forget(id);
            return Err(QmpError::Io { what: format!("send {command}"), source: e });
        }
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                self.forget(id);
                Err(QmpError::Timeout { what: command.to_string(), waited: timeout })
            }
            Ok(Err(_)) => Err(QmpError::Closed { what: format!("the reply to {command}") }),
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err((class, desc)))) => Err(QmpError::Command { command: command.to_string(), class, desc }),
        }
    }

    fn forget(&self, id: u64) {
        self.shared.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// Run a human-monitor command and return its text as is.
    pub async fn hmp(&self, command_line: &str, timeout: Duration) -> Result<String, QmpError> {
        let v = self
            .execute_within("human-monitor-command", Some(json!({ "command-line": command_line })), timeout)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Run a human-monitor command whose success prints nothing or only
    /// information (savevm, loadvm, delvm): `Error: ...` text is an error.
    pub async fn hmp_checked(&self, command_line: &str, timeout: Duration) -> Result<String, QmpError> {
        let text = self.hmp(command_line, timeout).await?;
        match hmp_error(&text) {
            Some(message) => Err(QmpError::Hmp { command: command_line.to_string(), message }),
            None => Ok(text),
        }
    }

    /// The sequence number of the newest event so far (0 before any); pass
    /// it to [`QmpClient::wait_event`] to wait only for later events.
    pub fn last_event_seq(&self) -> u64 {
        self.shared.events.lock().unwrap_or_else(|p| p.into_inner()).last_seq
    }

    /// Events still kept (the newest 256), oldest first.
    pub fn events(&self) -> Vec<QmpEvent> {
        self.shared.events.lock().unwrap_or_else(|p| p.into_inner()).events.iter().cloned().collect()
    }

    /// Wait for an event named `name` with a sequence number above `after`.
    pub async fn wait_event(&self, name: &str, after: u64, timeout: Duration) -> Result<QmpEvent, QmpError> {
        let started = Instant::now();
        let mut rx = self.shared.changed.subscribe();
        loop {
            rx.borrow_and_update();
            {
                let log = self.shared.events.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(e) = log.events.iter().find(|e| e.seq > after && e.name == name) {
                    return Ok(e.clone());
                }
                if log.closed {
                    return Err(QmpError::Closed { what: format!("event {name}") });
                }
            }
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                return Err(QmpError::Timeout { what: format!("event {name}"), waited: started.elapsed() });
            }
        }
    }

    /// Whether QEMU closed the connection (it exited, or quit).
    pub fn is_closed(&self) -> bool {
        self.shared.events.lock().unwrap_or_else(|p| p.into_inner()).closed
    }

    /// Wait until QEMU closes the connection (it does when it exits).
    pub async fn wait_closed(&self, timeout: Duration) -> bool {
        let started = Instant::now();
        let mut rx = self.shared.changed.subscribe();
        loop {
            rx.borrow_and_update();
            if self.is_closed() {
                return true;
            }
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                return self.is_closed();
            }
        }
    }
}

impl Drop for QmpClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The error in HMP output, if any: lines starting with `Error` (QEMU's
/// `error_report` prefix) or a bare `Could not` / `Device ... not found`.
pub fn hmp_error(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let is_error = |l: &str| {
        let lower = l.to_ascii_lowercase();
        lower.starts_with("error") || lower.starts_with("could not") || lower.contains("not found")
    };
    if lines.iter().any(|l| is_error(l)) {
        let msg = lines.join(" / ");
        let msg = msg.strip_prefix("Error: ").unwrap_or(&msg).to_string();
        return Some(msg);
    }
    None
}

async fn read_loop(mut lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>, shared: Arc<Shared>) {
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) | Err(_) => break,
        };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            tracing::warn!(line, "QMP sent a line that is not JSON");
            continue;
        };
        if let Some(name) = msg.get("event").and_then(Value::as_str) {
            let ts = &msg["timestamp"];
            let timestamp = (ts["seconds"].as_i64().unwrap_or(0), ts["microseconds"].as_i64().unwrap_or(0));
            let seq = {
                let mut log = shared.events.lock().unwrap_or_else(|p| p.into_inner());
                log.last_seq += 1;
                let seq = log.last_seq;
                tracing::debug!(event = name, seq, "qmp event");
                log.events.push_back(QmpEvent {
                    seq,
                    name: name.to_string(),
                    data: msg.get("data").cloned().unwrap_or(Value::Null),
                    timestamp,
                });
                while log.events.len() > KEEP_EVENTS {
                    log.events.pop_front();
                }
                seq
            };
            shared.changed.send_replace(seq);
            continue;
        }
        let Some(id) = msg.get("id").and_then(Value::as_u64) else {
            tracing::warn!(%msg, "QMP reply without a known id");
            continue;
        };
        let reply = match (msg.get("return"), msg.get("error")) {
            (Some(r), _) => Ok(r.clone()),
            (None, Some(e)) => Err((
                e["class"].as_str().unwrap_or("GenericError").to_string(),
                e["desc"].as_str().unwrap_or("(no description)").to_string(),
            )),
            (None, None) => Err(("Protocol".to_string(), format!("reply without return or error: {msg}"))),
        };
        let waiter = shared.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        if let Some(tx) = waiter {
            let _ = tx.send(reply);
        }
    }
    {
        let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
        shared.events.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        // dropping the senders wakes every caller with Closed
        pending.clear();
    }
    shared.changed.send_modify(|v| *v += 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": ""}, "capabilities": ["oob"]}}"#;

    /// A fake QEMU: greets, then answers each command as `answer` says.
    async fn fake_qemu(
        dir: &Path,
        answer: impl Fn(&Value) -> Vec<String> + Send + 'static,
    ) -> (PathBuf, tokio::task::JoinHandle<Vec<Value>>) {
        let path = dir.join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            w.write_all(format!("{GREETING}\r\n").as_bytes()).await.unwrap();
            let mut lines = BufReader::new(r).lines();
            let mut seen = Vec::new();
            while let Ok(Some(l)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&l).unwrap();
                for out in answer(&v) {
                    w.write_all(format!("{out}\r\n").as_bytes()).await.unwrap();
                }
                let quit = v["execute"] == "quit";
                seen.push(v);
                if quit {
                    break;
                }
            }
            seen
        });
        (path, task)
    }

    #[tokio::test]
    async fn negotiates_routes_replies_by_id_keeps_events_and_reads_hmp_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (path, peer) = fake_qemu(dir.path(), |v| {
            let id = v["id"].clone();
            match v["execute"].as_str().unwrap() {
                "qmp_capabilities" => vec![json!({"return": {}, "id": id}).to_string()],
                "query-status" => vec![
                    json!({"event": "STOP", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}).to_string(),
                    json!({"return": {"status": "paused", "running": false}, "id": id}).to_string(),
                ],
                "human-monitor-command" => {
                    let line = v["arguments"]["command-line"].as_str().unwrap();
                    let text = if line.starts_with("loadvm") {
                        "Error: Snapshot 'nope' does not exist in one or more devices\r\n"
                    } else {
                        ""
                    };
                    vec![json!({"return": text, "id": id}).to_string()]
                }
                "system_powerdown" => vec![
                    json!({"return": {}, "id": id}).to_string(),
                    json!({"event": "POWERDOWN", "timestamp": {"seconds": 3, "microseconds": 0}}).to_string(),
                ],
                "bogus" => vec![
                    json!({"error": {"class": "CommandNotFound", "desc": "The command bogus has not been found"}, "id": id})
                        .to_string(),
                ],
                "quit" => vec![json!({"return": {}, "id": id}).to_string()],
                _ => vec![],
            }
        })
        .await;
        let qmp = QmpClient::connect(&path, Duration::from_secs(5)).await.unwrap();
        assert_eq!(qmp.version(), "10.0.2");
        let status = qmp.execute("query-status", None).await.unwrap();
        assert_eq!(status["status"], "paused");
        let stop = qmp.wait_event("STOP", 0, Duration::from_secs(2)).await.unwrap();
        assert_eq!((stop.seq, stop.timestamp), (1, (1, 2)));
        let seq = qmp.last_event_seq();
        qmp.execute("system_powerdown", None).await.unwrap();
        let p = qmp.wait_event("POWERDOWN", seq, Duration::from_secs(2)).await.unwrap();
        assert_eq!(p.seq, 2);
        // the STOP before `seq` does not count again
        let e = qmp.wait_event("STOP", seq, Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(e, QmpError::Timeout { .. }), "{e}");
        assert_eq!(qmp.hmp_checked("savevm one", Duration::from_secs(2)).await.unwrap(), "");
        let e = qmp.hmp_checked("loadvm nope", Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(e.to_string(), "HMP 'loadvm nope' failed: Snapshot 'nope' does not exist in one or more devices");
        let e = qmp.execute("bogus", None).await.unwrap_err();
        assert!(matches!(&e, QmpError::Command { class, .. } if class == "CommandNotFound"), "{e}");
        qmp.execute("quit", None).await.unwrap();
        let seen = peer.await.unwrap();
        let ids: Vec<u64> = seen.iter().map(|v| v["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
        assert!(qmp.wait_closed(Duration::from_secs(2)).await);
        let e = qmp.execute("query-status", None).await.unwrap_err();
        assert!(matches!(e, QmpError::Closed { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_and_a_closing_one_fails_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _peer) = fake_qemu(dir.path(), |v| {
            if v["execute"] == "qmp_capabilities" {
                vec![json!({"return": {}, "id": v["id"]}).to_string()]
            } else {
                vec![]
            }
        })
        .await;
        let qmp = QmpClient::connect(&path, Duration::from_secs(5)).await.unwrap();
        let e = qmp.execute_within("query-status", None, Duration::from_millis(150)).await.unwrap_err();
        assert!(matches!(e, QmpError::Timeout { .. }), "{e}");

        let path2 = dir.path().join("closing.sock");
        let listener = UnixListener::bind(&path2).unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (mut r, mut w) = s.into_split();
            w.write_all(format!("{GREETING}\n").as_bytes()).await.unwrap();
            let mut buf = [0u8; 256];
            let n = r.read(&mut buf).await.unwrap();
            let v: Value = serde_json::from_slice(buf[..n].trim_ascii()).unwrap();
            w.write_all(format!("{}\n", json!({"return": {}, "id": v["id"]})).as_bytes()).await.unwrap();
            let _ = r.read(&mut buf).await;
            // exit without answering, as QEMU does on `quit` races
        });
        let qmp = QmpClient::connect(&path2, Duration::from_secs(5)).await.unwrap();
        let e = qmp.execute("system_reset", None).await.unwrap_err();
        assert!(matches!(e, QmpError::Closed { .. }), "{e}");
        assert!(qmp.is_closed());
    }

    #[test]
    fn hmp_error_text() {
        assert_eq!(hmp_error(""), None);
        assert_eq!(hmp_error("ID TAG VM SIZE DATE\n"), None);
        assert_eq!(
            hmp_error("Error: No block device can accept snapshots\r\n").as_deref(),
            Some("No block device can accept snapshots")
        );
        assert!(hmp_error("Could not open 'x'").is_some());
    }
}
