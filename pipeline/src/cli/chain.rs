//! `autonomy chain`: status, accounts, faucet, advance, deploy.

use std::process::ExitCode;
use std::time::Duration;

use alloy_primitives::{Address, U256};
use anyhow::{Context, Result, bail};
use autonomy_contracts::Backend;
use autonomy_pipeline::economy::units::{format_auton, parse_auton};
use autonomy_pipeline::economy::{Config, DEV_CHAIN_ID, deploy_rpc};
use clap::Subcommand;

use super::session::{Project, Session};

/// `autonomy chain …`.
#[derive(Subcommand)]
pub enum ChainCommand {
    /// Chain id, block, time and the suite's addresses.
    Status {
        #[command(flatten)]
        project: Project,
    },
    /// Accounts this project can send from, with their Auton, votes and what they are owed.
    Accounts {
        #[command(flatten)]
        project: Project,
    },
    /// Send Auton from dev account 0 (dev chains only).
    Faucet {
        /// Who receives (`creator`, `dev:N` or an address).
        to: String,
        /// How much Auton.
        #[arg(long, default_value = "1000", value_parser = parse_auton)]
        amount: U256,
        #[command(flatten)]
        project: Project,
    },
    /// Move a dev chain's clock forward (e.g. `10m`, `2h`).
    Advance {
        /// How long.
        #[arg(value_parser = humantime::parse_duration)]
        by: Duration,
        #[command(flatten)]
        project: Project,
    },
    /// Deploy the suite on the project's RPC chain and save its addresses.
    Deploy {
        #[command(flatten)]
        project: Project,
    },
}

/// `autonomy chain …`.
pub fn chain(command: ChainCommand) -> Result<ExitCode> {
    match command {
        ChainCommand::Status { project } => {
            let session = Session::open(&project)?;
            let ledger = &session.ledger;
            let d = ledger.deployment();
            println!("chain id     {}", d.chain_id);
            println!("block        {}", ledger.backend().block_number()?);
            let time = std::time::UNIX_EPOCH + Duration::from_secs(ledger.timestamp()?);
            println!("time         {}", humantime::format_rfc3339_seconds(time));
            for (name, address) in [
                ("token", d.token),
                ("nft", d.nft),
                ("marketplace", d.marketplace),
                ("registry", d.registry),
                ("splitter", d.splitter),
                ("governor", d.governor),
                ("timelock", d.timelock),
            ] {
                println!("{name:<12} {address}");
            }
        }
        ChainCommand::Accounts { project } => {
            let session = Session::open(&project)?;
            let ledger = &session.ledger;
            let mut accounts: Vec<(String, Address)> = Vec::new();
            if ledger.backend().chain_id() == DEV_CHAIN_ID {
                let dev = autonomy_contracts::dev_signers();
                accounts.extend(
                    dev.iter()
                        .enumerate()
                        .map(|(i, signer)| (format!("dev:{i}"), signer.address())),
                );
            }
            accounts.extend(
                session
                    .creator
                    .map(|address| ("creator".to_string(), address)),
            );
            for (label, account) in accounts {
                println!(
                    "{label:<8} {account}  {:>24}  votes {:>24}  owed {}",
                    format_auton(ledger.balance(account)?),
                    format_auton(ledger.votes(account)?),
                    format_auton(ledger.owed(account)?)
                );
            }
        }
        ChainCommand::Faucet {
            to,
            amount,
            project,
        } => {
            let mut session = Session::open(&Project {
                from: "creator".into(),
                ..project
            })?;
            if session.ledger.backend().chain_id() != DEV_CHAIN_ID {
                bail!("the faucet exists only on dev chains (chain id {DEV_CHAIN_ID})");
            }
            let to = session.account(&to)?;
            let whale = session.account("dev:0")?;
            session.ledger.transfer(whale, to, amount)?;
            println!("sent {} to {to}", format_auton(amount));
        }
        ChainCommand::Advance { by, project } => {
            let mut session = Session::open(&project)?;
            session
                .ledger
                .advance_time(by.as_secs())
                .context("cannot move the clock")?;
            let time = std::time::UNIX_EPOCH + Duration::from_secs(session.ledger.timestamp()?);
            println!(
                "chain time is now {}",
                humantime::format_rfc3339_seconds(time)
            );
        }
        ChainCommand::Deploy { project } => {
            let config = Config::load(&project.project)?;
            let deployment = deploy_rpc(&config, None)?;
            println!(
                "suite deployed on chain {}: token {}, nft {}, marketplace {}",
                deployment.chain_id, deployment.token, deployment.nft, deployment.marketplace
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
