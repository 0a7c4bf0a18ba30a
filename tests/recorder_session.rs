//! The recording session with an in-process frame source: sampling, skipping on an
//! unchanged update counter, the motion filter, the always-kept last frame, errors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smoke::frame::Frame;
use smoke::recorder::{DesktopPalette, FrameSource, GifPlayback, Recorder, RecorderError, RecorderOptions};

/// A screen held in memory; `paint` changes it and bumps the update counter.
struct MemoryScreen {
    frame: Mutex<Option<Frame>>,
    seq: AtomicU64,
    snapshots: AtomicU64,
}

impl MemoryScreen {
    fn new(frame: Option<Frame>) -> Arc<MemoryScreen> {
        Arc::new(MemoryScreen { frame: Mutex::new(frame), seq: AtomicU64::new(0), snapshots: AtomicU64::new(0) })
    }

    fn paint(&self, x: u32, y: u32, rgb: [u8; 3]) {
        if let Ok(mut guard) = self.frame.lock()
            && let Some(frame) = guard.as_mut()
        {
            frame.set_rgb(x, y, rgb);
        }
        self.seq.fetch_add(1, Ordering::SeqCst);
    }

    /// An update that does not change any pixel (servers send those).
    fn touch(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
    }

    fn current(&self) -> Option<Frame> {
        self.frame.lock().ok().and_then(|f| f.clone())
    }
}

impl FrameSource for MemoryScreen {
    fn update_seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }
    fn snapshot(&self) -> Option<Frame> {
        self.snapshots.fetch_add(1, Ordering::SeqCst);
        self.current()
    }
}

fn options() -> RecorderOptions {
    RecorderOptions { interval: Duration::from_millis(20), ..RecorderOptions::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_changes_skips_idle_ticks_and_keeps_the_last_frame() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("session.gif");
    let screen = MemoryScreen::new(Some(Frame::new(320, 240)));
    let recorder = Recorder::start(screen.clone(), path.clone(), options()).expect("recorder starts");
    assert_eq!(recorder.path(), path.as_path());

    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(recorder.frames_kept(), 1, "only the first frame while nothing changes");
    assert_eq!(screen.snapshots.load(Ordering::SeqCst), 1, "idle ticks take no snapshot");

    for i in 0..5u32 {
        screen.paint(10 + i * 20, 10, [255, 255, 255]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recorder.frame_index(), 5);
    // Mid-run the file already plays: every image but the pending one, no trailer.
    let bytes = std::fs::read(&path).expect("gif being written");
    let mut playback = GifPlayback::open(&bytes[..]).expect("partial gif");
    let mut written = 0;
    while playback.next_frame().expect("image").is_some() {
        written += 1;
    }
    assert!(playback.truncated());
    assert_eq!(written, 5);
    // Updates that change nothing are sampled but dropped by the motion filter.
    for _ in 0..3 {
        screen.touch();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(recorder.frame_index(), 5);
    // A last change right before stop, possibly between two ticks: still recorded.
    screen.paint(300, 200, [255, 0, 0]);
    let stats = recorder.stop().await.expect("recording stops");

    assert_eq!((stats.width, stats.height), (320, 240));
    // First + 5 changes + the final snapshot; one more when a tick fell between
    // the last paint and the stop request.
    assert!(matches!(stats.frames_kept, 7 | 8), "{stats:?}");
    assert_eq!(stats.frames_sampled, stats.frames_kept + 3, "{stats:?}");
    assert!(stats.samples_unchanged > 10, "{stats:?}");
    assert_eq!(stats.gif_images, 7, "{stats:?}");
    assert_eq!(stats.bytes, std::fs::metadata(&path).expect("file").len());
    let wall = stats.duration.as_secs_f64();
    assert!((stats.gif_duration.as_secs_f64() - wall).abs() < 0.03, "{stats:?}");
    assert!(stats.encode_cpu > Duration::ZERO);

    let json = serde_json::to_value(&stats).expect("stats serialize");
    assert_eq!(json["frames_kept"], stats.frames_kept);
    assert!(json["duration_s"].as_f64().is_some());

    let bytes = std::fs::read(&path).expect("read gif");
    let mut playback = GifPlayback::open(&bytes[..]).expect("gif");
    let mut last = None;
    let mut total_cs = 0u64;
    while let Some(frame) = playback.next_frame().expect("image") {
        total_cs += frame.delay_cs as u64;
        last = Some(frame);
    }
    assert!(!playback.truncated());
    let last = last.expect("images");
    let expected = DesktopPalette::new().quantize_frame(&screen.current().expect("frame"));
    assert!(last.frame == expected, "the GIF ends on the final screen");
    assert_eq!(total_cs * 10, stats.gif_duration.as_millis() as u64);
}

#[tokio::test]
async fn a_source_without_frames_writes_no_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("none.gif");
    let screen = MemoryScreen::new(None);
    let recorder = Recorder::start(screen.clone(), path.clone(), options()).expect("starts");
    tokio::time::sleep(Duration::from_millis(60)).await;
    let error = recorder.stop().await.expect_err("nothing to record");
    assert!(matches!(error, RecorderError::NoFrames { .. }), "{error}");
    assert!(!path.exists());
}

#[tokio::test]
async fn bad_options_and_paths_are_errors() {
    let screen = MemoryScreen::new(Some(Frame::new(8, 8)));
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = [
        RecorderOptions { interval: Duration::ZERO, ..options() },
        RecorderOptions { threshold: f32::NAN, ..options() },
        RecorderOptions { threshold: -1.0, ..options() },
        RecorderOptions { queue_depth: 0, ..options() },
    ];
    for opts in bad {
        let result = Recorder::start(screen.clone(), dir.path().join("x.gif"), opts.clone());
        assert!(matches!(result, Err(RecorderError::InvalidOptions(_))), "{opts:?}");
    }
    let missing = dir.path().join("no/such/dir/x.gif");
    let result = Recorder::start(screen.clone(), missing, options());
    assert!(matches!(result, Err(RecorderError::Create { .. })));
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    let screen = MemoryScreen::new(Some(Frame::new(8, 8)));
    let dir = tempfile::tempdir().expect("tempdir");
    let result = Recorder::start(screen, dir.path().join("x.gif"), options());
    assert!(matches!(result, Err(RecorderError::NoRuntime(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_recorder_still_finishes_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dropped.gif");
    let screen = MemoryScreen::new(Some(Frame::new(64, 48)));
    let recorder = Recorder::start(screen.clone(), path.clone(), options()).expect("starts");
    tokio::time::sleep(Duration::from_millis(50)).await;
    screen.paint(1, 1, [0, 255, 0]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(recorder);
    // The background task finishes the GIF shortly after.
    let mut finished = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if std::fs::read(&path).map(|b| b.last() == Some(&0x3b)).unwrap_or(false) {
            finished = true;
            break;
        }
    }
    assert!(finished, "trailer written after drop");
    let bytes = std::fs::read(&path).expect("gif");
    let mut playback = GifPlayback::open(&bytes[..]).expect("gif");
    let mut images = 0;
    while playback.next_frame().expect("image").is_some() {
        images += 1;
    }
    assert_eq!(images, 2);
}
