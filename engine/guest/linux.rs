//! Linux (POSIX sh) scripts: find the desktop session, start a GUI app in
//! it, probe and stop processes by their kernel name, resolve file patterns.
//!
//! Session: the app needs the session's `DISPLAY`, `XAUTHORITY`,
//! `WAYLAND_DISPLAY`, `DBUS_SESSION_BUS_ADDRESS` and `XDG_RUNTIME_DIR`. They
//! are read from `/proc/<leader>/environ` of the first session leader
//! (gnome-shell, plasmashell, xfce4-session, ...) that runs as the SSH user
//! and has a display. Process names are compared as the kernel keeps them:
//! the first 15 bytes (`pgrep -x` semantics, never `-f`, which would match
//! the probing script's own command line).

use crate::backend::process::comm_name;
use crate::scenario::model::CommandLine;
use crate::scenario::template::shquote;

/// Session leaders looked for, in order (desktop shells before window managers).
pub const DEFAULT_LEADERS: &[&str] = &[
    "gnome-shell",
    "plasmashell",
    "xfce4-session",
    "mate-session",
    "cinnamon-session",
    "lxqt-session",
    "lxsession",
    "budgie-wm",
    "kwin_wayland",
    "kwin_x11",
    "gnome-session-binary",
    "sway",
    "xfwm4",
    "openbox",
    "i3",
    "fluxbox",
    "icewm-session",
];

/// Variables taken from the session leader.
pub const SESSION_VARS: &[&str] =
    &["DISPLAY", "XAUTHORITY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR"];

/// What the discovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub leader: String,
    pub pid: u32,
    pub env: Vec<(String, String)>,
}

/// Prints `leader:NAME:PID` and `env:K=V` lines for the first leader with a
/// display, or fails (exit 3) naming what it looked for.
pub fn discover_script(leaders: &[String]) -> String {
    let names: Vec<String> = leaders.iter().map(|l| shquote(&comm_name(l))).collect();
    let vars = SESSION_VARS.join("|");
    format!(
        r#"uid=$(id -u)
for n in {names}; do
  for p in $(pgrep -x -u "$uid" -- "$n" 2>/dev/null); do
    [ -r "/proc/$p/environ" ] || continue
    tr '\0' '\n' < "/proc/$p/environ" | grep -qE '^(DISPLAY|WAYLAND_DISPLAY)=.' || continue
    printf 'leader:%s:%s\n' "$n" "$p"
    tr '\0' '\n' < "/proc/$p/environ" | grep -E '^({vars})=' | sed 's/^/env:/'
    exit 0
  done
done
printf '%s\n' "no desktop session of user $(id -un) found: none of {list} runs as this user with a DISPLAY or WAYLAND_DISPLAY (log in on the desktop first, or set the target's session: in the inventory)" >&2
exit 3
"#,
        names = names.join(" "),
        list = leaders.join(", ").replace(['\'', '"', '$', '`', '\\'], "")
    )
}

/// Read the discovery output.
pub fn parse_session(stdout: &str) -> Option<Session> {
    let mut leader = None;
    let mut env = Vec::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("leader:") {
            let (name, pid) = rest.rsplit_once(':')?;
            leader = Some((name.to_string(), pid.trim().parse().ok()?));
        } else if let Some(kv) = line.strip_prefix("env:")
            && let Some((k, v)) = kv.split_once('=')
        {
            env.push((k.to_string(), v.to_string()));
        }
    }
    let (leader, pid) = leader?;
    Some(Session { leader, pid, env })
}

/// Files a remote launch keeps in the run's folder on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchFiles {
    pub dir: String,
    pub log: String,
    pub status: String,
}

impl LaunchFiles {
    pub fn new(dir: &str, n: usize) -> LaunchFiles {
        LaunchFiles {
            dir: dir.to_string(),
            log: format!("{dir}/launch-{n:03}.log"),
            status: format!("{dir}/launch-{n:03}.status"),
        }
    }
}

/// Prefix of the line a launch prints with the started process id.
pub const LAUNCH_PID: &str = "smoke-launch-pid:";

/// Start `cmd` detached in its own session with the desktop's `env`, output
/// to the log; the exit status lands in the status file when it ends.
/// Prints `smoke-launch-pid:N` (N leads the app's session and process group).
pub fn launch_script(cmd: &CommandLine, files: &LaunchFiles, env: &[(String, String)]) -> String {
    let mut s = format!(
        "d={dir}; mkdir -p \"$d\" && chmod 700 \"$d\" || exit 1\ncd \"$HOME\" 2>/dev/null || cd /\n",
        dir = shquote(&files.dir)
    );
    if let CommandLine::Argv(argv) = cmd {
        let prog = shquote(&argv[0]);
        s.push_str(&format!(
            "command -v {prog} >/dev/null 2>&1 || {{ printf '%s\\n' {msg} >&2; exit 127; }}\n",
            msg = shquote(&format!("'{}' is not installed on the target (not found on PATH)", argv[0]))
        ));
    }
    for (k, v) in env {
        s.push_str(&format!("export {k}={}\n", shquote(v)));
    }
    let run = match cmd {
        CommandLine::Argv(argv) => {
            let words: Vec<String> = argv.iter().map(|a| shquote(a)).collect();
            format!("setsid sh -c '\"$@\"; echo \"$?\" > \"$0\"' {} {}", shquote(&files.status), words.join(" "))
        }
        CommandLine::Shell(line) => {
            let script = format!("{line}\necho \"$?\" > \"$0\"");
            format!("setsid sh -c {} {}", shquote(&script), shquote(&files.status))
        }
    };
    s.push_str(&format!("{run} </dev/null >{} 2>&1 &\necho \"{LAUNCH_PID}$!\"\n", shquote(&files.log)));
    s
}

/// The pid a launch script printed.
pub fn parse_launch_pid(stdout: &str) -> Option<u32> {
    stdout.lines().find_map(|l| l.trim().strip_prefix(LAUNCH_PID)?.trim().parse().ok())
}

/// Count processes of the SSH user named `name` (kernel name, 15 bytes) and
/// report on a launched process: `running:N`, then `exit:CODE`, `alive` or `gone`.
pub fn probe_script(name: &str, launched: Option<(u32, &str)>) -> String {
    // zombies (ended, not yet reaped) do not count
    let mut s = format!(
        "n=0; for p in $(pgrep -x -u \"$(id -u)\" -- {} 2>/dev/null); do \
         case $(sed 's/.*) //' \"/proc/$p/stat\" 2>/dev/null | cut -c1) in Z|X|\"\") ;; *) n=$((n+1));; esac; done; \
         echo \"running:$n\"\n",
        shquote(&comm_name(name))
    );
    if let Some((pid, status)) = launched {
        s.push_str(&format!(
            "if [ -s {st} ]; then echo \"exit:$(cat {st})\"; elif [ -d /proc/{pid} ] && ! grep -q '^State:.*Z' /proc/{pid}/status 2>/dev/null; then echo alive; else echo gone; fi\n",
            st = shquote(status)
        ));
    }
    s
}

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProbeResult {
    pub running: u32,
    /// For a launched process: `Some(code)` when it ended with a status.
    pub exit: Option<i32>,
    /// The launched process is gone (with or without a status).
    pub gone: bool,
}

pub fn parse_probe(stdout: &str) -> ProbeResult {
    let mut r = ProbeResult::default();
    for l in stdout.lines().map(str::trim) {
        if let Some(n) = l.strip_prefix("running:") {
            r.running = n.trim().parse().unwrap_or(0);
        } else if let Some(c) = l.strip_prefix("exit:") {
            r.exit = c.trim().parse().ok();
            r.gone = true;
        } else if l == "gone" {
            r.gone = true;
        }
    }
    r
}

/// TERM the sessions led by `pids`, then KILL what is left after `grace_ds` tenths of a second.
pub fn stop_script(pids: &[u32], grace_ds: u32) -> String {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let list = list.join(" ");
    format!(
        "for p in {list}; do kill -TERM -$p 2>/dev/null || kill -TERM $p 2>/dev/null; done\n\
         i=0; while [ $i -lt {grace_ds} ]; do left=; for p in {list}; do kill -0 -$p 2>/dev/null && left=1; done; [ -z \"$left\" ] && exit 0; sleep 0.1; i=$((i+1)); done\n\
         for p in {list}; do kill -KILL -$p 2>/dev/null; kill -KILL $p 2>/dev/null; done; exit 0\n"
    )
}

/// Resolve a file pattern (`*`, `?`, `[...]`; a leading `~/` is the home
/// folder) without running anything the pattern says: it is expanded as an
/// unsplit variable, never evaluated. Prints `match:PATH` per file; with no
/// match, `folder:DIR` and `entry:NAME` of the nearest folder without wildcards.
pub fn resolve_script(pattern: &str) -> String {
    format!(
        r#"p={pattern}
case $p in "~/"*) p="$HOME/${{p#"~/"}}";; "~") p=$HOME;; esac
IFS=
n=0
for f in $p; do
  if [ -f "$f" ]; then printf 'match:%s\n' "$f"; n=$((n+1)); fi
done
[ "$n" -gt 0 ] && exit 0
dir_of() {{ case $1 in */*) r=${{1%/*}}; [ -z "$r" ] && r=/; printf '%s' "$r";; *) printf '.';; esac; }}
d=$(dir_of "$p")
while :; do case $d in *[][*?]*) d=$(dir_of "$d");; *) break;; esac; done
if [ -d "$d" ]; then printf 'folder:%s\n' "$d"; ls -1A "$d" 2>/dev/null | head -n 30 | sed 's/^/entry:/'; fi
exit 0
"#,
        pattern = shquote(pattern)
    )
}

/// The last `bytes` of a file.
pub fn tail_script(path: &str, bytes: usize) -> String {
    format!("tail -c {bytes} {} 2>/dev/null", shquote(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> (String, i32) {
        let o = std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
        (String::from_utf8_lossy(&o.stdout).to_string(), o.status.code().unwrap_or(-1))
    }

    #[test]
    fn session_output_is_parsed() {
        let s = parse_session(
            "leader:gnome-shell:1234\nenv:DISPLAY=:0\nenv:DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus\n",
        )
        .unwrap();
        assert_eq!((s.leader.as_str(), s.pid), ("gnome-shell", 1234));
        assert_eq!(s.env[1], ("DBUS_SESSION_BUS_ADDRESS".into(), "unix:path=/run/user/1000/bus".into()));
        assert!(parse_session("").is_none());
    }

    #[test]
    fn leader_names_are_truncated_like_the_kernel() {
        let s = discover_script(&["cinnamon-session".to_string()]);
        assert!(s.contains("for n in 'cinnamon-sessio'; do"), "{s}");
    }

    #[test]
    fn resolve_matches_files_only_and_lists_the_folder_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        std::fs::create_dir_all(format!("{d}/App 1.2/bin")).unwrap();
        std::fs::write(format!("{d}/App 1.2/bin/app"), "").unwrap();
        std::fs::create_dir_all(format!("{d}/App 2.0/bin")).unwrap();
        let (out, code) = sh(&resolve_script(&format!("{d}/App */bin/app")));
        assert_eq!(code, 0);
        assert_eq!(parse_resolved(&out), crate::guest::Resolved::One(format!("{d}/App 1.2/bin/app")));
        std::fs::write(format!("{d}/App 2.0/bin/app"), "").unwrap();
        assert!(
            matches!(parse_resolved(&sh(&resolve_script(&format!("{d}/App */bin/app"))).0), crate::guest::Resolved::Several(v) if v.len() == 2)
        );
        let (out, _) = sh(&resolve_script(&format!("{d}/Nope*/bin/app")));
        match parse_resolved(&out) {
            crate::guest::Resolved::None { listing, folder } => {
                assert_eq!(folder.as_deref(), Some(d.as_str()));
                assert_eq!(listing.len(), 2, "{listing:?}");
            }
            other => panic!("{other:?}"),
        }
        // a hostile pattern is never evaluated
        let marker = format!("{d}/pwned");
        let (_, code) = sh(&resolve_script(&format!("$(touch {marker})*; touch {marker}")));
        assert_eq!(code, 0);
        assert!(!std::path::Path::new(&marker).exists());
    }

    use crate::guest::parse_resolved;

    #[test]
    fn launch_script_quotes_arguments_and_reports_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let files = LaunchFiles::new(&dir.path().join("run").display().to_string(), 3);
        let argv = vec!["sh".to_string(), "-c".to_string(), "printf '%s' \"$X\"; exit 7".to_string()];
        let script = launch_script(&CommandLine::Argv(argv), &files, &[("X".into(), "a 'b' $c".into())]);
        let (out, code) = sh(&script);
        assert_eq!(code, 0);
        let pid = parse_launch_pid(&out).unwrap();
        assert!(pid > 1);
        for _ in 0..100 {
            if std::fs::read_to_string(&files.status).is_ok_and(|s| !s.is_empty()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(std::fs::read_to_string(&files.status).unwrap().trim(), "7");
        assert_eq!(std::fs::read_to_string(&files.log).unwrap(), "a 'b' $c");
        let p = parse_probe(&sh(&probe_script("nothing-like-this", Some((pid, &files.status)))).0);
        assert_eq!(p, ProbeResult { running: 0, exit: Some(7), gone: true });
        let (_, code) = sh(&launch_script(&CommandLine::Argv(vec!["no-such-program-x".into()]), &files, &[]));
        assert_eq!(code, 127);
    }
}
