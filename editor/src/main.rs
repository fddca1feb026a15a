//! `autonomy-editor [PROJECT]`: opens the editor on a project folder (its `autonomy.toml`, its
//! recipes, its chain) over an empty scene.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use autonomy_contracts::dev_signers;
use autonomy_editor::{EditorCorePlugin, EditorPlugin};
use autonomy_pipeline::economy::{ChainConfig, Config, open_ledger};
use autonomy_pipeline::keys::{KeyStore, password_for};
use bevy::prelude::*;
use bevy_autonomy::{AutonomyPlugin, ChainPlugin};
use clap::Parser;

/// Opens the Autonomy editor on a project.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The project folder (holds `autonomy.toml`; without one: embedded chain, dev account 1).
    #[arg(default_value = ".")]
    project: PathBuf,
    /// The recipes folder (default: the first `[watch] folders` entry, else `assets/recipes`).
    #[arg(long)]
    recipes: Option<PathBuf>,
    /// The house model folder (default: the project's `models/house`, else the shipped one).
    #[arg(long)]
    house: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let project = args.project;
    let config = Config::load(&project)
        .with_context(|| format!("cannot read the project at {}", project.display()))?;
    let signer = match &config.creator_key {
        Some(name) => {
            let store = KeyStore::open(&KeyStore::default_dir().context("no key folder")?);
            Some(
                store
                    .unlock(name, &password_for(name)?)
                    .with_context(|| format!("cannot unlock creator key `{name}`"))?,
            )
        }
        None if matches!(config.chain, ChainConfig::Embedded { .. }) => {
            Some(dev_signers()[1].clone())
        }
        None => bail!("set [creator] key in autonomy.toml: an RPC chain has no dev accounts"),
    };
    let player = signer.as_ref().map(|s| s.address()).unwrap_or_default();
    let ledger = open_ledger(&config, signer.clone()).context("cannot open the chain")?;

    let recipes = args
        .recipes
        .or_else(|| config.recipe_dirs.first().cloned())
        .unwrap_or_else(|| project.join("assets/recipes"));
    std::fs::create_dir_all(&recipes)
        .with_context(|| format!("cannot create {}", recipes.display()))?;
    let (assets_dir, recipes_dir) = split(&recipes)?;
    let house = args.house.unwrap_or_else(|| {
        let local = project.join("models/house");
        if local.is_dir() {
            local
        } else {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/house"))
        }
    });
    let mut model_dirs = config.model_dirs.clone();
    model_dirs.extend(house.parent().map(Path::to_path_buf));

    let mut chain = ChainPlugin::new(ledger, player);
    chain.chain.store = config.store.clone();
    chain.chain.journals = config.journal_dir();
    App::new()
        .add_plugins(DefaultPlugins.set(AssetPlugin {
            file_path: assets_dir.to_string_lossy().into_owned(),
            watch_for_changes_override: Some(true),
            ..default()
        }))
        .add_plugins(AutonomyPlugin {
            assets_dir,
            recipes_dir,
            house_model: house,
            cache_dir: None,
            signer,
            model_dirs: config.model_dirs.clone(),
        })
        .add_plugins(chain)
        .add_plugins(EditorPlugin {
            core: EditorCorePlugin {
                model_dirs,
                ..default()
            },
            ..default()
        })
        .add_systems(Startup, |mut commands: Commands| {
            commands.spawn(Camera2d);
        })
        .run();
    Ok(())
}

/// `assets/recipes` → (`assets`, `recipes`): the asset server serves the parent folder.
fn split(recipes: &Path) -> Result<(PathBuf, PathBuf)> {
    let absolute = std::path::absolute(recipes)
        .with_context(|| format!("cannot resolve {}", recipes.display()))?;
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => Ok((parent.to_path_buf(), PathBuf::from(name))),
        _ => bail!("{} cannot be a recipes folder", recipes.display()),
    }
}
