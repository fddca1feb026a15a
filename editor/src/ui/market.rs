//! Market: live listings with thumbnails and prices, Buy, and where each sale's Auton goes.

use bevy_autonomy::ChainRequest;
use bevy_egui::egui;

use super::{Frame, Intent, auton};

pub(super) fn show(ui: &mut egui::Ui, frame: &mut Frame) {
    let view = frame.view;
    ui.horizontal(|ui| {
        ui.label(format!("Balance {}", auton(view.balance)));
        if !view.owed.is_zero() {
            ui.label(format!("· owed to you {}", auton(view.owed)));
            if ui
                .button("Withdraw")
                .on_hover_text(
                    "sale proceeds and royalties wait in the marketplace until withdrawn",
                )
                .clicked()
            {
                frame.intents.push(Intent::Chain(ChainRequest::Withdraw));
            }
        }
    });
    ui.weak(format!(
        "Fees: treasury {:.1} %, model contributors {:.1} %",
        f64::from(view.fees.0) / 100.0,
        f64::from(view.fees.1) / 100.0
    ));
    ui.separator();
    if view.listings.is_empty() {
        ui.weak("Nothing is listed.");
    }
    for listing in &view.listings {
        ui.horizontal(|ui| {
            let library = frame
                .library
                .by_token(listing.token_id)
                .map(|a| (a.image.clone(), a.atlas.clone()));
            let image = library.or_else(|| {
                let file = listing.image_file.as_ref()?;
                Some((frame.thumbnails.0.get(file).cloned()?, None))
            });
            match image {
                Some((image, atlas)) => {
                    frame.thumbnail(ui, &image, atlas.as_ref(), 64.0);
                }
                None => {
                    ui.add_sized([64.0, 64.0], egui::Label::new("?"));
                }
            }
            ui.vertical(|ui| {
                ui.strong(&listing.name);
                ui.label(format!(
                    "{} · sold by {}",
                    auton(listing.price),
                    frame.who(listing.seller)
                ));
                let mine = listing.seller == frame.player;
                let enough = view.balance >= listing.price;
                let buy = ui
                    .add_enabled(!mine && enough, egui::Button::new("Buy"))
                    .on_disabled_hover_text(if mine {
                        "your own listing"
                    } else {
                        "not enough Auton"
                    });
                if buy.clicked() {
                    frame.intents.push(Intent::Chain(ChainRequest::Buy {
                        token_id: listing.token_id,
                        max_price: listing.price,
                    }));
                }
                let payout = &listing.payout;
                egui::CollapsingHeader::new("Payout of a sale")
                    .id_salt(("payout", listing.token_id))
                    .default_open(true)
                    .show(ui, |ui| {
                        egui::Grid::new(("payout_grid", listing.token_id)).show(ui, |ui| {
                            let rows = [
                                (
                                    format!("seller {}", frame.who(listing.seller)),
                                    payout.proceeds,
                                ),
                                (
                                    format!("royalty to {}", frame.who(payout.royalty_receiver)),
                                    payout.royalty,
                                ),
                                ("model contributors".into(), payout.contributor_fee),
                                ("treasury (DAO)".into(), payout.fee),
                            ];
                            for (who, amount) in rows {
                                ui.label(who);
                                ui.label(auton(amount));
                                ui.end_row();
                            }
                        });
                    });
            });
        });
        ui.separator();
    }
}
