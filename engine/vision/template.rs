//! Template ("needle") search: where on the screen does a small reference image appear?
//!
//! The score is zero-mean normalised cross-correlation (ZNCC, OpenCV's
//! `TM_CCOEFF_NORMED`) on 8-bit luma: 1.0 for an exact match, insensitive to a
//! uniform change of brightness or contrast. The search is coarse to fine:
//!
//! 1. screen and needle are halved with a [1 3 3 1] low-pass filter (less
//!    aliasing than 2x2 means, so text keeps its place) while the needle's short
//!    side stays at 12 pixels or more (at most 5 halvings);
//! 2. at that level every position is scored; the best local maxima are kept:
//!    a beam of [`MatchOptions::candidates`], plus every peak within 0.02 of the
//!    best (needles with little structure have many near-ties), up to 8 beams;
//! 3. each candidate is refined level by level by a short hill climb over 5x5
//!    neighbourhoods around its doubled position, down to full resolution, where
//!    the exact ZNCC decides; near-ties there are decided by the pixel check.
//!
//! Measured at 1920x1080 on one core: 10 ms for a 200x120 needle, 17 ms for
//! 58x39 (OpenCV `matchTemplate` `TM_CCOEFF_NORMED`: 47 ms and 39 ms).
//!
//! ZNCC is a global measure: it ignores colour and contrast, and one changed
//! character in a 14-character needle still scores 0.97. The best location is
//! therefore also compared pixel by pixel: [`TemplateMatch::block_difference`]
//! is the largest mean absolute RGB difference over any 4x4 block of the needle
//! (per pixel the largest channel difference). A match is
//! [`found`](TemplateMatch::found) when the ZNCC reaches the threshold and that
//! block difference stays within [`MatchOptions::max_block_difference`], so a
//! red label does not match a blue one and "42" does not match "43".
//!
//! A needle with one single grey value (zero variance) has no ZNCC: it would
//! "match" every flat area equally. [`Needle::new`] rejects it with
//! [`TemplateError::FlatNeedle`]; a flat screen window scores 0.

use crate::frame::Frame;
use crate::geometry::{Point, Rect};
use crate::vision::gray::{GrayImage, Mask};

/// Why a template search could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("the needle is empty (0 pixels)")]
    EmptyNeedle,
    #[error(
        "the needle is flat (every pixel has luma {luma}): it would match any flat area; \
         use a needle with some structure, or check a pixel colour instead"
    )]
    FlatNeedle { luma: u8 },
    #[error("the {needle_width}x{needle_height} needle is larger than the {area_width}x{area_height} search area")]
    NeedleTooLarge { needle_width: u32, needle_height: u32, area_width: u32, area_height: u32 },
    #[error("search region {region} lies outside the {width}x{height} screen")]
    RegionOutside { region: Rect, width: u32, height: u32 },
}

/// A reference image to look for, prepared once (grayscale pyramid, statistics).
#[derive(Debug, Clone)]
pub struct Needle {
    rgb: Frame,
    /// Grayscale pyramid, level 0 = full resolution.
    levels: Vec<NeedleLevel>,
    /// Ignored pixels at full resolution (row by row), when masked.
    mask: Option<Vec<bool>>,
}

#[derive(Debug, Clone)]
struct NeedleLevel {
    width: usize,
    height: usize,
    /// Pixel values minus their mean (over the used pixels); 0 where masked.
    zero_mean: Vec<f32>,
    /// sqrt(sum of squared deviations).
    norm: f64,
    /// For a masked needle: which pixels count (row by row) and how many do.
    used: Option<Vec<bool>>,
    count: usize,
}

impl NeedleLevel {
    /// `masked`: an image of the same size, non-zero where the pixel is ignored.
    fn new(img: &GrayImage, masked: Option<&GrayImage>) -> Option<NeedleLevel> {
        let n = img.pixels().len();
        if n == 0 {
            return None;
        }
        let used: Option<Vec<bool>> = masked.map(|m| m.pixels().iter().map(|&v| v == 0).collect());
        let is_used = |i: usize| used.as_ref().is_none_or(|u| u[i]);
        let count = (0..n).filter(|&i| is_used(i)).count();
        if count == 0 {
            return None;
        }
        let mean = img.pixels().iter().enumerate().filter(|(i, _)| is_used(*i)).map(|(_, &v)| v as f64).sum::<f64>()
            / count as f64;
        let zero_mean: Vec<f32> = img
            .pixels()
            .iter()
            .enumerate()
            .map(|(i, &v)| if is_used(i) { (v as f64 - mean) as f32 } else { 0.0 })
            .collect();
        let norm = zero_mean.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        // A level whose values are (almost) all equal carries no structure.
        (norm > 1e-3).then_some(NeedleLevel {
            width: img.width() as usize,
            height: img.height() as usize,
            zero_mean,
            norm,
            used,
            count,
        })
    }
}

/// Smallest short side a needle keeps at the coarsest search level.
const MIN_COARSE_SIDE: u32 = 12;
const MAX_LEVELS: usize = 6;

impl Needle {
    /// Prepare `image` as a needle.
    pub fn new(image: &Frame) -> Result<Needle, TemplateError> {
        Needle::with_mask(image, &Mask::new())
    }

    /// Prepare `image` as a needle whose pixels inside `mask` (rectangles in
    /// needle coordinates) are ignored: they neither count in the ZNCC nor in the
    /// pixel check (a clock or a user name inside a dialog).
    pub fn with_mask(image: &Frame, mask: &Mask) -> Result<Needle, TemplateError> {
        if image.width() == 0 || image.height() == 0 {
            return Err(TemplateError::EmptyNeedle);
        }
        let mut gray = GrayImage::from_frame(image);
        let bits = mask.to_bitmap(image.width(), image.height());
        let mut masked = (!mask.is_empty()).then(|| {
            let px = bits.iter().map(|&m| if m { 255 } else { 0 }).collect();
            GrayImage::from_luma(image.width(), image.height(), px).unwrap_or_else(|_| GrayImage::new(0, 0))
        });
        let first = gray.pixels().iter().zip(&bits).find(|(_, m)| !**m).map_or(0, |(&v, _)| v);
        let Some(level0) = NeedleLevel::new(&gray, masked.as_ref()) else {
            return Err(TemplateError::FlatNeedle { luma: first });
        };
        let mut levels = vec![level0];
        while levels.len() < MAX_LEVELS && gray.width().min(gray.height()) / 2 >= MIN_COARSE_SIDE {
            gray = gray.pyramid_down();
            masked = masked.map(|m| m.pyramid_down());
            // A pattern can average out to a flat image (a fine checkerboard):
            // stop before such a level.
            match NeedleLevel::new(&gray, masked.as_ref()) {
                Some(level) => levels.push(level),
                None => break,
            }
        }
        let mask = (!mask.is_empty()).then_some(bits);
        Ok(Needle { rgb: image.clone(), levels, mask })
    }

    /// Cut the needle out of a screen.
    pub fn from_screen(screen: &Frame, rect: Rect) -> Result<Needle, TemplateError> {
        let crop = screen.crop(rect).ok_or(TemplateError::RegionOutside {
            region: rect,
            width: screen.width(),
            height: screen.height(),
        })?;
        Needle::new(&crop)
    }

    pub fn width(&self) -> u32 {
        self.rgb.width()
    }

    pub fn height(&self) -> u32 {
        self.rgb.height()
    }

    pub fn image(&self) -> &Frame {
        &self.rgb
    }
}

/// Side of the blocks compared pixel by pixel at the best location.
pub const BLOCK: u32 = 4;
/// Default [`MatchOptions::max_block_difference`].
pub const BLOCK_DIFFERENCE_LIMIT: f64 = 24.0;

/// How to search.
#[derive(Debug, Clone)]
pub struct MatchOptions {
    /// Search only here (frame coordinates); the whole screen when `None`.
    pub region: Option<Rect>,
    /// Minimum ZNCC for [`TemplateMatch::found`].
    pub threshold: f64,
    /// Maximum [`TemplateMatch::block_difference`] (0-255) for
    /// [`TemplateMatch::found`]; `None` skips the pixel check (ZNCC only).
    pub max_block_difference: Option<f64>,
    /// How many coarse-level candidates are refined.
    pub candidates: usize,
}

impl Default for MatchOptions {
    fn default() -> Self {
        MatchOptions {
            region: None,
            threshold: 0.95,
            max_block_difference: Some(BLOCK_DIFFERENCE_LIMIT),
            candidates: 16,
        }
    }
}

/// The best place found for a needle.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateMatch {
    /// True when the score reaches the threshold and the block check passes.
    pub found: bool,
    /// ZNCC at the best location, in [-1, 1].
    pub score: f64,
    /// Where the needle lies, in frame coordinates.
    pub rect: Rect,
    /// The largest mean absolute RGB difference (0-255) over any 4x4 block of
    /// needle vs screen at [`Self::rect`]; 0 for a pixel-exact match.
    pub block_difference: f64,
    /// Pyramid levels searched above full resolution.
    pub coarse_levels: u32,
}

impl TemplateMatch {
    /// The point to click: the centre of the matched rectangle.
    pub fn click_point(&self) -> Point {
        self.rect.center()
    }
}

/// Find `needle` on `screen`.
pub fn find_template(screen: &Frame, needle: &Needle, options: &MatchOptions) -> Result<TemplateMatch, TemplateError> {
    let area = match options.region {
        None => screen.bounds(),
        Some(region) => region.intersect(&screen.bounds()).ok_or(TemplateError::RegionOutside {
            region,
            width: screen.width(),
            height: screen.height(),
        })?,
    };
    if needle.width() > area.w || needle.height() > area.h {
        return Err(TemplateError::NeedleTooLarge {
            needle_width: needle.width(),
            needle_height: needle.height(),
            area_width: area.w,
            area_height: area.h,
        });
    }
    let gray = GrayImage::from_frame_region(screen, area).ok_or(TemplateError::RegionOutside {
        region: area,
        width: screen.width(),
        height: screen.height(),
    })?;
    let (candidates, levels) = search(gray, needle, options.candidates.max(1));
    let best_score = candidates.first().map_or(0.0, |c| c.1);
    // Among (near) ties in ZNCC, the pixels decide.
    let mut best: Option<(Rect, f32, f64)> = None;
    for &((x, y), score) in candidates.iter().take_while(|c| c.1 >= best_score - FINAL_TIE) {
        let location = Rect::new(area.x + x as u32, area.y + y as u32, needle.width(), needle.height());
        let difference = block_difference(screen, needle.image(), needle.mask.as_deref(), location);
        if best.is_none_or(|(_, _, d)| difference < d) {
            best = Some((location, score, difference));
        }
    }
    let (location, score, block_difference) =
        best.unwrap_or((Rect::new(area.x, area.y, needle.width(), needle.height()), 0.0, 255.0));
    let score = score as f64;
    let pixels_ok = options.max_block_difference.is_none_or(|max| block_difference <= max);
    let found = score >= options.threshold && pixels_ok;
    tracing::debug!(rect = %location, score, block_difference, found, "template search");
    Ok(TemplateMatch { found, score, rect: location, block_difference, coarse_levels: levels })
}

/// Find a needle image on `screen`: `Some` when it is [found](TemplateMatch::found).
/// Prepares the needle on every call; keep a [`Needle`] and use
/// [`find_template`] to search for the same needle repeatedly.
pub fn find(screen: &Frame, needle: &Frame, options: &MatchOptions) -> Result<Option<TemplateMatch>, TemplateError> {
    let m = find_template(screen, &Needle::new(needle)?, options)?;
    Ok(m.found.then_some(m))
}

/// Scores this close to the best count as ties: needles with little structure
/// (an edge, a line of text on a plain ground) have many nearly equal places at
/// the coarse levels, and the true one must not fall out of the beam.
const TIE_MARGIN: f32 = 0.02;
/// At most this many times the beam are kept because of ties.
const TIE_CAP: usize = 8;
/// Final candidates this close to the best ZNCC are told apart by their pixels.
const FINAL_TIE: f32 = 1e-3;

type Candidate = ((usize, usize), f32);

/// Coarse-to-fine search; returns the full-resolution candidates (area
/// coordinates, best ZNCC first) and the number of coarse levels used.
fn search(gray: GrayImage, needle: &Needle, beam: usize) -> (Vec<Candidate>, u32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { search_avx2(gray, needle, beam) };
    }
    search_generic(gray, needle, beam)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn search_avx2(gray: GrayImage, needle: &Needle, beam: usize) -> (Vec<Candidate>, u32) {
    search_generic(gray, needle, beam)
}

/// A screen pyramid level: luma and its values minus 128 as f32.
struct ScreenLevel {
    gray: GrayImage,
    centred: Vec<f32>,
}

impl ScreenLevel {
    #[inline(always)]
    fn new(gray: GrayImage) -> ScreenLevel {
        let centred = gray.pixels().iter().map(|&v| v as f32 - 128.0).collect();
        ScreenLevel { gray, centred }
    }
}

#[inline(always)]
fn search_generic(gray: GrayImage, needle: &Needle, beam: usize) -> (Vec<Candidate>, u32) {
    // Screen pyramid down to the coarsest level where the needle still fits.
    let mut screens = vec![gray];
    let mut top = 0;
    for level in needle.levels.iter().skip(1) {
        let Some(last) = screens.last() else { break };
        let next = last.pyramid_down();
        if (next.width() as usize) < level.width || (next.height() as usize) < level.height {
            break;
        }
        screens.push(next);
        top += 1;
    }
    let Some(coarse) = screens.pop() else {
        return (Vec::new(), 0);
    };
    let mut candidates = best_peaks(&zncc_map(&coarse, &needle.levels[top]), beam, &needle.levels[top]);
    let screens: Vec<ScreenLevel> = screens.into_iter().map(ScreenLevel::new).collect();
    for level in (0..top).rev() {
        let screen = &screens[level];
        let nl = &needle.levels[level];
        let (max_x, max_y) = (screen.gray.width() as usize - nl.width, screen.gray.height() as usize - nl.height);
        let mut refined: Vec<Candidate> = Vec::new();
        for &((cx, cy), _) in &candidates {
            let best = climb(screen, nl, (2 * cx, 2 * cy), (max_x, max_y));
            if !refined.iter().any(|&(p, _)| p == best.0) {
                refined.push(best);
            }
        }
        refined.sort_by(|a, b| b.1.total_cmp(&a.1));
        candidates = keep_best(refined, beam);
    }
    (candidates, top as u32)
}

/// The best position in the 5x5 neighbourhood of `start`, repeated from the new
/// best while it lies on the neighbourhood's edge (a short hill climb that
/// recovers when the coarse level was off by more than a pixel).
#[inline(always)]
fn climb(screen: &ScreenLevel, needle: &NeedleLevel, start: (usize, usize), max: (usize, usize)) -> Candidate {
    let mut centre = (start.0.min(max.0), start.1.min(max.1));
    let mut best = (centre, f32::NEG_INFINITY);
    let mut scored: Vec<Candidate> = Vec::new();
    for _ in 0..8 {
        let (x0, y0) = (centre.0.saturating_sub(2), centre.1.saturating_sub(2));
        let (x1, y1) = ((centre.0 + 2).min(max.0), (centre.1 + 2).min(max.1));
        for y in y0..=y1 {
            for x in x0..=x1 {
                let s = match scored.iter().find(|c| c.0 == (x, y)) {
                    Some(c) => c.1,
                    None => {
                        let s = zncc_at(screen, needle, x, y);
                        scored.push(((x, y), s));
                        s
                    }
                };
                if s > best.1 {
                    best = ((x, y), s);
                }
            }
        }
        let on_edge = |v: usize, lo: usize, hi: usize, limit: usize| (v == lo && lo > 0) || (v == hi && hi < limit);
        if best.0 == centre || !(on_edge(best.0.0, x0, x1, max.0) || on_edge(best.0.1, y0, y1, max.1)) {
            break;
        }
        centre = best.0;
    }
    best
}

/// The first `beam` candidates (sorted best first) plus those tied with the best.
fn keep_best(mut sorted: Vec<Candidate>, beam: usize) -> Vec<Candidate> {
    let best = sorted.first().map_or(0.0, |c| c.1);
    let ties = sorted.iter().take_while(|c| c.1 >= best - TIE_MARGIN).count();
    sorted.truncate(beam.max(ties.min(beam * TIE_CAP)));
    sorted
}

/// ZNCC for every position of the needle level inside `screen`.
struct ScoreMap {
    width: usize,
    height: usize,
    scores: Vec<f32>,
}

fn zncc_map(screen: &GrayImage, needle: &NeedleLevel) -> ScoreMap {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { zncc_map_avx2(screen, needle) };
    }
    zncc_map_generic(screen, needle)
}

/// The same code compiled for 8-wide vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn zncc_map_avx2(screen: &GrayImage, needle: &NeedleLevel) -> ScoreMap {
    zncc_map_generic(screen, needle)
}

const LANES: usize = 8;

#[inline(always)]
fn zncc_map_generic(screen: &GrayImage, needle: &NeedleLevel) -> ScoreMap {
    let (sw, sh) = (screen.width() as usize, screen.height() as usize);
    let (tw, th) = (needle.width, needle.height);
    let (nx, ny) = (sw - tw + 1, sh - th + 1);
    let n = (tw * th) as f64;
    // Centred values keep the f32 sums small (the needle is zero-mean, so the
    // offset does not change the correlation).
    let pixels: Vec<f32> = screen.pixels().iter().map(|&v| v as f32 - 128.0).collect();
    // Integral images of s and s^2 (exact in u64).
    let iw = sw + 1;
    let mut sum = vec![0u64; iw * (sh + 1)];
    let mut sq = vec![0u64; iw * (sh + 1)];
    for y in 0..sh {
        let (mut rs, mut rq) = (0u64, 0u64);
        for (x, &v) in screen.row(y as u32).iter().enumerate() {
            rs += v as u64;
            rq += (v as u64) * (v as u64);
            sum[(y + 1) * iw + x + 1] = sum[y * iw + x + 1] + rs;
            sq[(y + 1) * iw + x + 1] = sq[y * iw + x + 1] + rq;
        }
    }
    let rect_sum = |t: &[u64], x: usize, y: usize| -> f64 {
        (t[(y + th) * iw + x + tw] + t[y * iw + x] - t[y * iw + x + tw] - t[(y + th) * iw + x]) as f64
    };
    let mut scores = vec![0f32; nx * ny];
    let mut cross = vec![0f32; nx];
    // Four independent 8-lane accumulators per step hide the add latency.
    const WIDE: usize = 4 * LANES;
    let blocks = nx / WIDE * WIDE;
    for y in 0..ny {
        for x in (0..blocks).step_by(WIDE) {
            let (mut a0, mut a1, mut a2, mut a3) = ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
            for j in 0..th {
                let start = (y + j) * sw + x;
                let win = &pixels[start..start + tw + WIDE - 1];
                let trow = &needle.zero_mean[j * tw..(j + 1) * tw];
                for (i, &t) in trow.iter().enumerate() {
                    let src = &win[i..i + WIDE];
                    for l in 0..LANES {
                        a0[l] += t * src[l];
                        a1[l] += t * src[LANES + l];
                        a2[l] += t * src[2 * LANES + l];
                        a3[l] += t * src[3 * LANES + l];
                    }
                }
            }
            cross[x..x + LANES].copy_from_slice(&a0);
            cross[x + LANES..x + 2 * LANES].copy_from_slice(&a1);
            cross[x + 2 * LANES..x + 3 * LANES].copy_from_slice(&a2);
            cross[x + 3 * LANES..x + 4 * LANES].copy_from_slice(&a3);
        }
        for (x, c) in cross.iter_mut().enumerate().skip(blocks) {
            let mut acc = 0f32;
            for j in 0..th {
                let row = &pixels[(y + j) * sw + x..(y + j) * sw + x + tw];
                let trow = &needle.zero_mean[j * tw..(j + 1) * tw];
                acc += trow.iter().zip(row).map(|(&t, &s)| t * s).sum::<f32>();
            }
            *c = acc;
        }
        for x in 0..nx {
            let s = rect_sum(&sum, x, y);
            let var = rect_sum(&sq, x, y) - s * s / n;
            scores[y * nx + x] = zncc(cross[x] as f64, var, needle.norm);
        }
    }
    ScoreMap { width: nx, height: ny, scores }
}

/// ZNCC from the correlation with the zero-mean needle, the window's sum of
/// squared deviations and the needle's norm; 0 for a flat window.
#[inline(always)]
fn zncc(cross: f64, window_var: f64, needle_norm: f64) -> f32 {
    if window_var <= 1e-6 {
        return 0.0;
    }
    (cross / (window_var.sqrt() * needle_norm)).clamp(-1.0, 1.0) as f32
}

/// Exact ZNCC at one position (cross-correlation in f32 per row, window sums
/// exact in integers).
#[inline(always)]
fn zncc_at(screen: &ScreenLevel, needle: &NeedleLevel, x: usize, y: usize) -> f32 {
    let (tw, th) = (needle.width, needle.height);
    let sw = screen.gray.width() as usize;
    let (mut cross, mut s, mut sq) = (0f64, 0u64, 0u64);
    for j in 0..th {
        let start = (y + j) * sw + x;
        let row = &screen.centred[start..start + tw];
        let bytes = &screen.gray.pixels()[start..start + tw];
        let trow = &needle.zero_mean[j * tw..(j + 1) * tw];
        let mut lanes = [0f32; LANES];
        let (rc, tc) = (row.chunks_exact(LANES), trow.chunks_exact(LANES));
        let (rr, tr) = (rc.remainder(), tc.remainder());
        for (r8, t8) in rc.zip(tc) {
            for l in 0..LANES {
                lanes[l] += t8[l] * r8[l];
            }
        }
        let tail: f32 = rr.iter().zip(tr).map(|(&v, &t)| t * v).sum();
        cross += lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64;
        if let Some(used) = &needle.used {
            for (&v, &u) in bytes.iter().zip(&used[j * tw..(j + 1) * tw]) {
                if u {
                    s += v as u64;
                    sq += v as u64 * v as u64;
                }
            }
            continue;
        }
        // u32 partial sums cannot overflow within 16384 pixels.
        for part in bytes.chunks(16384) {
            let (mut rs, mut rq) = (0u32, 0u32);
            for &v in part {
                rs += v as u32;
                rq += v as u32 * v as u32;
            }
            s += rs as u64;
            sq += rq as u64;
        }
    }
    let n = needle.count as f64;
    let (s, sq) = (s as f64, sq as f64);
    zncc(cross, sq - s * s / n, needle.norm)
}

/// The `beam` best local maxima, at least half a needle apart.
fn best_peaks(map: &ScoreMap, beam: usize, needle: &NeedleLevel) -> Vec<((usize, usize), f32)> {
    let (w, h) = (map.width, map.height);
    let at = |x: usize, y: usize| map.scores[y * w + x];
    let mut peaks = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let v = at(x, y);
            if v <= 0.0 {
                continue;
            }
            let mut is_peak = true;
            'n: for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    if at(nx, ny) > v {
                        is_peak = false;
                        break 'n;
                    }
                }
            }
            if is_peak {
                peaks.push(((x, y), v));
            }
        }
    }
    peaks.sort_by(|a, b| b.1.total_cmp(&a.1));
    let spacing = (needle.width.min(needle.height) / 4).max(1);
    let best = peaks.first().map_or(0.0, |p| p.1);
    let mut kept: Vec<((usize, usize), f32)> = Vec::with_capacity(beam);
    for p in peaks {
        let tied = p.1 >= best - TIE_MARGIN && kept.len() < beam * TIE_CAP;
        if kept.len() >= beam && !tied {
            break;
        }
        let close = kept.iter().any(|&((kx, ky), _)| kx.abs_diff(p.0.0) < spacing && ky.abs_diff(p.0.1) < spacing);
        if !close {
            kept.push(p);
        }
    }
    if kept.is_empty() {
        kept.push(((0, 0), 0.0));
    }
    kept
}

/// The largest mean over `BLOCK` x `BLOCK` blocks of the per-pixel largest
/// channel difference between `needle` and `screen` inside `rect` (255 when the
/// rectangle does not fit).
fn block_difference(screen: &Frame, needle: &Frame, mask: Option<&[bool]>, rect: Rect) -> f64 {
    let Some(patch) = screen.crop(rect) else {
        return 255.0;
    };
    if patch.width() != needle.width() || patch.height() != needle.height() {
        return 255.0;
    }
    let (w, h) = (needle.width(), needle.height());
    let (bw, bh) = (w.div_ceil(BLOCK) as usize, h.div_ceil(BLOCK) as usize);
    let mut sums = vec![0u32; bw * bh];
    let mut counts = vec![0u32; bw * bh];
    for (i, (p, q)) in patch.pixels().chunks_exact(4).zip(needle.pixels().chunks_exact(4)).enumerate() {
        if mask.is_some_and(|m| m.get(i).copied().unwrap_or(false)) {
            continue;
        }
        let (x, y) = (i as u32 % w, i as u32 / w);
        let b = (y / BLOCK) as usize * bw + (x / BLOCK) as usize;
        let d = (0..3).map(|c| p[c].abs_diff(q[c])).max().unwrap_or(0);
        sums[b] += d as u32;
        counts[b] += 1;
    }
    sums.iter().zip(&counts).filter(|(_, c)| **c > 0).map(|(&s, &c)| s as f64 / c as f64).fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(w: u32, h: u32, seed: u32) -> Frame {
        let mut f = Frame::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let v = ((x.wrapping_mul(7919) ^ y.wrapping_mul(104729) ^ seed).wrapping_mul(2654435761) >> 24) as u8;
                f.set_rgb(x, y, [v, v / 2, 255 - v]);
            }
        }
        f
    }

    #[test]
    fn finds_an_exact_patch_at_every_offset_parity() {
        let screen = pattern(300, 200, 1);
        for (x, y) in [(0, 0), (37, 81), (150, 13), (251, 159)] {
            let needle = Needle::from_screen(&screen, Rect::new(x, y, 49, 41)).unwrap();
            let m = find_template(&screen, &needle, &MatchOptions::default()).unwrap();
            assert!(m.found, "{m:?}");
            assert_eq!(m.rect, Rect::new(x, y, 49, 41));
            assert!(m.score > 0.999);
            assert_eq!(m.block_difference, 0.0);
        }
    }

    #[test]
    fn flat_needles_and_bad_sizes_are_errors() {
        let mut flat = Frame::new(20, 10);
        for y in 0..10 {
            for x in 0..20 {
                flat.set_rgb(x, y, [90, 90, 90]);
            }
        }
        assert_eq!(Needle::new(&flat).unwrap_err(), TemplateError::FlatNeedle { luma: 90 });
        assert_eq!(Needle::new(&Frame::new(0, 5)).unwrap_err(), TemplateError::EmptyNeedle);
        let needle = Needle::new(&pattern(50, 50, 3)).unwrap();
        let small = pattern(40, 100, 4);
        assert!(matches!(
            find_template(&small, &needle, &MatchOptions::default()),
            Err(TemplateError::NeedleTooLarge { .. })
        ));
        let opts = MatchOptions { region: Some(Rect::new(500, 0, 10, 10)), ..Default::default() };
        assert!(matches!(find_template(&small, &needle, &opts), Err(TemplateError::RegionOutside { .. })));
    }

    #[test]
    fn flat_screen_scores_zero() {
        let screen = Frame::new(100, 100);
        let needle = Needle::new(&pattern(20, 20, 5)).unwrap();
        let m = find_template(&screen, &needle, &MatchOptions::default()).unwrap();
        assert_eq!(m.score, 0.0);
        assert!(!m.found);
    }
}
