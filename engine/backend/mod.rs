//! Backends: how a target machine is prepared, reached and torn down.
//!
//! - `local-desktop`: a private TigerVNC Xvnc desktop with a window manager,
//!   started for the run; commands run locally inside it.
//! - `vnc`: an existing VNC server; no command execution.
//!
//! Every backend yields a [`Machine`]: a VNC endpoint (with its password,
//! remembered for redaction) and, when the target can run commands, a
//! [`commands::LocalCommands`]. Teardown always runs, on failure and on Ctrl-C too.

pub mod commands;
pub mod local_desktop;
pub mod process;

use std::path::PathBuf;
use std::time::Duration;

use crate::inventory::{Backend, Target};
use crate::rfb::transport::Endpoint;
use crate::secrets::{SecretError, SecretStore};

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

/// A prepared target.
pub enum Machine {
    LocalDesktop(Box<local_desktop::LocalDesktopSession>),
    Vnc(VncAccess),
}

impl Machine {
    /// Prepare the target: start what it needs and wait until it is usable.
    pub async fn start(target: &Target, ctx: &StartContext) -> Result<Machine, BackendError> {
        match &target.backend {
            Backend::LocalDesktop(cfg) => {
                Ok(Machine::LocalDesktop(Box::new(local_desktop::LocalDesktopSession::start(cfg, ctx).await?)))
            }
            Backend::Vnc(v) => {
                let password = match &v.password {
                    Some(src) => Some(ctx.secrets.read("vnc password", src)?),
                    None => None,
                };
                Ok(Machine::Vnc(VncAccess {
                    endpoint: Endpoint::Tcp { host: v.host.clone(), port: v.port },
                    password,
                    encodings: None,
                }))
            }
        }
    }

    pub fn vnc(&self) -> VncAccess {
        match self {
            Machine::LocalDesktop(s) => s.vnc(),
            Machine::Vnc(v) => v.clone(),
        }
    }

    /// Command execution on the target, when it has any.
    pub fn commands(&mut self) -> Option<&mut commands::LocalCommands> {
        match self {
            Machine::LocalDesktop(s) => Some(s.commands()),
            Machine::Vnc(_) => None,
        }
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
        if let Machine::LocalDesktop(s) = self {
            lines.push(format!("desktop: DISPLAY=:{}", s.display()));
        }
        lines
    }

    /// Stop everything the backend started. Never fails: problems are logged.
    pub async fn teardown(self) -> Vec<String> {
        match self {
            Machine::LocalDesktop(s) => s.teardown().await,
            Machine::Vnc(_) => Vec::new(),
        }
    }
}
