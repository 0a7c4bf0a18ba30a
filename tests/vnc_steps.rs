//! The new input steps through `smoke run` on the local-desktop backend:
//! confirmed typing, held keys, key_down/key_up, scroll, drag and path moves
//! run in a real scenario and the typed text arrives exactly; a confirmed
//! `type` with nowhere to go fails the step naming the lost text.

mod support;

use support::*;

#[test]
fn input_steps_in_a_scenario() {
    let _desktop = lock();
    let p = project_copy();
    std::fs::write(
        p.path().join("scenarios/input.yaml"),
        r#"steps:
  - routine: launch_app
    with:
      command: [xterm, -fa, Monospace, -fs, "14", -geometry, 80x10+0+0, -e, sh, -c, 'echo READY; cat > "$HOME/in.txt"']
      process: xterm
      ready_text: READY
  - type: {text: "hi there ", confirm: true}
  - key_down: shift
  - type: abc
  - key_up: shift
  - key: {combo: enter, hold: 100ms}
  - scroll: {direction: down, count: 2, at: [600, 300]}
  - drag: {from: [700, 500], to: [900, 600], path: bezier, duration: 200ms}
  - move: {x: 10, y: 10, path: bezier, duration: 100ms}
  - shell: |
      for i in $(seq 1 50); do [ -s "$HOME/in.txt" ] && break; sleep 0.1; done
      [ "$(cat "$HOME/in.txt")" = "hi there ABC" ] || { echo "got '$(cat "$HOME/in.txt")'" >&2; exit 1; }
"#,
    )
    .unwrap();
    let results = tempfile::tempdir().unwrap();
    let (out, _) = run(p.path(), "scenarios/input.yaml", results.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn confirmed_typing_into_nothing_fails_the_step_with_the_lost_text() {
    let _desktop = lock();
    let p = project_copy();
    // no app: the keys go to the bare desktop and nothing changes
    std::fs::write(
        p.path().join("scenarios/lost.yaml"),
        "steps:\n  - move: [1200, 700]\n    wait_still: 500ms\n  - type: {text: into the void, confirm: true}\n    timeout: 1s\n",
    )
    .unwrap();
    let results = tempfile::tempdir().unwrap();
    let (out, run_dir) = run(p.path(), "scenarios/lost.yaml", results.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let events = std::fs::read_to_string(run_dir.unwrap().join("events.jsonl")).unwrap();
    assert!(events.contains("typed \\\"into the\\\" (characters 1-8 of the text)"), "{events}");
}
