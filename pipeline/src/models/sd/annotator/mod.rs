//! Preprocessors ("annotators") that make a ControlNet's control image from a picture, as
//! A1111's ControlNet extension and `controlnet_aux` make them: [`canny`] edges,
//! [`hed`] and [`pidinet`] soft edges (`softedge_hed`, `softedge_hedsafe`, `softedge_pidinet`,
//! `softedge_pidisafe`), [`scribble`]s (`scribble_hed`, `scribble_pidinet`, `scribble_xdog`)
//! the colour adapter's [`color`] grid (`t2ia_color_grid`), the content [`shuffle`],
//! [`lineart_anime`], [`lineart`] (`lineart`, with the informative-drawings network, and
//! `lineart_standard`, without one), [`depth_anything`] (`depth_anything_v2`,
//! `depth_anything`), and [`mlsd`]'s straight lines. The networks
//! load from the files A1111 keeps in `annotator/downloads/` (`lllyasviel/Annotators`, and
//! Depth Anything V2's release), and run at the picture's own size (Depth Anything at a
//! shorter side of 518); [`Networks`] keeps each file loaded for the next picture.
//!
//! ```
//! use autonomy_pipeline::models::sd::annotator::lineart;
//! // A dark ring on white: `lineart_standard` draws it white on black.
//! let ring = image::RgbImage::from_fn(64, 64, |x, y| {
//!     let d = ((x as f32 - 32.0).powi(2) + (y as f32 - 32.0).powi(2)).sqrt();
//!     image::Rgb(if (18.0..21.0).contains(&d) { [30; 3] } else { [240; 3] })
//! });
//! let lines = lineart::standard(&ring);
//! assert!(lines.get_pixel(32 + 19, 32)[0] > 100);
//! assert_eq!(lines.get_pixel(32, 32)[0], 0);
//! ```

pub mod canny;
pub mod color;
pub mod depth_anything;
mod depthwise;
pub mod draw;
pub mod gaussian;
pub mod hed;
pub mod lineart;
pub mod lineart_anime;
pub mod mlsd;
mod networks;
pub mod pidinet;
pub mod scribble;
pub mod shuffle;
mod up_conv;

use std::path::Path;

pub use networks::Networks;

use candle_core::{DType, Device, Result, Tensor};
use image::{GrayImage, RgbImage};

/// A soft-edge network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeNetwork {
    /// HED ([`hed`]).
    Hed,
    /// PiDiNet ([`pidinet`]).
    PidiNet,
}

impl EdgeNetwork {
    /// The file of `lllyasviel/Annotators` it loads from, as an error names it.
    pub fn file(self) -> &'static str {
        match self {
            EdgeNetwork::Hed => "`ControlNetHED.pth`",
            EdgeNetwork::PidiNet => "`table5_pidinet.pth`",
        }
    }
}

/// What a preprocessor makes of a network's soft edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeFinish {
    /// The edges as they are.
    Soft,
    /// Quantised to three steps (A1111's "safe").
    Safe,
    /// Thinned to strokes ([`scribble::from_soft_edges`]).
    Scribble,
}

/// The preprocessors that run a soft-edge network, by A1111's names.
pub const SOFT_EDGES: [(&str, EdgeNetwork, EdgeFinish); 6] = [
    ("softedge_hed", EdgeNetwork::Hed, EdgeFinish::Soft),
    ("softedge_hedsafe", EdgeNetwork::Hed, EdgeFinish::Safe),
    ("softedge_pidinet", EdgeNetwork::PidiNet, EdgeFinish::Soft),
    ("softedge_pidisafe", EdgeNetwork::PidiNet, EdgeFinish::Safe),
    ("scribble_hed", EdgeNetwork::Hed, EdgeFinish::Scribble),
    (
        "scribble_pidinet",
        EdgeNetwork::PidiNet,
        EdgeFinish::Scribble,
    ),
];

/// The preprocessors that run the annotator file at `path`, told by its stored names alone:
/// `softedge_hed`, `softedge_hedsafe` and `scribble_hed` for a HED network (`norm`,
/// `block1.convs.0`), PiDiNet's three for PiDiNet (`init_block`, `block1_1`, `classifier`,
/// with or without `module.`),
/// `lineart` for a line-art generator (`model0.1`, `model4.1`), `lineart_anime` for the anime
/// one (`model.model.0`, `model.model.1.model.1`), `depth_anything_v2` and `depth_anything` for
/// Depth Anything (`pretrained.cls_token`, `depth_head.scratch.output_conv2.2`: the two releases
/// share a layout), `mlsd` for M-LSD (`backbone.features.0.0`, `block23.conv3`); none for any
/// other file.
pub fn preprocessors_of(path: &Path) -> &'static [&'static str] {
    if !path.is_file() {
        return &[];
    }
    let names = super::weights::stored_names(path);
    let has = |name: &str| {
        names
            .iter()
            .any(|n| n.strip_prefix("module.").unwrap_or(n) == name)
    };
    if has("norm") && has("block1.convs.0.weight") && has("block1.projection.weight") {
        &["softedge_hed", "softedge_hedsafe", "scribble_hed"]
    } else if has("init_block.weight") && has("block1_1.conv1.weight") && has("classifier.weight") {
        &["softedge_pidinet", "softedge_pidisafe", "scribble_pidinet"]
    } else if has("model0.1.weight") && has("model4.1.weight") && has("model3.0.weight") {
        &["lineart"]
    } else if has("model.model.0.weight") && has("model.model.1.model.1.weight") {
        &["lineart_anime"]
    } else if has("backbone.features.0.0.weight") && has("block23.conv3.weight") {
        &["mlsd"]
    } else if has("pretrained.cls_token") && has("depth_head.scratch.output_conv2.2.weight") {
        &["depth_anything_v2", "depth_anything"]
    } else {
        &[]
    }
}

/// `picture` as a `(1, 3, h, w)` f32 tensor on `device`, each byte times `scale`.
fn picture_tensor(picture: &RgbImage, scale: f32, device: &Device) -> Result<Tensor> {
    let (w, h) = (picture.width() as usize, picture.height() as usize);
    let values: Vec<f32> = picture
        .as_raw()
        .iter()
        .map(|&b| f32::from(b) * scale)
        .collect();
    Tensor::from_vec(values, (h, w, 3), device)?
        .permute((2, 0, 1))?
        .unsqueeze(0)
}

/// A soft-edge map in 0–1 `(h, w)` as bytes; with `safe` quantised to three steps first, as
/// `controlnet_aux`'s `safe_step` does.
fn soft_edge_bytes(edge: &Tensor, safe: bool) -> Result<GrayImage> {
    to_gray(edge, |v| {
        let v = if safe { (v * 3.0).floor() / 2.0 } else { v };
        v * 255.0
    })
}

/// The byte map `map` of dark lines on white as the white lines on black a ControlNet takes:
/// `255 − byte`, after the byte is truncated.
fn inverted_lines(map: &Tensor, to_byte: impl Fn(f32) -> f32) -> Result<GrayImage> {
    let mut gray = to_gray(map, to_byte)?;
    image::imageops::invert(&mut gray);
    Ok(gray)
}

/// The `(h, w)` map `map` as bytes: `to_byte` of each value, clipped to 0–255 and truncated, as
/// NumPy's `clip(0, 255).astype(np.uint8)`.
fn to_gray(map: &Tensor, to_byte: impl Fn(f32) -> f32) -> Result<GrayImage> {
    let (h, w) = map.dims2()?;
    let values = map.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let bytes = values
        .into_iter()
        .map(|v| to_byte(v).clamp(0.0, 255.0) as u8)
        .collect();
    GrayImage::from_raw(w as u32, h as u32, bytes)
        .ok_or_else(|| candle_core::Error::Msg(format!("a {w}×{h} map has the wrong length")))
}
