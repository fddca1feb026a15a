//! Image generators. The house model ships with Autonomy and runs anywhere.

pub mod house;
pub mod locate;
