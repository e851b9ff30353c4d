//! Who may see which case: an in-memory index of memberships, kept in step
//! with the database, so the protocol engine's `Policy` can answer without
//! IO for every message.
//!
//! For now the creator of a case is its only member. The identity issue
//! extends this with roles, invitations and revocation: all of them change
//! the rows behind this index and then the index itself.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use sync_core::engine::{Access, Policy};
use sync_core::ids::{DocumentId, PeerId};

use crate::store::{DocumentKind, Storage, StoreError};

#[derive(Debug, Default)]
struct DocAcl {
    kind: Option<DocumentKind>,
    members: HashSet<String>,
}

/// The membership index.
#[derive(Debug, Default)]
pub struct Acl {
    // A std RwLock: reads are tiny and never cross an `.await`.
    docs: RwLock<HashMap<DocumentId, DocAcl>>,
}

impl Acl {
    /// Builds the index from storage (at start-up, on a blocking thread).
    pub fn load(storage: &dyn Storage) -> Result<Self, StoreError> {
        let acl = Self::default();
        for meta in storage.list_documents()? {
            let members = storage
                .members(&meta.id)?
                .into_iter()
                .map(|m| m.user)
                .collect();
            acl.insert(meta.id, meta.kind, members);
        }
        Ok(acl)
    }

    pub fn insert(&self, doc: DocumentId, kind: DocumentKind, members: HashSet<String>) {
        if let Ok(mut map) = self.docs.write() {
            map.insert(
                doc,
                DocAcl {
                    kind: Some(kind),
                    members,
                },
            );
        }
    }

    /// What `user` may do with `doc`. Unknown documents and documents of
    /// other families give the same answer.
    pub fn access_for_user(&self, user: &str, doc: &DocumentId) -> Access {
        let Ok(map) = self.docs.read() else {
            return Access::None;
        };
        match map.get(doc) {
            Some(acl) if acl.members.contains(user) => Access::Write,
            _ => Access::None,
        }
    }

    /// The cases a user may see.
    pub fn cases_of(&self, user: &str) -> Vec<DocumentId> {
        let Ok(map) = self.docs.read() else {
            return Vec::new();
        };
        let mut out: Vec<DocumentId> = map
            .iter()
            .filter(|(_, a)| a.kind == Some(DocumentKind::Case) && a.members.contains(user))
            .map(|(id, _)| *id)
            .collect();
        out.sort();
        out
    }
}

/// The engine's policy for one connection's user.
#[derive(Debug)]
pub struct UserPolicy<'a> {
    pub acl: &'a Acl,
    pub user: &'a str,
}

impl Policy for UserPolicy<'_> {
    fn access(&self, _peer: &PeerId, doc: &DocumentId) -> Access {
        self.acl.access_for_user(self.user, doc)
    }
}
