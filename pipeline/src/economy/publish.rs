//! `publish`: a verified asset goes into the content store (and onto the project's IPFS node), is
//! minted with its provenance, and optionally listed. Each step is checked against the chain before it is taken and recorded in
//! a journal after, so a run killed anywhere finishes when run again and never mints twice.

use std::path::Path;

use alloy_primitives::{Address, B256, U256};
use autonomy_contracts::{Backend, Ledger, MintRequest};
use serde::{Deserialize, Serialize};

use super::EconomyError;
use super::metadata::{StoredAsset, metadata};
use super::store::ContentStore;
use crate::atomic;
use crate::build::MANIFEST_SUFFIX;
use crate::build::provenance::Manifest;
use crate::verify::{AssetReport, Verdict, verify_path};

/// How to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOptions {
    /// Royalty on every marketplace sale, basis points (≤ 1,000).
    pub royalty_bps: u16,
    /// List each asset at this price once minted.
    pub list_price: Option<U256>,
}

/// What one asset's publish did (or found done).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The asset's name.
    pub asset: String,
    /// sha256 of its main file's content: the token id.
    pub content_hash: B256,
    /// The token's metadata URI (`ipfs://<cid>`).
    pub metadata_uri: String,
    /// The registry version of the model that made it (zero if unregistered).
    pub model_version: U256,
    /// Whether this run minted it (false: found minted by an earlier run).
    pub minted_now: bool,
    /// The price it is listed at, when listed.
    pub listed_price: Option<U256>,
}

/// One asset's journal: what has been done so far, written after every step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Journal {
    asset: String,
    metadata_uri: Option<String>,
    minted: bool,
    listed_price: Option<U256>,
}

/// Publishes every asset under `path` (a file of an asset, or a folder of them), sending from
/// `creator`, who must be the key that signed the manifests. Assets that do not verify are
/// refused before anything is stored or sent.
pub fn publish<B: Backend>(
    ledger: &mut Ledger<B>,
    store: &ContentStore,
    journal_dir: &Path,
    creator: Address,
    path: &Path,
    options: &PublishOptions,
    progress: &dyn Fn(&str),
) -> Result<Vec<Published>, EconomyError> {
    let reports = verify_path(path).map_err(|error| EconomyError::NotPublishable {
        asset: path.display().to_string(),
        reason: error.to_string(),
    })?;
    for report in &reports {
        check_publishable(report, creator)?;
    }
    reports
        .iter()
        .map(|report| {
            publish_one(
                ledger,
                store,
                journal_dir,
                creator,
                report,
                options,
                progress,
            )
        })
        .collect()
}

fn check_publishable(report: &AssetReport, creator: Address) -> Result<(), EconomyError> {
    let refuse = |reason: String| EconomyError::NotPublishable {
        asset: report.asset.clone(),
        reason,
    };
    if report.verdict() != Verdict::Verified {
        let failed: Vec<String> = report
            .checks
            .iter()
            .filter(|check| check.verdict != Verdict::Verified)
            .map(|check| format!("{}: {}", check.what, check.detail))
            .collect();
        return Err(refuse(format!(
            "does not verify ({}); rebuild and sign it first",
            failed.join("; ")
        )));
    }
    let signed_by = report.creator.as_deref().unwrap_or_default();
    if !signed_by.eq_ignore_ascii_case(&creator.to_string()) {
        return Err(refuse(format!(
            "was signed by {signed_by}, but this key is {creator}: publish it with the key that made it"
        )));
    }
    Ok(())
}

fn publish_one<B: Backend>(
    ledger: &mut Ledger<B>,
    store: &ContentStore,
    journal_dir: &Path,
    creator: Address,
    report: &AssetReport,
    options: &PublishOptions,
    progress: &dyn Fn(&str),
) -> Result<Published, EconomyError> {
    let sidecar = report
        .dir
        .join(format!("{}{MANIFEST_SUFFIX}", report.asset));
    let manifest_bytes = read(&sidecar)?;
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|error| EconomyError::NotPublishable {
            asset: report.asset.clone(),
            reason: format!("{}: {error}", sidecar.display()),
        })?;
    let main = manifest
        .outputs
        .first()
        .ok_or_else(|| EconomyError::NotPublishable {
            asset: report.asset.clone(),
            reason: "its manifest lists no files".into(),
        })?;
    let content_hash: B256 = main
        .sha256
        .parse()
        .map_err(|_| EconomyError::NotPublishable {
            asset: report.asset.clone(),
            reason: format!("content hash {:?} is not 32 bytes of hex", main.sha256),
        })?;
    let journal_path = journal_dir.join(format!("{}.json", hex::encode(content_hash)));
    let mut journal = read_journal(&journal_path)?.unwrap_or_else(|| Journal {
        asset: report.asset.clone(),
        ..Journal::default()
    });

    // 1. Store the files, the manifest and the metadata (idempotent: content-addressed).
    progress(&format!("{}: storing", report.asset));
    let mut files = Vec::new();
    for output in &manifest.outputs {
        files.push((
            output.file.clone(),
            store.put(&read(&report.dir.join(&output.file))?)?,
        ));
    }
    let cid_of = |suffix: &str| {
        files
            .iter()
            .find(|(file, _)| file.ends_with(suffix))
            .map(|(_, cid)| cid.clone())
    };
    let stored = StoredAsset {
        image: cid_of(".png").unwrap_or_else(|| files[0].1.clone()),
        animation: cid_of(".gif"),
        manifest: store.put(&manifest_bytes)?,
        files,
    };
    let mut metadata_json = serde_json::to_vec_pretty(&metadata(&manifest, &stored))
        .map_err(|error| EconomyError::Store(error.to_string()))?;
    metadata_json.push(b'\n');
    let metadata_cid = store.put(&metadata_json)?;
    let metadata_uri = format!("ipfs://{metadata_cid}");

    // 2. Push them to the IPFS node, if there is one, before the URI goes on chain.
    if let Some(node) = store.ipfs() {
        progress(&format!(
            "{}: pushing to IPFS at {}",
            report.asset,
            node.url()
        ));
        let cids = stored.files.iter().map(|(_, cid)| cid);
        for cid in cids.chain([&stored.manifest, &metadata_cid]) {
            store.push(cid)?;
        }
    }
    journal.metadata_uri = Some(metadata_uri.clone());
    write_journal(&journal_path, &journal)?;

    // 3. Mint, unless the chain already has it.
    let weights: Option<B256> = manifest.model.weights_sha256.parse().ok();
    let model_version = match weights {
        Some(weights) => ledger.version_with_weights(weights)?.unwrap_or(U256::ZERO),
        None => U256::ZERO,
    };
    let token_id = U256::from_be_bytes(content_hash.0);
    let minted_now = match ledger.asset(token_id) {
        Ok(asset) if asset.creator == creator => false,
        Ok(asset) => {
            return Err(EconomyError::NotPublishable {
                asset: report.asset.clone(),
                reason: format!("its content was minted by {} already", asset.creator),
            });
        }
        Err(error)
            if error
                .revert()
                .is_some_and(|revert| revert.name() == "UnknownAsset") =>
        {
            progress(&format!("{}: minting", report.asset));
            let request = MintRequest {
                to: creator,
                content_hash,
                model_version,
                uri: metadata_uri.clone(),
                royalty_receiver: Address::ZERO,
                royalty_bps: options.royalty_bps,
            };
            ledger.mint(creator, &request)?;
            true
        }
        Err(error) => return Err(error.into()),
    };
    journal.minted = true;
    write_journal(&journal_path, &journal)?;

    // 4. List, unless it is listed at that price already.
    if let Some(price) = options.list_price {
        let market = ledger.deployment().marketplace;
        let owner = ledger.owner_of(token_id)?;
        if owner != creator {
            return Err(EconomyError::NotPublishable {
                asset: report.asset.clone(),
                reason: format!("it belongs to {owner} now, so {creator} cannot list it"),
            });
        }
        let listing = ledger.listing(token_id)?;
        if listing.seller != creator || U256::from(listing.price) != price {
            progress(&format!("{}: listing", report.asset));
            if !ledger.is_approved_for_assets(creator, market)? {
                ledger.approve_assets(creator, market, true)?;
            }
            ledger.list(creator, token_id, price)?;
        }
        journal.listed_price = Some(price);
        write_journal(&journal_path, &journal)?;
    }
    tracing::info!(asset = %report.asset, %content_hash, minted_now, "published");
    Ok(Published {
        asset: report.asset.clone(),
        content_hash,
        metadata_uri,
        model_version,
        minted_now,
        listed_price: journal.listed_price,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, EconomyError> {
    std::fs::read(path).map_err(|source| EconomyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_journal(path: &Path) -> Result<Option<Journal>, EconomyError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| EconomyError::Config {
            path: path.to_path_buf(),
            message: format!("corrupt publish journal ({error}); delete it to start this asset's publish over"),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EconomyError::Io { path: path.to_path_buf(), source }),
    }
}

fn write_journal(path: &Path, journal: &Journal) -> Result<(), EconomyError> {
    let bytes = serde_json::to_vec_pretty(journal)
        .map_err(|error| EconomyError::Store(error.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| EconomyError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    atomic::write(path, &bytes).map_err(|source| EconomyError::Io {
        path: path.to_path_buf(),
        source,
    })
}
