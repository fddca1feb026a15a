//! Building blocks shared by the text encoder and the denoiser.
//!
//! Training runs on candle's primitive ops because its fused CPU kernels (`ops::layer_norm`,
//! `softmax_last_dim`) have no backward pass; sampling, where no gradient is tracked, takes the
//! fused kernels: one multi-threaded pass instead of five single-threaded ones.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// A linear layer that flattens `(batch, tokens, in)` to `(batch·tokens, in)` first:
/// one large matmul is several times faster on CPU than a batched small one.
#[derive(Clone, Debug)]
pub struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    /// Xavier-uniform weights, zero bias.
    pub fn new(input: usize, output: usize, vb: VarBuilder) -> Result<Self> {
        let bound = (6.0 / (input + output) as f64).sqrt();
        Self::with_init(
            input,
            output,
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
            vb,
        )
    }

    /// All-zero weights and bias: the layer starts as a no-op (adaLN-zero, output heads).
    pub fn zeros(input: usize, output: usize, vb: VarBuilder) -> Result<Self> {
        Self::with_init(input, output, Init::Const(0.0), vb)
    }

    fn with_init(input: usize, output: usize, init: Init, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints((output, input), "weight", init)?;
        let bias = vb.get_with_hints(output, "bias", Init::Const(0.0))?;
        Ok(Self { weight, bias })
    }
}

impl Module for Dense {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let input = dims[dims.len() - 1];
        let rows = x.elem_count() / input;
        let y = x
            .reshape((rows, input))?
            .matmul(&self.weight.t()?)?
            .broadcast_add(&self.bias)?;
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = self.weight.dim(0)?;
        y.reshape(out)
    }
}

const NORM_EPS: f32 = 1e-6;

/// Layer normalisation over the last dimension, without learned scale or shift.
pub fn normalize(x: &Tensor) -> Result<Tensor> {
    if !x.track_op() && x.is_contiguous() {
        let dim = x.dim(D::Minus1)?;
        let ones = Tensor::ones(dim, x.dtype(), x.device())?;
        let zeros = Tensor::zeros(dim, x.dtype(), x.device())?;
        return candle_nn::ops::layer_norm(x, &ones, &zeros, NORM_EPS);
    }
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred.broadcast_div(&(var + NORM_EPS as f64)?.sqrt()?)
}

/// Layer normalisation with a learned scale and shift.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    /// Scale one, shift zero.
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))?,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        normalize(x)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// Multi-head self-attention with an optional additive mask.
#[derive(Clone, Debug)]
pub struct Attention {
    qkv: Dense,
    out: Dense,
    heads: usize,
}

impl Attention {
    /// Attention over `dim`-wide tokens split into `heads` heads.
    pub fn new(dim: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            qkv: Dense::new(dim, 3 * dim, vb.pp("qkv"))?,
            out: Dense::new(dim, dim, vb.pp("out"))?,
            heads,
        })
    }

    /// `x`: `(batch, tokens, dim)`; `mask`: `(batch, 1, 1, tokens)`, 0 to keep and a large
    /// negative number to hide a key.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (batch, tokens, dim) = x.dims3()?;
        let head_dim = dim / self.heads;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((batch, tokens, 3, self.heads, head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)?.contiguous()? * (head_dim as f64).powf(-0.5))?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let weights = if scores.track_op() {
            candle_nn::ops::softmax(&scores, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        let mixed = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, tokens, dim))?;
        self.out.forward(&mixed)
    }
}

/// Two-layer perceptron with a GELU between.
#[derive(Clone, Debug)]
pub struct Mlp {
    up: Dense,
    down: Dense,
}

impl Mlp {
    /// `dim → dim·ratio → dim`.
    pub fn new(dim: usize, ratio: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            up: Dense::new(dim, dim * ratio, vb.pp("up"))?,
            down: Dense::new(dim * ratio, dim, vb.pp("down"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.down.forward(&gelu(&self.up.forward(x)?)?)
    }
}

/// GELU, tanh form. Sampling on the CPU (no gradient, f32) takes [`FastGelu`]; training and
/// other devices take candle's.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && !x.track_op() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1_no_bwd(&FastGelu)
    } else {
        x.gelu()
    }
}

/// The tanh-form GELU as `v · sigmoid(2u)` (the same function as `0.5 · v · (1 + tanh u)`,
/// `u = √(2/π) · (v + 0.044715 v³)`): one `exp` instead of libm's slower `tanh`, over both
/// cores. It was a third of a sampling step's time as candle's single-threaded `tanh` loop.
pub struct FastGelu;

/// Elements per parallel work item.
const GELU_CHUNK: usize = 8192;

impl candle_core::CustomOp1 for FastGelu {
    fn name(&self) -> &'static str {
        "fast-gelu"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("fast-gelu: not contiguous".into()))?;
        let input = &storage.as_slice::<f32>()?[start..end];
        let mut output = vec![0f32; input.len()];
        output
            .par_chunks_mut(GELU_CHUNK)
            .zip(input.par_chunks(GELU_CHUNK))
            .for_each(|(out, inp)| {
                for (o, &v) in out.iter_mut().zip(inp) {
                    let u = 0.797_884_6_f32 * v * (1.0 + 0.044_715 * v * v);
                    *o = v / (1.0 + (-2.0 * u).exp());
                }
            });
        Ok((candle_core::CpuStorage::F32(output), layout.shape().clone()))
    }
}

/// Additive attention mask hiding padding: `(batch, 1, 1, prefix + lengths…)`.
///
/// `lengths[b]` of the first `prefix` tokens of row `b` are real; the `suffix` tokens after
/// them are always visible.
pub fn padding_mask(
    lengths: &[usize],
    prefix: usize,
    suffix: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let mut values = Vec::with_capacity(lengths.len() * (prefix + suffix));
    for &len in lengths {
        values.extend((0..prefix).map(|i| if i < len { 0f32 } else { -1e9 }));
        values.extend(std::iter::repeat_n(0f32, suffix));
    }
    Tensor::from_vec(values, (lengths.len(), 1, 1, prefix + suffix), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn fast_gelu_is_candles_gelu_up_to_rounding() {
        let mut values: Vec<f32> = (-800..=800).map(|i| i as f32 / 100.0).collect();
        values.extend([-100.0, -30.0, 30.0, 100.0, 0.0]);
        let x = Tensor::new(values.as_slice(), &Device::Cpu).unwrap();
        let fast = gelu(&x).unwrap().to_vec1::<f32>().unwrap();
        let reference = x.gelu().unwrap().to_vec1::<f32>().unwrap();
        for ((v, f), r) in values.iter().zip(&fast).zip(&reference) {
            assert!(f.is_finite(), "gelu({v}) = {f}");
            assert!(
                (f - r).abs() <= 2e-6 * (1.0 + r.abs()),
                "gelu({v}): {f} vs {r}"
            );
        }
        let strided = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu)
            .unwrap()
            .t()
            .unwrap();
        assert_eq!(
            gelu(&strided).unwrap().to_vec2::<f32>().unwrap(),
            gelu(&strided.contiguous().unwrap())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
        );
    }

    #[test]
    fn dense_matches_a_plain_matmul_on_3d_input() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let dense = Dense::new(3, 5, vb).unwrap();
        let x = Tensor::arange(0f32, 24., &Device::Cpu)
            .unwrap()
            .reshape((2, 4, 3))
            .unwrap();
        let y = dense.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, 4, 5]);
        let row = x.get(1).unwrap().get(2).unwrap().unsqueeze(0).unwrap();
        let expected = row.matmul(&dense.weight.t().unwrap()).unwrap();
        let got = y.get(1).unwrap().get(2).unwrap().unsqueeze(0).unwrap();
        let diff = (expected - got).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    }

    #[test]
    fn normalize_gives_zero_mean_unit_variance() {
        let x = Tensor::new(&[[1f32, 2., 3., 10.]], &Device::Cpu).unwrap();
        let n = normalize(&x).unwrap().to_vec2::<f32>().unwrap();
        let mean: f32 = n[0].iter().sum::<f32>() / 4.0;
        let var: f32 = n[0].iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3);
    }

    #[test]
    fn fused_and_differentiable_paths_agree() {
        // Weights held in a VarMap are tracked (training); the same weights as plain tensors
        // (a loaded model) take the fused kernels.
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let training = Attention::new(8, 2, vb).unwrap();
        let plain = map
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        let loaded = Attention::new(
            8,
            2,
            VarBuilder::from_tensors(plain, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let x = Tensor::randn(0f32, 1., (2, 5, 8), &Device::Cpu).unwrap();
        let tracked = candle_core::Var::from_tensor(&x).unwrap();
        let mask = padding_mask(&[3, 5], 5, 0, &Device::Cpu).unwrap();
        for (fast, slow) in [
            (
                normalize(&x).unwrap(),
                normalize(tracked.as_tensor()).unwrap(),
            ),
            (
                loaded.forward(&x, Some(&mask)).unwrap(),
                training.forward(&x, Some(&mask)).unwrap(),
            ),
        ] {
            assert!(slow.track_op() && !fast.track_op());
            let diff = (fast - slow).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
        }
    }

    #[test]
    fn masked_keys_get_no_attention() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let attn = Attention::new(4, 2, vb).unwrap();
        let x = Tensor::randn(0f32, 1., (1, 3, 4), &Device::Cpu).unwrap();
        let mask = padding_mask(&[2], 3, 0, &Device::Cpu).unwrap();
        let with_mask = attn.forward(&x, Some(&mask)).unwrap();
        // Changing the hidden third token must not change what the first two see.
        let mut values = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        values[8..].iter_mut().for_each(|v| *v += 5.0);
        let x2 = Tensor::from_vec(values, (1, 3, 4), &Device::Cpu).unwrap();
        let with_mask2 = attn.forward(&x2, Some(&mask)).unwrap();
        let a = with_mask.narrow(1, 0, 2).unwrap();
        let b = with_mask2.narrow(1, 0, 2).unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    }
}
