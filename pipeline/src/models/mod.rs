//! Image generators: the house model, which ships with Autonomy and runs anywhere, and the
//! Stable Diffusion family, loaded from a diffusers folder or a single-file checkpoint a user
//! has on disk.

pub mod digest;
pub mod house;
pub mod locate;
pub mod noise;
pub mod sd;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::generator::{GenerateError, Generator, generator_version};
use house::HouseModel;
use sd::StableDiffusion;

/// The model families a folder can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// A house model folder (`model.safetensors` beside `config.json`).
    House,
    /// A diffusers folder, a Hugging Face cache folder of one, or a single-file checkpoint.
    StableDiffusion,
}

impl Family {
    /// The family of the model at `dir` (a folder, or a checkpoint file), told by its files.
    pub fn of(dir: &Path) -> Self {
        if sd::source::is_pipeline(dir) {
            Family::StableDiffusion
        } else {
            Family::House
        }
    }

    /// The generator version string its manifests record.
    pub fn generator(self) -> String {
        generator_version(match self {
            Family::House => "house",
            Family::StableDiffusion => "sd",
        })
    }
}

/// What a Stable Diffusion model is loaded with besides its own weights.
#[derive(Clone, Copy, Debug, Default)]
pub struct Additions<'a> {
    /// LoRAs merged into its weights, in order.
    pub loras: &'a [sd::lora::LoraFile],
    /// Textual-inversion embeddings whose words its prompts may use (and its refiner's).
    pub embeddings: &'a [sd::embedding::EmbeddingFile],
    /// A VAE in place of its own (and of its refiner's).
    pub vae: Option<&'a sd::vae_file::VaeFile>,
    /// A refiner that takes over its latents at a switch point.
    pub refiner: Option<&'a RefinerFile>,
    /// The upscaling model its hires pass scales the first image with.
    pub upscaler: Option<&'a sd::upscaler::UpscalerFile>,
    /// A1111 hypernetworks run on its UNet's attention, in order.
    pub hypernetworks: &'a [sd::hypernetwork::HypernetworkFile],
    /// The ControlNets its requests' control images condition it through, in order.
    pub controlnets: &'a [sd::controlnet::ControlNetFile],
}

/// A refiner to load for a base model (SDXL's ensemble of experts).
#[derive(Clone, Debug, PartialEq)]
pub struct RefinerFile {
    /// Its folder or checkpoint.
    pub path: PathBuf,
    /// How the provenance manifest names it (the recipe's text).
    pub label: String,
    /// The fraction of the noise schedule the base model runs before it takes over.
    pub switch: f64,
}

/// Loads the model in `dir`, whichever family it is, onto `device`, with its `additions` (a
/// house model takes none).
pub fn load(
    dir: &Path,
    device: &Device,
    additions: &Additions<'_>,
) -> Result<Box<dyn Generator>, GenerateError> {
    let plain = additions.loras.is_empty()
        && additions.embeddings.is_empty()
        && additions.vae.is_none()
        && additions.refiner.is_none()
        && additions.upscaler.is_none()
        && additions.hypernetworks.is_empty()
        && additions.controlnets.is_empty();
    Ok(match Family::of(dir) {
        Family::House if plain => Box::new(HouseModel::load(dir, device)?),
        Family::House => {
            return Err(GenerateError::Unsupported(format!(
                "`{}` is a house model: LoRAs, hypernetworks, embeddings, VAE files, refiners, upscalers and ControlNets apply to Stable Diffusion models",
                dir.display()
            )));
        }
        Family::StableDiffusion => {
            let mut base = StableDiffusion::load_with(dir, device, additions.loras, additions.vae)?;
            base.add_embeddings(additions.embeddings)?;
            base.add_hypernetworks(additions.hypernetworks)?;
            if let Some(upscaler) = additions.upscaler {
                base.add_upscaler(upscaler)?;
            }
            for controlnet in additions.controlnets {
                base.add_controlnet(controlnet)?;
            }
            match additions.refiner {
                None => Box::new(base),
                Some(refiner) => {
                    let mut model =
                        StableDiffusion::load_with(&refiner.path, device, &[], additions.vae)?;
                    model.add_embeddings(additions.embeddings)?;
                    Box::new(sd::ensemble::Ensemble::new(
                        base,
                        model,
                        &refiner.path,
                        &refiner.label,
                        refiner.switch,
                    )?)
                }
            }
        }
    })
}

/// The model version of the model at `dir` without loading it: sha256 (hex) of a house model's
/// `model.safetensors`, of a diffusers pipeline's weight files, or of a checkpoint file (see
/// [`sd::source::PipelineSource::weights_sha256`]).
pub fn weights_sha256(dir: &Path) -> Result<String, GenerateError> {
    match Family::of(dir) {
        Family::StableDiffusion => Ok(sd::source::open(dir)?.weights_sha256()?),
        Family::House => {
            let path = dir.join(house::files::WEIGHTS);
            Ok(digest::file_sha256(&path).map_err(|source| {
                if source.kind() == std::io::ErrorKind::NotFound {
                    house::HouseError::MissingFile {
                        dir: dir.to_path_buf(),
                        file: house::files::WEIGHTS,
                    }
                } else {
                    house::HouseError::Io { path, source }
                }
            })?)
        }
    }
}

/// Rolls `(batch, c, h, w)` by `dy` rows and `dx` columns with wrap-around.
pub fn roll(x: &Tensor, dy: usize, dx: usize) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let x = match dy % h {
        0 => x.clone(),
        dy => x.roll(dy as i32, 2)?,
    };
    match dx % w {
        0 => Ok(x),
        dx => x.roll(dx as i32, 3),
    }
}
