//! OCR and template search against a live Xvnc desktop with real apps (xterm,
//! galculator) and the real tesseract.

mod vision_support;

use std::time::{Duration, Instant};

use smoke::frame::Frame;
use smoke::geometry::{Point, Rect};
use smoke::vision::ocr::{Ocr, OcrError, OcrVariant, TextQuery};
use smoke::vision::template::{MatchOptions, Needle, find_template};
use vision_support::Desktop;

/// Grab and read `region` until `query` is found (apps draw after mapping).
async fn find_on_screen(desktop: &mut Desktop, ocr: &Ocr, region: Rect, query: &TextQuery) -> (Frame, Rect) {
    let start = Instant::now();
    loop {
        let frame = desktop.grab();
        let found = ocr.find(&frame, Some(region), query).await.expect("ocr");
        if let Some(bbox) = found.found {
            return (frame, bbox);
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{query} not found; last read:\n{}", found.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn ocr_reads_a_known_xterm_line() {
    let mut desktop = Desktop::start();
    let window = desktop.xterm(
        "60x6+40+40",
        "printf '\\033[?25l'; echo 'SMOKE-TEST line 42: ready'; echo 'Build 2024.11.3 finished in 42 s'; sleep 600",
    );
    let area = desktop.window_rect(&window);
    let ocr = Ocr::new();
    let query = TextQuery::contains("SMOKE-TEST line 42: ready");
    let (frame, bbox) = find_on_screen(&mut desktop, &ocr, area, &query).await;
    // The plain pass reads the whole line, word for word, inside the window.
    let text = ocr.read(&frame, Some(area)).await.expect("ocr");
    let line = text.lines.iter().find(|l| l.text.contains("SMOKE-TEST")).expect("the line");
    assert_eq!(line.text, "SMOKE-TEST line 42: ready");
    assert_eq!(line.words.len(), 4);
    assert!(line.words.iter().all(|w| area.contains_rect(&w.bbox) && w.confidence > 50.0), "{line:?}");
    // First text row of a 14 pt terminal: within 30 px of the client area's top.
    assert!(line.bbox.y >= area.y && line.bbox.y < area.y + 30, "{line:?} in {area}");
    assert_eq!(bbox, line.bbox, "the match covers the whole line");
    // Word boxes are ordered and do not overlap.
    for pair in line.words.windows(2) {
        assert!(pair[0].bbox.right() <= pair[1].bbox.x, "{pair:?}");
    }
    // The second line is below the first.
    let build = text.lines.iter().find(|l| l.text.starts_with("Build")).expect("second line");
    assert!(build.bbox.y >= line.bbox.bottom());
}

#[tokio::test]
async fn regex_finds_a_version_and_its_box() {
    let mut desktop = Desktop::start();
    let window = desktop.xterm(
        "60x6+200+300",
        "printf '\\033[?25l'; echo 'Installing package'; echo 'Build 2024.11.3 finished in 42 s'; sleep 600",
    );
    let area = desktop.window_rect(&window);
    let ocr = Ocr::new();
    let query = TextQuery::regex(r"Build (\d{4})\.(\d+)\.(\d+)").expect("regex");
    let (frame, bbox) = find_on_screen(&mut desktop, &ocr, area, &query).await;
    let found = ocr.find(&frame, Some(area), &query).await.expect("ocr");
    assert_eq!(found.matched.as_deref(), Some("Build 2024.11.3"));
    assert_eq!(found.variant, "raw");
    // The box covers "Build" and "2024.11.3", not the rest of the line.
    let text = ocr.read(&frame, Some(area)).await.expect("ocr");
    let line = text.lines.iter().find(|l| l.text.starts_with("Build")).expect("line");
    assert_eq!(bbox, line.words[0].bbox.union(&line.words[1].bbox));
    assert!(bbox.right() < line.bbox.right());
    // A pattern that is not on screen is not found, after all passes.
    let missing = ocr.find(&frame, Some(area), &TextQuery::regex(r"Build \d+ failed").unwrap()).await.unwrap();
    assert!(missing.found.is_none());
    assert_eq!(missing.passes.len(), OcrVariant::ALL.len());
    assert!(missing.passes.iter().all(|p| !p.matched));
    assert!(missing.text.contains("2024"), "all text of the last pass: {}", missing.text);
}

#[tokio::test]
async fn galculator_button_boxes_lie_on_their_buttons() {
    let mut desktop = Desktop::start();
    let window = desktop.galculator();
    let area = desktop.window_rect(&window);
    let ocr = Ocr::new();
    // Press 9 and then sqrt by clicking the centres of the OCR boxes.
    let nine = TextQuery::regex(r"\b9\b").unwrap();
    let (_, nine_box) = find_on_screen(&mut desktop, &ocr, area, &nine).await;
    let (_, sqrt_box) = find_on_screen(&mut desktop, &ocr, area, &TextQuery::contains("sqrt")).await;
    for b in [nine_box, sqrt_box] {
        assert!(area.contains_rect(&b), "{b} outside the window {area}");
        // Keypad buttons are in the lower two thirds of the window.
        assert!(b.y > area.y + area.h / 3, "{b}");
    }
    let click = |p: Point| desktop.click(p.x, p.y);
    click(nine_box.center());
    std::thread::sleep(Duration::from_millis(300));
    click(sqrt_box.center());
    // The display (below the menu bar) shows sqrt(9) = 3: both clicks hit
    // their buttons. tesseract's sparse-text mode skips a lone big digit; the
    // display is one line of text (--psm 7).
    let display = Rect::new(area.x, area.y + area.h / 12, area.w, area.h / 6);
    let one_line = Ocr::new().page_segmentation(7);
    let three = TextQuery::regex(r"^3$").unwrap();
    let (_, shown) = find_on_screen(&mut desktop, &one_line, display, &three).await;
    assert!(display.contains_rect(&shown));
}

#[tokio::test]
async fn light_text_on_a_dark_button_is_found_by_the_inverted_pass() {
    let mut desktop = Desktop::start();
    let window = desktop.xterm(
        "40x6+100+100",
        "printf '\\033[?25lPick an action:\\n\\n  \\033[44;97m  Deploy now  \\033[0m   \\033[42;97m  Cancel  \\033[0m\\n'; sleep 600",
    );
    let area = desktop.window_rect(&window);
    let ocr = Ocr::new();
    // Wait until the terminal has drawn its text.
    let (frame, _) = find_on_screen(&mut desktop, &ocr, area, &TextQuery::contains("Pick an action")).await;
    let query = TextQuery::contains("Deploy now");
    let found = ocr.find(&frame, Some(area), &query).await.expect("ocr");
    let summary: Vec<(OcrVariant, bool, &str)> =
        found.passes.iter().map(|p| (p.variant, p.matched, p.text.as_str())).collect();
    assert_eq!(found.variant, "inverted", "{summary:#?}");
    assert_eq!(found.passes.len(), 3);
    assert!(!found.passes[0].matched && !found.passes[1].matched);
    // The box lies on the blue button: most of its pixels are blue.
    let bbox = found.found.expect("box");
    let crop = frame.crop(bbox).expect("inside");
    let blue = crop.pixels().chunks_exact(4).filter(|p| p[2] > 150 && p[0] < 100).count();
    assert!(blue * 2 > (bbox.w * bbox.h) as usize, "{blue} blue pixels in {bbox}");
}

#[tokio::test]
async fn template_is_found_after_the_window_moved() {
    let mut desktop = Desktop::start();
    let window = desktop.galculator();
    let ocr = Ocr::new();
    let before = desktop.window_rect(&window);
    find_on_screen(&mut desktop, &ocr, before, &TextQuery::contains("sqrt")).await;
    let screen = desktop.grab();
    // The keypad's upper left part, 200x120.
    let cut = Rect::new(before.x + 6, before.y + 180, 200, 120);
    let needle = Needle::from_screen(&screen, cut).expect("needle");
    desktop.move_window(&window, 700, 250);
    let after = desktop.window_rect(&window);
    let (dx, dy) = (after.x as i64 - before.x as i64, after.y as i64 - before.y as i64);
    assert!(dx != 0 && dy != 0);
    let expected = Rect::new((cut.x as i64 + dx) as u32, (cut.y as i64 + dy) as u32, 200, 120);
    let start = Instant::now();
    loop {
        let moved = desktop.grab();
        let m = find_template(&moved, &needle, &MatchOptions::default()).expect("search");
        if m.found && m.rect == expected {
            assert!(m.score > 0.99 && m.block_difference < 8.0, "{m:?}");
            assert_eq!(m.click_point(), expected.center());
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "not found at {expected}: {m:?}");
    }
}

#[tokio::test]
async fn missing_tesseract_is_a_clear_error() {
    let frame = Frame::new(64, 32);
    let err = Ocr::new().binary("/nonexistent/tesseract").read(&frame, None).await.unwrap_err();
    assert!(matches!(err, OcrError::NotInstalled { .. }), "{err:?}");
    assert!(err.to_string().contains("apt-get install tesseract-ocr"), "{err}");
    let err = Ocr::new().language("xx_no_such").read(&frame, None).await.unwrap_err();
    assert!(matches!(err, OcrError::LanguageMissing { .. }), "{err:?}");
    let err = Ocr::new().read(&frame, Some(Rect::new(100, 0, 5, 5))).await.unwrap_err();
    assert!(matches!(err, OcrError::RegionOutside { .. }), "{err:?}");
}

/// Live (not zombie) children of this test process named `name`.
fn live_children(name: &str) -> usize {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...
            let Some(close) = stat.rfind(')') else {
                return false;
            };
            let comm = stat.get(stat.find('(').map_or(0, |i| i + 1)..close).unwrap_or("");
            let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            comm == name && rest.first() != Some(&"Z") && rest.get(1) == Some(&me.as_str())
        })
        .count()
}

#[tokio::test]
async fn ocr_timeout_is_an_error_and_kills_tesseract() {
    let screen =
        Frame::load_png(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vision/screen_base.png"))
            .expect("fixture");
    let ocr = Ocr::new().timeout(Duration::from_millis(30));
    let err = ocr.read(&screen, None).await.unwrap_err();
    assert!(matches!(err, OcrError::Timeout { .. }), "{err:?}");
    let start = Instant::now();
    while live_children("tesseract") > 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "tesseract still running after the timeout");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The same frame reads fine with the default timeout.
    let text = Ocr::new().read(&screen, None).await.expect("ocr");
    assert!(text.text().contains("quick brown fox"), "{}", text.text());
}
