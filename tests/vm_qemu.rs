//! The local QEMU backend against a real QEMU 10 booting the test guests of
//! `scripts/build-test-guest.sh` (`default`: a busybox shell on tty1 and
//! ttyS0; `ssh`: plus virtio-net, dropbear and an ACPI power button handler).
//!
//! - boot through the backend, serial expect/send, VNC (TCP, with the random
//!   password) capture and scancode typing checked on the serial console,
//!   screendump equal to the VNC frame, savevm -> change the screen -> loadvm
//!   restores the earlier screen, a missing snapshot is an error that leaves
//!   the VM running, teardown of a guest that ignores ACPI goes on to SIGTERM;
//! - the ssh guest over a Unix-socket VNC: SSH through the forwarded port
//!   runs a command, teardown ends with the guest's own powerdown;
//! - `smoke run --os` of a scenario against a `backend: qemu` target from an
//!   inventory in a temporary project (OCR on the guest screen, typing, a
//!   shell step over the forwarded SSH).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use smoke::backend::process::group_members;
use smoke::frame::Frame;
use smoke::input::{Layout, type_text};
use smoke::rfb::protocol::QEMU_EXTENDED_KEY_EVENT;
use smoke::rfb::{ConnectOptions, Encoding, Endpoint, VncClient};
use smoke::vm::qemu::{Accel, QemuSettings, QemuVm, VncListen};
use smoke::vm::{StopPath, VmBackend, VmError, VmStatus};

/// TESTBED: the guest boots in 4.7-7.5 s under TCG; leave room on a busy box.
const BOOT: Duration = Duration::from_secs(60);
const CAPTURE: Duration = Duration::from_secs(5);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Build the guests (quick when built) and return their directory.
fn guest_files() -> PathBuf {
    let status = Command::new("bash").arg(repo().join("scripts/build-test-guest.sh")).args(["default", "ssh"]).status();
    match status {
        Ok(s) if s.success() => repo().join("target/test-guest"),
        other => panic!("scripts/build-test-guest.sh failed ({other:?}): run scripts/setup-debian.sh first"),
    }
}

fn settings(files: &Path, initrd: &str, append_extra: &str) -> QemuSettings {
    QemuSettings {
        kernel: Some(files.join("vmlinuz")),
        initrd: Some(files.join(initrd)),
        append: Some(format!("console=ttyS0 console=tty0 quiet loglevel=3 {append_extra}")),
        memory_mib: 256,
        accel: Accel::Auto,
        shutdown_timeout: Duration::from_secs(3),
        ..Default::default()
    }
}

fn re(s: &str) -> regex::Regex {
    regex::Regex::new(s).unwrap()
}

async fn vnc(endpoint: &Endpoint, password: Option<String>) -> VncClient {
    let opts = ConnectOptions {
        password,
        timeout: Duration::from_secs(10),
        encodings: vec![Encoding::Zrle, Encoding::Raw, QEMU_EXTENDED_KEY_EVENT, Encoding::DesktopSize],
        ..Default::default()
    };
    VncClient::connect(endpoint, &opts).await.unwrap_or_else(|e| panic!("VNC {endpoint}: {e}"))
}

async fn type_keys(client: &VncClient, text: &str) {
    assert!(client.takes_scancodes(), "QEMU did not acknowledge scancodes");
    for group in type_text(text, Some(Layout::Us)).unwrap() {
        for k in group {
            client.key_code(k.keysym, k.scancode, k.down).await.unwrap();
        }
    }
}

/// Screendumps until two 300 ms apart are equal.
async fn still(vm: &mut QemuVm) -> Frame {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = vm.screendump().await.unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let next = vm.screendump().await.unwrap();
        if next == last {
            return next;
        }
        assert!(Instant::now() < deadline, "the guest screen never stood still");
        last = next;
    }
}

/// Poll screendumps until `pred` holds.
async fn screen_until(vm: &mut QemuVm, what: &str, pred: impl Fn(&Frame) -> bool) -> Frame {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let f = vm.screendump().await.unwrap();
        if pred(&f) {
            return f;
        }
        assert!(Instant::now() < deadline, "the screen never {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// the guard serialises whole tests (each has its own runtime); nothing else takes it on this runtime
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_serial_vnc_typing_savevm_loadvm_and_teardown_ladder() {
    // one guest at a time: three TCG guests on two cores boot 4x slower
    let _one = support::lock();
    let files = guest_files();
    let logs = tempfile::tempdir().unwrap();
    let mut vm = QemuVm::new("t-default", settings(&files, "initramfs.cpio.gz", ""), logs.path());
    assert_eq!(vm.capabilities().names(), vec!["snapshots", "screendump", "serial"]);
    let t = Instant::now();
    let warnings = vm.prepare().await.unwrap();
    eprintln!("prepare {:?} (accel {:?}; {warnings:?})", t.elapsed(), vm.accel());
    let t = Instant::now();
    vm.start().await.unwrap();
    let pid = vm.pid().unwrap();
    let serial = vm.serial().await.unwrap();
    serial.expect(&re("SMOKE-GUEST-READY"), BOOT).await.unwrap();
    eprintln!("boot to SMOKE-GUEST-READY on serial: {:?}", t.elapsed());
    // QEMU starts paused and runs once the console is connected: the live
    // console has every byte QEMU wrote to serial.log
    serial.expect(&re(r"guest# "), Duration::from_secs(15)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logged = std::fs::metadata(logs.path().join("serial.log")).unwrap().len();
    assert_eq!(serial.bytes_received(), logged, "the live console missed bytes that serial.log has");
    assert_eq!(vm.status().await.unwrap(), VmStatus::Running);

    // serial send/expect: only the command's output has 42 (the echo of the line has $((6*7))).
    // (The banner comes before the serial shell starts: the prompt was awaited
    // above, or the line may reach the tty before anything reads it.)
    serial.send_line("echo SERIAL-$((6*7))").await.unwrap();
    serial.expect(&re(r"SERIAL-42"), Duration::from_secs(15)).await.unwrap();

    // VNC on 127.0.0.1 with a password; typing by scancode reaches the tty1 shell
    let access = vm.vnc().await.unwrap();
    assert!(matches!(&access.endpoint, Endpoint::Tcp { host, .. } if host == "127.0.0.1"), "{:?}", access.endpoint);
    let password = access.password.clone().expect("a TCP VNC gets a password");
    assert!(
        VncClient::connect(
            &access.endpoint,
            &ConnectOptions {
                password: Some("wrong".into()),
                timeout: Duration::from_secs(5),
                encodings: vec![],
                ..Default::default()
            }
        )
        .await
        .is_err(),
        "a wrong VNC password was accepted"
    );
    let client = vnc(&access.endpoint, Some(password)).await;
    type_keys(&client, "echo TYPED-$((6*7)) > /dev/ttyS0\n").await;
    serial.expect(&re("TYPED-42"), Duration::from_secs(15)).await.unwrap();

    // screendump (PPM over QMP) is the VNC frame
    let before = still(&mut vm).await;
    assert_eq!((before.width(), before.height()), (720, 400));
    let t = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = client.capture(CAPTURE).await.unwrap();
        if v == before {
            break;
        }
        assert!(Instant::now() < deadline, "the VNC frame never equalled the screendump");
    }
    eprintln!("VNC frame equal to screendump after {:?}", t.elapsed());

    // savevm -> change the screen -> loadvm gives the earlier screen back
    let t = Instant::now();
    vm.snapshot_create("clean").await.unwrap();
    let savevm = t.elapsed();
    let list = vm.snapshot_list().await.unwrap();
    assert_eq!(list.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["clean"]);
    assert!(list[0].vm_state_bytes.unwrap_or(0) > 1 << 20, "{list:?}");
    type_keys(&client, "clear; echo STATE-TWO\n").await;
    screen_until(&mut vm, "changed after typing", |f| *f != before).await;
    // every typed key landed (QEMU hands them to the guest 10 ms apart; keys
    // still queued at loadvm would land in the restored guest and change it)
    let changed = still(&mut vm).await;
    assert_ne!(changed, before);
    let t = Instant::now();
    vm.snapshot_rollback("clean").await.unwrap();
    let loadvm = t.elapsed();
    screen_until(&mut vm, "came back after loadvm", |f| *f == before).await;
    assert_eq!(vm.status().await.unwrap(), VmStatus::Running, "loadvm leaves the VM running");
    // the connection opened before savevm survives loadvm and shows the saved
    // screen, and so does one made after it
    let fresh = vnc(&access.endpoint, access.password.clone()).await;
    for (which, c) in [("the open connection", &client), ("a new connection", &fresh)] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let frame = c.capture(CAPTURE).await.unwrap();
            if frame == before {
                break;
            }
            let dump = vm.screendump().await.unwrap();
            let differ = (0..frame.height())
                .flat_map(|y| (0..frame.width()).map(move |x| (x, y)))
                .filter(|&(x, y)| frame.rgb(x, y) != before.rgb(x, y))
                .count();
            assert!(
                Instant::now() < deadline,
                "{which} after loadvm: {differ} pixels differ from the saved screen (screendump equal to it: {})",
                dump == before
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    fresh.close().await;
    eprintln!("savevm {savevm:?}, loadvm {loadvm:?}");

    // a missing snapshot: a clear error, and the VM keeps running
    let e = vm.snapshot_rollback("nope").await.unwrap_err();
    assert!(e.to_string().contains("no snapshot 'nope'") && e.to_string().contains("clean"), "{e}");
    assert_eq!(vm.status().await.unwrap(), VmStatus::Running);
    assert!(matches!(vm.linked_clone("x").await, Err(VmError::Unsupported { backend: "qemu", .. })));
    vm.snapshot_delete("clean").await.unwrap();
    assert!(vm.snapshot_list().await.unwrap().is_empty());
    client.close().await;

    // teardown: this guest ignores the ACPI power button, so the ladder goes on to SIGTERM
    let t = Instant::now();
    let report = vm.teardown().await;
    eprintln!("teardown {:?}: {report:?}", t.elapsed());
    assert_eq!(report.path, StopPath::Terminated, "{report:?}");
    assert!(report.steps[0].starts_with("powerdown: guest still running after 3.0s"), "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(group_members(pid).is_empty(), "QEMU (pid {pid}) still runs");
    assert!(vm.pid().is_none());
    let log = std::fs::read_to_string(logs.path().join("serial.log")).unwrap();
    assert!(log.contains("SMOKE-GUEST-READY") && log.contains("TYPED-42"), "{log}");
    let qemu_log = std::fs::read_to_string(logs.path().join("qemu.log")).unwrap();
    assert!(qemu_log.contains("terminating on signal 15"), "{qemu_log}");
    // a second teardown finds nothing to do
    assert_eq!(vm.teardown().await.path, StopPath::AlreadyStopped);
}

/// A fresh ed25519 key pair; returns (private key path, `TYPE,BASE64` for smoke.ssh_key=).
fn client_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("id_ed25519");
    let st = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).status().unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(dir.join("id_ed25519.pub")).unwrap();
    let mut parts = public.split_whitespace();
    (key, format!("{},{}", parts.next().unwrap(), parts.next().unwrap()))
}

fn host_key(files: &Path) -> String {
    std::fs::read_to_string(files.join("ssh-host-key.pub"))
        .unwrap()
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

// the guard serialises whole tests (each has its own runtime); nothing else takes it on this runtime
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_through_the_forward_unix_vnc_and_a_guest_that_powers_off() {
    let _one = support::lock();
    let files = guest_files();
    let logs = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (key, cmdline_key) = client_key(keys.path());
    let mut s = settings(&files, "initramfs-ssh.cpio.gz", &format!("smoke.ssh_key={cmdline_key}"));
    s.ssh_forward = true;
    s.vnc = VncListen::Unix;
    let mut vm = QemuVm::new("t-ssh", s, logs.path());
    assert!(vm.capabilities().ssh);
    vm.prepare().await.unwrap();
    let t = Instant::now();
    vm.start().await.unwrap();
    let pid = vm.pid().unwrap();
    let serial = vm.serial().await.unwrap();
    serial.expect(&re("SMOKE-SSH-READY"), BOOT).await.unwrap();
    eprintln!("ssh guest: dropbear up {:?} after start", t.elapsed());

    let access = vm.vnc().await.unwrap();
    assert!(matches!(access.endpoint, Endpoint::Unix(_)) && access.password.is_none(), "{access:?}");
    let client = vnc(&access.endpoint, None).await;
    assert!(client.capture(CAPTURE).await.unwrap().width() > 0);
    client.close().await;

    let (host, port) = vm.ssh_endpoint().expect("a forwarded SSH port");
    assert_eq!(host, "127.0.0.1");
    let mut ssh = smoke::ssh::SshSettings::new(&host, port, "root");
    ssh.key = Some(key);
    ssh.host_keys = vec![host_key(&files)];
    let secrets = smoke::secrets::SecretStore::default();
    let t = Instant::now();
    let c = smoke::ssh::SshClient::wait_for(&ssh, &secrets, Duration::from_secs(30)).await.unwrap();
    let o = c
        .exec(&smoke::ssh::ExecRequest::posix("uname -r; echo SSH-$((6*7))", &[], Duration::from_secs(30)))
        .await
        .unwrap();
    eprintln!("ssh connect + command {:?}", t.elapsed());
    assert_eq!(o.exit_code, Some(0), "{o:?}");
    assert!(o.stdout_text().contains("cloud-amd64") && o.stdout_text().contains("SSH-42"), "{}", o.stdout_text());
    c.close().await;

    let t = Instant::now();
    let report = vm.teardown().await;
    eprintln!("teardown {:?}: {report:?}", t.elapsed());
    assert_eq!(report.path, StopPath::Powerdown, "{report:?}");
    assert!(group_members(pid).is_empty(), "QEMU (pid {pid}) still runs");
    let log = std::fs::read_to_string(logs.path().join("serial.log")).unwrap();
    assert!(log.contains("SMOKE-POWERDOWN"), "the guest's power button handler did not run: {log}");
}

#[test]
fn smoke_run_against_a_qemu_target_from_the_inventory() {
    let _one = support::lock();
    let files = guest_files();
    let project = tempfile::tempdir().unwrap();
    let (key, cmdline_key) = client_key(project.path());
    let inventory = format!(
        "default: tiny\ntargets:\n  tiny:\n    backend: qemu\n    family: linux\n    qemu:\n      kernel: {}\n      initrd: {}\n      append: console=ttyS0 console=tty0 quiet loglevel=3 smoke.ssh_key={cmdline_key}\n      memory: 256M\n      ssh_forward: true\n      shutdown_timeout: 5s\n    ssh:\n      user: root\n      key: {}\n      host_key: \"{}\"\n      wait: 60s\n",
        files.join("vmlinuz").display(),
        files.join("initramfs-ssh.cpio.gz").display(),
        key.display(),
        host_key(&files),
    );
    std::fs::write(project.path().join("inventory.yaml"), inventory).unwrap();
    std::fs::write(
        project.path().join("vm.yaml"),
        "name: vm\nsteps:\n  - label: the guest booted\n    wait_for: {ocr: SMOKE-GUEST-READY}\n    timeout: 60s\n  - label: type on the console\n    type: \"echo STATE-ONE\\n\"\n    verify: {ocr: STATE-ONE}\n    timeout: 20s\n  - label: a command over the forwarded SSH\n    shell: echo STATE-TWO > /dev/tty1\n  - verify: {ocr: STATE-TWO}\n    timeout: 20s\n",
    )
    .unwrap();
    let results = project.path().join("results");
    let t = Instant::now();
    let (out, run) = support::run(project.path(), "vm.yaml", &results, &["--os", "tiny"]);
    eprintln!("smoke run --os tiny: {:?}", t.elapsed());
    let run = run.unwrap_or_else(|| panic!("no run folder: {}", support::text(&out)));
    assert_eq!(out.status.code(), Some(0), "{}", support::text(&out));
    let serial = std::fs::read_to_string(run.join("logs/serial.log")).unwrap();
    assert!(serial.contains("SMOKE-SSH-READY"), "{serial}");
    assert!(run.join("logs/qemu.log").is_file());
    // the VM is gone: no QEMU with this run's logs left
    let leftover = smoke::backend::process::processes()
        .into_iter()
        .filter(|p| p.comm.starts_with("qemu-system"))
        .filter(|p| {
            std::fs::read(format!("/proc/{}/cmdline", p.pid))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*run.to_string_lossy()))
        })
        .count();
    assert_eq!(leftover, 0, "QEMU still runs after smoke run");
}
