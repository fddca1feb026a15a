//! Depth (A1111's `depth_anything_v2`) by Depth Anything V2 (Yang et al. 2024), as its
//! repository's `infer_image` makes it and ComfyUI's preprocessor stretches it: the picture
//! resized (OpenCV's bicubic) so its shorter side is at least 518 and both are multiples of 14,
//! normalised with ImageNet's mean and deviation; DINOv2's ViT over its 14×14 patches (the
//! position grid resized bicubically to the patches, the features of four blocks taken); the
//! DPT head (each tap projected and resized to 4×, 2×, 1× and ½× the patch grid, fused from
//! the coarsest up, bilinear with corners aligned) to relative inverse depth at the network's
//! size; resized back to the picture (bilinear, corners aligned) and stretched from its least
//! to its most to 0–255: near is bright. The files are the release's
//! `depth_anything_v2_vits.pth`, `_vitb`, `_vitl` (or the same names in safetensors, as
//! A1111's `depth_anything_v2_vitl.safetensors`); the size is read from the file.
//!
//! The first Depth Anything (A1111's `depth_anything`, `depth_anything_vitl14.pth`) is the same
//! network in the same layout, taking the last four blocks; its `run.py` resizes the depth back
//! without aligning corners.
//!
//! A1111's extension differs from both releases in two ways: it feeds the network the
//! picture's BGR (it converts BGR to RGB on a picture that is already RGB), and resizes V2's
//! depth back without aligning corners.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};
use image::{GrayImage, RgbImage};

use super::super::SdError;
use super::super::bicubic;
use super::super::kernels::{Conv2d, Linear, Slopes, attention, gelu_erf};
use super::super::upscaler::{self, compact::pixel_shuffle};
use super::color::bicubic_map;
use super::to_gray;

/// The side of a patch, in pixels.
const PATCH: usize = 14;
/// The shorter side the picture is resized to (at least).
const SIDE: f64 = 518.0;
/// ImageNet's mean and standard deviation of R, G and B (0–1).
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];
/// The width of one attention head: every released size's.
const HEAD_WIDTH: usize = 64;

/// Which release: the two read the same files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DepthVersion {
    /// The first Depth Anything (A1111's `depth_anything`).
    V1,
    /// Depth Anything V2 (A1111's `depth_anything_v2`).
    V2,
}

impl DepthVersion {
    /// The blocks whose features the head takes, by the encoder's depth (ViT-S and ViT-B have
    /// 12 blocks, ViT-L 24, ViT-G 40): V2 spreads them, the first takes the last four.
    fn taps(self, depth: usize) -> Option<[usize; 4]> {
        match (self, depth) {
            (DepthVersion::V1, 12 | 24) => Some([depth - 4, depth - 3, depth - 2, depth - 1]),
            (DepthVersion::V2, 12) => Some([2, 5, 8, 11]),
            (DepthVersion::V2, 24) => Some([4, 11, 17, 23]),
            (DepthVersion::V2, 40) => Some([9, 19, 29, 39]),
            _ => None,
        }
    }
}

/// The size (height, width) the network sees an `h`×`w` picture at: scaled so both sides are
/// at least 518, each rounded to a multiple of 14 (halves to even, as NumPy rounds), up to one
/// where that falls short.
pub fn network_size(h: u32, w: u32) -> (usize, usize) {
    let (h, w) = (f64::from(h), f64::from(w));
    let scale = (SIDE / h).max(SIDE / w);
    let side = |x: f64| {
        let patches = (x / PATCH as f64).round_ties_even();
        let patches = if patches * (PATCH as f64) < SIDE {
            (x / PATCH as f64).ceil()
        } else {
            patches
        };
        patches as usize * PATCH
    };
    (side(scale * h), side(scale * w))
}

/// One transformer block: attention and an MLP, each after a layer norm and added to its input
/// (the layer scales folded into `proj` and `fc2` at load).
struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl Block {
    fn new(vb: VarBuilder, width: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            norm1: candle_nn::layer_norm(width, 1e-6, vb.pp("norm1"))?,
            qkv: Linear::new(vb.pp("attn.qkv"), width, 3 * width, true)?,
            proj: Linear::new(vb.pp("attn.proj"), width, width, true)?,
            norm2: candle_nn::layer_norm(width, 1e-6, vb.pp("norm2"))?,
            fc1: Linear::new(vb.pp("mlp.fc1"), width, hidden, true)?,
            fc2: Linear::new(vb.pp("mlp.fc2"), hidden, width, true)?,
            heads: width / HEAD_WIDTH,
        })
    }

    /// `xs` `(1, tokens, width)` through the block.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, c) = xs.dims3()?;
        let head = c / self.heads;
        let qkv = self
            .qkv
            .forward(&self.norm1.forward(xs)?)?
            .reshape((b, n, 3, self.heads, head))?
            .permute((2, 0, 3, 1, 4))?;
        let part = |i: usize| qkv.get(i)?.contiguous()?.reshape((b * self.heads, n, head));
        let attended = attention(&part(0)?, &part(1)?, &part(2)?, (head as f64).powf(-0.5))?
            .reshape((b, self.heads, n, head))?
            .transpose(1, 2)?
            .reshape((b, n, c))?;
        let xs = self.proj.forward_residual(&attended, xs)?;
        let hidden = gelu_erf(&self.fc1.forward(&self.norm2.forward(&xs)?)?)?;
        self.fc2.forward_residual(&hidden, &xs)
    }
}

/// DINOv2's ViT: the patches (a 14×14 stride-14 convolution, as one product) after a class
/// token, the position grid added, the blocks.
struct Encoder {
    /// The patch convolution as `(width, 3·14·14)`.
    patches: Linear,
    /// The class token plus its position, `(1, 1, width)`.
    class: Tensor,
    /// The patches' positions as stored, `(1, width, m, m)`.
    grid: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    taps: [usize; 4],
}

impl Encoder {
    /// The positions of a `ph`×`pw` patch grid `(1, ph·pw, width)`: the stored grid, or that grid
    /// resized as DINOv2 resizes it (bicubic by a scale factor of `(p + 0.1) / m`).
    fn positions(&self, ph: usize, pw: usize) -> Result<Tensor> {
        let (_, width, m, _) = self.grid.dims4()?;
        let grid = if ph == m && pw == m {
            self.grid.clone()
        } else {
            let step = |p: usize| (m as f64 / (p as f64 + 0.1)) as f32;
            bicubic::resize_in_steps(&self.grid, (ph, pw), (step(ph), step(pw)))?
        };
        grid.reshape((1, width, ph * pw))?.transpose(1, 2)
    }

    /// The normalised features of the four tapped blocks of `xs` `(1, 3, 14·ph, 14·pw)`, each
    /// `(1, ph·pw, width)` (the class token dropped).
    fn features(&self, xs: &Tensor) -> Result<Vec<Tensor>> {
        let (_, _, h, w) = xs.dims4()?;
        let (ph, pw) = (h / PATCH, w / PATCH);
        let patches = xs
            .reshape((3, ph, PATCH, pw, PATCH))?
            .permute((1, 3, 0, 2, 4))?
            .contiguous()?
            .reshape((1, ph * pw, 3 * PATCH * PATCH))?;
        let tokens = (self.patches.forward(&patches)? + self.positions(ph, pw)?)?;
        let mut xs = Tensor::cat(&[&self.class, &tokens], 1)?;
        let mut taken = Vec::with_capacity(4);
        for (i, block) in self.blocks.iter().enumerate() {
            xs = block.forward(&xs)?;
            if self.taps.contains(&i) {
                taken.push(self.norm.forward(&xs)?.narrow(1, 1, ph * pw)?);
            }
        }
        Ok(taken)
    }
}

/// A transposed convolution whose kernel is its stride (each input pixel to one `k`×`k`
/// block): a 1×1 convolution to `k²` times the channels, pixel-shuffled.
struct BlockUp {
    conv: Conv2d,
    k: usize,
}

impl BlockUp {
    /// Reads `weight` `(in, out, k, k)` and `bias` `(out)` from `vb`.
    fn new(vb: VarBuilder, channels: usize, k: usize) -> Result<Self> {
        let weight = vb
            .get((channels, channels, k, k), "weight")?
            .permute((1, 2, 3, 0))?
            .contiguous()?
            .reshape((channels * k * k, channels, 1, 1))?;
        let bias = vb
            .get(channels, "bias")?
            .reshape((channels, 1))?
            .broadcast_as((channels, k * k))?
            .contiguous()?
            .reshape(channels * k * k)?;
        Ok(Self {
            conv: Conv2d::from_weights(weight, bias, 0),
            k,
        })
    }
}

impl Module for BlockUp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        pixel_shuffle(&self.conv.forward(xs)?, self.k)
    }
}

/// How the head brings a tap's projection to its level's size.
enum Resize {
    Up(BlockUp),
    Same,
    Down(Conv2d),
}

/// A residual unit: ReLU, 3×3, ReLU, 3×3, added to its input.
struct Residual {
    conv1: Conv2d,
    conv2: Conv2d,
}

impl Residual {
    fn new(vb: VarBuilder, features: usize) -> Result<Self> {
        Ok(Self {
            conv1: Conv2d::new(vb.pp("conv1"), features, features, 3, 1, 1)?,
            conv2: Conv2d::new(vb.pp("conv2"), features, features, 3, 1, 1)?,
        })
    }
}

impl Module for Residual {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let hidden = self
            .conv1
            .forward_leaky(&xs.relu()?, &Slopes::Uniform(0.0))?;
        self.conv2.forward(&hidden)? + xs
    }
}

/// A fusion block: the level's features through a residual unit added to the path from below,
/// another residual unit, resized up, a 1×1 convolution.
struct Fusion {
    unit1: Residual,
    unit2: Residual,
    out: Conv2d,
}

impl Fusion {
    fn new(vb: VarBuilder, features: usize) -> Result<Self> {
        Ok(Self {
            unit1: Residual::new(vb.pp("resConfUnit1"), features)?,
            unit2: Residual::new(vb.pp("resConfUnit2"), features)?,
            out: Conv2d::new(vb.pp("out_conv"), features, features, 1, 1, 0)?,
        })
    }

    /// `path` (plus `level` through the first unit) to `size` (twice its own when none).
    fn forward(
        &self,
        path: &Tensor,
        level: Option<&Tensor>,
        size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let path = match level {
            Some(level) => (path + self.unit1.forward(level)?)?,
            None => path.clone(),
        };
        let path = self.unit2.forward(&path)?;
        let (_, _, h, w) = path.dims4()?;
        let (h, w) = size.unwrap_or((2 * h, 2 * w));
        self.out.forward(&path.upsample_bilinear2d(h, w, true)?)
    }
}

/// The DPT head: the taps projected and resized, each level's 3×3, fused from the coarsest up,
/// then to one map at the network's size.
struct Head {
    projects: Vec<Conv2d>,
    resizes: Vec<Resize>,
    levels: Vec<Conv2d>,
    fusions: Vec<Fusion>,
    out1: Conv2d,
    out2: Conv2d,
    out3: Conv2d,
}

impl Head {
    fn new(vb: VarBuilder, width: usize, channels: [usize; 4], features: usize) -> Result<Self> {
        let resize = vb.pp("resize_layers");
        let scratch = vb.pp("scratch");
        let out2 = scratch.pp("output_conv2");
        Ok(Self {
            projects: (0..4)
                .map(|i| Conv2d::new(vb.pp(format!("projects.{i}")), width, channels[i], 1, 1, 0))
                .collect::<Result<_>>()?,
            resizes: vec![
                Resize::Up(BlockUp::new(resize.pp("0"), channels[0], 4)?),
                Resize::Up(BlockUp::new(resize.pp("1"), channels[1], 2)?),
                Resize::Same,
                Resize::Down(Conv2d::new(
                    resize.pp("3"),
                    channels[3],
                    channels[3],
                    3,
                    2,
                    1,
                )?),
            ],
            levels: (0..4)
                .map(|i| {
                    let vb = scratch.pp(format!("layer{}_rn", i + 1));
                    Conv2d::without_bias(vb, channels[i], features, 3, 1, 1)
                })
                .collect::<Result<_>>()?,
            fusions: (0..4)
                .map(|i| Fusion::new(scratch.pp(format!("refinenet{}", i + 1)), features))
                .collect::<Result<_>>()?,
            out1: Conv2d::new(scratch.pp("output_conv1"), features, features / 2, 3, 1, 1)?,
            out2: Conv2d::new(out2.pp("0"), features / 2, 32, 3, 1, 1)?,
            out3: Conv2d::new(out2.pp("2"), 32, 1, 1, 1, 0)?,
        })
    }

    /// The depth `(14·ph, 14·pw)` of the taps' features `(1, ph·pw, width)`.
    fn forward(&self, taps: &[Tensor], (ph, pw): (usize, usize)) -> Result<Tensor> {
        let mut levels = Vec::with_capacity(4);
        for (i, tap) in taps.iter().enumerate() {
            let width = tap.dim(2)?;
            let xs = tap.transpose(1, 2)?.reshape((1, width, ph, pw))?;
            let xs = self.projects[i].forward(&xs)?;
            let xs = match &self.resizes[i] {
                Resize::Up(up) => up.forward(&xs)?,
                Resize::Same => xs,
                Resize::Down(conv) => conv.forward(&xs)?,
            };
            levels.push(self.levels[i].forward(&xs)?);
        }
        let size = |t: &Tensor| -> Result<(usize, usize)> {
            let (_, _, h, w) = t.dims4()?;
            Ok((h, w))
        };
        let mut path = self.fusions[3].forward(&levels[3], None, Some(size(&levels[2])?))?;
        for i in (0..3).rev() {
            let to = if i > 0 {
                Some(size(&levels[i - 1])?)
            } else {
                None
            };
            path = self.fusions[i].forward(&path, Some(&levels[i]), to)?;
        }
        let relu = Slopes::Uniform(0.0);
        let out = self
            .out1
            .forward(&path)?
            .upsample_bilinear2d(PATCH * ph, PATCH * pw, true)?;
        let out = self.out2.forward_leaky(&out, &relu)?;
        self.out3.forward_leaky(&out, &relu)?.squeeze(0)?.squeeze(0)
    }
}

/// A loaded Depth Anything network.
pub struct DepthAnything {
    encoder: Encoder,
    head: Head,
    /// Whether the depth is resized back to the picture with corners aligned (V2's release).
    aligned: bool,
    device: Device,
}

impl DepthAnything {
    /// Loads `depth_anything_v2_vits.pth` (`_vitb`, `_vitl`; or the same names in safetensors;
    /// for [`DepthVersion::V1`] `depth_anything_vits14.pth`…) onto `device`, in f32, to run as
    /// `version`; its widths and depth are read from the file.
    pub fn load(
        path: &Path,
        version: DepthVersion,
        device: &Device,
    ) -> std::result::Result<Self, SdError> {
        let invalid = |message: String| SdError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut tensors = upscaler::read(path)?;
        let dims = |tensors: &HashMap<String, Tensor>, name: &str| {
            tensors.get(name).map(|t| t.dims().to_vec())
        };
        let (width, m) = match (
            dims(&tensors, "pretrained.cls_token").as_deref(),
            dims(&tensors, "pretrained.pos_embed").as_deref(),
        ) {
            (Some(&[1, 1, width]), Some(&[1, positions, w])) if w == width => {
                let m = ((positions - 1) as f64).sqrt() as usize;
                if m * m + 1 != positions {
                    return Err(invalid(format!(
                        "`pretrained.pos_embed` holds {positions} positions: not a square grid and a class token"
                    )));
                }
                (width, m)
            }
            _ => {
                return Err(invalid(
                    "not a Depth Anything network: it has no `pretrained.cls_token` `(1, 1, width)` and `pretrained.pos_embed` beside it".into(),
                ));
            }
        };
        if width % HEAD_WIDTH != 0 {
            return Err(invalid(format!(
                "its width is {width}: Depth Anything's heads are {HEAD_WIDTH} wide"
            )));
        }
        let depth = (0..)
            .take_while(|i| tensors.contains_key(&format!("pretrained.blocks.{i}.norm1.weight")))
            .count();
        let taps = version.taps(depth).ok_or_else(|| {
            invalid(format!(
                "its encoder has {depth} blocks: Depth Anything's have 12 (ViT-S, ViT-B), 24 (ViT-L) or, in V2 alone, 40 (ViT-G)"
            ))
        })?;
        if tensors.contains_key("pretrained.blocks.0.mlp.w12.weight") {
            return Err(invalid(
                "its blocks have SwiGLU feed-forwards (ViT-G): not read yet".into(),
            ));
        }
        let hidden = dims(&tensors, "pretrained.blocks.0.mlp.fc1.weight")
            .and_then(|d| d.first().copied())
            .ok_or_else(|| invalid("it has no `pretrained.blocks.0.mlp.fc1.weight`".into()))?;
        let channel = |i: usize| {
            dims(&tensors, &format!("depth_head.projects.{i}.weight"))
                .and_then(|d| d.first().copied())
                .ok_or_else(|| invalid(format!("it has no `depth_head.projects.{i}.weight`")))
        };
        let channels = [channel(0)?, channel(1)?, channel(2)?, channel(3)?];
        let features = dims(&tensors, "depth_head.scratch.layer1_rn.weight")
            .and_then(|d| d.first().copied())
            .ok_or_else(|| invalid("it has no `depth_head.scratch.layer1_rn.weight`".into()))?;
        fold_layer_scales(&mut tensors, depth).map_err(|source| SdError::Weights {
            path: path.to_path_buf(),
            source,
        })?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let load = || -> Result<Self> {
            let pretrained = vb.pp("pretrained");
            let class = (pretrained.get((1, 1, width), "cls_token")?
                + pretrained
                    .get((1, m * m + 1, width), "pos_embed")?
                    .narrow(1, 0, 1)?)?;
            let grid = pretrained
                .get((1, m * m + 1, width), "pos_embed")?
                .narrow(1, 1, m * m)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((1, width, m, m))?;
            let encoder = Encoder {
                patches: Linear::new(
                    pretrained.pp("patch_embed.proj"),
                    3 * PATCH * PATCH,
                    width,
                    true,
                )?,
                class,
                grid,
                blocks: (0..depth)
                    .map(|i| Block::new(pretrained.pp(format!("blocks.{i}")), width, hidden))
                    .collect::<Result<_>>()?,
                norm: candle_nn::layer_norm(width, 1e-6, pretrained.pp("norm"))?,
                taps,
            };
            Ok(Self {
                encoder,
                head: Head::new(vb.pp("depth_head"), width, channels, features)?,
                aligned: version == DepthVersion::V2,
                device: device.clone(),
            })
        };
        load().map_err(|source| SdError::Weights {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The relative inverse depth of `picture` at its size `(h, w)`: larger is nearer.
    pub fn depth_map(&self, picture: &RgbImage) -> Result<Tensor> {
        let (w, h) = picture.dimensions();
        if w == 0 || h == 0 {
            candle_core::bail!("Depth Anything: an empty {w}×{h} picture");
        }
        let (nh, nw) = network_size(h, w);
        let xs = self.normalised(picture, (nh, nw))?;
        let taps = self.encoder.features(&xs)?;
        let depth = self.head.forward(&taps, (nh / PATCH, nw / PATCH))?.relu()?;
        depth
            .reshape((1, 1, nh, nw))?
            .upsample_bilinear2d(h as usize, w as usize, self.aligned)?
            .squeeze(0)?
            .squeeze(0)
    }

    /// `depth_anything_v2`'s (or `depth_anything`'s) control image of `picture`: its depth
    /// stretched to 0–255 (black where the depth is flat).
    pub fn depth(&self, picture: &RgbImage) -> Result<GrayImage> {
        let map = self.depth_map(picture)?;
        let low = map.min_all()?.to_scalar::<f32>()?;
        let high = map.max_all()?.to_scalar::<f32>()?;
        let span = high - low;
        to_gray(&map, |v| {
            if span > 0.0 {
                (v - low) / span * 255.0
            } else {
                0.0
            }
        })
    }

    /// `picture` resized to `(nh, nw)` (OpenCV's bicubic of its 0–1 values) and normalised, as
    /// `(1, 3, nh, nw)` on the network's device.
    fn normalised(&self, picture: &RgbImage, (nh, nw): (usize, usize)) -> Result<Tensor> {
        let (w, h) = picture.dimensions();
        let mut planes = Vec::with_capacity(3 * nh * nw);
        for c in 0..3 {
            let plane: Vec<f32> = picture
                .pixels()
                .map(|p| f32::from(p.0[c]) / 255.0)
                .collect();
            let resized = bicubic_map(&plane, (w, h), (nw as u32, nh as u32));
            planes.extend(resized.into_iter().map(|v| (v - MEAN[c]) / STD[c]));
        }
        Tensor::from_vec(planes, (1, 3, nh, nw), &self.device)
    }
}

/// Each block's layer scales (`ls1.gamma`, `ls2.gamma`) multiplied into the projection before
/// them (`attn.proj`, `mlp.fc2`), and the patch convolution flattened to a matrix.
fn fold_layer_scales(tensors: &mut HashMap<String, Tensor>, depth: usize) -> Result<()> {
    for i in 0..depth {
        let block = format!("pretrained.blocks.{i}");
        for (scale, layer) in [("ls1", "attn.proj"), ("ls2", "mlp.fc2")] {
            let Some(gamma) = tensors.remove(&format!("{block}.{scale}.gamma")) else {
                continue;
            };
            let gamma = gamma.to_dtype(DType::F32)?;
            for part in ["weight", "bias"] {
                let name = format!("{block}.{layer}.{part}");
                if let Some(t) = tensors.get(&name) {
                    let t = t.to_dtype(DType::F32)?;
                    let scaled = if part == "weight" {
                        t.broadcast_mul(&gamma.unsqueeze(1)?)?
                    } else {
                        (t * &gamma)?
                    };
                    tensors.insert(name, scaled);
                }
            }
        }
    }
    let name = "pretrained.patch_embed.proj.weight";
    if let Some(weight) = tensors.get(name) {
        let flat = weight.flatten_from(1)?;
        tensors.insert(name.to_string(), flat);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_the_picture_as_the_release_does() {
        // Depth Anything V2's `Resize(518, 518, keep_aspect_ratio, ensure_multiple_of=14,
        // "lower_bound")`: the shorter side to 518, the other in proportion, to multiples of 14.
        assert_eq!(network_size(512, 512), (518, 518));
        assert_eq!(network_size(64, 128), (518, 1036));
        // 768 × 518/512 = 777 = 55.5 patches: NumPy rounds the half to 56.
        assert_eq!(network_size(512, 768), (518, 784));
        // The shorter side 700 → 518; 1000 → 740 = 52.9 patches → 742.
        assert_eq!(network_size(1000, 700), (742, 518));
        assert_eq!(network_size(1, 1), (518, 518));
    }

    #[test]
    fn block_transposed_convolutions_match_candles() {
        let device = Device::Cpu;
        let (c, k) = (3, 2);
        let weight = Tensor::randn(0f32, 1.0, (c, c, k, k), &device).unwrap();
        let bias = Tensor::randn(0f32, 1.0, c, &device).unwrap();
        let xs = Tensor::randn(0f32, 1.0, (1, c, 4, 5), &device).unwrap();
        let vb = VarBuilder::from_tensors(
            HashMap::from([
                ("weight".into(), weight.clone()),
                ("bias".into(), bias.clone()),
            ]),
            DType::F32,
            &device,
        );
        let ours = BlockUp::new(vb, c, k).unwrap().forward(&xs).unwrap();
        let theirs = xs
            .conv_transpose2d(&weight, 0, 0, k, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, c, 1, 1)).unwrap())
            .unwrap();
        let gap = super::super::super::max_abs_diff(&ours, &theirs);
        assert!(gap < 1e-5, "{gap}");
    }
}
