//! `autonomy verify --reproduce`: making an asset again from its recipe, model and sources, and
//! comparing every file's content with the manifest, bit for bit. An asset made on another
//! device (another kind of CPU, a GPU) can differ in its last bits: its images are compared by
//! PSNR instead, and pass at [`MIN_PSNR`] or above.
//!
//! Nothing is written beside the asset or into the build cache: the files are made in memory
//! (material maps pass through a private temporary folder).

use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{AssetReport, Verdict, VerifyError, inside, verify_path};
use crate::build::provenance::{FileHash, Manifest};
use crate::build::workshop::{Ingredients, Workshop};
use crate::build::{BuildOptions, MANIFEST_SUFFIX};
use crate::models::locate::folder_with_weights;
use crate::recipe::{self, ModelRef, Source};

/// What a reproduction runs with.
#[derive(Clone, Debug)]
pub struct ReproduceOptions {
    /// The model folder `model = "house"` means.
    pub house_dir: PathBuf,
    /// Where the model runs; an asset made on another device is compared by PSNR (pixels may
    /// differ across devices in their last bits).
    pub device: candle_core::Device,
    /// Folders searched for the weights a `model = "registry:<name>"` asset was made with (by
    /// the manifest's weights hash: an asset is reproduced with the version that made it, not
    /// the one active now).
    pub model_dirs: Vec<PathBuf>,
}

/// A reproduction that did not verify: its verdict and why.
type Found = (Verdict, String);

/// The PSNR (dB, over every RGBA byte) at or above which an image made again on another device
/// counts as the same image: the rounding that differs between devices moves pixels by a grey
/// level or two here and there (50 dB and up), while any visible change costs far more.
pub const MIN_PSNR: f64 = 40.0;

/// [`verify_path`], plus a `reproduction` check on every asset whose manifest is readable: the
/// asset is made again from the recipe file the manifest names (the recipe root is the
/// manifest's folder less the recipe file's folder) and every file's content hash compared.
///
/// The check is `Verified` ("reproduced bit for bit") when all match, `Tampered`
/// (`reproduction differs: <files>`) when any differs, and `Unverifiable` when the asset cannot
/// be made the way it was: the recipe is gone or changed since, the model's weights or the
/// generator differ, or an img2img source changed. Made on another device, it is `Verified`
/// when the files that differ are images within [`MIN_PSNR`] of the asset's, else
/// `Unverifiable` (a device difference cannot be told from an edit).
pub fn reproduce(
    report_dir_or_file: &Path,
    options: &ReproduceOptions,
) -> Result<Vec<AssetReport>, VerifyError> {
    let mut reports = verify_path(report_dir_or_file)?;
    for report in &mut reports {
        let sidecar = report
            .dir
            .join(format!("{}{MANIFEST_SUFFIX}", report.asset));
        let manifest = fs::read(&sidecar)
            .ok()
            .and_then(|json| serde_json::from_slice::<Manifest>(&json).ok());
        // Without a manifest there is nothing to compare with; the `manifest` check says why.
        let Some(manifest) = manifest else { continue };
        let (verdict, detail) = match reproduce_asset(&report.dir, &manifest, options) {
            Ok(detail) => (Verdict::Verified, detail),
            Err(found) => found,
        };
        report.check("reproduction", verdict, detail);
    }
    Ok(reports)
}

fn unverifiable(detail: impl Into<String>) -> Found {
    (Verdict::Unverifiable, detail.into())
}

/// Makes the asset `manifest` describes (in `dir`) again and compares its files.
fn reproduce_asset(
    dir: &Path,
    manifest: &Manifest,
    options: &ReproduceOptions,
) -> Result<String, Found> {
    let root = recipe_root(dir, &manifest.recipe_file)?;
    let set = recipe::load_dir(&root);
    let recipe_file = Path::new(&manifest.recipe_file);
    let Some(recipe) = set
        .recipes
        .iter()
        .find(|r| r.name == manifest.asset && r.file == recipe_file)
    else {
        let why = set.errors.iter().find(|e| e.file == recipe_file);
        let why = why.map(|e| format!(": {e}")).unwrap_or_default();
        let file = root.join(recipe_file);
        return Err(unverifiable(format!(
            "no recipe `{}` in {}{why}",
            manifest.asset,
            file.display()
        )));
    };
    if let Some(key) = first_difference(&recipe.canonical(), &manifest.recipe) {
        let key = if key.is_empty() { "recipe".into() } else { key };
        return Err(unverifiable(format!(
            "recipe changed since it was made: `{key}` differs in {}",
            manifest.recipe_file
        )));
    }
    let mut build = BuildOptions {
        device: options.device.clone(),
        model_dirs: options.model_dirs.clone(),
        ..BuildOptions::new(&root, &options.house_dir)
    };
    if let ModelRef::Registry(name) = &recipe.model {
        let weights = &manifest.model.weights_sha256;
        let folder = folder_with_weights(&options.model_dirs, weights).ok_or_else(|| {
            unverifiable(format!(
                "the weights it was made with ({weights}) are in none of the model folders"
            ))
        })?;
        build.registry.insert(name.clone(), folder);
    }
    let workshop = Workshop::new(&build, &set);
    if let Some(Source::Recipe(name)) = recipe.img2img.as_ref().map(|i| &i.source) {
        let source = |detail: String| unverifiable(format!("source `recipe:{name}`: {detail}"));
        let parent = set
            .source_of(recipe, name)
            .ok_or_else(|| source("no such asset".into()))?;
        let sidecar = root
            .join(parent.output_dir())
            .join(format!("{}{MANIFEST_SUFFIX}", parent.name));
        let parent_manifest = fs::read(&sidecar)
            .map_err(|e| e.to_string())
            .and_then(|json| serde_json::from_slice(&json).map_err(|e| e.to_string()))
            .map_err(|e| source(format!("{}: {e}", sidecar.display())))?;
        workshop.remember(parent, parent_manifest);
    }
    let cannot = |e: &dyn std::fmt::Display| unverifiable(format!("cannot make it again: {e}"));
    let ingredients = workshop.ingredients(recipe).map_err(|e| cannot(&e))?;
    same_ingredients(&ingredients, manifest)?;
    let devices = (ingredients.device != manifest.device)
        .then(|| format!("made on {}, now on {}", manifest.device, ingredients.device));
    let scratch = Scratch::new().map_err(|e| cannot(&e))?;
    let (_, produced) = workshop
        .make(recipe, &ingredients, &scratch.0)
        .map_err(|e| cannot(&e))?;
    let made = |file: &str| produced.iter().find(|p| p.file == file);
    let mut differ: Vec<&str> = manifest
        .outputs
        .iter()
        .filter(|o| made(&o.file).is_none_or(|p| FileHash::of(&p.file, &p.bytes) != **o))
        .map(|o| o.file.as_str())
        .collect();
    differ.extend(
        produced
            .iter()
            .filter(|p| !manifest.outputs.iter().any(|o| o.file == p.file))
            .map(|p| p.file.as_str()),
    );
    let count = produced.len();
    match (differ.is_empty(), devices) {
        (true, None) => Ok(format!("reproduced bit for bit ({count} files)")),
        (true, Some(devices)) => Ok(format!("reproduced bit for bit ({count} files; {devices})")),
        (false, None) => {
            let detail = format!("reproduction differs: {}", differ.join(", "));
            Err((Verdict::Tampered, detail))
        }
        (false, Some(devices)) => {
            let again = |file: &str| made(file).map(|p| p.bytes.as_slice());
            match within_tolerance(dir, &differ, again) {
                Ok(worst) => Ok(format!(
                    "reproduced within tolerance ({devices}): {} at PSNR {worst:.1} dB or more (≥ {MIN_PSNR} dB), the rest bit for bit",
                    differ.join(", ")
                )),
                Err(why) => Err(unverifiable(format!("{devices}, and {why}"))),
            }
        }
    }
}

/// The lowest PSNR between each of `files` in `dir` and its remake (`again`), when every one is
/// an image of the same size and frames within [`MIN_PSNR`]; else what is not.
fn within_tolerance<'a>(
    dir: &Path,
    files: &[&str],
    again: impl Fn(&str) -> Option<&'a [u8]>,
) -> Result<f64, String> {
    let mut worst = f64::INFINITY;
    for &file in files {
        let original = fs::read(dir.join(file)).map_err(|e| format!("`{file}`: {e}"))?;
        let remade = again(file).ok_or_else(|| format!("`{file}` was not made again"))?;
        let (Some(a), Some(b)) = (rgba(file, &original), rgba(file, remade)) else {
            return Err(format!("`{file}` differs and is not an image to compare"));
        };
        if a.len() != b.len() {
            return Err(format!("`{file}` differs in size"));
        }
        let db = psnr(&a, &b);
        if db < MIN_PSNR {
            return Err(format!(
                "`{file}` differs by more than devices explain: PSNR {db:.1} dB, below {MIN_PSNR} dB"
            ));
        }
        worst = worst.min(db);
    }
    Ok(worst)
}

/// Every RGBA byte of a PNG, or of all a GIF's frames in order; `None` for other files.
fn rgba(file: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    if file.ends_with(".png") {
        return Some(image::load_from_memory(bytes).ok()?.to_rgba8().into_raw());
    }
    if !file.ends_with(".gif") {
        return None;
    }
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let mut decoder = options.read_info(bytes).ok()?;
    let mut all = Vec::new();
    while let Some(frame) = decoder.read_next_frame().ok()? {
        all.extend_from_slice(&frame.buffer);
    }
    Some(all)
}

/// Peak signal-to-noise ratio of two equal-length byte images, in dB (infinite when equal).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let squared: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let mse = squared / a.len().max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

/// The recipe root of an asset in `dir` made from `recipe_file` (root-relative): `dir` less
/// the recipe file's folder.
fn recipe_root(dir: &Path, recipe_file: &str) -> Result<PathBuf, Found> {
    if !inside(recipe_file) {
        let detail = format!("the manifest's recipe file `{recipe_file}` is not a relative path");
        return Err(unverifiable(detail));
    }
    let dir = fs::canonicalize(dir).map_err(|e| unverifiable(format!("{}: {e}", dir.display())))?;
    let folder = Path::new(recipe_file).parent().unwrap_or(Path::new(""));
    dir.ancestors()
        .nth(folder.components().count())
        .filter(|_| dir.ends_with(folder))
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            unverifiable(format!(
                "{} is not the folder of the recipe file `{recipe_file}`",
                dir.display()
            ))
        })
}

/// The first (dotted) key whose value differs between two JSON values; `""` when they differ
/// but are not both objects.
fn first_difference(now: &Value, then: &Value) -> Option<String> {
    match (now.as_object(), then.as_object()) {
        _ if now == then => None,
        (Some(now), Some(then)) => {
            let keys: BTreeSet<&String> = now.keys().chain(then.keys()).collect();
            keys.into_iter().find_map(|key| {
                match (now.get(key), then.get(key)) {
                    (Some(a), Some(b)) => first_difference(a, b),
                    _ => Some(String::new()),
                }
                .map(|inner| match inner.is_empty() {
                    true => key.clone(),
                    false => format!("{key}.{inner}"),
                })
            })
        }
        _ => Some(String::new()),
    }
}

/// Whether the asset would be made from what the manifest says it was made from.
fn same_ingredients(have: &Ingredients, manifest: &Manifest) -> Result<(), Found> {
    let differ = |what: &str, have: &str, recorded: &str| {
        unverifiable(format!(
            "{what} differ: have {have}, manifest says {recorded}"
        ))
    };
    let model = &manifest.model;
    if have.weights_sha256 != model.weights_sha256 {
        return Err(differ(
            "model weights",
            &have.weights_sha256,
            &model.weights_sha256,
        ));
    }
    if have.generator != model.generator {
        return Err(differ(
            "generator versions",
            &have.generator,
            &model.generator,
        ));
    }
    let listed = |list: Vec<String>| {
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    };
    let loras = |loras: &[crate::generator::LoraUse]| {
        listed(
            loras
                .iter()
                .map(|l| {
                    let text = l
                        .text_scale
                        .map(|t| format!(", text ×{t}"))
                        .unwrap_or_default();
                    let rank = l
                        .rank
                        .map(|r| format!(", ranks cut to {r}"))
                        .unwrap_or_default();
                    let blocks = l
                        .blocks
                        .as_ref()
                        .map(|b| {
                            let ratios: Vec<String> = b.iter().map(f64::to_string).collect();
                            format!(", block weights {}", ratios.join(","))
                        })
                        .unwrap_or_default();
                    format!(
                        "{} ×{}{text}{rank}{blocks} (sha256 {})",
                        l.file, l.scale, l.sha256
                    )
                })
                .collect(),
        )
    };
    let (now, then) = (loras(&have.loras), loras(&model.loras));
    if now != then {
        return Err(differ("LoRAs", &now, &then));
    }
    let embeddings = |embeddings: &[crate::generator::EmbeddingUse]| {
        listed(
            embeddings
                .iter()
                .map(|e| format!("{} (sha256 {})", e.file, e.sha256))
                .collect(),
        )
    };
    let (now, then) = (embeddings(&have.embeddings), embeddings(&model.embeddings));
    if now != then {
        return Err(differ("embeddings", &now, &then));
    }
    let hypernetworks = |hypernetworks: &[crate::generator::HypernetworkUse]| {
        listed(
            hypernetworks
                .iter()
                .map(|h| format!("{} ×{} (sha256 {})", h.file, h.multiplier, h.sha256))
                .collect(),
        )
    };
    let (now, then) = (
        hypernetworks(&have.hypernetworks),
        hypernetworks(&model.hypernetworks),
    );
    if now != then {
        return Err(differ("hypernetworks", &now, &then));
    }
    let vae = |vae: Option<&crate::generator::VaeUse>| {
        vae.map_or("the model's own".to_string(), |v| {
            format!("{} (sha256 {})", v.file, v.sha256)
        })
    };
    let (now, then) = (vae(have.vae.as_ref()), vae(model.vae.as_ref()));
    if now != then {
        return Err(differ("VAEs", &now, &then));
    }
    let refiner = |refiner: Option<&crate::generator::RefinerUse>| {
        refiner.map_or("none".to_string(), |r| {
            format!(
                "{} from {} (weights {})",
                r.file, r.switch, r.weights_sha256
            )
        })
    };
    let (now, then) = (
        refiner(have.refiner.as_ref()),
        refiner(model.refiner.as_ref()),
    );
    if now != then {
        return Err(differ("refiners", &now, &then));
    }
    let file = |file: &str, sha256: &str| format!("{file} (sha256 {sha256})");
    let upscaler = |upscaler: Option<&crate::generator::UpscalerUse>| {
        upscaler.map_or("none".to_string(), |u| file(&u.file, &u.sha256))
    };
    let (now, then) = (
        upscaler(have.upscaler.as_ref()),
        upscaler(model.upscaler.as_ref()),
    );
    if now != then {
        return Err(differ("hires upscalers", &now, &then));
    }
    let controlnets = |controlnets: &[crate::generator::ControlNetUse]| {
        let list: Vec<String> = controlnets
            .iter()
            .map(|c| file(&c.file, &c.sha256))
            .collect();
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    };
    let (now, then) = (
        controlnets(&have.controlnets),
        controlnets(&model.controlnets),
    );
    if now != then {
        return Err(differ("ControlNets", &now, &then));
    }
    let sources = |parents: &[crate::build::provenance::Parent]| {
        let list: Vec<String> = parents
            .iter()
            .filter(|p| p.role != crate::build::PREVIOUS_ROLE)
            .map(|p| format!("{} (sha256 {})", p.reference, p.sha256))
            .collect();
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    };
    let (now, then) = (sources(&have.parents), sources(&manifest.parents));
    if now != then {
        return Err(unverifiable(format!(
            "source changed: now {now}, manifest says {then}"
        )));
    }
    Ok(())
}

/// A private temporary folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "autonomy-reproduce-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A folder left by a dead process with the same id holds nothing we want.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_differing_key_is_named_with_its_path() {
        let recipe = json!({"prompt": "a", "seed": "1", "img2img": {"strength": 0.5}});
        assert_eq!(first_difference(&recipe, &recipe), None);
        let edited = json!({"prompt": "b", "seed": "2", "img2img": {"strength": 0.5}});
        assert_eq!(
            first_difference(&edited, &recipe).as_deref(),
            Some("prompt")
        );
        let nested = json!({"prompt": "a", "seed": "1", "img2img": {"strength": 0.6}});
        assert_eq!(
            first_difference(&nested, &recipe).as_deref(),
            Some("img2img.strength")
        );
        let fewer = json!({"prompt": "a", "img2img": {"strength": 0.5}});
        assert_eq!(first_difference(&fewer, &recipe).as_deref(), Some("seed"));
        assert_eq!(first_difference(&json!(1), &recipe).as_deref(), Some(""));
    }

    #[test]
    fn device_rounding_is_within_tolerance_and_a_visible_edit_is_not() {
        let temp = tempfile::tempdir().unwrap();
        let image = |f: &dyn Fn(u32, u32) -> u8| -> Vec<u8> {
            let img = image::RgbaImage::from_fn(32, 32, |x, y| {
                image::Rgba([f(x, y), (x * 8) as u8, (y * 8) as u8, 255])
            });
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .unwrap();
            png
        };
        let original = image(&|x, y| ((x + y) * 4) as u8);
        fs::write(temp.path().join("a.png"), &original).unwrap();
        fs::write(temp.path().join("a.json"), b"{}").unwrap();
        // A grey level off in a tenth of the pixels: what another CPU's rounding does.
        let rounded = image(&|x, y| ((x + y) * 4) as u8 + u8::from((x * 7 + y) % 10 == 0));
        let worst = within_tolerance(temp.path(), &["a.png"], |_| Some(rounded.as_slice()));
        assert!(worst.as_ref().is_ok_and(|db| *db > 60.0), "{worst:?}");
        // A visible edit: a 10×10 square painted over.
        let painted = image(&|x, y| {
            if x < 10 && y < 10 {
                255
            } else {
                ((x + y) * 4) as u8
            }
        });
        let edited = within_tolerance(temp.path(), &["a.png"], |_| Some(painted.as_slice()));
        assert!(
            edited.as_ref().is_err_and(|e| e.contains("PSNR")),
            "{edited:?}"
        );
        // Other files are compared bit for bit only.
        let json = within_tolerance(temp.path(), &["a.json"], |_| Some(b"{ }".as_slice()));
        assert!(json.is_err_and(|e| e.contains("not an image")));
    }

    #[test]
    fn the_recipe_root_is_the_manifest_folder_less_the_recipe_folder() {
        let temp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(temp.path()).unwrap();
        let fx = root.join("fx");
        fs::create_dir(&fx).unwrap();
        assert_eq!(recipe_root(&fx, "fx/fire.recipe.toml").unwrap(), root);
        assert_eq!(recipe_root(&fx, "fire.recipe.toml").unwrap(), fx);
        assert!(recipe_root(&fx, "other/fire.recipe.toml").is_err());
        assert!(recipe_root(&fx, "../fire.recipe.toml").is_err());
        assert!(recipe_root(&fx, "/etc/fire.recipe.toml").is_err());
    }
}
