//! A recording session: samples a frame source on a timer and streams the frames
//! that show motion into a GIF file.
//!
//! Data flow, one direction only:
//!
//! ```text
//! FrameSource --(tokio task: every `interval`, if update_seq changed: snapshot,
//!                motion filter)--> bounded channel --(encoder thread: palette,
//!                diff, crop, LZW, write)--> GIF file
//! ```
//!
//! The sampling task only does cheap work (a sequence-number check, the snapshot
//! copy, the 256x256 thumbnail); quantizing, LZW compression and file writes happen
//! on a dedicated OS thread so a slow disk or a big change never stalls the tokio
//! runtime. The channel holds at most `queue_depth` frames: when the encoder falls
//! behind, sampling waits (the frames keep their capture times, so the GIF timing
//! stays right). Memory is flat over any length of recording: the channel, the
//! filter's two thumbnails and the GIF writer's canvases.
//!
//! Stopping takes a last snapshot that is always kept (the final state of the
//! screen is in every recording), writes the last image with its delay up to the
//! stop time, and the GIF trailer. Dropping a [`Recorder`] without calling
//! [`Recorder::stop`] finishes the file the same way in the background.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use crate::frame::Frame;

use super::gif_writer::{GifWriteError, GifWriter, GifWriterStats};
use super::motion::{DEFAULT_THRESHOLD, MotionFilter};

/// Where the recorder gets its frames: the VNC client's framebuffer in a real run.
pub trait FrameSource: Send + Sync + 'static {
    /// A counter that changes whenever the screen content may have changed (for a
    /// VNC client, the number of framebuffer updates received). The recorder skips
    /// the snapshot when it has not changed since the last sample.
    fn update_seq(&self) -> u64;
    /// The current screen, or `None` when there is none yet.
    fn snapshot(&self) -> Option<Frame>;
}

/// How to record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecorderOptions {
    /// Time between two samples of the frame source.
    pub interval: Duration,
    /// Motion threshold: max absolute luma difference (0-255 scale) between 256x256
    /// thumbnails above which a frame is kept. 1.0 drops only frames that are
    /// identical at thumbnail scale.
    pub threshold: f32,
    /// Kept frames that may wait for the encoder before sampling pauses.
    pub queue_depth: usize,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        RecorderOptions { interval: Duration::from_millis(100), threshold: DEFAULT_THRESHOLD, queue_depth: 2 }
    }
}

impl RecorderOptions {
    fn validate(&self) -> Result<(), RecorderError> {
        if self.interval.is_zero() {
            return Err(RecorderError::InvalidOptions("interval must be longer than 0".into()));
        }
        if !self.threshold.is_finite() || self.threshold < 0.0 {
            return Err(RecorderError::InvalidOptions(format!(
                "threshold must be a finite number >= 0, not {}",
                self.threshold
            )));
        }
        if self.queue_depth == 0 {
            return Err(RecorderError::InvalidOptions("queue_depth must be at least 1".into()));
        }
        Ok(())
    }
}

/// Errors of a recording session.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("invalid recorder options: {0}")]
    InvalidOptions(String),
    #[error("the recorder must be started inside a tokio runtime: {0}")]
    NoRuntime(String),
    #[error("{path}: cannot create the recording: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot start the recorder's encoder thread: {0}")]
    Spawn(std::io::Error),
    #[error("{path}: {source}")]
    Write { path: PathBuf, source: GifWriteError },
    #[error("{path}: the frame source never produced a frame; no recording was written")]
    NoFrames { path: PathBuf },
    #[error("the recorder's {0} ended unexpectedly")]
    Crashed(&'static str),
}

/// What a finished recording contains and cost. Durations serialize as seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordingStats {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    /// Snapshots taken from the source (ticks where its update counter changed,
    /// plus the final one).
    pub frames_sampled: u64,
    /// Ticks skipped because the source's update counter had not changed.
    pub samples_unchanged: u64,
    /// Frames the motion filter kept (the first and last always are).
    pub frames_kept: u64,
    /// Image blocks in the GIF (kept frames that changed a palette index, plus
    /// transparent images that split delays over 655 s).
    pub gif_images: u64,
    /// Size of the GIF file.
    pub bytes: u64,
    /// Wall time from start to stop.
    #[serde(rename = "duration_s", serialize_with = "as_seconds")]
    pub duration: Duration,
    /// Play time of the GIF (sum of its delays).
    #[serde(rename = "gif_duration_s", serialize_with = "as_seconds")]
    pub gif_duration: Duration,
    /// CPU time of the encoder thread (palette, diff, LZW, writes).
    #[serde(rename = "encode_cpu_s", serialize_with = "as_seconds")]
    pub encode_cpu: Duration,
    /// CPU time of the motion filter (thumbnails and comparisons).
    #[serde(rename = "filter_cpu_s", serialize_with = "as_seconds")]
    pub filter_cpu: Duration,
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// CPU time consumed by the calling thread so far.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes into the timespec we pass, which we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

enum EncoderMessage {
    Frame { frame: Frame, at: Duration },
    Finish { end: Duration },
}

struct EncoderOutcome {
    width: u32,
    height: u32,
    writer: GifWriterStats,
    cpu: Duration,
}

/// Counters shared between the sampling task and the [`Recorder`] handle.
#[derive(Debug, Default)]
struct Progress {
    frames_kept: AtomicU64,
}

/// A running recording. Stop it with [`Recorder::stop`].
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    progress: Arc<Progress>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<RecordingStats, RecorderError>>>,
}

impl Recorder {
    /// Create (truncate) the GIF at `path` and start sampling `source`. Must be
    /// called inside a tokio runtime.
    pub fn start(
        source: Arc<dyn FrameSource>,
        path: PathBuf,
        opts: RecorderOptions,
    ) -> Result<Recorder, RecorderError> {
        opts.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| RecorderError::NoRuntime(e.to_string()))?;
        let file = File::create(&path).map_err(|source| RecorderError::Create { path: path.clone(), source })?;
        let (frames_tx, frames_rx) = mpsc::channel(opts.queue_depth);
        let (done_tx, done_rx) = oneshot::channel();
        let encoder_path = path.clone();
        let spawned = std::thread::Builder::new().name("smoke-recorder".into()).spawn(move || {
            let outcome = encode_frames(frames_rx, file, &encoder_path);
            let _ = done_tx.send(outcome);
        });
        if let Err(error) = spawned {
            let _ = std::fs::remove_file(&path);
            return Err(RecorderError::Spawn(error));
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        let progress = Arc::new(Progress::default());
        let sampler = Sampler { source, opts, path: path.clone(), progress: progress.clone(), frames: frames_tx };
        tracing::debug!(path = %path.display(), "recording started");
        let task = runtime.spawn(sampler.run(stop_rx, done_rx));
        Ok(Recorder { path, progress, stop: Some(stop_tx), task: Some(task) })
    }

    /// Index of the latest kept frame (0 for the first; also 0 before any frame is
    /// kept). Kept frames are numbered in capture order; a step timeline can pair
    /// this with the time of the step.
    pub fn frame_index(&self) -> u64 {
        self.progress.frames_kept.load(Ordering::Acquire).saturating_sub(1)
    }

    /// Number of frames kept so far.
    pub fn frames_kept(&self) -> u64 {
        self.progress.frames_kept.load(Ordering::Acquire)
    }

    /// The GIF being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keep the final screen, finish the GIF and report what was recorded.
    pub async fn stop(mut self) -> Result<RecordingStats, RecorderError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().ok_or(RecorderError::Crashed("sampling task"))?;
        let stats = task.await.map_err(|_| RecorderError::Crashed("sampling task"))??;
        tracing::debug!(
            path = %stats.path.display(),
            kept = stats.frames_kept,
            bytes = stats.bytes,
            "recording finished"
        );
        Ok(stats)
    }
}

/// The sampling side, run as a tokio task.
struct Sampler {
    source: Arc<dyn FrameSource>,
    opts: RecorderOptions,
    path: PathBuf,
    progress: Arc<Progress>,
    frames: mpsc::Sender<EncoderMessage>,
}

impl Sampler {
    async fn run(
        self,
        mut stop: oneshot::Receiver<()>,
        encoder_done: oneshot::Receiver<Result<EncoderOutcome, RecorderError>>,
    ) -> Result<RecordingStats, RecorderError> {
        let start = Instant::now();
        let mut filter = MotionFilter::new(self.opts.threshold);
        let mut ticker = tokio::time::interval(self.opts.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_seq: Option<u64> = None;
        let (mut sampled, mut unchanged, mut kept) = (0u64, 0u64, 0u64);
        let mut filter_cpu = Duration::ZERO;
        let mut encoder_alive = true;

        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = ticker.tick() => {}
            }
            let seq = self.source.update_seq();
            if last_seq == Some(seq) {
                unchanged += 1;
                continue;
            }
            let Some(frame) = self.source.snapshot() else {
                continue;
            };
            let at = start.elapsed();
            last_seq = Some(seq);
            sampled += 1;
            let cpu = thread_cpu_time();
            let verdict = filter.consider(&frame);
            filter_cpu += thread_cpu_time().saturating_sub(cpu);
            if !verdict.keep {
                continue;
            }
            kept += 1;
            self.progress.frames_kept.store(kept, Ordering::Release);
            if self.frames.send(EncoderMessage::Frame { frame, at }).await.is_err() {
                encoder_alive = false;
                break;
            }
        }

        if encoder_alive && let Some(frame) = self.source.snapshot() {
            let at = start.elapsed();
            sampled += 1;
            let cpu = thread_cpu_time();
            filter.force_keep(&frame);
            filter_cpu += thread_cpu_time().saturating_sub(cpu);
            kept += 1;
            self.progress.frames_kept.store(kept, Ordering::Release);
            let _ = self.frames.send(EncoderMessage::Frame { frame, at }).await;
        }
        let end = start.elapsed();
        let _ = self.frames.send(EncoderMessage::Finish { end }).await;
        drop(self.frames);

        let outcome = encoder_done.await.map_err(|_| RecorderError::Crashed("encoder thread"))?;
        let outcome = outcome.inspect_err(|error| tracing::warn!(%error, "recording failed"))?;
        Ok(RecordingStats {
            path: self.path,
            width: outcome.width,
            height: outcome.height,
            frames_sampled: sampled,
            samples_unchanged: unchanged,
            frames_kept: kept,
            gif_images: outcome.writer.images_written,
            bytes: outcome.writer.bytes,
            duration: end,
            gif_duration: Duration::from_millis(outcome.writer.played_cs.saturating_mul(10)),
            encode_cpu: outcome.cpu,
            filter_cpu,
        })
    }
}

/// The encoder thread: turns kept frames into GIF images until told to finish (or
/// until the sampling side goes away, which finishes the file at the last frame).
fn encode_frames(
    mut frames: mpsc::Receiver<EncoderMessage>,
    file: File,
    path: &Path,
) -> Result<EncoderOutcome, RecorderError> {
    let cpu_start = thread_cpu_time();
    let write_error = |source: GifWriteError| RecorderError::Write { path: path.to_path_buf(), source };
    let mut file = Some(file);
    let mut writer: Option<GifWriter<BufWriter<File>>> = None;
    let mut end = Duration::ZERO;
    while let Some(message) = frames.blocking_recv() {
        match message {
            EncoderMessage::Frame { frame, at } => {
                end = end.max(at);
                if writer.is_none()
                    && let Some(file) = file.take()
                {
                    let out = BufWriter::with_capacity(256 * 1024, file);
                    writer = Some(GifWriter::new(out, frame.width(), frame.height()).map_err(write_error)?);
                }
                if let Some(writer) = writer.as_mut() {
                    writer.push(&frame, at).map_err(write_error)?;
                }
            }
            EncoderMessage::Finish { end: stop } => {
                end = end.max(stop);
                break;
            }
        }
    }
    let Some(writer) = writer else {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(RecorderError::NoFrames { path: path.to_path_buf() });
    };
    let (width, height) = (writer.width(), writer.height());
    let finished = writer.finish(end).map_err(write_error)?;
    let file = finished.output.into_inner().map_err(|e| write_error(GifWriteError::Io(e.into_error())))?;
    let mut file = file;
    file.flush().map_err(|e| write_error(GifWriteError::Io(e)))?;
    file.sync_data().map_err(|e| write_error(GifWriteError::Io(e)))?;
    Ok(EncoderOutcome { width, height, writer: finished.stats, cpu: thread_cpu_time().saturating_sub(cpu_start) })
}
