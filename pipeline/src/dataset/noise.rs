//! Periodic noise on a torus, the basis of tileable textures.
//!
//! Every function here takes tile coordinates `(u, v)` and returns the same value at `u + 1` and
//! `v + 1`: gradient noise whose lattice indices wrap at its period, fractal sums of such noise
//! with whole-number periods, and cellular (Worley) noise measuring distances on the torus. A
//! texture sampled from them at pixel centres therefore tiles without a seam.
//!
//! Written here rather than taken from a noise crate because the crates we know tile by blending
//! four samples (which softens contrast) instead of wrapping the lattice.

use rand::Rng;

/// Gradient (Perlin-style) noise with an integer period along each axis; roughly in [-1, 1].
#[derive(Clone, Debug)]
pub struct PeriodicNoise {
    period_x: usize,
    period_y: usize,
    gradients: Vec<[f32; 2]>,
}

impl PeriodicNoise {
    /// Noise with `period_x` × `period_y` lattice cells across one tile (each at least 1).
    pub fn new(rng: &mut impl Rng, period_x: usize, period_y: usize) -> PeriodicNoise {
        let (period_x, period_y) = (period_x.max(1), period_y.max(1));
        let gradients = (0..period_x * period_y)
            .map(|_| {
                let angle = rng.random_range(0.0..std::f32::consts::TAU);
                [angle.cos(), angle.sin()]
            })
            .collect();
        PeriodicNoise {
            period_x,
            period_y,
            gradients,
        }
    }

    /// Noise with the same period along both axes.
    pub fn square(rng: &mut impl Rng, period: usize) -> PeriodicNoise {
        PeriodicNoise::new(rng, period, period)
    }

    fn gradient(&self, ix: i64, iy: i64) -> [f32; 2] {
        let x = ix.rem_euclid(self.period_x as i64) as usize;
        let y = iy.rem_euclid(self.period_y as i64) as usize;
        self.gradients[y * self.period_x + x]
    }

    /// The noise at tile coordinates `(u, v)`.
    pub fn sample(&self, u: f32, v: f32) -> f32 {
        let x = u * self.period_x as f32;
        let y = v * self.period_y as f32;
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (ix, iy) = (x0 as i64, y0 as i64);
        let dot = |cx: i64, cy: i64, dx: f32, dy: f32| {
            let g = self.gradient(ix + cx, iy + cy);
            g[0] * dx + g[1] * dy
        };
        let n00 = dot(0, 0, fx, fy);
        let n10 = dot(1, 0, fx - 1.0, fy);
        let n01 = dot(0, 1, fx, fy - 1.0);
        let n11 = dot(1, 1, fx - 1.0, fy - 1.0);
        let (sx, sy) = (fade(fx), fade(fy));
        let top = n00 + (n10 - n00) * sx;
        let bottom = n01 + (n11 - n01) * sx;
        // 2D gradient noise stays within about ±0.7; scale to about ±1.
        ((top + (bottom - top) * sy) * 1.4).clamp(-1.0, 1.0)
    }
}

fn fade(t: f32) -> f32 {
    t * t * t * (t * (t * 6.0 - 15.0) + 10.0)
}

/// Fractal sum of [`PeriodicNoise`] octaves, each twice the frequency and half the amplitude of
/// the last; normalised to about [-1, 1].
#[derive(Clone, Debug)]
pub struct Fbm {
    octaves: Vec<PeriodicNoise>,
}

impl Fbm {
    /// `octaves` octaves starting at `period_x` × `period_y` cells per tile.
    pub fn new(rng: &mut impl Rng, period_x: usize, period_y: usize, octaves: usize) -> Fbm {
        let octaves = (0..octaves.max(1))
            .map(|o| PeriodicNoise::new(rng, period_x << o, period_y << o))
            .collect();
        Fbm { octaves }
    }

    /// Square-period fractal noise.
    pub fn square(rng: &mut impl Rng, period: usize, octaves: usize) -> Fbm {
        Fbm::new(rng, period, period, octaves)
    }

    /// The fractal noise at `(u, v)`.
    pub fn sample(&self, u: f32, v: f32) -> f32 {
        let (mut sum, mut norm, mut amp) = (0.0, 0.0, 1.0);
        for octave in &self.octaves {
            sum += amp * octave.sample(u, v);
            norm += amp;
            amp *= 0.5;
        }
        sum / norm
    }
}

/// Cellular noise: feature points on the torus, one per cell of a jittered grid.
#[derive(Clone, Debug)]
pub struct Worley {
    points: Vec<[f32; 2]>,
}

/// The result of a [`Worley`] lookup.
#[derive(Clone, Copy, Debug)]
pub struct Cell {
    /// Index of the nearest point (stable: use it to vary per-cell properties).
    pub index: usize,
    /// Distance to the nearest point, in tiles.
    pub f1: f32,
    /// Distance to the second-nearest point, in tiles; `f2 - f1` is small near cell borders.
    pub f2: f32,
    /// Wrapped offset from the nearest point to the sample, in tiles.
    pub offset: [f32; 2],
}

impl Worley {
    /// `grid` × `grid` points, each jittered within its grid cell by `jitter` (0..=1).
    pub fn new(rng: &mut impl Rng, grid: usize, jitter: f32) -> Worley {
        let grid = grid.max(1);
        let step = 1.0 / grid as f32;
        let mut points = Vec::with_capacity(grid * grid);
        for gy in 0..grid {
            for gx in 0..grid {
                let jx = 0.5 + jitter * (rng.random::<f32>() - 0.5);
                let jy = 0.5 + jitter * (rng.random::<f32>() - 0.5);
                points.push([(gx as f32 + jx) * step, (gy as f32 + jy) * step]);
            }
        }
        Worley { points }
    }

    /// Number of points (cells).
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether there are no points (never, by construction).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Nearest and second-nearest points to `(u, v)`, measuring on the torus.
    pub fn cell(&self, u: f32, v: f32) -> Cell {
        let mut best = Cell {
            index: 0,
            f1: f32::MAX,
            f2: f32::MAX,
            offset: [0.0, 0.0],
        };
        for (index, p) in self.points.iter().enumerate() {
            let dx = wrap_delta(u - p[0]);
            let dy = wrap_delta(v - p[1]);
            let d = (dx * dx + dy * dy).sqrt();
            if d < best.f1 {
                best.f2 = best.f1;
                best.f1 = d;
                best.index = index;
                best.offset = [dx, dy];
            } else if d < best.f2 {
                best.f2 = d;
            }
        }
        best
    }
}

/// The shortest signed difference between two positions on a unit circle.
pub fn wrap_delta(d: f32) -> f32 {
    d - d.round()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn noise_repeats_with_period_one_tile() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = PeriodicNoise::new(&mut rng, 3, 5);
        let f = Fbm::square(&mut rng, 2, 3);
        let w = Worley::new(&mut rng, 3, 0.9);
        for i in 0..50 {
            let (u, v) = (i as f32 * 0.0731, i as f32 * 0.0413);
            assert!((n.sample(u, v) - n.sample(u + 1.0, v)).abs() < 1e-4);
            assert!((n.sample(u, v) - n.sample(u, v + 1.0)).abs() < 1e-4);
            assert!((f.sample(u, v) - f.sample(u + 1.0, v - 1.0)).abs() < 1e-4);
            let (a, b) = (w.cell(u, v), w.cell(u + 1.0, v + 1.0));
            assert_eq!(a.index, b.index);
            assert!((a.f1 - b.f1).abs() < 1e-4 && (a.f2 - b.f2).abs() < 1e-4);
        }
    }

    #[test]
    fn noise_has_range_and_contrast() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let n = PeriodicNoise::square(&mut rng, 4);
        let values: Vec<f32> = (0..1024)
            .map(|i| n.sample((i % 32) as f32 / 32.0, (i / 32) as f32 / 32.0))
            .collect();
        let max = values.iter().cloned().fold(f32::MIN, f32::max);
        let min = values.iter().cloned().fold(f32::MAX, f32::min);
        assert!(
            max > 0.3 && min < -0.3 && max <= 1.0 && min >= -1.0,
            "{min} {max}"
        );
    }
}
