//! Recipes: `*.recipe.toml` files that say what asset to make and how.
//!
//! A recipe file describes one asset, named by the file (`potion.recipe.toml` → `potion`):
//!
//! ```toml
//! kind = "sprite"                 # texture | sprite | animation | material
//! prompt = "red health potion"
//! size = 128
//! pixel_art = { colors = 16, scale = 4 }
//! ```
//!
//! or several, each in its own `[assets.<name>]` table:
//!
//! ```toml
//! [assets.potion]
//! kind = "sprite"
//! prompt = "red potion"
//!
//! [assets.potion_glow]
//! kind = "animation"
//! prompt = "glowing red potion"
//! frames = 8
//! source = "recipe:potion"       # img2img from another recipe's output
//! ```
//!
//! Every other key is optional: `negative_prompt` (""), `model` (`"house"`, a model folder,
//! or `"registry:<name>"`), `seed` (0), `size` (64, 8..=2048), `steps` (20, 1..=200),
//! `guidance` (4.0, 0..=30), `tileable` (true for textures and materials), `pixel_art`
//! (`colors` 2..=256 *or* `palette`: a file or a list of `#rrggbb`; `scale` 1..=16),
//! `frames` (required, 2..=256) / `fps` (12, 1..=60) / `loop` (true) for animations,
//! `pbr` (all of `normal`, `roughness`, `ao`) for materials, `source` + `strength`
//! (0.6, in (0, 1]) for img2img, with a `mask` image to inpaint (white repainted, black
//! kept), and for a Stable Diffusion model folder `loras` (none: a
//! list of files, or of `{ file = "…", scale = 0.8 }`, scale -4..=4, default 1, with an
//! optional `text_scale` for the text encoder's updates, as A1111's `te=`, and `rank` to merge
//! only the first ranks of its low-rank updates, as A1111's `dyn`, and `blocks` for its
//! strength in each UNet block, as the block-weight extension's `lbw=` (a preset such as
//! `"OUTD"` or a list of 12, 17, 20 or 26 numbers); the prompt's
//! A1111 tags `<lora:name:0.8>` add the files of that name found beside the model or in the
//! project's model folders at build time), `vae` (the
//! model's own: a VAE `.safetensors` file or diffusers VAE folder instead), `refiner` (none: an
//! SDXL refiner's folder or checkpoint that takes over the latents) with `refiner_switch` (0.8,
//! strictly between 0 and 1: the share of the noise schedule the model runs first), `sampler`
//! (the folder's scheduler: `ddim`, `ddpm`, `pndm`, `euler`, `euler-karras`, `euler-a`, `heun`,
//! `heun-karras`, `lms`, `lms-karras`, `dpm++2m`, `dpm++2m-karras`, `dpm++2m-sde`,
//! `dpm++2m-sde-karras`, `unipc`, `unipc-karras`, `deis`, `dpm2`, `dpm2-karras`,
//! `dpm2-a`, `dpm2-a-karras`, `dpm++sde`, `dpm++sde-karras`, `dpm++2s`, `dpm++2s-karras`,
//! `dpm++2s-a`, `dpm++2s-a-karras`, `lcm` or `tcd` instead) and
//! `guidance_rescale` (0, 0..=1), `clip_skip` (1, 1..=12: the text-encoder layer, from the
//! last, that conditions the image), `embeddings` (none: textual-inversion files, each
//! adding the word of its stem) and `hires_strength` (none, in (0, 1]: draw at the model's
//! size, then redraw at `size` — a multiple of 64 above it — at this strength, A1111's
//! "hires. fix"; not for animations) with `hires_steps` (`steps`, 1..=200) and
//! `hires_upscaler` (`"latent"`: the latents bilinearly; `"lanczos"`: the pixels; or an
//! upscaling model file, ESRGAN or Real-ESRGAN `.pth`/`.safetensors`), and `controlnet` (none:
//! a diffusers ControlNet folder, an A1111/ComfyUI single file, or a diffusers T2I-Adapter
//! folder) with `control_image` (required with it: an edge map, a
//! depth map, a pose…, resized to the image), `control_scale` (1, 0..=2), `control_start`
//! (0) and `control_end` (1: the fractions of the steps it conditions),
//! `control_guess_mode` (false: it conditions the prompt's prediction alone) and
//! `control_preprocess` (none: the image is the control image; or a preprocessor that makes
//! it of a picture, as A1111's extension names them: `"canny"` (the Canny edges OpenCV finds)
//! with `control_thresholds` (`[100, 200]`, 0..=1000), `"softedge_hed"` and
//! `"softedge_hedsafe"` (HED soft edges), `"softedge_pidinet"` and `"softedge_pidisafe"`
//! (PiDiNet's), `"scribble_hed"`, `"scribble_pidinet"`, `"lineart"` (the informative-drawings
//! network), `"lineart_anime"` (pix2pix's U-Net, `netG.pth`), `"depth_anything_v2"` (Depth
//! Anything V2's relative depth, near bright), `"depth_anything"` (the first release's),
//! `"mlsd"` (M-LSD's straight line segments) — these with
//! `control_annotator`, the network's file (`ControlNetHED.pth`; `table5_pidinet.pth`;
//! `sk_model.pth`, or `sk_model2.pth` for coarse lines; `depth_anything_v2_vitl.safetensors`
//! or the release's `.pth`; `depth_anything_vitl14.pth`; `mlsd_large_512_fp32.pth`), listed in
//! the manifest by its hash —
//! or `"lineart_standard"` (no network), or `"invert"` (the picture's negative: a sketch's dark
//! lines on white made white on black), or `"t2ia_color_grid"` (the picture's colours in
//! 64-pixel cells, for TencentARC's colour adapter), or `"shuffle"` (its pixels moved by a
//! smooth seeded flow, for the shuffle ControlNet)); or, for
//! several ControlNets at once (their residuals add up, as diffusers' Multi-ControlNet),
//! `controlnet` is a list of tables with those keys without `control_`:
//! `controlnet = [{ model = "canny", image = "edges.png", end = 0.6 }, { model = "depth",
//! image = "depth.png", scale = 0.5 }]`.
//!
//! **Paths** (`source`, `mask`, `control_image`, `palette`, a model folder, LoRA files) are written relative to the recipe's
//! folder and stored relative to the recipe root; they may not leave the root (a model
//! folder or a LoRA file may be absolute: they often live in a shared models folder). **`recipe:` sources** name an asset: `recipe:x` means the `x`
//! in the same folder if there is one, else the only `x` anywhere under the root (several
//! are an error); `recipe:dir/x` names the `x` in root-relative folder `dir` (`./x`: the root).
//!
//! Design values: errors are for people, so a file reports all its problems at once, each
//! with file, line, column and field ([`RecipeError`]); the parser never touches the
//! filesystem (the builder checks that paths exist); [`load_dir`] never gives up on the
//! whole folder because one file is broken, since the watcher keeps going.

mod error;
mod fields;
mod parse;
mod paths;
mod set;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::models::sd::annotator::depth_anything::DepthVersion;
use crate::models::sd::annotator::{EdgeFinish, EdgeNetwork, Networks, SOFT_EDGES};
use crate::models::sd::block_weights::BlockWeights;
use crate::models::sd::scheduler::Sampler;
use serde_json::{Value, json};

pub use error::RecipeError;
pub use parse::parse;
pub use set::{RecipeSet, load_dir};

/// What kind of asset a recipe makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A square image for surfaces; tileable by default.
    Texture,
    /// A single image with transparency.
    Sprite,
    /// A sequence of frames (a sprite sheet and a GIF).
    Animation,
    /// A texture plus PBR maps and a glTF material; tileable by default.
    Material,
}

impl Kind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [Kind; 4] = [Kind::Texture, Kind::Sprite, Kind::Animation, Kind::Material];

    /// The lowercase name used in recipes.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Texture => "texture",
            Kind::Sprite => "sprite",
            Kind::Animation => "animation",
            Kind::Material => "material",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which model generates the asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// The house model Autonomy ships (`model = "house"`, the default).
    House,
    /// A local model folder: relative to the recipe root, or absolute as written.
    Folder(PathBuf),
    /// A model published in the on-chain registry (`model = "registry:<name>"`).
    Registry(String),
}

/// The colours a pixel-art asset is reduced to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Palette {
    /// An adaptive palette of this many colours (2..=256).
    Colors(u16),
    /// These exact colours, as RGB.
    Hex(Vec<[u8; 3]>),
    /// A palette file (one `#rrggbb` a line), relative to the recipe root.
    File(PathBuf),
}

/// Pixel-art post-processing: quantise to a palette, then upscale with nearest neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PixelArt {
    /// The colours to quantise to.
    pub palette: Palette,
    /// Integer upscale factor of each art pixel (1..=16).
    pub scale: u32,
}

/// Frame settings of an animation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Animation {
    /// Number of frames (2..=256).
    pub frames: u32,
    /// Playback speed in frames per second (1..=60).
    pub fps: u32,
    /// Whether playback loops (`loop` in recipes).
    pub looped: bool,
}

/// A PBR map a material gets besides its colour texture.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PbrMap {
    /// Tangent-space normal map.
    Normal,
    /// Roughness map.
    Roughness,
    /// Ambient-occlusion map.
    Ao,
}

impl PbrMap {
    /// Every map, in canonical order.
    pub const ALL: [PbrMap; 3] = [PbrMap::Normal, PbrMap::Roughness, PbrMap::Ao];

    /// The lowercase name used in recipes.
    pub fn as_str(self) -> &'static str {
        match self {
            PbrMap::Normal => "normal",
            PbrMap::Roughness => "roughness",
            PbrMap::Ao => "ao",
        }
    }
}

/// The starting image of an img2img recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An image file, relative to the recipe root and normalised.
    File(PathBuf),
    /// Another recipe's output: `name`, or `folder/name` with a root-relative folder
    /// (`./name` for the root); see the module docs for how it resolves.
    Recipe(String),
}

/// Img2img settings: start from an image instead of noise.
#[derive(Debug, Clone, PartialEq)]
pub struct Img2Img {
    /// The starting image.
    pub source: Source,
    /// How far to move away from it, in (0, 1]; 1 ignores it.
    pub strength: f32,
    /// Inpainting: a greyscale image file (relative to the recipe root, normalised) whose white
    /// is repainted and black kept.
    pub mask: Option<PathBuf>,
}

/// A LoRA merged into a Stable Diffusion model for an asset.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraRef {
    /// The `.safetensors` file, relative to the recipe root (or absolute).
    pub file: PathBuf,
    /// How strongly to apply it (-4..=4; 1 as trained).
    pub scale: f64,
    /// How strongly to apply its text-encoder updates, when that differs from `scale`
    /// (-4..=4; A1111's `te=`).
    pub text_scale: Option<f64>,
    /// The ranks of its low-rank updates to apply, when cut short (A1111's `dyn`).
    pub rank: Option<usize>,
    /// Its strength in each block of the UNet and in the text encoders, times its scales
    /// (the sd-webui-lora-block-weight extension's `lbw=`).
    pub blocks: Option<BlockWeights>,
}

/// A refiner that takes over a Stable Diffusion model's latents for an asset.
#[derive(Debug, Clone, PartialEq)]
pub struct RefinerRef {
    /// Its folder or checkpoint, relative to the recipe root (or absolute).
    pub model: PathBuf,
    /// The share of the noise schedule the asset's model runs before the refiner (0..1), as
    /// the recipe writes it.
    pub switch: f64,
}

/// A Stable Diffusion asset drawn at the model's size and redrawn at the asset's (see
/// [`crate::generator::Hires`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HiresRef {
    /// How much the second pass redraws, in (0, 1].
    pub strength: f32,
    /// The second pass's steps; the asset's `steps` when absent.
    pub steps: Option<u32>,
    /// How the first image is scaled up.
    pub upscaler: UpscalerRef,
}

/// A hires pass's upscaler as the recipe names it (`hires_upscaler`).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum UpscalerRef {
    /// `"latent"` (the default): the latents, bilinearly.
    #[default]
    Latent,
    /// `"lanczos"`: the pixels, with Lanczos.
    Lanczos,
    /// An upscaling model file (`.pth`, `.safetensors`: ESRGAN, Real-ESRGAN), relative to the
    /// recipe root.
    File(PathBuf),
}

/// A ControlNet that conditions a Stable Diffusion asset on a control image (see
/// [`crate::generator::Control`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ControlRef {
    /// The diffusers ControlNet folder or single file, relative to the recipe root (or
    /// absolute).
    pub model: PathBuf,
    /// The control image (an edge map, a depth map, a pose…), relative to the recipe root.
    pub image: PathBuf,
    /// How strongly it conditions, 0–2 (1 as trained).
    pub scale: f64,
    /// The fraction of the steps where it starts, 0–1.
    pub start: f64,
    /// The fraction of the steps after which it stops, `start`–1.
    pub end: f64,
    /// Whether it conditions the prompt's prediction alone (diffusers' guess mode).
    pub guess_mode: bool,
    /// How the control image is made from the picture the recipe names (none: it is the
    /// control image).
    pub preprocess: Option<Preprocess>,
}

/// The preprocessors a recipe's `control_preprocess` and `generate --control-preprocess` name,
/// as A1111's ControlNet extension names them.
pub const PREPROCESSORS: [&str; 17] = [
    "canny",
    "softedge_hed",
    "softedge_hedsafe",
    "softedge_pidinet",
    "softedge_pidisafe",
    "scribble_hed",
    "scribble_pidinet",
    "scribble_xdog",
    "lineart",
    "lineart_anime",
    "lineart_standard",
    "depth_anything_v2",
    "depth_anything",
    "mlsd",
    "invert",
    "t2ia_color_grid",
    "shuffle",
];

/// M-LSD's thresholds when a recipe gives none: A1111's.
pub const DEFAULT_MLSD_THRESHOLDS: (f64, f64) = (0.1, 0.1);

/// A preprocessor that makes a ControlNet's control image from a picture (see
/// [`crate::models::sd::annotator`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Preprocess {
    /// Canny edges (see [`crate::models::sd::annotator::canny`]) with these low and high
    /// thresholds.
    Canny {
        /// Below this a gradient is no edge.
        low: f64,
        /// Above this a gradient is an edge; between the two, one that touches an edge.
        high: f64,
    },
    /// A soft-edge network's edges, as they are, in three steps or thinned to scribbles
    /// (`softedge_hed`, `softedge_hedsafe`, `scribble_hed`, and PiDiNet's alike).
    SoftEdge {
        /// HED or PiDiNet.
        network: EdgeNetwork,
        /// Its file (`ControlNetHED.pth`, `table5_pidinet.pth`), relative to the recipe root
        /// (or absolute).
        annotator: PathBuf,
        /// What is made of its edges.
        finish: EdgeFinish,
    },
    /// Scribbles without a network (`scribble_xdog`).
    ScribbleXdog,
    /// Line art by the informative-drawings network (`lineart`).
    Lineart {
        /// `sk_model.pth` (A1111's `lineart_realistic`) or `sk_model2.pth` (`lineart_coarse`),
        /// relative to the recipe root (or absolute).
        annotator: PathBuf,
    },
    /// Anime line art by pix2pix's U-Net generator (`lineart_anime`).
    LineartAnime {
        /// `netG.pth`, relative to the recipe root (or absolute).
        annotator: PathBuf,
    },
    /// Line art without a network (`lineart_standard`).
    LineartStandard,
    /// Relative depth by Depth Anything V2 (`depth_anything_v2`) or the first Depth Anything
    /// (`depth_anything`), near bright.
    DepthAnything {
        /// `depth_anything_v2_vits.pth` (`_vitb`, `_vitl`; or A1111's
        /// `depth_anything_v2_vitl.safetensors`; the first's `depth_anything_vitl14.pth`…),
        /// relative to the recipe root (or absolute).
        annotator: PathBuf,
        /// Which release.
        version: DepthVersion,
    },
    /// Straight line segments by M-LSD (`mlsd`), for the MLSD ControlNet.
    Mlsd {
        /// `mlsd_large_512_fp32.pth`, relative to the recipe root (or absolute).
        annotator: PathBuf,
        /// A centre's least score and a segment's least length (in half-size pixels).
        thresholds: (f64, f64),
    },
    /// The picture's negative (A1111's `invert`, "from white bg & black line"): a sketch in
    /// dark lines on white becomes the white lines on black that line-art and scribble
    /// ControlNets take.
    Invert,
    /// The picture's colours in a grid of 64×64 cells (A1111's `t2ia_color_grid`), what
    /// TencentARC's colour adapter takes.
    ColorGrid,
    /// The picture's pixels moved by a smooth, seeded random flow (A1111's `shuffle`), what
    /// the shuffle ControlNet takes.
    Shuffle,
}

impl Preprocess {
    /// The preprocessor `name` (one of [`PREPROCESSORS`]) with its `thresholds` (Canny's or
    /// M-LSD's; the defaults when none) or its `annotator` file; the error says what is
    /// missing, extra or out of range.
    pub fn named(
        name: &str,
        thresholds: Option<(f64, f64)>,
        annotator: Option<PathBuf>,
    ) -> Result<Self, String> {
        let wants_annotator = Self::needs_annotator(name);
        if let Some(thresholds) = thresholds {
            Self::check_thresholds(name, thresholds)?;
        }
        if annotator.is_some() && !wants_annotator {
            return Err(format!("{name:?} uses no annotator file"));
        }
        let file = |what: &str| {
            annotator
                .clone()
                .ok_or_else(|| format!("{name:?} needs its annotator file: {what}"))
        };
        if let Some(&(_, network, finish)) = SOFT_EDGES.iter().find(|(n, ..)| *n == name) {
            return Ok(Preprocess::SoftEdge {
                network,
                annotator: file(&format!("{} (lllyasviel/Annotators)", network.file()))?,
                finish,
            });
        }
        Ok(match name {
            "canny" => {
                let (low, high) =
                    thresholds.unwrap_or(crate::models::sd::annotator::canny::DEFAULT_THRESHOLDS);
                Preprocess::Canny { low, high }
            }
            "scribble_xdog" => Preprocess::ScribbleXdog,
            "lineart" => Preprocess::Lineart {
                annotator: file(
                    "`sk_model.pth`, or `sk_model2.pth` for coarse lines (lllyasviel/Annotators)",
                )?,
            },
            "lineart_anime" => Preprocess::LineartAnime {
                annotator: file("`netG.pth` (lllyasviel/Annotators)")?,
            },
            "depth_anything_v2" => Preprocess::DepthAnything {
                annotator: file(
                    "`depth_anything_v2_vits.pth`, `_vitb` or `_vitl` (Depth Anything V2's release), or A1111's `depth_anything_v2_vitl.safetensors`",
                )?,
                version: DepthVersion::V2,
            },
            "depth_anything" => Preprocess::DepthAnything {
                annotator: file(
                    "`depth_anything_vits14.pth`, `_vitb14` or `_vitl14` (the first Depth Anything's release)",
                )?,
                version: DepthVersion::V1,
            },
            "mlsd" => Preprocess::Mlsd {
                annotator: file("`mlsd_large_512_fp32.pth` (lllyasviel/Annotators)")?,
                thresholds: thresholds.unwrap_or(DEFAULT_MLSD_THRESHOLDS),
            },
            "lineart_standard" => Preprocess::LineartStandard,
            "invert" => Preprocess::Invert,
            "t2ia_color_grid" => Preprocess::ColorGrid,
            "shuffle" => Preprocess::Shuffle,
            other => {
                return Err(format!(
                    "{other:?} is not a preprocessor Autonomy has: {}",
                    PREPROCESSORS.map(|p| format!("{p:?}")).join(", ")
                ));
            }
        })
    }

    /// Whether `thresholds` fit the preprocessor `name`: Canny's `[low, high]`, 0 ≤ low ≤ high
    /// ≤ 1000; M-LSD's `[value, distance]`, 0–2 and 0–20 (A1111's sliders); no other takes
    /// any.
    pub fn check_thresholds(name: &str, (a, b): (f64, f64)) -> Result<(), String> {
        match name {
            "canny" if (0.0..=1000.0).contains(&a) && (a..=1000.0).contains(&b) => Ok(()),
            "canny" => Err(
                "Canny's thresholds are `[low, high]`, 0 ≤ low ≤ high ≤ 1000 (A1111's are [100, 200])"
                    .into(),
            ),
            "mlsd" if (0.0..=2.0).contains(&a) && (0.0..=20.0).contains(&b) => Ok(()),
            "mlsd" => Err(
                "M-LSD's thresholds are `[value, distance]`: a centre's least score, 0–2, and a segment's least length, 0–20 (A1111's are [0.1, 0.1])"
                    .into(),
            ),
            other => Err(format!(
                "thresholds only apply to \"canny\" and \"mlsd\", not to {other:?}"
            )),
        }
    }

    /// Whether the preprocessor `name` runs a network from an annotator file.
    pub fn needs_annotator(name: &str) -> bool {
        matches!(
            name,
            "lineart" | "lineart_anime" | "depth_anything_v2" | "depth_anything" | "mlsd"
        ) || SOFT_EDGES.iter().any(|(n, ..)| *n == name)
    }

    /// Its name, as [`PREPROCESSORS`] lists it.
    pub fn name(&self) -> &'static str {
        match self {
            Preprocess::Canny { .. } => "canny",
            Preprocess::SoftEdge {
                network, finish, ..
            } => SOFT_EDGES
                .iter()
                .find(|(_, n, f)| n == network && f == finish)
                .map_or("softedge_hed", |(name, ..)| name),
            Preprocess::ScribbleXdog => "scribble_xdog",
            Preprocess::Lineart { .. } => "lineart",
            Preprocess::LineartAnime { .. } => "lineart_anime",
            Preprocess::LineartStandard => "lineart_standard",
            Preprocess::DepthAnything {
                version: DepthVersion::V2,
                ..
            } => "depth_anything_v2",
            Preprocess::DepthAnything {
                version: DepthVersion::V1,
                ..
            } => "depth_anything",
            Preprocess::Mlsd { .. } => "mlsd",
            Preprocess::Invert => "invert",
            Preprocess::ColorGrid => "t2ia_color_grid",
            Preprocess::Shuffle => "shuffle",
        }
    }

    /// The network file it runs, if it runs one.
    pub fn annotator(&self) -> Option<&Path> {
        match self {
            Preprocess::SoftEdge { annotator, .. }
            | Preprocess::Lineart { annotator }
            | Preprocess::LineartAnime { annotator }
            | Preprocess::DepthAnything { annotator, .. }
            | Preprocess::Mlsd { annotator, .. } => Some(annotator),
            Preprocess::Canny { .. }
            | Preprocess::ScribbleXdog
            | Preprocess::LineartStandard
            | Preprocess::Invert
            | Preprocess::ColorGrid
            | Preprocess::Shuffle => None,
        }
    }

    /// The control image it makes of `picture`, white on black at its size; an annotator file
    /// is read relative to `root`, taken from `networks` (loaded there the first time).
    pub fn apply(
        &self,
        picture: &image::RgbImage,
        root: &Path,
        networks: &Networks,
    ) -> Result<image::RgbImage, crate::models::sd::SdError> {
        use crate::models::sd::annotator::{canny, color, lineart, scribble, shuffle};
        let gray = match self {
            Preprocess::Canny { low, high } => canny::canny(picture, *low, *high),
            Preprocess::SoftEdge {
                network,
                annotator,
                finish,
            } => networks.soft_edges(*network, &root.join(annotator), *finish, picture)?,
            Preprocess::ScribbleXdog => scribble::xdog(picture),
            Preprocess::Lineart { annotator } => {
                networks.lineart(&root.join(annotator))?.lines(picture)?
            }
            Preprocess::LineartAnime { annotator } => networks
                .lineart_anime(&root.join(annotator))?
                .lines(picture)?,
            Preprocess::LineartStandard => lineart::standard(picture),
            Preprocess::DepthAnything { annotator, version } => networks
                .depth(&root.join(annotator), *version)?
                .depth(picture)?,
            Preprocess::Mlsd {
                annotator,
                thresholds: (value, distance),
            } => networks
                .mlsd(&root.join(annotator))?
                .lines(picture, (*value as f32, *distance as f32))?,
            Preprocess::Invert => {
                let mut negative = picture.clone();
                image::imageops::invert(&mut negative);
                return Ok(negative);
            }
            Preprocess::ColorGrid => return Ok(color::color_grid(picture)),
            Preprocess::Shuffle => return Ok(shuffle::shuffle(picture)),
        };
        Ok(image::DynamicImage::ImageLuma8(gray).to_rgb8())
    }
}

/// One asset to generate, with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetRecipe {
    /// Asset name: the output file stem, `[a-z0-9_-]{1,64}`.
    pub name: String,
    /// What to make.
    pub kind: Kind,
    /// What it should show (trimmed, never empty).
    pub prompt: String,
    /// What it should not show (trimmed).
    pub negative_prompt: String,
    /// The model that generates it.
    pub model: ModelRef,
    /// LoRAs merged into the model, in order (Stable Diffusion models only).
    pub loras: Vec<LoraRef>,
    /// Textual-inversion embedding files, relative to the root or absolute; each file's stem
    /// is a word its prompts may use (Stable Diffusion models only).
    pub embeddings: Vec<PathBuf>,
    /// A VAE file or folder used in place of the model's own, relative to the root or
    /// absolute (Stable Diffusion models only).
    pub vae: Option<PathBuf>,
    /// A refiner that takes over the model's latents (SDXL's ensemble of experts).
    pub refiner: Option<RefinerRef>,
    /// The sampler instead of the model folder's scheduler (Stable Diffusion models only).
    pub sampler: Option<Sampler>,
    /// Guidance rescale φ, 0–1, 0 off (Stable Diffusion models only).
    pub guidance_rescale: f32,
    /// Which text-encoder layer conditions the image, from the last: 1 (the default) the last,
    /// 2 the one before (A1111's "Clip skip"; Stable Diffusion models only).
    pub clip_skip: usize,
    /// Draw at the model's size, then redraw at `size` (Stable Diffusion models only).
    pub hires: Option<HiresRef>,
    /// ControlNets with their control images, in order (Stable Diffusion models only).
    pub controls: Vec<ControlRef>,
    /// Noise seed.
    pub seed: u64,
    /// Output side in pixels (8..=2048).
    pub size: u32,
    /// Denoising steps (1..=200).
    pub steps: u32,
    /// Classifier-free guidance scale (0..=30).
    pub guidance: f32,
    /// Whether the image must wrap seamlessly.
    pub tileable: bool,
    /// Pixel-art post-processing, if any.
    pub pixel_art: Option<PixelArt>,
    /// Frame settings; `Some` exactly for animations.
    pub animation: Option<Animation>,
    /// PBR maps to make, sorted and distinct; empty unless a material.
    pub pbr: Vec<PbrMap>,
    /// Img2img settings, if it starts from an image.
    pub img2img: Option<Img2Img>,
    /// The recipe file it came from, relative to the recipe root.
    pub file: PathBuf,
    /// The line where the asset starts (1, or its `[assets.<name>]` header).
    pub line: usize,
}

impl AssetRecipe {
    /// The recipe with every default filled in, as a JSON value with a stable shape (no
    /// `file`/`line`; paths with `/` separators); the provenance manifest records it.
    ///
    /// Every key is always present (`null` when unused). `seed` is a decimal string:
    /// JCS writes numbers as doubles, which would merge seeds above 2^53.
    pub fn canonical(&self) -> Value {
        let path = |p: &Path| paths::slashed(p);
        let model = match &self.model {
            ModelRef::House => json!({ "type": "house" }),
            ModelRef::Folder(p) => json!({ "type": "folder", "path": path(p) }),
            ModelRef::Registry(name) => json!({ "type": "registry", "name": name }),
        };
        let pixel_art = self.pixel_art.as_ref().map(|px| {
            let palette = match &px.palette {
                Palette::Colors(n) => json!({ "type": "colors", "count": n }),
                Palette::Hex(colors) => {
                    let hex: Vec<String> = colors
                        .iter()
                        .map(|[r, g, b]| format!("#{r:02x}{g:02x}{b:02x}"))
                        .collect();
                    json!({ "type": "hex", "colors": hex })
                }
                Palette::File(p) => json!({ "type": "file", "path": path(p) }),
            };
            json!({ "palette": palette, "scale": px.scale })
        });
        let animation = self
            .animation
            .map(|a| json!({ "frames": a.frames, "fps": a.fps, "loop": a.looped }));
        let img2img = self.img2img.as_ref().map(|i| {
            let source = match &i.source {
                Source::File(p) => json!({ "type": "file", "path": path(p) }),
                Source::Recipe(name) => json!({ "type": "recipe", "name": name }),
            };
            let mut img2img = json!({ "source": source, "strength": short_float(i.strength) });
            // Only when set, so that the keys of recipes without a mask stay as they were.
            if let Some(mask) = &i.mask {
                img2img["mask"] = json!(path(mask));
            }
            img2img
        });
        let pbr: Vec<&str> = self.pbr.iter().map(|m| m.as_str()).collect();
        let mut canonical = json!({
            "name": self.name,
            "kind": self.kind.as_str(),
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "model": model,
            "seed": self.seed.to_string(),
            "size": self.size,
            "steps": self.steps,
            "guidance": short_float(self.guidance),
            "tileable": self.tileable,
            "pixel_art": pixel_art,
            "animation": animation,
            "pbr": pbr,
            "img2img": img2img,
        });
        // Only recipes with LoRAs have the key, so that manifests written before LoRAs
        // existed still match their recipes.
        if !self.loras.is_empty() {
            let loras: Vec<Value> = self
                .loras
                .iter()
                .map(|l| {
                    let mut lora = json!({ "file": path(&l.file), "scale": l.scale });
                    // Only what is set, so that older manifests match.
                    if let Some(text) = l.text_scale {
                        lora["text_scale"] = json!(text);
                    }
                    if let Some(rank) = l.rank {
                        lora["rank"] = json!(rank);
                    }
                    if let Some(blocks) = &l.blocks {
                        lora["blocks"] = json!(blocks.ratios());
                    }
                    lora
                })
                .collect();
            canonical["loras"] = Value::Array(loras);
        }
        if !self.embeddings.is_empty() {
            let files: Vec<Value> = self.embeddings.iter().map(|f| json!(path(f))).collect();
            canonical["embeddings"] = Value::Array(files);
        }
        if let Some(vae) = &self.vae {
            canonical["vae"] = json!(path(vae));
        }
        if let Some(refiner) = &self.refiner {
            canonical["refiner"] =
                json!({ "model": path(&refiner.model), "switch": refiner.switch });
        }
        if let Some(sampler) = self.sampler {
            canonical["sampler"] = json!(sampler.name());
        }
        if self.guidance_rescale > 0.0 {
            canonical["guidance_rescale"] = json!(short_float(self.guidance_rescale));
        }
        if self.clip_skip != 1 {
            canonical["clip_skip"] = json!(self.clip_skip);
        }
        if let Some(hires) = &self.hires {
            canonical["hires"] =
                json!({ "strength": short_float(hires.strength), "steps": hires.steps });
            match &hires.upscaler {
                UpscalerRef::Latent => {}
                UpscalerRef::Lanczos => canonical["hires"]["upscaler"] = json!("lanczos"),
                UpscalerRef::File(file) => canonical["hires"]["upscaler"] = json!(path(file)),
            }
        }
        let controls: Vec<Value> = self
            .controls
            .iter()
            .map(|control| {
                let mut canonical = json!({
                    "model": path(&control.model),
                    "image": path(&control.image),
                    "scale": control.scale,
                    "start": control.start,
                    "end": control.end,
                    "guess_mode": control.guess_mode,
                });
                // Only when set, so that the keys of recipes without one stay as they were.
                match &control.preprocess {
                    Some(Preprocess::Canny { low, high }) => {
                        canonical["preprocess"] = json!({ "canny": [low, high] });
                    }
                    Some(Preprocess::Mlsd {
                        annotator,
                        thresholds: (value, distance),
                    }) => {
                        canonical["preprocess"] = json!({ "mlsd": {
                            "annotator": path(annotator),
                            "thresholds": [value, distance],
                        } });
                    }
                    Some(other) => {
                        let settings = match other.annotator() {
                            Some(file) => json!({ "annotator": path(file) }),
                            None => json!({}),
                        };
                        canonical["preprocess"] = json!({ other.name(): settings });
                    }
                    None => {}
                }
                canonical
            })
            .collect();
        // One ControlNet keeps the object it was before several were possible.
        match <[Value; 1]>::try_from(controls) {
            Ok([one]) => canonical["control"] = one,
            Err(many) if !many.is_empty() => canonical["control"] = Value::Array(many),
            Err(_) => {}
        }
        canonical
    }

    /// RFC 8785 (JCS) bytes of [`canonical`](Self::canonical); the cache key hashes these.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serialising a `serde_json::Value` into a Vec cannot fail: its numbers are finite.
        serde_jcs::to_vec(&self.canonical()).expect("a JSON value always canonicalises")
    }

    /// The folder (relative to the root) where its outputs go: the recipe file's folder.
    pub fn output_dir(&self) -> PathBuf {
        self.file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// An `f32` as the shortest decimal that reads back as it (`0.6`, not `0.6000000238418579`).
fn short_float(x: f32) -> Value {
    Value::from(x.to_string().parse::<f64>().unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(text: &str) -> Vec<u8> {
        let assets =
            parse(Path::new("a/potion.recipe.toml"), text).unwrap_or_else(|e| panic!("{e:?}"));
        assets[0].canonical_bytes()
    }

    #[test]
    fn canonical_bytes_ignore_spelling_and_defaults() {
        let short = bytes("kind = \"sprite\"\nprompt = \"red potion\"\nsource = \"b.png\"\n");
        let long = bytes(
            "source = \"./b.png\"   # same file\nstrength = 0.6\nguidance = 4.0\nsteps = 20\nsize = 64\n\
             seed = 0\nmodel = \"house\"\nnegative_prompt = \"\"\nprompt = \"  red potion\"\n\
             tileable = false\nkind = \"sprite\"\n",
        );
        assert_eq!(short, long);
        assert_ne!(
            short,
            bytes("kind = \"sprite\"\nprompt = \"blue potion\"\nsource = \"b.png\"\n")
        );
        assert!(std::str::from_utf8(&short).is_ok_and(|s| s.contains(r#""path":"a/b.png""#)));
    }

    #[test]
    fn canonical_shape_is_stable() {
        let recipe = &parse(
            Path::new("m/rock.recipe.toml"),
            "kind = \"material\"\nprompt = \"rock\"\nseed = 18446744073709551615\nguidance = 7.1\n\
             pixel_art = { colors = 8 }\npbr = [\"roughness\", \"normal\"]\n",
        )
        .expect("valid")[0];
        let expected = json!({
            "name": "rock", "kind": "material", "prompt": "rock", "negative_prompt": "",
            "model": { "type": "house" }, "seed": "18446744073709551615", "size": 64, "steps": 20,
            "guidance": 7.1, "tileable": true,
            "pixel_art": { "palette": { "type": "colors", "count": 8 }, "scale": 1 },
            "animation": null, "pbr": ["normal", "roughness"], "img2img": null,
        });
        assert_eq!(recipe.canonical(), expected);
        assert_eq!(Kind::Material.to_string(), "material");
    }
}
