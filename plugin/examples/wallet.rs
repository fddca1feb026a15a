//! A wallet's NFTs: the player's tokens on an embedded chain, mirrored by the `ChainPlugin` as
//! `OwnedAsset` entities. The example generates three sprites signed by the player and publishes
//! them (the first run mints them; later runs find them minted), then shows every NFT the
//! player owns with its picture, creator and metadata URI.
//!
//! `cargo run -p bevy_autonomy --example wallet`

use std::collections::HashMap;
use std::path::PathBuf;

use alloy_primitives::U256;
use autonomy_contracts::{Ledger, dev_signers};
use bevy::prelude::*;
use bevy_autonomy::{
    AssetGenerated, AutonomyPlugin, ChainPlugin, ChainRequest, ChainResult, OwnedAsset,
};
use sha2::{Digest, Sha256};

const RECIPES: &str = r#"
[assets.apple]
kind = "sprite"
prompt = "red apple flat food drink"
seed = 3
size = 64

[assets.crown]
kind = "sprite"
prompt = "crown noto objects"
seed = 1
size = 64

[assets.gem]
kind = "sprite"
prompt = "gem stone flat objects"
size = 64
pixel_art = { colors = 12, scale = 2 }
"#;

/// Generated images by the token id they mint as (sha256 of the PNG).
#[derive(Resource, Default)]
struct Pictures(HashMap<U256, Handle<Image>>);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/autonomy-examples/wallet");
    let assets = dir.join("assets");
    std::fs::create_dir_all(assets.join("recipes"))?;
    std::fs::write(assets.join("recipes/items.recipe.toml"), RECIPES)?;
    let player = dev_signers()[1].clone();
    let ledger = Ledger::embedded(dir.join("chain"))?.boxed();
    let mut chain = ChainPlugin::new(ledger, player.address());
    chain.chain.store = dir.join("store");
    chain.chain.journals = dir.join("publish");
    App::new()
        .add_plugins(DefaultPlugins.set(AssetPlugin {
            file_path: assets.to_string_lossy().into_owned(),
            ..default()
        }))
        .add_plugins(AutonomyPlugin {
            assets_dir: assets,
            house_model: concat!(env!("CARGO_MANIFEST_DIR"), "/../models/house").into(),
            signer: Some(player),
            ..default()
        })
        .add_plugins(chain)
        .init_resource::<Pictures>()
        .add_systems(Startup, |mut commands: Commands| {
            commands.spawn(Camera2d);
        })
        .add_systems(Update, (publish_generated, report, show_wallet))
        .run();
    Ok(())
}

/// Publishes each generated sprite (idempotent: the publish journal and the chain are checked).
fn publish_generated(
    mut generated: MessageReader<AssetGenerated>,
    generation: Res<bevy_autonomy::Generation>,
    mut pictures: ResMut<Pictures>,
    mut requests: MessageWriter<ChainRequest>,
) {
    for asset in generated.read() {
        let png = generation.options.root.join(format!("{}.png", asset.label));
        let Ok(bytes) = std::fs::read(&png) else {
            continue;
        };
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        pictures
            .0
            .insert(U256::from_be_bytes(hash), asset.image.clone());
        requests.write(ChainRequest::Publish {
            path: png,
            list_price: None,
            royalty_bps: 500,
        });
    }
}

fn report(mut results: MessageReader<ChainResult>) {
    for result in results.read() {
        match &result.outcome {
            Ok(summary) => info!("{summary}"),
            Err(error) => warn!("{error}"),
        }
    }
}

/// Lays out the player's NFTs as cards: picture, token, creator, URI.
fn show_wallet(
    owned: Query<(Entity, &OwnedAsset), Without<Sprite>>,
    cards: Query<(), With<Sprite>>,
    pictures: Res<Pictures>,
    mut commands: Commands,
) {
    let mut index = cards.iter().count() as f32;
    for (entity, asset) in &owned {
        let Some(image) = pictures.0.get(&asset.token_id) else {
            continue;
        };
        let mut sprite = Sprite::from_image(image.clone());
        sprite.custom_size = Some(Vec2::splat(160.0));
        let token = format!("{:#x}", asset.token_id);
        let creator = asset.creator.to_string();
        commands
            .entity(entity)
            .insert((
                sprite,
                Transform::from_xyz(-300.0 + index * 300.0, 60.0, 0.0),
            ))
            .with_child((
                Text2d::new(format!(
                    "token {}…\nby {}…\n{}",
                    &token[..12],
                    &creator[..10],
                    asset.uri
                )),
                TextFont::from_font_size(14.0),
                Transform::from_xyz(0.0, -130.0, 0.0),
            ));
        index += 1.0;
    }
}
