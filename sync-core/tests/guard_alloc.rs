//! Memory: the guards refuse bombs without allocating them, while unguarded
//! automerge 0.12 really does allocate them.
//!
//! This binary counts every allocation through `cap::Cap`. The tests share the
//! counters, so they take a lock and run one at a time.

mod guard_support;

use std::alloc::System;
use std::sync::{Mutex, MutexGuard};

use automerge::sync::{self, SyncDoc};
use automerge::Automerge;
use cap::Cap;
use guard_support::*;
use sync_core::guard::{self, GuardError, Limits};

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

static SERIAL: Mutex<()> = Mutex::new(());

/// Set in the child process that tries automerge's 16 GiB reservation.
const CHILD_ENV: &str = "CASESYNC_GUARD_ALLOC_CHILD";

/// Refusing a DEFLATE bomb costs the decoder's state and window (about
/// 47 KiB when this was written); allow 2 MiB.
const REFUSAL_BUDGET: usize = 2 * MIB;

/// Refusals that inflate nothing should allocate nothing; the margin covers
/// the test harness allocating on other threads while we measure.
const TINY_BUDGET: usize = 64 * 1024;

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Total bytes allocated while running `f` (an upper bound on how much the
/// heap grew), and `f`'s result.
fn allocated_during<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOC.total_allocated();
    let result = f();
    (ALLOC.total_allocated() - before, result)
}

#[test]
fn refusing_a_64_mib_change_bomb_allocates_almost_nothing() {
    let _serial = serial();
    let bomb = compressed_change_bomb(64 * MIB);
    let message = sync_message_with_changes(vec![bomb.clone()]);
    let limits = Limits::default();
    let mut doc = doc_with_changes(b"server", 2);
    let mut state = sync::State::new();

    let (allocated, refused) =
        allocated_during(|| guard::receive_sync_message(&mut doc, &mut state, &message, &limits));

    assert!(matches!(
        refused,
        Err(GuardError::DecompressedTooLarge { .. })
    ));
    assert!(allocated < REFUSAL_BUDGET, "{allocated} bytes allocated");

    // Unguarded, automerge inflates all of it (and copies it once more).
    let (allocated, loaded) = allocated_during(|| Automerge::new().load_incremental(&bomb));
    assert!(loaded.is_ok(), "automerge accepts the bomb: {loaded:?}");
    assert!(allocated > 64 * MIB, "{allocated} bytes allocated");
}

#[test]
fn refusing_a_64_mib_document_column_allocates_almost_nothing() {
    let _serial = serial();
    let document = document_with_deflated_column(deflated_zeros_64_mib());
    let limits = Limits {
        max_document_bytes: 32 * MIB,
        ..Limits::default()
    };

    let (allocated, refused) = allocated_during(|| guard::load_document(&document, &limits));

    assert!(matches!(
        refused,
        Err(GuardError::DecompressedTooLarge { .. })
    ));
    assert!(allocated < REFUSAL_BUDGET, "{allocated} bytes allocated");
}

#[test]
fn refusing_deep_cbor_and_absurd_lengths_allocates_almost_nothing() {
    let _serial = serial();
    let limits = Limits::default();
    let mut deep = vec![0x9f; 100_000];
    deep.extend(vec![0xff; 100_000]);
    let mut absurd = vec![0x5b];
    absurd.extend((1u64 << 60).to_be_bytes());
    let hashes = [
        0x42, 0x00, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
    ];

    let (allocated, refused) = allocated_during(|| {
        [
            guard::check_cbor(&deep, &limits).is_err(),
            guard::check_cbor(&absurd, &limits).is_err(),
            guard::check_sync_message(&hashes, &limits).is_err(),
        ]
    });

    assert_eq!(refused, [true; 3]);
    assert!(allocated < TINY_BUDGET, "{allocated} bytes allocated");
}

#[test]
fn refusing_a_run_length_op_bomb_allocates_almost_nothing() {
    let _serial = serial();
    let message = sync_message_with_changes(vec![run_length_op_bomb(1 << 40)]);
    let mut doc = doc_with_changes(b"server", 2);
    let mut state = sync::State::new();

    let (allocated, refused) = allocated_during(|| {
        guard::receive_sync_message(&mut doc, &mut state, &message, &Limits::default())
    });

    assert!(matches!(refused, Err(GuardError::TooMany { .. })));
    assert!(allocated < TINY_BUDGET, "{allocated} bytes allocated");
}

/// Fifteen bytes whose Bloom filter has `num_probes = u32::MAX`.
const BLOOM_16_GIB: [u8; 15] = [
    0x42, 0x00, 0x00, 0x01, 0x00, 0x08, 0x01, 0x08, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00,
];

#[test]
fn refusing_the_16_gib_bloom_filter_allocates_almost_nothing() {
    let _serial = serial();
    let mut doc = doc_with_changes(b"server", 2);
    let mut state = sync::State::new();
    let (allocated, refused) = allocated_during(|| {
        guard::receive_sync_message(&mut doc, &mut state, &BLOOM_16_GIB, &Limits::default())
    });
    assert!(matches!(refused, Err(GuardError::BloomFilterInsane { .. })));
    assert!(allocated < TINY_BUDGET, "{allocated} bytes allocated");
}

/// Unguarded automerge, given the 15-byte message, asks the allocator for
/// 17 179 869 180 bytes when it generates its reply. A failed allocation
/// aborts the process (it cannot be caught), so this runs in a child process
/// whose allocator refuses anything above 1 GiB: nothing large is ever
/// allocated, and the abort message shows the size automerge asked for.
#[test]
fn unguarded_automerge_asks_for_16_gib_on_the_bloom_filter() {
    let _serial = serial();
    let exe = std::env::current_exe().expect("test binary path");
    let output = std::process::Command::new(exe)
        .args([
            "--exact",
            "child_generates_a_reply_to_the_16_gib_bloom_filter",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the child");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the child should abort");
    assert!(
        stderr.contains("memory allocation of 17179869180 bytes failed"),
        "child stderr: {stderr}"
    );
}

/// The child half of the test above; does nothing unless started by it.
#[test]
fn child_generates_a_reply_to_the_16_gib_bloom_filter() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let mut doc = doc_with_changes(b"server", 2);
    let mut state = sync::State::new();
    let message = sync::Message::decode(&BLOOM_16_GIB).expect("automerge decodes it");
    doc.receive_sync_message(&mut state, message)
        .expect("automerge receives it");
    ALLOC
        .set_limit(ALLOC.allocated() + 1024 * MIB)
        .expect("limit above current use");
    let reply = doc.generate_sync_message(&mut state);
    // Not reached: the allocation above fails and the process aborts.
    panic!("automerge replied without the 16 GiB reservation: {reply:?}");
}
