//! VeNCrypt (RFB security type 19): a sub-negotiation that picks a subtype,
//! wraps the connection in TLS (anonymous or X.509-verified), then runs the
//! subtype's own authentication (none, VNC authentication, or Plain
//! username/password) inside the TLS channel.
//!
//! Wire format (VeNCrypt 0.2, as TigerVNC, QEMU and libvncserver speak it):
//! server version (U8 major, U8 minor); client version; server status U8
//! (0 = accepted); U8 count and count U32 subtypes; client's U32 choice;
//! server U8 (1 = accepted); then TLS and the inner authentication.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::rfb::error::RfbError;
use crate::rfb::handshake::read_error;
use crate::rfb::tls::{self, TlsMode, TlsSettings};

/// VeNCrypt subtypes (the U32 codes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subtype {
    Plain,
    TlsNone,
    TlsVnc,
    TlsPlain,
    X509None,
    X509Vnc,
    X509Plain,
    Other(u32),
}

/// What a subtype authenticates with inside its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InnerAuth {
    None,
    Vnc,
    Plain,
}

impl Subtype {
    pub fn from_u32(v: u32) -> Subtype {
        match v {
            256 => Subtype::Plain,
            257 => Subtype::TlsNone,
            258 => Subtype::TlsVnc,
            259 => Subtype::TlsPlain,
            260 => Subtype::X509None,
            261 => Subtype::X509Vnc,
            262 => Subtype::X509Plain,
            other => Subtype::Other(other),
        }
    }

    pub fn to_u32(self) -> u32 {
        match self {
            Subtype::Plain => 256,
            Subtype::TlsNone => 257,
            Subtype::TlsVnc => 258,
            Subtype::TlsPlain => 259,
            Subtype::X509None => 260,
            Subtype::X509Vnc => 261,
            Subtype::X509Plain => 262,
            Subtype::Other(v) => v,
        }
    }

    pub fn name(self) -> String {
        match self {
            Subtype::Plain => "Plain".into(),
            Subtype::TlsNone => "TLSNone".into(),
            Subtype::TlsVnc => "TLSVnc".into(),
            Subtype::TlsPlain => "TLSPlain".into(),
            Subtype::X509None => "X509None".into(),
            Subtype::X509Vnc => "X509Vnc".into(),
            Subtype::X509Plain => "X509Plain".into(),
            Subtype::Other(263) => "TLSSASL (263)".into(),
            Subtype::Other(264) => "X509SASL (264)".into(),
            Subtype::Other(v) => format!("subtype {v}"),
        }
    }

    /// Whether the server's certificate is verified (X509*).
    pub fn verified(self) -> bool {
        matches!(self, Subtype::X509None | Subtype::X509Vnc | Subtype::X509Plain)
    }

    pub fn inner(self) -> InnerAuth {
        match self {
            Subtype::TlsVnc | Subtype::X509Vnc => InnerAuth::Vnc,
            Subtype::Plain | Subtype::TlsPlain | Subtype::X509Plain => InnerAuth::Plain,
            _ => InnerAuth::None,
        }
    }
}

/// What the client can authenticate with.
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    pub password: Option<&'a str>,
    /// For Plain subtypes (TigerVNC `-PlainUsers`, checked by PAM).
    pub username: Option<&'a str>,
    pub tls: &'a TlsSettings,
    /// The host connected to, for the certificate's name check.
    pub host: Option<&'a str>,
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("password", &self.password.map(|_| "<redacted>"))
            .field("username", &self.username)
            .field("tls", &self.tls)
            .field("host", &self.host)
            .finish()
    }
}

/// Pick a subtype: server-verified (X509) before anonymous TLS; within each,
/// Plain when a username is given, VNC auth when a password is, else None.
/// Unencrypted Plain is never chosen (it sends the password in clear), and
/// when a CA or fingerprint is configured only X509 subtypes are acceptable.
pub fn choose(offered: &[Subtype], creds: &Credentials<'_>) -> Result<Subtype, RfbError> {
    let user = creds.username.is_some() && creds.password.is_some();
    let pw = creds.password.is_some();
    let wants_verification = creds.tls.ca_file.is_some() || creds.tls.fingerprint_sha256.is_some();
    let mut order = Vec::new();
    if user {
        order.push(Subtype::X509Plain);
    }
    if pw {
        order.push(Subtype::X509Vnc);
    }
    order.push(Subtype::X509None);
    if !wants_verification {
        if user {
            order.push(Subtype::TlsPlain);
        }
        if pw {
            order.push(Subtype::TlsVnc);
        }
        order.push(Subtype::TlsNone);
    }
    if let Some(s) = order.into_iter().find(|s| offered.contains(s)) {
        return Ok(s);
    }
    let names: Vec<String> = offered.iter().map(|s| s.name()).collect();
    let list = names.join(", ");
    let needs_user = offered.iter().any(|s| s.inner() == InnerAuth::Plain) && !user;
    let needs_pw = offered.iter().any(|s| s.inner() == InnerAuth::Vnc) && !pw;
    let anon_only = offered.iter().all(|s| !s.verified());
    let why = if wants_verification && anon_only {
        "a CA or fingerprint is configured, but the server offers only anonymous TLS, which cannot be verified \
         (remove `ca`/`fingerprint` to accept anonymous TLS)"
            .to_string()
    } else if needs_user {
        "the server wants a username and password (Plain): set `username` and the password on the target".into()
    } else if needs_pw {
        "the server wants VNC authentication: set a password on the target".into()
    } else if offered == [Subtype::Plain] {
        "the server offers only Plain without TLS, which would send the password in clear text".into()
    } else {
        "this client supports TLSNone, TLSVnc, TLSPlain, X509None, X509Vnc and X509Plain".into()
    };
    Err(RfbError::unsupported(format!("VeNCrypt subtypes: the server offers [{list}]; {why}")))
}

async fn read_u8<S: AsyncRead + Unpin>(s: &mut S, what: &str) -> Result<u8, RfbError> {
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.map_err(|e| read_error(what, e))?;
    Ok(b[0])
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8], what: &str) -> Result<(), RfbError> {
    s.write_all(bytes).await.map_err(|e| RfbError::io(format!("sending {what}"), e))?;
    s.flush().await.map_err(|e| RfbError::io(format!("sending {what}"), e))
}

/// Most subtypes any server lists.
const MAX_SUBTYPES: u8 = 32;

/// Run the VeNCrypt sub-negotiation on `stream` (just after the client chose
/// type 19) up to the start of the chosen subtype's TLS session. Returns the
/// chosen subtype; the caller then runs TLS (see [`start_tls`]).
pub async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    creds: &Credentials<'_>,
) -> Result<Subtype, RfbError> {
    let major = read_u8(stream, "the VeNCrypt version").await?;
    let minor = read_u8(stream, "the VeNCrypt version").await?;
    if (major, minor) < (0, 2) {
        return Err(RfbError::unsupported(format!("VeNCrypt version {major}.{minor} (this client speaks 0.2)")));
    }
    send(stream, &[0, 2], "the VeNCrypt version").await?;
    let status = read_u8(stream, "the VeNCrypt version answer").await?;
    if status != 0 {
        return Err(RfbError::Refused { reason: format!("the server did not accept VeNCrypt version 0.2 ({status})") });
    }
    let count = read_u8(stream, "the number of VeNCrypt subtypes").await?;
    if count == 0 {
        return Err(RfbError::protocol("VeNCrypt subtypes", "the server offers none"));
    }
    if count > MAX_SUBTYPES {
        return Err(RfbError::limit(format!("{count} VeNCrypt subtypes (at most {MAX_SUBTYPES} accepted)")));
    }
    let mut raw = vec![0u8; usize::from(count) * 4];
    stream.read_exact(&mut raw).await.map_err(|e| read_error("the VeNCrypt subtypes", e))?;
    let offered: Vec<Subtype> =
        raw.chunks_exact(4).map(|c| Subtype::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))).collect();
    let chosen = choose(&offered, creds)?;
    tracing::debug!(offered = ?offered.iter().map(|s| s.name()).collect::<Vec<_>>(), chosen = %chosen.name(), "VeNCrypt");
    send(stream, &chosen.to_u32().to_be_bytes(), "the chosen VeNCrypt subtype").await?;
    let ack = read_u8(stream, "the VeNCrypt subtype answer").await?;
    if ack != 1 {
        return Err(RfbError::Refused { reason: format!("the server rejected VeNCrypt subtype {}", chosen.name()) });
    }
    Ok(chosen)
}

/// The TLS session of a subtype.
pub async fn start_tls<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    subtype: Subtype,
    creds: &Credentials<'_>,
) -> Result<tokio_openssl::SslStream<S>, RfbError> {
    let mode = if subtype.verified() {
        TlsMode::Verified { settings: creds.tls, host: creds.host }
    } else {
        TlsMode::Anonymous
    };
    tls::wrap(stream, mode).await
}

/// Plain authentication: U32 username length, U32 password length, both.
pub async fn send_plain<S: AsyncWrite + Unpin>(stream: &mut S, username: &str, password: &str) -> Result<(), RfbError> {
    let mut msg = Vec::with_capacity(8 + username.len() + password.len());
    msg.extend_from_slice(&(username.len() as u32).to_be_bytes());
    msg.extend_from_slice(&(password.len() as u32).to_be_bytes());
    msg.extend_from_slice(username.as_bytes());
    msg.extend_from_slice(password.as_bytes());
    send(stream, &msg, "the Plain credentials").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use Subtype::*;

    fn creds<'a>(pw: Option<&'a str>, user: Option<&'a str>, tls: &'a TlsSettings) -> Credentials<'a> {
        Credentials { password: pw, username: user, tls, host: Some("127.0.0.1") }
    }

    #[test]
    fn subtype_choice() {
        let plain_tls = TlsSettings::default();
        let pinned = TlsSettings { fingerprint_sha256: Some("00".repeat(32)), ..Default::default() };
        let all = [Plain, TlsNone, TlsVnc, TlsPlain, X509None, X509Vnc, X509Plain];
        assert_eq!(choose(&all, &creds(Some("pw"), Some("u"), &plain_tls)).unwrap(), X509Plain);
        assert_eq!(choose(&all, &creds(Some("pw"), None, &plain_tls)).unwrap(), X509Vnc);
        assert_eq!(choose(&all, &creds(None, None, &plain_tls)).unwrap(), X509None);
        assert_eq!(choose(&[TlsVnc, TlsNone], &creds(Some("pw"), None, &plain_tls)).unwrap(), TlsVnc);
        assert_eq!(choose(&[TlsVnc, TlsNone], &creds(None, None, &plain_tls)).unwrap(), TlsNone);
        // a configured pin refuses anonymous TLS
        let err = choose(&[TlsVnc, TlsNone], &creds(Some("pw"), None, &pinned)).unwrap_err().to_string();
        assert!(err.contains("only anonymous TLS"), "{err}");
        // Plain without TLS never
        let err = choose(&[Plain], &creds(Some("pw"), Some("u"), &plain_tls)).unwrap_err().to_string();
        assert!(err.contains("clear text"), "{err}");
        let err = choose(&[X509Plain], &creds(Some("pw"), None, &plain_tls)).unwrap_err().to_string();
        assert!(err.contains("username"), "{err}");
        let err = choose(&[X509Vnc], &creds(None, None, &plain_tls)).unwrap_err().to_string();
        assert!(err.contains("set a password"), "{err}");
        assert!(choose(&[Other(263)], &creds(None, None, &plain_tls)).unwrap_err().to_string().contains("TLSSASL"));
        for v in 256..=264 {
            assert_eq!(Subtype::from_u32(v).to_u32(), v);
        }
    }

    #[tokio::test]
    async fn negotiation_bytes() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let t = tokio::spawn(async move {
            server.write_all(&[0, 2]).await.unwrap();
            let mut v = [0u8; 2];
            server.read_exact(&mut v).await.unwrap();
            assert_eq!(v, [0, 2]);
            let mut msg = vec![0u8, 2];
            msg.extend_from_slice(&257u32.to_be_bytes());
            msg.extend_from_slice(&258u32.to_be_bytes());
            server.write_all(&msg).await.unwrap();
            let mut choice = [0u8; 4];
            server.read_exact(&mut choice).await.unwrap();
            server.write_all(&[1]).await.unwrap();
            u32::from_be_bytes(choice)
        });
        let tls = TlsSettings::default();
        let got = negotiate(&mut client, &creds(Some("pw"), None, &tls)).await.unwrap();
        assert_eq!(got, TlsVnc);
        assert_eq!(t.await.unwrap(), 258);
    }

    #[tokio::test]
    async fn hostile_subtype_count_is_refused() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            server.write_all(&[0, 2]).await.unwrap();
            let mut v = [0u8; 2];
            server.read_exact(&mut v).await.unwrap();
            server.write_all(&[0, 255]).await.unwrap();
        });
        let tls = TlsSettings::default();
        let err = negotiate(&mut client, &creds(None, None, &tls)).await.unwrap_err();
        assert!(matches!(err, RfbError::LimitExceeded { .. }), "{err}");
    }
}
