//! `*.recipe.toml` files as Bevy assets, so the asset server loads them and hot-reloads them.

use bevy::asset::io::Reader;
use bevy::asset::{Asset, AssetLoader, LoadContext};
use bevy::reflect::TypePath;

/// A recipe file as the asset server sees it; the pipeline parses it when it builds.
#[derive(Asset, TypePath, Debug, Clone)]
pub struct Recipe {
    /// Its path inside the asset folder.
    pub path: std::path::PathBuf,
    /// Its text.
    pub text: String,
}

/// Loads `*.recipe.toml`.
#[derive(TypePath, Default)]
pub struct RecipeLoader;

/// A recipe file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecipeLoadError {
    /// Reading failed.
    #[error("cannot read the recipe: {0}")]
    Io(#[from] std::io::Error),
    /// It is not UTF-8.
    #[error("the recipe is not UTF-8 text: {0}")]
    Text(#[from] std::string::FromUtf8Error),
}

impl AssetLoader for RecipeLoader {
    type Asset = Recipe;
    type Settings = ();
    type Error = RecipeLoadError;

    async fn load(
        &self,
        reader: &mut dyn Reader,
        _settings: &Self::Settings,
        load_context: &mut LoadContext<'_>,
    ) -> Result<Self::Asset, Self::Error> {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await?;
        Ok(Recipe {
            path: load_context.path().path().to_path_buf(),
            text: String::from_utf8(bytes)?,
        })
    }

    fn extensions(&self) -> &[&str] {
        &["recipe.toml"]
    }
}
