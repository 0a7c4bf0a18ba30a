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
//! The same with vncdotool (`vncdo type`, plain keysyms: QEMU maps them
//! through its own US keymap; `--force-caps` sends Shift for upper case and
//! US symbols) when it is found ($VNCDOTOOL_VENV or `vncdo` on PATH).
//!
//! `cargo bench --bench qemu_typing`

#[path = "../tests/qemu_support/mod.rs"]
mod qemu_support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use qemu_support::{Guest, serial_lines_after};
use smoke::events::EventLog;
use smoke::input::{Layout, type_text};
use smoke::runner::screen::{Screen, TypeOptions};

const LINES: usize = 6;
const LINE_LEN: usize = 100;
/// QEMU's default `key-delay-ms` for VNC key events.
const QEMU_KEY_DELAY: Duration = Duration::from_millis(10);

/// The lines of run `run`: a tag, then printable ASCII (space included) from
/// a run-dependent offset.
fn run_lines(run: usize, printable: bool) -> Vec<String> {
    (0..LINES)
        .map(|i| {
            let tag = format!("R{run:02}L{i}:");
            let body: String = (0..LINE_LEN - tag.len())
                .map(|k| {
                    let k = k + run * 7 + i * 13;
                    if printable { char::from(b' ' + (k % 95) as u8) } else { char::from(b'a' + (k % 26) as u8) }
                })
                .collect();
            // a line never ends in a space (easy to lose sight of when reading)
            format!("{tag}{}", body.trim_end_matches(' '))
        })
        .collect()
}

/// Wait until `want` lines tagged `R{run}` arrived after the cat marker, or
/// the serial log stops growing for `quiet` once `since` is done; returns
/// the tagged lines and when the last one arrived.
async fn collect(guest: &Guest, run: usize, want: usize, quiet: Duration, limit: Duration) -> (Vec<String>, Instant) {
    let tag = format!("R{run:02}L");
    let start = Instant::now();
    let mut last_len = 0;
    let mut last_change = Instant::now();
    loop {
        let serial = guest.serial();
        if serial.len() != last_len {
            last_len = serial.len();
            last_change = Instant::now();
        }
        let got: Vec<String> = serial_lines_after(&serial, "CAT-READY");
        // complete lines only (the last piece has no line end yet)
        let complete = &got[..got.len().saturating_sub(1)];
        let tagged: Vec<String> = complete.iter().filter(|l| l.contains(&tag)).cloned().collect();
        if tagged.len() >= want || last_change.elapsed() > quiet || start.elapsed() > limit {
            return (tagged, last_change);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
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
    let intervals = if intervals.is_empty() { vec![60, 40, 30, 20, 10, 5, 0] } else { intervals };
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
        for interval in intervals {
            run += 1;
            let lines = run_lines(run, true);
            let text = format!("{}\n", lines.join("\n"));
            let events: usize = type_text(&text, Some(Layout::Us)).unwrap().iter().map(Vec::len).sum();
            let start = Instant::now();
            let opts = TypeOptions { interval: Duration::from_millis(interval), confirm: None };
            screen.type_with(0, &text, opts).await.unwrap();
            let send = start.elapsed();
            let (got, last) = collect(&guest, run, LINES, Duration::from_secs(3), Duration::from_secs(120)).await;
            let wrong = strsim::levenshtein(&got.join("\n"), &lines.join("\n"));
            outcomes.push(Outcome {
                what: format!("smoke, scancodes, {interval} ms per character"),
                chars: text.len(),
                events,
                send,
                arrival: last.duration_since(start),
                wrong,
            });
        }
        if let Some(vncdo) = &vncdo {
            for (printable, force_caps) in [(false, false), (true, false), (true, true)] {
                run += 1;
                let lines = run_lines(run, printable);
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
                let start = Instant::now();
                let o = cmd.output().unwrap();
                let send = start.elapsed();
                assert!(o.status.success(), "vncdo: {}", String::from_utf8_lossy(&o.stderr));
                let (got, last) = collect(&guest, run, LINES, Duration::from_secs(3), Duration::from_secs(120)).await;
                let wrong = strsim::levenshtein(&got.join("\n"), &lines.join("\n"));
                outcomes.push(Outcome {
                    what: format!(
                        "vncdo type ({}{}, one process)",
                        if printable { "printable ASCII" } else { "lower-case letters" },
                        if force_caps { ", --force-caps" } else { "" }
                    ),
                    chars: text.len(),
                    events,
                    send,
                    arrival: last.duration_since(start),
                    wrong,
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
