//! The house model: Autonomy's own small text-to-sprite diffusion model.
//!
//! It is built to be useful on a 2-core CPU with no download: a ~4.5 M-parameter DiT over
//! 32×32 premultiplied RGBA (alpha matters for sprites), conditioned on a word-level text
//! encoder trained with it, sampled by flow matching in ≤ 20 Euler steps with classifier-free
//! guidance. It refuses to pretend: sizes it cannot make are errors, not silent resizes.
//!
//! A model folder holds `config.json`, `model.safetensors` (the sha256 of this file is the
//! model version), `vocab.json`, the dataset manifest it was trained on and `MODEL.md`.

pub mod config;
pub mod denoiser;
pub mod layers;
pub mod pixels;
pub mod sampler;
pub mod text_encoder;
pub mod tokenizer;
pub mod vars;

pub use config::HouseConfig;
pub use sampler::FlowSampler;
pub use tokenizer::Tokenizer;

use crate::generator::{GenerateError, GenerateRequest, Generator, InitImage, ModelIdentity};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use denoiser::Denoiser;
use image::RgbaImage;
use image::imageops::{self, FilterType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use text_encoder::{TextEncoder, TextFeatures};

/// File names inside a model folder.
pub mod files {
    /// Architecture.
    pub const CONFIG: &str = "config.json";
    /// Weights (EMA), f32 safetensors.
    pub const WEIGHTS: &str = "model.safetensors";
    /// Tokenizer vocabulary.
    pub const VOCAB: &str = "vocab.json";
    /// Dataset manifest (JSON Lines) the weights were trained on.
    pub const DATASET: &str = "dataset.jsonl";
    /// Model card.
    pub const CARD: &str = "MODEL.md";
}

/// What can go wrong loading or running the house model.
#[derive(Debug, thiserror::Error)]
pub enum HouseError {
    /// A file the model folder must hold is not there.
    #[error("model folder `{dir}` has no `{file}` (is it a house model folder?)")]
    MissingFile {
        /// The model folder.
        dir: PathBuf,
        /// The missing file's name.
        file: &'static str,
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
    /// The request is inconsistent (named in the message).
    #[error("bad generation request: {0}")]
    BadRequest(String),
    /// The prompt has no words.
    #[error("the prompt is empty: describe what to generate, e.g. \"red health potion\"")]
    EmptyPrompt,
    /// A tensor operation failed.
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

/// The two trained networks; shared by sampling and training.
#[derive(Clone, Debug)]
pub struct Networks {
    /// Prompt encoder.
    pub text: TextEncoder,
    /// Velocity predictor.
    pub denoiser: Denoiser,
}

impl Networks {
    /// Creates (training) or loads (inference) both networks from `vb`.
    pub fn new(config: &HouseConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            text: TextEncoder::new(config, vb.pp("text"))?,
            denoiser: Denoiser::new(config, vb.pp("denoiser"))?,
        })
    }

    /// Encodes prompts already turned into ids.
    pub fn encode(
        &self,
        prompts: &[tokenizer::Encoded],
        device: &Device,
    ) -> candle_core::Result<TextFeatures> {
        let width = prompts.first().map_or(1, |p| p.ids.len());
        let ids: Vec<u32> = prompts.iter().flat_map(|p| p.ids.iter().copied()).collect();
        let ids = Tensor::from_vec(ids, (prompts.len(), width), device)?;
        let lengths: Vec<usize> = prompts.iter().map(|p| p.len).collect();
        self.text.forward(&ids, &lengths)
    }
}

/// A loaded house model, ready to generate.
pub struct HouseModel {
    /// Architecture.
    pub config: HouseConfig,
    /// Prompt tokenizer.
    pub tokenizer: Tokenizer,
    networks: Networks,
    device: Device,
    identity: ModelIdentity,
}

impl HouseModel {
    /// Loads a model folder onto `device`; every missing or broken file is named in the error.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, HouseError> {
        let config: HouseConfig = serde_json::from_slice(&read(dir, files::CONFIG)?)
            .map_err(|e| invalid(dir, files::CONFIG, e))?;
        config
            .validate()
            .map_err(|e| invalid(dir, files::CONFIG, e))?;
        let vocab = String::from_utf8(read(dir, files::VOCAB)?)
            .map_err(|e| invalid(dir, files::VOCAB, e))?;
        let tokenizer = Tokenizer::from_json(&vocab).map_err(|e| invalid(dir, files::VOCAB, e))?;
        if tokenizer.vocab_size() != config.vocab_size {
            return Err(invalid(
                dir,
                files::VOCAB,
                format!(
                    "{} words but config.json says vocab_size {}",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            ));
        }
        let weights = read(dir, files::WEIGHTS)?;
        let version = hex::encode(Sha256::digest(&weights));
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, device)
            .map_err(|e| invalid(dir, files::WEIGHTS, e))?;
        let networks = Networks::new(&config, vb).map_err(|e| invalid(dir, files::WEIGHTS, e))?;
        let dataset_sha256 = match std::fs::read(dir.join(files::DATASET)) {
            Ok(bytes) => Some(hex::encode(Sha256::digest(&bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(HouseError::Io {
                    path: dir.join(files::DATASET),
                    source,
                });
            }
        };
        tracing::debug!(dir = %dir.display(), %version, "loaded house model");
        Ok(Self {
            config,
            tokenizer,
            networks,
            device: device.clone(),
            identity: ModelIdentity {
                name: "house".into(),
                weights_sha256: version,
                dataset_sha256,
                path: dir.to_path_buf(),
                generator: super::Family::House.generator(),
                loras: Vec::new(),
                embeddings: Vec::new(),
                hypernetworks: Vec::new(),
                vae: None,
                refiner: None,
                upscaler: None,
                controlnets: Vec::new(),
            },
        })
    }

    /// The model version: sha256 (hex) of `model.safetensors`.
    pub fn version(&self) -> &str {
        &self.identity.weights_sha256
    }

    /// Side of the images it makes.
    pub fn image_size(&self) -> usize {
        self.config.image_size
    }

    /// Generates `request.count` images; same request on the same machine ⇒ same pixels.
    pub fn generate(&self, request: &GenerateRequest) -> Result<Vec<RgbaImage>, HouseError> {
        if tokenizer::words(&request.prompt).next().is_none() {
            return Err(HouseError::EmptyPrompt);
        }
        let _span = tracing::info_span!("house_generate", count = request.count).entered();
        let n = request.count.max(1);
        let size = self.config.image_size;
        let shape = (n, self.config.channels, size, size);
        let noise = Tensor::from_vec(
            crate::models::noise::starting(request, shape.1 * size * size),
            shape,
            &self.device,
        )?;
        let init = match &request.init {
            Some(init) => Some(self.start_image(init, n)?),
            None => None,
        };
        let sampler = FlowSampler {
            start: init.as_ref().map_or(1.0, |i| i.strength),
            ..FlowSampler::new(request.steps.max(1), 1.0)
        };
        let x = match &init {
            Some(i) => ((&i.image * (1.0 - i.strength))? + (&noise * i.strength)?)?,
            None => noise.clone(),
        };

        let guided = request.guidance != 1.0;
        let max = self.config.max_tokens;
        let mut prompts = vec![self.tokenizer.encode(&request.prompt, max); n];
        if guided {
            prompts.extend(vec![
                self.tokenizer.encode(&request.negative_prompt, max);
                n
            ]);
        }
        let text = self.networks.encode(&prompts, &self.device)?;
        // Tileable: every step sees the image rolled by a different offset, so the wrap-around
        // seam sits somewhere new each time and the model has to join it like any neighbours.
        let mut offsets = ChaCha8Rng::seed_from_u64(request.seed ^ 0x7111_AB1E);
        let out = sampler.sample(
            x,
            |x, t| {
                let (dy, dx) = if request.tileable {
                    (offsets.random_range(0..size), offsets.random_range(0..size))
                } else {
                    (0, 0)
                };
                let x = super::roll(x, dy, dx)?;
                let rows = prompts.len();
                let x = if guided {
                    Tensor::cat(&[&x, &x], 0)?
                } else {
                    x
                };
                let t = Tensor::full(t as f32, rows, &self.device)?;
                let v = self.networks.denoiser.forward(&x, &t, &text)?;
                let v = if guided {
                    sampler::guide(&v.narrow(0, 0, n)?, &v.narrow(0, n, n)?, request.guidance)?
                } else {
                    v
                };
                super::roll(&v, size - dy, size - dx)
            },
            |x, t| match init.as_ref().and_then(|i| i.mask.as_ref().map(|m| (i, m))) {
                Some((init, mask)) => {
                    let known = ((&init.image * (1.0 - t))? + (&noise * t)?)?;
                    mask.broadcast_mul(&x)? + mask.affine(-1.0, 1.0)?.broadcast_mul(&known)?
                }
                None => Ok(x),
            },
        )?;
        Ok(pixels::from_tensor(&out)?)
    }

    /// The init image (and mask) at the model's size, repeated for the batch.
    fn start_image(&self, init: &InitImage, n: usize) -> Result<StartImage, HouseError> {
        if !(init.strength > 0.0 && init.strength <= 1.0) {
            return Err(HouseError::BadRequest(format!(
                "strength must be in (0, 1], got {}",
                init.strength
            )));
        }
        let size = self.config.image_size as u32;
        let image = if init.image.dimensions() == (size, size) {
            init.image.clone()
        } else {
            imageops::resize(&init.image, size, size, FilterType::Triangle)
        };
        let image = pixels::to_tensor(&vec![&image; n], &self.device)?;
        let mask = match &init.mask {
            Some(mask) => {
                let mask = imageops::resize(mask, size, size, FilterType::Triangle);
                let values: Vec<f32> = mask.pixels().map(|p| p[0] as f32 / 255.0).collect();
                let s = size as usize;
                Some(Tensor::from_vec(values, (1, 1, s, s), &self.device)?)
            }
            None => None,
        };
        Ok(StartImage {
            image,
            mask,
            strength: f64::from(init.strength),
        })
    }
}

impl Generator for HouseModel {
    fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    fn native_size(&self) -> u32 {
        self.config.image_size as u32
    }

    fn generate(&self, request: &GenerateRequest) -> Result<Vec<RgbaImage>, GenerateError> {
        if let Some(sampler) = request.sampler {
            return Err(GenerateError::Unsupported(format!(
                "the house model has one sampler; `{}` is for Stable Diffusion folders",
                sampler.name()
            )));
        }
        if request.guidance_rescale > 0.0 {
            return Err(GenerateError::Unsupported(
                "guidance rescale is for Stable Diffusion models; the house model takes plain guidance".into(),
            ));
        }
        if request.clip_skip != 1 {
            return Err(GenerateError::Unsupported(
                "clip skip is for Stable Diffusion models; the house model has no CLIP text encoder"
                    .into(),
            ));
        }
        if request.hires.is_some() {
            return Err(GenerateError::Unsupported(
                "a hires pass is for Stable Diffusion models; the house model draws at its one size and `--size` scales it by whole pixels".into(),
            ));
        }
        Ok(HouseModel::generate(self, request)?)
    }

    fn unknown_words(&self, prompt: &str) -> Vec<String> {
        self.tokenizer.unknown_words(prompt)
    }
}

/// An init image prepared for sampling.
struct StartImage {
    image: Tensor,
    mask: Option<Tensor>,
    strength: f64,
}

fn read(dir: &Path, file: &'static str) -> Result<Vec<u8>, HouseError> {
    let path = dir.join(file);
    std::fs::read(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            HouseError::MissingFile {
                dir: dir.to_path_buf(),
                file,
            }
        } else {
            HouseError::Io { path, source }
        }
    })
}

fn invalid(dir: &Path, file: &str, message: impl ToString) -> HouseError {
    HouseError::Invalid {
        path: dir.join(file),
        message: message.to_string(),
    }
}
