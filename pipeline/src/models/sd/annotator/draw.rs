//! OpenCV's 1-pixel lines (`cv2.line(…, thickness=1)`, 8-connected), as the preprocessors that
//! draw what they detect call it: the segment clipped to the canvas in integers
//! (`clipLine`), then walked from its left end by Bresenham's steps (`LineIterator`), so the
//! pixels are OpenCV's own.

use image::{GrayImage, Luma};

/// `(x0, y0)`–`(x1, y1)` clipped to a `w`×`h` canvas as OpenCV's `clipLine` clips it (integer
/// arithmetic, divisions truncated), or `None` when it misses the canvas.
fn clip(
    w: i64,
    h: i64,
    (mut x1, mut y1): (i64, i64),
    (mut x2, mut y2): (i64, i64),
) -> Option<[i64; 4]> {
    if w <= 0 || h <= 0 {
        return None;
    }
    let (right, bottom) = (w - 1, h - 1);
    let code = |x: i64, y: i64| {
        i32::from(x < 0)
            + i32::from(x > right) * 2
            + i32::from(y < 0) * 4
            + i32::from(y > bottom) * 8
    };
    let (mut c1, mut c2) = (code(x1, y1), code(x2, y2));
    if (c1 & c2) == 0 && (c1 | c2) != 0 {
        if c1 & 12 != 0 {
            let a = if c1 < 8 { 0 } else { bottom };
            x1 += (a - y1) * (x2 - x1) / (y2 - y1);
            y1 = a;
            c1 = i32::from(x1 < 0) + i32::from(x1 > right) * 2;
        }
        if c2 & 12 != 0 {
            let a = if c2 < 8 { 0 } else { bottom };
            x2 += (a - y2) * (x2 - x1) / (y2 - y1);
            y2 = a;
            c2 = i32::from(x2 < 0) + i32::from(x2 > right) * 2;
        }
        if (c1 & c2) == 0 && (c1 | c2) != 0 {
            if c1 != 0 {
                let a = if c1 == 1 { 0 } else { right };
                y1 += (a - x1) * (y2 - y1) / (x2 - x1);
                x1 = a;
                c1 = 0;
            }
            if c2 != 0 {
                let a = if c2 == 1 { 0 } else { right };
                y2 += (a - x2) * (y2 - y1) / (x2 - x1);
                x2 = a;
                c2 = 0;
            }
        }
    }
    ((c1 | c2) == 0).then_some([x1, y1, x2, y2])
}

/// Draws the 1-pixel line from `from` to `to` (pixel coordinates, either end anywhere) on
/// `canvas` in `value`, as `cv2.line(canvas, from, to, value, 1)` does.
pub fn line(canvas: &mut GrayImage, from: (i64, i64), to: (i64, i64), value: u8) {
    let (w, h) = (i64::from(canvas.width()), i64::from(canvas.height()));
    let Some([mut x1, mut y1, x2, y2]) = clip(w, h, from, to) else {
        return;
    };
    let (mut dx, mut dy) = (x2 - x1, y2 - y1);
    // Walked from the left end.
    if dx < 0 {
        (dx, dy) = (-dx, -dy);
        (x1, y1) = (x2, y2);
    }
    let y_step = if dy < 0 { -1 } else { 1 };
    dy = dy.abs();
    // The major axis takes a step every time, the minor one when the error runs out.
    let steep = dy > dx;
    let (major, minor) = if steep { (dy, dx) } else { (dx, dy) };
    let (major_step, minor_step) = if steep {
        ((0, y_step), (1, 0))
    } else {
        ((1, 0), (0, y_step))
    };
    let mut err = major - 2 * minor;
    let (mut x, mut y) = (x1, y1);
    for i in 0..=major {
        if i > 0 {
            let diagonal = err < 0;
            err -= 2 * minor;
            x += major_step.0;
            y += major_step.1;
            if diagonal {
                err += 2 * major;
                x += minor_step.0;
                y += minor_step.1;
            }
        }
        if (0..w).contains(&x) && (0..h).contains(&y) {
            canvas.put_pixel(x as u32, y as u32, Luma([value]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_bresenhams_steps_from_the_left_end() {
        let mut canvas = GrayImage::new(6, 4);
        // Drawn right to left: the same pixels as left to right.
        line(&mut canvas, (5, 2), (0, 0), 255);
        let lit: Vec<(u32, u32)> = canvas
            .enumerate_pixels()
            .filter(|(_, _, p)| p[0] == 255)
            .map(|(x, y, _)| (x, y))
            .collect();
        // err starts at 5 − 4 = 1: the first step goes straight, the second and fourth climb.
        assert_eq!(lit, [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (5, 2)]);
    }

    #[test]
    fn clips_to_the_canvas_in_integers() {
        assert_eq!(clip(10, 10, (-5, 5), (5, 5)), Some([0, 5, 5, 5]));
        assert_eq!(clip(10, 10, (-5, -5), (-1, 20)), None);
        // y = −4 → 0 moves x by 4·6/12 = 2.
        assert_eq!(clip(10, 10, (0, -4), (6, 8)), Some([2, 0, 6, 8]));
    }
}
