//! ESRGAN's RRDBNet, in every layout spandrel reads: ESRGAN's original names
//! (`model.1.sub.0.RDB1.conv1.0`, which 4x-UltraSharp and most community models keep),
//! BSRGAN's (`RRDB_trunk.0.RDB1.conv1`) and Real-ESRGAN's (`body.0.rdb1.conv1`), with
//! Real-ESRGAN's pixel-unshuffled input for its 2× and 1× models.
//!
//! `conv_first`, then residual-in-residual dense blocks and `conv_body` added back, then one
//! nearest-neighbour doubling and convolution per factor of 2, then `conv_hr` and
//! `conv_last`; leaky ReLU of slope 0.2 throughout, each dense block's and each RRDB's residual
//! scaled by 0.2.

use std::collections::HashMap;

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::super::kernels::{Conv2d, DenseBuffers, Slopes, dense_block};

/// ESRGAN's leaky ReLU, fused with the convolution before it.
const LEAKY: Slopes = Slopes::Uniform(0.2);

/// A dense block: each of five convolutions reads the block's input and every earlier output.
struct DenseBlock {
    convs: Vec<Conv2d>,
}

impl DenseBlock {
    fn new(vb: VarBuilder, features: usize, growth: usize) -> Result<Self> {
        let convs = (0..5)
            .map(|i| {
                let out = if i == 4 { features } else { growth };
                Conv2d::new(
                    vb.pp(format!("conv{}", i + 1)),
                    features + i * growth,
                    out,
                    3,
                    1,
                    1,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self { convs })
    }

    fn forward(&self, xs: &Tensor, buffers: &DenseBuffers) -> Result<Tensor> {
        (dense_block(xs, &self.convs, 0.2, buffers)? * 0.2)? + xs
    }
}

/// The network's sizes, read from its weights' shapes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RrdbShape {
    /// Channels of the image in (3, or 3·f² for a pixel-unshuffled input).
    pub channels_in: usize,
    /// Feature channels (64 in ESRGAN's releases).
    pub features: usize,
    /// The dense blocks' growth channels (32).
    pub growth: usize,
    /// Residual-in-residual dense blocks (23).
    pub blocks: usize,
    /// Doublings at the end (2 for a 4× network).
    pub doublings: usize,
    /// Pixel-unshuffle factor of the input (Real-ESRGAN x2plus: 2), 1 for none.
    pub shuffle: usize,
}

impl RrdbShape {
    /// How many times larger the output is than the image in.
    pub fn scale(&self) -> usize {
        (1 << self.doublings) / self.shuffle
    }
}

/// RRDBNet, its weights named as Real-ESRGAN names them (see [`canonical_names`]).
pub struct Rrdb {
    shape: RrdbShape,
    first: Conv2d,
    body: Vec<[DenseBlock; 3]>,
    body_conv: Conv2d,
    ups: Vec<Conv2d>,
    hr: Conv2d,
    last: Conv2d,
}

impl Rrdb {
    /// Builds the network of `shape` from `vb` (names as [`canonical_names`] gives them).
    pub fn new(vb: VarBuilder, shape: RrdbShape) -> Result<Self> {
        let f = shape.features;
        let conv = |name: &str, c_in, c_out| Conv2d::new(vb.pp(name), c_in, c_out, 3, 1, 1);
        let body = (0..shape.blocks)
            .map(|i| {
                let block = vb.pp(format!("body.{i}"));
                let dense =
                    |j: usize| DenseBlock::new(block.pp(format!("rdb{j}")), f, shape.growth);
                Ok([dense(1)?, dense(2)?, dense(3)?])
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            shape,
            first: conv("conv_first", shape.channels_in, f)?,
            body,
            body_conv: conv("conv_body", f, f)?,
            ups: (1..=shape.doublings)
                .map(|k| conv(&format!("conv_up{k}"), f, f))
                .collect::<Result<_>>()?,
            hr: conv("conv_hr", f, f)?,
            last: conv("conv_last", f, 3)?,
        })
    }

    /// `(n, 3, h, w)` in [0, 1] to `(n, 3, h·scale, w·scale)`, unclamped; `h` and `w` must be
    /// multiples of the pixel-unshuffle factor.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = match self.shape.shuffle {
            1 => xs.clone(),
            f => pixel_unshuffle(xs, f)?,
        };
        let features = self.first.forward(&xs)?;
        let mut trunk = features.clone();
        let buffers = DenseBuffers::default();
        for [a, b, c] in &self.body {
            let out = a.forward(&trunk, &buffers)?;
            let out = c.forward(&b.forward(&out, &buffers)?, &buffers)?;
            trunk = ((out * 0.2)? + &trunk)?;
        }
        let mut xs = (self.body_conv.forward(&trunk)? + features)?;
        for up in &self.ups {
            let (_, _, h, w) = xs.dims4()?;
            xs = up.forward_leaky(&xs.upsample_nearest2d(2 * h, 2 * w)?, &LEAKY)?;
        }
        self.last.forward(&self.hr.forward_leaky(&xs, &LEAKY)?)
    }
}

/// `(n, c, h, w)` to `(n, c·f², h/f, w/f)`, as `torch.pixel_unshuffle`.
fn pixel_unshuffle(xs: &Tensor, f: usize) -> Result<Tensor> {
    let (n, c, h, w) = xs.dims4()?;
    if !h.is_multiple_of(f) || !w.is_multiple_of(f) {
        candle_core::bail!("a {h}×{w} image is not a multiple of this upscaler's factor {f}");
    }
    xs.reshape((n, c, h / f, f, w / f, f))?
        .permute((0, 1, 3, 5, 2, 4))?
        .reshape((n, c * f * f, h / f, w / f))
}

/// The stored names of an RRDBNet renamed to Real-ESRGAN's (`conv_first`,
/// `body.N.rdbJ.convK`, `conv_body`, `conv_upK`, `conv_hr`, `conv_last`); `None` when the
/// names are none of the three layouts.
pub fn canonical_names(names: &[String]) -> Option<HashMap<String, String>> {
    let has = |name: &str| names.iter().any(|n| n == name);
    if has("conv_first.weight")
        && (has("body.0.rdb1.conv1.weight") || has("RRDB_trunk.0.RDB1.conv1.weight"))
    {
        return Some(
            names
                .iter()
                .filter_map(|n| Some((new_name(n)?, n.clone())))
                .collect(),
        );
    }
    if !(has("model.0.weight") && has("model.1.sub.0.RDB1.conv1.0.weight")) {
        return None;
    }
    // The original layout numbers its sequence: 0 the first convolution, 1 the trunk (its
    // last entry `conv_body`), then an upsample, convolution and activation per doubling, then
    // `conv_hr` two after the last doubling's convolution and `conv_last` two after that.
    let top: Vec<usize> = names
        .iter()
        .filter_map(|n| n.strip_prefix("model.")?.split('.').next()?.parse().ok())
        .collect();
    let last = top.iter().copied().max()?;
    let blocks = names
        .iter()
        .filter_map(|n| {
            n.strip_prefix("model.1.sub.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()?;
    let mut renamed = HashMap::new();
    for name in names {
        let Some(rest) = name.strip_prefix("model.") else {
            continue;
        };
        let (layer, tail) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let new = match layer {
            0 => format!("conv_first.{tail}"),
            1 => {
                let sub = tail.strip_prefix("sub.")?;
                let (block, inner) = sub.split_once('.')?;
                if block.parse::<usize>().ok()? == blocks {
                    format!("conv_body.{inner}")
                } else {
                    // `RDB1.conv1.0.weight` → `rdb1.conv1.weight`
                    let inner = inner.replacen("RDB", "rdb", 1).replacen(".0.", ".", 1);
                    format!("body.{block}.{inner}")
                }
            }
            l if l == last => format!("conv_last.{tail}"),
            l if Some(l) == last.checked_sub(2) => format!("conv_hr.{tail}"),
            l if l % 3 == 0 => format!("conv_up{}.{tail}", l / 3),
            _ => return None,
        };
        renamed.insert(new, name.clone());
    }
    Some(renamed)
}

/// A Real-ESRGAN or BSRGAN name as Real-ESRGAN's.
fn new_name(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("RRDB_trunk.") {
        return Some(format!("body.{}", rest.replacen("RDB", "rdb", 1)));
    }
    let renamed = [
        ("trunk_conv.", "conv_body."),
        ("upconv", "conv_up"),
        ("HRconv.", "conv_hr."),
    ]
    .iter()
    .find_map(|(old, new)| name.strip_prefix(old).map(|rest| format!("{new}{rest}")));
    Some(renamed.unwrap_or_else(|| name.to_string()))
}

/// The network's sizes from its tensors' shapes (by canonical name), or what is missing.
pub fn shape_of(shapes: &HashMap<String, Vec<usize>>) -> std::result::Result<RrdbShape, String> {
    let dims = |name: &str| {
        shapes
            .get(name)
            .filter(|d| d.len() == 4)
            .cloned()
            .ok_or_else(|| format!("no 4-dimensional `{name}`"))
    };
    let first = dims("conv_first.weight")?;
    let growth = dims("body.0.rdb1.conv1.weight")?[0];
    let blocks = (0..)
        .take_while(|i| shapes.contains_key(&format!("body.{i}.rdb1.conv1.weight")))
        .count();
    let doublings = (1..)
        .take_while(|k| shapes.contains_key(&format!("conv_up{k}.weight")))
        .count();
    let out = dims("conv_last.weight")?[0];
    let channels_in = first[1];
    let shuffle = match channels_in / out.max(1) {
        _ if out != 3 => {
            return Err(format!(
                "{out} output channels: only RGB upscalers are read"
            ));
        }
        1 if channels_in == 3 => 1,
        4 if channels_in == 12 => 2,
        16 if channels_in == 48 => 4,
        _ => return Err(format!("{channels_in} input channels for an RGB output")),
    };
    if (1 << doublings) < shuffle {
        return Err(format!(
            "{doublings} doublings with a pixel-unshuffle of {shuffle}: not a 1×, 2×, 4× or 8× layout"
        ));
    }
    Ok(RrdbShape {
        channels_in,
        features: first[0],
        growth,
        blocks,
        doublings,
        shuffle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_original_layout_is_renamed_by_position() {
        let old = names(&[
            "model.0.weight",
            "model.1.sub.0.RDB1.conv1.0.weight",
            "model.1.sub.0.RDB3.conv5.0.bias",
            "model.1.sub.1.weight",
            "model.3.weight",
            "model.6.weight",
            "model.8.weight",
            "model.10.bias",
        ]);
        let renamed = canonical_names(&old).unwrap();
        let back = |new: &str| renamed.get(new).map(String::as_str);
        assert_eq!(back("conv_first.weight"), Some("model.0.weight"));
        assert_eq!(
            back("body.0.rdb1.conv1.weight"),
            Some("model.1.sub.0.RDB1.conv1.0.weight")
        );
        assert_eq!(
            back("body.0.rdb3.conv5.bias"),
            Some("model.1.sub.0.RDB3.conv5.0.bias")
        );
        assert_eq!(back("conv_body.weight"), Some("model.1.sub.1.weight"));
        assert_eq!(back("conv_up1.weight"), Some("model.3.weight"));
        assert_eq!(back("conv_up2.weight"), Some("model.6.weight"));
        assert_eq!(back("conv_hr.weight"), Some("model.8.weight"));
        assert_eq!(back("conv_last.bias"), Some("model.10.bias"));
    }

    #[test]
    fn bsrgan_names_are_renamed_and_others_are_not_rrdb() {
        let bsrgan = names(&[
            "conv_first.weight",
            "RRDB_trunk.0.RDB1.conv1.weight",
            "RRDB_trunk.0.RDB2.conv3.weight",
            "trunk_conv.bias",
            "upconv2.weight",
            "HRconv.weight",
        ]);
        let renamed = canonical_names(&bsrgan).unwrap();
        for new in [
            "body.0.rdb2.conv3.weight",
            "conv_body.bias",
            "conv_up2.weight",
            "conv_hr.weight",
        ] {
            assert!(renamed.contains_key(new), "{new}");
        }
        assert!(canonical_names(&names(&["body.0.weight", "body.1.weight"])).is_none());
    }

    #[test]
    fn pixel_unshuffle_moves_each_factor_block_into_channels() {
        let xs = Tensor::arange(0f32, 16.0, &candle_core::Device::Cpu)
            .unwrap()
            .reshape((1, 1, 4, 4))
            .unwrap();
        let out = pixel_unshuffle(&xs, 2).unwrap();
        assert_eq!(out.dims(), [1, 4, 2, 2]);
        // Channel 1 holds each 2×2 block's top-right sample.
        let channel: Vec<f32> = out
            .narrow(1, 1, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(channel, [1.0, 3.0, 9.0, 11.0]);
        assert!(pixel_unshuffle(&xs.narrow(3, 0, 3).unwrap(), 2).is_err());
    }
}
