//! The creator economy: a project's chain and content store, and publishing assets as NFTs.
//!
//! Every chain call goes through the [`autonomy_contracts::Ledger`]; this module decides what
//! to call, keeps the content store (`.autonomy/store/`, pushed to an IPFS node when one is
//! configured) and journals each publish so that a run killed at any point finishes when run
//! again, without minting twice.

pub mod config;
pub mod ipfs;
pub mod metadata;
pub mod onchain;
pub mod publish;
pub mod registry;
pub mod shares;
pub mod store;
pub mod units;

use std::path::PathBuf;

use alloy_signer_local::PrivateKeySigner;
use autonomy_contracts::{Backend, Deployment, Ledger, LedgerError, Rpc, dev_signers};

pub use config::{ChainConfig, Config};
pub use store::ContentStore;

/// The chain id of local dev chains (embedded and anvil), whose dev accounts are usable.
pub const DEV_CHAIN_ID: u64 = 31_337;

/// An economy operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EconomyError {
    /// `autonomy.toml` is malformed.
    #[error("{}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The IPFS node refused a file or could not be reached.
    #[error("IPFS node {url}: {message}")]
    Ipfs {
        /// The node's RPC API.
        url: String,
        /// What went wrong, and what to do.
        message: String,
    },
    /// The content store is inconsistent.
    #[error("content store: {0}")]
    Store(String),
    /// The chain refused or could not be reached.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The asset cannot be published as it is.
    #[error("{asset}: {reason}")]
    NotPublishable {
        /// The asset (or path) concerned.
        asset: String,
        /// Why, and what to do.
        reason: String,
    },
    /// A registry model cannot be used.
    #[error("registry model `{name}`: {reason}")]
    Registry {
        /// The model name recipes use.
        name: String,
        /// Why, and what to do.
        reason: String,
    },
    /// An RPC chain has no deployment file yet.
    #[error("no deployment at {}: run `autonomy chain deploy` first, or point [chain] deployment at the suite's addresses", .0.display())]
    NotDeployed(PathBuf),
}

/// Opens the project's chain as one Ledger type, able to sign for the dev accounts (on dev
/// chains) and for `creator`.
pub fn open_ledger(
    config: &Config,
    creator: Option<PrivateKeySigner>,
) -> Result<Ledger<Box<dyn Backend>>, EconomyError> {
    match &config.chain {
        ChainConfig::Embedded { dir } => {
            let ledger = Ledger::embedded_with(dir, creator.into_iter().collect())?;
            Ok(ledger.boxed())
        }
        ChainConfig::Rpc {
            url,
            chain_id,
            deployment,
        } => {
            let rpc = Rpc::connect(url, rpc_signers(*chain_id, creator), Some(*chain_id))?;
            if !deployment.exists() {
                return Err(EconomyError::NotDeployed(deployment.clone()));
            }
            let addresses = Deployment::load(deployment, *chain_id)?;
            Ok(Ledger::attach(rpc, addresses)?.boxed())
        }
    }
}

/// Deploys the suite on the project's RPC chain and saves its addresses where the config says.
pub fn deploy_rpc(
    config: &Config,
    creator: Option<PrivateKeySigner>,
) -> Result<Deployment, EconomyError> {
    let ChainConfig::Rpc {
        url,
        chain_id,
        deployment,
    } = &config.chain
    else {
        return Err(EconomyError::Config {
            path: config.root.join(config::CONFIG_FILE),
            message:
                "the embedded chain deploys itself; `chain deploy` is for [chain] kind = \"rpc\""
                    .into(),
        });
    };
    let rpc = Rpc::connect(url, rpc_signers(*chain_id, creator), Some(*chain_id))?;
    let ledger = Ledger::deploy(rpc, &autonomy_contracts::SuiteConfig::dev())?;
    ledger.deployment().save(deployment)?;
    Ok(ledger.deployment().clone())
}

/// Dev accounts first on dev chains (account 0 deploys), then the creator.
fn rpc_signers(chain_id: u64, creator: Option<PrivateKeySigner>) -> Vec<PrivateKeySigner> {
    let mut signers = if chain_id == DEV_CHAIN_ID {
        dev_signers()
    } else {
        Vec::new()
    };
    signers.extend(creator);
    signers
}
