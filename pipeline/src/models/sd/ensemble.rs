//! SDXL's ensemble of experts: the base model denoises the noisier part of a run and hands its
//! latents, not yet decoded, to the refiner, which denoises the rest and decodes (diffusers'
//! `denoising_end` on the base and `denoising_start` on the refiner), in a hires pass's second
//! pass too. Refining a finished image instead is image-to-image on the refiner alone.

use std::path::Path;

use candle_core::Tensor;
use image::RgbaImage;

use super::{SdError, StableDiffusion, Stage};
use crate::generator::{
    GenerateError, GenerateRequest, Generator, Hires, ModelIdentity, RefinerUse,
};

/// A base model and the refiner that takes over from it at a switch point.
pub struct Ensemble {
    base: StableDiffusion,
    refiner: StableDiffusion,
    switch: f64,
    identity: ModelIdentity,
}

impl Ensemble {
    /// `base` until `switch` (a fraction of the noise schedule, 0.8 in diffusers' examples),
    /// then `refiner` (loaded from `refiner_path`, as the manifest names it `label`); refused
    /// when the switch is not strictly between 0 and 1 or the refiner cannot take the base's
    /// latents.
    pub fn new(
        base: StableDiffusion,
        refiner: StableDiffusion,
        refiner_path: &Path,
        label: &str,
        switch: f64,
    ) -> Result<Self, SdError> {
        if !(switch > 0.0 && switch < 1.0) {
            return Err(SdError::BadRequest(format!(
                "the refiner's switch point {switch} is not between 0 and 1 (0.8: it takes the last fifth)"
            )));
        }
        let shape = |model: &StableDiffusion| {
            let spec = model.spec();
            (
                spec.vae.latent_channels(),
                spec.unet.sample_size,
                spec.vae.downscale(),
            )
        };
        if shape(&base) != shape(&refiner) {
            return Err(SdError::Invalid {
                path: refiner_path.to_path_buf(),
                message: format!(
                    "its latents (channels, side, downscale) {:?} are not the base model's {:?}: it cannot take over from it",
                    shape(&refiner),
                    shape(&base)
                ),
            });
        }
        let identity = ModelIdentity {
            refiner: Some(RefinerUse {
                file: label.to_string(),
                weights_sha256: refiner.identity().weights_sha256.clone(),
                switch,
            }),
            ..base.identity().clone()
        };
        Ok(Self {
            base,
            refiner,
            switch,
            identity,
        })
    }

    /// The images `(n, 3, H, W)` in [0, 1] from unit-variance `noise`: the base's steps, then
    /// the refiner's on the latents it left; then, when the request asks for one, the hires
    /// pass ([`Ensemble::hires_denoise`]) from noise of its own.
    pub fn sample(&self, request: &GenerateRequest, noise: &Tensor) -> Result<Tensor, SdError> {
        self.base.check_lora_tags(request)?;
        let latents = self.denoise(request, noise, None)?;
        let latents = match &request.hires {
            Some(hires) => {
                let fresh = self.base.hires_noise(request, hires)?;
                self.hires_denoise(request, hires, &latents, &fresh)?
            }
            None => latents,
        };
        self.refiner.decode(&latents, request.tileable)
    }

    /// The hires pass with both models: `latents` scaled up as the base model's hires pass
    /// scales them ([`StableDiffusion::hires_latents`]: its VAE, its upscaler), noised from
    /// unit-variance `fresh` noise at the pass's strength, the base's steps down to the switch
    /// point, then the refiner's (diffusers' image-to-image pipelines with `denoising_end` on
    /// the base and `denoising_start` on the refiner); the final latents.
    pub fn hires_denoise(
        &self,
        request: &GenerateRequest,
        hires: &Hires,
        latents: &Tensor,
        fresh: &Tensor,
    ) -> Result<Tensor, SdError> {
        let up = self.base.hires_latents(request, hires, latents)?;
        let second = super::hires_request(request, hires);
        self.denoise(&second, fresh, Some((&up, hires.strength)))
    }

    /// The base's steps of `request` (image to image from `start` at its strength when
    /// given), then the refiner's on the latents it left; the final latents.
    fn denoise(
        &self,
        request: &GenerateRequest,
        noise: &Tensor,
        start: Option<(&Tensor, f32)>,
    ) -> Result<Tensor, SdError> {
        let handed = self
            .base
            .denoise_from(request, noise, Stage::Until(self.switch), start)?;
        self.refiner
            // The ControlNet conditions the base model's steps alone.
            .denoise_stage(
                &GenerateRequest {
                    control: Vec::new(),
                    ..request.clone()
                },
                noise,
                Stage::From(&handed, self.switch),
            )
    }
}

impl Generator for Ensemble {
    fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    fn native_size(&self) -> u32 {
        self.base.native_size()
    }

    fn generate(&self, request: &GenerateRequest) -> Result<Vec<RgbaImage>, GenerateError> {
        let noise = self.base.starting_noise(request)?;
        let image = self.sample(request, &noise)?;
        Ok(super::rgba_images(&image).map_err(SdError::from)?)
    }
}
