//! Making one asset's files from its recipe: generate at the model's size, then the kind's
//! post-processing (sprite fit, pixel art, animation GIF + sheet + atlas, PBR material).

use image::{GrayImage, RgbImage, RgbaImage};
use std::path::Path;

use super::BuildError;
use crate::generator::{Control, GenerateRequest, Generator, Hires, HiresUpscaler, InitImage};
use crate::material::{self, MapKind};
use crate::post::{self, Palette};
use crate::recipe::{self, AssetRecipe, Kind, ModelRef, PbrMap, UpscalerRef};

/// How many times the texture repeats across the glTF quad, so the tiling shows.
const MATERIAL_TILING: f32 = 2.0;

/// Alpha (of 255) below which a sprite pixel is background.
const SPRITE_ALPHA_FLOOR: u8 = 16;

/// What a recipe's generation needs besides the recipe: the model, the decoded img2img
/// source and the palette (file already read).
pub struct Inputs<'a> {
    /// The model.
    pub generator: &'a dyn Generator,
    /// The img2img start image.
    pub source: Option<&'a RgbaImage>,
    /// Where to repaint the start image (white) and where to keep it (black).
    pub mask: Option<&'a GrayImage>,
    /// Each ControlNet's control image, in the recipe's order.
    pub controls: &'a [RgbImage],
    /// A fixed palette read from a file or the recipe, if any.
    pub palette: Option<&'a Palette>,
    /// An empty folder for files that are easier to write than to return (material maps).
    pub scratch: &'a Path,
}

/// One produced file: its name (beside the recipe) and bytes.
pub struct Produced {
    /// File name, e.g. `potion.png`.
    pub file: String,
    /// Content.
    pub bytes: Vec<u8>,
}

/// Generates `recipe`'s asset and post-processes it into its files.
pub fn produce(recipe: &AssetRecipe, inputs: &Inputs) -> Result<Vec<Produced>, BuildError> {
    let fail = |message| BuildError::asset(recipe, message);
    let frames = recipe.animation.map_or(1, |a| a.frames as usize);
    let request = GenerateRequest {
        prompt: recipe.prompt.clone(),
        negative_prompt: recipe.negative_prompt.clone(),
        seed: recipe.seed,
        steps: recipe.steps as usize,
        guidance: f64::from(recipe.guidance),
        count: frames,
        tileable: recipe.tileable,
        looped: recipe.animation.is_some_and(|a| a.looped),
        init: recipe.img2img.as_ref().and_then(|i| {
            inputs.source.map(|image| InitImage {
                image: image.clone(),
                strength: i.strength,
                mask: inputs.mask.cloned(),
            })
        }),
        sampler: recipe.sampler,
        guidance_rescale: f64::from(recipe.guidance_rescale),
        clip_skip: recipe.clip_skip,
        hires: recipe.hires.as_ref().map(|hires| Hires {
            size: recipe.size,
            strength: hires.strength,
            steps: hires.steps.unwrap_or(recipe.steps) as usize,
            upscaler: match hires.upscaler {
                UpscalerRef::Latent => HiresUpscaler::Latent,
                UpscalerRef::Lanczos => HiresUpscaler::Lanczos,
                UpscalerRef::File(_) => HiresUpscaler::Model,
            },
        }),
        control: recipe
            .controls
            .iter()
            .zip(inputs.controls)
            .map(|(c, image)| Control {
                image: image.clone(),
                scale: c.scale,
                start: c.start,
                end: c.end,
                guess_mode: c.guess_mode,
            })
            .collect(),
    };
    let native = inputs.generator.native_size();
    if matches!(recipe.model, ModelRef::Folder(_))
        && recipe.size > native
        && recipe.hires.is_none()
        && recipe.pixel_art.is_none()
    {
        tracing::warn!(
            asset = %recipe.name,
            "size {} is above the model's {native}: its pixels are repeated; set `hires_strength` (0.6) to redraw at {}",
            recipe.size,
            recipe.size
        );
    }
    let images = inputs
        .generator
        .generate(&request)
        .map_err(|e| fail(e.to_string()))?;
    let images = match &recipe.pixel_art {
        Some(art) => pixel_art(recipe, art, &images, inputs.palette).map_err(fail)?,
        None => images.iter().map(|image| finish(recipe, image)).collect(),
    };
    let name = &recipe.name;
    match recipe.kind {
        Kind::Texture | Kind::Sprite => Ok(vec![png(format!("{name}.png"), &images[0])?]),
        Kind::Animation => {
            let fps = recipe.animation.map_or(12, |a| a.fps);
            let looped = recipe.animation.is_none_or(|a| a.looped);
            let gif = post::encode_gif(&images, fps, looped).map_err(|e| fail(e.to_string()))?;
            let columns = (images.len() as f64).sqrt().ceil() as u32;
            let (sheet, atlas) =
                post::sprite_sheet(&images, columns).map_err(|e| fail(e.to_string()))?;
            Ok(vec![
                Produced {
                    file: format!("{name}.gif"),
                    bytes: gif,
                },
                png(format!("{name}.sheet.png"), &sheet)?,
                Produced {
                    file: format!("{name}.atlas.json"),
                    bytes: atlas.to_json().into_bytes(),
                },
            ])
        }
        Kind::Material => material_files(recipe, &images[0], inputs.scratch).map_err(fail),
    }
}

/// Scales a generated image to the asset size: sprites are trimmed and centred, everything
/// else is scaled whole (by whole factors where it can — nearest neighbour up, block means
/// down — so tiling stays exact).
fn finish(recipe: &AssetRecipe, image: &RgbaImage) -> RgbaImage {
    match recipe.kind {
        Kind::Sprite => post::fit(&cut_out(recipe, image), recipe.size),
        _ => scale_to(image, recipe.size),
    }
}

/// A sprite's subject alone: a plain background the generator painted keyed out (Stable
/// Diffusion paints one; the house model draws with alpha), faint pixels dropped. A painted
/// background of many colours stays, with a warning.
fn cut_out(recipe: &AssetRecipe, image: &RgbaImage) -> RgbaImage {
    let keyed = match post::key_background(image) {
        post::Background::Keyed { image, color } => {
            tracing::debug!(asset = %recipe.name, ?color, "keyed out the sprite's background");
            image
        }
        post::Background::Transparent => image.clone(),
        post::Background::Busy => {
            tracing::warn!(
                asset = %recipe.name,
                "the sprite's background is not one plain colour, so it stays opaque; ask for a plain one in the prompt (\"on a white background\")"
            );
            image.clone()
        }
    };
    post::clean_background(&keyed, SPRITE_ALPHA_FLOOR)
}

fn scale_to(image: &RgbaImage, size: u32) -> RgbaImage {
    let native = image.width().max(1);
    let square = image.height() == image.width();
    if size.is_multiple_of(native) && square {
        post::upscale_nearest(image, size / native)
    } else if native.is_multiple_of(size) && square {
        post::downscale_box(image, native / size)
    } else {
        image::imageops::resize(image, size, size, image::imageops::FilterType::Nearest)
    }
}

/// Pixel art: every frame reduced to a `size / scale` grid in one palette (chosen once over
/// all frames when it is adaptive), then scaled up by `scale`.
fn pixel_art(
    recipe: &AssetRecipe,
    art: &recipe::PixelArt,
    images: &[RgbaImage],
    fixed: Option<&Palette>,
) -> Result<Vec<RgbaImage>, String> {
    if !recipe.size.is_multiple_of(art.scale) {
        return Err(format!(
            "`size` {} is not a multiple of `pixel_art.scale` {}",
            recipe.size, art.scale
        ));
    }
    let grid = recipe.size / art.scale;
    let shaped: Vec<RgbaImage> = images
        .iter()
        .map(|image| match recipe.kind {
            Kind::Sprite => post::fit(&cut_out(recipe, image), grid),
            _ => scale_to(image, grid.max(image.width())),
        })
        .collect();
    let palette = match (&art.palette, fixed) {
        (recipe::Palette::Colors(n), _) => {
            Palette::choose(&shaped.iter().collect::<Vec<_>>(), usize::from(*n))
        }
        (_, Some(palette)) => palette.clone(),
        (_, None) => return Err("the palette was not loaded".into()),
    };
    Ok(shaped
        .iter()
        .map(|image| post::upscale_nearest(&post::pixelate(image, grid, &palette), art.scale))
        .collect())
}

fn material_files(
    recipe: &AssetRecipe,
    albedo: &RgbaImage,
    scratch: &Path,
) -> Result<Vec<Produced>, String> {
    let maps: Vec<MapKind> = recipe
        .pbr
        .iter()
        .map(|m| match m {
            PbrMap::Normal => MapKind::Normal,
            PbrMap::Roughness => MapKind::Roughness,
            PbrMap::Ao => MapKind::Ao,
        })
        .collect();
    let paths = material::write_material(scratch, &recipe.name, albedo, &maps, MATERIAL_TILING)
        .map_err(|e| e.to_string())?;
    paths
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(Produced {
                file: file_name(path),
                bytes,
            })
        })
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn png(file: String, image: &RgbaImage) -> Result<Produced, BuildError> {
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| BuildError::Encode {
            file: file.clone(),
            message: e.to_string(),
        })?;
    Ok(Produced { file, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;
    use std::path::Path;

    fn sprite_recipe(size: u32) -> AssetRecipe {
        let text = format!("kind = \"sprite\"\nprompt = \"a gem\"\nsize = {size}\n");
        recipe::parse(Path::new("gem.recipe.toml"), &text)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn a_sprite_drawn_on_a_plain_background_comes_out_on_transparency() {
        // What Stable Diffusion gives for "a blue gem on a white background": opaque.
        let painted = RgbaImage::from_fn(64, 64, |x, y| {
            let inside = (20..44).contains(&x) && (16..48).contains(&y);
            if inside {
                Rgba([30, 60, 220, 255])
            } else {
                Rgba([252, 251, 250, 255])
            }
        });
        let sprite = finish(&sprite_recipe(32), &painted);
        assert_eq!(sprite.dimensions(), (32, 32));
        assert_eq!(
            sprite.get_pixel(0, 0),
            &Rgba([0; 4]),
            "the background is gone"
        );
        assert_eq!(
            sprite.get_pixel(16, 16),
            &Rgba([30, 60, 220, 255]),
            "the gem stays"
        );
        // Trimmed to the gem (24×32) and fitted: it spans the canvas's height.
        assert_eq!(sprite.get_pixel(16, 0)[3], 255);
        assert_eq!(sprite.get_pixel(2, 16)[3], 0);
        // A busy picture stays as it is, opaque.
        let busy = RgbaImage::from_fn(32, 32, |x, y| {
            Rgba([
                (x * 37 % 256) as u8,
                (y * 91 % 256) as u8,
                ((x + y) * 53 % 256) as u8,
                255,
            ])
        });
        assert!(
            finish(&sprite_recipe(32), &busy)
                .pixels()
                .all(|p| p[3] == 255)
        );
    }
}
