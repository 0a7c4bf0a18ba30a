//! The RFB client against a real QEMU 10 (TCG) booting the tiny test guest
//! built by `scripts/build-test-guest.sh` (Debian's cloud kernel plus a
//! busybox initramfs that prints SMOKE-GUEST-READY on tty1 and ttyS0 and runs
//! a shell on tty1).
//!
//! One guest serves both a TCP display and a Unix socket (QEMU takes two
//! `-vnc` options). The test waits for the banner by OCR of captures, then
//! checks that every encoding QEMU offers and smoke decodes gives the Raw
//! frame bit for bit, and that typing by scancode (QEMU Extended Key Event)
//! runs commands in the guest, over TCP and over the Unix socket. QEMU runs
//! in its own process group, killed on drop even on panic.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use smoke::frame::Frame;
use smoke::input::{Layout, type_text};
use smoke::rfb::protocol::QEMU_EXTENDED_KEY_EVENT;
use smoke::rfb::{ConnectOptions, Encoding, Endpoint, VncClient};
use smoke::vision::ocr::Ocr;

const CAPTURE_TIMEOUT: Duration = Duration::from_secs(5);
/// TESTBED: the guest boots in 4.7-7.5 s under TCG; leave room on a busy box.
const BOOT_LIMIT: Duration = Duration::from_secs(40);

/// A running QEMU guest; its process group is killed on drop.
struct Guest {
    qemu: Child,
    dir: tempfile::TempDir,
    port: u16,
    /// When QEMU was started (after the guest was built).
    started: Instant,
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.qemu.id()) {
            // QEMU leads its own process group (process_group(0) below).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.qemu.wait();
    }
}

/// A TCP display number whose port (5900 + D) is free right now.
fn free_display() -> u16 {
    for display in 40..200u16 {
        if std::net::TcpListener::bind(("127.0.0.1", 5900 + display)).is_ok() {
            return display;
        }
    }
    panic!("no free VNC display between :40 and :199");
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Build the guest (quick when already built) and return its directory.
fn guest_files() -> PathBuf {
    let status = Command::new("bash").arg(repo().join("scripts/build-test-guest.sh")).status();
    match status {
        Ok(s) if s.success() => repo().join("target/test-guest"),
        other => panic!("scripts/build-test-guest.sh failed ({other:?}): run scripts/setup-debian.sh first"),
    }
}

impl Guest {
    fn boot() -> Guest {
        let files = guest_files();
        which("qemu-system-x86_64");
        let dir = tempfile::tempdir().unwrap();
        let display = free_display();
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max", "-machine", "pc", "-m", "256", "-smp", "1"])
            .args(["-nodefaults", "-vga", "std", "-no-user-config", "-display", "none"])
            .arg("-kernel")
            .arg(files.join("vmlinuz"))
            .arg("-initrd")
            .arg(files.join("initramfs.cpio.gz"))
            .args(["-append", "console=ttyS0 console=tty0 quiet loglevel=3"])
            .args(["-vnc", &format!("127.0.0.1:{display}")])
            .arg("-vnc")
            .arg(format!("unix:{}", dir.path().join("vnc.sock").display()))
            .arg("-serial")
            .arg(format!("file:{}", dir.path().join("serial.log").display()))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("qemu.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("qemu.err")).unwrap())
            .process_group(0);
        let qemu = cmd.spawn().expect("start qemu-system-x86_64");
        Guest { qemu, dir, port: 5900 + display, started: Instant::now() }
    }

    fn tcp(&self) -> Endpoint {
        Endpoint::tcp("127.0.0.1", self.port)
    }

    fn unix(&self) -> Endpoint {
        Endpoint::Unix(self.dir.path().join("vnc.sock"))
    }

    fn serial(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serial.log")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("qemu.err")).unwrap_or_default()
    }

    /// Connect once QEMU listens (it opens its sockets right after start).
    async fn connect(&mut self, endpoint: &Endpoint, encodings: &[Encoding]) -> VncClient {
        // The display changes size while the guest boots (firmware, then the
        // 720x400 text console): every client takes DesktopSize.
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
}

fn which(program: &str) {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false);
    assert!(found, "{program} not found: scripts/setup-debian.sh installs it (QEMU from bookworm-backports)");
}

/// Capture until two captures 300 ms apart are identical: a still screen.
async fn still_frame(client: &VncClient) -> Frame {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = client.capture(CAPTURE_TIMEOUT).await.unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let next = client.capture(CAPTURE_TIMEOUT).await.unwrap();
        if next == last {
            return next;
        }
        assert!(Instant::now() < deadline, "the guest screen never stood still");
        last = next;
    }
}

/// How many OCR words of the screen are exactly `word`.
async fn count_on_screen(client: &VncClient, word: &str) -> usize {
    let frame = client.capture(CAPTURE_TIMEOUT).await.unwrap();
    let text = Ocr::new().read(&frame, None).await.unwrap();
    text.words.iter().filter(|w| w.text == word).count()
}

/// Poll the screen by OCR until `word` shows at least `times` times.
async fn wait_on_screen(client: &VncClient, word: &str, times: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut seen = 0;
    while Instant::now() < deadline {
        seen = count_on_screen(client, word).await;
        if seen >= times {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{word} seen {seen} times on the guest screen, wanted {times}, within {limit:?}");
}

/// Type `text` by scancode (US layout), one key event at a time.
async fn type_by_scancode(client: &VncClient, text: &str) {
    for group in type_text(text, Some(Layout::Us)).unwrap() {
        for k in group {
            assert_ne!(k.scancode, 0, "no scancode for keysym {:#x}", k.keysym);
            client.key_code(k.keysym, k.scancode, k.down).await.unwrap();
        }
    }
}

/// Wait until the serial log holds `marker` (the guest writes it there only
/// when the typed command ran: the shell echoes the command line on tty1).
async fn wait_on_serial(guest: &Guest, marker: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !guest.serial().contains(marker) {
        assert!(Instant::now() < deadline, "{marker} never reached the serial log: {:?}", guest.serial());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rects(client: &VncClient, encoding: Encoding) -> u64 {
    client.stats().rects_by_encoding.get(&encoding).copied().unwrap_or(0)
}

async fn type_and_check(guest: &Guest, client: &VncClient, marker: &str) {
    assert!(client.takes_scancodes(), "QEMU did not acknowledge the QEMU Extended Key Event pseudo-encoding");
    type_by_scancode(client, &format!("echo {marker} > /tmp/x; cat /tmp/x; cat /tmp/x > /dev/ttyS0\n")).await;
    wait_on_serial(guest, marker, Duration::from_secs(15)).await;
    // The command line and cat's output: two on screen.
    wait_on_screen(client, marker, 2, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_guest_encodings_and_scancode_typing_over_tcp_and_unix_socket() {
    let started = Instant::now();
    let mut guest = Guest::boot();
    let keys = guest.tcp();
    let client = guest.connect(&keys, &[Encoding::Raw, QEMU_EXTENDED_KEY_EVENT]).await;
    wait_on_screen(&client, "SMOKE-GUEST-READY", 1, BOOT_LIMIT).await;
    assert_eq!(client.size(), (720, 400), "the VGA text console (after the firmware's 640x480)");
    assert!(guest.serial().contains("SMOKE-GUEST-READY"), "serial: {:?}", guest.serial());
    eprintln!("guest ready on screen {:?} after QEMU start", guest.started.elapsed());

    // (a) Each encoding alone decodes the still screen bit for bit as Raw does.
    let raw = still_frame(&client).await;
    assert!(rects(&client, Encoding::Raw) > 0);
    for encoding in [Encoding::Hextile, Encoding::Tight, Encoding::Zrle] {
        let other = guest.connect(&keys, &[encoding]).await;
        let frame = other.capture(CAPTURE_TIMEOUT).await.unwrap();
        let stats = other.stats();
        assert!(rects(&other, encoding) > 0, "{encoding:?} not used by QEMU: {stats:?}");
        assert_eq!(rects(&other, Encoding::Raw), 0, "{encoding:?} client got Raw: {stats:?}");
        assert!(frame == raw, "{encoding:?} frame differs from the Raw frame");
        other.close().await;
    }
    assert!(client.capture(CAPTURE_TIMEOUT).await.unwrap() == raw, "the screen changed during the comparison");

    // (b) Scancode typing over TCP.
    type_and_check(&guest, &client, "STATE-ONE").await;
    client.close().await;

    // (c) The same over the Unix socket: ZRLE matches a Raw frame, typing works.
    let unix = guest.unix();
    let zrle = guest.connect(&unix, &[Encoding::Zrle, QEMU_EXTENDED_KEY_EVENT]).await;
    let raw_unix = guest.connect(&unix, &[Encoding::Raw]).await;
    let still = still_frame(&raw_unix).await;
    assert!(zrle.capture(CAPTURE_TIMEOUT).await.unwrap() == still, "ZRLE over the Unix socket differs from Raw");
    assert!(rects(&zrle, Encoding::Zrle) > 0);
    assert!(!raw_unix.takes_scancodes(), "acknowledged without being asked for");
    type_and_check(&guest, &zrle, "STATE-TWO").await;
    eprintln!("whole test {:?}", started.elapsed());
    drop(guest);
}
