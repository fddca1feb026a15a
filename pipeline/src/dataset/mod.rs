//! The house model's training set: openly licensed icons and procedural tileable textures,
//! rendered to small RGBA images with captions and per-image provenance.
//!
//! ```text
//! node_modules/@iconify-json/*  ──select (subset)──►  render SVG (iconify)  ─┐
//! material × colour × variant   ──────────────────►  generate (textures)   ─┴─► images/*.png
//!                                                                               manifest.jsonl
//!                                                                               dataset.json
//! ```
//!
//! Design values: **reproducible** (same packages + seed → byte-identical images and the same
//! dataset hash), **attributable** (every image carries its source, version, SPDX licence and
//! attribution, read from the packages themselves), **robust** (an icon that fails to render is
//! skipped, logged and counted, never a panic). It refuses share-alike sources; see [`subset`].
//!
//! ```no_run
//! use autonomy_pipeline::dataset::{build, BuildOptions};
//! let opts = BuildOptions {
//!     node_modules: "node_modules".into(),
//!     out_dir: "out/dataset".into(),
//!     size: 32,
//!     seed: 0,
//! };
//! let manifest = build(&opts, &|done, total| eprintln!("{done}/{total}"))?;
//! println!("{} items, hash {}", manifest.items.len(), manifest.hash());
//! # Ok::<(), autonomy_pipeline::dataset::DatasetError>(())
//! ```

mod error;
mod files;
pub mod iconify;
pub mod manifest;
pub mod noise;
pub mod subset;
pub mod textures;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use error::DatasetError;
pub use manifest::{Manifest, ManifestItem, Split};

use iconify::IconifyPackage;
use subset::IconSet;
use textures::TextureSpec;

/// Options for building the dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    /// The `node_modules` folder holding `@iconify-json/<set>` packages.
    pub node_modules: PathBuf,
    /// Where `images/`, `manifest.jsonl` and `dataset.json` are written.
    pub out_dir: PathBuf,
    /// Width and height of every image, in pixels (32 for the house model; 8..=1024).
    pub size: u32,
    /// Seed of the procedural textures.
    pub seed: u64,
}

/// The `dataset.json` summary written next to the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetSummary {
    /// [`Manifest::hash`] of the built manifest.
    pub dataset_hash: String,
    /// Image size in pixels.
    pub size: u32,
    /// Texture seed.
    pub seed: u64,
    /// Number of items.
    pub items: usize,
    /// Items per source.
    pub by_source: BTreeMap<String, usize>,
    /// Items per SPDX licence.
    pub by_license: BTreeMap<String, usize>,
    /// Items per split (`train`, `heldout`).
    pub by_split: BTreeMap<String, usize>,
    /// Every source with its licence terms, for attribution notices.
    pub sources: Vec<SourceInfo>,
    /// Held-out concepts and the icon sets that draw them.
    pub heldout_concepts: BTreeMap<String, Vec<String>>,
    /// Icons that were selected but could not be rendered.
    pub skipped: Vec<SkippedIcon>,
}

/// One source of images and its licence terms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `"@iconify-json/twemoji@1.2.5"` or `"autonomy/procedural-textures"`.
    pub source: String,
    /// Display name of the set.
    pub name: String,
    /// Author.
    pub author: String,
    /// Author's URL.
    pub author_url: Option<String>,
    /// SPDX licence id.
    pub license: String,
    /// Licence title.
    pub license_title: String,
    /// Licence URL.
    pub license_url: Option<String>,
}

/// An icon that was selected but not rendered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkippedIcon {
    /// The source package.
    pub source: String,
    /// The icon name.
    pub icon: String,
    /// Why.
    pub reason: String,
}

/// What to build: which icon sets and how many texture variants. `build` uses the full plan;
/// tests use small ones.
struct Plan<'a> {
    icon_sets: &'a [IconSet],
    texture_variants: u32,
}

/// Builds images under `out_dir/images/<id with '/' replaced by '__'>.png`,
/// `out_dir/manifest.jsonl` and `out_dir/dataset.json` (see [`DatasetSummary`]), and returns
/// the manifest. `progress(done, total)` is called on the calling thread as work completes.
///
/// Icons that fail to render are skipped with a warning and listed in the summary. Images of an
/// earlier build that are no longer in the manifest are left in place (the manifest is the
/// dataset; [`Manifest::verify_images`] checks it).
pub fn build(
    opts: &BuildOptions,
    progress: &dyn Fn(usize, usize),
) -> Result<Manifest, DatasetError> {
    let plan = Plan {
        icon_sets: &subset::ICON_SETS,
        texture_variants: textures::VARIANTS,
    };
    build_plan(opts, &plan, progress)
}

enum Job<'a> {
    Icon {
        package: &'a IconifyPackage,
        set: &'a IconSet,
        name: &'a str,
        category: Option<&'a str>,
    },
    Texture(TextureSpec),
}

enum Outcome {
    Item(ManifestItem),
    Skipped(SkippedIcon),
}

/// Jobs per parallel batch; progress is reported between batches.
const BATCH: usize = 256;

fn build_plan(
    opts: &BuildOptions,
    plan: &Plan<'_>,
    progress: &dyn Fn(usize, usize),
) -> Result<Manifest, DatasetError> {
    let _span = tracing::info_span!("dataset_build", out = %opts.out_dir.display()).entered();
    if !(8..=1024).contains(&opts.size) {
        return Err(DatasetError::InvalidSize { size: opts.size });
    }
    let images_dir = opts.out_dir.join("images");
    std::fs::create_dir_all(&images_dir).map_err(|source| DatasetError::Write {
        path: images_dir.clone(),
        source,
    })?;

    let packages = plan
        .icon_sets
        .iter()
        .map(|set| {
            let dir = opts.node_modules.join("@iconify-json").join(set.prefix);
            let _span = tracing::info_span!("load_package", prefix = set.prefix).entered();
            IconifyPackage::load(&dir)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut jobs = Vec::new();
    let mut heldout_concepts: BTreeMap<String, Vec<String>> = subset::HELDOUT_CONCEPTS
        .iter()
        .map(|c| (c.to_string(), Vec::new()))
        .collect();
    for (package, set) in packages.iter().zip(plan.icon_sets) {
        let selected = subset::select(package, set);
        tracing::info!(
            source = %package.source(),
            selected = selected.len(),
            "selected icons"
        );
        for icon in selected {
            if let Some(sets) = heldout_concepts.get_mut(icon.name)
                && set.by_category
            {
                sets.push(package.prefix.clone());
            }
            jobs.push(Job::Icon {
                package,
                set,
                name: icon.name,
                category: icon.category,
            });
        }
    }
    for (concept, sets) in &heldout_concepts {
        let held = sets.iter().any(|s| s == subset::HELDOUT_PREFIX);
        if !plan.icon_sets.is_empty() && (!held || sets.len() < 2) {
            tracing::warn!(
                concept,
                ?sets,
                "held-out concept is not drawn by twemoji and another set"
            );
        }
    }
    jobs.extend(
        textures::specs(plan.texture_variants)
            .into_iter()
            .map(Job::Texture),
    );

    let total = jobs.len();
    progress(0, total);
    let mut items = Vec::with_capacity(total);
    let mut skipped = Vec::new();
    let mut done = 0;
    for batch in jobs.chunks(BATCH) {
        let outcomes: Vec<Result<Outcome, DatasetError>> = batch
            .par_iter()
            .map(|job| run_job(job, opts, &images_dir))
            .collect();
        for outcome in outcomes {
            match outcome? {
                Outcome::Item(item) => items.push(item),
                Outcome::Skipped(skip) => skipped.push(skip),
            }
        }
        done += batch.len();
        progress(done, total);
    }

    let manifest = Manifest::new(items);
    manifest.save(&opts.out_dir.join("manifest.jsonl"))?;
    let summary = summarise(opts, &manifest, &packages, heldout_concepts, skipped);
    tracing::info!(
        items = summary.items,
        skipped = summary.skipped.len(),
        hash = %summary.dataset_hash,
        "dataset built"
    );
    let summary_path = opts.out_dir.join("dataset.json");
    let json = serde_json::to_vec_pretty(&summary).map_err(|source| DatasetError::Json {
        path: summary_path.clone(),
        source,
    })?;
    files::write_durable(&summary_path, &json)?;
    Ok(manifest)
}

fn run_job(job: &Job<'_>, opts: &BuildOptions, images_dir: &Path) -> Result<Outcome, DatasetError> {
    // The item's fields except `sha256` and `image`, which come from the written PNG.
    let (mut item, image) = match job {
        Job::Icon {
            package,
            set,
            name,
            category,
        } => {
            let Some(data) = package.icons.get(*name) else {
                return Ok(skip(package, name, "not in icons.json".to_owned()));
            };
            let image = match iconify::render_icon(data, opts.size, set.current_color) {
                Ok(image) => image,
                Err(err) => return Ok(skip(package, name, err.to_string())),
            };
            let item = ManifestItem {
                id: format!("{}/{name}", package.prefix),
                caption: subset::icon_caption(name, set.style, *category),
                sha256: String::new(),
                image: String::new(),
                source: package.source(),
                icon: name.to_string(),
                license: package.license_spdx.clone(),
                attribution: package.attribution(),
                split: subset::icon_split(&package.prefix, name),
                contributor: None,
            };
            (item, image)
        }
        Job::Texture(spec) => {
            let item = ManifestItem {
                id: spec.id(),
                caption: spec.caption(),
                sha256: String::new(),
                image: String::new(),
                source: textures::SOURCE.to_owned(),
                icon: spec.name(),
                license: textures::LICENSE.to_owned(),
                attribution: textures::ATTRIBUTION.to_owned(),
                split: spec.split(),
                contributor: None,
            };
            (item, spec.generate(opts.seed, opts.size))
        }
    };
    let png = files::encode_png(&item.id, &image)?;
    let file_name = format!("{}.png", item.id.replace('/', "__"));
    files::write_image(&images_dir.join(&file_name), &png)?;
    item.sha256 = files::sha256_hex(&png);
    item.image = format!("images/{file_name}");
    Ok(Outcome::Item(item))
}

fn skip(package: &IconifyPackage, name: &str, reason: String) -> Outcome {
    tracing::warn!(package = %package.source(), icon = name, %reason, "skipping icon");
    Outcome::Skipped(SkippedIcon {
        source: package.source(),
        icon: name.to_owned(),
        reason,
    })
}

fn summarise(
    opts: &BuildOptions,
    manifest: &Manifest,
    packages: &[IconifyPackage],
    heldout_concepts: BTreeMap<String, Vec<String>>,
    mut skipped: Vec<SkippedIcon>,
) -> DatasetSummary {
    let mut by_source = BTreeMap::new();
    let mut by_split = BTreeMap::new();
    for item in &manifest.items {
        *by_source.entry(item.source.clone()).or_insert(0) += 1;
        *by_split.entry(item.split.as_str().to_owned()).or_insert(0) += 1;
    }
    let mut sources: Vec<SourceInfo> = packages
        .iter()
        .map(|p| SourceInfo {
            source: p.source(),
            name: p.name.clone(),
            author: p.author.clone(),
            author_url: p.author_url.clone(),
            license: p.license_spdx.clone(),
            license_title: p.license_title.clone(),
            license_url: p.license_url.clone(),
        })
        .collect();
    sources.push(SourceInfo {
        source: textures::SOURCE.to_owned(),
        name: "Autonomy procedural textures".to_owned(),
        author: textures::ATTRIBUTION.to_owned(),
        author_url: None,
        license: textures::LICENSE.to_owned(),
        license_title: "CC0 1.0 Universal".to_owned(),
        license_url: Some("https://creativecommons.org/publicdomain/zero/1.0/".to_owned()),
    });
    skipped.sort_by(|a, b| (&a.source, &a.icon).cmp(&(&b.source, &b.icon)));
    DatasetSummary {
        dataset_hash: manifest.hash(),
        size: opts.size,
        seed: opts.seed,
        items: manifest.items.len(),
        by_source,
        by_license: manifest.licences(),
        by_split,
        sources,
        heldout_concepts,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn tiny_node_modules(root: &Path) -> [IconSet; 2] {
        let sets = [subset::ICON_SETS[2], subset::ICON_SETS[3]];
        for (set, spdx) in sets.iter().zip(["CC-BY-4.0", "CC-BY-3.0"]) {
            iconify::tests::write_tiny_package(
                &root.join("@iconify-json").join(set.prefix),
                set.prefix,
                spdx,
            );
        }
        sets
    }

    #[test]
    fn builds_a_small_dataset_and_skips_broken_icons() {
        let dir = tempfile::tempdir().unwrap();
        let sets = tiny_node_modules(&dir.path().join("node_modules"));
        let opts = BuildOptions {
            node_modules: dir.path().join("node_modules"),
            out_dir: dir.path().join("out"),
            size: 16,
            seed: 5,
        };
        let plan = Plan {
            icon_sets: &sets,
            texture_variants: 1,
        };
        let calls = Cell::new(0);
        let manifest = build_plan(&opts, &plan, &|done, total| {
            assert!(done <= total);
            calls.set(calls.get() + 1);
        })
        .unwrap();
        assert!(calls.get() >= 2);

        let ids: Vec<&str> = manifest.items.iter().map(|i| i.id.as_str()).collect();
        assert!(ids.contains(&"twemoji/red-dot"));
        assert!(!ids.contains(&"twemoji/broken"));
        assert!(
            !ids.contains(&"twemoji/waving-hand"),
            "People & Body is out"
        );
        assert!(ids.contains(&"game-icons/waving-hand"));
        let textures = textures::specs(1).len();
        // twemoji: artist, blue-bar, red-dot; game-icons: those + waving-hand.
        assert_eq!(manifest.items.len(), 3 + 4 + textures);

        let dot = &manifest
            .items
            .iter()
            .find(|i| i.id == "twemoji/red-dot")
            .unwrap();
        assert_eq!(dot.caption, "red dot twemoji objects");
        assert_eq!(dot.license, "CC-BY-4.0");
        assert_eq!(dot.source, "@iconify-json/twemoji@9.8.7");
        assert_eq!(dot.attribution, "Test Author (CC-BY-4.0)");
        assert_eq!(dot.image, "images/twemoji__red-dot.png");
        let bar = manifest
            .items
            .iter()
            .find(|i| i.id == "game-icons/blue-bar")
            .unwrap();
        assert_eq!(bar.caption, "blue bar silhouette");

        // What was written is what was returned, and the images match their hashes.
        let out = dir.path().join("out");
        let loaded = Manifest::load(&out.join("manifest.jsonl")).unwrap();
        assert_eq!(loaded, manifest);
        loaded.verify_images(&out).unwrap();
        let summary: DatasetSummary =
            serde_json::from_slice(&std::fs::read(out.join("dataset.json")).unwrap()).unwrap();
        assert_eq!(summary.dataset_hash, manifest.hash());
        assert_eq!(summary.skipped.len(), 2, "{:?}", summary.skipped);
        assert!(summary.skipped.iter().all(|s| s.icon == "broken"));
        assert_eq!(summary.by_license.get("CC0-1.0"), Some(&textures));
        assert_eq!(summary.by_split.get("heldout"), Some(&textures));

        // Rebuilding gives the same dataset hash.
        let again = build_plan(&opts, &plan, &|_, _| {}).unwrap();
        assert_eq!(again.hash(), manifest.hash());
    }

    #[test]
    fn missing_package_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let opts = BuildOptions {
            node_modules: dir.path().join("nowhere"),
            out_dir: dir.path().join("out"),
            size: 32,
            seed: 0,
        };
        let err = build(&opts, &|_, _| {}).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("fluent-emoji-flat") && msg.contains("icons.json"),
            "{msg}"
        );
    }

    #[test]
    fn bad_size_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let opts = BuildOptions {
            node_modules: dir.path().to_owned(),
            out_dir: dir.path().join("out"),
            size: 0,
            seed: 0,
        };
        assert!(matches!(
            build(&opts, &|_, _| {}),
            Err(DatasetError::InvalidSize { size: 0 })
        ));
    }
}
