//! Where a cold load's server time goes (issue 7, workload 4), phase by
//! phase, on a real data directory: reading the stored snapshot and change
//! log from SQLite, loading them through the guards, and the first sync
//! message to a fresh device; then that message answered from storage
//! without loading (`engine::cold`, what the server does for a case that
//! is not loaded). Build the case first, e.g. with the load
//! generator's cold workload against a server on DIR (BENCHMARKS.md).
//!
//! ```text
//! cargo run --release -p casesync-server --example cold_load -- DIR [--key-file F]
//! ```
//!
//! Loads the document with the most stored changes, five times; prints
//! figures and asserts nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use automerge::sync::{self, SyncDoc};
use automerge::Automerge;
use casesync_server::store::{SqliteConfig, SqliteStorage, Storage};
use sync_core::engine::{cold, DocSync};
use sync_core::guard::{self, KnownActors, Limits};
use sync_core::ids::PeerId;

fn main() {
    let dir = std::env::args().nth(1).expect("usage: cold_load DATA_DIR");
    let storage = SqliteStorage::open(SqliteConfig::new(&dir)).expect("open the store");
    let docs = storage.list_documents().expect("list");
    let (meta, _) = docs
        .iter()
        .map(|m| {
            let n = storage.load_document(&m.id).ok().flatten().map_or(0, |l| {
                l.changes.len() + l.snapshot.as_ref().map_or(0, |s| s.len())
            });
            (m, n)
        })
        .max_by_key(|(_, n)| *n)
        .expect("a document");
    let limits = Limits::default();
    for round in 0..5 {
        let t = Instant::now();
        let loaded = storage.load_document(&meta.id).unwrap().unwrap();
        let read = t.elapsed();
        let t = Instant::now();
        let mut doc = match &loaded.snapshot {
            Some(s) => guard::load_document(s, &limits).unwrap(),
            None => Automerge::new(),
        };
        let snapshot = t.elapsed();
        let t = Instant::now();
        let mut known = KnownActors::from_doc(&doc);
        guard::load_change_log(&mut doc, &loaded.changes, &limits, &mut known).unwrap();
        let tail = t.elapsed();
        let changes = doc.get_changes(&[]).len();
        // The fresh device: its first message (empty heads), then the reply.
        let t = Instant::now();
        let mut sync = DocSync::new(doc, limits.clone());
        let peer = PeerId::new("user:fresh:phone").unwrap();
        sync.add_peer(peer.clone(), None, false);
        let setup = t.elapsed();
        let client = Automerge::new();
        let mut client_state = sync::State::new();
        let first = client
            .generate_sync_message(&mut client_state)
            .unwrap()
            .encode();
        let t = Instant::now();
        sync.handle_sync(&peer, &first).unwrap();
        let reply = sync.poll_outgoing_for(&peer).unwrap_or_default();
        let serve = t.elapsed();
        // The same device answered from storage (`engine::cold`), as the
        // server does when the case is not loaded: read, check, reply.
        let t = Instant::now();
        let stored = storage.load_document(&meta.id).unwrap().unwrap();
        assert!(cold::opens_from_nothing(&first, &limits));
        let from_storage =
            cold::reply_from_storage(stored.snapshot.as_deref(), &stored.changes, false, &limits)
                .unwrap()
                .message;
        let cold_serve = t.elapsed();
        // What the device then does with it, through its own guards.
        let t = Instant::now();
        let mut fresh = Automerge::new();
        guard::receive_sync_message(&mut fresh, &mut sync::State::new(), &from_storage, &limits)
            .unwrap();
        let device_side = t.elapsed();
        println!(
            "round {round}: {changes} changes (snapshot {} B, tail {}): read {read:.1?}, snapshot {snapshot:.1?}, tail {tail:.1?}, engine {setup:.1?}, first reply {serve:.1?} ({} B); from storage {cold_serve:.1?} ({} B, same heads: {}; the device applies it in {device_side:.1?})",
            loaded.snapshot.as_ref().map_or(0, Vec::len),
            loaded.changes.len(),
            reply.len(),
            from_storage.len(),
            fresh.get_heads() == sync.doc().get_heads(),
        );
    }
}
