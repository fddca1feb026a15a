//! Attacks the suite must withstand. Each scenario fails if its guard is removed.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol_types::{SolCall, SolConstructor};
use autonomy_contracts::bindings::{
    AssetNFT, AutonToken, AutonomyGovernor, HookedERC20, Marketplace, ModelRegistry,
    ReentrancyProbe, RevenueSplitter, TimelockController,
};
use autonomy_contracts::{
    Action, Backend, Ledger, Proposal, Receipt, Support, VersionRequest, auton,
};

use super::{hash, mint_request, revert_name};

/// Takes `proposal` through vote, queue and execution with the deployer's votes; returns the
/// execution's outcome.
pub fn pass<B: Backend>(
    ledger: &mut Ledger<B>,
    proposal: &Proposal,
) -> Result<Receipt, autonomy_contracts::LedgerError> {
    let whale = ledger.accounts()[0];
    let id = ledger.propose(whale, proposal).unwrap().value;
    ledger.advance_time(61).unwrap();
    ledger.vote(whale, id, Support::For).unwrap();
    ledger.advance_time(601).unwrap();
    ledger.queue(whale, proposal).unwrap();
    ledger
        .advance_time(ledger.timelock_delay().unwrap() + 1)
        .unwrap();
    ledger.execute(whale, proposal)
}

fn deploy_probe<B: Backend>(ledger: &mut Ledger<B>, from: Address) -> Address {
    ledger
        .deploy_contract(from, "ReentrancyProbe", ReentrancyProbe::BYTECODE.clone())
        .unwrap()
        .value
}

/// A buyer contract that re-enters `buy` from `onERC721Received` is stopped by the guard, and the
/// sale it was part of is undone.
pub fn reentrant_buy_is_refused<B: Backend>(ledger: &mut Ledger<B>) {
    let accounts = ledger.accounts();
    let (whale, seller, attacker) = (accounts[0], accounts[1], accounts[2]);
    let d = ledger.deployment().clone();
    let first = ledger
        .mint(seller, &mint_request(seller, "first", U256::ZERO, 0))
        .unwrap()
        .value;
    let second = ledger
        .mint(seller, &mint_request(seller, "second", U256::ZERO, 0))
        .unwrap()
        .value;
    ledger.approve_assets(seller, d.marketplace, true).unwrap();
    ledger.list(seller, first, auton(10)).unwrap();
    ledger.list(seller, second, auton(10)).unwrap();

    let probe = deploy_probe(ledger, attacker);
    ledger.transfer(whale, probe, auton(100)).unwrap();
    let approve = AutonToken::approveCall {
        spender: d.marketplace,
        value: U256::MAX,
    }
    .abi_encode();
    ledger
        .send(
            attacker,
            probe,
            ReentrancyProbe::execCall {
                target: d.token,
                data: approve.into(),
            },
        )
        .unwrap();
    for reentry in [
        Marketplace::buyCall {
            tokenId: second,
            maxPrice: auton(10),
        }
        .abi_encode(),
        Marketplace::withdrawCall { account: seller }.abi_encode(),
    ] {
        ledger
            .send(
                attacker,
                probe,
                ReentrancyProbe::armCall {
                    target: d.marketplace,
                    data: reentry.into(),
                },
            )
            .unwrap();
        let buy = Marketplace::buyCall {
            tokenId: first,
            maxPrice: auton(10),
        }
        .abi_encode();
        let result = ledger.send(
            attacker,
            probe,
            ReentrancyProbe::execCall {
                target: d.marketplace,
                data: buy.into(),
            },
        );
        assert_eq!(revert_name(result), "ReentrancyGuardReentrantCall");
        assert_eq!(ledger.owner_of(first).unwrap(), seller);
        assert_eq!(ledger.balance(probe).unwrap(), auton(100));
    }
    // Unarmed, the same contract buys normally.
    ledger
        .send(
            attacker,
            probe,
            ReentrancyProbe::armCall {
                target: Address::ZERO,
                data: Bytes::new(),
            },
        )
        .unwrap();
    let buy = Marketplace::buyCall {
        tokenId: first,
        maxPrice: auton(10),
    }
    .abi_encode();
    ledger
        .send(
            attacker,
            probe,
            ReentrancyProbe::execCall {
                target: d.marketplace,
                data: buy.into(),
            },
        )
        .unwrap();
    assert_eq!(ledger.owner_of(first).unwrap(), probe);
}

/// A receiver that re-mints the same content hash from `onERC721Received` finds it taken: the
/// record is written before the callback.
pub fn reentrant_mint_cannot_double_mint<B: Backend>(ledger: &mut Ledger<B>) {
    let attacker = ledger.accounts()[3];
    let nft = ledger.deployment().nft;
    let probe = deploy_probe(ledger, attacker);
    let content = hash("twice");
    let mint = AssetNFT::mintCall {
        to: probe,
        contentHash: content,
        modelVersionId: U256::ZERO,
        uri: String::new(),
        royaltyReceiver: Address::ZERO,
        royaltyBps: 0,
    }
    .abi_encode();
    ledger
        .send(
            attacker,
            probe,
            ReentrancyProbe::armCall {
                target: nft,
                data: mint.clone().into(),
            },
        )
        .unwrap();
    let result = ledger.send(
        attacker,
        probe,
        ReentrancyProbe::execCall {
            target: nft,
            data: mint.into(),
        },
    );
    assert_eq!(revert_name(result), "ContentAlreadyMinted");
    assert_eq!(
        revert_name(ledger.token_of_content(content)),
        "UnknownAsset",
        "nothing was minted"
    );
}

/// A suite paid in [`HookedERC20`], a token that calls back into whatever it is armed with
/// while it moves: registry, splitter, NFT and marketplace, deployed by `deployer`.
struct HookedSuite {
    token: Address,
    registry: Address,
    splitter: Address,
    nft: Address,
    marketplace: Address,
    version: U256,
}

fn deploy_hooked_suite<B: Backend>(
    ledger: &mut Ledger<B>,
    deployer: Address,
    contributor: Address,
) -> HookedSuite {
    let mut create = |name: &str, code: &Bytes, args: Vec<u8>| {
        let code = [code.as_ref(), &args].concat();
        ledger
            .deploy_contract(deployer, name, code.into())
            .unwrap()
            .value
    };
    let token = create("HookedERC20", &HookedERC20::BYTECODE, vec![]);
    let registry = create(
        "ModelRegistry",
        &ModelRegistry::BYTECODE,
        ModelRegistry::constructorCall {
            token_: token,
            governance: deployer,
        }
        .abi_encode(),
    );
    let nft = create(
        "AssetNFT",
        &AssetNFT::BYTECODE,
        AssetNFT::constructorCall {
            registry_: registry,
            baseURI: String::new(),
            initialOwner: deployer,
        }
        .abi_encode(),
    );
    let marketplace = create(
        "Marketplace",
        &Marketplace::BYTECODE,
        Marketplace::constructorCall {
            nft_: nft,
            treasury_: deployer,
            initialOwner: deployer,
            feeBps_: 100,
            contributorFeeBps_: 100,
        }
        .abi_encode(),
    );
    let splitter = ledger
        .read(registry, ModelRegistry::splitterCall {})
        .unwrap();
    ledger
        .send(
            deployer,
            registry,
            ModelRegistry::registerModelCall {
                name: "m".into(),
                community: false,
            },
        )
        .unwrap();
    let add = ModelRegistry::addVersionCall {
        modelId: U256::from(1),
        weightsHash: hash("w"),
        datasetManifestHash: hash("d"),
        parentVersion: U256::ZERO,
        uri: String::new(),
        contributors: vec![ModelRegistry::Contributor {
            account: contributor,
            sharesBps: 10_000,
        }],
        accessPrice: U256::from(1_000),
    };
    ledger.send(deployer, registry, add).unwrap();
    HookedSuite {
        token,
        registry,
        splitter,
        nft,
        marketplace,
        version: U256::from(1),
    }
}

fn arm<B: Backend>(
    ledger: &mut Ledger<B>,
    from: Address,
    hooked: Address,
    target: Address,
    data: Vec<u8>,
) {
    ledger
        .send(
            from,
            hooked,
            HookedERC20::armCall {
                target,
                data: data.into(),
            },
        )
        .unwrap();
}

/// A payment token that calls back while it moves cannot make the splitter pay twice nor
/// re-enter the marketplace in the middle of a sale.
pub fn malicious_token_cannot_reenter<B: Backend>(ledger: &mut Ledger<B>) {
    let accounts = ledger.accounts();
    let (deployer, buyer, contributor, seller) =
        (accounts[0], accounts[1], accounts[2], accounts[3]);
    let s = deploy_hooked_suite(ledger, deployer, contributor);
    let balance = |ledger: &Ledger<B>, account| {
        ledger
            .read(s.token, HookedERC20::balanceOfCall { account })
            .unwrap()
    };
    ledger
        .send(
            deployer,
            s.token,
            HookedERC20::mintCall {
                to: buyer,
                amount: U256::from(1_000_000),
            },
        )
        .unwrap();
    ledger
        .send(
            buyer,
            s.token,
            HookedERC20::approveCall {
                spender: s.registry,
                value: U256::MAX,
            },
        )
        .unwrap();
    ledger
        .send(
            buyer,
            s.token,
            HookedERC20::approveCall {
                spender: s.marketplace,
                value: U256::MAX,
            },
        )
        .unwrap();
    ledger
        .send(
            buyer,
            s.registry,
            ModelRegistry::buyAccessCall {
                versionId: s.version,
            },
        )
        .unwrap();

    // Splitter: the payout calls release again; the second call finds nothing owed.
    let release = RevenueSplitter::releaseCall {
        versionId: s.version,
        account: contributor,
    };
    arm(ledger, deployer, s.token, s.splitter, release.abi_encode());
    assert_eq!(
        revert_name(ledger.send(buyer, s.splitter, release.clone())),
        "NothingToRelease"
    );
    assert_eq!(balance(ledger, s.splitter), U256::from(1_000));
    arm(ledger, deployer, s.token, Address::ZERO, vec![]);
    ledger.send(buyer, s.splitter, release).unwrap();
    assert_eq!(
        balance(ledger, contributor),
        U256::from(1_000),
        "paid exactly once"
    );
    assert_eq!(balance(ledger, s.splitter), U256::ZERO);

    // Marketplace: taking the price calls back into buy and withdraw; the guard stops both.
    let mut tokens = Vec::new();
    for label in ["hooked-a", "hooked-b"] {
        let mint = AssetNFT::mintCall {
            to: seller,
            contentHash: hash(label),
            modelVersionId: s.version,
            uri: String::new(),
            royaltyReceiver: Address::ZERO,
            royaltyBps: 500,
        };
        ledger.send(seller, s.nft, mint).unwrap();
        let id = U256::from_be_bytes(hash(label).0);
        tokens.push(id);
    }
    ledger
        .send(
            seller,
            s.nft,
            AssetNFT::setApprovalForAllCall {
                operator: s.marketplace,
                approved: true,
            },
        )
        .unwrap();
    for id in &tokens {
        ledger
            .send(
                seller,
                s.marketplace,
                Marketplace::listCall {
                    tokenId: *id,
                    price: U256::from(10_000),
                },
            )
            .unwrap();
    }
    let buy = |id| Marketplace::buyCall {
        tokenId: id,
        maxPrice: U256::from(10_000),
    };
    for reentry in [
        buy(tokens[1]).abi_encode(),
        Marketplace::withdrawCall { account: seller }.abi_encode(),
    ] {
        arm(ledger, deployer, s.token, s.marketplace, reentry);
        assert_eq!(
            revert_name(ledger.send(buyer, s.marketplace, buy(tokens[0]))),
            "ReentrancyGuardReentrantCall"
        );
        let owner = ledger
            .read(s.nft, AssetNFT::ownerOfCall { tokenId: tokens[0] })
            .unwrap();
        assert_eq!(owner, seller, "the sale was undone");
    }
    arm(ledger, deployer, s.token, Address::ZERO, vec![]);
    ledger.send(buyer, s.marketplace, buy(tokens[0])).unwrap();
    let owed = |ledger: &Ledger<B>, account| {
        ledger
            .read(s.marketplace, Marketplace::owedCall { account })
            .unwrap()
    };
    assert_eq!(
        owed(ledger, seller),
        U256::from(9_800),
        "proceeds and royalty"
    );
    assert_eq!(owed(ledger, deployer), U256::from(100), "treasury fee");
    assert_eq!(
        balance(ledger, s.marketplace),
        U256::from(9_900),
        "holds exactly what it owes"
    );
    assert_eq!(
        balance(ledger, s.splitter),
        U256::from(100),
        "contributors' fee"
    );
}

/// Nobody but governance changes what governance owns, and nothing can be re-initialised.
pub fn only_governance_changes_the_rules<B: Backend>(ledger: &mut Ledger<B>) {
    let accounts = ledger.accounts();
    let (deployer, stranger) = (accounts[0], accounts[1]);
    let d = ledger.deployment().clone();
    for from in [deployer, stranger] {
        assert_eq!(
            unauthorised(
                ledger,
                from,
                d.marketplace,
                Marketplace::setFeesCall {
                    feeBps_: 0,
                    contributorFeeBps_: 0
                }
            ),
            "OwnableUnauthorizedAccount"
        );
        assert_eq!(
            unauthorised(
                ledger,
                from,
                d.marketplace,
                Marketplace::setTreasuryCall { treasury_: from }
            ),
            "OwnableUnauthorizedAccount"
        );
        assert_eq!(
            unauthorised(
                ledger,
                from,
                d.registry,
                ModelRegistry::transferOwnershipCall { newOwner: from }
            ),
            "OwnableUnauthorizedAccount"
        );
        assert_eq!(
            unauthorised(
                ledger,
                from,
                d.nft,
                AssetNFT::setBaseURICall {
                    baseURI: "evil://".into()
                }
            ),
            "OwnableUnauthorizedAccount"
        );
        assert_eq!(
            unauthorised(
                ledger,
                from,
                d.timelock,
                TimelockController::grantRoleCall {
                    role: B256::ZERO,
                    account: from
                }
            ),
            "AccessControlUnauthorizedAccount"
        );
        assert_eq!(
            unauthorised(
                ledger,
                from,
                d.governor,
                AutonomyGovernor::updateTimelockCall { newTimelock: from }
            ),
            "GovernorOnlyExecutor"
        );
        assert_eq!(
            unauthorised(
                ledger,
                from,
                d.governor,
                AutonomyGovernor::relayCall {
                    target: d.token,
                    value: U256::ZERO,
                    data: Bytes::new()
                }
            ),
            "GovernorOnlyExecutor"
        );
    }
}

/// The custom error `call` from `from` reverts with, or "succeeded".
fn unauthorised<B: Backend, C: SolCall>(
    ledger: &mut Ledger<B>,
    from: Address,
    to: Address,
    call: C,
) -> &'static str {
    match ledger.send(from, to, call) {
        Err(error) => error
            .revert()
            .map(|revert| revert.name())
            .unwrap_or("not a revert"),
        Ok(_) => "succeeded",
    }
}

/// Fees stay within their caps even when governance asks for more; within them, governance
/// sets them.
pub fn governance_is_held_to_the_caps<B: Backend>(ledger: &mut Ledger<B>) {
    let d = ledger.deployment().clone();
    let greedy = Proposal::new(vec![Action::set_fees(&d, 1_001, 0)], "Take 10.01%");
    assert_eq!(revert_name(pass(ledger, &greedy)), "FeeTooHigh");
    let fair = Proposal::new(
        vec![Action::set_fees(&d, 1_000, 100)],
        "Fee 10%, contributors 1%",
    );
    pass(ledger, &fair).unwrap();
    assert_eq!(ledger.fees().unwrap(), (1_000, 100));
}

/// Deposits that do not divide by 10,000 leave no dust: every wei received is releasable, and
/// once all is released the splitter holds nothing for the version.
pub fn splitter_leaves_no_dust<B: Backend>(ledger: &mut Ledger<B>) {
    let accounts = ledger.accounts();
    let (owner, c) = (accounts[1], [accounts[2], accounts[3], accounts[4]]);
    let model = ledger.register_model(owner, "dusty", false).unwrap().value;
    let price = U256::from(1_000_003u64);
    let version = ledger
        .add_version(
            owner,
            &VersionRequest {
                model,
                weights_hash: hash("w"),
                dataset_manifest_hash: hash("d"),
                parent_version: U256::ZERO,
                uri: String::new(),
                contributors: vec![(c[0], 3_333), (c[1], 3_333), (c[2], 3_334)],
                access_price: price,
            },
        )
        .unwrap()
        .value;
    let registry = ledger.deployment().registry;
    for buyer in [accounts[5], accounts[6], accounts[7]] {
        ledger.approve(buyer, registry, price).unwrap();
        ledger.buy_access(buyer, version).unwrap();
    }
    let (received, _) = ledger.revenue(version).unwrap();
    assert_eq!(received, price * U256::from(3));
    let owed: U256 = c
        .iter()
        .map(|account| ledger.releasable(version, *account).unwrap())
        .sum();
    assert_eq!(owed, received, "every wei is owed to someone");
    let splitter = ledger.deployment().splitter;
    let before = ledger.balance(splitter).unwrap();
    for account in c {
        ledger.release(owner, version, account).unwrap();
    }
    assert_eq!(ledger.revenue(version).unwrap(), (received, received));
    assert_eq!(
        ledger.balance(splitter).unwrap(),
        before - received,
        "nothing of it stays behind"
    );
}
