//! Where a VNC server listens and how to get a byte stream to it.
//!
//! The rest of the client only sees a [`BoxedStream`], a type-erased duplex byte
//! stream: plain TCP, a Unix socket, TLS-wrapped TCP, or a websocket (`ws://`
//! over TCP, `wss://` over TLS) carrying RFB bytes in binary frames.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::rfb::error::RfbError;
use crate::rfb::tls::{self, TlsMode, TlsSettings};
use crate::rfb::websocket::{self, WebSocketUrl};

/// A duplex byte stream an RFB session runs over.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// A boxed [`ByteStream`]: plain TCP, a Unix socket, later TLS or websocket.
pub type BoxedStream = Box<dyn ByteStream>;

/// Where a VNC server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// TCP, for example `Tcp { host: "127.0.0.1".into(), port: 5901 }`.
    Tcp { host: String, port: u16 },
    /// A Unix domain socket (`Xvnc -rfbunixpath`, QEMU `-vnc unix:`).
    Unix(PathBuf),
    /// TCP wrapped in TLS from the first byte (stunnel, `x11vnc -ssl`).
    Tls { host: String, port: u16, tls: TlsSettings },
    /// A websocket (websockify, Proxmox VE `vncwebsocket`).
    WebSocket(WebSocketEndpoint),
}

/// A websocket URL with the headers its upgrade request needs.
#[derive(Clone, PartialEq, Eq)]
pub struct WebSocketEndpoint {
    pub url: WebSocketUrl,
    /// Extra request headers (authentication, cookies). Values are secret:
    /// never printed.
    pub headers: Vec<(String, String)>,
    /// Certificate checks for `wss://`.
    pub tls: TlsSettings,
}

impl std::fmt::Debug for WebSocketEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketEndpoint")
            .field("url", &self.url.to_string())
            .field("headers", &self.headers.iter().map(|(n, _)| format!("{n}: <redacted>")).collect::<Vec<_>>())
            .field("tls", &self.tls)
            .finish()
    }
}

impl Endpoint {
    pub fn tcp(host: impl Into<String>, port: u16) -> Endpoint {
        Endpoint::Tcp { host: host.into(), port }
    }

    /// The host name certificates are checked against (none for Unix sockets).
    pub fn host(&self) -> Option<&str> {
        match self {
            Endpoint::Tcp { host, .. } | Endpoint::Tls { host, .. } => Some(host),
            Endpoint::WebSocket(ws) => Some(&ws.url.host),
            Endpoint::Unix(_) => None,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tls { host, port, .. } if host.contains(':') => write!(f, "tls://[{host}]:{port}"),
            Endpoint::Tls { host, port, .. } => write!(f, "tls://{host}:{port}"),
            Endpoint::WebSocket(ws) => write!(f, "{}", ws.url),
        }
    }
}

async fn tcp(host: &str, port: u16, endpoint: &Endpoint) -> Result<tokio::net::TcpStream, RfbError> {
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| RfbError::io(format!("connecting to {endpoint}"), e))?;
    // Input events and update requests are tiny: send them at once.
    stream.set_nodelay(true).map_err(|e| RfbError::io(format!("connecting to {endpoint}"), e))?;
    Ok(stream)
}

/// Open a byte stream to `endpoint` (TLS and websocket handshakes included),
/// giving up after `timeout`.
pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<BoxedStream, RfbError> {
    let attempt = async {
        match endpoint {
            Endpoint::Tcp { host, port } => {
                Ok::<BoxedStream, RfbError>(Box::new(tcp(host, *port, endpoint).await?) as BoxedStream)
            }
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| RfbError::io(format!("connecting to {endpoint}"), e))?;
                Ok(Box::new(stream) as BoxedStream)
            }
            Endpoint::Tls { host, port, tls } => {
                let stream = tcp(host, *port, endpoint).await?;
                let tls = tls::wrap(stream, TlsMode::Verified { settings: tls, host: Some(host) }).await?;
                Ok(Box::new(tls) as BoxedStream)
            }
            Endpoint::WebSocket(ws) => {
                let url = &ws.url;
                let stream = tcp(&url.host, url.port, endpoint).await?;
                let upgrade_error = |e: websocket::WebSocketError| match e {
                    websocket::WebSocketError::Io { what, source } => {
                        RfbError::io(format!("{what} ({endpoint})"), source)
                    }
                    other => RfbError::Transport { what: format!("{endpoint}: {other}") },
                };
                if url.secure {
                    let tls = tls::wrap(stream, TlsMode::Verified { settings: &ws.tls, host: Some(&url.host) }).await?;
                    Ok(Box::new(websocket::connect(tls, url, &ws.headers).await.map_err(upgrade_error)?) as BoxedStream)
                } else {
                    Ok(Box::new(websocket::connect(stream, url, &ws.headers).await.map_err(upgrade_error)?)
                        as BoxedStream)
                }
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(RfbError::timeout(format!("a connection to {endpoint}"), timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_display() {
        assert_eq!(Endpoint::tcp("127.0.0.1", 5901).to_string(), "127.0.0.1:5901");
        assert_eq!(Endpoint::tcp("::1", 5901).to_string(), "[::1]:5901");
        assert_eq!(Endpoint::Unix("/tmp/v.sock".into()).to_string(), "unix:/tmp/v.sock");
    }

    #[tokio::test]
    async fn connect_refused_is_io_error_naming_endpoint() {
        // Bind then drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = connect(&Endpoint::tcp("127.0.0.1", port), Duration::from_secs(2)).await.err().unwrap();
        assert!(matches!(err, RfbError::Io { .. }), "{err}");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    }
}
