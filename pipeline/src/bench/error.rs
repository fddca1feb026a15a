//! The one error type of the bench: every variant names the file or the data at fault.

use std::path::PathBuf;

/// What can go wrong while benchmarking a model.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The model folder could not be loaded, or generation failed.
    #[error("house model: {0}")]
    Model(#[from] crate::models::house::HouseError),
    /// The dataset manifest could not be loaded.
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    /// The training images could not be loaded.
    #[error(transparent)]
    Data(#[from] crate::train::data::DataError),
    /// Measuring training throughput failed.
    #[error("training throughput: {0}")]
    Train(#[from] crate::train::TrainError),
    /// An image could not be decoded or encoded.
    #[error("image `{path}`: {source}")]
    Image {
        /// The file (or the output being encoded).
        path: PathBuf,
        /// The cause.
        source: image::ImageError,
    },
    /// A file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write `{path}`: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The manifest lacks what the bench needs (classes, held-out items).
    #[error("`{path}`: {message}")]
    NotEnoughData {
        /// The manifest.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
    /// The bench's settings make no sense (zero seeds, zero steps…).
    #[error("invalid bench options: {0}")]
    Options(String),
    /// A tensor operation of the classifier or the metrics failed.
    #[error("bench computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}
