//! # autonomy_editor
//!
//! The Autonomy editor: bevy_egui panels any Bevy app can add to generate assets, inspect their
//! provenance, publish them, trade them and govern the models that make them, without leaving
//! the game. [`EditorPlugin`] draws the panels (F1 shows and hides them); [`EditorCorePlugin`]
//! holds what the buttons set in motion and runs headless too, so every button can be driven by
//! sending the same message: an [`EditorAction`] or a `bevy_autonomy::ChainRequest`.
//!
//! ```no_run
//! use autonomy_contracts::{Ledger, dev_signers};
//! use autonomy_editor::EditorPlugin;
//! use bevy::prelude::*;
//! use bevy_autonomy::{AutonomyPlugin, ChainPlugin};
//!
//! let player = dev_signers()[1].clone();
//! let ledger = Ledger::embedded(".autonomy/chain")?.boxed();
//! App::new()
//!     .add_plugins(DefaultPlugins)
//!     .add_plugins(AutonomyPlugin {
//!         signer: Some(player.clone()), // what the editor generates can be published
//!         ..default()
//!     })
//!     .add_plugins(ChainPlugin::new(ledger, player.address()))
//!     .add_plugins(EditorPlugin::default())
//!     .run();
//! # Ok::<(), autonomy_contracts::LedgerError>(())
//! ```
#![warn(missing_docs)]

mod actions;
mod chain_view;
mod draft;
mod library;
mod local_models;
pub mod mask;
mod plugin;
mod ui;

pub use actions::{
    EditorAction, EditorLog, LogLine, Preview, PreviewImage, drafts_dir, save_recipe,
};
pub use chain_view::{
    ChainView, DatasetSummary, ListingView, ModelView, ProposalView, TokenStatus, VersionView,
};
pub use draft::{Draft, DraftControl, DraftError, SAVED_BY_EDITOR, Start, StartFiles};
pub use library::{AssetLibrary, LibraryAsset};
pub use local_models::{LocalControlNet, LocalLora, LocalModels};
pub use plugin::{EditorCorePlugin, EditorPlugin, EditorSet};
pub use ui::{EditorUi, Panel, StartTools, Thumbnails, promotion};
