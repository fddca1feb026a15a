//! # Autonomy pipeline
//!
//! The engine-free core of Autonomy: it turns prompts into game art with models a team can
//! own, and records where every asset came from.
//!
//! - Models sit behind one trait, [`generator::Generator`]. Today that is the **house model**
//!   ([`models::house`]), a small text-to-sprite diffusion model that Autonomy trains itself
//!   on openly licensed icon sets ([`dataset`], [`train`]) and ships, so generation works on
//!   a fresh machine with no download and no GPU.
//! - [`recipe`] reads `*.recipe.toml` files; [`build`] makes their assets (with [`post`] and
//!   [`material`] post-processing) into a content-addressed cache and beside the recipes, each
//!   with a provenance manifest, signed with a creator key from [`keys`]; [`watch`] rebuilds
//!   on save; [`verify`] checks (and reproduces) assets.
//! - [`economy`] publishes assets as NFTs with their provenance through the
//!   [`autonomy_contracts::Ledger`], keeping their files in a content store.
//!
//! ```no_run
//! use autonomy_pipeline::build::{self, BuildOptions};
//!
//! // Make every asset described under `assets/`, beside its recipe.
//! let options = BuildOptions::new("assets".as_ref(), "models/house".as_ref());
//! let report = build::build(&options, &|event| println!("{event:?}"))?;
//! assert!(!report.failed());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod atomic;
pub mod bench;
pub mod build;
pub mod credentials;
pub mod dataset;
pub mod device;
pub mod economy;
pub mod generator;
pub mod keys;
pub mod material;
pub mod models;
pub mod post;
pub mod recipe;
pub mod train;
pub mod verify;
pub mod watch;
