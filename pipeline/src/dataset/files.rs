//! Small file helpers shared by the dataset writers: PNG encoding, hashing, atomic writes.

use std::fs;
use std::path::Path;

use image::{ImageEncoder, RgbaImage};
use sha2::{Digest, Sha256};

use super::DatasetError;

/// Hex sha256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Encodes an RGBA image as PNG bytes (deterministic for a given `image` version).
pub fn encode_png(id: &str, img: &RgbaImage) -> Result<Vec<u8>, DatasetError> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgba8,
        )
        .map_err(|source| DatasetError::Encode {
            id: id.to_owned(),
            source,
        })?;
    Ok(out)
}

/// Writes `bytes` to `path` atomically and durably (see [`crate::atomic::write`]): for the
/// manifest and the summary.
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), DatasetError> {
    crate::atomic::write(path, bytes).map_err(|source| DatasetError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so that a
/// crash never leaves a half-written image; unlike [`write_durable`] it does not fsync, which
/// for thousands of small images costs more than it protects ([`super::Manifest::verify_images`]
/// catches what a power cut could lose).
pub fn write_image(path: &Path, bytes: &[u8]) -> Result<(), DatasetError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = fs::write(&tmp, bytes).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        // Best effort: the temp file is garbage either way.
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|source| DatasetError::Write {
        path: path.to_owned(),
        source,
    })
}
