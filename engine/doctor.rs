//! `smoke doctor`: is a target ready for a run? One row per check: the tools
//! smoke needs on this machine, SSH (host key, login), VNC, the desktop
//! session, the tools scripts need on the target, free space, leftover app
//! processes, and the VLM endpoint. Every check runs even when an earlier one
//! failed (where it can), so one call shows everything that is wrong.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::StartContext;
use crate::backend::commands::{Commands, OUTPUT_CAP};
use crate::backend::local_desktop::LocalDesktopSession;
use crate::backend::remote::RemoteCommands;
use crate::guest::{self, Shell};
use crate::inventory::{Backend, SessionSpec, Target};
use crate::rfb::VncClient;
use crate::ssh::SshClient;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub check: String,
    pub status: Status,
    pub detail: String,
}

fn row(check: &str, status: Status, detail: impl Into<String>) -> Row {
    Row { check: check.to_string(), status, detail: detail.into() }
}

/// What else to check.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// App processes that must not be running (leftovers of an earlier run).
    pub processes: Vec<String>,
    /// Free space below this fails; below 4x this warns.
    pub min_free_mb: u64,
    /// Budget for SSH to answer.
    pub ssh_budget: Duration,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions { processes: Vec::new(), min_free_mb: 512, ssh_budget: Duration::from_secs(30) }
    }
}

/// Required and optional commands on a Linux target.
const LINUX_TOOLS: &[&str] = &["sh", "id", "pgrep", "pkill", "setsid", "sed", "tr", "cut", "tail", "head", "ps", "df"];
const LINUX_OPTIONAL: &[&str] = &["journalctl", "dmesg", "xset", "gsettings"];

/// Run every check for `target`. Never fails: problems are rows.
pub async fn check(target: &Target, ctx: &StartContext, opts: &DoctorOptions) -> Vec<Row> {
    let mut rows = Vec::new();
    rows.push(host_tools(target));

    // the screen
    let mut desktop: Option<LocalDesktopSession> = None;
    let mut vm: Option<crate::vm::qemu::QemuVm> = None;
    match &target.backend {
        Backend::LocalDesktop(cfg) => match LocalDesktopSession::start(cfg, ctx).await {
            Ok(s) => {
                rows.push(vnc_row(&s.vnc(), &format!("private Xvnc :{}", s.display())).await);
                desktop = Some(s);
            }
            Err(e) => rows.push(row("vnc", Status::Fail, format!("the local desktop did not start: {e}"))),
        },
        Backend::Vnc(v) => {
            let password = match &v.password {
                Some(src) => match ctx.secrets.read("vnc password", src) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        rows.push(row("vnc", Status::Fail, e.to_string()));
                        None
                    }
                },
                None => None,
            };
            if !rows.iter().any(|r| r.check == "vnc") {
                let access = crate::backend::VncAccess {
                    endpoint: v.endpoint.clone(),
                    password,
                    encodings: None,
                    username: v.username.clone(),
                    tls: v.tls.clone(),
                };
                rows.push(vnc_row(&access, "").await);
            }
        }
        Backend::Proxmox(p) => {
            let mut vm = crate::vm::proxmox::ProxmoxVm::new(&target.name, p.clone(), ctx.secrets.clone());
            rows.push(match vm.survey().await {
                Ok((summary, warnings)) if warnings.is_empty() => row("proxmox", Status::Ok, summary),
                Ok((summary, warnings)) => row("proxmox", Status::Warn, format!("{summary}; {}", warnings.join("; "))),
                Err(e) => row("proxmox", Status::Fail, e.to_string()),
            });
        }
        Backend::Qemu(settings) => {
            use crate::vm::VmBackend;
            let mut settings = settings.clone();
            settings.resolve(&ctx.cwd);
            let mut q = crate::vm::qemu::QemuVm::new(&target.name, settings, &ctx.logs);
            let started = async {
                let warnings = q.prepare().await?;
                q.start().await?;
                Ok::<_, crate::vm::VmError>((warnings, q.vnc().await?))
            }
            .await;
            match started {
                Ok((warnings, access)) => {
                    for w in warnings {
                        rows.push(row("vm", Status::Warn, w));
                    }
                    let accel = q.accel().map(|a| a.name()).unwrap_or("?");
                    rows.push(vnc_row(&access, &format!("QEMU ({accel})")).await);
                }
                Err(e) => rows.push(row("vnc", Status::Fail, format!("the QEMU VM did not start: {e}"))),
            }
            vm = Some(q);
        }
    }

    // commands on the target
    let mut commands: Option<Commands> = None;
    let mut ssh_settings = target.ssh.clone();
    if let (Some(s), Some(q)) = (ssh_settings.as_mut(), vm.as_ref())
        && s.host.is_empty()
    {
        use crate::vm::VmBackend;
        if let Some((host, port)) = q.ssh_endpoint() {
            (s.host, s.port) = (host, port);
        }
    }
    match &ssh_settings {
        Some(ssh) => {
            let start = Instant::now();
            match SshClient::wait_for(ssh, &ctx.secrets, opts.ssh_budget.min(ssh.wait)).await {
                Ok(c) => {
                    rows.push(row(
                        "ssh",
                        Status::Ok,
                        format!(
                            "{} in {:.1}s; host key {}",
                            ssh.describe(),
                            start.elapsed().as_secs_f64(),
                            c.host_key()
                        ),
                    ));
                    let session = match &desktop {
                        Some(d) => SessionSpec::Env(vec![("DISPLAY".into(), format!(":{}", d.display()))]),
                        None => target.session.clone(),
                    };
                    let shell = Shell::for_family(&target.family);
                    commands =
                        Some(Commands::Ssh(Box::new(RemoteCommands::new(std::sync::Arc::new(c), shell, session))));
                }
                Err(e) => rows.push(row("ssh", Status::Fail, e.to_string())),
            }
        }
        None => {
            if let Some(d) = desktop.as_mut() {
                rows.push(row("ssh", Status::Skip, "not configured: commands run locally in the private desktop"));
                commands = d.take_commands().map(Commands::Local);
            } else {
                rows.push(row("ssh", Status::Skip, "not configured: shell and launch steps cannot run on this target"));
            }
        }
    }

    match commands.as_mut() {
        Some(c) => {
            rows.push(session_row(c, target, desktop.as_ref().map(|d| d.display())).await);
            rows.push(guest_tools_row(c).await);
            rows.push(free_space_row(c, opts.min_free_mb).await);
            rows.push(stray_row(c, &opts.processes).await);
        }
        None => {
            for check in ["desktop session", "target tools", "free space", "stray processes"] {
                let why = if desktop.is_some() || target.ssh.is_some() {
                    "cannot run commands on the target (see ssh)"
                } else {
                    "no SSH to the target"
                };
                rows.push(row(check, Status::Skip, why));
            }
        }
    }
    rows.push(row("vlm", Status::Skip, "not configured (no VLM endpoint in the inventory)"));

    if let Some(mut c) = commands {
        c.stop_all(Duration::from_secs(2)).await;
        if let Commands::Ssh(r) = &c {
            r.client().close().await;
        }
    }
    if let Some(d) = desktop {
        d.teardown().await;
    }
    if let Some(mut q) = vm {
        use crate::vm::VmBackend;
        q.teardown().await;
    }
    rows
}

fn host_tools(target: &Target) -> Row {
    let mut need = vec!["tesseract"];
    if let Backend::Qemu(q) = &target.backend {
        need.push(q.binary.as_str());
        need.push("qemu-img");
    }
    if let Backend::LocalDesktop(cfg) = &target.backend {
        need.push(cfg.xvnc.as_str());
        if let Some(wm) = &cfg.window_manager {
            need.push(wm[0].as_str());
            need.push("xprop");
        }
    }
    let missing: Vec<&str> = need.iter().copied().filter(|p| !crate::backend::process::which(p)).collect();
    if missing.is_empty() {
        row("smoke host", Status::Ok, format!("found {}", need.join(", ")))
    } else {
        row(
            "smoke host",
            Status::Fail,
            format!("missing on this machine: {} (bash scripts/setup-debian.sh)", missing.join(", ")),
        )
    }
}

async fn vnc_row(access: &crate::backend::VncAccess, what: &str) -> Row {
    let ep = &access.endpoint;
    let opts = access.connect_options(Duration::from_secs(10));
    let start = Instant::now();
    match VncClient::connect(ep, &opts).await {
        Ok(c) => {
            let (w, h) = c.size();
            let name = c.desktop_name();
            c.close().await;
            let what = if what.is_empty() { String::new() } else { format!("{what}, ") };
            row("vnc", Status::Ok, format!("{what}{ep}: {w}x{h} \"{name}\" in {:.1}s", start.elapsed().as_secs_f64()))
        }
        Err(e) => row("vnc", Status::Fail, format!("{ep}: {e}")),
    }
}

async fn run(c: &mut Commands, script: &str) -> Result<(Option<i32>, String, String), String> {
    match c.run(script, Duration::from_secs(30), OUTPUT_CAP).await {
        Ok(o) if o.timed_out => Err("timed out after 30s".into()),
        Ok(o) => Ok((o.exit_code, o.stdout, o.stderr)),
        Err(e) => Err(e.to_string()),
    }
}

async fn session_row(c: &mut Commands, target: &Target, local_display: Option<u32>) -> Row {
    const CHECK: &str = "desktop session";
    match (c.shell(), local_display) {
        (Shell::Posix, Some(d)) => match run(c, &format!("[ -S /tmp/.X11-unix/X{d} ] && echo ok")).await {
            Ok((Some(0), _, _)) => row(CHECK, Status::Ok, format!("the private desktop :{d} is reachable")),
            Ok((_, _, e)) => row(CHECK, Status::Fail, format!("the display :{d} is not reachable from the target {e}")),
            Err(e) => row(CHECK, Status::Fail, e),
        },
        (Shell::Posix, None) => {
            let Commands::Ssh(r) = c else {
                return row(CHECK, Status::Skip, "local commands");
            };
            match r.session_env(true).await {
                Ok(env) if env.is_empty() => row(CHECK, Status::Fail, "the session gives no variables"),
                Ok(env) => {
                    let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let how = match &target.session {
                        SessionSpec::Env(_) => "fixed in the inventory",
                        _ => "read from the session leader",
                    };
                    row(CHECK, Status::Ok, format!("{how}: {}", vars.join(" ")))
                }
                Err(e) => row(CHECK, Status::Fail, e.to_string()),
            }
        }
        (Shell::PowerShell, _) => {
            match run(c, "$u = (Get-CimInstance -ClassName Win32_ComputerSystem).UserName\nif ($u) { Write-Output $u; exit 0 } else { exit 3 }").await {
                Ok((Some(0), out, _)) => row(CHECK, Status::Ok, format!("{} is logged on to the console", out.trim())),
                Ok(_) => row(CHECK, Status::Fail, "nobody is logged on to the console: GUI launches need a logged-on user"),
                Err(e) => row(CHECK, Status::Fail, e),
            }
        }
    }
}

async fn guest_tools_row(c: &mut Commands) -> Row {
    const CHECK: &str = "target tools";
    match c.shell() {
        Shell::Posix => {
            let all: Vec<&str> = LINUX_TOOLS.iter().chain(LINUX_OPTIONAL).copied().collect();
            let script = format!(
                "for t in {}; do command -v \"$t\" >/dev/null 2>&1 || echo \"missing:$t\"; done; exit 0",
                all.join(" ")
            );
            match run(c, &script).await {
                Ok((_, out, _)) => {
                    let missing: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("missing:")).collect();
                    let required: Vec<&str> = missing.iter().copied().filter(|m| LINUX_TOOLS.contains(m)).collect();
                    let optional: Vec<&str> = missing.iter().copied().filter(|m| !LINUX_TOOLS.contains(m)).collect();
                    if !required.is_empty() {
                        row(
                            CHECK,
                            Status::Fail,
                            format!("missing: {} (needed by launches and cleanup routines)", required.join(", ")),
                        )
                    } else if !optional.is_empty() {
                        row(
                            CHECK,
                            Status::Warn,
                            format!(
                                "all required found; optional missing: {} (forensics, prepare_display)",
                                optional.join(", ")
                            ),
                        )
                    } else {
                        row(CHECK, Status::Ok, format!("found {}", all.join(", ")))
                    }
                }
                Err(e) => row(CHECK, Status::Fail, e),
            }
        }
        Shell::PowerShell => {
            let script = "Write-Output ('powershell ' + $PSVersionTable.PSVersion)\n\
                          if (-not (Get-Command Register-ScheduledTask -ErrorAction SilentlyContinue)) { Write-Output 'missing:ScheduledTasks' }\n\
                          if (-not (Get-Command taskkill.exe -ErrorAction SilentlyContinue)) { Write-Output 'missing:taskkill' }\nexit 0";
            match run(c, script).await {
                Ok((_, out, _)) if out.contains("missing:") => row(CHECK, Status::Fail, out.trim().replace('\n', "; ")),
                Ok((_, out, _)) => row(CHECK, Status::Ok, out.trim().replace('\n', "; ")),
                Err(e) => row(CHECK, Status::Fail, e),
            }
        }
    }
}

async fn free_space_row(c: &mut Commands, min_mb: u64) -> Row {
    const CHECK: &str = "free space";
    let script = match c.shell() {
        Shell::Posix => "df -Pk \"$HOME\" \"${TMPDIR:-/tmp}\" | awk 'NR > 1 { print $6 \" \" $4 }'".to_string(),
        Shell::PowerShell => {
            "Get-PSDrive -PSProvider FileSystem | Where-Object { $_.Free -ne $null } | ForEach-Object { Write-Output ($_.Root + ' ' + [math]::Floor($_.Free / 1024)) }".to_string()
        }
    };
    match run(c, &script).await {
        Ok((Some(0), out, _)) => {
            let mut worst = Status::Ok;
            let mut parts = Vec::new();
            for line in out.lines() {
                let Some((mount, kb)) = line.trim().rsplit_once(' ') else { continue };
                let Ok(kb) = kb.parse::<u64>() else { continue };
                let mb = kb / 1024;
                let s = if mb < min_mb {
                    Status::Fail
                } else if mb < min_mb * 4 {
                    Status::Warn
                } else {
                    Status::Ok
                };
                if s == Status::Fail || (s == Status::Warn && worst == Status::Ok) {
                    worst = s;
                }
                let entry = format!("{mount} {:.1} GiB", mb as f64 / 1024.0);
                if !parts.contains(&entry) {
                    parts.push(entry);
                }
            }
            if parts.is_empty() {
                return row(CHECK, Status::Warn, format!("could not read the free space: {}", out.trim()));
            }
            row(CHECK, worst, format!("{} free (fails below {min_mb} MiB)", parts.join(", ")))
        }
        Ok((_, _, e)) => row(CHECK, Status::Warn, format!("could not read the free space: {}", e.trim())),
        Err(e) => row(CHECK, Status::Fail, e),
    }
}

async fn stray_row(c: &mut Commands, processes: &[String]) -> Row {
    const CHECK: &str = "stray processes";
    if processes.is_empty() {
        return row(CHECK, Status::Skip, "no app named (smoke doctor --process NAME)");
    }
    let mut found = Vec::new();
    for p in processes {
        let script = match c.shell() {
            Shell::Posix => guest::linux::probe_script(p, None),
            Shell::PowerShell => guest::windows::probe_script(p, None),
        };
        match run(c, &script).await {
            Ok((_, out, _)) => {
                let n = guest::linux::parse_probe(&out).running;
                if n > 0 {
                    found.push(format!("{p}: {n} running"));
                }
            }
            Err(e) => return row(CHECK, Status::Fail, e),
        }
    }
    if found.is_empty() {
        row(CHECK, Status::Ok, format!("none of {} runs", processes.join(", ")))
    } else {
        row(CHECK, Status::Fail, format!("{} (stop them, e.g. with the stop_app routine)", found.join("; ")))
    }
}
