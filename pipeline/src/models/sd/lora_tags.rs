//! LoRAs applied from a prompt, as A1111 writes them: `<lora:name>`, `<lora:name:0.8>`,
//! `<lora:name:0.8:0.5>` and `<lora:name:te=0.8:unet=0.5>` (the text encoder's scale, then the
//! UNet's; `<lyco:…>` alike), and `<lora:name:0.8:0.8:16>` or `<lora:name:0.8:dyn=16>` (its
//! low-rank updates cut to their first 16 ranks, as A1111's `dyn` cuts DyLoRA files), and
//! `<lora:name:1:lbw=OUTD>` (its strength in each block of the UNet, as the
//! sd-webui-lora-block-weight extension reads `lbw=`: see [`super::block_weights`]). A tag
//! names a LoRA file by its name without the extension, or by the name its trainer gave it
//! (`ss_output_name`); the caller finds the file ([`crate::models::locate::lora_named`]) and
//! merges it into the model at the tag's scale like any other LoRA, so the manifest records
//! the file and its hash. The tags themselves are taken out of the text the text
//! encoder reads, as A1111 takes them out.
//!
//! ```
//! use autonomy_pipeline::models::sd::lora_tags::{LoraTag, lora_tags, without_network_tags};
//! let prompt = "a knight, <lora:add_detail:0.5> castle";
//! assert_eq!(
//!     lora_tags(prompt).unwrap(),
//!     [LoraTag {
//!         text: "<lora:add_detail:0.5>".into(),
//!         name: "add_detail".into(),
//!         scale: 0.5,
//!         text_scale: None,
//!         rank: None,
//!         blocks: None,
//!     }]
//! );
//! assert_eq!(without_network_tags(prompt), "a knight,  castle");
//! ```

use std::sync::LazyLock;

use regex::Regex;

use super::block_weights::BlockWeights;
use super::lora::{LoraFile, LoraSummary};

/// The largest scale a LoRA takes, either way (as the recipe's `loras`).
pub const MOST_SCALE: f64 = 4.0;

/// A1111's extra-network tags of LoRAs: `<lora:…>` and LyCORIS's `<lyco:…>`.
static TAG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"<(?:lora|lyco):([^>]+)>").unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
});

/// One LoRA a prompt applies.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraTag {
    /// The tag as written.
    pub text: String,
    /// The LoRA file's name without its extension.
    pub name: String,
    /// How strongly to apply it (A1111's multiplier, its UNet multiplier where the tag gives
    /// two; 1 when it gives none).
    pub scale: f64,
    /// How strongly to apply its text-encoder updates, where the tag sets that apart.
    pub text_scale: Option<f64>,
    /// The ranks of its low-rank updates to apply, where the tag cuts them short (A1111's
    /// `dyn`).
    pub rank: Option<usize>,
    /// Its strength in each block, where the tag sets it (`lbw=`).
    pub blocks: Option<BlockWeights>,
}

/// The LoRA tags in `text`, in order, or what is wrong with the first bad one: no name, a
/// multiplier that is no number or lies beyond ±[`MOST_SCALE`], a `dyn` that is no positive
/// whole number, block weights that are no preset or list, or a parameter Autonomy does not
/// read (the block-weight extension's steps and elements).
pub fn lora_tags(text: &str) -> Result<Vec<LoraTag>, String> {
    TAG.captures_iter(text)
        .map(|found| {
            let tag = &found[0];
            let bad = |what: String| format!("`{tag}`: {what}");
            // As A1111 reads them: `key=value` items are named, the others positional.
            let (named, positional): (Vec<&str>, Vec<&str>) =
                found[1].split(':').partition(|item| item.contains('='));
            let name = positional.first().map_or("", |name| name.trim());
            if name.is_empty() {
                return Err(bad("names no LoRA (write `<lora:name:0.8>`)".into()));
            }
            let number = |what: &str, text: &str| -> Result<f64, String> {
                text.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| bad(format!("the {what} `{text}` is not a number")))
            };
            let mut text_scale = match positional.get(1) {
                Some(text) => number("multiplier", text)?,
                None => 1.0,
            };
            let mut unet_scale = match positional.get(2) {
                Some(text) => Some(number("UNet multiplier", text)?),
                None => None,
            };
            let rank_of = |text: &str| -> Result<usize, String> {
                text.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&rank| rank > 0)
                    .ok_or_else(|| bad(format!("the rank (`dyn`) `{text}` is not a whole number above 0")))
            };
            let mut rank = positional.get(3).map(|text| rank_of(text)).transpose()?;
            if positional.len() > 4 {
                return Err(bad(format!(
                    "has {} values; A1111 reads at most four (name, multiplier, UNet multiplier, `dyn`)",
                    positional.len()
                )));
            }
            let mut blocks = None;
            for item in named {
                let (key, value) = item.split_once('=').unwrap_or((item, ""));
                match key.trim() {
                    "te" => text_scale = number("text-encoder multiplier", value)?,
                    "unet" => unet_scale = Some(number("UNet multiplier", value)?),
                    "dyn" => rank = Some(rank_of(value)?),
                    "lbw" => blocks = Some(BlockWeights::parse(value).map_err(bad)?),
                    other => {
                        return Err(bad(format!(
                            "`{other}=` is not read (Autonomy reads `te=`, `unet=`, `dyn=` and `lbw=`)"
                        )));
                    }
                }
            }
            let unet_scale = unet_scale.unwrap_or(text_scale);
            for scale in [text_scale, unet_scale] {
                if scale.abs() > MOST_SCALE {
                    return Err(bad(format!(
                        "the multiplier {scale} is beyond ±{MOST_SCALE}"
                    )));
                }
            }
            Ok(LoraTag {
                text: tag.to_string(),
                name: name.to_string(),
                scale: unet_scale,
                text_scale: Some(text_scale).filter(|&text| text != unet_scale),
                rank,
                blocks,
            })
        })
        .collect()
}

/// `text` with its LoRA and hypernetwork tags taken out ([`super::hypernetwork`]) and the
/// rest as written.
pub fn without_network_tags(text: &str) -> String {
    let text = TAG.replace_all(text, "");
    super::hypernetwork::without_hypernet_tags(&text)
}

/// A name A1111's tags may give a merged LoRA, with how it was merged.
#[derive(Clone, Debug, PartialEq)]
pub struct TagName {
    /// The name.
    pub name: String,
    /// Its scale (the UNet's).
    pub scale: f64,
    /// Its text encoder's scale, where it differs.
    pub text_scale: Option<f64>,
    /// The ranks it was cut to, if any.
    pub rank: Option<usize>,
    /// Its block weights, if any.
    pub blocks: Option<BlockWeights>,
}

/// The names A1111's tags may give each of `loras`, with its scales: its file's name without
/// the extension, and the name its trainer gave it (its alias,
/// [`super::lora::LoraSummary::alias`]).
pub fn tag_names(loras: &[LoraFile]) -> Vec<TagName> {
    let mut names = Vec::new();
    for lora in loras {
        let named = |name: String| TagName {
            name,
            scale: lora.scale,
            text_scale: lora.text_scale,
            rank: lora.rank,
            blocks: lora.blocks.clone(),
        };
        if let Some(stem) = lora.path.file_stem() {
            names.push(named(stem.to_string_lossy().into_owned()));
        }
        if let Some(alias) = LoraSummary::read(&lora.path).ok().and_then(|s| s.alias) {
            names.push(named(alias));
        }
    }
    names
}

/// Whether `loaded` ([`tag_names`] of the LoRAs merged into a model) has each LoRA `prompt`
/// applies, at its scales and rank. Otherwise what is missing, so that a tag no caller resolved is never
/// passed over in silence.
pub fn check_loaded(prompt: &str, loaded: &[TagName]) -> Result<(), String> {
    for tag in lora_tags(prompt)? {
        if !loaded.iter().any(|loaded| {
            loaded.name == tag.name
                && loaded.scale == tag.scale
                && loaded.text_scale == tag.text_scale
                && loaded.rank == tag.rank
                && loaded.blocks == tag.blocks
        }) {
            return Err(format!(
                "`{}` applies a LoRA this model was not loaded with at those scales, rank and block weights (a recipe or \
                 `generate` finds it among the model folders; a library caller names it in \
                 `Additions::loras`)",
                tag.text
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tag(name: &str, scale: f64, text: &str) -> LoraTag {
        LoraTag {
            text: text.into(),
            name: name.into(),
            scale,
            text_scale: None,
            rank: None,
            blocks: None,
        }
    }

    fn merged_as(name: &str, scale: f64, text_scale: Option<f64>, rank: Option<usize>) -> TagName {
        TagName {
            name: name.into(),
            scale,
            text_scale,
            rank,
            blocks: None,
        }
    }

    #[test]
    fn reads_the_multipliers_as_a1111_does() {
        let prompt = "<lora:a> x <lyco:b:0.5> <lora:c:te=-1:unet=-1> <lora: d :0.25:0.25> \
                      <lora:e:0.5:1> <lora:f:unet=0> <lora:g:0:te=0.3:unet=0> <lora:h:0:te=0.3> <hypernet:i:1> \
                      <lora:j:1:1:16> <lora:k:0.5:dyn=8> <lora:l:1:1:16:dyn=4> <lora:m:0.7:lbw=OUTD>";
        let split = |name: &str, scale: f64, text_scale: f64, text: &str| LoraTag {
            text_scale: Some(text_scale),
            ..tag(name, scale, text)
        };
        assert_eq!(
            lora_tags(prompt).unwrap(),
            [
                tag("a", 1.0, "<lora:a>"),
                tag("b", 0.5, "<lyco:b:0.5>"),
                tag("c", -1.0, "<lora:c:te=-1:unet=-1>"),
                tag("d", 0.25, "<lora: d :0.25:0.25>"),
                split("e", 1.0, 0.5, "<lora:e:0.5:1>"),
                split("f", 0.0, 1.0, "<lora:f:unet=0>"),
                split("g", 0.0, 0.3, "<lora:g:0:te=0.3:unet=0>"),
                // The UNet's multiplier follows the text encoder's (named or not) unless given.
                tag("h", 0.3, "<lora:h:0:te=0.3>"),
                // A1111's `dyn`, fourth or named (the name wins).
                LoraTag {
                    rank: Some(16),
                    ..tag("j", 1.0, "<lora:j:1:1:16>")
                },
                LoraTag {
                    rank: Some(8),
                    ..tag("k", 0.5, "<lora:k:0.5:dyn=8>")
                },
                LoraTag {
                    rank: Some(4),
                    ..tag("l", 1.0, "<lora:l:1:1:16:dyn=4>")
                },
                // The block-weight extension's `lbw=`.
                LoraTag {
                    blocks: Some(BlockWeights::parse("OUTD").unwrap()),
                    ..tag("m", 0.7, "<lora:m:0.7:lbw=OUTD>")
                },
            ]
        );
        assert_eq!(
            without_network_tags(prompt),
            " x            ",
            "LoRA and hypernetwork tags are taken out"
        );
        assert_eq!(lora_tags("no tags, <lora:> <embedding>").unwrap(), []);
    }

    #[test]
    fn refuses_what_it_cannot_apply_naming_the_tag() {
        for (prompt, says) in [
            ("x <lora::0.5>", "`<lora::0.5>`: names no LoRA"),
            ("<lora:a:strong>", "the multiplier `strong` is not a number"),
            ("<lora:a:nan>", "the multiplier `nan` is not a number"),
            (
                "<lora:a:0.5:many>",
                "the UNet multiplier `many` is not a number",
            ),
            (
                "<lora:a:1:1:0>",
                "the rank (`dyn`) `0` is not a whole number above 0",
            ),
            ("<lora:a:1:dyn=1.5>", "the rank (`dyn`) `1.5`"),
            ("<lora:a:1:1:16:2>", "at most four"),
            (
                "<lora:a:lbw=OUTX>",
                "`<lora:a:lbw=OUTX>`: the block weights `OUTX` are neither",
            ),
            ("<lora:a:lbw=1,0,1>", "give 3 values"),
            ("<lora:a:lbw=ALL:stop=10>", "`stop=` is not read"),
            ("<lora:a:5>", "the multiplier 5 is beyond ±4"),
        ] {
            let error = lora_tags(prompt).unwrap_err();
            assert!(error.contains(says), "{prompt}: {error}");
        }
    }

    #[test]
    fn a_tag_must_name_a_loaded_lora_at_its_scale() {
        let loaded = tag_names(&[LoraFile {
            path: "models/loras/add_detail.safetensors".into(),
            label: "loras/add_detail.safetensors".into(),
            scale: 0.5,
            text_scale: None,
            rank: None,
            blocks: None,
        }]);
        assert_eq!(
            loaded,
            [merged_as("add_detail", 0.5, None, None)],
            "no alias in a file not there"
        );
        assert!(check_loaded("a knight <lora:add_detail:0.5>", &loaded).is_ok());
        assert!(check_loaded("a knight", &[]).is_ok());
        for prompt in [
            "<lora:add_detail:0.8>",
            "<lora:add:0.5>",
            "<lora:x:1>",
            "<lora:add_detail:1:0.5>",
            "<lora:add_detail:0.5:dyn=4>",
            "<lora:add_detail:0.5:lbw=ALL>",
        ] {
            let error = check_loaded(prompt, &loaded).unwrap_err();
            assert!(
                error.contains(prompt) && error.contains("not loaded"),
                "{error}"
            );
        }

        // A file its trainer named otherwise answers to that name too.
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sd/tiny-sd15/loras/kohya.safetensors");
        let bytes = std::fs::read(fixture).unwrap();
        let loaded = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("detail_v2.safetensors");
        let metadata = [("ss_output_name".to_string(), "add_detail".to_string())];
        safetensors::serialize_to_file(loaded.tensors(), Some(metadata.into()), &path).unwrap();
        let names = tag_names(&[LoraFile {
            path,
            label: "detail_v2.safetensors".into(),
            scale: 0.5,
            text_scale: Some(1.0),
            rank: Some(2),
            blocks: None,
        }]);
        assert_eq!(
            names,
            [
                merged_as("detail_v2", 0.5, Some(1.0), Some(2)),
                merged_as("add_detail", 0.5, Some(1.0), Some(2))
            ]
        );
        assert!(check_loaded("<lora:add_detail:1:0.5:2>", &names).is_ok());
        assert!(check_loaded("<lora:add_detail:1:0.5>", &names).is_err());
        assert!(check_loaded("<lora:add_detail:0.5:dyn=2>", &names).is_err());
    }

    proptest! {
        #[test]
        fn every_tag_written_is_read_back_and_taken_out(
            words in proptest::collection::vec("[a-z ,()]{0,8}", 1..5),
            names in proptest::collection::vec("[A-Za-z0-9_.-]{1,12}", 0..4),
            scales in proptest::collection::vec(-400i32..=400, 4),
        ) {
            let tags: Vec<LoraTag> = names
                .iter()
                .zip(&scales)
                .map(|(name, &scale)| {
                    let scale = f64::from(scale) / 100.0;
                    tag(name, scale, &format!("<lora:{name}:{scale}>"))
                })
                .collect();
            let mut prompt = String::new();
            for (i, word) in words.iter().enumerate() {
                prompt.push_str(word);
                if let Some(tag) = tags.get(i) {
                    prompt.push_str(&tag.text);
                }
            }
            for tag in tags.iter().skip(words.len()) {
                prompt.push_str(&tag.text);
            }
            prop_assert_eq!(lora_tags(&prompt).unwrap(), tags);
            prop_assert_eq!(without_network_tags(&prompt), words.concat());
        }
    }
}
