//! The VM's screen through Proxmox VE: `POST vncproxy` (websocket=1,
//! generate-password=1) makes the node listen on a port for one connection,
//! for 10 s, and answers a ticket and a one-time VNC password; the websocket
//!
//! `wss://HOST:8006/api2/json/nodes/{node}/qemu/{vmid}/vncwebsocket?port=P&vncticket=T`
//!
//! (same authentication as the API, subprotocol `binary`) then carries plain
//! RFB 3.8 with VNC authentication by that password. The ticket is bound to
//! user, VM and port and lives 40 s: every connection needs a fresh proxy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::api::VmRef;
use super::client::{Hidden, PveClient, encode_component};
use super::error::PveError;
use super::tasks::Upid;
use super::tls::Trust;
use crate::backend::VncAccess;
use crate::rfb::renewal::{AccessRenewal, FreshAccess, RenewFuture};
use crate::secrets::SecretStore;

/// The node waits this long for the websocket after `vncproxy`.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// A `vncproxy` answer.
#[derive(Debug, Clone)]
pub struct VncProxy {
    pub port: u16,
    pub user: String,
    /// `vncticket` for the websocket URL.
    pub ticket: Hidden,
    /// The one-time VNC password.
    pub password: Hidden,
    /// The proxy task (it ends when the connection closes).
    pub upid: Upid,
    /// The node's CA certificate (PEM), as PVE sends it.
    pub cert: String,
    /// When the proxy was opened: the websocket must connect within [`CONNECT_WITHIN`].
    pub opened: Instant,
}

/// `POST vncproxy` with `websocket=1` and `generate-password=1`.
pub async fn open_proxy(client: &PveClient, vm: &VmRef) -> Result<VncProxy, PveError> {
    let form = [("websocket", "1".to_string()), ("generate-password", "1".to_string())];
    let d = client.post(&vm.path("/vncproxy"), &form).await?;
    let what = format!("vncproxy of VM {}", vm.vmid);
    let missing = |f: &str| PveError::Decode { what: what.clone(), detail: format!("no '{f}' in the answer") };
    let text = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_string);
    let port = d
        .get("port")
        .and_then(|p| p.as_u64().or_else(|| p.as_str().and_then(|s| s.parse().ok())))
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| missing("port"))?;
    let ticket = Hidden::new(text("ticket").ok_or_else(|| missing("ticket"))?);
    let password = Hidden::new(text("password").ok_or_else(|| PveError::Decode {
        what: what.clone(),
        detail: "no 'password': this PVE is too old for generate-password".into(),
    })?);
    let upid = Upid::parse(&text("upid").ok_or_else(|| missing("upid"))?)?;
    Ok(VncProxy {
        port,
        user: text("user").unwrap_or_default(),
        ticket,
        password,
        upid,
        cert: text("cert").unwrap_or_default(),
        opened: Instant::now(),
    })
}

/// The websocket URL for a proxy (it contains the ticket: never log it).
pub fn websocket_url(client: &PveClient, vm: &VmRef, proxy: &VncProxy) -> String {
    let api = client.api_url().replacen("https://", "wss://", 1);
    format!(
        "{api}{}?port={}&vncticket={}",
        vm.path("/vncwebsocket"),
        proxy.port,
        encode_component(proxy.ticket.expose())
    )
}

/// Everything a websocket transport needs to reach the screen.
#[derive(Clone)]
pub struct VncWebSocket {
    /// `wss://...` with the ticket in the query (secret).
    pub url: String,
    /// Authentication (`Cookie` or `Authorization`); values secret.
    pub headers: Vec<(String, String)>,
    /// The VNC password (secret).
    pub password: String,
    pub opened: Instant,
}

impl std::fmt::Debug for VncWebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("VncWebSocket")
            .field("url", &self.url.split('?').next().unwrap_or_default())
            .field("headers", &names)
            .finish_non_exhaustive()
    }
}

/// Open a proxy and describe the websocket to it.
pub async fn websocket(client: &PveClient, vm: &VmRef) -> Result<(VncWebSocket, VncProxy), PveError> {
    let proxy = open_proxy(client, vm).await?;
    // the transport asks for the `binary` subprotocol itself
    let headers = client.auth_headers().await?;
    let ws = VncWebSocket {
        url: websocket_url(client, vm, &proxy),
        headers,
        password: proxy.password.expose().to_string(),
        opened: proxy.opened,
    };
    Ok((ws, proxy))
}

/// A new proxy and the access through it, as the RFB client takes it:
/// `wss://` with the API's authentication headers and certificate trust. Its
/// ticket, password and headers are registered with `secrets` for redaction.
pub async fn access(
    client: &PveClient,
    vm: &VmRef,
    trust: &Trust,
    secrets: &SecretStore,
) -> Result<VncAccess, PveError> {
    let (ws, _proxy) = websocket(client, vm).await?;
    secrets.remember(&ws.password);
    if let Some((_, ticket)) = ws.url.split_once("vncticket=") {
        secrets.remember(ticket);
    }
    for (_, v) in &ws.headers {
        secrets.remember(v);
    }
    let url = crate::rfb::websocket::WebSocketUrl::parse(&ws.url)
        .map_err(|e| PveError::Decode { what: "the VNC websocket URL".into(), detail: e.to_string() })?;
    let tls = crate::rfb::TlsSettings {
        ca_file: trust.ca_file(),
        fingerprint_sha256: trust.fingerprint_text(),
        server_name: None,
    };
    let endpoint =
        crate::rfb::Endpoint::WebSocket(crate::rfb::transport::WebSocketEndpoint { url, headers: ws.headers, tls });
    Ok(VncAccess::plain(endpoint, Some(ws.password)))
}

/// Reconnects to a VM's screen through a new `vncproxy` each time (a
/// ticket admits one connection; a rollback restarts QEMU and ends it).
pub struct Renewal {
    pub client: Arc<PveClient>,
    pub vm: VmRef,
    pub trust: Trust,
    pub secrets: SecretStore,
}

impl AccessRenewal for Renewal {
    fn renew(&self) -> RenewFuture<'_> {
        Box::pin(async move {
            let a = access(&self.client, &self.vm, &self.trust, &self.secrets).await.map_err(|e| {
                crate::rfb::RfbError::Transport { what: format!("a new vncproxy for VM {}: {e}", self.vm.vmid) }
            })?;
            tracing::info!(vmid = self.vm.vmid, "new vncproxy for the reconnect");
            Ok(FreshAccess { endpoint: a.endpoint, password: a.password })
        })
    }
}
