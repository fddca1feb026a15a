//! Training end to end on a tiny model: the loss falls, a resumed run equals an uninterrupted
//! one bit for bit, the model folder loads and generates, and fine-tuning grows the vocabulary.

use autonomy_pipeline::generator::GenerateRequest;
use autonomy_pipeline::models::house::{HouseConfig, HouseModel, files};
use autonomy_pipeline::train::data::TrainingSet;
use autonomy_pipeline::train::{CHECKPOINT, TrainOptions, Trainer};
use candle_core::Device;
use image::{Rgba, RgbaImage};
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// A folder of 16×16 shapes: filled discs and squares in four colours on transparency.
fn shapes(dir: &Path) {
    let colours = [
        ("red", [220, 40, 40]),
        ("green", [40, 200, 60]),
        ("blue", [40, 80, 230]),
        ("yellow", [240, 220, 30]),
    ];
    for (name, rgb) in colours {
        for shape in ["disc", "square"] {
            let img = RgbaImage::from_fn(16, 16, |x, y| {
                let (dx, dy) = (x as f32 - 7.5, y as f32 - 7.5);
                let inside = match shape {
                    "disc" => dx * dx + dy * dy < 36.0,
                    _ => dx.abs() < 5.0 && dy.abs() < 5.0,
                };
                if inside {
                    Rgba([rgb[0], rgb[1], rgb[2], 255])
                } else {
                    Rgba([0, 0, 0, 0])
                }
            });
            img.save(dir.join(format!("{name}_{shape}.png"))).unwrap();
        }
    }
}

fn options(steps: u64) -> TrainOptions {
    TrainOptions {
        steps,
        batch: 16,
        seed: 11,
        warmup: 5,
        checkpoint_every: 1000,
        ..TrainOptions::default()
    }
}

fn trainer(data: &Path, out: &Path, steps: u64) -> Trainer {
    let set = TrainingSet::load(data, 16).unwrap();
    Trainer::new(
        set,
        HouseConfig::tiny(0),
        None,
        options(steps),
        out,
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn loss_falls_and_the_folder_generates() {
    let data = tempfile::tempdir().unwrap();
    shapes(data.path());
    let out = tempfile::tempdir().unwrap();
    let mut t = trainer(data.path(), out.path(), 150);
    let mut losses = Vec::new();
    t.run(&AtomicBool::new(false), |s| losses.push(s.loss))
        .unwrap();
    assert_eq!(losses.len(), 150);
    let first: f32 = losses[..20].iter().sum::<f32>() / 20.0;
    let last: f32 = losses[130..].iter().sum::<f32>() / 20.0;
    assert!(last < 0.8 * first, "loss did not fall: {first} → {last}");

    for file in [
        files::CONFIG,
        files::WEIGHTS,
        files::VOCAB,
        files::DATASET,
        files::CARD,
    ] {
        assert!(out.path().join(file).is_file(), "{file} missing");
    }
    let card = std::fs::read_to_string(out.path().join(files::CARD)).unwrap();
    assert!(card.contains("NOASSERTION") && card.contains("150 × batch 16"));
    let model = HouseModel::load(out.path(), &Device::Cpu).unwrap();
    let images = model
        .generate(&GenerateRequest {
            prompt: "red disc".into(),
            steps: 8,
            count: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0].dimensions(), (16, 16));
    assert_ne!(images[0], images[1], "two seeds gave the same image");
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let data = tempfile::tempdir().unwrap();
    shapes(data.path());
    let straight = tempfile::tempdir().unwrap();
    trainer(data.path(), straight.path(), 12)
        .run(&AtomicBool::new(false), |_| {})
        .unwrap();

    let split = tempfile::tempdir().unwrap();
    // Stop after 5 steps the way Ctrl-C does, then resume to 12.
    let stop = AtomicBool::new(false);
    let mut first = trainer(data.path(), split.path(), 12);
    first
        .run(&stop, |s| {
            if s.step == 5 {
                stop.store(true, std::sync::atomic::Ordering::SeqCst)
            }
        })
        .unwrap();
    assert_eq!(first.step_count(), 5);
    drop(first);
    let set = TrainingSet::load(data.path(), 16).unwrap();
    let mut resumed = Trainer::resume(set, split.path(), None, None, &Device::Cpu).unwrap();
    assert_eq!(resumed.step_count(), 5);
    resumed.run(&AtomicBool::new(false), |_| {}).unwrap();

    let a = std::fs::read(straight.path().join(files::WEIGHTS)).unwrap();
    let b = std::fs::read(split.path().join(files::WEIGHTS)).unwrap();
    assert!(
        a == b,
        "the resumed run's weights differ from the uninterrupted run's"
    );
    // The checkpoint's metadata holds wall-clock times; its tensors must match exactly.
    let load =
        |dir: &Path| candle_core::safetensors::load(dir.join(CHECKPOINT), &Device::Cpu).unwrap();
    let (a, b) = (load(straight.path()), load(split.path()));
    assert_eq!(a.len(), b.len());
    for (name, tensor) in &a {
        let x = tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y = b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(x == y, "checkpoint tensor `{name}` differs");
    }
}

#[test]
fn resuming_on_other_data_is_refused() {
    let data = tempfile::tempdir().unwrap();
    shapes(data.path());
    let out = tempfile::tempdir().unwrap();
    trainer(data.path(), out.path(), 2)
        .run(&AtomicBool::new(false), |_| {})
        .unwrap();
    std::fs::remove_file(data.path().join("red_disc.png")).unwrap();
    let set = TrainingSet::load(data.path(), 16).unwrap();
    let err = Trainer::resume(set, out.path(), None, None, &Device::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("dataset"), "{err}");
}

#[test]
fn fine_tuning_keeps_the_architecture_and_learns_new_words() {
    let data = tempfile::tempdir().unwrap();
    shapes(data.path());
    let base = tempfile::tempdir().unwrap();
    trainer(data.path(), base.path(), 3)
        .run(&AtomicBool::new(false), |_| {})
        .unwrap();

    let creator = tempfile::tempdir().unwrap();
    let img = RgbaImage::from_pixel(40, 40, Rgba([150, 60, 200, 255]));
    img.save(creator.path().join("a.png")).unwrap();
    std::fs::write(creator.path().join("a.txt"), "purple crystal").unwrap();
    let set = TrainingSet::load(creator.path(), 16).unwrap();
    let tuned = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(
        set,
        HouseConfig::small(0),
        Some(base.path()),
        options(2),
        tuned.path(),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        t.config().dim,
        HouseConfig::tiny(0).dim,
        "--from keeps the base architecture"
    );
    t.run(&AtomicBool::new(false), |_| {}).unwrap();
    let model = HouseModel::load(tuned.path(), &Device::Cpu).unwrap();
    assert!(
        model
            .tokenizer
            .unknown_words("purple crystal red disc")
            .is_empty()
    );
    let card = std::fs::read_to_string(tuned.path().join(files::CARD)).unwrap();
    assert!(card.contains("Fine-tuned from"));
}
