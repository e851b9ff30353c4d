//! The load generator's error: what failed, with enough context to act on.
//! A workload that runs but does not converge is not an error: it is a
//! result with status `failed`.

use casesync_tests::HarnessError;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error(transparent)]
    Harness(#[from] HarnessError),
    #[error("model: {0}")]
    Model(#[from] sync_core::model::ModelError),
    #[error("device engine: {0}")]
    Device(#[from] sync_core::engine::DeviceError),
    #[error("timed out after {secs:.1} s: {what}")]
    Timeout { what: String, secs: f64 },
    #[error("{0}")]
    Other(String),
}

impl LoadError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LoadError {
        let context = context.into();
        move |source| LoadError::Io { context, source }
    }

    pub fn other(message: impl Into<String>) -> LoadError {
        LoadError::Other(message.into())
    }
}
