//! Boot tests against real QEMU (TCG) guests through `smoke run`: the good
//! guest BOOTED (exit 0), the panic guest BOOT-FAILED (exit 10), the hang
//! guest STALLED (exit 11), a tight budget TIMEOUT (exit 12); serial
//! `send`/`expect` into the guest's shell; a checkpoint with
//! `rewind_on_failure` whose failed step passes after the rollback.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

/// Build the guests (quick when built) and return their directory.
fn guest_files() -> PathBuf {
    let status = Command::new("bash")
        .arg(support::repo().join("scripts/build-test-guest.sh"))
        .args(["default", "panic", "hang"])
        .status();
    match status {
        Ok(s) if s.success() => support::repo().join("target/test-guest"),
        other => panic!("scripts/build-test-guest.sh failed ({other:?}): run scripts/setup-debian.sh first"),
    }
}

/// A project with one qemu target per guest. The kernel is not `quiet`:
/// its lines on ttyS0 are what the stage ladder recognises.
fn project(files: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut inv = String::from("default: good\ntargets:\n");
    for (name, initrd) in
        [("good", "initramfs.cpio.gz"), ("panic", "initramfs-panic.cpio.gz"), ("hang", "initramfs-hang.cpio.gz")]
    {
        inv.push_str(&format!(
            "  {name}:\n    backend: qemu\n    family: linux\n    qemu:\n      kernel: {}\n      initrd: {}\n      append: console=ttyS0 console=tty0\n      memory: 256M\n      shutdown_timeout: 2s\n",
            files.join("vmlinuz").display(),
            files.join(initrd).display()
        ));
    }
    std::fs::write(dir.path().join("inventory.yaml"), inv).unwrap();
    dir
}

/// `smoke run SCENARIO --os OS` in its own results folder: exit code, summary, run folder.
fn run(project: &Path, name: &str, scenario: &str, os: &str, extra: &[&str]) -> (Option<i32>, Value, PathBuf, String) {
    std::fs::write(project.join(format!("{name}.yaml")), scenario).unwrap();
    let results = project.join(format!("results-{name}"));
    let mut args = vec!["--os", os];
    args.extend_from_slice(extra);
    let t = Instant::now();
    let (out, dir) = support::run(project, &format!("{name}.yaml"), &results, &args);
    let text = support::text(&out);
    eprintln!("{name} on {os}: exit {:?} in {:.1}s", out.status.code(), t.elapsed().as_secs_f64());
    let dir = dir.unwrap_or_else(|| panic!("no run folder: {text}"));
    (out.status.code(), support::summary(&dir), dir, text)
}

#[test]
fn boot_outcomes_serial_steps_and_rewinds_on_real_guests() {
    let _one = support::lock();
    let files = guest_files();
    let p = project(&files);
    let p = p.path();

    // BOOTED, then a shell session over the serial console, then a checkpoint
    // and a step that fails the first time: the guest reads the RTC (host
    // time, which a rollback does not turn back) and answers EARLY right after
    // the checkpoint, LATE once the first attempt has timed out and the VM was
    // rolled back.
    let good = r#"name: good
rewind_on_failure: true
steps:
  - boot: {marker: SMOKE-GUEST-READY, timeout: 90s, stall: 30s}
  - expect: {serial: "guest# ", timeout: 20s}
  - send: {serial: 'echo SUM-$((40+2))\n'}
  - expect: {serial: "SUM-42", timeout: 20s}
  - send: {serial: 'T0=$(cat /sys/class/rtc/rtc0/since_epoch); echo T0-$((1+1))\n'}
  - expect: {serial: "T0-2", timeout: 20s}
  - checkpoint: ready
  - send: {serial: 'if [ $(cat /sys/class/rtc/rtc0/since_epoch) -ge $((T0+3)) ]; then echo LATE-$((6*7)); else echo EARLY-$((6*7)); fi\n'}
  - label: the guest says LATE only after the rewind
    expect: {serial: "LATE-42", timeout: 3s}
"#;
    let (code, s, dir, text) = run(p, "good", good, "good", &[]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(s["boot"]["outcome"], "booted", "{}", s["boot"]);
    assert_eq!(s["boot"]["stage"], "login");
    let stages: Vec<&str> =
        s["boot"]["stages"].as_array().unwrap().iter().map(|h| h["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, vec!["kernel", "userspace", "login"], "direct kernel boot: no firmware or bootloader on ttyS0");
    assert!(s["boot"]["transcript"].as_str().unwrap().contains("SMOKE-GUEST-READY"));
    assert_eq!(s["boot"]["log"], "logs/serial.log");
    let serial = std::fs::read_to_string(dir.join("logs/serial.log")).unwrap();
    assert!(serial.contains("Linux version"));
    assert!(serial.contains("SUM-42") && serial.contains("EARLY-42") && serial.contains("LATE-42"), "{serial}");
    let rewinds = s["rewinds"].as_array().expect("a rewind is in the summary");
    assert_eq!(rewinds.len(), 1);
    assert_eq!(rewinds[0]["checkpoint"], "ready");
    assert_eq!(rewinds[0]["step"], 9);
    assert_eq!(rewinds[0]["to_step"], 7);
    let events = support::events(&dir);
    let kinds: Vec<String> = events
        .iter()
        .filter_map(|r| match &r.event {
            smoke::events::Event::Checkpoint { action, .. } => Some(format!("checkpoint {action}")),
            smoke::events::Event::Rewind { duration_ms, .. } => {
                eprintln!("rollback took {duration_ms} ms");
                Some("rewind".into())
            }
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec!["checkpoint created", "rewind", "checkpoint deleted"], "the snapshot is gone at the end");
    let step9: Vec<&Value> = s["steps"].as_array().unwrap().iter().filter(|x| x["step"] == 9).collect();
    assert_eq!(step9[0]["status"], "passed");

    // BOOT-FAILED: a kernel panic, exit 10, the panic in the transcript
    let boot_only = "name: boot\nsteps:\n  - boot: {marker: SMOKE-GUEST-READY, timeout: 90s, stall: 30s}\n";
    let (code, s, dir, text) = run(p, "panic", boot_only, "panic", &[]);
    assert_eq!(code, Some(10), "{text}");
    assert_eq!(s["boot"]["outcome"], "boot_failed");
    assert_eq!(s["boot"]["label"], "BOOT-FAILED");
    assert_eq!(s["boot"]["failure"]["reason"], "kernel panic");
    assert_eq!(s["boot"]["stage"], "userspace");
    assert!(s["boot"]["transcript"].as_str().unwrap().contains("Kernel panic - not syncing"));
    assert!(std::fs::read_to_string(dir.join("logs/serial.log")).unwrap().contains("Kernel panic"));
    assert_eq!(s["verdict"], "failed");
    assert!(text.contains("BOOT-FAILED: kernel panic"), "{text}");
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<h2>VM</h2>") && html.contains("BOOT-FAILED: kernel panic"), "the report shows the boot");

    // STALLED: silence after the kernel started, exit 11
    let stall = "name: stall\nsteps:\n  - boot: {marker: SMOKE-GUEST-READY, timeout: 90s, stall: 3s}\n";
    let (code, s, _, text) = run(p, "hang", stall, "hang", &[]);
    assert_eq!(code, Some(11), "{text}");
    assert_eq!(s["boot"]["outcome"], "stalled");
    assert!(s["boot"]["silent_ms"].as_u64().unwrap() >= 3000);
    assert!(s["boot"]["transcript"].as_str().unwrap().contains("SMOKE-HANG-GUEST: waiting"));

    // TIMEOUT: a budget no boot meets, exit 12
    let tight = "name: tight\nsteps:\n  - boot: {marker: SMOKE-GUEST-READY, timeout: 1s}\n";
    let (code, s, _, text) = run(p, "tight", tight, "good", &[]);
    assert_eq!(code, Some(12), "{text}");
    assert_eq!(s["boot"]["outcome"], "timeout");
}

/// The `checkpoint` events of a run, as "ACTION NAME".
fn checkpoint_events(run: &Path) -> Vec<String> {
    support::events(run)
        .iter()
        .filter_map(|r| match &r.event {
            smoke::events::Event::Checkpoint { action, name, .. } => Some(format!("{action} {name}")),
            _ => None,
        })
        .collect()
}

/// The snapshots in a qcow2, from `qemu-img snapshot -l`.
fn snapshots_in(disk: &Path) -> String {
    let out = Command::new("qemu-img").args(["snapshot", "-l", "-U"]).arg(disk).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn checkpoints_kept_by_one_run_are_resumed_by_the_next() {
    let _one = support::lock();
    let files = guest_files();
    let p = project(&files);
    let p = p.path();
    // the shell's MARK is only in the guest's memory: after a resume it can
    // only come from the snapshot the first run kept
    let scenario = r#"name: keep
retain_checkpoints: 2
steps:
  - boot: {marker: SMOKE-GUEST-READY, timeout: 90s, stall: 30s}
  - expect: {serial: "guest# ", timeout: 20s}
  - send: {serial: 'MARK=one\n'}
  - checkpoint: first
  - send: {serial: 'MARK=two-$MARK\n'}
  - checkpoint: second
  - send: {serial: 'echo NOW-$MARK\n'}
  - expect: {serial: "NOW-two-one", timeout: 20s}
  - checkpoint: third
"#;
    let (code, _, dir, text) = run(p, "keep", scenario, "good", &["--keep-checkpoints"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        checkpoint_events(&dir),
        vec!["created first", "created second", "created third", "deleted first", "kept second", "kept third"],
        "retain_checkpoints: 2 deletes the oldest; --keep-checkpoints keeps the rest"
    );
    let disk = p.join(".smoke/checkpoints/good/instance.qcow2");
    let listed = snapshots_in(&disk);
    assert!(listed.contains("smoke-second") && listed.contains("smoke-third"), "{listed}");
    assert!(!listed.contains("smoke-first"), "{listed}");
    assert!(p.join(".smoke/checkpoints/good/instance.json").is_file());

    // the next run starts after `second`, in the guest as it was then
    let t = Instant::now();
    let (code, s, dir, text) = run(p, "resume", scenario, "good", &["--from-checkpoint", "second"]);
    eprintln!("resumed run: {:?}", t.elapsed());
    assert_eq!(code, Some(0), "{text}");
    let statuses: Vec<String> =
        s["steps"].as_array().unwrap().iter().map(|x| x["status"].as_str().unwrap().to_string()).collect();
    assert_eq!(statuses[..6], ["skipped"; 6], "{statuses:?}");
    assert_eq!(statuses[6..], ["passed"; 3], "{statuses:?}");
    assert_eq!(checkpoint_events(&dir), vec!["resumed second", "replaced third", "created third", "deleted third"]);
    let listed = snapshots_in(&disk);
    assert!(listed.contains("smoke-second") && !listed.contains("smoke-third"), "{listed}");

    // a checkpoint the disk no longer has: the error names the ones it has
    let (code, s, _, text) = run(p, "gone", scenario, "good", &["--from-checkpoint", "first"]);
    assert_ne!(code, Some(0), "{text}");
    let reason = s["reason"].to_string();
    assert!(reason.contains("no snapshot smoke-first (checkpoints on it: second)"), "{reason} / {text}");
}
