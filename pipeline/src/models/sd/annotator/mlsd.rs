//! M-LSD straight line segments (A1111's `mlsd`; the file `mlsd_large_512_fp32.pth` of
//! `lllyasviel/Annotators`) as `controlnet_aux`'s `MLSDdetector` finds and draws them, for the
//! MLSD ControlNet (buildings, rooms, anything made of straight edges): the picture (RGB and a
//! channel of ones, all scaled from 0–255 to −1–1) through MobileNetV2's first 14 layers, a decoder fusing four of
//! them back up to half the picture's size, and a map of segment centres with each one's two
//! ends; the centres that are local maxima (3×3) — the 200 strongest, kept above a value
//! threshold and longer than a distance threshold — become 1-pixel white lines on black
//! ([`draw::line`]). The picture is padded (its edge pixels repeated) to multiples of 16, which
//! the network's four halvings need, and the lines are cut back to it.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Result, Tensor};
use image::{GrayImage, RgbImage};

use super::super::SdError;
use super::super::kernels::{BatchNorm, Conv2d, Slopes, fold_batch_norm};
use super::super::upscaler;
use super::depthwise::Depthwise;
use super::draw;

/// A1111's default thresholds: a centre's least score (after the sigmoid), and a segment's
/// least length (in half-size pixels).
pub const DEFAULT_THRESHOLDS: (f32, f32) = (0.1, 0.1);
/// How many of the strongest centres are read.
const TOP: usize = 200;
/// The sides the network takes are multiples of this.
const MULTIPLE: u32 = 16;
/// MobileNetV2's layers 1–13: each one's stride (the width multiplier's channels are read from
/// the file).
const STRIDES: [usize; 13] = [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1];
/// The layers whose outputs the decoder takes.
const TAPS: [usize; 5] = [1, 3, 6, 10, 13];

/// The file's tensors in f32, and the batch norms folded into the convolutions before them.
struct Folded {
    tensors: HashMap<String, Tensor>,
}

impl Folded {
    fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("no `{name}`")))
    }

    /// The convolution `conv` (`.weight`, `.bias` when it has one) with the batch norm `bn`
    /// after it folded in: `(weight, bias)`.
    fn conv_bn(&self, conv: &str, bn: &str) -> Result<(Tensor, Tensor)> {
        let weight = self.get(&format!("{conv}.weight"))?;
        let out = weight.dim(0)?;
        let bias = match self.tensors.get(&format!("{conv}.bias")) {
            Some(bias) => bias.clone(),
            None => Tensor::zeros(out, DType::F32, weight.device())?,
        };
        let stat = |name: &str| self.get(&format!("{bn}.{name}"));
        let norm = BatchNorm {
            weight: stat("weight")?,
            bias: stat("bias")?,
            mean: stat("running_mean")?,
            var: stat("running_var")?,
        };
        fold_batch_norm(weight, &bias, norm)
    }

    /// A stride-1 convolution with its batch norm folded in, zero-padded by `padding`.
    fn conv(&self, conv: &str, bn: &str, padding: usize) -> Result<Conv2d> {
        let (weight, bias) = self.conv_bn(conv, bn)?;
        Ok(Conv2d::from_weights(weight, bias, padding))
    }
}

/// A depthwise convolution with its batch norm folded in (the bias added after).
struct DepthwiseBn {
    conv: Depthwise,
    bias: Tensor,
}

impl DepthwiseBn {
    fn new(folded: &Folded, prefix: &str, stride: usize) -> Result<Self> {
        let (weight, bias) = folded.conv_bn(&format!("{prefix}.0"), &format!("{prefix}.1"))?;
        // Stride 2 pads one row and column after, as the network's `F.pad(x, (0, 1, 0, 1))`.
        let padding = if stride == 2 { (0, 1) } else { (1, 1) };
        Ok(Self {
            conv: Depthwise::strided(weight, stride, padding),
            bias: bias.reshape((1, (), 1, 1))?,
        })
    }

    /// The convolution, its bias, ReLU6.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        relu6(&self.conv.forward(xs)?.broadcast_add(&self.bias)?)
    }
}

/// `min(max(x, 0), 6)`.
fn relu6(xs: &Tensor) -> Result<Tensor> {
    xs.clamp(0f32, 6f32)
}

/// One of MobileNetV2's inverted residuals: a 1×1 widening (ReLU6; not in the first), a 3×3
/// depthwise convolution (ReLU6), a 1×1 narrowing, added to its input when the sizes allow.
struct Inverted {
    expand: Option<Conv2d>,
    depthwise: DepthwiseBn,
    project: Conv2d,
    residual: bool,
}

impl Inverted {
    fn new(folded: &Folded, i: usize, stride: usize) -> Result<Self> {
        let at = |name: &str| format!("backbone.features.{i}.conv.{name}");
        let first = folded.get(&format!("{}.weight", at("0.0")))?;
        let (expand, depthwise, project) = if first.dim(1)? == 1 {
            (None, at("0"), ("1", "2"))
        } else {
            (
                Some(folded.conv(&at("0.0"), &at("0.1"), 0)?),
                at("1"),
                ("2", "3"),
            )
        };
        // The depthwise layer keeps the width: the input's, unless a 1×1 widens it first.
        let inputs = first.dim(if expand.is_some() { 1 } else { 0 })?;
        let outputs = folded.get(&format!("{}.weight", at(project.0)))?.dim(0)?;
        let project = folded.conv(&at(project.0), &at(project.1), 0)?;
        Ok(Self {
            expand,
            depthwise: DepthwiseBn::new(folded, &depthwise, stride)?,
            project,
            residual: stride == 1 && inputs == outputs,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let relu = Slopes::Uniform(0.0);
        let hidden = match &self.expand {
            Some(conv) => relu6(&conv.forward_leaky(xs, &relu)?)?,
            None => xs.clone(),
        };
        let out = self.project.forward(&self.depthwise.forward(&hidden)?)?;
        if self.residual { out + xs } else { Ok(out) }
    }
}

/// The decoder's fusion (`BlockTypeA`): the finer tap and the path from below, each through a
/// 1×1 (ReLU), the path doubled (bilinear, corners aligned) but at the first, side by side.
struct Fuse {
    tap: Conv2d,
    path: Conv2d,
    upscale: bool,
}

impl Fuse {
    fn new(folded: &Folded, block: &str, upscale: bool) -> Result<Self> {
        Ok(Self {
            tap: folded.conv(&format!("{block}.conv2.0"), &format!("{block}.conv2.1"), 0)?,
            path: folded.conv(&format!("{block}.conv1.0"), &format!("{block}.conv1.1"), 0)?,
            upscale,
        })
    }

    fn forward(&self, tap: &Tensor, path: &Tensor) -> Result<Tensor> {
        let relu = Slopes::Uniform(0.0);
        let mut path = self.path.forward_leaky(path, &relu)?;
        if self.upscale {
            let (_, _, h, w) = path.dims4()?;
            path = path.upsample_bilinear2d(2 * h, 2 * w, true)?;
        }
        Tensor::cat(&[&self.tap.forward_leaky(tap, &relu)?, &path], 1)
    }
}

/// The decoder's refinement (`BlockTypeB`): a 3×3 (ReLU) added to its input, a 3×3 (ReLU).
struct Refine {
    conv1: Conv2d,
    conv2: Conv2d,
}

impl Refine {
    fn new(folded: &Folded, block: &str) -> Result<Self> {
        let conv = |i: usize| {
            folded.conv(
                &format!("{block}.conv{i}.0"),
                &format!("{block}.conv{i}.1"),
                1,
            )
        };
        Ok(Self {
            conv1: conv(1)?,
            conv2: conv(2)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let relu = Slopes::Uniform(0.0);
        let xs = (self.conv1.forward_leaky(xs, &relu)? + xs)?;
        self.conv2.forward_leaky(&xs, &relu)
    }
}

/// A 3×3 convolution of dilation 5 and padding 5 (then ReLU), run as the plain 3×3 of
/// padding 1 (`Conv2d`'s fast paths) over each of the 25 grids of every fifth pixel, the grids
/// side by side in the batch: a dilated tap of one pixel is a plain tap of its grid.
struct Dilated(Conv2d);

impl Dilated {
    const DILATION: usize = 5;

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let d = Self::DILATION;
        let (n, c, h, w) = xs.dims4()?;
        let (gh, gw) = (h.div_ceil(d), w.div_ceil(d));
        // Zeros past the edge, as the padding would read.
        let grids = xs
            .pad_with_zeros(2, 0, gh * d - h)?
            .pad_with_zeros(3, 0, gw * d - w)?
            .reshape((n, c, gh, d, gw, d))?
            .permute((0, 3, 5, 1, 2, 4))?
            .contiguous()?
            .reshape((n * d * d, c, gh, gw))?;
        let out = self.0.forward_leaky(&grids, &Slopes::Uniform(0.0))?;
        let co = out.dim(1)?;
        out.reshape((n, d, d, co, gh, gw))?
            .permute((0, 3, 4, 1, 5, 2))?
            .contiguous()?
            .reshape((n, co, gh * d, gw * d))?
            .narrow(2, 0, h)?
            .narrow(3, 0, w)
    }
}

/// A loaded M-LSD network (`mlsd_large_512_fp32.pth`).
pub struct Mlsd {
    /// The first layer's 3×3 stride-2 convolution (batch norm folded): weight and bias.
    stem: (Tensor, Tensor),
    layers: Vec<Inverted>,
    fuses: Vec<Fuse>,
    refines: Vec<Refine>,
    /// The last block: a 3×3 of dilation 5 (ReLU), a 3×3 (ReLU), a 1×1 to the maps.
    dilated: Dilated,
    last: Conv2d,
    maps: Conv2d,
    device: Device,
}

impl Mlsd {
    /// Loads `mlsd_large_512_fp32.pth` (or the same names in safetensors) onto `device`, in
    /// f32.
    pub fn load(path: &Path, device: &Device) -> std::result::Result<Self, SdError> {
        let tensors = upscaler::read(path)?;
        if !(tensors.contains_key("backbone.features.0.0.weight")
            && tensors.contains_key("block23.conv3.weight"))
        {
            return Err(SdError::Invalid {
                path: path.to_path_buf(),
                message: "not an M-LSD network (`mlsd_large_512_fp32.pth`): it has no `backbone.features.0.0.weight` and `block23.conv3.weight`".into(),
            });
        }
        let load = || -> Result<Self> {
            let tensors = tensors
                .into_iter()
                .map(|(name, t)| Ok((name, t.to_dtype(DType::F32)?.to_device(device)?)))
                .collect::<Result<HashMap<_, _>>>()?;
            let folded = Folded { tensors };
            let block = |i: usize, j: usize| format!("block{i}.conv{j}");
            Ok(Self {
                stem: folded.conv_bn("backbone.features.0.0", "backbone.features.0.1")?,
                layers: STRIDES
                    .iter()
                    .enumerate()
                    .map(|(i, &stride)| Inverted::new(&folded, i + 1, stride))
                    .collect::<Result<_>>()?,
                fuses: [(15, false), (17, true), (19, true), (21, true)]
                    .iter()
                    .map(|&(b, up)| Fuse::new(&folded, &format!("block{b}"), up))
                    .collect::<Result<_>>()?,
                refines: [16, 18, 20, 22]
                    .iter()
                    .map(|b| Refine::new(&folded, &format!("block{b}")))
                    .collect::<Result<_>>()?,
                dilated: Dilated(folded.conv(
                    &format!("{}.0", block(23, 1)),
                    &format!("{}.1", block(23, 1)),
                    1,
                )?),
                last: folded.conv(
                    &format!("{}.0", block(23, 2)),
                    &format!("{}.1", block(23, 2)),
                    1,
                )?,
                maps: Conv2d::from_weights(
                    folded.get("block23.conv3.weight")?.clone(),
                    folded.get("block23.conv3.bias")?.clone(),
                    0,
                ),
                device: device.clone(),
            })
        };
        load().map_err(|source| SdError::Weights {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The network's maps of `picture` (sides multiples of 16): `(9, h/2, w/2)` — the
    /// segment centres' logits, then each centre's displacements to its two ends (x₀, y₀, x₁,
    /// y₁).
    pub fn maps(&self, picture: &RgbImage) -> Result<Tensor> {
        let (w, h) = (picture.width() as usize, picture.height() as usize);
        // The fourth channel is ones, scaled with the rest as `pred_lines` scales it.
        let mut planes = vec![1.0 / 127.5 - 1.0; 4 * h * w];
        for (i, p) in picture.pixels().enumerate() {
            for c in 0..3 {
                planes[c * h * w + i] = f32::from(p.0[c]) / 127.5 - 1.0;
            }
        }
        let xs = Tensor::from_vec(planes, (1, 4, h, w), &self.device)?;
        let (weight, bias) = &self.stem;
        let xs = xs
            .pad_with_zeros(2, 0, 1)?
            .pad_with_zeros(3, 0, 1)?
            .conv2d(weight, 0, 2, 1, 1)?
            .broadcast_add(&bias.reshape((1, (), 1, 1))?)?;
        let mut xs = relu6(&xs)?;
        let mut taps = Vec::with_capacity(TAPS.len());
        for (i, layer) in self.layers.iter().enumerate() {
            xs = layer.forward(&xs)?;
            if TAPS.contains(&(i + 1)) {
                taps.push(xs.clone());
            }
        }
        let mut path = taps[4].clone();
        for (level, (fuse, refine)) in self.fuses.iter().zip(&self.refines).enumerate() {
            path = refine.forward(&fuse.forward(&taps[3 - level], &path)?)?;
        }
        let path = self.dilated.forward(&path)?;
        let path = self.last.forward_leaky(&path, &Slopes::Uniform(0.0))?;
        self.maps.forward(&path)?.narrow(1, 7, 9)?.squeeze(0)
    }

    /// The segments M-LSD finds in `picture` (any size), `[x₀, y₀, x₁, y₁]` in its pixels:
    /// centres scoring above `thresholds.0` whose segments are longer than `thresholds.1`
    /// (half-size pixels), as `controlnet_aux`'s `pred_lines` decodes them.
    pub fn segments(&self, picture: &RgbImage, thresholds: (f32, f32)) -> Result<Vec<[f64; 4]>> {
        if picture.width() == 0 || picture.height() == 0 {
            candle_core::bail!(
                "M-LSD: an empty {}×{} picture",
                picture.width(),
                picture.height()
            );
        }
        let padded = pad_to_multiple(picture);
        let maps = self.maps(&padded)?;
        let (_, h, w) = maps.dims3()?;
        let values = maps.flatten_all()?.to_vec1::<f32>()?;
        let (centres, displacements) = values.split_at(h * w);
        let heat: Vec<f32> = centres.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect();
        // Local maxima of the 3×3 neighbourhood (PyTorch's max pool pads with −∞).
        let kept: Vec<f32> = (0..h * w)
            .map(|i| {
                let (y, x) = (i / w, i % w);
                let mut most = f32::NEG_INFINITY;
                for ny in y.saturating_sub(1)..(y + 2).min(h) {
                    for nx in x.saturating_sub(1)..(x + 2).min(w) {
                        most = most.max(heat[ny * w + nx]);
                    }
                }
                if most == heat[i] { heat[i] } else { 0.0 }
            })
            .collect();
        let mut order: Vec<usize> = (0..h * w).collect();
        order.sort_by(|&a, &b| kept[b].total_cmp(&kept[a]));
        let plane = |c: usize, i: usize| displacements[c * h * w + i];
        let segments = order
            .into_iter()
            .take(TOP)
            .filter_map(|i| {
                let [x0, y0, x1, y1] = [plane(0, i), plane(1, i), plane(2, i), plane(3, i)];
                let length = ((x0 - x1).powi(2) + (y0 - y1).powi(2)).sqrt();
                (kept[i] > thresholds.0 && length > thresholds.1).then(|| {
                    let (x, y) = ((i % w) as f64, (i / w) as f64);
                    [
                        2.0 * (x + f64::from(x0)),
                        2.0 * (y + f64::from(y0)),
                        2.0 * (x + f64::from(x1)),
                        2.0 * (y + f64::from(y1)),
                    ]
                })
            })
            .collect();
        Ok(segments)
    }

    /// `mlsd`'s control image of `picture` at `thresholds` ([`DEFAULT_THRESHOLDS`]): its
    /// segments as 1-pixel white lines on black, at its size.
    pub fn lines(&self, picture: &RgbImage, thresholds: (f32, f32)) -> Result<GrayImage> {
        let (w, h) = picture.dimensions();
        let mut canvas = GrayImage::new(w.next_multiple_of(MULTIPLE), h.next_multiple_of(MULTIPLE));
        for [x0, y0, x1, y1] in self.segments(picture, thresholds)? {
            // Truncated toward zero, as Python's `int`.
            draw::line(
                &mut canvas,
                (x0 as i64, y0 as i64),
                (x1 as i64, y1 as i64),
                255,
            );
        }
        Ok(image::imageops::crop_imm(&canvas, 0, 0, w, h).to_image())
    }
}

/// `picture` with its last column and row repeated out to multiples of 16.
fn pad_to_multiple(picture: &RgbImage) -> RgbImage {
    let (w, h) = picture.dimensions();
    let (pw, ph) = (w.next_multiple_of(MULTIPLE), h.next_multiple_of(MULTIPLE));
    if (pw, ph) == (w, h) {
        return picture.clone();
    }
    RgbImage::from_fn(pw, ph, |x, y| {
        *picture.get_pixel(x.min(w.saturating_sub(1)), y.min(h.saturating_sub(1)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dilated_convolution_by_grids_matches_candles() {
        let device = Device::Cpu;
        let weight = Tensor::randn(0f32, 1.0, (16, 16, 3, 3), &device).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 16, &device).unwrap();
        let dilated = Dilated(Conv2d::from_weights(weight.clone(), bias.clone(), 1));
        // 36×41: grids of 8×9, the last ones short; 170×165: grids of 34×33, Winograd's.
        for (h, w) in [(36, 41), (170, 165)] {
            let xs = Tensor::randn(0f32, 1.0, (1, 16, h, w), &device).unwrap();
            let theirs = xs
                .conv2d(&weight, 5, 1, 5, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, 16, 1, 1)).unwrap())
                .unwrap()
                .relu()
                .unwrap();
            let ours = dilated.forward(&xs).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let gap = super::super::super::max_abs_diff(&ours, &theirs);
            assert!(gap < 1e-3, "{h}×{w}: {gap}");
        }
    }
}
