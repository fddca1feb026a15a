//! One network's weights by their diffusers names: a diffusers folder's safetensors files as
//! they are stored, or the part of a single-file checkpoint that holds the network, renamed (and
//! where the two layouts differ, reshaped) as each tensor is read. A checkpoint is a
//! safetensors file or a PyTorch pickle (`.ckpt`: a zip archive, or the stream PyTorch wrote
//! before 1.6), read without running any of its code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::pickle::TensorInfo;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;

use super::SdError;
use super::pickle::{PickleTensors, is_torch_save};

/// How a stored tensor becomes the diffusers one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reshape {
    /// As stored.
    Same,
    /// A 1×1 convolution's `(out, in, 1, 1)` read as a linear layer's `(out, in)`.
    Squeeze,
    /// Rows `index·n/of .. (index+1)·n/of` of a fused tensor (OpenCLIP's `in_proj` holds the
    /// query, key and value projections one above the other).
    Chunk {
        /// Which part.
        index: usize,
        /// Into how many equal parts the rows split.
        of: usize,
    },
    /// The transpose of a matrix (OpenCLIP multiplies by its `text_projection` from the right).
    Transpose,
}

impl Reshape {
    /// The diffusers shape of a stored tensor of shape `stored`.
    pub fn shape(self, stored: &[usize]) -> Vec<usize> {
        match self {
            Reshape::Same => stored.to_vec(),
            Reshape::Squeeze => stored.iter().take(2).copied().collect(),
            Reshape::Chunk { of, .. } => {
                let mut shape = stored.to_vec();
                if let Some(rows) = shape.first_mut() {
                    *rows /= of.max(1);
                }
                shape
            }
            Reshape::Transpose => stored.iter().rev().copied().collect(),
        }
    }

    fn apply(self, stored: Tensor) -> candle_core::Result<Tensor> {
        match self {
            Reshape::Same => Ok(stored),
            Reshape::Squeeze => {
                let shape = self.shape(stored.dims());
                stored.reshape(shape)
            }
            Reshape::Chunk { index, of } => {
                let rows = stored.dim(0)? / of.max(1);
                stored.narrow(0, index * rows, rows)
            }
            Reshape::Transpose => stored.t()?.contiguous(),
        }
    }
}

/// Where a diffusers-named tensor is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The stored tensor's name.
    pub key: String,
    /// How it becomes the diffusers tensor.
    pub reshape: Reshape,
}

/// The extensions of PyTorch pickles (`torch.save` zip archives).
const PICKLES: [&str; 3] = ["ckpt", "pt", "pth"];

/// Whether `path` names a PyTorch pickle (`.ckpt`, `.pt`, `.pth`) rather than safetensors.
pub fn is_pickle(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| PICKLES.contains(&e.to_ascii_lowercase().as_str()))
}

/// The stored tensor names of the weights file at `path`, read from its index alone (a
/// safetensors header, a pickle's `data.pkl`); empty for other or unreadable files.
pub fn stored_names(path: &Path) -> Vec<String> {
    if is_pickle(path) {
        Store::open(path)
            .map(|store| store.shapes().into_keys().collect())
            .unwrap_or_default()
    } else if path.extension().is_some_and(|e| e == "safetensors") {
        header(path)
            .map(|header| header.into_keys().collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    }
}

/// The tensors of one weights file, by stored name.
pub enum Store {
    /// safetensors files, memory-mapped (several: the shards of one network).
    Safetensors(MmapedSafetensors),
    /// A `torch.save` file (a zip archive, or a stream from before PyTorch 1.6): its
    /// `state_dict` (A1111's `.ckpt`), or the whole dict.
    Pickle(PickleTensors),
}

impl Store {
    /// Opens the weights file at `path`: a PyTorch pickle when [`is_pickle`] says so, else
    /// safetensors.
    pub fn open(path: &Path) -> Result<Self, SdError> {
        let failed = |source| SdError::Weights {
            path: path.to_path_buf(),
            source,
        };
        if !path.is_file() {
            return Err(SdError::MissingFile {
                path: path.to_path_buf(),
            });
        }
        if is_pickle(path) {
            if !is_torch_save(path) {
                return Err(SdError::Unsupported {
                    path: path.to_path_buf(),
                    message: "not a PyTorch pickle: neither a zip archive (PyTorch 1.6 and later) nor a legacy `torch.save` stream; convert it to safetensors".into(),
                });
            }
            // Lightning checkpoints keep the weights under `state_dict`; plain saves are the dict.
            let tensors = PickleTensors::open(path, Some("state_dict")).map_err(failed)?;
            return Ok(Store::Pickle(tensors));
        }
        // SAFETY: the file is only read while the pipeline loads (candle copies every tensor
        // out); Autonomy does not write model files while it loads them.
        Ok(Store::Safetensors(
            unsafe { MmapedSafetensors::new(path) }.map_err(failed)?,
        ))
    }

    /// Every stored tensor's name and shape.
    pub fn shapes(&self) -> HashMap<String, Vec<usize>> {
        match self {
            Store::Safetensors(tensors) => tensors
                .tensors()
                .into_iter()
                .map(|(name, view)| (name, view.shape().to_vec()))
                .collect(),
            Store::Pickle(tensors) => dims_of(tensors.tensor_infos()),
        }
    }

    /// The shape of the stored tensor `key`, if there is one.
    pub fn shape(&self, key: &str) -> Option<Vec<usize>> {
        match self {
            Store::Safetensors(tensors) => tensors.get(key).ok().map(|v| v.shape().to_vec()),
            Store::Pickle(tensors) => tensors
                .tensor_infos()
                .get(key)
                .map(|info| info.layout.dims().to_vec()),
        }
    }

    /// Reads the stored tensor `key` onto `device`, as stored (dtype included).
    pub fn load(&self, key: &str, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Store::Safetensors(tensors) => tensors.load(key, device),
            Store::Pickle(tensors) => found(tensors.get(key)?, key)?.to_device(device),
        }
    }
}

/// Each pickled tensor's name and dimensions.
fn dims_of(infos: &HashMap<String, TensorInfo>) -> HashMap<String, Vec<usize>> {
    infos
        .iter()
        .map(|(name, info)| (name.clone(), info.layout.dims().to_vec()))
        .collect()
}

/// The tensor `key` read from a pickle, or the error saying it is not there.
fn found(tensor: Option<Tensor>, key: &str) -> candle_core::Result<Tensor> {
    tensor.ok_or_else(|| candle_core::Error::CannotFindTensor {
        path: key.to_string(),
    })
}

/// A network's tensors, by diffusers name.
pub struct Weights {
    tensors: Arc<Store>,
    /// Diffusers name → stored tensor; `None` when the files are diffusers-named already.
    renamed: Option<HashMap<String, Stored>>,
    /// The (first) file, for errors.
    path: PathBuf,
}

impl Weights {
    /// Memory-maps a diffusers component's safetensors files (one, or the shards of one).
    pub fn files(files: &[PathBuf]) -> Result<Self, SdError> {
        let first: &Path = files.first().map_or(Path::new(""), |p| p.as_path());
        // SAFETY: the files are only read while the pipeline loads (candle copies every tensor
        // out); Autonomy does not write model files while it loads them.
        let tensors =
            unsafe { MmapedSafetensors::multi(files) }.map_err(|source| SdError::Weights {
                path: first.to_path_buf(),
                source,
            })?;
        Ok(Self {
            tensors: Arc::new(Store::Safetensors(tensors)),
            renamed: None,
            path: first.to_path_buf(),
        })
    }

    /// The tensors of one weights file (safetensors, or a PyTorch pickle's `state_dict` or whole
    /// dict) under their stored names.
    pub fn file(path: &Path) -> Result<Self, SdError> {
        Ok(Self {
            tensors: Arc::new(Store::open(path)?),
            renamed: None,
            path: path.to_path_buf(),
        })
    }

    /// The tensors of `tensors` (the file at `path`) that `names` maps diffusers names to.
    pub fn renamed(tensors: Arc<Store>, path: &Path, names: HashMap<String, Stored>) -> Self {
        Self {
            tensors,
            renamed: Some(names),
            path: path.to_path_buf(),
        }
    }

    /// The file the weights are read from (the first, when sharded).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Builds a network from these weights onto `device` in `dtype` with `make`; a missing or
    /// misshapen tensor is an error naming the file.
    pub fn build<T>(
        self,
        device: &Device,
        dtype: DType,
        make: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
    ) -> Result<T, SdError> {
        let path = self.path.clone();
        let vb = VarBuilder::from_backend(Box::new(self), dtype, device.clone());
        make(vb).map_err(|source| SdError::Weights { path, source })
    }

    /// Every tensor's diffusers name.
    pub fn names(&self) -> Vec<String> {
        match &self.renamed {
            Some(names) => names.keys().cloned().collect(),
            None => self.tensors.shapes().into_keys().collect(),
        }
    }

    fn stored<'a>(&'a self, name: &'a str) -> Option<(&'a str, Reshape)> {
        match &self.renamed {
            Some(names) => names.get(name).map(|s| (s.key.as_str(), s.reshape)),
            None => Some((name, Reshape::Same)),
        }
    }

    /// The diffusers shape of the tensor `name`, if there is one.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let (key, reshape) = self.stored(name)?;
        Some(reshape.shape(&self.tensors.shape(key)?))
    }

    /// Reads the tensor `name` onto `device`, as stored (dtype included).
    pub fn load(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        let (key, reshape) =
            self.stored(name)
                .ok_or_else(|| candle_core::Error::CannotFindTensor {
                    path: name.to_string(),
                })?;
        reshape.apply(self.tensors.load(key, device)?)
    }
}

/// A safetensors header larger than this is not a Stable Diffusion file's (SDXL's checkpoints
/// have ~0.3 MiB).
const MAX_HEADER: u64 = 64 << 20;

/// The header of the safetensors file at `path` — each tensor's `dtype`, `shape` and
/// `data_offsets` by name, and any `__metadata__` — read without reading a tensor.
pub fn header(path: &Path) -> Result<HashMap<String, serde_json::Value>, SdError> {
    use std::io::Read;
    let invalid = |message: String| SdError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|source| SdError::io(path, source))?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .map_err(|_| invalid("too short for a safetensors file".into()))?;
    let length = u64::from_le_bytes(length);
    if length > MAX_HEADER {
        return Err(invalid(format!(
            "a {length}-byte safetensors header is larger than a Stable Diffusion file's"
        )));
    }
    let mut header = vec![0u8; length as usize];
    file.read_exact(&mut header)
        .map_err(|_| invalid("its safetensors header is cut short".into()))?;
    serde_json::from_slice(&header)
        .map_err(|e| invalid(format!("its safetensors header is not JSON: {e}")))
}

/// `tensor`, or an error naming `name` when it is not of shape `expected`.
pub fn checked(tensor: Tensor, expected: Shape, name: &str) -> candle_core::Result<Tensor> {
    if tensor.shape() != &expected {
        return Err(candle_core::Error::UnexpectedShape {
            msg: format!("shape mismatch for {name}"),
            expected,
            got: tensor.shape().clone(),
        });
    }
    Ok(tensor)
}

impl SimpleBackend for Weights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        checked(self.load(name, dev)?.to_dtype(dtype)?, s, name)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.shape(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshapes_give_the_shapes_they_promise() {
        let conv = Tensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((3, 2, 1, 1))
            .unwrap();
        let squeezed = Reshape::Squeeze.apply(conv.clone()).unwrap();
        assert_eq!(squeezed.dims(), Reshape::Squeeze.shape(conv.dims()));
        assert_eq!(squeezed.dims(), &[3, 2]);
        let fused = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((6, 2))
            .unwrap();
        let value = Reshape::Chunk { index: 2, of: 3 };
        let part = value.apply(fused.clone()).unwrap();
        assert_eq!(part.dims(), value.shape(fused.dims()));
        assert_eq!(
            part.to_vec2::<f32>().unwrap(),
            vec![vec![8.0, 9.0], vec![10.0, 11.0]]
        );
        let wide = Tensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        let turned = Reshape::Transpose.apply(wide.clone()).unwrap();
        assert_eq!(turned.dims(), Reshape::Transpose.shape(wide.dims()));
        assert_eq!(
            turned.to_vec2::<f32>().unwrap(),
            vec![vec![0.0, 3.0], vec![1.0, 4.0], vec![2.0, 5.0]]
        );
    }
}
