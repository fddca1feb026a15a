//! Training the house model: from scratch on a dataset manifest, or fine-tuning (`--from`)
//! a trained model on a creator's folder.
//!
//! Design values: repeatable to the bit (every random draw of step `n` comes from
//! `(seed, n)`, so a resumed run equals an uninterrupted one), nothing half-written (the
//! checkpoint is one file, replaced atomically), and a model folder that explains itself.

pub mod card;
pub mod data;
pub mod optimizer;

use crate::atomic;
use crate::models::house::tokenizer::Encoded;
use crate::models::house::vars::SeededVars;
use crate::models::house::{HouseConfig, Networks, Tokenizer, files};
use candle_core::{Device, Tensor};
use data::TrainingSet;
use optimizer::{AdamW, AdamWConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// File name of the resumable checkpoint inside the output folder.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// Checkpoint metadata key holding the trainer's state (step, settings, timing) as JSON.
pub const STATE_KEY: &str = "autonomy.trainer";
/// Checkpoint metadata key holding the sha256 (hex) of the weights saved with it, so that a
/// reader can tell whether a checkpoint belongs to the `model.safetensors` beside it.
pub const WEIGHTS_KEY: &str = "autonomy.weights_sha256";

/// What can go wrong while training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading the training data failed.
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// The base model (`--from`) could not be loaded.
    #[error("base model: {0}")]
    Base(#[from] crate::models::house::HouseError),
    /// The checkpoint is missing, corrupt or for other data.
    #[error("checkpoint `{path}`: {message}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Writing the model folder failed.
    #[error("cannot write `{path}`: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The architecture is inconsistent.
    #[error("invalid model config: {0}")]
    Config(String),
    /// A tensor operation failed.
    #[error("training computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

/// Training settings; stored in the checkpoint and the model card.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Train until this many optimizer steps in total.
    pub steps: u64,
    /// Images per step.
    pub batch: usize,
    /// Seed of every random draw (initial weights, batches, noise, times).
    pub seed: u64,
    /// Optimizer settings.
    pub adam: AdamWConfig,
    /// Steps of linear learning-rate warm-up (then constant, so training can go on later).
    pub warmup: u64,
    /// The last this many steps before `steps` decay the learning rate linearly towards zero
    /// (a cool-down; 0 keeps it constant to the end). Steps before the cool-down do not depend
    /// on it, so a longer run with a cool-down repeats a shorter constant-rate run exactly.
    #[serde(default)]
    pub cooldown: u64,
    /// Decay of the weights' moving average that the model folder ships.
    pub ema_decay: f64,
    /// Share of examples trained with the empty prompt (for classifier-free guidance).
    pub caption_dropout: f64,
    /// Write the checkpoint and model folder every this many steps.
    pub checkpoint_every: u64,
}

impl TrainOptions {
    /// The share of the peak learning rate used by optimizer step `step` (counted from 0):
    /// a linear warm-up, a constant stretch, then the cool-down.
    pub fn lr_factor(&self, step: u64) -> f64 {
        let warm = ((step + 1) as f64 / self.warmup.max(1) as f64).min(1.0);
        let cool_start = self.steps.saturating_sub(self.cooldown);
        let cool = if self.cooldown > 0 && step >= cool_start {
            (self.steps - step) as f64 / (self.cooldown + 1) as f64
        } else {
            1.0
        };
        warm * cool.clamp(0.0, 1.0)
    }
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch: 128,
            seed: 0,
            adam: AdamWConfig::default(),
            warmup: 200,
            cooldown: 0,
            ema_decay: 0.999,
            caption_dropout: 0.1,
            checkpoint_every: 250,
        }
    }
}

/// Everything a checkpoint holds besides tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    options: TrainOptions,
    config: HouseConfig,
    vocab: Vec<String>,
    dataset_hash: String,
    base: Option<card::BaseModel>,
    seconds: f64,
    images_per_second: f64,
    loss_log: Vec<(u64, f32)>,
}

/// Loss and speed of one step.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Steps done after this one.
    pub step: u64,
    /// Mean squared velocity error of the batch.
    pub loss: f32,
    /// Throughput of this step.
    pub images_per_second: f64,
}

/// A training run in progress.
pub struct Trainer {
    state: TrainerState,
    tokenizer: Tokenizer,
    networks: Networks,
    optimizer: AdamW,
    data: TrainingSet,
    encoded: Vec<Encoded>,
    empty: Encoded,
    device: Device,
    out_dir: PathBuf,
    recent_losses: Vec<f32>,
}

impl Trainer {
    /// A new run: from scratch with `config` (its `vocab_size` is replaced by the data's), or
    /// fine-tuning the model folder `from` (its architecture; its vocabulary grows by new words).
    pub fn new(
        data: TrainingSet,
        config: HouseConfig,
        from: Option<&Path>,
        options: TrainOptions,
        out_dir: &Path,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let captions = data.captions.iter().map(String::as_str);
        let (config, tokenizer, base) = match from {
            None => {
                let tokenizer = Tokenizer::from_captions(captions);
                let config = HouseConfig {
                    vocab_size: tokenizer.vocab_size(),
                    ..config
                };
                (config, tokenizer, None)
            }
            Some(dir) => {
                let base = crate::models::house::HouseModel::load(dir, device)?;
                let mut tokenizer = base.tokenizer.clone();
                let added = tokenizer.extend(captions);
                tracing::info!(added, "new words added to the vocabulary");
                let config = HouseConfig {
                    vocab_size: tokenizer.vocab_size(),
                    ..base.config.clone()
                };
                let info = card::BaseModel {
                    path: dir.display().to_string(),
                    version: base.version().to_string(),
                };
                (config, tokenizer, Some(info))
            }
        };
        config.validate().map_err(TrainError::Config)?;
        let (map, networks) = create_networks(&config, options.seed, device)?;
        if let Some(dir) = from {
            load_base_weights(&map, &dir.join(files::WEIGHTS), device)?;
        }
        let optimizer = AdamW::new(variables(&map)?, options.adam)?;
        let state = TrainerState {
            step: 0,
            dataset_hash: data.manifest.hash(),
            vocab: (0..tokenizer.vocab_size() as u32)
                .filter_map(|i| tokenizer.word(i).map(String::from))
                .collect(),
            options,
            config,
            base,
            seconds: 0.0,
            images_per_second: 0.0,
            loss_log: Vec::new(),
        };
        Ok(Self::assemble(
            state, tokenizer, networks, optimizer, data, out_dir, device,
        ))
    }

    /// Continues the run saved in `out_dir`'s checkpoint, training until `steps` (if given)
    /// with the given `cooldown` (if given; see [`TrainOptions::cooldown`]).
    pub fn resume(
        data: TrainingSet,
        out_dir: &Path,
        steps: Option<u64>,
        cooldown: Option<u64>,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let path = out_dir.join(CHECKPOINT);
        let bad = |message: String| TrainError::Checkpoint {
            path: path.clone(),
            message,
        };
        let bytes = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
        let header = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(e.to_string()))?
            .1;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(STATE_KEY))
            .ok_or_else(|| bad(format!("no `{STATE_KEY}` metadata")))?;
        let mut state: TrainerState = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        if state.dataset_hash != data.manifest.hash() {
            return Err(bad(format!(
                "it was trained on dataset {} but --data has hash {}",
                state.dataset_hash,
                data.manifest.hash()
            )));
        }
        if let Some(steps) = steps {
            state.options.steps = steps;
        }
        if let Some(cooldown) = cooldown {
            state.options.cooldown = cooldown;
        }
        let tensors: HashMap<String, Tensor> =
            candle_core::safetensors::load_buffer(&bytes, device)
                .map_err(|e| bad(e.to_string()))?;
        let tokenizer = Tokenizer::from_words(state.vocab.clone());
        let (map, networks) = create_networks(&state.config, state.options.seed, device)?;
        let mut optimizer = AdamW::new(variables(&map)?, state.options.adam)?;
        optimizer
            .restore(&tensors.into_iter().collect(), state.step)
            .map_err(|e| bad(e.to_string()))?;
        tracing::info!(step = state.step, "resumed from checkpoint");
        Ok(Self::assemble(
            state, tokenizer, networks, optimizer, data, out_dir, device,
        ))
    }

    fn assemble(
        state: TrainerState,
        tokenizer: Tokenizer,
        networks: Networks,
        optimizer: AdamW,
        data: TrainingSet,
        out_dir: &Path,
        device: &Device,
    ) -> Self {
        let max = state.config.max_tokens;
        let encoded = data
            .captions
            .iter()
            .map(|c| tokenizer.encode(c, max))
            .collect();
        Self {
            empty: tokenizer.encode("", max),
            encoded,
            state,
            tokenizer,
            networks,
            optimizer,
            data,
            device: device.clone(),
            out_dir: out_dir.to_path_buf(),
            recent_losses: Vec::new(),
        }
    }

    /// Steps done so far.
    pub fn step_count(&self) -> u64 {
        self.state.step
    }

    /// The step count this run trains to.
    pub fn target_steps(&self) -> u64 {
        self.state.options.steps
    }

    /// The architecture being trained.
    pub fn config(&self) -> &HouseConfig {
        &self.state.config
    }

    /// One optimizer step on a batch drawn from `(seed, step)`.
    pub fn step(&mut self) -> Result<StepStats, TrainError> {
        let started = Instant::now();
        let options = &self.state.options;
        let step = self.state.step;
        let mut rng =
            ChaCha8Rng::seed_from_u64(options.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let size = self.data.size;
        let per = 4 * size * size;
        let batch = options.batch;
        let mut noisy = Vec::with_capacity(batch * per);
        let mut target = Vec::with_capacity(batch * per);
        let mut times = Vec::with_capacity(batch);
        let mut prompts = Vec::with_capacity(batch);
        for _ in 0..batch {
            let index = rng.random_range(0..self.data.len());
            let mirror = self.data.mirrorable[index] && rng.random_bool(0.5);
            let dropped = rng.random_bool(options.caption_dropout);
            let normal: f64 = StandardNormal.sample(&mut rng);
            let t = (1.0 / (1.0 + (-normal).exp())) as f32;
            times.push(t);
            prompts.push(if dropped {
                self.empty.clone()
            } else {
                self.encoded[index].clone()
            });
            let image = &self.data.pixels[index];
            for c in 0..4 {
                for y in 0..size {
                    for x in 0..size {
                        let sx = if mirror { size - 1 - x } else { x };
                        let x0 = image[(c * size + y) * size + sx];
                        let eps: f32 = StandardNormal.sample(&mut rng);
                        noisy.push((1.0 - t) * x0 + t * eps);
                        target.push(eps - x0);
                    }
                }
            }
        }
        let shape = (batch, 4, size, size);
        let noisy = Tensor::from_vec(noisy, shape, &self.device)?;
        let target = Tensor::from_vec(target, shape, &self.device)?;
        let times = Tensor::from_vec(times, batch, &self.device)?;
        let text = self.networks.encode(&prompts, &self.device)?;
        let predicted = self.networks.denoiser.forward(&noisy, &times, &text)?;
        let loss = (predicted - target)?.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        let lr = options.adam.lr * options.lr_factor(step);
        let decay = options
            .ema_decay
            .min((1.0 + step as f64) / (10.0 + step as f64));
        self.optimizer.step(&grads, lr, decay)?;

        let loss = loss.to_scalar::<f32>()?;
        let seconds = started.elapsed().as_secs_f64();
        self.state.step += 1;
        self.state.seconds += seconds;
        let images_per_second = batch as f64 / seconds.max(1e-9);
        self.state.images_per_second = images_per_second;
        self.recent_losses.push(loss);
        if self.recent_losses.len() == 50 {
            let mean = self.recent_losses.iter().sum::<f32>() / 50.0;
            self.state.loss_log.push((self.state.step, mean));
            self.recent_losses.clear();
        }
        Ok(StepStats {
            step: self.state.step,
            loss,
            images_per_second,
        })
    }

    /// Trains until the target step count or until `stop` is set, saving every
    /// `checkpoint_every` steps and at the end; `on_step` sees every step.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        mut on_step: impl FnMut(&StepStats),
    ) -> Result<(), TrainError> {
        while self.state.step < self.state.options.steps && !stop.load(Ordering::SeqCst) {
            let stats = self.step()?;
            on_step(&stats);
            if stats.step % self.state.options.checkpoint_every.max(1) == 0 {
                self.save()?;
            }
        }
        self.save()
    }

    /// Writes the checkpoint and the model folder (config, EMA weights, vocabulary, dataset
    /// manifest, model card), each file atomically.
    pub fn save(&self) -> Result<(), TrainError> {
        let write = |name: &str, bytes: &[u8]| {
            let path = self.out_dir.join(name);
            atomic::write(&path, bytes).map_err(|source| TrainError::Write { path, source })
        };
        let weights = safetensors::serialize(self.optimizer.ema(), None)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let state_json =
            serde_json::to_string(&self.state).map_err(|e| TrainError::Config(e.to_string()))?;
        let metadata = HashMap::from([
            (STATE_KEY.to_string(), state_json),
            (
                WEIGHTS_KEY.to_string(),
                hex::encode(sha2::Sha256::digest(&weights)),
            ),
        ]);
        let checkpoint = safetensors::serialize(self.optimizer.state(), Some(metadata))
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        write(CHECKPOINT, &checkpoint)?;
        write(files::WEIGHTS, &weights)?;
        let config = serde_json::to_string_pretty(&self.state.config)
            .map_err(|e| TrainError::Config(e.to_string()))?;
        write(files::CONFIG, config.as_bytes())?;
        let vocab = serde_json::to_string(&self.tokenizer)
            .map_err(|e| TrainError::Config(e.to_string()))?;
        write(files::VOCAB, vocab.as_bytes())?;
        write(files::DATASET, self.data.manifest.to_jsonl().as_bytes())?;
        let card_path = self.out_dir.join(files::CARD);
        let previous = std::fs::read_to_string(&card_path).unwrap_or_default();
        let summary = card::TrainingSummary {
            config: &self.state.config,
            options: &self.state.options,
            manifest: &self.data.manifest,
            data: &self.data.source,
            base: self.state.base.as_ref(),
            steps: self.state.step,
            seconds: self.state.seconds,
            images_per_second: self.state.images_per_second,
            device: crate::device::name(&self.device),
            loss_log: &self.state.loss_log,
            parameters: self.optimizer.ema().values().map(|t| t.elem_count()).sum(),
        };
        write(files::CARD, card::render(&summary, &previous).as_bytes())
    }
}

/// Fresh networks whose variables are drawn from `seed`, and the map that holds them.
fn create_networks(
    config: &HouseConfig,
    seed: u64,
    device: &Device,
) -> Result<(candle_nn::VarMap, Networks), TrainError> {
    let (map, vb) = SeededVars::new(seed).builder(device);
    let networks = Networks::new(config, vb)?;
    Ok((map, networks))
}

/// The trainable variables by name (sorted, so optimizer state lines up across runs).
fn variables(map: &candle_nn::VarMap) -> Result<BTreeMap<String, candle_core::Var>, TrainError> {
    Ok(map
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map poisoned".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

fn load_base_weights(
    map: &candle_nn::VarMap,
    path: &Path,
    device: &Device,
) -> Result<(), TrainError> {
    let bad = |message: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let base = candle_core::safetensors::load(path, device).map_err(|e| bad(e.to_string()))?;
    let vars = map
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map poisoned".into()))?;
    for (name, var) in vars.iter() {
        let stored = base
            .get(name)
            .ok_or_else(|| bad(format!("no tensor `{name}`")))?;
        let value = if stored.shape() == var.shape() {
            stored.clone()
        } else if name == "text.tokens.weight" && stored.dim(0)? < var.dim(0)? {
            // Words the base model did not know keep their fresh random rows.
            let extra = var
                .as_tensor()
                .narrow(0, stored.dim(0)?, var.dim(0)? - stored.dim(0)?)?;
            Tensor::cat(&[stored, &extra], 0)?
        } else {
            return Err(bad(format!(
                "`{name}` has shape {:?}, the model {:?}",
                stored.dims(),
                var.dims()
            )));
        };
        var.set(&value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rate_warms_up_holds_and_cools_down_to_zero() {
        let options = TrainOptions {
            steps: 100,
            warmup: 10,
            cooldown: 20,
            ..TrainOptions::default()
        };
        assert!((options.lr_factor(0) - 0.1).abs() < 1e-12);
        assert_eq!(options.lr_factor(9), 1.0);
        assert_eq!(options.lr_factor(79), 1.0);
        let cooling: Vec<f64> = (80..100).map(|s| options.lr_factor(s)).collect();
        assert!(cooling.windows(2).all(|w| w[1] < w[0]), "{cooling:?}");
        assert!(cooling[0] < 1.0 && cooling[19] > 0.0 && cooling[19] < 0.05);
    }

    #[test]
    fn steps_before_the_cooldown_do_not_depend_on_it() {
        let constant = TrainOptions {
            steps: 50,
            ..TrainOptions::default()
        };
        let cooled = TrainOptions {
            steps: 80,
            cooldown: 30,
            ..TrainOptions::default()
        };
        for step in 0..50 {
            assert_eq!(constant.lr_factor(step), cooled.lr_factor(step));
        }
    }
}
