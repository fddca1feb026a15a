//! Animations: animated GIFs, and sprite sheets with a Bevy texture-atlas layout.

use std::borrow::Cow;
use std::collections::HashMap;

use gif::{DisposalMethod, Encoder, Frame, Repeat};
use image::{RgbaImage, imageops};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::PostError;
use super::pixel_art::{Palette, histogram, is_opaque};

/// The most frames [`encode_gif`] accepts.
pub const MAX_GIF_FRAMES: usize = 1024;

/// Encodes `frames` as an animated GIF at `fps` frames per second, repeating forever if
/// `looped`, else playing once.
///
/// GIF has 1-bit alpha: pixels below 50% alpha become the transparent index, the rest opaque.
/// Each frame gets its own palette of at most 255 colours ([`Palette::choose`]: exact when the
/// frame has no more, else median cut in Oklab, then k-means in RGB so the frame stays as close
/// to its source as 255 colours allow; pixels mapped to the nearest in RGB), quantised in
/// parallel. The delay is `100 / fps` hundredths of a second, rounded, at least 2 (browsers
/// slow shorter delays down); frames are disposed to the background so transparent areas do
/// not smear.
///
/// # Errors
/// No frames, more than [`MAX_GIF_FRAMES`], frames of different sizes, a side over 65535,
/// `fps == 0`, or an encoder failure.
pub fn encode_gif(frames: &[RgbaImage], fps: u32, looped: bool) -> Result<Vec<u8>, PostError> {
    let (width, height) = common_size(frames, "GIF")?;
    if frames.len() > MAX_GIF_FRAMES {
        return Err(PostError::TooManyFrames {
            count: frames.len(),
            max: MAX_GIF_FRAMES,
        });
    }
    if fps == 0 {
        return Err(PostError::InvalidParameter {
            what: "GIF fps",
            expected: "at least 1",
            got: 0,
        });
    }
    let (Ok(gif_width), Ok(gif_height)) = (u16::try_from(width), u16::try_from(height)) else {
        return Err(PostError::TooLarge {
            what: "GIF",
            width: width.into(),
            height: height.into(),
            limit: u16::MAX.into(),
        });
    };
    let delay = ((100 + fps / 2) / fps).max(2) as u16;
    let gif_frames: Vec<Frame<'static>> = frames
        .par_iter()
        .map(|frame| quantise(frame, gif_width, gif_height, delay))
        .collect();
    let mut encoder = Encoder::new(Vec::new(), gif_width, gif_height, &[])?;
    let repeat = if looped {
        Repeat::Infinite
    } else {
        Repeat::Finite(0)
    };
    encoder.set_repeat(repeat)?;
    for frame in &gif_frames {
        encoder.write_frame(frame)?;
    }
    let bytes = encoder.into_inner()?;
    tracing::debug!(
        frames = frames.len(),
        width,
        height,
        delay,
        bytes = bytes.len(),
        "GIF encoded"
    );
    Ok(bytes)
}

/// Lloyd rounds in RGB after the perceptual palette: a GIF frame is judged by how close its
/// pixels stay to the source (PSNR), and k-means in RGB minimises exactly that squared error.
const RGB_ROUNDS: usize = 6;

/// One GIF frame with a local palette; the index after the colours is the transparent one.
fn quantise(image: &RgbaImage, width: u16, height: u16, delay: u16) -> Frame<'static> {
    // Game art repeats colours: work on each distinct one once.
    let histogram = histogram(&[image]);
    let mut palette = Palette::from_histogram(histogram.clone(), 255, 1)
        .colors()
        .to_vec();
    if histogram.len() > palette.len() {
        refine_rgb(&mut palette, &histogram);
    }
    let index: HashMap<[u8; 3], u8> = histogram
        .iter()
        .filter_map(|&(color, _)| Some((color, nearest_rgb(&palette, color)? as u8)))
        .collect();
    let transparent = palette.len() as u8;
    let buffer = image
        .pixels()
        .map(|p| {
            if is_opaque(p[3]) {
                index
                    .get(&[p[0], p[1], p[2]])
                    .copied()
                    .unwrap_or(transparent)
            } else {
                transparent
            }
        })
        .collect();
    let mut colors = palette.concat();
    colors.extend([0, 0, 0]);
    Frame {
        width,
        height,
        delay,
        dispose: DisposalMethod::Background,
        transparent: Some(transparent),
        palette: Some(colors),
        buffer: Cow::Owned(buffer),
        ..Frame::default()
    }
}

/// [`RGB_ROUNDS`] of k-means in RGB over the frame's colour histogram, from `palette`.
fn refine_rgb(palette: &mut [[u8; 3]], histogram: &[([u8; 3], u64)]) {
    for _ in 0..RGB_ROUNDS {
        let mut sums = vec![([0u64; 3], 0u64); palette.len()];
        for &(color, count) in histogram {
            if let Some(i) = nearest_rgb(palette, color) {
                let (sum, total) = &mut sums[i];
                for channel in 0..3 {
                    sum[channel] += u64::from(color[channel]) * count;
                }
                *total += count;
            }
        }
        for (entry, (sum, total)) in palette.iter_mut().zip(&sums) {
            if *total > 0 {
                *entry = sum.map(|s| ((s + total / 2) / total) as u8);
            }
        }
    }
}

/// The index of the palette colour nearest to `color` in RGB (the first of equals).
fn nearest_rgb(palette: &[[u8; 3]], color: [u8; 3]) -> Option<usize> {
    palette
        .iter()
        .map(|entry| {
            (0..3)
                .map(|c| (i32::from(entry[c]) - i32::from(color[c])).pow(2))
                .sum::<i32>()
        })
        .enumerate()
        .min_by_key(|&(i, d)| (d, i))
        .map(|(i, _)| i)
}

/// A texture atlas layout in the serde shape of Bevy's `bevy_image::TextureAtlasLayout`
/// (`size: UVec2`, `textures: Vec<URect>`), so a game can deserialise the JSON straight into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtlasLayout {
    /// Width and height of the whole sheet in pixels.
    pub size: [u32; 2],
    /// Each frame's rectangle, in frame order.
    pub textures: Vec<AtlasRect>,
}

/// A pixel rectangle, like Bevy's `URect`: `min` inclusive, `max` exclusive, origin top-left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtlasRect {
    /// Top-left corner `[x, y]`.
    pub min: [u32; 2],
    /// Bottom-right corner `[x, y]`, exclusive.
    pub max: [u32; 2],
}

impl AtlasLayout {
    /// The layout as JSON, e.g.
    /// `{"size":[64,32],"textures":[{"min":[0,0],"max":[32,32]},{"min":[32,0],"max":[64,32]}]}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("arrays of integers always serialise")
    }

    /// Parses a layout written by [`to_json`](Self::to_json) (or by Bevy's serde).
    ///
    /// # Errors
    /// [`PostError::AtlasJson`] when `json` is not a layout.
    pub fn from_json(json: &str) -> Result<Self, PostError> {
        Ok(serde_json::from_str(json)?)
    }
}

/// Packs `frames` into a sheet, row-major, `columns` per row (fewer if there are fewer frames),
/// without padding, and returns it with its atlas layout.
///
/// # Errors
/// No frames, frames of different sizes, `columns == 0`, or a sheet side over `u32::MAX`.
pub fn sprite_sheet(
    frames: &[RgbaImage],
    columns: u32,
) -> Result<(RgbaImage, AtlasLayout), PostError> {
    let (width, height) = common_size(frames, "sprite sheet")?;
    if columns == 0 {
        return Err(PostError::InvalidParameter {
            what: "sprite sheet columns",
            expected: "at least 1",
            got: 0,
        });
    }
    let count = u64::try_from(frames.len()).unwrap_or(u64::MAX);
    let columns = u64::from(columns).min(count);
    let rows = count.div_ceil(columns);
    let (sheet_width, sheet_height) = (u64::from(width) * columns, u64::from(height) * rows);
    let (Ok(sheet_width), Ok(sheet_height)) =
        (u32::try_from(sheet_width), u32::try_from(sheet_height))
    else {
        return Err(PostError::TooLarge {
            what: "sprite sheet",
            width: sheet_width,
            height: sheet_height,
            limit: u32::MAX.into(),
        });
    };
    let mut sheet = RgbaImage::new(sheet_width, sheet_height);
    let mut textures = Vec::with_capacity(frames.len());
    for (index, frame) in (0u64..).zip(frames) {
        // Both fit in u32: they are below the sheet's sides.
        let x = (index % columns) as u32 * width;
        let y = (index / columns) as u32 * height;
        imageops::replace(&mut sheet, frame, x.into(), y.into());
        textures.push(AtlasRect {
            min: [x, y],
            max: [x + width, y + height],
        });
    }
    let layout = AtlasLayout {
        size: [sheet_width, sheet_height],
        textures,
    };
    Ok((sheet, layout))
}

/// The size all `frames` share.
fn common_size(frames: &[RgbaImage], what: &'static str) -> Result<(u32, u32), PostError> {
    let expected = frames
        .first()
        .ok_or(PostError::NoFrames { what })?
        .dimensions();
    match frames.iter().position(|f| f.dimensions() != expected) {
        Some(index) => Err(PostError::FrameSizeMismatch {
            index,
            expected,
            found: frames[index].dimensions(),
        }),
        None => Ok(expected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(count: usize, width: u32, height: u32) -> Vec<RgbaImage> {
        vec![RgbaImage::new(width, height); count]
    }

    #[test]
    fn encode_gif_rejects_bad_input() {
        let err = |result: Result<Vec<u8>, PostError>| result.expect_err("invalid").to_string();
        assert_eq!(err(encode_gif(&[], 10, true)), "GIF: no frames");
        let mixed = [
            RgbaImage::new(4, 4),
            RgbaImage::new(4, 4),
            RgbaImage::new(4, 5),
        ];
        assert_eq!(
            err(encode_gif(&mixed, 10, true)),
            "frame 2 is (4, 5) (width, height), but frame 0 is (4, 4)"
        );
        assert_eq!(
            err(encode_gif(&frames(2, 4, 4), 0, true)),
            "GIF fps must be at least 1, got 0"
        );
        assert!(err(encode_gif(&frames(MAX_GIF_FRAMES + 1, 1, 1), 10, true)).contains("1025"));
        assert!(err(encode_gif(&frames(1, 70_000, 1), 10, true)).contains("65535"));
    }

    fn psnr(source: &RgbaImage, decoded: &[[u8; 3]]) -> f64 {
        let squared: f64 = source
            .pixels()
            .zip(decoded)
            .flat_map(|(a, b)| (0..3).map(move |c| (f64::from(a[c]) - f64::from(b[c])).powi(2)))
            .sum();
        let mse = squared / (decoded.len() as f64 * 3.0);
        10.0 * (255.0f64.powi(2) / mse).log10()
    }

    /// A frame with far more than 255 colours comes back closer to its source than the
    /// perceptual (Oklab) palette and mapping alone would bring it: the RGB k-means is what
    /// PSNR measures.
    #[test]
    fn many_colour_frames_keep_their_fidelity() {
        let frame = RgbaImage::from_fn(96, 96, |x, y| {
            let wave = ((x as f32 * 0.21).sin() * (y as f32 * 0.13).cos() * 60.0) as i32;
            let channel = |base: i32| (base + wave).clamp(0, 255) as u8;
            image::Rgba([
                channel(x as i32 * 2),
                channel(y as i32 * 2),
                channel(128),
                255,
            ])
        });
        let gif = encode_gif(std::slice::from_ref(&frame), 10, true).unwrap();
        let mut decoder = gif::DecodeOptions::new();
        decoder.set_color_output(gif::ColorOutput::RGBA);
        let mut decoder = decoder.read_info(gif.as_slice()).unwrap();
        let decoded: Vec<[u8; 3]> = decoder
            .read_next_frame()
            .unwrap()
            .unwrap()
            .buffer
            .chunks(4)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        let ours = psnr(&frame, &decoded);

        let perceptual = Palette::choose(&[&frame], 255);
        let nearest = perceptual.matcher();
        let mapped: Vec<[u8; 3]> = frame
            .pixels()
            .map(|p| perceptual.colors()[nearest([p[0], p[1], p[2]]).unwrap()])
            .collect();
        let oklab_only = psnr(&frame, &mapped);
        assert!(
            ours > oklab_only + 1.0,
            "RGB k-means {ours:.1} dB vs Oklab palette alone {oklab_only:.1} dB"
        );
    }

    #[test]
    fn sprite_sheet_lays_frames_out_row_major() {
        let (sheet, layout) = sprite_sheet(&frames(5, 3, 2), 2).expect("sheet");
        assert_eq!(sheet.dimensions(), (6, 6));
        assert_eq!(layout.size, [6, 6]);
        let mins: Vec<[u32; 2]> = layout.textures.iter().map(|r| r.min).collect();
        assert_eq!(mins, [[0, 0], [3, 0], [0, 2], [3, 2], [0, 4]]);
        assert_eq!(layout.textures[4].max, [3, 6]);
        let (sheet, _) = sprite_sheet(&frames(2, 3, 2), 8).expect("few frames");
        assert_eq!(sheet.dimensions(), (6, 2));
        assert!(sprite_sheet(&frames(2, 3, 2), 0).is_err());
        assert!(sprite_sheet(&[], 2).is_err());
    }

    #[test]
    fn atlas_json_has_bevy_shape() {
        let layout = AtlasLayout {
            size: [64, 32],
            textures: vec![AtlasRect {
                min: [32, 0],
                max: [64, 32],
            }],
        };
        let value: serde_json::Value = serde_json::from_str(&layout.to_json()).expect("json");
        assert_eq!(
            value,
            serde_json::json!({"size": [64, 32], "textures": [{"min": [32, 0], "max": [64, 32]}]})
        );
        assert!(AtlasLayout::from_json("{\"size\": [1]}").is_err());
    }
}
