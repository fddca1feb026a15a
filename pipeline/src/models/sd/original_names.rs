//! The original Stable Diffusion code's parameter names — CompVis' LDM (SD 1.x/2.x) and
//! Stability's SGM (SDXL), which single-file checkpoints store and kohya's LoRAs name their
//! modules by — in diffusers' and transformers' names, with how a tensor is reshaped where the
//! two layouts differ.

use super::weights::Reshape;

/// A UNet block module in the original names (`input_blocks.4.1.proj_in`, or kohya's flattened
/// `input_blocks_4_1_proj_in` with `sep` `_`) in diffusers' (`down_blocks.1.attentions.0.proj_in`);
/// `layers` is the UNet's `layers_per_block`. `None` for a name outside those blocks.
pub fn unet_blocks(name: &str, layers: usize, sep: char) -> Option<String> {
    let s = sep;
    let number = |text: &str| -> Option<(usize, String)> {
        let (n, rest) = text.split_once(sep)?;
        Some((n.parse().ok()?, rest.to_string()))
    };
    let resnet = |rest: &str| {
        const RENAMES: [(&str, &str, &str); 6] = [
            ("in_layers", "0", "norm1"),
            ("in_layers", "2", "conv1"),
            ("emb_layers", "1", "time_emb_proj"),
            ("out_layers", "0", "norm2"),
            ("out_layers", "3", "conv2"),
            ("skip_connection", "", "conv_shortcut"),
        ];
        RENAMES
            .into_iter()
            .find_map(|(module, index, to)| {
                let from = match index {
                    "" => module.to_string(),
                    index => format!("{module}{s}{index}"),
                };
                rest.strip_prefix(&from).map(|tail| format!("{to}{tail}"))
            })
            .unwrap_or_else(|| rest.to_string())
    };
    if let Some(rest) = name.strip_prefix(&format!("input_blocks{s}")) {
        let (n, rest) = number(rest)?;
        let (j, rest) = number(&rest)?;
        let index = n.checked_sub(1)?;
        let (block, layer) = (index / (layers + 1), index % (layers + 1));
        return Some(if layer == layers {
            format!(
                "down_blocks{s}{block}{s}downsamplers{s}0{s}{}",
                rest.replacen("op", "conv", 1)
            )
        } else if j == 0 {
            format!(
                "down_blocks{s}{block}{s}resnets{s}{layer}{s}{}",
                resnet(&rest)
            )
        } else {
            format!("down_blocks{s}{block}{s}attentions{s}{layer}{s}{rest}")
        });
    }
    if let Some(rest) = name.strip_prefix(&format!("output_blocks{s}")) {
        let (n, rest) = number(rest)?;
        let (j, rest) = number(&rest)?;
        let (block, layer) = (n / (layers + 1), n % (layers + 1));
        return Some(if j == 0 {
            format!(
                "up_blocks{s}{block}{s}resnets{s}{layer}{s}{}",
                resnet(&rest)
            )
        } else if rest.starts_with("conv") {
            format!("up_blocks{s}{block}{s}upsamplers{s}0{s}{rest}")
        } else {
            format!("up_blocks{s}{block}{s}attentions{s}{layer}{s}{rest}")
        });
    }
    let (j, rest) = number(name.strip_prefix(&format!("middle_block{s}"))?)?;
    match j {
        0 => Some(format!("mid_block{s}resnets{s}0{s}{}", resnet(&rest))),
        1 => Some(format!("mid_block{s}attentions{s}0{s}{rest}")),
        2 => Some(format!("mid_block{s}resnets{s}1{s}{}", resnet(&rest))),
        _ => None,
    }
}

/// A UNet tensor of a checkpoint (its name after `model.diffusion_model.`) in diffusers' name.
pub fn unet(name: &str, layers: usize) -> Option<String> {
    const OUTSIDE_BLOCKS: [(&str, &str); 8] = [
        ("time_embed.0.", "time_embedding.linear_1."),
        // An LCM-distilled UNet's, kept in diffusers' name by its conversion.
        ("time_embedding.cond_proj.", "time_embedding.cond_proj."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("label_emb.0.0.", "add_embedding.linear_1."),
        ("label_emb.0.2.", "add_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ];
    OUTSIDE_BLOCKS
        .into_iter()
        .find_map(|(from, to)| name.strip_prefix(from).map(|tail| format!("{to}{tail}")))
        .or_else(|| unet_blocks(name, layers, '.'))
}

/// A VAE tensor of a checkpoint (its name after `first_stage_model.`) in diffusers' name and
/// how it is reshaped: the middle attention's 1×1 convolutions are diffusers' linear layers.
/// `levels` is how many resolutions the decoder has (its `up` blocks count from the bottom,
/// diffusers' `up_blocks` from the top).
pub fn vae(name: &str, levels: usize) -> Option<(String, Reshape)> {
    let (half, rest) = name.split_once('.')?;
    if matches!(half, "quant_conv" | "post_quant_conv") {
        return Some((name.to_string(), Reshape::Same));
    }
    if !matches!(half, "encoder" | "decoder") {
        return None;
    }
    let resnet = |tail: &str| tail.replacen("nin_shortcut", "conv_shortcut", 1);
    let same = |renamed: String| Some((format!("{half}.{renamed}"), Reshape::Same));
    if let Some(tail) = rest.strip_prefix("norm_out.") {
        return same(format!("conv_norm_out.{tail}"));
    }
    if let Some(tail) = rest.strip_prefix("mid.block_1.") {
        return same(format!("mid_block.resnets.0.{}", resnet(tail)));
    }
    if let Some(tail) = rest.strip_prefix("mid.block_2.") {
        return same(format!("mid_block.resnets.1.{}", resnet(tail)));
    }
    if let Some(tail) = rest.strip_prefix("mid.attn_1.") {
        let (module, tail) = tail.split_once('.')?;
        let (to, reshape) = match module {
            "norm" => ("group_norm", Reshape::Same),
            "q" => ("to_q", Reshape::Squeeze),
            "k" => ("to_k", Reshape::Squeeze),
            "v" => ("to_v", Reshape::Squeeze),
            "proj_out" => ("to_out.0", Reshape::Squeeze),
            _ => return None,
        };
        return Some((
            format!("{half}.mid_block.attentions.0.{to}.{tail}"),
            reshape,
        ));
    }
    let level = |tail: &str| -> Option<(usize, String)> {
        let (i, tail) = tail.split_once('.')?;
        Some((i.parse().ok()?, tail.to_string()))
    };
    let (blocks, i, tail) = if let Some(tail) = rest.strip_prefix("down.") {
        let (i, tail) = level(tail)?;
        ("down_blocks", i, tail)
    } else if let Some(tail) = rest.strip_prefix("up.") {
        let (i, tail) = level(tail)?;
        ("up_blocks", levels.checked_sub(i + 1)?, tail)
    } else {
        return matches!(rest.split_once('.')?.0, "conv_in" | "conv_out")
            .then(|| (name.to_string(), Reshape::Same));
    };
    if let Some(tail) = tail.strip_prefix("block.") {
        let (j, tail) = tail.split_once('.')?;
        return same(format!("{blocks}.{i}.resnets.{j}.{}", resnet(tail)));
    }
    let tail = tail
        .strip_prefix("downsample.")
        .or_else(|| tail.strip_prefix("upsample."))?;
    let samplers = &blocks[..blocks.len() - "_blocks".len()];
    same(format!("{blocks}.{i}.{samplers}samplers.0.{tail}"))
}

/// An OpenAI CLIP text tensor of a checkpoint (its name after `…transformer.`), which is
/// transformers-named already, in full: older checkpoints leave out the `text_model.` in front.
pub fn openai_clip(name: &str) -> String {
    if name.starts_with("text_model.") || name.starts_with("text_projection") {
        name.to_string()
    } else {
        format!("text_model.{name}")
    }
}

/// An OpenCLIP text tensor of a checkpoint (its name after `…model.`) in transformers' names,
/// with how each is reshaped: the fused `in_proj` gives the query, key and value projections.
/// Empty for what the text encoder does not use (`logit_scale`, the image tower).
pub fn open_clip(name: &str) -> Vec<(String, Reshape)> {
    let one = |to: String, reshape| vec![(to, reshape)];
    match name {
        "token_embedding.weight" => {
            return one(
                "text_model.embeddings.token_embedding.weight".into(),
                Reshape::Same,
            );
        }
        "positional_embedding" => {
            return one(
                "text_model.embeddings.position_embedding.weight".into(),
                Reshape::Same,
            );
        }
        "text_projection" => return one("text_projection.weight".into(), Reshape::Transpose),
        _ => {}
    }
    if let Some(tail) = name.strip_prefix("ln_final.") {
        return one(format!("text_model.final_layer_norm.{tail}"), Reshape::Same);
    }
    let Some((layer, tail)) = name
        .strip_prefix("transformer.resblocks.")
        .and_then(|rest| rest.split_once('.'))
    else {
        return Vec::new();
    };
    let prefix = format!("text_model.encoder.layers.{layer}");
    if let Some(part) = tail.strip_prefix("attn.in_proj_") {
        return ["q_proj", "k_proj", "v_proj"]
            .into_iter()
            .enumerate()
            .map(|(index, projection)| {
                (
                    format!("{prefix}.self_attn.{projection}.{part}"),
                    Reshape::Chunk { index, of: 3 },
                )
            })
            .collect();
    }
    const RENAMES: [(&str, &str); 5] = [
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("attn.out_proj.", "self_attn.out_proj."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
    ];
    RENAMES
        .into_iter()
        .find_map(|(from, to)| tail.strip_prefix(from).map(|t| format!("{prefix}.{to}{t}")))
        .map(|to| one(to, Reshape::Same))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unet_tensors_map_inside_and_outside_the_blocks() {
        for (original, diffusers) in [
            ("time_embed.2.weight", "time_embedding.linear_2.weight"),
            ("label_emb.0.0.bias", "add_embedding.linear_1.bias"),
            ("input_blocks.0.0.weight", "conv_in.weight"),
            (
                "input_blocks.3.0.op.weight",
                "down_blocks.0.downsamplers.0.conv.weight",
            ),
            (
                "input_blocks.4.0.skip_connection.weight",
                "down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight",
                "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
            ),
            (
                "middle_block.0.in_layers.2.bias",
                "mid_block.resnets.0.conv1.bias",
            ),
            (
                "output_blocks.2.1.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.2.conv.bias",
                "up_blocks.1.upsamplers.0.conv.bias",
            ),
            ("out.2.weight", "conv_out.weight"),
        ] {
            assert_eq!(unet(original, 2).as_deref(), Some(diffusers), "{original}");
        }
        assert_eq!(unet("betas", 2), None);
    }

    #[test]
    fn vae_tensors_map_with_the_decoders_levels_reversed() {
        for (original, diffusers, reshape) in [
            (
                "encoder.norm_out.weight",
                "encoder.conv_norm_out.weight",
                Reshape::Same,
            ),
            (
                "encoder.down.1.block.0.nin_shortcut.weight",
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
                Reshape::Same,
            ),
            (
                "encoder.down.0.downsample.conv.bias",
                "encoder.down_blocks.0.downsamplers.0.conv.bias",
                Reshape::Same,
            ),
            (
                "decoder.up.0.block.2.conv1.weight",
                "decoder.up_blocks.3.resnets.2.conv1.weight",
                Reshape::Same,
            ),
            (
                "decoder.up.3.upsample.conv.weight",
                "decoder.up_blocks.0.upsamplers.0.conv.weight",
                Reshape::Same,
            ),
            (
                "decoder.mid.attn_1.proj_out.weight",
                "decoder.mid_block.attentions.0.to_out.0.weight",
                Reshape::Squeeze,
            ),
            (
                "decoder.mid.block_2.norm1.bias",
                "decoder.mid_block.resnets.1.norm1.bias",
                Reshape::Same,
            ),
            (
                "post_quant_conv.weight",
                "post_quant_conv.weight",
                Reshape::Same,
            ),
            (
                "decoder.conv_in.weight",
                "decoder.conv_in.weight",
                Reshape::Same,
            ),
        ] {
            assert_eq!(
                vae(original, 4),
                Some((diffusers.to_string(), reshape)),
                "{original}"
            );
        }
        assert_eq!(vae("decoder.up.4.block.0.conv1.weight", 4), None);
        assert_eq!(vae("loss.logvar", 4), None);
    }

    #[test]
    fn open_clip_splits_its_fused_projections() {
        let fused = open_clip("transformer.resblocks.3.attn.in_proj_weight");
        assert_eq!(
            fused,
            vec![
                (
                    "text_model.encoder.layers.3.self_attn.q_proj.weight".to_string(),
                    Reshape::Chunk { index: 0, of: 3 }
                ),
                (
                    "text_model.encoder.layers.3.self_attn.k_proj.weight".to_string(),
                    Reshape::Chunk { index: 1, of: 3 }
                ),
                (
                    "text_model.encoder.layers.3.self_attn.v_proj.weight".to_string(),
                    Reshape::Chunk { index: 2, of: 3 }
                ),
            ]
        );
        assert_eq!(
            open_clip("transformer.resblocks.0.mlp.c_proj.bias"),
            vec![(
                "text_model.encoder.layers.0.mlp.fc2.bias".to_string(),
                Reshape::Same
            )]
        );
        assert_eq!(
            open_clip("text_projection"),
            vec![("text_projection.weight".to_string(), Reshape::Transpose)]
        );
        assert!(open_clip("logit_scale").is_empty());
        assert_eq!(
            openai_clip("embeddings.token_embedding.weight"),
            "text_model.embeddings.token_embedding.weight"
        );
    }
}
