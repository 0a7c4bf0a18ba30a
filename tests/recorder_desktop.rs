//! Records a real desktop: TigerVNC Xvnc + openbox + xterm + galculator, driven by
//! xdotool, captured with ffmpeg x11grab into a frame source. The GIF is then read
//! back by two real decoders: the `gif` crate (composited by `GifPlayback`) and
//! ffmpeg, which must agree pixel for pixel.

mod recorder_support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use recorder_support::{Activity, ChildGuard, Desktop, LatestFrame, X11Grab};
use smoke::recorder::{DesktopPalette, FrameSource, GifPlayback, PlayedFrame, Recorder, RecorderOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_real_desktop_session() {
    let mut desktop = Desktop::start(1280, 720).expect("Xvnc desktop");
    let activity = Activity::launch_apps(&mut desktop).expect("apps");
    let source = Arc::new(LatestFrame::default());
    let sink = source.clone();
    let grab = X11Grab::start(&desktop, 10, move |frame, _| sink.publish(frame)).expect("x11grab");
    let deadline = Instant::now() + Duration::from_secs(10);
    while source.update_seq() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(source.update_seq() > 0, "x11grab delivered no frame");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("desktop.gif");
    let started = Instant::now();
    let recorder = Recorder::start(source.clone(), path.clone(), RecorderOptions::default()).expect("recorder");
    let desktop = Arc::new(desktop);
    let activity = Arc::new(activity);
    let drive = |seconds: u64| {
        let (desktop, activity) = (desktop.clone(), activity.clone());
        tokio::task::spawn_blocking(move || activity.run(&desktop, Duration::from_secs(seconds)))
    };
    drive(4).await.expect("activity thread").expect("activity");

    // Mid-run, the file on disk is what a killed process would leave: every image
    // but the pending one, no trailer. Both decoders must play it.
    let partial = dir.path().join("partial.gif");
    std::fs::copy(&path, &partial).expect("copy the GIF being written");
    let (partial_played, truncated) = play(&partial);
    assert!(truncated, "the trailer is only written at stop");
    assert!(partial_played.len() > 1, "{} images mid-run", partial_played.len());
    assert_ffmpeg_agrees(&partial, &partial_played);

    drive(5).await.expect("activity thread").expect("activity");
    // A quiet second at the end: the last captured frame is the final screen.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let index_before_stop = recorder.frame_index();
    let stats = recorder.stop().await.expect("recording");
    let wall = started.elapsed();
    let final_screen = source.snapshot().expect("frame");
    let captured = grab.stop();
    drop(desktop);

    eprintln!("{}", serde_json::to_string(&stats).unwrap_or_default());
    assert!(captured >= 80, "x11grab frames: {captured}");
    assert!(stats.frames_kept > 5, "{stats:?}");
    assert!(stats.frames_kept < stats.frames_sampled, "idle samples were dropped: {stats:?}");
    assert!(index_before_stop < stats.frames_kept);

    // Decoder 1: the gif crate, composited.
    assert_eq!(std::fs::metadata(&path).expect("gif file").len(), stats.bytes);
    let (played, truncated) = play(&path);
    assert!(!truncated);
    assert!(played.len() > 1, "{} images", played.len());
    assert_eq!(played.len() as u64, stats.gif_images);
    let total = Duration::from_millis(played.iter().map(|p| p.delay_cs as u64 * 10).sum());
    let diff = (total.as_secs_f64() - wall.as_secs_f64()).abs();
    assert!(diff < 0.5, "GIF plays {total:?}, recording took {wall:?}");
    assert!((total.as_secs_f64() - stats.duration.as_secs_f64()).abs() < 0.2);
    let last = played.last().expect("images");
    let expected_last = DesktopPalette::new().quantize_frame(&final_screen);
    assert!(last.frame == expected_last, "the GIF ends on the final screen");

    // Decoder 2: ffmpeg.
    assert_ffmpeg_agrees(&path, &played);
}

/// Decode with the `gif` crate and composite every image (kept in memory: the
/// test recordings are short).
fn play(path: &Path) -> (Vec<PlayedFrame>, bool) {
    let bytes = std::fs::read(path).expect("gif file");
    let mut playback = GifPlayback::open(&bytes[..]).expect("gif header");
    assert_eq!((playback.width(), playback.height()), (1280, 720));
    let mut played = Vec::new();
    while let Some(frame) = playback.next_frame().expect("image") {
        played.push(frame);
    }
    (played, playback.truncated())
}

/// ffmpeg decodes the GIF to one raw RGB frame per image; each must equal ours.
fn assert_ffmpeg_agrees(path: &Path, played: &[PlayedFrame]) {
    let mut ffmpeg = ChildGuard::spawn(
        "ffmpeg",
        Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "quiet", "-i"])
            .arg(path)
            .args(["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .expect("ffmpeg");
    let mut stdout = ffmpeg.stdout().expect("stdout");
    let mut rgb = vec![0u8; 1280 * 720 * 3];
    let mut decoded = 0usize;
    while stdout.read_exact(&mut rgb).is_ok() {
        let ours = played.get(decoded).expect("ffmpeg decoded more images than we did");
        assert!(ours.frame.to_rgb() == rgb, "image {decoded}: ffmpeg shows other pixels");
        decoded += 1;
    }
    assert_eq!(decoded, played.len(), "ffmpeg decoded a different number of images");
}
