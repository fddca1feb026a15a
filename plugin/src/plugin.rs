//! [`AutonomyPlugin`]: where the recipes are, which model makes them, who signs them.

use std::path::PathBuf;

use alloy_signer_local::PrivateKeySigner;
use autonomy_pipeline::build::BuildOptions;
use bevy::image::TextureAtlasLayout;
use bevy::prelude::*;

use crate::generation::{
    AssetGenerated, Generation, GenerationFailed, GenerationStarted, finish_generation,
    notice_recipe_changes, start_generation,
};
use crate::recipe_asset::{Recipe, RecipeLoader};

/// Generates the assets that `*.recipe.toml` files under the asset folder describe, in the
/// background, and makes them again whenever a recipe is saved (with Bevy's `file_watcher`).
///
/// Add it after the `AssetPlugin` (e.g. with `DefaultPlugins`); `assets_dir` must be the folder
/// that `AssetPlugin::file_path` serves, as a path this process can open.
#[derive(Clone, Debug)]
pub struct AutonomyPlugin {
    /// The asset folder on disk (Bevy's default: `assets`).
    pub assets_dir: PathBuf,
    /// The recipes' folder inside it; outputs are written beside each recipe.
    pub recipes_dir: PathBuf,
    /// The model folder `model = "house"` means.
    pub house_model: PathBuf,
    /// The build cache (default: `.autonomy/cache` in the recipes folder).
    pub cache_dir: Option<PathBuf>,
    /// The creator's key: generated assets are signed with it (so they can be published).
    pub signer: Option<PrivateKeySigner>,
    /// The project's model folders, where a prompt's A1111 LoRA tags (`<lora:name:0.8>`) are
    /// looked for besides the folder holding the model (default: none).
    pub model_dirs: Vec<PathBuf>,
}

impl Default for AutonomyPlugin {
    /// `assets/recipes`, the house model in `models/house`.
    fn default() -> Self {
        Self {
            assets_dir: "assets".into(),
            recipes_dir: "recipes".into(),
            house_model: "models/house".into(),
            cache_dir: None,
            signer: None,
            model_dirs: Vec::new(),
        }
    }
}

/// The plugin's systems, for ordering your own around them.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub enum AutonomySet {
    /// Noticing recipe changes and starting builds.
    Start,
    /// Collecting finished builds into `Assets<Image>`.
    Finish,
}

impl Plugin for AutonomyPlugin {
    fn build(&self, app: &mut App) {
        let root = self.assets_dir.join(&self.recipes_dir);
        let mut options = BuildOptions::new(&root, &self.house_model);
        if let Some(cache) = &self.cache_dir {
            options.cache_dir = cache.clone();
        }
        options.signer = self.signer.clone();
        options.model_dirs = self.model_dirs.clone();
        if !app
            .world()
            .contains_resource::<Assets<TextureAtlasLayout>>()
        {
            app.init_asset::<TextureAtlasLayout>();
        }
        app.init_asset::<Recipe>()
            .register_asset_loader(RecipeLoader)
            .add_message::<GenerationStarted>()
            .add_message::<AssetGenerated>()
            .add_message::<GenerationFailed>()
            .insert_resource(Generation::new(options, self.recipes_dir.clone()))
            .configure_sets(Update, (AutonomySet::Start, AutonomySet::Finish).chain())
            .add_systems(Startup, load_recipes)
            .add_systems(
                Update,
                (notice_recipe_changes, start_generation)
                    .chain()
                    .in_set(AutonomySet::Start),
            )
            .add_systems(Update, finish_generation.in_set(AutonomySet::Finish));
    }
}

/// Asks the asset server for every recipe below the recipes folder.
fn load_recipes(server: Res<AssetServer>, mut generation: ResMut<Generation>) {
    let root = generation.options.root.clone();
    let mut found = Vec::new();
    find_recipes(&root, &mut found);
    found.sort();
    for file in found {
        if let Ok(relative) = file.strip_prefix(&root) {
            generation.watch(&server, relative);
        }
    }
}

fn find_recipes(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            find_recipes(&path, out);
        } else if name.ends_with(".recipe.toml") {
            out.push(path);
        }
    }
}
