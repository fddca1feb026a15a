//! The text encoder: a small pre-norm transformer over prompt tokens, trained with the denoiser.

use super::config::HouseConfig;
use super::layers::{Attention, LayerNorm, Mlp, padding_mask};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Embedding, Init, VarBuilder};

const EMBEDDING_INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

#[derive(Clone, Debug)]
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
}

/// Encodes token ids into one vector per token plus a pooled vector per prompt.
#[derive(Clone, Debug)]
pub struct TextEncoder {
    tokens: Embedding,
    positions: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
}

/// What the encoder gives the denoiser.
pub struct TextFeatures {
    /// `(batch, max_tokens, text_dim)`.
    pub tokens: Tensor,
    /// Mean of the real tokens: `(batch, text_dim)`.
    pub pooled: Tensor,
    /// Real (non-padding) tokens per prompt.
    pub lengths: Vec<usize>,
}

impl TextEncoder {
    /// Creates or loads the encoder's weights under `vb`.
    pub fn new(config: &HouseConfig, vb: VarBuilder) -> Result<Self> {
        let d = config.text_dim;
        let table = vb.get_with_hints((config.vocab_size, d), "tokens.weight", EMBEDDING_INIT)?;
        let positions = vb.get_with_hints((config.max_tokens, d), "positions", EMBEDDING_INIT)?;
        let blocks = (0..config.text_depth)
            .map(|i| {
                let vb = vb.pp(format!("blocks.{i}"));
                Ok(Block {
                    norm1: LayerNorm::new(d, vb.pp("norm1"))?,
                    attn: Attention::new(d, config.heads, vb.pp("attn"))?,
                    norm2: LayerNorm::new(d, vb.pp("norm2"))?,
                    mlp: Mlp::new(d, config.mlp_ratio, vb.pp("mlp"))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            tokens: Embedding::new(table, d),
            positions,
            blocks,
            norm: LayerNorm::new(d, vb.pp("norm"))?,
        })
    }

    /// `ids`: `(batch, max_tokens)` u32; `lengths[b]`: real tokens in row `b`.
    pub fn forward(&self, ids: &Tensor, lengths: &[usize]) -> Result<TextFeatures> {
        let (batch, tokens) = ids.dims2()?;
        let mask = padding_mask(lengths, tokens, 0, ids.device())?;
        let mut x = self
            .tokens
            .forward(ids)?
            .broadcast_add(&self.positions.unsqueeze(0)?)?;
        for block in &self.blocks {
            x = (&x + block.attn.forward(&block.norm1.forward(&x)?, Some(&mask))?)?;
            x = (&x + block.mlp.forward(&block.norm2.forward(&x)?)?)?;
        }
        let x = self.norm.forward(&x)?;
        let keep: Vec<f32> = lengths
            .iter()
            .flat_map(|&len| (0..tokens).map(move |i| if i < len { 1.0 / len as f32 } else { 0.0 }))
            .collect();
        let weights = Tensor::from_vec(keep, (batch, tokens, 1), ids.device())?;
        let pooled = x.broadcast_mul(&weights)?.sum(1)?;
        Ok(TextFeatures {
            tokens: x,
            pooled,
            lengths: lengths.to_vec(),
        })
    }
}
