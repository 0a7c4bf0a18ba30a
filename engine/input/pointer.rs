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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_click_presses_twice() {
        let ev = click(Point::new(3, 4), Button::Right, true);
        assert_eq!(ev.len(), 5);
        assert_eq!(ev[1].buttons, 4);
        assert_eq!(ev[2].buttons, 0);
    }
}
