//! One document synced with many peers, with the durability gate.
//!
//! [`DocSync`] owns an automerge document and one sync [`State`] per peer. It
//! is used by the server's document actor (many peers) and by the device (one
//! peer: the server).
//!
//! **Durability gate.** Every change that enters the document (from a peer or
//! from a local edit) is handed out as a [`PersistRequest`]. Until the driver
//! reports it durable with [`DocSync::handle_persisted`], no sync message is
//! generated for any peer. A sync message carries our heads, and heads that
//! include a change tell the peer the change is stored; so the server never
//! acknowledges a change before it is committed.

use std::collections::{BTreeMap, BTreeSet};

use automerge::sync::State;
use automerge::{Automerge, Change, ChangeHash};

use crate::guard::{self, GuardError, KnownActors, Limits};
use crate::ids::PeerId;

/// Changes that must be stored durably before anything is acknowledged.
#[derive(Debug)]
pub struct PersistRequest {
    /// Pass back to [`DocSync::handle_persisted`] once stored.
    pub token: u64,
    /// The new changes, in an order where dependencies come first.
    pub changes: Vec<Change>,
    /// Which peer delivered them; `None` for local edits.
    pub from: Option<PeerId>,
}

#[derive(Debug)]
struct PeerSync {
    state: State,
    /// The peer may read but its changes are not applied.
    read_only: bool,
    /// The document's heads when the last message for this peer was
    /// generated, and whether a message from it arrived since. With the
    /// same heads and nothing received, automerge has nothing to say (it
    /// returns `None`: the last message is in flight), but finding that
    /// out costs it a Bloom filter of every change since the shared heads;
    /// on a busy document with many peers that was most of the server's
    /// time (the reconnect storm's profile).
    generated_at: Option<Vec<ChangeHash>>,
    heard_since: bool,
    /// With pacing on: the last message sent to this peer carried changes
    /// and the peer has not answered since (see [`DocSync::set_pacing`]).
    awaiting_reply: bool,
}

impl PeerSync {
    fn new(state: State, read_only: bool) -> Self {
        Self {
            state,
            read_only,
            generated_at: None,
            heard_since: true,
            awaiting_reply: false,
        }
    }

    /// Whether automerge could have anything to send this peer now.
    fn may_have_news(&self, heads: &[ChangeHash]) -> bool {
        self.heard_since || self.generated_at.as_deref() != Some(heads)
    }

    fn generated(&mut self, heads: &[ChangeHash]) {
        self.heard_since = false;
        self.generated_at = Some(heads.to_vec());
    }
}

/// A document and its per-peer sync states.
#[derive(Debug)]
pub struct DocSync {
    doc: Automerge,
    peers: BTreeMap<PeerId, PeerSync>,
    limits: Limits,
    next_token: u64,
    /// Tokens handed out and not yet reported durable.
    in_flight: BTreeSet<u64>,
    /// Persist requests not yet taken by the driver.
    pending: Vec<PersistRequest>,
    /// Heads of the document as of the last moment all its changes were
    /// durable.
    durable_heads: Vec<ChangeHash>,
    /// The document's actors, for the guard that refuses changes naming
    /// unknown ones (see `guard::KnownActors`).
    known: KnownActors,
    /// See [`Self::set_pacing`].
    pacing: bool,
}

impl DocSync {
    /// Wraps a document whose changes are all durable already (loaded from
    /// storage, or fresh).
    pub fn new(doc: Automerge, limits: Limits) -> Self {
        let durable_heads = doc.get_heads();
        let known = KnownActors::from_doc(&doc);
        Self {
            known,
            doc,
            peers: BTreeMap::new(),
            limits,
            next_token: 0,
            in_flight: BTreeSet::new(),
            pending: Vec::new(),
            durable_heads,
            pacing: false,
        }
    }

    /// Paces what goes to each peer by its answers: once a message that
    /// carries changes has gone to a peer, nothing more is generated for it
    /// until it answers (an automerge peer answers every message that gives
    /// it changes, with its new heads) or the driver gives up waiting
    /// ([`Self::stop_waiting`]; this crate has no clock). Meanwhile the
    /// document may move on; the peer then gets one message with
    /// everything new instead of one per step. Without it, a server sent
    /// every device a message each time the document's durable heads moved,
    /// whether or not the device had read the last one: under a reconnect
    /// storm, 44–55 messages per device and case, each with up to 2 KB of
    /// heads and Bloom filter besides its changes (BENCHMARKS.md).
    pub fn set_pacing(&mut self, on: bool) {
        self.pacing = on;
        if !on {
            for p in self.peers.values_mut() {
                p.awaiting_reply = false;
            }
        }
    }

    /// True while pacing holds messages for `peer` back: it has not answered
    /// the last message with changes it was sent.
    pub fn awaiting_reply(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.awaiting_reply)
    }

    /// Stops waiting for `peer`'s answer: the next poll may send it a
    /// message again (the driver's time-out, for a peer that had nothing to
    /// answer or whose answer is slow).
    pub fn stop_waiting(&mut self, peer: &PeerId) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.awaiting_reply = false;
        }
    }

    pub fn doc(&self) -> &Automerge {
        &self.doc
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Heads as of the last time every change was durable.
    pub fn durable_heads(&self) -> &[ChangeHash] {
        &self.durable_heads
    }

    /// True while some change is not yet durable.
    pub fn is_persisting(&self) -> bool {
        !self.in_flight.is_empty() || !self.pending.is_empty()
    }

    pub fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.keys()
    }

    pub fn has_peer(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Starts syncing with a peer. `persisted` is what [`Self::remove_peer`]
    /// returned at the end of the peer's previous connection, if anything;
    /// broken or hostile persisted state is dropped in favour of a fresh one.
    pub fn add_peer(&mut self, peer: PeerId, persisted: Option<&[u8]>, read_only: bool) {
        let mut state = persisted
            .and_then(|b| guard::decode_sync_state(b, &self.limits).ok())
            .unwrap_or_default();
        if read_only {
            state.set_read_only(true);
        }
        self.peers.insert(peer, PeerSync::new(state, read_only));
    }

    /// Stops syncing with a peer, returning the part of its sync state worth
    /// keeping for its next connection (automerge keeps only the shared
    /// heads across connections).
    pub fn remove_peer(&mut self, peer: &PeerId) -> Option<Vec<u8>> {
        self.peers.remove(peer).map(|p| p.state.encode())
    }

    /// The persistable part of a connected peer's sync state.
    pub fn encode_peer_state(&self, peer: &PeerId) -> Option<Vec<u8>> {
        self.peers.get(peer).map(|p| p.state.encode())
    }

    /// Applies a sync message from a peer (through the guards). New changes
    /// become a [`PersistRequest`].
    ///
    /// On `Err(GuardError::AutomergePanicked)` the document may be
    /// inconsistent: the caller must drop this `DocSync` and reload from
    /// storage.
    pub fn handle_sync(&mut self, peer: &PeerId, data: &[u8]) -> Result<(), DocSyncError> {
        let heads_before = self.doc.get_heads();
        let entry = self
            .peers
            .get_mut(peer)
            .ok_or_else(|| DocSyncError::UnknownPeer(peer.clone()))?;
        entry.heard_since = true;
        if let Err(e) = guard::receive_sync_message_known(
            &mut self.doc,
            &mut entry.state,
            data,
            &self.limits,
            &mut self.known,
        ) {
            if matches!(
                e,
                GuardError::AutomergePanicked
                    | GuardError::NotReproducible
                    | GuardError::DocumentTooManyOps { .. }
            ) {
                // The document may be inconsistent now: poison it so the
                // driver reloads it from storage.
                self.in_flight.insert(u64::MAX);
            }
            return Err(e.into());
        }
        // Once the peer has everything we sent, automerge empties its record
        // of sent changes with `retain`, which keeps the set's root node
        // (about 370 bytes) allocated. Every idle peer of every document
        // would hold one.
        if entry.state.sent_hashes.is_empty() {
            entry.state.sent_hashes = BTreeSet::new();
        }
        // The peer answered what it was sent once its heads cover every
        // change sent to it (automerge has then trimmed them from
        // `sent_hashes`), or when it asks for something. A message it sent
        // before ours arrived, which a busy document may apply after
        // sending ours, answers nothing and releases nothing.
        let asks = entry
            .state
            .their_need
            .as_ref()
            .is_some_and(|need| !need.is_empty());
        if entry.state.sent_hashes.is_empty() || asks {
            entry.awaiting_reply = false;
        }
        if entry.read_only {
            // automerge's read-only state ignores changes; nothing to persist.
            return Ok(());
        }
        self.queue_new_changes(&heads_before, Some(peer.clone()))?;
        Ok(())
    }

    /// Runs a local edit. `f` gets the document; whatever changes it commits
    /// are queued for persistence like a peer's.
    pub fn edit<T>(&mut self, f: impl FnOnce(&mut Automerge) -> T) -> T {
        let heads_before = self.doc.get_heads();
        let out = f(&mut self.doc);
        self.known.learn(&self.doc, &heads_before);
        // A failure poisons the document, which the driver sees.
        let _ = self.queue_new_changes(&heads_before, None);
        out
    }

    /// Applies stored or accepted change bytes through the guards, queued
    /// for persistence like a local edit.
    pub fn load_changes(&mut self, bytes: &[u8]) -> Result<usize, GuardError> {
        let heads_before = self.doc.get_heads();
        let result = guard::load_changes_known(&mut self.doc, bytes, &self.limits, &mut self.known);
        if matches!(
            result,
            Err(GuardError::AutomergePanicked
                | GuardError::NotReproducible
                | GuardError::DocumentTooManyOps { .. })
        ) {
            self.in_flight.insert(u64::MAX);
        }
        self.queue_new_changes(&heads_before, None)?;
        result
    }

    /// Queues the changes since `heads_before` for persistence. automerge
    /// 0.12 can accept a message and then panic listing the changes it
    /// accepted (`collector.rs`, a dependency it lost; found by fuzzing), or
    /// list one as other bytes than it received ([`guard::new_changes`]):
    /// then the document is poisoned, as after any panic inside automerge.
    fn queue_new_changes(
        &mut self,
        heads_before: &[ChangeHash],
        from: Option<PeerId>,
    ) -> Result<(), GuardError> {
        if self.doc.get_heads() == heads_before {
            return Ok(());
        }
        let changes: Vec<Change> = match guard::new_changes(&self.doc, heads_before) {
            Ok(changes) => changes,
            Err(e) => {
                self.in_flight.insert(u64::MAX);
                return Err(e);
            }
        };
        if changes.is_empty() {
            return Ok(());
        }
        let token = self.next_token;
        self.next_token += 1;
        self.in_flight.insert(token);
        self.pending.push(PersistRequest {
            token,
            changes,
            from,
        });
        Ok(())
    }

    /// Changes the driver must store now.
    pub fn take_persist_requests(&mut self) -> Vec<PersistRequest> {
        std::mem::take(&mut self.pending)
    }

    /// Reports a persist request durable. When nothing else is in flight the
    /// gate opens and [`Self::poll_outgoing`] produces messages again.
    pub fn handle_persisted(&mut self, token: u64) {
        self.in_flight.remove(&token);
        if !self.is_persisting() {
            self.durable_heads = self.doc.get_heads();
        }
    }

    /// Reports a persist request failed. The changes stay in memory but are
    /// not acknowledged; the caller should drop this document and reload it
    /// from storage, after which the peers re-send what was lost.
    pub fn handle_persist_failed(&mut self, token: u64) {
        self.in_flight.remove(&token);
        // Keep the gate closed for good: a token that can never complete.
        self.in_flight.insert(u64::MAX);
    }

    /// True when the gate is closed for good: after a storage failure, or
    /// after automerge failed on peer input. The driver must drop this
    /// document and reload it from storage.
    pub fn is_poisoned(&self) -> bool {
        self.in_flight.contains(&u64::MAX)
    }

    /// Sync messages to send, one per peer at most, as raw automerge sync
    /// message bytes. Empty while any change is not yet durable.
    pub fn poll_outgoing(&mut self) -> Vec<(PeerId, Vec<u8>)> {
        if self.is_persisting() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut failed = false;
        let heads = self.doc.get_heads();
        let pacing = self.pacing;
        for (peer, p) in self.peers.iter_mut() {
            if p.awaiting_reply || !p.may_have_news(&heads) {
                continue;
            }
            p.generated(&heads);
            match guard::generate_sync_message(&self.doc, &mut p.state) {
                Ok(Some(msg)) => {
                    p.awaiting_reply = pacing && !msg.changes.is_empty();
                    out.push((peer.clone(), msg.encode()))
                }
                Ok(None) => {}
                // A hostile state made automerge panic: stop serving this
                // document; the driver reloads it from storage.
                Err(_) => failed = true,
            }
        }
        if failed {
            self.in_flight.insert(u64::MAX);
            return Vec::new();
        }
        out
    }

    /// Like [`Self::poll_outgoing`] for one peer.
    pub fn poll_outgoing_for(&mut self, peer: &PeerId) -> Option<Vec<u8>> {
        if self.is_persisting() {
            return None;
        }
        let heads = self.doc.get_heads();
        let p = self.peers.get_mut(peer)?;
        if p.awaiting_reply || !p.may_have_news(&heads) {
            return None;
        }
        p.generated(&heads);
        match guard::generate_sync_message(&self.doc, &mut p.state) {
            Ok(m) => m.map(|m| {
                p.awaiting_reply = self.pacing && !m.changes.is_empty();
                m.encode()
            }),
            Err(_) => {
                self.in_flight.insert(u64::MAX);
                None
            }
        }
    }

    /// The heads the peer is known to have, from its last sync message.
    pub fn peer_heads(&self, peer: &PeerId) -> Option<&[ChangeHash]> {
        self.peers
            .get(peer)
            .and_then(|p| p.state.their_heads.as_deref())
    }

    /// Heads both sides are known to share.
    pub fn shared_heads(&self, peer: &PeerId) -> Option<&[ChangeHash]> {
        self.peers
            .get(peer)
            .map(|p| p.state.shared_heads.as_slice())
    }

    /// Drops everything and returns the document; for unloading.
    pub fn into_doc(self) -> Automerge {
        self.doc
    }
}

/// Why a sync message was not applied.
#[derive(Debug, thiserror::Error)]
pub enum DocSyncError {
    #[error("peer {0} has not opened this document")]
    UnknownPeer(PeerId),
    #[error(transparent)]
    Guard(#[from] GuardError),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use automerge::sync::{Message, SyncDoc};
    use automerge::transaction::Transactable;
    use automerge::ROOT;

    fn peer() -> PeerId {
        PeerId::new("user:olena:phone").unwrap()
    }

    /// A server-side document with one change, and a phone (a plain
    /// automerge document) that has nothing and has said so.
    fn server_and_phone(pacing: bool) -> (DocSync, Automerge, State) {
        let mut doc = Automerge::new();
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(ROOT, "unit", "72nd brigade")?;
            Ok(())
        })
        .unwrap();
        let mut server = DocSync::new(doc, Limits::default());
        server.set_pacing(pacing);
        server.add_peer(peer(), None, false);
        let phone = Automerge::new();
        let mut phone_state = State::new();
        let hello = phone.generate_sync_message(&mut phone_state).unwrap();
        server.handle_sync(&peer(), &hello.encode()).unwrap();
        (server, phone, phone_state)
    }

    /// A local edit on the server, made durable at once.
    fn edit(server: &mut DocSync, value: &str) {
        server.edit(|doc| {
            doc.transact::<_, _, automerge::AutomergeError>(|tx| {
                tx.put(ROOT, "rank", value)?;
                Ok(())
            })
            .unwrap();
        });
        for req in server.take_persist_requests() {
            server.handle_persisted(req.token);
        }
    }

    fn changes_in(data: &[u8]) -> usize {
        Message::decode(data).unwrap().changes.len()
    }

    #[test]
    fn pacing_holds_more_for_a_peer_until_it_answers() {
        let (mut server, mut phone, mut phone_state) = server_and_phone(true);
        let first = server.poll_outgoing_for(&peer()).expect("first message");
        assert_eq!(changes_in(&first), 1);
        assert!(server.awaiting_reply(&peer()));

        // The document moves on twice before the phone answers: nothing
        // more goes to it meanwhile.
        edit(&mut server, "sergeant");
        assert!(server.poll_outgoing_for(&peer()).is_none());
        edit(&mut server, "lieutenant");
        assert!(server.poll_outgoing().is_empty());

        // Its answer releases it, and one message carries both edits (as
        // changes, or as the whole document when that is smaller).
        phone
            .receive_sync_message(&mut phone_state, Message::decode(&first).unwrap())
            .unwrap();
        let answer = phone.generate_sync_message(&mut phone_state).unwrap();
        server.handle_sync(&peer(), &answer.encode()).unwrap();
        assert!(!server.awaiting_reply(&peer()));
        let second = server.poll_outgoing_for(&peer()).expect("the catch-up");
        assert!(changes_in(&second) > 0);
        phone
            .receive_sync_message(&mut phone_state, Message::decode(&second).unwrap())
            .unwrap();
        assert_eq!(phone.get_heads(), server.doc().get_heads());
    }

    #[test]
    fn a_message_the_peer_sent_before_ours_arrived_releases_nothing() {
        let (mut server, mut phone, mut phone_state) = server_and_phone(true);
        let first = server.poll_outgoing_for(&peer()).expect("first message");
        // Before the first message reaches it, the phone edits offline and
        // sends that: its heads cannot cover what it has not yet received.
        phone
            .transact::<_, _, automerge::AutomergeError>(|tx| {
                tx.put(ROOT, "call_sign", "Sokil")?;
                Ok(())
            })
            .unwrap();
        let crossing = phone.generate_sync_message(&mut phone_state).unwrap();
        server.handle_sync(&peer(), &crossing.encode()).unwrap();
        for req in server.take_persist_requests() {
            server.handle_persisted(req.token);
        }
        assert!(server.awaiting_reply(&peer()));
        assert!(server.poll_outgoing_for(&peer()).is_none());
        // Its real answer, once the first message arrived, does.
        phone
            .receive_sync_message(&mut phone_state, Message::decode(&first).unwrap())
            .unwrap();
        let answer = phone.generate_sync_message(&mut phone_state).unwrap();
        server.handle_sync(&peer(), &answer.encode()).unwrap();
        for req in server.take_persist_requests() {
            server.handle_persisted(req.token);
        }
        assert!(!server.awaiting_reply(&peer()));
    }

    #[test]
    fn a_driver_time_out_releases_a_peer_that_does_not_answer() {
        let (mut server, _phone, _state) = server_and_phone(true);
        assert!(server.poll_outgoing_for(&peer()).is_some());
        edit(&mut server, "sergeant");
        assert!(server.poll_outgoing_for(&peer()).is_none());
        server.stop_waiting(&peer());
        let next = server
            .poll_outgoing_for(&peer())
            .expect("sent after the wait");
        assert_eq!(changes_in(&next), 1);
    }

    #[test]
    fn without_pacing_each_step_goes_out_at_once() {
        let (mut server, _phone, _state) = server_and_phone(false);
        assert!(server.poll_outgoing_for(&peer()).is_some());
        assert!(!server.awaiting_reply(&peer()));
        edit(&mut server, "sergeant");
        let next = server.poll_outgoing_for(&peer()).expect("sent at once");
        assert!(changes_in(&next) > 0);
    }
}
