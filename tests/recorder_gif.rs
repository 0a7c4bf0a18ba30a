//! The streaming GIF writer, checked by decoding its output with the `gif` crate's
//! decoder and compositing every image (transparency, offsets, disposal) the way a
//! browser does.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smoke::frame::Frame;
use smoke::geometry::Rect;
use smoke::recorder::{
    DesktopPalette, FrameChange, GifPlayback, GifWriter, PlayedFrame, TRANSPARENT_INDEX, fit_to_canvas,
};

/// Deterministic pseudo-random numbers (xorshift32).
struct Noise(u32);

impl Noise {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

fn fill(frame: &mut Frame, rect: Rect, rgb: [u8; 3]) {
    for y in rect.y..rect.bottom().min(frame.height()) {
        for x in rect.x..rect.right().min(frame.width()) {
            frame.set_rgb(x, y, rgb);
        }
    }
}

/// A desktop-like scene: light background, a window with a title bar, "text"
/// (antialiased gray strokes), a photo-like area of arbitrary colours, and a cursor.
struct Scene {
    width: u32,
    height: u32,
    window: Rect,
    typed: u32,
    cursor: (u32, u32),
    photo_seed: u32,
}

impl Scene {
    fn new(width: u32, height: u32) -> Scene {
        Scene { width, height, window: Rect::new(40, 30, 300, 200), typed: 0, cursor: (400, 300), photo_seed: 7 }
    }

    fn render(&self) -> Frame {
        let mut frame = Frame::new(self.width, self.height);
        let all = frame.bounds();
        fill(&mut frame, all, [236, 238, 241]);
        fill(&mut frame, Rect::new(0, self.height.saturating_sub(24), self.width, 24), [40, 44, 52]);
        let w = self.window;
        fill(&mut frame, w, [255, 255, 255]);
        fill(&mut frame, Rect::new(w.x, w.y, w.w, 22), [29, 116, 245]);
        // Typed characters: 6x10 glyph cells with gray antialiasing.
        for i in 0..self.typed {
            let gx = w.x + 8 + (i % 40) * 7;
            let gy = w.y + 30 + (i / 40) * 12;
            for dy in 0..10 {
                for dx in 0..6 {
                    let v = ((i * 31 + dx * 17 + dy * 7) % 5) as u8;
                    let shade = [255, 200, 120, 60, 20][v as usize];
                    if gx + dx < self.width && gy + dy < self.height {
                        frame.set_rgb(gx + dx, gy + dy, [shade, shade, shade]);
                    }
                }
            }
        }
        // A photo-like block of arbitrary colours.
        let mut noise = Noise(self.photo_seed);
        let photo = Rect::new(self.width.saturating_sub(130), 20, 100, 60);
        for y in photo.y..photo.bottom().min(self.height) {
            for x in photo.x..photo.right().min(self.width) {
                let [r, g, b, _] = noise.next().to_le_bytes();
                frame.set_rgb(x, y, [r, g, b]);
            }
        }
        // The cursor: a 9x14 black arrow with a white border.
        let (cx, cy) = self.cursor;
        for dy in 0..14u32 {
            for dx in 0..=dy.min(8) {
                let (x, y) = (cx + dx, cy + dy);
                if x < self.width && y < self.height {
                    let edge = dx == 0 || dx == dy.min(8) || dy == 13;
                    frame.set_rgb(x, y, if edge { [255, 255, 255] } else { [0, 0, 0] });
                }
            }
        }
        frame
    }
}

/// A writer whose bytes stay readable while the GIF writer still owns it.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn play(bytes: &[u8]) -> (Vec<PlayedFrame>, bool) {
    let mut playback = GifPlayback::open(bytes).expect("GIF header");
    let mut frames = Vec::new();
    while let Some(frame) = playback.next_frame().expect("decodable image") {
        frames.push(frame);
    }
    (frames, playback.truncated())
}

/// Bounding box of the pixels that differ between two frames.
fn diff_box(a: &Frame, b: &Frame) -> Option<Rect> {
    let mut found: Option<Rect> = None;
    for y in 0..a.height() {
        for x in 0..a.width() {
            if a.rgb(x, y) != b.rgb(x, y) {
                let px = Rect::new(x, y, 1, 1);
                found = Some(found.map_or(px, |r| r.union(&px)));
            }
        }
    }
    found
}

/// Pushes a scripted session and checks every composited image against the
/// palette-quantized input, the crop boxes and the delays.
#[test]
fn round_trip_composites_to_the_quantized_input() {
    let palette = DesktopPalette::new();
    let mut scene = Scene::new(640, 360);
    let out = SharedBuffer::default();
    let mut writer = GifWriter::new(out.clone(), 640, 360).expect("writer");

    // (time in ms, the scene edit before capturing)
    let mut expected: Vec<(Frame, Rect)> = Vec::new();
    let mut times_ms: Vec<u64> = Vec::new();
    let mut unchanged_pushes = 0;
    type Edit = Box<dyn Fn(&mut Scene)>;
    let steps: Vec<(u64, Edit)> = vec![
        (0, Box::new(|_| {})),
        (100, Box::new(|s| s.typed += 1)),
        (200, Box::new(|_| {})), // identical frame
        (300, Box::new(|s| s.cursor = (410, 305))),
        (450, Box::new(|s| s.typed += 5)),
        (600, Box::new(|s| s.window = Rect::new(60, 40, 300, 200))),
        (700, Box::new(|s| s.photo_seed = 99)),
        (800, Box::new(|s| s.cursor = (0, 0))),
        (1230, Box::new(|s| s.cursor = (633, 350))), // cursor clipped at the corner
        (1300, Box::new(|s| s.typed += 40)),
    ];
    for (at_ms, edit) in &steps {
        edit(&mut scene);
        let frame = scene.render();
        let change = writer.push(&frame, Duration::from_millis(*at_ms)).expect("push");
        match change {
            FrameChange::Changed(rect) => {
                expected.push((palette.quantize_frame(&frame), rect));
                times_ms.push(*at_ms);
            }
            FrameChange::Unchanged => {
                unchanged_pushes += 1;
                let shown = &expected.last().expect("a frame before").0;
                assert_eq!(&palette.quantize_frame(&frame), shown, "unchanged push at {at_ms} ms");
            }
        }
    }
    assert_eq!(unchanged_pushes, 1);
    let finished = writer.finish(Duration::from_millis(2000)).expect("finish");
    assert_eq!(finished.stats.bytes as usize, out.bytes().len());

    let (played, truncated) = play(&out.bytes());
    assert!(!truncated);
    assert_eq!(played.len(), expected.len());
    let mut previous: Option<&PlayedFrame> = None;
    for (i, (shown, (quantized, rect))) in played.iter().zip(expected.iter()).enumerate() {
        assert_eq!(shown.unpainted_pixels, 0, "image {i} leaves unpainted pixels");
        assert_eq!(shown.rect, *rect, "image {i} rect");
        assert!(shown.frame == *quantized, "image {i} differs from the quantized input");
        match previous {
            None => {
                assert_eq!(shown.rect, Rect::screen(640, 360));
                assert_eq!(shown.transparent_pixels, 0);
            }
            Some(prev) => {
                // Minimal crop: exactly the box of displayed pixels that changed.
                assert_eq!(diff_box(&prev.frame, &shown.frame), Some(shown.rect), "image {i}");
            }
        }
        previous = Some(shown);
    }
    // A cursor move of a few pixels is a small image, mostly transparent pixels.
    let cursor_move = &played[2];
    assert!(cursor_move.rect.area() < 30 * 30, "cursor image {}", cursor_move.rect);
    assert!(cursor_move.transparent_pixels > 0);

    // Delays: the gap to the next changed frame (the identical push extends).
    let mut ends: Vec<u64> = times_ms[1..].to_vec();
    ends.push(2000);
    let expected_delays: Vec<u16> = times_ms.iter().zip(ends.iter()).map(|(a, b)| ((b - a) / 10) as u16).collect();
    let delays: Vec<u16> = played.iter().map(|p| p.delay_cs).collect();
    assert_eq!(delays, expected_delays);
    assert_eq!(delays[1], 20, "the identical push extends the second image");
}

#[test]
fn delays_have_a_floor_and_catch_up() {
    let mut scene = Scene::new(200, 100);
    scene.cursor = (10, 10);
    let out = SharedBuffer::default();
    let mut writer = GifWriter::new(out.clone(), 200, 100).expect("writer");
    // Capture gaps: 10 ms (under the 2 cs floor), 5 ms, then 104 ms and 106 ms.
    for (i, at) in [0u64, 10, 15, 119, 225].iter().enumerate() {
        scene.cursor = (10 + i as u32 * 20, 10);
        writer.push(&scene.render(), Duration::from_millis(*at)).expect("push");
    }
    writer.finish(Duration::from_millis(500)).expect("finish");
    let (played, _) = play(&out.bytes());
    let delays: Vec<u16> = played.iter().map(|p| p.delay_cs).collect();
    // 2 (floor), 2 (floor; GIF 2 cs ahead of real time), 8 (catches up to 12),
    // 11 (to 23 = round(22.5)), 27 (to 50).
    assert_eq!(delays, vec![2, 2, 8, 11, 27]);
    assert!(delays.iter().all(|&d| d >= 2));
    assert_eq!(delays.iter().map(|&d| d as u32).sum::<u32>(), 50);
}

#[test]
fn an_idle_gap_over_the_gif_maximum_is_split() {
    let mut scene = Scene::new(160, 120);
    scene.cursor = (5, 5);
    let out = SharedBuffer::default();
    let mut writer = GifWriter::new(out.clone(), 160, 120).expect("writer");
    writer.push(&scene.render(), Duration::ZERO).expect("push");
    let before = DesktopPalette::new().quantize_frame(&scene.render());
    scene.cursor = (50, 50);
    writer.push(&scene.render(), Duration::from_secs(700)).expect("push");
    let finished = writer.finish(Duration::from_secs(701)).expect("finish");
    assert_eq!(finished.stats.filler_images, 1);

    let (played, _) = play(&out.bytes());
    let delays: Vec<u16> = played.iter().map(|p| p.delay_cs).collect();
    assert_eq!(delays, vec![65_535, 4_465, 100]);
    let filler = &played[1];
    assert_eq!(filler.rect, Rect::new(0, 0, 1, 1));
    assert_eq!(filler.transparent_pixels, 1);
    assert!(filler.frame == before, "the filler image changes nothing");
    assert_eq!(delays.iter().map(|&d| d as u64).sum::<u64>(), 70_100);
}

#[test]
fn a_resized_screen_is_fitted_without_panicking() {
    let palette = DesktopPalette::new();
    let out = SharedBuffer::default();
    let mut writer = GifWriter::new(out.clone(), 320, 200).expect("writer");
    let sizes = [(320u32, 200u32), (640, 480), (200, 100), (1, 1), (0, 0), (320, 200), (321, 2000)];
    let mut expected = Vec::new();
    for (i, &(w, h)) in sizes.iter().enumerate() {
        let mut scene = Scene::new(w.max(1), h.max(1));
        scene.cursor = (i as u32 * 3, 2);
        let frame = if w == 0 { Frame::new(0, 0) } else { scene.render() };
        let change = writer.push(&frame, Duration::from_millis(i as u64 * 100)).expect("push");
        if let FrameChange::Changed(_) = change {
            expected.push(palette.quantize_frame(&fit_to_canvas(&frame, 320, 200)));
        }
    }
    let finished = writer.finish(Duration::from_secs(1)).expect("finish");
    assert_eq!(finished.stats.frames_resized, 5);
    let (played, _) = play(&out.bytes());
    assert_eq!(played.len(), expected.len());
    for (shown, quantized) in played.iter().zip(expected.iter()) {
        assert_eq!((shown.frame.width(), shown.frame.height()), (320, 200));
        assert!(shown.frame == *quantized);
    }
}

#[test]
fn a_recording_cut_short_plays_up_to_its_last_complete_image() {
    let mut scene = Scene::new(320, 200);
    let out = SharedBuffer::default();
    let mut writer = GifWriter::new(out.clone(), 320, 200).expect("writer");
    for i in 0..6u64 {
        scene.typed += 3;
        writer.push(&scene.render(), Duration::from_millis(i * 100)).expect("push");
    }
    // The process "dies" here: whatever is in the output is all there is.
    let cut = out.bytes();
    assert_ne!(cut.last(), Some(&0x3b), "no trailer yet");
    let (played, truncated) = play(&cut);
    assert!(truncated);
    // Five images are out (the sixth waits for its delay), with their delays.
    assert_eq!(played.len(), 5);
    assert!(played.iter().all(|p| p.delay_cs == 10));
    // Cut inside the last image too: the images before it still play.
    let (played, truncated) = play(&cut[..cut.len() - 10]);
    assert!(truncated);
    assert_eq!(played.len(), 4);
    drop(writer);
}

#[test]
fn the_gif_loops_forever_and_never_uses_the_transparent_index_as_a_colour() {
    let mut scene = Scene::new(200, 150);
    let out = SharedBuffer::default();
    let mut writer = GifWriter::new(out.clone(), 200, 150).expect("writer");
    writer.push(&scene.render(), Duration::ZERO).expect("push");
    scene.typed = 3;
    writer.push(&scene.render(), Duration::from_millis(50)).expect("push");
    writer.finish(Duration::from_millis(100)).expect("finish");
    let bytes = out.bytes();
    let playback = GifPlayback::open(&bytes[..]).expect("open");
    assert_eq!(playback.repeat(), gif::Repeat::Infinite);
    assert_eq!(bytes.last(), Some(&0x3b), "trailer");
    // Decode indices directly: the first image is opaque.
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    let mut decoder = options.read_info(&bytes[..]).expect("decoder");
    let first = decoder.read_next_frame().expect("read").expect("first image");
    assert!(!first.buffer.contains(&TRANSPARENT_INDEX));
    assert_eq!(first.dispose, gif::DisposalMethod::Keep);
    let second = decoder.read_next_frame().expect("read").expect("second image");
    assert_eq!(second.transparent, Some(TRANSPARENT_INDEX));
    assert_eq!(second.dispose, gif::DisposalMethod::Keep);
}
