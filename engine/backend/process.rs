//! Local processes: spawn in their own session (so a whole app tree can be
//! stopped), die with smoke, probe by name the way the kernel names them, and
//! stop with a TERM-then-KILL ladder.

use std::path::Path;
use std::time::{Duration, Instant};

/// Put the child in its own session and process group, and have it receive
/// SIGTERM if smoke dies without tearing down.
pub fn isolate(cmd: &mut tokio::process::Command) {
    // SAFETY: only async-signal-safe calls (setsid, prctl) run between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

/// The name the kernel keeps for a process (`comm`): at most 15 bytes.
pub fn comm_name(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let mut end = base.len().min(15);
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    base[..end].to_string()
}

/// One entry of /proc.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    pub pid: u32,
    pub comm: String,
    pub state: char,
    pub pgrp: u32,
    pub session: u32,
}

/// Parse /proc/PID/stat ("pid (comm) state ppid pgrp session ...").
pub fn parse_stat(pid: u32, stat: &str) -> Option<ProcInfo> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    Some(ProcInfo {
        pid,
        comm,
        state: rest.first()?.chars().next()?,
        pgrp: rest.get(2)?.parse().ok()?,
        session: rest.get(3)?.parse().ok()?,
    })
}

/// Every live (non-zombie) process.
pub fn processes() -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            parse_stat(pid, &stat)
        })
        .filter(|p| p.state != 'Z' && p.state != 'X')
        .collect()
}

/// True when the process's environment has `key=value` (false when unreadable).
pub fn has_env(pid: u32, key: &str, value: &str) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { return false };
    let want = format!("{key}={value}");
    env.split(|b| *b == 0).any(|kv| kv == want.as_bytes())
}

/// Live members of a process group.
pub fn group_members(pgrp: u32) -> Vec<u32> {
    processes().into_iter().filter(|p| p.pgrp == pgrp).map(|p| p.pid).collect()
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopPath {
    AlreadyGone,
    Terminated,
    Killed,
}

/// SIGTERM a process group, wait up to `grace` for it to go (zombies count as
/// gone), then SIGKILL it.
pub async fn stop_group(pgrp: u32, grace: Duration) -> StopPath {
    if pgrp <= 1 || group_members(pgrp).is_empty() {
        return StopPath::AlreadyGone;
    }
    // SAFETY: plain syscall on a group we created.
    unsafe { libc::kill(-(pgrp as i32), libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if group_members(pgrp).is_empty() {
            return StopPath::Terminated;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // SAFETY: as above.
    unsafe { libc::kill(-(pgrp as i32), libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && !group_members(pgrp).is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    StopPath::Killed
}

/// Is `program` on PATH (or an existing path)?
pub fn which(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let p = parse_stat(42, "42 (my (odd) app) S 1 42 42 0 -1").unwrap();
        assert_eq!((p.comm.as_str(), p.state, p.pgrp, p.session), ("my (odd) app", 'S', 42, 42));
    }

    #[test]
    fn comm_is_truncated_like_the_kernel() {
        assert_eq!(comm_name("rocketchat-desktop.bin"), "rocketchat-desk");
        assert_eq!(comm_name("/usr/bin/galculator"), "galculator");
    }

    #[tokio::test]
    async fn a_group_is_stopped_with_its_children() {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg("sleep 30 & sleep 30 & wait");
        isolate(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let pid = child.id().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(group_members(pid).len() >= 3, "{:?}", group_members(pid));
        let path = stop_group(pid, Duration::from_secs(3)).await;
        assert_ne!(path, StopPath::AlreadyGone);
        let _ = child.wait().await;
        assert!(group_members(pid).is_empty());
    }
}
