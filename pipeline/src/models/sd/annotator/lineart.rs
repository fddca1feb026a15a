//! Line art from a picture, two ways, as A1111's line-art preprocessors and `controlnet_aux`
//! make it:
//! - [`Lineart`]: the informative-drawings generator of `lineart` (`lineart_realistic`:
//!   `sk_model.pth`; `lineart_coarse`: `sk_model2.pth`, the same network): a 7×7 convolution,
//!   two stride-2 convolutions, residual blocks, two stride-2 transposed convolutions and a 7×7
//!   convolution to one sigmoid map, with instance norms and reflection padding; the control
//!   image is its inverse (white lines on black);
//! - [`standard`] (`lineart_standard`, no network): how much darker each pixel is than its
//!   Gaussian-blurred surroundings (σ 6), in its darkest channel, scaled by the median of the
//!   clear lines.

use std::path::Path;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use image::{GrayImage, RgbImage};

use super::super::SdError;
use super::super::kernels::Conv2d;
use super::super::upscaler::swin::reflect_to_multiple;
use super::super::weights::Weights;
use super::up_conv::UpConv;
use super::{gaussian, inverted_lines, picture_tensor};

/// `InstanceNorm2d`'s epsilon.
const EPS: f64 = 1e-5;

/// `xs` `(n, c, h, w)` padded by `pad` on every side by reflection (the edge not repeated), as
/// `ReflectionPad2d(pad)`.
fn reflection_pad(xs: &Tensor, pad: usize) -> Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    let along = |xs: &Tensor, dim: usize, size: usize| -> Result<Tensor> {
        if pad >= size {
            candle_core::bail!("a side of {size} pixels cannot be reflected {pad} pixels");
        }
        let index: Vec<u32> = (1..=pad)
            .rev()
            .chain(0..size)
            .chain((0..pad).map(|i| size - 2 - i))
            .map(|i| i as u32)
            .collect();
        let index = Tensor::from_vec(index, size + 2 * pad, xs.device())?;
        xs.contiguous()?.index_select(&index, dim)
    };
    along(&along(xs, 2, h)?, 3, w)
}

/// `InstanceNorm2d` without learnt scale and shift: each channel of each sample to mean 0 and
/// (biased) variance 1 over its pixels.
pub(super) fn instance_norm(xs: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = xs.dims4()?;
    let flat = xs.reshape((n, c, h * w))?;
    let centred = flat.broadcast_sub(&flat.mean_keepdim(2)?)?;
    let variance = centred.sqr()?.mean_keepdim(2)?;
    centred
        .broadcast_div(&(variance + EPS)?.sqrt()?)?
        .reshape((n, c, h, w))
}

/// The instance norm of `xs`, then a ReLU.
fn norm_relu(xs: &Tensor) -> Result<Tensor> {
    instance_norm(xs)?.relu()
}

/// A 3×3 convolution of `xs` padded by reflection. It runs zero-padded on the reflected
/// picture and drops the outer ring, so that it takes the zero-padded 3×3 kernels' fast path
/// (Winograd on the CPU) for 3% more pixels.
fn reflected_conv3(conv: &Conv2d, xs: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    conv.forward(&reflection_pad(xs, 1)?)?
        .narrow(2, 1, h)?
        .narrow(3, 1, w)
}

/// A residual block: `xs` plus reflection pad, 3×3 convolution, norm, ReLU, reflection pad,
/// 3×3 convolution, norm.
struct Residual {
    conv1: Conv2d,
    conv2: Conv2d,
}

impl Residual {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = norm_relu(&reflected_conv3(&self.conv1, xs)?)?;
        let h = instance_norm(&reflected_conv3(&self.conv2, &h)?)?;
        xs + h
    }
}

/// A loaded line-art generator (`sk_model.pth`, `sk_model2.pth`).
pub struct Lineart {
    first: Conv2d,
    down: [Conv2d; 2],
    residuals: Vec<Residual>,
    up: [UpConv; 2],
    last: Conv2d,
    device: Device,
}

impl Lineart {
    /// Loads `sk_model.pth` or `sk_model2.pth` (or the same names in safetensors) onto `device`;
    /// its width and residual block count are read from the file.
    pub fn load(path: &Path, device: &Device) -> std::result::Result<Self, SdError> {
        let weights = Weights::file(path)?;
        let width = weights
            .shape("model0.1.weight")
            .filter(|s| s.len() == 4 && s[1] == 3)
            .map(|s| s[0])
            .ok_or_else(|| SdError::Invalid {
                path: path.to_path_buf(),
                message: "not a line-art annotator (`sk_model.pth`): it has no `model0.1.weight` taking 3 channels".into(),
            })?;
        let blocks = (0..)
            .take_while(|i| {
                weights
                    .shape(&format!("model2.{i}.conv_block.1.weight"))
                    .is_some()
            })
            .count();
        weights.build(device, DType::F32, |vb| Self::new(vb, width, blocks))
    }

    /// The generator `width` channels wide (4× that between its stride-2 layers) with `blocks`
    /// residual blocks.
    fn new(vb: VarBuilder, width: usize, blocks: usize) -> Result<Self> {
        let up = |i: usize, c_in: usize, c_out: usize| {
            UpConv::new(vb.pp(format!("model3.{i}")), c_in, c_out, 3)
        };
        let residuals = (0..blocks)
            .map(|i| {
                let vb = vb.pp(format!("model2.{i}.conv_block"));
                Ok(Residual {
                    conv1: Conv2d::new(vb.pp("1"), 4 * width, 4 * width, 3, 1, 1)?,
                    conv2: Conv2d::new(vb.pp("5"), 4 * width, 4 * width, 3, 1, 1)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            first: Conv2d::new(vb.pp("model0.1"), 3, width, 7, 1, 0)?,
            down: [
                Conv2d::new(vb.pp("model1.0"), width, 2 * width, 3, 2, 1)?,
                Conv2d::new(vb.pp("model1.3"), 2 * width, 4 * width, 3, 2, 1)?,
            ],
            residuals,
            up: [up(0, 4 * width, 2 * width)?, up(3, 2 * width, width)?],
            last: Conv2d::new(vb.pp("model4.1"), width, 1, 7, 1, 0)?,
            device: vb.device().clone(),
        })
    }

    /// The generator's map of `picture` in 0–1, `(h, w)`: dark lines on white. Sides that are
    /// not multiples of 4 are padded by reflection for the network and cropped back.
    pub fn line_map(&self, picture: &RgbImage) -> Result<Tensor> {
        let xs = picture_tensor(picture, 1.0 / 255.0, &self.device)?;
        let (_, _, h, w) = xs.dims4()?;
        let xs = reflect_to_multiple(&xs, 4)?;
        let mut xs = norm_relu(&self.first.forward(&reflection_pad(&xs, 3)?)?)?;
        for down in &self.down {
            xs = norm_relu(&down.forward(&xs)?)?;
        }
        for residual in &self.residuals {
            xs = residual.forward(&xs)?;
        }
        for up in &self.up {
            xs = norm_relu(&up.forward(&xs)?)?;
        }
        let xs = self.last.forward(&reflection_pad(&xs, 3)?)?;
        candle_nn::ops::sigmoid(&xs.narrow(2, 0, h)?.narrow(3, 0, w)?)?
            .squeeze(0)?
            .squeeze(0)
    }

    /// `lineart`'s control image of `picture`: white lines on black, at its size.
    pub fn lines(&self, picture: &RgbImage) -> Result<GrayImage> {
        inverted_lines(&self.line_map(picture)?, |v| v * 255.0)
    }
}

/// `lineart_standard`'s Gaussian σ.
const SIGMA: f64 = 6.0;
/// `lineart_standard`'s intensity threshold for a clear line.
const CLEAR: f32 = 8.0;

/// `lineart_standard`'s darkness of each pixel of `picture` below its surroundings: the least
/// over the channels of (Gaussian blur − pixel), from 0 to 255, row by row.
pub fn darkness(picture: &RgbImage) -> Vec<f32> {
    let (w, h) = (picture.width() as usize, picture.height() as usize);
    let kernel = gaussian::kernel(SIGMA, gaussian::FLOAT_RADII);
    let mut least = vec![f32::INFINITY; w * h];
    for channel in 0..3 {
        let plane: Vec<f32> = picture.pixels().map(|p| f32::from(p[channel])).collect();
        let blurred = gaussian::blur(&plane, w, h, &kernel);
        for ((least, &b), &x) in least.iter_mut().zip(&blurred).zip(&plane) {
            *least = least.min(b - x);
        }
    }
    least.iter().map(|v| v.clamp(0.0, 255.0)).collect()
}

/// `lineart_standard`'s control image of `picture` (no network): its [`darkness`] divided by the
/// median darkness of the clear lines (above 8; at least 16), times 127, as bytes.
pub fn standard(picture: &RgbImage) -> GrayImage {
    let intensity = darkness(picture);
    let mut clear: Vec<f32> = intensity.iter().copied().filter(|&v| v > CLEAR).collect();
    let median = median(&mut clear).map_or(16.0, |m| m.max(16.0));
    let bytes = intensity
        .iter()
        .map(|v| (v / median * 127.0).clamp(0.0, 255.0) as u8)
        .collect();
    GrayImage::from_raw(picture.width(), picture.height(), bytes)
        .unwrap_or_else(|| GrayImage::new(picture.width(), picture.height()))
}

/// NumPy's median: the middle value, or the mean of the two middle ones; `None` when empty.
fn median(values: &mut [f32]) -> Option<f32> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let (below, &mut middle, _) = values.select_nth_unstable_by(n / 2, f32::total_cmp);
    if n % 2 == 1 {
        return Some(middle);
    }
    let before = below.iter().copied().max_by(f32::total_cmp)?;
    Some((before + middle) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_numpys() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
