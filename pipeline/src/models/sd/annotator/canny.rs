//! The Canny edge detector as OpenCV's `cv2.Canny` computes it — what A1111's and ComfyUI's
//! "canny" preprocessors call to turn a picture into a Canny ControlNet's control image:
//! 3×3 Sobel gradients (borders replicated), their L1 magnitude (of a colour image, the
//! channel where it is largest), non-maximum suppression along the gradient's direction
//! quantised to 45° in OpenCV's fixed-point arithmetic, and hysteresis: pixels above the high
//! threshold are edges, and so are those above the low one that touch an edge (8-connected).
//!
//! ```
//! use autonomy_pipeline::models::sd::annotator::canny::canny;
//! // A white square on black (columns 4 to 11): its outline, one pixel wide.
//! let square = image::RgbImage::from_fn(16, 16, |x, y| {
//!     let inside = (4..12).contains(&x) && (4..12).contains(&y);
//!     image::Rgb(if inside { [255; 3] } else { [0; 3] })
//! });
//! let edges = canny(&square, 100.0, 200.0);
//! let row: Vec<u8> = (0..16).map(|x| edges.get_pixel(x, 8)[0]).collect();
//! assert_eq!(row, [0, 0, 0, 255, 0, 0, 0, 0, 0, 0, 0, 255, 0, 0, 0, 0]);
//! ```

use image::{GrayImage, Luma, RgbImage};

/// A1111's and ComfyUI's default thresholds.
pub const DEFAULT_THRESHOLDS: (f64, f64) = (100.0, 200.0);

/// tan(22.5°) in OpenCV's 15-bit fixed point.
const TG22: i64 = 13573;
/// OpenCV's fixed-point shift.
const SHIFT: u32 = 15;

/// The Canny edges of `image`: 255 on an edge, 0 elsewhere. `low` and `high` are thresholds
/// on the L1 gradient magnitude (swapped when given the other way round, as OpenCV does).
pub fn canny(image: &RgbImage, low: f64, high: f64) -> GrayImage {
    let (low, high) = if low > high { (high, low) } else { (low, high) };
    let (low, high) = (low.floor() as i64, high.floor() as i64);
    let (w, h) = (image.width() as usize, image.height() as usize);
    if w == 0 || h == 0 {
        return GrayImage::new(image.width(), image.height());
    }
    let (dx, dy, magnitude) = gradients(image);
    // Magnitudes with a frame of zeros, so that every pixel has eight neighbours.
    let stride = w + 2;
    let mut framed = vec![0i64; stride * (h + 2)];
    for y in 0..h {
        framed[(y + 1) * stride + 1..(y + 1) * stride + 1 + w]
            .copy_from_slice(&magnitude[y * w..(y + 1) * w]);
    }
    // The magnitude at `(x + dx, y + dy)`, zero outside the image.
    let around = |x: usize, y: usize, dx: isize, dy: isize| {
        let (fx, fy) = (
            (x + 1).wrapping_add_signed(dx),
            (y + 1).wrapping_add_signed(dy),
        );
        framed[fy * stride + fx]
    };
    // 2: an edge; 1: a candidate (a local maximum above `low`); 0: neither.
    let mut class = vec![0u8; w * h];
    let mut stack = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let m = magnitude[i];
            if m <= low {
                continue;
            }
            let (xs, ys) = (dx[i], dy[i]);
            let (ax, ay) = (xs.abs(), ys.abs() << SHIFT);
            let tg22x = ax * TG22;
            let neighbour = |dx: isize, dy: isize| around(x, y, dx, dy);
            let maximum = if ay < tg22x {
                // Across the edge is left to right.
                m > neighbour(-1, 0) && m >= neighbour(1, 0)
            } else if ay > tg22x + (ax << (SHIFT + 1)) {
                // Across the edge is top to bottom.
                m > neighbour(0, -1) && m >= neighbour(0, 1)
            } else {
                let s: isize = if (xs ^ ys) < 0 { -1 } else { 1 };
                m > neighbour(-s, -1) && m > neighbour(s, 1)
            };
            if !maximum {
                continue;
            }
            if m > high {
                class[i] = 2;
                stack.push((x, y));
            } else {
                class[i] = 1;
            }
        }
    }
    while let Some((x, y)) = stack.pop() {
        for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
            for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                let j = ny * w + nx;
                if class[j] == 1 {
                    class[j] = 2;
                    stack.push((nx, ny));
                }
            }
        }
    }
    GrayImage::from_fn(image.width(), image.height(), |x, y| {
        Luma([if class[y as usize * w + x as usize] == 2 {
            255
        } else {
            0
        }])
    })
}

/// Each pixel's 3×3 Sobel gradient `(dx, dy)` and L1 magnitude, borders replicated; of the
/// three channels, the one whose magnitude is largest (the first of equals).
fn gradients(image: &RgbImage) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let value = |x: i64, y: i64, c: usize| -> i64 {
        let (x, y) = (x.clamp(0, w - 1), y.clamp(0, h - 1));
        i64::from(image.get_pixel(x as u32, y as u32)[c])
    };
    let n = (w * h) as usize;
    let (mut dx, mut dy, mut magnitude) = (vec![0; n], vec![0; n], vec![0; n]);
    for y in 0..h {
        for x in 0..w {
            let i = (y * w + x) as usize;
            let mut best = -1;
            for c in 0..3 {
                let p = |ox: i64, oy: i64| value(x + ox, y + oy, c);
                let gx = (p(1, -1) + 2 * p(1, 0) + p(1, 1)) - (p(-1, -1) + 2 * p(-1, 0) + p(-1, 1));
                let gy = (p(-1, 1) + 2 * p(0, 1) + p(1, 1)) - (p(-1, -1) + 2 * p(0, -1) + p(1, -1));
                let m = gx.abs() + gy.abs();
                if m > best {
                    (best, dx[i], dy[i], magnitude[i]) = (m, gx, gy, m);
                }
            }
        }
    }
    (dx, dy, magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_image_has_no_edges_and_thresholds_may_come_either_way() {
        let flat = RgbImage::from_pixel(9, 7, image::Rgb([90, 120, 30]));
        assert!(canny(&flat, 100.0, 200.0).pixels().all(|p| p[0] == 0));
        let square = RgbImage::from_fn(12, 12, |x, y| {
            let inside = (3..9).contains(&x) && (3..9).contains(&y);
            image::Rgb(if inside { [200, 10, 10] } else { [0; 3] })
        });
        assert_eq!(canny(&square, 100.0, 200.0), canny(&square, 200.0, 100.0));
        assert!(canny(&square, 100.0, 200.0).pixels().any(|p| p[0] == 255));
        assert_eq!(canny(&RgbImage::new(0, 0), 1.0, 2.0).dimensions(), (0, 0));
    }

    #[test]
    fn a_weak_edge_survives_where_it_touches_a_strong_one() {
        // A vertical step whose upper half is strong (magnitude 4·100) and lower half weak
        // (4·40), as `cv2.Canny` marks it: with thresholds 120/300 the weak half is kept,
        // being connected; above its magnitude (170) it is not; with no strong pixel
        // (600) nothing is.
        let step = RgbImage::from_fn(10, 12, |x, y| {
            let level = if x < 5 {
                0
            } else if y < 6 {
                100
            } else {
                40
            };
            image::Rgb([level; 3])
        });
        let column = |low, high| -> Vec<u8> {
            let edges = canny(&step, low, high);
            (0..12).map(|y| edges.get_pixel(4, y)[0]).collect()
        };
        let strong = [255, 255, 255, 255, 255];
        assert_eq!(column(120.0, 300.0)[..5], strong);
        assert_eq!(column(120.0, 300.0)[7..], [255; 5]);
        assert_eq!(column(170.0, 300.0)[..5], strong);
        assert_eq!(column(170.0, 300.0)[5..], [0; 7]);
        assert!(canny(&step, 120.0, 600.0).pixels().all(|p| p[0] == 0));
    }
}
