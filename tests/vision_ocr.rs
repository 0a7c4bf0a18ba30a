//! OCR of small and inverted text on a real screen (tests/data/vision/
//! small_text.png, captured from an Xvnc desktop by capture_more.sh) with the
//! real tesseract: why regions matter, the preprocessing passes, fuzzy and
//! case-insensitive matching.

mod support;

use std::path::Path;

use smoke::frame::Frame;
use smoke::geometry::Rect;
use smoke::vision::ocr::{Ocr, OcrVariant, TextQuery};

fn screen() -> Frame {
    Frame::load_png(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vision/small_text.png")).expect("fixture")
}

/// The 7-point terminal and the white-on-black one.
const SMALL: Rect = Rect::new(40, 60, 370, 30);
const INVERTED: Rect = Rect::new(40, 190, 370, 60);

/// Run `f` on a runtime while holding the lock that keeps OCR tests from
/// competing for the two cores.
fn with_cores<F: std::future::Future<Output = ()>>(f: F) {
    let _cores = support::lock();
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f);
}

#[test]
fn small_text_needs_its_region_and_fuzzy_matching_forgives_one_misread() {
    with_cores(small_text());
}

#[test]
fn white_on_black_text_is_read_plain_and_inverted() {
    with_cores(inverted_text());
}

async fn small_text() {
    let frame = screen();
    let ocr = Ocr::new();
    // 7-point text on a whole 1280x720 screen: no pass reads the line, though
    // the upscaled passes get some of its words.
    let exact = TextQuery::contains("SMALL-TEXT line 7: ok");
    let whole = ocr.find(&frame, None, &exact).await.unwrap();
    assert!(whole.found.is_none(), "{:?}", whole.passes);
    assert_eq!(whole.passes.len(), OcrVariant::ALL.len());
    assert!(!whole.passes[0].text.contains("SMALL"), "raw: {}", whole.passes[0].text);
    assert!(whole.passes[1].text.contains("SMALL"), "upscaled: {}", whole.passes[1].text);
    // Cropped to the terminal, the line is read.
    let crop = ocr.find(&frame, Some(SMALL), &exact).await.unwrap();
    let found = crop.found.unwrap_or_else(|| panic!("{:?}", crop.passes));
    assert!(SMALL.contains_rect(&found) && found.h < 12, "{found}");
    // The raw pass alone misreads one letter ("Line"): one edit allowed forgives it.
    let raw = Ocr::new().variants(vec![OcrVariant::Raw]);
    let misread = raw.find(&frame, Some(SMALL), &exact).await.unwrap();
    assert!(misread.found.is_none(), "{:?}", misread.matched);
    assert!(misread.text.contains("SMALL-TEXT Line 7: ok"), "{}", misread.text);
    let fuzzy = raw.find(&frame, Some(SMALL), &TextQuery::fuzzy("SMALL-TEXT line 7: ok", true, 1)).await.unwrap();
    assert_eq!((fuzzy.matched.as_deref(), fuzzy.distance), (Some("SMALL-TEXT Line 7: ok"), Some(1)));
    // (the raw and the upscaled pass box the line within a pixel)
    let near =
        |b: Option<Rect>| b.is_some_and(|b| b.x.abs_diff(found.x) <= 2 && b.w.abs_diff(found.w) <= 2 && b.y == found.y);
    assert!(near(fuzzy.found), "{:?} vs {found}", fuzzy.found);
    let any_case = raw.find(&frame, Some(SMALL), &TextQuery::contains_any_case("small-text line 7: OK")).await.unwrap();
    assert!(near(any_case.found), "{:?}", any_case.found);
    // A text that is not there stays unmatched within the same budget.
    let absent = raw.find(&frame, Some(SMALL), &TextQuery::fuzzy("SMALL-TEXT line 9: failed", true, 1)).await.unwrap();
    assert!(absent.found.is_none(), "{:?}", absent.matched);
}

async fn inverted_text() {
    let frame = screen();
    let query = TextQuery::contains("INVERTED-TEXT ready");
    let plain = Ocr::new().find(&frame, Some(INVERTED), &query).await.unwrap();
    assert!(plain.found.is_some(), "{:?}", plain.passes);
    // The inverted pass alone turns it into dark text on light ground and reads it.
    let inverted = Ocr::new().variants(vec![OcrVariant::Inverted]);
    let read = inverted.find(&frame, Some(INVERTED), &query).await.unwrap();
    assert_eq!(read.variant, "inverted");
    let b = read.found.expect("found by the inverted pass");
    assert!(INVERTED.contains_rect(&b), "{b}");
    assert_eq!(b, plain.found.unwrap(), "both passes box the same words");
}
