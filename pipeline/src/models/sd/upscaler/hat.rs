//! HAT (Chen et al. 2023, "Activating More Pixels in Image Super-Resolution Transformer") as
//! its releases and spandrel lay it out (`Real_HAT_GAN_SRx4`, `HAT-L_SRx4`, the community
//! 4x-Nomos8kSCHAT…): SwinIR's design ([`super::swin`]) with a convolution branch of channel
//! attention beside each block's window attention (its output ×0.01), and at the end of each
//! residual group an overlapping cross-attention block, whose windows' queries attend to keys
//! and values from a larger window around them. Its upsampler is classical SR's pixel shuffle.

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::super::kernels::{Conv2d, gelu_erf};
use super::swin::{
    Mlp, PixelShuffleUp, RGB_MEAN, SwinSizes, WindowAttention, bias_from_table, merge, partition,
    per_token, pixel_shuffle_scale, reflect_to_multiple, shift_mask, window_attention,
};

/// How much of the convolution branch each block adds (HAT's `conv_scale`, which files do not
/// store; every release uses this).
const CONV_SCALE: f64 = 0.01;

/// The network's sizes, read from its weights' shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct HatShape {
    /// The sizes of its Swin transformer (16-pixel windows in the releases).
    pub sizes: SwinSizes,
    /// The side of the overlapping windows keys and values come from (24 in the releases).
    pub overlap: usize,
    /// Channels inside each block's convolution branch.
    pub compressed: usize,
    /// Channels inside its channel attention.
    pub squeezed: usize,
    /// Whether the attention's `qkv` projections have biases.
    pub qkv_bias: bool,
    /// Whether the patch embedding has a layer norm.
    pub patch_norm: bool,
    /// Whether each group (and the body) closes with a convolution rather than nothing.
    pub closing_convs: bool,
    /// Channels of the upsampler.
    pub upsample_features: usize,
    /// How many times larger the output is.
    pub scale: usize,
}

/// Whether `names` are a HAT network's (spandrel's test, in part).
pub fn is_hat(has: impl Fn(&str) -> bool) -> bool {
    has("relative_position_index_SA")
        && has("conv_first.weight")
        && has("layers.0.residual_group.blocks.0.conv_block.cab.0.weight")
        && has("layers.0.residual_group.overlap_attn.qkv.weight")
        && has("conv_last.weight")
}

/// The network's sizes from its tensors' shapes (`shape(name)`), as spandrel reads them, or
/// what does not fit.
pub fn shape_of(
    shape: impl Fn(&str) -> Option<Vec<usize>>,
) -> std::result::Result<HatShape, String> {
    let get = |name: &str| shape(name).ok_or_else(|| format!("no `{name}`"));
    let has = |name: &str| shape(name).is_some();
    if has("absolute_pos_embed") {
        return Err("it adds an absolute position embedding, which ties it to one size".into());
    }
    let side = |positions: usize| (1..=256).find(|s| s * s == positions);
    let window = side(get("relative_position_index_SA")?[0])
        .ok_or("`relative_position_index_SA` is not a square window's")?;
    let overlap = get("relative_position_index_OCA")?
        .get(1)
        .copied()
        .and_then(side)
        .ok_or("`relative_position_index_OCA` is not a square window's")?;
    if overlap < window || !(overlap - window).is_multiple_of(2) {
        return Err(format!(
            "overlapping windows of {overlap} around windows of {window} do not centre on them"
        ));
    }
    let sizes = SwinSizes::read(&shape, window, |group| {
        (
            format!("layers.{group}.residual_group.overlap_attn.relative_position_bias_table"),
            1,
        )
    })?;
    let block = "layers.0.residual_group.blocks.0";
    let upsample_features = get("conv_last.weight")?.get(1).copied().unwrap_or(0);
    Ok(HatShape {
        sizes,
        overlap,
        compressed: get(&format!("{block}.conv_block.cab.0.weight"))?[0],
        squeezed: get(&format!("{block}.conv_block.cab.3.attention.1.weight"))?[0],
        qkv_bias: has(&format!("{block}.attn.qkv.bias")),
        patch_norm: has("patch_embed.norm.weight"),
        closing_convs: has("conv_after_body.weight"),
        upsample_features,
        scale: pixel_shuffle_scale(&shape, upsample_features)?,
    })
}

/// The convolution branch: two 3×3 convolutions around a GELU, then channel attention (each
/// channel scaled by a sigmoid of a squeezed summary of the whole image).
struct ChannelAttentionBlock {
    compress: Conv2d,
    expand: Conv2d,
    squeeze: Conv2d,
    excite: Conv2d,
}

impl ChannelAttentionBlock {
    fn new(vb: VarBuilder, shape: &HatShape) -> Result<Self> {
        let (c, inner, squeezed) = (shape.sizes.features, shape.compressed, shape.squeezed);
        Ok(Self {
            compress: Conv2d::new(vb.pp("cab.0"), c, inner, 3, 1, 1)?,
            expand: Conv2d::new(vb.pp("cab.2"), inner, c, 3, 1, 1)?,
            squeeze: Conv2d::new(vb.pp("cab.3.attention.1"), c, squeezed, 1, 1, 0)?,
            excite: Conv2d::new(vb.pp("cab.3.attention.3"), squeezed, c, 1, 1, 0)?,
        })
    }
}

impl Module for ChannelAttentionBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let x = self
            .expand
            .forward(&gelu_erf(&self.compress.forward(xs)?)?)?;
        let summary = x.mean_keepdim(2)?.mean_keepdim(3)?;
        let weights = candle_nn::ops::sigmoid(
            &self
                .excite
                .forward(&self.squeeze.forward(&summary)?.relu()?)?,
        )?;
        x.broadcast_mul(&weights)
    }
}

/// A hybrid attention block: window attention and the convolution branch side by side, then
/// an MLP, each around a layer norm and added to its input.
struct HybridBlock {
    norm1: LayerNorm,
    attn: WindowAttention,
    conv: ChannelAttentionBlock,
    norm2: LayerNorm,
    mlp: Mlp,
    shifted: bool,
}

impl HybridBlock {
    fn new(vb: VarBuilder, shape: &HatShape, heads: usize, shifted: bool) -> Result<Self> {
        let c = shape.sizes.features;
        Ok(Self {
            norm1: candle_nn::layer_norm(c, 1e-5, vb.pp("norm1"))?,
            attn: WindowAttention::new(
                vb.pp("attn"),
                c,
                heads,
                shape.sizes.window,
                shape.qkv_bias,
            )?,
            conv: ChannelAttentionBlock::new(vb.pp("conv_block"), shape)?,
            norm2: candle_nn::layer_norm(c, 1e-5, vb.pp("norm2"))?,
            mlp: Mlp::new(vb.pp("mlp"), c, shape.sizes.hidden)?,
            shifted,
        })
    }

    /// `xs` `(b, h, w, c)` in whole windows; `mask` the shifted windows'.
    fn forward(&self, xs: &Tensor, window: usize, mask: &Tensor) -> Result<Tensor> {
        let x = self.norm1.forward(xs)?;
        let conv = self
            .conv
            .forward(&x.permute((0, 3, 1, 2))?.contiguous()?)?
            .permute((0, 2, 3, 1))?;
        let shift = if self.shifted { window / 2 } else { 0 };
        let attended = self.attn.shifted(&x, window, shift, Some(mask))?;
        let xs = ((xs + attended)? + (conv * CONV_SCALE)?)?;
        &xs + self.mlp.forward(&self.norm2.forward(&xs)?)?
    }
}

/// Overlapping cross-attention: each window's queries against the keys and values of the
/// larger window centred on it (zeros beyond the image), then an MLP.
struct OverlapAttention {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    /// The relative position bias `(1, heads, window², overlap²)`.
    bias: Tensor,
    heads: usize,
    norm2: LayerNorm,
    mlp: Mlp,
}

impl OverlapAttention {
    fn new(vb: VarBuilder, shape: &HatShape, heads: usize) -> Result<Self> {
        let c = shape.sizes.features;
        let (ws, ows) = (shape.sizes.window, shape.overlap);
        let side = ws + ows - 1;
        let table = vb.get((side * side, heads), "relative_position_bias_table")?;
        // HAT's `calculate_rpi_oca`: an outer pixel's offset from an inner one, shifted by
        // `ws − ows + 1` (which leaves some entries negative; PyTorch counts those from the
        // table's end, and so does `bias_from_table`).
        let shift = ws as i64 - ows as i64 + 1;
        let index: Vec<i64> = (0..ws * ws)
            .flat_map(|i| {
                let (iy, ix) = ((i / ws) as i64, (i % ws) as i64);
                (0..ows * ows).map(move |j| {
                    let (jy, jx) = ((j / ows) as i64, (j % ows) as i64);
                    (jy - iy + shift) * side as i64 + (jx - ix + shift)
                })
            })
            .collect();
        Ok(Self {
            norm1: candle_nn::layer_norm(c, 1e-5, vb.pp("norm1"))?,
            qkv: candle_nn::linear_b(c, 3 * c, shape.qkv_bias, vb.pp("qkv"))?,
            proj: candle_nn::linear(c, c, vb.pp("proj"))?,
            bias: bias_from_table(&table, &index, (ws * ws, ows * ows))?,
            heads,
            norm2: candle_nn::layer_norm(c, 1e-5, vb.pp("norm2"))?,
            mlp: Mlp::new(vb.pp("mlp"), c, shape.sizes.hidden)?,
        })
    }

    /// `xs` `(b, h, w, c)` in whole windows of side `ws`, the larger ones of side `ows`.
    fn forward(&self, xs: &Tensor, ws: usize, ows: usize) -> Result<Tensor> {
        let (b, h, w, c) = xs.dims4()?;
        let qkv = per_token(&self.qkv, &self.norm1.forward(xs)?)?.reshape((b, h, w, 3, c))?;
        let part = |i: usize| qkv.narrow(3, i, 1)?.squeeze(3);
        let q = partition(&part(0)?, (ws, ws))?;
        let (k, v) = (
            overlapping(&part(1)?, ws, ows)?,
            overlapping(&part(2)?, ws, ows)?,
        );
        let (bw, nq, _) = q.dims3()?;
        let d = c / self.heads;
        let heads = |t: &Tensor, n: usize| {
            t.reshape((bw, n, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (heads(&q, nq)?, heads(&k, ows * ows)?, heads(&v, ows * ows)?);
        let out = window_attention(&q, &k, &v, &self.bias, None, (d as f64).powf(-0.5))?
            .transpose(1, 2)?
            .reshape((bw, nq, c))?;
        let x = (per_token(&self.proj, &merge(&out, (b, h, w), (ws, ws))?)? + xs)?;
        &x + self.mlp.forward(&self.norm2.forward(&x)?)?
    }
}

/// The windows of side `ows` centred on each window of side `ws` of `x` `(b, h, w, c)`,
/// zeros beyond its edges, as `torch.nn.Unfold` cuts them: `(b·windows, ows², c)`.
fn overlapping(x: &Tensor, ws: usize, ows: usize) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let pad = (ows - ws) / 2;
    let padded = x.pad_with_zeros(1, pad, pad)?.pad_with_zeros(2, pad, pad)?;
    let (wy, wx) = (h / ws, w / ws);
    let rows = |count: usize| -> Result<Tensor> {
        let index: Vec<u32> = (0..count)
            .flat_map(|i| (0..ows).map(move |r| (i * ws + r) as u32))
            .collect();
        Tensor::from_vec(index, count * ows, x.device())
    };
    padded
        .index_select(&rows(wy)?, 1)?
        .index_select(&rows(wx)?, 2)?
        .reshape((b, wy, ows, wx, ows, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .reshape((b * wy * wx, ows * ows, c))
}

/// A residual hybrid attention group: its blocks, the overlapping cross-attention, then its
/// closing convolution (if any), added to its input.
struct Group {
    blocks: Vec<HybridBlock>,
    overlap: OverlapAttention,
    closing: Option<Conv2d>,
}

/// HAT, its weights under spandrel's (the official) names.
pub struct Hat {
    shape: HatShape,
    conv_first: Conv2d,
    embed_norm: Option<LayerNorm>,
    groups: Vec<Group>,
    norm: LayerNorm,
    conv_after_body: Option<Conv2d>,
    up: PixelShuffleUp,
    mean: Tensor,
}

impl Hat {
    /// Builds the network of `shape` from `vb`.
    pub fn new(vb: VarBuilder, shape: HatShape) -> Result<Self> {
        let c = shape.sizes.features;
        let conv = |vb: VarBuilder| Conv2d::new(vb, c, c, 3, 1, 1);
        let closing = |vb: VarBuilder| {
            if shape.closing_convs {
                conv(vb).map(Some)
            } else {
                Ok(None)
            }
        };
        let groups = shape
            .sizes
            .depths
            .iter()
            .zip(&shape.sizes.heads)
            .enumerate()
            .map(|(g, (&depth, &heads))| {
                let vb = vb.pp(format!("layers.{g}"));
                let inner = vb.pp("residual_group");
                Ok(Group {
                    blocks: (0..depth)
                        .map(|i| {
                            let block = inner.pp(format!("blocks.{i}"));
                            HybridBlock::new(block, &shape, heads, i % 2 == 1)
                        })
                        .collect::<Result<_>>()?,
                    overlap: OverlapAttention::new(inner.pp("overlap_attn"), &shape, heads)?,
                    closing: closing(vb.pp("conv"))?,
                })
            })
            .collect::<Result<_>>()?;
        let embed_norm = if shape.patch_norm {
            Some(candle_nn::layer_norm(c, 1e-5, vb.pp("patch_embed.norm"))?)
        } else {
            None
        };
        Ok(Self {
            conv_first: Conv2d::new(vb.pp("conv_first"), 3, c, 3, 1, 1)?,
            embed_norm,
            groups,
            norm: candle_nn::layer_norm(c, 1e-5, vb.pp("norm"))?,
            conv_after_body: closing(vb.pp("conv_after_body"))?,
            up: PixelShuffleUp::new(vb.clone(), c, shape.upsample_features, shape.scale)?,
            mean: Tensor::from_slice(&RGB_MEAN, (1, 3, 1, 1), vb.device())?,
            shape,
        })
    }

    /// `(n, 3, h, w)` in [0, 1] to `(n, 3, h·scale, w·scale)`, unclamped.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let mean = self.mean.to_dtype(xs.dtype())?;
        let x = reflect_to_multiple(&xs.broadcast_sub(&mean)?, self.shape.sizes.window)?;
        let x = self.conv_first.forward(&x)?;
        let body = self.features(&x)?;
        let body = match &self.conv_after_body {
            Some(conv) => conv.forward(&body)?,
            None => body,
        };
        let out = self.up.forward(&(body + x)?)?.broadcast_add(&mean)?;
        let s = self.shape.scale;
        out.narrow(2, 0, h * s)?.narrow(3, 0, w * s)
    }

    /// The residual groups on `x` `(b, c, h, w)`, channels last between them.
    fn features(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (ws, ows) = (self.shape.sizes.window, self.shape.overlap);
        let mask = shift_mask(h, w, (ws, ws), x.device(), x.dtype())?;
        let mut tokens = x.permute((0, 2, 3, 1))?.contiguous()?;
        if let Some(norm) = &self.embed_norm {
            tokens = norm.forward(&tokens)?;
        }
        for group in &self.groups {
            let mut y = tokens.clone();
            for block in &group.blocks {
                y = block.forward(&y, ws, &mask)?;
            }
            let y = group.overlap.forward(&y, ws, ows)?;
            let y = match &group.closing {
                Some(conv) => conv
                    .forward(&y.permute((0, 3, 1, 2))?.contiguous()?)?
                    .permute((0, 2, 3, 1))?,
                None => y,
            };
            tokens = (y + tokens)?;
        }
        self.norm
            .forward(&tokens)?
            .permute((0, 3, 1, 2))?
            .contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn overlapping_windows_are_the_padded_neighbourhoods_unfold_cuts() {
        // One channel numbered by position; windows of 2 with 4-pixel neighbourhoods.
        let x = Tensor::arange(1f32, 17.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 4, 4, 1))
            .unwrap();
        let windows = overlapping(&x, 2, 4).unwrap();
        assert_eq!(windows.dims(), [4, 16, 1]);
        let first: Vec<f32> = windows
            .get(0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        #[rustfmt::skip]
        assert_eq!(first, [
            0.0, 0.0, 0.0, 0.0,
            0.0, 1.0, 2.0, 3.0,
            0.0, 5.0, 6.0, 7.0,
            0.0, 9.0, 10.0, 11.0,
        ]);
        let last: Vec<f32> = windows
            .get(3)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(&last[..4], [6.0, 7.0, 8.0, 0.0]);
        assert_eq!(&last[12..], [0.0; 4]);
    }
}
