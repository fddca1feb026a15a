//! Training images and captions, from a dataset manifest or from a creator's folder.
//!
//! A folder is how a creator imprints a style: every image in it (PNG, any size) with its
//! caption from a sidecar `name.txt`, or else from the file name (`red_potion.png` → "red potion").

use crate::dataset::{Manifest, ManifestItem, Split};
use crate::models::house::pixels;
use image::RgbaImage;
use image::imageops::FilterType;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// What can go wrong reading training data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The data path is neither a manifest file nor a folder.
    #[error("`{0}` is neither a dataset manifest (.jsonl) nor a folder of images")]
    NotData(PathBuf),
    /// The manifest could not be loaded.
    #[error(transparent)]
    Manifest(#[from] crate::dataset::DatasetError),
    /// A file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An image could not be decoded.
    #[error("cannot decode image `{path}`: {source}")]
    Image {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: image::ImageError,
    },
    /// There is nothing to train on.
    #[error("`{0}` holds no training images")]
    Empty(PathBuf),
    /// `contributors.toml` is malformed.
    #[error("`{}`: {message}", path.display())]
    Contributors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Training examples held in memory as model-ready values.
pub struct TrainingSet {
    /// The manifest describing every example (written into the model folder).
    pub manifest: Manifest,
    /// Caption per example.
    pub captions: Vec<String>,
    /// Premultiplied RGBA values in [-1, 1], `4 × size × size` per example.
    pub pixels: Vec<Vec<f32>>,
    /// Whether an example may be mirrored (not when its caption names a side).
    pub mirrorable: Vec<bool>,
    /// Image side.
    pub size: usize,
    /// The manifest or folder it was loaded from.
    pub source: PathBuf,
}

impl TrainingSet {
    /// Loads a manifest (`.jsonl`; only its `train` split) or a folder of captioned images,
    /// resized to `size`.
    pub fn load(path: &Path, size: usize) -> Result<Self, DataError> {
        let (manifest, root) = if path.is_dir() {
            (folder_manifest(path)?, path.to_path_buf())
        } else if path.is_file() {
            let manifest = Manifest::load(path)?;
            let root = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            let train: Vec<ManifestItem> = manifest
                .items
                .into_iter()
                .filter(|i| i.split == Split::Train)
                .collect();
            (Manifest::new(train), root)
        } else {
            return Err(DataError::NotData(path.to_path_buf()));
        };
        if manifest.items.is_empty() {
            return Err(DataError::Empty(path.to_path_buf()));
        }
        let images: Vec<RgbaImage> = manifest
            .items
            .par_iter()
            .map(|item| {
                let file = root.join(&item.image);
                let img =
                    image::open(&file).map_err(|source| DataError::Image { path: file, source })?;
                Ok(fit(&img.to_rgba8(), size as u32))
            })
            .collect::<Result<_, DataError>>()?;
        let captions: Vec<String> = manifest.items.iter().map(|i| i.caption.clone()).collect();
        let mirrorable = captions
            .iter()
            .map(|c| {
                !crate::models::house::tokenizer::words(c).any(|w| w == "left" || w == "right")
            })
            .collect();
        Ok(Self {
            pixels: images.iter().map(pixels::to_values).collect(),
            captions,
            mirrorable,
            manifest,
            size,
            source: path.to_path_buf(),
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.captions.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.captions.is_empty()
    }
}

/// Resizes to `size × size`, keeping the aspect ratio and centring on transparency.
/// Resampling happens on premultiplied colour so transparent pixels do not bleed dark fringes.
pub fn fit(image: &RgbaImage, size: u32) -> RgbaImage {
    let (w, h) = image.dimensions();
    if (w, h) == (size, size) {
        return image.clone();
    }
    let scale = size as f32 / w.max(h).max(1) as f32;
    let (nw, nh) = (
        ((w as f32 * scale).round() as u32).clamp(1, size),
        ((h as f32 * scale).round() as u32).clamp(1, size),
    );
    let mut premultiplied = image.clone();
    for p in premultiplied.pixels_mut() {
        let a = p[3] as u32;
        for c in 0..3 {
            p[c] = ((p[c] as u32 * a + 127) / 255) as u8;
        }
    }
    let small = image::imageops::resize(&premultiplied, nw, nh, FilterType::Triangle);
    let mut out = RgbaImage::new(size, size);
    image::imageops::overlay(
        &mut out,
        &small,
        ((size - nw) / 2) as i64,
        ((size - nh) / 2) as i64,
    );
    for p in out.pixels_mut() {
        let a = p[3] as u32;
        for c in 0..3 {
            p[c] = (p[c] as u32 * 255 + a / 2)
                .checked_div(a)
                .map_or(0, |v| v.min(255) as u8);
        }
    }
    out
}

/// The file in a creator's folder that says who contributed which image.
pub const CONTRIBUTORS_FILE: &str = "contributors.toml";

/// `contributors.toml`: `[images]` maps a file name (or `"*"` for the rest) to the Ethereum
/// address of who contributed it.
fn contributors(dir: &Path) -> Result<std::collections::BTreeMap<String, String>, DataError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        images: std::collections::BTreeMap<String, String>,
    }
    let path = dir.join(CONTRIBUTORS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(source) => return Err(DataError::Io { path, source }),
    };
    let file: File = toml::from_str(&text).map_err(|error| DataError::Contributors {
        path: path.clone(),
        message: error.to_string(),
    })?;
    for (image, address) in &file.images {
        if address.parse::<alloy_primitives::Address>().is_err() {
            return Err(DataError::Contributors {
                path,
                message: format!("`{image}` = {address:?} is not an Ethereum address"),
            });
        }
    }
    Ok(file.images)
}

/// A manifest for a creator's folder: every `.png`, captioned by sidecar `.txt` or file name,
/// credited to its contributor when `contributors.toml` names one.
fn folder_manifest(dir: &Path) -> Result<Manifest, DataError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    let credits = contributors(dir)?;
    let mut items = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let is_png = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if !is_png {
            continue;
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sidecar = path.with_extension("txt");
        let caption = if sidecar.is_file() {
            std::fs::read_to_string(&sidecar).map_err(io(&sidecar))?
        } else {
            stem.replace(['_', '-'], " ")
        };
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let name = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let contributor = credits.get(&name).or_else(|| credits.get("*")).cloned();
        items.push(ManifestItem {
            id: format!("local/{stem}"),
            caption: caption.split_whitespace().collect::<Vec<_>>().join(" "),
            sha256: hex::encode(Sha256::digest(&bytes)),
            image: name,
            source: format!("local:{}", dir.display()),
            icon: stem,
            license: "NOASSERTION".into(),
            attribution: match &contributor {
                Some(address) => format!("contributed by {address}"),
                None => "the creator who supplied this folder".into(),
            },
            split: Split::Train,
            contributor,
        });
    }
    Ok(Manifest::new(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_captions_come_from_sidecars_or_names() {
        let dir = tempfile::tempdir().unwrap();
        let img = RgbaImage::from_pixel(8, 4, image::Rgba([255, 0, 0, 255]));
        img.save(dir.path().join("red_potion.png")).unwrap();
        img.save(dir.path().join("b.png")).unwrap();
        std::fs::write(dir.path().join("b.txt"), "blue  gem\n").unwrap();
        std::fs::write(dir.path().join("notes.md"), "ignored").unwrap();
        let set = TrainingSet::load(dir.path(), 16).unwrap();
        let mut captions = set.captions.clone();
        captions.sort();
        assert_eq!(captions, vec!["blue gem", "red potion"]);
        assert_eq!(set.pixels[0].len(), 4 * 16 * 16);
        assert_eq!(set.manifest.licences().get("NOASSERTION"), Some(&2));
    }

    #[test]
    fn contributors_toml_credits_images() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["ruby", "opal"] {
            RgbaImage::from_pixel(8, 8, image::Rgba([200, 0, 0, 255]))
                .save(dir.path().join(format!("{name}.png")))
                .unwrap();
        }
        let (ada, bob) = (
            format!("0x{}", "a1".repeat(20)),
            format!("0x{}", "b2".repeat(20)),
        );
        std::fs::write(
            dir.path().join(CONTRIBUTORS_FILE),
            format!("[images]\n\"ruby.png\" = \"{ada}\"\n\"*\" = \"{bob}\"\n"),
        )
        .unwrap();
        let set = TrainingSet::load(dir.path(), 16).unwrap();
        let credit = |icon: &str| {
            set.manifest
                .items
                .iter()
                .find(|i| i.icon == icon)
                .unwrap()
                .contributor
                .clone()
        };
        assert_eq!(credit("ruby"), Some(ada));
        assert_eq!(credit("opal"), Some(bob));
        std::fs::write(
            dir.path().join(CONTRIBUTORS_FILE),
            "[images]\n\"ruby.png\" = \"alice\"\n",
        )
        .unwrap();
        let error = TrainingSet::load(dir.path(), 16).err().unwrap().to_string();
        assert!(
            error.contains("contributors.toml") && error.contains("alice"),
            "{error}"
        );
    }

    #[test]
    fn fit_letterboxes_on_transparency_without_dark_fringes() {
        let img = RgbaImage::from_pixel(8, 4, image::Rgba([250, 200, 10, 255]));
        let out = fit(&img, 4);
        assert_eq!(out.dimensions(), (4, 4));
        assert_eq!(out.get_pixel(0, 0)[3], 0);
        let mid = out.get_pixel(1, 1);
        assert_eq!(mid[3], 255);
        assert!(mid[0] >= 249);
    }

    #[test]
    fn missing_data_is_a_clear_error() {
        let err = TrainingSet::load(Path::new("/no/such/data"), 16)
            .err()
            .unwrap();
        assert!(err.to_string().contains("/no/such/data"));
        let empty = tempfile::tempdir().unwrap();
        let err = TrainingSet::load(empty.path(), 16).err().unwrap();
        assert!(err.to_string().contains("no training images"));
    }
}
