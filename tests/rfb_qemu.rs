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

mod qemu_support;

use std::time::{Duration, Instant};

use qemu_support::{BOOT_LIMIT, Guest};
use smoke::frame::Frame;
use smoke::input::{Layout, type_text};
use smoke::rfb::protocol::QEMU_EXTENDED_KEY_EVENT;
use smoke::rfb::{Encoding, VncClient};
use smoke::vision::ocr::Ocr;

const CAPTURE_TIMEOUT: Duration = Duration::from_secs(5);

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

fn rects(client: &VncClient, encoding: Encoding) -> u64 {
    client.stats().rects_by_encoding.get(&encoding).copied().unwrap_or(0)
}

async fn type_and_check(guest: &Guest, client: &VncClient, marker: &str) {
    assert!(client.takes_scancodes(), "QEMU did not acknowledge the QEMU Extended Key Event pseudo-encoding");
    type_by_scancode(client, &format!("echo {marker} > /tmp/x; cat /tmp/x; cat /tmp/x > /dev/ttyS0\n")).await;
    // the guest writes the marker to serial only when the typed command ran
    // (the shell echoes the command line on tty1)
    guest.wait_serial(marker, Duration::from_secs(15)).await;
    // The command line and cat's output: two on screen.
    wait_on_screen(client, marker, 2, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_guest_encodings_and_scancode_typing_over_tcp_and_unix_socket() {
    let started = Instant::now();
    let mut guest = Guest::boot(&[]);
    let keys = guest.endpoint();
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
