//! `autonomy models`: register, add-version, list, show, buy-access, release.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use alloy_primitives::{Address, B256, U256};
use anyhow::{Context, Result, bail};
use autonomy_contracts::bindings::ModelRegistry;
use autonomy_pipeline::economy::shares::shares_from_dataset;
use autonomy_pipeline::economy::units::{format_auton, parse_auton};
use clap::Subcommand;

use super::session::{AnyLedger, Project, Session};

/// `autonomy models …`.
#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Register a model; a `--community` model's active version then changes only by DAO vote.
    Register {
        /// Its name.
        name: String,
        /// Governed by the DAO instead of its registrant.
        #[arg(long)]
        community: bool,
        #[command(flatten)]
        project: Project,
    },
    /// Register a trained model folder as a new version: weights hash, dataset manifest hash,
    /// contributors and their shares.
    AddVersion {
        /// The model id.
        model: u64,
        /// The model folder (`model.safetensors`, `dataset.json`).
        folder: PathBuf,
        /// The version it was fine-tuned from.
        #[arg(long, default_value_t = 0)]
        parent: u64,
        /// Price of access in Auton (0: free).
        #[arg(long, default_value = "0", value_parser = parse_auton)]
        price: U256,
        /// A contributor and its share in basis points, `who=bps` (`creator=7000`,
        /// `dev:3=3000`, `0x…=500`); repeat; shares sum to 10,000. Default: the sender, 10,000.
        #[arg(long = "contributor")]
        contributors: Vec<String>,
        /// Derive the shares from the folder's dataset manifest: each contributor (named by
        /// the training folder's `contributors.toml`) in proportion to their images.
        #[arg(long, conflicts_with = "contributors")]
        contributors_from_dataset: bool,
        /// With --contributors-from-dataset: basis points kept for the parent version's
        /// contributors, split like the parent's shares.
        #[arg(long, default_value_t = 0, requires = "contributors_from_dataset")]
        parent_share: u16,
        /// Where the weights can be fetched (default: the folder).
        #[arg(long)]
        uri: Option<String>,
        #[command(flatten)]
        project: Project,
    },
    /// Every model, its active version and its versions.
    List {
        #[command(flatten)]
        project: Project,
    },
    /// One model in full: every version's hashes, URI, price, revenue and contributors with
    /// what each can be paid now.
    Show {
        /// The model's id or name.
        model: String,
        #[command(flatten)]
        project: Project,
    },
    /// Buy access to a version (approves the registry for the price if needed).
    BuyAccess {
        /// The version id.
        version: u64,
        #[command(flatten)]
        project: Project,
    },
    /// Pay a contributor its share of a version's revenue.
    Release {
        /// The version id.
        version: u64,
        /// The contributor (default: the sender).
        account: Option<String>,
        #[command(flatten)]
        project: Project,
    },
}

/// `who=bps` pairs, or the sender with everything.
fn contributors(
    session: &Session,
    sender: Address,
    specs: &[String],
) -> Result<Vec<(Address, u16)>> {
    if specs.is_empty() {
        return Ok(vec![(sender, 10_000)]);
    }
    specs
        .iter()
        .map(|spec| {
            let (who, bps) = spec
                .split_once('=')
                .with_context(|| format!("`{spec}`: expected who=bps, e.g. creator=7000"))?;
            let bps: u16 = bps
                .parse()
                .with_context(|| format!("`{spec}`: {bps:?} is not a number of basis points"))?;
            Ok((session.account(who)?, bps))
        })
        .collect()
}

/// The model whose id or name is `reference`.
fn find_model(ledger: &AnyLedger, reference: &str) -> Result<(u64, ModelRegistry::Model)> {
    let count = ledger.model_count()?.saturating_to::<u64>();
    if let Ok(id) = reference.parse::<u64>() {
        if id == 0 || id > count {
            bail!("no model {id}: {count} registered (`autonomy models list`)");
        }
        return Ok((id, ledger.model(U256::from(id))?));
    }
    for id in 1..=count {
        let model = ledger.model(U256::from(id))?;
        if model.name == reference {
            return Ok((id, model));
        }
    }
    bail!("no model named `{reference}` (`autonomy models list` shows them)")
}

/// `models show`.
fn show(ledger: &AnyLedger, reference: &str) -> Result<()> {
    let (id, model) = find_model(ledger, reference)?;
    let kind = if model.community {
        "community: its active version changes by DAO vote"
    } else {
        "private: its owner picks the active version"
    };
    println!("model {id} `{}`", model.name);
    println!("  owner    {}", model.owner);
    println!("  kind     {kind}");
    let active = match model.activeVersion {
        0 => "none".to_string(),
        version => version.to_string(),
    };
    println!("  active   {active}");
    let versions = ledger.version_count()?.saturating_to::<u64>();
    for version_id in 1..=versions {
        let version = ledger.version(U256::from(version_id))?;
        if version.modelId != id {
            continue;
        }
        let tag = if version_id == model.activeVersion {
            " (active)"
        } else {
            ""
        };
        let parent = match version.parentVersion {
            0 => "none".to_string(),
            parent => parent.to_string(),
        };
        let (received, released) = ledger.revenue(U256::from(version_id))?;
        println!("version {version_id}{tag}");
        println!("  weights  {}", version.weightsHash);
        println!("  dataset  {}", version.datasetManifestHash);
        println!("  uri      {}", version.uri);
        println!("  parent   {parent}");
        println!(
            "  access   {}",
            format_auton(U256::from(version.accessPrice))
        );
        println!(
            "  revenue  {} received, {} paid out",
            format_auton(received),
            format_auton(released)
        );
        for contributor in &version.contributors {
            println!(
                "  {} {}%, can be paid {}",
                contributor.account,
                f64::from(contributor.sharesBps) / 100.0,
                format_auton(ledger.releasable(U256::from(version_id), contributor.account)?)
            );
        }
    }
    Ok(())
}

fn sha256_file(path: &Path) -> Result<B256> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(B256::from_slice(&Sha256::digest(&bytes)))
}

/// `autonomy models …`.
pub fn models(command: ModelsCommand) -> Result<ExitCode> {
    use autonomy_contracts::VersionRequest;
    use autonomy_pipeline::models::house::files;
    match command {
        ModelsCommand::Register {
            name,
            community,
            project,
        } => {
            let mut session = Session::open(&project)?;
            let from = session.account(&project.from)?;
            let id = session.ledger.register_model(from, &name, community)?.value;
            let kind = if community {
                "community model (governed by the DAO)"
            } else {
                "model"
            };
            println!("registered {kind} `{name}` as model {id}");
        }
        ModelsCommand::AddVersion {
            model,
            folder,
            parent,
            price,
            contributors: specs,
            contributors_from_dataset,
            parent_share,
            uri,
            project,
        } => {
            let mut session = Session::open(&project)?;
            let from = session.account(&project.from)?;
            let weights_hash = sha256_file(&folder.join(files::WEIGHTS))?;
            let dataset = folder.join(files::DATASET);
            let dataset_manifest_hash = if dataset.exists() {
                sha256_file(&dataset)?
            } else {
                B256::ZERO
            };
            let shares = if contributors_from_dataset {
                let parent_shares: Vec<(Address, u16)> = if parent == 0 {
                    Vec::new()
                } else {
                    let record = session.ledger.version(U256::from(parent))?;
                    record
                        .contributors
                        .iter()
                        .map(|c| (c.account, c.sharesBps))
                        .collect()
                };
                shares_from_dataset(&dataset, &parent_shares, parent_share)?
            } else {
                contributors(&session, from, &specs)?
            };
            let request = VersionRequest {
                model: U256::from(model),
                weights_hash,
                dataset_manifest_hash,
                parent_version: U256::from(parent),
                uri: uri.unwrap_or_else(|| folder.display().to_string()),
                contributors: shares,
                access_price: price,
            };
            let id = session
                .ledger
                .add_version(from, &request)
                .context("cannot add the version")?
                .value;
            println!("model {model} version {id}: weights {weights_hash}");
        }
        ModelsCommand::List { project } => {
            let session = Session::open(&project)?;
            let ledger = &session.ledger;
            let models = ledger.model_count()?.saturating_to::<u64>();
            let versions = ledger.version_count()?.saturating_to::<u64>();
            if models == 0 {
                println!("no models registered");
            }
            for id in 1..=models {
                let model = ledger.model(U256::from(id))?;
                let kind = if model.community {
                    "community"
                } else {
                    "private"
                };
                println!(
                    "model {id} `{}` ({kind}, owner {}), active version {}",
                    model.name, model.owner, model.activeVersion
                );
                for version_id in 1..=versions {
                    let version = ledger.version(U256::from(version_id))?;
                    if version.modelId != id {
                        continue;
                    }
                    let shares: Vec<String> = version
                        .contributors
                        .iter()
                        .map(|c| format!("{} {}%", c.account, f64::from(c.sharesBps) / 100.0))
                        .collect();
                    println!(
                        "  version {version_id}: weights {}, parent {}, access {}, contributors {}",
                        version.weightsHash,
                        version.parentVersion,
                        format_auton(U256::from(version.accessPrice)),
                        shares.join(", ")
                    );
                }
            }
        }
        ModelsCommand::Show { model, project } => {
            let session = Session::open(&project)?;
            show(&session.ledger, &model)?;
        }
        ModelsCommand::BuyAccess { version, project } => {
            let mut session = Session::open(&project)?;
            let buyer = session.account(&project.from)?;
            let version = U256::from(version);
            let price = U256::from(session.ledger.version(version)?.accessPrice);
            let registry = session.ledger.deployment().registry;
            if session.ledger.allowance(buyer, registry)? < price {
                session.ledger.approve(buyer, registry, price)?;
            }
            session
                .ledger
                .buy_access(buyer, version)
                .context("cannot buy access")?;
            println!(
                "{buyer} has access to version {version} (paid {})",
                format_auton(price)
            );
        }
        ModelsCommand::Release {
            version,
            account,
            project,
        } => {
            let mut session = Session::open(&project)?;
            let from = session.account(&project.from)?;
            let payee = match account {
                Some(name) => session.account(&name)?,
                None => from,
            };
            let paid = session
                .ledger
                .release(from, U256::from(version), payee)
                .context("cannot release")?
                .value;
            println!("paid {} to {payee}", format_auton(paid));
        }
    }
    Ok(ExitCode::SUCCESS)
}
