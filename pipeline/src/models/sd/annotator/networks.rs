//! Annotator networks loaded once and shared: a build's assets that run the same file, or the
//! editor's thumbnails, load it the first time and reuse it after (Depth Anything's ViT-L is
//! 1.3 GB) — until the file changes: a file modified since it was loaded is loaded again.

use std::collections::HashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use candle_core::Device;
use image::{GrayImage, RgbImage};

use super::super::SdError;
use super::depth_anything::{DepthAnything, DepthVersion};
use super::hed::Hed;
use super::lineart::Lineart;
use super::lineart_anime::LineartAnime;
use super::mlsd::Mlsd;
use super::pidinet::PidiNet;
use super::{EdgeFinish, EdgeNetwork, scribble};

/// The loaded networks of one kind, by what they were loaded from, each with its file's
/// modification time then.
type Cache<K, T> = Mutex<HashMap<K, (Option<SystemTime>, Arc<T>)>>;

/// The annotator networks loaded onto one device, by file.
pub struct Networks {
    device: Device,
    hed: Cache<PathBuf, Hed>,
    pidinet: Cache<PathBuf, PidiNet>,
    lineart: Cache<PathBuf, Lineart>,
    lineart_anime: Cache<PathBuf, LineartAnime>,
    depth: Cache<(PathBuf, DepthVersion), DepthAnything>,
    mlsd: Cache<PathBuf, Mlsd>,
}

/// The network in `cache` under `key`, loaded from `file` by `load` the first time and again
/// when the file was modified since (replacing the old one). The lock is held while it loads,
/// so two assets asking at once load it once.
fn cached<K: Eq + Hash, T>(
    cache: &Cache<K, T>,
    key: K,
    file: &Path,
    load: impl FnOnce() -> Result<T, SdError>,
) -> Result<Arc<T>, SdError> {
    let stamp = std::fs::metadata(file).and_then(|m| m.modified()).ok();
    // A panic while another thread held the lock leaves the map as it was: still usable.
    let mut loaded = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((seen, network)) = loaded.get(&key)
        && *seen == stamp
    {
        return Ok(network.clone());
    }
    let network = Arc::new(load()?);
    loaded.insert(key, (stamp, network.clone()));
    Ok(network)
}

impl Networks {
    /// None loaded yet; each loads onto `device`.
    pub fn new(device: &Device) -> Self {
        Self {
            device: device.clone(),
            hed: Mutex::default(),
            pidinet: Mutex::default(),
            lineart: Mutex::default(),
            lineart_anime: Mutex::default(),
            depth: Mutex::default(),
            mlsd: Mutex::default(),
        }
    }

    /// The device they run on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// What the soft-edge `network` in `path` makes of `picture`, finished by `finish`.
    pub fn soft_edges(
        &self,
        network: EdgeNetwork,
        path: &Path,
        finish: EdgeFinish,
        picture: &RgbImage,
    ) -> Result<GrayImage, SdError> {
        let safe = finish == EdgeFinish::Safe;
        let key = path.to_path_buf();
        let edges = match network {
            EdgeNetwork::Hed => cached(&self.hed, key, path, || Hed::load(path, &self.device))?
                .soft_edges(picture, safe)?,
            EdgeNetwork::PidiNet => cached(&self.pidinet, key, path, || {
                PidiNet::load(path, &self.device)
            })?
            .soft_edges(picture, safe)?,
        };
        Ok(match finish {
            EdgeFinish::Scribble => scribble::from_soft_edges(&edges),
            EdgeFinish::Soft | EdgeFinish::Safe => edges,
        })
    }

    /// The line-art generator in `path` (`sk_model.pth`).
    pub fn lineart(&self, path: &Path) -> Result<Arc<Lineart>, SdError> {
        cached(&self.lineart, path.to_path_buf(), path, || {
            Lineart::load(path, &self.device)
        })
    }

    /// The anime line-art U-Net in `path` (`netG.pth`).
    pub fn lineart_anime(&self, path: &Path) -> Result<Arc<LineartAnime>, SdError> {
        cached(&self.lineart_anime, path.to_path_buf(), path, || {
            LineartAnime::load(path, &self.device)
        })
    }

    /// The Depth Anything network in `path`, run as `version`.
    pub fn depth(&self, path: &Path, version: DepthVersion) -> Result<Arc<DepthAnything>, SdError> {
        cached(&self.depth, (path.to_path_buf(), version), path, || {
            DepthAnything::load(path, version, &self.device)
        })
    }

    /// The M-LSD network in `path` (`mlsd_large_512_fp32.pth`).
    pub fn mlsd(&self, path: &Path) -> Result<Arc<Mlsd>, SdError> {
        cached(&self.mlsd, path.to_path_buf(), path, || {
            Mlsd::load(path, &self.device)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_each_file_once_until_it_changes_and_keeps_a_failure_out() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("a.pth");
        std::fs::write(&file, b"first").unwrap();
        let cache: Cache<PathBuf, String> = Mutex::default();
        let mut loads = 0;
        let mut load = || {
            cached(&cache, file.clone(), &file, || {
                loads += 1;
                Ok(std::fs::read_to_string(&file).unwrap())
            })
            .unwrap()
        };
        for _ in 0..3 {
            assert_eq!(*load(), "first");
        }
        // Rewritten, with a later modification time: loaded again, in the old one's place.
        std::fs::write(&file, b"second").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(*load(), "second");
        assert_eq!(*load(), "second");
        assert_eq!(loads, 2);
        assert_eq!(cache.lock().unwrap().len(), 1);
        let missing = folder.path().join("b.pth");
        let failed = cached(&cache, missing.clone(), &missing, || {
            Err(SdError::MissingFile {
                path: missing.clone(),
            })
        });
        assert!(failed.is_err());
        let later = cached(&cache, missing.clone(), &missing, || {
            Ok("now there".to_string())
        });
        assert_eq!(*later.unwrap(), "now there");
    }
}
