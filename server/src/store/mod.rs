//! Durable storage for documents, their append-only change logs, compacted
//! snapshots and per-device sync state.
//!
//! The database holds the only copy of the families' evidence, so durability
//! comes first:
//!
//! - [`Storage`] is the blocking interface a backend implements. SQLite
//!   ([`SqliteStorage`]) is the embedded default; a Postgres backend can
//!   implement the same trait later.
//! - [`Store`] is the async front the rest of the server uses. Writes go
//!   through a dedicated writer thread that groups every request waiting at
//!   the moment into one transaction, so many devices share one fsync
//!   ("group commit"). A write's future resolves only after the transaction
//!   holding it has committed durably. Reads run on tokio's blocking pool.
//!
//! Architecture invariant: no rusqlite call runs on the async executor, and no
//! lock is held across an `.await`.
//!
//! The schema is described in [`schema`].

mod committer;
mod error;
pub mod faults;
mod key;
mod metrics;
pub mod schema;
mod sqlite;

use std::path::Path;

use sync_core::ids::DocumentId;

pub use committer::{CommitReceipt, Store, StoreConfig};
pub use error::StoreError;
pub use key::{open_connection, DbKey, KeyError, KEY_ENV, KEY_FILE_ENV};
pub use metrics::{CommitMetrics, CommitMetricsSnapshot, Histogram, HistogramSnapshot};
pub use sqlite::{SqliteConfig, SqliteStorage, DB_FILE_NAME};

/// A position in the change log. Log seqs are assigned by the store, increase
/// with commit order across all documents, and are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogSeq(pub i64);

/// Which of a case's two documents this is (see DESIGN.md section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    /// Written by the case's relatives and coordinators.
    Case,
    /// Written only by coordinators, readable by relatives.
    Coordination,
}

impl DocumentKind {
    /// The value stored in `documents.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Case => "case",
            DocumentKind::Coordination => "coordination",
        }
    }

    /// Parses a stored `documents.kind`.
    pub fn from_stored(s: &str) -> Option<Self> {
        match s {
            "case" => Some(DocumentKind::Case),
            "coordination" => Some(DocumentKind::Coordination),
            _ => None,
        }
    }
}

/// A member's role in one document.
///
/// Only `Creator` exists for now; the membership and invitation work adds
/// the others (relative, coordinator), stored in the same `memberships.role`
/// column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// The user who created the document; added as its first member.
    Creator,
    /// A relative who joined by invitation (`identity`).
    Relative,
    /// A coordinator assigned to the case (`identity`).
    Coordinator,
}

impl Role {
    /// The value stored in `memberships.role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Creator => "creator",
            Role::Relative => "relative",
            Role::Coordinator => "coordinator",
        }
    }

    /// Parses a stored `memberships.role`.
    pub fn from_stored(s: &str) -> Option<Self> {
        match s {
            "creator" => Some(Role::Creator),
            "relative" => Some(Role::Relative),
            "coordinator" => Some(Role::Coordinator),
            _ => None,
        }
    }
}

/// A document to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDocument {
    pub id: DocumentId,
    pub kind: DocumentKind,
    /// The user who creates it; becomes its first member.
    pub created_by: String,
    pub created_at_ms: i64,
}

/// A stored document's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentMeta {
    pub id: DocumentId,
    pub kind: DocumentKind,
    pub created_by: String,
    pub created_at_ms: i64,
}

/// One member of a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub user: String,
    pub role: Role,
    pub added_at_ms: i64,
}

/// One automerge change to append to a document's log, with its provenance.
#[derive(Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    pub doc: DocumentId,
    /// The change hash (SHA-256 of the encoded change). Changes are deduped
    /// by `(doc, hash)`.
    pub hash: [u8; 32],
    /// The encoded change, as automerge produces it.
    pub bytes: Vec<u8>,
    /// The automerge actor id that authored the change.
    pub actor: Vec<u8>,
    /// The change's sequence number for its actor.
    pub seq: u64,
    /// The authenticated user whose device delivered the change.
    pub user: String,
    /// The device that delivered it.
    pub device: String,
    /// Server receive time.
    pub received_at_ms: i64,
}

impl std::fmt::Debug for ChangeRecord {
    // Change bytes are case contents: keep them out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeRecord")
            .field("doc", &self.doc)
            .field("hash", &hex(&self.hash))
            .field("bytes_len", &self.bytes.len())
            .field("seq", &self.seq)
            .field("device", &self.device)
            .field("received_at_ms", &self.received_at_ms)
            .finish_non_exhaustive()
    }
}

/// A change as stored in the log, with the log position it was given.
#[derive(Clone, PartialEq, Eq)]
pub struct LoggedChange {
    pub log_seq: LogSeq,
    pub doc: DocumentId,
    pub hash: [u8; 32],
    pub bytes: Vec<u8>,
    pub actor: Vec<u8>,
    pub seq: u64,
    pub user: String,
    pub device: String,
    pub received_at_ms: i64,
}

impl std::fmt::Debug for LoggedChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedChange")
            .field("log_seq", &self.log_seq)
            .field("doc", &self.doc)
            .field("hash", &hex(&self.hash))
            .field("bytes_len", &self.bytes.len())
            .field("seq", &self.seq)
            .field("device", &self.device)
            .field("received_at_ms", &self.received_at_ms)
            .finish_non_exhaustive()
    }
}

/// What is needed to rebuild a document: load `snapshot` (if any), then apply
/// `changes` in order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LoadedDoc {
    /// The latest compacted snapshot.
    pub snapshot: Option<Vec<u8>>,
    /// The log seq up to which the snapshot covers the log.
    pub snapshot_covers: Option<LogSeq>,
    /// Changes logged after the snapshot, in log order.
    pub changes: Vec<Vec<u8>>,
    /// The document's last log seq at the time of loading: pass it to
    /// [`Storage::put_snapshot`] with a snapshot built from this load.
    pub log_end: Option<LogSeq>,
}

impl std::fmt::Debug for LoadedDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedDoc")
            .field("snapshot_len", &self.snapshot.as_ref().map(Vec::len))
            .field("snapshot_covers", &self.snapshot_covers)
            .field("changes", &self.changes.len())
            .field("log_end", &self.log_end)
            .finish()
    }
}

/// One write. Several make a [`WriteBatch`].
#[derive(Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Create a document and add its creator as its first member.
    CreateDocument(NewDocument),
    /// Append changes (to one or more documents). A change already stored
    /// with the same `(doc, hash)` is skipped, not an error.
    AppendChanges(Vec<ChangeRecord>),
    /// Store a compacted snapshot of `doc` that covers every change of `doc`
    /// with a log seq up to `covered_up_to`. The log itself is kept.
    PutSnapshot {
        doc: DocumentId,
        bytes: Vec<u8>,
        covered_up_to: LogSeq,
    },
    /// Replace the persisted sync state for `(doc, peer_key)`.
    SaveSyncState {
        doc: DocumentId,
        peer_key: String,
        bytes: Vec<u8>,
    },
}

impl std::fmt::Debug for WriteOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteOp::CreateDocument(d) => f.debug_tuple("CreateDocument").field(d).finish(),
            WriteOp::AppendChanges(c) => f.debug_tuple("AppendChanges").field(c).finish(),
            WriteOp::PutSnapshot {
                doc,
                bytes,
                covered_up_to,
            } => f
                .debug_struct("PutSnapshot")
                .field("doc", doc)
                .field("bytes_len", &bytes.len())
                .field("covered_up_to", covered_up_to)
                .finish(),
            WriteOp::SaveSyncState {
                doc,
                peer_key,
                bytes,
            } => f
                .debug_struct("SaveSyncState")
                .field("doc", doc)
                .field("peer_key", peer_key)
                .field("bytes_len", &bytes.len())
                .finish(),
        }
    }
}

/// Writes that are stored together or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<WriteOp>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, op: WriteOp) -> Self {
        self.ops.push(op);
        self
    }

    pub fn push(&mut self, op: WriteOp) {
        self.ops.push(op);
    }
}

impl From<WriteOp> for WriteBatch {
    fn from(op: WriteOp) -> Self {
        Self { ops: vec![op] }
    }
}

/// Where one appended change ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub log_seq: LogSeq,
    /// `false` if the change was already stored (deduped).
    pub was_new: bool,
}

/// What happened to a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotOutcome {
    Stored,
    /// A stored snapshot already covers at least as much of the log; it was
    /// kept and this one dropped.
    Superseded {
        existing_covers: LogSeq,
    },
}

/// The result of one [`WriteOp`], in the same position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    DocumentCreated,
    /// One entry per appended change, in input order.
    ChangesAppended(Vec<Appended>),
    Snapshot(SnapshotOutcome),
    SyncStateSaved,
}

/// The result of one batch inside a transaction: its outcomes, or the error
/// that made it roll back alone.
pub type BatchResult = Result<Vec<WriteOutcome>, StoreError>;

/// A storage backend. Methods block: call them from a blocking thread (the
/// [`Store`] front does this for you), never from the async executor.
///
/// Contract for every implementation:
/// - `apply_batches` returns only after the transaction is durable (it would
///   survive power loss).
/// - Log seqs become visible in increasing order, so a reader that pages
///   through [`Storage::change_log`] with `after` never skips a change that
///   commits later with a smaller seq. (SQLite's single writer gives this for
///   free; a Postgres backend must serialize log seq assignment.)
pub trait Storage: Send + Sync + 'static {
    /// Applies `batches` in ONE durable transaction. Each batch is atomic on
    /// its own: a batch that fails (unknown document, conflicting change) is
    /// rolled back alone and gets its error in the returned vector, at its
    /// position. `Err` means the transaction as a whole did not commit and
    /// nothing from any batch was stored.
    fn apply_batches(&self, batches: &[WriteBatch]) -> Result<Vec<BatchResult>, StoreError>;

    /// Every document, oldest first.
    fn list_documents(&self) -> Result<Vec<DocumentMeta>, StoreError>;

    fn document_meta(&self, doc: &DocumentId) -> Result<Option<DocumentMeta>, StoreError>;

    fn members(&self, doc: &DocumentId) -> Result<Vec<Member>, StoreError>;

    fn is_member(&self, doc: &DocumentId, user: &str) -> Result<bool, StoreError>;

    /// The latest snapshot plus the changes after it, read consistently.
    /// `None` if the document does not exist.
    fn load_document(&self, doc: &DocumentId) -> Result<Option<LoadedDoc>, StoreError>;

    /// Up to `limit` log entries of `doc` with a log seq greater than `after`
    /// (from the start if `None`), in log order, with provenance.
    fn change_log(
        &self,
        doc: &DocumentId,
        after: Option<LogSeq>,
        limit: u32,
    ) -> Result<Vec<LoggedChange>, StoreError>;

    fn load_sync_state(
        &self,
        doc: &DocumentId,
        peer_key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Checks the database's structure and the rows' sanity.
    fn integrity_check(&self) -> Result<(), StoreError>;

    /// Writes a consistent copy of the database to `path` while the store
    /// keeps serving. Refuses to overwrite an existing file.
    fn backup_to(&self, path: &Path) -> Result<(), StoreError>;

    /// Applies one batch in its own transaction.
    fn apply(&self, batch: WriteBatch) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut results = self.apply_batches(std::slice::from_ref(&batch))?;
        results
            .pop()
            .unwrap_or(Err(StoreError::BackendContract("no result for the batch")))
    }

    fn create_document(&self, doc: NewDocument) -> Result<(), StoreError> {
        self.apply(WriteOp::CreateDocument(doc).into()).map(drop)
    }

    /// Appends changes; returns where each one is, in input order.
    fn append_changes(&self, changes: &[ChangeRecord]) -> Result<Vec<Appended>, StoreError> {
        let outcomes = self.apply(WriteOp::AppendChanges(changes.to_vec()).into())?;
        Ok(outcomes
            .into_iter()
            .flat_map(|o| match o {
                WriteOutcome::ChangesAppended(a) => a,
                _ => Vec::new(),
            })
            .collect())
    }

    fn put_snapshot(
        &self,
        doc: &DocumentId,
        bytes: Vec<u8>,
        covered_up_to: LogSeq,
    ) -> Result<SnapshotOutcome, StoreError> {
        let outcomes = self.apply(
            WriteOp::PutSnapshot {
                doc: *doc,
                bytes,
                covered_up_to,
            }
            .into(),
        )?;
        Ok(outcomes
            .into_iter()
            .find_map(|o| match o {
                WriteOutcome::Snapshot(s) => Some(s),
                _ => None,
            })
            .unwrap_or(SnapshotOutcome::Stored))
    }

    fn save_sync_state(
        &self,
        doc: &DocumentId,
        peer_key: &str,
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.apply(
            WriteOp::SaveSyncState {
                doc: *doc,
                peer_key: peer_key.to_owned(),
                bytes,
            }
            .into(),
        )
        .map(drop)
    }
}

/// Lower-case hex, for hashes in errors and logs.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
