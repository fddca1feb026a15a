//! ERC-721 metadata JSON, as marketplaces and wallets read it, made from a provenance manifest.

use serde_json::{Value, json};

use crate::build::provenance::Manifest;

/// CIDs of what `publish` stored for one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAsset {
    /// CID of the main image (the minted content).
    pub image: String,
    /// CID of the animation, for animated assets.
    pub animation: Option<String>,
    /// CID of the signed manifest.
    pub manifest: String,
    /// Every file of the asset and its CID.
    pub files: Vec<(String, String)>,
}

/// The token's metadata: name, description, image, `animation_url` for GIFs, attributes (model,
/// kind, seed, creator) and the provenance manifest's CID.
pub fn metadata(manifest: &Manifest, stored: &StoredAsset) -> Value {
    let recipe = &manifest.recipe;
    let prompt = recipe
        .get("prompt")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = recipe
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("asset");
    let model = &manifest.model;
    let short = model
        .weights_sha256
        .get(..12)
        .unwrap_or(&model.weights_sha256);
    let mut attributes = vec![
        json!({ "trait_type": "kind", "value": kind }),
        json!({ "trait_type": "model", "value": model.name }),
        json!({ "trait_type": "model weights", "value": model.weights_sha256 }),
    ];
    if let Some(seed) = recipe.get("seed") {
        attributes.push(json!({ "trait_type": "seed", "value": seed }));
    }
    if let Some(creator) = &manifest.creator {
        attributes.push(json!({ "trait_type": "creator", "value": creator }));
    }
    let mut value = json!({
        "name": manifest.asset,
        "description": format!("\"{prompt}\": a {kind} made by Autonomy with the {} model ({short}).", model.name),
        "image": format!("ipfs://{}", stored.image),
        "attributes": attributes,
        "properties": {
            "provenance": format!("ipfs://{}", stored.manifest),
            "files": stored.files.iter().map(|(file, cid)| json!({ "name": file, "uri": format!("ipfs://{cid}") })).collect::<Vec<_>>(),
        },
    });
    if let Some(animation) = &stored.animation {
        value["animation_url"] = json!(format!("ipfs://{animation}"));
    }
    value
}
