//! Making one asset's files from its recipe: generate at the model's size, then the kind's
//! post-processing (sprite fit, pixel art, animation GIF + sheet + atlas, PBR material).

use image::{GrayImage, RgbaImage};
use std::path::Path;

use super::BuildError;
use crate::generator::{GenerateRequest, Generator, InitImage};
use crate::material::{self, MapKind};
use crate::post::{self, Palette};
use crate::recipe::{self, AssetRecipe, Kind, PbrMap};

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
    };
    let images = inputs
        .generator
        .generate(&request)
        .map_err(|e| fail(e.to_string()))?;
    let images = match &recipe.pixel_art {
        Some(art) => pixel_art(recipe, art, &images, inputs.palette).map_err(fail)?,
        None => images
            .iter()
            .map(|image| finish(recipe.kind, image, recipe.size))
            .collect(),
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
fn finish(kind: Kind, image: &RgbaImage, size: u32) -> RgbaImage {
    match kind {
        Kind::Sprite => post::fit(&post::clean_background(image, SPRITE_ALPHA_FLOOR), size),
        _ => scale_to(image, size),
    }
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
            Kind::Sprite => post::fit(&post::clean_background(image, SPRITE_ALPHA_FLOOR), grid),
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
