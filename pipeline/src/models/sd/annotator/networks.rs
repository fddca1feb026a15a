//! Annotator networks loaded once and shared: a build's assets that run the same file, or the
//! editor's thumbnails, load it the first time and reuse it after (Depth Anything's ViT-L is
//! 1.3 GB).

use std::collections::HashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// The loaded networks of one kind, by what they were loaded from.
type Cache<K, T> = Mutex<HashMap<K, Arc<T>>>;

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

/// The network in `cache` under `key`, loaded by `load` the first time. The lock is held while
/// it loads, so two assets asking at once load it once.
fn cached<K: Eq + Hash, T>(
    cache: &Cache<K, T>,
    key: K,
    load: impl FnOnce() -> Result<T, SdError>,
) -> Result<Arc<T>, SdError> {
    // A panic while another thread held the lock leaves the map as it was: still usable.
    let mut loaded = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(network) = loaded.get(&key) {
        return Ok(network.clone());
    }
    let network = Arc::new(load()?);
    loaded.insert(key, network.clone());
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
            EdgeNetwork::Hed => cached(&self.hed, key, || Hed::load(path, &self.device))?
                .soft_edges(picture, safe)?,
            EdgeNetwork::PidiNet => {
                cached(&self.pidinet, key, || PidiNet::load(path, &self.device))?
                    .soft_edges(picture, safe)?
            }
        };
        Ok(match finish {
            EdgeFinish::Scribble => scribble::from_soft_edges(&edges),
            EdgeFinish::Soft | EdgeFinish::Safe => edges,
        })
    }

    /// The line-art generator in `path` (`sk_model.pth`).
    pub fn lineart(&self, path: &Path) -> Result<Arc<Lineart>, SdError> {
        cached(&self.lineart, path.to_path_buf(), || {
            Lineart::load(path, &self.device)
        })
    }

    /// The anime line-art U-Net in `path` (`netG.pth`).
    pub fn lineart_anime(&self, path: &Path) -> Result<Arc<LineartAnime>, SdError> {
        cached(&self.lineart_anime, path.to_path_buf(), || {
            LineartAnime::load(path, &self.device)
        })
    }

    /// The Depth Anything network in `path`, run as `version`.
    pub fn depth(&self, path: &Path, version: DepthVersion) -> Result<Arc<DepthAnything>, SdError> {
        cached(&self.depth, (path.to_path_buf(), version), || {
            DepthAnything::load(path, version, &self.device)
        })
    }

    /// The M-LSD network in `path` (`mlsd_large_512_fp32.pth`).
    pub fn mlsd(&self, path: &Path) -> Result<Arc<Mlsd>, SdError> {
        cached(&self.mlsd, path.to_path_buf(), || {
            Mlsd::load(path, &self.device)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_each_file_once_and_keeps_a_failure_out() {
        let cache: Cache<PathBuf, String> = Mutex::default();
        let mut loads = 0;
        for _ in 0..3 {
            let got = cached(&cache, PathBuf::from("a.pth"), || {
                loads += 1;
                Ok("network".to_string())
            })
            .unwrap();
            assert_eq!(*got, "network");
        }
        assert_eq!(loads, 1);
        let missing = cached(&cache, PathBuf::from("b.pth"), || {
            Err(SdError::MissingFile {
                path: PathBuf::from("b.pth"),
            })
        });
        assert!(missing.is_err());
        let later = cached(&cache, PathBuf::from("b.pth"), || {
            Ok("now there".to_string())
        });
        assert_eq!(*later.unwrap(), "now there");
    }
}
