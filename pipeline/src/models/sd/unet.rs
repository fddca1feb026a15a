//! The conditional UNet of the Stable Diffusion family, wired as diffusers'
//! `UNet2DConditionModel`, with SDXL's added conditioning (the pooled
//! prompt and the size/crop "time ids", embedded and added to the timestep embedding) and
//! LCM-distilled UNets' guidance-scale embedding (`time_cond_proj_dim`).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};

use super::blocks::{
    BlockShape, DownBlock, MidBlock, SpatialTransformer, TransformerShape, UpBlock, conv3,
};
use super::config::UNetSpec;
use super::controlnet::ControlResiduals;
use super::group_norm::GroupNorm;
use super::hypernetwork::Hypernetwork;
use super::kernels::{Conv2d, Linear};

/// SDXL's `text_time` added embedding.
struct Added {
    time_ids: usize,
    time_proj: Timesteps,
    embedding: TimestepEmbedding,
}

/// The first half of a UNet — the timestep (and added) embedding, `conv_in`, the down blocks
/// and the middle block — which a ControlNet copies.
pub(super) struct Encoder {
    spec: UNetSpec,
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    /// LCM: projects the guidance-scale embedding onto the timestep's sinusoids.
    guidance_proj: Option<Linear>,
    added: Option<Added>,
    down: Vec<DownBlock>,
    mid: MidBlock,
}

/// The shape of block `i` of `spec`'s UNet.
fn block_shape(spec: &UNetSpec, i: usize) -> BlockShape {
    let config = &spec.config;
    let block = config.blocks[i];
    BlockShape {
        channels: block.out_channels,
        time_dim: config.blocks[0].out_channels * 4,
        groups: config.norm_num_groups,
        eps: config.norm_eps,
        transformer: block.use_cross_attn.map(|depth| TransformerShape {
            heads: block.attention_head_dim,
            depth,
            context_dim: config.cross_attention_dim,
            linear: config.use_linear_projection,
        }),
    }
}

impl Encoder {
    /// Builds the encoder `spec` describes from diffusers' weights (a UNet's, or a
    /// ControlNet's: the same names).
    pub(super) fn new(vb: VarBuilder, spec: &UNetSpec) -> Result<Self> {
        let config = &spec.config;
        let blocks = &config.blocks;
        let n = blocks.len();
        let first = blocks[0].out_channels;
        let last = blocks[n - 1];
        let time_dim = first * 4;
        let conv_in = conv3(vb.pp("conv_in"), spec.in_channels, first)?;
        let time_proj = Timesteps::new(first, config.flip_sin_to_cos, config.freq_shift);
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), first, time_dim)?;
        let guidance_proj = spec
            .guidance_embed_dim
            .map(|dim| Linear::new(vb.pp("time_embedding.cond_proj"), dim, first, false))
            .transpose()?;
        let added = match spec.added {
            Some(added) => Some(Added {
                time_ids: added.time_ids,
                time_proj: Timesteps::new(
                    added.time_embed_dim,
                    config.flip_sin_to_cos,
                    config.freq_shift,
                ),
                embedding: TimestepEmbedding::new(
                    vb.pp("add_embedding"),
                    added.input_dim,
                    time_dim,
                )?,
            }),
            None => None,
        };
        let down = (0..n)
            .map(|i| {
                let c_in = if i > 0 {
                    blocks[i - 1].out_channels
                } else {
                    first
                };
                DownBlock::new(
                    vb.pp("down_blocks").pp(i.to_string()),
                    c_in,
                    config.layers_per_block,
                    block_shape(spec, i),
                    (i < n - 1).then_some(config.downsample_padding),
                )
            })
            .collect::<Result<_>>()?;
        let mid = MidBlock::new(
            vb.pp("mid_block"),
            block_shape(spec, n - 1),
            TransformerShape {
                heads: last.attention_head_dim,
                depth: spec.mid_depth,
                context_dim: config.cross_attention_dim,
                linear: config.use_linear_projection,
            },
        )?;
        Ok(Self {
            spec: spec.clone(),
            conv_in,
            time_proj,
            time_embedding,
            guidance_proj,
            added,
            down,
            mid,
        })
    }

    /// Its spatial transformers, down blocks' then the middle block's.
    fn transformers_mut(&mut self) -> impl Iterator<Item = &mut SpatialTransformer> {
        self.down
            .iter_mut()
            .flat_map(DownBlock::transformers_mut)
            .chain(self.mid.transformers_mut())
    }

    /// The timestep embedding (plus SDXL's added conditioning `added` and LCM's `guidance`
    /// embedding, see [`UNet::forward`]) for a batch of `xs`, in its dtype.
    pub(super) fn embed(
        &self,
        xs: &Tensor,
        timestep: f64,
        added: Option<&Tensor>,
        guidance: Option<&Tensor>,
    ) -> Result<Tensor> {
        let batch = xs.dim(0)?;
        // Sinusoids in f32 whatever the model's dtype, as diffusers computes them: in f16 a
        // timestep near 1000 times a frequency rounds to half a radian.
        let times = (Tensor::ones(batch, DType::F32, xs.device())? * timestep)?;
        let mut sinusoids = self.time_proj.forward(&times)?.to_dtype(xs.dtype())?;
        if let (Some(proj), Some(guidance)) = (&self.guidance_proj, guidance) {
            sinusoids = (sinusoids + proj.forward(guidance)?)?;
        }
        let mut emb = self.time_embedding.forward(&sinusoids)?;
        if let (Some(embed), Some(added)) = (&self.added, added) {
            let pooled = added.dim(1)?.saturating_sub(embed.time_ids);
            let text = added.narrow(1, 0, pooled)?;
            let ids = added.narrow(1, pooled, embed.time_ids)?.flatten_all()?;
            let time = embed
                .time_proj
                .forward(&ids.to_dtype(DType::F32)?)?
                .to_dtype(xs.dtype())?
                .reshape((batch, ()))?;
            let input = Tensor::cat(&[&text, &time], 1)?;
            emb = (emb + embed.embedding.forward(&input)?)?;
        }
        Ok(emb)
    }

    /// `conv_in` of `xs` (plus `hint`, a ControlNet's embedded control image), the down
    /// blocks and the middle block: every state the skip connections take (`conv_in`'s first)
    /// and the middle block's output. A T2I-Adapter's feature maps `within` go to the down
    /// blocks in turn (see [`DownBlock::forward`]), one left over to the middle block's output
    /// when its shape fits, as diffusers adds them.
    pub(super) fn encode(
        &self,
        xs: &Tensor,
        emb: &Tensor,
        context: &Tensor,
        hint: Option<&Tensor>,
        within: &[Tensor],
    ) -> Result<(Vec<Tensor>, Tensor)> {
        let mut xs = self.conv_in.forward(xs)?;
        if let Some(hint) = hint {
            xs = (xs + hint)?;
        }
        let mut residuals = vec![xs.clone()];
        let mut within = within.iter();
        for block in &self.down {
            let (out, states) = block.forward(&xs, emb, context, within.next())?;
            residuals.extend(states);
            xs = out;
        }
        let mut xs = self.mid.forward(&xs, emb, context)?;
        if let Some(extra) = within.next().filter(|extra| extra.dims() == xs.dims()) {
            xs = (xs + extra)?;
        }
        Ok((residuals, xs))
    }
}

/// A loaded UNet.
pub struct UNet {
    encoder: Encoder,
    up: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    /// Builds the UNet `spec` describes from diffusers' weights.
    pub fn new(vb: VarBuilder, spec: &UNetSpec) -> Result<Self> {
        let config = &spec.config;
        let blocks = &config.blocks;
        let n = blocks.len();
        let first = blocks[0].out_channels;
        let last = blocks[n - 1];
        let encoder = Encoder::new(vb.clone(), spec)?;
        let up = (0..n)
            .map(|i| {
                let previous = if i > 0 {
                    blocks[n - i].out_channels
                } else {
                    last.out_channels
                };
                let skip_in = blocks[if i == n - 1 { 0 } else { n - i - 2 }].out_channels;
                UpBlock::new(
                    vb.pp("up_blocks").pp(i.to_string()),
                    previous,
                    skip_in,
                    config.layers_per_block + 1,
                    block_shape(spec, n - 1 - i),
                    i < n - 1,
                )
            })
            .collect::<Result<_>>()?;
        let norm_out = GroupNorm::new(
            config.norm_num_groups,
            first,
            config.norm_eps,
            vb.pp("conv_norm_out"),
        )?;
        let conv_out = conv3(vb.pp("conv_out"), first, 4)?;
        Ok(Self {
            encoder,
            up,
            norm_out,
            conv_out,
        })
    }

    /// Runs the context of every attention through `hypernetworks` (A1111's hypernetworks;
    /// none: each attention as it was built).
    pub fn hook_context(&mut self, hypernetworks: &[Hypernetwork]) {
        let transformers = self
            .encoder
            .transformers_mut()
            .chain(self.up.iter_mut().flat_map(UpBlock::transformers_mut));
        for transformer in transformers {
            transformer.hook_context(hypernetworks);
        }
    }

    /// The UNet's output for latents `(n, c, h, w)` at `timestep` given the text `context`
    /// `(n, tokens, d)`; SDXL also takes `added`: the pooled prompt and the time ids (six, or
    /// the refiner's five) per row, `(n, pooled + ids)`; LCM-distilled UNets take `guidance`,
    /// the guidance scale's embedding per row, `(n, time_cond_proj_dim)`. A ControlNet's
    /// `control` residuals are added to the skip connections' states and the middle block's
    /// output.
    pub fn forward(
        &self,
        xs: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&Tensor>,
        guidance: Option<&Tensor>,
        control: Option<&ControlResiduals>,
    ) -> Result<Tensor> {
        let (_, _, height, width) = xs.dims4()?;
        let config = &self.encoder.spec.config;
        let n = config.blocks.len();
        let factor = 1 << (n - 1);
        let odd_size = height % factor != 0 || width % factor != 0;
        let xs = if config.center_input_sample {
            ((xs * 2.0)? - 1.0)?
        } else {
            xs.clone()
        };
        let emb = self.encoder.embed(&xs, timestep, added, guidance)?;
        let within = control.map_or(&[][..], |c| &c.within);
        let (mut residuals, mut xs) = self.encoder.encode(&xs, &emb, context, None, within)?;
        if let Some(control) = control.filter(|c| !c.down.is_empty()) {
            if control.down.len() != residuals.len() {
                candle_core::bail!(
                    "the ControlNet gives {} residuals, the UNet's skip connections take {}",
                    control.down.len(),
                    residuals.len()
                );
            }
            residuals = residuals
                .iter()
                .zip(&control.down)
                .map(|(state, extra)| state + extra)
                .collect::<Result<_>>()?;
        }
        if let Some(mid) = control.and_then(|c| c.mid.as_ref()) {
            xs = (xs + mid)?;
        }
        let per_block = config.layers_per_block + 1;
        for (i, block) in self.up.iter().enumerate() {
            let skips = residuals.split_off(residuals.len() - per_block);
            let size = match residuals.last() {
                Some(next) if odd_size && i < n - 1 => {
                    let (_, _, h, w) = next.dims4()?;
                    Some((h, w))
                }
                _ => None,
            };
            xs = block.forward(&xs, &skips, &emb, context, size)?;
        }
        let xs = self.norm_out.forward_silu(&xs)?;
        self.conv_out.forward(&xs)
    }
}
