//! The content-addressed cache: one folder per key under `.autonomy/cache/`, holding an asset's
//! files and its `entry.json`.
//!
//! An entry is made in a private staging folder and renamed into place in one step, after
//! every file in it is synced: a crash (even `kill -9`) leaves a complete entry or none, and
//! at worst a stale staging folder, which the next [`Cache::open`] removes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// File in every entry that lists its files; written last.
const ENTRY: &str = "entry.json";
/// Folder for entries being made.
const STAGING: &str = "staging";

/// Everything that decides an asset's bytes; its hash is the cache key.
#[derive(Clone, Debug, Serialize)]
pub struct KeyParts<'a> {
    /// The canonical recipe.
    pub recipe: &'a serde_json::Value,
    /// The model's weights hash.
    pub weights_sha256: &'a str,
    /// The generator code version.
    pub generator: &'a str,
    /// The device the model runs on (pixels may differ across devices).
    pub device: &'a str,
    /// Content hashes of every input file (sources, palettes), in a fixed order.
    pub inputs: Vec<String>,
}

impl KeyParts<'_> {
    /// The cache key: sha256 (hex) of the RFC 8785 canonical JSON of the parts.
    pub fn key(&self) -> String {
        let bytes = serde_jcs::to_vec(self).unwrap_or_else(|_| format!("{self:?}").into_bytes());
        hex::encode(Sha256::digest(bytes))
    }
}

/// What an entry holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The key it is stored under.
    pub key: String,
    /// File names inside the entry folder, the manifest sidecar among them.
    pub files: Vec<String>,
}

/// The cache folder.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
}

static STAGED: AtomicU64 = AtomicU64::new(0);

impl Cache {
    /// Opens (creating) the cache in `dir` and clears staging folders of processes that died.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir.join(STAGING))?;
        for stale in fs::read_dir(dir.join(STAGING))?.flatten() {
            let name = stale.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().unwrap_or_default();
            if pid != std::process::id().to_string() && !process_alive(pid) {
                tracing::debug!(staging = %stale.path().display(), "removing a dead build's staging folder");
                let _ = fs::remove_dir_all(stale.path());
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The folder of entry `key`.
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The complete entry under `key`, if there is one.
    pub fn get(&self, key: &str) -> Option<Entry> {
        let bytes = fs::read(self.path(key).join(ENTRY)).ok()?;
        serde_json::from_slice(&bytes)
            .ok()
            .filter(|e: &Entry| e.key == key)
    }

    /// A fresh, empty staging folder to make an entry in.
    pub fn stage(&self) -> io::Result<PathBuf> {
        let n = STAGED.fetch_add(1, Ordering::SeqCst);
        let dir = self
            .dir
            .join(STAGING)
            .join(format!("{}-{n}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Makes `staged` (holding `files`) the entry for `key`: syncs the files, writes
    /// `entry.json`, and renames the folder into place. An existing entry is kept (and `staged`
    /// removed) unless `replace` is set; then the old one is moved aside first and deleted.
    pub fn commit(
        &self,
        staged: &Path,
        key: &str,
        files: Vec<String>,
        replace: bool,
    ) -> io::Result<Entry> {
        for file in &files {
            fs::File::open(staged.join(file))?.sync_all()?;
        }
        let entry = Entry {
            key: key.to_string(),
            files,
        };
        let json = serde_json::to_vec_pretty(&entry).map_err(io::Error::other)?;
        crate::atomic::write(&staged.join(ENTRY), &json)?;
        let target = self.path(key);
        if target.exists() {
            if !replace && self.get(key).is_some() {
                fs::remove_dir_all(staged)?;
                return Ok(entry);
            }
            // Moved aside into staging (cleared by the next open if we die now), then deleted.
            let old = self.stage()?;
            fs::remove_dir(&old)?;
            fs::rename(&target, &old)?;
            fs::rename(staged, &target)?;
            fs::remove_dir_all(&old)?;
        } else {
            fs::rename(staged, &target)?;
        }
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(entry)
    }
}

/// Whether a process with this id runs (Linux: `/proc/<pid>`; elsewhere assume it does).
fn process_alive(pid: &str) -> bool {
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_entries_are_found_and_staging_of_dead_builds_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let staged = cache.stage().unwrap();
        fs::write(staged.join("a.png"), b"png").unwrap();
        assert!(cache.get("k1").is_none());
        let entry = cache
            .commit(&staged, "k1", vec!["a.png".into()], false)
            .unwrap();
        assert_eq!(cache.get("k1"), Some(entry));
        assert_eq!(fs::read(cache.path("k1").join("a.png")).unwrap(), b"png");

        let again = cache.stage().unwrap();
        fs::write(again.join("a.png"), b"new").unwrap();
        cache
            .commit(&again, "k1", vec!["a.png".into()], false)
            .unwrap();
        assert_eq!(fs::read(cache.path("k1").join("a.png")).unwrap(), b"png");
        let forced = cache.stage().unwrap();
        fs::write(forced.join("a.png"), b"new").unwrap();
        cache
            .commit(&forced, "k1", vec!["a.png".into()], true)
            .unwrap();
        assert_eq!(fs::read(cache.path("k1").join("a.png")).unwrap(), b"new");

        let dead = dir.path().join(STAGING).join("999999999-0");
        fs::create_dir_all(&dead).unwrap();
        Cache::open(dir.path()).unwrap();
        assert!(!dead.exists());
    }

    #[test]
    fn keys_change_with_every_part() {
        let recipe = serde_json::json!({"prompt": "a"});
        let other = serde_json::json!({"prompt": "b"});
        let parts = KeyParts {
            recipe: &recipe,
            weights_sha256: "w",
            generator: "g",
            device: "cpu",
            inputs: vec![],
        };
        let base = parts.key();
        assert_eq!(base, parts.clone().key());
        assert_ne!(
            base,
            KeyParts {
                recipe: &other,
                ..parts.clone()
            }
            .key()
        );
        assert_ne!(
            base,
            KeyParts {
                weights_sha256: "v",
                ..parts.clone()
            }
            .key()
        );
        assert_ne!(
            base,
            KeyParts {
                inputs: vec!["x".into()],
                ..parts
            }
            .key()
        );
    }
}
