//! lllyasviel's HED soft-edge network (`ControlNetHED_Apache2`, the file `ControlNetHED.pth`
//! of `lllyasviel/Annotators`) as A1111's `softedge_hed` and `softedge_hedsafe` preprocessors
//! and `controlnet_aux`'s `HEDdetector` run it: the picture's RGB (0–255) less a learnt colour,
//! five levels of VGG-like 3×3 convolutions with ReLU (2, 2, 3, 3 and 3 of them, each level after
//! the first at half the size), a 1×1 projection of each level to one map, each map resized to
//! the picture (bilinear), and the sigmoid of their mean.

use std::path::Path;

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use image::{GrayImage, RgbImage};

use super::super::SdError;
use super::super::kernels::{Conv2d, Slopes};
use super::super::weights::Weights;
use super::{picture_tensor, soft_edge_bytes};

/// How many levels the network has.
const LEVELS: usize = 5;

/// One level: its 3×3 convolutions (each followed by a ReLU) and its projection to one map.
struct Level {
    convs: Vec<Conv2d>,
    projection: Conv2d,
}

/// A loaded HED soft-edge network.
pub struct Hed {
    /// The colour subtracted from the picture, `(1, 3, 1, 1)`.
    norm: Tensor,
    levels: Vec<Level>,
}

impl Hed {
    /// Loads `ControlNetHED.pth` (or the same names in safetensors) onto `device`; its widths and
    /// convolution counts are read from the file.
    pub fn load(path: &Path, device: &Device) -> std::result::Result<Self, SdError> {
        let weights = Weights::file(path)?;
        if weights.shape("block1.convs.0.weight").is_none() || weights.shape("norm").is_none() {
            return Err(SdError::Invalid {
                path: path.to_path_buf(),
                message: "not a HED soft-edge annotator (`ControlNetHED.pth`): it has no `norm` and `block1.convs.0.weight`".into(),
            });
        }
        let mut shape = Vec::new();
        let mut channels = 3;
        for level in 1..=LEVELS {
            let width = |j: usize| {
                weights
                    .shape(&format!("block{level}.convs.{j}.weight"))
                    .and_then(|s| s.first().copied())
            };
            let count = (0..).take_while(|&j| width(j).is_some()).count();
            let out = width(0).ok_or_else(|| SdError::Invalid {
                path: path.to_path_buf(),
                message: format!("a HED annotator has {LEVELS} levels; `block{level}` is missing"),
            })?;
            shape.push((channels, out, count));
            channels = out;
        }
        weights.build(device, candle_core::DType::F32, |vb| Self::new(vb, &shape))
    }

    /// The network of `shape` (each level's input and output width and convolution count).
    fn new(vb: VarBuilder, shape: &[(usize, usize, usize)]) -> Result<Self> {
        let levels = shape
            .iter()
            .enumerate()
            .map(|(i, &(c_in, c_out, count))| {
                let vb = vb.pp(format!("block{}", i + 1));
                let convs = (0..count)
                    .map(|j| {
                        let c_in = if j == 0 { c_in } else { c_out };
                        Conv2d::new(vb.pp(format!("convs.{j}")), c_in, c_out, 3, 1, 1)
                    })
                    .collect::<Result<_>>()?;
                let projection = Conv2d::new(vb.pp("projection"), c_out, 1, 1, 1, 0)?;
                Ok(Level { convs, projection })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            norm: vb.get((1, 3, 1, 1), "norm")?,
            levels,
        })
    }

    /// The soft edges of `picture` in 0–1, `(h, w)`: the sigmoid of the mean of the five
    /// levels' maps, each resized to the picture.
    pub fn edge_map(&self, picture: &RgbImage) -> Result<Tensor> {
        let device = self.norm.device();
        let xs = picture_tensor(picture, 1.0, device)?;
        let (_, _, h, w) = xs.dims4()?;
        let mut xs = xs.broadcast_sub(&self.norm)?;
        let mut maps = Vec::with_capacity(self.levels.len());
        for (i, level) in self.levels.iter().enumerate() {
            if i > 0 {
                xs = xs.max_pool2d(2)?;
            }
            for conv in &level.convs {
                xs = conv.forward_leaky(&xs, &Slopes::Uniform(0.0))?;
            }
            maps.push(
                level
                    .projection
                    .forward(&xs)?
                    .upsample_bilinear2d(h, w, false)?,
            );
        }
        let mean = Tensor::cat(&maps, 1)?.mean_keepdim(1)?;
        candle_nn::ops::sigmoid(&mean)?.squeeze(0)?.squeeze(0)
    }

    /// `softedge_hed`'s control image of `picture` (white edges on black, at its size); with
    /// `safe` (`softedge_hedsafe`) the edges quantised to three steps, as `safe_step` does.
    pub fn soft_edges(&self, picture: &RgbImage, safe: bool) -> Result<GrayImage> {
        soft_edge_bytes(&self.edge_map(picture)?, safe)
    }
}
