//! The runner's SSIM check as a scenario configures it (region, per-region
//! thresholds, colour, mask), judged on real screen pairs captured from an
//! Xvnc desktop: pairs that must match and pairs that must not, with the
//! evidence a failed check leaves (heatmap, actual image, every score).

use std::path::{Path, PathBuf};

use smoke::frame::Frame;
use smoke::geometry::Rect;
use smoke::runner::checks::{Checker, Evaluation};
use smoke::scenario::model::{Check, Expect, Reference, SsimCheck, SsimRegion, SsimWindowKind};
use smoke::scenario::plan::UpdateReferences;
use smoke::scenario::source::Span;

fn load(name: &str) -> Frame {
    Frame::load_png(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vision").join(name)).expect("fixture")
}

/// The terminal window on the screen_* fixtures, and its "line 42" row.
const TERMINAL: Rect = Rect::new(40, 40, 686, 259);
const LINE: Rect = Rect::new(40, 85, 300, 22);

fn check(reference: PathBuf, region: Rect, regions: Vec<SsimRegion>, colour: bool) -> Expect {
    Expect {
        check: Check::Ssim(SsimCheck {
            reference: Reference { name: "ref.png".into(), span: Span::command_line("test"), path: Some(reference) },
            region: Some(region),
            mask: Vec::new(),
            threshold: 0.98,
            window: SsimWindowKind::Gaussian,
            colour,
            regions,
        }),
        negate: false,
        span: Span::command_line("test"),
    }
}

/// Judge `screen` against the `region` of `base` saved as the reference.
fn judge(base: &str, screen: &str, region: Rect, regions: Vec<SsimRegion>, colour: bool) -> Evaluation {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("ref.png");
    load(base).crop(region).unwrap().save_png(&reference).unwrap();
    let expect = check(reference, region, regions, colour);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(Checker::new(UpdateReferences::None).evaluate(&expect, &load(screen)))
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn line_region() -> Vec<SsimRegion> {
    vec![SsimRegion { name: Some("line".into()), region: LINE, threshold: 0.98 }]
}

#[test]
fn pairs_that_must_match_and_pairs_that_must_not() {
    // The same screen re-rendered: every score 1.
    let same = judge("screen_base.png", "screen_base_again.png", TERMINAL, line_region(), true);
    assert!(same.passed && same.diff.is_none(), "{:?}", same.scores);
    assert!(same.scores.iter().filter(|s| s.threshold.is_some()).all(|s| s.score == 1.0), "{:?}", same.scores);
    assert!(same.actual.is_some(), "the compared image is kept for approve");

    // One character: the whole window barely moves, its line fails.
    let one = judge("screen_base.png", "screen_one_char.png", TERMINAL, line_region(), false);
    let area = one.scores.iter().find(|s| s.name == "area").unwrap();
    let line = one.scores.iter().find(|s| s.name == "line").unwrap();
    assert!(area.passed && area.score > 0.99, "{area:?}");
    assert!(!line.passed && line.score < 0.98, "{line:?}");
    assert!(!one.passed && one.note.as_deref().unwrap().contains("line"), "{:?}", one.note);
    let diff = one.diff.expect("a heatmap for the failed comparison");
    assert_eq!((diff.width(), diff.height()), (TERMINAL.w, TERMINAL.h));
    // The heatmap is red where "42" became "43" (191..200 x 49..63 in the window).
    let red = (49..63).flat_map(|y| (191..200).map(move |x| (x, y))).filter(|&(x, y)| {
        let [r, g, b] = diff.rgb(x, y);
        r > 150 && r > 2 * g && r > 2 * b
    });
    assert!(red.count() > 20);

    // One colour: the red status line turned blue.
    let status = Rect::new(40, 100, 300, 40);
    let colour = judge("screen_base.png", "screen_colour.png", status, Vec::new(), true);
    assert!(!colour.passed, "{:?}", colour.scores);
    let names: Vec<&str> = colour.scores.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["area", "red", "green", "blue", "worst window"]);

    // The window moved by 20 px.
    let moved = judge("screen_base.png", "screen_moved.png", TERMINAL, Vec::new(), false);
    assert!(!moved.passed && moved.score.unwrap() < 0.9, "{:?}", moved.score);
}

#[test]
fn a_colour_only_change_fails_the_colour_check_only() {
    let button = Rect::new(100, 100, 446, 167);
    let gray = judge("button_red.png", "button_green.png", button, Vec::new(), false);
    assert!(gray.passed, "grayscale SSIM cannot see it: {:?}", gray.scores);
    let colour = judge("button_red.png", "button_green.png", button, Vec::new(), true);
    assert!(!colour.passed, "{:?}", colour.scores);
    let red = colour.scores.iter().find(|s| s.name == "red").unwrap();
    assert!(!red.passed && red.score < 0.98, "{red:?}");
    assert!(colour.diff.is_some());
}
