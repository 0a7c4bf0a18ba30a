//! The inventory: which OS targets exist and how to reach each one.
//!
//! ```yaml
//! default: local
//! targets:
//!   local:
//!     backend: local-desktop
//!     family: linux
//!     screen: 1280x720
//!   lab:
//!     backend: vnc
//!     family: linux
//!     vnc: {host: 127.0.0.1, port: 5901, password_env: LAB_VNC_PASSWORD}
//!     vars: {app: galculator}
//!     secrets: {rc_password: {env: RC_PASSWORD}}
//!   tiny-vm:
//!     backend: qemu
//!     qemu: {kernel: target/test-guest/vmlinuz, initrd: target/test-guest/initramfs-ssh.cpio.gz,
//!            append: console=ttyS0 console=tty0, memory: 256, ssh_forward: true}
//!     ssh: {user: root, key: ~/.ssh/id_ed25519, host_key: "ssh-ed25519 AAAA..."}
//! ```
//!
//! The file is looked up as `--inventory FILE`, then `$SMOKE_INVENTORY`, then
//! `inventory.yaml` in the project; without one, the embedded default (one
//! `local` target) is used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::scenario::decode::{self, MapReader};
use crate::scenario::diagnostic::{Diagnostic, Diagnostics};
use crate::scenario::node::{Node, Value};
use crate::scenario::source::{SourceMap, Span};
use crate::scenario::yaml;
use crate::secrets::SecretSource;
use crate::ssh::SshSettings;

/// The inventory shipped with smoke, used when a project has none.
pub const EMBEDDED: &str = include_str!("../inventory.yaml");

/// All targets.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub source: String,
    pub default: Option<String>,
    pub targets: Vec<Target>,
    /// The vision-language model, when one is configured.
    pub vlm: Option<crate::vlm::config::VlmConfig>,
}

/// One OS target.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub family: String,
    pub desktop: Option<String>,
    pub backend: Backend,
    /// Variables for scenarios on this target (override scenario `vars:`).
    pub vars: Vec<(String, Node)>,
    pub secrets: BTreeMap<String, SecretSource>,
    /// SSH access: `shell` and `launch` steps run over it (any backend).
    pub ssh: Option<SshSettings>,
    /// How a launched app finds the desktop session (SSH targets).
    pub session: SessionSpec,
    /// The target's keyboard layout: which keys scancodes press.
    pub keyboard_layout: crate::input::Layout,
    /// Between typed characters on this target (a scenario's own
    /// `defaults.type_interval` or a step's `interval` wins).
    pub type_interval: Option<std::time::Duration>,
    /// Confirm typed text on the screen by default on this target.
    pub type_confirm: Option<bool>,
    /// RFB encodings to offer, in preference order (default: the backend's).
    pub encodings: Option<Vec<crate::rfb::Encoding>>,
    pub span: Span,
}

impl Target {
    /// What this target can do, for `smoke targets` and plan validation.
    pub fn capabilities(&self) -> Vec<&'static str> {
        let mut caps = self.backend.capabilities();
        if self.ssh.is_some() {
            for c in ["shell", "launch", "process-probe", "ssh"] {
                if !caps.contains(&c) {
                    caps.push(c);
                }
            }
        }
        caps
    }
}

/// How apps launched over SSH find the user's desktop session.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionSpec {
    /// Read the environment of the first known session leader (gnome-shell, plasmashell, ...).
    Auto,
    /// Look for these session leaders, in order.
    Leaders(Vec<String>),
    /// Use exactly these variables.
    Env(Vec<(String, String)>),
}

/// How the target is reached.
#[derive(Debug, Clone)]
pub enum Backend {
    LocalDesktop(LocalDesktop),
    Vnc(VncServer),
    /// A VM on a Proxmox VE node.
    Proxmox(crate::vm::proxmox::ProxmoxSettings),
    /// A local QEMU VM started for the run (see docs/VM.md).
    Qemu(crate::vm::qemu::QemuSettings),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::LocalDesktop(_) => "local-desktop",
            Backend::Vnc(_) => "vnc",
            Backend::Proxmox(_) => "proxmox",
            Backend::Qemu(_) => "qemu",
        }
    }

    /// What this backend can do, for `smoke targets`.
    pub fn capabilities(&self) -> Vec<&'static str> {
        match self {
            Backend::LocalDesktop(_) => vec!["vnc", "shell", "launch", "process-probe"],
            Backend::Vnc(_) => vec!["vnc"],
            Backend::Proxmox(_) => vec!["vnc", "snapshots", "linked-clone"],
            Backend::Qemu(q) => {
                let mut caps = vec!["vnc"];
                caps.extend(q.capabilities().names());
                caps
            }
        }
    }
}

/// A private Xvnc desktop started for the run.
#[derive(Debug, Clone)]
pub struct LocalDesktop {
    pub width: u32,
    pub height: u32,
    pub depth: u32,
    /// Window manager command; `None` for a bare X server.
    pub window_manager: Option<Vec<String>>,
    /// Give apps a fresh HOME (and XDG dirs) per run, so no state leaks in.
    pub isolated_home: bool,
    pub xvnc: String,
}

/// An existing VNC server.
#[derive(Debug, Clone)]
pub struct VncServer {
    /// Where it listens, TLS and websocket settings included.
    pub endpoint: crate::rfb::Endpoint,
    pub password: Option<SecretSource>,
    /// For VeNCrypt Plain subtypes.
    pub username: Option<String>,
    /// Certificate checks for VeNCrypt X509 subtypes (and `tls`/`wss` endpoints).
    pub tls: crate::rfb::TlsSettings,
}

pub const VNC_KEYS: &[&str] =
    &["host", "port", "unix", "websocket", "transport", "password_env", "password_file", "username", "tls"];
pub const VNC_TLS_KEYS: &[&str] = &["ca", "fingerprint", "server_name"];

pub const TOP_KEYS: &[&str] = &["default", "targets", "vlm"];
pub const TARGET_KEYS: &[&str] = &[
    "backend",
    "family",
    "desktop",
    "vars",
    "secrets",
    "screen",
    "depth",
    "window_manager",
    "home",
    "xvnc",
    "vnc",
    "proxmox",
    "ssh",
    "session",
    "keyboard_layout",
    "encodings",
    "type_interval",
    "type_confirm",
    "qemu",
];
pub const SSH_KEYS: &[&str] = &[
    "host",
    "port",
    "user",
    "key",
    "key_passphrase",
    "password",
    "agent",
    "known_hosts",
    "host_key",
    "learn_host_key",
    "connect_timeout",
    "wait",
    "keepalive",
];
pub const BACKENDS: &[&str] = &["local-desktop", "vnc", "qemu", "proxmox"];
pub const QEMU_KEYS: &[&str] = &[
    "binary",
    "kernel",
    "initrd",
    "append",
    "disk",
    "iso",
    "memory",
    "cpus",
    "machine",
    "accel",
    "vnc",
    "ssh_forward",
    "tablet",
    "extra_args",
    "shutdown_timeout",
];
pub const FAMILIES: &[&str] = &["linux", "windows", "macos", "other"];

impl Inventory {
    /// Find and load the inventory for a project.
    pub fn locate(
        explicit: Option<&Path>,
        project_root: Option<&Path>,
        sources: &mut SourceMap,
    ) -> Result<Inventory, Diagnostics> {
        let from_env = std::env::var_os("SMOKE_INVENTORY").map(PathBuf::from);
        let file = explicit
            .map(Path::to_path_buf)
            .or(from_env)
            .or_else(|| project_root.map(|r| r.join("inventory.yaml")).filter(|p| p.is_file()));
        match file {
            Some(path) => {
                let name = crate::project::display_path(&path);
                let bytes = std::fs::read(&path).map_err(|e| {
                    let mut d = Diagnostics::new();
                    d.push(Diagnostic::new(&Span::command_line(&name), format!("cannot read inventory {name}: {e}")));
                    d
                })?;
                Inventory::parse(&name, &bytes, sources)
            }
            None => Inventory::parse("<embedded inventory>", EMBEDDED.as_bytes(), sources),
        }
    }

    pub fn parse(name: &str, bytes: &[u8], sources: &mut SourceMap) -> Result<Inventory, Diagnostics> {
        let file: Arc<str> = sources.add(name, &String::from_utf8_lossy(bytes));
        let root = yaml::parse(&file, bytes)?;
        let mut diags = Diagnostics::new();
        let inv = decode_inventory(name, &root, &mut diags);
        match inv {
            Some(inv) if diags.is_empty() => Ok(inv),
            _ => Err(diags),
        }
    }

    /// The target named `os`, or the default one when `os` is `None`.
    pub fn target(&self, os: Option<&str>) -> Result<&Target, String> {
        let name = match os.or(self.default.as_deref()) {
            Some(n) => n,
            None => return Err(format!("no --os given and {} names no default target", self.source)),
        };
        self.targets.iter().find(|t| t.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.targets.iter().map(|t| t.name.as_str()).collect();
            let hint = crate::scenario::diagnostic::did_you_mean(name, names.iter().copied())
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default();
            format!("unknown target '{name}'{hint}; {} has: {}", self.source, names.join(", "))
        })
    }
}

fn decode_inventory(name: &str, root: &Node, diags: &mut Diagnostics) -> Option<Inventory> {
    let m = MapReader::new(root, "the inventory", TOP_KEYS, diags)?;
    let default = m.get("default").and_then(|n| decode::non_empty(n, "default", diags));
    let mut targets = Vec::new();
    if let Some(t) = m.required("targets", diags) {
        match t.as_map() {
            Some(entries) => {
                for e in entries {
                    if let Some(target) = decode_target(&e.key, &e.value, diags) {
                        targets.push(target);
                    }
                }
            }
            None => diags.push(Diagnostic::new(
                &t.span,
                format!("targets must be a map of OS name to target, found {}", t.kind()),
            )),
        }
    }
    if let (Some(d), Some(node)) = (&default, m.get("default"))
        && diags.is_empty()
        && !targets.iter().any(|t| &t.name == d)
    {
        diags.push(Diagnostic::new(&node.span, format!("default target '{d}' is not defined under targets")));
    }
    let vlm = m.get("vlm").and_then(|n| crate::vlm::config::decode(n, diags));
    Some(Inventory { source: name.to_string(), default, targets, vlm })
}

fn decode_target(name: &str, node: &Node, diags: &mut Diagnostics) -> Option<Target> {
    let m = MapReader::new(node, &format!("target '{name}'"), TARGET_KEYS, diags)?;
    let before = diags.len();
    let backend_name = m.required("backend", diags).and_then(|n| {
        let s = decode::string(n, "backend", diags)?;
        if !BACKENDS.contains(&s.as_str()) {
            let d = Diagnostic::new(&n.span, format!("unknown backend '{s}'"));
            diags.push(match crate::scenario::diagnostic::did_you_mean(&s, BACKENDS.iter().copied()) {
                Some(x) => d.with_help(format!("did you mean '{x}'?")),
                None => d.with_help(format!("backends: {}", BACKENDS.join(", "))),
            });
            return None;
        }
        Some(s)
    });
    let family = match m.get("family") {
        None => "linux".to_string(),
        Some(n) => {
            let f = decode::string(n, "family", diags).unwrap_or_default();
            if !FAMILIES.contains(&f.as_str()) {
                diags.push(
                    Diagnostic::new(&n.span, format!("unknown OS family '{f}'"))
                        .with_help(format!("families: {}", FAMILIES.join(", "))),
                );
            }
            f
        }
    };
    let desktop = m.get("desktop").and_then(|n| decode::string(n, "desktop", diags));
    let vars = match m.get("vars") {
        None => Vec::new(),
        Some(n) => match n.as_map() {
            Some(entries) => entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect(),
            None => {
                diags.push(Diagnostic::new(&n.span, format!("vars must be a map, found {}", n.kind())));
                Vec::new()
            }
        },
    };
    let mut secrets = BTreeMap::new();
    if let Some(n) = m.get("secrets") {
        match n.as_map() {
            Some(entries) => {
                for e in entries {
                    if let Some(s) = secret_source(&e.value, &format!("secret '{}'", e.key), diags) {
                        secrets.insert(e.key.clone(), s);
                    }
                }
            }
            None => diags.push(Diagnostic::new(&n.span, format!("secrets must be a map, found {}", n.kind()))),
        }
    }
    let backend = match backend_name.as_deref() {
        Some("local-desktop") => local_desktop(&m, diags).map(Backend::LocalDesktop),
        Some("vnc") => m.required("vnc", diags).and_then(|n| vnc_server(n, diags)).map(Backend::Vnc),
        Some("proxmox") => m
            .required("proxmox", diags)
            .and_then(|n| crate::vm::proxmox::settings::decode(n, diags))
            .map(Backend::Proxmox),
        Some("qemu") => m.required("qemu", diags).and_then(|n| qemu_settings(n, diags)).map(Backend::Qemu),
        _ => None,
    };
    let only_local = ["screen", "depth", "window_manager", "home", "xvnc"];
    let only_vnc = ["vnc"];
    let only_qemu = ["qemu"];
    let only_proxmox = ["proxmox"];
    for e in m.entries() {
        let key = e.key.as_str();
        let misplaced = match backend_name.as_deref() {
            Some("vnc") => only_local.contains(&key) || only_qemu.contains(&key) || only_proxmox.contains(&key),
            Some("local-desktop") => only_vnc.contains(&key) || only_qemu.contains(&key) || only_proxmox.contains(&key),
            Some("qemu") => only_local.contains(&key) || only_vnc.contains(&key) || only_proxmox.contains(&key),
            Some("proxmox") => only_local.contains(&key) || only_vnc.contains(&key) || only_qemu.contains(&key),
            _ => false,
        };
        if misplaced {
            diags.push(Diagnostic::new(
                &e.key_span,
                format!("'{}' does not apply to the {} backend", e.key, backend_name.as_deref().unwrap_or("")),
            ));
        }
    }
    // a QEMU VM with ssh_forward gets its SSH address from the forwarded port
    let forwarded = matches!(&backend, Some(Backend::Qemu(q)) if q.ssh_forward);
    let ssh = m.get("ssh").and_then(|n| ssh_settings(n, forwarded, diags));
    if let (Some(Backend::Qemu(q)), Some(n)) = (&backend, m.get("ssh"))
        && !q.ssh_forward
        && n.as_map().is_some_and(|e| !e.iter().any(|e| e.key == "host"))
    {
        diags.push(
            Diagnostic::new(&n.span, "ssh needs a host, or `ssh_forward: true` under qemu")
                .with_help("with ssh_forward, smoke forwards a loopback port to the guest's port 22 and uses it"),
        );
    }
    let session = match m.get("session") {
        None => SessionSpec::Auto,
        Some(n) => session_spec(n, diags),
    };
    let keyboard_layout = m.get("keyboard_layout").map_or(crate::input::Layout::default(), |n| {
        let name = decode::string(n, "keyboard_layout", diags).unwrap_or_default();
        crate::input::Layout::parse(&name).unwrap_or_else(|| {
            let d = Diagnostic::new(&n.span, format!("unknown keyboard layout '{name}'"));
            let names = crate::input::layout::LAYOUT_NAMES;
            diags.push(match crate::scenario::diagnostic::did_you_mean(&name, names.iter().copied()) {
                Some(x) => d.with_help(format!("did you mean '{x}'?")),
                None => d.with_help(format!("layouts: {}", names.join(", "))),
            });
            crate::input::Layout::default()
        })
    });
    let type_interval = m.get("type_interval").and_then(|n| decode::duration(n, "type_interval", diags));
    let type_confirm = m.get("type_confirm").and_then(|n| decode::boolean(n, "type_confirm", diags));
    let encodings = m.get("encodings").and_then(|n| encodings(n, diags));
    if diags.len() > before {
        return None;
    }
    Some(Target {
        encodings,
        keyboard_layout,
        type_interval,
        type_confirm,
        name: name.to_string(),
        family,
        desktop,
        backend: backend?,
        vars,
        secrets,
        ssh,
        session,
        span: node.span.clone(),
    })
}

/// `encodings: [zrle, hextile, raw]`: names in preference order; lossy ones
/// do not exist (smoke never asks for JPEG).
fn encodings(node: &Node, diags: &mut Diagnostics) -> Option<Vec<crate::rfb::Encoding>> {
    let items = decode::list(node, "encodings", false, diags)?;
    let names = crate::rfb::protocol::ENCODING_NAMES;
    let mut out = Vec::new();
    for n in items {
        let name = decode::string(n, "encoding", diags)?;
        match crate::rfb::Encoding::from_name(&name) {
            Some(e) => out.push(e),
            None => {
                let d = Diagnostic::new(&n.span, format!("unknown encoding '{name}'"));
                diags.push(match crate::scenario::diagnostic::did_you_mean(&name, names.iter().copied()) {
                    Some(x) => d.with_help(format!("did you mean '{x}'?")),
                    None => d.with_help(format!("encodings: {}", names.join(", "))),
                });
            }
        }
    }
    if !out.iter().any(|e| !e.is_pseudo() && !matches!(e, crate::rfb::Encoding::Other(_))) {
        diags.push(
            Diagnostic::new(&node.span, "no encoding that carries pixels")
                .with_help("list at least one of zrle, tight, hextile, trle, raw"),
        );
        return None;
    }
    Some(out)
}

fn secret_source(node: &Node, what: &str, diags: &mut Diagnostics) -> Option<SecretSource> {
    let m = MapReader::new(node, what, &["env", "file"], diags)?;
    match (m.get("env"), m.get("file")) {
        (Some(e), None) => decode::non_empty(e, "env", diags).map(SecretSource::Env),
        (None, Some(f)) => decode::non_empty(f, "file", diags).map(|p| SecretSource::File(expand_home(&p))),
        _ => {
            diags.push(Diagnostic::new(&node.span, format!("{what} needs exactly one of 'env' or 'file'")));
            None
        }
    }
}

/// `host_from_backend`: the backend supplies host and port (a QEMU port forward).
fn ssh_settings(node: &Node, host_from_backend: bool, diags: &mut Diagnostics) -> Option<SshSettings> {
    let m = MapReader::new(node, "ssh", SSH_KEYS, diags)?;
    let before = diags.len();
    let host = if host_from_backend {
        if let Some(e) = m.entry("host").or(m.entry("port")) {
            diags.push(
                Diagnostic::new(&e.key_span, format!("'{}' does not apply with qemu ssh_forward", e.key))
                    .with_help("smoke forwards a free loopback port to the guest's port 22 and connects there"),
            );
        }
        Some(String::new())
    } else {
        m.required("host", diags).and_then(|n| decode::non_empty(n, "ssh.host", diags))
    };
    let user = m.required("user", diags).and_then(|n| decode::non_empty(n, "ssh.user", diags));
    let port = m.get("port").map_or(Some(22), |n| decode::integer(n, "ssh.port", 1, 65535, diags));
    let mut s =
        SshSettings::new(host.as_deref().unwrap_or(""), port.unwrap_or(22) as u16, user.as_deref().unwrap_or(""));
    s.key = m.get("key").and_then(|n| decode::non_empty(n, "ssh.key", diags)).map(|p| expand_home(&p));
    s.key_passphrase = m.get("key_passphrase").and_then(|n| secret_source(n, "ssh.key_passphrase", diags));
    s.password = m.get("password").and_then(|n| secret_source(n, "ssh.password", diags));
    match m.get("agent").map(|n| (n, &n.value)) {
        None => {}
        Some((_, Value::Bool(b))) => s.agent = *b,
        Some((n, Value::Str(_))) => {
            s.agent = true;
            s.agent_socket = decode::non_empty(n, "ssh.agent", diags).map(|p| expand_home(&p));
        }
        Some((n, _)) => {
            diags.push(Diagnostic::new(&n.span, "ssh.agent must be true, false, or the agent's socket path"))
        }
    }
    if let Some(n) = m.get("known_hosts") {
        s.known_hosts = decode::list(n, "ssh.known_hosts", true, diags)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| decode::non_empty(i, "known_hosts file", diags))
            .map(|p| expand_home(&p))
            .collect();
    }
    if let Some(n) = m.get("host_key") {
        s.host_keys = decode::list(n, "ssh.host_key", true, diags)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| {
                let v = decode::non_empty(i, "host key", diags)?;
                let parsed = v.starts_with("SHA256:") || crate::ssh::known_hosts::pin_is_key(&v);
                if !parsed {
                    diags.push(
                        Diagnostic::new(&i.span, format!("'{v}' is not a host key fingerprint"))
                            .with_help("give SHA256:... as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it, or the public key line"),
                    );
                }
                Some(v)
            })
            .collect();
    }
    s.learn_host_key =
        m.get("learn_host_key").and_then(|n| decode::boolean(n, "ssh.learn_host_key", diags)).unwrap_or(false);
    if let Some(d) = m.get("connect_timeout").and_then(|n| decode::duration(n, "ssh.connect_timeout", diags)) {
        s.connect_timeout = d;
    }
    if let Some(d) = m.get("wait").and_then(|n| decode::duration(n, "ssh.wait", diags)) {
        s.wait = d;
    }
    if let Some(d) = m.get("keepalive").and_then(|n| decode::duration(n, "ssh.keepalive", diags)) {
        s.keepalive = d;
    }
    if s.key.is_none() && s.password.is_none() && !s.agent {
        diags.push(
            Diagnostic::new(&node.span, "ssh needs a way to log in")
                .with_help("give `key: ~/.ssh/id_ed25519`, `agent: true`, or `password: {env: VAR}`"),
        );
    }
    if s.key_passphrase.is_some()
        && s.key.is_none()
        && let Some(e) = m.entry("key_passphrase")
    {
        diags.push(Diagnostic::new(&e.key_span, "key_passphrase needs a key"));
    }
    if !s.host_keys.is_empty()
        && s.learn_host_key
        && let Some(e) = m.entry("learn_host_key")
    {
        diags.push(Diagnostic::new(&e.key_span, "learn_host_key does not apply when host_key pins the key"));
    }
    (diags.len() == before && host.is_some() && user.is_some()).then_some(s)
}

fn session_spec(node: &Node, diags: &mut Diagnostics) -> SessionSpec {
    match &node.value {
        Value::Str(s) if s == "auto" => SessionSpec::Auto,
        Value::Seq(items) => {
            SessionSpec::Leaders(items.iter().filter_map(|i| decode::non_empty(i, "session leader", diags)).collect())
        }
        Value::Map(entries) => {
            let mut env = Vec::new();
            for e in entries {
                let valid = !e.key.is_empty()
                    && e.key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !e.key.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    diags
                        .push(Diagnostic::new(&e.key_span, format!("'{}' is not an environment variable name", e.key)));
                    continue;
                }
                if let Some(v) = decode::text(&e.value, "session variable", diags) {
                    env.push((e.key.clone(), v));
                }
            }
            SessionSpec::Env(env)
        }
        _ => {
            diags.push(
                Diagnostic::new(&node.span, "session must be auto, a list of session leaders, or a map of variables")
                    .with_help("e.g. `session: [gnome-shell]` or `session: {DISPLAY: \":0\"}`"),
            );
            SessionSpec::Auto
        }
    }
}

pub(crate) fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

fn local_desktop(m: &MapReader<'_>, diags: &mut Diagnostics) -> Option<LocalDesktop> {
    let (mut width, mut height) = (1280, 720);
    if let Some(n) = m.get("screen") {
        let parsed = n.as_str().and_then(|s| {
            let (w, h) = s.split_once('x')?;
            Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?))
        });
        match parsed {
            Some((w, h)) if (64..=8192).contains(&w) && (64..=8192).contains(&h) => (width, height) = (w, h),
            _ => diags.push(Diagnostic::new(&n.span, "screen must be WIDTHxHEIGHT, e.g. 1280x720 (64..8192)")),
        }
    }
    let depth = match m.get("depth") {
        None => 24,
        Some(n) => match decode::integer(n, "depth", 16, 32, diags)? {
            d @ (16 | 24 | 32) => d as u32,
            _ => {
                diags.push(Diagnostic::new(&n.span, "depth must be 16, 24 or 32"));
                return None;
            }
        },
    };
    let window_manager = match m.get("window_manager") {
        None => Some(vec!["openbox".to_string()]),
        Some(n) => match &n.value {
            Value::Str(s) if s == "none" => None,
            Value::Str(s) => Some(s.split_whitespace().map(str::to_string).collect()),
            Value::Seq(items) => Some(items.iter().filter_map(|i| decode::text(i, "window_manager", diags)).collect()),
            _ => {
                diags.push(Diagnostic::new(&n.span, "window_manager must be a command, a list, or none"));
                return None;
            }
        },
    };
    let isolated_home = match m.get("home") {
        None => true,
        Some(n) => match n.as_str() {
            Some("isolated") => true,
            Some("inherit") => false,
            _ => {
                diags.push(Diagnostic::new(&n.span, "home must be 'isolated' (a fresh HOME per run) or 'inherit'"));
                true
            }
        },
    };
    let xvnc = m.get("xvnc").and_then(|n| decode::non_empty(n, "xvnc", diags)).unwrap_or_else(|| "Xvnc".into());
    Some(LocalDesktop { width, height, depth, window_manager, isolated_home, xvnc })
}

fn qemu_settings(node: &Node, diags: &mut Diagnostics) -> Option<crate::vm::qemu::QemuSettings> {
    use crate::vm::qemu::{Accel, QemuSettings, VncListen};
    let m = MapReader::new(node, "qemu", QEMU_KEYS, diags)?;
    let before = diags.len();
    let mut q = QemuSettings::default();
    let path = |key: &str, diags: &mut Diagnostics| {
        m.get(key).and_then(|n| decode::non_empty(n, &format!("qemu.{key}"), diags)).map(|p| expand_home(&p))
    };
    if let Some(b) = m.get("binary").and_then(|n| decode::non_empty(n, "qemu.binary", diags)) {
        q.binary = b;
    }
    q.kernel = path("kernel", diags);
    q.initrd = path("initrd", diags);
    q.disk = path("disk", diags);
    q.iso = path("iso", diags);
    q.append = m.get("append").and_then(|n| decode::text(n, "qemu.append", diags));
    if q.kernel.is_none() {
        for key in ["initrd", "append"] {
            if let Some(e) = m.entry(key) {
                diags.push(Diagnostic::new(&e.key_span, format!("qemu.{key} needs qemu.kernel")));
            }
        }
    }
    if q.kernel.is_none() && q.disk.is_none() && q.iso.is_none() {
        diags.push(Diagnostic::new(&node.span, "qemu needs something to boot").with_help(
            "give `kernel:` (with initrd/append), `disk:` (an image; each run writes an overlay) or `iso:`",
        ));
    }
    if let Some(n) = m.get("memory") {
        match memory_mib(n) {
            Some(mib) => q.memory_mib = mib,
            None => diags.push(
                Diagnostic::new(&n.span, "memory must be MiB (a number) or a size like 512M or 2G (64M..1024G)")
                    .with_help("the test guest needs at least 128M; 64M does not boot"),
            ),
        }
    }
    if let Some(c) = m.get("cpus").and_then(|n| decode::integer(n, "qemu.cpus", 1, 256, diags)) {
        q.cpus = c as u32;
    }
    if let Some(mc) = m.get("machine").and_then(|n| decode::non_empty(n, "qemu.machine", diags)) {
        q.machine = mc;
    }
    if let Some(n) = m.get("accel") {
        match decode::string(n, "qemu.accel", diags).as_deref() {
            Some("auto") => q.accel = Accel::Auto,
            Some("kvm") => q.accel = Accel::Kvm,
            Some("tcg") => q.accel = Accel::Tcg,
            Some(other) => diags.push(
                Diagnostic::new(&n.span, format!("unknown accel '{other}'"))
                    .with_help("auto (KVM when a probe shows it works, else TCG), kvm or tcg"),
            ),
            None => {}
        }
    }
    if let Some(n) = m.get("vnc") {
        match decode::string(n, "qemu.vnc", diags).as_deref() {
            Some("tcp") => q.vnc = VncListen::Tcp,
            Some("unix") => q.vnc = VncListen::Unix,
            Some(other) => diags.push(
                Diagnostic::new(&n.span, format!("unknown vnc listener '{other}'"))
                    .with_help("tcp (127.0.0.1, a free port, a random password) or unix (a private socket)"),
            ),
            None => {}
        }
    }
    if let Some(b) = m.get("ssh_forward").and_then(|n| decode::boolean(n, "qemu.ssh_forward", diags)) {
        q.ssh_forward = b;
    }
    if let Some(b) = m.get("tablet").and_then(|n| decode::boolean(n, "qemu.tablet", diags)) {
        q.tablet = b;
    }
    if let Some(n) = m.get("extra_args") {
        q.extra_args = match &n.value {
            Value::Str(s) => s.split_whitespace().map(str::to_string).collect(),
            _ => decode::list(n, "qemu.extra_args", false, diags)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| decode::text(i, "qemu.extra_args item", diags))
                .collect(),
        };
    }
    if let Some(d) = m.get("shutdown_timeout").and_then(|n| decode::duration(n, "qemu.shutdown_timeout", diags)) {
        q.shutdown_timeout = d;
    }
    (diags.len() == before).then_some(q)
}

/// `256` (MiB) or `256M`, `256MiB`, `2G`, `2GiB`.
fn memory_mib(node: &Node) -> Option<u32> {
    let text = match &node.value {
        Value::Int(i) => i.to_string(),
        Value::Str(s) => s.trim().to_string(),
        _ => return None,
    };
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let n: u64 = text[..digits_end].parse().ok()?;
    let mib = match text[digits_end..].trim() {
        "" | "M" | "MiB" | "MB" | "m" => n,
        "G" | "GiB" | "GB" | "g" => n.checked_mul(1024)?,
        _ => return None,
    };
    (64..=1024 * 1024).contains(&mib).then_some(mib as u32)
}

fn vnc_server(node: &Node, diags: &mut Diagnostics) -> Option<VncServer> {
    use crate::rfb::{Endpoint, TlsSettings, WebSocketEndpoint, WebSocketUrl};
    let m = MapReader::new(node, "vnc", VNC_KEYS, diags)?;
    let password = match (m.get("password_env"), m.get("password_file")) {
        (None, None) => None,
        (Some(e), None) => decode::non_empty(e, "password_env", diags).map(SecretSource::Env),
        (None, Some(f)) => decode::non_empty(f, "password_file", diags).map(|p| SecretSource::File(expand_home(&p))),
        (Some(_), Some(f)) => {
            diags.push(Diagnostic::new(&f.span, "give password_env or password_file, not both"));
            None
        }
    };
    let username = m.get("username").and_then(|n| decode::non_empty(n, "username", diags));
    let tls = match m.get("tls") {
        None => TlsSettings::default(),
        Some(n) => {
            let t = MapReader::new(n, "tls", VNC_TLS_KEYS, diags)?;
            let settings = TlsSettings {
                ca_file: t.get("ca").and_then(|n| decode::non_empty(n, "ca", diags)).map(|p| expand_home(&p)),
                fingerprint_sha256: t.get("fingerprint").and_then(|n| decode::non_empty(n, "fingerprint", diags)),
                server_name: t.get("server_name").and_then(|n| decode::non_empty(n, "server_name", diags)),
            };
            if let Some(fp) = t.get("fingerprint")
                && let Some(text) = fp.as_str()
                && let Err(e) = crate::rfb::tls::parse_fingerprint(text)
            {
                diags.push(Diagnostic::new(
                    &fp.span,
                    format!("{e}; copy it from `openssl x509 -noout -fingerprint -sha256 -in CERT`"),
                ));
            }
            settings
        }
    };
    let given: Vec<&str> = ["host", "unix", "websocket"].into_iter().filter(|k| m.has(k)).collect();
    if given.len() > 1 {
        if let Some(n) = m.get(given[1]) {
            diags.push(Diagnostic::new(
                &n.span,
                format!("give one of host, unix or websocket, not {}", given.join(" and ")),
            ));
        }
        return None;
    }
    let transport = match m.get("transport") {
        None => None,
        Some(n) => match n.as_str() {
            Some(t @ ("tcp" | "tls")) if m.has("host") => Some(t),
            Some("tcp" | "tls") => {
                diags.push(Diagnostic::new(&n.span, "transport applies to host:port servers only"));
                return None;
            }
            _ => {
                diags.push(Diagnostic::new(&n.span, "transport must be tcp or tls (TLS from the first byte)"));
                return None;
            }
        },
    };
    let endpoint = if let Some(n) = m.get("unix") {
        if let Some(p) = m.get("port") {
            diags.push(Diagnostic::new(&p.span, "a unix socket has no port"));
        }
        Endpoint::Unix(expand_home(&decode::non_empty(n, "unix", diags)?))
    } else if let Some(n) = m.get("websocket") {
        if let Some(p) = m.get("port") {
            diags.push(Diagnostic::new(&p.span, "the websocket URL carries the port"));
        }
        let text = decode::non_empty(n, "websocket", diags)?;
        match WebSocketUrl::parse(&text) {
            Ok(url) => Endpoint::WebSocket(WebSocketEndpoint { url, headers: Vec::new(), tls: tls.clone() }),
            Err(e) => {
                diags.push(Diagnostic::new(&n.span, e.to_string()));
                return None;
            }
        }
    } else {
        let host = m.required("host", diags).and_then(|n| decode::non_empty(n, "host", diags));
        let port = m.get("port").map_or(Some(5900), |n| decode::integer(n, "port", 1, 65535, diags));
        let (host, port) = (host?, port? as u16);
        match transport {
            Some("tls") => Endpoint::Tls { host, port, tls: tls.clone() },
            _ => Endpoint::Tcp { host, port },
        }
    };
    if let Some(ca) = &tls.ca_file
        && !ca.is_file()
        && let Some(n) = m.get("tls")
    {
        diags.push(Diagnostic::new(&n.span, format!("the CA file {} does not exist", ca.display())));
    }
    Some(VncServer { endpoint, password, username, tls })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_inventory_has_local_default() {
        let inv = Inventory::parse("<embedded>", EMBEDDED.as_bytes(), &mut SourceMap::new()).unwrap();
        let t = inv.target(None).unwrap();
        assert_eq!(t.name, "local");
        assert!(matches!(t.backend, Backend::LocalDesktop(_)));
    }

    #[test]
    fn errors_point_into_the_inventory() {
        let text = b"default: lab\ntargets:\n  lab:\n    backend: vnk\n    famly: linux\n";
        let d = Inventory::parse("inv.yaml", text, &mut SourceMap::new()).unwrap_err();
        let msgs: Vec<String> =
            d.items.iter().map(|d| format!("{}:{} {} {:?}", d.span.line, d.span.col, d.message, d.help)).collect();
        assert!(
            msgs.iter().any(|m| m.starts_with("4:14 unknown backend 'vnk'") && m.contains("did you mean 'vnc'")),
            "{msgs:?}"
        );
        assert!(msgs.iter().any(|m| m.starts_with("5:5 unknown key 'famly'") && m.contains("family")), "{msgs:?}");
    }

    #[test]
    fn unknown_target_suggests() {
        let inv = Inventory::parse("<embedded>", EMBEDDED.as_bytes(), &mut SourceMap::new()).unwrap();
        let e = inv.target(Some("locl")).unwrap_err();
        assert!(e.contains("did you mean 'local'"), "{e}");
    }

    #[test]
    fn vnc_target_reads_password_source() {
        let text = b"targets:\n  lab:\n    backend: vnc\n    vnc: {host: 127.0.0.2, port: 5901, password_env: LABPW}\n";
        let inv = Inventory::parse("inv.yaml", text, &mut SourceMap::new()).unwrap();
        match &inv.target(Some("lab")).unwrap().backend {
            Backend::Vnc(v) => {
                assert_eq!(v.endpoint, crate::rfb::Endpoint::tcp("127.0.0.2", 5901));
                assert_eq!(v.password, Some(SecretSource::Env("LABPW".into())));
            }
            _ => panic!("not vnc"),
        }
    }

    #[test]
    fn keyboard_layout_defaults_to_us_and_unknown_ones_are_errors_with_position() {
        let text = b"targets:\n  lab:\n    backend: vnc\n    vnc: {host: 127.0.0.2, port: 5901}\n    keyboard_layout: de\n    type_interval: 50ms\n    type_confirm: true\n";
        let inv = Inventory::parse("inv.yaml", text, &mut SourceMap::new()).unwrap();
        let lab = inv.target(Some("lab")).unwrap();
        assert_eq!(lab.keyboard_layout, crate::input::Layout::De);
        assert_eq!(lab.type_interval, Some(std::time::Duration::from_millis(50)));
        assert_eq!(lab.type_confirm, Some(true));
        let inv = Inventory::parse("<embedded>", EMBEDDED.as_bytes(), &mut SourceMap::new()).unwrap();
        assert_eq!(inv.target(None).unwrap().keyboard_layout, crate::input::Layout::Us);
        let text =
            b"targets:\n  lab:\n    backend: vnc\n    vnc: {host: 127.0.0.2, port: 5901}\n    keyboard_layout: dee\n";
        let d = Inventory::parse("inv.yaml", text, &mut SourceMap::new()).unwrap_err();
        let m =
            format!("{}:{} {} {:?}", d.items[0].span.line, d.items[0].span.col, d.items[0].message, d.items[0].help);
        assert!(m.starts_with("5:22 unknown keyboard layout 'dee'") && m.contains("did you mean 'de'"), "{m}");
    }

    #[test]
    fn encodings_in_preference_order_and_mistakes_with_positions() {
        use crate::rfb::Encoding;
        let text = b"targets:\n  lab:\n    backend: vnc\n    vnc: {host: 127.0.0.2, port: 5901}\n    encodings: [Tight, hextile, raw, desktopsize]\n";
        let inv = Inventory::parse("inv.yaml", text, &mut SourceMap::new()).unwrap();
        assert_eq!(
            inv.target(Some("lab")).unwrap().encodings,
            Some(vec![Encoding::Tight, Encoding::Hextile, Encoding::Raw, Encoding::DesktopSize])
        );
        let embedded = Inventory::parse("<embedded>", EMBEDDED.as_bytes(), &mut SourceMap::new()).unwrap();
        assert_eq!(embedded.target(None).unwrap().encodings, None);
        let text =
            b"targets:\n  lab:\n    backend: vnc\n    vnc: {host: 127.0.0.2, port: 5901}\n    encodings: [zrl, jpeg]\n";
        let d = Inventory::parse("inv.yaml", text, &mut SourceMap::new()).unwrap_err();
        let all: Vec<String> =
            d.items.iter().map(|i| format!("{}:{} {} {:?}", i.span.line, i.span.col, i.message, i.help)).collect();
        assert!(all[0].starts_with("5:17 unknown encoding 'zrl'") && all[0].contains("did you mean 'zrle'"), "{all:?}");
        assert!(all.iter().any(|m| m.contains("unknown encoding 'jpeg'")), "{all:?}");
        let text = b"targets:\n  lab:\n    backend: vnc\n    vnc: {host: 127.0.0.2, port: 5901}\n    encodings: [desktopsize]\n";
        let d = Inventory::parse("inv.yaml", text, &mut SourceMap::new()).unwrap_err();
        assert!(d.items[0].message.contains("no encoding that carries pixels"), "{:?}", d.items);
    }

    #[test]
    fn qemu_targets_and_their_mistakes_with_positions() {
        use crate::vm::qemu::{Accel, VncListen};
        let text = b"targets:\n  vm:\n    backend: qemu\n    qemu:\n      kernel: k\n      initrd: i\n      append: console=ttyS0\n      memory: 1G\n      cpus: 2\n      accel: tcg\n      vnc: unix\n      ssh_forward: true\n      extra_args: -smbios type=1\n      shutdown_timeout: 3s\n    ssh: {user: root, key: /k}\n";
        let inv = Inventory::parse("inv.yaml", text, &mut SourceMap::new()).unwrap();
        let t = inv.target(Some("vm")).unwrap();
        let Backend::Qemu(q) = &t.backend else { panic!("not qemu") };
        assert_eq!((q.memory_mib, q.cpus, q.accel, q.vnc), (1024, 2, Accel::Tcg, VncListen::Unix));
        assert_eq!(q.extra_args, vec!["-smbios", "type=1"]);
        assert_eq!(q.shutdown_timeout, std::time::Duration::from_secs(3));
        assert_eq!(t.ssh.as_ref().map(|s| s.host.as_str()), Some(""), "the forward supplies the host");
        assert_eq!(
            t.capabilities(),
            vec!["vnc", "snapshots", "screendump", "serial", "ssh", "shell", "launch", "process-probe"]
        );
        let text = b"targets:\n  vm:\n    backend: qemu\n    qemu:\n      initrd: i\n      memory: 12\n      accel: hvf\n      vnk: tcp\n    ssh: {user: root, key: /k}\n";
        let d = Inventory::parse("inv.yaml", text, &mut SourceMap::new()).unwrap_err();
        let all: Vec<String> =
            d.items.iter().map(|i| format!("{}:{} {} {:?}", i.span.line, i.span.col, i.message, i.help)).collect();
        for want in [
            "5:7 qemu.initrd needs qemu.kernel",
            "6:15 memory must be MiB",
            "7:14 unknown accel 'hvf'",
            "8:7 unknown key 'vnk'",
        ] {
            assert!(all.iter().any(|m| m.starts_with(want)), "{want} not in {all:?}");
        }
        let text = b"targets:\n  vm:\n    backend: qemu\n    qemu: {kernel: k}\n    ssh: {user: root, key: /k}\n";
        let d = Inventory::parse("inv.yaml", text, &mut SourceMap::new()).unwrap_err();
        assert!(
            d.items.iter().any(|i| i.message.contains("ssh needs a host, or `ssh_forward: true`")),
            "{:?}",
            d.items
        );
    }
}
