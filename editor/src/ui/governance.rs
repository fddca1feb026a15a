//! Governance: voting power and delegation; proposals with their state, countdown and tallies;
//! vote, queue and execute; propose promoting a model version.

use alloy_primitives::{Address, U256};
use autonomy_contracts::{Action, Proposal, ProposalState, Support};
use bevy_autonomy::ChainRequest;
use bevy_egui::egui;

use super::{EditorUi, Frame, Intent, auton, relative};
use crate::chain_view::ModelView;

pub(super) fn show(ui: &mut egui::Ui, state: &mut EditorUi, frame: &mut Frame) {
    let view = frame.view;
    egui::Grid::new("power").num_columns(2).show(ui, |ui| {
        ui.label("Voting power");
        ui.strong(auton(view.votes));
        ui.end_row();
        ui.label("Balance");
        ui.label(auton(view.balance));
        ui.end_row();
        ui.label("Votes through");
        ui.label(if view.delegate == Address::ZERO {
            "nobody yet: delegate to vote".to_string()
        } else {
            frame.who(view.delegate)
        });
        ui.end_row();
    });
    ui.horizontal(|ui| {
        if view.delegate != frame.player && ui.button("Delegate to myself").clicked() {
            frame
                .intents
                .push(Intent::Chain(ChainRequest::Delegate { to: frame.player }));
        }
        ui.add(
            egui::TextEdit::singleline(&mut state.delegate_to)
                .hint_text("0x… delegate")
                .desired_width(180.0),
        );
        let to = state.delegate_to.trim().parse::<Address>();
        if ui
            .add_enabled(to.is_ok(), egui::Button::new("Delegate"))
            .clicked()
            && let Ok(to) = to
        {
            frame
                .intents
                .push(Intent::Chain(ChainRequest::Delegate { to }));
        }
    });
    ui.separator();
    ui.heading("Proposals");
    if view.proposals.is_empty() {
        ui.weak("No proposals yet.");
    }
    for proposal in view.proposals.iter().rev() {
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.colored_label(
                    state_colour(proposal.state),
                    format!("{:?}", proposal.state),
                );
                ui.strong(&proposal.proposal.description);
            });
            let (opens, closes) = proposal.window;
            ui.weak(match proposal.state {
                ProposalState::Pending => format!("voting opens {}", relative(opens, view.now)),
                ProposalState::Active => format!("voting closes {}", relative(closes, view.now)),
                _ => format!("voting closed {}", relative(closes, view.now)),
            });
            let tally = proposal.tally;
            let total = tally.for_votes + tally.against + tally.abstain;
            for (name, votes) in [
                ("For", tally.for_votes),
                ("Against", tally.against),
                ("Abstain", tally.abstain),
            ] {
                let share = if total.is_zero() {
                    0.0
                } else {
                    (votes * U256::from(1000u32) / total).saturating_to::<u32>() as f32 / 1000.0
                };
                ui.add(
                    egui::ProgressBar::new(share)
                        .desired_width(260.0)
                        .text(format!("{name}: {}", auton(votes))),
                );
            }
            ui.horizontal(|ui| {
                let request = match proposal.state {
                    ProposalState::Active => {
                        let mut vote = None;
                        for (label, support) in [
                            ("👍 For", Support::For),
                            ("👎 Against", Support::Against),
                            ("Abstain", Support::Abstain),
                        ] {
                            if ui.button(label).clicked() {
                                vote = Some(ChainRequest::Vote {
                                    proposal: proposal.id,
                                    support,
                                });
                            }
                        }
                        vote
                    }
                    ProposalState::Succeeded => {
                        ui.button("Queue").clicked().then(|| ChainRequest::Queue {
                            proposal: proposal.proposal.clone(),
                        })
                    }
                    ProposalState::Queued => {
                        ui.button("Execute")
                            .clicked()
                            .then(|| ChainRequest::Execute {
                                proposal: proposal.proposal.clone(),
                            })
                    }
                    _ => None,
                };
                if let Some(request) = request {
                    frame.intents.push(Intent::Chain(request));
                }
            });
        });
    }
    ui.separator();
    ui.heading("Propose");
    let mut any = false;
    for model in view.models.iter().filter(|model| model.community) {
        for version in &model.versions {
            if version.id.saturating_to::<u64>() == model.active {
                continue;
            }
            any = true;
            ui.horizontal(|ui| {
                ui.label(format!("{} v{}", model.name, version.id));
                if let Some(request) = promotion_button(ui, frame, model, version.id) {
                    frame.intents.push(Intent::Chain(request));
                }
            });
        }
    }
    if !any {
        ui.weak("Every community model runs its newest version.");
    }
}

/// A "Propose promotion" button for making `version` the active version of `model`.
pub(super) fn promotion_button(
    ui: &mut egui::Ui,
    frame: &Frame,
    model: &ModelView,
    version: U256,
) -> Option<ChainRequest> {
    let deployment = frame.view.deployment.as_ref()?;
    let proposed = frame.view.proposals.iter().any(|p| {
        p.proposal.actions == [Action::set_active_version(deployment, model.id, version)]
            && !matches!(
                p.state,
                ProposalState::Defeated | ProposalState::Canceled | ProposalState::Expired
            )
    });
    let enough = !frame.view.votes.is_zero();
    let clicked = ui
        .add_enabled(!proposed && enough, egui::Button::new("Propose promotion"))
        .on_disabled_hover_text(if proposed {
            "already proposed"
        } else {
            "delegate your Auton first: proposing needs voting power"
        })
        .clicked();
    clicked.then(|| ChainRequest::Propose {
        proposal: promotion(deployment, model, version),
    })
}

/// The proposal that makes `version` the active version of `model`.
pub fn promotion(
    deployment: &autonomy_contracts::Deployment,
    model: &ModelView,
    version: U256,
) -> Proposal {
    Proposal::new(
        vec![Action::set_active_version(deployment, model.id, version)],
        format!("Promote {} to version {version}", model.name),
    )
}

fn state_colour(state: ProposalState) -> egui::Color32 {
    match state {
        ProposalState::Active => egui::Color32::from_rgb(110, 170, 255),
        ProposalState::Succeeded | ProposalState::Queued | ProposalState::Executed => {
            egui::Color32::from_rgb(120, 200, 120)
        }
        ProposalState::Defeated | ProposalState::Canceled | ProposalState::Expired => {
            egui::Color32::from_rgb(230, 110, 110)
        }
        ProposalState::Pending => egui::Color32::from_rgb(220, 180, 80),
    }
}
