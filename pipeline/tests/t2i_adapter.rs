//! T2I-Adapters against diffusers: tiny random-weight adapters of each of diffusers' three
//! networks (`scripts/sd-fixtures/make.py t2i-adapter`), their feature maps, and whole runs of
//! `StableDiffusionAdapterPipeline` with tiny SD 1.5. Recipes and `generate` name an adapter
//! as they name a ControlNet.

mod common;

use autonomy_pipeline::build::provenance::Manifest;
use autonomy_pipeline::generator::{Control, GenerateRequest};
use autonomy_pipeline::models::sd::StableDiffusion;
use autonomy_pipeline::models::sd::adapter::{Adapter, AdapterKind, is_adapter};
use autonomy_pipeline::models::sd::controlnet::ControlNetFile;
use candle_core::{DType, Device};
use common::sd::{Reference, close, fixtures, max_diff};
use common::{copy_dir, mean_difference};

fn adapted() -> StableDiffusion {
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &Device::Cpu).unwrap();
    model
        .add_controlnet(&ControlNetFile {
            path: fixtures().join("tiny-sd15/t2i-adapter"),
            label: "t2i-adapter".into(),
        })
        .unwrap();
    model
}

fn picture(name: &str) -> image::RgbImage {
    image::open(fixtures().join("tiny-sd15/control").join(name))
        .unwrap()
        .to_rgb8()
}

/// Each of diffusers' three networks, from its folder, and TencentARC's original files of the
/// full and light ones (the same weights in the original names, checked when made by loading
/// them strictly into the original code's networks).
#[test]
fn each_adapter_networks_features_match_diffusers() {
    let reference = Reference::of("t2i-adapter");
    let hint = reference.get("adapter_hint");
    let base = StableDiffusion::load(&fixtures().join("tiny-sd15"), &Device::Cpu)
        .unwrap()
        .spec()
        .unet
        .clone();
    for (prefix, path, kind, count) in [
        ("full", "tiny-sd15/t2i-adapter", AdapterKind::FullAdapter, 3),
        (
            "full",
            "tiny-sd15/t2i-adapter-original.pth",
            AdapterKind::FullAdapter,
            3,
        ),
        ("light", "adapters/light", AdapterKind::LightAdapter, 3),
        (
            "light",
            "adapters/light-original.safetensors",
            AdapterKind::LightAdapter,
            3,
        ),
        ("xl", "adapters/xl", AdapterKind::FullAdapterXl, 4),
    ] {
        let file = fixtures().join(path);
        assert!(is_adapter(&file), "{path}");
        let adapter = Adapter::load(&file, &base, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(adapter.spec().kind, kind);
        // The light adapter takes one channel: the picture's grey, as PIL's `L` weighs it.
        let features = adapter.features(hint).unwrap();
        assert_eq!(features.len(), count, "{prefix}");
        for (i, feature) in features.iter().enumerate() {
            close(
                &format!("{path}: feature {i}"),
                feature,
                reference.get(&format!("{prefix}_features_{i}")),
                1e-4,
            );
        }
    }
}

#[test]
fn whole_runs_with_an_adapter_match_diffusers() {
    let reference = Reference::of("t2i-adapter");
    let tiny = Reference::of("controlnet");
    let model = adapted();
    let run = |image: image::RgbImage| {
        let request = GenerateRequest {
            steps: 4,
            guidance: 5.0,
            control: vec![Control {
                image,
                scale: 0.9,
                start: 0.0,
                end: 1.0,
                guess_mode: false,
            }],
            ..tiny.request()
        };
        let image = model.sample(&request, tiny.get("ctl_init")).unwrap();
        image.permute((0, 2, 3, 1)).unwrap()
    };
    let on_grid = run(picture("grid.png"));
    close(
        "a run on the grid",
        &on_grid,
        reference.get("adapter_image"),
        4e-4,
    );
    let on_edges = run(picture("edges.png"));
    close(
        "a run on the edges",
        &on_edges,
        reference.get("adapter_edges_image"),
        4e-4,
    );
    assert!(max_diff(&on_grid, &on_edges) > 0.1);
    // Neither a ControlNet file nor an upscaler is taken for an adapter.
    for file in [
        "tiny-sd15/controlnet-ldm.safetensors",
        "upscalers/compact-x4.pth",
    ] {
        assert!(!is_adapter(&fixtures().join(file)), "{file}");
    }
}

#[test]
fn an_adapter_that_does_not_fit_or_in_guess_mode_is_refused() {
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &Device::Cpu).unwrap();
    let err = model
        .add_controlnet(&ControlNetFile {
            path: fixtures().join("adapters/light"),
            label: "light".into(),
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("features of [16, 32, 32] channels at 1/[8, 16, 32]")
            && err.contains("takes [32, 32, 64, 64] channels at 1/[8, 16, 32, 32]"),
        "{err}"
    );
    // tiny SDXL has tiny SD 1.5's widths, but its first block adds at half the size.
    let mut xl = StableDiffusion::load(&fixtures().join("tiny-sdxl"), &Device::Cpu).unwrap();
    let err = xl
        .add_controlnet(&ControlNetFile {
            path: fixtures().join("tiny-sd15/t2i-adapter"),
            label: "t2i-adapter".into(),
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("takes [32, 32, 64, 64] channels at 1/[16, 16, 32, 32]"),
        "{err}"
    );
    let request = GenerateRequest {
        steps: 1,
        control: vec![Control {
            image: picture("grid.png"),
            scale: 1.0,
            start: 0.0,
            end: 1.0,
            guess_mode: true,
        }],
        ..GenerateRequest::default()
    };
    let noise = candle_core::Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let err = adapted().sample(&request, &noise).unwrap_err().to_string();
    assert!(
        err.contains("T2I-Adapter: guess mode is for ControlNets"),
        "{err}"
    );
}

#[test]
fn a_recipe_and_generate_take_an_adapter_where_they_take_a_controlnet() {
    let studio = common::Studio::new();
    let root = studio.root();
    copy_dir(
        &fixtures().join("tiny-sd15"),
        &root.join("models/tiny-sd15"),
    );
    for (name, extra) in [
        (
            "adapted",
            "controlnet = \"models/tiny-sd15/t2i-adapter\"\n\
             control_image = \"models/tiny-sd15/control/grid.png\"\n",
        ),
        ("plain", ""),
    ] {
        std::fs::write(
            root.join(format!("{name}.recipe.toml")),
            format!(
                "kind = \"sprite\"\nprompt = \"a stone arch\"\nmodel = \"models/tiny-sd15\"\n\
                 steps = 3\nseed = 5\n{extra}"
            ),
        )
        .unwrap();
    }
    let report = studio.build_report(None);
    assert_eq!(
        report["assets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["outcome"] == "built")
            .count(),
        2,
        "{report}"
    );
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(root.join("adapted.prov.json")).unwrap()).unwrap();
    assert_eq!(
        manifest.model.controlnets[0].file,
        "models/tiny-sd15/t2i-adapter"
    );
    let pixels = |name: &str| {
        image::open(root.join(format!("{name}.png")))
            .unwrap()
            .to_rgba8()
    };
    assert!(mean_difference(&pixels("adapted"), &pixels("plain")) > 1.0);
    let verified = studio.reproduce(&root.join("adapted.png"));
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(text.contains("reproduced bit for bit"), "{text}");

    let out = root.join("generated.png");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_autonomy"))
        .args(["generate", "a stone arch", "--steps", "2", "--model"])
        .arg(fixtures().join("tiny-sd15"))
        .arg("--controlnet")
        .arg(fixtures().join("tiny-sd15/t2i-adapter-original.pth"))
        .arg("--control-image")
        .arg(fixtures().join("tiny-sd15/control/grid.png"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(image::open(&out).unwrap().width(), 64);
}

/// On a tileable texture the adapter's features are made again each step from the control
/// image rolled with the latents (see [`common::sd::tileable_control_ratios`]).
#[test]
fn a_tileable_textures_control_image_moves_with_its_latents_through_an_adapter() {
    for (seed, ratio) in common::sd::tileable_control_ratios(&adapted(), 1.0)
        .iter()
        .enumerate()
    {
        assert!(
            *ratio > 2.0,
            "seed {seed}: the change lies {ratio:.2}× more in the squares' quadrants than outside"
        );
    }
}
