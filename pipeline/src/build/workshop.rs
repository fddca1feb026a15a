//! Making one asset's files from its recipe, with no cache: resolving what it is made from
//! ([`Ingredients`]: the model, the img2img source, the palette) and generating. A build
//! caches and installs what the [`Workshop`] makes; a reproduction compares it with the
//! manifest.

use image::{GrayImage, RgbImage, RgbaImage};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::produce::{self, Inputs, Produced};
use super::provenance::{Carrier, FileHash, Manifest, Parent};
use super::{BuildError, BuildOptions, label, slash};
use crate::generator::{
    ControlNetUse, EmbeddingUse, Generator, HypernetworkUse, LoraUse, ModelIdentity, RefinerUse,
    UpscalerUse, VaeUse,
};
use crate::models::locate;
use crate::models::sd::annotator::Networks;
use crate::models::sd::block_weights::BlockWeights;
use crate::models::sd::controlnet::ControlNetFile;
use crate::models::sd::embedding::EmbeddingFile;
use crate::models::sd::hypernetwork::{HypernetworkFile, hypernet_tags};
use crate::models::sd::lora::{LoraFile, LoraSummary};
use crate::models::sd::lora_tags::lora_tags;
use crate::models::sd::upscaler::UpscalerFile;
use crate::models::sd::vae_file::VaeFile;
use crate::models::{self, Additions, Family, RefinerFile};
use crate::post::Palette;
use crate::recipe::{self, AssetRecipe, ModelRef, RecipeSet, Source, UpscalerRef};

/// Everything besides the recipe that decides an asset's bytes, resolved.
pub struct Ingredients {
    /// The model folder.
    pub model_dir: PathBuf,
    /// LoRAs merged into the model: the files as the recipe names them (then those its
    /// prompt's tags name, as found), their hashes and scales.
    pub loras: Vec<LoraUse>,
    /// Textual-inversion embeddings loaded with the model: the files as the recipe names
    /// them, their hashes.
    pub embeddings: Vec<EmbeddingUse>,
    /// A1111 hypernetworks its prompt's tags name, as found: the files, their hashes and
    /// multipliers.
    pub hypernetworks: Vec<HypernetworkUse>,
    /// The VAE used in place of the model's own: the file as the recipe names it, its hash.
    pub vae: Option<VaeUse>,
    /// The refiner that takes over the model's latents: as the recipe names it, its version,
    /// the switch point.
    pub refiner: Option<RefinerUse>,
    /// The upscaling model of the hires pass: the file as the recipe names it, its hash.
    pub upscaler: Option<UpscalerUse>,
    /// The ControlNets: the folders or files as the recipe names them, their hashes.
    pub controlnets: Vec<ControlNetUse>,
    /// Each ControlNet's picture as the recipe names it: its preprocessor (a network, for
    /// some) runs in [`Workshop::make`], only once the cache has missed.
    pub control_pictures: Vec<RgbImage>,
    /// sha256 (hex) of the model's weights.
    pub weights_sha256: String,
    /// The generator code version ([`crate::generator::generator_version`]).
    pub generator: String,
    /// Where the model runs ([`crate::device::name`]: `cpu (x86-64-v4, caches …)`, `cuda:0`).
    pub device: String,
    /// The decoded img2img start image.
    pub source: Option<RgbaImage>,
    /// The inpainting mask (white repainted, black kept).
    pub mask: Option<GrayImage>,
    /// The start image and the mask as the manifest records them (empty without img2img).
    pub parents: Vec<Parent>,
    /// The fixed palette (from the recipe or its file), if any.
    pub palette: Option<Palette>,
}

/// LoRA files with what each adapts ([`locate::lora_files`]).
type LoraListing = Vec<(PathBuf, LoraSummary)>;

/// Makes assets of one recipe set, loading each model and hashing its weights once.
pub struct Workshop<'a> {
    options: &'a BuildOptions,
    set: &'a RecipeSet,
    /// Loaded models by folder, LoRAs and VAE.
    models: Mutex<HashMap<(PathBuf, String), Arc<dyn Generator>>>,
    weights: Mutex<HashMap<PathBuf, String>>,
    /// The LoRA files of each set of folders prompts' tags are looked for in, listed once.
    lora_files: Mutex<HashMap<Vec<PathBuf>, Arc<LoraListing>>>,
    /// Manifests of assets made or found, by label: `recipe:` sources start from them.
    manifests: Mutex<HashMap<String, Manifest>>,
    /// The control images' annotator networks, loaded once for all the assets that run them.
    networks: Networks,
}

impl<'a> Workshop<'a> {
    /// A workshop for `set`, with the model folders and device of `options` (its cache is not
    /// used).
    pub fn new(options: &'a BuildOptions, set: &'a RecipeSet) -> Self {
        Self {
            options,
            set,
            models: Mutex::default(),
            weights: Mutex::default(),
            lora_files: Mutex::default(),
            manifests: Mutex::default(),
            networks: Networks::new(&options.device),
        }
    }

    /// Records the manifest of `recipe`'s asset: assets with `source = "recipe:…"` naming it
    /// start from its first PNG, as that manifest lists it, beside its recipe.
    pub fn remember(&self, recipe: &AssetRecipe, manifest: Manifest) {
        if let Ok(mut manifests) = self.manifests.lock() {
            manifests.insert(label(recipe), manifest);
        }
    }

    /// Resolves what `recipe`'s asset is made from; a `recipe:` source must be remembered.
    pub fn ingredients(&self, recipe: &AssetRecipe) -> Result<Ingredients, BuildError> {
        let fail = |message| BuildError::asset(recipe, message);
        let model_dir = self.model_dir(recipe).map_err(fail)?;
        let weights_sha256 = self.weights_sha256(&model_dir).map_err(fail)?;
        let (source, mut parents) = self.source(recipe)?;
        let mask = match recipe.img2img.as_ref().and_then(|i| i.mask.as_ref()) {
            Some(file) => {
                let (mask, parent) = self.mask(recipe, file)?;
                parents.push(parent);
                Some(mask)
            }
            None => None,
        };
        let mut control_pictures = Vec::new();
        for control in &recipe.controls {
            let (image, parent) = self.control_image(recipe, &control.image)?;
            if !parents.contains(&parent) {
                parents.push(parent);
            }
            if let Some(file) = control.preprocess.as_ref().and_then(|p| p.annotator()) {
                let parent = self.annotator(recipe, file)?;
                if !parents.contains(&parent) {
                    parents.push(parent);
                }
            }
            control_pictures.push(image);
        }
        let mut loras = recipe
            .loras
            .iter()
            .map(|lora| {
                let path = self.options.root.join(&lora.file);
                // Hashed once per process while the file is unchanged (the load hashes the
                // bytes it merges again, so a file changed in between cannot pass unnoticed).
                let sha256 = crate::models::digest::file_sha256(&path)
                    .map_err(|e| fail(format!("`loras`: cannot read `{}`: {e}", path.display())))?;
                Ok(LoraUse {
                    file: slash(&lora.file),
                    sha256,
                    scale: lora.scale,
                    text_scale: lora.text_scale,
                    rank: lora.rank,
                    blocks: lora.blocks.as_ref().map(|b| b.ratios().to_vec()),
                })
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        loras.extend(self.tagged_loras(recipe, &model_dir)?);
        let hypernetworks = self.tagged_hypernetworks(recipe, &model_dir)?;
        let embeddings = recipe
            .embeddings
            .iter()
            .map(|file| {
                let path = self.options.root.join(file);
                let sha256 = crate::models::digest::file_sha256(&path).map_err(|e| {
                    fail(format!(
                        "`embeddings`: cannot read `{}`: {e}",
                        path.display()
                    ))
                })?;
                Ok(EmbeddingUse {
                    file: slash(file),
                    sha256,
                })
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        let vae = match &recipe.vae {
            Some(file) => {
                let path = self.options.root.join(file);
                let sha256 = crate::models::sd::vae_file::sha256(&path)
                    .map_err(|e| fail(format!("`vae`: {e}")))?;
                Some(VaeUse {
                    file: slash(file),
                    sha256,
                })
            }
            None => None,
        };
        let refiner = match &recipe.refiner {
            Some(refiner) => {
                let path = self.options.root.join(&refiner.model);
                let weights_sha256 = self
                    .weights_sha256(&path)
                    .map_err(|e| fail(format!("`refiner`: {e}")))?;
                Some(RefinerUse {
                    file: slash(&refiner.model),
                    weights_sha256,
                    switch: refiner.switch,
                })
            }
            None => None,
        };
        let upscaler = match recipe.hires.as_ref().map(|h| &h.upscaler) {
            Some(UpscalerRef::File(file)) => {
                let path = self.options.root.join(file);
                let sha256 = crate::models::digest::file_sha256(&path).map_err(|e| {
                    fail(format!(
                        "`hires_upscaler`: cannot read `{}`: {e}",
                        path.display()
                    ))
                })?;
                Some(UpscalerUse {
                    file: slash(file),
                    sha256,
                })
            }
            _ => None,
        };
        let controlnets = recipe
            .controls
            .iter()
            .map(|control| {
                let path = self.options.root.join(&control.model);
                let sha256 = crate::models::sd::controlnet::sha256(&path)
                    .map_err(|e| fail(format!("`controlnet`: {e}")))?;
                Ok(ControlNetUse {
                    file: slash(&control.model),
                    sha256,
                })
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        Ok(Ingredients {
            generator: Family::of(&model_dir).generator(),
            model_dir,
            loras,
            embeddings,
            hypernetworks,
            vae,
            refiner,
            upscaler,
            controlnets,
            control_pictures,
            weights_sha256,
            device: crate::device::name(&self.options.device),
            source,
            mask,
            parents,
            palette: self.palette(recipe)?,
        })
    }

    /// Generates `recipe`'s files (their content: no manifest embedded) with the model that
    /// made them; `scratch` is an empty folder for intermediate files.
    pub fn make(
        &self,
        recipe: &AssetRecipe,
        ingredients: &Ingredients,
        scratch: &Path,
    ) -> Result<(ModelIdentity, Vec<Produced>), BuildError> {
        let model = self
            .model(ingredients)
            .map_err(|message| BuildError::asset(recipe, message))?;
        let controls = recipe
            .controls
            .iter()
            .zip(&ingredients.control_pictures)
            .map(|(control, picture)| match &control.preprocess {
                Some(preprocess) => preprocess
                    .apply(picture, &self.options.root, &self.networks)
                    .map_err(|e| {
                        let name = preprocess.name();
                        BuildError::asset(recipe, format!("`control_preprocess` {name:?}: {e}"))
                    }),
                None => Ok(picture.clone()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let produced = produce::produce(
            recipe,
            &Inputs {
                generator: model.as_ref(),
                source: ingredients.source.as_ref(),
                mask: ingredients.mask.as_ref(),
                controls: &controls,
                palette: ingredients.palette.as_ref(),
                scratch,
            },
        )?;
        Ok((model.identity().clone(), produced))
    }

    fn model_dir(&self, recipe: &AssetRecipe) -> Result<PathBuf, String> {
        match &recipe.model {
            ModelRef::House => Ok(self.options.house_dir.clone()),
            ModelRef::Folder(dir) => Ok(self.options.root.join(dir)),
            ModelRef::Registry(name) => self.options.registry.get(name).cloned().ok_or_else(|| {
                format!(
                    "`model = \"registry:{name}\"`: the registry model `{name}` was not resolved; build from a project whose chain registers it (`autonomy build --project <dir>`)"
                )
            }),
        }
    }

    /// sha256 of a model folder's weights, hashed once without loading the model.
    fn weights_sha256(&self, dir: &Path) -> Result<String, String> {
        if let Some(known) = self.weights.lock().ok().and_then(|w| w.get(dir).cloned()) {
            return Ok(known);
        }
        let hash = models::weights_sha256(dir).map_err(|e| format!("model: {e}"))?;
        if let Ok(mut w) = self.weights.lock() {
            w.insert(dir.to_path_buf(), hash.clone());
        }
        Ok(hash)
    }

    /// The LoRAs `recipe`'s prompt applies by A1111's tags (`<lora:name:0.8>`), after those of
    /// its `loras`: each the one file of that name ([`locate::lora_named`]) beside the model
    /// (in the folder holding it, the folders directly in that and their `loras` folders) or
    /// in the project's model folders.
    fn tagged_loras(
        &self,
        recipe: &AssetRecipe,
        model_dir: &Path,
    ) -> Result<Vec<LoraUse>, BuildError> {
        let fail = |message| BuildError::asset(recipe, message);
        let tags = lora_tags(&recipe.prompt).map_err(|e| fail(format!("`prompt`: {e}")))?;
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let dirs = locate::lora_tag_dirs(model_dir, &self.options.model_dirs);
        let files = {
            let mut listed = self
                .lora_files
                .lock()
                .map_err(|_| fail("a LoRA listing panicked".into()))?;
            listed
                .entry(dirs.clone())
                .or_insert_with(|| Arc::new(locate::lora_files(&dirs)))
                .clone()
        };
        tags.into_iter()
            .map(|tag| {
                let path = locate::lora_named_in(&files, &dirs, &tag.name)
                    .map_err(|e| fail(format!("`prompt`: `{}`: {e}", tag.text)))?;
                let (file, sha256) = self.tagged_file(recipe, &tag.text, &path)?;
                Ok(LoraUse {
                    file,
                    sha256,
                    scale: tag.scale,
                    text_scale: tag.text_scale,
                    rank: tag.rank,
                    blocks: tag.blocks.as_ref().map(|b| b.ratios().to_vec()),
                })
            })
            .collect()
    }

    /// The file at `path` that a prompt's `tag` names, as the manifest records it (relative to
    /// the project when inside it), and its sha256.
    fn tagged_file(
        &self,
        recipe: &AssetRecipe,
        tag: &str,
        path: &Path,
    ) -> Result<(String, String), BuildError> {
        let sha256 = crate::models::digest::file_sha256(path).map_err(|e| {
            BuildError::asset(
                recipe,
                format!("`{tag}`: cannot read `{}`: {e}", path.display()),
            )
        })?;
        let file = match path.strip_prefix(&self.options.root) {
            Ok(inside) => slash(inside),
            Err(_) => path.display().to_string(),
        };
        Ok((file, sha256))
    }

    /// The hypernetworks `recipe`'s prompt applies by A1111's tags (`<hypernet:name:0.8>`):
    /// each the one `.pt` file of that name in the `hypernetworks` folders beside the model or
    /// among the project's model folders ([`locate::hypernetwork_named`]).
    fn tagged_hypernetworks(
        &self,
        recipe: &AssetRecipe,
        model_dir: &Path,
    ) -> Result<Vec<HypernetworkUse>, BuildError> {
        let fail = |message| BuildError::asset(recipe, message);
        let tags = hypernet_tags(&recipe.prompt).map_err(|e| fail(format!("`prompt`: {e}")))?;
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let dirs = locate::lora_tag_dirs(model_dir, &self.options.model_dirs);
        tags.into_iter()
            .map(|tag| {
                let path = locate::hypernetwork_named(&dirs, &tag.name)
                    .map_err(|e| fail(format!("`prompt`: `{}`: {e}", tag.text)))?;
                let (file, sha256) = self.tagged_file(recipe, &tag.text, &path)?;
                Ok(HypernetworkUse {
                    file,
                    sha256,
                    multiplier: tag.multiplier,
                })
            })
            .collect()
    }

    /// The model the ingredients name, with their LoRAs, embeddings, VAE and refiner: loaded
    /// once.
    fn model(&self, ingredients: &Ingredients) -> Result<Arc<dyn Generator>, String> {
        let (dir, loras, embeddings, hypernetworks, vae, refiner, upscaler, controlnets) = (
            &ingredients.model_dir,
            &ingredients.loras,
            &ingredients.embeddings,
            &ingredients.hypernetworks,
            ingredients.vae.as_ref(),
            ingredients.refiner.as_ref(),
            ingredients.upscaler.as_ref(),
            &ingredients.controlnets,
        );
        let mut models = self
            .models
            .lock()
            .map_err(|_| "a model load panicked".to_string())?;
        let signature: Vec<String> = loras
            .iter()
            .map(|l| {
                format!(
                    "{}:{}:{}:{:?}:{:?}:{:?}",
                    l.file, l.sha256, l.scale, l.text_scale, l.rank, l.blocks
                )
            })
            .chain(
                embeddings
                    .iter()
                    .map(|e| format!("embedding:{}:{}", e.file, e.sha256)),
            )
            .chain(
                hypernetworks
                    .iter()
                    .map(|h| format!("hypernetwork:{}:{}:{}", h.file, h.sha256, h.multiplier)),
            )
            .chain(vae.map(|v| format!("vae:{}:{}", v.file, v.sha256)))
            .chain(refiner.map(|r| format!("refiner:{}:{}:{}", r.file, r.weights_sha256, r.switch)))
            .chain(upscaler.map(|u| format!("upscaler:{}:{}", u.file, u.sha256)))
            .chain(
                controlnets
                    .iter()
                    .map(|c| format!("controlnet:{}:{}", c.file, c.sha256)),
            )
            .collect();
        let key = (dir.to_path_buf(), signature.join("|"));
        if let Some(model) = models.get(&key) {
            return Ok(model.clone());
        }
        let files: Vec<LoraFile> = loras
            .iter()
            .map(|lora| {
                let blocks = lora
                    .blocks
                    .as_deref()
                    .map(|ratios| {
                        BlockWeights::from_ratios(ratios).ok_or_else(|| {
                            format!(
                                "`{}`: block weights are 26 numbers, not {ratios:?}",
                                lora.file
                            )
                        })
                    })
                    .transpose()?;
                Ok(LoraFile {
                    path: self.options.root.join(&lora.file),
                    label: lora.file.clone(),
                    scale: lora.scale,
                    text_scale: lora.text_scale,
                    rank: lora.rank,
                    blocks,
                })
            })
            .collect::<Result<_, String>>()?;
        let embedding_files: Vec<EmbeddingFile> = embeddings
            .iter()
            .map(|e| EmbeddingFile {
                path: self.options.root.join(&e.file),
                label: e.file.clone(),
            })
            .collect();
        let hypernetwork_files: Vec<HypernetworkFile> = hypernetworks
            .iter()
            .map(|h| HypernetworkFile {
                path: self.options.root.join(&h.file),
                label: h.file.clone(),
                multiplier: h.multiplier,
            })
            .collect();
        let vae_file = vae.map(|v| VaeFile {
            path: self.options.root.join(&v.file),
            label: v.file.clone(),
        });
        let refiner_file = refiner.map(|r| RefinerFile {
            path: self.options.root.join(&r.file),
            label: r.file.clone(),
            switch: r.switch,
        });
        let upscaler_file = upscaler.map(|u| UpscalerFile {
            path: self.options.root.join(&u.file),
            label: u.file.clone(),
        });
        let controlnet_files: Vec<ControlNetFile> = controlnets
            .iter()
            .map(|c| ControlNetFile {
                path: self.options.root.join(&c.file),
                label: c.file.clone(),
            })
            .collect();
        let additions = Additions {
            loras: &files,
            embeddings: &embedding_files,
            vae: vae_file.as_ref(),
            refiner: refiner_file.as_ref(),
            upscaler: upscaler_file.as_ref(),
            hypernetworks: &hypernetwork_files,
            controlnets: &controlnet_files,
        };
        let model: Arc<dyn Generator> = models::load(dir, &self.options.device, &additions)
            .map_err(|e| format!("model: {e}"))?
            .into();
        let identity = model.identity();
        if identity.loras != *loras
            || identity.embeddings != *embeddings
            || identity.hypernetworks != *hypernetworks
            || identity.vae.as_ref() != vae
            || identity.refiner.as_ref() != refiner
            || identity.upscaler.as_ref() != upscaler
            || identity.controlnets != *controlnets
        {
            return Err(
                "a LoRA, hypernetwork, embedding, VAE, refiner, upscaler or ControlNet file changed while the build read it; build again"
                    .into(),
            );
        }
        models.insert(key, model.clone());
        Ok(model)
    }

    /// The decoded img2img source and the parent record for the manifest.
    fn source(&self, recipe: &AssetRecipe) -> Result<(Option<RgbaImage>, Vec<Parent>), BuildError> {
        let fail = |message| BuildError::asset(recipe, message);
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
        let carrier = Carrier::of(&path.to_string_lossy());
        let content = match carrier.map(|c| c.strip(&bytes)) {
            Some(Ok((content, _))) => content,
            _ => bytes.clone(),
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

    /// The decoded inpainting mask (its luma) and its parent record for the manifest.
    fn mask(&self, recipe: &AssetRecipe, file: &Path) -> Result<(GrayImage, Parent), BuildError> {
        let (image, parent) = self.input_image(recipe, file, "mask")?;
        Ok((image.to_luma8(), parent))
    }

    fn control_image(
        &self,
        recipe: &AssetRecipe,
        file: &Path,
    ) -> Result<(RgbImage, Parent), BuildError> {
        let (image, parent) = self.input_image(recipe, file, "control_image")?;
        Ok((image.to_rgb8(), parent))
    }

    /// The parent record of the network file a control image's preprocessor runs (role
    /// `control_annotator`), so that the cache key and the manifest follow its content.
    fn annotator(&self, recipe: &AssetRecipe, file: &Path) -> Result<Parent, BuildError> {
        let path = self.options.root.join(file);
        let sha256 = crate::models::digest::file_sha256(&path).map_err(|e| {
            BuildError::asset(
                recipe,
                format!("`control_annotator` `{}`: {e}", path.display()),
            )
        })?;
        let digest = hex::decode(&sha256).unwrap_or_default();
        Ok(Parent {
            reference: format!("file:{}", slash(file)),
            cid: crate::build::provenance::cid_of_digest(&digest),
            sha256,
            role: "control_annotator".into(),
        })
    }

    /// The image file the recipe's `field` names, decoded, and the parent record (role
    /// `field`) the manifest lists it by.
    fn input_image(
        &self,
        recipe: &AssetRecipe,
        file: &Path,
        field: &str,
    ) -> Result<(image::DynamicImage, Parent), BuildError> {
        let path = self.options.root.join(file);
        let fail = |message: String| {
            BuildError::asset(recipe, format!("`{field}` `{}`: {message}", path.display()))
        };
        let bytes = std::fs::read(&path).map_err(|e| fail(e.to_string()))?;
        let image =
            image::load_from_memory(&bytes).map_err(|e| fail(format!("is not an image: {e}")))?;
        let reference = format!("file:{}", slash(file));
        let hash = FileHash::of(&reference, &bytes);
        Ok((
            image,
            Parent {
                reference,
                sha256: hash.sha256,
                cid: hash.cid,
                role: field.into(),
            },
        ))
    }

    fn palette(&self, recipe: &AssetRecipe) -> Result<Option<Palette>, BuildError> {
        let fail = |message| BuildError::asset(recipe, message);
        match recipe.pixel_art.as_ref().map(|a| &a.palette) {
            Some(recipe::Palette::Hex(colors)) => Palette::from_colors(colors.clone())
                .map(Some)
                .map_err(|e| fail(format!("`pixel_art.palette`: {e}"))),
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
