//! `autonomy market`: list, cancel, buy, show, listings, withdraw.

use std::process::ExitCode;

use alloy_primitives::{Address, B256, U256};
use anyhow::{Context, Result, bail};
use autonomy_pipeline::economy::units::{format_auton, parse_auton};
use clap::Subcommand;

use super::session::{AnyLedger, Project, Session, token_of};

/// `autonomy market …`.
#[derive(Subcommand)]
pub enum MarketCommand {
    /// List an asset you own for sale.
    List {
        /// The asset: one of its files, or its token id (0x + 64 hex).
        asset: String,
        /// Price in Auton.
        #[arg(value_parser = parse_auton)]
        price: U256,
        #[command(flatten)]
        project: Project,
    },
    /// Take your listing down.
    Cancel {
        /// The asset or token id.
        asset: String,
        #[command(flatten)]
        project: Project,
    },
    /// Buy a listed asset (approves the marketplace for the price if needed).
    Buy {
        /// The asset or token id.
        asset: String,
        /// Refuse to pay more than this (default: the listed price).
        #[arg(long, value_parser = parse_auton)]
        max: Option<U256>,
        #[command(flatten)]
        project: Project,
    },
    /// An asset's record, owner, royalty and listing.
    Show {
        /// The asset or token id.
        asset: String,
        #[command(flatten)]
        project: Project,
    },
    /// Every live listing on the marketplace.
    Listings {
        #[command(flatten)]
        project: Project,
    },
    /// Pay out what the marketplace owes an account (sales, royalties).
    Withdraw {
        /// The payee (default: the sender).
        account: Option<String>,
        #[command(flatten)]
        project: Project,
    },
}

/// `autonomy market …`.
pub fn market(command: MarketCommand) -> Result<ExitCode> {
    match command {
        MarketCommand::List {
            asset,
            price,
            project,
        } => {
            let mut session = Session::open(&project)?;
            let seller = session.account(&project.from)?;
            let token = token_of(&asset)?;
            let market = session.ledger.deployment().marketplace;
            if !session.ledger.is_approved_for_assets(seller, market)? {
                session.ledger.approve_assets(seller, market, true)?;
            }
            session
                .ledger
                .list(seller, token, price)
                .context("cannot list")?;
            println!("listed {} at {}", B256::from(token), format_auton(price));
        }
        MarketCommand::Cancel { asset, project } => {
            let mut session = Session::open(&project)?;
            let seller = session.account(&project.from)?;
            let token = token_of(&asset)?;
            session
                .ledger
                .cancel(seller, token)
                .context("cannot cancel")?;
            println!("listing of {} cancelled", B256::from(token));
        }
        MarketCommand::Buy {
            asset,
            max,
            project,
        } => {
            let mut session = Session::open(&project)?;
            let buyer = session.account(&project.from)?;
            let token = token_of(&asset)?;
            let listing = session.ledger.listing(token)?;
            if listing.seller == Address::ZERO {
                bail!("{} is not listed: nothing to buy", B256::from(token));
            }
            let price = U256::from(listing.price);
            let max = max.unwrap_or(price);
            let market = session.ledger.deployment().marketplace;
            let balance = session.ledger.balance(buyer)?;
            if balance < price {
                bail!(
                    "{buyer} holds {} but the price is {}: get Auton first (dev chains: `autonomy chain faucet`)",
                    format_auton(balance),
                    format_auton(price)
                );
            }
            if session.ledger.allowance(buyer, market)? < price {
                session.ledger.approve(buyer, market, price)?;
            }
            let sold = session
                .ledger
                .buy(buyer, token, max)
                .context("cannot buy")?
                .value;
            println!(
                "bought {} for {}",
                B256::from(token),
                format_auton(sold.price)
            );
            println!(
                "  seller   {} gets {}",
                sold.seller,
                format_auton(sold.proceeds)
            );
            println!(
                "  royalty  {} gets {}",
                sold.royaltyReceiver,
                format_auton(sold.royalty)
            );
            println!(
                "  model contributors get {} (via the splitter)",
                format_auton(sold.contributorFee)
            );
            println!("  treasury gets {}", format_auton(sold.fee));
            println!("payees collect with `autonomy market withdraw <account>`");
        }
        MarketCommand::Show { asset, project } => {
            let session = Session::open(&project)?;
            show(&session.ledger, token_of(&asset)?)?;
        }
        MarketCommand::Listings { project } => {
            let session = Session::open(&project)?;
            let listings = session.ledger.listings()?;
            if listings.is_empty() {
                println!("no live listings");
            }
            for (token, seller, price) in listings {
                println!(
                    "{}  {:>20}  by {seller}",
                    B256::from(token),
                    format_auton(price)
                );
            }
        }
        MarketCommand::Withdraw { account, project } => {
            let mut session = Session::open(&project)?;
            let from = session.account(&project.from)?;
            let payee = match account {
                Some(name) => session.account(&name)?,
                None => from,
            };
            let owed = session.ledger.owed(payee)?;
            if owed.is_zero() {
                bail!("the marketplace owes {payee} nothing");
            }
            let paid = session.ledger.withdraw(from, payee)?.value;
            println!("paid {} to {payee}", format_auton(paid));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(ledger: &AnyLedger, token: U256) -> Result<()> {
    let asset = ledger
        .asset(token)
        .with_context(|| format!("{} is not minted", B256::from(token)))?;
    let owner = ledger.owner_of(token)?;
    println!("token      {}", B256::from(token));
    println!("owner      {owner}");
    println!("creator    {}", asset.creator);
    println!("model      version {}", asset.modelVersionId);
    println!(
        "royalty    {} bps to {}",
        asset.royaltyBps, asset.royaltyReceiver
    );
    println!("metadata   {}", asset.uri);
    let listing = ledger.listing(token)?;
    if listing.seller == Address::ZERO {
        println!("listing    none");
    } else if listing.seller != owner {
        println!(
            "listing    stale (listed by {}, who no longer owns it)",
            listing.seller
        );
    } else {
        println!(
            "listing    {} by {}",
            format_auton(U256::from(listing.price)),
            listing.seller
        );
    }
    Ok(())
}
