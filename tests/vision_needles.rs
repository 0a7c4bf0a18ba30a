//! Needles (PNG + JSON areas) on real screens captured from an Xvnc desktop
//! (tests/data/vision/capture_more.sh, capture_fixtures.sh): found after the
//! window moved, not fooled by a similar dialog, exclusions, several areas,
//! and the openQA import and `smoke image` verbs through the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use smoke::frame::Frame;
use smoke::geometry::{Point, Rect};
use smoke::vision::needle::{
    AreaKind, AreaSpec, NeedleImage, NeedleOptions, NeedleSpec, PointSpec, SCHEMA, find_needle, save,
};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vision").join(name)
}

fn load(name: &str) -> Frame {
    Frame::load_png(&data(name)).expect("fixture PNG")
}

fn area(kind: AreaKind, rect: [u32; 4]) -> AreaSpec {
    AreaSpec { kind, rect, threshold: None, margin: None, max_block_difference: None, text: None, max_distance: None }
}

/// The xmessage dialog of dialog_a.png: its message box and its button row,
/// with click points on both buttons.
fn dialog_spec() -> NeedleSpec {
    NeedleSpec {
        schema: Some(SCHEMA.into()),
        areas: vec![area(AreaKind::Match, [300, 220, 278, 36]), area(AreaKind::Match, [301, 257, 145, 30])],
        points: vec![
            PointSpec { id: Some("delete".into()), at: [335, 272] },
            PointSpec { id: Some("cancel".into()), at: [408, 272] },
        ],
        tags: vec![],
        source: None,
    }
}

fn dialog() -> NeedleImage {
    NeedleImage::from_parts("dialog".into(), "dialog.json".into(), dialog_spec(), load("dialog_a.png")).unwrap()
}

#[test]
fn needle_is_found_where_it_was_and_after_the_window_moved() {
    let needle = dialog();
    let here = find_needle(&load("dialog_a.png"), &needle, &NeedleOptions::default()).unwrap();
    assert!(here.passed(), "{}", here.describe());
    assert_eq!(here.offset, (0, 0));
    assert!(here.areas.iter().all(|a| a.score > 0.999 && a.block_difference == Some(0.0)));
    // The dialog moved by (37, 23): within the 50 px margin of the first area.
    let moved = load("dialog_a_moved.png");
    let there = find_needle(&moved, &needle, &NeedleOptions::default()).unwrap();
    assert!(there.passed(), "{}", there.describe());
    assert_eq!(there.offset, (37, 23));
    assert_eq!(there.areas[0].searched, "margin");
    assert_eq!(there.areas[1].searched, "displaced");
    assert_eq!(there.displace(needle.point(Some("cancel")).unwrap(), moved.bounds()), Point::new(445, 295));
    // With a margin too small for the move, the whole screen is searched.
    let mut tight = dialog_spec();
    tight.areas[0].margin = Some(10);
    let tight = NeedleImage::from_parts("t".into(), "t.json".into(), tight, load("dialog_a.png")).unwrap();
    let far = find_needle(&moved, &tight, &NeedleOptions::default()).unwrap();
    assert!(far.passed(), "{}", far.describe());
    assert_eq!((far.offset, far.areas[0].searched), ((37, 23), "screen"));
}

#[test]
fn a_similar_but_different_dialog_does_not_match() {
    // "report-2025.txt" instead of "report-2024.txt": one digit.
    let needle = dialog();
    let other = find_needle(&load("dialog_b.png"), &needle, &NeedleOptions::default()).unwrap();
    eprintln!("{}", other.describe());
    assert!(!other.passed());
    let text = &other.areas[0];
    assert!(!text.passed);
    // The best candidate is reported: the same place, a high ZNCC, failed by the pixel check.
    assert_eq!(text.found, Rect::new(300, 220, 278, 36));
    assert!(text.score > 0.95, "ZNCC alone would accept it: {}", text.score);
    assert!(text.block_difference.unwrap() > 24.0);
    // Excluding the year makes the two dialogs the same needle.
    let mut spec = dialog_spec();
    spec.areas.push(area(AreaKind::Exclude, [520, 228, 16, 18]));
    let lenient = NeedleImage::from_parts("l".into(), "l.json".into(), spec, load("dialog_a.png")).unwrap();
    let m = find_needle(&load("dialog_b.png"), &lenient, &NeedleOptions::default()).unwrap();
    assert!(m.passed(), "{}", m.describe());
    assert!(m.areas[0].score > 0.999, "{}", m.describe());
}

#[test]
fn every_match_area_must_pass() {
    // Terminal text and a calculator key; on screen_moved only the terminal moved
    // (20 px): the key is not at its displaced place.
    let base = load("screen_base.png");
    let mut spec = NeedleSpec {
        schema: Some(SCHEMA.into()),
        areas: vec![area(AreaKind::Match, [40, 60, 300, 50]), area(AreaKind::Match, [481, 525, 57, 38])],
        points: vec![],
        tags: vec![],
        source: None,
    };
    spec.areas[1].margin = Some(5);
    let needle = NeedleImage::from_parts("two".into(), "two.json".into(), spec, base.clone()).unwrap();
    assert!(find_needle(&base, &needle, &NeedleOptions::default()).unwrap().passed());
    let m = find_needle(&load("screen_moved.png"), &needle, &NeedleOptions::default()).unwrap();
    eprintln!("{}", m.describe());
    assert_eq!(m.offset, (20, 0));
    assert!(m.areas[0].passed && !m.areas[1].passed && !m.passed());
    // Colour matters: the red status line turned blue.
    let line = NeedleSpec {
        schema: Some(SCHEMA.into()),
        areas: vec![area(AreaKind::Match, [40, 108, 240, 22])],
        points: vec![],
        tags: vec![],
        source: None,
    };
    let needle = NeedleImage::from_parts("line".into(), "line.json".into(), line, base).unwrap();
    assert!(!find_needle(&load("screen_colour.png"), &needle, &NeedleOptions::default()).unwrap().passed());
}

#[test]
fn needle_files_load_and_bad_ones_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let json = save(dir.path(), "dialog", &dialog_spec(), &load("dialog_a.png")).unwrap();
    let n = NeedleImage::load(&json).unwrap();
    assert_eq!(n.spec, dialog_spec());
    assert_eq!(n.point(Some("delete")), Some(Point::new(335, 272)));
    assert_eq!(n.point(None), None, "several points need an id");
    std::fs::write(dir.path().join("bad.json"), "{\"areas\": [{\"type\": \"match\", \"rect\": [0, 0, 5]}]}").unwrap();
    std::fs::copy(data("dialog_a.png"), dir.path().join("bad.png")).unwrap();
    let err = NeedleImage::load(&dir.path().join("bad.json")).unwrap_err().to_string();
    assert!(err.contains("bad.json:1:"), "{err}");
    std::fs::write(dir.path().join("bad.json"), r#"{"areas": [{"type": "exclude", "rect": [0, 0, 5, 5]}]}"#).unwrap();
    let err = NeedleImage::load(&dir.path().join("bad.json")).unwrap_err().to_string();
    assert!(err.contains("at least one area of type \"match\""), "{err}");
    // The black desktop has no structure: a flat area is refused.
    std::fs::write(dir.path().join("bad.json"), r#"{"areas": [{"rect": [700, 500, 50, 50]}]}"#).unwrap();
    let err = NeedleImage::load(&dir.path().join("bad.json")).unwrap_err().to_string();
    assert!(err.contains("flat"), "{err}");
}

fn smoke() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_smoke"));
    c.env("SMOKE_LOG", "warn");
    c
}

#[test]
fn openqa_needles_import_and_match_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("openqa");
    std::fs::create_dir_all(&src).unwrap();
    // An openQA needle: areas with xpos/ypos/width/height, a match percentage,
    // a click point relative to its area, an exclude area.
    std::fs::write(
        src.join("delete-dialog.json"),
        r#"{"area": [
            {"xpos": 300, "ypos": 220, "width": 278, "height": 36, "type": "match", "match": 95},
            {"xpos": 301, "ypos": 257, "width": 145, "height": 30, "type": "match",
             "click_point": {"xpos": 34, "ypos": 15}},
            {"xpos": 520, "ypos": 228, "width": 16, "height": 18, "type": "exclude"}
        ], "tags": ["delete-dialog"], "properties": []}"#,
    )
    .unwrap();
    std::fs::copy(data("dialog_a.png"), src.join("delete-dialog.png")).unwrap();
    let out = smoke()
        .current_dir(dir.path())
        .args(["needle", "import", "openqa/delete-dialog.json", "--to", "needles"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = dir.path().join("needles/delete-dialog.json");
    let n = NeedleImage::load(&json).unwrap();
    assert_eq!(n.spec.areas[0].threshold, Some(0.95));
    assert_eq!(n.spec.points, vec![PointSpec { id: None, at: [335, 272] }]);

    let matched =
        smoke().args(["image", "match", "--json"]).arg(data("dialog_a_moved.png")).arg(&json).output().unwrap();
    assert_eq!(matched.status.code(), Some(0), "{}", String::from_utf8_lossy(&matched.stderr));
    let v: serde_json::Value = serde_json::from_slice(&matched.stdout).unwrap();
    assert_eq!(v["found"], true);
    assert_eq!(v["offset"], serde_json::json!([37, 23]));
    assert_eq!((v["points"][0]["x"].as_u64(), v["points"][0]["y"].as_u64()), (Some(372), Some(295)));
    // The year is excluded, so the other dialog matches this needle too...
    let other = smoke().args(["image", "match"]).arg(data("dialog_b.png")).arg(&json).output().unwrap();
    assert_eq!(other.status.code(), Some(0));
    // ...but a plain PNG of the message box does not.
    let crop = load("dialog_a.png").crop(Rect::new(300, 220, 278, 36)).unwrap();
    let png = dir.path().join("message.png");
    crop.save_png(&png).unwrap();
    let plain = smoke().args(["image", "match"]).arg(data("dialog_b.png")).arg(&png).output().unwrap();
    let stdout = String::from_utf8_lossy(&plain.stdout);
    assert_eq!(plain.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("found: no") && stdout.contains("at 300,220 278x36"), "{stdout}");
    // A broken openQA file is refused with the reason.
    std::fs::write(src.join("broken.json"), r#"{"area": [{"xpos": 0, "type": "ocr"}]}"#).unwrap();
    let out = smoke().current_dir(dir.path()).args(["needle", "import", "openqa/broken.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no match area"));
}

#[test]
fn image_ssim_verb_prints_scores_and_writes_the_heatmap() {
    let dir = tempfile::tempdir().unwrap();
    let heat = dir.path().join("heat.png");
    let out = smoke()
        .args(["image", "ssim", "--region", "120,140,200,60", "--threshold", "0.98", "--colour", "--diff"])
        .arg(&heat)
        .arg(data("button_red.png"))
        .arg(data("button_green.png"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("channels: red 0.69") && stdout.contains("(FAILED)"), "{stdout}");
    let h = Frame::load_png(&heat).unwrap();
    assert_eq!((h.width(), h.height()), (1280, 720));
    // Grayscale passes: the change is invisible in luma.
    let out = smoke()
        .args(["image", "ssim", "--region", "120,140,200,60", "--threshold", "0.98"])
        .arg(data("button_red.png"))
        .arg(data("button_green.png"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let bad = smoke()
        .args(["image", "ssim", "--region", "1,2,3"])
        .arg(data("button_red.png"))
        .arg(data("button_green.png"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
