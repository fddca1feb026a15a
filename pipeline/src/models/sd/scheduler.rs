//! Noise schedulers as diffusers defines them, read from `scheduler/scheduler_config.json`:
//! DDIM (SD 2.x), PNDM/PLMS (SD 1.x), Euler (SD-Turbo, SDXL), Euler ancestral, Heun, LMS,
//! DPM-Solver++ multistep (DPM++ 2M and its SDE), UniPC and LCM (for LCM-LoRAs), and
//! k-diffusion's DPM++ 2S a, with ε- or v-prediction, leading, trailing or
//! linspace timestep spacing, and Karras, exponential or beta sigmas for Euler, Heun, LMS, DPM-Solver++ and UniPC. The math runs in f64 on scalars and on
//! latents of any device; ancestral noise comes from the caller's seeded generator. Multistep
//! samplers keep their past outputs in the [`Schedule`], so one `Schedule` serves one run.

use std::path::Path;

use candle_core::{Result, Tensor};
use serde::Deserialize;

pub use super::sigma_ramp::SigmaRamp;
use super::sigma_ramp::linspace;

use super::SdError;

/// TCD's γ (its `step`'s `eta`): how far back each step carries its sample before noising it
/// onward; 0.3, the TCD authors' choice for few-step sampling.
const TCD_GAMMA: f64 = 0.3;

/// Which sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `DDIMScheduler` (η = 0: deterministic).
    Ddim,
    /// `DDPMScheduler`: ancestral sampling of the training chain, each step the posterior mean
    /// from the x₀ the UNet implies (clamped, as the class does by default) and the latents,
    /// plus fresh noise of the posterior's spread while the timestep is above 0.
    Ddpm,
    /// `PNDMScheduler` with `skip_prk_steps` (PLMS: a fourth-order linear multistep method).
    Pndm,
    /// `EulerDiscreteScheduler`.
    Euler,
    /// `EulerAncestralDiscreteScheduler`.
    EulerAncestral,
    /// `LMSDiscreteScheduler`: a fourth-order linear multistep method on the σ axis.
    Lms,
    /// `HeunDiscreteScheduler`: Euler, then a corrector at the next σ (two UNet calls a step).
    Heun,
    /// `DPMSolverMultistepScheduler` with `algorithm_type = "dpmsolver++"` or, stochastic,
    /// `"sde-dpmsolver++"`.
    DpmSolverMultistep,
    /// `UniPCMultistepScheduler` (`predict_x0`): a multistep predictor (UniP) and a corrector
    /// (UniC) that reuses each step's UNet call, up to third order.
    UniPc,
    /// `KDPM2DiscreteScheduler` (DPM2): a step to the geometric mean of σ and the next σ, then
    /// the whole step with the derivative found there (two UNet calls a step).
    Kdpm2,
    /// `KDPM2AncestralDiscreteScheduler` (DPM2 a): DPM2 down to the ancestral step's lower σ,
    /// then fresh noise up to the next σ.
    Kdpm2Ancestral,
    /// `DEISMultistepScheduler`: diffusion exponential integrator sampling (log-ρ), a
    /// multistep method on the noise prediction, up to third order.
    Deis,
    /// `LCMScheduler`: latent consistency sampling (LCM and LCM-LoRA models) in a few steps,
    /// fresh noise between them.
    Lcm,
    /// `DPMSolverSinglestepScheduler` (DPM-Solver++ single-step, orders 1–3): each block of
    /// `order` steps starts from one sample, the later steps of a block reaching across it
    /// with the x₀ predictions made inside it.
    DpmSolverSinglestep,
    /// `TCDScheduler` (trajectory consistency distillation: TCD-LoRAs, Hyper-SD): LCM's
    /// timesteps; each step the x₀ and noise the UNet implies are carried back to an earlier
    /// timestep `s = ⌊(1 − γ)·t_next⌋`, then noised afresh to the next timestep (γ = 0.3).
    Tcd,
    /// `DPMSolverSDEScheduler` (DPM++ SDE, k-diffusion's `sample_dpmpp_sde`): a stochastic
    /// step to the geometric mean of σ and the next σ, then the whole step from the x₀ found
    /// there, each with noise from one Brownian motion (two UNet calls a step).
    DpmSolverSde,
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

/// Multistep solver settings (`DPMSolverMultistepScheduler`, `UniPCMultistepScheduler`).
#[derive(Clone, Debug, PartialEq)]
pub struct Multistep {
    /// `solver_order`: 1 (DDIM-like) or 2 (DPM++ 2M); UniPC also 3.
    pub order: usize,
    /// DPM-Solver++: the second-order update's `solver_type`: Heun's instead of the midpoint.
    pub heun: bool,
    /// DPM-Solver++: `algorithm_type = "sde-dpmsolver++"`, fresh noise every step (DPM++ 2M
    /// SDE).
    pub sde: bool,
    /// UniPC: `solver_type = "bh1"`, B(h) = h, instead of `bh2`, B(h) = eʰ − 1.
    pub bh1: bool,
    /// UniPC: the steps (by index) whose corrector does not run.
    pub disable_corrector: Vec<usize>,
    /// First order on the last step (DPM-Solver++: of short, < 15 step, runs; UniPC: the
    /// order falls to the steps left).
    pub lower_order_final: bool,
    /// First order on the last step always.
    pub euler_at_final: bool,
    /// Timesteps whose log-SNR λ is below this are never used.
    pub lambda_min_clipped: f64,
}

/// A sampler a recipe or `--sampler` picks instead of the folder's own, keeping the folder's
/// noise schedule (betas, prediction type, offset), as diffusers' `from_config` swaps do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampler {
    /// DDIM.
    Ddim,
    /// DDPM (ancestral: fresh noise every step).
    Ddpm,
    /// PNDM's PLMS (SD 1.x's default).
    Pndm,
    /// Euler.
    Euler,
    /// Euler with Karras sigmas.
    EulerKarras,
    /// Euler ancestral.
    EulerAncestral,
    /// LMS.
    Lms,
    /// LMS with Karras sigmas.
    LmsKarras,
    /// Heun.
    Heun,
    /// Heun with Karras sigmas.
    HeunKarras,
    /// DPM-Solver++ 2M.
    DpmPlusPlus2m,
    /// DPM-Solver++ 2M with Karras sigmas.
    DpmPlusPlus2mKarras,
    /// DPM-Solver++ 2M SDE (stochastic: fresh noise every step).
    DpmPlusPlus2mSde,
    /// DPM-Solver++ 2M SDE with Karras sigmas.
    DpmPlusPlus2mSdeKarras,
    /// UniPC.
    UniPc,
    /// UniPC with Karras sigmas.
    UniPcKarras,
    /// DEIS (multistep, log-ρ).
    Deis,
    /// DPM2 (k-diffusion's second-order sampler).
    Dpm2,
    /// DPM2 with Karras sigmas.
    Dpm2Karras,
    /// DPM2 ancestral (stochastic: fresh noise every step).
    Dpm2Ancestral,
    /// DPM2 ancestral with Karras sigmas.
    Dpm2AncestralKarras,
    /// DPM-Solver++ single-step (2S at the default order 2).
    DpmPlusPlus2s,
    /// DPM-Solver++ single-step with Karras sigmas.
    DpmPlusPlus2sKarras,
    /// DPM++ SDE (stochastic, two UNet calls a step).
    DpmPlusPlusSde,
    /// DPM++ SDE with Karras sigmas.
    DpmPlusPlusSdeKarras,
    /// DPM++ 2S ancestral (k-diffusion's, A1111's "DPM++ 2S a"; stochastic, two UNet calls a
    /// step).
    DpmPlusPlus2sAncestral,
    /// DPM++ 2S ancestral with Karras sigmas.
    DpmPlusPlus2sAncestralKarras,
    /// LCM: the few-step sampler of LCM-LoRAs (4–8 steps, guidance 1–2).
    Lcm,
    /// TCD: the few-step sampler of TCD-LoRAs and Hyper-SD (2–8 steps, γ 0.3).
    Tcd,
}

impl Sampler {
    /// Every sampler with its name, as recipes spell it.
    pub const ALL: [(Sampler, &'static str); 29] = [
        (Sampler::Ddim, "ddim"),
        (Sampler::Ddpm, "ddpm"),
        (Sampler::Pndm, "pndm"),
        (Sampler::Euler, "euler"),
        (Sampler::EulerKarras, "euler-karras"),
        (Sampler::EulerAncestral, "euler-a"),
        (Sampler::Lms, "lms"),
        (Sampler::LmsKarras, "lms-karras"),
        (Sampler::Heun, "heun"),
        (Sampler::HeunKarras, "heun-karras"),
        (Sampler::DpmPlusPlus2m, "dpm++2m"),
        (Sampler::DpmPlusPlus2mKarras, "dpm++2m-karras"),
        (Sampler::DpmPlusPlus2mSde, "dpm++2m-sde"),
        (Sampler::DpmPlusPlus2mSdeKarras, "dpm++2m-sde-karras"),
        (Sampler::UniPc, "unipc"),
        (Sampler::UniPcKarras, "unipc-karras"),
        (Sampler::Deis, "deis"),
        (Sampler::Dpm2, "dpm2"),
        (Sampler::Dpm2Karras, "dpm2-karras"),
        (Sampler::Dpm2Ancestral, "dpm2-a"),
        (Sampler::Dpm2AncestralKarras, "dpm2-a-karras"),
        (Sampler::DpmPlusPlus2s, "dpm++2s"),
        (Sampler::DpmPlusPlus2sKarras, "dpm++2s-karras"),
        (Sampler::DpmPlusPlusSde, "dpm++sde"),
        (Sampler::DpmPlusPlusSdeKarras, "dpm++sde-karras"),
        (Sampler::DpmPlusPlus2sAncestral, "dpm++2s-a"),
        (Sampler::DpmPlusPlus2sAncestralKarras, "dpm++2s-a-karras"),
        (Sampler::Lcm, "lcm"),
        (Sampler::Tcd, "tcd"),
    ];

    /// Its name in recipes.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(sampler, _)| *sampler == self)
            .map_or("?", |(_, name)| name)
    }

    /// The sampler called `name`, or a message listing them.
    pub fn parse(name: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(_, known)| *known == name)
            .map(|(sampler, _)| *sampler)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(_, name)| *name).collect();
                format!("unknown sampler {name:?}: one of {}", names.join(", "))
            })
    }
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
    /// The training schedule's β, one per training timestep.
    pub betas: Vec<f64>,
    /// Whether the file asks for zero terminal SNR (`rescale_betas_zero_snr`): read by DDIM,
    /// Euler, Euler ancestral, DPM-Solver++, UniPC, LCM and TCD, as diffusers reads it.
    pub zero_snr: bool,
    /// Training noise levels, ᾱ for each training timestep: from [`Self::betas`], rescaled
    /// when [`Self::zero_snr`] applies to this sampler (see the private `alphas_cumprod`).
    pub alphas_cumprod: Vec<f64>,
    /// Added to leading timesteps.
    pub steps_offset: usize,
    /// DDIM, PNDM: ᾱ after the last step is 1 (else ᾱ₀).
    pub set_alpha_to_one: bool,
    /// DDIM, DDPM (and LCM, Heun): clamp the predicted image to ±`clip_sample_range`.
    pub clip_sample: Option<f64>,
    /// DDPM's `variance_type` `fixed_large`: noise of spread √β_t instead of the posterior's.
    pub ddpm_large_variance: bool,
    /// Euler, Heun, LMS, DPM-Solver++, UniPC: how σ is spaced.
    pub ramp: SigmaRamp,
    /// Euler, DPM-Solver++: the last σ is σ_min instead of 0.
    pub final_sigma_min: bool,
    /// Whether the file named its `timestep_spacing` (else it is the class's default).
    pub spacing_given: bool,
    /// DPM-Solver++ and UniPC settings.
    pub multistep: Multistep,
    /// LCM settings.
    pub lcm: Lcm,
    /// DPM2 a's calls taken as k-diffusion's DPM++ 2S a (`sample_dpmpp_2s_ancestral`,
    /// A1111's "DPM++ 2S a"): the second call of each step moves the step's start by the
    /// exponential integrator, `x₀ + σ_down/σ·(x − x₀)` with the x₀ predicted at the midpoint,
    /// where DPM2 a takes the derivative found there. No diffusers class samples so: only a
    /// recipe's `sampler` picks it.
    pub dpm_solver_2s: bool,
}

/// LCM settings (`LCMScheduler`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lcm {
    /// The distillation schedule's length (`original_inference_steps`): timesteps are taken
    /// from its evenly spaced ones, so no more steps than this.
    pub original_steps: usize,
    /// `timestep_scaling` of the consistency boundary conditions.
    pub timestep_scaling: f64,
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
    #[serde(default)]
    timestep_spacing: Option<String>,
    #[serde(default)]
    steps_offset: usize,
    #[serde(default)]
    set_alpha_to_one: Option<bool>,
    #[serde(default)]
    clip_sample: Option<bool>,
    #[serde(default = "one")]
    clip_sample_range: f64,
    #[serde(default)]
    thresholding: bool,
    #[serde(default)]
    rescale_betas_zero_snr: bool,
    #[serde(default)]
    use_karras_sigmas: Option<bool>,
    #[serde(default)]
    use_exponential_sigmas: Option<bool>,
    #[serde(default)]
    use_beta_sigmas: Option<bool>,
    #[serde(default)]
    use_lu_lambdas: Option<bool>,
    #[serde(default)]
    use_flow_sigmas: Option<bool>,
    #[serde(default)]
    interpolation_type: Option<String>,
    #[serde(default)]
    final_sigmas_type: Option<String>,
    #[serde(default)]
    timestep_type: Option<String>,
    #[serde(default)]
    skip_prk_steps: bool,
    #[serde(default = "two")]
    solver_order: usize,
    #[serde(default)]
    algorithm_type: Option<String>,
    #[serde(default)]
    solver_type: Option<String>,
    #[serde(default = "yes")]
    lower_order_final: bool,
    #[serde(default)]
    euler_at_final: bool,
    #[serde(default)]
    lambda_min_clipped: Option<f64>,
    #[serde(default)]
    variance_type: Option<String>,
    #[serde(default)]
    predict_x0: Option<bool>,
    #[serde(default)]
    disable_corrector: Vec<usize>,
    #[serde(default = "fifty")]
    original_inference_steps: usize,
    #[serde(default = "ten")]
    timestep_scaling: f64,
}

fn fifty() -> usize {
    50
}
fn ten() -> f64 {
    10.0
}

fn thousand() -> usize {
    1000
}
fn two() -> usize {
    2
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
fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}

impl SchedulerConfig {
    /// Reads a diffusers scheduler config.
    pub fn read(path: &Path) -> std::result::Result<Self, SdError> {
        Self::from_json(super::config::read_json(path)?, path)
    }

    /// A diffusers scheduler config, parsed (`path` names it in errors).
    pub fn from_json(json: serde_json::Value, path: &Path) -> std::result::Result<Self, SdError> {
        let json: SchedulerJson = super::config::parse(json, path)?;
        let unsupported = |message: String| SdError::Unsupported {
            path: path.to_path_buf(),
            message,
        };
        let kind = match json.class.as_str() {
            "DDIMScheduler" => Kind::Ddim,
            "DDPMScheduler" => Kind::Ddpm,
            "PNDMScheduler" => Kind::Pndm,
            "EulerDiscreteScheduler" => Kind::Euler,
            "EulerAncestralDiscreteScheduler" => Kind::EulerAncestral,
            "LMSDiscreteScheduler" => Kind::Lms,
            "HeunDiscreteScheduler" => Kind::Heun,
            "DPMSolverMultistepScheduler" => Kind::DpmSolverMultistep,
            "DPMSolverSinglestepScheduler" => Kind::DpmSolverSinglestep,
            "UniPCMultistepScheduler" => Kind::UniPc,
            "DEISMultistepScheduler" => Kind::Deis,
            "KDPM2DiscreteScheduler" => Kind::Kdpm2,
            "KDPM2AncestralDiscreteScheduler" => Kind::Kdpm2Ancestral,
            "LCMScheduler" => Kind::Lcm,
            "TCDScheduler" => Kind::Tcd,
            "DPMSolverSDEScheduler" => Kind::DpmSolverSde,
            other => {
                return Err(unsupported(format!(
                    "`_class_name` {other:?}: Autonomy samples with DDIMScheduler, DDPMScheduler, PNDMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, HeunDiscreteScheduler, LMSDiscreteScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler, DEISMultistepScheduler, KDPM2DiscreteScheduler, KDPM2AncestralDiscreteScheduler, DPMSolverSinglestepScheduler, DPMSolverSDEScheduler, LCMScheduler or TCDScheduler; set `_class_name` to one of them, or pick a `sampler` in the recipe (the betas stay as they are)"
                )));
            }
        };
        let prediction = match json.prediction_type.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            other => return Err(unsupported(format!("`prediction_type` {other:?}"))),
        };
        let spacing = match json.timestep_spacing.as_deref() {
            // The single-step solver has no such setting: its timesteps are always spread so.
            _ if kind == Kind::DpmSolverSinglestep => Spacing::Linspace,
            None => default_spacing(kind),
            Some("leading") => Spacing::Leading,
            Some("trailing") => Spacing::Trailing,
            Some("linspace") => Spacing::Linspace,
            Some(other) => return Err(unsupported(format!("`timestep_spacing` {other:?}"))),
        };
        let ramps: Vec<(&str, SigmaRamp)> = [
            (
                "use_karras_sigmas",
                json.use_karras_sigmas,
                SigmaRamp::Karras,
            ),
            (
                "use_exponential_sigmas",
                json.use_exponential_sigmas,
                SigmaRamp::Exponential,
            ),
            ("use_beta_sigmas", json.use_beta_sigmas, SigmaRamp::Beta),
            ("use_lu_lambdas", json.use_lu_lambdas, SigmaRamp::LuLambdas),
        ]
        .into_iter()
        .filter(|(_, on, _)| on.unwrap_or(false))
        .map(|(flag, _, ramp)| (flag, ramp))
        .collect();
        let ramp = match ramps.as_slice() {
            [] => SigmaRamp::Spaced,
            [(flag, SigmaRamp::LuLambdas)] if kind != Kind::DpmSolverMultistep => {
                return Err(unsupported(format!(
                    "`{flag}` with {}: Lu's λ spacing is read by DPMSolverMultistepScheduler only",
                    json.class
                )));
            }
            [(flag, _)] if !takes_ramps(kind) => {
                return Err(unsupported(format!(
                    "`{flag}` with {}: σ ramps are read for the Euler, Heun, LMS, DPM2, DPM-Solver++, UniPC and DEIS schedulers",
                    json.class
                )));
            }
            [(_, ramp)] => *ramp,
            more => {
                let flags: Vec<&str> = more.iter().map(|(flag, _)| *flag).collect();
                return Err(unsupported(format!(
                    "{} are all true: only one σ ramp can be used",
                    flags.join(", ")
                )));
            }
        };
        for (flag, on) in [
            ("thresholding", json.thresholding),
            ("use_flow_sigmas", json.use_flow_sigmas.unwrap_or(false)),
        ] {
            if on {
                return Err(unsupported(format!("`{flag}` = true is not supported yet")));
            }
        }
        if let Some(kind) = json.interpolation_type.filter(|k| k != "linear") {
            return Err(unsupported(format!("`interpolation_type` {kind:?}")));
        }
        if let Some(kind) = json.timestep_type.filter(|k| k != "discrete") {
            return Err(unsupported(format!("`timestep_type` {kind:?}")));
        }
        let final_sigma_min = match json.final_sigmas_type.as_deref() {
            None | Some("zero") => false,
            Some("sigma_min") if uses_final_sigma_min(kind) => true,
            Some(other) => return Err(unsupported(format!("`final_sigmas_type` {other:?}"))),
        };
        if kind == Kind::Pndm && !json.skip_prk_steps {
            return Err(unsupported(
                "PNDMScheduler with `skip_prk_steps` = false (its Runge-Kutta warm-up) is not supported; Stable Diffusion's releases set it true".into(),
            ));
        }
        let multistep = Multistep {
            order: json.solver_order,
            heun: json.solver_type.as_deref() == Some("heun"),
            sde: json.algorithm_type.as_deref() == Some("sde-dpmsolver++"),
            bh1: json.solver_type.as_deref() == Some("bh1"),
            disable_corrector: json.disable_corrector.clone(),
            lower_order_final: json.lower_order_final,
            euler_at_final: json.euler_at_final,
            lambda_min_clipped: json.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY),
        };
        // The `algorithm_type`s each solver reads (diffusers reads some others' names as its
        // own: DEIS's as DPM-Solver++'s in the single-step solver, DPM-Solver's as DEIS's).
        let algorithms: Option<(&[&str], &str)> = match kind {
            Kind::DpmSolverMultistep => Some((
                &["dpmsolver++", "sde-dpmsolver++"],
                "\"dpmsolver++\" (DPM++ 2M) and \"sde-dpmsolver++\" (DPM++ 2M SDE) are supported",
            )),
            Kind::DpmSolverSinglestep => Some((
                &["dpmsolver++", "deis"],
                "the single-step solver is read as \"dpmsolver++\"",
            )),
            Kind::Deis => Some((&["deis", "dpmsolver", "dpmsolver++"], "DEIS reads \"deis\"")),
            _ => None,
        };
        if let (Some((names, supported)), Some(algorithm)) =
            (algorithms, json.algorithm_type.as_deref())
            && !names.contains(&algorithm)
        {
            return Err(unsupported(format!(
                "`algorithm_type` {algorithm:?}: {supported}"
            )));
        }
        if kind == Kind::DpmSolverMultistep && json.variance_type.is_some() {
            return Err(unsupported("`variance_type` (learned variance)".into()));
        }
        if let Some(variance) = json.variance_type.as_deref().filter(|v| {
            kind == Kind::Ddpm && !["fixed_small", "fixed_small_log", "fixed_large"].contains(v)
        }) {
            return Err(unsupported(format!(
                "`variance_type` {variance:?}: DDPM is sampled with a fixed variance (`fixed_small`, `fixed_small_log` or `fixed_large`)"
            )));
        }
        if kind == Kind::UniPc && json.predict_x0 == Some(false) {
            return Err(unsupported(
                "`predict_x0` = false (UniPC on the noise prediction) is not supported; the default, true, is".into(),
            ));
        }
        // The multistep solvers' `solver_type`s (diffusers reads the others' names as its own:
        // DPM-Solver's as UniPC's `bh2`, …) and highest `solver_order`.
        let solvers: Option<(&[&str], usize, &str)> = match kind {
            Kind::DpmSolverMultistep => Some((&["midpoint", "heun"], 2, "DPM++ 2M uses 2 (or 1)")),
            Kind::DpmSolverSinglestep => Some((
                &["midpoint", "heun", "logrho", "bh1", "bh2"],
                3,
                "the single-step solver is read up to 3",
            )),
            Kind::Deis => Some((
                &["logrho", "midpoint", "heun", "bh1", "bh2"],
                3,
                "DEIS is read up to 3",
            )),
            Kind::UniPc => Some((
                &["bh1", "bh2", "midpoint", "heun", "logrho"],
                3,
                "UniPC is read up to 3",
            )),
            _ => None,
        };
        if let Some((names, highest, orders)) = solvers {
            if let Some(solver) = json.solver_type.as_deref().filter(|s| !names.contains(s)) {
                return Err(unsupported(format!("`solver_type` {solver:?}")));
            }
            if !(1..=highest).contains(&multistep.order) {
                return Err(unsupported(format!(
                    "`solver_order` {}: {orders}",
                    multistep.order
                )));
            }
        }
        let n = json.num_train_timesteps;
        if matches!(kind, Kind::Lcm | Kind::Tcd)
            && !(1..=n).contains(&json.original_inference_steps)
        {
            return Err(SdError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "`original_inference_steps` {} is not within 1..={n} training timesteps",
                    json.original_inference_steps
                ),
            });
        }
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
        if json.rescale_betas_zero_snr && !reads_zero_snr(kind) {
            tracing::warn!(
                path = %path.display(),
                "`rescale_betas_zero_snr` is not read by {}: it samples the schedule as trained, as diffusers does",
                json.class
            );
        }
        Ok(Self {
            kind,
            prediction,
            spacing,
            alphas_cumprod: alphas_cumprod(&betas, kind, json.rescale_betas_zero_snr),
            betas,
            zero_snr: json.rescale_betas_zero_snr,
            steps_offset: json.steps_offset,
            // DDIM's, LCM's and TCD's default is true, PNDM's false.
            set_alpha_to_one: json
                .set_alpha_to_one
                .unwrap_or(matches!(kind, Kind::Ddim | Kind::Lcm | Kind::Tcd)),
            // DDIM's and DDPM's default is true, the others' false.
            clip_sample: json
                .clip_sample
                .unwrap_or(matches!(kind, Kind::Ddim | Kind::Ddpm))
                .then_some(json.clip_sample_range),
            ddpm_large_variance: json.variance_type.as_deref() == Some("fixed_large"),
            ramp,
            final_sigma_min,
            spacing_given: json.timestep_spacing.is_some(),
            dpm_solver_2s: false,
            multistep,
            lcm: Lcm {
                original_steps: json.original_inference_steps,
                timestep_scaling: json.timestep_scaling,
            },
        })
    }

    /// This noise schedule sampled by `sampler`: what diffusers' `Sampler.from_config(config)`
    /// gives (a spacing the file named is kept, else the new class's default applies).
    pub fn with_sampler(&self, sampler: Sampler) -> Self {
        let (kind, karras) = match sampler {
            Sampler::Ddim => (Kind::Ddim, false),
            Sampler::Ddpm => (Kind::Ddpm, false),
            Sampler::Pndm => (Kind::Pndm, false),
            Sampler::Euler => (Kind::Euler, false),
            Sampler::EulerKarras => (Kind::Euler, true),
            Sampler::EulerAncestral => (Kind::EulerAncestral, false),
            Sampler::Lms => (Kind::Lms, false),
            Sampler::LmsKarras => (Kind::Lms, true),
            Sampler::Heun => (Kind::Heun, false),
            Sampler::HeunKarras => (Kind::Heun, true),
            Sampler::DpmPlusPlus2m => (Kind::DpmSolverMultistep, false),
            Sampler::DpmPlusPlus2mKarras => (Kind::DpmSolverMultistep, true),
            Sampler::DpmPlusPlus2mSde => (Kind::DpmSolverMultistep, false),
            Sampler::DpmPlusPlus2mSdeKarras => (Kind::DpmSolverMultistep, true),
            Sampler::UniPc => (Kind::UniPc, false),
            Sampler::UniPcKarras => (Kind::UniPc, true),
            Sampler::Deis => (Kind::Deis, false),
            Sampler::Dpm2 => (Kind::Kdpm2, false),
            Sampler::Dpm2Karras => (Kind::Kdpm2, true),
            Sampler::Dpm2Ancestral => (Kind::Kdpm2Ancestral, false),
            Sampler::Dpm2AncestralKarras => (Kind::Kdpm2Ancestral, true),
            Sampler::DpmPlusPlus2s => (Kind::DpmSolverSinglestep, false),
            Sampler::DpmPlusPlus2sKarras => (Kind::DpmSolverSinglestep, true),
            Sampler::DpmPlusPlusSde => (Kind::DpmSolverSde, false),
            Sampler::DpmPlusPlusSdeKarras => (Kind::DpmSolverSde, true),
            Sampler::DpmPlusPlus2sAncestral => (Kind::Kdpm2Ancestral, false),
            Sampler::DpmPlusPlus2sAncestralKarras => (Kind::Kdpm2Ancestral, true),
            Sampler::Lcm => (Kind::Lcm, false),
            Sampler::Tcd => (Kind::Tcd, false),
        };
        Self {
            kind,
            ramp: if karras {
                SigmaRamp::Karras
            } else {
                SigmaRamp::Spaced
            },
            spacing: if self.spacing_given && kind != Kind::DpmSolverSinglestep {
                self.spacing
            } else {
                default_spacing(kind)
            },
            final_sigma_min: self.final_sigma_min && uses_final_sigma_min(kind),
            // The name picks the algorithm: `dpm++2m` is the deterministic one even where the
            // folder's own scheduler is the SDE.
            multistep: Multistep {
                sde: matches!(
                    sampler,
                    Sampler::DpmPlusPlus2mSde | Sampler::DpmPlusPlus2mSdeKarras
                ),
                ..self.multistep.clone()
            },
            alphas_cumprod: alphas_cumprod(&self.betas, kind, self.zero_snr),
            dpm_solver_2s: matches!(
                sampler,
                Sampler::DpmPlusPlus2sAncestral | Sampler::DpmPlusPlus2sAncestralKarras
            ),
            ..self.clone()
        }
    }

    fn train_steps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// The most inference steps this sampler takes: one per training timestep, or for LCM
    /// one per step of its distillation schedule.
    pub fn max_steps(&self) -> usize {
        match self.kind {
            Kind::Lcm | Kind::Tcd => self.lcm.original_steps,
            _ => self.train_steps(),
        }
    }

    /// σ = √((1−ᾱ)/ᾱ) at training timestep `i`.
    fn train_sigma(&self, i: usize) -> f64 {
        let a = self.alphas_cumprod[i];
        ((1.0 - a) / a).sqrt()
    }

    /// Noise level σ at a (fractional) training timestep, interpolated linearly.
    fn sigma_at(&self, t: f64) -> f64 {
        let last = self.train_steps() - 1;
        let t = t.clamp(0.0, last as f64);
        let low = t.floor() as usize;
        let high = (low + 1).min(last);
        let w = t - low as f64;
        self.train_sigma(low) * (1.0 - w) + self.train_sigma(high) * w
    }

    /// The (fractional) training timestep whose σ is `sigma`, interpolating log σ
    /// (diffusers' `_sigma_to_t`).
    fn t_of_sigma(&self, sigma: f64) -> f64 {
        let log_sigma = sigma.max(1e-10).ln();
        let last = self.train_steps() - 1;
        let log_at = |i: usize| self.train_sigma(i).ln();
        let low = (0..=last)
            .rfind(|&i| log_at(i) <= log_sigma)
            .unwrap_or(0)
            .min(last - 1);
        let (l, h) = (log_at(low), log_at(low + 1));
        let w = ((l - log_sigma) / (l - h)).clamp(0.0, 1.0);
        (1.0 - w) * low as f64 + w * (low + 1) as f64
    }

    /// The last training timestep DPM-Solver++ may start from (`lambda_min_clipped`; UniPC
    /// has no such clip).
    fn multistep_last_timestep(&self) -> usize {
        let n = self.train_steps();
        if matches!(self.kind, Kind::UniPc | Kind::Deis) {
            return n;
        }
        let clipped = (0..n)
            .filter(|&i| {
                let a = self.alphas_cumprod[i];
                0.5 * a.ln() - 0.5 * (1.0 - a).ln() < self.multistep.lambda_min_clipped
            })
            .count();
        n - clipped
    }

    /// Evenly spaced, noisiest first, in diffusers' rounding (numpy rounds halves to even).
    fn spaced_timesteps(&self, steps: usize) -> Vec<f64> {
        let n = self.train_steps();
        match (self.kind, self.spacing) {
            (Kind::Lcm | Kind::Tcd, _) => {
                // The distillation schedule k−1, 2k−1, …, noisiest first; `steps` of its
                // entries at evenly spaced (floored) indices.
                let original = self.lcm.original_steps;
                let k = n / original;
                (0..steps)
                    .map(|j| {
                        let index = j * original / steps;
                        ((original - index) * k - 1) as f64
                    })
                    .collect()
            }
            (
                Kind::DpmSolverMultistep | Kind::DpmSolverSinglestep | Kind::UniPc | Kind::Deis,
                Spacing::Leading,
            ) => {
                let ratio = self.multistep_last_timestep() / (steps + 1);
                (1..=steps)
                    .rev()
                    .map(|i| (i * ratio + self.steps_offset) as f64)
                    .collect()
            }
            (
                Kind::DpmSolverMultistep | Kind::DpmSolverSinglestep | Kind::UniPc | Kind::Deis,
                Spacing::Linspace,
            ) => {
                let last = self.multistep_last_timestep() as f64;
                let mut points = linspace(0.0, last - 1.0, steps + 1);
                points.remove(0);
                points.into_iter().rev().map(f64::round_ties_even).collect()
            }
            (
                Kind::DpmSolverMultistep | Kind::DpmSolverSinglestep | Kind::UniPc | Kind::Deis,
                Spacing::Trailing,
            ) => {
                let last = self.multistep_last_timestep() as f64;
                let ratio = n as f64 / steps as f64;
                (0..)
                    .map(|i| last - i as f64 * ratio)
                    .take_while(|&t| t > 0.0)
                    .map(|t| t.round_ties_even() - 1.0)
                    .collect()
            }
            (_, Spacing::Leading) => {
                let ratio = n / steps;
                (0..steps)
                    .rev()
                    .map(|i| (i * ratio + self.steps_offset) as f64)
                    .collect()
            }
            (_, Spacing::Trailing) => {
                let ratio = n as f64 / steps as f64;
                (0..steps)
                    .map(|i| (n as f64 - i as f64 * ratio).round_ties_even() - 1.0)
                    .collect()
            }
            (Kind::Ddim | Kind::Ddpm | Kind::Pndm, Spacing::Linspace) => {
                linspace(0.0, (n - 1) as f64, steps)
                    .into_iter()
                    .rev()
                    .map(f64::round_ties_even)
                    .collect()
            }
            (_, Spacing::Linspace) => linspace(0.0, (n - 1) as f64, steps)
                .into_iter()
                .rev()
                .collect(),
        }
    }

    /// The schedule for `steps` inference steps.
    pub fn schedule(&self, steps: usize) -> Schedule {
        let n = self.train_steps();
        let steps = steps.clamp(1, self.max_steps());
        let mut timesteps = self.spaced_timesteps(steps);
        let spaced: Vec<f64> = timesteps.iter().map(|&t| self.sigma_at(t)).collect();
        // DPM-Solver++ and UniPC ramp over the whole training range, the others between the
        // spaced timesteps' σ. DPM-Solver++ and UniPC keep integer timesteps: Karras ones
        // rounded, the others truncated (diffusers' cast to int64). diffusers finds them in its
        // f32 σ table, where σ_max lands a hair below the last timestep (998.9999997 for SD's
        // schedule), so a whole timestep here is taken as that hair below too.
        let (min, max) = match self.kind {
            Kind::DpmSolverMultistep | Kind::DpmSolverSinglestep | Kind::UniPc | Kind::Deis => {
                (self.train_sigma(0), self.train_sigma(n - 1))
            }
            _ => (spaced[spaced.len() - 1], spaced[0]),
        };
        let ramped = match takes_ramps(self.kind) {
            true => self.ramp.sigmas(min, max, steps),
            false => None,
        };
        let ramp_end = ramped.as_ref().and_then(|r| r.last().copied());
        let mut sigmas = match ramped {
            Some(sigmas) => {
                let integer = matches!(
                    self.kind,
                    Kind::DpmSolverMultistep | Kind::DpmSolverSinglestep | Kind::UniPc | Kind::Deis
                );
                // DPM2 rounds its Karras timesteps too, but keeps them as floats.
                // (k-diffusion's DPM++ 2S a does not: its denoiser takes σ's own timestep.)
                let round = matches!(self.ramp, SigmaRamp::Karras | SigmaRamp::LuLambdas)
                    && (integer
                        || (matches!(self.kind, Kind::Kdpm2 | Kind::Kdpm2Ancestral)
                            && !self.dpm_solver_2s));
                timesteps = sigmas
                    .iter()
                    .map(|&s| self.t_of_sigma(s))
                    .map(|t| match (round, integer) {
                        (true, _) => t.round_ties_even(),
                        (false, true) => (t - 1e-6).trunc().max(0.0),
                        (false, false) => t,
                    })
                    .collect();
                sigmas
            }
            None => spaced,
        };
        // σ_min as the last σ (DEIS's always): UniPC's and DEIS's ramps end on their own last
        // σ (the largest for one step), the rest on the training schedule's smallest.
        sigmas.push(match (self.final_sigma_min, self.kind, ramp_end) {
            (_, Kind::Deis, Some(end)) | (true, Kind::UniPc, Some(end)) => end,
            (_, Kind::Deis, None) | (true, _, _) => self.train_sigma(0),
            (false, _, _) => 0.0,
        });
        if self.kind == Kind::Pndm && timesteps.len() > 1 {
            // PLMS runs the second timestep twice: once to predict, once to correct the first step.
            timesteps.insert(1, timesteps[1]);
        }
        if self.kind == Kind::Heun {
            // Every step after the first is a corrector call at the same σ and timestep.
            timesteps = std::iter::once(timesteps[0])
                .chain(timesteps[1..].iter().flat_map(|&t| [t, t]))
                .collect();
            let last = sigmas.len() - 1;
            sigmas = std::iter::once(sigmas[0])
                .chain(sigmas[1..last].iter().flat_map(|&s| [s, s]))
                .chain([sigmas[last]])
                .collect();
        }
        if matches!(
            self.kind,
            Kind::Kdpm2 | Kind::Kdpm2Ancestral | Kind::DpmSolverSde
        ) {
            // Each step but the last also calls the UNet at the geometric mean of its σ and
            // where it steps to (the next σ, the midpoint in log σ; for DPM2 a the ancestral
            // step's lower σ, σₖ₊₁²/σₖ):
            // the σ list holds the σ of every call, then the final 0.
            let mut calls = vec![sigmas[0]];
            let mut call_timesteps = vec![timesteps[0]];
            for k in 1..steps {
                let mid = match self.kind {
                    Kind::Kdpm2Ancestral => {
                        let (down, _) = ancestral_down_up(sigmas[k - 1], sigmas[k]);
                        (down * sigmas[k - 1]).sqrt()
                    }
                    _ => (sigmas[k] * sigmas[k - 1]).sqrt(),
                };
                calls.extend([mid, sigmas[k]]);
                call_timesteps.extend([self.t_of_sigma(mid), timesteps[k]]);
            }
            calls.push(0.0);
            sigmas = calls;
            timesteps = call_timesteps;
        }
        Schedule {
            config: self.clone(),
            timesteps,
            sigmas,
            steps,
            history: Vec::new(),
            calls: 0,
            held: None,
        }
    }
}

/// ∫ ℓ(ln ρ) dρ at `log_rho` (an antiderivative in ρ), ℓ the Lagrange basis polynomial in
/// ln ρ that is 1 at `node` and 0 at each of `others` (one or two: DEIS's second and third
/// order, diffusers' `ind_fn`).
fn log_lagrange_integral(log_rho: f64, node: f64, others: &[f64]) -> f64 {
    let (x, rho) = (log_rho, log_rho.exp());
    match others {
        [c] => rho * (x - c - 1.0) / (node - c),
        [c, d] => {
            rho * (c * (d - x + 1.0) - d * x + d + x * x - 2.0 * x + 2.0)
                / ((node - c) * (node - d))
        }
        _ => 0.0,
    }
}

/// How many past derivatives LMS combines.
const LMS_ORDER: usize = 4;

/// An ancestral step from σ to σₙ as k-diffusion splits it: deterministically down to
/// σ_down = σₙ²/σ, then noise of σ_up = σₙ·√(σ² − σₙ²)/σ (so that σ_down² + σ_up² = σₙ²).
/// diffusers computes σ_down in f32 as √(σₙ² − σ_up²), a difference of nearly equal squares
/// when σ ≫ σₙ (a two-step run), which moves it by up to a percent there; this is the exact
/// value.
fn ancestral_down_up(sigma: f64, next: f64) -> (f64, f64) {
    let down = next * next / sigma;
    let up = next * (sigma * sigma - next * next).max(0.0).sqrt() / sigma;
    (down, up)
}

/// Whether the class reads `rescale_betas_zero_snr`.
fn reads_zero_snr(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Ddim
            | Kind::Ddpm
            | Kind::Euler
            | Kind::EulerAncestral
            | Kind::DpmSolverMultistep
            | Kind::UniPc
            | Kind::Lcm
            | Kind::Tcd
    )
}

/// ᾱ, the cumulative product of 1 − β, for each training timestep. With `zero_snr` (and a
/// `kind` that reads it) √ᾱ is shifted and scaled so that the last timestep is pure noise and
/// the first is unchanged (Lin et al. 2023, diffusers' `rescale_zero_terminal_snr`); the
/// σ-based samplers then set the last ᾱ to 2⁻²⁴, so σ_max is 4096 rather than infinite.
fn alphas_cumprod(betas: &[f64], kind: Kind, zero_snr: bool) -> Vec<f64> {
    let mut product = 1.0;
    let mut alphas: Vec<f64> = betas
        .iter()
        .map(|beta| {
            product *= 1.0 - beta;
            product
        })
        .collect();
    if !zero_snr || !reads_zero_snr(kind) {
        return alphas;
    }
    let (first, last) = match (alphas.first(), alphas.last()) {
        (Some(first), Some(last)) if first > last => (first.sqrt(), last.sqrt()),
        _ => return alphas,
    };
    for alpha in &mut alphas {
        let root = (alpha.sqrt() - last) * first / (first - last);
        *alpha = root * root;
    }
    if !matches!(kind, Kind::Ddim | Kind::Ddpm | Kind::Lcm | Kind::Tcd)
        && let Some(end) = alphas.last_mut()
    {
        *end = 2f64.powi(-24);
    }
    alphas
}

/// Whether the class reads `use_karras_sigmas`, `use_exponential_sigmas` and `use_beta_sigmas`.
fn takes_ramps(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Euler
            | Kind::Heun
            | Kind::Lms
            | Kind::Kdpm2
            | Kind::Kdpm2Ancestral
            | Kind::DpmSolverSde
            | Kind::DpmSolverMultistep
            | Kind::DpmSolverSinglestep
            | Kind::UniPc
            | Kind::Deis
    )
}

/// Each class's own default spacing.
fn default_spacing(kind: Kind) -> Spacing {
    match kind {
        Kind::Ddim | Kind::Ddpm | Kind::Pndm | Kind::Lcm | Kind::Tcd => Spacing::Leading,
        Kind::Euler
        | Kind::EulerAncestral
        | Kind::Heun
        | Kind::Lms
        | Kind::Kdpm2
        | Kind::Kdpm2Ancestral
        | Kind::DpmSolverSde
        | Kind::DpmSolverMultistep
        | Kind::DpmSolverSinglestep
        | Kind::UniPc
        | Kind::Deis => Spacing::Linspace,
    }
}

/// Whether the class reads `final_sigmas_type = "sigma_min"`.
fn uses_final_sigma_min(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Euler
            | Kind::DpmSolverMultistep
            | Kind::DpmSolverSinglestep
            | Kind::UniPc
            | Kind::Deis
    )
}

/// The timesteps of one sampling run and the update between them. Multistep samplers (PLMS,
/// DPM-Solver++) remember the outputs they were given, so each run needs a fresh schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    config: SchedulerConfig,
    /// The UNet's timestep at each step, noisiest first (PLMS lists one of them twice).
    pub timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    steps: usize,
    /// PLMS: past noise predictions; LMS: past derivatives; Heun: the predictor's derivative;
    /// DPM-Solver++: past x₀ predictions.
    history: Vec<Tensor>,
    /// How many steps have been taken.
    calls: usize,
    /// PLMS: the latents its first step started from; Heun: the predictor's.
    held: Option<Tensor>,
}

impl Schedule {
    /// The number of inference steps asked for (PLMS calls the UNet once more).
    pub fn inference_steps(&self) -> usize {
        self.steps
    }

    /// UNet calls per inference step as image-to-image counts them (diffusers' `order`):
    /// Heun's list holds two entries a step, so a run starting at inference step `s` starts
    /// at entry `order·s`.
    pub fn order(&self) -> usize {
        match self.config.kind {
            Kind::Heun | Kind::Kdpm2 | Kind::Kdpm2Ancestral | Kind::DpmSolverSde => 2,
            _ => 1,
        }
    }

    /// Scale of the starting noise.
    pub fn init_noise_sigma(&self) -> f64 {
        match self.config.kind {
            Kind::Ddim
            | Kind::Ddpm
            | Kind::Pndm
            | Kind::DpmSolverMultistep
            | Kind::DpmSolverSinglestep
            | Kind::UniPc
            | Kind::Deis
            | Kind::Lcm
            | Kind::Tcd => 1.0,
            Kind::Euler
            | Kind::EulerAncestral
            | Kind::Heun
            | Kind::Lms
            | Kind::Kdpm2
            | Kind::Kdpm2Ancestral
            | Kind::DpmSolverSde => {
                let max = self.sigmas.iter().copied().fold(0.0, f64::max);
                match self.config.spacing {
                    Spacing::Linspace | Spacing::Trailing => max,
                    Spacing::Leading => (max * max + 1.0).sqrt(),
                }
            }
        }
    }

    /// What the UNet sees at step `i`: Euler, Heun and LMS samplers divide by √(σ²+1).
    pub fn scale_model_input(&self, latents: &Tensor, i: usize) -> Result<Tensor> {
        match self.config.kind {
            Kind::Euler
            | Kind::EulerAncestral
            | Kind::Heun
            | Kind::Lms
            | Kind::Kdpm2
            | Kind::Kdpm2Ancestral
            | Kind::DpmSolverSde => latents / (self.sigmas[i].powi(2) + 1.0).sqrt(),
            Kind::Ddim
            | Kind::Ddpm
            | Kind::Pndm
            | Kind::DpmSolverMultistep
            | Kind::DpmSolverSinglestep
            | Kind::UniPc
            | Kind::Deis
            | Kind::Lcm
            | Kind::Tcd => Ok(latents.clone()),
        }
    }

    /// `x0` noised to the level step `i` starts from (image-to-image, inpainting).
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        match self.config.kind {
            Kind::Ddim | Kind::Ddpm | Kind::Pndm | Kind::Lcm | Kind::Tcd => {
                let a = self.alpha_cumprod(self.timesteps[i] as i64);
                (x0 * a.sqrt())? + (noise * (1.0 - a).sqrt())?
            }
            Kind::Euler
            | Kind::EulerAncestral
            | Kind::Heun
            | Kind::Lms
            | Kind::Kdpm2
            | Kind::Kdpm2Ancestral
            | Kind::DpmSolverSde => x0 + (noise * self.sigmas[i])?,
            Kind::DpmSolverMultistep | Kind::DpmSolverSinglestep | Kind::UniPc | Kind::Deis => {
                let (alpha, sigma) = alpha_sigma(self.sigmas[i]);
                (x0 * alpha)? + (noise * sigma)?
            }
        }
    }

    /// Whether step `i` needs fresh noise (ancestral, SDE and LCM sampling, all but the last
    /// step).
    pub fn needs_noise(&self, i: usize) -> bool {
        match self.config.kind {
            Kind::EulerAncestral => self.sigmas[i + 1] > 0.0,
            Kind::DpmSolverMultistep => self.config.multistep.sde && self.sigmas[i + 1] > 0.0,
            Kind::Lcm => i + 1 < self.timesteps.len(),
            Kind::Tcd => TCD_GAMMA > 0.0 && i + 1 < self.timesteps.len(),
            Kind::Ddpm => self.timesteps[i] > 0.0,
            // The second call of each step.
            Kind::Kdpm2Ancestral => i % 2 == 1,
            // Both calls of each step but the last (an Euler step to 0).
            Kind::DpmSolverSde => self.sigmas[i + 1] > 0.0,
            _ => false,
        }
    }

    /// DPM++ SDE: the noise levels whose Brownian increment step `i` adds, from σ to where
    /// it steps (its first call to the midpoint, its second the whole step); `None` for
    /// other samplers, which draw independent noise.
    pub fn brownian_interval(&self, i: usize) -> Option<(f64, f64)> {
        if self.config.kind != Kind::DpmSolverSde || !self.needs_noise(i) {
            return None;
        }
        let s = &self.sigmas;
        Some(match i % 2 {
            0 => (s[i], s[i + 1]),
            _ => (s[i - 1], s[i + 1]),
        })
    }

    /// The smallest and largest non-zero σ of the run: the span of DPM++ SDE's Brownian
    /// motion.
    pub fn sigma_span(&self) -> (f64, f64) {
        let positive = self.sigmas.iter().copied().filter(|&s| s > 0.0);
        let min = positive.clone().fold(f64::INFINITY, f64::min);
        let max = positive.fold(0.0, f64::max);
        (min.min(max), max)
    }

    /// The latents after step `i`, given the UNet's (guided) output; `noise` (same shape)
    /// is used when [`Schedule::needs_noise`] says so. Steps must come in order.
    pub fn step(
        &mut self,
        output: &Tensor,
        i: usize,
        latents: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let next = match self.config.kind {
            Kind::Ddim => self.ddim_step(output, i, latents),
            Kind::Pndm => self.plms_step(output, i, latents),
            Kind::Euler | Kind::EulerAncestral => self.euler_step(output, i, latents, noise),
            Kind::Lms => self.lms_step(output, i, latents),
            Kind::Heun => self.heun_step(output, i, latents),
            Kind::Kdpm2 | Kind::Kdpm2Ancestral => self.dpm2_step(output, i, latents, noise),
            Kind::DpmSolverSde => self.dpm_sde_step(output, i, latents, noise),
            Kind::DpmSolverMultistep => self.dpm_step(output, i, latents, noise),
            Kind::DpmSolverSinglestep => self.dpm_singlestep(output, i, latents),
            Kind::UniPc => self.unipc_step(output, i, latents),
            Kind::Deis => self.deis_step(output, i, latents),
            Kind::Lcm => self.lcm_step(output, i, latents, noise),
            Kind::Tcd => self.tcd_step(output, i, latents, noise),
            Kind::Ddpm => self.ddpm_step(output, i, latents, noise),
        }?;
        self.calls += 1;
        Ok(next)
    }

    /// ᾱ at training timestep `t`; before the first, 1 or ᾱ₀ (`set_alpha_to_one`).
    fn alpha_cumprod(&self, t: i64) -> f64 {
        let ac = &self.config.alphas_cumprod;
        match usize::try_from(t) {
            Ok(t) => ac[t.min(ac.len() - 1)],
            Err(_) if self.config.set_alpha_to_one => 1.0,
            Err(_) => ac[0],
        }
    }

    /// The x₀ and the noise the UNet's `output` implies for `latents` at ᾱ = `a`.
    fn x0_and_noise(&self, output: &Tensor, latents: &Tensor, a: f64) -> Result<(Tensor, Tensor)> {
        Ok(match self.config.prediction {
            Prediction::Epsilon => (
                ((latents - (output * (1.0 - a).sqrt())?)? / a.sqrt())?,
                output.clone(),
            ),
            Prediction::V => (
                ((latents * a.sqrt())? - (output * (1.0 - a).sqrt())?)?,
                ((output * a.sqrt())? + (latents * (1.0 - a).sqrt())?)?,
            ),
        })
    }

    fn ddim_step(&self, output: &Tensor, i: usize, latents: &Tensor) -> Result<Tensor> {
        let t = self.timesteps[i] as i64;
        let a = self.alpha_cumprod(t);
        let a_prev = self.alpha_cumprod(t - self.step_ratio() as i64);
        let (x0, eps) = self.x0_and_noise(output, latents, a)?;
        let x0 = match self.config.clip_sample {
            Some(range) => x0.clamp(-range, range)?,
            None => x0,
        };
        (x0 * a_prev.sqrt())? + (eps * (1.0 - a_prev).sqrt())?
    }

    /// DDPM (diffusers' `DDPMScheduler`): the posterior mean between the timestep and the next
    /// one in the schedule (ᾱ = 1 after the last), from the clamped x₀ and the latents, plus
    /// `noise` times the posterior's spread (or √β with `fixed_large`) while t > 0.
    fn ddpm_step(
        &self,
        output: &Tensor,
        i: usize,
        latents: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let t = self.timesteps[i];
        let a = self.alpha_cumprod(t as i64);
        let a_prev = match self.timesteps.get(i + 1) {
            Some(&prev) => self.alpha_cumprod(prev as i64),
            None => 1.0,
        };
        let (b, b_prev) = (1.0 - a, 1.0 - a_prev);
        let (alpha, beta) = (a / a_prev, 1.0 - a / a_prev);
        let (x0, _) = self.x0_and_noise(output, latents, a)?;
        let x0 = match self.config.clip_sample {
            Some(range) => x0.clamp(-range, range)?,
            None => x0,
        };
        let mean = ((x0 * (a_prev.sqrt() * beta / b))? + (latents * (alpha.sqrt() * b_prev / b))?)?;
        match noise {
            Some(noise) if t > 0.0 => {
                let variance = if self.config.ddpm_large_variance {
                    beta
                } else {
                    (b_prev / b * beta).max(1e-20)
                };
                mean + (noise * variance.sqrt())?
            }
            _ => Ok(mean),
        }
    }

    fn step_ratio(&self) -> usize {
        self.config.train_steps() / self.steps
    }

    /// PLMS (diffusers' `PNDMScheduler.step_plms`): the first step is redone with the mean of
    /// its two predictions, later ones combine up to four past predictions (Adams–Bashforth).
    fn plms_step(&mut self, output: &Tensor, i: usize, latents: &Tensor) -> Result<Tensor> {
        let ratio = self.step_ratio() as i64;
        let mut t = self.timesteps[i] as i64;
        let mut prev = t - ratio;
        if self.calls == 1 {
            prev = t;
            t += ratio;
        } else {
            if self.history.len() > 3 {
                self.history.remove(0);
            }
            self.history.push(output.clone());
        }
        let sample = match (self.history.len(), self.calls) {
            (1, 0) => {
                self.held = Some(latents.clone());
                latents.clone()
            }
            (1, _) => self.held.take().unwrap_or_else(|| latents.clone()),
            _ => latents.clone(),
        };
        let e = &self.history;
        let last = e.len() - 1;
        let eps = match (e.len(), self.calls) {
            (1, 0) => output.clone(),
            (1, _) => ((output + &e[0])? / 2.0)?,
            (2, _) => (((&e[1] * 3.0)? - &e[0])? / 2.0)?,
            (3, _) => ((((&e[2] * 23.0)? - (&e[1] * 16.0)?)? + (&e[0] * 5.0)?)? / 12.0)?,
            _ => {
                let sum = ((((&e[last] * 55.0)? - (&e[last - 1] * 59.0)?)?
                    + (&e[last - 2] * 37.0)?)?
                    - (&e[last - 3] * 9.0)?)?;
                (sum / 24.0)?
            }
        };
        let a = self.alpha_cumprod(t);
        let a_prev = self.alpha_cumprod(prev);
        let eps = match self.config.prediction {
            Prediction::Epsilon => eps,
            Prediction::V => ((eps * a.sqrt())? + (&sample * (1.0 - a).sqrt())?)?,
        };
        let sample_coeff = (a_prev / a).sqrt();
        let denominator = a * (1.0 - a_prev).sqrt() + (a * (1.0 - a) * a_prev).sqrt();
        (sample * sample_coeff)? - (eps * ((a_prev - a) / denominator))?
    }

    /// The model's x₀ prediction at σ from its output (ε or v) and the σ-scaled latents.
    fn sigma_x0(&self, output: &Tensor, sigma: f64, latents: &Tensor) -> Result<Tensor> {
        match self.config.prediction {
            Prediction::Epsilon => latents - (output * sigma)?,
            Prediction::V => {
                let s = sigma * sigma + 1.0;
                (output * (-sigma / s.sqrt()))? + (latents / s)?
            }
        }
    }

    /// LMS (diffusers' `LMSDiscreteScheduler`): the derivatives `(x − x₀)/σ` of the last (up to)
    /// four steps, each weighted by its Lagrange basis polynomial integrated over [σᵢ, σᵢ₊₁].
    fn lms_step(&mut self, output: &Tensor, i: usize, latents: &Tensor) -> Result<Tensor> {
        let sigma = self.sigmas[i];
        let x0 = self.sigma_x0(output, sigma, latents)?;
        let derivative = ((latents - &x0)? / sigma)?;
        if self.history.len() == LMS_ORDER {
            self.history.remove(0);
        }
        self.history.push(derivative);
        // diffusers counts the order from the step index (not the steps taken), pairing the
        // coefficients with the derivatives it has, most recent first.
        let order = (i + 1).min(LMS_ORDER);
        let mut next = latents.clone();
        for (j, derivative) in (0..order).zip(self.history.iter().rev()) {
            next = (next + (derivative * self.lms_coefficient(order, i, j))?)?;
        }
        Ok(next)
    }

    /// Heun (diffusers' `HeunDiscreteScheduler`): an Euler step from σ to the next σ, then,
    /// at the next call, the same step again with the mean of the two derivatives.
    fn heun_step(&mut self, output: &Tensor, i: usize, latents: &Tensor) -> Result<Tensor> {
        let clip = |x0: Tensor| match self.config.clip_sample {
            Some(range) => x0.clamp(-range, range),
            None => Ok(x0),
        };
        match (self.history.pop(), self.held.take()) {
            (Some(first), Some(start)) => {
                let (sigma, next) = (self.sigmas[i - 1], self.sigmas[i]);
                let x0 = clip(self.sigma_x0(output, next, latents)?)?;
                let derivative = ((latents - &x0)? / next)?;
                let mean = ((first + derivative)? / 2.0)?;
                start + (mean * (next - sigma))?
            }
            _ => {
                let (sigma, next) = (self.sigmas[i], self.sigmas[i + 1]);
                let x0 = clip(self.sigma_x0(output, sigma, latents)?)?;
                let derivative = ((latents - &x0)? / sigma)?;
                let stepped = (latents + (&derivative * (next - sigma))?)?;
                self.history.push(derivative);
                self.held = Some(latents.clone());
                Ok(stepped)
            }
        }
    }

    /// DPM2 (diffusers' `KDPM2DiscreteScheduler`): an Euler step from σ to the geometric mean
    /// of σ and the next σ, then, at the next call (made there), the whole step from σ with the
    /// derivative found at the mean. The last step is the Euler half alone, to 0. DPM2 a
    /// (`KDPM2AncestralDiscreteScheduler`) steps down to σ_down instead and adds `noise`
    /// scaled by σ_up ([`ancestral_down_up`]); DPM++ 2S a
    /// ([`SchedulerConfig::dpm_solver_2s`]) takes the same calls, its second step by the
    /// exponential integrator.
    fn dpm2_step(
        &mut self,
        output: &Tensor,
        i: usize,
        latents: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let s = &self.sigmas;
        match self.held.take() {
            Some(start) => {
                let (sigma, mid, next) = (s[i - 1], s[i], s[i + 1]);
                let x0 = self.sigma_x0(output, mid, latents)?;
                if self.config.kind != Kind::Kdpm2Ancestral {
                    let derivative = ((latents - x0)? / mid)?;
                    return start + (derivative * (next - sigma))?;
                }
                let (down, up) = ancestral_down_up(sigma, next);
                let stepped = match self.config.dpm_solver_2s {
                    // DPM++ 2S a: x₀ + σ_down/σ·(x − x₀), from the step's start.
                    true => (&x0 + ((start - &x0)? * (down / sigma))?)?,
                    false => {
                        let derivative = ((latents - x0)? / mid)?;
                        (start + (derivative * (down - sigma))?)?
                    }
                };
                match noise {
                    Some(noise) => stepped + (noise * up)?,
                    None => Ok(stepped),
                }
            }
            None => {
                let (sigma, mid) = (s[i], s[i + 1]);
                let x0 = self.sigma_x0(output, sigma, latents)?;
                let derivative = ((latents - x0)? / sigma)?;
                self.held = Some(latents.clone());
                latents + (derivative * (mid - sigma))?
            }
        }
    }

    /// DPM++ SDE (diffusers' `DPMSolverSDEScheduler`): from σ an ancestral step to the
    /// midpoint with the x₀ predicted at σ, then from σ again the whole ancestral step with the
    /// x₀ predicted at the midpoint; the last step, to 0, is Euler's.
    fn dpm_sde_step(
        &mut self,
        output: &Tensor,
        i: usize,
        latents: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let s = &self.sigmas;
        // From `start` at σ towards `to`: down to σ_down along the exponential integrator's
        // path, then noise up by σ_up (σ_down² + σ_up² = to²).
        let ancestral = |start: &Tensor, x0: &Tensor, sigma: f64, to: f64| -> Result<Tensor> {
            let up = to.min(
                (to * to * (sigma * sigma - to * to) / (sigma * sigma))
                    .max(0.0)
                    .sqrt(),
            );
            let down = (to * to - up * up).max(0.0).sqrt();
            let stepped = (x0 + ((start - x0)? * (down / sigma))?)?;
            match noise {
                Some(noise) => stepped + (noise * up)?,
                None => Ok(stepped),
            }
        };
        match self.held.take() {
            Some(start) => {
                let (sigma, mid, next) = (s[i - 1], s[i], s[i + 1]);
                let x0 = self.sigma_x0(output, mid, latents)?;
                ancestral(&start, &x0, sigma, next)
            }
            None => {
                let (sigma, to) = (s[i], s[i + 1]);
                let x0 = self.sigma_x0(output, sigma, latents)?;
                if to <= 0.0 {
                    let derivative = ((latents - &x0)? / sigma)?;
                    return latents + (derivative * (to - sigma))?;
                }
                self.held = Some(latents.clone());
                ancestral(latents, &x0, sigma, to)
            }
        }
    }

    /// ∫ over [σᵢ, σᵢ₊₁] of the Lagrange basis polynomial of node `i − j` among nodes
    /// `i, i−1, …, i−order+1`: a polynomial of degree ≤ 3, which 3-point Gauss–Legendre
    /// quadrature integrates exactly.
    fn lms_coefficient(&self, order: usize, i: usize, j: usize) -> f64 {
        let s = &self.sigmas;
        let basis = |tau: f64| -> f64 {
            (0..order)
                .filter(|&k| k != j)
                .map(|k| (tau - s[i - k]) / (s[i - j] - s[i - k]))
                .product()
        };
        let (mid, half) = ((s[i] + s[i + 1]) / 2.0, (s[i + 1] - s[i]) / 2.0);
        let root = 0.6f64.sqrt();
        half * (5.0 / 9.0 * basis(mid - half * root)
            + 8.0 / 9.0 * basis(mid)
            + 5.0 / 9.0 * basis(mid + half * root))
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
        let x0 = self.sigma_x0(output, sigma, latents)?;
        let derivative = ((latents - &x0)? / sigma)?;
        match (self.config.kind, noise) {
            (Kind::EulerAncestral, Some(noise)) if next > 0.0 => {
                let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).sqrt();
                let down = (next * next - up * up).sqrt();
                (latents + (derivative * (down - sigma))?)? + (noise * up)?
            }
            _ => latents + (derivative * (next - sigma))?,
        }
    }

    /// DPM-Solver++ (diffusers' `DPMSolverMultistepScheduler`, `dpmsolver++`): first order on
    /// the first step (and the last, when configured), second order from two x₀ predictions
    /// in between. The SDE variant (`sde-dpmsolver++`) decays the latents by e⁻ʰ more, weighs
    /// the x₀ predictions by 1 − e⁻²ʰ and adds `noise` scaled by σ_t·√(1 − e⁻²ʰ).
    fn dpm_step(
        &mut self,
        output: &Tensor,
        i: usize,
        latents: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (_, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let x0 = self.vp_x0(output, i, latents)?;
        self.remember(x0);
        let dpm = &self.config.multistep;
        let len = self.timesteps.len();
        let lower_order_final = i == len - 1
            && (dpm.euler_at_final
                || (dpm.lower_order_final && len < 15)
                || !self.config.final_sigma_min);
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let h = lambda(self.sigmas[i + 1]) - lambda(self.sigmas[i]);
        let m0 = &self.history[self.history.len() - 1];
        let second_order = !(dpm.order == 1 || self.calls < 1 || lower_order_final);
        let d1 = if second_order {
            let m1 = &self.history[self.history.len() - 2];
            let h0 = lambda(self.sigmas[i]) - lambda(self.sigmas[i - 1]);
            Some(((m0 - m1)? * (h / h0))?)
        } else {
            None
        };
        if dpm.sde {
            let kept = 1.0 - (-2.0 * h).exp();
            let mut next =
                ((latents * (sigma_t / sigma_s0 * (-h).exp()))? + (m0 * (alpha_t * kept))?)?;
            if let Some(d1) = d1 {
                let weight = if dpm.heun {
                    alpha_t * (kept / (-2.0 * h) + 1.0)
                } else {
                    0.5 * alpha_t * kept
                };
                next = (next + (d1 * weight)?)?;
            }
            return match noise {
                Some(noise) if sigma_t > 0.0 => next + (noise * (sigma_t * kept.sqrt()))?,
                _ => Ok(next),
            };
        }
        let decay = (-h).exp() - 1.0;
        let first = ((latents * (sigma_t / sigma_s0))? - (m0 * (alpha_t * decay))?)?;
        match d1 {
            None => Ok(first),
            Some(d1) if dpm.heun => first + (d1 * (alpha_t * (decay / h + 1.0)))?,
            Some(d1) => first - (d1 * (0.5 * alpha_t * decay))?,
        }
    }

    /// The single-step solver's order at each step (diffusers' `get_order_list`): blocks of
    /// 1, 2(, 3); with `lower_order_final` (which a final σ of zero or a step count that is no
    /// multiple of the order imposes) the blocks at the end shrink, and a final σ of zero ends
    /// on a first-order step.
    fn singlestep_orders(&self) -> Vec<usize> {
        let (steps, order) = (self.steps, self.config.multistep.order.clamp(1, 3));
        let lower = self.config.multistep.lower_order_final
            || !steps.is_multiple_of(order)
            || !self.config.final_sigma_min;
        let blocks = |n: usize| (0..n).flat_map(move |_| 1..=order);
        let mut orders: Vec<usize> = match (lower, order) {
            (false, _) | (true, 1) => blocks(steps / order).collect(),
            (true, 2) if steps.is_multiple_of(2) => blocks(steps / 2 - 1).chain([1, 1]).collect(),
            (true, 2) => blocks(steps / 2).chain([1]).collect(),
            (true, _) => match steps % 3 {
                0 => blocks(steps / 3 - 1).chain([1, 2, 1]).collect(),
                1 => blocks(steps / 3).chain([1]).collect(),
                _ => blocks(steps / 3).chain([1, 2]).collect(),
            },
        };
        if !self.config.final_sigma_min
            && let Some(last) = orders.last_mut()
        {
            *last = 1;
        }
        orders
    }

    /// DPM-Solver++ single-step (diffusers' `DPMSolverSinglestepScheduler`): a step of order k
    /// reaches from the sample at the start of its block, k − 1 steps back, to the next σ, with
    /// the x₀ predictions made since (fewer at the start of an image-to-image run).
    fn dpm_singlestep(&mut self, output: &Tensor, i: usize, latents: &Tensor) -> Result<Tensor> {
        let x0 = self.vp_x0(output, i, latents)?;
        self.remember(x0);
        let wanted = self.singlestep_orders().get(i).copied().unwrap_or(1);
        let order = wanted.min(self.history.len()).max(1);
        if order == 1 {
            self.held = Some(latents.clone());
        }
        let start = self.held.clone().unwrap_or_else(|| latents.clone());
        let s = &self.sigmas;
        let from = s[i + 1 - order];
        let (alpha_t, sigma_t) = alpha_sigma(s[i + 1]);
        let (_, sigma_from) = alpha_sigma(from);
        let h = lambda(s[i + 1]) - lambda(from);
        let decay = (-h).exp() - 1.0;
        let m = |back: usize| &self.history[self.history.len() - 1 - back];
        let heun = self.config.multistep.heun;
        // What every order shares: the first-order step with the block's first x₀.
        let first = |d0: &Tensor| -> Result<Tensor> {
            (&start * (sigma_t / sigma_from))? - (d0 * (alpha_t * decay))?
        };
        match order {
            1 => first(m(0)),
            2 => {
                let r0 = (lambda(s[i]) - lambda(from)) / h;
                let d1 = ((m(0) - m(1))? / r0)?;
                match heun {
                    true => first(m(1))? + (d1 * (alpha_t * (decay / h + 1.0)))?,
                    false => first(m(1))? - (d1 * (0.5 * alpha_t * decay))?,
                }
            }
            _ => {
                let r0 = (lambda(s[i]) - lambda(from)) / h;
                let r1 = (lambda(s[i - 1]) - lambda(from)) / h;
                let d1_0 = ((m(1) - m(2))? / r1)?;
                let d1_1 = ((m(0) - m(2))? / r0)?;
                let base = first(m(2))?;
                if !heun {
                    return base + (d1_1 * (alpha_t * (decay / h + 1.0)))?;
                }
                let d1 = (((&d1_0 * r0)? - (&d1_1 * r1)?)? / (r0 - r1))?;
                let d2 = ((d1_1 - d1_0)? * (2.0 / (r0 - r1)))?;
                (base + (d1 * (alpha_t * (decay / h + 1.0)))?)?
                    - (d2 * (alpha_t * ((decay + h) / (h * h) - 0.5)))?
            }
        }
    }

    /// LCM (diffusers' `LCMScheduler`): the consistency function's x₀ — the UNet's x₀ and the
    /// latents weighed by the boundary conditions `c_out` and `c_skip` at the timestep — then,
    /// before the last step, that x₀ noised afresh to the next timestep.
    fn lcm_step(
        &self,
        output: &Tensor,
        i: usize,
        latents: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let t = self.timesteps[i];
        let a = self.alpha_cumprod(t as i64);
        let (x0, _) = self.x0_and_noise(output, latents, a)?;
        let x0 = match self.config.clip_sample {
            Some(range) => x0.clamp(-range, range)?,
            None => x0,
        };
        const SIGMA_DATA: f64 = 0.5;
        let scaled = t * self.config.lcm.timestep_scaling;
        let c_skip = SIGMA_DATA * SIGMA_DATA / (scaled * scaled + SIGMA_DATA * SIGMA_DATA);
        let c_out = scaled / (scaled * scaled + SIGMA_DATA * SIGMA_DATA).sqrt();
        let denoised = ((x0 * c_out)? + (latents * c_skip)?)?;
        match (self.timesteps.get(i + 1), noise) {
            (Some(&next), Some(noise)) => {
                let a_next = self.alpha_cumprod(next as i64);
                (denoised * a_next.sqrt())? + (noise * (1.0 - a_next).sqrt())?
            }
            _ => Ok(denoised),
        }
    }

    /// TCD (diffusers' `TCDScheduler`, its `step` at `eta` = γ): the x₀ and the noise the UNet
    /// implies, put together at the earlier timestep `s = ⌊(1 − γ)·t_next⌋`; before the last
    /// step, that sample is noised onward to the next timestep with fresh noise.
    fn tcd_step(
        &self,
        output: &Tensor,
        i: usize,
        latents: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let t = self.timesteps[i];
        let next = self.timesteps.get(i + 1).copied().unwrap_or(0.0);
        let s = ((1.0 - TCD_GAMMA) * next).floor();
        let a = self.alpha_cumprod(t as i64);
        let (x0, eps) = self.x0_and_noise(output, latents, a)?;
        let a_s = self.alpha_cumprod(s as i64);
        let at_s = ((x0 * a_s.sqrt())? + (eps * (1.0 - a_s).sqrt())?)?;
        match (i + 1 < self.timesteps.len(), noise) {
            (true, Some(noise)) => {
                let ratio = self.alpha_cumprod(next as i64) / a_s;
                (at_s * ratio.sqrt())? + (noise * (1.0 - ratio).sqrt())?
            }
            _ => Ok(at_s),
        }
    }

    /// The x₀ the UNet's output implies at step `i`, in the variance-preserving α, σ of DPM-Solver
    /// and UniPC.
    fn vp_x0(&self, output: &Tensor, i: usize, latents: &Tensor) -> Result<Tensor> {
        let (alpha, sigma) = alpha_sigma(self.sigmas[i]);
        match self.config.prediction {
            Prediction::Epsilon => (latents - (output * sigma)?)? / alpha,
            Prediction::V => (latents * alpha)? - (output * sigma)?,
        }
    }

    /// DEIS (diffusers' `DEISMultistepScheduler`, log-ρ): the noise predictions of the last
    /// (up to) three steps, each weighted by its Lagrange basis polynomial in log ρ (ρ = σ/α)
    /// integrated from ρ at this step to ρ at the next; first order (DDIM) to start, and with
    /// `lower_order_final` at the end of runs under 15 steps.
    fn deis_step(&mut self, output: &Tensor, i: usize, latents: &Tensor) -> Result<Tensor> {
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let x0 = self.vp_x0(output, i, latents)?;
        let eps = ((latents - (x0 * alpha_s0)?)? / sigma_s0)?;
        self.remember(eps);
        let solver = &self.config.multistep;
        let len = self.timesteps.len();
        let short = solver.lower_order_final && len < 15;
        let order = if solver.order == 1 || self.calls < 1 || (i == len - 1 && short) {
            1
        } else if solver.order == 2 || self.calls < 2 || (i + 2 == len && short) {
            2
        } else {
            3
        };
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let m = &self.history;
        let m0 = &m[m.len() - 1];
        if order == 1 {
            let h = lambda(self.sigmas[i + 1]) - lambda(self.sigmas[i]);
            return (latents * (alpha_t / alpha_s0))? - (m0 * (sigma_t * h.exp_m1()))?;
        }
        let rho = |k: usize| {
            let (alpha, sigma) = alpha_sigma(self.sigmas[k]);
            (sigma / alpha).ln()
        };
        // ∫ Lagrange basis of the first node over [ρ_s0, ρ_t], in log ρ.
        let (t, s0) = (rho(i + 1), rho(i));
        let nodes: Vec<f64> = (0..order).map(|k| rho(i - k)).collect();
        let mut next = (latents / alpha_s0)?;
        for (k, &node) in nodes.iter().enumerate() {
            let others: Vec<f64> = nodes
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != k)
                .map(|(_, &n)| n)
                .collect();
            let coef =
                log_lagrange_integral(t, node, &others) - log_lagrange_integral(s0, node, &others);
            next = (next + (&m[m.len() - 1 - k] * coef)?)?;
        }
        next * alpha_t
    }

    /// Keeps `x0` as the latest of the last `solver_order` x₀ predictions.
    fn remember(&mut self, x0: Tensor) {
        if self.history.len() == self.config.multistep.order {
            self.history.remove(0);
        }
        self.history.push(x0);
    }

    /// UniPC (diffusers' `UniPCMultistepScheduler`, `predict_x0`): the corrector (UniC) first
    /// refines the latents the previous step predicted, using the x₀ this step's UNet call
    /// gives, then the predictor (UniP) steps to the next σ from the last `order` x₀
    /// predictions. The order warms up one step at a time and, with `lower_order_final`, falls
    /// to the steps left at the end.
    fn unipc_step(&mut self, output: &Tensor, i: usize, latents: &Tensor) -> Result<Tensor> {
        let x0 = self.vp_x0(output, i, latents)?;
        let solver = &self.config.multistep;
        let corrected = match self.held.take() {
            Some(last) if i > 0 && !solver.disable_corrector.contains(&(i - 1)) => {
                let order = self.unipc_order(i - 1, self.calls - 1);
                self.unipc_update(&last, i - 1, order, Some(&x0))?
            }
            _ => latents.clone(),
        };
        self.remember(x0);
        let order = self.unipc_order(i, self.calls);
        let next = self.unipc_update(&corrected, i, order, None)?;
        self.held = Some(corrected);
        Ok(next)
    }

    /// The order of UniPC's predictor at step `i` after `calls` steps (diffusers' `this_order`).
    fn unipc_order(&self, i: usize, calls: usize) -> usize {
        let solver = &self.config.multistep;
        let cap = if solver.lower_order_final {
            solver.order.min(self.timesteps.len() - i)
        } else {
            solver.order
        };
        cap.min(calls.min(solver.order) + 1)
    }

    /// UniPC's B(h) update of `x` from σ at step `s` to σ at step `s + 1` with the remembered
    /// x₀ predictions (the latest taken at step `s`): the predictor, or, given the x₀ predicted
    /// at step `s + 1` (`model_t`), the corrector.
    fn unipc_update(
        &self,
        x: &Tensor,
        s: usize,
        order: usize,
        model_t: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[s + 1]);
        let (_, sigma_s0) = alpha_sigma(self.sigmas[s]);
        let h = lambda(self.sigmas[s + 1]) - lambda(self.sigmas[s]);
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = if self.config.multistep.bh1 {
            hh
        } else {
            hh.exp_m1()
        };
        let latest = self.history.len() - 1;
        let m0 = &self.history[latest];
        // Ratios of the earlier steps' λ offsets to h, and the x₀ differences scaled by them.
        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for k in 1..order {
            let rk = (lambda(self.sigmas[s - k]) - lambda(self.sigmas[s])) / h;
            rks.push(rk);
            d1s.push(((&self.history[latest - k] - m0)? / rk)?);
        }
        rks.push(1.0);
        // R's rows are the powers of the ratios; b the φ-function coefficients.
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        for power in 0..order {
            r.push(
                rks.iter()
                    .map(|rk| rk.powi(power as i32))
                    .collect::<Vec<f64>>(),
            );
            b.push(h_phi_k * factorial / b_h);
            factorial *= (power + 2) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        let base = ((x * (sigma_t / sigma_s0))? - (m0 * (alpha_t * h_phi_1))?)?;
        let (rhos, last) = match model_t {
            None => {
                let rhos = match order {
                    1 => Vec::new(),
                    2 => vec![0.5],
                    _ => {
                        let minor = r[..order - 1].iter().map(|row| row[..order - 1].to_vec());
                        solve(minor.collect(), b[..order - 1].to_vec())
                    }
                };
                (rhos, None)
            }
            Some(model_t) => {
                let rhos = if order == 1 { vec![0.5] } else { solve(r, b) };
                let (last, rest) = rhos
                    .split_last()
                    .map_or((0.5, Vec::new()), |(l, rest)| (*l, rest.to_vec()));
                (rest, Some((model_t - m0)? * last))
            }
        };
        let mut residual = last.transpose()?;
        for (rho, d1) in rhos.iter().zip(&d1s) {
            let term = (d1 * *rho)?;
            residual = Some(match residual {
                Some(sum) => (sum + term)?,
                None => term,
            });
        }
        match residual {
            Some(residual) => base - (residual * (alpha_t * b_h))?,
            None => Ok(base),
        }
    }
}

/// The log-SNR λ = ln α − ln σ of a σ (+∞ at σ = 0).
fn lambda(sigma: f64) -> f64 {
    let (alpha, sigma) = alpha_sigma(sigma);
    alpha.ln() - sigma.ln()
}

/// `x` with `a·x = b` for a small square `a`, by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (above, below) = a.split_at_mut(col + 1);
        let pivot_row = &above[col];
        for (offset, row) in below.iter_mut().enumerate() {
            let factor = row[col] / pivot_row[col];
            for (value, pivot) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *value -= factor * pivot;
            }
            b[col + 1 + offset] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let known: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - known) / a[row][row];
    }
    x
}

/// The variance-preserving α_t, σ_t of a σ: `1/√(σ²+1)` and `σ/√(σ²+1)`.
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddim_and_ddpm_clamp_x0_unless_told_not_to_and_ddpm_refuses_learned_variance() {
        let read = |json: serde_json::Value| {
            SchedulerConfig::from_json(json, Path::new("scheduler_config.json"))
                .map_err(|e| e.to_string())
        };
        for (class, clamps) in [
            ("DDIMScheduler", true),
            ("DDPMScheduler", true),
            ("EulerDiscreteScheduler", false),
        ] {
            let config = read(serde_json::json!({ "_class_name": class })).unwrap();
            assert_eq!(config.clip_sample.is_some(), clamps, "{class}");
            let told = read(serde_json::json!({ "_class_name": class, "clip_sample": false }));
            assert_eq!(told.unwrap().clip_sample, None, "{class}");
        }
        let learned = read(serde_json::json!({
            "_class_name": "DDPMScheduler",
            "variance_type": "learned_range"
        }))
        .unwrap_err();
        assert!(
            learned.contains("`variance_type` \"learned_range\""),
            "{learned}"
        );
        let large = read(serde_json::json!({
            "_class_name": "DDPMScheduler",
            "variance_type": "fixed_large"
        }))
        .unwrap();
        assert!(large.ddpm_large_variance);
    }

    #[test]
    fn multistep_solvers_refuse_orders_and_solver_types_they_do_not_read() {
        let read = |class: &str, field: &str, value: serde_json::Value| {
            let json = serde_json::json!({ "_class_name": class, field: value });
            SchedulerConfig::from_json(json, Path::new("scheduler_config.json"))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        for (class, highest, foreign) in [
            ("DPMSolverMultistepScheduler", 2, "bh1"),
            ("DEISMultistepScheduler", 3, "unknown"),
            ("UniPCMultistepScheduler", 3, "unknown"),
        ] {
            assert_eq!(
                read(class, "solver_order", highest.into()),
                Ok(()),
                "{class}"
            );
            let order = read(class, "solver_order", (highest + 1).into()).unwrap_err();
            assert!(order.contains("`solver_order`"), "{class}: {order}");
            let solver = read(class, "solver_type", foreign.into()).unwrap_err();
            assert!(solver.contains("`solver_type`"), "{class}: {solver}");
        }
    }

    fn config(kind: Kind, spacing: Spacing) -> SchedulerConfig {
        let betas: Vec<f64> = linspace(0.00085f64.sqrt(), 0.012f64.sqrt(), 1000)
            .into_iter()
            .map(|b| b * b)
            .collect();
        SchedulerConfig {
            kind,
            prediction: Prediction::Epsilon,
            spacing,
            betas: betas.clone(),
            zero_snr: false,
            alphas_cumprod: alphas_cumprod(&betas, kind, false),
            steps_offset: 1,
            set_alpha_to_one: false,
            clip_sample: None,
            ddpm_large_variance: false,
            ramp: SigmaRamp::Spaced,
            final_sigma_min: false,
            spacing_given: true,
            multistep: Multistep {
                order: 2,
                heun: false,
                sde: false,
                bh1: false,
                disable_corrector: Vec::new(),
                lower_order_final: true,
                euler_at_final: false,
                lambda_min_clipped: f64::NEG_INFINITY,
            },
            lcm: Lcm {
                original_steps: 50,
                timestep_scaling: 10.0,
            },
            dpm_solver_2s: false,
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
        // numpy rounds halves to even: 1000 − k·62.5 → 937.5 → 938, 812.5 → 812.
        assert_eq!(
            config(Kind::Euler, Spacing::Trailing)
                .schedule(16)
                .timesteps[1..4],
            [937.0, 874.0, 811.0]
        );
        // PLMS runs its second timestep twice.
        assert_eq!(
            config(Kind::Pndm, Spacing::Leading).schedule(4).timesteps,
            [751.0, 501.0, 501.0, 251.0, 1.0]
        );
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
    fn small_linear_systems_are_solved_with_pivoting() {
        // The first pivot is zero: without row swaps this divides by it.
        let a = vec![
            vec![0.0, 2.0, 1.0],
            vec![1.0, 1.0, 1.0],
            vec![2.0, 1.0, 3.0],
        ];
        let x = solve(a.clone(), vec![5.0, 6.0, 13.0]);
        for (row, want) in a.iter().zip([5.0, 6.0, 13.0]) {
            let got: f64 = row.iter().zip(&x).map(|(a, x)| a * x).sum();
            assert!((got - want).abs() < 1e-12, "{x:?}");
        }
        assert_eq!(solve(vec![vec![4.0]], vec![2.0]), [0.5]);
    }

    #[test]
    fn a_perfect_noise_prediction_recovers_the_image_in_one_ddim_step() {
        let device = candle_core::Device::Cpu;
        let mut schedule = config(Kind::Ddim, Spacing::Trailing).schedule(1);
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

    #[test]
    fn one_sigma_ramp_is_read_and_only_for_the_samplers_that_have_them() {
        let dir = tempfile::tempdir().unwrap();
        let read = |class: &str, flags: &str| {
            let path = dir.path().join("scheduler_config.json");
            let text = format!(
                r#"{{"_class_name": "{class}", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000{flags}}}"#
            );
            std::fs::write(&path, text).unwrap();
            SchedulerConfig::read(&path).map_err(|e| e.to_string())
        };
        let euler = read("EulerDiscreteScheduler", r#", "use_beta_sigmas": true"#).unwrap();
        assert_eq!(euler.ramp, SigmaRamp::Beta);
        let both = read(
            "DPMSolverMultistepScheduler",
            r#", "use_karras_sigmas": true, "use_exponential_sigmas": true"#,
        )
        .unwrap_err();
        assert!(both.contains("only one σ ramp"), "{both}");
        let ddim = read("DDIMScheduler", r#", "use_exponential_sigmas": true"#).unwrap_err();
        assert!(
            ddim.contains("`use_exponential_sigmas` with DDIMScheduler"),
            "{ddim}"
        );
        // A sampler named in a recipe sets the ramp: plain names space σ by timestep.
        assert_eq!(euler.with_sampler(Sampler::Euler).ramp, SigmaRamp::Spaced);
        assert_eq!(
            euler.with_sampler(Sampler::EulerKarras).ramp,
            SigmaRamp::Karras
        );
        let lu = read("LMSDiscreteScheduler", r#", "use_lu_lambdas": true"#).unwrap_err();
        assert!(lu.contains("DPMSolverMultistepScheduler only"), "{lu}");
    }

    #[test]
    fn zero_terminal_snr_follows_the_sampler_a_recipe_picks() {
        let plain = config(Kind::Ddim, Spacing::Trailing);
        let ddim = SchedulerConfig {
            zero_snr: true,
            alphas_cumprod: alphas_cumprod(&plain.betas, Kind::Ddim, true),
            ..plain.clone()
        };
        // The last timestep is pure noise, the first as trained.
        assert_eq!(ddim.alphas_cumprod[999], 0.0);
        assert!((ddim.alphas_cumprod[0] - plain.alphas_cumprod[0]).abs() < 1e-15);
        assert!(ddim.alphas_cumprod[500] < plain.alphas_cumprod[500]);
        // σ samplers stop at ᾱ = 2⁻²⁴, σ ≈ 4096; Heun does not read the setting.
        let euler = ddim.with_sampler(Sampler::Euler);
        assert_eq!(euler.alphas_cumprod[999], 2f64.powi(-24));
        assert!((euler.train_sigma(999) - 4096.0).abs() < 1e-3);
        assert_eq!(euler.alphas_cumprod[..999], ddim.alphas_cumprod[..999]);
        let heun = ddim.with_sampler(Sampler::Heun);
        assert_eq!(heun.alphas_cumprod, plain.alphas_cumprod);
        assert_eq!(heun.with_sampler(Sampler::Ddim), ddim);
    }
}
