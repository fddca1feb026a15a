//! # bevy_autonomy
//!
//! Autonomy inside a Bevy app: `*.recipe.toml` files are assets; the [`AutonomyPlugin`] makes
//! what they describe with the Autonomy pipeline on the async compute pool, puts each result in
//! `Assets<Image>` and says so with an [`AssetGenerated`] message; saving a recipe while the game
//! runs makes it again and swaps the image in place, under the same handle. The
//! [`ChainPlugin`] puts the chain in the ECS: the player's NFTs as [`OwnedAsset`] entities and
//! trades and votes as [`ChainRequest`]s run in the background.
//!
//! ```no_run
//! use bevy::prelude::*;
//! use bevy_autonomy::{AssetGenerated, AutonomyPlugin};
//!
//! fn show(mut generated: MessageReader<AssetGenerated>) {
//!     for asset in generated.read() {
//!         println!("{} is ready: {:?}", asset.label, asset.image);
//!     }
//! }
//!
//! App::new()
//!     .add_plugins((MinimalPlugins, AssetPlugin::default(), bevy::image::ImagePlugin::default()))
//!     .add_plugins(AutonomyPlugin::default()) // assets/recipes, models/house
//!     .add_systems(Update, show)
//!     .run();
//! ```
#![warn(missing_docs)]

mod chain;
mod generation;
mod plugin;
mod recipe_asset;

pub use chain::{
    Chain, ChainPlugin, ChainRequest, ChainResult, ChainSet, OwnedAsset, SharedLedger,
};
pub use generation::{
    AssetGenerated, Generation, GenerationFailed, GenerationStarted, atlas_layout, load_png,
};
pub use plugin::{AutonomyPlugin, AutonomySet};
pub use recipe_asset::{Recipe, RecipeLoadError, RecipeLoader};
