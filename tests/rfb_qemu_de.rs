//! The German layout end to end on a real QEMU 10 guest: the guest's Linux
//! console gets the German keymap (kbd's `de-latin1`, compiled by
//! `scripts/build-de-keymap.sh` into a binary map that busybox `loadkmap`
//! loads), smoke types every printable US-ASCII character by scancode with
//! the target's `keyboard_layout: de` table, and the guest's own keymap turns
//! the scancodes into characters, which `cat` copies to the serial console
//! where the test reads them back exactly.
//!
//! Also checked: the US table on the German guest gives `yz` for `zy` (the
//! guest's keymap is really German and the scancodes are what counts).

#[path = "qemu_support/mod.rs"]
mod qemu_support;

use std::time::Duration;

use qemu_support::{Guest, build, repo, serial_lines_after};
use smoke::events::EventLog;
use smoke::input::Layout;
use smoke::runner::screen::{Screen, TypeOptions};

/// Every printable US-ASCII character, space included, in code order.
fn printable_ascii() -> String {
    (0x20u8..=0x7e).map(char::from).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn de_layout_types_every_printable_ascii_character_into_a_german_guest() {
    build("build-de-keymap.sh", &[]);
    let keymap = repo().join("target/test-guest/de.bmap");
    let mut guest = Guest::boot(&[("de.bmap", &keymap)]);
    let client = guest.ready_client().await;
    let us = Screen::new(client.clone(), EventLog::new(Default::default())).with_layout(Layout::Us);
    let de = Screen::new(client.clone(), EventLog::new(Default::default())).with_layout(Layout::De);
    let opts = TypeOptions { interval: Duration::from_millis(20), confirm: None };

    // Still the US console keymap: load the German one, say so on the serial
    // console and from then on copy tty1's lines there.
    us.type_with(0, "busybox loadkmap < /de.bmap && echo KEYMAP-DE-LOADED > /dev/ttyS0 && cat > /dev/ttyS0\n", opts)
        .await
        .unwrap();
    guest.wait_serial("KEYMAP-DE-LOADED", Duration::from_secs(30)).await;

    let text = printable_ascii();
    let reversed: String = text.chars().rev().collect();
    // Between letters too: dead keys (^ `) next to ordinary ones and to each other.
    let mixed = "a^b`c^^``d ^ ` e~|@\\{[]}";
    for line in [text.as_str(), reversed.as_str(), mixed] {
        de.type_with(0, &format!("{line}\n"), opts).await.unwrap();
    }
    us.type_with(0, "zy\n", opts).await.unwrap();
    let expected = [text.clone(), reversed.clone(), mixed.to_string(), "yz".to_string()];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got: Vec<String> = serial_lines_after(&guest.serial(), "KEYMAP-DE-LOADED");
        let complete: Vec<String> = got.iter().take(expected.len()).cloned().collect();
        if got.len() > expected.len() {
            for (want, have) in expected.iter().zip(&complete) {
                assert_eq!(have, want, "typed with the de table into the German guest; serial: {:?}", guest.serial());
            }
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the typed lines never all arrived: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.close().await;
}
