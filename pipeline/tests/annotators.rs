//! The preprocessors with networks against `controlnet_aux` (what A1111's extension, ComfyUI's
//! nodes and diffusers' examples run): tiny random-weight HED and line-art networks in the real
//! files' names (`scripts/sd-fixtures/make.py annotators`), their maps before rounding, and the
//! control images the detectors make of a 128×64 picture at its own size; Depth Anything V2
//! against its own repository (`make.py depth-anything`).

mod common;

use autonomy_pipeline::models::sd::SdError;
use autonomy_pipeline::models::sd::annotator::{
    Networks,
    depth_anything::{DepthAnything, DepthVersion},
    hed::Hed,
    lineart,
    lineart::Lineart,
    mlsd::{self, Mlsd},
    pidinet::PidiNet,
};
use candle_core::{Device, Tensor};
use common::sd::{Reference, close, fixtures};
use image::{GrayImage, RgbImage};

fn annotators() -> std::path::PathBuf {
    fixtures().join("annotators")
}

fn picture() -> RgbImage {
    image::open(annotators().join("picture.png"))
        .unwrap()
        .to_rgb8()
}

/// The preprocessor's control image as `controlnet_aux` wrote it.
fn expected(name: &str) -> GrayImage {
    image::open(annotators().join(format!("{name}.png")))
        .unwrap()
        .to_luma8()
}

/// How many pixels differ, and by at most how much.
fn byte_differences(ours: &GrayImage, theirs: &GrayImage) -> (usize, u8) {
    assert_eq!(ours.dimensions(), theirs.dimensions());
    let differences: Vec<u8> = ours
        .pixels()
        .zip(theirs.pixels())
        .map(|(a, b)| a[0].abs_diff(b[0]))
        .filter(|&d| d > 0)
        .collect();
    (
        differences.len(),
        differences.into_iter().max().unwrap_or(0),
    )
}

#[test]
fn hed_soft_edges_match_controlnet_aux() {
    let reference = Reference::of("annotators");
    let hed = Hed::load(&annotators().join("hed.pth"), &Device::Cpu).unwrap();
    let edge = hed.edge_map(&picture()).unwrap();
    close("HED edges", &edge, reference.get("hed_edge"), 2e-5);
    let ours = hed.soft_edges(&picture(), false).unwrap();
    let (count, most) = byte_differences(&ours, &expected("softedge_hed"));
    // Truncated to bytes from f32 here and from f64 there: a value on a byte's edge may fall
    // either side.
    assert!(
        count <= 4 && most <= 1,
        "{count} pixels differ, by up to {most}"
    );
    // `safe` quantises to 0, 127 and 255: the edges span all three steps.
    let safe = hed.soft_edges(&picture(), true).unwrap();
    let (count, _) = byte_differences(&safe, &expected("softedge_hedsafe"));
    assert!(count <= 4, "{count} pixels differ");
    let mut steps: Vec<u8> = safe.pixels().map(|p| p[0]).collect();
    steps.sort_unstable();
    steps.dedup();
    assert_eq!(steps, [0, 127, 255]);
}

#[test]
fn pidinet_soft_edges_match_controlnet_aux() {
    let reference = Reference::of("annotators");
    let pidi = PidiNet::load(&annotators().join("pidinet.pth"), &Device::Cpu).unwrap();
    let edge = pidi.edge_map(&picture()).unwrap();
    close("PiDiNet edges", &edge, reference.get("pidinet_edge"), 2e-5);
    for (name, safe) in [("softedge_pidinet", false), ("softedge_pidisafe", true)] {
        let ours = pidi.soft_edges(&picture(), safe).unwrap();
        let (count, most) = byte_differences(&ours, &expected(name));
        assert!(
            count <= 4 && most <= 1,
            "{name}: {count} pixels differ, by up to {most}"
        );
    }
}

#[test]
fn lineart_lines_match_controlnet_aux() {
    let reference = Reference::of("annotators");
    let net = Lineart::load(&annotators().join("lineart.pth"), &Device::Cpu).unwrap();
    let line = net.line_map(&picture()).unwrap();
    close("line art", &line, reference.get("lineart_line"), 2e-5);
    let ours = net.lines(&picture()).unwrap();
    let (count, most) = byte_differences(&ours, &expected("lineart"));
    assert!(
        count <= 4 && most <= 1,
        "{count} pixels differ, by up to {most}"
    );
}

#[test]
fn anime_lineart_matches_controlnet_aux() {
    use autonomy_pipeline::models::sd::annotator::lineart_anime::LineartAnime;
    let reference = Reference::of("annotators");
    let square = image::open(annotators().join("square.png"))
        .unwrap()
        .to_rgb8();
    let net = LineartAnime::load(&annotators().join("lineart-anime.pth"), &Device::Cpu).unwrap();
    let line = net.line_map(&square).unwrap();
    close(
        "anime line art",
        &line,
        reference.get("lineart_anime_line"),
        2e-3,
    );
    let (count, most) = byte_differences(&net.lines(&square).unwrap(), &expected("lineart_anime"));
    assert!(
        count <= 8 && most <= 1,
        "{count} pixels differ, by up to {most}"
    );
    // Sides that are no multiples of 256 go through the network at the next ones and back.
    let odd = image::imageops::crop_imm(&square, 0, 0, 200, 131).to_image();
    assert_eq!(net.lines(&odd).unwrap().dimensions(), (200, 131));
}

/// Depth Anything V2 against its repository's `infer_image`, and the first Depth Anything
/// against its `run.py`, the same file in both (`make.py depth-anything`): the 128×64 picture
/// seen at 1036×518 (its position grid resized), the 256² one at 518² (the grid as stored);
/// the depth resized back, and the control image stretched from it.
#[test]
fn depth_anything_matches_its_releases() {
    let reference = Reference::of("depth-anything");
    let square = image::open(annotators().join("square.png"))
        .unwrap()
        .to_rgb8();
    for (version, prefix, name) in [
        (DepthVersion::V2, "", "depth_anything_v2"),
        (DepthVersion::V1, "v1_", "depth_anything"),
    ] {
        let file = annotators().join("depth-anything-v2.pth");
        let net = DepthAnything::load(&file, version, &Device::Cpu).unwrap();
        for (what, picture, suffix) in [
            ("picture", picture(), ""),
            ("square", square.clone(), "-square"),
        ] {
            let depth = net.depth_map(&picture).unwrap();
            let key = format!("{prefix}depth_{what}");
            close(&key, &depth, reference.get(&key), 1e-5);
            // The depth spans 0.05 here: a byte is 2e-4 of it, and a value within a few
            // millionths of a byte's edge may truncate either side (15 of the square's 65536
            // do).
            let theirs = expected(&format!("{name}{suffix}"));
            let (count, most) = byte_differences(&net.depth(&picture).unwrap(), &theirs);
            let pixels = (picture.width() * picture.height()) as usize;
            assert!(
                count <= pixels / 1000 && most <= 1,
                "{key}: {count} of {pixels} pixels differ, by up to {most}"
            );
        }
    }
}

/// M-LSD against `controlnet_aux`'s `MLSDdetector` (`make.py mlsd`: the released network at
/// its own size, random weights, its displacements scaled up so the segments are long and
/// some leave the picture): the network's maps, the decoded segments, the lines drawn; and
/// OpenCV's own 1-pixel lines of 40 seeded segments, pixel for pixel.
#[test]
fn mlsd_matches_controlnet_aux() {
    use autonomy_pipeline::models::sd::annotator::draw;
    let reference = Reference::of("mlsd");
    let net = Mlsd::load(&annotators().join("mlsd.pth"), &Device::Cpu).unwrap();
    close(
        "M-LSD maps",
        &net.maps(&picture()).unwrap(),
        reference.get("mlsd_map"),
        1e-4,
    );
    let segments = net.segments(&picture(), mlsd::DEFAULT_THRESHOLDS).unwrap();
    let theirs = reference.get("mlsd_lines").to_vec2::<f32>().unwrap();
    assert_eq!(segments.len(), theirs.len());
    for (ours, theirs) in segments.iter().zip(&theirs) {
        for (a, b) in ours.iter().zip(theirs) {
            assert!((a - f64::from(*b)).abs() < 1e-3, "{ours:?} ≠ {theirs:?}");
        }
    }
    let (count, _) = byte_differences(
        &net.lines(&picture(), mlsd::DEFAULT_THRESHOLDS).unwrap(),
        &expected("mlsd"),
    );
    assert_eq!(count, 0, "{count} pixels differ");
    // A distance threshold of 9 half-size pixels keeps only the segments longer than 18
    // (here from 8 to 25 pixels long).
    let long = net.segments(&picture(), (0.1, 9.0)).unwrap();
    assert!(!long.is_empty() && long.len() < segments.len());
    assert!(
        long.iter()
            .all(|[x0, y0, x1, y1]| (x0 - x1).hypot(y0 - y1) > 18.0 - 1e-3)
    );
    let mut canvas = GrayImage::new(64, 48);
    for case in reference.get("line_cases").to_vec2::<f32>().unwrap() {
        let [x0, y0, x1, y1] = [case[0], case[1], case[2], case[3]].map(|v| v as i64);
        draw::line(&mut canvas, (x0, y0), (x1, y1), 255);
    }
    assert_eq!(byte_differences(&canvas, &expected("lines-opencv")), (0, 0));
}

#[test]
fn lineart_standard_matches_controlnet_aux() {
    let reference = Reference::of("annotators");
    let theirs = reference.get("lineart_standard_intensity");
    let (h, w) = theirs.dims2().unwrap();
    let ours = Tensor::from_vec(lineart::darkness(&picture()), (h, w), &Device::Cpu).unwrap();
    close("lineart_standard darkness", &ours, theirs, 1e-3);
    let (count, most) = byte_differences(
        &lineart::standard(&picture()),
        &expected("lineart_standard"),
    );
    assert!(
        count <= 4 && most <= 1,
        "{count} pixels differ, by up to {most}"
    );
    // The picture's dark outline of the circle is a line; its flat colours are not.
    let lines = lineart::standard(&picture());
    assert!(
        lines.get_pixel(8, 28)[0] > 100,
        "the circle's outline is drawn"
    );
    assert_eq!(lines.get_pixel(30, 28)[0], 0, "the circle's inside is not");
}

/// Any size runs and keeps the picture's size: the line-art network pads sides that are not
/// multiples of 4 and crops back, and the padding does not reach far in.
#[test]
fn annotators_keep_odd_sizes() {
    let crop = image::imageops::crop_imm(&picture(), 0, 0, 101, 47).to_image();
    let hed = Hed::load(&annotators().join("hed.pth"), &Device::Cpu).unwrap();
    assert_eq!(
        hed.soft_edges(&crop, false).unwrap().dimensions(),
        (101, 47)
    );
    let net = Lineart::load(&annotators().join("lineart.pth"), &Device::Cpu).unwrap();
    let cropped = net.lines(&crop).unwrap();
    assert_eq!(cropped.dimensions(), (101, 47));
    assert_eq!(lineart::standard(&crop).dimensions(), (101, 47));
    // M-LSD pads to multiples of 16 by repeating the edge, and cuts its lines back.
    let segments = Mlsd::load(&annotators().join("mlsd.pth"), &Device::Cpu).unwrap();
    let lines = segments.lines(&crop, mlsd::DEFAULT_THRESHOLDS).unwrap();
    assert_eq!(lines.dimensions(), (101, 47));
    assert!(lines.pixels().any(|p| p[0] == 255), "it finds lines");
    // An empty picture is refused, not run.
    let empty = RgbImage::new(0, 5);
    assert!(segments.lines(&empty, mlsd::DEFAULT_THRESHOLDS).is_err());
    let depth = DepthAnything::load(
        &annotators().join("depth-anything-v2.pth"),
        DepthVersion::V2,
        &Device::Cpu,
    )
    .unwrap();
    assert!(depth.depth(&empty).is_err());
    // A 100×44 crop needs no padding: away from its right and bottom edges (the instance norms
    // see the whole picture, so nothing is exactly equal) the two agree closely.
    let even = image::imageops::crop_imm(&picture(), 0, 0, 100, 44).to_image();
    let whole = net.lines(&even).unwrap();
    let mut total = 0u64;
    for y in 0..30 {
        for x in 0..80 {
            total += u64::from(cropped.get_pixel(x, y)[0].abs_diff(whole.get_pixel(x, y)[0]));
        }
    }
    let mean = total as f64 / (30.0 * 80.0);
    assert!(
        mean < 8.0,
        "padding changed the inside by {mean:.2} on average"
    );
}

#[test]
fn the_wrong_file_is_refused_by_name() {
    let hed_file = annotators().join("hed.pth");
    let lineart_file = annotators().join("lineart.pth");
    let Err(error) = Hed::load(&lineart_file, &Device::Cpu) else {
        panic!("a line-art network loaded as HED");
    };
    assert!(matches!(error, SdError::Invalid { .. }), "{error}");
    assert!(error.to_string().contains("lineart.pth") && error.to_string().contains("HED"));
    let Err(error) = Lineart::load(&hed_file, &Device::Cpu) else {
        panic!("HED loaded as line art");
    };
    assert!(error.to_string().contains("hed.pth") && error.to_string().contains("line-art"));
    let Err(error) = PidiNet::load(&hed_file, &Device::Cpu) else {
        panic!("HED loaded as PiDiNet");
    };
    assert!(error.to_string().contains("hed.pth") && error.to_string().contains("PiDiNet"));
    let Err(error) = DepthAnything::load(&hed_file, DepthVersion::V2, &Device::Cpu) else {
        panic!("HED loaded as Depth Anything");
    };
    assert!(
        error.to_string().contains("hed.pth") && error.to_string().contains("Depth Anything"),
        "{error}"
    );
    let Err(error) = Mlsd::load(&hed_file, &Device::Cpu) else {
        panic!("HED loaded as M-LSD");
    };
    assert!(error.to_string().contains("M-LSD"), "{error}");
    let Err(error) = Hed::load(&annotators().join("missing.pth"), &Device::Cpu) else {
        panic!("a missing file loaded");
    };
    assert!(error.to_string().contains("missing.pth"), "{error}");
}

/// A recipe's `control_preprocess = "softedge_hed"` runs the annotator at build time: the asset
/// equals one made from the soft edges drawn beforehand, the manifest lists the annotator file
/// by its hash, a changed annotator makes the asset again, and `verify --reproduce` makes it
/// bit for bit. `generate` runs the line-art network.
#[test]
fn a_recipe_and_generate_make_control_images_with_annotator_networks() {
    let studio = common::Studio::new();
    let root = studio.root();
    common::copy_dir(
        &fixtures().join("tiny-sd15"),
        &root.join("models/tiny-sd15"),
    );
    common::copy_dir(&annotators(), &root.join("art"));
    let hed = Hed::load(&annotators().join("hed.pth"), &Device::Cpu).unwrap();
    image::DynamicImage::ImageLuma8(hed.soft_edges(&picture(), false).unwrap())
        .save(root.join("art/soft.png"))
        .unwrap();
    let recipe = |name: &str, control: &str| {
        std::fs::write(
            root.join(format!("{name}.recipe.toml")),
            format!(
                "kind = \"sprite\"\nprompt = \"a stone arch\"\nmodel = \"models/tiny-sd15\"\n\
                 steps = 3\nseed = 5\ncontrolnet = \"models/tiny-sd15/controlnet\"\n{control}"
            ),
        )
        .unwrap();
    };
    recipe(
        "found",
        "control_image = \"art/picture.png\"\ncontrol_preprocess = \"softedge_hed\"\n\
         control_annotator = \"art/hed.pth\"\n",
    );
    recipe("drawn", "control_image = \"art/soft.png\"\n");
    recipe(
        "standard",
        "control_image = \"art/picture.png\"\ncontrol_preprocess = \"lineart_standard\"\n",
    );
    let report = studio.build_report(None);
    let assets = report["assets"].as_array().unwrap();
    assert!(
        assets.len() == 3 && assets.iter().all(|a| a["outcome"] == "built"),
        "{report}"
    );
    let pixels = |name: &str| {
        image::open(root.join(format!("{name}.png")))
            .unwrap()
            .to_rgba8()
    };
    assert_eq!(pixels("found"), pixels("drawn"));
    assert_ne!(
        pixels("found"),
        pixels("standard"),
        "other lines, another image"
    );
    let manifest: autonomy_pipeline::build::provenance::Manifest =
        serde_json::from_slice(&std::fs::read(root.join("found.prov.json")).unwrap()).unwrap();
    let annotator = manifest
        .parents
        .iter()
        .find(|p| p.role == "control_annotator")
        .expect("the annotator is listed");
    assert_eq!(annotator.reference, "file:art/hed.pth");
    assert_eq!(
        annotator.sha256,
        autonomy_pipeline::models::digest::file_sha256(&annotators().join("hed.pth")).unwrap()
    );
    let verified = studio.reproduce(&root.join("found.png"));
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(text.contains("reproduced bit for bit"), "{text}");

    // Other annotator weights (the same network, one weight changed): made again.
    let mut tensors = candle_core::pickle::read_all(annotators().join("hed.pth")).unwrap();
    for (name, tensor) in &mut tensors {
        if name == "block5.projection.bias" {
            *tensor = (tensor.clone() + 1.0).unwrap();
        }
    }
    let map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, root.join("art/hed-2.safetensors")).unwrap();
    recipe(
        "found",
        "control_image = \"art/picture.png\"\ncontrol_preprocess = \"softedge_hed\"\n\
         control_annotator = \"art/hed-2.safetensors\"\n",
    );
    let report = studio.build_report(None);
    let found = report["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["asset"] == "found")
        .unwrap();
    assert_eq!(found["outcome"], "built", "{report}");
    assert_ne!(pixels("found"), pixels("drawn"));

    // `generate` with the line-art network writes the control image it made.
    let out = root.join("lines.png");
    let path = |relative: &str| root.join(relative).display().to_string();
    let args = |preprocess: &[&str]| {
        let mut args = vec![
            "generate".to_string(),
            "a stone arch".into(),
            "--steps".into(),
            "1".into(),
            "--model".into(),
            path("models/tiny-sd15"),
            "--controlnet".into(),
            path("models/tiny-sd15/controlnet"),
            "--control-image".into(),
            path("art/picture.png"),
            "--control-out".into(),
            out.display().to_string(),
            "-o".into(),
            path("arch.png"),
        ];
        args.extend(preprocess.iter().map(|s| s.to_string()));
        args
    };
    let run = |preprocess: &[&str]| {
        let args = args(preprocess);
        studio.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let generated = run(&[
        "--control-preprocess",
        "lineart",
        "--control-annotator",
        &path("art/lineart.pth"),
    ]);
    assert!(generated.status.success(), "{generated:?}");
    let net = Lineart::load(&annotators().join("lineart.pth"), &Device::Cpu).unwrap();
    assert_eq!(
        image::open(&out).unwrap().to_luma8(),
        net.lines(&picture()).unwrap()
    );
    // And with Depth Anything, the depth it made.
    let generated = run(&[
        "--control-preprocess",
        "depth_anything_v2",
        "--control-annotator",
        &path("art/depth-anything-v2.pth"),
    ]);
    assert!(generated.status.success(), "{generated:?}");
    let file = annotators().join("depth-anything-v2.pth");
    let net = DepthAnything::load(&file, DepthVersion::V2, &Device::Cpu).unwrap();
    assert_eq!(
        image::open(&out).unwrap().to_luma8(),
        net.depth(&picture()).unwrap()
    );
    // And with M-LSD, its lines.
    let generated = run(&[
        "--control-preprocess",
        "mlsd",
        "--control-annotator",
        &path("art/mlsd.pth"),
    ]);
    assert!(generated.status.success(), "{generated:?}");
    let net = Mlsd::load(&annotators().join("mlsd.pth"), &Device::Cpu).unwrap();
    assert_eq!(
        image::open(&out).unwrap().to_luma8(),
        net.lines(&picture(), mlsd::DEFAULT_THRESHOLDS).unwrap()
    );
    let refused = run(&["--control-preprocess", "lineart"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("needs its annotator file"),
        "{stderr}"
    );
}

/// `invert` makes a sketch's dark lines on white into white lines on black, and takes neither
/// thresholds nor an annotator file.
#[test]
fn invert_makes_the_pictures_negative() {
    use autonomy_pipeline::recipe::Preprocess;
    let invert = Preprocess::named("invert", None, None).unwrap();
    let negative = invert
        .apply(
            &picture(),
            std::path::Path::new(""),
            &Networks::new(&Device::Cpu),
        )
        .unwrap();
    assert!(
        negative
            .pixels()
            .zip(picture().pixels())
            .all(|(n, p)| n.0 == p.0.map(|v| 255 - v))
    );
    let refused = Preprocess::named("invert", Some((1.0, 2.0)), None).unwrap_err();
    assert!(
        refused.contains("thresholds only apply to \"canny\""),
        "{refused}"
    );
    let refused = Preprocess::named("invert", None, Some("hed.pth".into())).unwrap_err();
    assert!(refused.contains("uses no annotator file"), "{refused}");
}

/// Scribbles: HED's and PiDiNet's edges thinned to strokes as `scribble=True` makes them, and
/// A1111's `scribble_xdog` (no network), against their images.
#[test]
fn scribbles_match_controlnet_aux_and_a1111() {
    use autonomy_pipeline::models::sd::annotator::{EdgeFinish, EdgeNetwork, scribble};
    let networks = Networks::new(&Device::Cpu);
    for (name, network, file) in [
        ("scribble_hed", EdgeNetwork::Hed, "hed.pth"),
        ("scribble_pidinet", EdgeNetwork::PidiNet, "pidinet.pth"),
    ] {
        let ours = networks
            .soft_edges(
                network,
                &annotators().join(file),
                EdgeFinish::Scribble,
                &picture(),
            )
            .unwrap();
        let theirs = expected(name);
        let (count, _) = byte_differences(&ours, &theirs);
        let white = theirs.pixels().filter(|p| p[0] == 255).count();
        // OpenCV blurs the strokes as bytes in 8-bit fixed point, up to 2 levels from the
        // exact blur (measured on this fixture), before the threshold of 4: pixels at the
        // strokes' rims may fall either side (66 of 5358 for HED here).
        assert!(
            count <= white / 50 + 2,
            "{name}: {count} of {white} strokes' pixels differ"
        );
        assert!(white > 50, "{name}: the fixture has strokes to compare");
    }
    let ours = scribble::xdog(&picture());
    let (count, _) = byte_differences(&ours, &expected("scribble_xdog"));
    assert!(count <= 2, "scribble_xdog: {count} pixels differ");
}

/// OpenCV's bicubic resize (in its fixed point) to sizes the picture does not divide into,
/// and A1111's colour grid of it.
#[test]
fn the_colour_grid_and_its_bicubic_resize_match_opencv() {
    use autonomy_pipeline::models::sd::annotator::color;
    for (w, h) in [(37, 19), (301, 150)] {
        let theirs = image::open(annotators().join(format!("bicubic-{w}x{h}.png")))
            .unwrap()
            .to_rgb8();
        let ours = color::bicubic(&picture(), w, h);
        let most = ours
            .as_raw()
            .iter()
            .zip(theirs.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(most <= 1, "{w}×{h}: off by up to {most}");
    }
    let theirs = image::open(annotators().join("t2ia_color_grid.png"))
        .unwrap()
        .to_rgb8();
    let ours = color::color_grid(&picture());
    assert!(
        ours.as_raw()
            .iter()
            .zip(theirs.as_raw())
            .all(|(a, b)| a.abs_diff(*b) <= 1)
    );
}
