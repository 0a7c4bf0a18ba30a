//! smoke: visual smoke tests of desktop apps and OS images over VNC.
pub mod frame;
pub mod geometry;
pub mod input;
pub mod inventory;
pub mod project;
pub mod scenario;
pub mod secrets;
