//! Models: registered models and their versions, each version's dataset (items, licences,
//! contributors) and contributors' shares, the active version, and "Propose promotion".

use bevy_egui::egui;

use super::governance::promotion_button;
use super::{Frame, Intent, auton, hex_prefix, short};

pub(super) fn show(ui: &mut egui::Ui, frame: &mut Frame) {
    let view = frame.view;
    if view.models.is_empty() {
        ui.weak("No models are registered yet: `autonomy models register`.");
    }
    for model in &view.models {
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading(&model.name);
                ui.weak(if model.community {
                    "community model: governance picks its version"
                } else {
                    "owner-controlled"
                });
            });
            ui.label(if model.active == 0 {
                "no active version yet".to_string()
            } else {
                format!("active version: v{}", model.active)
            });
            for version in &model.versions {
                let active = version.id.saturating_to::<u64>() == model.active;
                let title = format!(
                    "v{}{}{}",
                    version.id,
                    if active { " (active)" } else { "" },
                    if version.parent == 0 {
                        String::new()
                    } else {
                        format!(", fine-tuned from v{}", version.parent)
                    }
                );
                egui::CollapsingHeader::new(title)
                    .id_salt(("version", version.id))
                    .default_open(true)
                    .show(ui, |ui| {
                        ui.weak(format!(
                            "weights {}",
                            hex_prefix(version.weights.as_slice())
                        ));
                        ui.label(if version.access_price.is_zero() {
                            "free to use".to_string()
                        } else {
                            format!("access {}", auton(version.access_price))
                        });
                        ui.label("Contributors' shares of its fees:");
                        for (account, bps) in &version.contributors {
                            ui.label(format!(
                                "  {} {:.1} %",
                                frame.who(*account),
                                f64::from(*bps) / 100.0
                            ));
                        }
                        match &version.dataset {
                            Some(dataset) => {
                                ui.label(format!("Dataset: {} items", dataset.items));
                                let licences: Vec<String> = dataset
                                    .licences
                                    .iter()
                                    .map(|(licence, n)| format!("{licence} ({n})"))
                                    .collect();
                                ui.weak(format!("licences: {}", licences.join(", ")));
                                let contributors: Vec<String> = dataset
                                    .contributors
                                    .iter()
                                    .map(|(who, n)| {
                                        let who =
                                            who.parse().map(short).unwrap_or_else(|_| who.clone());
                                        format!("{who} ({n})")
                                    })
                                    .collect();
                                ui.weak(format!("images by: {}", contributors.join(", ")));
                            }
                            None => {
                                ui.weak("dataset: its weights are not in the model folders");
                            }
                        }
                        if model.community
                            && !active
                            && let Some(request) = promotion_button(ui, frame, model, version.id)
                        {
                            frame.intents.push(Intent::Chain(request));
                        }
                    });
            }
        });
    }
}
