//! The one error type of dataset building: every variant names the file, package or item at fault.

use std::path::PathBuf;

/// What went wrong while building, loading or verifying a dataset.
///
/// An SVG that fails to render is *not* an error: it is skipped, logged and counted in the summary.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A file or folder could not be read.
    #[error("failed to read `{}`: {source}", path.display())]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file or folder could not be written.
    #[error("failed to write `{}`: {source}", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed (or serialised).
    #[error("failed to parse `{}`: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause, with its line and column.
        source: serde_json::Error,
    },
    /// A JSON file parsed but lacks a field we need.
    #[error("`{}`: missing or empty field `{field}`", path.display())]
    MissingField {
        /// The file.
        path: PathBuf,
        /// The field, as a JSON path (`license.spdx`).
        field: &'static str,
    },
    /// One line of a JSON Lines manifest is not a valid item.
    #[error("`{}`, line {line}: {source}", path.display())]
    ManifestLine {
        /// The manifest file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The cause.
        source: serde_json::Error,
    },
    /// A rendered image could not be encoded as PNG.
    #[error("failed to encode the PNG of `{id}`: {source}")]
    Encode {
        /// The item id.
        id: String,
        /// The cause.
        source: image::ImageError,
    },
    /// A manifest item's image is missing or unreadable.
    #[error("item `{id}`: cannot read image `{}`: {source}", path.display())]
    ImageMissing {
        /// The item id.
        id: String,
        /// Where the image was looked for.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A manifest item's image does not have the recorded hash.
    #[error("item `{id}`: image `{}` has sha256 {actual}, the manifest says {expected}", path.display())]
    ImageHash {
        /// The item id.
        id: String,
        /// The image file.
        path: PathBuf,
        /// The sha256 recorded in the manifest.
        expected: String,
        /// The sha256 of the file on disk.
        actual: String,
    },
    /// A manifest item's image path is absolute or leaves the dataset folder.
    #[error(
        "item `{id}`: image path `{image}` must be relative and stay inside the dataset folder"
    )]
    ImagePath {
        /// The item id.
        id: String,
        /// The offending path.
        image: String,
    },
    /// The requested image size is unusable.
    #[error("image size {size} is out of range (8..=1024)")]
    InvalidSize {
        /// The requested size.
        size: u32,
    },
}
