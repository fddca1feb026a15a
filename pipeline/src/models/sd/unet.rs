//! The conditional UNet of the Stable Diffusion family, assembled from candle's blocks as
//! diffusers' `UNet2DConditionModel` wires them, with SDXL's added conditioning (the pooled
//! prompt and the size/crop "time ids", embedded and added to the timestep embedding).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use candle_transformers::models::stable_diffusion::unet_2d_blocks::{
    CrossAttnDownBlock2D, CrossAttnDownBlock2DConfig, CrossAttnUpBlock2D, CrossAttnUpBlock2DConfig,
    DownBlock2D, DownBlock2DConfig, UNetMidBlock2DCrossAttn, UNetMidBlock2DCrossAttnConfig,
    UpBlock2D, UpBlock2DConfig,
};

use super::config::UNetSpec;

enum Down {
    Plain(DownBlock2D),
    Cross(CrossAttnDownBlock2D),
}

enum Up {
    Plain(UpBlock2D),
    Cross(CrossAttnUpBlock2D),
}

/// SDXL's `text_time` added embedding.
struct Added {
    time_proj: Timesteps,
    embedding: TimestepEmbedding,
}

/// A loaded UNet.
pub struct UNet {
    spec: UNetSpec,
    conv_in: candle_nn::Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    added: Option<Added>,
    down: Vec<Down>,
    mid: UNetMidBlock2DCrossAttn,
    up: Vec<Up>,
    norm_out: candle_nn::GroupNorm,
    conv_out: candle_nn::Conv2d,
}

impl UNet {
    /// Builds the UNet `spec` describes from diffusers' weights.
    pub fn new(vb: VarBuilder, spec: &UNetSpec) -> Result<Self> {
        let config = &spec.config;
        let blocks = &config.blocks;
        let n = blocks.len();
        let first = blocks[0].out_channels;
        let last = blocks[n - 1];
        let time_dim = first * 4;
        let padded = candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv_in = candle_nn::conv2d(spec.in_channels, first, 3, padded, vb.pp("conv_in"))?;
        let time_proj = Timesteps::new(first, config.flip_sin_to_cos, config.freq_shift);
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), first, time_dim)?;
        let added = match spec.added {
            Some(added) => Some(Added {
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
        let vb_down = vb.pp("down_blocks");
        let mut down = Vec::with_capacity(n);
        for (i, block) in blocks.iter().enumerate() {
            let in_channels = if i > 0 {
                blocks[i - 1].out_channels
            } else {
                first
            };
            let plain = DownBlock2DConfig {
                num_layers: config.layers_per_block,
                resnet_eps: config.norm_eps,
                resnet_groups: config.norm_num_groups,
                add_downsample: i < n - 1,
                downsample_padding: config.downsample_padding,
                ..Default::default()
            };
            let vb = vb_down.pp(i.to_string());
            down.push(match block.use_cross_attn {
                Some(layers) => Down::Cross(CrossAttnDownBlock2D::new(
                    vb,
                    in_channels,
                    block.out_channels,
                    Some(time_dim),
                    false,
                    CrossAttnDownBlock2DConfig {
                        downblock: plain,
                        attn_num_head_channels: block.attention_head_dim,
                        cross_attention_dim: config.cross_attention_dim,
                        sliced_attention_size: None,
                        use_linear_projection: config.use_linear_projection,
                        transformer_layers_per_block: layers,
                    },
                )?),
                None => Down::Plain(DownBlock2D::new(
                    vb,
                    in_channels,
                    block.out_channels,
                    Some(time_dim),
                    plain,
                )?),
            });
        }
        let mid = UNetMidBlock2DCrossAttn::new(
            vb.pp("mid_block"),
            last.out_channels,
            Some(time_dim),
            false,
            UNetMidBlock2DCrossAttnConfig {
                resnet_eps: config.norm_eps,
                output_scale_factor: config.mid_block_scale_factor,
                cross_attn_dim: config.cross_attention_dim,
                attn_num_head_channels: last.attention_head_dim,
                resnet_groups: Some(config.norm_num_groups),
                use_linear_projection: config.use_linear_projection,
                transformer_layers_per_block: last.use_cross_attn.unwrap_or(1),
                ..Default::default()
            },
        )?;
        let vb_up = vb.pp("up_blocks");
        let mut up = Vec::with_capacity(n);
        for i in 0..n {
            let block = blocks[n - 1 - i];
            let previous = if i > 0 {
                blocks[n - i].out_channels
            } else {
                last.out_channels
            };
            let in_channels = blocks[if i == n - 1 { 0 } else { n - i - 2 }].out_channels;
            let plain = UpBlock2DConfig {
                num_layers: config.layers_per_block + 1,
                resnet_eps: config.norm_eps,
                resnet_groups: config.norm_num_groups,
                add_upsample: i < n - 1,
                ..Default::default()
            };
            let vb = vb_up.pp(i.to_string());
            up.push(match block.use_cross_attn {
                Some(layers) => Up::Cross(CrossAttnUpBlock2D::new(
                    vb,
                    in_channels,
                    previous,
                    block.out_channels,
                    Some(time_dim),
                    false,
                    CrossAttnUpBlock2DConfig {
                        upblock: plain,
                        attn_num_head_channels: block.attention_head_dim,
                        cross_attention_dim: config.cross_attention_dim,
                        sliced_attention_size: None,
                        use_linear_projection: config.use_linear_projection,
                        transformer_layers_per_block: layers,
                    },
                )?),
                None => Up::Plain(UpBlock2D::new(
                    vb,
                    in_channels,
                    previous,
                    block.out_channels,
                    Some(time_dim),
                    plain,
                )?),
            });
        }
        let norm_out = candle_nn::group_norm(
            config.norm_num_groups,
            first,
            config.norm_eps,
            vb.pp("conv_norm_out"),
        )?;
        let conv_out = candle_nn::conv2d(first, 4, 3, padded, vb.pp("conv_out"))?;
        Ok(Self {
            spec: spec.clone(),
            conv_in,
            time_proj,
            time_embedding,
            added,
            down,
            mid,
            up,
            norm_out,
            conv_out,
        })
    }

    /// The UNet's output for latents `(n, c, h, w)` at `timestep` given the text `context`
    /// `(n, tokens, d)`; SDXL also takes `added`: the pooled prompt and the six time ids per
    /// row, `(n, pooled + 6)`.
    pub fn forward(
        &self,
        xs: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (batch, _, height, width) = xs.dims4()?;
        let config = &self.spec.config;
        let n = config.blocks.len();
        let factor = 1 << (n - 1);
        let odd_size = height % factor != 0 || width % factor != 0;
        let xs = if config.center_input_sample {
            ((xs * 2.0)? - 1.0)?
        } else {
            xs.clone()
        };
        let times = (Tensor::ones(batch, xs.dtype(), xs.device())? * timestep)?;
        let mut emb = self
            .time_embedding
            .forward(&self.time_proj.forward(&times)?)?;
        if let (Some(embed), Some(added)) = (&self.added, added) {
            let pooled = added.dim(1)? - 6;
            let text = added.narrow(1, 0, pooled)?;
            let ids = added.narrow(1, pooled, 6)?.flatten_all()?;
            let time = embed.time_proj.forward(&ids)?.reshape((batch, ()))?;
            let input = Tensor::cat(&[&text, &time], 1)?;
            emb = (emb + embed.embedding.forward(&input)?)?;
        }
        let xs = self.conv_in.forward(&xs)?;
        let mut residuals = vec![xs.clone()];
        let mut xs = xs;
        for block in &self.down {
            let (out, states) = match block {
                Down::Plain(b) => b.forward(&xs, Some(&emb))?,
                Down::Cross(b) => b.forward(&xs, Some(&emb), Some(context))?,
            };
            residuals.extend(states);
            xs = out;
        }
        let mut xs = self.mid.forward(&xs, Some(&emb), Some(context))?;
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
            xs = match block {
                Up::Plain(b) => b.forward(&xs, &skips, Some(&emb), size)?,
                Up::Cross(b) => b.forward(&xs, &skips, Some(&emb), size, Some(context))?,
            };
        }
        let xs = candle_nn::ops::silu(&self.norm_out.forward(&xs)?)?;
        self.conv_out.forward(&xs)
    }
}
