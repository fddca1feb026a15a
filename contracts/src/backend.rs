//! What the Ledger needs of a chain: send a transaction, make a call, read the clock, and (on dev
//! chains) move it. [`crate::Embedded`] and [`crate::Rpc`] implement it.

use alloy::primitives::{Address, B256, Bytes, Log, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;

use crate::LedgerError;

/// A transaction or call, before signing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tx {
    /// The sender; the backend must hold its key to send.
    pub from: Address,
    /// The callee, or `None` to create a contract from `data`.
    pub to: Option<Address>,
    /// Calldata or creation code.
    pub data: Bytes,
    /// Wei sent along.
    pub value: U256,
}

/// What a mined transaction left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The transaction hash (the embedded chain hashes the unsigned transaction and its block).
    pub transaction_hash: B256,
    /// The block it was mined in.
    pub block_number: u64,
    /// Gas used, refunds deducted, as a receipt reports it.
    pub gas_used: u64,
    /// The contract a creation made.
    pub contract_address: Option<Address>,
    /// The logs, in order.
    pub logs: Vec<Log>,
}

impl Receipt {
    /// Every log of event `E`, decoded; logs of other events are skipped.
    pub fn events<E: SolEvent>(&self) -> Vec<E> {
        self.logs
            .iter()
            .filter(|log| log.topics().first() == Some(&E::SIGNATURE_HASH))
            .filter_map(|log| E::decode_log(log).ok().map(|decoded| decoded.data))
            .collect()
    }
}

/// A chain the Ledger can drive. Backends are `Send + Sync`, so a Ledger can live in a
/// game engine's resource and be used from background tasks.
pub trait Backend: Send + Sync {
    /// The chain id transactions are signed for.
    fn chain_id(&self) -> u64;

    /// Accounts this backend holds keys for, in a stable order.
    fn accounts(&self) -> Vec<Address>;

    /// The key of `account`, for off-chain signatures (permits, votes by signature).
    fn signer(&self, account: Address) -> Result<&PrivateKeySigner, LedgerError>;

    /// Signs, sends and waits for `tx`. A revert is `Err(LedgerError::Reverted)` and changes nothing.
    fn send(&mut self, tx: Tx) -> Result<Receipt, LedgerError>;

    /// Runs `tx` against the latest state without changing it and returns its output.
    fn call(&self, tx: Tx) -> Result<Bytes, LedgerError>;

    /// The latest block's timestamp, in seconds.
    fn timestamp(&self) -> Result<u64, LedgerError>;

    /// The latest block's number.
    fn block_number(&self) -> Result<u64, LedgerError>;

    /// Mines an empty block `seconds` after the latest one (dev chains only).
    fn advance_time(&mut self, seconds: u64) -> Result<(), LedgerError>;

    /// Every log `address` emitted with first topic `topic0`, oldest first.
    fn logs(&self, address: Address, topic0: B256) -> Result<Vec<Log>, LedgerError>;
}

/// A boxed backend is a backend, so one `Ledger<Box<dyn Backend>>` can drive either kind.
impl<B: Backend + ?Sized> Backend for Box<B> {
    fn chain_id(&self) -> u64 {
        (**self).chain_id()
    }

    fn accounts(&self) -> Vec<Address> {
        (**self).accounts()
    }

    fn signer(&self, account: Address) -> Result<&PrivateKeySigner, LedgerError> {
        (**self).signer(account)
    }

    fn send(&mut self, tx: Tx) -> Result<Receipt, LedgerError> {
        (**self).send(tx)
    }

    fn call(&self, tx: Tx) -> Result<Bytes, LedgerError> {
        (**self).call(tx)
    }

    fn timestamp(&self) -> Result<u64, LedgerError> {
        (**self).timestamp()
    }

    fn block_number(&self) -> Result<u64, LedgerError> {
        (**self).block_number()
    }

    fn advance_time(&mut self, seconds: u64) -> Result<(), LedgerError> {
        (**self).advance_time(seconds)
    }

    fn logs(&self, address: Address, topic0: B256) -> Result<Vec<Log>, LedgerError> {
        (**self).logs(address, topic0)
    }
}
