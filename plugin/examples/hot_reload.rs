//! Hot reload: edit the recipe while the game runs and the sprite changes in place (same
//! `Handle<Image>`, new pixels). Press Space to have the example rewrite the recipe with a new
//! seed, or open the file it prints in any editor and save it.
//!
//! `cargo run -p bevy_autonomy --example hot_reload`

use std::path::{Path, PathBuf};

use bevy::prelude::*;
use bevy_autonomy::{AssetGenerated, AutonomyPlugin, GenerationFailed};

#[derive(Resource)]
struct RecipeFile(PathBuf);

#[derive(Component)]
struct Status;

fn recipe(seed: u64) -> String {
    format!(
        "kind = \"sprite\"\nprompt = \"gem stone flat objects\"\nseed = {seed}\nsize = 64\npixel_art = {{ colors = 12, scale = 2 }}\n"
    )
}

fn main() {
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/autonomy-examples/hot_reload/assets");
    let file = assets.join("recipes/gem.recipe.toml");
    std::fs::create_dir_all(file.parent().unwrap_or(Path::new("."))).expect("an example folder");
    if !file.exists() {
        std::fs::write(&file, recipe(1)).expect("the recipe");
    }
    println!("edit {} and save it: the sprite follows", file.display());
    App::new()
        .add_plugins(DefaultPlugins.set(AssetPlugin {
            file_path: assets.to_string_lossy().into_owned(),
            watch_for_changes_override: Some(true),
            ..default()
        }))
        .add_plugins(AutonomyPlugin {
            assets_dir: assets,
            house_model: concat!(env!("CARGO_MANIFEST_DIR"), "/../models/house").into(),
            ..default()
        })
        .insert_resource(RecipeFile(file))
        .add_systems(Startup, |mut commands: Commands| {
            commands.spawn(Camera2d);
            commands.spawn((
                Status,
                Text2d::new("generating…"),
                Transform::from_xyz(0.0, -200.0, 0.0),
            ));
        })
        .add_systems(Update, (reseed, follow))
        .run();
}

/// Space: write the recipe again with another seed (as a user saving the file would).
fn reseed(keys: Res<ButtonInput<KeyCode>>, file: Res<RecipeFile>, time: Res<Time>) {
    if keys.just_pressed(KeyCode::Space) {
        let seed = time.elapsed().as_millis() as u64;
        if let Err(error) = std::fs::write(&file.0, recipe(seed)) {
            error!("cannot write {}: {error}", file.0.display());
        }
    }
}

/// The sprite is spawned once; later generations replace its image under the same handle.
fn follow(
    mut generated: MessageReader<AssetGenerated>,
    mut failed: MessageReader<GenerationFailed>,
    mut status: Single<&mut Text2d, With<Status>>,
    sprites: Query<&Sprite>,
    mut made: Local<u32>,
    mut commands: Commands,
) {
    for asset in generated.read() {
        *made += 1;
        if sprites.is_empty() {
            let mut sprite = Sprite::from_image(asset.image.clone());
            sprite.custom_size = Some(Vec2::splat(256.0));
            commands.spawn(sprite);
        }
        status.0 = format!("{}: made {} time(s) — Space reseeds", asset.label, *made);
    }
    for failure in failed.read() {
        status.0 = format!(
            "{}: {} (the last good image stays)",
            failure.label, failure.message
        );
    }
}
