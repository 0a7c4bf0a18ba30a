//! Windows over OpenSSH: PowerShell scripts, GUI launches in the user's
//! desktop session, process probes, Windows path rules.
//!
//! - OpenSSH's default shell on Windows is cmd.exe. Scripts go to
//!   `powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass
//!   -EncodedCommand <base64 of UTF-16LE>`: base64 passes cmd (and any other
//!   shell) untouched, so `$_`, `${...}` and quotes arrive intact.
//! - Every script starts with `$ProgressPreference='SilentlyContinue'` (or
//!   stderr fills with `#< CLIXML` progress records), UTF-8 output, and the
//!   `smoke-pid:` announcement used to kill it on timeout.
//! - cmd.exe cuts command lines at 8191 characters (an encoded script of about
//!   3 KB): longer scripts are sent through stdin to a small encoded loader.
//! - SSH sessions live in session 0, where a GUI app is invisible: apps are
//!   started through a scheduled task with an interactive token of the user
//!   logged on to the console (created, run, deleted).
//! - Paths are split with Windows rules (`\` and `/`), process names compared
//!   without `.exe`, case-insensitively (as Get-Process does).

use crate::scenario::model::CommandLine;
use crate::scenario::template::psquote;
use crate::ssh::exec::PID_MARKER;

/// How PowerShell is started.
pub const POWERSHELL: &str = "powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass";

/// cmd.exe's command line limit.
pub const CMD_LIMIT: usize = 8191;

/// Prepended to every script.
pub fn prelude() -> String {
    format!(
        "$ProgressPreference = 'SilentlyContinue'\n\
         [Console]::OutputEncoding = [System.Text.Encoding]::UTF8\n\
         [Console]::Error.WriteLine('{PID_MARKER}' + $PID)\n"
    )
}

/// Base64 of the script's UTF-16LE bytes, as `-EncodedCommand` takes it.
pub fn encode(script: &str) -> String {
    let bytes: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    data_encoding::BASE64.encode(&bytes)
}

/// The command line for a (short) script, prelude included.
pub fn command_line(script: &str) -> String {
    format!("{POWERSHELL} -EncodedCommand {}", encode(&format!("{}{script}", prelude())))
}

/// The loader that reads a long script from stdin (UTF-8) and runs it.
pub fn stdin_loader() -> String {
    "$ProgressPreference = 'SilentlyContinue'\n\
     $in = [Console]::OpenStandardInput()\n\
     $buf = New-Object System.IO.MemoryStream\n\
     $in.CopyTo($buf)\n\
     $text = [System.Text.Encoding]::UTF8.GetString($buf.ToArray())\n\
     & ([ScriptBlock]::Create($text))\n\
     exit $LASTEXITCODE\n"
        .to_string()
}

/// The command line (and stdin) that runs `script`: encoded on the command
/// line when it fits cmd's limit, otherwise through stdin.
pub fn command(script: &str) -> (String, Option<Vec<u8>>) {
    let line = command_line(script);
    if line.len() <= CMD_LIMIT {
        return (line, None);
    }
    let full = format!("{}{script}", prelude());
    (format!("{POWERSHELL} -EncodedCommand {}", encode(&stdin_loader())), Some(full.into_bytes()))
}

/// The last part of a Windows path (`C:\Program Files\App\app.exe` -> `app.exe`).
pub fn basename(path: &str) -> &str {
    path.trim_end_matches(['\\', '/']).rsplit(['\\', '/']).next().unwrap_or(path)
}

/// The name Get-Process knows a program by: its base name without `.exe`.
pub fn process_name(program: &str) -> String {
    let b = basename(program);
    match b.len().checked_sub(4) {
        Some(i) if b.is_char_boundary(i) && b[i..].eq_ignore_ascii_case(".exe") => b[..i].to_string(),
        _ => b.to_string(),
    }
}

/// Quote one argument the way CommandLineToArgvW splits it back.
pub fn arg_quote(arg: &str) -> String {
    if !arg.is_empty() && !arg.contains([' ', '\t', '\n', '\u{b}', '"']) {
        return arg.to_string();
    }
    let mut out = String::from("\"");
    let mut backslashes = 0;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.push_str(&"\\".repeat(backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            _ => {
                out.push_str(&"\\".repeat(backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    out.push_str(&"\\".repeat(backslashes * 2));
    out.push('"');
    out
}

/// Executable and argument string of a launch.
fn program_and_arguments(cmd: &CommandLine) -> (String, String) {
    match cmd {
        CommandLine::Argv(argv) => {
            (argv[0].clone(), argv[1..].iter().map(|a| arg_quote(a)).collect::<Vec<_>>().join(" "))
        }
        CommandLine::Shell(line) => (
            "powershell.exe".to_string(),
            format!("-NoProfile -WindowStyle Hidden -ExecutionPolicy Bypass -EncodedCommand {}", encode(line)),
        ),
    }
}

/// Prefix of the line a launch prints with the started process id.
pub const LAUNCH_PID: &str = crate::guest::linux::LAUNCH_PID;

/// Start `cmd` in the desktop session of the user logged on to the console:
/// register a scheduled task with an interactive token, run it, wait up to
/// `wait_s` seconds for a new process named `process`, print its id
/// (`smoke-launch-pid:N`), and delete the task on every path out.
pub fn launch_script(cmd: &CommandLine, process: &str, task: &str, wait_s: u32) -> String {
    let (exe, args) = program_and_arguments(cmd);
    let name = psquote(&process_name(process));
    let action = if args.is_empty() {
        format!("New-ScheduledTaskAction -Execute {}", psquote(&exe))
    } else {
        format!("New-ScheduledTaskAction -Execute {} -Argument {}", psquote(&exe), psquote(&args))
    };
    format!(
        r#"$ErrorActionPreference = 'Stop'
$task = {task}
$user = (Get-CimInstance -ClassName Win32_ComputerSystem).UserName
if (-not $user) {{ [Console]::Error.WriteLine('nobody is logged on to the desktop: log in (or turn on auto-logon) first'); exit 3 }}
$before = @(Get-Process -Name {name} -ErrorAction SilentlyContinue | ForEach-Object {{ $_.Id }})
$action = {action}
$principal = New-ScheduledTaskPrincipal -UserId $user -LogonType Interactive -RunLevel Limited
$settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries -ExecutionTimeLimit ([TimeSpan]::Zero) -MultipleInstances Parallel
Register-ScheduledTask -TaskName $task -Action $action -Principal $principal -Settings $settings -Force | Out-Null
try {{
  Start-ScheduledTask -TaskName $task
  $deadline = (Get-Date).AddSeconds({wait_s})
  $new = $null
  while (-not $new -and (Get-Date) -lt $deadline) {{
    $new = Get-Process -Name {name} -ErrorAction SilentlyContinue | Where-Object {{ $before -notcontains $_.Id }} | Select-Object -First 1
    if (-not $new) {{ Start-Sleep -Milliseconds 200 }}
  }}
  if ($new) {{ Write-Output ('{LAUNCH_PID}' + $new.Id) }}
  else {{
    $info = Get-ScheduledTaskInfo -TaskName $task
    [Console]::Error.WriteLine('the task ran (result ' + $info.LastTaskResult + ') but no new process named ' + {name} + ' appeared')
    exit 4
  }}
}} finally {{
  Unregister-ScheduledTask -TaskName $task -Confirm:$false -ErrorAction SilentlyContinue
}}
"#,
        task = psquote(task),
    )
}

/// `running:N` for processes named `name`, then `alive`/`gone` for a launched pid.
pub fn probe_script(name: &str, pid: Option<u32>) -> String {
    let mut s = format!(
        "$n = @(Get-Process -Name {} -ErrorAction SilentlyContinue).Count\nWrite-Output ('running:' + $n)\n",
        psquote(&process_name(name))
    );
    if let Some(pid) = pid {
        s.push_str(&format!(
            "if (Get-Process -Id {pid} -ErrorAction SilentlyContinue) {{ Write-Output 'alive' }} else {{ Write-Output 'gone' }}\n"
        ));
    }
    s
}

/// End the launched processes (and their children).
pub fn stop_script(pids: &[u32]) -> String {
    pids.iter().map(|p| format!("taskkill.exe /T /F /PID {p} 2>&1 | Out-Null\n")).collect::<String>() + "exit 0\n"
}

/// Resolve a file pattern (PowerShell wildcards; a leading `~` is the home
/// folder): `match:PATH` per file, else `folder:` and `entry:` lines.
pub fn resolve_script(pattern: &str) -> String {
    format!(
        r#"$p = {pattern}
if ($p -eq '~' -or $p.StartsWith('~\') -or $p.StartsWith('~/')) {{ $p = $HOME + $p.Substring(1) }}
$found = @(Get-ChildItem -Path $p -File -Force -ErrorAction SilentlyContinue)
foreach ($f in $found) {{ Write-Output ('match:' + $f.FullName) }}
if ($found.Count -eq 0) {{
  $d = Split-Path -Path $p -Parent
  while ($d -and ($d -match '[\*\?\[]')) {{ $d = Split-Path -Path $d -Parent }}
  if ($d -and (Test-Path -LiteralPath $d -PathType Container)) {{
    Write-Output ('folder:' + $d)
    Get-ChildItem -LiteralPath $d -Force -ErrorAction SilentlyContinue | Select-Object -First 30 | ForEach-Object {{ Write-Output ('entry:' + $_.Name) }}
  }}
}}
exit 0
"#,
        pattern = psquote(pattern)
    )
}

/// Write stdin (raw bytes) to `path`.
pub fn upload_script(path: &str) -> String {
    format!(
        "$out = [System.IO.File]::Create({})\n\
         try {{ [Console]::OpenStandardInput().CopyTo($out) }} finally {{ $out.Close() }}\n",
        psquote(path)
    )
}

/// Write the raw bytes of `path` to stdout.
pub fn download_script(path: &str) -> String {
    format!(
        "$in = [System.IO.File]::OpenRead({})\n\
         $out = [Console]::OpenStandardOutput()\n\
         try {{ $in.CopyTo($out); $out.Flush() }} finally {{ $in.Close() }}\n",
        psquote(path)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(b64: &str) -> String {
        let bytes = data_encoding::BASE64.decode(b64.as_bytes()).unwrap();
        let units: Vec<u16> = bytes.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        String::from_utf16(&units).unwrap()
    }

    #[test]
    fn encoded_command_line_is_exact_and_decodes_back() {
        let script = "Get-Process | Where-Object { $_.Name -eq 'x' } ; ${env:TEMP}";
        let line = command_line(script);
        let b64 = line.strip_prefix(&format!("{POWERSHELL} -EncodedCommand ")).unwrap();
        assert!(b64.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)), "{b64}");
        assert_eq!(decode(b64), format!("{}{script}", prelude()));
        assert!(prelude().starts_with("$ProgressPreference = 'SilentlyContinue'\n"));
        assert_eq!(
            command_line("exit 3"),
            "powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand \
             JABQAHIAbwBnAHIAZQBzAHMAUAByAGUAZgBlAHIAZQBuAGMAZQAgAD0AIAAnAFMAaQBsAGUAbgB0AGwAeQBDAG8AbgB0AGkAbgB1AGUAJwAKAFsAQwBvAG4AcwBvAGwAZQBdADoAOgBPAHUAdABwAHUAdABFAG4AYwBvAGQAaQBuAGcAIAA9ACAAWwBTAHkAcwB0AGUAbQAuAFQAZQB4AHQALgBFAG4AYwBvAGQAaQBuAGcAXQA6ADoAVQBUAEYAOAAKAFsAQwBvAG4AcwBvAGwAZQBdADoAOgBFAHIAcgBvAHIALgBXAHIAaQB0AGUATABpAG4AZQAoACcAcwBtAG8AawBlAC0AcABpAGQAOgAnACAAKwAgACQAUABJAEQAKQAKAGUAeABpAHQAIAAzAA=="
        );
    }

    #[test]
    fn non_ascii_survives_utf16() {
        let line = command_line("Write-Output 'Grüße ✓'");
        let b64 = line.rsplit(' ').next().unwrap();
        assert!(decode(b64).ends_with("Write-Output 'Grüße ✓'"));
    }

    #[test]
    fn long_scripts_go_through_stdin() {
        let script = format!("Write-Output '{}'", "x".repeat(5000));
        let (line, stdin) = command(&script);
        assert!(line.len() <= CMD_LIMIT, "{}", line.len());
        let loader = decode(line.rsplit(' ').next().unwrap());
        assert_eq!(loader, stdin_loader());
        assert!(loader.contains("[ScriptBlock]::Create($text)"));
        let body = String::from_utf8(stdin.unwrap()).unwrap();
        assert_eq!(body, format!("{}{script}", prelude()));
        // a short one stays on the command line
        assert!(command("exit 0").1.is_none());
        // the boundary: the longest script that fits, and one more character
        let mut n = 0;
        while command_line(&"y".repeat(n + 1)).len() <= CMD_LIMIT {
            n += 1;
        }
        assert!(command(&"y".repeat(n)).1.is_none());
        assert!(command(&"y".repeat(n + 1)).1.is_some());
        assert!((2500..4000).contains(&n), "{n}");
    }

    #[test]
    fn windows_path_rules() {
        assert_eq!(basename(r"C:\Program Files\Rocket.Chat\Rocket.Chat.exe"), "Rocket.Chat.exe");
        assert_eq!(basename("C:/tools/app.EXE"), "app.EXE");
        assert_eq!(basename(r"\\server\share\dir\"), "dir");
        assert_eq!(process_name(r"C:\Program Files\Rocket.Chat\Rocket.Chat.exe"), "Rocket.Chat");
        assert_eq!(process_name("notepad.EXE"), "notepad");
        assert_eq!(process_name("msedgewebview2"), "msedgewebview2");
        // no 15-character truncation on Windows
        assert_eq!(process_name("a-very-long-program-name.exe"), "a-very-long-program-name");
    }

    #[test]
    fn arguments_are_quoted_for_commandlinetoargvw() {
        assert_eq!(arg_quote("plain"), "plain");
        assert_eq!(arg_quote("two words"), "\"two words\"");
        assert_eq!(arg_quote(""), "\"\"");
        assert_eq!(arg_quote(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(arg_quote(r"C:\dir with space\"), r#""C:\dir with space\\""#);
        assert_eq!(arg_quote(r"a\\b"), r"a\\b");
    }

    #[test]
    fn launch_uses_a_scheduled_task_with_an_interactive_token() {
        let cmd = CommandLine::Argv(vec![
            r"C:\Program Files\Rocket.Chat\Rocket.Chat.exe".into(),
            "--flag".into(),
            "it's here".into(),
        ]);
        let s = launch_script(&cmd, "Rocket.Chat.exe", "smoke-launch-1", 20);
        assert!(s.contains("$task = 'smoke-launch-1'"), "{s}");
        assert!(s.contains(
            r#"$action = New-ScheduledTaskAction -Execute 'C:\Program Files\Rocket.Chat\Rocket.Chat.exe' -Argument '--flag "it''s here"'"#
        ), "{s}");
        assert!(s.contains("New-ScheduledTaskPrincipal -UserId $user -LogonType Interactive -RunLevel Limited"));
        assert!(s.contains("Register-ScheduledTask -TaskName $task"));
        assert!(s.contains("Start-ScheduledTask -TaskName $task"));
        assert!(s.contains("} finally {\n  Unregister-ScheduledTask -TaskName $task -Confirm:$false"));
        assert!(s.contains("Get-Process -Name 'Rocket.Chat' -ErrorAction SilentlyContinue | Where-Object"));
        assert!(s.contains("AddSeconds(20)"));
        // a shell line is run by a hidden PowerShell, encoded
        let s = launch_script(&CommandLine::Shell("Start-Process notepad".into()), "notepad", "t", 5);
        let enc = encode("Start-Process notepad");
        assert!(
            s.contains(&format!("-Execute 'powershell.exe' -Argument '-NoProfile -WindowStyle Hidden -ExecutionPolicy Bypass -EncodedCommand {enc}'")),
            "{s}"
        );
    }

    #[test]
    fn probes_and_files() {
        assert_eq!(
            probe_script(r"C:\x\App.exe", Some(42)),
            "$n = @(Get-Process -Name 'App' -ErrorAction SilentlyContinue).Count\nWrite-Output ('running:' + $n)\n\
             if (Get-Process -Id 42 -ErrorAction SilentlyContinue) { Write-Output 'alive' } else { Write-Output 'gone' }\n"
        );
        assert_eq!(
            stop_script(&[7, 9]),
            "taskkill.exe /T /F /PID 7 2>&1 | Out-Null\ntaskkill.exe /T /F /PID 9 2>&1 | Out-Null\nexit 0\n"
        );
        assert!(
            resolve_script("C:\\Users\\me\\Downloads\\Rocket*.exe")
                .starts_with("$p = 'C:\\Users\\me\\Downloads\\Rocket*.exe'\n")
        );
        assert!(upload_script("C:\\t\\a'b.bin").contains("[System.IO.File]::Create('C:\\t\\a''b.bin')"));
        assert!(download_script("C:\\log.txt").contains("[System.IO.File]::OpenRead('C:\\log.txt')"));
    }
}
