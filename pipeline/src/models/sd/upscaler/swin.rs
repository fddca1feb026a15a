//! The Swin transformer's parts that SwinIR ([`super::swinir`]) and HAT ([`super::hat`])
//! share, some of them with DAT ([`super::dat`]): self-attention within square windows with a
//! learned relative position bias, every other block's windows shifted by half a window (a
//! mask keeps the parts the shift brought together apart; windows cut and masked as rectangles
//! for DAT), the blocks' MLP, the closing convolutions of a residual group, the pixel-shuffle
//! upsampler, and the reflection padding to whole windows.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::super::kernels::{Conv2d, Slopes, attention_biased, gelu_erf};
use super::compact::pixel_shuffle;

/// The channel means a three-channel network's input is centred on.
pub(super) const RGB_MEAN: [f32; 3] = [0.4488, 0.4371, 0.4040];
/// What a shifted window's attention adds between pixels from different parts of the image.
const MASKED: f32 = -100.0;
/// The hidden width of Swin v2's relative position bias MLP.
const CPB_HIDDEN: usize = 512;
/// The largest logarithm of a Swin v2 head's score scale (ln 100).
const MOST_LOGIT_SCALE: f32 = 4.605_170_2;

/// The sizes every Swin network here has, read from its weights' shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct SwinSizes {
    /// Feature channels (180 in SwinIR-M and HAT, 60 in SwinIR's lightweight models).
    pub features: usize,
    /// Blocks of each residual group.
    pub depths: Vec<usize>,
    /// Attention heads of each residual group.
    pub heads: Vec<usize>,
    /// The side of the attention windows (8 in SwinIR's SR releases, 16 in HAT's).
    pub window: usize,
    /// Hidden features of each MLP.
    pub hidden: usize,
}

impl SwinSizes {
    /// Reads them from `shape(name)`: the features from `conv_first` (RGB in), each group's
    /// blocks from `layers.N.residual_group.blocks.M`, its heads from the side `axis` of the
    /// tensor `heads_from(N)` names (a relative position table's second, or Swin v2's logit
    /// scales' first), the MLP's width from the first block's; `window` as the caller found
    /// it. Otherwise what does not fit.
    pub(super) fn read(
        shape: &impl Fn(&str) -> Option<Vec<usize>>,
        window: usize,
        heads_from: impl Fn(usize) -> (String, usize),
    ) -> std::result::Result<Self, String> {
        let get = |name: &str| shape(name).ok_or_else(|| format!("no `{name}`"));
        let first = get("conv_first.weight")?;
        if first.len() != 4 || first[1] != 3 {
            return Err(format!(
                "`conv_first.weight` is {first:?}: only RGB networks without a pixel-unshuffled \
                 input are read"
            ));
        }
        let features = first[0];
        let blocks_of = |group: usize| {
            (0..)
                .take_while(|i| {
                    shape(&format!(
                        "layers.{group}.residual_group.blocks.{i}.norm1.weight"
                    ))
                    .is_some()
                })
                .count()
        };
        let groups = (0..).take_while(|&group| blocks_of(group) > 0).count();
        let heads = (0..groups)
            .map(|group| {
                let (name, axis) = heads_from(group);
                let dims = get(&name)?;
                match dims.get(axis) {
                    Some(&heads) if heads > 0 && features.is_multiple_of(heads) => Ok(heads),
                    _ => Err(format!(
                        "`{name}` is {dims:?}: its side {axis} does not split {features} \
                         features into heads"
                    )),
                }
            })
            .collect::<std::result::Result<_, String>>()?;
        Ok(Self {
            features,
            depths: (0..groups).map(blocks_of).collect(),
            heads,
            window,
            hidden: get("layers.0.residual_group.blocks.0.mlp.fc1.weight")?[0],
        })
    }
}

/// Multi-head self-attention within windows of `window`² pixels: Swin's (`attn.qkv`,
/// `attn.proj`, `attn.relative_position_bias_table`) or Swin v2's cosine attention.
pub(super) struct WindowAttention {
    qkv: Linear,
    proj: Linear,
    /// The relative position bias `(1, heads, n, n)` for the window's `n` pixels.
    bias: Tensor,
    heads: usize,
    /// Swin v2's: each head's scale `(1, heads, 1, 1)` of its cosine scores (its learned
    /// logarithm, at most ln 100, raised); `None` for dot products scaled by d^-½.
    cosine: Option<Tensor>,
}

impl WindowAttention {
    /// Reads the attention of `features` channels in `heads` heads over `window`² pixels
    /// from `vb` (the `attn` prefix); `qkv_bias` whether `qkv` has a bias.
    pub(super) fn new(
        vb: VarBuilder,
        features: usize,
        heads: usize,
        window: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        let side = 2 * window - 1;
        let table = vb.get((side * side, heads), "relative_position_bias_table")?;
        let n = window * window;
        Ok(Self {
            qkv: candle_nn::linear_b(features, 3 * features, qkv_bias, vb.pp("qkv"))?,
            proj: candle_nn::linear(features, features, vb.pp("proj"))?,
            bias: bias_from_table(&table, &relative_index((window, window)), (n, n))?,
            heads,
            cosine: None,
        })
    }

    /// Reads Swin v2's attention (Swin2SR's) of `features` channels in `heads` heads over
    /// `window`² pixels from `vb`: cosine similarities times each head's `logit_scale`, plus
    /// the bias its `cpb_mlp` (2 → 512, ReLU, → heads) makes of each relative offset's
    /// log-spaced coordinates (the stored `relative_coords_table`), as 16·σ; `qkv` biased by
    /// `q_bias` and `v_bias` (none for the keys) when `qkv_bias`.
    pub(super) fn cosine(
        vb: VarBuilder,
        features: usize,
        heads: usize,
        window: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        let side = 2 * window - 1;
        let coords = vb
            .get((1, side, side, 2), "relative_coords_table")?
            .reshape((side * side, 2))?;
        let hidden = candle_nn::linear(2, CPB_HIDDEN, vb.pp("cpb_mlp.0"))?;
        let out = candle_nn::linear_no_bias(CPB_HIDDEN, heads, vb.pp("cpb_mlp.2"))?;
        let table = out.forward(&hidden.forward(&coords)?.relu()?)?;
        let n = window * window;
        let bias = (candle_nn::ops::sigmoid(&bias_from_table(
            &table,
            &relative_index((window, window)),
            (n, n),
        )?)? * 16.0)?;
        let weight = vb.get((3 * features, features), "qkv.weight")?;
        let qkv_bias = if qkv_bias {
            let q = vb.get(features, "q_bias")?;
            let v = vb.get(features, "v_bias")?;
            Some(Tensor::cat(&[&q, &q.zeros_like()?, &v], 0)?)
        } else {
            None
        };
        let scales = vb
            .get((heads, 1, 1), "logit_scale")?
            .clamp(f32::MIN, MOST_LOGIT_SCALE)?
            .exp()?
            .reshape((1, heads, 1, 1))?;
        Ok(Self {
            qkv: Linear::new(weight, qkv_bias),
            proj: candle_nn::linear(features, features, vb.pp("proj"))?,
            bias,
            heads,
            cosine: Some(scales),
        })
    }

    /// Self-attention within each of `windows` `(images·windows, n, c)`, the mask
    /// `(1, windows, 1, n, n)` added to the scores when given.
    pub(super) fn forward(&self, windows: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (bw, n, c) = windows.dims3()?;
        let head = c / self.heads;
        let qkv = per_token(&self.qkv, windows)?
            .reshape((bw, n, 3, self.heads, head))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let (q, k, scale) = match &self.cosine {
            Some(scales) => (unit_rows(&q)?.broadcast_mul(scales)?, unit_rows(&k)?, 1.0),
            None => (q, k, (head as f64).powf(-0.5)),
        };
        let out = window_attention(&q, &k, &v, &self.bias, mask, scale)?
            .transpose(1, 2)?
            .reshape((bw, n, c))?;
        per_token(&self.proj, &out)
    }

    /// `x` `(b, h, w, c)` (whole windows) attended to within windows shifted by `shift`
    /// pixels up and left (none when 0; `mask` their [`shift_mask`]), then shifted back.
    pub(super) fn shifted(
        &self,
        x: &Tensor,
        window: usize,
        shift: usize,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, h, w, _) = x.dims4()?;
        let roll = |x: &Tensor, by: i32| -> Result<Tensor> {
            if by == 0 {
                return Ok(x.clone());
            }
            x.roll(by, 1)?.roll(by, 2)
        };
        let windows = partition(&roll(x, -(shift as i32))?, (window, window))?;
        let attended = self.forward(&windows, mask.filter(|_| shift > 0))?;
        roll(
            &merge(&attended, (b, h, w), (window, window))?,
            shift as i32,
        )
    }
}

/// Attention, its scores scaled by `scale`, of `q` `(groups, heads, n, d)` to `k` and `v`
/// `(groups, heads, m, d)` with `bias` `(1, heads, n, m)` added to the scores, and `mask`
/// `(1, windows, 1, n, m)` too when given (the groups being images × those windows):
/// `(groups, heads, n, d)`, through the fused kernel on the CPU.
pub(super) fn window_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let (groups, heads, n, d) = q.dims4()?;
    let m = k.dim(2)?;
    let bias = match mask {
        Some(mask) => {
            let windows = mask.dim(1)?;
            mask.broadcast_add(&bias.unsqueeze(1)?)?
                .reshape((windows * heads, n, m))?
        }
        None => bias.reshape((heads, n, m))?,
    };
    let flat = |t: &Tensor, rows: usize| t.reshape((groups * heads, rows, d));
    attention_biased(&flat(q, n)?, &flat(k, m)?, &flat(v, m)?, scale, &bias)?
        .reshape((groups, heads, n, d))
}

/// Each row of `xs` along its last side divided by its length (at least 1e-12, as PyTorch's
/// `normalize`).
pub(super) fn unit_rows(xs: &Tensor) -> Result<Tensor> {
    let length = xs
        .sqr()?
        .sum_keepdim(candle_core::D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    xs.broadcast_div(&length)
}

/// For each pair of pixels `(i, j)` of a window of `wh` rows by `ww` columns (row-major,
/// `i` major), the row of a table of every offset `(2·wh − 1) × (2·ww − 1)` that holds pixel
/// `i`'s offset from pixel `j`, both counted from 0 in each direction.
pub(super) fn relative_index((wh, ww): (usize, usize)) -> Vec<i64> {
    let (n, side) = (wh * ww, 2 * ww - 1);
    (0..n)
        .flat_map(|i| {
            (0..n).map(move |j| {
                let dy = i / ww + wh - 1 - j / ww;
                let dx = i % ww + ww - 1 - j % ww;
                (dy * side + dx) as i64
            })
        })
        .collect()
}

/// The bias `(1, heads, rows, cols)` that `index` (row-major, each entry a row of `table`
/// `(positions, heads)`, negative entries counted from its end as PyTorch indexes) picks.
pub(super) fn bias_from_table(
    table: &Tensor,
    index: &[i64],
    (rows, cols): (usize, usize),
) -> Result<Tensor> {
    let (positions, heads) = table.dims2()?;
    let index: Vec<u32> = index
        .iter()
        .map(|&i| i.rem_euclid(positions as i64) as u32)
        .collect();
    let index = Tensor::from_vec(index, rows * cols, table.device())?;
    table
        .index_select(&index, 0)?
        .reshape((rows, cols, heads))?
        .permute((2, 0, 1))?
        .contiguous()?
        .unsqueeze(0)
}

/// `x` `(b, h, w, c)` cut into its windows `(b·windows, wh·ww, c)` of `wh` rows by `ww`
/// columns, row by row.
pub(super) fn partition(x: &Tensor, (wh, ww): (usize, usize)) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    x.reshape((b, h / wh, wh, w / ww, ww, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .reshape((b * (h / wh) * (w / ww), wh * ww, c))
}

/// The windows [`partition`] cut, laid back as `(b, h, w, c)`.
pub(super) fn merge(
    windows: &Tensor,
    (b, h, w): (usize, usize, usize),
    (wh, ww): (usize, usize),
) -> Result<Tensor> {
    let c = windows.dim(2)?;
    windows
        .reshape((b, h / wh, w / ww, wh, ww, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .reshape((b, h, w, c))
}

/// `layer` on the last dimension of `xs`, all tokens as one matrix product (candle's linear
/// layer takes a tensor of three or four dimensions as a batch of small products).
pub(super) fn per_token(layer: &Linear, xs: &Tensor) -> Result<Tensor> {
    let mut dims = xs.dims().to_vec();
    let width = dims.last().copied().unwrap_or(1).max(1);
    let out = layer.forward(&xs.reshape((xs.elem_count() / width, width))?)?;
    if let Some(last) = dims.last_mut() {
        *last = out.dim(1)?;
    }
    out.reshape(dims)
}

/// A transformer block's MLP (`fc1`, GELU, `fc2`).
pub(super) struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    /// Reads it from `vb` (the `mlp` prefix).
    pub(super) fn new(vb: VarBuilder, features: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(features, hidden, vb.pp("fc1"))?,
            fc2: candle_nn::linear(hidden, features, vb.pp("fc2"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        per_token(&self.fc2, &gelu_erf(&per_token(&self.fc1, xs)?)?)
    }
}

/// The classical SR upsampler: `conv_before_upsample.0` (and a leaky ReLU of slope 0.01) into
/// `features` channels, convolutions pixel-shuffled by 2 (`upsample.0`, `upsample.2`, …; or
/// one by 3), then `conv_last` to RGB.
pub(super) struct PixelShuffleUp {
    before: Conv2d,
    ups: Vec<Conv2d>,
    factor: usize,
    last: Conv2d,
}

impl PixelShuffleUp {
    /// Reads it from `vb` for `channels` in, `features` between and `scale` (from
    /// [`pixel_shuffle_scale`]).
    pub(super) fn new(
        vb: VarBuilder,
        channels: usize,
        features: usize,
        scale: usize,
    ) -> Result<Self> {
        let conv = |name: &str, c_in, c_out| Conv2d::new(vb.pp(name), c_in, c_out, 3, 1, 1);
        let (factor, count) = if scale == 3 {
            (3, 1)
        } else {
            (2, scale.trailing_zeros() as usize)
        };
        Ok(Self {
            before: conv("conv_before_upsample.0", channels, features)?,
            ups: (0..count)
                .map(|i| {
                    conv(
                        &format!("upsample.{}", 2 * i),
                        features,
                        factor * factor * features,
                    )
                })
                .collect::<Result<_>>()?,
            factor,
            last: conv("conv_last", features, 3)?,
        })
    }

    /// The pixel shuffles on `x` `(n, features, h, w)`.
    fn shuffled(&self, mut x: Tensor) -> Result<Tensor> {
        for conv in &self.ups {
            x = pixel_shuffle(&conv.forward(&x)?, self.factor)?;
        }
        Ok(x)
    }

    /// Swin2SR's compressed-SR path: after the first convolution, a 3-channel image (`aux`)
    /// and back to the features (`after_aux`, leaky ReLU) before the pixel shuffles; their
    /// output cut to `added`'s size `(n, features, h, w)` and `added` summed in before the last
    /// convolution.
    pub(super) fn forward_auxiliary(
        &self,
        xs: &Tensor,
        aux: &Conv2d,
        after_aux: &Conv2d,
        added: &Tensor,
    ) -> Result<Tensor> {
        let slope = Slopes::Uniform(0.01);
        let x = self.before.forward_leaky(xs, &slope)?;
        let x = self.shuffled(after_aux.forward_leaky(&aux.forward(&x)?, &slope)?)?;
        let (_, _, h, w) = added.dims4()?;
        self.last
            .forward(&(x.narrow(2, 0, h)?.narrow(3, 0, w)? + added)?)
    }
}

impl Module for PixelShuffleUp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let x = self.before.forward_leaky(xs, &Slopes::Uniform(0.01))?;
        self.last.forward(&self.shuffled(x)?)
    }
}

/// The scale of a [`PixelShuffleUp`] of `features` channels from its convolutions' shapes
/// (`shape(name)`), or what does not fit.
pub(super) fn pixel_shuffle_scale(
    shape: impl Fn(&str) -> Option<Vec<usize>>,
    features: usize,
) -> std::result::Result<usize, String> {
    let convs = (0..)
        .take_while(|i| shape(&format!("upsample.{}.weight", 2 * i)).is_some())
        .count();
    let out = shape("upsample.0.weight")
        .and_then(|dims| dims.first().copied())
        .ok_or("no `upsample.0.weight`")?;
    match (out / features.max(1), convs) {
        (4, n) if out == 4 * features => Ok(1 << n),
        (9, 1) if out == 9 * features => Ok(3),
        _ => Err(format!(
            "{convs} upsampling convolutions of {out} channels from {features} do not pixel-shuffle \
             by 2 (or once by 3)"
        )),
    }
}

/// The lightweight SR upsampler: `upsample.0` into 3·scale² channels, pixel-shuffled to the
/// output at once.
pub(super) struct OneStepUp {
    conv: Conv2d,
    scale: usize,
}

impl OneStepUp {
    /// Reads it from `vb` for `channels` in and `scale` (from [`OneStepUp::scale_of`]).
    pub(super) fn new(vb: VarBuilder, channels: usize, scale: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(vb.pp("upsample.0"), channels, 3 * scale * scale, 3, 1, 1)?,
            scale,
        })
    }

    /// Its scale from its convolution's shape (`shape(name)`), or what does not fit.
    pub(super) fn scale_of(
        shape: impl Fn(&str) -> Option<Vec<usize>>,
    ) -> std::result::Result<usize, String> {
        let out = shape("upsample.0.weight")
            .and_then(|dims| dims.first().copied())
            .ok_or("no `upsample.0.weight`")?;
        (1..=8)
            .find(|s| 3 * s * s == out)
            .ok_or_else(|| format!("the upsampling convolution's {out} channels are not 3·scale²"))
    }
}

impl Module for OneStepUp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        pixel_shuffle(&self.conv.forward(xs)?, self.scale)
    }
}

/// One or three convolutions closing a residual group (and the body).
pub(super) enum Closing {
    One(Conv2d),
    Three([Conv2d; 3]),
}

impl Closing {
    /// Reads them from `vb` for `features` channels: three (`0`, `2`, `4`, leaky ReLUs of
    /// slope 0.2 between them, a quarter of the channels inside) when `three`, else one.
    pub(super) fn new(vb: VarBuilder, features: usize, three: bool) -> Result<Self> {
        if !three {
            return Ok(Self::One(Conv2d::new(vb, features, features, 3, 1, 1)?));
        }
        let quarter = features / 4;
        Ok(Self::Three([
            Conv2d::new(vb.pp("0"), features, quarter, 3, 1, 1)?,
            Conv2d::new(vb.pp("2"), quarter, quarter, 1, 1, 0)?,
            Conv2d::new(vb.pp("4"), quarter, features, 3, 1, 1)?,
        ]))
    }

    /// The convolutions on `xs` `(n, c, h, w)`.
    pub(super) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::One(conv) => conv.forward(xs),
            Self::Three([a, b, c]) => {
                let xs = a.forward_leaky(xs, &Slopes::Uniform(0.2))?;
                let xs = b.forward_leaky(&xs, &Slopes::Uniform(0.2))?;
                c.forward(&xs)
            }
        }
    }
}

/// `xs` `(n, c, h, w)` padded at the bottom and right by reflection (the edge row not
/// repeated) up to multiples of `multiple`, as `torch.nn.functional.pad(…, mode="reflect")`.
pub(crate) fn reflect_to_multiple(xs: &Tensor, multiple: usize) -> Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    let reflect = |xs: &Tensor, dim: usize, size: usize| -> Result<Tensor> {
        let pad = (multiple - size % multiple) % multiple;
        if pad == 0 {
            return Ok(xs.clone());
        }
        if pad >= size {
            return Err(candle_core::Error::Msg(format!(
                "a side of {size} pixels cannot be reflected {pad} pixels further"
            )));
        }
        let index: Vec<u32> = (0..size)
            .chain((0..pad).map(|i| size - 2 - i))
            .map(|i| i as u32)
            .collect();
        let index = Tensor::from_vec(index, size + pad, xs.device())?;
        xs.contiguous()?.index_select(&index, dim)
    };
    reflect(&reflect(xs, 2, h)?, 3, w)
}

/// What the windows of `wh` rows by `ww` columns, shifted by half of each, of an `h`×`w`
/// image add to their attention scores, `(1, windows, 1, n, n)`: 0 between pixels from the
/// same part of the image before the shift, [`MASKED`] between parts the roll brought together.
pub(super) fn shift_mask(
    h: usize,
    w: usize,
    (wh, ww): (usize, usize),
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    let part = |i: usize, size: usize, window: usize| {
        if i < size - window {
            0
        } else if i < size - window / 2 {
            1
        } else {
            2
        }
    };
    let (wy, wx, n) = (h / wh, w / ww, wh * ww);
    let mut values = Vec::with_capacity(wy * wx * n * n);
    for y in 0..wy {
        for x in 0..wx {
            let ids: Vec<usize> = (0..n)
                .map(|p| {
                    let (py, px) = (y * wh + p / ww, x * ww + p % ww);
                    part(py, h, wh) * 3 + part(px, w, ww)
                })
                .collect();
            for &a in &ids {
                for &b in &ids {
                    values.push(if a == b { 0f32 } else { MASKED });
                }
            }
        }
    }
    Tensor::from_vec(values, (1, wy * wx, 1, n, n), device)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn windows_cut_and_laid_back_are_the_image_and_each_is_one_rectangle(
            (b, wy, wx, wh, ww, c) in (1usize..3, 1usize..4, 1usize..4, 1usize..5, 1usize..5, 1usize..4),
        ) {
            let (h, w) = (wy * wh, wx * ww);
            let x = Tensor::arange(0f32, (b * h * w * c) as f32, &Device::Cpu)
                .unwrap()
                .reshape((b, h, w, c))
                .unwrap();
            let windows = partition(&x, (wh, ww)).unwrap();
            prop_assert_eq!(windows.dims(), [b * wy * wx, wh * ww, c]);
            let back = merge(&windows, (b, h, w), (wh, ww)).unwrap();
            prop_assert_eq!(
                back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
            // The last window of the first image is the bottom-right rectangle, row by row.
            let last: Vec<f32> = windows.get(wy * wx - 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let corner: Vec<f32> = x
                .get(0).unwrap()
                .narrow(0, h - wh, wh).unwrap()
                .narrow(1, w - ww, ww).unwrap()
                .flatten_all().unwrap()
                .to_vec1().unwrap();
            prop_assert_eq!(last, corner);
        }

        #[test]
        fn the_shift_mask_is_symmetric_and_keeps_each_pixel_with_itself(
            (wy, wx, wh, ww) in (1usize..4, 1usize..4, 2usize..5, 2usize..5),
        ) {
            let mask = shift_mask(wy * wh, wx * ww, (wh, ww), &Device::Cpu, DType::F32)
                .unwrap();
            let n = wh * ww;
            let values: Vec<Vec<f32>> = mask
                .reshape((wy * wx * n, n))
                .unwrap()
                .to_vec2()
                .unwrap();
            for (row, scores) in values.iter().enumerate() {
                let (w, i) = (row / n, row % n);
                prop_assert_eq!(scores[i], 0.0);
                for (j, &score) in scores.iter().enumerate() {
                    prop_assert!(score == 0.0 || score == MASKED);
                    prop_assert_eq!(score, values[w * n + j][i]);
                }
            }
        }
    }

    #[test]
    fn reflection_pads_without_repeating_the_edge() {
        let xs = Tensor::arange(0f32, 15.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 3, 5))
            .unwrap();
        let padded = reflect_to_multiple(&xs, 4).unwrap();
        assert_eq!(padded.dims(), [1, 1, 4, 8]);
        let rows: Vec<Vec<f32>> = padded.get(0).unwrap().get(0).unwrap().to_vec2().unwrap();
        assert_eq!(rows[0], [0.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0, 1.0]);
        assert_eq!(
            rows[3], rows[1],
            "the row below the edge is the one above it"
        );
        let thin = reflect_to_multiple(&xs.narrow(2, 0, 1).unwrap(), 4).unwrap_err();
        assert!(thin.to_string().contains("a side of 1 pixels"), "{thin}");
    }

    #[test]
    fn the_shift_mask_parts_only_the_last_row_and_column_of_windows() {
        let mask = shift_mask(8, 8, (4, 4), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(mask.dims(), [1, 4, 1, 16, 16]);
        let window = |i: usize| -> Vec<Vec<f32>> {
            mask.get(0)
                .unwrap()
                .get(i)
                .unwrap()
                .get(0)
                .unwrap()
                .to_vec2()
                .unwrap()
        };
        // The first window lies inside one part; the last mixes four.
        assert!(window(0).iter().flatten().all(|&v| v == 0.0));
        let last = window(3);
        assert_eq!(last[0][0], 0.0);
        assert_eq!(
            last[0][2], MASKED,
            "columns 0–1 and 2–3 come from either side of the roll"
        );
        assert_eq!(last[0][8], MASKED, "as do rows");
        assert_eq!(last[0][1], 0.0);
    }
}
