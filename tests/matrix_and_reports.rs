//! The matrix (parallel runs over several targets), its JUnit against the
//! Jenkins schema, CI emission, merging, history, and the HTML reports opened
//! in a real headless Chromium.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::browser::Browser;
use support::*;

/// A project copy with two local-desktop targets and the calculator reference at family level.
fn two_desktops() -> tempfile::TempDir {
    let p = project_copy();
    std::fs::write(
        p.path().join("inventory.yaml"),
        "default: desk-a\ntargets:\n  desk-a: {backend: local-desktop, family: linux}\n  desk-b: {backend: local-desktop, family: linux}\n",
    )
    .unwrap();
    let fam = p.path().join("reference/calculator/linux");
    std::fs::create_dir_all(&fam).unwrap();
    std::fs::copy(repo().join("reference/calculator/local/display.png"), fam.join("display.png")).unwrap();
    p
}

fn xsd() -> std::path::PathBuf {
    let x = repo().join("target/test-data/junit-10.xsd");
    assert!(x.is_file(), "{} is missing: run scripts/setup-debian.sh (it fetches the JUnit schema)", x.display());
    x
}

fn validate_junit(file: &Path) {
    let out = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(xsd())
        .arg(file)
        .output()
        .expect("xmllint (apt-get install libxml2-utils)");
    assert!(out.status.success(), "{} does not validate:\n{}", file.display(), String::from_utf8_lossy(&out.stderr));
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn matrix_dir(results: &Path) -> std::path::PathBuf {
    std::fs::read_dir(results)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("matrix-"))
        .expect("a matrix folder")
}

#[test]
fn a_matrix_runs_both_demos_on_two_desktops_in_parallel() {
    let _desktop = lock();
    let p = two_desktops();
    let results = tempfile::tempdir().unwrap();
    let out =
        smoke().current_dir(p.path()).args(["matrix", "-j", "2", "--results"]).arg(results.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dir = matrix_dir(results.path());
    let m = json(&dir.join("matrix.json"));
    assert_eq!(m["schema"], "smoke.matrix/1");
    assert_eq!(m["verdict"], "passed");
    let runs = m["runs"].as_array().unwrap();
    let cells: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{}@{}={}",
                r["scenario"].as_str().unwrap(),
                r["os"].as_str().unwrap(),
                r["verdict"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        cells,
        ["calculator@desk-a=passed", "calculator@desk-b=passed", "terminal@desk-a=passed", "terminal@desk-b=passed"]
    );
    // every run has its own folder and report
    let mut spans = Vec::new();
    for r in runs {
        let run = dir.join(r["run"].as_str().unwrap());
        assert!(run.join("report.html").is_file() && run.join("recording.gif").is_file());
        let ev = events(&run);
        spans.push((ev.first().unwrap().time.clone(), ev.last().unwrap().time.clone()));
    }
    // two runs overlapped in time (-j 2): some run started before another finished
    let overlap =
        spans.iter().enumerate().any(|(i, a)| spans.iter().enumerate().any(|(j, b)| i != j && a.0 < b.1 && b.0 < a.1));
    assert!(overlap, "runs did not overlap: {spans:?}");
    validate_junit(&dir.join("junit.xml"));
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testsuite ").count(), 4);
    // the matrix page links every cell to its run report
    let html = std::fs::read_to_string(dir.join("matrix.html")).unwrap();
    for r in runs {
        let link = format!("{}/report.html", r["run"].as_str().unwrap());
        assert!(html.contains(&link), "{link}");
    }
    // history: one line per run at the results root, all passing
    let hist = smoke().args(["history", "--json", "--results"]).arg(results.path()).output().unwrap();
    let statuses: Value = serde_json::from_slice(&hist.stdout).unwrap();
    let classes: Vec<&str> = statuses.as_array().unwrap().iter().map(|s| s["class"].as_str().unwrap()).collect();
    assert_eq!(classes, ["passing"; 4], "{statuses}");
    let drift = smoke().args(["history", "--drift", "--json", "--results"]).arg(results.path()).output().unwrap();
    let drift: Value = serde_json::from_slice(&drift.stdout).unwrap();
    assert!(
        drift.as_array().unwrap().iter().any(|d| d["kind"] == "ssim" && d["scores"][0][1].as_f64().unwrap() > 0.98),
        "{drift}"
    );
}

#[test]
fn the_run_report_works_in_a_real_browser() {
    let _desktop = lock();
    let results = tempfile::tempdir().unwrap();
    // the display shows 13 where the reference shows 12: OCR passes, SSIM fails
    let (out, run) = run(
        &repo(),
        "scenarios/calculator.yaml",
        results.path(),
        &["--var", "expression=13*13=", "--var", "square=169", "--var", "root=13"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let run = run.unwrap();
    let ev = events(&run);
    let report = run.join("report.html");
    assert!(report.is_file());
    // the frame each step should jump to: the frame the next started step began on
    let starts: Vec<(usize, u64)> = ev
        .iter()
        .filter_map(|r| match &r.event {
            smoke::events::Event::StepStarted { step, frame: Some(f), attempt: 1, .. } => Some((*step, *f)),
            _ => None,
        })
        .collect();
    let after_step_3 = starts.iter().find(|(s, _)| *s > 3).unwrap().1;

    let mut b = Browser::launch();
    b.open(&format!("file://{}", report.display()));
    assert!(b.errors().is_empty(), "console errors: {:?}", b.errors());
    let images =
        b.eval("Array.from(document.images).filter(i => i.src).map(i => [i.alt, i.complete && i.naturalWidth > 0])");
    let images = images.as_array().unwrap();
    assert!(images.len() >= 8, "{images:?}");
    assert!(images.iter().all(|i| i[1] == true), "images that did not load: {images:?}");
    assert_eq!(b.eval("document.getElementById('recording').naturalWidth"), 1280);
    // the failed step is shown first
    assert_eq!(b.eval("document.querySelector('#timeline button.active').dataset.step"), "6");
    // the timeline jumps to step 3's frame
    let shown = b.eval("document.querySelector('#timeline button[data-step=\"3\"]').click(); document.getElementById('frame-view').dataset.frame");
    assert_eq!(shown, after_step_3.to_string());
    assert_eq!(b.eval("document.getElementById('step-3').open"), true);
    let frame3 = b.eval("document.getElementById('frame-view').src");
    let frame6 = b.eval("document.querySelector('#timeline button[data-step=\"6\"]').click(); document.getElementById('frame-view').src");
    assert_ne!(frame3, frame6, "different steps show different frames");
    // the SSIM comparison: side by side, slider, diff, approve command
    assert_eq!(b.eval("document.querySelectorAll('#step-6 .compare').length"), 1);
    let width = b.eval("const r = document.querySelector('#step-6 input[type=range]'); r.value = 20; r.dispatchEvent(new Event('input')); document.querySelector('#step-6 .compare .overlay').style.width");
    assert_eq!(width, "20%");
    let approve = b.eval("document.querySelector('#step-6 .cmd').textContent");
    assert!(
        approve.as_str().unwrap().starts_with("smoke approve ") && approve.as_str().unwrap().ends_with("--step 6"),
        "{approve}"
    );
    // the OCR check of step 5 shows what it read
    let ocr = b.eval("Array.from(document.querySelectorAll('#step-5 pre')).map(p => p.textContent).join('|')");
    assert!(ocr.as_str().unwrap().split('|').any(|t| t.trim() == "13"), "the OCR text is shown: {ocr}");
    assert!(b.errors().is_empty(), "console errors after interaction: {:?}", b.errors());
}

#[test]
fn ci_emission_and_merging_runs_made_elsewhere() {
    let _desktop = lock();
    let p = two_desktops();
    let gh =
        smoke().current_dir(p.path()).args(["matrix", "--emit", "github", "scenarios/terminal.yaml"]).output().unwrap();
    assert_eq!(gh.status.code(), Some(0), "{}", text(&gh));
    let v: Value = serde_json::from_slice(&gh.stdout).unwrap();
    let jobs = v["include"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["scenario"], "scenarios/terminal.yaml");
    assert_eq!(jobs[1]["os"], "desk-b");
    let gl = smoke().current_dir(p.path()).args(["matrix", "--emit", "gitlab"]).output().unwrap();
    let gl = String::from_utf8(gl.stdout).unwrap();
    let parsed = smoke::scenario::yaml::parse(&std::sync::Arc::from("gitlab"), gl.as_bytes()).unwrap();
    let entries = parsed.get("parallel").unwrap().value.get("matrix").unwrap().value.as_seq().unwrap().len();
    assert_eq!(entries, 4, "{gl}");

    // two "CI jobs", each with its own results folder, then merged
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (dir, os) in [(&a, "desk-a"), (&b, "desk-b")] {
        let (out, _) = run(p.path(), "scenarios/terminal.yaml", dir.path(), &["--os", os]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let merged = tempfile::tempdir().unwrap();
    let out =
        smoke().args(["report", "merge"]).arg(a.path()).arg(b.path()).arg("--out").arg(merged.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let m = json(&merged.path().join("matrix.json"));
    let oses: Vec<&str> = m["runs"].as_array().unwrap().iter().map(|r| r["os"].as_str().unwrap()).collect();
    assert_eq!(oses, ["desk-a", "desk-b"]);
    validate_junit(&merged.path().join("junit.xml"));
    // the merged page opens cleanly and its links lead to the copied runs
    let mut br = Browser::launch();
    br.open(&format!("file://{}", merged.path().join("matrix.html").display()));
    assert!(br.errors().is_empty(), "{:?}", br.errors());
    let links = br.eval("Array.from(document.querySelectorAll('#matrix a')).map(a => a.getAttribute('href'))");
    let links = links.as_array().unwrap();
    assert_eq!(links.len(), 2);
    for l in links {
        assert!(merged.path().join(l.as_str().unwrap()).is_file(), "{l}");
    }
}

#[test]
fn history_classifies_crafted_histories() {
    let d = tempfile::tempdir().unwrap();
    let line = |sc: &str, v: &str, inputs: &str, t: u32| {
        format!(
            "{{\"time\":\"2026-11-{t:02}T00:00:00.000Z\",\"scenario\":\"{sc}\",\"os\":\"linux\",\"verdict\":\"{v}\",\"duration_ms\":1,\"run\":\"r{t}\",\"inputs\":\"{inputs}\"}}\n"
        )
    };
    let mut h = String::new();
    for (sc, seq) in [
        ("steady", vec![("passed", "a"), ("passed", "a")]),
        ("broke", vec![("passed", "a"), ("failed", "b")]),
        ("broken", vec![("failed", "a"), ("failed", "b"), ("error", "c")]),
        ("flaky", vec![("passed", "a"), ("failed", "a"), ("passed", "a")]),
        ("fixed", vec![("failed", "a"), ("passed", "b")]),
    ] {
        for (i, (v, inp)) in seq.iter().enumerate() {
            h.push_str(&line(sc, v, inp, i as u32 + 1));
        }
    }
    std::fs::write(d.path().join("history.jsonl"), h).unwrap();
    let out = smoke().args(["history", "--json", "--results"]).arg(d.path()).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{}={}", s["scenario"].as_str().unwrap(), s["class"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        ["broke=new-failure", "broken=persistent-failure", "fixed=recovering", "flaky=flaky", "steady=passing"]
    );
    let table = smoke().args(["history", "--results"]).arg(d.path()).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("flaky") && table.contains("67%"), "{table}");
}

/// Accept HTTP requests on loopback and keep their bodies.
fn webhook_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/T0KEN-in-the-url", listener.local_addr().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let b = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            b.lock().unwrap().push(String::from_utf8_lossy(&body).to_string());
            let mut s = stream;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (url, bodies)
}

#[test]
fn a_webhook_hears_about_new_and_persistent_failures_only() {
    let _desktop = lock();
    let (url, bodies) = webhook_receiver();
    let results = tempfile::tempdir().unwrap();
    let args = |root: &Path, extra: &[&str]| {
        let mut v = vec![
            "run".to_string(),
            "scenarios/calculator.yaml".into(),
            "--results".into(),
            root.display().to_string(),
            "--notify".into(),
            url.clone(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // a pass: nothing to say
    let out = smoke().current_dir(repo()).args(args(results.path(), &[])).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(bodies.lock().unwrap().is_empty());
    // a new failure: one notification with the details and a human text
    let out = smoke().current_dir(repo()).args(args(results.path(), &["--var", "root=13"])).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let got = bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let v: Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(v["alerts"][0]["class"], "new-failure");
    assert_eq!(v["alerts"][0]["scenario"], "calculator");
    assert!(v["text"].as_str().unwrap().contains("calculator on local: new-failure"));
    // the token in the URL is never printed
    assert!(!text(&out).contains("T0KEN"), "{}", text(&out));
}
