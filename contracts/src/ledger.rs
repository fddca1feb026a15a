//! The Ledger: every operation of the economy as one typed method, over any [`Backend`].

use std::path::Path;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolConstructor, SolEvent, SolStruct, eip712_domain};

use crate::LedgerError;
use crate::backend::{Backend, Receipt, Tx};
use crate::bindings::{
    AssetNFT, AutonToken, AutonomyGovernor, Marketplace, ModelRegistry, RevenueSplitter,
    TimelockController,
};
use crate::deployment::{Deployment, SuiteConfig};
use crate::embedded::Embedded;
use crate::governance::{Action, Proposal, ProposalState, Support};

alloy::sol! {
    /// ERC-2612's permit, as signed off chain.
    struct Permit {
        address owner;
        address spender;
        uint256 value;
        uint256 nonce;
        uint256 deadline;
    }
}

/// A mined transaction and the value it produced (a token id, a model id…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent<T> {
    /// What the transaction made.
    pub value: T,
    /// Its receipt, with gas used and logs.
    pub receipt: Receipt,
}

/// Where the Auton of a sale at a given price goes, as the marketplace splits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payout {
    /// The price the buyer pays.
    pub price: U256,
    /// What the seller is credited.
    pub proceeds: U256,
    /// Who gets the royalty (the zero address when there is none).
    pub royalty_receiver: Address,
    /// The creator's royalty.
    pub royalty: U256,
    /// What goes to the contributors of the model version that made the asset.
    pub contributor_fee: U256,
    /// The treasury's fee.
    pub fee: U256,
}

/// A proposal's votes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// Votes for.
    pub for_votes: U256,
    /// Votes against.
    pub against: U256,
    /// Abstentions (they count towards quorum).
    pub abstain: U256,
}

/// What `mint` records for one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintRequest {
    /// Who receives the token.
    pub to: Address,
    /// sha256 of the asset's bytes; also its token id.
    pub content_hash: B256,
    /// The registry version of the model that made it.
    pub model_version: U256,
    /// Metadata URI; empty for the base URI + hash.
    pub uri: String,
    /// Who receives royalties; `Address::ZERO` for the creator.
    pub royalty_receiver: Address,
    /// Royalty in basis points (≤ 1,000).
    pub royalty_bps: u16,
}

/// What `mint_batch` records: several assets sharing model version and royalty terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMintRequest {
    /// Who receives the tokens.
    pub to: Address,
    /// sha256 of each asset.
    pub content_hashes: Vec<B256>,
    /// The registry version of the model that made them.
    pub model_version: U256,
    /// One metadata URI per asset, or none at all for base URI + hash.
    pub uris: Vec<String>,
    /// Who receives royalties; `Address::ZERO` for the creator.
    pub royalty_receiver: Address,
    /// Royalty in basis points (≤ 1,000).
    pub royalty_bps: u16,
}

/// A new model version for `add_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRequest {
    /// The model it belongs to.
    pub model: U256,
    /// sha256 of the weights file.
    pub weights_hash: B256,
    /// sha256 of the training dataset manifest.
    pub dataset_manifest_hash: B256,
    /// The version it was fine-tuned from, or zero.
    pub parent_version: U256,
    /// Where the weights can be fetched.
    pub uri: String,
    /// Contributors and their shares in basis points, summing to 10,000.
    pub contributors: Vec<(Address, u16)>,
    /// Auton asked for access; zero for free.
    pub access_price: U256,
}

/// The token ids a receipt mints: its `Transfer`s from the zero address, in order.
fn minted_tokens(receipt: &Receipt) -> Vec<U256> {
    receipt
        .events::<AssetNFT::Transfer>()
        .iter()
        .filter(|transfer| transfer.from == Address::ZERO)
        .map(|transfer| transfer.tokenId)
        .collect()
}

/// The one typed interface to the chain.
pub struct Ledger<B: Backend> {
    backend: B,
    deployment: Deployment,
}

impl Ledger<Embedded> {
    /// Opens the embedded chain saved in `dir` (`dir/state.json`), or creates it with the suite
    /// deployed by dev account 0 with [`SuiteConfig::dev`]. A restart continues where it stopped.
    pub fn embedded(dir: impl AsRef<Path>) -> Result<Self, LedgerError> {
        let chain = Embedded::open(dir.as_ref().join("state.json"))?;
        Self::on_embedded(chain)
    }

    /// [`Ledger::embedded`] that can also sign for `signers` (creators' keys). On a fresh chain
    /// they receive the dev grant of Auton like the dev accounts.
    pub fn embedded_with(
        dir: impl AsRef<Path>,
        signers: Vec<PrivateKeySigner>,
    ) -> Result<Self, LedgerError> {
        let mut chain = Embedded::open(dir.as_ref().join("state.json"))?;
        for signer in signers {
            chain.add_signer(signer);
        }
        Self::on_embedded(chain)
    }

    /// A throwaway embedded chain in memory with the dev suite deployed.
    pub fn in_memory() -> Result<Self, LedgerError> {
        Self::on_embedded(Embedded::in_memory())
    }

    fn on_embedded(chain: Embedded) -> Result<Self, LedgerError> {
        if let Some(deployment) = chain.deployment().cloned() {
            return Ok(Self {
                backend: chain,
                deployment,
            });
        }
        let mut ledger = Self::deploy(chain, &SuiteConfig::dev())?;
        let deployment = ledger.deployment.clone();
        ledger.backend.set_deployment(deployment)?;
        Ok(ledger)
    }
}

impl<B: Backend> Ledger<B> {
    /// Deploys the whole suite with the backend's first account and wires governance: the timelock
    /// owns registry, marketplace and NFT and is the treasury; the governor alone proposes and
    /// cancels; anyone executes; the deployer gives up its timelock admin role.
    pub fn deploy(mut backend: B, config: &SuiteConfig) -> Result<Self, LedgerError> {
        let accounts = backend.accounts();
        let deployer = *accounts
            .first()
            .ok_or(LedgerError::MissingKey(Address::ZERO))?;
        let mut create =
            |name: &str, code: &Bytes, args: Vec<u8>| -> Result<Address, LedgerError> {
                let data = [code.as_ref(), &args].concat().into();
                let receipt = backend
                    .send(Tx {
                        from: deployer,
                        to: None,
                        data,
                        value: U256::ZERO,
                    })
                    .map_err(|error| error.during(&format!("deploy {name}")))?;
                receipt.contract_address.ok_or_else(|| LedgerError::Decode {
                    call: format!("deploy {name}"),
                    reason: "the receipt names no contract address".into(),
                })
            };
        let timelock = create(
            "TimelockController",
            &TimelockController::BYTECODE,
            TimelockController::constructorCall {
                minDelay: U256::from(config.timelock_delay),
                proposers: vec![],
                executors: vec![Address::ZERO],
                admin: deployer,
            }
            .abi_encode(),
        )?;
        let token = create(
            "AutonToken",
            &AutonToken::BYTECODE,
            AutonToken::constructorCall {
                treasury: deployer,
                initialSupply: config.initial_supply,
            }
            .abi_encode(),
        )?;
        let registry = create(
            "ModelRegistry",
            &ModelRegistry::BYTECODE,
            ModelRegistry::constructorCall {
                token_: token,
                governance: timelock,
            }
            .abi_encode(),
        )?;
        let nft = create(
            "AssetNFT",
            &AssetNFT::BYTECODE,
            AssetNFT::constructorCall {
                registry_: registry,
                baseURI: config.base_uri.clone(),
                initialOwner: timelock,
            }
            .abi_encode(),
        )?;
        let marketplace = create(
            "Marketplace",
            &Marketplace::BYTECODE,
            Marketplace::constructorCall {
                nft_: nft,
                treasury_: timelock,
                initialOwner: timelock,
                feeBps_: config.fee_bps,
                contributorFeeBps_: config.contributor_fee_bps,
            }
            .abi_encode(),
        )?;
        let governor = create(
            "AutonomyGovernor",
            &AutonomyGovernor::BYTECODE,
            AutonomyGovernor::constructorCall {
                token,
                timelock,
                votingDelay_: alloy::primitives::aliases::U48::from(config.voting_delay),
                votingPeriod_: config.voting_period,
                proposalThreshold_: config.proposal_threshold,
                quorumPercent: U256::from(config.quorum_percent),
            }
            .abi_encode(),
        )?;
        let chain_id = backend.chain_id();
        let mut ledger = Self {
            backend,
            deployment: Deployment {
                chain_id,
                deployer,
                token,
                registry,
                splitter: Address::ZERO,
                nft,
                marketplace,
                timelock,
                governor,
            },
        };
        ledger.deployment.splitter = ledger.read(registry, ModelRegistry::splitterCall {})?;
        let proposer = ledger.read(timelock, TimelockController::PROPOSER_ROLECall {})?;
        let canceller = ledger.read(timelock, TimelockController::CANCELLER_ROLECall {})?;
        let admin = ledger.read(timelock, TimelockController::DEFAULT_ADMIN_ROLECall {})?;
        ledger.send(
            deployer,
            timelock,
            TimelockController::grantRoleCall {
                role: proposer,
                account: governor,
            },
        )?;
        ledger.send(
            deployer,
            timelock,
            TimelockController::grantRoleCall {
                role: canceller,
                account: governor,
            },
        )?;
        ledger.send(
            deployer,
            timelock,
            TimelockController::renounceRoleCall {
                role: admin,
                callerConfirmation: deployer,
            },
        )?;
        for account in accounts.iter().skip(1) {
            if !config.grant_per_account.is_zero() {
                ledger.transfer(deployer, *account, config.grant_per_account)?;
            }
        }
        if !config.treasury_grant.is_zero() {
            ledger.transfer(deployer, timelock, config.treasury_grant)?;
        }
        tracing::info!(chain_id, %token, %nft, %marketplace, %governor, "suite deployed");
        Ok(ledger)
    }

    /// A Ledger over a suite deployed earlier.
    pub fn attach(backend: B, deployment: Deployment) -> Result<Self, LedgerError> {
        let chain_id = backend.chain_id();
        if deployment.chain_id != chain_id {
            return Err(LedgerError::WrongChain {
                url: "the deployment".into(),
                expected: deployment.chain_id,
                actual: chain_id,
            });
        }
        Ok(Self {
            backend,
            deployment,
        })
    }

    /// The same Ledger over a boxed backend, so embedded and RPC Ledgers share one type.
    pub fn boxed(self) -> Ledger<Box<dyn Backend>>
    where
        B: 'static,
    {
        Ledger {
            backend: Box::new(self.backend),
            deployment: self.deployment,
        }
    }

    /// Where the suite lives.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// The backend, for what the typed methods do not cover.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Accounts the Ledger can send from, deployer first.
    pub fn accounts(&self) -> Vec<Address> {
        self.backend.accounts()
    }

    /// Sends `call` to `to` from `from`; a revert names the call's signature and custom error.
    pub fn send<C: SolCall>(
        &mut self,
        from: Address,
        to: Address,
        call: C,
    ) -> Result<Receipt, LedgerError> {
        let tx = Tx {
            from,
            to: Some(to),
            data: call.abi_encode().into(),
            value: U256::ZERO,
        };
        self.backend
            .send(tx)
            .map_err(|error| error.during(C::SIGNATURE))
    }

    /// Calls the view `call` on `to` and decodes what it returns.
    pub fn read<C: SolCall>(&self, to: Address, call: C) -> Result<C::Return, LedgerError> {
        let tx = Tx {
            from: Address::ZERO,
            to: Some(to),
            data: call.abi_encode().into(),
            value: U256::ZERO,
        };
        let output = self
            .backend
            .call(tx)
            .map_err(|error| error.during(C::SIGNATURE))?;
        C::abi_decode_returns(&output).map_err(|error| LedgerError::Decode {
            call: C::SIGNATURE.into(),
            reason: error.to_string(),
        })
    }

    /// Deploys arbitrary creation code (test fixtures, references) from `from`.
    pub fn deploy_contract(
        &mut self,
        from: Address,
        name: &str,
        creation_code: Bytes,
    ) -> Result<Sent<Address>, LedgerError> {
        let receipt = self
            .backend
            .send(Tx {
                from,
                to: None,
                data: creation_code,
                value: U256::ZERO,
            })
            .map_err(|error| error.during(&format!("deploy {name}")))?;
        let address = receipt
            .contract_address
            .ok_or_else(|| LedgerError::Decode {
                call: format!("deploy {name}"),
                reason: "the receipt names no contract address".into(),
            })?;
        Ok(Sent {
            value: address,
            receipt,
        })
    }

    // ---- time -------------------------------------------------------------------------------

    /// The latest block's timestamp.
    pub fn timestamp(&self) -> Result<u64, LedgerError> {
        self.backend.timestamp()
    }

    /// Mines a block `seconds` later (dev chains).
    pub fn advance_time(&mut self, seconds: u64) -> Result<(), LedgerError> {
        self.backend.advance_time(seconds)
    }

    // ---- Auton --------------------------------------------------------------------------------

    /// Auton balance of `account`.
    pub fn balance(&self, account: Address) -> Result<U256, LedgerError> {
        self.read(self.deployment.token, AutonToken::balanceOfCall { account })
    }

    /// Total Auton in existence.
    pub fn total_supply(&self) -> Result<U256, LedgerError> {
        self.read(self.deployment.token, AutonToken::totalSupplyCall {})
    }

    /// Sends `amount` Auton from `from` to `to`.
    pub fn transfer(
        &mut self,
        from: Address,
        to: Address,
        amount: U256,
    ) -> Result<Receipt, LedgerError> {
        self.send(
            from,
            self.deployment.token,
            AutonToken::transferCall { to, value: amount },
        )
    }

    /// Lets `spender` move `amount` of `owner`'s Auton.
    pub fn approve(
        &mut self,
        owner: Address,
        spender: Address,
        amount: U256,
    ) -> Result<Receipt, LedgerError> {
        self.send(
            owner,
            self.deployment.token,
            AutonToken::approveCall {
                spender,
                value: amount,
            },
        )
    }

    /// How much of `owner`'s Auton `spender` may move.
    pub fn allowance(&self, owner: Address, spender: Address) -> Result<U256, LedgerError> {
        self.read(
            self.deployment.token,
            AutonToken::allowanceCall { owner, spender },
        )
    }

    /// Signs an ERC-2612 permit with `owner`'s key for its current nonce: once sent (by anyone),
    /// `spender` may move `amount` of `owner`'s Auton until `deadline`.
    pub fn sign_permit(
        &self,
        owner: Address,
        spender: Address,
        amount: U256,
        deadline: U256,
    ) -> Result<AutonToken::permitCall, LedgerError> {
        let token = self.deployment.token;
        let nonce = self.read(token, AutonToken::noncesCall { owner })?;
        let domain = eip712_domain! {
            name: "Auton",
            version: "1",
            chain_id: self.backend.chain_id(),
            verifying_contract: token,
        };
        let permit = Permit {
            owner,
            spender,
            value: amount,
            nonce,
            deadline,
        };
        let signature = self
            .backend
            .signer(owner)?
            .sign_hash_sync(&permit.eip712_signing_hash(&domain))
            .map_err(|error| LedgerError::Decode {
                call: "sign permit".into(),
                reason: error.to_string(),
            })?;
        Ok(AutonToken::permitCall {
            owner,
            spender,
            value: amount,
            deadline,
            v: 27 + u8::from(signature.v()),
            r: signature.r().into(),
            s: signature.s().into(),
        })
    }

    /// Signs a permit with `owner`'s key and submits it from `relayer`, so `owner` pays no gas.
    pub fn permit(
        &mut self,
        owner: Address,
        spender: Address,
        amount: U256,
        deadline: U256,
        relayer: Address,
    ) -> Result<Receipt, LedgerError> {
        let call = self.sign_permit(owner, spender, amount, deadline)?;
        self.send(relayer, self.deployment.token, call)
    }

    /// Delegates `from`'s votes to `delegatee`.
    pub fn delegate(&mut self, from: Address, delegatee: Address) -> Result<Receipt, LedgerError> {
        self.send(
            from,
            self.deployment.token,
            AutonToken::delegateCall { delegatee },
        )
    }

    /// The account `account` delegates its votes to.
    pub fn delegates(&self, account: Address) -> Result<Address, LedgerError> {
        self.read(self.deployment.token, AutonToken::delegatesCall { account })
    }

    /// Votes `account` has now.
    pub fn votes(&self, account: Address) -> Result<U256, LedgerError> {
        self.read(self.deployment.token, AutonToken::getVotesCall { account })
    }

    /// Votes `account` had at `timepoint` (a past timestamp).
    pub fn past_votes(&self, account: Address, timepoint: u64) -> Result<U256, LedgerError> {
        self.read(
            self.deployment.token,
            AutonToken::getPastVotesCall {
                account,
                timepoint: U256::from(timepoint),
            },
        )
    }

    // ---- assets -------------------------------------------------------------------------------

    /// Mints one asset with its provenance record; returns the token id (= the content hash).
    pub fn mint(
        &mut self,
        from: Address,
        request: &MintRequest,
    ) -> Result<Sent<U256>, LedgerError> {
        let call = AssetNFT::mintCall {
            to: request.to,
            contentHash: request.content_hash,
            modelVersionId: request.model_version,
            uri: request.uri.clone(),
            royaltyReceiver: request.royalty_receiver,
            royaltyBps: request.royalty_bps,
        };
        let receipt = self.send(from, self.deployment.nft, call)?;
        let value = minted_tokens(&receipt)
            .first()
            .copied()
            .ok_or_else(|| missing_event("mint", AssetNFT::Transfer::SIGNATURE))?;
        Ok(Sent { value, receipt })
    }

    /// Mints several assets of one model version and royalty terms in one transaction; all or none.
    pub fn mint_batch(
        &mut self,
        from: Address,
        request: &BatchMintRequest,
    ) -> Result<Sent<Vec<U256>>, LedgerError> {
        let call = AssetNFT::mintBatchCall {
            to: request.to,
            contentHashes: request.content_hashes.clone(),
            modelVersionId: request.model_version,
            uris: request.uris.clone(),
            royaltyReceiver: request.royalty_receiver,
            royaltyBps: request.royalty_bps,
        };
        let receipt = self.send(from, self.deployment.nft, call)?;
        let value = minted_tokens(&receipt);
        Ok(Sent { value, receipt })
    }

    /// The provenance record of `token_id`.
    pub fn asset(&self, token_id: U256) -> Result<AssetNFT::Asset, LedgerError> {
        self.read(
            self.deployment.nft,
            AssetNFT::assetOfCall { tokenId: token_id },
        )
    }

    /// The token minted for `content_hash`; `UnknownAsset` if there is none.
    pub fn token_of_content(&self, content_hash: B256) -> Result<U256, LedgerError> {
        self.read(
            self.deployment.nft,
            AssetNFT::tokenOfContentCall {
                contentHash: content_hash,
            },
        )
    }

    /// Who owns `token_id`.
    pub fn owner_of(&self, token_id: U256) -> Result<Address, LedgerError> {
        self.read(
            self.deployment.nft,
            AssetNFT::ownerOfCall { tokenId: token_id },
        )
    }

    /// How many assets `owner` holds.
    pub fn asset_count(&self, owner: Address) -> Result<U256, LedgerError> {
        self.read(self.deployment.nft, AssetNFT::balanceOfCall { owner })
    }

    /// Every asset `owner` holds now, from the NFT's `Transfer` events, oldest first.
    pub fn assets_owned_by(&self, owner: Address) -> Result<Vec<U256>, LedgerError> {
        let mut received: Vec<U256> = Vec::new();
        for log in self
            .backend
            .logs(self.deployment.nft, AssetNFT::Transfer::SIGNATURE_HASH)?
        {
            if let Ok(transfer) = AssetNFT::Transfer::decode_log(&log)
                && transfer.to == owner
                && !received.contains(&transfer.tokenId)
            {
                received.push(transfer.tokenId);
            }
        }
        let mut held = Vec::new();
        for token in received {
            if self.owner_of(token).ok() == Some(owner) {
                held.push(token);
            }
        }
        Ok(held)
    }

    /// Moves `token_id` from `from` to `to` outside the marketplace.
    pub fn transfer_asset(
        &mut self,
        from: Address,
        to: Address,
        token_id: U256,
    ) -> Result<Receipt, LedgerError> {
        self.send(
            from,
            self.deployment.nft,
            AssetNFT::transferFromCall {
                from,
                to,
                tokenId: token_id,
            },
        )
    }

    /// Whether `operator` may move all of `owner`'s assets.
    pub fn is_approved_for_assets(
        &self,
        owner: Address,
        operator: Address,
    ) -> Result<bool, LedgerError> {
        self.read(
            self.deployment.nft,
            AssetNFT::isApprovedForAllCall { owner, operator },
        )
    }

    /// Lets (or stops) `operator` move all of `owner`'s assets; the marketplace needs it to sell.
    pub fn approve_assets(
        &mut self,
        owner: Address,
        operator: Address,
        approved: bool,
    ) -> Result<Receipt, LedgerError> {
        self.send(
            owner,
            self.deployment.nft,
            AssetNFT::setApprovalForAllCall { operator, approved },
        )
    }

    /// The EIP-2981 royalty on a sale of `token_id` at `price`: receiver and amount.
    pub fn royalty(&self, token_id: U256, price: U256) -> Result<(Address, U256), LedgerError> {
        let info = self.read(
            self.deployment.nft,
            AssetNFT::royaltyInfoCall {
                tokenId: token_id,
                salePrice: price,
            },
        )?;
        Ok((info.receiver, info.royaltyAmount))
    }

    // ---- marketplace --------------------------------------------------------------------------

    /// Lists `token_id` for `price` Auton (the marketplace must be approved for the seller's assets).
    pub fn list(
        &mut self,
        seller: Address,
        token_id: U256,
        price: U256,
    ) -> Result<Receipt, LedgerError> {
        self.send(
            seller,
            self.deployment.marketplace,
            Marketplace::listCall {
                tokenId: token_id,
                price,
            },
        )
    }

    /// Withdraws the listing of `token_id`.
    pub fn cancel(&mut self, seller: Address, token_id: U256) -> Result<Receipt, LedgerError> {
        self.send(
            seller,
            self.deployment.marketplace,
            Marketplace::cancelCall { tokenId: token_id },
        )
    }

    /// Buys `token_id`, paying at most `max_price` (the buyer must have approved the marketplace).
    pub fn buy(
        &mut self,
        buyer: Address,
        token_id: U256,
        max_price: U256,
    ) -> Result<Sent<Marketplace::Sold>, LedgerError> {
        let receipt = self.send(
            buyer,
            self.deployment.marketplace,
            Marketplace::buyCall {
                tokenId: token_id,
                maxPrice: max_price,
            },
        )?;
        let value = receipt
            .events::<Marketplace::Sold>()
            .into_iter()
            .next()
            .ok_or_else(|| missing_event("buy", Marketplace::Sold::SIGNATURE))?;
        Ok(Sent { value, receipt })
    }

    /// The listing of `token_id` (seller zero when unlisted).
    pub fn listing(&self, token_id: U256) -> Result<Marketplace::Listing, LedgerError> {
        self.read(
            self.deployment.marketplace,
            Marketplace::listingOfCall { tokenId: token_id },
        )
    }

    /// Every live listing: `(token id, seller, price)`, from the marketplace's `Listed` events,
    /// keeping those still listed by an owner who still holds the token.
    pub fn listings(&self) -> Result<Vec<(U256, Address, U256)>, LedgerError> {
        let market = self.deployment.marketplace;
        let mut tokens: Vec<U256> = Vec::new();
        for log in self
            .backend
            .logs(market, Marketplace::Listed::SIGNATURE_HASH)?
        {
            if let Ok(listed) = Marketplace::Listed::decode_log(&log)
                && !tokens.contains(&listed.tokenId)
            {
                tokens.push(listed.tokenId);
            }
        }
        let mut live = Vec::new();
        for token in tokens {
            let listing = self.listing(token)?;
            if listing.seller != Address::ZERO && self.owner_of(token)? == listing.seller {
                live.push((token, listing.seller, U256::from(listing.price)));
            }
        }
        Ok(live)
    }

    /// Auton the marketplace owes `account` (sales, royalties, fees).
    pub fn owed(&self, account: Address) -> Result<U256, LedgerError> {
        self.read(
            self.deployment.marketplace,
            Marketplace::owedCall { account },
        )
    }

    /// Pays `account` what the marketplace owes it; anyone may send it.
    pub fn withdraw(&mut self, from: Address, account: Address) -> Result<Sent<U256>, LedgerError> {
        let receipt = self.send(
            from,
            self.deployment.marketplace,
            Marketplace::withdrawCall { account },
        )?;
        let value = receipt
            .events::<Marketplace::Withdrawn>()
            .iter()
            .map(|event| event.amount)
            .sum();
        Ok(Sent { value, receipt })
    }

    /// The marketplace's treasury fee and contributors' fee, in basis points.
    pub fn fees(&self) -> Result<(u16, u16), LedgerError> {
        let market = self.deployment.marketplace;
        Ok((
            self.read(market, Marketplace::feeBpsCall {})?,
            self.read(market, Marketplace::contributorFeeBpsCall {})?,
        ))
    }

    /// How a sale of `token_id` at `price` would be split today (the same arithmetic as
    /// `Marketplace.buy`, from the asset's royalty, its model version and the current fees).
    pub fn payout(&self, token_id: U256, price: U256) -> Result<Payout, LedgerError> {
        let (royalty_receiver, royalty) = self.royalty(token_id, price)?;
        let version = self.asset(token_id)?.modelVersionId;
        let (fee_bps, contributor_bps) = self.fees()?;
        let bps = |share: u16| price * U256::from(share) / U256::from(10_000u32);
        let contributor_fee = if version.is_zero() {
            U256::ZERO
        } else {
            bps(contributor_bps)
        };
        let fee = bps(fee_bps);
        Ok(Payout {
            price,
            proceeds: price - royalty - contributor_fee - fee,
            royalty_receiver,
            royalty,
            contributor_fee,
            fee,
        })
    }

    // ---- models -------------------------------------------------------------------------------

    /// Registers a model; a community model's active version then changes only through governance.
    pub fn register_model(
        &mut self,
        from: Address,
        name: &str,
        community: bool,
    ) -> Result<Sent<U256>, LedgerError> {
        let receipt = self.send(
            from,
            self.deployment.registry,
            ModelRegistry::registerModelCall {
                name: name.into(),
                community,
            },
        )?;
        let value = receipt
            .events::<ModelRegistry::ModelRegistered>()
            .first()
            .map(|event| event.modelId)
            .ok_or_else(|| {
                missing_event("registerModel", ModelRegistry::ModelRegistered::SIGNATURE)
            })?;
        Ok(Sent { value, receipt })
    }

    /// Adds a version to a model; returns its id.
    pub fn add_version(
        &mut self,
        from: Address,
        request: &VersionRequest,
    ) -> Result<Sent<U256>, LedgerError> {
        let call = ModelRegistry::addVersionCall {
            modelId: request.model,
            weightsHash: request.weights_hash,
            datasetManifestHash: request.dataset_manifest_hash,
            parentVersion: request.parent_version,
            uri: request.uri.clone(),
            contributors: request
                .contributors
                .iter()
                .map(|(account, shares)| ModelRegistry::Contributor {
                    account: *account,
                    sharesBps: *shares,
                })
                .collect(),
            accessPrice: request.access_price,
        };
        let receipt = self.send(from, self.deployment.registry, call)?;
        let value = receipt
            .events::<ModelRegistry::VersionAdded>()
            .first()
            .map(|event| event.versionId)
            .ok_or_else(|| missing_event("addVersion", ModelRegistry::VersionAdded::SIGNATURE))?;
        Ok(Sent { value, receipt })
    }

    /// Makes `version` the active version of private model `model` (its owner only).
    pub fn set_active_version(
        &mut self,
        from: Address,
        model: U256,
        version: U256,
    ) -> Result<Receipt, LedgerError> {
        self.send(
            from,
            self.deployment.registry,
            ModelRegistry::setActiveVersionCall {
                modelId: model,
                versionId: version,
            },
        )
    }

    /// A model's owner, kind, active version and name.
    pub fn model(&self, model: U256) -> Result<ModelRegistry::Model, LedgerError> {
        self.read(
            self.deployment.registry,
            ModelRegistry::modelOfCall { modelId: model },
        )
    }

    /// A version's record.
    pub fn version(&self, version: U256) -> Result<ModelRegistry::Version, LedgerError> {
        self.read(
            self.deployment.registry,
            ModelRegistry::versionOfCall { versionId: version },
        )
    }

    /// How many models the registry holds (ids run from 1).
    pub fn model_count(&self) -> Result<U256, LedgerError> {
        self.read(self.deployment.registry, ModelRegistry::modelCountCall {})
    }

    /// How many model versions the registry holds (ids run from 1).
    pub fn version_count(&self) -> Result<U256, LedgerError> {
        self.read(self.deployment.registry, ModelRegistry::versionCountCall {})
    }

    /// The newest version registered with these weights, if any.
    pub fn version_with_weights(&self, weights_hash: B256) -> Result<Option<U256>, LedgerError> {
        let count = self.version_count()?.saturating_to::<u64>();
        for id in (1..=count).rev() {
            if self.version(U256::from(id))?.weightsHash == weights_hash {
                return Ok(Some(U256::from(id)));
            }
        }
        Ok(None)
    }

    /// Buys access to `version` at its price (the buyer must have approved the registry).
    pub fn buy_access(&mut self, buyer: Address, version: U256) -> Result<Receipt, LedgerError> {
        self.send(
            buyer,
            self.deployment.registry,
            ModelRegistry::buyAccessCall { versionId: version },
        )
    }

    /// Whether `account` has access to `version`.
    pub fn has_access(&self, account: Address, version: U256) -> Result<bool, LedgerError> {
        self.read(
            self.deployment.registry,
            ModelRegistry::hasAccessCall {
                account,
                versionId: version,
            },
        )
    }

    // ---- revenue ------------------------------------------------------------------------------

    /// Pays `account` its share of `version`'s revenue; anyone may send it.
    pub fn release(
        &mut self,
        from: Address,
        version: U256,
        account: Address,
    ) -> Result<Sent<U256>, LedgerError> {
        let receipt = self.send(
            from,
            self.deployment.splitter,
            RevenueSplitter::releaseCall {
                versionId: version,
                account,
            },
        )?;
        let value = receipt
            .events::<RevenueSplitter::Released>()
            .iter()
            .map(|event| event.amount)
            .sum();
        Ok(Sent { value, receipt })
    }

    /// What `account` can release from `version` now.
    pub fn releasable(&self, version: U256, account: Address) -> Result<U256, LedgerError> {
        self.read(
            self.deployment.splitter,
            RevenueSplitter::releasableCall {
                versionId: version,
                account,
            },
        )
    }

    /// Everything `version` has received and everything released from it.
    pub fn revenue(&self, version: U256) -> Result<(U256, U256), LedgerError> {
        let splitter = self.deployment.splitter;
        Ok((
            self.read(
                splitter,
                RevenueSplitter::totalReceivedCall { versionId: version },
            )?,
            self.read(
                splitter,
                RevenueSplitter::totalReleasedCall { versionId: version },
            )?,
        ))
    }

    // ---- governance ---------------------------------------------------------------------------

    /// Proposes `proposal`; returns its id.
    pub fn propose(
        &mut self,
        from: Address,
        proposal: &Proposal,
    ) -> Result<Sent<U256>, LedgerError> {
        let call = AutonomyGovernor::proposeCall {
            targets: proposal.targets(),
            values: proposal.values(),
            calldatas: proposal.calldatas(),
            description: proposal.description.clone(),
        };
        let receipt = self.send(from, self.deployment.governor, call)?;
        let value = receipt
            .events::<AutonomyGovernor::ProposalCreated>()
            .first()
            .map(|event| event.proposalId)
            .ok_or_else(|| {
                missing_event("propose", AutonomyGovernor::ProposalCreated::SIGNATURE)
            })?;
        Ok(Sent { value, receipt })
    }

    /// The id `proposal` has (or will have) on this governor.
    pub fn proposal_id(&self, proposal: &Proposal) -> Result<U256, LedgerError> {
        self.read(
            self.deployment.governor,
            AutonomyGovernor::hashProposalCall {
                targets: proposal.targets(),
                values: proposal.values(),
                calldatas: proposal.calldatas(),
                descriptionHash: proposal.description_hash(),
            },
        )
    }

    /// Every proposal made on the governor, oldest first, rebuilt from its `ProposalCreated`
    /// event: its id and the [`Proposal`] that `queue` and `execute` need.
    pub fn proposals(&self) -> Result<Vec<(U256, Proposal)>, LedgerError> {
        let logs = self.backend.logs(
            self.deployment.governor,
            AutonomyGovernor::ProposalCreated::SIGNATURE_HASH,
        )?;
        Ok(logs
            .iter()
            .filter_map(|log| AutonomyGovernor::ProposalCreated::decode_log(log).ok())
            .map(|event| {
                let actions = event
                    .targets
                    .iter()
                    .zip(&event.values)
                    .zip(&event.calldatas)
                    .map(|((target, value), calldata)| Action {
                        target: *target,
                        value: *value,
                        calldata: calldata.clone(),
                    })
                    .collect();
                (
                    event.proposalId,
                    Proposal::new(actions, event.description.clone()),
                )
            })
            .collect())
    }

    /// Casts `from`'s vote on proposal `id`.
    pub fn vote(
        &mut self,
        from: Address,
        id: U256,
        support: Support,
    ) -> Result<Receipt, LedgerError> {
        self.send(
            from,
            self.deployment.governor,
            AutonomyGovernor::castVoteCall {
                proposalId: id,
                support: support.code(),
            },
        )
    }

    /// Queues a passed proposal in the timelock.
    pub fn queue(&mut self, from: Address, proposal: &Proposal) -> Result<Receipt, LedgerError> {
        let call = AutonomyGovernor::queueCall {
            targets: proposal.targets(),
            values: proposal.values(),
            calldatas: proposal.calldatas(),
            descriptionHash: proposal.description_hash(),
        };
        self.send(from, self.deployment.governor, call)
    }

    /// Executes a queued proposal once the timelock delay has passed.
    pub fn execute(&mut self, from: Address, proposal: &Proposal) -> Result<Receipt, LedgerError> {
        let call = AutonomyGovernor::executeCall {
            targets: proposal.targets(),
            values: proposal.values(),
            calldatas: proposal.calldatas(),
            descriptionHash: proposal.description_hash(),
        };
        self.send(from, self.deployment.governor, call)
    }

    /// Where proposal `id` stands.
    pub fn proposal_state(&self, id: U256) -> Result<ProposalState, LedgerError> {
        let code = self.read(
            self.deployment.governor,
            AutonomyGovernor::stateCall { proposalId: id },
        )?;
        ProposalState::from_code(code).ok_or_else(|| LedgerError::Decode {
            call: AutonomyGovernor::stateCall::SIGNATURE.into(),
            reason: format!("unknown proposal state {code}"),
        })
    }

    /// When voting on `id` starts and ends (timestamps).
    pub fn proposal_window(&self, id: U256) -> Result<(u64, u64), LedgerError> {
        let governor = self.deployment.governor;
        let start = self.read(
            governor,
            AutonomyGovernor::proposalSnapshotCall { proposalId: id },
        )?;
        let end = self.read(
            governor,
            AutonomyGovernor::proposalDeadlineCall { proposalId: id },
        )?;
        Ok((start.saturating_to(), end.saturating_to()))
    }

    /// The votes cast on proposal `id` so far.
    pub fn proposal_votes(&self, id: U256) -> Result<Tally, LedgerError> {
        let votes = self.read(
            self.deployment.governor,
            AutonomyGovernor::proposalVotesCall { proposalId: id },
        )?;
        Ok(Tally {
            for_votes: votes.forVotes,
            against: votes.againstVotes,
            abstain: votes.abstainVotes,
        })
    }

    /// The votes (for plus abstain) proposal `id` needs to pass, or `None` while its vote has not
    /// started (the quorum is a fraction of the supply at the snapshot).
    pub fn proposal_quorum(&self, id: U256) -> Result<Option<U256>, LedgerError> {
        let (start, _) = self.proposal_window(id)?;
        if start >= self.timestamp()? {
            return Ok(None);
        }
        let quorum = self.read(
            self.deployment.governor,
            AutonomyGovernor::quorumCall {
                timepoint: U256::from(start),
            },
        )?;
        Ok(Some(quorum))
    }

    /// When queued proposal `id` may be executed (timestamp), or `None` when it is not queued.
    pub fn proposal_eta(&self, id: U256) -> Result<Option<u64>, LedgerError> {
        let eta: u64 = self
            .read(
                self.deployment.governor,
                AutonomyGovernor::proposalEtaCall { proposalId: id },
            )?
            .saturating_to();
        Ok((eta != 0).then_some(eta))
    }

    /// The timelock's delay, in seconds.
    pub fn timelock_delay(&self) -> Result<u64, LedgerError> {
        Ok(self
            .read(
                self.deployment.timelock,
                TimelockController::getMinDelayCall {},
            )?
            .saturating_to())
    }
}

fn missing_event(call: &str, event: &str) -> LedgerError {
    LedgerError::Decode {
        call: call.into(),
        reason: format!("no {event} event in the receipt"),
    }
}
