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
    /// The database key (encryption at rest, `store::key`); `None`: a plain
    /// database. Never logged: its `Debug` is redacted.
    pub db_key: Option<crate::store::DbKey>,
    /// Limits on inbound bytes (frame size, CBOR, sync messages…).
    pub limits: Limits,
    /// Messages and bytes per second, per connection and per user.
    pub rate: crate::ratelimit::RateLimits,
    /// Token verification: the `[auth]` section of the config file, or
    /// `None` to trust only the data directory's development key.
    pub auth: Option<AuthFileConfig>,
    /// Test-only: see `DocsConfig::panic_marker`. No flag or file key sets
    /// it.
    pub test_panic_marker: Option<String>,
    /// A document with no sessions for this long is unloaded.
    pub idle_unload: Duration,
    /// tungstenite's per-connection read buffer (its default is 128 KiB).
    pub ws_read_buffer: usize,
    /// How often the server pings each socket.
    pub ping_interval: Duration,
    /// A socket from which nothing at all (frames, pongs) arrived for this
    /// long after a ping, and which took in nothing we sent, is closed; so
    /// is one whose writer queue stayed full this long. Generous on
    /// purpose: one late pong never drops a peer in the middle of a sync.
    pub idle_timeout: Duration,
    /// How long a case waits for a device to answer a sync message that
    /// carried changes before it sends that device more (see
    /// `DocsConfig::reply_wait`).
    pub reply_wait: Duration,
    /// Where the field app and the admin console are served from, if built.
    pub app_dir: Option<PathBuf>,
    pub admin_dir: Option<PathBuf>,
}

impl Config {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            db_key: None,
            limits: Limits::default(),
            rate: crate::ratelimit::RateLimits::default(),
            auth: None,
            test_panic_marker: None,
            idle_unload: Duration::from_secs(60),
            // Every connection holds this much while idle, and sync frames
            // are mostly far smaller. A bigger frame gets room for its whole
            // length from its header, then arrives in reads of this size:
            // 1 KiB reads cost several milliseconds on a 16 MiB frame, the
            // largest allowed, and little on the frames devices send.
            ws_read_buffer: 1024,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(90),
            reply_wait: crate::docs::DocsConfig::default().reply_wait,
            app_dir: default_dir("client-wasm/dist"),
            admin_dir: default_dir("admin"),
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
    pub auth: Option<AuthFileConfig>,
    pub storage: Option<StorageFileConfig>,
}

/// The `[storage]` section.
///
/// ```toml
/// [storage]
/// key_file = "/etc/casesync/db.key"   # mode 0600; encrypts the database
/// ```
///
/// The key itself is never a config value: a config file is often shared,
/// copied and kept in version control.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageFileConfig {
    pub key_file: Option<PathBuf>,
}

/// The `[auth]` section: which tokens the server accepts.
///
/// ```toml
/// [auth]
/// algorithm = "RS256"          # EdDSA, RS256, or HS256 (development only)
/// issuer = "https://id.example.org"
/// audience = "casesync"
/// leeway_secs = 30
/// trust_dev_key = false        # EdDSA only: also accept `casesync token`
///
/// [[auth.keys]]                # several at once, to rotate
/// kid = "2026-11"
/// pem_file = "/etc/casesync/idp-2026-11.pem"
/// ```
///
/// Keys come only from here: a token's header never makes the server fetch
/// or choose a key (`jku`, `x5u`, `jwk` are refused).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFileConfig {
    pub algorithm: String,
    pub issuer: String,
    pub audience: String,
    pub leeway_secs: Option<u64>,
    #[serde(default)]
    pub trust_dev_key: bool,
    #[serde(default)]
    pub keys: Vec<KeyFileConfig>,
}

/// One verification key: a public key PEM (EdDSA, RS256) or a secret
/// (HS256).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFileConfig {
    pub kid: String,
    pub pem_file: Option<PathBuf>,
    pub secret_file: Option<PathBuf>,
}

impl AuthFileConfig {
    /// Whether `casesync token` (the development key) may mint tokens this
    /// configuration accepts.
    pub fn trusts_dev_key(&self) -> bool {
        self.trust_dev_key && self.algorithm == "EdDSA"
    }

    /// Reads the key files and builds the verifier's configuration; with
    /// `trust_dev_key`, `dev` is trusted too (under its own `kid`).
    pub fn build(&self, dev: &crate::auth::DevKeys) -> Result<crate::auth::AuthConfig, String> {
        use crate::auth::{AuthConfig, TokenAlgorithm, VerificationKey};
        let algorithm: TokenAlgorithm = self
            .algorithm
            .parse()
            .map_err(|e| format!("[auth] algorithm: {e}"))?;
        let mut keys = Vec::new();
        for key in &self.keys {
            let read = |path: &Path| {
                std::fs::read(path)
                    .map_err(|e| format!("[auth] key {}: {}: {e}", key.kid, path.display()))
            };
            let built = match (algorithm, &key.pem_file, &key.secret_file) {
                (TokenAlgorithm::EdDsa, Some(pem), None) => {
                    VerificationKey::ed25519_pem(key.kid.clone(), &read(pem)?)
                }
                (TokenAlgorithm::Rs256, Some(pem), None) => {
                    VerificationKey::rsa_pem(key.kid.clone(), &read(pem)?)
                }
                (TokenAlgorithm::Hs256Development, None, Some(secret)) => {
                    VerificationKey::hmac_secret(key.kid.clone(), &read(secret)?)
                }
                _ => {
                    return Err(format!(
                        "[auth] key {}: give pem_file for EdDSA and RS256, secret_file for HS256",
                        key.kid
                    ))
                }
            };
            keys.push(built.map_err(|e| format!("[auth] key {}: {e}", key.kid))?);
        }
        if self.trust_dev_key {
            if algorithm != TokenAlgorithm::EdDsa {
                return Err("[auth] trust_dev_key needs algorithm = \"EdDSA\"".into());
            }
            keys.push(dev.verification_key().map_err(|e| e.to_string())?);
        }
        let config = AuthConfig::new(algorithm, self.issuer.clone(), self.audience.clone(), keys)
            .map_err(|e| format!("[auth] {e}"))?;
        match self.leeway_secs {
            Some(secs) => config
                .with_leeway_secs(secs)
                .map_err(|e| format!("[auth] {e}")),
            None => Ok(config),
        }
    }
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
