//! Server configuration: one struct, filled from flags, environment
//! variables or a TOML config file (flags win over the environment, which
//! wins over the file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sync_core::guard::Limits;

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Limits on inbound bytes (frame size, CBOR, sync messages…).
    pub limits: Limits,
    /// Messages and bytes per second, per connection and per user.
    pub rate: crate::ratelimit::RateLimits,
    /// A document with no sessions for this long is unloaded.
    pub idle_unload: Duration,
    /// tungstenite's per-connection read buffer (its default is 128 KiB).
    pub ws_read_buffer: usize,
    /// How often the server pings each socket.
    pub ping_interval: Duration,
    /// A socket from which nothing at all (frames, pongs) arrived for this
    /// long is closed. Generous on purpose: one late pong never drops a
    /// peer in the middle of a sync.
    pub idle_timeout: Duration,
    /// Where the field app and the admin console are served from, if built.
    pub app_dir: Option<PathBuf>,
    pub admin_dir: Option<PathBuf>,
}

impl Config {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            limits: Limits::default(),
            rate: crate::ratelimit::RateLimits::default(),
            idle_unload: Duration::from_secs(60),
            ws_read_buffer: 8 * 1024,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(90),
            app_dir: default_dir("client-wasm/dist"),
            admin_dir: None,
        }
    }
}

/// A web app's directory when it has been built (`scripts/run.sh` builds it
/// before starting the server, from the repository root).
fn default_dir(path: &str) -> Option<PathBuf> {
    let p = PathBuf::from(path);
    p.join("index.html").is_file().then_some(p)
}

/// The optional config file (`--config FILE`). Unknown keys are an error,
/// so a typo does not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub idle_unload_secs: Option<u64>,
    pub max_frame_bytes: Option<usize>,
    pub rate_conn_messages_per_sec: Option<u32>,
    pub rate_conn_bytes_per_sec: Option<u32>,
    pub rate_user_messages_per_sec: Option<u32>,
    pub rate_user_bytes_per_sec: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}
