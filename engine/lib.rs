//! smoke: visual smoke tests of desktop apps and OS images over VNC.
//!
//! A run flows one way: inventory + scenario -> validated plan
//! ([`scenario::plan`]) -> machine ([`backend`]) -> runner ([`runner`], with
//! [`rfb`], [`input`] and [`vision`]) -> events ([`events`]) -> results
//! ([`results`], [`recorder`]). See docs/ARCHITECTURE.md.
pub mod backend;
pub mod console;
pub mod events;
pub mod frame;
pub mod geometry;
pub mod input;
pub mod inventory;
pub mod project;
pub mod recorder;
pub mod references;
pub mod results;
pub mod rfb;
pub mod run;
pub mod runner;
pub mod scenario;
pub mod secrets;
pub mod vision;
