//! Proposals as the Ledger builds them: calls the timelock will make once the DAO has voted.

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::sol_types::SolCall;

use crate::bindings::{AssetNFT, Marketplace, ModelRegistry};
use crate::deployment::Deployment;

/// One call a proposal makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// The contract called.
    pub target: Address,
    /// Wei sent along.
    pub value: U256,
    /// The calldata.
    pub calldata: Bytes,
}

impl Action {
    /// A call of `call` on `target`.
    pub fn call<C: SolCall>(target: Address, call: &C) -> Self {
        Self {
            target,
            value: U256::ZERO,
            calldata: call.abi_encode().into(),
        }
    }

    /// Make `version` the active version of community model `model`.
    pub fn set_active_version(deployment: &Deployment, model: U256, version: U256) -> Self {
        Self::call(
            deployment.registry,
            &ModelRegistry::setActiveVersionCall {
                modelId: model,
                versionId: version,
            },
        )
    }

    /// Set the price of access to `version`.
    pub fn set_access_price(deployment: &Deployment, version: U256, price: U256) -> Self {
        Self::call(
            deployment.registry,
            &ModelRegistry::setAccessPriceCall {
                versionId: version,
                price,
            },
        )
    }

    /// Set the marketplace's treasury fee and contributors' fee, in basis points.
    pub fn set_fees(deployment: &Deployment, fee_bps: u16, contributor_fee_bps: u16) -> Self {
        Self::call(
            deployment.marketplace,
            &Marketplace::setFeesCall {
                feeBps_: fee_bps,
                contributorFeeBps_: contributor_fee_bps,
            },
        )
    }

    /// Set the base of asset token URIs.
    pub fn set_base_uri(deployment: &Deployment, base_uri: &str) -> Self {
        Self::call(
            deployment.nft,
            &AssetNFT::setBaseURICall {
                baseURI: base_uri.into(),
            },
        )
    }
}

/// A governance proposal: its actions and its description (which, hashed, identifies it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The calls, in order.
    pub actions: Vec<Action>,
    /// Free text; two proposals with the same actions differ by description.
    pub description: String,
}

impl Proposal {
    /// A proposal of `actions` described by `description`.
    pub fn new(actions: Vec<Action>, description: impl Into<String>) -> Self {
        Self {
            actions,
            description: description.into(),
        }
    }

    /// keccak256 of the description, as the governor takes it in `queue`/`execute`.
    pub fn description_hash(&self) -> B256 {
        keccak256(self.description.as_bytes())
    }

    pub(crate) fn targets(&self) -> Vec<Address> {
        self.actions.iter().map(|action| action.target).collect()
    }

    pub(crate) fn values(&self) -> Vec<U256> {
        self.actions.iter().map(|action| action.value).collect()
    }

    pub(crate) fn calldatas(&self) -> Vec<Bytes> {
        self.actions
            .iter()
            .map(|action| action.calldata.clone())
            .collect()
    }
}

/// How a voter votes (OpenZeppelin's simple counting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// 0
    Against,
    /// 1
    For,
    /// 2
    Abstain,
}

impl Support {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Against => 0,
            Self::For => 1,
            Self::Abstain => 2,
        }
    }
}

/// `IGovernor.ProposalState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposalState {
    /// Waiting for its vote to start.
    Pending,
    /// Being voted on.
    Active,
    /// Cancelled by its proposer or the canceller.
    Canceled,
    /// Lost or missed quorum.
    Defeated,
    /// Passed, not queued yet.
    Succeeded,
    /// In the timelock.
    Queued,
    /// Not executed in time.
    Expired,
    /// Done.
    Executed,
}

impl ProposalState {
    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Pending,
            1 => Self::Active,
            2 => Self::Canceled,
            3 => Self::Defeated,
            4 => Self::Succeeded,
            5 => Self::Queued,
            6 => Self::Expired,
            7 => Self::Executed,
            _ => return None,
        })
    }
}
