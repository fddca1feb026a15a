//! Gas per operation of the suite, on the embedded EVM and on anvil, next to OpenZeppelin's plain
//! ERC-721 `_mint` compiled alongside (`PlainERC721`), with the goals of issue 4.
//!
//! `cargo bench -p autonomy-contracts --bench gas` (anvil from `npm ci`; `ANVIL` overrides its path).

use std::path::PathBuf;

use alloy::node_bindings::Anvil;
use alloy::primitives::{Address, B256, U256, keccak256};
use autonomy_contracts::bindings::PlainERC721;
use autonomy_contracts::{
    Action, Backend, BatchMintRequest, Ledger, MintRequest, Proposal, Rpc, SuiteConfig, Support,
    VersionRequest, auton, dev_signers,
};

/// One measured operation: its name, gas used, and the goal it must meet, if any.
struct Row {
    name: &'static str,
    gas: u64,
    goal: Option<u64>,
}

const BATCH: usize = 10;

fn hash(label: &str) -> B256 {
    keccak256(label.as_bytes())
}

fn mint(to: Address, label: &str, version: U256, uri: &str) -> MintRequest {
    MintRequest {
        to,
        content_hash: hash(label),
        model_version: version,
        uri: uri.into(),
        royalty_receiver: Address::ZERO,
        royalty_bps: 500,
    }
}

fn measure<B: Backend>(ledger: &mut Ledger<B>) -> Vec<Row> {
    let a = ledger.accounts();
    let (whale, creator, buyer, c1, c2) = (a[0], a[1], a[2], a[3], a[4]);
    let d = ledger.deployment().clone();
    let mut rows = Vec::new();
    let mut row = |name, gas, goal| rows.push(Row { name, gas, goal });

    let plain = ledger
        .deploy_contract(whale, "PlainERC721", PlainERC721::BYTECODE.clone())
        .unwrap()
        .value;
    // Warm the recipient's balance slot the same way for both mints: each mints a second token.
    ledger
        .send(
            whale,
            plain,
            PlainERC721::mintCall {
                to: creator,
                tokenId: U256::from(1),
            },
        )
        .unwrap();
    let reference = ledger
        .send(
            whale,
            plain,
            PlainERC721::mintCall {
                to: creator,
                tokenId: U256::from(2),
            },
        )
        .unwrap();
    row(
        "reference: OpenZeppelin ERC-721 _mint",
        reference.gas_used,
        None,
    );

    let model = ledger.register_model(creator, "house", false).unwrap();
    row("registerModel", model.receipt.gas_used, None);
    let version = ledger
        .add_version(
            creator,
            &VersionRequest {
                model: model.value,
                weights_hash: hash("weights"),
                dataset_manifest_hash: hash("dataset"),
                parent_version: U256::ZERO,
                uri: "autonomy://models/house/1".into(),
                contributors: vec![(c1, 7_000), (c2, 3_000)],
                access_price: auton(10),
            },
        )
        .unwrap();
    row(
        "addVersion (2 contributors)",
        version.receipt.gas_used,
        None,
    );
    let version = version.value;

    ledger
        .mint(creator, &mint(creator, "warm-up", version, ""))
        .unwrap();
    let single = ledger
        .mint(creator, &mint(creator, "sword", version, ""))
        .unwrap()
        .receipt
        .gas_used;
    row("mint with provenance record", single, Some(105_000));
    let with_uri = ledger
        .mint(
            creator,
            &mint(
                creator,
                "shield",
                version,
                "ipfs://bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
            ),
        )
        .unwrap();
    row(
        "mint with provenance record + URI",
        with_uri.receipt.gas_used,
        None,
    );
    let batch = |prefix: &str, count: usize| BatchMintRequest {
        to: creator,
        content_hashes: (0..count).map(|i| hash(&format!("{prefix}-{i}"))).collect(),
        model_version: version,
        uris: vec![],
        royalty_receiver: Address::ZERO,
        royalty_bps: 500,
    };
    let one = ledger
        .mint_batch(creator, &batch("crate", 1))
        .unwrap()
        .receipt
        .gas_used;
    row("mintBatch of 1", one, None);
    let batch_gas = ledger
        .mint_batch(creator, &batch("tile", BATCH))
        .unwrap()
        .receipt
        .gas_used;
    row("mintBatch of 10", batch_gas, None);
    // The marginal cost: what one more hash in the same call adds.
    row(
        "  each extra token in a batch",
        (batch_gas - one) / (BATCH as u64 - 1),
        Some(25_000),
    );

    let token = U256::from_be_bytes(hash("sword").0);
    row(
        "setApprovalForAll (marketplace)",
        ledger
            .approve_assets(creator, d.marketplace, true)
            .unwrap()
            .gas_used,
        None,
    );
    row(
        "list",
        ledger.list(creator, token, auton(100)).unwrap().gas_used,
        None,
    );
    row(
        "cancel",
        ledger.cancel(creator, token).unwrap().gas_used,
        None,
    );
    ledger.list(creator, token, auton(100)).unwrap();
    ledger.approve(buyer, d.marketplace, U256::MAX).unwrap();
    // A second sale, so the payees' `owed` slots and the splitter's totals are warm as in steady use.
    let warm = U256::from_be_bytes(hash("warm-up").0);
    ledger.list(creator, warm, auton(100)).unwrap();
    ledger.buy(buyer, warm, auton(100)).unwrap();
    let sold = ledger.buy(buyer, token, auton(100)).unwrap();
    row(
        "buy (royalty + contributors + fee)",
        sold.receipt.gas_used,
        Some(166_573),
    );
    row(
        "withdraw",
        ledger.withdraw(buyer, creator).unwrap().receipt.gas_used,
        None,
    );
    row(
        "release (contributor)",
        ledger.release(buyer, version, c1).unwrap().receipt.gas_used,
        None,
    );
    ledger.approve(buyer, d.registry, U256::MAX).unwrap();
    row(
        "buyAccess",
        ledger.buy_access(buyer, version).unwrap().gas_used,
        None,
    );

    let fresh = Address::repeat_byte(0x77);
    row(
        "Auton transfer to a new holder (self-delegates)",
        ledger.transfer(whale, fresh, auton(1)).unwrap().gas_used,
        None,
    );
    row(
        "Auton transfer between holders",
        ledger.transfer(whale, c1, auton(1)).unwrap().gas_used,
        None,
    );
    row("delegate", ledger.delegate(c2, c1).unwrap().gas_used, None);

    let proposal = Proposal::new(vec![Action::set_fees(&d, 200, 200)], "Fees 2%");
    let proposed = ledger.propose(whale, &proposal).unwrap();
    row("propose", proposed.receipt.gas_used, None);
    ledger.advance_time(61).unwrap();
    row(
        "castVote",
        ledger
            .vote(whale, proposed.value, Support::For)
            .unwrap()
            .gas_used,
        None,
    );
    ledger.advance_time(601).unwrap();
    row(
        "queue",
        ledger.queue(whale, &proposal).unwrap().gas_used,
        None,
    );
    ledger.advance_time(61).unwrap();
    row(
        "execute (setFees)",
        ledger.execute(whale, &proposal).unwrap().gas_used,
        None,
    );
    rows
}

fn anvil_binary() -> Option<PathBuf> {
    std::env::var_os("ANVIL").map(PathBuf::from).or_else(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
        path.exists().then_some(path)
    })
}

fn main() {
    let embedded = measure(&mut Ledger::in_memory().expect("deploy on the embedded chain"));
    let anvil = anvil_binary().map(|binary| {
        let node = Anvil::at(binary).try_spawn().expect("start anvil");
        let rpc =
            Rpc::connect(&node.endpoint(), dev_signers(), Some(31_337)).expect("connect to anvil");
        let rows = measure(&mut Ledger::deploy(rpc, &SuiteConfig::dev()).expect("deploy on anvil"));
        drop(node);
        rows
    });
    let reference = embedded[0].gas;
    println!("| operation | gas (embedded) | gas (anvil) | × OZ `_mint` | goal | |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    for (index, row) in embedded.iter().enumerate() {
        let on_anvil = anvil
            .as_ref()
            .map(|rows| rows[index].gas.to_string())
            .unwrap_or_else(|| "n/a (run npm ci)".into());
        let (goal, verdict) = match row.goal {
            Some(goal) if row.gas <= goal => (format!("≤ {goal}"), "✓"),
            Some(goal) => (format!("≤ {goal}"), "✗"),
            None => (String::new(), ""),
        };
        println!(
            "| {} | {} | {} | {:.2} | {} | {} |",
            row.name,
            row.gas,
            on_anvil,
            row.gas as f64 / reference as f64,
            goal,
            verdict
        );
    }
}
