//! Flow-matching sampler: integrates the predicted velocity from noise (t = 1) to image (t = 0)
//! with Euler steps, optionally with a time shift that spends more steps at high noise.

use candle_core::{Result, Tensor};

/// Euler integrator over a (shifted) uniform time grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowSampler {
    /// Number of model evaluations (each one with guidance runs a doubled batch).
    pub steps: usize,
    /// Time shift `s`: `t' = s·t / (1 + (s − 1)·t)`; 1 keeps the grid uniform.
    pub shift: f64,
}

impl FlowSampler {
    /// The `steps + 1` times visited, from 1 down to 0.
    pub fn timesteps(&self) -> Vec<f64> {
        let n = self.steps.max(1);
        (0..=n)
            .map(|i| {
                let t = 1.0 - i as f64 / n as f64;
                self.shift * t / (1.0 + (self.shift - 1.0) * t)
            })
            .collect()
    }

    /// Runs the integration; `velocity(x, t)` is the model (guidance included).
    pub fn sample(
        &self,
        noise: Tensor,
        mut velocity: impl FnMut(&Tensor, f64) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let times = self.timesteps();
        let mut x = noise;
        for pair in times.windows(2) {
            let (t, next) = (pair[0], pair[1]);
            let v = velocity(&x, t)?;
            x = (x + (v * (next - t))?)?;
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
            let t = FlowSampler { steps: 8, shift }.timesteps();
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
            let out = FlowSampler { steps, shift: 2.0 }
                .sample(eps.clone(), |_, _| Ok(v.clone()))
                .unwrap();
            let err = (out - &x0).unwrap().abs().unwrap().max_all().unwrap();
            assert!(err.to_scalar::<f32>().unwrap() < 1e-5);
        }
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
