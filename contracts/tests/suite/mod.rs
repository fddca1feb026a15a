//! The contract-level suite every backend must pass. Each scenario takes a Ledger with the dev
//! suite freshly deployed ([`autonomy_contracts::SuiteConfig::dev`]).

#![allow(dead_code)]

mod security;

/// Calls `$runner!` with every scenario of the suite, so each backend runs the same list.
#[allow(unused_macros)] // the property tests use the suite's helpers only
macro_rules! every_scenario {
    ($runner:ident) => {
        $runner!(
            deploy_wires_governance,
            mint_records_provenance_once,
            batch_mint,
            marketplace_sale_pays_everyone,
            listings_go_stale_and_guard_sellers,
            access_sales_pay_the_split,
            registry_checks_shares_and_control,
            governance_moves_community_models,
            votes_count_at_the_snapshot,
            permits_work_once,
            reentrant_buy_is_refused,
            reentrant_mint_cannot_double_mint,
            malicious_token_cannot_reenter,
            only_governance_changes_the_rules,
            governance_is_held_to_the_caps,
            splitter_leaves_no_dust,
        );
    };
}

#[allow(unused_imports)] // not every test crate runs the security scenarios
pub use security::*;

use alloy::primitives::{Address, B256, U256, keccak256};
use autonomy_contracts::bindings::{AssetNFT, Marketplace, ModelRegistry, TimelockController};
use autonomy_contracts::{
    Action, Backend, BatchMintRequest, Ledger, LedgerError, MintRequest, Proposal, ProposalState,
    SuiteConfig, Support, VersionRequest, auton,
};

/// The custom error's name of a revert, or a panic naming what came back instead.
pub fn revert_name<T: std::fmt::Debug>(result: Result<T, LedgerError>) -> &'static str {
    match result {
        Err(error) => match error.revert() {
            Some(revert) => revert.name(),
            None => panic!("expected a revert, got {error}"),
        },
        Ok(value) => panic!("expected a revert, got {value:?}"),
    }
}

pub fn hash(label: &str) -> B256 {
    keccak256(label.as_bytes())
}

pub fn mint_request(
    to: Address,
    label: &str,
    model_version: U256,
    royalty_bps: u16,
) -> MintRequest {
    MintRequest {
        to,
        content_hash: hash(label),
        model_version,
        uri: String::new(),
        royalty_receiver: Address::ZERO,
        royalty_bps,
    }
}

/// A private model with one version split 70/30 between two contributors; returns (model, version).
pub fn model_with_version<B: Backend>(
    ledger: &mut Ledger<B>,
    owner: Address,
    contributors: [Address; 2],
    community: bool,
) -> (U256, U256) {
    let model = ledger
        .register_model(owner, "house", community)
        .unwrap()
        .value;
    let version = ledger
        .add_version(
            owner,
            &VersionRequest {
                model,
                weights_hash: hash("weights"),
                dataset_manifest_hash: hash("dataset"),
                parent_version: U256::ZERO,
                uri: "autonomy://models/house/1".into(),
                contributors: vec![(contributors[0], 7_000), (contributors[1], 3_000)],
                access_price: auton(10),
            },
        )
        .unwrap()
        .value;
    (model, version)
}

pub fn deploy_wires_governance<B: Backend>(ledger: &mut Ledger<B>) {
    let d = ledger.deployment().clone();
    assert_eq!(
        ledger
            .read(d.registry, ModelRegistry::ownerCall {})
            .unwrap(),
        d.timelock
    );
    assert_eq!(
        ledger
            .read(d.marketplace, Marketplace::ownerCall {})
            .unwrap(),
        d.timelock
    );
    assert_eq!(
        ledger.read(d.nft, AssetNFT::ownerCall {}).unwrap(),
        d.timelock
    );
    assert_eq!(
        ledger
            .read(d.marketplace, Marketplace::treasuryCall {})
            .unwrap(),
        d.timelock
    );
    assert_ne!(d.splitter, Address::ZERO);
    let proposer = ledger
        .read(d.timelock, TimelockController::PROPOSER_ROLECall {})
        .unwrap();
    let admin = ledger
        .read(d.timelock, TimelockController::DEFAULT_ADMIN_ROLECall {})
        .unwrap();
    let has = |ledger: &Ledger<B>, role, account| {
        ledger
            .read(
                d.timelock,
                TimelockController::hasRoleCall { role, account },
            )
            .unwrap()
    };
    assert!(has(ledger, proposer, d.governor));
    assert!(
        !has(ledger, proposer, d.deployer),
        "the deployer must not propose to the timelock"
    );
    assert!(
        !has(ledger, admin, d.deployer),
        "the deployer gave up the timelock admin role"
    );
    let accounts = ledger.accounts();
    assert_eq!(ledger.balance(accounts[1]).unwrap(), auton(1_000_000));
    assert_eq!(ledger.balance(d.timelock).unwrap(), auton(100_000_000));
    assert_eq!(ledger.total_supply().unwrap(), auton(1_000_000_000));
    assert_eq!(ledger.fees().unwrap(), (250, 250));
    // Votes without a delegation step: receiving Auton delegated the account to itself.
    assert_eq!(ledger.delegates(accounts[1]).unwrap(), accounts[1]);
    assert_eq!(ledger.votes(accounts[1]).unwrap(), auton(1_000_000));
    // Protocol contracts do not vote.
    assert_eq!(ledger.votes(d.timelock).unwrap(), U256::ZERO);
}

pub fn mint_records_provenance_once<B: Backend>(ledger: &mut Ledger<B>) {
    let accounts = ledger.accounts();
    let (creator, holder, other) = (accounts[1], accounts[2], accounts[3]);
    let (_, version) = model_with_version(ledger, creator, [creator, other], false);
    let mut request = mint_request(holder, "potion.png", version, 500);
    request.uri = "ipfs://potion".into();
    let minted = ledger.mint(creator, &request).unwrap();
    assert_eq!(
        minted.value,
        U256::from_be_bytes(request.content_hash.0),
        "token id is the content hash"
    );
    let asset = ledger.asset(minted.value).unwrap();
    assert_eq!(asset.contentHash, request.content_hash);
    assert_eq!(asset.creator, creator);
    assert_eq!(asset.modelVersionId, version);
    assert_eq!(asset.royaltyReceiver, creator);
    assert_eq!(asset.royaltyBps, U256::from(500));
    assert_eq!(asset.uri, "ipfs://potion");
    assert_eq!(ledger.owner_of(minted.value).unwrap(), holder);
    assert_eq!(
        ledger.token_of_content(request.content_hash).unwrap(),
        minted.value
    );
    assert_eq!(
        ledger.royalty(minted.value, auton(100)).unwrap(),
        (creator, auton(5))
    );
    let event = &minted.receipt.events::<AssetNFT::AssetsMinted>()[0];
    assert_eq!(
        (event.creator, event.modelVersionId, event.count),
        (creator, version, U256::from(1))
    );

    // Once, ever: by anyone, to anyone.
    let again = ledger.mint(other, &mint_request(other, "potion.png", U256::ZERO, 0));
    let error = again.unwrap_err();
    assert_eq!(error.revert().unwrap().name(), "ContentAlreadyMinted");
    assert!(
        error
            .to_string()
            .contains(&request.content_hash.to_string()),
        "{error}"
    );
    assert!(
        error.to_string().starts_with("mint("),
        "the call is named: {error}"
    );

    assert_eq!(
        revert_name(ledger.mint(creator, &mint_request(holder, "greedy", U256::ZERO, 1_001))),
        "RoyaltyTooHigh"
    );
    assert_eq!(
        revert_name(ledger.mint(creator, &mint_request(holder, "orphan", U256::from(999), 0))),
        "UnknownModelVersion"
    );
    assert_eq!(revert_name(ledger.asset(U256::from(12345))), "UnknownAsset");
}

pub fn batch_mint<B: Backend>(ledger: &mut Ledger<B>) {
    let accounts = ledger.accounts();
    let creator = accounts[4];
    let batch = |content_hashes: Vec<B256>, uris: Vec<String>| BatchMintRequest {
        to: creator,
        content_hashes,
        model_version: U256::ZERO,
        uris,
        royalty_receiver: Address::ZERO,
        royalty_bps: 250,
    };
    let hashes: Vec<B256> = (0..5).map(|i| hash(&format!("tile-{i}"))).collect();
    let minted = ledger
        .mint_batch(creator, &batch(hashes.clone(), vec![]))
        .unwrap();
    assert_eq!(
        minted.value,
        hashes
            .iter()
            .map(|h| U256::from_be_bytes(h.0))
            .collect::<Vec<_>>()
    );
    assert_eq!(ledger.asset_count(creator).unwrap(), U256::from(5));
    let event = &minted.receipt.events::<AssetNFT::AssetsMinted>()[0];
    assert_eq!(
        (event.creator, event.count),
        (creator, U256::from(5)),
        "one provenance record for the whole batch"
    );
    for token in &minted.value {
        assert_eq!(ledger.asset(*token).unwrap().creator, creator);
        assert_eq!(ledger.owner_of(*token).unwrap(), creator);
    }
    let uri = ledger.asset(minted.value[0]).unwrap().uri;
    assert_eq!(
        uri,
        format!("autonomy://asset/{}", hashes[0]),
        "base URI + 0x hash"
    );
    let mismatched = batch(vec![hash("a"), hash("b")], vec!["x".into()]);
    assert_eq!(
        revert_name(ledger.mint_batch(creator, &mismatched)),
        "LengthMismatch"
    );
    // A batch that repeats a minted hash mints nothing.
    let mixed = batch(vec![hash("fresh"), hashes[2]], vec![]);
    assert_eq!(
        revert_name(ledger.mint_batch(creator, &mixed)),
        "ContentAlreadyMinted"
    );
    assert_eq!(ledger.asset_count(creator).unwrap(), U256::from(5));

    // Transfers and burns move ownership in the token's packed slot; a burnt hash stays minted.
    let (other, nft) = (accounts[5], ledger.deployment().nft);
    ledger
        .transfer_asset(creator, other, minted.value[1])
        .unwrap();
    assert_eq!(ledger.owner_of(minted.value[1]).unwrap(), other);
    assert_eq!(ledger.asset_count(creator).unwrap(), U256::from(4));
    assert_eq!(ledger.asset_count(other).unwrap(), U256::from(1));
    assert_eq!(
        revert_name(ledger.send(
            other,
            nft,
            AssetNFT::burnCall {
                tokenId: minted.value[0]
            }
        )),
        "ERC721InsufficientApproval",
        "only the owner (or an approved account) burns"
    );
    ledger
        .send(
            creator,
            nft,
            AssetNFT::burnCall {
                tokenId: minted.value[0],
            },
        )
        .unwrap();
    assert_eq!(
        revert_name(ledger.owner_of(minted.value[0])),
        "ERC721NonexistentToken"
    );
    assert_eq!(ledger.asset_count(creator).unwrap(), U256::from(3));
    assert_eq!(
        ledger.asset(minted.value[0]).unwrap().creator,
        creator,
        "the provenance record outlives the token"
    );
    assert_eq!(
        revert_name(ledger.mint_batch(creator, &batch(vec![hashes[0]], vec![]))),
        "ContentAlreadyMinted",
        "a burnt content hash is never minted again"
    );
}

pub fn marketplace_sale_pays_everyone<B: Backend>(ledger: &mut Ledger<B>) {
    let accounts = ledger.accounts();
    let (creator, seller, buyer, c1, c2) = (
        accounts[1],
        accounts[2],
        accounts[3],
        accounts[4],
        accounts[5],
    );
    let d = ledger.deployment().clone();
    let (_, version) = model_with_version(ledger, creator, [c1, c2], false);
    let token = ledger
        .mint(creator, &mint_request(seller, "sword.png", version, 500))
        .unwrap()
        .value;
    ledger.approve_assets(seller, d.marketplace, true).unwrap();
    let price = auton(1_000);
    ledger.list(seller, token, price).unwrap();
    assert_eq!(ledger.listing(token).unwrap().seller, seller);
    assert_eq!(
        ledger.listings().unwrap(),
        vec![(token, seller, price)],
        "read back from the Listed events"
    );

    assert_eq!(
        revert_name(ledger.buy(buyer, token, price)),
        "ERC20InsufficientAllowance"
    );
    ledger.approve(buyer, d.marketplace, price).unwrap();
    assert_eq!(
        revert_name(ledger.buy(buyer, token, price - U256::from(1))),
        "PriceAboveMax"
    );
    let buyer_before = ledger.balance(buyer).unwrap();
    let quote = ledger.payout(token, price).unwrap();
    let sold = ledger.buy(buyer, token, price).unwrap().value;
    assert_eq!(
        (
            quote.proceeds,
            quote.royalty,
            quote.contributor_fee,
            quote.fee
        ),
        (sold.proceeds, sold.royalty, sold.contributorFee, sold.fee),
        "the quoted payout is what the sale paid"
    );
    assert_eq!(quote.royalty_receiver, sold.royaltyReceiver);
    assert_eq!(ledger.owner_of(token).unwrap(), buyer);
    assert_eq!(
        ledger.assets_owned_by(buyer).unwrap(),
        vec![token],
        "read back from Transfer events"
    );
    assert!(ledger.assets_owned_by(seller).unwrap().is_empty());
    assert_eq!(ledger.balance(buyer).unwrap(), buyer_before - price);
    assert_eq!(sold.royalty, auton(50));
    assert_eq!(sold.contributorFee, auton(25));
    assert_eq!(sold.fee, auton(25));
    assert_eq!(sold.proceeds, auton(900));
    assert_eq!(
        sold.proceeds + sold.royalty + sold.contributorFee + sold.fee,
        price
    );
    assert_eq!(ledger.owed(seller).unwrap(), auton(900));
    assert_eq!(ledger.owed(creator).unwrap(), auton(50));
    assert_eq!(ledger.owed(d.timelock).unwrap(), auton(25));
    assert_eq!(
        ledger.listing(token).unwrap().seller,
        Address::ZERO,
        "a sale ends the listing"
    );
    assert!(ledger.listings().unwrap().is_empty());

    // Contributors are paid through the splitter, 70/30.
    assert_eq!(
        ledger.releasable(version, c1).unwrap(),
        auton(25) * U256::from(7) / U256::from(10)
    );
    let released = ledger.release(buyer, version, c2).unwrap().value;
    assert_eq!(released, auton(25) * U256::from(3) / U256::from(10));
    let (received, total_released) = ledger.revenue(version).unwrap();
    assert_eq!(
        received,
        total_released
            + ledger.releasable(version, c1).unwrap()
            + ledger.releasable(version, c2).unwrap()
    );
    assert_eq!(
        revert_name(ledger.release(buyer, version, c2)),
        "NothingToRelease"
    );

    // Pull payments: anyone can push what is owed to its owner.
    let seller_before = ledger.balance(seller).unwrap();
    assert_eq!(ledger.withdraw(buyer, seller).unwrap().value, auton(900));
    assert_eq!(ledger.balance(seller).unwrap(), seller_before + auton(900));
    assert_eq!(
        revert_name(ledger.withdraw(buyer, seller)),
        "NothingToWithdraw"
    );
    let market_balance = ledger.balance(d.marketplace).unwrap();
    assert_eq!(
        market_balance,
        ledger.owed(creator).unwrap() + ledger.owed(d.timelock).unwrap(),
        "marketplace holds exactly what it owes"
    );
}

pub fn listings_go_stale_and_guard_sellers<B: Backend>(ledger: &mut Ledger<B>) {
    let accounts = ledger.accounts();
    let (seller, friend, buyer, stranger) = (accounts[1], accounts[2], accounts[3], accounts[4]);
    let market = ledger.deployment().marketplace;
    let token = ledger
        .mint(seller, &mint_request(seller, "shield.png", U256::ZERO, 0))
        .unwrap()
        .value;
    assert_eq!(
        revert_name(ledger.list(seller, token, auton(5))),
        "MarketplaceNotApproved"
    );
    ledger.approve_assets(seller, market, true).unwrap();
    assert_eq!(
        revert_name(ledger.list(stranger, token, auton(5))),
        "NotTokenOwner"
    );
    assert_eq!(
        revert_name(ledger.list(seller, token, U256::ZERO)),
        "InvalidPrice"
    );
    ledger.list(seller, token, auton(5)).unwrap();
    assert_eq!(revert_name(ledger.cancel(stranger, token)), "NotSeller");

    // The token moves outside the marketplace: the listing cannot be filled.
    ledger.transfer_asset(seller, friend, token).unwrap();
    ledger.approve(buyer, market, auton(5)).unwrap();
    let error = ledger.buy(buyer, token, auton(5)).unwrap_err();
    assert_eq!(error.revert().unwrap().name(), "StaleListing");
    assert!(
        error.to_string().contains(&format!("{friend:?}")),
        "names the new owner: {error}"
    );
    assert!(
        ledger.listings().unwrap().is_empty(),
        "a stale listing is not live"
    );
    // The new owner's listing replaces it.
    ledger.approve_assets(friend, market, true).unwrap();
    ledger.list(friend, token, auton(4)).unwrap();
    ledger.buy(buyer, token, auton(5)).unwrap();
    assert_eq!(ledger.owner_of(token).unwrap(), buyer);
    assert_eq!(
        ledger.owed(friend).unwrap(),
        auton(4) * U256::from(9_750) / U256::from(10_000)
    );

    // Cancel ends a listing.
    ledger.approve_assets(buyer, market, true).unwrap();
    ledger.list(buyer, token, auton(7)).unwrap();
    ledger.cancel(buyer, token).unwrap();
    ledger.approve(seller, market, auton(7)).unwrap();
    assert_eq!(
        revert_name(ledger.buy(seller, token, auton(7))),
        "NotListed"
    );
}

pub fn access_sales_pay_the_split<B: Backend>(ledger: &mut Ledger<B>) {
    let accounts = ledger.accounts();
    let (owner, buyer, c1, c2) = (accounts[1], accounts[2], accounts[3], accounts[4]);
    let (_, version) = model_with_version(ledger, owner, [c1, c2], false);
    let registry = ledger.deployment().registry;
    assert!(!ledger.has_access(buyer, version).unwrap());
    ledger.approve(buyer, registry, auton(10)).unwrap();
    ledger.buy_access(buyer, version).unwrap();
    assert!(ledger.has_access(buyer, version).unwrap());
    assert_eq!(ledger.revenue(version).unwrap().0, auton(10));
    assert_eq!(ledger.releasable(version, c1).unwrap(), auton(7));
    assert_eq!(ledger.releasable(version, c2).unwrap(), auton(3));
    assert_eq!(
        revert_name(ledger.buy_access(buyer, version)),
        "AlreadyHasAccess"
    );
}

pub fn registry_checks_shares_and_control<B: Backend>(ledger: &mut Ledger<B>) {
    let accounts = ledger.accounts();
    let (owner, stranger, c1) = (accounts[1], accounts[2], accounts[3]);
    let (model, version) = model_with_version(ledger, owner, [owner, c1], false);
    let mut request = VersionRequest {
        model,
        weights_hash: hash("w2"),
        dataset_manifest_hash: hash("d2"),
        parent_version: version,
        uri: "autonomy://models/house/2".into(),
        contributors: vec![(owner, 6_000), (c1, 3_000)],
        access_price: U256::ZERO,
    };
    assert_eq!(
        revert_name(ledger.add_version(owner, &request)),
        "SharesNotTotal"
    );
    request.contributors = vec![(owner, 10_000)];
    assert_eq!(
        revert_name(ledger.add_version(stranger, &request)),
        "NotModelController"
    );
    let v2 = ledger.add_version(owner, &request).unwrap().value;
    assert_eq!(
        ledger.version(v2).unwrap().parentVersion,
        version.to::<u64>()
    );
    assert_eq!(
        revert_name(ledger.set_active_version(stranger, model, v2)),
        "NotModelController"
    );
    ledger.set_active_version(owner, model, v2).unwrap();
    assert_eq!(ledger.model(model).unwrap().activeVersion, v2.to::<u64>());
}

/// A community model's active version moves only through a proposal that passes, waits in the
/// timelock and is executed; its registrant cannot move it, nor can anyone call the timelock directly.
pub fn governance_moves_community_models<B: Backend>(ledger: &mut Ledger<B>) {
    let accounts = ledger.accounts();
    let (whale, registrant, voter) = (accounts[0], accounts[1], accounts[2]);
    let d = ledger.deployment().clone();
    let (model, v1) = model_with_version(ledger, registrant, [registrant, voter], true);
    assert_eq!(
        revert_name(ledger.set_active_version(registrant, model, v1)),
        "NotModelController"
    );

    let proposal = Proposal::new(
        vec![Action::set_active_version(&d, model, v1)],
        "Activate house v1",
    );
    let id = ledger.propose(registrant, &proposal).unwrap().value;
    assert_eq!(ledger.proposal_id(&proposal).unwrap(), id);
    assert_eq!(
        ledger.proposals().unwrap(),
        vec![(id, proposal.clone())],
        "rebuilt from its event"
    );
    assert_eq!(ledger.proposal_state(id).unwrap(), ProposalState::Pending);
    assert_eq!(ledger.proposal_quorum(id).unwrap(), None, "no snapshot yet");
    assert_eq!(
        revert_name(ledger.vote(whale, id, Support::For)),
        "GovernorUnexpectedProposalState"
    );
    ledger.advance_time(61).unwrap();
    assert_eq!(ledger.proposal_state(id).unwrap(), ProposalState::Active);
    assert_eq!(
        ledger.proposal_quorum(id).unwrap(),
        Some(
            ledger.total_supply().unwrap() * U256::from(SuiteConfig::dev().quorum_percent)
                / U256::from(100)
        ),
        "a fixed percentage of the supply at the snapshot"
    );
    ledger.vote(whale, id, Support::For).unwrap();
    ledger.vote(voter, id, Support::Against).unwrap();
    let tally = ledger.proposal_votes(id).unwrap();
    assert_eq!(tally.for_votes, ledger.votes(whale).unwrap());
    assert_eq!(tally.against, ledger.votes(voter).unwrap());
    assert_eq!(tally.abstain, U256::ZERO);
    assert_eq!(
        revert_name(ledger.vote(voter, id, Support::For)),
        "GovernorAlreadyCastVote"
    );
    assert_eq!(
        revert_name(ledger.queue(whale, &proposal)),
        "GovernorUnexpectedProposalState"
    );
    ledger.advance_time(601).unwrap();
    assert_eq!(ledger.proposal_state(id).unwrap(), ProposalState::Succeeded);
    assert_eq!(ledger.proposal_eta(id).unwrap(), None);
    ledger.queue(voter, &proposal).unwrap();
    assert_eq!(ledger.proposal_state(id).unwrap(), ProposalState::Queued);
    assert_eq!(
        ledger.proposal_eta(id).unwrap(),
        Some(ledger.timestamp().unwrap() + ledger.timelock_delay().unwrap()),
        "executable one timelock delay after queueing"
    );
    assert_eq!(
        revert_name(ledger.execute(voter, &proposal)),
        "TimelockUnexpectedOperationState"
    );

    // Nobody but the governor may schedule on the timelock.
    let bypass = TimelockController::scheduleCall {
        target: d.registry,
        value: U256::ZERO,
        data: proposal.actions[0].calldata.clone(),
        predecessor: B256::ZERO,
        salt: B256::ZERO,
        delay: U256::from(60),
    };
    assert_eq!(
        revert_name(ledger.send(whale, d.timelock, bypass)),
        "AccessControlUnauthorizedAccount"
    );

    ledger
        .advance_time(ledger.timelock_delay().unwrap() + 1)
        .unwrap();
    ledger.execute(voter, &proposal).unwrap();
    assert_eq!(ledger.proposal_state(id).unwrap(), ProposalState::Executed);
    assert_eq!(ledger.model(model).unwrap().activeVersion, v1.to::<u64>());
}

/// Votes count as checkpointed at the proposal's snapshot (proposal time + voting delay): Auton
/// received once voting is open (a flash loan taken to vote, say) adds nothing.
pub fn votes_count_at_the_snapshot<B: Backend>(ledger: &mut Ledger<B>) {
    let accounts = ledger.accounts();
    let (whale, borrower) = (accounts[0], accounts[6]);
    let d = ledger.deployment().clone();
    let proposal = Proposal::new(vec![Action::set_fees(&d, 300, 250)], "Raise the fee to 3%");
    let id = ledger.propose(whale, &proposal).unwrap().value;
    let (snapshot, _) = ledger.proposal_window(id).unwrap();
    ledger.advance_time(61).unwrap();
    assert!(ledger.timestamp().unwrap() > snapshot);
    ledger
        .transfer(whale, borrower, auton(400_000_000))
        .unwrap();
    assert!(ledger.votes(borrower).unwrap() > auton(400_000_000));
    assert_eq!(
        ledger.past_votes(borrower, snapshot).unwrap(),
        auton(1_000_000)
    );
    let receipt = ledger.vote(borrower, id, Support::Against).unwrap();
    let cast = &receipt.events::<autonomy_contracts::bindings::AutonomyGovernor::VoteCast>()[0];
    assert_eq!(
        cast.weight,
        auton(1_000_000),
        "weight is the snapshot's, not today's"
    );
}

/// ERC-2612: a permit lets a relayer set an allowance for the signer; replaying it fails.
pub fn permits_work_once<B: Backend>(ledger: &mut Ledger<B>) {
    let accounts = ledger.accounts();
    let (owner, spender, relayer) = (accounts[7], accounts[8], accounts[9]);
    let token = ledger.deployment().token;
    let deadline = U256::from(ledger.timestamp().unwrap() + 3_600);
    let permit = ledger
        .sign_permit(owner, spender, auton(42), deadline)
        .unwrap();
    ledger.send(relayer, token, permit.clone()).unwrap();
    assert_eq!(ledger.allowance(owner, spender).unwrap(), auton(42));
    // The nonce moved on: the same signature now recovers to someone else.
    assert_eq!(
        revert_name(ledger.send(relayer, token, permit)),
        "ERC2612InvalidSigner"
    );
    let expired = U256::from(ledger.timestamp().unwrap() - 1);
    assert_eq!(
        revert_name(ledger.permit(owner, spender, auton(1), expired, relayer)),
        "ERC2612ExpiredSignature"
    );
    ledger
        .permit(owner, spender, auton(7), deadline, relayer)
        .unwrap();
    assert_eq!(ledger.allowance(owner, spender).unwrap(), auton(7));
}
