//! `autonomy watch` driven by real file events: edits rebuild what they affect (and the assets
//! made from them), broken recipes are reported while the watcher keeps going, deleted recipes
//! lose their outputs, and Ctrl-C stops it cleanly.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn shipped_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/house")
}

/// Waits for a line of the watcher's log containing `needle`; returns the lines seen.
fn wait_for(lines: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!("the watcher never said `{needle}`; it said: {seen:#?}");
}

fn sprite(prompt: &str, seed: u32) -> String {
    format!("kind = \"sprite\"\nprompt = \"{prompt}\"\nseed = {seed}\nsize = 32\n")
}

fn hash(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn watch_rebuilds_reports_removes_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("apple.recipe.toml"), sprite("red apple flat", 1)).unwrap();
    std::fs::write(
        root.join("pale.recipe.toml"),
        "kind = \"sprite\"\nprompt = \"green apple flat\"\nsource = \"recipe:apple\"\nstrength = 0.5\nsize = 32\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_autonomy"))
        .arg("watch")
        .arg(root)
        .arg("--model")
        .arg(shipped_model())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    wait_for(&lines, "built pale");
    // Its own reads and writes are not changes: a settled watcher stays quiet.
    std::thread::sleep(Duration::from_millis(1500));
    let chatter: Vec<String> = lines.try_iter().collect();
    assert!(
        chatter.iter().all(|l| !l.contains("changed")),
        "the watcher reacts to itself: {chatter:#?}"
    );
    let (apple, pale) = (hash(&root.join("apple.png")), hash(&root.join("pale.png")));

    // An edit rebuilds the asset and the one made from it.
    std::fs::write(root.join("apple.recipe.toml"), sprite("red apple flat", 2)).unwrap();
    let log = wait_for(&lines, "built pale");
    assert!(
        log.iter().any(|l| l.contains("changed: apple.recipe.toml")),
        "{log:#?}"
    );
    assert!(log.iter().any(|l| l.contains("built apple")), "{log:#?}");
    assert_ne!(hash(&root.join("apple.png")), apple);
    assert_ne!(hash(&root.join("pale.png")), pale);

    // A broken recipe is an error naming file, line and field; the watcher keeps going and
    // keeps the outputs until the recipe is fixed.
    std::fs::write(
        root.join("apple.recipe.toml"),
        "kind = \"sprite\"\nprompt = \"red apple flat\"\nsize = 0\n",
    )
    .unwrap();
    let log = wait_for(&lines, "apple.recipe.toml:3");
    assert!(log.iter().any(|l| l.contains("size")), "{log:#?}");
    assert!(root.join("apple.png").exists());
    std::fs::write(root.join("apple.recipe.toml"), sprite("red apple flat", 3)).unwrap();
    wait_for(&lines, "built apple");

    // A deleted recipe takes its outputs with it.
    std::fs::write(
        root.join("coin.recipe.toml"),
        sprite("coin flat objects", 1),
    )
    .unwrap();
    wait_for(&lines, "built coin");
    assert!(root.join("coin.png").exists());
    std::fs::remove_file(root.join("coin.recipe.toml")).unwrap();
    wait_for(&lines, "removed coin");
    assert!(!root.join("coin.png").exists());
    assert!(!root.join("coin.prov.json").exists());

    // Ctrl-C stops it cleanly.
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for(&lines, "stopped");
    assert!(child.wait().unwrap().success());
}
