//! The model card (`MODEL.md`) every trained model folder carries: what it was trained on,
//! under which licences, how, and how well.
//!
//! The benchmark section (between [`BENCH_START`] and [`BENCH_END`]) is written by
//! `autonomy bench` and kept when training rewrites the rest.

use super::TrainOptions;
use crate::dataset::Manifest;
use crate::models::house::HouseConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Start marker of the benchmark section.
pub const BENCH_START: &str = "<!-- bench:start -->";
/// End marker of the benchmark section.
pub const BENCH_END: &str = "<!-- bench:end -->";

/// The model a fine-tune started from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaseModel {
    /// Folder it was loaded from.
    pub path: String,
    /// Its version (weights sha256).
    pub version: String,
}

/// What the card reports about a training run.
pub struct TrainingSummary<'a> {
    /// Architecture.
    pub config: &'a HouseConfig,
    /// Settings.
    pub options: &'a TrainOptions,
    /// The training examples.
    pub manifest: &'a Manifest,
    /// Where they were loaded from (manifest or folder).
    pub data: &'a std::path::Path,
    /// The base model of a fine-tune.
    pub base: Option<&'a BaseModel>,
    /// Steps done.
    pub steps: u64,
    /// Training wall time, all sessions together.
    pub seconds: f64,
    /// Throughput of the last step.
    pub images_per_second: f64,
    /// Where it trained last ([`crate::device::name`]: `cpu (x86-64-v4, caches …)`, `cuda:0`).
    pub device: String,
    /// Mean loss per 50 steps.
    pub loss_log: &'a [(u64, f32)],
    /// Trainable parameters.
    pub parameters: usize,
}

/// Renders the card, keeping the benchmark section of `previous` if it has one.
pub fn render(s: &TrainingSummary, previous: &str) -> String {
    let mut out = String::new();
    let c = s.config;
    let o = s.options;
    let _ = writeln!(out, "# House model\n");
    let _ = writeln!(
        out,
        "A {}×{} RGBA text-to-sprite diffusion model (DiT, {} blocks × {} wide, {} heads, patch {}; \
         text encoder {} blocks × {}; {:.2} M parameters), trained by Autonomy with flow matching.\n",
        c.image_size,
        c.image_size,
        c.depth,
        c.dim,
        c.heads,
        c.patch,
        c.text_depth,
        c.text_dim,
        s.parameters as f64 / 1e6
    );
    let _ = writeln!(out, "## Data\n");
    let _ = writeln!(
        out,
        "{} training images; dataset hash `{}` (sha256 of `dataset.jsonl`, which lists every item \
         with its source, licence and attribution).\n",
        s.manifest.items.len(),
        s.manifest.hash()
    );
    let _ = writeln!(
        out,
        "| source | licence | items | attribution |\n| --- | --- | --- | --- |"
    );
    let mut sources: BTreeMap<(&str, &str), (usize, &str)> = BTreeMap::new();
    for item in &s.manifest.items {
        let entry = sources
            .entry((item.source.as_str(), item.license.as_str()))
            .or_insert((0, item.attribution.as_str()));
        entry.0 += 1;
    }
    for ((source, licence), (count, attribution)) in &sources {
        let _ = writeln!(out, "| {source} | {licence} | {count} | {attribution} |");
    }
    let _ = writeln!(out, "\n## Training\n");
    if let Some(base) = s.base {
        let _ = writeln!(
            out,
            "Fine-tuned from `{}` (version `{}`).\n",
            base.path, base.version
        );
    }
    let _ = writeln!(
        out,
        "- steps: {} × batch {} = {} images seen\n- wall time: {:.1} min, last on {} \
         ({:.1} images/s at the last step)\n- AdamW lr {} (warm-up {} steps, then constant{}), \
         betas ({}, {}), weight decay {}; EMA {}; caption dropout {}; seed {}",
        s.steps,
        o.batch,
        s.steps * o.batch as u64,
        s.seconds / 60.0,
        s.device,
        s.images_per_second,
        o.adam.lr,
        o.warmup,
        cooldown_words(o.cooldown),
        o.adam.beta1,
        o.adam.beta2,
        o.adam.weight_decay,
        o.ema_decay,
        o.caption_dropout,
        o.seed
    );
    let from = s
        .base
        .map(|b| format!(" --from {}", b.path))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "\nTo reproduce (a run stopped with Ctrl-C and continued with `--resume` ends bit-identical \
         to an uninterrupted one):\n\n```sh\nautonomy train --data {} --out <dir>{from} \
         --steps {} --batch {} --lr {}{} --seed {}\n```",
        s.data.display(),
        s.steps,
        o.batch,
        o.adam.lr,
        cooldown_flag(o.cooldown),
        o.seed
    );
    if !s.loss_log.is_empty() {
        let _ = writeln!(out, "\nLoss (mean of 50 steps), sampled:\n");
        let stride = (s.loss_log.len() / 10).max(1);
        let _ = writeln!(out, "| step | loss |\n| --- | --- |");
        let last = s.loss_log.len() - 1;
        for (i, (step, loss)) in s.loss_log.iter().enumerate() {
            if i % stride == 0 || i == last {
                let _ = writeln!(out, "| {step} | {loss:.4} |");
            }
        }
    }
    let _ = writeln!(out, "\n## Benchmarks\n");
    out.push_str(&bench_section(previous));
    out
}

/// The benchmark section of a card (markers included), or an empty pair of markers.
pub fn bench_section(card: &str) -> String {
    match (card.find(BENCH_START), card.find(BENCH_END)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}\n", &card[start..end + BENCH_END.len()])
        }
        _ => format!("{BENCH_START}\nNot measured yet: run `autonomy bench`.\n{BENCH_END}\n"),
    }
}

/// Replaces the benchmark section of `card` with `body`.
pub fn with_bench(card: &str, body: &str) -> String {
    let section = format!("{BENCH_START}\n{}\n{BENCH_END}", body.trim_end());
    match (card.find(BENCH_START), card.find(BENCH_END)) {
        (Some(start), Some(end)) if end > start => format!(
            "{}{}{}",
            &card[..start],
            section,
            &card[end + BENCH_END.len()..]
        ),
        _ => format!("{}\n## Benchmarks\n\n{section}\n", card.trim_end()),
    }
}

/// How the card's settings line names the cool-down.
fn cooldown_words(cooldown: u64) -> String {
    match cooldown {
        0 => String::new(),
        n => format!(", decayed linearly to zero over the last {n} steps"),
    }
}

/// The cool-down flag of the card's reproduce command.
fn cooldown_flag(cooldown: u64) -> String {
    match cooldown {
        0 => String::new(),
        n => format!(" --cooldown {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_section_survives_a_rewrite() {
        let card = with_bench("# Card\n\n## Benchmarks\n\n", "| metric | value |");
        assert!(bench_section(&card).contains("| metric | value |"));
        let replaced = with_bench(&card, "new table");
        assert!(replaced.contains("new table") && !replaced.contains("| metric"));
        assert!(bench_section("no markers").contains("Not measured yet"));
    }
}
