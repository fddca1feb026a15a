//! The contract-level suite over JSON-RPC against a real node: anvil from the npm package
//! `@foundry-rs/anvil` (installed by `npm ci`), one fresh node per test. Plus what only RPC has:
//! wrong chain ids, unreachable endpoints, missing keys, deployments saved and re-attached.

#[macro_use]
mod suite;

use std::path::PathBuf;

use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::U256;
use autonomy_contracts::{Deployment, Ledger, LedgerError, Rpc, SuiteConfig, auton, dev_signers};

/// anvil's binary from `node_modules` (`ANVIL` overrides). Missing means `npm ci` was not run.
fn anvil_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ANVIL") {
        return path.into();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(
        path.exists(),
        "anvil not found at {}: run `npm ci` at the repository root",
        path.display()
    );
    path
}

fn anvil() -> AnvilInstance {
    Anvil::at(anvil_binary()).try_spawn().expect("start anvil")
}

fn ledger_on(node: &AnvilInstance) -> Ledger<Rpc> {
    let rpc =
        Rpc::connect(&node.endpoint(), dev_signers(), Some(31_337)).expect("connect to anvil");
    Ledger::deploy(rpc, &SuiteConfig::dev()).expect("deploy the suite on anvil")
}

macro_rules! on_anvil {
    ($($scenario:ident),* $(,)?) => {$(
        #[test]
        fn $scenario() {
            let node = anvil();
            let mut ledger = ledger_on(&node);
            suite::$scenario(&mut ledger);
        }
    )*};
}

every_scenario!(on_anvil);

#[test]
fn a_saved_deployment_reattaches() {
    let node = anvil();
    let mut ledger = ledger_on(&node);
    let creator = ledger.accounts()[1];
    let token = ledger
        .mint(
            creator,
            &suite::mint_request(creator, "moon.png", U256::ZERO, 0),
        )
        .unwrap()
        .value;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deployment.json");
    ledger.deployment().save(&path).unwrap();
    drop(ledger);

    let rpc = Rpc::connect(&node.endpoint(), dev_signers(), None).unwrap();
    let deployment = Deployment::load(&path, 31_337).unwrap();
    let ledger = Ledger::attach(rpc, deployment).unwrap();
    assert_eq!(ledger.owner_of(token).unwrap(), creator);

    let error = Deployment::load(&path, 1).unwrap_err();
    assert!(error.to_string().contains("chain id 31337"), "{error}");
}

#[test]
fn a_wrong_chain_id_is_refused() {
    let node = anvil();
    let error = Rpc::connect(&node.endpoint(), dev_signers(), Some(1))
        .err()
        .expect("chain 1 expected");
    assert!(
        matches!(
            error,
            LedgerError::WrongChain {
                expected: 1,
                actual: 31_337,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains(&node.endpoint()),
        "names the endpoint: {error}"
    );
}

#[test]
fn an_unreachable_node_is_a_clear_error() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let error = Rpc::connect(&url, dev_signers(), None)
        .err()
        .expect("nothing listens there");
    assert!(matches!(error, LedgerError::Rpc { .. }), "{error}");
    assert!(
        error.to_string().contains(&url) && error.to_string().contains("eth_chainId"),
        "{error}"
    );
    let error = Rpc::connect("not a url", dev_signers(), None)
        .err()
        .unwrap();
    assert!(error.to_string().contains("not a URL"), "{error}");
}

#[test]
fn sending_without_a_key_is_refused_before_signing() {
    let node = anvil();
    let signers = dev_signers();
    let rpc = Rpc::connect(&node.endpoint(), signers[..2].to_vec(), None).unwrap();
    let config = SuiteConfig {
        grant_per_account: auton(10),
        ..SuiteConfig::dev()
    };
    let mut ledger = Ledger::deploy(rpc, &config).unwrap();
    let keyless = signers[5].address();
    let error = ledger
        .transfer(keyless, signers[0].address(), auton(1))
        .unwrap_err();
    assert!(
        matches!(error, LedgerError::MissingKey(account) if account == keyless),
        "{error}"
    );
}

#[test]
fn the_ledger_refuses_to_block_inside_an_async_runtime() {
    let node = anvil();
    let ledger = ledger_on(&node);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let error = runtime
        .block_on(async { ledger.total_supply() })
        .unwrap_err();
    assert!(matches!(error, LedgerError::InsideRuntime), "{error}");
}
