//! Where the time of a cold load goes (issue 7, workload 4): a case with
//! 20,000 changes from 8 actors, then (a) loading it from a snapshot,
//! (b) from a snapshot plus a tail of single stored changes, as the server's
//! document actor does, and (c) a full sync with a fresh peer, timing the
//! serving side. Prints figures; asserts only that the sync converged.
//!
//! ```text
//! cargo run --release -p sync-core --example cold_probe
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Automerge, ObjType, ReadDoc, ROOT};
use sync_core::guard::{self, KnownActors, Limits};

fn main() {
    let total: usize = std::env::var("PROBE_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let devices = 8usize;
    let t = Instant::now();
    let mut base = AutoCommit::new().with_actor(ActorId::from(vec![0xEE; 16]));
    let text = base
        .put_object(ROOT, "circumstances", ObjType::Text)
        .unwrap();
    base.put(ROOT, "title", "case").unwrap();
    base.commit();
    let mut made = 1usize;
    let mut round = 0u64;
    let mut phones: Vec<AutoCommit> = (0..devices)
        .map(|d| base.fork().with_actor(ActorId::from(vec![d as u8 + 1; 16])))
        .collect();
    while made < total {
        round += 1;
        for (d, p) in phones.iter_mut().enumerate() {
            for e in 0..10 {
                if made >= total {
                    break;
                }
                if e % 2 == 0 {
                    p.put(ROOT, format!("field{}", (d + e) % 12), round as i64)
                        .unwrap();
                } else {
                    let len = p.length(&text);
                    p.splice_text(&text, len / 2, 0, "word ").unwrap();
                }
                p.commit();
                made += 1;
            }
        }
        for p in phones.iter_mut() {
            base.merge(p).unwrap();
        }
        for p in phones.iter_mut() {
            p.merge(&mut base.fork()).unwrap();
        }
    }
    let doc: Automerge = base.document().clone();
    println!(
        "built {} changes in {:.1?}",
        doc.get_changes(&[]).len(),
        t.elapsed()
    );
    let limits = Limits::default();

    let snapshot = doc.save();
    println!("snapshot {} bytes", snapshot.len());
    let t = Instant::now();
    let loaded = guard::load_document(&snapshot, &limits).unwrap();
    println!("(a) load_document(snapshot): {:.1?}", t.elapsed());
    let t = Instant::now();
    let _ = Automerge::load(&snapshot).unwrap();
    println!("    plain Automerge::load: {:.1?}", t.elapsed());

    let changes: Vec<Vec<u8>> = doc
        .get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    let split = changes.len().saturating_sub(500);
    let mut head_doc = Automerge::new();
    head_doc
        .load_incremental(&changes[..split].concat())
        .unwrap();
    let head_snapshot = head_doc.save();
    let t = Instant::now();
    let mut d = guard::load_document(&head_snapshot, &limits).unwrap();
    let mut known = KnownActors::from_doc(&d);
    for c in &changes[split..] {
        guard::load_changes_known(&mut d, c, &limits, &mut known).unwrap();
    }
    println!("(b) snapshot + 500 single changes: {:.1?}", t.elapsed());
    let t = Instant::now();
    let mut d = guard::load_document(&head_snapshot, &limits).unwrap();
    let mut known = KnownActors::from_doc(&d);
    guard::load_changes_known(&mut d, &changes[split..].concat(), &limits, &mut known).unwrap();
    println!(
        "(b2) snapshot + 500 changes in one call: {:.1?}",
        t.elapsed()
    );
    let t = Instant::now();
    let mut d = Automerge::load(&head_snapshot).unwrap();
    for c in &changes[split..] {
        d.load_incremental(c).unwrap();
    }
    println!(
        "(b3) plain automerge, 500 single load_incremental: {:.1?}",
        t.elapsed()
    );
    let t = Instant::now();
    let mut d = Automerge::load(&head_snapshot).unwrap();
    for c in &changes[split..] {
        d.apply_changes([automerge::Change::from_bytes(c.clone()).unwrap()])
            .unwrap();
    }
    println!(
        "(b4) plain automerge, 500 single apply_changes: {:.1?}",
        t.elapsed()
    );

    // (c) a fresh peer syncs with the loaded document; time each side.
    let mut server = loaded;
    let mut server_state = sync::State::new();
    let mut client = Automerge::new();
    let mut client_state = sync::State::new();
    let (mut ts, mut tc) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let mut rounds = 0;
    let mut bytes = 0usize;
    loop {
        rounds += 1;
        let t = Instant::now();
        let m1 = client.generate_sync_message(&mut client_state);
        tc += t.elapsed();
        let t = Instant::now();
        if let Some(m) = m1.clone() {
            let enc = m.encode();
            bytes += enc.len();
            server
                .receive_sync_message(&mut server_state, sync::Message::decode(&enc).unwrap())
                .unwrap();
        }
        let m2 = server.generate_sync_message(&mut server_state);
        ts += t.elapsed();
        let t = Instant::now();
        if let Some(m) = m2.clone() {
            let enc = m.encode();
            bytes += enc.len();
            client
                .receive_sync_message(&mut client_state, sync::Message::decode(&enc).unwrap())
                .unwrap();
        }
        tc += t.elapsed();
        if m1.is_none() && m2.is_none() || rounds > 20 {
            break;
        }
    }
    assert_eq!(client.get_heads(), server.get_heads(), "sync converged");
    println!(
        "(c) fresh-peer sync: {rounds} rounds, {bytes} bytes, server {ts:.1?}, client {tc:.1?}"
    );
}
