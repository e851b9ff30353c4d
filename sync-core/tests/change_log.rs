//! `guard::load_change_log`: a stored change log loaded in batches gives the
//! same document as loading it change by change, and a bad entry is still
//! refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Automerge, ObjType, ReadDoc, ROOT};
use sync_core::guard::{self, GuardError, KnownActors, Limits};

/// 3 actors editing concurrently, merged every few edits: the stored log of
/// a small case, oldest change first.
fn change_log() -> (Automerge, Vec<Vec<u8>>) {
    let mut base = AutoCommit::new().with_actor(ActorId::from(vec![9; 16]));
    let text = base.put_object(ROOT, "notes", ObjType::Text).unwrap();
    base.commit();
    let mut phones: Vec<AutoCommit> = (0..3u8)
        .map(|d| base.fork().with_actor(ActorId::from(vec![d + 1; 16])))
        .collect();
    for round in 0..20i64 {
        for (d, p) in phones.iter_mut().enumerate() {
            p.put(ROOT, format!("field{d}"), round).unwrap();
            p.commit();
            p.splice_text(&text, 0, 0, "x").unwrap();
            p.commit();
        }
        for p in phones.iter_mut() {
            base.merge(p).unwrap();
        }
        for p in phones.iter_mut() {
            p.merge(&mut base).unwrap();
        }
    }
    let doc = base.document().clone();
    let log = doc
        .get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    (doc, log)
}

fn load(log: &[Vec<u8>], limits: &Limits) -> Result<(Automerge, usize), GuardError> {
    let mut doc = Automerge::new();
    let mut known = KnownActors::from_doc(&doc);
    let n = guard::load_change_log(&mut doc, log, limits, &mut known)?;
    Ok((doc, n))
}

#[test]
fn batched_log_equals_the_source_whatever_the_batch_size() {
    let (source, log) = change_log();
    assert_eq!(log.len(), 121);
    for max_chunks in [1, 2, 7, 50, 100_000] {
        let limits = Limits {
            max_chunks,
            ..Limits::default()
        };
        let (doc, n) = load(&log, &limits).unwrap();
        assert_eq!(n, log.len(), "max_chunks {max_chunks}");
        assert_eq!(
            doc.get_heads(),
            source.get_heads(),
            "max_chunks {max_chunks}"
        );
        assert!(doc.get_missing_deps(&[]).is_empty());
        assert_eq!(doc.get_changes(&[]).len(), log.len());
    }
}

#[test]
fn a_byte_budget_smaller_than_the_log_splits_it_and_still_loads_everything() {
    let (source, log) = change_log();
    let largest = log.iter().map(Vec::len).max().unwrap();
    // A quarter of this fits about three changes per batch.
    let limits = Limits {
        max_decompressed_message_bytes: largest * 13,
        ..Limits::default()
    };
    let (doc, n) = load(&log, &limits).unwrap();
    assert_eq!(n, log.len());
    assert_eq!(doc.get_heads(), source.get_heads());
}

#[test]
fn a_corrupt_entry_in_the_log_is_refused() {
    let (_, mut log) = change_log();
    let middle = log.len() / 2;
    // Break the chunk's checksum: automerge would refuse it, the guard's
    // column checks see a changed body, either way it must not load.
    let last = log[middle].len() - 1;
    log[middle][last] ^= 0x55;
    log[middle].truncate(last - 3);
    assert!(load(&log, &Limits::default()).is_err());
}

#[test]
fn an_entry_that_is_not_a_chunk_is_refused_without_loading_the_batch() {
    let (_, mut log) = change_log();
    log[5] = b"not an automerge chunk".to_vec();
    let err = load(&log, &Limits::default()).unwrap_err();
    assert!(
        !matches!(err, GuardError::AutomergePanicked),
        "refused by a guard, not the backstop: {err}"
    );
}
