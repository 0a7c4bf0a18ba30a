//! Input: what a scenario's `key`, `type`, `click` and `move` steps turn into.
//!
//! This layer is pure: it turns key combos and text into sequences of keysym
//! presses and releases (with explicit Shift for shifted characters, as QEMU and
//! GNOME's VNC path need) and mouse actions into pointer events. The runner
//! sends them over RFB.
pub mod keys;
pub mod keysym;
pub mod layout;
pub mod pointer;
pub mod text;

pub use keys::{KeyCombo, KeyError};
pub use layout::Layout;
pub use pointer::{Button, PointerEvent};
pub use text::{KeyEvent, type_text};
