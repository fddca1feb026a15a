//! Stable Diffusion speed against diffusers on PyTorch, in the same run, at the released
//! models' sizes (random weights: speed does not depend on them), printed as a table
//! (`cargo bench -p autonomy-pipeline --bench stable_diffusion`):
//!
//! - one SD 1.5 UNet step, 64×64 latents, batch 2 (classifier-free guidance);
//! - one VAE decode to 512²;
//! - a whole SD-Turbo image: prompt → one step → 512² pixels;
//! - the same decode and image with TAESD (`AutoencoderTiny`) in place of the VAE;
//!
//! or with `-- controlnet` a ControlNet at SD 1.5's size alone and with the UNet step it
//! conditions (a 512² control image), against diffusers' `ControlNetModel`;
//!
//! or with `-- annotators` the ControlNet preprocessors (HED, PiDiNet, line art, anime line
//! art, Depth Anything V2's ViT-S, M-LSD) at their released sizes against `controlnet_aux` (Depth
//! Anything's own repository: set `DEPTH_ANYTHING_V2` to its checkout) on a 512² picture;
//!
//! or with `-- upscalers [word]` the hires pass's upscaling models (those whose key holds the
//! word, when given) against spandrel (what ComfyUI and
//! A1111 run them with) on a 128² image: ESRGAN's RRDBNet at 4x-UltraSharp's size,
//! Real-ESRGAN's compact SRVGGNet at realesr-general-x4v3's, SPAN at the paper's size,
//! RealPLKSR at neosr's defaults, SwinIR-M's real-world ×4 network (A1111's "SwinIR 4x"), HAT
//! at Real_HAT_GAN_SRx4's size, DAT at DAT_x4's and OmniSR at OmniSR_X4_DIV2K's.
//!
//! The weights (~9 GB) are made once into `target/sd-bench` by `scripts/sd-fixtures/bench.py`,
//! which also times PyTorch. Python with `torch`, `diffusers` and `transformers` is found as
//! `$AUTONOMY_BENCH_PYTHON` (else `python3`). On CUDA builds `-- --device cuda` runs candle on
//! the GPU in f16; `AUTONOMY_BENCH_TORCH_DEVICE=cuda` does the same for PyTorch.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use autonomy_pipeline::device;
use autonomy_pipeline::generator::{GenerateRequest, Generator};
use autonomy_pipeline::models::sd::StableDiffusion;
use autonomy_pipeline::models::sd::adapter::Adapter;
use autonomy_pipeline::models::sd::annotator::depth_anything::{DepthAnything, DepthVersion};
use autonomy_pipeline::models::sd::annotator::hed::Hed;
use autonomy_pipeline::models::sd::annotator::lineart::{self, Lineart};
use autonomy_pipeline::models::sd::annotator::lineart_anime::LineartAnime;
use autonomy_pipeline::models::sd::annotator::mlsd::{self, Mlsd};
use autonomy_pipeline::models::sd::annotator::pidinet::PidiNet;
use autonomy_pipeline::models::sd::controlnet::{ControlModel, ControlNetFile};
use autonomy_pipeline::models::sd::upscaler::Upscaler;
use autonomy_pipeline::models::sd::vae::Vae;
use autonomy_pipeline::models::sd::vae_file::{self, VaeFile};
use candle_core::{DType, Device, Tensor};

/// Timed runs per measurement on a CPU, where one takes seconds.
const CPU_REPEATS: usize = 3;
/// Timed runs per measurement on a GPU, where one takes milliseconds.
const GPU_REPEATS: usize = 20;

// The allocator the `autonomy` binary runs with (see its main.rs): mimalloc, keeping freed
// memory instead of returning it to the OS after every step.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
/// mimalloc's `mi_option_purge_delay`.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> Result<()> {
    // SAFETY: sets a plain integer option before any allocation-heavy work.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device_name = args
        .iter()
        .position(|a| a == "--device")
        .and_then(|i| args.get(i + 1))
        .map_or("cpu", String::as_str);
    let device = device::select(device_name)?;
    let repeats = if device.is_cpu() {
        CPU_REPEATS
    } else {
        GPU_REPEATS
    };
    // Cargo's crate folder at run time, so that a bench binary copied to a GPU machine works
    // in that machine's checkout.
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let root = crate_dir.join("../target/sd-bench");
    let script = crate_dir.join("../scripts/sd-fixtures/bench.py");
    let python = std::env::var("AUTONOMY_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    if let Some(i) = args.iter().position(|a| a == "upscalers") {
        // `upscalers omnisr`: only the rows whose key contains the word after it.
        let only = args.get(i + 1).filter(|a| !a.starts_with('-')).cloned();
        return upscalers(
            &root,
            &script,
            &python,
            &device,
            repeats,
            only.as_deref().unwrap_or(""),
        );
    }
    if args.iter().any(|a| a == "controlnet") {
        return controlnet(&root, &script, &python, &device, repeats);
    }
    if args.iter().any(|a| a == "annotators") {
        return annotators(&root, &script, &python, &device, repeats);
    }
    if !root.join("sd15/model_index.json").is_file()
        || !root.join("sd-turbo/model_index.json").is_file()
        || !root.join("taesd/config.json").is_file()
    {
        eprintln!(
            "making random-weight SD 1.5 and SD-Turbo pipelines and a TAESD in {} …",
            root.display()
        );
        run_python(&python, &script, &["make", &root.to_string_lossy()])?;
    }

    let ours = candle(&root, &device, repeats)?;
    eprintln!(
        "candle: UNet step {}, VAE decode {}, SD-Turbo image {}, TAESD decode {}, SD-Turbo image with TAESD {}",
        human(ours.unet_step),
        human(ours.vae_decode),
        human(ours.turbo_image),
        human(ours.taesd_decode),
        human(ours.turbo_taesd_image)
    );
    eprintln!("timing diffusers on PyTorch …");
    let theirs = pytorch_times(
        &python,
        &script,
        &["time", &root.to_string_lossy(), &repeats.to_string()],
    )?;

    table(
        "Stable Diffusion",
        (repeats, &device),
        &theirs,
        &[
            (
                "SD 1.5 UNet step, 64×64 latents, batch 2",
                "unet_step",
                ours.unet_step,
                true,
            ),
            ("VAE decode to 512²", "vae_decode", ours.vae_decode, true),
            (
                "SD-Turbo image, 1 step, 512², prompt to pixels",
                "turbo_image",
                ours.turbo_image,
                true,
            ),
            (
                "TAESD decode to 512²",
                "taesd_decode",
                ours.taesd_decode,
                false,
            ),
            (
                "SD-Turbo image with TAESD, 1 step, 512²",
                "turbo_taesd_image",
                ours.turbo_taesd_image,
                false,
            ),
        ],
    );
    Ok(())
}

/// Prints `title`, how it was timed (medians of `repeats` on `device`, and PyTorch's build,
/// device and threads from `theirs`) and a markdown table of candle's seconds against
/// PyTorch's (`theirs[key]`): each row's ratio, and for rows with a goal whether candle is at
/// most PyTorch's time.
fn table(
    title: &str,
    (repeats, device): (usize, &Device),
    theirs: &serde_json::Value,
    rows: &[(&str, &str, f64, bool)],
) {
    println!(
        "{title}, median of {repeats} (candle on {}, PyTorch {} on {} with {} threads)\n",
        device::name(device),
        theirs["torch"].as_str().unwrap_or("?"),
        theirs["device"].as_str().unwrap_or("?"),
        theirs["threads"]
    );
    println!("| what | candle | PyTorch | candle / PyTorch | goal |");
    println!("| --- | --- | --- | --- | --- |");
    for &(what, key, seconds, goal) in rows {
        let torch = theirs[key].as_f64().unwrap_or(f64::NAN);
        let ratio = seconds / torch;
        let goal = match goal {
            true if ratio <= 1.0 => "≤ 1.0× ✓",
            true => "≤ 1.0× ✗",
            false => "",
        };
        println!(
            "| {what} | {} | {} | {ratio:.2}× | {goal} |",
            human(seconds),
            human(torch),
        );
    }
}

/// A ControlNet and a T2I-Adapter at SD 1.5's size against diffusers': bench.py makes them
/// (the ControlNet from the sd15 UNet, which `cargo bench` without arguments makes first) and
/// times PyTorch, then candle runs them.
fn controlnet(
    root: &Path,
    script: &Path,
    python: &str,
    device: &Device,
    repeats: usize,
) -> Result<()> {
    if !root.join("sd15/model_index.json").is_file() {
        bail!(
            "no random-weight SD 1.5 in {}: run the bench without arguments first",
            root.display()
        );
    }
    eprintln!("making the ControlNet and timing diffusers on PyTorch …");
    let theirs = pytorch_times(
        python,
        script,
        &["controlnet", &root.to_string_lossy(), &repeats.to_string()],
    )?;
    let mut sd15 = StableDiffusion::load(&root.join("sd15"), device).context("loading sd15")?;
    sd15.add_controlnet(&ControlNetFile {
        path: root.join("controlnet-sd15"),
        label: "controlnet-sd15".into(),
    })
    .context("loading the ControlNet")?;
    let dtype = if device.is_cpu() {
        DType::F32
    } else {
        DType::F16
    };
    let latents = Tensor::randn(0f32, 1.0, (2, 4, 64, 64), device)?;
    let context = Tensor::randn(0f32, 1.0, (2, 77, 768), device)?;
    let hint = Tensor::rand(0f32, 1.0, (2, 3, 512, 512), device)?;
    let net = sd15
        .controls()
        .first()
        .and_then(ControlModel::as_controlnet)
        .context("no ControlNet loaded")?;
    let control = || {
        net.forward(
            &latents.to_dtype(dtype)?,
            500.0,
            &context.to_dtype(dtype)?,
            None,
            &hint,
            1.0,
            false,
        )
    };
    eprintln!("timing candle: the plain UNet step …");
    let plain = timed(device, repeats, || {
        sd15.predict(&latents, 500.0, &context, None, None)?;
        Ok(())
    })?;
    eprintln!("timing candle: the ControlNet …");
    let alone = timed(device, repeats, || {
        control()?;
        Ok(())
    })?;
    eprintln!("timing candle: a conditioned UNet step …");
    let step = timed(device, repeats, || {
        let residuals = control()?;
        sd15.predict_controlled(&latents, 500.0, &context, None, None, Some(&residuals))?;
        Ok(())
    })?;
    let adapter = Adapter::load(
        &root.join("t2i-adapter-sd15"),
        &sd15.spec().unet,
        device,
        dtype,
    )
    .context("loading the T2I-Adapter")?;
    let one = hint.narrow(0, 0, 1)?.to_dtype(dtype)?;
    eprintln!("timing candle: the T2I-Adapter …");
    let features = timed(device, repeats, || {
        adapter.features(&one)?;
        Ok(())
    })?;
    table(
        "ControlNet at SD 1.5's size",
        (repeats, device),
        &theirs,
        &[
            (
                "SD 1.5 UNet step, 64×64 latents, batch 2",
                "unet_step",
                plain,
                true,
            ),
            (
                "ControlNet, 64×64 latents, batch 2, 512² control image",
                "controlnet",
                alone,
                true,
            ),
            (
                "SD 1.5 UNet step conditioned by it",
                "controlled_step",
                step,
                true,
            ),
            (
                "T2I-Adapter (full, SD 1.5 widths), one 512² control image: once per image",
                "adapter",
                features,
                true,
            ),
        ],
    );
    Ok(())
}

/// The ControlNet preprocessors against `controlnet_aux`: bench.py makes the networks at
/// their released sizes (random weights) and a 512² picture, and times PyTorch; then candle
/// makes the same control images of it.
fn annotators(
    root: &Path,
    script: &Path,
    python: &str,
    device: &Device,
    repeats: usize,
) -> Result<()> {
    eprintln!("making the annotators and timing controlnet_aux on PyTorch …");
    let theirs = pytorch_times(
        python,
        script,
        &["annotators", &root.to_string_lossy(), &repeats.to_string()],
    )?;
    let folder = root.join("annotators");
    let picture = image::open(folder.join("picture.png"))
        .context("reading the bench picture")?
        .to_rgb8();
    let hed = Hed::load(&folder.join("ControlNetHED.pth"), device).context("loading HED")?;
    let pidi =
        PidiNet::load(&folder.join("table5_pidinet.pth"), device).context("loading PiDiNet")?;
    let lineart =
        Lineart::load(&folder.join("sk_model.pth"), device).context("loading the line art")?;
    let anime = LineartAnime::load(&folder.join("netG.pth"), device)
        .context("loading the anime line art")?;
    let depth = DepthAnything::load(
        &folder.join("depth_anything_v2_vits.pth"),
        DepthVersion::V2,
        device,
    )
    .context("loading Depth Anything")?;
    let mlsd =
        Mlsd::load(&folder.join("mlsd_large_512_fp32.pth"), device).context("loading M-LSD")?;
    eprintln!(
        "timing candle: HED, PiDiNet, line art, anime line art, standard line art, depth, M-LSD …"
    );
    let soft = timed(device, repeats, || {
        hed.soft_edges(&picture, false)?;
        Ok(())
    })?;
    let pidi = timed(device, repeats, || {
        pidi.soft_edges(&picture, false)?;
        Ok(())
    })?;
    let lines = timed(device, repeats, || {
        lineart.lines(&picture)?;
        Ok(())
    })?;
    let anime_lines = timed(device, repeats, || {
        anime.lines(&picture)?;
        Ok(())
    })?;
    let standard = timed(device, repeats, || {
        lineart::standard(&picture);
        Ok(())
    })?;
    let depth = timed(device, repeats, || {
        depth.depth(&picture)?;
        Ok(())
    })?;
    let mlsd = timed(device, repeats, || {
        mlsd.lines(&picture, mlsd::DEFAULT_THRESHOLDS)?;
        Ok(())
    })?;
    table(
        "ControlNet preprocessors at their released sizes, one 512² picture",
        (repeats, device),
        &theirs,
        &[
            (
                "softedge_hed (ControlNetHED.pth)",
                "softedge_hed",
                soft,
                true,
            ),
            (
                "softedge_pidinet (table5_pidinet.pth)",
                "softedge_pidinet",
                pidi,
                true,
            ),
            ("lineart (sk_model.pth)", "lineart", lines, true),
            (
                "lineart_anime (netG.pth)",
                "lineart_anime",
                anime_lines,
                true,
            ),
            (
                "lineart_standard (no network)",
                "lineart_standard",
                standard,
                true,
            ),
            (
                "depth_anything_v2 (ViT-S, seen at 518²)",
                "depth_anything_v2",
                depth,
                true,
            ),
            ("mlsd (mlsd_large_512_fp32.pth)", "mlsd", mlsd, true),
        ],
    );
    Ok(())
}

/// The upscaling models against spandrel: bench.py makes them (random weights) and times
/// PyTorch, then candle runs the same files on the same size of image.
fn upscalers(
    root: &Path,
    script: &Path,
    python: &str,
    device: &Device,
    repeats: usize,
    only: &str,
) -> Result<()> {
    eprintln!("making the upscalers and timing spandrel on PyTorch …");
    let theirs = pytorch_times(
        python,
        script,
        &[
            "upscalers",
            &root.to_string_lossy(),
            &repeats.to_string(),
            only,
        ],
    )?;
    let image = Tensor::rand(0f32, 1.0, (1, 3, 128, 128), device)?;
    let mut rows = Vec::new();
    for (what, key, file) in [
        (
            "ESRGAN ×4 (RRDBNet, 23 blocks, 4x-UltraSharp's size), 128² → 512²",
            "esrgan_x4",
            "esrgan-x4.pth",
        ),
        (
            "Real-ESRGAN compact ×4 (realesr-general-x4v3's size), 128² → 512²",
            "compact_x4",
            "compact-x4.pth",
        ),
        (
            "SPAN ×4 (48 features), 128² → 512²",
            "span_x4",
            "span-x4.pth",
        ),
        (
            "RealPLKSR ×4 (28 blocks, 64 features, 17×17 kernels), 128² → 512²",
            "realplksr_x4",
            "realplksr-x4.pth",
        ),
        (
            "SwinIR-M real-world ×4 (A1111's SwinIR 4x), 128² → 512²",
            "swinir_x4",
            "swinir-x4.pth",
        ),
        (
            "HAT ×4 (Real_HAT_GAN_SRx4's size), 128² → 512²",
            "hat_x4",
            "hat-x4.pth",
        ),
        (
            "DAT ×4 (DAT_x4's size, A1111's DAT x4), 128² → 512²",
            "dat_x4",
            "dat-x4.pth",
        ),
        (
            "OmniSR ×4 (OmniSR_X4_DIV2K's size), 128² → 512²",
            "omnisr_x4",
            "omnisr-x4.pth",
        ),
    ]
    .into_iter()
    .filter(|(_, key, _)| key.contains(only))
    {
        let upscaler = Upscaler::open(&root.join("upscalers").join(file), device)
            .with_context(|| format!("loading {file}"))?;
        eprintln!("timing candle: {what} …");
        let seconds = timed(device, repeats, || {
            upscaler.forward(&image)?;
            Ok(())
        })?;
        rows.push((what, key, seconds, true));
    }
    table("Upscalers", (repeats, device), &theirs, &rows);
    Ok(())
}

struct Timings {
    unet_step: f64,
    vae_decode: f64,
    turbo_image: f64,
    taesd_decode: f64,
    turbo_taesd_image: f64,
}

fn candle(root: &Path, device: &Device, repeats: usize) -> Result<Timings> {
    let sd15 = StableDiffusion::load(&root.join("sd15"), device).context("loading sd15")?;
    let latents = Tensor::randn(0f32, 1.0, (2, 4, 64, 64), device)?;
    let context = Tensor::randn(0f32, 1.0, (2, 77, 768), device)?;
    eprintln!("timing candle: UNet step …");
    let unet_step = timed(device, repeats, || {
        sd15.predict(&latents, 500.0, &context, None, None)?;
        Ok(())
    })?;
    eprintln!("timing candle: VAE decode …");
    let one = latents.narrow(0, 0, 1)?;
    let vae_decode = timed(device, repeats, || {
        sd15.vae_decode(&one)?;
        Ok(())
    })?;
    drop(sd15);
    let taesd_path = root.join("taesd");
    let taesd = vae_file::open(&taesd_path, 1.0).context("loading the TAESD")?;
    // In the pipelines' VAE dtype: f32 on the CPU, f16 on a GPU.
    let dtype = if device.is_cpu() {
        DType::F32
    } else {
        DType::F16
    };
    let vb = candle_nn::VarBuilder::from_backend(Box::new(taesd.weights), dtype, device.clone());
    let taesd_vae = Vae::new(vb, &taesd.spec)?;
    let one = one.to_dtype(dtype)?;
    eprintln!("timing candle: TAESD decode …");
    let taesd_decode = timed(device, repeats, || {
        taesd_vae.decode(&one)?;
        Ok(())
    })?;
    let turbo =
        StableDiffusion::load(&root.join("sd-turbo"), device).context("loading sd-turbo")?;
    let request = GenerateRequest {
        prompt: "mossy stone bricks".into(),
        steps: 1,
        guidance: 0.0,
        ..GenerateRequest::default()
    };
    eprintln!("timing candle: SD-Turbo image …");
    let turbo_image = timed(device, repeats, || {
        turbo.generate(&request)?;
        Ok(())
    })?;
    drop(turbo);
    let taesd_file = VaeFile {
        path: taesd_path,
        label: "taesd".into(),
    };
    let turbo = StableDiffusion::load_with(&root.join("sd-turbo"), device, &[], Some(&taesd_file))
        .context("loading sd-turbo with the TAESD")?;
    eprintln!("timing candle: SD-Turbo image with TAESD …");
    let turbo_taesd_image = timed(device, repeats, || {
        turbo.generate(&request)?;
        Ok(())
    })?;
    Ok(Timings {
        unet_step,
        vae_decode,
        turbo_image,
        taesd_decode,
        turbo_taesd_image,
    })
}

/// Median seconds of `repeats` runs after one warm-up; GPU work is waited for.
fn timed(device: &Device, repeats: usize, mut run: impl FnMut() -> Result<()>) -> Result<f64> {
    run()?;
    device.synchronize()?;
    let mut seconds = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let started = Instant::now();
        run()?;
        device.synchronize()?;
        seconds.push(started.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    Ok(seconds[repeats / 2])
}

/// What bench.py printed for `args`: PyTorch's times (and its version, threads and device).
fn pytorch_times(python: &str, script: &Path, args: &[&str]) -> Result<serde_json::Value> {
    serde_json::from_str(&run_python(python, script, args)?).context("bench.py printed no JSON")
}

fn run_python(python: &str, script: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{python}` (set AUTONOMY_BENCH_PYTHON to a Python with torch and diffusers)"))?;
    if !out.status.success() {
        bail!(
            "`{python} {} {}` failed:\n{}",
            script.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn human(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.1} ms", seconds * 1e3)
    } else {
        format!("{seconds:.2} s")
    }
}
