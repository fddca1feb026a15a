//! Reading Iconify JSON icon packages (`@iconify-json/*` on npm) and rendering their SVGs.
//!
//! A package folder holds `icons.json` (the SVG bodies), `metadata.json` (categories, emoji sets
//! only), `info.json` (author and licence) and `package.json` (npm name and version). Versions,
//! licences and authors are always read from these files, never hard-coded, so that updating a
//! package updates the provenance with it.
//!
//! Rendering uses resvg (no text, no system fonts, no raster images: icon bodies are paths and
//! gradients) into a premultiplied pixmap, then converts to straight-alpha RGBA.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::RgbaImage;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::DatasetError;

/// One drawable icon of a package, with its view box resolved against the package defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct IconData {
    /// SVG markup that goes inside `<svg>`.
    pub body: String,
    /// View box left edge.
    pub left: f32,
    /// View box top edge.
    pub top: f32,
    /// View box width.
    pub width: f32,
    /// View box height.
    pub height: f32,
    /// Iconify marks removed or renamed icons as hidden; they are kept only for old links.
    pub hidden: bool,
    /// Whether the icon asks for a rotation or flip (which the renderer does not apply).
    pub transformed: bool,
}

/// An Iconify JSON package read from disk. Aliases are not loaded: they repeat other icons.
#[derive(Clone, Debug)]
pub struct IconifyPackage {
    /// The package folder.
    pub dir: PathBuf,
    /// Iconify prefix (`"twemoji"`), from `icons.json`.
    pub prefix: String,
    /// npm package name (`"@iconify-json/twemoji"`), from `package.json`.
    pub npm_name: String,
    /// npm version, from `package.json`.
    pub version: String,
    /// Display name of the icon set, from `info.json`.
    pub name: String,
    /// Author's name, from `info.json`.
    pub author: String,
    /// Author's URL, from `info.json`, if any.
    pub author_url: Option<String>,
    /// SPDX licence id, from `info.json`.
    pub license_spdx: String,
    /// Licence title, from `info.json`.
    pub license_title: String,
    /// Licence URL, from `info.json`, if any.
    pub license_url: Option<String>,
    /// Icons by name.
    pub icons: BTreeMap<String, IconData>,
    /// Category name → icon names, from `metadata.json`; empty when the package has none.
    pub categories: BTreeMap<String, Vec<String>>,
}

/// Why one icon could not be rendered (the icon is then skipped, not the build).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The assembled SVG document does not parse.
    #[error("invalid SVG: {0}")]
    Svg(#[from] resvg::usvg::Error),
    /// The target size cannot hold a pixmap.
    #[error("cannot allocate a {0}x{0} pixmap")]
    Pixmap(u32),
    /// The icon needs a rotation or flip, which we do not apply.
    #[error("rotated or flipped icons are not supported")]
    Transformed,
    /// Nothing visible was drawn.
    #[error("the icon rendered fully transparent")]
    Empty,
}

#[derive(Deserialize)]
struct RawIcons {
    prefix: String,
    icons: BTreeMap<String, RawIcon>,
    left: Option<f32>,
    top: Option<f32>,
    width: Option<f32>,
    height: Option<f32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIcon {
    body: String,
    left: Option<f32>,
    top: Option<f32>,
    width: Option<f32>,
    height: Option<f32>,
    #[serde(default)]
    hidden: bool,
    #[serde(default)]
    rotate: u32,
    #[serde(default)]
    h_flip: bool,
    #[serde(default)]
    v_flip: bool,
}

#[derive(Deserialize, Default)]
struct RawMetadata {
    #[serde(default)]
    categories: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct RawInfo {
    name: Option<String>,
    author: Option<RawLink>,
    license: Option<RawLicense>,
}

#[derive(Deserialize)]
struct RawLink {
    name: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct RawLicense {
    title: Option<String>,
    spdx: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct RawPackage {
    name: Option<String>,
    version: Option<String>,
}

/// Iconify's default view box size when neither icon nor package gives one.
const ICONIFY_DEFAULT_SIZE: f32 = 16.0;

impl IconifyPackage {
    /// Reads a package folder. `metadata.json` is optional; the other three files are required,
    /// and so are `info.json`'s `license.spdx` and `author.name` and `package.json`'s `version`.
    pub fn load(dir: &Path) -> Result<IconifyPackage, DatasetError> {
        let icons_path = dir.join("icons.json");
        let raw: RawIcons = read_json(&icons_path)?;
        let info_path = dir.join("info.json");
        let info: RawInfo = read_json(&info_path)?;
        let package_path = dir.join("package.json");
        let package: RawPackage = read_json(&package_path)?;
        let metadata_path = dir.join("metadata.json");
        let metadata: RawMetadata = if metadata_path.exists() {
            read_json(&metadata_path)?
        } else {
            RawMetadata::default()
        };

        let required = |value: Option<String>, path: &Path, field: &'static str| {
            value
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| DatasetError::MissingField {
                    path: path.to_owned(),
                    field,
                })
        };
        let (author, author_url) = match info.author {
            Some(a) => (required(a.name, &info_path, "author.name")?, a.url),
            None => (required(None, &info_path, "author.name")?, None),
        };
        let (license_spdx, license_title, license_url) = match info.license {
            Some(l) => {
                let spdx = required(l.spdx, &info_path, "license.spdx")?;
                (spdx.clone(), l.title.unwrap_or(spdx), l.url)
            }
            None => (
                required(None, &info_path, "license.spdx")?,
                String::new(),
                None,
            ),
        };
        let version = required(package.version, &package_path, "version")?;
        let npm_name = package
            .name
            .unwrap_or_else(|| format!("@iconify-json/{}", raw.prefix));

        let default_left = raw.left.unwrap_or(0.0);
        let default_top = raw.top.unwrap_or(0.0);
        let default_width = raw.width.unwrap_or(ICONIFY_DEFAULT_SIZE);
        let default_height = raw.height.unwrap_or(ICONIFY_DEFAULT_SIZE);
        let icons = raw
            .icons
            .into_iter()
            .map(|(name, icon)| {
                let data = IconData {
                    body: icon.body,
                    left: icon.left.unwrap_or(default_left),
                    top: icon.top.unwrap_or(default_top),
                    width: icon.width.unwrap_or(default_width),
                    height: icon.height.unwrap_or(default_height),
                    hidden: icon.hidden,
                    transformed: icon.rotate % 4 != 0 || icon.h_flip || icon.v_flip,
                };
                (name, data)
            })
            .collect();

        Ok(IconifyPackage {
            dir: dir.to_owned(),
            name: info.name.unwrap_or_else(|| raw.prefix.clone()),
            prefix: raw.prefix,
            npm_name,
            version,
            author,
            author_url,
            license_spdx,
            license_title,
            license_url,
            icons,
            categories: metadata.categories,
        })
    }

    /// The provenance source string, `"<npm name>@<version>"`.
    pub fn source(&self) -> String {
        format!("{}@{}", self.npm_name, self.version)
    }

    /// The attribution line, `"<author> (<SPDX>)"`.
    pub fn attribution(&self) -> String {
        format!("{} ({})", self.author, self.license_spdx)
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, DatasetError> {
    let bytes = std::fs::read(path).map_err(|source| DatasetError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| DatasetError::Json {
        path: path.to_owned(),
        source,
    })
}

/// The standalone SVG document of an icon at `size`×`size` pixels. `currentColor` becomes
/// `current_color`; the default `preserveAspectRatio` (xMidYMid meet) keeps a non-square view
/// box's aspect ratio and centres it.
pub fn svg_document(icon: &IconData, size: u32, current_color: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="{} {} {} {}" width="{size}" height="{size}">{}</svg>"#,
        icon.left,
        icon.top,
        icon.width,
        icon.height,
        icon.body.replace("currentColor", current_color),
    )
}

/// Renders an icon to a `size`×`size` straight-alpha RGBA image on a transparent background.
pub fn render_icon(
    icon: &IconData,
    size: u32,
    current_color: &str,
) -> Result<RgbaImage, RenderError> {
    if icon.transformed {
        return Err(RenderError::Transformed);
    }
    let svg = svg_document(icon, size, current_color);
    render_svg(&svg, size)
}

/// Renders an SVG document to a `size`×`size` straight-alpha RGBA image, scaling the document's
/// own size to fit.
pub fn render_svg(svg: &str, size: u32) -> Result<RgbaImage, RenderError> {
    let tree = resvg::usvg::Tree::from_str(svg, &resvg::usvg::Options::default())?;
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size, size).ok_or(RenderError::Pixmap(size))?;
    let tree_size = tree.size();
    let scale = (size as f32 / tree_size.width()).min(size as f32 / tree_size.height());
    let transform = resvg::tiny_skia::Transform::from_scale(scale, scale);
    resvg::render(&tree, transform, &mut pixmap.as_mut());

    let mut rgba = Vec::with_capacity((size * size * 4) as usize);
    for pixel in pixmap.pixels() {
        let c = pixel.demultiply();
        rgba.extend_from_slice(&[c.red(), c.green(), c.blue(), c.alpha()]);
    }
    let image = RgbaImage::from_raw(size, size, rgba).ok_or(RenderError::Pixmap(size))?;
    if image.pixels().all(|p| p.0[3] == 0) {
        return Err(RenderError::Empty);
    }
    Ok(image)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes a tiny Iconify package into `dir`: a red dot, a non-square blue bar, a broken SVG,
    /// a hidden icon, skin-tone variants and a People & Body icon.
    pub(crate) fn write_tiny_package(dir: &Path, prefix: &str, spdx: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let icons = serde_json::json!({
            "prefix": prefix,
            "width": 16, "height": 16,
            "icons": {
                "red-dot": { "body": "<circle cx=\"8\" cy=\"8\" r=\"5\" fill=\"#ff0000\"/>" },
                "blue-bar": { "body": "<rect x=\"0\" y=\"0\" width=\"16\" height=\"8\" fill=\"currentColor\"/>", "height": 8 },
                "broken": { "body": "<path d=\"M0 0L16 16\" fill=\"#f00\"" },
                "old-dot": { "body": "<circle cx=\"8\" cy=\"8\" r=\"5\"/>", "hidden": true },
                "artist": { "body": "<circle cx=\"8\" cy=\"8\" r=\"5\"/>" },
                "artist-light": { "body": "<circle cx=\"8\" cy=\"8\" r=\"5\"/>" },
                "artist-medium-light": { "body": "<circle cx=\"8\" cy=\"8\" r=\"5\"/>" },
                "artist-medium": { "body": "<circle cx=\"8\" cy=\"8\" r=\"5\"/>" },
                "artist-medium-dark": { "body": "<circle cx=\"8\" cy=\"8\" r=\"5\"/>" },
                "artist-dark": { "body": "<circle cx=\"8\" cy=\"8\" r=\"5\"/>" },
                "waving-hand": { "body": "<circle cx=\"8\" cy=\"8\" r=\"5\"/>" }
            },
            "aliases": { "dot": { "parent": "red-dot" } }
        });
        let metadata = serde_json::json!({
            "categories": {
                "Objects": ["red-dot", "broken", "old-dot", "artist", "artist-light",
                            "artist-medium-light", "artist-medium", "artist-medium-dark", "artist-dark"],
                "Symbols": ["blue-bar"],
                "People & Body": ["waving-hand"]
            }
        });
        let info = serde_json::json!({
            "prefix": prefix, "name": "Tiny",
            "author": { "name": "Test Author", "url": "https://example.org" },
            "license": { "title": "Test", "spdx": spdx, "url": "https://example.org/l" }
        });
        let package =
            serde_json::json!({ "name": format!("@iconify-json/{prefix}"), "version": "9.8.7" });
        for (file, value) in [
            ("icons.json", icons),
            ("metadata.json", metadata),
            ("info.json", info),
            ("package.json", package),
        ] {
            std::fs::write(dir.join(file), value.to_string()).unwrap();
        }
    }

    #[test]
    fn loads_provenance_from_the_package_files() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_package(dir.path(), "tiny", "LicenseRef-Tiny");
        let pkg = IconifyPackage::load(dir.path()).unwrap();
        assert_eq!(pkg.prefix, "tiny");
        assert_eq!(pkg.license_spdx, "LicenseRef-Tiny");
        assert_eq!(pkg.source(), "@iconify-json/tiny@9.8.7");
        assert_eq!(pkg.attribution(), "Test Author (LicenseRef-Tiny)");
        assert!(!pkg.icons.contains_key("dot"), "aliases are not loaded");
        assert_eq!(pkg.icons["blue-bar"].height, 8.0);
        assert_eq!(pkg.icons["red-dot"].width, 16.0);
        assert!(pkg.icons["old-dot"].hidden);
        assert_eq!(pkg.categories["Symbols"], vec!["blue-bar".to_owned()]);
    }

    #[test]
    fn missing_spdx_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_package(dir.path(), "tiny", "MIT");
        std::fs::write(
            dir.path().join("info.json"),
            r#"{"author":{"name":"A"},"license":{"title":"?"}}"#,
        )
        .unwrap();
        let err = IconifyPackage::load(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("info.json") && msg.contains("license.spdx"),
            "{msg}"
        );
    }

    #[test]
    fn renders_transparent_corners_and_opaque_centre() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_package(dir.path(), "tiny", "MIT");
        let pkg = IconifyPackage::load(dir.path()).unwrap();
        let img = render_icon(&pkg.icons["red-dot"], 32, "#000000").unwrap();
        assert_eq!((img.width(), img.height()), (32, 32));
        assert_eq!(img.get_pixel(0, 0).0[3], 0);
        assert_eq!(img.get_pixel(31, 31).0[3], 0);
        let centre = img.get_pixel(16, 16).0;
        assert_eq!(centre, [255, 0, 0, 255]);
        // Anti-aliased edge pixels are straight (not premultiplied) alpha: still pure red.
        let edge = img
            .pixels()
            .find(|p| p.0[3] > 0 && p.0[3] < 255)
            .expect("an anti-aliased edge");
        assert!(edge.0[0] >= 250 && edge.0[1] == 0, "{edge:?}");
    }

    #[test]
    fn non_square_icons_keep_aspect_and_are_centred() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_package(dir.path(), "tiny", "MIT");
        let pkg = IconifyPackage::load(dir.path()).unwrap();
        // 16x8 bar → 32x16 band in the middle rows, currentColor replaced.
        let img = render_icon(&pkg.icons["blue-bar"], 32, "#0000ff").unwrap();
        assert_eq!(img.get_pixel(16, 3).0[3], 0);
        assert_eq!(img.get_pixel(16, 28).0[3], 0);
        assert_eq!(img.get_pixel(0, 16).0, [0, 0, 255, 255]);
        assert_eq!(img.get_pixel(31, 9).0, [0, 0, 255, 255]);
        assert_eq!(img.get_pixel(31, 22).0, [0, 0, 255, 255]);
    }

    #[test]
    fn broken_svg_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_package(dir.path(), "tiny", "MIT");
        let pkg = IconifyPackage::load(dir.path()).unwrap();
        let err = render_icon(&pkg.icons["broken"], 32, "#000000").unwrap_err();
        assert!(matches!(err, RenderError::Svg(_)), "{err}");
    }
}
