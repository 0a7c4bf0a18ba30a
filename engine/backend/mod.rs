//! Backends: how a target machine is prepared, reached and torn down.
//!
//! - `local-desktop`: a private TigerVNC Xvnc desktop with a window manager,
//!   started for the run; commands run locally inside it.
//! - `vnc`: an existing VNC server; commands only over SSH.
//!
//! Every backend yields a [`Machine`]: a VNC endpoint (with its password,
//! remembered for redaction) and, when the target can run commands,
//! [`commands::Commands`]: local ones inside the private desktop, or over
//! SSH when the inventory gives the target `ssh:` (either backend). Teardown
//! always runs, on failure and on Ctrl-C too.

pub mod commands;
pub mod local_desktop;
pub mod process;
pub mod remote;

use std::path::PathBuf;
use std::time::Duration;

use crate::inventory::{Backend, Target};
use crate::rfb::transport::Endpoint;
use crate::secrets::{SecretError, SecretStore};
use commands::Commands;

/// Why a target could not be prepared or used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("'{program}' is not installed{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    MissingProgram { program: String, hint: Option<String> },
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what} failed{}", if log_tail.is_empty() { String::new() } else { format!(":\n{log_tail}") })]
    Startup { what: String, log_tail: String },
    #[error("timed out after {:.1}s waiting for {what}", waited.as_secs_f64())]
    Timeout { what: String, waited: Duration },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Ssh(Box<crate::ssh::SshError>),
    #[error("{what}: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Session(String),
}

impl From<crate::ssh::SshError> for BackendError {
    fn from(e: crate::ssh::SshError) -> Self {
        BackendError::Ssh(Box::new(e))
    }
}

/// How to reach a machine's screen.
#[derive(Debug, Clone)]
pub struct VncAccess {
    pub endpoint: Endpoint,
    pub password: Option<String>,
    /// Encoding preference; `None` for the client's default (ZRLE first).
    pub encodings: Option<Vec<crate::rfb::Encoding>>,
}

/// Context for preparing a machine.
#[derive(Debug, Clone)]
pub struct StartContext {
    /// Where backend logs go (the run's `logs/`).
    pub logs: PathBuf,
    /// Working directory for local commands (the project root).
    pub cwd: PathBuf,
    pub secrets: SecretStore,
}

/// A prepared target: its screen and, when it can run commands, how.
pub struct Machine {
    display: Display,
    commands: Option<Commands>,
}

enum Display {
    LocalDesktop(Box<local_desktop::LocalDesktopSession>),
    Vnc(VncAccess),
}

impl Machine {
    /// Prepare the target: start what it needs and wait until it is usable
    /// (for SSH targets: until SSH answers, within the inventory's `ssh.wait`).
    pub async fn start(target: &Target, ctx: &StartContext) -> Result<Machine, BackendError> {
        let display = match &target.backend {
            Backend::LocalDesktop(cfg) => {
                Display::LocalDesktop(Box::new(local_desktop::LocalDesktopSession::start(cfg, ctx).await?))
            }
            Backend::Vnc(v) => {
                let password = match &v.password {
                    Some(src) => Some(ctx.secrets.read("vnc password", src)?),
                    None => None,
                };
                Display::Vnc(VncAccess {
                    endpoint: Endpoint::Tcp { host: v.host.clone(), port: v.port },
                    password,
                    encodings: None,
                })
            }
            Backend::Proxmox(_) => {
                return Err(BackendError::Session(format!(
                    "target '{}': backend: proxmox needs the websocket VNC transport, which this build lacks",
                    target.name
                )));
            }
        };
        let mut machine = Machine { display, commands: None };
        match machine.connect_commands(target, ctx).await {
            Ok(c) => {
                machine.commands = c;
                Ok(machine)
            }
            Err(e) => {
                machine.teardown().await;
                Err(e)
            }
        }
    }

    async fn connect_commands(
        &mut self,
        target: &Target,
        ctx: &StartContext,
    ) -> Result<Option<Commands>, BackendError> {
        let Some(ssh) = &target.ssh else {
            return Ok(match &mut self.display {
                Display::LocalDesktop(s) => s.take_commands().map(Commands::Local),
                Display::Vnc(_) => None,
            });
        };
        let client = crate::ssh::SshClient::wait_for(ssh, &ctx.secrets, ssh.wait).await?;
        // a private desktop knows its display; a VM's session is found on the target
        let session = match &self.display {
            Display::LocalDesktop(s) => {
                crate::inventory::SessionSpec::Env(vec![("DISPLAY".to_string(), format!(":{}", s.display()))])
            }
            Display::Vnc(_) => target.session.clone(),
        };
        let shell = crate::guest::Shell::for_family(&target.family);
        Ok(Some(Commands::Ssh(Box::new(remote::RemoteCommands::new(std::sync::Arc::new(client), shell, session)))))
    }

    pub fn vnc(&self) -> VncAccess {
        match &self.display {
            Display::LocalDesktop(s) => s.vnc(),
            Display::Vnc(v) => v.clone(),
        }
    }

    /// Command execution on the target, when it has any.
    pub fn commands(&mut self) -> Option<&mut Commands> {
        self.commands.as_mut()
    }

    /// How a person can look at the machine (VNC address and password, the
    /// desktop's DISPLAY). For the terminal only: contains the VNC password.
    pub fn access_info(&self) -> Vec<String> {
        let v = self.vnc();
        let pw = v.password.as_deref().map(|p| format!(", password {p}")).unwrap_or_default();
        let mut lines = vec![format!("VNC: {}{pw}", v.endpoint)];
        if let crate::rfb::Endpoint::Tcp { host, port } = &v.endpoint {
            lines.push(format!("  e.g. vncviewer {host}::{port}"));
        }
        if let Display::LocalDesktop(s) = &self.display {
            lines.push(format!("desktop: DISPLAY=:{}", s.display()));
        }
        lines
    }

    /// Stop everything the backend started (apps first, then the desktop).
    /// Never fails: problems are logged.
    pub async fn teardown(mut self) -> Vec<String> {
        if let Some(c) = self.commands.as_mut() {
            c.stop_all(Duration::from_secs(3)).await;
            if let Commands::Ssh(r) = c {
                r.client().close().await;
            }
        }
        match self.display {
            Display::LocalDesktop(s) => s.teardown().await,
            Display::Vnc(_) => Vec::new(),
        }
    }
}
