//! Drawing the editor: a side panel with one tab per panel and a status line. Panels only
//! read state and queue [`Intent`]s; the draw system sends them as the same messages tests
//! send ([`EditorAction`], [`ChainRequest`]).

mod assets;
mod generate;
mod governance;
mod market;
mod models;
mod publish;
mod start;

pub(crate) use generate::load_control_images;
pub use governance::promotion;
pub use start::StartTools;
pub(crate) use start::{load_start_images, take_dropped_images};

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use alloy_primitives::{Address, U256};
use autonomy_pipeline::economy::units::format_auton;
use bevy::ecs::system::SystemParam;
use bevy::prelude::*;
use bevy_autonomy::{Chain, ChainRequest, Generation, load_png};
use bevy_egui::{EguiContexts, EguiTextureHandle, egui};

use crate::actions::{EditorAction, EditorLog, Preview};
use crate::chain_view::ChainView;
use crate::draft::Draft;
use crate::library::AssetLibrary;
use crate::local_models::LocalModels;

/// The editor's panels, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Panel {
    /// Prompt → preview → recipe.
    Generate,
    /// Generated assets and their provenance.
    Assets,
    /// Mint and list the selected asset.
    Publish,
    /// Listings, buying, payouts.
    Market,
    /// Voting power, proposals, votes.
    Governance,
    /// Registered models, versions, datasets.
    Models,
}

impl Panel {
    /// Every panel, in tab order.
    pub const ALL: [Panel; 6] = [
        Panel::Generate,
        Panel::Assets,
        Panel::Publish,
        Panel::Market,
        Panel::Governance,
        Panel::Models,
    ];

    /// The tab's title.
    pub fn title(self) -> &'static str {
        match self {
            Panel::Generate => "Generate",
            Panel::Assets => "Assets",
            Panel::Publish => "Publish",
            Panel::Market => "Market",
            Panel::Governance => "Governance",
            Panel::Models => "Models",
        }
    }
}

/// What the panels remember between frames.
#[derive(Resource, Debug, Clone)]
pub struct EditorUi {
    /// Whether the editor shows.
    pub open: bool,
    /// The key that shows and hides it.
    pub toggle: KeyCode,
    /// The panel showing.
    pub panel: Panel,
    /// The Generate form.
    pub draft: Draft,
    /// The Generate form's path field and mask brush.
    pub start_tools: StartTools,
    /// The Generate form's LoRA filter, as typed.
    pub lora_filter: String,
    /// Publish: royalty in basis points.
    pub royalty_bps: u16,
    /// Publish: the listing price, as typed.
    pub price: String,
    /// Governance: the address to delegate to, as typed.
    pub delegate_to: String,
}

impl EditorUi {
    /// Fresh state: the Generate panel, the default draft, 5 % royalty, a 10 Auton price.
    pub fn new(open: bool, toggle: KeyCode) -> Self {
        Self {
            open,
            toggle,
            panel: Panel::Generate,
            draft: Draft::default(),
            start_tools: StartTools::default(),
            lora_filter: String::new(),
            royalty_bps: 500,
            price: "10".into(),
            delegate_to: String::new(),
        }
    }
}

/// Images loaded from files, by file: listed tokens' pictures from the content store, and
/// start images from outside the asset library.
#[derive(Resource, Debug, Default)]
pub struct Thumbnails(pub HashMap<PathBuf, Handle<Image>>);

/// What a panel asks for.
pub(crate) enum Intent {
    /// An editor action (boxed: a draft is large beside a chain request).
    Editor(Box<EditorAction>),
    /// A chain request.
    Chain(ChainRequest),
}

/// Everything a panel reads while drawing, and where it puts what it asks for.
pub(crate) struct Frame<'a> {
    pub library: &'a mut AssetLibrary,
    pub view: &'a ChainView,
    pub local_models: &'a LocalModels,
    pub preview: &'a Preview,
    pub player: Address,
    pub textures: &'a HashMap<AssetId<Image>, egui::TextureId>,
    pub images: &'a Assets<Image>,
    pub layouts: &'a Assets<TextureAtlasLayout>,
    pub thumbnails: &'a Thumbnails,
    pub elapsed: Duration,
    pub intents: Vec<Intent>,
}

impl Frame<'_> {
    /// The egui texture of `image` and its size, once the image is loaded.
    pub fn texture(&self, image: &Handle<Image>) -> Option<(egui::TextureId, egui::Vec2)> {
        let texture = *self.textures.get(&image.id())?;
        let size = self.images.get(image)?.size_f32();
        Some((texture, egui::vec2(size.x, size.y)))
    }

    /// Draws `image` (an animation's first frame, given its atlas) fitted into a `side`-pixel
    /// square, crisp (nearest-neighbour upscaling), or a spinner while it loads.
    pub fn thumbnail(
        &self,
        ui: &mut egui::Ui,
        image: &Handle<Image>,
        atlas: Option<&Handle<TextureAtlasLayout>>,
        side: f32,
    ) -> egui::Response {
        let Some((texture, size)) = self.texture(image) else {
            return ui.add_sized([side, side], egui::Spinner::new());
        };
        let first = atlas
            .and_then(|atlas| self.layouts.get(atlas))
            .and_then(|layout| layout.textures.first().copied());
        let (uv, shown) = match first {
            Some(rect) => sub_rect(rect, size),
            None => (
                egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
                size,
            ),
        };
        let scale = side / shown.x.max(shown.y);
        ui.add(egui::Image::new((texture, shown * scale)).uv(uv))
    }

    /// A short label for an account: "you" for the player.
    pub fn who(&self, account: Address) -> String {
        if account == self.player {
            "you".into()
        } else {
            short(account)
        }
    }
}

/// The UV rectangle of `rect` in an image of `size` pixels, and its size in pixels.
pub(crate) fn sub_rect(rect: URect, size: egui::Vec2) -> (egui::Rect, egui::Vec2) {
    let uv = egui::Rect::from_min_max(
        egui::pos2(rect.min.x as f32 / size.x, rect.min.y as f32 / size.y),
        egui::pos2(rect.max.x as f32 / size.x, rect.max.y as f32 / size.y),
    );
    (uv, egui::vec2(rect.width() as f32, rect.height() as f32))
}

/// `0x1234…abcd`.
pub(crate) fn short(account: Address) -> String {
    let text = account.to_string();
    format!("{}…{}", &text[..6], &text[text.len() - 4..])
}

/// `0x1234abcd…`: the first six bytes of a hash or token id.
pub(crate) fn hex_prefix(bytes: &[u8]) -> String {
    format!("0x{}…", hex::encode(&bytes[..bytes.len().min(6)]))
}

/// `12.5 AUTON`.
pub(crate) fn auton(amount: U256) -> String {
    format_auton(amount)
}

/// `in 3m 20s` / `4m ago`.
pub(crate) fn relative(when: u64, now: u64) -> String {
    let span = |seconds: u64| humantime::format_duration(Duration::from_secs(seconds)).to_string();
    match when.cmp(&now) {
        std::cmp::Ordering::Greater => format!("in {}", span(when - now)),
        std::cmp::Ordering::Less => format!("{} ago", span(now - when)),
        std::cmp::Ordering::Equal => "now".into(),
    }
}

/// Shows or hides the editor on its key.
pub(crate) fn toggle_editor(keys: Option<Res<ButtonInput<KeyCode>>>, mut ui: ResMut<EditorUi>) {
    if keys.is_some_and(|keys| keys.just_pressed(ui.toggle)) {
        ui.open = !ui.open;
    }
}

/// Loads the content-store images of listed tokens the library does not have.
pub(crate) fn load_thumbnails(
    view: Res<ChainView>,
    mut thumbnails: ResMut<Thumbnails>,
    mut images: ResMut<Assets<Image>>,
) {
    for listing in &view.listings {
        let Some(file) = &listing.image_file else {
            continue;
        };
        if thumbnails.0.contains_key(file) {
            continue;
        }
        match load_png(file) {
            Ok(image) => {
                thumbnails.0.insert(file.clone(), images.add(image));
            }
            Err(message) => warn!("no thumbnail for {}: {message}", listing.name),
        }
    }
}

/// What the editor reads while drawing.
#[derive(SystemParam)]
pub(crate) struct EditorReads<'w> {
    view: Res<'w, ChainView>,
    local_models: Res<'w, LocalModels>,
    preview: Res<'w, Preview>,
    log: Res<'w, EditorLog>,
    chain: Res<'w, Chain>,
    generation: Res<'w, Generation>,
    images: Res<'w, Assets<Image>>,
    layouts: Res<'w, Assets<TextureAtlasLayout>>,
    thumbnails: Res<'w, Thumbnails>,
    time: Res<'w, Time>,
}

/// Draws the editor and sends what its panels ask for.
pub(crate) fn draw_editor(
    mut contexts: EguiContexts,
    mut state: ResMut<EditorUi>,
    mut library: ResMut<AssetLibrary>,
    reads: EditorReads,
    mut editor_actions: MessageWriter<EditorAction>,
    mut chain_requests: MessageWriter<ChainRequest>,
) -> Result {
    let EditorReads {
        view,
        local_models,
        preview,
        log,
        chain,
        generation,
        images,
        layouts,
        thumbnails,
        time,
    } = reads;
    if !state.open {
        return Ok(());
    }
    let mut wanted: Vec<AssetId<Image>> = library.assets.iter().map(|a| a.image.id()).collect();
    wanted.extend(thumbnails.0.values().map(Handle::id));
    if let Preview::Ready(ready) = &*preview {
        wanted.push(ready.image.id());
    }
    let textures: HashMap<AssetId<Image>, egui::TextureId> = wanted
        .into_iter()
        .map(|id| (id, contexts.add_image(EguiTextureHandle::Weak(id))))
        .collect();
    let ctx = contexts.ctx_mut()?.clone();
    let mut frame = Frame {
        library: &mut library,
        view: &view,
        local_models: &local_models,
        preview: &preview,
        player: chain.player,
        textures: &textures,
        images: &images,
        layouts: &layouts,
        thumbnails: &thumbnails,
        elapsed: time.elapsed(),
        intents: Vec::new(),
    };
    let mut root = egui::Ui::new(
        ctx.clone(),
        "autonomy_editor_root".into(),
        egui::UiBuilder::new()
            .layer_id(egui::LayerId::background())
            .max_rect(ctx.viewport_rect()),
    );
    let busy = generation.busy() || matches!(*preview, Preview::Generating(_));
    let toggle = state.toggle;
    egui::Panel::right("autonomy_editor")
        .default_size(460.0)
        .resizable(true)
        .show(&mut root, |ui| {
            ui.horizontal(|ui| {
                ui.heading("Autonomy");
                if busy {
                    ui.add(egui::Spinner::new());
                }
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    ui.weak(format!("{} · {}", short(chain.player), auton(view.balance)));
                });
            });
            ui.horizontal_wrapped(|ui| {
                for panel in Panel::ALL {
                    ui.selectable_value(&mut state.panel, panel, panel.title());
                }
            });
            ui.separator();
            egui::Panel::bottom("autonomy_editor_log")
                .resizable(false)
                .show(ui, |ui| status_line(ui, &log, &view, toggle));
            egui::ScrollArea::vertical().show(ui, |ui| match state.panel {
                Panel::Generate => generate::show(ui, &mut state, &mut frame),
                Panel::Assets => assets::show(ui, &mut frame),
                Panel::Publish => publish::show(ui, &mut state, &mut frame),
                Panel::Market => market::show(ui, &mut frame),
                Panel::Governance => governance::show(ui, &mut state, &mut frame),
                Panel::Models => models::show(ui, &mut frame),
            });
        });
    for intent in frame.intents {
        match intent {
            Intent::Editor(action) => {
                editor_actions.write(*action);
            }
            Intent::Chain(request) => {
                chain_requests.write(request);
            }
        }
    }
    if busy || matches!(*preview, Preview::Ready(_)) {
        ctx.request_repaint();
    }
    Ok(())
}

/// The last thing that happened, in green or red, and chain errors; before anything happened,
/// the key that hides the editor.
fn status_line(ui: &mut egui::Ui, log: &EditorLog, view: &ChainView, toggle: KeyCode) {
    if let Some(error) = &view.error {
        ui.colored_label(ui.visuals().error_fg_color, format!("chain: {error}"));
    }
    match log.lines.last() {
        Some(line) if line.ok => {
            ui.colored_label(egui::Color32::from_rgb(120, 200, 120), &line.text);
        }
        Some(line) => {
            ui.colored_label(ui.visuals().error_fg_color, &line.text);
        }
        None => {
            ui.weak(format!("Ready. {toggle:?} hides the editor."));
        }
    }
}
