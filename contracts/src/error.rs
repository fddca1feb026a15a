//! The one error type of the Ledger.

use std::path::PathBuf;

use alloy::primitives::Address;

use crate::revert::Revert;

/// Everything that can go wrong talking to the chain. A revert names the call and the decoded
/// custom error; transport, key and state errors name the endpoint, account or file.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The transaction or call reverted.
    #[error("{call} reverted: {revert}")]
    Reverted {
        /// The Solidity signature of what was called (`buy(uint256,uint256)`), or `deploy <Name>`.
        call: String,
        /// The decoded revert reason.
        revert: Box<Revert>,
    },
    /// The EVM halted (out of gas, invalid opcode, code size limit…).
    #[error("{call} halted: {reason}")]
    Halted {
        /// What was called.
        call: String,
        /// The EVM's halt reason.
        reason: String,
    },
    /// The EVM refused the transaction before running it (nonce, balance, gas limit).
    #[error("{call} was rejected by the EVM: {reason}")]
    Rejected {
        /// What was called.
        call: String,
        /// The EVM's reason.
        reason: String,
    },
    /// The node at `url` serves another chain than the one expected.
    #[error("{url} serves chain id {actual}, expected chain id {expected}")]
    WrongChain {
        /// The RPC endpoint.
        url: String,
        /// The chain id the caller asked for.
        expected: u64,
        /// The chain id the node reported.
        actual: u64,
    },
    /// The RPC endpoint cannot be reached or answered with an error.
    #[error("RPC {method} at {url} failed: {message}")]
    Rpc {
        /// The RPC endpoint.
        url: String,
        /// The JSON-RPC method or step.
        method: String,
        /// What went wrong.
        message: String,
    },
    /// No local key can sign for this account.
    #[error("no key for account {0}: add its signer to the Ledger")]
    MissingKey(Address),
    /// Time travel asked of a chain that cannot do it.
    #[error("cannot advance time on {0}: only dev chains (embedded, anvil) allow it")]
    NotDevChain(String),
    /// The persisted chain state cannot be read back; the file is left untouched.
    #[error("chain state {path} is corrupt ({reason}); it was left as it is")]
    CorruptState {
        /// The state file.
        path: PathBuf,
        /// What failed to parse.
        reason: String,
    },
    /// Another process saved the embedded chain since this one opened it; this process's
    /// transaction was not saved.
    #[error("chain state {} was changed by another process since this one read it; nothing was saved: run the command again", .0.display())]
    StateChanged(PathBuf),
    /// A deployment file names a different chain or cannot be read.
    #[error("deployment {path}: {reason}")]
    Deployment {
        /// The deployment file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done (`read`, `write`, `create`).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A contract returned bytes that do not decode as the call's return type.
    #[error("{call} returned data that does not decode: {reason}")]
    Decode {
        /// What was called.
        call: String,
        /// The decoder's message.
        reason: String,
    },
    /// A blocking Ledger over RPC was used from inside an async runtime.
    #[error(
        "the RPC Ledger blocks; call it outside an async runtime (e.g. in tokio::task::spawn_blocking)"
    )]
    InsideRuntime,
    /// The in-process EVM failed (a database or internal error, not a revert).
    #[error("embedded EVM: {0}")]
    Evm(String),
}

impl LedgerError {
    /// Names the call in a revert, halt or rejection raised below the Ledger's typed layer.
    pub(crate) fn during(self, signature: &str) -> Self {
        match self {
            Self::Reverted { revert, .. } => Self::Reverted {
                call: signature.into(),
                revert,
            },
            Self::Halted { reason, .. } => Self::Halted {
                call: signature.into(),
                reason,
            },
            Self::Rejected { reason, .. } => Self::Rejected {
                call: signature.into(),
                reason,
            },
            other => other,
        }
    }

    /// The decoded revert, if this is one.
    pub fn revert(&self) -> Option<&Revert> {
        match self {
            Self::Reverted { revert, .. } => Some(revert),
            _ => None,
        }
    }
}
