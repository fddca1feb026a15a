//! # Autonomy pipeline
//!
//! The engine-free core of Autonomy: it turns prompts into game art with models a team can
//! own. Today that is the **house model** ([`models::house`]), a small text-to-sprite
//! diffusion model that Autonomy trains itself on openly licensed icon sets
//! ([`dataset`]) and ships, so generation works on a fresh machine with no download and no
//! GPU. [`train`] trains it from scratch or fine-tunes it on a creator's own images.
//!
//! Data flows one way: dataset → training → model folder → generation.
//!
//! ```no_run
//! use autonomy_pipeline::generator::GenerateRequest;
//! use autonomy_pipeline::models::house::HouseModel;
//!
//! let model = HouseModel::load("models/house".as_ref(), &candle_core::Device::Cpu)?;
//! let images = model.generate(&GenerateRequest {
//!     prompt: "red apple flat".into(),
//!     seed: 7,
//!     ..Default::default()
//! })?;
//! images[0].save("apple.png")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod atomic;
pub mod bench;
pub mod build;
pub mod dataset;
pub mod device;
pub mod generator;
pub mod keys;
pub mod material;
pub mod models;
pub mod post;
pub mod recipe;
pub mod train;
pub mod verify;
pub mod watch;
