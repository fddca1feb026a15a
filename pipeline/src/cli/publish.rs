//! `autonomy init` and `autonomy publish`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use alloy_primitives::U256;
use anyhow::{Context, Result, bail};
use autonomy_pipeline::economy::config::{CONFIG_FILE, TEMPLATE};
use autonomy_pipeline::economy::publish::{PublishOptions, publish};
use autonomy_pipeline::economy::units::{format_auton, parse_auton};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::session::{Project, Session};

/// `autonomy publish`.
#[derive(Args)]
pub struct PublishArgs {
    /// An asset (any of its files) or a folder of assets.
    pub path: PathBuf,
    /// List each asset at this price in Auton once minted (e.g. `12.5`).
    #[arg(long, value_parser = parse_auton)]
    pub list: Option<U256>,
    /// Royalty on every sale, basis points (500 = 5 %, at most 1,000).
    #[arg(long, default_value_t = 500)]
    pub royalty: u16,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub project: Project,
}

/// `autonomy init`: writes a commented `autonomy.toml`.
pub fn init(dir: &Path) -> Result<ExitCode> {
    let path = dir.join(CONFIG_FILE);
    if path.exists() {
        bail!("{} exists already; edit it instead", path.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    autonomy_pipeline::atomic::write(&path, TEMPLATE.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// `autonomy publish`.
pub fn run_publish(args: PublishArgs) -> Result<ExitCode> {
    let mut session = Session::open(&args.project)?;
    let creator = session.account(&args.project.from)?;
    let store = session.config.content_store()?;
    let options = PublishOptions {
        royalty_bps: args.royalty,
        list_price: args.list,
    };
    let spinner = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
        spinner.set_style(style);
    }
    spinner.enable_steady_tick(Duration::from_millis(120));
    let journal = session.config.journal_dir();
    let published = publish(
        &mut session.ledger,
        &store,
        &journal,
        creator,
        &args.path,
        &options,
        &|step| spinner.set_message(step.to_string()),
    );
    spinner.finish_and_clear();
    let published = published?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&published)?);
    } else {
        for asset in &published {
            let state = if asset.minted_now {
                "minted"
            } else {
                "already minted"
            };
            let listed = asset
                .listed_price
                .map(|price| format!(", listed at {}", format_auton(price)))
                .unwrap_or_default();
            println!(
                "{}: {state} as token {}{listed} ({})",
                asset.asset, asset.content_hash, asset.metadata_uri
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
