//! Has the screen changed, and has it stopped changing? The measures behind
//! `wait_change` and `wait_still`.
//!
//! Both count CHANGED PIXELS (a pixel whose largest channel difference exceeds a
//! tolerance), never a mean: a mean over a screen hides a small change (one
//! digit is 0.01 % of 1280x720) and lets noise add up.
//!
//! Blinking is told apart from change: the screen is cut into 16x16 cells
//! (aligned to the screen, clipped to the region) and each cell's content is
//! remembered (as a hash). A cell that flips back and forth between exactly two
//! contents, at least three times (A B A B), is a blinker (a text caret, a
//! blinking cursor, a pulsing LED): its two contents are no change from then
//! on, any other content is. A cell that shows a third content before it was
//! found to blink is not a blinker: a spinner or a progress bar is change. When
//! a cell is found to blink, its earlier flips are forgiven, so a caret does not
//! keep `wait_still` waiting. Blinkers found by one watcher can be handed to the
//! next ([`ChangeWatcher::blinkers`], [`ChangeWatcher::learn`]), so a caret seen
//! blinking once is known from the start of the next wait.

use std::time::Duration;

use crate::frame::Frame;
use crate::geometry::Rect;

/// Side of the cells blinking is judged on.
pub const CELL: u32 = 16;
/// Flips between two contents after which a cell counts as blinking.
const BLINK_FLIPS: u32 = 3;

/// Pixels inside `region` of `a` and `b` (same size) whose largest channel
/// difference exceeds `tolerance`; `None` when the sizes differ.
pub fn changed_pixels(a: &Frame, b: &Frame, region: Option<Rect>, tolerance: u8) -> Option<u64> {
    if (a.width(), a.height()) != (b.width(), b.height()) {
        return None;
    }
    let r = region.unwrap_or(a.bounds()).intersect(&a.bounds())?;
    let stride = a.width() as usize * 4;
    let mut count = 0u64;
    for y in r.y..r.bottom() {
        let start = y as usize * stride + r.x as usize * 4;
        let end = start + r.w as usize * 4;
        let (ra, rb) = (a.pixels().get(start..end)?, b.pixels().get(start..end)?);
        if ra == rb {
            continue;
        }
        for (p, q) in ra.chunks_exact(4).zip(rb.chunks_exact(4)) {
            let d = p[0].abs_diff(q[0]).max(p[1].abs_diff(q[1])).max(p[2].abs_diff(q[2]));
            count += u64::from(d > tolerance);
        }
    }
    Some(count)
}

#[derive(Debug, Clone, Default)]
struct Cell {
    /// The contents seen (at most 2 are remembered; a third makes it "busy").
    states: Vec<u64>,
    current: u64,
    flips: u32,
    busy: bool,
    /// When the cell last changed, unless it is a blinker.
    last_change: Option<Duration>,
}

impl Cell {
    fn blinking(&self) -> bool {
        !self.busy && self.flips >= BLINK_FLIPS
    }
}

/// What one observation found.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Changed pixels since the previous frame, outside blinking cells.
    pub changed_pixels: u64,
    /// How long the screen (outside blinkers) has not changed.
    pub still_for: Duration,
    /// Cells found to blink (frame coordinates).
    pub blinking: Vec<Rect>,
}

/// Watches a sequence of frames for change, masking blinkers.
#[derive(Debug)]
pub struct ChangeWatcher {
    region: Rect,
    tolerance: u8,
    /// The cells, screen-aligned and clipped to the region, row by row.
    rects: Vec<Rect>,
    cells: Vec<Cell>,
    last: Frame,
    started: Duration,
}

impl ChangeWatcher {
    /// Start from `first`, seen at time `t` (any monotonic clock), watching
    /// `region` (the whole frame when `None`).
    pub fn new(first: &Frame, region: Option<Rect>, tolerance: u8, t: Duration) -> ChangeWatcher {
        let region = region.and_then(|r| r.intersect(&first.bounds())).unwrap_or(first.bounds());
        let mut rects = Vec::new();
        for cy in region.y / CELL..region.bottom().div_ceil(CELL) {
            for cx in region.x / CELL..region.right().div_ceil(CELL) {
                if let Some(r) = Rect::new(cx * CELL, cy * CELL, CELL, CELL).intersect(&region) {
                    rects.push(r);
                }
            }
        }
        let mut w = ChangeWatcher {
            region,
            tolerance,
            cells: vec![Cell::default(); rects.len()],
            rects,
            last: first.clone(),
            started: t,
        };
        let hashes = w.hashes(first);
        for (c, h) in w.cells.iter_mut().zip(hashes) {
            c.states = vec![h];
            c.current = h;
        }
        w
    }

    pub fn region(&self) -> Rect {
        self.region
    }

    fn cell_rect(&self, i: usize) -> Rect {
        self.rects[i]
    }

    /// A hash of each cell's pixels.
    fn hashes(&self, frame: &Frame) -> Vec<u64> {
        self.rects.iter().map(|r| cell_hash(frame, *r)).collect()
    }

    /// The cells found to blink, each with its two contents (to hand to [`Self::learn`]).
    pub fn blinkers(&self) -> Vec<(Rect, Vec<u64>)> {
        self.cells.iter().zip(&self.rects).filter(|(c, _)| c.blinking()).map(|(c, r)| (*r, c.states.clone())).collect()
    }

    /// Take blinkers found earlier: a cell of the same rectangle that shows one
    /// of their contents now blinks from the start.
    pub fn learn(&mut self, known: &[(Rect, Vec<u64>)]) {
        for (r, states) in known {
            let Some(i) = self.rects.iter().position(|x| x == r) else { continue };
            let cell = &mut self.cells[i];
            if states.len() == 2 && states.contains(&cell.current) {
                cell.states = states.clone();
                cell.flips = cell.flips.max(BLINK_FLIPS);
                cell.busy = false;
                cell.last_change = None;
            }
        }
    }

    /// Take the next frame, seen at time `t`.
    pub fn observe(&mut self, frame: &Frame, t: Duration) -> Observation {
        if (frame.width(), frame.height()) != (self.last.width(), self.last.height()) {
            // A new screen size is change everywhere.
            *self = ChangeWatcher::new(frame, Some(self.region), self.tolerance, t);
            for c in &mut self.cells {
                c.last_change = Some(t);
            }
            return Observation {
                changed_pixels: frame.bounds().area(),
                still_for: Duration::ZERO,
                blinking: Vec::new(),
            };
        }
        let hashes = self.hashes(frame);
        let mut changed = 0u64;
        for (i, &h) in hashes.iter().enumerate() {
            if h == self.cells[i].current {
                continue;
            }
            let rect = self.cell_rect(i);
            let n = changed_pixels(&self.last, frame, Some(rect), self.tolerance).unwrap_or(0);
            let cell = &mut self.cells[i];
            cell.current = h;
            let known = cell.states.contains(&h);
            if !known {
                if cell.states.len() >= 2 {
                    // a third content: change, whether or not it blinked before
                    cell.busy = true;
                }
                cell.states.push(h);
            }
            cell.flips += 1;
            if n == 0 {
                continue; // within tolerance
            }
            if !cell.blinking() {
                cell.last_change = Some(t);
                changed += n;
            }
        }
        // Forgive the earlier flips of cells now known to blink.
        for c in &mut self.cells {
            if c.blinking() {
                c.last_change = None;
            }
        }
        self.last = frame.clone();
        let last_change = self.cells.iter().filter_map(|c| c.last_change).max().unwrap_or(self.started);
        Observation { changed_pixels: changed, still_for: t.saturating_sub(last_change), blinking: self.blinking() }
    }

    /// Rectangles of the cells found to blink.
    pub fn blinking(&self) -> Vec<Rect> {
        self.cells.iter().enumerate().filter(|(_, c)| c.blinking()).map(|(i, _)| self.cell_rect(i)).collect()
    }

    /// Pixels of `frame` that differ from `baseline` inside the region; a
    /// blinking cell counts only when it shows neither of its two contents.
    pub fn changed_since(&self, baseline: &Frame, frame: &Frame) -> u64 {
        if (baseline.width(), baseline.height()) != (frame.width(), frame.height()) {
            return frame.bounds().area();
        }
        self.rects
            .iter()
            .zip(&self.cells)
            .map(|(r, c)| {
                if c.blinking() && c.states.contains(&cell_hash(frame, *r)) {
                    return 0;
                }
                changed_pixels(baseline, frame, Some(*r), self.tolerance).unwrap_or(r.area())
            })
            .sum()
    }
}

/// FNV-1a over the cell's pixel rows, 8 bytes at a time.
fn cell_hash(frame: &Frame, r: Rect) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let stride = frame.width() as usize * 4;
    for y in r.y..r.bottom() {
        let start = y as usize * stride + r.x as usize * 4;
        let Some(row) = frame.pixels().get(start..start + r.w as usize * 4) else { continue };
        for word in row.chunks(8) {
            let mut v = [0u8; 8];
            v[..word.len()].copy_from_slice(word);
            h ^= u64::from_le_bytes(v);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen() -> Frame {
        let mut f = Frame::new(128, 64);
        for y in 0..64 {
            for x in 0..128 {
                f.set_rgb(x, y, [200, 200, 200]);
            }
        }
        f
    }

    fn draw(f: &mut Frame, r: Rect, rgb: [u8; 3]) {
        for y in r.y..r.bottom() {
            for x in r.x..r.right() {
                f.set_rgb(x, y, rgb);
            }
        }
    }

    #[test]
    fn counts_changed_pixels_not_means() {
        let a = screen();
        let mut b = a.clone();
        b.set_rgb(5, 5, [201, 200, 200]);
        b.set_rgb(6, 5, [0, 0, 0]);
        assert_eq!(changed_pixels(&a, &b, None, 0), Some(2));
        assert_eq!(changed_pixels(&a, &b, None, 1), Some(1));
        assert_eq!(changed_pixels(&a, &b, Some(Rect::new(100, 0, 10, 10)), 0), Some(0));
        assert_eq!(changed_pixels(&a, &Frame::new(1, 1), None, 0), None);
    }

    #[test]
    fn a_caret_is_masked_but_a_spinner_is_change() {
        let off = screen();
        let mut on = off.clone();
        draw(&mut on, Rect::new(20, 20, 2, 12), [0, 0, 0]);
        let ms = Duration::from_millis;
        let mut w = ChangeWatcher::new(&off, None, 0, ms(0));
        // First flips look like change...
        assert!(w.observe(&on, ms(500)).changed_pixels > 0);
        assert_eq!(w.observe(&off, ms(1000)).still_for, Duration::ZERO);
        // ...the third makes it a blinker, and its flips are forgiven.
        let o = w.observe(&on, ms(1500));
        assert_eq!(o.changed_pixels, 0);
        assert_eq!(o.blinking, vec![Rect::new(16, 16, 16, 16)]);
        assert_eq!(o.still_for, ms(1500));
        assert_eq!(w.changed_since(&off, &on), 0);
        // A real change elsewhere counts and restarts the still time.
        let mut moved = on.clone();
        draw(&mut moved, Rect::new(100, 40, 4, 4), [255, 0, 0]);
        let o = w.observe(&moved, ms(2000));
        assert_eq!((o.changed_pixels, o.still_for), (16, Duration::ZERO));
        assert_eq!(w.changed_since(&off, &moved), 16);
        // Typing into the caret's cell is a third content: change.
        let mut typed = on.clone();
        draw(&mut typed, Rect::new(24, 20, 6, 12), [0, 0, 0]);
        assert!(w.changed_since(&off, &typed) > 0);
        // A new watcher that learns the blinker masks it from the first frame.
        let mut next = ChangeWatcher::new(&on, None, 0, ms(0));
        next.learn(&w.blinkers());
        assert_eq!(next.observe(&off, ms(100)).changed_pixels, 0);
        assert_eq!(next.changed_since(&on, &off), 0);
        assert!(next.changed_since(&on, &typed) > 0);
        // Cells are aligned to the screen, clipped to the region.
        let r = ChangeWatcher::new(&off, Some(Rect::new(10, 10, 30, 8)), 0, ms(0));
        assert_eq!(
            r.rects,
            vec![
                Rect::new(10, 10, 6, 6),
                Rect::new(16, 10, 16, 6),
                Rect::new(32, 10, 8, 6),
                Rect::new(10, 16, 6, 2),
                Rect::new(16, 16, 16, 2),
                Rect::new(32, 16, 8, 2)
            ]
        );
        // A spinner shows a third state: never a blinker.
        let mut w = ChangeWatcher::new(&off, None, 0, ms(0));
        for (i, shade) in [10u8, 90, 170, 10, 90, 170, 10].iter().enumerate() {
            let mut f = off.clone();
            draw(&mut f, Rect::new(50, 10, 8, 8), [*shade, *shade, *shade]);
            let o = w.observe(&f, ms(100 * (i as u64 + 1)));
            assert!(o.changed_pixels > 0 && o.blinking.is_empty(), "{i}: {o:?}");
        }
    }
}
