//! Machine locks across real processes: `smoke locks --hold KEY` children
//! hold a VM lock while the test (or another child) waits for it, gets it
//! after the holder ends, is refused with the holder named, and recovers
//! the lock of a holder killed with SIGKILL.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use smoke::vm::lock::{self, LockDir, LockError, LockKey, Purpose};

struct Holder {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Holder {
    /// `smoke locks --hold KEY --dir DIR`, its stdout lines on a channel.
    fn spawn(dir: &std::path::Path, key: &str, extra: &[&str]) -> Holder {
        let mut child = Command::new(env!("CARGO_BIN_EXE_smoke"))
            .args(["locks", "--dir"])
            .arg(dir)
            .args(["--hold", key])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
        std::thread::spawn(move || {
            BufReader::new(err).lines().map_while(Result::ok).for_each(|l| drop(tx2.send(format!("stderr: {l}"))))
        });
        Holder { child, lines }
    }

    /// The first line containing `what`, within `within`.
    fn wait_for(&self, what: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(what) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn purpose() -> Purpose {
    Purpose { what: "vm_lock test".into(), run: Some("test-run".into()) }
}

#[tokio::test(flavor = "current_thread")]
async fn a_second_holder_waits_then_gets_the_lock_and_other_keys_do_not_wait() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Holder::spawn(tmp.path(), "qemu:/images/a.qcow2", &[]);
    assert!(a.wait_for("holding", Duration::from_secs(10)).is_some(), "first holder never got the lock");

    // another key is independent: taken at once
    let t0 = Instant::now();
    let c = Holder::spawn(tmp.path(), "qemu:/images/c.qcow2", &[]);
    assert!(c.wait_for("holding", Duration::from_secs(10)).is_some());
    let other_key = t0.elapsed();

    // the same key waits while the first holds it...
    let b = Holder::spawn(tmp.path(), "qemu:/images/a.qcow2", &["--timeout", "30s"]);
    assert!(b.wait_for("holding", Duration::from_millis(1500)).is_none(), "two holders at once");
    // ...and the library sees who it waits for
    let dir = LockDir::new(tmp.path());
    let e = lock::acquire(&dir, &LockKey::vm("qemu:/images/a.qcow2"), &purpose(), Duration::from_millis(300))
        .await
        .unwrap_err();
    let LockError::Busy { holder: Some(h), .. } = &e else { panic!("{e}") };
    assert_eq!(h.pid, a.child.id());

    // the first ends normally (SIGTERM releases); the waiting one gets it
    let t1 = Instant::now();
    a.signal(libc::SIGTERM);
    let line = b.wait_for("holding", Duration::from_secs(10)).expect("the waiting holder never got the lock");
    let handover = t1.elapsed();
    assert!(line.contains("after waiting"), "{line}");
    assert!(!line.contains("recovered"), "a clean release is not a stale lock: {line}");
    eprintln!("lock taken for another key in {other_key:?}; handed over {handover:?} after the holder ended");
    assert!(handover < Duration::from_secs(3), "{handover:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn the_timeout_error_names_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Holder::spawn(tmp.path(), "qemu:/x", &["--purpose", "smoke run scenarios/a.yaml"]);
    assert!(a.wait_for("holding", Duration::from_secs(10)).is_some());
    std::thread::sleep(Duration::from_millis(1100));
    let b = Holder::spawn(tmp.path(), "qemu:/x", &["--timeout", "1s"]);
    let msg = b.wait_for("stderr:", Duration::from_secs(10)).expect("no error from the second holder");
    let want =
        format!("stderr: smoke: vm qemu:/x is held by pid {} (smoke run scenarios/a.yaml), since ", a.child.id());
    assert!(msg.starts_with(&want), "{msg}");
    assert!(msg.ends_with("; waited 1.0 s") || msg.ends_with("; waited 1 s"), "{msg}");
    let mut b = b;
    assert_eq!(b.child.wait().unwrap().code(), Some(3));

    // the library error says the same, with the run
    let dir = LockDir::new(tmp.path());
    let e = lock::acquire(&dir, &LockKey::vm("qemu:/x"), &purpose(), Duration::ZERO).await.unwrap_err();
    assert!(e.to_string().contains(&format!("held by pid {}", a.child.id())), "{e}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_holder_killed_with_sigkill_is_recovered() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Holder::spawn(tmp.path(), "proxmox:pve:node1:100", &["--purpose", "smoke run crash.yaml"]);
    assert!(a.wait_for("holding", Duration::from_secs(10)).is_some());
    let pid = a.child.id();
    a.signal(libc::SIGKILL);
    let _ = a.child.wait();
    // `smoke locks` tells the stale record apart from a held lock
    let out = Command::new(env!("CARGO_BIN_EXE_smoke")).args(["locks", "--dir"]).arg(tmp.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "vm proxmox:pve:node1:100  free (stale record of pid {pid} that ended without releasing it)"
        )),
        "{text}"
    );
    let dir = LockDir::new(tmp.path());
    let t0 = Instant::now();
    let g =
        lock::acquire(&dir, &LockKey::vm("proxmox:pve:node1:100"), &purpose(), Duration::from_secs(5)).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1), "the kernel released the killed holder's flock");
    let rec = g.recovered.as_ref().expect("the dead holder's record was not reported");
    assert_eq!(rec.pid, pid);
    assert_eq!(rec.purpose, "smoke run crash.yaml");
    assert!(
        g.note().contains(&format!("recovered a stale lock: its holder pid {pid} (smoke run crash.yaml)")),
        "{}",
        g.note()
    );
    drop(g);
    // and released cleanly, nothing is left to recover
    let g = lock::acquire(&dir, &LockKey::vm("proxmox:pve:node1:100"), &purpose(), Duration::ZERO).await.unwrap();
    assert!(g.recovered.is_none());
}
