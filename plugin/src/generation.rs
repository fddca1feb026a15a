//! Background generation: a recipe loaded or changed starts a pipeline build on the async
//! compute pool (never blocking a frame); when it ends, each asset's image goes into
//! `Assets<Image>` — replacing the previous one under the same handle — and a message says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use autonomy_pipeline::build::provenance::Manifest;
use autonomy_pipeline::build::{self, BuildOptions, BuildReport, Outcome};
use bevy::asset::RenderAssetUsages;
use bevy::image::{
    CompressedImageFormats, Image, ImageAddressMode, ImageSampler, ImageSamplerDescriptor,
    ImageType,
};
use bevy::prelude::*;
use bevy::tasks::{AsyncComputeTaskPool, Task, block_on, poll_once};

use crate::recipe_asset::Recipe;

/// A generation run began (recipes changed).
#[derive(Message, Debug, Clone)]
pub struct GenerationStarted;

/// An asset's image is ready in `Assets<Image>` (first made, or made again after an edit).
#[derive(Message, Debug, Clone)]
pub struct AssetGenerated {
    /// `folder/name` of the asset, relative to the recipes folder.
    pub label: String,
    /// Its image: the sprite or texture, an animation's sprite sheet, a material's albedo.
    /// The handle stays the same when the asset is made again.
    pub image: Handle<Image>,
    /// Whether it was generated now (false: taken from the pipeline's cache).
    pub generated: bool,
    /// For animations: the frames' rectangles in the sheet (same handle across remakes).
    pub atlas: Option<Handle<TextureAtlasLayout>>,
    /// For animations: how long each frame shows (from the recipe's `fps`).
    pub frame_time: Option<Duration>,
}

/// An asset could not be made; its previous image, if any, stays.
#[derive(Message, Debug, Clone)]
pub struct GenerationFailed {
    /// `folder/name` of the asset, or the recipe file for recipe errors.
    pub label: String,
    /// What went wrong, naming file, line and field where the recipe is at fault.
    pub message: String,
}

/// The state of background generation.
#[derive(Resource)]
pub struct Generation {
    /// What builds run with.
    pub options: BuildOptions,
    /// The image of every asset made so far, by label.
    pub images: HashMap<String, Handle<Image>>,
    /// The atlas layout of every animation made so far, by label.
    pub atlases: HashMap<String, Handle<TextureAtlasLayout>>,
    /// Recipe handles, kept so the asset server watches them.
    pub recipes: Vec<Handle<Recipe>>,
    /// The recipes folder as the asset server names it (e.g. `recipes`).
    pub asset_folder: PathBuf,
    dirty: bool,
    running: Option<Task<Result<BuildReport, String>>>,
}

impl Generation {
    /// Generation with `options` (its root is the recipes folder, which the asset server
    /// names `asset_folder`).
    pub fn new(options: BuildOptions, asset_folder: PathBuf) -> Self {
        Self {
            options,
            images: HashMap::new(),
            atlases: HashMap::new(),
            recipes: Vec::new(),
            asset_folder,
            dirty: false,
            running: None,
        }
    }

    /// Starts watching a recipe file that appeared after start-up (`file` relative to the
    /// recipes folder): loading it makes its asset, and every later save remakes it.
    pub fn watch(&mut self, server: &AssetServer, file: &Path) {
        let handle: Handle<Recipe> = server.load(self.asset_folder.join(file));
        if !self.recipes.contains(&handle) {
            self.recipes.push(handle);
        }
    }

    /// Whether a build is running or waiting to run.
    pub fn busy(&self) -> bool {
        self.dirty || self.running.is_some()
    }
}

/// Marks generation as needed when a recipe is loaded or edited.
pub fn notice_recipe_changes(
    mut events: MessageReader<AssetEvent<Recipe>>,
    mut generation: ResMut<Generation>,
) {
    for event in events.read() {
        if matches!(
            event,
            AssetEvent::Added { .. } | AssetEvent::Modified { .. }
        ) {
            generation.dirty = true;
        }
    }
}

/// Starts a build on the async compute pool when one is needed and none is running.
pub fn start_generation(
    mut generation: ResMut<Generation>,
    mut started: MessageWriter<GenerationStarted>,
) {
    if !generation.dirty || generation.running.is_some() {
        return;
    }
    generation.dirty = false;
    let options = generation.options.clone();
    let task = AsyncComputeTaskPool::get()
        .spawn(async move { build::build(&options, &|_| {}).map_err(|error| error.to_string()) });
    generation.running = Some(task);
    started.write(GenerationStarted);
}

/// Collects a finished build: images into `Assets<Image>`, messages out.
pub fn finish_generation(
    mut generation: ResMut<Generation>,
    mut images: ResMut<Assets<Image>>,
    mut layouts: ResMut<Assets<TextureAtlasLayout>>,
    mut generated: MessageWriter<AssetGenerated>,
    mut failed: MessageWriter<GenerationFailed>,
) {
    let Some(task) = generation.running.as_mut() else {
        return;
    };
    let Some(result) = block_on(poll_once(task)) else {
        return;
    };
    generation.running = None;
    let report = match result {
        Ok(report) => report,
        Err(message) => {
            failed.write(GenerationFailed {
                label: generation.options.root.display().to_string(),
                message,
            });
            return;
        }
    };
    for error in &report.recipe_errors {
        failed.write(GenerationFailed {
            label: error.file.display().to_string(),
            message: error.to_string(),
        });
    }
    let root = generation.options.root.clone();
    for asset in &report.assets {
        if let Outcome::Failed(message) = &asset.outcome {
            failed.write(GenerationFailed {
                label: asset.label.clone(),
                message: message.clone(),
            });
            continue;
        }
        let known = generation.images.contains_key(&asset.label);
        if known && asset.outcome == Outcome::UpToDate {
            continue;
        }
        let made = match made_asset(&root, &asset.files) {
            Ok(made) => made,
            Err(message) => {
                failed.write(GenerationFailed {
                    label: asset.label.clone(),
                    message,
                });
                continue;
            }
        };
        let image =
            match replace_or_add(&mut images, generation.images.get(&asset.label), made.image) {
                Ok(handle) => handle,
                Err(message) => {
                    failed.write(GenerationFailed {
                        label: asset.label.clone(),
                        message,
                    });
                    continue;
                }
            };
        generation.images.insert(asset.label.clone(), image.clone());
        let atlas = match made.atlas {
            Some(layout) => {
                match replace_or_add(&mut layouts, generation.atlases.get(&asset.label), layout) {
                    Ok(handle) => {
                        generation
                            .atlases
                            .insert(asset.label.clone(), handle.clone());
                        Some(handle)
                    }
                    Err(message) => {
                        failed.write(GenerationFailed {
                            label: asset.label.clone(),
                            message,
                        });
                        continue;
                    }
                }
            }
            None => None,
        };
        generated.write(AssetGenerated {
            label: asset.label.clone(),
            image,
            generated: matches!(asset.outcome, Outcome::Built(_)),
            atlas,
            frame_time: made.frame_time,
        });
    }
}

/// What a built asset gives the game.
struct Made {
    image: Image,
    atlas: Option<TextureAtlasLayout>,
    frame_time: Option<Duration>,
}

/// Puts `asset` under `handle` when there is one (so users of the handle see the new one), or
/// adds it.
fn replace_or_add<A: Asset>(
    assets: &mut Assets<A>,
    handle: Option<&Handle<A>>,
    asset: A,
) -> Result<Handle<A>, String> {
    match handle {
        Some(handle) => assets
            .insert(handle.id(), asset)
            .map(|()| handle.clone())
            .map_err(|error| error.to_string()),
        None => Ok(assets.add(asset)),
    }
}

/// The image that shows an asset (a material's albedo, an animation's sheet, else its PNG),
/// with a repeating sampler for tileable textures, and an animation's atlas and frame time.
fn made_asset(root: &Path, files: &[PathBuf]) -> Result<Made, String> {
    let named = |suffix: &str| {
        files
            .iter()
            .find(|file| file.to_string_lossy().ends_with(suffix))
    };
    let file = named(".albedo.png")
        .or_else(|| named(".sheet.png"))
        .or_else(|| named(".png"));
    let file = file.ok_or_else(|| "the asset has no PNG".to_string())?;
    let path = root.join(file);
    let manifest: Option<Manifest> = std::fs::read(root.join(manifest_of(file)))
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok());
    let recipe = manifest.map(|manifest| manifest.recipe).unwrap_or_default();
    let mut image = load_png(&path)?;
    if recipe["tileable"] == serde_json::Value::Bool(true) {
        image.sampler = ImageSampler::Descriptor(ImageSamplerDescriptor {
            address_mode_u: ImageAddressMode::Repeat,
            address_mode_v: ImageAddressMode::Repeat,
            ..ImageSamplerDescriptor::nearest()
        });
    }
    let atlas = match named(".atlas.json") {
        Some(file) => Some(atlas_layout(&root.join(file))?),
        None => None,
    };
    let frame_time = recipe["animation"]["fps"]
        .as_f64()
        .filter(|fps| *fps > 0.0)
        .map(|fps| Duration::from_secs_f64(1.0 / fps));
    Ok(Made {
        image,
        atlas,
        frame_time,
    })
}

/// Reads a PNG into an `Image` with a nearest-neighbour sampler (pixel art stays crisp).
pub fn load_png(path: &Path) -> Result<Image, String> {
    let bytes =
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    Image::from_buffer(
        &bytes,
        ImageType::Extension("png"),
        CompressedImageFormats::NONE,
        true,
        ImageSampler::nearest(),
        RenderAssetUsages::default(),
    )
    .map_err(|error| format!("{} is not a PNG Bevy reads: {error}", path.display()))
}

/// The pipeline's `<name>.atlas.json` (`{"size": [w, h], "textures": [{"min": [x, y], "max": [x, y]}…]}`).
pub fn atlas_layout(path: &Path) -> Result<TextureAtlasLayout, String> {
    #[derive(serde::Deserialize)]
    struct Rect {
        min: [u32; 2],
        max: [u32; 2],
    }
    #[derive(serde::Deserialize)]
    struct Atlas {
        size: [u32; 2],
        textures: Vec<Rect>,
    }
    let text =
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let atlas: Atlas =
        serde_json::from_slice(&text).map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(TextureAtlasLayout {
        size: UVec2::from(atlas.size),
        textures: atlas
            .textures
            .iter()
            .map(|r| URect::new(r.min[0], r.min[1], r.max[0], r.max[1]))
            .collect(),
    })
}

/// The sidecar manifest beside an asset's file.
fn manifest_of(file: &Path) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = [".albedo.png", ".sheet.png", ".png"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(&name);
    file.with_file_name(format!("{stem}{}", build::MANIFEST_SUFFIX))
}
