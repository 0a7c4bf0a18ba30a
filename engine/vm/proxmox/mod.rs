//! The Proxmox VE backend: a VM on a PVE node, driven through the HTTP API
//! and seen through the node's VNC websocket.
//!
//! One concept per file:
//! - [`settings`]: the inventory's `proxmox:` block;
//! - [`tls`]: trusting the node's certificate (cluster CA or a pinned fingerprint);
//! - [`client`]: HTTP, token and ticket authentication, CSRF, ticket renewal;
//! - [`error`]: [`PveError`] with the API's message, status and a hint;
//! - [`tasks`]: UPIDs and waiting for tasks;
//! - [`api`]: typed calls on a VM (status, power, config, snapshots, clone);
//! - [`preflight`]: config checks (vga, tablet, machine);
//! - [`vnc`]: `vncproxy` and the websocket endpoint;
//! - [`backend`]: [`ProxmoxVm`], the [`crate::vm::VmBackend`] implementation.

pub mod api;
pub mod backend;
pub mod client;
pub mod error;
pub mod preflight;
pub mod settings;
pub mod tasks;
pub mod tls;
pub mod vnc;

pub use backend::ProxmoxVm;
pub use client::{ClientOptions, Credentials, PveClient};
pub use error::PveError;
pub use settings::ProxmoxSettings;
