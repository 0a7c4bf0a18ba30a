//! A throw-away TigerVNC Xvnc desktop for the tests that need a real VNC
//! server: Xvnc on a free TCP port and display (`-displayfd`), a Unix socket
//! beside it, optional security arguments (VNC password, VeNCrypt with
//! certificates), X clients started on it (xterm, openbox, xsetroot),
//! xdotool to read back what happened. Everything is killed on drop, also on
//! panic.

#![allow(dead_code)]

use std::io::BufRead;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Desktop {
    pub xvnc: Child,
    pub display: u32,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub apps: Vec<Child>,
    /// Extra Xvnc arguments (kept for restarts).
    pub extra: Vec<String>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn terminate(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SIGCONT first: a test may have stopped it.
        unsafe {
            libc::kill(pid, libc::SIGCONT);
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Desktop {
    fn drop(&mut self) {
        for app in self.apps.iter_mut().rev() {
            terminate(app);
        }
        terminate(&mut self.xvnc);
    }
}

/// Start Xvnc with `-displayfd`; returns it and its display number.
/// `extra` arguments come last; without `-geometry` or `-SecurityTypes` of
/// their own the screen is 1280x720 and security None.
fn spawn_xvnc(dir: &Path, port: u16, display: Option<u32>, extra: &[String]) -> Option<(Child, u32)> {
    let (reader, writer) = std::io::pipe().unwrap();
    let fd = writer.as_raw_fd();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("xvnc.log")).unwrap();
    let mut cmd = Command::new("Xvnc");
    if let Some(d) = display {
        cmd.arg(format!(":{d}"));
    }
    let has = |arg: &str| extra.iter().any(|a| a == arg);
    cmd.args(["-displayfd", &fd.to_string(), "-rfbport", &port.to_string()])
        .args(["-localhost", "-depth", "24", "-AlwaysShared"])
        .args(["-nolisten", "tcp", "-BlacklistThreshold", "1000000", "-desktop", "smoke test"]);
    if !has("-geometry") {
        cmd.args(["-geometry", "1280x720"]);
    }
    if !has("-SecurityTypes") {
        cmd.args(["-SecurityTypes", "None"]);
    }
    cmd.args(extra).arg("-rfbunixpath").arg(dir.join("rfb.sock"));
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut xvnc = cmd.spawn().expect("Xvnc (tigervnc-standalone-server) must be installed");
    drop(writer);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(reader).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(15)).map(|l| l.trim().parse::<u32>()) {
        Ok(Ok(display)) => Some((xvnc, display)),
        _ => {
            terminate(&mut xvnc);
            None
        }
    }
}

impl Desktop {
    pub fn start() -> Desktop {
        Desktop::start_with(&[])
    }

    /// `-RawKeyboard`: Xvnc passes scancodes through its keymap as a
    /// physical keyboard (and QEMU) does, instead of mapping keysyms.
    pub fn start_raw_keyboard() -> Desktop {
        Desktop::start_with(&["-RawKeyboard"])
    }

    pub fn start_with(extra: &[&str]) -> Desktop {
        Desktop::start_in(|_| extra.iter().map(|s| s.to_string()).collect())
    }

    /// Security VncAuth with `password` (a TigerVNC password file in the
    /// desktop's folder).
    pub fn start_with_password(password: &str) -> Desktop {
        Desktop::start_in(|dir| password_args(dir, password))
    }

    /// Xvnc with the arguments `extra` returns for the desktop's folder (it
    /// may write files there first).
    pub fn start_in(extra: impl Fn(&Path) -> Vec<String>) -> Desktop {
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let extra = extra(dir.path());
            if let Some((xvnc, display)) = spawn_xvnc(dir.path(), port, None, &extra) {
                return Desktop { xvnc, display, port, dir, apps: Vec::new(), extra };
            }
            last_log = std::fs::read_to_string(dir.path().join("xvnc.log")).unwrap_or_default();
        }
        panic!("Xvnc failed to start five times: {last_log}");
    }

    /// Xvnc's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("xvnc.log")).unwrap_or_default()
    }

    /// The Unix socket Xvnc also serves RFB on.
    pub fn unix_endpoint(&self) -> smoke::rfb::Endpoint {
        smoke::rfb::Endpoint::Unix(self.path("rfb.sock"))
    }

    /// Start a helper process (socat, websockify, x11vnc) that lives until
    /// the desktop is dropped, and wait until it listens on `port`.
    pub fn spawn_listener(&mut self, cmd: &mut Command, port: u16) {
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        self.apps.push(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{cmd:?} did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kill Xvnc (its X clients die with it) and start a new one on the same
    /// port and display.
    pub fn restart_server(&mut self) {
        terminate(&mut self.xvnc);
        for app in &mut self.apps {
            terminate(app);
        }
        self.apps.clear();
        for _ in 0..50 {
            if let Some((xvnc, _)) = spawn_xvnc(self.dir.path(), self.port, Some(self.display), &self.extra) {
                self.xvnc = xvnc;
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("Xvnc did not restart");
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.xvnc.id() as i32, sig) };
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn endpoint(&self) -> smoke::rfb::Endpoint {
        smoke::rfb::Endpoint::tcp("127.0.0.1", self.port)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DISPLAY", format!(":{}", self.display)).stdin(Stdio::null());
        cmd
    }

    /// Run a command on the desktop to completion; its stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn xdotool(&self, args: &[&str]) -> String {
        self.run("xdotool", args)
    }

    /// Start an X client that lives until the desktop is dropped.
    pub fn spawn(&mut self, program: &str, args: &[&str]) {
        let child = self
            .command(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        self.apps.push(child);
    }

    /// Start openbox and wait until it manages the screen.
    pub fn window_manager(&mut self) {
        self.spawn("openbox", &[]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.command("xprop").args(["-root", "_NET_SUPPORTING_WM_CHECK"]).output().unwrap();
            if String::from_utf8_lossy(&out.stdout).contains("window id") {
                return;
            }
            assert!(Instant::now() < deadline, "openbox did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An xterm titled `title` at `geometry` running `script`; its window id.
    pub fn xterm(&mut self, title: &str, geometry: &str, script: &str) -> String {
        self.xterm_with(title, geometry, &[], script)
    }

    /// An xterm with (background, foreground) colours.
    pub fn xterm_coloured(&mut self, title: &str, geometry: &str, colours: (&str, &str), script: &str) -> String {
        self.xterm_with(title, geometry, &["-bg", colours.0, "-fg", colours.1], script)
    }

    fn xterm_with(&mut self, title: &str, geometry: &str, options: &[&str], script: &str) -> String {
        let mut args = vec!["-T", title, "-fa", "Monospace", "-fs", "14", "-geometry", geometry];
        args.extend_from_slice(options);
        args.extend_from_slice(&["-e", "sh", "-c", script]);
        self.spawn("xterm", &args);
        self.xdotool(&["search", "--sync", "--onlyvisible", "--name", &format!("^{title}$")])
            .lines()
            .next()
            .unwrap()
            .to_string()
    }

    /// Window position and size from xdotool.
    pub fn geometry(&self, window: &str) -> (u32, u32, u32, u32) {
        let out = self.xdotool(&["getwindowgeometry", "--shell", window]);
        let field = |name: &str| -> u32 {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing in {out}"))
        };
        (field("X"), field("Y"), field("WIDTH"), field("HEIGHT"))
    }

    /// The centre of a window.
    pub fn centre(&self, window: &str) -> (u32, u32) {
        let (x, y, w, h) = self.geometry(window);
        (x + w / 2, y + h / 2)
    }

    /// The pointer position as xdotool sees it.
    pub fn pointer(&self) -> (u32, u32) {
        let loc = self.xdotool(&["getmouselocation", "--shell"]);
        let field = |name: &str| -> u32 {
            loc.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).and_then(|v| v.parse().ok()).unwrap()
        };
        (field("X"), field("Y"))
    }
}

/// Xvnc arguments for VncAuth with `password`, whose TigerVNC password file
/// is written into `dir`.
pub fn password_args(dir: &Path, password: &str) -> Vec<String> {
    let file = dir.join("passwd");
    std::fs::write(&file, smoke::rfb::vnc_password_file(password)).unwrap();
    vec!["-SecurityTypes".into(), "VncAuth".into(), "-PasswordFile".into(), file.display().to_string()]
}

/// Poll `f` until it returns Some, for up to `limit`.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The file's text once it holds `lines` complete lines.
pub fn read_lines(path: &Path, lines: usize, limit: Duration) -> String {
    poll(limit, || std::fs::read_to_string(path).ok().filter(|s| s.matches('\n').count() >= lines)).unwrap_or_else(
        || {
            panic!(
                "{} never got {lines} lines: {:?}",
                path.display(),
                std::fs::read_to_string(path).unwrap_or_default()
            )
        },
    )
}

/// Every printable US-ASCII character, space to tilde.
pub fn printable_ascii() -> String {
    (0x20u8..0x7f).map(char::from).collect()
}
