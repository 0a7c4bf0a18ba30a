//! Difference heatmaps of real screens (fixtures captured from an Xvnc desktop).

use std::path::Path;

use smoke::frame::Frame;
use smoke::geometry::Rect;
use smoke::vision::diff::{DiffOptions, diff_heatmap, ssim_heatmap};
use smoke::vision::gray::Mask;
use smoke::vision::ssim::{SsimOptions, ssim_frames};

fn load(name: &str) -> Frame {
    Frame::load_png(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vision").join(name)).expect("fixture PNG")
}

/// Where "42" became "43" on the fixture screens.
const DIGIT: Rect = Rect::new(231, 89, 9, 14);

fn is_red(p: [u8; 3]) -> bool {
    p[0] > 150 && p[0] > 2 * p[1] && p[0] > 2 * p[2]
}

#[test]
fn one_changed_digit_is_boxed_and_red() {
    let base = load("screen_base.png");
    let changed = load("screen_one_char.png");
    let report = diff_heatmap(&base, &changed, &DiffOptions::default()).unwrap();
    assert_eq!(report.changed_boxes, vec![DIGIT]);
    assert!(report.changed_pixels > 10 && report.changed_pixels <= DIGIT.area());
    assert!(report.max_difference > 200);
    // Some pixel of the digit is red; everything far from it is gray.
    let red_inside = (DIGIT.y..DIGIT.bottom())
        .flat_map(|y| (DIGIT.x..DIGIT.right()).map(move |x| (x, y)))
        .filter(|&(x, y)| is_red(report.image.rgb(x, y)))
        .count();
    assert!(red_inside > 10);
    let [r, g, b] = report.image.rgb(700, 600);
    assert!(r == g && g == b, "unchanged pixels are gray");
    // The yellow outline sits just outside the digit.
    assert_eq!(report.image.rgb(DIGIT.x - 1, DIGIT.y), [255, 220, 0]);
    let dir = tempfile::tempdir().unwrap();
    report.image.save_png(&dir.path().join("diff.png")).unwrap();

    // Masked, the change disappears and the area is blue.
    let masked = DiffOptions { mask: Mask::from_rects([DIGIT]), ..Default::default() };
    let report = diff_heatmap(&base, &changed, &masked).unwrap();
    assert_eq!(report.changed_pixels, 0);
    assert!(report.changed_boxes.is_empty());
    let [r, _, b] = report.image.rgb(DIGIT.x + 4, DIGIT.y + 7);
    assert!(b > r + 40);
}

#[test]
fn moved_window_gives_a_box_around_the_window() {
    let report = diff_heatmap(&load("screen_base.png"), &load("screen_moved.png"), &DiffOptions::default()).unwrap();
    // The terminal (frame at 40,40 686x259) moved 20 px right: every change is
    // inside the union of its old and new places.
    let window = Rect::new(40, 40, 706, 259);
    assert!(!report.changed_boxes.is_empty());
    for b in &report.changed_boxes {
        assert!(window.contains_rect(b), "{b}");
    }
}

#[test]
fn ssim_heatmap_marks_the_low_windows() {
    let base = load("screen_base.png");
    let changed = load("screen_one_char.png");
    let opts =
        SsimOptions { keep_map: true, mask: Mask::from_rects([Rect::new(600, 400, 40, 40)]), ..Default::default() };
    let score = ssim_frames(&base, &changed, &opts).unwrap();
    let map = score.map.as_ref().unwrap();
    let image = ssim_heatmap(&changed, map).unwrap();
    assert!(is_red(image.rgb(DIGIT.x + 4, DIGIT.y + 7)));
    let [r, _, b] = image.rgb(610, 410);
    assert!(b > r + 40, "masked area is blue");
    let [r, g, b] = image.rgb(1000, 100);
    assert!(r == g && g == b, "similar areas stay gray");
    // A map over a region is drawn at its place.
    let region = SsimOptions { keep_map: true, region: Some(Rect::new(200, 70, 100, 50)), ..Default::default() };
    let map = ssim_frames(&base, &changed, &region).unwrap().map.unwrap();
    let image = ssim_heatmap(&changed, &map).unwrap();
    assert!(is_red(image.rgb(DIGIT.x + 4, DIGIT.y + 7)));
    assert!(ssim_heatmap(&Frame::new(100, 100), &map).is_err());
}
