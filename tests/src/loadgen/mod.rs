//! The load generator behind `src/bin/loadgen.rs`: simulated phones over
//! real WebSockets against casesync or automerge-repo's sync server, the
//! five workloads of DESIGN.md section 8, and the side-by-side table.
//!
//! It is compiled into the `loadgen` binary only (through `#[path]`), so the
//! end-to-end tests that link the harness library do not rebuild when it
//! changes.
//!
//! - [`conn`]: dialing, with a byte counter under the WebSocket.
//! - [`device`]: one simulated phone (sync-core's `Device` engine in a
//!   tokio task of its own) and [`device::Fleet`], many of them at once.
//! - [`target`]: the server under test: tokens, cases, restarts, and its
//!   process (CPU, RSS) through [`procwatch`].
//! - [`workloads`]: storm, idle, fanout, cold, history.
//! - [`compare`]: two results files as one table.

pub mod compare;
pub mod conn;
pub mod device;
pub mod edits;
pub mod error;
pub mod procwatch;
pub mod stats;
pub mod target;
pub mod workloads;

pub use error::LoadError;
