//! The architecture of a pipeline, read from its folder's `config.json` files (never assumed
//! per version): the UNet, the VAE, the CLIP text encoder and the scheduler. What candle's
//! blocks cannot run (SDXL's added conditioning, LCM's time conditioning, …) is refused with
//! the field that asks for it.

use std::path::{Path, PathBuf};

use candle_transformers::models::stable_diffusion::{unet_2d, vae};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::SdError;
use super::scheduler::SchedulerConfig;
use super::source::PipelineSource;
use super::text_encoder::ClipConfig;

/// Reads and parses a JSON file, naming it in any error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, SdError> {
    let bytes = std::fs::read(path).map_err(|source| SdError::io(path, source))?;
    serde_json::from_slice(&python_tokens_as_null(&bytes)).map_err(|e| SdError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Parses a JSON document read from `path` (named in any error).
pub fn parse<T: DeserializeOwned>(json: serde_json::Value, path: &Path) -> Result<T, SdError> {
    serde_json::from_value(json).map_err(|e| SdError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// diffusers writes its configs with Python's `json`, which spells non-finite floats as bare
/// `NaN`, `Infinity` and `-Infinity` (DPM-Solver's `lambda_min_clipped`, for one): those tokens,
/// outside strings, become `null` (the field's default).
fn python_tokens_as_null(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if in_string {
            out.push(byte);
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        let token = [&b"-Infinity"[..], b"Infinity", b"NaN"]
            .into_iter()
            .find(|token| bytes[i..].starts_with(token));
        match token {
            Some(token) => {
                out.extend_from_slice(b"null");
                i += token.len();
            }
            None => {
                in_string = byte == b'"';
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// A number or one number per block (`attention_head_dim`, `transformer_layers_per_block`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    fn get(&self, i: usize) -> Option<usize> {
        match self {
            PerBlock::One(n) => Some(*n),
            PerBlock::Each(v) => v.get(i).copied(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct UNetJson {
    in_channels: usize,
    out_channels: usize,
    sample_size: usize,
    block_out_channels: Vec<usize>,
    down_block_types: Vec<String>,
    up_block_types: Vec<String>,
    layers_per_block: usize,
    cross_attention_dim: usize,
    attention_head_dim: PerBlock,
    #[serde(default)]
    num_attention_heads: Option<PerBlock>,
    #[serde(default = "one")]
    transformer_layers_per_block: PerBlock,
    #[serde(default = "one_usize")]
    downsample_padding: usize,
    #[serde(default = "one_f64")]
    mid_block_scale_factor: f64,
    #[serde(default = "groups")]
    norm_num_groups: usize,
    #[serde(default = "eps")]
    norm_eps: f64,
    #[serde(default)]
    center_input_sample: bool,
    #[serde(default = "yes")]
    flip_sin_to_cos: bool,
    #[serde(default)]
    freq_shift: f64,
    #[serde(default)]
    use_linear_projection: bool,
    #[serde(default)]
    addition_embed_type: Option<String>,
    #[serde(default)]
    addition_time_embed_dim: Option<usize>,
    #[serde(default)]
    projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default)]
    class_embed_type: Option<String>,
    #[serde(default)]
    time_cond_proj_dim: Option<usize>,
    #[serde(default)]
    mid_block_type: Option<String>,
    #[serde(default)]
    resnet_time_scale_shift: Option<String>,
    #[serde(default)]
    act_fn: Option<String>,
    #[serde(default)]
    only_cross_attention: serde_json::Value,
    #[serde(default)]
    dual_cross_attention: bool,
}

fn one() -> PerBlock {
    PerBlock::One(1)
}
fn one_usize() -> usize {
    1
}
fn one_f64() -> f64 {
    1.0
}
fn groups() -> usize {
    32
}
fn eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

/// SDXL's added conditioning: the pooled prompt and the time ids, each id embedded like a
/// timestep. The base model's six ids are the original size, the crop origin and the target
/// size; the refiner's five (`requires_aesthetics_score`) end with an aesthetic score instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddedSpec {
    /// Width of each id's sinusoidal embedding (`addition_time_embed_dim`).
    pub time_embed_dim: usize,
    /// Pooled prompt width + `time_ids` × `time_embed_dim`
    /// (`projection_class_embeddings_input_dim`).
    pub input_dim: usize,
    /// How many time ids: 6, or 5 with an aesthetic score.
    pub time_ids: usize,
}

impl AddedSpec {
    /// Width of the pooled prompt embedding the UNet expects.
    pub fn pooled_dim(&self) -> usize {
        self.input_dim
            .saturating_sub(self.time_ids * self.time_embed_dim)
    }

    /// Whether the last time id is an aesthetic score (SDXL's refiner).
    pub fn aesthetic_score(&self) -> bool {
        self.time_ids == 5
    }
}

/// The UNet as its config describes it.
#[derive(Clone, Debug)]
pub struct UNetSpec {
    /// Blocks and hyper-parameters.
    pub config: unet_2d::UNet2DConditionModelConfig,
    /// Latent channels in: 4, or 9 for inpainting UNets (latents, mask, masked image).
    pub in_channels: usize,
    /// Latent side the model was trained at.
    pub sample_size: usize,
    /// SDXL's added conditioning, when the UNet has it.
    pub added: Option<AddedSpec>,
    /// LCM-distilled UNets: the width of the guidance-scale embedding added to the timestep's
    /// (`time_cond_proj_dim`); such a UNet is guided by it, not by a second, unconditioned batch.
    pub guidance_embed_dim: Option<usize>,
    /// Transformer layers of the middle block: the last block's
    /// `transformer_layers_per_block`, attention or not (SDXL's refiner ends on plain blocks).
    pub mid_depth: usize,
}

impl UNetSpec {
    /// The widths of what its attentions make keys and values from, sorted: each
    /// transformer's channels (self-attention) and the text context (cross-attention).
    pub fn attention_context_widths(&self) -> Vec<usize> {
        let blocks = &self.config.blocks;
        let mut widths: Vec<usize> = blocks
            .iter()
            .filter(|block| block.use_cross_attn.is_some())
            .map(|block| block.out_channels)
            .chain(
                blocks
                    .last()
                    .filter(|_| self.mid_depth > 0)
                    .map(|block| block.out_channels),
            )
            .collect();
        if !widths.is_empty() {
            widths.push(self.config.cross_attention_dim);
        }
        widths.sort_unstable();
        widths.dedup();
        widths
    }
}

/// Parses `unet/config.json` (`path` names it in errors).
pub fn unet(json: serde_json::Value, path: &Path) -> Result<UNetSpec, SdError> {
    let json: UNetJson = parse(json, path)?;
    let unsupported = |field: &str, value: &dyn std::fmt::Debug| SdError::Unsupported {
        path: path.to_path_buf(),
        message: format!("`{field}` = {value:?} is not supported yet"),
    };
    let invalid = |message: String| SdError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let added = match json.addition_embed_type.as_deref() {
        None => None,
        Some("text_time") => match (
            json.addition_time_embed_dim,
            json.projection_class_embeddings_input_dim,
        ) {
            (Some(time_embed_dim), Some(input_dim)) if input_dim > 5 * time_embed_dim => {
                Some(AddedSpec {
                    time_embed_dim,
                    input_dim,
                    time_ids: 6,
                })
            }
            _ => {
                return Err(invalid(
                    "`addition_embed_type` \"text_time\" needs `addition_time_embed_dim` and a larger `projection_class_embeddings_input_dim`".into(),
                ));
            }
        },
        Some(kind) => return Err(unsupported("addition_embed_type", &kind)),
    };
    if let Some(kind) = &json.class_embed_type {
        return Err(unsupported("class_embed_type", kind));
    }
    if let Some(kind) = json
        .mid_block_type
        .as_ref()
        .filter(|k| *k != "UNetMidBlock2DCrossAttn")
    {
        return Err(unsupported("mid_block_type", kind));
    }
    if let Some(shift) = json
        .resnet_time_scale_shift
        .as_ref()
        .filter(|s| *s != "default")
    {
        return Err(unsupported("resnet_time_scale_shift", shift));
    }
    if let Some(act) = json.act_fn.as_ref().filter(|a| *a != "silu") {
        return Err(unsupported("act_fn", act));
    }
    if json.only_cross_attention.as_bool() == Some(true) || json.only_cross_attention.is_array() {
        return Err(unsupported(
            "only_cross_attention",
            &json.only_cross_attention,
        ));
    }
    if json.dual_cross_attention {
        return Err(unsupported("dual_cross_attention", &true));
    }
    if json.out_channels != 4 || !matches!(json.in_channels, 4 | 9) {
        return Err(invalid(format!(
            "`in_channels` {} / `out_channels` {}: a Stable Diffusion UNet takes 4 (or 9 for inpainting) and gives 4",
            json.in_channels, json.out_channels
        )));
    }
    if json.norm_num_groups != 32 {
        return Err(unsupported("norm_num_groups", &json.norm_num_groups));
    }
    let n = json.block_out_channels.len();
    if n == 0 || json.down_block_types.len() != n || json.up_block_types.len() != n {
        return Err(invalid(format!(
            "{n} `block_out_channels` but {} `down_block_types` and {} `up_block_types`",
            json.down_block_types.len(),
            json.up_block_types.len()
        )));
    }
    let heads = json
        .num_attention_heads
        .as_ref()
        .unwrap_or(&json.attention_head_dim);
    let mut blocks = Vec::with_capacity(n);
    for (i, kind) in json.down_block_types.iter().enumerate() {
        let cross = match kind.as_str() {
            "CrossAttnDownBlock2D" => true,
            "DownBlock2D" => false,
            other => return Err(unsupported(&format!("down_block_types[{i}]"), &other)),
        };
        let up = &json.up_block_types[n - 1 - i];
        let up_cross = match up.as_str() {
            "CrossAttnUpBlock2D" => true,
            "UpBlock2D" => false,
            other => {
                return Err(unsupported(
                    &format!("up_block_types[{}]", n - 1 - i),
                    &other,
                ));
            }
        };
        if up_cross != cross {
            return Err(invalid(format!(
                "`up_block_types[{}]` is {up} but `down_block_types[{i}]` is {kind}: the up blocks must mirror the down blocks",
                n - 1 - i
            )));
        }
        let missing = |field: &str| invalid(format!("`{field}` has no entry for block {i}"));
        let attention_head_dim = heads.get(i).ok_or_else(|| missing("attention_head_dim"))?;
        let layers = json
            .transformer_layers_per_block
            .get(i)
            .ok_or_else(|| missing("transformer_layers_per_block"))?;
        let out_channels = json.block_out_channels[i];
        if attention_head_dim == 0 || !out_channels.is_multiple_of(attention_head_dim) {
            return Err(invalid(format!(
                "block {i}: {out_channels} channels do not split into {attention_head_dim} heads"
            )));
        }
        if !out_channels.is_multiple_of(json.norm_num_groups) {
            return Err(invalid(format!(
                "block {i}: {out_channels} channels do not split into {} norm groups",
                json.norm_num_groups
            )));
        }
        blocks.push(unet_2d::BlockConfig {
            out_channels,
            use_cross_attn: cross.then_some(layers),
            attention_head_dim,
        });
    }
    let mid_depth = json
        .transformer_layers_per_block
        .get(n - 1)
        .ok_or_else(|| {
            invalid(format!(
                "`transformer_layers_per_block` has no entry for block {}",
                n - 1
            ))
        })?;
    Ok(UNetSpec {
        config: unet_2d::UNet2DConditionModelConfig {
            center_input_sample: json.center_input_sample,
            flip_sin_to_cos: json.flip_sin_to_cos,
            freq_shift: json.freq_shift,
            blocks,
            layers_per_block: json.layers_per_block,
            downsample_padding: json.downsample_padding,
            mid_block_scale_factor: json.mid_block_scale_factor,
            norm_num_groups: json.norm_num_groups,
            norm_eps: json.norm_eps,
            cross_attention_dim: json.cross_attention_dim,
            sliced_attention_size: None,
            use_linear_projection: json.use_linear_projection,
        },
        in_channels: json.in_channels,
        sample_size: json.sample_size,
        added,
        guidance_embed_dim: json.time_cond_proj_dim,
        mid_depth,
    })
}

#[derive(Debug, Deserialize)]
struct VaeJson {
    #[serde(default = "three")]
    in_channels: usize,
    #[serde(default = "three")]
    out_channels: usize,
    block_out_channels: Vec<usize>,
    #[serde(default = "one_usize")]
    layers_per_block: usize,
    #[serde(default = "four")]
    latent_channels: usize,
    #[serde(default = "groups")]
    norm_num_groups: usize,
    #[serde(default = "yes")]
    use_quant_conv: bool,
    #[serde(default = "yes")]
    use_post_quant_conv: bool,
    #[serde(default = "sd_scaling")]
    scaling_factor: f64,
    #[serde(default)]
    shift_factor: Option<f64>,
    #[serde(default = "yes")]
    mid_block_add_attention: bool,
}

fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn sd_scaling() -> f64 {
    0.18215
}

/// `AutoencoderTiny`'s `config.json` (TAESD).
#[derive(Deserialize)]
struct TinyVaeJson {
    #[serde(default = "three")]
    in_channels: usize,
    #[serde(default = "three")]
    out_channels: usize,
    encoder_block_out_channels: Vec<usize>,
    decoder_block_out_channels: Vec<usize>,
    num_encoder_blocks: Vec<usize>,
    num_decoder_blocks: Vec<usize>,
    #[serde(default = "relu")]
    act_fn: String,
    #[serde(default = "nearest")]
    upsample_fn: String,
    #[serde(default = "four")]
    latent_channels: usize,
    #[serde(default = "two")]
    upsampling_scaling_factor: usize,
    #[serde(default = "one_f64")]
    scaling_factor: f64,
    #[serde(default)]
    shift_factor: f64,
}

fn relu() -> String {
    "relu".into()
}
fn nearest() -> String {
    "nearest".into()
}
fn two() -> usize {
    2
}

/// The VAE as Autonomy builds it.
#[derive(Clone, Debug)]
pub struct VaeSpec {
    /// Which autoencoder, and its blocks.
    pub kind: VaeKind,
    /// Latents are scaled by this before the UNet sees them.
    pub scaling_factor: f64,
}

/// Which autoencoder a VAE is.
#[derive(Clone, Debug)]
pub enum VaeKind {
    /// `AutoencoderKL`: Stable Diffusion's own VAE.
    Kl(vae::AutoEncoderKLConfig),
    /// `AutoencoderTiny`: TAESD, a distilled stand-in for it with a tenth of the work.
    Tiny(TinyVaeConfig),
}

/// The blocks of an `AutoencoderTiny` (ReLU, nearest-neighbour upsampling by 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TinyVaeConfig {
    /// Each encoder level's width; every level after the first halves the side.
    pub encoder_channels: Vec<usize>,
    /// Residual blocks per encoder level.
    pub encoder_blocks: Vec<usize>,
    /// Each decoder level's width; every level but the last doubles the side.
    pub decoder_channels: Vec<usize>,
    /// Residual blocks per decoder level.
    pub decoder_blocks: Vec<usize>,
    /// Latent channels.
    pub latent_channels: usize,
}

impl VaeSpec {
    /// Pixels per latent along a side (8 for every released Stable Diffusion).
    pub fn downscale(&self) -> usize {
        let levels = match &self.kind {
            VaeKind::Kl(config) => config.block_out_channels.len(),
            VaeKind::Tiny(config) => config.encoder_channels.len(),
        };
        1 << levels.saturating_sub(1)
    }

    /// Channels of the latents.
    pub fn latent_channels(&self) -> usize {
        match &self.kind {
            VaeKind::Kl(config) => config.latent_channels,
            VaeKind::Tiny(config) => config.latent_channels,
        }
    }
}

/// Refuses a VAE (its config at `path`) that does not take and give RGB.
fn rgb_only(in_channels: usize, out_channels: usize, path: &Path) -> Result<(), SdError> {
    if in_channels == 3 && out_channels == 3 {
        return Ok(());
    }
    Err(SdError::Unsupported {
        path: path.to_path_buf(),
        message: format!(
            "`in_channels` {in_channels} / `out_channels` {out_channels}: only RGB VAEs are supported"
        ),
    })
}

/// Parses an `AutoencoderTiny` config (`path` names it in errors).
fn tiny_vae(json: serde_json::Value, path: &Path) -> Result<VaeSpec, SdError> {
    let json: TinyVaeJson = parse(json, path)?;
    let fail = |message: String| SdError::Unsupported {
        path: path.to_path_buf(),
        message,
    };
    rgb_only(json.in_channels, json.out_channels, path)?;
    if json.act_fn != "relu" || json.upsample_fn != "nearest" || json.upsampling_scaling_factor != 2
    {
        return Err(fail(format!(
            "`act_fn` {:?}, `upsample_fn` {:?}, `upsampling_scaling_factor` {}: Autonomy reads TAESD's relu, nearest and 2",
            json.act_fn, json.upsample_fn, json.upsampling_scaling_factor
        )));
    }
    if json.shift_factor != 0.0 {
        return Err(fail(format!(
            "`shift_factor` = {} is not supported yet",
            json.shift_factor
        )));
    }
    let levels = json.encoder_block_out_channels.len();
    if levels == 0
        || json.num_encoder_blocks.len() != levels
        || json.decoder_block_out_channels.len() != levels
        || json.num_decoder_blocks.len() != levels
    {
        return Err(SdError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "the encoder's {levels} levels, `num_encoder_blocks` {:?}, `decoder_block_out_channels` {:?} and `num_decoder_blocks` {:?} do not match",
                json.num_encoder_blocks, json.decoder_block_out_channels, json.num_decoder_blocks
            ),
        });
    }
    Ok(VaeSpec {
        kind: VaeKind::Tiny(TinyVaeConfig {
            encoder_channels: json.encoder_block_out_channels,
            encoder_blocks: json.num_encoder_blocks,
            decoder_channels: json.decoder_block_out_channels,
            decoder_blocks: json.num_decoder_blocks,
            latent_channels: json.latent_channels,
        }),
        scaling_factor: json.scaling_factor,
    })
}

/// Parses `vae/config.json` (`path` names it in errors).
pub fn vae(json: serde_json::Value, path: &Path) -> Result<VaeSpec, SdError> {
    match json.get("_class_name").and_then(serde_json::Value::as_str) {
        None | Some("AutoencoderKL") => {}
        Some("AutoencoderTiny") => return tiny_vae(json, path),
        Some(other) => {
            return Err(SdError::Unsupported {
                path: path.to_path_buf(),
                message: format!(
                    "`_class_name` {other:?}: Autonomy reads AutoencoderKL and AutoencoderTiny (TAESD) VAEs"
                ),
            });
        }
    }
    let json: VaeJson = parse(json, path)?;
    let fail = |message: String| SdError::Unsupported {
        path: path.to_path_buf(),
        message,
    };
    rgb_only(json.in_channels, json.out_channels, path)?;
    if let Some(shift) = json.shift_factor {
        return Err(fail(format!(
            "`shift_factor` = {shift} is not supported yet"
        )));
    }
    if !json.mid_block_add_attention {
        return Err(fail(
            "`mid_block_add_attention` = false is not supported yet".into(),
        ));
    }
    if json.block_out_channels.is_empty()
        || json
            .block_out_channels
            .iter()
            .any(|c| !c.is_multiple_of(json.norm_num_groups))
    {
        return Err(SdError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "`block_out_channels` {:?} do not split into {} norm groups",
                json.block_out_channels, json.norm_num_groups
            ),
        });
    }
    Ok(VaeSpec {
        kind: VaeKind::Kl(vae::AutoEncoderKLConfig {
            block_out_channels: json.block_out_channels,
            layers_per_block: json.layers_per_block,
            latent_channels: json.latent_channels,
            norm_num_groups: json.norm_num_groups,
            use_quant_conv: json.use_quant_conv,
            use_post_quant_conv: json.use_post_quant_conv,
        }),
        scaling_factor: json.scaling_factor,
    })
}

/// Everything the folder's configs say, read and checked.
#[derive(Clone, Debug)]
pub struct PipelineSpec {
    /// `unet/config.json`.
    pub unet: UNetSpec,
    /// `vae/config.json`.
    pub vae: VaeSpec,
    /// `text_encoder/config.json` (every pipeline but SDXL's refiner).
    pub text: Option<ClipConfig>,
    /// `text_encoder_2/config.json` (SDXL).
    pub text_2: Option<ClipConfig>,
    /// `scheduler/scheduler_config.json`.
    pub scheduler: SchedulerConfig,
    /// An empty negative prompt means zero conditioning (`model_index.json`'s
    /// `force_zeros_for_empty_prompt`, SDXL), not the encoded empty string.
    pub zeros_for_empty_negative: bool,
}

impl PipelineSpec {
    /// Reads the configs of a pipeline: a diffusers folder's files, or what a single-file
    /// checkpoint's weights imply.
    pub fn read(source: &dyn PipelineSource) -> Result<Self, SdError> {
        Self::read_with_vae(source, None)
    }

    /// [`PipelineSpec::read`] with `vae` in place of the pipeline's own (which a checkpoint
    /// may lack).
    pub fn read_with_vae(
        source: &dyn PipelineSource,
        vae: Option<VaeSpec>,
    ) -> Result<Self, SdError> {
        let path = |p: &str| -> PathBuf { source.path(p) };
        let document = |p: &str| source.json(p);
        let index = document(super::folder::MODEL_INDEX)?;
        let flag = |name: &str| index.get(name).and_then(serde_json::Value::as_bool);
        let mut unet = unet(document("unet/config.json")?, &path("unet/config.json"))?;
        let vae = match vae {
            Some(vae) => vae,
            None => self::vae(document("vae/config.json")?, &path("vae/config.json"))?,
        };
        let encoder = |name: &str| -> Result<Option<ClipConfig>, SdError> {
            let relative = format!("{name}/config.json");
            match super::folder::has_component(&index, name) {
                true => Ok(Some(ClipConfig::from_json(
                    document(&relative)?,
                    &path(&relative),
                )?)),
                false => Ok(None),
            }
        };
        let (text, text_2) = (encoder("text_encoder")?, encoder("text_encoder_2")?);
        let scheduler_path = "scheduler/scheduler_config.json";
        let scheduler =
            SchedulerConfig::from_json(document(scheduler_path)?, &path(scheduler_path))?;
        let invalid = |message: String| SdError::Invalid {
            path: path("unet/config.json"),
            message,
        };
        let width: usize = [&text, &text_2]
            .into_iter()
            .flatten()
            .map(|t| t.hidden_size)
            .sum();
        if width != unet.config.cross_attention_dim {
            return Err(invalid(format!(
                "`cross_attention_dim` {} differs from the text encoders' `hidden_size` ({width} in all)",
                unet.config.cross_attention_dim
            )));
        }
        if let Some(added) = &mut unet.added
            && flag("requires_aesthetics_score") == Some(true)
        {
            added.time_ids = 5;
        }
        match (&unet.added, &text_2) {
            (Some(added), Some(text_2)) if added.pooled_dim() != text_2.projection_dim => {
                return Err(invalid(format!(
                    "`projection_class_embeddings_input_dim` is {}, but `text_encoder_2`'s {}-wide pooled prompt and {} time ids of {} make {} (`model_index.json`'s `requires_aesthetics_score` means 5 ids, else 6)",
                    added.input_dim,
                    text_2.projection_dim,
                    added.time_ids,
                    added.time_embed_dim,
                    text_2.projection_dim + added.time_ids * added.time_embed_dim
                )));
            }
            (Some(_), None) => {
                return Err(invalid(
                    "`addition_embed_type` \"text_time\" needs the pooled prompt of a `text_encoder_2`".into(),
                ));
            }
            _ => {}
        }
        let zeros_for_empty_negative = flag("force_zeros_for_empty_prompt").unwrap_or(false);
        Ok(Self {
            unet,
            vae,
            text,
            text_2,
            scheduler,
            zeros_for_empty_negative,
        })
    }

    /// Side in pixels of the images the pipeline was trained at.
    pub fn native_size(&self) -> usize {
        self.unet.sample_size * self.vae.downscale()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pythons_non_finite_floats_read_as_null() {
        let text = br#"{"lambda_min_clipped": -Infinity, "a": [NaN, Infinity, 1.5], "s": "-Infinity \"NaN\""}"#;
        let value: serde_json::Value =
            serde_json::from_slice(&python_tokens_as_null(text)).unwrap();
        assert_eq!(value["lambda_min_clipped"], serde_json::Value::Null);
        assert_eq!(value["a"], serde_json::json!([null, null, 1.5]));
        assert_eq!(value["s"], "-Infinity \"NaN\"", "strings are left alone");
    }

    proptest! {
        #[test]
        fn standard_json_passes_through_unchanged(text in "\\PC*") {
            let json = serde_json::to_vec(&serde_json::json!({ "key": text, "n": [1, -2.5] })).unwrap();
            prop_assert_eq!(python_tokens_as_null(&json), json);
        }
    }
}
