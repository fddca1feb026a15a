//! The bench's results and their markdown rendering (the model card's benchmark section and
//! `docs/house-bench.md`).

use super::classifier::TrainStats;
use super::speed::{
    SpeedReport, TARGET_BATCH16_S, TARGET_PEAK_RSS, TARGET_SINGLE_S, ThroughputSource,
};
use image::RgbaImage;
use std::fmt::Write;

/// Goal for generated accuracy over real accuracy.
pub const FIDELITY_GOAL: f64 = 0.8;

/// Classifier accuracy on one group of held-out prompts.
#[derive(Clone, Debug, PartialEq)]
pub struct FidelityRow {
    /// `all`, `sprites` or `textures`.
    pub group: String,
    /// Held-out prompts in the group.
    pub prompts: usize,
    /// Generated images scored.
    pub generated: usize,
    /// Of which the classifier put in the prompt's class.
    pub generated_correct: usize,
    /// Held-out real images scored.
    pub real: usize,
    /// Of which the classifier got right.
    pub real_correct: usize,
}

impl FidelityRow {
    /// Share of generated images classified as their prompt's class.
    pub fn generated_accuracy(&self) -> f64 {
        ratio(self.generated_correct as f64, self.generated as f64)
    }

    /// Share of held-out real images classified correctly.
    pub fn real_accuracy(&self) -> f64 {
        ratio(self.real_correct as f64, self.real as f64)
    }

    /// Generated accuracy over real accuracy (goal ≥ [`FIDELITY_GOAL`]).
    pub fn ratio(&self) -> f64 {
        ratio(self.generated_accuracy(), self.real_accuracy())
    }
}

/// KID of one group of prompts, with a real-vs-real reference for scale.
#[derive(Clone, Debug, PartialEq)]
pub struct KidRow {
    /// `sprites` or `textures`.
    pub group: String,
    /// KID(generated, held-out real).
    pub generated: Option<f64>,
    /// KID(train-split real images of the same classes, held-out real): how far apart two
    /// real samples of the group already are.
    pub reference: Option<f64>,
}

/// What the classifier decided for one held-out prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptResult {
    /// The caption.
    pub caption: String,
    /// Its class name.
    pub class: String,
    /// Predicted class name per seed.
    pub predicted: Vec<String>,
    /// Mean pairwise feature distance across its seeds.
    pub spread: Option<f64>,
}

/// Everything `autonomy bench` measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// The model version (sha256 of its weights).
    pub model_version: String,
    /// Training steps of the checkpoint next to the weights, if known.
    pub model_step: Option<u64>,
    /// Whether the bench ran in quick mode (tiny settings; numbers not meaningful).
    pub quick: bool,
    /// Seeds per prompt.
    pub seeds: usize,
    /// Sampler steps per image.
    pub sampler_steps: usize,
    /// Guidance scale.
    pub guidance: f64,
    /// Held-out concepts among the classes.
    pub concept_classes: usize,
    /// Texture materials among the classes.
    pub texture_classes: usize,
    /// Real images the classifier learned from.
    pub classifier_images: usize,
    /// How its training went.
    pub classifier: TrainStats,
    /// Accuracy: all prompts, then per group.
    pub fidelity: Vec<FidelityRow>,
    /// KID per group.
    pub kid: Vec<KidRow>,
    /// Mean over prompts of the mean pairwise feature distance across seeds.
    pub spread_generated: Option<f64>,
    /// The same over each prompt's real references.
    pub spread_real: Option<f64>,
    /// Mean nearest-training-image pixel distance of the generated images.
    pub nearest_generated: Option<f64>,
    /// The same for the held-out real images.
    pub nearest_real: Option<f64>,
    /// Smallest nearest-training-image distance of any generated image.
    pub nearest_generated_min: Option<f64>,
    /// Smallest nearest-training-image distance of any held-out real image.
    pub nearest_real_min: Option<f64>,
    /// Values per image in the pixel distances.
    pub pixel_values: usize,
    /// Per-prompt results, in prompt order.
    pub prompts: Vec<PromptResult>,
    /// Speed and memory.
    pub speed: SpeedReport,
    /// Contact sheet rows, top to bottom.
    pub sheet_prompts: Vec<String>,
    /// The contact sheet.
    pub sheet: RgbaImage,
    /// Wall time of the whole bench, in seconds.
    pub seconds: f64,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value
        .filter(|v| v.is_finite())
        .map_or("—".into(), |v| format!("{v:.digits$}"))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

impl BenchReport {
    /// The benchmark tables, as written into `MODEL.md` between the bench markers.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let short = self.model_version.get(..12).unwrap_or(&self.model_version);
        let step = self
            .model_step
            .map_or(String::new(), |s| format!(" at training step {s}"));
        let _ = writeln!(
            out,
            "Model `{short}`{step}; measured by `autonomy bench` in {:.0} s: {} seeds per prompt, \
             {} sampler steps, guidance {}.\n",
            self.seconds, self.seeds, self.sampler_steps, self.guidance
        );
        if self.quick {
            let _ = writeln!(
                out,
                "**Quick mode**: tiny classifier and few runs, for tests; the numbers below are \
                 not meaningful.\n"
            );
        }

        let _ = writeln!(out, "### Prompt fidelity\n");
        let _ = writeln!(
            out,
            "An independent classifier ({} classes: {} held-out concepts + {} texture materials) \
             trained by the bench on {} real images only ({} steps, {:.0} s; training accuracy \
             {:.2} at the end) scores held-out real images and images generated for the \
             held-out captions, which the generator never saw.\n",
            self.concept_classes + self.texture_classes,
            self.concept_classes,
            self.texture_classes,
            self.classifier_images,
            self.classifier.steps,
            self.classifier.seconds,
            self.classifier.final_train_accuracy
        );
        let _ = writeln!(
            out,
            "| held-out prompts | real accuracy | generated accuracy | generated / real (goal ≥ {FIDELITY_GOAL}) |\n\
             | --- | --- | --- | --- |"
        );
        for row in &self.fidelity {
            let r = row.ratio();
            let _ = writeln!(
                out,
                "| {}: {} prompts; {} generated, {} real | {} ({}/{}) | {} ({}/{}) | {} {} |",
                row.group,
                row.prompts,
                row.generated,
                row.real,
                opt(Some(row.real_accuracy()), 3),
                row.real_correct,
                row.real,
                opt(Some(row.generated_accuracy()), 3),
                row.generated_correct,
                row.generated,
                opt(Some(r), 2),
                if r.is_finite() {
                    verdict(r >= FIDELITY_GOAL)
                } else {
                    ""
                }
            );
        }

        let _ = writeln!(out, "\n### Quality and diversity\n");
        let _ = writeln!(
            out,
            "KID (×10³, unbiased, cubic polynomial kernel) in the classifier's feature space; the \
             reference is KID between train-split and held-out real images of the same classes. \
             Spread: mean pairwise feature distance across seeds of a prompt, against the real \
             images of the same caption (textures) or class (concepts); far below 1 means mode \
             collapse. Nearest: pixel L2 distance to the closest training image (premultiplied \
             RGBA in [0, 1], {} values); far below the held-out real images' means copies.\n",
            self.pixel_values
        );
        let _ = writeln!(
            out,
            "| metric | generated | real | generated / real |\n| --- | --- | --- | --- |"
        );
        for row in &self.kid {
            let _ = writeln!(
                out,
                "| KID ×10³, {} | {} | {} (reference) | {} |",
                row.group,
                opt(row.generated.map(|k| k * 1e3), 2),
                opt(row.reference.map(|k| k * 1e3), 2),
                // An unbiased KID near zero may be negative: a ratio to it means nothing.
                opt(
                    row.generated
                        .zip(row.reference.filter(|r| *r > 0.0))
                        .map(|(g, r)| ratio(g, r)),
                    2
                )
            );
        }
        let _ = writeln!(
            out,
            "| spread across seeds (feature distance) | {} | {} | {} |",
            opt(self.spread_generated, 3),
            opt(self.spread_real, 3),
            opt(
                self.spread_generated
                    .zip(self.spread_real)
                    .map(|(g, r)| ratio(g, r)),
                2
            )
        );
        let _ = writeln!(
            out,
            "| nearest training image, mean pixel L2 | {} | {} | {} |",
            opt(self.nearest_generated, 2),
            opt(self.nearest_real, 2),
            opt(
                self.nearest_generated
                    .zip(self.nearest_real)
                    .map(|(g, r)| ratio(g, r)),
                2
            )
        );
        let _ = writeln!(
            out,
            "| nearest training image, smallest | {} | {} | |",
            opt(self.nearest_generated_min, 2),
            opt(self.nearest_real_min, 2)
        );

        let s = &self.speed;
        let _ = writeln!(out, "\n### Speed and memory on this machine\n");
        let _ = writeln!(
            out,
            "| metric | measured | target | measured / target |\n| --- | --- | --- | --- |"
        );
        let _ = writeln!(
            out,
            "| one sprite, {} steps, guidance {} (median of {}) | {:.3} s | {TARGET_SINGLE_S} s | {:.2} {} |",
            s.sampler_steps,
            s.guidance,
            s.single_runs,
            s.single_s,
            s.single_s / TARGET_SINGLE_S,
            verdict(s.single_s <= TARGET_SINGLE_S)
        );
        let _ = writeln!(
            out,
            "| 16 sprites in one batch, {} steps (median of {}) | {:.3} s | {TARGET_BATCH16_S} s | {:.2} {} |",
            s.sampler_steps,
            s.batch16_runs,
            s.batch16_s,
            s.batch16_s / TARGET_BATCH16_S,
            verdict(s.batch16_s <= TARGET_BATCH16_S)
        );
        let gib = TARGET_PEAK_RSS as f64 / (1u64 << 20) as f64;
        match s.peak_rss {
            Some(bytes) => {
                let mib = bytes as f64 / (1u64 << 20) as f64;
                let _ = writeln!(
                    out,
                    "| peak RSS (VmHWM) after loading and generating | {mib:.0} MiB | {gib:.0} MiB | {:.2} {} |",
                    mib / gib,
                    verdict(bytes <= TARGET_PEAK_RSS)
                );
            }
            None => {
                let _ = writeln!(out, "| peak RSS (VmHWM) | not available | {gib:.0} MiB | |");
            }
        }
        let source = match &s.train_source {
            Some(ThroughputSource::Checkpoint { step, batch }) => {
                format!("whole run so far: {step} steps × batch {batch}, from the checkpoint")
            }
            Some(ThroughputSource::Measured { steps, batch }) => {
                format!("median of {steps} steps × batch {batch}, measured by the bench")
            }
            None => "not measured".into(),
        };
        let _ = writeln!(
            out,
            "| training throughput ({source}) | {} images/s | — | |",
            opt(s.train_images_per_s, 1)
        );
        let load = s.load_average.map_or(String::new(), |l| {
            format!("; load average {l:.2} when the bench started")
        });
        let _ = writeln!(
            out,
            "\nBuild profile: **{}**; {} cores{load}. Other work may have shared the cores while \
             these were measured{}.",
            s.profile,
            s.cores,
            if self.quick { " (quick mode)" } else { "" }
        );
        out
    }

    /// Per-prompt results: what the classifier saw in each prompt's generated images.
    pub fn details_markdown(&self) -> String {
        let mut out = String::from(
            "| prompt | class | correct | predicted per seed | spread |\n| --- | --- | --- | --- | --- |\n",
        );
        for p in &self.prompts {
            let correct = p.predicted.iter().filter(|c| **c == p.class).count();
            let _ = writeln!(
                out,
                "| {} | {} | {}/{} | {} | {} |",
                p.caption,
                p.class,
                correct,
                p.predicted.len(),
                p.predicted.join(", "),
                opt(p.spread, 3)
            );
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> BenchReport {
        BenchReport {
            model_version: "0123456789abcdef".into(),
            model_step: Some(1200),
            quick: false,
            seeds: 4,
            sampler_steps: 20,
            guidance: 4.0,
            concept_classes: 30,
            texture_classes: 15,
            classifier_images: 1653,
            classifier: TrainStats {
                steps: 1500,
                final_train_accuracy: 0.9,
                final_loss: 0.3,
                seconds: 120.0,
            },
            fidelity: vec![FidelityRow {
                group: "all".into(),
                prompts: 89,
                generated: 356,
                generated_correct: 178,
                real: 207,
                real_correct: 150,
            }],
            kid: vec![KidRow {
                group: "sprites".into(),
                generated: Some(0.012),
                reference: Some(0.004),
            }],
            spread_generated: Some(2.0),
            spread_real: Some(4.0),
            nearest_generated: Some(9.0),
            nearest_real: Some(10.0),
            nearest_generated_min: Some(3.0),
            nearest_real_min: Some(2.0),
            pixel_values: 4096,
            prompts: vec![PromptResult {
                caption: "red apple twemoji food drink".into(),
                class: "red-apple".into(),
                predicted: vec!["red-apple".into(), "bomb".into()],
                spread: Some(1.5),
            }],
            speed: SpeedReport {
                sampler_steps: 20,
                guidance: 4.0,
                single_s: 0.75,
                single_runs: 5,
                batch16_s: 3.0,
                batch16_runs: 3,
                peak_rss: Some(512 << 20),
                train_images_per_s: Some(18.5),
                train_source: Some(ThroughputSource::Checkpoint {
                    step: 1200,
                    batch: 128,
                }),
                profile: "debug",
                cores: 2,
                load_average: Some(1.5),
            },
            sheet_prompts: vec!["red apple flat food drink".into()],
            sheet: RgbaImage::new(1, 1),
            seconds: 600.0,
        }
    }

    #[test]
    fn markdown_has_every_row() {
        let md = sample().to_markdown();
        for needle in [
            "Model `0123456789ab` at training step 1200",
            "| all: 89 prompts; 356 generated, 207 real | 0.725 (150/207) | 0.500 (178/356) | 0.69 ✗ |",
            "| KID ×10³, sprites | 12.00 | 4.00 (reference) | 3.00 |",
            "| spread across seeds (feature distance) | 2.000 | 4.000 | 0.50 |",
            "| nearest training image, mean pixel L2 | 9.00 | 10.00 | 0.90 |",
            "| 0.750 s | 0.5 s | 1.50 ✗ |",
            "| 3.000 s | 4 s | 0.75 ✓ |",
            "| 512 MiB | 1024 MiB | 0.50 ✓ |",
            "1200 steps × batch 128, from the checkpoint) | 18.5 images/s",
            "Build profile: **debug**; 2 cores; load average 1.50",
        ] {
            assert!(md.contains(needle), "missing `{needle}` in\n{md}");
        }
        assert!(!md.contains("Quick mode"));
        let details = sample().details_markdown();
        assert!(details.contains(
            "| red apple twemoji food drink | red-apple | 1/2 | red-apple, bomb | 1.500 |"
        ));
    }

    #[test]
    fn no_ratio_to_a_negative_kid_reference() {
        let mut report = sample();
        report.kid[0].reference = Some(-0.002);
        let md = report.to_markdown();
        assert!(
            md.contains("| KID ×10³, sprites | 12.00 | -2.00 (reference) | — |"),
            "{md}"
        );
    }

    #[test]
    fn quick_mode_and_missing_numbers_are_said() {
        let mut report = sample();
        report.quick = true;
        report.nearest_real = None;
        report.fidelity[0].real = 0;
        report.fidelity[0].real_correct = 0;
        let md = report.to_markdown();
        assert!(md.contains("**Quick mode**"));
        assert!(md.contains("| 9.00 | — | — |"));
        assert!(!md.contains("NaN"));
    }
}
