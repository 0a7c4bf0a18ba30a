//! `smoke vnc capture|key|type|click|move` through the binary against a real
//! Xvnc: what arrived is read back from files the apps write, xev logs and
//! xdotool.

mod xvnc_support;

use std::process::{Command, Output};
use std::time::Duration;

use xvnc_support::{Desktop, poll, read_lines};

fn smoke() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_smoke"));
    c.env_remove("SMOKE_VNC_PASSWORD").env("SMOKE_LOG", "warn");
    c
}

fn vnc(args: &[&str]) -> Output {
    smoke().arg("vnc").args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Xvnc tests run one at a time (the machine has two cores).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn png_size(path: &std::path::Path) -> (u32, u32) {
    let f = smoke::frame::Frame::load_png(path).unwrap();
    (f.width(), f.height())
}

#[test]
fn capture_over_tcp_and_unix_socket_with_passwords_from_env_and_file() {
    let _serial = serial();
    let secrets = tempfile::tempdir().unwrap();
    let vncpasswd = secrets.path().join("passwd");
    std::fs::write(&vncpasswd, smoke::rfb::vnc_password_file("s3cret")).unwrap();
    let desktop = Desktop::start_with(&["-SecurityTypes", "VncAuth", "-PasswordFile", vncpasswd.to_str().unwrap()]);
    let out = desktop.path("shot.png");
    let o = smoke()
        .env("SMOKE_VNC_PASSWORD", "s3cret")
        .args(["vnc", "capture", &desktop.address()])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(png_size(&out), (1280, 720));

    let plain = secrets.path().join("pw.txt");
    std::fs::write(&plain, "s3cret\n").unwrap();
    let unix = format!("unix:{}", desktop.path("rfb.sock").display());
    let out2 = desktop.path("shot2.png");
    let o = vnc(&[
        "capture",
        &unix,
        out2.to_str().unwrap(),
        "--password-file",
        plain.to_str().unwrap(),
        "--encodings",
        "raw",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(png_size(&out2), (1280, 720));
    // --unix PATH in place of the address, options before and after the verb
    let out3 = desktop.path("shot3.png");
    let o = smoke()
        .env("SMOKE_VNC_PASSWORD", "s3cret")
        .args(["vnc", "--layout", "us", "capture", "--unix"])
        .arg(desktop.path("rfb.sock"))
        .arg(&out3)
        .args(["--timeout", "5s"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(png_size(&out3), (1280, 720));

    let o = smoke()
        .env("PW", "wrong")
        .args(["vnc", "capture", &desktop.address(), "x.png", "--password-env", "PW"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!text(&o).contains("wrong"), "the password leaked: {}", text(&o));
    let o = vnc(&["capture", &desktop.address(), "x.png", "--password-env", "NO_SUCH_VAR_HERE"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("NO_SUCH_VAR_HERE"), "{}", text(&o));
}

#[test]
fn type_key_click_and_move_reach_real_apps() {
    let _serial = serial();
    let mut desktop = Desktop::start_raw_keyboard();
    let addr = desktop.address();
    let file = desktop.path("typed.txt");
    let window = desktop.xterm("cli", "80x5+0+0", &format!("exec cat > '{}'", file.display()));
    let (x, y) = desktop.centre(&window);
    let o = vnc(&["move", &addr, &x.to_string(), &y.to_string(), "--path", "bezier", "--duration", "150ms"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(poll(Duration::from_secs(5), || (desktop.pointer() == (x, y)).then_some(())).is_some());
    let o = vnc(&["type", &addr, "Hello, World! ~{x}|\"q\"", "--interval", "5ms"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = vnc(&["key", &addr, "BackSpace", "enter"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(read_lines(&file, 1, Duration::from_secs(5)), "Hello, World! ~{x}|\"q\n");

    // German layout on the server and on the command line
    desktop.run("setxkbmap", &["-layout", "de"]);
    let o = vnc(&["type", &addr, "zy@€\n", "--layout", "de", "--confirm", "2s"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(read_lines(&file, 2, Duration::from_secs(5)).lines().nth(1), Some("zy@€"));

    // keys on the bare root window go nowhere: --confirm says which text was lost
    let o = vnc(&["move", &addr, "1200", "650"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(poll(Duration::from_secs(5), || (desktop.pointer() == (1200, 650)).then_some(())).is_some());
    let o = vnc(&["type", &addr, "nobody", "--confirm", "1s"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("\"nobody\" (characters 1-6 of the text)"), "{}", text(&o));

    // clicks: an xev window logs the buttons
    let log = desktop.path("xev.txt");
    desktop.spawn(
        "sh",
        &["-c", &format!("exec xev -name evwin -geometry 300x200+600+300 -event button > '{}'", log.display())],
    );
    desktop.xdotool(&["search", "--sync", "--onlyvisible", "--name", "^evwin$"]);
    for args in [vec!["650", "350", "--button", "right"], vec!["700", "360", "--double"]] {
        let mut a = vec!["click", addr.as_str()];
        a.extend(args);
        let o = vnc(&a);
        assert!(o.status.success(), "{}", text(&o));
    }
    let buttons = poll(Duration::from_secs(5), || {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        let b: Vec<String> = t
            .lines()
            .filter(|l| l.contains("button "))
            .filter_map(|l| l.split("button ").nth(1).map(|b| b.split(',').next().unwrap().to_string()))
            .collect();
        // press and release of each click
        (b.len() >= 6).then_some(b)
    });
    assert_eq!(buttons.unwrap(), vec!["3", "3", "1", "1", "1", "1"]);
}

#[test]
fn bad_arguments_exit_2_with_the_reason() {
    for (args, want) in [
        (vec!["capture", "h:70000", "x.png"], "is not a VNC address"),
        (vec!["type", "127.0.0.1:1", "x", "--layout", "fr"], "unknown keyboard layout 'fr'"),
        (vec!["key", "127.0.0.1:1", "ctrl+entr"], "did you mean 'enter'"),
        (vec!["click", "127.0.0.1:1", "1", "2", "--button", "thumb"], "unknown button 'thumb'"),
        (vec!["capture", "127.0.0.1:1", "x.png", "--encodings", "jpeg"], "unknown encoding 'jpeg'"),
    ] {
        let o = vnc(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(want), "{args:?}: {}", text(&o));
    }
    // nobody listening: an infrastructure error
    let port = xvnc_support::free_port();
    let o = vnc(&["capture", &format!("127.0.0.1:{port}"), "x.png", "--timeout", "2s"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
}
