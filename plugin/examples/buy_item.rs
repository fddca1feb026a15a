//! Buy an item: another creator has listed a sword on the embedded chain; press B and the
//! player buys it (approving the marketplace for the price, then `buy`, on a background task).
//! The result comes back as a `ChainResult`, and the sword appears among the player's
//! `OwnedAsset`s.
//!
//! `cargo run -p bevy_autonomy --example buy_item`

use std::path::PathBuf;

use alloy_primitives::U256;
use autonomy_contracts::{Ledger, auton, dev_signers};
use autonomy_pipeline::build::{self, BuildOptions};
use autonomy_pipeline::economy::ContentStore;
use autonomy_pipeline::economy::publish::{PublishOptions, publish};
use bevy::prelude::*;
use bevy_autonomy::{ChainPlugin, ChainRequest, ChainResult, OwnedAsset, load_png};

/// The item on sale.
#[derive(Resource)]
struct Item {
    token_id: U256,
    price: U256,
    picture: PathBuf,
}

#[derive(Component)]
struct Status;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/autonomy-examples/buy_item");
    let _ = std::fs::remove_dir_all(&dir); // a fresh shop every run
    let shop = dir.join("seller");
    std::fs::create_dir_all(&shop)?;
    std::fs::write(
        shop.join("sword.recipe.toml"),
        "kind = \"sprite\"\nprompt = \"sword flat objects\"\nseed = 5\nsize = 64\n",
    )?;
    // The seller (dev account 2) makes, signs, mints and lists the sword.
    let seller = dev_signers()[2].clone();
    let house = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/house"));
    let options = BuildOptions {
        signer: Some(seller.clone()),
        ..BuildOptions::new(&shop, &house)
    };
    build::build(&options, &|_| {})?;
    let mut ledger = Ledger::embedded(dir.join("chain"))?;
    let price = auton(25);
    let listed = publish(
        &mut ledger,
        &ContentStore::new(dir.join("store")),
        &dir.join("publish"),
        seller.address(),
        &shop.join("sword.png"),
        &PublishOptions {
            royalty_bps: 500,
            list_price: Some(price),
        },
        &|_| {},
    )?;
    let token_id = U256::from_be_bytes(listed[0].content_hash.0);

    let player = dev_signers()[1].address();
    App::new()
        .add_plugins(DefaultPlugins)
        .add_plugins(ChainPlugin::new(ledger.boxed(), player))
        .insert_resource(Item {
            token_id,
            price,
            picture: shop.join("sword.png"),
        })
        .add_systems(Startup, setup)
        .add_systems(Update, (buy_on_b, show_results))
        .run();
    Ok(())
}

fn setup(item: Res<Item>, mut images: ResMut<Assets<Image>>, mut commands: Commands) {
    commands.spawn(Camera2d);
    match load_png(&item.picture) {
        Ok(image) => {
            let mut sprite = Sprite::from_image(images.add(image));
            sprite.custom_size = Some(Vec2::splat(192.0));
            commands.spawn(sprite);
        }
        Err(message) => error!("{message}"),
    }
    commands.spawn((
        Status,
        Text2d::new("A sword for 25 AUTON. Press B to buy it."),
        Transform::from_xyz(0.0, -160.0, 0.0),
    ));
}

fn buy_on_b(
    keys: Res<ButtonInput<KeyCode>>,
    item: Res<Item>,
    mut requests: MessageWriter<ChainRequest>,
) {
    if keys.just_pressed(KeyCode::KeyB) {
        requests.write(ChainRequest::Buy {
            token_id: item.token_id,
            max_price: item.price,
        });
    }
}

fn show_results(
    mut results: MessageReader<ChainResult>,
    owned: Query<&OwnedAsset>,
    item: Res<Item>,
    mut status: Single<&mut Text2d, With<Status>>,
) {
    for result in results.read() {
        status.0 = match &result.outcome {
            Ok(summary) => summary.clone(),
            Err(error) => format!("refused: {error}"),
        };
    }
    if owned.iter().any(|asset| asset.token_id == item.token_id) && !status.0.contains("yours") {
        status
            .0
            .push_str("\nThe sword is yours: it is among your OwnedAssets.");
    }
}
