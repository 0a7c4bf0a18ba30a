//! Keys per second into a real QEMU 10 guest with zero lost keys.
//!
//! The test guest of `scripts/build-test-guest.sh` runs `cat > /dev/ttyS0` on
//! its text console (tty1); smoke types 600 printable ASCII characters (6
//! lines of 100, about half of them shifted) by scancode (QEMU Extended Key
//! Event) at decreasing intervals per character, and every line is read back
//! exactly from the serial console. Reported per interval: the send rate, the
//! ARRIVAL rate (first key sent until the last line is on the serial console:
//! QEMU queues key events and plays them 10 ms apart, its `key-delay-ms`),
//! and the characters lost or wrong (Levenshtein distance of what arrived to
//! what was typed). The ceiling QEMU's 10 ms per key event allows is computed
//! from the key events the text takes (2 per plain character, 4 with Shift).
//!
//! Two more runs type upper-case letters only (4 key events each: Shift
//! down, key down, key up, Shift up) at 40 and 30 ms per character: QEMU
//! queues at most 1024 entries (each delayed key event takes three: the
//! event, a sync and the delay; ui/input.c) and silently drops key events
//! beyond that, so sending faster than 10 ms per key event for long enough
//! loses keys.
//!
//! The same with vncdotool (`vncdo type`, plain keysyms: QEMU maps them
//! through its own US keymap; `--force-caps` sends Shift for upper case and
//! US symbols) when it is found ($VNCDOTOOL_VENV or `vncdo` on PATH).
//!
//! `cargo bench --bench qemu_typing [-- INTERVAL_MS...]` (default 40 30 25 20 10 0)

#[path = "../tests/qemu_support/mod.rs"]
mod qemu_support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use qemu_support::Guest;
use smoke::events::EventLog;
use smoke::input::layout::{SC_ALT_R, SC_CTRL_L, SC_SHIFT_L, SC_SHIFT_R};
use smoke::input::{Layout, type_text};
use smoke::rfb::VncClient;
use smoke::runner::screen::{Screen, TypeOptions};

const LINES: usize = 6;
const LINE_LEN: usize = 100;
/// QEMU's default `key-delay-ms` for VNC key events.
const QEMU_KEY_DELAY: Duration = Duration::from_millis(10);

/// What a run types.
#[derive(Clone, Copy, PartialEq)]
enum Text {
    /// Printable ASCII, space included: about half with Shift.
    Printable,
    /// Lower-case letters: no Shift.
    Lower,
    /// Upper-case letters: all with Shift (4 key events each).
    Upper,
}

impl Text {
    fn name(self) -> &'static str {
        match self {
            Text::Printable => "printable ASCII",
            Text::Lower => "lower-case letters",
            Text::Upper => "upper-case letters",
        }
    }
}

/// The lines of run `run`: a tag (lower case and digits: unshifted on every
/// client), then characters of `text` from a run-dependent offset.
fn run_lines(run: usize, text: Text) -> Vec<String> {
    (0..LINES)
        .map(|i| {
            let tag = format!("r{run:02}l{i}-");
            let body: String = (0..LINE_LEN - tag.len())
                .map(|k| {
                    let k = k + run * 7 + i * 13;
                    match text {
                        Text::Printable => char::from(b' ' + (k % 95) as u8),
                        Text::Lower => char::from(b'a' + (k % 26) as u8),
                        Text::Upper => char::from(b'A' + (k % 26) as u8),
                    }
                })
                .collect();
            // a line never ends in a space (easy to lose sight of when reading)
            format!("{tag}{}", body.trim_end_matches(' '))
        })
        .collect()
}

/// Wait until `want` more lines reached the serial console after byte
/// `from` of its log, or the log stops growing for `quiet`; returns those
/// lines (line ends `\n`) and when the log last grew.
async fn collect(guest: &Guest, from: usize, want: usize, quiet: Duration, limit: Duration) -> (String, Instant) {
    let start = Instant::now();
    let mut last_len = 0;
    let mut last_change = Instant::now();
    loop {
        let serial = guest.serial();
        if serial.len() != last_len {
            last_len = serial.len();
            last_change = Instant::now();
        }
        let new = serial.get(from..).unwrap_or("").replace("\r\n", "\n");
        if new.matches('\n').count() >= want || last_change.elapsed() > quiet || start.elapsed() > limit {
            return (new, last_change);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// After a lossy run the guest may hold a key down whose release QEMU
/// dropped (QEMU's own key state already says "up", so it ignores a second
/// release: press and release again), and tty1 may hold half a line: let
/// QEMU's queue drain, tap the modifiers, press Enter and wait until the
/// serial console is quiet.
async fn reset(guest: &Guest, client: &VncClient, screen: &Screen) {
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for (keysym, scancode) in [(0xffe1, SC_SHIFT_L), (0xffe2, SC_SHIFT_R), (0xfe03, SC_ALT_R), (0xffe3, SC_CTRL_L)] {
        client.key_code(keysym, scancode, true).await.unwrap();
        client.key_code(keysym, scancode, false).await.unwrap();
    }
    let slow = TypeOptions { interval: Duration::from_millis(40), confirm: None };
    screen.type_with(0, "\n", slow).await.unwrap();
    let from = guest.serial().len();
    collect(guest, from, usize::MAX, Duration::from_millis(1500), Duration::from_secs(10)).await;
}

/// The first line that arrived differently, on stderr.
fn show_difference(got: &str, want: &str) {
    if let Some((g, w)) = got.lines().zip(want.lines()).find(|(g, w)| g != w) {
        eprintln!("  typed:   {w}\n  arrived: {g}");
    } else if got.lines().count() != want.lines().count() {
        eprintln!("  {} lines arrived, {} typed", got.lines().count(), want.lines().count());
    }
}

fn vncdo_bin() -> Option<PathBuf> {
    if let Ok(venv) = std::env::var("VNCDOTOOL_VENV") {
        let bin = PathBuf::from(venv).join("bin/vncdo");
        if bin.exists() {
            return Some(bin);
        }
    }
    let out = Command::new("sh").args(["-c", "command -v vncdo"]).output().ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

struct Outcome {
    what: String,
    chars: usize,
    events: usize,
    send: Duration,
    arrival: Duration,
    wrong: usize,
}

fn main() {
    let intervals: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let intervals = if intervals.is_empty() { vec![40, 30, 25, 20, 10, 0] } else { intervals };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let vncdo = vncdo_bin();
    let outcomes = rt.block_on(async {
        let mut guest = Guest::boot(&[]);
        let client = guest.ready_client().await;
        let screen = Screen::new(client.clone(), EventLog::new(Default::default())).with_layout(Layout::Us);
        let slow = TypeOptions { interval: Duration::from_millis(30), confirm: None };
        screen.type_with(0, "echo CAT-READY > /dev/ttyS0; cat > /dev/ttyS0\n", slow).await.unwrap();
        guest.wait_serial("CAT-READY", Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut outcomes = Vec::new();
        let mut run = 0;
        let runs = intervals
            .iter()
            .map(|ms| (Text::Printable, *ms))
            .chain([(Text::Upper, 40), (Text::Upper, 30)])
            .collect::<Vec<_>>();
        for (kind, interval) in runs {
            run += 1;
            let lines = run_lines(run, kind);
            let text = format!("{}\n", lines.join("\n"));
            let events: usize = type_text(&text, Some(Layout::Us)).unwrap().iter().map(Vec::len).sum();
            reset(&guest, &client, &screen).await;
            let from = guest.serial().len();
            let start = Instant::now();
            let opts = TypeOptions { interval: Duration::from_millis(interval), confirm: None };
            screen.type_with(0, &text, opts).await.unwrap();
            let send = start.elapsed();
            let (got, last) = collect(&guest, from, LINES, Duration::from_secs(3), Duration::from_secs(120)).await;
            show_difference(&got, &text);
            outcomes.push(Outcome {
                what: format!("smoke, scancodes, {}, {interval} ms per character", kind.name()),
                chars: text.len(),
                events,
                send,
                arrival: last.duration_since(start),
                wrong: strsim::levenshtein(&got, &text),
            });
        }
        if let Some(vncdo) = &vncdo {
            for (kind, force_caps) in [(Text::Lower, false), (Text::Printable, false), (Text::Printable, true)] {
                run += 1;
                let lines = run_lines(run, kind);
                let mut cmd = Command::new(vncdo);
                cmd.args(["-s", &format!("127.0.0.1::{}", guest.port)]);
                if force_caps {
                    cmd.arg("--force-caps");
                }
                for l in &lines {
                    cmd.args(["type", l, "key", "enter"]);
                }
                let text = format!("{}\n", lines.join("\n"));
                // vncdo sends a keysym down and up per character; with
                // --force-caps Shift around upper case and US symbols too
                let shifted = |c: char| c.is_ascii_uppercase() || "~!@#$%^&*()_+{}|:\"<>?".contains(c);
                let events: usize = text.chars().map(|c| if force_caps && shifted(c) { 4 } else { 2 }).sum();
                reset(&guest, &client, &screen).await;
                let from = guest.serial().len();
                let start = Instant::now();
                let o = cmd.output().unwrap();
                let send = start.elapsed();
                assert!(o.status.success(), "vncdo: {}", String::from_utf8_lossy(&o.stderr));
                let (got, last) = collect(&guest, from, LINES, Duration::from_secs(3), Duration::from_secs(120)).await;
                outcomes.push(Outcome {
                    what: format!(
                        "vncdo type ({}{}, one process)",
                        kind.name(),
                        if force_caps { ", --force-caps" } else { "" }
                    ),
                    chars: text.len(),
                    events,
                    send,
                    arrival: last.duration_since(start),
                    wrong: strsim::levenshtein(&got, &text),
                });
            }
        } else {
            eprintln!("vncdotool not found (set VNCDOTOOL_VENV): its rows are skipped");
        }
        client.close().await;
        outcomes
    });
    println!(
        "| typed | chars | key events | sent in | chars/s sent | arrived in | chars/s arrived | ceiling at 10 ms/event | lost or wrong |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        let ceiling = o.chars as f64 / (QEMU_KEY_DELAY.as_secs_f64() * o.events as f64);
        println!(
            "| {} | {} | {} | {:.2} s | {:.0} | {:.2} s | {:.1} | {:.1} chars/s ({:.0}%) | {} |",
            o.what,
            o.chars,
            o.events,
            o.send.as_secs_f64(),
            o.chars as f64 / o.send.as_secs_f64(),
            o.arrival.as_secs_f64(),
            o.chars as f64 / o.arrival.as_secs_f64(),
            ceiling,
            100.0 * (o.chars as f64 / o.arrival.as_secs_f64()) / ceiling,
            if o.wrong == 0 { "zero".to_string() } else { format!("{} characters", o.wrong) },
        );
    }
}
