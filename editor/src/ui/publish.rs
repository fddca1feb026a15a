//! Publish: the selected asset's state on the chain; mint it with a royalty, list it at a
//! price, or take a listing down.

use autonomy_pipeline::economy::units::parse_auton;
use bevy_autonomy::ChainRequest;
use bevy_egui::egui;

use super::{EditorUi, Frame, Intent, auton, hex_prefix};
use crate::chain_view::TokenStatus;

pub(super) fn show(ui: &mut egui::Ui, state: &mut EditorUi, frame: &mut Frame) {
    let Some(asset) = frame.library.selected().cloned() else {
        ui.weak("Select an asset in the Assets panel first.");
        return;
    };
    let Some(token_id) = asset.token_id else {
        ui.colored_label(
            ui.visuals().error_fg_color,
            "This asset has no readable manifest, so it cannot be minted.",
        );
        return;
    };
    ui.horizontal(|ui| {
        frame.thumbnail(ui, &asset.image, asset.atlas.as_ref(), 96.0);
        ui.vertical(|ui| {
            ui.heading(&asset.label);
            ui.weak(format!(
                "token {}",
                hex_prefix(&token_id.to_be_bytes::<32>())
            ));
            match frame.view.tokens.get(&token_id) {
                None => {
                    ui.weak("reading the chain…");
                }
                Some(TokenStatus::Unminted) => {
                    ui.label("Not minted yet.");
                }
                Some(TokenStatus::Minted { owner, listed }) => {
                    ui.label(format!("Minted · owned by {}", frame.who(*owner)));
                    if let Some(price) = listed {
                        ui.label(format!("Listed at {}", auton(*price)));
                    }
                }
            }
        });
    });
    ui.separator();
    let price = parse_auton(&state.price);
    egui::Grid::new("publish_form")
        .num_columns(2)
        .show(ui, |ui| {
            ui.label("Royalty");
            ui.add(
                egui::Slider::new(&mut state.royalty_bps, 0..=1000)
                    .custom_formatter(|bps, _| format!("{:.1} %", bps / 100.0)),
            );
            ui.end_row();
            ui.label("Price");
            ui.horizontal(|ui| {
                ui.add(egui::TextEdit::singleline(&mut state.price).desired_width(80.0));
                ui.label("AUTON");
            });
            ui.end_row();
        });
    if let Err(problem) = &price {
        ui.colored_label(ui.visuals().error_fg_color, format!("price: {problem}"));
    }
    let price = price.ok();
    let status = frame.view.tokens.get(&token_id).copied();
    let publish = |list_price| {
        Intent::Chain(ChainRequest::Publish {
            path: asset.file.clone(),
            list_price,
            royalty_bps: state.royalty_bps,
        })
    };
    ui.horizontal(|ui| match status {
        Some(TokenStatus::Unminted) => {
            if ui.button("Mint").clicked() {
                frame.intents.push(publish(None));
            }
            if ui
                .add_enabled(price.is_some(), egui::Button::new("Mint & list"))
                .clicked()
            {
                frame.intents.push(publish(price));
            }
        }
        Some(TokenStatus::Minted { owner, listed }) if owner == frame.player => {
            if listed.is_some() {
                if ui.button("Take down").clicked() {
                    frame
                        .intents
                        .push(Intent::Chain(ChainRequest::Cancel { token_id }));
                }
            } else if let Some(price) = price
                && ui.button("List").clicked()
            {
                frame
                    .intents
                    .push(Intent::Chain(ChainRequest::List { token_id, price }));
            }
        }
        Some(TokenStatus::Minted { .. }) => {
            ui.weak("Someone else owns it now.");
        }
        None => {}
    });
    ui.weak("Minting stores the files and the signed manifest by CID and records the provenance on the chain.");
}
