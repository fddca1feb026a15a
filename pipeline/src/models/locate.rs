//! Finding model folders: by the sha256 of their weights (the identity manifests and the
//! registry record), and every Stable Diffusion folder among the project's model folders.

use std::path::PathBuf;

/// The first folder holding weights whose sha256 (hex) is `weights_sha256`: each of `dirs`
/// itself, then the folders directly below it (sorted).
pub fn folder_with_weights(dirs: &[PathBuf], weights_sha256: &str) -> Option<PathBuf> {
    let wanted = weights_sha256.trim_start_matches("0x").to_ascii_lowercase();
    candidates(dirs)
        .into_iter()
        .find(|folder| super::weights_sha256(folder).ok().as_deref() == Some(wanted.as_str()))
}

/// Every Stable Diffusion folder (a diffusers folder, or a Hugging Face cache folder of one)
/// among `dirs` and the folders directly below them (sorted): what an editor offers to pick.
pub fn stable_diffusion_folders(dirs: &[PathBuf]) -> Vec<PathBuf> {
    candidates(dirs)
        .into_iter()
        .filter(|folder| super::Family::of(folder) == super::Family::StableDiffusion)
        .collect()
}

fn candidates(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in dirs {
        found.push(dir.clone());
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut below: Vec<PathBuf> = entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| path.is_dir())
                .collect();
            below.sort();
            found.extend(below);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::house::files;
    use sha2::{Digest, Sha256};

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

    #[test]
    fn lists_the_stable_diffusion_folders_below_the_model_dirs() {
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
        let dirs = [root.path().to_path_buf(), root.path().join("missing")];
        assert_eq!(
            stable_diffusion_folders(&dirs),
            [
                root.path().join("models--org--turbo"),
                root.path().join("sd15")
            ]
        );
    }
}
