//! Keyboard and mouse input against a real TigerVNC Xvnc with real X clients:
//! scancode typing on US and German layouts (the X server's keymap switched
//! with setxkbmap), held keys, drags, scrolling, double clicks, typing
//! confirmation. What arrived is read back from files the apps write or from
//! xdotool, never from the screen.

mod xvnc_support;

use std::time::Duration;

use smoke::events::EventLog;
use smoke::input::Layout;
use smoke::rfb::{ConnectOptions, VncClient};
use smoke::runner::screen::{Screen, TypeOptions};
use xvnc_support::{Desktop, poll, printable_ascii, read_lines};

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
    // and characters no US key produces, as Unicode keysyms
    us.type_with(0, &format!("{text} жπ→\n"), typing(Duration::from_millis(2))).await.unwrap();
    assert_eq!(read_lines(&file, 1, Duration::from_secs(10)), format!("{text} жπ→\n"));

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

/// (keycode, press time, release time) of each key in an xev log, in ms.
fn key_spans(log: &std::path::Path) -> Vec<(u32, u64, u64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out: Vec<(u32, u64, u64)> = Vec::new();
    let mut kind = "";
    let mut time = 0u64;
    for line in text.lines() {
        if line.starts_with("KeyPress") {
            kind = "press";
        } else if line.starts_with("KeyRelease") {
            kind = "release";
        } else if line.starts_with(|c: char| c.is_ascii_alphabetic()) {
            kind = "";
        }
        if let Some(t) = line.split("time ").nth(1).and_then(|t| t.split(',').next()).and_then(|t| t.parse().ok()) {
            time = t;
        }
        if let Some(code) = line.split("keycode ").nth(1).and_then(|t| t.split(' ').next()).and_then(|t| t.parse().ok())
        {
            match kind {
                "press" => out.push((code, time, 0)),
                "release" => {
                    if let Some(open) = out.iter_mut().rev().find(|(c, _, r)| *c == code && *r == 0) {
                        open.2 = time;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

#[tokio::test]
async fn held_keys_stay_down_and_held_shift_shifts_what_follows() {
    use smoke::input::KeyCombo;
    let _serial = serial().await;
    let mut desktop = Desktop::start_raw_keyboard();
    let client = connect(&desktop).await;
    let mut s = screen(&client, Layout::Us);
    // X key events with server timestamps: a hold shows as the time between
    // KeyPress and KeyRelease.
    let log = desktop.path("keys.txt");
    desktop.spawn(
        "sh",
        &["-c", &format!("exec xev -name keywin -geometry 300x200+700+300 -event keyboard > '{}'", log.display())],
    );
    desktop.xdotool(&["search", "--sync", "--onlyvisible", "--name", "^keywin$"]);
    s.move_to(0, smoke::geometry::Point::new(850, 400)).await.unwrap();
    assert!(poll(Duration::from_secs(5), || (desktop.pointer() == (850, 400)).then_some(())).is_some());
    s.key_hold(0, &KeyCombo::parse("ctrl+x").unwrap(), Duration::from_millis(1200)).await.unwrap();
    // keycodes 37 (Control_L) and 53 (x): x held ~1.2 s inside the Control hold
    let spans = poll(Duration::from_secs(5), || {
        let k = key_spans(&log);
        (k.len() >= 2 && k.iter().all(|(_, _, r)| *r > 0)).then_some(k)
    })
    .unwrap_or_else(|| panic!("{:?}", std::fs::read_to_string(&log)));
    let ctrl = spans.iter().find(|k| k.0 == 37).unwrap();
    let x = spans.iter().find(|k| k.0 == 53).unwrap();
    assert!((1150..2500).contains(&(x.2 - x.1)), "x held {} ms", x.2 - x.1);
    assert!(ctrl.1 <= x.1 && ctrl.2 >= x.2, "{spans:?}");

    // shift held by key_down shifts plain keys typed meanwhile
    let file = typing_xterm(&mut desktop, &mut s, "held").await;
    s.key_down(0, &[KeyCombo::parse("shift").unwrap()]).await.unwrap();
    s.type_with(0, "abc", typing(Duration::ZERO)).await.unwrap();
    s.keys(0, &[KeyCombo::parse("d").unwrap()], Duration::ZERO).await.unwrap();
    assert_eq!(s.held().len(), 1);
    s.key_up(0, &[KeyCombo::parse("shift").unwrap()]).await.unwrap();
    s.type_with(0, "abc\n", typing(Duration::ZERO)).await.unwrap();
    assert_eq!(read_lines(&file, 1, Duration::from_secs(10)), "ABCDabc\n");
    assert!(s.held().is_empty());
}

#[tokio::test]
async fn dragging_a_title_bar_moves_the_window() {
    use smoke::geometry::Point;
    use smoke::input::Button;
    use smoke::input::pointer::PathKind;
    use smoke::runner::screen::DragOptions;
    let _serial = serial().await;
    let mut desktop = Desktop::start();
    desktop.window_manager();
    let window = desktop.xterm("dragme", "40x10+200+200", "sleep 100000");
    let (x, y, _, _) = desktop.geometry(&window);
    let client = connect(&desktop).await;
    let mut s = screen(&client, Layout::Us);
    // the title bar: the top of openbox's frame window, the xterm's parent
    let tree = desktop.run("xwininfo", &["-tree", "-id", &window]);
    let parent = tree.lines().find_map(|l| l.trim().strip_prefix("Parent window id: ")).unwrap();
    let frame = desktop.run("xwininfo", &["-id", parent.split_whitespace().next().unwrap()]);
    let field = |name: &str| -> u32 {
        frame.lines().find_map(|l| l.trim().strip_prefix(name)).unwrap().trim().parse().unwrap()
    };
    let (fx, fy, fw) = (field("Absolute upper-left X:"), field("Absolute upper-left Y:"), field("Width:"));
    let grab = Point::new(fx + fw / 2, fy + 8);
    let opts = DragOptions {
        button: Button::Left,
        path: PathKind::Bezier,
        duration: Duration::from_millis(400),
        dwell: Duration::from_millis(100),
    };
    s.drag(0, grab, Point::new(grab.x + 300, grab.y + 150), opts).await.unwrap();
    let moved = poll(Duration::from_secs(5), || {
        let (nx, ny, _, _) = desktop.geometry(&window);
        (nx == x + 300 && ny == y + 150).then_some(())
    });
    assert!(moved.is_some(), "window at {:?}, was at {:?}", desktop.geometry(&window), (x, y));
}

#[tokio::test]
async fn confirmed_typing_passes_in_an_xterm_and_names_the_lost_text_elsewhere() {
    use smoke::geometry::Point;
    use smoke::runner::screen::InputError;
    let _serial = serial().await;
    let mut desktop = Desktop::start_raw_keyboard();
    let client = connect(&desktop).await;
    let mut s = screen(&client, Layout::Us);
    let file = typing_xterm(&mut desktop, &mut s, "confirm").await;
    let confirm = TypeOptions { interval: Duration::from_millis(5), confirm: Some(Duration::from_secs(2)) };
    s.type_with(0, "confirmed text, twenty-nine+\n", confirm).await.unwrap();
    assert_eq!(read_lines(&file, 1, Duration::from_secs(5)), "confirmed text, twenty-nine+\n");
    // The pointer on the bare root window: no window has the focus, keys go nowhere.
    s.move_to(0, Point::new(1200, 650)).await.unwrap();
    assert!(poll(Duration::from_secs(5), || (desktop.pointer() == (1200, 650)).then_some(())).is_some());
    let err = s.type_with(0, "lost words", confirm).await.unwrap_err();
    match &err {
        InputError::Lost { text, first, last, .. } => assert_eq!((text.as_str(), *first, *last), ("lost wor", 1, 8)),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("\"lost wor\" (characters 1-8 of the text)"), "{err}");
}
