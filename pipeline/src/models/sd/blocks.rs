//! The building blocks of the UNet and the VAE, as diffusers names their weights: ResNet
//! blocks, down/up samplers, spatial transformers with self- and cross-attention, and the
//! UNet's down, mid and up blocks. Convolutions and attention run on [`super::kernels`].

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use super::group_norm::GroupNorm;
use super::hypernetwork::{ContextHook, Hypernetwork};
use super::kernels::{self, Conv2d, Linear};

/// A 3×3 convolution, padding 1.
pub fn conv3(vb: VarBuilder, c_in: usize, c_out: usize) -> Result<Conv2d> {
    Conv2d::new(vb, c_in, c_out, 3, 1, 1)
}

/// A 1×1 convolution.
pub fn conv1(vb: VarBuilder, c_in: usize, c_out: usize) -> Result<Conv2d> {
    Conv2d::new(vb, c_in, c_out, 1, 1, 0)
}

/// diffusers' `ResnetBlock2D` (time embedding added after the first convolution).
pub struct Resnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    time: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl Resnet {
    /// `c_in` → `c_out` channels, with a time embedding of `time_dim` when given.
    pub fn new(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        time_dim: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::new(groups, c_in, eps, vb.pp("norm1"))?,
            conv1: conv3(vb.pp("conv1"), c_in, c_out)?,
            time: time_dim
                .map(|t| Linear::new(vb.pp("time_emb_proj"), t, c_out, true))
                .transpose()?,
            norm2: GroupNorm::new(groups, c_out, eps, vb.pp("norm2"))?,
            conv2: conv3(vb.pp("conv2"), c_out, c_out)?,
            shortcut: (c_in != c_out)
                .then(|| conv1(vb.pp("conv_shortcut"), c_in, c_out))
                .transpose()?,
        })
    }

    /// The block's output for `xs` and the time embedding `temb` `(n, time_dim)`.
    pub fn forward(&self, xs: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let normed = self.norm1.forward_silu(xs)?;
        let h = match (&self.time, temb) {
            (Some(time), Some(temb)) => self
                .conv1
                .forward_shifted(&normed, &time.forward(&candle_nn::ops::silu(temb)?)?)?,
            _ => self.conv1.forward(&normed)?,
        };
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let skip = match &self.shortcut {
            Some(conv) => conv.forward(xs)?,
            None => xs.clone(),
        };
        skip + h
    }
}

/// A stride-2 3×3 convolution; with padding 0 the input is first padded right and bottom
/// (the VAE encoder's downsampler).
pub struct Downsample {
    conv: Conv2d,
    pad_after: bool,
}

impl Downsample {
    /// Halves the resolution of `channels` channels.
    pub fn new(vb: VarBuilder, channels: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(vb.pp("conv"), channels, channels, 3, 2, padding)?,
            pad_after: padding == 0,
        })
    }

    /// The downsampled `xs`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if self.pad_after {
            let xs = xs
                .pad_with_zeros(D::Minus1, 0, 1)?
                .pad_with_zeros(D::Minus2, 0, 1)?;
            self.conv.forward(&xs)
        } else {
            self.conv.forward(xs)
        }
    }
}

/// Nearest-neighbour ×2 (or to a given size), then a 3×3 convolution.
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    /// Doubles the resolution of `channels` channels.
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: conv3(vb.pp("conv"), channels, channels)?,
        })
    }

    /// `xs` upsampled to `size`, or twice its size.
    pub fn forward(&self, xs: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let (h, w) = size.unwrap_or((2 * h, 2 * w));
        self.conv.forward(&xs.upsample_nearest2d(h, w)?)
    }
}

/// Multi-head attention over `(n, tokens, dim)`, keys and values from `context` (or itself).
pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    /// The width of what keys and values are made from.
    context_dim: usize,
    /// What hypernetworks do to that before the key and value projections.
    hook: ContextHook,
}

impl Attention {
    /// diffusers' `Attention`: `to_q`, `to_k`, `to_v` (biased when `bias`), `to_out.0`.
    pub fn new(
        vb: VarBuilder,
        dim: usize,
        context_dim: usize,
        heads: usize,
        bias: bool,
    ) -> Result<Self> {
        let linear = |i, o, vb| Linear::new(vb, i, o, bias);
        Ok(Self {
            q: linear(dim, dim, vb.pp("to_q"))?,
            k: linear(context_dim, dim, vb.pp("to_k"))?,
            v: linear(context_dim, dim, vb.pp("to_v"))?,
            out: Linear::new(vb.pp("to_out").pp("0"), dim, dim, true)?,
            heads,
            context_dim,
            hook: ContextHook::default(),
        })
    }

    /// From its four projections (the VAE's older `query`/`key`/`value`/`proj_attn` names).
    pub fn from_parts(q: Linear, k: Linear, v: Linear, out: Linear, heads: usize) -> Self {
        Self {
            context_dim: k.inputs(),
            q,
            k,
            v,
            out,
            heads,
            hook: ContextHook::default(),
        }
    }

    /// Runs the context through `hypernetworks`' modules of its width (none: as it is)
    /// before the key and value projections, as A1111 runs hypernetworks.
    pub fn hook_context(&mut self, hypernetworks: &[Hypernetwork]) {
        self.hook = ContextHook::of(hypernetworks, self.context_dim);
    }

    /// Attends `xs` `(n, tokens, dim)` to `context` `(n, tokens', context_dim)`.
    pub fn forward(&self, xs: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        self.out.forward(&self.attend(xs, context)?)
    }

    /// [`Attention::forward`] plus `residual` (on CUDA, added with the output
    /// projection's bias in one pass).
    pub fn forward_residual(
        &self,
        xs: &Tensor,
        context: Option<&Tensor>,
        residual: &Tensor,
    ) -> Result<Tensor> {
        self.out
            .forward_residual(&self.attend(xs, context)?, residual)
    }

    /// The heads' attended values side by side, `(n, tokens, dim)`, before the output
    /// projection.
    fn attend(&self, xs: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let context = context.unwrap_or(xs);
        let split = |t: Tensor| -> Result<Tensor> {
            let (n, len, dim) = t.dims3()?;
            t.reshape((n, len, self.heads, dim / self.heads))?
                .transpose(1, 2)?
                .reshape((n * self.heads, len, dim / self.heads))
        };
        let (n, len, dim) = xs.dims3()?;
        let (keys, values) = self.hook.apply(context)?;
        let (q, k, v) = (
            self.q.forward(xs)?,
            self.k.forward(&keys)?,
            self.v.forward(&values)?,
        );
        let scale = ((dim / self.heads) as f64).powf(-0.5);
        #[cfg(feature = "cuda")]
        if super::flash_attention::takes(&q, &k, &v, self.heads) {
            return super::flash_attention::attention(&q, &k, &v, self.heads, scale);
        }
        kernels::attention(&split(q)?, &split(k)?, &split(v)?, scale)?
            .reshape((n, self.heads, len, dim / self.heads))?
            .transpose(1, 2)?
            .reshape((n, len, dim))
    }
}

/// Self-attention, cross-attention and a GEGLU feed-forward, each after a layer norm.
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    geglu: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn new(vb: VarBuilder, dim: usize, context_dim: usize, heads: usize) -> Result<Self> {
        let norm = |name| candle_nn::layer_norm(dim, 1e-5, vb.pp(name));
        let ff = vb.pp("ff").pp("net");
        Ok(Self {
            norm1: norm("norm1")?,
            attn1: Attention::new(vb.pp("attn1"), dim, dim, heads, false)?,
            norm2: norm("norm2")?,
            attn2: Attention::new(vb.pp("attn2"), dim, context_dim, heads, false)?,
            norm3: norm("norm3")?,
            geglu: Linear::new(ff.pp("0").pp("proj"), dim, dim * 8, true)?,
            ff_out: Linear::new(ff.pp("2"), dim * 4, dim, true)?,
        })
    }

    fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let xs = self
            .attn1
            .forward_residual(&self.norm1.forward(xs)?, None, xs)?;
        let xs = self
            .attn2
            .forward_residual(&self.norm2.forward(&xs)?, Some(context), &xs)?;
        let gated = self.geglu.forward_geglu(&self.norm3.forward(&xs)?)?;
        self.ff_out.forward_residual(&gated, &xs)
    }
}

/// diffusers' `Transformer2DModel` on a feature map: norm, projection in (1×1 convolution or
/// linear), transformer blocks, projection out, residual.
pub struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<TransformerBlock>,
    proj_out: Projection,
}

enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// How a [`SpatialTransformer`] is shaped.
#[derive(Clone, Copy, Debug)]
pub struct TransformerShape {
    /// Attention heads (the channels split into them).
    pub heads: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Width of the text context.
    pub context_dim: usize,
    /// Linear projections (SD 2.x, SDXL) instead of 1×1 convolutions.
    pub linear: bool,
}

impl SpatialTransformer {
    /// A transformer over `channels` channels.
    pub fn new(vb: VarBuilder, channels: usize, shape: TransformerShape) -> Result<Self> {
        let projection = |vb: VarBuilder| -> Result<Projection> {
            Ok(if shape.linear {
                Projection::Linear(Linear::new(vb, channels, channels, true)?)
            } else {
                Projection::Conv(conv1(vb, channels, channels)?)
            })
        };
        Ok(Self {
            norm: GroupNorm::new(32, channels, 1e-6, vb.pp("norm"))?,
            proj_in: projection(vb.pp("proj_in"))?,
            blocks: (0..shape.depth)
                .map(|i| {
                    TransformerBlock::new(
                        vb.pp("transformer_blocks").pp(i.to_string()),
                        channels,
                        shape.context_dim,
                        shape.heads,
                    )
                })
                .collect::<Result<_>>()?,
            proj_out: projection(vb.pp("proj_out"))?,
        })
    }

    /// Runs every attention's context through `hypernetworks` ([`Attention::hook_context`]).
    pub fn hook_context(&mut self, hypernetworks: &[Hypernetwork]) {
        for block in &mut self.blocks {
            block.attn1.hook_context(hypernetworks);
            block.attn2.hook_context(hypernetworks);
        }
    }

    /// The transformed feature map `xs` `(n, c, h, w)` given the text `context`.
    pub fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = xs.dims4()?;
        let normed = self.norm.forward(xs)?;
        let tokens =
            |t: Tensor| -> Result<Tensor> { t.permute((0, 2, 3, 1))?.reshape((n, h * w, c)) };
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => tokens(conv.forward(&normed)?)?,
            Projection::Linear(linear) => linear.forward(&tokens(normed)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context)?;
        }
        let map = |t: Tensor| -> Result<Tensor> {
            t.reshape((n, h, w, c))?.permute((0, 3, 1, 2))?.contiguous()
        };
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&map(tokens)?)?,
            Projection::Linear(linear) => map(linear.forward(&tokens)?)?,
        };
        out + xs
    }
}

/// How a UNet block is shaped.
#[derive(Clone, Copy, Debug)]
pub struct BlockShape {
    /// Channels out.
    pub channels: usize,
    /// Time embedding width.
    pub time_dim: usize,
    /// Group norm groups.
    pub groups: usize,
    /// Group norm epsilon.
    pub eps: f64,
    /// Cross-attention, if the block has it.
    pub transformer: Option<TransformerShape>,
}

impl BlockShape {
    /// The block's ResNet `i` from `c_in` channels.
    fn resnet(&self, vb: &VarBuilder, i: usize, c_in: usize) -> Result<Resnet> {
        let vb = vb.pp("resnets").pp(i.to_string());
        Resnet::new(
            vb,
            c_in,
            self.channels,
            Some(self.time_dim),
            self.groups,
            self.eps,
        )
    }

    /// The block's `layers` transformers (none without cross-attention).
    fn transformers(&self, vb: &VarBuilder, layers: usize) -> Result<Vec<SpatialTransformer>> {
        match self.transformer {
            Some(t) => (0..layers)
                .map(|i| {
                    SpatialTransformer::new(vb.pp("attentions").pp(i.to_string()), self.channels, t)
                })
                .collect(),
            None => Ok(Vec::new()),
        }
    }
}

/// A down block: ResNets (each followed by a transformer in cross-attention blocks), then an
/// optional downsampler; it returns every intermediate state for the skip connections.
pub struct DownBlock {
    resnets: Vec<Resnet>,
    transformers: Vec<SpatialTransformer>,
    downsample: Option<Downsample>,
}

impl DownBlock {
    /// Its transformers (none in a block without cross-attention).
    pub fn transformers_mut(&mut self) -> impl Iterator<Item = &mut SpatialTransformer> {
        self.transformers.iter_mut()
    }

    /// `layers` ResNets from `c_in` channels; `downsample` with that padding.
    pub fn new(
        vb: VarBuilder,
        c_in: usize,
        layers: usize,
        shape: BlockShape,
        downsample: Option<usize>,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| shape.resnet(&vb, i, if i == 0 { c_in } else { shape.channels }))
            .collect::<Result<_>>()?;
        let transformers = shape.transformers(&vb, layers)?;
        Ok(Self {
            resnets,
            transformers,
            downsample: downsample
                .map(|padding| {
                    Downsample::new(vb.pp("downsamplers").pp("0"), shape.channels, padding)
                })
                .transpose()?,
        })
    }

    /// The block's output and its states for the skip connections; a T2I-Adapter's feature
    /// map `extra` is added where diffusers adds it: after the last ResNet and transformer of
    /// a cross-attention block, to the output of a block without (either way, to that state
    /// too).
    pub fn forward(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        extra: Option<&Tensor>,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut states = Vec::new();
        let mut xs = xs.clone();
        let attending = !self.transformers.is_empty();
        for (i, resnet) in self.resnets.iter().enumerate() {
            xs = resnet.forward(&xs, Some(temb))?;
            if let Some(transformer) = self.transformers.get(i) {
                xs = transformer.forward(&xs, context)?;
            }
            if let (Some(extra), true) = (extra, attending && i + 1 == self.resnets.len()) {
                xs = (xs + extra)?;
            }
            states.push(xs.clone());
        }
        if let Some(down) = &self.downsample {
            xs = down.forward(&xs)?;
            states.push(xs.clone());
        }
        if let (Some(extra), false) = (extra, attending) {
            xs = (xs + extra)?;
            if let Some(last) = states.last_mut() {
                *last = xs.clone();
            }
        }
        Ok((xs, states))
    }
}

/// An up block: ResNets over the input concatenated with skip states (each followed by a
/// transformer in cross-attention blocks), then an optional upsampler.
pub struct UpBlock {
    resnets: Vec<Resnet>,
    transformers: Vec<SpatialTransformer>,
    upsample: Option<Upsample>,
}

impl UpBlock {
    /// Its transformers (none in a block without cross-attention).
    pub fn transformers_mut(&mut self) -> impl Iterator<Item = &mut SpatialTransformer> {
        self.transformers.iter_mut()
    }

    /// `layers` ResNets; `previous` channels come in, the skips have `skip_in` channels for
    /// the last ResNet and `shape.channels` before it (as diffusers wires them).
    pub fn new(
        vb: VarBuilder,
        previous: usize,
        skip_in: usize,
        layers: usize,
        shape: BlockShape,
        upsample: bool,
    ) -> Result<Self> {
        let c = shape.channels;
        let resnets = (0..layers)
            .map(|i| {
                let skip = if i == layers - 1 { skip_in } else { c };
                let input = if i == 0 { previous } else { c };
                shape.resnet(&vb, i, input + skip)
            })
            .collect::<Result<_>>()?;
        let transformers = shape.transformers(&vb, layers)?;
        Ok(Self {
            resnets,
            transformers,
            upsample: upsample
                .then(|| Upsample::new(vb.pp("upsamplers").pp("0"), c))
                .transpose()?,
        })
    }

    /// The block's output, consuming `skips` from the last.
    pub fn forward(
        &self,
        xs: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        context: &Tensor,
        size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let mut xs = xs.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = &skips[skips.len() - 1 - i];
            xs = resnet.forward(&Tensor::cat(&[&xs, skip], 1)?, Some(temb))?;
            if let Some(transformer) = self.transformers.get(i) {
                xs = transformer.forward(&xs, context)?;
            }
        }
        match &self.upsample {
            Some(up) => up.forward(&xs, size),
            None => Ok(xs),
        }
    }
}

/// The UNet's middle: ResNet, then transformer + ResNet pairs.
pub struct MidBlock {
    first: Resnet,
    pairs: Vec<(SpatialTransformer, Resnet)>,
}

impl MidBlock {
    /// Its transformers.
    pub fn transformers_mut(&mut self) -> impl Iterator<Item = &mut SpatialTransformer> {
        self.pairs.iter_mut().map(|(transformer, _)| transformer)
    }

    /// One transformer + ResNet pair, like every released Stable Diffusion.
    pub fn new(vb: VarBuilder, shape: BlockShape, transformer: TransformerShape) -> Result<Self> {
        let c = shape.channels;
        Ok(Self {
            first: shape.resnet(&vb, 0, c)?,
            pairs: vec![(
                SpatialTransformer::new(vb.pp("attentions").pp("0"), c, transformer)?,
                shape.resnet(&vb, 1, c)?,
            )],
        })
    }

    /// The middle's output.
    pub fn forward(&self, xs: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor> {
        let mut xs = self.first.forward(xs, Some(temb))?;
        for (transformer, resnet) in &self.pairs {
            xs = resnet.forward(&transformer.forward(&xs, context)?, Some(temb))?;
        }
        Ok(xs)
    }
}
