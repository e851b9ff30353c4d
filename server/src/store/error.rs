//! The store's error type.

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::ffi::ErrorCode;
use sync_core::ids::DocumentId;

/// What went wrong in the store.
///
/// Errors that concern one write batch (an unknown document, a conflicting
/// change) fail only that batch; errors that abort the whole transaction reach
/// every caller whose batch was in it as [`StoreError::TransactionFailed`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory or a file in it could not be created or synced.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// SQLite could not open the database file.
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The file is not a SQLite database, or its pages are damaged.
    #[error("database {path} is corrupt or not a SQLite database: {detail}")]
    Corrupt { path: PathBuf, detail: String },

    /// A key was given and the file cannot be read with it (SQLCipher
    /// cannot tell a wrong key from a plain file, or from a foreign one).
    #[error(
        "cannot read database {path} with the key given: the database key is wrong, \
         or the database is not encrypted (or not a SQLite database)"
    )]
    WrongKey { path: PathBuf },

    /// The file is a SQLite database that belongs to some other program.
    #[error("database {path} is not a casesync database (application_id {found:#x})")]
    NotCasesync { path: PathBuf, found: i64 },

    /// The database was written by a newer casesync; opening it with this
    /// build could misread it, so we refuse.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },

    /// A setting the durability promise depends on did not take effect.
    #[error("SQLite refused to set {pragma} (wanted {wanted}, got {got})")]
    PragmaRefused {
        pragma: &'static str,
        wanted: String,
        got: String,
    },

    /// `integrity_check` found problems. Each entry is one finding.
    #[error("integrity check of {path} failed: {}", problems.join("; "))]
    IntegrityCheckFailed {
        path: PathBuf,
        problems: Vec<String>,
    },

    #[error("document {0} does not exist")]
    UnknownDocument(DocumentId),

    #[error("document {0} already exists")]
    DocumentExists(DocumentId),

    /// A change with this hash is already stored for this document, with
    /// different bytes. The hash is the SHA-256 of the bytes, so one of the
    /// two copies is forged or damaged; we keep the stored one.
    #[error("change {hash} of document {doc} is already stored with different bytes")]
    ConflictingChange { doc: DocumentId, hash: String },

    /// A snapshot claims to cover log entries that do not exist yet.
    #[error("snapshot of document {doc} claims to cover log seq {covered_up_to}, but the log ends at {log_end}")]
    SnapshotBeyondLog {
        doc: DocumentId,
        covered_up_to: i64,
        log_end: i64,
    },

    /// A number does not fit the database's signed 64-bit integers, or a
    /// stored number does not fit ours (which means a damaged row).
    #[error("{what} out of range: {value}")]
    OutOfRange { what: &'static str, value: String },

    /// A stored row does not have the shape the schema promises.
    #[error("malformed row in {table}: {detail}")]
    MalformedRow { table: &'static str, detail: String },

    /// The backup target already exists; we never overwrite one.
    #[error("backup target {0} already exists")]
    BackupTargetExists(PathBuf),

    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// The transaction that held this caller's batch did not commit, so
    /// nothing in it was stored. The cause is shared by every caller whose
    /// batch was in that transaction.
    #[error("transaction failed, nothing in it was stored: {0}")]
    TransactionFailed(Arc<StoreError>),

    /// The writer thread is gone (shut down, or it panicked). Nothing sent
    /// after that point was stored; a batch in flight may or may not have been.
    #[error("the store's writer has stopped")]
    WriterStopped,

    /// The storage backend panicked while applying a transaction. Nothing in
    /// it was committed by SQLite (its transaction rolls back while the panic
    /// unwinds); the writer keeps serving later requests.
    #[error("the storage backend panicked while committing: {0}")]
    BackendPanicked(String),

    /// The storage backend returned something its contract rules out.
    #[error("storage backend broke its contract: {0}")]
    BackendContract(&'static str),

    /// A blocking read task panicked or was cancelled.
    #[error("a store read task failed: {0}")]
    ReadTaskFailed(String),
}

impl StoreError {
    /// Whether this error means the database file is damaged, as opposed to a
    /// transient or caller-caused failure. Operators should be told loudly.
    pub fn is_corruption(&self) -> bool {
        match self {
            StoreError::Corrupt { .. } | StoreError::IntegrityCheckFailed { .. } => true,
            StoreError::Sqlite(e) | StoreError::Open { source: e, .. } => is_corruption_code(e),
            StoreError::TransactionFailed(inner) => inner.is_corruption(),
            _ => false,
        }
    }
}

pub(crate) fn is_corruption_code(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}
