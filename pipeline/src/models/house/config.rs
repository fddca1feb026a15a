//! The house model's architecture, stored as `config.json` in every model folder.

use serde::{Deserialize, Serialize};

/// Architecture of the house model: a DiT-style transformer over RGBA patches,
/// conditioned on a small text encoder through joint attention and adaLN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HouseConfig {
    /// Side of the square images the model makes, in pixels.
    pub image_size: usize,
    /// Channels per pixel (4: premultiplied RGBA).
    pub channels: usize,
    /// Side of a square patch; the image is `(image_size / patch)²` tokens.
    pub patch: usize,
    /// Width of the denoiser's tokens.
    pub dim: usize,
    /// Number of denoiser blocks.
    pub depth: usize,
    /// Attention heads in the denoiser and the text encoder.
    pub heads: usize,
    /// Hidden width of every MLP, as a multiple of its input width.
    pub mlp_ratio: usize,
    /// Words in the tokenizer's vocabulary, special tokens included.
    pub vocab_size: usize,
    /// Longest prompt in tokens (the start token included); longer prompts are cut.
    pub max_tokens: usize,
    /// Width of the text encoder.
    pub text_dim: usize,
    /// Number of text encoder blocks.
    pub text_depth: usize,
}

impl HouseConfig {
    /// The shipped house model: 32×32 RGBA, ~4.5 M parameters.
    pub fn small(vocab_size: usize) -> Self {
        Self {
            image_size: 32,
            channels: 4,
            patch: 4,
            dim: 192,
            depth: 6,
            heads: 6,
            mlp_ratio: 4,
            vocab_size,
            max_tokens: 12,
            text_dim: 192,
            text_depth: 2,
        }
    }

    /// A tiny model for tests: trains in seconds.
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            image_size: 16,
            channels: 4,
            patch: 4,
            dim: 32,
            depth: 2,
            heads: 2,
            mlp_ratio: 2,
            vocab_size,
            max_tokens: 8,
            text_dim: 32,
            text_depth: 1,
        }
    }

    /// Tokens per side of the patch grid.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch
    }

    /// Checks that the numbers fit together; returns what is wrong otherwise.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("image_size", self.image_size),
            ("channels", self.channels),
            ("patch", self.patch),
            ("dim", self.dim),
            ("depth", self.depth),
            ("heads", self.heads),
            ("mlp_ratio", self.mlp_ratio),
            ("vocab_size", self.vocab_size),
            ("max_tokens", self.max_tokens),
            ("text_dim", self.text_dim),
            ("text_depth", self.text_depth),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("`{name}` must be positive"));
        }
        if !self.image_size.is_multiple_of(self.patch) {
            return Err(format!(
                "`image_size` {} is not a multiple of `patch` {}",
                self.image_size, self.patch
            ));
        }
        if !self.dim.is_multiple_of(self.heads) || !self.text_dim.is_multiple_of(self.heads) {
            return Err(format!(
                "`dim` {} and `text_dim` {} must be multiples of `heads` {}",
                self.dim, self.text_dim, self.heads
            ));
        }
        if !self.dim.is_multiple_of(4) {
            return Err(format!(
                "`dim` {} must be a multiple of 4 (2-D sin-cos positions)",
                self.dim
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_round_trip_through_json() {
        for config in [HouseConfig::small(1000), HouseConfig::tiny(50)] {
            config.validate().unwrap();
            let json = serde_json::to_string(&config).unwrap();
            assert_eq!(serde_json::from_str::<HouseConfig>(&json).unwrap(), config);
        }
    }

    #[test]
    fn rejects_a_patch_that_does_not_divide_the_image() {
        let mut config = HouseConfig::tiny(10);
        config.patch = 5;
        assert!(config.validate().unwrap_err().contains("patch"));
    }
}
