//! The harness's one error type.

use std::path::PathBuf;

/// Why a harness operation failed. Tests usually `expect` these; a load
/// generator may count them.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("casesync binary not found at {0} (build it with `cargo build -p casesync-server --bin casesync`, or set CASESYNC_BIN)")]
    BinaryMissing(PathBuf),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server did not start: {0}")]
    Start(String),
    #[error("`casesync {command}` failed: {message}")]
    Command {
        command: &'static str,
        message: String,
    },
    #[error("timed out after {secs:.1} s waiting for {what}")]
    Timeout { what: String, secs: f64 },
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("unexpected HTTP status {status} from {what}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the server refused the WebSocket upgrade with HTTP {0}")]
    UpgradeRefused(u16),
    #[error("unexpected response: {0}")]
    Unexpected(String),
    #[error("model: {0}")]
    Model(#[from] sync_core::model::ModelError),
    #[error("device: {0}")]
    Device(#[from] sync_core::engine::DeviceError),
    #[error("the server is not running")]
    NotRunning,
}
