//! PyTorch pickles (`.ckpt`, `.pt`, `.pth`), read without running them. `torch.save` writes
//! one of two layouts:
//! - from PyTorch 1.6 on, a zip archive: `<archive>/data.pkl` (the object's pickle, its tensors
//!   naming their storages by key), `<archive>/byteorder` and each storage as the entry
//!   `<archive>/data/<key>`, stored uncompressed;
//! - before 1.6, a stream: a magic-number pickle, the protocol and system-information pickles,
//!   the object's pickle, a pickle listing the storage keys, then each storage as its element
//!   count (8 bytes, little-endian) and its bytes.
//!
//! The pickles are interpreted by candle's pickle machine, which builds objects from the
//! opcodes and never imports or calls anything. Only where each storage's bytes lie in the
//! file is kept; tensors are read from there when asked for.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{Device, Error, Result, Tensor};

/// The first pickle of every legacy `torch.save` stream: protocol 2, the magic number
/// 0x1950a86a20f9469cfc6c, stop.
const MAGIC: [u8; 15] = *b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e";

/// Whether the file at `path` starts as a `torch.save` file does: a zip archive or a legacy
/// stream's magic number.
pub fn is_torch_save(path: &Path) -> bool {
    let mut start = [0u8; MAGIC.len()];
    File::open(path)
        .and_then(|mut file| file.read_exact(&mut start))
        .is_ok_and(|()| starts_as_torch_save(&start))
}

/// Whether `bytes` start as a `torch.save` file does.
pub fn starts_as_torch_save(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(&MAGIC)
}

/// Where one storage's bytes lie in the file.
#[derive(Clone, Copy, Debug)]
struct Storage {
    start: u64,
    bytes: u64,
}

/// Where a pickle's bytes are: a file, read as tensors are asked for, or memory.
enum Source {
    File(PathBuf),
    Memory(Arc<[u8]>),
}

/// A `torch.save` file read without running it: its object, and where each storage's bytes lie.
pub struct Pickle {
    source: Source,
    object: Object,
    storages: HashMap<String, Storage>,
}

impl Pickle {
    /// Reads the object of the pickle at `path` and locates its storages; no tensor is read.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path)?;
        let length = file.metadata()?.len();
        let (object, storages) = read_index(BufReader::new(file), length)?;
        Ok(Self {
            source: Source::File(path.to_path_buf()),
            object,
            storages,
        })
    }

    /// Reads the pickle held in `bytes` (a file read whole, so that its hash and its tensors
    /// come from the same read), as [`Pickle::open`] reads a file.
    pub fn from_bytes(bytes: Arc<[u8]>) -> Result<Self> {
        let (object, storages) = read_index(std::io::Cursor::new(&bytes[..]), bytes.len() as u64)?;
        Ok(Self {
            source: Source::Memory(bytes),
            object,
            storages,
        })
    }

    /// The object `torch.save` was given, its tensors left as candle's pickle machine builds
    /// them (read them with [`Pickle::tensor`]).
    pub fn object(&self) -> &Object {
        &self.object
    }

    /// The tensor `value` (a part of [`Pickle::object`]) holds, `name` naming it in errors;
    /// `None` when `value` is not a tensor.
    pub fn tensor(&self, name: &str, value: &Object) -> Result<Option<Tensor>> {
        match value
            .clone()
            .into_tensor_info(Object::Unicode(name.to_string()), Path::new(""))
        {
            Ok(Some(info)) => self.read(name, &info).map(Some),
            Ok(None) => Ok(None),
            Err(error) => Err(Error::Msg(format!("{name}: {error}"))),
        }
    }

    /// The tensors of the object's `key` entry (a Lightning checkpoint's `state_dict`) when it
    /// has one, else of the whole dict.
    pub fn tensors(mut self, key: Option<&str>) -> PickleTensors {
        let state = match (std::mem::replace(&mut self.object, Object::None), key) {
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
                    Ok(Some(info)) => {
                        infos.insert(info.name.clone(), info);
                    }
                    // Not a tensor (an epoch count, a nested dict).
                    Ok(None) => {}
                    Err(error) => tracing::debug!(%error, "a pickle entry that is not a tensor"),
                }
            }
        }
        PickleTensors {
            pickle: self,
            infos,
        }
    }

    /// Reads the tensor `info` describes (contiguous or transposed, as `torch.save` stores
    /// them), `name` naming it in errors.
    fn read(&self, name: &str, info: &TensorInfo) -> Result<Tensor> {
        let key = info.path.trim_start_matches('/');
        let storage = self
            .storages
            .get(key)
            .ok_or_else(|| Error::Msg(format!("{name}: storage {key} is missing")))?;
        let layout = &info.layout;
        let fortran = layout.is_fortran_contiguous() && !layout.is_contiguous();
        if !layout.is_contiguous() && !fortran {
            return Err(Error::Msg(format!(
                "{name}: a strided tensor ({layout:?}) cannot be read"
            )));
        }
        // The layout's start offset is in bytes (candle scales torch's element offset).
        let offset = layout.start_offset() as u64;
        let length = (layout.shape().elem_count() * info.dtype.size_in_bytes()) as u64;
        if offset.saturating_add(length) > storage.bytes {
            return Err(Error::Msg(format!(
                "{name}: reaches past the end of its storage {key} ({} bytes)",
                storage.bytes
            )));
        }
        let start = storage.start + offset;
        let bytes = match &self.source {
            Source::File(path) => {
                let mut file = File::open(path)?;
                file.seek(SeekFrom::Start(start))?;
                let mut bytes = vec![0u8; length as usize];
                file.read_exact(&mut bytes)?;
                std::borrow::Cow::Owned(bytes)
            }
            Source::Memory(memory) => {
                let range = usize::try_from(start)
                    .ok()
                    .zip(usize::try_from(start + length).ok())
                    .and_then(|(from, to)| memory.get(from..to))
                    .ok_or_else(|| Error::Msg(format!("{name}: lies past the end of the file")))?;
                std::borrow::Cow::Borrowed(range)
            }
        };
        let dims = layout.dims().to_vec();
        if !fortran {
            return Tensor::from_raw_buffer(&bytes, info.dtype, &dims, &Device::Cpu);
        }
        // Stored column-major: read the reversed shape, then reverse the axes.
        let reversed: Vec<usize> = dims.iter().rev().copied().collect();
        let axes: Vec<usize> = (0..dims.len()).rev().collect();
        Tensor::from_raw_buffer(&bytes, info.dtype, &reversed, &Device::Cpu)?.permute(axes)
    }
}

/// The tensors of a PyTorch pickle's dict, read lazily.
pub struct PickleTensors {
    pickle: Pickle,
    infos: HashMap<String, TensorInfo>,
}

impl PickleTensors {
    /// Reads the index of the pickle at `path`: the tensors of its `key` entry (a Lightning
    /// checkpoint's `state_dict`) when it has one, else of the whole dict.
    pub fn open(path: &Path, key: Option<&str>) -> Result<Self> {
        Ok(Pickle::open(path)?.tensors(key))
    }

    /// Reads the index of the pickle held in `bytes`, as [`PickleTensors::open`] reads a
    /// file's.
    pub fn from_bytes(bytes: Arc<[u8]>, key: Option<&str>) -> Result<Self> {
        Ok(Pickle::from_bytes(bytes)?.tensors(key))
    }

    /// Every tensor's name, dtype and layout.
    pub fn tensor_infos(&self) -> &HashMap<String, TensorInfo> {
        &self.infos
    }

    /// Reads the tensor `name`.
    pub fn get(&self, name: &str) -> Result<Option<Tensor>> {
        self.infos
            .get(name)
            .map(|info| self.pickle.read(name, info))
            .transpose()
    }
}

/// Runs candle's pickle machine over one pickle.
fn unpickle(reader: &mut impl std::io::BufRead) -> Result<Object> {
    let mut stack = Stack::empty();
    stack.read_loop(reader)?;
    stack.finalize()
}

/// The object and storages of the `torch.save` file `reader` reads, `length` bytes long.
fn read_index<R: BufRead + Seek>(
    mut reader: R,
    length: u64,
) -> Result<(Object, HashMap<String, Storage>)> {
    let mut start = [0u8; MAGIC.len()];
    reader.read_exact(&mut start)?;
    if start == MAGIC {
        read_stream(reader, length)
    } else {
        reader.rewind()?;
        read_archive(reader)
    }
}

/// The object and storages of a zip archive (PyTorch 1.6 and later).
fn read_archive<R: Read + Seek>(reader: R) -> Result<(Object, HashMap<String, Storage>)> {
    // `torch.save` writes the archive from the file's first byte. Told so, the zip crate reads
    // the central directory where the end record puts it; left to detect an offset (its
    // default), it refuses some valid zip64 archives of PyTorch's ("Invalid Central Directory
    // header": `realplksr-x4-dysample.pth` among the fixtures).
    let config = zip::read::Config {
        archive_offset: zip::read::ArchiveOffset::Known(0),
    };
    let mut zip = zip::ZipArchive::with_config(config, reader)?;
    let mut pickle = None;
    for name in zip.file_names() {
        let name = name?;
        if name.ends_with("/data.pkl") && name.matches('/').count() == 1 {
            pickle = Some(name.into_owned());
            break;
        }
    }
    let pickle =
        pickle.ok_or_else(|| Error::Msg("a zip archive without `<archive>/data.pkl`".into()))?;
    let archive = pickle.trim_end_matches("data.pkl").to_string();
    if let Ok(mut entry) = zip.by_name(&format!("{archive}byteorder")) {
        let mut order = String::new();
        entry.read_to_string(&mut order)?;
        if order.trim() != "little" {
            return Err(Error::Msg(format!("saved in {} byte order", order.trim())));
        }
    }
    let object = unpickle(&mut BufReader::new(zip.by_name(&pickle)?))?;
    let data = format!("{archive}data/");
    let mut storages = HashMap::new();
    for index in 0..zip.len() {
        let entry = zip.by_index_raw(index)?;
        let name = entry.name()?;
        let Some(key) = name.strip_prefix(&data) else {
            continue;
        };
        if entry.compression() != zip::CompressionMethod::Stored {
            return Err(Error::Msg(format!(
                "storage {key} is compressed ({}); torch.save stores them as they are",
                entry.compression()
            )));
        }
        let start = entry
            .data_start()
            .ok_or_else(|| Error::Msg(format!("storage {key}: no data offset")))?;
        storages.insert(
            key.to_string(),
            Storage {
                start,
                bytes: entry.size(),
            },
        );
    }
    Ok((object, storages))
}

/// The object and storages of a legacy stream (before PyTorch 1.6), `reader` past its magic
/// number (which `read_index` checked: candle's machine cannot hold its 10-byte integer).
fn read_stream<R: BufRead + Seek>(
    mut reader: R,
    length: u64,
) -> Result<(Object, HashMap<String, Storage>)> {
    // The protocol version, then the system's sizes and byte order.
    let (_, system) = (unpickle(&mut reader)?, unpickle(&mut reader)?);
    if !little_endian(&system) {
        return Err(Error::Msg("saved on a big-endian machine".into()));
    }
    let object = unpickle(&mut reader)?;
    let keys = match unpickle(&mut reader)? {
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
        let start = reader.stream_position()?;
        storages.insert(key, Storage { start, bytes });
        reader.seek(SeekFrom::Current(
            i64::try_from(bytes).map_err(|_| Error::Msg("a storage is too large".into()))?,
        ))?;
    }
    let end = reader.stream_position()?;
    if end > length {
        return Err(Error::Msg("the file ends inside its storages".into()));
    }
    Ok((object, storages))
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

    /// The same tensors saved both ways: a zip archive and a legacy stream.
    const LAYOUTS: [&str; 2] = ["layouts.pt", "layouts.legacy.pt"];

    #[test]
    fn views_transposes_and_every_dtype_read_as_torch_saved_them() {
        let reference =
            candle_core::safetensors::load(fixture("layouts.reference.safetensors"), &Device::Cpu)
                .unwrap();
        let mut expected: Vec<&String> = reference.keys().collect();
        expected.sort();
        for file in LAYOUTS {
            let path = fixture(file);
            assert!(is_torch_save(&path), "{file}");
            let in_memory: Arc<[u8]> = std::fs::read(&path).unwrap().into();
            assert!(starts_as_torch_save(&in_memory), "{file}");
            for tensors in [
                PickleTensors::open(&path, Some("state_dict")).unwrap(),
                PickleTensors::from_bytes(in_memory, Some("state_dict")).unwrap(),
            ] {
                let mut names: Vec<&String> = tensors.tensor_infos().keys().collect();
                names.sort();
                assert_eq!(names, expected, "{file}");
                for (name, wanted) in &reference {
                    let read = tensors.get(name).unwrap().unwrap();
                    assert_eq!(
                        (read.dims(), read.dtype()),
                        (wanted.dims(), wanted.dtype()),
                        "{file}: {name}"
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
                    assert_eq!(same, 1.0, "{file}: {name}: {read} vs {wanted}");
                }
                assert!(tensors.get("epoch").unwrap().is_none(), "{file}");
            }
        }
    }

    #[test]
    fn a_file_without_the_key_is_read_whole() {
        let tensors = PickleTensors::open(&fixture("layouts.pt"), Some("model")).unwrap();
        assert!(
            tensors.tensor_infos().is_empty(),
            "the top-level dict holds no tensors, only `state_dict` and `epoch`"
        );
        let safetensors = fixture("tiny-sd15.safetensors");
        assert!(!is_torch_save(&safetensors));
        assert!(PickleTensors::open(&safetensors, None).is_err());
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for file in LAYOUTS {
            let bytes = std::fs::read(fixture(file)).unwrap();
            for cut in [20, bytes.len() / 2, bytes.len() - 3] {
                let path = dir.path().join("cut.pt");
                std::fs::write(&path, &bytes[..cut]).unwrap();
                assert!(
                    PickleTensors::open(&path, None).is_err(),
                    "{file} cut at {cut}"
                );
                assert!(
                    PickleTensors::from_bytes(bytes[..cut].into(), None).is_err(),
                    "{file} cut at {cut}, in memory"
                );
            }
        }
    }
}
#[cfg(test)]
mod scratch {
    #[test]
    fn scratch_dump() {
        for f in ["legacy.pt", "pixel-style.pt"] {
            let p = super::Pickle::open(
                &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/sd/tiny-sd15/hypernetworks")
                    .join(f),
            )
            .unwrap();
            let s = format!("{:?}", p.object());
            println!("{}", &s[..s.len().min(2500)]);
        }
    }
}
