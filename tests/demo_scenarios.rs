//! The demo scenarios, end to end through the `smoke` binary on a real Xvnc
//! desktop: verdicts, exit codes, events, recording and the result files.

mod support;

use smoke::events::{Event, Verdict};
use support::*;

#[test]
fn calculator_passes_with_ocr_click_ocr_and_ssim_checks() {
    let _desktop = lock();
    let results = tempfile::tempdir().unwrap();
    let (out, run) = run(&repo(), "scenarios/calculator.yaml", results.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let run = run.expect("a results folder");
    let ev = events(&run);

    // every step passed, cleanup included
    let st = statuses(&ev);
    assert_eq!(st.len(), 8, "{st:?}");
    assert!(st.iter().all(|(_, s)| s == "passed"), "{st:?}");

    // the expression was typed, the button found by OCR was clicked
    assert!(
        ev.iter()
            .any(|r| matches!(&r.event, Event::Input { action, detail, .. } if action == "type" && detail == "12*12="))
    );
    let click = ev.iter().find_map(|r| match &r.event {
        Event::Input { action, at: Some(at), .. } if action == "click" => Some(*at),
        _ => None,
    });
    let located = ev.iter().find_map(|r| match &r.event {
        Event::Check { check, found: Some(f), passed: true, .. } if check.starts_with("locate text") => Some(*f),
        _ => None,
    });
    let (click, located) = (click.expect("a click"), located.expect("sqrt located by OCR"));
    assert!(located.contains(click), "the click {click} lies on the OCR box {located}");

    // the OCR checks read the numbers; the SSIM check scored against the reference
    let ocr_texts: Vec<String> = ev
        .iter()
        .filter_map(|r| match &r.event {
            Event::Check { kind, passed: true, text: Some(t), .. } if kind == "ocr" => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert!(ocr_texts.iter().any(|t| t.contains("144")), "{ocr_texts:?}");
    assert!(ocr_texts.iter().any(|t| t.trim() == "12"), "{ocr_texts:?}");
    let ssim = ev.iter().find_map(|r| match &r.event {
        Event::Check { kind, score, threshold, passed, reference, screenshot, .. } if kind == "ssim" => {
            Some((*score, *threshold, *passed, reference.clone(), screenshot.clone()))
        }
        _ => None,
    });
    let (score, threshold, passed, reference, shot) = ssim.expect("an ssim check");
    assert!(passed && score.unwrap() >= threshold.unwrap(), "{score:?} {threshold:?}");
    assert!(reference.unwrap().ends_with("reference/calculator/local/display.png"));
    assert!(run.join(shot.unwrap()).is_file(), "every check has its screenshot");

    // result files
    let summary = support::summary(&run);
    assert_eq!(summary["verdict"], "passed");
    assert_eq!(summary["schema"], "smoke.summary/1");
    assert_eq!(summary["steps"].as_array().unwrap().len(), 8);
    let junit = std::fs::read_to_string(run.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 8);
    assert!(!junit.contains("<failure"));
    let (w, h, frames) = gif_frames(&run.join("recording.gif"));
    assert_eq!((w, h), (1280, 720));
    assert!(frames > 1, "the recording has {frames} frames");
    match ev.last().map(|r| &r.event) {
        Some(Event::RunFinished { verdict, exit_code, passed, .. }) => {
            assert_eq!((*verdict, *exit_code, *passed), (Verdict::Passed, 0, 8));
        }
        other => panic!("last event: {other:?}"),
    }
}

#[test]
fn terminal_receives_upper_case_and_shifted_symbols_exactly() {
    let _desktop = lock();
    let results = tempfile::tempdir().unwrap();
    let (out, run) = run(&repo(), "scenarios/terminal.yaml", results.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ev = events(&run.unwrap());
    assert!(statuses(&ev).iter().all(|(_, s)| s == "passed"));
    // the byte-for-byte comparison ran and succeeded
    let shell_ok = ev
        .iter()
        .any(|r| matches!(&r.event, Event::Shell { command, exit_code: Some(0), .. } if command.contains("typed.txt")));
    assert!(shell_ok);
    // the OCR check saw the typed marker on screen
    assert!(ev.iter().any(|r| matches!(&r.event, Event::Check { kind, passed: true, text: Some(t), .. } if kind == "ocr" && t.contains("SMOKE_TEST"))));
}

#[test]
fn a_check_that_must_fail_fails_with_its_evidence() {
    let _desktop = lock();
    let results = tempfile::tempdir().unwrap();
    // the real scenario, expecting the wrong root
    let (out, run) = run(&repo(), "scenarios/calculator.yaml", results.path(), &["--var", "root=13"]);
    assert_eq!(out.status.code(), Some(1), "exit code 1 = a check failed\n{}", text(&out));
    let run = run.unwrap();
    let ev = events(&run);
    let st = statuses(&ev);
    assert_eq!(st[4], (5, "failed".to_string()), "{st:?}");
    assert_eq!(st[5].1, "skipped");
    assert_eq!(st[6].1, "skipped");
    assert_eq!(st[7], (8, "passed".to_string()), "cleanup still ran: {st:?}");
    let failure = ev
        .iter()
        .find_map(|r| match &r.event {
            Event::StepFinished { step: 5, failure_screenshot: Some(f), error: Some(e), .. } => {
                Some((f.clone(), e.clone()))
            }
            _ => None,
        })
        .expect("the failed step names its failing frame");
    assert!(run.join(&failure.0).is_file(), "{} exists", failure.0);
    assert!(failure.1.contains("did not hold"), "{}", failure.1);
    // the failed check recorded what OCR read
    assert!(
        ev.iter().any(
            |r| matches!(&r.event, Event::Check { step: 5, passed: false, text: Some(t), .. } if t.contains("12"))
        )
    );
    let summary = support::summary(&run);
    assert_eq!(summary["verdict"], "failed");
    assert_eq!(summary["exit_code"], 1);
    let junit = std::fs::read_to_string(run.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<failure ").count(), 1);
    assert_eq!(junit.matches("<skipped ").count(), 2);
    let (_, _, frames) = gif_frames(&run.join("recording.gif"));
    assert!(frames > 1);
}
