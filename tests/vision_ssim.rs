//! SSIM against stored scikit-image values, and the behaviour of masks and
//! regions on real screens captured from an Xvnc desktop
//! (tests/data/vision/capture_fixtures.sh; references from make_reference.py).

use std::path::{Path, PathBuf};

use smoke::frame::Frame;
use smoke::geometry::Rect;
use smoke::vision::gray::Mask;
use smoke::vision::ssim::{SsimError, SsimOptions, SsimWindow, ssim_frames, ssim_frames_colour};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vision")
}

fn load(name: &str) -> Frame {
    Frame::load_png(&data_dir().join(name)).expect("fixture PNG")
}

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(data_dir().join("ssim_reference.json")).expect("reference JSON");
    serde_json::from_str(&text).expect("valid JSON")
}

fn options_for(case: &serde_json::Value) -> SsimOptions {
    let window = &case["window"];
    let window = if let Some(sigma) = window["gaussian"].as_f64() {
        SsimWindow::Gaussian { sigma }
    } else {
        SsimWindow::Box { size: window["box"].as_u64().expect("box size") as u32 }
    };
    let region = case["region"].as_array().map(|r| {
        let v: Vec<u32> = r.iter().map(|n| n.as_u64().expect("number") as u32).collect();
        Rect::new(v[0], v[1], v[2], v[3])
    });
    SsimOptions {
        window,
        region,
        sample_covariance: case["sample_covariance"].as_bool().expect("bool"),
        keep_map: true,
        ..Default::default()
    }
}

#[test]
fn scores_and_maps_match_scikit_image() {
    let reference = reference();
    let cases = reference["cases"].as_array().expect("cases");
    assert!(cases.len() >= 60);
    let mut worst_score_error = 0f64;
    let mut worst_map_error = 0f64;
    for case in cases.iter().filter(|c| c.get("channels").is_none()) {
        let a = load(case["a"].as_str().unwrap());
        let b = load(case["b"].as_str().unwrap());
        let options = options_for(case);
        let got = ssim_frames(&a, &b, &options).expect("ssim");
        let expected = case["score"].as_f64().unwrap();
        let error = (got.score - expected).abs();
        assert!(error < 1e-3, "{case}: got {} expected {expected}", got.score);
        worst_score_error = worst_score_error.max(error);
        let map = got.map.expect("map");
        for sample in case["map_samples"].as_array().unwrap() {
            let (x, y, v) =
                (sample[0].as_u64().unwrap() as u32, sample[1].as_u64().unwrap() as u32, sample[2].as_f64().unwrap());
            let value = map.get(x, y).expect("sample inside the map") as f64;
            let error = (value - v).abs();
            assert!(error < 1e-3, "{case}: map({x},{y}) = {value}, expected {v}");
            worst_map_error = worst_map_error.max(error);
        }
    }
    eprintln!("largest score error {worst_score_error:e}, largest map error {worst_map_error:e}");
    // Much tighter than the 1e-3 contract: whole-screen scores of small changes
    // differ from 1 only in the fifth decimal.
    assert!(worst_score_error < 1e-5, "score error {worst_score_error}");
    assert!(worst_map_error < 1e-4, "map error {worst_map_error}");
}

#[test]
fn identical_screens_score_one_and_changes_score_lower() {
    let base = load("screen_base.png");
    let opts = SsimOptions::default();
    assert_eq!(ssim_frames(&base, &load("screen_base_again.png"), &opts).unwrap().score, 1.0);
    let one_char = ssim_frames(&base, &load("screen_one_char.png"), &opts).unwrap();
    let colour = ssim_frames(&base, &load("screen_colour.png"), &opts).unwrap();
    let moved = ssim_frames(&base, &load("screen_moved.png"), &opts).unwrap();
    for s in [&one_char, &colour, &moved] {
        assert!(s.score < 1.0);
    }
    assert!(moved.score < one_char.score && moved.score < colour.score);
    // The worst window points at the change: "42" became "43" at about x 231..240, y 89..103.
    let (at, value) = one_char.worst.unwrap();
    assert!(value < 0.5, "worst window {value}");
    assert!(Rect::new(221, 79, 30, 35).contains(at), "worst window at {at}");
    // Over the changed text line alone the change is plain.
    let line = SsimOptions { region: Some(Rect::new(40, 85, 300, 22)), ..Default::default() };
    assert!(ssim_frames(&base, &load("screen_one_char.png"), &line).unwrap().score < 0.98);
}

#[test]
fn masked_change_is_irrelevant_and_does_not_leak() {
    let base = load("screen_base.png");
    let changed = load("screen_one_char.png");
    // The digit that changed covers x 231..240, y 89..103 (see the fixture diff).
    let digit = Rect::new(231, 89, 9, 14);
    let opts = SsimOptions { mask: Mask::from_rects([digit]), keep_map: true, ..Default::default() };
    let masked = ssim_frames(&base, &changed, &opts).unwrap();
    assert_eq!(masked.score, 1.0, "a masked change must not lower the score");
    let unmasked = ssim_frames(&base, &changed, &SsimOptions::default()).unwrap();
    // The dilated mask removes (9+10)x(14+10) map pixels.
    assert_eq!(unmasked.compared_pixels - masked.compared_pixels, 19 * 24);
    // Without dilation the neighbours' windows would still see the change.
    let map = unmasked.map.unwrap_or_else(|| {
        let o = SsimOptions { keep_map: true, ..Default::default() };
        ssim_frames(&base, &changed, &o).unwrap().map.unwrap()
    });
    assert!(map.get(229, 95).unwrap() < 0.999, "a neighbour of the digit sees the change");
    // Masking the identical screen's same rectangle also gives 1.
    let same = ssim_frames(&base, &base, &opts).unwrap();
    assert_eq!(same.score, 1.0);
    // A mask elsewhere does not hide the change.
    let elsewhere = SsimOptions { mask: Mask::from_rects([Rect::new(600, 400, 50, 50)]), ..Default::default() };
    assert!(ssim_frames(&base, &changed, &elsewhere).unwrap().score < 1.0);
}

#[test]
fn different_sizes_and_bad_regions_are_errors() {
    let base = load("screen_base.png");
    let small = base.crop(Rect::new(0, 0, 640, 360)).unwrap();
    assert!(matches!(ssim_frames(&base, &small, &SsimOptions::default()), Err(SsimError::SizeMismatch { .. })));
    let outside = SsimOptions { region: Some(Rect::new(2000, 0, 10, 10)), ..Default::default() };
    assert!(matches!(ssim_frames(&base, &base, &outside), Err(SsimError::RegionOutside { .. })));
    let tiny = SsimOptions { region: Some(Rect::new(0, 0, 10, 10)), ..Default::default() };
    assert!(matches!(ssim_frames(&base, &base, &tiny), Err(SsimError::TooSmall { .. })));
}

#[test]
fn colour_mode_matches_scikit_image_per_channel_and_catches_a_hue_change() {
    let reference = reference();
    let cases: Vec<&serde_json::Value> =
        reference["cases"].as_array().unwrap().iter().filter(|c| c.get("channels").is_some()).collect();
    assert!(cases.len() >= 4);
    for case in &cases {
        let a = load(case["a"].as_str().unwrap());
        let b = load(case["b"].as_str().unwrap());
        let options = SsimOptions { keep_map: false, ..options_for(case) };
        let got = ssim_frames_colour(&a, &b, &options).expect("colour ssim");
        let want: Vec<f64> = case["channels"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let channels = got.channels.expect("channel scores");
        for c in 0..3 {
            assert!((channels[c] - want[c]).abs() < 1e-5, "{case}: channel {c} {} vs {}", channels[c], want[c]);
        }
        assert_eq!(got.score, channels.iter().copied().fold(f64::INFINITY, f64::min));
        let gray = ssim_frames(&a, &b, &options).unwrap().score;
        assert!((gray - case["gray"].as_f64().unwrap()).abs() < 1e-5);
    }
    // The red and the green button have the same luma: grayscale SSIM is blind
    // to the change, the colour mode is not.
    let (red, green) = (load("button_red.png"), load("button_green.png"));
    let button = SsimOptions { region: Some(Rect::new(120, 140, 200, 60)), ..Default::default() };
    // (only anti-aliased edge pixels of the label differ in luma, by one level)
    let gray = ssim_frames(&red, &green, &button).unwrap().score;
    assert!(gray > 0.9999, "{gray}");
    let colour = ssim_frames_colour(&red, &green, &button).unwrap();
    assert!(colour.score < 0.8, "{:?}", colour.channels);
    // The same screen re-rendered still scores 1 in colour.
    let base = load("screen_base.png");
    let again = ssim_frames_colour(&base, &load("screen_base_again.png"), &SsimOptions::default()).unwrap();
    assert_eq!(again.score, 1.0);
}
