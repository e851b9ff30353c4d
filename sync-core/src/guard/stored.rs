//! The heads of a stored document (a snapshot and the change log after it)
//! read from the bytes alone, without loading them into automerge.
//!
//! Loading a 20,000-change snapshot into automerge takes about 100 ms; its
//! heads are in the first few hundred bytes of the chunk. The server uses
//! this to answer a device that has nothing straight from storage (see
//! `engine::cold`). Stored bytes are checked like a peer's: the snapshot's
//! header is read within `Limits`, and every change of the tail goes through
//! the same chunk checks as a change in a sync message.

use std::collections::BTreeSet;

use automerge::ChangeHash;

use super::chunk::{check_chunks, ChunkBudget, MAGIC};
use super::reader::{Reader, HASH_LEN};
use super::{GuardError, Limits};

/// The type byte of a document chunk.
const CHUNK_DOCUMENT: u8 = 0;

/// The heads of the document that `snapshot` (one document chunk, as
/// `Automerge::save` writes it) followed by `changes` (change chunks, in
/// log order, each after its dependencies) load into. Sorted, as automerge
/// returns heads.
///
/// Refuses a snapshot that is not exactly one document chunk, and any
/// change that a sync message could not carry.
pub fn stored_heads(
    snapshot: Option<&[u8]>,
    changes: &[Vec<u8>],
    limits: &Limits,
) -> Result<Vec<ChangeHash>, GuardError> {
    let mut heads: BTreeSet<[u8; HASH_LEN]> = match snapshot {
        Some(bytes) => document_heads(bytes, limits)?.into_iter().collect(),
        None => BTreeSet::new(),
    };
    let mut budget = ChunkBudget::new(
        limits.max_decompressed_message_bytes,
        "max_decompressed_message_bytes",
    );
    for change in changes {
        check_chunks(change, limits, &mut budget)?;
    }
    if budget.document_chunks > 0 {
        return Err(GuardError::Malformed(
            "the change log holds a document chunk",
        ));
    }
    for header in &budget.change_headers {
        for dep in &header.deps {
            heads.remove(dep);
        }
        heads.insert(header.hash);
    }
    Ok(heads.into_iter().map(ChangeHash).collect())
}

/// The heads listed in a document chunk's header.
fn document_heads(bytes: &[u8], limits: &Limits) -> Result<Vec<[u8; HASH_LEN]>, GuardError> {
    let mut chunk = Reader::new(bytes);
    if chunk.take(4, "chunk magic bytes")? != MAGIC {
        return Err(GuardError::Malformed(
            "snapshot does not start with automerge's magic bytes",
        ));
    }
    chunk.take(4, "chunk checksum")?;
    if chunk.u8("chunk type")? != CHUNK_DOCUMENT {
        return Err(GuardError::Malformed("snapshot is not a document chunk"));
    }
    let body_len = chunk.uleb("chunk length")?;
    let body = chunk.take(body_len, "chunk body")?;
    if !chunk.is_empty() {
        return Err(GuardError::TrailingBytes {
            what: "snapshot",
            count: chunk.remaining(),
        });
    }
    let mut r = Reader::new(body);
    let actors = r.count(
        "document actors (max_chunk_actors)",
        limits.max_chunk_actors,
        1,
    )?;
    for _ in 0..actors {
        r.length_prefixed(
            "document actor id (max_actor_id_bytes)",
            limits.max_actor_id_bytes,
        )?;
    }
    let count = r.count("document heads (max_heads)", limits.max_heads, HASH_LEN)?;
    let mut heads = Vec::with_capacity(count);
    for _ in 0..count {
        let hash = r.take(HASH_LEN as u64, "document head")?;
        let hash: [u8; HASH_LEN] = hash
            .try_into()
            .map_err(|_| GuardError::Malformed("document head is not 32 bytes"))?;
        heads.push(hash);
    }
    Ok(heads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ROOT};

    fn doc_with(n: usize, actor: &[u8]) -> AutoCommit {
        let mut doc = AutoCommit::new().with_actor(automerge::ActorId::from(actor));
        for i in 0..n {
            doc.put(ROOT, "k", i as i64).expect("put");
            doc.commit();
        }
        doc
    }

    #[test]
    fn heads_of_a_snapshot_and_its_tail_are_the_documents() {
        let limits = Limits::default();
        let mut a = doc_with(5, b"aaaa");
        let snapshot = a.save();
        let at_snapshot = a.get_heads();
        // Two concurrent tails: the heads are both branches' last changes.
        let mut b = a
            .fork()
            .with_actor(automerge::ActorId::from(b"bbbb".as_slice()));
        for i in 0..3 {
            a.put(ROOT, "a", i).expect("put");
            a.commit();
            b.put(ROOT, "b", i).expect("put");
            b.commit();
        }
        a.merge(&mut b).expect("merge");
        let tail: Vec<Vec<u8>> = a
            .get_changes(&at_snapshot)
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        assert_eq!(tail.len(), 6);
        let heads = stored_heads(Some(&snapshot), &tail, &limits).expect("heads");
        assert_eq!(heads.len(), 2);
        assert_eq!(heads, a.get_heads());
        assert_eq!(
            stored_heads(Some(&snapshot), &[], &limits).expect("heads"),
            at_snapshot
        );
        // No snapshot: the change log alone.
        let all: Vec<Vec<u8>> = a
            .get_changes(&[])
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        assert_eq!(
            stored_heads(None, &all, &limits).expect("heads"),
            a.get_heads()
        );
        assert!(stored_heads(None, &[], &limits).expect("heads").is_empty());
    }

    #[test]
    fn bad_stored_bytes_are_refused() {
        let limits = Limits::default();
        let mut a = doc_with(2, b"aaaa");
        let snapshot = a.save();
        let change = a.get_changes(&[])[0].raw_bytes().to_vec();
        // A change where the snapshot should be, a snapshot in the log,
        // trailing bytes, truncation, garbage.
        assert!(stored_heads(Some(&change), &[], &limits).is_err());
        assert!(stored_heads(None, std::slice::from_ref(&snapshot), &limits).is_err());
        let mut trailing = snapshot.clone();
        trailing.push(0);
        assert!(stored_heads(Some(&trailing), &[], &limits).is_err());
        for cut in [0, 4, 9, 12, snapshot.len() - 1] {
            assert!(
                stored_heads(Some(&snapshot[..cut]), &[], &limits).is_err(),
                "cut {cut}"
            );
        }
        assert!(stored_heads(None, &[vec![1, 2, 3]], &limits).is_err());
        let tight = Limits {
            max_heads: 0,
            ..Limits::default()
        };
        assert!(stored_heads(Some(&snapshot), &[], &tight).is_err());
    }
}
