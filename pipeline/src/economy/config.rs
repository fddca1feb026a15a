//! `autonomy.toml`: which chain, which creator key, where the content store is.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::EconomyError;
use super::ipfs::IpfsNode;
use super::store::ContentStore;

/// The file name looked for in the project root.
pub const CONFIG_FILE: &str = "autonomy.toml";

/// What `autonomy init` writes: every key, commented.
pub const TEMPLATE: &str = r#"# Autonomy project settings. Paths are relative to this file.

[chain]
# "embedded": an in-process EVM whose state lives in `dir` (the default, for development).
# "rpc": any EVM chain over JSON-RPC; `autonomy chain deploy` deploys the suite and writes
# `deployment`, or point `deployment` at the addresses of a suite deployed before.
kind = "embedded"
dir = ".autonomy/chain"
# url = "http://127.0.0.1:8545"
# chain_id = 31337
# deployment = ".autonomy/deployment.json"

[creator]
# The key (from `autonomy keys new <name>`) that signs manifests and sends transactions.
# Its password comes from AUTONOMY_KEY_PASSWORD or a prompt.
# key = "studio"

[store]
# Every published file, its manifest and its ERC-721 metadata, stored by CID.
dir = ".autonomy/store"
# Also push them to an IPFS node over its HTTP RPC API (Kubo's `Addresses.API`; js-ipfs too),
# pinned, under the same CIDs, before anything is minted.
# ipfs = "http://127.0.0.1:5001"

[watch]
# Recipe folders `autonomy build` and `autonomy watch` use when given none.
folders = ["."]

[models]
# Where `model = "registry:<name>"` looks for the weights of a model's active version: every
# folder below these holding a model.safetensors, matched by its sha256.
dirs = ["models", ".autonomy/models"]
"#;

/// The chain a project talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainConfig {
    /// The in-process EVM persisted in `dir`.
    Embedded {
        /// Its state folder.
        dir: PathBuf,
    },
    /// A JSON-RPC endpoint.
    Rpc {
        /// The endpoint.
        url: String,
        /// The chain id the endpoint must serve.
        chain_id: u64,
        /// The suite's addresses, as `autonomy chain deploy` saves them.
        deployment: PathBuf,
    },
}

/// A parsed `autonomy.toml`, paths resolved against its folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The project root (the file's folder).
    pub root: PathBuf,
    /// The chain.
    pub chain: ChainConfig,
    /// The creator key's name, if set.
    pub creator_key: Option<String>,
    /// The content store folder.
    pub store: PathBuf,
    /// The RPC API of the IPFS node published files are pushed to, if any.
    pub ipfs: Option<String>,
    /// Folders searched for registry models' weights.
    pub model_dirs: Vec<PathBuf>,
    /// Recipe folders built and watched when none is named.
    pub recipe_dirs: Vec<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    chain: RawChain,
    #[serde(default)]
    creator: RawCreator,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    models: RawModels,
    #[serde(default)]
    watch: RawWatch,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    #[serde(default = "default_recipe_dirs")]
    folders: Vec<PathBuf>,
}

impl Default for RawWatch {
    fn default() -> Self {
        Self {
            folders: default_recipe_dirs(),
        }
    }
}

fn default_recipe_dirs() -> Vec<PathBuf> {
    vec![".".into()]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModels {
    #[serde(default = "default_model_dirs")]
    dirs: Vec<PathBuf>,
}

impl Default for RawModels {
    fn default() -> Self {
        Self {
            dirs: default_model_dirs(),
        }
    }
}

fn default_model_dirs() -> Vec<PathBuf> {
    vec!["models".into(), ".autonomy/models".into()]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    #[serde(default = "default_kind")]
    kind: String,
    #[serde(default = "default_chain_dir")]
    dir: PathBuf,
    url: Option<String>,
    chain_id: Option<u64>,
    #[serde(default = "default_deployment")]
    deployment: PathBuf,
}

impl Default for RawChain {
    fn default() -> Self {
        Self {
            kind: default_kind(),
            dir: default_chain_dir(),
            url: None,
            chain_id: None,
            deployment: default_deployment(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCreator {
    key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default = "default_store_dir")]
    dir: PathBuf,
    ipfs: Option<String>,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            dir: default_store_dir(),
            ipfs: None,
        }
    }
}

fn default_kind() -> String {
    "embedded".into()
}

fn default_chain_dir() -> PathBuf {
    ".autonomy/chain".into()
}

fn default_deployment() -> PathBuf {
    ".autonomy/deployment.json".into()
}

fn default_store_dir() -> PathBuf {
    ".autonomy/store".into()
}

impl Config {
    /// The settings of the project at `root`: its `autonomy.toml`, or the defaults (embedded
    /// chain, no creator key) when there is none.
    pub fn load(root: &Path) -> Result<Self, EconomyError> {
        let path = root.join(CONFIG_FILE);
        let raw: RawConfig = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|error| EconomyError::Config {
                path: path.clone(),
                message: error.to_string(),
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => RawConfig::default(),
            Err(source) => return Err(EconomyError::Io { path, source }),
        };
        let chain = match raw.chain.kind.as_str() {
            "embedded" => ChainConfig::Embedded {
                dir: root.join(&raw.chain.dir),
            },
            "rpc" => {
                let missing = |key: &str| EconomyError::Config {
                    path: path.clone(),
                    message: format!("[chain] kind = \"rpc\" needs `{key}`"),
                };
                ChainConfig::Rpc {
                    url: raw.chain.url.ok_or_else(|| missing("url"))?,
                    chain_id: raw.chain.chain_id.ok_or_else(|| missing("chain_id"))?,
                    deployment: root.join(&raw.chain.deployment),
                }
            }
            other => {
                return Err(EconomyError::Config {
                    path,
                    message: format!("[chain] kind = {other:?}: expected \"embedded\" or \"rpc\""),
                });
            }
        };
        Ok(Self {
            root: root.to_path_buf(),
            chain,
            creator_key: raw.creator.key,
            store: root.join(&raw.store.dir),
            ipfs: raw.store.ipfs,
            model_dirs: raw.models.dirs.iter().map(|dir| root.join(dir)).collect(),
            recipe_dirs: raw.watch.folders.iter().map(|dir| root.join(dir)).collect(),
        })
    }

    /// The content store, pushing to the IPFS node when one is configured.
    pub fn content_store(&self) -> Result<ContentStore, EconomyError> {
        let store = ContentStore::new(&self.store);
        match &self.ipfs {
            Some(url) => Ok(store.with_ipfs(IpfsNode::new(url)?)),
            None => Ok(store),
        }
    }

    /// Where publish journals are kept.
    pub fn journal_dir(&self) -> PathBuf {
        self.root.join(".autonomy/publish")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_to_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), TEMPLATE).unwrap();
        let config = Config::load(dir.path()).unwrap();
        assert_eq!(config, Config::load(dir.path()).unwrap());
        assert_eq!(config.store, dir.path().join(".autonomy/store"));
        assert_eq!(config.recipe_dirs, [dir.path().join(".")]);
        assert_eq!(
            config.model_dirs,
            [
                dir.path().join("models"),
                dir.path().join(".autonomy/models")
            ]
        );
        assert_eq!(
            config.chain,
            ChainConfig::Embedded {
                dir: dir.path().join(".autonomy/chain")
            }
        );
        assert_eq!(config.creator_key, None);
        assert_eq!(config.ipfs, None);
    }

    #[test]
    fn an_ipfs_node_is_optional_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        let with = |url: &str| {
            TEMPLATE.replace(
                "# ipfs = \"http://127.0.0.1:5001\"",
                &format!("ipfs = {url:?}"),
            )
        };
        std::fs::write(&path, with("http://127.0.0.1:5001")).unwrap();
        let config = Config::load(dir.path()).unwrap();
        assert_eq!(config.ipfs.as_deref(), Some("http://127.0.0.1:5001"));
        assert!(config.content_store().is_ok());
        std::fs::write(&path, with("https://ipfs.example")).unwrap();
        let config = Config::load(dir.path()).unwrap();
        let error = config.content_store().unwrap_err().to_string();
        assert!(error.contains("https://ipfs.example"), "{error}");
    }

    #[test]
    fn rpc_needs_url_and_chain_id_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(
            &path,
            "[chain]\nkind = \"rpc\"\nurl = \"http://127.0.0.1:8545\"\n",
        )
        .unwrap();
        let error = Config::load(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("autonomy.toml") && error.contains("chain_id"),
            "{error}"
        );
        std::fs::write(&path, "[chain]\nkind = \"rpc\"\nurl = \"http://x\"\nchain_id = 5\n[creator]\nkey = \"studio\"\n").unwrap();
        let config = Config::load(dir.path()).unwrap();
        assert_eq!(config.creator_key.as_deref(), Some("studio"));
        assert!(matches!(config.chain, ChainConfig::Rpc { chain_id: 5, .. }));
        std::fs::write(&path, "[chain]\nkind = \"embeded\"\n").unwrap();
        assert!(
            Config::load(dir.path())
                .unwrap_err()
                .to_string()
                .contains("\"embeded\"")
        );
        std::fs::write(&path, "[chian]\n").unwrap();
        let error = Config::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("chian"), "unknown keys are named: {error}");
    }
}
