//! Scenarios on the local Xvnc desktop whose `shell` and `launch` steps go
//! over SSH to a real sshd on loopback, as the test user: the launched app
//! appears in the desktop, `{file}` patterns resolve on the target, the
//! cleanup routine stops a long-named process exactly (and not itself or a
//! decoy), and a failing scenario collects forensics before its cleanup.

mod ssh_support;
mod support;

use std::path::{Path, PathBuf};

use smoke::events::Event;
use ssh_support::{Sshd, USER, token};
use support::*;

/// A project copy whose inventory sends the local desktop's commands over `sshd`.
fn project(sshd: &Sshd) -> tempfile::TempDir {
    let p = project_copy();
    std::fs::write(
        p.path().join("inventory.yaml"),
        format!(
            "default: local\ntargets:\n  local:\n    backend: local-desktop\n    family: linux\n    desktop: openbox\n    ssh:\n      host: {}\n      port: {}\n      user: {USER}\n      key: {}\n      known_hosts: {}\n      wait: 20s\n",
            sshd.host,
            sshd.port,
            sshd.user_key.display(),
            sshd.known_hosts.display()
        ),
    )
    .unwrap();
    p
}

/// A folder under /tmp the test user can read, with `Term-<version>/bin/smoke-term` (xterm) per version.
fn apps(tok: &str, versions: &[&str]) -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/{tok}"));
    std::fs::create_dir_all(&dir).unwrap();
    for v in versions {
        let bin = dir.join(format!("Term-{v}/bin"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/usr/bin/xterm", bin.join("smoke-term")).unwrap();
    }
    std::fs::copy("/bin/sleep", dir.join(format!("smoke-long-process-name-{tok}"))).unwrap();
    std::fs::copy("/bin/sleep", dir.join(format!("smoke-long-prox-{tok}"))).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in walk(&dir) {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

/// Processes of the test user with this kernel name.
fn user_processes(comm: &str) -> Vec<String> {
    let o = std::process::Command::new("pgrep").args(["-x", "-u", USER, comm]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()
}

#[test]
fn shell_and_launch_go_over_ssh_into_the_desktop() {
    let _desktop = lock();
    let sshd = Sshd::start();
    let p = project(&sshd);
    let tok = token("smoke-e2e");
    let dir = apps(&tok, &["1.2.3"]);
    let d = dir.display();
    std::fs::write(
        p.path().join("scenarios/over-ssh.yaml"),
        format!(
            r#"name: over-ssh
steps:
  - label: commands run as the SSH user, in this desktop's session
    shell: |
      [ "$(id -un)" = {USER} ] || {{ echo "runs as $(id -un)" >&2; exit 1; }}
      case "$DISPLAY" in :[0-9]*) echo "on $DISPLAY";; *) echo "no DISPLAY" >&2; exit 1;; esac
  - routine: prepare_display
  - label: the X screensaver and DPMS are off
    shell: |
      q=$(xset q)
      echo "$q" | grep -q "timeout:  0" && ! echo "$q" | grep -q "DPMS is Enabled"
  - label: start a long-named process and two decoys
    shell: |
      cd {d}
      setsid ./smoke-long-process-name-{tok} 600 </dev/null >/dev/null 2>&1 &
      setsid ./smoke-long-prox-{tok} 600 </dev/null >/dev/null 2>&1 &
      setsid sh -c 'while :; do sleep 1; done; : smoke-long-process-name-{tok}' </dev/null >/dev/null 2>&1 &
      sleep 0.3
  - launch:
      command: ["{{file}}", -fa, Monospace, -fs, "14", -geometry, 60x8+40+40, -e, sh, -c, 'echo OVER-SSH-$(id -un | tr a-z A-Z); sleep 600']
      file: "{d}/Term-*/bin/smoke-term"
      until: {{ocr: OVER-SSH-SMOKE-SSH}}
      wait: 30s
cleanup:
  - routine: stop_app
    with: {{process: smoke-term}}
  - routine: stop_app
    with: {{process: "{d}/smoke-long-process-name-{tok}"}}
  - label: only the long-named process was stopped
    shell: |
      u=$(id -u)
      ps -u "$u" -o stat=,comm= | awk '$1 !~ /^Z/ && $2 == "smoke-long-proc"' | grep -q . && {{ echo "the long-named process survived" >&2; exit 1; }}
      pgrep -x -u "$u" smoke-long-prox >/dev/null || {{ echo "the decoy with another name was killed" >&2; exit 1; }}
      pgrep -f -u "$u" ': smoke-long-[p]rocess-name' >/dev/null || {{ echo "the decoy with the name in its command line was killed" >&2; exit 1; }}
      pkill -x -u "$u" smoke-long-prox; pkill -f -u "$u" ': smoke-long-[p]rocess-name'; exit 0
"#
        ),
    )
    .unwrap();
    let results = tempfile::tempdir().unwrap();
    let (out, run) = run(p.path(), "scenarios/over-ssh.yaml", results.path(), &["-v"]);
    let run = run.expect("a results folder");
    let records = events(&run);
    assert_eq!(out.status.code(), Some(0), "{}\n{:#?}", text(&out), statuses(&records));

    let via = format!("ssh {USER}@127.0.0.1:{}", sshd.port);
    let shells: Vec<&Event> = records.iter().map(|r| &r.event).filter(|e| matches!(e, Event::Shell { .. })).collect();
    assert!(shells.len() >= 5);
    for e in &shells {
        let Event::Shell { via: v, .. } = e else { unreachable!() };
        assert_eq!(v.as_deref(), Some(via.as_str()));
    }
    let Some(Event::Launch { command, process, via: v, log, .. }) =
        records.iter().map(|r| &r.event).find(|e| matches!(e, Event::Launch { .. }))
    else {
        panic!("no launch event")
    };
    assert!(command.starts_with(&format!("'{d}/Term-1.2.3/bin/smoke-term' '-fa'")), "{command}");
    assert_eq!(process, "smoke-term", "the process name defaults to the resolved file's base name");
    assert_eq!(v.as_deref(), Some(via.as_str()));
    assert!(run.join(log).is_file(), "the launch log was fetched from the target");
    // the app really ran in the desktop: OCR found its text (the launch step passed), and it is gone now
    assert!(user_processes("smoke-term").is_empty(), "stop_app left {:?}", user_processes("smoke-term"));
    assert!(user_processes("smoke-long-proc").is_empty());
    // the run's folder on the target is gone
    let leftovers: Vec<PathBuf> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            use std::os::unix::fs::MetadataExt;
            p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("smoke-"))
                && p.metadata().is_ok_and(|m| m.uid() != 0 && m.is_dir())
                && std::fs::read_dir(p)
                    .map(|mut r| r.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("launch-"))))
                    .unwrap_or(false)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failing_scenario_collects_forensics_before_cleanup() {
    let _desktop = lock();
    let sshd = Sshd::start();
    let p = project(&sshd);
    let tok = token("smoke-forensics");
    let dir = apps(&tok, &["1.0", "2.0"]);
    let d = dir.display();
    let logs = PathBuf::from(format!("/home/{USER}/.config/SmokeApp-{tok}/logs"));
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("main.log"), format!("line 1\nAPP-LOG-MARKER-{tok}\n")).unwrap();
    std::fs::write(
        p.path().join("scenarios/fails.yaml"),
        format!(
            r#"name: fails
steps:
  - shell: echo about to fail
  - launch:
      command: ["{{file}}"]
      file: "{d}/Term-*/bin/smoke-term"
  - shell: echo never
forensics:
  with: {{minutes: 5, app_logs: ["~/.config/SmokeApp-{tok}/logs/*.log"]}}
cleanup:
  - shell: echo cleanup-ran
"#
        ),
    )
    .unwrap();
    let results = tempfile::tempdir().unwrap();
    let (out, run) = run(p.path(), "scenarios/fails.yaml", results.path(), &[]);
    let run = run.expect("a results folder");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let records = events(&run);
    let error = records
        .iter()
        .find_map(|r| match &r.event {
            Event::StepFinished { step: 2, error, .. } => error.clone(),
            _ => None,
        })
        .unwrap();
    assert!(
        error.contains("matches 2 files on the target")
            && error.contains(&format!("{d}/Term-1.0/bin/smoke-term"))
            && error.contains(&format!("{d}/Term-2.0/bin/smoke-term")),
        "{error}"
    );
    let pos = |f: &dyn Fn(&Event) -> bool| records.iter().position(|r| f(&r.event));
    let first_forensics = pos(&|e| matches!(e, Event::Forensics { .. })).expect("forensics events");
    let cleanup = pos(&|e| matches!(e, Event::StepStarted { cleanup: true, .. })).unwrap();
    assert!(first_forensics < cleanup, "evidence is collected before cleanup");
    let items: Vec<(String, Option<String>, Option<String>)> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Forensics { item, path, error, .. } => Some((item.clone(), path.clone(), error.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(items.len(), 5, "{items:?}");
    for (item, path, error) in &items {
        assert!(error.is_none(), "{item}: {error:?}");
        assert!(path.as_ref().is_some_and(|p| run.join(p).is_file()), "{item}: {path:?}");
    }
    let f = run.join("forensics");
    for name in ["journal.txt", "dmesg.txt", "xsession-errors.txt", "app-logs.txt", "processes.txt"] {
        assert!(f.join(name).is_file(), "{name}");
    }
    let app_logs = std::fs::read_to_string(f.join("app-logs.txt")).unwrap();
    assert!(app_logs.contains(&format!("APP-LOG-MARKER-{tok}")), "{app_logs}");
    assert!(std::fs::read_to_string(f.join("processes.txt")).unwrap().contains("sshd"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["verdict"], "failed");
    assert_eq!(summary["forensics"].as_array().map(Vec::len), Some(5));
    assert_eq!(summary["counts"]["failed"], 1, "forensics steps are not counted as steps");
    assert!(statuses(&records).iter().any(|(_, s)| s == "passed"), "cleanup ran");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(logs.parent().unwrap()).unwrap();
}

/// An Xvnc without a window manager, standing in for a VM's screen.
struct Screen {
    child: std::process::Child,
    display: u32,
    port: u16,
}

impl Screen {
    fn start() -> Screen {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let display = 200 + (port % 700) as u32;
        let child = std::process::Command::new("Xvnc")
            .arg(format!(":{display}"))
            .args(["-rfbport", &port.to_string(), "-localhost", "-SecurityTypes", "None", "-nolisten", "tcp"])
            .args(["-geometry", "1024x600", "-depth", "24", "-AlwaysShared"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let s = Screen { child, display, port };
        assert!(ssh_support::eventually(std::time::Duration::from_secs(10), || {
            std::path::Path::new(&format!("/tmp/.X11-unix/X{display}")).exists()
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }));
        s
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn doctor_and_launches_find_the_session_of_a_vnc_target() {
    let _desktop = lock();
    let sshd = Sshd::start();
    let screen = Screen::start();
    let tok = token("smoke-session");
    let dir = apps(&tok, &[]);
    std::fs::copy("/bin/sleep", dir.join("xfce4-session")).unwrap();
    // a session leader of the test user, with the session's variables
    let leader = std::process::Command::new("su")
        .args(["-s", "/bin/sh", USER, "-c"])
        .arg(format!(
            "cd {d} && exec env DISPLAY=:{n} DBUS_SESSION_BUS_ADDRESS=unix:path=/nonexistent-{tok} XDG_RUNTIME_DIR={d} ./xfce4-session 600",
            d = dir.display(),
            n = screen.display
        ))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = std::process::Command::new("pkill").args(["-x", "-u", USER, "xfce4-session"]).status();
            let _ = self.0.wait();
        }
    }
    let _leader = Kill(leader);
    assert!(ssh_support::eventually(std::time::Duration::from_secs(5), || !user_processes("xfce4-session").is_empty()));

    let p = project_copy();
    std::fs::write(
        p.path().join("inventory.yaml"),
        format!(
            "targets:\n  vm:\n    backend: vnc\n    family: linux\n    desktop: xfce\n    vnc: {{host: 127.0.0.1, port: {}}}\n    session: auto\n    ssh:\n      host: {}\n      port: {}\n      user: {USER}\n      key: {}\n      known_hosts: {}\n",
            screen.port,
            sshd.host,
            sshd.port,
            sshd.user_key.display(),
            sshd.known_hosts.display()
        ),
    )
    .unwrap();
    let doctor = |extra: &[&str]| {
        let out = smoke().current_dir(p.path()).args(["doctor", "--os", "vm"]).args(extra).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (code, out) = doctor(&["--process", "smoke-term"]);
    assert_eq!(code, Some(0), "{out}");
    let line = |name: &str| out.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
    assert!(line("ssh").contains("ok") && line("ssh").contains("SHA256:"), "{out}");
    assert!(line("vnc").contains("ok") && line("vnc").contains("1024x600"), "{out}");
    let session = line("desktop session");
    assert!(
        session.contains("read from the session leader")
            && session.contains(&format!("DISPLAY=:{}", screen.display))
            && session.contains(&format!("DBUS_SESSION_BUS_ADDRESS=unix:path=/nonexistent-{tok}")),
        "{out}"
    );
    assert!(line("stray processes").contains("none of smoke-term runs"), "{out}");
    assert!(line("vlm").contains("not configured"), "{out}");
    // a leftover app process fails the doctor
    let (code, out) = doctor(&["--process", "xfce4-session"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("stray processes") && l.contains("FAIL") && l.contains("xfce4-session: 1 running")),
        "{out}"
    );

    // a run on that target: shell steps and launches get the session's variables
    std::fs::write(
        p.path().join("scenarios/session.yaml"),
        format!(
            r#"steps:
  - shell: '[ "$DBUS_SESSION_BUS_ADDRESS" = unix:path=/nonexistent-{tok} ] && [ "$DISPLAY" = :{n} ]'
  - launch:
      command: [xterm, -fa, Monospace, -fs, "14", -geometry, 50x5+20+20, -e, sh, -c, 'echo SESSIONFOUND; sleep 600']
      until: {{ocr: SESSIONFOUND}}
cleanup:
  - routine: stop_app
    with: {{process: xterm}}
"#,
            n = screen.display
        ),
    )
    .unwrap();
    let results = tempfile::tempdir().unwrap();
    let (out, run) = run(p.path(), "scenarios/session.yaml", results.path(), &["--os", "vm"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(run.is_some());
    assert!(user_processes("xterm").is_empty());
    drop(_leader);
    std::fs::remove_dir_all(&dir).unwrap();
}
