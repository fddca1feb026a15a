//! The chain in the ECS: the Ledger as a resource, the player's NFTs as `OwnedAsset` entities
//! kept in sync with the chain, and trades and votes as requests run on background tasks.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::{Address, U256};
use autonomy_contracts::{Backend, Ledger, Proposal, Support};
use autonomy_pipeline::economy::ContentStore;
use autonomy_pipeline::economy::publish::{PublishOptions, publish};
use autonomy_pipeline::economy::units::format_auton;
use bevy::prelude::*;
use bevy::tasks::{AsyncComputeTaskPool, Task, block_on, poll_once};

/// A Ledger over either backend.
pub type SharedLedger = Arc<Mutex<Ledger<Box<dyn Backend>>>>;

/// The chain and the account playing.
#[derive(Resource, Clone)]
pub struct Chain {
    /// The Ledger, shared with background tasks.
    pub ledger: SharedLedger,
    /// The player's account (the Ledger must hold its key to trade).
    pub player: Address,
    /// The content store: where published files go, by CID (`autonomy.toml`'s `[store] dir`).
    pub store: PathBuf,
    /// Where publish journals are kept (so an interrupted publish resumes).
    pub journals: PathBuf,
}

/// An NFT the player owns, mirrored from the chain.
#[derive(Component, Debug, Clone, PartialEq, Eq)]
pub struct OwnedAsset {
    /// Token id (= the asset's sha256 content hash).
    pub token_id: U256,
    /// Who made it.
    pub creator: Address,
    /// The registry version of the model that made it (zero if none).
    pub model_version: U256,
    /// Its metadata URI.
    pub uri: String,
}

/// Something the player asks of the chain (the editor's buttons send these too).
#[derive(Message, Debug, Clone, PartialEq, Eq)]
pub enum ChainRequest {
    /// Publish a generated asset (any of its files): store it, mint it with its provenance,
    /// optionally list it. It must be signed by the player's key.
    Publish {
        /// A file of the asset, e.g. `assets/recipes/potion.png`.
        path: PathBuf,
        /// List it at this price once minted.
        list_price: Option<U256>,
        /// Royalty on every sale, basis points (≤ 1,000).
        royalty_bps: u16,
    },
    /// List an owned asset at `price` (Auton units, 18 decimals).
    List {
        /// The token.
        token_id: U256,
        /// The price.
        price: U256,
    },
    /// Take a listing down.
    Cancel {
        /// The token.
        token_id: U256,
    },
    /// Buy a listed asset, paying at most `max_price` (approves the marketplace as needed).
    Buy {
        /// The token.
        token_id: U256,
        /// The most the player pays.
        max_price: U256,
    },
    /// Send the player what the marketplace owes them (sale proceeds and royalties).
    Withdraw,
    /// Give the player's votes to `to`.
    Delegate {
        /// The delegate.
        to: Address,
    },
    /// Vote on a proposal.
    Vote {
        /// The proposal id.
        proposal: U256,
        /// How.
        support: Support,
    },
    /// Put a proposal to the vote (the player needs the governor's proposal threshold).
    Propose {
        /// What it would do.
        proposal: Proposal,
    },
    /// Queue a proposal that passed on the timelock.
    Queue {
        /// The proposal.
        proposal: Proposal,
    },
    /// Execute a queued proposal whose delay is over.
    Execute {
        /// The proposal.
        proposal: Proposal,
    },
}

/// How a request ended: a one-line summary, or the error (reverts name the custom error).
#[derive(Message, Debug, Clone)]
pub struct ChainResult {
    /// What was asked.
    pub request: ChainRequest,
    /// What happened.
    pub outcome: Result<String, String>,
}

/// Puts the chain in the ECS: the [`Chain`] resource, [`OwnedAsset`] entities for the player's
/// NFTs (synced every `sync_every` and after each successful request), and [`ChainRequest`]s
/// run in the background, answered by [`ChainResult`]s.
pub struct ChainPlugin {
    /// The chain and the player.
    pub chain: Chain,
    /// How often owned assets are read back from the chain.
    pub sync_every: Duration,
}

impl ChainPlugin {
    /// The plugin over `ledger` (e.g. `Ledger::embedded(".autonomy/chain")?.boxed()`) for
    /// `player`; published files and journals go under `.autonomy/` in the working folder, as
    /// with the CLI's defaults.
    pub fn new(ledger: Ledger<Box<dyn Backend>>, player: Address) -> Self {
        Self {
            chain: Chain {
                ledger: Arc::new(Mutex::new(ledger)),
                player,
                store: PathBuf::from(".autonomy/store"),
                journals: PathBuf::from(".autonomy/publish"),
            },
            sync_every: Duration::from_secs(2),
        }
    }
}

/// The chain plugin's systems.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChainSet;

impl Plugin for ChainPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(self.chain.clone())
            .insert_resource(ChainTasks::new(self.sync_every))
            .add_message::<ChainRequest>()
            .add_message::<ChainResult>()
            .add_systems(
                Update,
                (send_requests, collect_results, start_sync, apply_sync)
                    .chain()
                    .in_set(ChainSet),
            );
    }
}

/// Background chain work in flight.
#[derive(Resource)]
struct ChainTasks {
    requests: Vec<Task<ChainResult>>,
    sync: Option<Task<Result<Vec<OwnedAsset>, String>>>,
    next_sync: Timer,
    sync_now: bool,
}

impl ChainTasks {
    fn new(every: Duration) -> Self {
        Self {
            requests: Vec::new(),
            sync: None,
            next_sync: Timer::new(every, TimerMode::Repeating),
            sync_now: true,
        }
    }
}

/// Runs each request on the async compute pool.
fn send_requests(
    mut requests: MessageReader<ChainRequest>,
    chain: Res<Chain>,
    mut tasks: ResMut<ChainTasks>,
) {
    for request in requests.read() {
        let (ledger, player, request) = (chain.ledger.clone(), chain.player, request.clone());
        let (store, journals) = (chain.store.clone(), chain.journals.clone());
        let task = AsyncComputeTaskPool::get().spawn(async move {
            let outcome = match ledger.lock() {
                Ok(mut ledger) => perform(&mut ledger, player, &store, &journals, &request),
                Err(_) => Err("the Ledger is unusable: a task panicked while holding it".into()),
            };
            ChainResult { request, outcome }
        });
        tasks.requests.push(task);
    }
}

fn perform(
    ledger: &mut Ledger<Box<dyn Backend>>,
    player: Address,
    store: &Path,
    journals: &Path,
    request: &ChainRequest,
) -> Result<String, String> {
    let text = |error: autonomy_contracts::LedgerError| error.to_string();
    let market = ledger.deployment().marketplace;
    match request {
        ChainRequest::Publish {
            path,
            list_price,
            royalty_bps,
        } => {
            let options = PublishOptions {
                royalty_bps: *royalty_bps,
                list_price: *list_price,
            };
            let content = ContentStore::new(store);
            let published = publish(ledger, &content, journals, player, path, &options, &|_| {})
                .map_err(|error| error.to_string())?;
            let names: Vec<String> = published
                .iter()
                .map(|asset| format!("{} as {}", asset.asset, asset.content_hash))
                .collect();
            Ok(format!("published {}", names.join(", ")))
        }
        ChainRequest::List { token_id, price } => {
            if !ledger
                .is_approved_for_assets(player, market)
                .map_err(text)?
            {
                ledger.approve_assets(player, market, true).map_err(text)?;
            }
            ledger.list(player, *token_id, *price).map_err(text)?;
            Ok(format!("listed {token_id:#x}"))
        }
        ChainRequest::Cancel { token_id } => {
            ledger.cancel(player, *token_id).map_err(text)?;
            Ok(format!("cancelled {token_id:#x}"))
        }
        ChainRequest::Buy {
            token_id,
            max_price,
        } => {
            if ledger.allowance(player, market).map_err(text)? < *max_price {
                ledger.approve(player, market, *max_price).map_err(text)?;
            }
            let sold = ledger
                .buy(player, *token_id, *max_price)
                .map_err(text)?
                .value;
            Ok(format!("bought {token_id:#x} for {}", sold.price))
        }
        ChainRequest::Withdraw => {
            let amount = ledger.withdraw(player, player).map_err(text)?.value;
            Ok(format!("withdrew {}", format_auton(amount)))
        }
        ChainRequest::Delegate { to } => {
            ledger.delegate(player, *to).map_err(text)?;
            Ok(format!("votes delegated to {to}"))
        }
        ChainRequest::Vote { proposal, support } => {
            ledger.vote(player, *proposal, *support).map_err(text)?;
            Ok(format!("voted {support:?} on {proposal}"))
        }
        ChainRequest::Propose { proposal } => {
            let id = ledger.propose(player, proposal).map_err(text)?.value;
            Ok(format!("proposed {id}: {}", proposal.description))
        }
        ChainRequest::Queue { proposal } => {
            ledger.queue(player, proposal).map_err(text)?;
            Ok(format!("queued: {}", proposal.description))
        }
        ChainRequest::Execute { proposal } => {
            ledger.execute(player, proposal).map_err(text)?;
            Ok(format!("executed: {}", proposal.description))
        }
    }
}

/// Collects finished requests; a successful one asks for a sync of owned assets.
fn collect_results(mut tasks: ResMut<ChainTasks>, mut results: MessageWriter<ChainResult>) {
    let mut still_running = Vec::new();
    for mut task in std::mem::take(&mut tasks.requests) {
        match block_on(poll_once(&mut task)) {
            Some(result) => {
                tasks.sync_now |= result.outcome.is_ok();
                results.write(result);
            }
            None => still_running.push(task),
        }
    }
    tasks.requests = still_running;
}

/// Starts a sync of the player's assets every period (and right after a trade).
fn start_sync(time: Res<Time>, chain: Res<Chain>, mut tasks: ResMut<ChainTasks>) {
    tasks.next_sync.tick(time.delta());
    let due = tasks.sync_now || tasks.next_sync.just_finished();
    if !due || tasks.sync.is_some() {
        return;
    }
    tasks.sync_now = false;
    let (ledger, player) = (chain.ledger.clone(), chain.player);
    tasks.sync = Some(AsyncComputeTaskPool::get().spawn(async move {
        let ledger = ledger
            .lock()
            .map_err(|_| "the Ledger is unusable".to_string())?;
        let tokens = ledger
            .assets_owned_by(player)
            .map_err(|error| error.to_string())?;
        tokens
            .into_iter()
            .map(|token_id| {
                let asset = ledger.asset(token_id).map_err(|error| error.to_string())?;
                Ok(OwnedAsset {
                    token_id,
                    creator: asset.creator,
                    model_version: asset.modelVersionId,
                    uri: asset.uri,
                })
            })
            .collect()
    }));
}

/// Mirrors a finished sync: spawns entities for new assets, despawns those no longer owned.
fn apply_sync(
    mut commands: Commands,
    mut tasks: ResMut<ChainTasks>,
    owned: Query<(Entity, &OwnedAsset)>,
) {
    let Some(task) = tasks.sync.as_mut() else {
        return;
    };
    let Some(result) = block_on(poll_once(task)) else {
        return;
    };
    tasks.sync = None;
    let assets = match result {
        Ok(assets) => assets,
        Err(message) => {
            warn!("cannot read the player's assets from the chain: {message}");
            return;
        }
    };
    for (entity, asset) in &owned {
        if !assets.contains(asset) {
            commands.entity(entity).despawn();
        }
    }
    for asset in assets {
        if !owned.iter().any(|(_, known)| *known == asset) {
            commands.spawn(asset);
        }
    }
}
