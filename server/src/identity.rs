//! The identity tables: memberships and their revocation, coordinator
//! assignments, devices, invitations, the quarantine, and the actor
//! bindings derived from the change log (schema version 2, see
//! `store/schema.rs`).
//!
//! These rows change rarely (a few per family per week), unlike the change
//! log, so they do not go through the group-commit writer: `IdentityStore`
//! owns one SQLite connection to the same database file (WAL lets it and the
//! store's connections work side by side) behind a mutex, and every call is
//! blocking: callers run it on `spawn_blocking`. Each write is one
//! transaction with `synchronous=FULL`, so an accepted invitation or a
//! revocation survives a power cut once the call returns.

use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};
use sync_core::ids::DocumentId;

use crate::store::{open_connection, DbKey};

/// Why an identity operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity tables: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("identity tables: {0}")]
    Open(#[from] crate::store::StoreError),
    #[error("identity tables: stored document id is not 16 bytes")]
    BadDocId,
}

/// A member's role in a case, as stored in `memberships.role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    /// A relative who created the case.
    Creator,
    /// A relative who joined by invitation.
    Relative,
    /// A coordinator assigned to the case.
    Coordinator,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Creator => "creator",
            MemberRole::Relative => "relative",
            MemberRole::Coordinator => "coordinator",
        }
    }

    pub fn from_stored(s: &str) -> Option<Self> {
        match s {
            "creator" => Some(MemberRole::Creator),
            "relative" => Some(MemberRole::Relative),
            "coordinator" => Some(MemberRole::Coordinator),
            _ => None,
        }
    }

    /// Family members: the creator and invited relatives.
    pub fn is_family(self) -> bool {
        matches!(self, MemberRole::Creator | MemberRole::Relative)
    }
}

/// One membership row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MembershipRow {
    #[serde(skip)]
    pub doc: DocumentId,
    pub user: String,
    pub role: MemberRole,
    pub added_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// One device row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceRow {
    pub user: String,
    pub device: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// One invitation, without its code (only the code's hash is stored).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InvitationRow {
    pub id: String,
    pub role: MemberRole,
    pub created_by: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub used_by: Option<String>,
    pub used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

/// Why an invitation code was not accepted. Deliberately coarse towards the
/// caller (see `members_api`); precise in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteRefusal {
    Unknown,
    Expired,
    Revoked,
    AlreadyUsed,
}

impl InviteRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            InviteRefusal::Unknown => "unknown",
            InviteRefusal::Expired => "expired",
            InviteRefusal::Revoked => "revoked",
            InviteRefusal::AlreadyUsed => "already_used",
        }
    }
}

/// A change held back from a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedChange {
    pub id: i64,
    pub doc: DocumentId,
    pub hash: [u8; 32],
    pub bytes: Vec<u8>,
    pub actor: Vec<u8>,
    pub user: String,
    pub device: String,
    pub received_at_ms: i64,
    pub reason: String,
    pub decision: Option<String>,
}

/// A change to quarantine.
#[derive(Debug, Clone)]
pub struct NewQuarantined {
    pub doc: DocumentId,
    pub hash: [u8; 32],
    pub bytes: Vec<u8>,
    pub actor: Vec<u8>,
    pub user: String,
    pub device: String,
    pub received_at_ms: i64,
    pub reason: &'static str,
}

/// SHA-256 of an invitation code: what is stored and looked up.
pub fn code_hash(code: &str) -> [u8; 32] {
    Sha256::digest(code.as_bytes()).into()
}

fn doc_id(bytes: Vec<u8>) -> Result<DocumentId, IdentityError> {
    let raw: [u8; 16] = bytes.try_into().map_err(|_| IdentityError::BadDocId)?;
    Ok(DocumentId::from_bytes(raw))
}

/// The identity tables.
#[derive(Debug)]
pub struct IdentityStore {
    conn: Mutex<Connection>,
}

impl IdentityStore {
    /// Opens the database the store already created and migrated (keyed
    /// with `key` when it is encrypted).
    pub fn open(db_path: &Path, key: Option<&DbKey>) -> Result<Self, IdentityError> {
        let conn = open_connection(
            db_path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            key,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, IdentityError>,
    ) -> Result<T, IdentityError> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut conn)
    }

    // ----- cases --------------------------------------------------------

    pub fn link_case(
        &self,
        case: DocumentId,
        coordination: DocumentId,
    ) -> Result<(), IdentityError> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO case_documents (case_id, coordination_id) VALUES (?1, ?2)",
                params![
                    case.as_bytes().as_slice(),
                    coordination.as_bytes().as_slice()
                ],
            )?;
            Ok(())
        })
    }

    /// (case, coordination) pairs.
    pub fn case_links(&self) -> Result<Vec<(DocumentId, DocumentId)>, IdentityError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT case_id, coordination_id FROM case_documents")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            rows.map(|row| {
                let (a, b) = row?;
                Ok((doc_id(a)?, doc_id(b)?))
            })
            .collect()
        })
    }

    // ----- memberships ---------------------------------------------------

    /// Every membership row (revoked ones too), for the in-memory index.
    pub fn memberships(&self) -> Result<Vec<MembershipRow>, IdentityError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT doc_id, user_id, role, added_at_ms, revoked_at_ms FROM memberships",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (doc, user, role, added_at_ms, revoked_at_ms) = row?;
                // A role this build does not know grants nothing.
                let Some(role) = MemberRole::from_stored(&role) else {
                    tracing::warn!("membership with an unknown role ignored");
                    continue;
                };
                out.push(MembershipRow {
                    doc: doc_id(doc)?,
                    user,
                    role,
                    added_at_ms,
                    revoked_at_ms,
                });
            }
            Ok(out)
        })
    }

    /// The members of one case.
    pub fn members_of(&self, doc: DocumentId) -> Result<Vec<MembershipRow>, IdentityError> {
        Ok(self
            .memberships()?
            .into_iter()
            .filter(|m| m.doc == doc)
            .collect())
    }

    /// Adds `user` to `doc` with `role`, or restores a revoked membership.
    /// An existing active membership keeps its role unless `role` is
    /// `Coordinator` assigned over nothing.
    pub fn add_member(
        &self,
        doc: DocumentId,
        user: &str,
        role: MemberRole,
        now_ms: i64,
    ) -> Result<(), IdentityError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO memberships (doc_id, user_id, role, added_at_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (doc_id, user_id) DO UPDATE SET
                   role = excluded.role, added_at_ms = excluded.added_at_ms,
                   revoked_at_ms = NULL, revoked_by = NULL
                 WHERE memberships.revoked_at_ms IS NOT NULL",
                params![doc.as_bytes().as_slice(), user, role.as_str(), now_ms],
            )?;
            Ok(())
        })
    }

    /// Revokes `user`'s membership of `doc`. Returns false if there was no
    /// active membership with one of `roles`.
    pub fn revoke_member(
        &self,
        doc: DocumentId,
        user: &str,
        roles: &[MemberRole],
        by: &str,
        now_ms: i64,
    ) -> Result<bool, IdentityError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let role: Option<String> = tx
                .query_row(
                    "SELECT role FROM memberships
                     WHERE doc_id = ?1 AND user_id = ?2 AND revoked_at_ms IS NULL",
                    params![doc.as_bytes().as_slice(), user],
                    |r| r.get(0),
                )
                .optional()?;
            let allowed = role
                .as_deref()
                .and_then(MemberRole::from_stored)
                .is_some_and(|r| roles.contains(&r));
            if allowed {
                tx.execute(
                    "UPDATE memberships SET revoked_at_ms = ?3, revoked_by = ?4
                     WHERE doc_id = ?1 AND user_id = ?2",
                    params![doc.as_bytes().as_slice(), user, now_ms, by],
                )?;
            }
            tx.commit()?;
            Ok(allowed)
        })
    }

    // ----- devices -------------------------------------------------------

    /// Records that a device authenticated (first and last seen).
    pub fn touch_device(&self, user: &str, device: &str, now_ms: i64) -> Result<(), IdentityError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO devices (user_id, device_id, first_seen_ms, last_seen_ms)
                 VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms",
                params![user, device, now_ms],
            )?;
            Ok(())
        })
    }

    pub fn devices_of(&self, user: &str) -> Result<Vec<DeviceRow>, IdentityError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT user_id, device_id, first_seen_ms, last_seen_ms, revoked_at_ms
                 FROM devices WHERE user_id = ?1 ORDER BY first_seen_ms, device_id",
            )?;
            let rows = stmt.query_map([user], |r| {
                Ok(DeviceRow {
                    user: r.get(0)?,
                    device: r.get(1)?,
                    first_seen_ms: r.get(2)?,
                    last_seen_ms: r.get(3)?,
                    revoked_at_ms: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Revokes a device. A device never seen is recorded as revoked too, so
    /// a token minted for it later is refused. Returns false if it was
    /// already revoked.
    pub fn revoke_device(
        &self,
        user: &str,
        device: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<bool, IdentityError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT OR IGNORE INTO devices (user_id, device_id, first_seen_ms, last_seen_ms)
                 VALUES (?1, ?2, ?3, ?3)",
                params![user, device, now_ms],
            )?;
            let n = tx.execute(
                "UPDATE devices SET revoked_at_ms = ?3, revoked_by = ?4
                 WHERE user_id = ?1 AND device_id = ?2 AND revoked_at_ms IS NULL",
                params![user, device, now_ms, by],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    pub fn revoked_devices(&self) -> Result<Vec<(String, String)>, IdentityError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT user_id, device_id FROM devices WHERE revoked_at_ms IS NOT NULL",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    // ----- invitations ---------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub fn create_invitation(
        &self,
        id: &str,
        code: &str,
        doc: DocumentId,
        role: MemberRole,
        by: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), IdentityError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO invitations (id, code_hash, doc_id, role, created_by, created_at_ms, expires_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    code_hash(code).as_slice(),
                    doc.as_bytes().as_slice(),
                    role.as_str(),
                    by,
                    now_ms,
                    expires_at_ms
                ],
            )?;
            Ok(())
        })
    }

    /// Accepts an invitation for `user` in one transaction: it must exist,
    /// be unused, unrevoked and unexpired; it is marked used and the
    /// membership is added. Returns the case and role, or why not.
    pub fn accept_invitation(
        &self,
        code: &str,
        user: &str,
        now_ms: i64,
    ) -> Result<Result<(DocumentId, MemberRole, String), InviteRefusal>, IdentityError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row = tx
                .query_row(
                    "SELECT id, doc_id, role, expires_at_ms, used_at_ms, revoked_at_ms
                     FROM invitations WHERE code_hash = ?1",
                    [code_hash(code).as_slice()],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                            r.get::<_, Option<i64>>(5)?,
                        ))
                    },
                )
                .optional()?;
            let Some((id, doc, role, expires_at_ms, used_at_ms, revoked_at_ms)) = row else {
                return Ok(Err(InviteRefusal::Unknown));
            };
            let refusal = if revoked_at_ms.is_some() {
                Some(InviteRefusal::Revoked)
            } else if used_at_ms.is_some() {
                Some(InviteRefusal::AlreadyUsed)
            } else if now_ms >= expires_at_ms {
                Some(InviteRefusal::Expired)
            } else {
                None
            };
            if let Some(refusal) = refusal {
                return Ok(Err(refusal));
            }
            let role = MemberRole::from_stored(&role).unwrap_or(MemberRole::Relative);
            let doc = doc_id(doc)?;
            tx.execute(
                "UPDATE invitations SET used_by = ?2, used_at_ms = ?3 WHERE id = ?1",
                params![id, user, now_ms],
            )?;
            tx.execute(
                "INSERT INTO memberships (doc_id, user_id, role, added_at_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (doc_id, user_id) DO UPDATE SET
                   role = CASE WHEN memberships.revoked_at_ms IS NULL THEN memberships.role ELSE excluded.role END,
                   added_at_ms = excluded.added_at_ms, revoked_at_ms = NULL, revoked_by = NULL",
                params![doc.as_bytes().as_slice(), user, role.as_str(), now_ms],
            )?;
            tx.commit()?;
            Ok(Ok((doc, role, id)))
        })
    }

    /// Revokes an unused invitation of `doc`. Returns false if there is no
    /// such invitation, or it was used or revoked already.
    pub fn revoke_invitation(
        &self,
        doc: DocumentId,
        id: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<bool, IdentityError> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE invitations SET revoked_at_ms = ?3, revoked_by = ?4
                 WHERE id = ?1 AND doc_id = ?2 AND used_at_ms IS NULL AND revoked_at_ms IS NULL",
                params![id, doc.as_bytes().as_slice(), now_ms, by],
            )?;
            Ok(n == 1)
        })
    }

    pub fn invitations_of(&self, doc: DocumentId) -> Result<Vec<InvitationRow>, IdentityError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, role, created_by, created_at_ms, expires_at_ms, used_by, used_at_ms, revoked_at_ms
                 FROM invitations WHERE doc_id = ?1 ORDER BY created_at_ms, id",
            )?;
            let rows = stmt.query_map([doc.as_bytes().as_slice()], |r| {
                Ok(InvitationRow {
                    id: r.get(0)?,
                    role: MemberRole::from_stored(&r.get::<_, String>(1)?)
                        .unwrap_or(MemberRole::Relative),
                    created_by: r.get(2)?,
                    created_at_ms: r.get(3)?,
                    expires_at_ms: r.get(4)?,
                    used_by: r.get(5)?,
                    used_at_ms: r.get(6)?,
                    revoked_at_ms: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    // ----- quarantine ----------------------------------------------------

    /// Stores changes held back from their document. A change already held
    /// is kept once. Returns how many were new.
    pub fn quarantine(&self, changes: &[NewQuarantined]) -> Result<usize, IdentityError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut added = 0;
            for q in changes {
                added += tx.execute(
                    "INSERT OR IGNORE INTO quarantine
                       (doc_id, hash, bytes, actor, user_id, device_id, received_at_ms, reason)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        q.doc.as_bytes().as_slice(),
                        q.hash.as_slice(),
                        q.bytes,
                        q.actor,
                        q.user,
                        q.device,
                        q.received_at_ms,
                        q.reason
                    ],
                )?;
            }
            tx.commit()?;
            Ok(added)
        })
    }

    /// The quarantined changes of a document (undecided ones only, unless
    /// `all`), oldest first.
    pub fn quarantined(
        &self,
        doc: DocumentId,
        all: bool,
    ) -> Result<Vec<QuarantinedChange>, IdentityError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, doc_id, hash, bytes, actor, user_id, device_id, received_at_ms, reason, decision
                 FROM quarantine WHERE doc_id = ?1 AND (?2 OR decision IS NULL) ORDER BY id",
            )?;
            let rows = stmt.query_map(params![doc.as_bytes().as_slice(), all], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, Option<String>>(9)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, doc, hash, bytes, actor, user, device, received_at_ms, reason, decision) =
                    row?;
                out.push(QuarantinedChange {
                    id,
                    doc: doc_id(doc)?,
                    hash: hash.try_into().map_err(|_| IdentityError::BadDocId)?,
                    bytes,
                    actor,
                    user,
                    device,
                    received_at_ms,
                    reason,
                    decision,
                });
            }
            Ok(out)
        })
    }

    /// Records a coordinator's decision on undecided quarantined changes of
    /// `doc`. Returns the ids that were decided now.
    pub fn decide_quarantined(
        &self,
        doc: DocumentId,
        ids: &[i64],
        accepted: bool,
        by: &str,
        now_ms: i64,
    ) -> Result<Vec<i64>, IdentityError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut decided = Vec::new();
            for id in ids {
                let n = tx.execute(
                    "UPDATE quarantine SET decision = ?3, decided_by = ?4, decided_at_ms = ?5
                     WHERE id = ?1 AND doc_id = ?2 AND decision IS NULL",
                    params![
                        id,
                        doc.as_bytes().as_slice(),
                        if accepted { "accepted" } else { "discarded" },
                        by,
                        now_ms
                    ],
                )?;
                if n == 1 {
                    decided.push(*id);
                }
            }
            tx.commit()?;
            Ok(decided)
        })
    }

    // ----- actor bindings ------------------------------------------------

    /// Each actor id in the change log with the user and device that first
    /// delivered it.
    pub fn actor_bindings(&self) -> Result<Vec<(Vec<u8>, String, String)>, IdentityError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT c.actor, c.user_id, c.device_id FROM changes c
                 JOIN (SELECT actor, MIN(log_seq) AS first FROM changes GROUP BY actor) f
                   ON c.log_seq = f.first",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

/// Which device each automerge actor id belongs to: the first device that
/// delivered a change with it (DESIGN.md section 6, "actor binding").
/// Loaded from the change log at start-up; a new actor is claimed by the
/// first device whose sync message carries it, before automerge applies the
/// message, and the change log then records the same device.
#[derive(Debug, Default)]
pub struct ActorBindings {
    map: std::sync::RwLock<std::collections::HashMap<Vec<u8>, (String, String)>>,
}

/// An actor id that belongs to another device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundElsewhere {
    pub actor: Vec<u8>,
    pub owner_user: String,
    pub owner_device: String,
}

impl ActorBindings {
    pub fn load(identity: &IdentityStore) -> Result<Self, IdentityError> {
        let map = identity
            .actor_bindings()?
            .into_iter()
            .map(|(actor, user, device)| (actor, (user, device)))
            .collect();
        Ok(Self {
            map: std::sync::RwLock::new(map),
        })
    }

    /// Checks that every actor in `actors` is unbound or bound to
    /// (`user`, `device`), and binds the unbound ones to it. Nothing is
    /// bound if any actor belongs to someone else.
    pub fn claim(
        &self,
        actors: &[Vec<u8>],
        user: &str,
        device: &str,
    ) -> Result<(), BoundElsewhere> {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        for actor in actors {
            if let Some((u, d)) = map.get(actor) {
                if u != user || d != device {
                    return Err(BoundElsewhere {
                        actor: actor.clone(),
                        owner_user: u.clone(),
                        owner_device: d.clone(),
                    });
                }
            }
        }
        for actor in actors {
            map.entry(actor.clone())
                .or_insert_with(|| (user.to_owned(), device.to_owned()));
        }
        Ok(())
    }

    /// Who owns `actor`, if anyone.
    pub fn owner(&self, actor: &[u8]) -> Option<(String, String)> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(actor)
            .cloned()
    }
}
