//! Which actor ids a change may name.
//!
//! Automerge 0.12 adds an actor to a document's actor table only when it
//! applies that actor's change with seq 1 (`insert_new_actors` in
//! `op_set2/change/batch.rs`), then looks up every actor a change names —
//! its author and its other actors — and unwraps. A change by an actor the
//! document has never seen, with seq 2 or more (or whose seq-1 change is not
//! applied with it), or naming another actor the document does not know,
//! therefore panics automerge. The fuzzers found it with one flipped byte of
//! an actor id.
//!
//! The guard models what automerge will do with a batch: the changes it
//! holds back for missing dependencies (`queued`) plus the new ones, of
//! which those whose dependencies are all present apply together. Every
//! actor a change of that ready set names must be known to the document or
//! the author of a seq-1 change in the ready set. A real peer never sends
//! anything else: a change's other actors are the authors of operations it
//! depends on, and an author's seq-1 change is a dependency of its later
//! ones.

use std::collections::{HashMap, HashSet};

use automerge::{Automerge, ChangeHash};

use super::chunk::ChangeHeader;
use super::GuardError;

/// The most held-back changes remembered. Past it, the oldest are
/// forgotten; a batch that needed one of them to introduce its actor is
/// then refused (and the peer re-sends it after reconnecting).
const MAX_QUEUED: usize = 10_000;

/// A change as the actor guard sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Named {
    pub(crate) hash: [u8; 32],
    pub(crate) deps: Vec<[u8; 32]>,
    pub(crate) author: Vec<u8>,
    pub(crate) seq: u64,
    pub(crate) others: Vec<Vec<u8>>,
}

impl From<&ChangeHeader> for Named {
    fn from(h: &ChangeHeader) -> Self {
        Self {
            hash: h.hash,
            deps: h.deps.clone(),
            author: h.author.clone(),
            seq: h.seq,
            others: h.others.clone(),
        }
    }
}

/// The actor ids of a document's changes, and the changes automerge holds
/// back for missing dependencies, kept beside the document so the check
/// costs no walk of its history per message.
#[derive(Debug, Clone, Default)]
pub struct KnownActors {
    set: HashSet<Vec<u8>>,
    queued: Vec<Named>,
}

impl KnownActors {
    /// Every author of `doc`'s changes.
    pub fn from_doc(doc: &Automerge) -> Self {
        let mut known = Self::default();
        known.learn(doc, &[]);
        known
    }

    /// Adds the authors of `doc`'s changes since `heads` (after applying
    /// changes), and forgets the held-back changes that got applied.
    pub fn learn(&mut self, doc: &Automerge, heads: &[ChangeHash]) {
        for meta in doc.get_changes_meta(heads) {
            self.set.insert(meta.actor.to_bytes().to_vec());
        }
        self.queued
            .retain(|c| doc.get_change_meta_by_hash(&ChangeHash(c.hash)).is_none());
    }

    pub fn contains(&self, actor: &[u8]) -> bool {
        self.set.contains(actor)
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Remembers the changes of a batch that automerge will hold back.
    fn hold(&mut self, held: Vec<Named>) {
        let known: HashSet<[u8; 32]> = self.queued.iter().map(|c| c.hash).collect();
        self.queued
            .extend(held.into_iter().filter(|c| !known.contains(&c.hash)));
        if self.queued.len() > MAX_QUEUED {
            let excess = self.queued.len() - MAX_QUEUED;
            self.queued.drain(..excess);
        }
    }
}

/// Checks a batch of incoming changes against `doc` (see the module
/// comment) and records the ones automerge will hold back.
pub(crate) fn check_batch(
    doc: &Automerge,
    batch: Vec<Named>,
    known: &mut KnownActors,
) -> Result<(), GuardError> {
    let in_doc = |h: &[u8; 32]| doc.get_change_meta_by_hash(&ChangeHash(*h)).is_some();
    // Candidates: held-back changes and the new ones, once each, minus what
    // the document already has.
    let mut candidates: HashMap<[u8; 32], Named> = HashMap::new();
    for c in known.queued.iter().cloned().chain(batch) {
        if !in_doc(&c.hash) {
            candidates.entry(c.hash).or_insert(c);
        }
    }
    // The ready set, as automerge computes it: dependencies all present,
    // in the document or ready themselves. A topological walk (each change
    // waits for a count of dependencies the document lacks), linear in the
    // changes and their dependencies: the fixed-point loop it replaces
    // rescanned every candidate until nothing changed, quadratic on a long
    // chain (5 of the 7 s a 20,000-change case took to load and serve).
    let mut ready: HashSet<[u8; 32]> = HashSet::new();
    let mut waiting: HashMap<[u8; 32], usize> = HashMap::new();
    let mut dependents: HashMap<[u8; 32], Vec<[u8; 32]>> = HashMap::new();
    let mut free: Vec<[u8; 32]> = Vec::new();
    for (hash, c) in &candidates {
        let mut missing = 0usize;
        for d in c.deps.iter().filter(|d| !in_doc(d)) {
            missing += 1;
            dependents.entry(*d).or_default().push(*hash);
        }
        if missing == 0 {
            free.push(*hash);
        } else {
            waiting.insert(*hash, missing);
        }
    }
    while let Some(hash) = free.pop() {
        if !ready.insert(hash) {
            continue;
        }
        for d in dependents.get(&hash).into_iter().flatten() {
            if let Some(n) = waiting.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    free.push(*d);
                }
            }
        }
    }
    let introduced: HashSet<&[u8]> = candidates
        .values()
        .filter(|c| ready.contains(&c.hash) && c.seq == 1)
        .map(|c| c.author.as_slice())
        .collect();
    for c in candidates.values().filter(|c| ready.contains(&c.hash)) {
        let names = std::iter::once(&c.author).chain(c.others.iter());
        for actor in names {
            if !known.contains(actor) && !introduced.contains(actor.as_slice()) {
                return Err(GuardError::Malformed(
                    "a change names an actor the document does not know",
                ));
            }
        }
    }
    let held: Vec<Named> = candidates
        .into_values()
        .filter(|c| !ready.contains(&c.hash))
        .collect();
    known.hold(held);
    Ok(())
}

/// The changes of a batch: the change chunks' own, plus the changes inside
/// document chunks that `doc` does not have yet (loaded on a scratch
/// document, after the layout checks passed).
pub(crate) fn batch_changes(
    doc: &Automerge,
    change_headers: &[ChangeHeader],
    document_chunks: &[Vec<u8>],
    limits: &super::Limits,
) -> Result<Vec<Named>, GuardError> {
    let mut out: Vec<Named> = change_headers.iter().map(Named::from).collect();
    for chunk in document_chunks {
        let scratch = super::load_document(chunk, limits)?;
        // automerge 0.12 can load a document chunk and then panic listing
        // its changes (`collector.rs`, a lost dependency; found by
        // fuzzing): a refusal, and nothing has touched `doc`.
        let changes = super::catch_automerge(|| scratch.get_changes(&[])).map_err(|_| {
            GuardError::Malformed("a document chunk whose changes automerge cannot list")
        })?;
        for change in changes {
            if doc.get_change_meta_by_hash(&change.hash()).is_some() {
                continue;
            }
            out.push(Named {
                hash: change.hash().0,
                deps: change.deps().iter().map(|d| d.0).collect(),
                author: change.actor_id().to_bytes().to_vec(),
                seq: change.seq(),
                others: change
                    .other_actor_ids()
                    .iter()
                    .map(|a| a.to_bytes().to_vec())
                    .collect(),
            });
        }
    }
    Ok(out)
}
