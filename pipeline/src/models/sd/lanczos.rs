//! Lanczos resampling of 8-bit images exactly as Pillow's `Image.resize(…, LANCZOS)` computes
//! it — what A1111's upscalers finish with, and its "Lanczos" upscaler alone: a separable
//! three-lobe filter widened by the scale when shrinking, its weights normalised and rounded to
//! 22-bit fixed point, the horizontal pass first into an 8-bit image, then the vertical. A
//! tileable image wraps around its edges instead of stopping at them.
//!
//! ```
//! use autonomy_pipeline::models::sd::lanczos::resize;
//! let flat = image::RgbImage::from_pixel(5, 3, image::Rgb([90, 120, 200]));
//! let big = resize(&flat, 20, 12, false);
//! assert_eq!(big.dimensions(), (20, 12));
//! assert!(big.pixels().all(|p| p.0 == [90, 120, 200]));
//! ```

use image::RgbImage;

/// Pillow's `PRECISION_BITS` for 8-bit images: 32 − 8 − 2.
const PRECISION: u32 = 22;

/// Pillow's Lanczos window: `sinc(x)·sinc(x/3)` on [-3, 3).
fn lanczos(x: f64) -> f64 {
    let sinc = |x: f64| {
        if x == 0.0 {
            1.0
        } else {
            let x = x * std::f64::consts::PI;
            x.sin() / x
        }
    };
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// The inputs one output sample reads, from `first` on, and their fixed-point weights.
struct Taps {
    first: isize,
    weights: Vec<i64>,
}

/// Pillow's `precompute_coeffs` for `input` samples to `output`, then its 8-bit rounding;
/// with `wrap` the window runs past the edges (read modulo `input`) instead of being cut.
fn taps(input: usize, output: usize, wrap: bool) -> Vec<Taps> {
    let scale = input as f64 / output as f64;
    let filterscale = scale.max(1.0);
    let support = 3.0 * filterscale;
    (0..output)
        .map(|out| {
            let center = (out as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero.
            let mut first = (center - support + 0.5).trunc() as isize;
            let mut end = (center + support + 0.5).trunc() as isize;
            if !wrap {
                first = first.max(0);
                end = end.min(input as isize);
            }
            let raw: Vec<f64> = (first..end.max(first))
                .map(|x| lanczos((x as f64 - center + 0.5) / filterscale))
                .collect();
            let sum: f64 = raw.iter().sum();
            let one = f64::from(1u32 << PRECISION);
            let weights = raw
                .iter()
                .map(|w| {
                    let w = if sum != 0.0 { w / sum } else { *w };
                    (if w < 0.0 {
                        w * one - 0.5
                    } else {
                        w * one + 0.5
                    }) as i64
                })
                .collect();
            Taps { first, weights }
        })
        .collect()
}

/// One weighted sum rounded back to 8 bits, as Pillow's `clip8`.
fn clip8(sum: i64) -> u8 {
    ((sum + (1 << (PRECISION - 1))) >> PRECISION).clamp(0, 255) as u8
}

/// Where input `at` lies in `0..len`: modulo `len` (wrapping) — the taps of an image that does
/// not wrap never leave it.
fn index(at: isize, len: usize) -> usize {
    at.rem_euclid(len.max(1) as isize) as usize
}

/// `image` resampled to `width × height` as Pillow's `resize(…, Image.LANCZOS)` does, bit for
/// bit; `wrap` reads across the edges (a tileable texture) where Pillow stops at them. A side
/// that keeps its size is not resampled; an empty image gives a black one.
pub fn resize(image: &RgbImage, width: u32, height: u32, wrap: bool) -> RgbImage {
    let (w, h) = image.dimensions();
    if w == 0 || h == 0 {
        return RgbImage::new(width, height);
    }
    let across = if width != w {
        let taps = taps(w as usize, width as usize, wrap);
        RgbImage::from_fn(width, h, |x, y| {
            let t = &taps[x as usize];
            let mut sums = [0i64; 3];
            for (i, weight) in t.weights.iter().enumerate() {
                let p = image.get_pixel(index(t.first + i as isize, w as usize) as u32, y);
                for (sum, v) in sums.iter_mut().zip(p.0) {
                    *sum += i64::from(v) * weight;
                }
            }
            image::Rgb(sums.map(clip8))
        })
    } else {
        image.clone()
    };
    if height == h {
        return across;
    }
    let taps = taps(h as usize, height as usize, wrap);
    RgbImage::from_fn(across.width(), height, |x, y| {
        let t = &taps[y as usize];
        let mut sums = [0i64; 3];
        for (i, weight) in t.weights.iter().enumerate() {
            let p = across.get_pixel(x, index(t.first + i as isize, h as usize) as u32);
            for (sum, v) in sums.iter_mut().zip(p.0) {
                *sum += i64::from(v) * weight;
            }
        }
        image::Rgb(sums.map(clip8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_one_at_zero_and_zero_at_whole_numbers_and_outside() {
        assert_eq!(lanczos(0.0), 1.0);
        for x in [-2.0, -1.0, 1.0, 2.0] {
            assert!(lanczos(x).abs() < 1e-15, "{x}");
        }
        assert_eq!(lanczos(3.0), 0.0);
        assert_eq!(lanczos(-3.5), 0.0);
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (input, output) in [(17, 64), (64, 11), (23, 23), (5, 4)] {
            for t in taps(input, output, false) {
                let sum: i64 = t.weights.iter().sum();
                assert!(
                    (sum - (1 << PRECISION)).abs() <= t.weights.len() as i64,
                    "{sum}"
                );
            }
        }
    }

    #[test]
    fn wrapping_keeps_a_tileable_stripe_seamless() {
        // A stripe on the first column: shrinking with wrap spreads it to both edges alike.
        let image = RgbImage::from_fn(16, 4, |x, _| image::Rgb([if x == 0 { 255 } else { 0 }; 3]));
        let small = resize(&image, 5, 4, true);
        let clipped = resize(&image, 5, 4, false);
        assert!(
            small.get_pixel(4, 0).0[0] > 0,
            "the right edge sees the wrapped stripe"
        );
        assert_eq!(clipped.get_pixel(4, 0).0[0], 0);
    }

    #[test]
    fn an_empty_image_gives_a_black_one() {
        let out = resize(&RgbImage::new(0, 3), 4, 4, true);
        assert_eq!(out.dimensions(), (4, 4));
    }
}
