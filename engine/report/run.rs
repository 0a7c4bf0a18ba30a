//! The report of one run: header with the verdict, the recording with a step
//! timeline that jumps to each step's frame, every step with its checks,
//! screenshots (click overlays, failing frames), image comparisons side by
//! side and with a slider, OCR text, commands and their output, the approve
//! command for mismatching images, and the logs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::frame::Frame;
use crate::recorder::GifPlayback;
use crate::report::{ReportError, page};
use crate::results::markup::{data_uri, escape as esc};

/// GIFs larger than this are linked instead of embedded.
pub const EMBED_GIF_LIMIT: u64 = 20 * 1024 * 1024;

/// Write `report.html` into a run folder; returns its path.
pub fn write(run_dir: &Path) -> Result<PathBuf, ReportError> {
    let html = render(run_dir)?;
    let out = run_dir.join("report.html");
    std::fs::write(&out, html).map_err(|source| ReportError::Io { path: out.display().to_string(), source })?;
    Ok(out)
}

fn read_events(run_dir: &Path) -> Result<Vec<Value>, ReportError> {
    let path = run_dir.join("events.jsonl");
    let text =
        std::fs::read_to_string(&path).map_err(|_| ReportError::NotARun { path: run_dir.display().to_string() })?;
    Ok(text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect())
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

/// A step as the report shows it.
#[derive(Default)]
struct Step {
    number: u64,
    label: String,
    kind: String,
    source: String,
    cleanup: bool,
    routines: Vec<String>,
    status: String,
    duration_ms: u64,
    attempts: u64,
    error: Option<String>,
    failure: Option<String>,
    start_frame: Option<u64>,
    events: Vec<Value>,
}

/// Render the report of a run folder.
pub fn render(run_dir: &Path) -> Result<String, ReportError> {
    let events = read_events(run_dir)?;
    let mut steps: BTreeMap<u64, Step> = BTreeMap::new();
    let mut run = Value::Null;
    let mut finished = Value::Null;
    let mut ready = Value::Null;
    let mut warnings = Vec::new();
    let mut recording = Value::Null;
    // boot outcomes and rewinds, in order
    let mut vm_events: Vec<&Value> = Vec::new();
    for e in &events {
        let step_no = n(e, "step");
        match s(e, "event") {
            "run_started" => run = e.clone(),
            "run_finished" => finished = e.clone(),
            "target_ready" => ready = e.clone(),
            "recording" => recording = e.clone(),
            "warning" => warnings.push(s(e, "message").to_string()),
            "boot" | "rewind" => vm_events.push(e),
            "step_started" => {
                let st = steps.entry(step_no.unwrap_or(0)).or_default();
                st.number = step_no.unwrap_or(0);
                st.label = s(e, "label").into();
                st.kind = s(e, "kind").into();
                st.source = s(e, "source").into();
                st.cleanup = e.get("cleanup").and_then(Value::as_bool).unwrap_or(false);
                st.routines = e
                    .get("routines")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                if st.start_frame.is_none() {
                    st.start_frame = n(e, "frame");
                }
                st.status = "running".into();
            }
            "step_finished" => {
                let st = steps.entry(step_no.unwrap_or(0)).or_default();
                st.number = step_no.unwrap_or(0);
                if st.label.is_empty() {
                    st.label = s(e, "label").into();
                }
                st.status = s(e, "status").into();
                st.duration_ms = n(e, "duration_ms").unwrap_or(0);
                st.attempts = n(e, "attempts").unwrap_or(0);
                st.error = e.get("error").and_then(Value::as_str).map(str::to_string);
                st.failure = e.get("failure_screenshot").and_then(Value::as_str).map(str::to_string);
            }
            _ => {
                if let Some(no) = step_no {
                    steps.entry(no).or_default().events.push(e.clone());
                }
            }
        }
    }
    let verdict = if finished.is_null() { "error".to_string() } else { s(&finished, "verdict").to_string() };
    let scenario = s(&run, "scenario");
    let os = s(&run, "os");

    // recording: the frame after each step = the frame the next started step began on
    let gif_path = run_dir.join(if s(&recording, "path").is_empty() { "recording.gif" } else { s(&recording, "path") });
    let ordered: Vec<&Step> = steps.values().collect();
    let mut after: BTreeMap<u64, u64> = BTreeMap::new();
    let total_frames = count_frames(&gif_path);
    for (i, st) in ordered.iter().enumerate() {
        if st.start_frame.is_none() {
            continue;
        }
        let next = ordered[i + 1..].iter().find_map(|x| x.start_frame);
        let last = total_frames.map(|t| t.saturating_sub(1));
        if let Some(f) = next.or(last) {
            after.insert(st.number, f);
        }
    }
    let wanted: BTreeSet<u64> = after.values().copied().collect();
    let keyframes = extract_frames(&gif_path, &wanted);

    let mut body = String::new();
    let started = events.first().map(|e| s(e, "time").to_string()).unwrap_or_default();
    let dur = n(&finished, "duration_ms").map(secs).unwrap_or_default();
    let _ = write!(
        body,
        "<header><h1><span class=\"badge {v}\">{v}</span> {sc} <span class=\"muted\">on</span> {os}</h1>\
         <div class=\"meta\">{file} &middot; {backend} &middot; started {started} &middot; {dur} &middot; \
         {p} passed, {f} failed, {e} errors, {k} skipped &middot; smoke {ver}</div>{reason}</header><main>",
        v = esc(&verdict),
        sc = esc(scenario),
        os = esc(os),
        file = esc(s(&run, "file")),
        backend = esc(s(&run, "backend")),
        started = esc(&started),
        p = n(&finished, "passed").unwrap_or(0),
        f = n(&finished, "failed").unwrap_or(0),
        e = n(&finished, "errors").unwrap_or(0),
        k = n(&finished, "skipped").unwrap_or(0),
        ver = esc(s(&run, "smoke_version")),
        reason = match finished.get("reason").and_then(Value::as_str) {
            Some(r) if verdict != "passed" => format!("<div class=\"error-msg\">{}</div>", esc(r)),
            _ if finished.is_null() =>
                "<div class=\"error-msg\">the run ended without finishing (no run_finished event)</div>".into(),
            _ => String::new(),
        },
    );

    // recording and timeline
    body.push_str("<h2>Recording</h2>");
    let mut frames_json = serde_json::Map::new();
    for (idx, f) in &keyframes {
        if let Ok(png) = f.to_png() {
            frames_json.insert(idx.to_string(), Value::String(data_uri("image/png", &png)));
        }
    }
    body.push_str("<div class=\"player\">");
    if !keyframes.is_empty() {
        body.push_str("<figure><img id=\"frame-view\" alt=\"the screen after the selected step\"><figcaption id=\"frame-caption\"></figcaption></figure>");
    }
    match std::fs::metadata(&gif_path) {
        Ok(m) if m.len() <= EMBED_GIF_LIMIT => {
            if let Ok(bytes) = std::fs::read(&gif_path) {
                let _ = write!(
                    body,
                    "<figure><img id=\"recording\" class=\"zoom\" style=\"width:480px\" alt=\"recording\" src=\"{}\"><figcaption>the whole run ({} frames kept, {} KiB)</figcaption></figure>",
                    data_uri("image/gif", &bytes),
                    n(&recording, "frames_kept").unwrap_or(0),
                    m.len() / 1024
                );
            }
        }
        Ok(m) => {
            let _ = write!(
                body,
                "<p>recording: <a href=\"recording.gif\">recording.gif</a> ({} MiB, too large to embed)</p>",
                m.len() / 1024 / 1024
            );
        }
        Err(_) => body.push_str("<p class=\"muted\">no recording</p>"),
    }
    body.push_str("</div><ol id=\"timeline\">");
    for st in &ordered {
        let status = if st.status.is_empty() { "skipped" } else { &st.status };
        let frame = after
            .get(&st.number)
            .filter(|f| keyframes.contains_key(f))
            .map(|f| format!(" data-frame=\"{f}\""))
            .unwrap_or_default();
        let _ = write!(
            body,
            "<li><button class=\"{c}\" data-step=\"{no}\" title=\"{l}\"{frame}>{no}. {l}</button></li>",
            c = esc(status),
            no = st.number,
            l = esc(&st.label),
        );
    }
    body.push_str("</ol>");
    let _ = write!(
        body,
        "<script type=\"application/json\" id=\"frames\">{}</script>",
        Value::Object(frames_json).to_string().replace("</", "<\\/")
    );

    render_boot(&mut body, &vm_events);
    // steps
    body.push_str("<h2>Steps</h2>");
    for st in &ordered {
        render_step(&mut body, st, run_dir, &run);
    }
    if !warnings.is_empty() {
        body.push_str("<h2>Notes</h2><ul>");
        for w in &warnings {
            let _ = write!(body, "<li>{}</li>", esc(w));
        }
        body.push_str("</ul>");
    }
    render_logs(&mut body, run_dir);
    if !ready.is_null() {
        let _ = write!(
            body,
            "<p class=\"muted\">target: {}x{} desktop \"{}\", ready in {}</p>",
            n(&ready, "width").unwrap_or(0),
            n(&ready, "height").unwrap_or(0),
            esc(s(&ready, "desktop_name")),
            n(&ready, "setup_ms").map(secs).unwrap_or_default()
        );
    }
    body.push_str("</main>");
    Ok(page(&format!("smoke: {scenario} on {os}: {verdict}"), &body, true))
}

fn render_step(body: &mut String, st: &Step, run_dir: &Path, run: &Value) {
    let status = if st.status.is_empty() { "skipped" } else { &st.status };
    let open = if matches!(status, "failed" | "error") { " open" } else { "" };
    let via = if st.routines.is_empty() {
        String::new()
    } else {
        format!(" <span class=\"muted\">[{}]</span>", esc(&st.routines.join(" > ")))
    };
    let _ = write!(
        body,
        "<details class=\"step {c}\" id=\"step-{no}\"{open}><summary><span class=\"n\">{no}</span><span class=\"label\">{cl}{l}{via}</span>\
         <span class=\"badge {c}\">{c}</span><span class=\"dur\">{d}</span></summary><div class=\"body\">",
        c = esc(status),
        no = st.number,
        cl = if st.cleanup { "<span class=\"muted\">cleanup:</span> " } else { "" },
        l = esc(&st.label),
        d = secs(st.duration_ms),
    );
    if !st.source.is_empty() {
        let attempts = if st.attempts > 1 { format!(" &middot; {} attempts", st.attempts) } else { String::new() };
        let _ = write!(body, "<div class=\"source\">{} &middot; {}{attempts}</div>", esc(&st.kind), esc(&st.source));
    }
    if let Some(e) = &st.error {
        let _ = write!(body, "<div class=\"error-msg\">{}</div>", esc(e));
    }
    let mut shots: Vec<String> = Vec::new();
    let mut vlm_images = BTreeSet::new();
    for e in &st.events {
        match s(e, "event") {
            "input" => {
                let at = e.get("at").map(|a| format!(" at ({}, {})", a["x"], a["y"])).unwrap_or_default();
                let _ = write!(
                    body,
                    "<div class=\"source\">{} {}{at}</div>",
                    esc(s(e, "action")),
                    esc(&show(s(e, "detail")))
                );
            }
            "shell" => {
                let code = e.get("exit_code").map(|c| c.to_string()).unwrap_or_else(|| "none (killed)".into());
                let _ = write!(
                    body,
                    "<div class=\"check\">command (exit {})<pre>{}</pre>",
                    esc(&code),
                    esc(s(e, "command"))
                );
                for (k, t) in [("stdout", s(e, "stdout")), ("stderr", s(e, "stderr"))] {
                    if !t.trim().is_empty() {
                        let _ = write!(body, "{k}<pre>{}</pre>", esc(t));
                    }
                }
                body.push_str("</div>");
            }
            "launch" => {
                let _ = write!(
                    body,
                    "<div class=\"source\">started {} (pid {}), output in {}</div>",
                    esc(s(e, "command")),
                    e["pid"],
                    esc(s(e, "log"))
                );
            }
            "check" => render_check(body, e, st.number, run_dir, run),
            "vlm" => {
                let cached = e.get("cached").and_then(Value::as_bool).unwrap_or(false);
                let how = if cached {
                    "answered from the cache".to_string()
                } else {
                    let cost = e.get("cost").and_then(Value::as_f64).unwrap_or(0.0);
                    format!(
                        "{} ms, {} + {} tokens{}",
                        n(e, "latency_ms").unwrap_or(0),
                        n(e, "prompt_tokens").unwrap_or(0),
                        n(e, "completion_tokens").unwrap_or(0),
                        if cost > 0.0 { format!(", cost {cost:.4}") } else { String::new() }
                    )
                };
                let outcome = match (e.get("verdict").and_then(Value::as_str), e.get("point")) {
                    (Some(v), _) => format!(
                        " <span class=\"badge {c}\">{v}</span>",
                        c = if v == "yes" { "passed" } else { "failed" }
                    ),
                    (None, Some(p)) if !p.is_null() => format!(" &rarr; ({}, {})", p["x"], p["y"]),
                    _ => String::new(),
                };
                let img = e
                    .get("image_path")
                    .and_then(Value::as_str)
                    .filter(|p| vlm_images.insert(p.to_string()))
                    .and_then(|p| embed_png(&run_dir.join(p)))
                    .map(|uri| format!("<img class=\"zoom vlm-image\" alt=\"what the model saw\" src=\"{uri}\">"))
                    .unwrap_or_default();
                let _ = write!(
                    body,
                    "<div class=\"check vlm\"><div class=\"muted\">model {m} &middot; {p} &middot; {how}</div>\
                     <div>Q: {q}</div><div>A: {a}{outcome}</div>{img}</div>",
                    m = esc(s(e, "model")),
                    p = esc(s(e, "purpose")),
                    q = esc(s(e, "question")),
                    a = esc(s(e, "answer")),
                );
            }
            "screenshot" => shots.push(s(e, "path").to_string()),
            _ => {}
        }
    }
    if let Some(f) = &st.failure {
        shots.push(f.clone());
    }
    if !shots.is_empty() {
        body.push_str("<div class=\"shots\">");
        for p in shots {
            if let Some(uri) = embed_png(&run_dir.join(&p)) {
                let _ = write!(
                    body,
                    "<figure><img class=\"zoom\" alt=\"{a}\" src=\"{uri}\"><figcaption>{a}</figcaption></figure>",
                    a = esc(&p)
                );
            }
        }
        body.push_str("</div>");
    }
    body.push_str("</div></details>");
}

fn render_check(body: &mut String, e: &Value, step: u64, run_dir: &Path, run: &Value) {
    let passed = e.get("passed").and_then(Value::as_bool).unwrap_or(false);
    let class = if passed { "passed" } else { "failed" };
    let _ = write!(
        body,
        "<div class=\"check {class}\"><span class=\"mark\">{}</span> {} <span class=\"muted\">({} polls, {})</span>",
        if passed { "held" } else { "did not hold" },
        esc(s(e, "check")),
        n(e, "polls").unwrap_or(0),
        n(e, "elapsed_ms").map(secs).unwrap_or_default()
    );
    // every other field as a small table, so new check kinds show without changes here
    let skip = [
        "event",
        "time",
        "t",
        "step",
        "check",
        "passed",
        "polls",
        "elapsed_ms",
        "screenshot",
        "diff",
        "actual",
        "expected",
        "text",
    ];
    let mut rows = String::new();
    if let Some(o) = e.as_object() {
        for (k, v) in o {
            if skip.contains(&k.as_str()) || v.is_null() {
                continue;
            }
            let shown = match v {
                Value::Object(o) if o.contains_key("w") && o.contains_key("h") => {
                    format!("{},{} {}x{}", o["x"], o["y"], o["w"], o["h"])
                }
                Value::String(x) => x.clone(),
                Value::Number(x) => x
                    .as_f64()
                    .map(|f| if f.fract() == 0.0 { format!("{f}") } else { format!("{f:.4}") })
                    .unwrap_or_default(),
                other => other.to_string(),
            };
            let _ = write!(rows, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&shown));
        }
    }
    if !rows.is_empty() {
        let _ = write!(body, "<table class=\"kv\">{rows}</table>");
    }
    if let Some(t) = e.get("text").and_then(Value::as_str).filter(|t| !t.trim().is_empty()) {
        let _ = write!(body, "text read<pre>{}</pre>", esc(t));
    }
    // image comparison: expected vs actual, side by side and with a slider
    let actual = e.get("actual").and_then(Value::as_str).map(|p| run_dir.join(p));
    let expected = e
        .get("expected")
        .and_then(Value::as_str)
        .map(|p| run_dir.join(p))
        .or_else(|| e.get("reference").and_then(Value::as_str).map(PathBuf::from));
    let actual_img = actual.as_ref().and_then(|p| Frame::load_png(p).ok()).or_else(|| {
        // older runs: crop the judged frame to the compared region
        let shot = e.get("screenshot").and_then(Value::as_str)?;
        let region = e.get("found").or_else(|| e.get("region"))?;
        let r = crate::geometry::Rect::new(
            region["x"].as_u64()? as u32,
            region["y"].as_u64()? as u32,
            region["w"].as_u64()? as u32,
            region["h"].as_u64()? as u32,
        );
        Frame::load_png(&run_dir.join(shot)).ok()?.crop(r)
    });
    let expected_img = expected.as_ref().and_then(|p| Frame::load_png(p).ok());
    if let (Some(a), Some(x)) = (&actual_img, &expected_img)
        && let (Ok(ap), Ok(xp)) = (a.to_png(), x.to_png())
    {
        let (au, xu) = (data_uri("image/png", &ap), data_uri("image/png", &xp));
        let _ = write!(
            body,
            "<div class=\"pair\"><figure><img class=\"zoom\" alt=\"expected\" src=\"{xu}\"><figcaption>expected (reference)</figcaption></figure>\
                 <figure><img class=\"zoom\" alt=\"actual\" src=\"{au}\"><figcaption>actual</figcaption></figure></div>\
                 <div><div class=\"compare\"><img alt=\"expected\" src=\"{xu}\"><div class=\"overlay\"><img alt=\"actual\" src=\"{au}\"></div></div>\
                 <br><input type=\"range\" min=\"0\" max=\"100\" value=\"50\" aria-label=\"slide between expected (right) and actual (left)\"> \
                 <span class=\"muted\">slide: actual on the left, expected on the right</span></div>"
        );
    }
    if let Some(shot) = e.get("screenshot").and_then(Value::as_str)
        && let Some(uri) = embed_png(&run_dir.join(shot))
    {
        let _ = write!(
            body,
            "<figure><img class=\"zoom judged\" style=\"width:320px\" alt=\"the frame judged\" src=\"{uri}\"><figcaption>the frame it was judged on ({})</figcaption></figure>",
            esc(shot)
        );
    }
    if let Some(d) = e.get("diff").and_then(Value::as_str)
        && let Some(uri) = embed_png(&run_dir.join(d))
    {
        let _ = write!(
            body,
            "<figure><img class=\"zoom\" alt=\"difference\" src=\"{uri}\"><figcaption>where it differs</figcaption></figure>"
        );
    }
    if !passed && matches!(s(e, "kind"), "ssim" | "needle" | "image") {
        let dir = run_dir.display().to_string();
        let _ = write!(
            body,
            "<div>accept this screen as the new reference: <span class=\"cmd\">smoke approve {} --step {step}</span></div>",
            esc(&dir)
        );
    }
    let _ = run;
    body.push_str("</div>");
}

/// Boot outcomes (stage ladder, failure line, transcript tail) and rewinds to checkpoints.
fn render_boot(body: &mut String, events: &[&Value]) {
    if events.is_empty() {
        return;
    }
    body.push_str("<h2>VM</h2>");
    for e in events {
        if s(e, "event") == "rewind" {
            let _ = write!(
                body,
                "<p>step {} failed ({}); rolled back to checkpoint <b>{}</b> in {}, went on after step {}</p>",
                n(e, "step").unwrap_or(0),
                esc(s(e, "error")),
                esc(s(e, "checkpoint")),
                n(e, "duration_ms").map(secs).unwrap_or_default(),
                n(e, "to_step").unwrap_or(0)
            );
            continue;
        }
        let _ = write!(body, "<p>step {}: <b>{}</b></p><ol>", n(e, "step").unwrap_or(0), esc(s(e, "summary")));
        for h in e.get("stages").and_then(Value::as_array).into_iter().flatten() {
            let _ = write!(
                body,
                "<li>{} at {}: <code>{}</code></li>",
                esc(s(h, "stage")),
                n(h, "at_ms").map(secs).unwrap_or_default(),
                esc(s(h, "line"))
            );
        }
        body.push_str("</ol>");
        let transcript = s(e, "transcript");
        let lines: Vec<&str> = transcript.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        let _ = write!(
            body,
            "<details><summary>serial console, last lines <span class=\"muted\">({})</span></summary><pre>{}</pre></details>",
            esc(s(e, "log")),
            esc(&tail)
        );
    }
}

fn render_logs(body: &mut String, run_dir: &Path) {
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["logs", "forensics"] {
        if let Ok(rd) = std::fs::read_dir(run_dir.join(dir)) {
            let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
            v.sort();
            files.extend(v);
        }
    }
    if files.is_empty() {
        return;
    }
    body.push_str("<h2>Logs</h2>");
    for f in files {
        let text = std::fs::read(&f).map(|b| String::from_utf8_lossy(&b).to_string()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(200)..].join("\n");
        let rel = f.strip_prefix(run_dir).unwrap_or(&f).display().to_string();
        let _ = write!(
            body,
            "<details><summary>{} <span class=\"muted\">({} lines)</span></summary><pre>{}</pre></details>",
            esc(&rel),
            lines.len(),
            esc(&tail)
        );
    }
}

fn show(detail: &str) -> String {
    detail.replace('\n', "⏎")
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

fn embed_png(p: &Path) -> Option<String> {
    std::fs::read(p).ok().map(|b| data_uri("image/png", &b))
}

fn count_frames(gif: &Path) -> Option<u64> {
    let f = std::fs::File::open(gif).ok()?;
    let mut p = GifPlayback::open(std::io::BufReader::new(f)).ok()?;
    let mut n = 0;
    while let Ok(Some(_)) = p.next_frame() {
        n += 1;
    }
    Some(n)
}

/// The composited frames at the given indices.
fn extract_frames(gif: &Path, wanted: &BTreeSet<u64>) -> BTreeMap<u64, Frame> {
    let mut out = BTreeMap::new();
    let Some(&max) = wanted.iter().next_back() else { return out };
    let Ok(f) = std::fs::File::open(gif) else { return out };
    let Ok(mut p) = GifPlayback::open(std::io::BufReader::new(f)) else { return out };
    let mut i = 0u64;
    while i <= max {
        match p.next_frame() {
            Ok(Some(frame)) => {
                if wanted.contains(&i) {
                    out.insert(i, frame.frame);
                }
            }
            _ => break,
        }
        i += 1;
    }
    out
}
