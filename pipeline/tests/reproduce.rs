//! `autonomy verify --reproduce` end to end on the shipped house model: a signed build (sprites,
//! an img2img child, an animation) is made again bit for bit, an edited recipe makes it unverifiable, and a forged but consistent asset
//! (new pixels, manifest hashes edited to match, signed again) is caught; an asset made on
//! another kind of CPU is compared by PSNR: rounding passes, a visible edit does not.

mod common;

use alloy_signer_local::PrivateKeySigner;
use autonomy_pipeline::build::provenance::{self, FileHash, Manifest};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

const RECIPES: &str = r#"
[assets.apple]
kind = "sprite"
prompt = "red apple flat food drink"
size = 32
steps = 8

[assets.pale-apple]
kind = "sprite"
prompt = "green apple flat food drink"
source = "recipe:apple"
strength = 0.5
size = 32
steps = 6
"#;

/// At the root (the sprites are in a folder): a GIF, a sheet and an atlas.
const SPARK: &str =
    "kind = \"animation\"\nprompt = \"fire flat\"\nsize = 32\nframes = 2\nsteps = 4\n";

/// Every file below `dir` and its bytes.
fn snapshot(dir: &Path, into: &mut BTreeMap<PathBuf, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            snapshot(&path, into);
        } else {
            into.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
}

/// `(asset, verdict, detail)` of every `reproduction` check in a `verify --json` report.
fn reproductions(out: &Output) -> Vec<(String, String, String)> {
    let reports: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let text = |v: &serde_json::Value| v.as_str().unwrap().to_string();
    let mut found = Vec::new();
    for report in reports.as_array().unwrap() {
        for check in report["checks"].as_array().unwrap() {
            if check["what"] == "reproduction" {
                found.push((
                    text(&report["asset"]),
                    text(&check["verdict"]),
                    text(&check["detail"]),
                ));
            }
        }
    }
    found
}

#[test]
fn verify_reproduce_remakes_assets_bit_for_bit_and_catches_forgeries() {
    let studio = common::Studio::new();
    let model = studio.model.as_str();
    let root = studio.root();
    let autonomy = |args: &[&str]| studio.run(args);
    let address = studio.new_key("studio");
    let listed = String::from_utf8(autonomy(&["keys", "list"]).stdout).unwrap();
    assert!(
        listed.contains("studio") && listed.contains(&address),
        "{listed}"
    );
    let recipes = root.join("items/sprites.recipe.toml");
    std::fs::create_dir_all(root.join("items")).unwrap();
    std::fs::write(&recipes, RECIPES).unwrap();
    std::fs::write(root.join("spark.recipe.toml"), SPARK).unwrap();
    studio.build_signed("studio");
    let root_arg = root.to_str().unwrap();
    let signed: Manifest =
        serde_json::from_slice(&std::fs::read(root.join("items/apple.prov.json")).unwrap())
            .unwrap();
    assert_eq!(signed.creator.as_deref(), Some(address.as_str()));

    // Reproduced bit for bit, and nothing in the folder or the cache is touched.
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", root_arg, "--json", "--model", model];
        args.extend(extra);
        autonomy(&args)
    };
    let mut before = BTreeMap::new();
    snapshot(root, &mut before);
    let out = verify(&["--reproduce"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for (asset, verdict, detail) in reproductions(&out) {
        assert_eq!(verdict, "verified", "{asset}: {detail}");
        assert!(detail.contains("reproduced bit for bit"), "{detail}");
    }
    assert_eq!(reproductions(&out).len(), 3);
    let mut after = BTreeMap::new();
    snapshot(root, &mut after);
    assert!(before == after, "verify --reproduce wrote files");
    let apple_png = root.join("items/apple.png");
    let plain = autonomy(&[
        "verify",
        apple_png.to_str().unwrap(),
        "--reproduce",
        "--model",
        model,
    ]);
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(text.contains("reproduced bit for bit"), "{text}");

    // The recipe changed since: unverifiable, naming the key; the child still reproduces.
    std::fs::write(&recipes, RECIPES.replace("red apple", "blue apple")).unwrap();
    let out = verify(&["--reproduce"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let found = reproductions(&out);
    let apple = found.iter().find(|(a, _, _)| a == "apple").unwrap();
    assert_eq!(apple.1, "unverifiable");
    assert!(
        apple.2.contains("recipe changed") && apple.2.contains("`prompt`"),
        "{apple:?}"
    );
    let pale = found.iter().find(|(a, _, _)| a == "pale-apple").unwrap();
    assert_eq!(pale.1, "verified", "{pale:?}");
    std::fs::write(&recipes, RECIPES).unwrap();

    // A forged apple: other pixels, the manifest's hash edited to match, signed again by the
    // forger and embedded. Every hash and signature agrees, so plain verify passes.
    let bytes = std::fs::read(&apple_png).unwrap();
    let mut image = image::load_from_memory(&bytes).unwrap().to_rgba8();
    image.pixels_mut().for_each(|p| p.0[0] = 255 - p.0[0]);
    let mut forged = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut forged),
            image::ImageFormat::Png,
        )
        .unwrap();
    let sidecar = root.join("items/apple.prov.json");
    let mut manifest: Manifest = serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
    manifest.outputs = vec![FileHash::of("apple.png", &forged)];
    provenance::sign(&mut manifest, &PrivateKeySigner::random()).unwrap();
    let json = manifest.to_json().unwrap();
    std::fs::write(&apple_png, provenance::embed_png(&forged, &json).unwrap()).unwrap();
    std::fs::write(&sidecar, &json).unwrap();
    let out = verify(&[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let out = verify(&["--reproduce"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let found = reproductions(&out);
    let apple = found.iter().find(|(a, _, _)| a == "apple").unwrap();
    assert_eq!(
        (apple.1.as_str(), apple.2.as_str()),
        ("tampered", "reproduction differs: apple.png")
    );
    let pale = found.iter().find(|(a, _, _)| a == "pale-apple").unwrap();
    assert_eq!(pale.1, "unverifiable");
    assert!(pale.2.contains("source changed"), "{pale:?}");

    // Made on another kind of CPU, as its (signed) manifest says. Remade here bit for bit, it
    // verifies, naming both devices.
    let sidecar = root.join("spark.prov.json");
    let mut spark: Manifest = serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
    assert!(
        spark.device.starts_with("cpu (") && spark.device.contains("caches"),
        "{}",
        spark.device
    );
    spark.device = "cpu (x86-64-v3, caches 32K/256K/8192K)".into();
    provenance::sign(&mut spark, &PrivateKeySigner::random()).unwrap();
    std::fs::write(&sidecar, spark.to_json().unwrap()).unwrap();
    let spark_check = || {
        reproductions(&verify(&["--reproduce"]))
            .into_iter()
            .find(|(a, _, _)| a == "spark")
            .unwrap()
    };
    let found = spark_check();
    assert_eq!(found.1, "verified", "{found:?}");
    assert!(
        found.2.contains("bit for bit") && found.2.contains("made on cpu (x86-64-v3"),
        "{found:?}"
    );
    // Its sheet as that CPU's rounding might have left it (a grey level off in every tenth
    // pixel), hashed and signed to match: within tolerance. Then a visible edit under the
    // other device's name: not verified, as a device difference cannot be told from an edit.
    let sheet = spark
        .outputs
        .iter()
        .position(|o| o.file.ends_with(".png"))
        .expect("the animation's sheet");
    let sheet_file = root.join(&spark.outputs[sheet].file);
    let pixels = image::open(&sheet_file).unwrap().to_rgba8();
    let mut replace_sheet = |edit: &dyn Fn(usize, &mut image::Rgba<u8>)| {
        let mut image = pixels.clone();
        image.pixels_mut().enumerate().for_each(|(i, p)| edit(i, p));
        let mut png = Vec::new();
        image
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let name = spark.outputs[sheet].file.clone();
        spark.outputs[sheet] = FileHash::of(&name, &png);
        provenance::sign(&mut spark, &PrivateKeySigner::random()).unwrap();
        let json = spark.to_json().unwrap();
        std::fs::write(&sheet_file, provenance::embed_png(&png, &json).unwrap()).unwrap();
        std::fs::write(&sidecar, &json).unwrap();
    };
    replace_sheet(&|i, p| {
        if i % 10 == 0 {
            p.0[1] = p.0[1].saturating_add(1);
        }
    });
    let found = spark_check();
    assert_eq!(found.1, "verified", "{found:?}");
    assert!(
        found.2.contains("within tolerance") && found.2.contains("PSNR"),
        "{found:?}"
    );
    replace_sheet(&|_, p| p.0[0] = 255 - p.0[0]);
    let found = spark_check();
    assert_eq!(found.1, "unverifiable", "{found:?}");
    assert!(
        found.2.contains("x86-64-v3") && found.2.contains("below 40 dB"),
        "{found:?}"
    );
}
