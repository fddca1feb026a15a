//! A VAE named in place of a pipeline's own. Many single-file checkpoints are shared without a
//! VAE, and model pages name the one to use (A1111's `vae-ft-mse-840000-ema-pruned.safetensors`,
//! a diffusers VAE folder such as `sdxl-vae-fp16-fix`). Three layouts are read:
//! - a diffusers VAE folder (`config.json` + `diffusion_pytorch_model.safetensors`) —
//!   Stable Diffusion's `AutoencoderKL`, or TAESD's `AutoencoderTiny` (`madebyollin/taesd`,
//!   `taesdxl`: a tenth of the decoding work) — or a diffusers pipeline folder, whose `vae/`
//!   is taken;
//! - a `.safetensors` file (or a `.ckpt` pickle) in the original (LDM) names,
//!   `encoder.down.0.block.0.…`;
//! - a whole single-file checkpoint, whose `first_stage_model.…` VAE is taken.
//!
//! A file does not say how its latents are scaled for the UNet; VAEs made for one family share
//! the factor, so the pipeline's own is kept. A folder's `config.json` says it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::SdError;
use super::config::{self, VaeSpec};
use super::weights::{Store, Weights};

/// A VAE to load in place of a pipeline's, as a recipe or `generate --vae` names it.
#[derive(Clone, Debug, PartialEq)]
pub struct VaeFile {
    /// The file or folder.
    pub path: PathBuf,
    /// How the provenance manifest names it (the recipe's text).
    pub label: String,
}

/// A VAE read from its own file: its config and its diffusers-named weights.
pub struct SeparateVae {
    /// Its blocks and latent scaling.
    pub spec: VaeSpec,
    /// Its weights, by diffusers name.
    pub weights: Weights,
}

/// Where a whole checkpoint keeps its VAE.
const IN_CHECKPOINT: &str = "first_stage_model.";

/// The weights file of a diffusers VAE folder.
const FOLDER_WEIGHTS: [&str; 2] = [
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
];

/// Opens the VAE at `path` (see the module docs); a file's latents are scaled by the
/// pipeline's `scaling_factor`. An error names the file and what it lacks.
pub fn open(path: &Path, scaling_factor: f64) -> Result<SeparateVae, SdError> {
    if path.is_dir() {
        let (dir, weights) = folder_weights(path)?;
        let config_path = dir.join("config.json");
        let json: serde_json::Value = config::read_json(&config_path)?;
        return Ok(SeparateVae {
            spec: config::vae(json, &config_path)?,
            weights: Weights::files(&[weights])?,
        });
    }
    let tensors = Store::open(path)?;
    let shapes = tensors.shapes();
    let has = |prefix: &str| shapes.keys().any(|key| key.starts_with(prefix));
    let prefix = if has(IN_CHECKPOINT) {
        IN_CHECKPOINT
    } else {
        ""
    };
    if !has(&format!("{prefix}encoder.down.")) {
        let why = if has("encoder.down_blocks.") {
            "its tensors have diffusers' names, which come with a `config.json`: name the folder that holds both"
        } else {
            "it has no `encoder.down.…` tensors (a VAE's, in the original names)"
        };
        return Err(SdError::Invalid {
            path: path.to_path_buf(),
            message: format!("not a VAE: {why}"),
        });
    }
    let (json, names) = super::checkpoint::vae_of(&shapes, prefix, scaling_factor, path)?;
    Ok(SeparateVae {
        spec: config::vae(json, path)?,
        weights: Weights::renamed(Arc::new(tensors), path, names),
    })
}

/// Whether `path` is a VAE of its own (the tensors' index alone is read): a diffusers VAE
/// folder (its `config.json` names `AutoencoderKL`, or `AutoencoderTiny`: TAESD), or a weights
/// file whose tensors are a VAE's in the original names and nothing else (a whole checkpoint
/// can lend its VAE, but is not listed as one).
pub fn is_vae(path: &Path) -> bool {
    if path.is_dir() {
        let config: Option<serde_json::Value> = config::read_json(&path.join("config.json")).ok();
        let class = config.as_ref().and_then(|c| c.get("_class_name")?.as_str());
        return matches!(class, Some("AutoencoderKL" | "AutoencoderTiny"))
            && folder_weights(path).is_ok();
    }
    let names = super::weights::stored_names(path);
    names.iter().any(|name| name.starts_with("encoder.down."))
        && !names
            .iter()
            .any(|name| name.starts_with("model.diffusion_model."))
}

/// The sha256 (hex) of the VAE at `path`: of the file, or of a folder's weights file.
pub fn sha256(path: &Path) -> Result<String, SdError> {
    let file = match path.is_dir() {
        true => folder_weights(path)?.1,
        false => path.to_path_buf(),
    };
    super::folder::file_sha256(&file)
}

/// A VAE folder (a pipeline folder's `vae/`, else `path` itself) and its weights file.
fn folder_weights(path: &Path) -> Result<(PathBuf, PathBuf), SdError> {
    let dir = match path.join("vae").join("config.json").is_file() {
        true => path.join("vae"),
        false => path.to_path_buf(),
    };
    FOLDER_WEIGHTS
        .iter()
        .map(|name| dir.join(name))
        .find(|file| file.is_file())
        .map(|file| (dir.clone(), file))
        .ok_or_else(|| SdError::Invalid {
            path: dir.join(FOLDER_WEIGHTS[0]),
            message: "missing: a VAE folder holds `config.json` and `diffusion_pytorch_model.safetensors`".into(),
        })
}
