//! An inpainting mask as the Generate panel paints it over the start image: white is repainted,
//! black kept (the pipeline's `mask` convention), one mask pixel per start-image pixel.

use image::{GrayImage, Luma};

/// A mask pixel's value where the picture is repainted.
pub const REPAINT: u8 = 255;
/// A mask pixel's value where the picture is kept.
pub const KEEP: u8 = 0;

/// A `width`×`height` mask that keeps everything.
pub fn blank(width: u32, height: u32) -> GrayImage {
    GrayImage::from_pixel(width, height, Luma([KEEP]))
}

/// Whether a mask pixel's value means repaint (the pipeline reads values as a blend weight;
/// the panel paints only [`REPAINT`] and [`KEEP`]).
fn repaints(value: u8) -> bool {
    value >= 128
}

/// Paints a brush stroke from `from` to `to` (in mask pixels, fractional: a pixel's centre is
/// at `x + 0.5`) with a round brush of `radius` pixels: every pixel whose centre lies within
/// `radius` of the segment becomes `value`, so a fast drag leaves no gaps. Parts outside the
/// mask are ignored.
pub fn stroke(mask: &mut GrayImage, from: [f32; 2], to: [f32; 2], radius: f32, value: u8) {
    let radius = radius.max(0.5);
    let (width, height) = mask.dimensions();
    if width == 0 || height == 0 || !from.iter().chain(&to).all(|v| v.is_finite()) {
        return;
    }
    // The pixels whose centres the capsule's bounding box can reach, clipped to the mask.
    let span = |a: f32, b: f32, size: u32| {
        let low = (a.min(b) - radius - 0.5).floor().max(0.0);
        let high = (a.max(b) + radius - 0.5).ceil().min(size as f32 - 1.0);
        (low <= high).then_some((low as u32, high as u32))
    };
    let (Some((x0, x1)), Some((y0, y1))) =
        (span(from[0], to[0], width), span(from[1], to[1], height))
    else {
        return;
    };
    let [dx, dy] = [to[0] - from[0], to[1] - from[1]];
    let length2 = dx * dx + dy * dy;
    for y in y0..=y1 {
        for x in x0..=x1 {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            // The nearest point of the segment to the pixel's centre.
            let t = if length2 > 0.0 {
                (((px - from[0]) * dx + (py - from[1]) * dy) / length2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (nx, ny) = (from[0] + t * dx - px, from[1] + t * dy - py);
            if nx * nx + ny * ny <= radius * radius {
                mask.put_pixel(x, y, Luma([value]));
            }
        }
    }
}

/// Swaps what is kept and what is repainted.
pub fn invert(mask: &mut GrayImage) {
    for pixel in mask.pixels_mut() {
        pixel.0[0] = if repaints(pixel.0[0]) { KEEP } else { REPAINT };
    }
}

/// The share of the picture repainted, 0–1.
pub fn coverage(mask: &GrayImage) -> f32 {
    let total = mask.width() as usize * mask.height() as usize;
    if total == 0 {
        return 0.0;
    }
    let painted = mask.pixels().filter(|p| repaints(p.0[0])).count();
    painted as f32 / total as f32
}

/// The repainted pixels as horizontal runs, row by row: `(y, first x, one past the last x)`.
/// The panel draws its overlay from these (a few rectangles per row, not one per pixel).
pub fn runs(mask: &GrayImage) -> Vec<(u32, u32, u32)> {
    let mut runs = Vec::new();
    for (y, row) in mask.enumerate_rows() {
        let mut start = None;
        for (x, _, pixel) in row {
            match (repaints(pixel.0[0]), start) {
                (true, None) => start = Some(x),
                (false, Some(first)) => {
                    runs.push((y, first, x));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(first) = start {
            runs.push((y, first, mask.width()));
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_dab_paints_a_disc_and_nothing_outside_it() {
        let mut mask = blank(16, 16);
        stroke(&mut mask, [8.0, 8.0], [8.0, 8.0], 3.0, REPAINT);
        for (x, y, pixel) in mask.enumerate_pixels() {
            let (dx, dy) = (x as f32 + 0.5 - 8.0, y as f32 + 0.5 - 8.0);
            let inside = dx * dx + dy * dy <= 9.0;
            assert_eq!(pixel.0[0] == REPAINT, inside, "pixel ({x}, {y})");
        }
        // π r² ≈ 28 pixels.
        let painted = (coverage(&mask) * 256.0).round();
        assert!((24.0..=32.0).contains(&painted), "{painted}");
    }

    #[test]
    fn a_fast_drag_leaves_no_gaps_and_erasing_takes_it_back() {
        let mut mask = blank(64, 8);
        // One frame's drag across the whole mask: every pixel of the line is painted.
        stroke(&mut mask, [0.5, 4.0], [63.5, 4.0], 1.0, REPAINT);
        assert!((0..64).all(|x| mask.get_pixel(x, 3).0[0] == REPAINT));
        assert!((0..64).all(|x| mask.get_pixel(x, 0).0[0] == KEEP));
        stroke(&mut mask, [0.0, 4.0], [64.0, 4.0], 2.0, KEEP);
        assert_eq!(coverage(&mask), 0.0);
    }

    #[test]
    fn invert_swaps_kept_and_repainted() {
        let mut mask = blank(4, 4);
        stroke(&mut mask, [0.5, 0.5], [0.5, 0.5], 0.5, REPAINT);
        invert(&mut mask);
        assert_eq!(mask.get_pixel(0, 0).0[0], KEEP);
        assert_eq!(coverage(&mask), 15.0 / 16.0);
    }

    proptest! {
        /// Wherever a stroke starts and ends (off the mask too) and however wide, it never
        /// panics, paints only the brush's value, and paints every pixel whose centre is
        /// within the brush of its ends.
        #[test]
        fn strokes_stay_inside_the_mask_and_cover_their_ends(
            (w, h) in (1u32..40, 1u32..40),
            from in prop::array::uniform2(-20.0f32..60.0),
            to in prop::array::uniform2(-20.0f32..60.0),
            radius in 0.0f32..12.0,
        ) {
            let mut mask = blank(w, h);
            stroke(&mut mask, from, to, radius, REPAINT);
            let radius = radius.max(0.5);
            for (x, y, pixel) in mask.enumerate_pixels() {
                prop_assert!(pixel.0[0] == REPAINT || pixel.0[0] == KEEP);
                for end in [from, to] {
                    let (dx, dy) = (x as f32 + 0.5 - end[0], y as f32 + 0.5 - end[1]);
                    if dx * dx + dy * dy <= radius * radius * 0.99 {
                        prop_assert_eq!(pixel.0[0], REPAINT, "({}, {}) near {:?}", x, y, end);
                    }
                }
            }
        }

        /// The overlay's runs cover exactly the repainted pixels.
        #[test]
        fn runs_cover_exactly_the_repainted_pixels(
            pixels in prop::collection::vec(prop::bool::ANY, 1..200),
            width in 1u32..20,
        ) {
            let height = (pixels.len() as u32).div_ceil(width);
            let mut mask = blank(width, height);
            for (i, on) in pixels.iter().enumerate() {
                if *on {
                    mask.put_pixel(i as u32 % width, i as u32 / width, Luma([REPAINT]));
                }
            }
            let mut from_runs = blank(width, height);
            for (y, first, end) in runs(&mask) {
                prop_assert!(first < end && end <= width);
                for x in first..end {
                    from_runs.put_pixel(x, y, Luma([REPAINT]));
                }
            }
            prop_assert_eq!(from_runs, mask);
        }
    }
}
