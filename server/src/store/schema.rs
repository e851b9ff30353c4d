//! The SQLite schema, versioned with `PRAGMA user_version`.
//!
//! `PRAGMA application_id` is set to [`APPLICATION_ID`] so that we never
//! migrate some other program's database. `PRAGMA user_version` is the number
//! of entries of [`MIGRATIONS`] applied so far; at open, the missing ones are
//! applied in order, each in its own transaction together with the version
//! bump. A database with a newer version than this build knows is refused.
//!
//! Migrations are append-only: never edit one that has shipped, add a new one.
//!
//! # Version 1
//!
//! - `documents(doc_id PK, kind, created_by, created_at_ms)`: one row per
//!   automerge document; `doc_id` is the 16 raw bytes of the `DocumentId`;
//!   `kind` is `'case'` or `'coordination'`.
//! - `memberships(doc_id, user_id, role, added_at_ms)`, primary key
//!   `(doc_id, user_id)`: who may see a document and in which role. The
//!   creator is added with role `'creator'` at creation; other roles come with
//!   invitations.
//! - `changes(log_seq PK AUTOINCREMENT, doc_id, hash, bytes, actor, seq,
//!   user_id, device_id, received_at_ms)`, unique `(doc_id, hash)`: the
//!   append-only change log with provenance (who delivered the change, from
//!   which device, when the server received it). `AUTOINCREMENT` so a log seq
//!   is never reused, even after the last row is deleted by hand. Rows are
//!   never updated or deleted by the server.
//! - `snapshots(doc_id PK, bytes, covered_up_to)`: the latest compacted
//!   snapshot per document; it contains every change of that document with
//!   `log_seq <= covered_up_to`. Loading = snapshot + the document's changes
//!   with a greater log seq.
//! - `sync_states(doc_id, peer_key, bytes)`, primary key `(doc_id, peer_key)`:
//!   the persisted part of automerge's sync state per document and peer
//!   (`peer_key` names the device and the peer's storage id).
//!
//! Every table but `changes` is `WITHOUT ROWID` (clustered by its key).
//! Foreign keys tie every row to its document.
//!
//! # Version 2: identity, access and audit
//!
//! - `memberships` gains `revoked_at_ms` and `revoked_by`: a revoked
//!   membership stays as a row (the audit log and quarantine refer to it).
//!   Roles: `creator` and `relative` (family), `coordinator` (assigned).
//! - `case_documents(case_id PK, coordination_id UNIQUE)`: which
//!   coordination document belongs to which case.
//! - `devices(user_id, device_id, first_seen_ms, last_seen_ms,
//!   revoked_at_ms, revoked_by)`: every device that has authenticated, and
//!   its revocation.
//! - `invitations(id PK, code_hash UNIQUE, doc_id, role, created_by,
//!   created_at_ms, expires_at_ms, used_by, used_at_ms, revoked_at_ms,
//!   revoked_by)`: single-use, expiring invitations; only the SHA-256 of the
//!   code is kept.
//! - `quarantine(id PK, doc_id, hash, bytes, actor, user_id, device_id,
//!   received_at_ms, reason, decision, decided_by, decided_at_ms)`: changes
//!   held back from a document for a coordinator to accept or discard.
//! - `audit_log(seq PK, at_ms, kind, user_id, device_id, doc_id, subject,
//!   detail, prev_hash, hash)`: the hash-chained security log (`audit.rs`).
//! - `changes_by_actor`: actor binding looks up who first delivered an actor.

/// `PRAGMA application_id` of a casesync database ("CSYN").
pub const APPLICATION_ID: i64 = 0x4353_594e;

/// The migrations, in order. `MIGRATIONS[i]` takes the schema from version
/// `i` to version `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // Version 1.
    r#"
CREATE TABLE documents (
    doc_id        BLOB    NOT NULL PRIMARY KEY CHECK (length(doc_id) = 16),
    kind          TEXT    NOT NULL CHECK (kind IN ('case', 'coordination')),
    created_by    TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE memberships (
    doc_id      BLOB    NOT NULL REFERENCES documents (doc_id),
    user_id     TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    added_at_ms INTEGER NOT NULL,
    PRIMARY KEY (doc_id, user_id)
) WITHOUT ROWID;

CREATE INDEX memberships_by_user ON memberships (user_id, doc_id);

CREATE TABLE changes (
    log_seq        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    doc_id         BLOB    NOT NULL REFERENCES documents (doc_id),
    hash           BLOB    NOT NULL CHECK (length(hash) = 32),
    bytes          BLOB    NOT NULL,
    actor          BLOB    NOT NULL,
    seq            INTEGER NOT NULL CHECK (seq >= 0),
    user_id        TEXT    NOT NULL,
    device_id      TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL,
    UNIQUE (doc_id, hash)
);

CREATE INDEX changes_by_doc ON changes (doc_id, log_seq);

CREATE TABLE snapshots (
    doc_id        BLOB    NOT NULL PRIMARY KEY REFERENCES documents (doc_id),
    bytes         BLOB    NOT NULL,
    covered_up_to INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE sync_states (
    doc_id   BLOB NOT NULL REFERENCES documents (doc_id),
    peer_key TEXT NOT NULL,
    bytes    BLOB NOT NULL,
    PRIMARY KEY (doc_id, peer_key)
) WITHOUT ROWID;
"#,
    // Version 2.
    r#"
ALTER TABLE memberships ADD COLUMN revoked_at_ms INTEGER;
ALTER TABLE memberships ADD COLUMN revoked_by TEXT;

CREATE TABLE case_documents (
    case_id         BLOB NOT NULL PRIMARY KEY REFERENCES documents (doc_id),
    coordination_id BLOB NOT NULL UNIQUE REFERENCES documents (doc_id)
) WITHOUT ROWID;

CREATE TABLE devices (
    user_id       TEXT    NOT NULL,
    device_id     TEXT    NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    revoked_at_ms INTEGER,
    revoked_by    TEXT,
    PRIMARY KEY (user_id, device_id)
) WITHOUT ROWID;

CREATE TABLE invitations (
    id            TEXT    NOT NULL PRIMARY KEY,
    code_hash     BLOB    NOT NULL UNIQUE CHECK (length(code_hash) = 32),
    doc_id        BLOB    NOT NULL REFERENCES documents (doc_id),
    role          TEXT    NOT NULL,
    created_by    TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_by       TEXT,
    used_at_ms    INTEGER,
    revoked_at_ms INTEGER,
    revoked_by    TEXT
) WITHOUT ROWID;

CREATE TABLE quarantine (
    id             INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    doc_id         BLOB    NOT NULL REFERENCES documents (doc_id),
    hash           BLOB    NOT NULL CHECK (length(hash) = 32),
    bytes          BLOB    NOT NULL,
    actor          BLOB    NOT NULL,
    user_id        TEXT    NOT NULL,
    device_id      TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL,
    reason         TEXT    NOT NULL,
    decision       TEXT CHECK (decision IN ('accepted', 'discarded')),
    decided_by     TEXT,
    decided_at_ms  INTEGER,
    UNIQUE (doc_id, hash)
);

CREATE TABLE audit_log (
    seq       INTEGER NOT NULL PRIMARY KEY,
    at_ms     INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    user_id   TEXT,
    device_id TEXT,
    doc_id    BLOB,
    subject   TEXT,
    detail    TEXT    NOT NULL,
    prev_hash BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash      BLOB    NOT NULL CHECK (length(hash) = 32)
);

CREATE INDEX changes_by_actor ON changes (actor, log_seq);
"#,
];

/// The schema version this build writes.
pub fn current_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}
