//! `verify_path` on assets written by hand (no model): a signed PNG with its manifest embedded,
//! a non-PNG output and the sidecar, then every kind of tampering.

use alloy_signer_local::PrivateKeySigner;
use autonomy_pipeline::build::provenance::{self, FileHash, Manifest, SCHEMA};
use autonomy_pipeline::generator::ModelIdentity;
use autonomy_pipeline::keys::KeyStore;
use autonomy_pipeline::verify::{AssetReport, Verdict, VerifyError, verify_path};
use proptest::prelude::*;
use std::fs;
use std::path::Path;

fn png(seed: u8) -> Vec<u8> {
    let image = image::RgbaImage::from_fn(4, 3, |x, y| {
        image::Rgba([seed, (x * 60) as u8, (y * 80) as u8, 255])
    });
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

/// Writes asset `name` (`<name>.png`, `<name>.atlas.json`, `<name>.prov.json`) into `dir`,
/// signed by `signer` when given; returns its manifest.
fn write_asset(dir: &Path, name: &str, signer: Option<&PrivateKeySigner>) -> Manifest {
    let image = png(name.len() as u8 * 10);
    let atlas = format!(r#"{{"asset":"{name}"}}"#).into_bytes();
    let mut manifest = Manifest {
        schema: SCHEMA.into(),
        asset: name.into(),
        outputs: vec![
            FileHash::of(&format!("{name}.png"), &image),
            FileHash::of(&format!("{name}.atlas.json"), &atlas),
        ],
        recipe: serde_json::json!({"kind": "sprite", "prompt": format!("a {name}")}),
        recipe_file: format!("{name}.recipe.toml"),
        model: ModelIdentity {
            name: "house".into(),
            weights_sha256: "ab".repeat(32),
            dataset_sha256: None,
            path: "models/house".into(),
            generator: "test".into(),
            loras: Vec::new(),
            embeddings: Vec::new(),
            hypernetworks: Vec::new(),
            vae: None,
            refiner: None,
            upscaler: None,
            controlnets: Vec::new(),
        },
        device: "cpu".into(),
        parents: vec![],
        creator: None,
        created: "2026-11-25T00:00:00Z".into(),
        signature: None,
    };
    if let Some(signer) = signer {
        provenance::sign(&mut manifest, signer).unwrap();
    }
    write_manifest(dir, &manifest, &image);
    fs::write(dir.join(format!("{name}.atlas.json")), atlas).unwrap();
    manifest
}

/// Writes the sidecar and the PNG with `manifest` embedded in `image`.
fn write_manifest(dir: &Path, manifest: &Manifest, image: &[u8]) {
    let json = manifest.to_json().unwrap();
    let name = &manifest.asset;
    let embedded = provenance::embed_png(image, &json).unwrap();
    fs::write(dir.join(format!("{name}.png")), embedded).unwrap();
    fs::write(dir.join(format!("{name}.prov.json")), json).unwrap();
}

fn one(path: &Path) -> AssetReport {
    let mut reports = verify_path(path).unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports.remove(0)
}

fn failing(report: &AssetReport) -> Vec<&str> {
    report
        .checks
        .iter()
        .filter(|c| c.verdict != Verdict::Verified)
        .map(|c| c.what.as_str())
        .collect()
}

#[test]
fn an_intact_signed_asset_verifies_from_any_of_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let signer = PrivateKeySigner::random();
    write_asset(dir.path(), "potion", Some(&signer));
    for file in ["potion.png", "potion.atlas.json", "potion.prov.json"] {
        let report = one(&dir.path().join(file));
        assert_eq!(report.verdict(), Verdict::Verified, "{file}: {report:?}");
        assert_eq!(report.asset, "potion");
        assert_eq!(
            report.creator.as_deref(),
            Some(signer.address().to_checksum(None).as_str())
        );
    }
    // manifest, 2 files, the PNG's embedded manifest, signature.
    assert_eq!(one(&dir.path().join("potion.png")).checks.len(), 5);
    assert_eq!(Verdict::Verified.exit_code(), 0);
}

#[test]
fn a_folder_verifies_every_asset_below_it_but_not_hidden_ones() {
    let dir = tempfile::tempdir().unwrap();
    let signer = PrivateKeySigner::random();
    fs::create_dir_all(dir.path().join("items/.cache")).unwrap();
    write_asset(dir.path(), "potion", Some(&signer));
    write_asset(&dir.path().join("items"), "sword", Some(&signer));
    write_asset(&dir.path().join("items/.cache"), "junk", None);
    let reports = verify_path(dir.path()).unwrap();
    let assets: Vec<_> = reports.iter().map(|r| r.asset.as_str()).collect();
    assert_eq!(assets, ["sword", "potion"]);
    assert!(reports.iter().all(|r| r.verdict() == Verdict::Verified));

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        verify_path(empty.path()),
        Err(VerifyError::NoManifests(_))
    ));
}

#[test]
fn a_changed_pixel_or_appended_bytes_are_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_asset(dir.path(), "potion", Some(&PrivateKeySigner::random()));
    let path = dir.path().join("potion.png");
    let mut image = image::load_from_memory(&fs::read(&path).unwrap())
        .unwrap()
        .to_rgba8();
    image.put_pixel(1, 1, image::Rgba([0, 0, 0, 255]));
    let mut changed = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut changed),
            image::ImageFormat::Png,
        )
        .unwrap();
    write_manifest(dir.path(), &manifest, &changed);
    let report = one(&path);
    assert_eq!(report.verdict(), Verdict::Tampered);
    assert_eq!(failing(&report), ["potion.png"]);
    assert_eq!(Verdict::Tampered.exit_code(), 2);

    write_manifest(dir.path(), &manifest, &png(60));
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(b"extra");
    fs::write(&path, bytes).unwrap();
    assert_eq!(failing(&one(&path)), ["potion.png manifest"]);
}

#[test]
fn an_edited_sidecar_is_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = write_asset(dir.path(), "potion", Some(&PrivateKeySigner::random()));
    manifest.recipe["prompt"] = "a better potion".into();
    let sidecar = dir.path().join("potion.prov.json");
    fs::write(&sidecar, manifest.to_json().unwrap()).unwrap();
    let report = one(&sidecar);
    assert_eq!(report.verdict(), Verdict::Tampered);
    assert_eq!(failing(&report), ["potion.png manifest", "signature"]);

    // Edited consistently in the PNG too: the signature still gives it away.
    write_manifest(dir.path(), &manifest, &png(60));
    assert_eq!(failing(&one(&sidecar)), ["signature"]);
}

#[test]
fn a_signature_from_another_asset_is_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let signer = PrivateKeySigner::random();
    let mut potion = write_asset(dir.path(), "potion", Some(&signer));
    let sword = write_asset(dir.path(), "sword", Some(&signer));
    potion.signature = sword.signature;
    write_manifest(dir.path(), &potion, &png(60));
    let report = one(&dir.path().join("potion.png"));
    assert_eq!(failing(&report), ["signature"]);
    assert_eq!(report.verdict(), Verdict::Tampered);
}

#[test]
fn a_manifest_moved_to_another_asset_is_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let signer = PrivateKeySigner::random();
    write_asset(dir.path(), "potion", Some(&signer));
    write_asset(dir.path(), "sword", Some(&signer));
    let potion = fs::read(dir.path().join("potion.prov.json")).unwrap();
    fs::write(dir.path().join("sword.prov.json"), &potion).unwrap();
    let report = one(&dir.path().join("sword.png"));
    assert_eq!(report.verdict(), Verdict::Tampered);
    assert!(failing(&report).contains(&"manifest"), "{report:?}");

    // Same name, another folder: the files do not match it.
    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("potion.atlas.json"), "{}").unwrap();
    fs::write(other.join("potion.png"), png(1)).unwrap();
    fs::write(other.join("potion.prov.json"), &potion).unwrap();
    let report = one(&other.join("potion.png"));
    assert_eq!(
        failing(&report),
        ["potion.png", "potion.png manifest", "potion.atlas.json"]
    );
}

#[test]
fn unsigned_or_unmanifested_assets_are_unverifiable() {
    let dir = tempfile::tempdir().unwrap();
    write_asset(dir.path(), "potion", None);
    let report = one(&dir.path().join("potion.png"));
    assert_eq!(failing(&report), ["signature"]);
    assert_eq!(report.verdict(), Verdict::Unverifiable);
    assert_eq!(Verdict::Unverifiable.exit_code(), 3);

    // A missing sidecar is a report, not an error; its detail names the file looked for.
    fs::remove_file(dir.path().join("potion.prov.json")).unwrap();
    let report = one(&dir.path().join("potion.atlas.json"));
    assert_eq!(report.verdict(), Verdict::Unverifiable);
    assert!(report.checks[0].detail.contains("potion.prov.json"));
    // A path that does not exist is an error naming it.
    let missing = verify_path(&dir.path().join("nope.png")).unwrap_err();
    assert!(missing.to_string().contains("nope.png"), "{missing}");
}

#[test]
fn a_renamed_png_finds_its_manifest_through_the_embedded_one() {
    let dir = tempfile::tempdir().unwrap();
    write_asset(dir.path(), "potion", Some(&PrivateKeySigner::random()));
    fs::copy(dir.path().join("potion.png"), dir.path().join("copy.png")).unwrap();
    let report = one(&dir.path().join("copy.png"));
    assert_eq!(report.asset, "potion");
    assert_eq!(failing(&report), ["copy.png"]);
    assert_eq!(report.verdict(), Verdict::Unverifiable);
}

#[test]
fn a_gif_carries_its_manifest_like_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let signer = PrivateKeySigner::random();
    let mut encoder = gif::Encoder::new(Vec::new(), 2, 2, &[0, 0, 0, 255, 0, 0]).unwrap();
    for buffer in [[0, 1, 1, 0], [1, 0, 0, 1]] {
        let frame = gif::Frame {
            width: 2,
            height: 2,
            buffer: buffer.to_vec().into(),
            ..Default::default()
        };
        encoder.write_frame(&frame).unwrap();
    }
    let gif = encoder.into_inner().unwrap();
    // The asset of `write_asset`, made a GIF.
    let mut manifest = write_asset(dir.path(), "fire", None);
    fs::remove_file(dir.path().join("fire.png")).unwrap();
    fs::remove_file(dir.path().join("fire.atlas.json")).unwrap();
    manifest.outputs = vec![FileHash::of("fire.gif", &gif)];
    provenance::sign(&mut manifest, &signer).unwrap();
    let json = manifest.to_json().unwrap();
    let write = |gif: &[u8], json: &[u8]| {
        let embedded = provenance::embed_gif(gif, json).unwrap();
        fs::write(dir.path().join("fire.gif"), embedded).unwrap();
    };
    write(&gif, &json);
    fs::write(dir.path().join("fire.prov.json"), &json).unwrap();
    let path = dir.path().join("fire.gif");
    let report = one(&path);
    assert_eq!(report.verdict(), Verdict::Verified, "{report:?}");
    // manifest, the GIF, its embedded manifest, signature.
    assert_eq!(report.checks.len(), 4);

    fs::copy(&path, dir.path().join("copy.gif")).unwrap();
    let report = one(&dir.path().join("copy.gif"));
    assert_eq!(report.asset, "fire");
    assert_eq!(failing(&report), ["copy.gif"]);

    write(&gif, br#"{"asset":"fire"}"#);
    assert_eq!(failing(&one(&path)), ["fire.gif manifest"]);
    fs::write(&path, &gif).unwrap();
    assert_eq!(failing(&one(&path)), ["fire.gif manifest"]);
    // A colour of the global colour table (after the 6-byte header and 7-byte screen).
    let mut changed = provenance::embed_gif(&gif, &json).unwrap();
    changed[14] ^= 1;
    fs::write(&path, &changed).unwrap();
    assert_eq!(failing(&one(&path)), ["fire.gif"]);
}

#[test]
fn a_key_from_the_keystore_signs_verifiable_assets() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(&dir.path().join("keys"));
    let address = keys.create("me", "pw").unwrap();
    let signer = keys.unlock("me", "pw").unwrap();
    write_asset(dir.path(), "potion", Some(&signer));
    let report = one(&dir.path().join("potion.png"));
    assert_eq!(report.verdict(), Verdict::Verified);
    assert_eq!(report.creator, Some(address.to_checksum(None)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn any_single_byte_flip_in_the_png_is_detected(
        at in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        let dir = tempfile::tempdir().unwrap();
        write_asset(dir.path(), "potion", Some(&PrivateKeySigner::random()));
        let path = dir.path().join("potion.png");
        let mut bytes = fs::read(&path).unwrap();
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        fs::write(&path, &bytes).unwrap();
        prop_assert_eq!(one(&path).verdict(), Verdict::Tampered, "flip at byte {}", at);
    }
}
