//! The scenario language end to end: files on disk -> validated plan or
//! diagnostics with exact positions.

use std::path::{Path, PathBuf};

use smoke::scenario::diagnostic::Diagnostics;
use smoke::scenario::model::{Action, Check, Target, TextMatch};
use smoke::scenario::node::{Node, Value};
use smoke::scenario::plan::{self, Plan, PlanOptions, TargetInfo, UpdateReferences};
use smoke::scenario::source::{SourceMap, Span};
use smoke::secrets::SecretStore;

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("routines")).unwrap();
        std::fs::create_dir_all(dir.path().join("scenarios")).unwrap();
        Project { dir }
    }

    fn file(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn target(name: &str, family: &str) -> TargetInfo {
    TargetInfo {
        name: name.into(),
        family: family.into(),
        desktop: None,
        backend: "local-desktop".into(),
        capabilities: vec!["vnc", "shell", "launch"],
        vars: Vec::new(),
    }
}

fn opts() -> PlanOptions {
    PlanOptions {
        target: target("local", "linux"),
        overrides: Vec::new(),
        update_references: UpdateReferences::None,
        secrets: SecretStore::default(),
        vlm: false,
    }
}

fn load(path: &Path, o: &PlanOptions) -> Result<Plan, Diagnostics> {
    plan::load(path, o, &mut SourceMap::new())
}

/// "file:line:col message" for each diagnostic, with the file name only.
fn errs(d: &Diagnostics) -> Vec<String> {
    d.items
        .iter()
        .map(|d| {
            let file = Path::new(d.span.file.as_ref()).file_name().unwrap().to_string_lossy().to_string();
            format!("{file}:{}:{} {}", d.span.line, d.span.col, d.message)
        })
        .collect()
}

fn has(d: &Diagnostics, needle: &str) -> bool {
    errs(d).iter().any(|e| e.contains(needle))
}

#[test]
fn a_valid_scenario_becomes_a_plan() {
    let p = Project::new();
    let s = p.file(
        "scenarios/demo.yaml",
        r#"
name: demo
vars:
  expr: "12+30="
steps:
  - launch: galculator
  - type: "{{ expr }}"
    verify: {ocr: {text: "42", region: [0, 0, 300, 100]}}
    retries: 2
  - key: [ctrl+a, BackSpace]
  - click: {text: "C", region: [10, 10, 100, 100]}
  - verify_not: {ocr: {regex: "[Ee]rror"}}
cleanup:
  - shell: pkill -x galculator
"#,
    );
    let plan = load(&s, &opts()).unwrap();
    assert_eq!(plan.name, "demo");
    assert_eq!(plan.steps.len(), 5);
    assert_eq!(plan.cleanup.len(), 1);
    assert_eq!(plan.cleanup[0].number, 6);
    assert!(plan.cleanup[0].cleanup);
    let typed = &plan.steps[1];
    assert!(matches!(&typed.step.action, Action::Type(t) if t.text == "12+30="));
    assert_eq!(typed.step.retries, 2);
    assert_eq!(typed.step.expect.len(), 1);
    assert_eq!(typed.label, "type \"12+30=\"");
    assert_eq!(typed.step.span.line, 7);
    match &plan.steps[4].step.expect[0] {
        e if e.negate => assert!(matches!(&e.check, Check::Ocr(o) if matches!(o.query, TextMatch::Regex(_)))),
        _ => panic!("verify_not must be negated"),
    }
}

#[test]
fn every_error_is_reported_with_its_position() {
    let p = Project::new();
    let s = p.file(
        "scenarios/bad.yaml",
        r#"name: bad
steps:
  - type: hello
    lable: greet
  - tpye: x
  - click: {text: OK, buton: left}
  - wait: soon
  - key: ctrl+alt+entr
  - verify: {ocr: {text: x, region: [1, 2, 3]}}
  - type: a
    click: [1, 2]
  - retries: 3
    verify: {ocr: hi}
    timeout: 5 parsecs
"#,
    );
    let d = load(&s, &opts()).unwrap_err();
    let e = errs(&d);
    let expect = [
        "bad.yaml:4:5 unknown key 'lable' in a step",
        "bad.yaml:5:5 unknown key 'tpye' in step",
        "bad.yaml:6:23 unknown key 'buton' in click target",
        "bad.yaml:7:11 wait must be a duration",
        "bad.yaml:8:10 unknown key 'entr'",
        "bad.yaml:9:37 region must be a rectangle",
        "bad.yaml:11:5 a step has one action, but this one has 'type' and 'click'",
        "bad.yaml:14:14 timeout must be a duration",
    ];
    for x in expect {
        assert!(e.iter().any(|m| m.contains(x)), "missing {x:?} in {e:#?}");
    }
    // suggestions
    let lable = d.items.iter().find(|d| d.message.contains("'lable'")).unwrap();
    assert_eq!(lable.help.as_deref(), Some("did you mean 'label'?"));
    let tpye = d.items.iter().find(|d| d.message.contains("'tpye'")).unwrap();
    assert_eq!(tpye.help.as_deref(), Some("did you mean 'type'?"));
    let entr = d.items.iter().find(|d| d.message.contains("entr")).unwrap();
    assert_eq!(entr.help.as_deref(), Some("did you mean 'enter'?"));
}

#[test]
fn missing_fields_and_wrong_types() {
    let p = Project::new();
    let s = p.file(
        "scenarios/t.yaml",
        "steps:\n  - shell: {exit: 1}\n  - verify: {ssim: {threshold: 2}}\n  - click: {double: yes, x: 5}\n  - launch: {command: 42}\n",
    );
    let d = load(&s, &opts()).unwrap_err();
    assert!(has(&d, "t.yaml:2:12 a shell step is missing 'command'"), "{:#?}", errs(&d));
    assert!(has(&d, "t.yaml:3:20 an ssim check is missing 'reference'"), "{:#?}", errs(&d));
    assert!(has(&d, "t.yaml:3:32 threshold must be between 0 and 1"), "{:#?}", errs(&d));
    assert!(has(&d, "t.yaml:4:21 double must be true or false, found \"yes\""), "{:#?}", errs(&d));
    assert!(has(&d, "t.yaml:4:12 click target is missing 'y'"), "{:#?}", errs(&d));
    assert!(has(&d, "t.yaml:5:23 command must be a string or a non-empty list"), "{:#?}", errs(&d));
}

#[test]
fn no_steps_and_unknown_top_level_keys() {
    let p = Project::new();
    let s = p.file("scenarios/t.yaml", "name: x\nstep:\n  - type: a\n");
    let d = load(&s, &opts()).unwrap_err();
    assert!(has(&d, "t.yaml:2:1 unknown key 'step' in a scenario file"), "{:#?}", errs(&d));
    assert!(has(&d, "t.yaml:1:1 a scenario file is missing 'steps'"), "{:#?}", errs(&d));
    assert_eq!(
        d.items.iter().find(|d| d.message.contains("'step'")).unwrap().help.as_deref(),
        Some("did you mean 'steps'?")
    );
}

#[test]
fn undefined_variable_is_an_error_before_anything_runs() {
    let p = Project::new();
    let s = p.file("scenarios/t.yaml", "vars:\n  expr: 1\nsteps:\n  - type: \"{{ exrp }}\"\n");
    let d = load(&s, &opts()).unwrap_err();
    assert_eq!(errs(&d), vec!["t.yaml:4:15 undefined variable 'exrp'"]);
    assert_eq!(d.items[0].help.as_deref(), Some("did you mean 'expr'?"));
}

#[test]
fn var_overrides_win_and_keep_types() {
    let p = Project::new();
    let s = p.file(
        "scenarios/t.yaml",
        "vars:\n  n: 1\n  greeting: \"hi {{ n }}\"\n  point: [5, 6]\nsteps:\n  - type: \"{{ greeting }}\"\n  - click: \"{{ point }}\"\n",
    );
    let mut o = opts();
    o.target.vars = vec![("n".into(), Node::new(Span::command_line("inventory"), Value::Int(2)))];
    let plan = load(&s, &o).unwrap();
    assert!(matches!(&plan.steps[0].step.action, Action::Type(t) if t.text == "hi 2"));
    assert!(
        matches!(&plan.steps[1].step.action, Action::Click(c) if matches!(c.target, Target::At(pt) if (pt.x, pt.y) == (5, 6)))
    );
    o.overrides = vec![("n".into(), Node::new(Span::command_line("--var n"), Value::Int(3)))];
    let plan = load(&s, &o).unwrap();
    assert!(matches!(&plan.steps[0].step.action, Action::Type(t) if t.text == "hi 3"));
    // a --var the scenario does not have is a mistake worth reporting
    o.overrides = vec![("gretting".into(), Node::new(Span::command_line("--var gretting"), Value::Int(3)))];
    let d = load(&s, &o).unwrap_err();
    assert!(d.items[0].message.contains("no variable 'gretting'"));
    assert_eq!(d.items[0].help.as_deref(), Some("did you mean 'greeting'?"));
}

#[test]
fn routines_take_typed_inputs_and_errors_name_the_call_site() {
    let p = Project::new();
    p.file(
        "routines/start.yaml",
        r#"description: start an app
inputs:
  command: {type: list, required: true}
  wait: {type: string, default: 15s}
  verify_text: {type: string}
steps:
  - launch: {command: "{{ command }}", wait: "{{ wait }}"}
  - type: "{{ command | tojson }}"
"#,
    );
    let s = p.file("scenarios/t.yaml", "steps:\n  - routine: start\n    with: {command: [xterm, -fa, Monospace]}\n");
    let plan = load(&s, &opts()).unwrap();
    assert_eq!(plan.steps.len(), 2);
    match &plan.steps[0].step.action {
        Action::Launch(l) => {
            assert_eq!(
                l.command,
                smoke::scenario::model::CommandLine::Argv(vec!["xterm".into(), "-fa".into(), "Monospace".into()])
            );
            assert_eq!(l.wait.as_secs(), 15);
            assert_eq!(l.process, "xterm");
        }
        a => panic!("{a:?}"),
    }
    match &plan.steps[1].step.action {
        Action::Type(t) => {
            let v: serde_json::Value = serde_json::from_str(&t.text).unwrap();
            assert_eq!(v, serde_json::json!(["xterm", "-fa", "Monospace"]));
        }
        a => panic!("{a:?}"),
    }
    assert_eq!(plan.steps[0].calls[0].routine, "start");
    assert_eq!(plan.steps[0].calls[0].at.line, 2);

    // wrong input type, missing input, unknown input
    let s = p.file(
        "scenarios/u.yaml",
        "steps:\n  - routine: start\n    with: {command: xterm, wiat: 3s}\n  - routine: start\n",
    );
    let d = load(&s, &opts()).unwrap_err();
    assert!(has(&d, "u.yaml:3:21 input 'command' of routine 'start' must be list, found a string"), "{:#?}", errs(&d));
    assert!(has(&d, "u.yaml:3:28 routine 'start' has no input 'wiat'"), "{:#?}", errs(&d));
    assert!(has(&d, "u.yaml:4:5 routine 'start' needs input 'command'"), "{:#?}", errs(&d));

    // an error inside the routine names the routine file and the call site
    p.file("routines/broken.yaml", "steps:\n  - type: \"{{ nope }}\"\n");
    let s = p.file("scenarios/v.yaml", "steps:\n  - key: a\n  - routine: broken\n");
    let d = load(&s, &opts()).unwrap_err();
    assert_eq!(errs(&d), vec!["broken.yaml:2:15 undefined variable 'nope'"]);
    let note = &d.items[0].notes[0];
    assert!(note.0.file.ends_with("v.yaml") && note.0.line == 3, "{note:?}");
    assert!(note.1.contains("in routine 'broken'"));
}

#[test]
fn required_input_with_default_is_an_error() {
    let p = Project::new();
    p.file("routines/r.yaml", "inputs:\n  x: {type: int, required: true, default: 3}\nsteps:\n  - wait: 1s\n");
    let s = p.file("scenarios/t.yaml", "steps:\n  - routine: r\n    with: {x: 1}\n");
    let d = load(&s, &opts()).unwrap_err();
    assert_eq!(errs(&d), vec!["r.yaml:2:43 input 'x' is required and has a default"]);
}

#[test]
fn routine_cycles_are_detected() {
    let p = Project::new();
    p.file("routines/a.yaml", "steps:\n  - routine: b\n");
    p.file("routines/b.yaml", "steps:\n  - routine: a\n");
    let s = p.file("scenarios/t.yaml", "steps:\n  - routine: a\n");
    let d = load(&s, &opts()).unwrap_err();
    assert!(has(&d, "routine cycle: a -> b -> a"), "{:#?}", errs(&d));
    // a routine calling itself
    p.file("routines/self.yaml", "steps:\n  - routine: self\n");
    let s = p.file("scenarios/u.yaml", "steps:\n  - routine: self\n");
    assert!(has(&load(&s, &opts()).unwrap_err(), "routine cycle: self -> self"));
}

#[test]
fn os_and_family_overrides_are_preferred() {
    let p = Project::new();
    p.file("routines/open.yaml", "steps:\n  - type: generic\n");
    p.file("routines/linux/open.yaml", "steps:\n  - type: family\n");
    p.file("routines/fedora42/open.yaml", "steps:\n  - type: os\n");
    let s = p.file("scenarios/t.yaml", "steps:\n  - routine: open\n");
    let text = |o: &PlanOptions| match &load(&s, o).unwrap().steps[0].step.action {
        Action::Type(t) => t.text.clone(),
        _ => panic!(),
    };
    let mut o = opts();
    o.target = target("fedora42", "linux");
    assert_eq!(text(&o), "os");
    o.target = target("ubuntu24", "linux");
    assert_eq!(text(&o), "family");
    o.target = target("win11", "windows");
    assert_eq!(text(&o), "generic");
}

#[test]
fn unknown_routine_suggests_a_close_name() {
    let p = Project::new();
    p.file("routines/launch_app.yaml", "steps:\n  - wait: 1s\n");
    let s = p.file("scenarios/t.yaml", "steps:\n  - routine: lanch_app\n");
    let d = load(&s, &opts()).unwrap_err();
    assert!(has(&d, "t.yaml:2:14 routine 'lanch_app' not found"), "{:#?}", errs(&d));
    assert_eq!(d.items[0].help.as_deref(), Some("did you mean 'launch_app'?"));
}

#[test]
fn missing_reference_says_how_to_create_it() {
    let p = Project::new();
    std::fs::create_dir_all(p.path().join("reference")).unwrap();
    let s =
        p.file("scenarios/calc.yaml", "steps:\n  - verify: {ssim: {reference: display.png, region: [0, 0, 10, 10]}}\n");
    let d = load(&s, &opts()).unwrap_err();
    assert!(has(&d, "calc.yaml:2:32 reference image 'display.png' not found"), "{:#?}", errs(&d));
    assert!(d.items[0].help.as_deref().unwrap().contains("--update-references missing"));
    // with --update-references missing it plans to create the per-OS file
    let mut o = opts();
    o.update_references = UpdateReferences::Missing;
    let plan = load(&s, &o).unwrap();
    match &plan.steps[0].step.expect[0].check {
        Check::Ssim(c) => assert!(c.reference.path.as_ref().unwrap().ends_with("reference/calc/local/display.png")),
        _ => panic!(),
    }
    // an existing family-level reference is found
    p.file("reference/calc/linux/display.png", "png");
    let plan = load(&s, &opts()).unwrap();
    match &plan.steps[0].step.expect[0].check {
        Check::Ssim(c) => assert!(c.reference.path.as_ref().unwrap().ends_with("reference/calc/linux/display.png")),
        _ => panic!(),
    }
}

#[test]
fn shell_steps_need_a_target_that_can_run_them() {
    let p = Project::new();
    let s = p.file("scenarios/t.yaml", "steps:\n  - shell: echo hi\n");
    let mut o = opts();
    o.target.capabilities = vec!["vnc"];
    o.target.backend = "vnc".into();
    let d = load(&s, &o).unwrap_err();
    assert!(has(&d, "t.yaml:2:5 this shell step needs a way to run commands on the target"), "{:#?}", errs(&d));
}

#[test]
fn routine_files_validate_on_their_own() {
    let p = Project::new();
    let r = p.file("routines/r.yaml", "inputs:\n  apps: {type: list, required: true}\nsteps:\n  - launch: \"{{ apps }}\"\n  - key: \"{{ apps | length }}x\"\n");
    let d = plan::validate_routine(&r, &opts(), &mut SourceMap::new()).unwrap_err();
    // the stand-in list has one item, so the key combo "1x" is two keys
    assert!(has(&d, "r.yaml:5:10"), "{:#?}", errs(&d));
    let ok = p.file(
        "routines/ok.yaml",
        "inputs:\n  apps: {type: list, required: true}\nsteps:\n  - launch: \"{{ apps }}\"\n",
    );
    assert_eq!(plan::validate_routine(&ok, &opts(), &mut SourceMap::new()).unwrap(), 1);
}

#[test]
fn yaml_level_errors_keep_true_positions() {
    let p = Project::new();
    let s = p.file("scenarios/t.yaml", "steps:\n  - type: a\n\t- type: b\n");
    let d = load(&s, &opts()).unwrap_err();
    assert_eq!(errs(&d), vec!["t.yaml:3:1 a tab character is used for indentation"]);
    let s = p.file("scenarios/u.yaml", "steps:\n  - click: [1, 2\n  - type: b\n");
    assert_eq!(errs(&load(&s, &opts()).unwrap_err()), vec!["u.yaml:2:12 '[' is never closed"]);
    let s = p.file("scenarios/w.yaml", "steps:\n  - type: a\n    label: x\n    label: y\n");
    let d = load(&s, &opts()).unwrap_err();
    assert_eq!(errs(&d), vec!["w.yaml:4:5 duplicate key 'label'"]);
    assert_eq!(d.items[0].notes[0].0.line, 3);
}

#[test]
fn ssim_window_is_gaussian_or_box() {
    let p = Project::new();
    p.file("reference/t/local/r.png", "png");
    let s = p.file("scenarios/t.yaml", "steps:\n  - verify: {ssim: {reference: r.png, window: box}}\n  - verify: {ssim: {reference: r.png, window: boks}}\n");
    let d = load(&s, &opts()).unwrap_err();
    assert_eq!(errs(&d), vec!["t.yaml:3:47 unknown SSIM window 'boks'"]);
    let s = p.file(
        "scenarios/t.yaml",
        "steps:\n  - verify: {ssim: {reference: r.png, window: box}}\n  - verify: {ssim: r.png}\n",
    );
    let plan = load(&s, &opts()).unwrap();
    let kinds: Vec<_> = plan
        .steps
        .iter()
        .map(|s| match &s.step.expect[0].check {
            Check::Ssim(c) => c.window,
            _ => panic!(),
        })
        .collect();
    use smoke::scenario::model::SsimWindowKind::*;
    assert_eq!(kinds, vec![Box, Gaussian]);
}

#[test]
fn input_steps_hold_drag_scroll_and_confirm() {
    let p = Project::new();
    let s = p.file(
        "scenarios/t.yaml",
        "defaults: {type_confirm: true}\nsteps:\n  - key: {combo: ctrl+shift+t, hold: 2s}\n  - key_down: shift\n  - key_up: [shift]\n  - type: {text: hi, confirm: false, interval: 50ms}\n  - drag: {from: [10, 20], to: {text: Trash}, path: bezier, duration: 1s, button: right}\n  - scroll: down\n  - scroll: {direction: left, count: 4, at: [5, 6]}\n  - move: {x: 3, y: 4, path: linear, duration: 200ms}\n  - type: plain\n",
    );
    let plan = load(&s, &opts()).unwrap();
    let actions: Vec<&Action> = plan.steps.iter().map(|s| &s.step.action).collect();
    assert!(matches!(actions[0], Action::KeyHold(c, d) if c.text == "ctrl+shift+t" && d.as_secs() == 2));
    assert!(matches!(actions[1], Action::KeyDown(c) if c.len() == 1));
    assert!(matches!(actions[2], Action::KeyUp(c) if c.len() == 1));
    assert!(matches!(actions[3], Action::Type(t) if t.confirm == Some(false)));
    match actions[4] {
        Action::Drag(d) => {
            assert!(matches!(d.from, Target::At(p) if (p.x, p.y) == (10, 20)));
            assert!(matches!(d.to, Target::Text { .. }));
            assert_eq!(d.path, smoke::input::pointer::PathKind::Bezier);
            assert_eq!(d.button, smoke::input::Button::Right);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(actions[5], Action::Scroll(s) if s.count == 1 && s.at.is_none()));
    assert!(matches!(actions[6], Action::Scroll(s) if s.count == 4 && s.at.is_some()));
    assert!(matches!(actions[7], Action::MoveAlong(..)));
    assert!(matches!(actions[8], Action::Type(t) if t.confirm.is_none()));
    assert_eq!(plan.defaults.type_confirm, Some(true));

    let s = p.file(
        "scenarios/bad.yaml",
        "steps:\n  - key: {combo: [a, b], hold: 1s}\n  - scroll: sideways\n  - drag: {from: [1, 2], path: zigzag}\n  - click: {x: 1, y: 2, path: bezier}\n",
    );
    let d = load(&s, &opts()).unwrap_err();
    assert!(has(&d, "bad.yaml:2:10 hold takes one combo"), "{:#?}", errs(&d));
    assert!(has(&d, "bad.yaml:3:13 unknown scroll direction 'sideways'"), "{:#?}", errs(&d));
    assert!(has(&d, "bad.yaml:4:11 a drag step is missing 'to'"), "{:#?}", errs(&d));
    assert!(has(&d, "bad.yaml:4:32 unknown path 'zigzag'"), "{:#?}", errs(&d));
    assert!(has(&d, "bad.yaml:5:25 'path' applies to move steps"), "{:#?}", errs(&d));
}
