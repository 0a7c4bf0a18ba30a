//! The guest OS side of remote commands: what to send to a Linux or Windows
//! target to run a script, start a GUI app in the user's desktop session,
//! probe processes by name, resolve a file pattern, or move files. Pure
//! builders and parsers, no I/O, so every generated command line is unit
//! tested (Windows cannot run here).

pub mod linux;
pub mod windows;

use std::time::Duration;

use crate::scenario::template::{psquote, shquote};
use crate::ssh::exec::{ExecRequest, KillOnTimeout};

/// The shell a target's commands are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// POSIX `sh` (Linux, macOS, other).
    Posix,
    /// Windows PowerShell 5.1 (`powershell.exe`), reached through OpenSSH's cmd.exe.
    PowerShell,
}

impl Shell {
    /// `windows` targets speak PowerShell; everything else POSIX sh.
    pub fn for_family(family: &str) -> Shell {
        if family == "windows" { Shell::PowerShell } else { Shell::Posix }
    }

    /// Quote a value as one literal word of this shell.
    pub fn quote(self, s: &str) -> String {
        match self {
            Shell::Posix => shquote(s),
            Shell::PowerShell => psquote(s),
        }
    }

    /// A script as a killable command, with `env` set for it.
    pub fn script(self, script: &str, env: &[(String, String)], timeout: Duration) -> ExecRequest {
        match self {
            Shell::Posix => ExecRequest::posix(script, env, timeout),
            Shell::PowerShell => {
                let mut full = String::new();
                for (k, v) in env {
                    full.push_str(&format!("$env:{k} = {}\n", psquote(v)));
                }
                full.push_str(script);
                let (command, stdin) = windows::command(&full);
                let mut r = ExecRequest::raw(command, timeout);
                r.stdin = stdin;
                r.kill = KillOnTimeout::WindowsTree;
                r.what = script.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().chars().take(60).collect();
                r
            }
        }
    }

    /// A command that writes its stdin to `path`.
    pub fn upload_request(self, path: &str, timeout: Duration) -> ExecRequest {
        let r = match self {
            Shell::Posix => ExecRequest::posix(&format!("cat > {}", shquote(path)), &[], timeout),
            Shell::PowerShell => ExecRequest {
                command: windows::command_line(&windows::upload_script(path)),
                kill: KillOnTimeout::WindowsTree,
                ..ExecRequest::raw(String::new(), timeout)
            },
        };
        ExecRequest { what: format!("upload to {path}"), ..r }
    }

    /// A command that writes the bytes of `path` to stdout.
    pub fn download_request(self, path: &str, timeout: Duration) -> ExecRequest {
        let r = match self {
            Shell::Posix => ExecRequest::posix(&format!("cat -- {}", shquote(path)), &[], timeout),
            Shell::PowerShell => ExecRequest {
                command: windows::command_line(&windows::download_script(path)),
                kill: KillOnTimeout::WindowsTree,
                ..ExecRequest::raw(String::new(), timeout)
            },
        };
        ExecRequest { what: format!("download {path}"), ..r }
    }
}

/// A file pattern resolved on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    One(String),
    None { listing: Vec<String>, folder: Option<String> },
    Several(Vec<String>),
}

impl Resolved {
    /// The one file, or an error that lists what was found.
    pub fn into_path(self, pattern: &str) -> Result<String, String> {
        match self {
            Resolved::One(p) => Ok(p),
            Resolved::Several(found) => Err(format!(
                "the file pattern '{pattern}' matches {} files on the target, it must match exactly one: {}",
                found.len(),
                found.join(", ")
            )),
            Resolved::None { listing, folder } => {
                let seen = match folder {
                    Some(f) if listing.is_empty() => format!("; {f} is empty"),
                    Some(f) => format!("; {f} has: {}", listing.join(", ")),
                    None => "; not even its folder exists".to_string(),
                };
                Err(format!("the file pattern '{pattern}' matches no file on the target{seen}"))
            }
        }
    }
}

/// Parse the output of a resolve script: `match:PATH` lines, then for no
/// match `folder:DIR` and `entry:NAME` lines.
pub fn parse_resolved(stdout: &str) -> Resolved {
    let mut found = Vec::new();
    let mut listing = Vec::new();
    let mut folder = None;
    for line in stdout.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(p) = line.strip_prefix("match:") {
            found.push(p.to_string());
        } else if let Some(f) = line.strip_prefix("folder:") {
            folder = Some(f.to_string());
        } else if let Some(e) = line.strip_prefix("entry:") {
            listing.push(e.to_string());
        }
    }
    match found.len() {
        1 => Resolved::One(found.remove(0)),
        0 => Resolved::None { listing, folder },
        _ => Resolved::Several(found),
    }
}

/// Replace `{file}` (not `${file}`) in `text` with `value`.
pub fn substitute_file(text: &str, value: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("{file}") {
        let dollar = rest[..i].ends_with('$');
        out.push_str(&rest[..i]);
        out.push_str(if dollar { "{file}" } else { value });
        rest = &rest[i + "{file}".len()..];
    }
    out.push_str(rest);
    out
}

/// Does `text` use the `{file}` placeholder (not a shell's `${file}`)?
pub fn uses_file(text: &str) -> bool {
    text.match_indices("{file}").any(|(i, _)| !text[..i].ends_with('$'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_placeholder_but_not_shell_variables() {
        assert_eq!(
            substitute_file("chmod +x {file} && \"${file}\" {file}", "'/a b'"),
            "chmod +x '/a b' && \"${file}\" '/a b'"
        );
        assert!(uses_file("run {file}"));
        assert!(!uses_file("echo ${file}"));
    }

    #[test]
    fn resolution_errors_list_what_was_found() {
        let r = parse_resolved("match:/opt/a/app\nmatch:/opt/b/app\n");
        let e = r.into_path("/opt/*/app").unwrap_err();
        assert!(e.contains("matches 2 files") && e.contains("/opt/a/app, /opt/b/app"), "{e}");
        let r = parse_resolved("folder:/opt\nentry:x\nentry:y\n");
        let e = r.into_path("/opt/app-*").unwrap_err();
        assert!(e.contains("matches no file") && e.contains("/opt has: x, y"), "{e}");
        assert_eq!(parse_resolved("match:/a b/c\n").into_path("p").unwrap(), "/a b/c");
    }
}
