//! C2PA Content Credentials on generated PNGs and GIFs: a manifest store, embedded by the
//! `c2pa` crate, whose claim says the image is `trainedAlgorithmicMedia` made by Autonomy and
//! carries the whole provenance manifest as the custom assertion [`ASSERTION_LABEL`]. It is
//! signed with the creator's local certificate chain ([`certificate::LocalChain`]), so any C2PA
//! reader (c2patool, the CAI SDKs) shows who made it with which model; the chain is not on a
//! public trust list, so readers call it valid but untrusted unless the CA is added to their
//! trust anchors (`autonomy keys certificate` writes it).
//!
//! The store sits beside the Autonomy manifest ([`crate::build::provenance`]) and covers it: a
//! changed pixel or an edited manifest breaks the C2PA hard binding too.

pub mod certificate;

use std::io::Cursor;

use crate::build::provenance::{Carrier, Manifest, ProvenanceError};
use certificate::{CertificateError, LocalChain};

/// Label of the custom assertion that holds the Autonomy provenance manifest.
pub const ASSERTION_LABEL: &str = "org.autonomy.provenance";

/// IPTC digital source type of images a trained model made.
pub const TRAINED_ALGORITHMIC_MEDIA: &str =
    "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia";

/// The C2PA validation code of a certificate chain no trust list vouches for: expected for local
/// certificates, and not a sign of tampering.
const UNTRUSTED: &str = "signingCredential.untrusted";

/// Content Credentials could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The local certificate chain could not be made.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// The c2pa library refused.
    #[error("C2PA: {0}")]
    C2pa(#[from] c2pa::Error),
    /// The file could not be walked.
    #[error(transparent)]
    File(#[from] ProvenanceError),
    /// The manifest does not serialise.
    #[error("manifest JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// What a file's Content Credentials say, as read back by the c2pa library.
#[derive(Clone, Debug, PartialEq)]
pub struct ContentCredentials {
    /// Validation failure codes (`assertion.dataHash.mismatch`, …), without
    /// `signingCredential.untrusted`; empty when the store is intact.
    pub failures: Vec<String>,
    /// The digital source type of the `c2pa.created` action, if any.
    pub digital_source_type: Option<String>,
    /// The Autonomy provenance manifest in the [`ASSERTION_LABEL`] assertion, if any.
    pub provenance: Option<serde_json::Value>,
    /// Common name of the signing certificate.
    pub signer: Option<String>,
    /// Organisation that issued the signing certificate.
    pub issuer: Option<String>,
}

/// Signs `bytes` (a PNG or GIF with the Autonomy manifest already embedded) with Content
/// Credentials for `manifest`, using `chain`; returns the new file.
pub fn sign(
    bytes: &[u8],
    carrier: Carrier,
    manifest: &Manifest,
    chain: &LocalChain,
) -> Result<Vec<u8>, CredentialsError> {
    let model = &manifest.model;
    let definition = serde_json::json!({
        "claim_generator_info": [{"name": "Autonomy", "version": env!("CARGO_PKG_VERSION")}],
        "title": manifest.asset,
        "format": carrier.mime(),
        "assertions": [
            {
                "label": "c2pa.actions.v2",
                "data": {"actions": [{
                    "action": "c2pa.created",
                    "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                    "softwareAgent": {
                        "name": format!("Autonomy {} model", model.name),
                        "version": model.weights_sha256.get(..12).unwrap_or(&model.weights_sha256),
                    },
                }]},
            },
            {"label": ASSERTION_LABEL, "data": manifest},
        ],
    });
    let mut builder = c2pa::Builder::from_context(c2pa::Context::new())
        .with_definition(serde_json::to_string(&definition)?)?;
    let signer = c2pa::create_signer::from_keys(
        chain.chain_pem.as_bytes(),
        chain.key_pem.as_bytes(),
        c2pa::SigningAlg::Es256,
        None,
    )?;
    let mut dest = Cursor::new(Vec::with_capacity(bytes.len() + 16 * 1024));
    builder.sign(
        signer.as_ref(),
        carrier.mime(),
        &mut Cursor::new(bytes),
        &mut dest,
    )?;
    tracing::debug!(asset = %manifest.asset, "signed Content Credentials");
    Ok(dest.into_inner())
}

/// Reads and validates the Content Credentials in `bytes`; `None` when the file has none.
pub fn read(
    bytes: &[u8],
    carrier: Carrier,
) -> Result<Option<ContentCredentials>, CredentialsError> {
    if !carrier.remove_credentials(bytes)?.1 {
        return Ok(None);
    }
    let reader = c2pa::Reader::from_context(c2pa::Context::new())
        .with_stream(carrier.mime(), Cursor::new(bytes))?;
    let failures = reader
        .validation_status()
        .unwrap_or_default()
        .iter()
        .map(|s| s.code().to_string())
        .filter(|code| code != UNTRUSTED)
        .collect();
    let active = reader.active_manifest();
    let actions = active.and_then(|m| {
        m.find_assertion::<serde_json::Value>("c2pa.actions.v2")
            .or_else(|_| m.find_assertion::<serde_json::Value>("c2pa.actions"))
            .ok()
    });
    let digital_source_type = actions.as_ref().and_then(|a| {
        a["actions"].as_array()?.iter().find_map(|action| {
            (action["action"] == "c2pa.created")
                .then(|| action["digitalSourceType"].as_str().map(String::from))
                .flatten()
        })
    });
    let signature = active.and_then(c2pa::Manifest::signature_info);
    Ok(Some(ContentCredentials {
        failures,
        digital_source_type,
        provenance: active.and_then(|m| m.find_assertion(ASSERTION_LABEL).ok()),
        signer: signature.and_then(|s| s.common_name.clone()),
        issuer: signature.and_then(|s| s.issuer.clone()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::provenance::{FileHash, embed_gif, embed_png};
    use crate::generator::ModelIdentity;
    use alloy_signer_local::PrivateKeySigner;

    fn manifest(file: &str, content: &[u8]) -> Manifest {
        Manifest {
            schema: crate::build::provenance::SCHEMA.into(),
            asset: "gem".into(),
            outputs: vec![FileHash::of(file, content)],
            recipe: serde_json::json!({"prompt": "gem stone flat objects"}),
            recipe_file: "gem.recipe.toml".into(),
            model: ModelIdentity {
                name: "house".into(),
                weights_sha256: "ab".repeat(32),
                dataset_sha256: None,
                path: "models/house".into(),
                generator: "house/1".into(),
                loras: Vec::new(),
                embeddings: Vec::new(),
                hypernetworks: Vec::new(),
                vae: None,
                refiner: None,
                upscaler: None,
                controlnets: Vec::new(),
            },
            device: "cpu".into(),
            parents: Vec::new(),
            creator: None,
            created: "2026-11-26T00:00:00Z".into(),
            signature: None,
        }
    }

    fn png() -> Vec<u8> {
        let image = image::RgbaImage::from_fn(8, 8, |x, y| {
            image::Rgba([x as u8 * 30, y as u8 * 30, 90, 255])
        });
        let mut bytes = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
            .unwrap();
        bytes
    }

    fn gif() -> Vec<u8> {
        let mut bytes = Vec::new();
        {
            let mut encoder = gif::Encoder::new(&mut bytes, 4, 4, &[0, 0, 0, 255, 0, 0]).unwrap();
            for i in 0..2u8 {
                let frame = gif::Frame {
                    width: 4,
                    height: 4,
                    buffer: std::borrow::Cow::Owned(vec![i % 2; 16]),
                    ..Default::default()
                };
                encoder.write_frame(&frame).unwrap();
            }
        }
        bytes
    }

    fn chain() -> LocalChain {
        LocalChain::for_creator(&PrivateKeySigner::from_slice(&[3u8; 32]).unwrap()).unwrap()
    }

    #[test]
    fn signed_png_and_gif_read_back_intact_and_strip_to_their_content() {
        let chain = chain();
        for (carrier, content, file) in [
            (Carrier::Png, png(), "gem.png"),
            (Carrier::Gif, gif(), "gem.gif"),
        ] {
            let manifest = manifest(file, &content);
            let json = manifest.to_json().unwrap();
            let embedded = match carrier {
                Carrier::Png => embed_png(&content, &json).unwrap(),
                Carrier::Gif => embed_gif(&content, &json).unwrap(),
            };
            let signed = sign(&embedded, carrier, &manifest, &chain).unwrap();
            let read = read(&signed, carrier)
                .unwrap()
                .expect("credentials are there");
            assert_eq!(read.failures, Vec::<String>::new(), "{file}");
            assert_eq!(
                read.digital_source_type.as_deref(),
                Some(TRAINED_ALGORITHMIC_MEDIA)
            );
            assert_eq!(
                read.provenance,
                Some(serde_json::to_value(&manifest).unwrap())
            );
            assert!(read.signer.unwrap().starts_with("Autonomy creator 0x"));
            assert_eq!(read.issuer.as_deref(), Some("Autonomy"));

            let (stripped, found) = carrier.remove_credentials(&signed).unwrap();
            assert!(found);
            assert_eq!(stripped, embedded, "{file}: only the store was added");
            let (recovered, ours) = carrier.strip(&signed).unwrap();
            assert_eq!(recovered, content);
            assert_eq!(ours.as_deref(), Some(&json[..]));
            assert!(read_none(&content, carrier));
        }
    }

    fn read_none(bytes: &[u8], carrier: Carrier) -> bool {
        read(bytes, carrier).unwrap().is_none()
    }

    #[test]
    fn a_changed_pixel_or_manifest_breaks_the_credentials() {
        let chain = chain();
        let content = png();
        let manifest = manifest("gem.png", &content);
        let json = manifest.to_json().unwrap();
        let signed = sign(
            &embed_png(&content, &json).unwrap(),
            Carrier::Png,
            &manifest,
            &chain,
        )
        .unwrap();

        let mut edited = manifest.clone();
        edited.asset = "ruby".into();
        let (bare, _) = Carrier::Png.remove_credentials(&signed).unwrap();
        let (content_only, _) = Carrier::Png.strip(&bare).unwrap();
        let forged = embed_png(&content_only, &edited.to_json().unwrap()).unwrap();
        // Put the original store back on a file with another manifest.
        let store_moved = transplant_store(&signed, &forged);
        let read = read(&store_moved, Carrier::Png).unwrap().unwrap();
        assert!(
            read.failures
                .iter()
                .any(|c| c.contains("dataHash.mismatch")),
            "{:?}",
            read.failures
        );
    }

    /// `target` with the `caBX` chunk of `source` inserted where `source` had it.
    fn transplant_store(source: &[u8], target: &[u8]) -> Vec<u8> {
        let at = source.windows(4).position(|w| w == b"caBX").unwrap() - 4;
        let len = u32::from_be_bytes(source[at..at + 4].try_into().unwrap()) as usize;
        let chunk = &source[at..at + 12 + len];
        let mut out = target[..at].to_vec();
        out.extend_from_slice(chunk);
        out.extend_from_slice(&target[at..]);
        out
    }
}
