//! Mouse buttons and pointer events as RFB carries them (a button mask).

use crate::geometry::Point;

/// A mouse button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Button {
    Left,
    Middle,
    Right,
}

impl Button {
    /// The bit of this button in an RFB pointer-event mask.
    pub fn mask(self) -> u8 {
        match self {
            Button::Left => 1,
            Button::Middle => 2,
            Button::Right => 4,
        }
    }

    pub fn parse(s: &str) -> Option<Button> {
        match s.to_ascii_lowercase().as_str() {
            "left" => Some(Button::Left),
            "middle" => Some(Button::Middle),
            "right" => Some(Button::Right),
            _ => None,
        }
    }
}

/// A pointer position with the buttons held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointerEvent {
    pub at: Point,
    pub buttons: u8,
}

/// The events of a click at `at`: move there, press, release (twice for a
/// double click).
pub fn click(at: Point, button: Button, double: bool) -> Vec<PointerEvent> {
    let mut out = vec![PointerEvent { at, buttons: 0 }];
    for _ in 0..if double { 2 } else { 1 } {
        out.push(PointerEvent { at, buttons: button.mask() });
        out.push(PointerEvent { at, buttons: 0 });
    }
    out
}

/// A scroll direction: wheel buttons 4 (up), 5 (down), 6 (left), 7 (right).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScrollDirection {
    Up,
    Down,
    Left,
    Right,
}

pub const SCROLL_DIRECTIONS: &[&str] = &["up", "down", "left", "right"];

impl ScrollDirection {
    pub fn parse(s: &str) -> Option<ScrollDirection> {
        match s.to_ascii_lowercase().as_str() {
            "up" => Some(ScrollDirection::Up),
            "down" => Some(ScrollDirection::Down),
            "left" => Some(ScrollDirection::Left),
            "right" => Some(ScrollDirection::Right),
            _ => None,
        }
    }

    /// The bit of this wheel button in an RFB pointer-event mask.
    pub fn mask(self) -> u8 {
        match self {
            ScrollDirection::Up => 1 << 3,
            ScrollDirection::Down => 1 << 4,
            ScrollDirection::Left => 1 << 5,
            ScrollDirection::Right => 1 << 6,
        }
    }
}

/// The events of `count` wheel clicks at `at`: a press and a release each.
pub fn scroll(at: Point, direction: ScrollDirection, count: u32) -> Vec<PointerEvent> {
    let mut out = Vec::with_capacity(count as usize * 2);
    for _ in 0..count {
        out.push(PointerEvent { at, buttons: direction.mask() });
        out.push(PointerEvent { at, buttons: 0 });
    }
    out
}

/// How the pointer travels between two points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathKind {
    /// A straight line.
    #[default]
    Linear,
    /// A gentle curve (a quadratic Bezier whose control point lies off the
    /// line by a fifth of its length), slow at both ends, like a hand.
    Bezier,
}

pub const PATH_KINDS: &[&str] = &["linear", "bezier"];

impl PathKind {
    pub fn parse(s: &str) -> Option<PathKind> {
        match s.to_ascii_lowercase().as_str() {
            "linear" | "line" => Some(PathKind::Linear),
            "bezier" | "curve" => Some(PathKind::Bezier),
            _ => None,
        }
    }
}

/// The points of a path from `from` to `to` in `steps` moves (the first
/// point is after `from`; the last is exactly `to`). Consecutive duplicates
/// are dropped.
pub fn path(from: Point, to: Point, kind: PathKind, steps: u32) -> Vec<Point> {
    let steps = steps.max(1);
    let (x0, y0) = (f64::from(from.x), f64::from(from.y));
    let (x1, y1) = (f64::from(to.x), f64::from(to.y));
    // control point: off the middle of the line, perpendicular to it
    let (cx, cy) = ((x0 + x1) / 2.0 - (y1 - y0) / 5.0, (y0 + y1) / 2.0 + (x1 - x0) / 5.0);
    let mut out: Vec<Point> = Vec::with_capacity(steps as usize);
    for i in 1..=steps {
        let t = f64::from(i) / f64::from(steps);
        let (x, y) = match kind {
            PathKind::Linear => (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t),
            PathKind::Bezier => {
                // ease in and out along the curve
                let t = t * t * (3.0 - 2.0 * t);
                let u = 1.0 - t;
                (u * u * x0 + 2.0 * u * t * cx + t * t * x1, u * u * y0 + 2.0 * u * t * cy + t * t * y1)
            }
        };
        let p = Point::new(x.round().clamp(0.0, 65535.0) as u32, y.round().clamp(0.0, 65535.0) as u32);
        if out.last() != Some(&p) && p != from {
            out.push(p);
        }
    }
    if out.last() != Some(&to) {
        out.push(to);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_end_exactly_and_curves_leave_the_line() {
        let (a, b) = (Point::new(10, 10), Point::new(110, 10));
        let line = path(a, b, PathKind::Linear, 10);
        assert_eq!(line.len(), 10);
        assert_eq!(line[0], Point::new(20, 10));
        assert_eq!(*line.last().unwrap(), b);
        assert!(line.iter().all(|p| p.y == 10));
        let curve = path(a, b, PathKind::Bezier, 20);
        assert_eq!(*curve.last().unwrap(), b);
        assert!(curve.iter().any(|p| p.y > 15), "{curve:?}");
        // a zero-length path still ends at the target
        assert_eq!(path(a, a, PathKind::Bezier, 5), vec![a]);
    }

    #[test]
    fn scroll_presses_wheel_buttons() {
        let ev = scroll(Point::new(1, 2), ScrollDirection::Down, 3);
        assert_eq!(ev.len(), 6);
        assert_eq!(ev[0].buttons, 16);
        assert_eq!(ev[1].buttons, 0);
        assert_eq!(scroll(Point::new(1, 2), ScrollDirection::Right, 1)[0].buttons, 64);
    }

    #[test]
    fn double_click_presses_twice() {
        let ev = click(Point::new(3, 4), Button::Right, true);
        assert_eq!(ev.len(), 5);
        assert_eq!(ev[1].buttons, 4);
        assert_eq!(ev[2].buttons, 0);
    }
}
