//! One recipe file's text → its assets, or every error in it.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{RecipeError, Report};
use super::fields::{Fields, closest, expected};
use super::paths::{check_name, check_recipe_ref, resolve_inside};
use super::{
    Animation, AssetRecipe, ControlRef, HiresRef, Img2Img, Kind, LoraRef, ModelRef, Palette,
    PbrMap, PixelArt, Preprocess, RefinerRef, Source, UpscalerRef,
};
use crate::models::sd::block_weights::BlockWeights;
use crate::models::sd::hypernetwork::hypernet_tags;
use crate::models::sd::lora_tags::{MOST_SCALE, lora_tags, without_network_tags};
use crate::models::sd::prompt_syntax::network_tag;
use crate::models::sd::scheduler::Sampler;

/// Largest recipe file; anything bigger is not a hand-written recipe.
pub(super) const MAX_FILE_BYTES: usize = 1 << 20;

/// Keys only animations accept.
const ANIMATION_KEYS: [&str; 3] = ["frames", "fps", "loop"];
/// Every key an asset may have.
const ALL_KEYS: [&str; 36] = [
    "kind",
    "prompt",
    "negative_prompt",
    "model",
    "loras",
    "embeddings",
    "vae",
    "refiner",
    "refiner_switch",
    "sampler",
    "seed",
    "size",
    "steps",
    "guidance",
    "guidance_rescale",
    "clip_skip",
    "hires_strength",
    "hires_steps",
    "hires_upscaler",
    "controlnet",
    "control_image",
    "control_scale",
    "control_start",
    "control_end",
    "control_guess_mode",
    "control_preprocess",
    "control_thresholds",
    "tileable",
    "pixel_art",
    "source",
    "strength",
    "mask",
    "frames",
    "fps",
    "loop",
    "pbr",
];

/// The names one ControlNet's settings go by: the asset's `control_*` keys, or the keys of a
/// table in a `controlnet` list.
struct ControlKeys {
    model: &'static str,
    image: &'static str,
    scale: &'static str,
    start: &'static str,
    end: &'static str,
    guess_mode: &'static str,
    preprocess: &'static str,
    thresholds: &'static str,
    annotator: &'static str,
}

impl ControlKeys {
    /// Every key, the ControlNet's first.
    fn keys(&self) -> [&'static str; 9] {
        [
            self.model,
            self.image,
            self.scale,
            self.start,
            self.end,
            self.guess_mode,
            self.preprocess,
            self.thresholds,
            self.annotator,
        ]
    }
}

/// One ControlNet written with the asset's own keys.
const TOP_LEVEL: ControlKeys = ControlKeys {
    model: "controlnet",
    image: "control_image",
    scale: "control_scale",
    start: "control_start",
    end: "control_end",
    guess_mode: "control_guess_mode",
    preprocess: "control_preprocess",
    thresholds: "control_thresholds",
    annotator: "control_annotator",
};

/// Each ControlNet of a `controlnet = [{ model = …, image = … }, …]` list.
const IN_A_TABLE: ControlKeys = ControlKeys {
    model: "model",
    image: "image",
    scale: "scale",
    start: "start",
    end: "end",
    guess_mode: "guess_mode",
    preprocess: "preprocess",
    thresholds: "thresholds",
    annotator: "annotator",
};

/// Where in a file something the recipe set checks later was written.
#[derive(Debug, Clone)]
pub(super) struct Spot {
    line: usize,
    column: usize,
    field: Option<String>,
}

impl Spot {
    /// An error at this spot of `file`.
    pub(super) fn error(&self, file: &Path, message: impl Into<String>) -> RecipeError {
        RecipeError {
            file: file.to_path_buf(),
            line: self.line,
            column: self.column,
            field: self.field.clone(),
            message: message.into(),
        }
    }
}

/// A parsed asset with the spots of its name and its `source`, for errors across files.
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) recipe: AssetRecipe,
    pub(super) name_at: Spot,
    pub(super) source_at: Spot,
}

/// Parses one file's text. `root_relative_file` is its path relative to the recipe root
/// (used in errors and to resolve paths). Returns all the file's errors, not just the first.
pub fn parse(root_relative_file: &Path, text: &str) -> Result<Vec<AssetRecipe>, Vec<RecipeError>> {
    parse_file(root_relative_file, text)
        .map(|assets| assets.into_iter().map(|p| p.recipe).collect())
}

/// [`parse`], keeping the spots [`super::set`] reports at.
pub(super) fn parse_file(file: &Path, text: &str) -> Result<Vec<Parsed>, Vec<RecipeError>> {
    let _span = tracing::debug_span!("parse_recipe", file = %file.display()).entered();
    if text.len() > MAX_FILE_BYTES {
        return Err(vec![too_big(file, text.len())]);
    }
    let mut report = Report::new(file, text);
    let (doc, toml_errors) = DeTable::parse_recoverable(text);
    if !toml_errors.is_empty() {
        for e in toml_errors {
            let message = format!("invalid TOML: {}", e.message().trim());
            report.error(e.span().unwrap_or(0..0), None, message);
        }
        return Err(report.into_errors());
    }
    let reader = Reader {
        file,
        dir: file.parent().unwrap_or(Path::new("")),
    };
    let top = doc.get_ref();
    let mut assets = Vec::new();
    match top.get_key_value("assets") {
        Some((key, value)) => {
            for (other, _) in top.iter().filter(|(k, _)| k.get_ref() != "assets") {
                report.error(
                    other.span(),
                    Some(other.get_ref().as_ref()),
                    "this file lists its assets under `[assets]`, so every key belongs in an \
                     `[assets.<name>]` table; move it there (or drop `[assets]` for a one-asset file)",
                );
            }
            reader.named_assets(&mut report, key.span(), value, &mut assets);
        }
        None => {
            let name = asset_name_of(file);
            if let Err(message) = check_name(&name) {
                report.error(0..0, None, format!("{message}; rename the file"));
            }
            let fields = Fields::new(top, String::new(), 0..0);
            assets.extend(reader.asset(&mut report, name, fields));
        }
    }
    if report.errors.is_empty() {
        Ok(assets)
    } else {
        Err(report.into_errors())
    }
}

pub(super) fn too_big(file: &Path, len: usize) -> RecipeError {
    RecipeError::whole_file(
        file,
        format!("is {len} bytes; recipe files are limited to {MAX_FILE_BYTES} bytes"),
    )
}

/// The asset name a one-asset file gives: its name without `.recipe.toml`.
fn asset_name_of(file: &Path) -> String {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    match name.strip_suffix(".recipe.toml") {
        Some(stem) => stem.to_owned(),
        None => file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
    }
}

/// Reads assets out of one file's tables.
struct Reader<'a> {
    file: &'a Path,
    /// The recipe's folder, relative to the root: paths in it are resolved from here.
    dir: &'a Path,
}

impl Reader<'_> {
    fn named_assets(
        &self,
        report: &mut Report,
        key_span: Range<usize>,
        value: &Spanned<DeValue>,
        out: &mut Vec<Parsed>,
    ) {
        let DeValue::Table(table) = value.get_ref() else {
            let message = expected(
                "a table of named assets (`[assets.<name>]`)",
                value.get_ref(),
            );
            report.error(value.span(), Some("assets"), message);
            return;
        };
        if table.is_empty() {
            report.error(
                key_span,
                Some("assets"),
                "is empty; add an `[assets.<name>]` table per asset",
            );
        }
        for (name, value) in table.iter() {
            let field = format!("assets.{}", name.get_ref());
            if let Err(message) = check_name(name.get_ref()) {
                report.error(name.span(), Some(&field), message);
            }
            match value.get_ref() {
                DeValue::Table(asset) => {
                    let fields = Fields::new(asset, format!("{field}."), name.span());
                    out.extend(self.asset(report, name.get_ref().to_string(), fields));
                }
                other => report.error(value.span(), Some(&field), expected("a table", other)),
            }
        }
    }

    /// Reads one asset; `None` only when its kind is unknown (an error is reported then).
    fn asset(&self, report: &mut Report, name: String, mut f: Fields) -> Option<Parsed> {
        let (line, column) = report.position(f.at.start);
        let name_at = Spot {
            line,
            column,
            field: None,
        };

        f.require(
            report,
            "kind",
            "set `kind` to texture, sprite, animation or material",
        );
        let kind = f
            .string(report, "kind")
            .and_then(|s| parse_kind(report, &f.field("kind"), &s));
        f.require(report, "prompt", "describe the asset in `prompt`");
        let (prompt, negative) = (
            f.string(report, "prompt"),
            f.string(report, "negative_prompt"),
        );
        // LoRA tags in the prompt are found among the model folders at build time.
        // So are hypernetwork tags.
        let tagged = match &prompt {
            Some(s) => {
                let mut first = None;
                for found in [
                    lora_tags(s.get_ref()).map(|tags| tags.first().map(|t| t.text.clone())),
                    hypernet_tags(s.get_ref()).map(|tags| tags.first().map(|t| t.text.clone())),
                ] {
                    match found {
                        Ok(text) => first = first.or(text.map(|text| (s.span(), text))),
                        Err(message) => report.error(s.span(), Some(&f.field("prompt")), message),
                    }
                }
                first
            }
            None => None,
        };
        let untagged = prompt.as_ref().map(|s| without_network_tags(s.get_ref()));
        for (key, span, text) in [
            (
                "prompt",
                prompt.as_ref().map(Spanned::span),
                untagged.as_deref(),
            ),
            (
                "negative_prompt",
                negative.as_ref().map(Spanned::span),
                negative.as_ref().map(|s| *s.get_ref()),
            ),
        ] {
            if let (Some(span), Some(message)) = (span, text.and_then(network_tag)) {
                report.error(span, Some(&f.field(key)), message);
            }
        }
        let prompt = match prompt {
            Some(s) if s.get_ref().trim().is_empty() => {
                report.error(s.span(), Some(&f.field("prompt")), "must not be empty");
                String::new()
            }
            Some(s) => s.get_ref().trim().to_owned(),
            None => String::new(),
        };
        let negative_prompt = negative
            .map(|s| s.get_ref().trim().to_owned())
            .unwrap_or_default();
        let model = self.model(report, &mut f);
        let loras = self.loras(report, &mut f);
        if !loras.is_empty() && !matches!(model, ModelRef::Folder(_)) {
            f.misplaced(
                report,
                "loras",
                "LoRAs apply to a Stable Diffusion model folder; set `model` to one",
            );
        }
        if let Some((span, tag)) = tagged
            && !matches!(model, ModelRef::Folder(_))
        {
            report.error(
                span,
                Some(&f.field("prompt")),
                format!(
                    "`{tag}`: LoRAs and hypernetworks apply to a Stable Diffusion model folder; set `model` to one"
                ),
            );
        }
        let embeddings = self.embeddings(report, &mut f);
        if !embeddings.is_empty() && !matches!(model, ModelRef::Folder(_)) {
            f.misplaced(
                report,
                "embeddings",
                "embeddings apply to a Stable Diffusion model folder; set `model` to one",
            );
        }
        let sampler = f.string(report, "sampler").and_then(|s| {
            Sampler::parse(s.get_ref())
                .map_err(|message| report.error(s.span(), Some(&f.field("sampler")), message))
                .ok()
        });
        let vae = f.string(report, "vae").and_then(|v| {
            self.weights_file(v.get_ref())
                .map_err(|message| report.error(v.span(), Some(&f.field("vae")), message))
                .ok()
        });
        let refiner = f.string(report, "refiner").and_then(|r| {
            self.weights_file(r.get_ref())
                .map_err(|message| report.error(r.span(), Some(&f.field("refiner")), message))
                .ok()
        });
        let switch = f.number(report, "refiner_switch", 0.0..=1.0, true);
        if matches!(switch, Some(x) if x >= 1.0) {
            f.misplaced(
                report,
                "refiner_switch",
                "the refiner must be left part of the run: a switch below 1 (0.8 is usual)",
            );
        }
        if !f.has("refiner") {
            f.misplaced(
                report,
                "refiner_switch",
                "only applies with a `refiner`; add one or remove it",
            );
        }
        if refiner.is_some() && !matches!(model, ModelRef::Folder(_)) {
            f.misplaced(
                report,
                "refiner",
                "a refiner takes over from a Stable Diffusion model; set `model` to one",
            );
        }
        let refiner = refiner.map(|model| RefinerRef {
            model,
            switch: switch.unwrap_or(0.8),
        });
        if vae.is_some() && !matches!(model, ModelRef::Folder(_)) {
            f.misplaced(
                report,
                "vae",
                "a VAE file applies to a Stable Diffusion model folder; set `model` to one",
            );
        }
        if sampler.is_some() && !matches!(model, ModelRef::Folder(_)) {
            f.misplaced(
                report,
                "sampler",
                "samplers apply to a Stable Diffusion model folder; set `model` to one",
            );
        }
        let seed = f.integer(report, "seed", 0..=u64::MAX).unwrap_or(0);
        let size = int(f.integer(report, "size", 8..=2048), 64);
        let steps = int(f.integer(report, "steps", 1..=200), 20);
        let guidance = f
            .number(report, "guidance", 0.0..=30.0, false)
            .unwrap_or(4.0) as f32;
        let guidance_rescale = f
            .number(report, "guidance_rescale", 0.0..=1.0, false)
            .unwrap_or(0.0) as f32;
        if !matches!(model, ModelRef::Folder(_)) {
            f.misplaced(
                report,
                "guidance_rescale",
                "guidance rescale applies to a Stable Diffusion model folder; set `model` to one",
            );
        }
        let clip_skip = int(f.integer(report, "clip_skip", 1..=12), 1) as usize;
        if !matches!(model, ModelRef::Folder(_)) {
            f.misplaced(
                report,
                "clip_skip",
                "clip skip applies to a Stable Diffusion model folder; set `model` to one",
            );
        }
        let hires_strength = f.number(report, "hires_strength", 0.0..=1.0, true);
        let hires_steps = f.integer(report, "hires_steps", 1..=200);
        if !matches!(model, ModelRef::Folder(_)) {
            f.misplaced(
                report,
                "hires_strength",
                "a hires pass redraws with a Stable Diffusion model folder; set `model` to one",
            );
        }
        if !f.has("hires_strength") {
            f.misplaced(
                report,
                "hires_steps",
                "only applies with `hires_strength`; add it or remove this",
            );
        }
        let upscaler = f
            .string(report, "hires_upscaler")
            .and_then(|u| match &**u.get_ref() {
                "latent" => Some(UpscalerRef::Latent),
                "lanczos" => Some(UpscalerRef::Lanczos),
                file => self
                    .weights_file(file)
                    .map(UpscalerRef::File)
                    .map_err(|message| {
                        report.error(
                            u.span(),
                            Some(&f.field("hires_upscaler")),
                            format!("`latent`, `lanczos` or an upscaler model file: {message}"),
                        )
                    })
                    .ok(),
            })
            .unwrap_or_default();
        if !f.has("hires_strength") {
            f.misplaced(
                report,
                "hires_upscaler",
                "only applies with `hires_strength`; add it or remove this",
            );
        }
        let hires = hires_strength.map(|strength| HiresRef {
            strength: strength as f32,
            steps: hires_steps.map(|steps| steps as u32),
            upscaler,
        });
        let controls = self.controls(report, &mut f, &model);
        let tileable = f.boolean(report, "tileable");
        let pixel_art = f
            .table(report, "pixel_art")
            .map(|px| self.pixel_art(report, px));

        let frames = f.integer(report, "frames", 2..=256);
        let fps = int(f.integer(report, "fps", 1..=60), 12);
        let looped = f.boolean(report, "loop").unwrap_or(true);
        let pbr = pbr_maps(report, &mut f);

        let source = f.string(report, "source");
        let (source_line, source_column) =
            report.position(source.as_ref().map_or(f.at.start, |s| s.span().start));
        let source_at = Spot {
            line: source_line,
            column: source_column,
            field: Some(f.field("source")),
        };
        let source = source.and_then(|s| self.source(report, &f.field("source"), &s));
        let strength = f.number(report, "strength", 0.0..=1.0, true).unwrap_or(0.6) as f32;
        let mask = f.string(report, "mask").and_then(|m| {
            resolve_inside(self.dir, m.get_ref())
                .map_err(|message| report.error(m.span(), Some(&f.field("mask")), message))
                .ok()
        });
        if !f.has("source") {
            for key in ["strength", "mask"] {
                f.misplaced(
                    report,
                    key,
                    "only applies to img2img; add a `source` image or remove it",
                );
            }
        }

        if let Some(kind) = kind {
            if kind == Kind::Animation {
                f.require(
                    report,
                    "frames",
                    "an animation needs a frame count (2..=256)",
                );
                f.misplaced(
                    report,
                    "hires_strength",
                    "a hires pass would redraw each frame on its own, so the animation would flicker; it is for still images",
                );
            } else {
                for key in ANIMATION_KEYS {
                    f.misplaced(
                        report,
                        key,
                        &format!("only animations have `{key}`, and this is a {kind}"),
                    );
                }
            }
            if kind != Kind::Material {
                f.misplaced(
                    report,
                    "pbr",
                    &format!("only materials have PBR maps, and this is a {kind}"),
                );
            }
        }
        f.finish(report, &ALL_KEYS);

        let kind = kind?;
        let recipe = AssetRecipe {
            name,
            kind,
            prompt,
            negative_prompt,
            model,
            loras,
            embeddings,
            vae,
            refiner,
            sampler,
            guidance_rescale,
            clip_skip,
            hires,
            controls,
            seed,
            size,
            steps,
            guidance,
            tileable: tileable.unwrap_or(matches!(kind, Kind::Texture | Kind::Material)),
            pixel_art,
            animation: (kind == Kind::Animation).then(|| Animation {
                frames: int(frames, 2),
                fps,
                looped,
            }),
            pbr: if kind == Kind::Material {
                pbr.unwrap_or_else(|| PbrMap::ALL.to_vec())
            } else {
                Vec::new()
            },
            img2img: source.map(|source| Img2Img {
                source,
                strength,
                mask,
            }),
            file: self.file.to_path_buf(),
            line,
        };
        Some(Parsed {
            recipe,
            name_at,
            source_at,
        })
    }

    fn model(&self, report: &mut Report, f: &mut Fields) -> ModelRef {
        let Some(s) = f.string(report, "model") else {
            return ModelRef::House;
        };
        let written = *s.get_ref();
        let result = if written == "house" {
            Ok(ModelRef::House)
        } else if let Some(name) = written.strip_prefix("registry:") {
            let bad = |c: char| c.is_whitespace() || c.is_control();
            if name.is_empty() || name.len() > 128 || name.contains(bad) {
                Err(format!(
                    "`{written}`: a registry name is 1 to 128 characters, without spaces"
                ))
            } else {
                Ok(ModelRef::Registry(name.to_owned()))
            }
        } else if Path::new(written).is_absolute() {
            Ok(ModelRef::Folder(PathBuf::from(written)))
        } else {
            resolve_inside(self.dir, written)
                .map(ModelRef::Folder)
                .map_err(|e| format!("{e} (use \"house\", \"registry:<name>\" or a model folder)"))
        };
        result.unwrap_or_else(|message| {
            report.error(s.span(), Some(&f.field("model")), message);
            ModelRef::House
        })
    }

    /// The `loras` list: files, or `{ file, scale }` tables.
    fn loras(&self, report: &mut Report, f: &mut Fields) -> Vec<LoraRef> {
        let Some(v) = f.value("loras") else {
            return Vec::new();
        };
        let field = f.field("loras");
        let DeValue::Array(items) = v.get_ref() else {
            let want =
                "a list like [\"loras/pixel.safetensors\"] or [{ file = \"…\", scale = 0.8 }]";
            report.error(v.span(), Some(&field), expected(want, v.get_ref()));
            return Vec::new();
        };
        let mut loras = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let (file, scale, text_scale, rank, blocks) = match item.get_ref() {
                DeValue::String(s) => (
                    Some(Spanned::new(item.span(), s.as_ref())),
                    Some(1.0),
                    None,
                    None,
                    None,
                ),
                DeValue::Table(table) => {
                    let mut t = Fields::new(table, format!("{at}."), item.span());
                    t.require(report, "file", "name the LoRA's `.safetensors` file");
                    let file = t.string(report, "file");
                    let scale = if t.has("scale") {
                        t.number(report, "scale", -MOST_SCALE..=MOST_SCALE, false)
                    } else {
                        Some(1.0)
                    };
                    let text_scale = if t.has("text_scale") {
                        t.number(report, "text_scale", -MOST_SCALE..=MOST_SCALE, false)
                    } else {
                        None
                    };
                    let rank = if t.has("rank") {
                        t.integer(report, "rank", 1..=u64::from(u32::MAX))
                            .map(|rank| rank as usize)
                    } else {
                        None
                    };
                    let blocks = if t.has("blocks") {
                        t.string(report, "blocks").and_then(|written| {
                            BlockWeights::parse(written.get_ref())
                                .map_err(|message| {
                                    report.error(
                                        written.span(),
                                        Some(&format!("{at}.blocks")),
                                        message,
                                    )
                                })
                                .ok()
                        })
                    } else {
                        None
                    };
                    t.finish(report, &["file", "scale", "text_scale", "rank", "blocks"]);
                    (file, scale, text_scale, rank, blocks)
                }
                other => {
                    report.error(
                        item.span(),
                        Some(&at),
                        expected("a file name or a `{ file, scale }` table", other),
                    );
                    (None, None, None, None, None)
                }
            };
            if let (Some(file), Some(scale)) = (file, scale) {
                match self.weights_file(file.get_ref()) {
                    Ok(path) => loras.push(LoraRef {
                        file: path,
                        scale,
                        text_scale: text_scale.filter(|&text| text != scale),
                        rank,
                        blocks,
                    }),
                    Err(message) => report.error(file.span(), Some(&at), message),
                }
            }
        }
        loras
    }

    /// The `embeddings` list: textual-inversion files, each adding the word of its stem.
    fn embeddings(&self, report: &mut Report, f: &mut Fields) -> Vec<PathBuf> {
        let Some(v) = f.value("embeddings") else {
            return Vec::new();
        };
        let field = f.field("embeddings");
        let DeValue::Array(items) = v.get_ref() else {
            let want = "a list like [\"embeddings/EasyNegative.safetensors\"]";
            report.error(v.span(), Some(&field), expected(want, v.get_ref()));
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let DeValue::String(written) = item.get_ref() else {
                report.error(
                    item.span(),
                    Some(&at),
                    expected("a file name", item.get_ref()),
                );
                continue;
            };
            match self.weights_file(written) {
                Ok(path) => {
                    let word = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().to_lowercase());
                    if files.iter().any(|other| word(other) == word(&path)) {
                        report.error(
                            item.span(),
                            Some(&at),
                            "another embedding in the list has this file name, so the same word",
                        );
                    } else {
                        files.push(path);
                    }
                }
                Err(message) => report.error(item.span(), Some(&at), message),
            }
        }
        files
    }

    /// The ControlNets: `controlnet` (a folder or file) with the `control_*` keys, or a list
    /// of `{ model, image, … }` tables, one per ControlNet.
    fn controls(&self, report: &mut Report, f: &mut Fields, model: &ModelRef) -> Vec<ControlRef> {
        if f.has("controlnet") && !matches!(model, ModelRef::Folder(_)) {
            f.misplaced(
                report,
                "controlnet",
                "a ControlNet conditions a Stable Diffusion model; set `model` to one",
            );
        }
        let listed = f.value("controlnet").filter(|v| v.get_ref().is_array());
        let Some(DeValue::Array(items)) = listed.map(|v| v.get_ref()) else {
            let control = self.control(report, f, &TOP_LEVEL);
            if !f.has("controlnet") {
                for key in &TOP_LEVEL.keys()[1..] {
                    let why = "only applies with a `controlnet` folder; add one or remove this";
                    f.misplaced(report, key, why);
                }
            }
            return control.into_iter().collect();
        };
        let field = f.field("controlnet");
        for key in &TOP_LEVEL.keys()[1..] {
            if f.value(key).is_some() {
                f.misplaced(
                    report,
                    key,
                    "with a list of ControlNets, this goes in each one's table",
                );
            }
        }
        if let (true, Some(list)) = (items.is_empty(), listed) {
            let why = "list at least one `{ model, image }` table, or remove this";
            report.error(list.span(), Some(&field), why);
        }
        let mut controls = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let DeValue::Table(table) = item.get_ref() else {
                let want = "a `{ model = \"…\", image = \"…\" }` table";
                report.error(item.span(), Some(&at), expected(want, item.get_ref()));
                continue;
            };
            let mut t = Fields::new(table, format!("{at}."), item.span());
            t.require(report, "model", "name the ControlNet's folder or file");
            controls.extend(self.control(report, &mut t, &IN_A_TABLE));
            t.finish(report, &IN_A_TABLE.keys());
        }
        controls
    }

    /// One ControlNet's keys (see [`ControlKeys`]): the ControlNet and its image go together.
    fn control(
        &self,
        report: &mut Report,
        f: &mut Fields,
        keys: &ControlKeys,
    ) -> Option<ControlRef> {
        let net = f.string(report, keys.model).and_then(|c| {
            self.weights_file(c.get_ref())
                .map_err(|message| report.error(c.span(), Some(&f.field(keys.model)), message))
                .ok()
        });
        let image = f.string(report, keys.image).and_then(|m| {
            resolve_inside(self.dir, m.get_ref())
                .map_err(|message| report.error(m.span(), Some(&f.field(keys.image)), message))
                .ok()
        });
        let scale = f.number(report, keys.scale, 0.0..=2.0, false);
        let start = f.number(report, keys.start, 0.0..=1.0, false);
        let end = f.number(report, keys.end, 0.0..=1.0, false);
        let guess_mode = f.boolean(report, keys.guess_mode);
        let preprocess = self.preprocess(report, f, keys);
        if f.has(keys.model) && !f.has(keys.image) {
            let why = format!(
                "a ControlNet needs its `{}` (an edge map, a depth map, a pose…)",
                keys.image
            );
            f.misplaced(report, keys.model, &why);
        }
        let (start, end) = (start.unwrap_or(0.0), end.unwrap_or(1.0));
        if start > end {
            let why = format!(
                "the ControlNet must stop after it starts: `{}` is {start}",
                keys.start
            );
            f.misplaced(report, keys.end, &why);
        }
        Some(ControlRef {
            model: net?,
            image: image?,
            scale: scale.unwrap_or(1.0),
            start,
            end,
            guess_mode: guess_mode.unwrap_or(false),
            preprocess,
        })
    }

    /// A ControlNet's preprocessor (`"canny"`…) with its thresholds (Canny's `[low, high]`,
    /// M-LSD's `[value, distance]`) and annotator file.
    fn preprocess(
        &self,
        report: &mut Report,
        f: &mut Fields,
        keys: &ControlKeys,
    ) -> Option<Preprocess> {
        let kind = f.string(report, keys.preprocess);
        let thresholds = f.value(keys.thresholds).and_then(|v| {
            let field = f.field(keys.thresholds);
            let numbers: Option<Vec<f64>> = match v.get_ref() {
                DeValue::Array(items) => items
                    .iter()
                    .map(|item| match item.get_ref() {
                        DeValue::Integer(i) => i.as_str().parse::<f64>().ok(),
                        DeValue::Float(x) => x.as_str().parse::<f64>().ok(),
                        _ => None,
                    })
                    .collect(),
                _ => None,
            };
            let name = kind.as_ref().map(|k| &**k.get_ref());
            let checked = match (numbers.as_deref(), name) {
                (Some(&[a, b]), Some(name @ ("canny" | "mlsd"))) => {
                    Preprocess::check_thresholds(name, (a, b)).map(|()| (a, b))
                }
                (_, Some("canny" | "mlsd")) => Err(
                    "must be two numbers: Canny's `[low, high]` (A1111's [100, 200]) or M-LSD's `[value, distance]` (A1111's [0.1, 0.1])"
                        .to_string(),
                ),
                // Misplaced: said below.
                _ => return None,
            };
            checked
                .map_err(|why| report.error(v.span(), Some(&field), why))
                .ok()
        });
        if !matches!(
            kind.as_ref().map(|k| &**k.get_ref()),
            Some("canny" | "mlsd")
        ) {
            let why = format!(
                "only applies with `{} = \"canny\"` or `\"mlsd\"`; set it or remove this",
                keys.preprocess
            );
            f.misplaced(report, keys.thresholds, &why);
        }
        let annotator = f.string(report, keys.annotator).and_then(|a| {
            self.weights_file(a.get_ref())
                .map_err(|message| report.error(a.span(), Some(&f.field(keys.annotator)), message))
                .ok()
        });
        let name = kind.as_ref().map(|k| k.get_ref().to_string());
        let wants_annotator = name.as_deref().is_some_and(Preprocess::needs_annotator);
        if !wants_annotator {
            let why = format!(
                "only applies with `{}` set to a preprocessor that runs a network (\"softedge_…\", \"scribble_hed\", \"scribble_pidinet\", \"lineart\", \"lineart_anime\", \"depth_anything_v2\", \"depth_anything\", \"mlsd\"); set it or remove this",
                keys.preprocess
            );
            f.misplaced(report, keys.annotator, &why);
        }
        if wants_annotator && f.has(keys.annotator) && annotator.is_none() {
            return None; // Its path was refused above.
        }
        let (k, name) = (kind?, name?);
        let thresholds = thresholds.filter(|_| matches!(name.as_str(), "canny" | "mlsd"));
        Preprocess::named(&name, thresholds, annotator.filter(|_| wants_annotator))
            .map_err(|message| {
                let message = if f.has(keys.annotator) || !wants_annotator {
                    message
                } else {
                    format!("{message}; set `{}`", keys.annotator)
                };
                report.error(k.span(), Some(&f.field(keys.preprocess)), message)
            })
            .ok()
    }

    /// A weights file a recipe names (a LoRA, a VAE): inside the root, relative to the recipe,
    /// or absolute (they often live in a shared models folder).
    fn weights_file(&self, written: &str) -> Result<PathBuf, String> {
        if Path::new(written).is_absolute() {
            Ok(PathBuf::from(written))
        } else {
            resolve_inside(self.dir, written)
        }
    }

    fn pixel_art(&self, report: &mut Report, mut p: Fields) -> PixelArt {
        let scale = int(p.integer(report, "scale", 1..=16), 1);
        match (p.has("palette"), p.has("colors")) {
            (true, true) => report.error(
                p.at.clone(),
                Some(&p.field("palette")),
                "set either `palette` or `colors`, not both",
            ),
            (false, false) => report.error(
                p.at.clone(),
                Some(&p.field("colors")),
                "missing; set `colors` (how many) or `palette` (a file or a list of `#rrggbb`)",
            ),
            _ => {}
        }
        let colors = p
            .integer(report, "colors", 2..=256)
            .map(|n| Palette::Colors(n as u16));
        let palette = p
            .value("palette")
            .and_then(|v| self.palette(report, &p.field("palette"), v));
        p.finish(report, &["palette", "colors", "scale"]);
        PixelArt {
            palette: palette.or(colors).unwrap_or(Palette::Colors(16)),
            scale,
        }
    }

    fn palette(&self, report: &mut Report, field: &str, v: &Spanned<DeValue>) -> Option<Palette> {
        match v.get_ref() {
            DeValue::String(path) => match resolve_inside(self.dir, path) {
                Ok(path) => Some(Palette::File(path)),
                Err(message) => {
                    report.error(v.span(), Some(field), message);
                    None
                }
            },
            DeValue::Array(items) => {
                if items.is_empty() || items.len() > 256 {
                    let n = items.len();
                    report.error(
                        v.span(),
                        Some(field),
                        format!("must list 1 to 256 colours, got {n}"),
                    );
                }
                let colors: Vec<_> = items
                    .iter()
                    .filter_map(|item| hex_color(report, field, item))
                    .collect();
                Some(Palette::Hex(colors))
            }
            other => {
                report.error(
                    v.span(),
                    Some(field),
                    expected("a palette file or a list of `#rrggbb` colours", other),
                );
                None
            }
        }
    }

    fn source(&self, report: &mut Report, field: &str, s: &Spanned<&str>) -> Option<Source> {
        let written = *s.get_ref();
        let result = match written.strip_prefix("recipe:") {
            Some(reference) => check_recipe_ref(reference).map(Source::Recipe),
            None => resolve_inside(self.dir, written).map(Source::File),
        };
        result
            .map_err(|message| report.error(s.span(), Some(field), message))
            .ok()
    }
}

fn parse_kind(report: &mut Report, field: &str, s: &Spanned<&str>) -> Option<Kind> {
    let written = *s.get_ref();
    let kind = Kind::ALL.into_iter().find(|k| k.as_str() == written);
    if kind.is_none() {
        let names = Kind::ALL.map(Kind::as_str);
        let hint = closest(written, &names)
            .map(|k| format!("; did you mean `{k}`?"))
            .unwrap_or_default();
        report.error(
            s.span(),
            Some(field),
            format!(
                "unknown kind `{written}`: expected texture, sprite, animation or material{hint}"
            ),
        );
    }
    kind
}

/// The `pbr` list, sorted; `None` when absent.
fn pbr_maps(report: &mut Report, f: &mut Fields) -> Option<Vec<PbrMap>> {
    let v = f.value("pbr")?;
    let field = f.field("pbr");
    let DeValue::Array(items) = v.get_ref() else {
        report.error(
            v.span(),
            Some(&field),
            expected(
                "a list like [\"normal\", \"roughness\", \"ao\"]",
                v.get_ref(),
            ),
        );
        return None;
    };
    if items.is_empty() {
        report.error(v.span(), Some(&field), "is empty; list the maps you want, or leave `pbr` out for all of them (or use kind = \"texture\")");
    }
    let mut maps = Vec::new();
    for item in items.iter() {
        let name = item.get_ref().as_str();
        match PbrMap::ALL.into_iter().find(|m| Some(m.as_str()) == name) {
            Some(map) if maps.contains(&map) => {
                report.error(
                    item.span(),
                    Some(&field),
                    format!("`{}` is listed twice", map.as_str()),
                );
            }
            Some(map) => maps.push(map),
            None => report.error(
                item.span(),
                Some(&field),
                expected("one of \"normal\", \"roughness\", \"ao\"", item.get_ref()),
            ),
        }
    }
    maps.sort();
    Some(maps)
}

fn hex_color(report: &mut Report, field: &str, item: &Spanned<DeValue>) -> Option<[u8; 3]> {
    let parsed = item.get_ref().as_str().and_then(|s| {
        let digits = s.strip_prefix('#').unwrap_or(s);
        let ok = digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_hexdigit());
        let byte = |i: usize| u8::from_str_radix(digits.get(i..i + 2)?, 16).ok();
        if ok {
            Some([byte(0)?, byte(2)?, byte(4)?])
        } else {
            None
        }
    });
    if parsed.is_none() {
        report.error(
            item.span(),
            Some(field),
            expected("a colour written `#rrggbb` or `rrggbb`", item.get_ref()),
        );
    }
    parsed
}

/// A range-checked integer as `u32`, or `default` when absent or invalid.
fn int(value: Option<u64>, default: u32) -> u32 {
    value.and_then(|v| u32::try_from(v).ok()).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::sd::annotator::{EdgeFinish, EdgeNetwork};

    fn one(file: &str, text: &str) -> AssetRecipe {
        let mut assets = parse(Path::new(file), text).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(assets.len(), 1);
        assets.remove(0)
    }

    /// The fields and messages of the errors `text` (which must fail) gives.
    fn refused(text: &str) -> Vec<(String, String)> {
        parse(Path::new("x.recipe.toml"), text)
            .expect_err(text)
            .iter()
            .map(|e| (e.field.clone().unwrap_or_default(), e.to_string()))
            .collect()
    }

    /// The fields of [`refused`]'s errors.
    fn refused_fields(text: &str) -> Vec<String> {
        refused(text).into_iter().map(|(field, _)| field).collect()
    }

    #[test]
    fn fills_defaults() {
        let r = one(
            "props/potion.recipe.toml",
            "kind = \"sprite\"\nprompt = \" red potion \"\n",
        );
        assert_eq!(r.name, "potion");
        assert_eq!(r.kind, Kind::Sprite);
        assert_eq!(r.prompt, "red potion");
        assert_eq!(r.negative_prompt, "");
        assert_eq!(r.model, ModelRef::House);
        assert_eq!((r.seed, r.size, r.steps, r.guidance), (0, 64, 20, 4.0));
        assert!(!r.tileable);
        assert_eq!(
            (&r.pixel_art, r.animation, &r.img2img),
            (&None, None, &None)
        );
        assert!(r.pbr.is_empty());
        assert_eq!(
            (r.file.as_path(), r.line),
            (Path::new("props/potion.recipe.toml"), 1)
        );
        assert_eq!(r.output_dir(), Path::new("props"));
    }

    #[test]
    fn reads_each_kind() {
        let texture = one(
            "t.recipe.toml",
            "kind = \"texture\"\nprompt = \"grass\"\nseed = 9\nsize = 256\nsteps = 4\nguidance = 7\n",
        );
        assert!(texture.tileable);
        assert_eq!(
            (texture.seed, texture.size, texture.steps, texture.guidance),
            (9, 256, 4, 7.0)
        );

        let sprite = one(
            "s.recipe.toml",
            "kind = \"sprite\"\nprompt = \"gem\"\ntileable = true\nmodel = \"registry:pixel\"\n\
             pixel_art = { palette = [\"#1a1c2c\", \"5D275D\"], scale = 4 }\n",
        );
        assert!(sprite.tileable);
        assert_eq!(sprite.model, ModelRef::Registry("pixel".into()));
        let px = sprite.pixel_art.expect("pixel art");
        assert_eq!(
            (px.palette, px.scale),
            (
                Palette::Hex(vec![[0x1a, 0x1c, 0x2c], [0x5d, 0x27, 0x5d]]),
                4
            )
        );

        let anim = one(
            "fx/a.recipe.toml",
            "kind = \"animation\"\nprompt = \"flame\"\nframes = 8\nloop = false\nsource = \"../art/./flame.png\"\n\
             [pixel_art]\npalette = \"pal/sweetie16.hex\"\n",
        );
        assert_eq!(
            anim.animation,
            Some(Animation {
                frames: 8,
                fps: 12,
                looped: false
            })
        );
        let img = anim.img2img.expect("img2img");
        assert_eq!(img.source, Source::File(PathBuf::from("art/flame.png")));
        assert_eq!(img.strength, 0.6);
        assert_eq!(
            anim.pixel_art.map(|p| p.palette),
            Some(Palette::File("fx/pal/sweetie16.hex".into()))
        );

        let material = one(
            "m/rock.recipe.toml",
            "kind = \"material\"\nprompt = \"rock\"\nmodel = \"../models/sd\"\n",
        );
        assert!(material.tileable);
        assert_eq!(material.pbr, PbrMap::ALL.to_vec());
        assert_eq!(material.model, ModelRef::Folder("models/sd".into()));
        let material = one(
            "m.recipe.toml",
            "kind = \"material\"\nprompt = \"rock\"\npbr = [\"ao\", \"normal\"]\nmodel = \"/opt/sd\"\n",
        );
        assert_eq!(material.pbr, vec![PbrMap::Normal, PbrMap::Ao]);
        assert_eq!(material.model, ModelRef::Folder("/opt/sd".into()));
    }

    #[test]
    fn reads_named_assets() {
        let text = "# items\n[assets.potion]\nkind = \"sprite\"\nprompt = \"red potion\"\n\n\
                    [assets.sword]\nkind = \"sprite\"\nprompt = \"iron sword\"\nsource = \"recipe:ui/potion\"\nstrength = 1\n";
        let assets = parse(Path::new("items.recipe.toml"), text).expect("valid");
        let names: Vec<_> = assets.iter().map(|a| (a.name.as_str(), a.line)).collect();
        assert_eq!(names, [("potion", 2), ("sword", 6)]);
        let img = assets[1].img2img.as_ref().expect("img2img");
        assert_eq!(
            (&img.source, img.strength),
            (&Source::Recipe("ui/potion".into()), 1.0)
        );
    }

    #[test]
    fn an_inpainting_mask_needs_a_source_and_stays_inside_the_root() {
        let patched = one(
            "props/door.recipe.toml",
            "kind = \"sprite\"\nprompt = \"door\"\nsource = \"door.png\"\nmask = \"../masks/./hinge.png\"\nstrength = 1\n",
        );
        let img2img = patched.img2img.as_ref().expect("img2img");
        assert_eq!(img2img.mask, Some(PathBuf::from("masks/hinge.png")));
        assert_eq!(
            patched.canonical()["img2img"]["mask"],
            serde_json::json!("masks/hinge.png")
        );
        let plain = one(
            "a.recipe.toml",
            "kind = \"sprite\"\nprompt = \"a\"\nsource = \"a.png\"\n",
        );
        assert!(plain.canonical()["img2img"].get("mask").is_none());
        for (text, why) in [
            (
                "kind = \"sprite\"\nprompt = \"a\"\nmask = \"m.png\"\n",
                "add a `source`",
            ),
            (
                "kind = \"sprite\"\nprompt = \"a\"\nsource = \"a.png\"\nmask = \"../../m.png\"\n",
                "",
            ),
        ] {
            let errors = parse(Path::new("x.recipe.toml"), text).expect_err("a bad mask");
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].field.as_deref(), Some("mask"), "{errors:?}");
            assert!(errors[0].to_string().contains(why), "{}", errors[0]);
        }
    }

    #[test]
    fn reports_every_error_with_its_field() {
        let text = "[assets.a]\nkind = \"sprite\"\nprompt = \"\"\nsize = 0\n[assets.b]\nkind = \"texture\"\nprompt = \"x\"\nfps = 3\n";
        let errors = parse(Path::new("x.recipe.toml"), text).expect_err("invalid");
        let found: Vec<_> = errors
            .iter()
            .map(|e| (e.line, e.field.as_deref()))
            .collect();
        assert_eq!(
            found,
            [
                (3, Some("assets.a.prompt")),
                (4, Some("assets.a.size")),
                (8, Some("assets.b.fps"))
            ]
        );
        assert_eq!(
            errors[1].to_string(),
            "x.recipe.toml:4:8: `assets.a.size`: must be between 8 and 2048, got 0"
        );
    }

    #[test]
    fn reads_loras_for_a_model_folder_and_refuses_them_elsewhere() {
        let r = one(
            "art/bricks.recipe.toml",
            "kind = \"texture\"\nprompt = \"bricks\"\nmodel = \"../models/sd15\"\n\
             loras = [\"../loras/moss.safetensors\", { file = \"pixel.safetensors\", scale = -0.5 },\n\
                      \"/shared/loras/ink.safetensors\", { file = \"te.safetensors\", scale = 0.8, text_scale = 0 },\n\
                      { file = \"same.safetensors\", scale = 0.5, text_scale = 0.5 },\n\
                      { file = \"cut.safetensors\", scale = 0.7, rank = 8 },\n\
                      { file = \"out.safetensors\", scale = 0.6, blocks = \"OUTD\" }]\n",
        );
        let lora = |file: &str, scale: f64, text_scale: Option<f64>| LoraRef {
            file: file.into(),
            scale,
            text_scale,
            rank: None,
            blocks: None,
        };
        assert_eq!(
            r.loras,
            [
                lora("loras/moss.safetensors", 1.0, None),
                lora("art/pixel.safetensors", -0.5, None),
                lora("/shared/loras/ink.safetensors", 1.0, None),
                lora("art/te.safetensors", 0.8, Some(0.0)),
                lora("art/same.safetensors", 0.5, None),
                LoraRef {
                    rank: Some(8),
                    ..lora("art/cut.safetensors", 0.7, None)
                },
                LoraRef {
                    blocks: Some(BlockWeights::parse("OUTD").unwrap()),
                    ..lora("art/out.safetensors", 0.6, None)
                },
            ]
        );
        assert_eq!(
            r.canonical()["loras"],
            serde_json::json!([
                { "file": "loras/moss.safetensors", "scale": 1.0 },
                { "file": "art/pixel.safetensors", "scale": -0.5 },
                { "file": "/shared/loras/ink.safetensors", "scale": 1.0 },
                { "file": "art/te.safetensors", "scale": 0.8, "text_scale": 0.0 },
                { "file": "art/same.safetensors", "scale": 0.5 },
                { "file": "art/cut.safetensors", "scale": 0.7, "rank": 8 },
                { "file": "art/out.safetensors", "scale": 0.6, "blocks": BlockWeights::parse("OUTD").unwrap().ratios() }
            ])
        );
        let plain = one("p.recipe.toml", "kind = \"sprite\"\nprompt = \"gem\"\n");
        assert!(
            plain.canonical().get("loras").is_none(),
            "no key without LoRAs"
        );

        let house = refused("kind = \"sprite\"\nprompt = \"gem\"\nloras = [\"a.safetensors\"]\n");
        assert!(house[0].1.contains("Stable Diffusion model folder"));
        assert_eq!(
            refused_fields(
                "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\n\
                 loras = [{ scale = 9 }, 3, \"../outside.safetensors\", { file = \"x.safetensors\", rank = 0 },\n\
                          { file = \"y.safetensors\", blocks = \"OUTX\" }]\n"
            ),
            [
                "loras[0].file",
                "loras[0].scale",
                "loras[1]",
                "loras[2]",
                "loras[3].rank",
                "loras[4].blocks"
            ]
        );
    }

    #[test]
    fn reads_embeddings_for_a_model_folder_and_refuses_them_elsewhere() {
        let r = one(
            "art/knight.recipe.toml",
            "kind = \"sprite\"\nprompt = \"knight, pixel-style\"\nmodel = \"../models/sd15\"\n\
             negative_prompt = \"EasyNegative\"\n\
             embeddings = [\"../embeddings/EasyNegative.safetensors\", \"pixel-style.pt\"]\n",
        );
        assert_eq!(
            r.embeddings,
            [
                PathBuf::from("embeddings/EasyNegative.safetensors"),
                PathBuf::from("art/pixel-style.pt")
            ]
        );
        assert_eq!(
            r.canonical()["embeddings"],
            serde_json::json!(["embeddings/EasyNegative.safetensors", "art/pixel-style.pt"])
        );
        let plain = one("p.recipe.toml", "kind = \"sprite\"\nprompt = \"gem\"\n");
        assert!(
            plain.canonical().get("embeddings").is_none(),
            "no key without embeddings, so older manifests still match"
        );

        let house = refused("kind = \"sprite\"\nprompt = \"gem\"\nembeddings = [\"a.pt\"]\n");
        assert!(
            house[0]
                .1
                .contains("embeddings apply to a Stable Diffusion model folder")
        );
        let bad = refused(
            "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\n\
             embeddings = [3, \"../outside.pt\", \"a/Neg.pt\", \"b/neg.safetensors\"]\n",
        );
        let fields: Vec<&str> = bad.iter().map(|(field, _)| field.as_str()).collect();
        assert_eq!(fields, ["embeddings[0]", "embeddings[1]", "embeddings[3]"]);
        assert!(bad[2].1.contains("the same word"), "{bad:?}");
        let scalar =
            refused("kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\nembeddings = \"a.pt\"\n");
        assert!(scalar[0].1.contains("a list like"), "{scalar:?}");
    }

    #[test]
    fn keeps_a1111_lora_tags_in_the_prompt_and_refuses_the_tags_it_cannot_apply() {
        let r = one(
            "x.recipe.toml",
            "kind = \"sprite\"\nprompt = \"a knight <lora:add_detail:0.5>\"\nmodel = \"sd\"\n",
        );
        assert_eq!(
            r.prompt, "a knight <lora:add_detail:0.5>",
            "found at build time"
        );
        assert!(r.loras.is_empty());

        let errors = refused(
            "kind = \"sprite\"\nprompt = \"a knight <lora:add_detail:0.5:stop=10> <hypernet:bad:9>\"\n\
             model = \"sd\"\nnegative_prompt = \"<lora:blurry:1>\"\n",
        );
        let fields: Vec<&str> = errors.iter().map(|(field, _)| field.as_str()).collect();
        assert_eq!(
            fields,
            ["prompt", "prompt", "negative_prompt"],
            "{errors:?}"
        );
        assert!(
            errors[0].1.starts_with("x.recipe.toml:2:")
                && errors[0].1.contains("`stop=` is not read"),
            "{errors:?}"
        );
        assert!(
            errors[1]
                .1
                .contains("`<hypernet:bad:9>`: the multiplier must be a number within ±4"),
            "{errors:?}"
        );
        assert!(
            errors[2]
                .1
                .contains("A1111 applies LoRAs and hypernetworks from the prompt only"),
            "{errors:?}"
        );

        let house = refused("kind = \"sprite\"\nprompt = \"a knight <lora:add_detail>\"\n");
        assert_eq!(house.len(), 1, "{house:?}");
        assert!(
            house[0].1.contains(
                "`<lora:add_detail>`: LoRAs and hypernetworks apply to a Stable Diffusion model"
            ),
            "{house:?}"
        );
    }

    #[test]
    fn reads_a_vae_for_a_model_folder_and_refuses_it_elsewhere() {
        let r = one(
            "sprites/gem.recipe.toml",
            "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"/models/dreamshaper.safetensors\"\nvae = \"../vaes/ft-mse.safetensors\"\n",
        );
        assert_eq!(r.vae, Some(PathBuf::from("vaes/ft-mse.safetensors")));
        assert_eq!(r.canonical()["vae"], "vaes/ft-mse.safetensors");
        let shared = one(
            "gem.recipe.toml",
            "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\nvae = \"/shared/vae\"\n",
        );
        assert_eq!(shared.vae, Some(PathBuf::from("/shared/vae")));
        let plain = one("p.recipe.toml", "kind = \"sprite\"\nprompt = \"gem\"\n");
        assert!(plain.canonical().get("vae").is_none(), "no key without one");
        for (text, what) in [
            (
                "kind = \"sprite\"\nprompt = \"gem\"\nvae = \"v.safetensors\"\n",
                "Stable Diffusion",
            ),
            (
                "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\nvae = \"../../v.safetensors\"\n",
                "`vae`",
            ),
        ] {
            let errors = parse(Path::new("x.recipe.toml"), text).expect_err(text);
            let message = errors[0].to_string();
            assert!(message.contains(what), "{message}");
        }
    }

    #[test]
    fn reads_a_controlnet_with_its_control_image_for_a_model_folder() {
        let r = one(
            "a/x.recipe.toml",
            "kind = \"sprite\"\nprompt = \"an arch\"\nmodel = \"sd\"\ncontrolnet = \"/models/canny\"\n\
             control_image = \"../edges/arch.png\"\ncontrol_end = 0.6\n",
        );
        let [control] = r.controls.as_slice() else {
            panic!("one ControlNet: {:?}", r.controls)
        };
        assert_eq!(control.model, PathBuf::from("/models/canny"));
        assert_eq!(control.image, PathBuf::from("edges/arch.png"));
        assert_eq!(
            (
                control.scale,
                control.start,
                control.end,
                control.guess_mode
            ),
            (1.0, 0.0, 0.6, false)
        );
        assert_eq!(
            r.canonical()["control"],
            serde_json::json!({ "model": "/models/canny", "image": "edges/arch.png", "scale": 1.0,
                                "start": 0.0, "end": 0.6, "guess_mode": false })
        );
        let plain = one(
            "a/x.recipe.toml",
            "kind = \"sprite\"\nprompt = \"an arch\"\n",
        );
        assert!(
            plain.canonical().get("control").is_none(),
            "no key without one"
        );
        assert!(r.canonical()["control"].get("preprocess").is_none());
        let edges = |extra: &str| {
            one(
                "x.recipe.toml",
                &format!(
                    "kind = \"sprite\"\nprompt = \"a\"\nmodel = \"sd\"\ncontrolnet = \"cn\"\n\
                     control_image = \"photo.png\"\ncontrol_preprocess = \"canny\"\n{extra}"
                ),
            )
        };
        assert_eq!(
            edges("").controls[0].preprocess,
            Some(Preprocess::Canny {
                low: 100.0,
                high: 200.0
            })
        );
        let tuned = edges("control_thresholds = [50, 120.5]\n");
        assert_eq!(
            tuned.canonical()["control"]["preprocess"],
            serde_json::json!({ "canny": [50.0, 120.5] })
        );
        for (text, field, why) in [
            (
                "kind = \"sprite\"\nprompt = \"a\"\nmodel = \"sd\"\ncontrolnet = \"cn\"\n",
                "controlnet",
                "needs its `control_image`",
            ),
            (
                "kind = \"sprite\"\nprompt = \"a\"\nmodel = \"sd\"\ncontrol_scale = 0.5\n",
                "control_scale",
                "only applies with a `controlnet`",
            ),
            (
                "kind = \"sprite\"\nprompt = \"a\"\ncontrolnet = \"cn\"\ncontrol_image = \"e.png\"\n",
                "controlnet",
                "conditions a Stable Diffusion model",
            ),
            (
                "kind = \"sprite\"\nprompt = \"a\"\nmodel = \"sd\"\ncontrolnet = \"cn\"\ncontrol_image = \"e.png\"\n\
                 control_start = 0.7\ncontrol_end = 0.2\n",
                "control_end",
                "must stop after it starts",
            ),
            (
                "kind = \"sprite\"\nprompt = \"a\"\nmodel = \"sd\"\ncontrolnet = \"cn\"\ncontrol_image = \"e.png\"\n\
                 control_scale = 3\n",
                "control_scale",
                "between 0.0 and 2.0",
            ),
            (
                "kind = \"sprite\"\nprompt = \"a\"\nmodel = \"sd\"\ncontrolnet = \"cn\"\ncontrol_image = \"../../e.png\"\n",
                "control_image",
                "",
            ),
            (
                "kind = \"sprite\"\nprompt = \"a\"\nmodel = \"sd\"\ncontrolnet = \"cn\"\ncontrol_image = \"e.png\"\n\
                 control_preprocess = \"depth\"\n",
                "control_preprocess",
                "\"canny\"",
            ),
            (
                "kind = \"sprite\"\nprompt = \"a\"\nmodel = \"sd\"\ncontrolnet = \"cn\"\ncontrol_image = \"e.png\"\n\
                 control_preprocess = \"canny\"\ncontrol_thresholds = [200, 100]\n",
                "control_thresholds",
                "0 ≤ low ≤ high ≤ 1000",
            ),
            (
                "kind = \"sprite\"\nprompt = \"a\"\nmodel = \"sd\"\ncontrolnet = \"cn\"\ncontrol_image = \"e.png\"\n\
                 control_thresholds = [10, 100]\n",
                "control_thresholds",
                "only applies with `control_preprocess",
            ),
        ] {
            let errors = refused(text);
            assert_eq!(errors.len(), 1, "{text}: {errors:?}");
            assert_eq!(errors[0].0, field, "{errors:?}");
            assert!(errors[0].1.contains(why), "{errors:?}");
        }
    }

    #[test]
    fn reads_several_controlnets_from_a_list_of_tables() {
        let r = one(
            "a/x.recipe.toml",
            "kind = \"sprite\"\nprompt = \"an arch\"\nmodel = \"sd\"\ncontrolnet = [\n\
             { model = \"/models/canny\", image = \"photo.png\", preprocess = \"canny\", thresholds = [50, 150], end = 0.5 },\n\
             { model = \"depth\", image = \"../depth.png\", scale = 0.4, start = 0.2, guess_mode = true },\n]\n",
        );
        assert_eq!(
            r.controls,
            [
                ControlRef {
                    model: PathBuf::from("/models/canny"),
                    image: PathBuf::from("a/photo.png"),
                    scale: 1.0,
                    start: 0.0,
                    end: 0.5,
                    guess_mode: false,
                    preprocess: Some(Preprocess::Canny {
                        low: 50.0,
                        high: 150.0
                    }),
                },
                ControlRef {
                    model: PathBuf::from("a/depth"),
                    image: PathBuf::from("depth.png"),
                    scale: 0.4,
                    start: 0.2,
                    end: 1.0,
                    guess_mode: true,
                    preprocess: None,
                },
            ]
        );
        let canonical = r.canonical();
        assert_eq!(canonical["control"][0]["preprocess"]["canny"][1], 150.0);
        assert_eq!(canonical["control"][1]["model"], "a/depth");
        // A list of one is the same asset as the top-level keys.
        let listed = one(
            "x.recipe.toml",
            "kind = \"sprite\"\nprompt = \"a\"\nmodel = \"sd\"\n\
             controlnet = [{ model = \"cn\", image = \"e.png\", scale = 0.5 }]\n",
        );
        let flat = one(
            "x.recipe.toml",
            "kind = \"sprite\"\nprompt = \"a\"\nmodel = \"sd\"\ncontrolnet = \"cn\"\n\
             control_image = \"e.png\"\ncontrol_scale = 0.5\n",
        );
        assert_eq!(listed.controls, flat.controls);
        assert_eq!(listed.canonical(), flat.canonical());
        let head = "kind = \"sprite\"\nprompt = \"a\"\nmodel = \"sd\"\n";
        for (text, field, why) in [
            (
                "controlnet = [{ model = \"cn\", image = \"e.png\" }]\ncontrol_scale = 0.5\n",
                "control_scale",
                "goes in each one's table",
            ),
            ("controlnet = []\n", "controlnet", "at least one"),
            ("controlnet = [\"cn\"]\n", "controlnet[0]", "table"),
            (
                "controlnet = [{ image = \"e.png\" }]\n",
                "controlnet[0].model",
                "missing",
            ),
            (
                "controlnet = [{ model = \"cn\", image = \"e.png\" }, { model = \"cn\" }]\n",
                "controlnet[1].model",
                "needs its `image`",
            ),
            (
                "controlnet = [{ model = \"cn\", image = \"e.png\", scales = 1 }]\n",
                "controlnet[0].scales",
                "did you mean `scale`",
            ),
            (
                "controlnet = [{ model = \"cn\", image = \"e.png\", start = 0.8, end = 0.1 }]\n",
                "controlnet[0].end",
                "`start` is 0.8",
            ),
        ] {
            let text = format!("{head}{text}");
            let errors = refused(&text);
            assert_eq!(errors.len(), 1, "{text}: {errors:?}");
            assert_eq!(errors[0].0, field, "{errors:?}");
            assert!(errors[0].1.contains(why), "{errors:?}");
        }
    }

    #[test]
    fn reads_preprocessors_that_run_networks_with_their_annotator_files() {
        let head = "kind = \"sprite\"\nprompt = \"a\"\nmodel = \"sd\"\ncontrolnet = \"cn\"\n\
                    control_image = \"photo.png\"\n";
        let r = one(
            "a/x.recipe.toml",
            &format!(
                "{head}control_preprocess = \"softedge_hedsafe\"\n\
                 control_annotator = \"../annotators/ControlNetHED.pth\"\n"
            ),
        );
        let hed = PathBuf::from("annotators/ControlNetHED.pth");
        assert_eq!(
            r.controls[0].preprocess,
            Some(Preprocess::SoftEdge {
                network: EdgeNetwork::Hed,
                annotator: hed.clone(),
                finish: EdgeFinish::Safe,
            })
        );
        assert_eq!(
            r.canonical()["control"]["preprocess"],
            serde_json::json!({ "softedge_hedsafe": { "annotator": "annotators/ControlNetHED.pth" } })
        );
        let scribbled = one(
            "x.recipe.toml",
            &format!(
                "{head}control_preprocess = \"scribble_pidinet\"\n\
                 control_annotator = \"/models/table5_pidinet.pth\"\n"
            ),
        );
        assert_eq!(
            scribbled.controls[0].preprocess,
            Some(Preprocess::SoftEdge {
                network: EdgeNetwork::PidiNet,
                annotator: PathBuf::from("/models/table5_pidinet.pth"),
                finish: EdgeFinish::Scribble,
            })
        );
        let standard = one(
            "x.recipe.toml",
            &format!("{head}control_preprocess = \"lineart_standard\"\n"),
        );
        assert_eq!(
            standard.controls[0].preprocess,
            Some(Preprocess::LineartStandard)
        );
        assert_eq!(
            standard.canonical()["control"]["preprocess"],
            serde_json::json!({ "lineart_standard": {} })
        );
        let listed = one(
            "x.recipe.toml",
            "kind = \"sprite\"\nprompt = \"a\"\nmodel = \"sd\"\ncontrolnet = [{ model = \"cn\", \
             image = \"p.png\", preprocess = \"lineart\", annotator = \"/models/sk_model2.pth\" }]\n",
        );
        assert_eq!(
            listed.controls[0].preprocess,
            Some(Preprocess::Lineart {
                annotator: PathBuf::from("/models/sk_model2.pth")
            })
        );
        // M-LSD takes its own thresholds (A1111's when none), in the cache key either way.
        let lines = |thresholds: &str| {
            one(
                "x.recipe.toml",
                &format!(
                    "{head}control_preprocess = \"mlsd\"\ncontrol_annotator = \"/m/mlsd.pth\"\n{thresholds}"
                ),
            )
        };
        let tuned = lines("control_thresholds = [0.5, 4]\n");
        assert_eq!(
            tuned.controls[0].preprocess,
            Some(Preprocess::Mlsd {
                annotator: PathBuf::from("/m/mlsd.pth"),
                thresholds: (0.5, 4.0),
            })
        );
        assert_eq!(
            lines("").canonical()["control"]["preprocess"],
            serde_json::json!({ "mlsd": { "annotator": "/m/mlsd.pth", "thresholds": [0.1, 0.1] } })
        );
        assert_ne!(lines("").canonical(), tuned.canonical());
        for (text, field, why) in [
            (
                "control_preprocess = \"lineart\"\n",
                "control_preprocess",
                "needs its annotator file: `sk_model.pth`, or `sk_model2.pth` for coarse lines (lllyasviel/Annotators); set `control_annotator`",
            ),
            (
                "control_preprocess = \"canny\"\ncontrol_annotator = \"hed.pth\"\n",
                "control_annotator",
                "only applies with `control_preprocess` set to a preprocessor that runs a network",
            ),
            (
                "control_annotator = \"hed.pth\"\n",
                "control_annotator",
                "runs a network",
            ),
            (
                "control_preprocess = \"softedge_hed\"\ncontrol_annotator = \"../../hed.pth\"\n",
                "control_annotator",
                "",
            ),
            (
                "control_preprocess = \"lineart\"\ncontrol_annotator = \"sk.pth\"\ncontrol_thresholds = [1, 2]\n",
                "control_thresholds",
                "only applies with `control_preprocess = \"canny\"`",
            ),
            (
                "control_preprocess = \"mlsd\"\ncontrol_annotator = \"m.pth\"\ncontrol_thresholds = [0.1, 50]\n",
                "control_thresholds",
                "M-LSD's thresholds are `[value, distance]`",
            ),
            (
                "control_preprocess = \"mlsd\"\ncontrol_annotator = \"m.pth\"\ncontrol_thresholds = [0.1]\n",
                "control_thresholds",
                "must be two numbers",
            ),
            (
                "control_preprocess = \"depth\"\n",
                "control_preprocess",
                "\"canny\", \"softedge_hed\", \"softedge_hedsafe\", \"softedge_pidinet\", \"softedge_pidisafe\", \"scribble_hed\", \"scribble_pidinet\", \"scribble_xdog\", \"lineart\", \"lineart_anime\", \"lineart_standard\", \"depth_anything_v2\", \"depth_anything\", \"mlsd\", \"invert\", \"t2ia_color_grid\", \"shuffle\"",
            ),
        ] {
            let text = format!("{head}{text}");
            let errors = refused(&text);
            assert_eq!(errors.len(), 1, "{text}: {errors:?}");
            assert_eq!(errors[0].0, field, "{errors:?}");
            assert!(errors[0].1.contains(why), "{errors:?}");
        }
    }

    #[test]
    fn reads_a_refiner_with_its_switch_point_for_a_model_folder() {
        let r = one(
            "knight.recipe.toml",
            "kind = \"sprite\"\nprompt = \"a knight\"\nmodel = \"sdxl\"\nrefiner = \"sdxl-refiner\"\n",
        );
        let refiner = r.refiner.clone().expect("the refiner");
        assert_eq!(refiner.model, PathBuf::from("sdxl-refiner"));
        assert_eq!(refiner.switch, 0.8, "diffusers' examples' switch point");
        assert_eq!(
            r.canonical()["refiner"],
            serde_json::json!({ "model": "sdxl-refiner", "switch": 0.8 })
        );
        let plain = one("p.recipe.toml", "kind = \"sprite\"\nprompt = \"gem\"\n");
        assert!(
            plain.canonical().get("refiner").is_none(),
            "no key without one"
        );
        for (text, what) in [
            (
                "kind = \"sprite\"\nprompt = \"gem\"\nrefiner = \"r\"\n",
                "Stable Diffusion",
            ),
            (
                "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\nrefiner_switch = 0.5\n",
                "only applies with a `refiner`",
            ),
            (
                "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\nrefiner = \"r\"\nrefiner_switch = 1\n",
                "below 1",
            ),
            (
                "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\nrefiner = \"r\"\nrefiner_switch = 0\n",
                "`refiner_switch`",
            ),
        ] {
            let errors = parse(Path::new("x.recipe.toml"), text).expect_err(text);
            let message = errors[0].to_string();
            assert!(message.contains(what), "{message}");
        }
    }

    #[test]
    fn reads_sd_only_settings_for_a_model_folder_and_refuses_them_elsewhere() {
        for (key, value, bad, expected) in [
            ("guidance_rescale", "0.7", "1.5", serde_json::json!(0.7)),
            ("clip_skip", "2", "0", serde_json::json!(2)),
        ] {
            let r = one(
                "a.recipe.toml",
                &format!(
                    "kind = \"texture\"\nprompt = \"bricks\"\nmodel = \"sd\"\n{key} = {value}\n"
                ),
            );
            assert_eq!(r.canonical()[key], expected, "{key}");
            assert_eq!(
                (r.guidance_rescale > 0.0, r.clip_skip != 1),
                (key == "guidance_rescale", key == "clip_skip")
            );
            let plain = one(
                "p.recipe.toml",
                "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\n",
            );
            assert_eq!((plain.guidance_rescale, plain.clip_skip), (0.0, 1));
            assert!(
                plain.canonical().get(key).is_none(),
                "{key}: no key at the default, so recipes without it keep their cache keys"
            );
            for (text, what) in [
                (
                    format!("kind = \"sprite\"\nprompt = \"gem\"\n{key} = {value}\n"),
                    "applies to a Stable Diffusion model folder".to_string(),
                ),
                (
                    format!("kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\n{key} = {bad}\n"),
                    format!("`{key}`"),
                ),
            ] {
                let message = &refused(&text)[0].1;
                assert!(message.contains(&what), "{message}");
            }
        }
    }

    #[test]
    fn reads_a_hires_pass_for_still_stable_diffusion_assets() {
        let r = one(
            "h.recipe.toml",
            "kind = \"texture\"\nprompt = \"bricks\"\nmodel = \"sd\"\nsize = 1024\nhires_strength = 0.55\n",
        );
        assert_eq!(
            r.hires,
            Some(HiresRef {
                strength: 0.55,
                steps: None,
                upscaler: UpscalerRef::Latent,
            })
        );
        assert_eq!(
            r.canonical()["hires"],
            serde_json::json!({ "strength": 0.55, "steps": null })
        );
        // Pixels by Lanczos, or through a model file (a path, as other files are written).
        let r = one(
            "h.recipe.toml",
            "kind = \"texture\"\nprompt = \"bricks\"\nmodel = \"sd\"\nsize = 1024\nhires_strength = 0.4\nhires_upscaler = \"lanczos\"\n",
        );
        assert_eq!(
            r.hires.as_ref().map(|h| &h.upscaler),
            Some(&UpscalerRef::Lanczos)
        );
        assert_eq!(r.canonical()["hires"]["upscaler"], "lanczos");
        let r = one(
            "h.recipe.toml",
            "kind = \"texture\"\nprompt = \"bricks\"\nmodel = \"sd\"\nsize = 1024\nhires_strength = 0.4\nhires_upscaler = \"upscalers/4x-UltraSharp.pth\"\n",
        );
        assert_eq!(
            r.hires.as_ref().map(|h| h.upscaler.clone()),
            Some(UpscalerRef::File("upscalers/4x-UltraSharp.pth".into()))
        );
        assert_eq!(
            r.canonical()["hires"]["upscaler"],
            "upscalers/4x-UltraSharp.pth"
        );
        let r = one(
            "h.recipe.toml",
            "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\nhires_strength = 1\nhires_steps = 8\n",
        );
        assert_eq!(r.hires.and_then(|h| h.steps), Some(8));
        let plain = one(
            "p.recipe.toml",
            "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\n",
        );
        assert!(
            plain.canonical().get("hires").is_none(),
            "no key without one"
        );
        for (text, what) in [
            (
                "kind = \"sprite\"\nprompt = \"gem\"\nhires_strength = 0.5\n",
                "a hires pass redraws with a Stable Diffusion model folder",
            ),
            (
                "kind = \"animation\"\nprompt = \"gem\"\nmodel = \"sd\"\nframes = 4\nhires_strength = 0.5\n",
                "the animation would flicker",
            ),
            (
                "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\nhires_steps = 8\n",
                "only applies with `hires_strength`",
            ),
            (
                "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\nhires_upscaler = \"lanczos\"\n",
                "only applies with `hires_strength`",
            ),
            (
                "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\nhires_strength = 0.5\nhires_upscaler = \"../../up.pth\"\n",
                "`latent`, `lanczos` or an upscaler model file",
            ),
            (
                "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\nhires_strength = 0\n",
                "`hires_strength`: must be a number above 0.0",
            ),
            (
                "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\nhires_strength = 0.5\nhires_steps = 0\n",
                "`hires_steps`",
            ),
        ] {
            let message = &refused(text)[0].1;
            assert!(message.contains(what), "{what:?} in {message}");
        }
    }

    #[test]
    fn reads_a_sampler_for_a_model_folder_and_refuses_it_elsewhere() {
        let r = one(
            "b.recipe.toml",
            "kind = \"texture\"\nprompt = \"bricks\"\nmodel = \"sd15\"\nsampler = \"dpm++2m-karras\"\n",
        );
        assert_eq!(r.sampler, Some(Sampler::DpmPlusPlus2mKarras));
        assert_eq!(r.canonical()["sampler"], "dpm++2m-karras");
        let plain = one("p.recipe.toml", "kind = \"sprite\"\nprompt = \"gem\"\n");
        assert!(
            plain.canonical().get("sampler").is_none(),
            "no key without one"
        );

        let text = "kind = \"sprite\"\nprompt = \"gem\"\nsampler = \"euler\"\n";
        let errors = parse(Path::new("x.recipe.toml"), text).expect_err("the house has one");
        assert!(
            errors[0]
                .to_string()
                .contains("Stable Diffusion model folder")
        );
        let text = "kind = \"sprite\"\nprompt = \"gem\"\nmodel = \"sd\"\nsampler = \"dpm++3m\"\n";
        let errors = parse(Path::new("x.recipe.toml"), text).expect_err("unknown sampler");
        let message = errors[0].to_string();
        assert!(
            message.contains("`sampler`")
                && message.contains("\"dpm++3m\"")
                && message.contains("dpm++2m"),
            "{message}"
        );
    }
}
