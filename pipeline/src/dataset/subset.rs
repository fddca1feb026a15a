//! Which icons go into the training set, how they are captioned, and which are held out.
//!
//! # Why this subset
//!
//! - **Licences.** Only permissive or attribution-only licences whose terms we can meet in a
//!   manifest line: fluent-emoji-flat (MIT), noto (Apache-2.0), twemoji (CC-BY-4.0), game-icons
//!   (CC-BY-3.0). openmoji is CC-BY-SA: whether share-alike reaches model weights trained on it
//!   is not a question we want to answer, so it is out. pixelarticons are UI glyphs, not game art.
//! - **Categories.** Objects, food, animals, places, symbols and faces are what a game's items and
//!   props look like. Flags are rectangles of stripes that teach a 32×32 model little, and
//!   "People & Body" is mostly the same figure in skin tones and genders (about 60% of each set),
//!   which would swamp everything else.
//! - **Variants.** Skin-tone variants, hidden (deprecated) icons and aliases repeat other icons.
//! - **game-icons** (all of them) give the model a second, monochrome style: silhouettes.
//!
//! # Captions
//!
//! Lowercase words, single spaces, no punctuation: `"{name words} {style} {category words}"`,
//! e.g. `"red apple flat food drink"`; game-icons have no categories: `"crossed swords
//! silhouette"`. The style word is the set's own (`flat`, `noto`, `twemoji`, `silhouette`) so the
//! model learns to separate the styles and a prompt can ask for one.
//!
//! # Held-out split
//!
//! For each concept in [`HELDOUT_CONCEPTS`] (chosen for games, and drawn in all three colour
//! emoji sets), the **twemoji** rendering is held out: "red apple twemoji food drink" never
//! appears in training while "red apple flat food drink" and "red apple noto food drink" do. A
//! benchmark can then ask for a known concept in a known style that was never seen together.

use super::Split;
use super::iconify::IconifyPackage;

/// An icon set we train on and how to treat it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IconSet {
    /// Iconify prefix, also the npm package `@iconify-json/<prefix>`.
    pub prefix: &'static str,
    /// The style word in captions.
    pub style: &'static str,
    /// Select by [`INCLUDED_CATEGORIES`] (emoji sets) or take every icon (no categories).
    pub by_category: bool,
    /// What `currentColor` renders as (black silhouettes for game-icons).
    pub current_color: &'static str,
}

/// The icon sets of the dataset, in build order.
pub const ICON_SETS: [IconSet; 4] = [
    IconSet {
        prefix: "fluent-emoji-flat",
        style: "flat",
        by_category: true,
        current_color: "#000000",
    },
    IconSet {
        prefix: "noto",
        style: "noto",
        by_category: true,
        current_color: "#000000",
    },
    IconSet {
        prefix: "twemoji",
        style: "twemoji",
        by_category: true,
        current_color: "#000000",
    },
    IconSet {
        prefix: "game-icons",
        style: "silhouette",
        by_category: false,
        current_color: "#000000",
    },
];

/// Emoji categories we keep (see the module docs for why Flags and People & Body are out).
pub const INCLUDED_CATEGORIES: [&str; 7] = [
    "Activities",
    "Animals & Nature",
    "Food & Drink",
    "Objects",
    "Travel & Places",
    "Symbols",
    "Smileys & Emotion",
];

/// The set whose rendering of a held-out concept is kept out of training.
pub const HELDOUT_PREFIX: &str = "twemoji";

/// Game-relevant concepts (icon names) whose [`HELDOUT_PREFIX`] rendering is held out. Each is
/// drawn by fluent-emoji-flat, noto and twemoji (the build warns if one goes missing).
pub const HELDOUT_CONCEPTS: [&str; 30] = [
    "red-apple",
    "banana",
    "grapes",
    "carrot",
    "cheese-wedge",
    "meat-on-bone",
    "bread",
    "cat-face",
    "dragon",
    "mushroom",
    "evergreen-tree",
    "fire",
    "gem-stone",
    "crown",
    "key",
    "crossed-swords",
    "shield",
    "bow-and-arrow",
    "crystal-ball",
    "money-bag",
    "bomb",
    "candle",
    "scroll",
    "magic-wand",
    "skull",
    "ghost",
    "coin",
    "trophy",
    "red-heart",
    "snowflake",
];

/// One icon picked from a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectedIcon<'a> {
    /// Icon name.
    pub name: &'a str,
    /// Its category, for sets selected by category.
    pub category: Option<&'a str>,
}

/// The icons of `pkg` that go into the dataset under `set`'s rules, sorted by name.
pub fn select<'a>(pkg: &'a IconifyPackage, set: &IconSet) -> Vec<SelectedIcon<'a>> {
    let has = |name: &str| pkg.icons.contains_key(name);
    let keep = |name: &str| {
        pkg.icons.get(name).is_some_and(|icon| !icon.hidden) && !is_skin_tone_variant(name, has)
    };
    let mut picked: Vec<SelectedIcon<'a>> = if set.by_category {
        let mut picked = Vec::new();
        for category in INCLUDED_CATEGORIES {
            let Some((category, names)) = pkg.categories.get_key_value(category) else {
                continue;
            };
            for name in names.iter().filter(|n| keep(n)) {
                picked.push(SelectedIcon {
                    name: name.as_str(),
                    category: Some(category.as_str()),
                });
            }
        }
        picked
    } else {
        pkg.icons
            .keys()
            .filter(|n| keep(n))
            .map(|name| SelectedIcon {
                name: name.as_str(),
                category: None,
            })
            .collect()
    };
    // An icon listed in two categories keeps the first (in INCLUDED_CATEGORIES order).
    picked.sort_by_key(|icon| icon.name);
    picked.dedup_by_key(|icon| icon.name);
    picked
}

const TONES: [&str; 5] = [
    "-medium-light",
    "-medium-dark",
    "-light",
    "-medium",
    "-dark",
];

/// Whether `name` is a skin-tone variant of another icon: noto/twemoji spell them
/// `…-skin-tone…`; fluent appends `-light`, `-medium-light`, `-medium`, `-medium-dark` or `-dark`
/// and has all five. Requiring all five keeps `vertical-traffic-light` and `police-car-light`.
pub fn is_skin_tone_variant(name: &str, exists: impl Fn(&str) -> bool) -> bool {
    if name.contains("skin-tone") {
        return true;
    }
    TONES.iter().any(|tone| {
        name.strip_suffix(tone).is_some_and(|stem| {
            !stem.is_empty() && TONES.iter().all(|t| exists(&format!("{stem}{t}")))
        })
    })
}

/// Lowercase ASCII words separated by single spaces; anything else separates words.
pub fn caption_words(text: &str) -> String {
    text.to_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The caption of an icon: `"{name words} {style} {category words}"`.
pub fn icon_caption(name: &str, style: &str, category: Option<&str>) -> String {
    let mut caption = caption_words(name);
    for part in [Some(style), category].into_iter().flatten() {
        let words = caption_words(part);
        if !words.is_empty() {
            if !caption.is_empty() {
                caption.push(' ');
            }
            caption.push_str(&words);
        }
    }
    caption
}

/// The split of an icon of set `prefix`.
pub fn icon_split(prefix: &str, name: &str) -> Split {
    if prefix == HELDOUT_PREFIX && HELDOUT_CONCEPTS.contains(&name) {
        Split::Heldout
    } else {
        Split::Train
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::iconify::tests::write_tiny_package;

    #[test]
    fn skin_tones_are_variants_but_lights_are_not() {
        let names = [
            "artist",
            "artist-light",
            "artist-medium-light",
            "artist-medium",
            "artist-medium-dark",
            "artist-dark",
            "police-car",
            "police-car-light",
            "vertical-traffic-light",
            "black-medium-square",
        ];
        let exists = |n: &str| names.contains(&n);
        for variant in &names[1..6] {
            assert!(is_skin_tone_variant(variant, exists), "{variant}");
        }
        for keep in [
            "artist",
            "police-car-light",
            "vertical-traffic-light",
            "black-medium-square",
        ] {
            assert!(!is_skin_tone_variant(keep, exists), "{keep}");
        }
        assert!(is_skin_tone_variant("artist-medium-dark-skin-tone", exists));
    }

    #[test]
    fn captions_are_plain_words() {
        assert_eq!(
            icon_caption("red-apple", "flat", Some("Food & Drink")),
            "red apple flat food drink"
        );
        assert_eq!(
            icon_caption("crossed-swords", "silhouette", None),
            "crossed swords silhouette"
        );
        assert_eq!(caption_words("  Smileys & Emotion "), "smileys emotion");
        assert_eq!(caption_words("1st-place_medal!"), "1st place medal");
    }

    #[test]
    fn heldout_only_twemoji_concepts() {
        assert_eq!(icon_split("twemoji", "red-apple"), Split::Heldout);
        assert_eq!(icon_split("noto", "red-apple"), Split::Train);
        assert_eq!(icon_split("fluent-emoji-flat", "red-apple"), Split::Train);
        assert_eq!(icon_split("twemoji", "green-apple"), Split::Train);
        assert!(HELDOUT_CONCEPTS.len() >= 24);
    }

    #[test]
    fn selection_filters_categories_variants_and_hidden() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_package(dir.path(), "tiny", "MIT");
        let pkg = IconifyPackage::load(dir.path()).unwrap();
        let emoji = IconSet {
            prefix: "tiny",
            style: "flat",
            by_category: true,
            current_color: "#000000",
        };
        let names: Vec<_> = select(&pkg, &emoji).iter().map(|i| i.name).collect();
        assert_eq!(names, ["artist", "blue-bar", "broken", "red-dot"]);
        let all = IconSet {
            by_category: false,
            ..emoji
        };
        let names: Vec<_> = select(&pkg, &all).iter().map(|i| i.name).collect();
        assert_eq!(
            names,
            ["artist", "blue-bar", "broken", "red-dot", "waving-hand"]
        );
    }
}
