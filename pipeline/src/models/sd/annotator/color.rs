//! A1111's `t2ia_color_grid`, the control image of TencentARC's colour adapter
//! (`t2iadapter_color_sd14v1.pth`, a light adapter): the picture shrunk to a 64th of its size by
//! OpenCV's bicubic resize and blown back up in blocks, a grid of the picture's colours.

use image::{Rgb, RgbImage};

/// How many times smaller each side of the grid is than the picture.
const CELL: u32 = 64;
/// OpenCV's bicubic `A`.
const A: f32 = -0.75;
/// OpenCV's fixed-point scale of resize coefficients (`INTER_RESIZE_COEF_SCALE`).
const COEF_SCALE: f32 = 2048.0;

/// The colour grid of `picture`: one cell per 64×64 pixels (at least one), each the colour
/// OpenCV's bicubic resize gives it, at the picture's size.
pub fn color_grid(picture: &RgbImage) -> RgbImage {
    let (w, h) = picture.dimensions();
    let small = bicubic(picture, (w / CELL).max(1), (h / CELL).max(1));
    let (sw, sh) = small.dimensions();
    // OpenCV's nearest neighbour: source pixel ⌊x · source / destination⌋.
    let nearest = |x: u32, to: u32, from: u32| {
        ((f64::from(x) * f64::from(from) / f64::from(to)).floor() as u32).min(from - 1)
    };
    RgbImage::from_fn(w, h, |x, y| {
        *small.get_pixel(nearest(x, w, sw), nearest(y, h, sh))
    })
}

/// OpenCV's four bicubic weights for a sample `t` (0–1) past the second of four pixels.
fn weights(t: f32) -> [f32; 4] {
    let w0 = ((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let w2 = ((A + 2.0) * (1.0 - t) - (A + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0;
    [w0, w1, w2, 1.0 - w0 - w1 - w2]
}

/// The weights in OpenCV's fixed point for bytes.
fn fixed(weights: [f32; 4]) -> [i64; 4] {
    weights.map(|w| (w * COEF_SCALE).round() as i64)
}

/// For each of `to` output pixels along a side of `from`, its four source pixels (clamped to
/// the side, as OpenCV replicates the border) and their weights.
fn taps(from: u32, to: u32) -> Vec<([usize; 4], [f32; 4])> {
    let scale = f64::from(from) / f64::from(to);
    (0..to)
        .map(|d| {
            let f = ((f64::from(d) + 0.5) * scale - 0.5) as f32;
            let s = f.floor();
            let at = |k: i64| (s as i64 - 1 + k).clamp(0, i64::from(from) - 1) as usize;
            ([at(0), at(1), at(2), at(3)], weights(f - s))
        })
        .collect()
}

/// `picture` resized to `w`×`h` as OpenCV's `cv2.resize(…, INTER_CUBIC)` resizes bytes: the
/// rows, then the columns, in its 11-bit fixed point, rounded once at the end.
pub fn bicubic(picture: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (pw, ph) = picture.dimensions();
    let fixed_taps = |from, to| -> Vec<([usize; 4], [i64; 4])> {
        taps(from, to)
            .into_iter()
            .map(|(at, w)| (at, fixed(w)))
            .collect()
    };
    let (across, down) = (fixed_taps(pw, w), fixed_taps(ph, h));
    // Each source row resized along x, kept in fixed point: (row, x, channel).
    let rows: Vec<[i64; 3]> = (0..ph)
        .flat_map(|y| {
            across.iter().map(move |(xs, ws)| {
                let mut sum = [0i64; 3];
                for (&x, &weight) in xs.iter().zip(ws) {
                    let p = picture.get_pixel(x as u32, y).0;
                    for (c, s) in sum.iter_mut().enumerate() {
                        *s += i64::from(p[c]) * weight;
                    }
                }
                sum
            })
        })
        .collect();
    RgbImage::from_fn(w, h, |x, y| {
        let (ys, ws) = &down[y as usize];
        let mut sum = [0i64; 3];
        for (&row, &weight) in ys.iter().zip(ws) {
            let value = rows[row * w as usize + x as usize];
            for (s, v) in sum.iter_mut().zip(value) {
                *s += v * weight;
            }
        }
        // Both passes' scales, 2¹¹ each, off with rounding, then saturated to a byte.
        Rgb(sum.map(|s| ((s + (1 << 21)) >> 22).clamp(0, 255) as u8))
    })
}

/// The `w`×`h` map `values` resized to `to_w`×`to_h` as OpenCV resizes a float image with
/// `INTER_CUBIC` (no fixed point, no rounding).
pub fn bicubic_map(values: &[f32], (w, h): (u32, u32), (to_w, to_h): (u32, u32)) -> Vec<f32> {
    let (across, down) = (taps(w, to_w), taps(h, to_h));
    let rows: Vec<f32> = values
        .chunks_exact(w as usize)
        .flat_map(|row| {
            across
                .iter()
                .map(move |(xs, ws)| xs.iter().zip(ws).map(|(&x, &k)| row[x] * k).sum::<f32>())
        })
        .collect();
    let to_w = to_w as usize;
    down.iter()
        .flat_map(|(ys, ws)| {
            let rows = &rows;
            (0..to_w).map(move |x| {
                ys.iter()
                    .zip(ws)
                    .map(|(&y, &k)| rows[y * to_w + x] * k)
                    .sum::<f32>()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_weights_sum_to_one_and_keep_a_sample_on_a_pixel() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            let sum: i64 = fixed(weights(t)).iter().sum();
            assert!((sum - 2048).abs() <= 2, "{t}: {sum}");
        }
        assert_eq!(fixed(weights(0.0)), [0, 2048, 0, 0]);
    }

    #[test]
    fn a_grid_has_one_flat_cell_per_64_pixels() {
        let picture = RgbImage::from_fn(128, 64, |x, _| {
            Rgb(if x < 64 { [200, 0, 0] } else { [0, 0, 200] })
        });
        let grid = color_grid(&picture);
        assert_eq!(grid.dimensions(), (128, 64));
        assert_eq!(grid.get_pixel(10, 10), grid.get_pixel(63, 63));
        assert_ne!(grid.get_pixel(10, 10), grid.get_pixel(100, 10));
        let tiny = RgbImage::from_pixel(20, 10, Rgb([9, 8, 7]));
        assert_eq!(color_grid(&tiny), tiny, "smaller than a cell: one cell");
    }
}
