//! SDXL's ensemble of experts: the base model denoises the noisier part of a run and hands its
//! latents, not yet decoded, to the refiner, which denoises the rest and decodes (diffusers'
//! `denoising_end` on the base and `denoising_start` on the refiner). Refining a finished image
//! instead is image-to-image on the refiner alone.

use std::path::Path;

use candle_core::Tensor;
use image::RgbaImage;

use super::{SdError, StableDiffusion, Stage};
use crate::generator::{GenerateError, GenerateRequest, Generator, ModelIdentity, RefinerUse};

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
    /// the refiner's on the latents it left.
    pub fn sample(&self, request: &GenerateRequest, noise: &Tensor) -> Result<Tensor, SdError> {
        if request.hires.is_some() {
            return Err(SdError::BadRequest(
                "hires pass: not with a refiner yet; draw at the native size, or drop the refiner"
                    .into(),
            ));
        }
        let handed = self
            .base
            .denoise_stage(request, noise, Stage::Until(self.switch))?;
        let latents =
            self.refiner
                .denoise_stage(request, noise, Stage::From(&handed, self.switch))?;
        self.refiner.decode(&latents, request.tileable)
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
