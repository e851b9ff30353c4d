//! The async front of the store, with group commit.
//!
//! Writes are sent to one dedicated writer thread. Each time it is free, the
//! thread takes every request waiting in the queue (up to a cap) and applies
//! them all in ONE transaction, so the devices that wrote meanwhile share one
//! fsync. Each caller's future resolves only after that transaction has
//! committed durably, with its own outcome or error.
//!
//! Reads run on tokio's blocking pool. Nothing here blocks the executor and no
//! lock is held across an `.await`.
//!
//! Shutdown is by ownership: [`Store`] is a cheap clone of a shared handle;
//! when the last clone is dropped the queue closes, the writer commits what is
//! still queued and the thread is joined. [`Store::shutdown`] does the same
//! explicitly, without blocking the executor.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use sync_core::ids::DocumentId;
use tokio::sync::{mpsc, oneshot};

use super::{
    Appended, ChangeRecord, CommitMetrics, CommitMetricsSnapshot, DocumentMeta, LoadedDoc, LogSeq,
    LoggedChange, Member, NewDocument, SnapshotOutcome, SqliteConfig, SqliteStorage, Storage,
    StoreError, WriteBatch, WriteOp, WriteOutcome,
};

/// Tuning of the group committer.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Write requests that may wait for the writer; when the queue is full,
    /// `commit` waits for room (backpressure) instead of growing memory.
    pub queue_capacity: usize,
    /// The most requests grouped into one transaction, to bound how long
    /// one transaction (and so the first caller in it) can take.
    pub max_requests_per_transaction: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 4096,
            max_requests_per_transaction: 1024,
        }
    }
}

/// Proof that a batch is durably stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitReceipt {
    /// One outcome per op of the batch, in order.
    pub outcomes: Vec<WriteOutcome>,
    /// The writer's number for the transaction that held the batch (1, 2, …
    /// since the store started). Batches with the same number shared an fsync.
    pub transaction: u64,
    /// How many requests that transaction held.
    pub requests_in_transaction: usize,
}

struct Request {
    batch: WriteBatch,
    reply: oneshot::Sender<Result<CommitReceipt, StoreError>>,
    enqueued: Instant,
}

/// The store, as the async server sees it. Clone it freely.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("metrics", &self.inner.metrics.snapshot())
            .finish_non_exhaustive()
    }
}

struct Inner {
    storage: Arc<dyn Storage>,
    /// `None` once shut down. A std mutex: it is held only to clone or take
    /// the sender, never across an `.await`.
    sender: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<CommitMetrics>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue makes the writer commit what is still queued and
        // exit; joining waits for that, so nothing accepted is left behind.
        // This blocks for at most one transaction; prefer `Store::shutdown`
        // from async code.
        drop(
            self.sender
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let writer = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            if writer.join().is_err() {
                tracing::error!("store writer thread panicked");
            }
        }
    }
}

impl Store {
    /// Starts the writer thread over `storage`.
    pub fn start(storage: Arc<dyn Storage>, config: StoreConfig) -> Result<Self, StoreError> {
        let (sender, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let metrics = Arc::new(CommitMetrics::default());
        let writer = {
            let storage = storage.clone();
            let metrics = metrics.clone();
            let max = config.max_requests_per_transaction.max(1);
            std::thread::Builder::new()
                .name("casesync-store-writer".into())
                .spawn(move || run_writer(&*storage, receiver, &metrics, max))
                .map_err(|source| StoreError::Io {
                    path: PathBuf::from("<writer thread>"),
                    source,
                })?
        };
        Ok(Self {
            inner: Arc::new(Inner {
                storage,
                sender: Mutex::new(Some(sender)),
                writer: Mutex::new(Some(writer)),
                metrics,
            }),
        })
    }

    /// Opens the SQLite store and starts its writer. Blocking: call it before
    /// serving, or from `spawn_blocking`.
    pub fn open_sqlite(sqlite: SqliteConfig, config: StoreConfig) -> Result<Self, StoreError> {
        Self::start(Arc::new(SqliteStorage::open(sqlite)?), config)
    }

    /// The backend, for blocking callers (the CLI's `check`, tests).
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    pub fn metrics(&self) -> CommitMetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Stores `batch` atomically; resolves once the transaction holding it
    /// has durably committed. If the future is dropped before then, the batch
    /// may still be stored.
    pub async fn commit(&self, batch: WriteBatch) -> Result<CommitReceipt, StoreError> {
        self.submit(batch).await?.await
    }

    /// Queues `batch` for the writer and returns, once it is queued, a
    /// future of its receipt. Batches are committed in the order they were
    /// queued, so a caller that must keep an order (a change before the
    /// changes that depend on it) queues one batch after the other with
    /// this, and waits for the receipts however it likes.
    pub async fn submit(
        &self,
        batch: WriteBatch,
    ) -> Result<impl std::future::Future<Output = Result<CommitReceipt, StoreError>>, StoreError>
    {
        let sender = self
            .inner
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::WriterStopped)?;
        let (reply, receipt) = oneshot::channel();
        let request = Request {
            batch,
            reply,
            enqueued: Instant::now(),
        };
        sender
            .send(request)
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        drop(sender);
        Ok(async move { receipt.await.map_err(|_| StoreError::WriterStopped)? })
    }

    pub async fn create_document(&self, doc: NewDocument) -> Result<(), StoreError> {
        self.commit(WriteOp::CreateDocument(doc).into())
            .await
            .map(drop)
    }

    /// Appends changes; returns where each one is, in input order.
    pub async fn append_changes(
        &self,
        changes: Vec<ChangeRecord>,
    ) -> Result<Vec<Appended>, StoreError> {
        let receipt = self.commit(WriteOp::AppendChanges(changes).into()).await?;
        match receipt.outcomes.into_iter().next() {
            Some(WriteOutcome::ChangesAppended(appended)) => Ok(appended),
            _ => Err(StoreError::BackendContract(
                "append did not report its changes",
            )),
        }
    }

    pub async fn put_snapshot(
        &self,
        doc: DocumentId,
        bytes: Vec<u8>,
        covered_up_to: LogSeq,
    ) -> Result<SnapshotOutcome, StoreError> {
        let receipt = self
            .commit(
                WriteOp::PutSnapshot {
                    doc,
                    bytes,
                    covered_up_to,
                }
                .into(),
            )
            .await?;
        match receipt.outcomes.into_iter().next() {
            Some(WriteOutcome::Snapshot(outcome)) => Ok(outcome),
            _ => Err(StoreError::BackendContract(
                "snapshot did not report its outcome",
            )),
        }
    }

    pub async fn save_sync_state(
        &self,
        doc: DocumentId,
        peer_key: String,
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.commit(
            WriteOp::SaveSyncState {
                doc,
                peer_key,
                bytes,
            }
            .into(),
        )
        .await
        .map(drop)
    }

    /// Runs a blocking read on tokio's blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Storage) -> Result<T, StoreError> + Send + 'static,
    {
        let storage = self.inner.storage.clone();
        tokio::task::spawn_blocking(move || f(&*storage))
            .await
            .map_err(|e| StoreError::ReadTaskFailed(e.to_string()))?
    }

    pub async fn list_documents(&self) -> Result<Vec<DocumentMeta>, StoreError> {
        self.read(|s| s.list_documents()).await
    }

    pub async fn document_meta(&self, doc: DocumentId) -> Result<Option<DocumentMeta>, StoreError> {
        self.read(move |s| s.document_meta(&doc)).await
    }

    pub async fn members(&self, doc: DocumentId) -> Result<Vec<Member>, StoreError> {
        self.read(move |s| s.members(&doc)).await
    }

    pub async fn is_member(&self, doc: DocumentId, user: String) -> Result<bool, StoreError> {
        self.read(move |s| s.is_member(&doc, &user)).await
    }

    pub async fn load_document(&self, doc: DocumentId) -> Result<Option<LoadedDoc>, StoreError> {
        self.read(move |s| s.load_document(&doc)).await
    }

    pub async fn change_log(
        &self,
        doc: DocumentId,
        after: Option<LogSeq>,
        limit: u32,
    ) -> Result<Vec<LoggedChange>, StoreError> {
        self.read(move |s| s.change_log(&doc, after, limit)).await
    }

    pub async fn load_sync_state(
        &self,
        doc: DocumentId,
        peer_key: String,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(move |s| s.load_sync_state(&doc, &peer_key)).await
    }

    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        self.read(|s| s.integrity_check()).await
    }

    /// Writes a consistent copy of the database to `path` while writes go
    /// on. Every write acknowledged before this call is in the copy.
    pub async fn backup_to(&self, path: PathBuf) -> Result<(), StoreError> {
        self.read(move |s| s.backup_to(&path)).await
    }

    /// Stops accepting writes, commits what is queued and joins the writer,
    /// without blocking the executor. Other clones get
    /// [`StoreError::WriterStopped`] from then on.
    pub async fn shutdown(self) -> Result<(), StoreError> {
        drop(
            self.inner
                .sender
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            tokio::task::spawn_blocking(move || writer.join())
                .await
                .map_err(|e| StoreError::ReadTaskFailed(e.to_string()))?
                .map_err(|_| StoreError::WriterStopped)?;
        }
        Ok(())
    }
}

/// The writer thread: one transaction per round, holding every request that
/// queued up while the previous one was committing.
fn run_writer(
    storage: &dyn Storage,
    mut queue: mpsc::Receiver<Request>,
    metrics: &CommitMetrics,
    max_requests: usize,
) {
    let mut transaction = 0u64;
    // `None` once every sender is gone and the queue is empty.
    while let Some(first) = queue.blocking_recv() {
        let mut requests = vec![first];
        while requests.len() < max_requests {
            match queue.try_recv() {
                Ok(request) => requests.push(request),
                Err(_) => break,
            }
        }
        transaction += 1;
        let started = Instant::now();
        let mut batches = Vec::with_capacity(requests.len());
        let mut replies = Vec::with_capacity(requests.len());
        for request in requests {
            metrics.record_queue_wait(started.duration_since(request.enqueued).as_secs_f64());
            batches.push(request.batch);
            replies.push(request.reply);
        }
        let count = replies.len();

        let result = std::panic::catch_unwind(AssertUnwindSafe(|| storage.apply_batches(&batches)))
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                Err(StoreError::BackendPanicked(message))
            });
        let seconds = started.elapsed().as_secs_f64();

        match result {
            Ok(results) => {
                let failed = results.iter().filter(|r| r.is_err()).count()
                    + count.saturating_sub(results.len());
                metrics.record_transaction(count, failed, true, seconds);
                let mut results = results.into_iter();
                for reply in replies {
                    let answer = match results.next() {
                        Some(Ok(outcomes)) => Ok(CommitReceipt {
                            outcomes,
                            transaction,
                            requests_in_transaction: count,
                        }),
                        Some(Err(e)) => Err(e),
                        None => Err(StoreError::BackendContract(
                            "fewer batch results than batches",
                        )),
                    };
                    // A caller that stopped waiting is fine: its batch is
                    // stored all the same.
                    let _ = reply.send(answer);
                }
            }
            Err(error) => {
                tracing::error!(%error, requests = count, "store transaction failed");
                metrics.record_transaction(count, count, false, seconds);
                let error = Arc::new(error);
                for reply in replies {
                    let _ = reply.send(Err(StoreError::TransactionFailed(error.clone())));
                }
            }
        }
    }
    tracing::debug!(transactions = transaction, "store writer stopped");
}
