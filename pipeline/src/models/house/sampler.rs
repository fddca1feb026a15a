//! Flow-matching sampler: integrates the predicted velocity from noise (t = 1) to image (t = 0)
//! with Euler steps, optionally with a time shift that spends more steps at high noise, and
//! optionally from a partly noised image (t = `start` < 1: image-to-image).

use candle_core::{Result, Tensor};

/// Euler integrator over a (shifted) uniform time grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowSampler {
    /// Number of model evaluations (each one with guidance runs a doubled batch).
    pub steps: usize,
    /// Time shift `s`: `t' = s·t / (1 + (s − 1)·t)`; 1 keeps the grid uniform.
    pub shift: f64,
    /// Time the integration starts at: 1 from pure noise; `strength` for image-to-image.
    pub start: f64,
}

impl FlowSampler {
    /// A sampler from pure noise (`start` = 1).
    pub fn new(steps: usize, shift: f64) -> Self {
        Self {
            steps,
            shift,
            start: 1.0,
        }
    }

    /// The `steps + 1` times visited, from `start` down to 0.
    pub fn timesteps(&self) -> Vec<f64> {
        let n = self.steps.max(1);
        let start = self.start.clamp(0.0, 1.0);
        (0..=n)
            .map(|i| {
                let t = start * (1.0 - i as f64 / n as f64);
                self.shift * t / (1.0 + (self.shift - 1.0) * t)
            })
            .collect()
    }

    /// Runs the integration from `x` (noise, or an image noised to `start`);
    /// `velocity(x, t)` is the model (guidance included) and `settle(x, t)` may change the
    /// state after each step to time `t` (e.g. to keep the unmasked part of an image).
    pub fn sample(
        &self,
        x: Tensor,
        mut velocity: impl FnMut(&Tensor, f64) -> Result<Tensor>,
        mut settle: impl FnMut(Tensor, f64) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let times = self.timesteps();
        let mut x = x;
        for pair in times.windows(2) {
            let (t, next) = (pair[0], pair[1]);
            let v = velocity(&x, t)?;
            x = settle((x + (v * (next - t))?)?, next)?;
        }
        Ok(x)
    }
}

/// Classifier-free guidance: `uncond + g·(cond − uncond)`.
pub fn guide(cond: &Tensor, uncond: &Tensor, guidance: f64) -> Result<Tensor> {
    uncond + ((cond - uncond)? * guidance)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn timesteps_run_from_one_to_zero_monotonically() {
        for shift in [1.0, 3.0] {
            let t = FlowSampler::new(8, shift).timesteps();
            assert_eq!(t.len(), 9);
            assert_eq!(t[0], 1.0);
            assert_eq!(t[8], 0.0);
            assert!(t.windows(2).all(|w| w[1] < w[0]));
        }
    }

    #[test]
    fn exact_velocity_recovers_the_image_in_one_step() {
        // On the straight path x_t = (1 − t)·x0 + t·ε the velocity ε − x0 is constant, so Euler is exact.
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[0.5f32, -0.25, 1.0], &dev).unwrap();
        let eps = Tensor::new(&[-1.0f32, 2.0, 0.3], &dev).unwrap();
        let v = (&eps - &x0).unwrap();
        for steps in [1, 4, 20] {
            let out = FlowSampler::new(steps, 2.0)
                .sample(eps.clone(), |_, _| Ok(v.clone()), |x, _| Ok(x))
                .unwrap();
            let err = (out - &x0).unwrap().abs().unwrap().max_all().unwrap();
            assert!(err.to_scalar::<f32>().unwrap() < 1e-5);
        }
    }

    #[test]
    fn image_to_image_starts_part_way_and_still_lands_on_the_image() {
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[0.5f32, -0.25], &dev).unwrap();
        let eps = Tensor::new(&[-1.0f32, 2.0], &dev).unwrap();
        let sampler = FlowSampler {
            start: 0.4,
            ..FlowSampler::new(5, 1.0)
        };
        let times = sampler.timesteps();
        assert!((times[0] - 0.4).abs() < 1e-12 && times[5] == 0.0);
        let start = ((&x0 * 0.6).unwrap() + (&eps * 0.4).unwrap()).unwrap();
        let v = (&eps - &x0).unwrap();
        let out = sampler
            .sample(start, |_, _| Ok(v.clone()), |x, _| Ok(x))
            .unwrap();
        let err = (out - &x0).unwrap().abs().unwrap().max_all().unwrap();
        assert!(err.to_scalar::<f32>().unwrap() < 1e-5);
    }

    #[test]
    fn guidance_of_one_is_the_conditional_prediction() {
        let dev = Device::Cpu;
        let c = Tensor::new(&[1f32, 2.0], &dev).unwrap();
        let u = Tensor::new(&[0f32, -2.0], &dev).unwrap();
        assert_eq!(
            guide(&c, &u, 1.0).unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0, 2.0]
        );
        assert_eq!(
            guide(&c, &u, 2.0).unwrap().to_vec1::<f32>().unwrap(),
            vec![2.0, 6.0]
        );
    }
}
