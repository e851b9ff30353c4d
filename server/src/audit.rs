//! The audit log: an append-only, hash-chained table of security events
//! (authentication failures, refusals, invitations, membership and role
//! changes, revocations, coordinator and admin reads, exports).
//!
//! # What a row holds
//!
//! `audit_log(seq, at_ms, kind, user_id, device_id, doc_id, subject, detail,
//! prev_hash, hash)` (schema version 2, `store/schema.rs`). `detail` is small
//! structured JSON (reasons, counts, ids), capped at [`MAX_DETAIL_BYTES`].
//! Never put a token, a key, an invitation code or case contents in an
//! event: the log is kept forever and read by admins.
//!
//! # The chain
//!
//! `hash = SHA-256(prev_hash || encoding)`, where `encoding` is the row's
//! fields in a fixed order with an unambiguous layout (see [`row_hash`]):
//! a version byte, `seq` and `at_ms` as 8-byte big-endian integers, then for
//! each of `kind`, `user_id`, `device_id`, `doc_id`, `subject` and
//! `detail` a presence byte (0 for NULL) and, when present, an 8-byte
//! big-endian length and the stored bytes. The first row's `prev_hash` is 32
//! zero bytes; `seq` starts at 1 and has no gaps.
//!
//! An append is one `IMMEDIATE` transaction that reads the last row and
//! inserts the next one, so two writers (two connections, even two
//! processes) can never both append after the same row: the chain cannot
//! fork. [`verify`] walks the rows in order and names the first one that was
//! edited, deleted or moved.
//!
//! What the chain cannot show on its own: someone who can write the database
//! file can drop the newest rows, or rewrite every row after an edit and
//! recompute all the hashes (there is no secret in the chain). `verify`
//! prints the head hash so an operator can keep it elsewhere and compare.
//!
//! # Concurrency
//!
//! [`AuditLog`] owns its own SQLite connection to the store's database file
//! (WAL lets it work beside the store's connections), behind a std `Mutex`:
//! every call on it is blocking and short, runs on `spawn_blocking` (or in a
//! caller that is already blocking), and never holds the lock across an
//! `.await`. Audit events are rare, so each append pays its own fsync
//! (`synchronous=FULL`) rather than joining the store's group commit. The one
//! event an outsider can produce at will, a failed authentication, goes
//! through [`AuditLog::auth_failed`], which coalesces bursts (see there).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sync_core::ids::DocumentId;

use crate::auth::{AuthError, Identity};
use crate::store::{open_connection, DbKey};

/// The database file inside the data directory: the store's.
pub use crate::store::DB_FILE_NAME;

/// The audit log's database file for a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE_NAME)
}

/// The largest `detail` stored, in bytes of JSON. A larger one is replaced by
/// a marker (`{"detail_too_large": true, "bytes": n}`), so no input can bloat
/// the log.
pub const MAX_DETAIL_BYTES: usize = 4096;
/// The largest `subject` stored, in bytes; a longer one is cut at a
/// character boundary and ends with `…`.
pub const MAX_SUBJECT_BYTES: usize = 256;
/// The largest `user_id` or `device_id` stored, in bytes (ids are checked
/// and far shorter; this only bounds a bug).
const MAX_ID_BYTES: usize = 256;
/// How long SQLite waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The first version of the row encoding hashed into the chain.
const ENCODING_VERSION: u8 = 1;
/// A coalesced event writes at most one row per key in this window.
pub const COALESCE_WINDOW: Duration = Duration::from_secs(1);

/// What happened. Stored as [`AuditKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditKind {
    AuthFailed,
    AccessRefused,
    ActorRefused,
    RateLimited,
    InvitationCreated,
    InvitationAccepted,
    InvitationRefused,
    InvitationRevoked,
    MemberAdded,
    MemberRevoked,
    CoordinatorAssigned,
    CoordinatorRemoved,
    DeviceRevoked,
    ChangesQuarantined,
    QuarantineAccepted,
    QuarantineDiscarded,
    CoordinatorRead,
    AdminRead,
    Export,
    AuditRead,
}

impl AuditKind {
    /// Every kind, in declaration order.
    pub const ALL: [AuditKind; 20] = [
        AuditKind::AuthFailed,
        AuditKind::AccessRefused,
        AuditKind::ActorRefused,
        AuditKind::RateLimited,
        AuditKind::InvitationCreated,
        AuditKind::InvitationAccepted,
        AuditKind::InvitationRefused,
        AuditKind::InvitationRevoked,
        AuditKind::MemberAdded,
        AuditKind::MemberRevoked,
        AuditKind::CoordinatorAssigned,
        AuditKind::CoordinatorRemoved,
        AuditKind::DeviceRevoked,
        AuditKind::ChangesQuarantined,
        AuditKind::QuarantineAccepted,
        AuditKind::QuarantineDiscarded,
        AuditKind::CoordinatorRead,
        AuditKind::AdminRead,
        AuditKind::Export,
        AuditKind::AuditRead,
    ];

    /// The value stored in `audit_log.kind`. Never change one: stored rows
    /// and their hashes hold it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::AuthFailed => "auth_failed",
            AuditKind::AccessRefused => "access_refused",
            AuditKind::ActorRefused => "actor_refused",
            AuditKind::RateLimited => "rate_limited",
            AuditKind::InvitationCreated => "invitation_created",
            AuditKind::InvitationAccepted => "invitation_accepted",
            AuditKind::InvitationRefused => "invitation_refused",
            AuditKind::InvitationRevoked => "invitation_revoked",
            AuditKind::MemberAdded => "member_added",
            AuditKind::MemberRevoked => "member_revoked",
            AuditKind::CoordinatorAssigned => "coordinator_assigned",
            AuditKind::CoordinatorRemoved => "coordinator_removed",
            AuditKind::DeviceRevoked => "device_revoked",
            AuditKind::ChangesQuarantined => "changes_quarantined",
            AuditKind::QuarantineAccepted => "quarantine_accepted",
            AuditKind::QuarantineDiscarded => "quarantine_discarded",
            AuditKind::CoordinatorRead => "coordinator_read",
            AuditKind::AdminRead => "admin_read",
            AuditKind::Export => "export",
            AuditKind::AuditRead => "audit_read",
        }
    }

    /// Parses a stored `audit_log.kind`.
    pub fn from_stored(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One security event, before it is stored.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub kind: AuditKind,
    /// Who did it (the authenticated user), if anyone.
    pub user: Option<String>,
    /// From which device.
    pub device: Option<String>,
    /// The document concerned.
    pub doc: Option<DocumentId>,
    /// Whom or what it concerns besides the document: the revoked device,
    /// the added member, an invitation id. Never a secret.
    pub subject: Option<String>,
    /// Small structured data: reasons, counts, ids. Never a token or case
    /// contents.
    pub detail: Value,
}

impl AuditEvent {
    pub fn new(kind: AuditKind) -> Self {
        Self {
            kind,
            user: None,
            device: None,
            doc: None,
            subject: None,
            detail: json!({}),
        }
    }

    /// Done by this authenticated user and device.
    pub fn by(mut self, identity: &Identity) -> Self {
        self.user = Some(identity.user().as_str().to_owned());
        self.device = Some(identity.device().as_str().to_owned());
        self
    }

    pub fn doc(mut self, doc: DocumentId) -> Self {
        self.doc = Some(doc);
        self
    }

    pub fn subject(mut self, s: impl Into<String>) -> Self {
        self.subject = Some(s.into());
        self
    }

    pub fn detail(mut self, d: Value) -> Self {
        self.detail = d;
        self
    }
}

/// Why the audit log could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("audit log: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0} has no audit_log table (a database older than schema version 2?)")]
    NoTable(PathBuf),
    #[error("audit log: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row that cannot be read back as an audit row; `verify`
    /// reports these as a broken chain instead.
    #[error("audit row {seq}: {reason}")]
    BadRow { seq: i64, reason: String },
    #[error("audit log: the sequence number overflowed")]
    SeqOverflow,
    #[error("audit log: background task failed: {0}")]
    Task(String),
}

/// One stored row, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    pub user: Option<String>,
    pub device: Option<String>,
    /// The document's `automerge:` URL.
    pub doc: Option<String>,
    pub subject: Option<String>,
    pub detail: Value,
    /// This row's chain hash, in hex.
    pub hash: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows checked (all of them when the chain is intact; up to the broken
    /// one otherwise).
    pub rows: u64,
    /// The first broken row, if any.
    pub broken: Option<Broken>,
    /// The hash of the last row checked, in hex (`None` for an empty log).
    /// Kept elsewhere, it shows later whether rows were dropped from the end.
    pub head: Option<String>,
}

/// The first row where the chain is broken, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub seq: i64,
    pub reason: String,
}

/// The handle to the audit log. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    // A std Mutex: every use is a short blocking SQLite call made off the
    // executor, never held across `.await`.
    conn: Mutex<Connection>,
    /// Open coalescing windows (see [`AuditLog::record_coalesced`]). Keys
    /// are `'static`, so the map is bounded by the code, not by input.
    windows: Mutex<HashMap<(AuditKind, &'static str), Window>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// One key's coalescing window.
struct Window {
    /// When the last row of this key was written.
    opened: Instant,
    /// Events of this key since then that got no row of their own.
    suppressed: u64,
    /// The last of them, written with the count when the window closes.
    last: Option<AuditEvent>,
    /// A task will write the summary row when the window closes.
    flush_scheduled: bool,
}

impl AuditLog {
    /// Opens the audit log in the store's database file. The store must have
    /// created it (and applied schema version 2) first. `key`: the
    /// database key, when it is encrypted.
    pub fn open(db_path: &Path, key: Option<&DbKey>) -> Result<Self, AuditError> {
        let open_err = |source| AuditError::Open {
            path: db_path.to_owned(),
            source,
        };
        // No SQLITE_OPEN_CREATE: a missing file is an error, never a new
        // empty log.
        let conn = open_connection(
            db_path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            key,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // Per connection: an appended row survives a power cut once the
        // append returns.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        require_table(&conn, db_path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: db_path.to_owned(),
                conn: Mutex::new(conn),
                windows: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Appends `event` (off the executor). Never fails the caller: an error
    /// is logged, and the caller goes on.
    pub async fn record(&self, event: AuditEvent) {
        let kind = event.kind;
        let log = self.clone();
        match tokio::task::spawn_blocking(move || log.record_blocking(event)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(kind = kind.as_str(), error = %e, "audit event not recorded");
            }
            Err(e) => {
                tracing::error!(kind = kind.as_str(), error = %e, "audit event not recorded");
            }
        }
    }

    /// Appends `event` durably and returns its `seq`. Blocking.
    pub fn record_blocking(&self, event: AuditEvent) -> Result<i64, AuditError> {
        let mut conn = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let seq = append_in_transaction(&tx, &event, now_ms())?;
        tx.commit()?;
        Ok(seq)
    }

    /// Up to `limit` rows with `seq > after_seq`, oldest first.
    pub async fn list(&self, after_seq: i64, limit: usize) -> Result<Vec<AuditRow>, AuditError> {
        let log = self.clone();
        tokio::task::spawn_blocking(move || log.list_blocking(after_seq, limit))
            .await
            .map_err(|e| AuditError::Task(e.to_string()))?
    }

    fn list_blocking(&self, after_seq: i64, limit: usize) -> Result<Vec<AuditRow>, AuditError> {
        let conn = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at_ms, kind, user_id, device_id, doc_id, subject, detail, hash \
             FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![after_seq, limit])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let bad = |reason: &str| AuditError::BadRow {
                seq,
                reason: reason.to_owned(),
            };
            let doc = match row.get::<_, Option<Vec<u8>>>(5)? {
                None => None,
                Some(bytes) => {
                    let bytes: [u8; 16] = bytes
                        .try_into()
                        .map_err(|_| bad("doc_id is not 16 bytes"))?;
                    Some(DocumentId::from_bytes(bytes).to_url())
                }
            };
            let detail: String = row.get(7)?;
            let detail = serde_json::from_str(&detail).map_err(|_| bad("detail is not JSON"))?;
            let hash: Vec<u8> = row.get(8)?;
            out.push(AuditRow {
                seq,
                at_ms: row.get(1)?,
                kind: row.get(2)?,
                user: row.get(3)?,
                device: row.get(4)?,
                doc,
                subject: row.get(6)?,
                detail,
                hash: hex(&hash),
            });
        }
        Ok(out)
    }

    /// Records a failed authentication: the reason (the [`AuthError`]
    /// variant, never text from the token) and the route. Returns at once;
    /// the row is written in the background.
    ///
    /// Anyone can fail authentication as often as they like, and each row
    /// costs an fsync, so these are coalesced: at most one row per reason
    /// per [`COALESCE_WINDOW`]; the failures in between are counted and
    /// written as one row with `"suppressed": n` when the window closes.
    pub fn auth_failed(&self, error: &AuthError, route: &'static str) {
        let reason = auth_error_reason(error);
        let event = AuditEvent::new(AuditKind::AuthFailed)
            .detail(json!({ "reason": reason, "route": route }));
        self.record_coalesced(reason, event);
    }

    /// Records `event` unless a row of the same kind and `key` was written
    /// within the last [`COALESCE_WINDOW`]; then it only counts it, and when
    /// the window closes one row carries the last such event with
    /// `"suppressed": n` (the number of events that got no row of their own)
    /// in its detail. So an event an attacker can trigger at will costs at
    /// most one row (one fsync) per key per second, and the log still says
    /// how many there were. Returns at once; rows are written by background
    /// tasks (a window still open when the server stops loses its count).
    ///
    /// `key` is `'static` so that the set of windows is bounded by the code:
    /// never build it from input.
    pub fn record_coalesced(&self, key: &'static str, event: AuditEvent) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                kind = event.kind.as_str(),
                "audit event not recorded: no async runtime"
            );
            return;
        };
        let now = Instant::now();
        let map_key = (event.kind, key);
        let mut windows = self
            .inner
            .windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match windows.get_mut(&map_key) {
            Some(w) if w.flush_scheduled || now.duration_since(w.opened) < COALESCE_WINDOW => {
                w.suppressed = w.suppressed.saturating_add(1);
                w.last = Some(event);
                if !w.flush_scheduled {
                    w.flush_scheduled = true;
                    let at = w.opened + COALESCE_WINDOW;
                    let log = self.clone();
                    runtime.spawn(async move { log.close_window(map_key, at).await });
                }
            }
            _ => {
                windows.insert(
                    map_key,
                    Window {
                        opened: now,
                        suppressed: 0,
                        last: None,
                        flush_scheduled: false,
                    },
                );
                drop(windows);
                let log = self.clone();
                runtime.spawn(async move { log.record(event).await });
            }
        }
    }

    /// At `at`, writes the summary row of a window with suppressed events;
    /// that row opens the next window.
    async fn close_window(self, map_key: (AuditKind, &'static str), at: Instant) {
        tokio::time::sleep_until(at.into()).await;
        let event = {
            let mut windows = self
                .inner
                .windows
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(w) = windows.get_mut(&map_key) else {
                return;
            };
            w.flush_scheduled = false;
            w.opened = Instant::now();
            let suppressed = std::mem::take(&mut w.suppressed);
            let Some(event) = w.last.take() else {
                return;
            };
            let mut detail = match event.detail {
                Value::Object(map) => map,
                other => {
                    let mut map = serde_json::Map::new();
                    map.insert("detail".into(), other);
                    map
                }
            };
            detail.insert("suppressed".into(), json!(suppressed));
            AuditEvent {
                detail: Value::Object(detail),
                ..event
            }
        };
        self.record(event).await;
    }
}

/// The stable, secret-free name of an authentication failure, for
/// `detail.reason`.
pub fn auth_error_reason(error: &AuthError) -> &'static str {
    match error {
        AuthError::MissingToken => "missing_token",
        AuthError::AmbiguousToken => "ambiguous_token",
        AuthError::UnsupportedAuthScheme => "unsupported_auth_scheme",
        AuthError::TokenTooLarge { .. } => "token_too_large",
        AuthError::MalformedToken => "malformed_token",
        AuthError::AlgorithmMismatch => "algorithm_mismatch",
        AuthError::ForbiddenHeaderParameter(_) => "forbidden_header_parameter",
        AuthError::UnexpectedHeaderParameter => "unexpected_header_parameter",
        AuthError::UnsupportedTokenType => "unsupported_token_type",
        AuthError::MissingKeyId => "missing_key_id",
        AuthError::UnknownKeyId => "unknown_key_id",
        AuthError::BadSignature => "bad_signature",
        AuthError::MissingClaim(_) => "missing_claim",
        AuthError::InvalidClaim(_) => "invalid_claim",
        AuthError::Expired => "expired",
        AuthError::NotYetValid => "not_yet_valid",
        AuthError::IssuedInFuture => "issued_in_future",
        AuthError::WrongAudience => "wrong_audience",
        AuthError::WrongIssuer => "wrong_issuer",
        AuthError::PeerIdMismatch => "peer_id_mismatch",
        AuthError::DeviceRevoked => "device_revoked",
    }
}

/// Appends `event` at `at_ms` inside `tx`, which must be a write
/// transaction (begun `IMMEDIATE`, so no other connection can append between
/// our read of the last row and our insert). Returns the new row's `seq`.
///
/// For callers that want an audit row in the same transaction as the change
/// it records; others use [`AuditLog::record`].
pub fn append_in_transaction(
    tx: &rusqlite::Transaction<'_>,
    event: &AuditEvent,
    at_ms: i64,
) -> Result<i64, AuditError> {
    let last: Option<(i64, Vec<u8>)> = tx
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, prev_hash) = match last {
        None => (1, [0u8; 32]),
        Some((seq, hash)) => {
            let prev: [u8; 32] = hash.try_into().map_err(|_| AuditError::BadRow {
                seq,
                reason: "hash is not 32 bytes".into(),
            })?;
            (seq.checked_add(1).ok_or(AuditError::SeqOverflow)?, prev)
        }
    };
    let detail = detail_text(&event.detail);
    let subject = event
        .subject
        .as_deref()
        .map(|s| truncate(s, MAX_SUBJECT_BYTES));
    let user = event.user.as_deref().map(|s| truncate(s, MAX_ID_BYTES));
    let device = event.device.as_deref().map(|s| truncate(s, MAX_ID_BYTES));
    let doc = event.doc.map(|d| *d.as_bytes());
    let kind = event.kind.as_str();
    let hash = row_hash(
        &prev_hash,
        &RowFields {
            seq,
            at_ms,
            kind: kind.as_bytes(),
            user: user.as_deref().map(str::as_bytes),
            device: device.as_deref().map(str::as_bytes),
            doc: doc.as_ref().map(|d| &d[..]),
            subject: subject.as_deref().map(str::as_bytes),
            detail: detail.as_bytes(),
        },
    );
    tx.prepare_cached(
        "INSERT INTO audit_log \
         (seq, at_ms, kind, user_id, device_id, doc_id, subject, detail, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        seq,
        at_ms,
        kind,
        user,
        device,
        doc.as_ref().map(|d| &d[..]),
        subject,
        detail,
        &prev_hash[..],
        &hash[..],
    ])?;
    Ok(seq)
}

/// Walks the whole log in `seq` order (opening the database read-only) and
/// reports the first broken row: an edited row (its hash no longer matches
/// its contents), a deleted one (a gap in `seq`, or a `prev_hash` that is
/// not the previous row's hash), rows moved or swapped, an unknown `kind`, a
/// `detail` that is not JSON, a column of the wrong type.
pub fn verify(db_path: &Path, key: Option<&DbKey>) -> Result<VerifyReport, AuditError> {
    let open_err = |source| AuditError::Open {
        path: db_path.to_owned(),
        source,
    };
    let conn = open_connection(
        db_path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        key,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    require_table(&conn, db_path)?;
    // One statement reads one consistent snapshot, even while the server
    // appends.
    let mut stmt = conn.prepare(
        "SELECT seq, at_ms, kind, user_id, device_id, doc_id, subject, detail, prev_hash, hash \
         FROM audit_log ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    let mut checked: u64 = 0;
    let mut prev_hash = [0u8; 32];
    let mut expected_seq: i64 = 1;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let broken = |reason: String| VerifyReport {
            rows: checked,
            broken: Some(Broken { seq, reason }),
            head: (checked > 0).then(|| hex(&prev_hash)),
        };
        if seq != expected_seq {
            let report = if seq > expected_seq {
                let last = expected_seq - 1;
                VerifyReport {
                    rows: checked,
                    broken: Some(Broken {
                        seq: expected_seq,
                        reason: if seq - expected_seq == 1 {
                            format!("row {expected_seq} is missing (row {last} is followed by row {seq})")
                        } else {
                            format!(
                                "rows {expected_seq} to {} are missing (row {last} is followed by row {seq})",
                                seq - 1
                            )
                        },
                    }),
                    head: (checked > 0).then(|| hex(&prev_hash)),
                }
            } else {
                broken("unexpected row number (rows start at 1)".into())
            };
            return Ok(report);
        }
        let fields = match read_fields(row) {
            Ok(f) => f,
            Err(reason) => return Ok(broken(reason)),
        };
        let kind_known = std::str::from_utf8(fields.kind)
            .ok()
            .and_then(AuditKind::from_stored)
            .is_some();
        if !kind_known {
            return Ok(broken("unknown kind".into()));
        }
        if serde_json::from_slice::<Value>(fields.detail).is_err() {
            return Ok(broken("detail is not JSON".into()));
        }
        if fields.prev_hash != prev_hash {
            return Ok(broken(if seq == 1 {
                "prev_hash of the first row is not zero (rows before it were removed?)".into()
            } else {
                format!(
                    "prev_hash is not the hash of row {} (rows removed, moved or rewritten)",
                    seq - 1
                )
            }));
        }
        let computed = row_hash(&prev_hash, &fields.row);
        if computed != fields.hash {
            return Ok(broken(
                "hash does not match the row's contents (row edited)".into(),
            ));
        }
        prev_hash = fields.hash;
        checked += 1;
        expected_seq = seq.checked_add(1).ok_or(AuditError::SeqOverflow)?;
    }
    Ok(VerifyReport {
        rows: checked,
        broken: None,
        head: (checked > 0).then(|| hex(&prev_hash)),
    })
}

/// The fields of one row that the hash covers.
struct RowFields<'a> {
    seq: i64,
    at_ms: i64,
    kind: &'a [u8],
    user: Option<&'a [u8]>,
    device: Option<&'a [u8]>,
    doc: Option<&'a [u8]>,
    subject: Option<&'a [u8]>,
    detail: &'a [u8],
}

/// `SHA-256(prev_hash || encoding)`, with the encoding described in the
/// module documentation. Fixed-width integers, and a presence byte and a
/// length before every variable field, so no two different rows encode the
/// same (moving bytes from one field to the next changes the encoding).
fn row_hash(prev_hash: &[u8; 32], row: &RowFields<'_>) -> [u8; 32] {
    fn field(h: &mut Sha256, value: Option<&[u8]>) {
        match value {
            None => h.update([0u8]),
            Some(bytes) => {
                h.update([1u8]);
                h.update(u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
                h.update(bytes);
            }
        }
    }
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update([ENCODING_VERSION]);
    h.update(row.seq.to_be_bytes());
    h.update(row.at_ms.to_be_bytes());
    field(&mut h, Some(row.kind));
    field(&mut h, row.user);
    field(&mut h, row.device);
    field(&mut h, row.doc);
    field(&mut h, row.subject);
    field(&mut h, Some(row.detail));
    h.finalize().into()
}

/// A row as stored, type-checked: a column of an unexpected type (say, an
/// `at_ms` edited into text) is a broken row, not an error.
struct StoredFields<'a> {
    row: RowFields<'a>,
    kind: &'a [u8],
    detail: &'a [u8],
    prev_hash: [u8; 32],
    hash: [u8; 32],
}

fn read_fields<'a>(row: &'a rusqlite::Row<'a>) -> Result<StoredFields<'a>, String> {
    let value = |i: usize, name: &str| {
        row.get_ref(i)
            .map_err(|e| format!("column {name} cannot be read: {e}"))
    };
    let integer = |i: usize, name: &str| match value(i, name)? {
        ValueRef::Integer(n) => Ok(n),
        _ => Err(format!("column {name} is not an integer")),
    };
    let text = |i: usize, name: &str| match value(i, name)? {
        ValueRef::Text(t) => Ok(t),
        _ => Err(format!("column {name} is not text")),
    };
    let opt_text = |i: usize, name: &str| match value(i, name)? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => Ok(Some(t)),
        _ => Err(format!("column {name} is neither text nor NULL")),
    };
    let hash32 = |i: usize, name: &str| match value(i, name)? {
        ValueRef::Blob(b) => {
            <[u8; 32]>::try_from(b).map_err(|_| format!("column {name} is not 32 bytes"))
        }
        _ => Err(format!("column {name} is not a blob")),
    };
    let doc = match value(5, "doc_id")? {
        ValueRef::Null => None,
        ValueRef::Blob(b) if b.len() == 16 => Some(b),
        _ => return Err("column doc_id is not a 16-byte blob or NULL".into()),
    };
    let kind = text(2, "kind")?;
    let detail = text(7, "detail")?;
    Ok(StoredFields {
        row: RowFields {
            seq: integer(0, "seq")?,
            at_ms: integer(1, "at_ms")?,
            kind,
            user: opt_text(3, "user_id")?,
            device: opt_text(4, "device_id")?,
            doc,
            subject: opt_text(6, "subject")?,
            detail,
        },
        kind,
        detail,
        prev_hash: hash32(8, "prev_hash")?,
        hash: hash32(9, "hash")?,
    })
}

fn require_table(conn: &Connection, path: &Path) -> Result<(), AuditError> {
    let exists: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'audit_log'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|source| AuditError::Open {
            path: path.to_owned(),
            source,
        })?;
    match exists {
        Some(_) => Ok(()),
        None => Err(AuditError::NoTable(path.to_owned())),
    }
}

/// The stored `detail`: compact JSON, or a marker when it is too large.
fn detail_text(detail: &Value) -> String {
    let text = detail.to_string();
    if text.len() <= MAX_DETAIL_BYTES {
        text
    } else {
        json!({ "detail_too_large": true, "bytes": text.len() }).to_string()
    }
}

/// At most `max` bytes of `s`, cut at a character boundary; a cut string
/// ends with `…`.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let ellipsis = '…';
    let mut end = max.saturating_sub(ellipsis.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s[..end].to_owned();
    out.push(ellipsis);
    out
}

fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for kind in AuditKind::ALL {
            assert_eq!(AuditKind::from_stored(kind.as_str()), Some(kind));
            assert!(seen.insert(kind.as_str()), "duplicate {}", kind.as_str());
        }
        assert_eq!(AuditKind::from_stored("AuthFailed"), None);
    }

    #[test]
    fn encoding_is_unambiguous() {
        let prev = [7u8; 32];
        let base = RowFields {
            seq: 1,
            at_ms: 2,
            kind: b"auth_failed",
            user: Some(b"ab"),
            device: Some(b"c"),
            doc: None,
            subject: None,
            detail: b"{}",
        };
        let moved = RowFields {
            user: Some(b"a"),
            device: Some(b"bc"),
            ..base
        };
        let null_vs_empty = RowFields {
            subject: Some(b""),
            ..base
        };
        let h = row_hash(&prev, &base);
        assert_ne!(h, row_hash(&prev, &moved));
        assert_ne!(h, row_hash(&prev, &null_vs_empty));
        assert_ne!(h, row_hash(&[0u8; 32], &base));
    }

    #[test]
    fn oversized_detail_and_subject_are_capped() {
        let big = json!({ "x": "y".repeat(MAX_DETAIL_BYTES) });
        let text = detail_text(&big);
        assert!(text.len() < 100, "{text}");
        assert!(text.contains("detail_too_large"));
        let s = truncate(&"é".repeat(MAX_SUBJECT_BYTES), MAX_SUBJECT_BYTES);
        assert!(s.len() <= MAX_SUBJECT_BYTES);
        assert!(s.ends_with('…'));
    }
}
