//! Virtual machines as targets: one trait, [`VmBackend`], for every way smoke
//! runs a VM (a local QEMU, a Proxmox VE node), and the types it speaks.
//!
//! A backend is prepared (preflight checks, overlays), started, reached over
//! VNC (and SSH when the target has it), snapshotted and rolled back, and
//! always torn down. Optional abilities (screendumps, a serial console,
//! linked clones) are announced by [`Capabilities`]; asking a backend for one
//! it lacks gives [`VmError::Unsupported`].
//!
//! The trait is dyn-compatible: methods return boxed futures ([`VmFuture`]),
//! so a `Box<dyn VmBackend>` can be chosen from the inventory at run time.

pub mod boot;
pub mod lock;
pub mod proxmox;
pub mod qemu;
pub mod qmp;
pub mod serial;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed future of a VM operation.
pub type VmFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, VmError>> + Send + 'a>>;

/// Why a VM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The backend has no such ability (see [`Capabilities`]).
    #[error("the {backend} backend cannot {operation}")]
    Unsupported { backend: &'static str, operation: &'static str },
    #[error("'{program}' is not installed{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    MissingProgram { program: String, hint: Option<String> },
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// Wrong or contradictory settings, found before anything started.
    #[error("{0}")]
    Config(String),
    /// The machine's monitor (QMP, HMP, a management API) refused a command.
    #[error("{command} failed: {message}")]
    Command { command: String, message: String },
    /// The peer said something that does not follow its protocol.
    #[error("{what}: {detail}")]
    Protocol { what: String, detail: String },
    #[error("timed out after {:.1}s waiting for {what}", waited.as_secs_f64())]
    Timeout { what: String, waited: Duration },
    /// The VM process (or the VM on its host) is gone.
    #[error("{what} is not running{}", if log_tail.is_empty() { String::new() } else { format!(":\n{log_tail}") })]
    NotRunning { what: String, log_tail: String },
    /// Another run holds the VM (or its GPU).
    #[error("{resource} is in use by {holder}")]
    Busy { resource: String, holder: String },
    #[error(transparent)]
    Serial(#[from] serial::SerialError),
    #[error(transparent)]
    Qmp(#[from] qmp::QmpError),
}

/// A PCI address as `DOMAIN:BUS:DEVICE[.FUNCTION]`: QEMU's `vfio-pci
/// host=` and PVE's `hostpci` take `01:00.0` (domain 0000 implied) and PVE
/// `01:00` (every function); lower case, with the domain, so that one device
/// has one lock whichever way it was written.
pub fn normalize_pci(address: &str) -> String {
    let a = address.trim().to_ascii_lowercase();
    if a.matches(':').count() >= 2 { a } else { format!("0000:{a}") }
}

/// The name of this machine, for locks on its devices.
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A GPU passed through to a VM, for locking it across runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GpuRef {
    pub host: String,
    /// PCI address, e.g. `0000:01:00.0`.
    pub pci: String,
}

/// What a backend can do beyond start, stop and VNC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub snapshots: bool,
    pub screendump: bool,
    pub serial: bool,
    pub linked_clone: bool,
    pub gpu: bool,
    pub ssh: bool,
}

impl Capabilities {
    /// Names for `smoke targets`, in a fixed order.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.snapshots, "snapshots"),
            (self.screendump, "screendump"),
            (self.serial, "serial"),
            (self.linked_clone, "linked-clone"),
            (self.gpu, "gpu"),
            (self.ssh, "ssh"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// Whether the VM runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmStatus {
    Running,
    Paused,
    Stopped,
    /// A state the backend reports that is none of the above (e.g. QMP `inmigrate`).
    Unknown(String),
}

/// How to stop a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Ask the guest to power off (ACPI), wait up to `timeout`, then force it.
    Graceful { timeout: Duration },
    /// Force it off at once.
    Hard,
}

/// Which step of the stop ladder ended the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopPath {
    /// It was not running.
    AlreadyStopped,
    /// The guest powered off after an ACPI power-down request.
    Powerdown,
    /// The VM process ended on SIGTERM (or the host's stop request).
    Terminated,
    /// The VM process had to be killed (SIGKILL, a forced stop).
    Killed,
    /// Nothing worked: the VM may still run (see the report's errors).
    Failed,
}

impl std::fmt::Display for StopPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopPath::AlreadyStopped => "already stopped",
            StopPath::Powerdown => "powerdown",
            StopPath::Terminated => "terminated",
            StopPath::Killed => "killed",
            StopPath::Failed => "failed",
        })
    }
}

/// How a stop went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopOutcome {
    pub path: StopPath,
    pub elapsed: Duration,
}

/// What teardown did: the stop path, each step taken (for the log), and
/// what went wrong along the way. Teardown itself never fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeardownReport {
    pub path: StopPath,
    pub elapsed: Duration,
    pub steps: Vec<String>,
    pub errors: Vec<String>,
}

/// One snapshot of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub name: String,
    /// Bytes of saved VM state (RAM, devices); 0 for disk-only snapshots.
    pub vm_state_bytes: Option<u64>,
    /// When it was taken, as the backend reports it.
    pub date: Option<String>,
    pub description: Option<String>,
}

fn unsupported<'a, T: Send + 'a>(backend: &'static str, operation: &'static str) -> VmFuture<'a, T> {
    Box::pin(async move { Err(VmError::Unsupported { backend, operation }) })
}

/// A virtual machine smoke can start, look at, snapshot and stop.
pub trait VmBackend: Send {
    /// `"qemu"`, `"proxmox"`.
    fn kind(&self) -> &'static str;
    /// What two runs must not use at once, e.g. `qemu:<abs disk path>`,
    /// `proxmox:<host>:<node>:<vmid>`.
    fn lock_key(&self) -> String;
    /// The PCI devices (GPUs) passed through to the VM; each is locked
    /// too. Known after `prepare` for backends that read the VM's config.
    fn gpus(&self) -> Vec<GpuRef> {
        Vec::new()
    }
    fn capabilities(&self) -> Capabilities;
    /// Check that everything needed is there and make per-instance files
    /// (overlays); returns warnings worth showing (e.g. "KVM unusable, TCG").
    fn prepare(&mut self) -> VmFuture<'_, Vec<String>>;
    fn start(&mut self) -> VmFuture<'_, ()>;
    fn status(&mut self) -> VmFuture<'_, VmStatus>;
    fn stop(&mut self, mode: StopMode) -> VmFuture<'_, StopOutcome>;
    /// Hard reset (the reset button).
    fn reset(&mut self) -> VmFuture<'_, ()>;
    fn snapshot_create(&mut self, name: &str) -> VmFuture<'_, ()>;
    /// Go back to a snapshot; the VM runs afterwards.
    fn snapshot_rollback(&mut self, name: &str) -> VmFuture<'_, ()>;
    fn snapshot_delete(&mut self, name: &str) -> VmFuture<'_, ()>;
    fn snapshot_list(&mut self) -> VmFuture<'_, Vec<SnapshotInfo>>;
    /// How to reach the screen; fresh on each call (a Proxmox ticket is single use).
    fn vnc(&mut self) -> VmFuture<'_, crate::backend::VncAccess>;
    /// Where the guest's SSH server answers (host, port), when it is reachable.
    fn ssh_endpoint(&self) -> Option<(String, u16)>;
    /// Stop the VM (gracefully first) and remove what prepare made. Never fails.
    fn teardown(&mut self) -> Pin<Box<dyn Future<Output = TeardownReport> + Send + '_>>;
    /// The screen as the VM's monitor sees it (no VNC needed).
    fn screendump(&mut self) -> VmFuture<'_, crate::frame::Frame> {
        unsupported(self.kind(), "take a screendump")
    }
    /// The guest's first serial port.
    fn serial(&mut self) -> VmFuture<'_, Arc<serial::SerialConsole>> {
        unsupported(self.kind(), "open a serial console")
    }
    /// A new VM sharing this one's disk copy-on-write.
    fn linked_clone(&mut self, name: &str) -> VmFuture<'_, Box<dyn VmBackend>> {
        let _ = name;
        unsupported(self.kind(), "make a linked clone")
    }
    /// For backends whose VNC access admits one connection (Proxmox VE's
    /// tickets): what a VNC client asks for a new access when it reconnects
    /// (after a stall, a dropped proxy, a rollback that restarted QEMU).
    /// `None`: the access [`VmBackend::vnc`] gave stays good.
    fn vnc_renewal(&self) -> Option<Arc<dyn crate::rfb::AccessRenewal>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_are_normalized() {
        assert_eq!(normalize_pci("01:00.0"), "0000:01:00.0");
        assert_eq!(normalize_pci("0000:0A:00.1"), "0000:0a:00.1");
        assert_eq!(normalize_pci(" 01:00 "), "0000:01:00");
    }

    #[test]
    fn capability_names_in_order() {
        let c = Capabilities { snapshots: true, serial: true, linked_clone: true, ..Default::default() };
        assert_eq!(c.names(), vec!["snapshots", "serial", "linked-clone"]);
        assert!(Capabilities::default().names().is_empty());
    }

    struct Bare;
    impl VmBackend for Bare {
        fn kind(&self) -> &'static str {
            "bare"
        }
        fn lock_key(&self) -> String {
            "bare:1".into()
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        fn prepare(&mut self) -> VmFuture<'_, Vec<String>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn start(&mut self) -> VmFuture<'_, ()> {
            Box::pin(async { Ok(()) })
        }
        fn status(&mut self) -> VmFuture<'_, VmStatus> {
            Box::pin(async { Ok(VmStatus::Stopped) })
        }
        fn stop(&mut self, _mode: StopMode) -> VmFuture<'_, StopOutcome> {
            Box::pin(async { Ok(StopOutcome { path: StopPath::AlreadyStopped, elapsed: Duration::ZERO }) })
        }
        fn reset(&mut self) -> VmFuture<'_, ()> {
            Box::pin(async { Ok(()) })
        }
        fn snapshot_create(&mut self, _name: &str) -> VmFuture<'_, ()> {
            unsupported("bare", "take snapshots")
        }
        fn snapshot_rollback(&mut self, _name: &str) -> VmFuture<'_, ()> {
            unsupported("bare", "roll back snapshots")
        }
        fn snapshot_delete(&mut self, _name: &str) -> VmFuture<'_, ()> {
            unsupported("bare", "delete snapshots")
        }
        fn snapshot_list(&mut self) -> VmFuture<'_, Vec<SnapshotInfo>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn vnc(&mut self) -> VmFuture<'_, crate::backend::VncAccess> {
            unsupported("bare", "show a screen")
        }
        fn ssh_endpoint(&self) -> Option<(String, u16)> {
            None
        }
        fn teardown(&mut self) -> Pin<Box<dyn Future<Output = TeardownReport> + Send + '_>> {
            Box::pin(async {
                TeardownReport {
                    path: StopPath::AlreadyStopped,
                    elapsed: Duration::ZERO,
                    steps: Vec::new(),
                    errors: Vec::new(),
                }
            })
        }
    }

    #[tokio::test]
    async fn optional_abilities_default_to_unsupported_through_dyn() {
        let mut vm: Box<dyn VmBackend> = Box::new(Bare);
        let e = vm.screendump().await.unwrap_err();
        assert_eq!(e.to_string(), "the bare backend cannot take a screendump");
        assert!(matches!(vm.serial().await, Err(VmError::Unsupported { operation: "open a serial console", .. })));
        assert!(matches!(vm.linked_clone("x").await, Err(VmError::Unsupported { backend: "bare", .. })));
    }
}
