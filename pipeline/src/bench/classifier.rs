//! The bench's judge: a small convolutional classifier trained on real images only.
//!
//! It is independent of the generator by construction: its own network and weights, trained
//! by the bench from a seed on real drawings, never on generated ones. Its penultimate layer
//! (the pooled features) is also the feature space of the bench's KID and diversity numbers.
//!
//! Convolutions are written as nine shifted copies concatenated along channels, then one
//! [`Dense`]: candle's CPU `conv2d` backward is slow, while one large matmul is what 2 cores
//! do fastest (see the design notes). For the same reason the image is first folded 2×2 into
//! channels (lossless), and there is no per-pixel normalisation: elementwise work over every
//! position, not the matmuls, is what costs most here.

use super::BenchError;
use super::augment::Augment;
use super::data::{Class, ClassKind, Example};
use crate::models::house::layers::{Dense, LayerNorm};
use crate::models::house::vars::SeededVars;
use candle_core::{D, Device, Module, Result, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Number of convolution stages; each but the last halves the image side.
const STAGES: usize = 3;

/// Size and training schedule of the classifier.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassifierConfig {
    /// Channels of the convolution stages; the last is the feature width.
    pub widths: [usize; STAGES],
    /// Optimizer steps.
    pub steps: usize,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate (cosine decay to a twentieth of it).
    pub lr: f64,
    /// Seed of the weights, the batches and the augmentation.
    pub seed: u64,
    /// How far augmentation goes.
    pub augment: Augment,
}

impl ClassifierConfig {
    /// The bench's classifier: about 2.5 minutes on the one core a concurrent training run
    /// leaves free; it then classifies 85–90% of the held-out real images correctly.
    pub fn standard() -> Self {
        Self {
            widths: [32, 64, 96],
            steps: 600,
            batch: 32,
            lr: 3e-3,
            seed: 0,
            augment: Augment::default(),
        }
    }

    /// A tiny schedule for tests and `--quick`.
    pub fn quick() -> Self {
        Self {
            widths: [8, 16, 32],
            steps: 60,
            batch: 16,
            ..Self::standard()
        }
    }
}

#[derive(Clone, Debug)]
struct Stage {
    conv: Dense,
}

impl Stage {
    /// `x`: channels-last `(batch, h, w, c)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, h, w, _) = x.dims4()?;
        let padded = x.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?;
        let mut taps = Vec::with_capacity(9);
        for dy in 0..3 {
            for dx in 0..3 {
                taps.push(padded.narrow(1, dy, h)?.narrow(2, dx, w)?);
            }
        }
        self.conv.forward(&Tensor::cat(&taps, 3)?)?.gelu()
    }
}

/// 2×2 average pooling of a channels-last `(batch, h, w, c)` tensor.
fn pool(x: &Tensor) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    x.reshape((b, h / 2, 2, w / 2, 2, c))?.sum(4)?.sum(2)? * 0.25
}

/// What training reached.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainStats {
    /// Steps taken.
    pub steps: usize,
    /// Accuracy on the (augmented) training batches of the last tenth of the steps.
    pub final_train_accuracy: f64,
    /// Mean loss over the same steps.
    pub final_loss: f64,
    /// Wall time of training, in seconds.
    pub seconds: f64,
}

/// A trained classifier over the bench's classes.
pub struct Classifier {
    stages: Vec<Stage>,
    head_norm: LayerNorm,
    head: Dense,
    size: usize,
    device: Device,
}

impl Classifier {
    /// A fresh network for `size`×`size` RGBA images (`size` a multiple of 8) and `classes` classes.
    fn new(size: usize, classes: usize, config: &ClassifierConfig, vb: VarBuilder) -> Result<Self> {
        let mut input = 16;
        let mut stages = Vec::with_capacity(STAGES);
        for (i, &width) in config.widths.iter().enumerate() {
            let vb = vb.pp(format!("stages.{i}"));
            stages.push(Stage {
                conv: Dense::new(9 * input, width, vb.pp("conv"))?,
            });
            input = width;
        }
        Ok(Self {
            stages,
            head_norm: LayerNorm::new(input, vb.pp("head_norm"))?,
            head: Dense::new(input, classes, vb.pp("head"))?,
            size,
            device: vb.device().clone(),
        })
    }

    /// Pooled features `(batch, widths[2])` of channel-major `(batch, 4, size, size)` images.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        // Fold 2×2 pixels into channels, channels-last: (b, h/2, w/2, 16).
        let (b, c, h, w) = x.dims4()?;
        let mut x = x
            .reshape((b, c, h / 2, 2, w / 2, 2))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, h / 2, w / 2, 4 * c))?;
        for (i, stage) in self.stages.iter().enumerate() {
            x = stage.forward(&x)?;
            if i + 1 < self.stages.len() {
                x = pool(&x)?;
            }
        }
        x.mean(2)?.mean(1)
    }

    /// Class scores `(batch, classes)`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.head
            .forward(&self.head_norm.forward(&self.features(x)?)?)
    }

    /// Trains on `examples` (labels index `classes`), drawing classes uniformly so that a concept
    /// with two drawings weighs as much as a material with a hundred; `progress(done, total)`.
    pub fn train(
        examples: &[Example],
        classes: &[Class],
        size: usize,
        config: &ClassifierConfig,
        device: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> std::result::Result<(Self, TrainStats), BenchError> {
        if size == 0 || !size.is_multiple_of(8) {
            return Err(BenchError::Options(format!(
                "the classifier needs an image side that is a multiple of 8, not {size}"
            )));
        }
        if config.steps == 0 || config.batch == 0 {
            return Err(BenchError::Options(
                "the classifier needs at least one step and one image per batch".into(),
            ));
        }
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
        for (i, e) in examples.iter().enumerate() {
            if let Some(list) = by_class.get_mut(e.class) {
                list.push(i);
            }
        }
        let present: Vec<usize> = (0..classes.len())
            .filter(|&c| !by_class[c].is_empty())
            .collect();
        if present.is_empty() {
            return Err(BenchError::Options(
                "the classifier has no training images".into(),
            ));
        }
        let started = std::time::Instant::now();
        let (map, vb) = SeededVars::new(config.seed).builder(device);
        let net = Self::new(size, classes.len(), config, vb)?;
        let params = ParamsAdamW {
            lr: config.lr,
            ..ParamsAdamW::default()
        };
        let mut optimizer = AdamW::new(map.all_vars(), params)?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0xB3AC_4C1A_55F1_E700);
        let per = 4 * size * size;
        let tail = (config.steps / 10).max(1);
        let (mut correct, mut seen, mut loss_sum) = (0usize, 0usize, 0f64);
        for step in 0..config.steps {
            let progress_frac = step as f64 / config.steps as f64;
            let warm = ((step + 1) as f64 / 50.0).min(1.0);
            let cosine = 0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * progress_frac).cos());
            optimizer.set_learning_rate(config.lr * warm * cosine);

            let mut values = Vec::with_capacity(config.batch * per);
            let mut labels = Vec::with_capacity(config.batch);
            for _ in 0..config.batch {
                let class = present[rng.random_range(0..present.len())];
                let pick = &by_class[class];
                let example = &examples[pick[rng.random_range(0..pick.len())]];
                let tileable = classes[class].kind == ClassKind::Texture;
                values.extend(
                    config
                        .augment
                        .apply(&example.values, size, tileable, &mut rng),
                );
                labels.push(class as u32);
            }
            let x = Tensor::from_vec(values, (config.batch, 4, size, size), device)?;
            let y = Tensor::from_vec(labels, config.batch, device)?;
            let logits = net.logits(&x)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            optimizer.backward_step(&loss)?;
            if step + tail >= config.steps {
                let predicted = logits.argmax(D::Minus1)?;
                correct += predicted
                    .eq(&y)?
                    .to_dtype(candle_core::DType::F32)?
                    .sum_all()?
                    .to_scalar::<f32>()? as usize;
                seen += config.batch;
                loss_sum += loss.to_scalar::<f32>()? as f64;
            }
            progress(step + 1, config.steps);
        }
        let stats = TrainStats {
            steps: config.steps,
            final_train_accuracy: correct as f64 / seen.max(1) as f64,
            final_loss: loss_sum / tail as f64,
            seconds: started.elapsed().as_secs_f64(),
        };
        Ok((net, stats))
    }

    fn batches<'a>(&'a self, images: &'a [Vec<f32>]) -> impl Iterator<Item = Result<Tensor>> + 'a {
        const CHUNK: usize = 64;
        let per = 4 * self.size * self.size;
        images.chunks(CHUNK).map(move |chunk| {
            let mut values = Vec::with_capacity(chunk.len() * per);
            for image in chunk {
                if image.len() != per {
                    candle_core::bail!(
                        "an image has {} values, the classifier expects {per}",
                        image.len()
                    );
                }
                values.extend_from_slice(image);
            }
            Tensor::from_vec(values, (chunk.len(), 4, self.size, self.size), &self.device)
        })
    }

    /// The most likely class of each image (premultiplied RGBA values, as [`Example::values`]).
    pub fn predict(&self, images: &[Vec<f32>]) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(images.len());
        for x in self.batches(images) {
            let classes = self.logits(&x?)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
            out.extend(classes.into_iter().map(|c| c as usize));
        }
        Ok(out)
    }

    /// The pooled features of each image.
    pub fn embed(&self, images: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(images.len());
        for x in self.batches(images) {
            out.extend(self.features(&x?)?.to_vec2::<f32>()?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 8×8 images: a red square on the left half or a blue one on the right half.
    fn toy(class: usize, jitter: usize) -> Example {
        let size = 8;
        let n = size * size;
        let mut values = vec![-1f32; 4 * n];
        for y in 2..6 {
            for x in 0..3 {
                let x = if class == 0 {
                    x + jitter
                } else {
                    7 - x - jitter
                };
                let i = y * size + x;
                values[3 * n + i] = 1.0;
                values[if class == 0 { i } else { 2 * n + i }] = 1.0;
            }
        }
        Example {
            values,
            class,
            caption: format!("toy {class}"),
        }
    }

    #[test]
    fn learns_a_separable_toy_problem() {
        let classes = vec![
            Class {
                name: "red".into(),
                kind: ClassKind::Concept,
            },
            Class {
                name: "blue".into(),
                kind: ClassKind::Concept,
            },
        ];
        let train: Vec<Example> = (0..2).flat_map(|c| [toy(c, 0), toy(c, 1)]).collect();
        let config = ClassifierConfig {
            steps: 40,
            ..ClassifierConfig::quick()
        };
        let mut calls = 0;
        let (net, stats) =
            Classifier::train(&train, &classes, 8, &config, &Device::Cpu, &mut |_, _| {
                calls += 1
            })
            .unwrap();
        assert_eq!(calls, 40);
        assert_eq!(stats.steps, 40);
        let test: Vec<Vec<f32>> = [toy(0, 2), toy(1, 2), toy(0, 0), toy(1, 0)]
            .into_iter()
            .map(|e| e.values)
            .collect();
        assert_eq!(net.predict(&test).unwrap(), vec![0, 1, 0, 1]);
        let features = net.embed(&test).unwrap();
        assert_eq!(features.len(), 4);
        assert_eq!(features[0].len(), config.widths[2]);
        assert!(features.iter().flatten().all(|v| v.is_finite()));
    }

    #[test]
    fn odd_sizes_are_refused() {
        let err = Classifier::train(
            &[toy(0, 0)],
            &[],
            12,
            &ClassifierConfig::quick(),
            &Device::Cpu,
            &mut |_, _| {},
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("multiple of 8"), "{err}");
    }
}
