//! A small project for windowed runs of the editor (screenshots, the frame-time benchmark): a
//! few recipes made with the shipped house model, and an embedded chain where the house model
//! is a registered community model, another creator has an item listed, a whale has delegated
//! to the player, and a promotion proposal is open for voting.

#![allow(dead_code)]

use std::path::PathBuf;

use alloy_primitives::{Address, B256, U256};
use autonomy_contracts::{Action, Ledger, Proposal, Support, VersionRequest, auton, dev_signers};
use autonomy_editor::{EditorCorePlugin, EditorPlugin};
use autonomy_pipeline::build::{self, BuildOptions};
use autonomy_pipeline::economy::ContentStore;
use autonomy_pipeline::economy::publish::{PublishOptions, publish};
use bevy::prelude::*;
use bevy::window::WindowResolution;
use bevy_autonomy::{AutonomyPlugin, ChainPlugin};
use sha2::{Digest, Sha256};

/// The player's recipes.
pub const RECIPES: &str = r#"
[assets.apple]
kind = "sprite"
prompt = "red apple flat food drink"
seed = 3
size = 64
steps = 8

[assets.crown]
kind = "sprite"
prompt = "crown noto objects"
seed = 1
size = 64
steps = 8

[assets.gem]
kind = "sprite"
prompt = "gem stone flat objects"
size = 64
steps = 8
pixel_art = { colors = 12, scale = 2 }

[assets.fire]
kind = "animation"
prompt = "fire flat travel places"
seed = 2
size = 32
steps = 6
frames = 4
fps = 8
pixel_art = { colors = 16, scale = 1 }

[assets.brick]
kind = "texture"
prompt = "red brick texture tileable"
size = 64
steps = 8
"#;

/// The seeded project.
pub struct Showcase {
    /// Holds everything.
    pub dir: tempfile::TempDir,
    /// The asset folder (recipes in `recipes/`).
    pub assets: PathBuf,
    /// The house model folder.
    pub house: PathBuf,
    /// The player.
    pub player: Address,
    /// The house model's registered version.
    pub version: U256,
    ledger: Option<Ledger<autonomy_contracts::Embedded>>,
}

/// The shipped house model (read only by these tests).
pub fn house() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/house")
}

/// Registers the house model as a community model: v1 = the shipped weights (active, 70/30
/// between `player` and `seller`), v2 = a fine-tune by `seller` whose weights are elsewhere.
/// Returns (model, v1, v2).
pub fn register_house(
    ledger: &mut Ledger<autonomy_contracts::Embedded>,
    player: Address,
    seller: Address,
) -> (U256, U256, U256) {
    let weights: [u8; 32] =
        Sha256::digest(std::fs::read(house().join("model.safetensors")).unwrap()).into();
    let model = ledger.register_model(player, "house", true).unwrap().value;
    let mut version = |from, weights, parent, uri: &str, contributors, access_price| {
        let request = VersionRequest {
            model,
            weights_hash: weights,
            dataset_manifest_hash: B256::repeat_byte(1),
            parent_version: parent,
            uri: uri.into(),
            contributors,
            access_price,
        };
        ledger.add_version(from, &request).unwrap().value
    };
    let v1 = version(
        player,
        B256::from(weights),
        U256::ZERO,
        "models/house",
        vec![(player, 7_000), (seller, 3_000)],
        U256::ZERO,
    );
    let v2 = version(
        seller,
        B256::repeat_byte(2),
        v1,
        "ipfs://house-pixel-tune",
        vec![(seller, 10_000)],
        auton(3),
    );
    (model, v1, v2)
}

/// Builds the project and seeds its chain.
pub fn showcase() -> Showcase {
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    let recipes = assets.join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    std::fs::write(recipes.join("items.recipe.toml"), RECIPES).unwrap();
    let house = house();

    let mut ledger = Ledger::embedded(dir.path().join("chain")).unwrap();
    let accounts = ledger.accounts();
    let (whale, player, seller) = (accounts[0], accounts[1], accounts[2]);
    let (model, version, tuned) = register_house(&mut ledger, player, seller);
    ledger.delegate(whale, player).unwrap();

    // Another creator's signed sword, published and listed into the shared content store.
    let theirs = dir.path().join("seller");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(
        theirs.join("sword.recipe.toml"),
        "kind = \"sprite\"\nprompt = \"sword flat objects\"\nseed = 5\nsize = 64\nsteps = 8\n",
    )
    .unwrap();
    let options = BuildOptions {
        signer: Some(dev_signers()[2].clone()),
        ..BuildOptions::new(&theirs, &house)
    };
    assert!(!build::build(&options, &|_| {}).unwrap().failed());
    publish(
        &mut ledger,
        &ContentStore::new(dir.path().join(".autonomy/store")),
        &dir.path().join(".autonomy/publish"),
        seller,
        &theirs.join("sword.png"),
        &PublishOptions {
            royalty_bps: 700,
            list_price: Some(auton(25)),
        },
        &|_| {},
    )
    .unwrap();

    // A promotion proposal, open for voting, with the seller against so far.
    let d = ledger.deployment().clone();
    let proposal = Proposal::new(
        vec![Action::set_active_version(&d, model, tuned)],
        "Promote house to version 2 (the pixel-art fine-tune)",
    );
    let id = ledger.propose(seller, &proposal).unwrap().value;
    ledger.advance_time(61).unwrap();
    ledger.vote(seller, id, Support::Against).unwrap();

    Showcase {
        dir,
        assets,
        house,
        player,
        version,
        ledger: Some(ledger),
    }
}

impl Showcase {
    /// A windowed app with the editor open over a scene that shows the generated sprites.
    pub fn app(&mut self, title: &str) -> App {
        let mut chain = ChainPlugin::new(self.ledger.take().unwrap().boxed(), self.player);
        chain.chain.store = self.dir.path().join(".autonomy/store");
        chain.chain.journals = self.dir.path().join(".autonomy/publish");
        let mut app = App::new();
        app.add_plugins(
            DefaultPlugins
                .set(AssetPlugin {
                    file_path: self.assets.to_string_lossy().into_owned(),
                    watch_for_changes_override: Some(true),
                    ..default()
                })
                .set(WindowPlugin {
                    primary_window: Some(Window {
                        title: title.into(),
                        resolution: WindowResolution::new(1280, 800),
                        ..default()
                    }),
                    ..default()
                }),
        )
        .add_plugins(AutonomyPlugin {
            assets_dir: self.assets.clone(),
            recipes_dir: "recipes".into(),
            house_model: self.house.clone(),
            cache_dir: None,
            signer: Some(dev_signers()[1].clone()),
            model_dirs: Vec::new(),
        })
        .add_plugins(chain)
        .add_plugins(EditorPlugin {
            core: EditorCorePlugin {
                model_dirs: vec![
                    house().parent().unwrap().to_path_buf(),
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pipeline/tests/fixtures/sd"),
                ],
                ..default()
            },
            ..default()
        })
        .insert_resource(ClearColor(Color::srgb(0.11, 0.12, 0.16)))
        .add_systems(Startup, |mut commands: Commands| {
            commands.spawn(Camera2d);
        })
        .add_systems(Update, show_generated);
        app
    }
}

/// The game side of the window: each generated asset as a sprite, in a grid on the left.
fn show_generated(
    mut generated: MessageReader<bevy_autonomy::AssetGenerated>,
    mut commands: Commands,
    mut shown: Local<Vec<String>>,
) {
    for asset in generated.read() {
        if shown.contains(&asset.label) {
            continue;
        }
        let index = shown.len() as f32;
        shown.push(asset.label.clone());
        let (column, row) = (index % 3.0, (index / 3.0).floor());
        let mut sprite = Sprite::from_image(asset.image.clone());
        sprite.custom_size = Some(Vec2::splat(128.0));
        if let Some(atlas) = &asset.atlas {
            sprite.texture_atlas = Some(TextureAtlas::from(atlas.clone()));
        }
        commands.spawn((
            Name::new(asset.label.clone()),
            sprite,
            Transform::from_xyz(-560.0 + column * 150.0, 260.0 - row * 150.0, 0.0),
        ));
    }
}
