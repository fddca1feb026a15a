//! The creator economy through the CLI on the embedded chain: init, a signed build, publish
//! (idempotent, killed and resumed), the marketplace (show, buy with every payee accounted
//! for, withdraw), chain status and accounts, and the refusals (tampered asset, nothing to buy).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use autonomy_pipeline::models::house::files;

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

/// A copy of the shipped model: a training run may rewrite `models/house` meanwhile.
fn shipped_model(into: &Path) -> PathBuf {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/house");
    for file in [files::CONFIG, files::WEIGHTS, files::VOCAB, files::DATASET] {
        std::fs::copy(shipped.join(file), into.join(file)).unwrap();
    }
    into.to_path_buf()
}

struct Project {
    root: tempfile::TempDir,
    keys: tempfile::TempDir,
}

impl Project {
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
    let project = Project {
        root: tempfile::tempdir().unwrap(),
        keys: tempfile::tempdir().unwrap(),
    };
    let model_dir = tempfile::tempdir().unwrap();
    let model = shipped_model(model_dir.path());
    let root = project.root.path();

    // A project with a creator key and two signed sprites.
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
    std::fs::create_dir_all(root.join("items")).unwrap();
    std::fs::write(root.join("items/fruit.recipe.toml"), RECIPES).unwrap();
    let items = project.path("items");
    ok(project
        .command(&[
            "build",
            &items,
            "--model",
            model.to_str().unwrap(),
            "--key",
            "studio",
        ])
        .output()
        .unwrap());

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
    for delay in [0u64, 30, 120, 400] {
        let mut args = vec!["publish", pear_arg.as_str(), "--list", "3", "--project"];
        args.push(root.to_str().unwrap());
        let mut child = project
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
    }
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
