//! The RPC backend: any EVM chain over JSON-RPC (HTTP), transactions signed by local keys.

use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, Log, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{BlockId, BlockNumberOrTag, Filter, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::{RpcError, TransportErrorKind};
use tokio::runtime::Runtime;

use crate::backend::{Backend, Receipt, Tx};
use crate::keyring::KeyRing;
use crate::{LedgerError, Revert};

/// How long to wait for a sent transaction's receipt before giving up.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// A chain over JSON-RPC. Blocking: it owns a small async runtime and must not be used from
/// inside another one (use `spawn_blocking`).
pub struct Rpc {
    url: String,
    chain_id: u64,
    provider: DynProvider,
    keys: KeyRing,
    runtime: Runtime,
}

impl Rpc {
    /// Connects to `url`, signing with `signers` (none: read only). With `expected_chain_id`, a node serving
    /// another chain is refused before anything is sent.
    pub fn connect(
        url: &str,
        signers: Vec<PrivateKeySigner>,
        expected_chain_id: Option<u64>,
    ) -> Result<Self, LedgerError> {
        let rpc_error = |method: &str, message: String| LedgerError::Rpc {
            url: url.into(),
            method: method.into(),
            message,
        };
        let parsed = url
            .parse()
            .map_err(|error| rpc_error("connect", format!("not a URL: {error}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| {
                rpc_error(
                    "connect",
                    format!("cannot start the async runtime: {error}"),
                )
            })?;
        // Without keys the Ledger can still read; sends then fail with `MissingKey`.
        let provider = match signers.split_first() {
            Some((first, rest)) => {
                let mut wallet = EthereumWallet::new(first.clone());
                for signer in rest {
                    wallet.register_signer(signer.clone());
                }
                ProviderBuilder::new()
                    .wallet(wallet)
                    .connect_http(parsed)
                    .erased()
            }
            None => ProviderBuilder::new().connect_http(parsed).erased(),
        };
        let chain_id = block_on(&runtime, provider.get_chain_id())?
            .map_err(|error| rpc_error("eth_chainId", error.to_string()))?;
        if let Some(expected) = expected_chain_id
            && expected != chain_id
        {
            return Err(LedgerError::WrongChain {
                url: url.into(),
                expected,
                actual: chain_id,
            });
        }
        tracing::debug!(url, chain_id, "connected");
        Ok(Self {
            url: url.into(),
            chain_id,
            provider,
            keys: KeyRing::new(signers),
            runtime,
        })
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn error(&self, method: &str, error: impl std::fmt::Display) -> LedgerError {
        LedgerError::Rpc {
            url: self.url.clone(),
            method: method.into(),
            message: error.to_string(),
        }
    }

    /// A revert carried in a JSON-RPC error, or the transport error itself.
    fn classify(&self, method: &str, error: RpcError<TransportErrorKind>) -> LedgerError {
        if let Some(data) = error
            .as_error_resp()
            .and_then(|payload| payload.as_revert_data())
        {
            return LedgerError::Reverted {
                call: String::new(),
                revert: Box::new(Revert::decode(&data)),
            };
        }
        if let Some(payload) = error.as_error_resp()
            && payload.message.contains("revert")
        {
            return LedgerError::Reverted {
                call: String::new(),
                revert: Box::new(Revert::Unknown(Bytes::new())),
            };
        }
        self.error(method, error)
    }

    fn request(&self, tx: &Tx) -> TransactionRequest {
        let request = TransactionRequest::default()
            .with_from(tx.from)
            .with_value(tx.value);
        match tx.to {
            Some(to) => request.with_to(to).with_input(tx.data.clone()),
            None => request.with_deploy_code(tx.data.clone()),
        }
    }
}

impl Backend for Rpc {
    fn chain_id(&self) -> u64 {
        self.chain_id
    }

    fn accounts(&self) -> Vec<Address> {
        self.keys.accounts()
    }

    fn signer(&self, account: Address) -> Result<&PrivateKeySigner, LedgerError> {
        self.keys.get(account)
    }

    fn send(&mut self, tx: Tx) -> Result<Receipt, LedgerError> {
        self.signer(tx.from)?;
        let request = self.request(&tx);
        let provider = &self.provider;
        let receipt = block_on(&self.runtime, async {
            let estimate = provider
                .estimate_gas(request.clone())
                .await
                .map_err(|error| self.classify("eth_estimateGas", error))?;
            // Auton transfers may land at a later timestamp than estimated and write a new vote
            // checkpoint instead of updating one: leave room for it.
            let request = request.with_gas_limit(estimate + estimate / 5 + 25_000);
            let pending = provider
                .send_transaction(request)
                .await
                .map_err(|error| self.classify("eth_sendTransaction", error))?;
            let hash = *pending.tx_hash();
            let started = std::time::Instant::now();
            loop {
                let found = provider
                    .get_transaction_receipt(hash)
                    .await
                    .map_err(|error| self.error("eth_getTransactionReceipt", error))?;
                if let Some(receipt) = found {
                    return Ok(receipt);
                }
                if started.elapsed() > RECEIPT_TIMEOUT {
                    return Err(self.error(
                        "eth_getTransactionReceipt",
                        format!("{hash} not mined after {RECEIPT_TIMEOUT:?}"),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })??;
        let block_number = receipt.block_number.unwrap_or_default();
        if !receipt.status() {
            // Replay at the parent block to learn why it reverted.
            let replay = self.request(&tx);
            let at = BlockId::Number(BlockNumberOrTag::Number(block_number.saturating_sub(1)));
            let revert = match block_on(
                &self.runtime,
                self.provider.call(replay).block(at).into_future(),
            )? {
                Err(error) => match self.classify("eth_call", error) {
                    LedgerError::Reverted { revert, .. } => revert,
                    _ => Box::new(Revert::Unknown(Bytes::new())),
                },
                Ok(_) => Box::new(Revert::Unknown(Bytes::new())),
            };
            return Err(LedgerError::Reverted {
                call: String::new(),
                revert,
            });
        }
        Ok(Receipt {
            transaction_hash: receipt.transaction_hash,
            block_number,
            gas_used: receipt.gas_used,
            contract_address: receipt.contract_address,
            logs: receipt
                .inner
                .logs()
                .iter()
                .map(|log| log.inner.clone())
                .collect(),
        })
    }

    fn call(&self, tx: Tx) -> Result<Bytes, LedgerError> {
        let request = self.request(&tx);
        block_on(&self.runtime, self.provider.call(request).into_future())?
            .map_err(|error| self.classify("eth_call", error))
    }

    fn timestamp(&self) -> Result<u64, LedgerError> {
        let block = block_on(
            &self.runtime,
            self.provider
                .get_block_by_number(BlockNumberOrTag::Latest)
                .into_future(),
        )?
        .map_err(|error| self.error("eth_getBlockByNumber", error))?
        .ok_or_else(|| self.error("eth_getBlockByNumber", "the node has no latest block"))?;
        Ok(block.header.timestamp)
    }

    fn block_number(&self) -> Result<u64, LedgerError> {
        block_on(&self.runtime, self.provider.get_block_number())?
            .map_err(|error| self.error("eth_blockNumber", error))
    }

    fn logs(&self, address: Address, topic0: B256) -> Result<Vec<Log>, LedgerError> {
        self.fetch_logs(address, topic0)
    }

    fn advance_time(&mut self, seconds: u64) -> Result<(), LedgerError> {
        let provider = &self.provider;
        block_on(&self.runtime, async {
            provider
                .raw_request::<_, serde_json::Value>(
                    "evm_increaseTime".into(),
                    (U256::from(seconds.max(1)),),
                )
                .await?;
            provider
                .raw_request::<_, serde_json::Value>("evm_mine".into(), ())
                .await
        })?
        .map(|_| ())
        .map_err(|error| match error.as_error_resp() {
            Some(_) => LedgerError::NotDevChain(self.url.clone()),
            None => self.error("evm_increaseTime", error),
        })
    }
}

impl Rpc {
    fn fetch_logs(&self, address: Address, topic0: B256) -> Result<Vec<Log>, LedgerError> {
        let filter = Filter::new()
            .address(address)
            .event_signature(topic0)
            .from_block(BlockNumberOrTag::Earliest);
        let logs = block_on(&self.runtime, self.provider.get_logs(&filter))?
            .map_err(|error| self.error("eth_getLogs", error))?;
        Ok(logs.into_iter().map(|log| log.inner).collect())
    }
}

/// Runs `future` to completion on `runtime`, refusing to nest inside a caller's runtime.
fn block_on<F: std::future::Future>(
    runtime: &Runtime,
    future: F,
) -> Result<F::Output, LedgerError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(LedgerError::InsideRuntime);
    }
    Ok(runtime.block_on(future))
}
