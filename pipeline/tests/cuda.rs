//! Autonomy on a CUDA GPU. Built only with `--features cuda` and run where a GPU is (never in
//! CI; `scripts/gpu/run.sh` runs it on a lent one):
//!
//! - the house model: the same prompt and seed give the CPU's picture up to float rounding,
//!   CUDA runs repeat bit for bit, and training steps on the GPU lower the loss;
//! - Stable Diffusion in f16: each stage of the tiny fixture pipelines follows diffusers' f32
//!   references within f16 rounding, a seed repeats bit for bit, and the picture is the CPU's
//!   up to rounding; an A1111 hypernetwork (its modules in f32) follows its reference alike;
//! - the ControlNet annotators (HED, PiDiNet, line art) in f32 follow `controlnet_aux`'s maps.
#![cfg(feature = "cuda")]

mod common;

use autonomy_pipeline::generator::{GenerateRequest, Generator};
use autonomy_pipeline::models::house::{HouseConfig, HouseModel};
use autonomy_pipeline::models::sd::StableDiffusion;
use autonomy_pipeline::models::sd::controlnet::ControlNetFile;
use autonomy_pipeline::models::sd::hypernetwork::HypernetworkFile;
use autonomy_pipeline::train::data::TrainingSet;
use autonomy_pipeline::train::{TrainOptions, Trainer};
use autonomy_pipeline::verify::{MIN_PSNR, psnr};
use candle_core::{DType, Device, Tensor};
use common::crate_dir;
use common::sd::{Reference, fixtures};
use image::{Rgba, RgbaImage};
use std::sync::atomic::AtomicBool;

fn gpu() -> Device {
    autonomy_pipeline::device::select("cuda").expect("a CUDA GPU (this test needs one)")
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

/// Largest |ours − theirs| over the largest |theirs|, both brought to the CPU in f32.
fn relative(ours: &Tensor, theirs: &Tensor) -> f32 {
    let largest = |t: &Tensor| {
        t.abs()
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.max(0))
            .and_then(|t| t.to_scalar::<f32>())
            .unwrap()
    };
    let ours = ours.to_device(&Device::Cpu).unwrap();
    let ours = ours.to_dtype(DType::F32).unwrap();
    assert_eq!(ours.dims(), theirs.dims());
    largest(&(ours - theirs).unwrap()) / largest(theirs)
}

#[test]
fn stable_diffusion_in_f16_on_cuda_follows_diffusers() {
    let gpu = gpu();
    // f16 keeps 11 significant bits (4.9e-4 relative); a few dozen layers compound that.
    let bounds: [(&str, f32); 4] = [
        ("text", 1e-2),
        ("UNet", 2e-2),
        ("VAE decode", 2e-2),
        ("whole run", 3e-2),
    ];
    let mut misses = Vec::new();
    println!("| pipeline | stage | max error / largest value | bound |");
    for name in ["tiny-sd15", "tiny-sd21", "tiny-sd-turbo", "tiny-sdxl"] {
        let model = StableDiffusion::load(&fixtures().join(name), &gpu)
            .unwrap_or_else(|e| panic!("{name} loads on CUDA: {e}"));
        let reference = Reference::of(name);
        let to_gpu = |key: &str| reference.get(key).to_device(&gpu).unwrap();
        let cond = model.encode_prompt(&reference.prompt).unwrap();
        let uncond = model.encode_negative(&reference.negative).unwrap();
        let context = Tensor::cat(&[&uncond.context, &cond.context], 0).unwrap();
        let (timestep, added) = match (&uncond.pooled, &cond.pooled) {
            (Some(negative), Some(prompt)) => {
                let added = Tensor::cat(
                    &[
                        model.added_conditioning(negative, true).unwrap(),
                        model.added_conditioning(prompt, false).unwrap(),
                    ],
                    0,
                )
                .unwrap();
                (501.0, Some(added))
            }
            _ => (reference.scalar("unet_timestep"), None),
        };
        let eps = model
            .predict(
                &to_gpu("unet_sample"),
                timestep,
                &context,
                added.as_ref(),
                None,
            )
            .unwrap();
        let request = GenerateRequest {
            prompt: reference.prompt.clone(),
            negative_prompt: reference.negative.clone(),
            steps: reference.scalar("run_steps") as usize,
            guidance: reference.scalar("run_guidance"),
            ..GenerateRequest::default()
        };
        let image = model.sample(&request, &to_gpu("run_init")).unwrap();
        let image = image.permute((0, 2, 3, 1)).unwrap();
        // The SDXL fixture has no VAE references of its own (its VAE decodes in f32).
        let decoded = reference.tensors.contains_key("vae_latents").then(|| {
            let decoded = model.vae_decode(&to_gpu("vae_latents")).unwrap();
            relative(&decoded, reference.get("vae_decoded"))
        });
        let stages = [
            Some(relative(&cond.context, reference.get("cond"))),
            Some(relative(&eps, reference.get("unet_eps"))),
            decoded,
            Some(relative(&image, reference.get("run_image"))),
        ];
        for ((stage, bound), error) in bounds.iter().zip(stages) {
            let Some(error) = error else { continue };
            println!("| {name} | {stage} | {error:.2e} | {bound:.0e} |");
            if error.is_nan() || error > *bound {
                misses.push(format!("{name} {stage}: {error:e} > {bound:e}"));
            }
        }
    }
    assert!(
        misses.is_empty(),
        "CUDA f16 strays from diffusers: {misses:?}"
    );
}

#[test]
fn stable_diffusion_with_a_hypernetwork_on_cuda_follows_a1111s() {
    let gpu = gpu();
    let reference = Reference::of("hypernetworks");
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &gpu).unwrap();
    model
        .add_hypernetworks(&[HypernetworkFile {
            path: fixtures().join("tiny-sd15/hypernetworks/pixel-style.pt"),
            label: "pixel-style.pt".into(),
            multiplier: 0.8,
        }])
        .unwrap();
    // The UNet in f16, the hypernetwork's modules in f32 between its projections.
    let on_gpu = |key: &str| reference.get(key).to_device(&gpu).unwrap();
    let context = on_gpu("context").to_dtype(DType::F16).unwrap();
    let eps = model
        .predict(&on_gpu("unet_sample"), 501.0, &context, None, None)
        .unwrap();
    let error = relative(&eps, reference.get("pixel_style_eps"));
    println!("| tiny-sd15 + pixel-style.pt at 0.8 | UNet | {error:.2e} | 2e-2 |");
    assert!(error < 2e-2, "the hypernetwork on CUDA strays: {error}");
}

#[test]
fn stable_diffusion_with_a_controlnet_on_cuda_conditions_the_unet_as_diffusers_does() {
    let gpu = gpu();
    let reference = Reference::of("controlnet");
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &gpu).unwrap();
    model
        .add_controlnet(&ControlNetFile {
            path: fixtures().join("tiny-sd15/controlnet"),
            label: "controlnet".into(),
        })
        .unwrap();
    // The ControlNet and the UNet in f16, the control image converted to it.
    let on_gpu = |key: &str| reference.get(key).to_device(&gpu).unwrap();
    let (sample, context) = (on_gpu("cn_sample"), on_gpu("cn_context"));
    let hint = on_gpu("control_image").repeat((2, 1, 1, 1)).unwrap();
    let half = |t: &Tensor| t.to_dtype(DType::F16).unwrap();
    let residuals = model.controls()[0]
        .as_controlnet()
        .unwrap()
        .forward(
            &half(&sample),
            501.0,
            &half(&context),
            None,
            &hint,
            0.7,
            false,
        )
        .unwrap();
    let eps = model
        .predict_controlled(&sample, 501.0, &context, None, None, Some(&residuals))
        .unwrap();
    let error = relative(&eps, reference.get("cn_unet_eps"));
    println!("| tiny-sd15 + its ControlNet at 0.7 | UNet | {error:.2e} | 2e-2 |");
    assert!(error < 2e-2, "the ControlNet on CUDA strays: {error}");
}

#[test]
fn a_t2i_adapter_on_cuda_makes_diffusers_features() {
    let gpu = gpu();
    let reference = Reference::of("t2i-adapter");
    let model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &gpu).unwrap();
    let adapter = autonomy_pipeline::models::sd::adapter::Adapter::load(
        &fixtures().join("tiny-sd15/t2i-adapter"),
        &model.spec().unet,
        &gpu,
        DType::F16,
    )
    .unwrap();
    let hint = reference.get("adapter_hint").to_device(&gpu).unwrap();
    let features = adapter
        .features(&hint.to_dtype(DType::F16).unwrap())
        .unwrap();
    for (i, feature) in features.iter().enumerate() {
        let error = relative(feature, reference.get(&format!("full_features_{i}")));
        println!("| tiny-sd15's T2I-Adapter | feature {i} | {error:.2e} | 2e-2 |");
        assert!(
            error < 2e-2,
            "the adapter on CUDA strays at feature {i}: {error}"
        );
    }
}

/// The annotator networks in f32 on the GPU (PiDiNet's depthwise convolutions through
/// candle's grouped convolution there) against `controlnet_aux`'s maps.
#[test]
fn the_annotator_networks_on_cuda_make_controlnet_auxs_maps() {
    use autonomy_pipeline::models::sd::annotator::{hed::Hed, lineart::Lineart, pidinet::PidiNet};
    let gpu = gpu();
    let reference = Reference::of("annotators");
    let folder = fixtures().join("annotators");
    let picture = image::open(folder.join("picture.png")).unwrap().to_rgb8();
    let maps = [
        (
            "HED",
            Hed::load(&folder.join("hed.pth"), &gpu)
                .unwrap()
                .edge_map(&picture),
            "hed_edge",
        ),
        (
            "PiDiNet",
            PidiNet::load(&folder.join("pidinet.pth"), &gpu)
                .unwrap()
                .edge_map(&picture),
            "pidinet_edge",
        ),
        (
            "line art",
            Lineart::load(&folder.join("lineart.pth"), &gpu)
                .unwrap()
                .line_map(&picture),
            "lineart_line",
        ),
    ];
    for (what, map, key) in maps {
        let error = relative(&map.unwrap(), reference.get(key));
        println!("| {what} annotator | map | {error:.2e} | 1e-3 |");
        assert!(error < 1e-3, "{what} on CUDA strays: {error}");
    }
}

/// Depth Anything V2 (its attention through flash attention where it takes f32, its bilinear
/// resizes through candle's CUDA kernel) and M-LSD (its depthwise convolutions and the dilated
/// one through candle's) in f32 on the GPU against their references.
#[test]
fn depth_anything_and_mlsd_on_cuda_match_their_references() {
    use autonomy_pipeline::models::sd::annotator::depth_anything::{DepthAnything, DepthVersion};
    use autonomy_pipeline::models::sd::annotator::mlsd::Mlsd;
    let gpu = gpu();
    let folder = fixtures().join("annotators");
    let picture = image::open(folder.join("picture.png")).unwrap().to_rgb8();
    let depth = DepthAnything::load(
        &folder.join("depth-anything-v2.pth"),
        DepthVersion::V2,
        &gpu,
    )
    .unwrap()
    .depth_map(&picture)
    .unwrap();
    let error = relative(&depth, Reference::of("depth-anything").get("depth_picture"));
    println!("| Depth Anything V2 | depth | {error:.2e} | 1e-3 |");
    assert!(error < 1e-3, "Depth Anything on CUDA strays: {error}");
    let maps = Mlsd::load(&folder.join("mlsd.pth"), &gpu)
        .unwrap()
        .maps(&picture)
        .unwrap();
    let error = relative(&maps, Reference::of("mlsd").get("mlsd_map"));
    println!("| M-LSD | maps | {error:.2e} | 1e-3 |");
    assert!(error < 1e-3, "M-LSD on CUDA strays: {error}");
}

#[test]
fn a_stable_diffusion_seed_repeats_on_cuda_and_lands_near_the_cpus_picture() {
    let path = fixtures().join("tiny-sd15");
    let request = GenerateRequest {
        prompt: "mossy stone bricks".into(),
        steps: 8,
        seed: 11,
        ..GenerateRequest::default()
    };
    let model = StableDiffusion::load(&path, &gpu()).unwrap();
    let on_gpu = model.generate(&request).unwrap();
    assert_eq!(
        on_gpu,
        model.generate(&request).unwrap(),
        "a CUDA run must repeat itself exactly"
    );
    let on_cpu = StableDiffusion::load(&path, &Device::Cpu)
        .unwrap()
        .generate(&request)
        .unwrap();
    let db = psnr(on_gpu[0].as_raw(), on_cpu[0].as_raw());
    println!(
        "tiny-sd15, 8 steps: CUDA f16 vs CPU f32 PSNR {db:.1} dB (verify --reproduce accepts ≥ {MIN_PSNR} dB)"
    );
    assert!(
        db >= MIN_PSNR,
        "CUDA's picture strays from the CPU's: {db:.1} dB, so `verify --reproduce` would refuse it"
    );
}

/// Autonomy's own CUDA paths against candle's f32 operations on the CPU, op by op, so that a
/// fault shows where it is: the fused group norm (with and without SiLU; groups over several
/// blocks, a batch of two, an odd spatial size); the convolutions (cuDNN's with the `cudnn`
/// feature; 3×3, strided, 1×1) with their bias and a ResNet's time embedding fused; the
/// linear layers' fused biases (alone, with a residual, with the GEGLU gate), in f32, f16 and
/// bf16; the flash attention kernel in f16 and bf16 (SD 1.5's head widths, cross-attention's
/// 77 keys, queries and keys that fill no whole tile, widths that are not whole 16-byte chunks;
/// one head per batch entry, and several heads side by side in each token).
#[test]
fn stable_diffusion_fused_cuda_kernels_match_candles_operations() {
    use autonomy_pipeline::models::sd::flash_attention;
    use autonomy_pipeline::models::sd::group_norm::GroupNorm;
    use autonomy_pipeline::models::sd::kernels::{Conv2d, Linear, attention};
    use candle_core::Module;
    use candle_nn::VarBuilder;
    use std::collections::HashMap;

    let gpu = gpu();
    let random = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap();
    let on = |tensors: &HashMap<String, Tensor>, dtype: DType, device: &Device| {
        VarBuilder::from_tensors(tensors.clone(), dtype, device)
    };
    // Bounds: a few units in the last place of each dtype, over the largest value.
    for (dtype, bound) in [(DType::F32, 1e-4), (DType::F16, 4e-3), (DType::BF16, 3e-2)] {
        for (shape, groups) in [
            (&[2usize, 64, 16, 16][..], 32),
            (&[1, 128, 64, 64][..], 32),
            (&[1, 32, 3, 5][..], 8),
        ] {
            let channels = shape[1];
            // An offset mean, as activations have, checks the variance's precision.
            let x = random(shape).affine(3.0, 5.0).unwrap();
            let params = HashMap::from([
                ("weight".to_string(), random(&[channels])),
                ("bias".to_string(), random(&[channels])),
            ]);
            let theirs = GroupNorm::new(
                groups,
                channels,
                1e-5,
                on(&params, DType::F32, &Device::Cpu),
            )
            .unwrap();
            let ours = GroupNorm::new(groups, channels, 1e-5, on(&params, dtype, &gpu)).unwrap();
            let x_gpu = x.to_dtype(dtype).unwrap().to_device(&gpu).unwrap();
            // The reference sees the input as rounded to `dtype`.
            let x_cpu = x.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
            for silu in [false, true] {
                let (a, b) = if silu {
                    (
                        ours.forward_silu(&x_gpu).unwrap(),
                        theirs.forward_silu(&x_cpu).unwrap(),
                    )
                } else {
                    (
                        ours.forward(&x_gpu).unwrap(),
                        theirs.forward(&x_cpu).unwrap(),
                    )
                };
                let error = relative(&a, &b);
                println!("group norm {dtype:?} {shape:?} / {groups}, silu {silu}: {error:.1e}");
                assert!(
                    error < bound,
                    "group norm {dtype:?} {shape:?} silu {silu}: {error}"
                );
            }
        }
        for (c_in, c_out, kernel, stride, padding, side) in [
            (32, 64, 3, 1, 1, 32),
            (64, 64, 3, 2, 0, 33),
            (64, 32, 1, 1, 0, 16),
        ] {
            let params = HashMap::from([
                (
                    "weight".to_string(),
                    (random(&[c_out, c_in, kernel, kernel]) * 0.1).unwrap(),
                ),
                ("bias".to_string(), random(&[c_out])),
            ]);
            let build = |dtype: DType, device: &Device| {
                Conv2d::new(
                    on(&params, dtype, device),
                    c_in,
                    c_out,
                    kernel,
                    stride,
                    padding,
                )
                .unwrap()
            };
            let x = random(&[2, c_in, side, side]);
            let x_gpu = x.to_dtype(dtype).unwrap().to_device(&gpu).unwrap();
            let x_cpu = x.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
            let (ours, theirs) = (build(dtype, &gpu), build(DType::F32, &Device::Cpu));
            let error = relative(
                &ours.forward(&x_gpu).unwrap(),
                &theirs.forward(&x_cpu).unwrap(),
            );
            println!(
                "convolution {dtype:?} {c_in}→{c_out} {kernel}×{kernel}/{stride}: {error:.1e}"
            );
            assert!(
                error < bound,
                "convolution {dtype:?} {c_in}→{c_out} {kernel}/{stride}: {error}"
            );
            let shift = random(&[2, c_out]);
            let a = ours
                .forward_shifted(
                    &x_gpu,
                    &shift.to_dtype(dtype).unwrap().to_device(&gpu).unwrap(),
                )
                .unwrap();
            let shift_cpu = shift.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
            let error = relative(&a, &theirs.forward_shifted(&x_cpu, &shift_cpu).unwrap());
            println!("convolution with a time shift {dtype:?} {c_in}→{c_out}: {error:.1e}");
            assert!(error < bound, "shifted convolution {dtype:?}: {error}");
        }
        for (rows, c_in, c_out) in [(2 * 64, 32, 320), (2 * 77, 64, 256), (3, 8, 6)] {
            let params = HashMap::from([
                (
                    "weight".to_string(),
                    (random(&[c_out, c_in]) * 0.2).unwrap(),
                ),
                ("bias".to_string(), random(&[c_out])),
            ]);
            let ours = Linear::new(on(&params, dtype, &gpu), c_in, c_out, true).unwrap();
            let theirs =
                Linear::new(on(&params, DType::F32, &Device::Cpu), c_in, c_out, true).unwrap();
            let x = random(&[2, rows / 2, c_in]);
            let residual = random(&[2, rows / 2, c_out]);
            let gpu_of = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(&gpu).unwrap();
            let cpu_of = |t: &Tensor| t.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
            let (x_gpu, x_cpu) = (gpu_of(&x), cpu_of(&x));
            let (r_gpu, r_cpu) = (gpu_of(&residual), cpu_of(&residual));
            let checks = [
                (
                    "bias",
                    ours.forward(&x_gpu).unwrap(),
                    theirs.forward(&x_cpu).unwrap(),
                ),
                (
                    "bias and residual",
                    ours.forward_residual(&x_gpu, &r_gpu).unwrap(),
                    theirs.forward_residual(&x_cpu, &r_cpu).unwrap(),
                ),
                (
                    "bias and GEGLU",
                    ours.forward_geglu(&x_gpu).unwrap(),
                    theirs.forward_geglu(&x_cpu).unwrap(),
                ),
            ];
            for (what, a, b) in checks {
                let error = relative(&a, &b);
                println!("linear {dtype:?} {c_in}→{c_out}, {what}: {error:.1e}");
                assert!(
                    error < bound,
                    "linear {dtype:?} {c_in}→{c_out} {what}: {error}"
                );
            }
        }
        if dtype == DType::F32 {
            continue;
        }
        // (heads, queries, keys, head width)
        for (heads, n, m, d) in [
            (16, 1024, 1024, 40),
            (16, 300, 77, 80),
            (4, 100, 130, 160),
            (2, 33, 64, 64),
            (3, 17, 5, 8),
            (2, 10, 12, 20),
        ] {
            let (q, k, v) = (
                random(&[heads, n, d]),
                random(&[heads, m, d]),
                random(&[heads, m, d]),
            );
            let scale = (d as f64).powf(-0.5);
            let rounded = |t: &Tensor| t.to_dtype(dtype).unwrap();
            let on_gpu = |t: &Tensor| rounded(t).to_device(&gpu).unwrap();
            let a = attention(&on_gpu(&q), &on_gpu(&k), &on_gpu(&v), scale).unwrap();
            let f32s = |t: &Tensor| rounded(t).to_dtype(DType::F32).unwrap();
            let b = attention(&f32s(&q), &f32s(&k), &f32s(&v), scale).unwrap();
            let error = relative(&a, &b);
            println!("attention {dtype:?} {heads}×{n}×{d}, {m} keys: {error:.1e}");
            assert!(
                error < bound,
                "attention {dtype:?} {heads}×{n}×{m}×{d}: {error}"
            );
        }
        // (batch, heads, queries, keys, head width), the heads side by side in each token.
        for (batch, heads, n, m, d) in
            [(2, 8, 256, 256, 40), (2, 8, 100, 77, 80), (1, 3, 20, 9, 16)]
        {
            let dim = heads * d;
            let (q, k, v) = (
                random(&[batch, n, dim]),
                random(&[batch, m, dim]),
                random(&[batch, m, dim]),
            );
            let scale = (d as f64).powf(-0.5);
            let on_gpu = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(&gpu).unwrap();
            let a = flash_attention::attention(&on_gpu(&q), &on_gpu(&k), &on_gpu(&v), heads, scale)
                .unwrap();
            let split = |t: &Tensor, len: usize| {
                t.to_dtype(dtype)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .reshape((batch, len, heads, d))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .reshape((batch * heads, len, d))
                    .unwrap()
            };
            let b = attention(&split(&q, n), &split(&k, m), &split(&v, m), scale)
                .unwrap()
                .reshape((batch, heads, n, d))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .reshape((batch, n, dim))
                .unwrap();
            let error = relative(&a, &b);
            println!(
                "attention {dtype:?} {batch}×{n}, {heads} heads of {d}, {m} keys: {error:.1e}"
            );
            assert!(
                error < bound,
                "attention {dtype:?} {batch}×{n}×{heads}×{d}: {error}"
            );
        }
    }
}
