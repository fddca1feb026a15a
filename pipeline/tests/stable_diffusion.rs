//! Stable Diffusion on candle against diffusers: tiny random-weight pipelines in the real
//! diffusers layout (made by `scripts/sd-fixtures/make.py`), with what diffusers computed for
//! fixed inputs. Each stage must match: token ids exactly; text embeddings, one UNet call, the
//! VAE both ways and a whole DDIM / Euler sampling run within float tolerance.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use autonomy_pipeline::build::provenance::Manifest;
use autonomy_pipeline::generator::{
    GenerateRequest, Generator, Hires, HiresUpscaler, InitImage, RefinerUse, UpscalerUse, VaeUse,
};
use autonomy_pipeline::models::sd::block_weights::BlockWeights;
use autonomy_pipeline::models::sd::checkpoint::Checkpoint;
use autonomy_pipeline::models::sd::config::{PipelineSpec, VaeKind};
use autonomy_pipeline::models::sd::embedding::EmbeddingFile;
use autonomy_pipeline::models::sd::ensemble::Ensemble;
use autonomy_pipeline::models::sd::hypernetwork::HypernetworkFile;
use autonomy_pipeline::models::sd::lora::{LoraFile, LoraSummary};
use autonomy_pipeline::models::sd::scheduler::{
    Kind, Prediction, Sampler, Schedule, SchedulerConfig, Spacing,
};
use autonomy_pipeline::models::sd::upscaler::{Upscaler, UpscalerFile};
use autonomy_pipeline::models::sd::vae_file::{self, VaeFile};
use autonomy_pipeline::models::sd::{Prompt, SdError, StableDiffusion, Stage, checkpoint};
use autonomy_pipeline::models::sd::{hires, lanczos};
use autonomy_pipeline::post::seam;
use candle_core::{Device, Tensor};
use common::sd::{Reference, close, fixtures, max_diff, right_half, test_image};
use common::{copy_dir, mean_difference};
use image::{GrayImage, Luma, RgbaImage};

const FAMILIES: [&str; 4] = ["tiny-sd15", "tiny-sd21", "tiny-sd-turbo", "tiny-sd-inpaint"];

fn load(name: &str) -> StableDiffusion {
    StableDiffusion::load(&fixtures().join(name), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{name} loads: {e}"))
}

#[test]
fn every_stage_matches_diffusers() {
    for name in FAMILIES {
        let model = load(name);
        let reference = Reference::of(name);
        assert_eq!(
            model.token_ids(&reference.prompt),
            reference.ids("cond_ids"),
            "{name}: prompt ids"
        );
        assert_eq!(
            model.token_ids(&reference.negative),
            reference.ids("uncond_ids"),
            "{name}: negative ids"
        );
        let cond = model.encode_prompt(&reference.prompt).unwrap().context;
        let uncond = model.encode_prompt(&reference.negative).unwrap().context;
        close(&format!("{name} text"), &cond, reference.get("cond"), 1e-4);
        close(
            &format!("{name} negative text"),
            &uncond,
            reference.get("uncond"),
            1e-4,
        );

        let context = Tensor::cat(&[&uncond, &cond], 0).unwrap();
        let eps = model
            .predict(
                reference.get("unet_sample"),
                reference.scalar("unet_timestep"),
                &context,
                None,
                None,
            )
            .unwrap();
        close(
            &format!("{name} UNet"),
            &eps,
            reference.get("unet_eps"),
            1e-4,
        );

        let decoded = model.vae_decode(reference.get("vae_latents")).unwrap();
        close(
            &format!("{name} VAE decode"),
            &decoded,
            reference.get("vae_decoded"),
            1e-4,
        );
        let mean = model.vae_encode_mean(reference.get("vae_image")).unwrap();
        close(
            &format!("{name} VAE encode"),
            &mean,
            reference.get("vae_encoded_mean"),
            1e-4,
        );

        let inpainting = name.contains("inpaint");
        let request = GenerateRequest {
            steps: reference.scalar("run_steps") as usize,
            guidance: reference.scalar("run_guidance"),
            init: inpainting.then(|| InitImage {
                image: test_image(),
                strength: 1.0,
                mask: Some(right_half()),
            }),
            ..reference.request()
        };
        // diffusers returns (n, H, W, 3); a whole run is held to a tenth of a grey level.
        let run = |request: &GenerateRequest, noise: &str| {
            let image = model.sample(request, reference.get(noise)).unwrap();
            image.permute((0, 2, 3, 1)).unwrap()
        };
        close(
            &format!("{name} whole run ({} steps)", request.steps),
            &run(&request, "run_init"),
            reference.get("run_image"),
            4e-4,
        );
        if reference.tensors.contains_key("rescaled_image") {
            let rescaled = GenerateRequest {
                guidance_rescale: reference.scalar("rescaled_guidance_rescale"),
                ..request.clone()
            };
            close(
                &format!("{name} whole run with guidance rescale"),
                &run(&rescaled, "run_init"),
                reference.get("rescaled_image"),
                4e-4,
            );
        }
        if !inpainting {
            let request = GenerateRequest {
                init: Some(InitImage {
                    image: test_image(),
                    strength: reference.scalar("img2img_strength") as f32,
                    mask: None,
                }),
                ..request
            };
            close(
                &format!("{name} image-to-image"),
                &run(&request, "img2img_noise"),
                reference.get("img2img_image"),
                4e-4,
            );
        }
    }
}

#[test]
fn sdxl_matches_diffusers_with_both_text_encoders_and_the_added_conditioning() {
    let name = "tiny-sdxl";
    let model = load(name);
    let reference = Reference::of(name);
    assert_eq!(
        model.token_ids(&reference.prompt),
        reference.ids("cond_ids")
    );
    let cond = model.encode_prompt(&reference.prompt).unwrap();
    let uncond = model.encode_negative(&reference.negative).unwrap();
    close("SDXL prompt", &cond.context, reference.get("cond"), 1e-4);
    close(
        "SDXL negative",
        &uncond.context,
        reference.get("uncond"),
        1e-4,
    );
    let pooled = cond.pooled.clone().expect("SDXL pools the prompt");
    close("SDXL pooled", &pooled, reference.get("pooled"), 1e-4);
    let empty = model.encode_negative("").unwrap();
    assert_eq!(
        max_diff(&empty.context, &empty.context.zeros_like().unwrap()),
        0.0
    );

    let eps = sdxl_eps(&model, &uncond, &cond, reference.get("unet_sample"));
    close("SDXL UNet", &eps, reference.get("unet_eps"), 3e-4);

    for (negative, key) in [
        (reference.negative.clone(), "run_image"),
        (String::new(), "run_no_negative_image"),
    ] {
        let request = GenerateRequest {
            prompt: reference.prompt.clone(),
            negative_prompt: negative,
            steps: reference.scalar("run_steps") as usize,
            guidance: reference.scalar("run_guidance"),
            ..GenerateRequest::default()
        };
        let image = model.sample(&request, reference.get("run_init")).unwrap();
        close(
            &format!("SDXL whole run ({key})"),
            &image.permute((0, 2, 3, 1)).unwrap(),
            reference.get(key),
            4e-4,
        );
    }
}

#[test]
fn sdxls_base_hands_its_latents_to_the_refiner_as_diffusers_does() {
    let reference = Reference::of("tiny-sdxl");
    let switch = reference.scalar("ensemble_switch");
    let request = GenerateRequest {
        steps: reference.scalar("ensemble_steps") as usize,
        guidance: 5.0,
        ..reference.request()
    };
    let base = load("tiny-sdxl");
    let handed = base
        .denoise_stage(&request, reference.get("run_init"), Stage::Until(switch))
        .unwrap();
    // Still noisy latents, up to ~50: f32 rounding reaches 1e-4 there.
    close(
        "the base's latents at the switch",
        &handed,
        reference.get("ensemble_latents"),
        3e-4,
    );
    let refiner_path = fixtures().join("tiny-sdxl-refiner");
    let refiner = load("tiny-sdxl-refiner");
    let refiner_version = refiner.identity().weights_sha256.clone();
    let ensemble = Ensemble::new(base, refiner, &refiner_path, "models/refiner", switch).unwrap();
    let image = ensemble
        .sample(&request, reference.get("run_init"))
        .unwrap();
    close(
        "base then refiner",
        &image.permute((0, 2, 3, 1)).unwrap(),
        reference.get("ensemble_image"),
        4e-4,
    );
    let identity = ensemble.identity();
    assert_eq!(identity.name, "stable-diffusion/tiny-sdxl");
    assert_eq!(
        identity.refiner,
        Some(RefinerUse {
            file: "models/refiner".into(),
            weights_sha256: refiner_version,
            switch,
        })
    );
    for switch in [0.0, 1.0, f64::NAN] {
        let refused = Ensemble::new(
            load("tiny-sdxl"),
            load("tiny-sdxl-refiner"),
            &refiner_path,
            "r",
            switch,
        );
        assert!(refused.is_err_and(|e| e.to_string().contains("switch point")));
    }
}

/// The SDXL UNet's guided pair of outputs at t = 501: negative then prompt.
fn sdxl_eps(model: &StableDiffusion, uncond: &Prompt, cond: &Prompt, sample: &Tensor) -> Tensor {
    let context = Tensor::cat(&[&uncond.context, &cond.context], 0).unwrap();
    let added = |prompt: &Prompt, negative: bool| {
        model
            .added_conditioning(prompt.pooled.as_ref().unwrap(), negative)
            .unwrap()
    };
    let added = Tensor::cat(&[added(uncond, true), added(cond, false)], 0).unwrap();
    model
        .predict(sample, 501.0, &context, Some(&added), None)
        .unwrap()
}

#[test]
fn sdxl_refiner_matches_diffusers_with_one_text_encoder_and_aesthetic_scores() {
    let name = "tiny-sdxl-refiner";
    let model = load(name);
    let reference = Reference::of(name);
    let spec = model.spec();
    assert!(spec.text.is_none() && spec.text_2.is_some());
    assert!(spec.unet.added.is_some_and(|a| a.time_ids == 5));
    assert_eq!(
        model.token_ids(&reference.prompt),
        reference.ids("cond_ids"),
        "the second tokenizer (`!` padding) is the one"
    );
    let cond = model.encode_prompt(&reference.prompt).unwrap();
    let uncond = model.encode_negative(&reference.negative).unwrap();
    close("refiner prompt", &cond.context, reference.get("cond"), 1e-4);
    close(
        "refiner negative",
        &uncond.context,
        reference.get("uncond"),
        1e-4,
    );
    let pooled = cond.pooled.clone().expect("the refiner pools the prompt");
    close("refiner pooled", &pooled, reference.get("pooled"), 1e-4);
    let pooled = uncond.pooled.clone().unwrap();
    close(
        "refiner negative pooled",
        &pooled,
        reference.get("uncond_pooled"),
        1e-4,
    );
    // `force_zeros_for_empty_prompt` is false: an empty negative prompt is encoded.
    let empty = model.encode_negative("").unwrap();
    close(
        "refiner empty negative",
        &empty.context,
        reference.get("empty"),
        1e-4,
    );

    // The negative row's aesthetic score (2.5) differs from the prompt's (6): swapping them
    // must change the UNet's output, and diffusers' order must match it.
    let eps = sdxl_eps(&model, &uncond, &cond, reference.get("unet_sample"));
    close("refiner UNet", &eps, reference.get("unet_eps"), 3e-4);
    let context = Tensor::cat(&[&uncond.context, &cond.context], 0).unwrap();
    let swapped = Tensor::cat(
        &[
            model
                .added_conditioning(uncond.pooled.as_ref().unwrap(), false)
                .unwrap(),
            model
                .added_conditioning(cond.pooled.as_ref().unwrap(), true)
                .unwrap(),
        ],
        0,
    )
    .unwrap();
    let swapped = model
        .predict(
            reference.get("unet_sample"),
            501.0,
            &context,
            Some(&swapped),
            None,
        )
        .unwrap();
    assert!(max_diff(&swapped, reference.get("unet_eps")) > 1e-3);

    let request = GenerateRequest {
        steps: reference.scalar("run_steps") as usize,
        guidance: reference.scalar("run_guidance"),
        init: Some(InitImage {
            image: test_image(),
            strength: reference.scalar("img2img_strength") as f32,
            mask: None,
        }),
        ..reference.request()
    };
    let image = model
        .sample(&request, reference.get("img2img_noise"))
        .unwrap();
    close(
        "refiner image-to-image",
        &image.permute((0, 2, 3, 1)).unwrap(),
        reference.get("img2img_image"),
        4e-4,
    );
}

#[test]
fn an_lcm_distilled_unet_takes_the_guidance_scale_as_an_embedding() {
    let name = "tiny-lcm";
    let model = load(name);
    let reference = Reference::of(name);
    assert_eq!(
        model.token_ids(&reference.prompt),
        reference.ids("cond_ids")
    );
    let cond = model.encode_prompt(&reference.prompt).unwrap().context;
    close("LCM text", &cond, reference.get("cond"), 1e-4);
    let guidance = reference.scalar("unet_guidance");
    let embedding = model
        .guidance_embedding(guidance, 1)
        .unwrap()
        .expect("an LCM-distilled UNet embeds the guidance scale");
    close(
        "guidance embedding",
        &embedding,
        reference.get("unet_guidance_embedding"),
        1e-3,
    );
    let sample = reference.get("unet_sample");
    let eps = model
        .predict(sample, 499.0, &cond, None, Some(&embedding))
        .unwrap();
    close("LCM UNet", &eps, reference.get("unet_eps"), 1e-4);
    let unguided = model.predict(sample, 499.0, &cond, None, None).unwrap();
    assert!(max_diff(&unguided, reference.get("unet_eps")) > 1e-3);
    assert!(
        load("tiny-sd15")
            .guidance_embedding(7.5, 1)
            .unwrap()
            .is_none()
    );

    // Whole runs at two guidance scales. diffusers' LCM pipeline takes no negative prompt:
    // the one given here must change nothing (no second, unconditioned batch runs).
    let steps = reference.get("run_timesteps").dim(0).unwrap();
    let schedule = model.spec().scheduler.schedule(steps);
    let theirs = reference.get("run_timesteps").to_vec1::<i64>().unwrap();
    let ours: Vec<i64> = schedule.timesteps.iter().map(|&t| t as i64).collect();
    assert_eq!(ours, theirs);
    let mut images = Vec::new();
    for (guidance, key) in [(guidance, "run_image"), (1.5, "run_low_guidance_image")] {
        let request = GenerateRequest {
            steps,
            guidance,
            ..reference.request()
        };
        let image = model.sample(&request, reference.get("run_init")).unwrap();
        let image = image.permute((0, 2, 3, 1)).unwrap();
        close(
            &format!("LCM whole run ({key})"),
            &image,
            reference.get(key),
            4e-4,
        );
        images.push(image);
    }
    assert!(max_diff(&images[0], &images[1]) > 1e-3);
}

#[test]
fn the_folders_scheduler_places_the_timesteps() {
    for name in FAMILIES
        .into_iter()
        .chain(["tiny-sdxl", "tiny-sdxl-refiner"])
    {
        let model = load(name);
        let reference = Reference::of(name);
        let steps = reference.scalar("run_steps") as usize;
        let ours: Vec<i64> = model
            .spec()
            .scheduler
            .schedule(steps)
            .timesteps
            .iter()
            .map(|&t| t as i64)
            .collect();
        let theirs = reference.get("run_timesteps").to_vec1::<i64>().unwrap();
        assert_eq!(ours, theirs, "{name}");
    }
}

/// The stand-in for the UNet in `scripts/sd-fixtures/schedulers.py`.
fn stand_in(x: &Tensor, t: f64) -> Tensor {
    ((x.tanh().unwrap() * 0.5).unwrap() + 0.1 * (t / 100.0).cos()).unwrap()
}

/// A list of numbers in `schedulers.json`.
fn floats(value: &serde_json::Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// The stand-in's latents `(1, 4, 3, 3)` in `schedulers.json`.
fn stand_in_latents(value: &serde_json::Value) -> Tensor {
    Tensor::from_vec(floats(value), (1, 4, 3, 3), &Device::Cpu).unwrap()
}

/// The fresh noise `schedulers.py` gives SDE samplers at step `i`: `sin(0.9·k + 1.7·i)·1.1`.
fn step_noise(i: usize) -> Tensor {
    let values: Vec<f32> = (0..36)
        .map(|k| (k as f32 * 0.9 + i as f32 * 1.7).sin() * 1.1)
        .collect();
    Tensor::from_vec(values, (1, 4, 3, 3), &Device::Cpu).unwrap()
}

/// Runs `schedule` from step `first` with the stand-in model.
fn sample_with_stand_in(schedule: &mut Schedule, mut latents: Tensor, first: usize) -> Vec<f32> {
    for i in first..schedule.timesteps.len() {
        let t = schedule.timesteps[i];
        let x = schedule.scale_model_input(&latents, i).unwrap();
        let noise = schedule.needs_noise(i).then(|| step_noise(i));
        latents = schedule
            .step(&stand_in(&x, t), i, &latents, noise.as_ref())
            .unwrap();
    }
    latents.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn every_scheduler_follows_diffusers_step_by_step() {
    let path = fixtures().join("schedulers.json");
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let (noise, image) = (
        stand_in_latents(&reference["noise"]),
        stand_in_latents(&reference["image"]),
    );
    let strength = reference["strength"].as_f64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        // The file as diffusers saves it (`-Infinity` for DPM-Solver's `lambda_min_clipped`).
        let config_path = dir.path().join(format!("{name}.json"));
        let text = case["scheduler_config"].as_str().unwrap();
        std::fs::write(&config_path, text).unwrap();
        let config = SchedulerConfig::read(&config_path).unwrap_or_else(|e| panic!("{name}: {e}"));
        for run in case["runs"].as_array().unwrap() {
            assert_run_follows(&config, run, strength, (&noise, &image), name);
        }
    }
}

/// One reference run of `schedulers.json` (`name`, at the run's steps): the timesteps (to
/// 5e-3: diffusers derives fractional ones from f32 noise levels, k-diffusion from σ), the
/// starting noise level, text to image from `noise`, and image to image from `image` at
/// `strength`.
fn assert_run_follows(
    config: &SchedulerConfig,
    run: &serde_json::Value,
    strength: f64,
    (noise, image): (&Tensor, &Tensor),
    name: &str,
) {
    let steps = run["steps"].as_u64().unwrap() as usize;
    let what = format!("{name}, {steps} steps");
    let mut schedule = config.schedule(steps);
    let timesteps = floats(&run["timesteps"]);
    assert_eq!(schedule.timesteps.len(), timesteps.len(), "{what}");
    for (ours, theirs) in schedule.timesteps.iter().zip(&timesteps) {
        assert!(
            (*ours as f32 - theirs).abs() < 5e-3,
            "{what}: timesteps {:?} vs {timesteps:?}",
            schedule.timesteps
        );
    }
    // Relative: zero terminal SNR starts Euler at σ = 4096, which diffusers holds in f32.
    let theirs = run["init_noise_sigma"].as_f64().unwrap();
    assert!(
        (schedule.init_noise_sigma() - theirs).abs() < 1e-4 * theirs.max(1.0),
        "{what}: init noise σ {} vs {theirs}",
        schedule.init_noise_sigma()
    );
    assert_text_to_image(&mut schedule, noise, run, &what);

    let mut schedule = config.schedule(steps);
    let noised = ((steps as f64 * strength).floor() as usize).min(steps);
    let first = schedule.order() * (steps - noised);
    assert_eq!(
        first as u64,
        run["img2img_first"].as_u64().unwrap(),
        "{what}"
    );
    if first >= schedule.timesteps.len() {
        return; // nothing runs: the pipeline returns the init image's latents
    }
    let noised = schedule.add_noise(image, noise, first).unwrap();
    let start = largest(&noised);
    let ours = sample_with_stand_in(&mut schedule, noised, first);
    assert_close(
        &ours,
        &floats(&run["img2img"]),
        start,
        &format!("{what}, image to image"),
    );
}

#[test]
fn k_diffusions_dpm_plus_plus_2s_ancestral_follows_k_diffusion_step_by_step() {
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("schedulers.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (noise, image) = (
        stand_in_latents(&reference["noise"]),
        stand_in_latents(&reference["image"]),
    );
    let cases = reference["k_diffusion"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let (name, base) = (
            case["name"].as_str().unwrap(),
            case["base"].as_str().unwrap(),
        );
        // The Hub's own file, its sampler swapped as a recipe's `sampler` does.
        let path = dir.path().join(format!("{base}.json"));
        std::fs::write(&path, reference["hub_configs"][base].as_str().unwrap()).unwrap();
        let sampler = Sampler::parse(case["sampler"].as_str().unwrap()).unwrap();
        let config = SchedulerConfig::read(&path).unwrap().with_sampler(sampler);
        let strength = reference["strength"].as_f64().unwrap();
        for run in case["runs"].as_array().unwrap() {
            assert_run_follows(&config, run, strength, (&noise, &image), name);
        }
        // DPM2 a takes the same calls but steps differently: the sampler is not DPM2 a.
        let dpm2 = SchedulerConfig::read(&path)
            .unwrap()
            .with_sampler(match sampler {
                Sampler::DpmPlusPlus2sAncestralKarras => Sampler::Dpm2AncestralKarras,
                _ => Sampler::Dpm2Ancestral,
            });
        let run = &case["runs"][3];
        let steps = run["steps"].as_u64().unwrap() as usize;
        let mut schedule = dpm2.schedule(steps);
        let start = (&noise * schedule.init_noise_sigma()).unwrap();
        let other = sample_with_stand_in(&mut schedule, start, 0);
        let theirs = floats(&run["txt2img"]);
        let apart = other
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(apart > 1e-2, "{name}: DPM2 a lands {apart} from DPM++ 2S a");
    }
}

#[test]
fn a_recipes_sampler_is_diffusers_from_config_of_the_folders_scheduler() {
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("schedulers.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let noise = stand_in_latents(&reference["noise"]);
    let case = |name: &str| {
        let case = reference["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|case| case["name"] == name)
            .unwrap()
            .clone();
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, case["scheduler_config"].as_str().unwrap()).unwrap();
        (SchedulerConfig::read(&path).unwrap(), case)
    };
    // The Hub's own files (they name no `timestep_spacing`, so the new class's default applies).
    let hub = |name: &str| {
        let path = dir.path().join(format!("{name}.hub.json"));
        std::fs::write(&path, reference["hub_configs"][name].as_str().unwrap()).unwrap();
        SchedulerConfig::read(&path).unwrap()
    };
    // (the folder's scheduler, the sampler picked, diffusers' `from_config` of it)
    for (base, sampler, swapped) in [
        ("sd15", "dpm++2m", "sd15-dpm++2m"),
        ("sd15", "dpm++2m-karras", "sd15-dpm++2m-karras"),
        ("sd15", "euler-karras", "sd15-euler-karras"),
        ("sd15", "lms", "sd15-lms"),
        ("sd15", "lms-karras", "sd15-lms-karras"),
        ("sd15", "heun-karras", "sd15-heun-karras"),
        ("sd21", "pndm", "sd21-pndm-v"),
        ("sd21", "dpm++2m-karras", "sd21-dpm++2m-karras-v"),
        ("sd21", "ddim", "sd21-ddim-v"),
        ("sd15", "ddpm", "sd15-ddpm"),
        ("sd15", "euler-a", "sd15-euler-a"),
        ("sd15", "dpm++2m-sde", "sd15-dpm++2m-sde"),
        ("sd21", "dpm++2m-sde", "sd21-dpm++2m-sde-v"),
        ("sd15", "lcm", "sd15-lcm"),
        ("sd21", "lcm", "sd21-lcm-v"),
        ("sd15", "tcd", "sd15-tcd"),
        ("sd21", "tcd", "sd21-tcd-v"),
        ("sd15", "unipc", "sd15-unipc"),
        ("sd15", "unipc-karras", "sd15-unipc-karras"),
        ("sd21", "unipc", "sd21-unipc-v"),
        ("sd15", "deis", "sd15-deis"),
        ("sd15", "dpm2", "sd15-dpm2"),
        ("sd15", "dpm2-karras", "sd15-dpm2-karras"),
        ("sd15", "dpm2-a", "sd15-dpm2-a"),
        ("sd15", "dpm++sde", "sd15-dpm++sde"),
        ("sd15", "dpm++sde-karras", "sd15-dpm++sde-karras"),
        ("sd15", "dpm++2s", "sd15-dpm++2s"),
        ("sd15", "dpm++2s-karras", "sd15-dpm++2s-karras"),
        ("sd21", "dpm++2s", "sd21-dpm++2s-v"),
    ] {
        let picked = hub(base).with_sampler(Sampler::parse(sampler).unwrap());
        let (expected, case) = case(swapped);
        let what = format!("{base} with {sampler}");
        assert_eq!(
            (picked.kind, picked.spacing, picked.ramp, picked.prediction),
            (
                expected.kind,
                expected.spacing,
                expected.ramp,
                expected.prediction
            ),
            "{what}"
        );
        for run in case["runs"].as_array().unwrap() {
            let steps = run["steps"].as_u64().unwrap() as usize;
            let mut schedule = picked.schedule(steps);
            assert_eq!(
                schedule.timesteps,
                expected.schedule(steps).timesteps,
                "{what}"
            );
            assert_text_to_image(
                &mut schedule,
                &noise,
                run,
                &format!("{what}, {steps} steps"),
            );
        }
    }
    assert!(
        Sampler::parse("dpm++3m")
            .unwrap_err()
            .contains("dpm++2m-karras")
    );
}

/// A whole text-to-image run of `schedule` from `noise` matches `run`'s.
fn assert_text_to_image(
    schedule: &mut Schedule,
    noise: &Tensor,
    run: &serde_json::Value,
    what: &str,
) {
    let start = (noise * schedule.init_noise_sigma()).unwrap();
    let magnitude = largest(&start);
    let ours = sample_with_stand_in(schedule, start, 0);
    assert_close(
        &ours,
        &floats(&run["txt2img"]),
        magnitude,
        &format!("{what}, text to image"),
    );
}

/// The largest magnitude in `latents`.
fn largest(latents: &Tensor) -> f32 {
    latents
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Within 1e-4 of the largest magnitude (diffusers runs these in f32), or two f32 steps at the
/// starting latents' magnitude: a step from σ = 4096 (zero terminal SNR) subtracts numbers of
/// that size, so both sides round there.
fn assert_close(ours: &[f32], theirs: &[f32], start: f32, what: &str) {
    let scale = theirs.iter().fold(1f32, |m, v| m.max(v.abs()));
    let tolerance = (1e-4 * scale).max(2.0 * f32::EPSILON * start);
    let worst = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= tolerance,
        "{what}: off by {worst} (scale {scale}, start {start})"
    );
}

fn request(prompt: &str) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.into(),
        steps: 4,
        guidance: 5.0,
        ..GenerateRequest::default()
    }
}

#[test]
fn seeds_repeat_and_differ_and_the_generator_makes_native_images() {
    let model = load("tiny-sd15");
    assert_eq!(model.native_size(), 64);
    let a = model.generate(&request("golden crown")).unwrap();
    let b = model.generate(&request("golden crown")).unwrap();
    assert_eq!(a, b, "same request, same pixels");
    assert_eq!(a[0].dimensions(), (64, 64));
    let other = model
        .generate(&GenerateRequest {
            seed: 1,
            ..request("golden crown")
        })
        .unwrap();
    assert!(
        mean_difference(&a[0], &other[0]) > 1.0,
        "another seed, another image"
    );
    let two = model
        .generate(&GenerateRequest {
            count: 2,
            ..request("golden crown")
        })
        .unwrap();
    // A batch runs other matrix kernels than a single image: equal up to rounding.
    assert!(
        mean_difference(&two[0], &a[0]) < 0.5 && mean_difference(&two[1], &other[0]) < 0.5,
        "image i of a batch is seed + i: {:.3} {:.3}",
        mean_difference(&two[0], &a[0]),
        mean_difference(&two[1], &other[0])
    );
    let identity = model.identity();
    assert_eq!(identity.name, "stable-diffusion/tiny-sd15");
    assert_eq!(identity.weights_sha256.len(), 64);
}

#[test]
fn euler_ancestral_sampling_is_seeded() {
    let root = tempfile::tempdir().unwrap();
    let folder = copy_fixture("tiny-sd21", root.path());
    let config = folder.join("scheduler/scheduler_config.json");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"DDIMScheduler\"", "\"EulerAncestralDiscreteScheduler\"");
    std::fs::write(&config, text).unwrap();
    let model = StableDiffusion::load(&folder, &Device::Cpu).unwrap();
    let a = model.generate(&request("mossy bricks")).unwrap();
    assert_eq!(a, model.generate(&request("mossy bricks")).unwrap());
    let ddim = load("tiny-sd21")
        .generate(&request("mossy bricks"))
        .unwrap();
    assert!(
        mean_difference(&a[0], &ddim[0]) > 0.5,
        "another sampler, another image"
    );
}

#[test]
fn dpm_plus_plus_sde_sampling_is_seeded_by_its_brownian_motion() {
    let model = load("tiny-sd15");
    let sde = GenerateRequest {
        steps: 4,
        sampler: Some(Sampler::DpmPlusPlusSdeKarras),
        ..request("mossy bricks")
    };
    let a = model.generate(&sde).unwrap();
    assert_eq!(
        a,
        model.generate(&sde).unwrap(),
        "the same seed, the same path"
    );
    let other_seed = model
        .generate(&GenerateRequest {
            seed: 99,
            ..sde.clone()
        })
        .unwrap();
    assert!(mean_difference(&a[0], &other_seed[0]) > 0.5);
    // Image-to-image starts inside the motion's span.
    let refined = model
        .generate(&GenerateRequest {
            init: Some(InitImage {
                image: a[0].clone(),
                strength: 0.5,
                mask: None,
            }),
            ..sde.clone()
        })
        .unwrap();
    assert!(mean_difference(&a[0], &refined[0]) > 0.0);
}

#[test]
fn lcm_samples_in_a_few_seeded_steps_and_refuses_more_than_its_schedule_has() {
    let model = load("tiny-sd15");
    let lcm = GenerateRequest {
        steps: 4,
        guidance: 1.5,
        sampler: Some(Sampler::Lcm),
        ..request("mossy bricks")
    };
    let a = model.generate(&lcm).unwrap();
    assert_eq!(a, model.generate(&lcm).unwrap(), "fresh noise is seeded");
    let other_seed = model
        .generate(&GenerateRequest {
            seed: 99,
            ..lcm.clone()
        })
        .unwrap();
    assert!(mean_difference(&a[0], &other_seed[0]) > 0.5);
    let error = model
        .generate(&GenerateRequest { steps: 51, ..lcm })
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("51 steps") && error.contains("at most 50"),
        "{error}"
    );
}

#[test]
fn image_to_image_at_strength_zero_is_the_vae_round_trip() {
    let model = load("tiny-sd15");
    let source = test_image();
    let out = model
        .generate(&GenerateRequest {
            init: Some(InitImage {
                image: source.clone(),
                strength: 0.0,
                mask: None,
            }),
            ..request("stone")
        })
        .unwrap();
    // The round trip of the source through the VAE, done by hand.
    let pixels: Vec<f32> = (0..3)
        .flat_map(|c| source.pixels().map(move |p| f32::from(p[c]) / 127.5 - 1.0))
        .collect();
    let x = Tensor::from_vec(pixels, (1, 3, 64, 64), &Device::Cpu).unwrap();
    let trip = model
        .vae_decode(&model.vae_encode_mean(&x).unwrap())
        .unwrap();
    let trip = ((trip / 2.0).unwrap() + 0.5)
        .unwrap()
        .clamp(0f32, 1f32)
        .unwrap();
    let trip = trip.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let worst = out[0]
        .pixels()
        .enumerate()
        .flat_map(|(i, p)| (0..3).map(move |c| (i, c, p[c])))
        .map(|(i, c, v)| (f32::from(v) - trip[c * 4096 + i] * 255.0).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 0.51, "strength 0 changed a pixel by {worst}");
    let changed = model
        .generate(&GenerateRequest {
            init: Some(InitImage {
                image: source,
                strength: 0.75,
                mask: None,
            }),
            ..request("stone")
        })
        .unwrap();
    assert!(
        mean_difference(&changed[0], &out[0]) > 0.5,
        "strength 0.75 repaints"
    );
}

#[test]
fn inpainting_keeps_the_unmasked_latents_and_repaints_the_rest() {
    let model = load("tiny-sd15");
    let source = test_image();
    let kept = model.image_latents(&source).unwrap();
    let request = GenerateRequest {
        init: Some(InitImage {
            image: source,
            strength: 1.0,
            mask: Some(right_half()),
        }),
        ..request("stone")
    };
    let noise = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &Device::Cpu).unwrap();
    let latents = model.denoise(&request, &noise).unwrap();
    let left = |t: &Tensor| t.narrow(3, 0, 4).unwrap();
    let right = |t: &Tensor| t.narrow(3, 4, 4).unwrap();
    assert_eq!(max_diff(&left(&latents), &left(&kept)), 0.0, "black keeps");
    assert!(
        max_diff(&right(&latents), &right(&kept)) > 0.1,
        "white repaints"
    );
}

#[test]
fn tileable_images_meet_across_the_wrap() {
    let model = load("tiny-sd15");
    let make = |tileable| {
        model
            .generate(&GenerateRequest {
                count: 3,
                tileable,
                ..request("grass texture")
            })
            .unwrap()
    };
    let ratio = |images: &[RgbaImage]| {
        images.iter().map(|i| seam(i).ratio()).sum::<f64>() / images.len() as f64
    };
    let (tiled, plain) = (ratio(&make(true)), ratio(&make(false)));
    assert!(
        tiled < 1.3,
        "tileable: the wrap-around seam is {tiled:.2}× the inside"
    );
    assert!(tiled < plain, "{tiled:.2} vs {plain:.2}");
    // A hires pass scales the first image up across the wrap — its latents, or its pixels
    // through Lanczos or an upscaling model's tiles, encoded with a wrapped margin — and
    // redraws it wrapped.
    let mut model = model;
    model
        .add_upscaler(&upscaler_file("compact-x4.pth"))
        .unwrap();
    for (upscaler, strength) in [
        (HiresUpscaler::Latent, 0.6),
        (HiresUpscaler::Lanczos, 0.4),
        (HiresUpscaler::Model, 0.4),
    ] {
        let hires = model
            .generate(&GenerateRequest {
                count: 3,
                tileable: true,
                hires: Some(Hires {
                    size: 128,
                    strength,
                    steps: 6,
                    upscaler,
                }),
                ..request("grass texture")
            })
            .unwrap();
        assert_eq!(hires[0].dimensions(), (128, 128));
        let tiled = ratio(&hires);
        assert!(
            tiled < 1.3,
            "tileable at hires with {upscaler:?}: the wrap-around seam is {tiled:.2}× the inside"
        );
    }
}

fn copy_fixture(name: &str, to: &Path) -> PathBuf {
    let target = to.join(name);
    copy_dir(&fixtures().join(name), &target);
    target
}

#[test]
fn a_hugging_face_cache_folder_loads_offline() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("models--autonomy--tiny-sd15");
    let revision = "0123456789abcdef0123456789abcdef01234567";
    copy_dir(
        &fixtures().join("tiny-sd15"),
        &cache.join("snapshots").join(revision),
    );
    std::fs::create_dir_all(cache.join("refs")).unwrap();
    std::fs::write(cache.join("refs/main"), revision).unwrap();
    let model = StableDiffusion::load(&cache, &Device::Cpu).unwrap();
    assert_eq!(model.identity().name, "stable-diffusion/autonomy/tiny-sd15");
    assert_eq!(
        model.identity().weights_sha256,
        load("tiny-sd15").identity().weights_sha256,
        "the version is the weights', wherever they sit"
    );
}

/// Loads a copy of tiny-sd15 after `spoil` changed it, expecting an error naming `file`.
fn refuses(spoil: impl FnOnce(&Path), file: &str, words: &str) {
    refuses_in("tiny-sd15", spoil, file, words);
}

/// Loads a copy of the fixture `name` after `spoil` changed it, expecting an error naming
/// `file`.
fn refuses_in(name: &str, spoil: impl FnOnce(&Path), file: &str, words: &str) {
    let root = tempfile::tempdir().unwrap();
    let folder = copy_fixture(name, root.path());
    spoil(&folder);
    let message = match StableDiffusion::load(&folder, &Device::Cpu) {
        Ok(_) => panic!("a spoiled folder loaded ({file})"),
        Err(e) => e.to_string(),
    };
    assert!(
        message.contains(file) && message.contains(words),
        "the error must name `{file}` and say `{words}`: {message}"
    );
}

#[test]
fn broken_folders_are_refused_with_the_file_named() {
    let write = |relative: &'static str, text: &'static str| {
        move |folder: &Path| std::fs::write(folder.join(relative), text).unwrap()
    };
    refuses(
        write("unet/config.json", "{ not json"),
        "unet/config.json",
        "invalid",
    );
    refuses(
        |f| std::fs::remove_file(f.join("vae/config.json")).unwrap(),
        "vae/config.json",
        "missing",
    );
    refuses(
        |f| {
            let path = f.join("unet/diffusion_pytorch_model.safetensors");
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        },
        "unet/diffusion_pytorch_model.safetensors",
        "do not match",
    );
    refuses(
        |f| std::fs::remove_file(f.join("text_encoder/model.safetensors")).unwrap(),
        "text_encoder/model.safetensors",
        "missing",
    );
    let edit = |relative: &'static str, from: &'static str, to: &'static str| {
        move |folder: &Path| {
            let path = folder.join(relative);
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains(from), "{relative} has no {from}");
            std::fs::write(path, text.replace(from, to)).unwrap();
        }
    };
    refuses(
        edit(
            "text_encoder/config.json",
            "\"hidden_size\": 32",
            "\"hidden_size\": 48",
        ),
        "unet/config.json",
        "cross_attention_dim",
    );
    refuses(
        write("tokenizer/merges.txt", "#version: 0.2\nab\n"),
        "tokenizer/merges.txt",
        "line 2",
    );
    refuses(
        edit(
            "scheduler/scheduler_config.json",
            "DDIMScheduler",
            "FlowMatchEulerDiscreteScheduler",
        ),
        "scheduler/scheduler_config.json",
        "FlowMatchEulerDiscreteScheduler",
    );
    refuses(
        edit(
            "scheduler/scheduler_config.json",
            "DDIMScheduler",
            "PNDMScheduler",
        ),
        "scheduler/scheduler_config.json",
        "skip_prk_steps",
    );
    refuses(
        edit(
            "unet/config.json",
            "\"addition_embed_type\": null",
            "\"addition_embed_type\": \"text_time\"",
        ),
        "unet/config.json",
        "addition_embed_type",
    );
    let missing = StableDiffusion::load(Path::new("/nonexistent/sd"), &Device::Cpu);
    assert!(matches!(missing, Err(SdError::MissingFile { .. })));
}

/// Sets `model_index.json`'s `key` to `value` in the folder.
fn set_in_index(key: &'static str, value: serde_json::Value) -> impl FnOnce(&Path) {
    move |folder: &Path| {
        let path = folder.join("model_index.json");
        let mut index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        index[key] = value;
        std::fs::write(path, serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    }
}

#[test]
fn folders_without_a_text_encoder_or_with_the_wrong_time_ids_are_refused() {
    refuses(
        |f| {
            set_in_index("text_encoder", serde_json::json!([null, null]))(f);
            set_in_index("tokenizer", serde_json::json!([null, null]))(f);
        },
        "model_index.json",
        "no `text_encoder` (nor `text_encoder_2`)",
    );
    refuses_in(
        "tiny-sdxl-refiner",
        set_in_index("tokenizer_2", serde_json::Value::Null),
        "model_index.json",
        "no `tokenizer_2`",
    );
    // The refiner's UNet takes five time ids; without the flag diffusers would build six.
    refuses_in(
        "tiny-sdxl-refiner",
        set_in_index("requires_aesthetics_score", false.into()),
        "unet/config.json",
        "requires_aesthetics_score",
    );
    refuses_in(
        "tiny-sdxl",
        set_in_index("requires_aesthetics_score", true.into()),
        "unet/config.json",
        "make 64",
    );
}

#[test]
fn a_recipe_above_the_models_size_is_told_about_the_hires_pass_and_names_its_upscaler() {
    let studio = common::Studio::new();
    let root = studio.root();
    copy_dir(
        &fixtures().join("tiny-sd15"),
        &root.join("models/tiny-sd15"),
    );
    let recipe = "kind = \"texture\"\nprompt = \"slate\"\nmodel = \"models/tiny-sd15\"\n\
                  size = 128\nsteps = 2\n";
    let build = |text: &str| {
        std::fs::write(root.join("slate.recipe.toml"), text).unwrap();
        let out = studio.run(&["build", root.to_str().unwrap(), "--model", &studio.model]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = build(recipe);
    assert!(
        stderr.contains("its pixels are repeated; set `hires_strength`"),
        "{stderr}"
    );
    let stderr = build(&format!("{recipe}hires_strength = 0.6\n"));
    assert!(!stderr.contains("pixels are repeated"), "{stderr}");
    assert_eq!(
        image::image_dimensions(root.join("slate.png")).unwrap(),
        (128, 128)
    );
    // With an upscaling model: the manifest names the file and its hash, the cache follows
    // the file's bytes, and the asset reproduces.
    std::fs::create_dir_all(root.join("upscalers")).unwrap();
    let file = root.join("upscalers/sharp.pth");
    std::fs::copy(upscaler_file("compact-x4.pth").path, &file).unwrap();
    build(&format!(
        "{recipe}hires_strength = 0.4\nhires_upscaler = \"upscalers/sharp.pth\"\n"
    ));
    let manifest = || -> Manifest {
        serde_json::from_slice(&std::fs::read(root.join("slate.prov.json")).unwrap()).unwrap()
    };
    let made = manifest();
    let sha256 = |path: &Path| autonomy_pipeline::models::digest::file_sha256(path).unwrap();
    assert_eq!(
        made.model.upscaler,
        Some(UpscalerUse {
            file: "upscalers/sharp.pth".into(),
            sha256: sha256(&file),
        })
    );
    assert_eq!(made.recipe["hires"]["upscaler"], "upscalers/sharp.pth");
    let verified = studio.reproduce(root);
    let text = String::from_utf8_lossy(&verified.stdout);
    // (Unsigned, so `verify` exits as unverifiable; the reproduction itself is checked.)
    assert!(
        text.contains("Verified reproduction: reproduced bit for bit"),
        "{text}"
    );
    let before = std::fs::read(root.join("slate.png")).unwrap();
    std::fs::copy(upscaler_file("rrdb-x4-old.pth").path, &file).unwrap();
    let report = studio.build_report(None);
    assert_eq!(report["assets"][0]["outcome"], "built", "{report}");
    assert_eq!(manifest().model.upscaler.unwrap().sha256, sha256(&file));
    assert_ne!(
        std::fs::read(root.join("slate.png")).unwrap(),
        before,
        "another upscaler, another image"
    );
}

#[test]
fn hypernetworks_run_on_the_attention_as_a1111_runs_them() {
    let reference = Reference::of("hypernetworks");
    let file = |name: &str, multiplier: f64| HypernetworkFile {
        path: fixtures().join(format!("tiny-sd15/hypernetworks/{name}.pt")),
        label: format!("hypernetworks/{name}.pt"),
        multiplier,
    };
    let eps = |model: &StableDiffusion| {
        model
            .predict(
                reference.get("unet_sample"),
                501.0,
                reference.get("context"),
                None,
                None,
            )
            .unwrap()
    };
    let plain = load("tiny-sd15");
    close(
        "no hypernetwork",
        &eps(&plain),
        reference.get("none_eps"),
        1e-4,
    );
    // A1111's current format (`swish`, layer norms, a dropout between) at 0.8; then the first
    // format (`linear1`/`linear2`, a legacy `torch.save` stream, no settings) at 1 followed by
    // `mish` over three layers at 0.5, the second taking the first's output.
    for (label, files) in [
        ("pixel_style", vec![file("pixel-style", 0.8)]),
        ("legacy_wide", vec![file("legacy", 1.0), file("wide", 0.5)]),
    ] {
        let mut model = load("tiny-sd15");
        model.add_hypernetworks(&files).unwrap();
        let ours = eps(&model);
        close(label, &ours, reference.get(&format!("{label}_eps")), 1e-4);
        assert!(max_diff(&ours, reference.get("none_eps")) > 0.05, "{label}");
        let used = &model.identity().hypernetworks;
        assert_eq!(used.len(), files.len());
        assert_eq!(
            (
                used[0].file.as_str(),
                used[0].multiplier,
                used[0].sha256.len()
            ),
            (files[0].label.as_str(), files[0].multiplier, 64)
        );
    }
    // Added one call after another, as in one.
    let mut model = load("tiny-sd15");
    model.add_hypernetworks(&[file("legacy", 1.0)]).unwrap();
    model.add_hypernetworks(&[file("wide", 0.5)]).unwrap();
    close(
        "added in turn",
        &eps(&model),
        reference.get("legacy_wide_eps"),
        1e-4,
    );
    // A prompt's tag must name a hypernetwork the model runs, at its multiplier.
    let tagged = |prompt: &str| GenerateRequest {
        prompt: prompt.into(),
        steps: 1,
        ..GenerateRequest::default()
    };
    assert!(
        model
            .generate(&tagged("a knight <hypernet:wide:0.5>"))
            .is_ok()
    );
    let wrong = model
        .generate(&tagged("a knight <hypernet:wide:0.6>"))
        .unwrap_err()
        .to_string();
    assert!(
        wrong.contains(
            "`<hypernet:wide:0.6>` applies a hypernetwork this model was not loaded with"
        ),
        "{wrong}"
    );
    // Files that are no hypernetworks are refused, naming them, and change nothing.
    let mut model = load("tiny-sd15");
    for (path, says) in [
        (
            fixtures().join("tiny-sd15/loras/kohya-pickled.pt"),
            "has no layers for any width",
        ),
        (
            fixtures().join("tiny-sd15/loras/kohya.safetensors"),
            "not a readable PyTorch pickle",
        ),
    ] {
        let error = model
            .add_hypernetworks(&[
                file("wide", 1.0),
                HypernetworkFile {
                    path: path.clone(),
                    ..file("x", 1.0)
                },
            ])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&path.display().to_string()) && error.contains(says),
            "{error}"
        );
    }
    assert!(model.identity().hypernetworks.is_empty());
    close(
        "after refusals",
        &eps(&model),
        reference.get("none_eps"),
        1e-4,
    );
}

#[test]
fn a_recipe_prompt_runs_a_hypernetwork_by_its_a1111_tag_and_the_manifest_records_it() {
    let studio = common::Studio::new();
    let root = studio.root();
    // The pipeline's folder holds `hypernetworks/`, as A1111's `models/` does.
    copy_dir(
        &fixtures().join("tiny-sd15"),
        &root.join("models/tiny-sd15"),
    );
    let recipe = |name: &str, prompt: &str| {
        std::fs::write(
            root.join(format!("{name}.recipe.toml")),
            format!(
                "kind = \"sprite\"\nprompt = \"{prompt}\"\nmodel = \"models/tiny-sd15\"\n\
                 steps = 2\nseed = 3\n"
            ),
        )
        .unwrap();
    };
    recipe("tagged", "moss, <hypernet:pixel-style:0.8> stones");
    recipe("plain", "moss,  stones");
    recipe("missing", "moss, <hypernet:nowhere> stones");
    let report = studio.build_report(None);
    let outcome = |name: &str| {
        report["assets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["asset"] == name)
            .unwrap_or_else(|| panic!("{name}: {report}"))
            .clone()
    };
    assert_eq!(outcome("tagged")["outcome"], "built", "{report}");
    assert_eq!(outcome("plain")["outcome"], "built", "{report}");
    let missing = outcome("missing").to_string();
    assert!(
        missing.contains("no hypernetwork file `nowhere.pt`") && missing.contains("pixel-style"),
        "{missing}"
    );
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(root.join("tagged.prov.json")).unwrap()).unwrap();
    let used = &manifest.model.hypernetworks;
    assert_eq!(used.len(), 1, "{used:?}");
    assert_eq!(
        (used[0].file.as_str(), used[0].multiplier),
        ("models/tiny-sd15/hypernetworks/pixel-style.pt", 0.8)
    );
    assert_eq!(
        used[0].sha256,
        autonomy_pipeline::models::digest::file_sha256(
            &root.join("models/tiny-sd15/hypernetworks/pixel-style.pt")
        )
        .unwrap()
    );
    let pixels = |name: &str| {
        image::open(root.join(format!("{name}.png")))
            .unwrap()
            .to_rgba8()
    };
    assert!(
        mean_difference(&pixels("tagged"), &pixels("plain")) > 1.0,
        "the hypernetwork changes the picture"
    );
    let verified = studio.reproduce(&root.join("tagged.png"));
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(text.contains("reproduced bit for bit"), "{text}");
}

#[test]
fn a_recipe_prompt_applies_a_lora_by_its_a1111_tag_from_the_project_model_folders() {
    let studio = common::Studio::new();
    let root = studio.root();
    copy_dir(
        &fixtures().join("tiny-sd15"),
        &root.join("models/tiny-sd15"),
    );
    std::fs::create_dir_all(root.join("shared")).unwrap();
    std::fs::copy(
        fixtures().join("tiny-sd15/loras/kohya.safetensors"),
        root.join("shared/moss_detail.safetensors"),
    )
    .unwrap();
    std::fs::write(
        root.join("autonomy.toml"),
        "[models]\ndirs = [\"shared\"]\n",
    )
    .unwrap();
    let recipe = |prompt: &str, loras: &str| {
        format!(
            "kind = \"sprite\"\nprompt = \"{prompt}\"\nmodel = \"models/tiny-sd15\"\n\
             steps = 2\nseed = 3\n{loras}"
        )
    };
    std::fs::write(
        root.join("tagged.recipe.toml"),
        recipe("moss, <lora:moss_detail:0.8> stones", ""),
    )
    .unwrap();
    std::fs::write(
        root.join("named.recipe.toml"),
        recipe(
            "moss,  stones",
            "loras = [{ file = \"shared/moss_detail.safetensors\", scale = 0.8 }]\n",
        ),
    )
    .unwrap();
    std::fs::write(root.join("plain.recipe.toml"), recipe("moss,  stones", "")).unwrap();
    // A1111's two multipliers: the text encoder's, then the UNet's; a recipe's `text_scale`.
    std::fs::write(
        root.join("split.recipe.toml"),
        recipe("moss, <lora:moss_detail:0:0.8> stones", ""),
    )
    .unwrap();
    // A1111's `dyn`: the first rank of each down/up pair alone.
    std::fs::write(
        root.join("cut.recipe.toml"),
        recipe("moss, <lora:moss_detail:0.8:dyn=1> stones", ""),
    )
    .unwrap();
    std::fs::write(
        root.join("cut_named.recipe.toml"),
        recipe(
            "moss,  stones",
            "loras = [{ file = \"shared/moss_detail.safetensors\", scale = 0.8, rank = 1 }]\n",
        ),
    )
    .unwrap();
    // The block-weight extension's `lbw=`: the text encoder and the output blocks alone.
    std::fs::write(
        root.join("blocks.recipe.toml"),
        recipe("moss, <lora:moss_detail:0.8:lbw=OUTALL> stones", ""),
    )
    .unwrap();
    std::fs::write(
        root.join("blocks_named.recipe.toml"),
        recipe(
            "moss,  stones",
            "loras = [{ file = \"shared/moss_detail.safetensors\", scale = 0.8, blocks = \"OUTALL\" }]\n",
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("split_named.recipe.toml"),
        recipe(
            "moss,  stones",
            "loras = [{ file = \"shared/moss_detail.safetensors\", scale = 0.8, text_scale = 0 }]\n",
        ),
    )
    .unwrap();
    let at = root.to_str().unwrap();
    let built = studio.run(&["build", at, "--model", &studio.model, "--project", at]);
    assert!(built.status.success(), "{built:?}");
    let manifest = |name: &str| -> Manifest {
        serde_json::from_slice(&std::fs::read(root.join(format!("{name}.prov.json"))).unwrap())
            .unwrap()
    };
    let (tagged, named) = (manifest("tagged"), manifest("named"));
    assert_eq!(
        tagged.recipe["prompt"],
        "moss, <lora:moss_detail:0.8> stones"
    );
    assert_eq!(tagged.model.loras, named.model.loras);
    assert_eq!(
        (
            tagged.model.loras[0].file.as_str(),
            tagged.model.loras[0].scale
        ),
        ("shared/moss_detail.safetensors", 0.8)
    );
    let pixels = |name: &str| {
        image::open(root.join(format!("{name}.png")))
            .unwrap()
            .to_rgba8()
    };
    assert_eq!(
        pixels("tagged"),
        pixels("named"),
        "the tag merges the LoRA and is no text"
    );
    assert_ne!(pixels("tagged"), pixels("plain"));
    let split = manifest("split");
    assert_eq!(
        (split.model.loras[0].scale, split.model.loras[0].text_scale),
        (0.8, Some(0.0))
    );
    assert!(tagged.model.loras[0].text_scale.is_none());
    assert_ne!(
        pixels("split"),
        pixels("tagged"),
        "the text encoder left as it was"
    );
    assert_ne!(pixels("split"), pixels("plain"));
    assert_eq!(manifest("split_named").model.loras, split.model.loras);
    assert_eq!(pixels("split_named"), pixels("split"));
    let cut = manifest("cut");
    assert_eq!(
        (cut.model.loras[0].scale, cut.model.loras[0].rank),
        (0.8, Some(1))
    );
    assert!(tagged.model.loras[0].rank.is_none());
    assert_ne!(
        pixels("cut"),
        pixels("tagged"),
        "three of four ranks left out"
    );
    assert_ne!(pixels("cut"), pixels("plain"));
    // A recipe's `rank` cuts the same ranks.
    assert_eq!(manifest("cut_named").model.loras, cut.model.loras);
    assert_eq!(pixels("cut_named"), pixels("cut"));
    let blocks = manifest("blocks");
    let outall = BlockWeights::parse("OUTALL").unwrap().ratios();
    assert_eq!(blocks.model.loras[0].blocks.as_deref(), Some(&outall[..]));
    assert!(tagged.model.loras[0].blocks.is_none());
    assert_ne!(
        pixels("blocks"),
        pixels("tagged"),
        "the input blocks left out"
    );
    assert_ne!(pixels("blocks"), pixels("plain"));
    assert_eq!(manifest("blocks_named").model.loras, blocks.model.loras);
    assert_eq!(pixels("blocks_named"), pixels("blocks"));
    // Without the project's folders the tag names nothing the build can find.
    let lost = studio.run(&["build", at, "--model", &studio.model, "--force"]);
    let stderr = String::from_utf8_lossy(&lost.stderr);
    assert!(
        !lost.status.success()
            && stderr.contains("`<lora:moss_detail:0.8>`: no LoRA file named `moss_detail`"),
        "{stderr}"
    );
}

#[test]
fn a_recipe_naming_a_diffusers_folder_builds_signs_caches_and_reproduces() {
    let studio = common::Studio::new();
    let root = studio.root();
    copy_dir(
        &fixtures().join("tiny-sd15"),
        &root.join("models/tiny-sd15"),
    );
    copy_dir(
        &fixtures().join("tiny-sd-inpaint/vae"),
        &root.join("vaes/other"),
    );
    std::fs::create_dir_all(root.join("embeddings")).unwrap();
    std::fs::copy(
        fixtures().join("embeddings/pixel-style.pt"),
        root.join("embeddings/moss-style.pt"),
    )
    .unwrap();
    std::fs::write(
        root.join("bricks.recipe.toml"),
        "kind = \"texture\"\nprompt = \"mossy stone bricks\"\nmodel = \"models/tiny-sd15\"\n\
         size = 32\nsteps = 3\nguidance = 5.0\n",
    )
    .unwrap();
    std::fs::write(
        root.join("moss.recipe.toml"),
        "kind = \"sprite\"\nprompt = \"moss, moss-style\"\nmodel = \"models/tiny-sd15\"\nsteps = 2\n\
         loras = [{ file = \"models/tiny-sd15/loras/kohya.safetensors\", scale = 0.8 }]\n\
         embeddings = [\"embeddings/moss-style.pt\"]\n\
         sampler = \"dpm++2m-karras\"\nvae = \"vaes/other\"\n",
    )
    .unwrap();
    std::fs::write(
        root.join("slate.recipe.toml"),
        "kind = \"texture\"\nprompt = \"slate tiles\"\nmodel = \"models/tiny-sd15\"\n\
         size = 128\nsteps = 2\nhires_strength = 0.6\nhires_steps = 3\n",
    )
    .unwrap();
    studio.new_key("studio");
    studio.build_signed("studio");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(root.join("bricks.prov.json")).unwrap()).unwrap();
    assert_eq!(manifest.model.name, "stable-diffusion/tiny-sd15");
    assert!(
        manifest.model.generator.starts_with("autonomy-sd/"),
        "{}",
        manifest.model.generator
    );
    assert_eq!(
        manifest.model.weights_sha256,
        load("tiny-sd15").identity().weights_sha256
    );
    let moss: Manifest =
        serde_json::from_slice(&std::fs::read(root.join("moss.prov.json")).unwrap()).unwrap();
    assert_eq!(moss.recipe["sampler"], "dpm++2m-karras");
    assert!(manifest.recipe.get("sampler").is_none());
    let lora = &moss.model.loras;
    assert_eq!(lora.len(), 1);
    assert_eq!(
        (lora[0].file.as_str(), lora[0].scale),
        ("models/tiny-sd15/loras/kohya.safetensors", 0.8)
    );
    let lora_bytes = std::fs::read(root.join(&lora[0].file)).unwrap();
    assert_eq!(
        lora[0].sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&lora_bytes))
    );
    assert!(manifest.model.loras.is_empty());
    let embeddings = &moss.model.embeddings;
    assert_eq!(embeddings.len(), 1);
    assert_eq!(embeddings[0].file, "embeddings/moss-style.pt");
    assert_eq!(
        embeddings[0].sha256,
        autonomy_pipeline::models::digest::file_sha256(&root.join("embeddings/moss-style.pt"))
            .unwrap()
    );
    assert_eq!(
        moss.recipe["embeddings"],
        serde_json::json!(["embeddings/moss-style.pt"])
    );
    assert!(manifest.model.embeddings.is_empty());
    let vae = moss
        .model
        .vae
        .as_ref()
        .expect("the VAE named in the recipe");
    assert_eq!(vae.file, "vaes/other");
    assert_eq!(
        vae.sha256,
        autonomy_pipeline::models::digest::file_sha256(
            &root.join("vaes/other/diffusion_pytorch_model.safetensors")
        )
        .unwrap()
    );
    assert_eq!(moss.recipe["vae"], "vaes/other");
    assert!(manifest.model.vae.is_none());
    let texture = image::open(root.join("bricks.png")).unwrap().to_rgba8();
    assert_eq!(
        texture.dimensions(),
        (32, 32),
        "64 px scaled down by block means"
    );
    // Drawn at 64 px and redrawn at 128, not scaled by whole pixels.
    let slate = image::open(root.join("slate.png")).unwrap().to_rgba8();
    assert_eq!(slate.dimensions(), (128, 128));
    assert!(
        slate
            .enumerate_pixels()
            .any(|(x, y, p)| x % 2 == 1 && p != slate.get_pixel(x - 1, y))
    );
    let slate: Manifest =
        serde_json::from_slice(&std::fs::read(root.join("slate.prov.json")).unwrap()).unwrap();
    assert_eq!(
        slate.recipe["hires"],
        serde_json::json!({ "strength": 0.6, "steps": 3 })
    );
    // `autonomy build --json` of the project, signed as before; its report.
    let build_report = || studio.build_report(Some("studio"));
    let report = build_report();
    for asset in report["assets"].as_array().unwrap() {
        assert_eq!(asset["outcome"], "up-to-date", "{report}");
    }
    let verified = studio.reproduce(root);
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success() && text.matches("reproduced bit for bit").count() == 3,
        "{text}{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    // Another LoRA file, another embedding, then another VAE, under the same name: the asset
    // that uses it is made again, the other is not.
    for (other, file) in [
        (
            fixtures().join("tiny-sd15/loras/peft.safetensors"),
            root.join(&lora[0].file),
        ),
        (
            fixtures().join("embeddings/bad-hands.safetensors"),
            root.join("embeddings/moss-style.pt"),
        ),
        (
            fixtures().join("tiny-sd15/vae/diffusion_pytorch_model.safetensors"),
            root.join("vaes/other/diffusion_pytorch_model.safetensors"),
        ),
    ] {
        std::fs::copy(other, &file).unwrap();
        let report = build_report();
        let outcome = |name: &str| {
            report["assets"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["asset"] == name)
                .map(|a| a["outcome"].clone())
                .unwrap()
        };
        assert_eq!(outcome("moss"), "built", "{}: {report}", file.display());
        assert_eq!(outcome("bricks"), "up-to-date", "{report}");
    }
}

#[test]
fn an_sdxl_refiner_recipe_refines_the_base_recipes_image() {
    let studio = common::Studio::new();
    let root = studio.root();
    for name in ["tiny-sdxl", "tiny-sdxl-refiner"] {
        copy_dir(&fixtures().join(name), &root.join("models").join(name));
    }
    std::fs::write(
        root.join("knight.recipe.toml"),
        "kind = \"sprite\"\nprompt = \"a knight\"\nmodel = \"models/tiny-sdxl\"\nsteps = 3\n",
    )
    .unwrap();
    std::fs::write(
        root.join("knight-refined.recipe.toml"),
        "kind = \"sprite\"\nprompt = \"a knight, detailed\"\nmodel = \"models/tiny-sdxl-refiner\"\n\
         source = \"recipe:knight\"\nstrength = 0.5\nsteps = 4\n",
    )
    .unwrap();
    // The ensemble of experts: the refiner takes over the base's latents.
    std::fs::write(
        root.join("knight-ensemble.recipe.toml"),
        "kind = \"sprite\"\nprompt = \"a knight\"\nmodel = \"models/tiny-sdxl\"\nsteps = 3\n\
         refiner = \"models/tiny-sdxl-refiner\"\nrefiner_switch = 0.7\n",
    )
    .unwrap();
    studio.new_key("studio");
    studio.build_signed("studio");
    let ensemble: Manifest =
        serde_json::from_slice(&std::fs::read(root.join("knight-ensemble.prov.json")).unwrap())
            .unwrap();
    assert_eq!(ensemble.model.name, "stable-diffusion/tiny-sdxl");
    assert_eq!(
        ensemble.model.refiner,
        Some(RefinerUse {
            file: "models/tiny-sdxl-refiner".into(),
            weights_sha256: load("tiny-sdxl-refiner").identity().weights_sha256.clone(),
            switch: 0.7,
        })
    );
    assert_eq!(
        ensemble.recipe["refiner"],
        serde_json::json!({ "model": "models/tiny-sdxl-refiner", "switch": 0.7 })
    );
    let knight = image::open(root.join("knight.png")).unwrap().to_rgba8();
    let handed = image::open(root.join("knight-ensemble.png"))
        .unwrap()
        .to_rgba8();
    assert!(
        mean_difference(&knight, &handed) > 1.0,
        "the refiner's last steps change the base's picture"
    );
    let verified = studio.reproduce(&root.join("knight-ensemble.png"));
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(text.contains("reproduced bit for bit"), "{text}");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(root.join("knight-refined.prov.json")).unwrap())
            .unwrap();
    assert_eq!(manifest.model.name, "stable-diffusion/tiny-sdxl-refiner");
    assert_eq!(
        manifest.model.weights_sha256,
        load("tiny-sdxl-refiner").identity().weights_sha256
    );
    let base: Manifest =
        serde_json::from_slice(&std::fs::read(root.join("knight.prov.json")).unwrap()).unwrap();
    assert_eq!(base.model.name, "stable-diffusion/tiny-sdxl");
    assert_eq!(manifest.parents.len(), 1, "{:?}", manifest.parents);
    assert_eq!(manifest.parents[0].reference, "recipe:knight");
    assert_eq!(manifest.parents[0].sha256, base.outputs[0].sha256);
    // The refiner ran on the base image: another source gives another image.
    let refined = image::open(root.join("knight-refined.png"))
        .unwrap()
        .to_rgba8();
    let direct = load("tiny-sdxl-refiner")
        .generate(&GenerateRequest {
            prompt: "a knight, detailed".into(),
            steps: 4,
            init: Some(InitImage {
                image: test_image(),
                strength: 0.5,
                mask: None,
            }),
            ..GenerateRequest::default()
        })
        .unwrap();
    assert_eq!(refined.dimensions(), direct[0].dimensions());
    assert!(mean_difference(&refined, &direct[0]) > 1.0);
}

#[test]
fn kohya_diffusers_and_lycoris_files_merge_as_their_reference_loaders_apply_them() {
    let reference = Reference::of("tiny-sd15");
    let lora = |name: &str, scale: f64| LoraFile {
        path: fixtures().join(format!("tiny-sd15/loras/{name}.safetensors")),
        label: format!("loras/{name}.safetensors"),
        scale,
        text_scale: None,
        rank: None,
        blocks: None,
    };
    for (label, loras) in [
        ("kohya", vec![lora("kohya", 0.8)]),
        ("peft", vec![lora("peft", 0.5)]),
        ("both", vec![lora("kohya", 0.8), lora("peft", 0.5)]),
        // kohya's LoRA on 3×3 convolutions too (LoCon; diffusers' loader agrees), and LyCORIS:
        // LoHa and LoKr on the attention, MLP and 3×3 convolution weights, Tucker factors on
        // half the convolutions (the reference merges them as ComfyUI does).
        ("locon", vec![lora("locon", 0.7)]),
        ("loha", vec![lora("loha", 0.7)]),
        ("lokr", vec![lora("lokr", 0.7)]),
        // DoRA: a LoCon with `dora_scale` magnitudes on the input axis (UNet) and the output
        // axis (text encoder), merged as LyCORIS and ComfyUI do (the scale outside the norm).
        ("dora", vec![lora("dora", 0.8)]),
        // LyCORIS's changes that are not low-rank, merged by the `lycoris-lora` package's own
        // modules: IA³ (rows, or columns on every other layer, scaled), full (whole `diff`s,
        // biases' `diff_b` too) and diag-OFT (blocks of rows rotated, bounded by `alpha` on
        // every other layer, with `rescale` on every third) and GLoRA (b1·b2 + W·a1·a2).
        ("ia3", vec![lora("ia3", 0.7)]),
        ("full", vec![lora("full", 0.7)]),
        ("oft", vec![lora("oft", 0.7)]),
        ("glora", vec![lora("glora", 0.7)]),
        // A LoCon CP-decomposed on the 3×3 convolutions (LyCORIS's `use_tucker`: 1×1 down and
        // up around a 3×3 `lora_mid`), merged by the `lycoris-lora` package.
        ("locon_cp", vec![lora("locon_cp", 0.7)]),
        // LyCORIS's butterfly OFT: output rows turned in stages of wider and wider strides,
        // bounded and rescaled as diag-OFT (the reference merges it with LyCORIS 4's module).
        ("boft", vec![lora("boft", 0.7)]),
        // LyCORIS's norm adapter: `w_norm` and `b_norm` added to the UNet's group and layer
        // norms and the text encoder's layer norms.
        ("norm", vec![lora("norm", 0.7)]),
        // PEFT's OFT (ComfyUI's "OFTv2"): blocks of input columns turned by Cayley–Neumann
        // rotations, one per block on the UNet, one shared by all on the text encoder; the
        // reference moves each weight 0.7 of the way to PEFT's own merge.
        ("oft_peft", vec![lora("oft_peft", 0.7)]),
    ] {
        let model =
            StableDiffusion::load_with(&fixtures().join("tiny-sd15"), &Device::Cpu, &loras, None)
                .unwrap();
        assert_lora_outputs(
            &model,
            &reference,
            &format!("{label} LoRA"),
            &format!("lora_{label}"),
        );
        let used = &model.identity().loras;
        assert_eq!(used.len(), loras.len());
        assert_eq!(used[0].file, loras[0].label);
        assert_eq!(used[0].scale, loras[0].scale);
    }
    // The same kohya and PEFT files pickled by `torch.save` (a legacy-stream `.pt`, a zip
    // `.bin`) merge alike.
    for (file, label) in [("kohya-pickled.pt", "kohya"), ("peft-pickled.bin", "peft")] {
        let pickled = LoraFile {
            path: fixtures().join(format!("tiny-sd15/loras/{file}")),
            label: file.into(),
            ..lora(label, if label == "kohya" { 0.8 } else { 0.5 })
        };
        let model = StableDiffusion::load_with(
            &fixtures().join("tiny-sd15"),
            &Device::Cpu,
            &[pickled],
            None,
        )
        .unwrap();
        assert_lora_outputs(&model, &reference, file, &format!("lora_{label}"));
        let summary =
            LoraSummary::read(&fixtures().join(format!("tiny-sd15/loras/{file}"))).unwrap();
        assert_eq!((summary.rank, summary.text_dim), (4, Some(32)), "{file}");
    }
    // Without LoRAs the same call gives the base output: the LoRAs did the difference.
    let base = load("tiny-sd15");
    let cond = base.encode_prompt(&reference.prompt).unwrap().context;
    let uncond = base.encode_prompt(&reference.negative).unwrap().context;
    let context = Tensor::cat(&[&uncond, &cond], 0).unwrap();
    let eps = base
        .predict(reference.get("unet_sample"), 501.0, &context, None, None)
        .unwrap();
    for label in [
        "both", "locon", "loha", "lokr", "dora", "ia3", "full", "oft", "glora", "locon_cp", "boft",
        "norm", "oft_peft",
    ] {
        let changed = max_diff(&cond, reference.get(&format!("lora_{label}_cond")))
            .min(max_diff(&eps, reference.get(&format!("lora_{label}_eps"))));
        assert!(changed > 1e-2, "{label}: {changed}");
    }
    // A DoRA in diffusers' PEFT format (`lora_magnitude_vector`), loaded by diffusers at 0.6:
    // PEFT puts the scale inside the norm.
    let peft = StableDiffusion::load_with(
        &fixtures().join("tiny-sd15"),
        &Device::Cpu,
        &[lora("dora-peft", 0.6)],
        None,
    )
    .unwrap();
    let context = Tensor::cat(
        &[
            &peft.encode_prompt(&reference.negative).unwrap().context,
            &peft.encode_prompt(&reference.prompt).unwrap().context,
        ],
        0,
    )
    .unwrap();
    let eps = peft
        .predict(reference.get("unet_sample"), 501.0, &context, None, None)
        .unwrap();
    close(
        "PEFT DoRA UNet",
        &eps,
        reference.get("lora_dora_peft_eps"),
        1e-4,
    );
}

#[test]
fn a_kohya_sdxl_lora_reaches_both_text_encoders_and_the_unet_by_its_original_block_names() {
    let name = "tiny-sdxl";
    let reference = Reference::of(name);
    let lora = LoraFile {
        path: fixtures().join("tiny-sdxl/loras/kohya-xl.safetensors"),
        label: "loras/kohya-xl.safetensors".into(),
        scale: 0.7,
        text_scale: None,
        rank: None,
        blocks: None,
    };
    let model =
        StableDiffusion::load_with(&fixtures().join(name), &Device::Cpu, &[lora], None).unwrap();
    let cond = model.encode_prompt(&reference.prompt).unwrap();
    let uncond = model.encode_negative(&reference.negative).unwrap();
    // Both encoders' states side by side: the first 32 features come from `lora_te1_`, the rest
    // from `lora_te2_`; the pooled output from the second alone.
    close(
        "SDXL LoRA text",
        &cond.context,
        reference.get("lora_xl_cond"),
        1e-4,
    );
    let pooled = cond.pooled.clone().unwrap();
    close(
        "SDXL LoRA pooled",
        &pooled,
        reference.get("lora_xl_pooled"),
        1e-4,
    );
    let eps = sdxl_eps(&model, &uncond, &cond, reference.get("unet_sample"));
    close("SDXL LoRA UNet", &eps, reference.get("lora_xl_eps"), 3e-4);
    // Without it the outputs differ: the LoRA made the difference.
    let base = load(name).encode_prompt(&reference.prompt).unwrap();
    assert!(max_diff(&base.context, reference.get("lora_xl_cond")) > 1e-2);
    assert!(
        max_diff(
            base.pooled.as_ref().unwrap(),
            reference.get("lora_xl_pooled")
        ) > 1e-2
    );
    // An SDXL LoRA on an SD 1.5 pipeline is refused, naming the second text encoder.
    let error = StableDiffusion::load_with(
        &fixtures().join("tiny-sd15"),
        &Device::Cpu,
        &[LoraFile {
            path: fixtures().join("tiny-sdxl/loras/kohya-xl.safetensors"),
            label: "kohya-xl".into(),
            scale: 1.0,
            text_scale: None,
            rank: None,
            blocks: None,
        }],
        None,
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(error.contains("kohya-xl.safetensors"), "{error}");
}

#[test]
fn block_weights_scale_a_lora_per_block_as_the_a1111_extension_does() {
    // The reference scales each module's update by the ratio of its block, found in A1111's
    // name for the module by sd-webui-lora-block-weight's own lookup.
    let reference = Reference::of("lora-block-weights");
    let weights = |key: &str| BlockWeights::parse(&reference.metadata[key]).unwrap();
    let lora = |path: &str, scale: f64, blocks: Option<BlockWeights>| LoraFile {
        path: fixtures().join(path),
        label: path.into(),
        scale,
        text_scale: None,
        rank: None,
        blocks,
    };
    // SD 1.5's layout with 26 weights (each of the tiny UNet's attention blocks its own).
    let sd15 = lora(
        "tiny-sd15/loras/kohya.safetensors",
        0.8,
        Some(weights("sd15_weights")),
    );
    let model =
        StableDiffusion::load_with(&fixtures().join("tiny-sd15"), &Device::Cpu, &[sd15], None)
            .unwrap();
    assert_lora_outputs(&model, &reference, "block-weighted LoRA", "sd15");
    assert_eq!(
        model.identity().loras[0].blocks.as_deref(),
        Some(&weights("sd15_weights").ratios()[..])
    );
    // Without the weights the outputs differ.
    let plain = lora("tiny-sd15/loras/kohya.safetensors", 0.8, None);
    let plain =
        StableDiffusion::load_with(&fixtures().join("tiny-sd15"), &Device::Cpu, &[plain], None)
            .unwrap();
    let cond = plain.encode_prompt(&reference.prompt).unwrap().context;
    assert!(max_diff(&cond, reference.get("sd15_cond")) > 1e-2);

    // SDXL with 12 weights, the kohya file in the original block names; the text encoders'
    // weight (BASE) applies to both.
    let xl = lora(
        "tiny-sdxl/loras/kohya-xl.safetensors",
        0.7,
        Some(weights("xl_weights")),
    );
    let model =
        StableDiffusion::load_with(&fixtures().join("tiny-sdxl"), &Device::Cpu, &[xl], None)
            .unwrap();
    let cond = model.encode_prompt(&reference.prompt).unwrap();
    let uncond = model.encode_negative(&reference.negative).unwrap();
    close(
        "block-weighted SDXL text",
        &cond.context,
        reference.get("xl_cond"),
        1e-4,
    );
    close(
        "block-weighted SDXL pooled",
        cond.pooled.as_ref().unwrap(),
        reference.get("xl_pooled"),
        1e-4,
    );
    let eps = sdxl_eps(&model, &uncond, &cond, reference.get("xl_unet_sample"));
    close(
        "block-weighted SDXL UNet",
        &eps,
        reference.get("xl_eps"),
        3e-4,
    );
}

fn checkpoint(name: &str) -> PathBuf {
    fixtures()
        .join("checkpoints")
        .join(format!("{name}.safetensors"))
}

/// The awkward prompts whose ids `tokens.json` (and the checkpoints' references) hold.
fn awkward_prompts() -> Vec<String> {
    let text = std::fs::read_to_string(fixtures().join("tokens.json")).unwrap();
    let tokens: serde_json::Value = serde_json::from_str(&text).unwrap();
    tokens["tiny-sd15"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| case[0].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn single_file_checkpoints_load_as_diffusers_converts_them() {
    let prompts = awkward_prompts();
    for (name, native, tokens) in [
        ("tiny-sd15", 512, &["tokens"][..]),
        ("tiny-sdxl", 1024, &["tokens", "tokens_2"][..]),
    ] {
        let path = checkpoint(name);
        let model = StableDiffusion::load(&path, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{name} loads: {e}"));
        let reference = Reference::of_checkpoint(name);
        assert_eq!(model.native_size(), native, "{name}: the family's size");
        assert_eq!(model.identity().name, format!("stable-diffusion/{name}"));
        assert_eq!(
            model.identity().weights_sha256,
            autonomy_pipeline::models::digest::file_sha256(&path).unwrap(),
            "{name}: the version is the file's sha256, as model sites list it"
        );
        // The built-in CLIP tokenizer, padded as each text encoder was trained.
        for (key, text_encoder) in tokens.iter().zip(0..) {
            let ids = reference.get(key).to_vec2::<i64>().unwrap();
            for (prompt, ids) in prompts.iter().zip(ids) {
                let ours = model.token_ids_of(text_encoder, prompt);
                let theirs: Vec<u32> = ids.into_iter().map(|id| id as u32).collect();
                assert_eq!(ours, theirs, "{name} {key}: {prompt:?}");
            }
        }
        let cond = model.encode_prompt(&reference.prompt).unwrap();
        let uncond = model.encode_negative(&reference.negative).unwrap();
        close(
            &format!("{name} prompt"),
            &cond.context,
            reference.get("cond"),
            1e-4,
        );
        close(
            &format!("{name} negative"),
            &uncond.context,
            reference.get("uncond"),
            1e-4,
        );
        let eps = if let Some(pooled) = &cond.pooled {
            close(
                &format!("{name} pooled"),
                pooled,
                reference.get("pooled"),
                1e-4,
            );
            sdxl_eps(&model, &uncond, &cond, reference.get("unet_sample"))
        } else {
            let context = Tensor::cat(&[&uncond.context, &cond.context], 0).unwrap();
            model
                .predict(reference.get("unet_sample"), 501.0, &context, None, None)
                .unwrap()
        };
        close(
            &format!("{name} UNet"),
            &eps,
            reference.get("unet_eps"),
            3e-4,
        );
        assert_decode_and_run(&model, &reference, name);
    }
}

/// `model` decodes the reference's latents and makes its whole 4-step run (guidance 5) as
/// diffusers does.
/// The whole run of `prompt` and `negative_prompt` (see [`assert_run`]) against the
/// reference's `{key}_run_image`.
fn assert_prompts_run(
    model: &StableDiffusion,
    prompt: &str,
    negative_prompt: &str,
    reference: &Reference,
    key: &str,
) {
    let request = GenerateRequest {
        prompt: prompt.into(),
        negative_prompt: negative_prompt.into(),
        ..GenerateRequest::default()
    };
    let what = format!("whole run, {key}");
    assert_run(model, request, reference, &format!("{key}_"), &what);
}

/// A whole 4-step run at guidance 5 of `request` (prompts and anything else set there) from
/// the reference's `{prefix}run_init` gives its `{prefix}run_image` within 4e-4.
fn assert_run(
    model: &StableDiffusion,
    request: GenerateRequest,
    reference: &Reference,
    prefix: &str,
    what: &str,
) {
    let request = GenerateRequest {
        steps: 4,
        guidance: 5.0,
        ..request
    };
    let image = model
        .sample(&request, reference.get(&format!("{prefix}run_init")))
        .unwrap();
    close(
        what,
        &image.permute((0, 2, 3, 1)).unwrap(),
        reference.get(&format!("{prefix}run_image")),
        4e-4,
    );
}

fn assert_decode_and_run(model: &StableDiffusion, reference: &Reference, what: &str) {
    let decoded = model.vae_decode(reference.get("vae_latents")).unwrap();
    close(
        &format!("{what}: VAE decode"),
        &decoded,
        reference.get("vae_decoded"),
        1e-4,
    );
    let request = reference.request();
    assert_run(model, request, reference, "", &format!("{what}: whole run"));
}

#[test]
fn an_lcm_distilled_single_file_embeds_the_guidance_and_samples_with_lcm() {
    // tiny-sd15 plus the one tensor an LCM-distilled checkpoint adds to its UNet.
    let reference = Reference::of_checkpoint("tiny-sd15-lcm");
    let mut tensors =
        candle_core::safetensors::load(checkpoint("tiny-sd15"), &Device::Cpu).unwrap();
    tensors.insert(
        "model.diffusion_model.time_embedding.cond_proj.weight".into(),
        reference.get("cond_proj").clone(),
    );
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("tiny-sd15-lcm.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let model = StableDiffusion::load(&path, &Device::Cpu).unwrap();
    assert_eq!(model.spec().unet.guidance_embed_dim, Some(16));
    assert_eq!(model.spec().scheduler.kind, Kind::Lcm);
    assert!(
        StableDiffusion::load(&checkpoint("tiny-sd15"), &Device::Cpu)
            .unwrap()
            .guidance_embedding(7.5, 1)
            .unwrap()
            .is_none(),
        "without the tensor the same file is guided by a second batch"
    );

    let cond = model.encode_prompt(&reference.prompt).unwrap().context;
    close("LCM checkpoint text", &cond, reference.get("cond"), 1e-4);
    let guidance = reference.scalar("unet_guidance");
    let embedding = model.guidance_embedding(guidance, 1).unwrap().unwrap();
    let sample = reference.get("unet_sample");
    let eps = model
        .predict(sample, 499.0, &cond, None, Some(&embedding))
        .unwrap();
    close("LCM checkpoint UNet", &eps, reference.get("unet_eps"), 3e-4);
    let unguided = model.predict(sample, 499.0, &cond, None, None).unwrap();
    assert!(max_diff(&unguided, reference.get("unet_eps")) > 1e-3);

    let schedule = model.spec().scheduler.schedule(1);
    let ours: Vec<i64> = schedule.timesteps.iter().map(|&t| t as i64).collect();
    assert_eq!(
        ours,
        reference.get("run_timesteps").to_vec1::<i64>().unwrap()
    );
    let request = GenerateRequest {
        prompt: reference.prompt.clone(),
        steps: 1,
        guidance,
        ..GenerateRequest::default()
    };
    let image = model.sample(&request, reference.get("run_init")).unwrap();
    close(
        "LCM checkpoint whole run",
        &image.permute((0, 2, 3, 1)).unwrap(),
        reference.get("run_image"),
        4e-4,
    );
}

#[test]
fn a_ckpt_pickle_loads_as_its_safetensors_twin() {
    let pickle = fixtures().join("checkpoints/tiny-sd15.ckpt");
    assert!(checkpoint::is_checkpoint(&pickle));
    let model = StableDiffusion::load(&pickle, &Device::Cpu).expect("the .ckpt loads");
    let twin = StableDiffusion::load(&checkpoint("tiny-sd15"), &Device::Cpu).unwrap();
    assert_eq!(
        model.identity().weights_sha256,
        autonomy_pipeline::models::digest::file_sha256(&pickle).unwrap(),
        "the version is the .ckpt's own sha256"
    );
    // (At the checkpoint's native 512 px the tiny model takes minutes: 64 px latents here.)
    let request = GenerateRequest {
        steps: 3,
        guidance: 5.0,
        ..request("mossy bricks")
    };
    let init = Reference::of_checkpoint("tiny-sd15")
        .get("run_init")
        .clone();
    let image = |model: &StableDiffusion| {
        model
            .sample(&request, &init)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(
        image(&model),
        image(&twin),
        "the same tensors, the same pixels"
    );
    // Its VAE, named for a checkpoint without one.
    let root = tempfile::tempdir().unwrap();
    let tensors = candle_core::safetensors::load(checkpoint("tiny-sd15"), &Device::Cpu).unwrap();
    let rest: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter(|(name, _)| !name.starts_with("first_stage_model."))
        .collect();
    let no_vae = root.path().join("no-vae.safetensors");
    candle_core::safetensors::save(&rest, &no_vae).unwrap();
    let vae = VaeFile {
        path: pickle.clone(),
        label: "tiny-sd15.ckpt".into(),
    };
    let with_vae = StableDiffusion::load_with(&no_vae, &Device::Cpu, &[], Some(&vae)).unwrap();
    assert_eq!(image(&with_vae), image(&twin));
    // The same VAE as an A1111 VAE file that PyTorch before 1.6 saved (a pickle stream, not
    // a zip archive).
    let legacy = VaeFile {
        path: fixtures().join("checkpoints/tiny-sd15-vae.legacy.pt"),
        label: "tiny-sd15-vae.legacy.pt".into(),
    };
    let with_legacy =
        StableDiffusion::load_with(&no_vae, &Device::Cpu, &[], Some(&legacy)).unwrap();
    assert_eq!(image(&with_legacy), image(&twin));
    // A `.ckpt` that is no PyTorch pickle at all is refused, saying so.
    let other = root.path().join("other.ckpt");
    std::fs::write(&other, b"\x80\x02}q\x00.").unwrap();
    let message = StableDiffusion::load(&other, &Device::Cpu)
        .err()
        .expect("not a pickle torch wrote")
        .to_string();
    assert!(
        message.contains("other.ckpt") && message.contains("not a PyTorch pickle"),
        "{message}"
    );
}

#[test]
fn a_taesd_folder_stands_in_for_the_vae_as_diffusers_runs_it() {
    let folder = fixtures().join("tiny-taesd");
    assert!(
        vae_file::is_vae(&folder),
        "the editor lists TAESD among the VAEs"
    );
    let taesd = VaeFile {
        path: folder.clone(),
        label: "tiny-taesd".into(),
    };
    let model = StableDiffusion::load_with(
        &fixtures().join("tiny-sd15"),
        &Device::Cpu,
        &[],
        Some(&taesd),
    )
    .unwrap();
    assert!(matches!(model.spec().vae.kind, VaeKind::Tiny(_)));
    assert_eq!(
        model.spec().vae.scaling_factor,
        1.0,
        "TAESD's latents are not scaled"
    );
    assert_eq!(
        model.identity().vae.as_ref().map(|vae| vae.file.as_str()),
        Some("tiny-taesd")
    );
    let reference = Reference::of("tiny-taesd");
    close(
        "TAESD encode",
        &model.vae_encode_mean(reference.get("vae_image")).unwrap(),
        reference.get("vae_encoded"),
        1e-4,
    );
    // A decode, and tiny-sd15's whole run decoded by TAESD.
    assert_decode_and_run(&model, &reference, "TAESD");
    // A config naming another autoencoder is refused, naming the file and the class.
    let root = tempfile::tempdir().unwrap();
    let copy = root.path().join("vq");
    copy_dir(&folder, &copy);
    let config = copy.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("AutoencoderTiny", "VQModel")).unwrap();
    let vq = VaeFile {
        path: copy,
        label: "vq".into(),
    };
    let message =
        StableDiffusion::load_with(&fixtures().join("tiny-sd15"), &Device::Cpu, &[], Some(&vq))
            .err()
            .expect("a VQ model is no VAE Autonomy runs")
            .to_string();
    assert!(
        message.contains("config.json") && message.contains("VQModel"),
        "{message}"
    );
}

#[test]
fn files_that_are_not_whole_checkpoints_are_refused_with_what_they_lack() {
    let root = tempfile::tempdir().unwrap();
    let tensors = candle_core::safetensors::load(checkpoint("tiny-sd15"), &Device::Cpu).unwrap();
    let without = |prefix: &str| -> PathBuf {
        let kept: HashMap<String, Tensor> = tensors
            .iter()
            .filter(|(k, _)| !k.starts_with(prefix))
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        let path = root.path().join(format!("without-{prefix}safetensors"));
        candle_core::safetensors::save(&kept, &path).unwrap();
        path
    };
    for (path, words) in [
        (without("first_stage_model."), "holds no VAE"),
        (without("cond_stage_model."), "no text encoder tensors"),
        (
            fixtures().join("tiny-sd15/loras/kohya.safetensors"),
            "not a Stable Diffusion checkpoint",
        ),
        (
            without("model.diffusion_model.output_blocks.0."),
            "up_blocks.0.resnets.0",
        ),
    ] {
        let message = match StableDiffusion::load(&path, &Device::Cpu) {
            Ok(_) => panic!("{} loaded", path.display()),
            Err(e) => e.to_string(),
        };
        assert!(
            message.contains(&path.display().to_string()) && message.contains(words),
            "the error must name the file and say `{words}`: {message}"
        );
    }
}

#[test]
fn a_vae_file_stands_in_for_the_pipelines_own() {
    let root = tempfile::tempdir().unwrap();
    let tensors = candle_core::safetensors::load(checkpoint("tiny-sd15"), &Device::Cpu).unwrap();
    let (vae, rest): (HashMap<String, Tensor>, HashMap<String, Tensor>) = tensors
        .into_iter()
        .partition(|(name, _)| name.starts_with("first_stage_model."));
    let no_vae = root.path().join("no-vae.safetensors");
    candle_core::safetensors::save(&rest, &no_vae).unwrap();
    // A1111's VAE files: the original names without the checkpoint's prefix.
    let vae: HashMap<String, Tensor> = vae
        .into_iter()
        .map(|(name, t)| (name["first_stage_model.".len()..].to_string(), t))
        .collect();
    let vae_path = root.path().join("vae-ft.safetensors");
    candle_core::safetensors::save(&vae, &vae_path).unwrap();
    let file = |path: &Path, label: &str| VaeFile {
        path: path.to_path_buf(),
        label: label.into(),
    };
    let load = |model: &Path, vae: &VaeFile| {
        StableDiffusion::load_with(model, &Device::Cpu, &[], Some(vae))
            .unwrap_or_else(|e| panic!("{} with {}: {e}", model.display(), vae.label))
    };
    let load_plain = |model: &Path| StableDiffusion::load(model, &Device::Cpu).unwrap();

    let message = StableDiffusion::load(&no_vae, &Device::Cpu)
        .err()
        .expect("no VAE, none named")
        .to_string();
    assert!(
        message.contains("holds no VAE") && message.contains("`vae`"),
        "{message}"
    );
    // Its spec reads all the same, the family's released VAE architecture standing in for
    // the missing one, so the editor can tell which LoRAs fit it before a VAE is named.
    let spec = |path: &Path| PipelineSpec::read(&Checkpoint::open(path).unwrap()).unwrap();
    let (without, whole) = (spec(&no_vae), spec(&checkpoint("tiny-sd15")));
    assert_eq!(
        format!("{:?}", (&without.unet, &without.text, &without.scheduler)),
        format!("{:?}", (&whole.unet, &whole.text, &whole.scheduler))
    );
    let VaeKind::Kl(config) = &without.vae.kind else {
        panic!("the family's VAE is an AutoencoderKL");
    };
    assert_eq!(
        (
            config.block_out_channels.clone(),
            without.vae.scaling_factor
        ),
        (vec![128, 256, 512, 512], 0.18215)
    );
    let lora = LoraSummary::read(&fixtures().join("checkpoints/loras/tiny-sd15-kohya.safetensors"))
        .unwrap();
    assert!(lora.fits(&without) && lora.fits(&whole));
    // The checkpoint without its VAE, given it back as a file: diffusers' pictures.
    let model = load(&no_vae, &file(&vae_path, "vaes/vae-ft.safetensors"));
    let reference = Reference::of_checkpoint("tiny-sd15");
    assert_decode_and_run(&model, &reference, "VAE file");
    assert_eq!(
        model.identity().vae,
        Some(VaeUse {
            file: "vaes/vae-ft.safetensors".into(),
            sha256: autonomy_pipeline::models::digest::file_sha256(&vae_path).unwrap(),
        })
    );
    assert_eq!(
        model.identity().weights_sha256,
        autonomy_pipeline::models::digest::file_sha256(&no_vae).unwrap(),
        "the model version stays the checkpoint's"
    );
    // A whole checkpoint's VAE, on a diffusers folder whose own VAE decodes otherwise.
    let inpaint = fixtures().join("tiny-sd-inpaint");
    let own = load_plain(&inpaint)
        .vae_decode(reference.get("vae_latents"))
        .unwrap();
    assert!(max_diff(&own, reference.get("vae_decoded")) > 1e-2);
    let model = load(
        &inpaint,
        &file(&checkpoint("tiny-sd15"), "tiny-sd15.safetensors"),
    );
    let decoded = model.vae_decode(reference.get("vae_latents")).unwrap();
    close(
        "a checkpoint's VAE decode",
        &decoded,
        reference.get("vae_decoded"),
        1e-4,
    );
    // A diffusers VAE folder (or a pipeline folder's `vae/`): it decodes as in diffusers.
    let theirs = Reference::of("tiny-sd-inpaint");
    let own = load_plain(&fixtures().join("tiny-sd15"))
        .vae_decode(theirs.get("vae_latents"))
        .unwrap();
    assert!(max_diff(&own, theirs.get("vae_decoded")) > 1e-2);
    for path in [inpaint.clone(), inpaint.join("vae")] {
        let model = load(&fixtures().join("tiny-sd15"), &file(&path, "inpaint-vae"));
        let decoded = model.vae_decode(theirs.get("vae_latents")).unwrap();
        close(
            "a VAE folder's decode",
            &decoded,
            theirs.get("vae_decoded"),
            1e-4,
        );
    }
    // What is not a VAE is refused, naming the file and why.
    for (path, words) in [
        (
            fixtures().join("tiny-sd15/loras/kohya.safetensors"),
            "not a VAE",
        ),
        (
            fixtures().join("tiny-sd15/vae/diffusion_pytorch_model.safetensors"),
            "name the folder",
        ),
        (root.path().join("missing.safetensors"), "missing"),
    ] {
        let message =
            StableDiffusion::load_with(&no_vae, &Device::Cpu, &[], Some(&file(&path, "x")))
                .err()
                .unwrap_or_else(|| panic!("{} loaded as a VAE", path.display()))
                .to_string();
        assert!(
            message.contains(&path.display().to_string()) && message.contains(words),
            "the error must name the file and say `{words}`: {message}"
        );
    }
}

#[test]
fn a_kohya_lora_merges_into_a_single_file_checkpoint() {
    let lora = LoraFile {
        path: fixtures().join("checkpoints/loras/tiny-sd15-kohya.safetensors"),
        label: "loras/tiny-sd15-kohya.safetensors".into(),
        scale: 0.8,
        text_scale: None,
        rank: None,
        blocks: None,
    };
    let model = StableDiffusion::load_with(&checkpoint("tiny-sd15"), &Device::Cpu, &[lora], None)
        .expect("the LoRA fits the checkpoint's diffusers names");
    let reference = Reference::of_checkpoint("tiny-sd15");
    assert_eq!(model.identity().loras.len(), 1);
    assert_lora_outputs(&model, &reference, "LoRA on a checkpoint", "lora");
}

/// `model`'s prompt states and guided UNet pair at t = 501 (its LoRAs merged) against the
/// reference's `{keys}_cond` and `{keys}_eps`, within 1e-4.
fn assert_lora_outputs(model: &StableDiffusion, reference: &Reference, what: &str, keys: &str) {
    let cond = model.encode_prompt(&reference.prompt).unwrap().context;
    let uncond = model.encode_prompt(&reference.negative).unwrap().context;
    let expected = |part: &str| reference.get(&format!("{keys}_{part}"));
    close(&format!("{what} text"), &cond, expected("cond"), 1e-4);
    let context = Tensor::cat(&[&uncond, &cond], 0).unwrap();
    let eps = model
        .predict(reference.get("unet_sample"), 501.0, &context, None, None)
        .unwrap();
    close(&format!("{what} UNet"), &eps, expected("eps"), 1e-4);
}

#[test]
fn v_pred_and_ztsnr_markers_set_a_checkpoints_prediction_and_noise_schedule() {
    let plain = StableDiffusion::load(&checkpoint("tiny-sd15"), &Device::Cpu).unwrap();
    let scheduler = &plain.spec().scheduler;
    assert_eq!(scheduler.prediction, Prediction::Epsilon);
    assert!(!scheduler.zero_snr);
    let root = tempfile::tempdir().unwrap();
    let marked = |markers: &[&str]| {
        let mut tensors =
            candle_core::safetensors::load(checkpoint("tiny-sd15"), &Device::Cpu).unwrap();
        for marker in markers {
            let empty = Tensor::zeros(0, candle_core::DType::F32, &Device::Cpu).unwrap();
            tensors.insert(marker.to_string(), empty);
        }
        let path = root
            .path()
            .join(format!("{}.safetensors", markers.join("-")));
        candle_core::safetensors::save(&tensors, &path).unwrap();
        StableDiffusion::load(&path, &Device::Cpu).unwrap()
    };
    let v = marked(&["v_pred"]);
    assert_eq!(v.spec().scheduler.prediction, Prediction::V);
    assert!(!v.spec().scheduler.zero_snr);
    // Zero terminal SNR: the schedule starts from pure noise, at the last timestep.
    let zsnr = marked(&["v_pred", "ztsnr"]);
    let scheduler = &zsnr.spec().scheduler;
    assert_eq!(scheduler.prediction, Prediction::V);
    assert!(scheduler.zero_snr);
    assert_eq!(scheduler.kind, Kind::Ddim);
    assert_eq!(scheduler.spacing, Spacing::Trailing);
    assert_eq!(scheduler.alphas_cumprod.last(), Some(&0.0));
    assert_eq!(scheduler.schedule(4).timesteps[0], 999.0);
}

/// The embedding fixture `name` (in `embeddings/`), labelled as a recipe would name it.
fn embedding(name: &str) -> EmbeddingFile {
    EmbeddingFile {
        path: fixtures().join("embeddings").join(name),
        label: format!("embeddings/{name}"),
    }
}

#[test]
fn textual_inversion_embeddings_stand_for_their_words_as_diffusers_loads_them() {
    let reference = Reference::of("embeddings");
    let mut model = load("tiny-sd15");
    let plain = model.token_ids(&reference.prompt);
    // A1111's `.pt` (three vectors), A1111's `.safetensors` (two) and diffusers' one-vector
    // `learned_embeds`, each called up by its file stem.
    let files = [
        embedding("pixel-style.pt"),
        embedding("bad-hands.safetensors"),
        embedding("gem-glow.safetensors"),
    ];
    model.add_embeddings(&files).unwrap();
    let ids = model.token_ids(&reference.prompt);
    assert_eq!(ids, reference.ids("sd15_prompt_ids"));
    assert_ne!(ids, plain, "the words are no longer spelled out");
    assert_eq!(
        model.token_ids(&reference.negative),
        reference.ids("sd15_negative_ids")
    );
    // Whole words, in any case.
    assert_eq!(model.token_ids(&reference.prompt.to_uppercase()), ids);
    assert!(
        !model.token_ids("pixel-styles").iter().any(|&id| id >= 814),
        "a word inside a longer one is not the embedding's"
    );
    let cond = model.encode_prompt(&reference.prompt).unwrap();
    let uncond = model.encode_negative(&reference.negative).unwrap();
    close(
        "prompt with embeddings",
        &cond.context,
        reference.get("sd15_prompt_states"),
        1e-4,
    );
    close(
        "negative prompt with an embedding",
        &uncond.context,
        reference.get("sd15_negative_states"),
        1e-4,
    );
    let request = reference.request();
    assert_run(
        &model,
        request,
        &reference,
        "sd15_",
        "whole run with embeddings",
    );
    let recorded: Vec<&str> = model
        .identity()
        .embeddings
        .iter()
        .map(|e| e.file.as_str())
        .collect();
    assert_eq!(
        recorded,
        [
            "embeddings/pixel-style.pt",
            "embeddings/bad-hands.safetensors",
            "embeddings/gem-glow.safetensors"
        ]
    );
    assert!(
        model
            .identity()
            .embeddings
            .iter()
            .all(|e| e.sha256.len() == 64)
    );

    // SDXL's: `clip_l` to the first encoder, `clip_g` to the second, whose pooled state is
    // the highest id's, as transformers pools it.
    let mut xl = load("tiny-sdxl");
    xl.add_embeddings(&[embedding("xl-pixel.safetensors")])
        .unwrap();
    let prompt = "xl-pixel knight";
    assert_eq!(xl.token_ids_of(0, prompt), reference.ids("sdxl_ids"));
    assert_eq!(xl.token_ids_of(1, prompt), reference.ids("sdxl_ids_2"));
    let cond = xl.encode_prompt(prompt).unwrap();
    close(
        "SDXL with an embedding",
        &cond.context,
        reference.get("sdxl_states"),
        1e-4,
    );
    close(
        "SDXL pooled with an embedding",
        &cond.pooled.unwrap(),
        reference.get("sdxl_pooled"),
        1e-4,
    );
}

#[test]
fn embeddings_for_another_model_or_not_embeddings_at_all_are_refused_leaving_the_model_as_it_was() {
    let mut model = load("tiny-sd15");
    let before = model.token_ids("pixel-style");
    let refused = |model: &mut StableDiffusion, files: &[EmbeddingFile], words: &str| {
        let message = model.add_embeddings(files).expect_err(words).to_string();
        assert!(message.contains(words), "{message}");
    };
    refused(
        &mut model,
        &[
            embedding("pixel-style.pt"),
            embedding("xl-pixel.safetensors"),
        ],
        "xl-pixel.safetensors` is invalid: it is an SDXL embedding",
    );
    assert_eq!(
        model.token_ids("pixel-style"),
        before,
        "nothing is added when one file is refused"
    );
    assert!(model.identity().embeddings.is_empty());
    refused(
        &mut model,
        &[EmbeddingFile {
            path: fixtures().join("tiny-sd15/loras/kohya.safetensors"),
            label: "kohya.safetensors".into(),
        }],
        "not a textual-inversion embedding",
    );
    let twin = EmbeddingFile {
        path: fixtures().join("embeddings/bad-hands.safetensors"),
        label: "other/Bad-Hands.safetensors".into(),
    };
    refused(
        &mut model,
        &[embedding("bad-hands.safetensors"), twin],
        "both add the word `bad-hands`",
    );
    let mut xl = load("tiny-sdxl");
    refused(
        &mut xl,
        &[embedding("bad-hands.safetensors")],
        "an SDXL model needs one with `clip_l` and `clip_g`",
    );
}

#[test]
fn clip_skip_conditions_on_an_earlier_text_encoder_layer_as_diffusers_does() {
    let reference = Reference::of("clip-skip");
    let model = load("tiny-sd15");
    // A1111's "Clip skip 2" is diffusers' `clip_skip = 1`: the layer before the last.
    let cond = model.encode_prompt_skipping(&reference.prompt, 2).unwrap();
    close(
        "clip skip 2",
        &cond.context,
        reference.get("sd15_cond"),
        1e-4,
    );
    let last = model.encode_prompt(&reference.prompt).unwrap();
    assert!(
        max_diff(&last.context, reference.get("sd15_cond")) > 1e-2,
        "the last layer is not the one before it"
    );
    let uncond = model
        .encode_negative_skipping(&reference.negative, 2)
        .unwrap();
    close(
        "clip skip 2, negative prompt",
        &uncond.context,
        reference.get("sd15_uncond"),
        1e-4,
    );
    let request = GenerateRequest {
        clip_skip: 2,
        ..reference.request()
    };
    assert_run(
        &model,
        request,
        &reference,
        "sd15_",
        "whole run at clip skip 2",
    );
    for skip in [0, 3] {
        let message = model
            .encode_prompt_skipping("a", skip)
            .expect_err("outside the encoder's layers")
            .to_string();
        assert!(message.contains("1 to 2"), "{message}");
    }

    // SDXL: both encoders one layer further back; the pooled prompt stays the whole encoder's.
    let xl = load("tiny-sdxl");
    for key in ["cond", "uncond"] {
        let text = if key == "cond" {
            &reference.prompt
        } else {
            &reference.negative
        };
        let encoded = xl.encode_prompt_skipping(text, 2).unwrap();
        close(
            &format!("SDXL clip skip 2 ({key})"),
            &encoded.context,
            reference.get(&format!("sdxl_{key}")),
            1e-4,
        );
        close(
            &format!("SDXL pooled at clip skip 2 ({key})"),
            &encoded.pooled.unwrap(),
            reference.get(&format!("sdxl_{key}_pooled")),
            1e-4,
        );
    }
}

/// The parser and a one-chunk weighted prompt against diffusers' long-prompt-weighting
/// pipeline; a long prompt with a weighted word in its second chunk against A1111's own
/// chunking (its first chunk ends at a comma, the words after it move on) and emphasis.
#[test]
fn a1111_prompt_syntax_weighs_and_chunks_as_a1111_and_diffusers_long_prompt_pipeline_do() {
    use autonomy_pipeline::models::sd::prompt_syntax::{Piece, parse};
    let reference = Reference::of("prompt-syntax");
    // The parser against the pipeline's `parse_prompt_attention`.
    let cases: Vec<(String, Vec<(String, f64)>)> =
        serde_json::from_str(&reference.metadata["parses"]).unwrap();
    for (text, expected) in cases {
        let ours: Vec<(String, f64)> = parse(&text)
            .into_iter()
            .map(|piece| match piece {
                Piece::Text(text, weight) => (text, weight),
                Piece::Break => panic!("no BREAK in {text:?}"),
            })
            .collect();
        assert_eq!(ours.len(), expected.len(), "{text:?}: {ours:?}");
        for ((a, x), (b, y)) in ours.iter().zip(&expected) {
            assert!(
                a == b && (x - y).abs() < 1e-12,
                "{text:?}: {ours:?} vs {expected:?}"
            );
        }
    }
    let model = load("tiny-sd15");
    let long = &reference.metadata["long_prompt"];
    let long_negative = &reference.metadata["long_negative_prompt"];
    for (key, prompt, negative) in [
        ("weighted", &reference.prompt, &reference.negative),
        ("long", long, long_negative),
    ] {
        close(
            &format!("{key} prompt"),
            &model.encode_prompt(prompt).unwrap().context,
            reference.get(&format!("{key}_cond")),
            1e-4,
        );
        if key == "weighted" {
            close(
                "weighted negative prompt",
                &model.encode_negative(negative).unwrap().context,
                reference.get("weighted_uncond"),
                1e-4,
            );
        }
        // The long prompt's one-chunk negative prompt is attended to alone.
        assert_prompts_run(&model, prompt, negative, &reference, key);
    }
    // Without the syntax the weighted prompt is plain text: weights change the states.
    let plain = model
        .encode_prompt("a red potion bottle, pixel art, glowing gem")
        .unwrap();
    assert!(max_diff(&plain.context, reference.get("weighted_cond")) > 1e-3);
    // The long prompt's second chunk is what truncation at 75 tokens used to drop.
    assert_eq!(
        model.encode_prompt(long).unwrap().context.dims(),
        [1, 154, 32]
    );
    let message = model
        .encode_prompt(&"gem ".repeat(700))
        .expect_err("too long")
        .to_string();
    assert!(message.contains("at most 8"), "{message}");
    // SDXL: both encoders chunk alike; the empty negative prompt's zeros fill two chunks.
    let xl = load("tiny-sdxl");
    let encoded = xl.encode_prompt(long).unwrap();
    assert_eq!(encoded.context.dims(), [1, 154, 64]);
    let pooled = |text: &str| xl.encode_prompt(text).unwrap().pooled.unwrap();
    assert_eq!(
        max_diff(
            &pooled("a red potion BREAK golden crown"),
            &pooled("a red potion")
        ),
        0.0,
        "the pooled prompt is the first chunk's"
    );
    let request = GenerateRequest {
        prompt: long.clone(),
        steps: 2,
        guidance: 5.0,
        ..GenerateRequest::default()
    };
    let noise = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &Device::Cpu).unwrap();
    assert_eq!(xl.sample(&request, &noise).unwrap().dims(), [1, 3, 64, 64]);
}

/// Prompts whose states differ in length, guided as A1111 guides them by default: a shorter
/// `AND` part repeats its last state up to the longest part, and a negative prompt of another
/// length is attended to alone (A1111 runs it in a batch of its own; ComfyUI repeats it, as
/// Autonomy does) — not padded with empty chunks, which would change what it attends to.
#[test]
fn prompts_of_different_lengths_are_guided_as_a1111_guides_them() {
    let reference = Reference::of("a1111-lengths");
    let model = load("tiny-sd15");
    let (long, negative) = (&reference.prompt, &reference.negative);
    let text = |key: &str| reference.metadata[key].clone();
    for (key, prompt, negative_prompt) in [
        ("long_prompt", long.clone(), negative.clone()),
        ("long_negative", text("short"), long.clone()),
        ("composed", text("composed"), negative.clone()),
    ] {
        let length = |encoded: Prompt| encoded.context.dim(1).unwrap();
        assert_ne!(
            length(model.encode_prompt(&prompt).unwrap()),
            length(model.encode_negative(&negative_prompt).unwrap()),
            "{key}: the lengths differ"
        );
        assert_prompts_run(&model, &prompt, &negative_prompt, &reference, key);
    }
}

/// A textual-inversion word whose vectors do not fit in what is left of a chunk starts the
/// next chunk whole, as A1111 chunks it.
#[test]
fn a_textual_inversion_that_does_not_fit_a_chunk_starts_the_next_as_in_a1111() {
    let reference = Reference::of("a1111-lengths");
    let mut model = load("tiny-sd15");
    model
        .add_embeddings(&[embedding("pixel-style.pt")])
        .unwrap();
    let prompt = &reference.metadata["embedding_prompt"];
    close(
        "states of a prompt whose embedding starts the second chunk",
        &model.encode_prompt(prompt).unwrap().context,
        reference.get("embedding_states"),
        1e-4,
    );
}

#[test]
fn a1111_prompt_editing_alternation_and_and_condition_each_step_as_a1111_does() {
    use autonomy_pipeline::models::sd::prompt_schedule::{compose, schedule};
    let reference = Reference::of("a1111-prompts");
    // The schedules of hand-picked and random prompts against A1111's own parser.
    type Case = (String, usize, Vec<(usize, String)>);
    let cases: Vec<Case> = serde_json::from_str(&reference.metadata["schedules"]).unwrap();
    assert!(cases.len() > 400);
    for (text, steps, expected) in cases {
        let ours: Vec<(usize, String)> = schedule(&text, steps)
            .into_iter()
            .map(|s| (s.until, s.text))
            .collect();
        assert_eq!(ours, expected, "{text:?} over {steps} steps");
    }
    // A whole run whose prompt and negative prompt change at the steps A1111 changes them.
    let model = load("tiny-sd15");
    let request = reference.request();
    assert_run(
        &model,
        request,
        &reference,
        "",
        "whole run with prompt editing",
    );
    // How prompts split at `AND` into weighted parts, against A1111's `get_multicond_prompt_list`.
    let splits: Vec<(String, Vec<(String, f64)>)> =
        serde_json::from_str(&reference.metadata["splits"]).unwrap();
    for (text, expected) in splits {
        let ours: Vec<(String, f64)> = compose(&text)
            .into_iter()
            .map(|part| (part.text, part.weight))
            .collect();
        assert_eq!(ours, expected, "{text:?}");
    }
    // A composition (one part edited, one weighted negatively) guided as A1111 guides it.
    let composed = GenerateRequest {
        prompt: reference.metadata["composed_prompt"].clone(),
        negative_prompt: reference.metadata["composed_negative_prompt"].clone(),
        ..GenerateRequest::default()
    };
    assert_run(
        &model,
        composed.clone(),
        &reference,
        "composed_",
        "whole run with a composed prompt",
    );
    // SDXL composes its pooled prompts and time ids row by row with the contexts; short parts
    // repeat their last state up to a long one.
    let xl = load("tiny-sdxl");
    let request = GenerateRequest {
        prompt: format!("{} AND [gem|crown]:0.5", "potion ".repeat(80)),
        steps: 2,
        guidance: 5.0,
        ..GenerateRequest::default()
    };
    let noise = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &Device::Cpu).unwrap();
    assert_eq!(xl.sample(&request, &noise).unwrap().dims(), [1, 3, 64, 64]);
    // An LCM-distilled UNet has no negative prediction to compose against.
    let lcm = load("tiny-lcm");
    let message = lcm
        .generate(&GenerateRequest {
            steps: 2,
            ..composed
        })
        .expect_err("AND on an LCM UNet")
        .to_string();
    assert!(message.contains("classifier-free guidance"), "{message}");
}

/// The hires references' second pass: to 128 pixels with their strength and steps, the latents
/// scaled up.
fn latent_hires(reference: &Reference) -> Hires {
    Hires {
        size: 128,
        strength: reference.metadata["strength"].parse().unwrap(),
        steps: reference.metadata["steps"].parse().unwrap(),
        upscaler: HiresUpscaler::Latent,
    }
}

/// `latents` of a hires pass decoded by `decoder`: a 128-pixel image within 4e-4 of the
/// reference's `key`; the image.
fn assert_hires_image(
    what: &str,
    decoder: &StableDiffusion,
    latents: &Tensor,
    reference: &Reference,
    key: &str,
) -> Tensor {
    let image = decoder.decode(latents, false).unwrap();
    assert_eq!(image.dims(), [1, 3, 128, 128]);
    close(
        what,
        &image.permute((0, 2, 3, 1)).unwrap(),
        reference.get(key),
        4e-4,
    );
    image
}

/// The hires references' first pass: their request (4 steps, guidance 5) and its latents from
/// their starting noise, checked against diffusers'.
fn native_pass(model: &StableDiffusion, reference: &Reference) -> (GenerateRequest, Tensor) {
    let request = GenerateRequest {
        steps: 4,
        guidance: 5.0,
        ..reference.request()
    };
    let low = model.denoise(&request, reference.get("init")).unwrap();
    close(
        "the native-size pass",
        &low,
        reference.get("low_latents"),
        1e-4,
    );
    (request, low)
}

#[test]
fn a_hires_pass_scales_the_latents_up_and_redraws_them_as_a1111_and_diffusers_do() {
    let reference = Reference::of("hires");
    let model = load("tiny-sd15");
    let hires = latent_hires(&reference);
    let (request, low) = native_pass(&model, &reference);
    let request = GenerateRequest {
        hires: Some(hires.clone()),
        ..request
    };
    let latents = model
        .hires_denoise(&request, &hires, &low, reference.get("fresh"))
        .unwrap();
    assert_hires_image("the hires pass", &model, &latents, &reference, "image");
    // SDXL: the second pass is conditioned on the hires size.
    let xl = load("tiny-sdxl");
    let low = xl.denoise(&request, reference.get("init")).unwrap();
    // (Latents up to ~44 here: 1e-5 of them.)
    close(
        "SDXL's native-size pass",
        &low,
        reference.get("xl_low_latents"),
        5e-4,
    );
    let latents = xl
        .hires_denoise(&request, &hires, &low, reference.get("fresh"))
        .unwrap();
    // Tight: the tiny model's size conditioning moves the image by ~5e-5 (it matches to 3e-6).
    close(
        "SDXL's hires pass",
        &xl.decode(&latents, false)
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap(),
        reference.get("xl_image"),
        2e-5,
    );
    // The whole request makes a 128-pixel image that keeps the first pass's layout: close to
    // the native image scaled up, and not the native image's pixels doubled.
    let made = model.generate(&request).unwrap().remove(0);
    assert_eq!(made.dimensions(), (128, 128));
    let native = model
        .generate(&GenerateRequest {
            hires: None,
            ..request.clone()
        })
        .unwrap()
        .remove(0);
    let doubled = image::imageops::resize(&native, 128, 128, image::imageops::FilterType::Nearest);
    let blocky = |image: &RgbaImage| {
        image
            .enumerate_pixels()
            .filter(|(x, y, p)| x % 2 == 1 && *p != image.get_pixel(x - 1, *y))
            .count()
    };
    assert!(
        blocky(&made) > 128 * 64 / 2,
        "the hires image has its own pixels"
    );
    assert_eq!(blocky(&doubled), 0);
    let smooth = image::imageops::resize(&native, 128, 128, image::imageops::FilterType::Triangle);
    let unrelated = model
        .generate(&GenerateRequest {
            seed: 99,
            ..request.clone()
        })
        .unwrap()
        .remove(0);
    assert!(
        mean_difference(&made, &smooth) < mean_difference(&unrelated, &smooth),
        "the hires image keeps the native image's layout"
    );
    // What it cannot do, refused with the reason.
    let refused = |hires: Hires, extra: GenerateRequest| {
        let request = GenerateRequest {
            hires: Some(hires),
            ..extra
        };
        model.generate(&request).expect_err("refused").to_string()
    };
    let message = refused(
        Hires {
            size: 96,
            ..hires.clone()
        },
        request.clone(),
    );
    assert!(message.contains("multiple of 64 above"), "{message}");
    let message = refused(
        Hires {
            size: 320,
            ..hires.clone()
        },
        request.clone(),
    );
    assert!(message.contains("at most 256"), "{message}");
    let masked = GenerateRequest {
        init: Some(InitImage {
            image: native.clone(),
            strength: 0.5,
            mask: Some(GrayImage::from_pixel(64, 64, Luma([255]))),
        }),
        ..request.clone()
    };
    let message = refused(hires.clone(), masked);
    assert!(message.contains("mask"), "{message}");
}

fn upscaler_file(name: &str) -> UpscalerFile {
    UpscalerFile {
        path: fixtures().join("upscalers").join(name),
        label: format!("upscalers/{name}"),
    }
}

/// An `(h, w, 3)` u8 reference image as `(1, 3, h, w)` in [0, 1].
fn unit_pixels(image: &Tensor) -> Tensor {
    (image.to_dtype(candle_core::DType::F32).unwrap() / 255.0)
        .unwrap()
        .permute((2, 0, 1))
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

/// `(1, 3, h, w)` in [0, 1] as the `(h, w, 3)` bytes an 8-bit image holds, rounded.
fn bytes(pixels: &Tensor) -> Tensor {
    (pixels.clamp(0f32, 1f32).unwrap() * 255.0)
        .unwrap()
        .round()
        .unwrap()
        .get(0)
        .unwrap()
        .permute((1, 2, 0))
        .unwrap()
}

/// The upscaler `file` is listed as one, reads as `what` at `scale`, and upscales the 21×13
/// test image of `reference` as spandrel did within 1e-5.
fn upscales_as_spandrel(reference: &Reference, file: &str, scale: usize, what: &str) {
    let pixels = unit_pixels(reference.get("image"));
    let path = upscaler_file(file).path;
    assert!(
        autonomy_pipeline::models::sd::upscaler::is_upscaler(&path),
        "{file}"
    );
    let upscaler = Upscaler::open(&path, &Device::Cpu).unwrap();
    assert_eq!(
        (upscaler.scale(), upscaler.description()),
        (scale, what),
        "{file}"
    );
    let out = upscaler.forward(&pixels).unwrap();
    assert_eq!(out.dims(), [1, 3, 13 * scale, 21 * scale], "{file}");
    close(file, &out.get(0).unwrap(), reference.get(file), 1e-5);
}

#[test]
fn swinir_and_hat_files_upscale_as_spandrel_runs_them() {
    let reference = Reference::of("swin-upscalers");
    // 21×13: no multiple of the 4-pixel windows, nor the size the networks were made for.
    for (file, scale, what) in [
        (
            "swinir-x4-real.pth",
            4,
            "SwinIR (real-world SR, 2 groups, 4×)",
        ),
        (
            "swinir-x2-classical.safetensors",
            2,
            "SwinIR (classical SR, 1 groups, 2×)",
        ),
        (
            "swinir-x3-light.pth",
            3,
            "SwinIR (lightweight SR, 1 groups, 3×)",
        ),
        ("hat-x2.pth", 2, "HAT (2 groups, 2×)"),
        ("hat-x4-bare.safetensors", 4, "HAT (1 groups, 4×)"),
    ] {
        upscales_as_spandrel(&reference, file, scale, what);
    }
}

#[test]
fn dat_files_upscale_as_spandrel_runs_them() {
    let reference = Reference::of("dat-upscalers");
    // 21×13: DAT pads to whole windows with zeros after its `qkv` projection, and its
    // shifted windows' masks are made for the padded size, not the one it was built for.
    for (file, scale, what) in [
        ("dat-x2.pth", 2, "DAT (2 groups, 2×4 windows, 2×)"),
        (
            "dat-x3-light.safetensors",
            3,
            "DAT (1 groups, 4×8 windows, 3×)",
        ),
    ] {
        upscales_as_spandrel(&reference, file, scale, what);
    }
}

#[test]
fn omnisr_files_upscale_as_spandrel_runs_them() {
    let reference = Reference::of("omnisr-upscalers");
    // 21×13: padded with zeros to whole windows, and its grids of pixels a window's count
    // apart span the padded image.
    for (file, scale, what) in [
        (
            "omnisr-x4.pth",
            4,
            "OmniSR (1 groups of 1 blocks, 4×4 windows, 4×)",
        ),
        // No position bias: the window is spandrel's default, 8.
        (
            "omnisr-x3-bare.safetensors",
            3,
            "OmniSR (2 groups of 2 blocks, 8×8 windows, 3×)",
        ),
    ] {
        upscales_as_spandrel(&reference, file, scale, what);
    }
    // Its spatial gate pools 7×7 from a stride-2 convolution: windows of 8 need 9 pixels.
    let upscaler = Upscaler::open(
        &upscaler_file("omnisr-x3-bare.safetensors").path,
        &Device::Cpu,
    )
    .unwrap();
    let small = Tensor::zeros((1, 3, 8, 20), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = upscaler.upscale(&small, false).err().unwrap().to_string();
    assert!(
        err.contains("20×8") && err.contains("at least 9 pixels"),
        "{err}"
    );
    assert_eq!(
        upscaler
            .upscale(&small.pad_with_zeros(2, 0, 1).unwrap(), false)
            .unwrap()
            .dims(),
        [1, 3, 27, 60]
    );
}

#[test]
fn span_and_realplksr_files_upscale_as_spandrel_runs_them() {
    let reference = Reference::of("light-upscalers");
    for (file, scale, what) in [
        // SPAN's stored `eval_conv` is stale: its convolutions are folded from their branches.
        ("span-x4.pth", 4, "SPAN (12 features, 4×)"),
        ("span-x2-raw.safetensors", 2, "SPAN (8 features, 2×)"),
        (
            "realplksr-x2.pth",
            2,
            "RealPLKSR (2 blocks, 7×7 kernels, 2×)",
        ),
        (
            "realplksr-x3-ln.safetensors",
            3,
            "RealPLKSR (3 blocks, 5×5 kernels, 3×)",
        ),
        (
            "realplksr-x4-dysample.pth",
            4,
            "RealPLKSR (2 blocks, 7×7 kernels, 4×, DySample)",
        ),
        (
            "realplksr-x3-dysample.safetensors",
            3,
            "RealPLKSR (1 blocks, 5×5 kernels, 3×, DySample)",
        ),
    ] {
        upscales_as_spandrel(&reference, file, scale, what);
    }
}

#[test]
fn swin2sr_files_upscale_as_spandrel_runs_them() {
    let reference = Reference::of("swin2sr-upscalers");
    for (file, scale, what) in [
        (
            "swin2sr-x2-classical.pth",
            2,
            "Swin2SR (classical SR, 2 groups, 2×)",
        ),
        (
            "swin2sr-x4-real.safetensors",
            4,
            "Swin2SR (real-world SR, 1 groups, 4×)",
        ),
        (
            "swin2sr-x3-light.pth",
            3,
            "Swin2SR (lightweight SR, 1 groups, 3×)",
        ),
        // The input resized bicubically from its padded 24×16 to the output's 42×26.
        (
            "swin2sr-x2-compressed.safetensors",
            2,
            "Swin2SR (compressed SR, 1 groups, 2×)",
        ),
    ] {
        upscales_as_spandrel(&reference, file, scale, what);
    }
}

#[test]
fn swinir_and_swin2sr_restoration_files_run_as_spandrel_runs_them() {
    // No upsampler: the image at its size plus `conv_last` of the features (denoising, JPEG).
    let reference = Reference::of("swin-restorers");
    for (file, what) in [
        ("swinir-denoise.pth", "SwinIR (restoration, 1 groups, 1×)"),
        // Windows of 7: the JPEG releases' pixel range of 255, as spandrel takes it.
        (
            "swinir-jpeg-w7.safetensors",
            "SwinIR (restoration, 1 groups, 1×)",
        ),
        ("swin2sr-jpeg.pth", "Swin2SR (restoration, 1 groups, 1×)"),
    ] {
        upscales_as_spandrel(&reference, file, 1, what);
    }
    // As a hires upscaler it runs once and its image is kept (as A1111 keeps it), then Lanczos
    // scales it up: not the plain Lanczos result.
    let restorer = Upscaler::open(&upscaler_file("swinir-denoise.pth").path, &Device::Cpu).unwrap();
    let square = Tensor::rand(0f32, 1.0, (1, 3, 16, 16), &Device::Cpu).unwrap();
    let restored = hires::upscale_pixels(&square, 32, Some(&restorer), false).unwrap();
    let plain = hires::upscale_pixels(&square, 32, None, false).unwrap();
    assert_eq!(restored.dims(), [1, 3, 32, 32]);
    assert!(
        max_diff(&restored, &plain) > 0.1,
        "the restoration was kept"
    );
}

#[test]
fn original_plksr_files_upscale_as_spandrel_runs_them() {
    let reference = Reference::of("plksr-upscalers");
    for (file, scale, what) in [
        (
            "plksr-x2-ccm.pth",
            2,
            "PLKSR (2 blocks, CCM, 9×9 kernels, 2×)",
        ),
        (
            "plksr-x3-iccm.safetensors",
            3,
            "PLKSR (2 blocks, ICCM, 5×5 kernels, 3×)",
        ),
        (
            "plksr-x4-dccm.pth",
            4,
            "PLKSR (1 blocks, DCCM, 7×7 kernels, 4×)",
        ),
        // The sparse ablations, folded into one kernel at load.
        (
            "plksr-x2-sparse.safetensors",
            2,
            "PLKSR (1 blocks, CCM, 17×17 kernels, 2×)",
        ),
        (
            "plksr-x2-rect.pth",
            2,
            "PLKSR (1 blocks, CCM, 15×15 kernels, 2×)",
        ),
    ] {
        upscales_as_spandrel(&reference, file, scale, what);
    }
}

#[test]
fn upscaler_files_in_every_layout_upscale_as_spandrel_runs_them() {
    let reference = Reference::of("upscalers");
    let pixels = unit_pixels(reference.get("image"));
    for (file, scale, what) in [
        ("rrdb-x4-old.pth", 4, "ESRGAN (RRDBNet, 1 blocks, 4×)"),
        (
            "rrdb-x4-new.safetensors",
            4,
            "ESRGAN (RRDBNet, 1 blocks, 4×)",
        ),
        ("rrdb-x2-new.pth", 2, "ESRGAN (RRDBNet, 1 blocks, 2×)"),
        (
            "compact-x4.pth",
            4,
            "Real-ESRGAN compact (3 convolutions, 4×)",
        ),
    ] {
        let upscaler = Upscaler::open(&upscaler_file(file).path, &Device::Cpu).unwrap();
        assert_eq!(
            (upscaler.scale(), upscaler.description()),
            (scale, what),
            "{file}"
        );
        let out = upscaler.forward(&pixels).unwrap();
        close(file, &out.get(0).unwrap(), reference.get(file), 1e-6);
        // Tiled and clamped, as the hires pass runs it: the image is one tile here.
        let clamped = reference
            .get(file)
            .clamp(0f32, 1f32)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        close(
            file,
            &upscaler.upscale(&pixels, false).unwrap(),
            &clamped,
            1e-6,
        );
    }
    // A file cut short is refused naming it, as are the sides a pixel-unshuffle cannot split.
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.pth");
    let whole = std::fs::read(upscaler_file("rrdb-x4-old.pth").path).unwrap();
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let message = Upscaler::open(&cut, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("cut.pth"), "{message}");
    let x2 = Upscaler::open(&upscaler_file("rrdb-x2-new.pth").path, &Device::Cpu).unwrap();
    let odd = pixels.narrow(3, 0, 23).unwrap();
    let message = x2.upscale(&odd, false).err().unwrap().to_string();
    assert!(message.contains("multiples of 2"), "{message}");
}

#[test]
fn lanczos_resizes_as_pillow_does_bit_for_bit() {
    let reference = Reference::of("upscalers");
    let source = reference.get("lanczos_source");
    let (h, w, _) = source.dims3().unwrap();
    let raw: Vec<u8> = source.flatten_all().unwrap().to_vec1().unwrap();
    let image = image::RgbImage::from_raw(w as u32, h as u32, raw).unwrap();
    for (width, height) in [(64, 48), (11, 9), (69, 17), (23, 40)] {
        let ours = lanczos::resize(&image, width, height, false);
        let theirs: Vec<u8> = reference
            .get(&format!("lanczos_{width}x{height}"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(ours.into_raw(), theirs, "{width}×{height}");
    }
}

/// SDXL's ensemble of experts in both passes of a hires request: the base hands its latents
/// to the refiner at the switch point at the native size, and again at the hires size from the
/// upscaled latents, as diffusers' pipelines with `denoising_end` and `denoising_start` do.
#[test]
fn an_sdxl_ensemble_hands_over_to_the_refiner_in_both_passes_of_a_hires_request() {
    let reference = Reference::of("hires");
    let switch: f64 = reference.metadata["ensemble_switch"].parse().unwrap();
    let hires = latent_hires(&reference);
    let request = GenerateRequest {
        steps: 4,
        guidance: 5.0,
        hires: Some(hires.clone()),
        ..reference.request()
    };
    let (base, refiner) = (load("tiny-sdxl"), load("tiny-sdxl-refiner"));
    let init = reference.get("init");
    let handed = base
        .denoise_stage(&request, init, Stage::Until(switch))
        .unwrap();
    let low = refiner
        .denoise_stage(&request, init, Stage::From(&handed, switch))
        .unwrap();
    close(
        "the ensemble's native-size pass",
        &low,
        reference.get("ensemble_low_latents"),
        5e-4,
    );
    let refiner_path = fixtures().join("tiny-sdxl-refiner");
    let ensemble = Ensemble::new(base, refiner, &refiner_path, "models/refiner", switch).unwrap();
    let latents = ensemble
        .hires_denoise(&request, &hires, &low, reference.get("fresh"))
        .unwrap();
    let image = assert_hires_image(
        "the ensemble's hires pass",
        &load("tiny-sdxl-refiner"),
        &latents,
        &reference,
        "ensemble_image",
    );
    // Without the refiner's second stage the hires image is another one.
    let xl = load("tiny-sdxl");
    let alone = xl
        .hires_denoise(&request, &hires, &low, reference.get("fresh"))
        .unwrap();
    assert!(
        max_diff(&xl.decode(&alone, false).unwrap(), &image) > 1e-2,
        "the refiner finishes the hires pass"
    );
    // The whole request: 128 pixels, the same twice.
    let made = ensemble.generate(&request).unwrap();
    assert_eq!(made[0].dimensions(), (128, 128));
    assert_eq!(made, ensemble.generate(&request).unwrap());
}

#[test]
fn a_hires_pass_with_a_pixel_upscaler_redraws_what_lanczos_or_the_model_scaled_up() {
    let reference = Reference::of("upscalers");
    let mut model = load("tiny-sd15");
    model
        .add_upscaler(&upscaler_file("compact-x4.pth"))
        .unwrap();
    let upscaler = Upscaler::open(&upscaler_file("compact-x4.pth").path, &Device::Cpu).unwrap();
    let steps: usize = reference.metadata["steps"].parse().unwrap();
    let strength: f32 = reference.metadata["strength"].parse().unwrap();
    let (request, low) = native_pass(&model, &reference);
    let first = model.decode(&low, false).unwrap();
    let first_bytes = reference
        .get("first")
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    // (One pixel rounds the other way here: its value lies within 1e-5 of a half.)
    close(
        "the first image in 8 bits",
        &bytes(&first),
        &first_bytes,
        1.0,
    );
    for (label, kind, model_used) in [
        ("lanczos", HiresUpscaler::Lanczos, None),
        ("compact", HiresUpscaler::Model, Some(&upscaler)),
    ] {
        // The first image scaled up, from the reference's own 8-bit first image.
        let up =
            hires::upscale_pixels(&unit_pixels(reference.get("first")), 128, model_used, false)
                .unwrap();
        let theirs = reference
            .get(&format!("{label}_upscaled"))
            .to_dtype(candle_core::DType::F32)
            .unwrap();
        // Byte for byte: the model's output rounded, then Pillow's Lanczos.
        close(
            &format!("{label}: the upscaled image"),
            &bytes(&up),
            &theirs,
            0.0,
        );
        let hires = Hires {
            size: 128,
            strength,
            steps,
            upscaler: kind,
        };
        let request = GenerateRequest {
            hires: Some(hires.clone()),
            ..request.clone()
        };
        let latents = model
            .hires_denoise(&request, &hires, &low, reference.get("fresh"))
            .unwrap();
        let image = model.decode(&latents, false).unwrap();
        close(
            &format!("{label}: the hires pass"),
            &image.permute((0, 2, 3, 1)).unwrap(),
            reference.get(&format!("{label}_image")),
            4e-4,
        );
    }
    // Asking for the model without one loaded is refused, saying so.
    let plain = load("tiny-sd15");
    let hires = Hires {
        size: 128,
        strength,
        steps,
        upscaler: HiresUpscaler::Model,
    };
    let message = plain
        .generate(&GenerateRequest {
            hires: Some(hires),
            ..request.clone()
        })
        .expect_err("no upscaler loaded")
        .to_string();
    assert!(message.contains("none was loaded"), "{message}");
    assert_eq!(
        model.identity().upscaler,
        Some(UpscalerUse {
            file: "upscalers/compact-x4.pth".into(),
            sha256: autonomy_pipeline::models::digest::file_sha256(
                &upscaler_file("compact-x4.pth").path
            )
            .unwrap(),
        })
    );
}

#[test]
fn generate_takes_loras_embeddings_clip_skip_and_a1111_lora_tags() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures().join("tiny-sd15");
    let generate = |name: &str, extra: &[String]| -> std::process::Output {
        let mut args: Vec<String> = [
            "generate",
            "a red potion, (glowing:1.2), pixel-style",
            "--model",
            model.to_str().unwrap(),
            "--steps",
            "2",
            "-o",
        ]
        .map(String::from)
        .to_vec();
        args.push(dir.path().join(name).display().to_string());
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_autonomy"))
            .args(&args)
            .output()
            .unwrap()
    };
    let pixels = |name: &str| image::open(dir.path().join(name)).unwrap().to_rgba8();
    let plain = generate("plain.png", &[]);
    assert!(plain.status.success(), "{plain:?}");
    let with = generate(
        "with.png",
        &[
            "--lora".into(),
            format!("{}:0.7", model.join("loras/kohya.safetensors").display()),
            "--embedding".into(),
            fixtures()
                .join("embeddings/pixel-style.pt")
                .display()
                .to_string(),
            "--clip-skip".into(),
            "2".into(),
        ],
    );
    assert!(with.status.success(), "{with:?}");
    assert_ne!(pixels("plain.png"), pixels("with.png"));
    // A1111's tag finds the same LoRA beside the model, by its file name, and merges it alike.
    let tagged = std::process::Command::new(env!("CARGO_BIN_EXE_autonomy"))
        .args([
            "generate",
            "a red potion, <lora:kohya:0.7> (glowing:1.2), pixel-style",
            "--model",
        ])
        .arg(&model)
        .args(["--steps", "2", "--clip-skip", "2", "--embedding"])
        .arg(fixtures().join("embeddings/pixel-style.pt"))
        .arg("-o")
        .arg(dir.path().join("tagged.png"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&tagged.stderr);
    assert!(tagged.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "<lora:kohya:0.7>: {}",
            model.join("loras/kohya.safetensors").display()
        )),
        "{stderr}"
    );
    assert_eq!(pixels("with.png"), pixels("tagged.png"));
    // Apart scales for the text encoder and the UNet, in A1111's order, either way.
    let apart = |name: &str, prompt: &str, lora: Option<String>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_autonomy"));
        command.args(["generate", prompt, "--model"]).arg(&model);
        command
            .args(["--steps", "2", "-o"])
            .arg(dir.path().join(name));
        if let Some(lora) = lora {
            command.args(["--lora", &lora]);
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        pixels(name)
    };
    let file = model.join("loras/kohya.safetensors").display().to_string();
    let argument = apart("te-unet.png", "a red potion", Some(format!("{file}:0:0.7")));
    assert_eq!(
        argument,
        apart("te-unet-tag.png", "a red potion <lora:kohya:0:0.7>", None)
    );
    let both = apart("both.png", "a red potion", Some(format!("{file}:0.7")));
    assert_ne!(argument, both);
    // Block weights by argument and by tag alike; a hypernetwork by its tag, beside the model.
    let weighted = apart(
        "lbw.png",
        "a red potion",
        Some(format!("{file}:0.7:lbw=OUTALL")),
    );
    assert_eq!(
        weighted,
        apart(
            "lbw-tag.png",
            "a red potion <lora:kohya:0.7:lbw=OUTALL>",
            None
        )
    );
    assert_ne!(weighted, both);
    assert_ne!(
        apart("hyper.png", "a red potion <hypernet:pixel-style:0.8>", None),
        apart("potion.png", "a red potion", None)
    );
    // A prompt that changes says which text each step takes.
    let edited = std::process::Command::new(env!("CARGO_BIN_EXE_autonomy"))
        .args(["generate", "a [red:blue:1] potion AND a gem:0.5", "--model"])
        .arg(&model)
        .args(["--steps", "3", "-o"])
        .arg(dir.path().join("edited.png"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&edited.stderr);
    assert!(edited.status.success(), "{stderr}");
    for line in [
        "prompt: × 1",
        "prompt:   steps 1–2: a red potion",
        "prompt:   step 3: a blue potion",
        "prompt: × 0.5 · a gem",
    ] {
        assert!(stderr.contains(line), "{line:?} in {stderr}");
    }
    let refused = |extra: &[&str], prompt: Option<&str>, words: &str| {
        let mut args = vec![
            "generate",
            prompt.unwrap_or("a knight"),
            "--model",
            model.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_autonomy"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(words), "{stderr}");
    };
    refused(
        &[],
        Some("a knight <lora:add_detail:0.5>"),
        "`<lora:add_detail:0.5>`: no LoRA file named `add_detail`",
    );
    refused(
        &["--negative", "<lora:kohya>"],
        None,
        "`<lora:kohya>`: A1111 applies LoRAs and hypernetworks from the prompt only",
    );
    refused(&["--lora", "x.safetensors:9"], None, "not within −4 to 4");
    refused(
        &["--lora", "gone.safetensors"],
        None,
        "`gone.safetensors` is missing",
    );
    refused(&["--clip-skip", "3"], None, "clip skip 3");
    // A hires pass redraws at `--size`; without `--size` there is nothing to redraw at.
    let hires = generate(
        "hires.png",
        &["--size", "128", "--hires", "0.6"].map(String::from),
    );
    assert!(hires.status.success(), "{hires:?}");
    assert_eq!(pixels("hires.png").dimensions(), (128, 128));
    for upscaler in [
        "lanczos".to_string(),
        upscaler_file("rrdb-x2-new.pth").path.display().to_string(),
    ] {
        let out = generate(
            "sharp.png",
            &[
                "--size",
                "128",
                "--hires",
                "0.4",
                "--hires-upscaler",
                &upscaler,
            ]
            .map(String::from),
        );
        assert!(out.status.success(), "{out:?}");
        assert_eq!(pixels("sharp.png").dimensions(), (128, 128));
    }
    refused(
        &[
            "--size",
            "128",
            "--hires",
            "0.4",
            "--hires-upscaler",
            "gone.pth",
        ],
        None,
        "`gone.pth` is missing",
    );
    refused(&["--hires", "0.6"], None, "--size");
    refused(
        &["--size", "96", "--hires", "0.6"],
        None,
        "multiple of 64 above",
    );
}
