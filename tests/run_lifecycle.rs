//! A run's life cycle through the `smoke` binary: secrets never written,
//! Ctrl-C still runs cleanup and tears the desktop down, a broken target is an
//! infrastructure error with readable results, and the `vnc` backend drives an
//! existing server.

mod support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use smoke::events::{Event, Verdict};
use support::*;

const SECRET: &str = "Pa55-w0rd!#secret";

#[test]
fn secrets_never_reach_events_summary_junit_or_logs() {
    let _desktop = lock();
    let p = project_copy();
    std::fs::write(
        p.path().join("inventory.yaml"),
        "default: local\ntargets:\n  local:\n    backend: local-desktop\n    secrets:\n      pw: {env: SMOKE_TEST_PW}\n",
    )
    .unwrap();
    std::fs::write(
        p.path().join("scenarios/secret.yaml"),
        r#"steps:
  - routine: launch_app
    with:
      command: [xterm, -fa, Monospace, -fs, "14", -e, sh, -c, 'echo READY; cat > "$HOME/pw.txt"']
      process: xterm
      ready_text: READY
  - type: "{{ secret('pw') }}"
    label: "type {{ secret('pw') }} into the terminal"
  - key: [enter, ctrl+d]
  - shell: |
      for i in $(seq 1 50); do [ -s "$HOME/pw.txt" ] && break; sleep 0.1; done
      [ "$(cat "$HOME/pw.txt")" = {{ secret('pw') | shquote }} ] || { echo "got $(cat "$HOME/pw.txt") wanted {{ secret('pw') }}" >&2; exit 1; }
      echo "the secret is {{ secret('pw') }}"
"#,
    )
    .unwrap();
    let results = tempfile::tempdir().unwrap();
    let out = smoke()
        .current_dir(p.path())
        .env("SMOKE_TEST_PW", SECRET)
        .args(["run", "scenarios/secret.yaml", "-v", "--results"])
        .arg(results.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains(SECRET), "console output leaks the secret");
    let run = run_dir(results.path()).unwrap();
    let mut checked = 0;
    for f in files(&run) {
        if matches!(f.extension().and_then(|e| e.to_str()), Some("jsonl" | "json" | "xml" | "log")) {
            let content = std::fs::read_to_string(&f).unwrap_or_default();
            assert!(!content.contains(SECRET), "{} contains the secret", f.display());
            checked += 1;
        }
    }
    assert!(checked >= 4, "checked {checked} files");
    // the masked value is where the secret would have been
    let ev = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    assert!(ev.contains("\"detail\":\"******\""), "{ev}");
    assert!(ev.contains("the secret is ******"));
}

#[test]
fn a_missing_secret_is_reported_before_the_run() {
    let p = project_copy();
    std::fs::write(p.path().join("scenarios/s.yaml"), "steps:\n  - type: \"{{ secret('nope') }}\"\n").unwrap();
    let results = tempfile::tempdir().unwrap();
    let (out, run) = run(p.path(), "scenarios/s.yaml", results.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SMOKE_SECRET_NOPE"), "{}", text(&out));
    assert!(run.is_none(), "nothing ran, so no results folder");
}

fn wait_for_event(run_root: &std::path::Path, pred: impl Fn(&Event) -> bool, budget: Duration) -> Option<Event> {
    let deadline = Instant::now() + budget;
    while Instant::now() < deadline {
        if let Some(run) = run_dir(run_root)
            && let Ok((records, _)) = smoke::events::read_jsonl(&run.join("events.jsonl"))
            && let Some(r) = records.into_iter().find(|r| pred(&r.event))
        {
            return Some(r.event);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn interrupt(child: &Child) {
    // SAFETY: signalling a child we own.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

#[test]
fn ctrl_c_runs_cleanup_then_tears_the_desktop_down() {
    let _desktop = lock();
    let p = project_copy();
    let marker = p.path().join("cleanup-ran");
    std::fs::write(
        p.path().join("scenarios/long.yaml"),
        format!(
            "steps:\n  - routine: launch_app\n    with: {{command: [galculator], ready_text: sqrt}}\n  - wait: 60s\n  - type: never\ncleanup:\n  - shell: touch {}\n  - routine: stop_app\n    with: {{process: galculator}}\n",
            marker.display()
        ),
    )
    .unwrap();
    let results = tempfile::tempdir().unwrap();
    let child = smoke()
        .current_dir(p.path())
        .args(["run", "scenarios/long.yaml", "--results"])
        .arg(results.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready =
        wait_for_event(results.path(), |e| matches!(e, Event::StepStarted { step: 3, .. }), Duration::from_secs(30));
    let port = match wait_for_event(results.path(), |e| matches!(e, Event::TargetReady { .. }), Duration::from_secs(1))
    {
        Some(Event::TargetReady { vnc, .. }) => vnc.rsplit(':').next().unwrap().parse::<u16>().unwrap(),
        other => panic!("no target_ready: {other:?}"),
    };
    assert!(ready.is_some(), "the wait step started");
    let started = Instant::now();
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "stopped promptly: {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(marker.exists(), "the cleanup step ran");
    let run = run_dir(results.path()).unwrap();
    let ev = events(&run);
    let st = statuses(&ev);
    assert!(st.iter().any(|(n, s)| *n == 3 && s == "skipped"), "the interrupted wait: {st:?}");
    assert!(st.iter().any(|(n, s)| *n == 4 && s == "skipped"), "{st:?}");
    assert!(st.iter().filter(|(n, _)| *n >= 5).all(|(_, s)| s == "passed"), "cleanup passed: {st:?}");
    assert!(matches!(
        ev.last().map(|r| &r.event),
        Some(Event::RunFinished { verdict: Verdict::Interrupted, exit_code: 130, .. })
    ));
    assert!(run.join("summary.json").is_file() && run.join("junit.xml").is_file());
    let (_, _, frames) = gif_frames(&run.join("recording.gif"));
    assert!(frames >= 1);
    // the desktop is gone
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "Xvnc still listens on {port}");
}

#[test]
fn a_target_that_cannot_start_is_an_infrastructure_error_with_results() {
    let p = project_copy();
    std::fs::write(
        p.path().join("inventory.yaml"),
        "default: broken\ntargets:\n  broken:\n    backend: local-desktop\n    xvnc: /nonexistent/Xvnc\n",
    )
    .unwrap();
    let results = tempfile::tempdir().unwrap();
    let (out, run) = run(p.path(), "scenarios/terminal.yaml", results.path(), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let run = run.expect("results even though nothing could run");
    let summary = support::summary(&run);
    assert_eq!(summary["verdict"], "error");
    let reason = summary["reason"].as_str().unwrap();
    assert!(reason.contains("/nonexistent/Xvnc") && reason.contains("tigervnc"), "{reason}");
    assert!(run.join("junit.xml").is_file());
}

/// An Xvnc with VNC authentication and an xterm, started by the test.
struct ExistingServer {
    xvnc: Child,
    apps: Vec<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for ExistingServer {
    fn drop(&mut self) {
        for c in self.apps.iter_mut().chain(std::iter::once(&mut self.xvnc)) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn existing_server(password: &str) -> ExistingServer {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    std::fs::File::create(&pw).unwrap().write_all(&smoke::rfb::vnc_password_file(password)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (mut reader, writer) = std::io::pipe().unwrap();
    use std::os::fd::AsRawFd;
    let fd = writer.as_raw_fd();
    let mut cmd = Command::new("Xvnc");
    cmd.args(["-displayfd", &fd.to_string(), "-rfbport", &port.to_string(), "-localhost", "-interface", "127.0.0.1"])
        .args(["-SecurityTypes", "VncAuth", "-PasswordFile"])
        .arg(&pw)
        .args(["-geometry", "1024x768", "-depth", "24", "-nolisten", "tcp", "-BlacklistThreshold", "1000000"])
        .stderr(Stdio::null());
    use std::os::unix::process::CommandExt;
    // SAFETY: fcntl between fork and exec keeps the pipe's write end open in Xvnc.
    unsafe {
        cmd.pre_exec(move || {
            libc::fcntl(fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let xvnc = cmd.spawn().unwrap();
    drop(writer);
    let mut display = String::new();
    use std::io::Read;
    reader.read_to_string(&mut display).unwrap();
    let display = format!(":{}", display.trim());
    let term = Command::new("xterm")
        .args([
            "-fa",
            "Monospace",
            "-fs",
            "16",
            "-geometry",
            "60x8+30+30",
            "-e",
            "sh",
            "-c",
            "echo EXISTING SERVER OK; sleep 120",
        ])
        .env("DISPLAY", &display)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ExistingServer { xvnc, apps: vec![term], port, _dir: dir }
}

#[test]
fn the_vnc_backend_drives_an_existing_server_with_a_password_from_the_environment() {
    let _desktop = lock();
    let server = existing_server("vnc-pw-1");
    let p = project_copy();
    std::fs::write(
        p.path().join("inventory.yaml"),
        format!("default: lab\ntargets:\n  lab:\n    backend: vnc\n    vnc: {{host: 127.0.0.1, port: {}, password_env: LAB_VNC_PW}}\n", server.port),
    )
    .unwrap();
    std::fs::write(
        p.path().join("scenarios/remote.yaml"),
        "steps:\n  - wait_for: {ocr: EXISTING SERVER OK}\n    timeout: 20s\n  - click: {text: EXISTING}\n  - verify_not: {ocr: NOT ON SCREEN}\n",
    )
    .unwrap();
    let results = tempfile::tempdir().unwrap();
    let out = smoke()
        .current_dir(p.path())
        .env("LAB_VNC_PW", "vnc-pw-1")
        .args(["run", "scenarios/remote.yaml", "--results"])
        .arg(results.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let run = run_dir(results.path()).unwrap();
    let ev = events(&run);
    assert!(ev.iter().any(|r| matches!(&r.event, Event::TargetReady { width: 1024, height: 768, .. })));
    let log = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    assert!(!log.contains("vnc-pw-1"), "the VNC password is not written");

    // the wrong password is an infrastructure error, not a test failure
    let results = tempfile::tempdir().unwrap();
    let out = smoke()
        .current_dir(p.path())
        .env("LAB_VNC_PW", "wrong-pw")
        .args(["run", "scenarios/remote.yaml", "--results"])
        .arg(results.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let summary = support::summary(&run_dir(results.path()).unwrap());
    assert!(summary["reason"].as_str().unwrap().contains("authentication failed"), "{summary}");

    // a shell step cannot run on a VNC-only target: refused before anything runs
    std::fs::write(p.path().join("scenarios/shell.yaml"), "steps:\n  - shell: echo hi\n").unwrap();
    let out = smoke().current_dir(p.path()).args(["validate", "scenarios/shell.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scenarios/shell.yaml:2:5"), "{}", text(&out));
}
