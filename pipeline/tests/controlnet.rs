//! ControlNet against diffusers: a tiny random-weight ControlNet made from tiny SD 1.5's UNet
//! (`scripts/sd-fixtures/make.py controlnet`), its residuals and the UNet they condition for
//! fixed inputs, and whole sampling runs with diffusers' `StableDiffusionControlNetPipeline`.

mod common;

use autonomy_pipeline::build::provenance::Manifest;
use autonomy_pipeline::generator::{Control, GenerateRequest, Generator, InitImage};
use autonomy_pipeline::models::sd::StableDiffusion;
use autonomy_pipeline::models::sd::annotator::canny::canny;
use autonomy_pipeline::models::sd::controlnet::ControlNetFile;
use candle_core::{Device, Tensor};
use common::sd::{Reference, close, fixtures, max_diff, right_half, test_image};
use common::{copy_dir, mean_difference};

fn controlled() -> StableDiffusion {
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &Device::Cpu).unwrap();
    model
        .add_controlnet(&ControlNetFile {
            path: fixtures().join("tiny-sd15/controlnet"),
            label: "controlnet".into(),
        })
        .unwrap();
    model
}

fn edges() -> image::RgbImage {
    image::open(fixtures().join("tiny-sd15/control/edges.png"))
        .unwrap()
        .to_rgb8()
}

#[test]
fn a_controlnets_residuals_and_the_unet_they_condition_match_diffusers() {
    let reference = Reference::of("controlnet");
    let model = controlled();
    let net = model.controls()[0].as_controlnet().unwrap();
    let (sample, context) = (reference.get("cn_sample"), reference.get("cn_context"));
    let hint = reference.get("control_image").repeat((2, 1, 1, 1)).unwrap();
    let scale = reference.scalar("cn_scale");
    let t = reference.scalar("cn_timestep");
    let residuals = net
        .forward(sample, t, context, None, &hint, scale, false)
        .unwrap();
    assert_eq!(residuals.down.len(), 6);
    for (i, state) in residuals.down.iter().enumerate() {
        close(
            &format!("skip connection {i}"),
            state,
            reference.get(&format!("cn_down_{i}")),
            1e-4,
        );
    }
    close(
        "middle block",
        residuals.mid.as_ref().unwrap(),
        reference.get("cn_mid"),
        1e-4,
    );
    let eps = model
        .predict_controlled(sample, t, context, None, None, Some(&residuals))
        .unwrap();
    close("conditioned UNet", &eps, reference.get("cn_unet_eps"), 1e-4);
    let plain = model.predict(sample, t, context, None, None).unwrap();
    assert!(
        max_diff(&plain, &eps) > 0.1,
        "the residuals change the UNet's output"
    );
}

#[test]
fn whole_runs_with_a_controlnet_match_diffusers() {
    let reference = Reference::of("controlnet");
    let model = controlled();
    let control = Control {
        image: edges(),
        scale: reference.scalar("ctl_scale"),
        start: 0.0,
        end: reference.scalar("ctl_end"),
        guess_mode: false,
    };
    let request = GenerateRequest {
        steps: reference.scalar("ctl_steps") as usize,
        guidance: reference.scalar("ctl_guidance"),
        control: vec![control.clone()],
        ..reference.request()
    };
    // diffusers returns (n, H, W, 3); a whole run is held to a tenth of a grey level.
    let run = |request: &GenerateRequest| {
        let image = model.sample(request, reference.get("ctl_init")).unwrap();
        image.permute((0, 2, 3, 1)).unwrap()
    };
    let controlled = run(&request);
    close(
        "run conditioned for the first half of its steps",
        &controlled,
        reference.get("ctl_image"),
        4e-4,
    );
    let plain = run(&GenerateRequest {
        control: Vec::new(),
        ..request.clone()
    });
    close(
        "run without it",
        &plain,
        reference.get("ctl_plain_image"),
        4e-4,
    );
    assert!(max_diff(&plain, &controlled) > 0.02);
    let guessed = GenerateRequest {
        control: vec![Control {
            end: 1.0,
            guess_mode: true,
            ..control
        }],
        ..request
    };
    close(
        "run in guess mode",
        &run(&guessed),
        reference.get("ctl_guess_image"),
        4e-4,
    );
}

/// Two ControlNets at once (`make.py multi-controlnet`): their residuals add up, each from its
/// own control image at its own scale and over its own steps, as diffusers'
/// `MultiControlNetModel` runs them.
#[test]
fn several_controlnets_add_up_as_diffusers_multi_controlnet() {
    let reference = Reference::of("controlnet");
    let multi = Reference::of("multi-controlnet");
    let mut model = controlled();
    model
        .add_controlnet(&ControlNetFile {
            path: fixtures().join("tiny-sd15/controlnet-2"),
            label: "controlnet-2".into(),
        })
        .unwrap();
    let files: Vec<&str> = model
        .identity()
        .controlnets
        .iter()
        .map(|c| c.file.as_str())
        .collect();
    assert_eq!(files, ["controlnet", "controlnet-2"]);
    let grid = image::open(fixtures().join("tiny-sd15/control/grid.png"))
        .unwrap()
        .to_rgb8();
    let control = |image: &image::RgbImage, scale, start, end| Control {
        image: image.clone(),
        scale,
        start,
        end,
        guess_mode: false,
    };
    let run = |images: [&image::RgbImage; 2]| {
        let request = GenerateRequest {
            steps: 4,
            guidance: 5.0,
            control: vec![
                control(images[0], 0.8, 0.0, 0.5),
                control(images[1], 0.6, 0.25, 1.0),
            ],
            ..reference.request()
        };
        let image = model.sample(&request, reference.get("ctl_init")).unwrap();
        image.permute((0, 2, 3, 1)).unwrap()
    };
    let edges = edges();
    let both = run([&edges, &grid]);
    close("both ControlNets", &both, multi.get("multi_image"), 4e-4);
    let swapped = run([&grid, &edges]);
    close(
        "the control images swapped",
        &swapped,
        multi.get("multi_swapped_image"),
        4e-4,
    );
    assert!(max_diff(&both, &swapped) > 0.1);
}

#[test]
fn a_controlnet_conditions_an_inpainting_unet_as_diffusers_does() {
    // tiny-sd-inpaint's UNet has tiny SD 1.5's blocks: the ControlNet takes its latents, the
    // UNet its nine channels.
    let reference = Reference::of("controlnet-inpaint");
    let inpainting = Reference::of("tiny-sd-inpaint");
    let mut model =
        StableDiffusion::load(&fixtures().join("tiny-sd-inpaint"), &Device::Cpu).unwrap();
    model
        .add_controlnet(&ControlNetFile {
            path: fixtures().join("tiny-sd15/controlnet"),
            label: "controlnet".into(),
        })
        .unwrap();
    let request = GenerateRequest {
        steps: 4,
        guidance: 5.0,
        init: Some(InitImage {
            image: test_image(),
            strength: 1.0,
            mask: Some(right_half()),
        }),
        control: vec![Control {
            image: edges(),
            scale: reference.scalar("ctl_inpaint_scale"),
            start: 0.0,
            end: 1.0,
            guess_mode: false,
        }],
        ..reference.request()
    };
    let image = model.sample(&request, inpainting.get("run_init")).unwrap();
    close(
        "inpainting run with a ControlNet",
        &image.permute((0, 2, 3, 1)).unwrap(),
        reference.get("ctl_inpaint_image"),
        4e-4,
    );
}

#[test]
fn control_images_without_their_controlnets_or_out_of_range_are_refused() {
    let plain = StableDiffusion::load(&fixtures().join("tiny-sd15"), &Device::Cpu).unwrap();
    let control = Control {
        image: edges(),
        scale: 1.0,
        start: 0.0,
        end: 1.0,
        guess_mode: false,
    };
    let request = GenerateRequest {
        steps: 1,
        control: vec![control.clone()],
        ..GenerateRequest::default()
    };
    let noise = Tensor::zeros((1, 4, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = plain.sample(&request, &noise).unwrap_err().to_string();
    assert!(
        err.contains("1 control image(s) but the model was loaded with 0 ControlNet(s)"),
        "{err}"
    );
    let twice = GenerateRequest {
        control: vec![control.clone(), control.clone()],
        ..request.clone()
    };
    let err = controlled().sample(&twice, &noise).unwrap_err().to_string();
    assert!(
        err.contains("2 control image(s) but the model was loaded with 1"),
        "{err}"
    );
    let backwards = GenerateRequest {
        control: vec![Control {
            start: 0.8,
            end: 0.2,
            ..control
        }],
        ..request
    };
    let err = controlled()
        .sample(&backwards, &noise)
        .unwrap_err()
        .to_string();
    assert!(err.contains("from 0.8 to 0.2"), "{err}");
}

#[test]
fn a_controlnet_for_another_unet_is_refused_naming_both() {
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sdxl"), &Device::Cpu).unwrap();
    let err = model
        .add_controlnet(&ControlNetFile {
            path: fixtures().join("tiny-sd15/controlnet"),
            label: "controlnet".into(),
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("a ControlNet for blocks of"), "{err}");
    assert!(model.controls().is_empty());
}

#[test]
fn a_recipe_conditions_its_asset_on_control_images_and_the_manifest_records_them() {
    let studio = common::Studio::new();
    let root = studio.root();
    copy_dir(
        &fixtures().join("tiny-sd15"),
        &root.join("models/tiny-sd15"),
    );
    let recipe = |name: &str, extra: &str| {
        std::fs::write(
            root.join(format!("{name}.recipe.toml")),
            format!(
                "kind = \"sprite\"\nprompt = \"a stone arch\"\nmodel = \"models/tiny-sd15\"\n\
                 steps = 3\nseed = 5\n{extra}"
            ),
        )
        .unwrap();
    };
    let controlnet = "controlnet = \"models/tiny-sd15/controlnet\"\n\
                      control_image = \"models/tiny-sd15/control/edges.png\"\n";
    recipe("guided", &format!("{controlnet}control_scale = 1.2\n"));
    recipe("plain", "");
    recipe("late", &format!("{controlnet}control_start = 0.5\n"));
    recipe(
        "pair",
        "controlnet = [\n\
         { model = \"models/tiny-sd15/controlnet\", image = \"models/tiny-sd15/control/edges.png\", scale = 1.2 },\n\
         { model = \"models/tiny-sd15/controlnet-2\", image = \"models/tiny-sd15/control/grid.png\", start = 0.3 },\n]\n",
    );
    recipe(
        "imageless",
        "controlnet = \"models/tiny-sd15/controlnet\"\n",
    );
    recipe(
        "nowhere",
        "controlnet = \"models/nowhere\"\ncontrol_image = \"models/tiny-sd15/control/edges.png\"\n",
    );
    let report = studio.build_report(None);
    let outcome = |name: &str| {
        report["assets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["asset"] == name)
            .map(|a| a.to_string())
            .unwrap_or_else(|| report.to_string())
    };
    for name in ["guided", "plain", "late", "pair"] {
        assert!(outcome(name).contains("\"built\""), "{name}: {report}");
    }
    let refused = report.to_string();
    assert!(
        refused.contains("a ControlNet needs its `control_image`"),
        "{refused}"
    );
    let nowhere = outcome("nowhere");
    assert!(
        nowhere.contains("`controlnet`") && nowhere.contains("models/nowhere"),
        "{nowhere}"
    );
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(root.join("guided.prov.json")).unwrap()).unwrap();
    let used = manifest.model.controlnets[0].clone();
    assert_eq!(used.file, "models/tiny-sd15/controlnet");
    assert_eq!(
        used.sha256,
        autonomy_pipeline::models::sd::controlnet::sha256(
            &root.join("models/tiny-sd15/controlnet")
        )
        .unwrap()
    );
    let control = manifest
        .parents
        .iter()
        .find(|p| p.role == "control_image")
        .expect("the control image among the parents");
    assert_eq!(control.reference, "file:models/tiny-sd15/control/edges.png");
    let pixels = |name: &str| {
        image::open(root.join(format!("{name}.png")))
            .unwrap()
            .to_rgba8()
    };
    assert!(
        mean_difference(&pixels("guided"), &pixels("plain")) > 1.0,
        "the ControlNet changes the picture"
    );
    assert!(mean_difference(&pixels("guided"), &pixels("late")) > 0.1);
    // Two ControlNets: both recorded in order, both control images among the parents.
    let pair: Manifest =
        serde_json::from_slice(&std::fs::read(root.join("pair.prov.json")).unwrap()).unwrap();
    let files: Vec<&str> = pair
        .model
        .controlnets
        .iter()
        .map(|c| c.file.as_str())
        .collect();
    assert_eq!(
        files,
        [
            "models/tiny-sd15/controlnet",
            "models/tiny-sd15/controlnet-2"
        ]
    );
    let images: Vec<&str> = pair
        .parents
        .iter()
        .filter(|p| p.role == "control_image")
        .map(|p| p.reference.as_str())
        .collect();
    assert_eq!(
        images,
        [
            "file:models/tiny-sd15/control/edges.png",
            "file:models/tiny-sd15/control/grid.png"
        ]
    );
    assert!(mean_difference(&pixels("guided"), &pixels("pair")) > 1.0);
    for name in ["guided", "pair"] {
        let verified = studio.reproduce(&root.join(format!("{name}.png")));
        let text = String::from_utf8_lossy(&verified.stdout);
        assert!(text.contains("reproduced bit for bit"), "{name}: {text}");
    }
}

#[test]
fn generate_takes_controlnets_and_their_control_images() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures().join("tiny-sd15");
    let generate = |name: &str, extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_autonomy"))
            .args(["generate", "a stone arch", "--steps", "2", "--model"])
            .arg(&model)
            .arg("-o")
            .arg(dir.path().join(name))
            .args(extra)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (controlnet, image) = (
        model.join("controlnet").display().to_string(),
        model.join("control/edges.png").display().to_string(),
    );
    let (ok, stderr) = generate("plain.png", &[]);
    assert!(ok, "{stderr}");
    let (ok, stderr) = generate(
        "guided.png",
        &[
            "--controlnet",
            &controlnet,
            "--control-image",
            &image,
            "--control-scale",
            "1.5",
        ],
    );
    assert!(ok, "{stderr}");
    let pixels = |name: &str| image::open(dir.path().join(name)).unwrap().to_rgba8();
    assert!(mean_difference(&pixels("plain.png"), &pixels("guided.png")) > 1.0);
    // Two ControlNets, a scale for both, and the control image each saw.
    let (second, grid) = (
        model.join("controlnet-2").display().to_string(),
        model.join("control/grid.png").display().to_string(),
    );
    let (out_a, out_b) = (dir.path().join("a.png"), dir.path().join("b.png"));
    let (ok, stderr) = generate(
        "pair.png",
        &[
            "--controlnet",
            &controlnet,
            "--controlnet",
            &second,
            "--control-image",
            &image,
            "--control-image",
            &grid,
            "--control-scale",
            "1.5",
            "--control-out",
            out_a.to_str().unwrap(),
            "--control-out",
            out_b.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(mean_difference(&pixels("guided.png"), &pixels("pair.png")) > 1.0);
    let rgb = |path: &std::path::Path| image::open(path).unwrap().to_rgb8();
    assert_eq!(rgb(&out_a), rgb(std::path::Path::new(&image)));
    assert_eq!(rgb(&out_b), rgb(std::path::Path::new(&grid)));
    let (ok, stderr) = generate(
        "one-image.png",
        &[
            "--controlnet",
            &controlnet,
            "--controlnet",
            &second,
            "--control-image",
            &image,
        ],
    );
    assert!(
        !ok && stderr.contains("--control-image was given 1 times for 2 ControlNet(s)"),
        "{stderr}"
    );
    let (ok, stderr) = generate("alone.png", &["--controlnet", &controlnet]);
    assert!(!ok && stderr.contains("--control-image"), "{stderr}");
    let (ok, stderr) = generate(
        "backwards.png",
        &[
            "--controlnet",
            &controlnet,
            "--control-image",
            &image,
            "--control-start",
            "0.9",
            "--control-end",
            "0.1",
        ],
    );
    assert!(
        !ok && stderr.contains("--control-start 0.9 is after --control-end 0.1"),
        "{stderr}"
    );
}

/// `model`'s ControlNet's residuals for the reference's call at its scale.
fn residuals_of(model: &StableDiffusion, reference: &Reference) -> Vec<Tensor> {
    let hint = reference.get("control_image").repeat((2, 1, 1, 1)).unwrap();
    let residuals = model.controls()[0]
        .as_controlnet()
        .unwrap()
        .forward(
            reference.get("cn_sample"),
            reference.scalar("cn_timestep"),
            reference.get("cn_context"),
            None,
            &hint,
            reference.scalar("cn_scale"),
            false,
        )
        .unwrap();
    residuals.down.into_iter().chain(residuals.mid).collect()
}

#[test]
fn single_file_controlnets_load_in_their_original_names() {
    let reference = Reference::of("controlnet");
    let expected: Vec<Tensor> = (0..6)
        .map(|i| reference.get(&format!("cn_down_{i}")).clone())
        .chain(std::iter::once(reference.get("cn_mid").clone()))
        .collect();
    let with = |file: &str| {
        let mut model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &Device::Cpu).unwrap();
        let path = fixtures().join("tiny-sd15").join(file);
        model
            .add_controlnet(&ControlNetFile {
                path: path.clone(),
                label: file.into(),
            })
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let used = model.identity().controlnets[0].clone();
        assert_eq!(
            used.sha256,
            autonomy_pipeline::models::digest::file_sha256(&path).unwrap()
        );
        model
    };
    // ComfyUI's and A1111's safetensors: the same weights as the diffusers folder.
    let model = with("controlnet-ldm.safetensors");
    for (i, (ours, theirs)) in residuals_of(&model, &reference)
        .iter()
        .zip(&expected)
        .enumerate()
    {
        close(&format!("single file, residual {i}"), ours, theirs, 1e-4);
    }
    // The first releases' pickles, under `control_model.`; a shuffle ControlNet's residuals
    // are averaged over the image.
    let model = with("controlnet-shuffle.pth");
    assert!(
        model.controls()[0]
            .as_controlnet()
            .unwrap()
            .spec()
            .global_pool
    );
    for (i, (ours, theirs)) in residuals_of(&model, &reference)
        .iter()
        .zip(&expected)
        .enumerate()
    {
        let pooled = theirs.mean_keepdim(2).unwrap().mean_keepdim(3).unwrap();
        close(&format!("pooled residual {i}"), ours, &pooled, 1e-4);
    }
    // A file that is no ControlNet is refused, naming it.
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &Device::Cpu).unwrap();
    let lora = fixtures().join("tiny-sd15/loras/kohya.safetensors");
    let err = model
        .add_controlnet(&ControlNetFile {
            path: lora.clone(),
            label: "kohya.safetensors".into(),
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not a ControlNet") && err.contains("kohya.safetensors"),
        "{err}"
    );
}

#[test]
fn canny_edges_match_opencvs_pixel_for_pixel() {
    let folder = fixtures().join("canny");
    let picture = image::open(folder.join("picture.png")).unwrap().to_rgb8();
    for (low, high) in [(100, 200), (30, 80), (250, 400)] {
        let theirs = image::open(folder.join(format!("edges-{low}-{high}.png")))
            .unwrap()
            .to_luma8();
        let ours = canny(&picture, f64::from(low), f64::from(high));
        let differing = ours
            .pixels()
            .zip(theirs.pixels())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 0, "thresholds {low}/{high}");
        assert!(ours.pixels().any(|p| p[0] == 255));
    }
}

#[test]
fn a_recipe_and_generate_make_the_control_image_of_a_pictures_canny_edges() {
    let studio = common::Studio::new();
    let root = studio.root();
    copy_dir(
        &fixtures().join("tiny-sd15"),
        &root.join("models/tiny-sd15"),
    );
    copy_dir(&fixtures().join("canny"), &root.join("art"));
    let recipe = |name: &str, control: &str| {
        std::fs::write(
            root.join(format!("{name}.recipe.toml")),
            format!(
                "kind = \"sprite\"\nprompt = \"a stone arch\"\nmodel = \"models/tiny-sd15\"\n\
                 steps = 3\nseed = 5\ncontrolnet = \"models/tiny-sd15/controlnet\"\n{control}"
            ),
        )
        .unwrap();
    };
    // The picture's edges found at build time, and OpenCV's edges of it made beforehand.
    recipe(
        "found",
        "control_image = \"art/picture.png\"\ncontrol_preprocess = \"canny\"\n",
    );
    recipe("drawn", "control_image = \"art/edges-100-200.png\"\n");
    recipe(
        "finer",
        "control_image = \"art/picture.png\"\ncontrol_preprocess = \"canny\"\n\
         control_thresholds = [30, 80]\n",
    );
    let report = studio.build_report(None);
    let assets = report["assets"].as_array().unwrap();
    assert!(
        assets.len() == 3 && assets.iter().all(|a| a["outcome"] == "built"),
        "{report}"
    );
    let pixels = |name: &str| {
        image::open(root.join(format!("{name}.png")))
            .unwrap()
            .to_rgba8()
    };
    assert_eq!(pixels("found"), pixels("drawn"));
    assert_ne!(
        pixels("found"),
        pixels("finer"),
        "other edges, another picture"
    );
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(root.join("found.prov.json")).unwrap()).unwrap();
    assert!(
        manifest
            .parents
            .iter()
            .any(|p| p.role == "control_image" && p.reference == "file:art/picture.png")
    );

    // `generate` writes the control image it made when asked.
    let out = root.join("edges.png");
    let path = |relative: &str| root.join(relative).display().to_string();
    let generated = studio.run(&[
        "generate",
        "a stone arch",
        "--steps",
        "1",
        "--model",
        &path("models/tiny-sd15"),
        "--controlnet",
        &path("models/tiny-sd15/controlnet"),
        "--control-image",
        &path("art/picture.png"),
        "--control-preprocess",
        "canny",
        "--control-thresholds",
        "30,80",
        "--control-out",
        &out.display().to_string(),
        "-o",
        &path("arch.png"),
    ]);
    assert!(generated.status.success(), "{generated:?}");
    let made = image::open(&out).unwrap().to_luma8();
    let theirs = image::open(root.join("art/edges-30-80.png"))
        .unwrap()
        .to_luma8();
    assert_eq!(made, theirs);
}

/// Tileable textures and the hires pass run with a ControlNet (that the control image moves
/// with the latents is the next test's).
#[test]
fn a_tileable_texture_keeps_its_wrap_with_a_controlnet_and_a_hires_pass_follows_it_too() {
    use autonomy_pipeline::generator::{Hires, HiresUpscaler};
    use autonomy_pipeline::post::seam;
    let model = controlled();
    // A control image that tiles itself: lines every 16 pixels both ways.
    let grid = image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb(if x % 16 == 3 || y % 16 == 9 {
            [255; 3]
        } else {
            [0; 3]
        })
    });
    let control = Control {
        image: grid,
        scale: 1.5,
        start: 0.0,
        end: 1.0,
        guess_mode: false,
    };
    let request = GenerateRequest {
        prompt: "stone floor tiles".into(),
        steps: 4,
        guidance: 5.0,
        count: 3,
        tileable: true,
        control: vec![control],
        ..GenerateRequest::default()
    };
    let ratio = |images: &[image::RgbaImage]| {
        images.iter().map(|i| seam(i).ratio()).sum::<f64>() / images.len() as f64
    };
    let tiled = model.generate(&request).unwrap();
    let plain = model
        .generate(&GenerateRequest {
            control: Vec::new(),
            ..request.clone()
        })
        .unwrap();
    assert_ne!(tiled, plain, "the ControlNet steers the texture");
    let r = ratio(&tiled);
    assert!(r < 1.3, "the wrap-around seam is {r:.2}× the inside");
    // The hires pass draws at 128² with the control image resized to it, wrapped alike.
    let hires = model
        .generate(&GenerateRequest {
            hires: Some(Hires {
                size: 128,
                strength: 0.6,
                steps: 4,
                upscaler: HiresUpscaler::Latent,
            }),
            ..request
        })
        .unwrap();
    assert_eq!(hires[0].dimensions(), (128, 128));
    let r = ratio(&hires);
    assert!(
        r < 1.3,
        "after the hires pass the seam is {r:.2}× the inside"
    );
}

/// A tileable texture's latents are rolled by a random offset at each step; the control image
/// must roll with them, or what it draws lands anywhere (see
/// [`common::sd::tileable_control_ratios`]; without the roll the change spreads evenly:
/// ratios of 0.5–1.1 against 2.8–3.2 with it).
#[test]
fn a_tileable_textures_control_image_moves_with_its_latents() {
    for (seed, ratio) in common::sd::tileable_control_ratios(&controlled(), 2.0)
        .iter()
        .enumerate()
    {
        assert!(
            *ratio > 2.0,
            "seed {seed}: the change lies {ratio:.2}× more in the squares' quadrants than outside"
        );
    }
}
