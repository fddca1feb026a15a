//! The creator economy through the CLI on the embedded chain: init, a signed build, publish
//! (idempotent, killed and resumed), the marketplace (show, buy with every payee accounted
//! for, withdraw), chain status and accounts, and the refusals (tampered asset, nothing to buy).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const RECIPES: &str = r#"
[assets.apple]
kind = "sprite"
prompt = "red apple flat food drink"
size = 32
steps = 4

[assets.pear]
kind = "sprite"
prompt = "green pear flat food drink"
size = 32
steps = 4
"#;

struct Project {
    root: tempfile::TempDir,
    keys: tempfile::TempDir,
}

impl Project {
    /// A project with `autonomy.toml` naming the creator key `studio`, which exists.
    fn with_creator() -> (Self, String) {
        let project = Project {
            root: tempfile::tempdir().unwrap(),
            keys: tempfile::tempdir().unwrap(),
        };
        let root = project.root.path();
        ok(project
            .command(&["init", root.to_str().unwrap()])
            .output()
            .unwrap());
        let config = std::fs::read_to_string(root.join("autonomy.toml")).unwrap();
        std::fs::write(
            root.join("autonomy.toml"),
            config.replace("# key = \"studio\"", "key = \"studio\""),
        )
        .unwrap();
        let creator = ok(project
            .command(&["keys", "new", "studio"])
            .output()
            .unwrap())
        .trim()
        .to_string();
        (project, creator)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_autonomy"));
        command
            .args(args)
            .env("AUTONOMY_KEYS", self.keys.path())
            .env("AUTONOMY_KEY_PASSWORD", "correct horse battery staple");
        command
    }

    /// Runs an economy command against this project.
    fn run(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--project", self.root.path().to_str().unwrap()]);
        self.command(&all).output().unwrap()
    }

    /// Starts an economy command and kills it (SIGKILL) after each of `delays` milliseconds.
    fn interrupted(&self, args: &[&str], delays: &[u64]) {
        let mut all = args.to_vec();
        all.extend(["--project", self.root.path().to_str().unwrap()]);
        for delay in delays {
            let mut child = self
                .command(&all)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(*delay));
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Writes the apple and pear recipes into `items/` and builds them with the shipped model,
    /// signed by `studio`.
    fn build_items(&self) {
        let model_dir = tempfile::tempdir().unwrap();
        let model = common::copy_of_shipped_model(model_dir.path());
        let items = self.root.path().join("items");
        std::fs::create_dir_all(&items).unwrap();
        std::fs::write(items.join("fruit.recipe.toml"), RECIPES).unwrap();
        let items = items.to_str().unwrap();
        let model = model.to_str().unwrap();
        ok(self.run(&["build", items, "--model", model, "--key", "studio"]));
    }

    fn path(&self, relative: &str) -> String {
        self.root
            .path()
            .join(relative)
            .to_str()
            .unwrap()
            .to_string()
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "{output:?}");
    stdout(&output)
}

fn failed(output: Output) -> String {
    assert!(!output.status.success(), "expected a failure: {output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn publish_list_buy_and_withdraw_on_the_embedded_chain() {
    // A project with a creator key and two signed sprites.
    let (project, creator) = Project::with_creator();
    project.build_items();
    let root = project.root.path();
    let items = project.path("items");

    // Publish the apple and list it; a tampered pear is refused before anything is sent.
    let pear = root.join("items/pear.png");
    let original_pear = std::fs::read(&pear).unwrap();
    let mut tampered = original_pear.clone();
    let last = tampered.len() - 20;
    tampered[last] ^= 0xff;
    std::fs::write(&pear, &tampered).unwrap();
    let refused = failed(project.run(&["publish", &items, "--list", "12.5"]));
    assert!(
        refused.contains("pear") && refused.contains("does not verify"),
        "{refused}"
    );
    assert!(
        !root.join(".autonomy/store").exists(),
        "nothing stored when one asset is refused"
    );
    std::fs::write(&pear, &original_pear).unwrap();

    let apple = project.path("items/apple.png");
    let published = ok(project.run(&["publish", &apple, "--list", "12.5", "--json"]));
    let published: serde_json::Value = serde_json::from_str(&published).unwrap();
    let entry = &published[0];
    assert_eq!(entry["asset"], "apple");
    assert_eq!(entry["minted_now"], true);
    let token = entry["content_hash"].as_str().unwrap().to_string();
    let metadata_uri = entry["metadata_uri"].as_str().unwrap();
    let metadata_cid = metadata_uri.strip_prefix("ipfs://").unwrap();
    let metadata: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join(".autonomy/store").join(metadata_cid)).unwrap(),
    )
    .unwrap();
    assert_eq!(metadata["name"], "apple");
    let image_cid = metadata["image"]
        .as_str()
        .unwrap()
        .strip_prefix("ipfs://")
        .unwrap();
    assert_eq!(
        std::fs::read(root.join(".autonomy/store").join(image_cid)).unwrap(),
        std::fs::read(&apple).unwrap()
    );
    assert!(
        metadata["properties"]["provenance"]
            .as_str()
            .unwrap()
            .starts_with("ipfs://")
    );

    // Again: nothing new is minted and the listing stands.
    let again = ok(project.run(&["publish", &apple, "--list", "12.5"]));
    assert!(
        again.contains("already minted") && again.contains("12.5 AUTON"),
        "{again}"
    );

    // Publishing the pear is killed at several points, then finished: one token, one listing.
    let pear_arg = project.path("items/pear.png");
    project.interrupted(&["publish", &pear_arg, "--list", "3"], &[0, 30, 120, 400]);
    let finished = ok(project.run(&["publish", &pear_arg, "--list", "3"]));
    assert!(
        finished.contains("pear") && finished.contains("3 AUTON"),
        "{finished}"
    );
    let pear_show = ok(project.run(&["market", "show", &pear_arg]));
    assert!(pear_show.contains("3 AUTON by"), "{pear_show}");

    // The marketplace view.
    let shown = ok(project.run(&["market", "show", &apple]));
    assert!(shown.contains(&token), "{shown}");
    assert!(
        shown
            .to_lowercase()
            .contains(&format!("owner      {}", creator.to_lowercase())),
        "{shown}"
    );
    assert!(shown.contains("12.5 AUTON"), "{shown}");
    assert!(shown.contains("500 bps"), "{shown}");

    // A dev account buys: price 12.5, royalty 5 % to the creator, 2.5 % treasury fee, no
    // contributors (the house model is not registered on this chain), the rest to the seller.
    let bought = ok(project.run(&["market", "buy", &token, "--from", "dev:2"]));
    assert!(
        bought.contains("bought") && bought.contains("12.5 AUTON"),
        "{bought}"
    );
    assert!(bought.contains("gets 11.5625 AUTON"), "{bought}");
    assert!(bought.contains("gets 0.625 AUTON"), "{bought}");
    assert!(bought.contains("treasury gets 0.3125 AUTON"), "{bought}");
    let shown = ok(project.run(&["market", "show", &token]));
    let buyer = autonomy_contracts::dev_signers()[2].address().to_string();
    assert!(shown.contains(&format!("owner      {buyer}")), "{shown}");
    assert!(shown.contains("listing    none"), "{shown}");
    let nothing = failed(project.run(&["market", "buy", &token, "--from", "dev:3"]));
    assert!(nothing.contains("not listed"), "{nothing}");

    // The seller collects proceeds and royalty: 12.1875 Auton.
    let accounts = ok(project.run(&["chain", "accounts", "--from", "dev:0"]));
    assert!(accounts.contains("owed 12.1875 AUTON"), "{accounts}");
    let paid = ok(project.run(&["market", "withdraw", "creator", "--from", "dev:5"]));
    assert!(paid.contains("paid 12.1875 AUTON"), "{paid}");
    let empty = failed(project.run(&["market", "withdraw", "creator", "--from", "dev:5"]));
    assert!(
        empty.contains("owes") && empty.contains("nothing"),
        "{empty}"
    );

    let status = ok(project.run(&["chain", "status", "--from", "dev:0"]));
    assert!(status.contains("chain id     31337"), "{status}");
    let advanced = ok(project.run(&["chain", "advance", "1h", "--from", "dev:0"]));
    assert!(advanced.contains("chain time is now"), "{advanced}");
}

/// The first proposal id printed by `dao propose-*`.
fn proposal_id(output: &str) -> String {
    output
        .lines()
        .find_map(|line| line.strip_prefix("proposed "))
        .unwrap_or_else(|| panic!("no proposal id in {output}"))
        .trim()
        .to_string()
}

/// A modder's fine-tune of `base`: two contributed images, two training steps.
fn fine_tune(project: &Project, base: &Path, into: &Path) {
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
    // Who gave which image: the modder the ruby, a second contributor the emerald.
    let dev = autonomy_contracts::dev_signers();
    let credits = format!(
        "[images]\n\"ruby.png\" = \"{}\"\n\"emerald.png\" = \"{}\"\n",
        dev[3].address(),
        dev[8].address()
    );
    std::fs::write(data.path().join("contributors.toml"), credits).unwrap();
    let (base, data, into) = (
        base.to_str().unwrap(),
        data.path().to_str().unwrap(),
        into.to_str().unwrap(),
    );
    ok(project
        .command(&[
            "train", "--from", base, "--data", data, "--out", into, "--steps", "2", "--batch", "2",
        ])
        .output()
        .unwrap());
}

#[test]
fn a_community_model_is_promoted_by_vote_and_its_contributors_earn_from_sales() {
    let (project, _) = Project::with_creator();
    let model_dir = tempfile::tempdir().unwrap();
    let model = common::copy_of_shipped_model(model_dir.path());
    let model_arg = model.to_str().unwrap();
    let root = project.root.path();

    // The house model as a community model; its first version becomes active on its own.
    let registered = ok(project.run(&[
        "models",
        "register",
        "house",
        "--community",
        "--from",
        "dev:1",
    ]));
    assert!(
        registered.contains("community model") && registered.contains("model 1"),
        "{registered}"
    );
    let v1 = ok(project.run(&[
        "models",
        "add-version",
        "1",
        model_arg,
        "--contributor",
        "dev:1=7000",
        "--contributor",
        "dev:2=3000",
        "--price",
        "10",
        "--from",
        "dev:1",
    ]));
    assert!(v1.contains("version 1"), "{v1}");
    let bad = failed(project.run(&[
        "models",
        "add-version",
        "1",
        model_arg,
        "--contributor",
        "dev:1=7000",
        "--from",
        "dev:1",
    ]));
    assert!(bad.contains("SharesNotTotal"), "{bad}");

    // A modder fine-tunes it on two contributed images and registers the result as version 2:
    // the dataset gives the modder and the second contributor 40 % each, the parent's
    // contributors keep 20 % (split 70/30 like version 1).
    let tuned_dir = tempfile::tempdir().unwrap();
    fine_tune(&project, &model, tuned_dir.path());
    let tuned = tuned_dir.path().to_str().unwrap();
    let v2 = ok(project.run(&[
        "models",
        "add-version",
        "1",
        tuned,
        "--parent",
        "1",
        "--contributors-from-dataset",
        "--parent-share",
        "2000",
        "--price",
        "10",
        "--from",
        "dev:3",
    ]));
    assert!(v2.contains("version 2"), "{v2}");
    let listed = ok(project.run(&["models", "list", "--from", "dev:0"]));
    let v2_line = listed
        .lines()
        .find(|line| line.contains("version 2:"))
        .unwrap()
        .to_string();
    let dev = autonomy_contracts::dev_signers();
    for (index, percent) in [(1, "14%"), (2, "6%"), (3, "40%"), (8, "40%")] {
        assert!(
            v2_line.contains(&format!("{} {percent}", dev[index].address())),
            "dev:{index} {percent}: {v2_line}"
        );
    }
    assert!(
        listed.contains("active version 1")
            && listed.contains("version 2:")
            && listed.contains("parent 1"),
        "{listed}"
    );

    // Promotion by vote: propose, wait for the vote, vote, wait, queue, wait, execute.
    let proposed = ok(project.run(&["dao", "propose-activate", "1", "2", "--from", "dev:0"]));
    let id = proposal_id(&proposed);
    let prefix = &id[..12];
    assert!(proposed.contains("voting opens in 1m"), "{proposed}");
    let pending = ok(project.run(&["dao", "status", prefix, "--from", "dev:0"]));
    assert!(
        pending.contains("Make version 2 the active version of model 1")
            && pending.contains("state    Pending")
            && pending.contains("next     votes open in 1m")
            && !pending.contains("quorum"),
        "{pending}"
    );
    let early = failed(project.run(&["dao", "vote", prefix, "for", "--from", "dev:0"]));
    assert!(early.contains("GovernorUnexpectedProposalState"), "{early}");
    ok(project.run(&["chain", "advance", "61s", "--from", "dev:0"]));
    let voted = ok(project.run(&["dao", "vote", prefix, "for", "--from", "dev:0"]));
    assert!(
        voted.contains("voted For") && voted.contains("AUTON of votes"),
        "{voted}"
    );
    ok(project.run(&["dao", "vote", prefix, "against", "--from", "dev:3"]));
    let status = ok(project.run(&["dao", "list", "--from", "dev:0"]));
    assert!(
        status.contains("Active") && status.contains("closes in"),
        "{status}"
    );
    // The deployer, dev:0, holds 891,000,000 Auton, dev:3 1,000,000; quorum is 4 % of the
    // 1,000,000,000 supply.
    let active = ok(project.run(&["dao", "status", prefix, "--from", "dev:0"]));
    assert!(
        active.contains("state    Active")
            && active.contains("voting   opened 4s ago, closes in 9m 56s")
            && active.contains("for 891000000 AUTON, against 1000000 AUTON, abstain 0 AUTON")
            && active.contains("quorum   40000000 AUTON (for + abstain: 891000000 AUTON, reached)")
            && active.contains(&format!("autonomy dao vote {prefix} for|against|abstain")),
        "{active}"
    );
    ok(project.run(&["chain", "advance", "10m", "--from", "dev:0"]));
    let queued = ok(project.run(&["dao", "queue", prefix, "--from", "dev:4"]));
    assert!(queued.contains("executable in 1m"), "{queued}");
    let waiting = ok(project.run(&["dao", "status", prefix, "--from", "dev:0"]));
    assert!(
        waiting.contains("state    Queued")
            && waiting.contains(&format!("next     `autonomy dao execute {prefix}` in 1m")),
        "{waiting}"
    );
    let too_soon = failed(project.run(&["dao", "execute", prefix, "--from", "dev:4"]));
    assert!(too_soon.contains("cannot execute"), "{too_soon}");
    ok(project.run(&["chain", "advance", "61s", "--from", "dev:0"]));
    let executed = ok(project.run(&["dao", "execute", prefix, "--from", "dev:4"]));
    assert!(
        executed.contains("Make version 2 the active version of model 1"),
        "{executed}"
    );
    let listed = ok(project.run(&["models", "list", "--from", "dev:0"]));
    assert!(listed.contains("active version 2"), "{listed}");
    let status = ok(project.run(&["dao", "list", "--from", "dev:0"]));
    assert!(status.contains("Executed"), "{status}");

    // Access to version 2 and sales of assets made with it pay its contributors.
    ok(project.run(&["models", "buy-access", "2", "--from", "dev:5"]));
    std::fs::create_dir_all(root.join("items")).unwrap();
    std::fs::write(root.join("items/fruit.recipe.toml"), RECIPES).unwrap();
    let items = project.path("items");
    ok(project
        .command(&["build", &items, "--model", tuned, "--key", "studio"])
        .output()
        .unwrap());
    let apple = project.path("items/apple.png");
    let published = ok(project.run(&["publish", &apple, "--list", "100", "--json"]));
    let published: serde_json::Value = serde_json::from_str(&published).unwrap();
    assert_eq!(
        published[0]["model_version"], "0x2",
        "minted with the version that made it"
    );
    let bought = ok(project.run(&["market", "buy", &apple, "--from", "dev:6"]));
    assert!(
        bought.contains("model contributors get 2.5 AUTON"),
        "{bought}"
    );
    // dev:8 holds 40 % of version 2: of 10 (access) + 2.5 (sale) = 5 Auton.
    let shown = ok(project.run(&["models", "show", "house", "--from", "dev:0"]));
    let version_2 = &shown[shown.find("version 2").unwrap()..];
    assert!(
        shown.contains("model 1 `house`")
            && shown.contains("kind     community")
            && shown.contains("active   2")
            && version_2.starts_with("version 2 (active)")
            && version_2.contains("parent   1")
            && version_2.contains("revenue  12.5 AUTON received, 0 AUTON paid out")
            && version_2.contains(&format!("{} 40%, can be paid 5 AUTON", dev[8].address())),
        "{shown}"
    );
    let unknown = failed(project.run(&["models", "show", "castle", "--from", "dev:0"]));
    assert!(unknown.contains("no model named `castle`"), "{unknown}");
    let paid = ok(project.run(&["models", "release", "2", "dev:8", "--from", "dev:7"]));
    assert!(paid.contains("paid 5 AUTON"), "{paid}");
    let nothing = failed(project.run(&["models", "release", "2", "dev:8", "--from", "dev:7"]));
    assert!(nothing.contains("NothingToRelease"), "{nothing}");
}

/// The balance `chain accounts` shows for `label` (e.g. `dev:2`).
fn balance_of(accounts: &str, label: &str) -> String {
    let line = accounts
        .lines()
        .find(|line| line.starts_with(&format!("{label} ")))
        .unwrap_or_else(|| panic!("no {label} in {accounts}"));
    line.split_whitespace().nth(2).unwrap().to_string()
}

#[test]
fn faults_and_bad_input_leave_the_chain_consistent() {
    let (project, _) = Project::with_creator();
    let model_dir = tempfile::tempdir().unwrap();
    let model = common::copy_of_shipped_model(model_dir.path());
    let root = project.root.path();
    std::fs::create_dir_all(root.join("items")).unwrap();
    std::fs::write(root.join("items/fruit.recipe.toml"), RECIPES).unwrap();
    // `build` with no folder builds the project's `[watch] folders`.
    let config = std::fs::read_to_string(root.join("autonomy.toml")).unwrap();
    std::fs::write(
        root.join("autonomy.toml"),
        config.replace("folders = [\".\"]", "folders = [\"items\"]"),
    )
    .unwrap();
    let built = ok(project.run(&[
        "build",
        "--model",
        model.to_str().unwrap(),
        "--key",
        "studio",
    ]));
    assert!(built.contains("2 built"), "{built}");
    let apple = project.path("items/apple.png");
    let pear = project.path("items/pear.png");

    // Unknown and unpublished assets.
    let unknown = failed(project.run(&["market", "show", &project.path("items/plum.png")]));
    assert!(unknown.contains("plum.png"), "{unknown}");
    let unpublished = failed(project.run(&["market", "show", &apple]));
    assert!(unpublished.contains("is not minted"), "{unpublished}");

    // A buy killed at any point either happened once or not at all.
    ok(project.run(&["publish", &apple, "--list", "5"]));
    project.interrupted(&["market", "buy", &apple, "--from", "dev:2"], &[0, 40, 150]);
    let shown = ok(project.run(&["market", "show", &apple]));
    if shown.contains("listing    5 AUTON") {
        ok(project.run(&["market", "buy", &apple, "--from", "dev:2"]));
    }
    let buyer = autonomy_contracts::dev_signers()[2].address().to_string();
    let shown = ok(project.run(&["market", "show", &apple]));
    assert!(shown.contains(&format!("owner      {buyer}")), "{shown}");
    let accounts = ok(project.run(&["chain", "accounts", "--from", "dev:0"]));
    assert_eq!(
        balance_of(&accounts, "dev:2"),
        "999995",
        "paid once: {accounts}"
    );
    assert!(
        accounts.contains("owed 4.875 AUTON"),
        "seller and royalty: {accounts}"
    );
    let gone = failed(project.run(&["market", "buy", &apple, "--from", "dev:3"]));
    assert!(gone.contains("not listed"), "{gone}");

    // Not enough Auton: refused before anything is sent, with what to do.
    ok(project.run(&["publish", &pear, "--list", "2000000"]));
    let poor = failed(project.run(&["market", "buy", &pear, "--from", "dev:3"]));
    assert!(
        poor.contains("holds 1000000 AUTON but the price is 2000000 AUTON")
            && poor.contains("faucet"),
        "{poor}"
    );
    let accounts = ok(project.run(&["chain", "accounts", "--from", "dev:0"]));
    assert_eq!(balance_of(&accounts, "dev:3"), "1000000");

    // An amount that is not one.
    let bad_amount = failed(project.run(&["market", "list", &pear, "12.3.4"]));
    assert!(bad_amount.contains("12.3.4"), "{bad_amount}");
}

#[test]
fn a_wrong_network_is_refused_with_what_to_do() {
    let (project, _) = Project::with_creator();
    let anvil = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(anvil.exists(), "run `npm ci` first: {}", anvil.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut node = Command::new(anvil)
        .args(["--port", &port.to_string(), "--silent"])
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "anvil did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let config =
        format!("[chain]\nkind = \"rpc\"\nurl = \"http://127.0.0.1:{port}\"\nchain_id = 1\n");
    std::fs::write(project.root.path().join("autonomy.toml"), &config).unwrap();
    let wrong = failed(project.run(&["chain", "status", "--from", "dev:0"]));
    std::fs::write(
        project.root.path().join("autonomy.toml"),
        config.replace("chain_id = 1", "chain_id = 31337"),
    )
    .unwrap();
    let undeployed = failed(project.run(&["chain", "status", "--from", "dev:0"]));
    let deployed = project.run(&["chain", "deploy", "--from", "dev:0"]);
    let status = project.run(&["chain", "status", "--from", "dev:0"]);
    let _ = node.kill();
    let _ = node.wait();
    assert!(
        wrong.contains("serves chain id 31337, expected chain id 1"),
        "{wrong}"
    );
    assert!(undeployed.contains("autonomy chain deploy"), "{undeployed}");
    assert!(ok(deployed).contains("suite deployed on chain 31337"));
    assert!(ok(status).contains("chain id     31337"));
}

/// A js-ipfs node (`scripts/ipfs-node.mjs`) serving the HTTP RPC API, stopped when dropped.
struct IpfsNode {
    process: std::process::Child,
    url: String,
    _repo: tempfile::TempDir,
}

impl IpfsNode {
    fn start() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        assert!(
            root.join("node_modules/ipfs-core").exists(),
            "run `npm ci` first"
        );
        let repo = tempfile::tempdir().unwrap();
        let mut process = Command::new("node")
            .arg(root.join("scripts/ipfs-node.mjs"))
            .arg(repo.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(process.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(
            line.starts_with("http://"),
            "the node did not start: {line:?}"
        );
        Self {
            process,
            url: line.trim().to_string(),
            _repo: repo,
        }
    }

    /// POSTs an RPC call with no body and returns the response body, which must be a success.
    fn call(&self, path_and_query: &str) -> Vec<u8> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (status, body) = runtime.block_on(async {
            let response = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap()
                .post(format!("{}{path_and_query}", self.url))
                .send()
                .await
                .unwrap();
            (response.status(), response.bytes().await.unwrap())
        });
        assert!(
            status.is_success(),
            "{path_and_query}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        body.to_vec()
    }
}

impl Drop for IpfsNode {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[test]
fn published_files_are_pinned_on_the_projects_ipfs_node_under_their_cids() {
    let (project, _) = Project::with_creator();
    project.build_items();
    let root = project.root.path();
    let apple = project.path("items/apple.png");
    let config = std::fs::read_to_string(root.join("autonomy.toml")).unwrap();
    let use_node = |url: &str| {
        std::fs::write(
            root.join("autonomy.toml"),
            config.replace(
                "# ipfs = \"http://127.0.0.1:5001\"",
                &format!("ipfs = \"{url}\""),
            ),
        )
        .unwrap();
    };

    // A node that is not running: refused before anything is minted, with what to check.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    use_node(&format!("http://127.0.0.1:{closed}"));
    let down = failed(project.run(&["publish", &apple]));
    assert!(
        down.contains(&format!("IPFS node http://127.0.0.1:{closed}"))
            && down.contains("is it running"),
        "{down}"
    );
    let unminted = failed(project.run(&["market", "show", &apple]));
    assert!(unminted.contains("is not minted"), "{unminted}");

    // With the node up, every file, the manifest and the metadata are pinned there under the
    // CIDs the metadata names, byte for byte what the local store holds.
    let node = IpfsNode::start();
    use_node(&node.url);
    let published = ok(project.run(&["publish", &apple, "--json"]));
    let published: serde_json::Value = serde_json::from_str(&published).unwrap();
    assert_eq!(published[0]["minted_now"], true);
    let metadata_cid = published[0]["metadata_uri"]
        .as_str()
        .unwrap()
        .strip_prefix("ipfs://")
        .unwrap()
        .to_string();
    let store = root.join(".autonomy/store");
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join(&metadata_cid)).unwrap()).unwrap();
    let uri_cid = |uri: &serde_json::Value| {
        uri.as_str()
            .unwrap()
            .strip_prefix("ipfs://")
            .unwrap()
            .to_string()
    };
    let mut cids = vec![
        metadata_cid,
        uri_cid(&metadata["image"]),
        uri_cid(&metadata["properties"]["provenance"]),
    ];
    for file in metadata["properties"]["files"].as_array().unwrap() {
        cids.push(uri_cid(&file["uri"]));
    }
    assert!(cids.len() >= 4, "{metadata}");
    for cid in &cids {
        assert_eq!(
            node.call(&format!("/api/v0/block/get?arg={cid}")),
            std::fs::read(store.join(cid)).unwrap(),
            "{cid} on the node"
        );
        // An unpinned CID is an error answer (`call` asserts 200).
        let pin = String::from_utf8(node.call(&format!("/api/v0/pin/ls?arg={cid}"))).unwrap();
        assert!(pin.contains("\"recursive\""), "{cid}: {pin}");
    }
    assert_eq!(
        node.call(&format!("/api/v0/cat?arg={}", cids[1])),
        std::fs::read(&apple).unwrap(),
        "the image reads back with `ipfs cat`"
    );

    // Publishing again pushes again (harmless) and mints nothing.
    let again = ok(project.run(&["publish", &apple]));
    assert!(again.contains("already minted"), "{again}");
}
