//! Advisory locks on machines: one per VM (the backend's `lock_key()`) and
//! one per passed-through GPU (host + PCI address), so two runs never drive
//! the same VM or share a GPU at once.
//!
//! A lock is an exclusive `flock(2)` on a file in the lock directory
//! (`$SMOKE_LOCK_DIR`, else `$XDG_RUNTIME_DIR/smoke/locks`, else
//! `/tmp/smoke-locks-$UID`). The kernel releases it when the holder dies, even
//! on SIGKILL. The holder writes who it is into the file (pid, host, run,
//! scenario, since), so a waiter that gives up can say who is in the way; a
//! holder that ends normally empties the file before unlocking. Finding a
//! holder record when the lock is free means its holder died without
//! releasing: the lock is recovered, and the recovery is reported.
//!
//! Waiting polls a non-blocking `flock` (every 100 ms, up to 1 s apart), so a
//! wait can be cancelled and never blocks a runtime thread. Take VM locks
//! before GPU locks ([`acquire_all`] does), so two runs never wait on each
//! other in a cycle.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How long `smoke run` waits for a busy machine by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const POLL_FIRST: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(1);
/// Longest sanitized key in a lock file name (the hash keeps names unique).
const NAME_MAX: usize = 80;

/// What a lock protects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LockKey {
    /// A VM, by its backend's `lock_key()` (`qemu:/abs/disk.qcow2`, `proxmox:host:node:100`).
    Vm { key: String },
    /// A GPU passed through to VMs: the host it sits in and its PCI address.
    Gpu { host: String, pci: String },
}

impl LockKey {
    pub fn vm(key: impl Into<String>) -> LockKey {
        LockKey::Vm { key: key.into() }
    }

    pub fn gpu(host: impl Into<String>, pci: impl Into<String>) -> LockKey {
        LockKey::Gpu { host: host.into(), pci: pci.into() }
    }

    /// The lock file's name: a readable part and a hash of the whole key.
    pub fn file_name(&self) -> String {
        let (prefix, text) = match self {
            LockKey::Vm { key } => ("vm", key.clone()),
            LockKey::Gpu { host, pci } => ("gpu", format!("{host}:{pci}")),
        };
        let readable: String = text
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
            .collect();
        let readable: String = readable.trim_matches('_').chars().take(NAME_MAX).collect();
        let digest = ring::digest::digest(&ring::digest::SHA256, format!("{prefix}\0{text}").as_bytes());
        let hash: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{prefix}-{readable}-{hash}.lock")
    }
}

impl std::fmt::Display for LockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockKey::Vm { key } => write!(f, "vm {key}"),
            LockKey::Gpu { host, pci } => write!(f, "gpu {pci} on {host}"),
        }
    }
}

/// Who holds (or held) a lock; written into the lock file as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub key: LockKey,
    pub pid: u32,
    pub host: String,
    /// What the holder is doing, e.g. `smoke run scenarios/a.yaml`.
    pub purpose: String,
    /// The run's id (its results folder), when it is a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Seconds since the Unix epoch when the lock was taken.
    pub since: u64,
    /// The same moment as RFC 3339 (UTC), for people reading the file.
    pub since_utc: String,
}

impl Holder {
    /// How long the lock has been held.
    pub fn held_for(&self) -> Duration {
        Duration::from_secs(unix_now().saturating_sub(self.since))
    }

    /// Is the recorded process still there? Only answerable on the same host.
    pub fn liveness(&self) -> Liveness {
        if self.host != hostname() {
            return Liveness::OtherHost;
        }
        if pid_alive(self.pid) { Liveness::Alive } else { Liveness::Dead }
    }

    /// `pid 123 on host (smoke run a.yaml, run 2026...), since 12 s`.
    pub fn describe(&self) -> String {
        let host = if self.host == hostname() { String::new() } else { format!(" on {}", self.host) };
        let run = self.run.as_ref().map(|r| format!(", run {r}")).unwrap_or_default();
        format!("pid {}{host} ({}{run}), since {}", self.pid, self.purpose, secs(self.held_for()))
    }
}

/// Whether a recorded holder still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    /// Recorded on another host: cannot tell.
    OtherHost,
}

/// What the caller says about itself when it takes a lock.
#[derive(Debug, Clone, Default)]
pub struct Purpose {
    /// e.g. `smoke run scenarios/a.yaml`.
    pub what: String,
    /// The run's id.
    pub run: Option<String>,
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{}", busy_message(key, holder.as_deref(), *waited))]
    Busy { key: LockKey, holder: Option<Box<Holder>>, waited: Duration },
    #[error("lock directory {}: {source}", path.display())]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("lock file {}: {source}", path.display())]
    File { path: PathBuf, source: std::io::Error },
    #[error("waiting for {key} was cancelled")]
    Cancelled { key: LockKey },
}

fn busy_message(key: &LockKey, holder: Option<&Holder>, waited: Duration) -> String {
    let who = match holder {
        Some(h) => {
            let note = match h.liveness() {
                Liveness::Dead => {
                    "; that process is gone, so another process inherited the lock (a leftover child? see `smoke locks`)"
                }
                _ => "",
            };
            format!("is held by {}{note}", h.describe())
        }
        None => "is held by another process (it has not said who it is yet)".to_string(),
    };
    format!("{key} {who}; waited {}", secs(waited))
}

/// A seconds figure for messages: `12 s`, `1.5 s`, `3 min 20 s`.
fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 && d.subsec_millis() != 0 {
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} min {} s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// Where lock files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockDir {
    pub path: PathBuf,
}

impl LockDir {
    pub fn new(path: impl Into<PathBuf>) -> LockDir {
        LockDir { path: path.into() }
    }

    /// `$SMOKE_LOCK_DIR`, else `$XDG_RUNTIME_DIR/smoke/locks`, else `/tmp/smoke-locks-$UID`.
    pub fn from_env() -> LockDir {
        let get = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        Self::resolve(get("SMOKE_LOCK_DIR"), get("XDG_RUNTIME_DIR"))
    }

    fn resolve(explicit: Option<PathBuf>, runtime: Option<PathBuf>) -> LockDir {
        if let Some(p) = explicit {
            return LockDir::new(p);
        }
        match runtime {
            Some(r) => LockDir::new(r.join("smoke").join("locks")),
            // SAFETY: getuid has no preconditions and cannot fail.
            None => LockDir::new(format!("/tmp/smoke-locks-{}", unsafe { libc::getuid() })),
        }
    }

    pub fn file(&self, key: &LockKey) -> PathBuf {
        self.path.join(key.file_name())
    }

    fn ensure(&self) -> Result<(), LockError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(|source| LockError::Dir { path: self.path.clone(), source })
    }

    /// Every lock file with its state, for `smoke locks`.
    pub fn list(&self) -> Result<Vec<LockState>, LockError> {
        let entries = match std::fs::read_dir(&self.path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(LockError::Dir { path: self.path.clone(), source }),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "lock") {
                continue;
            }
            let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else { continue };
            let free = try_flock(&file).map_err(|source| LockError::File { path: path.clone(), source })?;
            if free {
                unlock(&file);
            }
            out.push(LockState { holder: read_holder(&file), held: !free, path });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

/// One lock file as `smoke locks` shows it.
#[derive(Debug, Clone)]
pub struct LockState {
    pub path: PathBuf,
    pub held: bool,
    /// The record in the file: the holder when held; a dead holder's leftover when free.
    pub holder: Option<Holder>,
}

/// A held lock. Dropping it empties the holder record and unlocks.
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    pub key: LockKey,
    pub path: PathBuf,
    /// How long the caller waited for it.
    pub waited: Duration,
    /// A holder that died without releasing (its record was still in the file).
    pub recovered: Option<Holder>,
}

impl LockGuard {
    /// A line for events and logs about how the lock was taken.
    pub fn note(&self) -> String {
        let waited =
            if self.waited >= POLL_FIRST { format!(" after waiting {}", secs(self.waited)) } else { String::new() };
        match &self.recovered {
            Some(h) => format!(
                "locked {}{waited}; recovered a stale lock: its holder pid {} ({}) ended without releasing it",
                self.key, h.pid, h.purpose
            ),
            None => format!("locked {}{waited}", self.key),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // empty the record while still holding the lock: a later holder that
        // finds a record knows its writer died without getting here
        let _ = self.file.set_len(0);
        unlock(&self.file);
    }
}

/// Take the lock on `key`, waiting up to `timeout` (polling; cancel by
/// dropping the future). The holder record names this process and `purpose`.
pub async fn acquire(
    dir: &LockDir,
    key: &LockKey,
    purpose: &Purpose,
    timeout: Duration,
) -> Result<LockGuard, LockError> {
    dir.ensure()?;
    let path = dir.file(key);
    let file_err = |source| LockError::File { path: path.clone(), source };
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(file_err)?;
    let start = Instant::now();
    let mut gap = POLL_FIRST;
    loop {
        if try_flock(&file).map_err(file_err)? {
            break;
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(LockError::Busy { key: key.clone(), holder: read_holder(&file).map(Box::new), waited });
        }
        if waited < POLL_FIRST * 2 {
            tracing::info!("{key} is busy ({}); waiting", busy_holder(&file));
        }
        tokio::time::sleep(gap.min(timeout - waited)).await;
        gap = (gap * 2).min(POLL_MAX);
    }
    let recovered = read_holder(&file);
    if let Some(h) = &recovered {
        tracing::warn!("{key}: recovered a stale lock left by {}", h.describe());
    }
    let now = unix_now();
    let me = Holder {
        key: key.clone(),
        pid: std::process::id(),
        host: hostname(),
        purpose: purpose.what.clone(),
        run: purpose.run.clone(),
        since: now,
        since_utc: crate::events::now_rfc3339(),
    };
    let mut text = serde_json::to_string(&me).unwrap_or_default();
    text.push('\n');
    let mut f = &file;
    let write = f.set_len(0).and_then(|_| f.seek(SeekFrom::Start(0))).and_then(|_| f.write_all(text.as_bytes()));
    if let Err(e) = write.and_then(|_| f.flush()) {
        unlock(&file);
        return Err(file_err(e));
    }
    Ok(LockGuard { file, key: key.clone(), path, waited: start.elapsed(), recovered })
}

/// Take several locks, VM locks before GPU locks (a fixed order, so two runs
/// never wait on each other in a cycle), sharing one `timeout`. On an error
/// the locks already taken are released.
pub async fn acquire_all(
    dir: &LockDir,
    keys: &[LockKey],
    purpose: &Purpose,
    timeout: Duration,
) -> Result<Vec<LockGuard>, LockError> {
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    let start = Instant::now();
    let mut out = Vec::new();
    for k in &keys {
        out.push(acquire(dir, k, purpose, timeout.saturating_sub(start.elapsed())).await?);
    }
    Ok(out)
}

/// How a run locks its machine.
#[derive(Debug, Clone)]
pub struct LockSettings {
    pub dir: LockDir,
    /// How long to wait for a busy machine.
    pub timeout: Duration,
    pub purpose: Purpose,
}

impl LockSettings {
    /// The lock directory from the environment, the default timeout.
    pub fn new(purpose: Purpose) -> LockSettings {
        LockSettings { dir: LockDir::from_env(), timeout: DEFAULT_TIMEOUT, purpose }
    }
}

/// The locks a VM needs: its own, and its GPU's when it has one. Take them
/// ([`acquire_all`]) before anything changes the VM; hold them until it is torn down.
pub fn keys_for(vm: &dyn crate::vm::VmBackend) -> Vec<LockKey> {
    let mut keys = vec![LockKey::vm(vm.lock_key())];
    for g in vm.gpus() {
        keys.push(LockKey::gpu(g.host, g.pci));
    }
    keys
}

impl From<LockError> for crate::vm::VmError {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Busy { ref key, .. } => {
                let text = e.to_string();
                let prefix = format!("{key} is held by ");
                let holder = text.strip_prefix(&prefix).unwrap_or(&text).to_string();
                crate::vm::VmError::Busy { resource: key.to_string(), holder }
            }
            LockError::Dir { path, source } | LockError::File { path, source } => {
                crate::vm::VmError::Io { what: format!("lock {}", path.display()), source }
            }
            LockError::Cancelled { key } => crate::vm::VmError::Config(format!("waiting for {key} was cancelled")),
        }
    }
}

fn busy_holder(file: &File) -> String {
    read_holder(file).map(|h| format!("held by {}", h.describe())).unwrap_or_else(|| "holder unknown".into())
}

fn read_holder(file: &File) -> Option<Holder> {
    let mut text = String::new();
    let mut f = file;
    f.seek(SeekFrom::Start(0)).ok()?;
    f.take(64 * 1024).read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// A non-blocking exclusive flock: `Ok(true)` when taken, `Ok(false)` when busy.
fn try_flock(file: &File) -> std::io::Result<bool> {
    loop {
        // SAFETY: flock on a valid, open file descriptor owned by `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

fn unlock(file: &File) {
    // SAFETY: flock on a valid, open file descriptor owned by `file`.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Is a process with this pid running (zombies count as gone)?
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid_t) = libc::pid_t::try_from(pid) else { return false };
    if pid_t <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // the state follows the command name in parentheses, which may itself contain ')'
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X"),
        Err(_) if Path::new("/proc/self").exists() => false,
        // SAFETY: signal 0 only checks for existence and permission.
        Err(_) => unsafe {
            libc::kill(pid_t, 0) == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purpose(what: &str) -> Purpose {
        Purpose { what: what.into(), run: Some("2026-01-01T00-00-00".into()) }
    }

    #[test]
    fn file_names_are_readable_unique_and_bounded() {
        let a = LockKey::vm("qemu:/var/lib/images/a b.qcow2").file_name();
        let b = LockKey::vm("qemu:/var/lib/images/a_b.qcow2").file_name();
        assert!(a.starts_with("vm-qemu__var_lib_images_a_b.qcow2-"), "{a}");
        assert!(a.ends_with(".lock"));
        assert_ne!(a, b, "a hash keeps keys that sanitize alike apart");
        let long = LockKey::vm("x".repeat(500)).file_name();
        assert!(long.len() < NAME_MAX + 30, "{long}");
        let gpu = LockKey::gpu("pve1", "0000:01:00.0").file_name();
        assert!(gpu.starts_with("gpu-pve1_0000_01_00.0-"), "{gpu}");
        assert!(LockKey::vm("a") < LockKey::gpu("a", "b"), "VM locks sort (and are taken) before GPU locks");
    }

    #[test]
    fn lock_dir_defaults() {
        assert_eq!(LockDir::resolve(Some("/x".into()), Some("/run/user/1".into())).path, PathBuf::from("/x"));
        assert_eq!(LockDir::resolve(None, Some("/run/user/1".into())).path, PathBuf::from("/run/user/1/smoke/locks"));
        assert!(LockDir::resolve(None, None).path.to_string_lossy().starts_with("/tmp/smoke-locks-"));
    }

    #[test]
    fn liveness_of_pids() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
        assert!(!pid_alive(u32::MAX));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!pid_alive(pid), "a reaped child is gone");
    }

    #[test]
    fn messages_name_the_holder() {
        let h = Holder {
            key: LockKey::vm("qemu:/x"),
            pid: 123,
            host: hostname(),
            purpose: "smoke run scenarios/a.yaml".into(),
            run: Some("2026-05-01T10-00-00".into()),
            since: unix_now() - 12,
            since_utc: String::new(),
        };
        let e = LockError::Busy { key: h.key.clone(), holder: Some(Box::new(h)), waited: Duration::from_secs(30) };
        let m = e.to_string();
        assert!(
            m.starts_with(
                "vm qemu:/x is held by pid 123 (smoke run scenarios/a.yaml, run 2026-05-01T10-00-00), since 1"
            ),
            "{m}"
        );
        assert!(m.ends_with("; waited 30 s"), "{m}");
        assert_eq!(secs(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(secs(Duration::from_secs(200)), "3 min 20 s");
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_release_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LockDir::new(tmp.path().join("locks"));
        let key = LockKey::vm("qemu:/a");
        let g = acquire(&dir, &key, &purpose("first"), Duration::ZERO).await.unwrap();
        assert!(g.recovered.is_none());
        // flock locks belong to the open file: a second open in this process conflicts too
        let e = acquire(&dir, &key, &purpose("second"), Duration::from_millis(300)).await.unwrap_err();
        let LockError::Busy { holder: Some(h), waited, .. } = &e else { panic!("{e}") };
        assert_eq!(h.purpose, "first");
        assert_eq!(h.pid, std::process::id());
        assert!(*waited >= Duration::from_millis(300));
        // a different key is independent
        let other = acquire(&dir, &LockKey::vm("qemu:/b"), &purpose("other"), Duration::ZERO).await.unwrap();
        drop(other);
        let states = dir.list().unwrap();
        assert_eq!(states.len(), 2);
        assert!(states.iter().any(|s| s.held && s.holder.as_ref().is_some_and(|h| h.purpose == "first")));
        assert!(states.iter().any(|s| !s.held && s.holder.is_none()), "a released lock leaves no record");
        drop(g);
        let g = acquire(&dir, &key, &purpose("third"), Duration::ZERO).await.unwrap();
        assert!(g.recovered.is_none(), "a cleanly released lock is not 'recovered'");
    }

    #[tokio::test]
    async fn a_record_without_a_holder_is_recovered() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LockDir::new(tmp.path());
        let key = LockKey::gpu("host", "0000:01:00.0");
        let dead = Holder {
            key: key.clone(),
            pid: u32::MAX - 1,
            host: hostname(),
            purpose: "smoke run crashed.yaml".into(),
            run: None,
            since: unix_now() - 100,
            since_utc: String::new(),
        };
        std::fs::write(dir.file(&key), serde_json::to_string(&dead).unwrap()).unwrap();
        let g = acquire(&dir, &key, &purpose("next"), Duration::ZERO).await.unwrap();
        assert_eq!(g.recovered.as_ref().map(|h| h.pid), Some(u32::MAX - 1));
        assert!(g.note().contains("recovered a stale lock"), "{}", g.note());
    }

    #[tokio::test]
    async fn acquire_all_takes_vm_before_gpu_and_releases_on_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LockDir::new(tmp.path());
        let vm = LockKey::vm("proxmox:h:n:100");
        let gpu = LockKey::gpu("h", "0000:01:00.0");
        let held_gpu = acquire(&dir, &gpu, &purpose("other run"), Duration::ZERO).await.unwrap();
        let e = acquire_all(&dir, &[gpu.clone(), vm.clone()], &purpose("me"), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("gpu 0000:01:00.0 on h is held by pid"), "{e}");
        // the VM lock taken first was released again
        drop(acquire(&dir, &vm, &purpose("x"), Duration::ZERO).await.unwrap());
        drop(held_gpu);
        let all = acquire_all(&dir, &[gpu, vm.clone(), vm], &purpose("me"), Duration::ZERO).await.unwrap();
        assert_eq!(all.len(), 2);
        assert!(matches!(all[0].key, LockKey::Vm { .. }));
    }
}
