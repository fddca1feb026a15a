//! T2I-Adapter (Mou et al. 2023, "T2I-Adapter: Learning Adapters to Dig out More Controllable
//! Ability for Text-to-Image Diffusion Models"), as diffusers' `T2IAdapter` lays it out: a small
//! convolutional network that turns a control image (an edge map, a sketch, a depth map…) into
//! one feature map per UNet level, added inside the UNet's down blocks. Unlike a ControlNet it
//! does not see the latents, so a run computes its features once, not at every step. Read from
//! a diffusers T2I-Adapter folder (`config.json` with `_class_name` `T2IAdapter`,
//! `diffusion_pytorch_model.safetensors`); `full_adapter` (SD 1.5/2.1), `full_adapter_xl`
//! (SDXL) and `light_adapter`.
//!
//! How a run uses it follows diffusers' `StableDiffusionAdapterPipeline`: the control image in
//! [0, 1] at the image's size (grey for a one-channel adapter), the features times the
//! conditioning scale, added for both the prompt's and the negative prompt's rows over the
//! steps the ControlNet settings give (diffusers' `adapter_conditioning_factor` is `end`).

use std::path::Path;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::SdError;
use super::blocks::{conv1, conv3};
use super::config::UNetSpec;
use super::kernels::Conv2d;
use super::weights::Weights;

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

    /// Why its feature maps do not fit the UNet `unet` (a level's width differs from the
    /// block it is added to), naming both; `None` when they fit.
    pub fn mismatch(&self, unet: &UNetSpec) -> Option<String> {
        let blocks: Vec<usize> = unet.config.blocks.iter().map(|b| b.out_channels).collect();
        // Each feature map goes to a down block in turn; one left over goes to the middle.
        let mut targets = blocks.clone();
        targets.push(blocks[blocks.len() - 1]);
        let widths = self.feature_widths();
        let fits =
            widths.len() <= targets.len() && widths.iter().zip(&targets).all(|(a, b)| a == b);
        (!fits).then(|| {
            format!(
                "a T2I-Adapter making features of {widths:?} channels, but the model's UNet has blocks of {blocks:?}"
            )
        })
    }

    /// The width of each feature map it makes.
    fn feature_widths(&self) -> Vec<usize> {
        match self.kind {
            AdapterKind::LightAdapter => {
                let mut widths = self.channels.clone();
                widths.push(self.channels[self.channels.len() - 1]);
                widths
            }
            _ => self.channels.clone(),
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
        let h = self.block1.forward(xs)?.relu()?;
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

    /// Reads the diffusers T2I-Adapter folder `path` onto `device` in `dtype`.
    pub fn load(path: &Path, device: &Device, dtype: DType) -> std::result::Result<Self, SdError> {
        let config = path.join("config.json");
        if !config.is_file() {
            return Err(SdError::MissingFile { path: config });
        }
        let spec = AdapterSpec::read(&config)?;
        let weights = Weights::files(&[super::controlnet::weights_file(path)?])?;
        let file = weights.path().to_path_buf();
        let vb = VarBuilder::from_backend(Box::new(weights), dtype, device.clone());
        Self::new(vb, &spec).map_err(|source| SdError::Weights { path: file, source })
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

/// Whether `path` is a diffusers T2I-Adapter folder (its `config.json` says `T2IAdapter`).
pub fn is_adapter(path: &Path) -> bool {
    path.is_dir()
        && super::config::read_json::<serde_json::Value>(&path.join("config.json"))
            .is_ok_and(|config| config["_class_name"] == "T2IAdapter")
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
