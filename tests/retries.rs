//! Retries through the binary on a real desktop: a retry first re-checks the
//! step's expectations and repeats the action only when they still do not hold.

mod support;

use smoke::events::Event;
use support::*;

fn inputs(ev: &[smoke::events::Record], step: usize) -> Vec<String> {
    ev.iter()
        .filter_map(|r| match &r.event {
            Event::Input { step: s, action, detail, .. } if *s == step => Some(format!("{action} {detail}")),
            _ => None,
        })
        .collect()
}

fn attempts(ev: &[smoke::events::Record], step: usize) -> u32 {
    ev.iter()
        .find_map(|r| match &r.event {
            Event::StepFinished { step: s, attempts, .. } if *s == step => Some(*attempts),
            _ => None,
        })
        .unwrap_or(0)
}

#[test]
fn late_effect_is_found_by_the_recheck_and_the_text_is_not_typed_twice() {
    let _desktop = lock();
    let p = project_copy();
    // the terminal answers 4 s after the line arrives: later than the 3 s verify
    // budget, well inside the retry's 3 s re-check (1 s of margin on each side
    // even when an OCR poll takes over a second on a loaded machine)
    std::fs::write(
        p.path().join("scenarios/late.yaml"),
        r#"steps:
  - routine: launch_app
    with:
      command: [xterm, -fa, Monospace, -fs, "14", -e, sh, -c, 'echo READY; read x; sleep 4; echo "GOT-$x"; sleep 60']
      process: xterm
      ready_text: READY
  - type: "hello\n"
    verify: {ocr: GOT-hello}
    timeout: 3s
    retries: 2
"#,
    )
    .unwrap();
    let results = tempfile::tempdir().unwrap();
    let (out, run) = run(p.path(), "scenarios/late.yaml", results.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ev = events(&run.unwrap());
    assert_eq!(inputs(&ev, 3), vec!["type hello\n"], "typed exactly once");
    assert_eq!(attempts(&ev, 3), 2, "the first verify failed, the retry's recheck passed");
    assert!(ev.iter().any(|r| matches!(&r.event, Event::Warning { message } if message.contains("already hold"))));
}

#[test]
fn a_retry_repeats_the_action_when_the_effect_is_still_missing() {
    let _desktop = lock();
    let p = project_copy();
    // the first line is swallowed; only a second one is answered
    std::fs::write(
        p.path().join("scenarios/again.yaml"),
        r#"steps:
  - routine: launch_app
    with:
      command: [xterm, -fa, Monospace, -fs, "14", -e, sh, -c, 'echo READY; read x; read y; echo "GOT-$y"; sleep 60']
      process: xterm
      ready_text: READY
  - type: "hello\n"
    verify: {ocr: GOT-hello}
    timeout: 1s
    retries: 1
"#,
    )
    .unwrap();
    let results = tempfile::tempdir().unwrap();
    let (out, run) = run(p.path(), "scenarios/again.yaml", results.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ev = events(&run.unwrap());
    assert_eq!(inputs(&ev, 3), vec!["type hello\n", "type hello\n"], "typed again on the retry");
    assert_eq!(attempts(&ev, 3), 2);
}

#[test]
fn a_failed_action_is_not_repeated_when_its_expectation_already_holds() {
    let _desktop = lock();
    let p = project_copy();
    std::fs::write(
        p.path().join("scenarios/click.yaml"),
        r#"steps:
  - routine: launch_app
    with:
      command: [xterm, -fa, Monospace, -fs, "14", -e, sh, -c, 'echo READY; sleep 60']
      process: xterm
      ready_text: READY
  - click: {text: NOT-ON-SCREEN}
    verify: {ocr: READY}
    timeout: 1s
    retries: 1
"#,
    )
    .unwrap();
    let results = tempfile::tempdir().unwrap();
    let (out, run) = run(p.path(), "scenarios/click.yaml", results.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ev = events(&run.unwrap());
    assert!(inputs(&ev, 3).is_empty(), "nothing was clicked");
    assert_eq!(attempts(&ev, 3), 2);
}
