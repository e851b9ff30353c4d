//! casesync's pure core.
//!
//! Architecture invariant: this crate does no IO, reads no clock and draws no
//! randomness. Time, ids and random bytes are always parameters.

pub mod engine;
pub mod guard;
pub mod history;
pub mod ids;
pub mod model;
pub mod protocol;
pub mod view;
