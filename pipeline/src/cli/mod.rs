//! The economy subcommands of the `autonomy` binary, one file per command group.

pub mod chain;
pub mod dao;
pub mod market;
pub mod models;
pub mod publish;
pub mod session;
