//! Single-file checkpoints: the one `.safetensors` file per model that A1111, ComfyUI and most
//! model sites share, holding the UNet, the VAE and the text encoders in the original code's
//! names (see [`super::original_names`]). No config comes with them: the family is told by
//! which text encoders the file holds, and the architecture by its tensors' shapes, so that a
//! fine-tune of any size loads as diffusers would convert it.
//!
//! | Family | Text encoders | Heads | Scheduler | VAE scale |
//! |---|---|---|---|---|
//! | SD 1.x | OpenAI CLIP (`cond_stage_model.transformer.`) | 8 per block | PNDM, ε | 0.18215 |
//! | SD 2.x | OpenCLIP (`cond_stage_model.model.`), its last layer unused | 64 wide | DDIM, v or ε | 0.18215 |
//! | SDXL | OpenAI CLIP + OpenCLIP with projection (`conditioner.embedders.0/1.`) | 64 wide | Euler, ε | 0.13025 |
//! | SDXL refiner | OpenCLIP with projection (`conditioner.embedders.0.model.`) | 64 wide | Euler, ε | 0.13025 |
//!
//! Text encoders have heads 64 wide and OpenAI CLIP's tokenizer, padded with `<|endoftext|>`
//! (OpenAI CLIP) or `!` (OpenCLIP), as the families' diffusers folders have them.
//!
//! The prediction type is told as ComfyUI tells it: a `v_pred` marker tensor (which
//! v-prediction SDXL fine-tunes carry) means v; an SD 2.x UNet (not an inpainting one) predicts
//! v when the biases of its last attention block's first norm spread wider than 0.09 (ComfyUI's
//! test, meant to tell the 768 px v model from the ε ones, the 512 px base and SD-Turbo);
//! everything else predicts ε. A `ztsnr` marker (ComfyUI's) means the UNet was trained to zero
//! terminal SNR: the scheduler rescales its betas so (`rescale_betas_zero_snr`) and starts from
//! the last timestep (`trailing` spacing), as Lin et al. and diffusers advise; SD 1.x's then
//! samples with DDIM, since PNDM does not read the setting.
//!
//! A checkpoint shared without a VAE has its family's released VAE architecture as its VAE
//! config, so its spec reads (which LoRAs fit it, what it makes) before a VAE file is named
//! for it; its VAE weights are refused, saying to name one.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use super::SdError;
use super::original_names;
use super::source::PipelineSource;
use super::tokenizer::ClipTokenizer;
use super::weights::{Reshape, Store, Stored, Weights};

const UNET: &str = "model.diffusion_model.";
const VAE: &str = "first_stage_model.";

/// The model families a checkpoint can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Stable Diffusion 1.x (and its fine-tunes and inpainting models).
    Sd1,
    /// Stable Diffusion 2.x.
    Sd2,
    /// SDXL (and its fine-tunes, Turbo and inpainting models).
    Sdxl,
    /// SDXL's refiner.
    SdxlRefiner,
}

/// Which CLIP a text encoder is, which decides its names, activation and padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Clip {
    /// OpenAI's CLIP ViT-L/14 text tower, stored in transformers' names.
    OpenAi,
    /// OpenCLIP's text tower (ViT-H/14, ViT-bigG/14).
    OpenClip,
}

/// One text encoder of a family: its component, where the checkpoint keeps it, which CLIP.
struct Encoder {
    component: &'static str,
    prefix: &'static str,
    clip: Clip,
}

impl Family {
    /// The family whose text encoders `keys` hold, if any.
    fn of(keys: &[&str]) -> Option<Self> {
        let has = |prefix: &str| keys.iter().any(|k| k.starts_with(prefix));
        if has("conditioner.embedders.1.model.") {
            Some(Family::Sdxl)
        } else if has("conditioner.embedders.0.model.") {
            Some(Family::SdxlRefiner)
        } else if has("cond_stage_model.model.") {
            Some(Family::Sd2)
        } else if has("cond_stage_model.transformer.") {
            Some(Family::Sd1)
        } else {
            None
        }
    }

    fn encoders(self) -> Vec<Encoder> {
        let encoder = |component, prefix, clip| Encoder {
            component,
            prefix,
            clip,
        };
        match self {
            Family::Sd1 => vec![encoder(
                "text_encoder",
                "cond_stage_model.transformer.",
                Clip::OpenAi,
            )],
            Family::Sd2 => vec![encoder(
                "text_encoder",
                "cond_stage_model.model.",
                Clip::OpenClip,
            )],
            Family::Sdxl => vec![
                encoder(
                    "text_encoder",
                    "conditioner.embedders.0.transformer.",
                    Clip::OpenAi,
                ),
                encoder(
                    "text_encoder_2",
                    "conditioner.embedders.1.model.",
                    Clip::OpenClip,
                ),
            ],
            Family::SdxlRefiner => vec![encoder(
                "text_encoder_2",
                "conditioner.embedders.0.model.",
                Clip::OpenClip,
            )],
        }
    }

    fn xl(self) -> bool {
        matches!(self, Family::Sdxl | Family::SdxlRefiner)
    }

    /// The factor the family's VAE latents are scaled by for the UNet.
    fn latent_scaling_factor(self) -> f64 {
        if self.xl() { 0.13025 } else { 0.18215 }
    }

    /// The VAE architecture of the family's releases, which every VAE made for it shares:
    /// the config of a checkpoint shared without a VAE, so that its spec can be read (which
    /// LoRAs fit it, what sizes it makes) before a VAE file is named for it.
    fn released_vae(self) -> Value {
        json!({
            "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2,
            "latent_channels": 4,
            "use_quant_conv": true,
            "use_post_quant_conv": true,
            "scaling_factor": self.latent_scaling_factor(),
        })
    }

    /// The scheduler the family's diffusers folders ship, predicting v or ε, on the trained
    /// schedule or rescaled to zero terminal SNR; for an LCM-distilled UNet (`lcm`), LCM's
    /// own scheduler with the defaults its pipelines ship on the family's betas.
    fn scheduler(self, v: bool, zero_snr: bool, lcm: bool) -> Value {
        let mut config = json!({
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "num_train_timesteps": 1000,
            "steps_offset": 1,
            "set_alpha_to_one": false,
            "clip_sample": false,
            "prediction_type": if v { "v_prediction" } else { "epsilon" },
        });
        let fields = match self {
            _ if lcm => json!({
                "_class_name": "LCMScheduler",
                "set_alpha_to_one": true,
                "original_inference_steps": 50,
                "timestep_scaling": 10.0,
                "timestep_spacing": "leading",
            }),
            // PNDM does not read zero terminal SNR; DDIM, SD 2.x's, does.
            Family::Sd1 if zero_snr => json!({ "_class_name": "DDIMScheduler" }),
            Family::Sd1 => json!({ "_class_name": "PNDMScheduler", "skip_prk_steps": true }),
            Family::Sd2 => json!({ "_class_name": "DDIMScheduler" }),
            Family::Sdxl | Family::SdxlRefiner => json!({
                "_class_name": "EulerDiscreteScheduler",
                "interpolation_type": "linear",
                "timestep_spacing": "leading",
            }),
        };
        if let (Some(config), Some(fields)) = (config.as_object_mut(), fields.as_object()) {
            config.extend(fields.clone());
        }
        if zero_snr {
            config["rescale_betas_zero_snr"] = json!(true);
            config["timestep_spacing"] = json!("trailing");
        }
        config
    }
}

/// A single-file checkpoint, opened: its tensors memory-mapped, its family and architecture
/// read from their names and shapes.
pub struct Checkpoint {
    path: PathBuf,
    family: Family,
    tensors: Arc<Store>,
    /// The configs a diffusers folder of the same model would hold, by relative path.
    documents: HashMap<String, Value>,
    /// Each component's tensors by diffusers name.
    names: HashMap<&'static str, HashMap<String, Stored>>,
    /// Each tokenizer's padding token.
    pads: HashMap<String, &'static str>,
}

/// Whether `path` is a single-file checkpoint: a `.safetensors` file whose header names UNet
/// tensors in the original code's names (the header alone is read), or a PyTorch pickle
/// (`.ckpt`) whose index does (its tensors are not read).
pub fn is_checkpoint(path: &Path) -> bool {
    path.is_file()
        && super::weights::stored_names(path)
            .iter()
            .any(|name| name.starts_with(UNET))
}

impl Checkpoint {
    /// Opens the checkpoint at `path`, telling its family and architecture; an error names
    /// the file and what it lacks or what does not fit.
    pub fn open(path: &Path) -> Result<Self, SdError> {
        let invalid = |message: String| SdError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let tensors = Store::open(path)?;
        let shapes = tensors.shapes();
        let keys: Vec<&str> = shapes.keys().map(String::as_str).collect();
        if !keys.iter().any(|k| k.starts_with(UNET)) {
            return Err(invalid(format!(
                "no `{UNET}…` tensors: not a Stable Diffusion checkpoint (a LoRA is named in a recipe's `loras`)"
            )));
        }
        let family = Family::of(&keys).ok_or_else(|| {
            invalid("no text encoder tensors (`cond_stage_model.…` or `conditioner.embedders.…`): a UNet alone cannot be run".into())
        })?;
        let architecture = Architecture {
            shapes: &shapes,
            path,
        };
        let mut documents = HashMap::new();
        let mut names = HashMap::new();
        let mut pads = HashMap::new();
        let mut index = json!({
            "_class_name": if family.xl() { "StableDiffusionXLPipeline" } else { "StableDiffusionPipeline" },
            "force_zeros_for_empty_prompt": family == Family::Sdxl,
            "requires_aesthetics_score": family == Family::SdxlRefiner,
        });
        let mut pooled_dim = None;
        for encoder in family.encoders() {
            let (config, map) = architecture.text_encoder(&encoder, family)?;
            if encoder.component == "text_encoder_2" {
                pooled_dim = config.get("projection_dim").and_then(Value::as_u64);
            }
            documents.insert(format!("{}/config.json", encoder.component), config);
            names.insert(encoder.component, map);
            let tokenizer = encoder.component.replace("text_encoder", "tokenizer");
            index[encoder.component] = json!(["transformers", "CLIPTextModel"]);
            index[tokenizer.as_str()] = json!(["transformers", "CLIPTokenizer"]);
            let pad = match encoder.clip {
                Clip::OpenAi => "<|endoftext|>",
                Clip::OpenClip => "!",
            };
            pads.insert(tokenizer, pad);
        }
        let (unet, layers) = architecture.unet(family, pooled_dim)?;
        documents.insert("unet/config.json".into(), unet);
        names.insert("unet", architecture.unet_names(layers));
        if keys.iter().any(|k| k.starts_with(VAE)) {
            let (vae, vae_names) = vae_of(&shapes, VAE, family.latent_scaling_factor(), path)?;
            documents.insert("vae/config.json".into(), vae);
            names.insert("vae", vae_names);
        } else {
            documents.insert("vae/config.json".into(), family.released_vae());
        }
        let v = predicts_v(&tensors, family, &shapes).map_err(|source| SdError::Weights {
            path: path.to_path_buf(),
            source,
        })?;
        documents.insert(
            "scheduler/scheduler_config.json".into(),
            family.scheduler(
                v,
                shapes.contains_key(ZERO_SNR_MARKER),
                shapes.contains_key(GUIDANCE_EMBEDDING),
            ),
        );
        documents.insert(super::folder::MODEL_INDEX.into(), index);
        tracing::debug!(path = %path.display(), ?family, "opened a single-file checkpoint");
        Ok(Self {
            path: path.to_path_buf(),
            family,
            tensors: Arc::new(tensors),
            documents,
            names,
            pads,
        })
    }

    /// The family the checkpoint was told to be.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Whether the file holds a VAE (many are shared without one, to be used with a VAE file
    /// the model's page names).
    pub fn has_vae(&self) -> bool {
        self.names.contains_key("vae")
    }

    /// Refuses `what` of a checkpoint without a VAE, saying how to name one.
    fn no_vae(&self, what: &str) -> SdError {
        SdError::Invalid {
            path: self.path.clone(),
            message: format!(
                "holds no VAE (`{VAE}…` tensors), so it has no {what}: name a VAE file for it (a recipe's `vae`, `generate --vae`), as the model's page advises"
            ),
        }
    }
}

impl PipelineSource for Checkpoint {
    fn json(&self, relative: &str) -> Result<Value, SdError> {
        self.documents
            .get(relative)
            .cloned()
            .ok_or_else(|| SdError::MissingFile {
                path: self.path(relative),
            })
    }

    fn path(&self, relative: &str) -> PathBuf {
        PathBuf::from(format!(
            "{} ({relative}, as its weights imply)",
            self.path.display()
        ))
    }

    fn tokenizer(&self, component: &str) -> Result<ClipTokenizer, SdError> {
        let pad = self
            .pads
            .get(component)
            .ok_or_else(|| SdError::MissingFile {
                path: self.path(component),
            })?;
        ClipTokenizer::builtin(pad)
    }

    fn weights(&self, component: &str) -> Result<Weights, SdError> {
        if component == "vae" && !self.has_vae() {
            return Err(self.no_vae("VAE weights"));
        }
        let names = self
            .names
            .get(component)
            .ok_or_else(|| SdError::MissingFile {
                path: self.path(component),
            })?;
        Ok(Weights::renamed(
            Arc::clone(&self.tensors),
            &self.path,
            names.clone(),
        ))
    }

    /// The sha256 (hex) of the file, as model sites list it.
    fn weights_sha256(&self) -> Result<String, SdError> {
        super::folder::file_sha256(&self.path)
    }

    fn latent_scaling_factor(&self) -> Result<f64, SdError> {
        Ok(self.family.latent_scaling_factor())
    }
}

/// Marks a v-prediction checkpoint (an empty tensor, as v-prediction SDXL fine-tunes carry it).
const V_PRED_MARKER: &str = "v_pred";

/// Marks a checkpoint trained to zero terminal SNR (ComfyUI's name for it).
const ZERO_SNR_MARKER: &str = "ztsnr";

/// An LCM-distilled UNet's guidance-scale projection (`time_cond_proj_dim` wide), in the name
/// diffusers' conversion to a single file keeps.
const GUIDANCE_EMBEDDING: &str = "model.diffusion_model.time_embedding.cond_proj.weight";

/// The SD 2.x norm whose biases tell v-prediction from ε (ComfyUI's test).
const SD2_PREDICTION_PROBE: &str =
    "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias";

/// Whether the checkpoint's UNet predicts v (see the module docs).
fn predicts_v(
    tensors: &Store,
    family: Family,
    shapes: &HashMap<String, Vec<usize>>,
) -> candle_core::Result<bool> {
    if shapes.contains_key(V_PRED_MARKER) {
        return Ok(true);
    }
    let inpainting = shapes
        .get(&format!("{UNET}input_blocks.0.0.weight"))
        .and_then(|shape| shape.get(1))
        .is_some_and(|&channels| channels != 4);
    if family != Family::Sd2 || inpainting || !shapes.contains_key(SD2_PREDICTION_PROBE) {
        return Ok(false);
    }
    spread_is_v_like(&tensors.load(SD2_PREDICTION_PROBE, &candle_core::Device::Cpu)?)
}

/// Whether values spread wider (population standard deviation) than ComfyUI's 0.09.
fn spread_is_v_like(values: &candle_core::Tensor) -> candle_core::Result<bool> {
    let values = values
        .to_dtype(candle_core::DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    Ok(variance.sqrt() > 0.09)
}

/// The architecture told by a checkpoint's tensor shapes.
struct Architecture<'a> {
    shapes: &'a HashMap<String, Vec<usize>>,
    path: &'a Path,
}

impl Architecture<'_> {
    fn invalid(&self, message: String) -> SdError {
        SdError::Invalid {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn shape(&self, name: &str) -> Result<&[usize], SdError> {
        self.shapes
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| self.invalid(format!("`{name}` is missing")))
    }

    fn dim(&self, name: &str, axis: usize) -> Result<usize, SdError> {
        self.shape(name)?
            .get(axis)
            .copied()
            .ok_or_else(|| self.invalid(format!("`{name}` has no axis {axis}")))
    }

    /// The distinct numbers `n` of the names `{prefix}{n}.…`.
    fn indices(&self, prefix: &str) -> BTreeSet<usize> {
        self.shapes
            .keys()
            .filter_map(|k| k.strip_prefix(prefix)?.split_once('.')?.0.parse().ok())
            .collect()
    }

    /// The config and the diffusers names of a text encoder.
    fn text_encoder(
        &self,
        encoder: &Encoder,
        family: Family,
    ) -> Result<(Value, HashMap<String, Stored>), SdError> {
        let mut map = HashMap::new();
        for key in self.shapes.keys() {
            let Some(rest) = key.strip_prefix(encoder.prefix) else {
                continue;
            };
            let renamed = match encoder.clip {
                Clip::OpenAi => vec![(original_names::openai_clip(rest), Reshape::Same)],
                Clip::OpenClip => original_names::open_clip(rest),
            };
            for (name, reshape) in renamed {
                map.insert(
                    name,
                    Stored {
                        key: key.clone(),
                        reshape,
                    },
                );
            }
        }
        // The width along `axis` of a tensor, by its transformers name.
        let dim = |name: &str, axis: usize| -> Result<usize, SdError> {
            let stored = map.get(name).ok_or_else(|| {
                self.invalid(format!(
                    "`{}` has no `{name}` (in transformers' names)",
                    encoder.prefix
                ))
            })?;
            let shape = stored.reshape.shape(self.shape(&stored.key)?);
            shape.get(axis).copied().ok_or_else(|| {
                self.invalid(format!("`{}` ({name}) has no axis {axis}", stored.key))
            })
        };
        let embedding = "text_model.embeddings.token_embedding.weight";
        let (vocab, hidden) = (dim(embedding, 0)?, dim(embedding, 1)?);
        let positions = dim("text_model.embeddings.position_embedding.weight", 0)?;
        let intermediate = dim("text_model.encoder.layers.0.mlp.fc1.weight", 0)?;
        let mut layers = map
            .keys()
            .filter_map(|k| {
                k.strip_prefix("text_model.encoder.layers.")?
                    .split_once('.')?
                    .0
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |last| last + 1);
        // SD 2.x conditions on the penultimate layer, after the final norm: diffusers' folder
        // leaves the last layer out.
        if family == Family::Sd2 {
            layers = layers.saturating_sub(1);
        }
        if hidden == 0 || !hidden.is_multiple_of(64) {
            return Err(self.invalid(format!(
                "`{}`: {hidden}-wide states do not split into 64-wide heads",
                encoder.prefix
            )));
        }
        let projection = match map.contains_key("text_projection.weight") {
            true => dim("text_projection.weight", 0)?,
            false => hidden,
        };
        let config = json!({
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": intermediate,
            "num_hidden_layers": layers,
            "num_attention_heads": hidden / 64,
            "max_position_embeddings": positions,
            "hidden_act": match encoder.clip { Clip::OpenAi => "quick_gelu", Clip::OpenClip => "gelu" },
            "projection_dim": projection,
            "eos_token_id": vocab.saturating_sub(1),
        });
        Ok((config, map))
    }

    /// The UNet's config, and its layers per block.
    fn unet(&self, family: Family, pooled_dim: Option<u64>) -> Result<(Value, usize), SdError> {
        let block = |i: usize| format!("{UNET}input_blocks.{i}.");
        let inputs = self.indices(&format!("{UNET}input_blocks."));
        let last = inputs.iter().next_back().copied().unwrap_or(0);
        let layers = inputs
            .iter()
            .find(|&&i| {
                self.shapes
                    .contains_key(&format!("{}0.op.weight", block(i)))
            })
            .map_or(last, |&first_down| first_down.saturating_sub(1));
        if layers == 0 {
            return Err(self.invalid(format!("`{UNET}input_blocks` hold no layers")));
        }
        let levels = (last + 1) / (layers + 1);
        let mid_depth = self
            .indices(&format!("{UNET}middle_block.1.transformer_blocks."))
            .len();
        let mut channels = Vec::with_capacity(levels);
        let mut depths = Vec::with_capacity(levels);
        let mut attention = Vec::with_capacity(levels);
        for level in 0..levels {
            let first = block(1 + level * (layers + 1));
            channels.push(self.dim(&format!("{first}0.out_layers.3.weight"), 0)?);
            let depth = self.indices(&format!("{first}1.transformer_blocks.")).len();
            attention.push(depth > 0);
            depths.push(if depth > 0 { depth } else { mid_depth });
        }
        if let (Some(true), Some(&depth)) = (attention.last(), depths.last())
            && depth != mid_depth
        {
            return Err(SdError::Unsupported {
                path: self.path.to_path_buf(),
                message: format!(
                    "the deepest blocks have {depth} transformer layers but the middle block {mid_depth}"
                ),
            });
        }
        let heads = match family {
            Family::Sd1 => json!(8),
            _ => json!(channels.iter().map(|c| c / 64).collect::<Vec<_>>()),
        };
        let kind = |cross: bool, cross_name: &str, plain: &str| {
            (if cross { cross_name } else { plain }).to_string()
        };
        let down: Vec<String> = attention
            .iter()
            .map(|&a| kind(a, "CrossAttnDownBlock2D", "DownBlock2D"))
            .collect();
        let up: Vec<String> = attention
            .iter()
            .rev()
            .map(|&a| kind(a, "CrossAttnUpBlock2D", "UpBlock2D"))
            .collect();
        let context = format!("{UNET}middle_block.1.transformer_blocks.0.attn2.to_k.weight");
        let conv_in = format!("{UNET}input_blocks.0.0.weight");
        let mut config = json!({
            "in_channels": self.dim(&conv_in, 1)?,
            "out_channels": self.dim(&format!("{UNET}out.2.weight"), 0)?,
            "sample_size": match family { Family::Sd1 => 64, Family::Sd2 => 96, _ => 128 },
            "block_out_channels": channels,
            "down_block_types": down,
            "up_block_types": up,
            "layers_per_block": layers,
            "cross_attention_dim": self.dim(&context, 1)?,
            "attention_head_dim": heads,
            "transformer_layers_per_block": depths,
            "use_linear_projection": self.shape(&format!("{UNET}middle_block.1.proj_in.weight"))?.len() == 2,
        });
        let label = format!("{UNET}label_emb.0.0.weight");
        if self.shapes.contains_key(&label) {
            let input_dim = self.dim(&label, 1)?;
            let ids = if family == Family::SdxlRefiner { 5 } else { 6 };
            let pooled = pooled_dim.unwrap_or(0) as usize;
            let per_id = input_dim.saturating_sub(pooled) / ids;
            if pooled == 0 || per_id == 0 || pooled + ids * per_id != input_dim {
                return Err(self.invalid(format!(
                    "`{label}` takes {input_dim} values, which a {pooled}-wide pooled prompt and {ids} time ids do not make"
                )));
            }
            config["addition_embed_type"] = json!("text_time");
            config["addition_time_embed_dim"] = json!(per_id);
            config["projection_class_embeddings_input_dim"] = json!(input_dim);
        }
        if self.shapes.contains_key(GUIDANCE_EMBEDDING) {
            config["time_cond_proj_dim"] = json!(self.dim(GUIDANCE_EMBEDDING, 1)?);
        }
        Ok((config, layers))
    }

    fn unet_names(&self, layers: usize) -> HashMap<String, Stored> {
        self.shapes
            .keys()
            .filter_map(|key| {
                let name = original_names::unet(key.strip_prefix(UNET)?, layers)?;
                Some((
                    name,
                    Stored {
                        key: key.clone(),
                        reshape: Reshape::Same,
                    },
                ))
            })
            .collect()
    }
}

/// The config and diffusers names of the VAE whose tensors are under `prefix` (LDM names:
/// `encoder.down.0.block.0.…`), its latents scaled by `scaling_factor` (a VAE file does not
/// say; its family does). `path` names the file in errors.
pub(super) fn vae_of(
    shapes: &HashMap<String, Vec<usize>>,
    prefix: &str,
    scaling_factor: f64,
    path: &Path,
) -> Result<(Value, HashMap<String, Stored>), SdError> {
    let architecture = Architecture { shapes, path };
    let levels = architecture
        .indices(&format!("{prefix}encoder.down."))
        .len();
    let channels = (0..levels)
        .map(|i| architecture.dim(&format!("{prefix}encoder.down.{i}.block.0.conv2.weight"), 0))
        .collect::<Result<Vec<_>, _>>()?;
    let names = shapes
        .keys()
        .filter_map(|key| {
            let (name, reshape) = original_names::vae(key.strip_prefix(prefix)?, levels)?;
            Some((
                name,
                Stored {
                    key: key.clone(),
                    reshape,
                },
            ))
        })
        .collect();
    let has = |name: &str| shapes.contains_key(&format!("{prefix}{name}"));
    let config = json!({
        "block_out_channels": channels,
        "layers_per_block": architecture.indices(&format!("{prefix}encoder.down.0.block.")).len(),
        "latent_channels": architecture.dim(&format!("{prefix}decoder.conv_in.weight"), 1)?,
        "use_quant_conv": has("quant_conv.weight"),
        "use_post_quant_conv": has("post_quant_conv.weight"),
        "scaling_factor": scaling_factor,
    });
    Ok((config, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_checkpoints_get_their_familys_configs() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd/checkpoints");
        for (name, family, heads, scheduler) in [
            ("tiny-sd15", Family::Sd1, json!(8), "PNDMScheduler"),
            (
                "tiny-sdxl",
                Family::Sdxl,
                json!([1, 1]),
                "EulerDiscreteScheduler",
            ),
        ] {
            let checkpoint = Checkpoint::open(&dir.join(format!("{name}.safetensors"))).unwrap();
            assert_eq!(checkpoint.family(), family);
            let unet = checkpoint.json("unet/config.json").unwrap();
            assert_eq!(unet["attention_head_dim"], heads, "{name}");
            let schedule = checkpoint.json("scheduler/scheduler_config.json").unwrap();
            assert_eq!(schedule["_class_name"], scheduler, "{name}");
            let missing = checkpoint
                .json("feature_extractor/config.json")
                .unwrap_err();
            assert!(missing.to_string().contains(name), "{missing}");
        }
    }

    #[test]
    fn a_wide_spread_of_the_sd2_probe_means_v() {
        let spread = |scale: f64| {
            let values: Vec<f32> = (0..320)
                .map(|i| (scale * if i % 2 == 0 { 1.0 } else { -1.0 }) as f32)
                .collect();
            candle_core::Tensor::new(values, &candle_core::Device::Cpu).unwrap()
        };
        assert!(spread_is_v_like(&spread(0.2)).unwrap());
        assert!(!spread_is_v_like(&spread(0.05)).unwrap());
    }

    #[test]
    fn the_family_is_told_by_the_text_encoders() {
        let family = |keys: &[&str]| Family::of(keys);
        assert_eq!(
            family(&["cond_stage_model.transformer.text_model.final_layer_norm.weight"]),
            Some(Family::Sd1)
        );
        assert_eq!(
            family(&["cond_stage_model.model.ln_final.weight"]),
            Some(Family::Sd2)
        );
        assert_eq!(
            family(&[
                "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
                "conditioner.embedders.1.model.ln_final.weight",
            ]),
            Some(Family::Sdxl)
        );
        assert_eq!(
            family(&["conditioner.embedders.0.model.ln_final.weight"]),
            Some(Family::SdxlRefiner)
        );
        assert_eq!(family(&["model.diffusion_model.out.2.weight"]), None);
    }
}
