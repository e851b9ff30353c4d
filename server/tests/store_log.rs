//! The change log, snapshots, sync state and documents, through the blocking
//! `Storage` trait of the SQLite backend.

// Tests unwrap: any unexpected error should stop the test right there.
#![allow(clippy::unwrap_used)]

use casesync_server::store::{
    Appended, ChangeRecord, DocumentKind, LogSeq, NewDocument, Role, SnapshotOutcome, SqliteConfig,
    SqliteStorage, Storage, StoreError, WriteBatch, WriteOp,
};
use sync_core::ids::DocumentId;

fn doc_id(n: u8) -> DocumentId {
    DocumentId::from_bytes([n; 16])
}

/// A stand-in change: unique bytes, and a "hash" unique to them.
fn change(doc: DocumentId, n: u32, device: &str) -> ChangeRecord {
    let mut hash = [0u8; 32];
    hash[..16].copy_from_slice(doc.as_bytes());
    hash[16..20].copy_from_slice(&n.to_be_bytes());
    ChangeRecord {
        doc,
        hash,
        bytes: format!("change {n} of {doc}").into_bytes(),
        actor: vec![0xac, 0x70, device.len() as u8],
        seq: u64::from(n) + 1,
        user: "mother".into(),
        device: device.into(),
        received_at_ms: 1_700_000_000_000 + i64::from(n),
    }
}

fn open() -> (tempfile::TempDir, SqliteStorage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(SqliteConfig::new(dir.path())).unwrap();
    (dir, storage)
}

fn create(storage: &SqliteStorage, doc: DocumentId, user: &str) {
    storage
        .create_document(NewDocument {
            id: doc,
            kind: DocumentKind::Case,
            created_by: user.into(),
            created_at_ms: 1_700_000_000_000,
        })
        .unwrap();
}

#[test]
fn a_created_document_has_its_creator_as_only_member() {
    let (_dir, storage) = open();
    let case = doc_id(1);
    let coordination = doc_id(2);
    create(&storage, case, "mother");
    storage
        .create_document(NewDocument {
            id: coordination,
            kind: DocumentKind::Coordination,
            created_by: "coordinator-anna".into(),
            created_at_ms: 1_700_000_000_001,
        })
        .unwrap();

    let docs = storage.list_documents().unwrap();
    assert_eq!(
        docs.iter().map(|d| (d.id, d.kind)).collect::<Vec<_>>(),
        vec![
            (case, DocumentKind::Case),
            (coordination, DocumentKind::Coordination)
        ]
    );
    let meta = storage.document_meta(&case).unwrap().unwrap();
    assert_eq!(meta.created_by, "mother");
    assert_eq!(storage.document_meta(&doc_id(9)).unwrap(), None);

    let members = storage.members(&case).unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].user, "mother");
    assert_eq!(members[0].role, Role::Creator);
    assert!(storage.is_member(&case, "mother").unwrap());
    assert!(!storage.is_member(&case, "coordinator-anna").unwrap());
    assert!(!storage.is_member(&doc_id(9), "mother").unwrap());

    let again = storage.create_document(NewDocument {
        id: case,
        kind: DocumentKind::Case,
        created_by: "someone-else".into(),
        created_at_ms: 1,
    });
    assert!(matches!(again, Err(StoreError::DocumentExists(d)) if d == case));
    assert_eq!(
        storage.members(&case).unwrap().len(),
        1,
        "no second creator"
    );
}

#[test]
fn appended_changes_load_back_in_log_order_with_provenance() {
    let (_dir, storage) = open();
    let doc = doc_id(1);
    create(&storage, doc, "mother");
    let changes: Vec<_> = (0..3).map(|n| change(doc, n, "phone")).collect();

    let appended = storage.append_changes(&changes).unwrap();
    assert_eq!(appended.len(), 3);
    assert!(appended.iter().all(|a| a.was_new));
    assert!(appended.windows(2).all(|w| w[0].log_seq < w[1].log_seq));

    let loaded = storage.load_document(&doc).unwrap().unwrap();
    assert_eq!(loaded.snapshot, None);
    assert_eq!(
        loaded.changes,
        changes.iter().map(|c| c.bytes.clone()).collect::<Vec<_>>()
    );
    assert_eq!(loaded.log_end, Some(appended[2].log_seq));

    let log = storage.change_log(&doc, None, 100).unwrap();
    assert_eq!(log.len(), 3);
    for (row, original) in log.iter().zip(&changes) {
        assert_eq!(row.hash, original.hash);
        assert_eq!(row.bytes, original.bytes);
        assert_eq!(row.actor, original.actor);
        assert_eq!(row.seq, original.seq);
        assert_eq!(row.user, "mother");
        assert_eq!(row.device, "phone");
        assert_eq!(row.received_at_ms, original.received_at_ms);
    }
    assert_eq!(storage.load_document(&doc_id(9)).unwrap(), None);
}

#[test]
fn change_log_pages_with_after_and_limit() {
    let (_dir, storage) = open();
    let doc = doc_id(1);
    let other = doc_id(2);
    create(&storage, doc, "mother");
    create(&storage, other, "sister");
    // Interleave two documents so log seqs of one are not contiguous.
    for n in 0..10 {
        storage
            .append_changes(&[change(doc, n, "phone"), change(other, n, "tablet")])
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = storage.change_log(&doc, after, 4).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        after = page.last().map(|c| c.log_seq);
        seen.extend(page);
    }
    assert_eq!(seen.len(), 10);
    assert!(seen.iter().all(|c| c.doc == doc && c.device == "phone"));
    assert!(seen.windows(2).all(|w| w[0].log_seq < w[1].log_seq));
}

#[test]
fn a_change_already_stored_is_deduped_not_an_error() {
    let (_dir, storage) = open();
    let doc = doc_id(1);
    create(&storage, doc, "mother");
    let first = storage.append_changes(&[change(doc, 0, "phone")]).unwrap();

    // The same change again, from another device, and twice in one call.
    let mut resent = change(doc, 0, "laptop");
    resent.received_at_ms += 60_000;
    let again = storage
        .append_changes(&[resent.clone(), change(doc, 1, "laptop"), resent])
        .unwrap();
    assert_eq!(
        again[0],
        Appended {
            log_seq: first[0].log_seq,
            was_new: false
        }
    );
    assert!(again[1].was_new);
    assert_eq!(again[2].log_seq, first[0].log_seq);
    assert!(!again[2].was_new);

    let log = storage.change_log(&doc, None, 100).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(
        log[0].device, "phone",
        "the first delivery's provenance is kept"
    );
    assert_eq!(
        storage.load_document(&doc).unwrap().unwrap().changes.len(),
        2
    );
}

#[test]
fn different_bytes_under_a_stored_hash_fail_the_whole_batch() {
    let (_dir, storage) = open();
    let doc = doc_id(1);
    create(&storage, doc, "mother");
    storage.append_changes(&[change(doc, 0, "phone")]).unwrap();

    let mut forged = change(doc, 0, "phone");
    forged.bytes = b"something else".to_vec();
    let result = storage.append_changes(&[change(doc, 1, "phone"), forged]);
    assert!(matches!(result, Err(StoreError::ConflictingChange { doc: d, .. }) if d == doc));

    // The batch was atomic: change 1 was not stored either.
    let log = storage.change_log(&doc, None, 100).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].bytes, change(doc, 0, "phone").bytes);
}

#[test]
fn changes_to_an_unknown_document_are_refused() {
    let (_dir, storage) = open();
    let result = storage.append_changes(&[change(doc_id(7), 0, "phone")]);
    assert!(matches!(result, Err(StoreError::UnknownDocument(d)) if d == doc_id(7)));
    let result = storage.save_sync_state(&doc_id(7), "phone/storage", vec![1]);
    assert!(matches!(result, Err(StoreError::UnknownDocument(_))));
}

#[test]
fn loading_is_the_snapshot_plus_the_changes_after_it() {
    let (_dir, storage) = open();
    let doc = doc_id(1);
    create(&storage, doc, "mother");
    let changes: Vec<_> = (0..5).map(|n| change(doc, n, "phone")).collect();
    let appended = storage.append_changes(&changes).unwrap();

    let loaded = storage.load_document(&doc).unwrap().unwrap();
    let outcome = storage
        .put_snapshot(&doc, b"snapshot of 0..3".to_vec(), appended[2].log_seq)
        .unwrap();
    assert_eq!(outcome, SnapshotOutcome::Stored);
    assert_eq!(loaded.log_end, Some(appended[4].log_seq));

    let loaded = storage.load_document(&doc).unwrap().unwrap();
    assert_eq!(loaded.snapshot.as_deref(), Some(&b"snapshot of 0..3"[..]));
    assert_eq!(loaded.snapshot_covers, Some(appended[2].log_seq));
    assert_eq!(
        loaded.changes,
        vec![changes[3].bytes.clone(), changes[4].bytes.clone()]
    );

    // The log itself is kept whole.
    assert_eq!(storage.change_log(&doc, None, 100).unwrap().len(), 5);

    // An older snapshot does not replace a newer one.
    let outcome = storage
        .put_snapshot(&doc, b"snapshot of 0..1".to_vec(), appended[0].log_seq)
        .unwrap();
    assert_eq!(
        outcome,
        SnapshotOutcome::Superseded {
            existing_covers: appended[2].log_seq
        }
    );
    let loaded = storage.load_document(&doc).unwrap().unwrap();
    assert_eq!(loaded.snapshot.as_deref(), Some(&b"snapshot of 0..3"[..]));

    // A snapshot covering everything leaves no tail.
    storage
        .put_snapshot(&doc, b"snapshot of all".to_vec(), appended[4].log_seq)
        .unwrap();
    let loaded = storage.load_document(&doc).unwrap().unwrap();
    assert!(loaded.changes.is_empty());

    // A snapshot may not claim changes that are not in the log.
    let beyond = storage.put_snapshot(&doc, b"x".to_vec(), LogSeq(appended[4].log_seq.0 + 1));
    assert!(matches!(beyond, Err(StoreError::SnapshotBeyondLog { .. })));
}

#[test]
fn sync_state_round_trips_per_document_and_peer() {
    let (_dir, storage) = open();
    let doc = doc_id(1);
    let other = doc_id(2);
    create(&storage, doc, "mother");
    create(&storage, other, "mother");

    assert_eq!(storage.load_sync_state(&doc, "phone/s1").unwrap(), None);
    storage
        .save_sync_state(&doc, "phone/s1", vec![1, 2, 3])
        .unwrap();
    storage.save_sync_state(&doc, "laptop/s2", vec![9]).unwrap();
    storage
        .save_sync_state(&other, "phone/s1", vec![7])
        .unwrap();
    storage
        .save_sync_state(&doc, "phone/s1", vec![4, 5])
        .unwrap();

    assert_eq!(
        storage.load_sync_state(&doc, "phone/s1").unwrap(),
        Some(vec![4, 5])
    );
    assert_eq!(
        storage.load_sync_state(&doc, "laptop/s2").unwrap(),
        Some(vec![9])
    );
    assert_eq!(
        storage.load_sync_state(&other, "phone/s1").unwrap(),
        Some(vec![7])
    );
}

#[test]
fn one_failing_batch_does_not_take_the_others_in_its_transaction_down() {
    let (_dir, storage) = open();
    let doc = doc_id(1);
    create(&storage, doc, "mother");
    let good = WriteBatch::from(WriteOp::AppendChanges(vec![change(doc, 0, "phone")]));
    let bad = WriteBatch::new()
        .with(WriteOp::AppendChanges(vec![change(doc, 1, "phone")]))
        .with(WriteOp::AppendChanges(vec![change(doc_id(9), 0, "phone")]));
    let also_good = WriteBatch::from(WriteOp::SaveSyncState {
        doc,
        peer_key: "phone/s1".into(),
        bytes: vec![1],
    });

    let results = storage.apply_batches(&[good, bad, also_good]).unwrap();
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(StoreError::UnknownDocument(_))));
    assert!(results[2].is_ok());

    let log = storage.change_log(&doc, None, 100).unwrap();
    assert_eq!(
        log.len(),
        1,
        "the failed batch's first op was rolled back too"
    );
    assert_eq!(log[0].hash, change(doc, 0, "phone").hash);
    assert_eq!(
        storage.load_sync_state(&doc, "phone/s1").unwrap(),
        Some(vec![1])
    );
}
