//! Assets & provenance: the generated assets as thumbnails; the selected one's manifest (model
//! and version, seed, parents, creator, signature) and a Verify button.

use autonomy_pipeline::verify::Verdict;
use bevy_egui::egui;

use super::{Frame, Intent, hex_prefix};
use crate::actions::EditorAction;

pub(super) fn show(ui: &mut egui::Ui, frame: &mut Frame) {
    if frame.library.assets.is_empty() {
        ui.weak("No assets yet: save a recipe, or add *.recipe.toml files to the recipes folder.");
        return;
    }
    let mut picked = None;
    ui.horizontal_wrapped(|ui| {
        for asset in &frame.library.assets {
            let selected = frame.library.selected.as_deref() == Some(asset.label.as_str());
            let response = ui
                .vertical(|ui| {
                    ui.set_width(76.0);
                    let image = frame.thumbnail(ui, &asset.image, asset.atlas.as_ref(), 64.0);
                    let name = ui.selectable_label(selected, short_label(&asset.label));
                    image.union(name)
                })
                .inner;
            if response.interact(egui::Sense::click()).clicked() {
                picked = Some(asset.label.clone());
            }
        }
    });
    if picked.is_some() {
        frame.library.selected = picked;
    }
    ui.separator();
    let Some(asset) = frame.library.selected().cloned() else {
        return;
    };
    ui.horizontal(|ui| {
        frame.thumbnail(ui, &asset.image, asset.atlas.as_ref(), 128.0);
        ui.vertical(|ui| {
            ui.heading(&asset.label);
            if let Some(token) = asset.token_id {
                ui.weak(format!("token {}", hex_prefix(&token.to_be_bytes::<32>())));
            }
            if ui.button("🔍 Verify").clicked() {
                frame
                    .intents
                    .push(Intent::Editor(Box::new(EditorAction::Verify {
                        label: asset.label.clone(),
                    })));
            }
            match asset.verdict() {
                Some(Verdict::Verified) => {
                    ui.colored_label(egui::Color32::from_rgb(120, 200, 120), "✔ verified");
                }
                Some(Verdict::Unverifiable) => {
                    ui.colored_label(egui::Color32::from_rgb(220, 180, 80), "? unverifiable");
                }
                Some(Verdict::Tampered) => {
                    ui.colored_label(ui.visuals().error_fg_color, "✖ tampered");
                }
                None => {
                    ui.weak("not verified yet");
                }
            }
        });
    });
    let Some(manifest) = &asset.manifest else {
        ui.colored_label(
            ui.visuals().error_fg_color,
            format!("no readable manifest at {}", asset.file.display()),
        );
        return;
    };
    let version = frame.view.models.iter().find_map(|model| {
        model
            .versions
            .iter()
            .find(|v| hex::encode(v.weights) == manifest.model.weights_sha256)
            .map(|v| format!("{} v{}", model.name, v.id))
    });
    egui::Grid::new("manifest")
        .num_columns(2)
        .striped(true)
        .show(ui, |ui| {
            let recipe = &manifest.recipe;
            let field = |key: &str| match recipe.get(key) {
                Some(serde_json::Value::String(text)) => text.clone(),
                Some(value) => value.to_string(),
                None => String::new(),
            };
            let rows = [
                ("Kind", field("kind")),
                ("Prompt", field("prompt")),
                ("Seed", field("seed")),
                (
                    "Model",
                    format!(
                        "{} ({}…)",
                        manifest.model.name,
                        manifest.model.weights_sha256.get(..12).unwrap_or_default()
                    ),
                ),
                (
                    "Registry",
                    version.unwrap_or_else(|| "not a registered version".into()),
                ),
                ("Device", manifest.device.clone()),
                ("Created", manifest.created.clone()),
                (
                    "Creator",
                    manifest.creator.clone().unwrap_or_else(|| "—".into()),
                ),
                (
                    "Signature",
                    if manifest.signature.is_some() {
                        "signed (EIP-191)".into()
                    } else {
                        "unsigned".into()
                    },
                ),
            ];
            for (name, value) in rows {
                ui.label(name);
                ui.label(value);
                ui.end_row();
            }
            ui.label("Parents");
            ui.vertical(|ui| {
                if manifest.parents.is_empty() {
                    ui.label("none (made from a prompt)");
                }
                for parent in &manifest.parents {
                    ui.label(format!("{}: {}", parent.role, parent.reference));
                }
            });
            ui.end_row();
            ui.label("Files");
            ui.vertical(|ui| {
                for output in &manifest.outputs {
                    ui.label(&output.file);
                }
            });
            ui.end_row();
        });
    if let Some(reports) = &asset.reports {
        ui.collapsing("Verification", |ui| {
            for check in reports.iter().flat_map(|report| &report.checks) {
                ui.label(format!(
                    "{:?} {}: {}",
                    check.verdict, check.what, check.detail
                ));
            }
        });
    }
}

/// The last part of `folder/name`.
fn short_label(label: &str) -> &str {
    label.rsplit('/').next().unwrap_or(label)
}
