//! Noise schedulers as diffusers defines them, read from `scheduler/scheduler_config.json`:
//! DDIM (SD 1.x/2.x), Euler (SD-Turbo, SDXL) and Euler ancestral, with ε- or v-prediction and
//! leading, trailing or linspace timestep spacing. The math runs in f64 on scalars and on
//! latents of any device; ancestral noise comes from the caller's seeded generator.

use std::path::Path;

use candle_core::{Result, Tensor};
use serde::Deserialize;

use super::SdError;

/// Which sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `DDIMScheduler` (η = 0: deterministic).
    Ddim,
    /// `EulerDiscreteScheduler`.
    Euler,
    /// `EulerAncestralDiscreteScheduler`.
    EulerAncestral,
}

/// What the UNet predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// The noise.
    Epsilon,
    /// `v = √ᾱ·ε − √(1−ᾱ)·x₀` (SD 2.x 768).
    V,
}

/// Where the inference timesteps sit among the training ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    /// `0, r, 2r, …` plus `steps_offset`, reversed.
    Leading,
    /// Counting down from the last training step.
    Trailing,
    /// Evenly from the last training step to 0.
    Linspace,
}

/// `scheduler_config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// Which sampler.
    pub kind: Kind,
    /// What the UNet predicts.
    pub prediction: Prediction,
    /// Timestep placement.
    pub spacing: Spacing,
    /// Training noise levels, ᾱ for each training timestep.
    pub alphas_cumprod: Vec<f64>,
    /// Added to leading timesteps.
    pub steps_offset: usize,
    /// DDIM: ᾱ after the last step is 1 (else ᾱ₀).
    pub set_alpha_to_one: bool,
    /// DDIM: clamp the predicted image to ±`clip_sample_range`.
    pub clip_sample: Option<f64>,
}

#[derive(Deserialize)]
struct SchedulerJson {
    #[serde(rename = "_class_name")]
    class: String,
    #[serde(default = "thousand")]
    num_train_timesteps: usize,
    #[serde(default = "beta_start")]
    beta_start: f64,
    #[serde(default = "beta_end")]
    beta_end: f64,
    #[serde(default = "linear")]
    beta_schedule: String,
    #[serde(default)]
    trained_betas: Option<Vec<f64>>,
    #[serde(default = "epsilon")]
    prediction_type: String,
    #[serde(default = "leading")]
    timestep_spacing: String,
    #[serde(default)]
    steps_offset: usize,
    #[serde(default = "yes")]
    set_alpha_to_one: bool,
    #[serde(default)]
    clip_sample: bool,
    #[serde(default = "one")]
    clip_sample_range: f64,
    #[serde(default)]
    thresholding: bool,
    #[serde(default)]
    rescale_betas_zero_snr: bool,
    #[serde(default)]
    use_karras_sigmas: bool,
    #[serde(default)]
    use_exponential_sigmas: bool,
    #[serde(default)]
    use_beta_sigmas: bool,
    #[serde(default)]
    interpolation_type: Option<String>,
    #[serde(default)]
    final_sigmas_type: Option<String>,
}

fn thousand() -> usize {
    1000
}
fn beta_start() -> f64 {
    1e-4
}
fn beta_end() -> f64 {
    0.02
}
fn linear() -> String {
    "linear".into()
}
fn epsilon() -> String {
    "epsilon".into()
}
fn leading() -> String {
    "leading".into()
}
fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}

impl SchedulerConfig {
    /// Reads a diffusers scheduler config.
    pub fn read(path: &Path) -> std::result::Result<Self, SdError> {
        let json: SchedulerJson = super::config::read_json(path)?;
        let unsupported = |message: String| SdError::Unsupported {
            path: path.to_path_buf(),
            message,
        };
        let kind = match json.class.as_str() {
            "DDIMScheduler" => Kind::Ddim,
            "EulerDiscreteScheduler" => Kind::Euler,
            "EulerAncestralDiscreteScheduler" => Kind::EulerAncestral,
            other => {
                return Err(unsupported(format!(
                    "`_class_name` {other:?}: Autonomy samples with DDIMScheduler, EulerDiscreteScheduler or EulerAncestralDiscreteScheduler; set `_class_name` to one of them (the betas stay as they are)"
                )));
            }
        };
        let prediction = match json.prediction_type.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            other => return Err(unsupported(format!("`prediction_type` {other:?}"))),
        };
        let spacing = match json.timestep_spacing.as_str() {
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            "linspace" => Spacing::Linspace,
            other => return Err(unsupported(format!("`timestep_spacing` {other:?}"))),
        };
        for (flag, on) in [
            ("thresholding", json.thresholding),
            ("rescale_betas_zero_snr", json.rescale_betas_zero_snr),
            ("use_karras_sigmas", json.use_karras_sigmas),
            ("use_exponential_sigmas", json.use_exponential_sigmas),
            ("use_beta_sigmas", json.use_beta_sigmas),
        ] {
            if on {
                return Err(unsupported(format!("`{flag}` = true is not supported yet")));
            }
        }
        if let Some(kind) = json.interpolation_type.filter(|k| k != "linear") {
            return Err(unsupported(format!("`interpolation_type` {kind:?}")));
        }
        if let Some(kind) = json.final_sigmas_type.filter(|k| k != "zero") {
            return Err(unsupported(format!("`final_sigmas_type` {kind:?}")));
        }
        let n = json.num_train_timesteps;
        if n < 2 {
            return Err(SdError::Invalid {
                path: path.to_path_buf(),
                message: format!("`num_train_timesteps` {n}"),
            });
        }
        let betas: Vec<f64> = match (&json.trained_betas, json.beta_schedule.as_str()) {
            (Some(betas), _) if betas.len() == n => betas.clone(),
            (Some(betas), _) => {
                return Err(SdError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("{} `trained_betas` for {n} timesteps", betas.len()),
                });
            }
            (None, "linear") => linspace(json.beta_start, json.beta_end, n),
            (None, "scaled_linear") => linspace(json.beta_start.sqrt(), json.beta_end.sqrt(), n)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            (None, other) => return Err(unsupported(format!("`beta_schedule` {other:?}"))),
        };
        let mut product = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|beta| {
                product *= 1.0 - beta;
                product
            })
            .collect();
        Ok(Self {
            kind,
            prediction,
            spacing,
            alphas_cumprod,
            steps_offset: json.steps_offset,
            set_alpha_to_one: json.set_alpha_to_one,
            clip_sample: json.clip_sample.then_some(json.clip_sample_range),
        })
    }

    fn train_steps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// Noise level σ = √((1−ᾱ)/ᾱ) at a (fractional) training timestep, interpolated.
    fn sigma_at(&self, t: f64) -> f64 {
        let sigma = |i: usize| {
            let a = self.alphas_cumprod[i];
            ((1.0 - a) / a).sqrt()
        };
        let last = self.train_steps() - 1;
        let t = t.clamp(0.0, last as f64);
        let low = t.floor() as usize;
        let high = (low + 1).min(last);
        let w = t - low as f64;
        sigma(low) * (1.0 - w) + sigma(high) * w
    }

    /// The schedule for `steps` inference steps.
    pub fn schedule(&self, steps: usize) -> Schedule {
        let n = self.train_steps();
        let steps = steps.clamp(1, n);
        let timesteps: Vec<f64> = match (self.spacing, self.kind) {
            (Spacing::Leading, _) => {
                let ratio = n / steps;
                (0..steps)
                    .rev()
                    .map(|i| (i * ratio + self.steps_offset) as f64)
                    .collect()
            }
            (Spacing::Trailing, _) => {
                let ratio = n as f64 / steps as f64;
                (0..steps)
                    .map(|i| (n as f64 - i as f64 * ratio).round() - 1.0)
                    .collect()
            }
            (Spacing::Linspace, Kind::Ddim) => linspace(0.0, (n - 1) as f64, steps)
                .into_iter()
                .rev()
                .map(f64::round)
                .collect(),
            (Spacing::Linspace, _) => linspace(0.0, (n - 1) as f64, steps)
                .into_iter()
                .rev()
                .collect(),
        };
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| self.sigma_at(t)).collect();
        sigmas.push(0.0);
        Schedule {
            config: self.clone(),
            timesteps,
            sigmas,
            step_ratio: n / steps,
        }
    }
}

/// The timesteps of one sampling run and the update between them.
#[derive(Clone, Debug)]
pub struct Schedule {
    config: SchedulerConfig,
    /// The UNet's timestep at each step, noisiest first.
    pub timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    step_ratio: usize,
}

impl Schedule {
    /// Scale of the starting noise.
    pub fn init_noise_sigma(&self) -> f64 {
        match self.config.kind {
            Kind::Ddim => 1.0,
            _ => {
                let max = self.sigmas.iter().copied().fold(0.0, f64::max);
                match self.config.spacing {
                    Spacing::Linspace | Spacing::Trailing => max,
                    Spacing::Leading => (max * max + 1.0).sqrt(),
                }
            }
        }
    }

    /// What the UNet sees at step `i`: Euler samplers divide by √(σ²+1).
    pub fn scale_model_input(&self, latents: &Tensor, i: usize) -> Result<Tensor> {
        match self.config.kind {
            Kind::Ddim => Ok(latents.clone()),
            _ => latents / (self.sigmas[i].powi(2) + 1.0).sqrt(),
        }
    }

    /// `x0` noised to the level step `i` starts from (image-to-image, inpainting).
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        match self.config.kind {
            Kind::Ddim => {
                let ac = &self.config.alphas_cumprod;
                let a = ac[(self.timesteps[i] as usize).min(ac.len() - 1)];
                (x0 * a.sqrt())? + (noise * (1.0 - a).sqrt())?
            }
            _ => x0 + (noise * self.sigmas[i])?,
        }
    }

    /// Whether step `i` needs fresh noise (ancestral sampling, all but the last step).
    pub fn needs_noise(&self, i: usize) -> bool {
        self.config.kind == Kind::EulerAncestral && self.sigmas[i + 1] > 0.0
    }

    /// The latents after step `i`, given the UNet's (guided) output; `noise` (same shape)
    /// is used when [`Schedule::needs_noise`] says so.
    pub fn step(
        &self,
        output: &Tensor,
        i: usize,
        latents: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        match self.config.kind {
            Kind::Ddim => self.ddim_step(output, i, latents),
            Kind::Euler | Kind::EulerAncestral => self.euler_step(output, i, latents, noise),
        }
    }

    fn ddim_step(&self, output: &Tensor, i: usize, latents: &Tensor) -> Result<Tensor> {
        let ac = &self.config.alphas_cumprod;
        let t = self.timesteps[i] as usize;
        let a = ac[t.min(ac.len() - 1)];
        let a_prev = match t.checked_sub(self.step_ratio) {
            Some(prev) => ac[prev],
            None if self.config.set_alpha_to_one => 1.0,
            None => ac[0],
        };
        let (x0, eps) = match self.config.prediction {
            Prediction::Epsilon => (
                ((latents - (output * (1.0 - a).sqrt())?)? / a.sqrt())?,
                output.clone(),
            ),
            Prediction::V => (
                ((latents * a.sqrt())? - (output * (1.0 - a).sqrt())?)?,
                ((output * a.sqrt())? + (latents * (1.0 - a).sqrt())?)?,
            ),
        };
        let x0 = match self.config.clip_sample {
            Some(range) => x0.clamp(-range, range)?,
            None => x0,
        };
        (x0 * a_prev.sqrt())? + (eps * (1.0 - a_prev).sqrt())?
    }

    fn euler_step(
        &self,
        output: &Tensor,
        i: usize,
        latents: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let sigma = self.sigmas[i];
        let next = self.sigmas[i + 1];
        let x0 = match self.config.prediction {
            Prediction::Epsilon => (latents - (output * sigma)?)?,
            Prediction::V => {
                let s = sigma * sigma + 1.0;
                ((output * (-sigma / s.sqrt()))? + (latents / s)?)?
            }
        };
        let derivative = ((latents - &x0)? / sigma)?;
        match (self.config.kind, noise) {
            (Kind::EulerAncestral, Some(noise)) if next > 0.0 => {
                let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).sqrt();
                let down = (next * next - up * up).sqrt();
                (latents + (derivative * (down - sigma))?)? + (noise * up)?
            }
            (Kind::EulerAncestral, _) => latents + (derivative * (next - sigma))?,
            _ => latents + (derivative * (next - sigma))?,
        }
    }
}

fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    (0..n)
        .map(|i| start + (end - start) * i as f64 / (n - 1) as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: Kind, spacing: Spacing) -> SchedulerConfig {
        SchedulerConfig {
            kind,
            prediction: Prediction::Epsilon,
            spacing,
            alphas_cumprod: {
                let mut p = 1.0;
                linspace(0.00085f64.sqrt(), 0.012f64.sqrt(), 1000)
                    .into_iter()
                    .map(|b| {
                        p *= 1.0 - b * b;
                        p
                    })
                    .collect()
            },
            steps_offset: 1,
            set_alpha_to_one: false,
            clip_sample: None,
        }
    }

    #[test]
    fn timesteps_follow_diffusers_spacing() {
        // diffusers: DDIMScheduler(steps_offset=1).set_timesteps(4) → [751, 501, 251, 1]
        let leading = config(Kind::Ddim, Spacing::Leading).schedule(4);
        assert_eq!(leading.timesteps, [751.0, 501.0, 251.0, 1.0]);
        // EulerDiscreteScheduler(timestep_spacing="trailing").set_timesteps(1) → [999]
        let trailing = config(Kind::Euler, Spacing::Trailing).schedule(1);
        assert_eq!(trailing.timesteps, [999.0]);
        assert_eq!(
            config(Kind::Euler, Spacing::Trailing).schedule(4).timesteps,
            [999.0, 749.0, 499.0, 249.0]
        );
        let linspace = config(Kind::Euler, Spacing::Linspace).schedule(3);
        assert_eq!(linspace.timesteps, [999.0, 499.5, 0.0]);
    }

    #[test]
    fn sigmas_fall_to_zero_and_set_the_start_noise() {
        let s = config(Kind::Euler, Spacing::Trailing).schedule(4);
        assert!(s.sigmas.windows(2).all(|w| w[1] < w[0]));
        assert_eq!(*s.sigmas.last().unwrap(), 0.0);
        // SD's scaled-linear betas end at σ ≈ 14.6.
        assert!(
            (s.init_noise_sigma() - 14.61).abs() < 0.01,
            "{}",
            s.init_noise_sigma()
        );
        let leading = config(Kind::Euler, Spacing::Leading).schedule(4);
        assert!(leading.init_noise_sigma() > leading.sigmas[0]);
    }

    #[test]
    fn a_perfect_noise_prediction_recovers_the_image_in_one_ddim_step() {
        let device = candle_core::Device::Cpu;
        let schedule = config(Kind::Ddim, Spacing::Trailing).schedule(1);
        let t = schedule.timesteps[0] as usize;
        let a = schedule.config.alphas_cumprod[t];
        let x0 = Tensor::new(&[0.5f64, -0.25], &device).unwrap();
        let eps = Tensor::new(&[1.0f64, 2.0], &device).unwrap();
        let noisy = ((&x0 * a.sqrt()).unwrap() + (&eps * (1.0 - a).sqrt()).unwrap()).unwrap();
        let out = schedule.step(&eps, 0, &noisy, None).unwrap();
        // ᾱ after the last step is ᾱ₀ (set_alpha_to_one = false): almost x0.
        let a0 = schedule.config.alphas_cumprod[0];
        let expected = ((&x0 * a0.sqrt()).unwrap() + (&eps * (1.0 - a0).sqrt()).unwrap()).unwrap();
        let diff = (out - expected)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(diff < 1e-9, "{diff}");
    }
}
