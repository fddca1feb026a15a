//! Every panel's buttons, driven headless through the messages the buttons send, on an
//! embedded chain: generate a draft and look at it, save it as a recipe (and refuse to clobber
//! a hand-written one), verify it, mint and list it, buy from another seller, delegate,
//! propose promoting a model version, vote, queue and execute; the chain view follows along.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy_primitives::{B256, U256};
use autonomy_contracts::{Ledger, MintRequest, ProposalState, auton, dev_signers};
use autonomy_editor::{
    AssetLibrary, ChainView, Draft, DraftControl, EditorAction, EditorCorePlugin, EditorLog,
    LocalModels, Preview, Start, TokenStatus, mask, promotion, save_recipe,
};
use autonomy_pipeline::models::sd::annotator::{EdgeFinish, EdgeNetwork};
use autonomy_pipeline::models::sd::scheduler::Sampler;
use autonomy_pipeline::recipe::Preprocess;
use autonomy_pipeline::verify::Verdict;
use bevy::asset::AssetPlugin;
use bevy::image::ImagePlugin;
use bevy::prelude::*;
use bevy_autonomy::{AutonomyPlugin, ChainPlugin, ChainRequest, SharedLedger};

/// The tiny Stable Diffusion pipelines the pipeline's tests are held to.
fn sd_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pipeline/tests/fixtures/sd")
}

fn run_until(app: &mut App, what: &str, done: impl Fn(&mut App) -> bool) {
    let started = Instant::now();
    while !done(app) {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "timed out waiting for {what}; log: {:?}",
            app.world().resource::<EditorLog>().lines
        );
        app.update();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Generates `draft` in the background, as the Generate button does, and returns the preview's
/// pixels.
fn generated(app: &mut App, draft: &Draft) -> Vec<u8> {
    let name = draft.name.clone();
    app.world_mut()
        .write_message(EditorAction::Generate(draft.clone()));
    run_until(app, &format!("the preview of {name}"), |app| {
        match app.world().resource::<Preview>() {
            Preview::Ready(ready) => ready.draft.name == name,
            Preview::Generating(_) => false,
            _ => true,
        }
    });
    let Preview::Ready(preview) = app.world().resource::<Preview>() else {
        panic!("{name} failed: {:?}", app.world().resource::<Preview>());
    };
    app.world()
        .resource::<Assets<Image>>()
        .get(&preview.image)
        .and_then(|image| image.data.clone())
        .expect("the preview's pixels")
}

fn view(app: &App) -> &ChainView {
    app.world().resource::<ChainView>()
}

fn send(app: &mut App, request: ChainRequest) {
    app.world_mut().write_message(request);
}

/// Waits for the next log line and returns it.
fn next_log(app: &mut App, what: &str) -> (bool, String) {
    let seen = app.world().resource::<EditorLog>().lines.len();
    run_until(app, what, |app| {
        app.world().resource::<EditorLog>().lines.len() > seen
    });
    let line = app.world().resource::<EditorLog>().lines[seen].clone();
    (line.ok, line.text)
}

fn advance(ledger: &SharedLedger, seconds: u64) {
    ledger.lock().unwrap().advance_time(seconds).unwrap();
}

#[test]
fn every_panel_action_works_on_an_embedded_chain() {
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    let recipes = assets.join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    let house = common::house();

    // The world: the house model as a community model (v1 active, a fine-tune v2 waiting), a
    // whale who delegated to the player, and another seller's listing.
    let mut ledger = Ledger::embedded(dir.path().join("chain")).unwrap();
    let accounts = ledger.accounts();
    let (whale, player, seller) = (accounts[0], accounts[1], accounts[2]);
    let (_, version, tuned) = common::register_house(&mut ledger, player, seller);
    ledger.delegate(whale, player).unwrap();
    let for_sale = ledger
        .mint(
            seller,
            &MintRequest {
                to: seller,
                content_hash: B256::repeat_byte(9),
                model_version: U256::ZERO,
                uri: "ipfs://elsewhere".into(),
                royalty_receiver: seller,
                royalty_bps: 500,
            },
        )
        .unwrap()
        .value;
    let market = ledger.deployment().marketplace;
    ledger.approve_assets(seller, market, true).unwrap();
    ledger.list(seller, for_sale, auton(10)).unwrap();

    let mut chain = ChainPlugin::new(ledger.boxed(), player);
    chain.chain.store = dir.path().join(".autonomy/store");
    chain.chain.journals = dir.path().join(".autonomy/publish");
    let shared = chain.chain.ledger.clone();
    // A model folder holding a VAE folder (diffusers' layout) the panel offers.
    let vae_dir = dir.path().join("vaes");
    let inpaint_vae = vae_dir.join("inpaint-vae");
    std::fs::create_dir_all(&inpaint_vae).unwrap();
    for file in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(
            sd_fixtures().join("tiny-sd-inpaint/vae").join(file),
            inpaint_vae.join(file),
        )
        .unwrap();
    }
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        AssetPlugin {
            file_path: assets.to_string_lossy().into_owned(),
            watch_for_changes_override: Some(true),
            ..default()
        },
        ImagePlugin::default(),
    ))
    .add_plugins(AutonomyPlugin {
        assets_dir: assets.clone(),
        recipes_dir: "recipes".into(),
        house_model: house.clone(),
        cache_dir: None,
        signer: Some(dev_signers()[1].clone()),
        model_dirs: Vec::new(),
    })
    .add_plugins(chain)
    .add_plugins(EditorCorePlugin {
        model_dirs: vec![
            house.parent().unwrap().to_path_buf(),
            sd_fixtures(),
            vae_dir.clone(),
        ],
        refresh_every: Duration::from_millis(100),
    });
    run_until(&mut app, "the first chain read", |app| view(app).loaded);
    assert_eq!(view(&app).listings.len(), 1);

    // Generate: a draft is made in the background and previewed; it is not a project asset.
    let draft = Draft {
        name: "potion".into(),
        prompt: "red apple flat food drink".into(),
        size: 32,
        steps: 4,
        pixel_art: None,
        ..Draft::default()
    };
    app.world_mut()
        .write_message(EditorAction::Generate(draft.clone()));
    run_until(&mut app, "the preview", |app| {
        !matches!(
            app.world().resource::<Preview>(),
            Preview::Empty | Preview::Generating(_)
        )
    });
    let Preview::Ready(preview) = app.world().resource::<Preview>() else {
        panic!("generation failed: {:?}", app.world().resource::<Preview>());
    };
    let image = app
        .world()
        .resource::<Assets<Image>>()
        .get(&preview.image)
        .expect("the preview image is an asset");
    assert_eq!((image.width(), image.height()), (32, 32));
    let pixels = image.data.clone().expect("pixels");
    let mut colours: Vec<&[u8]> = pixels.chunks(4).collect();
    colours.sort();
    colours.dedup();
    assert!(
        colours.len() > 16,
        "a real picture, not a flat fill: {} colours",
        colours.len()
    );
    assert!(
        !recipes.join("potion.recipe.toml").exists(),
        "generating does not touch the project"
    );

    // A Stable Diffusion folder among the model folders is offered, with a sampler of choice.
    let tiny_sd = sd_fixtures().join("tiny-sd15");
    let local = app.world().resource::<LocalModels>();
    assert!(local.folders.contains(&tiny_sd), "{local:?}");
    let sd_draft = Draft {
        name: "sd_potion".into(),
        model: tiny_sd.to_string_lossy().into_owned(),
        sampler: Some(Sampler::DpmPlusPlus2mKarras),
        steps: 3,
        ..draft.clone()
    };
    app.world_mut()
        .write_message(EditorAction::Generate(sd_draft));
    run_until(&mut app, "the Stable Diffusion preview", |app| {
        match app.world().resource::<Preview>() {
            Preview::Ready(ready) => ready.draft.name == "sd_potion",
            Preview::Generating(_) => false,
            _ => true,
        }
    });
    let Preview::Ready(sd_preview) = app.world().resource::<Preview>() else {
        panic!("generation failed: {:?}", app.world().resource::<Preview>());
    };
    assert_eq!(sd_preview.draft.sampler, Some(Sampler::DpmPlusPlus2mKarras));
    let sd_image = app
        .world()
        .resource::<Assets<Image>>()
        .get(&sd_preview.image)
        .expect("the preview image is an asset");
    assert_eq!((sd_image.width(), sd_image.height()), (32, 32));
    let sd_pixels = sd_image.data.clone().expect("pixels");

    // LoRA files in the model folders are offered for the pipelines they fit, and a picked one
    // changes the picture.
    let local = app.world().resource::<LocalModels>();
    let kohya = tiny_sd.join("loras/kohya.safetensors");
    let fitting: Vec<&Path> = local
        .loras_for(&tiny_sd)
        .map(|lora| lora.path.as_path())
        .collect();
    assert!(fitting.contains(&kohya.as_path()), "{local:?}");
    assert!(
        !fitting
            .iter()
            .any(|path| path.ends_with("kohya-xl.safetensors")),
        "an SDXL LoRA is not offered for SD 1.5: {fitting:?}"
    );
    // Single-file checkpoints are offered too, with the LoRAs that fit their shapes.
    let checkpoint = sd_fixtures().join("checkpoints/tiny-sd15.safetensors");
    assert!(local.folders.contains(&checkpoint), "{local:?}");
    assert!(
        local
            .loras_for(&checkpoint)
            .any(|lora| lora.path.ends_with("tiny-sd15-kohya.safetensors")),
        "{local:?}"
    );
    let xl = sd_fixtures().join("tiny-sdxl");
    assert!(
        local
            .loras_for(&xl)
            .any(|lora| lora.path.ends_with("kohya-xl.safetensors"))
    );
    // SDXL's refiner has no first text encoder for the kohya-xl file's `lora_te1_` entries.
    let refiner = sd_fixtures().join("tiny-sdxl-refiner");
    assert!(
        !local
            .loras_for(&refiner)
            .any(|lora| lora.path.ends_with("kohya-xl.safetensors")),
        "{local:?}"
    );
    let lora_draft = Draft {
        name: "sd_potion_lora".into(),
        model: tiny_sd.to_string_lossy().into_owned(),
        sampler: Some(Sampler::DpmPlusPlus2mKarras),
        loras: vec![(kohya.clone(), 1.0)],
        steps: 3,
        ..draft.clone()
    };
    app.world_mut()
        .write_message(EditorAction::Generate(lora_draft));
    run_until(&mut app, "the preview with a LoRA", |app| {
        match app.world().resource::<Preview>() {
            Preview::Ready(ready) => ready.draft.name == "sd_potion_lora",
            Preview::Generating(_) => false,
            _ => true,
        }
    });
    let Preview::Ready(lora_preview) = app.world().resource::<Preview>() else {
        panic!("generation failed: {:?}", app.world().resource::<Preview>());
    };
    assert_eq!(lora_preview.draft.loras, [(kohya, 1.0)]);
    let lora_pixels = app
        .world()
        .resource::<Assets<Image>>()
        .get(&lora_preview.image)
        .and_then(|image| image.data.clone())
        .expect("the preview's pixels");
    assert_ne!(lora_pixels, sd_pixels, "the LoRA changes the picture");

    // VAE folders and files in the model folders are offered; a picked one changes the picture
    // and goes into the recipe.
    // (The fixtures' A1111 VAE file that PyTorch before 1.6 pickled is one too, and so is the
    // TAESD folder.)
    let local = app.world().resource::<LocalModels>();
    let mut expected = vec![
        inpaint_vae.clone(),
        sd_fixtures().join("checkpoints/tiny-sd15-vae.legacy.pt"),
        sd_fixtures().join("tiny-taesd"),
    ];
    expected.sort();
    assert_eq!(local.vaes, expected, "{local:?}");
    assert!(
        local.without_vae.is_empty(),
        "the fixture checkpoints hold VAEs"
    );
    let vae_draft = Draft {
        name: "sd_potion_vae".into(),
        model: tiny_sd.to_string_lossy().into_owned(),
        sampler: Some(Sampler::DpmPlusPlus2mKarras),
        vae: Some(inpaint_vae.clone()),
        steps: 3,
        ..draft.clone()
    };
    assert_ne!(
        generated(&mut app, &vae_draft),
        sd_pixels,
        "another VAE decodes otherwise"
    );
    assert_eq!(vae_draft.check().unwrap().vae, Some(inpaint_vae));

    // Embeddings in the model folders' `embeddings/` are offered for the models they fit, by
    // their words; a picked one whose word is in the prompt changes the picture.
    let local = app.world().resource::<LocalModels>();
    let words = |model: &Path| -> Vec<String> {
        local
            .embeddings_for(model)
            .map(|embedding| embedding.word.clone())
            .collect()
    };
    assert_eq!(
        words(&tiny_sd),
        ["bad-hands", "gem-glow", "pixel-style"],
        "{local:?}"
    );
    assert_eq!(words(&sd_fixtures().join("tiny-sdxl")), ["xl-pixel"]);
    let style = sd_fixtures().join("embeddings/pixel-style.pt");
    let spelled = Draft {
        name: "sd_potion_style".into(),
        model: tiny_sd.to_string_lossy().into_owned(),
        prompt: format!("{}, pixel-style", draft.prompt),
        steps: 3,
        ..draft.clone()
    };
    let with_embedding = Draft {
        name: "sd_potion_style_embedded".into(),
        embeddings: vec![style.clone()],
        ..spelled.clone()
    };
    assert_ne!(
        generated(&mut app, &with_embedding),
        generated(&mut app, &spelled),
        "the embedding's vectors stand for its word"
    );
    assert_eq!(with_embedding.check().unwrap().embeddings, [style]);

    // Hypernetworks in the model folders' `hypernetworks/` are offered for the models whose
    // attentions they fit; one tagged in the prompt changes the picture.
    let local = app.world().resource::<LocalModels>();
    let names: Vec<String> = local
        .hypernetworks_for(&tiny_sd)
        .map(|hypernetwork| hypernetwork.name.clone())
        .collect();
    assert_eq!(names, ["legacy", "pixel-style", "wide"], "{local:?}");
    let plain = Draft {
        name: "sd_potion_plain".into(),
        model: tiny_sd.to_string_lossy().into_owned(),
        steps: 3,
        ..draft.clone()
    };
    let hypernetworked = Draft {
        name: "sd_potion_hypernetwork".into(),
        prompt: format!("{} <hypernet:pixel-style:0.8>", draft.prompt),
        ..plain.clone()
    };
    assert_ne!(
        generated(&mut app, &hypernetworked),
        generated(&mut app, &plain),
        "the hypernetwork runs on the attention"
    );

    // ControlNets beside the model or in the model folders are offered for the models they fit;
    // one with the Canny edges of a picture changes the preview, and a saved recipe keeps a
    // copy of a picture from outside the project in `controls/`.
    let local = app.world().resource::<LocalModels>();
    let nets: Vec<String> = local
        .controlnets_for(&tiny_sd)
        .map(|net| net.name())
        .collect();
    assert_eq!(
        nets,
        [
            "controlnet",
            "controlnet-2",
            "controlnet-ldm.safetensors",
            "controlnet-shuffle.pth",
            "t2i-adapter",
            "t2i-adapter-original.pth"
        ],
        "{local:?}"
    );
    assert_eq!(
        local
            .controlnets_for(&sd_fixtures().join("tiny-sdxl"))
            .count(),
        0
    );
    // The annotator files in the model folders, offered with the preprocessors that run them.
    let hed: &[&str] = &["softedge_hed", "softedge_hedsafe", "scribble_hed"];
    let lineart: &[&str] = &["lineart"];
    let anime: &[&str] = &["lineart_anime"];
    let depth: &[&str] = &["depth_anything_v2", "depth_anything"];
    let mlsd: &[&str] = &["mlsd"];
    let pidinet: &[&str] = &["softedge_pidinet", "softedge_pidisafe", "scribble_pidinet"];
    assert_eq!(
        local.annotators,
        [
            (
                sd_fixtures().join("annotators/depth-anything-v2.pth"),
                depth
            ),
            (sd_fixtures().join("annotators/hed.pth"), hed),
            (sd_fixtures().join("annotators/lineart-anime.pth"), anime),
            (sd_fixtures().join("annotators/lineart.pth"), lineart),
            (sd_fixtures().join("annotators/mlsd.pth"), mlsd),
            (sd_fixtures().join("annotators/pidinet.pth"), pidinet)
        ]
    );
    let picture = sd_fixtures().join("canny/picture.png");
    let controlled = Draft {
        name: "sd_potion_controlled".into(),
        control: Some(DraftControl {
            model: sd_fixtures().join("tiny-sd15/controlnet"),
            image: picture.clone(),
            scale: 1.5,
            preprocess: Some(Preprocess::Canny {
                low: 50.0,
                high: 150.0,
            }),
        }),
        ..plain.clone()
    };
    assert_ne!(
        generated(&mut app, &controlled),
        generated(&mut app, &plain),
        "the ControlNet steers the picture"
    );
    // `controlnet-2` (its hint encoder's weights six times the first's, whose output hardly
    // depends on its picture): the picture's soft edges steer it otherwise than its Canny edges.
    let on_second = |name: &str, preprocess: Preprocess| Draft {
        name: name.into(),
        control: Some(DraftControl {
            model: sd_fixtures().join("tiny-sd15/controlnet-2"),
            preprocess: Some(preprocess),
            ..controlled.control.clone().unwrap()
        }),
        ..controlled.clone()
    };
    let softened = on_second(
        "sd_potion_softened",
        Preprocess::SoftEdge {
            network: EdgeNetwork::Hed,
            annotator: sd_fixtures().join("annotators/hed.pth"),
            finish: EdgeFinish::Soft,
        },
    );
    let edged = on_second(
        "sd_potion_edged",
        Preprocess::Canny {
            low: 50.0,
            high: 150.0,
        },
    );
    assert_ne!(
        generated(&mut app, &softened),
        generated(&mut app, &edged),
        "the soft edges are another control image"
    );
    let controls_root = dir.path().join("controls-project");
    std::fs::create_dir_all(&controls_root).unwrap();
    save_recipe(&controls_root, &controlled).unwrap();
    let saved =
        std::fs::read_to_string(controls_root.join("sd_potion_controlled.recipe.toml")).unwrap();
    assert!(
        saved.contains("control_image = \"controls/sd_potion_controlled.png\"")
            && saved.contains("control_preprocess = \"canny\"\ncontrol_thresholds = [50.0, 150.0]"),
        "{saved}"
    );
    assert_eq!(
        std::fs::read(controls_root.join("controls/sd_potion_controlled.png")).unwrap(),
        std::fs::read(&picture).unwrap()
    );

    // SDXL refiners are offered for SDXL base models: the refiner takes over the base's latents.
    let local = app.world().resource::<LocalModels>();
    let (xl, refiner) = (
        sd_fixtures().join("tiny-sdxl"),
        sd_fixtures().join("tiny-sdxl-refiner"),
    );
    assert!(local.xl_bases.contains(&xl), "{local:?}");
    assert_eq!(local.refiners, std::slice::from_ref(&refiner), "{local:?}");
    let xl_draft = Draft {
        name: "xl_knight".into(),
        model: xl.to_string_lossy().into_owned(),
        steps: 3,
        ..draft.clone()
    };
    let ensemble_draft = Draft {
        name: "xl_knight_refined".into(),
        refiner: Some((refiner, 0.7)),
        ..xl_draft.clone()
    };
    assert_ne!(
        generated(&mut app, &xl_draft),
        generated(&mut app, &ensemble_draft),
        "the refiner's last steps change the picture"
    );

    // Save as recipe: the plugin picks the new file up and makes it a project asset.
    app.world_mut()
        .write_message(EditorAction::SaveRecipe(draft.clone()));
    let (ok, line) = next_log(&mut app, "the save");
    assert!(ok, "{line}");
    run_until(&mut app, "the saved recipe's asset", |app| {
        app.world()
            .resource::<AssetLibrary>()
            .get("potion")
            .is_some()
    });
    let asset = app
        .world()
        .resource::<AssetLibrary>()
        .get("potion")
        .unwrap()
        .clone();
    let manifest = asset.manifest.clone().expect("its manifest");
    assert_eq!(manifest.creator, Some(player.to_string()));
    let token = asset.token_id.expect("a token id");

    // Image-to-image from a project asset: a draft (made outside the project) starts from a
    // copy of the asset's image and, at a low strength, stays near it; saved, its recipe chains
    // to the asset by name.
    let potion_png = asset.image_file().expect("the asset's PNG");
    let potion = image::open(&potion_png).unwrap().to_rgba8().into_raw();
    let apple = Draft {
        name: "apple".into(),
        prompt: "green apple flat food drink".into(),
        ..draft.clone()
    };
    let from_noise = generated(&mut app, &apple);
    let from_potion_draft = Draft {
        name: "apple_from_potion".into(),
        start: Some(Start {
            asset: Some("potion".into()),
            file: potion_png.clone(),
            strength: 0.3,
            mask: None,
        }),
        ..apple.clone()
    };
    let from_potion = generated(&mut app, &from_potion_draft);
    let distance = |a: &[u8], b: &[u8]| {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(x.abs_diff(*y)))
            .sum::<f64>()
            / a.len() as f64
    };
    let (near, far) = (
        distance(&from_potion, &potion),
        distance(&from_noise, &potion),
    );
    assert!(
        near < 0.5 * far,
        "starting from the potion at strength 0.3 stays near it: {near:.1} vs {far:.1} from noise"
    );
    app.world_mut()
        .write_message(EditorAction::SaveRecipe(from_potion_draft.clone()));
    let (ok, line) = next_log(&mut app, "the image-to-image save");
    assert!(ok, "{line}");
    let saved = std::fs::read_to_string(recipes.join("apple_from_potion.recipe.toml")).unwrap();
    assert!(
        saved.contains("source = \"recipe:potion\"\nstrength = 0.3"),
        "{saved}"
    );
    run_until(&mut app, "the chained asset", |app| {
        app.world()
            .resource::<AssetLibrary>()
            .get("apple_from_potion")
            .is_some()
    });

    // Inpainting: from the potion at strength 1 with its right half painted, the left half
    // stays the potion's while the right half is made anew; without the mask all of it is.
    let (width, height) = image::image_dimensions(&potion_png).unwrap();
    let mut right_half = mask::blank(width, height);
    let x = width as f32 * 0.75;
    mask::stroke(
        &mut right_half,
        [x, 0.0],
        [x, height as f32],
        width as f32 / 4.0,
        mask::REPAINT,
    );
    assert_eq!(mask::coverage(&right_half), 0.5);
    let repainted_draft = Draft {
        name: "apple_inpainted".into(),
        start: Some(Start {
            strength: 1.0,
            mask: Some(right_half.clone()),
            ..from_potion_draft.start.clone().unwrap()
        }),
        ..from_potion_draft.clone()
    };
    let unmasked_draft = Draft {
        name: "apple_unmasked".into(),
        start: Some(Start {
            strength: 1.0,
            ..from_potion_draft.start.clone().unwrap()
        }),
        ..from_potion_draft.clone()
    };
    let halves = |pixels: &[u8]| {
        let row = width as usize * 4;
        let (mut left, mut right) = (Vec::new(), Vec::new());
        for line in pixels.chunks(row) {
            left.extend_from_slice(&line[..row / 2]);
            right.extend_from_slice(&line[row / 2..]);
        }
        (left, right)
    };
    let (potion_left, potion_right) = halves(&potion);
    let (kept, repainted) = halves(&generated(&mut app, &repainted_draft));
    let (all_left, all_right) = halves(&generated(&mut app, &unmasked_draft));
    let (kept, repainted, all_left, all_right) = (
        distance(&kept, &potion_left),
        distance(&repainted, &potion_right),
        distance(&all_left, &potion_left),
        distance(&all_right, &potion_right),
    );
    assert!(
        kept < 0.25 * all_left && repainted > 0.5 * all_right,
        "the masked half is repainted, the rest kept: left {kept:.1} (unmasked {all_left:.1}), \
         right {repainted:.1} (unmasked {all_right:.1})"
    );
    // Saved, the mask goes into masks/ and the recipe names it; the asset records it.
    app.world_mut()
        .write_message(EditorAction::SaveRecipe(repainted_draft.clone()));
    let (ok, line) = next_log(&mut app, "the inpainting save");
    assert!(ok, "{line}");
    let saved = std::fs::read_to_string(recipes.join("apple_inpainted.recipe.toml")).unwrap();
    assert!(
        saved.contains(
            "source = \"recipe:potion\"\nmask = \"masks/apple_inpainted.png\"\nstrength = 1.0"
        ),
        "{saved}"
    );
    let written = image::open(recipes.join("masks/apple_inpainted.png"))
        .unwrap()
        .to_luma8();
    assert_eq!(written, right_half);
    run_until(&mut app, "the inpainted asset", |app| {
        app.world()
            .resource::<AssetLibrary>()
            .get("apple_inpainted")
            .is_some()
    });
    let parents = app
        .world()
        .resource::<AssetLibrary>()
        .get("apple_inpainted")
        .unwrap()
        .manifest
        .clone()
        .expect("its manifest")
        .parents;
    let roles: Vec<(&str, &str)> = parents
        .iter()
        .map(|p| (p.role.as_str(), p.reference.as_str()))
        .collect();
    assert!(
        roles.contains(&("mask", "file:masks/apple_inpainted.png")),
        "{roles:?}"
    );
    // A mask of the user's own under that name is not replaced.
    let theirs = recipes.join("masks/door.png");
    std::fs::write(&theirs, b"their own file").unwrap();
    app.world_mut()
        .write_message(EditorAction::SaveRecipe(Draft {
            name: "door".into(),
            ..repainted_draft.clone()
        }));
    let (ok, line) = next_log(&mut app, "the mask refusal");
    assert!(!ok && line.contains("masks/door.png"), "{line}");
    assert_eq!(std::fs::read(&theirs).unwrap(), b"their own file");
    assert!(!recipes.join("door.recipe.toml").exists());

    // A PNG from outside the project (as dropped on the window): saved, it is copied into
    // sources/ and the recipe names the copy; one inside the project is named where it is.
    let elsewhere = dir.path().join("elsewhere/old potion.png");
    std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    std::fs::copy(&potion_png, &elsewhere).unwrap();
    let outside_draft = Draft {
        name: "apple_from_file".into(),
        start: Some(Start::from_file(&elsewhere, 0.3).unwrap()),
        ..apple.clone()
    };
    let from_file = generated(&mut app, &outside_draft);
    assert!(distance(&from_file, &potion) < 0.5 * far);
    app.world_mut()
        .write_message(EditorAction::SaveRecipe(outside_draft.clone()));
    let (ok, line) = next_log(&mut app, "the outside image's save");
    assert!(ok, "{line}");
    assert_eq!(
        std::fs::read(recipes.join("sources/apple_from_file.png")).unwrap(),
        std::fs::read(&elsewhere).unwrap()
    );
    let saved = std::fs::read_to_string(recipes.join("apple_from_file.recipe.toml")).unwrap();
    assert!(
        saved.contains("source = \"sources/apple_from_file.png\""),
        "{saved}"
    );
    run_until(&mut app, "the asset from an outside image", |app| {
        app.world()
            .resource::<AssetLibrary>()
            .get("apple_from_file")
            .is_some()
    });
    let art = recipes.join("art/potion.png");
    std::fs::create_dir_all(art.parent().unwrap()).unwrap();
    std::fs::copy(&potion_png, &art).unwrap();
    let inside = Draft {
        name: "apple_from_art".into(),
        start: Some(Start::from_file(&art, 0.3).unwrap()),
        ..apple.clone()
    };
    assert_eq!(
        save_recipe(&recipes, &inside),
        Ok(recipes.join("apple_from_art.recipe.toml"))
    );
    let saved = std::fs::read_to_string(recipes.join("apple_from_art.recipe.toml")).unwrap();
    assert!(saved.contains("source = \"art/potion.png\""), "{saved}");
    assert!(!recipes.join("sources/apple_from_art.png").exists());

    // A recipe the user wrote by hand is never overwritten.
    let mine = recipes.join("mine.recipe.toml");
    std::fs::write(&mine, "kind = \"sprite\"\nprompt = \"mine\"\n").unwrap();
    app.world_mut()
        .write_message(EditorAction::SaveRecipe(Draft {
            name: "mine".into(),
            ..draft.clone()
        }));
    let (ok, line) = next_log(&mut app, "the refusal");
    assert!(!ok && line.contains("not written by the editor"), "{line}");
    assert_eq!(
        std::fs::read_to_string(&mine).unwrap(),
        "kind = \"sprite\"\nprompt = \"mine\"\n"
    );

    // Verify.
    app.world_mut().write_message(EditorAction::Verify {
        label: "potion".into(),
    });
    run_until(&mut app, "the verification", |app| {
        app.world()
            .resource::<AssetLibrary>()
            .get("potion")
            .unwrap()
            .reports
            .is_some()
    });
    let verdict = app
        .world()
        .resource::<AssetLibrary>()
        .get("potion")
        .unwrap()
        .verdict();
    assert_eq!(verdict, Some(Verdict::Verified));

    // Publish: mint and list; the chain view shows it minted, listed, with its payout.
    run_until(&mut app, "the token's status", |app| {
        view(app).tokens.get(&token) == Some(&TokenStatus::Unminted)
    });
    send(
        &mut app,
        ChainRequest::Publish {
            path: asset.file.clone(),
            list_price: Some(auton(20)),
            royalty_bps: 500,
        },
    );
    run_until(&mut app, "the listing", |app| {
        view(app).tokens.get(&token)
            == Some(&TokenStatus::Minted {
                owner: player,
                listed: Some(auton(20)),
            })
    });
    let listing = view(&app)
        .listings
        .iter()
        .find(|listing| listing.token_id == token)
        .expect("listed")
        .clone();
    assert_eq!(listing.name, "potion");
    assert!(listing.image_file.as_ref().is_some_and(|f| f.is_file()));
    let payout = listing.payout;
    assert_eq!(payout.royalty_receiver, player);
    assert_eq!(payout.royalty, auton(1), "5 % royalty");
    assert_eq!(
        payout.contributor_fee,
        auton(20) * U256::from(250) / U256::from(10_000),
        "made by registered version {version}: its contributors get their fee"
    );
    assert_eq!(
        payout.proceeds + payout.royalty + payout.contributor_fee + payout.fee,
        auton(20)
    );
    // Another player buys it: the proceeds and the royalty wait in the marketplace until the
    // player withdraws them.
    {
        let mut ledger = shared.lock().unwrap();
        ledger.approve(seller, market, auton(20)).unwrap();
        ledger.buy(seller, token, auton(20)).unwrap();
    }
    run_until(&mut app, "the sale", |app| !view(app).owed.is_zero());
    let (owed, before) = (view(&app).owed, view(&app).balance);
    assert_eq!(
        owed,
        payout.proceeds + payout.royalty,
        "seller and creator are one"
    );
    send(&mut app, ChainRequest::Withdraw);
    run_until(&mut app, "the withdrawal", |app| view(app).owed.is_zero());
    assert_eq!(view(&app).balance, before + owed);
    // The buyer gives it back; the player lists it again and takes the listing down.
    shared
        .lock()
        .unwrap()
        .transfer_asset(seller, player, token)
        .unwrap();
    send(
        &mut app,
        ChainRequest::List {
            token_id: token,
            price: auton(30),
        },
    );
    run_until(&mut app, "the listing again", |app| {
        view(app).tokens.get(&token)
            == Some(&TokenStatus::Minted {
                owner: player,
                listed: Some(auton(30)),
            })
    });
    send(&mut app, ChainRequest::Cancel { token_id: token });
    run_until(&mut app, "the take-down", |app| {
        matches!(
            view(app).tokens.get(&token),
            Some(TokenStatus::Minted { listed: None, .. })
        )
    });

    // Market: buy the other seller's item.
    let before = view(&app).balance;
    send(
        &mut app,
        ChainRequest::Buy {
            token_id: for_sale,
            max_price: auton(10),
        },
    );
    run_until(&mut app, "the purchase", |app| {
        view(app).listings.is_empty()
    });
    assert_eq!(view(&app).balance, before - auton(10));

    // Governance: delegate to myself, propose the promotion, vote, queue, execute.
    // (The dev chain has every dev account vote through itself.)
    assert_eq!(view(&app).delegate, player);
    let all_votes = view(&app).votes;
    send(&mut app, ChainRequest::Delegate { to: seller });
    run_until(&mut app, "the delegation away", |app| {
        view(app).delegate == seller
    });
    assert_eq!(
        view(&app).votes,
        all_votes - view(&app).balance,
        "the whale's votes stay, the player's own go to the seller"
    );
    send(&mut app, ChainRequest::Delegate { to: player });
    run_until(&mut app, "the delegation back", |app| {
        view(app).delegate == player
    });
    assert_eq!(view(&app).votes, all_votes);
    let deployment = view(&app).deployment.clone().unwrap();
    let house_view = view(&app).models[0].clone();
    assert_eq!(
        U256::from(house_view.active),
        version,
        "the first version is active"
    );
    let proposal = promotion(&deployment, &house_view, tuned);
    send(
        &mut app,
        ChainRequest::Propose {
            proposal: proposal.clone(),
        },
    );
    run_until(&mut app, "the proposal", |app| {
        view(app).proposals.len() == 1
    });
    assert_eq!(view(&app).proposals[0].state, ProposalState::Pending);
    advance(&shared, 61);
    run_until(&mut app, "voting to open", |app| {
        view(app).proposals[0].state == ProposalState::Active
    });
    let id = view(&app).proposals[0].id;
    send(
        &mut app,
        ChainRequest::Vote {
            proposal: id,
            support: autonomy_contracts::Support::For,
        },
    );
    run_until(&mut app, "the vote", |app| {
        !view(app).proposals[0].tally.for_votes.is_zero()
    });
    assert_eq!(view(&app).proposals[0].tally.for_votes, view(&app).votes);
    advance(&shared, 601);
    run_until(&mut app, "the vote to pass", |app| {
        view(app).proposals[0].state == ProposalState::Succeeded
    });
    send(
        &mut app,
        ChainRequest::Queue {
            proposal: proposal.clone(),
        },
    );
    run_until(&mut app, "the queue", |app| {
        view(app).proposals[0].state == ProposalState::Queued
    });
    advance(&shared, 61);
    send(&mut app, ChainRequest::Execute { proposal });
    run_until(&mut app, "the execution", |app| {
        view(app).proposals[0].state == ProposalState::Executed
    });

    // Models: the promoted version is active; datasets are summarised from the model folders.
    let house_view = view(&app).models[0].clone();
    assert_eq!(U256::from(house_view.active), tuned);
    assert_eq!(house_view.versions.len(), 2);
    let dataset = house_view.versions[0]
        .dataset
        .clone()
        .expect("v1's dataset found");
    assert!(dataset.items > 100, "{} items", dataset.items);
    assert!(!dataset.licences.is_empty());
    assert_eq!(house_view.versions[0].contributors[0], (player, 7_000));
    let fine_tune = &house_view.versions[1];
    assert_eq!(
        (fine_tune.parent, fine_tune.access_price),
        (version.to::<u64>(), auton(3))
    );
    assert!(
        fine_tune.dataset.is_none(),
        "its weights are not on this machine"
    );
    let failures: Vec<String> = app
        .world()
        .resource::<EditorLog>()
        .lines
        .iter()
        .filter(|line| !line.ok)
        .map(|line| line.text.clone())
        .collect();
    assert_eq!(
        failures.len(),
        2,
        "only the refused saves (a mask, a recipe): {failures:?}"
    );
}
