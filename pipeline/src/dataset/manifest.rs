//! The dataset manifest: one JSON object per image, in JSON Lines, sorted by id.
//!
//! The manifest is the dataset's identity: its [`Manifest::hash`] (sha256 of the canonical JSONL)
//! is what a model version records as its training data, so the serialisation is canonical —
//! compact JSON, fields in declaration order, items sorted by id whatever order they were built in.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::DatasetError;
use super::files::{sha256_hex, write_durable};

/// Whether an item may be used to train the generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Used for training.
    Train,
    /// Kept out of training; reserved for benchmarks.
    Heldout,
}

impl Split {
    /// The lowercase name used in the manifest (`"train"`, `"heldout"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Heldout => "heldout",
        }
    }
}

/// One image of the dataset with its caption and provenance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestItem {
    /// Unique id, `"<set>/<name>"`: `"twemoji/red-apple"`, `"textures/red-brick-3"`.
    pub id: String,
    /// Lowercase words, single spaces: `"red apple twemoji food drink"`.
    pub caption: String,
    /// Hex sha256 of the PNG file's bytes.
    pub sha256: String,
    /// Path of the PNG, relative to the manifest's folder.
    pub image: String,
    /// Where the image comes from: `"@iconify-json/twemoji@1.2.5"`.
    pub source: String,
    /// Name of the icon (or texture) within its source.
    pub icon: String,
    /// SPDX licence id.
    pub license: String,
    /// Attribution line required by the licence.
    pub attribution: String,
    /// Train or held out.
    pub split: Split,
    /// Ethereum address of who contributed the image, when a creator folder's
    /// `contributors.toml` names one; registry versions derive revenue shares from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contributor: Option<String>,
}

/// A whole dataset: its items, sorted by id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Manifest {
    /// The items; [`Manifest::new`] and [`Manifest::load`] keep them sorted by id, and the
    /// serialisation sorts anyway.
    pub items: Vec<ManifestItem>,
}

impl Manifest {
    /// A manifest of these items, sorted into canonical order.
    pub fn new(mut items: Vec<ManifestItem>) -> Manifest {
        canonical_order(&mut items);
        Manifest { items }
    }

    /// Reads a JSON Lines manifest. Blank lines are ignored; a bad line is an error naming the
    /// file, the 1-based line number and serde's message.
    pub fn load(path: &Path) -> Result<Manifest, DatasetError> {
        let text = std::fs::read_to_string(path).map_err(|source| DatasetError::Read {
            path: path.to_owned(),
            source,
        })?;
        Manifest::from_jsonl(&text, path)
    }

    /// Parses JSON Lines text; `path` only names the source in errors.
    pub fn from_jsonl(text: &str, path: &Path) -> Result<Manifest, DatasetError> {
        let mut items = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let item = serde_json::from_str(line).map_err(|source| DatasetError::ManifestLine {
                path: path.to_owned(),
                line: index + 1,
                source,
            })?;
            items.push(item);
        }
        Ok(Manifest::new(items))
    }

    /// Writes [`Manifest::to_jsonl`] atomically (temp file in the same folder, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), DatasetError> {
        write_durable(path, self.to_jsonl().as_bytes())
    }

    /// The canonical JSON Lines text: one compact object per line, sorted by id, each line ending
    /// in `'\n'`.
    pub fn to_jsonl(&self) -> String {
        let mut lines: Vec<(&str, String)> = self
            .items
            .iter()
            .map(|item| (item.id.as_str(), item_line(item)))
            .collect();
        lines.sort();
        let mut out = String::with_capacity(lines.iter().map(|(_, l)| l.len() + 1).sum());
        for (_, line) in lines {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// The dataset hash: hex sha256 of [`Manifest::to_jsonl`].
    pub fn hash(&self) -> String {
        sha256_hex(self.to_jsonl().as_bytes())
    }

    /// Checks that every item's image exists under `root` and has the recorded sha256; the
    /// first failure (in id order) names the item and the path.
    pub fn verify_images(&self, root: &Path) -> Result<(), DatasetError> {
        let results: Vec<Result<(), DatasetError>> = self
            .items
            .par_iter()
            .map(|item| verify_item(item, root))
            .collect();
        results.into_iter().collect()
    }

    /// Number of items per SPDX licence id.
    pub fn licences(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for item in &self.items {
            *counts.entry(item.license.clone()).or_insert(0) += 1;
        }
        counts
    }
}

fn item_line(item: &ManifestItem) -> String {
    // A struct of strings and a unit enum always serialises.
    serde_json::to_string(item).unwrap_or_default()
}

/// Sorts by id, then by the whole serialised item so that even duplicate ids have one order.
fn canonical_order(items: &mut [ManifestItem]) {
    items.sort_by_cached_key(|item| (item.id.clone(), item_line(item)));
}

fn verify_item(item: &ManifestItem, root: &Path) -> Result<(), DatasetError> {
    let relative = Path::new(&item.image);
    if item.image.is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(DatasetError::ImagePath {
            id: item.id.clone(),
            image: item.image.clone(),
        });
    }
    let path = root.join(relative);
    let bytes = std::fs::read(&path).map_err(|source| DatasetError::ImageMissing {
        id: item.id.clone(),
        path: path.clone(),
        source,
    })?;
    let actual = sha256_hex(&bytes);
    if actual != item.sha256 {
        return Err(DatasetError::ImageHash {
            id: item.id.clone(),
            path,
            expected: item.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(id: &str) -> ManifestItem {
        ManifestItem {
            id: id.to_owned(),
            caption: format!("{id} flat"),
            sha256: "ab".repeat(32),
            image: format!("images/{}.png", id.replace('/', "__")),
            source: "@iconify-json/test@1.0.0".to_owned(),
            icon: id.rsplit('/').next().unwrap_or_default().to_owned(),
            license: "MIT".to_owned(),
            attribution: "Someone (MIT)".to_owned(),
            split: Split::Train,
            contributor: None,
        }
    }

    #[test]
    fn jsonl_round_trip_and_sorted() {
        let m = Manifest::new(vec![item("b/two"), item("a/one"), item("c/three")]);
        let text = m.to_jsonl();
        assert!(text.ends_with('\n'));
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().next().unwrap().contains("\"a/one\""));
        let back = Manifest::from_jsonl(&text, Path::new("m.jsonl")).unwrap();
        assert_eq!(back, m);
        assert!(text.contains("\"split\":\"train\""));
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.jsonl");
        let m = Manifest::new(vec![item("x/1"), item("x/0")]);
        m.save(&path).unwrap();
        assert_eq!(Manifest::load(&path).unwrap(), m);
        // No temp file left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn hash_is_order_independent_and_field_sensitive() {
        let a = Manifest {
            items: vec![item("a/1"), item("b/2")],
        };
        let b = Manifest {
            items: vec![item("b/2"), item("a/1")],
        };
        assert_eq!(a.hash(), b.hash());
        let edits: [fn(&mut ManifestItem); 9] = [
            |i| i.id.push('x'),
            |i| i.caption.push('x'),
            |i| i.sha256.push('x'),
            |i| i.image.push('x'),
            |i| i.source.push('x'),
            |i| i.icon.push('x'),
            |i| i.license.push('x'),
            |i| i.attribution.push('x'),
            |i| i.split = Split::Heldout,
        ];
        for edit in edits {
            let mut c = a.clone();
            edit(&mut c.items[1]);
            assert_ne!(a.hash(), c.hash());
        }
    }

    #[test]
    fn bad_line_names_the_line() {
        let good = item("a/1");
        let text = format!(
            "{}\n\n{{\"id\": 3}}\n",
            serde_json::to_string(&good).unwrap()
        );
        let err = Manifest::from_jsonl(&text, Path::new("data/manifest.jsonl")).unwrap_err();
        assert!(
            matches!(err, DatasetError::ManifestLine { line: 3, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("data/manifest.jsonl") && msg.contains("line 3"),
            "{msg}"
        );
    }

    #[test]
    fn verify_images_checks_existence_hash_and_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("images")).unwrap();
        let mut it = item("a/1");
        std::fs::write(dir.path().join(&it.image), b"png bytes").unwrap();
        it.sha256 = sha256_hex(b"png bytes");
        let mut m = Manifest::new(vec![it]);
        m.verify_images(dir.path()).unwrap();

        m.items[0].sha256 = "00".repeat(32);
        let err = m.verify_images(dir.path()).unwrap_err();
        assert!(matches!(err, DatasetError::ImageHash { .. }) && err.to_string().contains("a/1"));

        m.items[0].image = "images/missing.png".to_owned();
        let err = m.verify_images(dir.path()).unwrap_err();
        assert!(matches!(err, DatasetError::ImageMissing { .. }));

        m.items[0].image = "../escape.png".to_owned();
        let err = m.verify_images(dir.path()).unwrap_err();
        assert!(matches!(err, DatasetError::ImagePath { .. }));
    }

    #[test]
    fn licences_count() {
        let mut b = item("b/1");
        b.license = "CC0-1.0".to_owned();
        let m = Manifest::new(vec![item("a/1"), b, item("c/1")]);
        let l = m.licences();
        assert_eq!(l.get("MIT"), Some(&2));
        assert_eq!(l.get("CC0-1.0"), Some(&1));
    }

    fn arb_item() -> impl Strategy<Value = ManifestItem> {
        (
            (".*", ".*", "[0-9a-f]{64}", ".*", ".*"),
            (".*", ".*", ".*", any::<bool>()),
        )
            .prop_map(
                |((id, caption, sha256, image, source), (icon, license, attribution, held))| {
                    ManifestItem {
                        id,
                        caption,
                        sha256,
                        image,
                        source,
                        icon,
                        license,
                        attribution,
                        split: if held { Split::Heldout } else { Split::Train },
                        contributor: held.then(|| format!("0x{}", "ab".repeat(20))),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn arbitrary_items_round_trip(items in proptest::collection::vec(arb_item(), 0..8)) {
            let m = Manifest::new(items);
            let text = m.to_jsonl();
            prop_assert_eq!(text.lines().count(), m.items.len());
            let back = Manifest::from_jsonl(&text, Path::new("p.jsonl")).unwrap();
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(back.hash(), m.hash());
        }
    }
}
