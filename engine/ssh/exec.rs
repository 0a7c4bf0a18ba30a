//! One remote command: what is sent, what comes back, and how a command that
//! runs out of time is ended on the target.
//!
//! A command that can be killed announces its process id on stderr first
//! (`smoke-pid:N`, removed from the captured stderr): on POSIX the login
//! shell, which sshd made a session and process group leader, prints `$$` and
//! then `exec`s the command, so killing the group `-N` ends the command and
//! everything it started; on Windows PowerShell prints `$PID` and the tree is
//! ended with `taskkill /T /F`. Output is kept up to a cap (the tail, the
//! number of dropped bytes is counted).

use std::time::Duration;

use crate::scenario::template::shquote;

/// Prefix of the line a killable command prints on stderr first.
pub const PID_MARKER: &str = "smoke-pid:";

/// How a command that ran out of time is ended on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillOnTimeout {
    /// TERM, then KILL the process group announced with [`PID_MARKER`].
    PosixGroup,
    /// `taskkill /T /F` the process tree announced with [`PID_MARKER`].
    WindowsTree,
    /// Only close the channel (the command may keep running).
    None,
}

/// A command to run over SSH.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The exact command line the server's shell receives.
    pub command: String,
    /// Bytes for the command's stdin (then EOF); `None` gives an empty stdin.
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    pub stdout_cap: usize,
    pub stderr_cap: usize,
    pub kill: KillOnTimeout,
    /// Short description for errors and logs (never the command when it may hold secrets).
    pub what: String,
}

impl ExecRequest {
    /// A plain command with default caps (64 KiB each), no kill announcement.
    pub fn raw(command: impl Into<String>, timeout: Duration) -> ExecRequest {
        let command = command.into();
        ExecRequest {
            what: first_line(&command),
            command,
            stdin: None,
            timeout,
            stdout_cap: DEFAULT_CAP,
            stderr_cap: DEFAULT_CAP,
            kill: KillOnTimeout::None,
        }
    }

    /// A POSIX `sh` script with `env` exported, killable as a process group.
    pub fn posix(script: &str, env: &[(String, String)], timeout: Duration) -> ExecRequest {
        ExecRequest {
            command: posix_command(script, env),
            kill: KillOnTimeout::PosixGroup,
            what: first_line(script),
            ..ExecRequest::raw(String::new(), timeout)
        }
    }

    pub fn with_stdin(mut self, data: Vec<u8>) -> ExecRequest {
        self.stdin = Some(data);
        self
    }

    pub fn with_caps(mut self, stdout: usize, stderr: usize) -> ExecRequest {
        self.stdout_cap = stdout;
        self.stderr_cap = stderr;
        self
    }
}

pub const DEFAULT_CAP: usize = 64 * 1024;

/// What a finished (or killed) remote command left behind.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub exit_code: Option<u32>,
    /// Signal name as the server reports it (`TERM`, `KILL`, ...).
    pub signal: Option<String>,
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_dropped: u64,
    pub stderr_dropped: u64,
    /// The process id the command announced (killable commands only).
    pub pid: Option<u32>,
    pub duration: Duration,
}

impl ExecOutput {
    pub fn stdout_text(&self) -> String {
        capped_text(&self.stdout, self.stdout_dropped)
    }

    pub fn stderr_text(&self) -> String {
        capped_text(&self.stderr, self.stderr_dropped)
    }

    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }
}

fn capped_text(b: &[u8], dropped: u64) -> String {
    let t = String::from_utf8_lossy(b).to_string();
    if dropped > 0 { format!("[... {dropped} earlier bytes dropped ...]\n{t}") } else { t }
}

/// `sh` script wrapped so the login shell announces its pid, exports `env`
/// and becomes `sh -c SCRIPT` (same pid, so the group can be killed).
pub fn posix_command(script: &str, env: &[(String, String)]) -> String {
    let mut s = format!("echo \"{PID_MARKER}$$\" >&2; ");
    for (k, v) in env {
        s.push_str(&format!("export {k}={}; ", shquote(v)));
    }
    s.push_str("exec sh -c ");
    s.push_str(&shquote(script));
    s
}

/// TERM the process group, wait up to 2 s, then KILL it.
pub fn posix_kill_command(pid: u32) -> String {
    format!(
        "kill -TERM -{pid} 2>/dev/null || kill -TERM {pid} 2>/dev/null; i=0; \
         while [ $i -lt 20 ] && kill -0 -{pid} 2>/dev/null; do sleep 0.1; i=$((i+1)); done; \
         kill -KILL -{pid} 2>/dev/null; kill -KILL {pid} 2>/dev/null; true"
    )
}

/// End a Windows process and its children.
pub fn windows_kill_command(pid: u32) -> String {
    format!("taskkill /T /F /PID {pid}")
}

/// Keeps the last `cap` bytes of a stream.
#[derive(Debug)]
pub struct Capped {
    cap: usize,
    pub data: Vec<u8>,
    pub dropped: u64,
}

impl Capped {
    pub fn new(cap: usize) -> Capped {
        Capped { cap, data: Vec::new(), dropped: 0 }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        if self.data.len() > self.cap {
            let cut = self.data.len() - self.cap;
            self.data.drain(..cut);
            self.dropped += cut as u64;
        }
    }
}

/// Stderr of a killable command: the first line may be the pid announcement.
#[derive(Debug)]
pub struct Stderr {
    pending: Option<Vec<u8>>,
    pub pid: Option<u32>,
    pub rest: Capped,
}

impl Stderr {
    pub fn new(cap: usize, expect_marker: bool) -> Stderr {
        Stderr { pending: expect_marker.then(Vec::new), pid: None, rest: Capped::new(cap) }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let Some(p) = self.pending.as_mut() else {
            self.rest.push(bytes);
            return;
        };
        p.extend_from_slice(bytes);
        if let Some(nl) = p.iter().position(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(&p[..nl]).trim_end_matches('\r').to_string();
            let after = p[nl + 1..].to_vec();
            let pending = std::mem::take(p);
            self.pending = None;
            match line.strip_prefix(PID_MARKER).and_then(|n| n.trim().parse().ok()) {
                Some(pid) => {
                    self.pid = Some(pid);
                    self.rest.push(&after);
                }
                None => self.rest.push(&pending),
            }
        } else if p.len() > 64 {
            let pending = std::mem::take(p);
            self.pending = None;
            self.rest.push(&pending);
        }
    }

    pub fn finish(&mut self) {
        if let Some(p) = self.pending.take() {
            self.rest.push(&p);
        }
    }
}

/// The number of a signal name as the server reports it (Linux numbering).
pub fn signal_number(name: &str) -> Option<i32> {
    let n = name.trim_start_matches("SIG");
    Some(match n {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "TRAP" => 5,
        "ABRT" => 6,
        "BUS" => 7,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => return None,
    })
}

fn first_line(s: &str) -> String {
    let l = s.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    if l.chars().count() > 60 { format!("{}…", l.chars().take(60).collect::<String>()) } else { l.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_line_is_removed_from_stderr() {
        let mut e = Stderr::new(1000, true);
        e.push(b"smoke-p");
        e.push(b"id:4242\nreal error\n");
        e.finish();
        assert_eq!(e.pid, Some(4242));
        assert_eq!(e.rest.data, b"real error\n");
        let mut e = Stderr::new(1000, true);
        e.push(b"no marker here\nmore");
        e.finish();
        assert_eq!(e.pid, None);
        assert_eq!(e.rest.data, b"no marker here\nmore");
    }

    #[test]
    fn capped_keeps_the_tail() {
        let mut c = Capped::new(4);
        c.push(b"abc");
        c.push(b"defg");
        assert_eq!((c.data.as_slice(), c.dropped), (&b"defg"[..], 3));
    }

    #[test]
    fn posix_command_quotes_everything() {
        let c = posix_command("echo 'a'", &[("DISPLAY".into(), ":1".into())]);
        assert_eq!(c, "echo \"smoke-pid:$$\" >&2; export DISPLAY=':1'; exec sh -c 'echo '\\''a'\\'''");
        assert_eq!(signal_number("KILL"), Some(9));
        assert_eq!(signal_number("SIGTERM"), Some(15));
    }
}
