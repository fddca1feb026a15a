//! Watching a recipe folder: every save of a recipe, a palette or a source image rebuilds
//! what it affects (the cache makes everything else a no-op), a deleted recipe removes its
//! outputs, and a broken recipe is reported while the watcher keeps going. With a
//! [`ModelSource`], a change of a registry model's active version (a DAO vote) rebuilds the
//! assets made with that model.

use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::build::{self, BuildError, BuildOptions, BuildReport, Event};
use crate::recipe::{self, RecipeSet};

/// How long the folder must be quiet before a batch of changes is acted on.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// How often a [`ModelSource`] is asked whether registry models changed (while some recipe
/// uses one; a change of recipes asks it at once).
pub const MODEL_POLL: Duration = Duration::from_secs(1);

/// Where `model = "registry:<name>"` recipes get their model folders while watching.
pub trait ModelSource {
    /// The folders by registry name now, when they differ from what the last call returned.
    fn poll(&mut self) -> Result<Option<BTreeMap<String, PathBuf>>, String>;
}

/// What the watcher tells its caller.
#[derive(Debug)]
pub enum WatchEvent<'a> {
    /// Files changed; a build follows.
    Changed(Vec<PathBuf>),
    /// A build step (see [`build::Event`]).
    Build(Event),
    /// A build finished.
    Built(&'a BuildReport),
    /// An asset whose recipe is gone had its files removed.
    Removed {
        /// `folder/name` of the asset.
        asset: String,
        /// Its removed files (root-relative).
        files: Vec<PathBuf>,
    },
    /// Registry models now resolve to other folders (a new active version); a build follows.
    ModelsChanged(Vec<String>),
    /// The watcher could not watch or build; it keeps going.
    Error(String),
}

/// A watch failure that stops the watcher.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The folder cannot be watched.
    #[error("cannot watch `{path}`: {source}")]
    Notify {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: notify::Error,
    },
    /// A build failed as a whole (the cache cannot be opened).
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Builds `options.root`, then rebuilds on every change until `stop` is set.
pub fn watch(
    options: &BuildOptions,
    stop: &AtomicBool,
    on_event: &(dyn Fn(WatchEvent) + Sync),
) -> Result<(), WatchError> {
    watch_with(options, stop, on_event, None)
}

/// [`watch`], also rebuilding when `models` reports that registry models changed.
pub fn watch_with(
    options: &BuildOptions,
    stop: &AtomicBool,
    on_event: &(dyn Fn(WatchEvent) + Sync),
    mut models: Option<&mut dyn ModelSource>,
) -> Result<(), WatchError> {
    let mut options = options.clone();
    let mut last_poll = std::time::Instant::now();
    // Events name absolute paths; a relative root would never match them.
    let root = &options
        .root
        .canonicalize()
        .map_err(|e| WatchError::Notify {
            path: options.root.clone(),
            source: notify::Error::io(e),
        })?;
    let (tx, rx) = mpsc::channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(DEBOUNCE, None, tx).map_err(|source| WatchError::Notify {
        path: root.clone(),
        source,
    })?;
    debouncer
        .watch(root, RecursiveMode::Recursive)
        .map_err(|source| WatchError::Notify {
            path: root.clone(),
            source,
        })?;

    let mut state = State::default();
    state.rebuild(&options, on_event)?;
    while !stop.load(Ordering::SeqCst) {
        // Registry models change only by a vote (polled while some recipe uses one) or when
        // recipes change (refreshed below, before that rebuild).
        if let Some(source) = models.as_deref_mut()
            && !options.registry.is_empty()
            && last_poll.elapsed() >= MODEL_POLL
        {
            last_poll = std::time::Instant::now();
            if refresh_models(&mut options, source, on_event) {
                state.rebuild(&options, on_event)?;
            }
        }
        let batch = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(batch) => batch,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let paths = match batch {
            // Reads (ours included: every build reads the recipes) are not changes.
            Ok(events) => events
                .into_iter()
                .filter(|e| !matches!(e.event.kind, EventKind::Access(_)))
                .flat_map(|e| e.event.paths)
                .collect::<BTreeSet<_>>(),
            Err(errors) => {
                for e in errors {
                    on_event(WatchEvent::Error(e.to_string()));
                }
                continue;
            }
        };
        let relevant: Vec<PathBuf> = paths
            .into_iter()
            .filter_map(|p| p.strip_prefix(root).ok().map(Path::to_path_buf))
            .filter(|p| state.matters(p) && !root.join(p).is_dir())
            .collect();
        if relevant.is_empty() {
            continue;
        }
        on_event(WatchEvent::Changed(relevant));
        if let Some(source) = models.as_deref_mut() {
            refresh_models(&mut options, source, on_event);
        }
        state.rebuild(&options, on_event)?;
    }
    Ok(())
}

/// Asks `source` for the registry models' folders; true (after a `ModelsChanged` event) when
/// they differ from `options.registry`, which then holds the new ones.
fn refresh_models(
    options: &mut BuildOptions,
    source: &mut dyn ModelSource,
    on_event: &(dyn Fn(WatchEvent) + Sync),
) -> bool {
    match source.poll() {
        Ok(Some(folders)) if folders != options.registry => {
            let changed: Vec<String> = folders
                .iter()
                .filter(|(name, folder)| options.registry.get(*name) != Some(*folder))
                .map(|(name, _)| name.clone())
                .collect();
            options.registry = folders;
            on_event(WatchEvent::ModelsChanged(changed));
            true
        }
        Ok(_) => false,
        Err(message) => {
            on_event(WatchEvent::Error(message));
            false
        }
    }
}

/// What the last build left on disk.
#[derive(Default)]
struct State {
    /// Each asset's recipe file and the files it has beside it, by label.
    outputs: BTreeMap<String, (PathBuf, Vec<PathBuf>)>,
    /// Recipe files with errors: their assets keep their outputs until the file is fixed.
    broken: BTreeSet<PathBuf>,
    /// Every output file (root-relative): our own writes are not changes.
    written: BTreeSet<PathBuf>,
}

impl State {
    /// Whether a change to `path` (root-relative) can affect a build.
    fn matters(&self, path: &Path) -> bool {
        let hidden = path.components().any(|c| {
            let c = c.as_os_str().to_string_lossy();
            c.starts_with('.') || c == "target" || c == "node_modules"
        });
        !hidden && !self.written.contains(path) && !is_temp(path)
    }

    fn rebuild(
        &mut self,
        options: &BuildOptions,
        on_event: &(dyn Fn(WatchEvent) + Sync),
    ) -> Result<(), WatchError> {
        let set = recipe::load_dir(&options.root);
        let report = build::build_set(options, &set, &|e| on_event(WatchEvent::Build(e)))?;
        on_event(WatchEvent::Built(&report));
        self.remove_vanished(options, &set, on_event);
        let files: BTreeMap<String, PathBuf> = set
            .recipes
            .iter()
            .map(|r| (build::label(r), r.file.clone()))
            .collect();
        for asset in &report.assets {
            if let Some(file) = files.get(&asset.label)
                && !asset.files.is_empty()
            {
                let entry = (file.clone(), asset.files.clone());
                self.outputs.insert(asset.label.clone(), entry);
            }
        }
        self.written = self
            .outputs
            .values()
            .flat_map(|(_, files)| files)
            .cloned()
            .collect();
        Ok(())
    }

    /// Removes the files of assets whose recipe is gone (not merely broken).
    fn remove_vanished(
        &mut self,
        options: &BuildOptions,
        set: &RecipeSet,
        on_event: &(dyn Fn(WatchEvent) + Sync),
    ) {
        self.broken = set.errors.iter().map(|e| e.file.clone()).collect();
        let present: BTreeSet<String> = set.recipes.iter().map(build::label).collect();
        let gone: Vec<String> = self
            .outputs
            .keys()
            .filter(|label| !present.contains(*label))
            .cloned()
            .collect();
        for label in gone {
            let Some((recipe_file, files)) = self.outputs.get(&label).cloned() else {
                continue;
            };
            if self.broken.contains(&recipe_file) {
                continue;
            }
            for file in &files {
                if let Err(e) = std::fs::remove_file(options.root.join(file))
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    on_event(WatchEvent::Error(format!(
                        "cannot remove `{}`: {e}",
                        file.display()
                    )));
                }
            }
            self.outputs.remove(&label);
            on_event(WatchEvent::Removed {
                asset: label,
                files,
            });
        }
    }
}

/// Editor and atomic-write temporaries (`.x.tmp-123`, `x~`, `x.swp`).
fn is_temp(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.ends_with('~') || name.ends_with(".swp") || name.contains(".tmp-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_outputs_hidden_folders_and_temporaries_are_not_changes() {
        let state = State {
            written: [PathBuf::from("fx/fire.gif")].into(),
            ..State::default()
        };
        assert!(state.matters(Path::new("fx/fire.recipe.toml")));
        assert!(state.matters(Path::new("art/rock.png")));
        assert!(!state.matters(Path::new("fx/fire.gif")));
        assert!(!state.matters(Path::new(".autonomy/cache/x/entry.json")));
        assert!(!state.matters(Path::new("fx/.fire.recipe.toml.tmp-77")));
        assert!(!state.matters(Path::new("fx/fire.recipe.toml~")));
    }
}
