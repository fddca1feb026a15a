//! The one door to the models: a [`Generator`] turns a [`GenerateRequest`] into RGBA images.
//!
//! The pipeline (recipes, cache, provenance) sees models only through this trait, so the house
//! model and larger model families plug into the same builds. A request carries everything that
//! decides the pixels: prompt, negative prompt, seed, steps, guidance, an optional init image
//! with strength and mask (image-to-image, inpainting), the tileable flag and whether the images
//! are frames of a loop.

use image::{GrayImage, RgbImage, RgbaImage};
use std::path::PathBuf;

use crate::models::house::HouseError;
use crate::models::sd::SdError;
use crate::models::sd::scheduler::Sampler;

/// Bumped whenever a generator's sampling code changes the pixels it makes for a request, so
/// that cached assets made by the old code are made again.
pub const GENERATOR_REVISION: u32 = 8;

/// An image to start from instead of pure noise.
#[derive(Clone, Debug, PartialEq)]
pub struct InitImage {
    /// The image; resized to the model's native size if it differs.
    pub image: RgbaImage,
    /// How much to change it, in (0, 1]: 1 ignores it, 0.3 keeps its layout and colours.
    pub strength: f32,
    /// Where to change it: white is regenerated, black is kept (inpainting); `None` changes all.
    pub mask: Option<GrayImage>,
}

/// A ControlNet's conditioning of a run (see [`crate::models::sd::controlnet`]): the model
/// must have been loaded with the ControlNet. A request's controls pair with the model's
/// ControlNets in the order they were loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct Control {
    /// The control image (an edge map, a depth map, a pose…), resized to each pass's size.
    pub image: RgbImage,
    /// How strongly its residuals are added (diffusers' `controlnet_conditioning_scale`,
    /// A1111's "Control Weight"), 0–2.
    pub scale: f64,
    /// The fraction of the steps where it starts conditioning, 0–1.
    pub start: f64,
    /// The fraction of the steps after which it stops, `start`–1.
    pub end: f64,
    /// Guess mode: it conditions the prompt's prediction alone, its residuals rising from a
    /// tenth of `scale` at the first skip connection to `scale` at the middle block.
    pub guess_mode: bool,
}

/// Stable Diffusion's second pass at a larger size (A1111's "hires. fix"): the model draws at
/// its native size, the first image is scaled up to `size` as `upscaler` says, and the model
/// redraws it there as image-to-image at `strength`. Drawing at twice the native size directly
/// repeats the subject; this keeps the first pass's layout and adds the detail of the larger
/// size.
#[derive(Clone, Debug, PartialEq)]
pub struct Hires {
    /// The side of the final image in pixels: above the model's native size, at most 4× it,
    /// and a multiple of 64.
    pub size: u32,
    /// How much the second pass redraws, in (0, 1]; 0.5–0.7 keeps the layout and sharpens it.
    pub strength: f32,
    /// The second pass's sampler steps (of which `strength` runs).
    pub steps: usize,
    /// How the first image is scaled up.
    pub upscaler: HiresUpscaler,
}

/// How a hires pass scales the first image up, as A1111's "Upscaler" menu offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HiresUpscaler {
    /// Its latents, bilinearly (A1111's default "Latent"): soft, so it wants a strength of
    /// 0.5 or more.
    #[default]
    Latent,
    /// Its pixels, decoded and resized with Lanczos, then encoded again.
    Lanczos,
    /// Its pixels through the upscaling model the generator was loaded with (ESRGAN,
    /// Real-ESRGAN: see [`crate::models::sd::upscaler`]), then Lanczos to the size, then
    /// encoded again: sharp enough for strengths of 0.3–0.5.
    Model,
}

/// One generation request.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateRequest {
    /// What to draw.
    pub prompt: String,
    /// What to steer away from (the unconditional branch of guidance); empty for none.
    pub negative_prompt: String,
    /// Image `i` starts from the noise of seed `seed + i` (or, for a loop, from a point on a
    /// circle through the noises of `seed`).
    pub seed: u64,
    /// Sampler steps.
    pub steps: usize,
    /// Classifier-free guidance scale; 1 turns guidance off.
    pub guidance: f64,
    /// Images to make in one batch (the frames, for a loop).
    pub count: usize,
    /// Make the images tile seamlessly: the wrap-around edges are generated as neighbours.
    pub tileable: bool,
    /// The `count` images are frames of a seamless loop: their noise walks a closed circle, so
    /// the last frame flows into the first without a jump.
    pub looped: bool,
    /// Image-to-image / inpainting start.
    pub init: Option<InitImage>,
    /// Stable Diffusion: sample with this instead of the folder's scheduler.
    pub sampler: Option<Sampler>,
    /// Stable Diffusion: guidance rescale φ, 0–1 (0 is off). The guided prediction is scaled to
    /// the prompt's own prediction's standard deviation and mixed back in by φ (Lin et al.
    /// 2023), which keeps strong guidance from over-exposing zero-terminal-SNR models.
    pub guidance_rescale: f64,
    /// Stable Diffusion: which text-encoder layer conditions the image, counted from the last
    /// (A1111's "Clip skip"): 1 the last, as trained; 2 the one before, as many anime models
    /// were trained on.
    pub clip_skip: usize,
    /// Stable Diffusion: a second pass at a larger size.
    pub hires: Option<Hires>,
    /// Stable Diffusion: the conditioning of each ControlNet the model was loaded with, in
    /// their order (none, or one each; their residuals add up, as diffusers'
    /// `MultiControlNetModel`'s).
    pub control: Vec<Control>,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            seed: 0,
            steps: 20,
            guidance: 4.0,
            count: 1,
            tileable: false,
            looped: false,
            init: None,
            sampler: None,
            guidance_rescale: 0.0,
            clip_skip: 1,
            hires: None,
            control: Vec::new(),
        }
    }
}

/// Who made an image: what the provenance manifest records about the model.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelIdentity {
    /// Model family and name, e.g. `house`.
    pub name: String,
    /// The model version: sha256 (hex) of its weights.
    pub weights_sha256: String,
    /// sha256 (hex) of the dataset manifest it was trained on, when the folder has one.
    pub dataset_sha256: Option<String>,
    /// The folder it was loaded from.
    pub path: PathBuf,
    /// Generator code revision (see [`GENERATOR_REVISION`]) and crate version.
    pub generator: String,
    /// LoRAs merged into the weights, in order (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loras: Vec<LoraUse>,
    /// Textual-inversion embeddings whose words its prompts could use, in order (absent when
    /// none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub embeddings: Vec<EmbeddingUse>,
    /// A1111 hypernetworks run on the UNet's attention, in order (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hypernetworks: Vec<HypernetworkUse>,
    /// The VAE used in place of the model's own (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<VaeUse>,
    /// The refiner that took over the model's latents (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refiner: Option<RefinerUse>,
    /// The upscaling model a hires pass scaled the first image with (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upscaler: Option<UpscalerUse>,
    /// The ControlNets that conditioned its images, in order (absent when none; manifests
    /// written before several were possible name one as `controlnet`).
    #[serde(
        default,
        alias = "controlnet",
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub controlnets: Vec<ControlNetUse>,
}

/// A list, or one item written on its own.
fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
    }
    Ok(
        match <OneOrMany<T> as serde::Deserialize>::deserialize(deserializer)? {
            OneOrMany::Many(items) => items,
            OneOrMany::One(item) => vec![item],
        },
    )
}

/// A ControlNet loaded with a model, as the provenance manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlNetUse {
    /// The ControlNet folder or file as the recipe names it.
    pub file: String,
    /// sha256 (hex) of the file, or over a folder's `config.json`'s and weights' sha256.
    pub sha256: String,
}

/// An image upscaling model loaded with a model for its hires pass, as the provenance manifest
/// records it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpscalerUse {
    /// The file as the recipe names it.
    pub file: String,
    /// sha256 (hex) of the file.
    pub sha256: String,
}

/// A refiner that finished a model's images from its latents (SDXL's ensemble of experts), as
/// the provenance manifest records it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefinerUse {
    /// The refiner's folder or checkpoint as the recipe names it.
    pub file: String,
    /// Its model version: sha256 (hex) of its weights.
    pub weights_sha256: String,
    /// Where it took over: the fraction of the noise schedule the base model ran.
    pub switch: f64,
}

/// A textual-inversion embedding loaded with a model, as the provenance manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingUse {
    /// The file as the recipe names it (its stem is the word it adds).
    pub file: String,
    /// sha256 (hex) of the file.
    pub sha256: String,
}

/// An A1111 hypernetwork run with a model, as the provenance manifest records it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HypernetworkUse {
    /// The file as the recipe names it.
    pub file: String,
    /// sha256 (hex) of the file.
    pub sha256: String,
    /// How strongly it applies (A1111's multiplier).
    pub multiplier: f64,
}

/// A VAE used in place of a model's own, as the provenance manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeUse {
    /// The file or folder as the recipe names it.
    pub file: String,
    /// sha256 (hex) of the file (of a folder's weights file).
    pub sha256: String,
}

/// A LoRA merged into a model, as the provenance manifest records it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraUse {
    /// The file as the recipe names it.
    pub file: String,
    /// sha256 (hex) of the file.
    pub sha256: String,
    /// The scale it was merged with.
    pub scale: f64,
    /// The scale of its text-encoder updates, when it differs from `scale` (absent
    /// otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_scale: Option<f64>,
    /// The ranks its low-rank updates were cut to (A1111's `dyn`), when they were (absent
    /// otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    /// Its ratio in each block, times its scales (the sd-webui-lora-block-weight extension's
    /// `lbw=`): 26 values, the text encoders' and then the original UNet's `IN00`–`IN11`,
    /// `M00` and `OUT00`–`OUT11`, when they were given (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Vec<f64>>,
}

/// A generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The house model refused or failed.
    #[error(transparent)]
    House(#[from] HouseError),
    /// A Stable Diffusion pipeline refused or failed.
    #[error(transparent)]
    StableDiffusion(#[from] SdError),
    /// The request asks for something this generator cannot do.
    #[error("{0}")]
    Unsupported(String),
}

/// A text-to-image model the pipeline can drive.
pub trait Generator: Send + Sync {
    /// What the provenance manifest records about the model.
    fn identity(&self) -> &ModelIdentity;

    /// The side of the square images it makes natively; the pipeline scales to the asset size.
    fn native_size(&self) -> u32;

    /// Makes `request.count` images of [`Generator::native_size`]; the same request on the
    /// same machine gives the same pixels.
    fn generate(&self, request: &GenerateRequest) -> Result<Vec<RgbaImage>, GenerateError>;

    /// Words of `prompt` the model cannot read (and ignores); none for a byte-level
    /// tokenizer.
    fn unknown_words(&self, _prompt: &str) -> Vec<String> {
        Vec::new()
    }
}

/// The generator version string recorded in manifests and cache keys.
pub fn generator_version(family: &str) -> String {
    format!(
        "autonomy-{family}/{}+r{GENERATOR_REVISION}",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_reads_one_controlnet_as_earlier_manifests_wrote_it_and_writes_a_list() {
        let net = |file: &str| ControlNetUse {
            file: file.into(),
            sha256: "ab".repeat(32),
        };
        let mut identity = serde_json::json!({
            "name": "stable-diffusion", "weights_sha256": "00", "dataset_sha256": null,
            "path": "sd", "generator": "g",
            "controlnet": { "file": "canny", "sha256": "ab".repeat(32) },
        });
        let read: ModelIdentity = serde_json::from_value(identity.clone()).unwrap();
        assert_eq!(read.controlnets, [net("canny")]);
        identity.as_object_mut().unwrap().remove("controlnet");
        let plain: ModelIdentity = serde_json::from_value(identity.clone()).unwrap();
        assert!(plain.controlnets.is_empty());
        let both = ModelIdentity {
            controlnets: vec![net("canny"), net("depth")],
            ..plain.clone()
        };
        let written = serde_json::to_value(&both).unwrap();
        assert_eq!(written["controlnets"][1]["file"], "depth");
        assert_eq!(
            serde_json::from_value::<ModelIdentity>(written).unwrap(),
            both
        );
        assert!(
            serde_json::to_value(&plain)
                .unwrap()
                .get("controlnets")
                .is_none()
        );
    }
}
