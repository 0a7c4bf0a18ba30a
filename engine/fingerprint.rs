//! SHA-256 certificate fingerprints, the one pinning rule shared by the VNC
//! TLS layer (OpenSSL, `rfb::tls`) and the Proxmox VE API client (rustls,
//! `vm::proxmox::tls`): parsed in the forms people paste, printed as
//! `AB:CD:...` so a refused certificate's error can be pinned as is.

/// Parse a SHA-256 fingerprint: 64 hex digits in any case, colons optional,
/// an optional `sha256:` prefix, and what `openssl x509 -fingerprint
/// -sha256` prints (`sha256 Fingerprint=AB:CD:...`: the part after `=`).
pub fn parse(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    let t = t.rsplit_once('=').map_or(t, |(_, v)| v);
    let t = t.strip_prefix("sha256:").or_else(|| t.strip_prefix("SHA256:")).unwrap_or(t);
    let hex: String = t.chars().filter(|c| *c != ':').collect();
    let bytes = data_encoding::HEXLOWER_PERMISSIVE.decode(hex.as_bytes()).map_err(|_| {
        format!("'{text}' is not a SHA-256 fingerprint: expected hexadecimal like AB:CD:... (colons optional)")
    })?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        format!("'{text}' is not a SHA-256 fingerprint: it has {} bytes, a SHA-256 fingerprint has 32", b.len())
    })
}

/// `AB:CD:...`: upper-case hex with colons, as OpenSSL and PVE print it.
pub fn format(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// The SHA-256 fingerprint of a DER certificate.
pub fn of_der(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_the_forms_people_paste() {
        let hex = "AB".repeat(32);
        let colons = format(&[0xAB; 32]);
        assert_eq!(colons, "AB:".repeat(31) + "AB");
        for text in
            [hex.clone(), colons.to_lowercase(), format!("sha256 Fingerprint={colons}"), format!("sha256:{hex}")]
        {
            assert_eq!(parse(&text).unwrap(), [0xAB; 32], "{text}");
        }
        let e = parse("AB:CD").unwrap_err();
        assert!(e.contains("not a SHA-256 fingerprint") && e.contains("2 bytes"), "{e}");
        assert!(parse(&"ZZ".repeat(32)).unwrap_err().contains("hexadecimal"));
        assert_eq!(of_der(b"").len(), 32);
    }
}
