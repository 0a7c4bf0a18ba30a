//! A throw-away Xvnc desktop for the vision tests: Xvnc on a free display
//! (`-displayfd`), openbox, and the apps a test starts; screens are grabbed with
//! ffmpeg's x11grab. Every process is killed when the `Desktop` is dropped,
//! also when the test panics.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use smoke::frame::Frame;
use smoke::geometry::Rect;

pub struct Desktop {
    display: String,
    /// Started processes, Xvnc first; killed in reverse order.
    children: Vec<Child>,
    dir: tempfile::TempDir,
    grabs: u32,
}

pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 720;

impl Desktop {
    /// Xvnc 1280x720x24 without any network listener, plus openbox.
    pub fn start() -> Desktop {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("xvnc.log")).expect("log file");
        let mut xvnc = Command::new("Xvnc")
            .args(["-displayfd", "1", "-rfbport", "-1", "-SecurityTypes", "None", "-AlwaysShared"])
            .args(["-geometry", &format!("{WIDTH}x{HEIGHT}"), "-depth", "24", "-nolisten", "tcp"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start Xvnc (Debian package tigervnc-standalone-server)");
        let stdout = xvnc.stdout.take().expect("Xvnc stdout");
        let mut desktop = Desktop { display: String::new(), children: vec![xvnc], dir, grabs: 0 };
        // Xvnc writes the display number once it accepts connections.
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read display number");
        let number: u32 = line.trim().parse().unwrap_or_else(|_| {
            let log = std::fs::read_to_string(desktop.dir.path().join("xvnc.log")).unwrap_or_default();
            panic!("Xvnc gave no display number ({line:?}); log:\n{log}")
        });
        desktop.display = format!(":{number}");
        desktop.spawn("openbox", &[]);
        desktop.wait_until("openbox manages the screen", Duration::from_secs(10), |d| {
            d.run("xprop", &["-root", "_NET_SUPPORTING_WM_CHECK"]).contains("window id")
        });
        // The pointer starts in the middle, where new windows open: park it in a
        // corner so that no tooltip covers them.
        desktop.xdotool(&["mousemove", "0", "0"]);
        desktop
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    /// Start a program on this desktop; returns its pid.
    pub fn spawn(&mut self, program: &str, args: &[&str]) -> u32 {
        let child = Command::new(program)
            .args(args)
            .env("DISPLAY", &self.display)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// An xterm (`-fa Monospace -fs 14`, black on white) running `script` with
    /// bash; returns its window id once it is mapped.
    pub fn xterm(&mut self, geometry: &str, script: &str) -> String {
        let pid = self.spawn(
            "xterm",
            &[
                "-fa",
                "Monospace",
                "-fs",
                "14",
                "-bg",
                "white",
                "-fg",
                "black",
                "-geometry",
                geometry,
                "-e",
                "bash",
                "-c",
                script,
            ],
        );
        self.window_of(pid)
    }

    /// galculator; returns its window id.
    pub fn galculator(&mut self) -> String {
        let pid = self.spawn("galculator", &[]);
        self.window_of(pid)
    }

    /// The largest visible window of process `pid` (not a tooltip).
    pub fn window_of(&self, pid: u32) -> String {
        let mut found = String::new();
        self.wait_until("the window appears", Duration::from_secs(15), |d| {
            found = d.run("xdotool", &["search", "--onlyvisible", "--pid", &pid.to_string()]);
            !found.trim().is_empty()
        });
        found.lines().map(|w| w.trim().to_string()).max_by_key(|w| self.window_rect(w).area()).unwrap_or_default()
    }

    /// Run a command with DISPLAY set; its stdout (empty on failure).
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        Command::new(program)
            .args(args)
            .env("DISPLAY", &self.display)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    pub fn xdotool(&self, args: &[&str]) -> String {
        self.run("xdotool", args)
    }

    /// The client area of a window in screen coordinates (xwininfo).
    pub fn window_rect(&self, window: &str) -> Rect {
        let info = self.run("xwininfo", &["-id", window]);
        let field = |name: &str| -> u32 {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().parse::<u32>().unwrap_or(0)))
                .unwrap_or_else(|| panic!("xwininfo has no {name}: {info}"))
        };
        Rect::new(field("Absolute upper-left X:"), field("Absolute upper-left Y:"), field("Width:"), field("Height:"))
    }

    /// Move a window's frame to (x, y) and wait until xwininfo reports it there.
    pub fn move_window(&self, window: &str, x: u32, y: u32) {
        let before = self.window_rect(window);
        self.xdotool(&["windowmove", window, &x.to_string(), &y.to_string()]);
        self.wait_until("the window moves", Duration::from_secs(5), |d| d.window_rect(window) != before);
    }

    /// Click at (x, y).
    pub fn click(&self, x: u32, y: u32) {
        self.xdotool(&["mousemove", "--sync", &x.to_string(), &y.to_string()]);
        self.xdotool(&["click", "1"]);
    }

    /// The screen now, without the mouse pointer.
    pub fn grab(&mut self) -> Frame {
        self.grabs += 1;
        let path: PathBuf = self.dir.path().join(format!("grab{}.png", self.grabs));
        let status = Command::new("ffmpeg")
            .args(["-loglevel", "error", "-y", "-f", "x11grab", "-draw_mouse", "0"])
            .args(["-video_size", &format!("{WIDTH}x{HEIGHT}"), "-i", &self.display, "-frames:v", "1"])
            .arg(&path)
            .stdin(Stdio::null())
            .status()
            .expect("run ffmpeg");
        assert!(status.success(), "ffmpeg x11grab failed");
        Frame::load_png(&path).expect("grabbed PNG")
    }

    /// Poll `check` every 100 ms until it holds; panics after `budget`.
    pub fn wait_until(&self, what: &str, budget: Duration, mut check: impl FnMut(&Desktop) -> bool) {
        let start = Instant::now();
        while !check(self) {
            assert!(start.elapsed() < budget, "timed out after {budget:?} waiting until {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
