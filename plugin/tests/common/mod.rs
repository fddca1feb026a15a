//! Helpers shared by the plugin's tests.

use std::path::{Path, PathBuf};

/// A copy of the shipped house model in `into` (a training run may rewrite `models/house`).
pub fn house_model(into: &Path) -> PathBuf {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/house");
    for file in [
        "config.json",
        "model.safetensors",
        "vocab.json",
        "dataset.jsonl",
    ] {
        std::fs::copy(shipped.join(file), into.join(file)).unwrap();
    }
    into.to_path_buf()
}
