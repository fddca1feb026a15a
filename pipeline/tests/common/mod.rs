//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};

use autonomy_pipeline::models::house::files;

/// A copy of the shipped house model in `into`: a training run may rewrite `models/house`
/// while tests run.
pub fn copy_of_shipped_model(into: &Path) -> PathBuf {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/house");
    for file in [files::CONFIG, files::WEIGHTS, files::VOCAB, files::DATASET] {
        std::fs::copy(shipped.join(file), into.join(file)).unwrap();
    }
    into.to_path_buf()
}
