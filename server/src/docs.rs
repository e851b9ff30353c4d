//! Document actors: each loaded case is owned by one task.
//!
//! The actor applies guarded changes through [`DocSync`], persists them
//! through the group committer, and only then lets `DocSync` produce sync
//! messages (the durability gate), which it fans out to every connection
//! that has the document open. A panic inside one actor ends only that
//! document's sessions; the next request reloads it from storage. An actor
//! with no peers for `idle_unload` exits, so memory follows the active set.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use automerge::{Automerge, ChangeHash, ReadDoc};
use futures_util::FutureExt;
use sync_core::engine::cold::ColdReply;
use sync_core::engine::{Access, DocSync, PersistRequest};
use sync_core::guard::{self, Limits};
use sync_core::ids::{DocumentId, PeerId};
use sync_core::protocol::encode_head;
use tokio::sync::{mpsc, oneshot};

use crate::identity::{ActorBindings, IdentityStore, NewQuarantined};
use crate::metrics::Metrics;
use crate::store::{ChangeRecord, LoadedDoc, Store, WriteBatch, WriteOp};

/// What the document actors need from the identity side.
#[derive(Debug, Clone)]
pub struct DocsHooks {
    /// Actor binding: refuse changes signed with another device's actor id.
    pub bindings: Arc<ActorBindings>,
    /// Where quarantined changes go.
    pub identity: Arc<IdentityStore>,
    /// Refused actors and quarantined changes are security events.
    pub audit: crate::audit::AuditLog,
}

/// Why an actor stopped when it was idle (and the close reason its
/// sessions would get, though an idle actor has none).
const UNLOADED: &str = "document unloaded";

/// The sending end of a connection's queue of [`Outbound`] messages.
///
/// Items travel boxed: tokio's channel allocates its first block of 32
/// slots when it is created, and every connected device keeps that block
/// for as long as it is connected, idle or not. 32 pointers instead of 32
/// `Outbound`s is about 1.3 KiB less per device; the box costs one small
/// allocation per message, beside the message's own payload.
#[derive(Debug, Clone)]
pub struct OutboundTx(mpsc::Sender<Box<Outbound>>);

/// The receiving end of a connection's queue (see [`OutboundTx`]).
pub type OutboundRx = mpsc::Receiver<Box<Outbound>>;

/// A connection's queue, holding up to `capacity` messages.
pub fn outbound_queue(capacity: usize) -> (OutboundTx, OutboundRx) {
    let (tx, rx) = mpsc::channel(capacity);
    (OutboundTx(tx), rx)
}

impl OutboundTx {
    /// Queues `out` unless the queue is full or its connection is gone.
    pub fn try_send(&self, out: Outbound) -> Result<(), mpsc::error::TrySendError<Box<Outbound>>> {
        self.0.try_send(Box::new(out))
    }

    /// Free slots in the queue.
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// Whether the connection dropped its end.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// What a document actor sends to one connection.
#[derive(Debug)]
pub enum Outbound {
    Sync {
        document: DocumentId,
        data: Vec<u8>,
    },
    /// Durable heads of the server's storage, bs58check encoded.
    RemoteHeads {
        document: DocumentId,
        heads: Vec<String>,
    },
    /// Boxed, so the other variants (what a connection's queue mostly
    /// holds) stay small: every connection's queue allocates room for 32.
    Ephemeral(Box<EphemeralOut>),
    /// The document refused this peer's input: close as a policy
    /// violation, so the device does not just reconnect and send it again.
    Refused {
        reason: String,
    },
    /// The document failed or was unloaded, or the connection could not
    /// keep up: close; the device reconnects and resumes.
    Close {
        reason: String,
    },
}

/// An ephemeral message relayed to one connection.
#[derive(Debug)]
pub struct EphemeralOut {
    pub from: PeerId,
    pub document: DocumentId,
    pub count: u64,
    pub session_id: String,
    pub data: Vec<u8>,
}

/// Who delivered a sync message, for the change log's provenance.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub user: String,
    pub device: String,
}

/// Identifies one connection's use of a document.
#[derive(Debug, Clone)]
pub struct PeerHandle {
    pub peer: PeerId,
    pub conn_id: u64,
    /// `device/storageId` (or the device alone): the key of the persisted
    /// sync state, so a reconnect costs what changed.
    pub sync_key: String,
    pub provenance: Provenance,
    pub access: Access,
    /// A revoked member or device: nothing new is sent to it, and what it
    /// sends is quarantined instead of merged.
    pub quarantine: bool,
    pub wants_heads: bool,
    pub tx: OutboundTx,
    /// The sync state to start from instead of the persisted one: set when
    /// the connection already answered this peer from storage
    /// ([`Docs::cold_reply`]).
    pub start_state: Option<Vec<u8>>,
}

/// A quarantined connection's private sync session: a fork of the
/// document at the heads the device had acknowledged before, so it learns
/// nothing new, and whatever it sends lands here and in the quarantine
/// table, never in the document.
#[derive(Debug)]
struct QuarantinePeer {
    peer: PeerHandle,
    sync: DocSync,
}

#[derive(Debug)]
enum Cmd {
    Open(PeerHandle),
    Sync {
        conn_id: u64,
        data: Vec<u8>,
        received_at_ms: i64,
    },
    Ephemeral {
        conn_id: u64,
        count: u64,
        session_id: String,
        data: Vec<u8>,
    },
    WantsHeads {
        conn_id: u64,
        wants: bool,
    },
    Close {
        conn_id: u64,
    },
    Persisted {
        token: u64,
        /// The highest change-log position written, on success.
        log_seq: Option<i64>,
        /// How many changes the batch held.
        changes: u64,
        ok: bool,
    },
    Read {
        reply: oneshot::Sender<Automerge>,
    },
    /// Write a snapshot now if the change log has grown since the last
    /// one (at shutdown); `reply` is dropped once it is stored or skipped.
    Compact {
        reply: oneshot::Sender<()>,
    },
    /// Quarantined changes of a connection were stored (or not).
    Quarantined {
        conn_id: u64,
        token: u64,
        ok: bool,
    },
    /// A coordinator accepted quarantined changes: merge them, each with
    /// the provenance of the device that sent it.
    Merge {
        changes: Vec<(Vec<u8>, Provenance, i64)>,
        reply: oneshot::Sender<Result<usize, String>>,
    },
}

/// Actor tuning.
#[derive(Debug, Clone)]
pub struct DocsConfig {
    pub limits: Limits,
    /// How long a document with no sessions stays loaded.
    pub idle_unload: Duration,
    /// Commands queued per document before senders wait.
    pub queue: usize,
    /// Compact into a snapshot after this many changes since the last one
    /// (and when a document with new changes is unloaded), so a cold load
    /// reads one snapshot and a short tail.
    pub snapshot_every: usize,
    /// Pacing (`DocSync::set_pacing`): after a sync message that carried
    /// changes, a device gets nothing more from this case until it answers
    /// (automerge peers answer such a message at once) or this long has
    /// passed. A device that reads slowly then gets one message with all
    /// that is new instead of a queue of small ones; one that answers in
    /// milliseconds, as in live editing, is not slowed. The wait only
    /// matters for a device with nothing to answer (it already had every
    /// change it was sent), which is rare.
    pub reply_wait: Duration,
    /// Test-only hook (issue 8, panic isolation): an actor that receives a
    /// change whose message is exactly this panics, as a bug would. Never
    /// set outside tests; the CLI offers no way to set it.
    pub panic_marker: Option<String>,
}

impl Default for DocsConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            idle_unload: Duration::from_secs(60),
            queue: 1024,
            snapshot_every: 500,
            reply_wait: Duration::from_secs(3),
            panic_marker: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Handle {
    generation: u64,
    tx: mpsc::Sender<Cmd>,
}

/// The registry of loaded documents.
#[derive(Debug, Clone)]
pub struct Docs {
    inner: Arc<DocsInner>,
}

#[derive(Debug)]
struct DocsInner {
    // A std Mutex: held only to look up, insert or remove a handle and to
    // `try_send` a command, never across an `.await`. Commands are handed
    // to an actor under this lock, and an idle actor retires under it, so a
    // command is either in the queue of a live actor or was never accepted
    // (see `Docs::deliver` and `Docs::retire`).
    loaded: Mutex<HashMap<DocumentId, Handle>>,
    next_generation: std::sync::atomic::AtomicU64,
    store: Store,
    config: DocsConfig,
    metrics: Arc<Metrics>,
    hooks: DocsHooks,
}

/// Why a document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error("document not found")]
    NotFound,
    #[error("document could not be loaded: {0}")]
    Load(String),
    #[error("document actor stopped")]
    Stopped,
}

impl Docs {
    pub fn new(store: Store, config: DocsConfig, metrics: Arc<Metrics>, hooks: DocsHooks) -> Self {
        Self {
            inner: Arc::new(DocsInner {
                loaded: Mutex::new(HashMap::new()),
                next_generation: std::sync::atomic::AtomicU64::new(1),
                store,
                config,
                metrics,
                hooks,
            }),
        }
    }

    /// Number of documents currently loaded.
    pub fn loaded_count(&self) -> usize {
        self.inner.loaded.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn lookup(&self, doc: &DocumentId) -> Option<Handle> {
        let map = self.inner.loaded.lock().ok()?;
        map.get(doc).filter(|h| !h.tx.is_closed()).cloned()
    }

    /// Loads a document into a new actor, unless a live one has it.
    async fn ensure_loaded(&self, doc: DocumentId) -> Result<(), DocError> {
        if self.lookup(&doc).is_some() {
            return Ok(());
        }
        let loaded = self
            .inner
            .store
            .load_document(doc)
            .await
            .map_err(|e| DocError::Load(e.to_string()))?
            .ok_or(DocError::NotFound)?;
        let limits = self.inner.config.limits.clone();
        // Rebuilding a document is CPU work: keep it off the executor.
        let log_end = loaded.log_end.map(|s| s.0);
        let snapshot_covers = loaded.snapshot_covers.map(|s| s.0);
        let tail = loaded.changes.len();
        let automerge = tokio::task::spawn_blocking(move || -> Result<Automerge, String> {
            let mut doc = match &loaded.snapshot {
                Some(s) => guard::load_document(s, &limits).map_err(|e| e.to_string())?,
                None => Automerge::new(),
            };
            let mut known = guard::KnownActors::from_doc(&doc);
            guard::load_change_log(&mut doc, &loaded.changes, &limits, &mut known)
                .map_err(|e| e.to_string())?;
            Ok(doc)
        })
        .await
        .map_err(|e| DocError::Load(e.to_string()))?
        .map_err(DocError::Load)?;

        let mut map = self
            .inner
            .loaded
            .lock()
            .map_err(|_| DocError::Load("registry poisoned".into()))?;
        // Another task may have loaded it meanwhile.
        if map.get(&doc).is_some_and(|h| !h.tx.is_closed()) {
            return Ok(());
        }
        let generation = self
            .inner
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.inner.config.queue);
        map.insert(
            doc,
            Handle {
                generation,
                tx: tx.clone(),
            },
        );
        drop(map);
        self.inner.metrics.docs_loaded.inc();
        let subscribers: Subscribers = Arc::default();
        let (persist_tx, persist_rx) = mpsc::unbounded_channel();
        tokio::spawn(Actor::forward_persists(
            persist_rx,
            self.inner.store.clone(),
            tx.clone(),
            self.inner.metrics.clone(),
        ));
        let mut sync = DocSync::new(automerge, self.inner.config.limits.clone());
        sync.set_pacing(true);
        let actor = Actor {
            id: doc,
            sync,
            peers: HashMap::new(),
            store: self.inner.store.clone(),
            self_tx: tx,
            heads_sent: HashMap::new(),
            pending: HashSet::new(),
            metrics: self.inner.metrics.clone(),
            subscribers: subscribers.clone(),
            log_end,
            since_snapshot: tail,
            snapshot_covers,
            snapshot_every: self.inner.config.snapshot_every,
            panic_marker: self.inner.config.panic_marker.clone(),
            hooks: self.inner.hooks.clone(),
            quarantined: HashMap::new(),
            deferred: VecDeque::new(),
            persist_tx,
            held_back: false,
            awaiting: HashMap::new(),
            reply_wait: self.inner.config.reply_wait,
        };
        let docs = self.clone();
        let idle = self.inner.config.idle_unload;
        let registry = self.clone();
        tokio::spawn(async move {
            let result = AssertUnwindSafe(actor.run(rx, idle, registry, generation))
                .catch_unwind()
                .await;
            docs.unregister(&doc, generation);
            docs.inner.metrics.docs_loaded.dec();
            let reason = match result {
                Ok(reason) => {
                    if reason == UNLOADED {
                        docs.inner.metrics.docs_unloaded_total.inc();
                    }
                    reason
                }
                Err(_) => {
                    docs.inner.metrics.actor_panics.inc();
                    tracing::error!(document = %doc, "document actor panicked; its sessions are closed and it reloads on next use");
                    "document failed; reconnect"
                }
            };
            // End the sessions of this document only. Their devices
            // reconnect and resume from their persisted sync states.
            let subs = subscribers
                .lock()
                .map(|mut m| std::mem::take(&mut *m))
                .unwrap_or_default();
            for (_, tx) in subs {
                let _ = tx.try_send(Outbound::Close {
                    reason: reason.to_owned(),
                });
            }
        });
        Ok(())
    }

    fn unregister(&self, doc: &DocumentId, generation: u64) {
        if let Ok(mut map) = self.inner.loaded.lock() {
            if map.get(doc).is_some_and(|h| h.generation == generation) {
                map.remove(doc);
            }
        }
    }

    /// An idle actor asks to stop. Under the registry lock, where every
    /// command is handed over: if one arrived since the actor last looked,
    /// it carries on; otherwise it leaves the registry and closes its
    /// queue in one step, so no command can be accepted and then dropped.
    /// Later commands load the document again.
    fn retire(&self, doc: &DocumentId, generation: u64, rx: &mut mpsc::Receiver<Cmd>) -> bool {
        let Ok(mut map) = self.inner.loaded.lock() else {
            rx.close();
            return true;
        };
        if !rx.is_empty() {
            return false;
        }
        rx.close();
        if map.get(doc).is_some_and(|h| h.generation == generation) {
            map.remove(doc);
        }
        true
    }

    /// Hands a command to the document's actor, loading the document first
    /// if `load` (otherwise a document that is not loaded drops it). The
    /// command is queued with `try_send` under the registry lock (see
    /// `retire`); when the queue is full, this waits for room outside the
    /// lock and tries again.
    async fn deliver(&self, doc: DocumentId, mut cmd: Cmd, load: bool) -> Result<(), DocError> {
        // Bounded: each round either queues the command, waits for room, or
        // loads the document; only an actor that keeps retiring the moment
        // it starts could use them all up.
        for _ in 0..64 {
            let busy = {
                let map = self
                    .inner
                    .loaded
                    .lock()
                    .map_err(|_| DocError::Load("registry poisoned".into()))?;
                match map.get(&doc) {
                    Some(h) => match h.tx.try_send(cmd) {
                        Ok(()) => return Ok(()),
                        Err(mpsc::error::TrySendError::Full(c)) => {
                            cmd = c;
                            Some(h.tx.clone())
                        }
                        Err(mpsc::error::TrySendError::Closed(c)) => {
                            cmd = c;
                            None
                        }
                    },
                    None => None,
                }
            };
            match busy {
                // The permit is dropped at once: the command itself is only
                // ever queued under the lock.
                Some(tx) => drop(tx.reserve().await),
                None if load => self.ensure_loaded(doc).await?,
                None => return Ok(()),
            }
        }
        Err(DocError::Stopped)
    }

    async fn send(&self, doc: DocumentId, cmd: Cmd) -> Result<(), DocError> {
        self.deliver(doc, cmd, true).await
    }

    pub async fn open(&self, doc: DocumentId, peer: PeerHandle) -> Result<(), DocError> {
        self.send(doc, Cmd::Open(peer)).await
    }

    /// The reply to `peer`'s first sync message `first` built from storage
    /// (`engine::cold`), when `doc` is not loaded and `first` comes from a
    /// device that has nothing; `None` otherwise (also when the stored
    /// bytes cannot be answered that way: the loaded document answers).
    ///
    /// The connection sends the reply before it opens the document (which
    /// loads it), so the device does not wait for the load; it then opens
    /// the document with `peer.start_state` set to
    /// [`ColdReply::peer_state`] and does not pass `first` on (the actor
    /// would send the whole document a second time). This reads the store
    /// and sends nothing.
    pub async fn cold_reply(
        &self,
        doc: DocumentId,
        peer: &PeerHandle,
        first: &[u8],
    ) -> Option<ColdReply> {
        let limits = &self.inner.config.limits;
        if peer.quarantine
            || self.lookup(&doc).is_some()
            || !sync_core::engine::cold::opens_from_nothing(first, limits)
        {
            return None;
        }
        let loaded = match self.inner.store.load_document(doc).await {
            Ok(Some(loaded)) => loaded,
            // Not stored, or unreadable: the usual open says so.
            Ok(None) | Err(_) => return None,
        };
        let LoadedDoc {
            snapshot, changes, ..
        } = loaded;
        let read_only = peer.access == Access::Read;
        let limits = limits.clone();
        let reply = tokio::task::spawn_blocking(move || {
            sync_core::engine::cold::reply_from_storage(
                snapshot.as_deref(),
                &changes,
                read_only,
                &limits,
            )
        })
        .await;
        match reply {
            Ok(Ok(reply)) => {
                self.inner.metrics.cold_replies.inc();
                Some(reply)
            }
            Ok(Err(e)) => {
                // A snapshot with trailing orphan changes, or a reply too
                // big for one frame: the loaded document answers.
                tracing::debug!(document = %doc, error = %e, "not answered from storage");
                None
            }
            Err(e) => {
                tracing::warn!(document = %doc, error = %e, "building a reply from storage failed");
                None
            }
        }
    }

    pub async fn sync(
        &self,
        doc: DocumentId,
        conn_id: u64,
        data: Vec<u8>,
        received_at_ms: i64,
    ) -> Result<(), DocError> {
        self.send(
            doc,
            Cmd::Sync {
                conn_id,
                data,
                received_at_ms,
            },
        )
        .await
    }

    pub async fn ephemeral(
        &self,
        doc: DocumentId,
        conn_id: u64,
        count: u64,
        session_id: String,
        data: Vec<u8>,
    ) -> Result<(), DocError> {
        // Presence is not worth loading a document for.
        self.deliver(
            doc,
            Cmd::Ephemeral {
                conn_id,
                count,
                session_id,
                data,
            },
            false,
        )
        .await
    }

    pub async fn wants_heads(&self, doc: DocumentId, conn_id: u64, wants: bool) {
        let _ = self
            .deliver(doc, Cmd::WantsHeads { conn_id, wants }, false)
            .await;
    }

    /// A connection stops using a document. Never loads it.
    pub async fn close(&self, doc: DocumentId, conn_id: u64) {
        let _ = self.deliver(doc, Cmd::Close { conn_id }, false).await;
    }

    /// Merges changes a coordinator accepted from the quarantine, each
    /// persisted with the provenance of the device that sent it. Returns
    /// how many changes the document gained, or why automerge's guards
    /// refused one.
    pub async fn merge(
        &self,
        doc: DocumentId,
        changes: Vec<(Vec<u8>, Provenance, i64)>,
    ) -> Result<Result<usize, String>, DocError> {
        let (reply, rx) = oneshot::channel();
        self.send(doc, Cmd::Merge { changes, reply }).await?;
        rx.await.map_err(|_| DocError::Stopped)
    }

    /// A copy of the current document.
    pub async fn read(&self, doc: DocumentId) -> Result<Automerge, DocError> {
        let (reply, rx) = oneshot::channel();
        self.send(doc, Cmd::Read { reply }).await?;
        rx.await.map_err(|_| DocError::Stopped)
    }

    /// Asks every loaded document whose change log grew since its last
    /// snapshot to write one, one after another, and waits until they are
    /// stored (or skipped). Called at shutdown, after the connections closed, so a
    /// restart loads a snapshot and no tail, and a device with nothing
    /// gets a reply it loads in one go. Skipping is safe: the change log
    /// has everything.
    pub async fn compact_all(&self) {
        let handles: Vec<mpsc::Sender<Cmd>> = match self.inner.loaded.lock() {
            Ok(map) => map.values().map(|h| h.tx.clone()).collect(),
            Err(_) => return,
        };
        // One case at a time: each is a save() and a reload check, and a
        // machine with many loaded cases must not do them all at once.
        for tx in handles {
            let (reply, rx) = oneshot::channel();
            if tx.send(Cmd::Compact { reply }).await.is_ok() {
                let _ = rx.await;
            }
        }
    }
}

struct Actor {
    id: DocumentId,
    sync: DocSync,
    peers: HashMap<u64, PeerHandle>,
    store: Store,
    self_tx: mpsc::Sender<Cmd>,
    heads_sent: HashMap<u64, Vec<ChangeHash>>,
    /// Persist tokens in flight.
    pending: HashSet<u64>,
    metrics: Arc<Metrics>,
    /// The connections with this document open, shared with the supervisor
    /// so it can close them even after a panic.
    subscribers: Subscribers,
    /// The highest change-log position of this document known durable.
    log_end: Option<i64>,
    /// Changes in the log after the current snapshot.
    since_snapshot: usize,
    snapshot_covers: Option<i64>,
    snapshot_every: usize,
    panic_marker: Option<String>,
    hooks: DocsHooks,
    /// Connections in quarantine, by connection id.
    quarantined: HashMap<u64, QuarantinePeer>,
    /// Sync messages that arrived while changes were being made durable,
    /// in arrival order; see [`Actor::defer`].
    deferred: VecDeque<Cmd>,
    /// Persist batches, in order, to [`Actor::forward_persists`].
    persist_tx: mpsc::UnboundedSender<(u64, Vec<ChangeRecord>)>,
    /// Some device was not sent what it could have been (its channel was
    /// nearly full); `route` runs again soon.
    held_back: bool,
    /// Connections whose last sync message carried changes and has not been
    /// answered, with when it went out (pacing; `DocsConfig::reply_wait`).
    awaiting: HashMap<u64, Instant>,
    reply_wait: Duration,
}

/// Most sync messages held back while the gate is closed; past it they are
/// applied at once, as if there were no deferral (the command channel's
/// bound is then the only backpressure, as before).
const MAX_DEFERRED: usize = 1024;

/// Free slots a connection's outbound channel must have before a document
/// sends it another sync message (see [`Actor::route`]).
const OUTBOUND_HEADROOM: usize = 16;

/// How soon a document retries the devices it held back.
const HELD_BACK_RETRY: Duration = Duration::from_millis(20);

type Subscribers = Arc<Mutex<HashMap<u64, OutboundTx>>>;

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor").field("id", &self.id).finish()
    }
}

impl Actor {
    /// Runs until idle or failed; returns why it stopped.
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Cmd>,
        idle: Duration,
        docs: Docs,
        generation: u64,
    ) -> &'static str {
        let mut reason = UNLOADED;
        loop {
            let cmd = if self.peers.is_empty()
                && self.pending.is_empty()
                && self.quarantined.is_empty()
            {
                match tokio::time::timeout(idle, rx.recv()).await {
                    Ok(Some(cmd)) => cmd,
                    Ok(None) => break,
                    Err(_) if docs.retire(&self.id, generation, &mut rx) => break,
                    // A command arrived just as the time ran out.
                    Err(_) => continue,
                }
            } else if let Some(at) = self.next_retry() {
                match tokio::time::timeout_at(at, rx.recv()).await {
                    Ok(Some(cmd)) => cmd,
                    Ok(None) => break,
                    Err(_) => {
                        self.route();
                        if self.sync.is_poisoned() {
                            reason = "document failed; reconnect";
                            break;
                        }
                        continue;
                    }
                }
            } else {
                match rx.recv().await {
                    Some(cmd) => cmd,
                    None => break,
                }
            };
            if self.defer(cmd).await {
                continue;
            }
            if self.sync.is_poisoned() {
                // Storage failed under us, or automerge failed on peer
                // input: the in-memory document may hold changes that are
                // not durable or be inconsistent. Drop it; peers reconnect
                // and re-send, and the document reloads from what is stored.
                reason = "document failed; reconnect";
                break;
            }
            self.route();
            // The gate is open again (everything in memory is durable and
            // has gone out): apply what waited for it, all at once.
            while !self.sync.is_persisting() && !self.deferred.is_empty() {
                let waiting: Vec<Cmd> = self.deferred.drain(..).collect();
                for cmd in waiting {
                    self.handle(cmd).await;
                    if self.sync.is_poisoned() {
                        break;
                    }
                }
                if self.sync.is_poisoned() {
                    break;
                }
                self.route();
            }
            if self.sync.is_poisoned() {
                reason = "document failed; reconnect";
                break;
            }
        }
        // Close the channel so `Docs::lookup` sees the actor is gone.
        rx.close();
        if reason == UNLOADED && self.since_snapshot > 0 {
            self.compact();
        }
        reason
    }

    /// Handles `cmd`, or holds it back: a peer's sync message that arrives
    /// while changes are being made durable waits until they are (returns
    /// true). Nothing goes out while any change is not durable, so applying
    /// such a message at once would only keep the gate closed longer: under
    /// a steady stream of edits it might never open, and nobody would hear
    /// of anything (the live fan-out's p99 was about 1 s). Held back, the
    /// messages are applied together as soon as the gate opens and the
    /// replies that were waiting have gone out, and their changes share one
    /// group commit. Replies to a peer keep their order: its messages are
    /// applied in arrival order.
    async fn defer(&mut self, cmd: Cmd) -> bool {
        let hold = matches!(&cmd, Cmd::Sync { conn_id, .. } if !self.quarantined.contains_key(conn_id))
            && (self.sync.is_persisting() || !self.deferred.is_empty())
            && self.deferred.len() < MAX_DEFERRED;
        if hold {
            self.deferred.push_back(cmd);
            return true;
        }
        self.handle(cmd).await;
        false
    }

    /// Saves the whole document as a snapshot covering the change log up
    /// to `log_end`. Only when every change in memory is durable, so the
    /// snapshot never holds a change the log does not.
    fn compact(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        let covered = self.log_end?;
        if self.sync.is_persisting() || self.snapshot_covers == Some(covered) {
            return None;
        }
        let bytes = self.sync.doc().save();
        let heads = self.sync.doc().get_heads();
        let limits = self.sync.limits().clone();
        let store = self.store.clone();
        let doc = self.id;
        self.snapshot_covers = Some(covered);
        self.since_snapshot = 0;
        Some(tokio::spawn(async move {
            // automerge 0.12 can accept changes (from a hostile peer, found
            // by fuzzing) whose document then saves to bytes it cannot load
            // ("mismatching heads"). Such a snapshot would make the case
            // unloadable; the change log alone still loads, so keep that.
            let reloads = tokio::task::spawn_blocking(move || {
                guard::load_document(&bytes, &limits)
                    .map(|d| d.get_heads() == heads)
                    .map_err(|e| e.to_string())
                    .and_then(|same| {
                        same.then_some(bytes)
                            .ok_or_else(|| "different heads".to_owned())
                    })
            })
            .await;
            let bytes = match reloads {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => {
                    tracing::error!(document = %doc, error = %e, "the document's snapshot does not reload; not stored (the change log still has everything)");
                    return;
                }
                Err(e) => {
                    tracing::error!(document = %doc, error = %e, "snapshot check failed; not stored");
                    return;
                }
            };
            if let Err(e) = store
                .put_snapshot(doc, bytes, crate::store::LogSeq(covered))
                .await
            {
                tracing::warn!(document = %doc, error = %e, "snapshot failed; the change log still has everything");
            }
        }))
    }

    /// When `route` must run again without a command: soon if a device was
    /// held back, else when the first paced device's answer is overdue.
    fn next_retry(&self) -> Option<Instant> {
        let overdue = self.awaiting.values().min().map(|t| *t + self.reply_wait);
        let held = self.held_back.then(|| Instant::now() + HELD_BACK_RETRY);
        match (held, overdue) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn remove_conn(&mut self, conn_id: u64) -> Option<PeerHandle> {
        let p = self.peers.remove(&conn_id)?;
        self.heads_sent.remove(&conn_id);
        self.awaiting.remove(&conn_id);
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.remove(&conn_id);
        }
        Some(p)
    }

    async fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Open(mut peer) => {
                let saved = match peer.start_state.take() {
                    Some(state) => Some(state),
                    None => self
                        .store
                        .load_sync_state(self.id, peer.sync_key.clone())
                        .await
                        .ok()
                        .flatten(),
                };
                if peer.quarantine {
                    self.open_quarantined(peer, saved.as_deref());
                    return;
                }
                let read_only = peer.access == Access::Read;
                // A reconnect of the same peer replaces its old session.
                if self.sync.has_peer(&peer.peer) {
                    self.sync.remove_peer(&peer.peer);
                    let old: Vec<u64> = self
                        .peers
                        .iter()
                        .filter(|(_, p)| p.peer == peer.peer)
                        .map(|(c, _)| *c)
                        .collect();
                    for c in old {
                        self.remove_conn(c);
                    }
                }
                self.sync
                    .add_peer(peer.peer.clone(), saved.as_deref(), read_only);
                if let Ok(mut subs) = self.subscribers.lock() {
                    subs.insert(peer.conn_id, peer.tx.clone());
                }
                self.peers.insert(peer.conn_id, peer);
            }
            Cmd::Sync {
                conn_id,
                data,
                received_at_ms,
            } => {
                if self.quarantined.contains_key(&conn_id) {
                    self.sync_quarantined(conn_id, &data, received_at_ms);
                    return;
                }
                let Some(peer) = self.peers.get(&conn_id) else {
                    return;
                };
                let peer_id = peer.peer.clone();
                let provenance = peer.provenance.clone();
                if peer.access == Access::Write {
                    if let Err(reason) = self.check_actor_binding(&data, &provenance) {
                        self.metrics.rejected_inputs.inc();
                        tracing::warn!(document = %self.id, peer = %peer_id, "{reason}");
                        let audit = self.hooks.audit.clone();
                        let event =
                            crate::audit::AuditEvent::new(crate::audit::AuditKind::ActorRefused)
                                .doc(self.id)
                                .detail(serde_json::json!({
                                    "user": provenance.user,
                                    "device": provenance.device,
                                }));
                        // Coalesced: a forger retrying in a loop must not
                        // turn into a stream of disk writes.
                        audit.record_coalesced("actor_refused", event);
                        if let Some(p) = self.remove_conn(conn_id) {
                            self.sync.remove_peer(&p.peer);
                            let _ = p.tx.try_send(Outbound::Refused { reason });
                        }
                        return;
                    }
                }
                match self.sync.handle_sync(&peer_id, &data) {
                    Ok(()) => {}
                    Err(e) => {
                        self.metrics.rejected_inputs.inc();
                        tracing::warn!(document = %self.id, peer = %peer_id, error = %e, "sync message refused");
                        if let Some(p) = self.remove_conn(conn_id) {
                            self.sync.remove_peer(&p.peer);
                            let _ = p.tx.try_send(Outbound::Refused {
                                reason: format!("refused: {e}"),
                            });
                        }
                        // If automerge failed, `DocSync` is poisoned and the
                        // run loop stops, so the next request reloads it.
                        return;
                    }
                }
                for req in self.sync.take_persist_requests() {
                    if let Some(marker) = &self.panic_marker {
                        #[allow(clippy::panic)]
                        if req.changes.iter().any(|c| c.message() == Some(marker)) {
                            panic!("test hook: panic marker change received");
                        }
                    }
                    self.persist(req, &provenance, received_at_ms);
                }
            }
            Cmd::Ephemeral {
                conn_id,
                count,
                session_id,
                data,
            } => {
                let Some(from) = self.peers.get(&conn_id).map(|p| p.peer.clone()) else {
                    return;
                };
                for (c, p) in &self.peers {
                    if *c != conn_id {
                        let _ = p.tx.try_send(Outbound::Ephemeral(Box::new(EphemeralOut {
                            from: from.clone(),
                            document: self.id,
                            count,
                            session_id: session_id.clone(),
                            data: data.clone(),
                        })));
                    }
                }
            }
            Cmd::WantsHeads { conn_id, wants } => {
                if let Some(p) = self.peers.get_mut(&conn_id) {
                    p.wants_heads = wants;
                }
            }
            Cmd::Close { conn_id } => {
                if self.quarantined.remove(&conn_id).is_some() {
                    if let Ok(mut subs) = self.subscribers.lock() {
                        subs.remove(&conn_id);
                    }
                    return;
                }
                if let Some(p) = self.remove_conn(conn_id) {
                    if let Some(state) = self.sync.remove_peer(&p.peer) {
                        // Through the same ordered writer as the changes, so a
                        // stored state never names changes that are not.
                        let store = self.store.clone();
                        let doc = self.id;
                        tokio::spawn(async move {
                            let _ = store.save_sync_state(doc, p.sync_key, state).await;
                        });
                    }
                }
            }
            Cmd::Persisted {
                token,
                log_seq,
                changes,
                ok,
            } => {
                self.pending.remove(&token);
                if ok {
                    self.sync.handle_persisted(token);
                    if let Some(seq) = log_seq {
                        self.log_end = Some(self.log_end.map_or(seq, |e| e.max(seq)));
                        // Changes, not batches: a device delivering 500
                        // offline edits in one message is 500 more changes
                        // to load after a restart. (Counting batches, a
                        // 20,000-change case built from a few writers had
                        // no snapshot at all.)
                        self.since_snapshot = self
                            .since_snapshot
                            .saturating_add(usize::try_from(changes).unwrap_or(usize::MAX));
                    }
                    if self.since_snapshot >= self.snapshot_every {
                        self.compact();
                    }
                } else {
                    self.sync.handle_persist_failed(token);
                }
            }
            Cmd::Read { reply } => {
                let _ = reply.send(self.sync.doc().clone());
            }
            Cmd::Compact { reply } => {
                let written = if self.since_snapshot > 0 {
                    self.compact()
                } else {
                    None
                };
                tokio::spawn(async move {
                    if let Some(w) = written {
                        let _ = w.await;
                    }
                    let _ = reply.send(());
                });
            }
            Cmd::Quarantined { conn_id, token, ok } => {
                if let Some(q) = self.quarantined.get_mut(&conn_id) {
                    if ok {
                        q.sync.handle_persisted(token);
                    } else {
                        q.sync.handle_persist_failed(token);
                    }
                }
            }
            Cmd::Merge { changes, reply } => {
                let mut merged = 0;
                for (bytes, provenance, received_at_ms) in changes {
                    let result = self.sync.load_changes(&bytes);
                    if let Err(e) = result {
                        let _ = reply.send(Err(e.to_string()));
                        return;
                    }
                    for req in self.sync.take_persist_requests() {
                        merged += req.changes.len();
                        self.persist(req, &provenance, received_at_ms);
                    }
                }
                let _ = reply.send(Ok(merged));
            }
        }
    }

    /// Refuses a sync message that carries a new change signed with an
    /// actor id bound to another device (DESIGN.md section 6): without
    /// this, a member could forge history in another relative's name and
    /// block that relative's phone with a duplicate seq. Unbound actors are
    /// bound to the delivering device here, before automerge applies them.
    fn check_actor_binding(&self, data: &[u8], who: &Provenance) -> Result<(), String> {
        let limits = self.sync.limits();
        // A malformed message is refused by `handle_sync` with its own error.
        let Ok(authors) = guard::sync_message_authors(data, limits) else {
            return Ok(());
        };
        let mut actors = authors.change_actors;
        if authors.document_chunks > 0 {
            actors.extend(self.new_actors_in_documents(data)?);
        }
        actors.sort();
        actors.dedup();
        self.hooks
            .bindings
            .claim(&actors, &who.user, &who.device)
            .map_err(|_| {
                "refused: a change is signed with an actor id that belongs to another device"
                    .to_owned()
            })
    }

    /// The authors of the changes inside the document chunks of a sync
    /// message that this document does not have yet.
    fn new_actors_in_documents(&self, data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let limits = self.sync.limits();
        let message = guard::catch_automerge(|| automerge::sync::Message::decode(data))
            .map_err(|e| format!("refused: {e}"))?
            .map_err(|e| format!("refused: {e}"))?;
        let mut actors = Vec::new();
        for chunk in message.changes.iter() {
            // Byte 8 is the chunk type; 0 is a document.
            if chunk.get(8) != Some(&0) {
                continue;
            }
            let scratch =
                guard::load_document(chunk, limits).map_err(|e| format!("refused: {e}"))?;
            // Inside the backstop: automerge 0.12 can load a chunk and then
            // panic listing its changes (see `guard::load_document`'s callers
            // in the actor rule).
            let changes = guard::catch_automerge(|| scratch.get_changes(&[]))
                .map_err(|e| format!("refused: {e}"))?;
            for change in changes {
                if self.sync.doc().get_change_by_hash(&change.hash()).is_none() {
                    actors.push(change.actor_id().to_bytes().to_vec());
                }
            }
        }
        Ok(actors)
    }

    /// Starts a quarantined connection's private session (see
    /// [`QuarantinePeer`]).
    fn open_quarantined(&mut self, peer: PeerHandle, saved: Option<&[u8]>) {
        let limits = self.sync.limits().clone();
        let shared = saved
            .and_then(|s| guard::decode_sync_state(s, &limits).ok())
            .map(|state| state.shared_heads)
            .unwrap_or_default();
        let fork = if shared.is_empty() {
            Automerge::new()
        } else {
            guard::catch_automerge(|| self.sync.doc().fork_at(&shared))
                .ok()
                .and_then(Result::ok)
                .unwrap_or_else(Automerge::new)
        };
        let mut sync = DocSync::new(fork, limits);
        sync.add_peer(peer.peer.clone(), saved, false);
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.insert(peer.conn_id, peer.tx.clone());
        }
        self.quarantined
            .insert(peer.conn_id, QuarantinePeer { peer, sync });
    }

    /// A sync message from a quarantined connection: applied to its private
    /// fork; the changes the document does not have go to the quarantine.
    fn sync_quarantined(&mut self, conn_id: u64, data: &[u8], received_at_ms: i64) {
        let Some(q) = self.quarantined.get_mut(&conn_id) else {
            return;
        };
        if let Err(e) = q.sync.handle_sync(&q.peer.peer, data) {
            self.metrics.rejected_inputs.inc();
            if let Some(q) = self.quarantined.remove(&conn_id) {
                let _ = q.peer.tx.try_send(Outbound::Refused {
                    reason: format!("refused: {e}"),
                });
            }
            return;
        }
        for req in q.sync.take_persist_requests() {
            let held: Vec<NewQuarantined> = req
                .changes
                .iter()
                .filter(|c| self.sync.doc().get_change_by_hash(&c.hash()).is_none())
                .map(|c| NewQuarantined {
                    doc: self.id,
                    hash: c.hash().0,
                    bytes: c.raw_bytes().to_vec(),
                    actor: c.actor_id().to_bytes().to_vec(),
                    user: q.peer.provenance.user.clone(),
                    device: q.peer.provenance.device.clone(),
                    received_at_ms,
                    reason: "revoked",
                })
                .collect();
            let identity = self.hooks.identity.clone();
            let audit = self.hooks.audit.clone();
            let tx = self.self_tx.clone();
            let token = req.token;
            let doc = self.id;
            let who = q.peer.provenance.clone();
            tokio::spawn(async move {
                let n = held.len();
                audit
                    .record(
                        crate::audit::AuditEvent::new(crate::audit::AuditKind::ChangesQuarantined)
                            .doc(doc)
                            .detail(serde_json::json!({
                                "user": who.user,
                                "device": who.device,
                                "changes": n,
                            })),
                    )
                    .await;
                let ok = tokio::task::spawn_blocking(move || identity.quarantine(&held))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                match &ok {
                    Ok(added) => {
                        tracing::info!(document = %doc, changes = n, new = added, "changes quarantined")
                    }
                    Err(e) => tracing::error!(document = %doc, error = %e, "quarantine failed"),
                }
                let _ = tx
                    .send(Cmd::Quarantined {
                        conn_id,
                        token,
                        ok: ok.is_ok(),
                    })
                    .await;
            });
        }
    }

    fn persist(&mut self, req: PersistRequest, provenance: &Provenance, received_at_ms: i64) {
        let records: Vec<ChangeRecord> = req
            .changes
            .iter()
            .map(|c| ChangeRecord {
                doc: self.id,
                hash: c.hash().0,
                bytes: c.raw_bytes().to_vec(),
                actor: c.actor_id().to_bytes().to_vec(),
                seq: c.seq(),
                user: provenance.user.clone(),
                device: provenance.device.clone(),
                received_at_ms,
            })
            .collect();
        let token = req.token;
        self.pending.insert(token);
        // Through the actor's one forwarder, so batches reach the group
        // commit in the order they were made: a change is never stored
        // without the changes it depends on (one spawned task per batch
        // raced, and a power cut between two commits left a gap; found by
        // the power-loss test).
        if self.persist_tx.send((token, records)).is_err() {
            // The forwarder only stops when the actor does.
            self.sync.handle_persist_failed(token);
        }
    }

    /// Queues the actor's persist batches for the group commit in order, and
    /// reports each one's outcome back to the actor as it completes.
    async fn forward_persists(
        mut jobs: mpsc::UnboundedReceiver<(u64, Vec<ChangeRecord>)>,
        store: Store,
        tx: mpsc::Sender<Cmd>,
        metrics: Arc<Metrics>,
    ) {
        while let Some((token, records)) = jobs.recv().await {
            let n = records.len() as u64;
            let queued = store
                .submit(WriteBatch::from(WriteOp::AppendChanges(records)))
                .await;
            let tx = tx.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let result = match queued {
                    Ok(receipt) => receipt.await,
                    Err(e) => Err(e),
                };
                Self::report_persisted(result, token, n, &tx, &metrics).await;
            });
        }
    }

    /// Tells the actor how a persist batch fared (`Cmd::Persisted`).
    async fn report_persisted(
        result: Result<crate::store::CommitReceipt, crate::store::StoreError>,
        token: u64,
        n: u64,
        tx: &mpsc::Sender<Cmd>,
        metrics: &Metrics,
    ) {
        let log_seq = match &result {
            Ok(receipt) => receipt.outcomes.iter().find_map(|o| match o {
                crate::store::WriteOutcome::ChangesAppended(a) => {
                    a.iter().map(|x| x.log_seq.0).max()
                }
                _ => None,
            }),
            Err(e) => {
                tracing::error!(error = %e, "persisting changes failed");
                None
            }
        };
        let ok = result.is_ok();
        if ok {
            metrics.changes_applied.inc_by(n);
        }
        let _ = tx
            .send(Cmd::Persisted {
                token,
                log_seq,
                changes: n,
                ok,
            })
            .await;
    }

    /// True while `conn` is paced: it has not answered the last message
    /// with changes it was sent, and `reply_wait` has not passed. Once it
    /// has (or the device answered), the device is released.
    fn paced(&mut self, conn: u64, peer: &PeerId, now: Instant) -> bool {
        if !self.sync.awaiting_reply(peer) {
            self.awaiting.remove(&conn);
            return false;
        }
        match self.awaiting.get(&conn) {
            Some(sent) if now.saturating_duration_since(*sent) < self.reply_wait => true,
            _ => {
                self.awaiting.remove(&conn);
                self.sync.stop_waiting(peer);
                false
            }
        }
    }

    /// Sends what the gate lets out: sync messages, and durable heads to the
    /// peers that subscribed to them.
    fn route(&mut self) {
        for q in self.quarantined.values_mut() {
            for (_, data) in q.sync.poll_outgoing() {
                let _ = q.peer.tx.try_send(Outbound::Sync {
                    document: self.id,
                    data,
                });
            }
        }
        // A device that has not yet read what it was sent gets nothing more
        // for now: automerge's sync state remembers what that peer has not
        // been told, so one later message catches it up. Closing it instead
        // (as this did) dropped a third of the devices of a reconnect storm
        // in the middle of their sync, and they started over. Its channel
        // is shared by every document of the connection, hence the
        // headroom; the actor retries while any device is held back.
        self.metrics.doc_routes.inc();
        let mut slow = Vec::new();
        let mut held_back = false;
        // Devices still waiting to answer, before anything is sent now:
        // they hear of the durable heads with their next message.
        let mut paced = HashSet::new();
        let now = Instant::now();
        let conns: Vec<u64> = self.peers.keys().copied().collect();
        for conn in conns {
            let Some(p) = self.peers.get(&conn) else {
                continue;
            };
            let full = p.tx.capacity() < OUTBOUND_HEADROOM;
            let peer = p.peer.clone();
            // First, so that a wait that ran out is ended even for a device
            // held back: its deadline must not stay in `next_retry`, which
            // would then wake the actor at once, again and again.
            if self.paced(conn, &peer, now) {
                paced.insert(conn);
                continue;
            }
            if full {
                held_back = true;
                self.metrics.held_back.inc();
                continue;
            }
            let Some(data) = self.sync.poll_outgoing_for(&peer) else {
                continue;
            };
            if self.sync.awaiting_reply(&peer) {
                self.awaiting.insert(conn, now);
            }
            let Some(p) = self.peers.get(&conn) else {
                continue;
            };
            if p.tx
                .try_send(Outbound::Sync {
                    document: self.id,
                    data,
                })
                .is_err()
            {
                // Closed, or filled by another document meanwhile.
                slow.push(conn);
            }
        }
        if !self.sync.is_persisting() {
            let durable = self.sync.durable_heads().to_vec();
            // Encoded once for every peer (bs58 with its checksum was 4–5 %
            // of the server's CPU in the fan-out, once per peer).
            let mut encoded: Option<Vec<String>> = None;
            for (conn, p) in &self.peers {
                if !p.wants_heads || self.heads_sent.get(conn) == Some(&durable) {
                    continue;
                }
                if paced.contains(conn) {
                    continue;
                }
                if p.tx.capacity() < OUTBOUND_HEADROOM {
                    held_back = true;
                    continue;
                }
                let heads = encoded
                    .get_or_insert_with(|| durable.iter().map(encode_head).collect())
                    .clone();
                if p.tx
                    .try_send(Outbound::RemoteHeads {
                        document: self.id,
                        heads,
                    })
                    .is_ok()
                {
                    self.heads_sent.insert(*conn, durable.clone());
                } else {
                    slow.push(*conn);
                }
            }
        }
        self.held_back = held_back;
        // A connection whose channel is closed, or full despite the
        // headroom, is closed rather than buffered without bound; its device
        // reconnects and resumes from its state.
        for conn in slow {
            if let Some(p) = self.remove_conn(conn) {
                self.sync.remove_peer(&p.peer);
                let _ = p.tx.try_send(Outbound::Close {
                    reason: "too slow".into(),
                });
            }
        }
    }
}
