//! Hostile input against the guards, and proof that the worst of it really
//! hurts automerge 0.12 when unguarded.

mod guard_support;

use std::panic::{catch_unwind, AssertUnwindSafe};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc};
use guard_support::*;
use proptest::prelude::*;
use sync_core::guard::{self, GuardError, Limits};

/// Ten bytes: a v1 sync message with one `have` whose Bloom filter claims one
/// entry with zero bits per entry. Automerge 0.12 decodes and receives it
/// without complaint; its next `generate_sync_message` computes
/// `hash % (8 * bits.len())` with an empty bit array and panics.
const BLOOM_DIVIDE_BY_ZERO: [u8; 10] = [
    0x42, // sync message v1
    0x00, // no heads
    0x00, // no need
    0x01, // one have:
    0x00, //   no last_sync
    0x03, //   a 3-byte Bloom filter: num_entries 1, bits_per_entry 0, num_probes 7
    0x01, 0x00, 0x07, //
    0x00, // no changes
];

/// Fifteen bytes: a Bloom filter with one entry, 8 bits per entry (one byte of
/// bits) and `num_probes = u32::MAX`. Automerge 0.12's `get_probes` calls
/// `Vec::<u32>::with_capacity(num_probes)` for every change hash it tests.
const BLOOM_16_GIB: [u8; 15] = [
    0x42, 0x00, 0x00, 0x01, 0x00, //
    0x08, // an 8-byte Bloom filter:
    0x01, // num_entries 1
    0x08, // bits_per_entry 8
    0xff, 0xff, 0xff, 0xff, 0x0f, // num_probes u32::MAX
    0x00, // one byte of bits
    0x00, // no changes
];

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

#[test]
fn ten_byte_bloom_filter_panics_unguarded_automerge() {
    let mut doc = doc_with_changes(b"server", 3);
    let mut state = sync::State::new();
    let message = sync::Message::decode(&BLOOM_DIVIDE_BY_ZERO).expect("automerge decodes it");
    doc.receive_sync_message(&mut state, message)
        .expect("automerge receives it");

    let outcome = catch_unwind(AssertUnwindSafe(|| doc.generate_sync_message(&mut state)));

    let payload = outcome.expect_err("automerge 0.12 panics generating the reply");
    assert!(
        panic_message(payload.as_ref()).contains("remainder with a divisor of zero"),
        "unexpected panic: {}",
        panic_message(payload.as_ref())
    );
}

#[test]
fn ten_byte_bloom_filter_is_refused_before_automerge() {
    let mut doc = doc_with_changes(b"server", 3);
    let heads = doc.get_heads();
    let mut state = sync::State::new();

    let refused = guard::receive_sync_message(
        &mut doc,
        &mut state,
        &BLOOM_DIVIDE_BY_ZERO,
        &Limits::default(),
    );

    assert!(matches!(
        refused,
        Err(GuardError::BloomFilterInsane {
            num_entries: 1,
            bits_per_entry: 0,
            num_probes: 7,
            ..
        })
    ));
    assert_eq!(state, sync::State::new(), "the sync state is untouched");
    assert_eq!(doc.get_heads(), heads);
    // And the reply generates normally.
    assert!(guard::generate_sync_message(&doc, &mut state)
        .expect("no panic")
        .is_some());
}

#[test]
fn guarded_generate_catches_the_panic_if_the_filter_got_in() {
    let mut doc = doc_with_changes(b"server", 3);
    let mut state = sync::State::new();
    // Received without the guard, as a careless caller would.
    let message = sync::Message::decode(&BLOOM_DIVIDE_BY_ZERO).expect("automerge decodes it");
    doc.receive_sync_message(&mut state, message)
        .expect("automerge receives it");

    assert_eq!(
        guard::generate_sync_message(&doc, &mut state),
        Err(GuardError::AutomergePanicked)
    );
}

#[test]
fn bloom_filter_asking_for_16_gib_is_refused() {
    // Automerge accepts the filter as it is: it decodes and stores
    // num_probes = u32::MAX. We do not call generate_sync_message on it here:
    // that would reserve the amount below (tests/guard_alloc.rs shows the
    // attempt in a child process under a capped allocator).
    let message = sync::Message::decode(&BLOOM_16_GIB).expect("automerge decodes it");
    assert_eq!(message.have[0].bloom.to_bytes(), BLOOM_16_GIB[6..14]);
    let would_reserve = u64::from(u32::MAX) * std::mem::size_of::<u32>() as u64;
    assert_eq!(would_reserve, 17_179_869_180);

    let mut doc = doc_with_changes(b"server", 3);
    let mut state = sync::State::new();
    let refused =
        guard::receive_sync_message(&mut doc, &mut state, &BLOOM_16_GIB, &Limits::default());
    assert!(matches!(
        refused,
        Err(GuardError::BloomFilterInsane {
            num_probes: u32::MAX,
            ..
        })
    ));
    assert_eq!(state, sync::State::new());
}

#[test]
fn absurd_bloom_parameters_are_refused() {
    let limits = Limits::default();
    let cases: &[(&str, Vec<u8>)] = &[
        ("zero bits per entry", vec![0x01, 0x00, 0x07]),
        ("zero probes", vec![0x01, 0x0a, 0x00, 0x00, 0x00]),
        (
            // ceil(u32::MAX * u32::MAX / 8) bytes of bits: automerge refuses it
            // as incomplete input, and so do we, earlier.
            "u32::MAX entries and bits per entry",
            vec![
                0xff, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x07,
            ],
        ),
        ("too many entries", vec![0x80, 0x80, 0x80, 0x02, 0x0a, 0x07]),
        ("bits do not match", vec![0x01, 0x0a, 0x07, 0x00]),
        ("bits after an empty filter", vec![0x00, 0x0a, 0x07, 0x00]),
        ("trailing bits", vec![0x01, 0x0a, 0x07, 0x00, 0x00, 0x00]),
    ];
    for (name, bloom) in cases {
        let refused = guard::check_sync_message(&sync_message_with_bloom(bloom), &limits);
        assert!(
            matches!(refused, Err(GuardError::BloomFilterInsane { .. })),
            "{name}: {refused:?}"
        );
    }
    // A filter that does not fit in a u32 field is refused as malformed.
    let refused = guard::check_sync_message(
        &sync_message_with_bloom(&[0x80, 0x80, 0x80, 0x80, 0x10, 0x0a, 0x07]),
        &limits,
    );
    assert!(matches!(refused, Err(GuardError::Malformed(_))));
}

#[test]
fn compressed_change_bomb_is_valid_to_automerge() {
    // A 1 MiB bomb is small enough to load for real: automerge accepts it.
    let bomb = compressed_change_bomb(MIB);
    assert!(bomb.len() < 8 * 1024, "{} bytes", bomb.len());
    let mut doc = Automerge::new();
    doc.load_incremental(&bomb)
        .expect("automerge loads the bomb");
    assert_eq!(doc.get_changes(&[]).len(), 1);
    // The guard with a lower cap refuses the same bytes.
    let limits = Limits {
        max_decompressed_change_bytes: MIB / 2,
        ..Limits::default()
    };
    assert_eq!(
        guard::load_changes(&mut Automerge::new(), &bomb, &limits),
        Err(GuardError::DecompressedTooLarge {
            limit_name: "max_decompressed_change_bytes",
            limit: MIB / 2
        })
    );
}

#[test]
fn compressed_change_inflating_to_64_mib_is_refused() {
    let bomb = compressed_change_bomb(64 * MIB);
    assert!(bomb.len() < 128 * 1024, "{} bytes", bomb.len());
    let message = sync_message_with_changes(vec![bomb.clone()]);
    let limits = Limits::default();
    let expected = Err(GuardError::DecompressedTooLarge {
        limit_name: "max_decompressed_change_bytes",
        limit: limits.max_decompressed_change_bytes,
    });

    assert_eq!(
        guard::check_sync_message(&message, &limits).map(|_| ()),
        expected
    );
    let mut doc = doc_with_changes(b"server", 2);
    let heads = doc.get_heads();
    let mut state = sync::State::new();
    assert_eq!(
        guard::receive_sync_message(&mut doc, &mut state, &message, &limits),
        expected
    );
    assert_eq!(doc.get_heads(), heads);
    assert_eq!(
        guard::load_changes(&mut doc, &bomb, &limits).map(|_| ()),
        expected
    );
    assert_eq!(guard::load_document(&bomb, &limits).map(|_| ()), expected);
}

#[test]
fn many_small_bombs_hit_the_per_message_cap() {
    // Each change stays under the per-change cap; together they do not.
    let limits = Limits {
        max_decompressed_change_bytes: 2 * MIB,
        max_decompressed_message_bytes: 4 * MIB,
        ..Limits::default()
    };
    let bomb = compressed_change_bomb(MIB + MIB / 2);
    let message = sync_message_with_changes(vec![bomb.clone(), bomb.clone(), bomb]);
    assert_eq!(
        guard::check_sync_message(&message, &limits),
        Err(GuardError::DecompressedTooLarge {
            limit_name: "max_decompressed_message_bytes",
            limit: 4 * MIB
        })
    );
}

#[test]
fn document_with_a_64_mib_compressed_column_is_refused() {
    let document = document_with_deflated_column(deflated_zeros_64_mib());
    // In a sync message (v2 sends whole documents) the per-message cap applies.
    let message = sync_message_with_changes(vec![document.clone()]);
    assert!(matches!(
        guard::check_sync_message(&message, &Limits::default()),
        Err(GuardError::DecompressedTooLarge {
            limit_name: "max_decompressed_message_bytes",
            ..
        })
    ));
    // From storage, the document cap applies.
    let limits = Limits {
        max_document_bytes: 32 * MIB,
        ..Limits::default()
    };
    assert_eq!(
        guard::load_document(&document, &limits).map(|_| ()),
        Err(GuardError::DecompressedTooLarge {
            limit_name: "max_document_bytes",
            limit: 32 * MIB
        })
    );
}

#[test]
fn change_chunks_with_lying_lengths_are_refused() {
    let doc = doc_with_changes(b"peer", 1);
    let change = doc.get_changes(&[]).remove(0).raw_bytes().to_vec();
    let limits = Limits::default();

    // Truncated at every length: never a panic, always refused.
    for len in 0..change.len() {
        let message = sync_message_with_changes(vec![change[..len].to_vec()]);
        assert!(
            guard::check_sync_message(&message, &limits).is_err(),
            "truncated to {len}"
        );
    }
    // A header claiming 2^60 bytes of body.
    let mut lying = change[..9].to_vec();
    uleb(1 << 60, &mut lying);
    assert!(matches!(
        guard::load_changes(&mut Automerge::new(), &lying, &limits),
        Err(GuardError::LengthExceedsInput {
            declared: 0x1000_0000_0000_0000,
            ..
        })
    ));
    // Wrong magic bytes and an unknown chunk type.
    let mut wrong = change.clone();
    wrong[0] ^= 0xff;
    assert!(matches!(
        guard::load_changes(&mut Automerge::new(), &wrong, &limits),
        Err(GuardError::Malformed(_))
    ));
    let mut wrong = change.clone();
    wrong[8] = 7;
    assert_eq!(
        guard::load_changes(&mut Automerge::new(), &wrong, &limits),
        Err(GuardError::Malformed("unknown chunk type"))
    );
}

#[test]
fn sync_message_counts_are_bounded() {
    let limits = Limits {
        max_heads: 2,
        max_changes_per_message: 1,
        ..Limits::default()
    };
    let mut heads = vec![0x42, 0x03];
    heads.extend([0u8; 96]);
    heads.extend([0, 0, 0]);
    assert!(matches!(
        guard::check_sync_message(&heads, &limits),
        Err(GuardError::TooMany {
            count: 3,
            limit: 2,
            ..
        })
    ));
    // A count of 2^63 hashes in a 12-byte message.
    let absurd = [
        0x42, 0x00, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
    ];
    assert!(matches!(
        guard::check_sync_message(&absurd, &Limits::default()),
        Err(GuardError::TooMany {
            count: 0x8000_0000_0000_0000,
            ..
        })
    ));
    let two_changes = sync_message_with_changes(vec![vec![0], vec![0]]);
    assert!(matches!(
        guard::check_sync_message(&two_changes, &limits),
        Err(GuardError::TooMany {
            count: 2,
            limit: 1,
            ..
        })
    ));
}

#[test]
fn wrong_types_are_refused() {
    let limits = Limits::default();
    let state = sync::State::new().encode();
    // A sync state is not a v1 message, a CBOR map is not a sync message,
    // a sync message is not a sync state or a document.
    assert!(guard::check_sync_message(&[0x44, 0, 0, 0, 0], &limits).is_err());
    assert!(guard::check_sync_message(&[0xa1, 0x61, b'a', 0x01], &limits).is_err());
    assert!(guard::decode_sync_state(&[0x42, 0, 0, 0, 0], &limits).is_err());
    assert!(guard::load_document(&[0x42, 0, 0, 0, 0], &limits).is_err());
    assert!(guard::decode_sync_state(&state, &limits).is_ok());
    // A sync state claiming 2^32 heads.
    assert!(matches!(
        guard::decode_sync_state(&[0x43, 0x80, 0x80, 0x80, 0x80, 0x10], &limits),
        Err(GuardError::TooMany { .. })
    ));
}

#[test]
fn frames_and_documents_have_size_caps() {
    let limits = Limits::default();
    assert_eq!(guard::check_frame_size(16 * MIB, &limits), Ok(()));
    assert_eq!(
        guard::check_frame_size(16 * MIB + 1, &limits),
        Err(GuardError::FrameTooLarge {
            size: 16 * MIB + 1,
            limit: 16 * MIB
        })
    );
    assert_eq!(
        guard::check_document_size(100 * MIB, 28 * MIB, &limits),
        Ok(())
    );
    assert_eq!(
        guard::check_document_size(100 * MIB, 28 * MIB + 1, &limits),
        Err(GuardError::DocumentTooLarge {
            size: 128 * MIB as u64 + 1,
            limit: 128 * MIB
        })
    );
    assert!(guard::check_document_size(usize::MAX, usize::MAX, &limits).is_err());
}

#[test]
fn document_op_cap_is_enforced_before_automerge() {
    let source = doc_with_changes(b"peer", 50);
    let limits = Limits {
        max_document_ops: 40,
        ..Limits::default()
    };
    // Loading a document over the cap is refused: its op columns are longer
    // than the cap.
    assert!(matches!(
        guard::load_document(&source.save(), &limits),
        Err(GuardError::TooMany { what, limit: 40, .. }) if what.contains("max_document_ops")
    ));
    // Receiving changes that could push a document over the cap is refused
    // before automerge applies them. The phone has 40 of the source's 50
    // changes; the last 10 would take it past the cap.
    let mut phone = doc_with_changes(b"peer", 40);
    let mut source = phone.fork();
    for i in 0..10 {
        let mut tx = source.transaction();
        tx.put(automerge::ROOT, format!("late-{i}"), i)
            .expect("put");
        tx.commit();
    }
    let limits = Limits {
        max_document_ops: phone.stats().num_ops + 5,
        ..Limits::default()
    };
    let mut refused = Vec::new();
    sync_until_quiet(&mut source, &mut phone, 20, |doc, state, bytes| {
        let ops_before = doc.stats().num_ops;
        let heads_before = doc.get_heads();
        if let Err(error) = guard::receive_sync_message(doc, state, bytes, &limits) {
            assert_eq!(doc.stats().num_ops, ops_before, "nothing was applied");
            assert_eq!(doc.get_heads(), heads_before);
            refused.push(error);
        }
    });
    assert!(
        matches!(refused.first(), Some(GuardError::TooManyOps { .. })),
        "{refused:?}"
    );
}

#[test]
fn run_length_op_bomb_expands_in_unguarded_automerge() {
    // 200 000 operations from a 52-byte change chunk.
    let bomb = run_length_op_bomb(200_000);
    assert!(bomb.len() < 64, "{} bytes", bomb.len());
    let mut doc = Automerge::new();
    doc.load_incremental(&bomb).expect("automerge loads it");
    assert_eq!(doc.stats().num_ops, 200_000);

    // The guard counts the runs without expanding them.
    assert!(matches!(
        guard::load_changes(&mut Automerge::new(), &bomb, &Limits::default()),
        Err(GuardError::TooMany {
            count: 200_000,
            limit: 100_000,
            ..
        })
    ));
    let limits = Limits {
        max_ops_per_change: 200_000,
        ..Limits::default()
    };
    let summary = guard::check_sync_message(&sync_message_with_changes(vec![bomb]), &limits)
        .expect("within a raised limit");
    assert_eq!(summary.ops, 200_000);
}

#[test]
fn run_length_op_bombs_are_refused() {
    let limits = Limits::default();
    // 2^40 operations in a change: at automerge's pace (about a million a
    // second) this is days of CPU and terabytes of RAM.
    let bomb = run_length_op_bomb(1 << 40);
    let message = sync_message_with_changes(vec![bomb.clone()]);
    let mut doc = doc_with_changes(b"server", 2);
    let mut state = sync::State::new();
    assert!(matches!(
        guard::receive_sync_message(&mut doc, &mut state, &message, &limits),
        Err(GuardError::TooMany {
            count: 0x100_0000_0000,
            ..
        })
    ));
    assert!(guard::load_changes(&mut doc, &bomb, &limits).is_err());

    // The same inside a DEFLATE-compressed document column, counted while
    // streaming through the inflater.
    let mut column = Vec::new();
    sleb(1 << 40, &mut column);
    column.push(0x01);
    let document = document_with_deflated_column(&deflate(&column));
    assert!(matches!(
        guard::load_document(&document, &limits),
        Err(GuardError::TooMany {
            count: 0x100_0000_0000,
            ..
        })
    ));
    // And an absurd literal count, refused before reading the literals.
    let mut column = Vec::new();
    sleb(-(1 << 40), &mut column);
    let document = document_with_deflated_column(&deflate(&column));
    assert!(matches!(
        guard::load_document(&document, &limits),
        Err(GuardError::TooMany { .. })
    ));
}

#[test]
fn cbor_truncated_absurd_and_deep_is_refused() {
    let limits = Limits::default();
    // A small automerge-repo-like message, truncated at every length.
    let mut frame = Vec::new();
    minicbor::Encoder::new(&mut frame)
        .map(3)
        .and_then(|e| e.str("type"))
        .and_then(|e| e.str("sync"))
        .and_then(|e| e.str("documentId"))
        .and_then(|e| e.str("3dzrq8bwmvwrMLm5idsXsXQWhVoV"))
        .and_then(|e| e.str("data"))
        .and_then(|e| e.bytes(&BLOOM_DIVIDE_BY_ZERO))
        .expect("encoding into a Vec");
    assert_eq!(guard::check_cbor(&frame, &limits), Ok(()));
    for len in 0..frame.len() {
        assert!(
            guard::check_cbor(&frame[..len], &limits).is_err(),
            "len {len}"
        );
    }
    // A byte string claiming 2^60 bytes.
    let mut absurd = vec![0x5b];
    absurd.extend((1u64 << 60).to_be_bytes());
    assert!(matches!(
        guard::check_cbor(&absurd, &limits),
        Err(GuardError::TooLong {
            len: 0x1000_0000_0000_0000,
            ..
        })
    ));
    // A map claiming 2^32 entries in six bytes.
    assert!(guard::check_cbor(&[0xbb, 0, 0, 0, 1, 0, 0, 0, 0], &limits).is_err());
    // 100 000 nested arrays, definite and indefinite.
    let mut deep = vec![0x81; 100_000];
    deep.push(0x00);
    assert_eq!(
        guard::check_cbor(&deep, &limits),
        Err(GuardError::CborTooDeep { limit: 16 })
    );
    let mut deep = vec![0x9f; 100_000];
    deep.extend(vec![0xff; 100_000]);
    assert_eq!(
        guard::check_cbor(&deep, &limits),
        Err(GuardError::CborTooDeep { limit: 16 })
    );
}

#[test]
fn cbor_walker_does_not_recurse() {
    // With the depth limit lifted, 100 000 nested arrays walk to the end on a
    // thread with a 64 KiB stack: the walker's stack is on the heap.
    let mut deep = vec![0x81; 100_000];
    deep.push(0x00);
    let limits = Limits {
        max_cbor_depth: usize::MAX,
        ..Limits::default()
    };
    let outcome = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || guard::check_cbor(&deep, &limits))
        .expect("spawn")
        .join()
        .expect("no stack overflow");
    assert_eq!(outcome, Ok(()));
}

/// A syntactically plausible sync message with random parameters: random
/// Bloom filters, random hashes and random change bytes.
fn plausible_sync_message() -> impl Strategy<Value = Vec<u8>> {
    let bloom = prop_oneof![
        Just(Vec::new()),
        (0u32..40, 0u32..40, 0u32..40, any::<u8>()).prop_map(|(n, b, p, fill)| {
            let mut bytes = Vec::new();
            uleb(n.into(), &mut bytes);
            uleb(b.into(), &mut bytes);
            uleb(p.into(), &mut bytes);
            bytes.resize(bytes.len() + (n as usize * b as usize).div_ceil(8), fill);
            bytes
        }),
        proptest::collection::vec(any::<u8>(), 0..12),
    ];
    let hash = proptest::array::uniform32(any::<u8>());
    (
        any::<bool>(),
        proptest::collection::vec(hash, 0..3),
        proptest::collection::vec(hash, 0..3),
        proptest::collection::vec((proptest::collection::vec(hash, 0..2), bloom), 0..3),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..2),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..3)),
    )
        .prop_map(|(v2, heads, need, haves, changes, flags)| {
            let mut out = vec![if v2 { 0x43 } else { 0x42 }];
            for hashes in [&heads, &need] {
                uleb(hashes.len() as u64, &mut out);
                hashes.iter().for_each(|h| out.extend(h));
            }
            uleb(haves.len() as u64, &mut out);
            for (last_sync, bloom) in &haves {
                uleb(last_sync.len() as u64, &mut out);
                last_sync.iter().for_each(|h| out.extend(h));
                uleb(bloom.len() as u64, &mut out);
                out.extend(bloom);
            }
            uleb(changes.len() as u64, &mut out);
            for change in &changes {
                uleb(change.len() as u64, &mut out);
                out.extend(change);
            }
            if let Some(flags) = flags {
                uleb(flags.len() as u64, &mut out);
                out.extend(flags);
            }
            out
        })
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_guards(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let limits = Limits::default();
        let _ = guard::check_cbor(&bytes, &limits);
        let _ = guard::check_sync_message(&bytes, &limits);
        let _ = guard::decode_sync_state(&bytes, &limits);
        let _ = guard::load_changes(&mut Automerge::new(), &bytes, &limits);
        let mut doc = doc_with_changes(b"server", 2);
        let mut state = sync::State::new();
        let received = guard::receive_sync_message(&mut doc, &mut state, &bytes, &limits);
        prop_assert_ne!(received, Err(GuardError::AutomergePanicked));
        prop_assert!(guard::generate_sync_message(&doc, &mut state).is_ok());
    }

    #[test]
    fn random_sync_messages_the_guard_passes_do_not_panic_automerge(
        bytes in plausible_sync_message()
    ) {
        let limits = Limits::default();
        if guard::check_sync_message(&bytes, &limits).is_ok() {
            // Unguarded automerge, on input the guard let through, must not
            // panic receiving it or generating the reply.
            let mut doc = doc_with_changes(b"server", 4);
            let mut state = sync::State::new();
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                if let Ok(message) = sync::Message::decode(&bytes) {
                    let _ = doc.receive_sync_message(&mut state, message);
                }
                doc.generate_sync_message(&mut state).map(|m| m.encode())
            }));
            prop_assert!(outcome.is_ok(), "automerge panicked on {:02x?}", bytes);
        }
    }
}

/// Changes that automerge 0.12 accepts but then cannot handle: a hostile
/// writer could make the server acknowledge a change it cannot reload after
/// a restart, or make automerge panic applying it. The guard refuses each
/// one before automerge sees it; a real change still passes.
#[test]
fn changes_automerge_mishandles_are_refused() {
    let limits = Limits::default();
    let crasher = |name: &str| {
        let path = format!("{}/tests/fuzz-crashers/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).expect("checked-in crasher")
    };

    // A change with a column automerge does not know (id 0 typed as a
    // string): automerge loads it, but the document it saves no longer
    // reloads, so a server would acknowledge what it loses on restart.
    let unknown_column = crasher("stored_bytes/crash-53cb311adc34414434e814b33b6888d846ef1f51");
    let mut unguarded = Automerge::new();
    unguarded
        .load_incremental(&unknown_column)
        .expect("automerge takes the change");
    assert!(
        Automerge::load(&unguarded.save()).is_err(),
        "automerge cannot reload what it saved"
    );
    assert!(matches!(
        guard::load_changes(&mut Automerge::new(), &unknown_column, &limits),
        Err(GuardError::Malformed(_))
    ));

    // An actor that no operation refers to (automerge panics applying it),
    // and value lengths that overrun the raw value column (it panics
    // slicing).
    for name in [
        "stored_bytes/unreferenced-other-actor",
        "stored_bytes/document-raw-value-crosses-slab",
    ] {
        assert!(
            matches!(
                guard::load_document(&crasher(name), &limits),
                Err(GuardError::Malformed(_))
            ),
            "{name} is refused as malformed"
        );
    }

    // Extra bytes after a change's columns: automerge keeps them verbatim,
    // but no automerge release writes them, and they would be opaque bytes
    // that every peer stores and forwards forever.
    let doc = doc_with_changes(b"peer", 1);
    let change = doc.get_changes(&[]).remove(0).raw_bytes().to_vec();
    let (chunk_type, body) = chunk_body(&change);
    assert!(guard::load_changes(&mut Automerge::new(), &change, &limits).is_ok());
    let mut extra = body.to_vec();
    extra.push(0);
    let with_extra = chunk(chunk_type, checksum(chunk_type, &extra), &extra);
    assert_eq!(
        guard::load_changes(&mut Automerge::new(), &with_extra, &limits),
        Err(GuardError::TrailingBytes {
            what: "change chunk",
            count: 1
        })
    );
}

/// The server binds actor ids to devices, so it must learn who wrote each
/// change before automerge applies it: plain and compressed change chunks
/// name their author; document chunks are counted for the caller to load.
#[test]
fn sync_message_authors_name_each_change_chunk() {
    let limits = Limits::default();
    let doc = doc_with_changes(b"alice-actor", 2);
    let changes: Vec<Vec<u8>> = doc
        .get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    let bomb = compressed_change_bomb(1024);
    let mut all = changes.clone();
    all.push(bomb);
    let authors = guard::sync_message_authors(&sync_message_with_changes(all), &limits)
        .expect("a valid message");
    let mut expected = vec![b"alice-actor".to_vec(); changes.len()];
    expected.push(b"bomb-actor".to_vec());
    assert_eq!(authors.change_actors, expected);
    assert_eq!(authors.document_chunks, 0);
    let whole = sync_message_with_changes(vec![doc.save()]);
    let authors = guard::sync_message_authors(&whole, &limits).expect("a valid message");
    assert!(authors.change_actors.is_empty());
    assert_eq!(authors.document_chunks, 1);
}

/// Rich-text marks are not part of the case schema, and automerge 0.12
/// applies a change's marks without the order check it makes on documents:
/// a mark end without its begin corrupts its mark index. The fuzzers found a
/// stored chunk that made a debug build panic twice and abort (no
/// `catch_unwind` helps there) and that a release build loads into a
/// document whose own `save()` does not load. Every chunk with a mark
/// operation is refused, whatever way it arrives.
#[test]
fn rich_text_marks_are_refused() {
    let limits = Limits::default();
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    let text = tx
        .put_object(automerge::ROOT, "circumstances", automerge::ObjType::Text)
        .expect("text");
    tx.splice_text(&text, 0, 0, "last call from Izium")
        .expect("splice");
    tx.commit();
    let before = doc.get_heads();
    let plain = doc.save();
    let mut marked = doc.fork();
    let mut tx = marked.transaction();
    tx.mark(
        &text,
        automerge::marks::Mark::new("bold".to_owned(), true, 0, 4),
        automerge::marks::ExpandMark::None,
    )
    .expect("mark");
    tx.commit();
    let mark_change = marked
        .get_changes(&before)
        .into_iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect::<Vec<_>>();
    assert_eq!(mark_change.len(), 1);
    let refusal =
        GuardError::Malformed("a rich-text mark operation (casesync documents have no marks)");

    // The same document without the mark passes: the check is the mark.
    assert!(guard::load_document(&plain, &limits).is_ok());
    assert_eq!(
        guard::load_document(&marked.save(), &limits).err(),
        Some(refusal.clone())
    );
    let mut into = guard::load_document(&plain, &limits).expect("plain loads");
    assert_eq!(
        guard::load_changes(&mut into, &mark_change[0], &limits).err(),
        Some(refusal.clone())
    );
    assert_eq!(into.get_heads(), before, "nothing applied");

    let mut state = sync::State::new();
    let message = sync_message_with_changes(mark_change);
    assert_eq!(
        guard::receive_sync_message(&mut into, &mut state, &message, &limits).err(),
        Some(refusal.clone())
    );
    assert_eq!(into.get_heads(), before, "nothing applied");

    // The fuzzers' input: a change whose mark end has no begin.
    let path = format!(
        "{}/tests/fuzz-crashers/stored_bytes/crash-813070c3ab52af99f0c39ad02de2eaf65bf7e360",
        env!("CARGO_MANIFEST_DIR")
    );
    let found = std::fs::read(path).expect("checked-in crasher");
    assert_eq!(guard::load_document(&found, &limits).err(), Some(refusal));
}
