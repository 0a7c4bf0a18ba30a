//! Coverage of a requested screen area by fresh update rectangles: the
//! bookkeeping behind [`VncClient::capture`](crate::rfb::VncClient::capture).
//!
//! A capture is done when every pixel of the area has been written by an
//! update that began arriving after its request was sent. Servers may split
//! the answer over several updates and rectangles may overlap, so coverage is
//! tracked per pixel, with per-row counts to skip finished rows quickly.

use crate::geometry::Rect;

/// Which pixels of a `width` x `height` area have been covered.
#[derive(Debug, Clone)]
pub struct Coverage {
    width: u32,
    height: u32,
    covered: Vec<bool>,
    row_counts: Vec<u32>,
    remaining: u64,
}

impl Coverage {
    pub fn new(width: u32, height: u32) -> Coverage {
        Coverage {
            width,
            height,
            covered: vec![false; width as usize * height as usize],
            row_counts: vec![0; height as usize],
            remaining: u64::from(width) * u64::from(height),
        }
    }

    /// Start over for an area of a new size (after a DesktopSize change).
    pub fn reset(&mut self, width: u32, height: u32) {
        *self = Coverage::new(width, height);
    }

    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Mark the pixels of `rect` (clipped to the area) as covered.
    pub fn mark(&mut self, rect: Rect) {
        let Some(r) = rect.intersect(&Rect::screen(self.width, self.height)) else {
            return;
        };
        for y in r.y..r.bottom() {
            let row = y as usize;
            if self.row_counts[row] == self.width {
                continue;
            }
            let start = row * self.width as usize + r.x as usize;
            let mut newly = 0u32;
            for cell in &mut self.covered[start..start + r.w as usize] {
                if !*cell {
                    *cell = true;
                    newly += 1;
                }
            }
            self.row_counts[row] += newly;
            self.remaining -= u64::from(newly);
        }
    }

    pub fn is_complete(&self) -> bool {
        self.remaining == 0
    }

    /// Fraction covered, for error messages.
    pub fn fraction(&self) -> f64 {
        let total = u64::from(self.width) * u64::from(self.height);
        if total == 0 { 1.0 } else { 1.0 - self.remaining as f64 / total as f64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_and_split_rects_complete_exactly() {
        let mut c = Coverage::new(10, 4);
        c.mark(Rect::new(0, 0, 6, 4));
        c.mark(Rect::new(4, 0, 4, 2)); // overlaps
        assert!(!c.is_complete());
        c.mark(Rect::new(6, 2, 4, 2));
        assert!(!c.is_complete()); // (8..10, 0..2) still missing
        assert!((c.fraction() - 36.0 / 40.0).abs() < 1e-9);
        c.mark(Rect::new(8, 0, 100, 2)); // clipped
        assert!(c.is_complete());
        c.reset(3, 3);
        assert_eq!(c.size(), (3, 3));
        assert!(!c.is_complete());
        c.mark(Rect::new(0, 0, 3, 3));
        assert!(c.is_complete());
        assert!(Coverage::new(0, 0).is_complete());
    }
}
