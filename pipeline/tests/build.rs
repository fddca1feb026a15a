//! `autonomy build` end to end on the shipped house model: every kind, incremental rebuilds,
//! provenance in the sidecar and embedded in the PNGs, and `kill -9` at any moment leaving every
//! asset either absent or complete.

use autonomy_pipeline::build::provenance::{Carrier, Manifest};
use autonomy_pipeline::post::AtlasLayout;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn shipped_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/house")
}

fn build(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autonomy"))
        .arg("build")
        .arg(dir)
        .arg("--model")
        .arg(shipped_model())
        .arg("--json")
        .args(extra)
        .output()
        .expect("the autonomy binary runs")
}

/// Outcome per asset of a successful `build --json`.
fn outcomes(out: &Output) -> Vec<(String, String)> {
    assert!(
        out.status.success(),
        "build failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["asset"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::create_dir_all(dir.join(file).parent().unwrap()).unwrap();
    std::fs::write(dir.join(file), text).unwrap();
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks that every file the manifest lists is there and hashes to the recorded content hash
/// (PNGs and GIFs with the embedded manifest stripped, which must equal the sidecar).
fn check_manifest(dir: &Path, name: &str) -> Manifest {
    let sidecar = std::fs::read(dir.join(format!("{name}.prov.json"))).unwrap();
    let manifest: Manifest = serde_json::from_slice(&sidecar).unwrap();
    assert_eq!(manifest.asset, name);
    for output in &manifest.outputs {
        let bytes = std::fs::read(dir.join(&output.file)).unwrap();
        let content = match Carrier::of(&output.file) {
            Some(carrier) => {
                let (content, embedded) = carrier.strip(&bytes).unwrap();
                assert_eq!(embedded.as_deref(), Some(&sidecar[..]), "{}", output.file);
                decode(carrier, &bytes);
                content
            }
            None => bytes,
        };
        assert_eq!(sha256(&content), output.sha256, "{}", output.file);
        assert!(output.cid.starts_with("bafkrei"), "{}", output.cid);
    }
    manifest
}

/// Decodes a PNG or every frame of a GIF: decoders still read files with a manifest.
fn decode(carrier: Carrier, bytes: &[u8]) {
    match carrier {
        Carrier::Png => drop(image::load_from_memory(bytes).expect("a complete PNG")),
        Carrier::Gif => {
            let mut decoder = gif::DecodeOptions::new().read_info(bytes).unwrap();
            while decoder.read_next_frame().expect("a complete GIF").is_some() {}
        }
    }
}

const SPRITES: &str = r#"
[assets.apple]
kind = "sprite"
prompt = "red apple flat food drink"
size = 64

[assets.pale-apple]
kind = "sprite"
prompt = "green apple flat food drink"
source = "recipe:apple"
strength = 0.5
size = 64
"#;

const FIRE: &str = r#"
kind = "animation"
prompt = "fire flat travel places"
size = 32
frames = 4
pixel_art = { colors = 8, scale = 1 }
"#;

const STONE: &str = r#"
kind = "material"
prompt = "grey cobblestone texture tileable"
size = 64
"#;

#[test]
fn builds_every_kind_once_and_then_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "sprites.recipe.toml", SPRITES);
    write(root, "fx/fire.recipe.toml", FIRE);
    write(
        root,
        "brick.recipe.toml",
        "kind = \"texture\"\nprompt = \"red brick texture tileable\"\nsize = 64\n",
    );
    write(root, "stone.recipe.toml", STONE);

    let first = outcomes(&build(root, &[]));
    assert_eq!(first.len(), 5, "{first:?}");
    assert!(first.iter().all(|(_, o)| o == "built"), "{first:?}");

    let apple = check_manifest(root, "apple");
    assert_eq!(apple.recipe["prompt"], "red apple flat food drink");
    assert_eq!(apple.model.name, "house");
    let image = image::open(root.join("apple.png")).unwrap().to_rgba8();
    assert_eq!(image.dimensions(), (64, 64));
    assert_eq!(
        image.get_pixel(0, 0)[3],
        0,
        "a sprite's corner is transparent"
    );

    let pale = check_manifest(root, "pale-apple");
    assert_eq!(pale.parents.len(), 1);
    assert_eq!(pale.parents[0].reference, "recipe:apple");
    assert_eq!(
        pale.parents[0].sha256, apple.outputs[0].sha256,
        "the parent is the apple's content"
    );

    let fire = check_manifest(&root.join("fx"), "fire");
    assert_eq!(fire.outputs.len(), 3);
    let gif = std::fs::read(root.join("fx/fire.gif")).unwrap();
    let mut decoder = gif::DecodeOptions::new().read_info(&gif[..]).unwrap();
    let mut frames = 0;
    while decoder.read_next_frame().unwrap().is_some() {
        frames += 1;
    }
    assert_eq!(frames, 4);
    let atlas =
        AtlasLayout::from_json(&std::fs::read_to_string(root.join("fx/fire.atlas.json")).unwrap())
            .unwrap();
    assert_eq!(atlas.textures.len(), 4);
    let sheet = image::open(root.join("fx/fire.sheet.png")).unwrap();
    assert_eq!([sheet.width(), sheet.height()], atlas.size);

    let stone = check_manifest(root, "stone");
    assert!(stone.outputs.iter().any(|o| o.file == "stone.gltf"));
    check_manifest(root, "brick");

    // Nothing changed: nothing is made or written.
    let again = outcomes(&build(root, &[]));
    assert!(again.iter().all(|(_, o)| o == "up-to-date"), "{again:?}");

    // A deleted output comes back from the cache; an edited recipe is made again, and so is
    // the asset that starts from it.
    std::fs::remove_file(root.join("brick.png")).unwrap();
    write(
        root,
        "sprites.recipe.toml",
        &SPRITES.replace(
            "size = 64\n\n[assets.pale",
            "size = 64\nseed = 5\n\n[assets.pale",
        ),
    );
    let third = outcomes(&build(root, &[]));
    let outcome = |name: &str| {
        third
            .iter()
            .find(|(a, _)| a == name)
            .map(|(_, o)| o.as_str())
            .unwrap()
    };
    assert_eq!(outcome("brick"), "restored");
    assert_eq!(outcome("apple"), "built");
    assert_eq!(outcome("pale-apple"), "built");
    assert_eq!(outcome("fx/fire"), "up-to-date");
    check_manifest(root, "brick");

    let forced = outcomes(&build(root, &["--force"]));
    assert!(forced.iter().all(|(_, o)| o == "built"), "{forced:?}");
}

#[test]
fn broken_recipes_are_reported_and_the_rest_still_builds() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "good.recipe.toml",
        "kind = \"sprite\"\nprompt = \"red apple flat\"\nsize = 32\n",
    );
    write(
        dir.path(),
        "bad.recipe.toml",
        "kind = \"sprite\"\nprompt = \"x\"\nsize = 0\n",
    );
    let out = build(dir.path(), &[]);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = report["recipe_errors"].to_string();
    assert!(
        errors.contains("bad.recipe.toml:3") && errors.contains("size"),
        "{errors}"
    );
    assert_eq!(report["assets"][0]["outcome"], "built");
    assert!(dir.path().join("good.png").exists());
}

#[test]
fn kill_9_at_any_moment_leaves_assets_absent_or_complete() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for i in 0..6 {
        write(
            root,
            &format!("s{i}.recipe.toml"),
            &format!("kind = \"sprite\"\nprompt = \"red apple flat\"\nseed = {i}\nsize = 64\n"),
        );
    }
    // Kill fresh builds after growing delays (loading, generating, writing); what a killed
    // build leaves must be complete files, and the next build must finish the job.
    for delay_ms in [50, 400, 1200] {
        let _ = std::fs::remove_dir_all(root.join(".autonomy"));
        for i in 0..6 {
            let _ = std::fs::remove_file(root.join(format!("s{i}.png")));
            let _ = std::fs::remove_file(root.join(format!("s{i}.prov.json")));
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_autonomy"))
            .arg("build")
            .arg(root)
            .arg("--model")
            .arg(shipped_model())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for i in 0..6 {
            let name = format!("s{i}");
            if root.join(format!("{name}.prov.json")).exists() {
                check_manifest(root, &name);
            }
            if root.join(format!("{name}.png")).exists() {
                image::open(root.join(format!("{name}.png"))).expect("never half a PNG");
            }
        }
        let finished = outcomes(&build(root, &[]));
        assert_eq!(finished.len(), 6);
        for i in 0..6 {
            check_manifest(root, &format!("s{i}"));
        }
    }
    let staging = root.join(".autonomy/cache/staging");
    assert_eq!(
        std::fs::read_dir(&staging).unwrap().count(),
        0,
        "dead builds' staging folders are cleared"
    );
}

#[test]
fn a_mask_keeps_the_black_part_of_the_source_and_repaints_the_white() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let side = 64;
    let start = image::RgbaImage::from_fn(side, side, |x, y| {
        image::Rgba([(x * 4) as u8, (y * 4) as u8, 200, 255])
    });
    start.save(root.join("start.png")).unwrap();
    let right = image::GrayImage::from_fn(side, side, |x, _| {
        image::Luma([if x >= side / 2 { 255 } else { 0 }])
    });
    right.save(root.join("right.png")).unwrap();
    write(
        root,
        "patched.recipe.toml",
        "kind = \"texture\"\nprompt = \"red apple flat food drink\"\nsource = \"start.png\"\n\
         mask = \"right.png\"\nstrength = 1\nsize = 64\ntileable = false\n",
    );
    let made = outcomes(&build(root, &[]));
    assert_eq!(made, [("patched".to_string(), "built".to_string())]);
    let out = image::open(root.join("patched.png")).unwrap().to_rgba8();
    // Mean distance from the start image over columns `from..to` (away from the mask's edge).
    let distance = |from: u32, to: u32| {
        let mut sum = 0.0;
        for y in 0..side {
            for x in from..to {
                let (a, b) = (out.get_pixel(x, y), start.get_pixel(x, y));
                sum += (0..3).map(|c| f64::from(a[c].abs_diff(b[c]))).sum::<f64>();
            }
        }
        sum / f64::from(3 * side * (to - from))
    };
    let (kept, repainted) = (distance(0, 24), distance(40, 64));
    assert!(
        kept < 0.5 * repainted,
        "the black half is kept ({kept:.1} grey levels off), the white half repainted ({repainted:.1})"
    );
    let manifest = check_manifest(root, "patched");
    let roles: Vec<(&str, &str)> = manifest
        .parents
        .iter()
        .map(|p| (p.role.as_str(), p.reference.as_str()))
        .collect();
    assert_eq!(
        roles,
        [("source", "file:start.png"), ("mask", "file:right.png")]
    );
    // A changed mask makes the asset anew.
    let left = image::GrayImage::from_fn(side, side, |x, _| {
        image::Luma([if x < side / 2 { 255 } else { 0 }])
    });
    left.save(root.join("right.png")).unwrap();
    assert_eq!(outcomes(&build(root, &[]))[0].1, "built");
}
