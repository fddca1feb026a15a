//! The CLIP text encoders of Stable Diffusion (transformers' `CLIPTextModel`, and
//! `CLIPTextModelWithProjection` for SDXL's second one), with the activation its `config.json`
//! names: `quick_gelu` (OpenAI CLIP) or `gelu` (OpenCLIP). SD 1.x/2.x condition on the last
//! hidden state after the final layer norm; SDXL on the penultimate layer's output, plus the
//! projected end-of-text state of the second encoder (the pooled prompt).

use std::path::Path;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use serde::Deserialize;

use super::SdError;
use super::kernels::Linear;

/// The activation of the MLPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x·σ(1.702x)` (OpenAI CLIP).
    QuickGelu,
    /// The exact (erf) GELU (OpenCLIP).
    Gelu,
    /// The tanh approximation of GELU.
    GeluTanh,
}

impl Activation {
    fn apply(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Activation::Gelu => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
        }
    }
}

/// `text_encoder/config.json`.
#[derive(Clone, Debug)]
pub struct ClipConfig {
    /// Tokens known.
    pub vocab_size: usize,
    /// Width of the hidden states (the UNet's `cross_attention_dim`).
    pub hidden_size: usize,
    /// Width of the MLPs.
    pub intermediate_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Longest token sequence (77).
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub activation: Activation,
    /// Layer norm epsilon.
    pub layer_norm_eps: f64,
    /// Width of the pooled projection (`CLIPTextModelWithProjection`).
    pub projection_dim: usize,
    /// The end-of-text token, whose state is pooled (2: the highest id, as old configs mean).
    pub eos_token_id: u32,
}

/// What a text encoder makes of a prompt, `skip` final layers left out (0: none).
#[derive(Clone, Debug)]
pub struct TextStates {
    /// The last layer's output (after `skip` are left out), through the final layer norm,
    /// `(n, tokens, d)`: SD 1.x/2.x condition on it.
    pub last: Tensor,
    /// The output of the layer before that, no norm (SDXL conditions on it).
    pub penultimate: Tensor,
    /// The projected end-of-text state, `(n, projection_dim)`, for encoders with a projection.
    pub pooled: Option<Tensor>,
}

#[derive(Deserialize)]
struct ClipJson {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    #[serde(default = "quick_gelu")]
    hidden_act: String,
    #[serde(default = "eps")]
    layer_norm_eps: f64,
    #[serde(default = "projection")]
    projection_dim: usize,
    #[serde(default = "two")]
    eos_token_id: u32,
}

fn projection() -> usize {
    512
}
fn two() -> u32 {
    2
}
fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn eps() -> f64 {
    1e-5
}

impl ClipConfig {
    /// A transformers CLIP text config, parsed (`path` names it in errors).
    pub fn from_json(json: serde_json::Value, path: &Path) -> std::result::Result<Self, SdError> {
        let json: ClipJson = super::config::parse(json, path)?;
        let activation = match json.hidden_act.as_str() {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            other => {
                return Err(SdError::Unsupported {
                    path: path.to_path_buf(),
                    message: format!("`hidden_act` = {other:?} is not supported"),
                });
            }
        };
        if json.num_attention_heads == 0
            || !json.hidden_size.is_multiple_of(json.num_attention_heads)
        {
            return Err(SdError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "`hidden_size` {} does not split into {} heads",
                    json.hidden_size, json.num_attention_heads
                ),
            });
        }
        Ok(Self {
            vocab_size: json.vocab_size,
            hidden_size: json.hidden_size,
            intermediate_size: json.intermediate_size,
            num_hidden_layers: json.num_hidden_layers,
            num_attention_heads: json.num_attention_heads,
            max_position_embeddings: json.max_position_embeddings,
            activation,
            layer_norm_eps: json.layer_norm_eps,
            projection_dim: json.projection_dim,
            eos_token_id: json.eos_token_id,
        })
    }
}

#[derive(Clone, Debug)]
struct Layer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// A loaded CLIP text encoder.
#[derive(Clone, Debug)]
pub struct ClipTextEncoder {
    config: ClipConfig,
    tokens: Embedding,
    positions: Tensor,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    projection: Option<Linear>,
}

impl ClipTextEncoder {
    /// Builds it from transformers' weights: `text_model.…` as the Hub's folders name them,
    /// or without the prefix as transformers 5 saves them.
    pub fn new(config: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        let projection = if vb.contains_tensor("text_projection.weight") {
            Some(Linear::new(
                vb.pp("text_projection"),
                config.hidden_size,
                config.projection_dim,
                false,
            )?)
        } else {
            None
        };
        let vb = if vb.contains_tensor("text_model.embeddings.token_embedding.weight") {
            vb.pp("text_model")
        } else {
            vb
        };
        let d = config.hidden_size;
        let norm = |vb: VarBuilder| candle_nn::layer_norm(d, config.layer_norm_eps, vb);
        let linear = |vb, c_in, c_out| Linear::new(vb, c_in, c_out, true);
        let emb = vb.pp("embeddings");
        let tokens = candle_nn::embedding(config.vocab_size, d, emb.pp("token_embedding"))?;
        let positions = emb
            .pp("position_embedding")
            .get((config.max_position_embeddings, d), "weight")?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let vb = vb.pp("encoder").pp("layers").pp(i.to_string());
                let attn = vb.pp("self_attn");
                let mlp = vb.pp("mlp");
                Ok(Layer {
                    norm1: norm(vb.pp("layer_norm1"))?,
                    q: linear(attn.pp("q_proj"), d, d)?,
                    k: linear(attn.pp("k_proj"), d, d)?,
                    v: linear(attn.pp("v_proj"), d, d)?,
                    out: linear(attn.pp("out_proj"), d, d)?,
                    norm2: norm(vb.pp("layer_norm2"))?,
                    fc1: linear(mlp.pp("fc1"), d, config.intermediate_size)?,
                    fc2: linear(mlp.pp("fc2"), config.intermediate_size, d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: config.clone(),
            tokens,
            positions,
            layers,
            final_norm: norm(vb.pp("final_layer_norm"))?,
            projection,
        })
    }

    /// Appends `vectors` `(n, hidden_size)` to the token embeddings as new tokens, returning
    /// their ids (from one above the highest there was, as transformers'
    /// `resize_token_embeddings` numbers them).
    pub fn add_tokens(&mut self, vectors: &Tensor) -> Result<Vec<u32>> {
        let table = self.tokens.embeddings();
        let first = table.dim(0)?;
        let vectors = vectors.to_dtype(table.dtype())?.to_device(table.device())?;
        let table = Tensor::cat(&[table, &vectors], 0)?;
        let count = vectors.dim(0)?;
        self.tokens = Embedding::new(table, self.config.hidden_size);
        Ok((first..first + count).map(|id| id as u32).collect())
    }

    /// The width of its token vectors.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// How many transformer layers it has.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// The states of token ids `(batch, tokens)`, the last `skip` layers left out of `last`
    /// and `penultimate` (diffusers' `clip_skip`; the pooled state is the whole encoder's).
    /// `skip` must be below [`ClipTextEncoder::layers`].
    pub fn forward(&self, ids: &Tensor, skip: usize) -> Result<TextStates> {
        let count = self.layers.len();
        if skip >= count {
            candle_core::bail!("cannot leave out {skip} of the text encoder's {count} layers");
        }
        let (batch, len) = ids.dims2()?;
        let d = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        let head_dim = d / heads;
        let positions = self.positions.narrow(0, 0, len)?;
        let mut xs = self.tokens.forward(ids)?.broadcast_add(&positions)?;
        let mask = causal_mask(len, xs.dtype(), xs.device())?;
        let scale = (head_dim as f64).powf(-0.5);
        // The states after 0, 1, … layers that `last` and `penultimate` are.
        let (wanted, before) = (count - skip, count - skip - 1);
        let (mut last, mut penultimate) = (None, xs.clone());
        for (i, layer) in self.layers.iter().enumerate() {
            if i == before {
                penultimate = xs.clone();
            }
            if i == wanted {
                last = Some(xs.clone());
                if self.projection.is_none() {
                    break;
                }
            }
            let h = layer.norm1.forward(&xs)?;
            let split = |t: Tensor| -> Result<Tensor> {
                t.reshape((batch, len, heads, head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = split((layer.q.forward(&h)? * scale)?)?;
            let k = split(layer.k.forward(&h)?)?;
            let v = split(layer.v.forward(&h)?)?;
            let weights = q.matmul(&k.t()?)?.broadcast_add(&mask)?;
            let weights = candle_nn::ops::softmax_last_dim(&weights)?;
            let attended = weights
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((batch, len, d))?;
            xs = (xs + layer.out.forward(&attended)?)?;
            let h = layer.norm2.forward(&xs)?;
            let h = layer
                .fc2
                .forward(&self.config.activation.apply(&layer.fc1.forward(&h)?)?)?;
            xs = (xs + h)?;
        }
        let last = self.final_norm.forward(last.as_ref().unwrap_or(&xs))?;
        let pooled = match &self.projection {
            Some(projection) => {
                let whole = if skip == 0 {
                    last.clone()
                } else {
                    self.final_norm.forward(&xs)?
                };
                let rows = ids.to_device(&Device::Cpu)?.to_vec2::<u32>()?;
                let states = rows
                    .iter()
                    .enumerate()
                    .map(|(b, row)| {
                        let end = if self.config.eos_token_id == 2 {
                            // The first highest id, as torch's argmax picks it.
                            (0..row.len())
                                .fold(0, |best, i| if row[i] > row[best] { i } else { best })
                        } else {
                            row.iter()
                                .position(|id| *id == self.config.eos_token_id)
                                .unwrap_or(row.len() - 1)
                        };
                        whole.get(b)?.get(end)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Some(projection.forward(&Tensor::stack(&states, 0)?)?)
            }
            None => None,
        };
        Ok(TextStates {
            last,
            penultimate,
            pooled,
        })
    }
}

/// `(len, len)` additive mask: 0 on and below the diagonal, −∞ above.
fn causal_mask(len: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (len, len), device)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_hides_only_later_tokens() {
        let mask = causal_mask(3, DType::F32, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(mask[0][0], 0.0);
        assert!(mask[0][1].is_infinite() && mask[0][2].is_infinite());
        assert_eq!(mask[2], vec![0.0, 0.0, 0.0]);
        let last = Tensor::new(&[1f32, 2., 3.], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let probs = candle_nn::ops::softmax_last_dim(
            &last
                .broadcast_add(&Tensor::new(&mask[0][..], &Device::Cpu).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            probs
                .max(candle_core::D::Minus1)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            [1.0]
        );
    }
}
