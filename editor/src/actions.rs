//! What the editor's buttons do that is not a chain request: generate a draft in the
//! background, save it as a recipe of the project, verify an asset. Each action is an
//! [`EditorAction`] message, so tests (and scripts) drive the editor exactly as the buttons do.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autonomy_pipeline::atomic;
use autonomy_pipeline::build::{self, Outcome};
use autonomy_pipeline::recipe::{self, Kind, Source};
use autonomy_pipeline::verify::{AssetReport, verify_path};
use bevy::prelude::*;
use bevy::tasks::{AsyncComputeTaskPool, Task, block_on, poll_once};
use bevy_autonomy::{ChainResult, Generation, atlas_layout, load_png};
use image::{GrayImage, ImageFormat};

use crate::draft::{Draft, SAVED_BY_EDITOR, StartFiles};
use crate::library::AssetLibrary;

/// Something the editor is asked to do.
#[derive(Message, Debug, Clone, PartialEq)]
pub enum EditorAction {
    /// Generate the draft in the background (in a scratch folder, not in the project) and show
    /// it in the Generate panel's preview.
    Generate(Draft),
    /// Save the draft as `<name>.recipe.toml` in the project's recipes folder: the plugin then
    /// makes it like any other recipe, and remakes it whenever the file changes.
    SaveRecipe(Draft),
    /// Check an asset's files, manifest and signature (by library label).
    Verify {
        /// The asset's label.
        label: String,
    },
}

/// One line of the editor's activity log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Whether it reports a success.
    pub ok: bool,
    /// What happened.
    pub text: String,
}

/// What the editor did, newest last (the status bar shows the last lines).
#[derive(Resource, Debug, Default)]
pub struct EditorLog {
    /// The lines, at most [`EditorLog::KEPT`].
    pub lines: Vec<LogLine>,
}

impl EditorLog {
    /// How many lines are kept.
    pub const KEPT: usize = 200;

    /// Adds a line.
    pub fn push(&mut self, ok: bool, text: impl Into<String>) {
        let text = text.into();
        if ok {
            info!("{text}");
        } else {
            warn!("{text}");
        }
        self.lines.push(LogLine { ok, text });
        let excess = self.lines.len().saturating_sub(Self::KEPT);
        self.lines.drain(..excess);
    }
}

/// A generated draft, ready to look at.
#[derive(Debug, Clone)]
pub struct PreviewImage {
    /// What was asked.
    pub draft: Draft,
    /// The image (an animation's sprite sheet, a material's albedo).
    pub image: Handle<Image>,
    /// Its size in pixels.
    pub size: UVec2,
    /// An animation's frames, as rectangles of the sheet.
    pub frames: Vec<URect>,
    /// How long each frame shows.
    pub frame_time: Duration,
    /// How long generation took, in seconds (zero when it came from the cache).
    pub seconds: f64,
}

/// The Generate panel's preview.
#[derive(Resource, Debug, Default)]
pub enum Preview {
    /// Nothing generated yet.
    #[default]
    Empty,
    /// Generating since then.
    Generating(Instant),
    /// The last draft generated.
    Ready(Box<PreviewImage>),
    /// The last draft could not be made.
    Failed(String),
}

/// Background editor work in flight.
#[derive(Resource, Default)]
pub(crate) struct EditorTasks {
    generate: Option<Task<Result<Generated, String>>>,
    verify: Vec<Task<Verification>>,
}

/// An asset's label and its verification (or why it could not be verified).
type Verification = (String, Result<Vec<AssetReport>, String>);

/// A draft's build, as the task hands it back.
struct Generated {
    draft: Draft,
    file: PathBuf,
    atlas: Option<PathBuf>,
    seconds: f64,
}

/// The scratch folder drafts are generated in, one folder each (hidden: project builds skip it).
pub fn drafts_dir(recipes_root: &Path) -> PathBuf {
    recipes_root.join(".autonomy").join("editor")
}

/// Runs the editor's actions.
pub(crate) fn run_actions(
    mut actions: MessageReader<EditorAction>,
    mut tasks: ResMut<EditorTasks>,
    mut preview: ResMut<Preview>,
    mut generation: ResMut<Generation>,
    mut log: ResMut<EditorLog>,
    library: Res<AssetLibrary>,
    server: Res<AssetServer>,
) {
    for action in actions.read() {
        match action {
            EditorAction::Generate(draft) => {
                if let Err(error) = draft.check() {
                    log.push(false, format!("cannot generate {}: {error}", draft.name));
                    *preview = Preview::Failed(error.to_string());
                    continue;
                }
                let mut options = generation.options.clone();
                options.root = drafts_dir(&generation.options.root).join(&draft.name);
                let draft = draft.clone();
                tasks.generate = Some(AsyncComputeTaskPool::get().spawn(async move {
                    // Outside the project a `recipe:` start cannot be found: start from copies.
                    let start_files = match &draft.start {
                        Some(start) => {
                            let files = StartFiles {
                                source: format!("{}.start.png", draft.name),
                                mask: start
                                    .mask
                                    .as_ref()
                                    .map(|_| format!("{}.mask.png", draft.name)),
                            };
                            let bytes = std::fs::read(&start.file).map_err(|error| {
                                format!("cannot read {}: {error}", start.file.display())
                            })?;
                            write(&options.root.join(&files.source), &bytes)?;
                            if let (Some(mask), Some(name)) = (&start.mask, &files.mask) {
                                write(&options.root.join(name), &mask_png(mask)?)?;
                            }
                            Some(files)
                        }
                        None => None,
                    };
                    let control_image = match &draft.control {
                        Some(control) => {
                            let copy = format!("{}.control.png", draft.name);
                            let bytes = std::fs::read(&control.image).map_err(|error| {
                                format!("cannot read {}: {error}", control.image.display())
                            })?;
                            write(&options.root.join(&copy), &bytes)?;
                            Some(copy)
                        }
                        None => None,
                    };
                    let recipe = options.root.join(draft.file_name());
                    let text = draft.to_toml_with(start_files.as_ref(), control_image.as_deref());
                    write(&recipe, text.as_bytes())?;
                    let report =
                        build::build(&options, &|_| {}).map_err(|error| error.to_string())?;
                    let made = report
                        .assets
                        .into_iter()
                        .find(|asset| asset.label == draft.name)
                        .ok_or_else(|| format!("the build did not make {}", draft.name))?;
                    let seconds = match made.outcome {
                        Outcome::Failed(message) => return Err(message),
                        Outcome::Built(seconds) => seconds,
                        Outcome::Restored | Outcome::UpToDate => 0.0,
                    };
                    let named = |suffix: &str| {
                        made.files
                            .iter()
                            .find(|file| file.to_string_lossy().ends_with(suffix))
                            .map(|file| options.root.join(file))
                    };
                    let file = named(".albedo.png")
                        .or_else(|| named(".sheet.png"))
                        .or_else(|| named(".png"))
                        .ok_or_else(|| format!("{} has no PNG", draft.name))?;
                    Ok(Generated {
                        atlas: named(".atlas.json"),
                        draft,
                        file,
                        seconds,
                    })
                }));
                *preview = Preview::Generating(Instant::now());
            }
            EditorAction::SaveRecipe(draft) => match save_recipe(&generation.options.root, draft) {
                Ok(file) => {
                    generation.watch(&server, Path::new(&draft.file_name()));
                    log.push(true, format!("saved {}", file.display()));
                }
                Err(message) => log.push(false, message),
            },
            EditorAction::Verify { label } => {
                let Some(asset) = library.get(label) else {
                    log.push(false, format!("cannot verify {label}: no such asset"));
                    continue;
                };
                let (label, file) = (label.clone(), asset.file.clone());
                tasks
                    .verify
                    .push(AsyncComputeTaskPool::get().spawn(async move {
                        let reports = verify_path(&file).map_err(|error| error.to_string());
                        (label, reports)
                    }));
            }
        }
    }
}

/// Writes `draft` as `<root>/<name>.recipe.toml`, refusing to replace a file the editor did
/// not write. An image-to-image draft from a PNG outside the project gets a copy of it in
/// `sources/<name>.png`, an inpainting draft its mask in `masks/<name>.png`, and a ControlNet
/// draft its control image from outside in `controls/<name>.png`; none replaces a different
/// file there that the draft's earlier recipe does not name.
pub fn save_recipe(root: &Path, draft: &Draft) -> Result<PathBuf, String> {
    draft
        .check()
        .map_err(|error| format!("cannot save {}: {error}", draft.name))?;
    let path = root.join(draft.file_name());
    let earlier = match std::fs::read_to_string(&path) {
        Ok(existing) if !existing.starts_with(SAVED_BY_EDITOR) => {
            return Err(format!(
                "{} exists and was not written by the editor: pick another name",
                path.display()
            ));
        }
        Ok(existing) => recipe::parse(Path::new(&draft.file_name()), &existing)
            .ok()
            .and_then(|mut assets| assets.pop()),
        Err(_) => None,
    };
    let earlier_control = earlier
        .as_ref()
        .and_then(|asset| asset.controls.first())
        .map(|control| control.image.clone());
    let earlier = earlier.and_then(|asset| asset.img2img);
    let mut files = draft.start_files();
    if let (Some(start), Some(files)) = (&draft.start, files.as_mut()) {
        if start.asset.is_none() {
            match project_path(root, &start.file) {
                Some(inside) => files.source = inside,
                None => {
                    let bytes = std::fs::read(&start.file).map_err(|error| {
                        format!("cannot read {}: {error}", start.file.display())
                    })?;
                    let named = earlier.as_ref().is_some_and(|earlier| {
                        earlier.source == Source::File(PathBuf::from(&files.source))
                    });
                    claim(root, &files.source, &bytes, named)?;
                }
            }
        }
        if let (Some(mask), Some(name)) = (&start.mask, &files.mask) {
            let named = earlier
                .as_ref()
                .is_some_and(|earlier| earlier.mask.as_deref() == Some(Path::new(name)));
            claim(root, name, &mask_png(mask)?, named)?;
        }
    }
    let control_image = match (&draft.control, draft.control_file()) {
        (Some(control), Some(copy)) => Some(match project_path(root, &control.image) {
            Some(inside) => inside,
            None => {
                let bytes = std::fs::read(&control.image)
                    .map_err(|error| format!("cannot read {}: {error}", control.image.display()))?;
                let named = earlier_control.as_deref() == Some(Path::new(&copy));
                claim(root, &copy, &bytes, named)?;
                copy
            }
        }),
        _ => None,
    };
    write(
        &path,
        draft
            .to_toml_with(files.as_ref(), control_image.as_deref())
            .as_bytes(),
    )?;
    Ok(path)
}

/// `file`'s path inside `root`, with `/` between folders, when it lies inside it.
fn project_path(root: &Path, file: &Path) -> Option<String> {
    let root = root.canonicalize().ok()?;
    let file = file.canonicalize().ok()?;
    let inside = file.strip_prefix(&root).ok()?;
    let parts: Vec<String> = inside
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    Some(parts.join("/"))
}

/// Writes `bytes` to `root/relative` unless a different file is there that the draft's earlier
/// recipe does not name (`named`): a file of the user's is never replaced.
fn claim(root: &Path, relative: &str, bytes: &[u8], named: bool) -> Result<(), String> {
    let path = root.join(relative);
    match std::fs::read(&path) {
        Ok(existing) if existing == bytes => Ok(()),
        Ok(_) if !named => Err(format!(
            "{} exists and was not written by the editor for this recipe: pick another name",
            path.display()
        )),
        _ => write(&path, bytes),
    }
}

/// Writes a file atomically (its folder made first), saying which on failure.
fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    atomic::write(path, bytes).map_err(|error| format!("cannot write {}: {error}", path.display()))
}

/// A mask as the PNG a recipe's `mask` names.
fn mask_png(mask: &GrayImage) -> Result<Vec<u8>, String> {
    let mut png = Vec::new();
    mask.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|error| format!("cannot encode the mask: {error}"))?;
    Ok(png)
}

/// Collects finished editor work into the preview, the library and the log.
pub(crate) fn collect_actions(
    mut tasks: ResMut<EditorTasks>,
    mut preview: ResMut<Preview>,
    mut images: ResMut<Assets<Image>>,
    mut library: ResMut<AssetLibrary>,
    mut log: ResMut<EditorLog>,
) {
    if let Some(task) = tasks.generate.as_mut()
        && let Some(result) = block_on(poll_once(task))
    {
        tasks.generate = None;
        match result.and_then(|generated| show(generated, &mut images)) {
            Ok(image) => {
                let frames = match image.frames.len() {
                    0 => String::new(),
                    n => format!(", {n} frames"),
                };
                log.push(
                    true,
                    format!(
                        "generated {} ({size}×{size}{frames}) in {:.1} s",
                        image.draft.name,
                        image.seconds,
                        size = image.draft.size,
                    ),
                );
                *preview = Preview::Ready(Box::new(image));
            }
            Err(message) => {
                log.push(false, format!("generation failed: {message}"));
                *preview = Preview::Failed(message);
            }
        }
    }
    let mut running = Vec::new();
    for mut task in std::mem::take(&mut tasks.verify) {
        match block_on(poll_once(&mut task)) {
            Some((label, Ok(reports))) => {
                let verdict = match reports.iter().map(AssetReport::verdict).max() {
                    Some(verdict) => format!("{verdict:?}").to_lowercase(),
                    None => "nothing to check".into(),
                };
                log.push(true, format!("checked {label}: {verdict}"));
                library.set_reports(&label, reports);
            }
            Some((label, Err(message))) => {
                log.push(false, format!("cannot verify {label}: {message}"))
            }
            None => running.push(task),
        }
    }
    tasks.verify = running;
}

/// Loads a generated draft's image (and frames) for the preview.
fn show(generated: Generated, images: &mut Assets<Image>) -> Result<PreviewImage, String> {
    let image = load_png(&generated.file)?;
    let size = image.size();
    let frames = match &generated.atlas {
        Some(atlas) if generated.draft.kind == Kind::Animation => atlas_layout(atlas)?.textures,
        _ => Vec::new(),
    };
    Ok(PreviewImage {
        frame_time: Duration::from_secs_f64(1.0 / f64::from(generated.draft.fps.max(1))),
        draft: generated.draft,
        image: images.add(image),
        size,
        frames,
        seconds: generated.seconds,
    })
}

/// Chain results go into the log.
pub(crate) fn log_chain_results(
    mut results: MessageReader<ChainResult>,
    mut log: ResMut<EditorLog>,
) {
    for result in results.read() {
        match &result.outcome {
            Ok(summary) => log.push(true, summary.clone()),
            Err(error) => log.push(false, error.clone()),
        }
    }
}
