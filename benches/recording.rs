//! Recorder benchmark (a program, not a timed test). Run with
//! `cargo bench --bench recording -- <mode> [options]`:
//!
//! - `capture [--out DIR] [--seconds 60]`: start an Xvnc desktop (openbox, xterm,
//!   galculator), drive it with xdotool, capture it with ffmpeg x11grab at 10 fps
//!   and save every frame as PNG plus `index.tsv` (file, capture time in ms).
//! - `compare [--frames DIR]`: run the motion filter over the captured frames,
//!   encode the kept ones with our encoder, encode the SAME kept frames with the
//!   same timing with ffmpeg's two-pass palettegen/paletteuse (concat demuxer with
//!   per-frame durations), and print sizes and CPU times side by side.
//! - `filter-cost`: motion filter (thumbnail + max diff) time per frame at 1080p
//!   and 720p.
//! - `rss [--frames DIR] [--minutes 10] [--speed 1]`: record the captured frames,
//!   replayed in a loop, through the full `Recorder` for that long (divided by
//!   `speed`) and report the process's peak RSS (VmHWM) and RSS over time.
//!
//! Without a mode: `filter-cost`, then `compare` if the frame directory exists
//! (under `cargo test --all-targets`, which does not pass `--bench`: nothing).
//! The frame directory defaults to `target/recording-frames`.

#[path = "../tests/recorder_support/mod.rs"]
mod recorder_support;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use recorder_support::{Activity, Desktop, LatestFrame, X11Grab};
use smoke::frame::Frame;
use smoke::recorder::{
    FrameSource, GifPlayback, GifWriter, MotionFilter, Recorder, RecorderOptions, Thumbnail, Thumbnailer,
    thread_cpu_time,
};

type BenchResult<T> = Result<T, String>;

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary
    // without it, where a debug-build benchmark would only waste test time.
    let benching = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mode = args.first().cloned().unwrap_or_default();
    if !benching && mode.is_empty() {
        println!("recording benchmark: run `cargo bench --bench recording -- <mode>` (see the file's docs)");
        return;
    }
    let options = parse_options(args.get(1..).unwrap_or(&[]));
    let frames_dir =
        PathBuf::from(options.get("frames").or(options.get("out")).cloned().unwrap_or_else(default_frames_dir));
    let result = match mode.as_str() {
        "capture" => capture(&frames_dir, number(&options, "seconds", 60.0)),
        "compare" => compare(&frames_dir),
        "filter-cost" => filter_cost(),
        "rss" => rss(&frames_dir, number(&options, "minutes", 10.0), number(&options, "speed", 1.0)),
        "" => filter_cost().and_then(|()| {
            if frames_dir.join("index.tsv").exists() {
                compare(&frames_dir)
            } else {
                println!("no frames in {} (run the `capture` mode first)", frames_dir.display());
                Ok(())
            }
        }),
        other => Err(format!("unknown mode {other:?}: capture | compare | filter-cost | rss")),
    };
    if let Err(error) = result {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn default_frames_dir() -> String {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    format!("{target}/recording-frames")
}

fn parse_options(args: &[String]) -> HashMap<String, String> {
    let mut options = HashMap::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if let Some(name) = arg.strip_prefix("--") {
            options.insert(name.to_string(), iter.next().cloned().unwrap_or_default());
        }
    }
    options
}

fn number(options: &HashMap<String, String>, name: &str, default: f64) -> f64 {
    options.get(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

// ---------------------------------------------------------------- capture

fn capture(dir: &Path, seconds: f64) -> BenchResult<()> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".png") || name == "index.tsv" {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let mut desktop = Desktop::start(1280, 720)?;
    let activity = Activity::launch_apps(&mut desktop)?;
    println!("desktop :{} up, capturing {seconds} s at 10 fps", desktop.display());

    let (tx, rx) = std::sync::mpsc::channel::<(Frame, Instant)>();
    let writer_dir = dir.to_path_buf();
    let writer = std::thread::spawn(move || -> BenchResult<u64> {
        let mut index = String::new();
        let mut first: Option<Instant> = None;
        let mut count = 0u64;
        for (frame, at) in rx {
            let origin = *first.get_or_insert(at);
            let name = format!("frame_{count:06}.png");
            frame.save_png(&writer_dir.join(&name)).map_err(|e| e.to_string())?;
            index.push_str(&format!("{name}\t{}\n", at.duration_since(origin).as_millis()));
            count += 1;
        }
        std::fs::write(writer_dir.join("index.tsv"), index).map_err(|e| e.to_string())?;
        Ok(count)
    });
    let recording = Arc::new(AtomicBool::new(false));
    let gate = recording.clone();
    let grab = X11Grab::start(&desktop, 10, move |frame, at| {
        if gate.load(Ordering::SeqCst) {
            let _ = tx.send((frame, at));
        }
    })?;
    std::thread::sleep(Duration::from_millis(500));
    recording.store(true, Ordering::SeqCst);
    activity.run(&desktop, Duration::from_secs_f64(seconds))?;
    let delivered = grab.stop();
    drop(desktop);
    let saved = writer.join().map_err(|_| "PNG writer panicked".to_string())??;
    println!("captured {saved} frames ({delivered} from x11grab) into {}", dir.display());
    Ok(())
}

// ---------------------------------------------------------------- compare

struct CapturedFrame {
    path: PathBuf,
    at: Duration,
}

fn load_index(dir: &Path) -> BenchResult<Vec<CapturedFrame>> {
    let dir = &std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let text = std::fs::read_to_string(dir.join("index.tsv"))
        .map_err(|e| format!("{}/index.tsv: {e} (run the capture mode first)", dir.display()))?;
    let mut frames = Vec::new();
    for line in text.lines() {
        let mut parts = line.split('\t');
        let (Some(name), Some(ms)) = (parts.next(), parts.next()) else { continue };
        let ms: u64 = ms.trim().parse().map_err(|e| format!("index.tsv: {line}: {e}"))?;
        frames.push(CapturedFrame { path: dir.join(name), at: Duration::from_millis(ms) });
    }
    if frames.is_empty() {
        return Err("index.tsv lists no frames".into());
    }
    Ok(frames)
}

fn children_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Run a command to completion; returns (CPU of the child, wall time).
fn run_measured(command: &mut Command) -> BenchResult<(Duration, Duration)> {
    let cpu_before = children_cpu();
    let started = Instant::now();
    let status =
        command.stdin(Stdio::null()).stdout(Stdio::null()).status().map_err(|e| format!("{command:?}: {e}"))?;
    if !status.success() {
        return Err(format!("{command:?}: {status}"));
    }
    Ok((children_cpu().saturating_sub(cpu_before), started.elapsed()))
}

struct GifInfo {
    images: usize,
    total_cs: u64,
}

fn gif_info(path: &Path) -> BenchResult<GifInfo> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut options = gif::DecodeOptions::new();
    options.skip_frame_decoding(true);
    let mut decoder = options.read_info(&bytes[..]).map_err(|e| e.to_string())?;
    let (mut images, mut total_cs) = (0usize, 0u64);
    while let Some(frame) = decoder.read_next_frame().map_err(|e| e.to_string())? {
        images += 1;
        total_cs += frame.delay as u64;
    }
    Ok(GifInfo { images, total_cs })
}

fn compare(dir: &Path) -> BenchResult<()> {
    let frames = load_index(dir)?;
    let last_at = frames.last().map(|f| f.at).unwrap_or_default();
    let end = last_at + Duration::from_millis(100);
    let work = dir.join("compare");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;

    // Ours: motion filter over every captured frame, encoder over the kept ones.
    let ours_path = work.join("ours.gif");
    let file = std::fs::File::create(&ours_path).map_err(|e| e.to_string())?;
    let mut writer: Option<GifWriter<std::io::BufWriter<std::fs::File>>> = None;
    let mut file = Some(file);
    let mut filter = MotionFilter::default();
    let (mut filter_cpu, mut encode_cpu, mut decode_cpu) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut kept: Vec<&CapturedFrame> = Vec::new();
    for (i, captured) in frames.iter().enumerate() {
        let t = thread_cpu_time();
        let frame = Frame::load_png(&captured.path).map_err(|e| e.to_string())?;
        decode_cpu += thread_cpu_time() - t;
        let t = thread_cpu_time();
        let last = i + 1 == frames.len();
        let keep = if last { filter.force_keep(&frame).keep } else { filter.consider(&frame).keep };
        filter_cpu += thread_cpu_time() - t;
        if !keep {
            continue;
        }
        kept.push(captured);
        let t = thread_cpu_time();
        if writer.is_none()
            && let Some(f) = file.take()
        {
            let out = std::io::BufWriter::with_capacity(256 * 1024, f);
            writer = Some(GifWriter::new(out, frame.width(), frame.height()).map_err(|e| e.to_string())?);
        }
        if let Some(w) = writer.as_mut() {
            w.push(&frame, captured.at).map_err(|e| e.to_string())?;
        }
        encode_cpu += thread_cpu_time() - t;
    }
    let t = thread_cpu_time();
    let finished = writer.ok_or("no frames")?.finish(end).map_err(|e| e.to_string())?;
    drop(finished.output);
    encode_cpu += thread_cpu_time() - t;
    let ours_bytes = std::fs::metadata(&ours_path).map_err(|e| e.to_string())?.len();
    let ours_info = gif_info(&ours_path)?;

    // ffmpeg: the same kept frames, each shown until the next kept frame.
    let list = work.join("kept.ffconcat");
    let mut text = String::from("ffconcat version 1.0\n");
    for (i, frame) in kept.iter().enumerate() {
        let until = kept.get(i + 1).map(|f| f.at).unwrap_or(end);
        let duration = until.saturating_sub(frame.at).as_secs_f64();
        text.push_str(&format!("file '{}'\nduration {duration:.3}\n", frame.path.display()));
    }
    if let Some(last) = kept.last() {
        // The concat demuxer needs the last file twice for its duration to count.
        text.push_str(&format!("file '{}'\n", last.path.display()));
    }
    std::fs::write(&list, text).map_err(|e| e.to_string())?;
    let last_delay_cs = end.saturating_sub(kept.last().map(|f| f.at).unwrap_or_default()).as_millis() / 10;

    let concat_input = |c: &mut Command| {
        c.args(["-nostdin", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i"]).arg(&list);
    };
    // Baseline: decoding the PNGs once, which each ffmpeg pass also does.
    let mut decode_only = Command::new("ffmpeg");
    concat_input(&mut decode_only);
    decode_only.args(["-f", "null", "-"]);
    let (ffmpeg_decode_cpu, _) = run_measured(&mut decode_only)?;

    let variants = [
        ("ffmpeg default", "palettegen", "paletteuse"),
        ("ffmpeg tuned", "palettegen=stats_mode=diff", "paletteuse=dither=none:diff_mode=rectangle"),
    ];
    let mut rows = Vec::new();
    for (name, gen_filter, use_filter) in variants {
        let palette = work.join(format!("{}-palette.png", name.replace(' ', "-")));
        let output = work.join(format!("{}.gif", name.replace(' ', "-")));
        let mut pass1 = Command::new("ffmpeg");
        concat_input(&mut pass1);
        pass1.args(["-vf", gen_filter]).arg(&palette);
        let (cpu1, wall1) = run_measured(&mut pass1)?;
        let mut pass2 = Command::new("ffmpeg");
        concat_input(&mut pass2);
        pass2
            .arg("-i")
            .arg(&palette)
            .args(["-lavfi", &format!("[0:v][1:v]{use_filter}"), "-fps_mode", "vfr"])
            .args(["-final_delay", &last_delay_cs.to_string()])
            .arg(&output);
        let (cpu2, wall2) = run_measured(&mut pass2)?;
        let bytes = std::fs::metadata(&output).map_err(|e| e.to_string())?.len();
        let info = gif_info(&output)?;
        rows.push((name, bytes, cpu1 + cpu2, wall1 + wall2, info));
    }

    println!("\n## Recording comparison: {} captured frames, {:.1} s", frames.len(), end.as_secs_f64());
    println!(
        "kept by the motion filter: {} of {} ({:.0}%)",
        kept.len(),
        frames.len(),
        100.0 * kept.len() as f64 / frames.len() as f64
    );
    println!(
        "motion filter: {:.2} ms CPU per 720p frame ({:.0} ms total)",
        ms(filter_cpu) / frames.len() as f64,
        ms(filter_cpu)
    );
    println!(
        "PNG decoding (not counted for us): {:.0} ms for all frames; ffmpeg decoding the kept PNGs once: {:.0} ms (each ffmpeg pass includes this)",
        ms(decode_cpu),
        ms(ffmpeg_decode_cpu)
    );
    println!();
    println!("| encoder | GIF bytes | images | GIF play time | encode CPU | size vs ours | CPU vs ours |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| ours (fixed palette, transparency, crop) | {} | {} | {:.2} s | {:.0} ms | 1.00x | 1.00x |",
        ours_bytes,
        ours_info.images,
        ours_info.total_cs as f64 / 100.0,
        ms(encode_cpu)
    );
    println!("| ours incl. motion filter | | | | {:.0} ms | | |", ms(encode_cpu + filter_cpu));
    for (name, bytes, cpu, wall, info) in &rows {
        println!(
            "| {name} (2 passes, wall {:.1} s) | {bytes} | {} | {:.2} s | {:.0} ms | {:.2}x | {:.2}x |",
            wall.as_secs_f64(),
            info.images,
            info.total_cs as f64 / 100.0,
            ms(*cpu),
            *bytes as f64 / ours_bytes as f64,
            ms(*cpu) / ms(encode_cpu),
        );
    }
    println!(
        "\n(ffmpeg CPU = user+sys of the child processes; ours = CPU of the encoding thread; outputs in {})",
        work.display()
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------- filter cost

fn synthetic_frame(width: u32, height: u32, seed: u32) -> Frame {
    let mut state = seed | 1;
    let mut pixels = Vec::with_capacity(width as usize * height as usize * 4);
    for _ in 0..width as usize * height as usize {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [r, g, b, _] = state.to_le_bytes();
        pixels.extend_from_slice(&[r, g, b, 255]);
    }
    Frame::from_rgba(width, height, pixels).unwrap_or_else(|_| Frame::new(width, height))
}

fn filter_cost() -> BenchResult<()> {
    println!("\n## Motion filter cost (release build, one thread)");
    println!(
        "| frame | thumbnail wall (min / median) | thumbnail CPU (mean) | max-abs-diff | filter.consider wall (mean) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for &(w, h) in &[(1920u32, 1080u32), (1280, 720), (3840, 2160)] {
        let a = synthetic_frame(w, h, 1);
        let b = synthetic_frame(w, h, 2);
        let mut thumbnailer = Thumbnailer::new();
        let mut ta = Thumbnail::default();
        let mut tb = Thumbnail::default();
        thumbnailer.compute(&a, &mut ta);
        thumbnailer.compute(&b, &mut tb);
        let runs = if w > 2000 { 40 } else { 150 };
        let mut times = Vec::with_capacity(runs);
        let cpu_start = thread_cpu_time();
        for i in 0..runs {
            let frame = if i % 2 == 0 { &a } else { &b };
            let t = Instant::now();
            thumbnailer.compute(frame, &mut ta);
            times.push(t.elapsed());
        }
        let cpu = (thread_cpu_time() - cpu_start) / runs as u32;
        times.sort();
        let median = times[times.len() / 2];
        let min = times[0];
        let t = Instant::now();
        let mut sink = 0.0f32;
        for _ in 0..1000 {
            sink += std::hint::black_box(&ta).max_abs_diff(std::hint::black_box(&tb));
        }
        let diff = t.elapsed() / 1000;
        let mut filter = MotionFilter::default();
        let t = Instant::now();
        for i in 0..runs {
            let verdict = filter.consider(if i % 2 == 0 { &a } else { &b });
            sink += verdict.max_diff.unwrap_or(0.0);
        }
        let consider = t.elapsed() / runs as u32;
        std::hint::black_box(sink);
        println!(
            "| {w}x{h} | {:.3} / {:.3} ms | {:.3} ms | {:.1} us | {:.3} ms |",
            ms(min),
            ms(median),
            ms(cpu),
            diff.as_secs_f64() * 1e6,
            ms(consider)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- rss

fn status_kib(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(field).and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn rss(dir: &Path, minutes: f64, speed: f64) -> BenchResult<()> {
    let frames = load_index(dir)?;
    let speed = speed.max(1.0);
    let duration = Duration::from_secs_f64(minutes * 60.0 / speed);
    let cycle = frames.last().map(|f| f.at).unwrap_or_default() + Duration::from_millis(100);
    println!(
        "\n## Peak memory over a {minutes} min recording ({} captured frames replayed in a loop, speed {speed}x)",
        frames.len()
    );
    println!("VmHWM before recording: {} KiB, VmRSS {} KiB", status_kib("VmHWM:"), status_kib("VmRSS:"));

    let source = Arc::new(LatestFrame::default());
    let publisher_source = source.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher_stop = stop.clone();
    let published = Arc::new(AtomicU64::new(0));
    let publisher_count = published.clone();
    let paths: Vec<(PathBuf, Duration)> = frames.iter().map(|f| (f.path.clone(), f.at)).collect();
    // Replays the captured frames at their capture times (scaled by speed), looping.
    let publisher = std::thread::spawn(move || {
        let start = Instant::now();
        let mut round = 0u32;
        'outer: loop {
            for (path, at) in &paths {
                let due = (cycle * round + *at).div_f64(speed);
                let now = start.elapsed();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if publisher_stop.load(Ordering::SeqCst) {
                    break 'outer;
                }
                if let Ok(frame) = Frame::load_png(path) {
                    publisher_source.publish(frame);
                    publisher_count.fetch_add(1, Ordering::SeqCst);
                }
            }
            round += 1;
        }
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let path = dir.join("compare").join("rss.gif");
    std::fs::create_dir_all(dir.join("compare")).map_err(|e| e.to_string())?;
    let stats = runtime.block_on(async {
        let options =
            RecorderOptions { interval: Duration::from_millis(100).div_f64(speed), ..RecorderOptions::default() };
        let recorder = Recorder::start(source.clone() as Arc<dyn FrameSource>, path.clone(), options)
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut next_report = Duration::ZERO;
        while started.elapsed() < duration {
            if started.elapsed() >= next_report {
                println!(
                    "  t={:>5.0} s (recording time {:>5.0} s): VmRSS {:>7} KiB, VmHWM {:>7} KiB, kept {}",
                    started.elapsed().as_secs_f64(),
                    started.elapsed().as_secs_f64() * speed,
                    status_kib("VmRSS:"),
                    status_kib("VmHWM:"),
                    recorder.frames_kept()
                );
                next_report += duration / 10;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        recorder.stop().await.map_err(|e| e.to_string())
    })?;
    stop.store(true, Ordering::SeqCst);
    let _ = publisher.join();
    println!(
        "recorded {:.0} s wall: {} frames published, {} sampled, {} kept, {} GIF images, {} bytes, encode CPU {:.1} s, filter CPU {:.1} s",
        stats.duration.as_secs_f64(),
        published.load(Ordering::SeqCst),
        stats.frames_sampled,
        stats.frames_kept,
        stats.gif_images,
        stats.bytes,
        stats.encode_cpu.as_secs_f64(),
        stats.filter_cpu.as_secs_f64()
    );
    println!(
        "PEAK RSS (VmHWM) of the process: {} KiB ({:.1} MiB)",
        status_kib("VmHWM:"),
        status_kib("VmHWM:") as f64 / 1024.0
    );
    let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
    let mut playback = GifPlayback::open(&bytes[..]).map_err(|e| e.to_string())?;
    let mut images = 0u64;
    let mut total_cs = 0u64;
    while let Some(f) = playback.next_frame().map_err(|e| e.to_string())? {
        images += 1;
        total_cs += f.delay_cs as u64;
    }
    println!("GIF check: {images} images, plays {:.1} s", total_cs as f64 / 100.0);
    let _ = std::io::stdout().flush();
    Ok(())
}
