//! Marks drawn on evidence screenshots: where a click went, which region a
//! check looked at.

use crate::frame::Frame;
use crate::geometry::{Point, Rect};

const RED: [u8; 3] = [230, 20, 40];
const YELLOW: [u8; 3] = [250, 200, 0];

/// A red ring with a cross at `p` (a click).
pub fn mark_click(frame: &mut Frame, p: Point) {
    let (w, h) = (frame.width() as i64, frame.height() as i64);
    let (cx, cy) = (p.x as i64, p.y as i64);
    let mut put = |x: i64, y: i64, c: [u8; 3]| {
        if x >= 0 && y >= 0 && x < w && y < h {
            frame.set_rgb(x as u32, y as u32, c);
        }
    };
    for r in [11i64, 12] {
        // ring
        let steps = 8 * r;
        for i in 0..steps {
            let a = i as f64 / steps as f64 * std::f64::consts::TAU;
            put(cx + (a.cos() * r as f64).round() as i64, cy + (a.sin() * r as f64).round() as i64, RED);
        }
    }
    for d in -6..=6 {
        put(cx + d, cy, RED);
        put(cx, cy + d, RED);
    }
}

/// A yellow outline around `r` (the region a check looked at).
pub fn mark_region(frame: &mut Frame, r: Rect) {
    let Some(r) = r.intersect(&frame.bounds()) else { return };
    for x in r.x..r.right() {
        frame.set_rgb(x, r.y, YELLOW);
        frame.set_rgb(x, r.bottom() - 1, YELLOW);
    }
    for y in r.y..r.bottom() {
        frame.set_rgb(r.x, y, YELLOW);
        frame.set_rgb(r.right() - 1, y, YELLOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_stay_inside_the_frame() {
        let mut f = Frame::new(20, 20);
        mark_click(&mut f, Point::new(0, 0));
        mark_click(&mut f, Point::new(19, 19));
        mark_region(&mut f, Rect::new(5, 5, 100, 100));
        assert_eq!(f.rgb(0, 0), RED);
        assert_eq!(f.rgb(5, 10), YELLOW);
    }
}
