//! A real OpenSSH sshd on loopback for the SSH tests, with its own config,
//! generated host and user keys, and a dedicated test user.
//!
//! The tests run as root (here and in CI). The user `smoke-ssh` is created
//! once (idempotently: `useradd` only when missing) with the password field
//! `*` (no password login; `UsePAM no` needs `*`, not the locked `!`). The
//! password tests set a random password for their duration and put `*` back.
//! The real sshd's configuration is never touched: each test starts its own
//! `sshd -D -f <own config>` on 127.0.0.1 and a free port, which is killed on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use smoke::ssh::SshSettings;

pub const USER: &str = "smoke-ssh";

static USER_READY: OnceLock<Result<(), String>> = OnceLock::new();
/// Tests that change the user's password take this.
pub static PASSWORD: Mutex<()> = Mutex::new(());

fn run(cmd: &mut Command) -> Result<String, String> {
    let o = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&o.stderr)));
    }
    Ok(String::from_utf8_lossy(&o.stdout).to_string())
}

/// Create the test user when missing (needs root).
pub fn ensure_user() {
    let r = USER_READY.get_or_init(|| {
        if unsafe { libc::geteuid() } != 0 {
            return Err("the SSH tests run as root: they create the test user 'smoke-ssh' and start sshd".into());
        }
        if run(Command::new("id").arg(USER)).is_err() {
            run(Command::new("useradd").args([
                "--create-home",
                "--shell",
                "/bin/sh",
                "--comment",
                "smoke SSH tests",
                USER,
            ]))?;
        }
        run(Command::new("usermod").args(["-p", "*", USER]))?;
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
        Ok(())
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// The test user's password, set for as long as this lives.
pub struct Password {
    pub value: String,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl Password {
    pub fn set() -> Password {
        ensure_user();
        let lock = PASSWORD.lock().unwrap_or_else(|p| p.into_inner());
        let mut bytes = [0u8; 12];
        getrandom_fill(&mut bytes);
        let value: String = bytes.iter().map(|b| format!("{b:02x}")).collect::<String>() + "-Aa1";
        let mut child = Command::new("chpasswd").stdin(Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(format!("{USER}:{value}\n").as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "chpasswd");
        Password { value, _lock: lock }
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        let _ = Command::new("usermod").args(["-p", "*", USER]).status();
    }
}

fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom").unwrap().read_exact(buf).unwrap();
}

/// Options of a test sshd.
#[derive(Clone, Default)]
pub struct SshdOptions {
    pub password_auth: bool,
    /// Reuse this host key (private key file) instead of generating one.
    pub host_key: Option<PathBuf>,
}

/// A running sshd.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub host: String,
    pub port: u16,
    /// The host key: private file and public line ("ssh-ed25519 AAAA...").
    pub host_key: PathBuf,
    pub host_key_pub: String,
    /// A user key without passphrase, authorized for the test user.
    pub user_key: PathBuf,
    /// known_hosts with the host key (tab-separated, as `[host]:port`).
    pub known_hosts: PathBuf,
    pub log: PathBuf,
    child: Child,
}

pub fn keygen(path: &Path, passphrase: &str) {
    run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", passphrase, "-C", "smoke-test", "-f"]).arg(path))
        .unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Sshd {
    pub fn start() -> Sshd {
        Sshd::start_with(SshdOptions::default())
    }

    pub fn start_with(opts: SshdOptions) -> Sshd {
        ensure_user();
        let dir = tempfile::Builder::new().prefix("smoke-sshd-").tempdir().unwrap();
        let d = dir.path();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let host_key = d.join("host_ed25519");
        match &opts.host_key {
            Some(k) => {
                std::fs::copy(k, &host_key).unwrap();
                std::fs::copy(k.with_extension("pub"), host_key.with_extension("pub")).unwrap();
                std::fs::set_permissions(&host_key, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            None => keygen(&host_key, ""),
        }
        let host_key_pub = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let host_key_pub = host_key_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let user_key = d.join("user_ed25519");
        keygen(&user_key, "");
        std::fs::create_dir_all(d.join("keys")).unwrap();
        std::fs::set_permissions(d.join("keys"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let authorized = d.join("keys").join(USER);
        std::fs::copy(user_key.with_extension("pub"), &authorized).unwrap();
        std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o644)).unwrap();
        let port = free_port();
        let host = "127.0.0.1".to_string();
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {host}\nPort {port}\nHostKey {hk}\nPidFile {pid}\nAuthorizedKeysFile {keys}/%u\n\
                 UsePAM no\nPubkeyAuthentication yes\nPasswordAuthentication {pw}\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin no\nAllowUsers {USER}\nStrictModes no\nUseDNS no\nPrintMotd no\nPrintLastLog no\n\
                 MaxStartups 100\nMaxSessions 100\nLogLevel VERBOSE\nAcceptEnv NONE\n",
                hk = host_key.display(),
                pid = d.join("sshd.pid").display(),
                keys = d.join("keys").display(),
                pw = if opts.password_auth { "yes" } else { "no" },
            ),
        )
        .unwrap();
        run(Command::new("/usr/sbin/sshd").arg("-t").arg("-f").arg(&config)).expect("sshd -t accepts the test config");
        let log = d.join("sshd.log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sshd");
        let known_hosts = d.join("known_hosts");
        let (algo, blob) = host_key_pub.split_once(' ').unwrap();
        std::fs::write(&known_hosts, format!("[{host}]:{port}\t{algo}\t{blob}\n")).unwrap();
        let s = Sshd { dir, host, port, host_key, host_key_pub, user_key, known_hosts, log, child };
        s.wait_ready();
        s
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::fs::read_to_string(&self.log).unwrap_or_default().contains("Server listening") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sshd did not start: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    /// Settings for the test user with the user key and this server's known_hosts.
    pub fn settings(&self) -> SshSettings {
        let mut s = SshSettings::new(&self.host, self.port, USER);
        s.key = Some(self.user_key.clone());
        s.known_hosts = vec![self.known_hosts.clone()];
        s.wait = Duration::from_secs(20);
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Drop every open connection: kill sshd's per-connection processes.
    pub fn drop_connections(&self) {
        let mut all = Vec::new();
        let mut todo = children(self.child.id());
        while let Some(p) = todo.pop() {
            todo.extend(children(p));
            all.push(p);
        }
        for p in all {
            // SAFETY: signalling processes of the sshd this test started.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let kids = children(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in kids {
            // SAFETY: as above.
            unsafe { libc::kill(p as i32, libc::SIGTERM) };
        }
    }
}

/// Direct children of a process.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.get(1).and_then(|f| f.parse::<u32>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Live (non-zombie) processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if p == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{p}/cmdline")) else { continue };
        let state = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let zombie = state.rfind(')').is_some_and(|i| state[i + 1..].trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(needle) {
            out.push(p);
        }
    }
    out
}

/// Poll `f` until it is true or `budget` runs out.
pub fn eventually(budget: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + budget;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A unique token for marking processes and files of one test.
pub fn token(prefix: &str) -> String {
    let mut b = [0u8; 6];
    getrandom_fill(&mut b);
    format!("{prefix}-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}
