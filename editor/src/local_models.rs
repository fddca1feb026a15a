//! The Stable Diffusion models (folders and checkpoint files), LoRA, hypernetwork, embedding,
//! VAE, upscaler, ControlNet and annotator files on this machine that the Generate panel offers next to the house model and the
//! registry's models.

use std::path::{Path, PathBuf};

use autonomy_pipeline::models::locate::{
    annotator_files, controlnet_files, embedding_files, hypernetwork_files, lora_files,
    stable_diffusion_models, upscaler_files, vae_files,
};
use autonomy_pipeline::models::sd::checkpoint::Checkpoint;
use autonomy_pipeline::models::sd::config::PipelineSpec;
use autonomy_pipeline::models::sd::controlnet;
use autonomy_pipeline::models::sd::hypernetwork;
use autonomy_pipeline::models::sd::lora::LoraSummary;
use autonomy_pipeline::models::sd::source;
use bevy::prelude::*;

/// Stable Diffusion models (diffusers or Hugging Face cache folders, single-file checkpoints)
/// and LoRA files found in the model folders and directly below them when the editor started.
#[derive(Resource, Debug, Clone, Default, PartialEq)]
pub struct LocalModels {
    /// Absolute paths: folders, then checkpoint files, each sorted.
    pub folders: Vec<PathBuf>,
    /// Every LoRA file found, sorted by path.
    pub loras: Vec<LocalLora>,
    /// Every textual-inversion embedding found, sorted by path.
    pub embeddings: Vec<LocalEmbedding>,
    /// Every A1111 hypernetwork found, sorted by path.
    pub hypernetworks: Vec<LocalHypernetwork>,
    /// VAE files and folders (absolute, sorted), to use in place of a model's own.
    pub vaes: Vec<PathBuf>,
    /// Image upscaling models (absolute, sorted) for a hires pass.
    pub upscalers: Vec<PathBuf>,
    /// ControlNets (folders and files, absolute, sorted) and the models they fit.
    pub controlnets: Vec<LocalControlNet>,
    /// Annotator files (absolute, sorted) with the preprocessors that run them (`lineart`…),
    /// to make a ControlNet's control image of any picture.
    pub annotators: Vec<(PathBuf, &'static [&'static str])>,
    /// The checkpoint files among [`LocalModels::folders`] that hold no VAE: they need one.
    pub without_vae: Vec<PathBuf>,
    /// The SDXL refiners among [`LocalModels::folders`] (one text encoder, five time ids).
    pub refiners: Vec<PathBuf>,
    /// The SDXL base models among [`LocalModels::folders`]: a refiner can take over from them.
    pub xl_bases: Vec<PathBuf>,
}

/// A LoRA file and the pipelines it fits.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalLora {
    /// The `.safetensors` file (absolute).
    pub path: PathBuf,
    /// What it adapts, from its header.
    pub summary: LoraSummary,
    /// The entries of [`LocalModels::folders`] whose shapes it fits.
    pub fits: Vec<PathBuf>,
}

impl LocalLora {
    /// Its file name without `.safetensors`, as the panel lists it.
    pub fn name(&self) -> String {
        self.path.file_stem().map_or_else(
            || self.path.display().to_string(),
            |stem| stem.to_string_lossy().into_owned(),
        )
    }
}

/// An A1111 hypernetwork file and the pipelines it fits.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalHypernetwork {
    /// The `.pt` file (absolute).
    pub path: PathBuf,
    /// The name a prompt's `<hypernet:name:…>` tag gives it (its file stem).
    pub name: String,
    /// The entries of [`LocalModels::folders`] with attentions of its widths.
    pub fits: Vec<PathBuf>,
}

/// A ControlNet and the pipelines it fits.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalControlNet {
    /// The diffusers folder or single file (absolute).
    pub path: PathBuf,
    /// The entries of [`LocalModels::folders`] whose UNet it fits.
    pub fits: Vec<PathBuf>,
}

impl LocalControlNet {
    /// Its folder's or file's name, as the panel lists it.
    pub fn name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        )
    }
}

/// A textual-inversion embedding file and the pipelines it fits.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalEmbedding {
    /// The file (absolute).
    pub path: PathBuf,
    /// The word that calls it up in a prompt (its file stem).
    pub word: String,
    /// How many token vectors it puts in a prompt.
    pub vectors: usize,
    /// The entries of [`LocalModels::folders`] whose text encoders it fits.
    pub fits: Vec<PathBuf>,
}

impl LocalModels {
    /// Looks through `model_dirs` (each folder and the folders directly in it).
    pub fn find(model_dirs: &[PathBuf]) -> Self {
        let absolute: Vec<PathBuf> = model_dirs
            .iter()
            .map(|dir| std::path::absolute(dir).unwrap_or_else(|_| dir.clone()))
            .collect();
        let folders = stable_diffusion_models(&absolute);
        // Each model is opened once, for its spec and, a checkpoint file, whether it has a VAE.
        let mut without_vae = Vec::new();
        let specs: Vec<(&PathBuf, PipelineSpec)> = folders
            .iter()
            .filter_map(|folder| {
                let spec = if folder.is_file() {
                    Checkpoint::open(folder).and_then(|checkpoint| {
                        if !checkpoint.has_vae() {
                            without_vae.push(folder.clone());
                        }
                        PipelineSpec::read(&checkpoint)
                    })
                } else {
                    source::open(folder).and_then(|s| PipelineSpec::read(s.as_ref()))
                };
                match spec {
                    Ok(spec) => Some((folder, spec)),
                    Err(error) => {
                        warn!(%error, "a Stable Diffusion folder the panel cannot fit LoRAs to");
                        None
                    }
                }
            })
            .collect();
        let loras: Vec<LocalLora> = lora_files(&absolute)
            .into_iter()
            .map(|(path, summary)| LocalLora {
                fits: specs
                    .iter()
                    .filter(|(_, spec)| summary.fits(spec))
                    .map(|(folder, _)| (*folder).clone())
                    .collect(),
                path,
                summary,
            })
            .collect();
        let embeddings: Vec<LocalEmbedding> = embedding_files(&absolute)
            .into_iter()
            .map(|(path, embedding)| LocalEmbedding {
                fits: specs
                    .iter()
                    .filter(|(_, spec)| embedding.fits(spec))
                    .map(|(folder, _)| (*folder).clone())
                    .collect(),
                word: embedding.word().to_string(),
                vectors: embedding.vector_count(),
                path,
            })
            .collect();
        let hypernetworks: Vec<LocalHypernetwork> = hypernetwork_files(&absolute)
            .into_iter()
            .filter_map(|path| match hypernetwork::widths(&path) {
                Ok(widths) => Some(LocalHypernetwork {
                    fits: specs
                        .iter()
                        .filter(|(_, spec)| {
                            let taken = spec.unet.attention_context_widths();
                            widths.iter().any(|width| taken.contains(width))
                        })
                        .map(|(folder, _)| (*folder).clone())
                        .collect(),
                    name: path
                        .file_stem()
                        .map_or_else(String::new, |stem| stem.to_string_lossy().into_owned()),
                    path,
                }),
                Err(error) => {
                    warn!(%error, "not a hypernetwork");
                    None
                }
            })
            .collect();
        let time_ids = |spec: &PipelineSpec| spec.unet.added.as_ref().map(|a| a.time_ids);
        let of_kind = |wanted: usize| -> Vec<PathBuf> {
            specs
                .iter()
                .filter(|(_, spec)| time_ids(spec) == Some(wanted))
                .map(|(folder, _)| (*folder).clone())
                .collect()
        };
        let (refiners, xl_bases) = (of_kind(5), of_kind(6));
        let vaes = vae_files(&absolute);
        let upscalers = upscaler_files(&absolute);
        let controlnets: Vec<LocalControlNet> = controlnet_files(&absolute)
            .into_iter()
            .map(|path| LocalControlNet {
                fits: specs
                    .iter()
                    .filter(|(_, spec)| controlnet::fits(&path, &spec.unet))
                    .map(|(folder, _)| (*folder).clone())
                    .collect(),
                path,
            })
            .collect();
        let annotators = annotator_files(&absolute);
        info!(
            folders = folders.len(),
            loras = loras.len(),
            embeddings = embeddings.len(),
            hypernetworks = hypernetworks.len(),
            vaes = vaes.len(),
            upscalers = upscalers.len(),
            controlnets = controlnets.len(),
            annotators = annotators.len(),
            "Stable Diffusion folders, LoRA, embedding, hypernetwork, VAE, upscaler, ControlNet and annotator files found"
        );
        Self {
            folders,
            loras,
            embeddings,
            hypernetworks,
            vaes,
            upscalers,
            controlnets,
            annotators,
            without_vae,
            refiners,
            xl_bases,
        }
    }

    /// Whether `model` is a checkpoint without a VAE (it runs only with a VAE file named).
    pub fn lacks_vae(&self, model: &Path) -> bool {
        self.without_vae.iter().any(|path| path == model)
    }

    /// The embeddings that fit the model `folder`.
    pub fn embeddings_for<'a>(
        &'a self,
        folder: &'a Path,
    ) -> impl Iterator<Item = &'a LocalEmbedding> + 'a {
        self.embeddings
            .iter()
            .filter(move |embedding| embedding.fits.iter().any(|fit| fit == folder))
    }

    /// The hypernetworks that fit the model `folder`.
    pub fn hypernetworks_for<'a>(
        &'a self,
        folder: &'a Path,
    ) -> impl Iterator<Item = &'a LocalHypernetwork> + 'a {
        self.hypernetworks
            .iter()
            .filter(move |hypernetwork| hypernetwork.fits.iter().any(|fit| fit == folder))
    }

    /// The ControlNets that fit the model `folder`.
    pub fn controlnets_for<'a>(
        &'a self,
        folder: &'a Path,
    ) -> impl Iterator<Item = &'a LocalControlNet> + 'a {
        self.controlnets
            .iter()
            .filter(move |controlnet| controlnet.fits.iter().any(|fit| fit == folder))
    }

    /// The LoRA files that fit the model folder `folder`.
    pub fn loras_for<'a>(&'a self, folder: &'a Path) -> impl Iterator<Item = &'a LocalLora> + 'a {
        self.loras
            .iter()
            .filter(move |lora| lora.fits.iter().any(|fit| fit == folder))
    }
}
