//! The Stable Diffusion family (SD 1.x, 2.x, SD-Turbo, SDXL and its refiner, SDXL-Turbo,
//! LCM-distilled models) on candle, loaded from a diffusers folder on disk — or a Hugging Face
//! cache folder, offline, or a single-file checkpoint (see [`checkpoint`]) — with its
//! architecture read from the folder's configs (a checkpoint's tensors): text-to-image with
//! classifier-free guidance and negative prompts, image-to-image with a strength, inpainting (a
//! mask over any UNet, or a 9-channel inpainting UNet), tileable images, the model's
//! scheduler, A1111's prompt syntax (weights, `BREAK`, long prompts, edits and alternation,
//! `AND`) and its hires pass. f32 on the CPU, f16 on a GPU; the same seed gives the same
//! pixels on the same device.
//!
//! ```no_run
//! use autonomy_pipeline::generator::{GenerateRequest, Generator};
//! use autonomy_pipeline::models::sd::StableDiffusion;
//!
//! let model = StableDiffusion::load(
//!     "models/stable-diffusion-v1-5".as_ref(),
//!     &candle_core::Device::Cpu,
//! )?;
//! let request = GenerateRequest {
//!     prompt: "mossy stone bricks, game texture".into(),
//!     steps: 25,
//!     guidance: 7.5,
//!     ..GenerateRequest::default()
//! };
//! let images = model.generate(&request)?;
//! images[0].save("bricks.png")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod adapter;
pub mod annotator;
mod bicubic;
pub mod block_weights;
pub mod blocks;
pub mod brownian;
pub mod checkpoint;
pub mod config;
pub mod controlnet;
#[cfg(feature = "cudnn")]
pub mod cudnn;
mod delta;
#[cfg(feature = "cuda")]
mod elementwise;
pub mod embedding;
pub mod ensemble;
#[cfg(feature = "cuda")]
pub mod flash_attention;
pub mod folder;
pub mod group_norm;
pub mod hires;
pub mod hypernetwork;
pub mod kernels;
pub mod lanczos;
pub mod lora;
pub mod lora_tags;
#[cfg(feature = "cuda")]
mod nvrtc;
pub mod original_names;
mod pickle;
pub mod prompt_schedule;
pub mod prompt_syntax;
pub mod scheduler;
pub mod sigma_ramp;
pub mod source;
pub mod text_encoder;
pub mod tiny_vae;
pub mod tokenizer;
mod transform;
pub mod unet;
pub mod upscaler;
pub mod vae;
pub mod vae_file;
pub mod weights;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::imageops::{self, FilterType};
use image::{GrayImage, RgbImage, RgbaImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::generator::{
    Control, ControlNetUse, GenerateError, GenerateRequest, Generator, Hires, HiresUpscaler,
    InitImage, ModelIdentity, UpscalerUse, VaeUse,
};
use config::PipelineSpec;
use embedding::{Embedding, EmbeddingFile, Encoder};
use hypernetwork::{Hypernetwork, HypernetworkFile};
use lora::{LoraFile, Network, Updates};
use prompt_schedule::{Composed, Scheduled};
use prompt_syntax::Chunk;
use scheduler::Schedule;
use source::PipelineSource;
use text_encoder::ClipTextEncoder;
use tokenizer::ClipTokenizer;
use unet::UNet;
use vae::Vae;
use vae_file::VaeFile;
use weights::Weights;

/// Which part of a sampling run [`StableDiffusion::denoise_stage`] takes: SDXL's ensemble of
/// experts runs the base model up to a switch point and its refiner from there, on the same
/// latents. A switch point is a fraction of the training schedule (0.8: the refiner takes the
/// last fifth of the noise levels), diffusers' `denoising_end` and `denoising_start`.
#[derive(Clone, Copy, Debug)]
pub enum Stage<'a> {
    /// The whole run.
    Whole,
    /// The steps before the switch point.
    Until(f64),
    /// The steps after the switch point, from these latents (as the stage before left them).
    From(&'a Tensor, f64),
}

/// What can go wrong loading or running a Stable Diffusion pipeline.
#[derive(Debug, thiserror::Error)]
pub enum SdError {
    /// A file the pipeline needs is not there.
    #[error("`{path}` is missing")]
    MissingFile {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is there but its content is wrong.
    #[error("`{path}` is invalid: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file asks for something Autonomy cannot run yet.
    #[error("`{path}`: {message}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What it asks for.
        message: String,
    },
    /// A weights file does not fit the architecture its config describes.
    #[error("weights `{path}` do not match the config: {source}")]
    Weights {
        /// The (first) weights file.
        path: PathBuf,
        /// What candle found.
        source: candle_core::Error,
    },
    /// The request cannot be served (named in the message).
    #[error("bad generation request: {0}")]
    BadRequest(String),
    /// A tensor operation failed.
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

impl SdError {
    /// An I/O failure on `path`: [`SdError::MissingFile`] when the file is not there, else
    /// [`SdError::Io`].
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            SdError::MissingFile {
                path: path.to_path_buf(),
            }
        } else {
            SdError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// The whole file at `path`, read once, so that its hash and what is made of it come from the
/// same bytes.
pub(crate) fn read_once(path: &Path) -> Result<std::sync::Arc<[u8]>, SdError> {
    Ok(std::fs::read(path)
        .map_err(|source| SdError::io(path, source))?
        .into())
}

/// A prompt as the UNet is conditioned on it.
#[derive(Clone, Debug)]
pub struct Prompt {
    /// Token states `(1, 77, cross_attention_dim)`.
    pub context: Tensor,
    /// SDXL: the pooled prompt `(1, projection_dim)`.
    pub pooled: Option<Tensor>,
}

/// A tokenizer and the text encoder it feeds.
type TextStack = (ClipTokenizer, ClipTextEncoder);

/// The aesthetic scores SDXL's refiner conditions on: diffusers' defaults for the prompt's
/// rows and the negative prompt's.
const AESTHETIC_SCORE: (f32, f32) = (6.0, 2.5);

/// A loaded Stable Diffusion pipeline.
pub struct StableDiffusion {
    spec: PipelineSpec,
    /// The (first) tokenizer and text encoder; SDXL's refiner has none.
    first: Option<TextStack>,
    /// SDXL's second tokenizer and text encoder.
    second: Option<TextStack>,
    unet: UNet,
    vae: Vae,
    device: Device,
    dtype: DType,
    /// The VAE's dtype (see [`vae_dtype`]).
    vae_dtype: DType,
    /// The upscaling model of a hires pass that asks for one.
    upscaler: Option<upscaler::Upscaler>,
    /// The ControlNets of requests that ask for them, in the order they were loaded.
    controls: Vec<controlnet::ControlModel>,
    /// The names a prompt's LoRA tags may give the merged LoRAs, with their scales
    /// ([`lora_tags::tag_names`]).
    lora_names: Vec<lora_tags::TagName>,
    /// The hypernetworks its UNet runs, as a prompt's tags name them: each file's name without
    /// its extension, and its multiplier.
    hypernet_names: Vec<(String, f64)>,
    /// The hypernetworks its UNet runs, in order.
    hypernetworks: Vec<Hypernetwork>,
    identity: ModelIdentity,
}

impl StableDiffusion {
    /// Loads the pipeline at `path` (a diffusers folder, a Hugging Face cache folder or a
    /// single-file checkpoint) onto `device`: f32 on the CPU, f16 on a GPU, where SDXL's VAE
    /// stays f32 as diffusers' SDXL pipelines upcast it.
    pub fn load(path: &Path, device: &Device) -> Result<Self, SdError> {
        Self::load_with(path, device, &[], None)
    }

    /// [`StableDiffusion::load`] with `loras` merged into the UNet and text encoder weights,
    /// in order, and the VAE of `vae` in place of the pipeline's; the identity lists them with
    /// their hashes.
    pub fn load_with(
        path: &Path,
        device: &Device,
        loras: &[LoraFile],
        vae: Option<&VaeFile>,
    ) -> Result<Self, SdError> {
        let source = source::open(path)?;
        let separate = match vae {
            Some(file) => Some((
                vae_file::open(&file.path, source.latent_scaling_factor()?)?,
                VaeUse {
                    file: file.label.clone(),
                    sha256: vae_file::sha256(&file.path)?,
                },
            )),
            None => None,
        };
        let spec = PipelineSpec::read_with_vae(
            source.as_ref(),
            separate.as_ref().map(|(vae, _)| vae.spec.clone()),
        )?;
        // First, so that a checkpoint without a VAE (and none named) is refused before the
        // rest is built.
        let (vae_weights, vae_use) = match separate {
            Some((vae, used)) => (vae.weights, Some(used)),
            None => (source.weights("vae")?, None),
        };
        let dtype = if device.is_cpu() {
            DType::F32
        } else {
            DType::F16
        };
        let unet_weights = source.weights("unet")?;
        let weights = |component: &str, config: &Option<text_encoder::ClipConfig>| {
            config
                .as_ref()
                .map(|_| source.weights(component))
                .transpose()
        };
        let (text_1, text_2) = (
            weights("text_encoder", &spec.text)?,
            weights("text_encoder_2", &spec.text_2)?,
        );
        let (updates, lora_uses) = Updates::read(
            loras,
            &unet_weights,
            text_1.as_ref(),
            text_2.as_ref(),
            spec.unet.config.layers_per_block,
        )?;
        let backend = |weights, network| -> VarBuilder<'static> {
            VarBuilder::from_backend(
                Box::new(updates.merged(weights, network)),
                dtype,
                device.clone(),
            )
        };
        let stack = |config: &Option<text_encoder::ClipConfig>,
                     weights: Option<Weights>,
                     tokenizer: &str,
                     network: Network|
         -> Result<Option<TextStack>, SdError> {
            match (config, weights) {
                (Some(config), Some(weights)) => {
                    let tokenizer = checked_tokenizer(source.as_ref(), tokenizer, config)?;
                    let file = weights.path().to_path_buf();
                    let encoder = build(&file, || {
                        ClipTextEncoder::new(config, backend(weights, network))
                    })?;
                    Ok(Some((tokenizer, encoder)))
                }
                _ => Ok(None),
            }
        };
        let first = stack(&spec.text, text_1, "tokenizer", Network::Text)?;
        let second = stack(&spec.text_2, text_2, "tokenizer_2", Network::Text2)?;
        let unet_file = unet_weights.path().to_path_buf();
        let unet = build(&unet_file, || {
            UNet::new(backend(unet_weights, Network::Unet), &spec.unet)
        })?;
        let vae_file = vae_weights.path().to_path_buf();
        let vae_dtype = vae_dtype(&spec, device);
        let vae = build(&vae_file, || {
            let vb = VarBuilder::from_backend(Box::new(vae_weights), vae_dtype, device.clone());
            Vae::new(vb, &spec.vae)
        })?;
        let identity = ModelIdentity {
            name: format!("stable-diffusion/{}", display_name(path)),
            weights_sha256: source.weights_sha256()?,
            dataset_sha256: None,
            path: path.to_path_buf(),
            generator: super::Family::StableDiffusion.generator(),
            loras: lora_uses,
            embeddings: Vec::new(),
            hypernetworks: Vec::new(),
            vae: vae_use,
            refiner: None,
            upscaler: None,
            controlnets: Vec::new(),
        };
        tracing::debug!(path = %path.display(), version = %identity.weights_sha256, "loaded Stable Diffusion");
        Ok(Self {
            spec,
            first,
            second,
            unet,
            vae,
            device: device.clone(),
            dtype,
            vae_dtype,
            upscaler: None,
            controls: Vec::new(),
            lora_names: lora_tags::tag_names(loras),
            hypernet_names: Vec::new(),
            hypernetworks: Vec::new(),
            identity,
        })
    }

    /// Loads the upscaling model of `file` for hires passes that ask for one
    /// ([`HiresUpscaler::Model`]); the identity lists it with its hash.
    pub fn add_upscaler(&mut self, file: &upscaler::UpscalerFile) -> Result<(), SdError> {
        let sha256 =
            super::digest::file_sha256(&file.path).map_err(|e| SdError::io(&file.path, e))?;
        let model = upscaler::Upscaler::open(&file.path, &self.device)?;
        tracing::debug!(file = %file.label, model = %model.description(), "loaded an upscaler");
        self.upscaler = Some(model);
        self.identity.upscaler = Some(UpscalerUse {
            file: file.label.clone(),
            sha256,
        });
        Ok(())
    }

    /// Loads the ControlNet (or T2I-Adapter) of `file`, after those loaded before, for
    /// requests that ask for it ([`Control`]); the identity lists it with its hash. One whose
    /// architecture does not fit the UNet's (an SDXL ControlNet for SD 1.5) is refused.
    pub fn add_controlnet(&mut self, file: &controlnet::ControlNetFile) -> Result<(), SdError> {
        let sha256 = controlnet::sha256(&file.path)?;
        let (model, mismatch) = if adapter::is_adapter(&file.path) {
            let model =
                adapter::Adapter::load(&file.path, &self.spec.unet, &self.device, self.dtype)?;
            let mismatch = model.spec().mismatch(&self.spec.unet);
            (controlnet::ControlModel::Adapter(model), mismatch)
        } else {
            let model = controlnet::ControlNet::load(
                &file.path,
                &self.spec.unet,
                &self.device,
                self.dtype,
            )?;
            let mismatch = controlnet::mismatch(&model.spec().unet, &self.spec.unet);
            (
                controlnet::ControlModel::ControlNet(Box::new(model)),
                mismatch,
            )
        };
        if let Some(message) = mismatch {
            return Err(SdError::Invalid {
                path: file.path.clone(),
                message,
            });
        }
        tracing::debug!(file = %file.label, "loaded a ControlNet or T2I-Adapter");
        self.controls.push(model);
        self.identity.controlnets.push(ControlNetUse {
            file: file.label.clone(),
            sha256,
        });
        Ok(())
    }

    /// The ControlNets and T2I-Adapters loaded with [`StableDiffusion::add_controlnet`], in
    /// order.
    pub fn controls(&self) -> &[controlnet::ControlModel] {
        &self.controls
    }

    /// Runs A1111's hypernetworks of `files` on the UNet's attention, in order (see the
    /// [`hypernetwork`] module); the identity lists them with their hashes. Every file is read
    /// and checked before any is applied, so an error leaves the pipeline as it was: a file
    /// that is not a hypernetwork, or whose widths meet none of this UNet's attentions.
    pub fn add_hypernetworks(&mut self, files: &[HypernetworkFile]) -> Result<(), SdError> {
        let widths = self.spec.unet.attention_context_widths();
        let mut read = Vec::with_capacity(files.len());
        for file in files {
            let network = Hypernetwork::read(file, &self.device)?;
            if !network.widths().iter().any(|w| widths.contains(w)) {
                return Err(SdError::Invalid {
                    path: file.path.clone(),
                    message: format!(
                        "its layers are for widths {:?}, and this UNet's attentions take {widths:?}: it would change nothing (a hypernetwork for another model?)",
                        network.widths()
                    ),
                });
            }
            read.push(network);
        }
        let mut all: Vec<Hypernetwork> = std::mem::take(&mut self.hypernetworks);
        all.extend(read);
        self.unet.hook_context(&all);
        for (file, network) in files.iter().zip(&all[all.len() - files.len()..]) {
            let name = file
                .path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.hypernet_names.push((name, file.multiplier));
            self.identity.hypernetworks.push(network.used.clone());
            tracing::debug!(file = %file.label, widths = ?network.widths(), "runs a hypernetwork");
        }
        self.hypernetworks = all;
        Ok(())
    }

    /// Loads textual-inversion embeddings (see the [`embedding`] module): each file's word,
    /// its stem, then stands for its vectors in prompts and negative prompts, for every text
    /// encoder the model has; the identity lists them with their hashes. Every file is read and
    /// checked before any is added, so an error leaves the pipeline as it was.
    pub fn add_embeddings(&mut self, files: &[EmbeddingFile]) -> Result<(), SdError> {
        let sdxl = self.spec.text_2.is_some();
        let mut read: Vec<Embedding> = Vec::with_capacity(files.len());
        for file in files {
            let embedding = Embedding::read(file)?;
            let word = embedding.word().to_lowercase();
            if let Some(other) = read.iter().find(|e| e.word().to_lowercase() == word) {
                return Err(SdError::BadRequest(format!(
                    "the embeddings `{}` and `{}` both add the word `{}`",
                    other.used.file,
                    embedding.used.file,
                    embedding.word()
                )));
            }
            for (encoder, stack) in [
                (Encoder::First, &self.first),
                (Encoder::Second, &self.second),
            ] {
                if let Some((_, text)) = stack {
                    embedding.vectors(encoder, sdxl, text.hidden_size())?;
                }
            }
            read.push(embedding);
        }
        for embedding in read {
            for (encoder, stack) in [
                (Encoder::First, &mut self.first),
                (Encoder::Second, &mut self.second),
            ] {
                if let Some((tokenizer, text)) = stack {
                    let ids =
                        text.add_tokens(embedding.vectors(encoder, sdxl, text.hidden_size())?)?;
                    tokenizer.add_word(embedding.word(), ids);
                }
            }
            tracing::debug!(file = %embedding.used.file, word = embedding.word(), "added an embedding");
            self.identity.embeddings.push(embedding.used);
        }
        Ok(())
    }

    /// The architecture read from the folder.
    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    /// The prompt's token ids, as the (first) text encoder sees them.
    pub fn token_ids(&self, prompt: &str) -> Vec<u32> {
        self.token_ids_of(0, prompt)
    }

    /// The prompt's token ids as text encoder `encoder` (0: the first there is, 1: SDXL's
    /// second) sees them; empty when there is no such encoder.
    pub fn token_ids_of(&self, encoder: usize, prompt: &str) -> Vec<u32> {
        self.stacks()
            .nth(encoder)
            .map(|(tokenizer, _)| tokenizer.encode(prompt))
            .unwrap_or_default()
    }

    /// The tokenizers and text encoders, first then second.
    fn stacks(&self) -> impl Iterator<Item = &TextStack> {
        self.first.iter().chain(&self.second)
    }

    /// The prompt as the UNet sees it: SD 1.x/2.x the text encoder's last states; SDXL its
    /// encoders' next-to-last states side by side (the refiner has only the second), and the
    /// second's pooled projection.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Prompt, SdError> {
        self.encode_prompt_skipping(prompt, 1)
    }

    /// [`StableDiffusion::encode_prompt`] from the text encoders' layer `clip_skip` counted
    /// from the last (A1111's "Clip skip": 1 the last; 2 the one before, diffusers'
    /// `clip_skip = 1`); SDXL's pooled prompt is the whole second encoder's.
    pub fn encode_prompt_skipping(
        &self,
        prompt: &str,
        clip_skip: usize,
    ) -> Result<Prompt, SdError> {
        let mut stacks: Vec<(Vec<Chunk>, &ClipTextEncoder)> = Vec::with_capacity(2);
        for (tokenizer, encoder) in self.stacks() {
            if clip_skip == 0 || clip_skip > encoder.layers() {
                return Err(SdError::BadRequest(format!(
                    "clip skip {clip_skip}: it counts the text encoder's {} layers from the last, 1 to {}",
                    encoder.layers(),
                    encoder.layers()
                )));
            }
            let chunks = prompt_syntax::chunks(tokenizer, prompt)
                .map_err(|message| SdError::BadRequest(format!("prompt {prompt:?}: {message}")))?;
            stacks.push((chunks, encoder));
        }
        let Some((first, _)) = stacks.first() else {
            return Err(SdError::BadRequest(
                "the pipeline has no text encoder".into(),
            ));
        };
        if stacks.iter().any(|(chunks, _)| chunks.len() != first.len()) {
            return Err(SdError::BadRequest(format!(
                "prompt {prompt:?}: the two tokenizers split it into different numbers of chunks"
            )));
        }
        let mut contexts = Vec::with_capacity(first.len());
        let mut pooled = None;
        for (c, chunk) in first.iter().enumerate() {
            let mut states = Vec::with_capacity(stacks.len());
            for (chunks, encoder) in &stacks {
                let ids = &chunks[c].ids;
                let ids = Tensor::from_vec(ids.clone(), (1, ids.len()), &self.device)?;
                states.push(encoder.forward(&ids, clip_skip - 1)?);
            }
            let context = if self.second.is_none() {
                states.swap_remove(0).last
            } else {
                let penultimate: Vec<&Tensor> = states.iter().map(|s| &s.penultimate).collect();
                let context = Tensor::cat(&penultimate, 2)?;
                // SDXL's pooled prompt is the first chunk's, as A1111 takes it.
                if c == 0 {
                    pooled = states.pop().and_then(|second| second.pooled);
                }
                context
            };
            contexts.push(weigh(context, chunk)?);
        }
        Ok(Prompt {
            context: Tensor::cat(&contexts, 1)?,
            pooled,
        })
    }

    /// The negative prompt's conditioning: [`StableDiffusion::encode_prompt`], or zeros for an
    /// empty one where the folder says so (SDXL's `force_zeros_for_empty_prompt`).
    pub fn encode_negative(&self, negative: &str) -> Result<Prompt, SdError> {
        self.encode_negative_skipping(negative, 1)
    }

    /// [`StableDiffusion::encode_negative`] at a clip skip, as
    /// [`StableDiffusion::encode_prompt_skipping`].
    pub fn encode_negative_skipping(
        &self,
        negative: &str,
        clip_skip: usize,
    ) -> Result<Prompt, SdError> {
        let encoded = self.encode_prompt_skipping(negative, clip_skip)?;
        if !(negative.is_empty() && self.spec.zeros_for_empty_negative) {
            return Ok(encoded);
        }
        Ok(Prompt {
            context: encoded.context.zeros_like()?,
            pooled: encoded.pooled.map(|p| p.zeros_like()).transpose()?,
        })
    }

    /// SDXL's added conditioning for a pooled prompt `(n, p)`, the negative prompt's when
    /// `negative`: the pooled prompt and the time ids of a native-size image, `(n, p + ids)`.
    /// The six ids are the original size, the crop origin and the target size; the refiner's
    /// five end with an aesthetic score instead, diffusers' 6 for the prompt and 2.5 for the
    /// negative prompt.
    pub fn added_conditioning(&self, pooled: &Tensor, negative: bool) -> Result<Tensor, SdError> {
        self.added_conditioning_at(pooled, negative, self.spec.native_size())
    }

    /// [`StableDiffusion::added_conditioning`] for an image `side` pixels square (a hires
    /// pass's), as diffusers sizes it from the image it is given.
    pub fn added_conditioning_at(
        &self,
        pooled: &Tensor,
        negative: bool,
        side: usize,
    ) -> Result<Tensor, SdError> {
        let side = side as f32;
        let aesthetic = self.spec.unet.added.is_some_and(|a| a.aesthetic_score());
        let ids: Vec<f32> = match (aesthetic, negative) {
            (false, _) => vec![side, side, 0.0, 0.0, side, side],
            (true, false) => vec![side, side, 0.0, 0.0, AESTHETIC_SCORE.0],
            (true, true) => vec![side, side, 0.0, 0.0, AESTHETIC_SCORE.1],
        };
        let ids = Tensor::new(ids.as_slice(), &self.device)?
            .unsqueeze(0)?
            .repeat((pooled.dim(0)?, 1))?;
        Ok(Tensor::cat(&[&pooled.to_dtype(DType::F32)?, &ids], 1)?)
    }

    /// An LCM-distilled UNet's guidance input for `n` rows: the sinusoidal embedding of
    /// `guidance − 1` (scaled by 1000) diffusers' `get_guidance_scale_embedding` gives,
    /// `(n, time_cond_proj_dim)`; `None` for UNets guided by a second batch.
    pub fn guidance_embedding(&self, guidance: f64, n: usize) -> Result<Option<Tensor>, SdError> {
        let Some(dim) = self.spec.unet.guidance_embed_dim else {
            return Ok(None);
        };
        // In f32, step by step as diffusers computes it, so that the large angles round alike.
        let half = dim / 2;
        let step = 10000f32.ln() / (half.max(2) - 1) as f32;
        let w = (guidance as f32 - 1.0) * 1000.0;
        let angles: Vec<f32> = (0..half).map(|i| w * (i as f32 * -step).exp()).collect();
        let mut values: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        values.extend(angles.iter().map(|a| a.cos()));
        values.resize(dim, 0.0);
        let row = Tensor::from_vec(values, (1, dim), &self.device)?;
        Ok(Some(row.repeat((n, 1))?))
    }

    /// One UNet call: its output for `latents` at `timestep` given the text `context` and, for
    /// SDXL, the added conditioning, for LCM-distilled UNets the guidance embedding (f32 in
    /// and out, whatever the model's dtype).
    pub fn predict(
        &self,
        latents: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&Tensor>,
        guidance: Option<&Tensor>,
    ) -> Result<Tensor, SdError> {
        self.predict_controlled(latents, timestep, context, added, guidance, None)
    }

    /// [`StableDiffusion::predict`] with a ControlNet's residuals (in the model's dtype)
    /// added to the UNet's skip connections and middle block.
    pub fn predict_controlled(
        &self,
        latents: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&Tensor>,
        guidance: Option<&Tensor>,
        control: Option<&controlnet::ControlResiduals>,
    ) -> Result<Tensor, SdError> {
        let to_model = |t: Option<&Tensor>| t.map(|t| t.to_dtype(self.dtype)).transpose();
        let (added, guidance) = (to_model(added)?, to_model(guidance)?);
        let out = self.unet.forward(
            &latents.to_dtype(self.dtype)?,
            timestep,
            &context.to_dtype(self.dtype)?,
            added.as_ref(),
            guidance.as_ref(),
            control,
        )?;
        Ok(out.to_dtype(DType::F32)?)
    }

    /// The VAE's image `(n, 3, H, W)` in [-1, 1] (unclamped) for latents as the VAE makes them
    /// (not scaled for the UNet).
    pub fn vae_decode(&self, latents: &Tensor) -> Result<Tensor, SdError> {
        let pixels = self.vae.decode(&latents.to_dtype(self.vae_dtype)?)?;
        Ok(pixels.to_dtype(DType::F32)?)
    }

    /// The mean of the VAE's latent distribution for an image `(n, 3, H, W)` in [-1, 1].
    pub fn vae_encode_mean(&self, image: &Tensor) -> Result<Tensor, SdError> {
        let mean = self.vae.encode_mean(&image.to_dtype(self.vae_dtype)?)?;
        Ok(mean.to_dtype(DType::F32)?)
    }

    /// The latents image-to-image starts from: the VAE's mean for `image` (resized to the
    /// native size, transparent parts over white), scaled for the UNet, `(1, 4, h, w)`.
    pub fn image_latents(&self, image: &RgbaImage) -> Result<Tensor, SdError> {
        let size = self.spec.native_size() as u32;
        let pixels = rgb_tensor(image, size, &self.device)?;
        Ok((self.vae_encode_mean(&pixels)? * self.spec.vae.scaling_factor)?)
    }

    /// Runs the sampler from unit-variance `noise` `(n, 4, h, w)` — then, when the request
    /// asks for one, the hires pass from noise of its own — and returns the image
    /// `(n, 3, H, W)` in [0, 1].
    pub fn sample(&self, request: &GenerateRequest, noise: &Tensor) -> Result<Tensor, SdError> {
        self.check_lora_tags(request)?;
        let latents = self.denoise(request, noise)?;
        let latents = match &request.hires {
            Some(hires) => {
                let fresh = self.hires_noise(request, hires)?;
                self.hires_denoise(request, hires, &latents, &fresh)?
            }
            None => latents,
        };
        self.decode(&latents, request.tileable)
    }

    /// Whether the model was loaded with each LoRA and hypernetwork the request's prompt
    /// applies ([`lora_tags::check_loaded`], [`hypernetwork::check_loaded`]).
    pub(super) fn check_lora_tags(&self, request: &GenerateRequest) -> Result<(), SdError> {
        lora_tags::check_loaded(&request.prompt, &self.lora_names)
            .and_then(|()| hypernetwork::check_loaded(&request.prompt, &self.hypernet_names))
            .map_err(SdError::BadRequest)
    }

    /// The second pass's unit-variance noise `(n, channels, side, side)` at the hires size:
    /// image `i` from its own seed, apart from its first pass's.
    pub fn hires_noise(&self, request: &GenerateRequest, hires: &Hires) -> Result<Tensor, SdError> {
        let n = request.count.max(1);
        let side = hires.size as usize / self.spec.vae.downscale();
        let channels = self.spec.vae.latent_channels();
        let salted = GenerateRequest {
            seed: request.seed ^ 0x41E5_F1C5_0000_0000,
            init: None,
            ..request.clone()
        };
        Ok(Tensor::from_vec(
            super::noise::starting(&salted, channels * side * side),
            (n, channels, side, side),
            &self.device,
        )?)
    }

    /// The hires pass (see [`Hires`]): `latents` from the native-size pass scaled up to
    /// `hires.size` ([`StableDiffusion::hires_latents`]) and redrawn from unit-variance `fresh`
    /// noise of that size at its strength over its steps; the final latents.
    pub fn hires_denoise(
        &self,
        request: &GenerateRequest,
        hires: &Hires,
        latents: &Tensor,
        fresh: &Tensor,
    ) -> Result<Tensor, SdError> {
        let up = self.hires_latents(request, hires, latents)?;
        let second = hires_request(request, hires);
        self.denoise_from(&second, fresh, Stage::Whole, Some((&up, hires.strength)))
    }

    /// The hires pass's starting point: `latents` from the native-size pass scaled up to
    /// `hires.size` as its upscaler asks (through this model's VAE for a pixel upscaler).
    /// Refused for what the pass cannot redraw: a mask (it would repaint what the mask keeps),
    /// an inpainting UNet, a loop, or a size that is not a multiple of 64 above the native size
    /// and at most 4× it.
    pub fn hires_latents(
        &self,
        request: &GenerateRequest,
        hires: &Hires,
        latents: &Tensor,
    ) -> Result<Tensor, SdError> {
        let native = self.spec.native_size() as u32;
        let refuse = |why: String| Err(SdError::BadRequest(format!("hires pass: {why}")));
        if hires.size <= native || hires.size > 4 * native || !hires.size.is_multiple_of(64) {
            return refuse(format!(
                "size {} must be a multiple of 64 above this model's native {native} and at most {}",
                hires.size,
                4 * native
            ));
        }
        if !(hires.strength > 0.0 && hires.strength <= 1.0) {
            return refuse(format!("strength {} is not in (0, 1]", hires.strength));
        }
        if hires.steps == 0 {
            return refuse("it needs at least one step".into());
        }
        if request
            .init
            .as_ref()
            .is_some_and(|init| init.mask.is_some())
            || self.spec.unet.in_channels != 4
        {
            return refuse(
                "it redraws the whole image, so it cannot keep a mask's area; inpaint at the native size"
                    .into(),
            );
        }
        if request.looped {
            return refuse(
                "each frame would be redrawn on its own and the loop would flicker".into(),
            );
        }
        let side = hires.size as usize / self.spec.vae.downscale();
        Ok(match hires.upscaler {
            HiresUpscaler::Latent => hires::upscale_latents(latents, side, request.tileable)?,
            HiresUpscaler::Lanczos | HiresUpscaler::Model => {
                let model = match hires.upscaler {
                    HiresUpscaler::Model => Some(self.upscaler.as_ref().ok_or_else(|| {
                        SdError::BadRequest(
                            "hires pass: it asks for an upscaling model but none was loaded with this model".into(),
                        )
                    })?),
                    _ => None,
                };
                let first = self.decode(latents, request.tileable)?;
                let big =
                    hires::upscale_pixels(&first, hires.size as usize, model, request.tileable)?;
                let image = ((big * 2.0)? - 1.0)?;
                let mean = if request.tileable {
                    // Encoded with a wrapped margin, so the edges see across the seam.
                    let scale = self.spec.vae.downscale();
                    let pad = side / 4 * scale;
                    let mean = self.vae_encode_mean(&wrap_pad(&image, pad)?)?;
                    mean.narrow(2, pad / scale, side)?
                        .narrow(3, pad / scale, side)?
                } else {
                    self.vae_encode_mean(&image)?
                };
                (mean * self.spec.vae.scaling_factor)?
            }
        })
    }

    /// The unit-variance starting noise of `request`'s images `(n, channels, side, side)`:
    /// image `i` from seed + `i` (or a loop's circle).
    pub fn starting_noise(&self, request: &GenerateRequest) -> Result<Tensor, SdError> {
        let n = request.count.max(1);
        let side = self.spec.unet.sample_size;
        let channels = self.spec.vae.latent_channels();
        Ok(Tensor::from_vec(
            super::noise::starting(request, channels * side * side),
            (n, channels, side, side),
            &self.device,
        )?)
    }

    /// Runs the sampler from unit-variance `noise` `(n, 4, h, w)` — from pure noise, or from
    /// the init image noised as its strength asks — and returns the final latents (scaled for
    /// the UNet).
    pub fn denoise(&self, request: &GenerateRequest, noise: &Tensor) -> Result<Tensor, SdError> {
        self.denoise_stage(request, noise, Stage::Whole)
    }

    /// [`StableDiffusion::denoise`], or the part of the run `stage` names: up to a switch
    /// point (the latents then are not yet fully denoised), or from one with another model's
    /// latents (`noise` then only sizes the batch and any fresh noise).
    pub fn denoise_stage(
        &self,
        request: &GenerateRequest,
        noise: &Tensor,
        stage: Stage<'_>,
    ) -> Result<Tensor, SdError> {
        self.denoise_from(request, noise, stage, None)
    }

    /// [`StableDiffusion::denoise_stage`], image to image from `latents` (scaled for the UNet)
    /// at a strength in place of the request's init image when given.
    fn denoise_from(
        &self,
        request: &GenerateRequest,
        noise: &Tensor,
        stage: Stage<'_>,
        latents: Option<(&Tensor, f32)>,
    ) -> Result<Tensor, SdError> {
        let _span = tracing::info_span!("sd_denoise", steps = request.steps).entered();
        let n = noise.dim(0)?;
        let scheduler = match request.sampler {
            Some(sampler) => self.spec.scheduler.with_sampler(sampler),
            None => self.spec.scheduler.clone(),
        };
        if request.steps > scheduler.max_steps() {
            return Err(SdError::BadRequest(format!(
                "{} steps: this sampler takes at most {} (LCM: its `original_inference_steps`)",
                request.steps,
                scheduler.max_steps()
            )));
        }
        let mut schedule = scheduler.schedule(request.steps.max(1));
        // LCM-distilled UNets take the guidance scale as an input instead.
        let embedded = self.guidance_embedding(request.guidance, n)?;
        let (parts, plain) = composition(request, embedded.is_some())?;
        // A composition always takes the negative prompt's prediction, at a scale of at least 1.
        let guided = (request.guidance > 1.0 || !plain) && embedded.is_none();
        let scale = request.guidance.max(1.0);
        let start = match (latents, &request.init, stage) {
            (Some((latents, strength)), ..) => Some(Start {
                latents: latents.clone(),
                mask: None,
                inpaint: None,
                first_step: first_step(&schedule, strength),
            }),
            (None, Some(init), Stage::Whole | Stage::Until(_)) => {
                Some(self.start(init, n, &schedule)?)
            }
            _ => None,
        };
        let total = schedule.timesteps.len();
        // Prompt editing counts the steps this run denoises (an image-to-image run's, or the
        // whole schedule's when handed latents), in steps rather than model calls.
        let order = schedule.order().max(1);
        let origin = start.as_ref().map_or(0, |s| s.first_step.min(total));
        // SDXL's size conditioning: the native size, as diffusers' default; a hires pass's own;
        // after a switch point, that of the latents handed over (diffusers' image-to-image
        // refiner takes it from them).
        let side = match (latents, stage) {
            (Some(_), _) => noise.dim(3)? * self.spec.vae.downscale(),
            (None, Stage::From(handed, _)) => handed.dim(3)? * self.spec.vae.downscale(),
            (None, _) => self.spec.native_size(),
        };
        let steps = request.steps.max(1) - origin / order;
        let conditionings = self.conditionings(request, &parts, (n, side), guided, steps)?;
        // The training timestep a switch point falls on (diffusers' `discrete_timestep_cutoff`).
        let train = scheduler.alphas_cumprod.len() as f64;
        let cutoff = |switch: f64| (train - switch * train).round_ties_even();
        let (first, mut latents) = match stage {
            Stage::From(handed, switch) => {
                let cutoff = cutoff(switch);
                let mut count = schedule.timesteps.iter().filter(|&&t| t < cutoff).count();
                // A two-call sampler starts on the call that begins a step.
                if schedule.order() == 2 && count % 2 == 0 {
                    count += 1;
                }
                (total - count.min(total), handed.clone())
            }
            Stage::Whole | Stage::Until(_) => {
                let first = start.as_ref().map_or(0, |s| s.first_step);
                let latents = match &start {
                    Some(s) if first >= total => s.latents.clone(),
                    Some(s) if first > 0 => schedule.add_noise(&s.latents, noise, first)?,
                    _ => (noise * schedule.init_noise_sigma())?,
                };
                (first, latents)
            }
        };
        let stop = match stage {
            Stage::Until(switch) => {
                let cutoff = cutoff(switch);
                let kept = schedule.timesteps.iter().take_while(|&&t| t >= cutoff);
                kept.count().max(first)
            }
            Stage::Whole | Stage::From(..) => total,
        };
        let (_, _, h, w) = latents.dims4()?;
        let controls = self.control_hints(request, (h, w))?;
        let mut offsets = ChaCha8Rng::seed_from_u64(request.seed ^ 0x7111_AB1E);
        // DPM++ SDE's noise: increments of one Brownian motion over the run's noise levels.
        let brownian = (first < schedule.timesteps.len()
            && schedule.brownian_interval(first).is_some())
        .then(|| {
            let (low, high) = schedule.sigma_span();
            brownian::BrownianTree::new(request.seed ^ 0xB0B0_5DE0, low, high, latents.elem_count())
        });
        for i in first..stop {
            let t = schedule.timesteps[i];
            let (dy, dx) = if request.tileable {
                (offsets.random_range(0..h), offsets.random_range(0..w))
            } else {
                (0, 0)
            };
            let x = schedule.scale_model_input(&latents, i)?;
            let x = match start.as_ref().and_then(|s| s.inpaint.as_ref()) {
                Some(extra) if self.spec.unet.in_channels == 9 => Tensor::cat(&[&x, extra], 1)?,
                _ => x,
            };
            let x = super::roll(&x, dy, dx)?;
            let x = if guided {
                Tensor::cat(&vec![&x; 1 + parts.len()], 0)?
            } else {
                x
            };
            let step = i.saturating_sub(origin) / order;
            let (_, context, added) = &conditionings[conditionings
                .iter()
                .position(|(until, ..)| step <= *until)
                .unwrap_or(conditionings.len() - 1)];
            let mut residuals: Option<controlnet::ControlResiduals> = None;
            for (model, c, hint, features) in &controls {
                // diffusers' `controlnet_keep`: from `start` to `end` of the steps this run takes.
                let (j, count) = ((i - first) as f64, (total - first) as f64);
                if c.scale == 0.0 || j / count < c.start || (j + 1.0) / count > c.end {
                    continue;
                }
                let f = self.spec.vae.downscale();
                let hint = super::roll(hint, dy * f, dx * f)?;
                let these = match model {
                    controlnet::ControlModel::ControlNet(net) => {
                        let rows = (guided && c.guess_mode).then_some(n);
                        let conditioning = (context, added.as_ref());
                        self.control_residuals(net, c, &x, t, conditioning, &hint, rows)?
                    }
                    controlnet::ControlModel::Adapter(adapter) => {
                        // Computed once for the run, but again on a tileable texture's
                        // rolled control image.
                        let features = match features {
                            Some(features) if (dy, dx) == (0, 0) => features.clone(),
                            _ => adapter_features(adapter, c, &hint, self.dtype)?,
                        };
                        let rows = x.dim(0)?;
                        controlnet::ControlResiduals {
                            down: Vec::new(),
                            mid: None,
                            within: features
                                .iter()
                                .map(|f| f.repeat((rows, 1, 1, 1)))
                                .collect::<candle_core::Result<_>>()?,
                        }
                    }
                };
                residuals = Some(match residuals {
                    Some(sum) => sum.plus(&these)?,
                    None => these,
                });
            }
            let out = self.predict_controlled(
                &x,
                t,
                context,
                added.as_ref(),
                embedded.as_ref(),
                residuals.as_ref(),
            )?;
            let out = if guided {
                let uncond = out.narrow(0, 0, n)?;
                let mut guided = uncond.clone();
                for (j, part) in parts.iter().enumerate() {
                    let cond = out.narrow(0, (j + 1) * n, n)?;
                    guided = (guided + ((&cond - &uncond)? * (part.weight * scale))?)?;
                }
                rescale_guidance(&guided, &out.narrow(0, n, n)?, request.guidance_rescale)?
            } else {
                out
            };
            let out = super::roll(&out, h - dy % h, w - dx % w)?;
            let fresh = if schedule.needs_noise(i) {
                let values = match (&brownian, schedule.brownian_interval(i)) {
                    (Some(tree), Some((from, to))) => tree.increment(from, to),
                    _ => super::noise::gaussian(
                        request.seed ^ (0x5EED_0000 + i as u64),
                        latents.elem_count(),
                    ),
                };
                Some(Tensor::from_vec(values, latents.shape(), &self.device)?)
            } else {
                None
            };
            latents = schedule.step(&out, i, &latents, fresh.as_ref())?;
            if let Some(s) = &start
                && let Some(mask) = &s.mask
                && self.spec.unet.in_channels == 4
            {
                let known = if i + 1 < schedule.timesteps.len() {
                    schedule.add_noise(&s.latents, noise, i + 1)?
                } else {
                    s.latents.clone()
                };
                latents = (mask.broadcast_mul(&latents)?
                    + mask.affine(-1.0, 1.0)?.broadcast_mul(&known)?)?;
            }
        }
        Ok(latents)
    }

    /// Each ControlNet or T2I-Adapter with the request's conditioning for it, its control
    /// image `(1, 3, H, W)` in [0, 1] for latents of `h`×`w`, and an adapter's scaled feature
    /// maps of it (none when the request asks for none).
    fn control_hints<'a>(
        &'a self,
        request: &'a GenerateRequest,
        (h, w): (usize, usize),
    ) -> Result<Vec<ControlHint<'a>>, SdError> {
        if request.control.is_empty() {
            return Ok(Vec::new());
        }
        if request.control.len() != self.controls.len() {
            return Err(SdError::BadRequest(format!(
                "the request has {} control image(s) but the model was loaded with {} ControlNet(s): give one for each",
                request.control.len(),
                self.controls.len()
            )));
        }
        let f = self.spec.vae.downscale();
        let mut hints = Vec::new();
        for (i, (model, control)) in self.controls.iter().zip(&request.control).enumerate() {
            if !(0.0..=1.0).contains(&control.start)
                || !(control.start..=1.0).contains(&control.end)
                || !(0.0..=2.0).contains(&control.scale)
            {
                return Err(SdError::BadRequest(format!(
                    "ControlNet {} from {} to {} of the steps at scale {}: start and end are fractions, start ≤ end, and the scale is 0–2",
                    i + 1,
                    control.start,
                    control.end,
                    control.scale
                )));
            }
            let hint = control_tensor(&control.image, (w * f, h * f), &self.device)?;
            let features = match model {
                controlnet::ControlModel::Adapter(_) if control.guess_mode => {
                    return Err(SdError::BadRequest(format!(
                        "ControlNet {} is a T2I-Adapter: guess mode is for ControlNets (an adapter conditions both prompts' predictions)",
                        i + 1
                    )));
                }
                controlnet::ControlModel::Adapter(adapter) => {
                    Some(adapter_features(adapter, control, &hint, self.dtype)?)
                }
                controlnet::ControlModel::ControlNet(_) => None,
            };
            hints.push((model, control, hint, features));
        }
        Ok(hints)
    }

    /// `net`'s residuals for the UNet's input `x` (its first `n` rows the negative prompt's
    /// when `negative_rows` is given: guess mode conditions the rest alone, and gives those
    /// rows nothing) with the `(context, added)` conditioning of those rows.
    #[allow(clippy::too_many_arguments)]
    fn control_residuals(
        &self,
        net: &controlnet::ControlNet,
        control: &Control,
        x: &Tensor,
        timestep: f64,
        (context, added): (&Tensor, Option<&Tensor>),
        hint: &Tensor,
        negative_rows: Option<usize>,
    ) -> Result<controlnet::ControlResiduals, SdError> {
        let rows = x.dim(0)?;
        let skipped = negative_rows.unwrap_or(0);
        let part = |t: &Tensor| -> candle_core::Result<Tensor> {
            t.narrow(0, skipped, rows - skipped)?.to_dtype(self.dtype)
        };
        // An inpainting UNet's input carries the mask and the masked image after the latents;
        // the ControlNet takes the latents.
        let latents = x.narrow(1, 0, net.spec().unet.in_channels)?;
        let residuals = net.forward(
            &part(&latents)?,
            timestep,
            &part(context)?,
            added.map(part).transpose()?.as_ref(),
            &hint.repeat((rows - skipped, 1, 1, 1))?,
            control.scale,
            control.guess_mode,
        )?;
        if skipped == 0 {
            return Ok(residuals);
        }
        let padded = |t: &Tensor| -> candle_core::Result<Tensor> {
            let (_, c, h, w) = t.dims4()?;
            let zeros = Tensor::zeros((skipped, c, h, w), t.dtype(), t.device())?;
            Tensor::cat(&[&zeros, t], 0)
        };
        Ok(controlnet::ControlResiduals {
            down: residuals
                .down
                .iter()
                .map(padded)
                .collect::<candle_core::Result<_>>()?,
            mid: residuals.mid.as_ref().map(padded).transpose()?,
            within: Vec::new(),
        })
    }

    /// Latents scaled for the UNet → image `(n, 3, H, W)` in [0, 1]; tileable images are
    /// decoded from wrapped latents so that their edges meet.
    pub fn decode(&self, latents: &Tensor, tileable: bool) -> Result<Tensor, SdError> {
        let latents = (latents / self.spec.vae.scaling_factor)?;
        let image = if tileable {
            let (_, _, h, w) = latents.dims4()?;
            let pad = (h.min(w) / 4).max(1);
            let wrapped = wrap_pad(&latents, pad)?;
            let image = self.vae_decode(&wrapped)?;
            let scale = self.spec.vae.downscale();
            image
                .narrow(2, pad * scale, h * scale)?
                .narrow(3, pad * scale, w * scale)?
        } else {
            self.vae_decode(&latents)?
        };
        Ok(((image / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
    }

    /// The conditionings of a run of `steps` steps as its prompts change (see
    /// [`prompt_schedule`]): each with the last step (counted from 1) it holds for, in order.
    /// A step counted from 0 takes the first whose end is not before it, as A1111's sampler does.
    fn conditionings(
        &self,
        request: &GenerateRequest,
        parts: &[Composed],
        (n, side): (usize, usize),
        guided: bool,
        steps: usize,
    ) -> Result<Vec<(usize, Tensor, Option<Tensor>)>, SdError> {
        let prompts: Vec<Vec<Scheduled>> = parts
            .iter()
            .map(|part| prompt_schedule::schedule(&part.text, steps))
            .collect();
        let negatives = if guided {
            prompt_schedule::schedule(&request.negative_prompt, steps)
        } else {
            Vec::new()
        };
        let ends: BTreeSet<usize> = prompts
            .iter()
            .flatten()
            .chain(&negatives)
            .map(|s| s.until)
            .collect();
        fn text_at(schedule: &[Scheduled], end: usize) -> &str {
            schedule
                .iter()
                .find(|s| end <= s.until)
                .map_or("", |s| s.text.as_str())
        }
        type Made = (Tensor, Option<Tensor>);
        let mut made: HashMap<(Vec<&str>, &str), Made> = HashMap::new();
        let mut conditionings = Vec::with_capacity(ends.len());
        for end in ends {
            let texts: Vec<&str> = prompts.iter().map(|s| text_at(s, end)).collect();
            let negative = text_at(&negatives, end);
            let (context, added) = match made.get(&(texts.clone(), negative)) {
                Some(known) => known.clone(),
                None => {
                    let fresh =
                        self.conditioning(&texts, negative, request.clip_skip, (n, side), guided)?;
                    made.insert((texts, negative), fresh.clone());
                    fresh
                }
            };
            conditionings.push((end, context, added));
        }
        Ok(conditionings)
    }

    /// The conditioning of `n` images `side` pixels square, rows `[negative; n]` (with
    /// guidance) then `[prompt; n]` for each prompt: the text context and, for SDXL, the added
    /// conditioning. Contexts of different lengths are evened out as A1111 does by default:
    /// a prompt (an `AND` part) of fewer chunks than the longest repeats its last state up to
    /// it (`reconstruct_multicond_batch`), and the negative prompt's states are attended to
    /// alone, as A1111 guides a prompt and a negative prompt of different lengths in separate
    /// batches — here in one: the prompts' and the negative prompt's contexts each repeated
    /// whole up to the least common multiple of their lengths (as ComfyUI does), which a
    /// softmax over the keys cannot tell from the context once.
    fn conditioning(
        &self,
        prompts: &[&str],
        negative_prompt: &str,
        skip: usize,
        (n, side): (usize, usize),
        guided: bool,
    ) -> Result<(Tensor, Option<Tensor>), SdError> {
        let mut encoded = Vec::with_capacity(prompts.len() + 1);
        if guided {
            encoded.push((self.encode_negative_skipping(negative_prompt, skip)?, true));
        }
        for prompt in prompts {
            encoded.push((self.encode_prompt_skipping(prompt, skip)?, false));
        }
        let mut longest = 0;
        for (prompt, negative) in &encoded {
            if !negative {
                longest = longest.max(prompt.context.dim(1)?);
            }
        }
        for (prompt, negative) in &mut encoded {
            let have = prompt.context.dim(1)?;
            if !*negative && have < longest {
                let last = prompt.context.narrow(1, have - 1, 1)?;
                let last = last.repeat((1, longest - have, 1))?;
                prompt.context = Tensor::cat(&[&prompt.context, &last], 1)?;
            }
        }
        let mut wanted = longest;
        for (prompt, negative) in &encoded {
            if *negative {
                wanted = least_common_multiple(wanted, prompt.context.dim(1)?);
            }
        }
        for (prompt, _) in &mut encoded {
            let have = prompt.context.dim(1)?;
            if have != wanted {
                prompt.context = prompt.context.repeat((1, wanted / have, 1))?;
            }
        }
        let rows: Vec<&(Prompt, bool)> = encoded
            .iter()
            .flat_map(|row| std::iter::repeat_n(row, n))
            .collect();
        let contexts: Vec<&Tensor> = rows.iter().map(|(p, _)| &p.context).collect();
        let added = match &self.spec.unet.added {
            Some(_) => {
                let mut added = Vec::with_capacity(rows.len());
                for (prompt, negative) in &rows {
                    if let Some(pooled) = &prompt.pooled {
                        added.push(self.added_conditioning_at(pooled, *negative, side)?);
                    }
                }
                Some(Tensor::cat(&added, 0)?)
            }
            None => None,
        };
        Ok((Tensor::cat(&contexts, 0)?, added))
    }

    /// The init image's latents, mask and first step.
    fn start(&self, init: &InitImage, n: usize, schedule: &Schedule) -> Result<Start, SdError> {
        if !(0.0..=1.0).contains(&init.strength) {
            return Err(SdError::BadRequest(format!(
                "strength must be in [0, 1], got {}",
                init.strength
            )));
        }
        let size = self.spec.native_size() as u32;
        let image = rgb_tensor(&init.image, size, &self.device)?;
        let scale = self.spec.vae.scaling_factor;
        let latents = (self.vae_encode_mean(&image)? * scale)?.repeat((n, 1, 1, 1))?;
        let full_mask = match &init.mask {
            Some(mask) => Some(mask_tensor(mask, size, &self.device)?),
            None => None,
        };
        let mask = match &full_mask {
            Some(full) => {
                // Nearest sampling down to the latent grid, as diffusers does.
                let step = self.spec.vae.downscale();
                let side = self.spec.unet.sample_size;
                let picks =
                    Tensor::arange_step(0u32, (side * step) as u32, step as u32, &self.device)?;
                Some(full.index_select(&picks, 2)?.index_select(&picks, 3)?)
            }
            None if self.spec.unet.in_channels == 9 => {
                return Err(SdError::BadRequest(
                    "this is an inpainting model: give it an image and a mask".into(),
                ));
            }
            None => None,
        };
        let inpaint = match (&mask, &full_mask) {
            (Some(latent_mask), Some(full)) if self.spec.unet.in_channels == 9 => {
                let masked = image.broadcast_mul(&full.affine(-1.0, 1.0)?)?;
                let masked = (self.vae_encode_mean(&masked)? * scale)?;
                Some(Tensor::cat(&[latent_mask, &masked], 1)?.repeat((n, 1, 1, 1))?)
            }
            _ => None,
        };
        Ok(Start {
            latents,
            mask,
            inpaint,
            first_step: first_step(schedule, init.strength),
        })
    }
}

/// The prompts `request` guides by (see [`prompt_schedule::compose`]), its LoRA tags taken
/// out ([`lora_tags`]: the LoRAs were merged at load), and whether it is one unweighted
/// prompt, kept as written; a composition is refused where the UNet embeds the guidance (no
/// negative prediction to compose against) and with guidance rescale.
fn composition(
    request: &GenerateRequest,
    embedded: bool,
) -> Result<(Vec<Composed>, bool), SdError> {
    let prompt = lora_tags::without_network_tags(&request.prompt);
    let parts = prompt_schedule::compose(&prompt);
    if !prompt_schedule::composes(&parts) {
        let whole = Composed {
            text: prompt,
            weight: 1.0,
        };
        return Ok((vec![whole], true));
    }
    if embedded || request.guidance_rescale > 0.0 {
        return Err(SdError::BadRequest(format!(
            "prompt {:?}: composing prompts (`AND`, or a prompt ending in `:weight`) {}",
            request.prompt,
            if embedded {
                "needs classifier-free guidance, which this LCM-distilled UNet takes as an input instead"
            } else {
                "and guidance rescale do not go together"
            }
        )));
    }
    Ok((parts, false))
}

/// The least common multiple of `a` and `b` (positive).
fn least_common_multiple(a: usize, b: usize) -> usize {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}

/// The request of `hires`'s second pass: its steps, from the upscaled latents (no init image,
/// no further hires pass).
fn hires_request(request: &GenerateRequest, hires: &Hires) -> GenerateRequest {
    GenerateRequest {
        steps: hires.steps,
        init: None,
        hires: None,
        ..request.clone()
    }
}

/// The first of `schedule`'s calls that an image-to-image run at `strength` takes (diffusers'
/// img2img `get_timesteps`: the last ⌊steps·strength⌋ inference steps run).
fn first_step(schedule: &Schedule, strength: f32) -> usize {
    let steps = schedule.inference_steps();
    let noised = ((steps as f32 * strength).floor() as usize).min(steps);
    schedule.order() * (steps - noised)
}

/// Where image-to-image and inpainting start.
struct Start {
    /// The init image's latents (scaled for the UNet), one per image.
    latents: Tensor,
    /// `(1, 1, h, w)`: 1 where to regenerate.
    mask: Option<Tensor>,
    /// For 9-channel UNets: the mask and the masked image's latents, one per image.
    inpaint: Option<Tensor>,
    /// The first of the schedule's steps that runs.
    first_step: usize,
}

impl Generator for StableDiffusion {
    fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    fn native_size(&self) -> u32 {
        self.spec.native_size() as u32
    }

    fn generate(&self, request: &GenerateRequest) -> Result<Vec<RgbaImage>, GenerateError> {
        let noise = self.starting_noise(request)?;
        let image = self.sample(request, &noise)?;
        Ok(rgba_images(&image).map_err(SdError::from)?)
    }
}

/// The VAE's dtype on `device`: f32 on the CPU; on a GPU f16, except for the SDXL family
/// (UNets with SDXL's added conditioning), whose VAE overflows f16 and which diffusers' SDXL
/// pipelines decode in f32 (`force_upcast`).
fn vae_dtype(spec: &PipelineSpec, device: &Device) -> DType {
    if device.is_cpu() || spec.unet.added.is_some() {
        DType::F32
    } else {
        DType::F16
    }
}

/// Builds a network, naming its (first) weights file when the weights do not fit.
fn build<T>(file: &Path, make: impl FnOnce() -> candle_core::Result<T>) -> Result<T, SdError> {
    make().map_err(|source| SdError::Weights {
        path: file.to_path_buf(),
        source,
    })
}

/// Loads the tokenizer `component`, whose prompts must fit `text`'s positions and vocabulary.
fn checked_tokenizer(
    source: &dyn PipelineSource,
    component: &str,
    text: &text_encoder::ClipConfig,
) -> Result<ClipTokenizer, SdError> {
    let tokenizer = source.tokenizer(component)?;
    let invalid = |message: String| SdError::Invalid {
        path: source.path(component),
        message,
    };
    if tokenizer.max_len() > text.max_position_embeddings {
        return Err(invalid(format!(
            "{} tokens per prompt but the text encoder has {} positions",
            tokenizer.max_len(),
            text.max_position_embeddings
        )));
    }
    if tokenizer.size() > text.vocab_size {
        return Err(invalid(format!(
            "{} tokens but the text encoder embeds {}",
            tokenizer.size(),
            text.vocab_size
        )));
    }
    Ok(tokenizer)
}

/// How a model is named in identities: `org/name` for a Hugging Face cache folder, the file
/// name without `.safetensors` for a checkpoint.
fn display_name(path: &Path) -> String {
    let name = match path.extension() {
        Some(e) if e == "safetensors" => path.file_stem(),
        _ => path.file_name(),
    };
    let name = name
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    match name.strip_prefix("models--") {
        Some(rest) => rest.replacen("--", "/", 1),
        None => name,
    }
}

/// An image as `(1, 3, size, size)` in [-1, 1], transparent parts over white.
fn rgb_tensor(image: &RgbaImage, size: u32, device: &Device) -> candle_core::Result<Tensor> {
    let image = if image.dimensions() == (size, size) {
        image.clone()
    } else {
        imageops::resize(image, size, size, FilterType::Triangle)
    };
    let s = size as usize;
    let mut values = vec![0f32; 3 * s * s];
    for (i, p) in image.pixels().enumerate() {
        let alpha = f32::from(p[3]) / 255.0;
        for c in 0..3 {
            let v = f32::from(p[c]) / 255.0 * alpha + (1.0 - alpha);
            values[c * s * s + i] = v * 2.0 - 1.0;
        }
    }
    Tensor::from_vec(values, (1, 3, s, s), device)
}

/// A ControlNet or T2I-Adapter, the request's conditioning for it, its control image, and an
/// adapter's scaled feature maps of it (see `StableDiffusion::control_hints`).
type ControlHint<'a> = (
    &'a controlnet::ControlModel,
    &'a Control,
    Tensor,
    Option<Vec<Tensor>>,
);

/// `adapter`'s feature maps of the control image `hint` in `dtype`, times the scale of
/// `control` (diffusers' `adapter_conditioning_scale`).
fn adapter_features(
    adapter: &adapter::Adapter,
    control: &Control,
    hint: &Tensor,
    dtype: DType,
) -> candle_core::Result<Vec<Tensor>> {
    adapter
        .features(&hint.to_dtype(dtype)?)?
        .iter()
        .map(|f| f * control.scale)
        .collect()
}

/// A control image as `(1, 3, height, width)` in [0, 1], as diffusers' ControlNet pipelines
/// take it (resized with a Lanczos filter when its size differs).
fn control_tensor(
    image: &RgbImage,
    (width, height): (usize, usize),
    device: &Device,
) -> candle_core::Result<Tensor> {
    let (w, h) = (width as u32, height as u32);
    let image = if image.dimensions() == (w, h) {
        image.clone()
    } else {
        imageops::resize(image, w, h, FilterType::Lanczos3)
    };
    let values: Vec<f32> = image
        .into_raw()
        .into_iter()
        .map(|v| f32::from(v) / 255.0)
        .collect();
    Tensor::from_vec(values, (height, width, 3), device)?
        .permute((2, 0, 1))?
        .unsqueeze(0)
}

/// A mask as `(1, 1, size, size)`: 1 where white (regenerate), 0 where black, split at half
/// after resizing.
fn mask_tensor(mask: &GrayImage, size: u32, device: &Device) -> candle_core::Result<Tensor> {
    let mask = if mask.dimensions() == (size, size) {
        mask.clone()
    } else {
        imageops::resize(mask, size, size, FilterType::Triangle)
    };
    let values: Vec<f32> = mask
        .pixels()
        .map(|p| if p[0] >= 128 { 1.0 } else { 0.0 })
        .collect();
    let s = size as usize;
    Tensor::from_vec(values, (1, 1, s, s), device)
}

/// `(n, 3, H, W)` in [0, 1] → opaque RGBA images.
fn rgba_images(image: &Tensor) -> candle_core::Result<Vec<RgbaImage>> {
    let (n, _, h, w) = image.dims4()?;
    let values = image
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let plane = h * w;
    Ok((0..n)
        .map(|b| {
            RgbaImage::from_fn(w as u32, h as u32, |x, y| {
                let i = y as usize * w + x as usize;
                let channel = |c: usize| (values[(b * 3 + c) * plane + i] * 255.0).round() as u8;
                image::Rgba([channel(0), channel(1), channel(2), 255])
            })
        })
        .collect())
}

/// Guidance rescale (Lin et al. 2023, diffusers' `rescale_noise_cfg`): each image's `guided`
/// prediction `(n, c, h, w)` scaled to the standard deviation of its prompt-only prediction
/// `cond`, mixed with the unscaled one by `phi` (0 leaves it as it is).
/// A chunk's states `(1, tokens, d)` multiplied by its weights and rescaled to the mean they
/// had (A1111's "original" emphasis); as they are when every weight is 1.
fn weigh(states: Tensor, chunk: &Chunk) -> candle_core::Result<Tensor> {
    if !chunk.is_weighted() {
        return Ok(states);
    }
    let dtype = states.dtype();
    let states = states.to_dtype(DType::F32)?;
    let before = states.mean_all()?;
    let weights = Tensor::from_vec(
        chunk.weights.clone(),
        (1, chunk.weights.len(), 1),
        states.device(),
    )?;
    let weighted = states.broadcast_mul(&weights)?;
    let after = weighted.mean_all()?;
    weighted.broadcast_mul(&(before / after)?)?.to_dtype(dtype)
}

fn rescale_guidance(guided: &Tensor, cond: &Tensor, phi: f64) -> candle_core::Result<Tensor> {
    if phi <= 0.0 {
        return Ok(guided.clone());
    }
    // Over each image's values. (torch's is unbiased; in a ratio of two over as many values
    // the correction cancels.)
    let std = |x: &Tensor| -> candle_core::Result<Tensor> {
        let rows = x.flatten_from(1)?;
        let centered = rows.broadcast_sub(&rows.mean_keepdim(1)?)?;
        centered.sqr()?.mean_keepdim(1)?.sqrt()
    };
    let ratio = (std(cond)? / std(guided)?)?.reshape((guided.dim(0)?, 1, 1, 1))?;
    let rescaled = guided.broadcast_mul(&ratio)?;
    (rescaled * phi)? + (guided * (1.0 - phi))?
}

/// Pads `(n, c, h, w)` by `pad` on every side with what lies across the opposite edge.
fn wrap_pad(x: &Tensor, pad: usize) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let rows = Tensor::cat(&[&x.narrow(2, h - pad, pad)?, x, &x.narrow(2, 0, pad)?], 2)?;
    Tensor::cat(
        &[
            &rows.narrow(3, w - pad, pad)?,
            &rows,
            &rows.narrow(3, 0, pad)?,
        ],
        3,
    )
}

/// Largest absolute difference between two tensors of one shape (for tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .unwrap_or(f32::INFINITY)
}
