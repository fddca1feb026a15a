//! A1111's hypernetworks: `<hypernet:name:0.8>` in a prompt applies `name.pt` from a
//! `hypernetworks` folder. A hypernetwork holds, for some attention widths (an SD 1.x file:
//! 768, 320, 640, 1280), a pair of small networks that A1111 runs the UNet attention's
//! context through before the key and value projections: `k = to_k(hₖ(c))`, `v = to_v(hᵥ(c))`,
//! where `c` is the text context in cross-attention and the hidden states themselves in
//! self-attention, each chosen by its width. Each network is `x + m · f(x)`, `m` the tag's
//! multiplier and `f` linear layers (each but the last followed by the file's activation,
//! and the last too when `activate_output`), each optionally followed by a layer norm.
//! Several hypernetworks apply in turn, each to what the one before gave. They are not merged
//! into weights (they are not linear), so they run at every step, on the pipeline's device, in
//! f32 whatever the UNet's dtype (they are small; their layer norms keep f32's precision).
//!
//! Files are `torch.save` pickles, read without running them (the `pickle` module): a dict with
//! each width's pair of state dicts (`linear.0.weight`, …, or the first format's
//! `linear1`/`linear2`) and the settings `layer_structure`, `activation_func`,
//! `is_layer_norm` and `activate_output` (A1111's defaults where absent: no activation, and
//! the output activated).
//!
//! ```
//! use autonomy_pipeline::models::sd::hypernetwork::{HypernetTag, hypernet_tags};
//! assert_eq!(
//!     hypernet_tags("a knight <hypernet:pixel-style:0.8>").unwrap(),
//!     [HypernetTag {
//!         text: "<hypernet:pixel-style:0.8>".into(),
//!         name: "pixel-style".into(),
//!         multiplier: 0.8,
//!     }]
//! );
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use candle_core::pickle::Object;
use candle_core::{DType, Device, Tensor};
use candle_nn::{LayerNorm, Module as _, VarBuilder};
use regex::Regex;
use sha2::{Digest, Sha256};

use super::SdError;
use super::kernels::Linear;
use super::pickle::Pickle;
use crate::generator::HypernetworkUse;

/// The largest multiplier a hypernetwork takes, either way (as a LoRA's scale).
pub const MOST_MULTIPLIER: f64 = 4.0;

/// A1111's extra-network tags of hypernetworks.
static TAG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"<hypernet:([^>]*)>").unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
});

/// One hypernetwork a prompt applies.
#[derive(Clone, Debug, PartialEq)]
pub struct HypernetTag {
    /// The tag as written.
    pub text: String,
    /// The file's name without its extension.
    pub name: String,
    /// How strongly to apply it (1 when the tag gives none).
    pub multiplier: f64,
}

/// The hypernetwork tags in `text`, in order, or what is wrong with the first bad one: no name,
/// or a multiplier that is no number or lies beyond ±[`MOST_MULTIPLIER`].
pub fn hypernet_tags(text: &str) -> Result<Vec<HypernetTag>, String> {
    TAG.captures_iter(text)
        .map(|found| {
            let tag = &found[0];
            let mut items = found[1].split(':').map(str::trim);
            let name = items.next().unwrap_or_default();
            if name.is_empty() {
                return Err(format!(
                    "`{tag}` names no hypernetwork (write `<hypernet:name:0.8>`)"
                ));
            }
            let multiplier = match items.next() {
                None => 1.0,
                Some(text) => text
                    .parse::<f64>()
                    .ok()
                    .filter(|m| m.is_finite() && m.abs() <= MOST_MULTIPLIER)
                    .ok_or_else(|| {
                        format!(
                            "`{tag}`: the multiplier must be a number within ±{MOST_MULTIPLIER}"
                        )
                    })?,
            };
            if let Some(extra) = items.next() {
                return Err(format!(
                    "`{tag}`: a hypernetwork takes one multiplier, not also `{extra}`"
                ));
            }
            Ok(HypernetTag {
                text: tag.to_string(),
                name: name.to_string(),
                multiplier,
            })
        })
        .collect()
}

/// `text` with its hypernetwork tags taken out and the rest as written.
pub fn without_hypernet_tags(text: &str) -> String {
    TAG.replace_all(text, "").into_owned()
}

/// Whether `loaded` (each hypernetwork a model runs: its file's name without the extension,
/// and its multiplier) has each hypernetwork `prompt` applies, at its multiplier. Otherwise
/// what is missing, so that a tag no caller resolved is never passed over in silence.
pub fn check_loaded(prompt: &str, loaded: &[(String, f64)]) -> Result<(), String> {
    for tag in hypernet_tags(prompt)? {
        if !loaded
            .iter()
            .any(|(name, multiplier)| *name == tag.name && *multiplier == tag.multiplier)
        {
            return Err(format!(
                "`{}` applies a hypernetwork this model was not loaded with at that multiplier (a \
                 recipe or `generate` finds it among the model folders; a library caller names \
                 it in `Additions::hypernetworks`)",
                tag.text
            ));
        }
    }
    Ok(())
}

/// A hypernetwork file to apply, as a recipe's prompt names it.
#[derive(Clone, Debug, PartialEq)]
pub struct HypernetworkFile {
    /// The `.pt` file.
    pub path: PathBuf,
    /// How the provenance manifest names it.
    pub label: String,
    /// How strongly to apply it.
    pub multiplier: f64,
}

/// The activations A1111 offers hypernetworks (its own names, `swish` being PyTorch's
/// Hardswish, and PyTorch's activation classes in lower case), with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Activation {
    Relu,
    LeakyRelu,
    Elu,
    Hardswish,
    Tanh,
    Sigmoid,
    Silu,
    Mish,
    Gelu,
    Softsign,
    Softplus,
    Selu,
    Relu6,
    Hardsigmoid,
    Hardtanh,
    Tanhshrink,
    LogSigmoid,
}

impl Activation {
    /// The activation A1111 builds for `name`, `None` for `linear` (none).
    fn named(name: &str) -> Result<Option<Self>, String> {
        Ok(Some(match name {
            "linear" => return Ok(None),
            "relu" => Self::Relu,
            "leakyrelu" => Self::LeakyRelu,
            // CELU's default alpha of 1 makes it ELU.
            "elu" | "celu" => Self::Elu,
            "swish" | "hardswish" => Self::Hardswish,
            "tanh" => Self::Tanh,
            "sigmoid" => Self::Sigmoid,
            "silu" => Self::Silu,
            "mish" => Self::Mish,
            "gelu" => Self::Gelu,
            "softsign" => Self::Softsign,
            "softplus" => Self::Softplus,
            "selu" => Self::Selu,
            "relu6" => Self::Relu6,
            "hardsigmoid" => Self::Hardsigmoid,
            "hardtanh" => Self::Hardtanh,
            "tanhshrink" => Self::Tanhshrink,
            "logsigmoid" => Self::LogSigmoid,
            other => return Err(format!("the activation `{other}` is not one Autonomy runs")),
        }))
    }

    fn forward(self, x: &Tensor) -> candle_core::Result<Tensor> {
        // PyTorch's softplus: log(1 + eˣ), x itself above 20.
        let softplus = |x: &Tensor| -> candle_core::Result<Tensor> {
            let smooth = (x.minimum(20.0)?.exp()? + 1.0)?.log()?;
            x.ge(20.0)?.where_cond(x, &smooth)
        };
        let sigmoid = |x: &Tensor| candle_nn::ops::sigmoid(x);
        match self {
            Self::Relu => x.relu(),
            Self::LeakyRelu => candle_nn::ops::leaky_relu(x, 0.01),
            Self::Elu => x.elu(1.0),
            Self::Hardswish => x * ((x + 3.0)?.clamp(0.0, 6.0)? / 6.0)?,
            Self::Tanh => x.tanh(),
            Self::Sigmoid => sigmoid(x),
            Self::Silu => x.silu(),
            Self::Mish => x * softplus(x)?.tanh()?,
            Self::Gelu => x.gelu_erf(),
            Self::Softsign => x / (x.abs()? + 1.0)?,
            Self::Softplus => softplus(x),
            Self::Selu => {
                const ALPHA: f64 = 1.673_263_242_354_377_3;
                const SCALE: f64 = 1.050_700_987_355_480_5;
                x.elu(ALPHA)? * SCALE
            }
            Self::Relu6 => x.clamp(0.0, 6.0),
            Self::Hardsigmoid => ((x / 6.0)? + 0.5)?.clamp(0.0, 1.0),
            Self::Hardtanh => x.clamp(-1.0, 1.0),
            Self::Tanhshrink => x - x.tanh()?,
            Self::LogSigmoid => softplus(&x.neg()?)?.neg(),
        }
    }
}

/// One step of a hypernetwork module.
enum Step {
    Linear(Linear),
    Activation(Activation),
    Norm(LayerNorm),
}

/// A1111's `HypernetworkModule`: `x + multiplier · f(x)`.
struct Module {
    steps: Vec<Step>,
    multiplier: f64,
}

impl Module {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        for step in &self.steps {
            y = match step {
                Step::Linear(linear) => linear.forward(&y)?,
                Step::Activation(activation) => activation.forward(&y)?,
                Step::Norm(norm) => norm.forward(&y)?,
            };
        }
        x + (y * self.multiplier)?
    }
}

/// The modules an attention of one width runs its context through: for the keys and for the
/// values.
struct Pair {
    keys: Module,
    values: Module,
}

/// A loaded hypernetwork: its modules by width, and what the manifest records of it.
pub struct Hypernetwork {
    layers: HashMap<usize, Arc<Pair>>,
    /// The file, its hash and the multiplier.
    pub used: HypernetworkUse,
}

impl Hypernetwork {
    /// Reads `file` (one read: the hash and the modules come from the same bytes) onto
    /// `device`, in f32 whatever the UNet's dtype; a file that is not a hypernetwork Autonomy
    /// runs is an error naming it and why.
    pub fn read(file: &HypernetworkFile, device: &Device) -> Result<Self, SdError> {
        let bytes = super::read_once(&file.path)?;
        let invalid = |message: String| SdError::Invalid {
            path: file.path.clone(),
            message,
        };
        let pickle = Pickle::from_bytes(Arc::clone(&bytes))
            .map_err(|e| invalid(format!("not a readable PyTorch pickle: {e}")))?;
        let layers = modules(&pickle, file.multiplier, device).map_err(invalid)?;
        Ok(Self {
            layers,
            used: HypernetworkUse {
                file: file.label.clone(),
                sha256: hex::encode(Sha256::digest(&bytes)),
                multiplier: file.multiplier,
            },
        })
    }

    /// The widths it has modules for, in order.
    pub fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.layers.keys().copied().collect();
        widths.sort_unstable();
        widths
    }
}

/// The attention widths the hypernetwork file at `path` has modules for, sorted, from its
/// index alone (no tensor is read): what tells which models it fits
/// ([`super::config::UNetSpec::attention_context_widths`]).
pub fn widths(path: &std::path::Path) -> Result<Vec<usize>, SdError> {
    let invalid = |message: String| SdError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let pickle =
        Pickle::open(path).map_err(|e| invalid(format!("not a readable PyTorch pickle: {e}")))?;
    let Object::Dict(entries) = pickle.object() else {
        return Err(invalid("holds no dict: not a hypernetwork".into()));
    };
    let mut widths: Vec<usize> = entries
        .iter()
        .filter_map(|(key, _)| match key {
            Object::Int(width) => usize::try_from(*width).ok(),
            _ => None,
        })
        .collect();
    if widths.is_empty() {
        return Err(invalid(
            "has no layers for any width: not a hypernetwork".into(),
        ));
    }
    widths.sort_unstable();
    Ok(widths)
}

/// What an attention does to its context before the key and value projections: the modules
/// of its width of each hypernetwork, in turn. Empty (the default) does nothing.
#[derive(Clone, Default)]
pub struct ContextHook {
    pairs: Vec<Arc<Pair>>,
}

impl ContextHook {
    /// The hook of `hypernetworks` for an attention whose context is `width` wide.
    pub fn of(hypernetworks: &[Hypernetwork], width: usize) -> Self {
        Self {
            pairs: hypernetworks
                .iter()
                .filter_map(|h| h.layers.get(&width).cloned())
                .collect(),
        }
    }

    /// What the key and the value projections take from `context` (itself when the hook is
    /// empty): the modules run in f32, the results come back in `context`'s dtype.
    pub fn apply(&self, context: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        if self.pairs.is_empty() {
            return Ok((context.clone(), context.clone()));
        }
        let wide = context.to_dtype(DType::F32)?;
        let (mut keys, mut values) = (wide.clone(), wide);
        for pair in &self.pairs {
            keys = pair.keys.forward(&keys)?;
            values = pair.values.forward(&values)?;
        }
        Ok((
            keys.to_dtype(context.dtype())?,
            values.to_dtype(context.dtype())?,
        ))
    }
}

/// The entry `key` of a pickled dict's entries.
fn entry<'a>(entries: &'a [(Object, Object)], key: &str) -> Option<&'a Object> {
    entries
        .iter()
        .find(|(k, _)| matches!(k, Object::Unicode(name) if name == key))
        .map(|(_, value)| value)
}

/// The modules of every width in the hypernetwork `pickle` holds.
fn modules(
    pickle: &Pickle,
    multiplier: f64,
    device: &Device,
) -> Result<HashMap<usize, Arc<Pair>>, String> {
    let Object::Dict(entries) = pickle.object() else {
        return Err("holds no dict: not a hypernetwork".into());
    };
    let activation = match entry(entries, "activation_func") {
        None | Some(Object::None) => None,
        Some(Object::Unicode(name)) => Activation::named(name)?,
        Some(other) => return Err(format!("`activation_func` is no name: {other:?}")),
    };
    let activate_output = match entry(entries, "activate_output") {
        None => true,
        Some(Object::Bool(on)) => *on,
        Some(other) => return Err(format!("`activate_output` is no bool: {other:?}")),
    };
    // The hypernetwork-monkeypatch extension's variants.
    for variant in ["skip_connection", "upsample_linear"] {
        if matches!(entry(entries, variant), Some(Object::Bool(true))) {
            return Err(format!(
                "`{variant}` is set: a variant of the hypernetwork-monkeypatch extension that A1111 does not run"
            ));
        }
    }
    let mut layers = HashMap::new();
    for (key, value) in entries {
        let Object::Int(width) = key else { continue };
        let width = usize::try_from(*width).map_err(|_| format!("a width of {width}"))?;
        let pair = match value {
            Object::Tuple(pair) | Object::List(pair) if pair.len() == 2 => pair,
            _ => return Err(format!("width {width}: not a pair of state dicts")),
        };
        let module = |which: usize, label: &str| -> Result<Module, String> {
            module(
                pickle,
                &pair[which],
                width,
                (activation, activate_output),
                multiplier,
                device,
            )
            .map_err(|e| format!("width {width}, the {label}' module: {e}"))
        };
        let keys = module(0, "keys")?;
        let values = module(1, "values")?;
        layers.insert(width, Arc::new(Pair { keys, values }));
    }
    if layers.is_empty() {
        return Err("has no layers for any width: not a hypernetwork".into());
    }
    Ok(layers)
}

/// One module from its state dict `state`: its linear layers and layer norms in the order of
/// their index in A1111's `Sequential` (`linear.0`, `linear.2`, …; the first format's
/// `linear1` and `linear2` are `linear.0` and `linear.1`), the activation after each linear
/// layer but the last (and the last too when `activate_output`).
fn module(
    pickle: &Pickle,
    state: &Object,
    width: usize,
    (activation, activate_output): (Option<Activation>, bool),
    multiplier: f64,
    device: &Device,
) -> Result<Module, String> {
    let Object::Dict(entries) = state else {
        return Err("not a state dict".into());
    };
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut indices: Vec<usize> = Vec::new();
    for (key, value) in entries {
        let Object::Unicode(key) = key else {
            return Err(format!("a key that is no name: {key:?}"));
        };
        // The state dict's version record, not a layer.
        if key == "_metadata" {
            continue;
        }
        let name = match key.as_str() {
            "linear1.weight" => "linear.0.weight".to_string(),
            "linear1.bias" => "linear.0.bias".to_string(),
            "linear2.weight" => "linear.1.weight".to_string(),
            "linear2.bias" => "linear.1.bias".to_string(),
            other => other.to_string(),
        };
        let index = name
            .strip_prefix("linear.")
            .and_then(|rest| rest.split_once('.'))
            .filter(|(_, part)| ["weight", "bias"].contains(part))
            .and_then(|(index, _)| index.parse::<usize>().ok())
            .ok_or_else(|| format!("`{key}` is not a hypernetwork layer's weight or bias"))?;
        let tensor = pickle
            .tensor(key, value)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("`{key}` is not a tensor"))?;
        if !indices.contains(&index) {
            indices.push(index);
        }
        tensors.insert(name, tensor);
    }
    indices.sort_unstable();
    let weight_dims = |index: usize| -> Result<Vec<usize>, String> {
        tensors
            .get(&format!("linear.{index}.weight"))
            .map(|t| t.dims().to_vec())
            .ok_or_else(|| format!("`linear.{index}` has no weight"))
    };
    let linears = indices
        .iter()
        .map(|&i| weight_dims(i).map(|dims| dims.len() == 2))
        .collect::<Result<Vec<bool>, String>>()?
        .into_iter()
        .filter(|&linear| linear)
        .count();
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, device);
    let mut steps = Vec::new();
    let (mut features, mut seen) = (width, 0);
    for index in indices {
        let layer = vb.pp(format!("linear.{index}"));
        let dims = weight_dims(index)?;
        match dims.as_slice() {
            &[out, inputs] => {
                if inputs != features {
                    return Err(format!(
                        "`linear.{index}` takes {inputs} features where {features} come"
                    ));
                }
                let biased = tensors.contains_key(&format!("linear.{index}.bias"));
                steps.push(Step::Linear(
                    Linear::new(layer, inputs, out, biased).map_err(|e| e.to_string())?,
                ));
                seen += 1;
                features = out;
                if let Some(activation) = activation.filter(|_| seen < linears || activate_output) {
                    steps.push(Step::Activation(activation));
                }
            }
            &[norm] if norm == features && seen > 0 => steps.push(Step::Norm(
                candle_nn::layer_norm(norm, 1e-5, layer).map_err(|e| e.to_string())?,
            )),
            other => {
                return Err(format!(
                    "`linear.{index}.weight` {other:?} is neither a linear layer's nor a layer norm's of {features} features"
                ));
            }
        }
    }
    if seen == 0 || features != width {
        return Err(format!(
            "its layers end with {features} features, not the width {width}"
        ));
    }
    Ok(Module { steps, multiplier })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_activation_is_pytorchs() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sd/hypernetworks.reference.safetensors");
        let reference = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
        let x = &reference["activation_input"];
        let mut checked = 0;
        for (name, wanted) in &reference {
            let Some(activation) = name.strip_prefix("activation_") else {
                continue;
            };
            if activation == "input" {
                continue;
            }
            let ours = Activation::named(activation)
                .unwrap()
                .unwrap()
                .forward(x)
                .unwrap();
            let worst = (ours - wanted)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(worst < 1e-5, "{activation}: {worst}");
            checked += 1;
        }
        assert_eq!(checked, 19);
        assert_eq!(Activation::named("linear"), Ok(None));
        assert!(
            Activation::named("prelu")
                .unwrap_err()
                .contains("`prelu` is not one Autonomy runs")
        );
    }

    #[test]
    fn tags_read_as_a1111_reads_them_and_bad_ones_are_named() {
        let tags = hypernet_tags("<hypernet:a> x <hypernet: b :-0.5> <lora:c:1>").unwrap();
        assert_eq!(
            tags.iter()
                .map(|t| (t.name.as_str(), t.multiplier))
                .collect::<Vec<_>>(),
            [("a", 1.0), ("b", -0.5)]
        );
        assert_eq!(
            without_hypernet_tags("<hypernet:a> x <lora:c:1>"),
            " x <lora:c:1>"
        );
        for (prompt, says) in [
            ("<hypernet:>", "names no hypernetwork"),
            ("<hypernet:a:much>", "must be a number within ±4"),
            ("<hypernet:a:5>", "must be a number within ±4"),
            ("<hypernet:a:1:2>", "takes one multiplier, not also `2`"),
        ] {
            let error = hypernet_tags(prompt).unwrap_err();
            assert!(error.contains(prompt) && error.contains(says), "{error}");
        }
        let loaded = [("a".to_string(), 0.5)];
        assert!(check_loaded("x <hypernet:a:0.5>", &loaded).is_ok());
        for prompt in ["x <hypernet:a>", "x <hypernet:b:0.5>"] {
            assert!(
                check_loaded(prompt, &loaded)
                    .unwrap_err()
                    .contains("not loaded with")
            );
        }
    }

    proptest::proptest! {
        /// Any tag written with a name and a multiplier within ±4 reads back as written, and
        /// taking the tags out leaves the rest of the text.
        #[test]
        fn written_tags_read_back(
            name in "[A-Za-z0-9_][A-Za-z0-9_ .-]{0,15}[A-Za-z0-9_]",
            multiplier in -4.0f64..=4.0,
            before in "[a-z ,]{0,12}",
            after in "[a-z ,]{0,12}",
        ) {
            let tag = format!("<hypernet:{name}:{multiplier}>");
            let text = format!("{before}{tag}{after}");
            let read = hypernet_tags(&text).unwrap();
            proptest::prop_assert_eq!(read.len(), 1);
            proptest::prop_assert_eq!(&read[0].text, &tag);
            proptest::prop_assert_eq!(&read[0].name, &name);
            proptest::prop_assert_eq!(read[0].multiplier, multiplier);
            proptest::prop_assert_eq!(without_hypernet_tags(&text), format!("{before}{after}"));
        }
    }

    #[test]
    fn a_hook_runs_in_f32_and_answers_in_the_contexts_dtype() {
        let file = HypernetworkFile {
            path: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/sd/tiny-sd15/hypernetworks/pixel-style.pt"),
            label: "pixel-style.pt".into(),
            multiplier: 0.8,
        };
        let network = Hypernetwork::read(&file, &Device::Cpu).unwrap();
        let context = Tensor::randn(0f32, 1.0, (2, 5, 32), &Device::Cpu).unwrap();
        let hook = ContextHook::of(std::slice::from_ref(&network), 32);
        let (keys, _) = hook.apply(&context).unwrap();
        let (half, values) = hook.apply(&context.to_dtype(DType::F16).unwrap()).unwrap();
        assert_eq!((half.dtype(), values.dtype()), (DType::F16, DType::F16));
        let worst = (half.to_dtype(DType::F32).unwrap() - &keys)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(worst < 1e-2, "{worst}");
        // No modules of a width: the context as it is.
        let (same, _) = ContextHook::of(&[network], 48).apply(&context).unwrap();
        assert_eq!(
            same.to_vec3::<f32>().unwrap(),
            context.to_vec3::<f32>().unwrap()
        );
    }

    #[test]
    fn widths_come_from_the_index() {
        let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd/tiny-sd15");
        assert_eq!(
            widths(&folder.join("hypernetworks/pixel-style.pt")).unwrap(),
            [32, 64]
        );
        assert_eq!(
            widths(&folder.join("hypernetworks/legacy.pt")).unwrap(),
            [32]
        );
        let lora = widths(&folder.join("loras/kohya-pickled.pt")).unwrap_err();
        assert!(lora.to_string().contains("not a hypernetwork"), "{lora}");
    }
}
