//! Backends: how a target machine is prepared, reached and torn down.
//!
//! - `local-desktop`: a private TigerVNC Xvnc desktop with a window manager,
//!   started for the run; commands run locally inside it.
//! - `vnc`: an existing VNC server; commands only over SSH.
//! - `qemu`: a local QEMU VM ([`crate::vm::qemu`]) started for the run and
//!   torn down with a powerdown/SIGTERM/SIGKILL ladder; commands over SSH
//!   through a forwarded loopback port.
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
    #[error(transparent)]
    Vm(Box<crate::vm::VmError>),
}

impl From<crate::vm::VmError> for BackendError {
    fn from(e: crate::vm::VmError) -> Self {
        BackendError::Vm(Box::new(e))
    }
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
    /// VeNCrypt Plain username.
    pub username: Option<String>,
    /// Certificate checks for VeNCrypt X509 subtypes.
    pub tls: crate::rfb::TlsSettings,
}

impl VncAccess {
    /// An access without VeNCrypt settings.
    pub fn plain(endpoint: Endpoint, password: Option<String>) -> VncAccess {
        VncAccess { endpoint, password, encodings: None, username: None, tls: Default::default() }
    }

    /// Connection options for this access (`timeout` per connect/handshake).
    pub fn connect_options(&self, timeout: Duration) -> crate::rfb::ConnectOptions {
        let mut opts = crate::rfb::ConnectOptions {
            password: self.password.clone(),
            timeout,
            username: self.username.clone(),
            tls: self.tls.clone(),
            ..Default::default()
        };
        if let Some(e) = &self.encodings {
            opts.encodings = e.clone();
        }
        opts
    }
}

/// Context for preparing a machine.
#[derive(Debug, Clone)]
pub struct StartContext {
    /// Where backend logs go (the run's `logs/`).
    pub logs: PathBuf,
    /// Working directory for local commands (the project root).
    pub cwd: PathBuf,
    pub secrets: SecretStore,
    /// VM targets: lock the VM (and its GPU) before anything changes it,
    /// held until teardown ends; `None` takes no locks.
    pub lock: Option<crate::vm::lock::LockSettings>,
    /// Local QEMU VMs: where the disk holding the checkpoints lives (per
    /// run, kept for a later `--from-checkpoint`, or resumed from).
    pub vm_disk: crate::vm::qemu::InstanceDisk,
}

/// A prepared target: its screen and, when it can run commands, how.
pub struct Machine {
    display: Display,
    commands: Option<Commands>,
    /// The VM's locks; released after teardown.
    locks: Vec<crate::vm::lock::LockGuard>,
}

enum Display {
    LocalDesktop(Box<local_desktop::LocalDesktopSession>),
    Vnc(VncAccess),
    /// A VM started for the run, and how its screen was reached at start.
    /// (In a mutex only so that a `Machine` is `Sync`; `&mut` access never locks.)
    Vm(Box<std::sync::Mutex<Box<dyn crate::vm::VmBackend>>>, VncAccess),
}

/// Take the VM's (and its GPU's) locks for the whole run, when the run asks
/// for locking; they are released when the machine is dropped.
/// (`keys` come from `lock::keys_for`, taken before any await: a backend is
/// `Send` but not `Sync`.)
async fn vm_locks(
    keys: Vec<crate::vm::lock::LockKey>,
    ctx: &StartContext,
) -> Result<Vec<crate::vm::lock::LockGuard>, BackendError> {
    match &ctx.lock {
        Some(l) => Ok(crate::vm::lock::acquire_all(&l.dir, &keys, &l.purpose, l.timeout)
            .await
            .map_err(crate::vm::VmError::from)?),
        None => Ok(Vec::new()),
    }
}

/// Budget for a started VM's VNC server to answer.
const VM_VNC_READY: Duration = Duration::from_secs(30);

impl Machine {
    /// Prepare the target: start what it needs and wait until it is usable
    /// (for SSH targets: until SSH answers, within the inventory's `ssh.wait`).
    pub async fn start(target: &Target, ctx: &StartContext) -> Result<Machine, BackendError> {
        let display = match &target.backend {
            Backend::LocalDesktop(cfg) => (
                Display::LocalDesktop(Box::new(local_desktop::LocalDesktopSession::start(cfg, ctx).await?)),
                Vec::new(),
            ),
            Backend::Vnc(v) => {
                let password = match &v.password {
                    Some(src) => Some(ctx.secrets.read("vnc password", src)?),
                    None => None,
                };
                let access = VncAccess {
                    endpoint: v.endpoint.clone(),
                    password,
                    encodings: None,
                    username: v.username.clone(),
                    tls: v.tls.clone(),
                };
                (Display::Vnc(access), Vec::new())
            }
            Backend::Proxmox(settings) => {
                let mut vm = crate::vm::proxmox::ProxmoxVm::new(&target.name, settings.clone(), ctx.secrets.clone());
                let mut locks = vm_locks(crate::vm::lock::keys_for(&vm), ctx).await?;
                if let Err(e) = crate::vm::VmBackend::prepare(&mut vm).await {
                    vm.teardown_after_failure().await;
                    return Err(e.into());
                }
                // the config names the devices passed through: they are locked before the VM starts
                let gpus: Vec<_> = crate::vm::lock::keys_for(&vm)
                    .into_iter()
                    .filter(|k| matches!(k, crate::vm::lock::LockKey::Gpu { .. }))
                    .collect();
                match vm_locks(gpus, ctx).await {
                    Ok(more) => locks.extend(more),
                    Err(e) => {
                        vm.teardown_after_failure().await;
                        return Err(e);
                    }
                }
                let access = vm.start_prepared().await?;
                (Display::Vm(Box::new(std::sync::Mutex::new(Box::new(vm))), access), locks)
            }
            Backend::Qemu(settings) => {
                let mut settings = settings.clone();
                settings.resolve(&ctx.cwd);
                let vm = Box::new(
                    crate::vm::qemu::QemuVm::new(&target.name, settings, &ctx.logs)
                        .with_instance_disk(ctx.vm_disk.clone()),
                );
                let locks = vm_locks(crate::vm::lock::keys_for(vm.as_ref()), ctx).await?;
                let (vm, access) = start_vm(vm, ctx).await?;
                (Display::Vm(Box::new(std::sync::Mutex::new(vm)), access), locks)
            }
        };
        let (display, locks) = display;
        let mut machine = Machine { display, commands: None, locks };
        match machine.connect_commands(target, ctx).await {
            Ok(c) => {
                machine.commands = c;
                // a Proxmox proxy waits only 10 s for its connection: waiting for SSH outlasts it
                if target.ssh.is_some()
                    && matches!(target.backend, Backend::Proxmox(_))
                    && let Display::Vm(vm, access) = &mut machine.display
                {
                    match vm.get_mut().unwrap_or_else(|p| p.into_inner()).vnc().await {
                        Ok(fresh) => *access = fresh,
                        Err(e) => {
                            machine.teardown().await;
                            return Err(e.into());
                        }
                    }
                }
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
                Display::Vnc(_) | Display::Vm(..) => None,
            });
        };
        let mut ssh = ssh.clone();
        if let Display::Vm(vm, _) = &mut self.display
            && ssh.host.is_empty()
        {
            let vm = vm.get_mut().unwrap_or_else(|p| p.into_inner());
            let Some((host, port)) = vm.ssh_endpoint() else {
                return Err(BackendError::Session(format!(
                    "target '{}' has ssh: but its VM forwards no SSH port (set ssh_forward: true)",
                    target.name
                )));
            };
            (ssh.host, ssh.port) = (host, port);
        }
        let client = crate::ssh::SshClient::wait_for(&ssh, &ctx.secrets, ssh.wait).await?;
        // a private desktop knows its display; a VM's session is found on the target
        let session = match &self.display {
            Display::LocalDesktop(s) => {
                crate::inventory::SessionSpec::Env(vec![("DISPLAY".to_string(), format!(":{}", s.display()))])
            }
            Display::Vnc(_) | Display::Vm(..) => target.session.clone(),
        };
        let shell = crate::guest::Shell::for_family(&target.family);
        Ok(Some(Commands::Ssh(Box::new(remote::RemoteCommands::new(std::sync::Arc::new(client), shell, session)))))
    }

    pub fn vnc(&self) -> VncAccess {
        match &self.display {
            Display::LocalDesktop(s) => s.vnc(),
            Display::Vnc(v) | Display::Vm(_, v) => v.clone(),
        }
    }

    /// What a VNC client asks for a new access when it reconnects, for
    /// targets whose access admits one connection (Proxmox VE).
    pub fn vnc_renewal(&self) -> Option<std::sync::Arc<dyn crate::rfb::AccessRenewal>> {
        match &self.display {
            Display::Vm(vm, _) => vm.lock().unwrap_or_else(|p| p.into_inner()).vnc_renewal(),
            _ => None,
        }
    }

    /// The VM behind the target, for VM-only steps (snapshots, serial console).
    pub fn vm(&mut self) -> Option<&mut dyn crate::vm::VmBackend> {
        match &mut self.display {
            Display::Vm(vm, _) => Some(vm.get_mut().unwrap_or_else(|p| p.into_inner()).as_mut()),
            _ => None,
        }
    }

    /// Command execution on the target, when it has any.
    pub fn commands(&mut self) -> Option<&mut Commands> {
        self.commands.as_mut()
    }

    /// Commands and the VM at once (the runner uses both).
    pub fn parts(&mut self) -> (Option<&mut Commands>, Option<&mut (dyn crate::vm::VmBackend + '_)>) {
        let vm = match &mut self.display {
            Display::Vm(vm, _) => {
                let vm: &mut (dyn crate::vm::VmBackend + '_) = vm.get_mut().unwrap_or_else(|p| p.into_inner()).as_mut();
                Some(vm)
            }
            _ => None,
        };
        (self.commands.as_mut(), vm)
    }

    /// How the machine's locks were taken (waits, recovered stale locks).
    pub fn locks(&self) -> &[crate::vm::lock::LockGuard] {
        &self.locks
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
        let notes = match self.display {
            Display::LocalDesktop(s) => s.teardown().await,
            Display::Vnc(_) => Vec::new(),
            Display::Vm(vm, _) => {
                let mut vm = vm.into_inner().unwrap_or_else(|p| p.into_inner());
                teardown_notes(vm.teardown().await)
            }
        };
        // the VM is down: the next run may have it
        drop(self.locks);
        notes
    }
}

/// Prepare and start a VM and wait until its VNC server answers; on failure
/// the VM is torn down before the error returns.
async fn start_vm(
    mut vm: Box<dyn crate::vm::VmBackend>,
    ctx: &StartContext,
) -> Result<(Box<dyn crate::vm::VmBackend>, VncAccess), BackendError> {
    let started = std::time::Instant::now();
    let result = async {
        for w in vm.prepare().await? {
            tracing::warn!("{w}");
        }
        vm.start().await?;
        let access = vm.vnc().await?;
        if let Some(p) = &access.password {
            ctx.secrets.remember(p);
        }
        wait_vnc_banner(&access.endpoint, VM_VNC_READY).await?;
        Ok::<_, BackendError>(access)
    }
    .await;
    match result {
        Ok(access) => {
            tracing::info!("{} VM up, VNC answers after {:.2}s", vm.kind(), started.elapsed().as_secs_f64());
            Ok((vm, access))
        }
        Err(e) => {
            for note in teardown_notes(vm.teardown().await) {
                tracing::info!("{note}");
            }
            Err(e)
        }
    }
}

fn teardown_notes(report: crate::vm::TeardownReport) -> Vec<String> {
    let mut notes = vec![format!("VM: {} after {:.1}s", report.path, report.elapsed.as_secs_f64())];
    notes.extend(report.steps.into_iter().map(|s| format!("  {s}")));
    notes.extend(report.errors.into_iter().map(|e| format!("  error: {e}")));
    notes
}

/// Wait until a VNC server sends its `RFB xxx.yyy` version (then hang up).
async fn wait_vnc_banner(endpoint: &Endpoint, budget: Duration) -> Result<(), BackendError> {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    loop {
        let attempt = async {
            let mut banner = [0u8; 12];
            let mut stream = crate::rfb::transport::connect(endpoint, Duration::from_secs(2))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            stream.read_exact(&mut banner).await?;
            Ok::<_, std::io::Error>(banner.starts_with(b"RFB "))
        };
        if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            return Ok(());
        }
        if started.elapsed() >= budget {
            return Err(BackendError::Timeout { what: format!("the VNC server at {endpoint}"), waited: budget });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
