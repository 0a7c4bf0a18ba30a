//! The RFB client against a real TigerVNC Xvnc with real X clients (xterm,
//! galculator, openbox, xdotool): authentication, bit-exact decoding of Raw,
//! ZRLE and CopyRect, capture freshness, keyboard and pointer input, timing.
//!
//! Each test starts its own Xvnc (free port, display picked by `-displayfd`)
//! inside a guard that kills it and its clients on drop, even on panic. The
//! tests take a process-wide lock so they run one at a time: the machine has
//! two cores and the timing test must not compete with the others.

use std::path::Path;
use std::time::{Duration, Instant};

use smoke::frame::Frame;
use smoke::rfb::{ConnectOptions, Encoding, RfbError, VncClient};

mod xvnc_support;

use xvnc_support::Desktop;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Run Xvnc tests one at a time (held for the whole test).
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

const W: u32 = 1280;
const H: u32 = 720;
const XK_SHIFT_L: u32 = 0xffe1;
const XK_RETURN: u32 = 0xff0d;

/// A running Xvnc (security None, or VncAuth with `password`).
fn start_desktop(password: Option<&str>) -> Desktop {
    match password {
        Some(p) => Desktop::start_with_password(p),
        None => Desktop::start(),
    }
}

fn options(encodings: &[Encoding], password: Option<&str>) -> ConnectOptions {
    ConnectOptions {
        password: password.map(str::to_string),
        timeout: Duration::from_secs(10),
        encodings: encodings.to_vec(),
        ..Default::default()
    }
}

async fn connect(desktop: &Desktop, encodings: &[Encoding]) -> VncClient {
    VncClient::connect(&desktop.endpoint(), &options(encodings, None))
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", desktop.endpoint()))
}

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
        assert!(Instant::now() < deadline, "the screen never stood still");
        last = next;
    }
}

fn count_colour(frame: &Frame, rgb: [u8; 3]) -> usize {
    frame.pixels().chunks_exact(4).filter(|p| p[..3] == rgb).count()
}

/// Poll `f` until it returns Some, for up to `limit`.
async fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A desktop with real content: coloured text in two xterms and galculator.
fn busy_desktop() -> Desktop {
    let mut d = start_desktop(None);
    let text = r#"printf '\033[31mred \033[32mgreen \033[34mblue \033[1;33mbold yellow \033[45;37m magenta bg \033[0m\n'; ls -la /usr/bin | head -30; printf '\033[?25l'; sleep 100000"#;
    d.xterm_coloured("colours", "90x30+10+10", ("#102030", "#e0e0e0"), text);
    d.xterm_coloured(
        "second",
        "50x12+820+420",
        ("#c03070", "#ffffff"),
        "echo second window; printf '\\033[?25l'; sleep 100000",
    );
    d.spawn("galculator", &[]);
    d
}

/// Wait until galculator has a window.
async fn wait_for_galculator(d: &Desktop) {
    let up = poll(Duration::from_secs(10), || {
        let out = d.command("xdotool").args(["search", "--name", "galculator"]).output().ok()?;
        (out.status.success() && !out.stdout.is_empty()).then_some(())
    })
    .await;
    assert!(up.is_some(), "galculator has no window");
}

#[tokio::test]
async fn connect_with_security_none_over_tcp_and_unix_socket() {
    let _serial = serial().await;
    let desktop = start_desktop(None);
    let client = connect(&desktop, &[Encoding::Zrle, Encoding::CopyRect, Encoding::Raw]).await;
    assert_eq!(client.desktop_name(), "smoke test", "the -desktop name of tests/xvnc_support");
    assert_eq!(client.size(), (W, H));
    let frame = client.capture(CAPTURE_TIMEOUT).await.unwrap();
    assert_eq!((frame.width(), frame.height()), (W, H));

    let unix = VncClient::connect(&desktop.unix_endpoint(), &ConnectOptions::default()).await.unwrap();
    let over_unix = unix.capture(CAPTURE_TIMEOUT).await.unwrap();
    assert_eq!(over_unix, client.capture(CAPTURE_TIMEOUT).await.unwrap());
    client.close().await;
    unix.close().await;
}

#[tokio::test]
async fn vnc_auth_with_right_wrong_and_missing_password() {
    let _serial = serial().await;
    let desktop = start_desktop(Some("s3cr3t!x"));
    // Several failures in a row must not lock us out (BlacklistThreshold).
    for _ in 0..6 {
        let err = VncClient::connect(&desktop.endpoint(), &options(&[Encoding::Raw], Some("wrong"))).await.unwrap_err();
        assert!(matches!(err, RfbError::AuthFailed { .. }), "{err}");
    }
    let err = VncClient::connect(&desktop.endpoint(), &options(&[Encoding::Raw], None)).await.unwrap_err();
    assert!(matches!(err, RfbError::AuthRequired), "{err}");
    // Only the first 8 characters count, as in vncpasswd.
    for password in ["s3cr3t!x", "s3cr3t!x-and-more"] {
        let client =
            VncClient::connect(&desktop.endpoint(), &options(&[Encoding::Zrle], Some(password))).await.unwrap();
        let frame = client.capture(CAPTURE_TIMEOUT).await.unwrap();
        assert_eq!((frame.width(), frame.height()), (W, H));
        client.close().await;
    }
}

#[tokio::test]
async fn raw_zrle_hextile_tight_and_copyrect_decode_bit_identical_frames() {
    let _serial = serial().await;
    let desktop = busy_desktop();
    wait_for_galculator(&desktop).await;
    let raw = connect(&desktop, &[Encoding::Raw]).await;
    let zrle = connect(&desktop, &[Encoding::Zrle]).await;
    let reference = still_frame(&raw).await;
    let from_zrle = zrle.capture(CAPTURE_TIMEOUT).await.unwrap();
    let again = raw.capture(CAPTURE_TIMEOUT).await.unwrap();
    assert_eq!(again, reference, "the screen changed during the comparison");
    assert!(from_zrle == reference, "ZRLE frame differs from the Raw frame");
    // Real content, right channel order: the xterm backgrounds are there
    // exactly, and their red/blue-swapped versions are not.
    assert!(count_colour(&reference, [0x10, 0x20, 0x30]) > 100_000);
    assert!(count_colour(&reference, [0xc0, 0x30, 0x70]) > 10_000);
    assert_eq!(count_colour(&reference, [0x30, 0x20, 0x10]), 0);
    assert_eq!(count_colour(&reference, [0x70, 0x30, 0xc0]), 0);
    let distinct: std::collections::HashSet<&[u8]> = reference.pixels().chunks_exact(4).collect();
    assert!(distinct.len() > 50, "only {} colours on screen", distinct.len());
    // Hextile, forced as the only encoding: the same pixels, bit for bit.
    let hextile = connect(&desktop, &[Encoding::Hextile]).await;
    let from_hextile = hextile.capture(CAPTURE_TIMEOUT).await.unwrap();
    assert!(from_hextile == reference, "Hextile frame differs from the Raw frame");
    let hs = hextile.stats();
    assert!(hs.rects_by_encoding.get(&Encoding::Hextile).copied().unwrap_or(0) > 0, "{hs:?}");
    assert_eq!(hs.rects_by_encoding.get(&Encoding::Raw), None, "{hs:?}");
    // Tight (lossless: no quality level is asked for), forced the same way.
    let tight = connect(&desktop, &[Encoding::Tight]).await;
    let from_tight = tight.capture(CAPTURE_TIMEOUT).await.unwrap();
    assert!(from_tight == reference, "Tight frame differs from the Raw frame");
    let ts = tight.stats();
    assert!(ts.rects_by_encoding.get(&Encoding::Tight).copied().unwrap_or(0) > 0, "{ts:?}");
    let zs = zrle.stats();
    assert!(zs.rects_by_encoding.get(&Encoding::Zrle).copied().unwrap_or(0) > 0, "{zs:?}");
    assert_eq!(zs.rects_by_encoding.get(&Encoding::Raw), None, "{zs:?}");
    let rs = raw.stats();
    assert_eq!(rs.rects_by_encoding.keys().collect::<Vec<_>>(), vec![&Encoding::Raw], "{rs:?}");

    // CopyRect: window moves arrive as copies in incremental updates; the
    // live framebuffer must then equal a fresh Raw capture.
    let copy = connect(&desktop, &[Encoding::CopyRect, Encoding::Zrle]).await;
    still_frame(&copy).await;
    let window = desktop.xdotool(&["search", "--name", "^second$"]);
    for (x, y) in [(700, 300), (600, 250), (650, 380), (500, 100)] {
        desktop.xdotool(&["windowmove", "--sync", &window, &x.to_string(), &y.to_string()]);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let truth = still_frame(&raw).await;
    let mut updates = copy.updates();
    let matched = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if copy.snapshot() == truth {
                return;
            }
            updates.changed().await.unwrap();
        }
    })
    .await;
    assert!(matched.is_ok(), "the CopyRect client's framebuffer never matched the Raw capture");
    let cs = copy.stats();
    assert!(cs.rects_by_encoding.get(&Encoding::CopyRect).copied().unwrap_or(0) > 0, "no CopyRect seen: {cs:?}");
}

#[tokio::test]
async fn capture_reflects_a_change_made_just_before_it() {
    let _serial = serial().await;
    let mut desktop = start_desktop(None);
    // A clock ticking every 10 ms in the bottom band keeps updates in flight,
    // so a capture that returned "the next update" would show the moving
    // window where it was before.
    desktop.xterm_coloured("ticker", "60x2+0+650", ("#000000", "#00ff00"), "while :; do date +%T.%N; sleep 0.01; done");
    let window =
        desktop.xterm_coloured("mover", "20x5+100+100", ("#ff0000", "#ff0000"), "printf '\\033[?25l'; sleep 100000");
    let client = connect(&desktop, &[Encoding::Zrle, Encoding::CopyRect, Encoding::Raw]).await;
    let (x0, y0, ww, wh) = desktop.geometry(&window);
    // Mapped is not painted yet: wait until the window shows at its place.
    let mut painted = false;
    for _ in 0..100 {
        let frame = client.capture(CAPTURE_TIMEOUT).await.unwrap();
        if frame.rgb(x0 + ww / 2, y0 + wh / 2) == [255, 0, 0] {
            painted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(painted, "the red window never appeared");
    let background = client.capture(CAPTURE_TIMEOUT).await.unwrap().rgb(W - 1, 0);
    let mut previous = (x0, y0);
    for i in 0..30u32 {
        // Alternate between the left and right half so old and new never
        // overlap; stay above the ticker.
        let x = if i % 2 == 0 { 700 + (i * 37) % 300 } else { 20 + (i * 53) % 300 };
        let y = 20 + (i * 71) % 380;
        desktop.xdotool(&["windowmove", "--sync", &window, &x.to_string(), &y.to_string()]);
        let frame = client.capture(CAPTURE_TIMEOUT).await.unwrap();
        let inside = frame.rgb(x + ww / 2, y + wh / 2);
        let vacated = frame.rgb(previous.0 + ww / 2, previous.1 + wh / 2);
        assert!(
            inside == [255, 0, 0] && vacated == background,
            "iteration {i}: window moved from {previous:?} to {x},{y}, but the frame shows red at {:?} \
             (inside {inside:?}, vacated {vacated:?}, background {background:?}); {:?}",
            red_box(&frame),
            client.stats(),
        );
        previous = (x, y);
    }
}

/// The bounding box (x0, y0, x1, y1) of pure red pixels, for diagnostics.
fn red_box(frame: &Frame) -> Option<(u32, u32, u32, u32)> {
    let mut bbox: Option<(u32, u32, u32, u32)> = None;
    for y in 0..frame.height() {
        for x in 0..frame.width() {
            if frame.rgb(x, y) == [255, 0, 0] {
                let b = bbox.get_or_insert((x, y, x, y));
                *b = (b.0.min(x), b.1.min(y), b.2.max(x), b.3.max(y));
            }
        }
    }
    bbox
}

/// Keysyms to type `text` on a US layout: shifted characters are sent as
/// Shift_L down, the shifted keysym, Shift_L up.
async fn type_text(client: &VncClient, text: &str) {
    for c in text.chars() {
        assert!(c.is_ascii_graphic() || c == ' ', "type_text handles printable ASCII only");
        let keysym = u32::from(c);
        let shifted = c.is_ascii_uppercase() || "~!@#$%^&*()_+{}|:\"<>?".contains(c);
        if shifted {
            client.key(XK_SHIFT_L, true).await.unwrap();
        }
        client.key(keysym, true).await.unwrap();
        client.key(keysym, false).await.unwrap();
        if shifted {
            client.key(XK_SHIFT_L, false).await.unwrap();
        }
    }
}

async fn wait_for_pointer(desktop: &Desktop, x: u32, y: u32) {
    let want = format!("x:{x} y:{y} ");
    let seen = poll(Duration::from_secs(5), || {
        let loc = desktop.xdotool(&["getmouselocation"]);
        loc.starts_with(&want).then_some(loc)
    })
    .await;
    assert!(seen.is_some(), "pointer never reached {x},{y}: {}", desktop.xdotool(&["getmouselocation"]));
}

async fn read_file_when_written(path: &Path) -> String {
    poll(Duration::from_secs(5), || std::fs::read_to_string(path).ok().filter(|s| s.ends_with('\n')))
        .await
        .unwrap_or_else(|| panic!("{} was never written", path.display()))
}

#[tokio::test]
async fn typed_keysyms_reach_an_xterm_exactly() {
    let _serial = serial().await;
    let mut desktop = start_desktop(None);
    let out = desktop.path("typed.txt");
    let script = format!("IFS= read -r line; printf '%s\\n' \"$line\" > '{}'", out.display());
    let window = desktop.xterm_coloured("typing", "80x5+0+0", ("#000000", "#ffffff"), &script);
    let client = connect(&desktop, &[Encoding::Zrle, Encoding::Raw]).await;
    // No window manager: keyboard focus follows the pointer (PointerRoot).
    let (x, y, w, h) = desktop.geometry(&window);
    let (px, py) = (x + w / 2, y + h / 2);
    client.pointer(px as u16, py as u16, 0).await.unwrap();
    wait_for_pointer(&desktop, px, py).await;
    let text = r#"Hello World! Quick #42: a+b=c (x*y) ~{z}|"q"<t>?_^&%$@ ;'[],./-=`"#;
    type_text(&client, text).await;
    client.key(XK_RETURN, true).await.unwrap();
    client.key(XK_RETURN, false).await.unwrap();
    assert_eq!(read_file_when_written(&out).await, format!("{text}\n"));
}

#[tokio::test]
async fn pointer_moves_and_clicks_focus_windows() {
    let _serial = serial().await;
    let mut desktop = start_desktop(None);
    let client = connect(&desktop, &[Encoding::Zrle, Encoding::Raw]).await;
    for (x, y) in [(0u32, 0u32), (1279, 719), (640, 360), (17, 703)] {
        client.pointer(x as u16, y as u16, 0).await.unwrap();
        wait_for_pointer(&desktop, x, y).await;
    }

    // With openbox, a click on a window makes it the active one: type into
    // two xterms chosen only by clicking.
    desktop.spawn("openbox", &[]);
    assert!(
        poll(Duration::from_secs(10), || {
            let out = desktop.command("xprop").args(["-root", "_NET_SUPPORTING_WM_CHECK"]).output().ok()?;
            String::from_utf8_lossy(&out.stdout).contains("window id").then_some(())
        })
        .await
        .is_some(),
        "openbox did not start"
    );
    let mut windows = Vec::new();
    for (name, geometry) in [("left", "30x6+60+80"), ("right", "30x6+700+80")] {
        let out = desktop.path(&format!("{name}.txt"));
        let script = format!("IFS= read -r line; printf '%s\\n' \"$line\" > '{}'", out.display());
        let id = desktop.xterm_coloured(name, geometry, ("#202020", "#ffffff"), &script);
        windows.push((name, id, out));
    }
    for (name, id, out) in &windows {
        let (x, y, w, h) = desktop.geometry(id);
        let (cx, cy) = ((x + w / 2) as u16, (y + h / 2) as u16);
        client.pointer(cx, cy, 0).await.unwrap();
        client.pointer(cx, cy, 1).await.unwrap();
        client.pointer(cx, cy, 0).await.unwrap();
        let active = poll(Duration::from_secs(5), || {
            let active = desktop.xdotool(&["getactivewindow"]);
            (active == *id).then_some(())
        })
        .await;
        assert!(active.is_some(), "clicking {name} did not activate it");
        type_text(&client, &format!("typed into {name}")).await;
        client.key(XK_RETURN, true).await.unwrap();
        client.key(XK_RETURN, false).await.unwrap();
        assert_eq!(read_file_when_written(out).await, format!("typed into {name}\n"));
    }
}

#[tokio::test]
async fn warm_capture_time_at_1280x720() {
    let _serial = serial().await;
    let desktop = busy_desktop();
    wait_for_galculator(&desktop).await;
    let mut report = Vec::new();
    for encodings in
        [vec![Encoding::Zrle, Encoding::CopyRect, Encoding::Raw, Encoding::DesktopSize], vec![Encoding::Raw]]
    {
        let client = connect(&desktop, &encodings).await;
        still_frame(&client).await; // warm: connection, zlib stream, buffers
        let mut times = Vec::new();
        for _ in 0..25 {
            let started = Instant::now();
            let frame = client.capture(CAPTURE_TIMEOUT).await.unwrap();
            times.push(started.elapsed());
            assert_eq!((frame.width(), frame.height()), (W, H));
        }
        times.sort();
        let median = times[times.len() / 2];
        report.push(format!(
            "{:?}: median {:.1} ms, min {:.1} ms, max {:.1} ms over {} warm captures",
            encodings[0],
            median.as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
            times.len()
        ));
        assert!(median < Duration::from_millis(500), "{}", report.last().unwrap());
        client.close().await;
    }
    for line in report {
        eprintln!("warm capture at 1280x720 on Xvnc, {line}");
    }
}

#[tokio::test]
async fn server_exit_is_reported_as_disconnected() {
    let _serial = serial().await;
    let desktop = start_desktop(None);
    let client = connect(&desktop, &[Encoding::Zrle, Encoding::Raw]).await;
    client.capture(CAPTURE_TIMEOUT).await.unwrap();
    let mut updates = client.updates();
    drop(desktop);
    tokio::time::timeout(Duration::from_secs(5), async { while updates.changed().await.is_ok() {} })
        .await
        .expect("the session did not notice the server exit");
    assert!(!client.is_connected());
    let err = client.capture(CAPTURE_TIMEOUT).await.unwrap_err();
    assert!(matches!(err, RfbError::Disconnected { .. }), "{err}");
    let err = client.key(0x61, true).await.unwrap_err();
    assert!(err.to_string().contains("closed"), "{err}");
}

#[tokio::test]
async fn the_desktop_resized_mid_session() {
    let _serial = serial().await;
    let mut desktop = start_desktop(None);
    desktop.xterm_coloured(
        "resize",
        "60x10+20+20",
        ("#203040", "#ffffff"),
        "echo resize me; printf '\\033[?25l'; sleep 100000",
    );
    let pseudo = [Encoding::ExtendedDesktopSize, Encoding::DesktopSize, Encoding::LastRect, Encoding::Cursor];
    let encodings: Vec<Encoding> = [Encoding::Tight, Encoding::Raw].into_iter().chain(pseudo).collect();
    let client = connect(&desktop, &encodings).await;
    let before = still_frame(&client).await;
    assert_eq!((before.width(), before.height()), (1280, 720));
    // a shape arrives (Xvnc sends an empty one over the bare root window)
    assert!(poll(Duration::from_secs(5), || client.cursor()).await.is_some(), "no cursor shape");
    // xrandr resizes the framebuffer: captures follow at the new size
    let out = desktop.command("xrandr").args(["-s", "1024x768"]).output().unwrap();
    assert!(out.status.success(), "xrandr: {}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let f = client.capture(CAPTURE_TIMEOUT).await.unwrap();
        if (f.width(), f.height()) == (1024, 768) {
            break f;
        }
        assert!(Instant::now() < deadline, "still {}x{} after the resize", f.width(), f.height());
    };
    let stats = client.stats();
    assert!(stats.rects_by_encoding.get(&Encoding::ExtendedDesktopSize).copied().unwrap_or(0) > 0, "{stats:?}");
    // the resized frame is right, pixel for pixel, against a new Raw client
    // (which does not ask for the cursor shape: Xvnc draws the pointer for it)
    let raw = connect(&desktop, &[Encoding::Raw, Encoding::Cursor]).await;
    let reference = still_frame(&raw).await;
    let now = still_frame(&client).await;
    assert_eq!((reference.width(), reference.height()), (1024, 768));
    assert!(now == reference, "the resized frame differs from a fresh Raw capture");
    drop(after);
}
