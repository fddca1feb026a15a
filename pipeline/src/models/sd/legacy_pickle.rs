//! PyTorch pickles from before 1.6, which `torch.save` wrote as a stream rather than a zip
//! archive: a magic-number pickle, the protocol and system-information pickles, the object's
//! pickle (its tensors naming their storages by key), a pickle listing the storage keys, then
//! each storage as its element count (8 bytes, little-endian) and its bytes. The pickles are
//! interpreted by candle's pickle reader (nothing is imported or run); tensors are read from
//! the file when asked for.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{Device, Error, Result, Tensor};

/// The first pickle of every legacy `torch.save` stream: protocol 2, the magic number
/// 0x1950a86a20f9469cfc6c, stop.
const MAGIC: [u8; 15] = *b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e";

/// Whether the file at `path` starts as a legacy `torch.save` stream does.
pub fn is_legacy(path: &Path) -> bool {
    let mut start = [0u8; MAGIC.len()];
    File::open(path)
        .and_then(|mut file| file.read_exact(&mut start))
        .is_ok_and(|()| start == MAGIC)
}

/// The tensors of a legacy pickle, read lazily.
pub struct LegacyTensors {
    path: PathBuf,
    infos: HashMap<String, TensorInfo>,
    /// Where each storage's bytes start in the file, by key.
    storages: HashMap<String, u64>,
}

impl LegacyTensors {
    /// Reads the index of the legacy pickle at `path`: the tensors of its `key` entry (a
    /// Lightning checkpoint's `state_dict`) when it has one, else of the whole dict.
    pub fn open(path: &Path, key: Option<&str>) -> Result<Self> {
        let mut reader = BufReader::new(File::open(path)?);
        let mut start = [0u8; MAGIC.len()];
        reader.read_exact(&mut start)?;
        if start != MAGIC {
            return Err(Error::Msg("no legacy torch.save magic number".into()));
        }
        let mut next = || -> Result<Object> {
            let mut stack = Stack::empty();
            stack.read_loop(&mut reader)?;
            stack.finalize()
        };
        // The protocol version and the system's sizes and byte order.
        let (_, system) = (next()?, next()?);
        if !little_endian(&system) {
            return Err(Error::Msg("saved on a big-endian machine".into()));
        }
        let object = next()?;
        let keys = match next()? {
            Object::List(keys) => keys
                .into_iter()
                .map(|key| key.unicode().map_err(Error::from))
                .collect::<Result<Vec<String>>>()?,
            other => return Err(Error::Msg(format!("no list of storage keys: {other:?}"))),
        };
        let mut element_sizes = HashMap::new();
        storage_element_sizes(&object, &mut element_sizes)?;
        let mut storages = HashMap::new();
        for key in keys {
            let mut count = [0u8; 8];
            reader.read_exact(&mut count)?;
            let size = element_sizes
                .get(&key)
                .ok_or_else(|| Error::Msg(format!("storage {key} is not named by the object")))?;
            let bytes = u64::from_le_bytes(count)
                .checked_mul(*size)
                .ok_or_else(|| Error::Msg(format!("storage {key} is too large")))?;
            storages.insert(key, reader.stream_position()?);
            reader.seek(SeekFrom::Current(
                i64::try_from(bytes).map_err(|_| Error::Msg("a storage is too large".into()))?,
            ))?;
        }
        let end = reader.stream_position()?;
        if end > reader.get_ref().metadata()?.len() {
            return Err(Error::Msg("the file ends inside its storages".into()));
        }
        let state = match (object, key) {
            (Object::Dict(mut entries), Some(key)) => {
                let key = Object::Unicode(key.to_string());
                match entries.iter().position(|(k, _)| *k == key) {
                    Some(at) => entries.swap_remove(at).1,
                    None => Object::Dict(entries),
                }
            }
            (object, _) => object,
        };
        let mut infos = HashMap::new();
        if let Object::Dict(entries) = state {
            for (name, value) in entries {
                match value.into_tensor_info(name, Path::new("")) {
                    Ok(Some(mut info)) => {
                        info.path = info.path.trim_start_matches('/').to_string();
                        infos.insert(info.name.clone(), info);
                    }
                    // Not a tensor (an epoch count, a nested dict).
                    Ok(None) => {}
                    Err(error) => tracing::debug!(%error, "a pickle entry that is not a tensor"),
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            infos,
            storages,
        })
    }

    /// Every tensor's name, dtype and layout.
    pub fn tensor_infos(&self) -> &HashMap<String, TensorInfo> {
        &self.infos
    }

    /// Reads the tensor `name` (contiguous or transposed, as `torch.save` stores them).
    pub fn get(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(info) = self.infos.get(name) else {
            return Ok(None);
        };
        let start = self
            .storages
            .get(&info.path)
            .ok_or_else(|| Error::Msg(format!("{name}: storage {} is missing", info.path)))?;
        let layout = &info.layout;
        let fortran = layout.is_fortran_contiguous() && !layout.is_contiguous();
        if !layout.is_contiguous() && !fortran {
            return Err(Error::Msg(format!(
                "{name}: a strided tensor ({layout:?}) cannot be read"
            )));
        }
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(start + layout.start_offset() as u64))?;
        let dims = layout.dims().to_vec();
        let mut bytes = vec![0u8; layout.shape().elem_count() * info.dtype.size_in_bytes()];
        file.read_exact(&mut bytes)?;
        if !fortran {
            return Tensor::from_raw_buffer(&bytes, info.dtype, &dims, &Device::Cpu).map(Some);
        }
        // Stored column-major: read the reversed shape, then reverse the axes.
        let reversed: Vec<usize> = dims.iter().rev().copied().collect();
        let axes: Vec<usize> = (0..dims.len()).rev().collect();
        Tensor::from_raw_buffer(&bytes, info.dtype, &reversed, &Device::Cpu)?
            .permute(axes)
            .map(Some)
    }
}

/// Whether the system-information pickle says little-endian (it does on every machine
/// PyTorch ran on; a stream without the entry is taken to be).
fn little_endian(system: &Object) -> bool {
    match system {
        Object::Dict(entries) => entries
            .iter()
            .find(|(key, _)| *key == Object::Unicode("little_endian".into()))
            .is_none_or(|(_, value)| *value == Object::Bool(true)),
        _ => true,
    }
}

/// The element size of every storage `object` names (`('storage', FloatStorage, key,
/// location, count, view)`), by key.
fn storage_element_sizes(object: &Object, sizes: &mut HashMap<String, u64>) -> Result<()> {
    match object {
        Object::PersistentLoad(id) => {
            if let Object::Tuple(parts) = id.as_ref()
                && let [
                    _,
                    Object::Class { class_name, .. },
                    Object::Unicode(key),
                    ..,
                ] = parts.as_slice()
            {
                let size = match class_name.as_str() {
                    "DoubleStorage" | "LongStorage" => 8,
                    "FloatStorage" | "IntStorage" => 4,
                    "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
                    "ByteStorage" | "CharStorage" | "BoolStorage" => 1,
                    other => {
                        return Err(Error::Msg(format!("unsupported storage type {other}")));
                    }
                };
                sizes.insert(key.clone(), size);
            }
            Ok(())
        }
        Object::Tuple(items) | Object::List(items) => items
            .iter()
            .try_for_each(|item| storage_element_sizes(item, sizes)),
        Object::Dict(entries) => entries.iter().try_for_each(|(key, value)| {
            storage_element_sizes(key, sizes)?;
            storage_element_sizes(value, sizes)
        }),
        Object::Reduce { callable, args } | Object::Build { callable, args } => {
            storage_element_sizes(callable, sizes)?;
            storage_element_sizes(args, sizes)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sd/checkpoints")
            .join(name)
    }

    #[test]
    fn views_transposes_and_every_dtype_read_as_torch_saved_them() {
        let path = fixture("layouts.legacy.pt");
        assert!(is_legacy(&path));
        assert!(!is_legacy(&fixture("tiny-sd15.ckpt")), "a zip archive");
        let tensors = LegacyTensors::open(&path, Some("state_dict")).unwrap();
        let reference =
            candle_core::safetensors::load(fixture("layouts.reference.safetensors"), &Device::Cpu)
                .unwrap();
        let mut names: Vec<&String> = tensors.tensor_infos().keys().collect();
        names.sort();
        let mut expected: Vec<&String> = reference.keys().collect();
        expected.sort();
        assert_eq!(names, expected);
        for (name, wanted) in &reference {
            let read = tensors.get(name).unwrap().unwrap();
            assert_eq!(
                (read.dims(), read.dtype()),
                (wanted.dims(), wanted.dtype()),
                "{name}"
            );
            let same = read
                .flatten_all()
                .unwrap()
                .eq(&wanted.flatten_all().unwrap())
                .unwrap()
                .to_dtype(candle_core::DType::F32)
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(same, 1.0, "{name}: {read} vs {wanted}");
        }
        assert!(tensors.get("epoch").unwrap().is_none());
    }

    #[test]
    fn a_truncated_stream_is_refused() {
        let bytes = std::fs::read(fixture("layouts.legacy.pt")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for cut in [20, bytes.len() / 2, bytes.len() - 3] {
            let path = dir.path().join("cut.pt");
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(LegacyTensors::open(&path, None).is_err(), "cut at {cut}");
        }
    }
}
