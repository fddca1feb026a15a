//! `autonomy`: generate sprites, build and watch recipe folders, sign and verify provenance,
//! build the training set and train the house model, publish and trade assets on chain.

use anyhow::{Context, Result, anyhow, bail};
use autonomy_pipeline::build::{self, Event, Outcome};
use autonomy_pipeline::credentials::certificate::LocalChain;
use autonomy_pipeline::dataset::{self, BuildOptions};
use autonomy_pipeline::economy::Config;
use autonomy_pipeline::economy::registry::RegistryPoller;
use autonomy_pipeline::generator::{Control, GenerateRequest, Hires, HiresUpscaler, InitImage};
use autonomy_pipeline::keys::{KeyStore, password_for};
use autonomy_pipeline::models::sd::annotator::Networks;
use autonomy_pipeline::models::sd::block_weights::BlockWeights;
use autonomy_pipeline::models::sd::controlnet::ControlNetFile;
use autonomy_pipeline::models::sd::embedding::EmbeddingFile;
use autonomy_pipeline::models::sd::hypernetwork::{HypernetworkFile, hypernet_tags};
use autonomy_pipeline::models::sd::lora::LoraFile;
use autonomy_pipeline::models::sd::lora_tags::{MOST_SCALE, lora_tags, without_network_tags};
use autonomy_pipeline::models::sd::prompt_schedule;
use autonomy_pipeline::models::sd::scheduler::Sampler;
use autonomy_pipeline::models::sd::upscaler::UpscalerFile;
use autonomy_pipeline::models::sd::vae_file::VaeFile;
use autonomy_pipeline::models::{
    self, Additions, Family, RefinerFile,
    house::{HouseConfig, HouseModel},
    locate,
};
use autonomy_pipeline::recipe::Preprocess;
use autonomy_pipeline::train::data::TrainingSet;
use autonomy_pipeline::train::{TrainOptions, Trainer};
use autonomy_pipeline::{atomic, device};
use clap::{Parser, Subcommand, ValueEnum};
use image::RgbaImage;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

mod cli;

// Model code allocates and frees large tensors every step; returning them to the OS each time
// makes page faults dominate. mimalloc with purging off keeps them: training runs ~1.6× faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The house model shipped in this repository.
const DEFAULT_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/house");
/// `mi_option_purge_delay` in mimalloc v2's `mi_option_e` (libmimalloc-sys names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Exit code after Ctrl-C stopped a training run (its checkpoint is saved).
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "autonomy",
    version,
    about = "Generate game art with models you own"
)]
struct Cli {
    /// Where models run: `cpu`, `cuda[:N]` or `metal[:N]` (builds with `--features cuda` / `metal`).
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate sprites from a prompt with the house model.
    Generate(Box<GenerateArgs>),
    /// Render the house model's training set from the npm icon sets and procedural textures.
    Dataset(DatasetArgs),
    /// Train the house model (from scratch, `--from` a model, or `--resume` a run).
    Train(TrainArgs),
    /// Judge a house model: prompt fidelity, quality, diversity, speed; writes the results.
    Bench(BenchArgs),
    /// Build every `*.recipe.toml` under a folder (incremental: cached assets are not made again).
    Build(BuildArgs),
    /// Build, then rebuild what changes whenever a recipe, palette or source image is saved.
    Watch(BuildArgs),
    /// Creator keys (encrypted Ethereum keystores) that sign provenance manifests.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Check assets against their provenance: hashes, embedded manifests, signatures; with
    /// --reproduce, make them again and compare bit for bit.
    /// Exit code 0 verified, 2 tampered, 3 unverifiable (e.g. unsigned).
    Verify(VerifyArgs),
    /// Write a commented `autonomy.toml` (chain, creator key, content store) in a folder.
    Init {
        /// The project folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Store, mint and optionally list assets; safe to re-run after any interruption.
    Publish(cli::publish::PublishArgs),
    /// List, cancel, buy, show assets on the marketplace; withdraw what it owes you.
    Market {
        #[command(subcommand)]
        command: cli::market::MarketCommand,
    },
    /// Models and versions on the registry: register, add a trained folder, buy access, release revenue.
    Models {
        #[command(subcommand)]
        command: cli::models::ModelsCommand,
    },
    /// The DAO: delegate, propose (activate a model version, change fees), vote, queue, execute.
    Dao {
        #[command(subcommand)]
        command: cli::dao::DaoCommand,
    },
    /// The project's chain: status, accounts, faucet and clock (dev chains), deploy (RPC).
    Chain {
        #[command(subcommand)]
        command: cli::chain::ChainCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new key (password from AUTONOMY_KEY_PASSWORD or a prompt); prints its address.
    New {
        /// Key name, e.g. `studio`.
        name: String,
    },
    /// List keys and their addresses.
    List,
    /// Print a key's address.
    Address {
        /// Key name.
        name: String,
    },
    /// Write the certificate chain Content Credentials are signed with (derived from the key:
    /// nothing new is stored). Add the CA (`--ca`) to a C2PA reader's trust anchors to trust it.
    Certificate {
        /// Key name.
        name: String,
        /// Write the chain (signing certificate, then CA) here instead of printing it.
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Write or print only the CA certificate.
        #[arg(long)]
        ca: bool,
    },
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// An asset file, its `.prov.json`, or a folder (every asset below it).
    path: PathBuf,
    /// Print the reports as JSON.
    #[arg(long)]
    json: bool,
    /// Also make every asset again from its recipe and compare its files bit for bit.
    #[arg(long)]
    reproduce: bool,
    /// The model folder `model = "house"` means (with --reproduce).
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Also check the chain: the content is minted, by the manifest's creator, with a model
    /// version registered with the manifest's weights.
    #[arg(long)]
    chain: bool,
    /// The project (its autonomy.toml names the chain and the model folders).
    #[arg(long, default_value = ".")]
    project: PathBuf,
}

#[derive(clap::Args)]
struct BuildArgs {
    /// Recipe folder; outputs are written beside each recipe. Default: the project's
    /// `[watch] folders` (autonomy.toml), or the current folder.
    dir: Option<PathBuf>,
    /// Make every asset again, even when it is cached.
    #[arg(long)]
    force: bool,
    /// Assets generated at once.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// The model folder `model = "house"` means.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Cache folder (default `<dir>/.autonomy/cache`).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Print the outcome of every asset as JSON.
    #[arg(long)]
    json: bool,
    /// Sign every manifest with this creator key (`autonomy keys new <name>` makes one).
    #[arg(long)]
    key: Option<String>,
    /// The project whose chain resolves `model = "registry:<name>"` (its autonomy.toml).
    #[arg(long, default_value = ".")]
    project: PathBuf,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// What to draw, e.g. "red apple flat".
    prompt: String,
    /// What to steer away from.
    #[arg(long, default_value = "")]
    negative: String,
    /// Seed of the first image; image i uses seed + i.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sampler steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Classifier-free guidance scale (1 = off).
    #[arg(long, default_value_t = 4.0)]
    guidance: f64,
    /// Number of images.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Make images that tile seamlessly (textures).
    #[arg(long)]
    tileable: bool,
    /// Output side in pixels: the model's size times 1–8 (pixel-exact upscale), or with
    /// `--hires` the size a Stable Diffusion model redraws at.
    #[arg(long)]
    size: Option<u32>,
    /// Output file (with --count > 1, `-0`, `-1`, … are added before the extension).
    #[arg(short, long, conflicts_with = "out_dir")]
    out: Option<PathBuf>,
    /// Output folder; files are named after the prompt and seed.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Image to start from (image-to-image); `--strength` says how much to change it.
    #[arg(long)]
    init: Option<PathBuf>,
    /// How much of `--init` to repaint, 0–1 (1 ignores it).
    #[arg(long, default_value_t = 0.6, requires = "init")]
    strength: f32,
    /// Inpainting mask for `--init`: white is repainted, black kept.
    #[arg(long, requires = "init")]
    mask: Option<PathBuf>,
    /// Model folder: a house model, a diffusers Stable Diffusion folder, or a Hugging Face
    /// cache folder of one (`models--org--name`).
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Stable Diffusion: the VAE to use in place of the model's own — a `.safetensors` file
    /// (A1111's, or another checkpoint's) or a diffusers VAE folder.
    #[arg(long)]
    vae: Option<PathBuf>,
    /// Stable Diffusion: a LoRA (or LyCORIS) file to merge, `FILE` or `FILE:SCALE` (scale 1
    /// unless given), or `FILE:TEXT:UNET` for the text encoder's and the UNet's scales apart
    /// (A1111's `<lora:name:te:unet>` order), then optionally A1111's `:dyn=N` (its first N
    /// ranks) and `:lbw=…` (block weights: a preset such as `OUTD`, or 12/17/20/26 numbers);
    /// repeat for more.
    #[arg(
        long = "lora",
        value_name = "FILE[:SCALE[:UNET]][:dyn=N][:lbw=W]",
        value_parser = lora_arg
    )]
    loras: Vec<LoraFile>,
    /// Stable Diffusion: the project whose model folders (its autonomy.toml; `models/` unless
    /// it says otherwise) the prompt's A1111 LoRA tags (`<lora:name:0.8>`) are found in,
    /// besides the folder holding `--model`.
    #[arg(long, default_value = ".")]
    project: PathBuf,
    /// Stable Diffusion: a textual-inversion embedding (`.safetensors`, A1111's `.pt`) whose
    /// file stem the prompts may use as a word; repeat for more.
    #[arg(long = "embedding", value_name = "FILE")]
    embeddings: Vec<PathBuf>,
    /// Stable Diffusion XL: a refiner (folder or checkpoint) that takes over the model's latents
    /// at `--refiner-switch` (SDXL's ensemble of experts).
    #[arg(long)]
    refiner: Option<PathBuf>,
    /// The share of the noise schedule the model runs before the refiner takes over.
    #[arg(long, default_value_t = 0.8, requires = "refiner", value_parser = unit_interval)]
    refiner_switch: f64,
    /// Stable Diffusion: sample with ddim, pndm, euler, euler-karras, euler-a, heun,
    /// heun-karras, lms, lms-karras, dpm++2m, dpm++2m-karras, dpm++2m-sde, dpm++2m-sde-karras,
    /// unipc, unipc-karras, deis, dpm2, dpm2-karras, dpm2-a, dpm2-a-karras, dpm++sde,
    /// dpm++sde-karras, dpm++2s, dpm++2s-karras, dpm++2s-a, dpm++2s-a-karras or lcm (for
    /// LCM-LoRAs)
    /// instead of the folder's scheduler.
    #[arg(long, value_parser = Sampler::parse)]
    sampler: Option<Sampler>,
    /// Stable Diffusion: guidance rescale, 0–1 (0.7 is usual for zero-terminal-SNR models):
    /// strong guidance is scaled back to the prompt's own prediction's spread.
    #[arg(long, default_value_t = 0.0, value_parser = unit_interval)]
    guidance_rescale: f64,
    /// Stable Diffusion: the text-encoder layer, counted from the last, that conditions the
    /// image (A1111's "Clip skip": 2 for models trained on the one before the last).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=12))]
    clip_skip: u32,
    /// Stable Diffusion: draw at the model's size, then scale the latents up to `--size` (a
    /// multiple of 64 above it) and redraw them there at this strength, 0–1 (A1111's hires.
    /// fix; 0.5–0.7 keeps the layout and adds detail). Without it `--size` repeats pixels.
    #[arg(long, value_name = "STRENGTH", requires = "size", value_parser = unit_interval)]
    hires: Option<f64>,
    /// The hires pass's steps (`--steps` unless given).
    #[arg(long, requires = "hires")]
    hires_steps: Option<usize>,
    /// How the hires pass scales the first image up: `latent` (its latents, bilinearly),
    /// `lanczos` (its pixels), or an upscaling model file (ESRGAN or Real-ESRGAN `.pth` /
    /// `.safetensors`, e.g. 4x-UltraSharp.pth: sharper, so 0.3–0.5 strength is enough).
    #[arg(
        long,
        value_name = "latent|lanczos|FILE",
        requires = "hires",
        default_value = "latent"
    )]
    hires_upscaler: String,
    /// Stable Diffusion: a ControlNet (a diffusers folder, or an A1111/ComfyUI single file) or
    /// a T2I-Adapter (a diffusers folder) that conditions the image on `--control-image` (an
    /// edge map, a depth map, a pose…).
    /// Repeat it for several at once (their residuals add up), each with its own
    /// `--control-image`, in order; the other `--control-*` flags are given once for all of
    /// them or once for each.
    #[arg(long, value_name = "DIR", requires = "control_image")]
    controlnet: Vec<PathBuf>,
    /// The ControlNet's control image, resized to the image: one per `--controlnet`.
    #[arg(long, value_name = "PNG", requires = "controlnet")]
    control_image: Vec<PathBuf>,
    /// How strongly the ControlNet conditions the image, 0–2 (1).
    #[arg(long, requires = "controlnet", value_parser = control_scale)]
    control_scale: Vec<f64>,
    /// The fraction of the steps where the ControlNet starts, 0–1 (0).
    #[arg(long, requires = "controlnet", value_parser = unit_interval)]
    control_start: Vec<f64>,
    /// The fraction of the steps after which the ControlNet stops, 0–1 (1).
    #[arg(long, requires = "controlnet", value_parser = unit_interval)]
    control_end: Vec<f64>,
    /// Guess mode: the ControlNets condition the prompt's prediction alone.
    #[arg(long, requires = "controlnet")]
    control_guess_mode: bool,
    /// The preprocessor that makes the control image of `--control-image`, as A1111's
    /// ControlNet extension names them: `canny` (OpenCV's Canny edges, with
    /// `--control-thresholds`), `softedge_hed` and `softedge_hedsafe` (HED soft edges, with
    /// `--control-annotator ControlNetHED.pth`), `softedge_pidinet` and `softedge_pidisafe`
    /// (PiDiNet's, with `--control-annotator table5_pidinet.pth`), `scribble_hed` and
    /// `scribble_pidinet` (their edges thinned to strokes), `scribble_xdog` (no network),
    /// `lineart` (with `--control-annotator
    /// sk_model.pth`, or `sk_model2.pth` for coarse lines), `lineart_anime` (with
    /// `--control-annotator netG.pth`), `lineart_standard` (no network), `depth_anything_v2`
    /// (relative depth, near bright, with `--control-annotator depth_anything_v2_vitl.pth`),
    /// `depth_anything` (the first release's, with `depth_anything_vitl14.pth`), `mlsd`
    /// (M-LSD's straight line segments, with `mlsd_large_512_fp32.pth`),
    /// `invert` (the picture's negative: a sketch's dark lines on white made white on black),
    /// `t2ia_color_grid` (its colours in 64-pixel cells, for TencentARC's colour adapter),
    /// `shuffle` (its pixels moved by a smooth seeded flow, for the shuffle ControlNet);
    /// `none` takes the image as it is.
    #[arg(
        long,
        value_name = "NAME",
        requires = "controlnet",
        value_parser = clap::builder::PossibleValuesParser::new(
            std::iter::once("none").chain(autonomy_pipeline::recipe::PREPROCESSORS)
        )
    )]
    control_preprocess: Vec<String>,
    /// The Canny thresholds `LOW,HIGH` (A1111's 100,200), or M-LSD's `VALUE,DISTANCE` (a
    /// centre's least score and a segment's least length; A1111's 0.1,0.1).
    #[arg(long, value_name = "LOW,HIGH", requires = "control_preprocess", value_parser = thresholds)]
    control_thresholds: Vec<(f64, f64)>,
    /// The network file a `--control-preprocess` runs (`lllyasviel/Annotators`:
    /// `ControlNetHED.pth`, `table5_pidinet.pth`, `sk_model.pth`, `sk_model2.pth`, `netG.pth`).
    #[arg(long, value_name = "FILE", requires = "control_preprocess")]
    control_annotator: Vec<PathBuf>,
    /// Also write the control image each ControlNet saw (after preprocessing) to this PNG:
    /// one per `--controlnet`.
    #[arg(long, value_name = "PNG", requires = "controlnet")]
    control_out: Vec<PathBuf>,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct DatasetArgs {
    /// The npm `node_modules` folder holding the @iconify-json packages (`npm ci` installs them).
    #[arg(long, default_value = "node_modules")]
    node_modules: PathBuf,
    /// Output folder (images/, manifest.jsonl, dataset.json).
    #[arg(long, default_value = ".autonomy/dataset")]
    out: PathBuf,
    /// Image side in pixels.
    #[arg(long, default_value_t = 32)]
    size: u32,
    /// Seed of the procedural textures.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Preset {
    /// The shipped architecture (32×32, ~4.5 M parameters).
    Small,
    /// A tiny model for tests and smoke runs (16×16).
    Tiny,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Dataset manifest (.jsonl) or a folder of PNGs captioned by `<name>.txt` (or their file
    /// names); a `contributors.toml` there (`[images]` "ruby.png" = "0x…", "*" = "0x…") credits
    /// each image to an address, from which `models add-version --contributors-from-dataset`
    /// derives revenue shares.
    #[arg(long)]
    data: PathBuf,
    /// Model folder to write (config, weights, vocabulary, dataset, card, checkpoint).
    #[arg(long)]
    out: PathBuf,
    /// Fine-tune this model folder instead of starting from scratch.
    #[arg(long, conflicts_with = "resume")]
    from: Option<PathBuf>,
    /// Continue the run whose checkpoint is in --out.
    #[arg(long)]
    resume: bool,
    /// Train until this many steps in total.
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    /// Images per step.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-4)]
    lr: f64,
    /// Decay the learning rate linearly to zero over the last this many steps (default 0:
    /// constant; with --resume, the checkpoint's setting).
    #[arg(long)]
    cooldown: Option<u64>,
    /// Save every this many steps.
    #[arg(long, default_value_t = 250)]
    checkpoint_every: u64,
    /// Architecture when training from scratch.
    #[arg(long, value_enum, default_value = "small")]
    preset: Preset,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Model folder to judge (its MODEL.md gets the results).
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Dataset manifest with a held-out split (`autonomy dataset` builds it).
    #[arg(long, default_value = ".autonomy/dataset/manifest.jsonl")]
    data: PathBuf,
    /// Folder for `house-bench.md` and `house-contact-sheet.png`.
    #[arg(long, default_value = "docs")]
    docs: PathBuf,
    /// Seeds per held-out prompt (default 4; 2 with --quick).
    #[arg(long)]
    seeds: Option<usize>,
    /// Tiny settings for a smoke run; the numbers are not meaningful.
    #[arg(long)]
    quick: bool,
}

fn main() -> ExitCode {
    // SAFETY: sets a plain integer option; mimalloc reads it on its next purge decision.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = device::select(&cli.device)
        .with_context(|| format!("cannot use device `{}`", cli.device))
        .and_then(|dev| match cli.command {
            Command::Generate(args) => generate(*args, &dev),
            Command::Dataset(args) => build_dataset(args),
            Command::Train(args) => train(args, &dev),
            Command::Bench(args) => bench(args, &dev),
            Command::Build(args) => build_recipes(args, &dev),
            Command::Watch(args) => watch_recipes(args, &dev),
            Command::Keys { command } => keys(command),
            Command::Verify(args) => verify(args, &dev),
            Command::Init { dir } => cli::publish::init(&dir),
            Command::Publish(args) => cli::publish::run_publish(args),
            Command::Market { command } => cli::market::market(command),
            Command::Chain { command } => cli::chain::chain(command),
            Command::Models { command } => cli::models::models(command),
            Command::Dao { command } => cli::dao::dao(command),
        });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn generate(args: GenerateArgs, dev: &candle_core::Device) -> Result<ExitCode> {
    let vae = args.vae.as_ref().map(|path| VaeFile {
        path: path.clone(),
        label: path.display().to_string(),
    });
    let refiner = args.refiner.as_ref().map(|path| RefinerFile {
        path: path.clone(),
        label: path.display().to_string(),
        switch: args.refiner_switch,
    });
    let embeddings: Vec<EmbeddingFile> = args
        .embeddings
        .iter()
        .map(|path| EmbeddingFile {
            path: path.clone(),
            label: path.display().to_string(),
        })
        .collect();
    let mut loras: Vec<LoraFile> = args.loras.clone();
    let tags = lora_tags(&args.prompt).map_err(|e| anyhow!("the prompt: {e}"))?;
    let hypernet_tags = hypernet_tags(&args.prompt).map_err(|e| anyhow!("the prompt: {e}"))?;
    let dirs = if tags.is_empty() && hypernet_tags.is_empty() {
        Vec::new()
    } else {
        let model_dirs = Config::load(&args.project)?.model_dirs;
        locate::lora_tag_dirs(&args.model, &model_dirs)
    };
    let mut hypernetworks = Vec::with_capacity(hypernet_tags.len());
    for tag in hypernet_tags {
        let path = locate::hypernetwork_named(&dirs, &tag.name)
            .map_err(|e| anyhow!("`{}`: {e}", tag.text))?;
        eprintln!("{}: {}", tag.text, path.display());
        hypernetworks.push(HypernetworkFile {
            label: path.display().to_string(),
            path,
            multiplier: tag.multiplier,
        });
    }
    for tag in tags {
        let path =
            locate::lora_named(&dirs, &tag.name).map_err(|e| anyhow!("`{}`: {e}", tag.text))?;
        eprintln!("{}: {}", tag.text, path.display());
        loras.push(LoraFile {
            label: path.display().to_string(),
            path,
            scale: tag.scale,
            text_scale: tag.text_scale,
            rank: tag.rank,
            blocks: tag.blocks,
        });
    }
    let (hires_upscaler, upscaler) = match args.hires_upscaler.as_str() {
        "latent" => (HiresUpscaler::Latent, None),
        "lanczos" => (HiresUpscaler::Lanczos, None),
        file => (
            HiresUpscaler::Model,
            Some(UpscalerFile {
                path: PathBuf::from(file),
                label: file.to_string(),
            }),
        ),
    };
    let controlnets: Vec<ControlNetFile> = args
        .controlnet
        .iter()
        .map(|path| ControlNetFile {
            path: path.clone(),
            label: path.display().to_string(),
        })
        .collect();
    let units = controlnets.len();
    let each = |flag: &str, given: usize| {
        if given > 1 && given != units {
            bail!(
                "{flag} was given {given} times for {units} ControlNet(s): give it once for all, or once for each, in order"
            );
        }
        Ok(())
    };
    each("--control-scale", args.control_scale.len())?;
    each("--control-start", args.control_start.len())?;
    each("--control-end", args.control_end.len())?;
    each("--control-preprocess", args.control_preprocess.len())?;
    each("--control-thresholds", args.control_thresholds.len())?;
    each("--control-annotator", args.control_annotator.len())?;
    for (flag, given, optional) in [
        ("--control-image", args.control_image.len(), false),
        ("--control-out", args.control_out.len(), true),
    ] {
        if given != units && !(optional && given == 0) {
            bail!(
                "{flag} was given {given} times for {units} ControlNet(s): give one for each, in order"
            );
        }
    }
    let settings: Vec<(f64, f64, f64)> = (0..units)
        .map(|i| {
            (
                per_net(&args.control_scale, i).unwrap_or(1.0),
                per_net(&args.control_start, i).unwrap_or(0.0),
                per_net(&args.control_end, i).unwrap_or(1.0),
            )
        })
        .collect();
    if let Some((i, (_, start, end))) = settings.iter().enumerate().find(|(_, (_, s, e))| s > e) {
        bail!(
            "ControlNet {}: --control-start {start} is after --control-end {end}: it must stop after it starts",
            i + 1
        );
    }
    let additions = Additions {
        loras: &loras,
        embeddings: &embeddings,
        vae: vae.as_ref(),
        refiner: refiner.as_ref(),
        upscaler: upscaler.as_ref(),
        hypernetworks: &hypernetworks,
        controlnets: &controlnets,
    };
    let model = models::load(&args.model, dev, &additions)
        .with_context(|| format!("cannot load the model in `{}`", args.model.display()))?;
    let native = model.native_size();
    let size = args.size.unwrap_or(native);
    let hires = args.hires.map(|strength| Hires {
        size,
        strength: strength as f32,
        steps: args.hires_steps.unwrap_or(args.steps),
        upscaler: hires_upscaler,
    });
    // The hires pass draws at `size` itself; without it the model's size is scaled by whole
    // pixels.
    let drawn = if hires.is_some() { size } else { native };
    if hires.is_none() && (!size.is_multiple_of(native) || !(1..=8).contains(&(size / native))) {
        bail!(
            "size {size}: this model makes {native}×{native} images; ask for {native} times 1 to 8 \
             ({native}, {}, …, {})",
            native * 2,
            native * 8
        );
    }
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let unknown = model.unknown_words(&args.prompt);
    if !unknown.is_empty() {
        eprintln!(
            "warning: the model does not know {}: they are ignored",
            unknown.join(", ")
        );
    }
    if Family::of(&args.model) == Family::StableDiffusion {
        for line in prompt_schedule::outline(&without_network_tags(&args.prompt), args.steps, 8) {
            eprintln!("prompt: {line}");
        }
    }
    let read = |path: &PathBuf| {
        image::open(path).with_context(|| format!("cannot read the image `{}`", path.display()))
    };
    let init = match &args.init {
        Some(path) => Some(InitImage {
            image: read(path)?.to_rgba8(),
            strength: args.strength,
            mask: args
                .mask
                .as_ref()
                .map(read)
                .transpose()?
                .map(|m| m.to_luma8()),
        }),
        None => None,
    };
    let mut control = Vec::new();
    let networks = Networks::new(dev);
    for (i, (path, &(scale, start, end))) in args.control_image.iter().zip(&settings).enumerate() {
        let picture = read(path)?.to_rgb8();
        let preprocess = per_net(&args.control_preprocess, i);
        let image = match preprocess.as_deref() {
            Some("none") | None => picture,
            Some(name) => {
                let thresholds = per_net(&args.control_thresholds, i)
                    .filter(|_| matches!(name, "canny" | "mlsd"));
                let annotator = per_net(&args.control_annotator, i)
                    .filter(|_| Preprocess::needs_annotator(name));
                let preprocess = Preprocess::named(name, thresholds, annotator)
                    .map_err(|e| anyhow!("ControlNet {}: --control-preprocess {e}", i + 1))?;
                preprocess
                    .apply(&picture, Path::new(""), &networks)
                    .with_context(|| format!("ControlNet {}: cannot run {name}", i + 1))?
            }
        };
        if let Some(out) = args.control_out.get(i) {
            write_png(
                out,
                &image::DynamicImage::ImageRgb8(image.clone()).to_rgba8(),
            )?;
        }
        control.push(Control {
            image,
            scale,
            start,
            end,
            guess_mode: args.control_guess_mode,
        });
    }
    let images = model.generate(&GenerateRequest {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative.clone(),
        seed: args.seed,
        steps: args.steps,
        guidance: args.guidance,
        count: args.count,
        tileable: args.tileable,
        init,
        sampler: args.sampler,
        guidance_rescale: args.guidance_rescale,
        clip_skip: args.clip_skip as usize,
        hires,
        control,
        ..Default::default()
    })?;
    let mut written = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let seed = args.seed + i as u64;
        let path = output_path(&args, i, seed);
        let scaled = upscale(image, size / drawn);
        write_png(&path, &scaled)?;
        written.push(serde_json::json!({
            "path": path, "prompt": args.prompt, "seed": seed, "steps": args.steps,
            "guidance": args.guidance, "size": size, "model_version": model.identity().weights_sha256,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&written)?);
    } else {
        for w in &written {
            println!("{}", w["path"].as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A number from 0 to 1, for clap.
fn unit_interval(text: &str) -> std::result::Result<f64, String> {
    number_within(text, 0.0, 1.0)
}

/// ControlNet `i`'s value of a `--control-*` flag given once for all or once for each.
fn per_net<T: Clone>(given: &[T], i: usize) -> Option<T> {
    given.get(i).or(given.first()).cloned()
}

/// `--control-thresholds`: `LOW,HIGH`, 0 ≤ low ≤ high ≤ 1000.
fn thresholds(text: &str) -> std::result::Result<(f64, f64), String> {
    let (a, b) = text.split_once(',').ok_or_else(|| {
        format!("{text:?}: give two thresholds, `LOW,HIGH` for Canny (A1111's are 100,200) or `VALUE,DISTANCE` for M-LSD (0.1,0.1)")
    })?;
    let number = |t: &str| {
        t.trim()
            .parse::<f64>()
            .map_err(|e| format!("{t:?} is not a number: {e}"))
    };
    Ok((number(a)?, number(b)?))
}

/// `--control-scale`: 0–2.
fn control_scale(text: &str) -> std::result::Result<f64, String> {
    number_within(text, 0.0, 2.0)
}

fn number_within(text: &str, low: f64, high: f64) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if (low..=high).contains(&x) => Ok(x),
        Ok(x) => Err(format!("{x} is not within {low}–{high}")),
        Err(e) => Err(format!("{text:?} is not a number: {e}")),
    }
}

/// `--lora`'s `FILE`, `FILE:SCALE` or `FILE:TEXT:UNET` (A1111's order: the text encoder's
/// scale, then the UNet's), then optionally A1111's named items `:dyn=N` (the first N ranks of
/// each low-rank update) and `:lbw=…` (block weights, [`BlockWeights::parse`]): the file to
/// merge. Scales run from −4 to 4, as recipes take them.
fn lora_arg(text: &str) -> std::result::Result<LoraFile, String> {
    // From the right: the named items, then the last number, the one before it, and what is
    // left.
    let mut rest = text;
    let (mut rank, mut blocks) = (None, None);
    while let Some((before, item)) = rest.rsplit_once(':') {
        let Some((key, value)) = item.split_once('=') else {
            break;
        };
        match key.trim() {
            "dyn" => {
                rank = Some(
                    value
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|&r| r > 0)
                        .ok_or_else(|| format!("`dyn={value}` is no whole number above 0"))?,
                )
            }
            "lbw" => blocks = Some(BlockWeights::parse(value)?),
            other => {
                return Err(format!(
                    "`{other}=` is not one of `--lora`'s items (`dyn=`, `lbw=`)"
                ));
            }
        }
        rest = before;
    }
    let number = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite());
    let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
    let (file, text_scale, unet_scale) = match parts.as_slice() {
        [unet, te, file] if !file.is_empty() => match (number(te), number(unet)) {
            (Some(te), Some(unet)) => (file.to_string(), te, unet),
            (None, Some(scale)) => (format!("{file}:{te}"), scale, scale),
            _ => (rest.to_string(), 1.0, 1.0),
        },
        [scale, file] if !file.is_empty() => match number(scale) {
            Some(scale) => (file.to_string(), scale, scale),
            None => (rest.to_string(), 1.0, 1.0),
        },
        _ => (rest.to_string(), 1.0, 1.0),
    };
    for scale in [text_scale, unet_scale] {
        if !(-MOST_SCALE..=MOST_SCALE).contains(&scale) {
            return Err(format!("the scale {scale} is not within −4 to 4"));
        }
    }
    Ok(LoraFile {
        label: file.clone(),
        path: PathBuf::from(file),
        scale: unet_scale,
        text_scale: Some(text_scale).filter(|&t| t != unet_scale),
        rank,
        blocks,
    })
}

fn output_path(args: &GenerateArgs, index: usize, seed: u64) -> PathBuf {
    match (&args.out, &args.out_dir) {
        (Some(out), _) if args.count == 1 => out.clone(),
        (Some(out), _) => {
            let stem = out.file_stem().unwrap_or_default().to_string_lossy();
            let ext = out.extension().unwrap_or_default().to_string_lossy();
            out.with_file_name(format!("{stem}-{index}.{ext}"))
        }
        (None, dir) => {
            let slug: String = args
                .prompt
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join("-")
                .to_lowercase();
            dir.clone()
                .unwrap_or_default()
                .join(format!("{slug}-{seed}.png"))
        }
    }
}

fn upscale(image: &RgbaImage, factor: u32) -> RgbaImage {
    if factor == 1 {
        return image.clone();
    }
    let (w, h) = image.dimensions();
    image::imageops::resize(
        image,
        w * factor,
        h * factor,
        image::imageops::FilterType::Nearest,
    )
}

fn write_png(path: &Path, image: &RgbaImage) -> Result<()> {
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .context("cannot encode PNG")?;
    atomic::write(path, &bytes).with_context(|| format!("cannot write `{}`", path.display()))
}

fn progress(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

fn key_store() -> Result<KeyStore> {
    Ok(KeyStore::open(
        &KeyStore::default_dir().context("cannot find the key folder")?,
    ))
}

fn keys(command: KeysCommand) -> Result<ExitCode> {
    let store = key_store()?;
    match command {
        KeysCommand::New { name } => {
            let password = password_for(&name)?;
            let address = store.create(&name, &password)?;
            println!("{address}");
            eprintln!("key `{name}` written to {}", store.dir().display());
        }
        KeysCommand::List => {
            for (name, address) in store.list()? {
                println!("{name}\t{address}");
            }
        }
        KeysCommand::Address { name } => {
            let address = store
                .list()?
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, a)| a)
                .with_context(|| format!("no key `{name}` in {}", store.dir().display()))?;
            println!("{address}");
        }
        KeysCommand::Certificate { name, out, ca } => {
            let signer = store.unlock(&name, &password_for(&name)?)?;
            let chain = LocalChain::for_creator(&signer)
                .with_context(|| format!("cannot make the certificate of key `{name}`"))?;
            let pem = if ca { &chain.ca_pem } else { &chain.chain_pem };
            match out {
                Some(path) => {
                    atomic::write(&path, pem.as_bytes())
                        .with_context(|| format!("cannot write `{}`", path.display()))?;
                    eprintln!(
                        "certificate of {} written to {}",
                        signer.address(),
                        path.display()
                    );
                }
                None => print!("{pem}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(args: VerifyArgs, dev: &candle_core::Device) -> Result<ExitCode> {
    use autonomy_pipeline::verify::{ReproduceOptions, Verdict, reproduce, verify_path};
    let config = Config::load(&args.project)?;
    let mut reports = if args.reproduce {
        let options = ReproduceOptions {
            house_dir: args.model.clone(),
            device: dev.clone(),
            model_dirs: config.model_dirs.clone(),
        };
        reproduce(&args.path, &options)?
    } else {
        verify_path(&args.path)?
    };
    if args.chain {
        let ledger = autonomy_pipeline::economy::open_ledger(&config, None)
            .context("cannot open the chain")?;
        autonomy_pipeline::economy::onchain::check_on_chain(&ledger, &mut reports)?;
    }
    let worst = reports
        .iter()
        .map(|r| r.verdict())
        .max()
        .unwrap_or(Verdict::Unverifiable);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for report in &reports {
            println!(
                "{:?}: {} in {} (creator {})",
                report.verdict(),
                report.asset,
                report.dir.display(),
                report.creator.as_deref().unwrap_or("unknown")
            );
            for check in &report.checks {
                println!("  {:?} {}: {}", check.verdict, check.what, check.detail);
            }
        }
    }
    Ok(ExitCode::from(worst.exit_code() as u8))
}

/// The recipe folders to build or watch: the one named, or the project's.
fn recipe_dirs(args: &BuildArgs) -> Result<Vec<PathBuf>> {
    match &args.dir {
        Some(dir) => Ok(vec![dir.clone()]),
        None => Ok(Config::load(&args.project)?.recipe_dirs),
    }
}

fn registry_poller(args: &BuildArgs, dir: &Path) -> Result<RegistryPoller> {
    let config = Config::load(&args.project)?;
    Ok(RegistryPoller::new(config, dir.to_path_buf()))
}

fn build_options(
    args: &BuildArgs,
    dir: &Path,
    dev: &candle_core::Device,
) -> Result<build::BuildOptions> {
    let mut options = build::BuildOptions::new(dir, &args.model);
    if let Some(name) = &args.key {
        let password = password_for(name)?;
        options.signer = Some(key_store()?.unlock(name, &password)?);
    }
    if let Some(cache) = &args.cache {
        options.cache_dir = cache.clone();
    }
    options.device = dev.clone();
    options.force = args.force;
    options.jobs = args.jobs;
    options.registry = registry_poller(args, dir)?
        .current()
        .context("cannot resolve the registry models the recipes name")?;
    options.model_dirs = Config::load(&args.project)?.model_dirs;
    Ok(options)
}

fn watch_recipes(args: BuildArgs, dev: &candle_core::Device) -> Result<ExitCode> {
    use autonomy_pipeline::watch::{self, WatchEvent};
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;
    let on_event = |event: WatchEvent| match event {
        WatchEvent::Changed(paths) => {
            let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            eprintln!("changed: {}", names.join(", "));
        }
        WatchEvent::Build(Event::Started { asset }) => eprintln!("generating {asset}"),
        WatchEvent::Build(Event::Finished { asset, outcome }) => match outcome {
            Outcome::Built(seconds) => eprintln!("built {asset} in {seconds:.2} s"),
            Outcome::Restored => eprintln!("restored {asset} from the cache"),
            Outcome::UpToDate => {}
            Outcome::Failed(message) => eprintln!("error: {message}"),
        },
        WatchEvent::Built(report) => {
            for error in &report.recipe_errors {
                eprintln!("error: {error}");
            }
        }
        WatchEvent::Removed { asset, files } => {
            eprintln!("removed {asset} ({} files)", files.len())
        }
        WatchEvent::ModelsChanged(names) => {
            eprintln!("new active version of {}", names.join(", "))
        }
        WatchEvent::Error(message) => eprintln!("error: {message}"),
    };
    let mut watchers = Vec::new();
    for dir in recipe_dirs(&args)? {
        watchers.push((
            build_options(&args, &dir, dev)?,
            registry_poller(&args, &dir)?,
            dir,
        ));
    }
    // One watcher per folder, all stopped by one Ctrl-C.
    std::thread::scope(|scope| -> Result<()> {
        let running: Vec<_> = watchers
            .into_iter()
            .map(|(options, mut poller, dir)| {
                eprintln!("watching {} (Ctrl-C to stop)", dir.display());
                let (stop, on_event) = (&stop, &on_event);
                scope.spawn(move || {
                    watch::watch_with(&options, stop, on_event, Some(&mut poller))
                        .with_context(|| format!("cannot watch `{}`", dir.display()))
                })
            })
            .collect();
        for watcher in running {
            let result = watcher.join().map_err(|_| anyhow!("a watcher panicked"))?;
            if result.is_err() {
                stop.store(true, Ordering::SeqCst);
            }
            result?;
        }
        Ok(())
    })?;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn build_recipes(args: BuildArgs, dev: &candle_core::Device) -> Result<ExitCode> {
    let mut failed = false;
    for dir in recipe_dirs(&args)? {
        failed |= build_folder(&args, &dir, dev)?;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Builds one recipe folder and reports it; true when anything failed.
fn build_folder(args: &BuildArgs, dir: &Path, dev: &candle_core::Device) -> Result<bool> {
    let options = build_options(args, dir, dev)?;
    let bar = progress(0, "{spinner} {pos} done {elapsed} {msg}");
    let report = build::build(&options, &|event| match event {
        Event::Started { asset } => bar.set_message(format!("generating {asset}")),
        Event::Finished { asset, outcome } => {
            bar.inc(1);
            if let Outcome::Failed(message) = outcome {
                bar.suspend(|| eprintln!("error: {message}"));
            } else {
                bar.set_message(format!("{asset} done"));
            }
        }
    })
    .with_context(|| format!("cannot build `{}`", dir.display()))?;
    bar.finish_and_clear();
    for error in &report.recipe_errors {
        eprintln!("error: {error}");
    }
    if args.json {
        let assets: Vec<serde_json::Value> = report
            .assets
            .iter()
            .map(|asset| {
                let (state, detail) = match &asset.outcome {
                    Outcome::Built(s) => ("built", serde_json::json!(s)),
                    Outcome::Restored => ("restored", serde_json::Value::Null),
                    Outcome::UpToDate => ("up-to-date", serde_json::Value::Null),
                    Outcome::Failed(m) => ("failed", serde_json::json!(m)),
                };
                serde_json::json!({"asset": asset.label, "outcome": state, "detail": detail})
            })
            .collect();
        let errors: Vec<String> = report.recipe_errors.iter().map(|e| e.to_string()).collect();
        println!(
            "{}",
            serde_json::json!({"assets": assets, "recipe_errors": errors})
        );
    } else {
        let count = |probe: fn(&Outcome) -> bool| report.count(probe);
        println!(
            "{} built, {} restored from the cache, {} up to date, {} failed, {} recipe errors",
            count(|o| matches!(o, Outcome::Built(_))),
            count(|o| matches!(o, Outcome::Restored)),
            count(|o| matches!(o, Outcome::UpToDate)),
            count(|o| matches!(o, Outcome::Failed(_))),
            report.recipe_errors.len()
        );
    }
    Ok(report.failed())
}

fn build_dataset(args: DatasetArgs) -> Result<ExitCode> {
    let bar = progress(0, "{bar:40} {pos}/{len} images {elapsed}");
    let manifest = dataset::build(
        &BuildOptions {
            node_modules: args.node_modules.clone(),
            out_dir: args.out.clone(),
            size: args.size,
            seed: args.seed,
        },
        &|done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )
    .with_context(|| format!("cannot build the dataset into `{}`", args.out.display()))?;
    bar.finish();
    println!(
        "{} items, dataset hash {}\nmanifest: {}",
        manifest.items.len(),
        manifest.hash(),
        args.out.join("manifest.jsonl").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn train(args: TrainArgs, dev: &candle_core::Device) -> Result<ExitCode> {
    let config = match args.preset {
        Preset::Small => HouseConfig::small(0),
        Preset::Tiny => HouseConfig::tiny(0),
    };
    let size = match &args.from {
        Some(from) => HouseModel::load(from, dev)
            .with_context(|| format!("cannot load the base model `{}`", from.display()))?
            .image_size(),
        None if args.resume => {
            let config_path = args.out.join("config.json");
            let text = std::fs::read_to_string(&config_path)
                .with_context(|| format!("--resume: cannot read `{}`", config_path.display()))?;
            serde_json::from_str::<HouseConfig>(&text)
                .with_context(|| format!("--resume: `{}` is invalid", config_path.display()))?
                .image_size
        }
        None => config.image_size,
    };
    let data = TrainingSet::load(&args.data, size)
        .with_context(|| format!("cannot load training data `{}`", args.data.display()))?;
    eprintln!(
        "{} training images from {}",
        data.len(),
        args.data.display()
    );
    let mut trainer = if args.resume {
        Trainer::resume(data, &args.out, Some(args.steps), args.cooldown, dev)?
    } else {
        let mut options = TrainOptions {
            steps: args.steps,
            batch: args.batch,
            seed: args.seed,
            checkpoint_every: args.checkpoint_every,
            cooldown: args.cooldown.unwrap_or(0),
            ..TrainOptions::default()
        };
        options.adam.lr = args.lr;
        Trainer::new(data, config, args.from.as_deref(), options, &args.out, dev)?
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;
    let bar = progress(
        trainer.target_steps(),
        "{bar:40} {pos}/{len} steps {elapsed_precise} (eta {eta}) {msg}",
    );
    bar.set_position(trainer.step_count());
    trainer.run(&stop, |s| {
        bar.set_position(s.step);
        bar.set_message(format!(
            "loss {:.4} · {:.1} images/s",
            s.loss, s.images_per_second
        ));
    })?;
    bar.finish();
    if stop.load(Ordering::SeqCst) {
        eprintln!(
            "interrupted at step {}: checkpoint saved in `{}`; continue with --resume",
            trainer.step_count(),
            args.out.display()
        );
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    println!("model written to {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn bench(args: BenchArgs, dev: &candle_core::Device) -> Result<ExitCode> {
    use autonomy_pipeline::bench::{self, BenchOptions};
    let mut options = if args.quick {
        BenchOptions::quick(args.model.clone(), args.data.clone())
    } else {
        BenchOptions::standard(args.model.clone(), args.data.clone())
    };
    if let Some(seeds) = args.seeds {
        options.seeds = seeds;
    }
    let bar = progress(
        0,
        "{spinner} {msg:32} {bar:30} {pos}/{len} {elapsed_precise}",
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    let report = bench::run(&options, dev, &mut |phase, done, total| {
        bar.set_message(phase.label());
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("cannot benchmark `{}`", args.model.display()))?;
    bar.finish_and_clear();
    println!("{}", report.to_markdown());
    let written = bench::write_outputs(&report, &args.model, &args.docs)
        .context("cannot write the benchmark results")?;
    for path in written {
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_arguments_read_one_scale_or_a1111_s_two_from_the_right() {
        let arg = |text: &str| {
            let file = lora_arg(text).unwrap();
            assert_eq!(file.label, file.path.display().to_string());
            (file.path, file.scale, file.text_scale)
        };
        assert_eq!(arg("a.safetensors"), ("a.safetensors".into(), 1.0, None));
        assert_eq!(
            arg("a.safetensors:0.7"),
            ("a.safetensors".into(), 0.7, None)
        );
        assert_eq!(
            arg("a.safetensors:0.3:0.7"),
            ("a.safetensors".into(), 0.7, Some(0.3)),
            "the text encoder's scale, then the UNet's"
        );
        assert_eq!(
            arg("a.safetensors:0.5:0.5"),
            ("a.safetensors".into(), 0.5, None)
        );
        // Colons in the path stay in the path.
        assert_eq!(
            arg(r"C:\loras\a.pt:0.5"),
            (r"C:\loras\a.pt".into(), 0.5, None)
        );
        assert_eq!(arg("C:a.pt"), ("C:a.pt".into(), 1.0, None));
        assert_eq!(arg("x:y:0.2:0.4"), ("x:y".into(), 0.4, Some(0.2)));
        // A1111's named items, after the scales.
        let cut = lora_arg("a.safetensors:0.8:dyn=16:lbw=OUTD").unwrap();
        assert_eq!(
            (cut.path.to_str(), cut.scale, cut.rank),
            (Some("a.safetensors"), 0.8, Some(16))
        );
        assert_eq!(cut.blocks, Some(BlockWeights::parse("OUTD").unwrap()));
        let listed = lora_arg("a.safetensors:lbw=1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1").unwrap();
        assert_eq!((listed.scale, listed.rank), (1.0, None));
        assert!(listed.blocks.is_some());
        for (bad, says) in [
            ("a.safetensors:dyn=0", "`dyn=0` is no whole number above 0"),
            ("a.safetensors:lbw=NOPE", "NOPE"),
            (
                "a.safetensors:stop=10",
                "`stop=` is not one of `--lora`'s items",
            ),
        ] {
            let err = lora_arg(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err = lora_arg("a.safetensors:0.5:9").unwrap_err();
        assert!(err.contains("the scale 9 is not within −4 to 4"), "{err}");
    }
}
