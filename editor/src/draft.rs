//! The Generate panel's form as data: a [`Draft`] becomes a one-asset recipe file, checked by
//! the pipeline's own recipe parser so the panel shows exactly the errors a recipe file would.

use std::path::{Path, PathBuf};

use autonomy_pipeline::models::sd::annotator::canny;
use autonomy_pipeline::models::sd::scheduler::Sampler;
use autonomy_pipeline::recipe::{
    self, AssetRecipe, DEFAULT_MLSD_THRESHOLDS, Kind, Preprocess, UpscalerRef,
};
use image::GrayImage;

/// The first line of every recipe the editor saves: a file without it is the user's own and is
/// never overwritten.
pub const SAVED_BY_EDITOR: &str = "# Saved by the Autonomy editor.";

/// What the Generate panel asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// Asset (and recipe file) name: `potion` → `potion.recipe.toml`.
    pub name: String,
    /// Texture, sprite, animation or material.
    pub kind: Kind,
    /// What to draw.
    pub prompt: String,
    /// What to keep out.
    pub negative_prompt: String,
    /// `house`, `registry:<name>` or a model folder.
    pub model: String,
    /// A Stable Diffusion folder's sampler instead of its own scheduler.
    pub sampler: Option<Sampler>,
    /// LoRA files (absolute paths, as the Generate panel finds them) merged into a Stable
    /// Diffusion folder's weights, each with its scale.
    pub loras: Vec<(PathBuf, f32)>,
    /// Textual-inversion embedding files (absolute) whose words the prompts may use.
    pub embeddings: Vec<PathBuf>,
    /// A VAE file or folder (absolute) used in place of a Stable Diffusion model's own.
    pub vae: Option<PathBuf>,
    /// Stable Diffusion's guidance rescale, 0–1 (0: off).
    pub guidance_rescale: f32,
    /// Stable Diffusion's clip skip: the text-encoder layer, from the last, that conditions
    /// the image (1: the last).
    pub clip_skip: usize,
    /// Stable Diffusion's hires pass: draw at the model's size, then redraw at `size` at this
    /// strength (0–1].
    pub hires: Option<f32>,
    /// How the hires pass scales the first image up (a model file by absolute path).
    pub hires_upscaler: UpscalerRef,
    /// An SDXL refiner (absolute path) that takes over the model's latents, and the share of
    /// the noise schedule the model runs first.
    pub refiner: Option<(PathBuf, f32)>,
    /// The seed (same seed, same image).
    pub seed: u64,
    /// Denoising steps.
    pub steps: u32,
    /// Classifier-free guidance scale.
    pub guidance: f32,
    /// Output size in pixels (square).
    pub size: u32,
    /// Whether the image must tile seamlessly.
    pub tileable: bool,
    /// Pixel-art post-processing: `(colours, upscale)`, or none.
    pub pixel_art: Option<(u16, u32)>,
    /// Animation frames (animations only).
    pub frames: u32,
    /// Animation frames per second (animations only).
    pub fps: u32,
    /// Image-to-image: the project asset to start from, instead of noise.
    pub start: Option<Start>,
    /// A Stable Diffusion model's ControlNet and the picture that conditions it.
    pub control: Option<DraftControl>,
}

/// A ControlNet that conditions a draft, and its control image.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftControl {
    /// The ControlNet folder or file (absolute, as the panel finds it).
    pub model: PathBuf,
    /// The control image (an edge map, a depth map, a pose…), or with a preprocessor any
    /// picture.
    pub image: PathBuf,
    /// How strongly it conditions, 0–2.
    pub scale: f32,
    /// The preprocessor that makes the control image of the picture: Canny edges (A1111's
    /// [`canny::DEFAULT_THRESHOLDS`], 100 and 200, unless changed), line art, or one that runs
    /// an annotator file found in the model folders (absolute).
    pub preprocess: Option<Preprocess>,
}

/// The picture an image-to-image draft starts from: a project asset or a PNG from elsewhere,
/// and for inpainting, the part of it to repaint.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// The project asset it is, by label: a saved recipe names it `source = "recipe:<label>"`,
    /// so the game remakes the draft's asset whenever that one changes. `None` for a PNG from
    /// outside the asset library (dropped on the window or typed in), which a saved recipe
    /// names by its path in the project, copied into `sources/` when it lies outside.
    pub asset: Option<String>,
    /// Its image, which a draft generated outside the project starts from.
    pub file: PathBuf,
    /// How far to move away from it, in (0, 1]: low stays close, 1 ignores it.
    pub strength: f32,
    /// Inpainting: white is repainted, black kept, at the image's size ([`crate::mask`]); none
    /// changes the whole picture. A saved recipe writes it to `masks/<name>.png`.
    pub mask: Option<GrayImage>,
}

impl Start {
    /// Starts from the PNG `file` (outside the asset library), checking that it is one.
    pub fn from_file(file: &Path, strength: f32) -> Result<Self, String> {
        image::image_dimensions(file)
            .map_err(|error| format!("cannot start from {}: {error}", file.display()))?;
        Ok(Self {
            asset: None,
            file: file.to_path_buf(),
            strength,
            mask: None,
        })
    }

    /// What the form calls it: the asset's label, or the file's name.
    pub fn name(&self) -> String {
        match &self.asset {
            Some(asset) => asset.clone(),
            None => self.file.file_name().map_or_else(
                || self.file.display().to_string(),
                |name| name.to_string_lossy().into_owned(),
            ),
        }
    }
}

/// Where a recipe finds a draft's start image and mask, relative to the recipes folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFiles {
    /// `source`: `recipe:<asset>` or a file.
    pub source: String,
    /// `mask`, for inpainting.
    pub mask: Option<String>,
}

impl Default for Draft {
    /// A 64-pixel pixel-art sprite of a red potion from the house model.
    fn default() -> Self {
        Self {
            name: "potion".into(),
            kind: Kind::Sprite,
            prompt: "red health potion".into(),
            negative_prompt: String::new(),
            model: "house".into(),
            sampler: None,
            loras: Vec::new(),
            embeddings: Vec::new(),
            vae: None,
            guidance_rescale: 0.0,
            clip_skip: 1,
            hires: None,
            hires_upscaler: UpscalerRef::Latent,
            refiner: None,
            seed: 7,
            steps: 20,
            guidance: 4.0,
            size: 64,
            tileable: false,
            pixel_art: Some((16, 1)),
            frames: 8,
            fps: 12,
            start: None,
            control: None,
        }
    }
}

/// A draft the pipeline would not accept, with every problem it found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct DraftError(pub Vec<String>);

impl Draft {
    /// Whether the model is a Stable Diffusion pipeline on disk (a folder or a single-file
    /// checkpoint): it takes a sampler and LoRAs.
    pub fn model_is_stable_diffusion(&self) -> bool {
        self.model != "house" && !self.model.starts_with("registry:")
    }

    /// The strength a new start picture keeps: the current one's, else 0.6.
    pub fn start_strength(&self) -> f32 {
        self.start.as_ref().map_or(0.6, |start| start.strength)
    }

    /// The recipe file's name.
    pub fn file_name(&self) -> String {
        format!("{}.recipe.toml", self.name)
    }

    /// Where a saved recipe finds the start image and mask: `recipe:<asset>` for a project
    /// asset, else `sources/<name>.png` (a file already inside the project keeps its own path:
    /// [`crate::save_recipe`] decides), and `masks/<name>.png`.
    pub fn start_files(&self) -> Option<StartFiles> {
        let start = self.start.as_ref()?;
        Some(StartFiles {
            source: match &start.asset {
                Some(asset) => format!("recipe:{asset}"),
                None => format!("sources/{}.png", self.name),
            },
            mask: start
                .mask
                .as_ref()
                .map(|_| format!("masks/{}.png", self.name)),
        })
    }

    /// Where a saved recipe finds a copy of the control image it does not find in the project:
    /// `controls/<name>.png`.
    pub fn control_file(&self) -> Option<String> {
        self.control
            .as_ref()
            .map(|_| format!("controls/{}.png", self.name))
    }

    /// The recipe text (every field written out, so the file says exactly what was generated),
    /// with the start image and mask where [`Draft::start_files`] puts them and the control
    /// image where [`Draft::control_file`] does.
    pub fn to_toml(&self) -> String {
        self.to_toml_with(self.start_files().as_ref(), self.control_file().as_deref())
    }

    /// The recipe text with the start image and mask (for image-to-image drafts) and the
    /// control image found as given: a draft generated outside the project reads copies.
    pub fn to_toml_with(
        &self,
        start_files: Option<&StartFiles>,
        control_image: Option<&str>,
    ) -> String {
        let quoted = |text: &str| toml::Value::String(text.to_string()).to_string();
        let mut lines = vec![
            SAVED_BY_EDITOR.to_string(),
            format!("kind = {}", quoted(self.kind.as_str())),
            format!("prompt = {}", quoted(&self.prompt)),
        ];
        if !self.negative_prompt.is_empty() {
            lines.push(format!(
                "negative_prompt = {}",
                quoted(&self.negative_prompt)
            ));
        }
        lines.push(format!("model = {}", quoted(&self.model)));
        if let Some(sampler) = self.sampler {
            lines.push(format!("sampler = {}", quoted(sampler.name())));
        }
        if !self.loras.is_empty() {
            let loras: Vec<String> = self
                .loras
                .iter()
                .map(|(file, scale)| {
                    let scale = toml::Value::Float(f64::from(*scale));
                    format!(
                        "{{ file = {}, scale = {scale} }}",
                        quoted(&file.to_string_lossy())
                    )
                })
                .collect();
            lines.push(format!("loras = [{}]", loras.join(", ")));
        }
        if !self.embeddings.is_empty() {
            let files: Vec<String> = self
                .embeddings
                .iter()
                .map(|file| quoted(&file.to_string_lossy()))
                .collect();
            lines.push(format!("embeddings = [{}]", files.join(", ")));
        }
        if let Some(vae) = &self.vae {
            lines.push(format!("vae = {}", quoted(&vae.to_string_lossy())));
        }
        if let Some((refiner, switch)) = &self.refiner {
            lines.push(format!("refiner = {}", quoted(&refiner.to_string_lossy())));
            // The f32's shortest decimal, as for the strength.
            let switch = switch.to_string().parse().unwrap_or(0.8);
            lines.push(format!("refiner_switch = {}", toml::Value::Float(switch)));
        }
        if let (Some(control), Some(image)) = (&self.control, control_image) {
            lines.push(format!(
                "controlnet = {}",
                quoted(&control.model.to_string_lossy())
            ));
            lines.push(format!("control_image = {}", quoted(image)));
            // The f32's shortest decimal, as for the strength.
            let scale = control.scale.to_string().parse().unwrap_or(1.0);
            lines.push(format!("control_scale = {}", toml::Value::Float(scale)));
            if let Some(preprocess) = &control.preprocess {
                lines.push(format!(
                    "control_preprocess = {}",
                    quoted(preprocess.name())
                ));
                let thresholds = match *preprocess {
                    Preprocess::Canny { low, high } => {
                        Some((low, high)).filter(|&t| t != canny::DEFAULT_THRESHOLDS)
                    }
                    Preprocess::Mlsd { thresholds, .. } => {
                        Some(thresholds).filter(|&t| t != DEFAULT_MLSD_THRESHOLDS)
                    }
                    _ => None,
                };
                if let Some((a, b)) = thresholds {
                    let (a, b) = (toml::Value::Float(a), toml::Value::Float(b));
                    lines.push(format!("control_thresholds = [{a}, {b}]"));
                }
                if let Some(file) = preprocess.annotator() {
                    lines.push(format!(
                        "control_annotator = {}",
                        quoted(&file.to_string_lossy())
                    ));
                }
            }
        }
        if let (Some(start), Some(files)) = (&self.start, start_files) {
            lines.push(format!("source = {}", quoted(&files.source)));
            if let Some(mask) = &files.mask {
                lines.push(format!("mask = {}", quoted(mask)));
            }
            // The f32's shortest decimal (0.35, not 0.3499999940395355), always with a point.
            let strength = start.strength.to_string().parse().unwrap_or(0.6);
            lines.push(format!("strength = {}", toml::Value::Float(strength)));
        }
        lines.extend([
            format!("seed = {}", self.seed),
            format!("steps = {}", self.steps),
            format!(
                "guidance = {}",
                toml::Value::Float(f64::from(self.guidance))
            ),
            format!("size = {}", self.size),
            format!("tileable = {}", self.tileable),
        ]);
        if self.guidance_rescale > 0.0 {
            // The f32's shortest decimal, as for the strength.
            let rescale = self.guidance_rescale.to_string().parse().unwrap_or(0.0);
            lines.push(format!(
                "guidance_rescale = {}",
                toml::Value::Float(rescale)
            ));
        }
        if self.clip_skip != 1 {
            lines.push(format!("clip_skip = {}", self.clip_skip));
        }
        if let Some(strength) = self.hires {
            // The f32's shortest decimal, as for the strength.
            let strength = strength.to_string().parse().unwrap_or(0.6);
            lines.push(format!("hires_strength = {}", toml::Value::Float(strength)));
            match &self.hires_upscaler {
                UpscalerRef::Latent => {}
                UpscalerRef::Lanczos => lines.push("hires_upscaler = \"lanczos\"".into()),
                UpscalerRef::File(file) => lines.push(format!(
                    "hires_upscaler = {}",
                    quoted(&file.to_string_lossy())
                )),
            }
        }
        if let Some((colors, scale)) = self.pixel_art {
            lines.push(format!(
                "pixel_art = {{ colors = {colors}, scale = {scale} }}"
            ));
        }
        if self.kind == Kind::Animation {
            lines.push(format!("frames = {}", self.frames));
            lines.push(format!("fps = {}", self.fps));
        }
        if self.kind == Kind::Material {
            lines.push(r#"pbr = ["normal", "roughness", "ao"]"#.into());
        }
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }

    /// The recipe as the pipeline reads it, or every problem with it (naming the field).
    pub fn check(&self) -> Result<AssetRecipe, DraftError> {
        if !valid_name(&self.name) {
            return Err(DraftError(vec![format!(
                "name {:?}: use letters, digits, `-` and `_` (it names the files)",
                self.name
            )]));
        }
        let file = self.file_name();
        match recipe::parse(Path::new(&file), &self.to_toml()) {
            Ok(mut assets) if assets.len() == 1 => Ok(assets.remove(0)),
            Ok(assets) => Err(DraftError(vec![format!(
                "expected one asset, the recipe made {}",
                assets.len()
            )])),
            Err(errors) => Err(DraftError(
                errors.iter().map(|error| error.to_string()).collect(),
            )),
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use autonomy_pipeline::models::sd::annotator::{EdgeFinish, EdgeNetwork};
    use autonomy_pipeline::recipe::{ModelRef, Palette, Source};
    use proptest::prelude::*;

    #[test]
    fn the_default_draft_is_a_valid_sprite_recipe() {
        let recipe = Draft::default().check().unwrap();
        assert_eq!(recipe.name, "potion");
        assert_eq!(recipe.kind, Kind::Sprite);
        assert_eq!(recipe.model, ModelRef::House);
        assert!(Draft::default().to_toml().starts_with(SAVED_BY_EDITOR));
    }

    #[test]
    fn a_stable_diffusion_folder_takes_a_sampler_and_the_house_model_does_not() {
        let folder = std::env::temp_dir().join("sd15");
        let draft = Draft {
            model: folder.to_string_lossy().into_owned(),
            sampler: Some(Sampler::DpmPlusPlus2mKarras),
            ..Draft::default()
        };
        assert!(draft.model_is_stable_diffusion());
        assert!(draft.to_toml().contains("sampler = \"dpm++2m-karras\"\n"));
        let recipe = draft.check().unwrap();
        assert_eq!(recipe.model, ModelRef::Folder(folder.clone()));
        assert_eq!(recipe.sampler, Some(Sampler::DpmPlusPlus2mKarras));
        assert!(recipe.loras.is_empty());

        // LoRAs from anywhere on disk (absolute paths), each with its scale.
        let ink = folder.join("loras").join("ink \"v2\".safetensors");
        let shared = std::env::temp_dir().join("loras/moss.safetensors");
        let with_loras = Draft {
            loras: vec![(ink.clone(), 0.8), (shared.clone(), -0.25)],
            ..draft.clone()
        };
        let recipe = with_loras.check().unwrap();
        let loras: Vec<(PathBuf, f64)> = recipe
            .loras
            .iter()
            .map(|lora| (lora.file.clone(), lora.scale))
            .collect();
        assert_eq!(loras, [(ink, f64::from(0.8f32)), (shared, -0.25)]);

        // Embeddings from anywhere on disk, in the recipe only when picked.
        let negative = std::env::temp_dir().join("embeddings/EasyNegative.safetensors");
        let style = folder.join("embeddings").join("pixel style.pt");
        let with_embeddings = Draft {
            embeddings: vec![negative.clone(), style.clone()],
            ..draft.clone()
        };
        assert_eq!(
            with_embeddings.check().unwrap().embeddings,
            [negative, style]
        );
        assert!(!draft.to_toml().contains("embeddings"));

        // A VAE from the model folders, and guidance rescale: in the recipe only when set.
        let vae = std::env::temp_dir().join("VAE/vae-ft-mse.safetensors");
        let with_vae = Draft {
            vae: Some(vae.clone()),
            guidance_rescale: 0.7,
            ..draft.clone()
        };
        let recipe = with_vae.check().unwrap();
        assert_eq!(recipe.vae, Some(vae));
        assert_eq!(recipe.guidance_rescale, 0.7);
        assert!(with_vae.to_toml().contains("guidance_rescale = 0.7\n"));
        let skipping = Draft {
            clip_skip: 2,
            ..draft.clone()
        };
        assert_eq!(skipping.check().unwrap().clip_skip, 2);
        assert!(!draft.to_toml().contains("clip_skip"));
        // A hires pass redrawing at 1024 at 0.55.
        let hires = Draft {
            hires: Some(0.55),
            size: 1024,
            ..draft.clone()
        };
        let recipe = hires.check().unwrap();
        assert_eq!(recipe.hires.map(|h| h.strength), Some(0.55));
        assert!(hires.to_toml().contains("hires_strength = 0.55\n"));
        assert!(
            !hires.to_toml().contains("hires_upscaler"),
            "latent is the default"
        );
        // Through an upscaling model file.
        let file = std::env::temp_dir().join("ESRGAN/4x-UltraSharp.pth");
        let sharp = Draft {
            hires_upscaler: UpscalerRef::File(file.clone()),
            ..hires.clone()
        };
        assert_eq!(
            sharp.check().unwrap().hires.map(|h| h.upscaler),
            Some(UpscalerRef::File(file))
        );
        assert!(!draft.to_toml().contains("hires"));
        assert!(!draft.to_toml().contains("vae"));
        // An SDXL refiner taking over at 0.75.
        let refiner = std::env::temp_dir().join("sdxl-refiner");
        let ensemble = Draft {
            refiner: Some((refiner.clone(), 0.75)),
            ..draft.clone()
        };
        let recipe = ensemble.check().unwrap().refiner.expect("the refiner");
        assert_eq!((recipe.model, recipe.switch), (refiner, 0.75));
        assert!(!draft.to_toml().contains("refiner"));
        assert!(!draft.to_toml().contains("guidance_rescale"));

        let house = Draft {
            sampler: Some(Sampler::Euler),
            ..Draft::default()
        };
        assert!(!house.model_is_stable_diffusion());
        let error = house.check().unwrap_err().to_string();
        assert!(error.contains("Stable Diffusion model folder"), "{error}");
    }

    #[test]
    fn an_image_to_image_draft_names_its_start_as_a_recipe_or_a_copy() {
        let draft = Draft {
            name: "potion_mossy".into(),
            start: Some(Start {
                asset: Some("potion".into()),
                file: std::env::temp_dir().join("potion.png"),
                strength: 0.35,
                mask: None,
            }),
            ..Draft::default()
        };
        let text = draft.to_toml();
        assert!(
            text.contains("source = \"recipe:potion\"\nstrength = 0.35"),
            "{text}"
        );
        let recipe = draft.check().unwrap();
        let img2img = recipe.img2img.expect("an image-to-image recipe");
        assert_eq!(img2img.source, Source::Recipe("potion".into()));
        assert_eq!(img2img.strength, 0.35);
        assert_eq!(img2img.mask, None);
        let copy = recipe::parse(
            Path::new("potion_mossy.recipe.toml"),
            &draft.to_toml_with(
                Some(&StartFiles {
                    source: "potion_mossy.start.png".into(),
                    mask: None,
                }),
                None,
            ),
        )
        .unwrap();
        assert_eq!(
            copy[0].img2img.as_ref().map(|i| &i.source),
            Some(&Source::File("potion_mossy.start.png".into()))
        );
        assert!(!Draft::default().to_toml().contains("source"));
    }

    #[test]
    fn an_inpainting_draft_from_an_outside_file_names_its_copies() {
        let mut mask = crate::mask::blank(8, 8);
        crate::mask::stroke(&mut mask, [2.0, 2.0], [6.0, 6.0], 1.5, crate::mask::REPAINT);
        let draft = Draft {
            name: "door".into(),
            start: Some(Start {
                asset: None,
                file: std::env::temp_dir().join("elsewhere/old door.png"),
                strength: 1.0,
                mask: Some(mask),
            }),
            ..Draft::default()
        };
        assert_eq!(
            draft.start_files(),
            Some(StartFiles {
                source: "sources/door.png".into(),
                mask: Some("masks/door.png".into()),
            })
        );
        let img2img = draft.check().unwrap().img2img.expect("img2img");
        assert_eq!(img2img.source, Source::File("sources/door.png".into()));
        assert_eq!(img2img.mask, Some(PathBuf::from("masks/door.png")));
        assert_eq!(img2img.strength, 1.0);
        assert_eq!(draft.start.as_ref().unwrap().name(), "old door.png");
    }

    #[test]
    fn a_controlnet_draft_names_its_control_image_and_how_it_is_made() {
        let draft = Draft {
            name: "arch".into(),
            model: "/models/sd15".into(),
            control: Some(DraftControl {
                model: PathBuf::from("/models/controlnet/canny"),
                image: PathBuf::from("/photos/arch.jpg"),
                scale: 0.85,
                preprocess: Some(Preprocess::Canny {
                    low: 100.0,
                    high: 200.0,
                }),
            }),
            ..Draft::default()
        };
        assert_eq!(draft.control_file().as_deref(), Some("controls/arch.png"));
        let text = draft.to_toml();
        assert!(
            text.contains(
                "controlnet = \"/models/controlnet/canny\"\ncontrol_image = \"controls/arch.png\"\n\
                 control_scale = 0.85\ncontrol_preprocess = \"canny\""
            ),
            "{text}"
        );
        let control = draft.check().unwrap().controls.remove(0);
        assert_eq!(control.image, PathBuf::from("controls/arch.png"));
        assert_eq!(control.scale, 0.85);
        assert!(control.preprocess.is_some());
        let drawn = Draft {
            control: Some(DraftControl {
                preprocess: None,
                ..draft.control.clone().unwrap()
            }),
            ..draft.clone()
        };
        assert!(!drawn.to_toml().contains("control_preprocess"));
        let fine = Draft {
            control: Some(DraftControl {
                preprocess: Some(Preprocess::Canny {
                    low: 30.0,
                    high: 80.5,
                }),
                ..draft.control.clone().unwrap()
            }),
            ..draft.clone()
        };
        assert!(
            fine.to_toml()
                .contains("control_preprocess = \"canny\"\ncontrol_thresholds = [30.0, 80.5]"),
            "{}",
            fine.to_toml()
        );
        assert_eq!(
            fine.check().unwrap().controls[0].preprocess,
            Some(recipe::Preprocess::Canny {
                low: 30.0,
                high: 80.5
            })
        );
        assert!(
            !text.contains("control_thresholds"),
            "A1111's are the default"
        );
        assert!(!Draft::default().to_toml().contains("control"));
        let straight = Draft {
            control: Some(DraftControl {
                preprocess: Some(Preprocess::Mlsd {
                    annotator: PathBuf::from("/models/annotators/mlsd_large_512_fp32.pth"),
                    thresholds: (0.2, 8.0),
                }),
                ..draft.control.clone().unwrap()
            }),
            ..draft.clone()
        };
        assert!(
            straight.to_toml().contains(
                "control_preprocess = \"mlsd\"\ncontrol_thresholds = [0.2, 8.0]\n\
                 control_annotator = \"/models/annotators/mlsd_large_512_fp32.pth\""
            ),
            "{}",
            straight.to_toml()
        );
        assert_eq!(
            straight.check().unwrap().controls[0].preprocess,
            straight.control.as_ref().unwrap().preprocess
        );
        let soft = Draft {
            control: Some(DraftControl {
                preprocess: Some(Preprocess::SoftEdge {
                    network: EdgeNetwork::Hed,
                    annotator: PathBuf::from("/models/annotators/ControlNetHED.pth"),
                    finish: EdgeFinish::Soft,
                }),
                ..draft.control.clone().unwrap()
            }),
            ..draft.clone()
        };
        assert!(
            soft.to_toml().contains(
                "control_preprocess = \"softedge_hed\"\n\
                 control_annotator = \"/models/annotators/ControlNetHED.pth\""
            ),
            "{}",
            soft.to_toml()
        );
        assert_eq!(
            soft.check().unwrap().controls[0].preprocess,
            soft.control.unwrap().preprocess
        );
    }

    #[test]
    fn only_a_png_can_be_started_from() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.png");
        std::fs::write(&text, "not a picture").unwrap();
        let error = Start::from_file(&text, 0.6).unwrap_err();
        assert!(error.contains("notes.png"), "{error}");
        let missing = Start::from_file(&dir.path().join("gone.png"), 0.6).unwrap_err();
        assert!(missing.contains("gone.png"), "{missing}");
        let png = dir.path().join("door.png");
        crate::mask::blank(3, 2).save(&png).unwrap();
        let start = Start::from_file(&png, 0.6).unwrap();
        assert_eq!((start.asset, start.file, start.mask), (None, png, None));
    }

    #[test]
    fn out_of_range_fields_are_named() {
        let draft = Draft {
            steps: 0,
            size: 4,
            ..Draft::default()
        };
        let error = draft.check().unwrap_err().to_string();
        assert!(error.contains("steps"), "{error}");
        assert!(error.contains("size"), "{error}");
        let bad_name = Draft {
            name: "../escape".into(),
            ..Draft::default()
        };
        assert!(bad_name.check().unwrap_err().to_string().contains("name"));
    }

    proptest! {
        /// Whatever the form holds (within the fields' ranges, any text in the prompts), the
        /// recipe the editor writes parses back to the same values (prompts trimmed).
        #[test]
        fn drafts_round_trip_through_the_recipe_parser(
            kind in prop::sample::select(Kind::ALL.to_vec()),
            prompt in ".{1,60}",
            negative in ".{0,30}",
            seed in any::<u64>(),
            steps in 1u32..=200,
            guidance in 0u32..=300,
            size in 8u32..=512,
            tileable in any::<bool>(),
            pixel_art in prop::option::of((2u16..=256, 1u32..=16)),
            frames in 2u32..=64,
            fps in 1u32..=60,
        ) {
            prop_assume!(!prompt.trim().is_empty());
            let draft = Draft {
                name: "asset_1".into(),
                kind,
                prompt: prompt.clone(),
                negative_prompt: negative.clone(),
                model: "house".into(),
                sampler: None,
                loras: Vec::new(),
                embeddings: Vec::new(),
                vae: None,
                guidance_rescale: 0.0,
                clip_skip: 1,
                hires: None,
                hires_upscaler: UpscalerRef::Latent,
                refiner: None,
                seed,
                steps,
                guidance: guidance as f32 / 10.0,
                size,
                tileable,
                pixel_art,
                frames,
                fps,
                start: None,
                control: None,
            };
            let recipe = draft.check().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(recipe.kind, kind);
            prop_assert_eq!(recipe.prompt.as_str(), prompt.trim(), "the pipeline trims prompts");
            prop_assert_eq!(recipe.negative_prompt.as_str(), negative.trim());
            prop_assert_eq!(recipe.seed, seed);
            prop_assert_eq!(recipe.steps, steps);
            prop_assert_eq!(recipe.guidance, guidance as f32 / 10.0);
            prop_assert_eq!(recipe.size, size);
            prop_assert_eq!(recipe.tileable, tileable);
            prop_assert_eq!(
                recipe.pixel_art.map(|p| (p.palette, p.scale)),
                pixel_art.map(|(colors, scale)| (Palette::Colors(colors), scale))
            );
            prop_assert_eq!(
                recipe.animation.map(|a| (a.frames, a.fps)),
                (kind == Kind::Animation).then_some((frames, fps))
            );
        }
    }
}
