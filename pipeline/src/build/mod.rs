//! Building a folder of recipes: each asset is generated once per cache key, written beside its
//! recipe with a provenance manifest, and made again only when something that decides its
//! bytes changes (the recipe, the model's weights, the generator code, an input file).
//!
//! Every file is written atomically and the cache entry appears in one rename, so killing a
//! build at any moment leaves each asset either as it was or complete.

pub mod cache;
pub mod produce;
pub mod provenance;

use image::RgbaImage;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::generator::Generator;
use crate::models::house::{HouseModel, files};
use crate::post::Palette;
use crate::recipe::{self, AssetRecipe, ModelRef, RecipeSet, Source};
use cache::{Cache, KeyParts};
use produce::{Inputs, Produced};
use provenance::{FileHash, Manifest, Parent};

/// Suffix of the provenance sidecar written beside an asset.
pub const MANIFEST_SUFFIX: &str = ".prov.json";

/// How to build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The recipe root: recipes are found below it and outputs are written beside them.
    pub root: PathBuf,
    /// The cache folder (default `<root>/.autonomy/cache`).
    pub cache_dir: PathBuf,
    /// The model folder `model = "house"` means.
    pub house_dir: PathBuf,
    /// Where models run.
    pub device: candle_core::Device,
    /// Make every asset again, even when its cache entry exists.
    pub force: bool,
    /// Assets generated at once (1 uses every core for one asset at a time).
    pub jobs: usize,
    /// The creator's key: manifests name its address and carry its signature.
    pub signer: Option<alloy_signer_local::PrivateKeySigner>,
}

impl BuildOptions {
    /// Defaults for a recipe root: cache in `<root>/.autonomy/cache`, CPU, one job.
    pub fn new(root: &Path, house_dir: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            cache_dir: root.join(".autonomy").join("cache"),
            house_dir: house_dir.to_path_buf(),
            device: candle_core::Device::Cpu,
            force: false,
            jobs: 1,
            signer: None,
        }
    }
}

/// What happened to one asset.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Generated now, in this many seconds.
    Built(f64),
    /// Taken from the cache (its outputs were missing or stale).
    Restored,
    /// Its outputs were already up to date.
    UpToDate,
    /// It failed; the message says why.
    Failed(String),
}

/// A progress event.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Work on an asset starts (generation, unless it is cached).
    Started {
        /// Asset name.
        asset: String,
    },
    /// An asset is done.
    Finished {
        /// Asset name.
        asset: String,
        /// How.
        outcome: Outcome,
    },
}

/// One asset's part in a build.
#[derive(Clone, Debug, PartialEq)]
pub struct AssetResult {
    /// `folder/name` (see [`label`]).
    pub label: String,
    /// What happened.
    pub outcome: Outcome,
    /// The files it has beside its recipe (root-relative, the manifest sidecar among them);
    /// empty when it failed.
    pub files: Vec<PathBuf>,
}

/// The result of a build.
#[derive(Debug, Default)]
pub struct BuildReport {
    /// Every buildable asset, in build order.
    pub assets: Vec<AssetResult>,
    /// Recipe errors (those assets were not built).
    pub recipe_errors: Vec<recipe::RecipeError>,
}

impl BuildReport {
    /// Whether anything failed (a recipe error or an asset).
    pub fn failed(&self) -> bool {
        !self.recipe_errors.is_empty()
            || self
                .assets
                .iter()
                .any(|a| matches!(a.outcome, Outcome::Failed(_)))
    }

    /// How many assets ended with an outcome like `probe`.
    pub fn count(&self, probe: fn(&Outcome) -> bool) -> usize {
        self.assets.iter().filter(|a| probe(&a.outcome)).count()
    }
}

/// What can fail while building.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The cache or an output could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An asset could not be made; the message says why.
    #[error("{asset} ({file}): {message}")]
    Asset {
        /// Asset name.
        asset: String,
        /// Its recipe file.
        file: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An image could not be encoded.
    #[error("cannot encode {file}: {message}")]
    Encode {
        /// Output file name.
        file: String,
        /// The cause.
        message: String,
    },
    /// A manifest could not be made.
    #[error(transparent)]
    Provenance(#[from] provenance::ProvenanceError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Builds every recipe under `options.root`; `on_event` sees progress.
pub fn build(
    options: &BuildOptions,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<BuildReport, BuildError> {
    let set = recipe::load_dir(&options.root);
    build_set(options, &set, on_event)
}

/// Builds the recipes of an already loaded set (a watcher reloads it itself).
pub fn build_set(
    options: &BuildOptions,
    set: &RecipeSet,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<BuildReport, BuildError> {
    let cache = Cache::open(&options.cache_dir).map_err(io(&options.cache_dir))?;
    let builder = Builder {
        options,
        cache,
        set,
        models: Mutex::new(HashMap::new()),
        weights: Mutex::new(HashMap::new()),
        manifests: Mutex::new(HashMap::new()),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.jobs.max(1))
        .build()
        .map_err(|e| BuildError::Io {
            path: options.root.clone(),
            source: std::io::Error::other(e),
        })?;
    let mut report = BuildReport {
        recipe_errors: set.errors.clone(),
        ..Default::default()
    };
    for level in levels(set) {
        let outcomes: Vec<AssetResult> = pool.install(|| {
            level
                .par_iter()
                .map(|recipe| {
                    let (outcome, files) = match builder.asset(recipe, on_event) {
                        Ok((outcome, files)) => (outcome, files),
                        Err(e) => (Outcome::Failed(e.to_string()), Vec::new()),
                    };
                    on_event(Event::Finished {
                        asset: recipe.name.clone(),
                        outcome: outcome.clone(),
                    });
                    AssetResult {
                        label: label(recipe),
                        outcome,
                        files,
                    }
                })
                .collect()
        });
        report.assets.extend(outcomes);
    }
    Ok(report)
}

/// `folder/name` of an asset (just `name` at the root).
pub fn label(recipe: &AssetRecipe) -> String {
    let dir = recipe.output_dir();
    if dir.as_os_str().is_empty() {
        recipe.name.clone()
    } else {
        format!("{}/{}", slash(&dir), recipe.name)
    }
}

/// Groups the build order into levels whose members do not depend on each other.
fn levels(set: &RecipeSet) -> Vec<Vec<&AssetRecipe>> {
    let mut depth: HashMap<String, usize> = HashMap::new();
    let mut levels: Vec<Vec<&AssetRecipe>> = Vec::new();
    for recipe in set.build_order() {
        let level = match recipe.img2img.as_ref().map(|i| &i.source) {
            Some(Source::Recipe(reference)) => set
                .source_of(recipe, reference)
                .and_then(|parent| depth.get(&label(parent)))
                .map_or(0, |d| d + 1),
            _ => 0,
        };
        depth.insert(label(recipe), level);
        if levels.len() <= level {
            levels.resize_with(level + 1, Vec::new);
        }
        levels[level].push(recipe);
    }
    levels
}

struct Builder<'a> {
    options: &'a BuildOptions,
    cache: Cache,
    set: &'a RecipeSet,
    models: Mutex<HashMap<PathBuf, Arc<HouseModel>>>,
    weights: Mutex<HashMap<PathBuf, String>>,
    /// Manifests of assets built in this run, by label (for `recipe:` parents).
    manifests: Mutex<HashMap<String, Manifest>>,
}

impl Builder<'_> {
    fn asset(
        &self,
        recipe: &AssetRecipe,
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Result<(Outcome, Vec<PathBuf>), BuildError> {
        let fail = |message: String| BuildError::Asset {
            asset: recipe.name.clone(),
            file: recipe.file.clone(),
            message,
        };
        let model_dir = self.model_dir(recipe).map_err(fail)?;
        let weights = self.weights_sha256(&model_dir).map_err(fail)?;
        let (source, parents) = self.source(recipe)?;
        let palette = self.palette(recipe)?;
        let canonical = recipe.canonical();
        let generator = crate::generator::generator_version("house");
        let device = device_name(&self.options.device);
        let mut inputs: Vec<String> = parents.iter().map(|p| p.sha256.clone()).collect();
        if let Some(palette) = &palette {
            inputs.push(format!("{:?}", palette.colors()));
        }
        if let Some(signer) = &self.options.signer {
            inputs.push(format!("creator:{}", signer.address()));
        }
        let key = KeyParts {
            recipe: &canonical,
            weights_sha256: &weights,
            generator: &generator,
            device: &device,
            inputs,
        }
        .key();
        let out_dir = self.options.root.join(recipe.output_dir());

        if !self.options.force
            && let Some(entry) = self.cache.get(&key)
        {
            let manifest = self.read_manifest(&self.cache.path(&key), recipe)?;
            self.remember(recipe, manifest);
            let changed = install(&self.cache.path(&key), &entry.files, &out_dir)?;
            let outcome = if changed {
                Outcome::Restored
            } else {
                Outcome::UpToDate
            };
            return Ok((outcome, installed(recipe, &entry.files)));
        }

        on_event(Event::Started {
            asset: recipe.name.clone(),
        });
        let started = Instant::now();
        let model = self.model(&model_dir).map_err(fail)?;
        let staged = self.cache.stage().map_err(io(&self.options.cache_dir))?;
        let produced = produce::produce(
            recipe,
            &Inputs {
                generator: model.as_ref(),
                source,
                palette,
                scratch: &staged,
            },
        )?;
        let mut manifest = Manifest {
            schema: provenance::SCHEMA.into(),
            asset: recipe.name.clone(),
            outputs: produced
                .iter()
                .map(|p| FileHash::of(&p.file, &p.bytes))
                .collect(),
            recipe: canonical,
            recipe_file: slash(&recipe.file),
            model: model.identity().clone(),
            device,
            parents,
            creator: None,
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            signature: None,
        };
        if let Some(signer) = &self.options.signer {
            provenance::sign(&mut manifest, signer)?;
        }
        let files = stage(&staged, &produced, &manifest, &recipe.name)?;
        let entry = self
            .cache
            .commit(&staged, &key, files, self.options.force)
            .map_err(io(&staged))?;
        self.remember(recipe, manifest);
        install(&self.cache.path(&key), &entry.files, &out_dir)?;
        Ok((
            Outcome::Built(started.elapsed().as_secs_f64()),
            installed(recipe, &entry.files),
        ))
    }

    fn remember(&self, recipe: &AssetRecipe, manifest: Manifest) {
        if let Ok(mut manifests) = self.manifests.lock() {
            manifests.insert(label(recipe), manifest);
        }
    }

    fn read_manifest(&self, dir: &Path, recipe: &AssetRecipe) -> Result<Manifest, BuildError> {
        let path = dir.join(format!("{}{MANIFEST_SUFFIX}", recipe.name));
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| BuildError::Provenance(e.into()))
    }

    fn model_dir(&self, recipe: &AssetRecipe) -> Result<PathBuf, String> {
        match &recipe.model {
            ModelRef::House => Ok(self.options.house_dir.clone()),
            ModelRef::Folder(dir) => Ok(self.options.root.join(dir)),
            ModelRef::Registry(name) => Err(format!(
                "`model = \"registry:{name}\"`: registry models need the chain, which this build does not use yet; name a model folder instead"
            )),
        }
    }

    /// sha256 of a model folder's weights, hashed once per build without loading the model.
    fn weights_sha256(&self, dir: &Path) -> Result<String, String> {
        if let Some(known) = self.weights.lock().ok().and_then(|w| w.get(dir).cloned()) {
            return Ok(known);
        }
        let path = dir.join(files::WEIGHTS);
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("cannot read the model weights `{}`: {e}", path.display()))?;
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        if let Ok(mut w) = self.weights.lock() {
            w.insert(dir.to_path_buf(), hash.clone());
        }
        Ok(hash)
    }

    fn model(&self, dir: &Path) -> Result<Arc<HouseModel>, String> {
        let mut models = self
            .models
            .lock()
            .map_err(|_| "a model load panicked".to_string())?;
        if let Some(model) = models.get(dir) {
            return Ok(model.clone());
        }
        let model = Arc::new(
            HouseModel::load(dir, &self.options.device).map_err(|e| format!("model: {e}"))?,
        );
        models.insert(dir.to_path_buf(), model.clone());
        Ok(model)
    }

    /// The decoded img2img source and the parent record for the manifest.
    fn source(&self, recipe: &AssetRecipe) -> Result<(Option<RgbaImage>, Vec<Parent>), BuildError> {
        let fail = |message: String| BuildError::Asset {
            asset: recipe.name.clone(),
            file: recipe.file.clone(),
            message,
        };
        let Some(img2img) = &recipe.img2img else {
            return Ok((None, Vec::new()));
        };
        let (path, reference) = match &img2img.source {
            Source::File(file) => (
                self.options.root.join(file),
                format!("file:{}", slash(file)),
            ),
            Source::Recipe(name) => {
                let parent = self
                    .set
                    .source_of(recipe, name)
                    .ok_or_else(|| fail(format!("`source`: no asset `{name}`")))?;
                let manifest = self
                    .manifests
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&label(parent)).cloned())
                    .ok_or_else(|| fail(format!("`source`: `{name}` was not built")))?;
                let main = manifest
                    .outputs
                    .iter()
                    .find(|o| o.file.ends_with(".png"))
                    .ok_or_else(|| fail(format!("`source`: `{name}` made no PNG to start from")))?;
                (
                    self.options.root.join(parent.output_dir()).join(&main.file),
                    format!("recipe:{}", label(parent)),
                )
            }
        };
        let bytes = std::fs::read(&path)
            .map_err(|e| fail(format!("`source` `{}`: {e}", path.display())))?;
        let content = match provenance::strip_png(&bytes) {
            Ok((content, _)) => content,
            Err(_) => bytes.clone(),
        };
        let image = image::load_from_memory(&bytes)
            .map_err(|e| {
                fail(format!(
                    "`source` `{}` is not an image: {e}",
                    path.display()
                ))
            })?
            .to_rgba8();
        let hash = FileHash::of(&reference, &content);
        Ok((
            Some(image),
            vec![Parent {
                reference,
                sha256: hash.sha256,
                cid: hash.cid,
                role: "source".into(),
            }],
        ))
    }

    fn palette(&self, recipe: &AssetRecipe) -> Result<Option<Palette>, BuildError> {
        let fail = |message: String| BuildError::Asset {
            asset: recipe.name.clone(),
            file: recipe.file.clone(),
            message,
        };
        match recipe.pixel_art.as_ref().map(|a| &a.palette) {
            Some(recipe::Palette::Hex(colors)) => {
                let hex: Vec<String> = colors.iter().map(hex::encode).collect();
                let hex: Vec<&str> = hex.iter().map(String::as_str).collect();
                Palette::from_hex_list(&hex)
                    .map(Some)
                    .map_err(|e| fail(format!("`pixel_art.palette`: {e}")))
            }
            Some(recipe::Palette::File(file)) => {
                let path = self.options.root.join(file);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| fail(format!("`pixel_art.palette` `{}`: {e}", path.display())))?;
                Palette::parse_file(&text, &path)
                    .map(Some)
                    .map_err(|e| fail(format!("`pixel_art.palette`: {e}")))
            }
            _ => Ok(None),
        }
    }
}

/// Writes an asset's files and its manifest into a staging folder (the manifest embedded in
/// every PNG and as the sidecar); returns the file names.
fn stage(
    dir: &Path,
    produced: &[Produced],
    manifest: &Manifest,
    name: &str,
) -> Result<Vec<String>, BuildError> {
    let json = manifest.to_json()?;
    let mut files = Vec::with_capacity(produced.len() + 1);
    for p in produced {
        let bytes = if p.file.ends_with(".png") {
            provenance::embed_png(&p.bytes, &json)?
        } else {
            p.bytes.clone()
        };
        let path = dir.join(&p.file);
        std::fs::write(&path, bytes).map_err(io(&path))?;
        files.push(p.file.clone());
    }
    let sidecar = format!("{name}{MANIFEST_SUFFIX}");
    let path = dir.join(&sidecar);
    std::fs::write(&path, &json).map_err(io(&path))?;
    files.push(sidecar);
    Ok(files)
}

/// Copies a cache entry's files beside the recipe (atomically, each), skipping files already
/// identical; the sidecar manifest goes last, so it never describes files not yet there.
/// Returns whether any file changed.
fn install(entry: &Path, files: &[String], out_dir: &Path) -> Result<bool, BuildError> {
    let mut changed = false;
    let mut ordered: Vec<&String> = files.iter().collect();
    ordered.sort_by_key(|f| f.ends_with(MANIFEST_SUFFIX));
    for file in ordered {
        let from = entry.join(file);
        let to = out_dir.join(file);
        let bytes = std::fs::read(&from).map_err(io(&from))?;
        if std::fs::read(&to).ok().as_deref() == Some(&bytes[..]) {
            continue;
        }
        crate::atomic::write(&to, &bytes).map_err(io(&to))?;
        changed = true;
    }
    Ok(changed)
}

/// Root-relative paths of an asset's files.
fn installed(recipe: &AssetRecipe, files: &[String]) -> Vec<PathBuf> {
    files.iter().map(|f| recipe.output_dir().join(f)).collect()
}

fn device_name(device: &candle_core::Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

fn slash(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
