//! The plugin headless: recipes in the asset folder are generated into `Assets<Image>` in the
//! background (an animation with its `TextureAtlasLayout` and frame time); saving a new prompt makes it again and swaps the pixels under the same handle;
//! a broken recipe is reported and keeps the last good image.

mod common;

use std::time::{Duration, Instant};

use bevy::asset::AssetPlugin;
use bevy::image::ImagePlugin;
use bevy::prelude::*;
use bevy_autonomy::{AssetGenerated, AutonomyPlugin, GenerationFailed};

const FIRE: &str = "kind = \"animation\"\nprompt = \"fire flat travel places\"\nsize = 32\nframes = 3\nfps = 8\nsteps = 4\n";
const POTION: &str =
    "kind = \"sprite\"\nprompt = \"red apple flat food drink\"\nsize = 32\nsteps = 4\n";

#[derive(Resource, Default)]
struct Seen {
    generated: Vec<AssetGenerated>,
    failed: Vec<GenerationFailed>,
}

fn collect(
    mut generated: MessageReader<AssetGenerated>,
    mut failed: MessageReader<GenerationFailed>,
    mut seen: ResMut<Seen>,
) {
    seen.generated.extend(generated.read().cloned());
    seen.failed.extend(failed.read().cloned());
}

fn run_until(app: &mut App, what: &str, done: impl Fn(&Seen) -> bool) {
    let started = Instant::now();
    while !done(app.world().resource::<Seen>()) {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "timed out waiting for {what}"
        );
        app.update();
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pixels(app: &App, handle: &Handle<Image>) -> Vec<u8> {
    let image = app
        .world()
        .resource::<Assets<Image>>()
        .get(handle)
        .expect("the image is in Assets<Image>");
    assert_eq!((image.width(), image.height()), (32, 32));
    image.data.clone().expect("CPU-side pixels")
}

#[test]
fn recipes_generate_in_the_background_and_hot_reload() {
    let assets = tempfile::tempdir().unwrap();
    let model = tempfile::tempdir().unwrap();
    let recipes = assets.path().join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    let recipe = recipes.join("potion.recipe.toml");
    std::fs::write(&recipe, POTION).unwrap();
    std::fs::write(recipes.join("fire.recipe.toml"), FIRE).unwrap();

    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        AssetPlugin {
            file_path: assets.path().to_string_lossy().into_owned(),
            watch_for_changes_override: Some(true),
            ..default()
        },
        ImagePlugin::default(),
    ))
    .add_plugins(AutonomyPlugin {
        assets_dir: assets.path().to_path_buf(),
        recipes_dir: "recipes".into(),
        house_model: common::house_model(model.path()),
        cache_dir: None,
        signer: None,
        model_dirs: Vec::new(),
    })
    .init_resource::<Seen>()
    .add_systems(Update, collect);

    run_until(&mut app, "the first generation", |seen| {
        ["fire", "potion"]
            .iter()
            .all(|label| seen.generated.iter().any(|g| g.label == *label))
    });
    let generated = app.world().resource::<Seen>().generated.clone();
    let fire = generated
        .iter()
        .find(|g| g.label == "fire")
        .expect("the animation")
        .clone();
    let atlas = fire
        .atlas
        .clone()
        .expect("an animation comes with its atlas layout");
    let layout = app
        .world()
        .resource::<Assets<TextureAtlasLayout>>()
        .get(&atlas)
        .unwrap();
    assert_eq!(layout.textures.len(), 3, "one rectangle per frame");
    assert_eq!(fire.frame_time, Some(Duration::from_millis(125)));
    let sheet = app
        .world()
        .resource::<Assets<Image>>()
        .get(&fire.image)
        .unwrap();
    assert_eq!(sheet.size(), layout.size);
    let first = generated
        .iter()
        .find(|g| g.label == "potion")
        .expect("the sprite")
        .clone();
    assert!(first.atlas.is_none());
    assert!(first.generated);
    let before = pixels(&app, &first.image);
    assert!(
        before.chunks(4).any(|p| p[3] > 0),
        "the sprite is not blank"
    );
    assert!(
        before.chunks(4).any(|p| p[3] == 0),
        "the sprite has a transparent background"
    );
    assert!(recipes.join("potion.png").is_file() && recipes.join("potion.prov.json").is_file());

    // Save a new prompt while the app runs: same handle, new pixels.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        &recipe,
        POTION.replace("red apple", "green frog noto animals nature"),
    )
    .unwrap();
    let potions = |seen: &Seen| -> Vec<AssetGenerated> {
        seen.generated
            .iter()
            .filter(|g| g.label == "potion")
            .cloned()
            .collect()
    };
    run_until(&mut app, "the regeneration", |seen| {
        potions(seen).len() >= 2
    });
    let second = potions(app.world().resource::<Seen>())[1].clone();
    assert_eq!(second.image, first.image, "the image is swapped in place");
    assert!(
        pixels(&app, &second.image) != before,
        "the new prompt made a new image"
    );

    // A broken recipe is reported; the last good image stays.
    let good = pixels(&app, &first.image);
    std::fs::write(&recipe, "kind = \"sprite\"\nprompt = 7\n").unwrap();
    run_until(&mut app, "the recipe error", |seen| !seen.failed.is_empty());
    let failed = app.world().resource::<Seen>().failed[0].clone();
    assert!(failed.message.contains("prompt"), "{}", failed.message);
    assert!(
        pixels(&app, &first.image) == good,
        "the last good image stays"
    );
}
