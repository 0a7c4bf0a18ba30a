//! The `local-desktop` backend: a private TigerVNC Xvnc desktop on loopback.
//!
//! Xvnc picks a free display itself (`-displayfd`) and listens on a free
//! loopback port with a random 8-character VNC password (VNC cuts passwords
//! to 8). A window manager is started and the desktop counts as ready when
//! the WM owns `_NET_SUPPORTING_WM_CHECK`. Apps get a fresh HOME and XDG
//! directories (no state from the user's session leaks in), a fixed locale,
//! and no access to the user's DBus or Wayland session. The screensaver and
//! DPMS are off. Everything runs in its own process group and is stopped at
//! teardown; if smoke dies, the kernel sends it SIGTERM.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::backend::commands::LocalCommands;
use crate::backend::process::{self, isolate};
use crate::backend::{BackendError, StartContext, VncAccess};
use crate::inventory::LocalDesktop;
use crate::rfb::Encoding;
use crate::rfb::transport::Endpoint;

const READY_BUDGET: Duration = Duration::from_secs(20);

/// A running private desktop.
pub struct LocalDesktopSession {
    display: u32,
    port: u16,
    password: String,
    xvnc: tokio::process::Child,
    wm: Option<tokio::process::Child>,
    commands: Option<LocalCommands>,
    _dir: tempfile::TempDir,
}

impl LocalDesktopSession {
    pub async fn start(cfg: &LocalDesktop, ctx: &StartContext) -> Result<LocalDesktopSession, BackendError> {
        let started = Instant::now();
        require(&cfg.xvnc, "apt-get install tigervnc-standalone-server")?;
        if let Some(wm) = &cfg.window_manager {
            require(&wm[0], "apt-get install openbox, or set window_manager in the inventory")?;
            require("xprop", "apt-get install x11-utils")?;
        }
        let dir = tempfile::Builder::new()
            .prefix("smoke-desktop-")
            .tempdir()
            .map_err(|e| BackendError::Io { what: "create a temporary directory".into(), source: e })?;
        let password = random_password()?;
        ctx.secrets.remember(&password);
        let passwd_file = dir.path().join("passwd");
        write_private(&passwd_file, &crate::rfb::auth::vnc_password_file(&password))?;

        let mut last_err = None;
        for attempt in 0..4 {
            let port = free_port()?;
            let log = ctx.logs.join(if attempt == 0 { "xvnc.log".to_string() } else { format!("xvnc-{attempt}.log") });
            match spawn_xvnc(cfg, port, &passwd_file, &log).await {
                Ok((xvnc, display)) => {
                    let mut session =
                        LocalDesktopSession { display, port, password, xvnc, wm: None, commands: None, _dir: dir };
                    session.commands = Some(session.make_commands(cfg, &ctx.cwd)?);
                    if let Some(wm) = &cfg.window_manager
                        && let Err(e) = session.start_wm(wm, &ctx.logs).await
                    {
                        session.teardown().await;
                        return Err(e);
                    }
                    tracing::info!(
                        x_display = session.display,
                        port = session.port,
                        ms = started.elapsed().as_millis() as u64,
                        "local desktop ready"
                    );
                    return Ok(session);
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "Xvnc did not start; retrying on another port");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| BackendError::Startup { what: "Xvnc".into(), log_tail: String::new() }))
    }

    /// The X display number (`:N`).
    pub fn display(&self) -> u32 {
        self.display
    }

    pub fn vnc(&self) -> VncAccess {
        VncAccess {
            endpoint: Endpoint::Tcp { host: "127.0.0.1".into(), port: self.port },
            password: Some(self.password.clone()),
            // on loopback Raw costs the server nothing to encode: ~5x faster than ZRLE
            encodings: Some(vec![Encoding::Raw, Encoding::CopyRect, Encoding::Zrle, Encoding::DesktopSize]),
            username: None,
            tls: Default::default(),
        }
    }

    /// The local command runner of this desktop (once; the machine owns it then).
    pub fn take_commands(&mut self) -> Option<LocalCommands> {
        self.commands.take()
    }

    fn make_commands(&self, cfg: &LocalDesktop, cwd: &Path) -> Result<LocalCommands, BackendError> {
        let display = format!(":{}", self.display);
        let mut env = vec![
            ("DISPLAY".to_string(), display.clone()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("NO_AT_BRIDGE".to_string(), "1".to_string()),
        ];
        if cfg.isolated_home {
            let base = self._dir.path();
            for (var, sub) in [
                ("HOME", "home"),
                ("XDG_CONFIG_HOME", "home/.config"),
                ("XDG_DATA_HOME", "home/.local/share"),
                ("XDG_CACHE_HOME", "home/.cache"),
                ("XDG_RUNTIME_DIR", "run"),
            ] {
                let p = base.join(sub);
                std::fs::create_dir_all(&p)
                    .map_err(|e| BackendError::Io { what: format!("create {}", p.display()), source: e })?;
                env.push((var.to_string(), p.display().to_string()));
            }
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(base.join("run"), std::fs::Permissions::from_mode(0o700));
        }
        let remove =
            ["WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "XAUTHORITY", "LC_ALL", "LANGUAGE", "SESSION_MANAGER"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        Ok(LocalCommands::new(env, remove, cwd.to_path_buf(), Some(("DISPLAY".into(), display))))
    }

    async fn start_wm(&mut self, wm: &[String], logs: &Path) -> Result<(), BackendError> {
        let log = logs.join("window-manager.log");
        let file = std::fs::File::create(&log)
            .map_err(|e| BackendError::Io { what: format!("create {}", log.display()), source: e })?;
        let file2 = file.try_clone().map_err(|e| BackendError::Io { what: "dup log".into(), source: e })?;
        let mut cmd = tokio::process::Command::new(&wm[0]);
        cmd.args(&wm[1..]).stdin(Stdio::null()).stdout(Stdio::from(file)).stderr(Stdio::from(file2));
        cmd.env("DISPLAY", format!(":{}", self.display))
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("WAYLAND_DISPLAY");
        isolate(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| BackendError::Spawn { program: wm[0].clone(), source: e })?;
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(BackendError::Startup {
                    what: format!("window manager {} (exited: {status})", wm[0]),
                    log_tail: tail(&log),
                });
            }
            if wm_ready(self.display).await {
                break;
            }
            if start.elapsed() > READY_BUDGET {
                let _ = child.start_kill();
                return Err(BackendError::Timeout {
                    what: format!("window manager {} to take the display", wm[0]),
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.wm = Some(child);
        Ok(())
    }

    /// Stop apps, the window manager and Xvnc. Returns what happened, for the log.
    pub async fn teardown(mut self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(c) = self.commands.as_mut() {
            c.stop_all(Duration::from_secs(3)).await;
        }
        if let Some(mut wm) = self.wm.take() {
            if let Some(pid) = wm.id() {
                let path = process::stop_group(pid, Duration::from_secs(2)).await;
                notes.push(format!("window manager: {path:?}"));
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), wm.wait()).await;
        }
        if let Some(pid) = self.xvnc.id() {
            let path = process::stop_group(pid, Duration::from_secs(3)).await;
            notes.push(format!("Xvnc :{}: {path:?}", self.display));
        }
        let _ = self.xvnc.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.xvnc.wait()).await;
        notes
    }
}

fn require(program: &str, hint: &str) -> Result<(), BackendError> {
    if process::which(program) {
        Ok(())
    } else {
        Err(BackendError::MissingProgram { program: program.to_string(), hint: Some(hint.to_string()) })
    }
}

/// Spawn Xvnc and wait for it to report its display number.
async fn spawn_xvnc(
    cfg: &LocalDesktop,
    port: u16,
    passwd: &Path,
    log: &Path,
) -> Result<(tokio::process::Child, u32), BackendError> {
    let (read_end, write_end) = pipe()?;
    let write_fd = write_end.as_raw_fd();
    let logf = std::fs::File::create(log)
        .map_err(|e| BackendError::Io { what: format!("create {}", log.display()), source: e })?;
    let mut cmd = tokio::process::Command::new(&cfg.xvnc);
    cmd.args(["-displayfd", &write_fd.to_string()])
        .args(["-rfbport", &port.to_string()])
        .args(["-localhost", "-interface", "127.0.0.1"])
        .args(["-SecurityTypes", "VncAuth", "-PasswordFile"])
        .arg(passwd)
        .args(["-geometry", &format!("{}x{}", cfg.width, cfg.height)])
        .args(["-depth", &cfg.depth.to_string()])
        .args([
            "-AlwaysShared",
            "-nolisten",
            "tcp",
            "-BlacklistThreshold",
            "1000000",
            "-s",
            "0",
            "-dpms",
            "-desktop",
            "smoke",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(logf));
    // SAFETY: fcntl is async-signal-safe; it makes the pipe's write end survive exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(write_fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    isolate(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| BackendError::Spawn { program: cfg.xvnc.clone(), source: e })?;
    drop(write_end);
    let reader = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::from(read_end);
        let mut buf = String::new();
        let _ = f.read_to_string(&mut buf);
        buf
    });
    // Xvnc closes the pipe when it exits early, so the read always ends.
    let text = match tokio::time::timeout(READY_BUDGET, reader).await {
        Ok(Ok(t)) => t,
        _ => {
            let _ = child.start_kill();
            return Err(BackendError::Timeout { what: "Xvnc to report its display".into(), waited: READY_BUDGET });
        }
    };
    match text.trim().parse::<u32>() {
        Ok(display) => Ok((child, display)),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(BackendError::Startup { what: "Xvnc".into(), log_tail: tail(log) })
        }
    }
}

/// Is a window manager running on the display (root has _NET_SUPPORTING_WM_CHECK)?
async fn wm_ready(display: u32) -> bool {
    let out = tokio::process::Command::new("xprop")
        .args(["-root", "_NET_SUPPORTING_WM_CHECK"])
        .env("DISPLAY", format!(":{display}"))
        .stdin(Stdio::null())
        .output()
        .await;
    matches!(out, Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("window id"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), BackendError> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(BackendError::Io { what: "create a pipe".into(), source: std::io::Error::last_os_error() });
    }
    // SAFETY: both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn free_port() -> Result<u16, BackendError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BackendError::Io { what: "find a free port".into(), source: e })?;
    l.local_addr().map(|a| a.port()).map_err(|e| BackendError::Io { what: "find a free port".into(), source: e })
}

/// 8 random characters from an unambiguous alphabet.
fn random_password() -> Result<String, BackendError> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| BackendError::Io {
        what: "read random bytes".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), BackendError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| BackendError::Io { what: format!("create {}", path.display()), source: e })?;
    f.write_all(data).map_err(|e| BackendError::Io { what: format!("write {}", path.display()), source: e })
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(12)..].join("\n")
}
