//! Template search on real screens captured from an Xvnc desktop
//! (tests/data/vision/capture_fixtures.sh): exact finds, near misses, colour and
//! flat needles.

use std::path::Path;

use smoke::frame::Frame;
use smoke::geometry::Rect;
use smoke::vision::template::{BLOCK_DIFFERENCE_LIMIT, MatchOptions, Needle, TemplateError, find_template};

fn load(name: &str) -> Frame {
    Frame::load_png(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vision").join(name)).expect("fixture PNG")
}

/// galculator's "7" button on the fixture screens.
const BUTTON_7: Rect = Rect::new(481, 525, 57, 38);
/// The text "line 42: ready" in the terminal.
const LINE_42: Rect = Rect::new(160, 86, 160, 22);

#[test]
fn needle_is_found_where_it_was_cut_and_after_the_window_moved() {
    let base = load("screen_base.png");
    let moved = load("screen_moved.png");
    let needle = Needle::from_screen(&base, Rect::new(40, 40, 400, 100)).unwrap();
    let opts = MatchOptions::default();
    let here = find_template(&base, &needle, &opts).unwrap();
    assert!(here.found && here.score > 0.999, "{here:?}");
    assert_eq!(here.rect, Rect::new(40, 40, 400, 100));
    // The terminal moved 20 px to the right.
    let there = find_template(&moved, &needle, &opts).unwrap();
    assert!(there.found, "{there:?}");
    assert_eq!(there.rect, Rect::new(60, 40, 400, 100));
    assert_eq!(there.click_point(), smoke::geometry::Point::new(260, 90));
}

#[test]
fn similar_but_different_needles_stay_below_the_threshold() {
    let base = load("screen_base.png");
    let opts = MatchOptions::default();
    // "line 42: ready" against a screen where it reads "line 43: ready".
    let needle = Needle::from_screen(&base, LINE_42).unwrap();
    let same = find_template(&base, &needle, &opts).unwrap();
    assert!(same.found && same.score > 0.999);
    let other = find_template(&load("screen_one_char.png"), &needle, &opts).unwrap();
    eprintln!("one character changed: {other:?}");
    assert!(!other.found, "{other:?}");
    assert_eq!(other.rect, LINE_42, "still the best place");
    assert!(other.block_difference > BLOCK_DIFFERENCE_LIMIT);
    // ZNCC alone would accept it.
    assert!(other.score > opts.threshold);
    // galculator's "7" button, searched where only the other buttons are.
    let seven = Needle::from_screen(&base, BUTTON_7).unwrap();
    let keypad_without_7 = Rect::new(544, 480, 260, 210);
    let opts_region = MatchOptions { region: Some(keypad_without_7), ..Default::default() };
    let lookalike = find_template(&base, &seven, &opts_region).unwrap();
    eprintln!("other buttons: {lookalike:?}");
    assert!(!lookalike.found, "{lookalike:?}");
    assert!(keypad_without_7.contains_rect(&lookalike.rect));
    // In the whole keypad the 7 itself wins.
    let keypad = MatchOptions { region: Some(Rect::new(474, 480, 330, 210)), ..Default::default() };
    let real = find_template(&base, &seven, &keypad).unwrap();
    assert!(real.found, "{real:?}");
    assert_eq!(real.rect, BUTTON_7);
}

#[test]
fn colour_change_is_caught_although_the_shape_matches() {
    // The status line is red on the base screen and blue on the other one.
    let base = load("screen_base.png");
    let blue = load("screen_colour.png");
    let needle = Needle::from_screen(&base, Rect::new(40, 108, 240, 22)).unwrap();
    let m = find_template(&blue, &needle, &MatchOptions::default()).unwrap();
    eprintln!("recoloured: {m:?}");
    assert_eq!(m.rect, Rect::new(40, 108, 240, 22), "same place");
    assert!(m.score > 0.9, "the shape still correlates: {}", m.score);
    assert!(m.block_difference > 2.0 * BLOCK_DIFFERENCE_LIMIT, "{}", m.block_difference);
    assert!(!m.found);
    let colour_blind = MatchOptions { max_block_difference: None, ..Default::default() };
    assert!(find_template(&blue, &needle, &colour_blind).unwrap().found);
}

#[test]
fn flat_needle_is_rejected_with_a_clear_error() {
    let base = load("screen_base.png");
    // The black desktop below the terminal.
    let err = Needle::from_screen(&base, Rect::new(100, 400, 200, 120)).unwrap_err();
    assert_eq!(err, TemplateError::FlatNeedle { luma: 0 });
    assert!(err.to_string().contains("flat"));
    // The white terminal background is flat too.
    assert!(matches!(
        Needle::from_screen(&base, Rect::new(400, 150, 100, 60)),
        Err(TemplateError::FlatNeedle { luma: 255 })
    ));
}

#[test]
fn random_crops_are_found_exactly() {
    // Deterministic pseudo-random needles of many sizes, including awkward ones
    // (mostly flat with one edge, periodic button rows); flat crops are skipped.
    let mut state = 0x5eed_u64;
    let mut next = |n: u32| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) % n as u64) as u32
    };
    for name in ["screen_base.png", "screen_moved.png"] {
        let screen = load(name);
        let (mut tried, mut exact) = (0, 0);
        let mut misses = Vec::new();
        while tried < 25 {
            let (w, h) = (12 + next(250), 12 + next(150));
            let rect = Rect::new(next(screen.width() - w), next(screen.height() - h), w, h);
            let Ok(needle) = Needle::from_screen(&screen, rect) else {
                continue;
            };
            tried += 1;
            let m = find_template(&screen, &needle, &MatchOptions::default()).unwrap();
            if m.found && m.block_difference == 0.0 {
                exact += 1;
            } else {
                misses.push((rect, m));
            }
        }
        eprintln!("{name}: {exact}/{tried} exact; misses {misses:?}");
        assert!(exact >= tried - 1, "{name}: {misses:?}");
    }
}
