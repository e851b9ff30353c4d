//! The sans-IO protocol engine.
//!
//! Inputs come in through `handle_*` methods, effects go out through `poll_*`
//! methods. Nothing here reads a clock, draws randomness or does IO: the
//! server's tokio driver and the wasm client's JS driver move the bytes.
//!
//! - [`DocSync`]: one document with many peers, and the durability gate.
//! - [`ServerSession`]: the server's side of one connection.
//! - [`Device`]: a device's documents and its link to the server.
//! - [`cold`]: the first reply to a device that has nothing, from storage.

pub mod cold;
pub mod device;
pub mod doc;
pub mod session;

pub use device::{Device, DeviceError, DeviceEvent, DeviceStore};
pub use doc::{DocSync, DocSyncError, PersistRequest};
pub use session::{Access, Policy, ServerSession, SessionError, SessionEvent};
