//! VNC capture and input, side by side with vncdotool (the common Python VNC
//! tool) and with a minimal Raw full-refresh client (the floor: a blocking
//! socket that asks for the whole screen and reads the pixels, nothing else),
//! on a real Xvnc with real content.
//!
//! - one-shot capture from the command line: `smoke vnc capture` vs `vncdo capture`;
//! - warm full-frame capture at 1280x720 and 1920x1080: smoke (ZRLE and Raw)
//!   vs vncdotool (`refreshScreen`) vs the floor;
//! - change-to-frame latency: key sent -> a captured frame shows it;
//! - keys per second into xterm with zero lost keys (smoke, and `vncdo type`).
//!
//! vncdotool is found as `vncdo` on PATH or in $VNCDOTOOL_VENV/bin (not
//! installed by setup: benches are not part of CI; `python3 -m venv V &&
//! V/bin/pip install vncdotool`); without it its columns are skipped.
//!
//! `cargo bench --bench vnc [-- N]`

#[path = "../tests/xvnc_support/mod.rs"]
mod xvnc_support;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use smoke::events::EventLog;
use smoke::input::Layout;
use smoke::rfb::{ConnectOptions, Encoding, VncClient};
use smoke::runner::screen::{Screen, TypeOptions};
use xvnc_support::{Desktop, read_lines};

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

/// The vncdotool bin directory, if installed.
fn vncdotool_bin() -> Option<PathBuf> {
    if let Ok(venv) = std::env::var("VNCDOTOOL_VENV") {
        let bin = PathBuf::from(venv).join("bin");
        if bin.join("vncdo").exists() {
            return Some(bin);
        }
    }
    let out = Command::new("sh").args(["-c", "command -v vncdo"]).output().ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!path.is_empty()).then(|| PathBuf::from(path).parent().unwrap().to_path_buf())
}

/// A desktop with text on it (so encodings have work to do).
fn busy(geometry: &str) -> Desktop {
    let mut d = Desktop::start_with(&["-geometry", geometry, "-RawKeyboard"]);
    for (i, g) in ["100x30+0+0", "90x25+700+100", "80x20+300+400"].iter().enumerate() {
        d.xterm(&format!("busy{i}"), g, "ls -la /usr/bin | head -200; sleep 100000");
    }
    std::thread::sleep(Duration::from_millis(500));
    d
}

/// The floor: a blocking client that speaks only what a Raw full refresh needs.
struct RawFloor {
    sock: std::net::TcpStream,
    w: u16,
    h: u16,
}

impl RawFloor {
    fn connect(port: u16) -> RawFloor {
        let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_nodelay(true).unwrap();
        let mut b = [0u8; 12];
        sock.read_exact(&mut b).unwrap();
        sock.write_all(b"RFB 003.008\n").unwrap();
        let mut n = [0u8; 1];
        sock.read_exact(&mut n).unwrap();
        let mut types = vec![0u8; n[0] as usize];
        sock.read_exact(&mut types).unwrap();
        assert!(types.contains(&1), "the floor client needs security None");
        sock.write_all(&[1]).unwrap();
        let mut result = [0u8; 4];
        sock.read_exact(&mut result).unwrap();
        sock.write_all(&[1]).unwrap(); // shared
        let mut init = [0u8; 24];
        sock.read_exact(&mut init).unwrap();
        let w = u16::from_be_bytes([init[0], init[1]]);
        let h = u16::from_be_bytes([init[2], init[3]]);
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        let mut name = vec![0u8; name_len];
        sock.read_exact(&mut name).unwrap();
        let mut setup = smoke::rfb::protocol::ClientMessage::SetPixelFormat(smoke::rfb::PixelFormat::RGBX).encode();
        setup.extend(smoke::rfb::protocol::ClientMessage::SetEncodings(vec![0]).encode());
        sock.write_all(&setup).unwrap();
        RawFloor { sock, w, h }
    }

    /// Ask for the whole screen and read updates until every pixel arrived.
    fn capture(&mut self, buf: &mut Vec<u8>) {
        let req = smoke::rfb::protocol::ClientMessage::FramebufferUpdateRequest {
            incremental: false,
            x: 0,
            y: 0,
            width: self.w,
            height: self.h,
        };
        self.sock.write_all(&req.encode()).unwrap();
        let total = u64::from(self.w) * u64::from(self.h);
        let mut got = 0u64;
        while got < total {
            let mut head = [0u8; 4];
            self.sock.read_exact(&mut head).unwrap();
            assert_eq!(head[0], 0, "only FramebufferUpdates expected");
            let rects = u16::from_be_bytes([head[2], head[3]]);
            for _ in 0..rects {
                let mut r = [0u8; 12];
                self.sock.read_exact(&mut r).unwrap();
                let rw = u64::from(u16::from_be_bytes([r[4], r[5]]));
                let rh = u64::from(u16::from_be_bytes([r[6], r[7]]));
                buf.resize((rw * rh * 4) as usize, 0);
                self.sock.read_exact(buf).unwrap();
                got += rw * rh;
            }
        }
    }
}

/// vncdotool's warm capture: `refreshScreen` (a full non-incremental
/// request, waits for the update) `n` times in one process; milliseconds each.
fn vncdotool_warm(bin: &std::path::Path, port: u16, n: usize) -> Option<Vec<Duration>> {
    let script = format!(
        "import time,sys\nfrom vncdotool import api\nc=api.connect('127.0.0.1::{port}')\nc.refreshScreen()\n\
         for _ in range({n}):\n    t=time.perf_counter(); c.refreshScreen(); print(time.perf_counter()-t)\n\
         print('size', c.screen.size)\napi.shutdown()\n"
    );
    let out = Command::new(bin.join("python3")).args(["-c", &script]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!("vncdotool warm capture failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    eprintln!("  vncdotool screen {}", text.lines().last().unwrap_or(""));
    Some(text.lines().filter_map(|l| l.parse::<f64>().ok()).map(Duration::from_secs_f64).collect())
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20);
    let vncdo = vncdotool_bin();
    if vncdo.is_none() {
        eprintln!("vncdotool not found (set VNCDOTOOL_VENV): its columns are skipped");
    }
    let smoke_bin = env!("CARGO_BIN_EXE_smoke");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut report = Vec::new();

    // 1. one-shot capture from the command line
    {
        let d = busy("1280x720");
        let out = d.path("cli.png");
        let mut ours = Vec::new();
        for _ in 0..n.min(10) {
            let s = Instant::now();
            let o = Command::new(smoke_bin).args(["vnc", "capture", &d.address()]).arg(&out).output().unwrap();
            ours.push(s.elapsed());
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let f = smoke::frame::Frame::load_png(&out).unwrap();
        let mut line = format!(
            "one-shot capture 1280x720: smoke vnc capture {:.1} ms ({}x{})",
            median(ours.clone()),
            f.width(),
            f.height()
        );
        if let Some(bin) = &vncdo {
            let vout = d.path("vncdo.png");
            let mut theirs = Vec::new();
            for _ in 0..n.min(10) {
                let s = Instant::now();
                let o = Command::new(bin.join("vncdo"))
                    .args(["-s", &format!("127.0.0.1::{}", d.port), "capture"])
                    .arg(&vout)
                    .output()
                    .unwrap();
                theirs.push(s.elapsed());
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            }
            let vf = smoke::frame::Frame::load_png(&vout).unwrap();
            line += &format!(
                ", vncdo capture {:.1} ms ({}x{}): {:.1}x faster",
                median(theirs.clone()),
                vf.width(),
                vf.height(),
                median(theirs) / median(ours)
            );
        }
        report.push(line);
    }

    // 2. warm full-frame capture
    for geometry in ["1280x720", "1920x1080"] {
        let d = busy(geometry);
        let mut floor = RawFloor::connect(d.port);
        let mut buf = Vec::new();
        floor.capture(&mut buf);
        let floor_t: Vec<Duration> = (0..n)
            .map(|_| {
                let s = Instant::now();
                floor.capture(&mut buf);
                s.elapsed()
            })
            .collect();
        let mut line = format!("warm capture {geometry}: raw floor {:.2} ms", median(floor_t.clone()));
        for (name, enc) in [("smoke raw", vec![Encoding::Raw]), ("smoke zrle", vec![Encoding::Zrle, Encoding::Raw])] {
            let t = rt.block_on(async {
                let opts = ConnectOptions { encodings: enc, ..Default::default() };
                let c = VncClient::connect(&d.endpoint(), &opts).await.unwrap();
                c.capture(Duration::from_secs(5)).await.unwrap();
                let mut t = Vec::new();
                for _ in 0..n {
                    let s = Instant::now();
                    c.capture(Duration::from_secs(5)).await.unwrap();
                    t.push(s.elapsed());
                }
                t
            });
            line +=
                &format!(", {name} {:.2} ms ({:.2}x floor)", median(t.clone()), median(t) / median(floor_t.clone()));
        }
        if let Some(bin) = &vncdo
            && let Some(t) = vncdotool_warm(bin, d.port, n)
            && !t.is_empty()
        {
            line +=
                &format!(", vncdotool {:.2} ms ({:.2}x floor)", median(t.clone()), median(t) / median(floor_t.clone()));
        }
        report.push(line);
    }

    // 3. change-to-frame latency and 4. keys per second into xterm
    {
        let mut d = Desktop::start_raw_keyboard();
        let file = d.path("typed.txt");
        let w = d.xterm("bench", "120x20+0+0", &format!("exec cat > '{}'", file.display()));
        let (x, y) = d.centre(&w);
        let (lat, rates, lines) = rt.block_on(async {
            let c = VncClient::connect(&d.endpoint(), &ConnectOptions::default()).await.unwrap();
            let mut screen = Screen::new(c.clone(), EventLog::new(Default::default())).with_layout(Layout::Us);
            screen.move_to(0, smoke::geometry::Point::new(x, y)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut lat = Vec::new();
            for i in 0..n {
                let before = c.capture(Duration::from_secs(5)).await.unwrap();
                let s = Instant::now();
                let ch = if i % 2 == 0 { "x" } else { "\u{8}" };
                screen.type_with(0, ch, TypeOptions { interval: Duration::ZERO, confirm: None }).await.unwrap();
                loop {
                    if c.capture(Duration::from_secs(5)).await.unwrap() != before {
                        break;
                    }
                }
                lat.push(s.elapsed());
            }
            screen.type_with(0, "\n", TypeOptions { interval: Duration::ZERO, confirm: None }).await.unwrap();
            // keys per second: 600 printable characters per run, checked exactly
            let text: String = (0..600).map(|i| char::from(b'!' + (i % 94) as u8)).collect();
            let mut rates = Vec::new();
            let mut lines = 1;
            for interval_ms in [0u64, 5, 10, 16] {
                let s = Instant::now();
                let opts = TypeOptions { interval: Duration::from_millis(interval_ms), confirm: None };
                screen.type_with(0, &format!("{text}\n"), opts).await.unwrap();
                let took = s.elapsed();
                lines += 1;
                let got = read_lines(&file, lines, Duration::from_secs(20));
                let ok = got.lines().last() == Some(text.as_str());
                let shifted = text.chars().filter(|c| smoke::input::text::needs_shift(*c)).count();
                rates.push((interval_ms, 600.0 / took.as_secs_f64(), ok, shifted));
            }
            (lat, rates, lines)
        });
        report.push(format!(
            "change-to-frame latency on Xvnc (key sent -> captured frame shows it): {:.1} ms median",
            median(lat)
        ));
        for (interval, rate, ok, shifted) in rates {
            report.push(format!(
                "smoke typing into xterm, interval {interval} ms: {rate:.0} chars/s ({shifted} of 600 with Shift), {}",
                if ok { "zero lost" } else { "KEYS LOST" }
            ));
        }
        if let Some(bin) = &vncdo {
            let text: String = (0..200).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            let s = Instant::now();
            let o = Command::new(bin.join("vncdo"))
                .args(["-s", &format!("127.0.0.1::{}", d.port), "type", &text, "key", "enter"])
                .output()
                .unwrap();
            let took = s.elapsed();
            assert!(o.status.success());
            let got = read_lines(&file, lines + 1, Duration::from_secs(20));
            let ok = got.lines().last() == Some(text.as_str());
            report.push(format!(
                "vncdo type (200 lower-case letters, one process): {:.0} chars/s including start-up, {}",
                200.0 / took.as_secs_f64(),
                if ok { "zero lost" } else { "KEYS LOST" }
            ));
        }
    }
    for line in report {
        println!("{line}");
    }
}
