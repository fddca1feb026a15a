//! Checking an asset against its provenance manifest: every file's content hash, the manifest
//! embedded in each PNG and GIF and their C2PA Content Credentials, the asset name and the
//! creator's signature; and, with
//! [`reproduce`], making it again from its recipe.
//!
//! A report holds one [`Check`] per fact; the asset's [`Verdict`] is the worst of them.

mod reproduce;

pub use reproduce::{MIN_PSNR, ReproduceOptions, psnr, reproduce};

use alloy_primitives::Address;
use serde::Serialize;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::build::MANIFEST_SUFFIX;
use crate::build::provenance::{self, Carrier, FileHash, Manifest, SCHEMA};
use crate::credentials::{
    ASSERTION_LABEL, ContentCredentials, CredentialsError, TRAINED_ALGORITHMIC_MEDIA,
};

/// Suffixes of an asset's files, longest first: stripping one from a file name gives the asset.
const SUFFIXES: [&str; 9] = [
    MANIFEST_SUFFIX,
    ".sheet.png",
    ".atlas.json",
    ".albedo.png",
    ".normal.png",
    ".orm.png",
    ".gltf",
    ".png",
    ".gif",
];

/// The outcome of a check, from best to worst.
///
/// `Tampered` (evidence of a change) outranks `Unverifiable` (no evidence either way), so an
/// unsigned asset with a changed pixel reports `Tampered`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Everything matches and the creator signed it.
    Verified,
    /// It cannot be vouched for (unsigned, no manifest, unknown schema); nothing contradicts it.
    Unverifiable,
    /// Something differs from what was recorded or signed.
    Tampered,
}

impl Verdict {
    /// The `autonomy verify` exit code: 0 verified, 2 tampered, 3 unverifiable.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Verified => 0,
            Verdict::Tampered => 2,
            Verdict::Unverifiable => 3,
        }
    }
}

/// One line of a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked (`manifest`, a file name, `potion.png manifest`, `signature`).
    pub what: String,
    /// Its outcome.
    pub verdict: Verdict,
    /// Why.
    pub detail: String,
}

/// Everything checked about one asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AssetReport {
    /// Asset name (its sidecar's name without [`MANIFEST_SUFFIX`]).
    pub asset: String,
    /// The folder it lies in.
    pub dir: PathBuf,
    /// The creator address the manifest claims, if any.
    pub creator: Option<String>,
    /// The checks, in order.
    pub checks: Vec<Check>,
}

impl AssetReport {
    /// The worst verdict of the checks (`Unverifiable` when there are none).
    pub fn verdict(&self) -> Verdict {
        self.checks
            .iter()
            .map(|c| c.verdict)
            .max()
            .unwrap_or(Verdict::Unverifiable)
    }

    pub(crate) fn check(
        &mut self,
        what: impl Into<String>,
        verdict: Verdict,
        detail: impl Into<String>,
    ) {
        self.checks.push(Check {
            what: what.into(),
            verdict,
            detail: detail.into(),
        });
    }
}

/// A path could not be verified at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The path or a folder below it could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A folder holds no manifests.
    #[error("no provenance manifests (`*{MANIFEST_SUFFIX}`) under {}", .0.display())]
    NoManifests(PathBuf),
}

/// Verifies one asset given any of its files (`x.png`, `x.sheet.png`, `x.prov.json`, …), or
/// every asset in a folder (each `*.prov.json` below it, skipping hidden folders; none is
/// [`VerifyError::NoManifests`]).
///
/// A file whose sidecar manifest is missing yields a report whose `manifest` check is
/// `Unverifiable` and names the sidecar looked for; a path that does not exist is an error.
pub fn verify_path(path: &Path) -> Result<Vec<AssetReport>, VerifyError> {
    let io = |source| VerifyError::Io {
        path: path.to_path_buf(),
        source,
    };
    if fs::metadata(path).map_err(io)?.is_dir() {
        let mut sidecars = Vec::new();
        find_sidecars(path, &mut sidecars)?;
        if sidecars.is_empty() {
            return Err(VerifyError::NoManifests(path.to_path_buf()));
        }
        sidecars.sort();
        return Ok(sidecars.iter().map(|s| verify_sidecar(s, None)).collect());
    }
    let dir = path.parent().unwrap_or(Path::new(""));
    let file = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let file = file.unwrap_or_default();
    let stem = SUFFIXES.iter().find_map(|s| file.strip_suffix(s));
    let mut sidecar = dir.join(format!("{}{MANIFEST_SUFFIX}", stem.unwrap_or(&file)));
    if !sidecar.is_file()
        && let Some(asset) = embedded_asset(path)
    {
        sidecar = dir.join(format!("{asset}{MANIFEST_SUFFIX}"));
    }
    let given = (!file.ends_with(MANIFEST_SUFFIX)).then_some(file.as_str());
    Ok(vec![verify_sidecar(&sidecar, given)])
}

/// The `asset` named by the manifest embedded in a PNG or GIF, if any.
fn embedded_asset(file: &Path) -> Option<String> {
    let carrier = Carrier::of(&file.file_name()?.to_string_lossy())?;
    let (_, manifest) = carrier.strip(&fs::read(file).ok()?).ok()?;
    let manifest: Manifest = serde_json::from_slice(&manifest?).ok()?;
    Some(manifest.asset)
}

fn find_sidecars(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), VerifyError> {
    let io = |source| VerifyError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type().map_err(io)?;
        if kind.is_dir() && !name.starts_with('.') {
            find_sidecars(&entry.path(), out)?;
        } else if kind.is_file() && name.ends_with(MANIFEST_SUFFIX) {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// Verifies the asset whose sidecar is `sidecar`; `given` is the file the user named, which
/// must be one of the asset's files.
fn verify_sidecar(sidecar: &Path, given: Option<&str>) -> AssetReport {
    let file = sidecar
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let file = file.unwrap_or_default();
    let mut report = AssetReport {
        asset: file.strip_suffix(MANIFEST_SUFFIX).unwrap_or(&file).into(),
        dir: sidecar.parent().unwrap_or(Path::new("")).to_path_buf(),
        creator: None,
        checks: Vec::new(),
    };
    let json = match fs::read(sidecar) {
        Ok(json) => json,
        Err(e) => {
            let detail = format!("cannot read {}: {e}", sidecar.display());
            report.check("manifest", Verdict::Unverifiable, detail);
            return report;
        }
    };
    let manifest: Manifest = match serde_json::from_slice(&json) {
        Ok(manifest) => manifest,
        Err(e) => {
            let detail = format!("{file} is not a provenance manifest: {e}");
            report.check("manifest", Verdict::Unverifiable, detail);
            return report;
        }
    };
    report.creator = manifest.creator.clone();
    let (verdict, detail) = if manifest.schema != SCHEMA {
        let detail = format!("unknown schema `{}` (expected `{SCHEMA}`)", manifest.schema);
        (Verdict::Unverifiable, detail)
    } else if manifest.asset != report.asset {
        let detail = format!(
            "describes asset `{}` but is stored as {file}: moved from another asset",
            manifest.asset
        );
        (Verdict::Tampered, detail)
    } else if manifest.outputs.is_empty() {
        (Verdict::Unverifiable, "lists no files".to_string())
    } else {
        (Verdict::Verified, format!("{file} ({SCHEMA})"))
    };
    report.check("manifest", verdict, detail);
    if let Some(given) = given
        && !manifest.outputs.iter().any(|o| o.file == given)
    {
        let detail = format!("not one of the files {file} describes");
        report.check(given, Verdict::Unverifiable, detail);
    }
    for output in &manifest.outputs {
        check_output(&mut report, output, &json, manifest.creator.as_deref());
    }
    check_signature(&mut report, &manifest);
    report
}

/// Whether `path` is relative and stays inside its folder (no `..`, root or prefix).
fn inside(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Checks one listed file's content hashes and, for a PNG or GIF, its embedded manifest and its
/// C2PA Content Credentials (when it has them).
fn check_output(
    report: &mut AssetReport,
    output: &FileHash,
    sidecar: &[u8],
    creator: Option<&str>,
) {
    let name = &output.file;
    if !inside(name) {
        report.check(name, Verdict::Tampered, "not a file name inside the folder");
        return;
    }
    let bytes = match fs::read(report.dir.join(name)) {
        Ok(bytes) => bytes,
        Err(e) => return report.check(name, Verdict::Tampered, format!("cannot read: {e}")),
    };
    let (content, embedded, credentials) = match Carrier::of(name) {
        None => (bytes, None, None),
        Some(carrier) => {
            let stripped = carrier.remove_credentials(&bytes).and_then(|(bare, _)| {
                let (content, embedded) = carrier.strip(&bare)?;
                Ok((bare, content, embedded))
            });
            match stripped {
                Ok((bare, content, embedded)) => {
                    let embedded = match embedded {
                        None => Err("no embedded manifest"),
                        Some(m) if m != sidecar => Err("manifest edited: differs from the sidecar"),
                        Some(m)
                            if carrier.embed(&content, &m).ok().as_deref() != Some(&bare[..]) =>
                        {
                            Err("bytes besides the content and its manifest (appended or moved)")
                        }
                        Some(_) => Ok("identical to the sidecar"),
                    };
                    let credentials = crate::credentials::read(&bytes, carrier);
                    (content, Some(embedded), Some(credentials))
                }
                Err(e) => return report.check(name, Verdict::Tampered, e.to_string()),
            }
        }
    };
    let actual = FileHash::of(name, &content);
    let (verdict, detail) = match (actual.sha256 == output.sha256, actual.cid == output.cid) {
        (true, true) => (Verdict::Verified, "sha256 and CID match".to_string()),
        (false, _) => (
            Verdict::Tampered,
            format!("content changed: sha256 {}", actual.sha256),
        ),
        (true, false) => (
            Verdict::Tampered,
            format!("CID {} recorded wrongly", output.cid),
        ),
    };
    report.check(name, verdict, detail);
    match embedded {
        Some(Ok(detail)) => report.check(format!("{name} manifest"), Verdict::Verified, detail),
        Some(Err(detail)) => report.check(format!("{name} manifest"), Verdict::Tampered, detail),
        None => {}
    }
    if let Some(credentials) = credentials {
        check_credentials(report, name, credentials, sidecar, creator);
    }
}

/// Judges a file's C2PA Content Credentials: intact, declaring a trained model, carrying the
/// same manifest as the sidecar, signed for the manifest's creator. A file without them gets
/// no line (they may have been stripped by a tool; the manifest above still vouches for it).
fn check_credentials(
    report: &mut AssetReport,
    name: &str,
    read: Result<Option<ContentCredentials>, CredentialsError>,
    sidecar: &[u8],
    creator: Option<&str>,
) {
    let what = format!("{name} C2PA");
    let credentials = match read {
        Ok(None) => return,
        Ok(Some(credentials)) => credentials,
        Err(e) => return report.check(what, Verdict::Tampered, format!("unreadable: {e}")),
    };
    let signer = credentials.signer.clone().unwrap_or_default();
    let sidecar: Option<serde_json::Value> = serde_json::from_slice(sidecar).ok();
    let for_creator =
        creator.is_none_or(|c| signer.eq_ignore_ascii_case(&format!("Autonomy creator {c}")));
    let (verdict, detail) = if !credentials.failures.is_empty() {
        let codes = credentials.failures.join(", ");
        (
            Verdict::Tampered,
            format!("Content Credentials invalid: {codes}"),
        )
    } else if credentials.provenance.is_none() || credentials.provenance != sidecar {
        let detail = format!("the `{ASSERTION_LABEL}` assertion differs from the sidecar");
        (Verdict::Tampered, detail)
    } else if credentials.digital_source_type.as_deref() != Some(TRAINED_ALGORITHMIC_MEDIA) {
        let detail = "the claim does not declare trainedAlgorithmicMedia".to_string();
        (Verdict::Tampered, detail)
    } else if !for_creator {
        (
            Verdict::Tampered,
            format!("signed by `{signer}`, not the creator"),
        )
    } else {
        let detail = format!(
            "Content Credentials valid: trainedAlgorithmicMedia, signed by `{signer}` (a local \
             certificate, not on a public trust list)"
        );
        (Verdict::Verified, detail)
    };
    report.check(what, verdict, detail);
}

fn check_signature(report: &mut AssetReport, manifest: &Manifest) {
    let (verdict, detail) = match provenance::recover_signer(manifest) {
        Ok(None) => (Verdict::Unverifiable, "not signed".to_string()),
        Err(e) => (Verdict::Tampered, format!("malformed: {e}")),
        Ok(Some(signer)) => {
            let claimed = manifest.creator.as_deref().map(str::parse::<Address>);
            match claimed {
                Some(Ok(creator)) if creator == signer => {
                    (Verdict::Verified, format!("signed by the creator {signer}"))
                }
                Some(Ok(creator)) => (
                    Verdict::Tampered,
                    format!("not by the creator {creator}: changed since signing, or another key"),
                ),
                _ => (
                    Verdict::Tampered,
                    "signed, but names no valid creator".into(),
                ),
            }
        }
    };
    report.check("signature", verdict, detail);
}
