//! casesync patch (see `vendor/README.md`): the changes `generate_sync_message`
//! sends, kept once built.
//!
//! automerge 0.12 does not store the changes it applies; it rebuilds each
//! one from the operation set whenever it is asked for it. A server sends
//! the same new change to every peer of a document, so it rebuilt every
//! change once per peer: in casesync's reconnect storm (30 devices per
//! document) that rebuild was 60 % of the server's CPU. A rebuilt change is
//! a pure function of the document's history, which only grows, so a change
//! once built can be reused for as long as the document lives.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use crate::{AutomergeError, Change, ChangeHash};

/// At most this many bytes of changes are kept per document; past it the
/// cache starts over (the changes a document's peers are missing at any one
/// time are its newest, and they come back on the next miss).
const MAX_BYTES: usize = 1 << 20;

pub(crate) struct ChangeCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

impl Default for ChangeCache {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            max_bytes: MAX_BYTES,
        }
    }
}

#[derive(Default)]
struct Inner {
    changes: HashMap<ChangeHash, Change>,
    bytes: usize,
}

impl Clone for ChangeCache {
    /// A copy of a document starts with an empty cache.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for ChangeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeCache").finish_non_exhaustive()
    }
}

impl ChangeCache {
    /// The changes with `hashes`, in that order (a repeated hash once),
    /// from the cache where it has them and from `build` for the rest.
    ///
    /// If `build` returns a change under another hash than the one asked
    /// for (automerge cannot always reproduce a change's bytes), the result
    /// is `build` of every hash: exactly what automerge returned before this
    /// cache.
    pub(crate) fn get_or_build<F>(
        &self,
        hashes: Vec<ChangeHash>,
        build: F,
    ) -> Result<Vec<Change>, AutomergeError>
    where
        F: Fn(Vec<ChangeHash>) -> Result<Vec<Change>, AutomergeError>,
    {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut seen = HashSet::with_capacity(hashes.len());
        let hashes: Vec<ChangeHash> = hashes.into_iter().filter(|h| seen.insert(*h)).collect();
        let missing: Vec<ChangeHash> = hashes
            .iter()
            .filter(|h| !inner.changes.contains_key(h))
            .copied()
            .collect();
        let fresh: HashMap<ChangeHash, Change> = if missing.is_empty() {
            HashMap::new()
        } else {
            build(missing)?.into_iter().map(|c| (c.hash(), c)).collect()
        };
        // The answer first, from the cache as it is and what was just
        // built; the cache may start over while it takes the new changes.
        let found: Option<Vec<Change>> = hashes
            .iter()
            .map(|h| inner.changes.get(h).or_else(|| fresh.get(h)).cloned())
            .collect();
        for (hash, change) in fresh {
            let cost = Inner::cost(&change);
            if inner.bytes.saturating_add(cost) > self.max_bytes {
                inner.changes.clear();
                inner.bytes = 0;
            }
            if cost <= self.max_bytes {
                inner.bytes += cost;
                inner.changes.insert(hash, change);
            }
        }
        match found {
            Some(changes) => Ok(changes),
            None => {
                drop(inner);
                build(hashes)
            }
        }
    }
}

impl Inner {
    /// What keeping `change` costs, roughly: its bytes, the parsed change
    /// beside them (column ranges, dependencies, actor) and the map's key.
    fn cost(change: &Change) -> usize {
        change.raw_bytes().len()
            + std::mem::size_of::<Change>()
            + 32 * change.deps().len()
            + 2 * std::mem::size_of::<ChangeHash>()
    }
}

#[cfg(test)]
mod tests {
    use rand::RngExt;

    use super::*;
    use crate::transaction::Transactable;
    use crate::{ActorId, Automerge, ROOT};

    /// A document with a few actors' concurrent edits merged together.
    fn history(rng: &mut impl rand::Rng, actors: usize, rounds: usize) -> Automerge {
        let mut docs: Vec<Automerge> = (0..actors)
            .map(|i| Automerge::new().with_actor(ActorId::from(vec![i as u8 + 1; 16])))
            .collect();
        for round in 0..rounds {
            for (i, doc) in docs.iter_mut().enumerate() {
                for _ in 0..rng.random_range(1..4) {
                    let mut tx = doc.transaction();
                    let key = format!("k{}", rng.random_range(0..6));
                    tx.put(ROOT, key, format!("{i}:{round}")).unwrap();
                    tx.commit();
                }
            }
            if rng.random_range(0..2) == 0 {
                let (first, rest) = docs.split_at_mut(1);
                for other in rest {
                    first[0].merge(other).unwrap();
                    other.merge(&mut first[0]).unwrap();
                }
            }
        }
        let mut all = docs.remove(0);
        for mut other in docs {
            all.merge(&mut other).unwrap();
        }
        all
    }

    fn bytes(changes: &[Change]) -> Vec<(ChangeHash, Vec<u8>)> {
        changes
            .iter()
            .map(|c| (c.hash(), c.raw_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn changes_for_sync_are_the_changes_automerge_builds() {
        let mut rng = crate::make_rng();
        for round in 0..8 {
            let doc = history(&mut rng, 1 + round % 4, 4 + round);
            let all: Vec<ChangeHash> = doc.get_changes(&[]).iter().map(|c| c.hash()).collect();
            assert!(all.len() > 4);
            for _ in 0..12 {
                let mut asked: Vec<ChangeHash> = all
                    .iter()
                    .filter(|_| rng.random_range(0..3) == 0)
                    .copied()
                    .collect();
                if asked.is_empty() {
                    continue;
                }
                // (automerge's own build cannot take a repeated hash)
                let mut expected = bytes(&doc.get_changes_by_hashes(asked.clone()).unwrap());
                expected.sort();
                asked.push(asked[0]); // a repeated hash comes back once
                                      // Twice: built, then from the cache.
                for _ in 0..2 {
                    let got = doc.get_changes_for_sync(asked.clone()).unwrap();
                    let order: Vec<ChangeHash> = got.iter().map(|c| c.hash()).collect();
                    let mut want_order = asked.clone();
                    want_order.pop();
                    assert_eq!(order, want_order, "in the order asked");
                    let mut got = bytes(&got);
                    got.sort();
                    assert_eq!(got, expected);
                }
            }
        }
    }

    #[test]
    fn a_change_built_under_another_hash_is_returned_as_built() {
        let mut rng = crate::make_rng();
        let doc = history(&mut rng, 2, 3);
        let changes = doc.get_changes(&[]);
        let (asked, other) = (changes[0].hash(), changes[1].clone());
        let cache = ChangeCache::default();
        let build = |_: Vec<ChangeHash>| Ok(vec![other.clone()]);
        let got = cache.get_or_build(vec![asked], build).unwrap();
        assert_eq!(bytes(&got), bytes(&[other.clone()]));
        // Kept under its own hash, never served for the one asked.
        let empty = |_: Vec<ChangeHash>| Ok(Vec::new());
        assert_eq!(cache.get_or_build(vec![asked], empty).unwrap(), Vec::new());
        let got = cache.get_or_build(vec![other.hash()], empty).unwrap();
        assert_eq!(bytes(&got), bytes(&[other]));
    }

    #[test]
    fn the_cache_starts_over_past_its_size_and_still_answers() {
        let mut rng = crate::make_rng();
        let doc = history(&mut rng, 3, 6);
        let changes = doc.get_changes(&[]);
        let all: Vec<ChangeHash> = changes.iter().map(|c| c.hash()).collect();
        let max = changes.iter().map(Inner::cost).max().unwrap() * 3;
        let cache = ChangeCache {
            max_bytes: max,
            ..ChangeCache::default()
        };
        let builds = std::cell::Cell::new(0);
        let build = |h: Vec<ChangeHash>| {
            builds.set(builds.get() + 1);
            doc.get_changes_by_hashes(h)
        };
        for window in all.windows(5) {
            builds.set(0);
            let got = cache.get_or_build(window.to_vec(), build).unwrap();
            assert_eq!(
                bytes(&got),
                bytes(&doc.get_changes_by_hashes(window.to_vec()).unwrap())
            );
            // One build at most, even when the cache starts over.
            assert!(builds.get() <= 1);
            let inner = cache.inner.lock().unwrap();
            assert!(inner.bytes <= max, "{} bytes kept of {max}", inner.bytes);
        }
    }

    /// As on a server: changes are cached, the document grows, and the
    /// next messages ask for old and new changes together.
    #[test]
    fn a_growing_document_gets_its_old_and_new_changes() {
        let mut rng = crate::make_rng();
        let mut doc = history(&mut rng, 2, 3);
        for round in 0..5 {
            let all: Vec<ChangeHash> = doc.get_changes(&[]).iter().map(|c| c.hash()).collect();
            let got = doc.get_changes_for_sync(all.clone()).unwrap();
            assert_eq!(got.iter().map(|c| c.hash()).collect::<Vec<_>>(), all);
            assert_eq!(bytes(&got), bytes(&doc.get_changes_by_hashes(all).unwrap()));
            // Another device, with an actor of its own, edits concurrently.
            let mut other = doc.fork();
            for i in 0..1 + round % 3 {
                let mut tx = other.transaction();
                tx.put(ROOT, format!("k{i}"), format!("other {round}"))
                    .unwrap();
                tx.commit();
            }
            doc.merge(&mut other).unwrap();
            let mut tx = doc.transaction();
            tx.put(ROOT, "round", round as i64).unwrap();
            tx.commit();
        }
    }
}
