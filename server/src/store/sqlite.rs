//! The embedded SQLite backend.
//!
//! Durability settings, and why:
//! - `journal_mode=WAL`: readers never block the writer nor each other, and a
//!   commit is one sequential append to the WAL plus one fsync.
//! - `synchronous=FULL`: the WAL is fsynced at every commit, so a commit that
//!   returned survives SIGKILL *and* power loss. (`NORMAL` in WAL mode only
//!   survives process crashes.) Both settings are read back after being set;
//!   if SQLite refuses one, opening fails rather than running with less
//!   durability than promised.
//! - The data directory is fsynced after the database file is created, so the
//!   file's directory entry is durable too (SQLite syncs the directory for
//!   the WAL itself).
//!
//! Connections: one writer connection, used by whoever calls
//! [`Storage::apply_batches`] (in the server, only the group commit thread),
//! and a small pool of read connections. Each `rusqlite::Connection` is `Send`
//! but not `Sync`, so each sits behind a std `Mutex`: the writer's mutex is
//! uncontended in the server (one writer thread), and the pool's is held only
//! to pop or push a connection, never during a query. Neither is ever held
//! across an `.await`: these methods are blocking and run off the executor.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use sync_core::ids::DocumentId;

use super::error::is_corruption_code;
use super::key::{open_connection, DbKey};
use super::schema::{current_version, APPLICATION_ID, MIGRATIONS};
use super::{
    hex, Appended, BatchResult, ChangeRecord, DocumentKind, DocumentMeta, LoadedDoc, LogSeq,
    LoggedChange, Member, NewDocument, Role, SnapshotOutcome, Storage, StoreError, WriteBatch,
    WriteOp, WriteOutcome,
};

/// The database file's name inside the data directory.
pub const DB_FILE_NAME: &str = "casesync.db";

/// Enough to keep every statement of this module prepared.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// How to open a [`SqliteStorage`].
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    /// The directory that holds `casesync.db` (and its `-wal` and `-shm`
    /// files). Created if missing.
    pub data_dir: PathBuf,
    /// How long a connection waits for a lock held by another process (an
    /// operator's `check` or `backup`) before failing with "database busy".
    pub busy_timeout: Duration,
    /// Read connections kept open between reads.
    pub max_idle_readers: usize,
    /// A hard cap on the database file's size. A write that would grow the
    /// database past it fails (only the batch holding it, where SQLite allows)
    /// with "database or disk full", while reads keep working: a cleaner
    /// failure than a full disk. `None` means no cap.
    pub max_size_bytes: Option<u64>,
    /// The SQLCipher key (`store::key`): every connection, the backup's
    /// target included, is keyed with it. `None`: a plain database.
    pub key: Option<DbKey>,
}

impl SqliteConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            busy_timeout: Duration::from_secs(5),
            max_idle_readers: 4,
            max_size_bytes: None,
            key: None,
        }
    }

    /// The same, with the database key.
    pub fn with_key(mut self, key: Option<DbKey>) -> Self {
        self.key = key;
        self
    }
}

/// The SQLite [`Storage`].
#[derive(Debug)]
pub struct SqliteStorage {
    path: PathBuf,
    busy_timeout: Duration,
    max_idle_readers: usize,
    key: Option<DbKey>,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl SqliteStorage {
    /// Opens (or creates) `data_dir/casesync.db`, checks that it is a
    /// casesync database, sets the durability pragmas and applies pending
    /// schema migrations.
    pub fn open(config: SqliteConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StoreError::Io {
            path: config.data_dir.clone(),
            source,
        })?;
        let path = config.data_dir.join(DB_FILE_NAME);
        let existed = path.exists();

        let mut conn = open_connection(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            config.key.as_ref(),
        )?;
        conn.busy_timeout(config.busy_timeout)
            .map_err(|e| open_error(&path, e))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);

        // The first read of the file: a damaged or foreign file shows up here.
        check_identity(&conn, &path)?;
        set_durability_pragmas(&conn).map_err(|e| match e {
            StoreError::Sqlite(e) => open_error(&path, e),
            other => other,
        })?;
        migrate(&mut conn).map_err(|e| match e {
            StoreError::Sqlite(e) => open_error(&path, e),
            other => other,
        })?;
        if let Some(max) = config.max_size_bytes {
            let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
            let pages = i64::try_from(max).unwrap_or(i64::MAX) / page_size.max(1);
            conn.pragma_update(None, "max_page_count", pages.max(1))?;
        }
        if !existed {
            sync_dir(&config.data_dir)?;
        }
        if config.key.as_ref().is_some_and(|key| !key.is_raw()) {
            // Not an error: a passphrase is a valid key. But every new
            // connection (a reader beyond the pool, a history request on a
            // fresh blocking thread, a backup) pays the derivation.
            tracing::info!(
                "the database key is a passphrase: SQLCipher derives the page key (PBKDF2, \
                 about 0.1 s) for every connection it opens; a raw key (x'<64 hex digits>') \
                 avoids that"
            );
        }
        tracing::info!(
            path = %path.display(),
            schema_version = current_version(),
            encrypted = config.key.is_some(),
            "store opened"
        );

        Ok(Self {
            path,
            busy_timeout: config.busy_timeout,
            max_idle_readers: config.max_idle_readers,
            key: config.key,
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_reader(&self) -> Result<Connection, StoreError> {
        // No SQLITE_OPEN_CREATE: if the file vanished, fail instead of
        // serving an empty database.
        let conn = open_connection(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            self.key.as_ref(),
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        // Read connections must never write, even by mistake.
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }

    /// Runs `f` on a pooled read connection. A connection that saw an error
    /// is closed rather than returned to the pool.
    fn read<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.open_reader()?,
        };
        let result = f(&mut conn);
        if result.is_ok() {
            let mut pool = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
            if pool.len() < self.max_idle_readers {
                pool.push(conn);
            }
        }
        result
    }
}

fn open_error(path: &Path, source: rusqlite::Error) -> StoreError {
    if is_corruption_code(&source) {
        StoreError::Corrupt {
            path: path.to_owned(),
            detail: source.to_string(),
        }
    } else {
        StoreError::Open {
            path: path.to_owned(),
            source,
        }
    }
}

/// Refuses files that belong to another program or to a newer casesync.
fn check_identity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    if app_id == 0 {
        // Either a brand-new file, or someone else's database.
        let objects: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(|e| open_error(path, e))?;
        if objects != 0 || version != 0 {
            return Err(StoreError::NotCasesync {
                path: path.to_owned(),
                found: app_id,
            });
        }
    } else if app_id != APPLICATION_ID {
        return Err(StoreError::NotCasesync {
            path: path.to_owned(),
            found: app_id,
        });
    }
    if version > current_version() {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: current_version(),
        });
    }
    Ok(())
}

/// The environment variable that turns durability *off* for the power-loss
/// test's negative control (`tests/tests/power_loss.rs`), which must show
/// that the test catches `synchronous=NORMAL`. Nothing else sets it; a
/// server started with it logs an error on every store it opens.
pub const UNSAFE_SYNCHRONOUS_ENV: &str = "CASESYNC_TEST_UNSAFE_SYNCHRONOUS";

/// `synchronous=FULL` (2), unless [`UNSAFE_SYNCHRONOUS_ENV`] is `NORMAL`.
fn synchronous_level() -> (&'static str, i64) {
    match std::env::var(UNSAFE_SYNCHRONOUS_ENV).as_deref() {
        Ok("NORMAL") => {
            tracing::error!(
                "{UNSAFE_SYNCHRONOUS_ENV}=NORMAL: the change log is NOT durable \
                 (test-only negative control; acknowledged changes can be lost on power loss)"
            );
            ("NORMAL", 1)
        }
        _ => ("FULL", 2),
    }
}

fn set_durability_pragmas(conn: &Connection) -> Result<(), StoreError> {
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::PragmaRefused {
            pragma: "journal_mode",
            wanted: "wal".into(),
            got: mode,
        });
    }
    let (level, code) = synchronous_level();
    conn.pragma_update(None, "synchronous", level)?;
    let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    if synchronous != code {
        return Err(StoreError::PragmaRefused {
            pragma: "synchronous",
            wanted: format!("{code} ({level})"),
            got: synchronous.to_string(),
        });
    }
    conn.pragma_update(None, "foreign_keys", true)?;
    let foreign_keys: i64 = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
    if foreign_keys != 1 {
        return Err(StoreError::PragmaRefused {
            pragma: "foreign_keys",
            wanted: "1".into(),
            got: foreign_keys.to_string(),
        });
    }
    Ok(())
}

/// Applies every pending migration in one transaction with the version bump.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Read again inside the write lock: another process may have migrated
    // between our first look and now.
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > current_version() {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: current_version(),
        });
    }
    let start = usize::try_from(version).map_err(|_| StoreError::OutOfRange {
        what: "schema version",
        value: version.to_string(),
    })?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.execute_batch(sql)?;
        let next = i64::try_from(i + 1).unwrap_or(i64::MAX);
        tx.pragma_update(None, "user_version", next)?;
        tracing::info!(schema_version = next, "store schema migrated");
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.commit()?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })
}

fn to_i64(what: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange {
        what,
        value: value.to_string(),
    })
}

fn doc_exists(conn: &Connection, doc: &DocumentId) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM documents WHERE doc_id = ?1)")?
        .query_row([&doc.as_bytes()[..]], |r| r.get(0))?)
}

fn require_doc(conn: &Connection, doc: &DocumentId) -> Result<(), StoreError> {
    if doc_exists(conn, doc)? {
        Ok(())
    } else {
        Err(StoreError::UnknownDocument(*doc))
    }
}

fn log_end(conn: &Connection, doc: &DocumentId) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT max(log_seq) FROM changes WHERE doc_id = ?1")?
        .query_row([&doc.as_bytes()[..]], |r| r.get(0))?)
}

/// Applies one batch's ops. The caller wraps this in a savepoint.
fn apply_batch(conn: &Connection, batch: &WriteBatch) -> Result<Vec<WriteOutcome>, StoreError> {
    batch.ops.iter().map(|op| apply_op(conn, op)).collect()
}

fn apply_op(conn: &Connection, op: &WriteOp) -> Result<WriteOutcome, StoreError> {
    match op {
        WriteOp::CreateDocument(doc) => create_document(conn, doc),
        WriteOp::AppendChanges(changes) => append_changes(conn, changes),
        WriteOp::PutSnapshot {
            doc,
            bytes,
            covered_up_to,
        } => put_snapshot(conn, doc, bytes, *covered_up_to),
        WriteOp::SaveSyncState {
            doc,
            peer_key,
            bytes,
        } => {
            require_doc(conn, doc)?;
            conn.prepare_cached(
                "INSERT INTO sync_states (doc_id, peer_key, bytes) VALUES (?1, ?2, ?3)
                 ON CONFLICT (doc_id, peer_key) DO UPDATE SET bytes = excluded.bytes",
            )?
            .execute(params![&doc.as_bytes()[..], peer_key, bytes])?;
            Ok(WriteOutcome::SyncStateSaved)
        }
    }
}

fn create_document(conn: &Connection, doc: &NewDocument) -> Result<WriteOutcome, StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO documents (doc_id, kind, created_by, created_at_ms)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (doc_id) DO NOTHING",
        )?
        .execute(params![
            &doc.id.as_bytes()[..],
            doc.kind.as_str(),
            doc.created_by,
            doc.created_at_ms
        ])?;
    if inserted == 0 {
        return Err(StoreError::DocumentExists(doc.id));
    }
    conn.prepare_cached(
        "INSERT INTO memberships (doc_id, user_id, role, added_at_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        &doc.id.as_bytes()[..],
        doc.created_by,
        Role::Creator.as_str(),
        doc.created_at_ms
    ])?;
    Ok(WriteOutcome::DocumentCreated)
}

fn append_changes(conn: &Connection, changes: &[ChangeRecord]) -> Result<WriteOutcome, StoreError> {
    let mut known_docs = HashSet::new();
    let mut appended = Vec::with_capacity(changes.len());
    for change in changes {
        if known_docs.insert(change.doc) {
            require_doc(conn, &change.doc)?;
        }
        let seq = to_i64("change seq", change.seq)?;
        let doc_id = &change.doc.as_bytes()[..];
        let inserted = conn
            .prepare_cached(
                "INSERT INTO changes
                   (doc_id, hash, bytes, actor, seq, user_id, device_id, received_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (doc_id, hash) DO NOTHING",
            )?
            .execute(params![
                doc_id,
                &change.hash[..],
                change.bytes,
                change.actor,
                seq,
                change.user,
                change.device,
                change.received_at_ms
            ])?;
        if inserted == 1 {
            appended.push(Appended {
                log_seq: LogSeq(conn.last_insert_rowid()),
                was_new: true,
            });
            continue;
        }
        // Already stored: a duplicate is fine, a different change under the
        // same hash is not.
        let (log_seq, same_bytes): (i64, bool) = conn
            .prepare_cached(
                "SELECT log_seq, bytes = ?3 FROM changes WHERE doc_id = ?1 AND hash = ?2",
            )?
            .query_row(params![doc_id, &change.hash[..], change.bytes], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        if !same_bytes {
            return Err(StoreError::ConflictingChange {
                doc: change.doc,
                hash: hex(&change.hash),
            });
        }
        appended.push(Appended {
            log_seq: LogSeq(log_seq),
            was_new: false,
        });
    }
    Ok(WriteOutcome::ChangesAppended(appended))
}

fn put_snapshot(
    conn: &Connection,
    doc: &DocumentId,
    bytes: &[u8],
    covered_up_to: LogSeq,
) -> Result<WriteOutcome, StoreError> {
    require_doc(conn, doc)?;
    if covered_up_to.0 < 0 {
        return Err(StoreError::OutOfRange {
            what: "snapshot covered_up_to",
            value: covered_up_to.0.to_string(),
        });
    }
    let end = log_end(conn, doc)?.unwrap_or(0);
    if covered_up_to.0 > end {
        return Err(StoreError::SnapshotBeyondLog {
            doc: *doc,
            covered_up_to: covered_up_to.0,
            log_end: end,
        });
    }
    let existing: Option<i64> = conn
        .prepare_cached("SELECT covered_up_to FROM snapshots WHERE doc_id = ?1")?
        .query_row([&doc.as_bytes()[..]], |r| r.get(0))
        .optional()?;
    if let Some(existing) = existing {
        if existing > covered_up_to.0 {
            return Ok(WriteOutcome::Snapshot(SnapshotOutcome::Superseded {
                existing_covers: LogSeq(existing),
            }));
        }
    }
    conn.prepare_cached(
        "INSERT INTO snapshots (doc_id, bytes, covered_up_to) VALUES (?1, ?2, ?3)
         ON CONFLICT (doc_id) DO UPDATE
           SET bytes = excluded.bytes, covered_up_to = excluded.covered_up_to",
    )?
    .execute(params![&doc.as_bytes()[..], bytes, covered_up_to.0])?;
    Ok(WriteOutcome::Snapshot(SnapshotOutcome::Stored))
}

fn doc_id_from_row(table: &'static str, bytes: Vec<u8>) -> Result<DocumentId, StoreError> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| StoreError::MalformedRow {
            table,
            detail: format!("doc_id has {} bytes, not 16", b.len()),
        })?;
    Ok(DocumentId::from_bytes(bytes))
}

fn meta_from_row(row: &rusqlite::Row<'_>) -> Result<DocumentMeta, StoreError> {
    let kind: String = row.get(1)?;
    Ok(DocumentMeta {
        id: doc_id_from_row("documents", row.get(0)?)?,
        kind: DocumentKind::from_stored(&kind).ok_or_else(|| StoreError::MalformedRow {
            table: "documents",
            detail: format!("unknown kind {kind:?}"),
        })?,
        created_by: row.get(2)?,
        created_at_ms: row.get(3)?,
    })
}

fn logged_change_from_row(
    doc: &DocumentId,
    row: &rusqlite::Row<'_>,
) -> Result<LoggedChange, StoreError> {
    let hash: Vec<u8> = row.get(1)?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|h: Vec<u8>| StoreError::MalformedRow {
            table: "changes",
            detail: format!("hash has {} bytes, not 32", h.len()),
        })?;
    let seq: i64 = row.get(4)?;
    Ok(LoggedChange {
        log_seq: LogSeq(row.get(0)?),
        doc: *doc,
        hash,
        bytes: row.get(2)?,
        actor: row.get(3)?,
        seq: u64::try_from(seq).map_err(|_| StoreError::OutOfRange {
            what: "stored change seq",
            value: seq.to_string(),
        })?,
        user: row.get(5)?,
        device: row.get(6)?,
        received_at_ms: row.get(7)?,
    })
}

impl Storage for SqliteStorage {
    fn apply_batches(&self, batches: &[WriteBatch]) -> Result<Vec<BatchResult>, StoreError> {
        let mut conn = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(batches.len());
        for batch in batches {
            tx.execute_batch("SAVEPOINT batch")?;
            match apply_batch(&tx, batch) {
                Ok(outcomes) => {
                    tx.execute_batch("RELEASE batch")?;
                    results.push(Ok(outcomes));
                }
                Err(e) => {
                    if tx.is_autocommit() {
                        // On some I/O, disk-full and out-of-memory errors
                        // SQLite rolls back the whole transaction by itself:
                        // the batches before this one are gone too, so the
                        // transaction has failed for everyone in it.
                        return Err(e);
                    }
                    tx.execute_batch("ROLLBACK TO batch; RELEASE batch")?;
                    results.push(Err(e));
                }
            }
        }
        // With synchronous=FULL this fsyncs the WAL before returning.
        tx.commit()?;
        Ok(results)
    }

    fn list_documents(&self) -> Result<Vec<DocumentMeta>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT doc_id, kind, created_by, created_at_ms FROM documents
                 ORDER BY created_at_ms, doc_id",
            )?;
            let mut rows = stmt.query([])?;
            let mut docs = Vec::new();
            while let Some(row) = rows.next()? {
                docs.push(meta_from_row(row)?);
            }
            Ok(docs)
        })
    }

    fn document_meta(&self, doc: &DocumentId) -> Result<Option<DocumentMeta>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT doc_id, kind, created_by, created_at_ms FROM documents WHERE doc_id = ?1",
            )?;
            let mut rows = stmt.query([&doc.as_bytes()[..]])?;
            match rows.next()? {
                Some(row) => Ok(Some(meta_from_row(row)?)),
                None => Ok(None),
            }
        })
    }

    fn members(&self, doc: &DocumentId) -> Result<Vec<Member>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT user_id, role, added_at_ms FROM memberships WHERE doc_id = ?1
                 ORDER BY added_at_ms, user_id",
            )?;
            let mut rows = stmt.query([&doc.as_bytes()[..]])?;
            let mut members = Vec::new();
            while let Some(row) = rows.next()? {
                let role: String = row.get(1)?;
                members.push(Member {
                    user: row.get(0)?,
                    role: Role::from_stored(&role).ok_or_else(|| StoreError::MalformedRow {
                        table: "memberships",
                        detail: format!("unknown role {role:?}"),
                    })?,
                    added_at_ms: row.get(2)?,
                });
            }
            Ok(members)
        })
    }

    fn is_member(&self, doc: &DocumentId, user: &str) -> Result<bool, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM memberships WHERE doc_id = ?1 AND user_id = ?2)",
                )?
                .query_row(params![&doc.as_bytes()[..], user], |r| r.get(0))?)
        })
    }

    fn load_document(&self, doc: &DocumentId) -> Result<Option<LoadedDoc>, StoreError> {
        self.read(|conn| {
            // One read transaction, so the snapshot and the tail agree even if
            // a new snapshot is committed meanwhile.
            let tx = conn.transaction()?;
            if !doc_exists(&tx, doc)? {
                return Ok(None);
            }
            let snapshot: Option<(Vec<u8>, i64)> = tx
                .prepare_cached("SELECT bytes, covered_up_to FROM snapshots WHERE doc_id = ?1")?
                .query_row([&doc.as_bytes()[..]], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            // Log seqs start at 1, so 0 means "from the start".
            let after = snapshot.as_ref().map_or(0, |(_, covered)| *covered);
            let mut changes = Vec::new();
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT bytes FROM changes WHERE doc_id = ?1 AND log_seq > ?2
                     ORDER BY log_seq",
                )?;
                let mut rows = stmt.query(params![&doc.as_bytes()[..], after])?;
                while let Some(row) = rows.next()? {
                    changes.push(row.get(0)?);
                }
            }
            let log_end = log_end(&tx, doc)?;
            let (snapshot, snapshot_covers) = match snapshot {
                Some((bytes, covered)) => (Some(bytes), Some(LogSeq(covered))),
                None => (None, None),
            };
            Ok(Some(LoadedDoc {
                snapshot,
                snapshot_covers,
                changes,
                log_end: log_end.map(LogSeq),
            }))
        })
    }

    fn change_log(
        &self,
        doc: &DocumentId,
        after: Option<LogSeq>,
        limit: u32,
    ) -> Result<Vec<LoggedChange>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT log_seq, hash, bytes, actor, seq, user_id, device_id, received_at_ms
                 FROM changes WHERE doc_id = ?1 AND log_seq > ?2 ORDER BY log_seq LIMIT ?3",
            )?;
            let after = after.map_or(0, |s| s.0);
            let mut rows = stmt.query(params![&doc.as_bytes()[..], after, limit])?;
            let mut changes = Vec::new();
            while let Some(row) = rows.next()? {
                changes.push(logged_change_from_row(doc, row)?);
            }
            Ok(changes)
        })
    }

    fn load_sync_state(
        &self,
        doc: &DocumentId,
        peer_key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT bytes FROM sync_states WHERE doc_id = ?1 AND peer_key = ?2",
                )?
                .query_row(params![&doc.as_bytes()[..], peer_key], |r| r.get(0))
                .optional()?)
        })
    }

    fn integrity_check(&self) -> Result<(), StoreError> {
        // A fresh connection, not a pooled one: a pooled connection's page
        // cache could hide damage done to the file since it was last read.
        let conn = self.open_reader()?;
        let problems = find_problems(&conn).or_else(|e| {
            if is_corruption_code(&e) {
                Ok(vec![e.to_string()])
            } else {
                Err(StoreError::Sqlite(e))
            }
        })?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(StoreError::IntegrityCheckFailed {
                path: self.path.clone(),
                problems,
            })
        }
    }

    fn backup_to(&self, path: &Path) -> Result<(), StoreError> {
        if path.exists() {
            return Err(StoreError::BackupTargetExists(path.to_owned()));
        }
        let io_error = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        // Write to a temporary name and rename at the end, so that a file
        // under the final name is always a complete, verified backup.
        let mut partial_name = path.file_name().unwrap_or_default().to_os_string();
        partial_name.push(".partial");
        let partial = path.with_file_name(partial_name);
        if partial.exists() {
            std::fs::remove_file(&partial).map_err(io_error)?;
        }

        let source = self.open_reader()?;
        // Keyed like the source before the first page is copied: the backup
        // API copies plaintext pages, and the target's codec encrypts them.
        let mut target = open_connection(
            &partial,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            self.key.as_ref(),
        )?;
        {
            let backup = Backup::new(&source, &mut target)?;
            // Copying every page in one step reads the source in a single read
            // transaction: a consistent snapshot that, in WAL mode, does not
            // block the writer. (Copying in slices would restart whenever the
            // writer commits, possibly forever under load.)
            let mut retries = 0u32;
            loop {
                match backup.step(-1)? {
                    StepResult::Done => break,
                    StepResult::More => {}
                    _busy_or_locked => {
                        retries += 1;
                        if retries > 500 {
                            return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                                Some("backup could not lock the database".into()),
                            )));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        let check: String = target.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(StoreError::IntegrityCheckFailed {
                path: partial,
                problems: vec![check],
            });
        }
        target.close().map_err(|(_, e)| StoreError::Sqlite(e))?;
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io_error)?;
        std::fs::rename(&partial, path).map_err(io_error)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            sync_dir(dir)?;
        }
        tracing::info!(target = %path.display(), "store backup written");
        Ok(())
    }
}

/// Runs SQLite's own checks and our row-sanity checks; returns findings.
fn find_problems(conn: &Connection) -> Result<Vec<String>, rusqlite::Error> {
    let mut problems = Vec::new();
    conn.pragma_query(None, "integrity_check", |row| {
        let line: String = row.get(0)?;
        if line != "ok" {
            problems.push(line);
        }
        Ok(())
    })?;
    conn.pragma_query(None, "foreign_key_check", |row| {
        let table: String = row.get(0)?;
        let parent: String = row.get(2)?;
        problems.push(format!("a row in {table} refers to a missing {parent} row"));
        Ok(())
    })?;
    let app_id: i64 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    if app_id != APPLICATION_ID {
        problems.push(format!("application_id is {app_id:#x}, not casesync's"));
    }
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version != current_version() {
        problems.push(format!(
            "schema version is {version}, expected {}",
            current_version()
        ));
    }
    // Row sanity. CHECK constraints guard new rows, but a damaged file or a
    // hand edit can still hold rows that break them.
    let sanity: &[(&str, &str)] = &[
        (
            "documents with a malformed id or kind",
            "SELECT count(*) FROM documents
             WHERE typeof(doc_id) != 'blob' OR length(doc_id) != 16
                OR kind NOT IN ('case', 'coordination')",
        ),
        (
            "memberships with an unknown role",
            "SELECT count(*) FROM memberships
             WHERE role NOT IN ('creator', 'relative', 'coordinator')",
        ),
        (
            "changes with a malformed hash, bytes, actor or seq",
            "SELECT count(*) FROM changes
             WHERE typeof(hash) != 'blob' OR length(hash) != 32
                OR typeof(bytes) != 'blob' OR typeof(actor) != 'blob'
                OR typeof(seq) != 'integer' OR seq < 0",
        ),
        (
            "snapshots covering log entries that do not exist",
            "SELECT count(*) FROM snapshots s
             WHERE s.covered_up_to < 0 OR s.covered_up_to >
               coalesce((SELECT max(log_seq) FROM changes c WHERE c.doc_id = s.doc_id), 0)",
        ),
        (
            "changes whose log seq is above the AUTOINCREMENT counter (seqs could be reused)",
            "SELECT count(*) FROM changes
             WHERE log_seq > coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0)",
        ),
    ];
    for (what, sql) in sanity {
        let count: i64 = conn.query_row(sql, [], |r| r.get(0))?;
        if count != 0 {
            problems.push(format!("{count} {what}"));
        }
    }
    Ok(problems)
}
