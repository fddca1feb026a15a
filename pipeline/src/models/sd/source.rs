//! Where a pipeline is loaded from: a diffusers folder ([`super::folder::DiffusersFolder`]), or
//! a single-file checkpoint ([`super::checkpoint::Checkpoint`]) whose configs are implied by its
//! weights. Both give the same configs, tokenizers and diffusers-named weights.

use std::path::{Path, PathBuf};

use super::SdError;
use super::checkpoint::{self, Checkpoint};
use super::folder::DiffusersFolder;
use super::tokenizer::ClipTokenizer;
use super::weights::Weights;

/// The files of a pipeline, as a diffusers folder lays them out.
pub trait PipelineSource {
    /// The JSON document at `relative` (`model_index.json`, `unet/config.json`, …).
    fn json(&self, relative: &str) -> Result<serde_json::Value, SdError>;
    /// How errors name the document or folder at `relative`.
    fn path(&self, relative: &str) -> PathBuf;
    /// The tokenizer of `component` (`tokenizer`, `tokenizer_2`).
    fn tokenizer(&self, component: &str) -> Result<ClipTokenizer, SdError>;
    /// The weights of `component` (`unet`, `vae`, `text_encoder`, `text_encoder_2`).
    fn weights(&self, component: &str) -> Result<Weights, SdError>;
    /// The model version: a sha256 (hex) that any changed weight changes.
    fn weights_sha256(&self) -> Result<String, SdError>;
    /// The factor its VAE's latents are scaled by for the UNet, which a VAE file named in
    /// place of the pipeline's keeps.
    fn latent_scaling_factor(&self) -> Result<f64, SdError>;
}

/// Whether `path` holds a Stable Diffusion pipeline: a diffusers folder, a Hugging Face cache
/// folder of one, or a single-file checkpoint (told by its header alone).
pub fn is_pipeline(path: &Path) -> bool {
    super::folder::is_diffusers(path) || checkpoint::is_checkpoint(path)
}

/// Opens the pipeline at `path`: a single-file checkpoint when it is a file (`.safetensors`, or
/// a `.ckpt` pickle), else a diffusers folder (or a Hugging Face cache folder of one).
pub fn open(path: &Path) -> Result<Box<dyn PipelineSource>, SdError> {
    if path.is_file()
        && (path.extension().is_some_and(|e| e == "safetensors") || super::weights::is_pickle(path))
    {
        Ok(Box::new(Checkpoint::open(path)?))
    } else {
        Ok(Box::new(DiffusersFolder::open(path)?))
    }
}
