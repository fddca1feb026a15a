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

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use denoiser::Denoiser;
use image::RgbaImage;
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

/// One generation request.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateRequest {
    /// What to draw.
    pub prompt: String,
    /// What to steer away from (the unconditional branch of guidance); empty for none.
    pub negative_prompt: String,
    /// Image `i` starts from the noise of seed `seed + i`.
    pub seed: u64,
    /// Sampler steps.
    pub steps: usize,
    /// Classifier-free guidance scale; 1 turns guidance off.
    pub guidance: f64,
    /// Images to make in one batch.
    pub count: usize,
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
        }
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
    version: String,
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
        tracing::debug!(dir = %dir.display(), %version, "loaded house model");
        Ok(Self {
            config,
            tokenizer,
            networks,
            device: device.clone(),
            version,
        })
    }

    /// The model version: sha256 (hex) of `model.safetensors`.
    pub fn version(&self) -> &str {
        &self.version
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
        let per_image = self.config.channels * size * size;
        let noise: Vec<f32> = (0..n as u64)
            .flat_map(|i| pixels::gaussian(request.seed.wrapping_add(i), per_image))
            .collect();
        let noise = Tensor::from_vec(noise, (n, self.config.channels, size, size), &self.device)?;

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
        let sampler = FlowSampler {
            steps: request.steps.max(1),
            shift: 1.0,
        };
        let out = sampler.sample(noise, |x, t| {
            let rows = prompts.len();
            let x = if guided {
                Tensor::cat(&[x, x], 0)?
            } else {
                x.clone()
            };
            let t = Tensor::full(t as f32, rows, &self.device)?;
            let v = self.networks.denoiser.forward(&x, &t, &text)?;
            if guided {
                sampler::guide(&v.narrow(0, 0, n)?, &v.narrow(0, n, n)?, request.guidance)
            } else {
                Ok(v)
            }
        })?;
        Ok(pixels::from_tensor(&out)?)
    }
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
