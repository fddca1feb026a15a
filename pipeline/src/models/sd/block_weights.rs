//! LoRA block weights, as the sd-webui-lora-block-weight extension reads them from A1111's tags
//! (`<lora:name:1:lbw=OUTD>`, `<lora:name:1:lbw=1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1>`): one ratio
//! per block of the original UNet (`IN00`–`IN11`, `M00`, `OUT00`–`OUT11`) and one for the text
//! encoders (`BASE`), multiplying the LoRA's strength there. A list names 17 (SD 1.x), 26
//! (SD 1.x with every block, for LyCORIS), 12 (SDXL) or 20 (SDXL with every block) blocks;
//! those it leaves out take 0, as the extension's lists do. A name is one of the extension's
//! built-in presets. Modules outside every block (the time embedding, the output
//! convolution) keep their strength.
//!
//! ```
//! use autonomy_pipeline::models::sd::block_weights::BlockWeights;
//! let outd = BlockWeights::parse("OUTD").unwrap();
//! assert_eq!(outd, BlockWeights::parse("1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0").unwrap());
//! // SD 1.5's second down block's first attention is the original `input_blocks.4`: 0.
//! assert_eq!(outd.unet_ratio("down_blocks_1_attentions_0_proj_in", 2), 0.0);
//! // Its first up block's upsampler is `output_blocks.2`, left out of the 17: 0 too.
//! assert_eq!(outd.unet_ratio("up_blocks_0_upsamplers_0_conv", 2), 0.0);
//! assert_eq!(outd.unet_ratio("up_blocks_1_attentions_0_proj_in", 2), 1.0);
//! assert_eq!(outd.text_ratio(), 1.0);
//! ```

use std::fmt;

/// Every block, in the order of a 26-value list.
pub const BLOCKS: [&str; 26] = [
    "BASE", "IN00", "IN01", "IN02", "IN03", "IN04", "IN05", "IN06", "IN07", "IN08", "IN09", "IN10",
    "IN11", "M00", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08",
    "OUT09", "OUT10", "OUT11",
];

/// The blocks a 17-value list names: SD 1.x's with attention, and the text encoder.
const SD1: [&str; 17] = [
    "BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00", "OUT03", "OUT04", "OUT05",
    "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11",
];

/// The blocks a 12-value list names: SDXL's with attention, and the text encoders.
const SDXL: [&str; 12] = [
    "BASE", "IN04", "IN05", "IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04",
    "OUT05",
];

/// The blocks a 20-value list names: all of SDXL's.
const SDXL_ALL: [&str; 20] = [
    "BASE", "IN00", "IN01", "IN02", "IN03", "IN04", "IN05", "IN06", "IN07", "IN08", "M00", "OUT00",
    "OUT01", "OUT02", "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08",
];

/// The extension's built-in presets (its `lbwpresets.txt` as first written), 17 values each.
const PRESETS: [(&str, &str); 10] = [
    ("NONE", "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0"),
    ("ALL", "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"),
    ("INS", "1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0"),
    ("IND", "1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0"),
    ("INALL", "1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0"),
    ("MIDD", "1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0"),
    ("OUTD", "1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0"),
    ("OUTS", "1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1"),
    ("OUTALL", "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"),
    (
        "ALL0.5",
        "0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5",
    ),
];

/// A ratio for every block of [`BLOCKS`].
#[derive(Clone, Debug, PartialEq)]
pub struct BlockWeights([f64; 26]);

impl BlockWeights {
    /// Reads a preset's name or a list of 12, 17, 20 or 26 numbers, or says what is wrong:
    /// an unknown name, another count, or a value that is no number (the extension's random
    /// `R`/`U` and inherited `X` values included: a build must give the same image again).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let list = PRESETS
            .iter()
            .find(|(name, _)| *name == text)
            .map_or(text, |(_, list)| list);
        let values: Vec<&str> = list.split(',').map(str::trim).collect();
        let names: &[&str] = match values.len() {
            12 => &SDXL,
            17 => &SD1,
            20 => &SDXL_ALL,
            26 => &BLOCKS,
            1 => {
                let presets: Vec<&str> = PRESETS.iter().map(|(name, _)| *name).collect();
                return Err(format!(
                    "the block weights `{text}` are neither a preset ({}) nor a list of 12, 17, 20 or 26 numbers",
                    presets.join(", ")
                ));
            }
            n => {
                return Err(format!(
                    "the block weights `{text}` give {n} values; a list gives 12 or 20 (SDXL), 17 or 26 (SD 1.x)"
                ));
            }
        };
        let mut ratios = [0.0; 26];
        for (name, value) in names.iter().zip(values) {
            let ratio = value
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite())
                .ok_or_else(|| {
                    format!(
                        "the block weight `{value}` for {name} is not a number (random `R`/`U` and inherited `X` values are not read: a build must give the same image again)"
                    )
                })?;
            if let Some(at) = BLOCKS.iter().position(|block| block == name) {
                ratios[at] = ratio;
            }
        }
        Ok(Self(ratios))
    }

    /// The 26 ratios, in the order of [`BLOCKS`].
    pub fn ratios(&self) -> [f64; 26] {
        self.0
    }

    /// The ratios as recorded: `ratios` in the order of [`BLOCKS`], or `None` when they are not
    /// 26 finite numbers.
    pub fn from_ratios(ratios: &[f64]) -> Option<Self> {
        let ratios: [f64; 26] = ratios.try_into().ok()?;
        ratios.iter().all(|r| r.is_finite()).then_some(Self(ratios))
    }

    /// The text encoders' ratio (`BASE`).
    pub fn text_ratio(&self) -> f64 {
        self.0[0]
    }

    /// The ratio of the UNet module `module` (diffusers' name with `_` for `.`, as
    /// `down_blocks_1_attentions_0_proj_in`) in a UNet of `layers` layers per block: that of
    /// the original block holding it, or 1 outside every block.
    pub fn unet_ratio(&self, module: &str, layers: usize) -> f64 {
        match original_block(module, layers) {
            Some(block) => self.0[block],
            None => 1.0,
        }
    }
}

impl fmt::Display for BlockWeights {
    /// The 26 ratios, comma-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values: Vec<String> = self.0.iter().map(f64::to_string).collect();
        f.write_str(&values.join(","))
    }
}

/// The index in [`BLOCKS`] of the original UNet block holding the diffusers module `module`:
/// `conv_in` is `IN00`; down block `b`'s layer `l` is `input_blocks.{1 + b·(layers + 1) + l}`
/// and its downsampler the next; up block `b`'s layer `l` (and after its last, its upsampler)
/// is `output_blocks.{b·(layers + 1) + l}`; the mid block is `M00`.
fn original_block(module: &str, layers: usize) -> Option<usize> {
    let numbers = |rest: &str| -> Option<(usize, String, Option<usize>)> {
        let (block, rest) = rest.split_once('_')?;
        let block: usize = block.parse().ok()?;
        let (kind, rest) = rest.split_once('_')?;
        let layer = match kind {
            "resnets" | "attentions" => Some(rest.split('_').next()?.parse().ok()?),
            _ => None,
        };
        Some((block, kind.to_string(), layer))
    };
    let index = if module == "conv_in" || module.starts_with("conv_in_") {
        1
    } else if let Some(rest) = module.strip_prefix("down_blocks_") {
        let (block, kind, layer) = numbers(rest)?;
        let input = match (kind.as_str(), layer) {
            ("downsamplers", _) => (block + 1) * (layers + 1),
            (_, Some(layer)) => 1 + block * (layers + 1) + layer,
            _ => return None,
        };
        if input > 11 {
            return None;
        }
        1 + input
    } else if module.starts_with("mid_block_") {
        13
    } else if let Some(rest) = module.strip_prefix("up_blocks_") {
        let (block, kind, layer) = numbers(rest)?;
        let output = match (kind.as_str(), layer) {
            ("upsamplers", _) => block * (layers + 1) + layers,
            (_, Some(layer)) => block * (layers + 1) + layer,
            _ => return None,
        };
        if output > 11 {
            return None;
        }
        14 + output
    } else {
        return None;
    };
    Some(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn modules_fall_in_the_blocks_a1111_names_them_by() {
        // SD 1.5 (2 layers per block), as A1111's `convert_diffusers_name_to_compvis` names
        // kohya's modules: `input_blocks_{1 + 3b + l}`, downsamplers `{3 + 3b}`,
        // `output_blocks_{3b + l}`, upsamplers `{2 + 3b}`.
        for (module, block) in [
            ("conv_in", "IN00"),
            (
                "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                "IN01",
            ),
            ("down_blocks_0_resnets_1_conv1", "IN02"),
            ("down_blocks_0_downsamplers_0_conv", "IN03"),
            ("down_blocks_1_attentions_1_proj_out", "IN05"),
            ("down_blocks_2_downsamplers_0_conv", "IN09"),
            ("down_blocks_3_resnets_1_conv2", "IN11"),
            ("mid_block_attentions_0_proj_in", "M00"),
            ("mid_block_resnets_1_time_emb_proj", "M00"),
            ("up_blocks_0_resnets_0_conv1", "OUT00"),
            ("up_blocks_0_upsamplers_0_conv", "OUT02"),
            ("up_blocks_1_attentions_0_proj_in", "OUT03"),
            ("up_blocks_1_upsamplers_0_conv", "OUT05"),
            (
                "up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2",
                "OUT11",
            ),
        ] {
            assert_eq!(
                original_block(module, 2).map(|i| BLOCKS[i]),
                Some(block),
                "{module}"
            );
        }
        // SDXL's third down block (2 layers per block) is `input_blocks_7` and `_8`.
        assert_eq!(
            original_block("down_blocks_2_attentions_1_proj_in", 2).map(|i| BLOCKS[i]),
            Some("IN08")
        );
        for outside in [
            "time_embedding_linear_1",
            "conv_out",
            "add_embedding_linear_2",
        ] {
            assert_eq!(original_block(outside, 2), None, "{outside}");
        }
        // A block beyond the 12 the original names is no block.
        assert_eq!(original_block("down_blocks_4_resnets_0_conv1", 2), None);
    }

    #[test]
    fn presets_and_lists_read_as_the_extension_reads_them() {
        let outd = BlockWeights::parse("OUTD").unwrap();
        let ratio = |weights: &BlockWeights, block: &str| {
            weights.ratios()[BLOCKS.iter().position(|b| *b == block).unwrap()]
        };
        for (block, want) in [
            ("BASE", 1.0),
            ("IN01", 0.0),
            ("M00", 0.0),
            ("OUT03", 1.0),
            ("OUT06", 1.0),
            ("OUT07", 0.0),
            // Left out of the 17.
            ("OUT02", 0.0),
        ] {
            assert_eq!(ratio(&outd, block), want, "{block}");
        }
        let xl = BlockWeights::parse("0.5, 1,0,0,0, 0.25, 1,1,1,1,1,-1").unwrap();
        assert_eq!(
            (ratio(&xl, "BASE"), ratio(&xl, "IN04"), ratio(&xl, "M00")),
            (0.5, 1.0, 0.25)
        );
        assert_eq!(ratio(&xl, "OUT05"), -1.0);
        assert_eq!(ratio(&xl, "IN03"), 0.0);
        assert_eq!(BlockWeights::parse("ALL0.5").unwrap().text_ratio(), 0.5);
        for (bad, words) in [
            ("OUTX", "neither a preset (NONE, ALL"),
            ("1,0,1", "give 3 values"),
            (
                "1,0,0,0,0,0,0,0,1,1,1,1,R,0,0,0,0",
                "`R` for OUT07 is not a number",
            ),
            ("1,0,0,0,0,0,0,0,1,1,1,1,X,0,0,0,0", "inherited `X`"),
            ("1,0,0,0,0,0,0,0,1,1,1,1,inf,0,0,0,0", "`inf`"),
        ] {
            let message = BlockWeights::parse(bad).unwrap_err();
            assert!(message.contains(words), "{bad}: {message}");
        }
    }

    proptest! {
        /// Any list of a known length reads back its values at its blocks and 0 elsewhere, and
        /// its 26 ratios read again give the same weights.
        #[test]
        fn lists_place_each_value_at_its_block(
            values in prop::sample::select(vec![12usize, 17, 20, 26])
                .prop_flat_map(|n| prop::collection::vec(-4.0f64..4.0, n))
        ) {
            let text: Vec<String> = values.iter().map(f64::to_string).collect();
            let weights = BlockWeights::parse(&text.join(",")).unwrap();
            let names: &[&str] = match values.len() {
                12 => &SDXL,
                17 => &SD1,
                20 => &SDXL_ALL,
                _ => &BLOCKS,
            };
            for (at, block) in BLOCKS.iter().enumerate() {
                let want = names
                    .iter()
                    .position(|name| name == block)
                    .map_or(0.0, |i| values[i]);
                prop_assert_eq!(weights.ratios()[at], want);
            }
            prop_assert_eq!(BlockWeights::parse(&weights.to_string()).unwrap(), weights.clone());
            prop_assert_eq!(BlockWeights::from_ratios(&weights.ratios()), Some(weights));
        }
    }
}
