//! Commands over SSH on the target machine: `shell` steps, app launches into
//! the user's desktop session, process probes by name, and stopping what was
//! launched. One SSH connection serves the whole run.
//!
//! Linux: shell steps and launches get the desktop session's variables
//! (fixed by the backend, or read from the session leader's environ; see
//! [`guest::linux`]); a launched app runs in its own session, its output goes
//! to a log in a private folder on the target (fetched into the results at
//! the end) and its exit status is recorded when it ends. Windows: scripts
//! are PowerShell, launches go through a scheduled task (see [`guest::windows`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::BackendError;
use crate::backend::commands::{CommandOutput, Probe};
use crate::guest::linux::{self, LaunchFiles};
use crate::guest::{self, Shell};
use crate::inventory::SessionSpec;
use crate::scenario::model::CommandLine;
use crate::ssh::exec::signal_number;
use crate::ssh::{ExecRequest, SshClient};

const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Launch logs larger than this are fetched as their tail.
const LOG_FETCH_MAX: usize = 4 << 20;

#[derive(Debug)]
struct RemoteLaunch {
    pid: u32,
    command: String,
    files: Option<LaunchFiles>,
    local_log: PathBuf,
}

/// Runs a target's commands over one SSH connection.
#[derive(Debug)]
pub struct RemoteCommands {
    client: Arc<SshClient>,
    shell: Shell,
    session: SessionSpec,
    /// The session's variables once found (`Some(empty)`: looked, none found).
    session_env: Option<Vec<(String, String)>>,
    /// Private folder on the target for this run's launch logs.
    dir: String,
    token: String,
    launched: Vec<RemoteLaunch>,
    counter: usize,
}

impl RemoteCommands {
    pub fn new(client: Arc<SshClient>, shell: Shell, session: SessionSpec) -> RemoteCommands {
        let token = random_token();
        RemoteCommands {
            client,
            shell,
            session,
            session_env: None,
            dir: format!("/tmp/smoke-{token}"),
            token,
            launched: Vec::new(),
            counter: 0,
        }
    }

    pub fn shell(&self) -> Shell {
        self.shell
    }

    pub fn target(&self) -> String {
        self.client.settings().describe()
    }

    pub fn client(&self) -> &Arc<SshClient> {
        &self.client
    }

    /// The desktop session's variables (Linux): fixed ones, or read from the
    /// session leader. `Err` says why none was found.
    pub async fn session_env(&mut self, refresh: bool) -> Result<Vec<(String, String)>, BackendError> {
        if self.shell != Shell::Posix {
            return Ok(Vec::new());
        }
        let leaders = match &self.session {
            SessionSpec::Env(env) => return Ok(env.clone()),
            SessionSpec::Auto => linux::DEFAULT_LEADERS.iter().map(|s| s.to_string()).collect(),
            SessionSpec::Leaders(l) => l.clone(),
        };
        if let Some(env) = &self.session_env
            && !refresh
            && !env.is_empty()
        {
            return Ok(env.clone());
        }
        let req = ExecRequest::posix(&linux::discover_script(&leaders), &[], PROBE_TIMEOUT);
        let o = self.client.exec(&req).await?;
        let found = if o.exit_code == Some(0) { linux::parse_session(&o.stdout_text()) } else { None };
        match found {
            Some(s) => {
                tracing::debug!(leader = %s.leader, pid = s.pid, vars = s.env.len(), "desktop session found");
                self.session_env = Some(s.env.clone());
                Ok(s.env)
            }
            None => {
                self.session_env = Some(Vec::new());
                let why = o.stderr_text().trim().to_string();
                Err(BackendError::Session(if why.is_empty() {
                    format!("no desktop session found on {}", self.target())
                } else {
                    why
                }))
            }
        }
    }

    pub async fn run(&mut self, script: &str, timeout: Duration, cap: usize) -> Result<CommandOutput, BackendError> {
        // shell steps see the desktop session too (gsettings, xset, ...) when there is one
        let env = match &self.session_env {
            Some(env) => env.clone(),
            None => self.session_env(false).await.unwrap_or_default(),
        };
        let req = self.shell.script(script, &env, timeout).with_caps(cap, cap);
        let o = self.client.exec(&req).await?;
        Ok(CommandOutput {
            exit_code: o.exit_code.map(|c| c as i32),
            signal: o.signal.as_deref().map(|s| signal_number(s).unwrap_or(-1)),
            timed_out: o.timed_out,
            stdout: o.stdout_text(),
            stderr: o.stderr_text(),
            duration: o.duration,
        })
    }

    pub async fn launch(&mut self, cmd: &CommandLine, process: &str, log: &Path) -> Result<u32, BackendError> {
        self.counter += 1;
        let n = self.counter;
        let (req, files) = match self.shell {
            Shell::Posix => {
                let env = self.session_env(true).await?;
                let files = LaunchFiles::new(&self.dir, n);
                (ExecRequest::posix(&linux::launch_script(cmd, &files, &env), &[], LAUNCH_TIMEOUT), Some(files))
            }
            Shell::PowerShell => {
                let task = format!("smoke-launch-{}-{n}", self.token);
                let script = guest::windows::launch_script(cmd, process, &task, 30);
                (self.shell.script(&script, &[], LAUNCH_TIMEOUT), None)
            }
        };
        let o = self.client.exec(&req).await?;
        let pid = linux::parse_launch_pid(&o.stdout_text());
        match (o.exit_code, pid) {
            (Some(0), Some(pid)) => {
                if files.is_none() {
                    let _ = std::fs::write(log, "(the output of apps launched on Windows is not captured)\n");
                }
                self.launched.push(RemoteLaunch { pid, command: cmd.display(), files, local_log: log.to_path_buf() });
                Ok(pid)
            }
            (Some(127), _) => Err(BackendError::MissingProgram {
                program: match cmd {
                    CommandLine::Argv(a) => a[0].clone(),
                    CommandLine::Shell(s) => s.clone(),
                },
                hint: Some(format!("on {}: {}", self.target(), o.stderr_text().trim())),
            }),
            _ => Err(BackendError::Command {
                what: format!("launching {} on {}", cmd.display(), self.target()),
                detail: crate::ssh::client::status_text(&o),
            }),
        }
    }

    pub async fn probe(&mut self, process: &str, pid: u32) -> Result<Probe, BackendError> {
        let files = self.launched.iter().find(|l| l.pid == pid).and_then(|l| l.files.clone());
        let req = match self.shell {
            Shell::Posix => ExecRequest::posix(
                &linux::probe_script(process, files.as_ref().map(|f| (pid, f.status.as_str()))),
                &[],
                PROBE_TIMEOUT,
            ),
            Shell::PowerShell => {
                self.shell.script(&guest::windows::probe_script(process, Some(pid)), &[], PROBE_TIMEOUT)
            }
        };
        let o = self.client.exec(&req).await?;
        if o.exit_code != Some(0) {
            return Err(BackendError::Command {
                what: format!("probing for {process}"),
                detail: crate::ssh::client::status_text(&o),
            });
        }
        let p = linux::parse_probe(&o.stdout_text());
        let exited = p.gone.then(|| match p.exit {
            Some(code) => (code == 0, format!("exit status: {code}")),
            None => (false, "ended (no exit status recorded)".to_string()),
        });
        Ok(Probe { running: p.running > 0, exited })
    }

    pub async fn log_tail(&mut self, pid: u32) -> String {
        let Some(files) = self.launched.iter().find(|l| l.pid == pid).and_then(|l| l.files.clone()) else {
            return String::new();
        };
        let req = ExecRequest::posix(&linux::tail_script(&files.log, 4000), &[], PROBE_TIMEOUT);
        match self.client.exec(&req).await {
            Ok(o) => {
                let text = o.stdout_text();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(12)..].join("\n")
            }
            Err(e) => format!("(cannot read the log on the target: {e})"),
        }
    }

    /// Stop every launched app, fetch their logs into the results, remove the
    /// run's folder on the target. Never fails: problems are logged.
    pub async fn stop_all(&mut self, grace: Duration) {
        if self.launched.is_empty() {
            return;
        }
        let pids: Vec<u32> = self.launched.iter().map(|l| l.pid).collect();
        let (script, timeout) = match self.shell {
            Shell::Posix => (linux::stop_script(&pids, (grace.as_millis() / 100) as u32), grace + PROBE_TIMEOUT),
            Shell::PowerShell => (guest::windows::stop_script(&pids), PROBE_TIMEOUT),
        };
        let req = self.shell.script(&script, &[], timeout);
        if let Err(e) = self.client.exec(&req).await {
            tracing::warn!(error = %e, "could not stop the apps launched on the target");
        }
        for l in self.launched.drain(..) {
            let Some(files) = &l.files else { continue };
            let data = match self.client.download(self.shell, &files.log, LOG_FETCH_MAX).await {
                Ok(d) => d,
                Err(_) => {
                    let req = ExecRequest::posix(&linux::tail_script(&files.log, LOG_FETCH_MAX), &[], PROBE_TIMEOUT)
                        .with_caps(LOG_FETCH_MAX, 4096);
                    match self.client.exec(&req).await {
                        Ok(o) => o.stdout,
                        Err(e) => format!("(cannot fetch {}: {e})\n", files.log).into_bytes(),
                    }
                }
            };
            if let Err(e) = std::fs::write(&l.local_log, data) {
                tracing::warn!(log = %l.local_log.display(), error = %e, "cannot write the launch log");
            }
            tracing::debug!(pid = l.pid, command = %l.command, "stopped remote app");
        }
        if self.shell == Shell::Posix {
            let req = ExecRequest::posix(
                &format!("rm -rf {}", crate::scenario::template::shquote(&self.dir)),
                &[],
                PROBE_TIMEOUT,
            );
            let _ = self.client.exec(&req).await;
        }
    }
}

fn random_token() -> String {
    let mut b = [0u8; 6];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        b.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
