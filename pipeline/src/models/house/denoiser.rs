//! The denoiser: a DiT-style transformer that predicts the flow-matching velocity of an
//! RGBA image, given the time and the prompt.
//!
//! Image patches and prompt tokens share one attention (in-context conditioning), and the
//! time plus the pooled prompt modulate every block through one shared adaLN projection
//! plus a learned per-block offset (adaLN-single), which keeps the parameter count small.

use super::config::HouseConfig;
use super::layers::{Attention, Dense, Mlp, normalize, padding_mask};
use super::text_encoder::TextFeatures;
use candle_core::{D, Device, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

const TIME_FREQUENCIES: usize = 128;

#[derive(Clone, Debug)]
struct Block {
    attn: Attention,
    mlp: Mlp,
    /// Per-block offset added to the shared modulation: `(6, dim)`.
    modulation: Tensor,
}

/// Velocity predictor over patch tokens.
#[derive(Clone, Debug)]
pub struct Denoiser {
    config: HouseConfig,
    patch_in: Dense,
    positions: Tensor,
    time_in: Dense,
    time_out: Dense,
    text_tokens: Dense,
    text_pooled: Dense,
    adaln: Dense,
    blocks: Vec<Block>,
    final_adaln: Dense,
    patch_out: Dense,
}

impl Denoiser {
    /// Creates or loads the denoiser's weights under `vb`.
    pub fn new(config: &HouseConfig, vb: VarBuilder) -> Result<Self> {
        let d = config.dim;
        let patch_dim = config.patch * config.patch * config.channels;
        let blocks = (0..config.depth)
            .map(|i| {
                let vb = vb.pp(format!("blocks.{i}"));
                Ok(Block {
                    attn: Attention::new(d, config.heads, vb.pp("attn"))?,
                    mlp: Mlp::new(d, config.mlp_ratio, vb.pp("mlp"))?,
                    modulation: vb.get_with_hints((6, d), "modulation", Init::Const(0.0))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            patch_in: Dense::new(patch_dim, d, vb.pp("patch_in"))?,
            positions: sincos_2d(config.grid(), d, vb.device())?,
            time_in: Dense::new(TIME_FREQUENCIES, d, vb.pp("time_in"))?,
            time_out: Dense::new(d, d, vb.pp("time_out"))?,
            text_tokens: Dense::new(config.text_dim, d, vb.pp("text_tokens"))?,
            text_pooled: Dense::new(config.text_dim, d, vb.pp("text_pooled"))?,
            adaln: Dense::zeros(d, 6 * d, vb.pp("adaln"))?,
            blocks,
            final_adaln: Dense::zeros(d, 2 * d, vb.pp("final_adaln"))?,
            patch_out: Dense::zeros(d, patch_dim, vb.pp("patch_out"))?,
            config: config.clone(),
        })
    }

    /// `x`: `(batch, channels, size, size)` at time `t` (`(batch,)`, 1 = noise, 0 = image).
    /// Returns the predicted velocity `noise − image`, same shape as `x`.
    pub fn forward(&self, x: &Tensor, t: &Tensor, text: &TextFeatures) -> Result<Tensor> {
        let d = self.config.dim;
        let batch = x.dim(0)?;
        let image_tokens = self
            .patch_in
            .forward(&patchify(x, self.config.patch)?)?
            .broadcast_add(&self.positions)?;
        let n_image = image_tokens.dim(1)?;
        let n_text = text.tokens.dim(1)?;

        let time = timestep_embedding(t, TIME_FREQUENCIES)?;
        let cond = (self
            .time_out
            .forward(&self.time_in.forward(&time)?.silu()?)?
            + self.text_pooled.forward(&text.pooled)?)?;
        let shared = self
            .adaln
            .forward(&cond.silu()?)?
            .reshape((batch, 6, 1, d))?;

        let mask = padding_mask(&text.lengths, n_text, n_image, x.device())?;
        let mut h = Tensor::cat(
            &[&self.text_tokens.forward(&text.tokens)?, &image_tokens],
            1,
        )?;
        for block in &self.blocks {
            let m = shared.broadcast_add(&block.modulation.reshape((1, 6, 1, d))?)?;
            let part = |i: usize| m.narrow(1, i, 1)?.squeeze(1);
            let (shift1, scale1, gate1) = (part(0)?, part(1)?, part(2)?);
            let (shift2, scale2, gate2) = (part(3)?, part(4)?, part(5)?);
            let a = modulate(&normalize(&h)?, &shift1, &scale1)?;
            h = (&h + block.attn.forward(&a, Some(&mask))?.broadcast_mul(&gate1)?)?;
            let b = modulate(&normalize(&h)?, &shift2, &scale2)?;
            h = (&h + block.mlp.forward(&b)?.broadcast_mul(&gate2)?)?;
        }
        let image = h.narrow(1, n_text, n_image)?;
        let fin = self
            .final_adaln
            .forward(&cond.silu()?)?
            .reshape((batch, 2, 1, d))?;
        let image = modulate(
            &normalize(&image)?,
            &fin.narrow(1, 0, 1)?.squeeze(1)?,
            &fin.narrow(1, 1, 1)?.squeeze(1)?,
        )?;
        unpatchify(
            &self.patch_out.forward(&image)?,
            self.config.patch,
            self.config.channels,
            self.config.grid(),
        )
    }
}

fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)
}

/// `(batch, c, h, w)` → `(batch, (h/p)·(w/p), p·p·c)`, patches in row-major order.
pub fn patchify(x: &Tensor, p: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h / p, p, w / p, p))?
        .permute((0, 2, 4, 3, 5, 1))?
        .reshape((b, (h / p) * (w / p), p * p * c))
}

/// Inverse of [`patchify`] for a `grid × grid` layout.
pub fn unpatchify(x: &Tensor, p: usize, c: usize, grid: usize) -> Result<Tensor> {
    let b = x.dim(0)?;
    x.reshape((b, grid, grid, p, p, c))?
        .permute((0, 5, 1, 3, 2, 4))?
        .reshape((b, c, grid * p, grid * p))
}

/// Sinusoidal embedding of `t·1000`: `(batch,)` → `(batch, frequencies)`.
pub fn timestep_embedding(t: &Tensor, frequencies: usize) -> Result<Tensor> {
    let half = frequencies / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10_000f32.ln()) * i as f32 / half as f32).exp())
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = (t.unsqueeze(1)? * 1000.0)?.broadcast_mul(&freqs)?;
    Tensor::cat(&[args.cos()?, args.sin()?], D::Minus1)
}

/// Fixed 2-D sin-cos position embedding: `(1, grid², dim)`.
fn sincos_2d(grid: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let quarter = dim / 4;
    let mut values = Vec::with_capacity(grid * grid * dim);
    for row in 0..grid {
        for col in 0..grid {
            for pos in [row, col] {
                let angles: Vec<f32> = (0..quarter)
                    .map(|i| pos as f32 / 10_000f32.powf(i as f32 / quarter as f32))
                    .collect();
                values.extend(angles.iter().map(|a| a.sin()));
                values.extend(angles.iter().map(|a| a.cos()));
            }
        }
    }
    Tensor::from_vec(values, (1, grid * grid, dim), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patchify_round_trips() {
        let x = Tensor::arange(0f32, 2. * 4. * 8. * 8., &Device::Cpu)
            .unwrap()
            .reshape((2, 4, 8, 8))
            .unwrap();
        let p = patchify(&x, 4).unwrap();
        assert_eq!(p.dims(), &[2, 4, 64]);
        let back = unpatchify(&p, 4, 4, 2).unwrap();
        let diff = (x - back).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn a_patch_holds_one_spatial_block() {
        // Pixel (row 5, col 2) of channel 3 lands in patch (1, 0) = token 2 for a 8×8 image, p = 4.
        let mut values = vec![0f32; 4 * 8 * 8];
        values[3 * 64 + 5 * 8 + 2] = 1.0;
        let x = Tensor::from_vec(values, (1, 4, 8, 8), &Device::Cpu).unwrap();
        let p = patchify(&x, 4).unwrap().to_vec3::<f32>().unwrap();
        let hits: Vec<(usize, usize)> = (0..4)
            .flat_map(|t| (0..64).map(move |i| (t, i)))
            .filter(|&(t, i)| p[0][t][i] == 1.0)
            .collect();
        // Within the patch: row 1, col 2, channel 3 → (1·4 + 2)·4 + 3.
        assert_eq!(hits, vec![(2, (4 + 2) * 4 + 3)]);
    }

    #[test]
    fn timestep_embedding_is_bounded_and_distinguishes_times() {
        let t = Tensor::new(&[0f32, 0.5], &Device::Cpu).unwrap();
        let e = timestep_embedding(&t, 16)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!(e.iter().flatten().all(|v| v.abs() <= 1.0));
        assert_ne!(e[0], e[1]);
    }
}
