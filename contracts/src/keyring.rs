//! The local keys a backend signs with.

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;

use crate::LedgerError;

/// Signers in a stable order, one per account.
#[derive(Clone, Default)]
pub(crate) struct KeyRing(Vec<PrivateKeySigner>);

impl KeyRing {
    pub(crate) fn new(signers: Vec<PrivateKeySigner>) -> Self {
        let mut ring = Self::default();
        for signer in signers {
            ring.add(signer);
        }
        ring
    }

    /// Adds `signer` unless its account is already there.
    pub(crate) fn add(&mut self, signer: PrivateKeySigner) {
        if self
            .0
            .iter()
            .all(|known| known.address() != signer.address())
        {
            self.0.push(signer);
        }
    }

    pub(crate) fn accounts(&self) -> Vec<Address> {
        self.0.iter().map(PrivateKeySigner::address).collect()
    }

    pub(crate) fn get(&self, account: Address) -> Result<&PrivateKeySigner, LedgerError> {
        self.0
            .iter()
            .find(|signer| signer.address() == account)
            .ok_or(LedgerError::MissingKey(account))
    }

    pub(crate) fn signers(&self) -> &[PrivateKeySigner] {
        &self.0
    }
}
