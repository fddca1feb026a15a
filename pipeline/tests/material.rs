//! Materials end to end: the files `write_material` writes, read back with the `gltf` crate and
//! checked by the Khronos glTF Validator (npm `gltf-validator`; `npm ci` installs it).

use autonomy_pipeline::material::{MapKind, MaterialError, write_material};
use gltf::image::Source;
use gltf::mesh::Semantic;
use gltf::texture::WrappingMode;
use image::{Rgba, RgbaImage};
use std::path::{Path, PathBuf};
use std::process::Command;

const ALL: [MapKind; 3] = [MapKind::Normal, MapKind::Roughness, MapKind::Ao];

/// A tileable 128×128 brick wall: 32×16 bricks in running bond, 2-pixel mortar in shadow
/// (darker, as luminance is the height), per-brick tint and per-pixel grain.
fn bricks() -> RgbaImage {
    let hash = |a: u32, b: u32| (a.wrapping_mul(73_856_093) ^ b.wrapping_mul(19_349_663)) % 41;
    RgbaImage::from_fn(128, 128, |x, y| {
        let row = y / 16;
        let shifted = (x + row % 2 * 16) % 128;
        let grain = hash(x, y) as u8 / 2;
        if y % 16 < 2 || shifted % 32 < 2 {
            Rgba([52 + grain, 48 + grain, 44 + grain, 255])
        } else {
            let tint = hash(row, shifted / 32) as u8;
            Rgba([
                150 + tint + grain,
                70 + tint / 2 + grain / 2,
                50 + grain / 2,
                255,
            ])
        }
    })
}

fn gltf_path(written: &[PathBuf]) -> &Path {
    written
        .last()
        .expect("write_material returns at least the .gltf")
}

fn image_uri(texture: gltf::Texture) -> String {
    match texture.source().source() {
        Source::Uri { uri, .. } => uri.to_owned(),
        Source::View { .. } => panic!("textures are files next to the .gltf"),
    }
}

#[test]
fn writes_a_material_that_the_gltf_crate_reads() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_material(dir.path(), "bricks", &bricks(), &ALL, 3.0).unwrap();
    let names: Vec<_> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "bricks.albedo.png",
            "bricks.normal.png",
            "bricks.orm.png",
            "bricks.gltf"
        ]
    );
    for png in &written[..3] {
        assert_eq!(
            image::open(png).unwrap().to_rgba8().dimensions(),
            (128, 128)
        );
    }

    let doc = gltf::Gltf::from_slice(&std::fs::read(gltf_path(&written)).unwrap()).unwrap();
    assert_eq!(
        doc.document.as_json().asset.generator,
        Some("Autonomy".into())
    );
    let material = doc.materials().next().unwrap();
    assert_eq!(material.name(), Some("bricks"));
    let pbr = material.pbr_metallic_roughness();
    let albedo = pbr.base_color_texture().unwrap().texture();
    assert_eq!(image_uri(albedo.clone()), "bricks.albedo.png");
    let sampler = albedo.sampler();
    assert_eq!(
        (sampler.wrap_s(), sampler.wrap_t()),
        (WrappingMode::Repeat, WrappingMode::Repeat)
    );
    let orm = pbr.metallic_roughness_texture().unwrap().texture();
    assert_eq!(image_uri(orm), "bricks.orm.png");
    let occlusion = material.occlusion_texture().unwrap().texture();
    assert_eq!(image_uri(occlusion), "bricks.orm.png");
    let normal = material.normal_texture().unwrap().texture();
    assert_eq!(image_uri(normal), "bricks.normal.png");

    let mesh = doc.meshes().next().unwrap();
    let primitive = mesh.primitives().next().unwrap();
    assert_eq!(primitive.material().index(), Some(0));
    for semantic in [
        Semantic::Positions,
        Semantic::Normals,
        Semantic::Tangents,
        Semantic::TexCoords(0),
    ] {
        assert_eq!(primitive.get(&semantic).unwrap().count(), 4, "{semantic:?}");
    }
    assert_eq!(primitive.indices().unwrap().count(), 6);
    let bounds = primitive.bounding_box();
    assert_eq!(
        (bounds.min, bounds.max),
        ([-0.5, -0.5, 0.0], [0.5, 0.5, 0.0])
    );
    let buffer = doc.buffers().next().unwrap();
    assert!(matches!(buffer.source(), gltf::buffer::Source::Uri(uri)
        if uri.starts_with("data:application/octet-stream;base64,")));
    let scene = doc.default_scene().unwrap();
    assert_eq!(
        scene.nodes().next().unwrap().mesh().unwrap().index(),
        mesh.index()
    );
}

#[test]
fn writes_only_the_maps_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_material(dir.path(), "plain", &bricks(), &[], 1.0).unwrap();
    assert_eq!(written.len(), 2);
    let doc = gltf::Gltf::from_slice(&std::fs::read(gltf_path(&written)).unwrap()).unwrap();
    let material = doc.materials().next().unwrap();
    assert!(material.normal_texture().is_none() && material.occlusion_texture().is_none());
    assert!(
        material
            .pbr_metallic_roughness()
            .metallic_roughness_texture()
            .is_none()
    );
    assert_eq!(material.pbr_metallic_roughness().metallic_factor(), 0.0);
    let primitive = doc.meshes().next().unwrap().primitives().next().unwrap();
    assert!(
        primitive.get(&Semantic::Tangents).is_none(),
        "no normal map, no tangents"
    );

    let written = write_material(dir.path(), "ao", &bricks(), &[MapKind::Ao], 1.0).unwrap();
    assert_eq!(written.len(), 3);
    let orm = image::open(&written[1]).unwrap().to_rgba8();
    assert!(orm.pixels().all(|p| p[1] == 255 && p[2] == 0));
    assert!(orm.pixels().any(|p| p[0] < 200), "the mortar is occluded");
}

#[test]
fn invalid_input_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["", ".hidden", "../up", "a b", "a/b"] {
        let result = write_material(dir.path(), name, &bricks(), &ALL, 1.0);
        assert!(
            matches!(result, Err(MaterialError::InvalidName(_))),
            "{name:?}"
        );
    }
    let result = write_material(dir.path(), "x", &RgbaImage::new(0, 0), &ALL, 1.0);
    assert!(matches!(result, Err(MaterialError::EmptyAlbedo)));
    let result = write_material(dir.path(), "x", &bricks(), &ALL, 0.0);
    assert!(matches!(result, Err(MaterialError::InvalidTiling(_))));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// The Khronos validator's report on `gltf` as JSON.
fn validate(gltf: &Path) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    assert!(
        root.join("node_modules/gltf-validator/package.json")
            .is_file(),
        "the Khronos glTF validator is not installed: run `npm ci` in the repository root"
    );
    let output = Command::new("node")
        .arg(root.join("pipeline/tests/validate-gltf.mjs"))
        .arg(gltf)
        .output()
        .expect("Node.js is needed to run the glTF validator (`node` on PATH)");
    assert!(
        output.status.success(),
        "validator failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_khronos_validator_reports_no_issues() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [&[MapKind]; 4] = [&ALL, &[], &[MapKind::Normal], &[MapKind::Ao]];
    for (i, maps) in cases.into_iter().enumerate() {
        let written = write_material(dir.path(), &format!("m{i}"), &bricks(), maps, 2.5).unwrap();
        let report = validate(gltf_path(&written));
        let issues = &report["issues"];
        for count in ["numErrors", "numWarnings", "numInfos", "numHints"] {
            assert_eq!(issues[count], 0, "{maps:?}: {count}: {report:#}");
        }
        let resources = report["info"]["resources"].as_array().unwrap();
        assert_eq!(
            resources.len(),
            written.len(),
            "{maps:?}: buffer + images: {report:#}"
        );
    }
}
