//! Finding models: by the sha256 of their weights (the identity manifests and the registry
//! record), and every Stable Diffusion folder, single-file checkpoint, LoRA, embedding, VAE
//! and upscaler file among the project's model folders.

use std::path::PathBuf;

use super::sd::embedding::{Embedding, EmbeddingFile};
use super::sd::lora::LoraSummary;

/// The first model whose weights' sha256 (hex) is `weights_sha256`: each of `dirs` itself,
/// then the folders directly below it (sorted), then the checkpoint files in them.
pub fn folder_with_weights(dirs: &[PathBuf], weights_sha256: &str) -> Option<PathBuf> {
    let wanted = weights_sha256.trim_start_matches("0x").to_ascii_lowercase();
    candidates(dirs)
        .into_iter()
        .find(|folder| super::weights_sha256(folder).ok().as_deref() == Some(wanted.as_str()))
}

/// Every Stable Diffusion model among `dirs` and the folders directly below them — diffusers
/// folders, Hugging Face cache folders of one (sorted), then single-file checkpoints (sorted):
/// what an editor offers to pick.
pub fn stable_diffusion_models(dirs: &[PathBuf]) -> Vec<PathBuf> {
    candidates(dirs)
        .into_iter()
        .filter(|folder| super::Family::of(folder) == super::Family::StableDiffusion)
        .collect()
}

/// Every VAE of its own among `dirs`, the folders directly below them (A1111's `models/VAE/`,
/// ComfyUI's `models/vae/`) and their files: diffusers VAE folders and VAE weights files
/// ([`super::sd::vae_file::is_vae`]), sorted. A pipeline's own `vae/` is not one of them.
pub fn vae_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    beside(dirs, super::sd::vae_file::is_vae)
}

/// Every image upscaling model among `dirs`, the folders directly below them (A1111's
/// `models/ESRGAN/`, ComfyUI's `models/upscale_models/`) and their files
/// ([`super::sd::upscaler::is_upscaler`]: from the stored names alone), sorted.
pub fn upscaler_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    beside(dirs, super::sd::upscaler::is_upscaler)
}

/// Every annotator file among `dirs` and the folders directly below them (a `models/annotators/`
/// holding `lllyasviel/Annotators`' `ControlNetHED.pth`, `sk_model.pth`…) with the
/// preprocessors that run it ([`super::sd::annotator::preprocessors_of`]), sorted.
pub fn annotator_files(dirs: &[PathBuf]) -> Vec<(PathBuf, &'static [&'static str])> {
    let weights = |path: &std::path::Path| {
        super::sd::weights::is_pickle(path) || path.extension().is_some_and(|e| e == "safetensors")
    };
    beside(dirs, |path| weights(path) && path.is_file())
        .into_iter()
        .map(|path| {
            let preprocessors = super::sd::annotator::preprocessors_of(&path);
            (path, preprocessors)
        })
        .filter(|(_, preprocessors)| !preprocessors.is_empty())
        .collect()
}

/// Every ControlNet among `dirs` ([`super::sd::controlnet::is_controlnet`], sorted): diffusers
/// ControlNet folders and single files in each of `dirs` and in the folders directly below
/// them (A1111's `models/ControlNet/`, ComfyUI's `models/controlnet/`), and beside the
/// pipelines there (`sd15/controlnet/`).
pub fn controlnet_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let is_controlnet = |path: &std::path::Path| super::sd::controlnet::is_controlnet(path);
    let mut found = beside(dirs, is_controlnet);
    let pipelines = stable_diffusion_models(dirs);
    found.extend(
        pipelines
            .iter()
            .filter(|path| path.is_dir())
            .flat_map(entries)
            .filter(|path| is_controlnet(path)),
    );
    found.sort();
    found.dedup();
    found
}

/// The entries of `dirs` and of the folders directly below them (not diffusers pipelines)
/// that `wanted` takes, sorted.
fn beside(dirs: &[PathBuf], wanted: impl Fn(&std::path::Path) -> bool) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|dir| {
            let below: Vec<PathBuf> = entries(dir)
                .into_iter()
                .filter(|p| p.is_dir() && !super::sd::folder::is_diffusers(p))
                .collect();
            let files: Vec<PathBuf> = below.iter().flat_map(entries).collect();
            entries(dir).into_iter().chain(files)
        })
        .filter(|path| wanted(path))
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Every LoRA file among `dirs`, with what it adapts (sorted): the `.safetensors` files (and
/// PyTorch-pickled `.pt` and `.bin`, as A1111 and older diffusers save them) in each
/// of `dirs`, in the folders directly below them and in those folders' `loras` (or `lora`)
/// folders whose header is a LoRA's — a shared `models/loras/` and a pipeline's own
/// `sd15/loras/` alike. Other weights are passed over after reading their header only.
pub fn lora_files(dirs: &[PathBuf]) -> Vec<(PathBuf, LoraSummary)> {
    let mut found: Vec<(PathBuf, LoraSummary)> = Vec::new();
    for folder in candidates(dirs) {
        let named_lora = |path: &PathBuf| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| matches!(name.to_ascii_lowercase().as_str(), "lora" | "loras"))
        };
        let below = std::fs::read_dir(&folder)
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.is_dir() && named_lora(path));
        for dir in std::iter::once(folder.clone()).chain(below) {
            let files = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| {
                    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        ["safetensors", "pt", "bin"].contains(&e.to_ascii_lowercase().as_str())
                    })
                });
            for file in files {
                if found.iter().any(|(known, _)| *known == file) {
                    continue;
                }
                match LoraSummary::read(&file) {
                    Ok(summary) => found.push((file, summary)),
                    Err(error) => tracing::debug!(%error, "not a LoRA file"),
                }
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Where a prompt's LoRA tags are looked for ([`lora_named`]): the folder holding `model` (a
/// diffusers folder or a checkpoint file), then the project's `model_dirs`.
pub fn lora_tag_dirs(model: &std::path::Path, model_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let holder = match model.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::iter::once(holder)
        .chain(model_dirs.iter().cloned())
        .collect()
}

/// The LoRA file an A1111 prompt tag names (`<lora:NAME:…>`,
/// [`super::sd::lora_tags`]): the one file among [`lora_files`]`(dirs)` whose name without
/// its extension is `name`, or else the one whose trainer named it so (its alias, kohya's
/// `ss_output_name`, which A1111 matches too). Otherwise what is wrong: no such file (with
/// the names that differ only in case, or else the names there are), or several.
pub fn lora_named(dirs: &[PathBuf], name: &str) -> Result<PathBuf, String> {
    lora_named_in(&lora_files(dirs), dirs, name)
}

/// [`lora_named`] among `files`, the [`lora_files`] of `dirs` already listed (a build lists
/// them once for all its recipes' tags).
pub fn lora_named_in(
    files: &[(PathBuf, LoraSummary)],
    dirs: &[PathBuf],
    name: &str,
) -> Result<PathBuf, String> {
    let mut named: Vec<&PathBuf> = files
        .iter()
        .map(|(path, _)| path)
        .filter(|path| stem(path) == name)
        .collect();
    if named.is_empty() {
        named = files
            .iter()
            .filter(|(_, summary)| summary.alias.as_deref() == Some(name))
            .map(|(path, _)| path)
            .collect();
    }
    match named[..] {
        [one] => Ok(one.clone()),
        [] => {
            let looked = listed(dirs);
            let near: Vec<&PathBuf> = files
                .iter()
                .map(|(path, _)| path)
                .filter(|path| stem(path).eq_ignore_ascii_case(name))
                .collect();
            let hint = if !near.is_empty() {
                format!("; names differ in case: {}", listed(&near))
            } else if files.is_empty() {
                String::from("; there are none")
            } else {
                let mut names: Vec<String> = files.iter().map(|(path, _)| stem(path)).collect();
                names.sort();
                names.dedup();
                if names.len() > 12 {
                    names.truncate(12);
                    names.push("…".into());
                }
                format!("; there are {}", names.join(", "))
            };
            Err(format!(
                "no LoRA file named `{name}` in {looked}, the folders directly in them or \
                 their `loras` folders{hint}"
            ))
        }
        _ => Err(format!(
            "`{name}` names several LoRA files: {}; name one in the recipe's `loras` \
             (`generate --lora FILE:SCALE`)",
            listed(&named)
        )),
    }
}

/// Every textual-inversion embedding among `dirs` (sorted): the `.safetensors`, `.pt` and
/// `.bin` files in the `embeddings` (or `embedding`) folders that are, or are directly in, each
/// of `dirs` or the folders directly below them — A1111's `embeddings/`, ComfyUI's
/// `models/embeddings/` and a pipeline's own alike. Files that are not embeddings are passed
/// over.
pub fn embedding_files(dirs: &[PathBuf]) -> Vec<(PathBuf, Embedding)> {
    let folders = named_folders(dirs, &["embedding", "embeddings"]);
    let mut found: Vec<(PathBuf, Embedding)> = Vec::new();
    for file in folders.iter().flat_map(entries) {
        let extension = file.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !["safetensors", "pt", "bin"].contains(&extension.to_ascii_lowercase().as_str()) {
            continue;
        }
        let label = file.display().to_string();
        match Embedding::read(&EmbeddingFile {
            path: file.clone(),
            label,
        }) {
            Ok(embedding) => found.push((file, embedding)),
            Err(error) => tracing::debug!(%error, "not an embedding"),
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// A file's name without its extension.
fn stem(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `paths` quoted and joined with commas, as error messages list them.
fn listed(paths: &[impl AsRef<std::path::Path>]) -> String {
    paths
        .iter()
        .map(|path| format!("`{}`", path.as_ref().display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The entries of `dir`, unsorted (none when it cannot be read).
fn entries(dir: &PathBuf) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect()
}

/// The folders named one of `names` (in any case) that are, or are directly in, each of
/// `dirs` or the folders directly below them, sorted.
fn named_folders(dirs: &[PathBuf], names: &[&str]) -> Vec<PathBuf> {
    let named = |path: &PathBuf| {
        path.file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| names.contains(&name.to_ascii_lowercase().as_str()))
    };
    let mut folders: Vec<PathBuf> = Vec::new();
    for folder in candidates(dirs).into_iter().filter(|path| path.is_dir()) {
        if named(&folder) {
            folders.push(folder.clone());
        }
        folders.extend(
            entries(&folder)
                .into_iter()
                .filter(|p| p.is_dir() && named(p)),
        );
    }
    folders.sort();
    folders.dedup();
    folders
}

/// Every hypernetwork file among `dirs` (sorted): the `.pt` files in the `hypernetworks` (or
/// `hypernetwork`) folders that are, or are directly in, each of `dirs` or the folders
/// directly below them — A1111's `models/hypernetworks/`, ComfyUI's alike.
pub fn hypernetwork_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = named_folders(dirs, &["hypernetwork", "hypernetworks"])
        .iter()
        .flat_map(entries)
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("pt"))
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The hypernetwork file an A1111 prompt tag names (`<hypernet:NAME:…>`): the one among
/// [`hypernetwork_files`]`(dirs)` whose name without its extension is `name`; otherwise what
/// is wrong: none (with the names there are), or several.
pub fn hypernetwork_named(dirs: &[PathBuf], name: &str) -> Result<PathBuf, String> {
    let files = hypernetwork_files(dirs);
    let named: Vec<&PathBuf> = files.iter().filter(|path| stem(path) == name).collect();
    match named[..] {
        [one] => Ok(one.clone()),
        [] => {
            let looked = listed(dirs);
            let there = if files.is_empty() {
                "there are none".to_string()
            } else {
                let names: Vec<String> = files.iter().map(|path| stem(path)).collect();
                format!("there are {}", names.join(", "))
            };
            Err(format!(
                "no hypernetwork file `{name}.pt` in the `hypernetworks` folders of {looked} \
                 or the folders directly in them; {there}"
            ))
        }
        _ => Err(format!(
            "`{name}` names several hypernetwork files: {}",
            listed(&named)
        )),
    }
}

/// Each of `dirs` and the folders directly below it, then the single-file checkpoints in all
/// of those (told by their headers).
fn candidates(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let entries = |dir: &PathBuf| -> Vec<PathBuf> {
        let mut paths = entries(dir);
        paths.sort();
        paths
    };
    let mut found = Vec::new();
    for dir in dirs {
        found.push(dir.clone());
        found.extend(entries(dir).into_iter().filter(|path| path.is_dir()));
    }
    let checkpoints: Vec<PathBuf> = found
        .iter()
        .flat_map(entries)
        .filter(|path| super::sd::checkpoint::is_checkpoint(path))
        .collect();
    found.extend(checkpoints);
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::house::files;
    use sha2::{Digest, Sha256};
    use std::path::Path;

    #[test]
    fn finds_the_folder_by_hash_at_either_depth() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("a");
        let b = root.path().join("b");
        for (dir, bytes) in [(&a, b"aaa".as_slice()), (&b, b"bbb".as_slice())] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(files::WEIGHTS), bytes).unwrap();
        }
        let hash_b = hex::encode(Sha256::digest(b"bbb"));
        let dirs = [root.path().to_path_buf()];
        assert_eq!(folder_with_weights(&dirs, &hash_b), Some(b.clone()));
        assert_eq!(
            folder_with_weights(
                std::slice::from_ref(&b),
                &format!("0x{}", hash_b.to_uppercase())
            ),
            Some(b)
        );
        assert_eq!(
            folder_with_weights(&dirs, &hex::encode(Sha256::digest(b"ccc"))),
            None
        );
    }

    /// The SD fixtures folder.
    fn sd_fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd")
    }

    /// Copies fixtures (by path inside the SD fixtures) into `dir` under new names.
    fn copy_into(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (fixture, name) in files {
            std::fs::copy(sd_fixtures().join(fixture), dir.join(name)).unwrap();
        }
    }

    #[test]
    fn lists_the_lora_files_in_and_below_the_model_dirs_and_passes_over_other_weights() {
        let fixtures = sd_fixtures();
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("loras");
        copy_into(
            &shared,
            &[
                ("tiny-sdxl/loras/kohya-xl.safetensors", "xl.safetensors"),
                (
                    "tiny-sd15/unet/diffusion_pytorch_model.safetensors",
                    "not-a-lora.safetensors",
                ),
            ],
        );
        let dirs = [root.path().to_path_buf(), fixtures.clone()];
        let found: Vec<PathBuf> = lora_files(&dirs)
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        let mut expected = vec![
            shared.join("xl.safetensors"),
            fixtures.join("checkpoints/loras/tiny-sd15-kohya.safetensors"),
            fixtures.join("tiny-sd15/loras/boft.safetensors"),
            fixtures.join("tiny-sd15/loras/dora-peft.safetensors"),
            fixtures.join("tiny-sd15/loras/dora.safetensors"),
            fixtures.join("tiny-sd15/loras/full.safetensors"),
            fixtures.join("tiny-sd15/loras/glora.safetensors"),
            fixtures.join("tiny-sd15/loras/ia3.safetensors"),
            fixtures.join("tiny-sd15/loras/kohya-pickled.pt"),
            fixtures.join("tiny-sd15/loras/kohya.safetensors"),
            fixtures.join("tiny-sd15/loras/locon.safetensors"),
            fixtures.join("tiny-sd15/loras/locon_cp.safetensors"),
            fixtures.join("tiny-sd15/loras/loha.safetensors"),
            fixtures.join("tiny-sd15/loras/lokr.safetensors"),
            fixtures.join("tiny-sd15/loras/norm.safetensors"),
            fixtures.join("tiny-sd15/loras/oft.safetensors"),
            fixtures.join("tiny-sd15/loras/oft_peft.safetensors"),
            fixtures.join("tiny-sd15/loras/peft-pickled.bin"),
            fixtures.join("tiny-sd15/loras/peft.safetensors"),
            fixtures.join("tiny-sdxl/loras/kohya-xl.safetensors"),
        ];
        expected.sort();
        assert_eq!(found, expected);
    }

    #[test]
    fn finds_the_lora_a_prompt_tag_names_by_its_file_name() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("loras");
        copy_into(
            &shared,
            &[
                ("tiny-sd15/loras/kohya.safetensors", "Detail.safetensors"),
                ("tiny-sd15/loras/peft.safetensors", "kohya.safetensors"),
            ],
        );
        let dirs = [root.path().to_path_buf()];
        assert_eq!(
            lora_named(&dirs, "Detail").unwrap(),
            shared.join("Detail.safetensors")
        );
        let case = lora_named(&dirs, "detail").unwrap_err();
        assert!(
            case.contains("no LoRA file named `detail`")
                && case.contains("names differ in case")
                && case.contains("Detail.safetensors"),
            "{case}"
        );
        let missing = lora_named(&dirs, "moss").unwrap_err();
        assert!(missing.ends_with("there are Detail, kohya"), "{missing}");
        let both = [root.path().to_path_buf(), sd_fixtures().join("tiny-sd15")];
        let several = lora_named(&both, "kohya").unwrap_err();
        assert!(
            several.contains("`kohya` names several LoRA files")
                && several.contains("tiny-sd15/loras/kohya.safetensors"),
            "{several}"
        );
        let empty = tempfile::tempdir().unwrap();
        let none = lora_named(&[empty.path().to_path_buf()], "moss").unwrap_err();
        assert!(none.ends_with("there are none"), "{none}");

        // A file its trainer named otherwise is found by that name too, as A1111 finds it.
        let bytes = std::fs::read(shared.join("Detail.safetensors")).unwrap();
        let loaded = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let tensors: Vec<(String, safetensors::tensor::TensorView)> = loaded.tensors();
        let metadata = std::collections::HashMap::from([(
            "ss_output_name".to_string(),
            "add_detail".to_string(),
        )]);
        let renamed = shared.join("add_detail_v2.safetensors");
        safetensors::serialize_to_file(tensors, Some(metadata), &renamed).unwrap();
        assert_eq!(lora_named(&dirs, "add_detail").unwrap(), renamed);
        assert_eq!(
            lora_named(&dirs, "add_detail_v2").unwrap(),
            renamed,
            "and by its file name"
        );
    }

    #[test]
    fn lists_the_embeddings_in_embeddings_folders_and_passes_over_other_files() {
        let fixtures = sd_fixtures();
        let root = tempfile::tempdir().unwrap();
        let own = root.path().join("sd15/embeddings");
        copy_into(
            &own,
            &[
                (
                    "embeddings/bad-hands.safetensors",
                    "EasyNegative.safetensors",
                ),
                ("tiny-sd15/loras/kohya.safetensors", "a-lora.safetensors"),
            ],
        );
        std::fs::write(own.join("notes.txt"), "not weights").unwrap();
        let dirs = [root.path().to_path_buf(), fixtures.clone()];
        let found: Vec<(PathBuf, String)> = embedding_files(&dirs)
            .into_iter()
            .map(|(path, embedding)| (path, embedding.word().to_string()))
            .collect();
        let mut expected = vec![
            (
                own.join("EasyNegative.safetensors"),
                "EasyNegative".to_string(),
            ),
            (
                fixtures.join("embeddings/bad-hands.safetensors"),
                "bad-hands".into(),
            ),
            (
                fixtures.join("embeddings/gem-glow.safetensors"),
                "gem-glow".into(),
            ),
            (
                fixtures.join("embeddings/pixel-style.pt"),
                "pixel-style".into(),
            ),
            (
                fixtures.join("embeddings/xl-pixel.safetensors"),
                "xl-pixel".into(),
            ),
        ];
        expected.sort();
        assert_eq!(found, expected);
    }

    #[test]
    fn lists_the_stable_diffusion_models_and_checkpoints_below_the_model_dirs() {
        let root = tempfile::tempdir().unwrap();
        for (folder, marker) in [
            ("sd15", "model_index.json"),
            ("house", files::WEIGHTS),
            ("models--org--turbo", "snapshots"),
        ] {
            let dir = root.path().join(folder);
            std::fs::create_dir_all(&dir).unwrap();
            if marker == "snapshots" {
                std::fs::create_dir(dir.join(marker)).unwrap();
            } else {
                std::fs::write(dir.join(marker), b"{}").unwrap();
            }
        }
        // Files are told by their headers: a checkpoint's UNet names, not a LoRA's.
        let one = |name: &str| {
            let tensor =
                candle_core::Tensor::zeros(1, candle_core::DType::F32, &candle_core::Device::Cpu);
            std::collections::HashMap::from([(name.to_string(), tensor.unwrap())])
        };
        let checkpoints = root.path().join("checkpoints");
        std::fs::create_dir(&checkpoints).unwrap();
        for (path, name) in [
            (
                root.path().join("top.safetensors"),
                "model.diffusion_model.out.2.weight",
            ),
            (
                checkpoints.join("fine-tune.safetensors"),
                "model.diffusion_model.out.2.weight",
            ),
            (
                checkpoints.join("style.safetensors"),
                "lora_unet_conv_in.alpha",
            ),
        ] {
            candle_core::safetensors::save(&one(name), path).unwrap();
        }
        // A1111's older `.ckpt` pickles are told by their index; other pickles passed over.
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sd/checkpoints/tiny-sd15.ckpt");
        std::fs::copy(fixture, checkpoints.join("old.ckpt")).unwrap();
        std::fs::write(checkpoints.join("notes.ckpt"), b"not a zip").unwrap();
        let dirs = [root.path().to_path_buf(), root.path().join("missing")];
        assert_eq!(
            stable_diffusion_models(&dirs),
            [
                root.path().join("models--org--turbo"),
                root.path().join("sd15"),
                root.path().join("top.safetensors"),
                checkpoints.join("fine-tune.safetensors"),
                checkpoints.join("old.ckpt"),
            ]
        );
    }

    #[test]
    fn lists_vae_files_and_folders_but_not_pipelines_or_checkpoints() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd");
        let root = tempfile::tempdir().unwrap();
        let vaes = root.path().join("VAE");
        std::fs::create_dir(&vaes).unwrap();
        let tensor = || {
            candle_core::Tensor::zeros(1, candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap()
        };
        let save = |path: PathBuf, names: &[&str]| {
            let tensors: std::collections::HashMap<String, candle_core::Tensor> =
                names.iter().map(|n| (n.to_string(), tensor())).collect();
            candle_core::safetensors::save(&tensors, path).unwrap();
        };
        save(
            vaes.join("ft-mse.safetensors"),
            &["encoder.down.0.block.0.conv1.weight"],
        );
        save(
            vaes.join("not-a-vae.safetensors"),
            &["lora_unet_conv_in.alpha"],
        );
        save(
            root.path().join("whole.safetensors"),
            &[
                "model.diffusion_model.out.2.weight",
                "encoder.down.0.block.0.conv1.weight",
            ],
        );
        // A diffusers VAE folder, and a pipeline folder (whose own `vae/` is not listed).
        let folder = root.path().join("sdxl-vae");
        std::fs::create_dir(&folder).unwrap();
        for file in ["config.json", "diffusion_pytorch_model.safetensors"] {
            std::fs::copy(fixtures.join("tiny-sd15/vae").join(file), folder.join(file)).unwrap();
        }
        let pipeline = root.path().join("sd15");
        std::fs::create_dir_all(pipeline.join("vae")).unwrap();
        std::fs::write(pipeline.join("model_index.json"), b"{}").unwrap();
        for file in ["config.json", "diffusion_pytorch_model.safetensors"] {
            std::fs::copy(
                fixtures.join("tiny-sd15/vae").join(file),
                pipeline.join("vae").join(file),
            )
            .unwrap();
        }
        assert_eq!(
            vae_files(&[root.path().to_path_buf()]),
            [vaes.join("ft-mse.safetensors"), folder]
        );
    }

    #[test]
    fn lists_upscaler_files_in_every_layout_but_not_other_weights() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd");
        let root = tempfile::tempdir().unwrap();
        let esrgan = root.path().join("ESRGAN");
        std::fs::create_dir(&esrgan).unwrap();
        let files = [
            "compact-x4.pth",
            "rrdb-x2-new.pth",
            "rrdb-x4-new.safetensors",
            "rrdb-x4-old.pth",
        ];
        for file in files {
            std::fs::copy(fixtures.join("upscalers").join(file), esrgan.join(file)).unwrap();
        }
        // A LoRA and a VAE beside them are not upscalers.
        std::fs::copy(
            fixtures.join("tiny-sd15/loras/kohya.safetensors"),
            esrgan.join("kohya.safetensors"),
        )
        .unwrap();
        std::fs::copy(
            fixtures.join("tiny-sd15/vae/diffusion_pytorch_model.safetensors"),
            root.path().join("vae.safetensors"),
        )
        .unwrap();
        assert_eq!(
            upscaler_files(&[root.path().to_path_buf()]),
            files.map(|f| esrgan.join(f))
        );
    }

    #[test]
    fn lists_annotator_files_with_their_preprocessors_but_not_other_weights() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd");
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("annotators");
        std::fs::create_dir(&folder).unwrap();
        std::fs::copy(
            fixtures.join("annotators/hed.pth"),
            folder.join("ControlNetHED.pth"),
        )
        .unwrap();
        std::fs::copy(
            fixtures.join("annotators/lineart.pth"),
            folder.join("sk_model2.pth"),
        )
        .unwrap();
        std::fs::copy(
            fixtures.join("annotators/pidinet.pth"),
            folder.join("table5_pidinet.pth"),
        )
        .unwrap();
        std::fs::copy(
            fixtures.join("annotators/lineart-anime.pth"),
            folder.join("netG.pth"),
        )
        .unwrap();
        std::fs::copy(
            fixtures.join("annotators/depth-anything-v2.pth"),
            folder.join("depth_anything_v2_vits.pth"),
        )
        .unwrap();
        std::fs::copy(
            fixtures.join("annotators/mlsd.pth"),
            folder.join("mlsd_large_512_fp32.pth"),
        )
        .unwrap();
        // An upscaler, a ControlNet and a LoRA beside them are not annotators.
        for (from, to) in [
            ("upscalers/compact-x4.pth", "compact-x4.pth"),
            ("tiny-sd15/controlnet-shuffle.pth", "shuffle.pth"),
            ("tiny-sd15/loras/kohya.safetensors", "kohya.safetensors"),
        ] {
            std::fs::copy(fixtures.join(from), folder.join(to)).unwrap();
        }
        let hed: &[&str] = &["softedge_hed", "softedge_hedsafe", "scribble_hed"];
        let lineart: &[&str] = &["lineart"];
        let anime: &[&str] = &["lineart_anime"];
        let depth: &[&str] = &["depth_anything_v2", "depth_anything"];
        let mlsd: &[&str] = &["mlsd"];
        let pidinet: &[&str] = &["softedge_pidinet", "softedge_pidisafe", "scribble_pidinet"];
        assert_eq!(
            annotator_files(&[root.path().to_path_buf()]),
            [
                (folder.join("ControlNetHED.pth"), hed),
                (folder.join("depth_anything_v2_vits.pth"), depth),
                (folder.join("mlsd_large_512_fp32.pth"), mlsd),
                (folder.join("netG.pth"), anime),
                (folder.join("sk_model2.pth"), lineart),
                (folder.join("table5_pidinet.pth"), pidinet)
            ]
        );
    }

    #[test]
    fn lists_controlnets_in_their_folders_and_beside_pipelines_but_not_other_weights() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd");
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("ControlNet");
        std::fs::create_dir(&folder).unwrap();
        for file in ["controlnet-ldm.safetensors", "controlnet-shuffle.pth"] {
            std::fs::copy(fixtures.join("tiny-sd15").join(file), folder.join(file)).unwrap();
        }
        std::fs::copy(
            fixtures.join("tiny-sd15/loras/kohya.safetensors"),
            folder.join("kohya.safetensors"),
        )
        .unwrap();
        // A pipeline with its own diffusers ControlNet beside its UNet.
        let pipeline = root.path().join("sd15");
        std::fs::create_dir_all(pipeline.join("controlnet")).unwrap();
        std::fs::write(pipeline.join("model_index.json"), b"{}").unwrap();
        for file in ["config.json", "diffusion_pytorch_model.safetensors"] {
            std::fs::copy(
                fixtures.join("tiny-sd15/controlnet").join(file),
                pipeline.join("controlnet").join(file),
            )
            .unwrap();
        }
        assert_eq!(
            controlnet_files(&[root.path().to_path_buf()]),
            [
                folder.join("controlnet-ldm.safetensors"),
                folder.join("controlnet-shuffle.pth"),
                pipeline.join("controlnet"),
            ]
        );
    }
}
