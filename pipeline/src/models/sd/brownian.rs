//! A Brownian motion W(t) on an interval of noise levels, sampled lazily and reproducibly: the
//! Brownian tree that k-diffusion and diffusers drive DPM++ SDE with (torchsde's
//! `BrownianTree`). W at a time is found by bisecting the interval, each midpoint drawn from
//! the Brownian bridge between its ends with a seed fixed by its place in the tree, so every
//! query of the same tree sees the same path: increments over overlapping intervals (the SDE
//! step's midpoint stage and its whole step) are correlated as a Brownian motion's are.

use crate::models::noise::gaussian;

/// Bisections before the bridge's mean is taken: the interval is resolved to 2⁻³⁰ of its length.
const DEPTH: u32 = 30;

/// One Brownian motion of `len` independent components on `[start, end]`, W(start) = 0.
pub struct BrownianTree {
    seed: u64,
    start: f64,
    end: f64,
    /// W(end).
    last: Vec<f32>,
}

impl BrownianTree {
    /// The motion of `len` components on `[start, end]` drawn from `seed`.
    pub fn new(seed: u64, start: f64, end: f64, len: usize) -> Self {
        let (start, end) = (start.min(end), start.max(end));
        let scale = (end - start).sqrt() as f32;
        let last = gaussian(seed, len).into_iter().map(|z| z * scale).collect();
        Self {
            seed,
            start,
            end,
            last,
        }
    }

    /// W(t), t clamped to the interval.
    pub fn at(&self, t: f64) -> Vec<f32> {
        let t = t.clamp(self.start, self.end);
        let (mut low, mut high) = (self.start, self.end);
        let mut at_low = vec![0.0f32; self.last.len()];
        let mut at_high = self.last.clone();
        // Heap numbering of the tree's nodes: the root is 1, the children of n are 2n, 2n + 1.
        let mut node: u64 = 1;
        for _ in 0..DEPTH {
            if t == low {
                return at_low;
            }
            if t == high {
                return at_high;
            }
            let mid = 0.5 * (low + high);
            let spread = (0.25 * (high - low)).sqrt() as f32;
            let draw = gaussian(
                self.seed ^ node.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                at_low.len(),
            );
            let at_mid: Vec<f32> = at_low
                .iter()
                .zip(&at_high)
                .zip(draw)
                .map(|((a, b), z)| 0.5 * (a + b) + spread * z)
                .collect();
            if t < mid {
                (high, at_high, node) = (mid, at_mid, 2 * node);
            } else {
                (low, at_low, node) = (mid, at_mid, 2 * node + 1);
            }
        }
        let w = ((t - low) / (high - low)) as f32;
        at_low
            .iter()
            .zip(&at_high)
            .map(|(a, b)| a + w * (b - a))
            .collect()
    }

    /// (W(to) − W(from)) / √|to − from|: standard normal per component.
    pub fn increment(&self, from: f64, to: f64) -> Vec<f32> {
        let scale = (to - from).abs().sqrt().max(f64::MIN_POSITIVE) as f32;
        self.at(to)
            .into_iter()
            .zip(self.at(from))
            .map(|(b, a)| (b - a) / scale)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_and_variance(values: &[f32]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let variance = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, variance)
    }

    fn correlation(a: &[f32], b: &[f32]) -> f64 {
        let n = a.len() as f64;
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum::<f64>()
            / n
    }

    #[test]
    fn increments_are_standard_normal_and_overlap_as_a_brownian_motions_do() {
        let tree = BrownianTree::new(7, 0.03, 14.6, 20_000);
        // A DPM++ SDE step from σ = 3 to 1, with its midpoint √3.
        let (sigma, mid, next) = (3.0, 3f64.sqrt(), 1.0);
        let half = tree.increment(sigma, mid);
        let whole = tree.increment(sigma, next);
        let rest = tree.increment(mid, next);
        for values in [&half, &whole, &rest] {
            let (mean, variance) = mean_and_variance(values);
            assert!(mean.abs() < 0.03, "{mean}");
            assert!((variance - 1.0).abs() < 0.05, "{variance}");
        }
        // Disjoint intervals are independent; nested ones correlate by √(share).
        assert!(correlation(&half, &rest).abs() < 0.03);
        let expected = ((sigma - mid) / (sigma - next)).sqrt();
        assert!((correlation(&half, &whole) - expected).abs() < 0.03);
        // The same tree, the same path.
        assert_eq!(tree.increment(sigma, mid), half);
        assert_eq!(
            BrownianTree::new(7, 0.03, 14.6, 20_000).at(2.0),
            tree.at(2.0)
        );
        assert_ne!(
            BrownianTree::new(8, 0.03, 14.6, 20_000).at(2.0),
            tree.at(2.0)
        );
    }
}
