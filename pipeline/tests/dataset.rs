//! The real training set: rendered from the pinned npm icon sets (`npm ci` installs them).

use autonomy_pipeline::dataset::{self, BuildOptions, Split};
use std::path::PathBuf;

fn node_modules() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../node_modules");
    assert!(
        dir.join("@iconify-json/twemoji/icons.json").is_file(),
        "the icon sets are not installed: run `npm ci` in the repository root"
    );
    dir
}

#[test]
fn builds_the_licensed_dataset_deterministically() {
    let out = tempfile::tempdir().unwrap();
    let options = BuildOptions {
        node_modules: node_modules(),
        out_dir: out.path().to_path_buf(),
        size: 32,
        seed: 0,
    };
    let manifest = dataset::build(&options, &|_, _| {}).unwrap();
    let licences = manifest.licences();
    for spdx in ["MIT", "Apache-2.0", "CC-BY-4.0", "CC-BY-3.0", "CC0-1.0"] {
        assert!(
            licences.get(spdx).copied().unwrap_or(0) > 500,
            "{spdx}: {licences:?}"
        );
    }
    assert!(
        !licences.contains_key("CC-BY-SA-4.0"),
        "share-alike data slipped in"
    );
    assert!(manifest.items.len() > 8000);
    let heldout: Vec<_> = manifest
        .items
        .iter()
        .filter(|i| i.split == Split::Heldout)
        .collect();
    assert!(heldout.len() >= 20);
    // A held-out caption never appears in training.
    for h in heldout.iter().filter(|h| h.source.contains("twemoji")) {
        assert!(
            !manifest
                .items
                .iter()
                .any(|i| i.split == Split::Train && i.caption == h.caption),
            "{} is held out but trained on",
            h.caption
        );
    }
    manifest.verify_images(out.path()).unwrap();
    let apple = manifest
        .items
        .iter()
        .find(|i| i.id == "fluent-emoji-flat/red-apple")
        .expect("the flat red apple is in the set");
    assert_eq!(apple.caption, "red apple flat food drink");
    assert_eq!(apple.license, "MIT");
    let img = image::open(out.path().join(&apple.image))
        .unwrap()
        .to_rgba8();
    assert_eq!(img.dimensions(), (32, 32));
    assert_eq!(img.get_pixel(0, 0)[3], 0, "the background is transparent");
    assert!(
        img.get_pixel(16, 18)[0] > 150,
        "the apple is red in the middle"
    );

    let again = tempfile::tempdir().unwrap();
    let second = dataset::build(
        &BuildOptions {
            out_dir: again.path().to_path_buf(),
            ..options
        },
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(manifest.hash(), second.hash());
}
