//! The project's generated assets as the editor lists them: every asset the plugin makes (or
//! remakes) joins the library with its image, its provenance manifest and, once checked, its
//! verification report.

use std::path::PathBuf;
use std::time::Duration;

use alloy_primitives::U256;
use autonomy_pipeline::build::MANIFEST_SUFFIX;
use autonomy_pipeline::build::provenance::Manifest;
use autonomy_pipeline::verify::{AssetReport, Verdict};
use bevy::prelude::*;
use bevy_autonomy::{AssetGenerated, Generation};

/// One generated asset.
#[derive(Debug, Clone)]
pub struct LibraryAsset {
    /// `folder/name`, as the plugin labels it.
    pub label: String,
    /// Its image in `Assets<Image>` (the plugin's handle: it follows remakes).
    pub image: Handle<Image>,
    /// An animation's frames.
    pub atlas: Option<Handle<TextureAtlasLayout>>,
    /// An animation's frame time.
    pub frame_time: Option<Duration>,
    /// Its provenance sidecar on disk.
    pub file: PathBuf,
    /// The manifest, when it could be read.
    pub manifest: Option<Manifest>,
    /// The token id it would be minted as (sha256 of its main file).
    pub token_id: Option<U256>,
    /// The last verification, if any.
    pub reports: Option<Vec<AssetReport>>,
}

impl LibraryAsset {
    /// The verdict of the last verification.
    pub fn verdict(&self) -> Option<Verdict> {
        let reports = self.reports.as_ref()?;
        reports.iter().map(AssetReport::verdict).max()
    }

    /// Its (first) PNG on disk, as its manifest lists it: what image-to-image starts from.
    pub fn image_file(&self) -> Option<PathBuf> {
        let output = self
            .manifest
            .as_ref()?
            .outputs
            .iter()
            .find(|output| output.file.ends_with(".png"))?;
        Some(self.file.parent()?.join(&output.file))
    }
}

/// Every asset made in this session, in the order they were first made, and the one selected
/// in the Assets and Publish panels.
#[derive(Resource, Debug, Default)]
pub struct AssetLibrary {
    /// The assets.
    pub assets: Vec<LibraryAsset>,
    /// The selected asset's label.
    pub selected: Option<String>,
}

impl AssetLibrary {
    /// The asset labelled `label`.
    pub fn get(&self, label: &str) -> Option<&LibraryAsset> {
        self.assets.iter().find(|asset| asset.label == label)
    }

    /// The selected asset.
    pub fn selected(&self) -> Option<&LibraryAsset> {
        self.get(self.selected.as_deref()?)
    }

    /// Records a verification.
    pub fn set_reports(&mut self, label: &str, reports: Vec<AssetReport>) {
        if let Some(asset) = self.assets.iter_mut().find(|asset| asset.label == label) {
            asset.reports = Some(reports);
        }
    }

    /// The library asset minted as `token_id`.
    pub fn by_token(&self, token_id: U256) -> Option<&LibraryAsset> {
        self.assets
            .iter()
            .find(|asset| asset.token_id == Some(token_id))
    }
}

/// Adds (or refreshes) each asset the plugin made.
pub(crate) fn track_generated(
    mut generated: MessageReader<AssetGenerated>,
    generation: Res<Generation>,
    mut library: ResMut<AssetLibrary>,
) {
    for made in generated.read() {
        let file = generation
            .options
            .root
            .join(format!("{}{MANIFEST_SUFFIX}", made.label));
        let manifest: Option<Manifest> = std::fs::read(&file)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok());
        let token_id = manifest
            .as_ref()
            .and_then(|manifest| manifest.outputs.first())
            .and_then(|main| main.sha256.parse::<alloy_primitives::B256>().ok())
            .map(|hash| U256::from_be_bytes(hash.0));
        let asset = LibraryAsset {
            label: made.label.clone(),
            image: made.image.clone(),
            atlas: made.atlas.clone(),
            frame_time: made.frame_time,
            file,
            manifest,
            token_id,
            reports: None,
        };
        match library
            .assets
            .iter_mut()
            .find(|known| known.label == made.label)
        {
            Some(known) => *known = asset,
            None => library.assets.push(asset),
        }
        if library.selected.is_none() {
            library.selected = Some(made.label.clone());
        }
    }
}
