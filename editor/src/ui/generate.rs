//! Generate: the recipe form, the Generate button with progress, the preview (animated for
//! animations, tiled 3×3 for tileable textures) and "Save as recipe".

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use autonomy_pipeline::models::sd::annotator::depth_anything::DepthVersion;
use autonomy_pipeline::models::sd::annotator::{EdgeFinish, EdgeNetwork, Networks, canny};
use autonomy_pipeline::models::sd::hypernetwork::hypernet_tags;
use autonomy_pipeline::models::sd::lora_tags::without_network_tags;
use autonomy_pipeline::models::sd::prompt_schedule;
use autonomy_pipeline::models::sd::scheduler::Sampler;
use autonomy_pipeline::recipe::{Kind, Preprocess, UpscalerRef};
use bevy::asset::RenderAssetUsages;
use bevy::image::ImageSampler;
use bevy::prelude::*;
use bevy::tasks::{AsyncComputeTaskPool, Task, block_on, poll_once};
use bevy_egui::egui;
use image::RgbImage;

use super::{EditorUi, Frame, Intent, Thumbnails, start, sub_rect};
use crate::actions::{EditorAction, Preview, PreviewImage};
use crate::draft::{Draft, DraftControl};
use crate::local_models::{
    LocalControlNet, LocalEmbedding, LocalHypernetwork, LocalLora, LocalModels,
};

const SIZES: [u32; 5] = [32, 48, 64, 96, 128];
/// The sizes a Stable Diffusion model's hires pass redraws at, besides [`SIZES`].
const HIRES_SIZES: [u32; 5] = [256, 512, 768, 1024, 2048];

/// More LoRAs than this fitting the model and the list gets a filter and scrolls.
const LORAS_UNFILTERED: usize = 6;

/// A checkbox for each LoRA file that fits the draft's model folder, and a scale for each one
/// that is on; LoRAs that do not fit the folder (picked for another) are dropped. A long list
/// gets a filter (the picked ones always show) and scrolls.
fn loras(ui: &mut egui::Ui, draft: &mut Draft, local: &LocalModels, filter: &mut String) {
    let folder = PathBuf::from(&draft.model);
    let fitting: Vec<&LocalLora> = local.loras_for(&folder).collect();
    draft
        .loras
        .retain(|(path, _)| fitting.iter().any(|lora| lora.path == *path));
    ui.vertical(|ui| {
        if fitting.is_empty() {
            ui.weak("none for this model in the model folders");
        }
        let long = fitting.len() > LORAS_UNFILTERED;
        if long {
            ui.add(
                egui::TextEdit::singleline(filter)
                    .hint_text(format!("filter {} LoRAs", fitting.len()))
                    .desired_width(200.0),
            );
        }
        let wanted = filter.trim().to_lowercase();
        let picked = |lora: &LocalLora| draft.loras.iter().any(|(path, _)| *path == lora.path);
        // In a long list the picked ones come first, and always show.
        let (mut shown, rest): (Vec<&LocalLora>, Vec<&LocalLora>) =
            fitting.into_iter().partition(|lora| long && picked(lora));
        shown.extend(rest.into_iter().filter(|lora| {
            !long || wanted.is_empty() || lora.name().to_lowercase().contains(&wanted)
        }));
        let rows = |ui: &mut egui::Ui| {
            for lora in shown {
                lora_row(ui, draft, lora);
            }
        };
        if long {
            egui::ScrollArea::vertical()
                .id_salt("loras")
                .min_scrolled_height(150.0)
                .max_height(150.0)
                .show(ui, rows);
        } else {
            rows(ui);
        }
    });
}

/// One LoRA's checkbox (its kind and file on hover) and, when on, its scale.
fn lora_row(ui: &mut egui::Ui, draft: &mut Draft, lora: &LocalLora) {
    ui.horizontal(|ui| {
        let at = draft.loras.iter().position(|(path, _)| *path == lora.path);
        let mut on = at.is_some();
        let hover = format!("{}\n{}", lora.summary.describe(), lora.path.display());
        if ui
            .checkbox(&mut on, lora.name())
            .on_hover_text(hover)
            .changed()
        {
            match (on, at) {
                (true, None) => draft.loras.push((lora.path.clone(), 1.0)),
                (false, Some(i)) => {
                    draft.loras.remove(i);
                }
                _ => {}
            }
        }
        if let Some((_, scale)) = draft.loras.iter_mut().find(|(path, _)| *path == lora.path) {
            ui.add(
                egui::Slider::new(scale, -2.0..=2.0)
                    .step_by(0.05)
                    .text("scale"),
            );
        }
    });
}

/// A checkbox for each textual-inversion embedding that fits the draft's model, labelled with
/// the word that calls it up; embeddings that do not fit it (picked for another) are dropped.
/// A picked one whose word is in neither prompt says so.
fn embeddings(ui: &mut egui::Ui, draft: &mut Draft, local: &LocalModels) {
    let folder = PathBuf::from(&draft.model);
    let fitting: Vec<&LocalEmbedding> = local.embeddings_for(&folder).collect();
    draft
        .embeddings
        .retain(|path| fitting.iter().any(|embedding| embedding.path == *path));
    ui.vertical(|ui| {
        if fitting.is_empty() {
            ui.weak("none for this model in the model folders' `embeddings/`");
        }
        let prompts = format!("{}\n{}", draft.prompt, draft.negative_prompt).to_lowercase();
        for embedding in fitting {
            ui.horizontal(|ui| {
                let at = draft.embeddings.iter().position(|p| *p == embedding.path);
                let mut on = at.is_some();
                let hover = format!(
                    "`{}` in a prompt or the negative prompt stands for {} learned token{}\n{}",
                    embedding.word,
                    embedding.vectors,
                    if embedding.vectors == 1 { "" } else { "s" },
                    embedding.path.display()
                );
                if ui
                    .checkbox(&mut on, &embedding.word)
                    .on_hover_text(hover)
                    .changed()
                {
                    match (on, at) {
                        (true, None) => draft.embeddings.push(embedding.path.clone()),
                        (false, Some(i)) => {
                            draft.embeddings.remove(i);
                        }
                        _ => {}
                    }
                }
                if on && !prompts.contains(&embedding.word.to_lowercase()) {
                    ui.weak("write its word in a prompt");
                }
            });
        }
    });
}

/// A checkbox for each A1111 hypernetwork that fits the draft's model: ticked, the prompt holds
/// its tag (`<hypernet:name:1>`, added at the prompt's end; its multiplier is edited there),
/// unticked, its tags are taken out.
fn hypernetworks(ui: &mut egui::Ui, draft: &mut Draft, local: &LocalModels) {
    let folder = PathBuf::from(&draft.model);
    let fitting: Vec<&LocalHypernetwork> = local.hypernetworks_for(&folder).collect();
    ui.vertical(|ui| {
        if fitting.is_empty() {
            ui.weak("none for this model in the model folders' `hypernetworks/`");
        }
        let tags = hypernet_tags(&draft.prompt).unwrap_or_default();
        for hypernetwork in fitting {
            let written: Vec<String> = tags
                .iter()
                .filter(|tag| tag.name == hypernetwork.name)
                .map(|tag| tag.text.clone())
                .collect();
            let mut on = !written.is_empty();
            let hover = format!(
                "`<hypernet:{}:1>` in the prompt runs it on the UNet's attention\n{}",
                hypernetwork.name,
                hypernetwork.path.display()
            );
            if ui
                .checkbox(&mut on, &hypernetwork.name)
                .on_hover_text(hover)
                .changed()
            {
                if on {
                    let prompt = draft.prompt.trim_end();
                    draft.prompt = format!("{prompt} <hypernet:{}:1>", hypernetwork.name);
                } else {
                    for text in written {
                        draft.prompt = draft.prompt.replace(&text, "");
                    }
                    draft.prompt = draft.prompt.trim_end().to_string();
                }
            }
        }
    });
}

/// The model's own VAE, or a VAE file or folder found in the model folders; a checkpoint
/// without a VAE says it needs one.
fn vae(ui: &mut egui::Ui, draft: &mut Draft, local: &LocalModels) {
    let lacks = local.lacks_vae(Path::new(&draft.model));
    let own = if lacks {
        "none: this checkpoint has no VAE"
    } else {
        "the model's own"
    };
    let name = |path: &Path| {
        path.file_name().map_or_else(
            || path.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        )
    };
    ui.horizontal(|ui| {
        egui::ComboBox::from_id_salt("vae")
            .selected_text(draft.vae.as_deref().map_or(own.to_string(), name))
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut draft.vae, None, own);
                for path in &local.vaes {
                    ui.selectable_value(&mut draft.vae, Some(path.clone()), name(path))
                        .on_hover_text(path.display().to_string());
                }
            });
        if lacks && draft.vae.is_none() {
            ui.colored_label(
                egui::Color32::from_rgb(230, 160, 60),
                "pick the VAE the model's page names",
            );
        }
    });
}

/// How a hires pass scales the first image up: its latents, its pixels by Lanczos, or an
/// upscaling model found in the model folders.
fn hires_upscaler(ui: &mut egui::Ui, chosen: &mut UpscalerRef, local: &LocalModels) {
    let name = |upscaler: &UpscalerRef| match upscaler {
        UpscalerRef::Latent => "latent".to_string(),
        UpscalerRef::Lanczos => "Lanczos".to_string(),
        UpscalerRef::File(path) => path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
    };
    egui::ComboBox::from_id_salt("hires_upscaler")
        .selected_text(name(chosen))
        .show_ui(ui, |ui| {
            ui.selectable_value(chosen, UpscalerRef::Latent, "latent")
                .on_hover_text("scale the latents (soft: strength 0.5 or more)");
            ui.selectable_value(chosen, UpscalerRef::Lanczos, "Lanczos")
                .on_hover_text("scale the pixels with Lanczos");
            for path in &local.upscalers {
                let file = UpscalerRef::File(path.clone());
                let label = name(&file);
                ui.selectable_value(chosen, file, label)
                    .on_hover_text(format!(
                        "{}: sharp, so strength 0.3–0.5 is enough",
                        path.display()
                    ));
            }
        });
}

/// The [`Thumbnails`] key of a draft's control image: its path, marked with the preprocessor
/// (its thresholds, its annotator file) that makes what the ControlNet sees.
fn control_thumbnail(control: &DraftControl) -> PathBuf {
    let image = control.image.display();
    match &control.preprocess {
        Some(Preprocess::Canny { low, high }) => {
            PathBuf::from(format!("{image}#canny-{low}-{high}"))
        }
        Some(Preprocess::Mlsd {
            annotator,
            thresholds: (value, distance),
        }) => PathBuf::from(format!(
            "{image}#mlsd-{value}-{distance}-{}",
            annotator.display()
        )),
        Some(other) => {
            let annotator = other.annotator().map(Path::display);
            let annotator = annotator.map_or(String::new(), |file| format!("-{file}"));
            PathBuf::from(format!("{image}#{}{annotator}", other.name()))
        }
        None => control.image.clone(),
    }
}

/// How the Generate panel lists a preprocessor.
fn preprocess_label(preprocess: Option<&Preprocess>) -> String {
    let file = |p: &Preprocess| {
        p.annotator()
            .and_then(Path::file_name)
            .map_or(String::new(), |name| {
                format!(" · {}", name.to_string_lossy())
            })
    };
    match preprocess {
        None => "as it is".into(),
        Some(Preprocess::Canny { .. }) => "Canny edges".into(),
        Some(Preprocess::LineartStandard) => "line art (standard)".into(),
        Some(Preprocess::Invert) => "inverted (a sketch on white)".into(),
        Some(Preprocess::ScribbleXdog) => "scribble (XDoG)".into(),
        Some(Preprocess::ColorGrid) => "colour grid (colour adapter)".into(),
        Some(Preprocess::Shuffle) => "content shuffle".into(),
        Some(
            p @ Preprocess::SoftEdge {
                network, finish, ..
            },
        ) => {
            let network = match network {
                EdgeNetwork::Hed => "HED",
                EdgeNetwork::PidiNet => "PiDiNet",
            };
            let what = match finish {
                EdgeFinish::Soft => "soft edges",
                EdgeFinish::Safe => "soft edges, safe",
                EdgeFinish::Scribble => "scribble",
            };
            format!("{what} ({network}){}", file(p))
        }
        Some(p @ Preprocess::Lineart { .. }) => format!("line art{}", file(p)),
        Some(p @ Preprocess::LineartAnime { .. }) => format!("anime line art{}", file(p)),
        Some(
            p @ Preprocess::DepthAnything {
                version: DepthVersion::V2,
                ..
            },
        ) => format!("depth (Depth Anything V2){}", file(p)),
        Some(
            p @ Preprocess::DepthAnything {
                version: DepthVersion::V1,
                ..
            },
        ) => format!("depth (Depth Anything){}", file(p)),
        Some(p @ Preprocess::Mlsd { .. }) => format!("straight lines (M-LSD){}", file(p)),
    }
}

/// The preprocessors the panel offers: none, Canny edges, standard line art, the negative,
/// XDoG scribbles, the colour grid, the content shuffle, then each that runs an annotator file
/// found in the model folders.
fn preprocessors(local: &LocalModels) -> Vec<Option<Preprocess>> {
    let (low, high) = canny::DEFAULT_THRESHOLDS;
    let mut offered = vec![
        None,
        Some(Preprocess::Canny { low, high }),
        Some(Preprocess::LineartStandard),
        Some(Preprocess::Invert),
        Some(Preprocess::ScribbleXdog),
        Some(Preprocess::ColorGrid),
        Some(Preprocess::Shuffle),
    ];
    for (file, names) in &local.annotators {
        offered.extend(
            names
                .iter()
                .filter_map(|name| Preprocess::named(name, None, Some(file.clone())).ok())
                .map(Some),
        );
    }
    offered
}

/// The control image thumbnail being made, by its [`Thumbnails`] key, those that cannot be,
/// and the annotator networks loaded for them (on the CPU, kept for the next thumbnail).
#[derive(Default)]
pub(crate) struct ControlThumbnailWork {
    making: Option<(PathBuf, Task<Result<RgbImage, String>>)>,
    unreadable: HashSet<PathBuf>,
    networks: Option<Arc<Networks>>,
}

/// Loads the control image a ControlNet draft names — made by its preprocessor when the draft
/// has one, as the ControlNet will see it — for the Generate panel's thumbnail, off the main
/// thread (an annotator network takes a moment on a large picture). A file that is not an
/// image is passed over (once: the build says why).
pub(crate) fn load_control_images(
    state: Res<EditorUi>,
    mut thumbnails: ResMut<Thumbnails>,
    mut images: ResMut<Assets<Image>>,
    mut work: Local<ControlThumbnailWork>,
) {
    if let Some((key, task)) = &mut work.making {
        let Some(made) = block_on(poll_once(task)) else {
            return;
        };
        let key = key.clone();
        work.making = None;
        match made {
            Ok(shown) => {
                let mut image = Image::from_dynamic(
                    image::DynamicImage::ImageRgb8(shown),
                    true,
                    RenderAssetUsages::default(),
                );
                image.sampler = ImageSampler::nearest();
                thumbnails.0.insert(key, images.add(image));
            }
            Err(error) => {
                warn!(%error, "no control image thumbnail");
                work.unreadable.insert(key);
            }
        }
    }
    let Some(control) = state.draft.control.as_ref() else {
        return;
    };
    let key = control_thumbnail(control);
    if thumbnails.0.contains_key(&key) || work.unreadable.contains(&key) || !control.image.is_file()
    {
        return;
    }
    let (file, preprocess) = (control.image.clone(), control.preprocess.clone());
    let networks = match work.networks.clone() {
        Some(networks) => networks,
        None => match autonomy_pipeline::device::select("cpu") {
            Ok(cpu) => work.networks.insert(Arc::new(Networks::new(&cpu))).clone(),
            Err(error) => {
                warn!(%error, "no CPU device for the control image thumbnail");
                return;
            }
        },
    };
    let task = AsyncComputeTaskPool::get().spawn(async move {
        let picture = image::open(&file)
            .map_err(|error| format!("{}: {error}", file.display()))?
            .to_rgb8();
        let Some(preprocess) = preprocess else {
            return Ok(picture);
        };
        preprocess
            .apply(&picture, Path::new(""), &networks)
            .map_err(|error| format!("{}: {error}", preprocess.name()))
    });
    work.making = Some((key, task));
}

/// None, or a ControlNet found in the model folders that fits the model, with its control
/// image (a path, or a picture to take the Canny edges of, shown as the ControlNet sees it)
/// and scale (a form row only when one fits).
fn controlnet(ui: &mut egui::Ui, draft: &mut Draft, frame: &Frame) {
    let local = frame.local_models;
    let model = PathBuf::from(&draft.model);
    let fitting: Vec<&LocalControlNet> = local.controlnets_for(&model).collect();
    if fitting.is_empty() {
        draft.control = None;
        return;
    }
    ui.label("ControlNet");
    ui.vertical(|ui| {
        let shown = draft
            .control
            .as_ref()
            .map_or("none".to_string(), |control| {
                control.model.file_name().map_or_else(
                    || control.model.display().to_string(),
                    |name| name.to_string_lossy().into_owned(),
                )
            });
        egui::ComboBox::from_id_salt("controlnet")
            .selected_text(shown)
            .show_ui(ui, |ui| {
                if ui
                    .selectable_label(draft.control.is_none(), "none")
                    .clicked()
                {
                    draft.control = None;
                }
                for net in &fitting {
                    let picked = draft.control.as_ref().is_some_and(|c| c.model == net.path);
                    let label = ui
                        .selectable_label(picked, net.name())
                        .on_hover_text(net.path.display().to_string());
                    if label.clicked() && !picked {
                        let (image, scale, preprocess) = draft
                            .control
                            .as_ref()
                            .map_or((PathBuf::new(), 1.0, None), |c| {
                                (c.image.clone(), c.scale, c.preprocess.clone())
                            });
                        draft.control = Some(DraftControl {
                            model: net.path.clone(),
                            image,
                            scale,
                            preprocess,
                        });
                    }
                }
            });
        if let Some(control) = &mut draft.control {
            let mut text = control.image.display().to_string();
            let field = ui
                .add(egui::TextEdit::singleline(&mut text).hint_text("control image (PNG)"))
                .on_hover_text("an edge map, a depth map, a pose… or, with a preprocessor, any picture");
            if field.changed() {
                control.image = PathBuf::from(text);
            }
            // The thresholds on a line of their own, so that the panel keeps its width.
            let kind = |p: &Option<Preprocess>| p.as_ref().map(|p| (p.name(), p.annotator().map(Path::to_path_buf)));
            egui::ComboBox::from_id_salt("control-preprocess")
                .selected_text(preprocess_label(control.preprocess.as_ref()))
                .show_ui(ui, |ui| {
                    for offered in preprocessors(frame.local_models) {
                        let picked = kind(&offered) == kind(&control.preprocess);
                        let label = ui.selectable_label(picked, preprocess_label(offered.as_ref()));
                        if label.clicked() && !picked {
                            control.preprocess = offered;
                        }
                    }
                })
                .response
                .on_hover_text("how the control image is made of the picture (A1111's preprocessors; those with a file run an annotator network from the model folders)");
            ui.horizontal(|ui| {
                if let Some(Preprocess::Canny { low, high }) = &mut control.preprocess {
                    ui.add(egui::DragValue::new(low).range(0.0..=*high).speed(1.0))
                        .on_hover_text("below this a gradient is no edge (A1111's 100)");
                    ui.add(egui::DragValue::new(high).range(*low..=1000.0).speed(1.0))
                        .on_hover_text(
                            "above this a gradient is an edge; between the two, one that touches an edge (A1111's 200)",
                        );
                    ui.label("thresholds");
                }
                if let Some(Preprocess::Mlsd {
                    thresholds: (value, distance),
                    ..
                }) = &mut control.preprocess
                {
                    ui.add(egui::DragValue::new(value).range(0.0..=2.0).speed(0.01))
                        .on_hover_text("a segment centre's least score (A1111's 0.1)");
                    ui.add(egui::DragValue::new(distance).range(0.0..=20.0).speed(0.1))
                        .on_hover_text(
                            "a segment's least length, in pixels of half the picture (A1111's 0.1): raise it to drop short lines",
                        );
                    ui.label("thresholds");
                }
            });
            ui.add(
                egui::Slider::new(&mut control.scale, 0.0..=2.0)
                    .step_by(0.05)
                    .text("scale"),
            )
            .on_hover_text("how strongly the control image steers the picture");
            if let Some(image) = frame.thumbnails.0.get(&control_thumbnail(control)) {
                frame.thumbnail(ui, image, None, 64.0);
            }
        }
    });
    ui.end_row();
}

/// For an SDXL base model: none, or an SDXL refiner found in the model folders that takes over
/// its latents, with the share of the run the base takes first (a form row only then).
fn refiner(ui: &mut egui::Ui, draft: &mut Draft, local: &LocalModels) {
    let base = Path::new(&draft.model);
    if !local.xl_bases.iter().any(|path| path == base) || local.refiners.is_empty() {
        draft.refiner = None;
        return;
    }
    let name = |path: &Path| {
        path.file_name().map_or_else(
            || path.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        )
    };
    ui.label("Refiner");
    ui.horizontal(|ui| {
        let shown = draft
            .refiner
            .as_ref()
            .map_or("none".to_string(), |(path, _)| name(path));
        egui::ComboBox::from_id_salt("refiner")
            .selected_text(shown)
            .show_ui(ui, |ui| {
                if ui.selectable_label(draft.refiner.is_none(), "none").clicked() {
                    draft.refiner = None;
                }
                for path in &local.refiners {
                    let picked = draft.refiner.as_ref().is_some_and(|(p, _)| p == path);
                    if ui.selectable_label(picked, name(path)).clicked() {
                        let switch = draft.refiner.as_ref().map_or(0.8, |(_, s)| *s);
                        draft.refiner = Some((path.clone(), switch));
                    }
                }
            });
        if let Some((_, switch)) = &mut draft.refiner {
            ui.add(
                egui::Slider::new(switch, 0.5..=0.95)
                    .step_by(0.05)
                    .text("switch"),
            )
            .on_hover_text("the share of the noise schedule the base model runs before the refiner takes over its latents");
        }
    });
    ui.end_row();
}

pub(super) fn show(ui: &mut egui::Ui, state: &mut EditorUi, frame: &mut Frame) {
    let (draft, start_tools, lora_filter) = (
        &mut state.draft,
        &mut state.start_tools,
        &mut state.lora_filter,
    );
    egui::Grid::new("generate_form")
        .num_columns(2)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            ui.label("Name");
            ui.text_edit_singleline(&mut draft.name);
            ui.end_row();
            ui.label("Kind");
            egui::ComboBox::from_id_salt("kind")
                .selected_text(draft.kind.as_str())
                .show_ui(ui, |ui| {
                    for kind in Kind::ALL {
                        ui.selectable_value(&mut draft.kind, kind, kind.as_str());
                    }
                });
            ui.end_row();
            ui.label("Prompt");
            ui.vertical(|ui| {
                ui.add(egui::TextEdit::multiline(&mut draft.prompt).desired_rows(2));
                // What A1111's `AND` and `[from:to:when]` / `[a|b]` make of it, step by step
                // (its LoRA and hypernetwork tags are no text).
                if draft.model_is_stable_diffusion() {
                    let text = without_network_tags(&draft.prompt);
                    for line in prompt_schedule::outline(&text, draft.steps as usize, 6) {
                        ui.weak(line);
                    }
                }
            });
            ui.end_row();
            ui.label("Negative");
            ui.text_edit_singleline(&mut draft.negative_prompt);
            ui.end_row();
            ui.label("Model");
            // (what the recipe says, what the list shows)
            let mut models = vec![("house".to_string(), "house".to_string())];
            models.extend(frame.view.models.iter().map(|model| {
                let name = format!("registry:{}", model.name);
                (name.clone(), name)
            }));
            models.extend(frame.local_models.folders.iter().map(|folder| {
                let name = folder.file_name().map_or_else(
                    || folder.display().to_string(),
                    |name| name.to_string_lossy().into_owned(),
                );
                (
                    folder.to_string_lossy().into_owned(),
                    format!("{name} · Stable Diffusion"),
                )
            }));
            let shown = models
                .iter()
                .find(|(model, _)| *model == draft.model)
                .map_or(draft.model.clone(), |(_, label)| label.clone());
            egui::ComboBox::from_id_salt("model")
                .selected_text(shown)
                .show_ui(ui, |ui| {
                    for (model, label) in models {
                        ui.selectable_value(&mut draft.model, model, label);
                    }
                });
            ui.end_row();
            if draft.model_is_stable_diffusion() {
                ui.label("Sampler");
                egui::ComboBox::from_id_salt("sampler")
                    .selected_text(draft.sampler.map_or("the model's scheduler", Sampler::name))
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut draft.sampler, None, "the model's scheduler");
                        for (sampler, name) in Sampler::ALL {
                            ui.selectable_value(&mut draft.sampler, Some(sampler), name);
                        }
                    });
                ui.end_row();
                ui.label("LoRAs");
                loras(ui, draft, frame.local_models, lora_filter);
                ui.end_row();
                ui.label("Embeddings");
                embeddings(ui, draft, frame.local_models);
                ui.end_row();
                ui.label("Hypernetworks");
                hypernetworks(ui, draft, frame.local_models);
                ui.end_row();
                ui.label("VAE");
                vae(ui, draft, frame.local_models);
                ui.end_row();
                refiner(ui, draft, frame.local_models);
                controlnet(ui, draft, frame);
            } else {
                draft.sampler = None;
                draft.loras.clear();
                draft.embeddings.clear();
                draft.vae = None;
                draft.guidance_rescale = 0.0;
                draft.clip_skip = 1;
                draft.hires = None;
                draft.refiner = None;
                draft.control = None;
            }
            ui.label("Start from");
            start::show(ui, draft, start_tools, frame);
            ui.end_row();
            ui.label("Seed");
            ui.horizontal(|ui| {
                ui.add(egui::DragValue::new(&mut draft.seed));
                if ui.button("🎲").on_hover_text("a random seed").clicked() {
                    draft.seed = rand::random::<u32>().into();
                }
            });
            ui.end_row();
            ui.label("Steps");
            ui.add(egui::Slider::new(&mut draft.steps, 1..=100));
            ui.end_row();
            ui.label("Guidance");
            ui.add(egui::Slider::new(&mut draft.guidance, 0.0..=15.0).step_by(0.5));
            ui.end_row();
            if draft.model_is_stable_diffusion() {
                ui.label("Guidance rescale");
                ui.add(
                    egui::Slider::new(&mut draft.guidance_rescale, 0.0..=1.0).step_by(0.05),
                )
                .on_hover_text(
                    "scale strong guidance back to the prompt's own spread (0.7 for zero-terminal-SNR models; 0 is off)",
                );
                ui.end_row();
                ui.label("CLIP skip");
                ui.add(egui::Slider::new(&mut draft.clip_skip, 1..=4)).on_hover_text(
                    "the text-encoder layer, from the last, that conditions the image: 2 where the model's page says \"Clip skip: 2\"",
                );
                ui.end_row();
            }
            ui.label("Size");
            let sizes: Vec<u32> = if draft.model_is_stable_diffusion() {
                SIZES.iter().chain(&HIRES_SIZES).copied().collect()
            } else {
                SIZES.to_vec()
            };
            egui::ComboBox::from_id_salt("size")
                .selected_text(format!("{0}×{0}", draft.size))
                .show_ui(ui, |ui| {
                    for size in sizes {
                        ui.selectable_value(&mut draft.size, size, format!("{size}×{size}"));
                    }
                });
            ui.end_row();
            if draft.model_is_stable_diffusion() && draft.kind != Kind::Animation {
                ui.label("Hires pass");
                ui.horizontal(|ui| {
                    let mut on = draft.hires.is_some();
                    ui.checkbox(&mut on, "").on_hover_text(
                        "draw at the model's own size, then scale up to Size and redraw there (A1111's hires. fix): Size a multiple of 64 above the model's",
                    );
                    match (on, draft.hires.as_mut()) {
                        (true, Some(strength)) => {
                            ui.add(egui::Slider::new(strength, 0.05..=1.0).text("strength"));
                            hires_upscaler(ui, &mut draft.hires_upscaler, frame.local_models);
                        }
                        (true, None) => draft.hires = Some(0.6),
                        (false, _) => draft.hires = None,
                    }
                });
                ui.end_row();
            } else {
                draft.hires = None;
            }
            ui.label("Tileable");
            ui.checkbox(&mut draft.tileable, "seamless edges");
            ui.end_row();
            ui.label("Pixel art");
            ui.horizontal(|ui| {
                let mut on = draft.pixel_art.is_some();
                ui.checkbox(&mut on, "");
                match (on, draft.pixel_art.as_mut()) {
                    (true, Some((colors, scale))) => {
                        ui.add(egui::Slider::new(colors, 2..=64).text("colours"));
                        ui.add(egui::Slider::new(scale, 1..=8).text("×"));
                    }
                    (true, None) => draft.pixel_art = Some((16, 1)),
                    (false, _) => draft.pixel_art = None,
                }
            });
            ui.end_row();
            if draft.kind == Kind::Animation {
                ui.label("Frames");
                ui.horizontal(|ui| {
                    ui.add(egui::Slider::new(&mut draft.frames, 2..=16));
                    ui.add(egui::Slider::new(&mut draft.fps, 1..=30).text("fps"));
                });
                ui.end_row();
            }
        });

    let problems = draft.check().err();
    if let Some(problems) = &problems {
        for problem in &problems.0 {
            ui.colored_label(ui.visuals().error_fg_color, problem);
        }
    }
    let generating = matches!(frame.preview, Preview::Generating(_));
    ui.horizontal(|ui| {
        let ready = problems.is_none() && !generating;
        if ui
            .add_enabled(ready, egui::Button::new("▶ Generate"))
            .clicked()
        {
            frame
                .intents
                .push(Intent::Editor(Box::new(EditorAction::Generate(
                    draft.clone(),
                ))));
        }
        if ui
            .add_enabled(problems.is_none(), egui::Button::new("💾 Save as recipe"))
            .on_hover_text(format!(
                "write {} into the recipes folder; the game remakes it on every save",
                draft.file_name()
            ))
            .clicked()
        {
            frame
                .intents
                .push(Intent::Editor(Box::new(EditorAction::SaveRecipe(
                    draft.clone(),
                ))));
        }
    });
    ui.separator();
    match frame.preview {
        Preview::Empty => {
            ui.weak("Generate to see a preview here.");
        }
        Preview::Generating(since) => {
            ui.horizontal(|ui| {
                ui.add(egui::Spinner::new());
                ui.label(format!(
                    "generating on the async pool… {:.1} s",
                    since.elapsed().as_secs_f32()
                ));
            });
        }
        Preview::Failed(message) => {
            ui.colored_label(ui.visuals().error_fg_color, message);
        }
        Preview::Ready(image) => preview(ui, image, frame),
    }
}

/// The generated image: frames cycling for animations, a 3×3 tiling for tileable images.
fn preview(ui: &mut egui::Ui, image: &PreviewImage, frame: &Frame) {
    ui.label(format!(
        "{} — {}×{}, seed {}, {}",
        image.draft.name,
        image.size.x,
        image.size.y,
        image.draft.seed,
        if image.seconds > 0.0 {
            format!("{:.1} s", image.seconds)
        } else {
            "from the cache".into()
        }
    ));
    let Some((texture, size)) = frame.texture(&image.image) else {
        ui.add(egui::Spinner::new());
        return;
    };
    if !image.frames.is_empty() {
        let tick = frame.elapsed.as_secs_f64() / image.frame_time.as_secs_f64().max(1e-3);
        let (uv, frame_size) = sub_rect(image.frames[tick as usize % image.frames.len()], size);
        let scale = 256.0 / frame_size.x.max(frame_size.y);
        ui.add(egui::Image::new((texture, frame_size * scale)).uv(uv));
        ui.weak(format!(
            "{} frames at {} fps",
            image.frames.len(),
            image.draft.fps
        ));
        return;
    }
    if image.draft.tileable {
        let tile = egui::Vec2::splat(96.0);
        egui::Grid::new("tiled_preview")
            .spacing([0.0, 0.0])
            .show(ui, |ui| {
                for _ in 0..3 {
                    for _ in 0..3 {
                        ui.add(egui::Image::new((texture, tile)));
                    }
                    ui.end_row();
                }
            });
        ui.weak("tiled 3×3: seams would show here");
        return;
    }
    let scale = 256.0 / size.x.max(size.y);
    ui.add(egui::Image::new((texture, size * scale)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_threshold_or_annotator_makes_another_thumbnail() {
        let control = |thresholds, file: &str| DraftControl {
            model: PathBuf::from("/models/ControlNet/mlsd"),
            image: PathBuf::from("/art/room.png"),
            scale: 1.0,
            preprocess: Some(Preprocess::Mlsd {
                annotator: PathBuf::from(file),
                thresholds,
            }),
        };
        let first = control_thumbnail(&control((0.1, 0.1), "/a/mlsd.pth"));
        assert_eq!(
            first,
            control_thumbnail(&control((0.1, 0.1), "/a/mlsd.pth"))
        );
        assert_ne!(
            first,
            control_thumbnail(&control((0.1, 5.0), "/a/mlsd.pth"))
        );
        assert_ne!(
            first,
            control_thumbnail(&control((0.1, 0.1), "/b/mlsd.pth"))
        );
    }
}
