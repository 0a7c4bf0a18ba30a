//! One-shot VNC commands for scripts (`smoke vnc capture|key|type|click|move`):
//! connect, do one thing, disconnect. They share the runner's input code
//! ([`Screen`]), so layouts, scancodes, throttling and typing confirmation
//! behave exactly as in scenarios.
//!
//! Passwords come from an environment variable or a file, never from the
//! command line (where `ps` and shell histories would show them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::events::EventLog;
use crate::geometry::Point;
use crate::input::pointer::PathKind;
use crate::input::{Button, KeyCombo, Layout};
use crate::rfb::{
    ConnectOptions, Encoding, Endpoint, RfbError, TlsSettings, VncClient, WebSocketEndpoint, WebSocketUrl,
};
use crate::runner::screen::{InputError, Screen, TypeOptions};

/// The environment variable read for a password when no other source is given.
pub const PASSWORD_ENV: &str = "SMOKE_VNC_PASSWORD";

/// Why a one-shot command failed, with the exit code each means.
#[derive(Debug, thiserror::Error)]
pub enum VerbError {
    /// Bad arguments (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The server or the connection (exit 3).
    #[error("{0}")]
    Infra(String),
    /// The action did not take effect (exit 1): typed text that never showed.
    #[error("{0}")]
    Failed(String),
}

impl VerbError {
    pub fn exit_code(&self) -> u8 {
        match self {
            VerbError::Failed(_) => 1,
            VerbError::Usage(_) => 2,
            VerbError::Infra(_) => 3,
        }
    }
}

impl From<RfbError> for VerbError {
    fn from(e: RfbError) -> Self {
        VerbError::Infra(format!("VNC: {e}"))
    }
}

impl From<InputError> for VerbError {
    fn from(e: InputError) -> Self {
        match e {
            InputError::Rfb(e) => e.into(),
            lost @ InputError::Lost { .. } => VerbError::Failed(lost.to_string()),
        }
    }
}

/// Where the password comes from.
#[derive(Debug, Clone, Default)]
pub enum PasswordSource {
    /// `$SMOKE_VNC_PASSWORD` if set, else none.
    #[default]
    Default,
    Env(String),
    /// A file whose first line is the password.
    File(PathBuf),
}

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct Connection {
    pub address: String,
    pub password: PasswordSource,
    pub layout: Layout,
    /// Encoding names in order (empty: the client's default list).
    pub encodings: Vec<String>,
    pub timeout: Duration,
    /// VeNCrypt Plain username.
    pub username: Option<String>,
    /// Certificate checks (VeNCrypt X509, `tls://`, `wss://`).
    pub tls: TlsSettings,
}

/// `HOST:PORT`, `HOST` (port 5900), `HOST:N` with N < 100 (display N, port
/// 5900 + N, as vncviewer reads it), `[V6]:PORT`, `unix:PATH`,
/// `tls://HOST:PORT` (TLS from the first byte), or a `ws://`/`wss://` URL.
pub fn parse_address(s: &str) -> Result<Endpoint, VerbError> {
    let bad = || {
        VerbError::Usage(format!(
            "'{s}' is not a VNC address (HOST:PORT, HOST:DISPLAY, unix:PATH, tls://HOST:PORT, ws://URL or wss://URL)"
        ))
    };
    if s.starts_with("ws://") || s.starts_with("wss://") {
        let url = WebSocketUrl::parse(s).map_err(|e| VerbError::Usage(e.to_string()))?;
        return Ok(Endpoint::WebSocket(WebSocketEndpoint { url, headers: Vec::new(), tls: TlsSettings::default() }));
    }
    if let Some(rest) = s.strip_prefix("tls://") {
        return match parse_address(rest)? {
            Endpoint::Tcp { host, port } => Ok(Endpoint::Tls { host, port, tls: TlsSettings::default() }),
            _ => Err(bad()),
        };
    }
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(bad());
        }
        return Ok(Endpoint::Unix(PathBuf::from(path)));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
        (host.to_string(), tail.strip_prefix(':').map(str::to_string))
    } else if s.matches(':').count() == 1 {
        let (h, p) = s.split_once(':').ok_or_else(bad)?;
        (h.to_string(), Some(p.to_string()))
    } else {
        // no port, or a bare IPv6 address
        (s.to_string(), None)
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        None => 5900,
        Some(p) => {
            let n: u32 = p.parse().map_err(|_| bad())?;
            match n {
                0..100 => 5900 + n,
                _ if n <= 65535 => n,
                _ => return Err(bad()),
            }
        }
    };
    Ok(Endpoint::tcp(host, port as u16))
}

/// Loopback or a Unix socket: no network between client and server.
fn is_local(endpoint: &Endpoint) -> bool {
    match endpoint {
        Endpoint::Unix(_) => true,
        Endpoint::Tcp { host, .. } | Endpoint::Tls { host, .. } => {
            host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        Endpoint::WebSocket(ws) => {
            ws.url.host == "localhost" || ws.url.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    }
}

fn encoding_by_name(name: &str) -> Option<Encoding> {
    Encoding::from_name(name)
}

/// Names `--encodings` accepts.
pub use crate::rfb::protocol::ENCODING_NAMES;

fn read_password(source: &PasswordSource) -> Result<Option<String>, VerbError> {
    match source {
        PasswordSource::Default => Ok(std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty())),
        PasswordSource::Env(var) => match std::env::var(var) {
            Ok(p) => Ok(Some(p)),
            Err(_) => Err(VerbError::Usage(format!("the environment variable {var} (--password-env) is not set"))),
        },
        PasswordSource::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| VerbError::Usage(format!("reading the password file {}: {e}", path.display())))?;
            Ok(Some(text.lines().next().unwrap_or("").to_string()))
        }
    }
}

impl Connection {
    /// The connect options these settings give (the password read now).
    pub fn options(&self) -> Result<ConnectOptions, VerbError> {
        let mut opts = ConnectOptions {
            password: read_password(&self.password)?,
            timeout: self.timeout,
            username: self.username.clone(),
            tls: self.tls.clone(),
            ..Default::default()
        };
        if !self.encodings.is_empty() {
            let mut list = Vec::new();
            for name in &self.encodings {
                let e = encoding_by_name(name).ok_or_else(|| {
                    VerbError::Usage(format!("unknown encoding '{name}' (known: {})", ENCODING_NAMES.join(", ")))
                })?;
                list.push(e);
            }
            opts.encodings = list;
        }
        Ok(opts)
    }

    /// The endpoint with this connection's certificate settings.
    pub fn endpoint(&self) -> Result<Endpoint, VerbError> {
        self.tls.validate().map_err(VerbError::Usage)?;
        Ok(match parse_address(&self.address)? {
            Endpoint::Tls { host, port, .. } => Endpoint::Tls { host, port, tls: self.tls.clone() },
            Endpoint::WebSocket(mut ws) => {
                ws.tls = self.tls.clone();
                Endpoint::WebSocket(ws)
            }
            other => other,
        })
    }

    pub async fn connect(&self) -> Result<VncClient, VerbError> {
        let endpoint = self.endpoint()?;
        let mut opts = self.options()?;
        if self.encodings.is_empty() && is_local(&endpoint) {
            // On the same machine copying pixels beats compressing them
            // (bench: Raw 10 ms vs ZRLE 24 ms per 1280x720 frame from Xvnc).
            opts.encodings.retain(|e| *e != Encoding::Zrle);
        }
        let client = VncClient::connect(&endpoint, &opts).await?;
        client.set_reconnect(true);
        Ok(client)
    }

    async fn screen(&self) -> Result<(VncClient, Screen), VerbError> {
        let client = self.connect().await?;
        let screen = Screen::new(client.clone(), EventLog::new(Default::default())).with_layout(self.layout);
        Ok((client, screen))
    }
}

/// Save the screen as a PNG. `connect` already waited for the answer to a
/// full-screen request sent after the connection opened: that frame is fresh.
pub async fn capture(conn: &Connection, out: &Path) -> Result<(u32, u32), VerbError> {
    let client = conn.connect().await?;
    let frame = client.snapshot();
    client.close().await;
    frame.save_png(out).map_err(|e| VerbError::Infra(e.to_string()))?;
    Ok((frame.width(), frame.height()))
}

/// Press key combos one after another.
pub async fn key(conn: &Connection, combos: &[String], hold: Option<Duration>) -> Result<(), VerbError> {
    let mut parsed = Vec::new();
    for text in combos {
        let combo = KeyCombo::parse(text).map_err(|e| {
            VerbError::Usage(match e.help() {
                Some(h) => format!("key '{text}': {e} ({h})"),
                None => format!("key '{text}': {e}"),
            })
        })?;
        parsed.push(combo);
    }
    if parsed.is_empty() {
        return Err(VerbError::Usage("no key combo given".into()));
    }
    let (client, screen) = conn.screen().await?;
    match hold {
        Some(hold) => {
            for combo in &parsed {
                screen.key_hold(0, combo, hold).await?;
            }
        }
        None => screen.keys(0, &parsed, Duration::from_millis(50)).await?,
    }
    finish(&client).await
}

/// Type text.
pub async fn type_text(conn: &Connection, text: &str, opts: TypeOptions) -> Result<(), VerbError> {
    if let Err((i, c)) = crate::input::type_text(text, None) {
        return Err(VerbError::Usage(format!("character {} of the text ({c:?}) cannot be typed", i + 1)));
    }
    let (client, screen) = conn.screen().await?;
    screen.type_with(0, text, opts).await?;
    finish(&client).await
}

/// Click at a point.
pub async fn click(conn: &Connection, at: Point, button: Button, double: bool) -> Result<(), VerbError> {
    let (client, mut screen) = conn.screen().await?;
    screen.click(0, at, button, double, Duration::ZERO).await?;
    finish(&client).await
}

/// Move the pointer (along a path when `duration` is not zero).
pub async fn move_to(conn: &Connection, at: Point, path: PathKind, duration: Duration) -> Result<(), VerbError> {
    let (client, mut screen) = conn.screen().await?;
    screen.move_along(0, at, path, duration).await?;
    finish(&client).await
}

/// Close the connection: every event was written whole before the call
/// returned, and the server reads them before it sees the end of the stream.
async fn finish(client: &VncClient) -> Result<(), VerbError> {
    client.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_address("127.0.0.1:5901").unwrap(), Endpoint::tcp("127.0.0.1", 5901));
        assert_eq!(parse_address("localhost:1").unwrap(), Endpoint::tcp("localhost", 5901));
        assert_eq!(parse_address("vm").unwrap(), Endpoint::tcp("vm", 5900));
        assert_eq!(parse_address("[::1]:5905").unwrap(), Endpoint::tcp("::1", 5905));
        assert_eq!(parse_address("unix:/tmp/v.sock").unwrap(), Endpoint::Unix("/tmp/v.sock".into()));
        assert!(matches!(parse_address("tls://vm:5901").unwrap(), Endpoint::Tls { port: 5901, .. }));
        assert!(matches!(parse_address("tls://vm:1").unwrap(), Endpoint::Tls { port: 5901, .. }));
        match parse_address("wss://pve:8006/vnc?x=1").unwrap() {
            Endpoint::WebSocket(ws) => assert_eq!((ws.url.port, ws.url.secure), (8006, true)),
            other => panic!("{other:?}"),
        }
        assert!(parse_address("tls://unix:/x").is_err());
        assert!(parse_address("ws://").is_err());
        for bad in ["", ":5900", "h:x", "h:70000", "unix:"] {
            let e = parse_address(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn encodings_by_name() {
        let conn = Connection {
            address: "h:1".into(),
            password: PasswordSource::Default,
            layout: Layout::Us,
            encodings: vec!["raw".into(), "ZRLE".into()],
            timeout: Duration::from_secs(1),
            username: None,
            tls: TlsSettings::default(),
        };
        assert_eq!(conn.options().unwrap().encodings, vec![Encoding::Raw, Encoding::Zrle]);
        let bad = Connection { encodings: vec!["jpeg".into()], ..conn };
        assert!(bad.options().unwrap_err().to_string().contains("unknown encoding 'jpeg'"));
    }
}
