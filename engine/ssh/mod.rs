//! SSH to the target machine (russh): verified host keys, key/agent/password
//! authentication, commands with time limits that also end the remote
//! command, exit codes and signals, capped output, keepalives, one reconnect
//! on a dropped connection, connection reuse, waiting for SSH with a budget,
//! and file upload/download.
//!
//! Invariants:
//! - A server key is accepted only when known_hosts holds it or it matches a
//!   fingerprint pinned in the inventory; an unknown key is added only with
//!   `learn_host_key: true`; a changed key is always refused.
//! - Passwords and passphrases come from the [`SecretStore`](crate::secrets::SecretStore)
//!   (so they are masked everywhere) and are never logged.
//! - A command that runs out of time is killed on the target (its whole
//!   process group on POSIX, its process tree on Windows), not only abandoned.
//! - Channel messages are read until the channel ends: exit status and output
//!   arrive in any order.

pub mod client;
pub mod exec;
pub mod known_hosts;

use std::path::PathBuf;
use std::time::Duration;

pub use client::SshClient;
pub use exec::{ExecOutput, ExecRequest, KillOnTimeout};

use crate::secrets::{SecretError, SecretSource};

/// How to reach and log in to a target over SSH (from the inventory's `ssh:`).
#[derive(Debug, Clone, PartialEq)]
pub struct SshSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// A private key file (OpenSSH or PEM format).
    pub key: Option<PathBuf>,
    /// Passphrase of `key`, when it is encrypted.
    pub key_passphrase: Option<SecretSource>,
    pub password: Option<SecretSource>,
    /// Try the keys of an SSH agent...
    pub agent: bool,
    /// ...at this socket (default `$SSH_AUTH_SOCK`).
    pub agent_socket: Option<PathBuf>,
    /// Files to verify the host key against (default `~/.ssh/known_hosts`).
    pub known_hosts: Vec<PathBuf>,
    /// Pinned host keys (`SHA256:...` fingerprints or `ALGO BASE64` keys). When
    /// given, only these are accepted and known_hosts is not consulted.
    pub host_keys: Vec<String>,
    /// Add an unknown host key to the first known_hosts file (trust on first use).
    pub learn_host_key: bool,
    pub connect_timeout: Duration,
    /// Budget for the target's SSH to come up when a run starts.
    pub wait: Duration,
    /// Keepalive interval (a dead peer is noticed after 3 unanswered ones).
    pub keepalive: Duration,
}

impl SshSettings {
    /// `user@host:port`, for messages.
    pub fn describe(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// Settings with defaults for everything but the address and user.
    pub fn new(host: &str, port: u16, user: &str) -> SshSettings {
        SshSettings {
            host: host.to_string(),
            port,
            user: user.to_string(),
            key: None,
            key_passphrase: None,
            password: None,
            agent: false,
            agent_socket: None,
            known_hosts: default_known_hosts(),
            host_keys: Vec::new(),
            learn_host_key: false,
            connect_timeout: Duration::from_secs(10),
            wait: Duration::from_secs(120),
            keepalive: Duration::from_secs(15),
        }
    }
}

/// `~/.ssh/known_hosts`.
pub fn default_known_hosts() -> Vec<PathBuf> {
    std::env::var_os("HOME").map(|h| vec![PathBuf::from(h).join(".ssh/known_hosts")]).unwrap_or_default()
}

/// Why an SSH operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("timed out after {:.1}s {what}", after.as_secs_f64())]
    Timeout { what: String, after: Duration },
    #[error(
        "the host key of {host} is not known: the server offered {key}, which is in none of {files}.\n\
         Check it on the target (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then either add it \
         (ssh-keyscan -p {port} {bare_host} >> {first_file}), pin it in the inventory (ssh.host_key: \"{fingerprint}\"), \
         or set ssh.learn_host_key: true to trust it on first use"
    )]
    HostKeyUnknown {
        host: String,
        bare_host: String,
        port: u16,
        key: String,
        fingerprint: String,
        files: String,
        first_file: String,
    },
    #[error(
        "HOST KEY CHANGED for {host}: the server offered {offered}, but {stored}.\n\
         This may be a reinstalled VM or someone in the middle; smoke refuses to connect. If the change is expected, \
         remove the old entry (ssh-keygen -R '{name}' -f FILE) or update the pinned ssh.host_key"
    )]
    HostKeyChanged { host: String, name: String, offered: String, stored: String },
    #[error("the host key of {host} ({offered}) is revoked in {file}:{line}; smoke refuses to connect")]
    HostKeyRevoked { host: String, offered: String, file: String, line: usize },
    #[error("{host} offered a host certificate; smoke accepts plain host keys only")]
    HostCertificate { host: String },
    #[error("cannot add the host key of {host} to {file}: {source}")]
    Learn { host: String, file: String, source: std::io::Error },
    #[error("cannot use the key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("authentication as {user} on {host} failed (tried: {tried}); the server accepts: {accepts}")]
    Auth { user: String, host: String, tried: String, accepts: String },
    #[error("ssh.{what} is configured but {reason}")]
    Agent { what: String, reason: String },
    #[error("SSH to {host}: {message}")]
    Protocol { host: String, message: String },
    #[error("the SSH connection to {host} dropped: {message}")]
    Dropped { host: String, message: String },
    #[error("{what}: {message}")]
    Remote { what: String, message: String },
    #[error(transparent)]
    Secret(#[from] SecretError),
}

impl SshError {
    /// Worth retrying while a machine boots (the port is closed, the server
    /// hangs up during start-up); never for key or authentication problems.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SshError::Connect { .. } | SshError::Timeout { .. } | SshError::Protocol { .. } | SshError::Dropped { .. }
        )
    }
}
