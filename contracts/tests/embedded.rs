//! The contract-level suite on the embedded EVM, plus what only the embedded chain does:
//! persistence across restarts and refusing a corrupt state file.

#[macro_use]
mod suite;

use alloy::primitives::U256;
use autonomy_contracts::{Embedded, Ledger, LedgerError, auton};

macro_rules! on_embedded {
    ($($scenario:ident),* $(,)?) => {$(
        #[test]
        fn $scenario() {
            let mut ledger = Ledger::in_memory().expect("deploy the suite in memory");
            suite::$scenario(&mut ledger);
        }
    )*};
}

every_scenario!(on_embedded);

#[test]
fn a_restart_continues_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (deployment, token) = {
        let mut ledger = Ledger::embedded(dir.path()).unwrap();
        let creator = ledger.accounts()[1];
        let token = ledger
            .mint(
                creator,
                &suite::mint_request(creator, "kept.png", U256::ZERO, 0),
            )
            .unwrap()
            .value;
        ledger.advance_time(1_000).unwrap();
        (ledger.deployment().clone(), token)
    };
    let mut ledger = Ledger::embedded(dir.path()).unwrap();
    assert_eq!(
        ledger.deployment(),
        &deployment,
        "the suite is not redeployed"
    );
    let creator = ledger.accounts()[1];
    assert_eq!(ledger.owner_of(token).unwrap(), creator);
    assert_eq!(
        suite::revert_name(ledger.mint(
            creator,
            &suite::mint_request(creator, "kept.png", U256::ZERO, 0)
        )),
        "ContentAlreadyMinted"
    );
    // Nonces carried over too: the next transaction goes through.
    ledger
        .transfer(creator, ledger.accounts()[2], auton(1))
        .unwrap();
}

#[test]
fn a_corrupt_state_file_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    drop(Ledger::embedded(dir.path()).unwrap());
    let path = dir.path().join("state.json");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&path, &bytes).unwrap();
    let error = Ledger::embedded(dir.path())
        .err()
        .expect("a truncated state must not open");
    assert!(matches!(error, LedgerError::CorruptState { .. }), "{error}");
    assert!(
        error.to_string().contains("state.json"),
        "names the file: {error}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the file is left as it was"
    );
}

#[test]
fn a_reverted_creation_is_a_typed_revert() {
    let mut chain = Embedded::in_memory();
    let from = autonomy_contracts::Backend::accounts(&chain)[0];
    let before = chain.balance(from);
    let error = autonomy_contracts::Backend::send(
        &mut chain,
        autonomy_contracts::Tx {
            from,
            to: None,
            data: vec![0x60, 0x00, 0x60, 0x00, 0xfd].into(),
            value: U256::ZERO,
        },
    )
    .unwrap_err();
    assert!(matches!(error, LedgerError::Reverted { .. }), "{error}");
    assert_eq!(
        chain.balance(from),
        before,
        "gas is free on the embedded chain"
    );
}

#[test]
fn unknown_accounts_cannot_send() {
    let mut ledger = Ledger::in_memory().unwrap();
    let stranger = alloy::primitives::Address::repeat_byte(0x42);
    let error = ledger
        .transfer(stranger, ledger.accounts()[0], auton(1))
        .unwrap_err();
    assert!(
        matches!(error, LedgerError::MissingKey(account) if account == stranger),
        "{error}"
    );
}

#[test]
fn two_writers_never_overwrite_each_other() {
    let dir = tempfile::tempdir().unwrap();
    drop(Ledger::embedded(dir.path()).unwrap());
    let mut first = Ledger::embedded(dir.path()).unwrap();
    let mut second = Ledger::embedded(dir.path()).unwrap();
    let [a, b] = [first.accounts()[1], first.accounts()[2]];
    first.transfer(a, b, auton(5)).unwrap();
    let error = second.transfer(a, b, auton(7)).unwrap_err();
    assert!(matches!(error, LedgerError::StateChanged(_)), "{error}");
    assert!(
        error.to_string().contains("run the command again"),
        "{error}"
    );
    // What the first one sent is kept; the second one's transfer never happened.
    let reopened = Ledger::embedded(dir.path()).unwrap();
    assert_eq!(reopened.balance(b).unwrap(), auton(1_000_005));
}
