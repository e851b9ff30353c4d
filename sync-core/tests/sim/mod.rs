//! A deterministic simulated network: several devices and one server, all in
//! one thread, driven by a seeded RNG with a bound on steps.
//!
//! The server side composes the same pieces the real server does
//! (`ServerSession` per connection, `DocSync` per document, a FIFO persist
//! queue standing in for group commit), so the durability gate is exercised:
//! a server "crash" loses everything not yet persisted, and the harness
//! checks that no device ever saw such a change acknowledged.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use automerge::{ActorId, Automerge, ChangeHash};
use rand::{Rng, RngCore};
use sync_core::engine::{
    Access, Device, DocSync, PersistRequest, Policy, ServerSession, SessionEvent,
};
use sync_core::guard::Limits;
use sync_core::ids::{DocumentId, PeerId, StorageId};

pub struct AllowAll;
impl Policy for AllowAll {
    fn access(&self, _peer: &PeerId, _doc: &DocumentId) -> Access {
        Access::Write
    }
}

enum Durable {
    Changes(DocumentId, PersistRequest),
    State(DocumentId, PeerId, Vec<u8>),
}

/// The server, made of the engine's server-side pieces.
pub struct SimServer {
    pub peer: PeerId,
    pub storage: StorageId,
    limits: Limits,
    docs: BTreeMap<DocumentId, DocSync>,
    /// What survived fsync: change bytes per document, and sync states.
    durable: BTreeMap<DocumentId, Vec<Vec<u8>>>,
    durable_hashes: BTreeMap<DocumentId, BTreeSet<ChangeHash>>,
    durable_states: BTreeMap<(PeerId, DocumentId), Vec<u8>>,
    /// Written but not yet fsynced, in order.
    queue: VecDeque<Durable>,
    sessions: BTreeMap<usize, ServerSession>,
    /// Durable heads last announced per (connection, document).
    heads_sent: BTreeMap<(usize, DocumentId), Vec<String>>,
    pub crashes: usize,
}

impl SimServer {
    pub fn new(limits: Limits) -> Self {
        Self {
            peer: PeerId::new("casesync-server").unwrap(),
            storage: StorageId::new("server-storage-1").unwrap(),
            limits,
            docs: BTreeMap::new(),
            durable: BTreeMap::new(),
            durable_hashes: BTreeMap::new(),
            durable_states: BTreeMap::new(),
            queue: VecDeque::new(),
            sessions: BTreeMap::new(),
            heads_sent: BTreeMap::new(),
            crashes: 0,
        }
    }

    /// Creates a document the way `POST /api/cases` will: durably, before
    /// anyone can see it.
    pub fn create_doc(&mut self, id: DocumentId, doc: &Automerge) {
        let changes: Vec<Vec<u8>> = doc
            .get_changes(&[])
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        let hashes = doc.get_changes(&[]).iter().map(|c| c.hash()).collect();
        self.durable.insert(id, changes);
        self.durable_hashes.insert(id, hashes);
    }

    fn load(&mut self, id: &DocumentId) -> Option<&mut DocSync> {
        if !self.docs.contains_key(id) {
            let changes = self.durable.get(id)?;
            let mut doc = Automerge::new();
            for c in changes {
                doc.load_incremental(c).unwrap();
            }
            // Paced, as the server's document actors are; the network step
            // that stands for `reply_wait` passing is `Sim::step_network`'s.
            let mut sync = DocSync::new(doc, self.limits.clone());
            sync.set_pacing(true);
            self.docs.insert(*id, sync);
        }
        self.docs.get_mut(id)
    }

    pub fn is_durable(&self, id: &DocumentId, hash: &ChangeHash) -> bool {
        self.durable_hashes
            .get(id)
            .is_some_and(|s| s.contains(hash))
    }

    pub fn connect(&mut self, conn: usize, peer: PeerId) {
        let session = ServerSession::new(
            self.peer.clone(),
            self.storage.clone(),
            peer,
            self.limits.clone(),
        );
        self.sessions.insert(conn, session);
    }

    pub fn disconnect(&mut self, conn: usize) {
        let Some(session) = self.sessions.remove(&conn) else {
            return;
        };
        self.heads_sent.retain(|(c, _), _| *c != conn);
        let peer = session.peer().clone();
        for (id, d) in self.docs.iter_mut() {
            if let Some(state) = d.remove_peer(&peer) {
                // Sync state goes through the same ordered queue as the
                // changes, as in the real store.
                self.queue
                    .push_back(Durable::State(*id, peer.clone(), state));
            }
        }
    }

    pub fn handle_frame(&mut self, conn: usize, frame: &[u8]) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        let events = match session.handle_frame(frame, &AllowAll) {
            Ok(e) => e,
            Err(e) => panic!("honest device refused: {e}"),
        };
        let peer = session.peer().clone();
        for ev in events {
            if let SessionEvent::Sync { document, data, .. } = ev {
                let saved = self.durable_states.get(&(peer.clone(), document)).cloned();
                let Some(d) = self.load(&document) else {
                    if let Some(s) = self.sessions.get_mut(&conn) {
                        s.send_doc_unavailable(document);
                    }
                    continue;
                };
                if !d.has_peer(&peer) {
                    d.add_peer(peer.clone(), saved.as_deref(), false);
                }
                d.handle_sync(&peer, &data).unwrap();
                for req in d.take_persist_requests() {
                    self.queue.push_back(Durable::Changes(document, req));
                }
            }
        }
        self.route_outgoing();
    }

    /// Commits the oldest `n` queued writes (an fsync).
    pub fn fsync(&mut self, n: usize) {
        for _ in 0..n {
            let Some(item) = self.queue.pop_front() else {
                break;
            };
            match item {
                Durable::Changes(id, req) => {
                    let log = self.durable.entry(id).or_default();
                    let hashes = self.durable_hashes.entry(id).or_default();
                    for c in &req.changes {
                        if hashes.insert(c.hash()) {
                            log.push(c.raw_bytes().to_vec());
                        }
                    }
                    if let Some(d) = self.docs.get_mut(&id) {
                        d.handle_persisted(req.token);
                    }
                }
                Durable::State(id, peer, state) => {
                    self.durable_states.insert((peer, id), state);
                }
            }
        }
        self.route_outgoing();
    }

    pub fn has_queued_writes(&self) -> bool {
        !self.queue.is_empty()
    }

    fn route_outgoing(&mut self) {
        for (id, d) in self.docs.iter_mut() {
            for (peer, data) in d.poll_outgoing() {
                if let Some(s) = self.sessions.values_mut().find(|s| *s.peer() == peer) {
                    s.send_sync(*id, data);
                }
            }
            // Tell subscribed peers what is durable now (the device's "saved
            // to the server" signal); a paced peer hears of it later, as
            // from the server's actor.
            let durable: Vec<String> = d
                .durable_heads()
                .iter()
                .map(sync_core::protocol::encode_head)
                .collect();
            for (conn, s) in self.sessions.iter_mut() {
                if s.wants_server_heads() && d.has_peer(s.peer()) && !d.awaiting_reply(s.peer()) {
                    let last = self.heads_sent.entry((*conn, *id)).or_default();
                    if *last != durable {
                        last.clone_from(&durable);
                        s.send_remote_heads(*id, durable.clone(), 0);
                    }
                }
            }
        }
    }

    /// (document, peer) pairs held back by pacing, waiting for an answer.
    pub fn awaiting(&self) -> Vec<(DocumentId, PeerId)> {
        let mut out = Vec::new();
        for (id, d) in &self.docs {
            for peer in d.peers() {
                if d.awaiting_reply(peer) {
                    out.push((*id, peer.clone()));
                }
            }
        }
        out
    }

    /// `reply_wait` passes for one paced peer: the server stops waiting
    /// for its answer and sends what it has.
    pub fn reply_wait_passes(&mut self, id: &DocumentId, peer: &PeerId) {
        if let Some(d) = self.docs.get_mut(id) {
            d.stop_waiting(peer);
        }
        self.route_outgoing();
    }

    pub fn poll_transmit(&mut self, conn: usize) -> Option<Vec<u8>> {
        self.sessions.get_mut(&conn)?.poll_transmit()
    }

    /// Power cut: memory and unsynced writes are gone; sessions die.
    pub fn crash(&mut self) {
        self.crashes += 1;
        self.docs.clear();
        self.queue.clear();
        self.sessions.clear();
        self.heads_sent.clear();
    }

    pub fn doc(&mut self, id: &DocumentId) -> Automerge {
        self.load(id).unwrap().doc().clone()
    }
}

/// A simulated phone.
pub struct SimDevice {
    pub engine: Device,
    pub online: bool,
    /// Frames in flight on the current connection.
    pub up: VecDeque<Vec<u8>>,
    pub down: VecDeque<Vec<u8>>,
    /// Every change this device ever made, to check nothing was lost.
    pub made: BTreeSet<ChangeHash>,
}

pub struct Sim<R: RngCore> {
    pub rng: R,
    pub server: SimServer,
    pub devices: Vec<SimDevice>,
    pub docs: Vec<DocumentId>,
    pub steps: usize,
    /// Steps taken while some peer was paced (waiting for its answer).
    pub paced_steps: usize,
}

impl<R: RngCore> Sim<R> {
    pub fn new(rng: R, n_devices: usize, docs: Vec<(DocumentId, Automerge)>) -> Self {
        let limits = Limits::default();
        let mut server = SimServer::new(limits.clone());
        for (id, d) in &docs {
            server.create_doc(*id, d);
        }
        let devices = (0..n_devices)
            .map(|i| {
                let peer = PeerId::new(format!("user:relative{i}:phone")).unwrap();
                let storage = StorageId::new(format!("phone-storage-{i}")).unwrap();
                let mut engine = Device::new(peer, Some(storage), limits.clone());
                for (id, _) in &docs {
                    let actor = ActorId::from(vec![i as u8 + 1; 16]);
                    engine.open(*id, Automerge::new().with_actor(actor), None);
                }
                SimDevice {
                    engine,
                    online: false,
                    up: VecDeque::new(),
                    down: VecDeque::new(),
                    made: BTreeSet::new(),
                }
            })
            .collect();
        Self {
            rng,
            server,
            devices,
            docs: docs.into_iter().map(|(id, _)| id).collect(),
            steps: 0,
            paced_steps: 0,
        }
    }

    pub fn go_online(&mut self, i: usize) {
        let dev = &mut self.devices[i];
        if dev.online {
            return;
        }
        dev.online = true;
        dev.up.clear();
        dev.down.clear();
        self.server.connect(i, dev.engine.peer_id().clone());
        dev.engine.connect();
    }

    pub fn go_offline(&mut self, i: usize) {
        let dev = &mut self.devices[i];
        if !dev.online {
            return;
        }
        dev.online = false;
        dev.up.clear();
        dev.down.clear();
        dev.engine.disconnect();
        self.server.disconnect(i);
    }

    /// Local edit on device `i`, recorded for the "nothing lost" check.
    pub fn edit(&mut self, i: usize, doc: usize, f: impl FnOnce(&mut Automerge)) {
        let id = self.docs[doc];
        let dev = &mut self.devices[i];
        let hash = dev
            .engine
            .edit(&id, |d| {
                let before = d.get_heads();
                f(d);
                let after = d.get_heads();
                (before != after)
                    .then(|| d.get_last_local_change().map(|c| c.hash()))
                    .flatten()
            })
            .unwrap();
        if let Some(h) = hash {
            dev.made.insert(h);
        }
    }

    /// Moves frames out of engines into the wires.
    fn pump(&mut self) {
        for (i, dev) in self.devices.iter_mut().enumerate() {
            while dev.engine.poll_store().is_some() {}
            while let Some(ev) = dev.engine.poll_event() {
                if let sync_core::engine::DeviceEvent::ServerError(e) = ev {
                    panic!("server error to device {i}: {e}");
                }
            }
            if !dev.online {
                continue;
            }
            while let Some(f) = dev.engine.poll_transmit() {
                dev.up.push_back(f);
            }
            while let Some(f) = self.server.poll_transmit(i) {
                dev.down.push_back(f);
            }
        }
    }

    /// Delivers device `i`'s pending uplink frames only (no fsync, no
    /// downlink), to hold changes in the server's unsynced queue.
    pub fn pump_only_uplink(&mut self, i: usize) {
        self.pump();
        while let Some(f) = self.devices[i].up.pop_front() {
            self.server.handle_frame(i, &f);
        }
        self.pump();
        self.check_acks_durable();
    }

    /// One random network/server step. Returns false if nothing could move.
    pub fn step_network(&mut self) -> bool {
        self.pump();
        let mut moves: Vec<(usize, bool)> = Vec::new();
        for (i, d) in self.devices.iter().enumerate() {
            if !d.up.is_empty() {
                moves.push((i, true));
            }
            if !d.down.is_empty() {
                moves.push((i, false));
            }
        }
        let fsync = self.server.has_queued_writes();
        // A paced peer's `reply_wait` can run out at any moment, but only
        // counts as a move while nothing else can: timers fire in a
        // random order with the network, yet a quiet system with a peer
        // still paced is not quiescent.
        let awaiting = self.server.awaiting();
        if !awaiting.is_empty() {
            self.paced_steps += 1;
        }
        if moves.is_empty() && !fsync {
            if awaiting.is_empty() {
                return false;
            }
            self.steps += 1;
            let (id, peer) = &awaiting[self.rng.random_range(0..awaiting.len())];
            self.server.reply_wait_passes(id, peer);
            self.pump();
            self.check_acks_durable();
            return true;
        }
        self.steps += 1;
        let timers = usize::from(!awaiting.is_empty() && self.rng.random_range(0..8) == 0);
        let pick = self
            .rng
            .random_range(0..moves.len() + usize::from(fsync) + timers);
        if pick == moves.len() + usize::from(fsync) {
            let (id, peer) = &awaiting[self.rng.random_range(0..awaiting.len())];
            self.server.reply_wait_passes(id, peer);
        } else if pick == moves.len() {
            let n = self.rng.random_range(1..=3);
            self.server.fsync(n);
        } else {
            let (i, up) = moves[pick];
            if up {
                let f = self.devices[i].up.pop_front().unwrap();
                self.server.handle_frame(i, &f);
            } else {
                let f = self.devices[i].down.pop_front().unwrap();
                self.devices[i].engine.handle_frame(&f).unwrap();
            }
        }
        self.pump();
        self.check_acks_durable();
        true
    }

    /// The durability invariant: everything a device saw acknowledged is
    /// in the server's durable store.
    pub fn check_acks_durable(&self) {
        for (i, dev) in self.devices.iter().enumerate() {
            for id in &self.docs {
                for h in dev.engine.acked_heads(id) {
                    assert!(
                        self.server.is_durable(id, h),
                        "device {i} saw {h} acknowledged but it is not durable"
                    );
                }
            }
        }
    }

    /// Runs network steps until nothing moves, failing past `bound` steps
    /// (a livelock is a bug).
    pub fn run_until_quiescent(&mut self, bound: usize) {
        let mut n = 0;
        while self.step_network() {
            n += 1;
            assert!(n <= bound, "no quiescence after {bound} steps");
        }
    }

    /// Everyone online, run to quiescence, then assert convergence and that
    /// every change any device made is everywhere.
    pub fn heal_and_check(&mut self, bound: usize) {
        for i in 0..self.devices.len() {
            self.go_online(i);
        }
        self.run_until_quiescent(bound);
        for id in self.docs.clone() {
            let server_doc = self.server.doc(&id);
            let server_heads = server_doc.get_heads();
            for (i, dev) in self.devices.iter().enumerate() {
                let d = dev.engine.doc(&id).unwrap();
                assert_eq!(
                    d.get_heads(),
                    server_heads,
                    "device {i} heads differ on {id}"
                );
                assert_eq!(
                    sync_core::model::read_case(d).ok(),
                    sync_core::model::read_case(&server_doc).ok(),
                    "device {i} reads a different case on {id}"
                );
                assert_eq!(
                    dev.engine.unacknowledged(&id),
                    0,
                    "device {i} has unacked changes"
                );
            }
            for dev in &self.devices {
                for h in &dev.made {
                    if dev
                        .engine
                        .doc(&id)
                        .unwrap()
                        .get_change_meta_by_hash(h)
                        .is_some()
                    {
                        assert!(
                            server_doc.get_change_meta_by_hash(h).is_some(),
                            "change {h} was lost"
                        );
                        assert!(self.server.is_durable(&id, h), "change {h} not durable");
                    }
                }
            }
        }
    }
}

/// A deterministic document id for tests.
pub fn doc_id(n: u8) -> DocumentId {
    DocumentId::from_bytes([n; 16])
}

pub fn random_text<R: Rng>(rng: &mut R, max: usize) -> String {
    const ALPHABET: &[char] = &['а', 'б', 'в', 'x', 'y', 'z', ' ', 'і', 'ї', '1'];
    let n = rng.random_range(1..=max);
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect()
}
