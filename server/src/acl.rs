//! Who may see which document: an in-memory index of documents, memberships,
//! coordinator assignments and revoked devices, kept in step with the
//! identity tables, so that the protocol engine's `Policy` and every route
//! can answer without IO.
//!
//! The rules (DESIGN.md section 6):
//! - A case has family members (its creator and invited relatives) and
//!   assigned coordinators. Both may write the case document. Only
//!   coordinators (and admins) write the coordination document; the family
//!   reads it.
//! - A coordinator is someone whose token says `role: coordinator` *and*
//!   who is assigned to the case. An admin (token role) may do everything,
//!   and the routes audit it.
//! - A revoked member, or a revoked device of a member, is in
//!   [`Mode::Quarantine`] for the case document: nothing new is sent to it,
//!   and what it sends is held for a coordinator to review, never merged. It
//!   sees nothing else.
//! - Anything else is [`Mode::None`], the same answer for "not yours" and
//!   "does not exist".
//!
//! Writers change the identity tables first and then this index, so the
//! index never grants what the database does not.

use std::collections::{HashMap, HashSet};
use std::sync::{PoisonError, RwLock};

use sync_core::engine::{Access, Policy};
use sync_core::ids::{DocumentId, PeerId};

use crate::auth::{Identity, Role};
use crate::identity::{IdentityError, IdentityStore, MemberRole, MembershipRow};
use crate::store::{DocumentKind, Storage, StoreError};

/// What a principal may do with one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Invisible: `doc-unavailable` or 404.
    None,
    /// May receive the document; its changes are refused.
    Read,
    /// May read and write.
    Write,
    /// Revoked: what it sends is quarantined, nothing is sent to it.
    Quarantine,
}

impl Mode {
    /// The engine's view: quarantine is routed like a write, and the document
    /// actor holds the changes back.
    pub fn access(self) -> Access {
        match self {
            Mode::None => Access::None,
            Mode::Read => Access::Read,
            Mode::Write | Mode::Quarantine => Access::Write,
        }
    }

    pub fn can_read(self) -> bool {
        matches!(self, Mode::Read | Mode::Write)
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    pub user: &'a str,
    pub device: &'a str,
    pub role: Role,
}

impl<'a> Principal<'a> {
    pub fn of(identity: &'a Identity) -> Self {
        Self {
            user: identity.user().as_str(),
            device: identity.device().as_str(),
            role: identity.role(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Membership {
    role: MemberRole,
    revoked: bool,
}

#[derive(Debug, Default)]
struct Index {
    kinds: HashMap<DocumentId, DocumentKind>,
    /// coordination document -> its case.
    case_of: HashMap<DocumentId, DocumentId>,
    /// case -> its coordination document.
    coordination_of: HashMap<DocumentId, DocumentId>,
    /// case -> user -> membership.
    members: HashMap<DocumentId, HashMap<String, Membership>>,
    revoked_devices: HashSet<(String, String)>,
}

/// The access index.
#[derive(Debug, Default)]
pub struct Acl {
    // A std RwLock: reads are tiny and never cross an `.await`.
    index: RwLock<Index>,
}

/// Why the index could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl Acl {
    /// Builds the index from storage (at start-up, on a blocking thread).
    pub fn load(storage: &dyn Storage, identity: &IdentityStore) -> Result<Self, AclError> {
        let acl = Self::default();
        {
            let mut index = acl.write();
            for meta in storage.list_documents()? {
                index.kinds.insert(meta.id, meta.kind);
            }
            for (case, coordination) in identity.case_links()? {
                index.case_of.insert(coordination, case);
                index.coordination_of.insert(case, coordination);
            }
            for row in identity.memberships()? {
                // Memberships count on the case document; a coordination
                // document's own rows (its creator) add nothing.
                if index.kinds.get(&row.doc) == Some(&DocumentKind::Coordination)
                    && index.case_of.contains_key(&row.doc)
                {
                    continue;
                }
                Self::put(&mut index, &row);
            }
            index.revoked_devices = identity.revoked_devices()?.into_iter().collect();
        }
        Ok(acl)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn put(index: &mut Index, row: &MembershipRow) {
        index.members.entry(row.doc).or_default().insert(
            row.user.clone(),
            Membership {
                role: row.role,
                revoked: row.revoked_at_ms.is_some(),
            },
        );
    }

    /// A new case and its coordination document, created by `creator`.
    pub fn add_case(&self, case: DocumentId, coordination: DocumentId, creator: &str) {
        let mut index = self.write();
        index.kinds.insert(case, DocumentKind::Case);
        index.kinds.insert(coordination, DocumentKind::Coordination);
        index.case_of.insert(coordination, case);
        index.coordination_of.insert(case, coordination);
        index.members.entry(case).or_default().insert(
            creator.to_owned(),
            Membership {
                role: MemberRole::Creator,
                revoked: false,
            },
        );
    }

    /// Sets (or restores) a membership after the identity tables changed.
    pub fn set_member(&self, case: DocumentId, user: &str, role: MemberRole) {
        self.write().members.entry(case).or_default().insert(
            user.to_owned(),
            Membership {
                role,
                revoked: false,
            },
        );
    }

    /// Marks a membership revoked.
    pub fn revoke_member(&self, case: DocumentId, user: &str) {
        if let Some(m) = self
            .write()
            .members
            .get_mut(&case)
            .and_then(|m| m.get_mut(user))
        {
            m.revoked = true;
        }
    }

    pub fn revoke_device(&self, user: &str, device: &str) {
        self.write()
            .revoked_devices
            .insert((user.to_owned(), device.to_owned()));
    }

    pub fn is_device_revoked(&self, user: &str, device: &str) -> bool {
        self.read()
            .revoked_devices
            .contains(&(user.to_owned(), device.to_owned()))
    }

    /// The case a document belongs to (itself for a case), and its kind.
    pub fn case_of(&self, doc: &DocumentId) -> Option<(DocumentId, DocumentKind)> {
        let index = self.read();
        match index.kinds.get(doc)? {
            DocumentKind::Case => Some((*doc, DocumentKind::Case)),
            DocumentKind::Coordination => index
                .case_of
                .get(doc)
                .map(|case| (*case, DocumentKind::Coordination)),
        }
    }

    pub fn coordination_of(&self, case: &DocumentId) -> Option<DocumentId> {
        self.read().coordination_of.get(case).copied()
    }

    /// The role `user` holds in `case`, if an active member.
    pub fn member_role(&self, case: &DocumentId, user: &str) -> Option<MemberRole> {
        self.read()
            .members
            .get(case)
            .and_then(|m| m.get(user))
            .filter(|m| !m.revoked)
            .map(|m| m.role)
    }

    /// Whether `p` acts as a coordinator of `case`: an admin, or a
    /// coordinator by token who is assigned to it.
    pub fn is_case_coordinator(&self, p: &Principal<'_>, case: &DocumentId) -> bool {
        match p.role {
            Role::Admin => self.read().kinds.get(case) == Some(&DocumentKind::Case),
            Role::Coordinator => {
                self.member_role(case, p.user) == Some(MemberRole::Coordinator)
                    && !self.is_device_revoked(p.user, p.device)
            }
            Role::Relative => false,
        }
    }

    /// What `p` may do with `doc`.
    pub fn mode(&self, p: &Principal<'_>, doc: &DocumentId) -> Mode {
        let index = self.read();
        let Some(kind) = index.kinds.get(doc).copied() else {
            return Mode::None;
        };
        let case = match kind {
            DocumentKind::Case => *doc,
            DocumentKind::Coordination => match index.case_of.get(doc) {
                Some(case) => *case,
                None => return Mode::None,
            },
        };
        let device_revoked = index
            .revoked_devices
            .contains(&(p.user.to_owned(), p.device.to_owned()));
        let membership = index
            .members
            .get(&case)
            .and_then(|m| m.get(p.user))
            .copied();
        if device_revoked || membership.is_some_and(|m| m.revoked) {
            // Only what they could write before: the case document.
            let was_writer = membership.is_some() || p.role == Role::Admin;
            return if kind == DocumentKind::Case && was_writer {
                Mode::Quarantine
            } else {
                Mode::None
            };
        }
        if p.role == Role::Admin {
            return Mode::Write;
        }
        match (membership.map(|m| m.role), p.role, kind) {
            (Some(MemberRole::Coordinator), Role::Coordinator, _) => Mode::Write,
            (Some(r), _, DocumentKind::Case) if r.is_family() => Mode::Write,
            (Some(r), _, DocumentKind::Coordination) if r.is_family() => Mode::Read,
            _ => Mode::None,
        }
    }

    /// The cases `p` may read.
    pub fn cases_of(&self, p: &Principal<'_>) -> Vec<DocumentId> {
        let cases: Vec<DocumentId> = {
            let index = self.read();
            index
                .kinds
                .iter()
                .filter(|(_, k)| **k == DocumentKind::Case)
                .map(|(id, _)| *id)
                .collect()
        };
        let mut out: Vec<DocumentId> = cases
            .into_iter()
            .filter(|case| self.mode(p, case).can_read())
            .collect();
        out.sort();
        out
    }
}

/// The engine's policy for one connection.
#[derive(Debug)]
pub struct UserPolicy<'a> {
    pub acl: &'a Acl,
    pub principal: Principal<'a>,
}

impl Policy for UserPolicy<'_> {
    fn access(&self, _peer: &PeerId, doc: &DocumentId) -> Access {
        self.acl.mode(&self.principal, doc).access()
    }
}
