//! SPAN (Wan et al. 2024, "Swift Parameter-free Attention Network for Efficient
//! Super-Resolution"), as neosr and traiNNer save it and spandrel reads it: a 3×3
//! convolution into features, six blocks of three convolutions whose output gates itself
//! (`(out + x)·(σ(out) − ½)`, the "parameter-free attention"), a convolution over the first
//! features, the last block's and two earlier ones' outputs side by side, and one convolution
//! pixel-shuffled into the larger image.
//!
//! Each of its convolutions is trained as a 1×1, a 3×3 and a 1×1 convolution in a row beside
//! a 1×1 skip (`Conv3XC`); at inference they are one 3×3 convolution, folded here at load as
//! spandrel folds them on every call (a stored `eval_conv` may be stale and is not read).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::super::kernels::{Conv2d, centred_gate, silu};
use super::compact::pixel_shuffle;
use super::swin::RGB_MEAN;

/// Blocks in every SPAN.
const BLOCKS: usize = 6;

/// The network's sizes, read from its weights' shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanShape {
    /// Feature channels (48 in the paper's network).
    pub features: usize,
    /// How many times larger the output is.
    pub scale: usize,
    /// Whether pixels are centred on the training set's mean and multiplied by 255 first (all
    /// but the networks saved with a `no_norm` marker).
    pub normalised: bool,
}

/// Whether `has` names a SPAN network's tensors (spandrel's test).
pub fn is_span(has: impl Fn(&str) -> bool) -> bool {
    [
        "conv_1.sk.weight",
        "block_1.c1_r.sk.weight",
        "block_1.c1_r.eval_conv.weight",
        "block_1.c3_r.eval_conv.weight",
        "conv_cat.weight",
        "conv_2.sk.weight",
        "conv_2.eval_conv.weight",
        "upsampler.0.weight",
    ]
    .into_iter()
    .all(has)
}

/// The network's sizes from its tensors' shapes (`shape(name)`), or what does not fit.
pub fn shape_of(
    shape: impl Fn(&str) -> Option<Vec<usize>>,
) -> std::result::Result<SpanShape, String> {
    let first = shape("conv_1.sk.weight").ok_or("no `conv_1.sk.weight`")?;
    if first.len() != 4 || first[1] != 3 {
        return Err(format!(
            "`conv_1.sk.weight` is {first:?}: only RGB upscalers are read"
        ));
    }
    let out = shape("upsampler.0.weight").ok_or("no `upsampler.0.weight`")?;
    let channels = out.first().copied().unwrap_or(0);
    let scale = (1..=8).find(|s| 3 * s * s == channels).ok_or_else(|| {
        format!("the upsampler's {channels} channels are not 3·scale² for an RGB image")
    })?;
    Ok(SpanShape {
        features: first[0],
        scale,
        normalised: shape("no_norm").is_none(),
    })
}

/// A `Conv3XC` under `vb` as the one 3×3 convolution it is at inference: its 1×1, 3×3 and
/// 1×1 convolutions (twice the channels between them) composed, plus its 1×1 skip in the
/// kernel's centre.
fn folded(vb: VarBuilder, c_in: usize, c_out: usize) -> Result<Conv2d> {
    let conv = |i: usize, c_in: usize, c_out: usize, k: usize| -> Result<(Tensor, Tensor)> {
        let vb = vb.pp(format!("conv.{i}"));
        Ok((
            vb.get((c_out, c_in, k, k), "weight")?,
            vb.get(c_out, "bias")?,
        ))
    };
    let (w1, b1) = conv(0, c_in, 2 * c_in, 1)?;
    let (w2, b2) = conv(1, 2 * c_in, 2 * c_out, 3)?;
    let (w3, b3) = conv(2, 2 * c_out, c_out, 1)?;
    let skip = vb.pp("sk");
    let (sk, sk_bias) = (
        skip.get((c_out, c_in, 1, 1), "weight")?,
        skip.get(c_out, "bias")?,
    );
    let w1 = w1.reshape((2 * c_in, c_in))?;
    let w3 = w3.reshape((c_out, 2 * c_out))?;
    // w12[m, i, k] = Σn w2[m, n, k]·w1[n, i], then w[o, i, k] = Σm w3[o, m]·w12[m, i, k].
    let w12 = w2
        .reshape((2 * c_out, 2 * c_in, 9))?
        .permute((0, 2, 1))?
        .contiguous()?
        .reshape((2 * c_out * 9, 2 * c_in))?
        .matmul(&w1)?
        .reshape((2 * c_out, 9, c_in))?
        .permute((0, 2, 1))?
        .contiguous()?
        .reshape((2 * c_out, c_in * 9))?;
    let centred = sk.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let weight = (w3.matmul(&w12)?.reshape((c_out, c_in, 3, 3))? + centred)?;
    // b1 through the 3×3 kernel's taps, then the whole through the last 1×1.
    let b12 = (w2.sum((2, 3))?.matmul(&b1.unsqueeze(1)?)?.squeeze(1)? + b2)?;
    let bias = ((w3.matmul(&b12.unsqueeze(1)?)?.squeeze(1)? + b3)? + sk_bias)?;
    Ok(Conv2d::from_weights(weight, bias, 1))
}

/// One block: three folded convolutions with SiLU between them, the third's output gating
/// itself plus the block's input.
struct Block {
    convs: [Conv2d; 3],
}

impl Block {
    fn new(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            convs: [
                folded(vb.pp("c1_r"), c, c)?,
                folded(vb.pp("c2_r"), c, c)?,
                folded(vb.pp("c3_r"), c, c)?,
            ],
        })
    }

    /// The block's output, and its first convolution's through SiLU (which the reference
    /// applies in place, so the activated one is what it hands on).
    fn forward(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        let [c1, c2, c3] = &self.convs;
        let first = silu(&c1.forward(xs)?)?;
        let out = c3.forward(&silu(&c2.forward(&first)?)?)?;
        Ok((centred_gate(xs, &out)?, first))
    }
}

/// SPAN, its weights under spandrel's (the trainers') names.
pub struct Span {
    shape: SpanShape,
    first: Conv2d,
    blocks: Vec<Block>,
    after: Conv2d,
    cat: Conv2d,
    up: Conv2d,
    mean: Tensor,
}

impl Span {
    /// Builds the network of `shape` from `vb`.
    pub fn new(vb: VarBuilder, shape: SpanShape) -> Result<Self> {
        let c = shape.features;
        Ok(Self {
            first: folded(vb.pp("conv_1"), 3, c)?,
            blocks: (1..=BLOCKS)
                .map(|i| Block::new(vb.pp(format!("block_{i}")), c))
                .collect::<Result<_>>()?,
            after: folded(vb.pp("conv_2"), c, c)?,
            cat: Conv2d::new(vb.pp("conv_cat"), 4 * c, c, 1, 1, 0)?,
            up: Conv2d::new(
                vb.pp("upsampler.0"),
                c,
                3 * shape.scale * shape.scale,
                3,
                1,
                1,
            )?,
            mean: Tensor::from_slice(&RGB_MEAN, (1, 3, 1, 1), vb.device())?,
            shape,
        })
    }

    /// `(n, 3, h, w)` in [0, 1] to `(n, 3, h·scale, w·scale)`, unclamped (the network's output
    /// as it is: SPAN adds back neither the mean nor the range it took away).
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = if self.shape.normalised {
            (xs.broadcast_sub(&self.mean.to_dtype(xs.dtype())?)? * 255.0)?
        } else {
            xs.clone()
        };
        let features = self.first.forward(&xs)?;
        let mut out = features.clone();
        let (mut first_block, mut last_inner) = (None, None);
        for (i, block) in self.blocks.iter().enumerate() {
            let (next, inner) = block.forward(&out)?;
            if i == 0 {
                first_block = Some(next.clone());
            }
            last_inner = Some(inner);
            out = next;
        }
        let (Some(first_block), Some(last_inner)) = (first_block, last_inner) else {
            candle_core::bail!("SPAN has no blocks");
        };
        let out = self.after.forward(&out)?;
        let out = self.cat.forward(&Tensor::cat(
            &[&features, &out, &first_block, &last_inner],
            1,
        )?)?;
        pixel_shuffle(&self.up.forward(&out)?, self.shape.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    #[test]
    fn the_folded_convolution_is_its_branches_run_one_after_another() {
        let dev = Device::Cpu;
        let (c_in, c_out) = (3, 5);
        let mut tensors = HashMap::new();
        let mut put = |name: &str, dims: &[usize], seed: f64| {
            let n: usize = dims.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|i| ((i as f64 * 0.61 + seed).sin() * 0.4) as f32)
                .collect();
            tensors.insert(
                name.to_string(),
                Tensor::from_vec(values, dims, &dev).unwrap(),
            );
        };
        put("conv.0.weight", &[2 * c_in, c_in, 1, 1], 0.1);
        put("conv.0.bias", &[2 * c_in], 0.2);
        put("conv.1.weight", &[2 * c_out, 2 * c_in, 3, 3], 0.3);
        put("conv.1.bias", &[2 * c_out], 0.4);
        put("conv.2.weight", &[c_out, 2 * c_out, 1, 1], 0.5);
        put("conv.2.bias", &[c_out], 0.6);
        put("sk.weight", &[c_out, c_in, 1, 1], 0.7);
        put("sk.bias", &[c_out], 0.8);
        let get = |name: &str| tensors[name].clone();
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &dev);
        let conv = folded(vb, c_in, c_out).unwrap();
        let xs = Tensor::from_vec(
            (0..2 * c_in * 7 * 6)
                .map(|i| ((i * 37) % 17) as f32 / 17.0)
                .collect(),
            (2, c_in, 7, 6),
            &dev,
        )
        .unwrap();
        // As the network trains: the first 1×1 on the zero-padded input (its bias reaches the
        // border too, so compare the inside), the 3×3 unpadded, the last 1×1, plus the skip.
        let bias = |name: &str| get(name).reshape((1, (), 1, 1)).unwrap();
        let step = |xs: &Tensor, i: usize| {
            xs.conv2d(&get(&format!("conv.{i}.weight")), 0, 1, 1, 1)
                .unwrap()
                .broadcast_add(&bias(&format!("conv.{i}.bias")))
                .unwrap()
        };
        let padded = xs
            .pad_with_zeros(2, 1, 1)
            .unwrap()
            .pad_with_zeros(3, 1, 1)
            .unwrap();
        let branches = step(&step(&step(&padded, 0), 1), 2);
        let skip = xs
            .conv2d(&get("sk.weight"), 0, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias("sk.bias"))
            .unwrap();
        let inside = |t: &Tensor| t.narrow(2, 1, 5).unwrap().narrow(3, 1, 4).unwrap();
        let trained = inside(&(branches + skip).unwrap());
        let ours = inside(&conv.forward(&xs).unwrap());
        let diff = super::super::super::max_abs_diff(&ours, &trained);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn reads_the_scale_and_the_normalisation_from_the_names() {
        let shapes = HashMap::from([
            ("conv_1.sk.weight", vec![12, 3, 1, 1]),
            ("upsampler.0.weight", vec![48, 12, 3, 3]),
        ]);
        let shape = shape_of(|n| shapes.get(n).cloned()).unwrap();
        assert_eq!(
            shape,
            SpanShape {
                features: 12,
                scale: 4,
                normalised: true
            }
        );
        let mut raw = shapes.clone();
        raw.insert("no_norm", vec![1]);
        assert!(!shape_of(|n| raw.get(n).cloned()).unwrap().normalised);
        let mut gray = shapes;
        gray.insert("conv_1.sk.weight", vec![12, 1, 1, 1]);
        let error = shape_of(|n| gray.get(n).cloned()).unwrap_err();
        assert!(error.contains("only RGB"), "{error}");
    }
}
