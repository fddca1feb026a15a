//! Creator keys, kept as encrypted Ethereum keystores (Web3 Secret Storage v3, scrypt), one
//! `<name>.json` file per key in a folder ([`KeyStore::default_dir`]).
//!
//! The files carry the geth-style `address` field, so keys can be listed without a password
//! and other Ethereum tools read them. Private keys and passwords never reach logs, errors or
//! `Debug` output.

use alloy_primitives::Address;
use alloy_signer::k256::elliptic_curve::rand_core::OsRng;
use alloy_signer_local::{LocalSignerError, PrivateKeySigner};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Environment variable naming the key folder.
pub const KEYS_ENV: &str = "AUTONOMY_KEYS";
/// Environment variable holding a key's password (for scripts; otherwise it is prompted for).
pub const PASSWORD_ENV: &str = "AUTONOMY_KEY_PASSWORD";

/// A key problem. Messages name the key and its folder, never a password or key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key name is not 1 to 64 of `a-z`, `0-9`, `_`, `-`.
    #[error("bad key name `{0}`: use 1 to 64 of a-z, 0-9, `_` and `-`")]
    BadName(String),
    /// A new key was given an empty password.
    #[error("key `{0}`: the password must not be empty")]
    EmptyPassword(String),
    /// A key of that name already exists.
    #[error("key `{name}` already exists in {}", dir.display())]
    Exists {
        /// Key name.
        name: String,
        /// Key folder.
        dir: PathBuf,
    },
    /// There is no key of that name.
    #[error("no key `{name}` in {}", dir.display())]
    Missing {
        /// Key name.
        name: String,
        /// Key folder.
        dir: PathBuf,
    },
    /// The password does not decrypt the key.
    #[error("wrong password for key `{name}` in {}", dir.display())]
    WrongPassword {
        /// Key name.
        name: String,
        /// Key folder.
        dir: PathBuf,
    },
    /// The key file could not be made, or is not a keystore this module can read.
    #[error("key `{name}` in {}: {message}", dir.display())]
    Corrupt {
        /// Key name.
        name: String,
        /// Key folder.
        dir: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Neither `$AUTONOMY_KEYS` nor a user config folder is known.
    #[error("no folder for keys: set {KEYS_ENV}")]
    NoConfigDir,
    /// The password could not be asked for (no terminal).
    #[error("key `{name}`: cannot ask for its password ({source}); set {PASSWORD_ENV}")]
    NoTerminal {
        /// Key name.
        name: String,
        /// The cause.
        source: io::Error,
    },
}

/// A folder of keystore files.
#[derive(Clone, Debug)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    /// `$AUTONOMY_KEYS` if set, else `<config dir>/autonomy/keys`.
    pub fn default_dir() -> Result<PathBuf, KeyError> {
        match std::env::var_os(KEYS_ENV) {
            Some(dir) if !dir.is_empty() => Ok(dir.into()),
            _ => dirs::config_dir()
                .map(|d| d.join("autonomy").join("keys"))
                .ok_or(KeyError::NoConfigDir),
        }
    }

    /// The keys in `dir` (created on the first [`create`](Self::create)).
    pub fn open(dir: &Path) -> KeyStore {
        KeyStore {
            dir: dir.to_path_buf(),
        }
    }

    /// The key folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes a new random key `name`, encrypted with `password`, written atomically as
    /// `<name>.json`; refuses to overwrite a key. Returns its address.
    pub fn create(&self, name: &str, password: &str) -> Result<Address, KeyError> {
        check_name(name)?;
        if password.is_empty() {
            return Err(KeyError::EmptyPassword(name.into()));
        }
        let path = self.path(name);
        if path.exists() {
            return Err(self.exists(name));
        }
        let mut folder = fs::DirBuilder::new();
        folder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut folder, 0o700);
        folder.create(&self.dir).map_err(io(&self.dir))?;
        let tmp_name = format!(".{name}.json.tmp-{}", std::process::id());
        let tmp = self.dir.join(&tmp_name);
        let result = self.create_at(name, password, &tmp_name, &tmp, &path);
        let _ = fs::remove_file(&tmp);
        result
    }

    fn create_at(
        &self,
        name: &str,
        password: &str,
        tmp_name: &str,
        tmp: &Path,
        path: &Path,
    ) -> Result<Address, KeyError> {
        let (signer, _) =
            PrivateKeySigner::new_keystore(&self.dir, &mut OsRng, password, Some(tmp_name))
                .map_err(|e| self.corrupt(name, e.to_string()))?;
        let address = signer.address();
        // eth-keystore leaves out geth's `address` field; add it so `list` needs no password.
        let mut json = self.read_json(name, tmp)?;
        json["address"] = hex::encode(address).into();
        let bytes = serde_json::to_vec(&json).map_err(|e| self.corrupt(name, e.to_string()))?;
        write_private(tmp, &bytes).map_err(io(tmp))?;
        // A hard link never replaces an existing file, so two racing creates cannot clobber.
        match fs::hard_link(tmp, path) {
            Ok(()) => Ok(address),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(self.exists(name)),
            Err(_) if path.exists() => Err(self.exists(name)),
            Err(_) => fs::rename(tmp, path).map(|()| address).map_err(io(path)),
        }
    }

    /// Every key as (name, address), read from the files without decrypting; sorted by name.
    pub fn list(&self) -> Result<Vec<(String, Address)>, KeyError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let path = entry.map_err(io(&self.dir))?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|n| check_name(n).is_ok())
            else {
                continue;
            };
            let json = self.read_json(name, &path)?;
            let address = json["address"]
                .as_str()
                .and_then(|a| a.parse::<Address>().ok())
                .ok_or_else(|| self.corrupt(name, "no valid `address` field".into()))?;
            keys.push((name.to_string(), address));
        }
        keys.sort();
        Ok(keys)
    }

    /// Decrypts key `name` with `password`.
    pub fn unlock(&self, name: &str, password: &str) -> Result<PrivateKeySigner, KeyError> {
        check_name(name)?;
        let path = self.path(name);
        let json = self.read_json(name, &path)?;
        // eth-keystore panics on a short IV or derived key: refuse those files first.
        let crypto = &json["crypto"];
        let iv_ok = crypto["cipherparams"]["iv"]
            .as_str()
            .is_some_and(|iv| iv.len() == 32);
        if !iv_ok || crypto["kdfparams"]["dklen"].as_u64() != Some(32) {
            return Err(self.corrupt(name, "not a v3 keystore (crypto parameters)".into()));
        }
        let signer = PrivateKeySigner::decrypt_keystore(&path, password).map_err(|e| match e {
            // The keystore crate is not a direct dependency; its MAC error is a unit variant.
            LocalSignerError::EthKeystoreError(k) if format!("{k:?}") == "MacMismatch" => {
                KeyError::WrongPassword {
                    name: name.into(),
                    dir: self.dir.clone(),
                }
            }
            e => self.corrupt(name, e.to_string()),
        })?;
        match json["address"].as_str().map(str::parse::<Address>) {
            Some(Ok(address)) if address != signer.address() => Err(self.corrupt(
                name,
                format!("its `address` {address} is not the key's address"),
            )),
            _ => Ok(signer),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    fn read_json(&self, name: &str, path: &Path) -> Result<serde_json::Value, KeyError> {
        let bytes = fs::read(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => KeyError::Missing {
                name: name.into(),
                dir: self.dir.clone(),
            },
            _ => io(path)(e),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| self.corrupt(name, format!("not JSON: {e}")))
    }

    fn exists(&self, name: &str) -> KeyError {
        KeyError::Exists {
            name: name.into(),
            dir: self.dir.clone(),
        }
    }

    fn corrupt(&self, name: &str, message: String) -> KeyError {
        KeyError::Corrupt {
            name: name.into(),
            dir: self.dir.clone(),
            message,
        }
    }
}

/// The password for key `name`: `$AUTONOMY_KEY_PASSWORD` if set, else asked for on the
/// terminal without echo.
pub fn password_for(name: &str) -> Result<String, KeyError> {
    if let Ok(password) = std::env::var(PASSWORD_ENV) {
        return Ok(password);
    }
    rpassword::prompt_password(format!("Password for key `{name}`: ")).map_err(|source| {
        KeyError::NoTerminal {
            name: name.into(),
            source,
        }
    })
}

fn check_name(name: &str) -> Result<(), KeyError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
    ok.then_some(())
        .ok_or_else(|| KeyError::BadName(name.into()))
}

/// Writes `bytes` readable by the owner only, and syncs them.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn io(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_unlock_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(&dir.path().join("keys"));
        assert!(store.list().unwrap().is_empty());
        let address = store.create("alice", "correct horse").unwrap();
        assert_eq!(store.list().unwrap(), vec![("alice".to_string(), address)]);
        assert_eq!(
            store.unlock("alice", "correct horse").unwrap().address(),
            address
        );

        // A standard v3 keystore with geth's address field, named `<name>.json`, nothing else.
        let names: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["alice.json"]);
        let file: serde_json::Value =
            serde_json::from_slice(&fs::read(store.dir().join("alice.json")).unwrap()).unwrap();
        assert_eq!(file["version"], 3);
        assert_eq!(file["crypto"]["kdf"], "scrypt");
        assert_eq!(file["address"], hex::encode(address));

        let wrong = store.unlock("alice", "hunter2").unwrap_err();
        assert!(matches!(wrong, KeyError::WrongPassword { .. }), "{wrong}");
        let message = format!("{wrong} {wrong:?}");
        assert!(
            message.contains("alice") && message.contains("keys"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        assert!(matches!(
            store.create("alice", "other"),
            Err(KeyError::Exists { .. })
        ));
        assert!(matches!(
            store.unlock("bob", "x"),
            Err(KeyError::Missing { .. })
        ));
        for bad in ["", "Alice", "a/b", "../x", &"a".repeat(65)] {
            assert!(
                matches!(store.create(bad, "pw"), Err(KeyError::BadName(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            store.create("carol", ""),
            Err(KeyError::EmptyPassword(_))
        ));
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path());
        fs::write(dir.path().join("junk.json"), "{not json").unwrap();
        fs::write(
            dir.path().join("short.json"),
            r#"{"crypto":{"cipherparams":{"iv":"00"},"kdfparams":{"dklen":32}}}"#,
        )
        .unwrap();
        for name in ["junk", "short"] {
            let e = store.unlock(name, "pw").unwrap_err();
            assert!(matches!(e, KeyError::Corrupt { .. }), "{e}");
        }
        assert!(matches!(store.list(), Err(KeyError::Corrupt { .. })));
    }
}
