//! One simulated phone, and many of them.
//!
//! A [`SimDevice`] is sync-core's `Device` engine, its socket, and what the
//! generator measures about it. While connected it lives in a tokio task
//! of its own, which owns it: no lock around the engine, no shared
//! bottleneck between devices. The task publishes a small [`Progress`]
//! (heads per document, changes awaiting acknowledgement, when it last
//! changed) that the workload polls; everything else comes back when the
//! task ends ([`Fleet::stop`]).
//!
//! Acknowledgement is what sync-core's `Device` counts as acknowledged: the
//! server's sync replies (shared heads) and, where the server offers it,
//! `remote-heads-changed` for its storage id. casesync sends neither before
//! the change is durable; the Node peer sends its sync reply from memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use automerge::{ActorId, Automerge, ChangeHash};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sync_core::engine::{Device, DeviceEvent};
use sync_core::guard::Limits;
use sync_core::ids::{DeviceId, DocumentId, PeerId, StorageId, UserId};
use sync_core::model::{self, Edit};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::conn::{dial, Counters, Ws};
use super::edits::blind_edit;
use super::LoadError;

/// How long a closing handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Every change the generator made, with when it was made: for fan-out
/// arrival latencies and for the heads every replica must end with.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<HashMap<ChangeHash, Made>>,
}

#[derive(Debug, Clone)]
pub struct Made {
    pub doc: DocumentId,
    pub at: Instant,
    pub deps: Vec<ChangeHash>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<ChangeHash, Made>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn insert(&self, hash: ChangeHash, made: Made) {
        self.lock().insert(hash, made);
    }

    pub fn made_at(&self, hash: &ChangeHash) -> Option<Instant> {
        self.lock().get(hash).map(|m| m.at)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Changes made per document.
    pub fn count_by_doc(&self) -> BTreeMap<DocumentId, usize> {
        let mut out = BTreeMap::new();
        for m in self.lock().values() {
            *out.entry(m.doc).or_insert(0) += 1;
        }
        out
    }

    /// The heads each document must end with: the changes (and base heads)
    /// that no other change depends on.
    pub fn expected_heads(
        &self,
        base: &BTreeMap<DocumentId, Vec<ChangeHash>>,
    ) -> BTreeMap<DocumentId, Vec<ChangeHash>> {
        let map = self.lock();
        let mut candidates: BTreeMap<DocumentId, HashSet<ChangeHash>> = base
            .iter()
            .map(|(d, h)| (*d, h.iter().copied().collect()))
            .collect();
        let mut deps: HashSet<ChangeHash> = HashSet::new();
        for (hash, m) in map.iter() {
            candidates.entry(m.doc).or_default().insert(*hash);
            deps.extend(m.deps.iter().copied());
        }
        candidates
            .into_iter()
            .map(|(d, set)| {
                let mut heads: Vec<ChangeHash> =
                    set.into_iter().filter(|h| !deps.contains(h)).collect();
                heads.sort();
                (d, heads)
            })
            .collect()
    }
}

/// What a device does on its own while connected.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Nothing but sync.
    Idle,
    /// One blind edit of `doc` every `period`, from the moment the fleet's
    /// `go` signal is given (plus `offset`), for `length`.
    Rate {
        doc: DocumentId,
        period: Duration,
        offset: Duration,
        length: Duration,
    },
    /// `left` blind edits of `doc`, `batch` at a time, each batch once the
    /// previous one is acknowledged.
    Bulk {
        doc: DocumentId,
        left: usize,
        batch: usize,
    },
}

/// What the workload sees of a running device.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Sorted heads of every open document.
    pub heads: BTreeMap<DocumentId, Vec<ChangeHash>>,
    /// Own changes the server has not acknowledged yet.
    pub pending: usize,
    /// When a document last changed (local edit or a change from the
    /// server).
    pub last_change: Option<Instant>,
    /// When the last own change was acknowledged.
    pub last_ack: Option<Instant>,
    /// The plan has nothing more to do.
    pub plan_done: bool,
    pub online: bool,
    pub drops: u32,
    pub unavailable: usize,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    doc: DocumentId,
    /// When the clock started: the edit if online, else the next connect.
    since: Option<Instant>,
}

/// One simulated phone.
#[derive(Debug)]
pub struct SimDevice {
    pub name: String,
    author: String,
    token: Option<String>,
    engine: Device,
    actor_seed: StdRng,
    pub docs: Vec<DocumentId>,
    pub plan: Plan,
    pub counters: Arc<Counters>,
    progress: Arc<Mutex<Progress>>,
    dirty: bool,
    pending: HashMap<ChangeHash, Pending>,
    acked_seen: BTreeMap<DocumentId, Vec<ChangeHash>>,
    last_heads: BTreeMap<DocumentId, Vec<ChangeHash>>,
    /// Edit to acknowledgement.
    pub ack_latencies: Vec<Duration>,
    /// Another device's edit to its arrival here.
    pub arrival_latencies: Vec<Duration>,
    pub connections: u32,
    /// Sockets that ended without us asking.
    pub drops: u32,
    pub drop_reasons: Vec<String>,
    pub frame_errors: Vec<String>,
    pub server_errors: Vec<String>,
    pub edits_made: usize,
}

fn lock(p: &Mutex<Progress>) -> MutexGuard<'_, Progress> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sorted(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    heads.sort();
    heads
}

impl SimDevice {
    /// A device of `user` named `device`, with a fresh storage id.
    pub fn new(
        user: &str,
        device: &str,
        token: Option<String>,
        seed: u64,
    ) -> Result<Self, LoadError> {
        let user_id =
            UserId::new(user).map_err(|e| LoadError::other(format!("user {user}: {e}")))?;
        let device_id =
            DeviceId::new(device).map_err(|e| LoadError::other(format!("device {device}: {e}")))?;
        let peer = PeerId::for_device(&user_id, &device_id);
        let mut rng = StdRng::seed_from_u64(seed);
        let storage: String = (0..16)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect();
        let storage =
            StorageId::new(storage).map_err(|e| LoadError::other(format!("storage id: {e}")))?;
        Ok(Self {
            name: device.to_owned(),
            author: user.to_owned(),
            token,
            engine: Device::new(peer, Some(storage), Limits::default()),
            actor_seed: rng,
            docs: Vec::new(),
            plan: Plan::Idle,
            counters: Arc::new(Counters::default()),
            progress: Arc::new(Mutex::new(Progress::default())),
            dirty: true,
            pending: HashMap::new(),
            acked_seen: BTreeMap::new(),
            last_heads: BTreeMap::new(),
            ack_latencies: Vec::new(),
            arrival_latencies: Vec::new(),
            connections: 0,
            drops: 0,
            drop_reasons: Vec::new(),
            frame_errors: Vec::new(),
            server_errors: Vec::new(),
            edits_made: 0,
        })
    }

    fn fresh_actor(&mut self) -> ActorId {
        ActorId::from(self.actor_seed.random::<[u8; 16]>())
    }

    /// Opens a document to fetch from the server (or to create here).
    pub fn open_empty(&mut self, doc: DocumentId) {
        let actor = self.fresh_actor();
        self.engine
            .open(doc, Automerge::new().with_actor(actor), None);
        self.docs.push(doc);
        self.last_heads.insert(doc, Vec::new());
        self.dirty = true;
    }

    pub fn doc(&self, doc: &DocumentId) -> Option<&Automerge> {
        self.engine.doc(doc)
    }

    pub fn heads(&self, doc: &DocumentId) -> Vec<ChangeHash> {
        self.last_heads.get(doc).cloned().unwrap_or_default()
    }

    pub fn progress(&self) -> Arc<Mutex<Progress>> {
        self.progress.clone()
    }

    /// Runs `f` as one local change of `doc` and records what it made.
    pub fn change(
        &mut self,
        doc: &DocumentId,
        registry: Option<&Registry>,
        f: impl FnOnce(&mut Automerge) -> Result<Option<ChangeHash>, sync_core::model::ModelError>,
    ) -> Result<Option<ChangeHash>, LoadError> {
        let made = self.engine.edit(doc, |am| {
            let hash = f(am)?;
            let deps = hash
                .and_then(|h| am.get_change_meta_by_hash(&h))
                .map(|m| m.deps)
                .unwrap_or_default();
            Ok::<_, sync_core::model::ModelError>((hash, deps, sorted(am.get_heads())))
        })??;
        let (hash, deps, heads) = made;
        let Some(hash) = hash else {
            return Ok(None);
        };
        let now = Instant::now();
        let since = self.engine.is_connected().then_some(now);
        self.pending.insert(hash, Pending { doc: *doc, since });
        if let Some(r) = registry {
            r.insert(
                hash,
                Made {
                    doc: *doc,
                    at: now,
                    deps,
                },
            );
        }
        self.last_heads.insert(*doc, heads);
        self.edits_made += 1;
        self.dirty = true;
        Ok(Some(hash))
    }

    /// A model edit as this device's user.
    pub fn edit(
        &mut self,
        doc: &DocumentId,
        edit: &Edit,
        registry: Option<&Registry>,
    ) -> Result<Option<ChangeHash>, LoadError> {
        let author = self.author.clone();
        self.change(doc, registry, |am| {
            model::apply_edit(am, edit, &author, casesync_tests::now_ms())
        })
    }

    /// A realistic random edit (it reads the case first).
    pub fn random_edit(
        &mut self,
        doc: &DocumentId,
        rng: &mut StdRng,
        registry: Option<&Registry>,
    ) -> Result<Option<ChangeHash>, LoadError> {
        let am = self
            .engine
            .doc(doc)
            .ok_or_else(|| LoadError::other(format!("{doc} is not open on {}", self.name)))?;
        let case = model::read_case(am)?;
        let edit = casesync_tests::workload::random_edit(rng, &case, &self.name)?;
        self.edit(doc, &edit, registry)
    }

    fn blind(&mut self, doc: &DocumentId, registry: Option<&Registry>) -> Result<(), LoadError> {
        let mut rng = StdRng::seed_from_u64(self.actor_seed.random());
        let edit = blind_edit(&mut rng, &self.name)?;
        self.edit(doc, &edit, registry)?;
        Ok(())
    }

    fn publish(&mut self, online: bool) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let plan_done = match &self.plan {
            Plan::Idle => true,
            Plan::Bulk { left, .. } => *left == 0,
            // The session marks a rate plan done itself.
            Plan::Rate { .. } => lock(&self.progress).plan_done,
        };
        let mut p = lock(&self.progress);
        p.heads.clone_from(&self.last_heads);
        p.pending = self.pending.len();
        p.online = online;
        p.drops = self.drops;
        p.plan_done = plan_done;
    }

    fn mark(&mut self, f: impl FnOnce(&mut Progress)) {
        f(&mut lock(&self.progress));
        self.dirty = true;
    }

    /// Handles one frame from the server, then records arrivals and
    /// acknowledgements.
    fn on_frame(&mut self, bytes: &[u8], registry: Option<&Registry>) {
        let now = Instant::now();
        if let Err(e) = self.engine.handle_frame(bytes) {
            if self.frame_errors.len() < 8 {
                self.frame_errors.push(e.to_string());
            }
        }
        let mut changed = Vec::new();
        while let Some(event) = self.engine.poll_event() {
            match event {
                DeviceEvent::DocChanged(d) => changed.push(d),
                DeviceEvent::DocUnavailable(_) => self.mark(|p| p.unavailable += 1),
                DeviceEvent::ServerError(m) => {
                    if self.server_errors.len() < 8 {
                        self.server_errors.push(m);
                    }
                }
                DeviceEvent::Connected { .. } => {}
            }
        }
        while self.engine.poll_store().is_some() {}
        for d in changed {
            let Some(am) = self.engine.doc(&d) else {
                continue;
            };
            let last = self.last_heads.get(&d).cloned().unwrap_or_default();
            if let Some(reg) = registry {
                for meta in am.get_changes_meta(&last) {
                    if let Some(at) = reg.made_at(&meta.hash) {
                        self.arrival_latencies
                            .push(now.saturating_duration_since(at));
                    }
                }
            }
            self.last_heads.insert(d, sorted(am.get_heads()));
            self.dirty = true;
            lock(&self.progress).last_change = Some(now);
        }
        self.check_acks(now);
    }

    fn check_acks(&mut self, now: Instant) {
        if self.pending.is_empty() {
            return;
        }
        let docs: HashSet<DocumentId> = self.pending.values().map(|p| p.doc).collect();
        let mut any = false;
        for d in docs {
            let acked = sorted(self.engine.acked_heads(&d).to_vec());
            if self.acked_seen.get(&d) == Some(&acked) {
                continue;
            }
            let Some(am) = self.engine.doc(&d) else {
                continue;
            };
            let unacked: HashSet<ChangeHash> =
                am.get_changes_meta(&acked).iter().map(|m| m.hash).collect();
            let latencies = &mut self.ack_latencies;
            self.pending.retain(|hash, p| {
                if p.doc != d || unacked.contains(hash) {
                    return true;
                }
                latencies.push(now.saturating_duration_since(p.since.unwrap_or(now)));
                any = true;
                false
            });
            self.acked_seen.insert(d, acked);
        }
        if any {
            self.dirty = true;
            lock(&self.progress).last_ack = Some(now);
        }
    }

    /// Connects (again and again if the socket drops and `ctx.reconnect`)
    /// until told to stop.
    async fn session(&mut self, mut ctx: SessionCtx) -> Result<(), LoadError> {
        let mut rng = StdRng::seed_from_u64(self.actor_seed.random());
        loop {
            if *ctx.stop.borrow() {
                return Ok(());
            }
            let permit = match &ctx.dial_limit {
                Some(s) => s.clone().acquire_owned().await.ok(),
                None => None,
            };
            let ws = dial(&ctx.url, self.token.as_deref(), self.counters.clone()).await;
            drop(permit);
            let ws = match ws {
                Ok(ws) => ws,
                Err(e) if ctx.reconnect => {
                    self.drops += 1;
                    self.drop_reasons.push(format!("dial: {e}"));
                    if backoff(&mut ctx.stop, &mut rng).await {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.connections += 1;
            let now = Instant::now();
            for p in self.pending.values_mut() {
                p.since.get_or_insert(now);
            }
            self.engine.connect();
            let end = self.link(ws, &mut ctx).await;
            self.engine.disconnect();
            while self.engine.poll_store().is_some() {}
            self.dirty = true;
            match end {
                LinkEnd::Failed(reason) => {
                    self.publish(false);
                    return Err(LoadError::other(reason));
                }
                LinkEnd::Stopped => {
                    self.publish(false);
                    return Ok(());
                }
                LinkEnd::Dropped(reason) => {
                    self.drops += 1;
                    if self.drop_reasons.len() < 8 {
                        self.drop_reasons.push(reason.clone());
                    }
                    self.publish(false);
                    if !ctx.reconnect {
                        return Err(LoadError::other(format!("socket dropped: {reason}")));
                    }
                    if backoff(&mut ctx.stop, &mut rng).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn bulk_step(&mut self, registry: Option<&Registry>) -> Result<(), LoadError> {
        let Plan::Bulk { doc, left, batch } = self.plan.clone() else {
            return Ok(());
        };
        // Edit only a case this device has received, and one batch at a
        // time.
        let fetched = self.last_heads.get(&doc).is_some_and(|h| !h.is_empty());
        if left == 0 || !fetched || !self.pending.is_empty() || !self.engine.is_connected() {
            return Ok(());
        }
        let n = batch.min(left);
        for _ in 0..n {
            self.blind(&doc, registry)?;
        }
        self.plan = Plan::Bulk {
            doc,
            left: left - n,
            batch,
        };
        self.dirty = true;
        Ok(())
    }

    async fn link(&mut self, mut ws: Ws, ctx: &mut SessionCtx) -> LinkEnd {
        let registry = ctx.registry.clone();
        let registry = registry.as_deref();
        let mut ticker: Option<(tokio::time::Interval, Instant)> = None;
        let rate = match &self.plan {
            Plan::Rate {
                doc,
                period,
                offset,
                length,
            } => Some((*doc, *period, *offset, *length)),
            _ => None,
        };
        let mut rate_started = false;
        loop {
            if let Err(e) = self.bulk_step(registry) {
                return LinkEnd::Failed(format!("edit failed: {e}"));
            }
            if let (Some((_, period, offset, length)), false) = (rate, rate_started) {
                if *ctx.go.borrow() && self.engine.is_connected() {
                    rate_started = true;
                    let start = tokio::time::Instant::now() + offset;
                    let mut t = tokio::time::interval_at(start, period);
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    ticker = Some((t, Instant::now() + offset + length));
                }
            }
            let mut sent = false;
            while let Some(frame) = self.engine.poll_transmit() {
                if let Err(e) = ws.feed(WsMessage::Binary(frame.into())).await {
                    return LinkEnd::Dropped(format!("send: {e}"));
                }
                self.counters.frames_tx.fetch_add(1, Ordering::Relaxed);
                sent = true;
            }
            while self.engine.poll_store().is_some() {}
            if sent {
                if let Err(e) = ws.flush().await {
                    return LinkEnd::Dropped(format!("flush: {e}"));
                }
            }
            self.publish(true);
            let waiting_for_go = rate.is_some() && !rate_started;
            tokio::select! {
                changed = ctx.stop.changed() => {
                    if changed.is_err() || *ctx.stop.borrow() {
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                            let _ = ws.close(None).await;
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                        return LinkEnd::Stopped;
                    }
                }
                _ = ctx.go.changed(), if waiting_for_go => {}
                msg = ws.next() => match msg {
                    Some(Ok(WsMessage::Binary(bytes))) => {
                        self.counters.frames_rx.fetch_add(1, Ordering::Relaxed);
                        self.on_frame(&bytes, registry);
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                        return LinkEnd::Dropped(match frame {
                            Some(f) => format!("closed by the server: {} {}", u16::from(f.code), f.reason),
                            None => "closed by the server".to_owned(),
                        });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return LinkEnd::Dropped(format!("socket error: {e}")),
                    None => return LinkEnd::Dropped("socket ended".to_owned()),
                },
                _ = tick(&mut ticker) => {
                    let Some((doc, ..)) = rate else { continue };
                    let over = ticker.as_ref().is_some_and(|(_, until)| Instant::now() >= *until);
                    if over {
                        ticker = None;
                        self.mark(|p| p.plan_done = true);
                    } else if let Err(e) = self.blind(&doc, registry) {
                        return LinkEnd::Failed(format!("edit failed: {e}"));
                    }
                }
            }
        }
    }
}

async fn tick(ticker: &mut Option<(tokio::time::Interval, Instant)>) {
    match ticker {
        Some((t, _)) => {
            t.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Waits 1–2 s before a reconnect (jittered, as real clients do). True if
/// told to stop meanwhile.
async fn backoff(stop: &mut watch::Receiver<bool>, rng: &mut StdRng) -> bool {
    let wait = Duration::from_millis(rng.random_range(1000..2000));
    tokio::select! {
        _ = tokio::time::sleep(wait) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

enum LinkEnd {
    Stopped,
    Dropped(String),
    /// The generator itself failed (an edit it could not make).
    Failed(String),
}

#[derive(Debug)]
struct SessionCtx {
    url: Arc<str>,
    stop: watch::Receiver<bool>,
    go: watch::Receiver<bool>,
    reconnect: bool,
    registry: Option<Arc<Registry>>,
    dial_limit: Option<Arc<Semaphore>>,
}

/// How to run a fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub url: String,
    pub registry: Option<Arc<Registry>>,
    /// At most this many connects in flight (setup phases); `None`: all at
    /// once (the storm).
    pub dial_limit: Option<usize>,
    pub reconnect: bool,
}

/// Many devices, each in its own task.
#[derive(Debug)]
pub struct Fleet {
    tasks: Vec<JoinHandle<(SimDevice, Result<(), LoadError>)>>,
    progress: Vec<Arc<Mutex<Progress>>>,
    stop: watch::Sender<bool>,
    go: watch::Sender<bool>,
    pub started: Instant,
}

/// Whether every device satisfied a predicate by a deadline.
#[derive(Debug, Clone, Copy)]
pub struct Waited {
    /// How many devices did not.
    pub missing: usize,
    pub elapsed: Duration,
}

impl Fleet {
    pub fn launch(devices: Vec<SimDevice>, options: &FleetOptions) -> Fleet {
        let (stop, stop_rx) = watch::channel(false);
        let (go, go_rx) = watch::channel(false);
        let url: Arc<str> = Arc::from(options.url.as_str());
        let dial_limit = options.dial_limit.map(|n| Arc::new(Semaphore::new(n)));
        let mut tasks = Vec::with_capacity(devices.len());
        let mut progress = Vec::with_capacity(devices.len());
        let started = Instant::now();
        for mut device in devices {
            progress.push(device.progress());
            let ctx = SessionCtx {
                url: url.clone(),
                stop: stop_rx.clone(),
                go: go_rx.clone(),
                reconnect: options.reconnect,
                registry: options.registry.clone(),
                dial_limit: dial_limit.clone(),
            };
            device.mark(|p| p.plan_done = false);
            device.publish(false);
            tasks.push(tokio::spawn(async move {
                let result = device.session(ctx).await;
                (device, result)
            }));
        }
        Fleet {
            tasks,
            progress,
            stop,
            go,
            started,
        }
    }

    /// Starts the rate plans.
    pub fn go(&self) {
        let _ = self.go.send(true);
    }

    pub fn len(&self) -> usize {
        self.progress.len()
    }

    /// A copy of every device's progress.
    pub fn snapshot(&self) -> Vec<Progress> {
        self.progress.iter().map(|p| lock(p).clone()).collect()
    }

    /// Polls until `pred` holds for every device, or `timeout`.
    pub async fn wait_all(&self, timeout: Duration, pred: impl Fn(&Progress) -> bool) -> Waited {
        let start = Instant::now();
        let poll = if self.len() > 1000 {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(10)
        };
        loop {
            let missing = self.progress.iter().filter(|p| !pred(&lock(p))).count();
            if missing == 0
                || start.elapsed() >= timeout
                || self.tasks.iter().all(|t| t.is_finished())
            {
                return Waited {
                    missing,
                    elapsed: start.elapsed(),
                };
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Closes every socket and gives the devices back, with how each
    /// session ended.
    pub async fn stop(self) -> Result<Vec<(SimDevice, Result<(), LoadError>)>, LoadError> {
        let _ = self.stop.send(true);
        let mut out = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            let joined = task
                .await
                .map_err(|e| LoadError::other(format!("a device task failed: {e}")))?;
            out.push(joined);
        }
        Ok(out)
    }
}

/// Every document at its expected heads.
pub fn at_heads(p: &Progress, expected: &BTreeMap<DocumentId, Vec<ChangeHash>>) -> bool {
    !p.heads.is_empty()
        && p.heads
            .iter()
            .all(|(d, h)| expected.get(d).is_some_and(|e| e == h))
}

/// Converged: nothing pending, plan done, every document at its expected heads.
pub fn converged(p: &Progress, expected: &BTreeMap<DocumentId, Vec<ChangeHash>>) -> bool {
    p.pending == 0 && p.plan_done && at_heads(p, expected)
}
