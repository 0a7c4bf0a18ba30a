//! The motion filter: decides which captured frames are worth keeping in a recording.
//!
//! Every frame is reduced to a 256x256 grayscale [`Thumbnail`] (area average of the
//! BT.601 luma, `f32` values in `0.0..=255.0`), and a frame is kept when the MAXIMUM
//! absolute difference between its thumbnail and the thumbnail of the last KEPT frame
//! exceeds the threshold (default 1.0). The maximum, never the mean: a text caret or
//! a moving mouse pointer covers a fraction of one thumbnail cell, which changes that
//! cell by tens of luma levels but the mean of the 65,536 cells by a few thousandths.
//! Comparing with the last kept frame (not the previous sample) means slow drifts that
//! stay under the threshold between two samples still add up to a kept frame.
//!
//! Thumbnail cells are exact area averages: cell `(i, j)` of a `w x h` frame is the
//! mean luma over the source rectangle `[j w/256, (j+1) w/256) x [i h/256, (i+1) h/256)`,
//! pixels cut by the rectangle's edges counting with the covered fraction. Frames
//! smaller than 256 pixels in a dimension use the same rule, which there amounts to
//! box upsampling: a cell lies inside one source pixel (value = that pixel) or
//! straddles two (value = their coverage-weighted mean). An empty frame (0 pixels)
//! gives an all-black thumbnail.
//!
//! Cost: one pass over the frame with no per-pixel division and no allocation after
//! the first frame of a given size (see the `recording` benchmark for measured times).

use crate::frame::Frame;

/// Width and height of a thumbnail, in cells.
pub const THUMBNAIL_SIDE: usize = 256;
/// Number of cells in a thumbnail.
pub const THUMBNAIL_CELLS: usize = THUMBNAIL_SIDE * THUMBNAIL_SIDE;
/// The default threshold: drop only frames that are identical at thumbnail scale.
pub const DEFAULT_THRESHOLD: f32 = 1.0;

/// A 256x256 grayscale summary of a frame, row by row.
#[derive(Clone, PartialEq)]
pub struct Thumbnail {
    cells: Vec<f32>,
}

impl std::fmt::Debug for Thumbnail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Thumbnail({THUMBNAIL_SIDE}x{THUMBNAIL_SIDE})")
    }
}

impl Default for Thumbnail {
    fn default() -> Self {
        Thumbnail { cells: vec![0.0; THUMBNAIL_CELLS] }
    }
}

impl Thumbnail {
    /// The thumbnail of `frame` (allocates its own scratch space; use a
    /// [`Thumbnailer`] to reuse it across frames).
    pub fn of(frame: &Frame) -> Thumbnail {
        let mut thumbnail = Thumbnail::default();
        Thumbnailer::new().compute(frame, &mut thumbnail);
        thumbnail
    }

    /// The 65,536 cell values, row by row.
    pub fn cells(&self) -> &[f32] {
        &self.cells
    }

    /// The value of cell `(x, y)`, or `None` outside `0..256`.
    pub fn cell(&self, x: usize, y: usize) -> Option<f32> {
        if x >= THUMBNAIL_SIDE || y >= THUMBNAIL_SIDE {
            return None;
        }
        self.cells.get(y * THUMBNAIL_SIDE + x).copied()
    }

    /// The largest absolute difference between two thumbnails' cells.
    pub fn max_abs_diff(&self, other: &Thumbnail) -> f32 {
        // Eight independent running maxima let the compiler vectorize the loop.
        let mut lanes = [0.0f32; 8];
        let a = self.cells.chunks_exact(8);
        let b = other.cells.chunks_exact(8);
        for (ca, cb) in a.zip(b) {
            for k in 0..8 {
                lanes[k] = lanes[k].max((ca[k] - cb[k]).abs());
            }
        }
        lanes.iter().copied().fold(0.0, f32::max)
    }
}

/// How one source index range maps onto one output cell: `first` with weight
/// `first_weight`, then `middle` indices of weight 1, then `last` with weight
/// `last_weight` (absent when `has_last` is false).
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    first: usize,
    first_weight: f32,
    middle: usize,
    has_last: bool,
    last_weight: f32,
}

impl Span {
    fn last(&self) -> usize {
        self.first + 1 + self.middle
    }
}

/// For `source_len` source pixels mapped onto `THUMBNAIL_SIDE` cells: the span of
/// source pixels each cell covers, with coverage weights.
fn plan_spans(source_len: usize) -> Vec<Span> {
    let scale = source_len as f64 / THUMBNAIL_SIDE as f64;
    (0..THUMBNAIL_SIDE)
        .map(|cell| {
            let start = cell as f64 * scale;
            let end = (cell + 1) as f64 * scale;
            let first = start.floor() as usize;
            // Last source pixel that the cell overlaps by a positive amount.
            let last = (end.ceil() as usize).saturating_sub(1).max(first);
            let last = last.min(source_len.saturating_sub(1));
            let first = first.min(last);
            if first == last {
                return Span {
                    first,
                    first_weight: (end - start) as f32,
                    middle: 0,
                    has_last: false,
                    last_weight: 0.0,
                };
            }
            Span {
                first,
                first_weight: ((first + 1) as f64 - start) as f32,
                middle: last - first - 1,
                has_last: true,
                last_weight: (end - last as f64) as f32,
            }
        })
        .collect()
}

/// Computes thumbnails, reusing its scratch buffers between frames.
#[derive(Debug, Default)]
pub struct Thumbnailer {
    planned_for: Option<(usize, usize)>,
    column_spans: Vec<Span>,
    row_spans: Vec<Span>,
    /// Weighted sum of luma rows for the output row being built, one per column.
    column_sums: Vec<f32>,
    /// Luma of one source row, and which row it is.
    luma_row: Vec<f32>,
    luma_row_index: Option<usize>,
}

impl Thumbnailer {
    pub fn new() -> Thumbnailer {
        Thumbnailer::default()
    }

    /// Write the thumbnail of `frame` into `out`.
    pub fn compute(&mut self, frame: &Frame, out: &mut Thumbnail) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above; the function is
            // ordinary safe Rust compiled with AVX2 enabled.
            unsafe { self.compute_avx2(frame, out) };
            return;
        }
        self.compute_portable(frame, out);
    }

    /// The same code as `compute_portable`, compiled for AVX2 (about 4x faster than
    /// the x86_64 baseline, SSE2). Float operations are not contracted or
    /// reordered, so both give bit-identical thumbnails.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn compute_avx2(&mut self, frame: &Frame, out: &mut Thumbnail) {
        self.compute_portable(frame, out);
    }

    #[inline(always)]
    fn compute_portable(&mut self, frame: &Frame, out: &mut Thumbnail) {
        let width = frame.width() as usize;
        let height = frame.height() as usize;
        out.cells.clear();
        out.cells.resize(THUMBNAIL_CELLS, 0.0);
        if width == 0 || height == 0 || frame.pixels().len() < width * height * 4 {
            return;
        }
        if self.planned_for != Some((width, height)) {
            self.column_spans = plan_spans(width);
            self.row_spans = plan_spans(height);
            self.column_sums = vec![0.0; width];
            self.luma_row = vec![0.0; width];
            self.planned_for = Some((width, height));
        }
        self.luma_row_index = None;
        let cell_area = width as f64 * height as f64 / THUMBNAIL_CELLS as f64;
        // Luma sums are in units of 1/65536 (integer weights, see `luma_scaled`).
        let scale = (1.0 / (cell_area * 65536.0)) as f32;
        let stride = width * 4;
        let pixels = frame.pixels();

        for (out_row, span) in out.cells.chunks_exact_mut(THUMBNAIL_SIDE).zip(0..THUMBNAIL_SIDE) {
            let span = self.row_spans[span];
            self.column_sums.fill(0.0);
            self.add_row(pixels, stride, span.first, span.first_weight);
            for y in span.first + 1..span.first + 1 + span.middle {
                self.add_row(pixels, stride, y, 1.0);
            }
            if span.has_last {
                self.add_row(pixels, stride, span.last(), span.last_weight);
            }
            reduce_columns(&self.column_sums, &self.column_spans, scale, out_row);
        }
    }

    /// `column_sums += weight * luma(row y)`.
    #[inline(always)]
    fn add_row(&mut self, pixels: &[u8], stride: usize, y: usize, weight: f32) {
        let Some(row) = pixels.get(y * stride..(y + 1) * stride) else {
            return;
        };
        if weight == 1.0 && self.luma_row_index != Some(y) {
            // A row used once with full weight: fold it in directly.
            for (sum, px) in self.column_sums.iter_mut().zip(row.chunks_exact(4)) {
                *sum += luma_scaled(px);
            }
            return;
        }
        if self.luma_row_index != Some(y) {
            for (l, px) in self.luma_row.iter_mut().zip(row.chunks_exact(4)) {
                *l = luma_scaled(px);
            }
            self.luma_row_index = Some(y);
        }
        for (sum, l) in self.column_sums.iter_mut().zip(self.luma_row.iter()) {
            *sum += weight * *l;
        }
    }
}

/// BT.601 luma times 65536, with the integer weights 19595, 38470, 7471 (they sum
/// to 65536, so white is exactly 255 * 65536). Below 2^24, so exact in an `f32`.
#[inline(always)]
fn luma_scaled(px: &[u8]) -> f32 {
    let p = u32::from_le_bytes([px[0], px[1], px[2], px[3]]);
    let v = (p & 0xff) * 19595 + ((p >> 8) & 0xff) * 38470 + ((p >> 16) & 0xff) * 7471;
    v as f32
}

#[inline(always)]
fn reduce_columns(column_sums: &[f32], spans: &[Span], scale: f32, out_row: &mut [f32]) {
    for (cell, span) in out_row.iter_mut().zip(spans.iter()) {
        let mut total = span.first_weight * column_sums.get(span.first).copied().unwrap_or(0.0);
        if let Some(middle) = column_sums.get(span.first + 1..span.first + 1 + span.middle) {
            total += middle.iter().sum::<f32>();
        }
        if span.has_last {
            total += span.last_weight * column_sums.get(span.last()).copied().unwrap_or(0.0);
        }
        *cell = total * scale;
    }
}

/// What the filter decided about one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotionVerdict {
    /// True when the frame is to be recorded.
    pub keep: bool,
    /// Max absolute thumbnail difference to the last kept frame; `None` for the
    /// first frame, which has nothing to compare with.
    pub max_diff: Option<f32>,
}

/// Keeps a frame when it differs from the last kept frame by more than `threshold`
/// (max absolute difference of thumbnails). The first frame is always kept.
#[derive(Debug)]
pub struct MotionFilter {
    threshold: f32,
    thumbnailer: Thumbnailer,
    last_kept: Option<Thumbnail>,
    candidate: Thumbnail,
}

impl Default for MotionFilter {
    fn default() -> Self {
        MotionFilter::new(DEFAULT_THRESHOLD)
    }
}

impl MotionFilter {
    /// A filter with the given threshold, in luma levels (0-255 scale). A NaN
    /// threshold is treated as 0 (keep every frame that changed at all).
    pub fn new(threshold: f32) -> MotionFilter {
        let threshold = if threshold.is_nan() { 0.0 } else { threshold };
        MotionFilter { threshold, thumbnailer: Thumbnailer::new(), last_kept: None, candidate: Thumbnail::default() }
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Decide whether to keep `frame`; a kept frame becomes the new reference.
    pub fn consider(&mut self, frame: &Frame) -> MotionVerdict {
        self.thumbnailer.compute(frame, &mut self.candidate);
        let max_diff = self.last_kept.as_ref().map(|last| self.candidate.max_abs_diff(last));
        let keep = match max_diff {
            None => true,
            Some(diff) => diff > self.threshold,
        };
        if keep {
            self.promote_candidate();
        }
        MotionVerdict { keep, max_diff }
    }

    /// Keep `frame` whatever it looks like (the last frame of a recording).
    pub fn force_keep(&mut self, frame: &Frame) -> MotionVerdict {
        self.thumbnailer.compute(frame, &mut self.candidate);
        let max_diff = self.last_kept.as_ref().map(|last| self.candidate.max_abs_diff(last));
        self.promote_candidate();
        MotionVerdict { keep: true, max_diff }
    }

    fn promote_candidate(&mut self) {
        match self.last_kept.as_mut() {
            Some(last) => std::mem::swap(last, &mut self.candidate),
            None => self.last_kept = Some(self.candidate.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(width: u32, height: u32, rgb: [u8; 3]) -> Frame {
        let mut frame = Frame::new(width, height);
        for px in frame.pixels_mut().chunks_exact_mut(4) {
            px[..3].copy_from_slice(&rgb);
        }
        frame
    }

    /// Reference: the exact area average by brute force in f64.
    fn reference_cell(frame: &Frame, cx: usize, cy: usize) -> f64 {
        let (w, h) = (frame.width() as f64, frame.height() as f64);
        let side = THUMBNAIL_SIDE as f64;
        let (x0, x1) = (cx as f64 * w / side, (cx + 1) as f64 * w / side);
        let (y0, y1) = (cy as f64 * h / side, (cy + 1) as f64 * h / side);
        let mut total = 0.0;
        for y in y0.floor() as u32..(y1.ceil() as u32).min(frame.height()) {
            let wy = (y1.min(y as f64 + 1.0) - y0.max(y as f64)).max(0.0);
            for x in x0.floor() as u32..(x1.ceil() as u32).min(frame.width()) {
                let wx = (x1.min(x as f64 + 1.0) - x0.max(x as f64)).max(0.0);
                let [r, g, b] = frame.rgb(x, y);
                let l = (19595.0 * r as f64 + 38470.0 * g as f64 + 7471.0 * b as f64) / 65536.0;
                total += wx * wy * l;
            }
        }
        total / ((x1 - x0) * (y1 - y0))
    }

    #[test]
    fn thumbnail_of_a_known_image() {
        // 512x512: left half white, right half black, one red pixel block.
        let mut frame = filled(512, 512, [0, 0, 0]);
        for y in 0..512 {
            for x in 0..256 {
                frame.set_rgb(x, y, [255, 255, 255]);
            }
        }
        for y in 100..102 {
            for x in 300..302 {
                frame.set_rgb(x, y, [255, 0, 0]);
            }
        }
        let t = Thumbnail::of(&frame);
        assert!((t.cell(0, 0).unwrap() - 255.0).abs() < 1e-3);
        assert!((t.cell(127, 255).unwrap() - 255.0).abs() < 1e-3);
        assert!(t.cell(128, 0).unwrap().abs() < 1e-3);
        // A 2x2 cell covered entirely by red: luma of pure red.
        let red = 19595.0 * 255.0 / 65536.0;
        assert!((t.cell(150, 50).unwrap() - red).abs() < 1e-3);
        assert_eq!(t.cell(256, 0), None);
    }

    #[test]
    fn thumbnail_matches_exact_area_average_for_odd_sizes() {
        // Sizes with fractional cell sizes, down and up, including a 1-pixel frame.
        for &(w, h) in &[(1920u32, 1080u32), (333, 97), (100, 300), (1, 1), (257, 255)] {
            let mut frame = Frame::new(w, h);
            for y in 0..h {
                for x in 0..w {
                    let v = ((x * 7 + y * 13) % 256) as u8;
                    frame.set_rgb(x, y, [v, v.wrapping_mul(3), 255 - v]);
                }
            }
            let t = Thumbnail::of(&frame);
            for &(cx, cy) in &[(0, 0), (255, 255), (17, 200), (128, 3), (99, 99)] {
                let expected = reference_cell(&frame, cx, cy);
                let got = t.cell(cx, cy).unwrap() as f64;
                assert!((got - expected).abs() < 0.05, "{w}x{h} cell ({cx},{cy}): {got} vs {expected}");
            }
        }
    }

    #[test]
    fn max_diff_sees_a_caret_that_the_mean_hides() {
        let before = filled(1920, 1080, [255, 255, 255]);
        let mut after = before.clone();
        for y in 500..516 {
            after.set_rgb(960, y, [0, 0, 0]);
        }
        let a = Thumbnail::of(&before);
        let b = Thumbnail::of(&after);
        let max = a.max_abs_diff(&b);
        let mean: f32 =
            a.cells().iter().zip(b.cells()).map(|(x, y)| (x - y).abs()).sum::<f32>() / THUMBNAIL_CELLS as f32;
        assert!(max > 10.0, "caret max diff {max}");
        assert!(mean < DEFAULT_THRESHOLD / 100.0, "mean diff {mean}");

        let mut filter = MotionFilter::default();
        assert!(filter.consider(&before).keep);
        let verdict = filter.consider(&after);
        assert!(verdict.keep, "{verdict:?}");
        // A single changed pixel is caught too.
        let mut one_pixel = after.clone();
        one_pixel.set_rgb(10, 10, [0, 0, 0]);
        assert!(filter.consider(&one_pixel).keep);
    }

    #[test]
    fn identical_frames_are_dropped_and_drift_accumulates() {
        let mut filter = MotionFilter::default();
        let base = filled(640, 480, [100, 100, 100]);
        let first = filter.consider(&base);
        assert_eq!(first, MotionVerdict { keep: true, max_diff: None });
        let again = filter.consider(&base.clone());
        assert!(!again.keep);
        assert_eq!(again.max_diff, Some(0.0));
        // Each step changes luma by 0.6 (under the threshold), but the comparison
        // is against the last KEPT frame, so the second step is kept.
        let step1 = filled(640, 480, [100, 101, 100]);
        let step2 = filled(640, 480, [100, 102, 100]);
        assert!(!filter.consider(&step1).keep);
        assert!(filter.consider(&step2).keep);
        assert!(!filter.consider(&step2).keep);
        assert!(filter.force_keep(&step2).keep);
    }

    #[test]
    fn simd_and_portable_paths_agree_bit_for_bit() {
        let mut frame = Frame::new(1001, 703);
        let mut state = 12345u32;
        for px in frame.pixels_mut().chunks_exact_mut(4) {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            px[..3].copy_from_slice(&state.to_le_bytes()[..3]);
        }
        let mut portable = Thumbnail::default();
        let mut dispatched = Thumbnail::default();
        Thumbnailer::new().compute_portable(&frame, &mut portable);
        Thumbnailer::new().compute(&frame, &mut dispatched);
        assert!(portable == dispatched);
    }

    #[test]
    fn frames_of_different_sizes_compare() {
        let mut filter = MotionFilter::default();
        assert!(filter.consider(&filled(1280, 720, [0, 0, 0])).keep);
        assert!(filter.consider(&filled(800, 600, [200, 0, 0])).keep);
        assert!(!filter.consider(&filled(100, 100, [200, 0, 0])).keep);
        assert!(filter.consider(&Frame::new(0, 0)).keep);
    }
}
