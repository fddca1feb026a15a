//! The numbers the bench computes from features and pixels: KID, pairwise spread and
//! nearest-neighbour distances.
//!
//! KID is written here rather than taken from a crate: no maintained Rust crate has it, and it
//! is a dozen lines. We use it instead of FID because its estimator is *unbiased* at any sample
//! size — the bench compares a few hundred images, where FID's bias (and its d×d covariance
//! estimate from fewer samples than dimensions) would dominate the number.

use candle_core::{Device, Tensor};

/// Kernel inception distance between two sets of feature vectors (Bińkowski et al. 2018):
/// the unbiased estimator of the squared maximum mean discrepancy under the cubic polynomial
/// kernel `k(x, y) = (x·y / d + 1)³`. Zero in expectation when both sets come from the same
/// distribution (so a single estimate may be slightly negative); `None` with fewer than two
/// vectors on a side or mismatched widths.
pub fn kid(x: &[Vec<f32>], y: &[Vec<f32>]) -> Option<f64> {
    let (m, n) = (x.len(), y.len());
    let d = x.first()?.len();
    if m < 2 || n < 2 || d == 0 || x.iter().chain(y).any(|v| v.len() != d) {
        return None;
    }
    let k = |a: &[f32], b: &[f32]| {
        let dot: f64 = a.iter().zip(b).map(|(p, q)| *p as f64 * *q as f64).sum();
        (dot / d as f64 + 1.0).powi(3)
    };
    let within = |set: &[Vec<f32>]| {
        let mut sum = 0.0;
        for i in 0..set.len() {
            for j in i + 1..set.len() {
                sum += k(&set[i], &set[j]);
            }
        }
        2.0 * sum / (set.len() * (set.len() - 1)) as f64
    };
    let mut cross = 0.0;
    for a in x {
        for b in y {
            cross += k(a, b);
        }
    }
    Some(within(x) + within(y) - 2.0 * cross / (m * n) as f64)
}

/// Euclidean distance.
pub fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(p, q)| (*p as f64 - *q as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Mean Euclidean distance over all unordered pairs; `None` with fewer than two vectors.
pub fn mean_pairwise_distance(set: &[&[f32]]) -> Option<f64> {
    if set.len() < 2 {
        return None;
    }
    let mut sum = 0.0;
    for i in 0..set.len() {
        for j in i + 1..set.len() {
            sum += distance(set[i], set[j]);
        }
    }
    Some(sum / (set.len() * (set.len() - 1) / 2) as f64)
}

/// For each query, the Euclidean distance to its nearest vector in `pool` (`∞` if `pool` is
/// empty). Runs as matmuls (`|a−b|² = |a|² + |b|² − 2a·b`): the bench compares hundreds of
/// images with ten thousand training images of 4,096 values each.
pub fn nearest_distances(
    queries: &[Vec<f32>],
    pool: &[Vec<f32>],
    device: &Device,
) -> candle_core::Result<Vec<f64>> {
    const CHUNK: usize = 2048;
    let Some(d) = queries.first().map(Vec::len) else {
        return Ok(Vec::new());
    };
    if queries.iter().chain(pool).any(|v| v.len() != d) {
        candle_core::bail!("nearest_distances: vectors of different lengths");
    }
    let norms = |set: &[Vec<f32>]| -> Vec<f64> {
        set.iter()
            .map(|v| v.iter().map(|x| (*x as f64).powi(2)).sum())
            .collect()
    };
    let q_norms = norms(queries);
    let q = Tensor::from_vec(
        queries.iter().flatten().copied().collect::<Vec<f32>>(),
        (queries.len(), d),
        device,
    )?;
    let mut best = vec![f64::INFINITY; queries.len()];
    for chunk in pool.chunks(CHUNK) {
        let p_norms = norms(chunk);
        let p = Tensor::from_vec(
            chunk.iter().flatten().copied().collect::<Vec<f32>>(),
            (chunk.len(), d),
            device,
        )?;
        let dots = q.matmul(&p.t()?)?.to_vec2::<f32>()?;
        for (i, row) in dots.iter().enumerate() {
            for (j, dot) in row.iter().enumerate() {
                let squared = q_norms[i] + p_norms[j] - 2.0 * *dot as f64;
                best[i] = best[i].min(squared.max(0.0));
            }
        }
    }
    Ok(best.into_iter().map(f64::sqrt).collect())
}

/// Arithmetic mean; `None` when empty.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Median (mean of the middle two for even lengths); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    fn gaussian_set(seed: u64, count: usize, dim: usize, shift: f32) -> Vec<Vec<f32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..count)
            .map(|_| {
                (0..dim)
                    .map(|_| {
                        let v: f32 = StandardNormal.sample(&mut rng);
                        v + shift
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn kid_is_near_zero_for_one_distribution_and_grows_with_a_shift() {
        let a = gaussian_set(1, 200, 16, 0.0);
        let b = gaussian_set(2, 200, 16, 0.0);
        let same = kid(&a, &a).unwrap();
        let twins = kid(&a, &b).unwrap();
        let shifted = kid(&a, &gaussian_set(3, 200, 16, 1.0)).unwrap();
        // An identical set is off by O(1/m) only: its cross term includes the diagonal.
        assert!(same.abs() < 0.1, "identical sets: {same}");
        assert!(twins.abs() < 0.1, "same distribution: {twins}");
        assert!(shifted > 1.0, "shifted by one: {shifted}");
        assert!(kid(&a[..1], &b).is_none());
        assert!(kid(&a, &[vec![0.0; 3], vec![0.0; 3]]).is_none());
    }

    #[test]
    fn kid_matches_the_formula_on_a_hand_example() {
        // d = 1: k(x, y) = (xy + 1)³.
        let x = vec![vec![0.0], vec![1.0]];
        let y = vec![vec![1.0], vec![2.0]];
        let k = |a: f64, b: f64| (a * b + 1.0).powi(3);
        let within_x = k(0.0, 1.0);
        let within_y = k(1.0, 2.0);
        let cross = (k(0.0, 1.0) + k(0.0, 2.0) + k(1.0, 1.0) + k(1.0, 2.0)) / 4.0;
        let expected = within_x + within_y - 2.0 * cross;
        assert!((kid(&x, &y).unwrap() - expected).abs() < 1e-9);
    }

    #[test]
    fn pairwise_distances() {
        let pts: [&[f32]; 3] = [&[0.0, 0.0], &[3.0, 4.0], &[0.0, 4.0]];
        assert_eq!(distance(pts[0], pts[1]), 5.0);
        // Pairs: 5, 4, 3.
        assert!((mean_pairwise_distance(&pts).unwrap() - 4.0).abs() < 1e-12);
        assert!(mean_pairwise_distance(&pts[..1]).is_none());
    }

    #[test]
    fn nearest_distances_match_brute_force() {
        let queries = gaussian_set(5, 7, 33, 0.0);
        let pool = gaussian_set(6, 50, 33, 0.5);
        let fast = nearest_distances(&queries, &pool, &Device::Cpu).unwrap();
        for (q, got) in queries.iter().zip(&fast) {
            let brute = pool
                .iter()
                .map(|p| distance(q, p))
                .fold(f64::INFINITY, f64::min);
            assert!((brute - got).abs() < 1e-3, "{brute} vs {got}");
        }
        let exact = nearest_distances(&pool[..3], &pool, &Device::Cpu).unwrap();
        assert!(exact.iter().all(|d| *d < 1e-2));
    }

    #[test]
    fn mean_and_median() {
        assert_eq!(mean(&[1.0, 2.0, 6.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
