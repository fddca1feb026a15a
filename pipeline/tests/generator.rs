//! The generator features the pipeline builds on, on the shipped house model: seamless tiling,
//! loops without a jump, image-to-image strength and inpainting masks.

mod common;

use autonomy_pipeline::generator::{GenerateRequest, Generator, InitImage};
use autonomy_pipeline::models::house::HouseModel;
use autonomy_pipeline::post::seam;
use candle_core::Device;
use common::mean_difference;
use image::{GrayImage, Luma, Rgba, RgbaImage};
use std::path::PathBuf;

fn model() -> HouseModel {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/house");
    HouseModel::load(&dir, &Device::Cpu).expect("the shipped model loads")
}

fn request(prompt: &str) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.into(),
        ..Default::default()
    }
}

#[test]
fn tileable_textures_join_across_the_wrap_like_inside() {
    let model = model();
    let make = |tileable| {
        model
            .generate(&GenerateRequest {
                count: 6,
                tileable,
                ..request("grey cobblestone texture tileable")
            })
            .unwrap()
    };
    let ratio = |images: &[RgbaImage]| {
        images.iter().map(|i| seam(i).ratio()).sum::<f64>() / images.len() as f64
    };
    let (tiled, plain) = (ratio(&make(true)), ratio(&make(false)));
    assert!(
        tiled < 1.25,
        "tileable: the wrap-around seam is {tiled:.2}× the inside"
    );
    assert!(
        tiled < plain,
        "tiling must join the edges better than plain generation ({tiled:.2} vs {plain:.2})"
    );
}

#[test]
fn loop_frames_change_smoothly_and_close_the_circle() {
    let model = model();
    let frames = model
        .generate(&GenerateRequest {
            count: 8,
            looped: true,
            ..request("orange fire flat")
        })
        .unwrap();
    let steps: Vec<f64> = (0..8)
        .map(|i| mean_difference(&frames[i], &frames[(i + 1) % 8]))
        .collect();
    let mean = steps.iter().sum::<f64>() / 8.0;
    assert!(mean > 0.5, "frames must move: {steps:?}");
    let wrap = steps[7];
    assert!(
        wrap < 2.0 * mean,
        "the last frame must flow into the first like any other step: {steps:?}"
    );
    let far = mean_difference(&frames[0], &frames[4]);
    assert!(
        far > mean,
        "opposite frames differ more than neighbours: {far} vs {mean}"
    );
}

#[test]
fn strength_decides_how_much_of_the_init_image_survives() {
    let model = model();
    let init = model.generate(&request("blue gem stone flat")).unwrap()[0].clone();
    let from = |strength| {
        model
            .generate(&GenerateRequest {
                seed: 99,
                init: Some(InitImage {
                    image: init.clone(),
                    strength,
                    mask: None,
                }),
                ..request("red apple flat")
            })
            .unwrap()
            .remove(0)
    };
    let (light, full) = (from(0.25), from(1.0));
    assert!(
        mean_difference(&light, &init) < mean_difference(&full, &init) / 2.0,
        "strength 0.25 keeps the image ({}), strength 1 replaces it ({})",
        mean_difference(&light, &init),
        mean_difference(&full, &init)
    );
}

#[test]
fn inpainting_keeps_the_unmasked_half() {
    let model = model();
    let size = model.native_size();
    let init = RgbaImage::from_fn(size, size, |x, _| {
        if x < size / 2 {
            Rgba([30, 160, 40, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    });
    let mask = GrayImage::from_fn(size, size, |x, _| {
        Luma([if x < size / 2 { 0 } else { 255 }])
    });
    let out = model
        .generate(&GenerateRequest {
            init: Some(InitImage {
                image: init.clone(),
                strength: 1.0,
                mask: Some(mask),
            }),
            ..request("red apple flat")
        })
        .unwrap()
        .remove(0);
    for y in 0..size {
        for x in 0..size / 2 - 1 {
            let (a, b) = (out.get_pixel(x, y).0, init.get_pixel(x, y).0);
            assert!(
                a.iter().zip(b).all(|(p, q)| p.abs_diff(q) <= 2),
                "kept pixel ({x}, {y}) changed: {a:?} vs {b:?}"
            );
        }
    }
    let right = RgbaImage::from_fn(size / 2, size, |x, y| *out.get_pixel(x + size / 2, y));
    let blank = RgbaImage::new(size / 2, size);
    assert!(
        mean_difference(&right, &blank) > 1.0,
        "the masked half is generated"
    );
}

#[test]
fn bad_strength_is_a_clear_error() {
    let model = model();
    let err = model
        .generate(&GenerateRequest {
            init: Some(InitImage {
                image: RgbaImage::new(8, 8),
                strength: 0.0,
                mask: None,
            }),
            ..request("red apple")
        })
        .unwrap_err();
    assert!(err.to_string().contains("strength"), "{err}");
}
