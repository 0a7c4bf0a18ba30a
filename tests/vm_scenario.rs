//! The VM steps of the scenario language (`boot`, serial `expect`/`send`,
//! `checkpoint`, `rewind_on_failure`): decoding, positions of mistakes, and
//! the plan refusing them on targets whose backend cannot do them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use smoke::scenario::diagnostic::Diagnostics;
use smoke::scenario::model::{Action, unescape};
use smoke::scenario::plan::{self, Plan, PlanOptions, TargetInfo, UpdateReferences};
use smoke::scenario::source::SourceMap;
use smoke::secrets::SecretStore;

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scenarios")).unwrap();
    std::fs::create_dir_all(dir.path().join("routines")).unwrap();
    dir
}

fn file(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join(rel);
    std::fs::write(&p, text).unwrap();
    p
}

fn opts(backend: &str, capabilities: Vec<&'static str>) -> PlanOptions {
    PlanOptions {
        target: TargetInfo {
            name: "vm1".into(),
            family: "linux".into(),
            desktop: None,
            backend: backend.into(),
            capabilities,
            vars: Vec::new(),
        },
        overrides: Vec::new(),
        update_references: UpdateReferences::None,
        secrets: SecretStore::default(),
        vlm: false,
    }
}

fn qemu() -> PlanOptions {
    opts("qemu", vec!["vnc", "snapshots", "screendump", "serial"])
}

fn local() -> PlanOptions {
    opts("local-desktop", vec!["vnc", "shell", "launch", "process-probe"])
}

fn load(path: &Path, o: &PlanOptions) -> Result<Plan, Diagnostics> {
    plan::load(path, o, &mut SourceMap::new())
}

fn errs(d: &Diagnostics) -> Vec<String> {
    d.items
        .iter()
        .map(|d| {
            let file = Path::new(d.span.file.as_ref()).file_name().unwrap().to_string_lossy().to_string();
            format!("{file}:{}:{} {}", d.span.line, d.span.col, d.message)
        })
        .collect()
}

const VM_SCENARIO: &str = r#"name: vm
rewind_on_failure: true
retain_checkpoints: 2
keep_checkpoints: true
steps:
  - boot: {marker: "SMOKE-GUEST-READY", timeout: 2m, stall: 20s, failures: ["app died", "segfault at \\d+"]}
  - checkpoint: booted
  - send: {serial: 'echo hi\n'}
  - expect: {serial: "^hi$", timeout: 5s}
  - boot: "READY"
  - boot: true
  - boot: {login: true}
"#;

#[test]
fn vm_steps_decode_with_their_settings() {
    let dir = project();
    let s = file(dir.path(), "scenarios/vm.yaml", VM_SCENARIO);
    let p = load(&s, &qemu()).unwrap_or_else(|d| panic!("{:?}", errs(&d)));
    assert!(p.checkpoints.rewind_on_failure);
    assert_eq!(p.checkpoints.retain, 2);
    assert!(p.checkpoints.keep);
    assert_eq!(p.checkpoint_names(), vec!["booted"]);
    assert_eq!(p.checkpoint("booted").map(|s| s.number), Some(2));
    let Action::Boot(b) = &p.steps[0].step.action else { panic!() };
    assert_eq!(b.marker.as_ref().map(|r| r.as_str()), Some("SMOKE-GUEST-READY"));
    assert_eq!(b.timeout, Some(Duration::from_secs(120)));
    assert_eq!(b.stall, Duration::from_secs(20));
    assert_eq!(b.failures.len(), 2);
    assert!(b.failures[1].is_match("segfault at 42"));
    assert_eq!(p.steps[0].label, "boot until /SMOKE-GUEST-READY/");
    let Action::SerialSend(send) = &p.steps[2].step.action else { panic!() };
    assert_eq!(send.text, "echo hi\n", "the escape \\n in a single-quoted YAML string is decoded");
    assert_eq!(p.steps[2].label, "send serial \"echo hi\\n\"");
    let Action::SerialExpect(e) = &p.steps[3].step.action else { panic!() };
    assert_eq!(e.pattern.as_str(), "^hi$");
    assert_eq!(e.timeout, Some(Duration::from_secs(5)));
    let Action::Boot(b) = &p.steps[4].step.action else { panic!() };
    assert_eq!(b.marker.as_ref().map(|r| r.as_str()), Some("READY"));
    let Action::Boot(b) = &p.steps[5].step.action else { panic!() };
    assert!(b.marker.is_none() && b.login && b.timeout.is_none());
    assert_eq!(b.stall, smoke::scenario::model::BOOT_STALL);
    assert_eq!(p.steps[5].label, "boot until a login prompt");
}

#[test]
fn vm_steps_on_a_target_that_cannot_are_plan_errors_at_their_position() {
    let dir = project();
    let s = file(dir.path(), "scenarios/vm.yaml", VM_SCENARIO);
    let d = load(&s, &local()).unwrap_err();
    let e = errs(&d);
    let want = [
        "vm.yaml:2:1 rewind_on_failure rolls back VM snapshots, but target 'vm1' (local-desktop backend) cannot take snapshots",
        "vm.yaml:4:1 keep_checkpoints rolls back VM snapshots",
        "vm.yaml:6:5 this boot step reads and writes the VM's serial console, but target 'vm1' (local-desktop backend) cannot open a serial console",
        "vm.yaml:7:5 this checkpoint step takes a VM snapshot, but target 'vm1' (local-desktop backend) cannot take snapshots",
        "vm.yaml:8:5 this send step reads and writes the VM's serial console",
        "vm.yaml:9:5 this expect step reads and writes the VM's serial console",
    ];
    for w in want {
        assert!(e.iter().any(|x| x.starts_with(w)), "missing {w:?} in {e:#?}");
    }
    // a VM backend without a serial console (capabilities decide, not the backend's name)
    let d = load(&s, &opts("proxmox", vec!["vnc", "snapshots"])).unwrap_err();
    let e = errs(&d);
    assert!(e.iter().any(|x| x.contains("(proxmox backend) cannot open a serial console")), "{e:#?}");
    assert!(!e.iter().any(|x| x.contains("cannot take snapshots")), "{e:#?}");
}

#[test]
fn mistakes_in_vm_steps_are_reported_where_they_are() {
    let dir = project();
    let s = file(
        dir.path(),
        "scenarios/bad.yaml",
        r#"rewind_on_failure: yes
retain_checkpoints: 0
steps:
  - boot: {marker: "(unclosed", stal: 3s}
  - boot: {stall: 0s}
  - boot: {login: false}
  - expect: "login:"
  - expect: {timeout: 3s}
  - send: {serial: 'bad \q escape'}
  - send: {serial: ""}
  - checkpoint: 1st
  - checkpoint: twice
  - checkpoint: twice
  - boot: false
cleanup:
  - checkpoint: late
"#,
    );
    let d = load(&s, &qemu()).unwrap_err();
    let e = errs(&d);
    let want = [
        "bad.yaml:1:20 rewind_on_failure must be true or false",
        "bad.yaml:2:21 retain_checkpoints must be between 1 and 100, found 0",
        "bad.yaml:4:20 marker is not a valid regular expression",
        "bad.yaml:4:33 unknown key 'stal' in a boot step",
        "bad.yaml:5:19 stall must be longer than 0s",
        "bad.yaml:6:19 login: false without a marker leaves nothing that says the boot is done",
        "bad.yaml:7:13 expect must be a map, found a string",
        "bad.yaml:8:13 an expect step is missing 'serial'",
        "bad.yaml:9:20 unknown escape \\q",
        "bad.yaml:10:20 send: serial text must not be empty",
        "bad.yaml:11:17 '1st' is not a checkpoint name",
        "bad.yaml:13:5 checkpoint 'twice' is defined twice",
        "bad.yaml:14:11 boot: false boots nothing",
        "bad.yaml:16:5 a checkpoint belongs to the main steps, not to cleanup",
    ];
    for w in want {
        assert!(e.iter().any(|x| x.starts_with(w)), "missing {w:?} in {e:#?}");
    }
    // the unknown key gets a suggestion
    let stal = d.items.iter().find(|x| x.message.contains("'stal'")).unwrap();
    assert!(stal.help.iter().any(|h| h.contains("did you mean 'stall'?")), "{:?}", stal.help);
}

#[test]
fn rewind_needs_a_checkpoint() {
    let dir = project();
    let s = file(dir.path(), "scenarios/r.yaml", "rewind_on_failure: true\nsteps:\n  - boot: true\n");
    let e = errs(&load(&s, &qemu()).unwrap_err());
    assert_eq!(e, vec!["r.yaml:1:1 rewind_on_failure needs a `checkpoint: NAME` step to rewind to"]);
}

#[test]
fn send_escapes() {
    assert_eq!(unescape(r"root\n").unwrap(), "root\n");
    assert_eq!(unescape(r"a\tb\r\e[0m\x41\\\0").unwrap(), "a\tb\r\u{1b}[0mA\\\0");
    assert_eq!(unescape("plain").unwrap(), "plain");
    assert!(unescape(r"\x4").unwrap_err().contains("two hex digits"));
    assert!(unescape(r"\xff").is_err(), "only ASCII by \\x (UTF-8 text is written as itself)");
    assert!(unescape("end\\").unwrap_err().contains("lone backslash"));
}

#[test]
fn from_step_and_from_checkpoint_are_checked_against_the_plan() {
    use smoke::runner::vm::StartAt;
    let dir = project();
    let s = file(dir.path(), "scenarios/vm.yaml", VM_SCENARIO);
    let p = load(&s, &qemu()).unwrap();
    assert_eq!(StartAt::Beginning.first_index(&p), Ok(0));
    assert_eq!(StartAt::Step(3).first_index(&p), Ok(2));
    assert!(StartAt::Step(0).first_index(&p).unwrap_err().contains("main steps 1 to 7"));
    assert!(StartAt::Step(8).first_index(&p).is_err());
    assert_eq!(StartAt::Checkpoint("booted".into()).first_index(&p), Ok(2), "starts after the checkpoint step");
    let e = StartAt::Checkpoint("boot".into()).first_index(&p).unwrap_err();
    assert_eq!(e, "--from-checkpoint boot: no such checkpoint; the scenario has booted");
}

#[test]
fn the_schema_describes_the_vm_steps() {
    let s = smoke::scenario::schema::scenario();
    let step = &s["$defs"]["step"]["properties"];
    for k in ["boot", "expect", "send", "checkpoint"] {
        assert!(step[k]["description"].as_str().is_some_and(|d| d.starts_with("VM targets")), "{k}");
    }
    assert_eq!(step["checkpoint"]["pattern"], "^[A-Za-z][A-Za-z0-9_-]{0,31}$");
    for k in ["rewind_on_failure", "retain_checkpoints", "keep_checkpoints"] {
        assert!(s["properties"][k]["description"].is_string(), "{k}");
    }
}
