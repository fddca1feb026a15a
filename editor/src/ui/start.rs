//! Generate's *Start from* row: noise, a project asset or a PNG from elsewhere (typed in, or
//! dropped on the window), the strength, and for inpainting a mask painted over the picture.

use std::path::Path;

use bevy::prelude::*;
use bevy::window::FileDragAndDrop;
use bevy_autonomy::load_png;
use bevy_egui::egui;

use super::{EditorUi, Frame, Panel, Thumbnails};
use crate::actions::EditorLog;
use crate::draft::{Draft, Start};
use crate::mask;

/// The side of the painting area, in points.
const CANVAS: f32 = 256.0;

/// The row: what to start from, then (for an image) the strength and the mask.
pub(super) fn show(ui: &mut egui::Ui, draft: &mut Draft, tools: &mut StartTools, frame: &Frame) {
    ui.vertical(|ui| {
        ui.horizontal(|ui| {
            pick(ui, draft, frame);
            if let Some(start) = &mut draft.start {
                ui.add(
                    egui::Slider::new(&mut start.strength, 0.05..=1.0)
                        .step_by(0.05)
                        .text("strength"),
                )
                .on_hover_text(
                    "how far to move away from the image: low stays close, 1 ignores it",
                );
            }
        });
        ui.horizontal(|ui| {
            let field = egui::TextEdit::singleline(&mut tools.path)
                .hint_text("or a PNG's path (or drop one on the window)")
                .desired_width(260.0);
            let typed = ui.add(field);
            let entered = typed.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if (ui
                .add_enabled(!tools.path.trim().is_empty(), egui::Button::new("Use"))
                .clicked()
                || entered)
                && !tools.path.trim().is_empty()
            {
                let strength = draft.start_strength();
                match Start::from_file(Path::new(tools.path.trim()), strength) {
                    Ok(start) => {
                        draft.start = Some(start);
                        tools.problem = None;
                    }
                    Err(message) => tools.problem = Some(message),
                }
            }
        });
        if let Some(problem) = &tools.problem {
            ui.colored_label(ui.visuals().error_fg_color, problem);
        }
        if let Some(start) = &mut draft.start {
            let texture = start_texture(start, frame);
            mask_editor(ui, start, tools, texture);
        }
    });
}

/// Noise or a project asset (an asset cannot start from itself: its saved recipe would be its
/// own parent).
fn pick(ui: &mut egui::Ui, draft: &mut Draft, frame: &Frame) {
    let shown = draft.start.as_ref().map_or("noise".into(), Start::name);
    egui::ComboBox::from_id_salt("start")
        .selected_text(shown)
        .show_ui(ui, |ui| {
            if ui
                .selectable_label(draft.start.is_none(), "noise")
                .clicked()
            {
                draft.start = None;
            }
            for asset in frame
                .library
                .assets
                .iter()
                .filter(|a| a.label != draft.name)
            {
                let Some(file) = asset.image_file() else {
                    continue;
                };
                let picked = draft
                    .start
                    .as_ref()
                    .is_some_and(|start| start.asset.as_deref() == Some(asset.label.as_str()));
                if ui.selectable_label(picked, &asset.label).clicked() && !picked {
                    let strength = draft.start_strength();
                    draft.start = Some(Start {
                        asset: Some(asset.label.clone()),
                        file,
                        strength,
                        mask: None,
                    });
                }
            }
        });
}

/// The start image's egui texture and size, once loaded: a project asset's image follows its
/// remakes; a file from elsewhere is loaded by [`load_start_images`].
fn start_texture(start: &Start, frame: &Frame) -> Option<(egui::TextureId, egui::Vec2)> {
    let image = match &start.asset {
        Some(label) => &frame.library.get(label)?.image,
        None => frame.thumbnails.0.get(&start.file)?,
    };
    frame.texture(image)
}

/// The Generate panel's painting tools.
#[derive(Debug, Clone, PartialEq)]
pub struct StartTools {
    /// The path typed into *Start from*.
    pub path: String,
    /// The brush's radius, in the start image's pixels.
    pub brush: f32,
    /// Whether the primary button erases (the secondary one always does).
    pub erase: bool,
    /// Why the typed path could not be used.
    pub problem: Option<String>,
    /// Where the painting area was last drawn, in the window's logical pixels (what a script
    /// driving the pointer aims at).
    pub canvas: Option<egui::Rect>,
}

impl Default for StartTools {
    /// No path, a 6-pixel brush that paints.
    fn default() -> Self {
        Self {
            path: String::new(),
            brush: 6.0,
            erase: false,
            problem: None,
            canvas: None,
        }
    }
}

/// "Repaint only where painted": the picture with the mask over it in blue; dragging paints,
/// the secondary button (or *erase*) takes paint away.
fn mask_editor(
    ui: &mut egui::Ui,
    start: &mut Start,
    tools: &mut StartTools,
    texture: Option<(egui::TextureId, egui::Vec2)>,
) {
    let mut masked = start.mask.is_some();
    ui.checkbox(&mut masked, "repaint only where painted (inpainting)")
        .on_hover_text("paint over the picture what to repaint; the rest is kept");
    if !masked {
        start.mask = None;
        return;
    }
    let Some((texture, size)) = texture else {
        ui.add(egui::Spinner::new());
        return;
    };
    let (width, height) = (size.x as u32, size.y as u32);
    let mask = match &mut start.mask {
        Some(mask) if mask.dimensions() == (width, height) => mask,
        // New, or the image changed size since: a fresh mask at its size.
        other => other.insert(mask::blank(width, height)),
    };
    let scale = CANVAS / size.x.max(size.y);
    let (response, painter) = ui.allocate_painter(size * scale, egui::Sense::drag());
    let rect = response.rect;
    tools.canvas = Some(rect);
    let whole = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
    painter.image(texture, rect, whole, egui::Color32::WHITE);
    // Blue: it shows over the reds, browns and greens sprites are mostly made of.
    let paint = egui::Color32::from_rgba_unmultiplied(40, 120, 255, 150);
    for (y, first, end) in mask::runs(mask) {
        let min = rect.min + egui::vec2(first as f32, y as f32) * scale;
        let max = rect.min + egui::vec2(end as f32, (y + 1) as f32) * scale;
        painter.rect_filled(egui::Rect::from_min_max(min, max), 0.0, paint);
    }
    if response.is_pointer_button_down_on()
        && let Some(at) = response.interact_pointer_pos()
    {
        let erasing = tools.erase || ui.input(|i| i.pointer.secondary_down());
        let value = if erasing { mask::KEEP } else { mask::REPAINT };
        let in_mask =
            |pos: egui::Pos2| [(pos.x - rect.min.x) / scale, (pos.y - rect.min.y) / scale];
        let from = at - response.drag_delta();
        mask::stroke(mask, in_mask(from), in_mask(at), tools.brush, value);
    }
    if let Some(at) = response.hover_pos() {
        painter.circle_stroke(
            at,
            tools.brush * scale,
            egui::Stroke::new(1.0, egui::Color32::WHITE),
        );
    }
    ui.horizontal(|ui| {
        let largest = (width.max(height) as f32 / 4.0).max(2.0);
        ui.add(egui::Slider::new(&mut tools.brush, 0.5..=largest).text("brush"));
        ui.checkbox(&mut tools.erase, "erase")
            .on_hover_text("the right button always erases");
        if ui.button("Clear").clicked() {
            *mask = mask::blank(width, height);
        }
        if ui.button("Invert").clicked() {
            mask::invert(mask);
        }
    });
    let share = mask::coverage(mask);
    if share == 0.0 {
        ui.weak("paint what to repaint: nothing is yet");
    } else {
        ui.weak(format!("{:.0} % repainted", share * 100.0));
    }
}

/// A PNG dropped on the window becomes the draft's start (its strength kept), and the
/// Generate panel shows.
pub(crate) fn take_dropped_images(
    mut drops: MessageReader<FileDragAndDrop>,
    mut state: ResMut<EditorUi>,
    mut log: ResMut<EditorLog>,
) {
    for drop in drops.read() {
        let FileDragAndDrop::DroppedFile { path_buf, .. } = drop else {
            continue;
        };
        let strength = state.draft.start_strength();
        match Start::from_file(path_buf, strength) {
            Ok(start) => {
                log.push(true, format!("starting from {}", path_buf.display()));
                state.draft.start = Some(start);
                state.panel = Panel::Generate;
            }
            Err(message) => log.push(false, message),
        }
    }
}

/// Loads a start image from outside the asset library for the painter; one that cannot be
/// read is let go (saying why).
pub(crate) fn load_start_images(
    mut state: ResMut<EditorUi>,
    mut thumbnails: ResMut<Thumbnails>,
    mut images: ResMut<Assets<Image>>,
    mut log: ResMut<EditorLog>,
) {
    let Some(start) = state.draft.start.as_ref() else {
        return;
    };
    if start.asset.is_some() || thumbnails.0.contains_key(&start.file) {
        return;
    }
    match load_png(&start.file) {
        Ok(image) => {
            thumbnails.0.insert(start.file.clone(), images.add(image));
        }
        Err(message) => {
            log.push(false, message);
            state.draft.start = None;
        }
    }
}
