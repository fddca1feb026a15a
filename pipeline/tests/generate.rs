//! `autonomy generate` on the shipped house model: valid RGBA PNGs, bit-identical for the same
//! seed, transparent backgrounds for sprites, opaque textures, and clear errors for bad input.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn autonomy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autonomy"))
        .args(args)
        .output()
        .expect("the autonomy binary runs")
}

fn shipped_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/house")
}

fn generate_json(prompt: &str, seed: u64, count: usize, dir: &Path) -> Vec<serde_json::Value> {
    let out = autonomy(&[
        "generate",
        prompt,
        "--seed",
        &seed.to_string(),
        "--count",
        &count.to_string(),
        "--out-dir",
        dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints a JSON list")
}

fn rgba(path: &Path) -> image::RgbaImage {
    let img = image::open(path).unwrap();
    assert_eq!(img.color(), image::ColorType::Rgba8, "{}", path.display());
    img.to_rgba8()
}

/// Mean alpha (0–1) of the outer ring of pixels and of the central quarter.
fn border_and_centre_alpha(img: &image::RgbaImage) -> (f32, f32) {
    let (w, h) = img.dimensions();
    let (mut border, mut nb, mut centre, mut nc) = (0.0, 0.0, 0.0, 0.0);
    for (x, y, p) in img.enumerate_pixels() {
        let a = p[3] as f32 / 255.0;
        if x == 0 || y == 0 || x == w - 1 || y == h - 1 {
            border += a;
            nb += 1.0;
        } else if (w / 4..3 * w / 4).contains(&x) && (h / 4..3 * h / 4).contains(&y) {
            centre += a;
            nc += 1.0;
        }
    }
    (border / nb, centre / nc)
}

#[test]
fn same_seed_gives_the_same_png_and_seeds_differ() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = generate_json("red apple flat food drink", 3, 2, a.path());
    let second = generate_json("red apple flat food drink", 3, 2, b.path());
    assert_eq!(first.len(), 2);
    let weights = std::fs::read(shipped_model().join("model.safetensors")).unwrap();
    let version = hex::encode(Sha256::digest(&weights));
    for (x, y) in first.iter().zip(&second) {
        assert_eq!(x["model_version"], version.as_str());
        let (px, py) = (x["path"].as_str().unwrap(), y["path"].as_str().unwrap());
        assert_eq!(rgba(Path::new(px)).dimensions(), (32, 32));
        assert_eq!(std::fs::read(px).unwrap(), std::fs::read(py).unwrap());
    }
    let p0 = std::fs::read(first[0]["path"].as_str().unwrap()).unwrap();
    let p1 = std::fs::read(first[1]["path"].as_str().unwrap()).unwrap();
    assert_ne!(p0, p1, "seeds 3 and 4 gave the same image");
}

#[test]
fn sprites_stand_on_transparency_and_textures_fill_the_tile() {
    let dir = tempfile::tempdir().unwrap();
    for prompt in ["crossed swords silhouette", "red apple flat food drink"] {
        let mut centres = Vec::new();
        for item in generate_json(prompt, 10, 4, dir.path()) {
            let img = rgba(Path::new(item["path"].as_str().unwrap()));
            let (border, centre) = border_and_centre_alpha(&img);
            assert!(border < 0.1, "{prompt}: border alpha {border}");
            centres.push(centre);
        }
        // 0.2 is the 5th percentile of the real silhouettes' centre alpha (thin shapes).
        let mean = centres.iter().sum::<f32>() / centres.len() as f32;
        assert!(
            mean > 0.2,
            "{prompt}: centre alpha {centres:?} (blank sprites?)"
        );
    }
    for item in generate_json("grey stone texture tileable", 10, 2, dir.path()) {
        let img = rgba(Path::new(item["path"].as_str().unwrap()));
        let (border, centre) = border_and_centre_alpha(&img);
        assert!(
            border > 0.9 && centre > 0.9,
            "texture alpha {border}/{centre}"
        );
    }
}

#[test]
fn size_upscales_pixel_exactly_or_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("a.png");
    let big = dir.path().join("b.png");
    for (size, path) in [("32", &small), ("64", &big)] {
        let out = autonomy(&[
            "generate",
            "gem stone flat objects",
            "--size",
            size,
            "-o",
            path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (small, big) = (rgba(&small), rgba(&big));
    assert_eq!(big.dimensions(), (64, 64));
    for (x, y, p) in small.enumerate_pixels() {
        assert_eq!(big.get_pixel(2 * x + 1, 2 * y + 1), p);
    }
    let out = autonomy(&["generate", "gem", "--size", "33", "-o", "/tmp/never.png"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("size 33"));
    // Samplers are for Stable Diffusion folders; the house model has its own.
    assert_fails_with(
        &[
            "generate",
            "gem",
            "--sampler",
            "euler",
            "-o",
            "/tmp/never.png",
        ],
        "`euler` is for Stable Diffusion folders",
    );
    // So is a hires pass: the house model draws at one size.
    assert_fails_with(
        &[
            "generate",
            "gem",
            "--size",
            "64",
            "--hires",
            "0.5",
            "-o",
            "/tmp/never.png",
        ],
        "a hires pass is for Stable Diffusion models",
    );
    let unknown = autonomy(&["generate", "gem", "--sampler", "dpm++3m"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown sampler \"dpm++3m\""));
}

fn assert_fails_with(args: &[&str], needle: &str) {
    let out = autonomy(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_models_and_prompts_get_clear_errors() {
    let missing = tempfile::tempdir().unwrap();
    let m = missing.path().to_str().unwrap();
    assert_fails_with(&["generate", "gem", "--model", m], "config.json");

    let corrupt = tempfile::tempdir().unwrap();
    for file in ["config.json", "vocab.json", "model.safetensors"] {
        std::fs::copy(shipped_model().join(file), corrupt.path().join(file)).unwrap();
    }
    let weights = corrupt.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let c = corrupt.path().to_str().unwrap();
    assert_fails_with(&["generate", "gem", "--model", c], "model.safetensors");

    std::fs::write(corrupt.path().join("config.json"), "{\"image_size\": 32").unwrap();
    assert_fails_with(&["generate", "gem", "--model", c], "config.json");

    assert_fails_with(
        &["generate", "  ", "-o", "/tmp/never.png"],
        "prompt is empty",
    );
}
