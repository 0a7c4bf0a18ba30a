//! smoke: visual smoke tests of desktop apps and OS images over VNC.
//!
//! A run flows one way: inventory + scenario -> validated plan
//! ([`scenario::plan`]) -> machine ([`backend`]) -> runner ([`runner`], with
//! [`rfb`], [`input`] and [`vision`]) -> events ([`events`]) -> results
//! ([`results`], [`recorder`]). See docs/ARCHITECTURE.md.
pub mod backend;
pub mod console;
pub mod doctor;
pub mod events;
pub mod fingerprint;
pub mod frame;
pub mod geometry;
pub mod guest;
pub mod history;
pub mod http;
pub mod input;
pub mod inventory;
pub mod matrix;
pub mod notify;
pub mod project;
pub mod recorder;
pub mod references;
pub mod report;
pub mod results;
pub mod rfb;
pub mod run;
pub mod runner;
pub mod scenario;
pub mod secrets;
pub mod ssh;
pub mod vision;
pub mod vlm;
pub mod vm;
pub mod vnc_verbs;
