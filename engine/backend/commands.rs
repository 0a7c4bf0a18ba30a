//! Running commands on the target: locally inside the private desktop's
//! environment ([`LocalCommands`]), or over SSH on the target machine
//! ([`RemoteCommands`](crate::backend::remote::RemoteCommands)). The runner
//! only sees [`Commands`]: run a script with a time limit, launch an app
//! detached, probe a process by name, resolve a file pattern, stop
//! everything launched.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::backend::BackendError;
use crate::backend::process::{self, isolate};
use crate::backend::remote::RemoteCommands;
use crate::guest::{self, Shell};
use crate::scenario::model::CommandLine;

/// Where a target's commands run.
#[derive(Debug)]
pub enum Commands {
    Local(LocalCommands),
    Ssh(Box<RemoteCommands>),
}

/// What a probe of a launched app saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// A process with the app's name runs (as the target's user / in this desktop).
    pub running: bool,
    /// The launched process ended: (ended with status 0, how it ended).
    pub exited: Option<(bool, String)>,
}

impl Commands {
    /// The shell scripts are written for.
    pub fn shell(&self) -> Shell {
        match self {
            Commands::Local(_) => Shell::Posix,
            Commands::Ssh(r) => r.shell(),
        }
    }

    /// `local` or `ssh user@host:port`, for events.
    pub fn describe(&self) -> String {
        match self {
            Commands::Local(_) => "local".into(),
            Commands::Ssh(r) => format!("ssh {}", r.target()),
        }
    }

    /// Run a script to completion or until `timeout` (then it is killed);
    /// stdout and stderr keep their last `cap` bytes.
    pub async fn run(&mut self, script: &str, timeout: Duration, cap: usize) -> Result<CommandOutput, BackendError> {
        match self {
            Commands::Local(l) => l.run_capped(script, timeout, cap).await,
            Commands::Ssh(r) => r.run(script, timeout, cap).await,
        }
    }

    /// Start an app detached; returns its process id on the target.
    pub async fn launch(&mut self, cmd: &CommandLine, process: &str, log: &Path) -> Result<u32, BackendError> {
        match self {
            Commands::Local(l) => l.launch(cmd, log),
            Commands::Ssh(r) => r.launch(cmd, process, log).await,
        }
    }

    /// Is a process named `process` running, and has the launched `pid` ended?
    pub async fn probe(&mut self, process: &str, pid: u32) -> Result<Probe, BackendError> {
        match self {
            Commands::Local(l) => Ok(Probe { running: l.process_running(process), exited: l.exited(pid) }),
            Commands::Ssh(r) => r.probe(process, pid).await,
        }
    }

    /// The end of a launched app's output.
    pub async fn log_tail(&mut self, pid: u32, log: &Path) -> String {
        match self {
            Commands::Local(_) => crate::backend::local_desktop::tail(log),
            Commands::Ssh(r) => r.log_tail(pid).await,
        }
    }

    /// Resolve a file pattern on the target to exactly one file. The outer
    /// error is the target's (the script could not run); the inner one says
    /// what the pattern matched instead of one file.
    pub async fn resolve_file(&mut self, pattern: &str) -> Result<Result<String, String>, BackendError> {
        let shell = self.shell();
        let script = match shell {
            Shell::Posix => guest::linux::resolve_script(pattern),
            Shell::PowerShell => guest::windows::resolve_script(pattern),
        };
        let out = self.run(&script, Duration::from_secs(60), OUTPUT_CAP).await?;
        if out.exit_code != Some(0) {
            return Err(BackendError::Command {
                what: format!("resolving the file pattern '{pattern}'"),
                detail: format!("exit {:?}: {}", out.exit_code, out.stderr.trim()),
            });
        }
        Ok(guest::parse_resolved(&out.stdout).into_path(pattern))
    }

    /// Stop every launched app (TERM, then KILL after `grace`).
    pub async fn stop_all(&mut self, grace: Duration) {
        match self {
            Commands::Local(l) => l.stop_all(grace).await,
            Commands::Ssh(r) => r.stop_all(grace).await,
        }
    }
}

/// What a finished command left behind. Output keeps the last [`OUTPUT_CAP`] bytes.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub duration: Duration,
}

pub const OUTPUT_CAP: usize = 64 * 1024;

/// An app started by a `launch` step.
#[derive(Debug)]
pub struct Launched {
    pub pid: u32,
    pub command: String,
    pub log: PathBuf,
    child: tokio::process::Child,
}

/// Runs commands in a local environment.
#[derive(Debug)]
pub struct LocalCommands {
    env: Vec<(String, String)>,
    /// Variables removed from smoke's own environment (e.g. the user's DBus session).
    remove: Vec<String>,
    cwd: PathBuf,
    /// `KEY=value` that marks processes of this target (e.g. DISPLAY=:3).
    marker: Option<(String, String)>,
    launched: Vec<Launched>,
}

impl LocalCommands {
    pub fn new(
        env: Vec<(String, String)>,
        remove: Vec<String>,
        cwd: PathBuf,
        marker: Option<(String, String)>,
    ) -> LocalCommands {
        LocalCommands { env, remove, cwd, marker, launched: Vec::new() }
    }

    /// The environment commands get: (set, removed, working directory).
    pub fn environment(&self) -> (&[(String, String)], &[String], &Path) {
        (&self.env, &self.remove, &self.cwd)
    }

    fn command(&self, cmd: &CommandLine) -> tokio::process::Command {
        let mut c = match cmd {
            CommandLine::Shell(s) => {
                let mut c = tokio::process::Command::new("sh");
                c.arg("-c").arg(s);
                c
            }
            CommandLine::Argv(argv) => {
                let mut c = tokio::process::Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        for k in &self.remove {
            c.env_remove(k);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.current_dir(&self.cwd);
        c.stdin(Stdio::null());
        isolate(&mut c);
        c
    }

    /// Run a shell command to completion (or until `timeout`, then its whole
    /// process group is killed).
    pub async fn run(&self, command: &str, timeout: Duration) -> Result<CommandOutput, BackendError> {
        self.run_capped(command, timeout, OUTPUT_CAP).await
    }

    /// [`LocalCommands::run`] keeping the last `cap` bytes of each stream.
    pub async fn run_capped(
        &self,
        command: &str,
        timeout: Duration,
        cap: usize,
    ) -> Result<CommandOutput, BackendError> {
        let mut c = self.command(&CommandLine::Shell(command.to_string()));
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = c.spawn().map_err(|e| BackendError::Spawn { program: "sh".into(), source: e })?;
        let pid = child.id().unwrap_or(0);
        let out = tokio::spawn(read_capped(child.stdout.take(), cap));
        let err = tokio::spawn(read_capped(child.stderr.take(), cap));
        let (status, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(s) => (s.ok(), false),
            Err(_) => {
                process::stop_group(pid, Duration::from_secs(2)).await;
                (child.wait().await.ok(), true)
            }
        };
        // a background grandchild can keep the pipes open: don't wait forever for EOF
        let grace = Duration::from_secs(2);
        let stdout = tokio::time::timeout(grace, out).await.ok().and_then(|r| r.ok()).unwrap_or_default();
        let stderr = tokio::time::timeout(grace, err).await.ok().and_then(|r| r.ok()).unwrap_or_default();
        use std::os::unix::process::ExitStatusExt;
        Ok(CommandOutput {
            exit_code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            timed_out,
            stdout,
            stderr,
            duration: start.elapsed(),
        })
    }

    /// Start an app detached from smoke's terminal, its output going to `log`.
    pub fn launch(&mut self, cmd: &CommandLine, log: &Path) -> Result<u32, BackendError> {
        if let CommandLine::Argv(argv) = cmd
            && !process::which(&argv[0])
        {
            return Err(BackendError::MissingProgram { program: argv[0].clone(), hint: None });
        }
        let file = std::fs::File::create(log)
            .map_err(|e| BackendError::Io { what: format!("create {}", log.display()), source: e })?;
        let file2 = file.try_clone().map_err(|e| BackendError::Io { what: "dup log".into(), source: e })?;
        let mut c = self.command(cmd);
        c.stdout(Stdio::from(file)).stderr(Stdio::from(file2));
        // A program written a moment ago can still be open for writing in a
        // forked process (ETXTBSY); that clears within milliseconds.
        let mut tries = 0;
        let child = loop {
            match c.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 5 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                r => break r.map_err(|e| BackendError::Spawn { program: cmd.display(), source: e })?,
            }
        };
        let pid = child.id().unwrap_or(0);
        self.launched.push(Launched { pid, command: cmd.display(), log: log.to_path_buf(), child });
        Ok(pid)
    }

    /// Has a launched app already exited? Returns (success, its exit status text).
    pub fn exited(&mut self, pid: u32) -> Option<(bool, String)> {
        let l = self.launched.iter_mut().find(|l| l.pid == pid)?;
        match l.child.try_wait() {
            Ok(Some(status)) => Some((status.success(), status.to_string())),
            _ => None,
        }
    }

    /// Is a process of this target with that name running (not a zombie)?
    /// Matches the kernel's 15-byte `comm`, among processes started here or
    /// carrying this target's marker variable.
    pub fn process_running(&self, name: &str) -> bool {
        let comm = process::comm_name(name);
        let sessions: Vec<u32> = self.launched.iter().map(|l| l.pid).collect();
        process::processes().into_iter().any(|p| {
            p.comm == comm
                && (sessions.contains(&p.session)
                    || self.marker.as_ref().is_some_and(|(k, v)| process::has_env(p.pid, k, v)))
        })
    }

    /// Stop every launched app (TERM, then KILL after `grace`).
    pub async fn stop_all(&mut self, grace: Duration) {
        for mut l in self.launched.drain(..) {
            let path = process::stop_group(l.pid, grace).await;
            tracing::debug!(pid = l.pid, command = %l.command, ?path, "stopped launched app");
            let _ = l.child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(1), l.child.wait()).await;
        }
    }
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(r: Option<R>, cap: usize) -> String {
    let Some(mut r) = r else { return String::new() };
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    let mut dropped = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > cap {
                    let cut = kept.len() - cap;
                    kept.drain(..cut);
                    dropped = true;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&kept).to_string();
    if dropped { format!("[... earlier output dropped ...]\n{text}") } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmds() -> LocalCommands {
        LocalCommands::new(vec![("SMOKE_T".into(), "1".into())], Vec::new(), std::env::temp_dir(), None)
    }

    #[tokio::test]
    async fn exit_codes_output_and_env() {
        let c = cmds();
        let o = c.run("echo out; echo err >&2; echo $SMOKE_T; exit 3", Duration::from_secs(5)).await.unwrap();
        assert_eq!(o.exit_code, Some(3));
        assert_eq!(o.stdout, "out\n1\n");
        assert_eq!(o.stderr, "err\n");
        assert!(!o.timed_out);
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let c = cmds();
        let start = Instant::now();
        let o = c.run("sleep 30 & sleep 30", Duration::from_millis(300)).await.unwrap();
        assert!(o.timed_out);
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_eq!(o.exit_code, None);
    }

    #[tokio::test]
    async fn output_is_capped() {
        let c = cmds();
        let o = c.run("head -c 300000 /dev/zero | tr '\\0' x", Duration::from_secs(10)).await.unwrap();
        assert!(o.stdout.len() < OUTPUT_CAP + 100);
        assert!(o.stdout.starts_with("[... earlier output dropped ...]"));
    }

    #[tokio::test]
    async fn launched_process_is_found_by_its_kernel_name() {
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("a-very-long-program-name");
        std::fs::copy("/bin/sleep", &prog).unwrap();
        let mut c = cmds();
        let argv = vec![prog.display().to_string(), "30".into()];
        c.launch(&CommandLine::Argv(argv), &dir.path().join("log")).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(c.process_running("a-very-long-program-name"));
        assert!(!c.process_running("a-very-long-other"));
        c.stop_all(Duration::from_secs(2)).await;
        assert!(!c.process_running("a-very-long-program-name"));
    }
}
