//! The editor in a real window (Xvfb + Mesa's software Vulkan in CI): a script clicks through
//! every panel the way a user would (generate with the house model, then with a Stable
//! Diffusion folder, a sampler and a LoRA; drop a PNG from outside the project on the window,
//! paint a mask over it with the pointer and inpaint it; verify, publish, then the market,
//! governance and models), takes a screenshot of each, and checks each is a picture of the panel, not a blank
//! or black frame. Screenshots land in `target/editor-screenshots/`; with
//! `AUTONOMY_UPDATE_DOCS=1` they also replace the ones under `docs/editor/`.
//!
//! Runs without the test harness: winit needs the main thread.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autonomy_contracts::auton;
use autonomy_editor::{
    AssetLibrary, ChainView, Draft, DraftControl, EditorAction, EditorUi, Panel, Preview, mask,
};
use autonomy_pipeline::models::sd::scheduler::Sampler;
use autonomy_pipeline::recipe::{Kind, Preprocess, UpscalerRef};
use bevy::input::ButtonState;
use bevy::input::mouse::{MouseButtonInput, MouseScrollUnit, MouseWheel};
use bevy::input::touch::TouchPhase;
use bevy::prelude::*;
use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured};
use bevy::window::{CursorMoved, FileDragAndDrop, PrimaryWindow, WindowEvent};
use bevy_autonomy::ChainRequest;

/// Where the script is.
#[derive(Resource)]
struct Script {
    step: usize,
    settle: u32,
    started: Instant,
    shots: Arc<Mutex<Vec<Shot>>>,
    waiting_for_shot: bool,
    failure: Arc<Mutex<Option<String>>>,
    /// A folder outside the project, for the dropped PNG.
    outside: PathBuf,
    /// The inpainting step's progress: frames into the pointer's drag, once it started.
    drag_frame: Option<u32>,
}

/// A screenshot: the step that took it, its panel and the picture.
type Shot = (usize, Panel, image::RgbImage);

/// The step that shows the Generate panel with a Stable Diffusion folder.
const STABLE_DIFFUSION_STEP: usize = 2;
/// The step that drops a PNG on the window, paints a mask over it with the pointer and
/// inpaints it.
const INPAINTING_STEP: usize = 3;

/// The tiny Stable Diffusion fixture the pipeline's tests make, with its LoRA.
fn tiny_sd15() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pipeline/tests/fixtures/sd/tiny-sd15")
}

/// Each step: the panel to show, and whether the state it needs has arrived (after sending
/// what it needs to, once).
fn ready(step: usize, world: &mut World) -> Option<(Panel, bool)> {
    let library = world.resource::<AssetLibrary>();
    let view = world.resource::<ChainView>();
    let assets_made = library.assets.len() >= 5 && view.loaded;
    Some(match step {
        0 => (Panel::Generate, assets_made),
        1 => (
            Panel::Generate,
            matches!(world.resource::<Preview>(), Preview::Ready(_)),
        ),
        STABLE_DIFFUSION_STEP => (
            Panel::Generate,
            matches!(world.resource::<Preview>(), Preview::Ready(ready) if ready.draft.name == "moss"),
        ),
        INPAINTING_STEP => (
            Panel::Generate,
            matches!(
                world.resource::<Preview>(),
                Preview::Ready(ready) if ready.draft.name == "apple_patch"
            ),
        ),
        4 => (
            Panel::Assets,
            library.get("gem").is_some_and(|a| a.reports.is_some()),
        ),
        5 => (
            Panel::Publish,
            library
                .get("gem")
                .and_then(|a| a.token_id)
                .and_then(|t| view.tokens.get(&t))
                .is_some_and(|s| matches!(s, autonomy_editor::TokenStatus::Minted { .. })),
        ),
        6 => (Panel::Market, view.listings.len() >= 2),
        7 => (Panel::Governance, !view.proposals.is_empty()),
        8 => (
            Panel::Models,
            view.models.first().is_some_and(|m| !m.versions.is_empty()),
        ),
        _ => return None,
    })
}

/// What each step sends when it starts.
fn act(step: usize, world: &mut World) {
    match step {
        1 => {
            let draft = Draft {
                name: "lantern".into(),
                kind: Kind::Animation,
                prompt: "fire flat travel places".into(),
                seed: 11,
                size: 48,
                steps: 6,
                pixel_art: Some((16, 1)),
                frames: 4,
                fps: 6,
                ..Draft::default()
            };
            world.resource_mut::<EditorUi>().draft = draft.clone();
            world.write_message(EditorAction::Generate(draft));
        }
        STABLE_DIFFUSION_STEP => {
            let folder = tiny_sd15();
            let draft = Draft {
                name: "moss".into(),
                kind: Kind::Texture,
                prompt: "[stone:mossy stone:1] bricks, pixel-style <hypernet:pixel-style:0.8>"
                    .into(),
                model: folder.to_string_lossy().into_owned(),
                sampler: Some(Sampler::DpmPlusPlus2mKarras),
                loras: vec![(folder.join("loras/kohya.safetensors"), 0.8)],
                embeddings: vec![folder.with_file_name("embeddings").join("pixel-style.pt")],
                steps: 4,
                size: 128,
                hires: Some(0.6),
                hires_upscaler: UpscalerRef::File(
                    folder.with_file_name("upscalers").join("compact-x4.pth"),
                ),
                tileable: true,
                pixel_art: None,
                control: Some(DraftControl {
                    model: folder.join("controlnet"),
                    image: folder.with_file_name("canny").join("picture.png"),
                    scale: 0.9,
                    preprocess: Some(Preprocess::Canny {
                        low: 100.0,
                        high: 200.0,
                    }),
                }),
                ..Draft::default()
            };
            world.resource_mut::<EditorUi>().draft = draft.clone();
            world.write_message(EditorAction::Generate(draft));
        }
        INPAINTING_STEP => {
            // A PNG from outside the project, dropped on the window.
            let apple = world
                .resource::<AssetLibrary>()
                .get("apple")
                .and_then(|apple| apple.image_file())
                .expect("the apple's PNG");
            let outside = world.resource::<Script>().outside.join("apple.png");
            std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
            std::fs::copy(apple, &outside).unwrap();
            world.resource_mut::<EditorUi>().draft = Draft {
                name: "apple_patch".into(),
                prompt: "green apple flat food drink".into(),
                seed: 5,
                steps: 8,
                ..Draft::default()
            };
            let window = world
                .query_filtered::<Entity, With<PrimaryWindow>>()
                .single(world)
                .expect("the window");
            world.write_message(FileDragAndDrop::DroppedFile {
                window,
                path_buf: outside,
            });
        }
        4 => {
            world.resource_mut::<AssetLibrary>().selected = Some("gem".into());
            world.write_message(EditorAction::Verify {
                label: "gem".into(),
            });
        }
        5 => {
            let gem = world
                .resource::<AssetLibrary>()
                .get("gem")
                .unwrap()
                .file
                .clone();
            world.write_message(ChainRequest::Publish {
                path: gem,
                list_price: Some(auton(12)),
                royalty_bps: 500,
            });
        }
        _ => {}
    }
}

/// Drives the pointer over the dropped picture's painting area, as a user would: turns the
/// mask on, drags down its right side with the left button, then generates.
fn paint(world: &mut World) {
    let Some(start) = world.resource::<EditorUi>().draft.start.clone() else {
        return; // the drop has not arrived yet
    };
    if start.mask.is_none() {
        let (width, height) = image::image_dimensions(&start.file).unwrap();
        let mut ui = world.resource_mut::<EditorUi>();
        let start = ui.draft.start.as_mut().unwrap();
        start.strength = 1.0;
        start.mask = Some(mask::blank(width, height));
        ui.start_tools.brush = width as f32 / 6.0;
        ui.start_tools.canvas = None;
        return;
    }
    let Some(canvas) = world.resource::<EditorUi>().start_tools.canvas else {
        return; // not drawn yet
    };
    let window = world
        .query_filtered::<Entity, With<PrimaryWindow>>()
        .single(world)
        .expect("the window");
    let frame = world.resource::<Script>().drag_frame.unwrap_or(0);
    const DRAG_FRAMES: u32 = 8;
    let at = |share: f32| {
        let x = canvas.min.x + canvas.width() * 0.72;
        let y = canvas.min.y + canvas.height() * (0.15 + 0.7 * share);
        Vec2::new(x, y)
    };
    let button = |state| {
        WindowEvent::MouseButtonInput(MouseButtonInput {
            button: MouseButton::Left,
            state,
            window,
        })
    };
    let moved = |position| {
        WindowEvent::CursorMoved(CursorMoved {
            window,
            position,
            delta: None,
        })
    };
    match frame {
        0 => {
            world.write_message(moved(at(0.0)));
        }
        1 => {
            world.write_message(button(ButtonState::Pressed));
        }
        f if f <= DRAG_FRAMES + 1 => {
            world.write_message(moved(at((f - 1) as f32 / DRAG_FRAMES as f32)));
        }
        f if f == DRAG_FRAMES + 2 => {
            world.write_message(button(ButtonState::Released));
        }
        f if f == DRAG_FRAMES + 4 => {
            let draft = world.resource::<EditorUi>().draft.clone();
            let painted = draft
                .start
                .as_ref()
                .and_then(|start| start.mask.as_ref())
                .map_or(0.0, mask::coverage);
            if !(0.1..0.6).contains(&painted) {
                *world.resource::<Script>().failure.lock().unwrap() = Some(format!(
                    "the drag down the picture's right side painted {:.0} % of the mask",
                    painted * 100.0
                ));
                world.write_message(AppExit::error());
                return;
            }
            world.write_message(EditorAction::Generate(draft));
        }
        _ => {}
    }
    world.resource_mut::<Script>().drag_frame = Some(frame + 1);
}

fn drive(world: &mut World) {
    let (step, settle, waiting, started) = {
        let script = world.resource::<Script>();
        (
            script.step,
            script.settle,
            script.waiting_for_shot,
            script.started,
        )
    };
    if started.elapsed() > Duration::from_secs(900) {
        *world.resource::<Script>().failure.lock().unwrap() =
            Some(format!("timed out at step {step}"));
        world.write_message(AppExit::error());
        return;
    }
    if waiting {
        let taken = world.resource::<Script>().shots.lock().unwrap().len();
        if taken > shots_before(step) {
            let mut script = world.resource_mut::<Script>();
            script.waiting_for_shot = false;
            script.step += 1;
            script.settle = 0;
        }
        return;
    }
    let Some((panel, done)) = ready(step, world) else {
        world.write_message(AppExit::Success);
        return;
    };
    if settle == 0 {
        world.resource_mut::<EditorUi>().panel = panel;
        act(step, world);
    }
    world.resource_mut::<Script>().settle += 1;
    if step == INPAINTING_STEP && !done {
        paint(world);
    }
    if step == INPAINTING_STEP && done && settle == 1 {
        // Scroll the form down to the result, under the painting.
        let window = world
            .query_filtered::<Entity, With<PrimaryWindow>>()
            .single(world)
            .expect("the window");
        world.write_message(MouseWheel {
            unit: MouseScrollUnit::Pixel,
            x: 0.0,
            y: -300.0,
            window,
            phase: TouchPhase::Moved,
        });
    }
    // Let a few frames pass once the state is there, so egui lays it out and the GPU draws it.
    if !done || settle < 30 {
        if !done {
            world.resource_mut::<Script>().settle = 1;
        }
        return;
    }
    if step == 0 {
        // Step 0 only waits for the project to be generated.
        let mut script = world.resource_mut::<Script>();
        script.step += 1;
        script.settle = 0;
        return;
    }
    let shots = world.resource::<Script>().shots.clone();
    world
        .spawn(Screenshot::primary_window())
        .observe(move |captured: On<ScreenshotCaptured>| {
            let image = captured
                .image
                .clone()
                .try_into_dynamic()
                .expect("a readable screenshot")
                .to_rgb8();
            shots.lock().unwrap().push((step, panel, image));
        });
    world.resource_mut::<Script>().waiting_for_shot = true;
}

/// Screenshots are taken from step 1 on, one per step.
fn shots_before(step: usize) -> usize {
    step - 1
}

/// Not blank: many colours overall, and the editor's side differs from the scene's.
fn check(panel: Panel, image: &image::RgbImage) -> Result<(), String> {
    let mut colours: Vec<[u8; 3]> = image.pixels().map(|p| p.0).collect();
    colours.sort();
    colours.dedup();
    if colours.len() < 64 {
        return Err(format!("{panel:?}: only {} colours: blank?", colours.len()));
    }
    let right = image.width() - 400;
    let mut text_like = 0;
    for y in 0..image.height() {
        for x in right..image.width() {
            let [r, g, b] = image.get_pixel(x, y).0;
            if r.max(g).max(b) > 110 {
                text_like += 1;
            }
        }
    }
    if text_like < 1_500 {
        return Err(format!(
            "{panel:?}: the panel side has almost no bright pixels ({text_like}): no text drawn?"
        ));
    }
    Ok(())
}

fn main() {
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        eprintln!(
            "the editor screenshot test needs a display: run it under `xvfb-run -a` (bash .ci/run does)"
        );
        std::process::exit(1);
    }
    let mut showcase = common::showcase();
    let shots = Arc::new(Mutex::new(Vec::new()));
    let failure = Arc::new(Mutex::new(None));
    let mut app = showcase.app("Autonomy editor — screenshots");
    app.insert_resource(Script {
        step: 0,
        settle: 0,
        started: Instant::now(),
        shots: shots.clone(),
        waiting_for_shot: false,
        failure: failure.clone(),
        outside: showcase.dir.path().join("elsewhere"),
        drag_frame: None,
    })
    .add_systems(Last, drive);
    app.run();

    if let Some(message) = failure.lock().unwrap().take() {
        eprintln!("editor screenshots: {message}");
        std::process::exit(1);
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/editor-screenshots");
    std::fs::create_dir_all(&out).unwrap();
    let docs = std::env::var_os("AUTONOMY_UPDATE_DOCS")
        .map(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/editor"));
    let shots = shots.lock().unwrap();
    let mut failed = Vec::new();
    for (step, panel, image) in shots.iter() {
        let name = match *step {
            STABLE_DIFFUSION_STEP => "generate-stable-diffusion.png".to_string(),
            INPAINTING_STEP => "generate-inpainting.png".to_string(),
            _ => format!("{}.png", panel.title().to_lowercase()),
        };
        save(image, &out.join(&name));
        if let Some(docs) = &docs {
            save(image, &docs.join(&name));
        }
        if let Err(message) = check(*panel, image) {
            failed.push(message);
        }
    }
    let mut expected = Panel::ALL.to_vec();
    expected.insert(STABLE_DIFFUSION_STEP - 1, Panel::Generate);
    expected.insert(INPAINTING_STEP - 1, Panel::Generate);
    let taken: Vec<Panel> = shots.iter().map(|(_, panel, _)| *panel).collect();
    if taken != expected {
        failed.push(format!("took {taken:?}, expected {expected:?}"));
    }
    if !failed.is_empty() {
        eprintln!("editor screenshots failed:\n{}", failed.join("\n"));
        std::process::exit(1);
    }
    println!(
        "editor screenshots: {} panels drawn and checked, in {}",
        shots.len(),
        out.display()
    );
}

fn save(image: &image::RgbImage, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image.save(path).unwrap();
}
