//! Timing of the vision checks at 1920x1080 (single thread).
//!
//! Run: `taskset -c 0 cargo bench --bench vision`. The screens are the 1280x720
//! fixtures tiled to 1920x1080, the same images tests/data/vision/reference_timing.py
//! gives scikit-image and OpenCV.

use std::path::Path;
use std::time::{Duration, Instant};

use smoke::frame::Frame;
use smoke::geometry::Rect;
use smoke::vision::gray::GrayImage;
use smoke::vision::ssim::{SsimOptions, SsimWindow, ssim};
use smoke::vision::template::{MatchOptions, Needle, find_template};

fn tiled(name: &str) -> Frame {
    let src =
        Frame::load_png(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vision").join(name)).expect("fixture");
    let (w, h) = (1920u32, 1080u32);
    let mut out = Frame::new(w, h);
    for y in 0..h {
        for x in 0..w {
            out.set_rgb(x, y, src.rgb(x % src.width(), y % src.height()));
        }
    }
    out
}

/// CPU time of this thread (not disturbed by other processes taking the core).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn time<T>(label: &str, runs: usize, mut f: impl FnMut() -> T) -> T {
    let mut wall = Vec::with_capacity(runs);
    let mut cpu = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let (t, c) = (Instant::now(), thread_cpu());
        last = Some(std::hint::black_box(f()));
        cpu.push(thread_cpu() - c);
        wall.push(t.elapsed());
    }
    wall.sort();
    cpu.sort();
    println!(
        "{label:<40} cpu median {:>7.2} ms min {:>7.2} ms | wall median {:>7.2} ms",
        ms(cpu[runs / 2]),
        ms(cpu[0]),
        ms(wall[runs / 2])
    );
    last.expect("at least one run")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let (fa, fb) = (tiled("screen_base.png"), tiled("screen_moved.png"));
    let (a, b) = (GrayImage::from_frame(&fa), GrayImage::from_frame(&fb));
    let gauss = SsimOptions::default();
    let s = time("ssim gaussian 1920x1080", 30, || ssim(&a, &b, &gauss).expect("ssim"));
    println!("  score {:.6}", s.score);
    let with_map = SsimOptions { keep_map: true, ..Default::default() };
    time("ssim gaussian 1920x1080 + map", 30, || ssim(&a, &b, &with_map).expect("ssim"));
    let boxed = SsimOptions { window: SsimWindow::Box { size: 7 }, ..Default::default() };
    let s = time("ssim box7 1920x1080", 30, || ssim(&a, &b, &boxed).expect("ssim"));
    println!("  score {:.6}", s.score);
    time("luma 1920x1080 (Frame -> GrayImage)", 30, || GrayImage::from_frame(&fa));

    // Template: a 200x120 patch of the moved screen, searched in the base screen.
    let needle = Needle::from_screen(&fb, Rect::new(600, 500, 200, 120)).expect("needle");
    let opts = MatchOptions::default();
    let m = time("template 200x120 in 1920x1080", 30, || find_template(&fa, &needle, &opts).expect("search"));
    println!("  found {} score {:.6} at {} (coarse levels {})", m.found, m.score, m.rect, m.coarse_levels);
    let small = Needle::from_screen(&fb, Rect::new(740, 525, 58, 39)).expect("needle");
    let m =
        time("template 58x39 (sqrt button) in 1920x1080", 30, || find_template(&fa, &small, &opts).expect("search"));
    println!("  found {} score {:.6} at {} (coarse levels {})", m.found, m.score, m.rect, m.coarse_levels);
}
