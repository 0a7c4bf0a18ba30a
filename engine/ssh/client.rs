//! The SSH client: one connection per target, reused by every command,
//! re-established once when it dropped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client::{self, AuthResult, Handle};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, MethodKind, Sig};

use crate::guest::Shell;
use crate::secrets::SecretStore;
use crate::ssh::exec::{self, Capped, ExecOutput, ExecRequest, KillOnTimeout, Stderr};
use crate::ssh::known_hosts::{self, HostKeyStatus};
use crate::ssh::{SshError, SshSettings};

/// Time allowed for authentication once the connection is up.
const AUTH_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for the kill command after a timeout and for the last messages.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// A verified, authenticated SSH connection to one target.
pub struct SshClient {
    settings: SshSettings,
    secrets: SecretStore,
    conn: tokio::sync::Mutex<Option<Arc<Handle<Verifier>>>>,
    /// How many times a connection was (re-)established.
    connects: Mutex<u32>,
    /// The server's key and why it was trusted (last connection).
    host_key: Mutex<String>,
}

impl std::fmt::Debug for SshClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshClient").field("target", &self.settings.describe()).finish()
    }
}

/// What the host key check decided (recorded by the handler, read after the handshake).
#[derive(Debug, Clone)]
enum Verdict {
    /// How the key was trusted ("known_hosts FILE:LINE", "pinned", "learned").
    Accepted(String),
    Unknown {
        offered: PublicKey,
    },
    Changed {
        offered: PublicKey,
        stored: String,
    },
    Revoked {
        offered: PublicKey,
        file: String,
        line: usize,
    },
    Certificate,
    LearnFailed {
        file: String,
        error: String,
    },
}

/// russh handler that verifies the server's host key.
pub struct Verifier {
    settings: SshSettings,
    verdict: Arc<Mutex<Option<Verdict>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let verdict = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => judge(&self.settings, key),
            PublicKeyOrCertificate::Certificate(_) => Verdict::Certificate,
        };
        let ok = matches!(verdict, Verdict::Accepted(_));
        if let Ok(mut v) = self.verdict.lock() {
            *v = Some(verdict);
        }
        Ok(ok)
    }
}

fn describe_key(key: &PublicKey) -> String {
    format!("{} {}", key.algorithm(), known_hosts::fingerprint(key))
}

fn judge(s: &SshSettings, key: &PublicKey) -> Verdict {
    if !s.host_keys.is_empty() {
        if s.host_keys.iter().any(|p| known_hosts::pin_matches(p, key)) {
            return Verdict::Accepted(format!("{}, pinned in the inventory", describe_key(key)));
        }
        return Verdict::Changed {
            offered: key.clone(),
            stored: format!("the inventory pins {}", s.host_keys.join(", ")),
        };
    }
    match known_hosts::check_files(&s.known_hosts, &s.host, s.port, key) {
        HostKeyStatus::Known { file, line } => {
            tracing::debug!(file = %file.display(), line, "host key found in known_hosts");
            Verdict::Accepted(format!("{}, {}:{line}", describe_key(key), file.display()))
        }
        HostKeyStatus::Revoked { file, line } => {
            Verdict::Revoked { offered: key.clone(), file: file.display().to_string(), line }
        }
        HostKeyStatus::Changed { stored } => {
            let lines: Vec<String> = stored.iter().map(|(f, l, k)| format!("{}:{l} holds {k}", f.display())).collect();
            Verdict::Changed { offered: key.clone(), stored: lines.join("; ") }
        }
        HostKeyStatus::Unknown if s.learn_host_key => {
            let Some(file) = s.known_hosts.first() else {
                return Verdict::LearnFailed { file: "(no known_hosts file)".into(), error: "nowhere to write".into() };
            };
            match known_hosts::learn(file, &s.host, s.port, key) {
                Ok(()) => {
                    tracing::warn!(
                        host = %known_hosts::host_name(&s.host, s.port),
                        key = %describe_key(key),
                        file = %file.display(),
                        "learned a new host key (learn_host_key: true)"
                    );
                    Verdict::Accepted(format!("{}, learned into {}", describe_key(key), file.display()))
                }
                Err(e) => Verdict::LearnFailed { file: file.display().to_string(), error: e.to_string() },
            }
        }
        HostKeyStatus::Unknown => Verdict::Unknown { offered: key.clone() },
    }
}

impl SshClient {
    /// Connect, verify the host key and log in.
    pub async fn connect(settings: &SshSettings, secrets: &SecretStore) -> Result<SshClient, SshError> {
        let c = SshClient {
            settings: settings.clone(),
            secrets: secrets.clone(),
            conn: tokio::sync::Mutex::new(None),
            connects: Mutex::new(0),
            host_key: Mutex::new(String::new()),
        };
        let h = c.open().await?;
        *c.conn.lock().await = Some(Arc::new(h));
        Ok(c)
    }

    /// Connect, retrying while the target comes up (closed port, a server
    /// that hangs up during start-up) until `budget` runs out. Host key and
    /// authentication problems fail at once.
    pub async fn wait_for(
        settings: &SshSettings,
        secrets: &SecretStore,
        budget: Duration,
    ) -> Result<SshClient, SshError> {
        let start = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match SshClient::connect(settings, secrets).await {
                Ok(c) => {
                    tracing::debug!(attempts, ms = start.elapsed().as_millis() as u64, "SSH is up");
                    return Ok(c);
                }
                Err(e) if e.is_transient() && start.elapsed() < budget => {
                    tracing::debug!(attempts, error = %e, "SSH not up yet");
                    let left = budget.saturating_sub(start.elapsed());
                    tokio::time::sleep(Duration::from_millis(500).min(left)).await;
                }
                Err(e) if e.is_transient() => {
                    return Err(SshError::Timeout {
                        what: format!("waiting for SSH on {} ({attempts} attempts; last: {e})", settings.describe()),
                        after: start.elapsed(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn settings(&self) -> &SshSettings {
        &self.settings
    }

    /// The server's host key and why it was trusted, e.g.
    /// `ssh-ed25519 SHA256:..., /home/me/.ssh/known_hosts:3`.
    pub fn host_key(&self) -> String {
        self.host_key.lock().map(|k| k.clone()).unwrap_or_default()
    }

    /// How many connections were made so far (1 + reconnects).
    pub fn connections_made(&self) -> u32 {
        self.connects.lock().map(|c| *c).unwrap_or(0)
    }

    fn host(&self) -> String {
        known_hosts::host_name(&self.settings.host, self.settings.port)
    }

    async fn open(&self) -> Result<Handle<Verifier>, SshError> {
        let s = &self.settings;
        let config = Arc::new(client::Config {
            // a silent long command must not end the connection
            inactivity_timeout: None,
            keepalive_interval: Some(s.keepalive),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        });
        let verdict = Arc::new(Mutex::new(None));
        let handler = Verifier { settings: s.clone(), verdict: verdict.clone() };
        let connecting = client::connect(config, (s.host.as_str(), s.port), handler);
        let mut handle = match tokio::time::timeout(s.connect_timeout, connecting).await {
            Err(_) => {
                return Err(SshError::Timeout {
                    what: format!("connecting to {}", s.describe()),
                    after: s.connect_timeout,
                });
            }
            Ok(Err(e)) => {
                let v = verdict.lock().ok().and_then(|mut v| v.take());
                return Err(self.connect_error(e, v));
            }
            Ok(Ok(h)) => h,
        };
        match tokio::time::timeout(AUTH_TIMEOUT, self.authenticate(&mut handle)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(SshError::Timeout { what: format!("logging in to {}", s.describe()), after: AUTH_TIMEOUT });
            }
        }
        if let Ok(mut n) = self.connects.lock() {
            *n += 1;
        }
        if let (Ok(mut k), Some(Verdict::Accepted(how))) =
            (self.host_key.lock(), verdict.lock().ok().and_then(|v| v.clone()))
        {
            *k = how;
        }
        tracing::debug!(target = %s.describe(), "SSH connected");
        Ok(handle)
    }

    fn connect_error(&self, e: russh::Error, verdict: Option<Verdict>) -> SshError {
        let s = &self.settings;
        let host = self.host();
        match verdict {
            Some(Verdict::Unknown { offered }) => {
                let files: Vec<String> = s.known_hosts.iter().map(|f| f.display().to_string()).collect();
                SshError::HostKeyUnknown {
                    host,
                    bare_host: s.host.clone(),
                    port: s.port,
                    key: describe_key(&offered),
                    fingerprint: known_hosts::fingerprint(&offered),
                    files: if files.is_empty() { "(no known_hosts files)".into() } else { files.join(", ") },
                    first_file: files.first().cloned().unwrap_or_else(|| "~/.ssh/known_hosts".into()),
                }
            }
            Some(Verdict::Changed { offered, stored }) => {
                SshError::HostKeyChanged { name: host.clone(), host, offered: describe_key(&offered), stored }
            }
            Some(Verdict::Revoked { offered, file, line }) => {
                SshError::HostKeyRevoked { host, offered: describe_key(&offered), file, line }
            }
            Some(Verdict::Certificate) => SshError::HostCertificate { host },
            Some(Verdict::LearnFailed { file, error }) => {
                SshError::Learn { host, file, source: std::io::Error::other(error) }
            }
            Some(Verdict::Accepted(_)) | None => match e {
                russh::Error::IO(io) => SshError::Connect { addr: format!("{}:{}", s.host, s.port), source: io },
                other => SshError::Protocol { host, message: other.to_string() },
            },
        }
    }

    async fn authenticate(&self, h: &mut Handle<Verifier>) -> Result<(), SshError> {
        let s = &self.settings;
        let host = self.host();
        let proto = |e: russh::Error| SshError::Protocol { host: host.clone(), message: e.to_string() };
        let mut tried: Vec<String> = Vec::new();
        let mut accepts = String::from("(not asked)");
        let names = |m: &russh::MethodSet| -> String {
            let v: Vec<&str> = m.iter().map(method_name).collect();
            if v.is_empty() { "nothing more".into() } else { v.join(", ") }
        };
        if let Some(path) = &s.key {
            let passphrase = match &s.key_passphrase {
                Some(src) => Some(self.secrets.read("ssh key passphrase", src)?),
                None => None,
            };
            let key = russh::keys::load_secret_key(path, passphrase.as_deref()).map_err(|e| SshError::Key {
                path: path.display().to_string(),
                reason: match e {
                    russh::keys::Error::KeyIsEncrypted if passphrase.is_none() => {
                        "it is encrypted: give its passphrase with ssh.key_passphrase ({env: VAR} or {file: PATH})"
                            .to_string()
                    }
                    russh::keys::Error::KeyIsEncrypted => "the passphrase is wrong".to_string(),
                    russh::keys::Error::IO(io) => io.to_string(),
                    other => format!("{other} (wrong passphrase, or not an OpenSSH/PEM private key?)"),
                },
            })?;
            let hash = h.best_supported_rsa_hash().await.map_err(proto)?.flatten();
            match h.authenticate_publickey(&s.user, PrivateKeyWithHashAlg::new(Arc::new(key), hash)).await {
                Ok(AuthResult::Success) => return Ok(()),
                Ok(AuthResult::Failure { remaining_methods, .. }) => accepts = names(&remaining_methods),
                Err(e) => return Err(proto(e)),
            }
            tried.push(format!("key {}", path.display()));
        }
        if s.agent {
            let (connected, at) = match &s.agent_socket {
                Some(p) => (AgentClient::connect_uds(p).await.map(|a| a.dynamic()), p.display().to_string()),
                None => (AgentClient::connect_env().await.map(|a| a.dynamic()), "$SSH_AUTH_SOCK".to_string()),
            };
            let mut agent = connected.map_err(|e| SshError::Agent {
                what: "agent".into(),
                reason: format!("the agent at {at} cannot be reached: {e}"),
            })?;
            let ids = agent.request_identities().await.map_err(|e| SshError::Agent {
                what: "agent".into(),
                reason: format!("the agent did not list its keys: {e}"),
            })?;
            let mut n = 0;
            for id in ids {
                let AgentIdentity::PublicKey { key, .. } = id else { continue };
                n += 1;
                let hash = h.best_supported_rsa_hash().await.map_err(proto)?.flatten();
                match h.authenticate_publickey_with(&s.user, key, hash, &mut agent).await {
                    Ok(AuthResult::Success) => return Ok(()),
                    Ok(AuthResult::Failure { remaining_methods, .. }) => accepts = names(&remaining_methods),
                    Err(e) => tracing::debug!(error = %e, "agent could not sign"),
                }
            }
            tried.push(format!("agent ({n} key{})", if n == 1 { "" } else { "s" }));
        }
        if let Some(src) = &s.password {
            let pw = self.secrets.read("ssh password", src)?;
            match h.authenticate_password(&s.user, pw).await {
                Ok(AuthResult::Success) => return Ok(()),
                Ok(AuthResult::Failure { remaining_methods, .. }) => accepts = names(&remaining_methods),
                Err(e) => return Err(proto(e)),
            }
            tried.push("password".into());
        }
        Err(SshError::Auth { user: s.user.clone(), host, tried: tried.join(", "), accepts })
    }

    /// The live connection, connecting when there is none or it closed.
    async fn handle(&self, fresh: bool) -> Result<Arc<Handle<Verifier>>, SshError> {
        let mut conn = self.conn.lock().await;
        if let Some(h) = conn.as_ref()
            && !fresh
            && !h.is_closed()
        {
            return Ok(h.clone());
        }
        if conn.is_some() {
            tracing::info!(target = %self.settings.describe(), "SSH connection dropped; reconnecting");
        }
        *conn = None;
        let h = Arc::new(self.open().await?);
        *conn = Some(h.clone());
        Ok(h)
    }

    /// A new session channel; reconnects once when the connection is gone.
    async fn channel(&self) -> Result<russh::Channel<client::Msg>, SshError> {
        let h = self.handle(false).await?;
        match h.channel_open_session().await {
            Ok(c) => Ok(c),
            Err(e) => {
                tracing::debug!(error = %e, "cannot open a channel; reconnecting once");
                let h = self.handle(true).await?;
                h.channel_open_session()
                    .await
                    .map_err(|e| SshError::Dropped { host: self.host(), message: e.to_string() })
            }
        }
    }

    /// Run one command. Output is captured up to the request's caps; a
    /// command that outlives its time limit is killed on the target.
    pub async fn exec(&self, req: &ExecRequest) -> Result<ExecOutput, SshError> {
        let start = Instant::now();
        let mut ch = self.channel().await?;
        let dropped = |e: russh::Error| SshError::Dropped { host: self.host(), message: e.to_string() };
        ch.exec(true, req.command.as_bytes()).await.map_err(dropped)?;
        let writer = {
            let mut w = ch.make_writer();
            let data = req.stdin.clone().unwrap_or_default();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                if !data.is_empty() {
                    w.write_all(&data).await?;
                }
                w.shutdown().await
            })
        };
        let mut out = Capped::new(req.stdout_cap);
        let mut err = Stderr::new(req.stderr_cap, req.kill != KillOnTimeout::None);
        let mut result = ExecOutput::default();
        let deadline = tokio::time::Instant::now() + req.timeout;
        let mut closed = false;
        loop {
            match tokio::time::timeout_at(deadline, ch.wait()).await {
                Ok(Some(msg)) => apply(msg, &mut out, &mut err, &mut result),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => {
                    result.timed_out = true;
                    break;
                }
            }
        }
        if result.timed_out {
            let pid = err.pid;
            tracing::info!(what = %req.what, ?pid, "remote command timed out; killing it");
            self.kill(req.kill, pid).await;
            let _ = ch.signal(Sig::KILL).await;
            let _ = ch.eof().await;
            // collect what the end of the command says (its exit signal), briefly
            let grace = tokio::time::Instant::now() + Duration::from_secs(2);
            while let Ok(Some(msg)) = tokio::time::timeout_at(grace, ch.wait()).await {
                apply(msg, &mut out, &mut err, &mut result);
            }
            let _ = ch.close().await;
        }
        writer.abort();
        err.finish();
        if !closed && !result.timed_out {
            return Err(SshError::Dropped { host: self.host(), message: "the channel ended early".into() });
        }
        if result.exit_code.is_none() && result.signal.is_none() && !result.timed_out {
            // the channel closed without an exit status: the connection went away
            if self.conn.lock().await.as_ref().is_none_or(|h| h.is_closed()) {
                return Err(SshError::Dropped { host: self.host(), message: format!("while running '{}'", req.what) });
            }
        }
        result.pid = err.pid;
        result.stdout = out.data;
        result.stdout_dropped = out.dropped;
        result.stderr = err.rest.data;
        result.stderr_dropped = err.rest.dropped;
        result.duration = start.elapsed();
        Ok(result)
    }

    async fn kill(&self, how: KillOnTimeout, pid: Option<u32>) {
        let Some(pid) = pid else { return };
        let command = match how {
            KillOnTimeout::PosixGroup => exec::posix_kill_command(pid),
            KillOnTimeout::WindowsTree => exec::windows_kill_command(pid),
            KillOnTimeout::None => return,
        };
        match Box::pin(self.exec(&ExecRequest::raw(command, KILL_TIMEOUT))).await {
            Ok(o) => tracing::debug!(pid, exit = ?o.exit_code, "killed the timed-out command"),
            Err(e) => tracing::warn!(pid, error = %e, "could not kill the timed-out remote command"),
        }
    }

    /// Write `data` to `path` on the target.
    pub async fn upload(&self, shell: Shell, path: &str, data: &[u8]) -> Result<(), SshError> {
        let req = shell.upload_request(path, Duration::from_secs(300)).with_stdin(data.to_vec());
        let o = self.exec(&req).await?;
        if !o.success() {
            return Err(SshError::Remote {
                what: format!("uploading {} bytes to {path}", data.len()),
                message: status_text(&o),
            });
        }
        Ok(())
    }

    /// Read `path` from the target; fails when it is larger than `max` bytes.
    pub async fn download(&self, shell: Shell, path: &str, max: usize) -> Result<Vec<u8>, SshError> {
        let req = shell.download_request(path, Duration::from_secs(300)).with_caps(max, 16 * 1024);
        let o = self.exec(&req).await?;
        if !o.success() {
            return Err(SshError::Remote { what: format!("downloading {path}"), message: status_text(&o) });
        }
        if o.stdout_dropped > 0 {
            return Err(SshError::Remote {
                what: format!("downloading {path}"),
                message: format!("the file is larger than {max} bytes"),
            });
        }
        Ok(o.stdout)
    }

    /// Close the connection politely.
    pub async fn close(&self) {
        if let Some(h) = self.conn.lock().await.take() {
            let _ = h.disconnect(russh::Disconnect::ByApplication, "", "en").await;
        }
    }
}

fn apply(msg: ChannelMsg, out: &mut Capped, err: &mut Stderr, r: &mut ExecOutput) {
    match msg {
        ChannelMsg::Data { data } => out.push(&data),
        ChannelMsg::ExtendedData { data, ext: 1 } => err.push(&data),
        ChannelMsg::ExitStatus { exit_status } => r.exit_code = Some(exit_status),
        ChannelMsg::ExitSignal { signal_name, .. } => r.signal = Some(sig_name(&signal_name)),
        _ => {}
    }
}

fn sig_name(s: &Sig) -> String {
    match s {
        Sig::ABRT => "ABRT".into(),
        Sig::ALRM => "ALRM".into(),
        Sig::FPE => "FPE".into(),
        Sig::HUP => "HUP".into(),
        Sig::ILL => "ILL".into(),
        Sig::INT => "INT".into(),
        Sig::KILL => "KILL".into(),
        Sig::PIPE => "PIPE".into(),
        Sig::QUIT => "QUIT".into(),
        Sig::SEGV => "SEGV".into(),
        Sig::TERM => "TERM".into(),
        Sig::USR1 => "USR1".into(),
        Sig::Custom(c) => c.clone(),
    }
}

fn method_name(m: &MethodKind) -> &'static str {
    match m {
        MethodKind::None => "none",
        MethodKind::Password => "password",
        MethodKind::PublicKey => "publickey",
        MethodKind::HostBased => "hostbased",
        MethodKind::KeyboardInteractive => "keyboard-interactive",
        _ => "other",
    }
}

/// "exit 2: <stderr>" for error messages.
pub fn status_text(o: &ExecOutput) -> String {
    let how = match (&o.exit_code, &o.signal, o.timed_out) {
        (_, _, true) => "timed out".to_string(),
        (Some(c), _, _) => format!("exit {c}"),
        (None, Some(s), _) => format!("killed by SIG{s}"),
        _ => "no exit status".to_string(),
    };
    let e = o.stderr_text();
    let e = e.trim();
    if e.is_empty() { how } else { format!("{how}: {}", e.chars().take(500).collect::<String>()) }
}
