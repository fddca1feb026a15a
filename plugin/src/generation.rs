//! Background generation: a recipe loaded or changed starts a pipeline build on the async
//! compute pool (never blocking a frame); when it ends, each asset's image goes into
//! `Assets<Image>` — replacing the previous one under the same handle — and a message says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    /// Recipe handles, kept so the asset server watches them.
    pub recipes: Vec<Handle<Recipe>>,
    dirty: bool,
    running: Option<Task<Result<BuildReport, String>>>,
}

impl Generation {
    /// Generation with `options` (its root is the recipes folder).
    pub fn new(options: BuildOptions) -> Self {
        Self {
            options,
            images: HashMap::new(),
            recipes: Vec::new(),
            dirty: false,
            running: None,
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
        let image = match main_image(&root, &asset.files) {
            Ok(image) => image,
            Err(message) => {
                failed.write(GenerationFailed {
                    label: asset.label.clone(),
                    message,
                });
                continue;
            }
        };
        let handle = match generation.images.get(&asset.label) {
            Some(handle) => {
                if let Err(error) = images.insert(handle.id(), image) {
                    failed.write(GenerationFailed {
                        label: asset.label.clone(),
                        message: error.to_string(),
                    });
                    continue;
                }
                handle.clone()
            }
            None => images.add(image),
        };
        generation
            .images
            .insert(asset.label.clone(), handle.clone());
        let made_now = matches!(asset.outcome, Outcome::Built(_));
        generated.write(AssetGenerated {
            label: asset.label.clone(),
            image: handle,
            generated: made_now,
        });
    }
}

/// The image that shows an asset: a material's albedo, an animation's sheet, else its PNG.
/// Tileable textures get a repeating sampler.
fn main_image(root: &Path, files: &[PathBuf]) -> Result<Image, String> {
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
    let bytes =
        std::fs::read(&path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let tileable = std::fs::read(root.join(manifest_of(file)))
        .ok()
        .and_then(|json| serde_json::from_slice::<Manifest>(&json).ok())
        .is_some_and(|manifest| manifest.recipe["tileable"] == serde_json::Value::Bool(true));
    let sampler = if tileable {
        ImageSampler::Descriptor(ImageSamplerDescriptor {
            address_mode_u: ImageAddressMode::Repeat,
            address_mode_v: ImageAddressMode::Repeat,
            ..ImageSamplerDescriptor::nearest()
        })
    } else {
        ImageSampler::nearest()
    };
    Image::from_buffer(
        &bytes,
        ImageType::Extension("png"),
        CompressedImageFormats::NONE,
        true,
        sampler,
        RenderAssetUsages::default(),
    )
    .map_err(|error| format!("{} is not a PNG Bevy reads: {error}", path.display()))
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
