//! The house model on a CUDA GPU. Built only with `--features cuda` and run where a GPU is
//! (never in CI): the same prompt and seed give the CPU's picture up to float rounding, CUDA
//! runs repeat bit for bit, and training steps on the GPU lower the loss.
#![cfg(feature = "cuda")]

use autonomy_pipeline::generator::GenerateRequest;
use autonomy_pipeline::models::house::{HouseConfig, HouseModel};
use autonomy_pipeline::train::data::TrainingSet;
use autonomy_pipeline::train::{TrainOptions, Trainer};
use candle_core::Device;
use image::{Rgba, RgbaImage};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

fn gpu() -> Device {
    autonomy_pipeline::device::select("cuda").expect("a CUDA GPU (this test needs one)")
}

/// The crate folder: cargo's at run time, so a test binary copied to a GPU machine finds the
/// shipped model in that machine's checkout.
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn shipped(device: &Device) -> HouseModel {
    let dir = crate_dir().join("../models/house");
    HouseModel::load(&dir, device).expect("the shipped model loads")
}

fn request() -> GenerateRequest {
    GenerateRequest {
        prompt: "red health potion".into(),
        count: 4,
        seed: 7,
        ..Default::default()
    }
}

#[test]
fn cuda_matches_the_cpu_and_repeats_bit_for_bit() {
    let on_cpu = shipped(&Device::Cpu).generate(&request()).unwrap();
    let model = shipped(&gpu());
    let on_gpu = model.generate(&request()).unwrap();
    assert_eq!(
        on_gpu,
        model.generate(&request()).unwrap(),
        "a CUDA run must repeat itself exactly"
    );
    let (mut sum, mut worst, mut count) = (0u64, 0u8, 0u64);
    for (a, b) in on_cpu.iter().zip(&on_gpu) {
        for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
            let d = x.abs_diff(*y);
            sum += u64::from(d);
            worst = worst.max(d);
            count += 1;
        }
    }
    let mean = sum as f64 / count as f64;
    println!("CPU vs CUDA: mean |Δ| {mean:.3} of 255, worst {worst}");
    assert!(
        mean < 1.0,
        "CUDA strays from the CPU: mean difference {mean:.3} of 255"
    );
}

#[test]
fn training_on_cuda_lowers_the_loss() {
    let data = tempfile::tempdir().unwrap();
    for (i, rgb) in [
        [220u8, 40, 40],
        [40, 200, 60],
        [40, 80, 230],
        [240, 220, 30],
    ]
    .iter()
    .enumerate()
    {
        let img = RgbaImage::from_fn(16, 16, |x, y| {
            let (dx, dy) = (x as f32 - 7.5, y as f32 - 7.5);
            if dx * dx + dy * dy < 36.0 {
                Rgba([rgb[0], rgb[1], rgb[2], 255])
            } else {
                Rgba([0, 0, 0, 0])
            }
        });
        img.save(data.path().join(format!("disc{i}.png"))).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let options = TrainOptions {
        steps: 120,
        batch: 16,
        seed: 3,
        warmup: 5,
        checkpoint_every: 1000,
        ..TrainOptions::default()
    };
    let set = TrainingSet::load(data.path(), 16).unwrap();
    let mut trainer =
        Trainer::new(set, HouseConfig::tiny(0), None, options, out.path(), &gpu()).unwrap();
    let mut losses = Vec::new();
    trainer
        .run(&AtomicBool::new(false), |s| losses.push(s.loss))
        .unwrap();
    let first: f32 = losses[..20].iter().sum::<f32>() / 20.0;
    let last: f32 = losses[100..].iter().sum::<f32>() / 20.0;
    assert!(
        losses.iter().all(|l| l.is_finite()),
        "a loss was not finite"
    );
    assert!(last < 0.8 * first, "loss did not fall: {first} → {last}");
    let model = HouseModel::load(out.path(), &Device::Cpu).unwrap();
    let images = model
        .generate(&GenerateRequest {
            prompt: "disc0".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(images[0].dimensions(), (16, 16));
}
