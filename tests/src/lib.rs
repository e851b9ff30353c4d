//! End-to-end harness for casesync: a real `casesync serve` process on a
//! fresh data directory and a free port, an HTTP client for its API, and
//! Rust test devices that drive `sync_core::engine::Device` over a real
//! WebSocket.
//!
//! - [`TestServer`]: start, stop (SIGTERM), kill (SIGKILL) and restart the
//!   server on the same data directory; mint tokens with `casesync token`;
//!   run `casesync check`.
//! - [`Api`]: the HTTP API (`/api/cases`, `/metrics`, `/healthz`).
//! - [`TestDevice`]: one phone. Its connection runs in a background task,
//!   so a device keeps syncing while the test does other things, like a
//!   real app would; edits, reads and waits go through the device.
//! - [`RawSocket`]: a WebSocket that sends whatever bytes it is told, for
//!   hostile peers and handshake tests.
//! - [`wait`]: waiting with a timeout until devices converge, until their
//!   changes are acknowledged, or until any predicate holds.
//! - [`workload`]: random valid case edits from a seeded RNG.
//! - [`powercut`]: an in-memory FUSE filesystem that drops every write not
//!   made durable by `fsync`, for the power-loss test.
//!
//! The harness runs the binary at `$CASESYNC_BIN`, or else
//! `<workspace>/target/debug/casesync`; build it first
//! (`cargo build -p casesync-server --bin casesync`; `cargo test
//! --workspace` builds it as a side effect of the server's own tests).

mod api;
mod device;
mod error;
pub mod powercut;
mod raw;
mod server;
pub mod wait;
pub mod workload;

pub use api::{Api, CaseView, CreatedCase, Metrics};
pub use device::{CloseRecord, DeviceState, TestDevice};
pub use error::HarnessError;
pub use raw::{upgrade_status, RawSocket, Received, WsAuth};
pub use server::{binary_path, ServerOptions, TestServer, TokenRequest};

/// Milliseconds since the Unix epoch, for the `now_ms` of model edits.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
