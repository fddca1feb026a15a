//! SwinIR (Liang et al. 2021, "Image Restoration Using Swin Transformer") as its official
//! releases and spandrel lay it out: a 3×3 convolution into features; residual Swin
//! transformer groups (`layers.N`: blocks of window self-attention with a relative position
//! bias, every second block's windows shifted by half a window, each group closed by one or
//! three convolutions); then one of three upsamplers — nearest-neighbour doubling with
//! convolutions (real-world SR, A1111's "SwinIR 4x"), pixel shuffles (classical SR) or a
//! single pixel-shuffled convolution (lightweight SR). The image is padded to whole windows by
//! reflection and the output cut back, as spandrel does.
//!
//! Swin2SR (Conde et al. 2022, "Swin2SR: SwinV2 Transformer for Compressed Image
//! Super-Resolution and Restoration") is the same network on Swin v2's blocks: cosine
//! attention with a learned scale per head and a bias an MLP makes of each relative offset,
//! each block's norms after its attention and MLP rather than before, and a 1×1 projection
//! opening the features and closing each group.

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use super::super::bicubic;
use super::super::kernels::{Conv2d, Slopes};
use super::swin::{
    Closing, Mlp, OneStepUp, PixelShuffleUp, RGB_MEAN, SwinSizes, WindowAttention,
    pixel_shuffle_scale, reflect_to_multiple, shift_mask,
};

/// Which of the two networks, and what only Swin2SR varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    /// SwinIR: Swin's attention, each block's norms before its attention and its MLP.
    SwinIr,
    /// Swin2SR: Swin v2's blocks and the 1×1 projections.
    Swin2Sr {
        /// Whether a layer norm follows the opening projection (`patch_embed.norm`).
        patch_norm: bool,
        /// Whether the queries and values are biased (`q_bias`, `v_bias`).
        qkv_bias: bool,
    },
}

/// The features the upsamplers work in (fixed in SwinIR).
const FEATURES: usize = 64;

/// How the features become the larger image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upsampler {
    /// Nearest-neighbour doubling, each followed by a convolution (real-world SR).
    NearestConv,
    /// Convolutions pixel-shuffled by 2 (or one by 3), between `conv_before_upsample` and
    /// `conv_last` (classical SR).
    PixelShuffle,
    /// One convolution pixel-shuffled to the output at once (lightweight SR).
    PixelShuffleDirect,
    /// Swin2SR's compressed SR: pixel shuffles with an auxiliary 3-channel image between, plus
    /// a convolution of the input resized bicubically.
    PixelShuffleAux,
    /// None: a restoration network (denoising, JPEG artefacts) adds `conv_last` of the
    /// features to the image at its size.
    SameSize,
}

/// The network's sizes, read from its weights' shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct SwinIrShape {
    /// SwinIR or Swin2SR.
    pub generation: Generation,
    /// The sizes of its Swin transformer (8-pixel windows in the SR releases).
    pub sizes: SwinSizes,
    /// The side of the images it was trained on: a window is never wider.
    pub trained: usize,
    /// Whether each group closes with three convolutions rather than one.
    pub three_convs: bool,
    /// How the features become the larger image.
    pub upsampler: Upsampler,
    /// How many times larger the output is.
    pub scale: usize,
    /// What the centred pixels are multiplied by (255 for the window-7 networks, as spandrel
    /// takes them; else 1).
    pub range: f64,
}

impl SwinIrShape {
    /// The window side the blocks use and whether odd blocks shift: a network trained on
    /// images no larger than its window attends to the whole trained size, unshifted.
    fn windows(&self) -> (usize, bool) {
        if self.trained <= self.sizes.window {
            (self.trained, false)
        } else {
            (self.sizes.window, true)
        }
    }
}

/// Whether `names` are a SwinIR or Swin2SR network's (spandrel's test for SwinIR, which
/// Swin2SR's names pass too; [`shape_of`] tells them apart).
pub fn is_swinir(has: impl Fn(&str) -> bool) -> bool {
    has("layers.0.residual_group.blocks.0.norm1.weight")
        && has("conv_first.weight")
        && has("layers.0.residual_group.blocks.0.mlp.fc1.bias")
        && has("layers.0.residual_group.blocks.0.attn.relative_position_index")
}

/// The network's sizes from its tensors' shapes (`shape(name)`), as spandrel reads them, or
/// what does not fit.
pub fn shape_of(
    shape: impl Fn(&str) -> Option<Vec<usize>>,
) -> std::result::Result<SwinIrShape, String> {
    let get = |name: &str| shape(name).ok_or_else(|| format!("no `{name}`"));
    let has = |name: &str| shape(name).is_some();
    let block = "layers.0.residual_group.blocks.0.attn";
    let (generation, sizes) = if has(&format!("{block}.logit_scale")) {
        // Swin2SR: the window from its pixel pairs' relative position index (n² × n²).
        let pairs = get(&format!("{block}.relative_position_index"))?[0];
        let window = (1..=64)
            .find(|w| w * w == pairs)
            .ok_or_else(|| format!("a relative position index of {pairs} pixels"))?;
        let proj = get("patch_embed.proj.weight")?;
        if proj.get(2..) != Some(&[1, 1][..]) {
            return Err(format!(
                "`patch_embed.proj.weight` is {proj:?}: only patches of one pixel are read"
            ));
        }
        for (name, what) in [
            ("absolute_pos_embed", "an absolute position embedding"),
            (
                "conv_after_body_hf.weight",
                "the high-frequency upsampler (`pixelshuffle_hf`)",
            ),
        ] {
            if has(name) {
                return Err(format!("it has {what}, which is not read yet"));
            }
        }
        let sizes = SwinSizes::read(&shape, window, |group| {
            (
                format!("layers.{group}.residual_group.blocks.0.attn.logit_scale"),
                0,
            )
        })?;
        let generation = Generation::Swin2Sr {
            patch_norm: has("patch_embed.norm.weight"),
            qkv_bias: has(&format!("{block}.q_bias")),
        };
        (generation, sizes)
    } else {
        let table = |group: usize| {
            (
                format!("layers.{group}.residual_group.blocks.0.attn.relative_position_bias_table"),
                1,
            )
        };
        let rows = get(&table(0).0)?[0];
        // The table holds (2·window − 1)² relative positions.
        let window = (1..=64)
            .find(|w| (2 * w - 1) * (2 * w - 1) == rows)
            .ok_or_else(|| format!("a relative position table of {rows} rows"))?;
        (Generation::SwinIr, SwinSizes::read(&shape, window, table)?)
    };
    let window = sizes.window;
    // The trained size from the shifted block's stored mask. Without one, spandrel takes 64
    // for SwinIR, and for Swin2SR the window itself (no block shifts).
    let unmasked = match generation {
        Generation::SwinIr => 64,
        Generation::Swin2Sr { .. } => window,
    };
    let trained = shape("layers.0.residual_group.blocks.1.attn_mask")
        .and_then(|mask| mask.first().copied())
        .and_then(|windows| (1..=4096).find(|n| n * n == windows))
        .map_or(unmasked, |side| side * window);
    let (upsampler, scale) = if has("conv_before_upsample.0.weight") {
        if has("conv_bicubic.weight") {
            let scale = pixel_shuffle_scale(&shape, FEATURES)?;
            (Upsampler::PixelShuffleAux, scale)
        } else if has("conv_up1.weight") {
            let ups = (1..=3)
                .take_while(|i| has(&format!("conv_up{i}.weight")))
                .count();
            (Upsampler::NearestConv, 1 << ups)
        } else {
            let scale = pixel_shuffle_scale(&shape, FEATURES)?;
            (Upsampler::PixelShuffle, scale)
        }
    } else if has("upsample.0.weight") {
        (Upsampler::PixelShuffleDirect, OneStepUp::scale_of(&shape)?)
    } else if has("conv_last.weight") {
        (Upsampler::SameSize, 1)
    } else {
        return Err("it has neither an upsampler nor a last convolution".into());
    };
    Ok(SwinIrShape {
        generation,
        sizes,
        trained,
        three_convs: !has("conv_after_body.weight"),
        upsampler,
        scale,
        range: if window == 7 { 255.0 } else { 1.0 },
    })
}

/// One Swin transformer block: window attention, then an MLP, each added to its input
/// through a layer norm — before them in SwinIR, after them in Swin2SR.
struct Block {
    norm1: LayerNorm,
    attn: WindowAttention,
    norm2: LayerNorm,
    mlp: Mlp,
    shifted: bool,
    norms_after: bool,
}

impl Block {
    fn new(vb: VarBuilder, shape: &SwinIrShape, heads: usize, shifted: bool) -> Result<Self> {
        let c = shape.sizes.features;
        let (window, _) = shape.windows();
        let (attn, norms_after) = match shape.generation {
            Generation::SwinIr => (
                WindowAttention::new(vb.pp("attn"), c, heads, window, true)?,
                false,
            ),
            Generation::Swin2Sr { qkv_bias, .. } => (
                WindowAttention::cosine(vb.pp("attn"), c, heads, window, qkv_bias)?,
                true,
            ),
        };
        Ok(Self {
            norm1: candle_nn::layer_norm(c, 1e-5, vb.pp("norm1"))?,
            attn,
            norm2: candle_nn::layer_norm(c, 1e-5, vb.pp("norm2"))?,
            mlp: Mlp::new(vb.pp("mlp"), c, shape.sizes.hidden)?,
            shifted,
            norms_after,
        })
    }

    /// `xs` `(b, h, w, c)` with `h` and `w` whole windows of side `window`; `mask` the
    /// shifted windows' ([`shift_mask`]).
    fn forward(&self, xs: &Tensor, window: usize, mask: Option<&Tensor>) -> Result<Tensor> {
        let shift = if self.shifted { window / 2 } else { 0 };
        if self.norms_after {
            let attended = self.attn.shifted(xs, window, shift, mask)?;
            let xs = (xs + self.norm1.forward(&attended)?)?;
            return &xs + self.norm2.forward(&self.mlp.forward(&xs)?)?;
        }
        let attended = self
            .attn
            .shifted(&self.norm1.forward(xs)?, window, shift, mask)?;
        let xs = (xs + attended)?;
        &xs + self.mlp.forward(&self.norm2.forward(&xs)?)?
    }
}

/// A residual Swin transformer group: its blocks, then its closing convolution (in Swin2SR
/// and a 1×1 projection), added to its input.
struct Group {
    blocks: Vec<Block>,
    closing: Closing,
    projection: Option<Conv2d>,
}

/// SwinIR or Swin2SR, its weights under spandrel's (the official) names.
pub struct SwinIr {
    shape: SwinIrShape,
    conv_first: Conv2d,
    /// Swin2SR's 1×1 projection of the features before the groups.
    embed_proj: Option<Conv2d>,
    embed_norm: Option<LayerNorm>,
    groups: Vec<Group>,
    norm: LayerNorm,
    conv_after_body: Closing,
    up: Up,
    mean: Tensor,
}

/// The upsampler, built.
enum Up {
    /// `conv_before_upsample.0`, `conv_up1`… each after a doubling, `conv_hr`, `conv_last`.
    NearestConv {
        before: Conv2d,
        doublings: Vec<Conv2d>,
        hr: Conv2d,
        last: Conv2d,
    },
    PixelShuffle(PixelShuffleUp),
    Direct(OneStepUp),
    /// The pixel shuffles, `conv_aux`, `conv_after_aux.0` and `conv_bicubic`.
    Auxiliary {
        up: PixelShuffleUp,
        aux: Conv2d,
        after_aux: Conv2d,
        bicubic: Conv2d,
    },
    /// `conv_last`, its output added to the image.
    SameSize(Conv2d),
}

impl SwinIr {
    /// Builds the network of `shape` from `vb`.
    pub fn new(vb: VarBuilder, shape: SwinIrShape) -> Result<Self> {
        let c = shape.sizes.features;
        let (_, shifts) = shape.windows();
        let groups = shape
            .sizes
            .depths
            .iter()
            .zip(&shape.sizes.heads)
            .enumerate()
            .map(|(g, (&depth, &heads))| {
                let vb = vb.pp(format!("layers.{g}"));
                let blocks = (0..depth)
                    .map(|i| {
                        let block = vb.pp(format!("residual_group.blocks.{i}"));
                        Block::new(block, &shape, heads, shifts && i % 2 == 1)
                    })
                    .collect::<Result<_>>()?;
                let closing = Closing::new(vb.pp("conv"), c, shape.three_convs)?;
                let projection = match shape.generation {
                    Generation::SwinIr => None,
                    Generation::Swin2Sr { .. } => {
                        Some(Conv2d::new(vb.pp("patch_embed.proj"), c, c, 1, 1, 0)?)
                    }
                };
                Ok(Group {
                    blocks,
                    closing,
                    projection,
                })
            })
            .collect::<Result<_>>()?;
        let conv = |name: &str, c_in, c_out| Conv2d::new(vb.pp(name), c_in, c_out, 3, 1, 1);
        let up = match shape.upsampler {
            Upsampler::NearestConv => Up::NearestConv {
                before: conv("conv_before_upsample.0", c, FEATURES)?,
                doublings: (1..=shape.scale.trailing_zeros())
                    .map(|i| conv(&format!("conv_up{i}"), FEATURES, FEATURES))
                    .collect::<Result<_>>()?,
                hr: conv("conv_hr", FEATURES, FEATURES)?,
                last: conv("conv_last", FEATURES, 3)?,
            },
            Upsampler::PixelShuffle => {
                Up::PixelShuffle(PixelShuffleUp::new(vb.clone(), c, FEATURES, shape.scale)?)
            }
            Upsampler::PixelShuffleDirect => {
                Up::Direct(OneStepUp::new(vb.clone(), c, shape.scale)?)
            }
            Upsampler::PixelShuffleAux => Up::Auxiliary {
                up: PixelShuffleUp::new(vb.clone(), c, FEATURES, shape.scale)?,
                aux: conv("conv_aux", FEATURES, 3)?,
                after_aux: conv("conv_after_aux.0", 3, FEATURES)?,
                bicubic: conv("conv_bicubic", 3, FEATURES)?,
            },
            Upsampler::SameSize => Up::SameSize(conv("conv_last", c, 3)?),
        };
        let (embed_proj, patch_norm) = match shape.generation {
            Generation::SwinIr => (None, true),
            Generation::Swin2Sr { patch_norm, .. } => (
                Some(Conv2d::new(vb.pp("patch_embed.proj"), c, c, 1, 1, 0)?),
                patch_norm,
            ),
        };
        Ok(Self {
            conv_first: conv("conv_first", 3, c)?,
            embed_proj,
            embed_norm: patch_norm
                .then(|| candle_nn::layer_norm(c, 1e-5, vb.pp("patch_embed.norm")))
                .transpose()?,
            groups,
            norm: candle_nn::layer_norm(c, 1e-5, vb.pp("norm"))?,
            conv_after_body: Closing::new(vb.pp("conv_after_body"), c, shape.three_convs)?,
            up,
            mean: Tensor::from_slice(&RGB_MEAN, (1, 3, 1, 1), vb.device())?,
            shape,
        })
    }

    /// `(n, 3, h, w)` in [0, 1] to `(n, 3, h·scale, w·scale)`, unclamped.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let (window, shifts) = self.shape.windows();
        let padded = reflect_to_multiple(xs, self.shape.sizes.window)?;
        let mean = self.mean.to_dtype(xs.dtype())?;
        let image = (padded.broadcast_sub(&mean)? * self.shape.range)?;
        let x = self.conv_first.forward(&image)?;
        let features = (self
            .conv_after_body
            .forward(&self.features(&x, window, shifts)?)?
            + x)?;
        let s = self.shape.scale;
        let out = (self.upsample(&features, &image, (h * s, w * s))? / self.shape.range)?
            .broadcast_add(&mean)?;
        out.narrow(2, 0, h * s)?.narrow(3, 0, w * s)
    }

    /// The residual groups on `x` `(b, c, h, w)`, channels last between them.
    fn features(&self, x: &Tensor, window: usize, shifts: bool) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let mask = if shifts {
            Some(shift_mask(h, w, (window, window), x.device(), x.dtype())?)
        } else {
            None
        };
        let projected = match &self.embed_proj {
            Some(proj) => proj.forward(x)?,
            None => x.clone(),
        };
        let mut tokens = projected.permute((0, 2, 3, 1))?.contiguous()?;
        if let Some(norm) = &self.embed_norm {
            tokens = norm.forward(&tokens)?;
        }
        for group in &self.groups {
            let mut y = tokens.clone();
            for block in &group.blocks {
                y = block.forward(&y, window, mask.as_ref().filter(|_| block.shifted))?;
            }
            let mut y = group
                .closing
                .forward(&y.permute((0, 3, 1, 2))?.contiguous()?)?;
            if let Some(proj) = &group.projection {
                y = proj.forward(&y)?;
            }
            tokens = (y.permute((0, 2, 3, 1))? + tokens)?;
        }
        self.norm
            .forward(&tokens)?
            .permute((0, 3, 1, 2))?
            .contiguous()
    }

    /// `x`'s features as the larger image; `image` the padded, centred input and `size` the
    /// output's before padding (what Swin2SR's compressed-SR path resizes it to).
    fn upsample(&self, x: &Tensor, image: &Tensor, size: (usize, usize)) -> Result<Tensor> {
        match &self.up {
            Up::NearestConv {
                before,
                doublings,
                hr,
                last,
            } => {
                let leaky = Slopes::Uniform(0.2);
                let mut x = before.forward_leaky(x, &Slopes::Uniform(0.01))?;
                for conv in doublings {
                    let (_, _, h, w) = x.dims4()?;
                    x = conv.forward_leaky(&x.upsample_nearest2d(2 * h, 2 * w)?, &leaky)?;
                }
                last.forward(&hr.forward_leaky(&x, &leaky)?)
            }
            Up::PixelShuffle(up) => up.forward(x),
            Up::Direct(up) => up.forward(x),
            Up::Auxiliary {
                up,
                aux,
                after_aux,
                bicubic: conv,
            } => up.forward_auxiliary(
                x,
                aux,
                after_aux,
                &conv.forward(&bicubic::resize(image, size)?)?,
            ),
            Up::SameSize(last) => image + last.forward(x)?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sizes_from_the_shapes_as_spandrel_does() {
        let shapes = std::collections::HashMap::from([
            ("conv_first.weight", vec![12, 3, 3, 3]),
            ("layers.0.residual_group.blocks.0.norm1.weight", vec![12]),
            (
                "layers.0.residual_group.blocks.0.attn.relative_position_bias_table",
                vec![49, 2],
            ),
            (
                "layers.0.residual_group.blocks.0.mlp.fc1.weight",
                vec![24, 12],
            ),
            ("layers.0.residual_group.blocks.1.norm1.weight", vec![12]),
            (
                "layers.0.residual_group.blocks.1.attn_mask",
                vec![16, 16, 16],
            ),
            ("layers.1.residual_group.blocks.0.norm1.weight", vec![12]),
            (
                "layers.1.residual_group.blocks.0.attn.relative_position_bias_table",
                vec![49, 3],
            ),
            ("conv_after_body.weight", vec![12, 12, 3, 3]),
            ("conv_before_upsample.0.weight", vec![64, 12, 3, 3]),
            ("conv_up1.weight", vec![64, 64, 3, 3]),
            ("conv_up2.weight", vec![64, 64, 3, 3]),
        ]);
        let shape = shape_of(|n| shapes.get(n).cloned()).unwrap();
        assert_eq!(
            shape,
            SwinIrShape {
                generation: Generation::SwinIr,
                sizes: SwinSizes {
                    features: 12,
                    depths: vec![2, 1],
                    heads: vec![2, 3],
                    window: 4,
                    hidden: 24,
                },
                trained: 16,
                three_convs: false,
                upsampler: Upsampler::NearestConv,
                scale: 4,
                range: 1.0,
            }
        );
        // Without an upsampler, a restoration network at the image's size.
        let restorer = |n: &str| match n {
            "conv_last.weight" => Some(vec![3, 12, 3, 3]),
            n => shapes
                .get(n)
                .filter(|_| !n.starts_with("conv_up") && !n.starts_with("conv_before"))
                .cloned(),
        };
        let same = shape_of(restorer).unwrap();
        assert_eq!((same.upsampler, same.scale), (Upsampler::SameSize, 1));
        let no_last = shape_of(|n| restorer(n).filter(|_| n != "conv_last.weight")).unwrap_err();
        assert!(no_last.contains("neither an upsampler"), "{no_last}");
        let gray = shape_of(|n| match n {
            "conv_first.weight" => Some(vec![12, 1, 3, 3]),
            n => restorer(n),
        })
        .unwrap_err();
        assert!(gray.contains("only RGB networks"), "{gray}");
    }

    #[test]
    fn tells_swin2sr_by_its_logit_scales_and_refuses_its_upsamplers_not_read() {
        let block = "layers.0.residual_group.blocks.0";
        let mut shapes = std::collections::HashMap::from([
            ("conv_first.weight".to_string(), vec![12, 3, 3, 3]),
            ("patch_embed.proj.weight".to_string(), vec![12, 12, 1, 1]),
            (format!("{block}.norm1.weight"), vec![12]),
            (format!("{block}.attn.logit_scale"), vec![3, 1, 1]),
            (
                format!("{block}.attn.relative_position_index"),
                vec![64, 64],
            ),
            (format!("{block}.attn.q_bias"), vec![12]),
            (format!("{block}.mlp.fc1.weight"), vec![24, 12]),
            ("conv_after_body.weight".to_string(), vec![12, 12, 3, 3]),
            ("upsample.0.weight".to_string(), vec![27, 12, 3, 3]),
        ]);
        let shape = shape_of(|n| shapes.get(n).cloned()).unwrap();
        assert_eq!(
            (
                shape.generation,
                shape.sizes.window,
                shape.sizes.heads.clone()
            ),
            (
                Generation::Swin2Sr {
                    patch_norm: false,
                    qkv_bias: true
                },
                8,
                vec![3]
            )
        );
        assert_eq!(
            (shape.upsampler, shape.scale),
            (Upsampler::PixelShuffleDirect, 3)
        );
        // No stored mask: trained at the window's size, as spandrel takes it, so no block
        // shifts.
        assert_eq!((shape.trained, shape.windows()), (8, (8, false)));
        for (name, says) in [
            ("conv_after_body_hf.weight", "pixelshuffle_hf"),
            ("absolute_pos_embed", "absolute position embedding"),
        ] {
            shapes.insert(name.to_string(), vec![1]);
            let error = shape_of(|n| shapes.get(n).cloned()).unwrap_err();
            assert!(error.contains(says), "{error}");
            shapes.remove(name);
        }
        shapes.insert("patch_embed.proj.weight".to_string(), vec![12, 12, 2, 2]);
        let error = shape_of(|n| shapes.get(n).cloned()).unwrap_err();
        assert!(error.contains("patches of one pixel"), "{error}");
    }
}
