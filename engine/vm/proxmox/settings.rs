//! The inventory's `proxmox:` block of a `backend: proxmox` target.
//!
//! ```yaml
//! pve-target:
//!   backend: proxmox
//!   proxmox:
//!     url: https://pve.example:8006
//!     node: pve1
//!     vmid: 120                       # the VM to use; or:
//!     # template: 9000                # clone this template per run ...
//!     # clone: linked                 # ... as a linked clone (the only kind)
//!     token_env: PVE_TOKEN            # USER@REALM!TOKENID=SECRET (or token_file)
//!     # token_id: smoke@pve!ci        # when the secret holds only the UUID
//!     # user: smoke@pve               # ticket auth instead of a token ...
//!     # password_env: PVE_PASSWORD    # ... with password_env or password_file
//!     fingerprint: "AB:CD:..."        # or ca: pve-root-ca.pem
//!     shutdown_timeout: 30s
//! ```

use std::time::Duration;

use crate::scenario::decode::{self, MapReader};
use crate::scenario::diagnostic::{Diagnostic, Diagnostics};
use crate::scenario::node::Node;
use crate::secrets::SecretSource;

use super::tls::{Trust, parse_fingerprint};

pub const KEYS: &[&str] = &[
    "url",
    "node",
    "vmid",
    "template",
    "clone",
    "token_env",
    "token_file",
    "token_id",
    "user",
    "password_env",
    "password_file",
    "ca",
    "fingerprint",
    "shutdown_timeout",
];

/// Where the credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthSource {
    Token { secret: SecretSource, token_id: Option<String> },
    Password { user: String, password: SecretSource },
}

/// A decoded `proxmox:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxmoxSettings {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub node: String,
    /// The VM to use directly.
    pub vmid: Option<u32>,
    /// A template to clone (linked) for each run, deleted at teardown.
    pub template: Option<u32>,
    pub auth: AuthSource,
    pub trust: Trust,
    /// How long a graceful shutdown may take before the VM is stopped.
    pub shutdown_timeout: Duration,
}

impl ProxmoxSettings {
    /// The VM whose config and lock matter (`vmid`, else the template).
    pub fn base_vmid(&self) -> u32 {
        self.vmid.or(self.template).unwrap_or_default()
    }
}

fn vmid(node: &Node, what: &str, diags: &mut Diagnostics) -> Option<u32> {
    decode::integer(node, what, 100, 999_999_999, diags).map(|v| v as u32)
}

fn secret(m: &MapReader<'_>, env_key: &str, file_key: &str, diags: &mut Diagnostics) -> Option<Option<SecretSource>> {
    match (m.get(env_key), m.get(file_key)) {
        (None, None) => Some(None),
        (Some(e), None) => decode::non_empty(e, env_key, diags).map(|v| Some(SecretSource::Env(v))),
        (None, Some(f)) => {
            decode::non_empty(f, file_key, diags).map(|p| Some(SecretSource::File(crate::inventory::expand_home(&p))))
        }
        (Some(_), Some(f)) => {
            diags.push(Diagnostic::new(&f.span, format!("give {env_key} or {file_key}, not both")));
            None
        }
    }
}

/// Decode the block; every mistake becomes a diagnostic at its position.
pub fn decode(node: &Node, diags: &mut Diagnostics) -> Option<ProxmoxSettings> {
    let m = MapReader::new(node, "proxmox", KEYS, diags)?;
    let before = diags.len();
    let url_node = m.required("url", diags);
    let url = url_node.and_then(|n| decode::non_empty(n, "proxmox.url", diags));
    let mut host_port = None;
    if let (Some(u), Some(n)) = (&url, url_node) {
        match super::client::parse_url(u) {
            Ok(hp) => host_port = Some(hp),
            Err(e) => diags.push(Diagnostic::new(&n.span, e).with_help("e.g. url: https://pve.example:8006")),
        }
    }
    let node_name = m.required("node", diags).and_then(|n| decode::non_empty(n, "proxmox.node", diags));
    let vm = m.get("vmid").and_then(|n| vmid(n, "proxmox.vmid", diags));
    let template = m.get("template").and_then(|n| vmid(n, "proxmox.template", diags));
    match (m.entry("vmid"), m.entry("template")) {
        (None, None) => diags.push(
            Diagnostic::new(&node.span, "proxmox needs the VM: `vmid: N`, or `template: N` to clone one per run")
                .with_help("`template:` makes a linked clone of that template for each run and deletes it afterwards"),
        ),
        (Some(_), Some(t)) => {
            diags.push(Diagnostic::new(&t.key_span, "give vmid (use a VM) or template (clone one per run), not both"))
        }
        _ => {}
    }
    if let Some(c) = m.get("clone") {
        match decode::string(c, "proxmox.clone", diags).as_deref() {
            Some("linked") if m.has("template") => {}
            Some("linked") => diags.push(Diagnostic::new(&c.span, "clone: linked needs `template:`")),
            Some(other) => diags.push(
                Diagnostic::new(&c.span, format!("unknown clone kind '{other}'"))
                    .with_help("only `linked` clones are made (full clones copy whole disks)"),
            ),
            None => {}
        }
    }
    let token = secret(&m, "token_env", "token_file", diags);
    let password = secret(&m, "password_env", "password_file", diags);
    let user = m.get("user").and_then(|n| decode::non_empty(n, "proxmox.user", diags));
    let token_id = m.get("token_id").and_then(|n| decode::non_empty(n, "proxmox.token_id", diags));
    let auth = match (token, password, user) {
        (Some(Some(secret)), Some(None), None) => Some(AuthSource::Token { secret, token_id }),
        (Some(None), Some(Some(password)), Some(user)) => {
            if let Some(e) = m.entry("token_id") {
                diags.push(Diagnostic::new(&e.key_span, "token_id applies to token_env/token_file only"));
            }
            if !user.contains('@')
                && let Some(n) = m.get("user")
            {
                diags.push(
                    Diagnostic::new(&n.span, format!("user '{user}' has no realm"))
                        .with_help(format!("e.g. {user}@pam or {user}@pve")),
                );
            }
            Some(AuthSource::Password { user, password })
        }
        (Some(None), Some(Some(_)), None) => {
            diags.push(Diagnostic::new(&node.span, "password_env/password_file needs `user:` (e.g. smoke@pve)"));
            None
        }
        (Some(None), Some(None), Some(_)) => {
            diags.push(Diagnostic::new(&node.span, "`user:` needs password_env or password_file"));
            None
        }
        (Some(None), Some(None), None) => {
            diags.push(
                Diagnostic::new(&node.span, "proxmox needs credentials")
                    .with_help("give `token_env: VAR` (USER@REALM!TOKENID=SECRET), or `user:` with `password_env:`"),
            );
            None
        }
        (Some(Some(_)), _, _) => {
            diags.push(Diagnostic::new(&node.span, "give an API token or a user and password, not both"));
            None
        }
        _ => None,
    };
    let trust = match (m.get("ca"), m.get("fingerprint")) {
        (None, None) => Trust::System,
        (Some(c), None) => decode::non_empty(c, "proxmox.ca", diags)
            .map(|p| Trust::CaFile(crate::inventory::expand_home(&p)))
            .unwrap_or(Trust::System),
        (None, Some(f)) => match decode::non_empty(f, "proxmox.fingerprint", diags).map(|t| parse_fingerprint(&t)) {
            Some(Ok(pin)) => Trust::Fingerprint(pin),
            Some(Err(e)) => {
                diags.push(
                    Diagnostic::new(&f.span, e)
                        .with_help("copy it from the PVE GUI: Node > System > Certificates (SHA-256 fingerprint)"),
                );
                Trust::System
            }
            None => Trust::System,
        },
        (Some(_), Some(f)) => {
            diags.push(Diagnostic::new(
                &f.span,
                "give ca (verify against the cluster CA) or fingerprint (pin), not both",
            ));
            Trust::System
        }
    };
    let shutdown_timeout = m
        .get("shutdown_timeout")
        .and_then(|n| decode::duration(n, "proxmox.shutdown_timeout", diags))
        .unwrap_or(Duration::from_secs(30));
    if diags.len() > before {
        return None;
    }
    let (host, port) = host_port?;
    Some(ProxmoxSettings {
        url: url?,
        host,
        port,
        node: node_name?,
        vmid: vm,
        template,
        auth: auth?,
        trust,
        shutdown_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Backend, Inventory};
    use crate::scenario::source::SourceMap;

    fn parse(proxmox: &str) -> Result<ProxmoxSettings, Vec<String>> {
        let text = format!("targets:\n  pve:\n    backend: proxmox\n    proxmox:\n{proxmox}");
        match Inventory::parse("inv.yaml", text.as_bytes(), &mut SourceMap::new()) {
            Ok(inv) => match &inv.target(Some("pve")).unwrap().backend {
                Backend::Proxmox(p) => Ok(p.clone()),
                _ => panic!("not proxmox"),
            },
            Err(d) => Err(d
                .items
                .iter()
                .map(|i| format!("{}:{} {} {}", i.span.line, i.span.col, i.message, i.help.clone().unwrap_or_default()))
                .collect()),
        }
    }

    #[test]
    fn a_token_target_with_a_pin() {
        let fp = vec!["AB"; 32].join(":");
        let p = parse(&format!(
            "      url: https://pve1.example:8006\n      node: pve1\n      vmid: 120\n      token_env: PVE_TOKEN\n      fingerprint: \"{fp}\"\n"
        ))
        .unwrap();
        assert_eq!((p.host.as_str(), p.port, p.node.as_str(), p.vmid), ("pve1.example", 8006, "pve1", Some(120)));
        assert_eq!(p.auth, AuthSource::Token { secret: SecretSource::Env("PVE_TOKEN".into()), token_id: None });
        assert_eq!(p.trust, Trust::Fingerprint([0xAB; 32]));
        assert_eq!(p.shutdown_timeout, Duration::from_secs(30));
    }

    #[test]
    fn a_template_with_ticket_login_and_a_ca() {
        let p = parse("      url: https://10.0.0.5\n      node: pve1\n      template: 9000\n      clone: linked\n      user: smoke@pve\n      password_file: /run/pw\n      ca: /etc/smoke/pve-root-ca.pem\n      shutdown_timeout: 5s\n").unwrap();
        assert_eq!((p.vmid, p.template, p.port), (None, Some(9000), 8006));
        assert_eq!(
            p.auth,
            AuthSource::Password { user: "smoke@pve".into(), password: SecretSource::File("/run/pw".into()) }
        );
        assert_eq!(p.trust, Trust::CaFile("/etc/smoke/pve-root-ca.pem".into()));
    }

    #[test]
    fn mistakes_have_positions() {
        let e = parse("      url: http://pve1:8006\n      node: pve1\n      vmid: 120\n      template: 9000\n      token_env: T\n      fingerprint: \"AB:CD\"\n").unwrap_err();
        assert!(e.iter().any(|m| m.starts_with("5:12 ") && m.contains("HTTPS only")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("8:7 ") && m.contains("not both")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("10:20 ") && m.contains("not a SHA-256 fingerprint")), "{e:?}");
        let e = parse("      url: https://pve1\n      node: pve1\n      vmid: 120\n      user: smoke\n      password_env: P\n      clone: full\n").unwrap_err();
        assert!(
            e.iter().any(|m| m.starts_with("8:13 ") && m.contains("has no realm") && m.contains("smoke@pam")),
            "{e:?}"
        );
        assert!(e.iter().any(|m| m.contains("unknown clone kind 'full'")), "{e:?}");
        let e = parse("      url: https://pve1\n      node: pve1\n      vmid: 120\n").unwrap_err();
        assert!(e.iter().any(|m| m.contains("proxmox needs credentials")), "{e:?}");
        let e = parse(
            "      url: https://pve1\n      node: pve1\n      vmid: 99\n      token_env: T\n      tokn_file: x\n",
        )
        .unwrap_err();
        assert!(e.iter().any(|m| m.starts_with("7:13 ")), "vmid range: {e:?}");
        assert!(e.iter().any(|m| m.starts_with("9:7 unknown key 'tokn_file'")), "{e:?}");
    }
}
