//! Real-ESRGAN's SRVGGNetCompact (`realesr-general-x4v3`, `realesr-animevideov3` and the
//! community "compact" models): a plain stack of 3×3 convolutions with per-channel PReLU at the
//! input's size, the last one's channels pixel-shuffled into the larger image, added to the
//! input scaled up by repeating pixels. A tenth of ESRGAN's work.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::super::kernels::{Conv2d, Slopes};

/// The network's sizes, read from its weights' shapes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompactShape {
    /// Feature channels (64 in the releases).
    pub features: usize,
    /// Convolutions between the first and the last (32 in `realesr-general-x4v3`).
    pub convs: usize,
    /// How many times larger the output is.
    pub scale: usize,
}

/// SRVGGNetCompact, its weights under `body.N`.
pub struct Compact {
    scale: usize,
    /// Each convolution but the last with the PReLU slopes after it.
    layers: Vec<(Conv2d, Slopes)>,
    last: Conv2d,
}

impl Compact {
    /// Builds the network of `shape` from `vb`.
    pub fn new(vb: VarBuilder, shape: CompactShape) -> Result<Self> {
        let f = shape.features;
        let layers = (0..=shape.convs)
            .map(|i| {
                let c_in = if i == 0 { 3 } else { f };
                let conv = Conv2d::new(vb.pp(format!("body.{}", 2 * i)), c_in, f, 3, 1, 1)?;
                let slopes = vb.get(f, &format!("body.{}.weight", 2 * i + 1))?;
                Ok((conv, Slopes::PerChannel(slopes)))
            })
            .collect::<Result<_>>()?;
        let last = Conv2d::new(
            vb.pp(format!("body.{}", 2 * shape.convs + 2)),
            f,
            3 * shape.scale * shape.scale,
            3,
            1,
            1,
        )?;
        Ok(Self {
            scale: shape.scale,
            layers,
            last,
        })
    }

    /// `(n, 3, h, w)` in [0, 1] to `(n, 3, h·scale, w·scale)`, unclamped.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut out = xs.clone();
        for (conv, slopes) in &self.layers {
            out = conv.forward_leaky(&out, slopes)?;
        }
        let out = pixel_shuffle(&self.last.forward(&out)?, self.scale)?;
        let (_, _, h, w) = xs.dims4()?;
        out + xs.upsample_nearest2d(h * self.scale, w * self.scale)?
    }
}

/// `(n, c·r², h, w)` to `(n, c, h·r, w·r)`, as `torch.nn.PixelShuffle`.
pub(crate) fn pixel_shuffle(xs: &Tensor, r: usize) -> Result<Tensor> {
    let (n, c, h, w) = xs.dims4()?;
    let c = c / (r * r);
    xs.reshape((n, c, r, r, h, w))?
        .permute((0, 1, 4, 2, 5, 3))?
        .reshape((n, c, h * r, w * r))
}

/// The network's sizes from `body.N`'s shapes (`shape(name)`), or what does not fit.
pub fn shape_of(
    shape: impl Fn(&str) -> Option<Vec<usize>>,
) -> std::result::Result<CompactShape, String> {
    let first = shape("body.0.weight").ok_or("no `body.0.weight`")?;
    if first.len() != 4 || first[1] != 3 {
        return Err(format!(
            "`body.0.weight` is {first:?}: only RGB upscalers are read"
        ));
    }
    // body.0 conv, body.1 PReLU, …, body.{2k+2} the last conv.
    let highest = (0..)
        .take_while(|i| shape(&format!("body.{i}.weight")).is_some())
        .count()
        - 1;
    if highest < 2 || !highest.is_multiple_of(2) {
        return Err(format!(
            "`body.{highest}` ends the stack: it must end on a convolution"
        ));
    }
    let out = shape(&format!("body.{highest}.weight")).unwrap_or_default();
    let channels = out.first().copied().unwrap_or(0);
    let scale = (1..=8).find(|s| 3 * s * s == channels).ok_or_else(|| {
        format!("the last convolution's {channels} channels are not 3·scale² for an RGB image")
    })?;
    Ok(CompactShape {
        features: first[0],
        convs: (highest - 2) / 2,
        scale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn pixel_shuffle_undoes_unshuffle_order() {
        // Four channels of one pixel land as the 2×2 block, row by row.
        let xs = Tensor::arange(0f32, 4.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 4, 1, 1))
            .unwrap();
        let out = pixel_shuffle(&xs, 2).unwrap();
        assert_eq!(out.dims(), [1, 1, 2, 2]);
        assert_eq!(
            out.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0.0, 1.0, 2.0, 3.0]
        );
    }

    #[test]
    fn the_shape_is_read_from_the_stack() {
        let dims = |name: &str| -> Option<Vec<usize>> {
            match name {
                "body.0.weight" => Some(vec![8, 3, 3, 3]),
                "body.1.weight" | "body.3.weight" => Some(vec![8]),
                "body.2.weight" => Some(vec![8, 8, 3, 3]),
                "body.4.weight" => Some(vec![48, 8, 3, 3]),
                _ => None,
            }
        };
        assert_eq!(
            shape_of(dims),
            Ok(CompactShape {
                features: 8,
                convs: 1,
                scale: 4
            })
        );
        let odd = |name: &str| {
            if name == "body.4.weight" {
                None
            } else {
                dims(name)
            }
        };
        assert!(
            shape_of(odd)
                .unwrap_err()
                .contains("must end on a convolution")
        );
    }
}
