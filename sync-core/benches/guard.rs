//! Decoding and guarding one inbound `sync` frame carrying 100 changes:
//! the frame size and CBOR checks, the protocol decoder, and the sync
//! message's structural guard (chunk layout, Bloom filter parameters,
//! decompressed sizes), which run before automerge sees a byte.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use sync_core::guard::{self, Limits};
use sync_core::protocol::{self, Message};

mod support;

fn decode_and_guard(c: &mut Criterion) {
    let base = support::case_with_edits(0, 2);
    let (_, _, data) = support::batch_message(&base, 100);
    let frame = support::sync_frame(data.clone());
    let limits = Limits::default();

    let mut group = c.benchmark_group("inbound sync frame (100 changes)");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("check_cbor + protocol::decode", |b| {
        b.iter(|| {
            guard::check_frame_size(frame.len(), &limits).expect("size");
            guard::check_cbor(black_box(&frame), &limits).expect("cbor");
            protocol::decode(black_box(&frame)).expect("decode")
        })
    });
    group.bench_function("guard::check_sync_message", |b| {
        b.iter(|| guard::check_sync_message(black_box(&data), &limits).expect("guard"))
    });
    group.bench_function("whole path: frame to checked sync data", |b| {
        b.iter(|| {
            guard::check_frame_size(frame.len(), &limits).expect("size");
            guard::check_cbor(black_box(&frame), &limits).expect("cbor");
            let Message::Sync { data, .. } = protocol::decode(&frame).expect("decode") else {
                unreachable!("a sync frame")
            };
            guard::check_sync_message(&data, &limits).expect("guard")
        })
    });
    group.finish();
}

criterion_group!(benches, decode_and_guard);
criterion_main!(benches);
