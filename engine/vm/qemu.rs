//! The local QEMU backend: `qemu-system-x86_64` started for the run.
//!
//! Each instance gets its own directory (sockets, overlay) and its own qcow2:
//! an overlay on the inventory's `disk` (`qemu-img create -f qcow2 -b BASE`),
//! or a small empty state disk that only holds `savevm` snapshots (QEMU
//! cannot save VM state without a writable qcow2). Two QEMUs can never open
//! one qcow2, so runs never share one. The base image is not written to.
//! That qcow2 holds the run's checkpoints; it is removed at teardown, unless
//! the run keeps them ([`InstanceDisk::Keep`]: a fresh one in a kept
//! directory, with a note of what it was made from) or resumes from them
//! ([`InstanceDisk::Resume`]: the kept one, refused when the kernel, initrd,
//! disk, ISO, memory, CPUs or machine differ from that note).
//!
//! QEMU listens for VNC on loopback (`127.0.0.1`, a free display found by
//! QEMU itself, with a random password set over QMP) or on a Unix socket,
//! for QMP on a Unix socket, and serves the first serial port on a Unix
//! socket whose raw transcript QEMU writes to the run's `logs/serial.log`.
//! With `ssh_forward`, user networking (no access to the host's network,
//! `restrict=on`) forwards a free loopback port to the guest's port 22.
//!
//! QEMU runs in its own process group and gets SIGTERM if smoke dies.
//! Teardown is a ladder: QMP `system_powerdown` (the guest powers off),
//! SIGTERM to the process group, SIGKILL; the step that ended QEMU is
//! returned in the [`TeardownReport`] and logged.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::backend::VncAccess;
use crate::backend::process;
use crate::frame::Frame;
use crate::rfb::transport::Endpoint;
use crate::vm::qmp::QmpClient;
use crate::vm::serial::SerialConsole;
use crate::vm::{
    Capabilities, SnapshotInfo, StopMode, StopOutcome, StopPath, TeardownReport, VmBackend, VmError, VmFuture, VmStatus,
};

/// How long QEMU gets to answer on QMP after it starts.
const QMP_CONNECT: Duration = Duration::from_secs(15);
/// SIGTERM to SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// savevm/loadvm of a small guest take about a second; big ones longer.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Size of the empty qcow2 that holds snapshots when there is no disk.
const STATE_DISK: &str = "64M";

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// KVM when a short probe shows it works and is fast, TCG otherwise.
    Auto,
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Where QEMU serves VNC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VncListen {
    /// `127.0.0.1`, a free port, a random password.
    Tcp,
    /// A Unix socket in the instance's private directory (no password).
    Unix,
}

/// Where the instance's qcow2 (the one `savevm` writes the checkpoints to) lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum InstanceDisk {
    /// In the instance's temporary directory, removed at teardown.
    #[default]
    PerRun,
    /// A new one in this directory (an older one there is replaced), left
    /// there at teardown for a later `--from-checkpoint`.
    Keep(PathBuf),
    /// The one an earlier run kept in this directory, with its snapshots;
    /// left there at teardown.
    Resume(PathBuf),
}

impl InstanceDisk {
    fn kept_dir(&self) -> Option<&Path> {
        match self {
            InstanceDisk::PerRun => None,
            InstanceDisk::Keep(d) | InstanceDisk::Resume(d) => Some(d),
        }
    }
}

/// The kept disk and the note of what it was made from.
const KEPT_DISK: &str = "instance.qcow2";
const KEPT_NOTE: &str = "instance.json";

/// A `backend: qemu` target's settings (inventory key `qemu:`).
#[derive(Debug, Clone, PartialEq)]
pub struct QemuSettings {
    /// The emulator (default `qemu-system-x86_64`).
    pub binary: String,
    /// Direct kernel boot.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
    /// The base disk image (never written: each instance gets an overlay).
    pub disk: Option<PathBuf>,
    /// An ISO attached as a CD-ROM.
    pub iso: Option<PathBuf>,
    pub memory_mib: u32,
    pub cpus: u32,
    pub machine: String,
    pub accel: Accel,
    pub vnc: VncListen,
    /// Forward a loopback port to the guest's SSH (port 22).
    pub ssh_forward: bool,
    /// A USB tablet, so VNC pointer positions are absolute (clicks land where aimed).
    pub tablet: bool,
    /// Appended to QEMU's command line as is.
    pub extra_args: Vec<String>,
    /// How long the guest gets to power off after an ACPI power-down request.
    pub shutdown_timeout: Duration,
}

impl Default for QemuSettings {
    fn default() -> Self {
        QemuSettings {
            binary: "qemu-system-x86_64".into(),
            kernel: None,
            initrd: None,
            append: None,
            disk: None,
            iso: None,
            memory_mib: 512,
            cpus: 1,
            machine: "pc".into(),
            accel: Accel::Auto,
            vnc: VncListen::Tcp,
            ssh_forward: false,
            tablet: true,
            extra_args: Vec::new(),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl QemuSettings {
    /// Make relative paths relative to `base` (the project root).
    pub fn resolve(&mut self, base: &Path) {
        for p in [&mut self.kernel, &mut self.initrd, &mut self.disk, &mut self.iso].into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// What a VM with these settings can do.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshots: true,
            screendump: true,
            serial: true,
            linked_clone: false,
            gpu: !self.passthrough().is_empty(),
            ssh: self.ssh_forward,
        }
    }

    /// The host PCI devices `extra_args` pass through (`-device
    /// vfio-pci,host=ADDR,...`), normalized.
    pub fn passthrough(&self) -> Vec<String> {
        let mut out = Vec::new();
        for pair in self.extra_args.windows(2) {
            if pair[0] != "-device" {
                continue;
            }
            let mut props = pair[1].split(',');
            if props.next() != Some("vfio-pci") {
                continue;
            }
            if let Some(host) = props.find_map(|p| p.strip_prefix("host=")) {
                out.push(crate::vm::normalize_pci(host));
            }
        }
        out
    }
}

/// A local QEMU VM.
pub struct QemuVm {
    name: String,
    settings: QemuSettings,
    /// The run's `logs/` (qemu.log, serial.log).
    logs: PathBuf,
    dir: Option<tempfile::TempDir>,
    accel: Option<Accel>,
    /// The qcow2 this instance writes (overlay or state disk).
    instance_disk: Option<PathBuf>,
    /// Where that qcow2 lives (per run, or kept for `--from-checkpoint`).
    disk_home: InstanceDisk,
    child: Option<tokio::process::Child>,
    pgid: Option<u32>,
    qmp: Option<Arc<QmpClient>>,
    serial: Option<Arc<SerialConsole>>,
    vnc_endpoint: Option<Endpoint>,
    vnc_password: Option<String>,
    ssh_port: Option<u16>,
}

impl QemuVm {
    /// A VM named `name` (for messages and the lock key) writing its logs to `logs`.
    pub fn new(name: &str, settings: QemuSettings, logs: &Path) -> QemuVm {
        QemuVm {
            name: name.to_string(),
            settings,
            logs: logs.to_path_buf(),
            dir: None,
            accel: None,
            instance_disk: None,
            disk_home: InstanceDisk::PerRun,
            child: None,
            pgid: None,
            qmp: None,
            serial: None,
            vnc_endpoint: None,
            vnc_password: None,
            ssh_port: None,
        }
    }

    /// Keep the instance disk (and the checkpoints in it) after the run, or
    /// start from the one an earlier run kept.
    pub fn with_instance_disk(mut self, home: InstanceDisk) -> QemuVm {
        self.disk_home = home;
        self
    }

    /// The accelerator chosen by `prepare`.
    pub fn accel(&self) -> Option<Accel> {
        self.accel
    }

    /// QEMU's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pgid
    }

    /// The QMP connection while QEMU runs.
    pub fn qmp(&self) -> Option<Arc<QmpClient>> {
        self.qmp.clone()
    }

    /// The VNC password (TCP only); remember it for redaction.
    pub fn vnc_password(&self) -> Option<&str> {
        self.vnc_password.as_deref()
    }

    fn dir(&self) -> Result<&Path, VmError> {
        self.dir.as_ref().map(|d| d.path()).ok_or_else(|| VmError::Config("the VM was not prepared".into()))
    }

    fn qmp_or_err(&self) -> Result<Arc<QmpClient>, VmError> {
        self.qmp
            .clone()
            .ok_or_else(|| VmError::NotRunning { what: format!("VM '{}'", self.name), log_tail: String::new() })
    }

    async fn do_prepare(&mut self) -> Result<Vec<String>, VmError> {
        let s = &self.settings;
        let mut warnings = Vec::new();
        if !process::which(&s.binary) {
            return Err(VmError::MissingProgram {
                program: s.binary.clone(),
                hint: Some("run scripts/setup-debian.sh (QEMU from bookworm-backports)".into()),
            });
        }
        if !process::which("qemu-img") {
            return Err(VmError::MissingProgram {
                program: "qemu-img".into(),
                hint: Some("apt-get install qemu-utils".into()),
            });
        }
        for (what, p) in [("kernel", &s.kernel), ("initrd", &s.initrd), ("disk", &s.disk), ("iso", &s.iso)] {
            if let Some(p) = p
                && !p.is_file()
            {
                return Err(VmError::Config(format!(
                    "the {what} {} of VM '{}' does not exist",
                    p.display(),
                    self.name
                )));
            }
        }
        if s.kernel.is_none() && s.disk.is_none() && s.iso.is_none() {
            return Err(VmError::Config(format!(
                "VM '{}' has nothing to boot: give a kernel, a disk or an iso",
                self.name
            )));
        }
        std::fs::create_dir_all(&self.logs)
            .map_err(|e| VmError::Io { what: format!("create {}", self.logs.display()), source: e })?;
        let dir = tempfile::Builder::new()
            .prefix("smoke-qemu-")
            .tempdir()
            .map_err(|e| VmError::Io { what: "create the VM's directory".into(), source: e })?;
        let disk = match &self.disk_home {
            InstanceDisk::PerRun => {
                let disk = dir.path().join(KEPT_DISK);
                create_instance_disk(s, &disk).await?;
                disk
            }
            InstanceDisk::Keep(home) => {
                let io = |what: String| move |e| VmError::Io { what, source: e };
                std::fs::create_dir_all(home).map_err(io(format!("create {}", home.display())))?;
                let disk = home.join(KEPT_DISK);
                for old in [home.join(KEPT_NOTE), disk.clone()] {
                    if old.exists() {
                        std::fs::remove_file(&old).map_err(io(format!("remove {}", old.display())))?;
                    }
                }
                create_instance_disk(s, &disk).await?;
                let note = serde_json::to_string_pretty(&made_from(s)).unwrap_or_default();
                std::fs::write(home.join(KEPT_NOTE), note + "\n")
                    .map_err(io(format!("write {}", home.join(KEPT_NOTE).display())))?;
                disk
            }
            InstanceDisk::Resume(home) => kept_disk(&self.name, s, home)?,
        };
        self.instance_disk = Some(disk);
        self.accel = Some(match s.accel {
            Accel::Auto => {
                let (accel, why) = probe_kvm(&s.binary).await;
                if let Some(why) = why {
                    tracing::info!(vm = %self.name, "KVM not used: {why}");
                    warnings.push(format!("VM '{}': KVM not used ({why}); running under TCG (slower)", self.name));
                }
                accel
            }
            a => a,
        });
        self.dir = Some(dir);
        Ok(warnings)
    }

    fn command_line(&self, ssh_port: Option<u16>) -> Result<Vec<String>, VmError> {
        let s = &self.settings;
        let dir = self.dir()?;
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|x| x.to_string()));
        match self.accel.unwrap_or(Accel::Tcg) {
            Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
            _ => push(&["-accel", "tcg,thread=multi", "-cpu", "max"]),
        }
        push(&["-name", &format!("smoke-{}", self.name), "-machine", &s.machine]);
        push(&["-m", &s.memory_mib.to_string(), "-smp", &s.cpus.to_string()]);
        push(&["-nodefaults", "-no-user-config", "-display", "none", "-vga", "std"]);
        // paused until the serial console is connected: the transcript has every byte
        push(&["-S"]);
        if s.tablet {
            push(&["-usb", "-device", "usb-tablet"]);
        }
        if let Some(k) = &s.kernel {
            push(&["-kernel", &path(k)]);
        }
        if let Some(i) = &s.initrd {
            push(&["-initrd", &path(i)]);
        }
        if let Some(ap) = &s.append {
            push(&["-append", ap]);
        }
        if let Some(disk) = &self.instance_disk {
            let drive = if s.disk.is_some() {
                format!("file={},if=virtio,format=qcow2", path(disk))
            } else {
                // only holds snapshots: not visible to the guest
                format!("file={},if=none,id=smoke-state,format=qcow2", path(disk))
            };
            push(&["-drive", &drive]);
        }
        if let Some(iso) = &s.iso {
            push(&["-drive", &format!("file={},media=cdrom,readonly=on", path(iso))]);
            if s.kernel.is_none() {
                push(&["-boot", "order=dc"]);
            }
        }
        match s.vnc {
            VncListen::Tcp => push(&["-vnc", "127.0.0.1:0,to=1000,password=on"]),
            VncListen::Unix => push(&["-vnc", &format!("unix:{}", path(&dir.join("vnc.sock")))]),
        }
        push(&["-qmp", &format!("unix:{},server=on,wait=off", path(&dir.join("qmp.sock")))]);
        push(&[
            "-chardev",
            &format!(
                "socket,id=serial0,path={},server=on,wait=off,logfile={},logappend=on",
                path(&dir.join("serial.sock")),
                path(&self.logs.join("serial.log"))
            ),
            "-serial",
            "chardev:serial0",
        ]);
        if let Some(port) = ssh_port {
            push(&["-netdev", &format!("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22")]);
            push(&["-device", "virtio-net-pci,netdev=net0"]);
        }
        a.extend(s.extra_args.iter().cloned());
        Ok(a)
    }

    async fn do_start(&mut self) -> Result<(), VmError> {
        if self.child.is_some() {
            return Err(VmError::Config(format!("VM '{}' is already running", self.name)));
        }
        let dir = self.dir()?.to_path_buf();
        let log_path = self.logs.join("qemu.log");
        let mut last_error = None;
        for attempt in 0..3 {
            let ssh_port = if self.settings.ssh_forward { Some(free_port()?) } else { None };
            let args = self.command_line(ssh_port)?;
            for sock in ["qmp.sock", "serial.sock", "vnc.sock"] {
                let _ = std::fs::remove_file(dir.join(sock));
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| VmError::Io { what: format!("open {}", log_path.display()), source: e })?;
            let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
            let log_err =
                log.try_clone().map_err(|e| VmError::Io { what: format!("open {}", log_path.display()), source: e })?;
            tracing::info!(vm = %self.name, "starting {} {}", self.settings.binary, args.join(" "));
            let mut cmd = tokio::process::Command::new(&self.settings.binary);
            cmd.args(&args).stdin(Stdio::null()).stdout(log).stderr(log_err).kill_on_drop(true);
            process::isolate(&mut cmd);
            let started = Instant::now();
            let mut child =
                cmd.spawn().map_err(|e| VmError::Spawn { program: self.settings.binary.clone(), source: e })?;
            let pid = child.id();
            match QmpClient::connect(&dir.join("qmp.sock"), QMP_CONNECT).await {
                Ok(qmp) => {
                    self.qmp = Some(Arc::new(qmp));
                    self.child = Some(child);
                    self.pgid = pid;
                    self.ssh_port = ssh_port;
                    tracing::info!(vm = %self.name, "QEMU up in {:.2}s", started.elapsed().as_secs_f64());
                    return self.after_start(&dir).await;
                }
                Err(e) => {
                    if let Some(pid) = pid {
                        process::stop_group(pid, Duration::from_secs(2)).await;
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                    let tail = log_tail(&log_path, log_offset);
                    let port_taken = tail.contains("host forwarding rule") || tail.contains("Could not set up host");
                    last_error = Some(VmError::NotRunning {
                        what: format!("QEMU for VM '{}' ({e})", self.name),
                        log_tail: tail,
                    });
                    if !(port_taken && attempt < 2) {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| VmError::Config("QEMU did not start".into())))
    }

    /// Connect the serial console, find the VNC address, set its password,
    /// then let the (paused) guest run.
    async fn after_start(&mut self, dir: &Path) -> Result<(), VmError> {
        let qmp = self.qmp_or_err()?;
        let serial = SerialConsole::connect(&dir.join("serial.sock"), Duration::from_secs(5)).await?;
        self.serial = Some(Arc::new(serial));
        match self.settings.vnc {
            VncListen::Unix => self.vnc_endpoint = Some(Endpoint::Unix(dir.join("vnc.sock"))),
            VncListen::Tcp => {
                let info = qmp.execute("query-vnc", None).await?;
                let host = info["host"].as_str().unwrap_or("127.0.0.1").to_string();
                let port = info["service"].as_str().and_then(|p| p.parse::<u16>().ok()).ok_or_else(|| {
                    VmError::Protocol { what: "query-vnc".into(), detail: format!("no port in {info}") }
                })?;
                let password = random_password()?;
                qmp.execute("set_password", Some(json!({"protocol": "vnc", "password": password}))).await?;
                self.vnc_password = Some(password);
                self.vnc_endpoint = Some(Endpoint::Tcp { host, port });
            }
        }
        qmp.execute("cont", None).await?;
        Ok(())
    }

    /// True while QEMU's process (group) has live members.
    fn alive(&mut self) -> bool {
        self.pgid.is_some_and(|g| !process::group_members(g).is_empty())
    }

    async fn wait_gone(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if !self.alive() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The ladder: powerdown (when graceful), SIGTERM, SIGKILL.
    async fn stop_ladder(&mut self, mode: StopMode, steps: &mut Vec<String>) -> StopPath {
        if self.child.is_none() || !self.alive() {
            steps.push("QEMU was not running".into());
            return StopPath::AlreadyStopped;
        }
        if let StopMode::Graceful { timeout } = mode {
            match self.qmp.clone() {
                Some(qmp) => match qmp.execute_within("system_powerdown", None, Duration::from_secs(5)).await {
                    Ok(_) => {
                        let t = Instant::now();
                        if self.wait_gone(timeout).await {
                            steps.push(format!("powerdown: guest powered off in {:.1}s", t.elapsed().as_secs_f64()));
                            return StopPath::Powerdown;
                        }
                        steps.push(format!("powerdown: guest still running after {:.1}s", timeout.as_secs_f64()));
                    }
                    Err(e) => steps.push(format!("powerdown: {e}")),
                },
                None => steps.push("powerdown: no QMP connection".into()),
            }
        }
        let Some(pgid) = self.pgid else {
            return StopPath::Failed;
        };
        let t = Instant::now();
        let path = process::stop_group(pgid, TERM_GRACE).await;
        let path = match path {
            // it ended between the powerdown wait and SIGTERM
            process::StopPath::AlreadyGone if matches!(mode, StopMode::Graceful { .. }) => StopPath::Powerdown,
            process::StopPath::AlreadyGone => StopPath::AlreadyStopped,
            process::StopPath::Terminated => StopPath::Terminated,
            process::StopPath::Killed => StopPath::Killed,
        };
        match path {
            StopPath::Terminated => steps.push(format!("SIGTERM: QEMU ended in {:.1}s", t.elapsed().as_secs_f64())),
            StopPath::Killed => {
                steps.push(format!("SIGTERM: QEMU still running after {:.1}s; SIGKILL", TERM_GRACE.as_secs_f64()))
            }
            _ => steps.push("QEMU ended by itself".into()),
        }
        path
    }

    /// Forget the process and connections after it ended.
    async fn reap(&mut self) {
        self.qmp = None;
        self.serial = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        }
        self.pgid = None;
    }

    async fn snapshot_names(&self) -> Result<Vec<SnapshotInfo>, VmError> {
        let qmp = self.qmp_or_err()?;
        let text = qmp.hmp_checked("info snapshots", Duration::from_secs(30)).await?;
        Ok(parse_snapshots(&text))
    }

    async fn do_screendump(&self) -> Result<Frame, VmError> {
        let qmp = self.qmp_or_err()?;
        let file = self.dir()?.join("screendump.ppm");
        let _ = std::fs::remove_file(&file);
        qmp.execute("screendump", Some(json!({"filename": file.to_string_lossy(), "format": "ppm"}))).await?;
        let bytes =
            std::fs::read(&file).map_err(|e| VmError::Io { what: format!("read {}", file.display()), source: e })?;
        let _ = std::fs::remove_file(&file);
        parse_ppm(&bytes)
    }
}

impl VmBackend for QemuVm {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    fn lock_key(&self) -> String {
        if let Some(home) = self.disk_home.kept_dir() {
            // one QEMU at a time on the kept disk
            let abs = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
            return format!("qemu:{}", abs.join(KEPT_DISK).display());
        }
        match &self.settings.disk {
            Some(d) => {
                let abs = std::fs::canonicalize(d).unwrap_or_else(|_| d.clone());
                format!("qemu:{}", abs.display())
            }
            // without a base disk nothing is shared: the instance's own directory
            None => format!(
                "qemu:{}:{}",
                self.name,
                self.dir.as_ref().map(|d| d.path().display().to_string()).unwrap_or_default()
            ),
        }
    }

    fn capabilities(&self) -> Capabilities {
        self.settings.capabilities()
    }

    fn gpus(&self) -> Vec<crate::vm::GpuRef> {
        let host = crate::vm::this_host();
        self.settings.passthrough().into_iter().map(|pci| crate::vm::GpuRef { host: host.clone(), pci }).collect()
    }

    fn prepare(&mut self) -> VmFuture<'_, Vec<String>> {
        Box::pin(self.do_prepare())
    }

    fn start(&mut self) -> VmFuture<'_, ()> {
        Box::pin(self.do_start())
    }

    fn status(&mut self) -> VmFuture<'_, VmStatus> {
        Box::pin(async move {
            if !self.alive() {
                return Ok(VmStatus::Stopped);
            }
            let qmp = self.qmp_or_err()?;
            let v = qmp.execute("query-status", None).await?;
            Ok(match v["status"].as_str().unwrap_or("") {
                "running" => VmStatus::Running,
                "paused" | "suspended" => VmStatus::Paused,
                "shutdown" => VmStatus::Stopped,
                other => VmStatus::Unknown(other.to_string()),
            })
        })
    }

    fn stop(&mut self, mode: StopMode) -> VmFuture<'_, StopOutcome> {
        Box::pin(async move {
            let t = Instant::now();
            let mut steps = Vec::new();
            let path = self.stop_ladder(mode, &mut steps).await;
            for s in &steps {
                tracing::info!(vm = %self.name, "stop: {s}");
            }
            self.reap().await;
            Ok(StopOutcome { path, elapsed: t.elapsed() })
        })
    }

    fn reset(&mut self) -> VmFuture<'_, ()> {
        Box::pin(async move {
            self.qmp_or_err()?.execute("system_reset", None).await?;
            Ok(())
        })
    }

    fn snapshot_create(&mut self, name: &str) -> VmFuture<'_, ()> {
        let name = name.to_string();
        Box::pin(async move {
            check_snapshot_name(&name)?;
            let qmp = self.qmp_or_err()?;
            let t = Instant::now();
            qmp.hmp_checked(&format!("savevm {name}"), SNAPSHOT_TIMEOUT).await?;
            tracing::info!(vm = %self.name, snapshot = %name, "savevm in {:.2}s", t.elapsed().as_secs_f64());
            Ok(())
        })
    }

    fn snapshot_rollback(&mut self, name: &str) -> VmFuture<'_, ()> {
        let name = name.to_string();
        Box::pin(async move {
            check_snapshot_name(&name)?;
            // a loadvm of a missing snapshot stops the VM: check first
            let known = self.snapshot_names().await?;
            if !known.iter().any(|s| s.name == name) {
                let names: Vec<&str> = known.iter().map(|s| s.name.as_str()).collect();
                return Err(VmError::Command {
                    command: format!("loadvm {name}"),
                    message: format!(
                        "VM '{}' has no snapshot '{name}' (it has: {})",
                        self.name,
                        if names.is_empty() { "none".to_string() } else { names.join(", ") }
                    ),
                });
            }
            let qmp = self.qmp_or_err()?;
            let t = Instant::now();
            let result = qmp.hmp_checked(&format!("loadvm {name}"), SNAPSHOT_TIMEOUT).await;
            let status = qmp.execute("query-status", None).await?;
            if status["running"] != json!(true) {
                // loadvm leaves a VM that was running running; after an error it may be stopped
                qmp.execute("cont", None).await?;
            }
            result?;
            tracing::info!(vm = %self.name, snapshot = %name, "loadvm in {:.2}s", t.elapsed().as_secs_f64());
            Ok(())
        })
    }

    fn snapshot_delete(&mut self, name: &str) -> VmFuture<'_, ()> {
        let name = name.to_string();
        Box::pin(async move {
            check_snapshot_name(&name)?;
            let known = self.snapshot_names().await?;
            if !known.iter().any(|s| s.name == name) {
                return Err(VmError::Command {
                    command: format!("delvm {name}"),
                    message: format!("VM '{}' has no snapshot '{name}'", self.name),
                });
            }
            self.qmp_or_err()?.hmp_checked(&format!("delvm {name}"), SNAPSHOT_TIMEOUT).await?;
            Ok(())
        })
    }

    fn snapshot_list(&mut self) -> VmFuture<'_, Vec<SnapshotInfo>> {
        Box::pin(self.snapshot_names())
    }

    fn vnc(&mut self) -> VmFuture<'_, VncAccess> {
        Box::pin(async move {
            let endpoint = self
                .vnc_endpoint
                .clone()
                .ok_or_else(|| VmError::NotRunning { what: format!("VM '{}'", self.name), log_tail: String::new() })?;
            Ok(VncAccess::plain(endpoint, self.vnc_password.clone()))
        })
    }

    fn ssh_endpoint(&self) -> Option<(String, u16)> {
        self.ssh_port.map(|p| ("127.0.0.1".to_string(), p))
    }

    fn teardown(&mut self) -> Pin<Box<dyn Future<Output = TeardownReport> + Send + '_>> {
        Box::pin(async move {
            let t = Instant::now();
            let mut steps = Vec::new();
            let mut errors = Vec::new();
            let mode = StopMode::Graceful { timeout: self.settings.shutdown_timeout };
            let path = self.stop_ladder(mode, &mut steps).await;
            self.reap().await;
            if let Some(dir) = self.dir.take() {
                let shown = dir.path().display().to_string();
                let what = if self.disk_home == InstanceDisk::PerRun { "instance disk, sockets" } else { "sockets" };
                match dir.close() {
                    Ok(()) => steps.push(format!("removed {shown} ({what})")),
                    Err(e) => errors.push(format!("cannot remove {shown}: {e}")),
                }
            }
            if let (Some(home), Some(_)) = (self.disk_home.kept_dir(), &self.instance_disk) {
                steps.push(format!("kept {} (its checkpoints, for --from-checkpoint)", home.join(KEPT_DISK).display()));
            }
            self.instance_disk = None;
            self.vnc_endpoint = None;
            self.ssh_port = None;
            for s in &steps {
                tracing::info!(vm = %self.name, "teardown: {s}");
            }
            for e in &errors {
                tracing::warn!(vm = %self.name, "teardown: {e}");
            }
            TeardownReport { path, elapsed: t.elapsed(), steps, errors }
        })
    }

    fn screendump(&mut self) -> VmFuture<'_, Frame> {
        Box::pin(self.do_screendump())
    }

    fn serial(&mut self) -> VmFuture<'_, Arc<SerialConsole>> {
        Box::pin(async move {
            self.serial
                .clone()
                .ok_or_else(|| VmError::NotRunning { what: format!("VM '{}'", self.name), log_tail: String::new() })
        })
    }
}

/// Create the instance's qcow2 at `disk`: an overlay on the base disk, or a
/// small empty one that only holds snapshots.
async fn create_instance_disk(s: &QemuSettings, disk: &Path) -> Result<(), VmError> {
    let mut img = tokio::process::Command::new("qemu-img");
    img.arg("create").arg("-q").arg("-f").arg("qcow2");
    if let Some(base) = &s.disk {
        let base = std::fs::canonicalize(base)
            .map_err(|e| VmError::Io { what: format!("resolve {}", base.display()), source: e })?;
        let format = image_format(&base).await?;
        img.arg("-b").arg(&base).arg("-F").arg(format).arg(disk);
    } else {
        img.arg(disk).arg(STATE_DISK);
    }
    let out = img.output().await.map_err(|e| VmError::Spawn { program: "qemu-img".into(), source: e })?;
    if !out.status.success() {
        return Err(VmError::Command {
            command: "qemu-img create".into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// What a kept disk was made from: the files the guest came from (path,
/// size, modification time) and the settings a saved state depends on.
fn made_from(s: &QemuSettings) -> std::collections::BTreeMap<String, String> {
    let mut m = std::collections::BTreeMap::new();
    for (what, p) in [("kernel", &s.kernel), ("initrd", &s.initrd), ("disk", &s.disk), ("iso", &s.iso)] {
        let Some(p) = p else { continue };
        let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        let stamp = std::fs::metadata(&abs)
            .map(|md| {
                let mtime = md.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                format!("{} bytes, modified {}", md.len(), mtime.map_or(0, |d| d.as_secs()))
            })
            .unwrap_or_else(|_| "missing".into());
        m.insert(what.to_string(), format!("{} ({stamp})", abs.display()));
    }
    m.insert("memory".into(), format!("{} MiB", s.memory_mib));
    m.insert("cpus".into(), s.cpus.to_string());
    m.insert("machine".into(), s.machine.clone());
    m
}

/// The disk an earlier run kept in `home`, when it was made from what the
/// target has now.
fn kept_disk(name: &str, s: &QemuSettings, home: &Path) -> Result<PathBuf, VmError> {
    let disk = home.join(KEPT_DISK);
    let first = "run the scenario with --keep-checkpoints (or `keep_checkpoints: true`) first";
    if !disk.is_file() {
        return Err(VmError::Config(format!(
            "VM '{name}' has no kept checkpoints ({} does not exist): {first}",
            disk.display()
        )));
    }
    let note: std::collections::BTreeMap<String, String> =
        std::fs::read(home.join(KEPT_NOTE)).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(|| {
            VmError::Config(format!("{} is missing or unreadable: {first}", home.join(KEPT_NOTE).display()))
        })?;
    let now = made_from(s);
    let keys: std::collections::BTreeSet<&String> = note.keys().chain(now.keys()).collect();
    let changed: Vec<String> = keys
        .into_iter()
        .filter(|k| note.get(*k) != now.get(*k))
        .map(|k| {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "none".into());
            format!("{k}: was {}, now {}", show(note.get(k)), show(now.get(k)))
        })
        .collect();
    if !changed.is_empty() {
        return Err(VmError::Config(format!(
            "the checkpoints kept for VM '{name}' were made from something else ({}); run without \
             --from-checkpoint, with --keep-checkpoints, to make new ones",
            changed.join("; ")
        )));
    }
    Ok(disk)
}

/// HMP takes the rest of the line as the name: keep names to what tags allow.
fn check_snapshot_name(name: &str) -> Result<(), VmError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(VmError::Config(format!("'{name}' is not a snapshot name (letters, digits, - _ . ; at most 64)")))
    }
}

/// Parse HMP `info snapshots`:
/// ```text
/// List of snapshots present on all disks:
/// ID        TAG               VM_SIZE                DATE        VM_CLOCK     ICOUNT
/// --        s1                 98 MiB 2026-11-24 18:43:27  0000:00:08.409         --
/// ```
pub fn parse_snapshots(text: &str) -> Vec<SnapshotInfo> {
    let mut out = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.first() == Some(&"ID") && cols.get(1) == Some(&"TAG") {
            in_table = true;
            continue;
        }
        if !in_table || cols.len() < 6 {
            continue;
        }
        // ID TAG SIZE UNIT DATE TIME CLOCK [ICOUNT]
        let size = cols.get(2).and_then(|n| n.parse::<f64>().ok()).map(|n| {
            let unit = match cols.get(3).copied() {
                Some("KiB") => 1u64 << 10,
                Some("MiB") => 1 << 20,
                Some("GiB") => 1 << 30,
                Some("TiB") => 1 << 40,
                _ => 1,
            };
            (n * unit as f64) as u64
        });
        out.push(SnapshotInfo {
            name: cols[1].to_string(),
            vm_state_bytes: size,
            date: Some(format!("{} {}", cols[4], cols[5])),
            description: None,
        });
    }
    out
}

/// Parse a binary PPM (P6, maxval 255) as QEMU's `screendump` writes it.
pub fn parse_ppm(bytes: &[u8]) -> Result<Frame, VmError> {
    let bad = |detail: &str| VmError::Protocol { what: "screendump".into(), detail: detail.to_string() };
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'#') {
            if bytes[i] == b'#' {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            } else {
                i += 1;
            }
        }
        let start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if start == i {
            return Err(bad("truncated PPM header"));
        }
        fields.push(std::str::from_utf8(&bytes[start..i]).map_err(|_| bad("PPM header is not text"))?);
    }
    i += 1; // the single whitespace after maxval
    if fields[0] != "P6" {
        return Err(bad(&format!("not a binary PPM (magic {})", fields[0])));
    }
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad(&format!("bad PPM number '{s}'")));
    let (w, h, max) = (num(fields[1])?, num(fields[2])?, num(fields[3])?);
    if max != 255 {
        return Err(bad(&format!("PPM maxval {max}, expected 255")));
    }
    let len = w as usize * h as usize * 3;
    let data = bytes.get(i..i + len).ok_or_else(|| bad("PPM shorter than its size"))?;
    Frame::from_rgb(w, h, data).map_err(|e| bad(&e.to_string()))
}

/// The format of a disk image, from `qemu-img info`.
async fn image_format(path: &Path) -> Result<String, VmError> {
    let out = tokio::process::Command::new("qemu-img")
        .arg("info")
        .arg("--output=json")
        .arg("-U")
        .arg(path)
        .output()
        .await
        .map_err(|e| VmError::Spawn { program: "qemu-img".into(), source: e })?;
    if !out.status.success() {
        return Err(VmError::Command {
            command: format!("qemu-img info {}", path.display()),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| VmError::Protocol { what: "qemu-img info".into(), detail: e.to_string() })?;
    Ok(v["format"].as_str().unwrap_or("raw").to_string())
}

/// Is KVM usable and fast? A QEMU without a disk runs its firmware to "No
/// bootable device" (about 0.5 s under TCG, well under that with KVM); a
/// QEMU whose KVM aborts (failed MSR writes on nested setups) exits, and one
/// whose KVM crawls does not get there in 3 s. Returns TCG and why otherwise.
pub async fn probe_kvm(binary: &str) -> (Accel, Option<String>) {
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return (Accel::Tcg, Some(format!("/dev/kvm: {e}")));
    }
    let Ok(dir) = tempfile::Builder::new().prefix("smoke-kvm-probe-").tempdir() else {
        return (Accel::Tcg, Some("cannot create a directory for the KVM probe".into()));
    };
    let debug = dir.path().join("firmware.log");
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(["-accel", "kvm", "-cpu", "host", "-machine", "pc", "-m", "32", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-global", "isa-debugcon.iobase=0x402", "-debugcon"])
        .arg(format!("file:{}", debug.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    process::isolate(&mut cmd);
    let Ok(mut child) = cmd.spawn() else {
        return (Accel::Tcg, Some(format!("cannot start {binary}")));
    };
    let started = Instant::now();
    let limit = Duration::from_secs(3);
    let verdict = loop {
        if std::fs::read_to_string(&debug).is_ok_and(|t| t.contains("No bootable device")) {
            break (Accel::Kvm, None);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = tokio::time::timeout(Duration::from_secs(1), e.read_to_string(&mut err)).await;
            }
            let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
            break (Accel::Tcg, Some(format!("a KVM probe QEMU exited ({status}): {last}")));
        }
        if started.elapsed() > limit {
            break (Accel::Tcg, Some(format!("a KVM probe did not finish its firmware within {}s", limit.as_secs())));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if let Some(pid) = child.id() {
        process::stop_group(pid, Duration::from_secs(1)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
    verdict
}

/// A loopback port free right now (QEMU binds it a moment later; a clash
/// makes QEMU fail, and start tries another).
fn free_port() -> Result<u16, VmError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| VmError::Io { what: "find a free loopback port".into(), source: e })
}

/// 8 random characters (VNC uses at most 8).
fn random_password() -> Result<String, VmError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| VmError::Io {
        what: "random VNC password".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect())
}

/// The end of QEMU's log since `offset` (its error message).
fn log_tail(path: &Path, offset: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default()).to_string();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_table_is_parsed() {
        let text = "List of snapshots present on all disks:\r\nID        TAG               VM_SIZE                DATE        VM_CLOCK     ICOUNT\r\n--        s1                 98 MiB 2026-11-24 18:43:27  0000:00:08.409         --\r\n--        clean-2           1.5 GiB 2026-11-24 18:44:00  0000:00:09.000         --\r\n";
        let s = parse_snapshots(text);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].name.as_str(), s[0].vm_state_bytes), ("s1", Some(98 << 20)));
        assert_eq!(s[0].date.as_deref(), Some("2026-11-24 18:43:27"));
        assert_eq!((s[1].name.as_str(), s[1].vm_state_bytes), ("clean-2", Some(3 << 29)));
        assert!(parse_snapshots("There is no snapshot available.\r\n").is_empty());
    }

    #[test]
    fn ppm_is_parsed_and_bad_ones_are_errors() {
        let mut ppm = b"P6\n# comment\n2 1\n255\n".to_vec();
        ppm.extend_from_slice(&[255, 0, 0, 0, 0, 255]);
        let f = parse_ppm(&ppm).unwrap();
        assert_eq!((f.width(), f.height(), f.rgb(0, 0), f.rgb(1, 0)), (2, 1, [255, 0, 0], [0, 0, 255]));
        assert!(parse_ppm(b"P6\n2 1\n255\n\x00").is_err());
        assert!(parse_ppm(b"P5\n2 1\n255\n\x00\x00").is_err());
    }

    #[test]
    fn snapshot_names_are_checked() {
        assert!(check_snapshot_name("clean-1.2_x").is_ok());
        for bad in ["", "a b", "x;quit", "a\nquit"] {
            assert!(check_snapshot_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vfio_devices_in_extra_args_are_the_gpus() {
        let s = QemuSettings {
            extra_args: ["-device", "vfio-pci,host=01:00.0,multifunction=on", "-device", "virtio-rng-pci", "-device"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        };
        assert_eq!(s.passthrough(), vec!["0000:01:00.0"]);
        assert!(s.capabilities().gpu);
        let vm = QemuVm::new("g", s, Path::new("/tmp"));
        let keys = crate::vm::lock::keys_for(&vm);
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(!QemuSettings::default().capabilities().gpu);
    }

    #[test]
    fn a_kept_disk_is_refused_when_the_guest_changed() {
        let home = tempfile::tempdir().unwrap();
        let kernel = home.path().join("vmlinuz");
        std::fs::write(&kernel, b"kernel one").unwrap();
        let settings = QemuSettings { kernel: Some(kernel.clone()), ..Default::default() };
        let e = kept_disk("vm", &settings, home.path()).unwrap_err().to_string();
        assert!(e.contains("has no kept checkpoints") && e.contains("--keep-checkpoints"), "{e}");
        std::fs::write(home.path().join(KEPT_DISK), b"qcow2").unwrap();
        let note = serde_json::to_string(&made_from(&settings)).unwrap();
        std::fs::write(home.path().join(KEPT_NOTE), note).unwrap();
        assert_eq!(kept_disk("vm", &settings, home.path()).unwrap(), home.path().join(KEPT_DISK));
        // a rebuilt kernel, more memory
        std::fs::write(&kernel, b"kernel two, longer").unwrap();
        let bigger = QemuSettings { memory_mib: settings.memory_mib * 2, ..settings.clone() };
        let e = kept_disk("vm", &bigger, home.path()).unwrap_err().to_string();
        assert!(e.contains("kernel: was") && e.contains("10 bytes") && e.contains("18 bytes"), "{e}");
        assert!(e.contains(&format!("memory: was {} MiB, now {} MiB", settings.memory_mib, bigger.memory_mib)), "{e}");
    }

    #[test]
    fn command_line_has_the_pieces() {
        let logs = tempfile::tempdir().unwrap();
        let mut vm = QemuVm::new(
            "t",
            QemuSettings {
                kernel: Some("/k".into()),
                append: Some("console=ttyS0".into()),
                ssh_forward: true,
                extra_args: vec!["-smbios".into(), "type=1".into()],
                ..Default::default()
            },
            logs.path(),
        );
        vm.dir = Some(tempfile::tempdir().unwrap());
        vm.accel = Some(Accel::Tcg);
        vm.instance_disk = Some("/tmp/x/instance.qcow2".into());
        let a = vm.command_line(Some(2222)).unwrap().join(" ");
        for want in [
            "-accel tcg,thread=multi -cpu max",
            "-kernel /k",
            "-append console=ttyS0",
            "file=/tmp/x/instance.qcow2,if=none,id=smoke-state,format=qcow2",
            "-vnc 127.0.0.1:0,to=1000,password=on",
            "hostfwd=tcp:127.0.0.1:2222-:22",
            "-device virtio-net-pci,netdev=net0",
            "-serial chardev:serial0",
            "-nodefaults",
            " -S ",
        ] {
            assert!(a.contains(want), "{want} not in {a}");
        }
        assert!(a.ends_with("-smbios type=1"), "{a}");
        assert!(a.contains(&format!("logfile={}", logs.path().join("serial.log").display())), "{a}");
    }
}
