//! The tiny Stable Diffusion fixtures (`tests/fixtures/sd`, made by
//! `scripts/sd-fixtures/make.py`) and what diffusers computed for them.

use std::collections::HashMap;
use std::path::PathBuf;

use autonomy_pipeline::generator::GenerateRequest;
use candle_core::{Device, Tensor};

/// The fixtures folder, under cargo's crate folder at run time when there is one, so that a
/// test binary copied to a GPU machine finds that machine's checkout.
pub fn fixtures() -> PathBuf {
    super::crate_dir().join("tests/fixtures/sd")
}

/// A fixture's diffusers references (`<name>.reference.safetensors`) and the prompts they
/// were computed for.
pub struct Reference {
    /// The tensors by name (`unet_eps`, `run_image`…).
    pub tensors: HashMap<String, Tensor>,
    /// The prompt the references were made for.
    pub prompt: String,
    /// Their negative prompt.
    pub negative: String,
    /// The file's whole metadata (other prompts, cases).
    pub metadata: HashMap<String, String>,
}

impl Reference {
    /// The references of the fixture pipeline `name`.
    pub fn of(name: &str) -> Self {
        Self::at(fixtures().join(format!("{name}.reference.safetensors")))
    }

    /// The references of the checkpoint `checkpoints/<name>.safetensors` (or of a checkpoint
    /// the test makes from it, such as `tiny-sd15-lcm`).
    pub fn of_checkpoint(name: &str) -> Self {
        Self::at(fixtures().join(format!("checkpoints/{name}.reference.safetensors")))
    }

    /// The references in the file at `path`, their prompts in its metadata.
    fn at(path: PathBuf) -> Self {
        let bytes = std::fs::read(&path).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        Self {
            tensors: candle_core::safetensors::load(&path, &Device::Cpu).unwrap(),
            // References of networks other than pipelines (annotators) have no prompts.
            prompt: meta.get("prompt").cloned().unwrap_or_default(),
            negative: meta.get("negative_prompt").cloned().unwrap_or_default(),
            metadata: meta,
        }
    }

    /// A request with the references' prompt and negative prompt, the rest the defaults.
    pub fn request(&self) -> GenerateRequest {
        GenerateRequest {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative.clone(),
            ..GenerateRequest::default()
        }
    }

    /// The tensor `key`.
    pub fn get(&self, key: &str) -> &Tensor {
        &self.tensors[key]
    }

    /// The one-value tensor `key` as a number.
    pub fn scalar(&self, key: &str) -> f64 {
        f64::from(self.get(key).to_vec1::<f32>().unwrap()[0])
    }

    /// The token-id tensor `key`.
    pub fn ids(&self, key: &str) -> Vec<u32> {
        self.get(key)
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|id| id as u32)
            .collect()
    }
}

/// Largest absolute difference between two tensors of one shape.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Asserts that `ours` is within `tolerance` of diffusers' `theirs` (largest difference),
/// naming `what`.
pub fn close(what: &str, ours: &Tensor, theirs: &Tensor, tolerance: f32) {
    let diff = max_diff(ours, theirs);
    let scale = theirs
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        diff <= tolerance,
        "{what}: max |candle − diffusers| = {diff:e} (values up to {scale:.3}), tolerance {tolerance:e}"
    );
}

/// The 64×64 gradient the fixture maker's `test_image` draws.
pub fn test_image() -> image::RgbaImage {
    image::RgbaImage::from_fn(64, 64, |x, y| {
        image::Rgba([(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8, 255])
    })
}

/// White (repaint) on the right half, as the fixture maker's mask.
pub fn right_half() -> image::GrayImage {
    image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x >= 32 { 255 } else { 0 }]))
}

/// How much more of what a control image changes on a tileable texture lies where it is drawn
/// than elsewhere, for four seeds: `model` (loaded with one ControlNet or T2I-Adapter) draws a
/// tileable texture from a control image with a square at the top left, and again with one at
/// the bottom right, at `scale`; the ratio is the change in those two quadrants over the change
/// in the other two.
pub fn tileable_control_ratios(
    model: &autonomy_pipeline::models::sd::StableDiffusion,
    scale: f64,
) -> Vec<f32> {
    use autonomy_pipeline::generator::Control;
    use autonomy_pipeline::models::noise::gaussian;
    let square = |at: u32| {
        image::RgbImage::from_fn(64, 64, |x, y| {
            let inside = (at..at + 24).contains(&x) && (at..at + 24).contains(&y);
            image::Rgb([if inside { 255 } else { 0 }; 3])
        })
    };
    (0..4)
        .map(|seed| {
            let noise = Tensor::from_vec(gaussian(seed, 4 * 32 * 32), (1, 4, 32, 32), &Device::Cpu)
                .unwrap();
            let run = |at: u32| {
                let request = GenerateRequest {
                    prompt: "stone floor tiles".into(),
                    steps: 6,
                    guidance: 5.0,
                    seed,
                    tileable: true,
                    control: vec![Control {
                        image: square(at),
                        scale,
                        start: 0.0,
                        end: 1.0,
                        guess_mode: false,
                    }],
                    ..GenerateRequest::default()
                };
                model.sample(&request, &noise).unwrap()
            };
            let change = (run(4) - run(36)).unwrap().abs().unwrap().sum(1).unwrap();
            let (_, h, w) = change.dims3().unwrap();
            let quadrant = |y: usize, x: usize| {
                let part = change.narrow(1, y * h / 2, h / 2).unwrap();
                let part = part.narrow(2, x * w / 2, w / 2).unwrap();
                part.sum_all().unwrap().to_scalar::<f32>().unwrap()
            };
            (quadrant(0, 0) + quadrant(1, 1)) / (quadrant(0, 1) + quadrant(1, 0))
        })
        .collect()
}
