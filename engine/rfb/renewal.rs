//! Fresh access for a reconnect. Some servers admit an address or a
//! password once: Proxmox VE's `vncproxy` ticket and its one-time VNC
//! password are good for a single websocket, and a snapshot rollback there
//! restarts QEMU and ends every connection. A client given an
//! [`AccessRenewal`] asks it for a new endpoint and password before each
//! reconnect attempt instead of dialling the address it started with.

use std::future::Future;
use std::pin::Pin;

use super::error::RfbError;
use super::transport::Endpoint;

/// Where and how to connect next time.
#[derive(Clone)]
pub struct FreshAccess {
    pub endpoint: Endpoint,
    /// The VNC password for this connection (secret; never printed).
    pub password: Option<String>,
}

impl std::fmt::Debug for FreshAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreshAccess")
            .field("endpoint", &self.endpoint.to_string())
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The future [`AccessRenewal::renew`] returns.
pub type RenewFuture<'a> = Pin<Box<dyn Future<Output = Result<FreshAccess, RfbError>> + Send + 'a>>;

/// Hands out a new access for each connection (one call per attempt).
pub trait AccessRenewal: Send + Sync {
    /// A new endpoint and password. A failed renewal counts as a failed
    /// attempt: it is tried again until the reconnect's time runs out, and
    /// the last error is in the final message.
    fn renew(&self) -> RenewFuture<'_>;
}
