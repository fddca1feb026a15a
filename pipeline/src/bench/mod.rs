//! How we judge the house model: benchmarks, not timed tests.
//!
//! ```text
//! model folder ─► speed: one sprite, 16 sprites, peak RSS, training throughput
//! manifest ─► real images ─► classifier (its own network, real images only, seeded)
//!                                  │
//! held-out captions ─► generator ─► generated images ─► accuracy, KID, spread, nearest copy
//! sheet prompts ─► generator ─► contact sheet
//! ```
//!
//! Design values: the judge is **independent** of what it judges (no shared weights, trained
//! only on real images), the prompts are **unseen** (the held-out split: a known concept in a
//! style it was never trained with, and texture variants never shown), every number comes with
//! the **real-image baseline** it should be read against, and the whole run is **seeded**. It
//! refuses to report a fidelity score on fewer than 20 held-out prompts (outside quick mode).
//!
//! ```no_run
//! use autonomy_pipeline::bench::{self, BenchOptions};
//! let options = BenchOptions::standard(
//!     "models/house".into(),
//!     ".autonomy/dataset/manifest.jsonl".into(),
//! );
//! let report = bench::run(&options, &candle_core::Device::Cpu, &mut |_, _, _| {})?;
//! println!("{}", report.to_markdown());
//! bench::write_outputs(&report, &options.model_dir, "docs".as_ref())?;
//! # Ok::<(), autonomy_pipeline::bench::BenchError>(())
//! ```

pub mod augment;
pub mod classifier;
pub mod data;
mod error;
pub mod metrics;
pub mod report;
pub mod sheet;
pub mod speed;

pub use classifier::{Classifier, ClassifierConfig};
pub use data::BenchData;
pub use error::BenchError;
pub use report::BenchReport;

use crate::atomic;
use crate::generator::GenerateRequest;
use crate::models::house::{HouseModel, files, pixels};
use crate::train::card;
use candle_core::Device;
use data::ClassKind;
use report::{FidelityRow, KidRow, PromptResult};
use speed::SpeedReport;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Benchmark file written under the docs folder.
pub const DOCS_REPORT: &str = "house-bench.md";
/// Contact sheet written under the docs folder.
pub const DOCS_SHEET: &str = "house-contact-sheet.png";
/// Contact sheet cells are upscaled this many times.
pub const SHEET_SCALE: u32 = 4;

/// What the bench runs on and how much work it does.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchOptions {
    /// The model folder to judge.
    pub model_dir: PathBuf,
    /// The dataset manifest (with its held-out split).
    pub manifest: PathBuf,
    /// Seeds per held-out prompt.
    pub seeds: usize,
    /// Sampler steps of every generated image.
    pub sampler_steps: usize,
    /// Guidance scale of every generated image.
    pub guidance: f64,
    /// The judge's size and schedule.
    pub classifier: ClassifierConfig,
    /// Timed single-sprite generations (after a warm-up).
    pub single_runs: usize,
    /// Timed 16-sprite generations (after a warm-up).
    pub batch16_runs: usize,
    /// Training steps to time when the model folder has no checkpoint to read throughput from.
    pub train_steps: usize,
    /// Their batch size.
    pub train_batch: usize,
    /// Contact sheet rows (prompts).
    pub sheet_rows: usize,
    /// Contact sheet columns (seeds).
    pub sheet_seeds: usize,
    /// Fewest held-out prompts a fidelity score may rest on.
    pub min_prompts: usize,
    /// Quick mode: said in the report.
    pub quick: bool,
}

impl BenchOptions {
    /// The real bench: 4 seeds per held-out prompt, 20 steps, default guidance.
    pub fn standard(model_dir: PathBuf, manifest: PathBuf) -> Self {
        Self {
            model_dir,
            manifest,
            seeds: 4,
            sampler_steps: 20,
            guidance: GenerateRequest::default().guidance,
            classifier: ClassifierConfig::standard(),
            single_runs: 5,
            batch16_runs: 3,
            train_steps: 3,
            train_batch: crate::train::TrainOptions::default().batch,
            sheet_rows: 8,
            sheet_seeds: 4,
            min_prompts: 20,
            quick: false,
        }
    }

    /// Everything tiny, for tests and smoke runs.
    pub fn quick(model_dir: PathBuf, manifest: PathBuf) -> Self {
        Self {
            seeds: 2,
            classifier: ClassifierConfig::quick(),
            single_runs: 1,
            batch16_runs: 1,
            train_batch: 8,
            min_prompts: 1,
            quick: true,
            ..Self::standard(model_dir, manifest)
        }
    }
}

/// The long parts of a run, reported to the progress callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Timing generation and training.
    Speed,
    /// Loading the dataset's images.
    Data,
    /// Training the classifier.
    Classifier,
    /// Generating images for the held-out prompts.
    Generate,
    /// Scoring and distances.
    Measure,
    /// Generating the contact sheet.
    Sheet,
}

impl Phase {
    /// A short label for progress displays.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Speed => "timing generation",
            Phase::Data => "loading the dataset",
            Phase::Classifier => "training the classifier",
            Phase::Generate => "generating held-out prompts",
            Phase::Measure => "measuring",
            Phase::Sheet => "drawing the contact sheet",
        }
    }
}

/// Runs the whole bench; `progress(phase, done, total)` is called as work completes.
pub fn run(
    options: &BenchOptions,
    device: &Device,
    progress: &mut dyn FnMut(Phase, usize, usize),
) -> Result<BenchReport, BenchError> {
    if options.seeds == 0 || options.sampler_steps == 0 {
        return Err(BenchError::Options(
            "seeds and sampler steps must be at least 1".into(),
        ));
    }
    let started = Instant::now();
    let load_average = speed::load_average();
    let model = HouseModel::load(&options.model_dir, device)?;
    let size = model.image_size();

    let speed = measure_speed(&model, options, device, load_average, progress)?;
    let model_step = match &speed.train_source {
        Some(speed::ThroughputSource::Checkpoint { step, .. }) => Some(*step),
        _ => None,
    };

    progress(Phase::Data, 0, 1);
    let data = BenchData::load(&options.manifest, size)?;
    progress(Phase::Data, 1, 1);
    if data.prompts.len() < options.min_prompts {
        return Err(BenchError::NotEnoughData {
            path: options.manifest.clone(),
            message: format!(
                "{} held-out prompts; a fidelity score needs at least {}",
                data.prompts.len(),
                options.min_prompts
            ),
        });
    }

    let (judge, classifier_stats) = Classifier::train(
        &data.train,
        &data.classes,
        size,
        &options.classifier,
        device,
        &mut |done, total| progress(Phase::Classifier, done, total),
    )?;

    let mut generated: Vec<Vec<Vec<f32>>> = Vec::with_capacity(data.prompts.len());
    for (i, prompt) in data.prompts.iter().enumerate() {
        progress(Phase::Generate, i, data.prompts.len());
        let images = model.generate(&GenerateRequest {
            prompt: prompt.caption.clone(),
            seed: 0,
            steps: options.sampler_steps,
            guidance: options.guidance,
            count: options.seeds,
            ..Default::default()
        })?;
        generated.push(images.iter().map(pixels::to_values).collect());
    }
    progress(Phase::Generate, data.prompts.len(), data.prompts.len());

    let measured = measure(&data, &generated, &judge, device, progress)?;

    let sheet_prompts = sheet::choose_prompts(
        |p| model.tokenizer.unknown_words(p).is_empty(),
        data.prompts.iter().map(|p| p.caption.as_str()),
        options.sheet_rows,
    );
    let mut rows = Vec::with_capacity(sheet_prompts.len());
    for (i, prompt) in sheet_prompts.iter().enumerate() {
        progress(Phase::Sheet, i, sheet_prompts.len());
        rows.push(model.generate(&GenerateRequest {
            prompt: prompt.clone(),
            seed: 0,
            steps: options.sampler_steps,
            guidance: options.guidance,
            count: options.sheet_seeds.max(1),
            ..Default::default()
        })?);
    }
    progress(Phase::Sheet, sheet_prompts.len(), sheet_prompts.len());

    let count = |kind| data.classes.iter().filter(|c| c.kind == kind).count();
    Ok(BenchReport {
        model_version: model.version().to_string(),
        model_step,
        quick: options.quick,
        seeds: options.seeds,
        sampler_steps: options.sampler_steps,
        guidance: options.guidance,
        concept_classes: count(ClassKind::Concept),
        texture_classes: count(ClassKind::Texture),
        classifier_images: data.train.len(),
        classifier: classifier_stats,
        fidelity: measured.fidelity,
        kid: measured.kid,
        spread_generated: measured.spread_generated,
        spread_real: measured.spread_real,
        nearest_generated: metrics::mean(&measured.nearest_generated),
        nearest_real: metrics::mean(&measured.nearest_real),
        nearest_generated_min: measured.nearest_generated.iter().copied().reduce(f64::min),
        nearest_real_min: measured.nearest_real.iter().copied().reduce(f64::min),
        pixel_values: 4 * size * size,
        prompts: measured.prompts,
        speed,
        sheet: sheet::contact_sheet(&rows, SHEET_SCALE),
        sheet_prompts,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn measure_speed(
    model: &HouseModel,
    options: &BenchOptions,
    device: &Device,
    load_average: Option<f64>,
    progress: &mut dyn FnMut(Phase, usize, usize),
) -> Result<SpeedReport, BenchError> {
    let prompt = sheet::SHEET_PROMPTS
        .into_iter()
        .find(|p| model.tokenizer.unknown_words(p).is_empty())
        .unwrap_or(sheet::SHEET_PROMPTS[0]);
    let (steps, guidance) = (options.sampler_steps, options.guidance);
    progress(Phase::Speed, 0, 3);
    let single_s = speed::time_generation(model, prompt, 1, steps, guidance, options.single_runs)?;
    progress(Phase::Speed, 1, 3);
    let batch16_s =
        speed::time_generation(model, prompt, 16, steps, guidance, options.batch16_runs)?;
    progress(Phase::Speed, 2, 3);
    // Before the bench loads its own data, so that this is the generator's footprint.
    let peak_rss = speed::peak_rss();
    let throughput = match speed::checkpoint_throughput(&options.model_dir, model.version()) {
        Some(found) => found,
        None => speed::measure_training(
            &options.manifest,
            &model.config,
            options.train_batch,
            options.train_steps,
            device,
        )?,
    };
    progress(Phase::Speed, 3, 3);
    Ok(SpeedReport {
        sampler_steps: steps,
        guidance,
        single_s,
        single_runs: options.single_runs.max(1),
        batch16_s,
        batch16_runs: options.batch16_runs.max(1),
        peak_rss,
        train_images_per_s: Some(throughput.0),
        train_source: Some(throughput.1),
        profile: speed::profile(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average,
    })
}

struct Measured {
    fidelity: Vec<FidelityRow>,
    kid: Vec<KidRow>,
    spread_generated: Option<f64>,
    spread_real: Option<f64>,
    nearest_generated: Vec<f64>,
    nearest_real: Vec<f64>,
    prompts: Vec<PromptResult>,
}

fn measure(
    data: &BenchData,
    generated: &[Vec<Vec<f32>>],
    judge: &Classifier,
    device: &Device,
    progress: &mut dyn FnMut(Phase, usize, usize),
) -> Result<Measured, BenchError> {
    progress(Phase::Measure, 0, 3);
    let kind_of = |class: usize| data.classes[class].kind;
    let name_of = |class: usize| {
        data.classes
            .get(class)
            .map_or_else(|| "?".to_string(), |c| c.name.clone())
    };
    let heldout_values: Vec<Vec<f32>> = data.heldout.iter().map(|e| e.values.clone()).collect();
    let train_values: Vec<Vec<f32>> = data.train.iter().map(|e| e.values.clone()).collect();
    let real_predicted = judge.predict(&heldout_values)?;
    let real_features = judge.embed(&heldout_values)?;
    let train_features = judge.embed(&train_values)?;
    let flat_generated: Vec<Vec<f32>> = generated.iter().flatten().cloned().collect();
    let generated_predicted = judge.predict(&flat_generated)?;
    let generated_features = judge.embed(&flat_generated)?;
    progress(Phase::Measure, 1, 3);

    // Per prompt: predictions and spread across seeds, against its real references' spread.
    let mut prompts = Vec::with_capacity(data.prompts.len());
    let (mut spreads_generated, mut spreads_real) = (Vec::new(), Vec::new());
    let mut offset = 0;
    for (prompt, images) in data.prompts.iter().zip(generated) {
        let range = offset..offset + images.len();
        offset += images.len();
        let features: Vec<&[f32]> = generated_features[range.clone()]
            .iter()
            .map(Vec::as_slice)
            .collect();
        let spread = metrics::mean_pairwise_distance(&features);
        let references: Vec<&[f32]> = data
            .real_references(prompt)
            .into_iter()
            .filter_map(|e| feature_of(data, e, &train_features, &real_features))
            .collect();
        if let (Some(g), Some(r)) = (spread, metrics::mean_pairwise_distance(&references)) {
            spreads_generated.push(g);
            spreads_real.push(r);
        }
        prompts.push(PromptResult {
            caption: prompt.caption.clone(),
            class: name_of(prompt.class),
            predicted: generated_predicted[range]
                .iter()
                .map(|&c| name_of(c))
                .collect(),
            spread,
        });
    }

    // Accuracy and KID, overall and per kind.
    let groups: [(&str, Option<ClassKind>); 3] = [
        ("all", None),
        ("sprites", Some(ClassKind::Concept)),
        ("textures", Some(ClassKind::Texture)),
    ];
    let mut fidelity = Vec::new();
    let mut kid = Vec::new();
    for (group, kind) in groups {
        let in_group = |class: usize| kind.is_none_or(|k| kind_of(class) == k);
        let mut row = FidelityRow {
            group: group.to_string(),
            prompts: 0,
            generated: 0,
            generated_correct: 0,
            real: 0,
            real_correct: 0,
        };
        let mut gen_features = Vec::new();
        let mut offset = 0;
        for (prompt, images) in data.prompts.iter().zip(generated) {
            let range = offset..offset + images.len();
            offset += images.len();
            if !in_group(prompt.class) {
                continue;
            }
            row.prompts += 1;
            row.generated += images.len();
            row.generated_correct += generated_predicted[range.clone()]
                .iter()
                .filter(|&&c| c == prompt.class)
                .count();
            gen_features.extend(generated_features[range].iter().cloned());
        }
        let mut real_group = Vec::new();
        for ((example, predicted), features) in
            data.heldout.iter().zip(&real_predicted).zip(&real_features)
        {
            if in_group(example.class) {
                row.real += 1;
                row.real_correct += usize::from(*predicted == example.class);
                real_group.push(features.clone());
            }
        }
        if row.prompts == 0 && kind.is_some() {
            continue;
        }
        fidelity.push(row);
        if kind.is_some() {
            let train_group: Vec<Vec<f32>> = data
                .train
                .iter()
                .zip(&train_features)
                .filter(|(e, _)| in_group(e.class))
                .map(|(_, f)| f.clone())
                .collect();
            kid.push(KidRow {
                group: group.to_string(),
                generated: metrics::kid(&gen_features, &real_group),
                reference: metrics::kid(&train_group, &real_group),
            });
        }
    }
    progress(Phase::Measure, 2, 3);

    // Pixel distances in premultiplied [0, 1] units: half the model's [-1, 1] distances.
    let nearest = |queries: &[Vec<f32>]| -> Result<Vec<f64>, BenchError> {
        Ok(
            metrics::nearest_distances(queries, &data.training_pixels, device)?
                .into_iter()
                .map(|d| d / 2.0)
                .collect(),
        )
    };
    let nearest_generated = nearest(&flat_generated)?;
    let nearest_real = nearest(&heldout_values)?;
    progress(Phase::Measure, 3, 3);
    Ok(Measured {
        fidelity,
        kid,
        spread_generated: metrics::mean(&spreads_generated),
        spread_real: metrics::mean(&spreads_real),
        nearest_generated,
        nearest_real,
        prompts,
    })
}

/// The features of a real example, found by identity in the train or held-out list.
fn feature_of<'a>(
    data: &BenchData,
    example: &data::Example,
    train_features: &'a [Vec<f32>],
    real_features: &'a [Vec<f32>],
) -> Option<&'a [f32]> {
    let find = |list: &[data::Example]| list.iter().position(|e| std::ptr::eq(e, example));
    find(&data.train)
        .map(|i| train_features[i].as_slice())
        .or_else(|| find(&data.heldout).map(|i| real_features[i].as_slice()))
}

/// Writes the report: the benchmark section of `model_dir/MODEL.md`, `docs_dir/house-bench.md`
/// and `docs_dir/house-contact-sheet.png`, each atomically. Returns the paths written.
pub fn write_outputs(
    report: &BenchReport,
    model_dir: &Path,
    docs_dir: &Path,
) -> Result<Vec<PathBuf>, BenchError> {
    let write = |path: PathBuf, bytes: &[u8]| {
        atomic::write(&path, bytes).map_err(|source| BenchError::Write {
            path: path.clone(),
            source,
        })?;
        Ok::<PathBuf, BenchError>(path)
    };
    let table = report.to_markdown();

    let card_path = model_dir.join(files::CARD);
    let card = match std::fs::read_to_string(&card_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(BenchError::Read {
                path: card_path,
                source,
            });
        }
    };
    let card = card::with_bench(
        &card,
        &format!("{table}\nContact sheet and per-prompt results: `docs/{DOCS_REPORT}`."),
    );

    let mut sheet_png = Vec::new();
    report
        .sheet
        .write_to(
            &mut std::io::Cursor::new(&mut sheet_png),
            image::ImageFormat::Png,
        )
        .map_err(|source| BenchError::Image {
            path: docs_dir.join(DOCS_SHEET),
            source,
        })?;
    let rows: String = report
        .sheet_prompts
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}. {p}\n", i + 1))
        .collect();
    let side = ((report.pixel_values / 4) as f64).sqrt().round() as usize;
    let doc = format!(
        "# House model benchmark\n\nWritten by `autonomy bench`; the same tables are in the \
         model folder's `MODEL.md`.\n\n{table}\n## Contact sheet\n\n![contact sheet]({DOCS_SHEET})\n\n\
         One row per prompt, one column per seed (0, 1, …), each {side}×{side} image drawn ×{SHEET_SCALE} \
         on a checkerboard so that transparency shows. Rows, top to bottom:\n\n{rows}\n\
         ## Per held-out prompt\n\n{}",
        report.details_markdown()
    );
    Ok(vec![
        write(card_path, card.as_bytes())?,
        write(docs_dir.join(DOCS_REPORT), doc.as_bytes())?,
        write(docs_dir.join(DOCS_SHEET), &sheet_png)?,
    ])
}
