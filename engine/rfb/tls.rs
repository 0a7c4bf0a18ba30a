//! TLS for VNC connections: TLS-wrapped TCP, `wss://` websockets and the TLS
//! layer of VeNCrypt (RFB security type 19).
//!
//! Two kinds of sessions:
//! - **verified** (X509 subtypes, `tls` endpoints, `wss`): the server's
//!   certificate is checked against a pinned SHA-256 fingerprint, or else a
//!   configured CA file (or the system's roots) with the host name. A failure
//!   names the server's fingerprint, so pinning it is one copy away.
//! - **anonymous** (VeNCrypt TLSNone/TLSVnc/TLSPlain, QEMU `tls-creds-anon`):
//!   anonymous Diffie-Hellman, TLS 1.2 at most. It encrypts but cannot tell
//!   who is on the other end.
//!
//! OpenSSL (the system library, through the `openssl` crate) does both;
//! rustls deliberately has no anonymous cipher suites, and TigerVNC, QEMU and
//! libvncserver servers offer exactly those for the TLS* subtypes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use openssl::hash::MessageDigest;
use openssl::ssl::{Ssl, SslConnector, SslMethod, SslVerifyMode, SslVersion};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_openssl::SslStream;

use crate::rfb::error::RfbError;

/// How to verify a server's certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file with the CA certificate(s) to trust (instead of the system's).
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the server's certificate (hex, colons optional):
    /// when given, exactly this certificate is accepted, whoever signed it.
    pub fingerprint_sha256: Option<String>,
    /// The name to check the certificate against, when it differs from the
    /// host connected to.
    pub server_name: Option<String>,
}

impl TlsSettings {
    /// Check the settings before any connection: a readable CA file, a
    /// well-formed fingerprint.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(fp) = &self.fingerprint_sha256 {
            parse_fingerprint(fp)?;
        }
        if let Some(ca) = &self.ca_file
            && !ca.is_file()
        {
            return Err(format!("CA file {} does not exist", ca.display()));
        }
        Ok(())
    }
}

/// Which TLS session to run.
#[derive(Debug, Clone, Copy)]
pub enum TlsMode<'a> {
    /// Verify the certificate as `settings` say, for `host` (`None` for a
    /// Unix socket: no name to check, so a CA or a pin is required).
    Verified { settings: &'a TlsSettings, host: Option<&'a str> },
    /// Anonymous Diffie-Hellman: no certificate.
    Anonymous,
}

pub use crate::fingerprint::{format as format_fingerprint, parse as parse_fingerprint};

fn tls_error(what: impl Into<String>) -> RfbError {
    RfbError::Tls { what: what.into() }
}

/// Run a TLS client handshake on `stream`.
pub async fn wrap<S: AsyncRead + AsyncWrite + Unpin>(stream: S, mode: TlsMode<'_>) -> Result<SslStream<S>, RfbError> {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| tls_error(format!("OpenSSL: {e}")))?;
    // What the server presented, for the error message.
    let seen: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let mut hostname: Option<String> = None;
    match mode {
        TlsMode::Anonymous => {
            // aNULL suites only exist up to TLS 1.2 and at security level 0.
            builder.set_max_proto_version(Some(SslVersion::TLS1_2)).map_err(|e| tls_error(format!("OpenSSL: {e}")))?;
            builder
                .set_cipher_list("aNULL:!eNULL:@SECLEVEL=0")
                .map_err(|e| tls_error(format!("OpenSSL has no anonymous Diffie-Hellman cipher suites: {e}")))?;
            builder.set_verify(SslVerifyMode::NONE);
        }
        TlsMode::Verified { settings, host } => {
            let pin = match &settings.fingerprint_sha256 {
                Some(fp) => Some(parse_fingerprint(fp).map_err(tls_error)?),
                None => None,
            };
            if let Some(ca) = &settings.ca_file {
                builder
                    .set_ca_file(ca)
                    .map_err(|e| tls_error(format!("cannot load the CA file {}: {e}", ca.display())))?;
            } else if pin.is_none() && host.is_none() {
                return Err(tls_error(
                    "a TLS connection over a Unix socket has no host name to check: set a CA file or a fingerprint",
                ));
            }
            hostname = settings.server_name.clone().or_else(|| host.map(str::to_string));
            let seen_cb = Arc::clone(&seen);
            builder.set_verify_callback(SslVerifyMode::PEER, move |preverified, ctx| {
                if ctx.error_depth() != 0 {
                    // With a pin, the chain above the leaf does not matter.
                    return pin.is_some() || preverified;
                }
                let digest = ctx.current_cert().and_then(|c| c.digest(MessageDigest::sha256()).ok());
                if let (Some(d), Ok(mut slot)) = (&digest, seen_cb.lock()) {
                    *slot = Some(format_fingerprint(d));
                }
                match (&pin, digest) {
                    (Some(want), Some(got)) => got.as_ref() == want.as_slice(),
                    (Some(_), None) => false,
                    (None, _) => preverified,
                }
            });
            if pin.is_some() {
                // The pin names the certificate; no host name check on top.
                hostname = None;
            }
        }
    }
    let connector = builder.build();
    let mut config = connector.configure().map_err(|e| tls_error(format!("OpenSSL: {e}")))?;
    let ssl: Ssl = match &hostname {
        Some(name) => {
            let is_ip = name.parse::<std::net::IpAddr>().is_ok();
            // SNI only for names; IP addresses are checked against IP SANs.
            config.set_use_server_name_indication(!is_ip);
            config.set_verify_hostname(true);
            if is_ip {
                config.set_verify_hostname(false);
                let ip: std::net::IpAddr = name.parse().map_err(|_| tls_error("bad IP address"))?;
                config.param_mut().set_ip(ip).map_err(|e| tls_error(format!("OpenSSL: {e}")))?;
            }
            config.into_ssl(name).map_err(|e| tls_error(format!("OpenSSL: {e}")))?
        }
        None => {
            config.set_use_server_name_indication(false);
            config.set_verify_hostname(false);
            config.into_ssl("").map_err(|e| tls_error(format!("OpenSSL: {e}")))?
        }
    };
    let mut tls = SslStream::new(ssl, stream).map_err(|e| tls_error(format!("OpenSSL: {e}")))?;
    match std::pin::Pin::new(&mut tls).connect().await {
        Ok(()) => Ok(tls),
        Err(e) => {
            let verify = tls.ssl().verify_result();
            let presented = seen.lock().ok().and_then(|s| s.clone());
            let mut what = match (&mode, verify.as_raw()) {
                (TlsMode::Verified { .. }, 0) => format!("TLS handshake failed: {e}"),
                (TlsMode::Verified { settings, .. }, _) if settings.fingerprint_sha256.is_some() => {
                    "the server's certificate does not match the pinned fingerprint".to_string()
                }
                (TlsMode::Verified { .. }, _) => {
                    format!("the server's certificate was not accepted: {}", verify.error_string())
                }
                (TlsMode::Anonymous, _) => {
                    format!("anonymous TLS handshake failed (the server may not offer anonymous Diffie-Hellman): {e}")
                }
            };
            if let Some(fp) = presented {
                what.push_str(&format!(
                    "; the server presented a certificate with SHA-256 fingerprint {fp} (pin it with \
                     `fingerprint:` or give its CA with `ca:`)"
                ));
            }
            Err(tls_error(what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_validation_names_the_problem() {
        let s = TlsSettings { ca_file: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        assert!(s.validate().unwrap_err().contains("/nonexistent/ca.pem"));
        let s = TlsSettings { fingerprint_sha256: Some("12".into()), ..Default::default() };
        assert!(s.validate().is_err());
    }
}
