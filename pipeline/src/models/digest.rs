//! sha256 of weight files, remembered for the life of the process: a file whose length and
//! modification time have not changed is not read again. The workshop's cache key, a loaded
//! model's identity and the registry's search for a folder by its weights all ask for the same
//! files, which for Stable Diffusion are gigabytes.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// What a file was when it was hashed: its length and modification time.
type Stamp = (u64, Option<SystemTime>);

static KNOWN: LazyLock<Mutex<HashMap<PathBuf, (Stamp, String)>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The sha256 (hex) of the file at `path`.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let stamp: Stamp = (meta.len(), meta.modified().ok());
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    // Without a modification time there is nothing to tell a changed file by: always read it.
    if stamp.1.is_some()
        && let Some((known, digest)) = KNOWN.lock().ok().and_then(|k| k.get(&key).cloned())
        && known == stamp
    {
        return Ok(digest);
    }
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    let digest = hex::encode(hasher.finalize());
    tracing::debug!(path = %path.display(), bytes = stamp.0, "hashed");
    if let Ok(mut known) = KNOWN.lock() {
        known.insert(key, (stamp, digest.clone()));
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_hashed_again_and_an_unchanged_one_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        std::fs::write(&path, b"hello\n").unwrap();
        let first = file_sha256(&path).unwrap();
        assert_eq!(
            first,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        assert_eq!(file_sha256(&path).unwrap(), first);
        std::fs::write(&path, b"hello, world\n").unwrap();
        assert_ne!(file_sha256(&path).unwrap(), first, "new length, new hash");
        // Same length, new modification time: read again.
        std::fs::write(&path, b"jello, world\n").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(
            file_sha256(&path).unwrap(),
            hex::encode(Sha256::digest(b"jello, world\n"))
        );
        assert!(file_sha256(&dir.path().join("missing")).is_err());
    }
}
