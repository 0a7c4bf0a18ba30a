//! The QEMU test guest for tests and benches that type into it and read the
//! result back from its serial console: QEMU 10 (TCG) booting the guest of
//! `scripts/build-test-guest.sh` (busybox shells on tty1 and ttyS0), with
//! extra files appended to its initramfs as a second cpio archive (Linux
//! unpacks concatenated archives), so a test can add what it needs (the de
//! keymap) without a guest variant. QEMU leads its own process group, killed
//! on drop, also on panic.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use smoke::rfb::protocol::QEMU_EXTENDED_KEY_EVENT;
use smoke::rfb::{ConnectOptions, Encoding, Endpoint, VncClient};

/// TESTBED: the guest boots in 4.7-7.5 s under TCG; leave room on a busy box.
pub const BOOT_LIMIT: Duration = Duration::from_secs(60);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run a build script of scripts/ (quick when its output exists).
pub fn build(script: &str, args: &[&str]) {
    let status = Command::new("bash").arg(repo().join("scripts").join(script)).args(args).status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!("scripts/{script} failed ({other:?}): run scripts/setup-debian.sh first"),
    }
}

/// The built guest's directory (target/test-guest).
pub fn guest_files() -> PathBuf {
    build("build-test-guest.sh", &[]);
    repo().join("target/test-guest")
}

fn which(program: &str) {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false);
    assert!(found, "{program} not found: scripts/setup-debian.sh installs it");
}

/// A TCP display number whose port (5900 + D) is free right now.
fn free_display() -> u16 {
    for display in 60..250u16 {
        if std::net::TcpListener::bind(("127.0.0.1", 5900 + display)).is_ok() {
            return display;
        }
    }
    panic!("no free VNC display between :60 and :249");
}

/// A running QEMU guest: VNC on a loopback port and on a Unix socket.
pub struct Guest {
    qemu: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// When QEMU was started (after the guest was built).
    pub started: Instant,
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.qemu.id()) {
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.qemu.wait();
    }
}

impl Guest {
    /// Boot the test guest with `extra` files (name in the guest's `/`, file
    /// on the host) added to its initramfs.
    pub fn boot(extra: &[(&str, &Path)]) -> Guest {
        let files = guest_files();
        which("qemu-system-x86_64");
        which("cpio");
        let dir = tempfile::tempdir().unwrap();
        let mut initrd = std::fs::read(files.join("initramfs.cpio.gz")).unwrap();
        if !extra.is_empty() {
            let stage = dir.path().join("extra");
            std::fs::create_dir(&stage).unwrap();
            let mut list = String::new();
            for (name, path) in extra {
                std::fs::copy(path, stage.join(name)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                list.push_str(name);
                list.push('\n');
            }
            let mut cpio = Command::new("cpio")
                .args(["-o", "-H", "newc", "--quiet"])
                .current_dir(&stage)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(&mut cpio.stdin.take().unwrap(), list.as_bytes()).unwrap();
            let out = cpio.wait_with_output().unwrap();
            assert!(out.status.success(), "cpio failed");
            // Linux looks for an uncompressed archive after a compressed one
            // only at a 4-byte boundary (zero bytes are skipped)
            initrd.resize(initrd.len().next_multiple_of(4), 0);
            initrd.extend_from_slice(&out.stdout);
        }
        let initrd_path = dir.path().join("initrd");
        std::fs::write(&initrd_path, initrd).unwrap();
        let display = free_display();
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max", "-machine", "pc", "-m", "256", "-smp", "1"])
            .args(["-nodefaults", "-vga", "std", "-no-user-config", "-display", "none"])
            .arg("-kernel")
            .arg(files.join("vmlinuz"))
            .arg("-initrd")
            .arg(&initrd_path)
            .args(["-append", "console=ttyS0 console=tty0 quiet loglevel=3"])
            .args(["-vnc", &format!("127.0.0.1:{display}")])
            .arg("-vnc")
            .arg(format!("unix:{}", dir.path().join("vnc.sock").display()))
            .arg("-serial")
            .arg(format!("file:{}", dir.path().join("serial.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("qemu.err")).unwrap())
            .process_group(0);
        let qemu = cmd.spawn().expect("start qemu-system-x86_64");
        Guest { qemu, dir, port: 5900 + display, started: Instant::now() }
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::tcp("127.0.0.1", self.port)
    }

    pub fn unix(&self) -> Endpoint {
        Endpoint::Unix(self.dir.path().join("vnc.sock"))
    }

    /// Connect once QEMU listens (it opens its sockets right after start).
    /// The display changes size while the guest boots (firmware, then the
    /// 720x400 text console): every client takes DesktopSize.
    pub async fn connect(&mut self, endpoint: &Endpoint, encodings: &[Encoding]) -> VncClient {
        let mut encodings = encodings.to_vec();
        encodings.push(Encoding::DesktopSize);
        let opts = ConnectOptions { password: None, timeout: Duration::from_secs(10), encodings, ..Default::default() };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match VncClient::connect(endpoint, &opts).await {
                Ok(c) => return c,
                Err(e) => {
                    if let Ok(Some(status)) = self.qemu.try_wait() {
                        panic!("QEMU exited ({status}): {}", self.stderr());
                    }
                    assert!(Instant::now() < deadline, "connect to {endpoint}: {e}; QEMU says: {}", self.stderr());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.path().join("serial.log")).unwrap_or_default()).into_owned()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("qemu.err")).unwrap_or_default()
    }

    /// Wait until the serial log holds `marker`; the time it took.
    pub async fn wait_serial(&self, marker: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        while !self.serial().contains(marker) {
            assert!(
                start.elapsed() < limit,
                "{marker} never reached the serial log within {limit:?}: {:?}; QEMU says: {}",
                self.serial(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start.elapsed()
    }

    /// Boot to the banner, connect (Raw and scancodes) and check that QEMU
    /// takes scancodes.
    pub async fn ready_client(&mut self) -> VncClient {
        self.wait_serial("SMOKE-GUEST-READY", BOOT_LIMIT).await;
        let client = self.connect(&self.endpoint(), &[Encoding::Raw, QEMU_EXTENDED_KEY_EVENT]).await;
        client.capture(Duration::from_secs(10)).await.unwrap();
        assert!(client.takes_scancodes(), "QEMU did not acknowledge the QEMU Extended Key Event pseudo-encoding");
        client
    }
}

/// The lines of `serial` after the first line containing `marker`, with the
/// serial console's `\r\n` line ends as `\n`.
pub fn serial_lines_after(serial: &str, marker: &str) -> Vec<String> {
    let Some(at) = serial.find(marker) else { return Vec::new() };
    let rest = &serial[at..];
    rest.split('\n').skip(1).map(|l| l.trim_end_matches('\r').to_string()).collect()
}
