//! The RFB handshake and initialisation (RFC 6143 sections 7.1 and 7.3): agree
//! on a protocol version (3.3, 3.7 or 3.8), pick and run a security type (None,
//! VNC authentication, or VeNCrypt with its TLS and inner authentication),
//! read SecurityResult where the version sends one, send ClientInit (always
//! shared) and read ServerInit.
//!
//! It takes the stream by value and returns the stream the session continues
//! on: VeNCrypt replaces it midway with its TLS session. Reads are unbuffered:
//! nothing after ServerInit is consumed.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use crate::rfb::auth;
use crate::rfb::error::RfbError;
use crate::rfb::protocol::{
    self, MAX_NAME_LEN, MAX_REASON_LEN, PixelFormat, ProtocolVersion, SERVER_INIT_LEN, SecurityType, ServerInitHeader,
    VERSION_LEN,
};
use crate::rfb::tls::TlsSettings;
use crate::rfb::transport::{BoxedStream, ByteStream};
use crate::rfb::vencrypt::{self, Credentials, InnerAuth};

/// What the handshake agreed on and what ServerInit said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub version: ProtocolVersion,
    pub security: SecurityType,
    pub width: u16,
    pub height: u16,
    /// The server's natural pixel format (the client replaces it with RGBX).
    pub pixel_format: PixelFormat,
    pub name: String,
}

async fn read_array<const N: usize, S: AsyncRead + Unpin>(stream: &mut S, what: &str) -> Result<[u8; N], RfbError> {
    let mut buf = [0u8; N];
    stream.read_exact(&mut buf).await.map_err(|e| read_error(what, e))?;
    Ok(buf)
}

pub(crate) fn read_error(what: &str, e: std::io::Error) -> RfbError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        RfbError::disconnected(format!("the server closed the connection while we waited for {what}"))
    } else {
        RfbError::io(format!("reading {what}"), e)
    }
}

async fn write_all<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8], what: &str) -> Result<(), RfbError> {
    stream.write_all(bytes).await.map_err(|e| RfbError::io(format!("sending {what}"), e))?;
    stream.flush().await.map_err(|e| RfbError::io(format!("sending {what}"), e))
}

/// Read a length-prefixed string (U32 length, bytes), refusing absurd lengths.
async fn read_string<S: AsyncRead + Unpin>(stream: &mut S, what: &str, max: u32) -> Result<String, RfbError> {
    let len = u32::from_be_bytes(read_array::<4, _>(stream, what).await?);
    if len > max {
        return Err(RfbError::limit(format!("{what} of {len} bytes (at most {max} accepted)")));
    }
    let mut bytes = vec![0u8; len as usize];
    stream.read_exact(&mut bytes).await.map_err(|e| read_error(what, e))?;
    Ok(protocol::decode_text(&bytes))
}

/// Which security type to use among those offered: VeNCrypt whenever offered
/// (it encrypts); else None when offered and no password is given (or VNC
/// auth is not offered), VNC authentication when a password is given, else an
/// error naming what the server wanted.
pub fn choose_security(offered: &[SecurityType], password: Option<&str>) -> Result<SecurityType, RfbError> {
    if offered.contains(&SecurityType::VeNCrypt) {
        return Ok(SecurityType::VeNCrypt);
    }
    let has_none = offered.contains(&SecurityType::None);
    let has_vnc = offered.contains(&SecurityType::VncAuth);
    match (has_none, has_vnc, password.is_some()) {
        (_, true, true) => Ok(SecurityType::VncAuth),
        (true, _, _) => Ok(SecurityType::None),
        (false, true, false) => Err(RfbError::AuthRequired),
        (false, false, _) => {
            let names: Vec<String> = offered.iter().map(|t| t.name()).collect();
            Err(RfbError::unsupported(format!(
                "security types: the server offers [{}], this client supports None, VNC authentication and VeNCrypt",
                names.join(", ")
            )))
        }
    }
}

/// Run the whole handshake up to and including ServerInit with only a
/// password (VeNCrypt X509 subtypes then verify against the system's roots).
pub async fn handshake<S: ByteStream + 'static>(
    stream: S,
    password: Option<&str>,
) -> Result<(BoxedStream, ServerInfo), RfbError> {
    let tls = TlsSettings::default();
    handshake_with(stream, &Credentials { password, username: None, tls: &tls, host: None }).await
}

/// Run the whole handshake up to and including ServerInit; returns the
/// stream to run the session on and what the server said.
pub async fn handshake_with<S: ByteStream + 'static>(
    stream: S,
    creds: &Credentials<'_>,
) -> Result<(BoxedStream, ServerInfo), RfbError> {
    let mut stream: BoxedStream = Box::new(stream);
    let info = negotiate(&mut stream, creds).await?;
    Ok((stream, info))
}

async fn negotiate(stream: &mut BoxedStream, creds: &Credentials<'_>) -> Result<ServerInfo, RfbError> {
    let password = creds.password;
    let greeting: [u8; VERSION_LEN] = read_array(stream, "the server's ProtocolVersion").await?;
    let (major, minor) = ProtocolVersion::parse(&greeting)?;
    let version = ProtocolVersion::negotiate(major, minor)?;
    debug!(server = %format!("{major}.{minor}"), chosen = %version, "RFB version");
    write_all(stream, &version.encode(), "ProtocolVersion").await?;

    let security = if version == ProtocolVersion::V3_3 {
        // The server decides and sends one U32.
        let raw = u32::from_be_bytes(read_array::<4, _>(stream, "the security type").await?);
        match raw {
            0 => {
                let reason = read_string(stream, "the refusal reason", MAX_REASON_LEN).await?;
                return Err(RfbError::Refused { reason });
            }
            1 => SecurityType::None,
            2 => {
                if password.is_none() {
                    return Err(RfbError::AuthRequired);
                }
                SecurityType::VncAuth
            }
            other => {
                return Err(RfbError::protocol("security type (RFB 3.3)", format!("{other} is not one of 0, 1, 2")));
            }
        }
    } else {
        let [count] = read_array::<1, _>(stream, "the number of security types").await?;
        if count == 0 {
            let reason = read_string(stream, "the refusal reason", MAX_REASON_LEN).await?;
            return Err(RfbError::Refused { reason });
        }
        let mut types = vec![0u8; usize::from(count)];
        stream.read_exact(&mut types).await.map_err(|e| read_error("the security types", e))?;
        let offered: Vec<SecurityType> = types.into_iter().map(SecurityType::from_u8).collect();
        let chosen = choose_security(&offered, password)?;
        debug!(?offered, ?chosen, "security type");
        write_all(stream, &[chosen.to_u8()], "the chosen security type").await?;
        chosen
    };

    match security {
        SecurityType::VncAuth => {
            vnc_auth(stream, password).await?;
            read_security_result(stream, version).await?;
        }
        SecurityType::VeNCrypt => {
            let subtype = vencrypt::negotiate(stream, creds).await?;
            // The TLS session replaces the plain stream from here on.
            let plain = std::mem::replace(stream, Box::new(tokio::io::duplex(1).0));
            let mut secured: BoxedStream = Box::new(vencrypt::start_tls(plain, subtype, creds).await?);
            match subtype.inner() {
                InnerAuth::None => {}
                InnerAuth::Vnc => vnc_auth(&mut secured, password).await?,
                InnerAuth::Plain => {
                    let (Some(user), Some(pw)) = (creds.username, password) else {
                        return Err(RfbError::AuthRequired);
                    };
                    vencrypt::send_plain(&mut secured, user, pw).await?;
                }
            }
            // VeNCrypt servers send SecurityResult after every subtype.
            read_security_result(&mut secured, version).await?;
            *stream = secured;
        }
        SecurityType::None => {
            // Only 3.8 sends SecurityResult after None.
            if version == ProtocolVersion::V3_8 {
                read_security_result(stream, version).await?;
            }
        }
        other => {
            return Err(RfbError::unsupported(format!("security type {}", other.name())));
        }
    }

    // Always shared: an exclusive client makes QEMU drop every other viewer.
    write_all(stream, &[1], "ClientInit").await?;

    let header: [u8; SERVER_INIT_LEN] = read_array(stream, "ServerInit").await?;
    let header = ServerInitHeader::decode(&header);
    if header.name_len > MAX_NAME_LEN {
        return Err(RfbError::limit(format!(
            "desktop name of {} bytes in ServerInit (at most {MAX_NAME_LEN} accepted)",
            header.name_len
        )));
    }
    let mut name = vec![0u8; header.name_len as usize];
    stream.read_exact(&mut name).await.map_err(|e| read_error("the desktop name", e))?;
    let info = ServerInfo {
        version,
        security,
        width: header.width,
        height: header.height,
        pixel_format: header.pixel_format,
        name: protocol::decode_text(&name),
    };
    debug!(width = info.width, height = info.height, name = %info.name, "ServerInit");
    Ok(info)
}

/// VNC authentication: answer the 16-byte challenge.
async fn vnc_auth<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, password: Option<&str>) -> Result<(), RfbError> {
    let password = password.ok_or(RfbError::AuthRequired)?;
    let challenge: [u8; auth::CHALLENGE_LEN] = read_array(stream, "the VNC authentication challenge").await?;
    let response = auth::challenge_response(password, &challenge);
    write_all(stream, &response, "the VNC authentication response").await
}

/// SecurityResult: 0 is OK; otherwise 3.8 sends a reason string, older
/// versions just close the connection.
async fn read_security_result<S: AsyncRead + Unpin>(stream: &mut S, version: ProtocolVersion) -> Result<(), RfbError> {
    let status = u32::from_be_bytes(read_array::<4, _>(stream, "SecurityResult").await?);
    if status == 0 {
        return Ok(());
    }
    let reason = if version == ProtocolVersion::V3_8 {
        read_string(stream, "the SecurityResult reason", MAX_REASON_LEN).await?
    } else {
        format!("SecurityResult {status} (RFB {version} servers give no reason)")
    };
    Err(RfbError::AuthFailed { reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_choice() {
        use SecurityType::*;
        assert_eq!(choose_security(&[None], Option::None).unwrap(), None);
        assert_eq!(choose_security(&[None, VncAuth], Option::None).unwrap(), None);
        assert_eq!(choose_security(&[None, VncAuth], Some("pw")).unwrap(), VncAuth);
        assert_eq!(choose_security(&[None], Some("pw")).unwrap(), None);
        assert!(matches!(choose_security(&[VncAuth], Option::None), Err(RfbError::AuthRequired)));
        assert_eq!(choose_security(&[VncAuth, VeNCrypt], Some("pw")).unwrap(), VeNCrypt);
        let err = choose_security(&[Other(18), Other(16)], Some("pw")).unwrap_err();
        assert!(matches!(err, RfbError::Unsupported { .. }));
        assert!(err.to_string().contains("TLS (18)"), "{err}");
    }
}
