//! Anime line art (A1111's `lineart_anime`; the file `netG.pth` of `lllyasviel/Annotators`) as
//! `controlnet_aux`'s `LineartAnimeDetector` makes it: pix2pix's U-Net generator — each level a
//! 4×4 stride-2 convolution down, the levels below, and a 4×4 stride-2 transposed convolution
//! up, its output beside its input (LeakyReLU 0.2 before going down, ReLU before coming up,
//! instance norms but on the outermost and innermost downs), `tanh` out — on the picture
//! resized (bicubic) to multiples of 256, its map resized back; the control image is its
//! inverse (white lines on black).

use std::path::Path;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use image::{GrayImage, RgbImage};

use super::super::SdError;
use super::super::kernels::Conv2d;
use super::super::upscaler;
use super::color::{bicubic, bicubic_map};
use super::lineart::instance_norm;
use super::up_conv::UpConv;
use super::{inverted_lines, picture_tensor};

/// The sides the network takes are multiples of this (8 halvings).
const MULTIPLE: u32 = 256;

/// One level below the outermost: down, the levels below it (none at the innermost), up.
struct Level {
    down: Conv2d,
    inner: Option<Box<Level>>,
    up: UpConv,
}

impl Level {
    /// The level whose `nn.Sequential` is at `prefix` (`….model`), and those below it.
    fn new(vb: &VarBuilder, prefix: &str) -> Result<Self> {
        let down_shape = vb.get_unchecked_dtype(&format!("{prefix}.1.weight"), DType::F32)?;
        let (inner_nc, outer_nc, _, _) = down_shape.dims4()?;
        let down = Conv2d::new(vb.pp(format!("{prefix}.1")), outer_nc, inner_nc, 4, 2, 1)?;
        let below = format!("{prefix}.3.model");
        if vb.contains_tensor(&format!("{below}.1.weight")) {
            let inner = Level::new(vb, &below)?;
            let up = UpConv::new(vb.pp(format!("{prefix}.5")), 2 * inner_nc, outer_nc, 4)?;
            Ok(Self {
                down,
                inner: Some(Box::new(inner)),
                up,
            })
        } else {
            let up = UpConv::new(vb.pp(format!("{prefix}.3")), inner_nc, outer_nc, 4)?;
            Ok(Self {
                down,
                inner: None,
                up,
            })
        }
    }

    /// `xs` beside what the level makes of it.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut ys = self.down.forward(&xs.maximum(&(xs * 0.2)?)?)?;
        if let Some(inner) = &self.inner {
            ys = inner.forward(&instance_norm(&ys)?)?;
        }
        let ys = instance_norm(&self.up.forward(&ys.relu()?)?)?;
        Tensor::cat(&[xs, &ys], 1)
    }
}

/// A loaded anime line-art generator (`netG.pth`).
pub struct LineartAnime {
    down: Conv2d,
    inner: Level,
    up: UpConv,
    device: Device,
}

impl LineartAnime {
    /// Loads `netG.pth` (`module.` names or not; or the same names in safetensors) onto
    /// `device`; its widths and depth are read from the file.
    pub fn load(path: &Path, device: &Device) -> std::result::Result<Self, SdError> {
        let tensors = upscaler::read(path)?;
        let first = tensors
            .get("model.model.0.weight")
            .filter(|w| w.dims().get(1) == Some(&3) && tensors.contains_key("model.model.3.weight"))
            .map(|w| w.dims()[0])
            .ok_or_else(|| SdError::Invalid {
                path: path.to_path_buf(),
                message: "not an anime line-art annotator (`netG.pth`): it has no `model.model.0.weight` taking 3 channels and `model.model.3.weight`".into(),
            })?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let load = || -> Result<Self> {
            Ok(Self {
                down: Conv2d::new(vb.pp("model.model.0"), 3, first, 4, 2, 1)?,
                inner: Level::new(&vb, "model.model.1.model")?,
                up: UpConv::new(vb.pp("model.model.3"), 2 * first, 1, 4)?,
                device: device.clone(),
            })
        };
        load().map_err(|source| SdError::Weights {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The generator's map of `picture`, 0–255 `(h, w)`: dark lines on white. The picture is
    /// resized (OpenCV's bicubic) to the next multiples of 256 for the network and its map back.
    pub fn line_map(&self, picture: &RgbImage) -> Result<Tensor> {
        let (w, h) = picture.dimensions();
        let (wn, hn) = (
            w.div_ceil(MULTIPLE) * MULTIPLE,
            h.div_ceil(MULTIPLE) * MULTIPLE,
        );
        let fed = if (wn, hn) == (w, h) {
            picture.clone()
        } else {
            bicubic(picture, wn, hn)
        };
        let xs = (picture_tensor(&fed, 1.0 / 127.5, &self.device)? - 1.0)?;
        let ys = self.inner.forward(&self.down.forward(&xs)?)?;
        let line = ((self.up.forward(&ys.relu()?)?.tanh()? * 127.5)? + 127.5)?
            .squeeze(0)?
            .squeeze(0)?;
        if (wn, hn) == (w, h) {
            return Ok(line);
        }
        let values = line.flatten_all()?.to_vec1::<f32>()?;
        let back = bicubic_map(&values, (wn, hn), (w, h));
        Tensor::from_vec(back, (h as usize, w as usize), &self.device)
    }

    /// `lineart_anime`'s control image of `picture`: white lines on black, at its size.
    pub fn lines(&self, picture: &RgbImage) -> Result<GrayImage> {
        inverted_lines(&self.line_map(picture)?, |v| v)
    }
}
