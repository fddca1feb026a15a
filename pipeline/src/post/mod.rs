//! Post-processing of generated images: sprites, pixel art, seams, animations.
//!
//! Everything here takes straight-alpha [`image::RgbaImage`]s as the generator makes them:
//!
//! - [`background`](key_background): key out the plain background a generator that paints
//!   every pixel drew behind a sprite.
//! - [`sprite`](clean_background): clean a sprite's background, trim and [`fit`] it to a canvas,
//!   [`upscale_nearest`] for crisp previews, [`downscale_box`] to bring large model output
//!   down to the asset size.
//! - [`pixel_art`](pixelate): a [`Palette`] (parsed from lospec `.hex` / GIMP `.gpl`, or
//!   [chosen](Palette::choose) once from a set of images so animation frames share it) and
//!   [`pixelate`] to a grid with binary alpha.
//! - [`seam`]: how visible a texture's wrap-around seam is ([`SeamReport`]).
//! - [`animation`](encode_gif): animated GIF encoding and [`sprite_sheet`] packing with a Bevy
//!   `TextureAtlasLayout`-shaped [`AtlasLayout`].

mod animation;
mod background;
mod pixel_art;
mod seam;
mod sprite;

use std::path::PathBuf;

pub use animation::{AtlasLayout, AtlasRect, MAX_GIF_FRAMES, encode_gif, sprite_sheet};
pub use background::{Background, key_background};
pub use pixel_art::{Palette, pixelate};
pub use seam::{SeamReport, seam};
pub use sprite::{clean_background, downscale_box, fit, upscale_nearest};

/// Why a post-processing step failed.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// A palette colour is not `#rrggbb` or `rrggbb`.
    #[error("invalid colour {value:?} (entry {index}): expected `#rrggbb` or `rrggbb`")]
    InvalidColor {
        /// The text as given.
        value: String,
        /// Its position in the list, from 0.
        index: usize,
    },
    /// A palette file has a line that is neither a colour, a comment nor a header.
    #[error("{}:{line}: {message}", file.display())]
    PaletteSyntax {
        /// The palette file.
        file: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A palette has no colours.
    #[error("{what} has no colours")]
    EmptyPalette {
        /// Which palette: a file name or "the colour list".
        what: String,
    },
    /// An operation on frames was given none.
    #[error("{what}: no frames")]
    NoFrames {
        /// The operation.
        what: &'static str,
    },
    /// More frames than a GIF may hold here.
    #[error("GIF: {count} frames, at most {max} allowed")]
    TooManyFrames {
        /// Frames given.
        count: usize,
        /// The limit, [`MAX_GIF_FRAMES`].
        max: usize,
    },
    /// A frame's size differs from the first frame's.
    #[error("frame {index} is {found:?} (width, height), but frame 0 is {expected:?}")]
    FrameSizeMismatch {
        /// The frame's index.
        index: usize,
        /// The first frame's size.
        expected: (u32, u32),
        /// This frame's size.
        found: (u32, u32),
    },
    /// The output would be larger than its format allows.
    #[error("{what}: {width}x{height} exceeds the limit of {limit} pixels per side")]
    TooLarge {
        /// The output.
        what: &'static str,
        /// Its width.
        width: u64,
        /// Its height.
        height: u64,
        /// The largest side allowed.
        limit: u64,
    },
    /// A parameter is out of its range.
    #[error("{what} must be {expected}, got {got}")]
    InvalidParameter {
        /// The parameter.
        what: &'static str,
        /// Its valid range, in words.
        expected: &'static str,
        /// The value given.
        got: u64,
    },
    /// The GIF encoder failed.
    #[error("GIF encoding failed: {0}")]
    Gif(#[from] gif::EncodingError),
    /// Atlas layout JSON does not parse.
    #[error("atlas layout JSON: {0}")]
    AtlasJson(#[from] serde_json::Error),
}
