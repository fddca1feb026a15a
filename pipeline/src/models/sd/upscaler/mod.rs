//! Image upscaling models for the hires pass, read from the `.pth` and `.safetensors` files
//! model sites share as spandrel (what ComfyUI and A1111 load them with) reads them: ESRGAN's
//! RRDBNet in its original, BSRGAN and Real-ESRGAN layouts (4x-UltraSharp, RealESRGAN_x4plus,
//! x2plus…; see [`rrdb`]), Real-ESRGAN's SRVGGNetCompact ([`compact`]), the light
//! convolutional SPAN ([`span`]) and RealPLKSR (with the original PLKSR, [`plksr`]) most community upscalers are now
//! trained as, SwinIR's and Swin2SR's real-world, classical and lightweight SR networks
//! ([`swinir`]), HAT
//! ([`hat`]), DAT ([`dat`]) and OmniSR ([`omnisr`]). A Real-ESRGAN, SwinIR, HAT or DAT release's `params_ema` (or
//! `params`) entry holds its weights, as do the trainers' saves of SPAN and RealPLKSR. Pixels
//! are RGB in [0, 1], as spandrel takes them.
//!
//! Large images run in tiles, each read with a margin of context around it that is then
//! cut away, so the tiles meet without seams; a tileable image's margins wrap around.
//!
//! ```no_run
//! use autonomy_pipeline::models::sd::upscaler::Upscaler;
//! let upscaler = Upscaler::open("models/4x-UltraSharp.pth".as_ref(), &candle_core::Device::Cpu)?;
//! let pixels = candle_core::Tensor::zeros((1, 3, 64, 64), candle_core::DType::F32, &candle_core::Device::Cpu)?;
//! assert_eq!(upscaler.upscale(&pixels, false)?.dims(), [1, 3, 256, 256]);
//! # Ok::<(), autonomy_pipeline::models::sd::SdError>(())
//! ```

pub mod compact;
pub mod dat;
pub mod dysample;
pub mod hat;
pub mod omnisr;
pub mod plksr;
pub mod rrdb;
pub mod span;
pub mod swin;
pub mod swinir;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::SdError;
use super::pickle::PickleTensors;
use super::weights::{Store, is_pickle};

/// Sides of the tiles a large image is upscaled in, before their margins.
const TILE: usize = 192;
/// Context read around each tile and cut away after (input pixels).
const MARGIN: usize = 16;

/// An upscaler file to load with a model.
#[derive(Clone, Debug, PartialEq)]
pub struct UpscalerFile {
    /// Where it is.
    pub path: PathBuf,
    /// How the provenance manifest names it (the recipe's text).
    pub label: String,
}

/// The network of an upscaler file.
enum Network {
    Rrdb(rrdb::Rrdb),
    Compact(compact::Compact),
    Span(span::Span),
    Plksr(plksr::Plksr),
    SwinIr(swinir::SwinIr),
    Hat(hat::Hat),
    Dat(dat::Dat),
    OmniSr(omnisr::OmniSr),
}

impl Network {
    /// The smallest side an image may have.
    fn minimum_side(&self) -> usize {
        match self {
            Network::OmniSr(net) => net.shape().minimum_side(),
            _ => 1,
        }
    }
}

/// An image upscaling model loaded from a file.
pub struct Upscaler {
    network: Network,
    scale: usize,
    /// The side every tile must be a multiple of (the pixel-unshuffle factor).
    multiple: usize,
    /// What the network is, for messages: `ESRGAN (RRDBNet, 23 blocks, 4×)`.
    description: String,
}

impl Upscaler {
    /// Reads the upscaler at `path` onto `device` (f32): its architecture and scale from its
    /// tensors' names and shapes. A file that is not one of the layouts above is refused,
    /// naming what it holds.
    pub fn open(path: &Path, device: &Device) -> Result<Self, SdError> {
        let tensors = read(path)?;
        let shapes: HashMap<String, Vec<usize>> = tensors
            .iter()
            .map(|(name, t)| (name.clone(), t.dims().to_vec()))
            .collect();
        let names: Vec<String> = shapes.keys().cloned().collect();
        let invalid = |message: String| SdError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let weights = |source| SdError::Weights {
            path: path.to_path_buf(),
            source,
        };
        if let Some(renamed) = rrdb::canonical_names(&names) {
            let named: HashMap<String, Tensor> = renamed
                .iter()
                .filter_map(|(new, old)| Some((new.clone(), tensors.get(old)?.clone())))
                .collect();
            let shape = rrdb::shape_of(
                &named
                    .iter()
                    .map(|(n, t)| (n.clone(), t.dims().to_vec()))
                    .collect(),
            )
            .map_err(|e| invalid(format!("an ESRGAN (RRDBNet) upscaler, but {e}")))?;
            let vb = VarBuilder::from_tensors(named, DType::F32, device);
            return Ok(Self {
                network: Network::Rrdb(rrdb::Rrdb::new(vb, shape).map_err(weights)?),
                scale: shape.scale(),
                multiple: shape.shuffle,
                description: format!(
                    "ESRGAN (RRDBNet, {} blocks, {}×)",
                    shape.blocks,
                    shape.scale()
                ),
            });
        }
        let compact = |name: &str| shapes.get(name).cloned();
        if compact("body.0.weight").is_some()
            && compact("body.1.weight").is_some_and(|d| d.len() == 1)
        {
            let shape = compact::shape_of(compact)
                .map_err(|e| invalid(format!("a Real-ESRGAN compact upscaler, but {e}")))?;
            let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
            return Ok(Self {
                network: Network::Compact(compact::Compact::new(vb, shape).map_err(weights)?),
                scale: shape.scale,
                multiple: 1,
                description: format!(
                    "Real-ESRGAN compact ({} convolutions, {}×)",
                    shape.convs, shape.scale
                ),
            });
        }
        if span::is_span(|name| shapes.contains_key(name)) {
            let shape =
                span::shape_of(compact).map_err(|e| invalid(format!("a SPAN network, but {e}")))?;
            let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
            return Ok(Self {
                network: Network::Span(span::Span::new(vb, shape).map_err(weights)?),
                scale: shape.scale,
                multiple: 1,
                description: format!("SPAN ({} features, {}×)", shape.features, shape.scale),
            });
        }
        if plksr::is_plksr(|name| shapes.contains_key(name)) {
            let shape = plksr::shape_of(compact)
                .map_err(|e| invalid(format!("a PLKSR network, but {e}")))?;
            let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
            return Ok(Self {
                network: Network::Plksr(plksr::Plksr::new(vb, shape).map_err(weights)?),
                scale: shape.scale,
                multiple: 1,
                description: shape.description(),
            });
        }
        if hat::is_hat(|name| shapes.contains_key(name)) {
            let shape =
                hat::shape_of(compact).map_err(|e| invalid(format!("a HAT network, but {e}")))?;
            let description = format!(
                "HAT ({} groups, {}×)",
                shape.sizes.depths.len(),
                shape.scale
            );
            let scale = shape.scale;
            let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
            return Ok(Self {
                network: Network::Hat(hat::Hat::new(vb, shape).map_err(weights)?),
                scale,
                multiple: 1,
                description,
            });
        }
        if dat::is_dat(|name| shapes.contains_key(name)) {
            let shape =
                dat::shape_of(&tensors).map_err(|e| invalid(format!("a DAT network, but {e}")))?;
            let description = format!(
                "DAT ({} groups, {}×{} windows, {}×)",
                shape.depths.len(),
                shape.split.0,
                shape.split.1,
                shape.scale
            );
            let scale = shape.scale;
            let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
            return Ok(Self {
                network: Network::Dat(dat::Dat::new(vb, shape).map_err(weights)?),
                scale,
                multiple: 1,
                description,
            });
        }
        if omnisr::is_omnisr(|name| shapes.contains_key(name)) {
            let shape = omnisr::shape_of(compact)
                .map_err(|e| invalid(format!("an OmniSR network, but {e}")))?;
            let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
            return Ok(Self {
                network: Network::OmniSr(omnisr::OmniSr::new(vb, shape).map_err(weights)?),
                scale: shape.scale,
                multiple: 1,
                description: format!(
                    "OmniSR ({} groups of {} blocks, {}×{} windows, {}×)",
                    shape.groups, shape.blocks, shape.window, shape.window, shape.scale
                ),
            });
        }
        if swinir::is_swinir(|name| shapes.contains_key(name)) {
            let shape = swinir::shape_of(compact)
                .map_err(|e| invalid(format!("a SwinIR or Swin2SR network, but {e}")))?;
            let description = format!(
                "{} ({}, {} groups, {}×)",
                match shape.generation {
                    swinir::Generation::SwinIr => "SwinIR",
                    swinir::Generation::Swin2Sr { .. } => "Swin2SR",
                },
                match shape.upsampler {
                    swinir::Upsampler::NearestConv => "real-world SR",
                    swinir::Upsampler::PixelShuffle => "classical SR",
                    swinir::Upsampler::PixelShuffleDirect => "lightweight SR",
                    swinir::Upsampler::PixelShuffleAux => "compressed SR",
                    swinir::Upsampler::SameSize => "restoration",
                },
                shape.sizes.depths.len(),
                shape.scale
            );
            let scale = shape.scale;
            let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
            return Ok(Self {
                network: Network::SwinIr(swinir::SwinIr::new(vb, shape).map_err(weights)?),
                scale,
                multiple: 1,
                description,
            });
        }
        let mut some: Vec<&String> = names.iter().collect();
        some.sort();
        some.truncate(4);
        Err(SdError::Unsupported {
            path: path.to_path_buf(),
            message: format!(
                "not an upscaler Autonomy reads (ESRGAN/RRDBNet, Real-ESRGAN compact, SPAN, PLKSR, RealPLKSR, SwinIR, Swin2SR, HAT, DAT or OmniSR); it holds {} tensors such as {some:?} (other architectures are not read yet)",
                names.len()
            ),
        })
    }

    /// How many times larger the output is than the image in.
    pub fn scale(&self) -> usize {
        self.scale
    }

    /// What the network is, for messages and logs.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The whole of `pixels` `(n, 3, h, w)` in [0, 1] through the network at once:
    /// `(n, 3, h·scale, w·scale)`, unclamped.
    pub fn forward(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        match &self.network {
            Network::Rrdb(net) => net.forward(pixels),
            Network::Compact(net) => net.forward(pixels),
            Network::Span(net) => net.forward(pixels),
            Network::Plksr(net) => net.forward(pixels),
            Network::SwinIr(net) => net.forward(pixels),
            Network::Hat(net) => net.forward(pixels),
            Network::Dat(net) => net.forward(pixels),
            Network::OmniSr(net) => net.forward(pixels),
        }
    }

    /// `pixels` `(n, 3, h, w)` in [0, 1] upscaled to `(n, 3, h·scale, w·scale)` in [0, 1], in
    /// tiles of 192 pixels with 16 pixels of context each (across the edges when
    /// `wrap`, for a tileable image).
    pub fn upscale(&self, pixels: &Tensor, wrap: bool) -> Result<Tensor, SdError> {
        self.upscale_tiled(pixels, wrap, TILE)
    }

    fn upscale_tiled(&self, pixels: &Tensor, wrap: bool, tile: usize) -> Result<Tensor, SdError> {
        let _span = tracing::info_span!("upscale", model = %self.description).entered();
        let (_, _, h, w) = pixels.dims4()?;
        let m = self.multiple;
        if h == 0 || w == 0 || !h.is_multiple_of(m) || !w.is_multiple_of(m) {
            return Err(SdError::BadRequest(format!(
                "a {w}×{h} image cannot go through {}: its sides must be multiples of {m}",
                self.description
            )));
        }
        let least = self.network.minimum_side();
        if h.min(w) < least {
            return Err(SdError::BadRequest(format!(
                "a {w}×{h} image cannot go through {}: its sides must be at least {least} pixels",
                self.description
            )));
        }
        let margin = MARGIN.min(h).min(w) / m * m;
        let (source, offset) = if wrap {
            (super::wrap_pad(pixels, margin)?, margin)
        } else {
            (pixels.clone(), 0)
        };
        let (sh, sw) = (h + 2 * offset, w + 2 * offset);
        let tile = tile.max(m) / m * m;
        let s = self.scale;
        let mut rows = Vec::new();
        for y in (0..h).step_by(tile) {
            let th = tile.min(h - y);
            let mut row = Vec::new();
            for x in (0..w).step_by(tile) {
                let tw = tile.min(w - x);
                // The tile with its context, cut to the (padded) image.
                let (y0, x0) = (
                    (y + offset).saturating_sub(margin),
                    (x + offset).saturating_sub(margin),
                );
                let (y1, x1) = (
                    (y + offset + th + margin).min(sh),
                    (x + offset + tw + margin).min(sw),
                );
                let part = source.narrow(2, y0, y1 - y0)?.narrow(3, x0, x1 - x0)?;
                let out = self.forward(&part)?;
                row.push(out.narrow(2, (y + offset - y0) * s, th * s)?.narrow(
                    3,
                    (x + offset - x0) * s,
                    tw * s,
                )?);
            }
            rows.push(Tensor::cat(&row, 3)?);
        }
        Ok(Tensor::cat(&rows, 2)?.clamp(0f32, 1f32)?)
    }
}

/// Whether the file at `path` holds an upscaler Autonomy reads, told from its stored names
/// alone (a safetensors header, a pickle's index): what the editor lists.
pub fn is_upscaler(path: &Path) -> bool {
    let Some(extension) = path.extension().and_then(|e| e.to_str()) else {
        return false;
    };
    if !["pth", "pt", "safetensors"].contains(&extension.to_ascii_lowercase().as_str()) {
        return false;
    }
    let names: Vec<String> = if is_pickle(path) {
        weights_pickle(path)
            .map(|p| p.tensor_infos().keys().map(|n| unprefixed(n)).collect())
            .unwrap_or_default()
    } else {
        super::weights::stored_names(path)
            .iter()
            .map(|n| unprefixed(n))
            .collect()
    };
    let has = |name: &str| names.iter().any(|n| n == name);
    rrdb::canonical_names(&names).is_some()
        || (has("body.0.weight") && has("body.1.weight"))
        || span::is_span(has)
        || plksr::is_plksr(has)
        || swinir::is_swinir(has)
        || hat::is_hat(has)
        || dat::is_dat(has)
        || omnisr::is_omnisr(has)
}

/// The tensors of an upscaler file, under their stored names (a `module.` prefix dropped):
/// safetensors, or a PyTorch pickle's `params_ema`, `params` or `state_dict` entry, or its
/// whole dict — read without running the pickle, as f32 on the CPU.
pub(crate) fn read(path: &Path) -> Result<HashMap<String, Tensor>, SdError> {
    let failed = |source| SdError::Weights {
        path: path.to_path_buf(),
        source,
    };
    let mut tensors = HashMap::new();
    if is_pickle(path) {
        if !path.is_file() {
            return Err(SdError::MissingFile {
                path: path.to_path_buf(),
            });
        }
        let pickle = weights_pickle(path).map_err(failed)?;
        let names: Vec<String> = pickle.tensor_infos().keys().cloned().collect();
        for name in names {
            if let Some(t) = pickle.get(&name).map_err(failed)? {
                tensors.insert(name, t);
            }
        }
    } else {
        let store = Store::open(path)?;
        for name in store.shapes().into_keys() {
            let t = store.load(&name, &Device::Cpu).map_err(failed)?;
            tensors.insert(name, t);
        }
    }
    tensors
        .into_iter()
        .map(|(name, t)| Ok((unprefixed(&name), t.to_dtype(DType::F32).map_err(failed)?)))
        .collect()
}

/// The index of a PyTorch pickle's weights: the first of its `params_ema`, `params` and
/// `state_dict` entries that holds tensors (Real-ESRGAN's files keep them one level down), or
/// its whole dict (asking for an entry a flat dict lacks reads the whole dict).
fn weights_pickle(path: &Path) -> candle_core::Result<PickleTensors> {
    for key in ["params_ema", "params"] {
        let pickle = PickleTensors::open(path, Some(key))?;
        if !pickle.tensor_infos().is_empty() {
            return Ok(pickle);
        }
    }
    PickleTensors::open(path, Some("state_dict"))
}

/// A stored name without the `module.` prefix that `DataParallel` training leaves.
fn unprefixed(name: &str) -> String {
    name.strip_prefix("module.").unwrap_or(name).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_compact(scale: usize) -> Upscaler {
        let dev = Device::Cpu;
        let mut tensors = HashMap::new();
        let mut put = |name: String, dims: &[usize], seed: f64| {
            let n: usize = dims.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|i| ((i as f64 * 0.37 + seed).sin() * 0.3) as f32)
                .collect();
            tensors.insert(name, Tensor::from_vec(values, dims, &dev).unwrap());
        };
        put("body.0.weight".into(), &[4, 3, 3, 3], 0.1);
        put("body.0.bias".into(), &[4], 0.2);
        put("body.1.weight".into(), &[4], 0.3);
        for i in 0..2 {
            put(
                format!("body.{}.weight", 2 + 2 * i),
                &[4, 4, 3, 3],
                0.4 + i as f64,
            );
            put(format!("body.{}.bias", 2 + 2 * i), &[4], 0.5);
            put(format!("body.{}.weight", 3 + 2 * i), &[4], 0.6);
        }
        put("body.6.weight".into(), &[3 * scale * scale, 4, 3, 3], 0.7);
        put("body.6.bias".into(), &[3 * scale * scale], 0.8);
        let shape = compact::shape_of(|n| tensors.get(n).map(|t| t.dims().to_vec())).unwrap();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
        Upscaler {
            network: Network::Compact(compact::Compact::new(vb, shape).unwrap()),
            scale,
            multiple: 1,
            description: "test".into(),
        }
    }

    fn image(h: usize, w: usize) -> Tensor {
        let values: Vec<f32> = (0..3 * h * w)
            .map(|i| ((i * 7919) % 255) as f32 / 255.0)
            .collect();
        Tensor::from_vec(values, (1, 3, h, w), &Device::Cpu).unwrap()
    }

    #[test]
    fn tiles_with_a_margin_wider_than_the_receptive_field_match_the_whole_image() {
        // Four 3×3 convolutions see 4 pixels around: a 16-pixel margin hides every tile edge.
        let up = tiny_compact(2);
        let pixels = image(40, 56);
        let whole = up.forward(&pixels).unwrap().clamp(0f32, 1f32).unwrap();
        let tiled = up.upscale_tiled(&pixels, false, 16).unwrap();
        assert_eq!(tiled.dims(), [1, 3, 80, 112]);
        assert!(super::super::max_abs_diff(&whole, &tiled) < 1e-6);
    }

    #[test]
    fn a_wrapped_image_upscales_as_its_middle_copy_in_a_three_by_three_mosaic() {
        let up = tiny_compact(2);
        let pixels = image(24, 32);
        let row = Tensor::cat(&[&pixels, &pixels, &pixels], 3).unwrap();
        let mosaic = Tensor::cat(&[&row, &row, &row], 2).unwrap();
        let whole = up.forward(&mosaic).unwrap().clamp(0f32, 1f32).unwrap();
        let middle = whole.narrow(2, 48, 48).unwrap().narrow(3, 64, 64).unwrap();
        let wrapped = up.upscale_tiled(&pixels, true, 16).unwrap();
        assert!(super::super::max_abs_diff(&middle, &wrapped) < 1e-6);
    }

    #[test]
    fn a_file_of_another_kind_is_refused_naming_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atd.safetensors");
        let t = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        candle_core::safetensors::save(
            &HashMap::from([("layers.0.attn.qkv.weight".to_string(), t)]),
            &path,
        )
        .unwrap();
        let err = Upscaler::open(&path, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("not an upscaler Autonomy reads")
                && err.contains("layers.0.attn.qkv.weight"),
            "{err}"
        );
        let missing = Upscaler::open(&dir.path().join("gone.pth"), &Device::Cpu)
            .err()
            .unwrap();
        assert!(matches!(missing, SdError::MissingFile { .. }), "{missing}");
    }
}
