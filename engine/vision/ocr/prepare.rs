//! Image variants fed to tesseract, tried in turn until the wanted text is read.
//!
//! tesseract binarises the page itself and reads dark text on light ground best.
//! On application screens it misses small text, and it does not read light text
//! inside a dark filled box (a white label on a blue button in a light window):
//! the box becomes one dark blob that page layout analysis drops. The variants:
//!
//! * [`OcrVariant::Raw`]: the luma as captured;
//! * [`OcrVariant::Upscaled`]: 2x bilinear, for small text;
//! * [`OcrVariant::Inverted`]: 2x, then every dark filled box of button size
//!   (found with Otsu's threshold and connected components) is inverted together
//!   with everything it encloses, so its light label becomes dark on light and the
//!   rest of the page is left alone; with no such box, the whole image is inverted;
//! * [`OcrVariant::Binarized`]: 2x, then Otsu's threshold to pure black and white
//!   (light ground), which removes soft gradients and anti-aliased borders.

use crate::vision::gray::GrayImage;

/// One way of preparing the image for tesseract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OcrVariant {
    /// The luma as captured.
    Raw,
    /// 2x bilinear, for small text.
    Upscaled,
    /// 2x, then each dark filled box of button size is inverted with what it
    /// encloses (light text on a dark button becomes dark on light; the page is
    /// left alone); the whole image when there is no such box.
    Inverted,
    /// 2x, then Otsu's threshold to black text on white.
    Binarized,
}

impl OcrVariant {
    /// The default order of [`crate::vision::ocr::Ocr::find`].
    pub const ALL: [OcrVariant; 4] =
        [OcrVariant::Raw, OcrVariant::Upscaled, OcrVariant::Inverted, OcrVariant::Binarized];

    pub fn name(self) -> &'static str {
        match self {
            OcrVariant::Raw => "raw",
            OcrVariant::Upscaled => "upscaled",
            OcrVariant::Inverted => "inverted",
            OcrVariant::Binarized => "binarized",
        }
    }
}

impl std::fmt::Display for OcrVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A prepared image and the factor by which it was enlarged.
pub(crate) struct Prepared {
    pub image: GrayImage,
    pub scale: u32,
}

/// Build the image for `variant`; images with more than `upscale_limit` pixels
/// are not enlarged.
pub(crate) fn prepare(gray: &GrayImage, variant: OcrVariant, upscale_limit: u64) -> Prepared {
    let may_upscale = gray.bounds().area() <= upscale_limit;
    let base = || {
        if may_upscale {
            Prepared { image: gray.upscale2(), scale: 2 }
        } else {
            Prepared { image: gray.clone(), scale: 1 }
        }
    };
    match variant {
        OcrVariant::Raw => Prepared { image: gray.clone(), scale: 1 },
        OcrVariant::Upscaled => base(),
        OcrVariant::Inverted => {
            let p = base();
            Prepared { image: invert_dark_boxes(&p.image, p.scale), scale: p.scale }
        }
        OcrVariant::Binarized => {
            let p = base();
            Prepared { image: binarize(&p.image), scale: p.scale }
        }
    }
}

/// Otsu's threshold: the t maximising the between-class variance of
/// `v < t` and `v >= t`.
pub(crate) fn otsu_threshold(img: &GrayImage) -> u8 {
    let mut hist = [0u64; 256];
    for &v in img.pixels() {
        hist[v as usize] += 1;
    }
    let total = img.pixels().len() as f64;
    if total == 0.0 {
        return 128;
    }
    let sum_all: f64 = hist.iter().enumerate().map(|(v, &c)| v as f64 * c as f64).sum();
    let (mut count_low, mut sum_low) = (0f64, 0f64);
    let (mut best_t, mut best_var) = (128u8, -1f64);
    for t in 1..256usize {
        count_low += hist[t - 1] as f64;
        sum_low += (t - 1) as f64 * hist[t - 1] as f64;
        let count_high = total - count_low;
        if count_low == 0.0 || count_high == 0.0 {
            continue;
        }
        let mean_low = sum_low / count_low;
        let mean_high = (sum_all - sum_low) / count_high;
        let var = count_low * count_high * (mean_low - mean_high).powi(2);
        if var > best_var {
            best_var = var;
            best_t = t as u8;
        }
    }
    best_t
}

/// Pure black and white at Otsu's threshold, light ground.
pub(crate) fn binarize(img: &GrayImage) -> GrayImage {
    let t = otsu_threshold(img);
    let dark = img.pixels().iter().filter(|&&v| v < t).count();
    let invert = dark * 2 > img.pixels().len();
    let mut out = img.clone();
    for v in out.pixels_mut() {
        let is_dark = *v < t;
        *v = if is_dark != invert { 0 } else { 255 };
    }
    out
}

/// A connected set of dark pixels.
struct Component {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
    count: usize,
}

/// Invert every dark filled box of button size and what it encloses (see the
/// module docs); invert everything when there is none. `scale` is how much the
/// image was enlarged (box size limits are in captured pixels).
pub(crate) fn invert_dark_boxes(img: &GrayImage, scale: u32) -> GrayImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let s = scale.max(1) as usize;
    let (min_w, min_h, max_h) = (12 * s, 6 * s, 60 * s);
    let t = otsu_threshold(img);
    let dark: Vec<bool> = img.pixels().iter().map(|&v| v < t).collect();
    let (labels, components) = label_components(&dark, w, h);
    let mut flip = vec![false; w * h];
    let mut any = false;
    for (index, c) in components.iter().enumerate() {
        let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
        let filled = c.count as f64 >= 0.6 * (bw * bh) as f64;
        if bw < min_w || bh < min_h || bh > max_h || !filled {
            continue;
        }
        any = true;
        mark_with_enclosed(&labels, w, c, index as u32 + 1, &mut flip);
    }
    let mut out = img.clone();
    for (v, &f) in out.pixels_mut().iter_mut().zip(&flip) {
        if f || !any {
            *v = 255 - *v;
        }
    }
    out
}

/// 4-connected components of `mask`; labels are 1-based (0 = not in the mask).
fn label_components(mask: &[bool], w: usize, h: usize) -> (Vec<u32>, Vec<Component>) {
    let mut labels = vec![0u32; w * h];
    let mut components = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        let label = components.len() as u32 + 1;
        let mut c = Component { x0: usize::MAX, y0: usize::MAX, x1: 0, y1: 0, count: 0 };
        labels[start] = label;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            c.x0 = c.x0.min(x);
            c.y0 = c.y0.min(y);
            c.x1 = c.x1.max(x);
            c.y1 = c.y1.max(y);
            c.count += 1;
            let mut visit = |j: usize| {
                if mask[j] && labels[j] == 0 {
                    labels[j] = label;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
        components.push(c);
    }
    (labels, components)
}

/// Mark component `label` and every pixel of its bounding box that cannot reach
/// the box's edge without crossing the component (its holes and their contents).
fn mark_with_enclosed(labels: &[u32], w: usize, c: &Component, label: u32, out: &mut [bool]) {
    let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
    let idx = |x: usize, y: usize| (c.y0 + y) * w + c.x0 + x;
    // Flood from the box edge through pixels that are not the component.
    let mut outside = vec![false; bw * bh];
    let mut stack = Vec::new();
    for y in 0..bh {
        for x in 0..bw {
            let edge = x == 0 || y == 0 || x + 1 == bw || y + 1 == bh;
            if edge && labels[idx(x, y)] != label {
                outside[y * bw + x] = true;
                stack.push((x, y));
            }
        }
    }
    while let Some((x, y)) = stack.pop() {
        let mut visit = |nx: usize, ny: usize| {
            let k = ny * bw + nx;
            if !outside[k] && labels[idx(nx, ny)] != label {
                outside[k] = true;
                stack.push((nx, ny));
            }
        };
        if x > 0 {
            visit(x - 1, y);
        }
        if x + 1 < bw {
            visit(x + 1, y);
        }
        if y > 0 {
            visit(x, y - 1);
        }
        if y + 1 < bh {
            visit(x, y + 1);
        }
    }
    for y in 0..bh {
        for x in 0..bw {
            if !outside[y * bw + x] {
                out[idx(x, y)] = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otsu_splits_two_levels() {
        let img = GrayImage::from_luma(4, 1, vec![20, 20, 200, 200]).unwrap();
        let t = otsu_threshold(&img);
        assert!(t > 20 && t <= 200, "{t}");
        assert_eq!(binarize(&img).pixels(), &[0, 0, 255, 255]);
    }

    #[test]
    fn dark_box_and_its_label_are_inverted_but_page_text_is_not() {
        // 60x30 light page; a dark "glyph" at (2,2) 3x8; a dark box 40x14 at
        // (15,10) holding a light 2x6 "letter" with a dark 1x2 counter inside it.
        let (w, h) = (60u32, 30u32);
        let mut px = vec![230u8; (w * h) as usize];
        let mut set = |x0: u32, y0: u32, bw: u32, bh: u32, v: u8| {
            for y in y0..y0 + bh {
                for x in x0..x0 + bw {
                    px[(y * w + x) as usize] = v;
                }
            }
        };
        set(2, 2, 3, 8, 10);
        set(15, 10, 40, 14, 30);
        set(30, 14, 4, 6, 250);
        set(31, 16, 2, 2, 30);
        let img = GrayImage::from_luma(w, h, px).unwrap();
        let out = invert_dark_boxes(&img, 1);
        assert_eq!(out.get(3, 5), Some(10), "page text untouched");
        assert_eq!(out.get(0, 0), Some(230), "page untouched");
        assert_eq!(out.get(16, 11), Some(225), "box becomes light");
        assert_eq!(out.get(30, 14), Some(5), "label becomes dark");
        assert_eq!(out.get(31, 16), Some(225), "counter inside the label follows");
    }
}
