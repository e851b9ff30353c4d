//! A fault-injecting wrapper around any [`Storage`], for tests of what the
//! server does when the disk fails (issue 8, "storage faults"): the N-th
//! write transaction from now fails with "disk full" or an I/O error, as
//! SQLite would report them, and nothing of it is stored.
//!
//! The server must then not acknowledge the change, stay up, and take the
//! change again when the device retries after the fault clears.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use sync_core::ids::DocumentId;

use super::{
    BatchResult, DocumentMeta, LoadedDoc, LogSeq, LoggedChange, Member, Storage, StoreError,
    WriteBatch,
};

/// What a failing write looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `SQLITE_FULL`: the disk (or the database's size limit) is full.
    DiskFull,
    /// `SQLITE_IOERR`: the write or the fsync failed.
    Io,
}

impl Fault {
    fn error(self) -> StoreError {
        let (code, message) = match self {
            Fault::DiskFull => (
                rusqlite::ffi::SQLITE_FULL,
                "database or disk is full (injected)",
            ),
            Fault::Io => (rusqlite::ffi::SQLITE_IOERR, "disk I/O error (injected)"),
        };
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            Some(message.to_owned()),
        ))
    }
}

#[derive(Debug, Default)]
struct Plan {
    /// Write transactions seen so far.
    writes: u64,
    /// Fail writes number `from..from + count` (1-based, counted from the
    /// start), with `fault`.
    failing: Option<(u64, u64, Fault)>,
    /// Writes that failed.
    failed: u64,
    /// Every write transaction takes this much longer (a slow disk).
    delay: std::time::Duration,
}

/// The wrapper. Reads always pass through.
#[derive(Debug)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    plan: Mutex<Plan>,
}

impl std::fmt::Debug for dyn Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Storage")
    }
}

impl FaultyStorage {
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Self {
            inner,
            plan: Mutex::new(Plan::default()),
        }
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on, the `nth` write (1 = the next one) and the `count - 1`
    /// after it fail with `fault`.
    pub fn fail_writes(&self, nth: u64, count: u64, fault: Fault) {
        let mut plan = self.plan();
        let from = plan.writes + nth.max(1);
        plan.failing = Some((from, count, fault));
    }

    /// From now on every write transaction takes `delay` longer, as on a
    /// slow disk whose fsync takes that long.
    pub fn slow_writes(&self, delay: std::time::Duration) {
        self.plan().delay = delay;
    }

    /// The disk works again.
    pub fn clear(&self) {
        self.plan().failing = None;
    }

    /// Write transactions that failed so far.
    pub fn failed(&self) -> u64 {
        self.plan().failed
    }
}

impl Storage for FaultyStorage {
    fn apply_batches(&self, batches: &[WriteBatch]) -> Result<Vec<BatchResult>, StoreError> {
        let delay = self.plan().delay;
        if !delay.is_zero() {
            // The writer thread's own time, like a slow fsync.
            std::thread::sleep(delay);
        }
        let fault = {
            let mut plan = self.plan();
            plan.writes += 1;
            let n = plan.writes;
            match plan.failing {
                Some((from, count, fault)) if n >= from && n < from.saturating_add(count) => {
                    plan.failed += 1;
                    Some(fault)
                }
                _ => None,
            }
        };
        match fault {
            Some(fault) => Err(fault.error()),
            None => self.inner.apply_batches(batches),
        }
    }

    fn list_documents(&self) -> Result<Vec<DocumentMeta>, StoreError> {
        self.inner.list_documents()
    }

    fn document_meta(&self, doc: &DocumentId) -> Result<Option<DocumentMeta>, StoreError> {
        self.inner.document_meta(doc)
    }

    fn members(&self, doc: &DocumentId) -> Result<Vec<Member>, StoreError> {
        self.inner.members(doc)
    }

    fn is_member(&self, doc: &DocumentId, user: &str) -> Result<bool, StoreError> {
        self.inner.is_member(doc, user)
    }

    fn load_document(&self, doc: &DocumentId) -> Result<Option<LoadedDoc>, StoreError> {
        self.inner.load_document(doc)
    }

    fn change_log(
        &self,
        doc: &DocumentId,
        after: Option<LogSeq>,
        limit: u32,
    ) -> Result<Vec<LoggedChange>, StoreError> {
        self.inner.change_log(doc, after, limit)
    }

    fn load_sync_state(
        &self,
        doc: &DocumentId,
        peer_key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.load_sync_state(doc, peer_key)
    }

    fn integrity_check(&self) -> Result<(), StoreError> {
        self.inner.integrity_check()
    }

    fn backup_to(&self, path: &Path) -> Result<(), StoreError> {
        self.inner.backup_to(path)
    }
}
