//! The VAE (diffusers' `AutoencoderKL`): images to latents and back, on the shared blocks.
//! Encoding returns the mean of the latent distribution (what image-to-image starts from), so
//! no random sampling happens here.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{Attention, Downsample, Resnet, Upsample, conv1, conv3};
use super::config::{VaeKind, VaeSpec};
use super::group_norm::GroupNorm;
use super::kernels::{Conv2d, Linear};
use super::tiny_vae::TinyVae;
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;

const EPS: f64 = 1e-6;

/// The VAE's middle: ResNet, single-head attention over all pixels, ResNet.
struct Middle {
    first: Resnet,
    norm: GroupNorm,
    attention: Attention,
    second: Resnet,
}

impl Middle {
    fn new(vb: VarBuilder, channels: usize, groups: usize) -> Result<Self> {
        let resnet = |i: usize| {
            Resnet::new(
                vb.pp("resnets").pp(i.to_string()),
                channels,
                channels,
                None,
                groups,
                EPS,
            )
        };
        let attn = vb.pp("attentions").pp("0");
        // Older checkpoints name the projections query/key/value/proj_attn.
        let attention = if attn.contains_tensor("to_q.weight") {
            Attention::new(attn.clone(), channels, channels, 1, true)?
        } else {
            Attention::from_parts(
                Linear::new(attn.pp("query"), channels, channels, true)?,
                Linear::new(attn.pp("key"), channels, channels, true)?,
                Linear::new(attn.pp("value"), channels, channels, true)?,
                Linear::new(attn.pp("proj_attn"), channels, channels, true)?,
                1,
            )
        };
        Ok(Self {
            first: resnet(0)?,
            norm: GroupNorm::new(groups, channels, EPS, attn.pp("group_norm"))?,
            attention,
            second: resnet(1)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.first.forward(xs, None)?;
        let (n, c, h, w) = xs.dims4()?;
        let tokens = self
            .norm
            .forward(&xs)?
            .reshape((n, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let attended = self
            .attention
            .forward(&tokens, None)?
            .transpose(1, 2)?
            .reshape((n, c, h, w))?;
        self.second.forward(&(attended + xs)?, None)
    }
}

/// A loaded VAE: Stable Diffusion's own, or TAESD.
pub enum Vae {
    /// `AutoencoderKL`.
    Kl(Box<KlVae>),
    /// `AutoencoderTiny`.
    Tiny(TinyVae),
}

impl Vae {
    /// Builds the VAE `spec` describes from diffusers' weights.
    pub fn new(vb: VarBuilder, spec: &VaeSpec) -> Result<Self> {
        Ok(match &spec.kind {
            VaeKind::Kl(config) => Vae::Kl(Box::new(KlVae::new(vb, config)?)),
            VaeKind::Tiny(config) => Vae::Tiny(TinyVae::new(vb, config)?),
        })
    }

    /// Images `(n, 3, H, W)` in about [-1, 1] for latents (not scaled for the UNet).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        match self {
            Vae::Kl(vae) => vae.decode(latents),
            Vae::Tiny(vae) => vae.decode(latents),
        }
    }

    /// The latents of images `(n, 3, H, W)` in [-1, 1]: the mean of the latent distribution
    /// (Stable Diffusion's VAE), or the encoding (TAESD, whose encoder is deterministic).
    pub fn encode_mean(&self, images: &Tensor) -> Result<Tensor> {
        match self {
            Vae::Kl(vae) => vae.encode_mean(images),
            Vae::Tiny(vae) => vae.encode(images),
        }
    }
}

/// Stable Diffusion's VAE (`AutoencoderKL`), loaded.
pub struct KlVae {
    encoder_in: Conv2d,
    encoder_blocks: Vec<(Vec<Resnet>, Option<Downsample>)>,
    encoder_mid: Middle,
    encoder_norm: GroupNorm,
    encoder_out: Conv2d,
    quant: Option<Conv2d>,
    post_quant: Option<Conv2d>,
    decoder_in: Conv2d,
    decoder_mid: Middle,
    decoder_blocks: Vec<(Vec<Resnet>, Option<Upsample>)>,
    decoder_norm: GroupNorm,
    decoder_out: Conv2d,
    latent_channels: usize,
}

impl KlVae {
    /// Builds the VAE `config` describes (RGB in and out) from diffusers' weights.
    pub fn new(vb: VarBuilder, config: &AutoEncoderKLConfig) -> Result<Self> {
        let channels = &config.block_out_channels;
        let (groups, latent) = (config.norm_num_groups, config.latent_channels);
        let n = channels.len();
        let enc = vb.pp("encoder");
        let encoder_blocks = (0..n)
            .map(|i| {
                let vb = enc.pp("down_blocks").pp(i.to_string());
                let c_in = if i == 0 { channels[0] } else { channels[i - 1] };
                let resnets = (0..config.layers_per_block)
                    .map(|j| {
                        let c = if j == 0 { c_in } else { channels[i] };
                        Resnet::new(
                            vb.pp("resnets").pp(j.to_string()),
                            c,
                            channels[i],
                            None,
                            groups,
                            EPS,
                        )
                    })
                    .collect::<Result<_>>()?;
                let down = (i < n - 1)
                    .then(|| Downsample::new(vb.pp("downsamplers").pp("0"), channels[i], 0))
                    .transpose()?;
                Ok((resnets, down))
            })
            .collect::<Result<_>>()?;
        let top = channels[n - 1];
        let dec = vb.pp("decoder");
        let decoder_blocks = (0..n)
            .map(|i| {
                let vb = dec.pp("up_blocks").pp(i.to_string());
                let c = channels[n - 1 - i];
                let c_in = if i == 0 { top } else { channels[n - i] };
                let resnets = (0..config.layers_per_block + 1)
                    .map(|j| {
                        let input = if j == 0 { c_in } else { c };
                        Resnet::new(
                            vb.pp("resnets").pp(j.to_string()),
                            input,
                            c,
                            None,
                            groups,
                            EPS,
                        )
                    })
                    .collect::<Result<_>>()?;
                let up = (i < n - 1)
                    .then(|| Upsample::new(vb.pp("upsamplers").pp("0"), c))
                    .transpose()?;
                Ok((resnets, up))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            encoder_in: conv3(enc.pp("conv_in"), 3, channels[0])?,
            encoder_blocks,
            encoder_mid: Middle::new(enc.pp("mid_block"), top, groups)?,
            encoder_norm: GroupNorm::new(groups, top, EPS, enc.pp("conv_norm_out"))?,
            encoder_out: conv3(enc.pp("conv_out"), top, 2 * latent)?,
            quant: config
                .use_quant_conv
                .then(|| conv1(vb.pp("quant_conv"), 2 * latent, 2 * latent))
                .transpose()?,
            post_quant: config
                .use_post_quant_conv
                .then(|| conv1(vb.pp("post_quant_conv"), latent, latent))
                .transpose()?,
            decoder_in: conv3(dec.pp("conv_in"), latent, top)?,
            decoder_mid: Middle::new(dec.pp("mid_block"), top, groups)?,
            decoder_blocks,
            decoder_norm: GroupNorm::new(groups, channels[0], EPS, dec.pp("conv_norm_out"))?,
            decoder_out: conv3(dec.pp("conv_out"), channels[0], 3)?,
            latent_channels: latent,
        })
    }

    /// The mean of the latent distribution of images `(n, 3, H, W)` in [-1, 1].
    pub fn encode_mean(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.encoder_in.forward(xs)?;
        for (resnets, down) in &self.encoder_blocks {
            for resnet in resnets {
                xs = resnet.forward(&xs, None)?;
            }
            if let Some(down) = down {
                xs = down.forward(&xs)?;
            }
        }
        let xs = self.encoder_mid.forward(&xs)?;
        let xs = self.encoder_norm.forward_silu(&xs)?;
        let moments = self.encoder_out.forward(&xs)?;
        let moments = match &self.quant {
            Some(quant) => quant.forward(&moments)?,
            None => moments,
        };
        moments.narrow(1, 0, self.latent_channels)
    }

    /// Images `(n, 3, H, W)` in about [-1, 1] for latents (not scaled for the UNet).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let xs = match &self.post_quant {
            Some(post) => post.forward(latents)?,
            None => latents.clone(),
        };
        let mut xs = self.decoder_mid.forward(&self.decoder_in.forward(&xs)?)?;
        for (resnets, up) in &self.decoder_blocks {
            for resnet in resnets {
                xs = resnet.forward(&xs, None)?;
            }
            if let Some(up) = up {
                xs = up.forward(&xs, None)?;
            }
        }
        let xs = self.decoder_norm.forward_silu(&xs)?;
        self.decoder_out.forward(&xs)
    }
}
