//! The Stable Diffusion folders on this machine the Generate panel offers next to the house
//! model and the registry's models.

use std::path::PathBuf;

use autonomy_pipeline::models::locate::stable_diffusion_folders;
use bevy::prelude::*;

/// Stable Diffusion folders (diffusers or Hugging Face cache layout) found in the model
/// folders and directly below them when the editor started.
#[derive(Resource, Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalModels {
    /// Absolute paths, sorted.
    pub folders: Vec<PathBuf>,
}

impl LocalModels {
    /// Looks through `model_dirs` (each folder and the folders directly in it).
    pub fn find(model_dirs: &[PathBuf]) -> Self {
        let absolute: Vec<PathBuf> = model_dirs
            .iter()
            .map(|dir| std::path::absolute(dir).unwrap_or_else(|_| dir.clone()))
            .collect();
        let folders = stable_diffusion_folders(&absolute);
        info!(count = folders.len(), "Stable Diffusion folders found");
        Self { folders }
    }
}
