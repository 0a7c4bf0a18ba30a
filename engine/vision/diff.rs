//! Difference heatmaps: an image that shows a reviewer where a screen differs
//! from its reference.
//!
//! The actual screen is drawn dimmed and gray; changed pixels are painted red
//! (stronger for larger differences, so even a one-level change shows), masked
//! areas are tinted blue, and each cluster of changes is outlined in yellow.
//! [`diff_heatmap`] works from the per-pixel RGB difference of two frames;
//! [`ssim_heatmap`] paints `1 - SSIM` from an SSIM map instead, which shows
//! structural change the way the SSIM check saw it.

use crate::frame::Frame;
use crate::geometry::{Point, Rect};
use crate::vision::gray::Mask;
use crate::vision::ssim::SsimMap;

/// Why a heatmap could not be drawn.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DiffError {
    #[error("images differ in size: {expected_width}x{expected_height} vs {actual_width}x{actual_height}")]
    SizeMismatch { expected_width: u32, expected_height: u32, actual_width: u32, actual_height: u32 },
    #[error("the SSIM map area {area} lies outside the {width}x{height} frame")]
    MapOutside { area: Rect, width: u32, height: u32 },
}

/// Options of [`diff_heatmap`].
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Areas to ignore (frame coordinates); drawn blue.
    pub mask: Mask,
    /// Channel differences up to this value do not count as changes.
    pub tolerance: u8,
}

/// A heatmap and what it found.
#[derive(Debug, Clone)]
pub struct DiffReport {
    pub image: Frame,
    /// Unmasked pixels whose largest channel difference exceeds the tolerance.
    pub changed_pixels: u64,
    /// The largest channel difference among unmasked pixels.
    pub max_difference: u8,
    /// Tight boxes around clusters of changed pixels (the yellow outlines).
    pub changed_boxes: Vec<Rect>,
}

const RED: [f32; 3] = [255.0, 40.0, 40.0];
const BLUE: [f32; 3] = [50.0, 90.0, 220.0];
const YELLOW: [u8; 3] = [255, 220, 0];
/// Changes closer than this many pixels share an outline.
const CLUSTER_CELL: u32 = 16;

/// Heatmap of the per-pixel difference between `expected` and `actual`.
pub fn diff_heatmap(expected: &Frame, actual: &Frame, options: &DiffOptions) -> Result<DiffReport, DiffError> {
    if (expected.width(), expected.height()) != (actual.width(), actual.height()) {
        return Err(DiffError::SizeMismatch {
            expected_width: expected.width(),
            expected_height: expected.height(),
            actual_width: actual.width(),
            actual_height: actual.height(),
        });
    }
    let (w, h) = (actual.width(), actual.height());
    let masked = options.mask.to_bitmap(w, h);
    let mut image = dimmed(actual);
    let mut changed = vec![false; (w * h) as usize];
    let (mut changed_pixels, mut max_difference) = (0u64, 0u8);
    for (i, ((e, a), out)) in expected
        .pixels()
        .chunks_exact(4)
        .zip(actual.pixels().chunks_exact(4))
        .zip(image.pixels_mut().chunks_exact_mut(4))
        .enumerate()
    {
        if masked[i] {
            blend(out, BLUE, 0.45);
            continue;
        }
        let d = (0..3).map(|c| e[c].abs_diff(a[c])).max().unwrap_or(0);
        if d > options.tolerance {
            changed[i] = true;
            changed_pixels += 1;
            max_difference = max_difference.max(d);
            blend(out, RED, (0.45 + 0.55 * d as f32 / 96.0).min(1.0));
        }
    }
    let changed_boxes = clusters(&changed, w, h);
    for b in &changed_boxes {
        outline(&mut image, *b);
    }
    Ok(DiffReport { image, changed_pixels, max_difference, changed_boxes })
}

/// [`diff_heatmap`] without mask or tolerance, image only. Images of different
/// sizes give the actual screen tinted red all over (everything differs).
pub fn heatmap(expected: &Frame, actual: &Frame) -> Frame {
    match diff_heatmap(expected, actual, &DiffOptions::default()) {
        Ok(report) => report.image,
        Err(_) => {
            let mut image = dimmed(actual);
            for px in image.pixels_mut().chunks_exact_mut(4) {
                blend(px, RED, 0.6);
            }
            image
        }
    }
}

/// Heatmap of `1 - SSIM` from `map` over `actual`; pixels the score did not
/// count because of the mask are tinted blue. Windows whose SSIM is below 0.9
/// are outlined.
pub fn ssim_heatmap(actual: &Frame, map: &SsimMap) -> Result<Frame, DiffError> {
    let area = map.area();
    if !actual.bounds().contains_rect(&area) {
        return Err(DiffError::MapOutside { area, width: actual.width(), height: actual.height() });
    }
    let mut image = dimmed(actual);
    let w = actual.width() as usize;
    let mut low = vec![false; (map.width() * map.height()) as usize];
    for y in 0..map.height() {
        for x in 0..map.width() {
            let Some(s) = map.get(x, y) else { continue };
            let i = ((area.y + y) as usize * w + (area.x + x) as usize) * 4;
            let Some(out) = image.pixels_mut().get_mut(i..i + 4) else {
                continue;
            };
            if map.is_masked(x, y) {
                blend(out, BLUE, 0.45);
                continue;
            }
            let drop = (1.0 - s).clamp(0.0, 1.0);
            if drop > 0.001 {
                blend(out, RED, (0.3 + 2.8 * drop).min(1.0));
            }
            if s < 0.9 {
                low[(y * map.width() + x) as usize] = true;
            }
        }
    }
    for b in clusters(&low, map.width(), map.height()) {
        outline(&mut image, Rect::new(b.x + area.x, b.y + area.y, b.w, b.h));
    }
    Ok(image)
}

/// The actual screen in gray, darkened so that red and blue stand out.
fn dimmed(actual: &Frame) -> Frame {
    let mut out = actual.clone();
    for p in out.pixels_mut().chunks_exact_mut(4) {
        let g = crate::frame::luma(p[0], p[1], p[2]) as f32;
        let v = (30.0 + g * 0.35) as u8;
        p[0] = v;
        p[1] = v;
        p[2] = v;
    }
    out
}

fn blend(px: &mut [u8], colour: [f32; 3], alpha: f32) {
    for c in 0..3 {
        px[c] = (px[c] as f32 * (1.0 - alpha) + colour[c] * alpha).round().clamp(0.0, 255.0) as u8;
    }
}

/// Tight boxes around groups of flagged pixels; flags in neighbouring
/// `CLUSTER_CELL` cells belong to one group.
fn clusters(flags: &[bool], w: u32, h: u32) -> Vec<Rect> {
    let (cw, ch) = (w.div_ceil(CLUSTER_CELL) as usize, h.div_ceil(CLUSTER_CELL) as usize);
    // Tight box of the flagged pixels in each cell.
    let mut cells: Vec<Option<Rect>> = vec![None; cw * ch];
    for y in 0..h {
        for x in 0..w {
            if flags.get((y * w + x) as usize).copied().unwrap_or(false) {
                let c = (y / CLUSTER_CELL) as usize * cw + (x / CLUSTER_CELL) as usize;
                let px = Rect::new(x, y, 1, 1);
                cells[c] = Some(cells[c].map_or(px, |b| b.union(&px)));
            }
        }
    }
    let mut seen = vec![false; cw * ch];
    let mut boxes = Vec::new();
    for start in 0..cw * ch {
        if seen[start] || cells[start].is_none() {
            continue;
        }
        seen[start] = true;
        let mut stack = vec![start];
        let mut bbox: Option<Rect> = None;
        while let Some(c) = stack.pop() {
            if let Some(b) = cells[c] {
                bbox = Some(bbox.map_or(b, |a| a.union(&b)));
            }
            let (cx, cy) = ((c % cw) as i64, (c / cw) as i64);
            for dy in -1..=1i64 {
                for dx in -1..=1i64 {
                    let (nx, ny) = (cx + dx, cy + dy);
                    if nx < 0 || ny < 0 || nx >= cw as i64 || ny >= ch as i64 {
                        continue;
                    }
                    let n = ny as usize * cw + nx as usize;
                    if !seen[n] && cells[n].is_some() {
                        seen[n] = true;
                        stack.push(n);
                    }
                }
            }
        }
        if let Some(b) = bbox {
            boxes.push(b);
        }
    }
    boxes
}

/// A 2-pixel yellow frame just outside `rect` (clipped to the image).
fn outline(image: &mut Frame, rect: Rect) {
    let outer = rect.expand(2, &image.bounds());
    for y in outer.y..outer.bottom() {
        for x in outer.x..outer.right() {
            let inside = rect.contains(Point::new(x, y));
            if !inside {
                image.set_rgb(x, y, YELLOW);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_red_masks_blue_and_clusters_boxed() {
        let expected = Frame::new(100, 60);
        let mut actual = expected.clone();
        actual.set_rgb(10, 10, [200, 200, 200]);
        actual.set_rgb(12, 11, [0, 0, 1]);
        actual.set_rgb(80, 40, [50, 0, 0]);
        actual.set_rgb(90, 50, [255, 255, 255]); // masked
        let options = DiffOptions { mask: Mask::from_rects([Rect::new(85, 45, 10, 10)]), tolerance: 0 };
        let report = diff_heatmap(&expected, &actual, &options).unwrap();
        assert_eq!(report.changed_pixels, 3);
        assert_eq!(report.max_difference, 200);
        assert_eq!(report.changed_boxes, vec![Rect::new(10, 10, 3, 2), Rect::new(80, 40, 1, 1)]);
        let [r, g, b] = report.image.rgb(10, 10);
        assert!(r > 200 && g < 60 && b < 60, "strong change is red: {r},{g},{b}");
        let [r, g, b] = report.image.rgb(12, 11);
        assert!(r > 100 && r > 2 * g, "a one-level change still shows: {r},{g},{b}");
        let [r, _, b] = report.image.rgb(90, 50);
        assert!(b > r, "masked pixel is blue");
        assert_eq!(report.image.rgb(8, 8), YELLOW);
        assert_eq!(report.image.rgb(50, 30), [30, 30, 30]);
        let tolerant = DiffOptions { tolerance: 1, ..options };
        assert_eq!(diff_heatmap(&expected, &actual, &tolerant).unwrap().changed_pixels, 2);
        assert!(diff_heatmap(&expected, &Frame::new(10, 10), &DiffOptions::default()).is_err());
        let mismatch = heatmap(&expected, &Frame::new(10, 10));
        assert_eq!((mismatch.width(), mismatch.height()), (10, 10));
        assert!(mismatch.rgb(5, 5)[0] > 100);
        assert_eq!(heatmap(&expected, &actual).rgb(50, 30), [30, 30, 30]);
    }
}
