//! Visual checks end to end through the `smoke` binary on a real Xvnc desktop:
//! a needle (match and ocr areas, click points) on a real dialog, screen waits
//! with a blinking caret and a running counter, fuzzy OCR, and the approve
//! round trip for reference images.

mod support;

use std::path::Path;

use smoke::events::{CheckScore, Event};
use support::*;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A project with the dialog needle (captured from xmessage on Xvnc by
/// tests/data/vision/capture_more.sh).
fn dialog_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("needles")).unwrap();
    std::fs::copy(repo().join("tests/data/vision/dialog_a.png"), dir.path().join("needles/dialog.png")).unwrap();
    write(
        &dir.path().join("needles/dialog.json"),
        r#"{
  "schema": "smoke.needle/1",
  "areas": [
    {"type": "match", "rect": [300, 220, 278, 36]},
    {"type": "match", "rect": [301, 257, 145, 30]},
    {"type": "ocr", "rect": [300, 220, 278, 36], "text": "Delete the file report-2024.txt?", "threshold": 0.9, "margin": 4}
  ],
  "points": [{"id": "delete", "at": [335, 272]}, {"id": "cancel", "at": [408, 272]}]
}"#,
    );
    dir
}

const DIALOG: &str = r#"name: dialog
steps:
  - launch:
      command: [xmessage, -geometry, +300+200, -buttons, "Delete,Cancel", "Delete the file report-2024.txt?"]
      until: {needle: dialog}
  - label: the dialog is still
    wait_still: 1s
  - verify: {ocr: {text: "Delete the flle report-2024.txt?", max_distance: 1, region: [300, 200, 278, 93]}}
  - label: cancel it
    click: {needle: dialog, point: cancel}
    wait_change: {region: [300, 200, 278, 93]}
  - verify_not: {needle: dialog}
    timeout: 3s
"#;

#[test]
fn needle_click_fuzzy_ocr_and_screen_waits_on_a_real_dialog() {
    let _desktop = lock();
    let project = dialog_project();
    write(&project.path().join("scenarios/dialog.yaml"), DIALOG);
    let results = project.path().join("results");
    let (out, run) = run(project.path(), "scenarios/dialog.yaml", &results, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ev = events(&run.unwrap());
    // The needle check of the launch: every area scored, the ocr area read the text.
    let launch = ev
        .iter()
        .find_map(|r| match &r.event {
            Event::Check { step: 1, kind, passed: true, scores, text, .. } if kind == "needle" => {
                Some((scores.clone(), text.clone()))
            }
            _ => None,
        })
        .expect("the needle check of the launch");
    let names: Vec<&str> = launch.0.iter().map(|s: &CheckScore| s.name.as_str()).collect();
    assert_eq!(names, vec!["match area 0", "match area 1", "ocr area 2"]);
    assert!(launch.0.iter().all(|s| s.passed));
    assert!(launch.0[0].score > 0.999, "{:?}", launch.0);
    assert!(launch.1.unwrap().contains("report-2024"));
    // The click went to the needle's "cancel" point.
    let click = ev.iter().find_map(|r| match &r.event {
        Event::Input { action, at: Some(at), .. } if action == "click" => Some(*at),
        _ => None,
    });
    assert_eq!(click, Some(smoke::geometry::Point::new(408, 272)));
    // The fuzzy OCR check forgave one edit; the waits recorded their measures.
    let fuzzy = ev.iter().find_map(|r| match &r.event {
        Event::Check { step: 3, kind, passed: true, score, note, .. } if kind == "ocr" => Some((*score, note.clone())),
        _ => None,
    });
    let (score, note) = fuzzy.expect("the fuzzy OCR check");
    assert!(score.unwrap() > 0.9 && score.unwrap() < 1.0, "{score:?}");
    assert!(note.unwrap().contains("1 edit"));
    let waits: Vec<(String, bool, f64)> = ev
        .iter()
        .filter_map(|r| match &r.event {
            Event::Check { kind, passed, score: Some(s), .. } if kind.starts_with("wait_") => {
                Some((kind.clone(), *passed, *s))
            }
            _ => None,
        })
        .collect();
    assert_eq!(waits.len(), 2, "{waits:?}");
    assert!(waits[0].0 == "wait_still" && waits[0].1 && waits[0].2 >= 1.0, "{waits:?}");
    assert!(waits[1].0 == "wait_change" && waits[1].1 && waits[1].2 > 100.0, "{waits:?}");
}

#[test]
fn wait_still_masks_a_blinking_caret_but_not_a_counter() {
    let _desktop = lock();
    let project = tempfile::tempdir().unwrap();
    write(
        &project.path().join("scenarios/waits.yaml"),
        r#"name: waits
steps:
  - launch:
      command: [xterm, -bc, -fa, Monospace, -fs, "14", -geometry, 40x5+100+100, -e, bash, -c, "printf 'READY\n'; exec cat"]
      until: {ocr: READY}
  - label: still, although the cursor blinks
    wait_still: 1s
    timeout: 8s
  - label: the caret is known from the start now
    wait_still: {for: 500ms, region: [100, 100, 400, 140]}
  - label: typed text changes the screen
    type: hello
    wait_change: {region: [100, 100, 400, 140]}
    verify: {ocr: {text: hello, region: [100, 100, 400, 140]}}
  - label: a counter never stands still
    launch:
      command: [xterm, -geometry, 20x2+600+100, -e, bash, -c, "while :; do date +%N; sleep 0.1; done"]
      process: xterm
  - wait_still: {for: 1s, region: [600, 100, 200, 60]}
    timeout: 3s
"#,
    );
    let results = project.path().join("results");
    let (out, run) = run(project.path(), "scenarios/waits.yaml", &results, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let ev = events(&run.unwrap());
    let st = statuses(&ev);
    assert_eq!(
        st.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        vec!["passed", "passed", "passed", "passed", "passed", "failed"]
    );
    let still = ev.iter().find_map(|r| match &r.event {
        Event::Check { step: 2, kind, passed: true, note, .. } if kind == "wait_still" => Some(note.clone()),
        _ => None,
    });
    let note = still.expect("the still wait of step 2").unwrap_or_default();
    assert!(note.contains("blinking, masked"), "the caret was found and masked: {note}");
    // The next wait knew the caret from its first frame.
    let known = ev.iter().find_map(|r| match &r.event {
        Event::Check { step: 3, kind, passed: true, note, .. } if kind == "wait_still" => Some(note.clone()),
        _ => None,
    });
    assert!(known.expect("the second still wait").unwrap_or_default().contains("blinking, masked"));
    let error = ev.iter().find_map(|r| match &r.event {
        Event::StepFinished { step: 6, error: Some(e), .. } => Some(e.clone()),
        _ => None,
    });
    assert!(error.unwrap().contains("kept changing"));
}

#[test]
fn a_failed_reference_is_approved_from_the_run_and_then_passes() {
    let _desktop = lock();
    let project = project_copy();
    let reference = project.path().join("reference/calculator/local/display.png");
    // Created from a run: the reference and its sidecar.
    std::fs::remove_file(&reference).unwrap();
    let created = project.path().join("results0");
    let (out, _) =
        support::run(project.path(), "scenarios/calculator.yaml", &created, &["--update-references", "missing"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference.with_extension("json")).unwrap()).unwrap();
    assert_eq!(
        (sidecar["how"].as_str(), sidecar["step"].as_u64(), sidecar["threshold"].as_f64()),
        (Some("update-references"), Some(6), Some(0.98))
    );
    assert_eq!(sidecar["region"], serde_json::json!([482, 230, 314, 48]));
    let good = smoke::frame::Frame::load_png(&reference).unwrap();
    // A wrong reference of the right size: the display showing nothing.
    let mut wrong = good.clone();
    for px in wrong.pixels_mut().chunks_exact_mut(4) {
        px[..3].copy_from_slice(&[255, 255, 255]);
    }
    wrong.save_png(&reference).unwrap();
    let results = project.path().join("results");
    let (out, run) = run(project.path(), "scenarios/calculator.yaml", &results, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let run = run.unwrap();
    let ev = events(&run);
    let failed = ev.iter().find_map(|r| match &r.event {
        Event::Check { kind, passed: false, step, actual, diff, reference_path, scores, .. } if kind == "ssim" => {
            Some((*step, actual.clone(), diff.clone(), reference_path.clone(), scores.clone()))
        }
        _ => None,
    });
    let (step, actual, diff, reference_path, scores) = failed.expect("the failed ssim check");
    assert!(run.join(actual.unwrap()).is_file() && run.join(diff.unwrap()).is_file());
    assert!(reference_path.unwrap().ends_with("reference/calculator/local/display.png"));
    assert!(scores.iter().any(|s| s.name == "area" && !s.passed && s.score < 0.95), "{scores:?}");

    // Approve that step from the run: the reference becomes the actual image.
    let out = smoke()
        .current_dir(project.path())
        .arg("approve")
        .arg(&run)
        .args(["--step", &step.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("approved: step"), "{}", text(&out));
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference.with_extension("json")).unwrap()).unwrap();
    assert_eq!(sidecar["how"], "approve");
    assert_eq!(sidecar["step"], step);
    assert_eq!(sidecar["region"], serde_json::json!([482, 230, 314, 48]));
    assert!(sidecar["run"].as_str().unwrap().contains("calculator-local"));
    // A step without image checks says so.
    let none = smoke().current_dir(project.path()).arg("approve").arg(&run).args(["--step", "1"]).output().unwrap();
    assert_ne!(none.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no image check"), "{}", text(&none));

    let again = project.path().join("results2");
    let (out, _) = support::run(project.path(), "scenarios/calculator.yaml", &again, &[]);
    assert_eq!(out.status.code(), Some(0), "the approved reference passes\n{}", text(&out));
}

#[test]
fn a_missing_reference_fails_before_the_run_with_the_command_that_creates_it() {
    let project = project_copy();
    std::fs::remove_file(project.path().join("reference/calculator/local/display.png")).unwrap();
    let out = smoke().current_dir(project.path()).args(["validate", "scenarios/calculator.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("smoke run scenarios/calculator.yaml --os local --update-references missing"), "{err}");
    // A needle that does not exist, or lacks the point a click names, is found before the run too.
    write(
        &project.path().join("scenarios/needles.yaml"),
        "steps:\n  - verify: {needle: nowhere}\n  - click: {needle: dialog, point: ok}\n",
    );
    let dialog = dialog_project();
    std::fs::create_dir_all(project.path().join("needles")).unwrap();
    for f in ["dialog.json", "dialog.png"] {
        std::fs::copy(dialog.path().join("needles").join(f), project.path().join("needles").join(f)).unwrap();
    }
    let out = smoke().current_dir(project.path()).args(["validate", "scenarios/needles.yaml"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("needle 'nowhere' not found") && err.contains("needles.yaml:2:"), "{err}");
    assert!(err.contains("has no click point 'ok'") && err.contains("delete, cancel"), "{err}");
}

#[test]
fn a_click_target_that_is_not_found_leaves_the_screen_and_a_heatmap_of_the_best_candidate() {
    let _desktop = lock();
    let project = dialog_project();
    // The image reference: the dialog's text line as it reads in dialog_a.png.
    let a = smoke::frame::Frame::load_png(&repo().join("tests/data/vision/dialog_a.png")).unwrap();
    let line = a.crop(smoke::geometry::Rect::new(300, 220, 278, 36)).unwrap();
    std::fs::create_dir_all(project.path().join("reference")).unwrap();
    line.save_png(&project.path().join("reference/question.png")).unwrap();
    // The similar dialog (one word differs) is on the screen, so neither the
    // needle nor the image is found; each click leaves its evidence.
    for (name, click) in
        [("needle", "{needle: dialog, point: cancel}"), ("image", "{image: question, threshold: 0.99}")]
    {
        write(
            &project.path().join(format!("scenarios/{name}.yaml")),
            &format!(
                r#"name: {name}
steps:
  - launch:
      command: [xmessage, -geometry, +300+200, -buttons, "Delete,Cancel", "Delete the file report-2025.txt?"]
      until: {{ocr: {{text: report-2025, region: [300, 200, 278, 93]}}}}
  - click: {click}
    timeout: 2s
"#
            ),
        );
        let results = project.path().join(format!("results-{name}"));
        let (out, run) = run(project.path(), &format!("scenarios/{name}.yaml"), &results, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let run = run.unwrap();
        let (screenshot, diff, found) = events(&run)
            .iter()
            .find_map(|r| match &r.event {
                Event::Check { step: 2, passed: false, screenshot, diff, found, .. } => {
                    Some((screenshot.clone(), diff.clone(), *found))
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name}: no failed locate check"));
        let shot = smoke::frame::Frame::load_png(&run.join(screenshot.expect("a screenshot"))).unwrap();
        assert_eq!((shot.width(), shot.height()), (1280, 720));
        // The heatmap compares the wanted pixels with the best candidate: the
        // dialog's text line, found where the similar dialog shows it.
        let heat = smoke::frame::Frame::load_png(&run.join(diff.expect("a heatmap"))).unwrap();
        assert_eq!((heat.width(), heat.height()), (278, 36), "{name}");
        let best = found.expect("the best candidate");
        assert!(best.x.abs_diff(300) <= 2 && best.y.abs_diff(220) <= 2, "{name}: {best}");
    }
}
