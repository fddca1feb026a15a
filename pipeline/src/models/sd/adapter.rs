//! T2I-Adapter (Mou et al. 2023, "T2I-Adapter: Learning Adapters to Dig out More Controllable
//! Ability for Text-to-Image Diffusion Models"), as diffusers' `T2IAdapter` lays it out: a small
//! convolutional network that turns a control image (an edge map, a sketch, a depth map…) into
//! one feature map per UNet level, added inside the UNet's down blocks. Unlike a ControlNet it
//! does not see the latents, so a run computes its features once, not at every step. Read from
//! a diffusers T2I-Adapter folder (`config.json` with `_class_name` `T2IAdapter`,
//! `diffusion_pytorch_model.safetensors`; `full_adapter` for SD 1.5/2.1, `full_adapter_xl` for
//! SDXL, `light_adapter`), or from TencentARC's original files as A1111 and ComfyUI load them
//! (`t2iadapter_canny_sd15v2.pth`, `t2iadapter_color_sd14v1.pth`).
//!
//! How a run uses it follows diffusers' `StableDiffusionAdapterPipeline`: the control image in
//! [0, 1] at the image's size (grey for a one-channel adapter), the features times the
//! conditioning scale, added for both the prompt's and the negative prompt's rows over the
//! steps the ControlNet settings give (diffusers' `adapter_conditioning_factor` is `end`).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::SdError;
use super::blocks::{conv1, conv3};
use super::config::UNetSpec;
use super::kernels::{Conv2d, Slopes};
use super::weights::{Reshape, Store, Stored, Weights};

/// Which of diffusers' adapter networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterKind {
    /// The original adapter (SD 1.5/2.1): pixel-unshuffle, a convolution, one block per level,
    /// each but the first halving the size.
    FullAdapter,
    /// SDXL's: pixel-unshuffle by 16, four blocks over SDXL's three levels (the third halves).
    FullAdapterXl,
    /// The light adapter: blocks that narrow to a quarter of their width inside.
    LightAdapter,
}

/// A T2I-Adapter's architecture, from its `config.json`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct AdapterSpec {
    /// Which network.
    #[serde(rename = "adapter_type", default = "full")]
    pub kind: AdapterKind,
    /// Channels of its control image: 3, or 1 for grey (sketch, canny).
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Channels of each feature map it makes (the UNet's block widths).
    pub channels: Vec<usize>,
    /// Residual blocks per level.
    #[serde(default = "two")]
    pub num_res_blocks: usize,
    /// The pixel-unshuffle factor its input starts with.
    #[serde(default = "eight")]
    pub downscale_factor: usize,
}

fn full() -> AdapterKind {
    AdapterKind::FullAdapter
}
fn three() -> usize {
    3
}
fn two() -> usize {
    2
}
fn eight() -> usize {
    8
}

impl AdapterSpec {
    /// Reads and checks the `config.json` at `path`.
    pub fn read(path: &Path) -> std::result::Result<Self, SdError> {
        let json: serde_json::Value = super::config::read_json(path)?;
        let invalid = |message: String| SdError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if json["_class_name"] != "T2IAdapter" {
            return Err(invalid(format!(
                "`_class_name` is {}, not \"T2IAdapter\"",
                json["_class_name"]
            )));
        }
        let spec: Self = serde_json::from_value(json).map_err(|e| invalid(e.to_string()))?;
        let levels = if spec.kind == AdapterKind::FullAdapterXl {
            4
        } else {
            spec.channels.len()
        };
        if spec.channels.len() != levels
            || spec.channels.contains(&0)
            || !(1..=4).contains(&spec.in_channels)
            || spec.num_res_blocks == 0
            || !(1..=64).contains(&spec.downscale_factor)
            || (spec.kind == AdapterKind::LightAdapter && spec.channels.iter().any(|c| c % 4 != 0))
        {
            return Err(invalid(format!(
                "{:?} with channels {:?}, {} input channels, {} residual blocks and downscale {} is not an adapter diffusers builds",
                spec.kind,
                spec.channels,
                spec.in_channels,
                spec.num_res_blocks,
                spec.downscale_factor
            )));
        }
        Ok(spec)
    }

    /// How many times smaller than the image its last feature map is: the image's sides must
    /// be multiples of it.
    pub fn total_downscale(&self) -> usize {
        let levels = self.channels.len();
        self.downscale_factor
            * match self.kind {
                AdapterKind::FullAdapter => 1 << (levels - 1),
                AdapterKind::FullAdapterXl => 2,
                AdapterKind::LightAdapter => 1 << levels,
            }
    }

    /// Why its feature maps do not fit the UNet `unet` (a map's width, or how many times
    /// smaller than the image it is, differs from the state of the block it is added to: an
    /// SD 1.5 adapter on SDXL), naming both; `None` when they fit.
    pub fn mismatch(&self, unet: &UNetSpec) -> Option<String> {
        let blocks = &unet.config.blocks;
        let n = blocks.len();
        // Where each map lands (see `DownBlock::forward`): a cross-attention block's state
        // before its downsampler, the output of one without; one left over to the middle.
        // Sizes in pixels of the image, the VAE downscaling 8×.
        let mut targets: Vec<(usize, usize)> = blocks
            .iter()
            .enumerate()
            .map(|(i, block)| {
                let halved = if block.use_cross_attn.is_none() && i + 1 < n {
                    i + 1
                } else {
                    i
                };
                (block.out_channels, 8 << halved)
            })
            .collect();
        targets.push((blocks[n - 1].out_channels, 8 << (n - 1)));
        let features = self.features_made();
        let fits =
            features.len() <= targets.len() && features.iter().zip(&targets).all(|(a, b)| a == b);
        (!fits).then(|| {
            format!(
                "a T2I-Adapter making features of {:?} channels at 1/{:?} of the image, but the model's UNet takes {:?} channels at 1/{:?}",
                features.iter().map(|f| f.0).collect::<Vec<_>>(),
                features.iter().map(|f| f.1).collect::<Vec<_>>(),
                targets.iter().map(|t| t.0).collect::<Vec<_>>(),
                targets.iter().map(|t| t.1).collect::<Vec<_>>(),
            )
        })
    }

    /// The width of each feature map it makes and how many times smaller than the image it is.
    fn features_made(&self) -> Vec<(usize, usize)> {
        let f = self.downscale_factor;
        let c = &self.channels;
        match self.kind {
            AdapterKind::FullAdapter => c.iter().enumerate().map(|(i, &w)| (w, f << i)).collect(),
            AdapterKind::FullAdapterXl => {
                vec![(c[0], f), (c[1], f), (c[2], f * 2), (c[3], f * 2)]
            }
            AdapterKind::LightAdapter => c
                .iter()
                .chain(c.last())
                .enumerate()
                .map(|(i, &w)| (w, f << i))
                .collect(),
        }
    }
}

/// A residual block: 3×3 convolution, ReLU, 1×1 (the light adapter's: 3×3, ReLU, 3×3), plus
/// its input.
struct ResBlock {
    block1: Conv2d,
    block2: Conv2d,
}

impl ResBlock {
    fn new(vb: VarBuilder, channels: usize, light: bool) -> Result<Self> {
        let block1 = conv3(vb.pp("block1"), channels, channels)?;
        let block2 = if light {
            conv3(vb.pp("block2"), channels, channels)?
        } else {
            conv1(vb.pp("block2"), channels, channels)?
        };
        Ok(Self { block1, block2 })
    }
}

impl Module for ResBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // ReLU as a leaky ReLU of slope 0, in the pass that writes the convolution's output.
        let h = self.block1.forward_leaky(xs, &Slopes::Uniform(0.0))?;
        self.block2.forward(&h)? + xs
    }
}

/// One level: an optional 2× average pool, an optional 1×1 convolution to its width, residual
/// blocks, and (light adapter) a 1×1 convolution back out.
struct Level {
    down: bool,
    in_conv: Option<Conv2d>,
    resnets: Vec<ResBlock>,
    out_conv: Option<Conv2d>,
}

impl Level {
    fn new(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        spec: &AdapterSpec,
        down: bool,
    ) -> Result<Self> {
        let light = spec.kind == AdapterKind::LightAdapter;
        let inner = if light { c_out / 4 } else { c_out };
        let in_conv = (light || c_in != c_out)
            .then(|| conv1(vb.pp("in_conv"), c_in, inner))
            .transpose()?;
        let resnets = (0..spec.num_res_blocks)
            .map(|j| ResBlock::new(vb.pp("resnets").pp(j), inner, light))
            .collect::<Result<_>>()?;
        let out_conv = light
            .then(|| conv1(vb.pp("out_conv"), inner, c_out))
            .transpose()?;
        Ok(Self {
            down,
            in_conv,
            resnets,
            out_conv,
        })
    }
}

impl Module for Level {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = if self.down {
            xs.avg_pool2d(2)?
        } else {
            xs.clone()
        };
        if let Some(conv) = &self.in_conv {
            xs = conv.forward(&xs)?;
        }
        for resnet in &self.resnets {
            xs = resnet.forward(&xs)?;
        }
        match &self.out_conv {
            Some(conv) => conv.forward(&xs),
            None => Ok(xs),
        }
    }
}

/// A loaded T2I-Adapter.
pub struct Adapter {
    spec: AdapterSpec,
    conv_in: Option<Conv2d>,
    levels: Vec<Level>,
}

impl Adapter {
    /// Builds the adapter `spec` describes from diffusers' weights (`adapter.*`).
    pub fn new(vb: VarBuilder, spec: &AdapterSpec) -> Result<Self> {
        let vb = vb.pp("adapter");
        let c = &spec.channels;
        let unshuffled = spec.in_channels * spec.downscale_factor * spec.downscale_factor;
        let body = vb.pp("body");
        let level = |i: usize, c_in: usize, c_out: usize, down: bool| {
            Level::new(body.pp(i), c_in, c_out, spec, down)
        };
        let (conv_in, levels) = match spec.kind {
            AdapterKind::FullAdapter => {
                let mut levels = vec![level(0, c[0], c[0], false)?];
                for i in 1..c.len() {
                    levels.push(level(i, c[i - 1], c[i], true)?);
                }
                (Some(conv3(vb.pp("conv_in"), unshuffled, c[0])?), levels)
            }
            AdapterKind::FullAdapterXl => {
                let levels = vec![
                    level(0, c[0], c[0], false)?,
                    level(1, c[0], c[1], false)?,
                    level(2, c[1], c[2], true)?,
                    level(3, c[3], c[3], false)?,
                ];
                (Some(conv3(vb.pp("conv_in"), unshuffled, c[0])?), levels)
            }
            AdapterKind::LightAdapter => {
                let mut levels = vec![level(0, unshuffled, c[0], false)?];
                for i in 1..c.len() {
                    levels.push(level(i, c[i - 1], c[i], true)?);
                }
                let last = c[c.len() - 1];
                levels.push(level(c.len(), last, last, true)?);
                (None, levels)
            }
        };
        Ok(Self {
            spec: spec.clone(),
            conv_in,
            levels,
        })
    }

    /// Reads the T2I-Adapter at `path` onto `device` in `dtype`: a diffusers folder, or one of
    /// TencentARC's original files with as many levels as `base`, the UNet it is for, has
    /// blocks.
    pub fn load(
        path: &Path,
        base: &UNetSpec,
        device: &Device,
        dtype: DType,
    ) -> std::result::Result<Self, SdError> {
        let (spec, weights) = if path.is_dir() {
            let (config, weights) = super::controlnet::folder(path)?;
            (AdapterSpec::read(&config)?, weights)
        } else {
            original(path, base)?
        };
        weights.build(device, dtype, |vb| Self::new(vb, &spec))
    }

    /// Its architecture.
    pub fn spec(&self) -> &AdapterSpec {
        &self.spec
    }

    /// Its feature maps for the control image `hint` `(n, 3, H, W)` in [0, 1] (made grey, as
    /// PIL's `L` weighs the channels, for a one-channel adapter), unscaled: one per UNet level
    /// in turn. `H` and `W` must be multiples of [`AdapterSpec::total_downscale`].
    pub fn features(&self, hint: &Tensor) -> Result<Vec<Tensor>> {
        let (_, channels, h, w) = hint.dims4()?;
        let step = self.spec.total_downscale();
        if h % step != 0 || w % step != 0 {
            candle_core::bail!(
                "a {w}×{h} control image: this T2I-Adapter takes sides that are multiples of {step}"
            );
        }
        let hint = match (self.spec.in_channels, channels) {
            (1, 3) => {
                let weights = Tensor::new(&[0.299f32, 0.587, 0.114], hint.device())?
                    .to_dtype(hint.dtype())?
                    .reshape((1, 3, 1, 1))?;
                hint.broadcast_mul(&weights)?.sum_keepdim(1)?
            }
            (want, have) if want == have => hint.clone(),
            (want, have) => candle_core::bail!(
                "this T2I-Adapter takes {want}-channel control images, not {have}-channel ones"
            ),
        };
        let mut xs = pixel_unshuffle(&hint, self.spec.downscale_factor)?;
        if let Some(conv) = &self.conv_in {
            xs = conv.forward(&xs)?;
        }
        let mut features = Vec::with_capacity(self.levels.len());
        for level in &self.levels {
            xs = level.forward(&xs)?;
            features.push(xs.clone());
        }
        Ok(features)
    }
}

/// PyTorch's `pixel_unshuffle`: `(n, c, h·r, w·r)` → `(n, c·r², h, w)`, channel `c·r² + i·r + j`
/// holding pixel `(y·r + i, x·r + j)` of channel `c`.
fn pixel_unshuffle(xs: &Tensor, r: usize) -> Result<Tensor> {
    let (n, c, h, w) = xs.dims4()?;
    let (h, w) = (h / r, w / r);
    xs.reshape((n * c, h, r, w, r))?
        .permute((0, 2, 4, 1, 3))?
        .contiguous()?
        .reshape((n, c * r * r, h, w))
}

/// The architecture and weights of one of TencentARC's original adapter files: its `Adapter`
/// (`conv_in`, then `body.{level × blocks + j}.block1/block2`, each level's first block with an
/// `in_conv` when the width changes) or its `Adapter_light` (`body.{level}.in_conv`,
/// `.body.{j}.block1/block2`, `.out_conv`), at a pixel-unshuffle of 8 (SD 1.x); how many
/// levels `Adapter` has is not stored: it has one per block of `base`, the UNet it is for.
fn original(path: &Path, base: &UNetSpec) -> std::result::Result<(AdapterSpec, Weights), SdError> {
    let store = Arc::new(Store::open(path)?);
    let stored = store.shapes();
    let invalid = |message: String| SdError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let width = |key: &str, i: usize| stored.get(key).and_then(|shape| shape.get(i).copied());
    let entries: BTreeSet<usize> = stored
        .keys()
        .filter_map(|key| key.strip_prefix("body.")?.split('.').next()?.parse().ok())
        .collect();
    let count = entries.len();
    if count == 0 || entries.last() != Some(&(count - 1)) {
        return Err(invalid(
            "not a T2I-Adapter: no `body.0`, `body.1`, … blocks".into(),
        ));
    }
    let light = stored.contains_key("body.0.body.0.block1.weight");
    let (kind, channels, blocks, unshuffled) = if light {
        let widths: Option<Vec<usize>> = (0..count)
            .map(|i| width(&format!("body.{i}.out_conv.weight"), 0))
            .collect();
        let blocks = (0..)
            .take_while(|j| stored.contains_key(&format!("body.0.body.{j}.block1.weight")))
            .count();
        let widths =
            widths.ok_or_else(|| invalid("a light adapter level has no `out_conv`".into()))?;
        let channels = widths[..count - 1].to_vec();
        let unshuffled = width("body.0.in_conv.weight", 1);
        (AdapterKind::LightAdapter, channels, blocks, unshuffled)
    } else {
        let levels = base.config.blocks.len();
        if !count.is_multiple_of(levels) {
            return Err(invalid(format!(
                "{count} adapter blocks do not split into the model's {levels} levels: an adapter for another UNet"
            )));
        }
        let blocks = count / levels;
        let channels: Option<Vec<usize>> = (0..levels)
            .map(|i| width(&format!("body.{}.block1.weight", i * blocks), 0))
            .collect();
        let channels =
            channels.ok_or_else(|| invalid("an adapter block has no `block1`".into()))?;
        (
            AdapterKind::FullAdapter,
            channels,
            blocks,
            width("conv_in.weight", 1),
        )
    };
    let downscale_factor = 8;
    let in_channels = unshuffled
        .filter(|c| c % 64 == 0 && *c > 0)
        .map(|c| c / 64)
        .ok_or_else(|| {
            invalid("its first convolution does not take a pixel-unshuffled image".into())
        })?;
    let spec = AdapterSpec {
        kind,
        in_channels,
        channels,
        num_res_blocks: blocks,
        downscale_factor,
    };
    let names = stored
        .keys()
        .filter_map(|key| {
            let name = match key.split('.').collect::<Vec<_>>().as_slice() {
                ["conv_in", param] => format!("adapter.conv_in.{param}"),
                ["body", i, "body", j, conv, param] if light => {
                    format!("adapter.body.{i}.resnets.{j}.{conv}.{param}")
                }
                ["body", i, conv, param] if light => format!("adapter.body.{i}.{conv}.{param}"),
                ["body", n, conv, param] => {
                    let n: usize = n.parse().ok()?;
                    let (i, j) = (n / blocks, n % blocks);
                    match *conv {
                        "in_conv" => format!("adapter.body.{i}.in_conv.{param}"),
                        _ => format!("adapter.body.{i}.resnets.{j}.{conv}.{param}"),
                    }
                }
                _ => return None,
            };
            let stored = Stored {
                key: key.clone(),
                reshape: Reshape::Same,
            };
            Some((name, stored))
        })
        .collect();
    Ok((spec, Weights::renamed(store, path, names)))
}

/// Whether `path` is a T2I-Adapter: a diffusers folder whose `config.json` says `T2IAdapter`,
/// or a weights file in TencentARC's original names (nothing but `conv_in` and `body.*`, with
/// `body.0.block1`, or the light adapter's `body.0.body.0.block1`).
pub fn is_adapter(path: &Path) -> bool {
    if path.is_dir() {
        return super::config::read_json::<serde_json::Value>(&path.join("config.json"))
            .is_ok_and(|config| config["_class_name"] == "T2IAdapter");
    }
    super::controlnet::is_weights_file(path)
        && has_original_names(&super::weights::stored_names(path))
}

/// Whether `names` are the stored names of one of TencentARC's original adapters (see
/// [`is_adapter`]).
pub(super) fn has_original_names(names: &[String]) -> bool {
    let has = |name: &str| names.iter().any(|n| n == name);
    !names.is_empty()
        && names
            .iter()
            .all(|n| n.starts_with("body.") || n.starts_with("conv_in."))
        && ((has("conv_in.weight") && has("body.0.block1.weight"))
            || has("body.0.body.0.block1.weight"))
}

/// Whether the T2I-Adapter at `path` fits a model whose UNet is `unet` (see
/// [`AdapterSpec::mismatch`]).
pub fn fits(path: &Path, unet: &UNetSpec) -> bool {
    let spec = if path.is_dir() {
        AdapterSpec::read(&path.join("config.json"))
    } else {
        original(path, unet).map(|(spec, _)| spec)
    };
    spec.is_ok_and(|spec| spec.mismatch(unet).is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_unshuffle_orders_channels_as_pytorch() {
        // (1, 2, 4, 4) numbered 0..32; r = 2.
        let xs = Tensor::arange(0f32, 32.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 4, 4))
            .unwrap();
        let out = pixel_unshuffle(&xs, 2).unwrap();
        assert_eq!(out.dims(), [1, 8, 2, 2]);
        let v = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // torch.nn.functional.pixel_unshuffle(torch.arange(32.).reshape(1, 2, 4, 4), 2)
        let torch = [
            0., 2., 8., 10., 1., 3., 9., 11., 4., 6., 12., 14., 5., 7., 13., 15., 16., 18., 24.,
            26., 17., 19., 25., 27., 20., 22., 28., 30., 21., 23., 29., 31.,
        ];
        assert_eq!(v, torch);
    }

    #[test]
    fn a_config_reads_with_diffusers_defaults_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let write = |json: serde_json::Value| std::fs::write(&path, json.to_string()).unwrap();
        write(
            serde_json::json!({ "_class_name": "T2IAdapter", "channels": [320, 640, 1280, 1280] }),
        );
        let spec = AdapterSpec::read(&path).unwrap();
        assert_eq!(
            (
                spec.kind,
                spec.in_channels,
                spec.num_res_blocks,
                spec.downscale_factor
            ),
            (AdapterKind::FullAdapter, 3, 2, 8)
        );
        assert_eq!(spec.total_downscale(), 64);
        write(
            serde_json::json!({ "_class_name": "T2IAdapter", "channels": [320, 640, 1280],
                                  "adapter_type": "light_adapter", "num_res_blocks": 4 }),
        );
        assert_eq!(AdapterSpec::read(&path).unwrap().total_downscale(), 64);
        write(
            serde_json::json!({ "_class_name": "T2IAdapter", "channels": [320, 640],
                                  "adapter_type": "full_adapter_xl" }),
        );
        let err = AdapterSpec::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("FullAdapterXl"),
            "{err}"
        );
        write(serde_json::json!({ "_class_name": "ControlNetModel", "channels": [4] }));
        let err = AdapterSpec::read(&path).unwrap_err().to_string();
        assert!(err.contains("not \"T2IAdapter\""), "{err}");
    }
}
