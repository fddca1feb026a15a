//! LoRA: low-rank updates `W += scale · (alpha / rank) · up · down` to the UNet's and the text
//! encoders' weights, merged once at load time by a var-builder backend, so sampling costs
//! nothing extra. Reads kohya's files (`lora_unet_…` / `lora_te_…`, and SDXL's `lora_te1_…` /
//! `lora_te2_…` with the UNet in the original model's block names, `input_blocks_4_1_…`; with
//! `.lora_down`, `.lora_up`, `.alpha`, and LyCORIS's CP-decomposed LoCon's `.lora_mid`), LyCORIS's LoHa (`.hada_w1_a` … `.hada_t2`) and LoKr
//! (`.lokr_w1` … `.lokr_t2`) files in the same names (see the `delta` module), LyCORIS's IA³
//! (`.weight`, `.on_input`), full (`.diff`, `.diff_b`), diag-OFT (`.oft_blocks`, `.alpha`,
//! `.rescale`; a 4-D `.oft_blocks` is butterfly OFT's), norm (`.w_norm`, `.b_norm`) and GLoRA (`.a1.weight` … `.b2.weight`,
//! `.alpha`; see the `transform` module),
//! PEFT's OFT (`.oft_R.weight`, in either naming),
//! and diffusers'
//! (`unet.….lora_A` / `text_encoder.…` / `text_encoder_2.….lora_B`, and the older
//! `…processor.to_q_lora.down`); several at once, each with its own scale. Files are
//! safetensors or PyTorch pickles (`torch.save`'s `.pt`/`.bin`, read without running them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use sha2::{Digest, Sha256};

use super::SdError;
use super::block_weights::BlockWeights;
use super::config::PipelineSpec;
use super::delta::{Delta, Factor, Magnitude};
use super::original_names;
use super::pickle::{PickleTensors, is_torch_save, starts_as_torch_save};
use super::transform::Transform;
use super::weights::{Weights, checked};
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
    /// How strongly to apply its text-encoder updates when that differs from `scale` (A1111's
    /// `<lora:name:te=…:unet=…>`); `None` applies `scale` to all.
    pub text_scale: Option<f64>,
    /// The ranks of its low-rank (down/up) updates to apply, the first ones of each (A1111's
    /// `dyn`, for DyLoRA files trained to work cut short); `None` applies them all. Its
    /// `alpha` stays divided by the whole rank, as A1111 divides it.
    pub rank: Option<usize>,
    /// How strongly to apply it in each block of the UNet and in the text encoders, times its
    /// scales (the sd-webui-lora-block-weight extension's `lbw=`); `None` applies it alike
    /// everywhere.
    pub blocks: Option<BlockWeights>,
}

impl LoraFile {
    /// The scale of its updates to `network`'s module `module` (canonical name) in a UNet of
    /// `layers` layers per block.
    fn scale_of(&self, network: Network, module: &str, layers: usize) -> f64 {
        let scale = match (network, self.text_scale) {
            (Network::Text | Network::Text2, Some(text)) => text,
            _ => self.scale,
        };
        let ratio = match (&self.blocks, network) {
            (None, _) => 1.0,
            (Some(blocks), Network::Unet) => blocks.unet_ratio(module, layers),
            (Some(blocks), Network::Text | Network::Text2) => blocks.text_ratio(),
        };
        scale * ratio
    }
}

/// Which network a LoRA entry adapts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Network {
    /// The UNet.
    Unet,
    /// The (first) CLIP text encoder.
    Text,
    /// SDXL's second text encoder.
    Text2,
}

/// One adapter's change to one weight, applied at the file's `scale`.
#[derive(Clone, Debug)]
struct Update {
    change: Change,
    scale: f64,
}

/// How an adapter changes a weight.
#[derive(Clone, Debug)]
enum Change {
    /// Adds `delta · alpha/rank` (with DoRA, the changed weight rescaled to its magnitudes).
    Add {
        delta: Delta,
        per_rank: f64,
        magnitude: Option<Magnitude>,
    },
    /// Transforms the weight (IA³, diag-OFT, GLoRA).
    Transform(Transform),
}

/// The updates of every LoRA, by network and the base weight they change.
#[derive(Clone, Debug, Default)]
pub struct Updates {
    unet: HashMap<String, Vec<Update>>,
    text: HashMap<String, Vec<Update>>,
    text_2: HashMap<String, Vec<Update>>,
}

impl Updates {
    /// Reads `files`, matching every entry to a weight of `unet`, `text` or `text_2` (the
    /// networks' safetensors; `layers_per_block` places the original UNet's block names); an
    /// entry that matches none, or does not fit its weight, is an error naming the entry and
    /// the file. Returns the updates and what the manifest records of each file.
    pub fn read(
        files: &[LoraFile],
        unet: &Weights,
        text: Option<&Weights>,
        text_2: Option<&Weights>,
        layers_per_block: usize,
    ) -> Result<(Self, Vec<LoraUse>), SdError> {
        let unet_names = weight_names(unet, Network::Unet);
        let text_names = text
            .map(|t| weight_names(t, Network::Text))
            .unwrap_or_default();
        let text_2_names = text_2
            .map(|t| weight_names(t, Network::Text2))
            .unwrap_or_default();
        let mut updates = Self::default();
        let mut uses = Vec::new();
        for file in files {
            let bytes = super::read_once(&file.path)?;
            let invalid = |message: String| SdError::Invalid {
                path: file.path.clone(),
                message,
            };
            let tensors = file_tensors(&bytes).map_err(invalid)?;
            let mut modules: HashMap<(Network, String), Parts> = HashMap::new();
            for (key, tensor) in tensors {
                let (network, module, part) =
                    entry(&key, layers_per_block).ok_or_else(|| invalid(format!("`{key}` is not a LoRA entry Autonomy reads (kohya `lora_unet_…`/`lora_te_…`/`lora_te1_…`/`lora_te2_…` or diffusers `unet.…`/`text_encoder.…`/`text_encoder_2.…` with down/up, A/B, LoHa `hada_…` or LoKr `lokr_…` parts, and DoRA's `dora_scale`)")))?;
                let parts = modules.entry((network, module)).or_default();
                match part {
                    Part::Down => parts.down = Some((key, tensor)),
                    Part::Up => parts.up = Some((key, tensor)),
                    Part::Mid => parts.mid = Some(tensor),
                    Part::Lycoris(name) => {
                        parts.lycoris.insert(name, tensor);
                    }
                    Part::Magnitude { scale_inside } => {
                        parts.magnitude = Some((tensor, scale_inside))
                    }
                    Part::Alpha => {
                        parts.alpha = Some(
                            scalar(&tensor)
                                .ok_or_else(|| invalid(format!("`{key}` is not a number")))?,
                        )
                    }
                }
            }
            if modules.is_empty() {
                return Err(invalid("holds no LoRA entries".into()));
            }
            for ((network, module), mut parts) in modules {
                let (names, base, map) = match (network, text, text_2) {
                    (Network::Unet, _, _) => (&unet_names, unet, &mut updates.unet),
                    (Network::Text, Some(text), _) => (&text_names, text, &mut updates.text),
                    (Network::Text, None, _) => {
                        return Err(invalid(format!(
                            "`{module}` adapts the first text encoder, which this pipeline does not have (an SDXL refiner has only the second)"
                        )));
                    }
                    (Network::Text2, _, Some(text_2)) => {
                        (&text_2_names, text_2, &mut updates.text_2)
                    }
                    (Network::Text2, _, None) => {
                        return Err(invalid(format!(
                            "`{module}` adapts a second text encoder, which this pipeline does not have (an SDXL LoRA?)"
                        )));
                    }
                };
                let weight = names.get(&module).ok_or_else(|| {
                    invalid(format!(
                        "`{module}` names a weight the {} does not have",
                        match network {
                            Network::Unet => "UNet",
                            Network::Text => "text encoder",
                            Network::Text2 => "second text encoder",
                        }
                    ))
                })?;
                let shape_of = |name: &str| {
                    base.shape(name).ok_or_else(|| {
                        invalid(format!("`{name}` is not in `{}`", base.path().display()))
                    })
                };
                let shape = shape_of(weight)?;
                // LyCORIS full and norm: a change of the bias too.
                let bias_change = ["diff_b", "b_norm"]
                    .into_iter()
                    .find_map(|name| parts.lycoris.remove(name).map(|t| (name, t)));
                if let Some((part, diff_b)) = bias_change {
                    let bias = weight
                        .strip_suffix(".weight")
                        .map(|stem| format!("{stem}.bias"))
                        .filter(|bias| base.contains_tensor(bias))
                        .ok_or_else(|| {
                            invalid(format!(
                                "`{module}.{part}` changes a bias `{weight}`'s layer does not have"
                            ))
                        })?;
                    let delta = Delta::Whole(diff_b);
                    check_fit(&delta, &bias, &shape_of(&bias)?)
                        .map_err(|what| invalid(format!("`{module}.{part}`{what}")))?;
                    map.entry(bias).or_default().push(Update {
                        change: Change::Add {
                            delta,
                            per_rank: 1.0,
                            magnitude: None,
                        },
                        scale: file.scale_of(network, &module, layers_per_block),
                    });
                }
                let change = parts
                    .change(weight, &shape, file.rank)
                    .map_err(|what| invalid(format!("`{module}` {what}")))?;
                map.entry(weight.clone()).or_default().push(Update {
                    change,
                    scale: file.scale_of(network, &module, layers_per_block),
                });
            }
            uses.push(LoraUse {
                file: file.label.clone(),
                sha256: hex::encode(Sha256::digest(&bytes)),
                scale: file.scale,
                text_scale: file.text_scale,
                rank: file.rank,
                blocks: file.blocks.as_ref().map(|b| b.ratios().to_vec()),
            });
        }
        Ok((updates, uses))
    }

    fn of(&self, network: Network) -> &HashMap<String, Vec<Update>> {
        match network {
            Network::Unet => &self.unet,
            Network::Text => &self.text,
            Network::Text2 => &self.text_2,
        }
    }

    /// A var-builder backend serving `base`'s weights with this network's updates merged.
    pub fn merged(&self, base: Weights, network: Network) -> Merged {
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
    /// A CP-decomposed LoCon's core, between `down` and `up`.
    mid: Option<Tensor>,
    alpha: Option<f64>,
    /// DoRA's magnitudes, and whether the scale goes inside their norm (PEFT's).
    magnitude: Option<(Tensor, bool)>,
    /// LyCORIS tensors by part name (`hada_w1_a`, `lokr_t2`, …).
    lycoris: HashMap<&'static str, Tensor>,
}

impl Parts {
    /// The change these parts describe to the weight `name` of shape `weight` (a down/up pair
    /// cut to its first `cut` ranks when given), or what is missing, malformed or does not fit
    /// it.
    fn change(
        mut self,
        name: &str,
        weight: &[usize],
        cut: Option<usize>,
    ) -> Result<Change, String> {
        if let Some(blocks) = self.lycoris.remove("oft_blocks") {
            let (constraint, rescale) = (self.alpha.unwrap_or(0.0), self.lycoris.remove("rescale"));
            // LyCORIS's butterfly OFT stores its stages as a fourth dimension.
            let transform = if blocks.rank() == 4 {
                Transform::Boft {
                    blocks,
                    constraint,
                    rescale,
                }
            } else {
                Transform::Oft {
                    blocks,
                    constraint,
                    rescale,
                }
            };
            return self.transform(transform, weight);
        }
        if let Some(triangles) = self.lycoris.remove("oft_R") {
            return self.transform(Transform::PeftOft { triangles }, weight);
        }
        if let (Some(a1), Some(a2), Some(b1), Some(b2)) = (
            self.lycoris.remove("glora_a1"),
            self.lycoris.remove("glora_a2"),
            self.lycoris.remove("glora_b1"),
            self.lycoris.remove("glora_b2"),
        ) {
            let rank = a2.dims().first().copied().unwrap_or(0);
            let transform = Transform::Glora {
                per_rank: self.alpha.map_or(1.0, |alpha| alpha / rank.max(1) as f64),
                a1,
                a2,
                b: Delta::LowRank {
                    down: b2,
                    up: b1,
                    mid: None,
                },
            };
            return self.transform(transform, weight);
        }
        if let Some(on_input) = self.lycoris.remove("on_input") {
            let factors = self
                .lycoris
                .remove("weight")
                .ok_or("has IA³'s `on_input` but not its `weight`")?;
            let on_input = scalar(&on_input).ok_or("has an `on_input` that is not a number")?;
            let transform = Transform::Ia3 {
                factors,
                on_input: on_input != 0.0,
            };
            return self.transform(transform, weight);
        }
        let magnitude = self
            .magnitude
            .take()
            .map(|(m, scale_inside)| Magnitude::new(m, weight, scale_inside))
            .transpose()
            .map_err(|why| format!(": {why}"))?;
        let alpha = self.alpha;
        let (delta, rank) = self.delta()?;
        let delta = match (delta, cut) {
            // A1111 cuts no Tucker core (it rebuilds a CP LoCon whole).
            (
                Delta::LowRank {
                    down,
                    up,
                    mid: None,
                },
                Some(cut),
            ) if rank.is_some_and(|rank| cut < rank) => {
                let cut = |t: Tensor, axis: usize| {
                    t.narrow(axis, 0, cut)
                        .map_err(|e| format!(": cannot cut its ranks: {e}"))
                };
                Delta::LowRank {
                    down: cut(down, 0)?,
                    up: cut(up, 1)?,
                    mid: None,
                }
            }
            (delta, _) => delta,
        };
        check_fit(&delta, name, weight)?;
        let per_rank = match (alpha, rank) {
            (Some(alpha), Some(rank)) => alpha / rank as f64,
            _ => 1.0,
        };
        Ok(Change::Add {
            delta,
            per_rank,
            magnitude,
        })
    }

    /// `transform` when it fits `weight` and nothing else is left over.
    fn transform(self, transform: Transform, weight: &[usize]) -> Result<Change, String> {
        if let Some(why) = transform.misfit(weight) {
            return Err(format!(": {why}"));
        }
        Ok(Change::Transform(transform))
    }

    /// The additive change these parts describe and the rank `alpha` is divided by (LoRA: the
    /// down matrix's; LoHa: the first factor's; LoKr: the second factor's, else the first's;
    /// none for whole LoKr factors and full differences), or what is missing or malformed.
    fn delta(mut self) -> Result<(Delta, Option<usize>), String> {
        if let (Some((_, down)), Some((_, up))) = (self.down.take(), self.up.take()) {
            let rank = down.dims().first().copied().filter(|&r| r > 0);
            if rank.is_none() || up.dims().get(1) != rank.as_ref() {
                return Err(format!(
                    "has a down {:?} and an up {:?} that do not multiply",
                    down.dims(),
                    up.dims()
                ));
            }
            let mid = self.mid.take();
            if let Some(mid) = &mid {
                let ones = |t: &Tensor| t.dims().iter().skip(2).all(|&d| d == 1);
                if mid.rank() != 4
                    || mid.dims()[..2] != [up.dims()[1], down.dims()[0]]
                    || !ones(&down)
                    || !ones(&up)
                {
                    return Err(format!(
                        "has a down {:?}, a mid {:?} and an up {:?} that do not multiply (a CP-decomposed LoCon has 1×1 down and up around a (rank, rank, k, l) mid)",
                        down.dims(),
                        mid.dims(),
                        up.dims()
                    ));
                }
            }
            return Ok((Delta::LowRank { down, up, mid }, rank));
        }
        // LyCORIS full's difference, or its norm adapter's (a norm's weight).
        if let Some(diff) = self
            .lycoris
            .remove("diff")
            .or_else(|| self.lycoris.remove("w_norm"))
        {
            return Ok((Delta::Whole(diff), None));
        }
        let mut take = |name: &str| self.lycoris.remove(name);
        // A factor stored whole, as a product, or as a Tucker core with its two factors.
        let mut factor =
            |whole: &str, a: &str, b: &str, t: &str| match (take(whole), take(a), take(b)) {
                (Some(whole), None, None) => Some(Factor::Whole(whole)),
                (None, Some(a), Some(b)) => Some(match take(t) {
                    Some(t) => Factor::Tucker { t, a, b },
                    None => Factor::Product { a, b },
                }),
                _ => None,
            };
        let (delta, rank) = if let (Some(w1), Some(w2)) = (
            factor("", "hada_w1_a", "hada_w1_b", "hada_t1"),
            factor("", "hada_w2_a", "hada_w2_b", "hada_t2"),
        ) {
            let rank = w1.rank();
            (Delta::Hadamard(w1, w2), rank)
        } else if let (Some(w1), Some(w2)) = (
            factor("lokr_w1", "lokr_w1_a", "lokr_w1_b", ""),
            factor("lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"),
        ) {
            let rank = w2.rank().or(w1.rank());
            (Delta::Kronecker(w1, w2), rank)
        } else {
            return Err("has no complete down/up (A/B), LoHa (`hada_w1_a` … `hada_w2_b`), LoKr (`lokr_w1`(`_a`/`_b`), `lokr_w2`(`_a`/`_b`)), IA³ (`weight`, `on_input`), full (`diff`), norm (`w_norm`), OFT (`oft_blocks`, PEFT's `oft_R`) or GLoRA (`a1` … `b2`) set".into());
        };
        let malformed = match &delta {
            Delta::Hadamard(w1, w2) | Delta::Kronecker(w1, w2) => {
                !(w1.well_formed() && w2.well_formed())
            }
            Delta::LowRank { .. } | Delta::Whole(_) => false,
        };
        if malformed || rank == Some(0) {
            return Err("has factors whose shapes do not multiply".into());
        }
        Ok((delta, rank))
    }
}

/// The tensors of a LoRA file's `bytes`: a safetensors file, or a PyTorch pickle (`torch.save`:
/// diffusers' older `pytorch_lora_weights.bin`, A1111's `.pt`), read without running it.
fn file_tensors(bytes: &Arc<[u8]>) -> Result<Vec<(String, Tensor)>, String> {
    if !starts_as_torch_save(bytes) {
        return candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map(|tensors| tensors.into_iter().collect())
            .map_err(|e| format!("not a safetensors file or PyTorch pickle: {e}"));
    }
    let pickle = PickleTensors::from_bytes(Arc::clone(bytes), None)
        .map_err(|e| format!("not a readable PyTorch pickle: {e}"))?;
    pickle
        .tensor_infos()
        .keys()
        .map(|key| match pickle.get(key) {
            Ok(Some(tensor)) => Ok((key.clone(), tensor)),
            Ok(None) => Err(format!("`{key}` cannot be read")),
            Err(e) => Err(format!("`{key}`: {e}")),
        })
        .collect()
}

/// The number a one-value tensor (`alpha`, `on_input`) holds.
fn scalar(tensor: &Tensor) -> Option<f64> {
    tensor
        .to_dtype(DType::F64)
        .and_then(|t| t.flatten_all()?.to_vec1::<f64>())
        .ok()
        .and_then(|v| v.first().copied())
}

/// Whether an additive change has the rows and values of the weight `name` of shape `weight`.
fn check_fit(delta: &Delta, name: &str, weight: &[usize]) -> Result<(), String> {
    let (rows, count) = delta.size();
    if Some(&rows) != weight.first() || count != weight.iter().product::<usize>() {
        return Err(format!(
            ": a change of {rows} rows and {count} values does not fit `{name}` of shape {weight:?}"
        ));
    }
    Ok(())
}

/// What a LoRA file adapts and which pipelines it fits, read from its safetensors header alone
/// (no tensor is read), so that pickers can list many files cheaply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoraSummary {
    /// The kinds of change it holds, sorted.
    pub adapters: Vec<Adapter>,
    /// Whether it changes the UNet.
    pub unet: bool,
    /// Whether it changes the (first) text encoder.
    pub text: bool,
    /// Whether it changes SDXL's second text encoder.
    pub text_2: bool,
    /// Its largest rank.
    pub rank: usize,
    /// The text-context width its UNet cross-attention updates take (768 for SD 1.x, 1024 for
    /// SD 2.x, 2048 for SDXL), when it has any.
    pub context_dim: Option<usize>,
    /// The width of the first text encoder its updates take, when it has any.
    pub text_dim: Option<usize>,
    /// Whether it is weight-decomposed (DoRA's `dora_scale` magnitudes).
    pub dora: bool,
    /// The name its trainer gave it (kohya's `ss_output_name` metadata), by which A1111's
    /// prompt tags may also name it.
    pub alias: Option<String>,
}

/// A kind of adapter change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Adapter {
    /// `up · down`.
    LoRA,
    /// LyCORIS LoHa: a Hadamard product of two low-rank factors.
    LoHa,
    /// LyCORIS LoKr: a Kronecker product.
    LoKr,
    /// LyCORIS IA³: rows or columns scaled.
    Ia3,
    /// LyCORIS full: whole differences (`diff`, `diff_b`).
    Full,
    /// LyCORIS diag-OFT: blocks of rows rotated.
    Oft,
    /// LyCORIS butterfly OFT: blocks of rows rotated in butterfly stages.
    Boft,
    /// PEFT's OFT: blocks of input columns rotated.
    PeftOft,
    /// LyCORIS's norm adapter: differences of the group and layer norms' weights and biases.
    Norm,
    /// LyCORIS GLoRA: a low-rank change plus the weight times a low-rank matrix.
    Glora,
}

impl Adapter {
    /// Its usual name.
    pub fn name(self) -> &'static str {
        match self {
            Adapter::LoRA => "LoRA",
            Adapter::LoHa => "LoHa",
            Adapter::LoKr => "LoKr",
            Adapter::Ia3 => "IA³",
            Adapter::Full => "full",
            Adapter::Oft => "OFT",
            Adapter::Boft => "BOFT",
            Adapter::PeftOft => "PEFT OFT",
            Adapter::Norm => "norm",
            Adapter::Glora => "GLoRA",
        }
    }
}

impl LoraSummary {
    /// Reads the header of the `.safetensors` file at `path`; a file that is not a LoRA file
    /// Autonomy reads is an error naming it and why.
    pub fn read(path: &Path) -> Result<Self, SdError> {
        let invalid = |message: String| SdError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let (shapes, alias) = if is_torch_save(path) {
            let pickle = PickleTensors::open(path, None)
                .map_err(|e| invalid(format!("not a readable PyTorch pickle: {e}")))?;
            let shapes: Vec<(String, Option<Vec<usize>>)> = pickle
                .tensor_infos()
                .iter()
                .map(|(key, info)| (key.clone(), Some(info.layout.dims().to_vec())))
                .collect();
            (shapes, None)
        } else {
            let header = super::weights::header(path)?;
            let alias = header
                .get("__metadata__")
                .and_then(|metadata| metadata.get("ss_output_name"))
                .and_then(|name| name.as_str())
                .filter(|name| !name.is_empty())
                .map(str::to_owned);
            let shapes = header
                .iter()
                .filter(|(key, _)| *key != "__metadata__")
                .map(|(key, info)| {
                    let shape = info
                        .get("shape")
                        .and_then(|shape| serde_json::from_value(shape.clone()).ok());
                    (key.clone(), shape)
                })
                .collect();
            (shapes, alias)
        };
        let mut summary = Self {
            adapters: Vec::new(),
            unet: false,
            text: false,
            text_2: false,
            rank: 0,
            context_dim: None,
            text_dim: None,
            dora: false,
            alias,
        };
        // LoKr: the input widths of each module's two Kronecker factors, whose product is the
        // weight's (its second columns: `lokr_w1`/`lokr_w1_b` and `lokr_w2`/`lokr_w2_b`, a
        // Tucker `lokr_w2_b` included).
        let mut kronecker: HashMap<(Network, String), [Option<usize>; 2]> = HashMap::new();
        for (key, shape) in &shapes {
            let (network, module, part) = entry(key, 2)
                .ok_or_else(|| invalid(format!("`{key}` is not a LoRA entry Autonomy reads")))?;
            match network {
                Network::Unet => summary.unet = true,
                Network::Text => summary.text = true,
                Network::Text2 => summary.text_2 = true,
            }
            let shape = shape
                .as_ref()
                .ok_or_else(|| invalid(format!("`{key}` has no shape in the header")))?;
            let kind = match part {
                Part::Lycoris(name) if name.starts_with("hada") => Some(Adapter::LoHa),
                Part::Lycoris(name) if name.starts_with("lokr") => Some(Adapter::LoKr),
                Part::Lycoris("weight" | "on_input") => Some(Adapter::Ia3),
                Part::Lycoris("diff" | "diff_b") => Some(Adapter::Full),
                Part::Lycoris("w_norm" | "b_norm") => Some(Adapter::Norm),
                Part::Lycoris(name) if name.starts_with("glora") => Some(Adapter::Glora),
                Part::Lycoris("oft_blocks") if shape.len() == 4 => Some(Adapter::Boft),
                Part::Lycoris("oft_R") => Some(Adapter::PeftOft),
                // Diag-OFT's or BOFT's: its blocks tell which.
                Part::Lycoris("rescale") => None,
                Part::Lycoris(_) => Some(Adapter::Oft),
                Part::Down | Part::Up | Part::Mid => Some(Adapter::LoRA),
                Part::Magnitude { .. } => {
                    summary.dora = true;
                    None
                }
                Part::Alpha => None,
            };
            if let Some(kind) = kind.filter(|kind| !summary.adapters.contains(kind)) {
                summary.adapters.push(kind);
                summary.adapters.sort();
            }
            if let Part::Lycoris(name @ ("lokr_w1" | "lokr_w1_b" | "lokr_w2" | "lokr_w2_b")) = part
            {
                let factor = usize::from(name.starts_with("lokr_w2"));
                kronecker.entry((network, module.clone())).or_default()[factor] =
                    shape.get(1).copied();
            }
            // The parts that are (rank, input) matrices; a LoKr factor's input is only part of
            // the weight's (the factors' product is taken below).
            let (rank, input) = match part {
                Part::Down | Part::Lycoris("hada_w1_b" | "glora_a2") => {
                    (shape.first(), shape.get(1))
                }
                Part::Lycoris("lokr_w1_b" | "lokr_w2_b") => (shape.first(), None),
                Part::Lycoris("diff") => {
                    // A whole difference: its columns are the layer's input.
                    if let Some(&input) = shape.get(1) {
                        summary.note_input(network, &module, input);
                    }
                    continue;
                }
                _ => continue,
            };
            let Some(&rank) = rank else {
                return Err(invalid(format!("`{key}` is not a matrix: {shape:?}")));
            };
            summary.rank = summary.rank.max(rank);
            if let Some(&input) = input {
                summary.note_input(network, &module, input);
            }
        }
        for ((network, module), widths) in kronecker {
            if let [Some(first), Some(second)] = widths {
                summary.note_input(network, &module, first * second);
            }
        }
        if !(summary.unet || summary.text || summary.text_2) {
            return Err(invalid("holds no LoRA entries".into()));
        }
        Ok(summary)
    }

    /// Records the input width of a module's update where it tells a pipeline's widths: the
    /// UNet's cross-attention keys and values take the text context, the text encoder's
    /// self-attention its hidden states.
    fn note_input(&mut self, network: Network, module: &str, input: usize) {
        match network {
            Network::Unet if module.ends_with("attn2_to_k") || module.ends_with("attn2_to_v") => {
                self.context_dim = Some(input);
            }
            Network::Text if module.contains("self_attn_") => self.text_dim = Some(input),
            _ => {}
        }
    }

    /// Whether it fits the pipeline `spec` describes: the text width of its UNet updates and
    /// of its text-encoder updates, and each text encoder it adapts being there. (Loading is
    /// the full check: every entry must then meet a weight of its shape. IA³ and OFT files
    /// carry neither width in their shapes, so only their networks are checked here.)
    pub fn fits(&self, spec: &PipelineSpec) -> bool {
        self.context_dim
            .is_none_or(|dim| dim == spec.unet.config.cross_attention_dim)
            && (!self.text || spec.text.is_some())
            && self
                .text_dim
                .is_none_or(|dim| spec.text.as_ref().is_some_and(|t| t.hidden_size == dim))
            && (spec.text_2.is_some() || !self.text_2)
    }

    /// What it changes, for people: `UNet + text encoders, rank 4`.
    pub fn describe(&self) -> String {
        let networks: Vec<&str> = [
            (self.unet, "UNet"),
            (
                self.text || self.text_2,
                if self.text && self.text_2 {
                    "text encoders"
                } else {
                    "text encoder"
                },
            ),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        let networks = match self.rank {
            // IA³, full and OFT changes have no rank.
            0 => networks.join(" + "),
            rank => format!("{}, rank {rank}", networks.join(" + ")),
        };
        let mut kinds: Vec<&str> = self.adapters.iter().map(|a| a.name()).collect();
        if self.dora {
            kinds.push("DoRA");
        }
        if kinds == ["LoRA"] {
            return networks;
        }
        format!("{}: {networks}", kinds.join(" + "))
    }
}

#[derive(Clone, Copy)]
enum Part {
    Down,
    Up,
    /// A CP-decomposed LoCon's Tucker core (`lora_mid`).
    Mid,
    Alpha,
    /// DoRA's magnitudes: kohya/LyCORIS `dora_scale` (the file's scale applied outside the
    /// norm) or PEFT's `lora_magnitude_vector` (inside).
    Magnitude {
        /// Whether the scale goes inside the norm (PEFT).
        scale_inside: bool,
    },
    /// A LyCORIS tensor, by its name (`hada_w1_a`, `lokr_t2`, …).
    Lycoris(&'static str),
}

/// The LyCORIS tensors read by their last name: LoHa's, LoKr's, IA³'s, full's, norm's and OFT's
/// (GLoRA's `a1.weight` … are suffixes in `entry`).
const LYCORIS: [&str; 21] = [
    "hada_w1_a",
    "hada_w1_b",
    "hada_w2_a",
    "hada_w2_b",
    "hada_t1",
    "hada_t2",
    "lokr_w1",
    "lokr_w1_a",
    "lokr_w1_b",
    "lokr_w2",
    "lokr_w2_a",
    "lokr_w2_b",
    "lokr_t2",
    "weight",
    "on_input",
    "diff",
    "diff_b",
    "w_norm",
    "b_norm",
    "oft_blocks",
    "rescale",
];

/// The network, canonical module name and part of a LoRA file's key (`layers_per_block` places
/// the original UNet's block names).
fn entry(key: &str, layers_per_block: usize) -> Option<(Network, String, Part)> {
    const SUFFIXES: [(&str, Part); 15] = [
        (".lora_down.weight", Part::Down),
        (".lora_up.weight", Part::Up),
        (".lora_mid.weight", Part::Mid),
        (".lora_A.weight", Part::Down),
        (".lora_B.weight", Part::Up),
        (".lora.down.weight", Part::Down),
        (".lora.up.weight", Part::Up),
        (".alpha", Part::Alpha),
        (
            ".dora_scale",
            Part::Magnitude {
                scale_inside: false,
            },
        ),
        (
            ".lora_magnitude_vector",
            Part::Magnitude { scale_inside: true },
        ),
        (".a1.weight", Part::Lycoris("glora_a1")),
        (".a2.weight", Part::Lycoris("glora_a2")),
        (".b1.weight", Part::Lycoris("glora_b1")),
        (".b2.weight", Part::Lycoris("glora_b2")),
        (".oft_R.weight", Part::Lycoris("oft_R")),
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
        })
        .or_else(|| {
            let (stem, name) = key.rsplit_once('.')?;
            let name = LYCORIS.into_iter().find(|known| *known == name)?;
            Some((stem.to_string(), Part::Lycoris(name)))
        })?;
    const PREFIXES: [(&str, Network); 7] = [
        ("lora_unet_", Network::Unet),
        ("lora_te_", Network::Text),
        ("lora_te1_", Network::Text),
        ("lora_te2_", Network::Text2),
        ("unet.", Network::Unet),
        ("text_encoder.", Network::Text),
        ("text_encoder_2.", Network::Text2),
    ];
    let (network, module) = PREFIXES
        .into_iter()
        .find_map(|(prefix, network)| stem.strip_prefix(prefix).map(|m| (network, m)))?;
    let module = canonical(network, module);
    let module = match network {
        Network::Unet => {
            original_names::unet_blocks(&module, layers_per_block, '_').unwrap_or(module)
        }
        Network::Text | Network::Text2 => module,
    };
    Some((network, module, part))
}

/// A module name as both naming schemes can be compared: `_` for `.`, without the text
/// encoder's `text_model` prefix.
fn canonical(network: Network, module: &str) -> String {
    let flat = module.replace('.', "_");
    match network {
        Network::Text | Network::Text2 => flat
            .strip_prefix("text_model_")
            .map(str::to_string)
            .unwrap_or(flat),
        Network::Unet => flat,
    }
}

/// The weights of a network (`….weight`) by canonical module name.
fn weight_names(tensors: &Weights, network: Network) -> HashMap<String, String> {
    tensors
        .names()
        .into_iter()
        .filter_map(|name| {
            let module = name.strip_suffix(".weight")?;
            Some((canonical(network, module), name.clone()))
        })
        .collect()
}

/// Base weights with LoRA updates added as they are read.
pub struct Merged {
    base: Weights,
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
            merged = match &update.change {
                Change::Add {
                    delta,
                    per_rank,
                    magnitude,
                } => {
                    let change = (delta.value(device, merged.dims())? * *per_rank)?;
                    match magnitude {
                        None => (merged + (change * update.scale)?)?,
                        Some(magnitude) => magnitude.apply(&merged, &change, update.scale)?,
                    }
                }
                Change::Transform(transform) => transform.apply(&merged, update.scale)?,
            };
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
        checked(self.load(name, dtype, dev)?, s, name)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.base.contains_tensor(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_namings_reach_the_same_module() {
        let kohya = entry(
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
            2,
        )
        .unwrap();
        let peft = entry("unet.down_blocks.0.attentions.0.proj_in.lora_A.weight", 2).unwrap();
        assert_eq!((kohya.0, &kohya.1), (peft.0, &peft.1));
        let te_kohya = entry("lora_te_text_model_encoder_layers_1_mlp_fc1.alpha", 2).unwrap();
        let te_peft = entry("text_encoder.encoder.layers.1.mlp.fc1.lora_B.weight", 2).unwrap();
        assert_eq!((te_kohya.0, &te_kohya.1), (te_peft.0, &te_peft.1));
        assert_eq!(te_kohya.1, "encoder_layers_1_mlp_fc1");
        let old = entry("unet.mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.up.weight", 2)
            .unwrap();
        assert_eq!(
            old.1,
            "mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0"
        );
        let loha = entry("lora_unet_down_blocks_0_resnets_0_conv1.hada_t1", 2).unwrap();
        assert!(matches!(loha.2, Part::Lycoris("hada_t1")));
        assert_eq!(loha.1, "down_blocks_0_resnets_0_conv1");
        let dora = entry("lora_unet_down_blocks_0_resnets_0_conv1.dora_scale", 2).unwrap();
        assert!(matches!(
            dora.2,
            Part::Magnitude {
                scale_inside: false
            }
        ));
        let peft = entry(
            "unet.mid_block.attentions.0.proj_in.lora_magnitude_vector",
            2,
        )
        .unwrap();
        assert!(matches!(peft.2, Part::Magnitude { scale_inside: true }));
        assert!(entry("vae.decoder.conv_in.lora_A.weight", 2).is_none());
    }

    fn fixture(relative: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sd/tiny-sd15")
            .join(relative)
    }

    fn networks() -> (Weights, Weights) {
        let unet = Weights::files(&[fixture("unet/diffusion_pytorch_model.safetensors")]).unwrap();
        let text = Weights::files(&[fixture("text_encoder/model.safetensors")]).unwrap();
        (unet, text)
    }

    #[test]
    fn a_summary_tells_which_pipelines_a_file_fits_from_its_header() {
        let kohya = LoraSummary::read(&fixture("loras/kohya.safetensors")).unwrap();
        let peft = LoraSummary::read(&fixture("loras/peft.safetensors")).unwrap();
        let xl = LoraSummary::read(&fixture("../tiny-sdxl/loras/kohya-xl.safetensors")).unwrap();
        let spec = |relative: &str| {
            PipelineSpec::read(
                &crate::models::sd::folder::DiffusersFolder::open(&fixture(relative)).unwrap(),
            )
            .unwrap()
        };
        let sd15_spec = spec("");
        let xl_spec = spec("../tiny-sdxl");
        for sd15 in [&kohya, &peft] {
            assert!(sd15.unet && sd15.text && !sd15.text_2, "{sd15:?}");
            assert_eq!(
                (sd15.rank, sd15.context_dim, sd15.text_dim),
                (4, Some(32), Some(32))
            );
            // tiny-sd15's UNet takes 32-wide text from a 32-wide encoder; tiny-sdxl's 64 from two.
            assert!(sd15.fits(&sd15_spec));
            assert!(!sd15.fits(&xl_spec));
        }
        assert!(xl.unet && xl.text && xl.text_2, "{xl:?}");
        assert_eq!((xl.context_dim, xl.text_dim), (Some(64), Some(32)));
        assert!(xl.fits(&xl_spec));
        assert!(!xl.fits(&sd15_spec));
        let needs_text_2 = LoraSummary {
            text_2: true,
            ..peft.clone()
        };
        assert!(
            !needs_text_2.fits(&sd15_spec),
            "second-encoder updates need one"
        );
        assert_eq!(kohya.describe(), "UNet + text encoder, rank 4");
        assert_eq!(kohya.adapters, [Adapter::LoRA]);
        // LyCORIS files: LoHa's first factor tells the widths; LoKr's two factors together.
        let loha = LoraSummary::read(&fixture("loras/loha.safetensors")).unwrap();
        assert_eq!(loha.adapters, [Adapter::LoHa]);
        assert_eq!(
            (loha.rank, loha.context_dim, loha.text_dim),
            (4, Some(32), Some(32))
        );
        assert!(loha.fits(&sd15_spec) && !loha.fits(&xl_spec));
        assert_eq!(loha.describe(), "LoHa: UNet + text encoder, rank 4");
        let lokr = LoraSummary::read(&fixture("loras/lokr.safetensors")).unwrap();
        assert_eq!(lokr.adapters, [Adapter::LoKr]);
        assert_eq!(
            (lokr.rank, lokr.context_dim, lokr.text_dim),
            (4, Some(32), Some(32))
        );
        assert!(lokr.fits(&sd15_spec) && !lokr.fits(&xl_spec));
        assert_eq!(xl.describe(), "UNet + text encoders, rank 4");
        // A CP-decomposed LoCon is a LoRA whose 3×3 cores (`lora_mid`) carry no width.
        let cp = LoraSummary::read(&fixture("loras/locon_cp.safetensors")).unwrap();
        assert_eq!(cp.adapters, [Adapter::LoRA]);
        assert_eq!(
            (cp.rank, cp.context_dim, cp.text_dim),
            (4, Some(32), Some(32))
        );
        assert!(cp.fits(&sd15_spec) && !cp.fits(&xl_spec));
        let dora = LoraSummary::read(&fixture("loras/dora.safetensors")).unwrap();
        assert!(dora.dora && !kohya.dora && dora.fits(&sd15_spec));
        assert_eq!(dora.describe(), "LoRA + DoRA: UNet + text encoder, rank 4");
        let peft_dora = LoraSummary::read(&fixture("loras/dora-peft.safetensors")).unwrap();
        assert!(peft_dora.dora && peft_dora.fits(&sd15_spec) && !peft_dora.fits(&xl_spec));
        assert_eq!(peft_dora.describe(), "LoRA + DoRA: UNet, rank 4");
        // LyCORIS's IA³, full and OFT changes have no rank; full differences tell the widths.
        let glora = LoraSummary::read(&fixture("loras/glora.safetensors")).unwrap();
        assert_eq!(glora.describe(), "GLoRA: UNet + text encoder, rank 4");
        assert_eq!((glora.context_dim, glora.text_dim), (Some(32), Some(32)));
        assert!(glora.fits(&sd15_spec) && !glora.fits(&xl_spec));
        for (file, adapter, words) in [
            ("ia3", Adapter::Ia3, "IA³: UNet + text encoder"),
            ("full", Adapter::Full, "full: UNet + text encoder"),
            ("oft", Adapter::Oft, "OFT: UNet + text encoder"),
            ("boft", Adapter::Boft, "BOFT: UNet + text encoder"),
            (
                "oft_peft",
                Adapter::PeftOft,
                "PEFT OFT: UNet + text encoder",
            ),
            ("norm", Adapter::Norm, "norm: UNet + text encoder"),
        ] {
            let summary =
                LoraSummary::read(&fixture(&format!("loras/{file}.safetensors"))).unwrap();
            assert_eq!(
                (summary.adapters.as_slice(), summary.rank),
                ([adapter].as_slice(), 0)
            );
            assert_eq!(summary.describe(), words);
            assert!(summary.fits(&sd15_spec));
        }
        let full = LoraSummary::read(&fixture("loras/full.safetensors")).unwrap();
        assert_eq!((full.context_dim, full.text_dim), (Some(32), Some(32)));
        assert!(!full.fits(&xl_spec));
        // SDXL's refiner: only the second text encoder, whose 32-wide states alone are its
        // context. A LoRA of the base's first encoder does not fit; one of its UNet and second
        // encoder alone, with the refiner's widths, does.
        let refiner_spec = PipelineSpec::read(
            &crate::models::sd::folder::DiffusersFolder::open(&fixture("../tiny-sdxl-refiner"))
                .unwrap(),
        )
        .unwrap();
        assert!(!xl.fits(&refiner_spec) && !lokr.fits(&refiner_spec));
        let refiner_lora = LoraSummary {
            text: false,
            text_dim: None,
            context_dim: Some(32),
            ..xl.clone()
        };
        assert!(refiner_lora.fits(&refiner_spec));
        assert!(!refiner_lora.fits(&xl_spec));

        // Weights that are not a LoRA, a truncated file and a missing one are refused by name.
        let unet = fixture("unet/diffusion_pytorch_model.safetensors");
        let message = LoraSummary::read(&unet).unwrap_err().to_string();
        assert!(message.contains("is not a LoRA entry"), "{message}");
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join("cut.safetensors");
        let bytes = std::fs::read(fixture("loras/peft.safetensors")).unwrap();
        std::fs::write(&cut, &bytes[..100]).unwrap();
        let message = LoraSummary::read(&cut).unwrap_err().to_string();
        assert!(
            message.contains("cut.safetensors") && message.contains("cut short"),
            "{message}"
        );
        assert!(matches!(
            LoraSummary::read(&dir.path().join("none.safetensors")),
            Err(SdError::MissingFile { .. })
        ));
        // A pickle cut short is refused by its summary and by the merge, naming the file.
        for pickled in ["kohya-pickled.pt", "peft-pickled.bin"] {
            let cut = dir.path().join(format!("cut-{pickled}"));
            let bytes = std::fs::read(fixture(&format!("loras/{pickled}"))).unwrap();
            std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
            let message = LoraSummary::read(&cut).unwrap_err().to_string();
            assert!(
                message.contains(&format!("cut-{pickled}")) && message.contains("PyTorch pickle"),
                "{message}"
            );
            let (unet, text) = networks();
            let file = LoraFile {
                path: cut.clone(),
                label: pickled.into(),
                scale: 1.0,
                text_scale: None,
                rank: None,
                blocks: None,
            };
            let message = Updates::read(&[file], &unet, Some(&text), None, 2)
                .unwrap_err()
                .to_string();
            assert!(
                message.contains(&format!("cut-{pickled}")) && message.contains("PyTorch pickle"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_merged_weight_is_the_base_plus_scale_times_up_down() {
        let (unet, text) = networks();
        let file = LoraFile {
            path: fixture("loras/kohya.safetensors"),
            label: "loras/kohya.safetensors".into(),
            scale: 0.8,
            text_scale: None,
            rank: None,
            blocks: None,
        };
        let (updates, uses) =
            Updates::read(std::slice::from_ref(&file), &unet, Some(&text), None, 2).unwrap();
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
        // Cut to its first rank (A1111's `dyn=1`): that rank's outer product alone, alpha still
        // over the whole rank; a cut at or above the rank changes nothing.
        assert!(
            rank >= 2.0,
            "the fixture's rank {rank} leaves nothing to cut"
        );
        let first = (up.narrow(1, 0, 1).unwrap())
            .matmul(&down.narrow(0, 0, 1).unwrap())
            .unwrap();
        let expected_cut = (&base + (first * f64::from(0.8 * alpha / rank)).unwrap()).unwrap();
        for (cut, expected) in [(1, &expected_cut), (rank as usize, &expected)] {
            let cut_file = LoraFile {
                rank: Some(cut),
                blocks: None,
                ..file.clone()
            };
            let (updates, uses) =
                Updates::read(std::slice::from_ref(&cut_file), &unet, Some(&text), None, 2)
                    .unwrap();
            assert_eq!(uses[0].rank, Some(cut));
            let merged = updates
                .merged(networks().0, Network::Unet)
                .get_unchecked(name, DType::F32, &Device::Cpu)
                .unwrap();
            let diff = super::super::max_abs_diff(&merged, expected);
            assert!(diff < 1e-6, "cut to {cut}: {diff}");
        }
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

        // A text-encoder scale of its own (A1111's `te=`): the text weights at 0, the UNet's
        // still at 0.8.
        let unet_only = LoraFile {
            text_scale: Some(0.0),
            ..file.clone()
        };
        let (updates, uses) = Updates::read(
            std::slice::from_ref(&unet_only),
            &unet,
            Some(&text),
            None,
            2,
        )
        .unwrap();
        assert_eq!((uses[0].scale, uses[0].text_scale), (0.8, Some(0.0)));
        let text_weight = "encoder.layers.0.mlp.fc1.weight";
        let merged_text = updates
            .merged(networks().1, Network::Text)
            .get_unchecked(text_weight, DType::F32, &Device::Cpu)
            .unwrap();
        let base_text = text.load(text_weight, &Device::Cpu).unwrap();
        assert_eq!(super::super::max_abs_diff(&merged_text, &base_text), 0.0);
        let (both, _) =
            Updates::read(std::slice::from_ref(&file), &unet, Some(&text), None, 2).unwrap();
        let changed = both
            .merged(networks().1, Network::Text)
            .get_unchecked(text_weight, DType::F32, &Device::Cpu)
            .unwrap();
        assert!(
            super::super::max_abs_diff(&changed, &base_text) > 1e-4,
            "the LoRA adapts it"
        );
        let merged = updates
            .merged(networks().0, Network::Unet)
            .get_unchecked(name, DType::F32, &Device::Cpu)
            .unwrap();
        assert!(super::super::max_abs_diff(&merged, &expected) < 1e-6);
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
                text_scale: None,
                rank: None,
                blocks: None,
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
        let loha = write(
            "loha.safetensors",
            vec![
                ("lora_unet_conv_in.hada_w1_a", zeros(&[32, 4])),
                ("lora_unet_conv_in.hada_w1_b", zeros(&[3, 36])),
                ("lora_unet_conv_in.hada_w2_a", zeros(&[32, 4])),
                ("lora_unet_conv_in.hada_w2_b", zeros(&[4, 36])),
            ],
        );
        let lokr = write(
            "lokr.safetensors",
            vec![("lora_unet_conv_in.lokr_w1", zeros(&[4, 2]))],
        );
        let magnitudes = write(
            "magnitudes.safetensors",
            vec![
                ("lora_unet_conv_in.lora_down.weight", zeros(&[4, 4, 3, 3])),
                ("lora_unet_conv_in.lora_up.weight", zeros(&[32, 4, 1, 1])),
                ("lora_unet_conv_in.dora_scale", zeros(&[1, 32, 1, 1])),
            ],
        );
        let scalar = write(
            "scalar.safetensors",
            vec![
                ("lora_unet_conv_in.lokr_w1", zeros(&[])),
                ("lora_unet_conv_in.lokr_w2", zeros(&[32, 4, 3, 3])),
            ],
        );
        let ia3 = write(
            "ia3.safetensors",
            vec![
                ("lora_unet_conv_in.weight", zeros(&[1, 5, 1, 1])),
                ("lora_unet_conv_in.on_input", zeros(&[])),
            ],
        );
        let oft = write(
            "oft.safetensors",
            vec![
                ("lora_unet_conv_in.oft_blocks", zeros(&[3, 4, 4])),
                ("lora_unet_conv_in.alpha", zeros(&[])),
            ],
        );
        let full = write(
            "full.safetensors",
            vec![
                ("lora_unet_conv_in.diff", zeros(&[32, 4, 3, 3])),
                ("lora_unet_conv_in.diff_b", zeros(&[31])),
            ],
        );
        let glora = write(
            "glora.safetensors",
            vec![
                ("lora_unet_conv_in.a1.weight", zeros(&[4, 4, 1, 1])),
                ("lora_unet_conv_in.a2.weight", zeros(&[4, 4, 3, 3])),
                ("lora_unet_conv_in.b1.weight", zeros(&[32, 4, 1, 1])),
                ("lora_unet_conv_in.b2.weight", zeros(&[4, 4, 3, 3])),
            ],
        );
        // A CP LoCon's down must be 1×1 with its kernel in the mid.
        let cp = write(
            "cp.safetensors",
            vec![
                ("lora_unet_conv_in.lora_down.weight", zeros(&[4, 4, 3, 3])),
                ("lora_unet_conv_in.lora_mid.weight", zeros(&[4, 4, 3, 3])),
                ("lora_unet_conv_in.lora_up.weight", zeros(&[32, 4, 1, 1])),
            ],
        );
        for (file, words) in [
            (
                cp,
                "a down [4, 4, 3, 3], a mid [4, 4, 3, 3] and an up [32, 4, 1, 1]",
            ),
            (glora, "GLoRA a1 [4, 4, 1, 1], a2 [4, 4, 3, 3]"),
            (
                ia3,
                "IA³ factors [1, 5, 1, 1] do not match the 32 output rows",
            ),
            (oft, "OFT blocks [3, 4, 4] do not split the 32 output rows"),
            (full, "`conv_in.diff_b`: a change of 31 rows"),
            (unknown, "no_such_block"),
            (wrong, "does not fit `conv_in.weight`"),
            (half, "no complete down/up"),
            (loha, "shapes do not multiply"),
            (lokr, "no complete down/up"),
            (scalar, "shapes do not multiply"),
            (magnitudes, "fit neither the input axis (1, 4, 1…)"),
        ] {
            let message = Updates::read(std::slice::from_ref(&file), &unet, Some(&text), None, 2)
                .unwrap_err()
                .to_string();
            assert!(
                message.contains(&file.path.display().to_string()) && message.contains(words),
                "{message}"
            );
        }
        // SDXL's refiner has no first text encoder for a `lora_te_` entry to change.
        let text_lora = write(
            "text.safetensors",
            vec![
                (
                    "lora_te_text_model_final_layer_norm.lora_down.weight",
                    zeros(&[4, 32]),
                ),
                (
                    "lora_te_text_model_final_layer_norm.lora_up.weight",
                    zeros(&[32, 4]),
                ),
            ],
        );
        let message = Updates::read(std::slice::from_ref(&text_lora), &unet, None, None, 2)
            .unwrap_err()
            .to_string();
        assert!(message.contains("the first text encoder"), "{message}");
    }

    #[test]
    fn the_original_unets_block_names_map_to_diffusers() {
        // SDXL: two layers per block, a downsampler after each but the last.
        for (original, diffusers) in [
            (
                "input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                "down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q",
            ),
            (
                "input_blocks_8_1_proj_in",
                "down_blocks_2_attentions_1_proj_in",
            ),
            (
                "input_blocks_2_0_in_layers_2",
                "down_blocks_0_resnets_1_conv1",
            ),
            ("input_blocks_3_0_op", "down_blocks_0_downsamplers_0_conv"),
            (
                "input_blocks_7_0_skip_connection",
                "down_blocks_2_resnets_0_conv_shortcut",
            ),
            (
                "middle_block_1_transformer_blocks_9_ff_net_2",
                "mid_block_attentions_0_transformer_blocks_9_ff_net_2",
            ),
            (
                "middle_block_2_emb_layers_1",
                "mid_block_resnets_1_time_emb_proj",
            ),
            (
                "output_blocks_0_1_transformer_blocks_0_attn2_to_k",
                "up_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
            ),
            (
                "output_blocks_5_1_proj_out",
                "up_blocks_1_attentions_2_proj_out",
            ),
            ("output_blocks_2_2_conv", "up_blocks_0_upsamplers_0_conv"),
            (
                "output_blocks_8_0_out_layers_3",
                "up_blocks_2_resnets_2_conv2",
            ),
        ] {
            assert_eq!(
                original_names::unet_blocks(original, 2, '_').as_deref(),
                Some(diffusers),
                "{original}"
            );
        }
        // One layer per block (the tiny fixture): input block 5 is block 2's first layer.
        assert_eq!(
            original_names::unet_blocks("input_blocks_5_1_proj_in", 1, '_').as_deref(),
            Some("down_blocks_2_attentions_0_proj_in")
        );
        assert_eq!(
            original_names::unet_blocks("down_blocks_1_attentions_0_proj_in", 2, '_'),
            None
        );
        let (network, module, _) = entry(
            "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.alpha",
            2,
        )
        .unwrap();
        assert_eq!(
            (network, module.as_str()),
            (Network::Text2, "encoder_layers_0_self_attn_q_proj")
        );
        let (network, _, _) = entry(
            "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_A.weight",
            2,
        )
        .unwrap();
        assert_eq!(network, Network::Text2);
    }
}
