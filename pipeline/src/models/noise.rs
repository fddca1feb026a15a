//! The starting noise of a generation, the same on every machine and device: seeded ChaCha8
//! standard normals, drawn on the CPU.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::generator::GenerateRequest;

/// How far a loop's frames stray from the seed's noise (radius of the circle they walk).
const LOOP_RADIUS: f32 = 0.45;

/// `n` standard-normal values from a seed: the same on every machine and every run.
pub fn gaussian(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
}

/// The starting noise of `request.count` images of `per_image` values each: seeds
/// `seed + i`, or, for a loop, points on a circle around the seed's noise.
pub fn starting(request: &GenerateRequest, per_image: usize) -> Vec<f32> {
    let n = request.count.max(1);
    if !request.looped {
        return (0..n as u64)
            .flat_map(|i| gaussian(request.seed.wrapping_add(i), per_image))
            .collect();
    }
    // A circle of radius r around the seed's noise, renormalised to unit variance: frames
    // stay variations of one image and frame n would be frame 0 again.
    let centre = gaussian(request.seed, per_image);
    let a = gaussian(request.seed ^ 0xA11A_0001, per_image);
    let b = gaussian(request.seed ^ 0xA11A_0002, per_image);
    let norm = (1.0 + LOOP_RADIUS * LOOP_RADIUS).sqrt();
    (0..n)
        .flat_map(|i| {
            let angle = std::f32::consts::TAU * i as f32 / n as f32;
            let (sin, cos) = angle.sin_cos();
            (0..per_image)
                .map(|k| (centre[k] + LOOP_RADIUS * (cos * a[k] + sin * b[k])) / norm)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_is_seeded_and_roughly_standard() {
        assert_eq!(gaussian(7, 100), gaussian(7, 100));
        assert_ne!(gaussian(7, 100), gaussian(8, 100));
        let v = gaussian(1, 20_000);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05);
    }
}
