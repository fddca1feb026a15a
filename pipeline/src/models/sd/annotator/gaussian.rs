//! Gaussian blurs as OpenCV's `cv2.GaussianBlur` makes them with a σ and no kernel size: its
//! kernel length for float and byte images, and its default border (`BORDER_REFLECT_101`).

/// How many σ each side OpenCV's Gaussian blur reaches on float images.
pub const FLOAT_RADII: f64 = 4.0;
/// How many σ each side it reaches on byte images.
pub const BYTE_RADII: f64 = 3.0;

/// OpenCV's Gaussian kernel for `sigma` reaching `radii` σ each side: `round(2·radii·σ + 1) | 1`
/// taps of `exp(-d² / 2σ²)`, normalised to sum 1.
pub fn kernel(sigma: f64, radii: f64) -> Vec<f32> {
    let taps = ((sigma * radii * 2.0 + 1.0).round() as usize) | 1;
    let centre = (taps / 2) as f64;
    let weights: Vec<f64> = (0..taps)
        .map(|i| (-(i as f64 - centre).powi(2) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = weights.iter().sum();
    weights.iter().map(|w| (w / sum) as f32).collect()
}

/// OpenCV's `BORDER_REFLECT_101` index of `i` on a side of `n` (`gfedcb|abcdefgh|gfedcba`).
pub fn reflect_101(mut i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    loop {
        if i < 0 {
            i = -i;
        } else if i >= n {
            i = 2 * (n - 1) - i;
        } else {
            return i as usize;
        }
    }
}

/// `plane` (`h` rows of `w`) blurred by the separable `kernel`, rows then columns, with
/// OpenCV's default border; each pass adds whole shifted rows, which vectorises.
pub fn blur(plane: &[f32], w: usize, h: usize, kernel: &[f32]) -> Vec<f32> {
    let half = kernel.len() / 2;
    let mut rows = vec![0.0f32; w * h];
    let mut line = vec![0.0f32; w + 2 * half];
    for (row, blurred) in plane.chunks_exact(w).zip(rows.chunks_exact_mut(w)) {
        for (i, value) in line.iter_mut().enumerate() {
            *value = row[reflect_101(i as isize - half as isize, w)];
        }
        for (k, &weight) in kernel.iter().enumerate() {
            for (out, &value) in blurred.iter_mut().zip(&line[k..k + w]) {
                *out += weight * value;
            }
        }
    }
    let mut out = vec![0.0f32; w * h];
    for (y, blurred) in out.chunks_exact_mut(w).enumerate() {
        for (k, &weight) in kernel.iter().enumerate() {
            let source = reflect_101(y as isize + k as isize - half as isize, h);
            for (out, &value) in blurred.iter_mut().zip(&rows[source * w..(source + 1) * w]) {
                *out += weight * value;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_101_folds_at_both_ends() {
        let folded: Vec<usize> = (-3..8).map(|i| reflect_101(i, 5)).collect();
        assert_eq!(folded, [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
        assert_eq!(reflect_101(-7, 3), 1, "folds again past the far end");
        assert_eq!(reflect_101(4, 1), 0);
    }

    #[test]
    fn kernels_are_opencvs_lengths_and_sum_to_one() {
        assert_eq!(kernel(6.0, FLOAT_RADII).len(), 49);
        assert_eq!(kernel(0.5, FLOAT_RADII).len(), 5);
        assert_eq!(kernel(3.0, BYTE_RADII).len(), 19);
        let sum: f32 = kernel(5.0, FLOAT_RADII).iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
    }
}
