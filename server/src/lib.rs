//! casesync's sync service: the library behind the `casesync` binary.
//!
//! `app(state)` builds the router (for tests, with no socket), and
//! `run(listener, config, shutdown)` serves it.

pub mod acl;
pub mod api;
pub mod app;
pub mod audit;
pub mod audit_api;
pub mod auth;
pub mod check;
pub mod config;
pub mod docs;
pub mod error;
pub mod history_api;
pub mod http_sync;
pub mod identity;
pub mod members_api;
pub mod metrics;
pub mod ratelimit;
pub mod restore;
pub mod store;
pub mod ws;

pub use app::{app, run, AppState};
pub use config::Config;
