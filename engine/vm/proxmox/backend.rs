//! [`ProxmoxVm`]: a Proxmox VE VM as a [`VmBackend`].
//!
//! - prepare: log in, clone the template (linked) when the inventory names
//!   one, read the config and return the preflight warnings;
//! - start/stop/reset/snapshots: API calls whose tasks are followed to the end;
//!   a graceful stop asks for an ACPI shutdown and stops the VM when the
//!   guest does not power off in time;
//! - vnc: a fresh `vncproxy` and websocket for every connection;
//! - teardown: stop what smoke started, delete the clone it made;
//! - capabilities: snapshots and linked clones; no screendump (the monitor
//!   is root-only, tokens cannot use it) and no serial console.
//!
//! Every secret the backend handles (token, password, ticket, VNC ticket and
//! password) is registered with the run's [`SecretStore`] for redaction.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::secrets::SecretStore;
use crate::vm::{
    Capabilities, SnapshotInfo, StopMode, StopOutcome, StopPath, TeardownReport, VmBackend, VmError, VmFuture, VmStatus,
};

use super::api::{self, VmRef};
use super::client::{ClientOptions, Credentials, Hidden, PveClient};
use super::error::PveError;
use super::settings::{AuthSource, ProxmoxSettings};
use super::tasks::{self, Upid};
use super::{preflight, vnc};

/// How long tasks may take.
const START_TIMEOUT: Duration = Duration::from_secs(180);
const POWER_TIMEOUT: Duration = Duration::from_secs(120);
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(900);
const CLONE_TIMEOUT: Duration = Duration::from_secs(900);

/// A hook that adjusts the API client's options before it connects.
type AdjustOptions = dyn Fn(&mut ClientOptions) + Send + Sync;

/// A VM on a Proxmox VE node.
pub struct ProxmoxVm {
    target: String,
    settings: ProxmoxSettings,
    secrets: SecretStore,
    instance: String,
    client: Option<Arc<PveClient>>,
    /// The VM in use: `vmid`, or the clone made from `template`.
    vm: Option<VmRef>,
    /// A clone this backend made; deleted at teardown.
    made_clone: bool,
    /// The PCI devices the VM's config passes through (read by `prepare`).
    passthrough: Vec<String>,
    /// Whether this backend started the VM (teardown stops only those).
    started: bool,
    /// Overrides the client options (tests: ticket renewal, timeouts).
    client_options: Option<Box<AdjustOptions>>,
}

impl std::fmt::Debug for ProxmoxVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxmoxVm")
            .field("target", &self.target)
            .field("url", &self.settings.url)
            .field("node", &self.settings.node)
            .field("vm", &self.vm)
            .finish_non_exhaustive()
    }
}

/// Map an API failure to the VM error type, keeping PVE's words.
fn vm_err(operation: &str, e: PveError) -> VmError {
    match e {
        PveError::Timeout { what, waited } => VmError::Timeout { what, waited },
        PveError::Config(m) => VmError::Config(m),
        other => VmError::Command { command: operation.to_string(), message: other.to_string() },
    }
}

fn status_of(s: &api::CurrentStatus) -> VmStatus {
    match (s.status.as_str(), s.qmpstatus.as_deref()) {
        ("stopped", _) => VmStatus::Stopped,
        ("running", Some("paused" | "suspended" | "prelaunch")) => VmStatus::Paused,
        ("running", _) => VmStatus::Running,
        (other, _) => VmStatus::Unknown(other.to_string()),
    }
}

impl ProxmoxVm {
    pub fn new(target: &str, settings: ProxmoxSettings, secrets: SecretStore) -> ProxmoxVm {
        let mut nonce = [0u8; 4];
        let _ = getrandom::fill(&mut nonce);
        let instance = format!("{}-{:08x}", std::process::id(), u32::from_le_bytes(nonce));
        ProxmoxVm {
            target: target.to_string(),
            settings,
            secrets,
            instance,
            client: None,
            vm: None,
            made_clone: false,
            passthrough: Vec::new(),
            started: false,
            client_options: None,
        }
    }

    /// Adjust the API client's options before it connects (tests).
    pub fn with_client_options(mut self, f: impl Fn(&mut ClientOptions) + Send + Sync + 'static) -> ProxmoxVm {
        self.client_options = Some(Box::new(f));
        self
    }

    /// The VM in use, once prepared (or the configured vmid).
    pub fn vm(&self) -> Option<&VmRef> {
        self.vm.as_ref()
    }

    fn credentials(&self) -> Result<Credentials, PveError> {
        match &self.settings.auth {
            AuthSource::Token { secret, token_id } => {
                let text = self.secrets.read("proxmox API token", secret)?;
                let c = Credentials::token(&text, token_id.as_deref())?;
                if let Credentials::Token { id, secret } = &c {
                    self.secrets.remember(secret.expose());
                    self.secrets.remember(&format!("{id}={}", secret.expose()));
                }
                Ok(c)
            }
            AuthSource::Password { user, password } => {
                let pw = self.secrets.read("proxmox password", password)?;
                Ok(Credentials::Password { user: user.clone(), password: Hidden::new(pw) })
            }
        }
    }

    /// The API client, logged in on first use.
    pub async fn client(&mut self) -> Result<Arc<PveClient>, VmError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let creds = self.credentials().map_err(|e| vm_err("log in to Proxmox VE", e))?;
        let mut opts = ClientOptions::new(self.settings.url.clone(), self.settings.trust.clone(), creds);
        if let Some(f) = &self.client_options {
            f(&mut opts);
        }
        let client = Arc::new(PveClient::connect(&opts).await.map_err(|e| vm_err("log in to Proxmox VE", e))?);
        self.client = Some(client.clone());
        Ok(client)
    }

    fn vm_ref(&self) -> Result<VmRef, VmError> {
        match (&self.vm, self.settings.vmid) {
            (Some(vm), _) => Ok(vm.clone()),
            (None, Some(id)) => Ok(VmRef::new(self.settings.node.clone(), id)),
            (None, None) => Err(VmError::Config(format!(
                "target '{}': the clone of template {} does not exist yet (prepare first)",
                self.target,
                self.settings.template.unwrap_or_default()
            ))),
        }
    }

    async fn run_task(
        &mut self,
        operation: &str,
        timeout: Duration,
        call: impl AsyncFnOnce(&PveClient, &VmRef) -> Result<Upid, PveError>,
    ) -> Result<tasks::TaskOutcome, VmError> {
        let client = self.client().await?;
        let vm = self.vm_ref()?;
        let upid = call(&client, &vm).await.map_err(|e| vm_err(operation, e))?;
        tracing::debug!(task = %upid, "{operation}");
        tasks::wait(&client, &upid, timeout).await.map_err(|e| vm_err(operation, e))
    }

    /// Make a linked clone of the template and use it.
    async fn clone_template(&mut self, template: u32, name: &str) -> Result<VmRef, VmError> {
        let client = self.client().await?;
        let source = VmRef::new(self.settings.node.clone(), template);
        let config = source.config(&client).await.map_err(|e| vm_err("read the template's config", e))?;
        if !api::is_template(&config) {
            return Err(VmError::Config(format!(
                "VM {template} is not a template: Proxmox makes linked clones only from templates (convert it with `qm template {template}`, or use `vmid: {template}`)"
            )));
        }
        let newid = api::next_id(&client).await.map_err(|e| vm_err("get a free VMID", e))?;
        let upid = source.clone_to(&client, newid, name, false).await.map_err(|e| vm_err("make a linked clone", e))?;
        tasks::wait(&client, &upid, CLONE_TIMEOUT).await.map_err(|e| vm_err("make a linked clone", e))?;
        tracing::info!(template, newid, "linked clone made");
        Ok(VmRef::new(self.settings.node.clone(), newid))
    }

    /// A fresh websocket route to the screen (a new `vncproxy`); connect
    /// within [`vnc::CONNECT_WITHIN`].
    /// Health probe that sends no input: the VM runs and a VNC connection
    /// yields a frame within `timeout`.
    pub async fn probe(&mut self, timeout: Duration) -> Result<(), VmError> {
        match self.status_now().await? {
            VmStatus::Running => {}
            other => {
                return Err(VmError::NotRunning {
                    what: format!("VM {}", self.describe()),
                    log_tail: format!("{other:?}"),
                });
            }
        }
        let access = self.vnc_access().await?;
        let opts = access.connect_options(timeout);
        let client = crate::rfb::VncClient::connect(&access.endpoint, &opts)
            .await
            .map_err(|e| VmError::Protocol { what: format!("VNC of VM {}", self.describe()), detail: e.to_string() })?;
        let frame = client.capture(timeout).await;
        client.close().await;
        frame.map(|_| ()).map_err(|e| VmError::Protocol {
            what: format!("VNC frame of VM {}", self.describe()),
            detail: e.to_string(),
        })
    }

    /// What `smoke run` needs: prepare (warnings logged), start, the health
    /// probe (with one reset), and a fresh screen route to connect to within
    /// 10 s. On failure the VM is torn down before the error returns.
    pub async fn start_for_run(&mut self) -> Result<crate::backend::VncAccess, VmError> {
        if let Err(e) = self.prepare().await {
            self.teardown_after_failure().await;
            return Err(e);
        }
        self.start_prepared().await
    }

    /// [`ProxmoxVm::start_for_run`] after `prepare` (warnings logged there):
    /// start, health probe, a VNC access; torn down on failure.
    pub async fn start_prepared(&mut self) -> Result<crate::backend::VncAccess, VmError> {
        let result = async {
            self.start().await?;
            self.ensure_healthy(Duration::from_secs(30)).await?;
            self.vnc_access().await
        }
        .await;
        if result.is_err() {
            self.teardown_after_failure().await;
        }
        result
    }

    /// Undo what was done so far (a clone made, a VM started); logged.
    pub async fn teardown_after_failure(&mut self) {
        let report = self.teardown_now().await;
        for s in report.steps.iter().chain(&report.errors) {
            tracing::info!("teardown: {s}");
        }
    }

    /// Probe; on failure reset the VM once and probe again.
    pub async fn ensure_healthy(&mut self, timeout: Duration) -> Result<(), VmError> {
        let Err(first) = self.probe(timeout).await else { return Ok(()) };
        tracing::warn!("VM {} failed its health probe ({first}); resetting it once", self.describe());
        if matches!(self.status_now().await?, VmStatus::Running) {
            self.run_task("reset the VM", POWER_TIMEOUT, async |c, vm| vm.reset(c).await).await?;
        } else {
            self.run_task("start the VM", START_TIMEOUT, async |c, vm| vm.start(c).await).await?;
            self.started = true;
        }
        self.probe(timeout).await.map_err(|second| VmError::Command {
            command: format!("health probe of VM {}", self.describe()),
            message: format!("failed before ({first}) and after a reset ({second})"),
        })
    }

    /// For `smoke doctor`: log in, read the VM's (or template's) status and
    /// config; returns a summary and the preflight warnings. Changes nothing.
    pub async fn survey(&mut self) -> Result<(String, Vec<String>), VmError> {
        let client = self.client().await?;
        let vm = VmRef::new(self.settings.node.clone(), self.settings.base_vmid());
        let config = vm.config(&client).await.map_err(|e| vm_err("read the VM config", e))?;
        let status = vm.status(&client).await.map_err(|e| vm_err("read the VM status", e))?;
        let what = if api::is_template(&config) { "template" } else { "VM" };
        let summary = format!(
            "{} as {}: {what} {} on {} is {}",
            client.api_url(),
            client.credentials().principal(),
            vm.vmid,
            vm.node,
            status.status
        );
        Ok((summary, preflight::warnings(vm.vmid, &config)))
    }

    fn describe(&self) -> String {
        match self.vm_ref() {
            Ok(vm) => format!("{} on {}", vm.vmid, vm.node),
            Err(_) => format!("of target {}", self.target),
        }
    }

    async fn status_now(&mut self) -> Result<VmStatus, VmError> {
        let client = self.client().await?;
        let vm = self.vm_ref()?;
        let s = vm.status(&client).await.map_err(|e| vm_err("read the VM status", e))?;
        Ok(status_of(&s))
    }

    async fn vnc_access(&mut self) -> Result<crate::backend::VncAccess, VmError> {
        let client = self.client().await?;
        let vm = self.vm_ref()?;
        vnc::access(&client, &vm, &self.settings.trust, &self.secrets).await.map_err(|e| vm_err("open a VNC proxy", e))
    }

    async fn stop_now(&mut self, mode: StopMode) -> Result<StopOutcome, VmError> {
        let begun = Instant::now();
        if matches!(self.status_now().await?, VmStatus::Stopped) {
            return Ok(StopOutcome { path: StopPath::AlreadyStopped, elapsed: begun.elapsed() });
        }
        if let StopMode::Graceful { timeout } = mode {
            let secs = timeout.as_secs().max(1);
            let graceful = self
                .run_task("shut the VM down", timeout + Duration::from_secs(30), async move |c, vm| {
                    vm.shutdown(c, secs, false).await
                })
                .await;
            match graceful {
                Ok(_) => return Ok(StopOutcome { path: StopPath::Powerdown, elapsed: begun.elapsed() }),
                Err(e) => tracing::info!("graceful shutdown of VM {} failed ({e}); stopping it", self.describe()),
            }
        }
        self.run_task("stop the VM", POWER_TIMEOUT, async |c, vm| vm.stop(c).await).await?;
        Ok(StopOutcome { path: StopPath::Terminated, elapsed: begun.elapsed() })
    }

    async fn teardown_now(&mut self) -> TeardownReport {
        let begun = Instant::now();
        let mut steps = Vec::new();
        let mut errors = Vec::new();
        let mut path = StopPath::AlreadyStopped;
        if self.client.is_none() && !self.started && !self.made_clone {
            return TeardownReport { path, elapsed: begun.elapsed(), steps, errors };
        }
        if self.started || self.made_clone {
            let mode = StopMode::Graceful { timeout: self.settings.shutdown_timeout };
            match self.stop_now(mode).await {
                Ok(o) => {
                    path = o.path;
                    steps.push(format!("VM {}: {} after {:.1}s", self.describe(), o.path, o.elapsed.as_secs_f64()));
                }
                Err(e) => {
                    path = StopPath::Failed;
                    errors.push(format!("stopping VM {}: {e}", self.describe()));
                }
            }
        } else {
            steps.push(format!("VM {} left as it was: smoke did not start it", self.describe()));
        }
        if self.made_clone && path != StopPath::Failed {
            match self.run_task("delete the clone", CLONE_TIMEOUT, async |c, vm| vm.destroy(c).await).await {
                Ok(_) => {
                    steps.push(format!("clone {} deleted", self.describe()));
                    self.made_clone = false;
                }
                Err(e) => errors.push(format!("deleting clone {}: {e}", self.describe())),
            }
        }
        TeardownReport { path, elapsed: begun.elapsed(), steps, errors }
    }
}

impl VmBackend for ProxmoxVm {
    fn kind(&self) -> &'static str {
        "proxmox"
    }

    fn lock_key(&self) -> String {
        let s = &self.settings;
        match (s.vmid, s.template) {
            (Some(id), _) => format!("proxmox:{}:{}:{id}", s.host, s.node),
            // every run gets its own clone: nothing to share
            (None, t) => format!("proxmox:{}:{}:clone-of-{}:{}", s.host, s.node, t.unwrap_or_default(), self.instance),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshots: true,
            linked_clone: true,
            gpu: !self.passthrough.is_empty(),
            ..Capabilities::default()
        }
    }

    fn gpus(&self) -> Vec<crate::vm::GpuRef> {
        let host = format!("{}/{}", self.settings.host, self.settings.node);
        self.passthrough.iter().map(|pci| crate::vm::GpuRef { host: host.clone(), pci: pci.clone() }).collect()
    }

    fn prepare(&mut self) -> VmFuture<'_, Vec<String>> {
        Box::pin(async move {
            let client = self.client().await?;
            if let (None, Some(template)) = (&self.vm, self.settings.template) {
                let name = format!("smoke-{}-{}", sanitize(&self.target), self.instance);
                let vm = self.clone_template(template, &name).await?;
                self.vm = Some(vm);
                self.made_clone = true;
            }
            let vm = self.vm_ref()?;
            let config = vm.config(&client).await.map_err(|e| vm_err("read the VM config", e))?;
            if api::is_template(&config) && !self.made_clone {
                return Err(VmError::Config(format!(
                    "VM {} is a template and cannot start: use `template: {}` to clone it for each run",
                    vm.vmid, vm.vmid
                )));
            }
            self.vm = Some(vm.clone());
            self.passthrough = api::passthrough(&config);
            let warnings = preflight::warnings(vm.vmid, &config);
            for w in &warnings {
                tracing::warn!("{w}");
            }
            Ok(warnings)
        })
    }

    fn start(&mut self) -> VmFuture<'_, ()> {
        Box::pin(async move {
            if matches!(self.status_now().await?, VmStatus::Running) {
                tracing::info!("VM {} is already running", self.describe());
                return Ok(());
            }
            self.run_task("start the VM", START_TIMEOUT, async |c, vm| vm.start(c).await).await?;
            self.started = true;
            Ok(())
        })
    }

    fn status(&mut self) -> VmFuture<'_, VmStatus> {
        Box::pin(self.status_now())
    }

    fn stop(&mut self, mode: StopMode) -> VmFuture<'_, StopOutcome> {
        Box::pin(self.stop_now(mode))
    }

    fn reset(&mut self) -> VmFuture<'_, ()> {
        Box::pin(async move {
            self.run_task("reset the VM", POWER_TIMEOUT, async |c, vm| vm.reset(c).await).await.map(|_| ())
        })
    }

    fn snapshot_create(&mut self, name: &str) -> VmFuture<'_, ()> {
        let name = name.to_string();
        Box::pin(async move {
            self.run_task("take a snapshot", SNAPSHOT_TIMEOUT, async move |c, vm| {
                vm.snapshot_create(c, &name, true, "smoke").await
            })
            .await
            .map(|_| ())
        })
    }

    fn snapshot_rollback(&mut self, name: &str) -> VmFuture<'_, ()> {
        let name = name.to_string();
        Box::pin(async move {
            self.run_task("roll back to a snapshot", SNAPSHOT_TIMEOUT, async move |c, vm| {
                vm.snapshot_rollback(c, &name, true).await
            })
            .await
            .map(|_| ())
        })
    }

    fn snapshot_delete(&mut self, name: &str) -> VmFuture<'_, ()> {
        let name = name.to_string();
        Box::pin(async move {
            self.run_task("delete a snapshot", SNAPSHOT_TIMEOUT, async move |c, vm| vm.snapshot_delete(c, &name).await)
                .await
                .map(|_| ())
        })
    }

    fn snapshot_list(&mut self) -> VmFuture<'_, Vec<SnapshotInfo>> {
        Box::pin(async move {
            let client = self.client().await?;
            let vm = self.vm_ref()?;
            let list = vm.snapshots(&client).await.map_err(|e| vm_err("list snapshots", e))?;
            Ok(list
                .into_iter()
                .map(|s| SnapshotInfo {
                    name: s.name,
                    vm_state_bytes: None,
                    date: s.snaptime.and_then(|t| {
                        time::OffsetDateTime::from_unix_timestamp(t)
                            .ok()
                            .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
                    }),
                    description: Some(s.description).filter(|d| !d.is_empty()),
                })
                .collect())
        })
    }

    fn vnc(&mut self) -> VmFuture<'_, crate::backend::VncAccess> {
        Box::pin(self.vnc_access())
    }

    fn ssh_endpoint(&self) -> Option<(String, u16)> {
        None
    }

    fn teardown(&mut self) -> Pin<Box<dyn Future<Output = TeardownReport> + Send + '_>> {
        Box::pin(self.teardown_now())
    }

    fn vnc_renewal(&self) -> Option<Arc<dyn crate::rfb::AccessRenewal>> {
        let renewal = vnc::Renewal {
            client: self.client.clone()?,
            vm: self.vm.clone()?,
            trust: self.settings.trust.clone(),
            secrets: self.secrets.clone(),
        };
        Some(Arc::new(renewal))
    }

    fn linked_clone(&mut self, name: &str) -> VmFuture<'_, Box<dyn VmBackend>> {
        let name = name.to_string();
        Box::pin(async move {
            let source = self.vm_ref()?;
            let vm = self.clone_template(source.vmid, &name).await?;
            let mut settings = self.settings.clone();
            settings.vmid = Some(vm.vmid);
            settings.template = None;
            let mut clone = ProxmoxVm::new(&self.target, settings, self.secrets.clone());
            clone.client = self.client.clone();
            clone.vm = Some(vm);
            clone.made_clone = true;
            Ok(Box::new(clone) as Box<dyn VmBackend>)
        })
    }
}

/// A VM name part: PVE names are DNS labels.
fn sanitize(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    s.trim_matches('-').chars().take(30).collect()
}
