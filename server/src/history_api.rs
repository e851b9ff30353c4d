//! The history API for coordinators (issue 6; DESIGN.md section 7): who
//! changed what, when, from which device and after how long offline; the
//! case at any change; the difference between two points; who wrote each
//! span of a narrative; the current conflicts and their resolution; the
//! official status; and exports.
//!
//! # Who may
//!
//! Only the case's coordinators and admins ([`Acl::is_case_coordinator`]).
//! A case the caller may not see at all is 404, as everywhere; the family
//! of the case sees it, so for them these routes are 403. Coordinator and
//! admin reads go to the audit log, coalesced: one row per person and case
//! per [`READ_AUDIT_WINDOW`], carrying how many reads the previous window
//! left out, so browsing a timeline does not write a row per click. Every
//! export is recorded on its own.
//!
//! # Points in history
//!
//! A change is named by its hash. "The case at a change" is, by default,
//! the case as the server held it right after that change arrived: every
//! change received up to it, in the order of the change log (`view=server`,
//! so moving along the timeline adds one change at a time). With
//! `view=author` it is the case as the author's device saw it when making
//! the change: the change and its ancestors only.
//!
//! Because each actor's changes reach the log in `seq` order, the changes
//! received up to a log position are exactly, per actor, its changes up to
//! the highest `seq` logged by then; those changes' hashes are heads that
//! cover the point (`heads_at`). A redundant head is harmless to
//! automerge's `*_at` reads.
//!
//! # Where the data comes from
//!
//! The document from its actor ([`Docs::read`], a copy), and the provenance
//! (who delivered each change, when) from the change log, read here through
//! read-only SQLite connections (`query_only`) kept per blocking thread.
//! Everything that touches SQLite or walks a document runs on
//! `spawn_blocking`. Changes this API makes (a conflict resolution, the
//! official status) are made on a copy with a fresh random actor and merged
//! through [`Docs::merge`] under the coordinator's name and device, so they
//! are ordinary changes in the history.
//!
//! [`Acl::is_case_coordinator`]: crate::acl::Acl::is_case_coordinator
//! [`Docs::read`]: crate::docs::Docs::read
//! [`Docs::merge`]: crate::docs::Docs::merge

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use automerge::{Automerge, Change, ChangeHash, ReadDoc};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::Deserialize;
use serde_json::{json, Value};
use sync_core::history::{self, HistoryError, Snapshot};
use sync_core::ids::DocumentId;
use sync_core::model::{self, Edit, Field, ItemId, OfficialStatusField, RawValue, Status};

use crate::acl::Principal;
use crate::api::{authenticated, now_ms, visible_case};
use crate::app::AppState;
use crate::audit::{AuditEvent, AuditKind};
use crate::auth::{AuthRejection, Authenticated, Identity, Role};
use crate::docs::{DocError, Provenance};
use crate::error::AppError;

/// Changes per page of the change list, unless the caller asks for fewer.
pub const DEFAULT_PAGE: u32 = 50;
/// The largest page.
pub const MAX_PAGE: u32 = 500;
/// One audit row per coordinator and case per this window (see the module
/// documentation).
pub const READ_AUDIT_WINDOW: Duration = Duration::from_secs(300);
/// The most cases `GET /api/coordinator/cases` summarizes.
const MAX_LISTED_CASES: usize = 500;
/// The longest `path` a blame or resolve accepts, in bytes.
const MAX_PATH_BYTES: usize = 512;

// ----- access ---------------------------------------------------------------

/// The two documents of a case a coordinator may inspect.
#[derive(Debug, Clone, Copy)]
struct CaseDocs {
    case: DocumentId,
    coordination: Option<DocumentId>,
}

impl CaseDocs {
    fn of(&self, which: Which) -> Result<DocumentId, AppError> {
        match which {
            Which::Case => Ok(self.case),
            Which::Coordination => self.coordination.ok_or(AppError::NotFound),
        }
    }

    fn all(&self) -> Vec<(Which, DocumentId)> {
        let mut out = vec![(Which::Case, self.case)];
        if let Some(c) = self.coordination {
            out.push((Which::Coordination, c));
        }
        out
    }
}

/// Which document of the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Case,
    Coordination,
}

impl Which {
    fn as_str(self) -> &'static str {
        match self {
            Which::Case => "case",
            Which::Coordination => "coordination",
        }
    }

    fn parse(s: &str) -> Result<Self, AppError> {
        match s {
            "case" => Ok(Which::Case),
            "coordination" => Ok(Which::Coordination),
            _ => Err(AppError::BadRequest("doc is `case` or `coordination`")),
        }
    }

    /// The document a dotted path lives in: the coordination sections and
    /// collections are in the coordination document.
    fn of_path(path: &str) -> Self {
        let first = path.split('.').next().unwrap_or_default();
        match first {
            "official_status" | "closure" | "source_verification" | "duplicates" | "case" => {
                Which::Coordination
            }
            _ => Which::Case,
        }
    }
}

/// Authenticates and checks that the caller coordinates case `{id}`: 404
/// for what they may not see, 403 for the family.
fn coordinated_case(
    state: &AppState,
    auth: Result<Authenticated, AuthRejection>,
    id: &str,
) -> Result<(Authenticated, CaseDocs), AppError> {
    let auth = authenticated(state, auth)?;
    let case = visible_case(state, &auth, id)?;
    if !state
        .inner
        .acl
        .is_case_coordinator(&Principal::of(&auth.identity), &case)
    {
        return Err(AppError::Forbidden(
            "only the case's coordinators may use its history",
        ));
    }
    let coordination = state.inner.acl.coordination_of(&case);
    Ok((auth, CaseDocs { case, coordination }))
}

/// A copy of a document.
async fn read_doc(state: &AppState, doc: DocumentId) -> Result<Automerge, AppError> {
    state.inner.docs.read(doc).await.map_err(|e| match e {
        DocError::NotFound => AppError::NotFound,
        other => AppError::Unavailable(other.to_string()),
    })
}

/// Runs CPU or SQLite work off the executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(AppError::internal)?
}

fn history_error(e: HistoryError) -> AppError {
    match e {
        HistoryError::UnknownChange { .. } => AppError::NotFound,
        HistoryError::AutomergeFailed => AppError::internal(e),
        HistoryError::NoSuchPath { .. } => AppError::BadRequest("there is nothing at this path"),
        HistoryError::NotText { .. } => AppError::BadRequest("this path is not a narrative"),
        HistoryError::NoSuchValue { .. } => {
            AppError::BadRequest("the chosen value is not one of the values at this path")
        }
        HistoryError::CannotResolve { reason, .. } => AppError::BadRequest(reason),
    }
}

// ----- coalesced read audit -------------------------------------------------

#[derive(Debug)]
struct ReadWindow {
    opened: Instant,
    /// Reads in this window that got no row of their own.
    suppressed: u64,
}

/// Whose reads of what: data directory (one per server), `user:device`,
/// case (`None` for the case list).
type ReadKey = (PathBuf, String, Option<DocumentId>);

/// Open read windows, per server, person and case. A static rather than
/// app state: the router's state is shared, and this only ever thins out
/// audit rows.
fn read_windows() -> &'static Mutex<HashMap<ReadKey, ReadWindow>> {
    static WINDOWS: OnceLock<Mutex<HashMap<ReadKey, ReadWindow>>> = OnceLock::new();
    WINDOWS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Records a coordinator's (or admin's) read of `case`, at most once per
/// person and case per [`READ_AUDIT_WINDOW`]. The row says what was read
/// first in the window and how many reads the previous window left out.
async fn audit_read(state: &AppState, identity: &Identity, case: Option<DocumentId>, what: &str) {
    let key = (
        state.inner.config.data_dir.clone(),
        format!(
            "{}:{}",
            identity.user().as_str(),
            identity.device().as_str()
        ),
        case,
    );
    let now = Instant::now();
    let earlier = {
        let mut windows = read_windows()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = windows.get_mut(&key) {
            if now.duration_since(w.opened) < READ_AUDIT_WINDOW {
                w.suppressed = w.suppressed.saturating_add(1);
                return;
            }
        }
        if windows.len() > 10_000 {
            windows.retain(|_, w| now.duration_since(w.opened) < READ_AUDIT_WINDOW);
        }
        windows
            .insert(
                key,
                ReadWindow {
                    opened: now,
                    suppressed: 0,
                },
            )
            .map_or(0, |w| w.suppressed)
    };
    let kind = if identity.role() == Role::Admin {
        AuditKind::AdminRead
    } else {
        AuditKind::CoordinatorRead
    };
    let mut event = AuditEvent::new(kind).by(identity).detail(json!({
        "what": what,
        "earlier_reads_not_logged": earlier,
    }));
    if let Some(case) = case {
        event = event.doc(case);
    }
    state.inner.audit.record(event).await;
}

// ----- the change log, read-only ----------------------------------------------

/// One row of the change log.
#[derive(Clone)]
struct LogRow {
    log_seq: i64,
    which: Which,
    hash: ChangeHash,
    actor: Vec<u8>,
    seq: i64,
    user: String,
    device: String,
    received_at_ms: i64,
    /// Only where the change itself is needed.
    bytes: Option<Vec<u8>>,
}

impl std::fmt::Debug for LogRow {
    // Change bytes are case contents.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogRow")
            .field("log_seq", &self.log_seq)
            .field("hash", &self.hash.to_string())
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Read-only connections of this (blocking) thread, by database file.
    static CONNECTIONS: RefCell<HashMap<PathBuf, Connection>> = RefCell::new(HashMap::new());
}

/// The change log of one server, read-only. Blocking: call from
/// `spawn_blocking`.
#[derive(Debug, Clone)]
struct ChangeLog {
    path: PathBuf,
    key: Option<crate::store::DbKey>,
}

const ROW_COLUMNS: &str = "log_seq, hash, actor, seq, user_id, device_id, received_at_ms";

impl ChangeLog {
    fn of(state: &AppState) -> Self {
        Self {
            path: state.inner.config.data_dir.join(crate::store::DB_FILE_NAME),
            key: state.inner.config.db_key.clone(),
        }
    }

    fn open(&self) -> Result<Connection, crate::store::StoreError> {
        // No SQLITE_OPEN_CREATE: a missing file is an error, never an empty
        // database.
        let conn = crate::store::open_connection(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            self.key.as_ref(),
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, AppError> {
        CONNECTIONS.with(|cell| {
            let mut conns = cell.borrow_mut();
            if !conns.contains_key(&self.path) {
                if conns.len() >= 8 {
                    conns.clear();
                }
                let conn = self
                    .open()
                    .map_err(|e| AppError::Unavailable(e.to_string()))?;
                conns.insert(self.path.clone(), conn);
            }
            let conn = conns
                .get(&self.path)
                .ok_or_else(|| AppError::internal("connection vanished"))?;
            let result = f(conn);
            if result.is_err() {
                conns.remove(&self.path);
            }
            result.map_err(|e| AppError::Unavailable(e.to_string()))
        })
    }

    fn row(which: Which, r: &rusqlite::Row<'_>, with_bytes: bool) -> rusqlite::Result<LogRow> {
        let hash: Vec<u8> = r.get(1)?;
        let hash = ChangeHash::try_from(hash.as_slice()).map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Blob,
                "a change hash is not 32 bytes".into(),
            )
        })?;
        Ok(LogRow {
            log_seq: r.get(0)?,
            which,
            hash,
            actor: r.get(2)?,
            seq: r.get(3)?,
            user: r.get(4)?,
            device: r.get(5)?,
            received_at_ms: r.get(6)?,
            bytes: if with_bytes { Some(r.get(7)?) } else { None },
        })
    }

    /// A page of one document's log: after `after` (oldest first) or before
    /// `before` (newest first).
    fn page_of(
        &self,
        which: Which,
        doc: DocumentId,
        cursor: Cursor,
        limit: u32,
    ) -> Result<Vec<LogRow>, AppError> {
        self.with(|c| {
            let sql = match cursor {
                Cursor::After(_) => format!(
                    "SELECT {ROW_COLUMNS}, bytes FROM changes WHERE doc_id = ?1 AND log_seq > ?2 \
                     ORDER BY log_seq LIMIT ?3"
                ),
                Cursor::Before(_) => format!(
                    "SELECT {ROW_COLUMNS}, bytes FROM changes WHERE doc_id = ?1 AND log_seq < ?2 \
                     ORDER BY log_seq DESC LIMIT ?3"
                ),
            };
            let bound = match cursor {
                Cursor::After(a) => a,
                Cursor::Before(b) => b,
            };
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![doc.as_bytes().as_slice(), bound, limit], |r| {
                Self::row(which, r, true)
            })?;
            rows.collect()
        })
    }

    /// A page over several documents, merged in log order.
    fn page(
        &self,
        docs: &[(Which, DocumentId)],
        cursor: Cursor,
        limit: u32,
    ) -> Result<Vec<LogRow>, AppError> {
        let mut all = Vec::new();
        for (which, doc) in docs {
            all.extend(self.page_of(*which, *doc, cursor, limit)?);
        }
        match cursor {
            Cursor::After(_) => all.sort_by_key(|r| r.log_seq),
            Cursor::Before(_) => all.sort_by_key(|r| std::cmp::Reverse(r.log_seq)),
        }
        all.truncate(limit as usize);
        Ok(all)
    }

    fn count(&self, doc: DocumentId) -> Result<(i64, Option<i64>), AppError> {
        self.with(|c| {
            c.prepare_cached("SELECT count(*), max(received_at_ms) FROM changes WHERE doc_id = ?1")?
                .query_row([doc.as_bytes().as_slice()], |r| Ok((r.get(0)?, r.get(1)?)))
        })
    }

    /// The change `hash` in one of `docs`.
    fn find(
        &self,
        docs: &[(Which, DocumentId)],
        hash: &ChangeHash,
    ) -> Result<Option<LogRow>, AppError> {
        for (which, doc) in docs {
            let found = self.with(|c| {
                c.prepare_cached(&format!(
                    "SELECT {ROW_COLUMNS}, bytes FROM changes WHERE doc_id = ?1 AND hash = ?2"
                ))?
                .query_row(params![doc.as_bytes().as_slice(), hash.0.as_slice()], |r| {
                    Self::row(*which, r, true)
                })
                .optional()
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Heads covering every change of `doc` logged up to `log_seq` (see the
    /// module documentation), from the document's log index.
    fn heads_at(&self, doc: DocumentId, log_seq: i64) -> Result<Vec<ChangeHash>, AppError> {
        self.indexed(doc, |index| index.heads_at(log_seq))
    }

    /// Runs `f` on the log index of `doc`, brought up to date first.
    fn indexed<T>(&self, doc: DocumentId, f: impl FnOnce(&LogIndex) -> T) -> Result<T, AppError> {
        let index = log_index(&self.path, doc);
        let mut index = index.lock().unwrap_or_else(PoisonError::into_inner);
        self.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ROW_COLUMNS} FROM changes WHERE doc_id = ?1 AND log_seq > ?2 \
                 ORDER BY log_seq"
            ))?;
            let mut rows = stmt.query(params![doc.as_bytes().as_slice(), index.end])?;
            while let Some(r) = rows.next()? {
                index.push(Self::row(Which::Case, r, false)?);
            }
            Ok(())
        })?;
        Ok(f(&index))
    }

    /// How many changes of `doc` were logged after `from` up to `to` (log
    /// positions; from the beginning, up to now).
    fn logged_between(
        &self,
        doc: DocumentId,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<usize, AppError> {
        self.indexed(doc, |index| {
            let at = |seq: Option<i64>, none: usize| {
                seq.map_or(none, |s| index.rows.partition_point(|r| r.log_seq <= s))
            };
            at(to, index.rows.len()).abs_diff(at(from, 0))
        })
    }

    /// Provenance of the given changes of `doc`, from its log index.
    fn provenance(
        &self,
        which: Which,
        doc: DocumentId,
        hashes: &[ChangeHash],
    ) -> Result<HashMap<ChangeHash, LogRow>, AppError> {
        self.indexed(doc, |index| {
            hashes
                .iter()
                .filter_map(|h| index.row(which, h).map(|r| (*h, r)))
                .collect()
        })
    }

    /// Every row of `doc`, without the change bytes.
    fn all(&self, which: Which, doc: DocumentId) -> Result<Vec<LogRow>, AppError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ROW_COLUMNS} FROM changes WHERE doc_id = ?1 ORDER BY log_seq"
            ))?;
            let rows =
                stmt.query_map([doc.as_bytes().as_slice()], |r| Self::row(which, r, false))?;
            rows.collect()
        })
    }
}

/// One document's change log in memory, in log order: what points in
/// history and provenance lookups need, without the change bytes. The log
/// is append-only, so what is read once stays true; the index is extended
/// with the rows logged since, and points in history are computed from it
/// instead of scanning the log on every request.
#[derive(Debug, Default)]
struct LogIndex {
    /// The highest log position read.
    end: i64,
    actors: Vec<Vec<u8>>,
    /// Distinct `(user, device)` pairs.
    people: Vec<(String, String)>,
    rows: Vec<IndexRow>,
    by_hash: HashMap<ChangeHash, usize>,
}

#[derive(Debug, Clone, Copy)]
struct IndexRow {
    log_seq: i64,
    actor: u32,
    seq: i64,
    hash: ChangeHash,
    person: u32,
    received_at_ms: i64,
}

fn intern<T: PartialEq>(all: &mut Vec<T>, value: T) -> u32 {
    let i = match all.iter().position(|x| *x == value) {
        Some(i) => i,
        None => {
            all.push(value);
            all.len() - 1
        }
    };
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl LogIndex {
    fn push(&mut self, row: LogRow) {
        let actor = intern(&mut self.actors, row.actor);
        let person = intern(&mut self.people, (row.user, row.device));
        self.by_hash.insert(row.hash, self.rows.len());
        self.rows.push(IndexRow {
            log_seq: row.log_seq,
            actor,
            seq: row.seq,
            hash: row.hash,
            person,
            received_at_ms: row.received_at_ms,
        });
        self.end = self.end.max(row.log_seq);
    }

    /// Per actor, its change with the highest `seq` logged up to `log_seq`.
    fn heads_at(&self, log_seq: i64) -> Vec<ChangeHash> {
        let upto = self.rows.partition_point(|r| r.log_seq <= log_seq);
        let mut best: Vec<Option<(i64, ChangeHash)>> = vec![None; self.actors.len()];
        for r in &self.rows[..upto] {
            if let Some(slot) = best.get_mut(r.actor as usize) {
                if slot.is_none_or(|(s, _)| r.seq > s) {
                    *slot = Some((r.seq, r.hash));
                }
            }
        }
        let mut heads: Vec<ChangeHash> = best.into_iter().flatten().map(|(_, h)| h).collect();
        heads.sort();
        heads
    }

    /// The log row of `hash`, without its bytes.
    fn row(&self, which: Which, hash: &ChangeHash) -> Option<LogRow> {
        let r = self.rows.get(*self.by_hash.get(hash)?)?;
        let (user, device) = self.people.get(r.person as usize)?.clone();
        Some(LogRow {
            log_seq: r.log_seq,
            which,
            hash: r.hash,
            actor: self.actors.get(r.actor as usize)?.clone(),
            seq: r.seq,
            user,
            device,
            received_at_ms: r.received_at_ms,
            bytes: None,
        })
    }
}

/// The most documents whose log index is kept.
const MAX_INDEXED_DOCS: usize = 16;

type IndexKey = (PathBuf, DocumentId);

/// The log index of a document of a server (its database file). A static
/// for the same reason as [`read_windows`]: the router's state is shared.
fn log_index(db: &FsPath, doc: DocumentId) -> std::sync::Arc<Mutex<LogIndex>> {
    static INDEXES: OnceLock<Mutex<HashMap<IndexKey, std::sync::Arc<Mutex<LogIndex>>>>> =
        OnceLock::new();
    let mut all = INDEXES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let key = (db.to_owned(), doc);
    if !all.contains_key(&key) && all.len() >= MAX_INDEXED_DOCS {
        all.clear();
    }
    all.entry(key).or_default().clone()
}

#[derive(Debug, Clone, Copy)]
enum Cursor {
    After(i64),
    Before(i64),
}

// ----- query strings ---------------------------------------------------------

/// The query string as keys and values; a key given twice is refused.
fn query(raw: Option<String>, allowed: &[&str]) -> Result<BTreeMap<String, String>, AppError> {
    let mut out = BTreeMap::new();
    let raw = raw.unwrap_or_default();
    if raw.len() > 4096 {
        return Err(AppError::BadRequest("the query string is too long"));
    }
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        if !allowed.contains(&k.as_ref()) {
            return Err(AppError::BadRequest("unknown query parameter"));
        }
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(AppError::BadRequest("a query parameter is given twice"));
        }
    }
    Ok(out)
}

fn parse_hash(s: &str) -> Result<ChangeHash, AppError> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AppError::BadRequest("a change hash is 64 hex digits"));
    }
    s.parse()
        .map_err(|_| AppError::BadRequest("a change hash is 64 hex digits"))
}

fn parse_path(s: &str) -> Result<Vec<String>, AppError> {
    if s.is_empty() || s.len() > MAX_PATH_BYTES {
        return Err(AppError::BadRequest(
            "path is a dotted path such as disappearance.circumstances",
        ));
    }
    let keys: Vec<String> = s.split('.').map(str::to_owned).collect();
    if keys.len() > model::MAX_WALK_DEPTH || keys.iter().any(|k| k.is_empty()) {
        return Err(AppError::BadRequest(
            "path is a dotted path such as disappearance.circumstances",
        ));
    }
    Ok(keys)
}

/// `view=server` (default) or `view=author`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Server,
    Author,
}

fn parse_view(q: &BTreeMap<String, String>) -> Result<View, AppError> {
    match q.get("view").map(String::as_str) {
        None | Some("server") => Ok(View::Server),
        Some("author") => Ok(View::Author),
        Some(_) => Err(AppError::BadRequest("view is `server` or `author`")),
    }
}

// ----- JSON --------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn heads_json(heads: &[ChangeHash]) -> Value {
    Value::Array(heads.iter().map(|h| json!(h.to_string())).collect())
}

/// Commit time in milliseconds: automerge's change time is in seconds
/// (`model::commit_options`); 0 means the writer set none.
fn committed_ms(seconds: i64) -> Option<i64> {
    (seconds > 0).then(|| seconds.saturating_mul(1000))
}

fn summary_json(s: &history::OpsSummary) -> Value {
    json!({
        "ops": s.ops,
        "sections": s.sections,
        "fields": s.fields,
        "added": s.added,
        "deleted": s.deleted,
        "restored": s.restored,
    })
}

/// A change of the list: provenance from the log, the rest from the change.
fn change_json(row: &LogRow, change: Option<&Change>, doc: &Automerge) -> Value {
    let committed = change.and_then(|c| committed_ms(c.timestamp()));
    let summary = change.map(|c| match history::summarize_change(doc, c) {
        Ok(s) => summary_json(&s),
        Err(_) => Value::Null,
    });
    json!({
        "log_seq": row.log_seq,
        "doc": row.which.as_str(),
        "hash": row.hash.to_string(),
        "actor": hex(&row.actor),
        "seq": row.seq,
        "user": row.user,
        "device": row.device,
        "committed_at_ms": committed,
        "received_at_ms": row.received_at_ms,
        "offline_ms": committed.map(|c| row.received_at_ms.saturating_sub(c)),
        "message": change.and_then(|c| c.message().map(str::to_owned)),
        "deps": change.map(|c| heads_json(c.deps())),
        "summary": summary,
    })
}

fn decode(row: &LogRow) -> Option<Change> {
    let bytes = row.bytes.as_ref()?;
    sync_core::guard::catch_automerge(|| Change::try_from(bytes.as_slice()).ok())
        .ok()
        .flatten()
}

/// Who delivered a change and when, for conflicts, blame and origins.
fn provenance_json(
    hash: Option<ChangeHash>,
    log: &HashMap<ChangeHash, LogRow>,
    doc: &Automerge,
) -> Value {
    let Some(hash) = hash else {
        return json!({ "hash": null });
    };
    let row = log.get(&hash);
    let committed = doc
        .get_change_meta_by_hash(&hash)
        .and_then(|m| committed_ms(m.timestamp));
    json!({
        "hash": hash.to_string(),
        "user": row.map(|r| r.user.clone()),
        "device": row.map(|r| r.device.clone()),
        "committed_at_ms": committed,
        "received_at_ms": row.map(|r| r.received_at_ms),
    })
}

fn raw_json(v: &RawValue) -> Value {
    match v {
        RawValue::Str(s) | RawValue::Text(s) => json!(s),
        RawValue::Int(i) | RawValue::Timestamp(i) | RawValue::Counter(i) => json!(i),
        RawValue::Uint(u) => json!(u),
        RawValue::F64(f) => json!(f),
        RawValue::Bool(b) => json!(b),
        RawValue::Bytes(b) => json!({ "$bytes_len": b.len() }),
        RawValue::Map => json!({}),
        RawValue::List => json!([]),
        RawValue::Unknown => Value::Null,
    }
}

/// Conflicts of one document (now, or at `heads`) with who wrote each
/// value. Blocking.
fn conflicts_json(
    log: &ChangeLog,
    which: Which,
    doc_id: DocumentId,
    doc: &Automerge,
    heads: Option<&[ChangeHash]>,
) -> Result<Value, AppError> {
    let conflicts = Snapshot::read(doc, heads)
        .and_then(|s| s.conflicts(doc))
        .map_err(history_error)?;
    conflicts_with_authors(log, which, doc_id, doc, &conflicts)
}

/// Conflicts as JSON, each value with the change, user and device that
/// wrote it. Blocking.
fn conflicts_with_authors(
    log: &ChangeLog,
    which: Which,
    doc_id: DocumentId,
    doc: &Automerge,
    conflicts: &[model::Conflict],
) -> Result<Value, AppError> {
    let changes: Vec<Option<ChangeHash>> = conflicts
        .iter()
        .flat_map(|c| c.values.iter().map(|v| history::change_of_op(doc, &v.op)))
        .collect();
    let hashes: Vec<ChangeHash> = changes.iter().flatten().copied().collect();
    let rows = log.provenance(which, doc_id, &hashes)?;
    let mut changes = changes.into_iter();
    Ok(Value::Array(
        conflicts
            .iter()
            .map(|c| {
                json!({
                    "doc": which.as_str(),
                    "path": c.path,
                    "values": c.values.iter().map(|v| {
                        let change = changes.next().flatten();
                        json!({
                            "value": v.value.as_ref().map(raw_json).unwrap_or(Value::Null),
                            "op": v.op,
                            "actor": v.actor,
                            "author": provenance_json(change, &rows, doc),
                        })
                    }).collect::<Vec<_>>(),
                })
            })
            .collect(),
    ))
}

// ----- the change list ----------------------------------------------------------

/// `GET /api/cases/{id}/history?limit=&after=` (oldest first, `after` a
/// log position) or `?order=desc&before=` (newest first); `doc=case` or
/// `doc=coordination` for one document, both by default.
pub async fn history(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let (auth, docs) = coordinated_case(&state, auth, &id)?;
    let q = query(raw, &["limit", "after", "before", "order", "doc"])?;
    let limit = match q.get("limit") {
        None => DEFAULT_PAGE,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or(AppError::BadRequest("limit is 1 to 500"))?,
    };
    let position = |key: &str| -> Result<Option<i64>, AppError> {
        q.get(key)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| AppError::BadRequest("a log position is an integer"))
            })
            .transpose()
    };
    let newest_first = match q.get("order").map(String::as_str) {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(AppError::BadRequest("order is `asc` or `desc`")),
    };
    let cursor = match (newest_first, position("after")?, position("before")?) {
        (false, after, None) => Cursor::After(after.unwrap_or(0)),
        (true, None, before) => Cursor::Before(before.unwrap_or(i64::MAX)),
        _ => {
            return Err(AppError::BadRequest(
                "use `after` with order=asc and `before` with order=desc",
            ))
        }
    };
    let selected: Vec<(Which, DocumentId)> = match q.get("doc") {
        None => docs.all(),
        Some(w) => {
            let which = Which::parse(w)?;
            vec![(which, docs.of(which)?)]
        }
    };
    let log = ChangeLog::of(&state);
    let rows = {
        let (log, selected) = (log.clone(), selected.clone());
        blocking(move || {
            let rows = log.page(&selected, cursor, limit)?;
            let mut total = 0;
            for (_, doc) in &selected {
                total += log.count(*doc)?.0;
            }
            Ok((rows, total))
        })
        .await?
    };
    let (rows, total) = rows;
    let mut loaded = Vec::new();
    for (which, doc) in &selected {
        if rows.iter().any(|r| r.which == *which) {
            loaded.push((*which, read_doc(&state, *doc).await?));
        }
    }
    audit_read(&state, &auth.identity, Some(docs.case), "history").await;
    let body = blocking(move || {
        let changes: Vec<Value> = rows
            .iter()
            .map(|row| {
                let doc = loaded.iter().find(|(w, _)| *w == row.which).map(|(_, d)| d);
                let change = decode(row);
                match doc {
                    Some(doc) => change_json(row, change.as_ref(), doc),
                    None => Value::Null,
                }
            })
            .collect();
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(|r| r.log_seq))
            .flatten();
        Ok(json!({
            "case": docs.case.to_url(),
            "total": total,
            "order": if newest_first { "desc" } else { "asc" },
            "changes": changes,
            "next": next.map(|n| if newest_first {
                json!({ "before": n })
            } else {
                json!({ "after": n })
            }),
        }))
    })
    .await?;
    Ok(Json(body).into_response())
}

// ----- a point in history ---------------------------------------------------------

/// A change located in the log: the document it belongs to, its row, and
/// the heads of the point it names.
struct Point {
    row: LogRow,
    heads: Vec<ChangeHash>,
}

async fn locate(
    state: &AppState,
    docs: &CaseDocs,
    hash: ChangeHash,
    view: View,
) -> Result<Point, AppError> {
    let log = ChangeLog::of(state);
    let all = docs.all();
    blocking(move || {
        let row = log.find(&all, &hash)?.ok_or(AppError::NotFound)?;
        let doc = all
            .iter()
            .find(|(w, _)| *w == row.which)
            .map(|(_, d)| *d)
            .ok_or(AppError::NotFound)?;
        let heads = match view {
            View::Server => log.heads_at(doc, row.log_seq)?,
            View::Author => vec![hash],
        };
        Ok(Point { row, heads })
    })
    .await
}

/// `GET /api/cases/{id}/at/{change_hash}?view=server|author`: the whole
/// document the change belongs to as it stood at that point, with its
/// conflicts then.
pub async fn at(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path((id, hash)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let (auth, docs) = coordinated_case(&state, auth, &id)?;
    let q = query(raw, &["view"])?;
    let view = parse_view(&q)?;
    let hash = parse_hash(&hash)?;
    let point = locate(&state, &docs, hash, view).await?;
    let doc_id = docs.of(point.row.which)?;
    let doc = read_doc(&state, doc_id).await?;
    audit_read(&state, &auth.identity, Some(docs.case), "at").await;
    let log = ChangeLog::of(&state);
    let body = blocking(move || {
        let snapshot = Snapshot::read(&doc, Some(&point.heads)).map_err(history_error)?;
        let change = decode(&point.row);
        let conflicts = snapshot.conflicts(&doc).map_err(history_error)?;
        let conflicts = conflicts_with_authors(&log, point.row.which, doc_id, &doc, &conflicts)?;
        Ok(json!({
            "case": docs.case.to_url(),
            "doc": point.row.which.as_str(),
            "view": match view { View::Server => "server", View::Author => "author" },
            "change": change_json(&point.row, change.as_ref(), &doc),
            "heads": heads_json(&point.heads),
            "state": snapshot.to_json(),
            "conflicts": conflicts,
        }))
    })
    .await?;
    Ok(Json(body).into_response())
}

// ----- difference ------------------------------------------------------------------

/// `GET /api/cases/{id}/diff?from=HASH&to=HASH` (`view` as for `at`): the
/// difference between two points of one document, as readable lines and as
/// automerge patches. Without `from`, from before anything was written;
/// without `to`, up to now.
pub async fn diff(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let (auth, docs) = coordinated_case(&state, auth, &id)?;
    let q = query(raw, &["from", "to", "view"])?;
    let view = parse_view(&q)?;
    let from = q.get("from").map(|h| parse_hash(h)).transpose()?;
    let to = q.get("to").map(|h| parse_hash(h)).transpose()?;
    if from.is_none() && to.is_none() {
        return Err(AppError::BadRequest("give `from`, `to` or both"));
    }
    let from = match from {
        Some(h) => Some(locate(&state, &docs, h, view).await?),
        None => None,
    };
    let to = match to {
        Some(h) => Some(locate(&state, &docs, h, view).await?),
        None => None,
    };
    let which = match (&from, &to) {
        (Some(f), Some(t)) if f.row.which != t.row.which => {
            return Err(AppError::BadRequest(
                "both changes must belong to the same document",
            ))
        }
        (Some(p), _) | (_, Some(p)) => p.row.which,
        (None, None) => return Err(AppError::BadRequest("give `from`, `to` or both")),
    };
    let doc_id = docs.of(which)?;
    let log = ChangeLog::of(&state);
    let (from_seq, to_seq) = (
        from.as_ref().map(|p| p.row.log_seq),
        to.as_ref().map(|p| p.row.log_seq),
    );
    let apart = blocking(move || log.logged_between(doc_id, from_seq, to_seq)).await?;
    let doc = read_doc(&state, doc_id).await?;
    audit_read(&state, &auth.identity, Some(docs.case), "diff").await;
    let body = blocking(move || {
        let before = from.as_ref().map(|p| p.heads.clone()).unwrap_or_default();
        let after = to
            .as_ref()
            .map(|p| p.heads.clone())
            .unwrap_or_else(|| doc.get_heads());
        let difference = if apart > WIDE_DIFF_CHANGES {
            wide_difference(&doc, &before, &after)
        } else {
            history::difference(&doc, &before, &after)
        }
        .map_err(history_error)?;
        let end = |p: &Option<Point>, heads: &[ChangeHash]| match p {
            Some(p) => json!({
                "hash": p.row.hash.to_string(),
                "log_seq": p.row.log_seq,
                "heads": heads_json(heads),
            }),
            None => json!({ "hash": null, "heads": heads_json(heads) }),
        };
        let lines = &difference.lines;
        // The patches (up to about a megabyte for a wide difference) are
        // written straight into the body, between the fields before them
        // and after them in key order: the same JSON as one object with
        // every field, without a JSON tree of the patches.
        let first = json!({
            "case": docs.case.to_url(),
            "doc": which.as_str(),
            "entries": lines.iter().map(|l| json!({ "path": l.path, "text": l.text })).collect::<Vec<_>>(),
            "from": end(&from, &before),
            "lines": lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
        });
        let last = json!({
            "to": end(&to, &after),
            "view": match view { View::Server => "server", View::Author => "author" },
        });
        let mut body = Vec::with_capacity(4096 + 64 * difference.patches.len());
        serde_json::to_writer(&mut body, &first).map_err(AppError::internal)?;
        body.pop(); // its closing brace
        body.extend_from_slice(b",\"patches\":");
        history::write_patches_json(&difference.patches, &mut body);
        let rest = serde_json::to_vec(&last).map_err(AppError::internal)?;
        body.push(b',');
        body.extend_from_slice(rest.get(1..).unwrap_or_default());
        Ok(body)
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// More changes than this between the two points of a diff (in the log)
/// and both points are read whole beside automerge's diff
/// ([`wide_difference`]); the readable lines are the same either way.
const WIDE_DIFF_CHANGES: usize = 500;

/// [`history::difference`] for points far apart: automerge's diff on this
/// thread while another reads both points whole, which a wide difference
/// needs and which do not depend on the patches (about a third of the
/// time, on a second core).
fn wide_difference(
    doc: &Automerge,
    before: &[ChangeHash],
    after: &[ChangeHash],
) -> Result<history::Difference, HistoryError> {
    let read_both = || {
        Ok::<_, HistoryError>((
            history::PointReading::read(doc, before)?,
            history::PointReading::read(doc, after)?,
        ))
    };
    let (patches, readings) = std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("diff-reader".to_owned())
            .spawn_scoped(scope, read_both);
        let patches = history::diff_patches(doc, before, after);
        let readings = match reader {
            // A panic in automerge is caught by the guard around it; one
            // anywhere else in the reader counts as a failed read.
            Ok(reader) => reader.join().unwrap_or(Err(HistoryError::AutomergeFailed)),
            // No thread to be had: read here, one after the other.
            Err(_) => read_both(),
        };
        (patches, readings)
    });
    history::difference_with(doc, before, after, patches?, Some(readings?))
}

// ----- blame --------------------------------------------------------------------------

/// `GET /api/cases/{id}/blame?path=disappearance.circumstances[&at=HASH]`:
/// who wrote each span of a narrative (now, or at a point): `spans` name
/// the change that wrote them, `authors` give each change's user, device
/// and times.
pub async fn blame(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let (auth, docs) = coordinated_case(&state, auth, &id)?;
    let q = query(raw, &["path", "at", "view"])?;
    let view = parse_view(&q)?;
    let path = q
        .get("path")
        .ok_or(AppError::BadRequest("give the narrative's `path`"))?
        .clone();
    let keys = parse_path(&path)?;
    let which = Which::of_path(&path);
    let point = match q.get("at") {
        Some(h) => {
            let p = locate(&state, &docs, parse_hash(h)?, view).await?;
            if p.row.which != which {
                return Err(AppError::BadRequest(
                    "that change belongs to the other document",
                ));
            }
            Some(p)
        }
        None => None,
    };
    let doc_id = docs.of(which)?;
    let doc = read_doc(&state, doc_id).await?;
    audit_read(&state, &auth.identity, Some(docs.case), "blame").await;
    let log = ChangeLog::of(&state);
    let body = blocking(move || {
        let heads = point.as_ref().map(|p| p.heads.as_slice());
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let spans = history::blame(&doc, heads, &key_refs).map_err(history_error)?;
        let hashes: Vec<ChangeHash> = spans.iter().filter_map(|s| s.change).collect();
        let rows = log.provenance(which, doc_id, &hashes)?;
        let text: String = spans.iter().map(|s| s.text.as_str()).collect();
        // Each change's author once; spans name their change.
        let mut authors = serde_json::Map::new();
        for hash in &hashes {
            authors
                .entry(hash.to_string())
                .or_insert_with(|| provenance_json(Some(*hash), &rows, &doc));
        }
        Ok(json!({
            "case": docs.case.to_url(),
            "doc": which.as_str(),
            "path": path,
            "heads": heads.map(heads_json),
            "text": text,
            "spans": spans.iter().map(|s| json!({
                "start": s.start,
                "length": s.length,
                "text": s.text,
                "actor": s.actor,
                "change": s.change.map(|h| h.to_string()),
            })).collect::<Vec<_>>(),
            "authors": authors,
        }))
    })
    .await?;
    Ok(Json(body).into_response())
}

// ----- conflicts ------------------------------------------------------------------------

/// `GET /api/cases/{id}/conflicts`: every key of the case and its
/// coordination document with concurrent values, who wrote each value,
/// from which device and when.
pub async fn conflicts(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let (auth, docs) = coordinated_case(&state, auth, &id)?;
    let mut loaded = Vec::new();
    for (which, doc_id) in docs.all() {
        loaded.push((which, doc_id, read_doc(&state, doc_id).await?));
    }
    audit_read(&state, &auth.identity, Some(docs.case), "conflicts").await;
    let log = ChangeLog::of(&state);
    let body = blocking(move || {
        let mut all = Vec::new();
        for (which, doc_id, doc) in &loaded {
            if let Value::Array(c) = conflicts_json(&log, *which, *doc_id, doc, None)? {
                all.extend(c);
            }
        }
        Ok(json!({ "case": docs.case.to_url(), "conflicts": all }))
    })
    .await?;
    Ok(Json(body).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    /// `case` (default) or `coordination`; otherwise taken from the path.
    doc: Option<String>,
    path: String,
    /// The op id of the chosen value, as `GET …/conflicts` lists it.
    op: String,
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(body).map_err(|e| AppError::BadJson(e.to_string()))
}

/// Makes one change on a copy of `doc_id` with a fresh actor (`make`
/// returns the hashes it committed) and merges it under the caller's name
/// and device.
async fn commit_as_coordinator(
    state: &AppState,
    identity: &Identity,
    doc_id: DocumentId,
    make: impl FnOnce(&mut Automerge) -> Result<Vec<ChangeHash>, AppError> + Send + 'static,
) -> Result<Vec<ChangeHash>, AppError> {
    let doc = read_doc(state, doc_id).await?;
    let mut actor = [0u8; 16];
    getrandom::fill(&mut actor).map_err(AppError::internal)?;
    let (hashes, changes) = blocking(move || {
        let mut copy = doc.fork().with_actor(automerge::ActorId::from(actor));
        let hashes = make(&mut copy)?;
        let changes = hashes
            .iter()
            .map(|h| {
                copy.get_change_by_hash(h)
                    .map(|c| c.raw_bytes().to_vec())
                    .ok_or_else(|| AppError::internal("a new change is missing"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((hashes, changes))
    })
    .await?;
    if changes.is_empty() {
        return Ok(hashes);
    }
    let provenance = Provenance {
        user: identity.user().as_str().to_owned(),
        device: identity.device().as_str().to_owned(),
    };
    let now = now_ms();
    state
        .inner
        .docs
        .merge(
            doc_id,
            changes
                .into_iter()
                .map(|bytes| (bytes, provenance.clone(), now))
                .collect(),
        )
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?
        .map_err(AppError::internal)?;
    wait_logged(state, doc_id, &hashes).await?;
    Ok(hashes)
}

/// How long a coordinator's change may take to reach the change log.
const DURABLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until `hashes` are in the change log: `Docs::merge` answers once
/// the actor applied them and handed them to the group committer, and a
/// coordinator's action is only confirmed once it is durable (as a
/// device's change is only acknowledged then).
async fn wait_logged(
    state: &AppState,
    doc: DocumentId,
    hashes: &[ChangeHash],
) -> Result<(), AppError> {
    let log = ChangeLog::of(state);
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        let (log, wanted) = (log.clone(), hashes.to_vec());
        let stored = blocking(move || Ok(log.provenance(Which::Case, doc, &wanted)?.len())).await?;
        if stored == hashes.len() {
            return Ok(());
        }
        if start.elapsed() > DURABLE_TIMEOUT {
            return Err(AppError::Unavailable(
                "a coordinator's change was not stored in time".into(),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// `POST /api/cases/{id}/conflicts/resolve` with `{"path": "military.unit",
/// "op": "<op id>"}` (and `"doc": "coordination"` for that document):
/// writes the chosen value over every concurrent value, as a change made
/// under the coordinator's name.
pub async fn resolve(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    let (auth, docs) = coordinated_case(&state, auth, &id)?;
    let body: ResolveBody = parse_body(&body)?;
    let keys = parse_path(&body.path)?;
    if body.op.is_empty() || body.op.len() > 128 {
        return Err(AppError::BadRequest("op is the op id of the chosen value"));
    }
    let which = match &body.doc {
        Some(d) => Which::parse(d)?,
        None => Which::of_path(&body.path),
    };
    let doc_id = docs.of(which)?;
    let message = format!("resolve conflict at {}", body.path);
    let now = now_ms();
    let op = body.op.clone();
    let hashes = commit_as_coordinator(&state, &auth.identity, doc_id, move |doc| {
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        history::resolve_conflict(doc, &key_refs, &op, message, now)
            .map(|h| vec![h])
            .map_err(history_error)
    })
    .await?;
    Ok(Json(json!({
        "case": docs.case.to_url(),
        "doc": which.as_str(),
        "path": body.path,
        "hash": hashes.first().map(ToString::to_string),
    }))
    .into_response())
}

// ----- official status ---------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OfficialStatusBody {
    status: String,
    /// Ids of sources of the case document.
    #[serde(default)]
    basis: Vec<String>,
    /// Replaces the note, when given.
    note: Option<String>,
}

/// `POST /api/cases/{id}/official-status` with `{"status": "killed",
/// "basis": ["<source id>", …], "note": "…"}`: sets the official status on
/// the coordination document, with its basis (sources that exist in the
/// case document), under the coordinator's name.
pub async fn official_status(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    let (auth, docs) = coordinated_case(&state, auth, &id)?;
    let body: OfficialStatusBody = parse_body(&body)?;
    let status: Status = body
        .status
        .parse()
        .map_err(|_| AppError::BadRequest("unknown status"))?;
    if body.basis.len() > 100 {
        return Err(AppError::BadRequest("at most 100 sources in a basis"));
    }
    let basis = body
        .basis
        .iter()
        .map(|b| ItemId::new(b.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| AppError::BadRequest("a basis entry is not a source id"))?;
    if body
        .note
        .as_ref()
        .is_some_and(|n| n.len() > model::MAX_SPLICE_BYTES)
    {
        return Err(AppError::BadRequest("the note is too long"));
    }
    let coordination = docs.of(Which::Coordination)?;
    // The basis must name sources the case holds.
    let case = read_doc(&state, docs.case).await?;
    {
        let basis = basis.clone();
        blocking(move || {
            let read = model::read_case(&case).map_err(AppError::internal)?;
            if basis.iter().all(|b| read.sources.contains_key(b)) {
                Ok(())
            } else {
                Err(AppError::BadRequest(
                    "the basis names a source the case does not have",
                ))
            }
        })
        .await?;
    }
    let author = auth.identity.user().as_str().to_owned();
    let now = now_ms();
    let note = body.note.clone();
    let hashes = commit_as_coordinator(&state, &auth.identity, coordination, move |doc| {
        let mut hashes = Vec::new();
        let edit = Edit::SetOfficialStatus { status, basis };
        if let Some(h) = model::apply_edit(doc, &edit, &author, now).map_err(|e| {
            tracing::info!(error = %e, "official status refused");
            AppError::BadRequest("the official status could not be set")
        })? {
            hashes.push(h);
        }
        if let Some(note) = note {
            let current = model::read_coordination(doc)
                .map_err(AppError::internal)?
                .official_status
                .note
                .unwrap_or_default();
            if current != note {
                let edit = Edit::SpliceText {
                    field: Field::OfficialStatus(OfficialStatusField::Note),
                    pos: 0,
                    delete: current.chars().count(),
                    insert: note,
                };
                if let Some(h) = model::apply_edit(doc, &edit, &author, now).map_err(|e| {
                    tracing::info!(error = %e, "official status note refused");
                    AppError::BadRequest("the note could not be set")
                })? {
                    hashes.push(h);
                }
            }
        }
        Ok(hashes)
    })
    .await?;
    Ok(Json(json!({
        "case": docs.case.to_url(),
        "status": status.as_str(),
        "changes": hashes.iter().map(ToString::to_string).collect::<Vec<_>>(),
    }))
    .into_response())
}

// ----- the coordinator's case list ---------------------------------------------------

/// The title of a case: the person's names, as far as they are known.
fn case_title(state: &Value) -> String {
    let person = &state["person"];
    let names: Vec<&str> = ["given_name", "patronymic", "family_name"]
        .iter()
        .filter_map(|k| person[*k].as_str())
        .filter(|s| !s.trim().is_empty())
        .collect();
    names.join(" ")
}

/// `GET /api/coordinator/cases`: the cases the caller coordinates (every
/// case for an admin), each with its title, official status, last change,
/// number of changes, conflicts and quarantined changes waiting. For the
/// console's case list; 404 for relatives.
pub async fn coordinator_cases(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    if auth.identity.role() == Role::Relative {
        return Err(AppError::NotFound);
    }
    let principal = Principal::of(&auth.identity);
    let cases: Vec<DocumentId> = state
        .inner
        .acl
        .cases_of(&principal)
        .into_iter()
        .filter(|c| state.inner.acl.is_case_coordinator(&principal, c))
        .take(MAX_LISTED_CASES)
        .collect();
    let log = ChangeLog::of(&state);
    let mut out = Vec::new();
    for case in cases {
        let docs = CaseDocs {
            case,
            coordination: state.inner.acl.coordination_of(&case),
        };
        let case_doc = read_doc(&state, case).await?;
        let coordination_doc = match docs.coordination {
            Some(c) => Some(read_doc(&state, c).await?),
            None => None,
        };
        let identity = state.inner.identity.clone();
        let log = log.clone();
        let summary = blocking(move || {
            let mut changes = 0;
            let mut last = None;
            for (_, doc) in docs.all() {
                let (n, l) = log.count(doc)?;
                changes += n;
                last = last.max(l);
            }
            let now = Snapshot::read(&case_doc, None).map_err(history_error)?;
            let view = now.to_json();
            let mut conflicts = now.conflicts(&case_doc).map_err(history_error)?.len();
            let (status, set_at) = match &coordination_doc {
                Some(doc) => {
                    conflicts += Snapshot::read(doc, None)
                        .and_then(|s| s.conflicts(doc))
                        .map_err(history_error)?
                        .len();
                    let read = model::read_coordination(doc).ok();
                    let official = read.as_ref().map(|c| &c.official_status);
                    (
                        official
                            .and_then(|o| o.status.value())
                            .map(|s| s.as_str().to_owned()),
                        official.and_then(|o| o.set_at.value().copied()),
                    )
                }
                None => (None, None),
            };
            let quarantined = identity
                .quarantined(case, false)
                .map_err(|e| AppError::Unavailable(e.to_string()))?
                .len();
            Ok(json!({
                "id": case.to_url(),
                "title": case_title(&view),
                "official_status": status,
                "official_status_set_at_ms": set_at,
                "last_change_ms": last,
                "changes": changes,
                "conflicts": conflicts,
                "quarantined": quarantined,
            }))
        })
        .await?;
        out.push(summary);
    }
    audit_read(&state, &auth.identity, None, "case list").await;
    Ok(Json(json!({ "cases": out })).into_response())
}

// ----- export --------------------------------------------------------------------------

/// One document's part of an export. Blocking.
fn export_doc(
    log: &ChangeLog,
    which: Which,
    doc_id: DocumentId,
    doc: &Automerge,
) -> Result<(Value, Vec<LogRow>), AppError> {
    let rows = log.all(which, doc_id)?;
    let by_hash: HashMap<ChangeHash, LogRow> = rows.iter().map(|r| (r.hash, r.clone())).collect();
    let origins = history::value_origins(doc).map_err(history_error)?;
    let state = Snapshot::read(doc, None).map_err(history_error)?.to_json();
    let part = json!({
        "id": doc_id.to_url(),
        "heads": heads_json(&doc.get_heads()),
        "state": state,
        "conflicts": conflicts_json(log, which, doc_id, doc, None)?,
        "value_origins": origins.iter().map(|o| json!({
            "path": o.path,
            "conflicted": o.conflicted,
            "author": provenance_json(Some(o.change), &by_hash, doc),
        })).collect::<Vec<_>>(),
    });
    Ok((part, rows))
}

/// `GET /api/cases/{id}/export?format=json|html`: the case and its
/// coordination document with their provenance (who wrote every value and
/// every change, from which device, when), as JSON, or as a readable HTML
/// report a family can hand to an authority. Each export is audited.
pub async fn export(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let (auth, docs) = coordinated_case(&state, auth, &id)?;
    let q = query(raw, &["format"])?;
    let html = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("html") => true,
        Some(_) => return Err(AppError::BadRequest("format is `json` or `html`")),
    };
    let mut loaded = Vec::new();
    for (which, doc_id) in docs.all() {
        loaded.push((which, doc_id, read_doc(&state, doc_id).await?));
    }
    let log = ChangeLog::of(&state);
    let exported_at = now_ms();
    let by = json!({
        "user": auth.identity.user().as_str(),
        "device": auth.identity.device().as_str(),
    });
    let export = blocking(move || {
        let mut body = json!({
            "format": "casesync-export",
            "version": 1,
            "exported_at_ms": exported_at,
            "exported_by": by,
        });
        let mut changes = Vec::new();
        let mut contributors: BTreeMap<(String, String), (usize, i64, i64)> = BTreeMap::new();
        for (which, doc_id, doc) in &loaded {
            let (part, rows) = export_doc(&log, *which, *doc_id, doc)?;
            body[which.as_str()] = part;
            for row in rows {
                let meta = doc.get_change_meta_by_hash(&row.hash);
                let committed = meta.as_ref().and_then(|m| committed_ms(m.timestamp));
                let entry = contributors
                    .entry((row.user.clone(), row.device.clone()))
                    .or_insert((0, row.received_at_ms, row.received_at_ms));
                entry.0 += 1;
                entry.1 = entry.1.min(row.received_at_ms);
                entry.2 = entry.2.max(row.received_at_ms);
                changes.push(json!({
                    "log_seq": row.log_seq,
                    "doc": which.as_str(),
                    "hash": row.hash.to_string(),
                    "actor": hex(&row.actor),
                    "seq": row.seq,
                    "user": row.user,
                    "device": row.device,
                    "committed_at_ms": committed,
                    "received_at_ms": row.received_at_ms,
                    "offline_ms": committed.map(|c| row.received_at_ms.saturating_sub(c)),
                    "message": meta.as_ref().and_then(|m| m.message.as_ref().map(|s| s.to_string())),
                }));
            }
        }
        changes.sort_by_key(|c| c["log_seq"].as_i64().unwrap_or_default());
        body["contributors"] = Value::Array(
            contributors
                .into_iter()
                .map(|((user, device), (n, first, last))| {
                    json!({
                        "user": user, "device": device, "changes": n,
                        "first_received_at_ms": first, "last_received_at_ms": last,
                    })
                })
                .collect(),
        );
        body["changes"] = Value::Array(changes);
        Ok(body)
    })
    .await?;
    let change_count = export["changes"].as_array().map_or(0, Vec::len);
    state
        .inner
        .audit
        .record(
            AuditEvent::new(AuditKind::Export)
                .by(&auth.identity)
                .doc(docs.case)
                .detail(json!({
                    "format": if html { "html" } else { "json" },
                    "changes": change_count,
                })),
        )
        .await;
    let name = format!("case-{}-{}", docs.case, exported_at.div_euclid(1000));
    let mut response = if html {
        let page = blocking(move || Ok(report::render(&export))).await?;
        let mut r = page.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        // A self-contained document: its own inline style, nothing else.
        r.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
                 form-action 'none'; frame-ancestors 'none'",
            ),
        );
        set_attachment(&mut r, &format!("{name}.html"));
        r
    } else {
        let mut r = Json(export).into_response();
        set_attachment(&mut r, &format!("{name}.json"));
        r
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

fn set_attachment(r: &mut Response, file: &str) {
    // The name is built from a document id and a number: plain ASCII.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
}

/// The readable HTML report of an export.
mod report {
    use std::collections::HashMap;
    use std::fmt::Write as _;

    use serde_json::Value;

    /// Escapes text for HTML content and attribute values.
    pub(super) fn esc(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&#39;"),
                c => out.push(c),
            }
        }
        out
    }

    /// `2024-03-05 14:07 UTC` from milliseconds since the epoch.
    pub(super) fn date(ms: i64) -> String {
        let secs = ms.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = if m <= 2 { y + 1 } else { y };
        format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
            rem / 3600,
            (rem % 3600) / 60
        )
    }

    fn label(key: &str) -> String {
        let spaced = key.replace('_', " ");
        let mut chars = spaced.chars();
        match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => String::new(),
        }
    }

    const BOOKKEEPING: &[&str] = &["created_at", "created_by", "deleted_at", "deleted_by"];

    const CASE_SECTIONS: &[(&str, &str)] = &[
        ("person", "Person"),
        ("military", "Military service"),
        ("disappearance", "Disappearance"),
        ("status_claims", "What people say happened"),
        ("sources", "Sources"),
        ("requests", "Requests to authorities"),
        ("external_refs", "References in other registers"),
        ("dna", "DNA reference samples"),
        ("remains", "Reports of remains"),
        ("burial", "Burial"),
        ("timeline", "Timeline"),
        ("attachments", "Attachments (metadata only)"),
        ("links", "Related cases"),
    ];

    /// Who wrote each value: path -> "by olena (phone), 2024-03-05 14:07 UTC".
    fn origins(part: &Value) -> HashMap<String, String> {
        let mut out = HashMap::new();
        for o in part["value_origins"].as_array().into_iter().flatten() {
            let (Some(path), author) = (o["path"].as_str(), &o["author"]) else {
                continue;
            };
            let who = match (author["user"].as_str(), author["device"].as_str()) {
                (Some(u), Some(d)) => format!("{u} ({d})"),
                _ => "unknown".to_owned(),
            };
            let when = author["committed_at_ms"]
                .as_i64()
                .or_else(|| author["received_at_ms"].as_i64())
                .map(date)
                .unwrap_or_default();
            out.insert(path.to_owned(), format!("{who}, {when}"));
        }
        out
    }

    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            Value::Object(o) if o.is_empty() => String::new(),
            Value::Object(o) => o.keys().cloned().collect::<Vec<_>>().join(", "),
            other => other.to_string(),
        }
    }

    fn fields(
        out: &mut String,
        obj: &Value,
        path: &str,
        origins: &HashMap<String, String>,
        conflicts: &HashMap<String, String>,
    ) {
        let Some(map) = obj.as_object() else {
            return;
        };
        let mut rows = String::new();
        for (key, value) in map {
            if BOOKKEEPING.contains(&key.as_str()) {
                continue;
            }
            let full = format!("{path}.{key}");
            // Nested collections (name variants, replies) are items.
            if let Value::Object(inner) = value {
                if inner.values().any(Value::is_object) {
                    let _ = write!(rows, "<tr><th>{}</th><td>", esc(&label(key)));
                    items(&mut rows, value, &full, origins, conflicts);
                    rows.push_str("</td></tr>");
                    continue;
                }
            }
            let text = scalar(value);
            if text.is_empty() {
                continue;
            }
            let mut note = origins
                .get(&full)
                .map(|o| format!("<span class=\"by\">entered by {}</span>", esc(o)))
                .unwrap_or_default();
            if let Some(c) = conflicts.get(&full) {
                let _ = write!(
                    note,
                    "<span class=\"conflict\">Unresolved: {}</span>",
                    esc(c)
                );
            }
            let _ = write!(
                rows,
                "<tr><th>{}</th><td><div class=\"value\">{}</div>{note}</td></tr>",
                esc(&label(key)),
                esc(&text)
            );
        }
        if !rows.is_empty() {
            let _ = write!(out, "<table>{rows}</table>");
        }
    }

    fn items(
        out: &mut String,
        coll: &Value,
        path: &str,
        origins: &HashMap<String, String>,
        conflicts: &HashMap<String, String>,
    ) {
        let Some(map) = coll.as_object() else {
            return;
        };
        let mut any = false;
        for (id, item) in map {
            let deleted = !item["deleted_at"].is_null();
            let _ = write!(
                out,
                "<div class=\"item{}\"><div class=\"item-id\">{}{}</div>",
                if deleted { " deleted" } else { "" },
                esc(id),
                if deleted { " — deleted" } else { "" }
            );
            fields(out, item, &format!("{path}.{id}"), origins, conflicts);
            if let Some(by) = item["created_by"].as_str() {
                let when = item["created_at"].as_i64().map(date).unwrap_or_default();
                let _ = write!(
                    out,
                    "<div class=\"by\">added by {} {}</div>",
                    esc(by),
                    esc(&when)
                );
            }
            out.push_str("</div>");
            any = true;
        }
        if !any {
            out.push_str("<p class=\"none\">None recorded.</p>");
        }
    }

    fn conflict_map(part: &Value) -> HashMap<String, String> {
        let mut out = HashMap::new();
        for c in part["conflicts"].as_array().into_iter().flatten() {
            let Some(path) = c["path"].as_str() else {
                continue;
            };
            let values: Vec<String> = c["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    let who = v["author"]["user"].as_str().unwrap_or("unknown");
                    format!("“{}” ({who})", scalar(&v["value"]))
                })
                .collect();
            out.insert(path.to_owned(), values.join(" or "));
        }
        out
    }

    /// The whole report.
    pub(super) fn render(export: &Value) -> String {
        let case = &export["case"];
        let state = &case["state"];
        let origins = origins(case);
        let conflicts = conflict_map(case);
        let title = super::case_title(state);
        let title = if title.is_empty() {
            "Unnamed case".to_owned()
        } else {
            title
        };
        let mut body = String::new();
        let _ =
            write!(
            body,
            "<header><h1>{}</h1><p class=\"meta\">Case {}<br>Exported {} by {} ({})</p></header>",
            esc(&title),
            esc(case["id"].as_str().unwrap_or_default()),
            esc(&export["exported_at_ms"].as_i64().map(date).unwrap_or_default()),
            esc(export["exported_by"]["user"].as_str().unwrap_or_default()),
            esc(export["exported_by"]["device"].as_str().unwrap_or_default()),
        );

        // The official status first: it is what an authority asks for.
        let coordination = &export["coordination"];
        let official = &coordination["state"]["official_status"];
        body.push_str("<section><h2>Official status</h2>");
        match official["status"].as_str() {
            Some(status) => {
                let _ = write!(
                    body,
                    "<p class=\"status\">{}</p><p class=\"by\">set by {} {}</p>",
                    esc(&label(status)),
                    esc(official["set_by"].as_str().unwrap_or("unknown")),
                    esc(&official["set_at"].as_i64().map(date).unwrap_or_default()),
                );
                let basis: Vec<String> = official["basis"]
                    .as_object()
                    .map(|b| {
                        b.keys()
                            .map(|id| {
                                let t = state["sources"][id]["title"].as_str().unwrap_or(id);
                                format!("{} ({})", t, id)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if !basis.is_empty() {
                    let _ = write!(body, "<p>Basis: {}</p>", esc(&basis.join("; ")));
                }
                if let Some(note) = official["note"].as_str().filter(|n| !n.is_empty()) {
                    let _ = write!(body, "<p class=\"narrative\">{}</p>", esc(note));
                }
            }
            None => body.push_str("<p class=\"none\">No official status has been set.</p>"),
        }
        body.push_str("</section>");

        for (key, heading) in CASE_SECTIONS {
            let value = &state[*key];
            let _ = write!(body, "<section><h2>{}</h2>", esc(heading));
            let is_collection = matches!(
                *key,
                "status_claims"
                    | "sources"
                    | "requests"
                    | "external_refs"
                    | "dna"
                    | "remains"
                    | "timeline"
                    | "attachments"
                    | "links"
            );
            if is_collection {
                items(&mut body, value, key, &origins, &conflicts);
            } else {
                fields(&mut body, value, key, &origins, &conflicts);
            }
            body.push_str("</section>");
        }

        // Provenance: who contributed, and the change list's size.
        body.push_str("<section><h2>Provenance</h2><table><tr><th>Person (device)</th><th>Changes</th><th>First</th><th>Last</th></tr>");
        for c in export["contributors"].as_array().into_iter().flatten() {
            let _ = write!(
                body,
                "<tr><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(c["user"].as_str().unwrap_or_default()),
                esc(c["device"].as_str().unwrap_or_default()),
                c["changes"].as_u64().unwrap_or_default(),
                esc(&c["first_received_at_ms"]
                    .as_i64()
                    .map(date)
                    .unwrap_or_default()),
                esc(&c["last_received_at_ms"]
                    .as_i64()
                    .map(date)
                    .unwrap_or_default()),
            );
        }
        let changes = export["changes"].as_array().map_or(0, Vec::len);
        let heads: Vec<String> = case["heads"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str().map(str::to_owned))
            .collect();
        let _ = write!(
            body,
            "</table><p>{changes} recorded changes. Every change, with its author, device, \
             commit and receive times, is in the JSON export of the same case. \
             Document version: <code>{}</code></p></section>",
            esc(&heads.join(" "))
        );

        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
            esc(&title)
        )
    }

    const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;color:#1f2328;max-width:52rem;\
        margin:2rem auto;padding:0 1rem}h1{font-size:1.6rem;margin:0}h2{font-size:1.15rem;\
        border-bottom:1px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}.meta,.by{color:#57606a;\
        font-size:.85rem}.by{display:block}table{border-collapse:collapse;width:100%}th,td{text-align:left;\
        vertical-align:top;padding:.3rem .5rem;border-bottom:1px solid #eaeef2}th{width:14rem;\
        font-weight:600}.value{white-space:pre-wrap}.item{border:1px solid #d0d7de;border-radius:6px;\
        padding:.5rem;margin:.5rem 0}.item.deleted{opacity:.6}.item-id{font-family:monospace;\
        font-size:.8rem;color:#57606a}.conflict{display:block;color:#9a6700}.status{font-size:1.3rem;\
        font-weight:600}.none{color:#57606a;font-style:italic}.narrative{white-space:pre-wrap}\
        code{word-break:break-all;font-size:.75rem}@media print{body{margin:0}}";

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn escapes_and_dates() {
            assert_eq!(esc("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
            assert_eq!(date(0), "1970-01-01 00:00 UTC");
            assert_eq!(date(1_709_647_620_000), "2024-03-05 14:07 UTC");
            assert_eq!(label("date_of_birth"), "Date of birth");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_wide_difference_is_the_difference() {
        use sync_core::model::{DisappearanceField, FieldValue};
        let mut doc = Automerge::new();
        let init = model::CaseInit {
            created_by: "creator".to_owned(),
            coordination: None,
        };
        model::create_case(&mut doc, &init, 1).unwrap();
        let mut points = vec![Vec::new(), doc.get_heads()];
        for (i, place) in ["Izium", "Kharkiv", "Bakhmut"].into_iter().enumerate() {
            let edit = Edit::SetField {
                field: Field::Disappearance(DisappearanceField::Place),
                value: FieldValue::Str(place.to_owned()),
            };
            model::apply_edit(&mut doc, &edit, "relative", 2 + i as i64).unwrap();
            points.push(doc.get_heads());
        }
        for before in &points {
            for after in &points {
                assert_eq!(
                    wide_difference(&doc, before, after).unwrap(),
                    history::difference(&doc, before, after).unwrap()
                );
            }
        }
    }

    #[test]
    fn query_strings_are_checked() {
        let q = query(Some("limit=5&after=3".into()), &["limit", "after"]).ok();
        assert_eq!(
            q.and_then(|q| q.get("limit").cloned()).as_deref(),
            Some("5")
        );
        assert!(query(Some("limit=5&limit=6".into()), &["limit"]).is_err());
        assert!(query(Some("evil=1".into()), &["limit"]).is_err());
        assert!(parse_hash("zz").is_err());
        assert!(parse_hash(&"a".repeat(64)).is_ok());
        assert!(parse_path("a..b").is_err());
        assert!(parse_path("disappearance.circumstances").is_ok());
        assert_eq!(Which::of_path("official_status.note"), Which::Coordination);
        assert_eq!(Which::of_path("timeline.t1.title"), Which::Case);
    }

    #[test]
    fn titles_come_from_the_names() {
        let state = json!({ "person": { "given_name": "Taras", "family_name": "Melnyk", "patronymic": "" } });
        assert_eq!(case_title(&state), "Taras Melnyk");
        assert_eq!(case_title(&json!({})), "");
    }
}
