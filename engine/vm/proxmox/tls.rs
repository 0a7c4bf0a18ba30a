//! How smoke trusts a Proxmox VE node's certificate.
//!
//! PVE signs each node's certificate with the cluster's own CA
//! (`/etc/pve/pve-root-ca.pem`), so the system's roots rarely apply. The
//! inventory gives one of:
//! - `ca: FILE`: verify the chain and the host name against that CA (PEM);
//! - `fingerprint: AB:CD:...`: accept exactly the certificate whose SHA-256
//!   fingerprint is pinned (as the GUI shows it under Node > System >
//!   Certificates). The handshake signature is still verified with the pinned
//!   certificate's key; name and expiry are not checked: the pin is the trust;
//! - neither: the system's roots (a node with a publicly trusted certificate).
//!
//! There is no mode that accepts any certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Which certificates a connection to the node accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The operating system's trusted roots.
    System,
    /// Certificates issued by the CA in this PEM file (name checked).
    CaFile(PathBuf),
    /// Exactly the certificate with this SHA-256 fingerprint.
    Fingerprint([u8; 32]),
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA file {path}: {detail}")]
    CaFile { path: String, detail: String },
    #[error("CA file {path} holds no certificate (expected PEM `-----BEGIN CERTIFICATE-----`)")]
    EmptyCa { path: String },
    #[error("TLS setup: {0}")]
    Setup(String),
}

impl Trust {
    /// The settings the websocket transport takes for the same trust.
    pub fn ca_file(&self) -> Option<PathBuf> {
        match self {
            Trust::CaFile(p) => Some(p.clone()),
            _ => None,
        }
    }

    /// The pin as `AB:CD:...`, for the websocket transport and messages.
    pub fn fingerprint_text(&self) -> Option<String> {
        match self {
            Trust::Fingerprint(f) => Some(format_fingerprint(f)),
            _ => None,
        }
    }
}

pub use crate::fingerprint::{format as format_fingerprint, of_der as fingerprint_of, parse as parse_fingerprint};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration that trusts what `trust` says.
pub fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let config = match trust {
        Trust::System => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::CaFile(path) => {
            let roots = ca_roots(path)?;
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Setup(e.to_string()))?;
            builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth()
        }
        Trust::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate { pin: *pin, provider }))
            .with_no_client_auth(),
    };
    Ok(config)
}

fn ca_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| TlsError::CaFile { path: shown.clone(), detail: e.to_string() })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| TlsError::CaFile { path: shown.clone(), detail: e.to_string() })?;
        roots.add(cert).map_err(|e| TlsError::CaFile { path: shown.clone(), detail: e.to_string() })?;
    }
    if roots.is_empty() {
        return Err(TlsError::EmptyCa { path: shown });
    }
    Ok(roots)
}

/// Accepts exactly one certificate, named by its SHA-256 fingerprint.
#[derive(Debug)]
struct PinnedCertificate {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

/// The server presented a certificate other than the pinned one.
#[derive(Debug)]
pub struct PinMismatch {
    pub expected: String,
    pub presented: String,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "certificate fingerprint mismatch: the server presented SHA-256 {}, the inventory pins {}",
            self.presented, self.expected
        )
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = fingerprint_of(end_entity.as_ref());
        // A certificate is public: a plain comparison leaks nothing.
        if presented == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(
            PinMismatch { expected: format_fingerprint(&self.pin), presented: format_fingerprint(&presented) },
        )))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_file_is_named() {
        let e = client_config(&Trust::CaFile("/nonexistent/ca.pem".into())).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("empty.pem");
        std::fs::write(&f, "not a pem\n").unwrap();
        let e = client_config(&Trust::CaFile(f)).unwrap_err().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
    }
}
