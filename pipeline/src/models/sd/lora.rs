//! LoRA: low-rank updates `W += scale · (alpha / rank) · up · down` to the UNet's and the text
//! encoder's weights, merged once at load time by a var-builder backend, so sampling costs
//! nothing extra. Reads kohya's files (`lora_unet_…` / `lora_te_…` with `.lora_down`,
//! `.lora_up`, `.alpha`) and diffusers' (`unet.….lora_A` / `text_encoder.….lora_B`, and the
//! older `…processor.to_q_lora.down`); several at once, each with its own scale.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use sha2::{Digest, Sha256};

use super::SdError;
use crate::generator::LoraUse;

/// One LoRA file to merge, with its scale.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraFile {
    /// The `.safetensors` file.
    pub path: PathBuf,
    /// How the manifest names it (the path as the recipe writes it).
    pub label: String,
    /// How strongly to apply it (1 as trained; 0 not at all; negative inverts it).
    pub scale: f64,
}

/// Which network a LoRA entry adapts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Network {
    /// The UNet.
    Unet,
    /// The (first) CLIP text encoder.
    Text,
}

/// One low-rank update to one weight.
#[derive(Clone, Debug)]
struct Update {
    down: Tensor,
    up: Tensor,
    factor: f64,
}

/// The updates of every LoRA, by network and the base weight they change.
#[derive(Clone, Debug, Default)]
pub struct Updates {
    unet: HashMap<String, Vec<Update>>,
    text: HashMap<String, Vec<Update>>,
}

impl Updates {
    /// Reads `files`, matching every entry to a weight of `unet` or `text` (the networks'
    /// safetensors); an entry that matches none, or does not fit its weight, is an error naming
    /// the entry and the file. Returns the updates and what the manifest records of each file.
    pub fn read(
        files: &[LoraFile],
        unet: &MmapedSafetensors,
        text: &MmapedSafetensors,
    ) -> Result<(Self, Vec<LoraUse>), SdError> {
        let unet_names = weight_names(unet, Network::Unet);
        let text_names = weight_names(text, Network::Text);
        let mut updates = Self::default();
        let mut uses = Vec::new();
        for file in files {
            let bytes = std::fs::read(&file.path).map_err(|source| {
                if source.kind() == std::io::ErrorKind::NotFound {
                    SdError::MissingFile {
                        path: file.path.clone(),
                    }
                } else {
                    SdError::Io {
                        path: file.path.clone(),
                        source,
                    }
                }
            })?;
            let invalid = |message: String| SdError::Invalid {
                path: file.path.clone(),
                message,
            };
            let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
                .map_err(|e| invalid(format!("not a safetensors file: {e}")))?;
            let mut modules: HashMap<(Network, String), Parts> = HashMap::new();
            for (key, tensor) in tensors {
                let (network, module, part) =
                    entry(&key).ok_or_else(|| invalid(format!("`{key}` is not a LoRA entry Autonomy reads (kohya `lora_unet_…`/`lora_te_…` or diffusers `unet.…`/`text_encoder.…` with down/up or A/B)")))?;
                let parts = modules.entry((network, module)).or_default();
                match part {
                    Part::Down => parts.down = Some((key, tensor)),
                    Part::Up => parts.up = Some((key, tensor)),
                    Part::Alpha => {
                        parts.alpha = Some(
                            tensor
                                .to_dtype(DType::F64)
                                .and_then(|t| t.flatten_all()?.to_vec1::<f64>())
                                .ok()
                                .and_then(|v| v.first().copied())
                                .ok_or_else(|| invalid(format!("`{key}` is not a number")))?,
                        )
                    }
                }
            }
            if modules.is_empty() {
                return Err(invalid("holds no LoRA entries".into()));
            }
            for ((network, module), parts) in modules {
                let (names, base, map) = match network {
                    Network::Unet => (&unet_names, unet, &mut updates.unet),
                    Network::Text => (&text_names, text, &mut updates.text),
                };
                let (Some((down_key, down)), Some((_, up))) = (parts.down, parts.up) else {
                    return Err(invalid(format!("`{module}` has no down/up (A/B) pair")));
                };
                let weight = names.get(&module).ok_or_else(|| {
                    invalid(format!(
                        "`{down_key}` adapts `{module}`, which the {} does not have",
                        match network {
                            Network::Unet => "UNet",
                            Network::Text => "text encoder",
                        }
                    ))
                })?;
                let shape = base
                    .get(weight)
                    .map(|view| view.shape().to_vec())
                    .map_err(|e| invalid(e.to_string()))?;
                let rank = down.dim(0).map_err(|e| invalid(e.to_string()))?;
                let fits = up.dims().first() == shape.first()
                    && up.dims().get(1) == Some(&rank)
                    && up.elem_count() / rank.max(1) * down.elem_count() / rank.max(1)
                        == shape.iter().product::<usize>();
                if !fits || rank == 0 {
                    return Err(invalid(format!(
                        "`{down_key}`: down {:?} and up {:?} do not fit `{weight}` of shape {shape:?}",
                        down.dims(),
                        up.dims()
                    )));
                }
                let factor = file.scale * parts.alpha.map_or(1.0, |alpha| alpha / rank as f64);
                map.entry(weight.clone())
                    .or_default()
                    .push(Update { down, up, factor });
            }
            uses.push(LoraUse {
                file: file.label.clone(),
                sha256: hex::encode(Sha256::digest(&bytes)),
                scale: file.scale,
            });
        }
        Ok((updates, uses))
    }

    fn of(&self, network: Network) -> &HashMap<String, Vec<Update>> {
        match network {
            Network::Unet => &self.unet,
            Network::Text => &self.text,
        }
    }

    /// A var-builder backend serving `base`'s weights with this network's updates merged.
    pub fn merged(&self, base: MmapedSafetensors, network: Network) -> Merged {
        Merged {
            base,
            updates: self.of(network).clone(),
        }
    }
}

#[derive(Default)]
struct Parts {
    down: Option<(String, Tensor)>,
    up: Option<(String, Tensor)>,
    alpha: Option<f64>,
}

enum Part {
    Down,
    Up,
    Alpha,
}

/// The network, canonical module name and part of a LoRA file's key.
fn entry(key: &str) -> Option<(Network, String, Part)> {
    const SUFFIXES: [(&str, Part); 7] = [
        (".lora_down.weight", Part::Down),
        (".lora_up.weight", Part::Up),
        (".lora_A.weight", Part::Down),
        (".lora_B.weight", Part::Up),
        (".lora.down.weight", Part::Down),
        (".lora.up.weight", Part::Up),
        (".alpha", Part::Alpha),
    ];
    let (stem, part) = SUFFIXES
        .into_iter()
        .find_map(|(suffix, part)| {
            key.strip_suffix(suffix)
                .map(|stem| (stem.to_string(), part))
        })
        .or_else(|| {
            // diffusers' attention-processor format: `….processor.to_q_lora.down.weight`.
            let (stem, part) = key
                .strip_suffix(".down.weight")
                .map(|s| (s, Part::Down))
                .or_else(|| key.strip_suffix(".up.weight").map(|s| (s, Part::Up)))?;
            let (module, projection) = stem.rsplit_once(".processor.")?;
            let projection = match projection.strip_suffix("_lora")? {
                "to_out" => "to_out.0",
                other => other,
            };
            Some((format!("{module}.{projection}"), part))
        })?;
    let (network, module) = if let Some(m) = stem.strip_prefix("lora_unet_") {
        (Network::Unet, m.to_string())
    } else if let Some(m) = stem.strip_prefix("lora_te_") {
        (Network::Text, m.to_string())
    } else if let Some(m) = stem.strip_prefix("unet.") {
        (Network::Unet, m.to_string())
    } else if let Some(m) = stem.strip_prefix("text_encoder.") {
        (Network::Text, m.to_string())
    } else {
        return None;
    };
    Some((network, canonical(network, &module), part))
}

/// A module name as both naming schemes can be compared: `_` for `.`, without the text
/// encoder's `text_model` prefix.
fn canonical(network: Network, module: &str) -> String {
    let flat = module.replace('.', "_");
    match network {
        Network::Text => flat
            .strip_prefix("text_model_")
            .map(str::to_string)
            .unwrap_or(flat),
        Network::Unet => flat,
    }
}

/// The weights of a network (`….weight`) by canonical module name.
fn weight_names(tensors: &MmapedSafetensors, network: Network) -> HashMap<String, String> {
    tensors
        .tensors()
        .into_iter()
        .filter_map(|(name, _)| {
            let module = name.strip_suffix(".weight")?;
            Some((canonical(network, module), name.clone()))
        })
        .collect()
}

/// Base weights with LoRA updates added as they are read.
pub struct Merged {
    base: MmapedSafetensors,
    updates: HashMap<String, Vec<Update>>,
}

impl Merged {
    fn load(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let base = self.base.load(name, device)?;
        let Some(updates) = self.updates.get(name) else {
            return base.to_dtype(dtype);
        };
        let mut merged = base.to_dtype(DType::F32)?;
        for update in updates {
            let up = update.up.to_device(device)?.to_dtype(DType::F32)?;
            let down = update.down.to_device(device)?.to_dtype(DType::F32)?;
            let delta = up
                .flatten_from(1)?
                .matmul(&down.flatten_from(1)?)?
                .reshape(merged.shape())?;
            merged = (merged + (delta * update.factor)?)?;
        }
        merged.to_dtype(dtype)
    }
}

impl SimpleBackend for Merged {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.load(name, dtype, dev)?;
        if tensor.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: tensor.shape().clone(),
            });
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.base.get(name).is_ok()
    }
}

/// Memory-maps a network's safetensors files.
pub fn map(files: &[PathBuf]) -> Result<MmapedSafetensors, SdError> {
    let first: &Path = files.first().map_or(Path::new(""), |p| p.as_path());
    // SAFETY: the files are only read while the pipeline loads (candle copies every tensor
    // out); Autonomy does not write model folders while it loads them.
    unsafe { MmapedSafetensors::multi(files) }.map_err(|source| SdError::Weights {
        path: first.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_namings_reach_the_same_module() {
        let kohya = entry("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight").unwrap();
        let peft = entry("unet.down_blocks.0.attentions.0.proj_in.lora_A.weight").unwrap();
        assert_eq!((kohya.0, &kohya.1), (peft.0, &peft.1));
        let te_kohya = entry("lora_te_text_model_encoder_layers_1_mlp_fc1.alpha").unwrap();
        let te_peft = entry("text_encoder.encoder.layers.1.mlp.fc1.lora_B.weight").unwrap();
        assert_eq!((te_kohya.0, &te_kohya.1), (te_peft.0, &te_peft.1));
        assert_eq!(te_kohya.1, "encoder_layers_1_mlp_fc1");
        let old = entry("unet.mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.up.weight")
            .unwrap();
        assert_eq!(
            old.1,
            "mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0"
        );
        assert!(entry("lora_unet_x.hada_w1_a").is_none());
        assert!(entry("vae.decoder.conv_in.lora_A.weight").is_none());
    }

    fn fixture(relative: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sd/tiny-sd15")
            .join(relative)
    }

    fn networks() -> (MmapedSafetensors, MmapedSafetensors) {
        let unet = map(&[fixture("unet/diffusion_pytorch_model.safetensors")]).unwrap();
        let text = map(&[fixture("text_encoder/model.safetensors")]).unwrap();
        (unet, text)
    }

    #[test]
    fn a_merged_weight_is_the_base_plus_scale_times_up_down() {
        let (unet, text) = networks();
        let file = LoraFile {
            path: fixture("loras/kohya.safetensors"),
            label: "loras/kohya.safetensors".into(),
            scale: 0.8,
        };
        let (updates, uses) = Updates::read(std::slice::from_ref(&file), &unet, &text).unwrap();
        assert_eq!(uses[0].sha256.len(), 64);
        let lora = candle_core::safetensors::load(&file.path, &Device::Cpu).unwrap();
        let key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k";
        let name = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";
        let down = &lora[&format!("{key}.lora_down.weight")];
        let up = &lora[&format!("{key}.lora_up.weight")];
        let alpha = lora[&format!("{key}.alpha")].to_scalar::<f32>().unwrap();
        let rank = down.dim(0).unwrap() as f32;
        let base = unet.load(name, &Device::Cpu).unwrap();
        let expected =
            (&base + (up.matmul(down).unwrap() * f64::from(0.8 * alpha / rank)).unwrap()).unwrap();
        let merged = updates
            .merged(networks().0, Network::Unet)
            .get_unchecked(name, DType::F32, &Device::Cpu)
            .unwrap();
        let diff = super::super::max_abs_diff(&merged, &expected);
        assert!(diff < 1e-6, "{diff}");
        let untouched = "conv_in.weight";
        let same = updates
            .merged(networks().0, Network::Unet)
            .get_unchecked(untouched, DType::F32, &Device::Cpu)
            .unwrap();
        assert_eq!(
            same.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            unet.load(untouched, &Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
    }

    #[test]
    fn entries_that_fit_nothing_are_refused_with_their_key() {
        let (unet, text) = networks();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, tensors: Vec<(&str, Tensor)>| {
            let path = dir.path().join(name);
            let map: HashMap<String, Tensor> = tensors
                .into_iter()
                .map(|(k, t)| (k.to_string(), t))
                .collect();
            candle_core::safetensors::save(&map, &path).unwrap();
            LoraFile {
                path,
                label: name.into(),
                scale: 1.0,
            }
        };
        let zeros = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
        let unknown = write(
            "unknown.safetensors",
            vec![
                ("unet.no_such_block.to_q.lora_A.weight", zeros(&[4, 32])),
                ("unet.no_such_block.to_q.lora_B.weight", zeros(&[32, 4])),
            ],
        );
        let wrong = write(
            "wrong.safetensors",
            vec![
                ("unet.conv_in.lora_A.weight", zeros(&[4, 7])),
                ("unet.conv_in.lora_B.weight", zeros(&[32, 4])),
            ],
        );
        let half = write(
            "half.safetensors",
            vec![("lora_unet_conv_in.lora_down.weight", zeros(&[4, 36]))],
        );
        for (file, words) in [
            (unknown, "no_such_block"),
            (wrong, "do not fit `conv_in.weight`"),
            (half, "no down/up"),
        ] {
            let message = Updates::read(std::slice::from_ref(&file), &unet, &text)
                .unwrap_err()
                .to_string();
            assert!(
                message.contains(&file.path.display().to_string()) && message.contains(words),
                "{message}"
            );
        }
    }
}
