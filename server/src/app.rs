//! The application: shared state, the router, and `run`.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::routing::{delete, get, post, put};
use axum::serve::ListenerExt;
use axum::Router;
use sync_core::ids::{DocumentId, PeerId, StorageId};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use crate::acl::Acl;
use crate::auth::{DevKeys, Verifier};
use crate::config::Config;
use crate::docs::{Docs, DocsConfig, DocsHooks};
use crate::identity::{ActorBindings, IdentityStore};
use crate::metrics::Metrics;
use crate::store::{SqliteConfig, SqliteStorage, Storage, Store, StoreConfig};
use crate::{api, history_api, members_api, ws};

/// Shared by every request and connection. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub inner: Arc<AppInner>,
}

#[derive(Debug)]
pub struct AppInner {
    pub config: Config,
    pub store: Store,
    pub verifier: Arc<Verifier>,
    pub acl: Acl,
    /// Memberships, devices, invitations and the quarantine (blocking calls).
    pub identity: Arc<IdentityStore>,
    /// Which device each automerge actor id belongs to.
    pub bindings: Arc<ActorBindings>,
    /// Revocations, for the live connections to close within a second.
    pub revocations: broadcast::Sender<Revocation>,
    /// Messages and bytes per user (and the factory of per-connection
    /// limits).
    pub rate_limits: crate::ratelimit::UserLimits,
    pub docs: Docs,
    pub metrics: Arc<Metrics>,
    /// The hash-chained audit log of security events (`audit`).
    pub audit: crate::audit::AuditLog,
    pub server_peer: PeerId,
    pub storage_id: StorageId,
    pub next_conn: AtomicU64,
    /// Devices syncing over `POST /sync/http`.
    pub http_sessions: crate::http_sync::Sessions,
    /// Flips to `true` when the server shuts down; connections close.
    pub shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
}

impl FromRef<AppState> for Arc<Verifier> {
    fn from_ref(state: &AppState) -> Self {
        state.inner.verifier.clone()
    }
}

/// A revocation that live connections must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Every connection of this device closes.
    Device { user: String, device: String },
    /// Every connection of this user that has the case open closes (it
    /// reconnects in quarantine for that case).
    Member { user: String, case: DocumentId },
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("storage: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("keys: {0}")]
    Keys(String),
    #[error("{0}")]
    Other(String),
}

/// The storage id names this server's database, so devices can keep sync
/// state with it across connections. Created once, kept in the data dir.
fn load_or_create_storage_id(data_dir: &Path) -> Result<StorageId, StartError> {
    let path = data_dir.join("storage-id");
    match std::fs::read_to_string(&path) {
        Ok(s) => StorageId::new(s.trim()).map_err(|e| StartError::Other(format!("{path:?}: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes).map_err(|e| StartError::Other(e.to_string()))?;
            let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_durably(data_dir, &path, id.as_bytes())
                .map_err(|e| StartError::DataDir(path.display().to_string(), e))?;
            StorageId::new(id).map_err(|e| StartError::Other(e.to_string()))
        }
        Err(e) => Err(StartError::DataDir(path.display().to_string(), e)),
    }
}

/// Writes `path` so that a power cut leaves either no file or the whole
/// of `bytes`: a temporary file, fsynced, renamed over `path`, then the
/// directory fsynced. (A plain write left an empty `storage-id` after a
/// cut, and the server then refused to start; found by the power-loss
/// test.)
fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

impl AppState {
    /// Opens the data directory (creating the database and a development
    /// key on first start) and builds the state.
    pub async fn open(config: Config) -> Result<Self, StartError> {
        Self::open_wrapped(config, |storage| storage).await
    }

    /// Like [`Self::open`], with the storage backend passed through `wrap`
    /// first (tests wrap it in `store::faults::FaultyStorage`).
    pub async fn open_wrapped(
        config: Config,
        wrap: impl FnOnce(Arc<dyn Storage>) -> Arc<dyn Storage> + Send + 'static,
    ) -> Result<Self, StartError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StartError::DataDir(config.data_dir.display().to_string(), e))?;
        let keys = DevKeys::load_or_create(&config.data_dir)
            .map_err(|e| StartError::Keys(e.to_string()))?;
        let auth = match &config.auth {
            Some(configured) => configured.build(&keys).map_err(StartError::Keys)?,
            None => keys
                .auth_config()
                .map_err(|e| StartError::Keys(e.to_string()))?,
        };
        let verifier = Arc::new(Verifier::new(auth));
        let storage_id = load_or_create_storage_id(&config.data_dir)?;
        let sqlite = SqliteConfig::new(config.data_dir.clone()).with_key(config.db_key.clone());
        let store = {
            let sqlite = sqlite.clone();
            tokio::task::spawn_blocking(move || -> Result<Store, crate::store::StoreError> {
                let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(sqlite)?);
                Store::start(wrap(storage), StoreConfig::default())
            })
            .await
            .map_err(|e| StartError::Other(e.to_string()))??
        };
        // After the store: it creates the database and the audit_log table.
        let audit = {
            let path = crate::audit::db_path(&config.data_dir);
            let key = config.db_key.clone();
            tokio::task::spawn_blocking(move || crate::audit::AuditLog::open(&path, key.as_ref()))
                .await
                .map_err(|e| StartError::Other(e.to_string()))?
                .map_err(|e| StartError::Other(format!("audit log: {e}")))?
        };
        let db_path = config.data_dir.join(crate::store::DB_FILE_NAME);
        let (acl, identity, bindings) = {
            let storage = store.storage().clone();
            let db_path = db_path.clone();
            let key = config.db_key.clone();
            tokio::task::spawn_blocking(move || -> Result<_, StartError> {
                let identity = IdentityStore::open(&db_path, key.as_ref())
                    .map_err(|e| StartError::Other(e.to_string()))?;
                let acl = Acl::load(storage.as_ref(), &identity)
                    .map_err(|e| StartError::Other(e.to_string()))?;
                let bindings =
                    ActorBindings::load(&identity).map_err(|e| StartError::Other(e.to_string()))?;
                Ok((acl, Arc::new(identity), Arc::new(bindings)))
            })
            .await
            .map_err(|e| StartError::Other(e.to_string()))??
        };
        let (revocations, _) = broadcast::channel(256);
        let (rate, max_frame_bytes) = (config.rate, config.limits.max_frame_bytes);
        let metrics = Arc::new(Metrics::default());
        let docs = Docs::new(
            store.clone(),
            DocsConfig {
                limits: config.limits.clone(),
                idle_unload: config.idle_unload,
                reply_wait: config.reply_wait,
                panic_marker: config.test_panic_marker.clone(),
                ..DocsConfig::default()
            },
            metrics.clone(),
            DocsHooks {
                bindings: bindings.clone(),
                identity: identity.clone(),
                audit: audit.clone(),
            },
        );
        let (shutdown_tx, shutdown) = watch::channel(false);
        Ok(Self {
            inner: Arc::new(AppInner {
                config,
                store,
                verifier,
                acl,
                identity,
                bindings,
                revocations,
                rate_limits: crate::ratelimit::UserLimits::new(rate, max_frame_bytes),
                docs,
                metrics,
                audit,
                server_peer: PeerId::new(format!(
                    "casesync-server-{}",
                    &storage_id.as_str()[..8.min(storage_id.as_str().len())]
                ))
                .map_err(|e| StartError::Other(e.to_string()))?,
                storage_id,
                next_conn: AtomicU64::new(1),
                http_sessions: crate::http_sync::Sessions::default(),
                shutdown,
                shutdown_tx,
            }),
        })
    }

    /// Tells every connection to close.
    pub fn begin_shutdown(&self) {
        let _ = self.inner.shutdown_tx.send(true);
    }
}

/// The content security policy of the web apps: everything from this
/// origin, nothing from anywhere else (no CDNs, fonts or analytics: the
/// people using this are watched).
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
    connect-src 'self'; img-src 'self' blob: data:; style-src 'self'; \
    object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Static files of a web app, with the security headers.
fn web_app(dir: &Path) -> Router {
    use axum::http::{header, HeaderValue};
    use tower_http::services::ServeDir;
    use tower_http::set_header::SetResponseHeaderLayer;
    Router::new()
        .fallback_service(ServeDir::new(dir).append_index_html_on_directories(true))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        // The service worker decides what is cached; the browser must
        // always revalidate so a new version reaches phones.
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
}

/// The router: every route of the service.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    if let Some(dir) = &state.inner.config.app_dir {
        router = router.nest_service("/app/", web_app(dir)).route(
            "/app",
            get(|| async { axum::response::Redirect::permanent("/app/") }),
        );
    }
    if let Some(dir) = &state.inner.config.admin_dir {
        router = router.nest_service("/admin/", web_app(dir)).route(
            "/admin",
            get(|| async { axum::response::Redirect::permanent("/admin/") }),
        );
    }
    router
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/sync", get(ws::sync_socket))
        .route(
            "/sync/http",
            post(crate::http_sync::sync_http).layer(axum::extract::DefaultBodyLimit::max(
                // A few frames of the largest size the guards accept.
                state.inner.config.limits.max_frame_bytes.saturating_mul(4),
            )),
        )
        .route("/api/cases", post(api::create_case).get(api::list_cases))
        .route("/api/cases/{id}", get(api::get_case))
        .route(
            "/api/cases/{id}/invitations",
            post(members_api::create_invitation).get(members_api::list_invitations),
        )
        .route(
            "/api/cases/{id}/invitations/{invitation}",
            delete(members_api::revoke_invitation),
        )
        .route(
            "/api/invitations/{code}/accept",
            post(members_api::accept_invitation),
        )
        .route("/api/cases/{id}/members", get(members_api::list_members))
        .route(
            "/api/cases/{id}/members/{user}",
            delete(members_api::revoke_member),
        )
        .route(
            "/api/cases/{id}/coordinators/{user}",
            put(members_api::assign_coordinator).delete(members_api::remove_coordinator),
        )
        .route("/api/devices", get(members_api::list_devices))
        .route(
            "/api/devices/{device}",
            delete(members_api::revoke_own_device),
        )
        .route(
            "/api/users/{user}/devices/{device}",
            delete(members_api::revoke_user_device),
        )
        .route(
            "/api/cases/{id}/quarantine",
            get(members_api::list_quarantine),
        )
        .route(
            "/api/cases/{id}/quarantine/accept",
            post(members_api::accept_quarantined),
        )
        .route(
            "/api/cases/{id}/quarantine/discard",
            post(members_api::discard_quarantined),
        )
        .route("/api/cases/{id}/history", get(history_api::history))
        .route("/api/cases/{id}/at/{change_hash}", get(history_api::at))
        .route("/api/cases/{id}/diff", get(history_api::diff))
        .route("/api/cases/{id}/blame", get(history_api::blame))
        .route("/api/cases/{id}/conflicts", get(history_api::conflicts))
        .route(
            "/api/cases/{id}/conflicts/resolve",
            post(history_api::resolve),
        )
        .route("/api/cases/{id}/export", get(history_api::export))
        .route(
            "/api/cases/{id}/official-status",
            post(history_api::official_status),
        )
        .route(
            "/api/coordinator/cases",
            get(history_api::coordinator_cases),
        )
        .route("/api/audit", get(crate::audit_api::list_audit))
        .with_state(state)
}

/// The longest a shutdown waits for the loaded cases' snapshots.
const SHUTDOWN_COMPACTION: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then closes every connection, lets the
/// document actors finish their writes, and flushes the store.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let state = AppState::open(config).await?;
    serve(listener, state, shutdown).await
}

/// Like [`run`] with a state the caller built.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let router = app(state.clone());
    let closer = state.clone();
    // Sync frames are small and go out as soon as they are made. With
    // Nagle's algorithm on, a frame written while the previous one was not
    // yet acknowledged waited for the device's delayed ACK (up to 40 ms on
    // Linux): the live fan-out's p95 was about 30 ms with the machine
    // nearly idle.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set on an accepted connection");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            closer.begin_shutdown();
        })
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    // Connections are closed; give the actors a moment to hand their last
    // writes to the store, then flush it.
    for _ in 0..50 {
        if state.inner.metrics.connections.get() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Snapshots of what changed, so the next start loads no long tails.
    // Bounded: the change log already has everything.
    if tokio::time::timeout(SHUTDOWN_COMPACTION, state.inner.docs.compact_all())
        .await
        .is_err()
    {
        tracing::warn!(
            "not every case was compacted before shutdown; their change logs have everything"
        );
    }
    let store = state.inner.store.clone();
    drop(state);
    store
        .shutdown()
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    Ok(())
}
