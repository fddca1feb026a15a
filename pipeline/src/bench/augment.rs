//! Heavy, seeded augmentation for the bench's classifier.
//!
//! A concept has about two real drawings to learn from, so every training example is a fresh
//! variation: scaled, shifted, mirrored and slightly recoloured. Sprites move over
//! transparency; textures tile, so they shift with wrap-around and may flip both ways.

use rand::Rng;

/// How far augmentation may go.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augment {
    /// Smallest and largest zoom factor.
    pub scale: (f32, f32),
    /// Largest shift of a sprite, as a fraction of the image side.
    pub shift: f32,
    /// Largest relative change of each colour channel's gain.
    pub gain: f32,
    /// Largest brightness offset, in [0, 1] colour units.
    pub brightness: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            scale: (0.8, 1.15),
            shift: 0.15,
            gain: 0.1,
            brightness: 0.06,
        }
    }
}

impl Augment {
    /// A random variation of `values` (premultiplied RGBA in [-1, 1], `4 × size × size`,
    /// channel-major). `tileable` images wrap around; others are padded with transparency.
    pub fn apply(
        &self,
        values: &[f32],
        size: usize,
        tileable: bool,
        rng: &mut impl Rng,
    ) -> Vec<f32> {
        let n = size * size;
        let s = size as f32;
        let scale = rng.random_range(self.scale.0..=self.scale.1);
        let (dx, dy) = if tileable {
            (rng.random_range(0.0..s), rng.random_range(0.0..s))
        } else {
            let m = self.shift * s;
            (rng.random_range(-m..=m), rng.random_range(-m..=m))
        };
        let flip_x = rng.random_bool(0.5);
        let flip_y = tileable && rng.random_bool(0.5);
        let gains: [f32; 3] =
            std::array::from_fn(|_| 1.0 + rng.random_range(-self.gain..=self.gain));
        let brightness = rng.random_range(-self.brightness..=self.brightness);

        let centre = s / 2.0;
        let mut out = vec![-1f32; 4 * n];
        for y in 0..size {
            for x in 0..size {
                // Inverse map: where in the source this output pixel comes from.
                let mut u = (x as f32 + 0.5 - centre - dx) / scale + centre - 0.5;
                let mut v = (y as f32 + 0.5 - centre - dy) / scale + centre - 0.5;
                if flip_x {
                    u = s - 1.0 - u;
                }
                if flip_y {
                    v = s - 1.0 - v;
                }
                let px = bilinear(values, size, u, v, tileable);
                let alpha = (px[3] + 1.0) / 2.0;
                let i = y * size + x;
                for c in 0..3 {
                    // Recolour in premultiplied [0, 1] units, staying within the pixel's alpha.
                    let p = (px[c] + 1.0) / 2.0;
                    let p = (p * gains[c] + brightness * alpha).clamp(0.0, alpha);
                    out[c * n + i] = p * 2.0 - 1.0;
                }
                out[3 * n + i] = px[3];
            }
        }
        out
    }
}

/// The four channels at fractional position `(u, v)`; outside the image it is transparent
/// (all −1) unless `wrap`.
fn bilinear(values: &[f32], size: usize, u: f32, v: f32, wrap: bool) -> [f32; 4] {
    let n = size * size;
    let (x0, y0) = (u.floor(), v.floor());
    let (fx, fy) = (u - x0, v - y0);
    let mut out = [0f32; 4];
    for (ox, oy, w) in [
        (0, 0, (1.0 - fx) * (1.0 - fy)),
        (1, 0, fx * (1.0 - fy)),
        (0, 1, (1.0 - fx) * fy),
        (1, 1, fx * fy),
    ] {
        let (x, y) = (x0 as i64 + ox, y0 as i64 + oy);
        let side = size as i64;
        let pixel = if wrap {
            Some((x.rem_euclid(side), y.rem_euclid(side)))
        } else if (0..side).contains(&x) && (0..side).contains(&y) {
            Some((x, y))
        } else {
            None
        };
        for (c, o) in out.iter_mut().enumerate() {
            let value = pixel.map_or(-1.0, |(x, y)| values[c * n + (y * side + x) as usize]);
            *o += w * value;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn sprite(size: usize) -> Vec<f32> {
        let n = size * size;
        let mut v = vec![-1f32; 4 * n];
        for y in size / 4..3 * size / 4 {
            for x in size / 4..3 * size / 4 {
                for c in 0..4 {
                    v[c * n + y * size + x] = if c == 0 || c == 3 { 1.0 } else { -1.0 };
                }
            }
        }
        v
    }

    #[test]
    fn identity_settings_keep_the_image() {
        let none = Augment {
            scale: (1.0, 1.0),
            shift: 0.0,
            gain: 0.0,
            brightness: 0.0,
        };
        let img = sprite(8);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..4 {
            let out = none.apply(&img, 8, false, &mut rng);
            // A centred symmetric square survives a horizontal flip too.
            assert!(out.iter().zip(&img).all(|(a, b)| (a - b).abs() < 1e-5));
        }
    }

    #[test]
    fn output_stays_valid_premultiplied_and_is_seeded() {
        let img = sprite(16);
        let aug = Augment::default();
        let a = aug.apply(&img, 16, false, &mut ChaCha8Rng::seed_from_u64(3));
        let b = aug.apply(&img, 16, false, &mut ChaCha8Rng::seed_from_u64(3));
        assert_eq!(a, b);
        let n = 256;
        for i in 0..n {
            let alpha = a[3 * n + i];
            for c in 0..3 {
                assert!(a[c * n + i] <= alpha + 1e-5 && a[c * n + i] >= -1.0 - 1e-5);
            }
        }
        // Wrapped textures keep every pixel opaque.
        let opaque = vec![1f32; 4 * n];
        let t = aug.apply(&opaque, 16, true, &mut ChaCha8Rng::seed_from_u64(4));
        assert!(t[3 * n..].iter().all(|&a| (a - 1.0).abs() < 1e-5));
    }
}
