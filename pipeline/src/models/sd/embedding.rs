//! Textual-inversion embeddings: new words for the text encoder, each a few learned token
//! vectors (`EasyNegative`, `bad-hands-5`, a style). An embedding file's word is its file stem,
//! as A1111 names them; where the word stands in a prompt (matched as a whole word, in any
//! case), its vectors take the place of tokens, as diffusers' `load_textual_inversion` runs
//! them.
//!
//! The files the tools that train them write are read:
//! - A1111's `.pt` (`string_to_param["*"]`), read by the pickle reader that builds objects without running anything;
//! - A1111's `.safetensors` (`emb_params`) and diffusers' `learned_embeds` (one tensor under
//!   the word it was trained for, `(n, d)` or `(d,)`), in either format;
//! - SDXL's, with vectors for each of its encoders (`clip_l`, `clip_g`).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

use super::SdError;
use super::config::PipelineSpec;
use super::pickle::{PickleTensors, is_torch_save};
use crate::generator::EmbeddingUse;

/// The most vectors an embedding may have: a prompt holds 75 tokens.
const MOST_VECTORS: usize = 75;

/// One embedding file to load.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingFile {
    /// The `.safetensors`, `.pt` or `.bin` file.
    pub path: PathBuf,
    /// How the manifest names it (the path as the recipe writes it).
    pub label: String,
}

impl EmbeddingFile {
    /// The word that calls it up in a prompt: the file's stem.
    pub fn word(&self) -> String {
        self.path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Which text encoder vectors are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoder {
    /// SD 1.x/2.x's only encoder, or SDXL's first (OpenAI CLIP ViT-L).
    First,
    /// SDXL's second (OpenCLIP ViT-bigG; the refiner's only one).
    Second,
}

/// A read embedding file's vectors.
#[derive(Clone, Debug)]
enum Vectors {
    /// For a model with one text encoder, `(n, d)`.
    One(Tensor),
    /// SDXL's: `clip_l` for the first encoder, `clip_g` for the second.
    Xl {
        /// `clip_l`, `(n, d₁)`.
        first: Tensor,
        /// `clip_g`, `(n, d₂)`.
        second: Tensor,
    },
}

/// A read embedding: its word, its vectors and how the manifest records it.
#[derive(Clone, Debug)]
pub struct Embedding {
    word: String,
    vectors: Vectors,
    path: PathBuf,
    /// The file and its hash.
    pub used: EmbeddingUse,
}

impl Embedding {
    /// Reads `file`, refusing one whose layout is none of the module's, whose vectors are not
    /// `(n, d)` f32/f16/bf16 with `1 ≤ n ≤ 75`, or whose stem is empty.
    pub fn read(file: &EmbeddingFile) -> Result<Self, SdError> {
        let path = &file.path;
        let invalid = |message: String| SdError::Invalid {
            path: path.clone(),
            message,
        };
        let word = file.word();
        if word.trim().is_empty() {
            return Err(invalid(
                "an embedding's word is its file name, and this one has none".into(),
            ));
        }
        let bytes = std::fs::read(path).map_err(|source| SdError::io(path, source))?;
        let mut tensors = if is_torch_save(path) {
            let failed = |source| SdError::Weights {
                path: path.clone(),
                source,
            };
            // A1111 keeps its vectors under `string_to_param`; diffusers' are the whole dict.
            let pickle = PickleTensors::open(path, Some("string_to_param")).map_err(failed)?;
            let mut tensors = HashMap::new();
            for name in pickle.tensor_infos().keys() {
                if let Some(tensor) = pickle.get(name).map_err(failed)? {
                    tensors.insert(name.clone(), tensor);
                }
            }
            tensors
        } else {
            candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|_| {
                invalid("neither a safetensors file nor a PyTorch pickle (`torch.save`)".into())
            })?
        };
        let mut take = |key: &str| -> Result<Option<Tensor>, SdError> {
            tensors
                .remove(key)
                .map(|t| matrix(t, key).map_err(invalid))
                .transpose()
        };
        let vectors = match (take("clip_l")?, take("clip_g")?) {
            (Some(first), Some(second)) => {
                if first.dim(0)? != second.dim(0)? {
                    return Err(invalid(format!(
                        "`clip_l` has {} vectors and `clip_g` {}; SDXL's encoders take as many each",
                        first.dim(0)?,
                        second.dim(0)?
                    )));
                }
                Vectors::Xl { first, second }
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid(
                    "an SDXL embedding holds both `clip_l` and `clip_g`; this one has one of them"
                        .into(),
                ));
            }
            (None, None) => {
                let mut all: Vec<(String, Tensor)> = tensors.into_iter().collect();
                if all.len() != 1 {
                    all.sort_by(|a, b| a.0.cmp(&b.0));
                    return Err(invalid(format!(
                        "not a textual-inversion embedding: it holds {} tensors ({}), where an embedding holds one (`emb_params`, A1111's `string_to_param`, or diffusers' word) or SDXL's `clip_l` and `clip_g`",
                        all.len(),
                        all.iter()
                            .take(4)
                            .map(|(k, _)| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                let (key, tensor) = all.remove(0);
                Vectors::One(matrix(tensor, &key).map_err(invalid)?)
            }
        };
        Ok(Self {
            word,
            vectors,
            path: path.clone(),
            used: EmbeddingUse {
                file: file.label.clone(),
                sha256: hex::encode(Sha256::digest(&bytes)),
            },
        })
    }

    /// Whether it has vectors for every text encoder of `spec`, of their widths.
    pub fn fits(&self, spec: &PipelineSpec) -> bool {
        let sdxl = spec.text_2.is_some();
        [
            (Encoder::First, &spec.text),
            (Encoder::Second, &spec.text_2),
        ]
        .into_iter()
        .all(|(encoder, config)| {
            config
                .as_ref()
                .is_none_or(|config| self.vectors(encoder, sdxl, config.hidden_size).is_ok())
        })
    }

    /// How many vectors it puts in a prompt (per encoder).
    pub fn vector_count(&self) -> usize {
        match &self.vectors {
            Vectors::One(vectors) | Vectors::Xl { first: vectors, .. } => {
                vectors.dim(0).unwrap_or(0)
            }
        }
    }

    /// The word that calls it up.
    pub fn word(&self) -> &str {
        &self.word
    }

    /// Its vectors for `encoder` of an SDXL model (`sdxl`; its refiner has only the second) or
    /// of an SD 1.x/2.x one, checked against the encoder's token `width`.
    pub fn vectors(&self, encoder: Encoder, sdxl: bool, width: usize) -> Result<&Tensor, SdError> {
        let invalid = |message: String| SdError::Invalid {
            path: self.path.clone(),
            message,
        };
        let vectors = match (&self.vectors, sdxl, encoder) {
            (Vectors::One(vectors), false, _) => vectors,
            (Vectors::Xl { first, .. }, true, Encoder::First) => first,
            (Vectors::Xl { second, .. }, true, Encoder::Second) => second,
            (Vectors::One(_), true, _) => {
                return Err(invalid(
                    "it is an embedding for one text encoder (SD 1.x/2.x); an SDXL model needs one with `clip_l` and `clip_g`".into(),
                ));
            }
            (Vectors::Xl { .. }, false, _) => {
                return Err(invalid(
                    "it is an SDXL embedding (`clip_l`, `clip_g`); this model has one text encoder (SD 1.x/2.x)".into(),
                ));
            }
        };
        let found = vectors.dim(1)?;
        if found != width {
            return Err(invalid(format!(
                "its vectors are {found} wide and the text encoder's tokens {width}: it was made for another Stable Diffusion version"
            )));
        }
        Ok(vectors)
    }
}

/// `tensor` as `(n, d)` f32 vectors (a `(d,)` one is one vector), or why it cannot be.
fn matrix(tensor: Tensor, key: &str) -> Result<Tensor, String> {
    if !matches!(tensor.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        return Err(format!(
            "`{key}` is {:?}; embedding vectors are floats",
            tensor.dtype()
        ));
    }
    let tensor = match tensor.dims() {
        [_] => tensor.unsqueeze(0),
        [_, _] => Ok(tensor),
        dims => return Err(format!("`{key}` is {dims:?}; embedding vectors are (n, d)")),
    }
    .and_then(|t| t.to_dtype(DType::F32))
    .map_err(|e| format!("`{key}`: {e}"))?;
    let (n, d) = tensor.dims2().map_err(|e| e.to_string())?;
    if n == 0 || n > MOST_VECTORS || d == 0 {
        return Err(format!(
            "`{key}` holds {n} vectors of {d}; a prompt takes 1 to {MOST_VECTORS}"
        ));
    }
    Ok(tensor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> EmbeddingFile {
        EmbeddingFile {
            path: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/sd/embeddings")
                .join(name),
            label: name.into(),
        }
    }

    fn write(dir: &Path, name: &str, tensors: &[(&str, Tensor)]) -> EmbeddingFile {
        let path = dir.join(name);
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(k, t)| (k.to_string(), t.clone()))
            .collect();
        candle_core::safetensors::save(&map, &path).unwrap();
        EmbeddingFile {
            path,
            label: name.into(),
        }
    }

    fn zeros(dims: &[usize], dtype: DType) -> Tensor {
        Tensor::zeros(dims, dtype, &Device::Cpu).unwrap()
    }

    #[test]
    fn each_trainers_layout_reads_as_its_vectors_under_the_files_stem() {
        let pt = Embedding::read(&fixture("pixel-style.pt")).unwrap();
        assert_eq!(pt.word(), "pixel-style");
        let one = |e: &Embedding| {
            e.vectors(Encoder::First, false, 32)
                .unwrap()
                .dims()
                .to_vec()
        };
        assert_eq!(one(&pt), [3, 32], "A1111's `string_to_param`");
        let a1111 = Embedding::read(&fixture("bad-hands.safetensors")).unwrap();
        assert_eq!(one(&a1111), [2, 32], "A1111's `emb_params`");
        let diffusers = Embedding::read(&fixture("gem-glow.safetensors")).unwrap();
        assert_eq!(
            diffusers.word(),
            "gem-glow",
            "the stem, not the key `<gem-glow>`"
        );
        assert_eq!(one(&diffusers), [1, 32], "a 1-D vector is one vector");
        let xl = Embedding::read(&fixture("xl-pixel.safetensors")).unwrap();
        for encoder in [Encoder::First, Encoder::Second] {
            assert_eq!(xl.vectors(encoder, true, 32).unwrap().dims(), [2, 32]);
        }
        assert_eq!(pt.used.sha256.len(), 64);
        assert_eq!(pt.used.file, "pixel-style.pt");
        assert_eq!((pt.vector_count(), xl.vector_count()), (3, 2));
        let spec = |name: &str| {
            let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/sd")
                .join(name);
            PipelineSpec::read(super::super::source::open(&folder).unwrap().as_ref()).unwrap()
        };
        let (sd15, sdxl, refiner) = (
            spec("tiny-sd15"),
            spec("tiny-sdxl"),
            spec("tiny-sdxl-refiner"),
        );
        assert!(pt.fits(&sd15) && !pt.fits(&sdxl) && !pt.fits(&refiner));
        assert!(!xl.fits(&sd15) && xl.fits(&sdxl) && xl.fits(&refiner));
    }

    #[test]
    fn odd_tensors_and_files_are_refused_naming_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |file: EmbeddingFile, words: &str| {
            let message = Embedding::read(&file).unwrap_err().to_string();
            assert!(
                message.contains(words) && message.contains(&file.label),
                "{message}"
            );
        };
        refused(
            write(
                dir.path(),
                "cube.safetensors",
                &[("emb_params", zeros(&[1, 2, 3], DType::F32))],
            ),
            "`emb_params` is [1, 2, 3]; embedding vectors are (n, d)",
        );
        refused(
            write(
                dir.path(),
                "ints.safetensors",
                &[("emb_params", zeros(&[2, 8], DType::I64))],
            ),
            "embedding vectors are floats",
        );
        refused(
            write(
                dir.path(),
                "long.safetensors",
                &[("emb_params", zeros(&[76, 8], DType::F16))],
            ),
            "holds 76 vectors of 8; a prompt takes 1 to 75",
        );
        refused(
            write(
                dir.path(),
                "uneven.safetensors",
                &[
                    ("clip_l", zeros(&[2, 8], DType::F32)),
                    ("clip_g", zeros(&[3, 8], DType::F32)),
                ],
            ),
            "`clip_l` has 2 vectors and `clip_g` 3",
        );
        refused(
            write(
                dir.path(),
                "half.safetensors",
                &[("clip_l", zeros(&[2, 8], DType::F32))],
            ),
            "holds both `clip_l` and `clip_g`",
        );
        let text = dir.path().join("notes.pt");
        std::fs::write(&text, "not an embedding").unwrap();
        refused(
            EmbeddingFile {
                path: text,
                label: "notes.pt".into(),
            },
            "neither a safetensors file nor a PyTorch pickle",
        );
        let missing = EmbeddingFile {
            path: dir.path().join("gone.safetensors"),
            label: "gone.safetensors".into(),
        };
        assert!(matches!(
            Embedding::read(&missing),
            Err(SdError::MissingFile { .. })
        ));
        let f16 = write(
            dir.path(),
            "half.safetensors",
            &[("emb_params", zeros(&[2, 8], DType::F16))],
        );
        let read = Embedding::read(&f16).unwrap();
        let vectors = read.vectors(Encoder::First, false, 8).unwrap();
        assert_eq!(vectors.dtype(), DType::F32, "f16 vectors are widened");
    }
}
