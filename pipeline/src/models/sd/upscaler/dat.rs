//! DAT (Chen et al. 2023, "Dual Aggregation Transformer for Image Super-Resolution") as its
//! releases (`DAT_x2`/`x3`/`x4`, A1111's DAT upscalers; DAT-S, DAT-2, DAT-light) and spandrel
//! lay it out. Its blocks alternate between two kinds of attention, each beside a depthwise
//! convolution branch that the attention's output and the branch's gate each other through:
//!
//! - **spatial**: half the channels attend within windows of `split` rows by columns, the
//!   other half within windows turned the other way, each with a position bias that a small
//!   MLP computes from the offsets (some blocks' windows shifted by half a window); the image
//!   is padded with zeros after the `qkv` projection to whole windows, as DAT pads it;
//! - **channel**: each head's channels attend to each other over the whole image (queries and
//!   keys normalised, scaled by a learned temperature).
//!
//! Its feed-forward gates half its hidden channels with a depthwise convolution of the other
//! half. Batch norms are folded into the convolutions before them when the file is read.

use std::collections::HashMap;

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::super::kernels::{BatchNorm, Conv2d, depthwise3x3, fold_batch_norm, gelu_erf};
use super::swin::{
    Closing, OneStepUp, PixelShuffleUp, RGB_MEAN, bias_from_table, merge, partition, per_token,
    pixel_shuffle_scale, relative_index, shift_mask, unit_rows, window_attention,
};

/// The network's sizes, read from its weights.
#[derive(Clone, Debug, PartialEq)]
pub struct DatShape {
    /// Channels through the transformer (180 in the releases, 60 in DAT-light).
    pub features: usize,
    /// Blocks in each residual group.
    pub depths: Vec<usize>,
    /// Attention heads in each group (half of them in each spatial branch).
    pub heads: Vec<usize>,
    /// The first spatial branch's windows, rows by columns (8 by 32 in DAT and DAT-light, 8
    /// by 16 in DAT-S); the second branch's are turned the other way.
    pub split: (usize, usize),
    /// Hidden channels of the feed-forward networks (half of them gate the other half).
    pub hidden: usize,
    /// Whether the attention's `qkv` projections have biases.
    pub qkv_bias: bool,
    /// Whether each group (and the body) closes with three convolutions rather than one.
    pub three_convs: bool,
    /// Channels of the classical pixel-shuffle upsampler, or `None` for DAT-light's single
    /// pixel-shuffled convolution.
    pub upsample_features: Option<usize>,
    /// How many times larger the output is.
    pub scale: usize,
}

/// Whether `names` are a DAT network's (spandrel's test, in part).
pub fn is_dat(has: impl Fn(&str) -> bool) -> bool {
    let block = "layers.0.blocks.0";
    has("conv_first.weight")
        && has("before_RG.1.weight")
        && has("norm.weight")
        && has(&format!("{block}.ffn.sg.conv.weight"))
        && has(&format!("{block}.attn.attns.0.rpe_biases"))
        && has(&format!("{block}.attn.channel_interaction.1.weight"))
}

/// The network's sizes from its `tensors`, as spandrel reads them (the windows from the
/// stored position offsets), or what does not fit.
pub fn shape_of(tensors: &HashMap<String, Tensor>) -> std::result::Result<DatShape, String> {
    let shape = |name: &str| tensors.get(name).map(|t| t.dims().to_vec());
    // Dimension `i` of `name`.
    let dim = |name: &str, i: usize| {
        shape(name)
            .and_then(|dims| dims.get(i).copied())
            .ok_or_else(|| format!("no `{name}` of {} dimensions", i + 1))
    };
    let has = |name: &str| tensors.contains_key(name);
    let inputs = dim("conv_first.weight", 1)?;
    if inputs != 3 {
        return Err(format!(
            "its first convolution takes {inputs} channels, not RGB"
        ));
    }
    let features = dim("conv_first.weight", 0)?;
    let groups = (0..)
        .take_while(|g| has(&format!("layers.{g}.blocks.0.norm1.weight")))
        .count();
    let mut depths = Vec::with_capacity(groups);
    let mut heads = Vec::with_capacity(groups);
    for g in 0..groups {
        let depth = (0..)
            .take_while(|i| has(&format!("layers.{g}.blocks.{i}.norm1.weight")))
            .count();
        // A channel-attention block's temperatures count the heads; without one, the spatial
        // branch's position MLP counts half of them.
        let temperature = format!("layers.{g}.blocks.1.attn.temperature");
        let count = if has(&temperature) {
            dim(&temperature, 0)?
        } else {
            2 * dim(
                &format!("layers.{g}.blocks.0.attn.attns.0.pos.pos3.2.weight"),
                0,
            )?
        };
        depths.push(depth);
        heads.push(count);
    }
    if groups == 0 || !features.is_multiple_of(2) {
        return Err(format!("{groups} groups of {features} channels"));
    }
    if let Some((g, &h)) = heads.iter().enumerate().find(|(_, h)| {
        **h < 2 || !features.is_multiple_of(**h) || !(features / 2).is_multiple_of(**h / 2)
    }) {
        return Err(format!(
            "group {g}'s {h} heads do not divide its {features} channels"
        ));
    }
    // The offsets run from 1 − side to side − 1: the last row is (rows − 1, columns − 1).
    let offsets = "layers.0.blocks.0.attn.attns.0.rpe_biases";
    let last = tensors
        .get(offsets)
        .and_then(|t| {
            t.get(t.dim(0).ok()?.checked_sub(1)?)
                .ok()?
                .to_vec1::<f32>()
                .ok()
        })
        .filter(|row| row.len() == 2 && row.iter().all(|v| *v >= 0.0 && v.fract() == 0.0))
        .ok_or_else(|| format!("`{offsets}` does not end with a window's last offset"))?;
    let split = (last[0] as usize + 1, last[1] as usize + 1);
    let hidden = dim("layers.0.blocks.0.ffn.fc1.weight", 0)?;
    let (upsample_features, scale) = if has("conv_last.weight") {
        let features = dim("conv_last.weight", 1)?;
        (Some(features), pixel_shuffle_scale(shape, features)?)
    } else {
        (None, OneStepUp::scale_of(shape)?)
    };
    Ok(DatShape {
        features,
        depths,
        heads,
        split,
        hidden,
        qkv_bias: has("layers.0.blocks.0.attn.qkv.bias"),
        three_convs: !has("conv_after_body.weight"),
        upsample_features,
        scale,
    })
}

/// The convolution `conv` (`(out, in, k, k)` with a bias) and the batch norm `norm` after it,
/// evaluated with its running statistics, as one convolution's weight and bias.
fn folded(vb: &VarBuilder, conv: &str, norm: &str, dims: [usize; 4]) -> Result<(Tensor, Tensor)> {
    let (weight, bias) = (
        vb.get(dims.to_vec(), &format!("{conv}.weight"))?,
        vb.get(dims[0], &format!("{conv}.bias"))?,
    );
    let stat = |name: &str| vb.get(dims[0], &format!("{norm}.{name}"));
    let (gamma, beta, mean, var) = (
        stat("weight")?,
        stat("bias")?,
        stat("running_mean")?,
        stat("running_var")?,
    );
    let norm = BatchNorm {
        weight: &gamma,
        bias: &beta,
        mean: &mean,
        var: &var,
    };
    fold_batch_norm(&weight, &bias, norm)
}

/// A 1×1 convolution (and the batch norm after it, if `norm`) as a linear layer on channels.
fn pointwise(
    vb: &VarBuilder,
    conv: &str,
    norm: Option<&str>,
    (c_in, c_out): (usize, usize),
) -> Result<Linear> {
    let (weight, bias) = match norm {
        Some(norm) => folded(vb, conv, norm, [c_out, c_in, 1, 1])?,
        None => (
            vb.get((c_out, c_in, 1, 1), &format!("{conv}.weight"))?,
            vb.get(c_out, &format!("{conv}.bias"))?,
        ),
    };
    Ok(Linear::new(weight.reshape((c_out, c_in))?, Some(bias)))
}

/// A 3×3 depthwise convolution (zero padding 1) on channels-last images `(b, h, w, c)`.
pub(super) struct Depthwise {
    /// `(3, 3, c)`: each tap's weight for every channel.
    taps: Tensor,
    bias: Tensor,
}

impl Depthwise {
    /// Reads `weight` `(c, 1, 3, 3)` and `bias` from `vb`.
    pub(super) fn new(vb: &VarBuilder, conv: &str, channels: usize) -> Result<Self> {
        let weight = vb.get((channels, 1, 3, 3), &format!("{conv}.weight"))?;
        let bias = vb.get(channels, &format!("{conv}.bias"))?;
        Self::from_weights(weight, bias)
    }

    /// Reads `weight` `(c, 1, 3, 3)` alone from `vb`: a convolution without a bias.
    pub(super) fn without_bias(vb: &VarBuilder, conv: &str, channels: usize) -> Result<Self> {
        let weight = vb.get((channels, 1, 3, 3), &format!("{conv}.weight"))?;
        let bias = Tensor::zeros(channels, weight.dtype(), weight.device())?;
        Self::from_weights(weight, bias)
    }

    /// The convolution `conv` and the batch norm `norm` after it, as one.
    fn with_norm(vb: &VarBuilder, conv: &str, norm: &str, channels: usize) -> Result<Self> {
        let (weight, bias) = folded(vb, conv, norm, [channels, 1, 3, 3])?;
        Self::from_weights(weight, bias)
    }

    /// From `weight` `(c, 1, 3, 3)` and `bias` `(c)` in hand.
    pub(super) fn from_weights(weight: Tensor, bias: Tensor) -> Result<Self> {
        let c = weight.dim(0)?;
        Ok(Self {
            taps: weight
                .reshape((c, 9))?
                .t()?
                .reshape((3, 3, c))?
                .contiguous()?,
            bias,
        })
    }
}

impl Depthwise {
    /// The convolution of `xs` `(b, h, w, c)`, then GELU when `gelu`.
    pub(super) fn forward(&self, xs: &Tensor, gelu: bool) -> Result<Tensor> {
        depthwise3x3(xs, &self.taps, &self.bias, gelu)
    }
}

/// The convolution branch beside each attention and the maps the two gate each other with
/// (`attn.dwconv`, `attn.channel_interaction`, `attn.spatial_interaction`).
struct Interaction {
    local: Depthwise,
    squeeze: Linear,
    excite: Linear,
    spatial_in: Linear,
    spatial_out: Linear,
}

impl Interaction {
    fn new(vb: &VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            local: Depthwise::with_norm(vb, "dwconv.0", "dwconv.1", c)?,
            squeeze: pointwise(
                vb,
                "channel_interaction.1",
                Some("channel_interaction.2"),
                (c, c / 8),
            )?,
            excite: pointwise(vb, "channel_interaction.4", None, (c / 8, c))?,
            spatial_in: pointwise(
                vb,
                "spatial_interaction.0",
                Some("spatial_interaction.1"),
                (c, c / 16),
            )?,
            spatial_out: pointwise(vb, "spatial_interaction.3", None, (c / 16, 1))?,
        })
    }

    /// The convolution branch on the values `v` `(b, h, w, c)`.
    fn local(&self, v: &Tensor) -> Result<Tensor> {
        self.local.forward(v, true)
    }

    /// One gate per channel `(b, 1, 1, c)` from `x` `(b, h, w, c)` averaged over the image.
    fn channel_gate(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, _, c) = x.dims4()?;
        let mean = x.mean(1)?.mean(1)?;
        let map = self
            .excite
            .forward(&gelu_erf(&self.squeeze.forward(&mean)?)?)?;
        candle_nn::ops::sigmoid(&map.reshape((b, 1, 1, c))?)
    }

    /// One gate per pixel `(b, h, w, 1)` from `x` `(b, h, w, c)`.
    fn spatial_gate(&self, x: &Tensor) -> Result<Tensor> {
        let map = per_token(
            &self.spatial_out,
            &gelu_erf(&per_token(&self.spatial_in, x)?)?,
        )?;
        candle_nn::ops::sigmoid(&map)
    }
}

/// One spatial branch: attention within windows of `window` (rows, columns) over its half of
/// the channels, with the dynamic position bias its MLP gives for the window's offsets.
struct Branch {
    window: (usize, usize),
    /// `(1, heads, n, n)` for the window's `n` pixels.
    bias: Tensor,
    heads: usize,
}

impl Branch {
    /// Reads the position MLP (`attns.N.pos`) for `heads` heads over `channels` from `vb`.
    fn new(
        vb: VarBuilder,
        channels: usize,
        heads: usize,
        (wh, ww): (usize, usize),
    ) -> Result<Self> {
        let width = channels / 4 / 4;
        let layer = |name: &str, out: usize| -> Result<(LayerNorm, Linear)> {
            Ok((
                candle_nn::layer_norm(width, 1e-5, vb.pp(format!("pos.{name}.0")))?,
                candle_nn::linear(width, out, vb.pp(format!("pos.{name}.2")))?,
            ))
        };
        let offsets: Vec<f32> = (1 - wh as i64..wh as i64)
            .flat_map(|dy| (1 - ww as i64..ww as i64).flat_map(move |dx| [dy as f32, dx as f32]))
            .collect();
        let rows = offsets.len() / 2;
        let mut pos = candle_nn::linear(2, width, vb.pp("pos.pos_proj"))?
            .forward(&Tensor::from_vec(offsets, (rows, 2), vb.device())?)?;
        for (name, out) in [("pos1", width), ("pos2", width), ("pos3", heads)] {
            let (norm, linear) = layer(name, out)?;
            pos = linear.forward(&norm.forward(&pos)?.relu()?)?;
        }
        let n = wh * ww;
        Ok(Self {
            window: (wh, ww),
            bias: bias_from_table(&pos, &relative_index((wh, ww)), (n, n))?,
            heads,
        })
    }

    /// `qkv` `(b, h, w, 3, c)` (whole windows) attended within the windows; `(b, h, w, c)`.
    fn forward(&self, qkv: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, h, w, _, c) = qkv.dims5()?;
        let windows = partition(&qkv.reshape((b, h, w, 3 * c))?, self.window)?;
        let (bw, n, _) = windows.dims3()?;
        let qkv = windows
            .reshape((bw, n, 3, self.heads, c / self.heads))?
            .permute((2, 0, 3, 1, 4))?;
        let (q, k, v) = (
            qkv.get(0)?.contiguous()?,
            qkv.get(1)?.contiguous()?,
            qkv.get(2)?.contiguous()?,
        );
        let scale = ((c / self.heads) as f64).powf(-0.5);
        let out = window_attention(&q, &k, &v, &self.bias, mask, scale)?
            .transpose(1, 2)?
            .reshape((bw, n, c))?;
        merge(&out, (b, h, w), self.window)
    }
}

/// The masks of the two branches' shifted windows on an image padded to `h`×`w`.
type Masks = [Tensor; 2];

/// Adaptive spatial attention: the two branches, the convolution branch, and the gates.
struct SpatialAttention {
    qkv: Linear,
    proj: Linear,
    branches: [Branch; 2],
    mix: Interaction,
    shifted: bool,
}

impl SpatialAttention {
    fn new(vb: VarBuilder, shape: &DatShape, heads: usize, shifted: bool) -> Result<Self> {
        let c = shape.features;
        let (rows, cols) = shape.split;
        let branch =
            |i: usize, window| Branch::new(vb.pp(format!("attns.{i}")), c / 2, heads / 2, window);
        Ok(Self {
            qkv: candle_nn::linear_b(c, 3 * c, shape.qkv_bias, vb.pp("qkv"))?,
            proj: candle_nn::linear(c, c, vb.pp("proj"))?,
            branches: [branch(0, (rows, cols))?, branch(1, (cols, rows))?],
            mix: Interaction::new(&vb, c)?,
            shifted,
        })
    }

    /// `x` `(b, h, w, c)`; `masks` the shifted windows' on the image padded to whole windows.
    fn forward(&self, x: &Tensor, masks: Option<&Masks>) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let qkv = per_token(&self.qkv, x)?.reshape((b, h, w, 3, c))?;
        let (hp, wp) = padded_size(self.branches[0].window, h, w);
        // Zeros after the projection, as DAT pads: the padding's queries, keys and values are 0.
        let padded = qkv
            .pad_with_zeros(1, 0, hp - h)?
            .pad_with_zeros(2, 0, wp - w)?;
        let halves = self
            .branches
            .iter()
            .enumerate()
            .map(|(i, branch)| {
                let part = padded.narrow(4, i * c / 2, c / 2)?;
                let (sy, sx) = (branch.window.0 / 2, branch.window.1 / 2);
                let out = match (self.shifted, masks) {
                    (false, _) => branch.forward(&part, None)?,
                    (true, Some(masks)) => {
                        let rolled = part.roll(-(sy as i32), 1)?.roll(-(sx as i32), 2)?;
                        let out = branch.forward(&rolled, Some(&masks[i]))?;
                        out.roll(sy as i32, 1)?.roll(sx as i32, 2)?
                    }
                    (true, None) => {
                        return Err(candle_core::Error::Msg(
                            "a shifted block was given no masks".into(),
                        ));
                    }
                };
                out.narrow(1, 0, h)?.narrow(2, 0, w)
            })
            .collect::<Result<Vec<_>>>()?;
        let attended = Tensor::cat(&halves, 3)?;
        let local = self.mix.local(&qkv.narrow(3, 2, 1)?.squeeze(3)?)?;
        let mixed = (attended.broadcast_mul(&self.mix.channel_gate(&local)?)?
            + local.broadcast_mul(&self.mix.spatial_gate(&attended)?)?)?;
        per_token(&self.proj, &mixed)
    }
}

/// The size `h`×`w` is padded to: a multiple of the windows' longer side each way.
fn padded_size((rows, cols): (usize, usize), h: usize, w: usize) -> (usize, usize) {
    let side = rows.max(cols);
    (h.div_ceil(side) * side, w.div_ceil(side) * side)
}

/// Adaptive channel attention: each head's channels attend to each other over the image,
/// beside the convolution branch, and the gates.
struct ChannelAttention {
    qkv: Linear,
    proj: Linear,
    /// `(heads, 1, 1)`.
    temperature: Tensor,
    heads: usize,
    mix: Interaction,
}

impl ChannelAttention {
    fn new(vb: VarBuilder, shape: &DatShape, heads: usize) -> Result<Self> {
        let c = shape.features;
        Ok(Self {
            qkv: candle_nn::linear_b(c, 3 * c, shape.qkv_bias, vb.pp("qkv"))?,
            proj: candle_nn::linear(c, c, vb.pp("proj"))?,
            temperature: vb.get((heads, 1, 1), "temperature")?,
            heads,
            mix: Interaction::new(&vb, c)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let d = c / self.heads;
        let qkv = per_token(&self.qkv, x)?.reshape((b, h, w, 3, c))?;
        // Each (b, heads, d, pixels).
        let part = |i: usize| {
            qkv.narrow(3, i, 1)?
                .reshape((b, h * w, self.heads, d))?
                .permute((0, 2, 3, 1))?
                .contiguous()
        };
        let (q, k, v) = (unit_rows(&part(0)?)?, unit_rows(&part(1)?)?, part(2)?);
        let scores = q.matmul(&k.t()?)?.broadcast_mul(&self.temperature)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let attended = weights
            .matmul(&v)?
            .permute((0, 3, 1, 2))?
            .reshape((b, h, w, c))?;
        let local = self.mix.local(&qkv.narrow(3, 2, 1)?.squeeze(3)?)?;
        let mixed = (attended.broadcast_mul(&self.mix.spatial_gate(&local)?)?
            + local.broadcast_mul(&self.mix.channel_gate(&attended)?)?)?;
        per_token(&self.proj, &mixed)
    }
}

/// The spatial-gate feed-forward network: `fc1`, GELU, the second half of the channels
/// through a layer norm and a depthwise convolution gating the first, `fc2`.
struct GatedFeedForward {
    fc1: Linear,
    norm: LayerNorm,
    conv: Depthwise,
    fc2: Linear,
}

impl GatedFeedForward {
    fn new(vb: VarBuilder, c: usize, hidden: usize) -> Result<Self> {
        let half = hidden / 2;
        Ok(Self {
            fc1: candle_nn::linear(c, hidden, vb.pp("fc1"))?,
            norm: candle_nn::layer_norm(half, 1e-5, vb.pp("sg.norm"))?,
            conv: Depthwise::new(&vb, "sg.conv", half)?,
            fc2: candle_nn::linear(half, c, vb.pp("fc2"))?,
        })
    }
}

impl Module for GatedFeedForward {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let x = gelu_erf(&per_token(&self.fc1, xs)?)?;
        let half = x.dim(D::Minus1)? / 2;
        let gate = self.conv.forward(
            &self.norm.forward(&x.narrow(D::Minus1, half, half)?)?,
            false,
        )?;
        per_token(&self.fc2, &(x.narrow(D::Minus1, 0, half)? * gate)?)
    }
}

/// A block's attention.
enum Attention {
    Spatial(SpatialAttention),
    Channel(ChannelAttention),
}

/// A dual aggregation transformer block: attention, then the feed-forward network, each
/// around a layer norm and added to its input.
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    ffn: GatedFeedForward,
}

impl Block {
    fn forward(&self, xs: &Tensor, masks: Option<&Masks>) -> Result<Tensor> {
        let x = self.norm1.forward(xs)?;
        let attended = match &self.attn {
            Attention::Spatial(attn) => attn.forward(&x, masks)?,
            Attention::Channel(attn) => attn.forward(&x)?,
        };
        let xs = (xs + attended)?;
        &xs + self.ffn.forward(&self.norm2.forward(&xs)?)?
    }
}

/// A residual group: its blocks, then one or three convolutions, added to its input.
struct Group {
    blocks: Vec<Block>,
    closing: Closing,
}

/// How the features become the larger image.
enum Up {
    PixelShuffle(PixelShuffleUp),
    Direct(OneStepUp),
}

/// DAT, its weights under spandrel's (the official) names.
pub struct Dat {
    shape: DatShape,
    conv_first: Conv2d,
    embed_norm: LayerNorm,
    groups: Vec<Group>,
    norm: LayerNorm,
    conv_after_body: Closing,
    up: Up,
    mean: Tensor,
}

/// Whether block `i` of group `g` shifts its windows (DAT's rule; only spatial blocks, the
/// even ones, can).
fn shifts(g: usize, i: usize) -> bool {
    if g.is_multiple_of(2) {
        i >= 2 && (i - 2).is_multiple_of(4)
    } else {
        i.is_multiple_of(4)
    }
}

impl Dat {
    /// Builds the network of `shape` from `vb`.
    pub fn new(vb: VarBuilder, shape: DatShape) -> Result<Self> {
        let c = shape.features;
        let groups = shape
            .depths
            .iter()
            .zip(&shape.heads)
            .enumerate()
            .map(|(g, (&depth, &heads))| {
                let vb = vb.pp(format!("layers.{g}"));
                let blocks = (0..depth)
                    .map(|i| {
                        let block = vb.pp(format!("blocks.{i}"));
                        let attn = if i % 2 == 0 {
                            Attention::Spatial(SpatialAttention::new(
                                block.pp("attn"),
                                &shape,
                                heads,
                                shifts(g, i),
                            )?)
                        } else {
                            Attention::Channel(ChannelAttention::new(
                                block.pp("attn"),
                                &shape,
                                heads,
                            )?)
                        };
                        Ok(Block {
                            norm1: candle_nn::layer_norm(c, 1e-5, block.pp("norm1"))?,
                            attn,
                            norm2: candle_nn::layer_norm(c, 1e-5, block.pp("norm2"))?,
                            ffn: GatedFeedForward::new(block.pp("ffn"), c, shape.hidden)?,
                        })
                    })
                    .collect::<Result<_>>()?;
                Ok(Group {
                    blocks,
                    closing: Closing::new(vb.pp("conv"), c, shape.three_convs)?,
                })
            })
            .collect::<Result<_>>()?;
        let up = match shape.upsample_features {
            Some(features) => {
                Up::PixelShuffle(PixelShuffleUp::new(vb.clone(), c, features, shape.scale)?)
            }
            None => Up::Direct(OneStepUp::new(vb.clone(), c, shape.scale)?),
        };
        Ok(Self {
            conv_first: Conv2d::new(vb.pp("conv_first"), 3, c, 3, 1, 1)?,
            embed_norm: candle_nn::layer_norm(c, 1e-5, vb.pp("before_RG.1"))?,
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
        let mean = self.mean.to_dtype(xs.dtype())?;
        let x = self.conv_first.forward(&xs.broadcast_sub(&mean)?)?;
        let body = (self.conv_after_body.forward(&self.features(&x)?)? + x)?;
        let out = match &self.up {
            Up::PixelShuffle(up) => up.forward(&body)?,
            Up::Direct(up) => up.forward(&body)?,
        };
        out.broadcast_add(&mean)
    }

    /// The residual groups on `x` `(b, c, h, w)`, channels last between them.
    fn features(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (rows, cols) = self.shape.split;
        let (hp, wp) = padded_size((rows, cols), h, w);
        let any_shifted = self
            .groups
            .iter()
            .enumerate()
            .any(|(g, group)| (0..group.blocks.len()).any(|i| i % 2 == 0 && shifts(g, i)));
        let masks = if any_shifted {
            let mask = |window| shift_mask(hp, wp, window, x.device(), x.dtype());
            Some([mask((rows, cols))?, mask((cols, rows))?])
        } else {
            None
        };
        let mut tokens = self
            .embed_norm
            .forward(&x.permute((0, 2, 3, 1))?.contiguous()?)?;
        for group in &self.groups {
            let mut y = tokens.clone();
            for block in &group.blocks {
                y = block.forward(&y, masks.as_ref())?;
            }
            let y = group
                .closing
                .forward(&y.permute((0, 3, 1, 2))?.contiguous()?)?;
            tokens = (y.permute((0, 2, 3, 1))? + tokens)?;
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
    fn shifted_blocks_follow_dat_s_rule_for_even_and_odd_groups() {
        let even: Vec<usize> = (0..12).filter(|&i| shifts(0, i)).collect();
        let odd: Vec<usize> = (0..12).filter(|&i| shifts(1, i)).collect();
        assert_eq!(even, [2, 6, 10]);
        assert_eq!(odd, [0, 4, 8]);
    }

    #[test]
    fn sizes_are_read_from_the_file_and_a_broken_one_is_refused_saying_why() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sd/upscalers/dat-x3-light.safetensors"
        );
        let mut tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
        assert_eq!(
            shape_of(&tensors).unwrap(),
            DatShape {
                features: 32,
                depths: vec![2],
                heads: vec![2],
                split: (4, 8),
                hidden: 48,
                qkv_bias: false,
                three_convs: true,
                upsample_features: None,
                scale: 3,
            }
        );
        let offsets = "layers.0.blocks.0.attn.attns.0.rpe_biases";
        let stored = tensors
            .insert(
                offsets.into(),
                Tensor::new(&[[0.5f32, -1.0]], &Device::Cpu).unwrap(),
            )
            .unwrap();
        let err = shape_of(&tensors).unwrap_err();
        assert!(err.contains(offsets), "{err}");
        tensors.insert(offsets.into(), stored);
        // Without channel attention, the heads are counted from the position MLP.
        tensors.remove("layers.0.blocks.1.attn.temperature");
        assert_eq!(shape_of(&tensors).unwrap().heads, [2]);
        tensors.remove("upsample.0.weight");
        let err = shape_of(&tensors).unwrap_err();
        assert!(err.contains("no `upsample.0.weight`"), "{err}");
    }

    #[test]
    fn images_pad_to_the_longer_window_side_both_ways() {
        assert_eq!(padded_size((8, 32), 224, 224), (224, 224));
        assert_eq!(padded_size((8, 32), 13, 21), (32, 32));
        assert_eq!(padded_size((2, 4), 13, 21), (16, 24));
    }
}
