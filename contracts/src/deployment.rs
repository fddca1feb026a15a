//! Where the suite lives on a chain, and how a fresh suite is configured.

use std::path::Path;

use alloy::primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use crate::LedgerError;
use crate::persist::write_atomic;

/// The addresses of one deployed suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The chain it is deployed on.
    pub chain_id: u64,
    /// The account that deployed it.
    pub deployer: Address,
    /// `AutonToken`.
    pub token: Address,
    /// `ModelRegistry`.
    pub registry: Address,
    /// `RevenueSplitter` (deployed by the registry).
    pub splitter: Address,
    /// `AssetNFT`.
    pub nft: Address,
    /// `Marketplace`.
    pub marketplace: Address,
    /// `TimelockController`: owner of registry, marketplace and NFT, and the treasury.
    pub timelock: Address,
    /// `AutonomyGovernor`.
    pub governor: Address,
}

impl Deployment {
    /// Reads a deployment saved by [`Deployment::save`] and checks it is for `chain_id`.
    pub fn load(path: impl AsRef<Path>, chain_id: u64) -> Result<Self, LedgerError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| LedgerError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        let deployment: Self =
            serde_json::from_slice(&bytes).map_err(|error| LedgerError::Deployment {
                path: path.to_path_buf(),
                reason: error.to_string(),
            })?;
        if deployment.chain_id != chain_id {
            return Err(LedgerError::Deployment {
                path: path.to_path_buf(),
                reason: format!(
                    "it is for chain id {}, the chain is {chain_id}",
                    deployment.chain_id
                ),
            });
        }
        Ok(deployment)
    }

    /// Saves the deployment as pretty JSON, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), LedgerError> {
        let mut bytes =
            serde_json::to_vec_pretty(self).map_err(|error| LedgerError::Deployment {
                path: path.as_ref().to_path_buf(),
                reason: error.to_string(),
            })?;
        bytes.push(b'\n');
        write_atomic(path.as_ref(), &bytes)
    }
}

/// How a fresh suite is set up. [`SuiteConfig::dev`] suits local chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuiteConfig {
    /// Auton minted to the deployer.
    pub initial_supply: U256,
    /// Auton the deployer then sends to every other account the backend holds a key for.
    pub grant_per_account: U256,
    /// Auton the deployer then sends to the treasury (the timelock).
    pub treasury_grant: U256,
    /// Base of token URIs minted without their own URI.
    pub base_uri: String,
    /// Marketplace treasury fee, basis points (≤ 1,000).
    pub fee_bps: u16,
    /// Marketplace fee to the model version's contributors, basis points (≤ 1,000).
    pub contributor_fee_bps: u16,
    /// Seconds between a proposal and the start of its vote.
    pub voting_delay: u64,
    /// Seconds a vote lasts.
    pub voting_period: u32,
    /// Votes needed to propose.
    pub proposal_threshold: U256,
    /// Quorum, percent of the supply at the proposal's snapshot.
    pub quorum_percent: u64,
    /// Seconds a passed proposal waits in the timelock.
    pub timelock_delay: u64,
}

impl SuiteConfig {
    /// One billion Auton; 1,000,000 to each dev account, 100,000,000 to the treasury; 2.5 % fee and
    /// 2.5 % to contributors; votes start after 60 s and last 10 minutes, 4 % quorum, 60 s timelock.
    pub fn dev() -> Self {
        Self {
            initial_supply: auton(1_000_000_000),
            grant_per_account: auton(1_000_000),
            treasury_grant: auton(100_000_000),
            base_uri: "autonomy://asset/".into(),
            fee_bps: 250,
            contributor_fee_bps: 250,
            voting_delay: 60,
            voting_period: 600,
            proposal_threshold: U256::ZERO,
            quorum_percent: 4,
            timelock_delay: 60,
        }
    }
}

/// `whole` Auton in its smallest unit (18 decimals).
pub fn auton(whole: u64) -> U256 {
    U256::from(whole) * U256::from(10u64).pow(U256::from(18))
}
