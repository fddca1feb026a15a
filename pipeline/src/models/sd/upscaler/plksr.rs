//! RealPLKSR (the real-world variant of Lee et al. 2024, "Partial Large Kernel CNNs for
//! Efficient Super-Resolution"), as neosr and traiNNer save it and spandrel reads it: a 3×3
//! convolution into features, then blocks of a channel mixer (3×3 to twice the channels,
//! Mish, 3×3 back), one large kernel (17×17 in the releases) over the first part of the
//! channels, an element-wise attention (the features times a sigmoid of a 3×3 convolution of
//! them), a 1×1 refinement and a group norm (or a layer norm before the block instead), each
//! block added to its input; then a 3×3 convolution to scale² times the image's channels, plus
//! the input's channels each repeated scale² times, pixel-shuffled into the larger image or
//! sampled into it by [`DySample`].

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use super::super::group_norm::GroupNorm;
use super::super::kernels::{Conv2d, mish, sigmoid_gate};
use super::compact::pixel_shuffle;
use super::dysample::DySample;

/// Groups of the blocks' group norms (not stored; spandrel's and the trainers' default).
const NORM_GROUPS: usize = 4;

/// The network's sizes, read from its weights' shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlksrShape {
    /// Feature channels (64 in the releases).
    pub features: usize,
    /// Blocks (28 in the releases).
    pub blocks: usize,
    /// The side of the large kernel.
    pub kernel: usize,
    /// The channels the large kernel convolves (a quarter of them in the releases).
    pub partial: usize,
    /// Whether each block has its element-wise attention.
    pub attention: bool,
    /// Whether each block opens with a layer norm rather than closing with a group norm.
    pub layer_norm: bool,
    /// How many times larger the output is.
    pub scale: usize,
    /// The sampling groups of its DySample upsampler, if it has one rather than a pixel
    /// shuffle.
    pub dysample: Option<usize>,
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
/// what does not fit (the original PLKSR is not read yet).
pub fn shape_of(
    shape: impl Fn(&str) -> Option<Vec<usize>>,
) -> std::result::Result<PlksrShape, String> {
    let has = |name: &str| shape(name).is_some();
    if !has("feats.1.channel_mixer.0.weight") {
        return Err(
            "it is the original PLKSR; only its real-world variant (RealPLKSR) is read yet".into(),
        );
    }
    let first = shape("feats.0.weight").ok_or("no `feats.0.weight`")?;
    if first.len() != 4 || first[1] != 3 {
        return Err(format!(
            "`feats.0.weight` is {first:?}: only RGB upscalers are read"
        ));
    }
    // feats.0 the first convolution, feats.1..=n the blocks, feats.{n+1} a dropout (nothing
    // stored), feats.{n+2} the last convolution.
    let blocks = (1..)
        .take_while(|i| has(&format!("feats.{i}.refine.weight")))
        .count();
    let last = format!("feats.{}.weight", blocks + 2);
    let channels = shape(&last)
        .and_then(|dims| dims.first().copied())
        .ok_or_else(|| format!("no `{last}` after {blocks} blocks"))?;
    let scale = (1..=8).find(|s| 3 * s * s == channels).ok_or_else(|| {
        format!("the last convolution's {channels} channels are not 3·scale² for an RGB image")
    })?;
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
    let large = shape("feats.1.lk.conv.weight").ok_or("no `feats.1.lk.conv.weight`")?;
    if large.len() != 4 || large[2] != large[3] || large[2] % 2 == 0 {
        return Err(format!(
            "`feats.1.lk.conv.weight` is {large:?}: the large kernel must be square and odd"
        ));
    }
    Ok(PlksrShape {
        features: first[0],
        blocks,
        kernel: large[2],
        partial: large[0],
        attention: has("feats.1.attn.f.0.weight"),
        layer_norm: has("feats.1.layer_norm.weight"),
        scale,
        dysample,
    })
}

/// How a block is normalised.
enum Norm {
    /// A layer norm over the channels of each pixel, before the block.
    Before(LayerNorm),
    /// A group norm after the block.
    After(GroupNorm),
}

/// One partial-large-kernel block.
struct Block {
    norm: Norm,
    mix_in: Conv2d,
    mix_out: Conv2d,
    large: Conv2d,
    partial: usize,
    attention: Option<Conv2d>,
    refine: Conv2d,
}

impl Block {
    fn new(vb: VarBuilder, shape: &PlksrShape) -> Result<Self> {
        let c = shape.features;
        let conv3 = |name: &str, c_in, c_out| Conv2d::new(vb.pp(name), c_in, c_out, 3, 1, 1);
        let norm = if shape.layer_norm {
            Norm::Before(candle_nn::layer_norm(c, 1e-6, vb.pp("layer_norm"))?)
        } else {
            Norm::After(GroupNorm::new(NORM_GROUPS, c, 1e-5, vb.pp("norm"))?)
        };
        let (k, p) = (shape.kernel, shape.partial);
        Ok(Self {
            norm,
            mix_in: conv3("channel_mixer.0", c, 2 * c)?,
            mix_out: conv3("channel_mixer.2", 2 * c, c)?,
            large: Conv2d::new(vb.pp("lk.conv"), p, p, k, 1, k / 2)?,
            partial: p,
            attention: shape
                .attention
                .then(|| conv3("attn.f.0", c, c))
                .transpose()?,
            refine: Conv2d::new(vb.pp("refine"), c, c, 1, 1, 0)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let normed = match &self.norm {
            Norm::Before(norm) => norm
                .forward(&xs.permute((0, 2, 3, 1))?.contiguous()?)?
                .permute((0, 3, 1, 2))?
                .contiguous()?,
            Norm::After(_) => xs.clone(),
        };
        let mixed = self
            .mix_out
            .forward(&mish(&self.mix_in.forward(&normed)?)?)?;
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
            Norm::Before(_) => out,
        };
        out + xs
    }
}

/// How the last convolution's channels become the larger image.
enum ToImage {
    PixelShuffle,
    DySample(DySample),
}

/// RealPLKSR, its weights under `feats.N` (and `to_img` for DySample).
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
        Ok(Self {
            scale: s,
            first: Conv2d::new(vb.pp("feats.0"), 3, c, 3, 1, 1)?,
            blocks: (1..=shape.blocks)
                .map(|i| Block::new(vb.pp(format!("feats.{i}")), &shape))
                .collect::<Result<_>>()?,
            last: Conv2d::new(
                vb.pp(format!("feats.{}", shape.blocks + 2)),
                c,
                3 * s * s,
                3,
                1,
                1,
            )?,
            to_image: match shape.dysample {
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
    use std::collections::HashMap;

    #[test]
    fn reads_the_sizes_and_refuses_the_variants_it_does_not_run() {
        let mut shapes = HashMap::from([
            ("feats.0.weight", vec![16, 3, 3, 3]),
            ("feats.1.channel_mixer.0.weight", vec![32, 16, 3, 3]),
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
                features: 16,
                blocks: 2,
                kernel: 17,
                partial: 4,
                attention: true,
                layer_norm: false,
                scale: 2,
                dysample: None,
            }
        );
        assert!(is_plksr(|n| shapes.contains_key(n)));
        shapes.insert("to_img.init_pos", vec![1, 32, 1, 1]);
        let shape = shape_of(|n| shapes.get(n).cloned()).unwrap();
        assert_eq!(shape.dysample, Some(4));
        shapes.insert("to_img.init_pos", vec![1, 2, 4, 1, 1]);
        let error = shape_of(|n| shapes.get(n).cloned()).unwrap_err();
        assert!(error.contains("DySample"), "{error}");
        shapes.remove("to_img.init_pos");
        let mixer = shapes.remove("feats.1.channel_mixer.0.weight").unwrap();
        shapes.insert("feats.1.channe_mixer.0.weight", mixer);
        assert!(is_plksr(|n| shapes.contains_key(n)));
        let error = shape_of(|n| shapes.get(n).cloned()).unwrap_err();
        assert!(error.contains("original PLKSR"), "{error}");
    }
}
