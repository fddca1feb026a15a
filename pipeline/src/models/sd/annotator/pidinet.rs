//! PiDiNet soft edges (Su et al., "Pixel Difference Networks for Efficient Edge Detection"; the
//! file `table5_pidinet.pth` of `lllyasviel/Annotators`) as A1111's `softedge_pidinet` and
//! `softedge_pidisafe` preprocessors and `controlnet_aux`'s `PidiNetDetector` run it: the
//! picture's BGR in 0–1, a first convolution and 15 blocks (a depthwise pixel-difference
//! convolution, ReLU and a 1×1 convolution, added to the block's input; the blocks opening the
//! second, third and fourth stages at half the size, their input max-pooled and widened by a
//! 1×1 shortcut), then for each stage a dilation module (four 3×3 convolutions dilated 5, 7, 9
//! and 11), a spatial attention and a 1×1 reduction to one map, each resized to the picture
//! (bilinear), and a 1×1 classifier of the four maps with a sigmoid.
//!
//! The pixel-difference convolutions are the `carv4` pattern the released network was trained
//! with — central, angular, radial, vanilla, four times over — turned into plain kernels when
//! the file is read, as the paper's conversion does: central differences subtract the kernel's
//! sum at its centre, angular ones each tap's clockwise neighbour, and radial ones spread a
//! 3×3 kernel's ring over a 5×5 one, outer ring less inner.

use std::path::Path;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use image::{GrayImage, RgbImage};

use super::super::SdError;
use super::super::kernels::Conv2d;
use super::super::upscaler;
use super::depthwise::Depthwise;
use super::{picture_tensor, soft_edge_bytes};

/// A pixel-difference convolution's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Difference {
    /// Central: each tap less the centre.
    Central,
    /// Angular: each tap less its clockwise neighbour.
    Angular,
    /// Radial: the outer ring of a 5×5 window less the inner one.
    Radial,
    /// A plain convolution.
    Vanilla,
}

/// `carv4`: the kind of the first convolution and of each of the 15 blocks.
const CARV4: [Difference; 16] = {
    use Difference::{Angular as A, Central as C, Radial as R, Vanilla as V};
    [C, A, R, V, C, A, R, V, C, A, R, V, C, A, R, V]
};

/// The blocks' names, in order, and whether each opens a stage at half the size.
const BLOCKS: [(&str, bool); 15] = [
    ("block1_1", false),
    ("block1_2", false),
    ("block1_3", false),
    ("block2_1", true),
    ("block2_2", false),
    ("block2_3", false),
    ("block2_4", false),
    ("block3_1", true),
    ("block3_2", false),
    ("block3_3", false),
    ("block3_4", false),
    ("block4_1", true),
    ("block4_2", false),
    ("block4_3", false),
    ("block4_4", false),
];

/// The plain kernel `(out, in, k, k)` and padding of a pixel-difference convolution with the
/// stored 3×3 `weight`.
fn converted(kind: Difference, weight: &Tensor) -> Result<(Tensor, usize)> {
    let (out, inputs, kh, kw) = weight.dims4()?;
    if (kh, kw) != (3, 3) {
        candle_core::bail!("a pixel-difference convolution is 3×3, not {kh}×{kw}");
    }
    let taps = weight
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let (size, kernel): (usize, Vec<f32>) = match kind {
        Difference::Vanilla => return Ok((weight.clone(), 1)),
        Difference::Central => (
            3,
            taps.chunks_exact(9)
                .flat_map(|k| {
                    let sum: f32 = k.iter().sum();
                    let mut k = k.to_vec();
                    k[4] -= sum;
                    k
                })
                .collect(),
        ),
        Difference::Angular => {
            const CLOCKWISE: [usize; 9] = [3, 0, 1, 6, 4, 2, 7, 8, 5];
            (
                3,
                taps.chunks_exact(9)
                    .flat_map(|k| (0..9).map(move |i| k[i] - k[CLOCKWISE[i]]))
                    .collect(),
            )
        }
        Difference::Radial => {
            const OUTER: [usize; 8] = [0, 2, 4, 10, 14, 20, 22, 24];
            const INNER: [usize; 8] = [6, 7, 8, 11, 13, 16, 17, 18];
            (
                5,
                taps.chunks_exact(9)
                    .flat_map(|k| {
                        let mut wide = [0f32; 25];
                        for (j, &w) in k[1..].iter().enumerate() {
                            wide[OUTER[j]] = w;
                            wide[INNER[j]] = -w;
                        }
                        wide
                    })
                    .collect(),
            )
        }
    };
    let kernel = Tensor::from_vec(kernel, (out, inputs, size, size), weight.device())?;
    Ok((kernel.to_dtype(weight.dtype())?, size / 2))
}

/// One block: the depthwise pixel-difference convolution, ReLU and 1×1 convolution, added to
/// its input (max-pooled and widened by `shortcut` when the block opens a stage).
struct Block {
    depthwise: Depthwise,
    pointwise: Conv2d,
    shortcut: Option<Conv2d>,
}

impl Block {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = match self.shortcut {
            Some(_) => xs.max_pool2d(2)?,
            None => xs.clone(),
        };
        let ys = self
            .pointwise
            .forward(&self.depthwise.forward(&xs)?.relu()?)?;
        match &self.shortcut {
            Some(shortcut) => ys + shortcut.forward(&xs)?,
            None => ys + xs,
        }
    }
}

/// A stage's way to its edge map: the dilation module and attention when the file has them,
/// then the 1×1 reduction.
struct Side {
    /// ReLU, 1×1 convolution, then the sum of four 3×3 convolutions dilated 5, 7, 9 and 11.
    dilation: Option<(Conv2d, Vec<Tensor>)>,
    /// The input times the sigmoid of a 1×1 then a 3×3 convolution of its ReLU.
    attention: Option<(Conv2d, Conv2d)>,
    reduce: Conv2d,
}

/// The dilation of each of the dilation module's four convolutions.
const DILATIONS: [usize; 4] = [5, 7, 9, 11];

impl Side {
    fn new(vb: &VarBuilder, i: usize, width: usize) -> Result<Self> {
        let dilation = if vb.contains_tensor(&format!("dilations.{i}.conv1.weight")) {
            let vb = vb.pp(format!("dilations.{i}"));
            let wide = vb.get_unchecked_dtype("conv1.weight", DType::F32)?.dim(0)?;
            let conv = Conv2d::new(vb.pp("conv1"), width, wide, 1, 1, 0)?;
            let dilated = (1..=DILATIONS.len())
                .map(|j| vb.get((wide, wide, 3, 3), &format!("conv2_{j}.weight")))
                .collect::<Result<Vec<_>>>()?;
            Some((conv, dilated))
        } else {
            None
        };
        let width = match &dilation {
            Some((_, dilated)) => dilated[0].dim(0)?,
            None => width,
        };
        let attention = if vb.contains_tensor(&format!("attentions.{i}.conv1.weight")) {
            let vb = vb.pp(format!("attentions.{i}"));
            Some((
                Conv2d::new(vb.pp("conv1"), width, 4, 1, 1, 0)?,
                Conv2d::without_bias(vb.pp("conv2"), 4, 1, 3, 1, 1)?,
            ))
        } else {
            None
        };
        Ok(Self {
            dilation,
            attention,
            reduce: Conv2d::new(vb.pp(format!("conv_reduces.{i}.conv")), width, 1, 1, 1, 0)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = xs.clone();
        if let Some((conv, dilated)) = &self.dilation {
            let ys = conv.forward(&xs.relu()?)?;
            let mut sum: Option<Tensor> = None;
            for (kernel, &d) in dilated.iter().zip(&DILATIONS) {
                let one = ys.conv2d(kernel, d, 1, d, 1)?;
                sum = Some(match sum {
                    Some(sum) => (sum + one)?,
                    None => one,
                });
            }
            xs = sum.unwrap_or(ys);
        }
        if let Some((conv1, conv2)) = &self.attention {
            let gate = candle_nn::ops::sigmoid(&conv2.forward(&conv1.forward(&xs.relu()?)?)?)?;
            xs = xs.broadcast_mul(&gate)?;
        }
        self.reduce.forward(&xs)
    }
}

/// A loaded PiDiNet.
pub struct PidiNet {
    first: Conv2d,
    blocks: Vec<Block>,
    sides: Vec<Side>,
    classifier: Conv2d,
    device: Device,
}

impl PidiNet {
    /// Loads `table5_pidinet.pth` (its `state_dict`, `module.` names or not; or the same names
    /// in safetensors) onto `device`; its widths are read from the file.
    pub fn load(path: &Path, device: &Device) -> std::result::Result<Self, SdError> {
        let tensors = upscaler::read(path)?;
        let width = tensors
            .get("init_block.weight")
            .filter(|_| tensors.contains_key("classifier.weight"))
            .and_then(|w| w.dims().first().copied())
            .ok_or_else(|| SdError::Invalid {
                path: path.to_path_buf(),
                message: "not a PiDiNet soft-edge annotator (`table5_pidinet.pth`): it has no `init_block.weight` and `classifier.weight`".into(),
            })?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Self::new(&vb, width).map_err(|source| SdError::Weights {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The network `width` channels wide in its first stage.
    fn new(vb: &VarBuilder, width: usize) -> Result<Self> {
        let (kernel, padding) =
            converted(CARV4[0], &vb.get((width, 3, 3, 3), "init_block.weight")?)?;
        let first = Conv2d::from_weights(
            kernel,
            Tensor::zeros(width, DType::F32, vb.device())?,
            padding,
        );
        let mut blocks = Vec::with_capacity(BLOCKS.len());
        let mut widths = Vec::new();
        let mut channels = width;
        for (&(name, opens), &kind) in BLOCKS.iter().zip(&CARV4[1..]) {
            let vb = vb.pp(name);
            let (c_in, c_out) = match (opens, name) {
                (true, "block4_1") | (false, _) => (channels, channels),
                (true, _) => (channels, 2 * channels),
            };
            if opens {
                widths.push(channels);
            }
            let stored = vb.get((c_in, 1, 3, 3), "conv1.weight")?;
            let (kernel, padding) = converted(kind, &stored)?;
            blocks.push(Block {
                depthwise: Depthwise::new(kernel, padding),
                pointwise: Conv2d::without_bias(vb.pp("conv2"), c_in, c_out, 1, 1, 0)?,
                shortcut: opens
                    .then(|| Conv2d::new(vb.pp("shortcut"), c_in, c_out, 1, 1, 0))
                    .transpose()?,
            });
            channels = c_out;
        }
        widths.push(channels);
        let sides = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| Side::new(vb, i, w))
            .collect::<Result<_>>()?;
        Ok(Self {
            first,
            blocks,
            sides,
            classifier: Conv2d::new(vb.pp("classifier"), widths.len(), 1, 1, 1, 0)?,
            device: vb.device().clone(),
        })
    }

    /// The soft edges of `picture` in 0–1, `(h, w)`: the classifier's sigmoid over the four
    /// stages' maps, each resized to the picture.
    pub fn edge_map(&self, picture: &RgbImage) -> Result<Tensor> {
        let rgb = picture_tensor(picture, 1.0 / 255.0, &self.device)?;
        let (_, _, h, w) = rgb.dims4()?;
        let bgr = Tensor::new(&[2u32, 1, 0], &self.device)?;
        let mut xs = self
            .first
            .forward(&rgb.contiguous()?.index_select(&bgr, 1)?)?;
        let mut stages = Vec::with_capacity(self.sides.len());
        for block in &self.blocks {
            if block.shortcut.is_some() {
                stages.push(xs.clone());
            }
            xs = block.forward(&xs)?;
        }
        stages.push(xs);
        let maps = stages
            .iter()
            .zip(&self.sides)
            .map(|(xs, side)| side.forward(xs)?.upsample_bilinear2d(h, w, false))
            .collect::<Result<Vec<_>>>()?;
        let edge = self.classifier.forward(&Tensor::cat(&maps, 1)?)?;
        candle_nn::ops::sigmoid(&edge)?.squeeze(0)?.squeeze(0)
    }

    /// `softedge_pidinet`'s control image of `picture` (white edges on black, at its size);
    /// with `safe` (`softedge_pidisafe`) the edges quantised to three steps.
    pub fn soft_edges(&self, picture: &RgbImage, safe: bool) -> Result<GrayImage> {
        soft_edge_bytes(&self.edge_map(picture)?, safe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(values: [f32; 9]) -> Tensor {
        Tensor::from_vec(values.to_vec(), (1, 1, 3, 3), &Device::Cpu).unwrap()
    }

    fn taps(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// The paper's conversions, on a kernel whose taps are their own indices.
    #[test]
    fn pixel_differences_become_plain_kernels() {
        let k = kernel([0., 1., 2., 3., 4., 5., 6., 7., 8.]);
        let (central, pad) = converted(Difference::Central, &k).unwrap();
        assert_eq!(pad, 1);
        assert_eq!(taps(&central), [0., 1., 2., 3., -32., 5., 6., 7., 8.]);
        let (angular, _) = converted(Difference::Angular, &k).unwrap();
        assert_eq!(taps(&angular), [-3., 1., 1., -3., 0., 3., -1., -1., 3.]);
        let (radial, pad) = converted(Difference::Radial, &k).unwrap();
        assert_eq!(pad, 2);
        #[rustfmt::skip]
        let expected = [
            1., 0., 2., 0., 3.,
            0., -1., -2., -3., 0.,
            4., -4., 0., -5., 5.,
            0., -6., -7., -8., 0.,
            6., 0., 7., 0., 8.,
        ];
        assert_eq!(taps(&radial), expected);
        let (vanilla, _) = converted(Difference::Vanilla, &k).unwrap();
        assert_eq!(taps(&vanilla), taps(&k));
    }
}
