//! Building a folder of recipes: each asset is generated once per cache key, written beside its
//! recipe with a provenance manifest, and made again only when something that decides its
//! bytes changes (the recipe, the model's weights, the generator code, an input file).
//!
//! Every file is written atomically and the cache entry appears in one rename, so killing a
//! build at any moment leaves each asset either as it was or complete.

pub mod cache;
pub mod produce;
pub mod provenance;
pub mod workshop;

use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::credentials::{self, CredentialsError, certificate::LocalChain};
use crate::recipe::{self, AssetRecipe, RecipeSet, Source};
use cache::{Cache, KeyParts};
use produce::Produced;
use provenance::{FileHash, Manifest, Parent};
use workshop::Workshop;

/// The role of a manifest parent that is the asset's earlier version, not an input.
pub const PREVIOUS_ROLE: &str = "previous";

/// Suffix of the provenance sidecar written beside an asset.
pub const MANIFEST_SUFFIX: &str = ".prov.json";

/// Revision of the Content Credentials signed builds add; part of their cache keys, so a
/// change to what is embedded rebuilds them.
const CREDENTIALS_REVISION: &str = "c2pa/1";

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
    /// Local folders of the registry models recipes name (`model = "registry:<name>"`): the
    /// folder holding the weights of each model's active version, as the caller resolved it
    /// from the chain.
    pub registry: BTreeMap<String, PathBuf>,
    /// The project's model folders: a prompt's LoRA tags (`<lora:name:0.8>`) name files
    /// found there or beside the model ([`crate::models::locate::lora_named`]).
    pub model_dirs: Vec<PathBuf>,
}

impl BuildOptions {
    /// Defaults for a recipe root: cache in `<root>/.autonomy/cache`, CPU, one job, no model
    /// folders but the one beside each model.
    pub fn new(root: &Path, house_dir: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            cache_dir: root.join(".autonomy").join("cache"),
            house_dir: house_dir.to_path_buf(),
            device: candle_core::Device::Cpu,
            force: false,
            jobs: 1,
            signer: None,
            registry: BTreeMap::new(),
            model_dirs: Vec::new(),
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
    /// Content Credentials could not be made.
    #[error("Content Credentials: {0}")]
    Credentials(#[from] CredentialsError),
}

impl BuildError {
    /// A [`BuildError::Asset`] error of `recipe`.
    pub(crate) fn asset(recipe: &AssetRecipe, message: String) -> Self {
        Self::Asset {
            asset: recipe.name.clone(),
            file: recipe.file.clone(),
            message,
        }
    }
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
    let credentials = match &options.signer {
        Some(signer) => Some(LocalChain::for_creator(signer).map_err(CredentialsError::from)?),
        None => None,
    };
    let builder = Builder {
        options,
        cache,
        workshop: Workshop::new(options, set),
        credentials,
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

/// The asset this build replaces, when one with other content lies beside the recipe: the new
/// manifest names it as its `previous` parent (e.g. after the model it was made with changed).
fn previous_version(out_dir: &Path, recipe: &AssetRecipe, produced: &[Produced]) -> Option<Parent> {
    let sidecar = out_dir.join(format!("{}{MANIFEST_SUFFIX}", recipe.name));
    let old: Manifest = serde_json::from_slice(&std::fs::read(sidecar).ok()?).ok()?;
    let old_main = old.outputs.first()?;
    let new_main = produced.first().map(|p| FileHash::of(&p.file, &p.bytes))?;
    (old_main.sha256 != new_main.sha256).then(|| Parent {
        reference: format!("file:{}", slash(&recipe.output_dir().join(&old_main.file))),
        sha256: old_main.sha256.clone(),
        cid: old_main.cid.clone(),
        role: PREVIOUS_ROLE.into(),
    })
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
    workshop: Workshop<'a>,
    /// The creator's certificate chain for Content Credentials (signed builds only).
    credentials: Option<LocalChain>,
}

impl Builder<'_> {
    fn asset(
        &self,
        recipe: &AssetRecipe,
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Result<(Outcome, Vec<PathBuf>), BuildError> {
        let ingredients = self.workshop.ingredients(recipe)?;
        let canonical = recipe.canonical();
        let mut inputs: Vec<String> = ingredients
            .parents
            .iter()
            .map(|p| p.sha256.clone())
            .collect();
        if let Some(palette) = &ingredients.palette {
            inputs.push(format!("{:?}", palette.colors()));
        }
        for lora in &ingredients.loras {
            let mut input = format!("lora:{}:{}", lora.sha256, lora.scale);
            if let Some(text) = lora.text_scale {
                input += &format!(":te{text}");
            }
            if let Some(rank) = lora.rank {
                input += &format!(":dyn{rank}");
            }
            if let Some(blocks) = &lora.blocks {
                let ratios: Vec<String> = blocks.iter().map(f64::to_string).collect();
                input += &format!(":lbw{}", ratios.join(","));
            }
            inputs.push(input);
        }
        for embedding in &ingredients.embeddings {
            inputs.push(format!("embedding:{}", embedding.sha256));
        }
        for hypernetwork in &ingredients.hypernetworks {
            inputs.push(format!(
                "hypernetwork:{}:{}",
                hypernetwork.sha256, hypernetwork.multiplier
            ));
        }
        if let Some(vae) = &ingredients.vae {
            inputs.push(format!("vae:{}", vae.sha256));
        }
        if let Some(refiner) = &ingredients.refiner {
            inputs.push(format!("refiner:{}", refiner.weights_sha256));
        }
        if let Some(upscaler) = &ingredients.upscaler {
            inputs.push(format!("upscaler:{}", upscaler.sha256));
        }
        for controlnet in &ingredients.controlnets {
            inputs.push(format!("controlnet:{}", controlnet.sha256));
        }
        if let Some(signer) = &self.options.signer {
            inputs.push(format!("creator:{}", signer.address()));
            inputs.push(format!("content-credentials:{CREDENTIALS_REVISION}"));
        }
        let key = KeyParts {
            recipe: &canonical,
            weights_sha256: &ingredients.weights_sha256,
            generator: &ingredients.generator,
            device: &ingredients.device,
            inputs,
        }
        .key();
        let out_dir = self.options.root.join(recipe.output_dir());

        if !self.options.force
            && let Some(entry) = self.cache.get(&key)
        {
            let manifest = self.read_manifest(&self.cache.path(&key), recipe)?;
            self.workshop.remember(recipe, manifest);
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
        let staged = self.cache.stage().map_err(io(&self.options.cache_dir))?;
        let (model, produced) = self.workshop.make(recipe, &ingredients, &staged)?;
        let mut parents = ingredients.parents;
        parents.extend(previous_version(&out_dir, recipe, &produced));
        let mut manifest = Manifest {
            schema: provenance::SCHEMA.into(),
            asset: recipe.name.clone(),
            outputs: produced
                .iter()
                .map(|p| FileHash::of(&p.file, &p.bytes))
                .collect(),
            recipe: canonical,
            recipe_file: slash(&recipe.file),
            model,
            device: ingredients.device,
            parents,
            creator: None,
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            signature: None,
        };
        if let Some(signer) = &self.options.signer {
            provenance::sign(&mut manifest, signer)?;
        }
        let files = stage(
            &staged,
            &produced,
            &manifest,
            &recipe.name,
            self.credentials.as_ref(),
        )?;
        let entry = self
            .cache
            .commit(&staged, &key, files, self.options.force)
            .map_err(io(&staged))?;
        self.workshop.remember(recipe, manifest);
        install(&self.cache.path(&key), &entry.files, &out_dir)?;
        Ok((
            Outcome::Built(started.elapsed().as_secs_f64()),
            installed(recipe, &entry.files),
        ))
    }

    fn read_manifest(&self, dir: &Path, recipe: &AssetRecipe) -> Result<Manifest, BuildError> {
        let path = dir.join(format!("{}{MANIFEST_SUFFIX}", recipe.name));
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| BuildError::Provenance(e.into()))
    }
}

/// Writes an asset's files and its manifest into a staging folder (the manifest embedded in
/// every PNG and GIF, and as the sidecar; with `credentials`, each PNG and GIF also gets C2PA
/// Content Credentials over it); returns the file names.
fn stage(
    dir: &Path,
    produced: &[Produced],
    manifest: &Manifest,
    name: &str,
    credentials: Option<&LocalChain>,
) -> Result<Vec<String>, BuildError> {
    let json = manifest.to_json()?;
    let mut files = Vec::with_capacity(produced.len() + 1);
    for p in produced {
        let path = dir.join(&p.file);
        let bytes = match provenance::Carrier::of(&p.file) {
            Some(carrier) => {
                let embedded = carrier.embed(&p.bytes, &json)?;
                match credentials {
                    Some(chain) => credentials::sign(&embedded, carrier, manifest, chain)?,
                    None => embedded,
                }
            }
            None => p.bytes.clone(),
        };
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

fn slash(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
