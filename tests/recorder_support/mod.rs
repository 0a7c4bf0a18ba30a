//! Test and benchmark support for the recorder: a real desktop (TigerVNC Xvnc +
//! openbox + apps), user activity driven by xdotool, and a frame source fed by
//! `ffmpeg -f x11grab` (the VNC client is built elsewhere; this stands in for it).
//!
//! Every process started here is owned by a [`ChildGuard`] that kills it on drop,
//! also when a test fails or panics.

#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smoke::frame::Frame;
use smoke::recorder::FrameSource;

/// A child process killed (and reaped) when dropped.
pub struct ChildGuard {
    name: String,
    child: Child,
}

impl ChildGuard {
    pub fn spawn(name: &str, command: &mut Command) -> Result<ChildGuard, String> {
        let child = command.spawn().map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(ChildGuard { name: name.to_string(), child })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs (not exited, not a zombie we reaped).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SIGTERM first so Xvnc removes its lock file and socket.
            // SAFETY: kill() with the pid of a child we own and have not reaped.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = &self.name;
    }
}

fn free_tcp_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// A running Xvnc desktop with openbox. Apps started through it die first, then
/// the window manager, then the X server.
pub struct Desktop {
    display: u32,
    width: u32,
    height: u32,
    apps: Vec<ChildGuard>,
    window_manager: Option<ChildGuard>,
    server: Option<ChildGuard>,
}

impl Drop for Desktop {
    fn drop(&mut self) {
        while let Some(app) = self.apps.pop() {
            drop(app);
        }
        self.window_manager.take();
        self.server.take();
    }
}

impl Desktop {
    /// Start Xvnc on a free display number and openbox on it; waits until the
    /// window manager is up.
    pub fn start(width: u32, height: u32) -> Result<Desktop, String> {
        let first = 40 + std::process::id() % 150;
        for display in (first..first + 60).map(|n| 40 + (n - 40) % 200) {
            if Path::new(&format!("/tmp/.X11-unix/X{display}")).exists()
                || Path::new(&format!("/tmp/.X{display}-lock")).exists()
            {
                continue;
            }
            let port = free_tcp_port()?;
            let mut server = ChildGuard::spawn(
                "Xvnc",
                Command::new("Xvnc")
                    .arg(format!(":{display}"))
                    .args(["-rfbport", &port.to_string(), "-localhost", "-SecurityTypes", "None"])
                    .args(["-geometry", &format!("{width}x{height}"), "-depth", "24"])
                    .args(["-AlwaysShared", "-nolisten", "tcp"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )?;
            let socket = format!("/tmp/.X11-unix/X{display}");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut up = false;
            while Instant::now() < deadline && server.running() {
                if Path::new(&socket).exists() && x_ok(display) {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !up {
                continue; // display taken by someone else meanwhile: next number
            }
            let mut desktop =
                Desktop { display, width, height, apps: Vec::new(), window_manager: None, server: Some(server) };
            let wm = ChildGuard::spawn(
                "openbox",
                Command::new("openbox")
                    .env("DISPLAY", format!(":{display}"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )?;
            desktop.window_manager = Some(wm);
            desktop.wait_until(Duration::from_secs(10), "window manager", |d| {
                d.run("xprop", &["-root", "_NET_SUPPORTING_WM_CHECK"])
                    .map(|out| out.contains("window id"))
                    .unwrap_or(false)
            })?;
            return Ok(desktop);
        }
        Err("no free X display number found".into())
    }

    pub fn display(&self) -> u32 {
        self.display
    }

    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Run a command on this display and return its stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(program)
            .args(args)
            .env("DISPLAY", format!(":{}", self.display))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{program} {args:?}: {}", out.status));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn wait_until(&self, budget: Duration, what: &str, mut ready: impl FnMut(&Desktop) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + budget;
        while Instant::now() < deadline {
            if ready(self) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("{what} not ready after {budget:?}"))
    }

    /// Start an app and wait until a visible window of `class` exists; returns its
    /// window id.
    pub fn launch(&mut self, program: &str, args: &[&str], class: &str) -> Result<String, String> {
        let app = ChildGuard::spawn(
            program,
            Command::new(program)
                .args(args)
                .env("DISPLAY", format!(":{}", self.display))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        self.apps.push(app);
        let mut window = String::new();
        self.wait_until(Duration::from_secs(15), program, |d| {
            match d.run("xdotool", &["search", "--onlyvisible", "--class", class]) {
                Ok(out) => match out.lines().last() {
                    Some(id) if !id.trim().is_empty() => {
                        window = id.trim().to_string();
                        true
                    }
                    _ => false,
                },
                Err(_) => false,
            }
        })?;
        Ok(window)
    }

    /// Window position and size from `xdotool getwindowgeometry --shell`.
    pub fn geometry(&self, window: &str) -> Result<(i32, i32, i32, i32), String> {
        let out = self.run("xdotool", &["getwindowgeometry", "--shell", window])?;
        let mut values = std::collections::HashMap::new();
        for line in out.lines() {
            if let Some((k, v)) = line.split_once('=') {
                values.insert(k.to_string(), v.trim().parse::<i32>().unwrap_or(0));
            }
        }
        let get = |k: &str| values.get(k).copied().ok_or(format!("no {k} in {out}"));
        Ok((get("X")?, get("Y")?, get("WIDTH")?, get("HEIGHT")?))
    }
}

/// True when an X client can talk to display `:display`.
fn x_ok(display: u32) -> bool {
    Command::new("xdpyinfo")
        .env("DISPLAY", format!(":{display}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The latest captured screen and a counter of captures: a [`FrameSource`].
#[derive(Default)]
pub struct LatestFrame {
    frame: Mutex<Option<Frame>>,
    seq: AtomicU64,
}

impl LatestFrame {
    pub fn publish(&self, frame: Frame) {
        if let Ok(mut slot) = self.frame.lock() {
            *slot = Some(frame);
        }
        self.seq.fetch_add(1, Ordering::SeqCst);
    }
}

impl FrameSource for LatestFrame {
    fn update_seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }
    fn snapshot(&self) -> Option<Frame> {
        self.frame.lock().ok().and_then(|f| f.clone())
    }
}

/// `ffmpeg -f x11grab` capturing a display as raw RGB frames; each frame goes to
/// the sink with its capture instant.
pub struct X11Grab {
    ffmpeg: Option<ChildGuard>,
    reader: Option<JoinHandle<u64>>,
    stop: Arc<AtomicBool>,
}

impl X11Grab {
    pub fn start(
        desktop: &Desktop,
        fps: u32,
        mut sink: impl FnMut(Frame, Instant) + Send + 'static,
    ) -> Result<X11Grab, String> {
        let (width, height) = desktop.size();
        let mut ffmpeg = ChildGuard::spawn(
            "ffmpeg",
            Command::new("ffmpeg")
                .args(["-nostdin", "-loglevel", "error", "-f", "x11grab"])
                .args(["-framerate", &fps.to_string()])
                .args(["-video_size", &format!("{width}x{height}")])
                .args(["-i", &format!(":{}", desktop.display())])
                .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        )?;
        let mut stdout = ffmpeg.stdout().ok_or("ffmpeg has no stdout")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_reader = stop.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; width as usize * height as usize * 3];
            let mut frames = 0u64;
            while !stop_reader.load(Ordering::SeqCst) {
                if stdout.read_exact(&mut buf).is_err() {
                    break;
                }
                let at = Instant::now();
                if let Ok(frame) = Frame::from_rgb(width, height, &buf) {
                    sink(frame, at);
                    frames += 1;
                }
            }
            frames
        });
        Ok(X11Grab { ffmpeg: Some(ffmpeg), reader: Some(reader), stop })
    }

    /// Stop capturing; returns the number of frames delivered.
    pub fn stop(mut self) -> u64 {
        self.shutdown()
    }

    fn shutdown(&mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.ffmpeg.take(); // kills ffmpeg: the reader sees EOF
        self.reader.take().and_then(|r| r.join().ok()).unwrap_or(0)
    }
}

impl Drop for X11Grab {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Scripted user activity: typing in xterm, moving windows, clicking galculator
/// buttons, with idle pauses. Runs for about `duration`.
pub struct Activity {
    pub xterm: String,
    pub calculator: String,
}

impl Activity {
    /// Start xterm and galculator on the desktop.
    pub fn launch_apps(desktop: &mut Desktop) -> Result<Activity, String> {
        let xterm = desktop.launch("xterm", &["-fa", "Monospace", "-fs", "14", "-geometry", "70x16+30+40"], "xterm")?;
        let calculator = desktop.launch("galculator", &[], "galculator")?;
        desktop.run("xdotool", &["windowmove", &calculator, "760", "120"])?;
        Ok(Activity { xterm, calculator })
    }

    pub fn run(&self, desktop: &Desktop, duration: Duration) -> Result<(), String> {
        let start = Instant::now();
        let words = ["ls -l /usr", "echo smoke test", "uname -a", "date", "seq 1 30", "clear"];
        let mut round = 0usize;
        while start.elapsed() < duration {
            // Type a command in xterm.
            desktop.run("xdotool", &["windowactivate", "--sync", &self.xterm])?;
            std::thread::sleep(Duration::from_millis(150));
            let word = words[round % words.len()];
            desktop.run("xdotool", &["type", "--delay", "60", word])?;
            desktop.run("xdotool", &["key", "Return"])?;
            if start.elapsed() >= duration {
                break;
            }
            // Move the xterm window in a few steps.
            for step in 0..4 {
                let x = 30 + ((round * 4 + step) % 8) * 25;
                let y = 40 + ((round + step) % 5) * 20;
                desktop.run("xdotool", &["windowmove", &self.xterm, &x.to_string(), &y.to_string()])?;
                std::thread::sleep(Duration::from_millis(120));
            }
            // Click some galculator buttons.
            desktop.run("xdotool", &["windowactivate", "--sync", &self.calculator])?;
            let (gx, gy, gw, gh) = desktop.geometry(&self.calculator)?;
            for k in 0..4 {
                let cx = gx + gw * (2 + ((round + k) % 4) as i32 * 2) / 10;
                let cy = gy + gh * (5 + ((round * 3 + k) % 4) as i32) / 10;
                desktop.run("xdotool", &["mousemove", &cx.to_string(), &cy.to_string(), "click", "1"])?;
                std::thread::sleep(Duration::from_millis(200));
            }
            // Idle: nothing changes on screen.
            std::thread::sleep(Duration::from_millis(700));
            round += 1;
        }
        Ok(())
    }
}
