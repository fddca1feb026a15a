//! [`EditorPlugin`] (the panels) and [`EditorCorePlugin`] (everything the panels' buttons set
//! in motion, which runs without a window too).

use std::path::PathBuf;
use std::time::Duration;

use bevy::prelude::*;
use bevy::window::FileDragAndDrop;
use bevy_autonomy::{AutonomySet, ChainSet};
use bevy_egui::{EguiPlugin, EguiPrimaryContextPass};

use crate::actions::{
    EditorAction, EditorLog, EditorTasks, Preview, collect_actions, log_chain_results, run_actions,
};
use crate::chain_view::{ChainRefresh, ChainView, apply_refresh, start_refresh};
use crate::library::{AssetLibrary, track_generated};
use crate::local_models::LocalModels;
use crate::ui::{
    EditorUi, Thumbnails, draw_editor, load_control_images, load_start_images, load_thumbnails,
    take_dropped_images, toggle_editor,
};

/// The editor's state and actions, without drawing anything: the [`AssetLibrary`], the
/// [`ChainView`], the [`LocalModels`], the Generate [`Preview`], the [`EditorLog`], and the handling of
/// [`EditorAction`]s. Needs `AutonomyPlugin` and `ChainPlugin` from `bevy_autonomy`.
#[derive(Clone, Debug)]
pub struct EditorCorePlugin {
    /// Folders holding model versions' weights and datasets (the Models panel's summaries),
    /// and the Stable Diffusion folders the Generate panel offers ([`LocalModels`]).
    pub model_dirs: Vec<PathBuf>,
    /// How often the chain is read back (it is also read after each transaction).
    pub refresh_every: Duration,
}

impl Default for EditorCorePlugin {
    /// `models/`, read every two seconds.
    fn default() -> Self {
        Self {
            model_dirs: vec![PathBuf::from("models")],
            refresh_every: Duration::from_secs(2),
        }
    }
}

/// The editor's systems, after the plugin's generation and chain systems.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub struct EditorSet;

impl Plugin for EditorCorePlugin {
    fn build(&self, app: &mut App) {
        app.add_message::<EditorAction>()
            .init_resource::<EditorLog>()
            .init_resource::<Preview>()
            .init_resource::<EditorTasks>()
            .init_resource::<AssetLibrary>()
            .init_resource::<ChainView>()
            .insert_resource(LocalModels::find(&self.model_dirs))
            .insert_resource(ChainRefresh::new(
                self.refresh_every,
                self.model_dirs.clone(),
            ))
            .configure_sets(Update, EditorSet.after(AutonomySet::Finish).after(ChainSet))
            .add_systems(
                Update,
                (
                    track_generated,
                    run_actions,
                    collect_actions,
                    log_chain_results,
                    start_refresh,
                    apply_refresh,
                )
                    .chain()
                    .in_set(EditorSet),
            );
    }
}

/// The in-editor panels (Generate, Assets, Publish, Market, Governance, Models) in a side
/// panel over the game, shown and hidden with `toggle`. Adds [`EditorCorePlugin`] and, if the
/// app has none yet, bevy_egui's `EguiPlugin`.
#[derive(Clone, Debug)]
pub struct EditorPlugin {
    /// The state and actions.
    pub core: EditorCorePlugin,
    /// The key that shows and hides the editor.
    pub toggle: KeyCode,
    /// Whether the editor is open at start.
    pub open: bool,
}

impl Default for EditorPlugin {
    /// Open at start, toggled with F1.
    fn default() -> Self {
        Self {
            core: EditorCorePlugin::default(),
            toggle: KeyCode::F1,
            open: true,
        }
    }
}

impl Plugin for EditorPlugin {
    fn build(&self, app: &mut App) {
        if !app.is_plugin_added::<EguiPlugin>() {
            app.add_plugins(EguiPlugin::default());
        }
        app.add_plugins(self.core.clone())
            .insert_resource(EditorUi::new(self.open, self.toggle))
            .init_resource::<Thumbnails>()
            .add_message::<FileDragAndDrop>()
            .add_systems(
                Update,
                (
                    toggle_editor,
                    load_thumbnails,
                    take_dropped_images,
                    load_start_images,
                    load_control_images,
                )
                    .chain()
                    .after(EditorSet),
            )
            .add_systems(EguiPrimaryContextPass, draw_editor);
    }
}
