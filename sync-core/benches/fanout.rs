//! Generating sync replies for many peers: a case with 1,000 changes, 100
//! connected peers all in sync with it, one new change arrives and is
//! durable; `DocSync::poll_outgoing` produces the 100 messages that carry
//! it. This is the server's work per change in the live fan-out.

use automerge::sync::SyncDoc;
use automerge::Automerge;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sync_core::engine::DocSync;
use sync_core::guard::Limits;

mod support;

const PEERS: usize = 100;

fn fanout(c: &mut Criterion) {
    let mut server = support::case_with_edits(1_000, 2);
    let mut replica = server.fork().with_actor(support::actor(3));
    let (server_state, replica_state) = support::sync_pair(&mut server, &mut replica);
    let persisted = server_state.encode();
    // What an in-sync peer sends when it (re)joins: its heads, nothing new.
    let hello = {
        let mut reconnected =
            automerge::sync::State::decode(&replica_state.encode()).expect("state");
        replica
            .generate_sync_message(&mut reconnected)
            .expect("a hello")
            .encode()
    };
    let setup = |server: &Automerge| {
        let mut sync = DocSync::new(server.clone(), Limits::default());
        for i in 0..PEERS {
            let p = support::peer(i);
            sync.add_peer(p.clone(), Some(&persisted), false);
            sync.handle_sync(&p, &hello).expect("hello");
        }
        // Answer the hellos, so every peer is known to be in sync.
        let _ = sync.poll_outgoing();
        // One new change, durable.
        sync.edit(|doc| support::add_edits(doc, 1, 50_000));
        for req in sync.take_persist_requests() {
            sync.handle_persisted(req.token);
        }
        sync
    };

    let mut group = c.benchmark_group("DocSync::poll_outgoing");
    group.sample_size(20);
    group.throughput(Throughput::Elements(PEERS as u64));
    group.bench_function("1 new change to 100 peers (1,000-change case)", |b| {
        b.iter_batched(
            || setup(&server),
            |mut sync| {
                let out = sync.poll_outgoing();
                assert_eq!(out.len(), PEERS);
                sync
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
