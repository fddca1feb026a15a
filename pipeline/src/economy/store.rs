//! The content store: files kept under their CID (CIDv1, raw, sha2-256), written once, atomically,
//! and pushed to an IPFS node when the project names one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::EconomyError;
use super::ipfs::IpfsNode;
use crate::atomic;
use crate::build::provenance::cid_of_digest;

/// A folder of content-addressed files, optionally mirrored to an IPFS node.
#[derive(Debug, Clone)]
pub struct ContentStore {
    dir: PathBuf,
    ipfs: Option<Arc<IpfsNode>>,
}

impl ContentStore {
    /// The store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            ipfs: None,
        }
    }

    /// The same store, with [`ContentStore::push`] sending files to `node`.
    pub fn with_ipfs(self, node: IpfsNode) -> Self {
        Self {
            ipfs: Some(Arc::new(node)),
            ..self
        }
    }

    /// The IPFS node files are pushed to, if any.
    pub fn ipfs(&self) -> Option<&IpfsNode> {
        self.ipfs.as_deref()
    }

    /// Pins the stored `cid` on the IPFS node under the same CID (nothing to do without a node).
    /// Pushing again is harmless.
    pub fn push(&self, cid: &str) -> Result<(), EconomyError> {
        match &self.ipfs {
            Some(node) => node.put_block(cid, &self.get(cid)?),
            None => Ok(()),
        }
    }

    /// Stores `bytes` and returns their CID; storing the same bytes again is free.
    pub fn put(&self, bytes: &[u8]) -> Result<String, EconomyError> {
        let cid = cid_of_digest(&Sha256::digest(bytes));
        let path = self.path(&cid);
        if !path.exists() {
            std::fs::create_dir_all(&self.dir).map_err(|source| EconomyError::Io {
                path: self.dir.clone(),
                source,
            })?;
            atomic::write(&path, bytes).map_err(|source| EconomyError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(cid)
    }

    /// The bytes stored under `cid`, checked against it.
    pub fn get(&self, cid: &str) -> Result<Vec<u8>, EconomyError> {
        let path = self.path(cid);
        let bytes = std::fs::read(&path).map_err(|source| EconomyError::Io {
            path: path.clone(),
            source,
        })?;
        if cid_of_digest(&Sha256::digest(&bytes)) != cid {
            return Err(EconomyError::Store(format!(
                "{} does not hash to its name",
                path.display()
            )));
        }
        Ok(bytes)
    }

    /// Where `cid` is (or would be) kept.
    pub fn path(&self, cid: &str) -> PathBuf {
        self.dir.join(cid)
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_goes_in_once_and_comes_back_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::new(dir.path().join("store"));
        let cid = store.put(b"hello").unwrap();
        assert!(cid.starts_with("bafkrei"), "{cid}");
        assert_eq!(store.put(b"hello").unwrap(), cid);
        assert_eq!(store.get(&cid).unwrap(), b"hello");
        std::fs::write(store.path(&cid), b"jello").unwrap();
        assert!(
            store
                .get(&cid)
                .unwrap_err()
                .to_string()
                .contains("does not hash")
        );
    }
}
