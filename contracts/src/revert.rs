//! Revert data decoded into the custom error of the contract that raised it.

use alloy::primitives::{Bytes, U256};
use alloy::sol_types::{Panic, Revert as RevertString, SolError, SolInterface};

use crate::bindings::{
    AssetNFT::AssetNFTErrors, AutonToken::AutonTokenErrors,
    AutonomyGovernor::AutonomyGovernorErrors, Marketplace::MarketplaceErrors,
    ModelRegistry::ModelRegistryErrors, RevenueSplitter::RevenueSplitterErrors,
    TimelockController::TimelockControllerErrors,
};

/// Why a transaction or call reverted: the suite's custom error with its arguments, a
/// `require` message, a panic code, or bytes no contract of the suite declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revert {
    /// A custom error of [`crate::bindings::AssetNFT`].
    AssetNFT(AssetNFTErrors),
    /// A custom error of [`crate::bindings::Marketplace`].
    Marketplace(MarketplaceErrors),
    /// A custom error of [`crate::bindings::ModelRegistry`].
    ModelRegistry(ModelRegistryErrors),
    /// A custom error of [`crate::bindings::RevenueSplitter`].
    RevenueSplitter(RevenueSplitterErrors),
    /// A custom error of [`crate::bindings::AutonToken`] (ERC-20, permit, votes).
    AutonToken(AutonTokenErrors),
    /// A custom error of [`crate::bindings::AutonomyGovernor`].
    Governor(AutonomyGovernorErrors),
    /// A custom error of [`crate::bindings::TimelockController`].
    Timelock(TimelockControllerErrors),
    /// `Error(string)`: a `require` message.
    Message(String),
    /// `Panic(uint256)`: an assertion, overflow or division by zero.
    Panic(U256),
    /// Revert data no contract of the suite declares (empty for a bare `revert()`).
    Unknown(Bytes),
}

impl Revert {
    /// Decodes revert data. Selectors shared by several contracts (OpenZeppelin's `Ownable…`,
    /// `ERC721…`) decode to the first contract in the order above; the arguments are the same.
    pub fn decode(data: &[u8]) -> Self {
        if let Ok(error) = AssetNFTErrors::abi_decode(data) {
            return Self::AssetNFT(error);
        }
        if let Ok(error) = MarketplaceErrors::abi_decode(data) {
            return Self::Marketplace(error);
        }
        if let Ok(error) = ModelRegistryErrors::abi_decode(data) {
            return Self::ModelRegistry(error);
        }
        if let Ok(error) = RevenueSplitterErrors::abi_decode(data) {
            return Self::RevenueSplitter(error);
        }
        if let Ok(error) = AutonTokenErrors::abi_decode(data) {
            return Self::AutonToken(error);
        }
        if let Ok(error) = AutonomyGovernorErrors::abi_decode(data) {
            return Self::Governor(error);
        }
        if let Ok(error) = TimelockControllerErrors::abi_decode(data) {
            return Self::Timelock(error);
        }
        if let Ok(message) = RevertString::abi_decode(data) {
            return Self::Message(message.reason);
        }
        if let Ok(panic) = Panic::abi_decode(data) {
            return Self::Panic(panic.code);
        }
        Self::Unknown(Bytes::copy_from_slice(data))
    }

    /// The custom error's name (`"ContentAlreadyMinted"`), `"Error"`, `"Panic"` or `"unknown"`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::AssetNFT(error) => AssetNFTErrors::name_by_selector(error.selector()),
            Self::Marketplace(error) => MarketplaceErrors::name_by_selector(error.selector()),
            Self::ModelRegistry(error) => ModelRegistryErrors::name_by_selector(error.selector()),
            Self::RevenueSplitter(error) => {
                RevenueSplitterErrors::name_by_selector(error.selector())
            }
            Self::AutonToken(error) => AutonTokenErrors::name_by_selector(error.selector()),
            Self::Governor(error) => AutonomyGovernorErrors::name_by_selector(error.selector()),
            Self::Timelock(error) => TimelockControllerErrors::name_by_selector(error.selector()),
            Self::Message(_) => Some("Error"),
            Self::Panic(_) => Some("Panic"),
            Self::Unknown(_) => None,
        }
        .unwrap_or("unknown")
    }
}

impl std::fmt::Display for Revert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AssetNFT(error) => write!(f, "AssetNFT: {}", inner(error)),
            Self::Marketplace(error) => write!(f, "Marketplace: {}", inner(error)),
            Self::ModelRegistry(error) => write!(f, "ModelRegistry: {}", inner(error)),
            Self::RevenueSplitter(error) => write!(f, "RevenueSplitter: {}", inner(error)),
            Self::AutonToken(error) => write!(f, "AutonToken: {}", inner(error)),
            Self::Governor(error) => write!(f, "AutonomyGovernor: {}", inner(error)),
            Self::Timelock(error) => write!(f, "TimelockController: {}", inner(error)),
            Self::Message(message) => write!(f, "Error({message:?})"),
            Self::Panic(code) => write!(f, "Panic(0x{code:x})"),
            Self::Unknown(data) if data.is_empty() => write!(f, "revert without data"),
            Self::Unknown(data) => write!(f, "unknown revert data {data}"),
        }
    }
}

/// `ErrorName(ErrorName { a: 1 })` → `ErrorName { a: 1 }`.
fn inner(error: &impl std::fmt::Debug) -> String {
    let debug = format!("{error:?}");
    match debug.split_once('(') {
        Some((_, rest)) => rest.strip_suffix(')').unwrap_or(rest).to_string(),
        None => debug,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::AssetNFT;
    use alloy::primitives::B256;

    #[test]
    fn custom_errors_decode_with_their_arguments() {
        let hash = B256::repeat_byte(7);
        let data = AssetNFT::ContentAlreadyMinted { contentHash: hash }.abi_encode();
        let revert = Revert::decode(&data);
        assert_eq!(
            revert,
            Revert::AssetNFT(AssetNFTErrors::ContentAlreadyMinted(
                AssetNFT::ContentAlreadyMinted { contentHash: hash }
            ))
        );
        assert_eq!(revert.name(), "ContentAlreadyMinted");
        let shown = revert.to_string();
        assert!(
            shown.starts_with("AssetNFT: ContentAlreadyMinted"),
            "{shown}"
        );
        assert!(shown.contains(&format!("{hash}")), "{shown}");
    }

    #[test]
    fn messages_panics_and_unknown_data() {
        let message = RevertString {
            reason: "nope".into(),
        }
        .abi_encode();
        assert_eq!(Revert::decode(&message), Revert::Message("nope".into()));
        let panic = Panic {
            code: U256::from(0x11),
        }
        .abi_encode();
        assert_eq!(Revert::decode(&panic).to_string(), "Panic(0x11)");
        assert_eq!(Revert::decode(&[]).to_string(), "revert without data");
        assert_eq!(
            Revert::decode(&[1, 2, 3]),
            Revert::Unknown(Bytes::from(vec![1, 2, 3]))
        );
    }
}
