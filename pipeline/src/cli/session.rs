//! What every economy command starts from: the project's settings, its creator key and its
//! chain, and how accounts and assets are named on the command line.

use std::path::{Path, PathBuf};

use alloy_primitives::{Address, B256, U256};
use anyhow::{Context, Result, bail};
use autonomy_contracts::{Backend, Ledger};
use autonomy_pipeline::build::MANIFEST_SUFFIX;
use autonomy_pipeline::build::provenance::Manifest;
use autonomy_pipeline::economy::config::CONFIG_FILE;
use autonomy_pipeline::economy::{Config, DEV_CHAIN_ID, open_ledger};
use autonomy_pipeline::keys::{KeyStore, password_for};
use clap::Args;

/// A Ledger over whichever backend the project uses.
pub type AnyLedger = Ledger<Box<dyn Backend>>;

/// Where and as whom economy commands act.
#[derive(Args, Clone)]
pub struct Project {
    /// The project folder (holds `autonomy.toml`).
    #[arg(long, default_value = ".")]
    pub project: PathBuf,
    /// Who sends: `creator` (the `[creator] key` of autonomy.toml), `dev:N` (dev account N on
    /// a dev chain) or an address the chain holds a key for.
    #[arg(long, default_value = "creator")]
    pub from: String,
}

/// The project's config, the creator's key (if the config names one) and its Ledger.
pub struct Session {
    /// The project settings.
    pub config: Config,
    /// The creator key's address, when the settings name one.
    pub creator: Option<Address>,
    /// The chain.
    pub ledger: AnyLedger,
}

impl Session {
    /// Opens the project; unlocks the creator key when it is the sender.
    pub fn open(project: &Project) -> Result<Self> {
        let config = Config::load(&project.project)?;
        let (mut creator, mut signer) = (None, None);
        if let Some(name) = &config.creator_key {
            let store =
                KeyStore::open(&KeyStore::default_dir().context("cannot find the key folder")?);
            creator = store
                .list()?
                .into_iter()
                .find(|(key, _)| key == name)
                .map(|(_, address)| address);
            if creator.is_none() {
                bail!(
                    "{CONFIG_FILE} names creator key `{name}`, which is not in {}: `autonomy keys new {name}`",
                    store.dir().display()
                );
            }
            // Unlock it only when it is going to sign.
            if project.from == "creator" {
                signer = Some(store.unlock(name, &password_for(name)?)?);
            }
        }
        let ledger = open_ledger(&config, signer).context("cannot open the chain")?;
        Ok(Self {
            config,
            creator,
            ledger,
        })
    }

    /// Resolves `creator`, `dev:N` or an address.
    pub fn account(&self, name: &str) -> Result<Address> {
        if name == "creator" {
            return self.creator.with_context(|| {
                format!(
                    "no creator key: set [creator] key in {} or pass --from dev:N",
                    CONFIG_FILE
                )
            });
        }
        if let Some(index) = name.strip_prefix("dev:") {
            if self.ledger.backend().chain_id() != DEV_CHAIN_ID {
                bail!("dev accounts exist only on dev chains (chain id {DEV_CHAIN_ID})");
            }
            let index: usize = index
                .parse()
                .with_context(|| format!("`{name}`: expected dev:0 … dev:9"))?;
            return autonomy_contracts::dev_signers()
                .get(index)
                .map(|signer| signer.address())
                .with_context(|| format!("`{name}`: expected dev:0 … dev:9"));
        }
        name.parse()
            .with_context(|| format!("`{name}` is not `creator`, `dev:N` or an address"))
    }
}

/// A token id from `0x…` (64 hex) or from any file of a built asset (its manifest's content hash).
pub fn token_of(reference: &str) -> Result<U256> {
    if let Ok(hash) = reference.parse::<B256>() {
        return Ok(U256::from_be_bytes(hash.0));
    }
    let path = Path::new(reference);
    let reports = autonomy_pipeline::verify::verify_path(path).with_context(|| {
        format!("`{reference}` is neither a token id (0x + 64 hex) nor an asset file")
    })?;
    let report = reports
        .first()
        .with_context(|| format!("no asset at {reference}"))?;
    let sidecar = report
        .dir
        .join(format!("{}{MANIFEST_SUFFIX}", report.asset));
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(&sidecar).with_context(|| format!("cannot read {}", sidecar.display()))?,
    )
    .with_context(|| format!("{} is not a manifest", sidecar.display()))?;
    let main = manifest
        .outputs
        .first()
        .with_context(|| format!("{} lists no files", sidecar.display()))?;
    let hash: B256 = main
        .sha256
        .parse()
        .with_context(|| format!("{}: bad content hash", sidecar.display()))?;
    Ok(U256::from_be_bytes(hash.0))
}
