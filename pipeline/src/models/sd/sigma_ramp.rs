//! How a sampler spaces its noise levels σ between the largest and the smallest: at the spaced
//! timesteps' σ, or on one of diffusers' ramps — Karras et al.'s (ρ = 7), exponential (even in
//! log σ), Lu et al.'s λ spacing (also even in log σ; DPM-Solver++ rounds its timesteps), or
//! beta (the quantiles of Beta(0.6, 0.6), "Beta Sampling is All You Need").

/// The σ spacing of Euler, Heun, LMS, DPM-Solver++ and UniPC (`use_karras_sigmas`,
/// `use_exponential_sigmas`, `use_beta_sigmas`; DPM-Solver++'s `use_lu_lambdas`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SigmaRamp {
    /// σ at the spaced timesteps.
    #[default]
    Spaced,
    /// Karras et al. (2022), ρ = 7.
    Karras,
    /// Evenly spaced in log σ.
    Exponential,
    /// Evenly spaced in the log-SNR λ = −log σ (Lu et al. 2022, DPM-Solver++): the exponential
    /// ramp's σ, with the timesteps rounded to whole ones.
    LuLambdas,
    /// σ_min + (σ_max − σ_min) · the Beta(0.6, 0.6) quantile of 1 − i/(steps − 1).
    Beta,
}

impl SigmaRamp {
    /// `steps` noise levels from `max` down to `min` (`Spaced` has no ramp: `None`).
    pub fn sigmas(self, min: f64, max: f64, steps: usize) -> Option<Vec<f64>> {
        let ramp = linspace(0.0, 1.0, steps);
        Some(match self {
            SigmaRamp::Spaced => return None,
            SigmaRamp::Karras => {
                let rho = 7.0;
                let (min_inv, max_inv) = (min.powf(1.0 / rho), max.powf(1.0 / rho));
                ramp.into_iter()
                    .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
                    .collect()
            }
            SigmaRamp::Exponential | SigmaRamp::LuLambdas => linspace(max.ln(), min.ln(), steps)
                .into_iter()
                .map(f64::exp)
                .collect(),
            SigmaRamp::Beta => ramp
                .into_iter()
                .map(|r| min + beta_quantile(1.0 - r, 0.6, 0.6) * (max - min))
                .collect(),
        })
    }
}

/// `n` evenly spaced values from `start` to `end` inclusive (numpy's `linspace`).
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    (0..n)
        .map(|i| start + (end - start) * i as f64 / (n - 1) as f64)
        .collect()
}

/// The `p` quantile of Beta(`a`, `b`): the inverse of the regularized incomplete beta
/// function, by bisection (it is increasing in x), to the last bit of an f64.
fn beta_quantile(p: f64, a: f64, b: f64) -> f64 {
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (mut low, mut high) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (low + high);
        if mid <= low || mid >= high {
            break;
        }
        if incomplete_beta(mid, a, b) < p {
            low = mid;
        } else {
            high = mid;
        }
    }
    0.5 * (low + high)
}

/// The regularized incomplete beta function Iₓ(a, b), by its continued fraction (Lentz's
/// method), on the side where it converges fast.
fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * continued_fraction(x, a, b) / a
    } else {
        1.0 - front * continued_fraction(1.0 - x, b, a) / b
    }
}

/// The continued fraction of Iₓ(a, b) (Numerical Recipes' `betacf`).
fn continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    d = 1.0 / if d.abs() < TINY { TINY } else { d };
    let mut h = d;
    for m in 1..=300 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        for numerator in [
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ] {
            d = 1.0 + numerator * d;
            d = 1.0 / if d.abs() < TINY { TINY } else { d };
            c = 1.0 + numerator / c;
            c = if c.abs() < TINY { TINY } else { c };
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms: ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1 − x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + G + 0.5;
    let series = C[1..]
        .iter()
        .enumerate()
        .fold(C[0], |sum, (i, c)| sum + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_beta_quantiles_are_scipys() {
        // scipy.stats.beta.ppf(p, 0.6, 0.6) for these p.
        for (p, expected) in [
            (0.5, 0.5),
            (0.1, 0.039_584_405_588_780_85),
            (0.25, 0.175_680_378_652_694_98),
            (0.9, 0.960_415_594_411_219_2),
        ] {
            let ours = beta_quantile(p, 0.6, 0.6);
            assert!((ours - expected).abs() < 1e-12, "{p}: {ours} vs {expected}");
        }
        assert!((ln_gamma(0.6) - 0.398_233_858_069_234_84).abs() < 1e-13);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
    }

    #[test]
    fn every_ramp_runs_from_the_largest_to_the_smallest_sigma() {
        for ramp in [SigmaRamp::Karras, SigmaRamp::Exponential, SigmaRamp::Beta] {
            let sigmas = ramp.sigmas(0.03, 14.6, 10).unwrap();
            assert!((sigmas[0] - 14.6).abs() < 1e-9, "{ramp:?} {sigmas:?}");
            assert!((sigmas[9] - 0.03).abs() < 1e-9, "{ramp:?} {sigmas:?}");
            assert!(
                sigmas.windows(2).all(|w| w[0] > w[1]),
                "{ramp:?} {sigmas:?}"
            );
        }
        assert_eq!(SigmaRamp::Spaced.sigmas(0.03, 14.6, 10), None);
    }

    proptest! {
        #[test]
        fn the_quantile_inverts_the_distribution(p in 0.001f64..0.999, a in 0.2f64..5.0, b in 0.2f64..5.0) {
            let x = beta_quantile(p, a, b);
            // Where the distribution is steep (b < 1, x near 1) one float step moves it by more
            // than any tolerance: p must lie between its values a few steps either side.
            let step = 4.0 * f64::EPSILON;
            let (below, above) = (incomplete_beta(x - step, a, b), incomplete_beta(x + step, a, b));
            prop_assert!(below - 1e-10 <= p && p <= above + 1e-10, "{} {} {}", below, p, above);
        }
    }
}
