//! The command line: validate (all errors at once), targets, schema, and
//! invalid input to run.

mod support;

use support::*;

#[test]
fn validate_lists_every_error_of_every_file_with_positions() {
    let p = project_copy();
    std::fs::write(p.path().join("scenarios/a.yaml"), "steps:\n  - tpye: x\n  - key: ctrl+entr\n").unwrap();
    std::fs::write(p.path().join("scenarios/b.yaml"), "steps:\n  - wait: soon\n").unwrap();
    std::fs::write(p.path().join("routines/r.yaml"), "inputs:\n  x: {type: strng}\nsteps:\n  - wait: 1s\n").unwrap();
    let out = smoke()
        .current_dir(p.path())
        .args(["validate", "scenarios/a.yaml", "scenarios/b.yaml", "routines/r.yaml", "scenarios/calculator.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "scenarios/a.yaml:2:5: error: unknown key 'tpye' in step",
        "did you mean 'type'?",
        "scenarios/a.yaml:3:10: error: unknown key 'entr'",
        "scenarios/b.yaml:2:11: error: wait must be a duration",
        "routines/r.yaml:2:13: error: unknown input type 'strng'",
        "4 errors in 3 of 4 files",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    // snippets point at the column
    assert!(err.contains("2 |   - tpye: x\n  |     ^"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: scenarios/calculator.yaml"));
}

#[test]
fn validate_plan_shows_the_expanded_steps() {
    let out = smoke().current_dir(repo()).args(["validate", "--plan", "scenarios/calculator.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("1. park the pointer  [launch_app]"), "{s}");
    assert!(s.contains("8. cleanup stop galculator  [stop_app]"), "{s}");
}

#[test]
fn run_with_an_invalid_scenario_exits_2_and_runs_nothing() {
    let p = project_copy();
    std::fs::write(p.path().join("scenarios/bad.yaml"), "steps:\n  - type: \"{{ nope }}\"\n").unwrap();
    let results = tempfile::tempdir().unwrap();
    let (out, run) = run(p.path(), "scenarios/bad.yaml", results.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("scenarios/bad.yaml:2:15: error: undefined variable 'nope'"),
        "{}",
        text(&out)
    );
    assert!(run.is_none());
    // unknown target and bad --var are invalid input too
    let (out, _) = run_cmd(&["run", "scenarios/calculator.yaml", "--os", "locl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean 'local'"), "{}", text(&out));
    let (out, _) = run_cmd(&["run", "scenarios/calculator.yaml", "--var", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
}

fn run_cmd(args: &[&str]) -> (std::process::Output, ()) {
    (smoke().current_dir(repo()).args(args).output().unwrap(), ())
}

#[test]
fn targets_lists_the_inventory() {
    let (out, _) = run_cmd(&["targets"]);
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("local *") && s.contains("local-desktop"), "{s}");
    let (out, _) = run_cmd(&["targets", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["targets"][0]["name"], "local");
    assert_eq!(v["targets"][0]["default"], true);
}

#[test]
fn schema_is_json_schema_with_every_step_kind() {
    for kind in ["scenario", "routine"] {
        let (out, _) = run_cmd(&["schema", kind]);
        assert_eq!(out.status.code(), Some(0));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
        let steps = v["$defs"]["step"]["properties"].as_object().unwrap();
        for k in [
            "shell",
            "launch",
            "key",
            "type",
            "click",
            "move",
            "wait",
            "wait_for",
            "verify",
            "verify_not",
            "screenshot",
            "routine",
        ] {
            assert!(steps.contains_key(k), "{kind}: {k}");
        }
    }
}
