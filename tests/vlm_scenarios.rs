//! Vision-language checks end to end: the `smoke` binary on a real Xvnc
//! desktop, asking the in-test OpenAI-compatible server (no real model runs
//! here). The server's answers come from the images smoke sends: it runs
//! tesseract on them, so a "yes" means the screen really shows the thing.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use smoke::events::Event;
use support::openai::{Reply, Request, Server};
use support::*;

const KEY: &str = "sk-vlm-test-7c1f";

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A project whose inventory has the local desktop and a `vlm:` section
/// pointing at `server` (extra lines go into the `vlm:` map).
fn project(server: &Server, models: (&str, &str), extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("vlm-cache.jsonl");
    write(
        &dir.path().join("inventory.yaml"),
        &format!(
            "default: local
targets:
  local:
    backend: local-desktop
    family: linux
    desktop: openbox
    screen: 1280x720
    depth: 24
    window_manager: openbox
    home: isolated
vlm:
  endpoints: [{base}]
  api_key: {{env: SMOKE_TEST_VLM_KEY}}
  judge: {{model: {judge}, max_tokens: 64}}
  locate: {{model: {locate}, grid: thousand}}
  timeout: 20s
  retries: 0
  price: {{input_per_1k: 0.5, output_per_1k: 1.5}}
  cache: {cache}
  warmup: false
{extra}",
            base = server.base,
            judge = models.0,
            locate = models.1,
            cache = cache.display(),
        ),
    );
    dir
}

fn smoke_run(
    project: &Path,
    scenario: &str,
    results: &str,
    extra: &[&str],
) -> (std::process::Output, std::path::PathBuf) {
    let out = smoke()
        .current_dir(project)
        .env("SMOKE_TEST_VLM_KEY", KEY)
        .args(["run", scenario, "--results", results])
        .args(extra)
        .output()
        .unwrap();
    let run = run_dir(&project.join(results)).expect("a run folder");
    (out, run)
}

/// Words tesseract reads in an image, with their boxes (x, y, w, h, text).
fn ocr_words(img: &smoke::frame::Frame) -> Vec<(u32, u32, u32, u32, String)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.png");
    img.save_png(&path).unwrap();
    let out = std::process::Command::new("tesseract")
        .env("OMP_THREAD_LIMIT", "1")
        .arg(&path)
        .args(["stdout", "--psm", "11", "tsv"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let text = f.get(11)?.trim();
            if text.is_empty() {
                return None;
            }
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u32>().ok());
            Some((n(6)?, n(7)?, n(8)?, n(9)?, text.to_string()))
        })
        .collect()
}

/// The server's side of the tests: yes/no from what tesseract reads in the
/// image, points where tesseract finds the named button (0-1000 grid).
fn responder(r: &Request) -> Reply {
    let Some(img) = &r.image else { return Reply::text("no image") };
    let p = &r.prompt;
    if p.contains("Find: the Cancel button") {
        // tesseract reads the bordered button as "Cancel", "‘ance|" or so
        return match ocr_words(img).into_iter().find(|w| w.4.contains("ance")) {
            Some((x, y, w, h, _)) => {
                let (cx, cy) = ((x + w / 2) * 1000 / img.width(), (y + h / 2) * 1000 / img.height());
                Reply::text(&format!("The Cancel button is at ({cx}, {cy})."))
            }
            None => Reply::text("I cannot see it."),
        };
    }
    if p.contains("Find: the moon") {
        return Reply::text("(4000, 9000)");
    }
    if p.contains("red cross marks") {
        // the cross covers the button's text: the crop must show the dialog's buttons
        let words = ocr_words(img);
        let dialog = words.iter().any(|w| w.4.contains("ance") || w.4.contains("elet"));
        return Reply::text(if dialog { "Yes." } else { "No." });
    }
    if p.contains("asking to delete a file") {
        // tesseract on the whole screen reads the dialog's text only in part
        let words = ocr_words(img);
        let dialog = words.iter().any(|w| w.4 == "file") && words.iter().any(|w| w.4.contains("elete"));
        return Reply::text(if dialog { "yes" } else { "no" });
    }
    if p.contains("Is the desktop empty") {
        // empty: no readable word of three letters or more (the pointer reads as noise)
        let words = ocr_words(img);
        let empty = !words.iter().any(|w| w.4.chars().filter(|c| c.is_alphanumeric()).count() >= 3);
        return Reply::text(if empty { "<think>nothing there</think>Yes" } else { "No" });
    }
    Reply::text("maybe")
}

const GUARD: &str = r#"name: guard
steps:
  - launch:
      command: [xmessage, -geometry, +300+200, -buttons, "Delete,Cancel", "Delete the file report-2024.txt?"]
      until: {ocr: {text: report-2024, region: [300, 200, 278, 93]}}
  - label: dismiss the dialog if it is there
    if_visible: Is a dialog asking to delete a file open?
    then:
      - click: {locate: the Cancel button}
        precheck_click: true
  - verify_not: {ocr: {text: report-2024, region: [300, 200, 278, 93]}}
    timeout: 3s
  - label: nothing to dismiss now
    if_visible: Is a dialog asking to delete a file open?
    then: [{key: escape}]
  - verify: {vlm: Is the desktop empty?}
"#;

#[test]
fn a_guard_dismisses_a_real_dialog_by_a_located_click_and_the_second_run_asks_nothing() {
    let _desktop = lock();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(Server::start(&["judge-vl", "locator"], responder));
    let p = project(&server, ("judge-vl", "locator"), "");
    write(&p.path().join("scenarios/guard.yaml"), GUARD);
    let (out, run) = smoke_run(p.path(), "scenarios/guard.yaml", "results", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ev = events(&run);
    let asked: Vec<(usize, String, Option<String>, bool)> = ev
        .iter()
        .filter_map(|r| match &r.event {
            Event::Vlm { step, purpose, verdict, cached, .. } => {
                Some((*step, purpose.clone(), verdict.clone(), *cached))
            }
            _ => None,
        })
        .collect();
    let yes = Some("yes".to_string());
    let no = Some("no".to_string());
    assert_eq!(
        asked,
        vec![
            (2, "guard".into(), yes.clone(), false),
            (2, "locate".into(), None, false),
            (2, "precheck".into(), yes.clone(), false),
            (4, "guard".into(), no, false),
            (5, "check".into(), yes, false),
        ]
    );
    // The click went where the server pointed: xmessage's Cancel button.
    let click = ev
        .iter()
        .find_map(|r| match &r.event {
            Event::Input { step: 2, action, at: Some(at), .. } if action == "click" => Some(*at),
            _ => None,
        })
        .expect("the located click");
    assert!(click.x.abs_diff(408) <= 15 && click.y.abs_diff(272) <= 8, "{click}");
    // The second guard ran no step (no key was pressed in step 4).
    assert!(!ev.iter().any(|r| matches!(&r.event, Event::Input { step: 4, .. })));
    // Every question left the image it was about, tokens and cost in events and summary.
    for r in &ev {
        if let Event::Vlm { image_path, latency_ms, prompt_tokens, .. } = &r.event {
            assert!(run.join(image_path.as_ref().expect("an image")).is_file());
            assert!(*prompt_tokens > 0 && *latency_ms > 0);
        }
    }
    let summary = support::summary(&run);
    assert_eq!(summary["vlm"]["calls"], 5, "{}", summary["vlm"]);
    assert!(summary["vlm"]["cost"].as_f64().unwrap() > 0.0);
    let calls = server.chat_requests();
    assert_eq!(calls.len(), 5);
    assert!(calls.iter().all(|c| c.authorization.as_deref() == Some(&format!("Bearer {KEY}"))));
    // The report shows the questions; the key is nowhere in the results.
    let report = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(report.contains("Is a dialog asking to delete a file open?"));
    for f in files(&run) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()), "{} holds the API key", f.display());
    }

    // Same scenario, same screens: every verdict comes from the cache.
    let (out, run2) = smoke_run(p.path(), "scenarios/guard.yaml", "results2", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(server.chat_requests().len(), 5, "the second run asked the model nothing");
    let cached = events(&run2).iter().filter(|r| matches!(r.event, Event::Vlm { cached: true, .. })).count();
    assert_eq!(cached, 5);

    // `smoke replay` asks again about the saved image, with a new question.
    let replay = smoke()
        .current_dir(p.path())
        .env("SMOKE_TEST_VLM_KEY", KEY)
        .args(["replay"])
        .arg(&run)
        .args(["--step", "5", "--question", "Is a dialog asking to delete a file open?", "--no-cache"])
        .output()
        .unwrap();
    let said = text(&replay);
    assert_eq!(replay.status.code(), Some(0), "{said}");
    assert!(said.contains("then  judge-vl: Yes") && said.contains("now   judge-vl: no [no]"), "{said}");
    assert_eq!(server.chat_requests().len(), 6);
    let none = smoke().current_dir(p.path()).args(["replay"]).arg(&run).args(["--step", "1"]).output().unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(text(&none).contains("steps that did: 2, 4, 5"), "{}", text(&none));
}

#[test]
fn samples_deciders_budgets_missing_models_and_unusable_answers() {
    let _desktop = lock();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let coin = Arc::new(AtomicUsize::new(0));
    let c = coin.clone();
    let server = rt.block_on(Server::start(&["judge-vl", "locator"], move |r| {
        if r.prompt.contains("Is the coin heads") {
            // no, yes, yes, no, yes, ...: the first sample says no
            let i = c.fetch_add(1, Ordering::SeqCst);
            return Reply::text(if i.is_multiple_of(3) { "no" } else { "yes" });
        }
        if r.prompt.contains("Is xterm open") {
            return Reply::text("I am not sure what xterm is.");
        }
        responder(r)
    }));
    let p = project(&server, ("judge-vl", "locator"), "");
    write(
        &p.path().join("scenarios/samples.yaml"),
        r#"name: samples
steps:
  - launch: {command: [xmessage, -geometry, +300+200, "Delete the file report-2024.txt?"], until: {ocr: {text: report-2024}}}
  - label: majority of three
    verify: {vlm: {question: Is the coin heads?, consistent: 3}}
  - label: first yes
    verify: {vlm: {question: Is the coin heads up?, accept_any: true, consistent: 3}}
  - label: decided by OCR, the model is not asked
    verify: {vlm: {question: Is a delete dialog open?, decide_first: [{ocr: {text: report-2024}}]}}
  - label: an answer that is neither yes nor no counts as no
    verify_not: {vlm: Is xterm open?}
"#,
    );
    let (out, run) = smoke_run(p.path(), "scenarios/samples.yaml", "results", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let per_step =
        |n: usize| events(&run).iter().filter(|r| matches!(&r.event, Event::Vlm { step, .. } if *step == n)).count();
    assert_eq!(per_step(2), 3, "no, yes, yes: three samples for a majority");
    assert_eq!(per_step(3), 2, "no, yes: accept_any stops at the first yes");
    assert_eq!(per_step(4), 0, "the OCR decider decided");
    assert_eq!(per_step(5), 1);
    let note = events(&run).iter().find_map(|r| match &r.event {
        Event::Check { step: 5, note, .. } => note.clone(),
        _ => None,
    });
    assert!(note.unwrap().contains("1 unparseable (counted as no)"));

    // A budget of one call: the second question stops the run as an infrastructure error.
    let tight = project(&server, ("judge-vl", "locator"), "  budget: {calls: 1}\n");
    write(
        &tight.path().join("scenarios/budget.yaml"),
        "name: budget\nsteps:\n  - verify: {vlm: Is the desktop empty?}\n  - verify: {vlm: {question: Is the coin heads?, consistent: 3}}\n",
    );
    let (out, run) = smoke_run(tight.path(), "scenarios/budget.yaml", "results", &["--no-cache"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let summary = support::summary(&run);
    assert!(summary["reason"].as_str().unwrap().contains("budget"), "{summary}");
    assert_eq!(summary["vlm"]["calls"], 1);

    // A model the endpoint does not serve: exit 4 before the first step, with readable results.
    let missing = project(&server, ("qwen-not-loaded", "locator"), "");
    write(&missing.path().join("scenarios/m.yaml"), "name: m\nsteps:\n  - verify: {vlm: Is the desktop empty?}\n");
    let (out, run) = smoke_run(missing.path(), "scenarios/m.yaml", "results", &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let summary = support::summary(&run);
    assert_eq!(summary["exit_code"], 4);
    assert!(summary["reason"].as_str().unwrap().contains("qwen-not-loaded"), "{summary}");
    assert!(!events(&run).iter().any(|r| matches!(r.event, Event::StepStarted { .. })));

    // An answer off the screen is asked again (fresh samples), then a clear failure.
    write(&p.path().join("scenarios/moon.yaml"), "name: moon\nsteps:\n  - click: {locate: the moon}\n");
    let before = server.chat_requests().len();
    let (out, run) = smoke_run(p.path(), "scenarios/moon.yaml", "results-moon", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(server.chat_requests().len() - before, 3);
    let summary = support::summary(&run);
    let reason = summary["reason"].as_str().unwrap();
    assert!(reason.contains("no usable answer in 3 tries") && reason.contains("off the"), "{reason}");
}

#[test]
fn vlm_steps_need_a_vlm_in_the_inventory_and_are_checked_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("scenarios/v.yaml"),
        "name: v\nsteps:\n  - verify: {vlm: Is it there?}\n  - if_visible: A dialog?\n  - click: {text: OK}\n    precheck_click: true\n  - type: alice\n    verify_input: the Username field\n    then: [{key: enter}]\n",
    );
    let out = smoke().current_dir(dir.path()).args(["validate", "scenarios/v.yaml"]).output().unwrap();
    let err = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("v.yaml:3:") && err.contains("no `vlm:` section"), "{err}");
    assert!(err.contains("if_visible needs the steps to run"), "{err}");
    assert!(err.contains("precheck_click asks the model about a located element"), "{err}");
    assert!(err.contains("'then' belongs to a 'if_visible' step"), "{err}");
}
