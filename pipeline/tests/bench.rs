//! `autonomy bench` end to end in quick mode: a tiny model trained here on a tiny manifest with
//! a held-out split, judged, and the results written into its card and a docs folder.

use autonomy_pipeline::bench::{self, BenchOptions, DOCS_REPORT, DOCS_SHEET};
use autonomy_pipeline::dataset::textures::SOURCE as TEXTURES;
use autonomy_pipeline::dataset::{Manifest, ManifestItem, Split};
use autonomy_pipeline::models::house::{HouseConfig, files};
use autonomy_pipeline::train::card::BENCH_START;
use autonomy_pipeline::train::data::TrainingSet;
use autonomy_pipeline::train::{TrainOptions, Trainer};
use candle_core::Device;
use image::{Rgba, RgbaImage};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::atomic::AtomicBool;

const SIZE: u32 = 16;

/// A sprite: a shape in a colour, drawn a little differently per style.
fn sprite(concept: &str, style: usize) -> RgbaImage {
    let (rgb, shape) = match concept {
        "red-apple" => ([220, 40, 40], 0),
        "banana" => ([240, 220, 30], 1),
        _ => ([250, 120, 20], 2),
    };
    let r = 5.0 + style as f32;
    RgbaImage::from_fn(SIZE, SIZE, |x, y| {
        let (dx, dy) = (x as f32 - 7.5, y as f32 - 7.5);
        let inside = match shape {
            0 => dx * dx + dy * dy < r * r,
            1 => dx.abs() < r && dy.abs() < 2.5,
            _ => dy > -r && dx.abs() < (r - dy.abs()).max(0.0),
        };
        if inside {
            Rgba([rgb[0], rgb[1], rgb[2], 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    })
}

/// A tileable texture: stripes (brick) or waves (water), shifted per variant.
fn texture(material: &str, variant: u32) -> RgbaImage {
    RgbaImage::from_fn(SIZE, SIZE, |x, y| {
        let (x, y) = ((x + variant * 3) % SIZE, (y + variant) % SIZE);
        match material {
            "brick" if y % 4 == 0 || (x + 4 * (y / 4)) % 8 == 0 => Rgba([200, 190, 180, 255]),
            "brick" => Rgba([165, 62, 45, 255]),
            _ if (x + y / 2) % 5 == 0 => Rgba([200, 230, 255, 255]),
            _ => Rgba([30, 80, 200, 255]),
        }
    })
}

fn item(
    dir: &Path,
    id: &str,
    icon: &str,
    caption: &str,
    source: &str,
    split: Split,
    image: &RgbaImage,
) -> ManifestItem {
    let file = format!("images/{}.png", id.replace('/', "__"));
    image.save(dir.join(&file)).unwrap();
    let bytes = std::fs::read(dir.join(&file)).unwrap();
    ManifestItem {
        id: id.into(),
        caption: caption.into(),
        sha256: hex::encode(Sha256::digest(&bytes)),
        image: file,
        source: source.into(),
        icon: icon.into(),
        license: "CC0-1.0".into(),
        attribution: "test".into(),
        split,
        contributor: None,
    }
}

/// Three concepts in three styles (twemoji held out) and two materials in four variants
/// (variant 0 held out).
fn manifest(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut items = Vec::new();
    for concept in ["red-apple", "banana", "fire"] {
        let words = concept.replace('-', " ");
        for (style, (set, word)) in [
            ("fluent-emoji-flat", "flat"),
            ("noto", "noto"),
            ("twemoji", "twemoji"),
        ]
        .into_iter()
        .enumerate()
        {
            let split = if set == "twemoji" {
                Split::Heldout
            } else {
                Split::Train
            };
            items.push(item(
                dir,
                &format!("{set}/{concept}"),
                concept,
                &format!("{words} {word} food drink"),
                &format!("@iconify-json/{set}@1.0.0"),
                split,
                &sprite(concept, style),
            ));
        }
    }
    for (colour, material) in [("red", "brick"), ("blue", "water")] {
        for variant in 0..4 {
            let split = if variant == 0 {
                Split::Heldout
            } else {
                Split::Train
            };
            items.push(item(
                dir,
                &format!("textures/{colour}-{material}-{variant}"),
                &format!("{colour}-{material}"),
                &format!("{colour} {material} texture tileable"),
                TEXTURES,
                split,
                &texture(material, variant),
            ));
        }
    }
    let path = dir.join("manifest.jsonl");
    Manifest::new(items).save(&path).unwrap();
    path
}

#[test]
fn quick_bench_on_a_tiny_model() {
    let data = tempfile::tempdir().unwrap();
    let manifest = manifest(data.path());
    let model = tempfile::tempdir().unwrap();
    let set = TrainingSet::load(&manifest, SIZE as usize).unwrap();
    let options = TrainOptions {
        steps: 30,
        batch: 16,
        seed: 3,
        warmup: 5,
        checkpoint_every: 1000,
        ..TrainOptions::default()
    };
    Trainer::new(
        set,
        HouseConfig::tiny(0),
        None,
        options,
        model.path(),
        &Device::Cpu,
    )
    .unwrap()
    .run(&AtomicBool::new(false), |_| {})
    .unwrap();

    let options = BenchOptions::quick(model.path().to_path_buf(), manifest.clone());
    let mut phases = Vec::new();
    let report = bench::run(&options, &Device::Cpu, &mut |phase, _, _| {
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
    })
    .unwrap();
    assert_eq!(phases.len(), 6, "{phases:?}");

    // 3 concepts + 2 materials; 3 twemoji prompts + 2 texture captions.
    assert_eq!((report.concept_classes, report.texture_classes), (3, 2));
    let all = &report.fidelity[0];
    assert_eq!((all.group.as_str(), all.prompts, all.real), ("all", 5, 5));
    assert_eq!(all.generated, 5 * options.seeds);
    assert_eq!(report.fidelity.len(), 3);
    for row in &report.fidelity {
        for acc in [row.real_accuracy(), row.generated_accuracy()] {
            assert!((0.0..=1.0).contains(&acc), "{row:?}");
        }
    }
    assert_eq!(report.kid.len(), 2);
    for row in &report.kid {
        assert!(row.generated.is_some_and(f64::is_finite), "{row:?}");
    }
    for value in [
        report.spread_generated,
        report.spread_real,
        report.nearest_generated,
        report.nearest_real,
    ] {
        assert!(
            value.is_some_and(|v| v.is_finite() && v >= 0.0),
            "{value:?}"
        );
    }
    assert_eq!(report.prompts.len(), 5);
    assert!(report.classifier.final_train_accuracy.is_finite());
    let s = &report.speed;
    assert!(s.single_s > 0.0 && s.batch16_s > 0.0 && s.batch16_s.is_finite());
    assert!(s.peak_rss.is_some_and(|b| b > 0));
    assert!(s.train_images_per_s.is_some_and(|r| r > 0.0));
    assert_eq!(report.model_step, Some(30));

    let docs = tempfile::tempdir().unwrap();
    let written = bench::write_outputs(&report, model.path(), docs.path()).unwrap();
    assert_eq!(written.len(), 3);
    let card = std::fs::read_to_string(model.path().join(files::CARD)).unwrap();
    assert!(card.contains(BENCH_START) && card.contains("### Prompt fidelity"));
    assert!(card.contains("# House model"), "training's card is kept");
    let doc = std::fs::read_to_string(docs.path().join(DOCS_REPORT)).unwrap();
    assert!(doc.contains("Quick mode") && doc.contains("red apple twemoji food drink"));
    let sheet = image::open(docs.path().join(DOCS_SHEET)).unwrap();
    let rows = report.sheet_prompts.len() as u32;
    assert!(rows >= 2);
    assert_eq!(sheet.height(), rows * (4 * SIZE + 4) + 4);
    assert_eq!(sheet.width(), 4 * (4 * SIZE + 4) + 4);
}
