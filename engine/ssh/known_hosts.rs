//! Host key verification: OpenSSH `known_hosts` files and pinned fingerprints.
//!
//! smoke reads known_hosts itself (russh's reader misses tab-separated lines
//! and has no wildcard patterns): fields separated by spaces or tabs, comma
//! lists of host patterns with `*`, `?` and `!negation`, `[host]:port` for
//! ports other than 22, hashed entries (`|1|salt|hmac-sha1`), and the
//! `@revoked` marker. `@cert-authority` lines are skipped (smoke does not
//! accept host certificates).
//!
//! A server key is [`HostKeyStatus::Known`] when a line for the host holds the
//! same key; [`HostKeyStatus::Changed`] when lines for the host hold only other
//! keys (of any algorithm): the connection is refused and never "learned";
//! [`HostKeyStatus::Unknown`] when no line names the host (learning it is an
//! explicit opt-in, [`learn`]); [`HostKeyStatus::Revoked`] when an `@revoked`
//! line holds the key.

use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::{HashAlg, PublicKey};

/// One usable line of a known_hosts file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub file: PathBuf,
    pub line: usize,
    pub revoked: bool,
    hosts: Hosts,
    pub key: PublicKey,
}

#[derive(Debug, Clone)]
enum Hosts {
    Patterns(Vec<String>),
    /// `|1|salt|hash`: HMAC-SHA1 of the host name keyed with the salt.
    Hashed {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

/// What the known_hosts files say about a server's key.
#[derive(Debug, Clone)]
pub enum HostKeyStatus {
    Known { file: PathBuf, line: usize },
    Unknown,
    Changed { stored: Vec<(PathBuf, usize, String)> },
    Revoked { file: PathBuf, line: usize },
}

/// The name a host has in known_hosts: `host`, or `[host]:port` when the port is not 22.
pub fn host_name(host: &str, port: u16) -> String {
    if port == 22 { host.to_string() } else { format!("[{host}]:{port}") }
}

/// `SHA256:...` fingerprint of a key, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Parse known_hosts text. Lines that cannot be read are skipped (and logged),
/// as OpenSSH does.
pub fn parse(file: &Path, text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split([' ', '\t']).filter(|f| !f.is_empty());
        let Some(mut first) = fields.next() else { continue };
        let mut revoked = false;
        if first.starts_with('@') {
            match first {
                "@revoked" => revoked = true,
                _ => continue, // @cert-authority: host certificates are not accepted
            }
            match fields.next() {
                Some(f) => first = f,
                None => continue,
            }
        }
        let (Some(algo), Some(blob)) = (fields.next(), fields.next()) else {
            tracing::debug!(file = %file.display(), line = i + 1, "known_hosts line without a key: skipped");
            continue;
        };
        let key = match PublicKey::from_openssh(&format!("{algo} {blob}")) {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!(file = %file.display(), line = i + 1, error = %e, "unreadable key in known_hosts: skipped");
                continue;
            }
        };
        let hosts = match hashed(first) {
            Some(h) => h,
            None => Hosts::Patterns(first.split(',').map(|p| p.to_ascii_lowercase()).collect()),
        };
        out.push(Entry { file: file.to_path_buf(), line: i + 1, revoked, hosts, key });
    }
    out
}

fn hashed(field: &str) -> Option<Hosts> {
    let rest = field.strip_prefix("|1|")?;
    let (salt, hash) = rest.split_once('|')?;
    let b64 = data_encoding::BASE64;
    Some(Hosts::Hashed { salt: b64.decode(salt.as_bytes()).ok()?, hash: b64.decode(hash.as_bytes()).ok()? })
}

impl Entry {
    /// Does this line name the host (`name` as from [`host_name`])?
    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        match &self.hosts {
            Hosts::Hashed { salt, hash } => {
                let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else { return false };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            Hosts::Patterns(patterns) => {
                let mut hit = false;
                for p in patterns {
                    if let Some(neg) = p.strip_prefix('!') {
                        if wildcard(neg, &name) {
                            return false;
                        }
                    } else if wildcard(p, &name) {
                        hit = true;
                    }
                }
                hit
            }
        }
    }
}

/// OpenSSH pattern matching: `*` any run of characters, `?` exactly one.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Judge `key` for `host:port` against `entries`.
pub fn check(entries: &[Entry], host: &str, port: u16, key: &PublicKey) -> HostKeyStatus {
    let name = host_name(host, port);
    let mine: Vec<&Entry> = entries.iter().filter(|e| e.matches(&name)).collect();
    if let Some(r) = mine.iter().find(|e| e.revoked && e.key.key_data() == key.key_data()) {
        return HostKeyStatus::Revoked { file: r.file.clone(), line: r.line };
    }
    if let Some(k) = mine.iter().find(|e| !e.revoked && e.key.key_data() == key.key_data()) {
        return HostKeyStatus::Known { file: k.file.clone(), line: k.line };
    }
    let stored: Vec<(PathBuf, usize, String)> = mine
        .iter()
        .filter(|e| !e.revoked)
        .map(|e| (e.file.clone(), e.line, format!("{} {}", e.key.algorithm(), fingerprint(&e.key))))
        .collect();
    if stored.is_empty() { HostKeyStatus::Unknown } else { HostKeyStatus::Changed { stored } }
}

/// Read and judge against several files (missing files count as empty).
pub fn check_files(files: &[PathBuf], host: &str, port: u16, key: &PublicKey) -> HostKeyStatus {
    let mut entries = Vec::new();
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(text) => entries.extend(parse(f, &text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %f.display(), error = %e, "cannot read known_hosts"),
        }
    }
    check(&entries, host, port, key)
}

/// Does a pinned value (`SHA256:...` fingerprint, or `ALGO BASE64` public key) name `key`?
pub fn pin_matches(pin: &str, key: &PublicKey) -> bool {
    let pin = pin.trim();
    if pin.starts_with("SHA256:") {
        return pin == fingerprint(key);
    }
    let mut parts = pin.split([' ', '\t']).filter(|s| !s.is_empty());
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => {
            PublicKey::from_openssh(&format!("{a} {b}")).is_ok_and(|p| p.key_data() == key.key_data())
        }
        _ => false,
    }
}

/// Is `pin` a public key line (`ALGO BASE64 [comment]`)?
pub fn pin_is_key(pin: &str) -> bool {
    let mut parts = pin.split([' ', '\t']).filter(|s| !s.is_empty());
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => PublicKey::from_openssh(&format!("{a} {b}")).is_ok(),
        _ => false,
    }
}

/// Append a key for `host:port` to `file` (created with mode 0600, its folder 0700).
pub fn learn(file: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = file.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let b64 = key.to_openssh().map_err(|e| std::io::Error::other(e.to_string()))?;
    // to_openssh gives "ALGO BASE64 [comment]": keep the first two fields
    let mut parts = b64.split(' ');
    let (algo, blob) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let existing = std::fs::read(file).unwrap_or_default();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(file)?;
    if !existing.is_empty() && !existing.ends_with(b"\n") {
        f.write_all(b"\n")?;
    }
    writeln!(f, "{} {algo} {blob}", host_name(host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ6UNvWbGFnsRTOB6x3W5imEf5BuDI4ZiZ+AF/wiCLCd";
    const K2: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILLZU7TRHZun6bxsnAuopRwbVkmhHf9usu6oj24ufsxy";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn entries(text: &str) -> Vec<Entry> {
        parse(Path::new("kh"), text)
    }

    #[test]
    fn tab_separated_lines_match() {
        let e = entries(&format!("[127.0.0.1]:2222\t{}\n", K1.replace(' ', "\t")));
        assert!(matches!(check(&e, "127.0.0.1", 2222, &key(K1)), HostKeyStatus::Known { line: 1, .. }));
    }

    #[test]
    fn wildcards_and_negation() {
        let e = entries(&format!("*.lab.example,!bad.lab.example,[10.0.0.?]:2222 {K1}\n"));
        assert!(matches!(check(&e, "vm1.lab.example", 22, &key(K1)), HostKeyStatus::Known { .. }));
        assert!(matches!(check(&e, "bad.lab.example", 22, &key(K1)), HostKeyStatus::Unknown));
        assert!(matches!(check(&e, "10.0.0.7", 2222, &key(K1)), HostKeyStatus::Known { .. }));
        assert!(matches!(check(&e, "10.0.0.7", 22, &key(K1)), HostKeyStatus::Unknown));
        assert!(matches!(check(&e, "10.0.0.17", 2222, &key(K1)), HostKeyStatus::Unknown));
        assert!(wildcard("a*b*c", "axxbyyc"));
        assert!(!wildcard("a*b*c", "axxbyy"));
        assert!(wildcard("*", ""));
    }

    #[test]
    fn changed_key_is_not_unknown() {
        let e = entries(&format!("# comment\n\nvm1 {K2} old key\n"));
        match check(&e, "vm1", 22, &key(K1)) {
            HostKeyStatus::Changed { stored } => {
                assert_eq!(stored.len(), 1);
                assert_eq!(stored[0].1, 3);
                assert!(stored[0].2.contains(&fingerprint(&key(K2))), "{stored:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hashed_entries_match_their_host_only() {
        // ssh-keygen -H style entry for "[vm1]:2222", computed here with a fixed salt
        let salt = b"0123456789abcdefghij";
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(b"[vm1]:2222");
        let hash = mac.finalize().into_bytes();
        let b64 = data_encoding::BASE64;
        let line = format!("|1|{}|{} {K1}\n", b64.encode(salt), b64.encode(&hash));
        let e = entries(&line);
        assert!(matches!(check(&e, "vm1", 2222, &key(K1)), HostKeyStatus::Known { .. }));
        assert!(matches!(check(&e, "vm1", 22, &key(K1)), HostKeyStatus::Unknown));
        assert!(matches!(check(&e, "vm2", 2222, &key(K1)), HostKeyStatus::Unknown));
    }

    #[test]
    fn revoked_and_cert_authority_lines() {
        let e = entries(&format!("@revoked * {K1}\n@cert-authority * {K2}\n"));
        assert!(matches!(check(&e, "any", 22, &key(K1)), HostKeyStatus::Revoked { .. }));
        // the CA line is not a host key
        assert!(matches!(check(&e, "any", 22, &key(K2)), HostKeyStatus::Unknown));
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let e = entries(&format!("vm1\nvm1 ssh-ed25519 !!!notbase64\nvm1 {K1}\n"));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 3);
    }

    #[test]
    fn pins_by_fingerprint_or_key() {
        let k = key(K1);
        assert!(pin_matches(&fingerprint(&k), &k));
        assert!(pin_matches(K1, &k));
        assert!(!pin_matches(K2, &k));
        assert!(!pin_matches(&fingerprint(&key(K2)), &k));
        assert!(fingerprint(&k).starts_with("SHA256:"));
    }

    #[test]
    fn learning_appends_a_line_that_then_matches() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub/known_hosts");
        learn(&f, "127.0.0.1", 2222, &key(K1)).unwrap();
        learn(&f, "vm1", 22, &key(K2)).unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("[127.0.0.1]:2222 ssh-ed25519 AAAA"), "{text}");
        assert!(matches!(
            check_files(std::slice::from_ref(&f), "vm1", 22, &key(K2)),
            HostKeyStatus::Known { line: 2, .. }
        ));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
