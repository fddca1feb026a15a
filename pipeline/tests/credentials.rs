//! C2PA Content Credentials end to end: a signed build of a sprite and an animation on the
//! shipped model carries them in every PNG and GIF; `autonomy verify` checks them; C2PA's own
//! readers — c2patool and the Python SDK, which `.ci/run` installs into `.ci/` — read them back
//! (valid, `trainedAlgorithmicMedia`, our manifest as the custom assertion) and trust them once
//! the CA from `autonomy keys certificate --ca` is their trust anchor; an edited file fails all.

mod common;

use autonomy_pipeline::build::provenance::{self, Carrier, Manifest};
use autonomy_pipeline::credentials::{ASSERTION_LABEL, TRAINED_ALGORITHMIC_MEDIA};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RECIPES: &str = r#"
[assets.apple]
kind = "sprite"
prompt = "red apple flat food drink"
size = 32
steps = 6

[assets.spark]
kind = "animation"
prompt = "fire flat"
size = 32
frames = 2
steps = 4
"#;

/// C2PA's own readers, as `.ci/run` installs them.
#[derive(Clone, Copy, Debug)]
enum Reader {
    /// c2pa-python (prebuilt c2pa-rs) in `.ci/python`.
    Python,
    /// c2patool in `.ci/tools/bin`.
    Tool,
}

impl Reader {
    /// What the reader reports on `file` (its manifest store JSON), trusting `ca` if given.
    fn read(self, file: &Path, ca: Option<&Path>) -> serde_json::Value {
        let ci = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci");
        let mut command = match self {
            Reader::Python => {
                let python = ci.join("python");
                assert!(python.join("c2pa").is_dir(), "{}", missing("c2pa-python"));
                let mut command = Command::new("python3");
                command
                    .args(["-c", PYTHON_READER])
                    .env("PYTHONPATH", python);
                command
                    .arg(file)
                    .arg(ca.map(Path::as_os_str).unwrap_or_default());
                command
            }
            Reader::Tool => {
                let tool = ci.join("tools/bin/c2patool");
                assert!(tool.is_file(), "{}", missing("c2patool"));
                let mut command = Command::new(tool);
                command.arg(file);
                if let Some(ca) = ca {
                    command.arg("trust").arg("--trust_anchors").arg(ca);
                }
                command
            }
        };
        let out = command.output().expect("the reader runs");
        assert!(out.status.success(), "{self:?} failed on {file:?}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{self:?}: {e}: {out:?}"))
    }
}

fn missing(reader: &str) -> String {
    format!("{reader} is missing: `bash .ci/run` installs it (see the commands there)")
}

/// Reads `argv[1]` with c2pa-python, trusting the CA in `argv[2]` when it is not empty.
const PYTHON_READER: &str = r#"
import sys, c2pa
path, ca = sys.argv[1], sys.argv[2]
context = None
if ca:
    settings = {"trust": {"trust_anchors": open(ca).read()}, "verify": {"verify_trust": True}}
    context = c2pa.Context(c2pa.Settings.from_dict(settings))
mime = "image/gif" if path.endswith(".gif") else "image/png"
with open(path, "rb") as stream:
    reader = c2pa.Reader(mime, stream, context=context) if context else c2pa.Reader(mime, stream)
    print(reader.json())
"#;

/// The active manifest of a reader's report.
fn active(report: &serde_json::Value) -> &serde_json::Value {
    let label = report["active_manifest"]
        .as_str()
        .expect("an active manifest");
    &report["manifests"][label]
}

fn assertion<'a>(manifest: &'a serde_json::Value, label: &str) -> &'a serde_json::Value {
    manifest["assertions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["label"] == label)
        .map(|a| &a["data"])
        .unwrap_or_else(|| panic!("no `{label}` assertion in {manifest}"))
}

/// Failure codes of a reader's report on the active manifest.
fn failures(report: &serde_json::Value) -> Vec<String> {
    report["validation_results"]["activeManifest"]["failure"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|s| s["code"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `(what, verdict, detail)` of the C2PA checks in a `verify --json` report.
fn c2pa_checks(out: &Output) -> Vec<(String, String, String)> {
    let reports: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let text = |v: &serde_json::Value| v.as_str().unwrap().to_string();
    reports
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["checks"].as_array().unwrap().iter())
        .filter(|c| c["what"].as_str().unwrap().ends_with(" C2PA"))
        .map(|c| (text(&c["what"]), text(&c["verdict"]), text(&c["detail"])))
        .collect()
}

#[test]
fn signed_builds_carry_content_credentials_that_c2pa_reads_and_trusts() {
    let studio = common::Studio::new();
    let root = studio.root();
    let autonomy = |args: &[&str]| studio.run(args);
    let address = studio.new_key("studio");
    std::fs::write(root.join("items.recipe.toml"), RECIPES).unwrap();
    studio.build_signed("studio");
    let root_arg = root.to_str().unwrap();

    // The signed files still decode: the sprite, the sheet and both GIF frames.
    for png in ["apple.png", "spark.sheet.png"] {
        let bytes = std::fs::read(root.join(png)).unwrap();
        image::load_from_memory(&bytes).unwrap_or_else(|e| panic!("{png}: {e}"));
    }
    let gif = std::fs::File::open(root.join("spark.gif")).unwrap();
    let mut decoder = gif::DecodeOptions::new().read_info(gif).unwrap();
    let mut frames = 0;
    while decoder.read_next_frame().unwrap().is_some() {
        frames += 1;
    }
    assert_eq!(frames, 2, "spark.gif");

    // verify: every PNG and GIF has intact credentials for the creator.
    let out = autonomy(&["verify", root_arg, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let checks = c2pa_checks(&out);
    let mut files: Vec<&str> = checks.iter().map(|(w, _, _)| w.as_str()).collect();
    files.sort();
    assert_eq!(
        files,
        ["apple.png C2PA", "spark.gif C2PA", "spark.sheet.png C2PA"]
    );
    for (what, verdict, detail) in &checks {
        assert_eq!(verdict, "verified", "{what}: {detail}");
        assert!(detail.contains(&address), "{what}: {detail}");
    }

    // C2PA's own SDK reads each file: valid (untrusted: a local CA), made by a trained model,
    // with our manifest as the custom assertion.
    let ca = root.join("ca.pem");
    let written = autonomy(&[
        "keys",
        "certificate",
        "studio",
        "--ca",
        "-o",
        ca.to_str().unwrap(),
    ]);
    assert!(written.status.success(), "{written:?}");
    for reader in [Reader::Python, Reader::Tool] {
        for file in ["apple.png", "spark.gif", "spark.sheet.png"] {
            let path = root.join(file);
            let asset = file.split('.').next().unwrap();
            let sidecar: serde_json::Value = serde_json::from_slice(
                &std::fs::read(root.join(format!("{asset}.prov.json"))).unwrap(),
            )
            .unwrap();
            let report = reader.read(&path, None);
            assert_eq!(
                report["validation_state"], "Valid",
                "{reader:?} {file}: {report}"
            );
            assert_eq!(
                failures(&report),
                ["signingCredential.untrusted"],
                "{reader:?} {file}: only the trust list is missing"
            );
            let manifest = active(&report);
            assert_eq!(
                assertion(manifest, ASSERTION_LABEL),
                &sidecar,
                "{reader:?} {file}"
            );
            let actions = assertion(manifest, "c2pa.actions.v2")["actions"]
                .as_array()
                .unwrap();
            assert!(
                actions.iter().any(|a| a["action"] == "c2pa.created"
                    && a["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA),
                "{reader:?} {file}: {actions:?}"
            );
            assert_eq!(
                manifest["signature_info"]["common_name"],
                format!("Autonomy creator {address}"),
                "{reader:?} {file}"
            );
            let trusted = reader.read(&path, Some(&ca));
            assert_eq!(
                trusted["validation_state"], "Trusted",
                "{reader:?} {file}: {trusted}"
            );
            assert_eq!(
                failures(&trusted),
                Vec::<String>::new(),
                "{reader:?} {file}"
            );
        }
    }

    // An edited manifest (re-embedded in the same file, the C2PA store kept) breaks the hard
    // binding: both readers and verify say so.
    let apple = root.join("apple.png");
    let bytes = std::fs::read(&apple).unwrap();
    let (_, embedded) = provenance::strip_png(&bytes).unwrap();
    let mut manifest: Manifest = serde_json::from_slice(&embedded.unwrap()).unwrap();
    manifest.recipe["prompt"] = "green apple flat food drink".into();
    let (bare, _) = Carrier::Png.remove_credentials(&bytes).unwrap();
    let (content, _) = provenance::strip_png(&bare).unwrap();
    let forged = provenance::embed_png(&content, &manifest.to_json().unwrap()).unwrap();
    let store_at = bytes.windows(4).position(|w| w == b"caBX").unwrap() - 4;
    let store_len = u32::from_be_bytes(bytes[store_at..store_at + 4].try_into().unwrap());
    let store = &bytes[store_at..store_at + 12 + store_len as usize];
    let mut tampered = forged[..store_at].to_vec();
    tampered.extend_from_slice(store);
    tampered.extend_from_slice(&forged[store_at..]);
    std::fs::write(&apple, &tampered).unwrap();
    for reader in [Reader::Python, Reader::Tool] {
        let report = reader.read(&apple, None);
        assert_eq!(
            report["validation_state"], "Invalid",
            "{reader:?}: {report}"
        );
        let codes = failures(&report);
        assert!(
            codes.iter().any(|c| c.contains("dataHash.mismatch")),
            "{reader:?}: {report}"
        );
    }
    let out = autonomy(&["verify", apple.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let checks = c2pa_checks(&out);
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(checks[0].1, "tampered");
    assert!(checks[0].2.contains("dataHash.mismatch"), "{checks:?}");
}
