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
use smoke::runner::screen::{Screen, TypeOptions};

/// Xvnc tests run one at a time (the machine has two cores).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

async fn connect(desktop: &Desktop) -> VncClient {
    VncClient::connect(&desktop.endpoint(), &ConnectOptions::default()).await.expect("connect to Xvnc")
}

fn typing(interval: Duration) -> TypeOptions {
    TypeOptions { interval, confirm: None }
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
    us.type_with(0, &format!("{text}\n"), typing(Duration::from_millis(2))).await.unwrap();
    assert_eq!(read_lines(&file, 1, Duration::from_secs(10)), format!("{text}\n"));

    // The same scancodes on a German keymap: only the German table gets it right.
    desktop.run("setxkbmap", &["-layout", "de"]);
    let mut de = screen(&client, Layout::De);
    let file = typing_xterm(&mut desktop, &mut de, "de").await;
    let german = format!("{text} äöüÄÖÜß€\n");
    de.type_with(0, &german, typing(Duration::from_millis(2))).await.unwrap();
    assert_eq!(read_lines(&file, 1, Duration::from_secs(10)), german);

    // Proof that keys went by scancode through the X server's keymap: the US
    // table's z key is where a German keyboard has y.
    let mut wrong = screen(&client, Layout::Us);
    let file = typing_xterm(&mut desktop, &mut wrong, "wrong").await;
    wrong.type_with(0, "zy\n", typing(Duration::ZERO)).await.unwrap();
    assert_eq!(read_lines(&file, 1, Duration::from_secs(10)), "yz\n");
}

/// An xev window at 100,100 (400x300) logging pointer events into a file.
fn event_window(desktop: &mut Desktop) -> std::path::PathBuf {
    let log = desktop.path("xev.txt");
    let script =
        format!("exec xev -name evwin -geometry 400x300+100+100 -event button -event mouse > '{}'", log.display());
    desktop.spawn("sh", &["-c", &script]);
    desktop.xdotool(&["search", "--sync", "--onlyvisible", "--name", "^evwin$"]);
    log
}

/// The ButtonPress lines xev wrote, as (button, x, y) in screen coordinates.
fn presses(log: &std::path::Path) -> Vec<(u32, u32, u32)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out = Vec::new();
    let mut in_press = false;
    let mut at = (0, 0);
    for line in text.lines() {
        if line.starts_with("ButtonPress") {
            in_press = true;
        } else if line.starts_with(|c: char| c.is_ascii_alphabetic()) {
            in_press = false;
        }
        if !in_press {
            continue;
        }
        if let Some(rest) = line.split("root:(").nth(1).and_then(|l| l.split(')').next())
            && let Some((x, y)) = rest.split_once(',')
            && let (Ok(x), Ok(y)) = (x.trim().parse(), y.trim().parse())
        {
            at = (x, y);
        }
        if let Some(b) = line.trim().strip_prefix("state ").and_then(|l| l.split("button ").nth(1)) {
            let b: u32 = b.split(',').next().unwrap().trim().parse().unwrap();
            out.push((b, at.0, at.1));
        }
    }
    out
}

#[tokio::test]
async fn clicks_double_clicks_and_scrolls_arrive_as_x_button_events() {
    use smoke::geometry::Point;
    use smoke::input::Button;
    use smoke::input::pointer::ScrollDirection;
    let _serial = serial().await;
    let mut desktop = Desktop::start();
    let log = event_window(&mut desktop);
    let client = connect(&desktop).await;
    let mut s = screen(&client, Layout::Us);
    s.click(0, Point::new(150, 120), Button::Left, false, Duration::ZERO).await.unwrap();
    s.click(0, Point::new(200, 130), Button::Right, false, Duration::ZERO).await.unwrap();
    s.click(0, Point::new(250, 140), Button::Left, true, Duration::ZERO).await.unwrap();
    s.scroll(0, Some(Point::new(300, 200)), ScrollDirection::Down, 3).await.unwrap();
    s.scroll(0, None, ScrollDirection::Up, 2).await.unwrap();
    s.click(0, Point::new(310, 210), Button::Middle, false, Duration::ZERO).await.unwrap();
    let want = vec![
        (1, 150, 120),
        (3, 200, 130),
        (1, 250, 140),
        (1, 250, 140),
        (5, 300, 200),
        (5, 300, 200),
        (5, 300, 200),
        (4, 300, 200),
        (4, 300, 200),
        (2, 310, 210),
    ];
    let got = poll(Duration::from_secs(5), || {
        let p = presses(&log);
        (p.len() >= want.len()).then_some(p)
    });
    assert_eq!(got.unwrap_or_else(|| presses(&log)), want);
    // pointer positions as X sees them
    s.move_to(0, Point::new(1279, 719)).await.unwrap();
    assert!(poll(Duration::from_secs(5), || (desktop.pointer() == (1279, 719)).then_some(())).is_some());
    s.move_along(0, Point::new(3, 5), smoke::input::pointer::PathKind::Bezier, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(poll(Duration::from_secs(5), || (desktop.pointer() == (3, 5)).then_some(())).is_some());
}
