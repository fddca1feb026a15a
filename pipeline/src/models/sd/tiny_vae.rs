//! TAESD, diffusers' `AutoencoderTiny`: a small distilled stand-in for Stable Diffusion's VAE
//! that maps the same latents to about the same pixels with a tenth of the work — plain 3×3
//! convolutions with ReLU in residual blocks, no normalisation and no attention. Its decoder
//! bounds the latents first (`3·tanh(z/3)`); its encoder takes pixels in [0, 1].

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::TinyVaeConfig;
use super::kernels::Conv2d;

/// `AutoencoderTinyBlock`: `relu(conv(relu(conv(relu(conv(x))))) + x)`.
struct Block {
    convs: [Conv2d; 3],
}

impl Block {
    fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        let conv =
            |i: usize| Conv2d::new(vb.pp("conv").pp(i.to_string()), channels, channels, 3, 1, 1);
        Ok(Self {
            convs: [conv(0)?, conv(2)?, conv(4)?],
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let [first, second, third] = &self.convs;
        let h = first.forward(xs)?.relu()?;
        let h = second.forward(&h)?.relu()?;
        (third.forward(&h)? + xs)?.relu()
    }
}

/// One entry of an encoder's or decoder's `layers`.
enum Layer {
    Conv(Conv2d),
    Relu,
    Block(Block),
    Upsample,
}

impl Layer {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Layer::Conv(conv) => conv.forward(xs),
            Layer::Relu => xs.relu(),
            Layer::Block(block) => block.forward(xs),
            Layer::Upsample => {
                let (_, _, h, w) = xs.dims4()?;
                xs.upsample_nearest2d(2 * h, 2 * w)
            }
        }
    }
}

/// Builds `layers.N` in order, counting N as diffusers' `nn.Sequential` does.
struct Layers<'a> {
    vb: VarBuilder<'a>,
    layers: Vec<Layer>,
}

impl<'a> Layers<'a> {
    fn next(&self) -> VarBuilder<'a> {
        self.vb.pp(self.layers.len().to_string())
    }

    fn conv(&mut self, c_in: usize, c_out: usize, stride: usize, bias: bool) -> Result<()> {
        let vb = self.next();
        let conv = if bias {
            Conv2d::new(vb, c_in, c_out, 3, stride, 1)?
        } else {
            Conv2d::without_bias(vb, c_in, c_out, 3, stride, 1)?
        };
        self.layers.push(Layer::Conv(conv));
        Ok(())
    }

    fn blocks(&mut self, count: usize, channels: usize) -> Result<()> {
        for _ in 0..count {
            let block = Block::new(self.next(), channels)?;
            self.layers.push(Layer::Block(block));
        }
        Ok(())
    }
}

fn run(layers: &[Layer], xs: Tensor) -> Result<Tensor> {
    layers.iter().try_fold(xs, |xs, layer| layer.forward(&xs))
}

/// A loaded TAESD.
pub struct TinyVae {
    encoder: Vec<Layer>,
    decoder: Vec<Layer>,
}

impl TinyVae {
    /// Builds the autoencoder `config` describes (RGB in and out) from diffusers' weights.
    pub fn new(vb: VarBuilder, config: &TinyVaeConfig) -> Result<Self> {
        let mut encoder = Layers {
            vb: vb.pp("encoder").pp("layers"),
            layers: Vec::new(),
        };
        for (i, (&channels, &blocks)) in config
            .encoder_channels
            .iter()
            .zip(&config.encoder_blocks)
            .enumerate()
        {
            match i {
                0 => encoder.conv(3, channels, 1, true)?,
                _ => encoder.conv(channels, channels, 2, false)?,
            }
            encoder.blocks(blocks, channels)?;
        }
        let last = config.encoder_channels.last().copied().unwrap_or_default();
        encoder.conv(last, config.latent_channels, 1, true)?;

        let mut decoder = Layers {
            vb: vb.pp("decoder").pp("layers"),
            layers: Vec::new(),
        };
        let first = config.decoder_channels.first().copied().unwrap_or_default();
        decoder.conv(config.latent_channels, first, 1, true)?;
        decoder.layers.push(Layer::Relu);
        let levels = config.decoder_channels.len();
        for (i, (&channels, &blocks)) in config
            .decoder_channels
            .iter()
            .zip(&config.decoder_blocks)
            .enumerate()
        {
            decoder.blocks(blocks, channels)?;
            if i + 1 < levels {
                decoder.layers.push(Layer::Upsample);
                decoder.conv(channels, channels, 1, false)?;
            } else {
                decoder.conv(channels, 3, 1, true)?;
            }
        }
        Ok(Self {
            encoder: encoder.layers,
            decoder: decoder.layers,
        })
    }

    /// Images `(n, 3, H, W)` in about [-1, 1] for latents (as the UNet sees them: TAESD's
    /// latents are not scaled).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let bounded = ((latents / 3.0)?.tanh()? * 3.0)?;
        run(&self.decoder, bounded)?.affine(2.0, -1.0)
    }

    /// The latents of images `(n, 3, H, W)` in [-1, 1].
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        run(&self.encoder, images.affine(0.5, 0.5)?)
    }
}
