//! The fixed 256-colour palette every recording uses, and its RGB -> index lookup.
//!
//! Desktop screens are mostly flat colours, and antialiased UI text is mostly shades
//! of gray, so one palette computed ahead of time serves every frame: there is no
//! per-frame palette search and no dithering (dithering would change pixels that did
//! not change on screen and defeat the "unchanged pixel = transparent" trick of the
//! GIF writer).
//!
//! Layout of the 256 entries:
//! - `0..216`: a 6x6x6 colour cube, levels `0, 51, 102, 153, 204, 255` per channel,
//!   index `36 * r + 6 * g + b` (the "web-safe" cube).
//! - `216..255`: 39 extra grays placed between the cube's six grays, so the gray axis
//!   has 45 levels, at most 7 apart.
//! - `255`: [`TRANSPARENT_INDEX`], never returned by the lookup.
//!
//! The lookup returns the entry nearest in plain (unweighted) RGB Euclidean distance.
//! It is exact, not approximate: the nearest cube entry is found per channel (the
//! cube is a product set, so the distance separates), the nearest gray is the gray
//! level nearest to the mean `(r + g + b) / 3` (the squared distance to a gray `v`
//! is `3 (v - mean)^2 + const`), and the closer of the two wins. All of it runs on
//! tables computed at compile time.

/// The palette index that means "transparent: keep what is displayed".
pub const TRANSPARENT_INDEX: u8 = 255;

/// Number of levels per channel in the colour cube.
const CUBE_LEVELS: usize = 6;
/// Distance between two cube levels.
const CUBE_STEP: u32 = 51;
/// Number of colour-cube entries (indices `0..CUBE_SIZE`).
const CUBE_SIZE: usize = CUBE_LEVELS * CUBE_LEVELS * CUBE_LEVELS;
/// Number of extra gray entries (indices `CUBE_SIZE..CUBE_SIZE + EXTRA_GRAYS`).
const EXTRA_GRAYS: usize = 39;
/// Gray levels on the whole gray axis: the cube's six plus the extra ones.
const GRAY_LEVELS: usize = CUBE_LEVELS + EXTRA_GRAYS;

/// Extra grays per gap between two neighbouring cube grays, darkest gap first.
const GRAYS_PER_GAP: [u32; 5] = [7, 8, 8, 8, 8];

/// The 45 gray levels in increasing order, each with its palette index.
const GRAY_AXIS: [(u8, u8); GRAY_LEVELS] = build_gray_axis();

/// Per channel value: the nearest cube level (0..6).
const CUBE_LEVEL_OF: [u8; 256] = build_cube_level_of();
/// Per channel value: squared distance to its nearest cube level.
const CUBE_ERROR_OF: [u16; 256] = build_cube_error_of();
/// Per `r + g + b` (0..=765): position on [`GRAY_AXIS`] of the gray nearest the mean.
const GRAY_POS_OF_SUM: [u8; 766] = build_gray_pos_of_sum();
/// The RGB value of every index; the transparent slot is black.
const ENTRIES: [[u8; 3]; 256] = build_entries();

const _: () = {
    let mut total = 0;
    let mut i = 0;
    while i < GRAYS_PER_GAP.len() {
        total += GRAYS_PER_GAP[i] as usize;
        i += 1;
    }
    assert!(total == EXTRA_GRAYS);
    assert!(CUBE_SIZE + EXTRA_GRAYS + 1 == 256);
    assert!(TRANSPARENT_INDEX as usize == 255);
};

const fn build_gray_axis() -> [(u8, u8); GRAY_LEVELS] {
    let mut axis = [(0u8, 0u8); GRAY_LEVELS];
    let mut pos = 0;
    let mut extra_index = CUBE_SIZE;
    let mut gap = 0;
    while gap < CUBE_LEVELS {
        let base = gap as u32 * CUBE_STEP;
        // The cube gray of this level: r = g = b = gap.
        axis[pos] = (base as u8, (gap * 36 + gap * 6 + gap) as u8);
        pos += 1;
        if gap < CUBE_LEVELS - 1 {
            let n = GRAYS_PER_GAP[gap];
            let mut k = 1;
            while k <= n {
                // Evenly spaced inside the gap, rounded to the nearest integer.
                let divisor = n + 1;
                let value = base + (CUBE_STEP * k + divisor / 2) / divisor;
                axis[pos] = (value as u8, extra_index as u8);
                pos += 1;
                extra_index += 1;
                k += 1;
            }
        }
        gap += 1;
    }
    axis
}

const fn build_cube_level_of() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut v = 0;
    while v < 256 {
        table[v] = ((v as u32 + CUBE_STEP / 2) / CUBE_STEP) as u8;
        v += 1;
    }
    table
}

const fn build_cube_error_of() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut v = 0;
    while v < 256 {
        let level = ((v as u32 + CUBE_STEP / 2) / CUBE_STEP) * CUBE_STEP;
        let d = level.abs_diff(v as u32);
        table[v] = (d * d) as u16;
        v += 1;
    }
    table
}

const fn build_gray_pos_of_sum() -> [u8; 766] {
    let mut table = [0u8; 766];
    let mut sum = 0;
    while sum < 766 {
        // Compare |3 v - sum| to stay in integers.
        let mut best = 0;
        let mut best_d = u32::MAX;
        let mut pos = 0;
        while pos < GRAY_LEVELS {
            let v3 = GRAY_AXIS[pos].0 as u32 * 3;
            let d = v3.abs_diff(sum as u32);
            if d < best_d {
                best_d = d;
                best = pos;
            }
            pos += 1;
        }
        table[sum] = best as u8;
        sum += 1;
    }
    table
}

const fn build_entries() -> [[u8; 3]; 256] {
    let mut entries = [[0u8; 3]; 256];
    let mut i = 0;
    while i < CUBE_SIZE {
        let r = (i / 36) as u32 * CUBE_STEP;
        let g = ((i / 6) % 6) as u32 * CUBE_STEP;
        let b = (i % 6) as u32 * CUBE_STEP;
        entries[i] = [r as u8, g as u8, b as u8];
        i += 1;
    }
    let mut pos = 0;
    while pos < GRAY_LEVELS {
        let (value, index) = GRAY_AXIS[pos];
        entries[index as usize] = [value, value, value];
        pos += 1;
    }
    entries
}

/// The fixed desktop palette. It holds no data of its own: every table is a
/// compile-time constant, so the value is free to create and copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DesktopPalette;

impl DesktopPalette {
    /// The palette.
    pub const fn new() -> DesktopPalette {
        DesktopPalette
    }

    /// The index of the palette colour nearest to `(r, g, b)`. Never
    /// [`TRANSPARENT_INDEX`].
    #[inline]
    pub fn index_of(&self, r: u8, g: u8, b: u8) -> u8 {
        let (cube_index, cube_error) = nearest_cube(r, g, b);
        let sum = r as usize + g as usize + b as usize;
        let (gray_value, gray_index) = GRAY_AXIS[GRAY_POS_OF_SUM[sum] as usize];
        let dr = r as i32 - gray_value as i32;
        let dg = g as i32 - gray_value as i32;
        let db = b as i32 - gray_value as i32;
        let gray_error = (dr * dr + dg * dg + db * db) as u32;
        if gray_error < cube_error { gray_index } else { cube_index }
    }

    /// The RGB colour of a palette index (black for [`TRANSPARENT_INDEX`]).
    #[inline]
    pub fn rgb_of(&self, index: u8) -> [u8; 3] {
        ENTRIES[index as usize]
    }

    /// The palette as a GIF colour table: 256 RGB triples, 768 bytes.
    pub fn gif_color_table(&self) -> Vec<u8> {
        ENTRIES.iter().flatten().copied().collect()
    }

    /// Quantize packed RGBA pixels (4 bytes each) into palette indices.
    /// `out` must hold one byte per input pixel; extra bytes are left untouched.
    pub fn quantize_rgba(&self, rgba: &[u8], out: &mut [u8]) {
        for (px, idx) in rgba.chunks_exact(4).zip(out.iter_mut()) {
            *idx = self.index_of(px[0], px[1], px[2]);
        }
    }

    /// Replace every RGB value of an RGBA frame by its palette colour: what the GIF
    /// shows for that frame.
    pub fn quantize_frame(&self, frame: &crate::frame::Frame) -> crate::frame::Frame {
        let mut out = frame.clone();
        for px in out.pixels_mut().chunks_exact_mut(4) {
            let [r, g, b] = self.rgb_of(self.index_of(px[0], px[1], px[2]));
            px[0] = r;
            px[1] = g;
            px[2] = b;
        }
        out
    }
}

#[inline]
fn nearest_cube(r: u8, g: u8, b: u8) -> (u8, u32) {
    let lr = CUBE_LEVEL_OF[r as usize];
    let lg = CUBE_LEVEL_OF[g as usize];
    let lb = CUBE_LEVEL_OF[b as usize];
    let index = lr * 36 + lg * 6 + lb;
    let error = CUBE_ERROR_OF[r as usize] as u32 + CUBE_ERROR_OF[g as usize] as u32 + CUBE_ERROR_OF[b as usize] as u32;
    (index, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distance(a: [u8; 3], b: [u8; 3]) -> u32 {
        a.iter()
            .zip(b.iter())
            .map(|(&x, &y)| {
                let d = x as i32 - y as i32;
                (d * d) as u32
            })
            .sum()
    }

    /// Brute force over the 255 opaque entries.
    fn nearest_distance(c: [u8; 3]) -> u32 {
        (0..255u8).map(|i| distance(c, ENTRIES[i as usize])).min().unwrap_or(u32::MAX)
    }

    #[test]
    fn entries_are_distinct_and_grays_are_fine() {
        let palette = DesktopPalette::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..255u8 {
            assert!(seen.insert(palette.rgb_of(i)), "duplicate colour at index {i}");
        }
        let mut grays: Vec<u8> = seen.iter().filter(|c| c[0] == c[1] && c[1] == c[2]).map(|c| c[0]).collect();
        grays.sort_unstable();
        assert_eq!(grays.len(), 45);
        assert_eq!(grays.first(), Some(&0));
        assert_eq!(grays.last(), Some(&255));
        let widest = grays.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(255);
        assert!(widest <= 7, "gray gap of {widest}");
        assert_eq!(palette.gif_color_table().len(), 768);
    }

    #[test]
    fn lookup_is_nearest_for_a_sample_of_colours() {
        let palette = DesktopPalette::new();
        let mut samples: Vec<[u8; 3]> = Vec::new();
        // Every gray, a coarse grid, and pseudo-random colours (xorshift).
        for v in 0..=255u8 {
            samples.push([v, v, v]);
            samples.push([v, v.wrapping_add(3), v.wrapping_sub(2)]);
        }
        for r in (0..=255u32).step_by(17) {
            for g in (0..=255u32).step_by(17) {
                for b in (0..=255u32).step_by(17) {
                    samples.push([r as u8, g as u8, b as u8]);
                }
            }
        }
        let mut state = 0x9e37_79b9_u32;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let [r, g, b, _] = state.to_le_bytes();
            samples.push([r, g, b]);
        }
        for c in samples {
            let index = palette.index_of(c[0], c[1], c[2]);
            assert_ne!(index, TRANSPARENT_INDEX);
            let got = distance(c, palette.rgb_of(index));
            assert_eq!(got, nearest_distance(c), "colour {c:?} -> index {index}");
        }
    }

    #[test]
    fn palette_colours_map_to_themselves() {
        let palette = DesktopPalette::new();
        for i in 0..255u8 {
            let [r, g, b] = palette.rgb_of(i);
            assert_eq!(palette.index_of(r, g, b), i);
        }
    }
}
