//! The embedded backend: an in-process EVM (revm) with funded dev accounts, a clock the caller
//! can move, and its whole state persisted atomically to one file after every block.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, B256, Bytes, Log, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use revm::context::result::{ExecutionResult, Output};
use revm::context::{BlockEnv, CfgEnv, TxEnv};
use revm::database::{CacheDB, EmptyDB};
use revm::database_interface::DatabaseRef;
use revm::primitives::TxKind;
use revm::state::AccountInfo;
use revm::{Context, ExecuteCommitEvm, ExecuteEvm, MainBuilder, MainContext};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Receipt, Tx};
use crate::deployment::Deployment;
use crate::dev::dev_signers;
use crate::keyring::KeyRing;
use crate::persist::write_atomic;
use crate::{LedgerError, Revert};

/// The chain id of embedded chains (anvil's default, so wallets treat both alike).
pub const EMBEDDED_CHAIN_ID: u64 = 31_337;
/// Gas each embedded transaction may use: the Osaka per-transaction cap (EIP-7825).
const TX_GAS_LIMIT: u64 = 16_777_216;
/// Ether each dev account starts with.
const DEV_BALANCE_ETH: u64 = 10_000;
const STATE_VERSION: u32 = 1;

/// Everything the embedded chain is, as persisted.
#[derive(Serialize, Deserialize)]
struct ChainState {
    version: u32,
    chain_id: u64,
    block_number: u64,
    timestamp: u64,
    deployment: Option<Deployment>,
    db: CacheDB<EmptyDB>,
    /// Every log of every successful transaction, oldest first (the chain's event history).
    #[serde(default)]
    logs: Vec<Log>,
}

/// An in-process EVM chain. Every transaction is mined into its own block; blocks are one second
/// apart at least and never behind the wall clock unless [`Backend::advance_time`] moved them ahead.
pub struct Embedded {
    state: ChainState,
    path: Option<PathBuf>,
    keys: KeyRing,
    /// Length and modification time of the state file as this process last read or wrote it:
    /// a save refuses to overwrite a file another process changed since.
    seen: Option<(u64, SystemTime)>,
}

impl Embedded {
    /// A fresh chain held in memory only: the dev accounts funded, nothing deployed.
    pub fn in_memory() -> Self {
        let keys = KeyRing::new(dev_signers());
        let mut db = CacheDB::new(EmptyDB::default());
        for signer in keys.signers() {
            let balance = U256::from(DEV_BALANCE_ETH) * U256::from(10u64).pow(U256::from(18));
            db.insert_account_info(signer.address(), AccountInfo::from_balance(balance));
        }
        let state = ChainState {
            version: STATE_VERSION,
            chain_id: EMBEDDED_CHAIN_ID,
            block_number: 0,
            timestamp: wall_clock(),
            deployment: None,
            db,
            logs: Vec::new(),
        };
        Self {
            state,
            path: None,
            keys,
            seen: None,
        }
    }

    /// Opens the chain persisted at `path`, or starts a fresh one that will be saved there.
    /// A file that does not parse is an error and is left untouched.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LedgerError> {
        let path = path.as_ref().to_path_buf();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut chain = Self::in_memory();
                chain.path = Some(path);
                return Ok(chain);
            }
            Err(source) => {
                return Err(LedgerError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        let state: ChainState =
            serde_json::from_slice(&bytes).map_err(|error| LedgerError::CorruptState {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        if state.version != STATE_VERSION {
            return Err(LedgerError::CorruptState {
                path,
                reason: format!(
                    "state version {} (this build reads {STATE_VERSION})",
                    state.version
                ),
            });
        }
        tracing::debug!(path = %path.display(), block = state.block_number, "embedded chain opened");
        let seen = fingerprint(&path);
        Ok(Self {
            state,
            path: Some(path),
            keys: KeyRing::new(dev_signers()),
            seen,
        })
    }

    /// Lets the chain sign for `signer`'s account too (a creator's own key). Gas is free on the
    /// embedded chain, so the account needs no ether.
    pub fn add_signer(&mut self, signer: PrivateKeySigner) {
        self.keys.add(signer);
    }

    /// Where the chain is saved, if anywhere.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The suite deployed on this chain, if any.
    pub fn deployment(&self) -> Option<&Deployment> {
        self.state.deployment.as_ref()
    }

    /// Records the suite deployed on this chain and saves.
    pub(crate) fn set_deployment(&mut self, deployment: Deployment) -> Result<(), LedgerError> {
        self.state.deployment = Some(deployment);
        self.save()
    }

    /// The ether balance of `account`, in wei.
    pub fn balance(&self, account: Address) -> U256 {
        self.state
            .db
            .basic_ref(account)
            .ok()
            .flatten()
            .map(|info| info.balance)
            .unwrap_or_default()
    }

    /// Writes the state file, unless another process changed it since this one read it (the
    /// check and the write happen under an exclusive lock on `<state>.lock`).
    fn save(&mut self) -> Result<(), LedgerError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let bytes = serde_json::to_vec(&self.state).map_err(|error| {
            LedgerError::Evm(format!("cannot serialise the chain state: {error}"))
        })?;
        let lock_path = path.with_extension("json.lock");
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LedgerError::Io {
                action: "create",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let lock = std::fs::File::create(&lock_path).map_err(|source| LedgerError::Io {
            action: "create",
            path: lock_path.clone(),
            source,
        })?;
        lock.lock().map_err(|source| LedgerError::Io {
            action: "lock",
            path: lock_path.clone(),
            source,
        })?;
        if fingerprint(&path) != self.seen {
            return Err(LedgerError::StateChanged(path));
        }
        write_atomic(&path, &bytes)?;
        self.seen = fingerprint(&path);
        Ok(())
    }

    fn next_block(&self) -> (u64, u64) {
        let timestamp = (self.state.timestamp + 1).max(wall_clock());
        (self.state.block_number + 1, timestamp)
    }

    fn env(&self, number: u64, timestamp: u64) -> (BlockEnv, CfgEnv) {
        let block = BlockEnv {
            number: U256::from(number),
            timestamp: U256::from(timestamp),
            gas_limit: 30_000_000,
            basefee: 0,
            prevrandao: Some(B256::ZERO),
            ..Default::default()
        };
        let mut cfg = CfgEnv::default();
        cfg.chain_id = self.state.chain_id;
        (block, cfg)
    }

    fn tx_env(&self, tx: &Tx, nonce: u64) -> Result<TxEnv, LedgerError> {
        TxEnv::builder()
            .caller(tx.from)
            .kind(match tx.to {
                Some(to) => TxKind::Call(to),
                None => TxKind::Create,
            })
            .data(tx.data.clone())
            .value(tx.value)
            .gas_limit(TX_GAS_LIMIT)
            .gas_price(0)
            .nonce(nonce)
            .chain_id(Some(self.state.chain_id))
            .build()
            .map_err(|error| LedgerError::Evm(format!("invalid transaction: {error:?}")))
    }
}

impl Backend for Embedded {
    fn chain_id(&self) -> u64 {
        self.state.chain_id
    }

    fn accounts(&self) -> Vec<Address> {
        self.keys.accounts()
    }

    fn signer(&self, account: Address) -> Result<&PrivateKeySigner, LedgerError> {
        self.keys.get(account)
    }

    fn send(&mut self, tx: Tx) -> Result<Receipt, LedgerError> {
        self.signer(tx.from)?;
        let nonce = self
            .state
            .db
            .basic_ref(tx.from)
            .ok()
            .flatten()
            .map(|info| info.nonce)
            .unwrap_or(0);
        let (number, timestamp) = self.next_block();
        let (block, cfg) = self.env(number, timestamp);
        let tx_env = self.tx_env(&tx, nonce)?;
        let result = {
            let mut evm = Context::mainnet()
                .with_db(&mut self.state.db)
                .with_block(block)
                .with_cfg(cfg)
                .build_mainnet();
            evm.transact_commit(tx_env)
                .map_err(|error| LedgerError::Rejected {
                    call: String::new(),
                    reason: format!("{error:?}"),
                })?
        };
        // CacheDB keeps every committed log; the receipt is where they belong.
        self.state.db.cache.logs.clear();
        // A reverted transaction is still mined (its nonce and gas are spent), as on any chain.
        if let ExecutionResult::Success { logs, .. } = &result {
            self.state.logs.extend(logs.iter().cloned());
        }
        self.state.block_number = number;
        self.state.timestamp = timestamp;
        self.save()?;
        let transaction_hash = keccak256(
            [
                &self.state.chain_id.to_be_bytes()[..],
                tx.from.as_slice(),
                &nonce.to_be_bytes(),
            ]
            .concat(),
        );
        match result {
            ExecutionResult::Success {
                gas, logs, output, ..
            } => Ok(Receipt {
                transaction_hash,
                block_number: number,
                gas_used: gas.tx_gas_used(),
                contract_address: match output {
                    Output::Create(_, address) => address,
                    Output::Call(_) => None,
                },
                logs,
            }),
            failed => Err(failure(failed)),
        }
    }

    fn call(&self, tx: Tx) -> Result<Bytes, LedgerError> {
        let (number, timestamp) = (self.state.block_number, self.state.timestamp);
        let (block, mut cfg) = self.env(number, timestamp);
        cfg.disable_nonce_check = true;
        let tx_env = self.tx_env(&tx, 0)?;
        let mut evm = Context::mainnet()
            .with_ref_db(&self.state.db)
            .with_block(block)
            .with_cfg(cfg)
            .build_mainnet();
        let result = evm
            .transact(tx_env)
            .map_err(|error| LedgerError::Rejected {
                call: String::new(),
                reason: format!("{error:?}"),
            })?
            .result;
        match result {
            ExecutionResult::Success { output, .. } => Ok(output.into_data()),
            failed => Err(failure(failed)),
        }
    }

    fn timestamp(&self) -> Result<u64, LedgerError> {
        Ok(self.state.timestamp)
    }

    fn block_number(&self) -> Result<u64, LedgerError> {
        Ok(self.state.block_number)
    }

    fn advance_time(&mut self, seconds: u64) -> Result<(), LedgerError> {
        self.state.block_number += 1;
        self.state.timestamp += seconds.max(1);
        self.save()
    }

    fn logs(&self, address: Address, topic0: B256) -> Result<Vec<Log>, LedgerError> {
        Ok(self
            .state
            .logs
            .iter()
            .filter(|log| log.address == address && log.topics().first() == Some(&topic0))
            .cloned()
            .collect())
    }
}

/// The error of a transaction that did not succeed (the Ledger names the call).
fn failure(result: ExecutionResult) -> LedgerError {
    match result {
        ExecutionResult::Revert { output, .. } => LedgerError::Reverted {
            call: String::new(),
            revert: Box::new(Revert::decode(&output)),
        },
        ExecutionResult::Halt { reason, .. } => LedgerError::Halted {
            call: String::new(),
            reason: format!("{reason:?}"),
        },
        ExecutionResult::Success { .. } => {
            LedgerError::Evm("a successful transaction reported as a failure".into())
        }
    }
}

/// Length and modification time of a file, if it exists.
fn fingerprint(path: &Path) -> Option<(u64, SystemTime)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.len(), metadata.modified().ok()?))
}

fn wall_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}
