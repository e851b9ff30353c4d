//! Applying a batch of changes from one peer: `DocSync::handle_sync` with a
//! sync message carrying 100 (and 1,000) new changes, on a case that
//! already has 1,000 changes. This is the guards, automerge's apply, and
//! the persist request that the durability gate hands to the store.

use automerge::Automerge;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use sync_core::engine::DocSync;
use sync_core::guard::Limits;

mod support;

fn setup(server: &Automerge, state: &[u8]) -> DocSync {
    let mut sync = DocSync::new(server.clone(), Limits::default());
    sync.add_peer(support::peer(1), Some(state), false);
    sync
}

fn apply_batch(c: &mut Criterion) {
    let base = support::case_with_edits(1_000, 2);
    let mut group = c.benchmark_group("DocSync::handle_sync");
    group.sample_size(20);
    for n in [100usize, 1_000] {
        let (server, state, data) = support::batch_message(&base, n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{n} changes onto 1,000"), |b| {
            b.iter_batched(
                || setup(&server, &state),
                |mut sync| {
                    sync.handle_sync(&support::peer(1), black_box(&data))
                        .expect("applies");
                    let requests = sync.take_persist_requests();
                    assert_eq!(requests.iter().map(|r| r.changes.len()).sum::<usize>(), n);
                    sync
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, apply_batch);
criterion_main!(benches);
