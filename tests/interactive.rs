//! Interactive debugging through the binary: `--pause-on-failure` keeps the
//! target up and tells how to reach it; `smoke shell` opens a shell in a
//! prepared target and tears it down afterwards.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use support::*;

/// Read the child's stderr on a thread; lines arrive on the channel.
fn lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    rx
}

fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) -> String {
    loop {
        let l = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no line with {needle:?}; saw:\n{}", seen.join("\n")));
        seen.push(l.clone());
        if l.contains(needle) {
            return l;
        }
    }
}

/// "VNC: 127.0.0.1:PORT, password PW" -> (port, password)
fn vnc_line(l: &str) -> (u16, String) {
    let rest = l.split("VNC: 127.0.0.1:").nth(1).unwrap();
    let (port, pw) = rest.split_once(", password ").unwrap();
    (port.trim().parse().unwrap(), pw.trim().to_string())
}

fn failing_project(marker: &std::path::Path) -> tempfile::TempDir {
    let p = project_copy();
    std::fs::write(
        p.path().join("scenarios/fails.yaml"),
        format!(
            "steps:\n  - routine: launch_app\n    with: {{command: [galculator], ready_text: sqrt}}\n  - verify: {{ocr: NOT-THERE}}\n    timeout: 1s\ncleanup:\n  - shell: touch {}\n",
            marker.display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn pause_on_failure_keeps_the_target_up_then_continues_with_cleanup() {
    let _desktop = lock();
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("cleaned");
    let p = failing_project(&marker);
    let results = tempfile::tempdir().unwrap();
    let mut child = smoke()
        .current_dir(p.path())
        .args(["run", "scenarios/fails.yaml", "--pause-on-failure", "--results"])
        .arg(results.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines(&mut child);
    let mut seen = Vec::new();
    let (port, password) = vnc_line(&wait_line(&rx, "VNC: ", &mut seen));
    wait_line(&rx, "press Enter", &mut seen);
    // the target is really up and the printed password works: the app is still on screen
    let rt = tokio::runtime::Runtime::new().unwrap();
    let frame = rt.block_on(async {
        let opts = smoke::rfb::ConnectOptions { password: Some(password.clone()), ..Default::default() };
        let c = smoke::rfb::VncClient::connect(&smoke::rfb::Endpoint::Tcp { host: "127.0.0.1".into(), port }, &opts)
            .await
            .unwrap();
        c.capture(Duration::from_secs(10)).await.unwrap()
    });
    assert_eq!((frame.width(), frame.height()), (1280, 720));
    assert!(!marker.exists(), "cleanup waits for the user");
    child.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(marker.exists(), "Enter continued with cleanup");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "torn down afterwards");
    // the password went to the terminal, never into the results
    let ev = std::fs::read_to_string(run_dir(results.path()).unwrap().join("events.jsonl")).unwrap();
    assert!(!ev.contains(&password));
    assert!(ev.contains("paused after step"));
}

#[test]
fn pause_on_failure_abort_skips_cleanup() {
    let _desktop = lock();
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("cleaned");
    let p = failing_project(&marker);
    let results = tempfile::tempdir().unwrap();
    let mut child = smoke()
        .current_dir(p.path())
        .args(["run", "scenarios/fails.yaml", "--pause-on-failure", "--results"])
        .arg(results.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines(&mut child);
    let mut seen = Vec::new();
    wait_line(&rx, "press Enter", &mut seen);
    child.stdin.as_mut().unwrap().write_all(b"a\n").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(1));
    assert!(!marker.exists(), "abort skipped cleanup");
    let ev = events(&run_dir(results.path()).unwrap());
    assert!(statuses(&ev).iter().any(|(n, s)| *n == 4 && s == "skipped"), "{:?}", statuses(&ev));
}

#[test]
fn smoke_shell_opens_a_shell_in_the_desktop_and_tears_it_down() {
    let _desktop = lock();
    let mut child = smoke()
        .current_dir(repo())
        .env("SHELL", "/bin/sh")
        .args(["shell"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(&mut child);
    let mut seen = Vec::new();
    let (port, _) = vnc_line(&wait_line(&rx, "VNC: ", &mut seen));
    wait_line(&rx, "opening /bin/sh", &mut seen);
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"echo display=$DISPLAY home=$HOME; xprop -root _NET_SUPPORTING_WM_CHECK; exit 7\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7), "the shell's exit code");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("display=:") && stdout.contains("smoke-desktop-"), "{stdout}");
    assert!(stdout.contains("window id"), "the window manager runs on that display: {stdout}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "torn down after the shell exited");
}
