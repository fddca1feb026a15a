//! Speed and memory on this machine: sprite latency, batch throughput, peak RSS and training
//! throughput, each set against the target it is judged by.

use super::BenchError;
use super::metrics::median;
use crate::generator::GenerateRequest;
use crate::models::house::{HouseConfig, HouseModel};
use crate::train::data::TrainingSet;
use crate::train::{CHECKPOINT, STATE_KEY, TrainOptions, Trainer, WEIGHTS_KEY};
use candle_core::Device;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

/// Target time of one sprite at 20 steps with guidance, in seconds.
pub const TARGET_SINGLE_S: f64 = 0.5;
/// Target time of a batch of 16 sprites at 20 steps, in seconds.
pub const TARGET_BATCH16_S: f64 = 4.0;
/// Target peak resident memory, in bytes (1 GiB).
pub const TARGET_PEAK_RSS: u64 = 1 << 30;

/// Where the training throughput comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ThroughputSource {
    /// Steps × batch / wall time of the run saved in the model folder's checkpoint.
    Checkpoint {
        /// Steps the run has done.
        step: u64,
        /// Its batch size.
        batch: usize,
    },
    /// Measured by the bench: the median of a few training steps of the model's architecture.
    Measured {
        /// Steps timed.
        steps: usize,
        /// Their batch size.
        batch: usize,
    },
}

/// What the speed section of the report shows.
#[derive(Clone, Debug, PartialEq)]
pub struct SpeedReport {
    /// Sampler steps of every timed generation.
    pub sampler_steps: usize,
    /// Guidance scale of every timed generation.
    pub guidance: f64,
    /// Median seconds for one sprite.
    pub single_s: f64,
    /// Timed runs behind [`Self::single_s`] (after one warm-up).
    pub single_runs: usize,
    /// Median seconds for a batch of 16.
    pub batch16_s: f64,
    /// Timed runs behind [`Self::batch16_s`].
    pub batch16_runs: usize,
    /// Peak resident memory (VmHWM) after loading the model and generating, in bytes.
    pub peak_rss: Option<u64>,
    /// Training images per second.
    pub train_images_per_s: Option<f64>,
    /// How [`Self::train_images_per_s`] was obtained.
    pub train_source: Option<ThroughputSource>,
    /// `debug` or `release`.
    pub profile: &'static str,
    /// Logical cores available.
    pub cores: usize,
    /// One-minute load average when the bench started (other work sharing the cores).
    pub load_average: Option<f64>,
}

/// The build profile of this binary.
pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The one-minute load average (Linux), if readable.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Peak resident set size of this process (VmHWM, Linux), in bytes.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Median seconds of `runs` generations of `count` images (after one untimed warm-up).
pub fn time_generation(
    model: &HouseModel,
    prompt: &str,
    count: usize,
    steps: usize,
    guidance: f64,
    runs: usize,
) -> Result<f64, BenchError> {
    let request = |seed: u64| GenerateRequest {
        prompt: prompt.to_string(),
        seed,
        steps,
        guidance,
        count,
        ..Default::default()
    };
    model.generate(&request(1000))?;
    let mut times = Vec::with_capacity(runs);
    for run in 0..runs.max(1) {
        let started = Instant::now();
        model.generate(&request(run as u64))?;
        times.push(started.elapsed().as_secs_f64());
    }
    Ok(median(&times).unwrap_or(f64::NAN))
}

/// Training throughput of the run saved in `model_dir`'s checkpoint: images seen over wall
/// time, all sessions together. Reads only the file's header, and only a checkpoint saved
/// with the weights of `version` counts (a stale one left beside newer weights does not).
pub fn checkpoint_throughput(model_dir: &Path, version: &str) -> Option<(f64, ThroughputSource)> {
    let mut file = std::fs::File::open(model_dir.join(CHECKPOINT)).ok()?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).ok()?;
    let len = usize::try_from(u64::from_le_bytes(len)).ok()?;
    if len > 100 << 20 {
        return None;
    }
    let mut header = vec![0u8; len];
    file.read_exact(&mut header).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    let metadata = header.get("__metadata__")?;
    if metadata.get(WEIGHTS_KEY)?.as_str()? != version {
        return None;
    }
    let state = metadata.get(STATE_KEY)?.as_str()?;
    let state: serde_json::Value = serde_json::from_str(state).ok()?;
    let step = state.get("step")?.as_u64()?;
    let batch = state.get("options")?.get("batch")?.as_u64()? as usize;
    let seconds = state.get("seconds")?.as_f64()?;
    (step > 0 && seconds > 0.0).then(|| {
        (
            (step * batch as u64) as f64 / seconds,
            ThroughputSource::Checkpoint { step, batch },
        )
    })
}

/// Times `steps` training steps of `config` on the manifest's train split (nothing is written).
pub fn measure_training(
    manifest: &Path,
    config: &HouseConfig,
    batch: usize,
    steps: usize,
    device: &Device,
) -> Result<(f64, ThroughputSource), BenchError> {
    let data = TrainingSet::load(manifest, config.image_size)?;
    let options = TrainOptions {
        steps: steps as u64,
        batch,
        checkpoint_every: u64::MAX,
        ..TrainOptions::default()
    };
    // `step` never writes; only `save`/`run` touch the output folder, and neither is called.
    let scratch = std::env::temp_dir().join("autonomy-bench-unused");
    let mut trainer = Trainer::new(data, config.clone(), None, options, &scratch, device)?;
    let mut rates = Vec::with_capacity(steps);
    for _ in 0..steps.max(1) {
        rates.push(trainer.step()?.images_per_second);
    }
    Ok((
        median(&rates).unwrap_or(f64::NAN),
        ThroughputSource::Measured { steps, batch },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_machine() {
        assert!(peak_rss().is_some_and(|b| b > 1 << 20));
        assert!(load_average().is_some_and(|l| l >= 0.0));
        assert_eq!(profile() == "debug", cfg!(debug_assertions));
    }

    #[test]
    fn checkpoint_header_gives_throughput() {
        let dir = tempfile::tempdir().unwrap();
        assert!(checkpoint_throughput(dir.path(), "abc").is_none());
        let state = serde_json::json!({"step": 10, "options": {"batch": 8}, "seconds": 4.0});
        let metadata = std::collections::HashMap::from([
            (STATE_KEY.to_string(), state.to_string()),
            (WEIGHTS_KEY.to_string(), "abc".to_string()),
        ]);
        let tensors: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
        let bytes = safetensors::serialize(tensors, Some(metadata)).unwrap();
        std::fs::write(dir.path().join(CHECKPOINT), bytes).unwrap();
        assert!(
            checkpoint_throughput(dir.path(), "def").is_none(),
            "a checkpoint of other weights must not count"
        );
        let (rate, source) = checkpoint_throughput(dir.path(), "abc").unwrap();
        assert_eq!(rate, 20.0);
        assert_eq!(source, ThroughputSource::Checkpoint { step: 10, batch: 8 });
    }
}
