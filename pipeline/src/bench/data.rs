//! What the bench measures against, read from a dataset manifest: the classes, the real images
//! the classifier learns from, the held-out real images, and the held-out prompts.
//!
//! Classes are the held-out concepts ([`HELDOUT_CONCEPTS`]) and the texture materials. The
//! classifier learns a concept only from its `flat` and `noto` drawings (train split), and a
//! material from its train-split textures; it is tested on the held-out `twemoji` drawings and
//! the held-out texture variants, which neither it nor the generator ever saw.

use super::BenchError;
use crate::dataset::subset::HELDOUT_CONCEPTS;
use crate::dataset::textures::{self, Material};
use crate::dataset::{Manifest, ManifestItem, Split};
use crate::models::house::pixels;
use crate::train::data::{TrainingSet, fit};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Icon sets (id prefixes) whose drawings of a concept the classifier trains on.
pub const CLASSIFIER_SETS: [&str; 2] = ["fluent-emoji-flat", "noto"];

/// What a class is: a drawn concept or a texture material.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClassKind {
    /// An icon concept such as `red-apple`: a sprite on transparency.
    Concept,
    /// A texture material such as `brick`: opaque and tileable.
    Texture,
}

/// One class of the bench's classifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    /// Concept icon name (`red-apple`) or material slug (`wood-planks`).
    pub name: String,
    /// Concept or texture.
    pub kind: ClassKind,
}

/// One real image with its label.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// Premultiplied RGBA in [-1, 1], channel-major (see [`pixels::to_values`]).
    pub values: Vec<f32>,
    /// Index into [`BenchData::classes`].
    pub class: usize,
    /// The manifest caption.
    pub caption: String,
}

/// A held-out caption the generator is asked to draw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    /// Exactly the held-out item's caption.
    pub caption: String,
    /// The class a faithful image of it belongs to.
    pub class: usize,
}

/// Everything the bench reads from the dataset, at the model's image size.
pub struct BenchData {
    /// Image side.
    pub size: usize,
    /// Held-out concepts (in [`HELDOUT_CONCEPTS`] order), then materials (in [`Material::ALL`] order).
    pub classes: Vec<Class>,
    /// Real train-split images of the classes: what the classifier learns from.
    pub train: Vec<Example>,
    /// Real held-out images of the classes.
    pub heldout: Vec<Example>,
    /// Unique held-out captions, sorted.
    pub prompts: Vec<Prompt>,
    /// Every train-split image of the manifest (what the generator learned from), for
    /// nearest-neighbour distances.
    pub training_pixels: Vec<Vec<f32>>,
}

/// The class label of a manifest item, if it has one.
pub fn class_key(item: &ManifestItem) -> Option<(ClassKind, String)> {
    if item.source == textures::SOURCE {
        return material_of(&item.icon).map(|m| (ClassKind::Texture, m.slug()));
    }
    HELDOUT_CONCEPTS
        .contains(&item.icon.as_str())
        .then(|| (ClassKind::Concept, item.icon.clone()))
}

/// The material of a texture's icon name (`red-brick` → brick, `grey-cobblestone` → cobblestone).
pub fn material_of(icon: &str) -> Option<Material> {
    Material::ALL.into_iter().find(|m| {
        let slug = m.slug();
        icon == slug
            || icon
                .strip_suffix(slug.as_str())
                .is_some_and(|rest| rest.ends_with('-'))
    })
}

/// The icon set of an item: the part of its id before `/`.
fn set_of(item: &ManifestItem) -> &str {
    item.id.split('/').next().unwrap_or_default()
}

/// Whether the classifier may learn from this train-split item.
fn trains_classifier(item: &ManifestItem, kind: ClassKind) -> bool {
    item.split == Split::Train
        && (kind == ClassKind::Texture || CLASSIFIER_SETS.contains(&set_of(item)))
}

impl BenchData {
    /// Loads the manifest at `path` and its images, resized to `size`.
    pub fn load(path: &Path, size: usize) -> Result<Self, BenchError> {
        let not_enough = |message: String| BenchError::NotEnoughData {
            path: path.to_path_buf(),
            message,
        };
        // The whole train split, as the generator saw it.
        let training = TrainingSet::load(path, size)?;
        let manifest = Manifest::load(path)?;
        let root = path.parent().unwrap_or(Path::new("."));

        let mut concepts: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        let mut materials: BTreeMap<String, bool> = BTreeMap::new();
        for item in &manifest.items {
            match class_key(item) {
                Some((ClassKind::Concept, name)) => {
                    let entry = concepts.entry(name).or_default();
                    entry.0 |= trains_classifier(item, ClassKind::Concept);
                    entry.1 |= item.split == Split::Heldout;
                }
                Some((ClassKind::Texture, name)) if item.split == Split::Train => {
                    materials.insert(name, true);
                }
                _ => {}
            }
        }
        // A concept counts only if the classifier can learn it and the generator is tested on it.
        let mut classes: Vec<Class> = HELDOUT_CONCEPTS
            .iter()
            .filter(|c| concepts.get(**c) == Some(&(true, true)))
            .map(|c| Class {
                name: (*c).to_string(),
                kind: ClassKind::Concept,
            })
            .collect();
        classes.extend(
            Material::ALL
                .iter()
                .filter(|m| materials.contains_key(&m.slug()))
                .map(|m| Class {
                    name: m.slug(),
                    kind: ClassKind::Texture,
                }),
        );
        if classes.len() < 2 {
            return Err(not_enough(format!(
                "only {} classes (held-out concepts drawn by {} plus texture materials); the \
                 bench needs at least 2: build it with `autonomy dataset`",
                classes.len(),
                CLASSIFIER_SETS.join(" and ")
            )));
        }
        let index: BTreeMap<(ClassKind, String), usize> = classes
            .iter()
            .enumerate()
            .map(|(i, c)| ((c.kind, c.name.clone()), i))
            .collect();
        let class_of = |item: &ManifestItem| {
            class_key(item).and_then(|(kind, name)| index.get(&(kind, name)).copied())
        };

        let train: Vec<Example> = training
            .manifest
            .items
            .iter()
            .zip(&training.pixels)
            .filter_map(|(item, values)| {
                let class = class_of(item)?;
                trains_classifier(item, classes[class].kind).then(|| Example {
                    values: values.clone(),
                    class,
                    caption: item.caption.clone(),
                })
            })
            .collect();

        let heldout_items: Vec<(&ManifestItem, usize)> = manifest
            .items
            .iter()
            .filter(|i| i.split == Split::Heldout)
            .filter_map(|i| class_of(i).map(|c| (i, c)))
            .collect();
        if heldout_items.is_empty() {
            return Err(not_enough(
                "no held-out images of the classes: build the dataset with `autonomy dataset`"
                    .into(),
            ));
        }
        let heldout = heldout_items
            .par_iter()
            .map(|(item, class)| {
                let file = root.join(&item.image);
                let image = image::open(&file)
                    .map_err(|source| BenchError::Image { path: file, source })?;
                Ok(Example {
                    values: pixels::to_values(&fit(&image.to_rgba8(), size as u32)),
                    class: *class,
                    caption: item.caption.clone(),
                })
            })
            .collect::<Result<Vec<_>, BenchError>>()?;
        let prompts = heldout
            .iter()
            .map(|e| (e.caption.clone(), e.class))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .map(|(caption, class)| Prompt { caption, class })
            .collect();
        Ok(Self {
            size,
            classes,
            train,
            heldout,
            prompts,
            training_pixels: training.pixels,
        })
    }

    /// Real images (train and held out) that a prompt's generated images should be as varied
    /// as: those with the same caption when there are several (texture variants), else every
    /// real drawing of the prompt's class (a concept is drawn once per style).
    pub fn real_references(&self, prompt: &Prompt) -> Vec<&Example> {
        let pool = || self.train.iter().chain(&self.heldout);
        let same: Vec<&Example> = pool().filter(|e| e.caption == prompt.caption).collect();
        if same.len() >= 2 {
            same
        } else {
            pool().filter(|e| e.class == prompt.class).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn materials_come_from_texture_names() {
        assert_eq!(material_of("red-brick"), Some(Material::Brick));
        assert_eq!(material_of("grey-cobblestone"), Some(Material::Cobblestone));
        assert_eq!(material_of("dark-stone"), Some(Material::Stone));
        assert_eq!(material_of("light-wood-planks"), Some(Material::WoodPlanks));
        assert_eq!(material_of("blue-metal-plate"), Some(Material::MetalPlate));
        assert_eq!(material_of("red-apple"), None);
    }
}
