//! PBR materials: maps derived from an albedo and a glTF 2.0 file that uses them.
//!
//! From a tileable albedo, [`maps`] derives a tangent-space normal map, a roughness map and a
//! cavity ambient-occlusion map, all tileable too; occlusion and roughness travel packed in one
//! ORM texture. [`write_material`] writes the PNGs and a `.gltf` that shows them on a quad.
//!
//! ```no_run
//! use autonomy_pipeline::material::{write_material, MapKind};
//!
//! let albedo = image::open("bricks.png")?.to_rgba8();
//! let written = write_material(
//!     "assets/materials".as_ref(),
//!     "bricks",
//!     &albedo,
//!     &[MapKind::Normal, MapKind::Roughness, MapKind::Ao],
//!     2.0, // the texture repeats twice across the preview quad
//! )?;
//! // bricks.albedo.png, bricks.normal.png, bricks.orm.png, bricks.gltf
//! assert_eq!(written.len(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod gltf;
pub mod maps;

pub use self::gltf::{MaterialFiles, quad_gltf};
pub use self::maps::{
    NORMAL_STRENGTH, ao_map, height, normal_map, occlusion_roughness_metallic, roughness_map,
};

use image::{ImageFormat, Rgba, RgbaImage};
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// Why a material could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// The name is not usable in file names and URIs.
    #[error("invalid material name `{0}`: use ASCII letters, digits, `-`, `_` and `.` (not first)")]
    InvalidName(String),
    /// The albedo has no pixels.
    #[error("the albedo is empty")]
    EmptyAlbedo,
    /// The texture tiling is not a positive finite number.
    #[error("invalid tiling {0}: it must be a positive finite number")]
    InvalidTiling(f32),
    /// A map could not be encoded as PNG.
    #[error("failed to encode `{file}` as PNG: {source}")]
    Encode {
        /// The file it was meant for.
        file: String,
        /// The cause.
        source: image::ImageError,
    },
    /// The glTF document could not be serialised.
    #[error("failed to serialise the glTF document: {0}")]
    Json(#[from] serde_json::Error),
    /// A file could not be written.
    #[error("failed to write `{}`: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// An optional map of a material; the albedo is always written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapKind {
    /// A tangent-space normal map (`<name>.normal.png`).
    Normal,
    /// Roughness, in the G channel of `<name>.orm.png`.
    Roughness,
    /// Ambient occlusion, in the R channel of `<name>.orm.png`.
    Ao,
}

/// Writes the material `name` into `dir`: `<name>.albedo.png`, `<name>.normal.png` if `maps`
/// has [`MapKind::Normal`], `<name>.orm.png` if it has [`MapKind::Roughness`] or
/// [`MapKind::Ao`] (a missing roughness is 255, fully rough; a missing occlusion is 255, none),
/// and `<name>.gltf` ([`quad_gltf`] with `tiling`). Each file is written atomically; nothing is
/// written when the input is invalid. Returns the written paths in that order.
pub fn write_material(
    dir: &Path,
    name: &str,
    albedo: &RgbaImage,
    maps: &[MapKind],
    tiling: f32,
) -> Result<Vec<PathBuf>, MaterialError> {
    let valid_name = !name.starts_with('.')
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid_name {
        return Err(MaterialError::InvalidName(name.into()));
    }
    if albedo.width() == 0 || albedo.height() == 0 {
        return Err(MaterialError::EmptyAlbedo);
    }
    let _span = tracing::debug_span!("write_material", name, ?maps).entered();
    let has = |kind| maps.contains(&kind);

    let png = |suffix: &str| format!("{name}.{suffix}.png");
    let normal = has(MapKind::Normal).then(|| normal_map(albedo, NORMAL_STRENGTH));
    let orm = (has(MapKind::Roughness) || has(MapKind::Ao)).then(|| {
        let roughness = if has(MapKind::Roughness) {
            roughness_map(albedo)
        } else {
            RgbaImage::from_pixel(albedo.width(), albedo.height(), Rgba([255; 4]))
        };
        occlusion_roughness_metallic(
            has(MapKind::Ao).then(|| ao_map(albedo)).as_ref(),
            &roughness,
        )
    });
    let files = MaterialFiles {
        albedo: png("albedo"),
        normal: normal.as_ref().map(|_| png("normal")),
        orm: orm.as_ref().map(|_| png("orm")),
    };
    let gltf = quad_gltf(name, &files, tiling)?;

    let images = [
        (Some(files.albedo), Some(albedo)),
        (files.normal, normal.as_ref()),
        (files.orm, orm.as_ref()),
    ];
    let mut outputs = Vec::with_capacity(images.len() + 1);
    for (file, image) in images.into_iter().filter_map(|(f, i)| f.zip(i)) {
        let mut bytes = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .map_err(|source| MaterialError::Encode {
                file: file.clone(),
                source,
            })?;
        outputs.push((file, bytes));
    }
    outputs.push((format!("{name}.gltf"), gltf));

    outputs
        .into_iter()
        .map(|(file, bytes)| {
            let path = dir.join(file);
            crate::atomic::write(&path, &bytes).map_err(|source| MaterialError::Write {
                path: path.clone(),
                source,
            })?;
            tracing::debug!(path = %path.display(), bytes = bytes.len(), "wrote");
            Ok(path)
        })
        .collect()
}
