//! The north-star scenario of design.md, end to end through the library, on the embedded chain
//! and on anvil:
//!
//! recipes in a watched folder → a tileable texture and an animation (sprite sheet + GIF) made
//! with the community model, signed; editing one recipe regenerates only that asset → publish
//! and list → another account buys with Auton and every payee gets exactly what the rules say,
//! nothing left in the marketplace → a modder fine-tunes the house model on contributed images
//! and registers the version with contributors → the DAO promotes it (vote, timelock, execute)
//! → the watcher regenerates exactly the assets made with that model, each naming its previous
//! version → verify --reproduce passes on old and new assets, the chain agrees with the old
//! ones' manifests, and a tampered copy fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256};
use autonomy_contracts::{
    Action, Backend, Ledger, MintRequest, Proposal, Support, VersionRequest, auton, dev_signers,
};
use autonomy_pipeline::build::provenance::Manifest;
use autonomy_pipeline::build::{BuildOptions, Event, Outcome, PREVIOUS_ROLE};
use autonomy_pipeline::economy::publish::{PublishOptions, publish};
use autonomy_pipeline::economy::registry::RegistryPoller;
use autonomy_pipeline::economy::{Config, ContentStore, deploy_rpc, onchain, open_ledger};
use autonomy_pipeline::models::house::{HouseConfig, files};
use autonomy_pipeline::train::data::TrainingSet;
use autonomy_pipeline::train::{TrainOptions, Trainer};
use autonomy_pipeline::verify::{ReproduceOptions, Verdict, reproduce, verify_path};
use autonomy_pipeline::watch::{WatchEvent, watch_with};

const TEXTURE: &str = "kind = \"texture\"\nprompt = \"grey cobblestone texture tileable\"\nmodel = \"registry:house\"\nsize = 32\nsteps = 4\ntileable = true\n";
const ANIMATION: &str = "kind = \"animation\"\nprompt = \"fire flat travel places\"\nmodel = \"registry:house\"\nsize = 32\nframes = 3\nfps = 8\nsteps = 4\n";
const BANNER: &str =
    "kind = \"sprite\"\nprompt = \"red flag flat symbols\"\nsize = 32\nsteps = 4\n";

/// What the watcher reported: each asset's outcomes in order, and registry changes seen.
#[derive(Default)]
struct Seen {
    outcomes: Vec<(String, &'static str)>,
    builds: usize,
    model_changes: Vec<String>,
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Built(_) => "built",
        Outcome::Restored => "restored",
        Outcome::UpToDate => "up-to-date",
        Outcome::Failed(_) => "failed",
    }
}

fn wait_for(seen: &Mutex<Seen>, what: &str, done: impl Fn(&Seen) -> bool) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(180) {
        if done(&seen.lock().unwrap()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = seen.lock().unwrap();
    panic!("timed out waiting for {what}; saw {:?}", seen.outcomes);
}

/// Assets built (not restored, not up to date) in the outcomes after index `from`.
fn built_since(seen: &Seen, from: usize) -> Vec<String> {
    let mut built: Vec<String> = seen.outcomes[from..]
        .iter()
        .filter(|(_, o)| *o == "built")
        .map(|(a, _)| a.clone())
        .collect();
    built.sort();
    built
}

fn manifest(path: &Path) -> Manifest {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    ::hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A modder's fine-tune of `base` on two contributed images.
fn fine_tune(base: &Path, out: &Path) {
    let data = tempfile::tempdir().unwrap();
    for (name, colour) in [
        ("ruby", [200u8, 30, 60, 255]),
        ("emerald", [30, 180, 90, 255]),
    ] {
        let image = image::RgbaImage::from_fn(32, 32, |x, y| {
            let inside = (x as i32 - 16).abs() + (y as i32 - 16).abs() < 12;
            image::Rgba(if inside { colour } else { [0, 0, 0, 0] })
        });
        image.save(data.path().join(format!("{name}.png"))).unwrap();
        std::fs::write(
            data.path().join(format!("{name}.txt")),
            format!("{name} gem"),
        )
        .unwrap();
    }
    let set = TrainingSet::load(data.path(), 32).unwrap();
    let options = TrainOptions {
        steps: 2,
        batch: 2,
        seed: 5,
        warmup: 1,
        checkpoint_every: 1000,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(
        set,
        HouseConfig::small(0),
        Some(base),
        options,
        out,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    trainer.run(&AtomicBool::new(false), |_| {}).unwrap();
}

enum Chain {
    Embedded,
    Anvil(String),
}

fn north_star(chain: Chain) {
    let project = tempfile::tempdir().unwrap();
    let root = project.path();
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/house");
    let house = root.join("models/house");
    std::fs::create_dir_all(&house).unwrap();
    for file in [files::CONFIG, files::WEIGHTS, files::VOCAB, files::DATASET] {
        std::fs::copy(shipped.join(file), house.join(file)).unwrap();
    }
    let chain_section = match &chain {
        Chain::Embedded => "kind = \"embedded\"".to_string(),
        Chain::Anvil(url) => format!("kind = \"rpc\"\nurl = \"{url}\"\nchain_id = 31337"),
    };
    std::fs::write(
        root.join("autonomy.toml"),
        format!("[chain]\n{chain_section}\n\n[models]\ndirs = [\"models\"]\n"),
    )
    .unwrap();
    let config = Config::load(root).unwrap();
    if let Chain::Anvil(_) = chain {
        deploy_rpc(&config, None).unwrap();
    }
    let dev = dev_signers();
    let (whale, registrant, buyer, modder, second_contributor) = (
        dev[0].address(),
        dev[1].address(),
        dev[2].address(),
        dev[3].address(),
        dev[8].address(),
    );
    let creator = dev[9].clone();
    let mut ledger = open_ledger(&config, Some(creator.clone())).unwrap();
    let d = ledger.deployment().clone();

    // The house model is the community model; version 1 (its weights) is active from the start.
    let model = ledger
        .register_model(registrant, "house", true)
        .unwrap()
        .value;
    let v1 = register(
        &mut ledger,
        registrant,
        model,
        &house,
        U256::ZERO,
        vec![(registrant, 10_000)],
    );

    // Recipes appear in a watched folder.
    let assets = root.join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    std::fs::write(assets.join("cobble.recipe.toml"), TEXTURE).unwrap();
    std::fs::write(assets.join("fire.recipe.toml"), ANIMATION).unwrap();
    std::fs::write(assets.join("banner.recipe.toml"), BANNER).unwrap();
    let mut poller = RegistryPoller::new(config.clone(), assets.clone());
    let options = BuildOptions {
        signer: Some(creator.clone()),
        registry: poller.current().unwrap(),
        ..BuildOptions::new(&assets, &house)
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let on_event = |event: WatchEvent| {
                let mut seen = seen.lock().unwrap();
                match event {
                    WatchEvent::Build(Event::Finished { asset, outcome }) => {
                        seen.outcomes.push((asset, outcome_name(&outcome)))
                    }
                    WatchEvent::Built(_) => seen.builds += 1,
                    WatchEvent::ModelsChanged(names) => seen.model_changes.extend(names),
                    _ => {}
                }
            };
            watch_with(&options, &stop, &on_event, Some(&mut poller)).unwrap();
        })
    };
    wait_for(&seen, "the first build", |s| s.builds >= 1);
    assert_eq!(
        built_since(&seen.lock().unwrap(), 0),
        ["banner", "cobble", "fire"]
    );
    for file in [
        "cobble.png",
        "fire.gif",
        "fire.sheet.png",
        "fire.atlas.json",
        "banner.png",
    ] {
        assert!(assets.join(file).is_file(), "{file} was not made");
    }
    let reports = verify_path(&assets).unwrap();
    assert!(
        reports.iter().all(|r| r.verdict() == Verdict::Verified),
        "signed and intact"
    );
    assert_eq!(
        manifest(&assets.join("cobble.prov.json"))
            .model
            .weights_sha256,
        hex(&v1.1)
    );

    // Editing one recipe regenerates that asset and nothing else.
    let mark = seen.lock().unwrap().outcomes.len();
    std::fs::write(
        assets.join("banner.recipe.toml"),
        BANNER.replace("red flag", "blue flag"),
    )
    .unwrap();
    wait_for(&seen, "the banner rebuild", |s| s.builds >= 2);
    assert_eq!(built_since(&seen.lock().unwrap(), mark), ["banner"]);

    // Publish and list; a second account buys the animation with Auton.
    let store = ContentStore::new(config.store.clone());
    let list = PublishOptions {
        royalty_bps: 500,
        list_price: Some(auton(100)),
    };
    let published = publish(
        &mut ledger,
        &store,
        &config.journal_dir(),
        creator.address(),
        &assets.join("fire.gif"),
        &list,
        &|_| {},
    )
    .unwrap();
    publish(
        &mut ledger,
        &store,
        &config.journal_dir(),
        creator.address(),
        &assets.join("cobble.png"),
        &list,
        &|_| {},
    )
    .unwrap();
    assert_eq!(
        published[0].model_version, v1.0,
        "minted with the version that made it"
    );
    let fire = U256::from_be_bytes(published[0].content_hash.0);
    let old_fire = root.join("old");
    copy_dir(&assets, &old_fire);

    let before: BTreeMap<Address, U256> = [buyer, creator.address(), d.timelock, registrant]
        .iter()
        .map(|a| (*a, ledger.balance(*a).unwrap()))
        .collect();
    ledger.approve(buyer, d.marketplace, auton(100)).unwrap();
    let sold = ledger.buy(buyer, fire, auton(100)).unwrap().value;
    assert_eq!(
        (sold.proceeds, sold.royalty, sold.contributorFee, sold.fee),
        (
            auton(90),
            auton(5),
            auton(5) / U256::from(2),
            auton(5) / U256::from(2)
        )
    );
    ledger.withdraw(buyer, creator.address()).unwrap();
    ledger.withdraw(buyer, d.timelock).unwrap();
    ledger.release(buyer, v1.0, registrant).unwrap();
    let delta = |ledger: &Ledger<Box<dyn Backend>>, account: Address| {
        ledger.balance(account).unwrap() - before[&account]
    };
    assert_eq!(
        before[&buyer] - ledger.balance(buyer).unwrap(),
        auton(100),
        "the buyer paid the price"
    );
    assert_eq!(
        delta(&ledger, creator.address()),
        auton(95),
        "seller's proceeds and the royalty"
    );
    assert_eq!(
        delta(&ledger, d.timelock),
        auton(5) / U256::from(2),
        "treasury fee"
    );
    assert_eq!(
        delta(&ledger, registrant),
        auton(5) / U256::from(2),
        "the model's contributors"
    );
    assert_eq!(ledger.owner_of(fire).unwrap(), buyer);
    let left: U256 = [buyer, creator.address(), d.timelock]
        .iter()
        .map(|a| ledger.owed(*a).unwrap())
        .sum();
    assert!(
        left.is_zero() && ledger.balance(d.marketplace).unwrap().is_zero(),
        "nothing left in the marketplace"
    );

    // A modder fine-tunes the house model and registers version 2 with its contributors.
    let tuned = root.join("models/tuned");
    fine_tune(&house, &tuned);
    let v2 = register(
        &mut ledger,
        modder,
        model,
        &tuned,
        v1.0,
        vec![(modder, 6_000), (second_contributor, 4_000)],
    );

    // The DAO promotes it: propose, vote, timelock, execute.
    let mark = seen.lock().unwrap().outcomes.len();
    let proposal = Proposal::new(
        vec![Action::set_active_version(&d, model, v2.0)],
        "Promote the gem fine-tune",
    );
    let id = ledger.propose(whale, &proposal).unwrap().value;
    ledger.advance_time(61).unwrap();
    ledger.vote(whale, id, Support::For).unwrap();
    ledger.advance_time(601).unwrap();
    ledger.queue(whale, &proposal).unwrap();
    ledger.advance_time(61).unwrap();
    ledger.execute(whale, &proposal).unwrap();
    assert_eq!(ledger.model(model).unwrap().activeVersion, v2.0.to::<u64>());

    // The watcher regenerates exactly the assets made with the house model, naming the old ones.
    wait_for(&seen, "the rebuild after the vote", |s| {
        let built = built_since(s, mark);
        built.contains(&"cobble".to_string()) && built.contains(&"fire".to_string())
    });
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(
        built_since(&seen, mark),
        ["cobble", "fire"],
        "the banner does not use the registry model"
    );
    assert_eq!(seen.model_changes, ["house"]);
    let new_fire = manifest(&assets.join("fire.prov.json"));
    assert_eq!(new_fire.model.weights_sha256, hex(&v2.1));
    let previous = new_fire
        .parents
        .iter()
        .find(|p| p.role == PREVIOUS_ROLE)
        .expect("a previous-version parent");
    assert_eq!(
        previous.sha256,
        manifest(&old_fire.join("fire.prov.json")).outputs[0].sha256
    );

    // Verify: new and old assets reproduce bit for bit; the chain agrees with the old ones.
    let options = ReproduceOptions {
        house_dir: house.clone(),
        device: candle_core::Device::Cpu,
        model_dirs: config.model_dirs.clone(),
    };
    for dir in [&assets, &old_fire] {
        for report in reproduce(dir, &options).unwrap() {
            assert_eq!(
                report.verdict(),
                Verdict::Verified,
                "{}: {:?}",
                report.asset,
                report.checks
            );
        }
    }
    let mut old_reports = verify_path(&old_fire.join("fire.gif")).unwrap();
    onchain::check_on_chain(&ledger, &mut old_reports).unwrap();
    let chain_checks: Vec<_> = old_reports[0]
        .checks
        .iter()
        .filter(|c| c.what.starts_with("chain"))
        .collect();
    assert_eq!(chain_checks.len(), 2, "{:?}", old_reports[0].checks);
    assert!(
        chain_checks.iter().all(|c| c.verdict == Verdict::Verified),
        "{chain_checks:?}"
    );

    // A tampered copy fails.
    let tampered = root.join("tampered");
    copy_dir(&assets, &tampered);
    let png = tampered.join("cobble.png");
    let mut bytes = std::fs::read(&png).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&png, bytes).unwrap();
    let report = &verify_path(&png).unwrap()[0];
    assert_eq!(report.verdict(), Verdict::Tampered, "{:?}", report.checks);

    // Minting the same content again is refused, by anyone.
    let again = MintRequest {
        to: buyer,
        content_hash: published[0].content_hash,
        model_version: U256::ZERO,
        uri: String::new(),
        royalty_receiver: Address::ZERO,
        royalty_bps: 0,
    };
    assert_eq!(
        ledger
            .mint(buyer, &again)
            .unwrap_err()
            .revert()
            .unwrap()
            .name(),
        "ContentAlreadyMinted"
    );
}

/// Registers the model folder `folder` as a version of `model`; returns its id and weights hash.
fn register(
    ledger: &mut Ledger<Box<dyn Backend>>,
    from: Address,
    model: U256,
    folder: &Path,
    parent: U256,
    contributors: Vec<(Address, u16)>,
) -> (U256, B256) {
    let weights: B256 = sha256_hex(&folder.join(files::WEIGHTS)).parse().unwrap();
    let dataset = folder.join(files::DATASET);
    let dataset_hash = if dataset.exists() {
        sha256_hex(&dataset).parse().unwrap()
    } else {
        B256::ZERO
    };
    let request = VersionRequest {
        model,
        weights_hash: weights,
        dataset_manifest_hash: dataset_hash,
        parent_version: parent,
        uri: folder.display().to_string(),
        contributors,
        access_price: U256::ZERO,
    };
    (ledger.add_version(from, &request).unwrap().value, weights)
}

fn hex(hash: &B256) -> String {
    hash.to_string().trim_start_matches("0x").to_string()
}

#[test]
fn north_star_on_the_embedded_chain() {
    north_star(Chain::Embedded);
}

#[test]
fn north_star_on_anvil() {
    let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(
        binary.exists(),
        "anvil not found at {}: run `npm ci`",
        binary.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut node = std::process::Command::new(binary)
        .args(["--port", &port.to_string(), "--silent"])
        .spawn()
        .expect("start anvil");
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "anvil did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let result = std::panic::catch_unwind(|| north_star(Chain::Anvil(url)));
    let _ = node.kill();
    let _ = node.wait();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
