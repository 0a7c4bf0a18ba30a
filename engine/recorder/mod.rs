//! The recorder: turns a run into a motion-filtered animated GIF.
//!
//! A [`Recorder`] samples a [`FrameSource`] (the VNC framebuffer in a real run) on
//! a timer, keeps only the frames in which something moved ([`motion`]: max absolute
//! difference of 256x256 grayscale thumbnails against the last kept frame), and
//! streams them into a GIF ([`gif_writer`]: one fixed palette ([`palette`]), unchanged
//! pixels transparent, images cropped to what changed, real-time delays). Memory is
//! flat over any recording length, and a recorder killed mid-run leaves a GIF that
//! plays up to its last complete image. [`playback`] reads GIFs back the way
//! browsers composite them (tests, reports).
//!
//! The pieces are usable alone: [`MotionFilter`] and [`GifWriter`] are synchronous
//! and do no I/O of their own beyond the `Write` they are given.

pub mod gif_writer;
pub mod motion;
pub mod palette;
pub mod playback;
pub mod session;

pub use gif_writer::{
    FinishedGif, FrameChange, GifWriteError, GifWriter, GifWriterStats, MAX_DELAY_CS, MIN_DELAY_CS, fit_to_canvas,
};
pub use motion::{
    DEFAULT_THRESHOLD, MotionFilter, MotionVerdict, THUMBNAIL_CELLS, THUMBNAIL_SIDE, Thumbnail, Thumbnailer,
};
pub use palette::{DesktopPalette, TRANSPARENT_INDEX};
pub use playback::{GifPlayback, GifReadError, PlayedFrame};
pub use session::{FrameSource, Recorder, RecorderError, RecorderOptions, RecordingStats, thread_cpu_time};
