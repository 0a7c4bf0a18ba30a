//! Keyboard and mouse input against a real TigerVNC Xvnc with real X clients:
//! scancode typing on US and German layouts (the X server's keymap switched
//! with setxkbmap), held keys, drags, scrolling, double clicks, typing
//! confirmation. What arrived is read back from files the apps write or from
//! xdotool, never from the screen.

mod input_support;

use std::time::Duration;

use input_support::{Desktop, poll, printable_ascii, read_lines};
use smoke::events::EventLog;
use smoke::input::Layout;
use smoke::rfb::{ConnectOptions, VncClient};
use smoke::runner::screen::Screen;

/// Xvnc tests run one at a time (the machine has two cores).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

async fn connect(desktop: &Desktop) -> VncClient {
    VncClient::connect(&desktop.endpoint(), &ConnectOptions::default()).await.expect("connect to Xvnc")
}

fn screen(client: &VncClient, layout: Layout) -> Screen {
    Screen::new(client.clone(), EventLog::new(Default::default())).with_layout(layout)
}

/// An xterm whose shell copies every line typed into `file`; focused by
/// pointing at it (no window manager: focus follows the pointer).
async fn typing_xterm(desktop: &mut Desktop, screen: &mut Screen, name: &str) -> std::path::PathBuf {
    let file = desktop.path(&format!("{name}.txt"));
    let window = desktop.xterm(name, "100x5+0+0", &format!("exec cat > '{}'", file.display()));
    let (x, y) = desktop.centre(&window);
    screen.move_to(0, smoke::geometry::Point::new(x, y)).await.unwrap();
    assert!(poll(Duration::from_secs(5), || (desktop.pointer() == (x, y)).then_some(())).is_some());
    file
}

#[tokio::test]
async fn every_printable_ascii_character_arrives_by_scancode_on_us_and_de_layouts() {
    let _serial = serial().await;
    let mut desktop = Desktop::start_raw_keyboard();
    let client = connect(&desktop).await;
    assert!(client.takes_scancodes(), "Xvnc acknowledges QEMU Extended Key Event");
    let text = printable_ascii();

    let mut us = screen(&client, Layout::Us);
    let file = typing_xterm(&mut desktop, &mut us, "us").await;
    us.type_text(0, &format!("{text}\n"), Duration::from_millis(2)).await.unwrap();
    assert_eq!(read_lines(&file, 1, Duration::from_secs(10)), format!("{text}\n"));

    // The same scancodes on a German keymap: only the German table gets it right.
    desktop.run("setxkbmap", &["-layout", "de"]);
    let mut de = screen(&client, Layout::De);
    let file = typing_xterm(&mut desktop, &mut de, "de").await;
    let german = format!("{text} äöüÄÖÜß€\n");
    de.type_text(0, &german, Duration::from_millis(2)).await.unwrap();
    assert_eq!(read_lines(&file, 1, Duration::from_secs(10)), german);

    // Proof that keys went by scancode through the X server's keymap: the US
    // table's z key is where a German keyboard has y.
    let mut wrong = screen(&client, Layout::Us);
    let file = typing_xterm(&mut desktop, &mut wrong, "wrong").await;
    wrong.type_text(0, "zy\n", Duration::ZERO).await.unwrap();
    assert_eq!(read_lines(&file, 1, Duration::from_secs(10)), "yz\n");
}
