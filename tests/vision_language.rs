//! The scenario language of the visual checks: needles, screen waits, fuzzy
//! OCR, SSIM regions and colour decode into the typed model, and every
//! mistake is reported before the run with its position.

use std::path::{Path, PathBuf};

use smoke::scenario::diagnostic::Diagnostics;
use smoke::scenario::model::{Action, Check, Target, TextMatch};
use smoke::scenario::plan::{self, Plan, PlanOptions, TargetInfo, UpdateReferences};
use smoke::scenario::source::SourceMap;
use smoke::secrets::SecretStore;
use smoke::vision::ocr::OcrVariant;

fn opts() -> PlanOptions {
    PlanOptions {
        target: TargetInfo {
            name: "local".into(),
            family: "linux".into(),
            desktop: None,
            backend: "local-desktop".into(),
            capabilities: vec!["vnc", "shell", "launch"],
            vars: Vec::new(),
        },
        overrides: Vec::new(),
        update_references: UpdateReferences::None,
        secrets: SecretStore::default(),
        vlm: false,
    }
}

/// A project with the dialog needle in `needles/linux/` (the family level) and
/// a reference image.
fn project(scenario: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vision");
    std::fs::create_dir_all(dir.path().join("needles/linux")).unwrap();
    std::fs::copy(data.join("dialog_a.png"), dir.path().join("needles/linux/dialog.png")).unwrap();
    std::fs::write(
        dir.path().join("needles/linux/dialog.json"),
        r#"{"areas": [{"rect": [300, 220, 278, 36]}], "points": [{"id": "ok", "at": [335, 272]}, {"id": "no", "at": [408, 272]}]}"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("reference/s")).unwrap();
    std::fs::copy(data.join("button_red.png"), dir.path().join("reference/s/screen.png")).unwrap();
    std::fs::create_dir_all(dir.path().join("scenarios")).unwrap();
    let file = dir.path().join("scenarios/s.yaml");
    std::fs::write(&file, scenario).unwrap();
    (dir, file)
}

fn load(file: &Path) -> Result<Plan, Diagnostics> {
    plan::load(file, &opts(), &mut SourceMap::new())
}

fn messages(d: &Diagnostics) -> Vec<String> {
    d.items
        .iter()
        .map(|i| format!("{}:{} {} | {}", i.span.line, i.span.col, i.message, i.help.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn visual_steps_decode_into_the_typed_model() {
    let (dir, file) = project(
        r#"steps:
  - launch: {command: [xmessage, hi], until: {needle: dialog}}
  - click: {needle: dialog, point: "no", offset: [2, -1]}
    wait_change: {region: [0, 0, 100, 100], min_pixels: 5}
    wait_still: {for: 1s, tolerance: 4}
  - wait_for: {needle: {name: dialog, threshold: 0.9, region: [200, 150, 500, 300]}}
  - verify: {ocr: {text: "Delete the file", max_distance: 2, case_sensitive: false, variants: [inverted, raw]}}
  - verify:
      ssim:
        reference: screen.png
        region: [100, 100, 446, 167]
        colour: true
        regions: [{region: [120, 140, 200, 60], threshold: 0.99, name: ok}, {region: [300, 140, 200, 60]}]
  - wait_change: true
  - wait_still: 2s
"#,
    );
    let plan = load(&file).unwrap_or_else(|d| panic!("{:#?}", messages(&d)));
    let needles = dir.path().join("needles/linux/dialog.json");
    match &plan.steps[0].step.action {
        Action::Launch(l) => match &l.until.as_ref().unwrap().check {
            Check::Needle(n) => assert_eq!(n.needle.path.as_deref(), Some(needles.as_path())),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    let click = &plan.steps[1].step;
    match &click.action {
        Action::Click(c) => match &c.target {
            Target::Needle { point, offset, needle, .. } => {
                assert_eq!((point.as_deref(), *offset), (Some("no"), (2, -1)));
                assert!(needle.path.is_some());
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    let (change, still) = (click.wait_change.as_ref().unwrap(), click.wait_still.as_ref().unwrap());
    assert_eq!((change.min_pixels, change.region.map(|r| r.w)), (5, Some(100)));
    assert_eq!((still.quiet.as_millis(), still.tolerance), (1000, 4));
    match &plan.steps[2].step.expect[0].check {
        Check::Needle(n) => assert_eq!(n.threshold, Some(0.9)),
        other => panic!("{other:?}"),
    }
    match &plan.steps[3].step.expect[0].check {
        Check::Ocr(o) => {
            assert!(matches!(&o.query, TextMatch::Fuzzy { max_distance: 2, case_sensitive: false, .. }));
            assert_eq!(o.variants, vec![OcrVariant::Inverted, OcrVariant::Raw]);
        }
        other => panic!("{other:?}"),
    }
    match &plan.steps[4].step.expect[0].check {
        Check::Ssim(s) => {
            assert!(s.colour);
            assert_eq!(s.regions.len(), 2);
            assert_eq!((s.regions[0].threshold, s.regions[1].threshold), (0.99, 0.98));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(plan.steps[5].step.action, Action::ScreenWait) && plan.steps[5].step.wait_change.is_some());
    assert_eq!(plan.steps[6].step.wait_still.as_ref().map(|w| w.quiet.as_secs()), Some(2));
    assert_eq!(plan.steps[6].label, "wait until still for 2000ms");
}

#[test]
fn visual_mistakes_are_reported_with_positions() {
    let (_dir, file) = project(
        r#"steps:
  - verify: {ocr: {regex: "a+", max_distance: 1}}
  - verify: {ocr: {text: "ab", max_distance: 2}}
  - verify: {ocr: {text: "abc", variants: [raw, inverse]}}
  - click: {text: OK, point: ok}
  - click: {needle: dialog}
  - click: {needle: dialog, point: yes}
  - verify: {needle: missing}
  - wait_change: false
  - verify: {ssim: {reference: screen.png, region: [0, 0, 100, 100], regions: [{region: [90, 90, 20, 20]}]}}
  - wait_still: {region: [0, 0, 10, 10]}
"#,
    );
    let d = load(&file).unwrap_err();
    let m = messages(&d);
    let has = |line: u32, text: &str| m.iter().any(|s| s.starts_with(&format!("{line}:")) && s.contains(text));
    assert!(has(2, "'max_distance' applies to 'text', not to 'regex'"), "{m:#?}");
    assert!(has(3, "max_distance 2 would let any text of that length match"), "{m:#?}");
    assert!(
        has(4, "unknown OCR variant 'inverse'") && m.iter().any(|s| s.contains("did you mean 'inverted'")),
        "{m:#?}"
    );
    assert!(has(5, "'point' names a click point of a needle target"), "{m:#?}");
    assert!(
        has(6, "needle 'dialog' has several click points: name one")
            && m.iter().any(|s| s.contains("its points: ok, no")),
        "{m:#?}"
    );
    assert!(has(7, "needle 'dialog' has no click point 'yes'"), "{m:#?}");
    assert!(
        has(8, "needle 'missing' not found") && m.iter().any(|s| s.contains("needles/s/local/missing.json")),
        "{m:#?}"
    );
    assert!(has(9, "wait_change: false waits for nothing"), "{m:#?}");
    assert!(has(10, "lies outside the check's region"), "{m:#?}");
    assert!(has(11, "'for'"), "{m:#?}");
}
