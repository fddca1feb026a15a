//! `verify --chain`: an asset's manifest against what the chain recorded when it was minted.

use alloy_primitives::{Address, B256, U256};
use autonomy_contracts::{Backend, Ledger};

use super::EconomyError;
use crate::build::MANIFEST_SUFFIX;
use crate::build::provenance::Manifest;
use crate::verify::{AssetReport, Verdict};

/// Adds `chain` checks to each report: the asset's content hash is minted, the on-chain creator
/// is the manifest's, and the minted model version is registered with the manifest's weights.
pub fn check_on_chain<B: Backend>(
    ledger: &Ledger<B>,
    reports: &mut [AssetReport],
) -> Result<(), EconomyError> {
    for report in reports {
        let sidecar = report
            .dir
            .join(format!("{}{MANIFEST_SUFFIX}", report.asset));
        let Some(manifest) = std::fs::read(&sidecar)
            .ok()
            .and_then(|json| serde_json::from_slice::<Manifest>(&json).ok())
        else {
            continue; // the `manifest` check already says why
        };
        let Some(hash) = manifest
            .outputs
            .first()
            .and_then(|main| main.sha256.parse::<B256>().ok())
        else {
            report.check(
                "chain",
                Verdict::Unverifiable,
                "the manifest names no content hash",
            );
            continue;
        };
        let asset = match ledger.asset(U256::from_be_bytes(hash.0)) {
            Ok(asset) => asset,
            Err(error)
                if error
                    .revert()
                    .is_some_and(|revert| revert.name() == "UnknownAsset") =>
            {
                report.check(
                    "chain",
                    Verdict::Unverifiable,
                    format!("{hash} is not minted"),
                );
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let claimed: Option<Address> = manifest.creator.as_deref().and_then(|c| c.parse().ok());
        if claimed == Some(asset.creator) {
            report.check(
                "chain",
                Verdict::Verified,
                format!("minted as {hash} by {}", asset.creator),
            );
        } else {
            report.check(
                "chain",
                Verdict::Tampered,
                format!(
                    "minted by {}, but the manifest names {}",
                    asset.creator,
                    manifest.creator.as_deref().unwrap_or("no creator")
                ),
            );
        }
        let version = asset.modelVersionId;
        if version.is_zero() {
            report.check(
                "chain model",
                Verdict::Unverifiable,
                "minted without a registered model version",
            );
            continue;
        }
        let registered = ledger.version(version)?.weightsHash;
        let made_with: Option<B256> = manifest.model.weights_sha256.parse().ok();
        if made_with == Some(registered) {
            report.check(
                "chain model",
                Verdict::Verified,
                format!("model version {version} has the weights it was made with"),
            );
        } else {
            report.check(
                "chain model",
                Verdict::Tampered,
                format!(
                    "model version {version} has weights {registered}, the manifest says {}",
                    manifest.model.weights_sha256
                ),
            );
        }
    }
    Ok(())
}
