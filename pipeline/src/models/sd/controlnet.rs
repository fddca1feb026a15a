//! ControlNet (Zhang et al. 2023, "Adding Conditional Control to Text-to-Image Diffusion
//! Models"), as diffusers' `ControlNetModel` lays it out: a copy of the UNet's first half
//! (timestep embedding, `conv_in`, down blocks, middle block) whose input also takes a control
//! image (an edge map, a depth map, a pose…) through a small convolutional encoder, and whose
//! every skip-connection state and middle-block output go through a 1×1 convolution to be
//! added to the UNet's own. Read from a diffusers ControlNet folder (`config.json` and
//! `diffusion_pytorch_model.safetensors`), or from the single files A1111 and ComfyUI load
//! (`control_v11p_sd15_canny.pth`, its fp16 safetensors) in the original code's names.
//!
//! How a run uses it follows diffusers' ControlNet pipelines: the control image in [0, 1] at
//! the image's size, the residuals scaled by the conditioning scale, over the fraction of the
//! steps from `start` to `end`; in guess mode only the prompt's prediction is conditioned,
//! with scales rising from a tenth at the first skip connection to the whole at the middle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::SdError;
use super::blocks::{conv1, conv3};
use super::config::UNetSpec;
use super::kernels::{Conv2d, silu};
use super::original_names;
use super::unet::Encoder;
use super::weights::{Reshape, Store, Stored, Weights};

/// A model that conditions a run on a control image: a ControlNet, or a T2I-Adapter (which
/// recipes and `generate` name the same way, as A1111's ControlNet extension lists both).
pub enum ControlModel {
    /// A ControlNet.
    ControlNet(Box<ControlNet>),
    /// A T2I-Adapter.
    Adapter(super::adapter::Adapter),
}

impl ControlModel {
    /// The ControlNet, if it is one.
    pub fn as_controlnet(&self) -> Option<&ControlNet> {
        match self {
            ControlModel::ControlNet(net) => Some(net),
            ControlModel::Adapter(_) => None,
        }
    }

    /// The T2I-Adapter, if it is one.
    pub fn as_adapter(&self) -> Option<&super::adapter::Adapter> {
        match self {
            ControlModel::Adapter(adapter) => Some(adapter),
            ControlModel::ControlNet(_) => None,
        }
    }
}

/// A ControlNet to load with a model: a diffusers ControlNet folder, or a single file.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlNetFile {
    /// Where it is.
    pub path: PathBuf,
    /// How the provenance manifest names it (the recipe's text).
    pub label: String,
}

/// What ControlNets and T2I-Adapters add to a UNet call: a ControlNet one state per skip
/// connection (`conv_in`'s first) and one for the middle block's output, a T2I-Adapter one
/// feature map per down block (see [`super::unet::UNet::forward`]).
pub struct ControlResiduals {
    /// Added to the skip connections' states, in the order the down path makes them (a
    /// ControlNet's; empty without one).
    pub down: Vec<Tensor>,
    /// Added to the middle block's output (a ControlNet's).
    pub mid: Option<Tensor>,
    /// Added inside the down blocks in turn, one left over to the middle block's output (a
    /// T2I-Adapter's; empty without one).
    pub within: Vec<Tensor>,
}

impl ControlResiduals {
    /// Both residuals added up, as diffusers' `MultiControlNetModel` conditions a UNet on
    /// several ControlNets (and `MultiAdapter` on several adapters).
    pub fn plus(&self, other: &ControlResiduals) -> Result<ControlResiduals> {
        let sum = |a: &[Tensor], b: &[Tensor]| -> Result<Vec<Tensor>> {
            match (a.is_empty(), b.is_empty()) {
                (true, _) => Ok(b.to_vec()),
                (_, true) => Ok(a.to_vec()),
                _ => a.iter().zip(b).map(|(a, b)| a + b).collect(),
            }
        };
        Ok(ControlResiduals {
            down: sum(&self.down, &other.down)?,
            mid: match (&self.mid, &other.mid) {
                (Some(a), Some(b)) => Some((a + b)?),
                (a, b) => a.clone().or_else(|| b.clone()),
            },
            within: sum(&self.within, &other.within)?,
        })
    }
}

/// A ControlNet's architecture, from its `config.json`.
#[derive(Clone, Debug)]
pub struct ControlNetSpec {
    /// The UNet half it copies.
    pub unet: UNetSpec,
    /// Channels of the control image encoder's convolutions (`[16, 32, 96, 256]` in the
    /// releases); each width after the first halves the image's sides.
    pub hint_widths: Vec<usize>,
    /// Channels of the control image (3).
    pub hint_channels: usize,
    /// Whether it was trained on BGR control images (`controlnet_conditioning_channel_order`).
    pub bgr: bool,
    /// Whether its residuals are averaged over each image (`global_pool_conditions`, the
    /// shuffle ControlNet's).
    pub global_pool: bool,
}

#[derive(Deserialize)]
struct ControlNetJson {
    #[serde(default = "hint_widths")]
    conditioning_embedding_out_channels: Vec<usize>,
    #[serde(default = "three")]
    conditioning_channels: usize,
    #[serde(default = "rgb")]
    controlnet_conditioning_channel_order: String,
    #[serde(default)]
    global_pool_conditions: bool,
    down_block_types: Vec<String>,
}

fn hint_widths() -> Vec<usize> {
    vec![16, 32, 96, 256]
}
fn three() -> usize {
    3
}
fn rgb() -> String {
    "rgb".into()
}

/// Parses a ControlNet's `config.json` (`path` names it in errors): its UNet half as a UNet's
/// config (the up blocks it lacks mirrored from its down blocks), and its control image
/// encoder.
pub fn spec(json: serde_json::Value, path: &Path) -> std::result::Result<ControlNetSpec, SdError> {
    let own: ControlNetJson = super::config::parse(json.clone(), path)?;
    let invalid = |message: String| SdError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let bgr = match own.controlnet_conditioning_channel_order.as_str() {
        "rgb" => false,
        "bgr" => true,
        other => {
            return Err(invalid(format!(
                "`controlnet_conditioning_channel_order` is {other:?}: \"rgb\" or \"bgr\""
            )));
        }
    };
    if own.conditioning_embedding_out_channels.is_empty() {
        return Err(invalid(
            "`conditioning_embedding_out_channels` is empty".into(),
        ));
    }
    let mut unet = json;
    let up: Vec<String> = own
        .down_block_types
        .iter()
        .rev()
        .map(|kind| kind.replace("Down", "Up"))
        .collect();
    if let Some(fields) = unet.as_object_mut() {
        fields.insert("up_block_types".into(), up.into());
        fields.entry("out_channels").or_insert(4.into());
        fields.entry("sample_size").or_insert(64.into());
    }
    Ok(ControlNetSpec {
        unet: super::config::unet(unet, path)?,
        hint_widths: own.conditioning_embedding_out_channels,
        hint_channels: own.conditioning_channels,
        bgr,
        global_pool: own.global_pool_conditions,
    })
}

/// The control image encoder (`controlnet_cond_embedding`): a 3×3 convolution, pairs of a 3×3
/// convolution and a strided one halving the sides, each followed by SiLU, and a last 3×3
/// convolution to the UNet's first width.
struct HintEncoder {
    convs: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl HintEncoder {
    fn new(vb: VarBuilder, spec: &ControlNetSpec) -> Result<Self> {
        let widths = &spec.hint_widths;
        let mut convs = vec![conv3(vb.pp("conv_in"), spec.hint_channels, widths[0])?];
        for (i, pair) in widths.windows(2).enumerate() {
            let blocks = vb.pp("blocks");
            convs.push(conv3(blocks.pp(2 * i), pair[0], pair[0])?);
            convs.push(Conv2d::new(
                blocks.pp(2 * i + 1),
                pair[0],
                pair[1],
                3,
                2,
                1,
            )?);
        }
        let last = widths[widths.len() - 1];
        let first = spec.unet.config.blocks[0].out_channels;
        Ok(Self {
            convs,
            conv_out: conv3(vb.pp("conv_out"), last, first)?,
        })
    }
}

impl Module for HintEncoder {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = xs.clone();
        for conv in &self.convs {
            xs = silu(&conv.forward(&xs)?)?;
        }
        self.conv_out.forward(&xs)
    }
}

/// A loaded ControlNet.
pub struct ControlNet {
    spec: ControlNetSpec,
    encoder: Encoder,
    hint: HintEncoder,
    /// One 1×1 convolution per skip connection (`controlnet_down_blocks`).
    down: Vec<Conv2d>,
    /// The middle block's (`controlnet_mid_block`).
    mid: Conv2d,
}

impl ControlNet {
    /// Builds the ControlNet `spec` describes from diffusers' weights.
    pub fn new(vb: VarBuilder, spec: &ControlNetSpec) -> Result<Self> {
        let config = &spec.unet.config;
        let blocks = &config.blocks;
        // The widths of the skip connections' states: `conv_in`'s, each block's layers and
        // its downsampler but the last block's.
        let mut widths = vec![blocks[0].out_channels];
        for (i, block) in blocks.iter().enumerate() {
            let states = config.layers_per_block + usize::from(i + 1 < blocks.len());
            widths.extend(std::iter::repeat_n(block.out_channels, states));
        }
        let down = widths
            .iter()
            .enumerate()
            .map(|(i, &c)| conv1(vb.pp("controlnet_down_blocks").pp(i), c, c))
            .collect::<Result<_>>()?;
        let last = blocks[blocks.len() - 1].out_channels;
        Ok(Self {
            spec: spec.clone(),
            encoder: Encoder::new(vb.clone(), &spec.unet)?,
            hint: HintEncoder::new(vb.pp("controlnet_cond_embedding"), spec)?,
            down,
            mid: conv1(vb.pp("controlnet_mid_block"), last, last)?,
        })
    }

    /// Reads the ControlNet at `path` onto `device` in `dtype`: a diffusers folder
    /// (`config.json`, `diffusion_pytorch_model.safetensors` or its `fp16` variant), or a
    /// single file in the original code's names whose architecture follows `base`, the UNet it
    /// is for, where its shapes do not say otherwise.
    pub fn load(
        path: &Path,
        base: &UNetSpec,
        device: &Device,
        dtype: DType,
    ) -> std::result::Result<Self, SdError> {
        let (spec, weights) = if path.is_dir() {
            let (config, weights) = folder(path)?;
            (spec(super::config::read_json(&config)?, &config)?, weights)
        } else {
            single_file(path, base)?
        };
        weights.build(device, dtype, |vb| Self::new(vb, &spec))
    }

    /// Its architecture.
    pub fn spec(&self) -> &ControlNetSpec {
        &self.spec
    }

    /// Its residuals for latents `xs` at `timestep` given the text `context` (and SDXL's
    /// `added` conditioning, see [`super::unet::UNet::forward`]) and the control image `hint`
    /// `(n, 3, H, W)` in [0, 1] at the latents' size in pixels, scaled by `scale` (in
    /// `guess` mode from a tenth of it at the first skip connection to all of it at the
    /// middle block, as diffusers scales them).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        xs: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&Tensor>,
        hint: &Tensor,
        scale: f64,
        guess: bool,
    ) -> Result<ControlResiduals> {
        let hint = if self.spec.bgr {
            let channels = hint.dim(1)?;
            let order: Vec<u32> = (0..channels as u32).rev().collect();
            hint.index_select(&Tensor::new(order, hint.device())?, 1)?
        } else {
            hint.clone()
        };
        let emb = self.encoder.embed(xs, timestep, added, None)?;
        let embedded = self.hint.forward(&hint.to_dtype(xs.dtype())?)?;
        let (states, mid) = self
            .encoder
            .encode(xs, &emb, context, Some(&embedded), &[])?;
        let n = states.len();
        // torch.logspace(-1, 0, n + 1): 10^(−1 + i/n).
        let scales: Vec<f64> = if guess && !self.spec.global_pool {
            (0..=n)
                .map(|i| 10f64.powf(-1.0 + i as f64 / n as f64) * scale)
                .collect()
        } else {
            vec![scale; n + 1]
        };
        let pooled = |t: Tensor| -> Result<Tensor> {
            if self.spec.global_pool {
                t.mean_keepdim(2)?.mean_keepdim(3)
            } else {
                Ok(t)
            }
        };
        let down = states
            .iter()
            .zip(&self.down)
            .zip(&scales)
            .map(|((state, conv), s)| pooled((conv.forward(state)? * *s)?))
            .collect::<Result<_>>()?;
        let mid = pooled((self.mid.forward(&mid)? * scales[n])?)?;
        Ok(ControlResiduals {
            down,
            mid: Some(mid),
            within: Vec::new(),
        })
    }
}

/// The prefix the first ControlNet releases (`control_sd15_canny.pth`, whole models) put
/// before the ControlNet's names.
const CONTROL_MODEL: &str = "control_model.";

/// A single-file ControlNet as A1111 and ComfyUI load it: the original ControlNet code's names
/// (the UNet's `time_embed`, `input_blocks` and `middle_block`, plus `input_hint_block`,
/// `zero_convs` and `middle_block_out`; under `control_model.` in the first releases), its
/// architecture `base`'s UNet (as A1111 takes it from the model's config) but for what the
/// file's shapes say: the control image encoder's widths, the input channels and each level's
/// transformer depth. A file whose name says `shuffle` pools its residuals over the image, as
/// A1111 decides for the shuffle ControlNet (nothing in the file says so).
fn single_file(
    path: &Path,
    base: &UNetSpec,
) -> std::result::Result<(ControlNetSpec, Weights), SdError> {
    let store = Arc::new(Store::open(path)?);
    let stored = store.shapes();
    let prefix = if stored.keys().any(|k| k.starts_with(CONTROL_MODEL)) {
        CONTROL_MODEL
    } else {
        ""
    };
    let shapes: HashMap<&str, &Vec<usize>> = stored
        .iter()
        .filter_map(|(key, shape)| Some((key.strip_prefix(prefix)?, shape)))
        .collect();
    let invalid = |message: String| SdError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let dim = |key: &str, i: usize| shapes.get(key).and_then(|s| s.get(i).copied());
    // The control image encoder's convolutions in order (`input_hint_block.{0, 2, …}`, SiLUs
    // between): the first, pairs of a convolution and a strided one, the last.
    let mut hint: Vec<usize> = shapes
        .keys()
        .filter_map(|k| {
            k.strip_prefix("input_hint_block.")?
                .strip_suffix(".weight")?
                .parse()
                .ok()
        })
        .collect();
    hint.sort_unstable();
    if hint.len() < 2
        || !hint.len().is_multiple_of(2)
        || !shapes.contains_key("middle_block_out.0.weight")
    {
        return Err(invalid(
            "not a ControlNet: no `input_hint_block` of paired convolutions and `middle_block_out` (a T2I-Adapter, a LoRA, a whole model?)".into(),
        ));
    }
    let hint_weight = |i: usize| format!("input_hint_block.{i}.weight");
    let hint_widths: Vec<usize> = std::iter::once(hint[0])
        .chain(hint[1..hint.len() - 1].iter().skip(1).step_by(2).copied())
        .map(|i| dim(&hint_weight(i), 0))
        .collect::<Option<_>>()
        .ok_or_else(|| invalid("its `input_hint_block` convolutions have no shape".into()))?;
    let mut unet = base.clone();
    let config = &mut unet.config;
    let layers = config.layers_per_block;
    let depth = |block: &str| {
        (0..)
            .take_while(|k| {
                shapes.contains_key(
                    format!("{block}.1.transformer_blocks.{k}.attn1.to_q.weight").as_str(),
                )
            })
            .count()
    };
    for (i, block) in config.blocks.iter_mut().enumerate() {
        let depth = depth(&format!("input_blocks.{}", 1 + i * (layers + 1)));
        block.use_cross_attn = (depth > 0).then_some(depth);
    }
    unet.mid_depth = depth("middle_block");
    unet.in_channels = dim("input_blocks.0.0.weight", 1)
        .ok_or_else(|| invalid("no `input_blocks.0.0.weight`: not a ControlNet".into()))?;
    let last = hint.len() - 1;
    let names = stored
        .keys()
        .filter_map(|key| {
            let rest = key.strip_prefix(prefix)?;
            let name = if let Some(tail) = rest.strip_prefix("input_hint_block.") {
                let (index, param) = tail.split_once('.')?;
                let position = hint.iter().position(|&i| i.to_string() == index)?;
                match position {
                    0 => format!("controlnet_cond_embedding.conv_in.{param}"),
                    p if p == last => format!("controlnet_cond_embedding.conv_out.{param}"),
                    p => format!("controlnet_cond_embedding.blocks.{}.{param}", p - 1),
                }
            } else if let Some(tail) = rest.strip_prefix("zero_convs.") {
                let (index, param) = tail.split_once(".0.")?;
                format!("controlnet_down_blocks.{index}.{param}")
            } else if let Some(param) = rest.strip_prefix("middle_block_out.0.") {
                format!("controlnet_mid_block.{param}")
            } else {
                original_names::unet(rest, layers)?
            };
            let stored = Stored {
                key: key.clone(),
                reshape: Reshape::Same,
            };
            Some((name, stored))
        })
        .collect();
    let shuffle = path
        .file_name()
        .is_some_and(|name| name.to_string_lossy().to_lowercase().contains("shuffle"));
    let spec = ControlNetSpec {
        unet,
        hint_widths,
        hint_channels: dim(&hint_weight(hint[0]), 1).unwrap_or(3),
        bgr: false,
        global_pool: shuffle,
    };
    Ok((spec, Weights::renamed(store, path, names)))
}

/// Whether `path` holds a ControlNet (or a T2I-Adapter), told from its config or stored names
/// alone: a diffusers folder whose `config.json` says `ControlNetModel` (or `T2IAdapter`), or a
/// weights file with a control image encoder (`input_hint_block`, under `control_model.` or
/// not).
pub fn is_controlnet(path: &Path) -> bool {
    if path.is_dir() {
        return super::config::read_json::<serde_json::Value>(&path.join("config.json"))
            .is_ok_and(|config| config["_class_name"] == "ControlNetModel")
            || super::adapter::is_adapter(path);
    }
    if !is_weights_file(path) {
        return false;
    }
    // The names are read once: a pickle is opened whole to list them.
    let names = super::weights::stored_names(path);
    names
        .iter()
        .any(|name| name.strip_prefix(CONTROL_MODEL).unwrap_or(name) == "input_hint_block.0.weight")
        || super::adapter::has_original_names(&names)
}

/// Why a ControlNet whose UNet half is `theirs` does not fit the UNet `ours` (block widths,
/// layers per block, text width or SDXL's added conditioning differ), naming both; `None`
/// when it fits.
pub fn mismatch(theirs: &UNetSpec, ours: &UNetSpec) -> Option<String> {
    let widths = |spec: &UNetSpec| -> Vec<usize> {
        spec.config.blocks.iter().map(|b| b.out_channels).collect()
    };
    let (a, b) = (&theirs.config, &ours.config);
    let fits = widths(theirs) == widths(ours)
        && a.layers_per_block == b.layers_per_block
        && a.cross_attention_dim == b.cross_attention_dim
        && theirs.added.is_some() == ours.added.is_some();
    (!fits).then(|| {
        format!(
            "a ControlNet for blocks of {:?} channels, {} layers each and {}-wide text, but the model's UNet has {:?}, {} and {}",
            widths(theirs),
            a.layers_per_block,
            a.cross_attention_dim,
            widths(ours),
            b.layers_per_block,
            b.cross_attention_dim
        )
    })
}

/// Whether the ControlNet at `path` fits a model whose UNet is `unet`: a folder's config as
/// [`mismatch`] checks it (a T2I-Adapter's as [`super::adapter::AdapterSpec::mismatch`]), a single file's first block width and text width from its shapes
/// (the rest of its architecture is the model's own).
pub fn fits(path: &Path, unet: &UNetSpec) -> bool {
    let config = &unet.config;
    let first = config.blocks[0].out_channels;
    if super::adapter::is_adapter(path) {
        return super::adapter::fits(path, unet);
    }
    if path.is_dir() {
        let theirs = super::config::read_json(&path.join("config.json"))
            .and_then(|json| spec(json, &path.join("config.json")));
        return theirs.is_ok_and(|theirs| mismatch(&theirs.unet, unet).is_none());
    }
    let Ok(store) = Store::open(path) else {
        return false;
    };
    let shapes: HashMap<String, Vec<usize>> = store
        .shapes()
        .into_iter()
        .map(|(key, shape)| {
            (
                key.strip_prefix(CONTROL_MODEL).unwrap_or(&key).to_string(),
                shape,
            )
        })
        .collect();
    let texts: Vec<usize> = shapes
        .iter()
        .filter(|(key, _)| key.ends_with("attn2.to_k.weight"))
        .filter_map(|(_, shape)| shape.get(1).copied())
        .collect();
    shapes
        .get("input_blocks.0.0.weight")
        .is_some_and(|shape| shape.first() == Some(&first))
        && texts
            .iter()
            .all(|&width| width == config.cross_attention_dim)
}

/// Whether `path` is named as a weights file (`.safetensors`, `.pth`, `.pt`, `.bin`).
pub(super) fn is_weights_file(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["safetensors", "pth", "pt", "bin"].contains(&e.to_ascii_lowercase().as_str())
    })
}

/// The `config.json` of the diffusers folder `path` (a ControlNet's or a T2I-Adapter's), and
/// its weights.
pub(super) fn folder(path: &Path) -> std::result::Result<(PathBuf, Weights), SdError> {
    let config = path.join("config.json");
    if !config.is_file() {
        return Err(SdError::MissingFile { path: config });
    }
    Ok((config, Weights::files(&[weights_file(path)?])?))
}

/// The weights file of the ControlNet folder `path`.
pub(super) fn weights_file(path: &Path) -> std::result::Result<PathBuf, SdError> {
    let stem = "diffusion_pytorch_model";
    [
        format!("{stem}.safetensors"),
        format!("{stem}.fp16.safetensors"),
    ]
    .into_iter()
    .map(|name| path.join(name))
    .find(|file| file.is_file())
    .ok_or_else(|| SdError::Invalid {
        path: path.join(format!("{stem}.safetensors")),
        message: "missing: a diffusers ControlNet folder holds its weights there".into(),
    })
}

/// sha256 (hex) of the ControlNet at `path`: a single file's, or over a folder's
/// `config.json`'s and weights'.
pub fn sha256(path: &Path) -> std::result::Result<String, SdError> {
    use sha2::{Digest, Sha256};
    if !path.is_dir() {
        return super::super::digest::file_sha256(path).map_err(|e| SdError::io(path, e));
    }
    let mut all = Sha256::new();
    for (what, file) in [
        ("config", path.join("config.json")),
        ("weights", weights_file(path)?),
    ] {
        let digest = super::super::digest::file_sha256(&file).map_err(|e| SdError::io(&file, e))?;
        all.update(format!("{what}:{digest}\n"));
    }
    Ok(hex::encode(all.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> serde_json::Value {
        serde_json::json!({
            "block_out_channels": [32, 64],
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "in_channels": 4,
            "layers_per_block": 2,
            "cross_attention_dim": 32,
            "attention_head_dim": 8,
            "conditioning_embedding_out_channels": [4, 8],
        })
    }

    #[test]
    fn a_config_reads_as_the_unet_half_it_copies() {
        let spec = spec(config(), Path::new("controlnet/config.json")).unwrap();
        assert_eq!(spec.hint_widths, [4, 8]);
        assert_eq!(
            (spec.hint_channels, spec.bgr, spec.global_pool),
            (3, false, false)
        );
        let blocks = &spec.unet.config.blocks;
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].use_cross_attn, Some(1));
        assert_eq!(blocks[1].use_cross_attn, None);
    }

    #[test]
    fn a_bad_config_is_refused_naming_the_field() {
        let mut bgr = config();
        bgr["controlnet_conditioning_channel_order"] = "rbg".into();
        let err = spec(bgr, Path::new("cn/config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cn/config.json") && err.contains("\"rbg\""),
            "{err}"
        );
        let mut odd = config();
        odd["down_block_types"] = serde_json::json!(["CrossAttnDownBlock2D", "SkipDownBlock2D"]);
        let err = spec(odd, Path::new("cn/config.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("down_block_types[1]"), "{err}");
    }
}
