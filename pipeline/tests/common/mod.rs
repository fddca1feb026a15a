//! Helpers shared by the end-to-end tests (each test binary uses some of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use autonomy_pipeline::models::house::files;
use image::RgbaImage;

pub mod sd;

/// The crate folder: cargo's at run time, so that a test binary copied to a GPU machine finds
/// the fixtures in that machine's checkout, else the one it was built in.
pub fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Mean absolute difference per channel value (0–255) between two images of one size.
pub fn mean_difference(a: &RgbaImage, b: &RgbaImage) -> f64 {
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

/// Copies the folder `from` with everything in it to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

/// A copy of the shipped house model in `into`: a training run may rewrite `models/house`
/// while tests run.
pub fn copy_of_shipped_model(into: &Path) -> PathBuf {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/house");
    for file in [files::CONFIG, files::WEIGHTS, files::VOCAB, files::DATASET] {
        std::fs::copy(shipped.join(file), into.join(file)).unwrap();
    }
    into.to_path_buf()
}

/// The `autonomy` CLI as a creator uses it: its own key folder and password, a copy of the
/// shipped model and an empty project folder.
pub struct Studio {
    keys: tempfile::TempDir,
    project: tempfile::TempDir,
    _model_dir: tempfile::TempDir,
    /// The model folder to pass as `--model`.
    pub model: String,
}

impl Studio {
    /// A fresh key folder, model copy and project folder.
    pub fn new() -> Self {
        let model_dir = tempfile::tempdir().unwrap();
        let model = copy_of_shipped_model(model_dir.path());
        Self {
            keys: tempfile::tempdir().unwrap(),
            project: tempfile::tempdir().unwrap(),
            model: model.to_str().unwrap().to_string(),
            _model_dir: model_dir,
        }
    }

    /// The project folder.
    pub fn root(&self) -> &Path {
        self.project.path()
    }

    /// `autonomy build` of the project with the model copy, signed with key `key`; must succeed.
    pub fn build_signed(&self, key: &str) {
        let root = self.root().to_str().unwrap();
        let built = self.run(&["build", root, "--model", &self.model, "--key", key]);
        assert!(built.status.success(), "{built:?}");
    }

    /// Runs `autonomy build <project> --json` with the studio's model, signed with `key` when
    /// given, and returns its report.
    pub fn build_report(&self, key: Option<&str>) -> serde_json::Value {
        let root = self.root().to_str().unwrap();
        let mut args = vec!["build", root, "--json", "--model", &self.model];
        if let Some(key) = key {
            args.extend(["--key", key]);
        }
        let out = self.run(&args);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs `autonomy verify <path> --reproduce` with the studio's model.
    pub fn reproduce(&self, path: &std::path::Path) -> std::process::Output {
        self.run(&[
            "verify",
            path.to_str().unwrap(),
            "--reproduce",
            "--model",
            &self.model,
        ])
    }

    /// Runs `autonomy args…` and waits for it.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_autonomy"))
            .args(args)
            .env("AUTONOMY_KEYS", self.keys.path())
            .env("AUTONOMY_KEY_PASSWORD", "correct horse battery staple")
            .output()
            .unwrap()
    }

    /// Makes the key `name` (`autonomy keys new`); returns its address.
    pub fn new_key(&self, name: &str) -> String {
        let made = self.run(&["keys", "new", name]);
        assert!(made.status.success(), "{made:?}");
        let address = String::from_utf8(made.stdout).unwrap().trim().to_string();
        assert!(
            address.starts_with("0x") && address.len() == 42,
            "{address}"
        );
        address
    }
}
