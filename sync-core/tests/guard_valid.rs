//! Real automerge traffic passes the guards unchanged, and sync through the
//! guarded entry points converges.

mod guard_support;

use automerge::sync::{self, SyncDoc};
use automerge::Automerge;
use guard_support::*;
use sync_core::guard::{self, Limits};

/// Step 1: a relative's phone and the server share a case of 300 changes and
/// each make 80 offline edits. Step 2: they sync, every message going
/// through the guard; automerge sends the missing changes as a v1-style list
/// because they are under a third of the document. Step 3: both hold the
/// same document.
#[test]
fn two_diverged_documents_converge_through_the_guard() {
    let base = doc_with_changes(b"base", 300);
    let mut phone = base
        .fork()
        .with_actor(automerge::ActorId::from(b"phone".as_slice()));
    let mut server = base
        .fork()
        .with_actor(automerge::ActorId::from(b"server".as_slice()));
    add_edits(&mut phone, "phone", 80);
    add_edits(&mut server, "server", 80);

    let limits = Limits::default();
    let mut summaries = Vec::new();
    let delivered = sync_until_quiet(&mut phone, &mut server, 50, |doc, state, bytes| {
        summaries.push(guard::check_sync_message(bytes, &limits).expect("real message passes"));
        guard::receive_sync_message(doc, state, bytes, &limits).expect("real message is received");
    });

    assert!(delivered >= 2);
    assert_eq!(
        summaries.iter().filter(|s| s.chunks == 80).count(),
        2,
        "{summaries:?}"
    );
    assert!(summaries.iter().all(|s| s.haves <= 1));
    assert_eq!(phone.get_heads(), server.get_heads());
    assert_eq!(phone.hydrate(None), server.hydrate(None));
}

/// Older peers (and stock JS automerge without v2) send one entry per change.
#[test]
fn a_v1_message_with_one_entry_per_change_passes() {
    let source = doc_with_changes(b"old-peer", 500);
    let changes: Vec<Vec<u8>> = source
        .get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    let message = sync_message_with_changes(changes);
    let limits = Limits::default();

    let summary = guard::check_sync_message(&message, &limits).expect("passes");
    assert_eq!(
        (summary.v2, summary.changes, summary.chunks),
        (false, 501, 501)
    );

    let mut doc = Automerge::new();
    let mut state = sync::State::new();
    guard::receive_sync_message(&mut doc, &mut state, &message, &limits).expect("received");
    assert_eq!(doc.get_heads(), source.get_heads());
}

/// A new device with nothing receives the whole case as one v2 document
/// chunk (compressed columns included), which the guard checks and passes.
#[test]
fn a_fresh_device_receives_the_whole_document_as_v2() {
    let mut server = doc_with_changes(b"server", 300);
    let mut fresh = Automerge::new();
    let limits = Limits::default();
    let mut summaries = Vec::new();
    sync_until_quiet(&mut server, &mut fresh, 50, |doc, state, bytes| {
        summaries.push(guard::check_sync_message(bytes, &limits).expect("real message passes"));
        guard::receive_sync_message(doc, state, bytes, &limits).expect("real message is received");
    });

    assert!(
        summaries
            .iter()
            .any(|s| s.v2 && s.changes == 1 && s.chunks == 1),
        "{summaries:?}"
    );
    assert_eq!(fresh.get_heads(), server.get_heads());
    assert_eq!(fresh.hydrate(None), server.hydrate(None));
}

#[test]
fn stored_documents_changes_and_sync_states_load_through_the_guard() {
    let limits = Limits::default();
    let mut doc = doc_with_changes(b"server", 200);

    for saved in [doc.save(), doc.save_nocompress()] {
        let loaded = guard::load_document(&saved, &limits).expect("a saved document loads");
        assert_eq!(loaded.get_heads(), doc.get_heads());
    }
    assert_eq!(
        guard::load_document(&[], &limits)
            .expect("empty is a new document")
            .get_heads(),
        Vec::new()
    );

    // An incremental save, and the change log as stored: concatenated chunks.
    let heads = doc.get_heads();
    let mut later = doc
        .fork()
        .with_actor(automerge::ActorId::from(b"later".as_slice()));
    add_edits(&mut later, "later", 20);
    let mut reloaded = guard::load_document(&doc.save(), &limits).expect("loads");
    let chunks = guard::load_changes(&mut reloaded, &later.save_after(&heads), &limits)
        .expect("incremental save loads");
    assert!(chunks >= 1);
    assert_eq!(reloaded.get_heads(), later.get_heads());

    let log: Vec<u8> = later
        .get_changes(&[])
        .iter()
        .flat_map(|c| c.raw_bytes().to_vec())
        .collect();
    let mut from_log = Automerge::new();
    assert_eq!(guard::load_changes(&mut from_log, &log, &limits), Ok(221));
    assert_eq!(from_log.get_heads(), later.get_heads());

    // A compressed change chunk, as automerge writes it for a large change.
    let mut big = Automerge::new();
    add_edits_of(&mut big, "big", 1, 4000);
    let mut change = big.get_changes(&[]).remove(0);
    let compressed = change.bytes().to_vec();
    assert_eq!(compressed[8], 2, "automerge compressed this change");
    let mut target = Automerge::new();
    assert_eq!(
        guard::load_changes(&mut target, &compressed, &limits),
        Ok(1)
    );
    assert_eq!(target.get_heads(), big.get_heads());

    // A persisted sync state.
    let mut state = sync::State::new();
    let mut peer = Automerge::new();
    let mut peer_state = sync::State::new();
    sync_until_quiet(&mut doc, &mut peer, 50, |d, s, bytes| {
        guard::receive_sync_message(d, s, bytes, &limits).expect("received");
    });
    let message = doc
        .generate_sync_message(&mut state)
        .expect("first message");
    peer.receive_sync_message(&mut peer_state, message)
        .expect("received");
    let encoded = peer_state.encode();
    let decoded = guard::decode_sync_state(&encoded, &limits).expect("a saved state decodes");
    assert_eq!(decoded.shared_heads, peer_state.shared_heads);
}

fn add_edits(doc: &mut Automerge, who: &str, n: usize) {
    add_edits_of(doc, who, n, 1);
}

fn add_edits_of(doc: &mut Automerge, who: &str, n: usize, width: usize) {
    use automerge::transaction::Transactable;
    for i in 0..n {
        let mut tx = doc.transaction();
        let value = format!("{who} {i} ").repeat(width);
        tx.put(automerge::ROOT, format!("{who}-{i}"), value)
            .expect("put");
        tx.commit();
    }
}
