//! Property tests on the embedded chain: random sequences of mint / list / buy / cancel /
//! transfer / withdraw / release / delegate / vote by several accounts, with the economy's
//! invariants checked after every step. Reverts are allowed (most random steps are invalid);
//! broken books are not.

mod suite;

use alloy::primitives::{Address, U256};
use autonomy_contracts::{Action, Embedded, Ledger, Proposal, Support, auton};
use proptest::prelude::*;

const ACTORS: usize = 5;
const ASSETS: usize = 6;

#[derive(Debug, Clone)]
enum Step {
    Mint {
        actor: usize,
        asset: usize,
        with_model: bool,
    },
    List {
        actor: Actor,
        asset: usize,
        price: u64,
    },
    Cancel {
        actor: Actor,
        asset: usize,
    },
    Buy {
        actor: usize,
        asset: usize,
        max_price: u64,
    },
    TransferAsset {
        actor: Actor,
        to: usize,
        asset: usize,
    },
    TransferAuton {
        actor: usize,
        to: usize,
        amount: u64,
    },
    Withdraw {
        actor: usize,
        account: usize,
    },
    Release {
        actor: usize,
        contributor: usize,
    },
    Delegate {
        actor: usize,
        to: usize,
    },
    Vote {
        actor: usize,
        support: u8,
    },
    Wait {
        seconds: u64,
    },
}

/// Who acts on an asset: mostly its owner (so listings and sales happen), sometimes anyone.
#[derive(Debug, Clone, Copy)]
enum Actor {
    Owner,
    Account(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let actor = || 0..ACTORS;
    let asset = || 0..ASSETS;
    let on_asset =
        || prop_oneof![3 => Just(Actor::Owner), 1 => (0..ACTORS).prop_map(Actor::Account)];
    prop_oneof![
        2 => (actor(), asset(), any::<bool>()).prop_map(|(actor, asset, with_model)| Step::Mint {
            actor,
            asset,
            with_model
        }),
        3 => (on_asset(), asset(), 1..5_000u64).prop_map(|(actor, asset, price)| Step::List {
            actor,
            asset,
            price
        }),
        1 => (on_asset(), asset()).prop_map(|(actor, asset)| Step::Cancel { actor, asset }),
        3 => (actor(), asset(), 1..10_000u64).prop_map(|(actor, asset, max_price)| Step::Buy {
            actor,
            asset,
            max_price
        }),
        1 => (on_asset(), actor(), asset()).prop_map(|(actor, to, asset)| Step::TransferAsset {
            actor,
            to,
            asset
        }),
        1 => (actor(), actor(), 0..2_000_000u64).prop_map(|(actor, to, amount)| Step::TransferAuton {
            actor,
            to,
            amount
        }),
        1 => (actor(), actor()).prop_map(|(actor, account)| Step::Withdraw { actor, account }),
        1 => (actor(), 0..2usize).prop_map(|(actor, contributor)| Step::Release { actor, contributor }),
        1 => (actor(), actor()).prop_map(|(actor, to)| Step::Delegate { actor, to }),
        1 => (actor(), 0..3u8).prop_map(|(actor, support)| Step::Vote { actor, support }),
        1 => (1..400u64).prop_map(|seconds| Step::Wait { seconds }),
    ]
}

struct World {
    ledger: Ledger<Embedded>,
    actors: Vec<Address>,
    contributors: [Address; 2],
    version: U256,
    proposal: U256,
    minted: usize,
}

impl World {
    fn new() -> Self {
        let mut ledger = Ledger::in_memory().unwrap();
        let accounts = ledger.accounts();
        let actors: Vec<Address> = accounts[1..=ACTORS].to_vec();
        let contributors = [accounts[6], accounts[7]];
        let (_, version) = suite::model_with_version(&mut ledger, accounts[8], contributors, false);
        let d = ledger.deployment().clone();
        for actor in &actors {
            ledger.approve(*actor, d.marketplace, U256::MAX).unwrap();
            ledger.approve_assets(*actor, d.marketplace, true).unwrap();
        }
        let proposal = Proposal::new(vec![Action::set_fees(&d, 100, 100)], "Lower fees");
        let proposal = ledger.propose(accounts[0], &proposal).unwrap().value;
        ledger.advance_time(61).unwrap();
        Self {
            ledger,
            actors,
            contributors,
            version,
            proposal,
            minted: 0,
        }
    }

    fn apply(&mut self, step: &Step) {
        let actors = self.actors.clone();
        let ledger = &mut self.ledger;
        let who = |ledger: &Ledger<Embedded>, actor: Actor, asset: usize| match actor {
            Actor::Owner => ledger.owner_of(token(asset)).unwrap_or(actors[0]),
            Actor::Account(index) => actors[index],
        };
        let result = match *step {
            Step::Mint {
                actor,
                asset,
                with_model,
            } => {
                let version = if with_model { self.version } else { U256::ZERO };
                let request =
                    suite::mint_request(actors[actor], &format!("asset-{asset}"), version, 300);
                let minted = ledger.mint(actors[actor], &request).map(|_| ());
                self.minted += usize::from(minted.is_ok());
                minted
            }
            Step::List {
                actor,
                asset,
                price,
            } => {
                let seller = who(ledger, actor, asset);
                ledger.list(seller, token(asset), auton(price)).map(|_| ())
            }
            Step::Cancel { actor, asset } => {
                let seller = who(ledger, actor, asset);
                ledger.cancel(seller, token(asset)).map(|_| ())
            }
            Step::Buy {
                actor,
                asset,
                max_price,
            } => ledger
                .buy(actors[actor], token(asset), auton(max_price))
                .map(|_| ()),
            Step::TransferAsset { actor, to, asset } => {
                let from = who(ledger, actor, asset);
                ledger
                    .transfer_asset(from, actors[to], token(asset))
                    .map(|_| ())
            }
            Step::TransferAuton { actor, to, amount } => ledger
                .transfer(actors[actor], actors[to], auton(amount))
                .map(|_| ()),
            Step::Withdraw { actor, account } => {
                ledger.withdraw(actors[actor], actors[account]).map(|_| ())
            }
            Step::Release { actor, contributor } => ledger
                .release(actors[actor], self.version, self.contributors[contributor])
                .map(|_| ()),
            Step::Delegate { actor, to } => ledger.delegate(actors[actor], actors[to]).map(|_| ()),
            Step::Vote { actor, support } => {
                let support =
                    [Support::Against, Support::For, Support::Abstain][usize::from(support)];
                ledger
                    .vote(actors[actor], self.proposal, support)
                    .map(|_| ())
            }
            Step::Wait { seconds } => ledger.advance_time(seconds),
        };
        if let Err(error) = result {
            assert!(
                error.revert().is_some(),
                "{step:?} failed without reverting: {error}"
            );
        }
    }

    fn check(&self) {
        let ledger = &self.ledger;
        let d = ledger.deployment();
        let accounts = ledger.accounts();
        // Auton is conserved.
        assert_eq!(ledger.total_supply().unwrap(), auton(1_000_000_000));
        // The marketplace holds exactly what it owes: nothing stuck, nothing missing.
        let mut payees = accounts.clone();
        payees.push(d.timelock);
        let owed: U256 = payees
            .iter()
            .map(|account| ledger.owed(*account).unwrap())
            .sum();
        assert_eq!(
            ledger.balance(d.marketplace).unwrap(),
            owed,
            "marketplace balance == owed"
        );
        // The splitter holds exactly what its version's contributors can still release.
        let (received, released) = ledger.revenue(self.version).unwrap();
        let releasable: U256 = self
            .contributors
            .iter()
            .map(|account| ledger.releasable(self.version, *account).unwrap())
            .sum();
        assert_eq!(
            received,
            released + releasable,
            "received == released + owed"
        );
        assert_eq!(
            ledger.balance(d.splitter).unwrap(),
            releasable,
            "splitter balance == owed"
        );
        // Every minted asset is held by one of the actors.
        let held: U256 = self
            .actors
            .iter()
            .map(|actor| ledger.asset_count(*actor).unwrap())
            .sum();
        assert_eq!(held, U256::from(self.minted));
        // Votes: every account holding Auton is delegated, so votes add up to their balances.
        let votes: U256 = accounts
            .iter()
            .map(|account| ledger.votes(*account).unwrap())
            .sum();
        let balances: U256 = accounts
            .iter()
            .map(|account| ledger.balance(*account).unwrap())
            .sum();
        assert_eq!(votes, balances, "votes == delegated balances");
    }
}

/// Token id of asset `asset`: the hash of its label.
fn token(asset: usize) -> U256 {
    U256::from_be_bytes(suite::hash(&format!("asset-{asset}")).0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_books_always_balance(steps in prop::collection::vec(step(), 1..80)) {
        let mut world = World::new();
        world.check();
        for step in &steps {
            world.apply(step);
            world.check();
        }
        // Whatever happened, everyone can be paid out in full and the contracts end empty.
        let d = world.ledger.deployment().clone();
        let mut payees = world.ledger.accounts();
        payees.push(d.timelock);
        for payee in payees {
            if !world.ledger.owed(payee).unwrap().is_zero() {
                world.ledger.withdraw(world.actors[0], payee).unwrap();
            }
        }
        for contributor in world.contributors {
            if !world.ledger.releasable(world.version, contributor).unwrap().is_zero() {
                world.ledger.release(world.actors[0], world.version, contributor).unwrap();
            }
        }
        prop_assert_eq!(world.ledger.balance(d.marketplace).unwrap(), U256::ZERO);
        prop_assert_eq!(world.ledger.balance(d.splitter).unwrap(), U256::ZERO);
    }
}
