//! Where a VNC server listens and how to get a byte stream to it.
//!
//! The rest of the client only sees a [`BoxedStream`], a type-erased duplex byte
//! stream, so TLS or websocket transports plug in later by producing one.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::rfb::error::RfbError;

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
    /// A Unix domain socket (`Xvnc -rfbunixpath`).
    Unix(PathBuf),
}

impl Endpoint {
    pub fn tcp(host: impl Into<String>, port: u16) -> Endpoint {
        Endpoint::Tcp { host: host.into(), port }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Open a byte stream to `endpoint`, giving up after `timeout`.
pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<BoxedStream, RfbError> {
    let attempt = async {
        match endpoint {
            Endpoint::Tcp { host, port } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                // Input events and update requests are tiny: send them at once.
                stream.set_nodelay(true)?;
                Ok::<BoxedStream, std::io::Error>(Box::new(stream))
            }
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<BoxedStream, std::io::Error>(Box::new(stream))
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(RfbError::io(format!("connecting to {endpoint}"), source)),
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
