//! The cleanup library in routines/: per-OS overrides are picked and render
//! the right shell, and the Linux scripts do what they say when run for real
//! (in a scratch HOME): profiles and keyrings are wiped (the keyring daemon
//! stopped first, since it writes its files back), `{file}` and forensics are
//! validated before anything runs.

mod support;

use std::path::Path;

use smoke::scenario::diagnostic::Diagnostics;
use smoke::scenario::model::Action;
use smoke::scenario::plan::{self, Plan, PlanOptions, TargetInfo, UpdateReferences};
use smoke::scenario::source::SourceMap;
use smoke::secrets::SecretStore;

fn target(name: &str, family: &str, caps: Vec<&'static str>) -> PlanOptions {
    PlanOptions {
        target: TargetInfo {
            name: name.into(),
            family: family.into(),
            desktop: Some("gnome".into()),
            backend: "vnc".into(),
            capabilities: caps,
            vars: Vec::new(),
        },
        overrides: Vec::new(),
        update_references: UpdateReferences::None,
        secrets: SecretStore::default(),
        vlm: false,
    }
}

fn plan(project: &Path, scenario: &str, o: &PlanOptions) -> Result<Plan, Diagnostics> {
    let file = project.join("scenarios/t.yaml");
    std::fs::write(&file, scenario).unwrap();
    plan::load(&file, o, &mut SourceMap::new())
}

fn shell_of(p: &Plan, i: usize) -> String {
    match &p.all_steps().nth(i).unwrap().step.action {
        Action::Shell(s) => s.command.clone(),
        other => panic!("not a shell step: {}", other.kind()),
    }
}

const CLEANUP: &str = "steps:\n  - routine: stop_app\n    with: {process: /opt/Rocket.Chat/rocketchat-desktop.bin}\n  - routine: wipe_electron_profile\n    with: {app: Rocket.Chat}\n  - routine: wipe_keyring\n  - routine: dismiss_crash_reporters\n  - routine: prepare_display\n";

#[test]
fn each_os_gets_its_own_routine_and_shell() {
    let p = support::project_copy();
    let shell = vec!["vnc", "shell", "launch"];
    let win = plan(p.path(), CLEANUP, &target("win11", "windows", shell.clone())).unwrap();
    let files: Vec<String> = win.all_steps().map(|s| s.calls[0].file.clone()).collect();
    assert!(files.iter().all(|f| f.contains("routines/windows/")), "{files:?}");
    // Get-Process names: the base name without .exe, no truncation
    assert!(shell_of(&win, 0).starts_with("$name = 'rocketchat-desktop.bin'\n"), "{}", shell_of(&win, 0));
    assert!(shell_of(&win, 0).contains("Get-Process -Name $name"));
    assert!(shell_of(&win, 1).contains("$app = 'Rocket.Chat'"));
    let linux = plan(p.path(), CLEANUP, &target("fedora42", "linux", shell.clone())).unwrap();
    let files: Vec<String> = linux.all_steps().map(|s| s.calls[0].file.clone()).collect();
    assert!(files.iter().all(|f| !f.contains("windows")), "{files:?}");
    // the 15-character kernel name is computed, and matched exactly
    assert!(shell_of(&linux, 0).starts_with("name='rocketchat-desk'\n"), "{}", shell_of(&linux, 0));
    assert!(shell_of(&linux, 0).contains("pgrep -x -u \"$uid\" -- \"$name\""));
    assert!(!shell_of(&linux, 0).contains("pkill -f") && !shell_of(&linux, 0).contains("pgrep -f"));
    assert!(shell_of(&linux, 2).starts_with("desktop='gnome'\n"), "the target's desktop is the default");
    // the default forensics routine comes with a failing run on a target that runs commands
    assert_eq!(linux.forensics.len(), 5);
    assert!(linux.forensics.iter().all(|s| s.calls[0].file.ends_with("routines/linux/forensics.yaml")));
    assert_eq!(win.forensics.len(), 3);
    let vnc_only = plan(p.path(), "steps:\n  - key: enter\n", &target("lab", "linux", vec!["vnc"])).unwrap();
    assert!(vnc_only.forensics.is_empty(), "no forensics on a target without commands");
}

#[test]
fn forensics_and_file_mistakes_are_reported_before_the_run() {
    let p = support::project_copy();
    let o = target("fedora42", "linux", vec!["vnc", "shell", "launch"]);
    let off = plan(p.path(), "steps:\n  - key: enter\nforensics: false\n", &o).unwrap();
    assert!(off.forensics.is_empty());
    let with =
        plan(p.path(), "steps:\n  - key: enter\nforensics:\n  with: {minutes: 3, app_logs: [\"~/x/*.log\"]}\n", &o)
            .unwrap();
    assert!(
        with.forensics
            .iter()
            .any(|s| matches!(&s.step.action, Action::Shell(sh) if sh.command.contains("--since \"-3min\"")))
    );
    let bad = plan(
        p.path(),
        "steps:\n  - launch: [\"{file}\"]\n  - shell: {command: echo hi, file: \"/opt/*\"}\n  - shell: {command: \"run {file}\", save: ../x}\nforensics: {routine: nope, whith: 1}\n",
        &o,
    )
    .unwrap_err();
    let text = format!("{bad}");
    assert!(text.contains("the command uses {file}, but the step gives no `file:` pattern"), "{text}");
    assert!(text.contains("`file:` is given, but the command never uses {file}"), "{text}");
    assert!(text.contains("save takes a file name"), "{text}");
    assert!(text.contains("unknown key 'whith' in forensics"), "{text}");
    assert!(text.contains("routine 'nope' not found"), "{text}");
    // a forensics routine may only run commands
    std::fs::create_dir_all(p.path().join("routines")).unwrap();
    std::fs::write(p.path().join("routines/evidence.yaml"), "steps:\n  - key: enter\n").unwrap();
    let bad = plan(p.path(), "steps:\n  - key: enter\nforensics: {routine: evidence}\n", &o).unwrap_err();
    assert!(format!("{bad}").contains("forensics steps run commands only"), "{bad}");
}

fn sh(script: &str, home: &Path) -> std::process::Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("DISPLAY")
        .output()
        .unwrap()
}

#[test]
fn the_linux_wipes_really_wipe() {
    let p = support::project_copy();
    let o = target("fedora42", "linux", vec!["vnc", "shell", "launch"]);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    for d in [".config/Rocket.Chat/Local Storage", ".config/Rocket.Chat (development)", ".config/Other"] {
        std::fs::create_dir_all(h.join(d)).unwrap();
        std::fs::write(h.join(d).join("data"), "x").unwrap();
    }
    let wipe =
        plan(p.path(), "steps:\n  - routine: wipe_electron_profile\n    with: {app: Rocket.Chat}\n", &o).unwrap();
    let out = sh(&shell_of(&wipe, 0), h);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!h.join(".config/Rocket.Chat").exists() && !h.join(".config/Rocket.Chat (development)").exists());
    assert!(h.join(".config/Other/data").exists(), "other apps' data stays");
    let bad = plan(p.path(), "steps:\n  - routine: wipe_electron_profile\n    with: {app: ..}\n", &o).unwrap();
    assert_eq!(sh(&shell_of(&bad, 0), h).status.code(), Some(2));
    assert!(h.join(".config/Other/data").exists());

    // a stand-in gnome-keyring-daemon that writes its keyring back when it is stopped
    let keyrings = h.join(".local/share/keyrings");
    std::fs::create_dir_all(&keyrings).unwrap();
    std::fs::write(keyrings.join("default"), "old").unwrap();
    std::fs::write(keyrings.join("login.keyring"), "old").unwrap();
    let daemon = h.join("gnome-keyring-daemon");
    std::fs::write(
        &daemon,
        format!(
            "#!/bin/sh\ntrap 'echo rewritten > {}/default; exit 0' TERM\nwhile :; do sleep 0.05; done\n",
            keyrings.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&daemon, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = std::process::Command::new(&daemon).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let wipe = plan(p.path(), "steps:\n  - routine: wipe_keyring\n    with: {desktop: gnome}\n", &o).unwrap();
    let out = sh(&shell_of(&wipe, 0), h);
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped gnome-keyring-d"));
    let left: Vec<_> = std::fs::read_dir(&keyrings).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "the daemon was stopped before the files went: {left:?}");

    let kw = h.join(".local/share/kwalletd");
    std::fs::create_dir_all(&kw).unwrap();
    std::fs::write(kw.join("kdewallet.kwl"), "x").unwrap();
    std::fs::write(kw.join("kdewallet.salt"), "x").unwrap();
    std::fs::write(kw.join("keep.txt"), "x").unwrap();
    let wipe = plan(p.path(), "steps:\n  - routine: wipe_keyring\n    with: {desktop: KDE}\n", &o).unwrap();
    assert!(sh(&shell_of(&wipe, 0), h).status.success());
    assert!(!kw.join("kdewallet.kwl").exists() && !kw.join("kdewallet.salt").exists() && kw.join("keep.txt").exists());

    let d = plan(p.path(), "steps:\n  - routine: dismiss_crash_reporters\n", &o).unwrap();
    assert!(sh(&shell_of(&d, 0), h).status.success());
}
