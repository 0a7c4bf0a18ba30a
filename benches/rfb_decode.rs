//! Client-side decode throughput per encoding, on RECORDED server streams.
//!
//! At start the bench records real FramebufferUpdate byte streams from a
//! TigerVNC Xvnc at 1280x720 (openbox, an xterm of text, galculator, a
//! gradient image shown by ffplay and a second xterm that scrolls): one
//! recording per encoding forced alone (Raw, CopyRect with Raw, ZRLE,
//! Hextile, Tight), each the same script: 3 full non-incremental frames, 20
//! moves of the galculator window (CopyRect and exposures) and 20 scrolls of
//! the xterm, each answered by an incremental update. The recordings are
//! tens of MB (Raw frames are 3.7 MB each), so they are written to
//! target/rfb-recordings/ rather than stored in the repository.
//!
//! No server here sends TRLE (Xvnc and QEMU's VNC server do not implement
//! it), so the TRLE stream is the Raw recording TRANSCODED by the bench's own
//! small encoder (solid, packed palette, plain and palette RLE, raw tiles):
//! real screen content, synthetic encoder.
//!
//! Each recording is then decoded with the library's decoders
//! (`smoke::rfb::encodings::Decoders`, fresh per pass, the whole stream in
//! memory) until at least 1.5 s of decoding per stream; every rectangle is
//! timed and counted by its encoding. Reported per encoding: decoded pixels
//! (MB/s at 4 bytes per pixel, and Mpixel/s) and wire bytes (MB/s).
//!
//! Reference: vncdotool's pure-Python decoders (Raw, CopyRect, Hextile,
//! ZRLE; no Tight, no TRLE) are fed the same recorded bytes through its real
//! client class (`VNCDoToolClient.dataReceived`, pasting into its PIL screen)
//! behind a synthetic handshake, when vncdotool is found ($VNCDOTOOL_VENV or
//! `vncdo` on PATH, as in benches/vnc.rs). vncdotool 1.4.2's client ignores
//! CopyRect (its `copyRectangle` is the base class's no-op), so the CopyRect
//! ratio compares against doing nothing for those rectangles.
//!
//! `cargo bench --bench rfb_decode` (`-- --replay` decodes the recordings of
//! the last run again, without Xvnc: for profiling)

#[path = "../tests/xvnc_support/mod.rs"]
mod xvnc_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use smoke::geometry::Rect;
use smoke::rfb::encodings::{DecodeStatus, Decoders};
use smoke::rfb::protocol::{ClientMessage, RECT_HEADER_LEN, RectHeader};
use smoke::rfb::{Encoding, Framebuffer, PixelFormat};
use xvnc_support::Desktop;

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;
/// Window moves and xterm scrolls per recording.
const STEPS: u32 = 20;
/// Decode each stream at least this long.
const MIN_DECODE: Duration = Duration::from_millis(1500);

/// One recorded stream: every server byte after ServerInit.
struct Recording {
    name: &'static str,
    bytes: Vec<u8>,
    updates: usize,
}

/// Where a stream's bytes come from: a socket while recording, memory on replay.
trait Source {
    /// Make at least `upto` bytes available; false when the stream ended.
    fn ensure(&mut self, upto: usize) -> bool;
    fn data(&self) -> &[u8];
}

struct SocketSource {
    sock: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Source for SocketSource {
    fn ensure(&mut self, upto: usize) -> bool {
        let mut chunk = [0u8; 65536];
        while self.buf.len() < upto {
            match self.sock.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        true
    }
    fn data(&self) -> &[u8] {
        &self.buf
    }
}

struct SliceSource<'a>(&'a [u8]);

impl Source for SliceSource<'_> {
    fn ensure(&mut self, upto: usize) -> bool {
        self.0.len() >= upto
    }
    fn data(&self) -> &[u8] {
        self.0
    }
}

/// Per-encoding totals of a replay.
#[derive(Default, Clone, Copy)]
struct Tally {
    rects: u64,
    pixels: u64,
    wire: u64,
    time: Duration,
}

/// Walk one server message at `*pos`, decoding rectangles into `fb`; true
/// when it was a FramebufferUpdate. Rectangle decodes are timed into `tally`.
fn next_message(
    src: &mut impl Source,
    pos: &mut usize,
    decoders: &mut Decoders,
    fb: &mut Framebuffer,
    mut tally: Option<&mut BTreeMap<i32, Tally>>,
) -> Result<bool, String> {
    if !src.ensure(*pos + 1) {
        return Err("stream ended".into());
    }
    match src.data()[*pos] {
        0 => {}
        2 => {
            *pos += 1;
            return Ok(false);
        }
        3 => {
            if !src.ensure(*pos + 8) {
                return Err("stream ended in ServerCutText".into());
            }
            let d = &src.data()[*pos + 4..*pos + 8];
            *pos += 8 + u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
            return Ok(false);
        }
        other => return Err(format!("unexpected server message {other}")),
    }
    if !src.ensure(*pos + 4) {
        return Err("stream ended in an update header".into());
    }
    let count = u16::from_be_bytes([src.data()[*pos + 2], src.data()[*pos + 3]]);
    *pos += 4;
    for _ in 0..count {
        if !src.ensure(*pos + RECT_HEADER_LEN) {
            return Err("stream ended in a rectangle header".into());
        }
        let mut raw = [0u8; RECT_HEADER_LEN];
        raw.copy_from_slice(&src.data()[*pos..*pos + RECT_HEADER_LEN]);
        let header = RectHeader::decode(&raw);
        *pos += RECT_HEADER_LEN;
        if header.encoding == Encoding::LastRect {
            break;
        }
        let start = Instant::now();
        let consumed = loop {
            let input = &src.data()[*pos..];
            match decoders.decode(header.encoding, header.rect, input, fb).map_err(|e| e.to_string())? {
                DecodeStatus::Complete { consumed } => break consumed,
                DecodeStatus::NeedMore { total } => {
                    if !src.ensure(*pos + total) {
                        return Err(format!("stream ended inside a {:?} rectangle", header.encoding));
                    }
                }
            }
        };
        let took = start.elapsed();
        *pos += consumed;
        if let Some(t) = tally.as_deref_mut() {
            let e = t.entry(header.encoding.code()).or_default();
            e.rects += 1;
            e.pixels += u64::from(header.rect.w) * u64::from(header.rect.h);
            e.wire += (RECT_HEADER_LEN + consumed) as u64;
            e.time += took;
        }
    }
    Ok(true)
}

/// The desktop the recordings show.
struct Scene {
    desktop: Desktop,
    calculator: String,
    calculator_home: (u32, u32),
    fifo: std::fs::File,
}

fn scene() -> Scene {
    let mut d = Desktop::start();
    d.window_manager();
    d.xterm("text", "80x22+0+0", "ls -la /usr/bin | head -300; sleep 100000");
    let fifo_path = d.path("scroll.fifo");
    assert!(Command::new("mkfifo").arg(&fifo_path).status().unwrap().success());
    // each line written to the fifo prints the next 6 lines of a listing
    let script = format!(
        "exec 3<> '{}'; n=0; while read x <&3; do n=$((n+1)); ls -la /usr/lib/x86_64-linux-gnu | sed -n \"$((n*6)),$((n*6+5))p\"; done",
        fifo_path.display()
    );
    d.xterm("scroll", "70x10+0+470", &script);
    let fifo = std::fs::OpenOptions::new().write(true).open(&fifo_path).unwrap();
    let png = d.path("gradient.png");
    let o = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "color=s=480x270"])
        .args(["-vf", "geq=r='X*255/W':g='Y*255/H':b='128+127*sin(X/40)'", "-frames:v", "1", "-y"])
        .arg(&png)
        .output()
        .expect("ffmpeg (scripts/setup-debian.sh installs it)");
    assert!(o.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&o.stderr));
    let png_arg = png.display().to_string();
    d.spawn("ffplay", &["-hide_banner", "-loglevel", "error", "-noborder", "-window_title", "gradient", &png_arg]);
    d.xdotool(&["search", "--sync", "--onlyvisible", "--name", "^gradient$"]);
    let gradient = d.xdotool(&["search", "--onlyvisible", "--name", "^gradient$"]).lines().next().unwrap().to_string();
    d.xdotool(&["windowmove", "--sync", &gradient, "780", "430"]);
    d.spawn("galculator", &[]);
    let calculator =
        d.xdotool(&["search", "--sync", "--onlyvisible", "--class", "galculator"]).lines().next().unwrap().to_string();
    let calculator_home = (800, 60);
    d.xdotool(&["windowmove", "--sync", &calculator, "800", "60"]);
    std::thread::sleep(Duration::from_millis(800));
    Scene { desktop: d, calculator, calculator_home, fifo }
}

/// Record one stream with `encodings` as the client's whole list.
fn record(scene: &mut Scene, name: &'static str, encodings: &[Encoding]) -> Recording {
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", scene.desktop.port)).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 12];
    sock.read_exact(&mut b).unwrap();
    sock.write_all(b"RFB 003.008\n").unwrap();
    let mut n = [0u8; 1];
    sock.read_exact(&mut n).unwrap();
    let mut types = vec![0u8; usize::from(n[0])];
    sock.read_exact(&mut types).unwrap();
    assert!(types.contains(&1), "the recorder needs security None");
    sock.write_all(&[1]).unwrap();
    let mut result = [0u8; 4];
    sock.read_exact(&mut result).unwrap();
    sock.write_all(&[1]).unwrap();
    let mut init = [0u8; 24];
    sock.read_exact(&mut init).unwrap();
    let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
    let mut server_name = vec![0u8; name_len];
    sock.read_exact(&mut server_name).unwrap();
    let mut setup = ClientMessage::SetPixelFormat(PixelFormat::RGBX).encode();
    setup.extend(ClientMessage::SetEncodings(encodings.iter().map(|e| e.code()).collect()).encode());
    sock.write_all(&setup).unwrap();

    let mut src = SocketSource { sock: sock.try_clone().unwrap(), buf: Vec::new() };
    let mut pos = 0;
    let mut decoders = Decoders::new();
    let mut fb = Framebuffer::new(WIDTH, HEIGHT).unwrap();
    let mut updates = 0;
    let mut update = |incremental: bool, src: &mut SocketSource, pos: &mut usize| {
        let req = ClientMessage::FramebufferUpdateRequest {
            incremental,
            x: 0,
            y: 0,
            width: WIDTH as u16,
            height: HEIGHT as u16,
        };
        sock.write_all(&req.encode()).unwrap();
        while !next_message(src, pos, &mut decoders, &mut fb, None).unwrap_or_else(|e| panic!("recording {name}: {e}"))
        {
        }
        updates += 1;
    };
    for _ in 0..3 {
        update(false, &mut src, &mut pos);
    }
    let (hx, hy) = scene.calculator_home;
    for step in 1..=STEPS {
        let (x, y) = (hx - 14 * step, hy + 9 * step);
        scene.desktop.xdotool(&["windowmove", "--sync", &scene.calculator, &x.to_string(), &y.to_string()]);
        std::thread::sleep(Duration::from_millis(30));
        update(true, &mut src, &mut pos);
    }
    for _ in 0..STEPS {
        scene.fifo.write_all(b"\n").unwrap();
        std::thread::sleep(Duration::from_millis(40));
        update(true, &mut src, &mut pos);
    }
    scene.desktop.xdotool(&["windowmove", "--sync", &scene.calculator, &hx.to_string(), &hy.to_string()]);
    std::thread::sleep(Duration::from_millis(300));
    src.buf.truncate(pos);
    Recording { name, bytes: src.buf, updates }
}

/// Decode a whole recording once; per-encoding tallies.
fn replay(bytes: &[u8], tally: &mut BTreeMap<i32, Tally>) -> Framebuffer {
    let mut fb = Framebuffer::new(WIDTH, HEIGHT).unwrap();
    let mut decoders = Decoders::new();
    let mut src = SliceSource(bytes);
    let mut pos = 0;
    while pos < bytes.len() {
        next_message(&mut src, &mut pos, &mut decoders, &mut fb, Some(tally)).unwrap();
    }
    fb
}

// ---- the bench's own TRLE encoder (no server here sends TRLE) ----

fn push_run_length(out: &mut Vec<u8>, len: usize) {
    let mut rest = len - 1;
    while rest >= 255 {
        out.push(255);
        rest -= 255;
    }
    out.push(rest as u8);
}

/// One TRLE tile of `px` (CPIXELs, 3 bytes each, `w` wide), smallest of the
/// subencodings tried.
fn trle_tile(px: &[[u8; 3]], w: usize, out: &mut Vec<u8>) {
    let mut palette: Vec<[u8; 3]> = Vec::new();
    for p in px {
        if !palette.contains(p) {
            palette.push(*p);
            if palette.len() > 127 {
                break;
            }
        }
    }
    if palette.len() == 1 {
        out.push(1);
        out.extend_from_slice(&palette[0]);
        return;
    }
    let index = |p: &[u8; 3]| palette.iter().position(|q| q == p).unwrap() as u8;
    if palette.len() <= 16 {
        let bits = match palette.len() {
            2 => 1,
            3..=4 => 2,
            _ => 4,
        };
        out.push(palette.len() as u8);
        palette.iter().for_each(|p| out.extend_from_slice(p));
        for row in px.chunks(w) {
            let (mut byte, mut used) = (0u8, 0);
            for p in row {
                byte |= index(p) << (8 - bits - used);
                used += bits;
                if used == 8 {
                    out.push(byte);
                    (byte, used) = (0, 0);
                }
            }
            if used > 0 {
                out.push(byte);
            }
        }
        return;
    }
    let mut runs: Vec<([u8; 3], usize)> = Vec::new();
    for p in px {
        match runs.last_mut() {
            Some((q, n)) if q == p => *n += 1,
            _ => runs.push((*p, 1)),
        }
    }
    let mut plain = vec![128u8];
    for (p, n) in &runs {
        plain.extend_from_slice(p);
        push_run_length(&mut plain, *n);
    }
    let mut best = plain;
    if palette.len() <= 127 {
        let mut pal = vec![128 + palette.len() as u8];
        palette.iter().for_each(|p| pal.extend_from_slice(p));
        for (p, n) in &runs {
            if *n == 1 {
                pal.push(index(p));
            } else {
                pal.push(index(p) | 128);
                push_run_length(&mut pal, *n);
            }
        }
        if pal.len() < best.len() {
            best = pal;
        }
    }
    if best.len() > px.len() * 3 {
        out.push(0);
        px.iter().for_each(|p| out.extend_from_slice(p));
    } else {
        out.extend_from_slice(&best);
    }
}

fn trle_rect(rect: Rect, rgbx: &[u8], out: &mut Vec<u8>) {
    let (w, h) = (rect.w as usize, rect.h as usize);
    for ty in (0..h).step_by(16) {
        for tx in (0..w).step_by(16) {
            let (tw, th) = (16.min(w - tx), 16.min(h - ty));
            let mut px = Vec::with_capacity(tw * th);
            for y in ty..ty + th {
                for x in tx..tx + tw {
                    let i = (y * w + x) * 4;
                    px.push([rgbx[i], rgbx[i + 1], rgbx[i + 2]]);
                }
            }
            trle_tile(&px, tw, out);
        }
    }
}

/// The Raw recording with every Raw rectangle re-encoded as TRLE.
fn transcode_to_trle(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() / 4);
    let mut pos = 0;
    while pos < raw.len() {
        assert_eq!(raw[pos], 0, "the Raw recording holds only FramebufferUpdates");
        out.extend_from_slice(&raw[pos..pos + 4]);
        let count = u16::from_be_bytes([raw[pos + 2], raw[pos + 3]]);
        pos += 4;
        for _ in 0..count {
            let mut h = [0u8; RECT_HEADER_LEN];
            h.copy_from_slice(&raw[pos..pos + RECT_HEADER_LEN]);
            let header = RectHeader::decode(&h);
            pos += RECT_HEADER_LEN;
            assert_eq!(header.encoding, Encoding::Raw);
            let len = header.rect.w as usize * header.rect.h as usize * 4;
            out.extend_from_slice(&RectHeader { rect: header.rect, encoding: Encoding::Trle }.encode());
            trle_rect(header.rect, &raw[pos..pos + len], &mut out);
            pos += len;
        }
    }
    out
}

// ---- the reference: vncdotool's decoders ----

fn vncdotool_python() -> Option<PathBuf> {
    if let Ok(venv) = std::env::var("VNCDOTOOL_VENV") {
        let py = PathBuf::from(venv).join("bin/python3");
        if py.exists() {
            return Some(py);
        }
    }
    let out = Command::new("sh").args(["-c", "command -v vncdo"]).output().ok()?;
    let vncdo = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    let py = vncdo.parent()?.join("python3");
    py.exists().then_some(py)
}

/// vncdotool's client fed a synthetic handshake (RFB 3.8, security None,
/// ServerInit in our RGBX format) and then the recorded bytes in 64 KiB
/// reads, like a socket would give them; decode seconds per pass.
const VNCDOTOOL_REPLAY: &str = r#"
import struct, sys, time, warnings
warnings.simplefilter("ignore")
from vncdotool.client import VNCDoToolClient, VNCDoToolFactory
class Transport:
    def write(self, data): pass
    def loseConnection(self): raise SystemExit("vncdotool dropped the connection")
path, w, h, passes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
data = open(path, "rb").read()
pf = struct.pack("!BB??HHHBBBxxx", 32, 24, False, True, 255, 255, 255, 0, 8, 16)
hello = b"RFB 003.008\n" + bytes([1, 1]) + struct.pack("!I", 0) + struct.pack("!HH16sI", w, h, pf, 4) + b"test"
for _ in range(passes):
    c = VNCDoToolClient()
    c.factory = VNCDoToolFactory()
    c.factory.deferred.addErrback(lambda f: None)
    c.transport = Transport()
    c.dataReceived(hello)
    t = time.perf_counter()
    for i in range(0, len(data), 65536):
        c.dataReceived(data[i:i + 65536])
    took = time.perf_counter() - t
    assert len(c._packet) == 0, "vncdotool did not consume the stream"
    print(took, c.screen.size if c.screen else None, flush=True)
"#;

/// Median seconds vncdotool takes to decode the recording, or why it could not.
fn vncdotool_decode(python: &Path, file: &Path) -> Result<f64, String> {
    let o = Command::new(python)
        .args(["-c", VNCDOTOOL_REPLAY])
        .arg(file)
        .args([WIDTH.to_string(), HEIGHT.to_string(), "3".into()])
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        // the exception vncdotool raised: the first error line of the traceback
        let stderr = String::from_utf8_lossy(&o.stderr);
        let error = stderr.lines().find(|l| l.contains("Error:")).unwrap_or("no error line").trim();
        return Err(format!("fails: {error}"));
    }
    let mut secs = Vec::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let (t, size) = line.split_once(' ').unwrap_or((line, ""));
        if size != format!("({WIDTH}, {HEIGHT})") {
            return Err(format!("screen {size}, not compared"));
        }
        secs.push(t.parse::<f64>().map_err(|e| e.to_string())?);
    }
    secs.sort_by(f64::total_cmp);
    secs.get(secs.len() / 2).copied().ok_or_else(|| "no timings".to_string())
}

fn encoding_name(code: i32) -> String {
    format!("{:?}", Encoding::from_code(code))
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/rfb-recordings");
    std::fs::create_dir_all(&dir).unwrap();
    let python = vncdotool_python();
    if python.is_none() {
        eprintln!("vncdotool not found (set VNCDOTOOL_VENV): no reference column");
    }

    let names = ["Raw", "CopyRect", "ZRLE", "Hextile", "Tight", "TRLE (transcoded)"];
    let file_of = |name: &str| dir.join(format!("{}.rfb", name.split(' ').next().unwrap_or(name).to_lowercase()));
    let mut recordings = Vec::new();
    if std::env::args().any(|a| a == "--replay") {
        // decode the recordings of an earlier run again (for profiling)
        for name in names {
            let bytes = std::fs::read(file_of(name)).unwrap_or_else(|e| panic!("{}: {e}", file_of(name).display()));
            let mut updates = 0;
            let mut fb = Framebuffer::new(WIDTH, HEIGHT).unwrap();
            let (mut decoders, mut pos) = (Decoders::new(), 0);
            while pos < bytes.len() {
                updates += usize::from(
                    next_message(&mut SliceSource(&bytes), &mut pos, &mut decoders, &mut fb, None).unwrap(),
                );
            }
            recordings.push(Recording { name, bytes, updates });
        }
    } else {
        let mut scene = scene();
        for (name, encodings) in names.iter().zip([
            vec![Encoding::Raw],
            vec![Encoding::CopyRect, Encoding::Raw],
            vec![Encoding::Zrle],
            vec![Encoding::Hextile],
            vec![Encoding::Tight],
        ]) {
            let s = Instant::now();
            let r = record(&mut scene, name, &encodings);
            eprintln!("recorded {name}: {} updates, {} bytes in {:?}", r.updates, r.bytes.len(), s.elapsed());
            recordings.push(r);
        }
        drop(scene);
        let trle = transcode_to_trle(&recordings[0].bytes);
        let updates = recordings[0].updates;
        recordings.push(Recording { name: names[5], bytes: trle, updates });
        for r in &recordings {
            std::fs::write(file_of(r.name), &r.bytes).unwrap();
        }
    }

    let mut table = vec![
        "| stream | encoding | rects | decoded MB | wire MB | decoded MB/s | Mpixel/s | wire MB/s | vncdotool decoded MB/s | ratio |".to_string(),
        "|---|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    let mut finals = Vec::new();
    for r in &recordings {
        let file = file_of(r.name);
        let mut tally = BTreeMap::new();
        let mut passes = 0u32;
        let started = Instant::now();
        let mut fb = None;
        while passes < 3 || started.elapsed() < MIN_DECODE {
            fb = Some(replay(&r.bytes, &mut tally));
            passes += 1;
        }
        finals.push((r.name, fb.unwrap().to_frame()));
        let total: Tally = tally.values().fold(Tally::default(), |a, t| Tally {
            rects: a.rects + t.rects,
            pixels: a.pixels + t.pixels,
            wire: a.wire + t.wire,
            time: a.time + t.time,
        });
        // vncdotool has no Tight and no TRLE decoder
        let reference = match &python {
            Some(py) if !r.name.starts_with("Tight") && !r.name.starts_with("TRLE") => {
                Some(vncdotool_decode(py, &file))
            }
            _ => None,
        };
        let mb = |bytes: u64| bytes as f64 / 1e6;
        let per_pass = |v: u64| v / u64::from(passes);
        for (label, t, reference) in tally
            .iter()
            .map(|(code, t)| (encoding_name(*code), *t, None))
            .chain(std::iter::once(("all".to_string(), total, reference)))
        {
            let secs = t.time.as_secs_f64();
            let ours = mb(t.pixels * 4) / secs;
            let (theirs, ratio) = match reference {
                Some(Ok(s)) => {
                    let theirs = mb(per_pass(t.pixels) * 4) / s;
                    (format!("{theirs:.1}"), format!("{:.0}x", ours / theirs))
                }
                Some(Err(why)) => (why, "-".into()),
                None => ("-".into(), "-".into()),
            };
            table.push(format!(
                "| {} ({} updates, {passes} passes) | {label} | {} | {:.1} | {:.2} | {:.0} | {:.0} | {:.0} | {theirs} | {ratio} |",
                r.name,
                r.updates,
                per_pass(t.rects),
                mb(per_pass(t.pixels) * 4),
                mb(per_pass(t.wire)),
                ours,
                t.pixels as f64 / 1e6 / secs,
                mb(t.wire) / secs,
            ));
        }
    }
    // The TRLE transcode must decode to exactly what the Raw stream gives.
    let raw_final = &finals[0].1;
    let trle_final = &finals.last().unwrap().1;
    assert!(raw_final == trle_final, "the TRLE transcode decodes differently from the Raw recording");
    println!("recordings in {}", dir.display());
    for line in table {
        println!("{line}");
    }
}
