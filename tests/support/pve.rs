//! An in-test Proxmox VE node: HTTPS on 127.0.0.1 speaking the documented
//! API (pve-docs api-viewer; pve-http-server's PVE::APIServer::AnyEvent,
//! pve-manager's PVE::HTTPServer, qemu-server's PVE::API2::Qemu,
//! pve-common's PVE::UPID / PVE::Ticket), backed by REAL QEMU running the
//! test guest.
//!
//! What it reproduces (and a test relies on):
//! - `/api2/json` paths; GET/DELETE parameters in the query, POST/PUT as
//!   `application/x-www-form-urlencoded` (or JSON) bodies; parameter checks
//!   (unknown or missing parameters: 400 "Parameter verification failed."
//!   with `errors`); answers as `{"data": ...}`, errors with `message`;
//! - authentication as PVE::APIServer does it: the `PVEAuthCookie` cookie
//!   (or the same in `Authorization`), else `Authorization: PVEAPIToken=...`;
//!   no credentials: 401 "No ticket"; bad ones: 401 "Authentication failed!";
//!   both only in the reason phrase with an empty body, answered after 3 s;
//!   CSRF: every non-GET with a ticket needs a valid `CSRFPreventionToken`
//!   header (401 "Permission denied - invalid csrf token"), tokens need none;
//!   `POST /access/ticket` takes a password or a still valid ticket
//!   (renewal), 401 "authentication failure" otherwise; tickets expire;
//! - UPIDs `UPID:node:PID:PSTART:STARTTIME:type:id:user:`, tasks with a log
//!   ending in `TASK OK` / `TASK ERROR: msg`, `tasks/{upid}/status` and `/log`;
//! - VMs as QEMU processes: `-vnc unix:...,password=on`, the VNC password
//!   set over QMP (`set_password`, `expire_password +30`) when the vncproxy
//!   connection arrives, as `qm vncproxy` does; power operations; snapshots
//!   with RAM through HMP `savevm`/`delvm` on a qcow2 disk, rolled back as
//!   qemu-server does it: the running QEMU is stopped and a new one starts on
//!   the saved state (`-loadvm`), so VNC connections end; linked
//!   clones from templates as qcow2 overlays on the base image (dir storage),
//!   refused from non-templates; `/cluster/nextid`;
//! - `vncproxy` (a port in 5900..5999 that accepts one connection for 10 s,
//!   a ticket bound to user, VM and port that lives 40 s, a one-time
//!   password) and `vncwebsocket` (RFC 6455: version 13, the client's
//!   subprotocol echoed, client frames must be masked, unfragmented, without
//!   RSV bits and at most 128 KiB, server frames unmasked binary).
//!
//! Not reproduced: permissions (every authenticated user may do everything),
//! clusters (one node; another node name is an error), HA, storage other
//! than one `local` dir storage, TFA, the GUI.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use data_encoding::BASE64;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// The longest websocket frame either side may send (pve-http-server's `$max_payload_size`).
pub const MAX_FRAME: usize = 128 * 1024;

/// Certificates made with the `openssl` CLI for one test.
pub struct Certs {
    pub dir: PathBuf,
    /// The CA that signed the node certificate (PEM), like /etc/pve/pve-root-ca.pem.
    pub ca_pem: PathBuf,
    pub node_pem: PathBuf,
    pub node_key: PathBuf,
    /// SHA-256 of the node certificate, `AB:CD:...`.
    pub fingerprint: String,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Certs {
    /// A CA and a node certificate for 127.0.0.1 and localhost.
    pub fn generate(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=smoke test PVE Cluster CA"]);
        ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(dir, &ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend(["-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=pve-test.local"]);
        openssl(dir, &csr);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "node.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "node.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        let der = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(["x509", "-in", "node.pem", "-outform", "DER"])
            .output()
            .unwrap()
            .stdout;
        let digest = ring::digest::digest(&ring::digest::SHA256, &der);
        let fingerprint = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        Certs {
            dir: dir.to_path_buf(),
            ca_pem: dir.join("ca.pem"),
            node_pem: dir.join("node.pem"),
            node_key: dir.join("node.key"),
            fingerprint,
        }
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<_> =
            rustls::pki_types::CertificateDer::pem_file_iter(&self.node_pem).unwrap().map(|c| c.unwrap()).collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&self.node_key).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Arc::new(cfg)
    }
}

/// Setup of the node.
#[derive(Clone)]
pub struct Options {
    pub node: String,
    /// `user@realm` -> password.
    pub users: Vec<(String, String)>,
    /// `user@realm!tokenid` -> secret.
    pub tokens: Vec<(String, String)>,
    /// PVE answers unauthorized calls after 3 s.
    pub unauthorized_delay: Duration,
    /// PVE tickets live 2 h.
    pub ticket_lifetime: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            node: "pve-test".into(),
            users: vec![("root@pam".into(), "test-root-password".into())],
            tokens: vec![("root@pam!smoke".into(), "3f1e7c52-8d4a-4c1b-9a67-0b2c5d9e1f00".into())],
            unauthorized_delay: Duration::from_secs(3),
            ticket_lifetime: Duration::from_secs(2 * 3600),
        }
    }
}

/// What happened, for assertions.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub logins: usize,
    /// `POST /access/ticket` with a ticket as the password.
    pub renewals: usize,
    pub csrf_refusals: usize,
    /// (method, path, "token" | "ticket" | "none") per API request.
    pub requests: Vec<(String, String, String)>,
    pub websocket_upgrades: usize,
    /// Bytes carried websocket -> VNC and VNC -> websocket.
    pub ws_bytes_in: usize,
    pub ws_bytes_out: usize,
}

struct Snapshot {
    description: String,
    snaptime: u64,
    vmstate: bool,
    parent: Option<String>,
}

struct Vm {
    config: BTreeMap<String, String>,
    snapshots: BTreeMap<String, Snapshot>,
    qemu: Option<Qemu>,
}

struct Qemu {
    child: std::process::Child,
    qmp: PathBuf,
    vnc: PathBuf,
    started: Instant,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

struct Task {
    upid: String,
    log: Vec<String>,
    /// `None` while running.
    exitstatus: Option<String>,
}

struct State {
    opts: Options,
    key: Vec<u8>,
    dir: PathBuf,
    vms: BTreeMap<u32, Vm>,
    tasks: HashMap<String, Task>,
    counters: Counters,
    next_pid: u32,
}

type Shared = Arc<Mutex<State>>;

/// The node; QEMU processes die with it.
pub struct PveServer {
    pub port: u16,
    pub certs: Certs,
    state: Shared,
    accept: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for PveServer {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(mut s) = self.state.lock() {
            for vm in s.vms.values_mut() {
                vm.qemu = None;
            }
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn hmac(key: &[u8], data: &str) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    BASE64.encode(ring::hmac::sign(&k, data.as_bytes()).as_ref()).trim_end_matches('=').to_string()
}

impl PveServer {
    pub async fn start(opts: Options) -> PveServer {
        let dir = tempfile::tempdir().unwrap();
        let certs = Certs::generate(&dir.path().join("certs"));
        std::fs::create_dir_all(dir.path().join("images")).unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).unwrap();
        let state = Arc::new(Mutex::new(State {
            opts,
            key,
            dir: dir.path().to_path_buf(),
            vms: BTreeMap::new(),
            tasks: HashMap::new(),
            counters: Counters::default(),
            next_pid: 0x1000,
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(certs.server_config());
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                let st = st.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve_connection(st, tls).await;
                    }
                });
            }
        });
        PveServer { port, certs, state, accept, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn node(&self) -> String {
        self.state.lock().unwrap().opts.node.clone()
    }

    pub fn counters(&self) -> Counters {
        self.state.lock().unwrap().counters.clone()
    }

    pub fn token(&self) -> String {
        let s = self.state.lock().unwrap();
        let (id, secret) = &s.opts.tokens[0];
        format!("{id}={secret}")
    }

    /// Create a VM running the test guest: a 64 MiB qcow2 disk in the
    /// `local` dir storage (`base-` for templates) and `args` that boot the
    /// guest's kernel and initramfs. `extra` config keys override defaults.
    pub fn add_vm(&self, vmid: u32, template: bool, extra: &[(&str, &str)]) {
        let guest = crate::support::repo().join("target/test-guest");
        let dir = self.state.lock().unwrap().dir.clone();
        let prefix = if template { "base" } else { "vm" };
        let file = format!("{vmid}/{prefix}-{vmid}-disk-0.qcow2");
        let path = dir.join("images").join(&file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let out = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&path)
            .arg("64M")
            .output()
            .expect("qemu-img");
        assert!(out.status.success(), "qemu-img: {}", String::from_utf8_lossy(&out.stderr));
        let mut config: BTreeMap<String, String> = [
            ("name", format!("test-{vmid}")),
            ("memory", "256".into()),
            ("cores", "1".into()),
            ("vga", "std".into()),
            ("machine", "q35".into()),
            ("ostype", "l26".into()),
            ("scsi0", format!("local:{file},size=64M")),
            (
                "args",
                format!(
                    "-kernel {} -initrd {} -append 'console=ttyS0 console=tty0 quiet loglevel=3 no_timer_check'",
                    guest.join("vmlinuz").display(),
                    guest.join("initramfs.cpio.gz").display()
                ),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if template {
            config.insert("template".into(), "1".into());
        }
        for (k, v) in extra {
            config.insert(k.to_string(), v.to_string());
        }
        self.state.lock().unwrap().vms.insert(vmid, Vm { config, snapshots: BTreeMap::new(), qemu: None });
    }

    pub fn has_vm(&self, vmid: u32) -> bool {
        self.state.lock().unwrap().vms.contains_key(&vmid)
    }

    pub fn vm_config(&self, vmid: u32) -> Option<BTreeMap<String, String>> {
        self.state.lock().unwrap().vms.get(&vmid).map(|v| v.config.clone())
    }

    pub fn is_running(&self, vmid: u32) -> bool {
        let mut s = self.state.lock().unwrap();
        s.vms.get_mut(&vmid).is_some_and(vm_running)
    }

    /// The QEMU screen of a running VM as PPM bytes (QMP `screendump`).
    pub async fn screendump(&self, vmid: u32) -> Vec<u8> {
        let (qmp, dir) = {
            let s = self.state.lock().unwrap();
            (s.vms[&vmid].qemu.as_ref().expect("VM runs").qmp.clone(), s.dir.clone())
        };
        let file = dir.join(format!("run/{vmid}-{}.ppm", now_nanos()));
        qmp_command(&qmp, "screendump", json!({"filename": file.display().to_string()})).await.unwrap();
        let bytes = std::fs::read(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        bytes
    }

    /// Type text on the guest's console with QMP `send-key` (no VNC involved).
    pub async fn send_text(&self, vmid: u32, text: &str) {
        let qmp = self.state.lock().unwrap().vms[&vmid].qemu.as_ref().expect("VM runs").qmp.clone();
        for c in text.chars() {
            let (key, shift) = match c {
                'a'..='z' | '0'..='9' => (c.to_string(), false),
                'A'..='Z' => (c.to_ascii_lowercase().to_string(), true),
                ' ' => ("spc".into(), false),
                '\n' => ("ret".into(), false),
                '-' => ("minus".into(), false),
                '=' => ("equal".into(), false),
                '.' => ("dot".into(), false),
                _ => panic!("send_text: no key for {c:?}"),
            };
            let mut keys = Vec::new();
            if shift {
                keys.push(json!({"type": "qcode", "data": "shift"}));
            }
            keys.push(json!({"type": "qcode", "data": key}));
            qmp_command(&qmp, "send-key", json!({"keys": keys})).await.unwrap();
        }
    }

    /// The serial console log of a VM's current QEMU.
    pub fn serial(&self, vmid: u32) -> String {
        let dir = self.state.lock().unwrap().dir.clone();
        std::fs::read_to_string(dir.join(format!("run/{vmid}.serial"))).unwrap_or_default()
    }
}

fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

fn vm_running(vm: &mut Vm) -> bool {
    match vm.qemu.as_mut() {
        Some(q) => match q.child.try_wait() {
            Ok(None) => true,
            _ => {
                vm.qemu = None;
                false
            }
        },
        None => false,
    }
}

// ---------------------------------------------------------------- HTTP

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An answer: status, reason phrase, body (None: empty), delay before sending.
struct Response {
    status: u16,
    reason: String,
    body: Option<Value>,
    delay: Duration,
}

impl Response {
    fn ok(data: Value) -> Response {
        Response { status: 200, reason: "OK".into(), body: Some(json!({ "data": data })), delay: Duration::ZERO }
    }

    /// A handler error as PVE's JSON formatter writes it.
    fn error(status: u16, message: &str) -> Response {
        let message = format!("{}\n", message.trim_end());
        Response {
            status,
            reason: message.lines().next().unwrap_or_default().to_string(),
            body: Some(json!({ "data": null, "message": message })),
            delay: Duration::ZERO,
        }
    }

    fn param_errors(errors: BTreeMap<String, String>) -> Response {
        let mut r = Response::error(400, "Parameter verification failed.");
        let errs: serde_json::Map<String, Value> = errors.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        r.body = Some(json!({ "data": null, "message": "Parameter verification failed.\n", "errors": errs }));
        r
    }
}

fn uri_unescape(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `decode_urlencoded` of PVE::APIServer::AnyEvent: `&` or `;` separated, `+` is a space.
fn decode_urlencoded(data: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for kv in data.split(['&', ';']).filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        out.insert(uri_unescape(&k.replace('+', " ")), uri_unescape(&v.replace('+', " ")));
    }
    out
}

async fn read_request<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).await.ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.ok()?;
    let (path, query) = target.split_once('?').map_or((target.clone(), String::new()), |(p, q)| (p.into(), q.into()));
    Some(Request { method, path: uri_unescape(&path), query, headers, body })
}

async fn write_response<W: AsyncWrite + Unpin>(w: &mut W, resp: &Response) -> std::io::Result<()> {
    if !resp.delay.is_zero() {
        tokio::time::sleep(resp.delay).await;
    }
    let body = resp.body.as_ref().map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, resp.reason);
    head.push_str("Server: pve-api-daemon/3.0\r\nCache-Control: max-age=0\r\nPragma: no-cache\r\n");
    if resp.body.is_some() {
        head.push_str("Content-Type: application/json;charset=UTF-8\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    head.push_str(if resp.status >= 400 { "Connection: close\r\n\r\n" } else { "Connection: Keep-Alive\r\n\r\n" });
    w.write_all(head.as_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    st: Shared,
    stream: S,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let Some(req) = read_request(&mut reader).await else { return Ok(()) };
        let started = Instant::now();
        let outcome = handle(&st, &req).await;
        match outcome {
            Outcome::Upgrade { port, accept, proto } => {
                let mut head = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
                );
                if !proto.is_empty() {
                    head.push_str(&format!("Sec-WebSocket-Protocol: {proto}\r\n"));
                }
                head.push_str("\r\n");
                let Ok(vnc) = TcpStream::connect(("127.0.0.1", port)).await else { return Ok(()) };
                reader.get_mut().write_all(head.as_bytes()).await?;
                st.lock().unwrap().counters.websocket_upgrades += 1;
                return websocket_proxy(st, reader, vnc).await;
            }
            Outcome::Reply(mut resp) => {
                if resp.status == 401 {
                    resp.delay = st.lock().unwrap().opts.unauthorized_delay.saturating_sub(started.elapsed());
                }
                write_response(reader.get_mut(), &resp).await?;
                if resp.status >= 400 {
                    return Ok(());
                }
            }
        }
    }
}

enum Outcome {
    Reply(Response),
    Upgrade { port: u16, accept: String, proto: String },
}

/// `extract_auth_value` of PVE::APIServer::Formatter.
fn auth_value(header: Option<&str>, key: &str) -> Option<String> {
    let h = header?;
    let mut search = h;
    loop {
        let idx = search.find(key)?;
        let before_ok = idx == 0 || search[..idx].ends_with(char::is_whitespace);
        let rest = &search[idx + key.len()..];
        if before_ok && (rest.starts_with('=') || rest.starts_with(' ')) {
            let v = rest[1..].split(';').next().unwrap_or("");
            return Some(uri_unescape(v)).filter(|v| !v.is_empty());
        }
        search = &search[idx + key.len()..];
    }
}

fn verify_ticket(s: &State, ticket: &str) -> Option<String> {
    // PVE:<user>:<HEXTIME>::<signature>
    let (plain, sig) = ticket.split_once("::")?;
    let rest = plain.strip_prefix("PVE:")?;
    let (user, time) = rest.rsplit_once(':')?;
    if hmac(&s.key, plain) != sig {
        return None;
    }
    let issued = u64::from_str_radix(time, 16).ok()?;
    let age = now_secs() as i64 - issued as i64;
    (age > -300 && (age as u64) < s.opts.ticket_lifetime.as_secs()).then(|| uri_unescape(user))
}

fn make_ticket(s: &State, user: &str) -> String {
    let plain = format!("PVE:{}:{:08X}", user.replace(':', "%3A"), now_secs());
    format!("{plain}::{}", hmac(&s.key, &plain))
}

fn make_csrf(s: &State, user: &str) -> String {
    let ts = format!("{:08X}", now_secs());
    format!("{ts}:{}", hmac(&s.key, &format!("{ts}:{user}")))
}

fn verify_csrf(s: &State, user: &str, token: Option<&str>) -> bool {
    let Some((ts, sig)) = token.and_then(|t| t.split_once(':')) else { return false };
    let Ok(t) = u64::from_str_radix(ts, 16) else { return false };
    let age = now_secs() as i64 - t as i64;
    ts.len() == 8
        && hmac(&s.key, &format!("{ts}:{user}")) == sig
        && age > -300
        && (age as u64) < s.opts.ticket_lifetime.as_secs()
}

fn vnc_ticket(s: &State, user: &str, vmid: u32, port: u16) -> String {
    let plain = format!("PVEVNC:{:08X}", now_secs());
    format!("{plain}::{}", hmac(&s.key, &format!("{plain}:{user}:/vms/{vmid}:{port}")))
}

fn verify_vnc_ticket(s: &State, ticket: &str, user: &str, vmid: u32, port: u16) -> bool {
    // "password:PVEVNC:..." is accepted like verify_vnc_ticket does
    // (the 8-character password may itself contain ':')
    let t = match (ticket.get(..8), ticket.get(8..)) {
        (Some(_), Some(rest)) if rest.starts_with(":PVEVNC:") => &rest[1..],
        _ => ticket,
    };
    let Some((plain, sig)) = t.split_once("::") else { return false };
    let Some(time) = plain.strip_prefix("PVEVNC:") else { return false };
    let Ok(issued) = u64::from_str_radix(time, 16) else { return false };
    let age = now_secs() as i64 - issued as i64;
    hmac(&s.key, &format!("{plain}:{user}:/vms/{vmid}:{port}")) == sig && age > -20 && age < 40
}

/// Who is calling, as auth_handler decides it.
enum Caller {
    Token(String),
    Ticket(String),
}

impl Caller {
    fn user(&self) -> &str {
        match self {
            Caller::Token(u) | Caller::Ticket(u) => u,
        }
    }
}

fn unauthorized(reason: &str) -> Response {
    Response { status: 401, reason: reason.into(), body: None, delay: Duration::ZERO }
}

async fn handle(st: &Shared, req: &Request) -> Outcome {
    let Some(rel) = req.path.strip_prefix("/api2/json") else {
        return Outcome::Reply(Response {
            status: 501,
            reason: "no such uri".into(),
            body: None,
            delay: Duration::ZERO,
        });
    };
    let rel = rel.trim_end_matches('/').to_string();
    let mut params = BTreeMap::new();
    if req.method == "POST" || req.method == "PUT" {
        let ct = req.header("Content-Type").unwrap_or("");
        if ct.starts_with("application/json") {
            if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(&req.body) {
                for (k, v) in o {
                    params.insert(k, v.as_str().map_or_else(|| v.to_string(), str::to_string));
                }
            }
        } else {
            params = decode_urlencoded(&String::from_utf8_lossy(&req.body));
        }
    }
    params.extend(decode_urlencoded(&req.query));
    params.remove("_dc");

    // auth_handler
    let no_auth = rel == "/access/ticket" && (req.method == "GET" || req.method == "POST");
    let ticket = auth_value(req.header("Cookie"), "PVEAuthCookie")
        .or_else(|| auth_value(req.header("Authorization"), "PVEAuthCookie"));
    let token = if ticket.is_none() { auth_value(req.header("Authorization"), "PVEAPIToken") } else { None };
    let kind = if ticket.is_some() {
        "ticket"
    } else if token.is_some() {
        "token"
    } else {
        "none"
    };
    st.lock().unwrap().counters.requests.push((req.method.clone(), rel.clone(), kind.into()));
    let caller = if no_auth {
        None
    } else {
        let s = st.lock().unwrap();
        if let Some(t) = &token {
            let ok =
                t.split_once('=').is_some_and(|(id, secret)| s.opts.tokens.iter().any(|(i, v)| i == id && v == secret));
            if !ok {
                return Outcome::Reply(unauthorized("Authentication failed!"));
            }
            Some(Caller::Token(t.split_once('=').map(|(id, _)| id.to_string()).unwrap_or_default()))
        } else {
            let Some(t) = &ticket else { return Outcome::Reply(unauthorized("No ticket")) };
            let Some(user) = verify_ticket(&s, t) else {
                return Outcome::Reply(unauthorized("Authentication failed!"));
            };
            if req.method != "GET" && !verify_csrf(&s, &user, req.header("CSRFPreventionToken")) {
                drop(s);
                st.lock().unwrap().counters.csrf_refusals += 1;
                return Outcome::Reply(unauthorized("Permission denied - invalid csrf token"));
            }
            Some(Caller::Ticket(user))
        }
    };

    let upgrade = req.header("Upgrade").map(str::to_ascii_lowercase);
    if req.method == "GET" && rel.ends_with("vncwebsocket") && upgrade.is_some() {
        return websocket_request(st, req, &rel, &params, caller.as_ref());
    }
    Outcome::Reply(route(st, &req.method, &rel, params, caller.as_ref()).await)
}

/// Check parameters like PVE's JSON schema: unknown and missing ones are 400.
fn check_params(
    params: &BTreeMap<String, String>,
    allowed: &[&str],
    required: &[&str],
    booleans: &[&str],
) -> Option<Response> {
    let mut errors = BTreeMap::new();
    for k in params.keys() {
        if !allowed.contains(&k.as_str()) && !required.contains(&k.as_str()) {
            errors.insert(
                k.clone(),
                "property is not defined in schema and the schema does not allow additional properties".to_string(),
            );
        }
    }
    for r in required {
        if !params.contains_key(*r) {
            errors.insert(r.to_string(), "property is missing and it is not optional".into());
        }
    }
    for b in booleans {
        if let Some(v) = params.get(*b)
            && !matches!(v.to_ascii_lowercase().as_str(), "0" | "1" | "true" | "false" | "yes" | "no" | "on" | "off")
        {
            errors.insert(b.to_string(), format!("type check ('boolean') failed - got '{v}'"));
        }
    }
    (!errors.is_empty()).then(|| Response::param_errors(errors))
}

fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

fn new_task(st: &Shared, node: &str, kind: &str, id: &str, user: &str) -> String {
    let mut s = st.lock().unwrap();
    s.next_pid += 1;
    let upid = format!("UPID:{node}:{:08X}:{:08X}:{:08X}:{kind}:{id}:{user}:", s.next_pid, s.next_pid * 7, now_secs());
    s.tasks.insert(upid.clone(), Task { upid: upid.clone(), log: Vec::new(), exitstatus: None });
    upid
}

fn task_log(st: &Shared, upid: &str, line: &str) {
    if let Some(t) = st.lock().unwrap().tasks.get_mut(upid) {
        t.log.push(line.to_string());
    }
}

fn task_end(st: &Shared, upid: &str, result: Result<(), String>) {
    if let Some(t) = st.lock().unwrap().tasks.get_mut(upid) {
        match result {
            Ok(()) => {
                t.log.push("TASK OK".into());
                t.exitstatus = Some("OK".into());
            }
            Err(e) => {
                let e = e.trim_end().to_string();
                t.log.push(format!("TASK ERROR: {e}"));
                t.exitstatus = Some(e);
            }
        }
    }
}

/// `fork_worker`: run `work` as a task and answer its UPID.
fn fork_worker<F>(st: &Shared, kind: &str, vmid: u32, user: &str, work: F) -> Response
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let node = st.lock().unwrap().opts.node.clone();
    let upid = new_task(st, &node, kind, &vmid.to_string(), user);
    let st2 = st.clone();
    let u = upid.clone();
    tokio::spawn(async move {
        let r = work.await;
        task_end(&st2, &u, r);
    });
    Response::ok(Value::String(upid))
}

fn config_missing(node: &str, vmid: u32) -> Response {
    Response::error(500, &format!("Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"))
}

async fn route(
    st: &Shared,
    method: &str,
    rel: &str,
    params: BTreeMap<String, String>,
    caller: Option<&Caller>,
) -> Response {
    let segs: Vec<&str> = rel.trim_start_matches('/').split('/').collect();
    let user = caller.map(|c| c.user().to_string()).unwrap_or_default();
    let node = st.lock().unwrap().opts.node.clone();
    match (method, segs.as_slice()) {
        ("POST", ["access", "ticket"]) => login(st, params),
        ("GET", ["cluster", "nextid"]) => {
            if let Some(r) = check_params(&params, &["vmid"], &[], &[]) {
                return r;
            }
            let s = st.lock().unwrap();
            if let Some(v) = params.get("vmid") {
                let id: u32 = v.parse().unwrap_or(0);
                if s.vms.contains_key(&id) {
                    return Response::param_errors(BTreeMap::from([(
                        "vmid".into(),
                        format!("VM {id} already exists"),
                    )]));
                }
                return Response::ok(Value::String(v.clone()));
            }
            let id = (100u32..).find(|i| !s.vms.contains_key(i)).unwrap();
            Response::ok(json!(id))
        }
        (_, ["nodes", n, ..]) if *n != node => Response::error(
            500,
            &format!("hostname lookup '{n}' failed - failed to get address info for: {n}: Name or service not known"),
        ),
        ("GET", ["nodes", _, "tasks", upid, "status"]) => {
            let s = st.lock().unwrap();
            let Some(t) = s.tasks.get(*upid) else {
                return Response::param_errors(BTreeMap::from([("upid".into(), "no such task".into())]));
            };
            let f: Vec<&str> = t.upid.split(':').collect();
            let hex = |x: &str| u64::from_str_radix(x, 16).unwrap_or(0);
            let mut d = json!({
                "upid": t.upid, "node": f[1], "pid": hex(f[2]), "pstart": hex(f[3]), "starttime": hex(f[4]),
                "type": f[5], "id": f[6], "user": f[7],
                "status": if t.exitstatus.is_some() { "stopped" } else { "running" },
            });
            if let Some(e) = &t.exitstatus {
                d["exitstatus"] = Value::String(e.clone());
            }
            Response::ok(d)
        }
        ("GET", ["nodes", _, "tasks", upid, "log"]) => {
            if let Some(r) = check_params(&params, &["start", "limit", "download"], &[], &["download"]) {
                return r;
            }
            let s = st.lock().unwrap();
            let Some(t) = s.tasks.get(*upid) else {
                return Response::param_errors(BTreeMap::from([("upid".into(), "unable to parse worker upid".into())]));
            };
            let start: usize = params.get("start").and_then(|v| v.parse().ok()).unwrap_or(0);
            let limit: usize = params.get("limit").and_then(|v| v.parse().ok()).unwrap_or(50);
            let lines: Vec<Value> =
                t.log.iter().enumerate().skip(start).take(limit).map(|(i, l)| json!({"n": i + 1, "t": l})).collect();
            let mut r = Response::ok(Value::Array(lines));
            if let Some(b) = r.body.as_mut() {
                b["total"] = json!(t.log.len());
            }
            r
        }
        (_, ["nodes", _, "qemu", id, rest @ ..]) => {
            let Ok(vmid) = id.parse::<u32>() else {
                return Response::param_errors(BTreeMap::from([(
                    "vmid".into(),
                    "type check ('integer') failed".into(),
                )]));
            };
            vm_route(st, method, vmid, rest, params, &user, &node).await
        }
        _ => Response {
            status: 501,
            reason: format!("Method '{method} {rel}' not implemented"),
            body: None,
            delay: Duration::ZERO,
        },
    }
}

fn login(st: &Shared, params: BTreeMap<String, String>) -> Response {
    if let Some(r) = check_params(
        &params,
        &["realm", "otp", "path", "privs", "new-format", "tfa-challenge"],
        &["username", "password"],
        &["new-format"],
    ) {
        return r;
    }
    let mut s = st.lock().unwrap();
    let mut username = params["username"].clone();
    if let Some(realm) = params.get("realm") {
        username = format!("{username}@{realm}");
    }
    let password = &params["password"];
    let by_ticket = verify_ticket(&s, password).filter(|u| *u == username || u == "root@pam");
    let by_password = s.opts.users.iter().any(|(u, p)| *u == username && p == password);
    if by_ticket.is_none() && !by_password {
        return Response::error(401, "authentication failure");
    }
    if by_ticket.is_some() {
        s.counters.renewals += 1;
    } else {
        s.counters.logins += 1;
    }
    let ticket = make_ticket(&s, &username);
    let csrf = make_csrf(&s, &username);
    Response::ok(json!({
        "username": username, "ticket": ticket, "CSRFPreventionToken": csrf,
        "cap": {"vms": {"VM.PowerMgmt": 1, "VM.Console": 1, "VM.Snapshot": 1, "VM.Audit": 1}},
    }))
}

const CONFIG_KEYS: &[&str] = &[
    "name",
    "memory",
    "cores",
    "sockets",
    "vga",
    "machine",
    "tablet",
    "ostype",
    "args",
    "description",
    "scsi0",
    "boot",
    "agent",
    "onboot",
    "tags",
];

async fn vm_route(
    st: &Shared,
    method: &str,
    vmid: u32,
    rest: &[&str],
    params: BTreeMap<String, String>,
    user: &str,
    node: &str,
) -> Response {
    let exists = st.lock().unwrap().vms.contains_key(&vmid);
    if !(exists || method == "POST" && rest.is_empty()) {
        return config_missing(node, vmid);
    }
    match (method, rest) {
        ("GET", ["status", "current"]) => {
            let (mut d, qmp) = {
                let mut s = st.lock().unwrap();
                let vm = s.vms.get_mut(&vmid).unwrap();
                let running = vm_running(vm);
                let mut d = json!({
                    "vmid": vmid, "status": if running { "running" } else { "stopped" },
                    "name": vm.config.get("name"), "cpus": 1, "maxmem": 256u64 << 20, "ha": {"managed": 0},
                });
                if let Some(l) = vm.config.get("lock") {
                    d["lock"] = Value::String(l.clone());
                }
                let mut qmp = None;
                if running {
                    let q = vm.qemu.as_ref().unwrap();
                    d["pid"] = json!(q.child.id());
                    d["uptime"] = json!(q.started.elapsed().as_secs());
                    qmp = Some(q.qmp.clone());
                }
                (d, qmp)
            };
            if let Some(qmp) = qmp {
                let state = qmp_command(&qmp, "query-status", json!({})).await;
                d["qmpstatus"] = json!(
                    state.ok().and_then(|v| v["status"].as_str().map(str::to_string)).unwrap_or("running".into())
                );
            }
            Response::ok(d)
        }
        ("POST", ["status", "start"]) => {
            if let Some(r) = check_params(
                &params,
                &[
                    "skiplock",
                    "stateuri",
                    "migratedfrom",
                    "migration_type",
                    "migration_network",
                    "machine",
                    "force-cpu",
                    "targetstorage",
                    "timeout",
                    "with-conntrack-state",
                ],
                &[],
                &[],
            ) {
                return r;
            }
            let st2 = st.clone();
            fork_worker(st, "qmstart", vmid, user, async move { start_qemu(&st2, vmid, None).await })
        }
        ("POST", ["status", "stop"]) => {
            if let Some(r) = check_params(
                &params,
                &["skiplock", "migratedfrom", "timeout", "keepActive", "overrule-shutdown"],
                &[],
                &["keepActive", "overrule-shutdown"],
            ) {
                return r;
            }
            let st2 = st.clone();
            fork_worker(st, "qmstop", vmid, user, async move { stop_qemu(&st2, vmid).await })
        }
        ("POST", ["status", "shutdown"]) => {
            if let Some(r) = check_params(
                &params,
                &["skiplock", "timeout", "forceStop", "keepActive"],
                &[],
                &["forceStop", "keepActive"],
            ) {
                return r;
            }
            let timeout = params.get("timeout").and_then(|t| t.parse().ok()).unwrap_or(60u64);
            let force = truthy(params.get("forceStop"));
            let st2 = st.clone();
            fork_worker(st, "qmshutdown", vmid, user, async move { shutdown_qemu(&st2, vmid, timeout, force).await })
        }
        ("POST", ["status", "reset"]) => {
            if let Some(r) = check_params(&params, &["skiplock"], &[], &[]) {
                return r;
            }
            let qmp = {
                let mut s = st.lock().unwrap();
                let vm = s.vms.get_mut(&vmid).unwrap();
                if !vm_running(vm) {
                    return Response::error(500, &format!("VM {vmid} not running"));
                }
                vm.qemu.as_ref().unwrap().qmp.clone()
            };
            fork_worker(st, "qmreset", vmid, user, async move {
                qmp_command(&qmp, "system_reset", json!({})).await.map(|_| ())
            })
        }
        ("GET", ["config"]) => {
            if let Some(r) = check_params(&params, &["current", "snapshot"], &[], &["current"]) {
                return r;
            }
            let s = st.lock().unwrap();
            let c = &s.vms[&vmid].config;
            let mut d = serde_json::Map::new();
            for (k, v) in c {
                // numbers come back as numbers, as PVE's schema types them
                let n = matches!(k.as_str(), "cores" | "sockets" | "tablet" | "template" | "onboot");
                d.insert(
                    k.clone(),
                    if n {
                        v.parse::<i64>().map(Value::from).unwrap_or(Value::String(v.clone()))
                    } else {
                        Value::String(v.clone())
                    },
                );
            }
            let text: String = c.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
            d.insert("digest".into(), Value::String(ring_sha1_hex(&text)));
            Response::ok(Value::Object(d))
        }
        ("PUT" | "POST", ["config"]) => {
            let mut allowed: Vec<&str> = CONFIG_KEYS.to_vec();
            allowed.extend(["delete", "digest", "revert", "skiplock", "force"]);
            if let Some(r) = check_params(&params, &allowed, &[], &["tablet", "onboot"]) {
                return r;
            }
            {
                let mut s = st.lock().unwrap();
                let vm = s.vms.get_mut(&vmid).unwrap();
                for (k, v) in &params {
                    if CONFIG_KEYS.contains(&k.as_str()) {
                        vm.config.insert(k.clone(), v.clone());
                    }
                }
                if let Some(d) = params.get("delete") {
                    for k in d.split([',', ';', ' ']).filter(|k| !k.is_empty()) {
                        vm.config.remove(k);
                    }
                }
            }
            if method == "PUT" {
                Response::ok(Value::Null)
            } else {
                fork_worker(st, "qmconfig", vmid, user, async { Ok(()) })
            }
        }
        ("GET", ["snapshot"]) => {
            let s = st.lock().unwrap();
            let vm = &s.vms[&vmid];
            let mut list: Vec<Value> = vm
                .snapshots
                .iter()
                .map(|(name, sn)| {
                    let mut v = json!({"name": name, "snaptime": sn.snaptime, "vmstate": if sn.vmstate { 1 } else { 0 }, "description": sn.description});
                    if let Some(p) = &sn.parent {
                        v["parent"] = Value::String(p.clone());
                    }
                    v
                })
                .collect();
            let mut current = json!({"name": "current", "description": "You are here!", "running": if vm.qemu.is_some() { 1 } else { 0 }});
            if let Some(p) = vm.config.get("parent") {
                current["parent"] = Value::String(p.clone());
            }
            list.push(current);
            Response::ok(Value::Array(list))
        }
        ("POST", ["snapshot"]) => {
            if let Some(r) = check_params(&params, &["vmstate", "description"], &["snapname"], &["vmstate"]) {
                return r;
            }
            let name = params["snapname"].clone();
            if !valid_snapname(&name) {
                return Response::param_errors(BTreeMap::from([(
                    "snapname".into(),
                    format!("invalid format - invalid configuration ID '{name}'"),
                )]));
            }
            if name == "current" || name.eq_ignore_ascii_case("pending") {
                return Response::error(500, &format!("unable to use snapshot name '{name}' (reserved name)"));
            }
            let vmstate = truthy(params.get("vmstate"));
            let description = params.get("description").cloned().unwrap_or_default();
            let st2 = st.clone();
            fork_worker(st, "qmsnapshot", vmid, user, async move {
                snapshot_create(&st2, vmid, &name, vmstate, description).await
            })
        }
        ("POST", ["snapshot", snap, "rollback"]) => {
            if let Some(r) = check_params(&params, &["start"], &[], &["start"]) {
                return r;
            }
            let name = snap.to_string();
            let start = truthy(params.get("start"));
            let st2 = st.clone();
            fork_worker(st, "qmrollback", vmid, user, async move { snapshot_rollback(&st2, vmid, &name, start).await })
        }
        ("DELETE", ["snapshot", snap]) => {
            if let Some(r) = check_params(&params, &["force"], &[], &["force"]) {
                return r;
            }
            let name = snap.to_string();
            let st2 = st.clone();
            fork_worker(st, "qmdelsnapshot", vmid, user, async move { snapshot_delete(&st2, vmid, &name).await })
        }
        ("POST", ["clone"]) => clone_vm(st, vmid, params, user, node),
        ("DELETE", []) => {
            if let Some(r) = check_params(
                &params,
                &["purge", "destroy-unreferenced-disks", "skiplock"],
                &[],
                &["purge", "destroy-unreferenced-disks"],
            ) {
                return r;
            }
            {
                let mut s = st.lock().unwrap();
                let vm = s.vms.get_mut(&vmid).unwrap();
                if vm_running(vm) {
                    return Response::error(500, &format!("VM {vmid} is running - destroy failed"));
                }
            }
            let st2 = st.clone();
            fork_worker(st, "qmdestroy", vmid, user, async move { destroy_vm(&st2, vmid) })
        }
        ("POST", ["vncproxy"]) => vncproxy(st, vmid, params, user),
        _ => Response {
            status: 501,
            reason: format!("Method '{method} /nodes/{node}/qemu/{vmid}/{}' not implemented", rest.join("/")),
            body: None,
            delay: Duration::ZERO,
        },
    }
}

/// PVE snapshot names: a letter, then letters, digits, `-` and `_` (2..40 characters).
fn valid_snapname(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && n.len() >= 2
        && n.len() <= 40
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
}

fn ring_sha1_hex(text: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------- QEMU

/// Split `args` like a shell (PVE::Tools::split_args): whitespace, single and double quotes.
fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn disk_path(dir: &Path, config: &BTreeMap<String, String>) -> Option<PathBuf> {
    let v = config.get("scsi0")?;
    let vol = v.split(',').next()?;
    let rel = vol.strip_prefix("local:")?;
    // a linked clone's volume is "<base volume>/<vmid>/<file>": the file lives under <vmid>/
    let parts: Vec<&str> = rel.split('/').collect();
    let file = if parts.len() >= 4 {
        format!("{}/{}", parts[parts.len() - 2], parts[parts.len() - 1])
    } else {
        rel.to_string()
    };
    Some(dir.join("images").join(file))
}

async fn start_qemu(st: &Shared, vmid: u32, loadvm: Option<&str>) -> Result<(), String> {
    let (config, dir) = {
        let mut s = st.lock().unwrap();
        let dir = s.dir.clone();
        let vm = s.vms.get_mut(&vmid).ok_or("VM vanished")?;
        if vm_running(vm) {
            return Err(format!("VM {vmid} already running"));
        }
        if vm.config.get("template").is_some_and(|t| t == "1") {
            return Err("you can't start a vm if it's a template".into());
        }
        (vm.config.clone(), dir)
    };
    let run = dir.join("run");
    let qmp = run.join(format!("{vmid}.qmp"));
    let vnc = run.join(format!("{vmid}.vnc"));
    let _ = std::fs::remove_file(&qmp);
    let _ = std::fs::remove_file(&vnc);
    let machine = config
        .get("machine")
        .map(|m| m.split(',').next().unwrap_or("pc").trim_start_matches("type=").to_string())
        .unwrap_or_else(|| "pc".into());
    let machine = if machine.contains("q35") { "q35" } else { "pc" };
    let vga = config
        .get("vga")
        .map(|v| v.split(',').next().unwrap_or("std").trim_start_matches("type=").to_string())
        .unwrap_or_else(|| "std".into());
    let mut cmd = std::process::Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-machine",
        machine,
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
    ])
    .args(["-name", &format!("vm{vmid}")])
    .args(["-m", config.get("memory").map_or("256", String::as_str)])
    .args(["-smp", config.get("cores").map_or("1", String::as_str)])
    .args(["-vga", if ["std", "cirrus", "vmware", "qxl", "virtio"].contains(&vga.as_str()) { &vga } else { "std" }])
    .arg("-vnc")
    .arg(format!("unix:{},password=on", vnc.display()))
    .arg("-qmp")
    .arg(format!("unix:{},server=on,wait=off", qmp.display()))
    .arg("-serial")
    .arg(format!("file:{}", run.join(format!("{vmid}.serial")).display()));
    if config.get("tablet").is_none_or(|t| t != "0") {
        cmd.args(["-usb", "-device", "usb-tablet,id=tablet"]);
    }
    if let Some(disk) = disk_path(&dir, &config) {
        cmd.arg("-drive").arg(format!("file={},if=none,id=drive-scsi0,format=qcow2", disk.display()));
        cmd.args(["-device", "virtio-blk-pci,drive=drive-scsi0"]);
    }
    if let Some(a) = config.get("args") {
        cmd.args(split_args(a));
    }
    if let Some(name) = loadvm {
        cmd.args(["-loadvm", name]);
    }
    let err = run.join(format!("{vmid}.err"));
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).map_err(|e| e.to_string())?)
        .process_group(0);
    let child = cmd.spawn().map_err(|e| format!("start qemu-system-x86_64: {e}"))?;
    let mut q = Qemu { child, qmp: qmp.clone(), vnc, started: Instant::now() };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = q.child.try_wait() {
            return Err(format!(
                "start failed: QEMU exited with {status}: {}",
                std::fs::read_to_string(&err).unwrap_or_default().trim()
            ));
        }
        if qmp_command(&qmp, "query-status", json!({})).await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            return Err("start failed: QMP socket did not answer within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = st.lock().unwrap();
    match s.vms.get_mut(&vmid) {
        Some(vm) => {
            vm.qemu = Some(q);
            Ok(())
        }
        None => Err("VM vanished".into()),
    }
}

fn qmp_of(st: &Shared, vmid: u32) -> Option<PathBuf> {
    let mut s = st.lock().unwrap();
    let vm = s.vms.get_mut(&vmid)?;
    vm_running(vm).then(|| vm.qemu.as_ref().unwrap().qmp.clone())
}

async fn wait_exit(st: &Shared, vmid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if qmp_of(st, vmid).is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    qmp_of(st, vmid).is_none()
}

async fn stop_qemu(st: &Shared, vmid: u32) -> Result<(), String> {
    let Some(qmp) = qmp_of(st, vmid) else { return Ok(()) };
    let _ = qmp_command(&qmp, "quit", json!({})).await;
    if !wait_exit(st, vmid, Duration::from_secs(10)).await
        && let Some(vm) = st.lock().unwrap().vms.get_mut(&vmid)
    {
        vm.qemu = None; // SIGKILL on drop
    }
    Ok(())
}

async fn shutdown_qemu(st: &Shared, vmid: u32, timeout: u64, force: bool) -> Result<(), String> {
    let Some(qmp) = qmp_of(st, vmid) else { return Ok(()) };
    qmp_command(&qmp, "system_powerdown", json!({})).await.map_err(|_| "VM quit/powerdown failed".to_string())?;
    if wait_exit(st, vmid, Duration::from_secs(timeout)).await {
        return Ok(());
    }
    if !force {
        return Err("VM quit/powerdown failed - got timeout".into());
    }
    stop_qemu(st, vmid).await
}

async fn hmp(qmp: &Path, command: &str) -> Result<(), String> {
    let out = qmp_command(qmp, "human-monitor-command", json!({"command-line": command})).await?;
    let text = out.as_str().unwrap_or_default().trim().to_string();
    if text.is_empty() { Ok(()) } else { Err(text) }
}

fn qemu_img(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("qemu-img").args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
}

async fn snapshot_create(st: &Shared, vmid: u32, name: &str, vmstate: bool, description: String) -> Result<(), String> {
    let (disk, parent) = {
        let s = st.lock().unwrap();
        let vm = &s.vms[&vmid];
        if vm.snapshots.contains_key(name) {
            return Err(format!("snapshot name '{name}' already used"));
        }
        (disk_path(&s.dir, &vm.config), vm.config.get("parent").cloned())
    };
    match qmp_of(st, vmid) {
        Some(qmp) if vmstate => hmp(&qmp, &format!("savevm {name}")).await?,
        // a disk-only snapshot of a running VM
        Some(qmp) => {
            qmp_command(&qmp, "blockdev-snapshot-internal-sync", json!({"device": "drive-scsi0", "name": name}))
                .await
                .map(|_| ())?
        }
        None => {
            let disk = disk.ok_or("VM has no disk")?;
            qemu_img(&["snapshot", "-c", name, &disk.display().to_string()])?;
        }
    }
    let mut s = st.lock().unwrap();
    let vm = s.vms.get_mut(&vmid).ok_or("VM vanished")?;
    let running = vm.qemu.is_some();
    vm.snapshots
        .insert(name.to_string(), Snapshot { description, snaptime: now_secs(), vmstate: vmstate && running, parent });
    vm.config.insert("parent".into(), name.to_string());
    Ok(())
}

async fn snapshot_rollback(st: &Shared, vmid: u32, name: &str, start: bool) -> Result<(), String> {
    let (vmstate, disk) = {
        let s = st.lock().unwrap();
        let vm = &s.vms[&vmid];
        let snap = vm.snapshots.get(name).ok_or_else(|| format!("snapshot '{name}' does not exist"))?;
        (snap.vmstate, disk_path(&s.dir, &vm.config))
    };
    if vmstate {
        // qemu-server's __snapshot_rollback_vm_stop stops a running VM, and
        // __snapshot_rollback_vm_start starts a new QEMU on the saved state:
        // every VNC connection to the old process ends
        stop_qemu(st, vmid).await?;
        start_qemu(st, vmid, Some(name)).await?;
    } else {
        stop_qemu(st, vmid).await?;
        let disk = disk.ok_or("VM has no disk")?;
        qemu_img(&["snapshot", "-a", name, &disk.display().to_string()])?;
        if start {
            start_qemu(st, vmid, None).await?;
        }
    }
    if let Some(vm) = st.lock().unwrap().vms.get_mut(&vmid) {
        vm.config.insert("parent".into(), name.to_string());
    }
    Ok(())
}

async fn snapshot_delete(st: &Shared, vmid: u32, name: &str) -> Result<(), String> {
    let disk = {
        let s = st.lock().unwrap();
        let vm = &s.vms[&vmid];
        if !vm.snapshots.contains_key(name) {
            return Err(format!("snapshot '{name}' does not exist"));
        }
        disk_path(&s.dir, &vm.config)
    };
    match qmp_of(st, vmid) {
        Some(qmp) => hmp(&qmp, &format!("delvm {name}")).await?,
        None => qemu_img(&["snapshot", "-d", name, &disk.ok_or("VM has no disk")?.display().to_string()])?,
    }
    let mut s = st.lock().unwrap();
    let vm = s.vms.get_mut(&vmid).ok_or("VM vanished")?;
    let removed = vm.snapshots.remove(name);
    let up = removed.and_then(|r| r.parent);
    for sn in vm.snapshots.values_mut() {
        if sn.parent.as_deref() == Some(name) {
            sn.parent = up.clone();
        }
    }
    if vm.config.get("parent").map(String::as_str) == Some(name) {
        match up {
            Some(p) => vm.config.insert("parent".into(), p),
            None => vm.config.remove("parent"),
        };
    }
    Ok(())
}

fn clone_vm(st: &Shared, vmid: u32, params: BTreeMap<String, String>, user: &str, node: &str) -> Response {
    if let Some(r) = check_params(
        &params,
        &["name", "description", "pool", "snapname", "storage", "format", "full", "target", "bwlimit"],
        &["newid"],
        &["full"],
    ) {
        return r;
    }
    let Ok(newid) = params["newid"].parse::<u32>() else {
        return Response::param_errors(BTreeMap::from([("newid".into(), "type check ('integer') failed".into())]));
    };
    let (config, dir) = {
        let s = st.lock().unwrap();
        (s.vms[&vmid].config.clone(), s.dir.clone())
    };
    if st.lock().unwrap().vms.contains_key(&newid) {
        return Response::error(500, &format!("unable to create VM {newid}: config file already exists"));
    }
    let template = config.get("template").is_some_and(|t| t == "1");
    let full = params.get("full").map_or(!template, |_| truthy(params.get("full")));
    let vol = config.get("scsi0").and_then(|v| v.split(',').next()).unwrap_or_default().to_string();
    if !full && !template {
        return Response::error(500, &format!("Linked clone feature is not supported for '{vol}' (scsi0)"));
    }
    let name = params
        .get("name")
        .cloned()
        .unwrap_or_else(|| format!("Copy-of-VM-{}", config.get("name").cloned().unwrap_or_default()));
    let st2 = st.clone();
    let _ = node;
    fork_worker(st, "qmclone", vmid, user, async move {
        let src = disk_path(&dir, &config).ok_or("source has no disk")?;
        let file = format!("{newid}/vm-{newid}-disk-0.qcow2");
        let dst = dir.join("images").join(&file);
        std::fs::create_dir_all(dst.parent().unwrap()).map_err(|e| e.to_string())?;
        let newvol = if full {
            task_log_vm(&st2, vmid, &format!("create full clone of drive scsi0 ({vol})"));
            qemu_img(&["convert", "-q", "-O", "qcow2", &src.display().to_string(), &dst.display().to_string()])?;
            format!("local:{file}")
        } else {
            task_log_vm(&st2, vmid, &format!("create linked clone of drive scsi0 ({vol})"));
            qemu_img(&[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                &src.display().to_string(),
                &dst.display().to_string(),
            ])?;
            format!("{vol}/{file}")
        };
        let mut c: BTreeMap<String, String> =
            config.into_iter().filter(|(k, _)| !matches!(k.as_str(), "template" | "parent" | "lock")).collect();
        c.insert("name".into(), name);
        c.insert("scsi0".into(), format!("{newvol},size=64M"));
        st2.lock().unwrap().vms.insert(newid, Vm { config: c, snapshots: BTreeMap::new(), qemu: None });
        Ok(())
    })
}

/// Log into the newest running task of a VM (clone logs go there).
fn task_log_vm(st: &Shared, vmid: u32, line: &str) {
    let mut s = st.lock().unwrap();
    let marker = format!(":{vmid}:");
    if let Some(t) = s
        .tasks
        .values_mut()
        .filter(|t| t.exitstatus.is_none() && t.upid.contains(&marker))
        .max_by_key(|t| t.upid.clone())
    {
        t.log.push(line.to_string());
    }
}

fn destroy_vm(st: &Shared, vmid: u32) -> Result<(), String> {
    let mut s = st.lock().unwrap();
    let dir = s.dir.clone();
    let vm = s.vms.remove(&vmid).ok_or("VM vanished")?;
    if let Some(disk) = disk_path(&dir, &vm.config) {
        let _ = std::fs::remove_file(disk);
    }
    Ok(())
}

// ---------------------------------------------------------------- QMP

/// One QMP command on a fresh connection: greeting, qmp_capabilities, the command.
pub async fn qmp_command(socket: &Path, command: &str, args: Value) -> Result<Value, String> {
    let stream = UnixStream::connect(socket).await.map_err(|e| format!("QMP {}: {e}", socket.display()))?;
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let mut next = async || -> Result<Value, String> {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .map_err(|_| "QMP timeout".to_string())?
                .map_err(|e| e.to_string())?
                .ok_or("QMP closed")?;
            let v: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    };
    next().await?; // greeting
    w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n").await.map_err(|e| e.to_string())?;
    next().await?;
    let msg = json!({"execute": command, "arguments": args});
    w.write_all(format!("{msg}\n").as_bytes()).await.map_err(|e| e.to_string())?;
    let v = next().await?;
    match v.get("return") {
        Some(r) => Ok(r.clone()),
        None => Err(v["error"]["desc"].as_str().unwrap_or("QMP error").to_string()),
    }
}

// ---------------------------------------------------------------- VNC

fn vnc_password() -> String {
    // printable ASCII '!'..'~', 8 characters (the length VNC authentication uses)
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    b.iter().map(|x| (b'!' + x % 94) as char).collect()
}

fn vncproxy(st: &Shared, vmid: u32, params: BTreeMap<String, String>, user: &str) -> Response {
    if let Some(r) =
        check_params(&params, &["websocket", "generate-password"], &[], &["websocket", "generate-password"])
    {
        return r;
    }
    // next_vnc_port: the first free port from 5900 on localhost
    let listener = (5900u16..6000).find_map(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok());
    let Some(listener) = listener else { return Response::error(500, "unable to find free port (5900-5999)") };
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let password = vnc_password();
    let ticket = {
        let s = st.lock().unwrap();
        format!("{password}:{}", vnc_ticket(&s, user, vmid, port))
    };
    let st2 = st.clone();
    let pw = password.clone();
    let resp = fork_worker(st, "vncproxy", vmid, user, async move {
        let listener = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        let (mut client, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .map_err(|_| "connection timed out".to_string())?
            .map_err(|e| format!("connection failed: {e}"))?;
        drop(listener);
        // qm vncproxy: set the one-time password, let it expire in 30 s, proxy to the VM's socket
        let Some(qmp) = qmp_of(&st2, vmid) else { return Err("Failed to run vncproxy.".into()) };
        let vnc = {
            let s = st2.lock().unwrap();
            s.vms[&vmid].qemu.as_ref().map(|q| q.vnc.clone()).ok_or("Failed to run vncproxy.")?
        };
        qmp_command(&qmp, "set_password", json!({"protocol": "vnc", "password": pw})).await?;
        qmp_command(&qmp, "expire_password", json!({"protocol": "vnc", "time": "+30"})).await?;
        let mut server = UnixStream::connect(&vnc).await.map_err(|e| format!("Failed to run vncproxy. ({e})"))?;
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        Ok(())
    });
    let Some(Value::String(upid)) = resp.body.as_ref().map(|b| b["data"].clone()) else { return resp };
    let cert = std::fs::read_to_string(st.lock().unwrap().dir.join("certs/ca.pem")).unwrap_or_default();
    Response::ok(
        json!({"user": user, "ticket": ticket, "port": port, "upid": upid, "cert": cert, "password": password}),
    )
}

fn websocket_request(
    st: &Shared,
    req: &Request,
    rel: &str,
    params: &BTreeMap<String, String>,
    caller: Option<&Caller>,
) -> Outcome {
    let segs: Vec<&str> = rel.trim_start_matches('/').split('/').collect();
    let (node, vmid) = match segs.as_slice() {
        ["nodes", n, "qemu", id, "vncwebsocket"] => (n.to_string(), id.parse::<u32>().unwrap_or(0)),
        _ => return Outcome::Reply(Response::error(501, "no such uri")),
    };
    if let Some(r) = check_params(params, &[], &["vncticket", "port"], &[]) {
        return Outcome::Reply(r);
    }
    let port: u16 = match params["port"].parse() {
        Ok(p) if (5900..=5999).contains(&p) => p,
        _ => {
            return Outcome::Reply(Response::param_errors(BTreeMap::from([(
                "port".into(),
                "value must have a minimum value of 5900".into(),
            )])));
        }
    };
    let user = caller.map(|c| c.user().to_string()).unwrap_or_default();
    {
        let s = st.lock().unwrap();
        if !verify_vnc_ticket(&s, &params["vncticket"], &user, vmid, port) {
            return Outcome::Reply(Response::error(401, "permission denied - invalid PVEVNC ticket"));
        }
        if !s.vms.contains_key(&vmid) {
            return Outcome::Reply(config_missing(&node, vmid));
        }
    }
    // handle_api2_request: the upgrade itself
    let upgrade = req.header("Upgrade").unwrap_or("").to_ascii_lowercase();
    if upgrade != "websocket" {
        return Outcome::Reply(Response::error(500, &format!("unable to upgrade to protocol '{upgrade}'")));
    }
    match req.header("Sec-WebSocket-Version") {
        Some("13") => {}
        v => {
            return Outcome::Reply(Response::error(
                500,
                &format!("unsupported websocket-version '{}'", v.unwrap_or("")),
            ));
        }
    }
    let Some(key) = req.header("Sec-WebSocket-Key") else {
        return Outcome::Reply(Response::error(500, "missing websocket-key"));
    };
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    );
    let accept = BASE64.encode(digest.as_ref());
    Outcome::Upgrade { port, accept, proto: req.header("Sec-WebSocket-Protocol").unwrap_or("").to_string() }
}

fn encode_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let n = payload.len();
    if n <= 125 {
        f.push(n as u8);
    } else if n <= 0xffff {
        f.push(126);
        f.extend((n as u16).to_be_bytes());
    } else {
        f.push(127);
        f.extend((n as u64).to_be_bytes());
    }
    f.extend(payload);
    f
}

/// websocket_proxy of PVE::APIServer::AnyEvent: frames from the client to the
/// VNC port, bytes from the VNC port to binary frames; protocol violations end
/// the connection.
async fn websocket_proxy<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    st: Shared,
    client: BufReader<S>,
    vnc: TcpStream,
) -> std::io::Result<()> {
    let (mut cr, cw) = tokio::io::split(client);
    let (mut vr, mut vw) = vnc.into_split();
    let cw = Arc::new(tokio::sync::Mutex::new(cw));
    let cw2 = cw.clone();
    let st2 = st.clone();
    let down = tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            let n = match vr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            st2.lock().unwrap().counters.ws_bytes_out += n;
            let frame = encode_frame(0x2, &buf[..n]);
            if cw2.lock().await.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = cw2.lock().await.shutdown().await;
    });
    let result: Result<(), String> = async {
        loop {
            let mut hdr = [0u8; 2];
            if cr.read_exact(&mut hdr).await.is_err() {
                return Ok(());
            }
            let (fin, rsv, opcode) = (hdr[0] & 0x80 != 0, hdr[0] & 0x70, hdr[0] & 0x0f);
            if !fin {
                return Err("received fragmented websocket frame".into());
            }
            if rsv != 0 {
                return Err("received websocket frame with RSV flags".into());
            }
            if hdr[1] & 0x80 == 0 {
                return Err("received unmasked websocket frame from client".into());
            }
            let mut len = u64::from(hdr[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                cr.read_exact(&mut b).await.map_err(|e| e.to_string())?;
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                cr.read_exact(&mut b).await.map_err(|e| e.to_string())?;
                len = u64::from_be_bytes(b);
            }
            if len > MAX_FRAME as u64 {
                return Err(format!("received too large websocket frame (len = {len})"));
            }
            let mut mask = [0u8; 4];
            cr.read_exact(&mut mask).await.map_err(|e| e.to_string())?;
            let mut payload = vec![0u8; len as usize];
            cr.read_exact(&mut payload).await.map_err(|e| e.to_string())?;
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            match opcode {
                1 | 2 => {
                    st.lock().unwrap().counters.ws_bytes_in += payload.len();
                    vw.write_all(&payload).await.map_err(|e| e.to_string())?;
                }
                8 => return Ok(()),
                9 => {
                    let pong = encode_frame(0xA, &payload);
                    cw.lock().await.write_all(&pong).await.map_err(|e| e.to_string())?;
                }
                0xA => {}
                other => return Err(format!("received unhandled websocket opcode {other}")),
            }
        }
    }
    .await;
    if let Err(e) = &result {
        eprintln!("pve test server: websocket closed: {e}");
    }
    let _ = vw.shutdown().await;
    down.abort();
    let _ = cw.lock().await.shutdown().await;
    Ok(())
}
