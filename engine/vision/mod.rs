//! Screen checks: is the screen what a step expects?
//!
//! Every check is a pure function of captured [`Frame`](crate::frame::Frame)s,
//! except OCR, which runs the `tesseract` program. The runner decides when to
//! look (polling with a budget); this module only answers for one frame.
//!
//! | check | module | answers |
//! |---|---|---|
//! | SSIM against a reference, with region and mask | [`ssim`] | a score in [-1, 1] (1 = identical), the worst window, the map |
//! | where a small image (needle) is | [`template`] | location, ZNCC score, pixel check, click point |
//! | what text is where | [`ocr`] | words and lines with boxes; the box of a text or regex query |
//! | where two screens differ, for reviewers | [`diff`] | a heatmap image and boxes around changes |
//!
//! All checks work on 8-bit luma ([`GrayImage`], BT.601 as PIL computes it);
//! the template pixel check and the diff heatmap also look at RGB. Rectangles
//! ignored by a check are a [`Mask`]. Coordinates are frame pixels throughout,
//! also for results computed on a region or an upscaled copy.

pub mod diff;
pub mod gray;
pub mod needle;
pub mod ocr;
pub mod ssim;
pub mod still;
pub mod template;
pub mod verbs;

pub use gray::{GrayImage, Mask};
