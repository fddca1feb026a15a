//! Generate a sprite at start-up: the example writes one recipe, the plugin generates it with the
//! shipped house model on the async compute pool (the window stays responsive) and the sprite
//! appears when it is ready.
//!
//! `cargo run -p bevy_autonomy --example generate_sprite`

use std::path::PathBuf;

use bevy::prelude::*;
use bevy_autonomy::{AssetGenerated, AutonomyPlugin, GenerationFailed};

const RECIPE: &str = r#"kind = "sprite"
prompt = "red apple flat food drink"
seed = 3
size = 64
pixel_art = { colors = 16, scale = 1 }
"#;

#[derive(Component)]
struct Status;

fn main() {
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/autonomy-examples/generate_sprite/assets");
    std::fs::create_dir_all(assets.join("recipes")).expect("an example folder under target/");
    std::fs::write(assets.join("recipes/apple.recipe.toml"), RECIPE).expect("the recipe");
    App::new()
        .add_plugins(DefaultPlugins.set(AssetPlugin {
            file_path: assets.to_string_lossy().into_owned(),
            ..default()
        }))
        .add_plugins(AutonomyPlugin {
            assets_dir: assets,
            house_model: concat!(env!("CARGO_MANIFEST_DIR"), "/../models/house").into(),
            ..default()
        })
        .add_systems(Startup, |mut commands: Commands| {
            commands.spawn(Camera2d);
            commands.spawn((
                Status,
                Text2d::new("generating in the background…"),
                Transform::from_xyz(0.0, -200.0, 0.0),
            ));
        })
        .add_systems(Update, show)
        .run();
}

/// Shows each generated asset, or why it failed.
fn show(
    mut generated: MessageReader<AssetGenerated>,
    mut failed: MessageReader<GenerationFailed>,
    mut status: Single<&mut Text2d, With<Status>>,
    mut commands: Commands,
) {
    for asset in generated.read() {
        let mut sprite = Sprite::from_image(asset.image.clone());
        sprite.custom_size = Some(Vec2::splat(256.0));
        commands.spawn(sprite);
        status.0 = format!(
            "{} ({})",
            asset.label,
            if asset.generated {
                "generated now"
            } else {
                "from the cache"
            }
        );
    }
    for failure in failed.read() {
        status.0 = format!("{} failed: {}", failure.label, failure.message);
    }
}
