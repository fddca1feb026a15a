//! PLKSR (Lee et al. 2024, "Partial Large Kernel CNNs for Efficient Super-Resolution") and
//! its real-world variant RealPLKSR, as their authors, neosr and traiNNer save them and
//! spandrel reads them: a 3×3 convolution into features, then blocks of a channel mixer (two
//! convolutions to twice the channels and back, GELU between them in PLKSR, Mish in
//! RealPLKSR), one large kernel (17×17 in the releases) over the first part of the channels,
//! an element-wise attention (the features times a sigmoid of a 3×3 convolution of them) and
//! a 1×1 refinement, each block added to its input — RealPLKSR's also normalised, by a group
//! norm after the block or a layer norm before it; then a 3×3 convolution to scale² times
//! the image's channels, plus the input's channels each repeated scale² times,
//! pixel-shuffled into the larger image or, in RealPLKSR, sampled into it by [`DySample`].

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use super::super::group_norm::GroupNorm;
use super::super::kernels::{Conv2d, gelu_erf, mish, sigmoid_gate};
use super::compact::pixel_shuffle;
use super::dysample::DySample;

/// Groups of RealPLKSR's group norms (not stored; spandrel's and the trainers' default).
const NORM_GROUPS: usize = 4;

/// Which network of the family, and what only it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The paper's PLKSR: no norms, GELU in the channel mixer, a pixel shuffle.
    Original,
    /// RealPLKSR.
    Real {
        /// Whether each block opens with a layer norm rather than closing with a group norm.
        layer_norm: bool,
        /// The sampling groups of its DySample upsampler, if it has one rather than a pixel
        /// shuffle.
        dysample: Option<usize>,
    },
}

/// How a block's large kernel is stored. The sparse ones are sums of convolutions centred on
/// the same pixel, so they are folded at load into the one kernel they add up to (the
/// paper's reparameterisation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LargeKernel {
    /// One square kernel, `lk.conv`.
    Plain,
    /// PLKSR's SparsePLK ablation: `lk.convs.0`–`3`, four 5×5 kernels dilated 1, 2, 3 and 4
    /// (the dilations are not stored; spandrel's defaults), 17×17 folded.
    Sparse,
    /// PLKSR's RectSparsePLK ablation: `lk.mn_conv` m×n, `lk.nm_conv` n×m and `lk.nn_conv`
    /// n×n, n = m / 3, m×m folded.
    Rect,
}

/// The sparse kernels' dilations (spandrel's defaults; not stored).
const SPARSE_DILATIONS: [usize; 4] = [1, 2, 3, 4];
/// The sparse kernels' side.
const SPARSE_SIDE: usize = 5;

/// The network's sizes, read from its weights' shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlksrShape {
    /// Which network it is.
    pub variant: Variant,
    /// Feature channels (64 in the releases).
    pub features: usize,
    /// Blocks (28 in the releases).
    pub blocks: usize,
    /// The sides of the channel mixer's two kernels: 3 and 3 in RealPLKSR; in PLKSR 3 and 1
    /// (its CCM), 1 and 3 (ICCM) or 3 and 3 (DCCM).
    pub mixer: (usize, usize),
    /// How the large kernel is stored.
    pub large: LargeKernel,
    /// The side of the large kernel (once folded into one).
    pub kernel: usize,
    /// The channels the large kernel convolves (a quarter of them in the releases).
    pub partial: usize,
    /// Whether each block has its element-wise attention.
    pub attention: bool,
    /// How many times larger the output is.
    pub scale: usize,
}

impl PlksrShape {
    /// What the network is, for messages: `PLKSR (28 blocks, CCM, 17×17 kernels, 4×)` (its
    /// channel mixer CCM, ICCM or DCCM) or `RealPLKSR (28 blocks, 17×17 kernels, 4×,
    /// DySample)`.
    pub fn description(&self) -> String {
        let (network, mixer, dysample) = match self.variant {
            Variant::Original => (
                "PLKSR",
                match self.mixer {
                    (3, 1) => "CCM, ",
                    (1, 3) => "ICCM, ",
                    _ => "DCCM, ",
                },
                "",
            ),
            Variant::Real { dysample, .. } => (
                "RealPLKSR",
                "",
                if dysample.is_some() { ", DySample" } else { "" },
            ),
        };
        let (blocks, k, scale) = (self.blocks, self.kernel, self.scale);
        format!("{network} ({blocks} blocks, {mixer}{k}×{k} kernels, {scale}×{dysample})")
    }
}

/// Whether `has` names a PLKSR network's tensors, the original or the real-world variant
/// (spandrel's test); [`shape_of`] refuses the variants not read.
pub fn is_plksr(has: impl Fn(&str) -> bool) -> bool {
    has("feats.0.weight")
        && [
            "feats.1.lk.conv.weight",
            "feats.1.lk.convs.0.weight",
            "feats.1.lk.mn_conv.weight",
        ]
        .into_iter()
        .any(&has)
        && has("feats.1.refine.weight")
        && (has("feats.1.channe_mixer.0.weight") || has("feats.1.channel_mixer.0.weight"))
}

/// The network's sizes from its tensors' shapes (`shape(name)`), as spandrel reads them, or
/// what does not fit.
pub fn shape_of(
    shape: impl Fn(&str) -> Option<Vec<usize>>,
) -> std::result::Result<PlksrShape, String> {
    let has = |name: &str| shape(name).is_some();
    // The original names its mixer `channe_mixer` (sic); RealPLKSR spells it out.
    let real = has("feats.1.channel_mixer.0.weight");
    let mixer_name = if real {
        "channel_mixer"
    } else {
        "channe_mixer"
    };
    let first = shape("feats.0.weight").ok_or("no `feats.0.weight`")?;
    if first.len() != 4 || first[1] != 3 {
        return Err(format!(
            "`feats.0.weight` is {first:?}: only RGB upscalers are read"
        ));
    }
    let features = first[0];
    let dims = |name: &str| {
        shape(name)
            .filter(|dims| dims.len() == 4 && dims[0] == dims[1])
            .ok_or_else(|| format!("`{name}` is missing or not a square map of channels"))
    };
    let (large, kernel, partial) = if has("feats.1.lk.conv.weight") {
        let dims = dims("feats.1.lk.conv.weight")?;
        if dims[2] != dims[3] || dims[2] % 2 == 0 {
            return Err(format!(
                "`feats.1.lk.conv.weight` is {dims:?}: the large kernel must be square and odd"
            ));
        }
        (LargeKernel::Plain, dims[2], dims[0])
    } else if has("feats.1.lk.mn_conv.weight") {
        let mn = dims("feats.1.lk.mn_conv.weight")?;
        let (m, n) = (mn[2], mn[2] / 3);
        for (name, sides) in [
            ("mn_conv", [m, n]),
            ("nm_conv", [n, m]),
            ("nn_conv", [n, n]),
        ] {
            let name = format!("feats.1.lk.{name}.weight");
            let found = dims(&name)?;
            if found[0] != mn[0] || found[2..] != sides || m % 2 == 0 || n % 2 == 0 {
                return Err(format!(
                    "`{name}` is {found:?}: RectSparsePLK's kernels are {m}×{n}, {n}×{m} and {n}×{n} (odd sides, n = m / 3) over {} channels",
                    mn[0]
                ));
            }
        }
        (LargeKernel::Rect, m, mn[0])
    } else {
        let first = dims("feats.1.lk.convs.0.weight")?;
        let count = (0..)
            .take_while(|i| has(&format!("feats.1.lk.convs.{i}.weight")))
            .count();
        let fits = |i: usize| {
            dims(&format!("feats.1.lk.convs.{i}.weight"))
                .is_ok_and(|d| d[0] == first[0] && d[2..] == [SPARSE_SIDE, SPARSE_SIDE])
        };
        if count != SPARSE_DILATIONS.len() || !(0..count).all(fits) {
            return Err(format!(
                "its large kernel is SparsePLK with {count} kernels; only its default, four {SPARSE_SIDE}×{SPARSE_SIDE} kernels dilated 1 to 4, is read (the dilations are not stored)"
            ));
        }
        let side = (SPARSE_SIDE - 1) * SPARSE_DILATIONS[3] + 1;
        (LargeKernel::Sparse, side, first[0])
    };
    if large != LargeKernel::Plain && real {
        return Err("RealPLKSR with a sparse large kernel is not a network spandrel reads".into());
    }
    if partial > features {
        return Err(format!(
            "its large kernel convolves {partial} channels of {features}"
        ));
    }
    let side = |name: String| {
        shape(&name)
            .filter(|dims| dims.len() == 4 && dims[2] == dims[3] && matches!(dims[2], 1 | 3))
            .map(|dims| dims[2])
            .ok_or_else(|| format!("`{name}` is missing or not a 1×1 or 3×3 kernel"))
    };
    let mixer = (
        side(format!("feats.1.{mixer_name}.0.weight"))?,
        side(format!("feats.1.{mixer_name}.2.weight"))?,
    );
    if mixer == (1, 1) || (real && mixer != (3, 3)) {
        return Err(format!(
            "its channel mixer's kernels are {}×{0} and {}×{1}, not a mixer PLKSR has",
            mixer.0, mixer.1
        ));
    }
    // feats.0 the first convolution, feats.1..=n the blocks, then the last convolution (in
    // RealPLKSR after a dropout, feats.{n+1}, which stores nothing).
    let blocks = (1..)
        .take_while(|i| has(&format!("feats.{i}.refine.weight")))
        .count();
    let last = format!("feats.{}.weight", blocks + if real { 2 } else { 1 });
    let channels = shape(&last)
        .and_then(|dims| dims.first().copied())
        .ok_or_else(|| format!("no `{last}` after {blocks} blocks"))?;
    let scale = (1..=8).find(|s| 3 * s * s == channels).ok_or_else(|| {
        format!("the last convolution's {channels} channels are not 3·scale² for an RGB image")
    })?;
    let variant = if real {
        // DySample's initial positions: 2 coordinates × groups × scale² output pixels.
        let dysample = match shape("to_img.init_pos") {
            None => None,
            Some(dims) => {
                let positions = dims.get(1).copied().unwrap_or(0);
                let per_group = 2 * scale * scale;
                if dims.len() != 4 || positions == 0 || !positions.is_multiple_of(per_group) {
                    return Err(format!(
                        "DySample's `to_img.init_pos` is {dims:?}, not (1, 2·groups·{scale}², 1, 1)"
                    ));
                }
                Some(positions / per_group)
            }
        };
        Variant::Real {
            layer_norm: has("feats.1.layer_norm.weight"),
            dysample,
        }
    } else {
        Variant::Original
    };
    Ok(PlksrShape {
        variant,
        features,
        blocks,
        mixer,
        large,
        kernel,
        partial,
        attention: has("feats.1.attn.f.0.weight"),
        scale,
    })
}

/// How a block is normalised.
enum Norm {
    /// None (PLKSR).
    None,
    /// A layer norm over the channels of each pixel, before the block.
    Before(LayerNorm),
    /// A group norm after the block.
    After(GroupNorm),
}

/// One partial-large-kernel block.
struct Block {
    norm: Norm,
    mix_in: Conv2d,
    /// GELU between the mixer's convolutions (PLKSR), or Mish (RealPLKSR).
    gelu: bool,
    mix_out: Conv2d,
    large: Conv2d,
    partial: usize,
    attention: Option<Conv2d>,
    refine: Conv2d,
}

impl Block {
    fn new(vb: VarBuilder, shape: &PlksrShape) -> Result<Self> {
        let c = shape.features;
        let conv =
            |name: &str, c_in, c_out, k: usize| Conv2d::new(vb.pp(name), c_in, c_out, k, 1, k / 2);
        let (norm, mixer) = match shape.variant {
            Variant::Original => (Norm::None, "channe_mixer"),
            Variant::Real {
                layer_norm: true, ..
            } => (
                Norm::Before(candle_nn::layer_norm(c, 1e-6, vb.pp("layer_norm"))?),
                "channel_mixer",
            ),
            Variant::Real { .. } => (
                Norm::After(GroupNorm::new(NORM_GROUPS, c, 1e-5, vb.pp("norm"))?),
                "channel_mixer",
            ),
        };
        let (k, p) = (shape.kernel, shape.partial);
        Ok(Self {
            norm,
            mix_in: conv(&format!("{mixer}.0"), c, 2 * c, shape.mixer.0)?,
            gelu: shape.variant == Variant::Original,
            mix_out: conv(&format!("{mixer}.2"), 2 * c, c, shape.mixer.1)?,
            large: match shape.large {
                LargeKernel::Plain => conv("lk.conv", p, p, k)?,
                LargeKernel::Sparse => fold(
                    vb.pp("lk"),
                    p,
                    k,
                    &SPARSE_DILATIONS
                        .map(|d| (format!("convs.{}", d - 1), (SPARSE_SIDE, SPARSE_SIDE), d)),
                )?,
                LargeKernel::Rect => {
                    let n = k / 3;
                    fold(
                        vb.pp("lk"),
                        p,
                        k,
                        &[
                            ("mn_conv".to_string(), (k, n), 1),
                            ("nm_conv".to_string(), (n, k), 1),
                            ("nn_conv".to_string(), (n, n), 1),
                        ],
                    )?
                }
            },
            partial: p,
            attention: shape
                .attention
                .then(|| conv("attn.f.0", c, c, 3))
                .transpose()?,
            refine: conv("refine", c, c, 1)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let normed = match &self.norm {
            Norm::Before(norm) => norm
                .forward(&xs.permute((0, 2, 3, 1))?.contiguous()?)?
                .permute((0, 3, 1, 2))?
                .contiguous()?,
            Norm::After(_) | Norm::None => xs.clone(),
        };
        let widened = self.mix_in.forward(&normed)?;
        let activated = if self.gelu {
            gelu_erf(&widened)?
        } else {
            mish(&widened)?
        };
        let mixed = self.mix_out.forward(&activated)?;
        let c = mixed.dim(1)?;
        let large = self.large.forward(&mixed.narrow(1, 0, self.partial)?)?;
        let mut out = Tensor::cat(
            &[&large, &mixed.narrow(1, self.partial, c - self.partial)?],
            1,
        )?;
        if let Some(attention) = &self.attention {
            out = sigmoid_gate(&out, &attention.forward(&out)?)?;
        }
        let out = self.refine.forward(&out)?;
        let out = match &self.norm {
            Norm::After(norm) => norm.forward(&out)?,
            Norm::Before(_) | Norm::None => out,
        };
        out + xs
    }
}

/// The `side`×`side` convolution of `channels` that the stride-1 convolutions `parts` (each its
/// name under `vb`, its kernel's sides and dilation, padded to keep the size) add up to: each
/// kernel, its taps spread by the dilation, centred in the larger one, and the biases summed.
fn fold(
    vb: VarBuilder,
    channels: usize,
    side: usize,
    parts: &[(String, (usize, usize), usize)],
) -> Result<Conv2d> {
    let mut weight = vec![0f32; channels * channels * side * side];
    let mut bias = vec![0f32; channels];
    for (name, (kh, kw), dilation) in parts {
        let vb = vb.pp(name);
        let part = vb
            .get((channels, channels, *kh, *kw), "weight")?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (reach_h, reach_w) = ((kh - 1) * dilation, (kw - 1) * dilation);
        let (top, left) = ((side - 1 - reach_h) / 2, (side - 1 - reach_w) / 2);
        for (plane, taps) in part.chunks_exact(kh * kw).enumerate() {
            let folded = &mut weight[plane * side * side..(plane + 1) * side * side];
            for (at, tap) in taps.iter().enumerate() {
                let (y, x) = (top + at / kw * dilation, left + at % kw * dilation);
                folded[y * side + x] += tap;
            }
        }
        let part_bias = vb
            .get(channels, "bias")?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        for (sum, b) in bias.iter_mut().zip(part_bias) {
            *sum += b;
        }
    }
    let device = vb.device();
    let weight =
        Tensor::from_vec(weight, (channels, channels, side, side), device)?.to_dtype(vb.dtype())?;
    let bias = Tensor::from_vec(bias, channels, device)?.to_dtype(vb.dtype())?;
    Ok(Conv2d::from_weights(weight, bias, side / 2))
}

/// How the last convolution's channels become the larger image.
enum ToImage {
    PixelShuffle,
    DySample(DySample),
}

/// PLKSR or RealPLKSR, its weights under `feats.N` (and `to_img` for DySample).
pub struct Plksr {
    scale: usize,
    first: Conv2d,
    blocks: Vec<Block>,
    last: Conv2d,
    to_image: ToImage,
}

impl Plksr {
    /// Builds the network of `shape` from `vb`.
    pub fn new(vb: VarBuilder, shape: PlksrShape) -> Result<Self> {
        let (c, s) = (shape.features, shape.scale);
        let (last, dysample) = match shape.variant {
            Variant::Original => (shape.blocks + 1, None),
            Variant::Real { dysample, .. } => (shape.blocks + 2, dysample),
        };
        Ok(Self {
            scale: s,
            first: Conv2d::new(vb.pp("feats.0"), 3, c, 3, 1, 1)?,
            blocks: (1..=shape.blocks)
                .map(|i| Block::new(vb.pp(format!("feats.{i}")), &shape))
                .collect::<Result<_>>()?,
            last: Conv2d::new(vb.pp(format!("feats.{last}")), c, 3 * s * s, 3, 1, 1)?,
            to_image: match dysample {
                Some(groups) => {
                    ToImage::DySample(DySample::new(vb.pp("to_img"), 3 * s * s, 3, s, groups)?)
                }
                None => ToImage::PixelShuffle,
            },
        })
    }

    /// `(n, 3, h, w)` in [0, 1] to `(n, 3, h·scale, w·scale)`, unclamped.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut out = self.first.forward(xs)?;
        for block in &self.blocks {
            out = block.forward(&out)?;
        }
        let (n, c, h, w) = xs.dims4()?;
        let repeats = self.scale * self.scale;
        let repeated = xs
            .unsqueeze(2)?
            .broadcast_as((n, c, repeats, h, w))?
            .reshape((n, c * repeats, h, w))?;
        let out = (self.last.forward(&out)? + repeated)?;
        match &self.to_image {
            ToImage::PixelShuffle => pixel_shuffle(&out, self.scale),
            ToImage::DySample(up) => up.forward(&out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use std::collections::HashMap;

    #[test]
    fn folds_sparse_kernels_into_the_convolution_they_add_up_to() {
        let device = Device::Cpu;
        let c = 3;
        let random = |dims: &[usize]| Tensor::randn(0f32, 1.0, dims, &device).unwrap();
        let xs = random(&[2, c, 23, 19]);
        let sparse = SPARSE_DILATIONS.map(|d| (format!("convs.{}", d - 1), (5, 5), d));
        let rect = [
            ("mn_conv".to_string(), (15, 5), 1),
            ("nm_conv".to_string(), (5, 15), 1),
            ("nn_conv".to_string(), (5, 5), 1),
        ];
        for (side, parts) in [(17, &sparse[..]), (15, &rect[..])] {
            let mut tensors = HashMap::new();
            let mut expected = Tensor::zeros((2, c, 23, 19), DType::F32, &device).unwrap();
            for (name, (kh, kw), d) in parts {
                let (weight, bias) = (random(&[c, c, *kh, *kw]), random(&[c]));
                // Each part as PyTorch runs it: padded by its reach, dilated.
                let padded = xs
                    .pad_with_zeros(2, (kh - 1) * d / 2, (kh - 1) * d / 2)
                    .and_then(|p| p.pad_with_zeros(3, (kw - 1) * d / 2, (kw - 1) * d / 2))
                    .unwrap();
                let out = padded
                    .conv2d(&weight, 0, 1, *d, 1)
                    .and_then(|o| o.broadcast_add(&bias.reshape((1, c, 1, 1))?))
                    .unwrap();
                expected = (expected + out).unwrap();
                tensors.insert(format!("{name}.weight"), weight);
                tensors.insert(format!("{name}.bias"), bias);
            }
            let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
            let folded = fold(vb, c, side, parts).unwrap();
            let diff = (folded.forward(&xs).unwrap() - &expected)
                .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
                .unwrap();
            assert!(diff < 1e-4, "{side}×{side}: {diff}");
        }
    }

    #[test]
    fn reads_realplksrs_sizes_and_refuses_what_it_does_not_run() {
        let mut shapes = HashMap::from([
            ("feats.0.weight", vec![16, 3, 3, 3]),
            ("feats.1.channel_mixer.0.weight", vec![32, 16, 3, 3]),
            ("feats.1.channel_mixer.2.weight", vec![16, 32, 3, 3]),
            ("feats.1.lk.conv.weight", vec![4, 4, 17, 17]),
            ("feats.1.attn.f.0.weight", vec![16, 16, 3, 3]),
            ("feats.1.refine.weight", vec![16, 16, 1, 1]),
            ("feats.2.refine.weight", vec![16, 16, 1, 1]),
            ("feats.4.weight", vec![12, 16, 3, 3]),
        ]);
        let shape = shape_of(|n| shapes.get(n).cloned()).unwrap();
        assert_eq!(
            shape,
            PlksrShape {
                variant: Variant::Real {
                    layer_norm: false,
                    dysample: None
                },
                features: 16,
                blocks: 2,
                mixer: (3, 3),
                large: LargeKernel::Plain,
                kernel: 17,
                partial: 4,
                attention: true,
                scale: 2,
            }
        );
        assert_eq!(
            shape.description(),
            "RealPLKSR (2 blocks, 17×17 kernels, 2×)"
        );
        assert!(is_plksr(|n| shapes.contains_key(n)));
        shapes.insert("to_img.init_pos", vec![1, 32, 1, 1]);
        let shape = shape_of(|n| shapes.get(n).cloned()).unwrap();
        assert_eq!(
            shape.variant,
            Variant::Real {
                layer_norm: false,
                dysample: Some(4)
            }
        );
        assert_eq!(
            shape.description(),
            "RealPLKSR (2 blocks, 17×17 kernels, 2×, DySample)"
        );
        shapes.insert("to_img.init_pos", vec![1, 2, 4, 1, 1]);
        let error = shape_of(|n| shapes.get(n).cloned()).unwrap_err();
        assert!(error.contains("DySample"), "{error}");
        shapes.remove("to_img.init_pos");
        // RealPLKSR's mixer is always 3×3 then 3×3.
        shapes.insert("feats.1.channel_mixer.2.weight", vec![16, 32, 1, 1]);
        let error = shape_of(|n| shapes.get(n).cloned()).unwrap_err();
        assert!(error.contains("3×3 and 1×1"), "{error}");
        // The sparse ablations split the large kernel.
        let large = shapes.remove("feats.1.lk.conv.weight").unwrap();
        shapes.insert("feats.1.lk.convs.0.weight", large);
        assert!(is_plksr(|n| shapes.contains_key(n)));
        let error = shape_of(|n| shapes.get(n).cloned()).unwrap_err();
        assert!(error.contains("SparsePLK"), "{error}");
    }

    #[test]
    fn reads_the_original_plksr_with_each_of_its_channel_mixers() {
        // The original: `channe_mixer` (sic), no dropout before the last convolution.
        let mut shapes = HashMap::from([
            ("feats.0.weight", vec![8, 3, 3, 3]),
            ("feats.1.channe_mixer.0.weight", vec![16, 8, 3, 3]),
            ("feats.1.channe_mixer.2.weight", vec![8, 16, 1, 1]),
            ("feats.1.lk.conv.weight", vec![2, 2, 9, 9]),
            ("feats.1.refine.weight", vec![8, 8, 1, 1]),
            ("feats.2.weight", vec![27, 8, 3, 3]),
        ]);
        assert!(is_plksr(|n| shapes.contains_key(n)));
        let shape = shape_of(|n| shapes.get(n).cloned()).unwrap();
        assert_eq!(
            shape,
            PlksrShape {
                variant: Variant::Original,
                features: 8,
                blocks: 1,
                mixer: (3, 1),
                large: LargeKernel::Plain,
                kernel: 9,
                partial: 2,
                attention: false,
                scale: 3,
            }
        );
        assert_eq!(
            shape.description(),
            "PLKSR (1 blocks, CCM, 9×9 kernels, 3×)"
        );
        for (sides, name) in [((1, 3), "ICCM"), ((3, 3), "DCCM")] {
            shapes.insert(
                "feats.1.channe_mixer.0.weight",
                vec![16, 8, sides.0, sides.0],
            );
            shapes.insert(
                "feats.1.channe_mixer.2.weight",
                vec![8, 16, sides.1, sides.1],
            );
            let shape = shape_of(|n| shapes.get(n).cloned()).unwrap();
            assert_eq!(shape.mixer, sides);
            assert!(
                shape.description().contains(name),
                "{}",
                shape.description()
            );
        }
        shapes.insert("feats.1.channe_mixer.0.weight", vec![16, 8, 1, 1]);
        shapes.insert("feats.1.channe_mixer.2.weight", vec![8, 16, 1, 1]);
        let error = shape_of(|n| shapes.get(n).cloned()).unwrap_err();
        assert!(error.contains("1×1 and 1×1"), "{error}");
        shapes.insert("feats.1.channe_mixer.2.weight", vec![8, 16, 5, 5]);
        let error = shape_of(|n| shapes.get(n).cloned()).unwrap_err();
        assert!(error.contains("`feats.1.channe_mixer.2.weight`"), "{error}");
        // A RealPLKSR-style last convolution (after a dropout slot) is not the original's.
        shapes.insert("feats.1.channe_mixer.2.weight", vec![8, 16, 3, 3]);
        let last = shapes.remove("feats.2.weight").unwrap();
        shapes.insert("feats.3.weight", last);
        let error = shape_of(|n| shapes.get(n).cloned()).unwrap_err();
        assert!(
            error.contains("no `feats.2.weight` after 1 blocks"),
            "{error}"
        );
    }
}
