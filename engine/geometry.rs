//! Screen geometry: points and rectangles in framebuffer pixel coordinates.
//!
//! The origin is the top-left corner of the screen; `x` grows to the right and
//! `y` downwards. A [`Rect`] is half-open: it covers `x..x + w` and `y..y + h`.

use serde::{Deserialize, Serialize};

/// A pixel position on the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Point {
    pub x: u32,
    pub y: u32,
}

impl Point {
    pub const fn new(x: u32, y: u32) -> Self {
        Point { x, y }
    }
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}, {})", self.x, self.y)
    }
}

/// An axis-aligned rectangle of pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub const fn new(x: u32, y: u32, w: u32, h: u32) -> Self {
        Rect { x, y, w, h }
    }

    /// The rectangle covering a whole `width` x `height` screen.
    pub const fn screen(width: u32, height: u32) -> Self {
        Rect { x: 0, y: 0, w: width, h: height }
    }

    pub const fn right(&self) -> u32 {
        self.x.saturating_add(self.w)
    }

    pub const fn bottom(&self) -> u32 {
        self.y.saturating_add(self.h)
    }

    pub const fn area(&self) -> u64 {
        self.w as u64 * self.h as u64
    }

    pub const fn is_empty(&self) -> bool {
        self.w == 0 || self.h == 0
    }

    /// The centre pixel (rounded towards the origin).
    pub const fn center(&self) -> Point {
        Point { x: self.x + self.w / 2, y: self.y + self.h / 2 }
    }

    pub const fn contains(&self, p: Point) -> bool {
        p.x >= self.x && p.y >= self.y && p.x < self.right() && p.y < self.bottom()
    }

    /// True when `other` lies entirely inside `self`.
    pub const fn contains_rect(&self, other: &Rect) -> bool {
        other.x >= self.x && other.y >= self.y && other.right() <= self.right() && other.bottom() <= self.bottom()
    }

    /// The overlap of two rectangles, or `None` when they do not overlap.
    pub fn intersect(&self, other: &Rect) -> Option<Rect> {
        let x = self.x.max(other.x);
        let y = self.y.max(other.y);
        let r = self.right().min(other.right());
        let b = self.bottom().min(other.bottom());
        (r > x && b > y).then(|| Rect::new(x, y, r - x, b - y))
    }

    /// The smallest rectangle covering both.
    pub fn union(&self, other: &Rect) -> Rect {
        if self.is_empty() {
            return *other;
        }
        if other.is_empty() {
            return *self;
        }
        let x = self.x.min(other.x);
        let y = self.y.min(other.y);
        let r = self.right().max(other.right());
        let b = self.bottom().max(other.bottom());
        Rect::new(x, y, r - x, b - y)
    }

    /// Grow by `margin` pixels on every side, clipped to `bounds`.
    pub fn expand(&self, margin: u32, bounds: &Rect) -> Rect {
        let x = self.x.saturating_sub(margin).max(bounds.x);
        let y = self.y.saturating_sub(margin).max(bounds.y);
        let r = self.right().saturating_add(margin).min(bounds.right());
        let b = self.bottom().saturating_add(margin).min(bounds.bottom());
        Rect::new(x, y, r.saturating_sub(x), b.saturating_sub(y))
    }
}

impl std::fmt::Display for Rect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{} {}x{}", self.x, self.y, self.w, self.h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersect_and_union() {
        let a = Rect::new(0, 0, 10, 10);
        let b = Rect::new(5, 5, 10, 10);
        assert_eq!(a.intersect(&b), Some(Rect::new(5, 5, 5, 5)));
        assert_eq!(a.union(&b), Rect::new(0, 0, 15, 15));
        assert_eq!(a.intersect(&Rect::new(10, 0, 5, 5)), None);
        assert!(a.contains(Point::new(9, 9)));
        assert!(!a.contains(Point::new(10, 9)));
        assert_eq!(Rect::new(2, 2, 4, 4).expand(5, &a), a);
    }
}
