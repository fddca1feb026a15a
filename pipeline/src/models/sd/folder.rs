//! Finding a Stable Diffusion pipeline on disk: a diffusers-layout folder (`model_index.json`
//! beside `unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`), or a Hugging Face
//! cache folder (`models--org--name/`, whose `refs/main` names the snapshot), read offline.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::SdError;
use super::source::PipelineSource;
use super::tokenizer::ClipTokenizer;
use super::weights::Weights;

/// The pipeline classes Autonomy runs.
const PIPELINE_CLASSES: [&str; 8] = [
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipeline",
    "StableDiffusionXLPipeline",
    "StableDiffusionXLImg2ImgPipeline",
    "StableDiffusionXLInpaintPipeline",
    "LatentConsistencyModelPipeline",
    "LatentConsistencyModelImg2ImgPipeline",
];

/// The folder's pipeline description.
pub const MODEL_INDEX: &str = "model_index.json";

/// A resolved diffusers folder.
#[derive(Clone, Debug)]
pub struct DiffusersFolder {
    /// The folder holding `model_index.json`.
    pub root: PathBuf,
    /// `_class_name` of `model_index.json`, e.g. `StableDiffusionPipeline`.
    pub pipeline_class: String,
}

/// Whether `path` is (or is a Hugging Face cache folder of) a diffusers pipeline.
pub fn is_diffusers(path: &Path) -> bool {
    path.join(MODEL_INDEX).is_file() || path.join("snapshots").is_dir()
}

impl DiffusersFolder {
    /// Resolves `path`: a diffusers folder, or a Hugging Face cache folder whose `refs/main`
    /// (or only snapshot) is one.
    pub fn open(path: &Path) -> Result<Self, SdError> {
        let root = if path.join(MODEL_INDEX).is_file() {
            path.to_path_buf()
        } else if path.join("snapshots").is_dir() {
            snapshot(path)?
        } else {
            return Err(SdError::MissingFile {
                path: path.join(MODEL_INDEX),
            });
        };
        let index_path = root.join(MODEL_INDEX);
        let index: serde_json::Value = super::config::read_json(&index_path)?;
        let pipeline_class = index
            .get("_class_name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| SdError::Invalid {
                path: index_path.clone(),
                message: "no `_class_name`".into(),
            })?
            .to_string();
        if !PIPELINE_CLASSES.contains(&pipeline_class.as_str()) {
            return Err(SdError::Unsupported {
                path: index_path,
                message: format!(
                    "`_class_name` {pipeline_class:?}: Autonomy runs Stable Diffusion 1.x/2.x, SDXL (and its refiner) and latent consistency pipelines (text-to-image, image-to-image, inpainting)"
                ),
            });
        }
        let missing = |message: &str| SdError::Invalid {
            path: index_path.clone(),
            message: message.to_string(),
        };
        for component in ["unet", "vae", "scheduler"] {
            if !has_component(&index, component) {
                return Err(missing(&format!("no `{component}` component")));
            }
        }
        // SDXL's refiner has only the second text encoder.
        if !(has_component(&index, "text_encoder") || has_component(&index, "text_encoder_2")) {
            return Err(missing(
                "no `text_encoder` (nor `text_encoder_2`) component",
            ));
        }
        for (encoder, tokenizer) in [
            ("text_encoder", "tokenizer"),
            ("text_encoder_2", "tokenizer_2"),
        ] {
            if has_component(&index, encoder) && !has_component(&index, tokenizer) {
                return Err(missing(&format!(
                    "a `{encoder}` component but no `{tokenizer}`"
                )));
            }
        }
        Ok(Self {
            root,
            pipeline_class,
        })
    }

    /// A file of the pipeline, e.g. `unet/config.json`; an error names it if it is missing.
    pub fn file(&self, relative: &str) -> Result<PathBuf, SdError> {
        let path = self.root.join(relative);
        if path.is_file() {
            Ok(path)
        } else {
            Err(SdError::MissingFile { path })
        }
    }

    /// The safetensors weights of a component (`unet`, `vae`, `text_encoder`): the plain file,
    /// else the `fp16` variant, else the shards a `.safetensors.index.json` names.
    pub fn weight_files(&self, component: &str) -> Result<Vec<PathBuf>, SdError> {
        let stem = match component {
            "text_encoder" | "text_encoder_2" => "model",
            _ => "diffusion_pytorch_model",
        };
        let dir = self.root.join(component);
        for name in [
            format!("{stem}.safetensors"),
            format!("{stem}.fp16.safetensors"),
        ] {
            if dir.join(&name).is_file() {
                return Ok(vec![dir.join(name)]);
            }
        }
        for index in [
            format!("{stem}.safetensors.index.json"),
            format!("{stem}.safetensors.index.fp16.json"),
        ] {
            let path = dir.join(&index);
            if path.is_file() {
                return shards(&path);
            }
        }
        let hint = if dir.join(format!("{stem}.bin")).is_file() {
            " (only `.bin` pickles are there: Autonomy reads safetensors; convert them with diffusers' `save_pretrained(..., safe_serialization=True)`)"
        } else {
            ""
        };
        Err(SdError::Invalid {
            path: dir.join(format!("{stem}.safetensors")),
            message: format!("missing{hint}"),
        })
    }
}

impl PipelineSource for DiffusersFolder {
    fn json(&self, relative: &str) -> Result<serde_json::Value, SdError> {
        super::config::read_json(&self.root.join(relative))
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn tokenizer(&self, component: &str) -> Result<ClipTokenizer, SdError> {
        ClipTokenizer::load(&self.root.join(component))
    }

    fn weights(&self, component: &str) -> Result<Weights, SdError> {
        Weights::files(&self.weight_files(component)?)
    }

    /// sha256 (hex) over the sha256 of every weights file, component by component (`unet`,
    /// `vae`, then the text encoders there are).
    fn weights_sha256(&self) -> Result<String, SdError> {
        let mut all = Sha256::new();
        for component in ["unet", "vae", "text_encoder", "text_encoder_2"] {
            if component.starts_with("text_encoder") && !self.root.join(component).is_dir() {
                continue;
            }
            for path in self.weight_files(component)? {
                let digest = file_sha256(&path)?;
                all.update(format!("{component}:{digest}\n"));
            }
        }
        Ok(hex::encode(all.finalize()))
    }

    fn latent_scaling_factor(&self) -> Result<f64, SdError> {
        let relative = "vae/config.json";
        Ok(super::config::vae(self.json(relative)?, &self.path(relative))?.scaling_factor)
    }
}

/// Whether `model_index.json` names a `component`: diffusers writes an absent one (SDXL
/// refiner's `text_encoder`) as `null` or `[null, null]`.
pub fn has_component(index: &serde_json::Value, component: &str) -> bool {
    match index.get(component) {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Array(parts)) => parts.iter().any(|p| !p.is_null()),
        Some(_) => true,
    }
}

/// The snapshot a Hugging Face cache folder points at.
fn snapshot(cache: &Path) -> Result<PathBuf, SdError> {
    let snapshots = cache.join("snapshots");
    let main = cache.join("refs").join("main");
    if let Ok(revision) = std::fs::read_to_string(&main) {
        let folder = snapshots.join(revision.trim());
        return if folder.join(MODEL_INDEX).is_file() {
            Ok(folder)
        } else {
            Err(SdError::MissingFile {
                path: folder.join(MODEL_INDEX),
            })
        };
    }
    let found: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .map_err(|source| SdError::Io {
            path: snapshots.clone(),
            source,
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join(MODEL_INDEX).is_file())
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(SdError::MissingFile {
            path: snapshots.join("<revision>").join(MODEL_INDEX),
        }),
        _ => Err(SdError::Invalid {
            path: main,
            message: format!(
                "missing, and {} snapshots hold a pipeline: name one (`…/snapshots/<revision>`)",
                found.len()
            ),
        }),
    }
}

/// The distinct shard files a safetensors index names, in order.
fn shards(index: &Path) -> Result<Vec<PathBuf>, SdError> {
    let json: serde_json::Value = super::config::read_json(index)?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| SdError::Invalid {
            path: index.to_path_buf(),
            message: "no `weight_map`".into(),
        })?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    files.sort();
    files.dedup();
    let dir = index.parent().unwrap_or(Path::new("."));
    files
        .into_iter()
        .map(|name| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(SdError::MissingFile { path })
            }
        })
        .collect()
}

pub(super) fn file_sha256(path: &Path) -> Result<String, SdError> {
    crate::models::digest::file_sha256(path).map_err(|source| SdError::Io {
        path: path.to_path_buf(),
        source,
    })
}
