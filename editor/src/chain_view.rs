//! What the Publish, Market, Governance and Models panels show of the chain: read in the
//! background every few seconds and right after each of the player's transactions, so drawing
//! a frame never waits on the chain.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use autonomy_contracts::{Backend, Deployment, Ledger, Payout, Proposal, ProposalState, Tally};
use autonomy_pipeline::dataset::Manifest as DatasetManifest;
use autonomy_pipeline::economy::ContentStore;
use autonomy_pipeline::models::locate::folder_with_weights;
use bevy::prelude::*;
use bevy::tasks::{AsyncComputeTaskPool, Task, block_on, poll_once};
use bevy_autonomy::{Chain, ChainResult};

use crate::library::AssetLibrary;

/// A live listing.
#[derive(Debug, Clone)]
pub struct ListingView {
    /// The token.
    pub token_id: U256,
    /// Who sells.
    pub seller: Address,
    /// The asking price.
    pub price: U256,
    /// Where a sale at that price would pay.
    pub payout: Payout,
    /// The asset's name, from its metadata.
    pub name: String,
    /// Its image in the local content store, when the store has it.
    pub image_file: Option<PathBuf>,
}

/// A proposal and where it stands.
#[derive(Debug, Clone)]
pub struct ProposalView {
    /// Its id.
    pub id: U256,
    /// What it does.
    pub proposal: Proposal,
    /// Its state.
    pub state: ProposalState,
    /// When voting opens and closes (chain time, seconds).
    pub window: (u64, u64),
    /// Votes so far.
    pub tally: Tally,
}

/// What a version's training data holds, from its dataset manifest on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSummary {
    /// Training items.
    pub items: usize,
    /// Items per licence.
    pub licences: BTreeMap<String, usize>,
    /// Items per contributor (the creators whose images it was trained on).
    pub contributors: BTreeMap<String, usize>,
}

/// A registered model version.
#[derive(Debug, Clone)]
pub struct VersionView {
    /// Its id.
    pub id: U256,
    /// The version it was fine-tuned from (zero: none).
    pub parent: u64,
    /// sha256 of its weights.
    pub weights: B256,
    /// Its contributors and their shares (basis points).
    pub contributors: Vec<(Address, u16)>,
    /// Auton asked for access.
    pub access_price: U256,
    /// Its training data, when its weights are in one of the model folders.
    pub dataset: Option<DatasetSummary>,
}

/// A registered model.
#[derive(Debug, Clone)]
pub struct ModelView {
    /// Its id.
    pub id: U256,
    /// Its name.
    pub name: String,
    /// Whether governance controls its active version.
    pub community: bool,
    /// The active version id (zero: none yet).
    pub active: u64,
    /// Its versions, oldest first.
    pub versions: Vec<VersionView>,
}

/// Where one of the library's assets stands on the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    /// Not minted.
    Unminted,
    /// Minted; owned by `owner`, listed at `listed` if listed.
    Minted {
        /// Who holds it.
        owner: Address,
        /// Its listing price.
        listed: Option<U256>,
    },
}

/// The chain as the panels show it.
#[derive(Resource, Debug, Default, Clone)]
pub struct ChainView {
    /// Whether it has been read at least once.
    pub loaded: bool,
    /// The last read's error, if it failed.
    pub error: Option<String>,
    /// The contracts' addresses (proposals need them).
    pub deployment: Option<Deployment>,
    /// Chain time (seconds).
    pub now: u64,
    /// The player's Auton.
    pub balance: U256,
    /// The player's voting power.
    pub votes: U256,
    /// Whom the player's Auton votes through (zero: nobody yet).
    pub delegate: Address,
    /// What the marketplace owes the player.
    pub owed: U256,
    /// Treasury and contributors' fees, basis points.
    pub fees: (u16, u16),
    /// Live listings.
    pub listings: Vec<ListingView>,
    /// Every proposal, oldest first.
    pub proposals: Vec<ProposalView>,
    /// Every registered model.
    pub models: Vec<ModelView>,
    /// The library's assets on the chain, by token id.
    pub tokens: HashMap<U256, TokenStatus>,
}

/// How the view is kept fresh.
#[derive(Resource)]
pub(crate) struct ChainRefresh {
    task: Option<Task<Result<ChainView, String>>>,
    timer: Timer,
    now: bool,
    model_dirs: Vec<PathBuf>,
}

impl ChainRefresh {
    pub(crate) fn new(every: Duration, model_dirs: Vec<PathBuf>) -> Self {
        Self {
            task: None,
            timer: Timer::new(every, TimerMode::Repeating),
            now: true,
            model_dirs,
        }
    }
}

/// Starts a read when one is due (periodically, or after a chain result).
pub(crate) fn start_refresh(
    time: Res<Time>,
    chain: Res<Chain>,
    library: Res<AssetLibrary>,
    mut results: MessageReader<ChainResult>,
    mut refresh: ResMut<ChainRefresh>,
) {
    refresh.now |= results.read().count() > 0;
    refresh.timer.tick(time.delta());
    let due = refresh.now || refresh.timer.just_finished();
    if !due || refresh.task.is_some() {
        return;
    }
    refresh.now = false;
    let (ledger, player, store) = (chain.ledger.clone(), chain.player, chain.store.clone());
    let tokens: Vec<U256> = library.assets.iter().filter_map(|a| a.token_id).collect();
    let model_dirs = refresh.model_dirs.clone();
    refresh.task = Some(AsyncComputeTaskPool::get().spawn(async move {
        let ledger = ledger
            .lock()
            .map_err(|_| "the Ledger is unusable".to_string())?;
        let store = ContentStore::new(store);
        read(&ledger, player, &store, &tokens, &model_dirs).map_err(|error| error.to_string())
    }));
}

/// Puts a finished read in place.
pub(crate) fn apply_refresh(mut refresh: ResMut<ChainRefresh>, mut view: ResMut<ChainView>) {
    let Some(task) = refresh.task.as_mut() else {
        return;
    };
    let Some(result) = block_on(poll_once(task)) else {
        return;
    };
    refresh.task = None;
    match result {
        Ok(fresh) => *view = fresh,
        Err(message) => view.error = Some(message),
    }
}

fn read<B: Backend>(
    ledger: &Ledger<B>,
    player: Address,
    store: &ContentStore,
    tokens: &[U256],
    model_dirs: &[PathBuf],
) -> Result<ChainView, autonomy_contracts::LedgerError> {
    let listings = ledger
        .listings()?
        .into_iter()
        .map(|(token_id, seller, price)| {
            let (name, image_file) = describe(ledger, store, token_id);
            Ok(ListingView {
                token_id,
                seller,
                price,
                payout: ledger.payout(token_id, price)?,
                name,
                image_file,
            })
        })
        .collect::<Result<_, autonomy_contracts::LedgerError>>()?;
    let proposals = ledger
        .proposals()?
        .into_iter()
        .map(|(id, proposal)| {
            Ok(ProposalView {
                id,
                state: ledger.proposal_state(id)?,
                window: ledger.proposal_window(id)?,
                tally: ledger.proposal_votes(id)?,
                proposal,
            })
        })
        .collect::<Result<_, autonomy_contracts::LedgerError>>()?;
    let mut tokens_status = HashMap::new();
    for &token in tokens {
        let status = match ledger.owner_of(token) {
            Ok(owner) => TokenStatus::Minted {
                owner,
                listed: Some(ledger.listing(token)?)
                    .filter(|listing| listing.seller == owner)
                    .map(|listing| U256::from(listing.price)),
            },
            Err(_) => TokenStatus::Unminted,
        };
        tokens_status.insert(token, status);
    }
    Ok(ChainView {
        loaded: true,
        error: None,
        deployment: Some(ledger.deployment().clone()),
        now: ledger.timestamp()?,
        balance: ledger.balance(player)?,
        votes: ledger.votes(player)?,
        delegate: ledger.delegates(player)?,
        owed: ledger.owed(player)?,
        fees: ledger.fees()?,
        listings,
        proposals,
        models: models(ledger, model_dirs)?,
        tokens: tokens_status,
    })
}

/// A listed token's name and local image, from its metadata in the content store.
fn describe<B: Backend>(
    ledger: &Ledger<B>,
    store: &ContentStore,
    token_id: U256,
) -> (String, Option<PathBuf>) {
    let fallback = format!("token {:#x}", token_id);
    let metadata = ledger
        .asset(token_id)
        .ok()
        .and_then(|asset| asset.uri.strip_prefix("ipfs://").map(str::to_string))
        .and_then(|cid| store.get(&cid).ok())
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok());
    let Some(metadata) = metadata else {
        return (fallback, None);
    };
    let name = metadata["name"].as_str().map(str::to_string);
    let image = metadata["image"]
        .as_str()
        .and_then(|uri| uri.strip_prefix("ipfs://"))
        .map(|cid| store.path(cid))
        .filter(|path| path.is_file());
    (name.unwrap_or(fallback), image)
}

fn models<B: Backend>(
    ledger: &Ledger<B>,
    model_dirs: &[PathBuf],
) -> Result<Vec<ModelView>, autonomy_contracts::LedgerError> {
    let mut versions: BTreeMap<u64, Vec<VersionView>> = BTreeMap::new();
    for id in 1..=ledger.version_count()?.saturating_to::<u64>() {
        let id = U256::from(id);
        let version = ledger.version(id)?;
        let dataset = folder_with_weights(model_dirs, &hex::encode(version.weightsHash))
            .and_then(|folder| DatasetManifest::load(&folder.join("dataset.jsonl")).ok())
            .map(|manifest| DatasetSummary {
                items: manifest.items.len(),
                licences: manifest.licences(),
                contributors: manifest.items.iter().fold(BTreeMap::new(), |mut by, item| {
                    let who = item.contributor.clone();
                    *by.entry(who.unwrap_or_else(|| "(unattributed)".into()))
                        .or_default() += 1;
                    by
                }),
            });
        versions
            .entry(version.modelId)
            .or_default()
            .push(VersionView {
                id,
                parent: version.parentVersion,
                weights: version.weightsHash,
                contributors: version
                    .contributors
                    .iter()
                    .map(|c| (c.account, c.sharesBps))
                    .collect(),
                access_price: U256::from(version.accessPrice),
                dataset,
            });
    }
    (1..=ledger.model_count()?.saturating_to::<u64>())
        .map(|id| {
            let model = ledger.model(U256::from(id))?;
            Ok(ModelView {
                id: U256::from(id),
                name: model.name,
                community: model.community,
                active: model.activeVersion,
                versions: versions.remove(&id).unwrap_or_default(),
            })
        })
        .collect()
}
