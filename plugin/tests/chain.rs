//! The chain in the ECS, headless on an embedded chain: the player's NFTs appear as
//! `OwnedAsset` entities, a `Buy` request runs in the background and the bought asset appears,
//! a failed request reports the contract's error, and a generated asset signed by the player is
//! published (stored, minted, listed) from inside the app.

mod common;

use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256};
use autonomy_contracts::{Ledger, MintRequest, auton};
use autonomy_pipeline::build::{self, BuildOptions};
use bevy::prelude::*;
use bevy_autonomy::{ChainPlugin, ChainRequest, ChainResult, OwnedAsset};

#[derive(Resource, Default)]
struct Results(Vec<ChainResult>);

fn collect(mut results: MessageReader<ChainResult>, mut seen: ResMut<Results>) {
    seen.0.extend(results.read().cloned());
}

fn owned(app: &mut App) -> Vec<U256> {
    let mut query = app.world_mut().query::<&OwnedAsset>();
    let mut tokens: Vec<U256> = query
        .iter(app.world())
        .map(|asset| asset.token_id)
        .collect();
    tokens.sort();
    tokens
}

fn run_until(app: &mut App, what: &str, done: impl Fn(&mut App) -> bool) {
    let started = Instant::now();
    while !done(app) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        app.update();
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn mint(ledger: &mut Ledger<autonomy_contracts::Embedded>, who: Address, label: u8) -> U256 {
    let request = MintRequest {
        to: who,
        content_hash: B256::repeat_byte(label),
        model_version: U256::ZERO,
        uri: format!("ipfs://asset-{label}"),
        royalty_receiver: Address::ZERO,
        royalty_bps: 500,
    };
    ledger.mint(who, &request).unwrap().value
}

#[test]
fn owned_assets_sync_and_trades_run_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::embedded(dir.path()).unwrap();
    let accounts = ledger.accounts();
    let (player, seller) = (accounts[1], accounts[2]);
    let mine = mint(&mut ledger, player, 1);
    let for_sale = mint(&mut ledger, seller, 2);
    let market = ledger.deployment().marketplace;
    ledger.approve_assets(seller, market, true).unwrap();
    ledger.list(seller, for_sale, auton(10)).unwrap();

    let mut chain = ChainPlugin::new(ledger.boxed(), player);
    chain.chain.store = dir.path().join(".autonomy/store");
    chain.chain.journals = dir.path().join(".autonomy/publish");
    let shared = chain.chain.ledger.clone();
    let mut app = App::new();
    app.add_plugins(MinimalPlugins)
        .add_plugins(chain)
        .init_resource::<Results>()
        .add_systems(Update, collect);

    run_until(&mut app, "the first sync", |app| owned(app) == vec![mine]);
    let asset = {
        let mut query = app.world_mut().query::<&OwnedAsset>();
        query.iter(app.world()).next().unwrap().clone()
    };
    assert_eq!(
        (asset.creator, asset.uri.as_str()),
        (player, "ipfs://asset-1")
    );

    app.world_mut().write_message(ChainRequest::Buy {
        token_id: for_sale,
        max_price: auton(10),
    });
    run_until(&mut app, "the purchase", |app| {
        !app.world().resource::<Results>().0.is_empty()
    });
    let bought = app.world().resource::<Results>().0[0].clone();
    assert!(bought.outcome.is_ok(), "{:?}", bought.outcome);
    let mut expected = vec![mine, for_sale];
    expected.sort();
    run_until(&mut app, "the bought asset", |app| owned(app) == expected);

    app.world_mut().write_message(ChainRequest::Buy {
        token_id: for_sale,
        max_price: auton(10),
    });
    run_until(&mut app, "the refusal", |app| {
        app.world().resource::<Results>().0.len() >= 2
    });
    let refused = app.world().resource::<Results>().0[1].clone();
    let error = refused.outcome.unwrap_err();
    assert!(error.contains("NotListed"), "{error}");

    // Publish a sprite the player generated and signed.
    let model = tempfile::tempdir().unwrap();
    let recipes = dir.path().join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    std::fs::write(
        recipes.join("potion.recipe.toml"),
        "kind = \"sprite\"\nprompt = \"red apple flat food drink\"\nsize = 32\nsteps = 4\n",
    )
    .unwrap();
    let options = BuildOptions {
        signer: Some(autonomy_contracts::dev_signers()[1].clone()),
        ..BuildOptions::new(&recipes, &common::house_model(model.path()))
    };
    assert!(!build::build(&options, &|_| {}).unwrap().failed());
    app.world_mut().write_message(ChainRequest::Publish {
        path: recipes.join("potion.png"),
        list_price: Some(auton(5)),
        royalty_bps: 500,
    });
    run_until(&mut app, "the publish", |app| {
        app.world().resource::<Results>().0.len() >= 3
    });
    let published = app.world().resource::<Results>().0[2].clone();
    let summary = published.outcome.expect("published");
    assert!(summary.starts_with("published potion as 0x"), "{summary}");
    run_until(&mut app, "the published asset", |app| owned(app).len() == 3);
    let token = owned(&mut app)
        .into_iter()
        .find(|t| *t != mine && *t != for_sale)
        .unwrap();
    let listing = shared.lock().unwrap().listing(token).unwrap();
    assert_eq!(
        (listing.seller, U256::from(listing.price)),
        (player, auton(5))
    );
}
