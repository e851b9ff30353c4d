//! Group commit: many writers share one transaction, every caller hears the
//! fate of its own batch, and faults reach the waiting callers instead of
//! hanging or crashing them.

// Tests unwrap: any unexpected error should stop the test right there.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use casesync_server::store::{
    BatchResult, ChangeRecord, DocumentKind, DocumentMeta, LoadedDoc, LogSeq, LoggedChange, Member,
    NewDocument, SqliteConfig, SqliteStorage, Storage, Store, StoreConfig, StoreError, WriteBatch,
    WriteOp,
};
use rusqlite::ffi::ErrorCode;
use sync_core::ids::DocumentId;

const NO_HANG: Duration = Duration::from_secs(20);

fn doc_id(n: u8) -> DocumentId {
    DocumentId::from_bytes([n; 16])
}

fn change(doc: DocumentId, n: u32, size: usize) -> ChangeRecord {
    let mut hash = [0u8; 32];
    hash[..16].copy_from_slice(doc.as_bytes());
    hash[16..20].copy_from_slice(&n.to_be_bytes());
    let mut bytes = format!("change {n}").into_bytes();
    bytes.resize(size.max(bytes.len()), b'.');
    ChangeRecord {
        doc,
        hash,
        bytes,
        actor: vec![1, 2, 3],
        seq: u64::from(n) + 1,
        user: "mother".into(),
        device: format!("phone-{n}"),
        received_at_ms: 1_700_000_000_000,
    }
}

fn append(doc: DocumentId, n: u32) -> WriteBatch {
    WriteOp::AppendChanges(vec![change(doc, n, 0)]).into()
}

async fn create(store: &Store, doc: DocumentId) {
    store
        .create_document(NewDocument {
            id: doc,
            kind: DocumentKind::Case,
            created_by: "mother".into(),
            created_at_ms: 1_700_000_000_000,
        })
        .await
        .unwrap();
}

/// Polls a future once and keeps it to be awaited later. For
/// `Store::commit`, one poll puts the request in the writer's queue (the
/// queue has room), so the test knows it is queued without relying on timing.
fn enqueue<F: Future>(future: F) -> Queued<F> {
    let mut future = Box::pin(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Pending => Queued::Pending(future),
        // A fast writer may already have answered.
        Poll::Ready(output) => Queued::Done(Some(output)),
    }
}

enum Queued<F: Future> {
    Pending(Pin<Box<F>>),
    Done(Option<F::Output>),
}

impl<F: Future> Future for Queued<F>
where
    F::Output: Unpin,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.get_mut() {
            Queued::Pending(future) => future.as_mut().poll(cx),
            Queued::Done(output) => Poll::Ready(output.take().unwrap()),
        }
    }
}

/// Holds SQLite's write lock from another connection, so the writer's next
/// transaction waits (inside its busy timeout) while requests queue up.
fn hold_write_lock(dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join("casesync.db")).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

fn release_after(lock: rusqlite::Connection, delay: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        lock.execute_batch("ROLLBACK").unwrap();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_commits_share_a_few_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(SqliteConfig::new(dir.path()), StoreConfig::default()).unwrap();
    let doc = doc_id(1);
    create(&store, doc).await;

    // Every request is queued while the writer waits for the lock.
    let lock = hold_write_lock(dir.path());
    let commits: Vec<_> = (0..200)
        .map(|n| enqueue(store.commit(append(doc, n))))
        .collect();
    let releaser = release_after(lock, Duration::from_millis(100));

    let mut transactions = std::collections::BTreeSet::new();
    let mut largest = 0;
    for commit in commits {
        let receipt = tokio::time::timeout(NO_HANG, commit)
            .await
            .unwrap()
            .unwrap();
        transactions.insert(receipt.transaction);
        largest = largest.max(receipt.requests_in_transaction);
    }
    releaser.join().unwrap();

    assert!(
        transactions.len() < 200,
        "200 requests took {} transactions",
        transactions.len()
    );
    assert!(largest > 1);
    let metrics = store.metrics();
    assert_eq!(metrics.requests_committed, 201, "200 appends + the create");
    assert!(metrics.transactions_committed < metrics.requests_committed);
    assert_eq!(
        metrics.requests_per_transaction.count,
        metrics.transactions_committed
    );
    assert_eq!(metrics.commit_seconds.count, metrics.transactions_committed);
    let text = metrics.to_prometheus("casesync_store");
    assert!(text.contains("casesync_store_transactions_committed_total "));
    assert!(text.contains("casesync_store_commit_seconds_bucket{le=\"+Inf\"}"));

    let log = store.change_log(doc, None, 1000).await.unwrap();
    assert_eq!(log.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_stop_waiting_still_get_stored_and_dropping_the_store_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let doc = doc_id(1);
    {
        let store =
            Store::open_sqlite(SqliteConfig::new(dir.path()), StoreConfig::default()).unwrap();
        create(&store, doc).await;

        // Queue 50 requests, then abandon them all, as when the devices'
        // connections drop mid-commit.
        let lock = hold_write_lock(dir.path());
        let commits: Vec<_> = (0..50)
            .map(|n| enqueue(store.commit(append(doc, n))))
            .collect();
        drop(commits);
        let releaser = release_after(lock, Duration::from_millis(200));
        // The last handle: closing the queue, committing it, joining.
        drop(store);
        releaser.join().unwrap();
    }

    let storage = SqliteStorage::open(SqliteConfig::new(dir.path())).unwrap();
    assert_eq!(storage.change_log(&doc, None, 1000).unwrap().len(), 50);
}

#[tokio::test]
async fn after_shutdown_writes_are_refused_and_reads_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(SqliteConfig::new(dir.path()), StoreConfig::default()).unwrap();
    let doc = doc_id(1);
    create(&store, doc).await;
    store.commit(append(doc, 0)).await.unwrap();

    let other_handle = store.clone();
    store.shutdown().await.unwrap();

    let refused = other_handle.commit(append(doc, 1)).await;
    assert!(matches!(refused, Err(StoreError::WriterStopped)));
    let loaded = other_handle.load_document(doc).await.unwrap().unwrap();
    assert_eq!(loaded.changes.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_fails_the_batch_that_does_not_fit_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SqliteConfig::new(dir.path());
    config.max_size_bytes = Some(256 * 1024);
    let (faulty, store) = faulty_store(config);
    let doc = doc_id(1);
    create(&store, doc).await;

    // Stop the writer inside a first transaction, queue a small batch and one
    // too large to fit, then let it go: the two share the next transaction.
    let (entered, release) = faulty.arm_gate();
    let first = enqueue(store.commit(append(doc, 9)));
    entered.recv_timeout(NO_HANG).unwrap();
    let small = enqueue(store.commit(append(doc, 0)));
    let huge =
        enqueue(store.commit(WriteOp::AppendChanges(vec![change(doc, 1, 1024 * 1024)]).into()));
    release.send(()).unwrap();
    let first = tokio::time::timeout(NO_HANG, first).await.unwrap();
    let small = tokio::time::timeout(NO_HANG, small).await.unwrap();
    let huge = tokio::time::timeout(NO_HANG, huge).await.unwrap();

    first.unwrap();
    let error = huge.unwrap_err();
    assert!(is_disk_full(&error), "unexpected error: {error}");

    // SQLite may answer a full database by rolling back the whole
    // transaction; today it does, so the small batch shares the huge one's
    // fate. The store must say so rather than claim it was stored.
    let log = store.change_log(doc, None, 100).await.unwrap();
    let small_stored = log.iter().any(|c| c.hash == change(doc, 0, 0).hash);
    assert!(
        matches!(small, Err(StoreError::TransactionFailed(_))),
        "{small:?}"
    );
    assert!(!small_stored);
    assert!(log.iter().all(|c| c.bytes.len() < 1024));

    // The store keeps serving.
    store.commit(append(doc, 2)).await.unwrap();
    store.integrity_check().await.unwrap();
}

fn is_disk_full(error: &StoreError) -> bool {
    match error {
        StoreError::Sqlite(e) => e.sqlite_error_code() == Some(ErrorCode::DiskFull),
        StoreError::TransactionFailed(inner) => is_disk_full(inner),
        _ => false,
    }
}

/// A backend whose writes fail, panic or wait on demand.
struct Faulty {
    inner: SqliteStorage,
    fault: Mutex<Fault>,
    gate: Mutex<Option<Gate>>,
}

/// Makes the next transaction announce itself and wait for a go.
struct Gate {
    entered: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    FailWrites,
    PanicOnWrite,
}

impl Faulty {
    fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Returns (a receiver told when the next transaction starts, a sender
    /// that lets it go on).
    fn arm_gate(&self) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (entered, entered_rx) = mpsc::channel();
        let (release_tx, release) = mpsc::channel();
        *self.gate.lock().unwrap() = Some(Gate { entered, release });
        (entered_rx, release_tx)
    }
}

impl Storage for Faulty {
    fn apply_batches(&self, batches: &[WriteBatch]) -> Result<Vec<BatchResult>, StoreError> {
        let gate = self.gate.lock().unwrap().take();
        if let Some(gate) = gate {
            gate.entered.send(()).unwrap();
            gate.release.recv().unwrap();
        }
        let fault = *self.fault.lock().unwrap();
        match fault {
            Fault::None => self.inner.apply_batches(batches),
            Fault::FailWrites => Err(StoreError::Io {
                path: self.inner.path().to_owned(),
                source: std::io::Error::other("injected: write failed"),
            }),
            Fault::PanicOnWrite => panic!("injected: backend bug"),
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

fn faulty_store(config: SqliteConfig) -> (Arc<Faulty>, Store) {
    let faulty = Arc::new(Faulty {
        inner: SqliteStorage::open(config).unwrap(),
        fault: Mutex::new(Fault::None),
        gate: Mutex::new(None),
    });
    let store = Store::start(faulty.clone(), StoreConfig::default()).unwrap();
    (faulty, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transaction_reaches_every_waiting_caller() {
    let dir = tempfile::tempdir().unwrap();
    let (faulty, store) = faulty_store(SqliteConfig::new(dir.path()));
    let doc = doc_id(1);
    create(&store, doc).await;

    faulty.set(Fault::FailWrites);
    let commits: Vec<_> = (0..20)
        .map(|n| enqueue(store.commit(append(doc, n))))
        .collect();
    for commit in commits {
        let result = tokio::time::timeout(NO_HANG, commit).await.unwrap();
        match result {
            Err(StoreError::TransactionFailed(cause)) => {
                assert!(matches!(*cause, StoreError::Io { .. }), "{cause}");
            }
            other => panic!("expected a failed transaction, got {other:?}"),
        }
    }
    let metrics = store.metrics();
    assert!(metrics.transactions_failed >= 1);
    assert_eq!(metrics.requests_failed, 20);

    faulty.set(Fault::None);
    store.commit(append(doc, 100)).await.unwrap();
    assert_eq!(store.change_log(doc, None, 100).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_panicking_backend_fails_its_callers_and_the_writer_survives() {
    let dir = tempfile::tempdir().unwrap();
    let (faulty, store) = faulty_store(SqliteConfig::new(dir.path()));
    let doc = doc_id(1);
    create(&store, doc).await;

    faulty.set(Fault::PanicOnWrite);
    let result = tokio::time::timeout(NO_HANG, store.commit(append(doc, 0)))
        .await
        .unwrap();
    match result {
        Err(StoreError::TransactionFailed(cause)) => {
            assert!(matches!(*cause, StoreError::BackendPanicked(_)), "{cause}");
        }
        other => panic!("expected a failed transaction, got {other:?}"),
    }

    faulty.set(Fault::None);
    store.commit(append(doc, 1)).await.unwrap();
    store.shutdown().await.unwrap();
}
