//! Recipes that name `model = "registry:<name>"`: the chain says which version of the model is
//! active, its weights hash says which local folder holds it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use alloy_primitives::{B256, U256};
use autonomy_contracts::{Backend, Ledger};

use super::{Config, EconomyError, open_ledger};
use crate::models::locate::folder_with_weights;
use crate::recipe::{ModelRef, RecipeSet};

/// A registry model as the chain has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveModel {
    /// The model's id on the registry.
    pub model: U256,
    /// Its active version.
    pub version: U256,
    /// sha256 of that version's weights.
    pub weights: B256,
    /// The local folder holding those weights.
    pub folder: PathBuf,
}

/// The registry model names `set`'s recipes use.
pub fn registry_names(set: &RecipeSet) -> BTreeSet<String> {
    set.recipes
        .iter()
        .filter_map(|recipe| match &recipe.model {
            ModelRef::Registry(name) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// The active version of the model registered as `name` and the local folder of its weights,
/// searched below `dirs` (and at the version's URI when that is a local folder).
pub fn resolve<B: Backend>(
    ledger: &Ledger<B>,
    name: &str,
    dirs: &[PathBuf],
) -> Result<ActiveModel, EconomyError> {
    let not_found = |reason: String| EconomyError::Registry {
        name: name.into(),
        reason,
    };
    let count = ledger.model_count()?.saturating_to::<u64>();
    let mut found = None;
    for id in (1..=count).rev() {
        let model = ledger.model(U256::from(id))?;
        if model.name == name {
            found = Some((U256::from(id), model));
            break;
        }
    }
    let (model, record) =
        found.ok_or_else(|| not_found("no model of that name is registered".into()))?;
    if record.activeVersion == 0 {
        return Err(not_found(format!(
            "model {model} has no active version yet"
        )));
    }
    let version = U256::from(record.activeVersion);
    let details = ledger.version(version)?;
    let weights = details.weightsHash;
    let mut search = vec![PathBuf::from(&details.uri)];
    search.extend(dirs.iter().cloned());
    let folder = folder_with_weights(&search, &hex::encode(weights)).ok_or_else(|| {
        let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        not_found(format!(
            "its active version {version} has weights {weights}, which no folder under {} holds: fetch them from {} into one of those folders",
            searched.join(", "),
            details.uri
        ))
    })?;
    Ok(ActiveModel {
        model,
        version,
        weights,
        folder,
    })
}

/// Resolves every registry model `set` uses on the project's chain: name → folder.
pub fn resolve_all(
    config: &Config,
    set: &RecipeSet,
) -> Result<BTreeMap<String, ActiveModel>, EconomyError> {
    let names = registry_names(set);
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let ledger = open_ledger(config, None)?;
    names
        .into_iter()
        .map(|name| Ok((name.clone(), resolve(&ledger, &name, &config.model_dirs)?)))
        .collect()
}

/// Folders by name, as [`crate::build::BuildOptions::registry`] takes them.
pub fn folders(models: &BTreeMap<String, ActiveModel>) -> BTreeMap<String, PathBuf> {
    models
        .iter()
        .map(|(name, model)| (name.clone(), model.folder.clone()))
        .collect()
}

/// Polls the project's chain for the active versions of the registry models the recipes under
/// `root` use (the chain is opened afresh each time, so other processes' votes are seen).
pub struct RegistryPoller {
    config: Config,
    root: PathBuf,
    last: Option<BTreeMap<String, PathBuf>>,
}

impl RegistryPoller {
    /// A poller for the recipes under `root`, on `config`'s chain.
    pub fn new(config: Config, root: PathBuf) -> Self {
        Self {
            config,
            root,
            last: None,
        }
    }

    /// The folders now (and remembers them).
    pub fn current(&mut self) -> Result<BTreeMap<String, PathBuf>, EconomyError> {
        let set = crate::recipe::load_dir(&self.root);
        let folders = folders(&resolve_all(&self.config, &set)?);
        self.last = Some(folders.clone());
        Ok(folders)
    }
}

impl crate::watch::ModelSource for RegistryPoller {
    fn poll(&mut self) -> Result<Option<BTreeMap<String, PathBuf>>, String> {
        let before = self.last.clone();
        let now = self.current().map_err(|error| error.to_string())?;
        Ok((before.as_ref() != Some(&now)).then_some(now))
    }
}
