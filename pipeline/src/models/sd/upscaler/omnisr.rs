//! OmniSR (Wang et al. 2023, "Omni Aggregation Networks for Lightweight Image
//! Super-Resolution") as its releases (`OmniSR_X2_DIV2K.pth`…, bare state dicts) and spandrel
//! lay it out: a 3×3 convolution into features, residual groups of Omni self-attention blocks
//! each closed by a 1×1 convolution, the group's input added and an enhanced spatial attention
//! gate, a 3×3 convolution added to the first features, and one convolution pixel-shuffled
//! into the larger image.
//!
//! Each block is an inverted-residual convolution (with squeeze-and-excitation), then twice:
//!
//! - **spatial** attention among the pixels of a window (a learned relative position bias when
//!   the file has one), then among pixels a window's count apart (a grid across the image);
//! - **channel** attention, each head's channels attending to each other over the pixels of
//!   one window (queries and keys normalised, scaled by a learned temperature), then over the
//!   pixels at one place in every window;
//!
//! each attention followed by a gated convolutional feed-forward network, and each of the five
//! preceded by a layer norm and added to its input. The image is padded with zeros at its
//! bottom and right to whole windows, and the output cut back.

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::super::kernels::{Conv2d, geglu, gelu_erf, sigmoid_gate, silu};
use super::compact::pixel_shuffle;
use super::dat::Depthwise;
use super::swin::{
    bias_from_table, merge, partition, per_token, relative_index, unit_rows, window_attention,
};

/// The window side spandrel takes when no position bias tells it (the releases').
const DEFAULT_WINDOW: usize = 8;
/// Heads of every attention (spatial heads are a quarter of the channels wide).
const HEADS: usize = 4;
/// The side the padded image must reach for the spatial gate's 3×3 stride-2 convolution and
/// 7×7 max pool to have a pixel to work on.
const GATE_SIDE: usize = 15;

/// The network's sizes, read from its weights' shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OmniSrShape {
    /// Feature channels (64 in the releases).
    pub features: usize,
    /// Residual groups (5 in the releases).
    pub groups: usize,
    /// Blocks in each group (1 in the releases).
    pub blocks: usize,
    /// Window side (8 in the releases): from the position bias table, or spandrel's default
    /// without one.
    pub window: usize,
    /// Whether the spatial attention adds a learned relative position bias.
    pub position_bias: bool,
    /// Whether the opening, closing, group and upsampling convolutions have biases.
    pub biased: bool,
    /// How many times larger the output is.
    pub scale: usize,
}

impl OmniSrShape {
    /// The smallest side an image may have: its padding to whole windows must reach 15.
    pub fn minimum_side(&self) -> usize {
        let w = self.window;
        GATE_SIDE.div_ceil(w).saturating_sub(1) * w + 1
    }
}

/// Whether `has` names an OmniSR network's tensors (spandrel's test).
pub fn is_omnisr(has: impl Fn(&str) -> bool) -> bool {
    [
        "residual_layer.0.residual_layer.0.layer.0.fn.0.weight",
        "input.weight",
        "up.0.weight",
    ]
    .into_iter()
    .all(has)
}

/// The network's sizes from its tensors' shapes (`shape(name)`), as spandrel reads them, or
/// what does not fit.
pub fn shape_of(
    shape: impl Fn(&str) -> Option<Vec<usize>>,
) -> std::result::Result<OmniSrShape, String> {
    let input = shape("input.weight").ok_or("no `input.weight`")?;
    if input.len() != 4 || input[1] != 3 {
        return Err(format!(
            "`input.weight` is {input:?}: only RGB upscalers are read"
        ));
    }
    let features = input[0];
    if features == 0 || !features.is_multiple_of(HEADS) {
        return Err(format!(
            "its {features} channels do not split into {HEADS} heads"
        ));
    }
    let block =
        |g: usize, b: usize| format!("residual_layer.{g}.residual_layer.{b}.layer.0.fn.0.weight");
    let groups = (0..).take_while(|g| shape(&block(*g, 0)).is_some()).count();
    let blocks = (0..).take_while(|b| shape(&block(0, *b)).is_some()).count();
    let table = shape("residual_layer.0.residual_layer.0.layer.2.fn.rel_pos_bias.weight");
    let window = match &table {
        Some(dims) => {
            let rows = dims.first().copied().unwrap_or(0);
            (1..=64)
                .find(|w| (2 * w - 1) * (2 * w - 1) == rows)
                .ok_or_else(|| {
                    format!("its position bias table's {rows} rows are no (2·window − 1)²")
                })?
        }
        None => DEFAULT_WINDOW,
    };
    let out = shape("up.0.weight")
        .and_then(|dims| dims.first().copied())
        .unwrap_or(0);
    let scale = (1..=8).find(|s| 3 * s * s == out).ok_or_else(|| {
        format!("the upsampling convolution's {out} channels are not 3·scale² for an RGB image")
    })?;
    Ok(OmniSrShape {
        features,
        groups,
        blocks,
        window,
        position_bias: table.is_some(),
        biased: shape("input.bias").is_some(),
        scale,
    })
}

/// A 1×1 convolution `(c_out, c_in, 1, 1)` under `vb` as a linear layer on channels.
fn pointwise(vb: VarBuilder, c_in: usize, c_out: usize, biased: bool) -> Result<Linear> {
    let weight = vb
        .get((c_out, c_in, 1, 1), "weight")?
        .reshape((c_out, c_in))?;
    let bias = if biased {
        Some(vb.get(c_out, "bias")?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}

/// A 3×3 convolution (padding 1) under `vb`, with a bias when `biased`.
fn conv3x3(vb: VarBuilder, c_in: usize, c_out: usize, biased: bool) -> Result<Conv2d> {
    if biased {
        Conv2d::new(vb, c_in, c_out, 3, 1, 1)
    } else {
        Conv2d::without_bias(vb, c_in, c_out, 3, 1, 1)
    }
}

/// `x` `(b, h, w, c)` cut into groups of pixels spread evenly over it: `(b·(h/rows)·(w/cols),
/// rows·cols, c)`, group `(i, j)` holding pixels `(r·h/rows + i, s·w/cols + j)` in order of
/// `(r, s)`.
fn interleave(x: &Tensor, (rows, cols): (usize, usize)) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    x.reshape((b, rows, h / rows, cols, w / cols, c))?
        .permute((0, 2, 4, 1, 3, 5))?
        .reshape((b * (h / rows) * (w / cols), rows * cols, c))
}

/// The groups [`interleave`] made, laid back as `(b, h, w, c)`.
fn deinterleave(
    groups: &Tensor,
    (b, h, w): (usize, usize, usize),
    (rows, cols): (usize, usize),
) -> Result<Tensor> {
    let c = groups.dim(2)?;
    groups
        .reshape((b, h / rows, w / cols, rows, cols, c))?
        .permute((0, 3, 1, 4, 2, 5))?
        .reshape((b, h, w, c))
}

/// Which pixels attend together.
#[derive(Clone, Copy)]
enum Grouping {
    /// The pixels of each window.
    Windows,
    /// The pixels a window's count apart (spatial), or at one place in every window
    /// (channel).
    Grid,
}

/// The inverted-residual convolution opening a block: a 1×1 convolution, GELU, a depthwise
/// 3×3 one, GELU, a squeeze-and-excitation gate, a 1×1 convolution, added to its input.
struct InvertedResidual {
    expand: Linear,
    depthwise: Depthwise,
    squeeze: Linear,
    excite: Linear,
    project: Linear,
}

impl InvertedResidual {
    fn new(vb: VarBuilder, c: usize) -> Result<Self> {
        let squeezed = c / 4;
        Ok(Self {
            expand: pointwise(vb.pp("0"), c, c, true)?,
            depthwise: Depthwise::new(&vb, "2", c)?,
            squeeze: candle_nn::linear_no_bias(c, squeezed, vb.pp("4.gate.1"))?,
            excite: candle_nn::linear_no_bias(squeezed, c, vb.pp("4.gate.3"))?,
            project: pointwise(vb.pp("5"), c, c, true)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self
            .depthwise
            .forward(&gelu_erf(&per_token(&self.expand, x)?)?, true)?;
        let (b, _, _, c) = y.dims4()?;
        let mean = y.mean(1)?.mean(1)?;
        let gate =
            candle_nn::ops::sigmoid(&self.excite.forward(&silu(&self.squeeze.forward(&mean)?)?)?)?;
        let y = y.broadcast_mul(&gate.reshape((b, 1, 1, c))?)?;
        per_token(&self.project, &y)? + x
    }
}

/// Multi-head attention among groups of pixels, after a layer norm, added to its input.
struct SpatialAttention {
    norm: LayerNorm,
    qkv: Linear,
    out: Linear,
    /// `(1, heads, n, n)`: the relative position bias, or zeros.
    bias: Tensor,
    window: usize,
}

impl SpatialAttention {
    fn new(vb: VarBuilder, shape: &OmniSrShape) -> Result<Self> {
        let (c, w) = (shape.features, shape.window);
        let n = w * w;
        let bias = if shape.position_bias {
            let table = vb.get(((2 * w - 1) * (2 * w - 1), HEADS), "fn.rel_pos_bias.weight")?;
            bias_from_table(&table, &relative_index((w, w)), (n, n))?
        } else {
            Tensor::zeros((1, HEADS, n, n), candle_core::DType::F32, vb.device())?
        };
        Ok(Self {
            norm: candle_nn::layer_norm(c, 1e-5, vb.pp("norm"))?,
            qkv: candle_nn::linear_no_bias(c, 3 * c, vb.pp("fn.to_qkv"))?,
            out: candle_nn::linear_no_bias(c, c, vb.pp("fn.to_out.0"))?,
            bias,
            window: w,
        })
    }

    fn forward(&self, x: &Tensor, grouping: Grouping) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let ws = self.window;
        let y = self.norm.forward(x)?;
        let groups = match grouping {
            Grouping::Windows => partition(&y, (ws, ws))?,
            Grouping::Grid => interleave(&y, (ws, ws))?,
        };
        let (g, n, _) = groups.dims3()?;
        let d = c / HEADS;
        let qkv = per_token(&self.qkv, &groups)?
            .reshape((g, n, 3, HEADS, d))?
            .permute((2, 0, 3, 1, 4))?;
        let part = |i: usize| qkv.get(i)?.contiguous();
        let attended = window_attention(
            &part(0)?,
            &part(1)?,
            &part(2)?,
            &self.bias,
            None,
            1.0 / (d as f64).sqrt(),
        )?
        .permute((0, 2, 1, 3))?
        .reshape((g, n, c))?;
        let out = per_token(&self.out, &attended)?;
        let out = match grouping {
            Grouping::Windows => merge(&out, (b, h, w), (ws, ws))?,
            Grouping::Grid => deinterleave(&out, (b, h, w), (ws, ws))?,
        };
        out + x
    }
}

/// Channel attention within groups of pixels, after a layer norm, added to its input.
struct ChannelAttention {
    norm: LayerNorm,
    qkv: Linear,
    depthwise: Depthwise,
    out: Linear,
    /// `(heads, 1, 1)`.
    temperature: Tensor,
    window: usize,
}

impl ChannelAttention {
    fn new(vb: VarBuilder, shape: &OmniSrShape) -> Result<Self> {
        let c = shape.features;
        Ok(Self {
            norm: candle_nn::layer_norm(c, 1e-6, vb.pp("norm"))?,
            qkv: pointwise(vb.pp("fn.qkv"), c, 3 * c, false)?,
            depthwise: Depthwise::without_bias(&vb, "fn.qkv_dwconv", 3 * c)?,
            out: pointwise(vb.pp("fn.project_out"), c, c, false)?,
            temperature: vb.get((HEADS, 1, 1), "fn.temperature")?,
            window: shape.window,
        })
    }

    fn forward(&self, x: &Tensor, grouping: Grouping) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let ws = self.window;
        let qkv = self
            .depthwise
            .forward(&per_token(&self.qkv, &self.norm.forward(x)?)?, false)?;
        let split = match grouping {
            Grouping::Windows => (ws, ws),
            Grouping::Grid => (h / ws, w / ws),
        };
        let groups = match grouping {
            Grouping::Windows => partition(&qkv, split)?,
            Grouping::Grid => interleave(&qkv, split)?,
        };
        let (g, n, _) = groups.dims3()?;
        let d = c / HEADS;
        // Each (groups, heads, d, pixels).
        let qkv = groups
            .reshape((g, n, 3, HEADS, d))?
            .permute((2, 0, 3, 4, 1))?;
        let part = |i: usize| qkv.get(i)?.contiguous();
        let (q, k, v) = (unit_rows(&part(0)?)?, unit_rows(&part(1)?)?, part(2)?);
        let scores = q.matmul(&k.t()?)?.broadcast_mul(&self.temperature)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let attended = weights
            .matmul(&v)?
            .permute((0, 3, 1, 2))?
            .reshape((g, n, c))?;
        let out = per_token(&self.out, &attended)?;
        let out = match grouping {
            Grouping::Windows => merge(&out, (b, h, w), split)?,
            Grouping::Grid => deinterleave(&out, (b, h, w), split)?,
        };
        out + x
    }
}

/// The gated convolutional feed-forward network after a layer norm, added to its input: a 1×1
/// convolution to twice the channels, a depthwise 3×3 one, the GELU of the first half times the
/// second, a 1×1 convolution back. The halves are swapped at load (both convolutions' output
/// channels), so that the gate is one GEGLU pass: the second half's GELU times the first.
struct FeedForward {
    norm: LayerNorm,
    project_in: Linear,
    depthwise: Depthwise,
    project_out: Linear,
}

impl FeedForward {
    fn new(vb: VarBuilder, c: usize) -> Result<Self> {
        let swapped = |t: Tensor| Tensor::cat(&[t.narrow(0, c, c)?, t.narrow(0, 0, c)?], 0);
        let project_in = vb
            .get((2 * c, c, 1, 1), "fn.project_in.weight")?
            .reshape((2 * c, c))?;
        let depthwise = vb.get((2 * c, 1, 3, 3), "fn.dwconv.weight")?;
        let bias = Tensor::zeros(2 * c, depthwise.dtype(), depthwise.device())?;
        Ok(Self {
            norm: candle_nn::layer_norm(c, 1e-6, vb.pp("norm"))?,
            project_in: Linear::new(swapped(project_in)?, None),
            depthwise: Depthwise::from_weights(swapped(depthwise)?, bias)?,
            project_out: pointwise(vb.pp("fn.project_out"), c, c, false)?,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self
            .depthwise
            .forward(&per_token(&self.project_in, &self.norm.forward(x)?)?, false)?;
        per_token(&self.project_out, &geglu(&y)?)? + x
    }
}

/// An Omni self-attention block (`OSA_Block`).
struct Block {
    opening: InvertedResidual,
    window_attention: SpatialAttention,
    window_channels: ChannelAttention,
    grid_attention: SpatialAttention,
    grid_channels: ChannelAttention,
    /// The four feed-forward networks, after each attention but the last and after it.
    feed_forwards: [FeedForward; 4],
}

impl Block {
    fn new(vb: VarBuilder, shape: &OmniSrShape) -> Result<Self> {
        let c = shape.features;
        let layer = |i: usize| vb.pp(format!("layer.{i}"));
        Ok(Self {
            opening: InvertedResidual::new(layer(0).pp("fn"), c)?,
            window_attention: SpatialAttention::new(layer(2), shape)?,
            window_channels: ChannelAttention::new(layer(5), shape)?,
            grid_attention: SpatialAttention::new(layer(8), shape)?,
            grid_channels: ChannelAttention::new(layer(11), shape)?,
            feed_forwards: [
                FeedForward::new(layer(4), c)?,
                FeedForward::new(layer(6), c)?,
                FeedForward::new(layer(10), c)?,
                FeedForward::new(layer(12), c)?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [ff1, ff2, ff3, ff4] = &self.feed_forwards;
        let x = self.opening.forward(x)?;
        let x = ff1.forward(&self.window_attention.forward(&x, Grouping::Windows)?)?;
        let x = ff2.forward(&self.window_channels.forward(&x, Grouping::Windows)?)?;
        let x = ff3.forward(&self.grid_attention.forward(&x, Grouping::Grid)?)?;
        ff4.forward(&self.grid_channels.forward(&x, Grouping::Grid)?)
    }
}

/// The enhanced spatial attention gate closing each group (`ESA`): a map of the features,
/// shrunk by a strided convolution and a 7×7 max pool, convolved, resized back bilinearly
/// and added to a 1×1 convolution of the map, gates the features through a sigmoid.
struct SpatialGate {
    conv1: Linear,
    conv_f: Linear,
    conv2: Conv2d,
    conv3: Conv2d,
    conv4: Linear,
}

impl SpatialGate {
    fn new(vb: VarBuilder, c: usize) -> Result<Self> {
        let f = (c / 4).max(16);
        Ok(Self {
            conv1: pointwise(vb.pp("conv1"), c, f, true)?,
            conv_f: pointwise(vb.pp("conv_f"), f, f, true)?,
            conv2: Conv2d::new(vb.pp("conv2"), f, f, 3, 2, 0)?,
            conv3: Conv2d::new(vb.pp("conv3"), f, f, 3, 1, 1)?,
            conv4: pointwise(vb.pp("conv4"), f, c, true)?,
        })
    }
}

impl Module for SpatialGate {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, h, w, _) = x.dims4()?;
        let map = per_token(&self.conv1, x)?;
        let shrunk = self
            .conv2
            .forward(&map.permute((0, 3, 1, 2))?.contiguous()?)?
            .max_pool2d_with_stride(7, 3)?;
        let wide = self
            .conv3
            .forward(&shrunk)?
            .upsample_bilinear2d(h, w, false)?
            .permute((0, 2, 3, 1))?;
        let gates = per_token(&self.conv4, &(wide + per_token(&self.conv_f, &map)?)?)?;
        sigmoid_gate(x, &gates)
    }
}

/// A residual group (`OSAG`): blocks, a 1×1 convolution, the group's input added, the spatial
/// gate.
struct Group {
    blocks: Vec<Block>,
    closing: Linear,
    gate: SpatialGate,
}

/// An OmniSR network.
pub struct OmniSr {
    input: Conv2d,
    groups: Vec<Group>,
    output: Conv2d,
    up: Conv2d,
    shape: OmniSrShape,
}

impl OmniSr {
    /// Reads the network of `shape` from `vb`.
    pub fn new(vb: VarBuilder, shape: OmniSrShape) -> Result<Self> {
        let c = shape.features;
        let groups = (0..shape.groups)
            .map(|g| {
                let vb = vb.pp(format!("residual_layer.{g}"));
                Ok(Group {
                    blocks: (0..shape.blocks)
                        .map(|b| Block::new(vb.pp(format!("residual_layer.{b}")), &shape))
                        .collect::<Result<_>>()?,
                    closing: pointwise(
                        vb.pp(format!("residual_layer.{}", shape.blocks)),
                        c,
                        c,
                        shape.biased,
                    )?,
                    gate: SpatialGate::new(vb.pp("esa"), c)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            input: conv3x3(vb.pp("input"), 3, c, shape.biased)?,
            groups,
            output: conv3x3(vb.pp("output"), c, c, shape.biased)?,
            up: conv3x3(
                vb.pp("up.0"),
                c,
                3 * shape.scale * shape.scale,
                shape.biased,
            )?,
            shape,
        })
    }

    /// The network's sizes.
    pub fn shape(&self) -> &OmniSrShape {
        &self.shape
    }

    /// `xs` `(n, 3, h, w)` upscaled to `(n, 3, h·scale, w·scale)`, unclamped.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let (ws, s) = (self.shape.window, self.shape.scale);
        if h.min(w) < self.shape.minimum_side() {
            candle_core::bail!(
                "OmniSR takes images at least {} pixels on a side, not {w}×{h}",
                self.shape.minimum_side()
            );
        }
        let padded = xs
            .pad_with_zeros(2, 0, h.next_multiple_of(ws) - h)?
            .pad_with_zeros(3, 0, w.next_multiple_of(ws) - w)?;
        let first = self.input.forward(&padded)?;
        let mut x = first.permute((0, 2, 3, 1))?.contiguous()?;
        for group in &self.groups {
            let mut y = x.clone();
            for block in &group.blocks {
                y = block.forward(&y)?;
            }
            y = (per_token(&group.closing, &y)? + x)?;
            x = group.gate.forward(&y)?;
        }
        let x = (self
            .output
            .forward(&x.permute((0, 3, 1, 2))?.contiguous()?)?
            + first)?;
        pixel_shuffle(&self.up.forward(&x)?, s)?
            .narrow(2, 0, h * s)?
            .narrow(3, 0, w * s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn interleaved_groups_hold_pixels_spread_evenly_and_lay_back_in_place() {
        // A 4×6 image whose pixel (y, x) holds 10·y + x, in 2×3 groups.
        let values: Vec<f32> = (0..4)
            .flat_map(|y| (0..6).map(move |x| (10 * y + x) as f32))
            .collect();
        let image = Tensor::from_vec(values, (1, 4, 6, 1), &Device::Cpu).unwrap();
        let groups = interleave(&image, (2, 3)).unwrap();
        assert_eq!(groups.dims(), [4, 6, 1]);
        // Group (1, 0): pixels (2r + 1, 2s) in order of (r, s).
        let second: Vec<f32> = groups
            .get(2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(second, [10.0, 12.0, 14.0, 30.0, 32.0, 34.0]);
        let back = deinterleave(&groups, (1, 4, 6), (2, 3)).unwrap();
        let same = (back - &image).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(same.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn the_smallest_side_pads_to_a_size_the_spatial_gate_can_pool() {
        let shape = |window| OmniSrShape {
            features: 16,
            groups: 1,
            blocks: 1,
            window,
            position_bias: false,
            biased: true,
            scale: 2,
        };
        // 9 pads to 16 with windows of 8 (8 would stay 8), 11 to 15 with 5, 13 to 16 with 4.
        assert_eq!(shape(8).minimum_side(), 9);
        assert_eq!(shape(5).minimum_side(), 11);
        assert_eq!(shape(4).minimum_side(), 13);
        assert_eq!(shape(16).minimum_side(), 1);
    }
}
