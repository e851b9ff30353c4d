//! Every input a fuzz target ever crashed on, and every hostile seed of the
//! fuzz corpus, replayed through the entry point it attacks. Each must be
//! refused with an error by the guards: not a panic, and not the
//! `catch_unwind` backstop (`GuardError::AutomergePanicked`), because the
//! wasm client aborts on panics and the server poisons the document.
//!
//! Inputs live in `sync-core/tests/fuzz-crashers/<target>/` (written by
//! `scripts/fuzz.sh` when a target crashes) and `fuzz/corpus/<target>/hostile-*`
//! (the seed corpus, written by `fuzz/harness/src/bin/make-seeds.rs`).
//! FUZZING.md describes the targets; `fuzz/harness` holds their full
//! harnesses, which also replay these files (`cargo test` in `fuzz/`),
//! including the token checks that live in the server crate.

#![allow(clippy::expect_used)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use automerge::Automerge;
use sync_core::engine::{Access, DocSync, DocSyncError, Policy, ServerSession, SessionEvent};
use sync_core::guard::{self, GuardError, Limits};
use sync_core::ids::{DocumentId, PeerId, StorageId};
use sync_core::protocol::{self, Message, PeerMetadata};

/// The peers and seeded case document of the fuzz harness, shared so that a
/// crasher replays here against the same document it crashed.
#[allow(dead_code)]
#[path = "../../fuzz/harness/src/fixture.rs"]
mod fixture;

/// `token_and_first_message` inputs start with a mode byte; this one (mod 5)
/// is "the first frame on a new socket". The token modes need the server
/// crate and are replayed by `fuzz/harness/tests/replay.rs` instead.
const MODE_FIRST_MESSAGE: u8 = 2;

struct Permissive;

impl Policy for Permissive {
    fn access(&self, _peer: &PeerId, _doc: &DocumentId) -> Access {
        Access::Write
    }
}

fn peer(s: &str) -> PeerId {
    PeerId::new(s).expect("valid peer id")
}

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("sync-core is in the repository")
        .to_path_buf()
}

/// The crashers and hostile seeds of one target, sorted by path.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let crashers = repo_dir()
        .join("sync-core/tests/fuzz-crashers")
        .join(target);
    let seeds = repo_dir().join("fuzz/corpus").join(target);
    let mut paths = Vec::new();
    for (dir, only_hostile) in [(crashers, false), (seeds, true)] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable directory").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if name.starts_with('.') || name.ends_with(".md") || !path.is_file() {
                continue;
            }
            if only_hostile && !name.starts_with("hostile-") {
                continue;
            }
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("readable input");
            (p.display().to_string(), bytes)
        })
        .collect()
}

/// Runs `check` on every input, and fails listing every input whose check
/// failed (rather than stopping at the first).
fn check_all(inputs: Vec<(String, Vec<u8>)>, check: impl Fn(&str, &[u8])) {
    let mut failures = Vec::new();
    for (name, bytes) in &inputs {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| check(name, bytes))) {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| format!("{name}: panicked"));
            failures.push(message);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs were not refused as they must be:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

/// Refused by a guard, not by the panic backstop.
fn assert_guard_refusal(name: &str, entry: &str, e: &GuardError) {
    assert!(
        *e != GuardError::AutomergePanicked,
        "{name}: {entry} reached automerge and it panicked; the guards must refuse it first"
    );
}

/// The seeded case on the server with the fuzzing peer.
fn server_doc() -> (DocSync, PeerId) {
    let mut sync = DocSync::new(fixture::build_seeded_case(), Limits::default());
    let p = peer(fixture::PEER);
    sync.add_peer(p.clone(), None, false);
    (sync, p)
}

/// `DocSync::handle_sync` of the seeded case, then a reply: refused.
fn assert_sync_refused(name: &str, data: &[u8]) {
    let (mut sync, p) = server_doc();
    let heads = sync.doc().get_heads();
    match sync.handle_sync(&p, data) {
        Ok(()) => panic!("{name}: sync message accepted"),
        Err(DocSyncError::Guard(e)) => {
            assert_guard_refusal(name, "handle_sync", &e);
            if matches!(
                e,
                GuardError::DocumentTooManyOps { .. } | GuardError::NotReproducible
            ) {
                // Refused after automerge ran: the in-memory document is
                // dropped and nothing of it is stored.
                assert!(sync.is_poisoned(), "{name}: the document is dropped");
                assert!(
                    sync.take_persist_requests().is_empty(),
                    "{name}: nothing stored"
                );
            } else {
                assert_eq!(sync.doc().get_heads(), heads, "{name}: document untouched");
            }
        }
        Err(e) => panic!("{name}: {e}"),
    }
    // The reply after a refusal is generated normally (or not at all, for a
    // poisoned document), never with a panic.
    let _ = sync.poll_outgoing();
}

fn new_session() -> ServerSession {
    ServerSession::new(
        peer(fixture::SERVER_PEER),
        StorageId::new(fixture::SERVER_STORAGE).expect("valid storage id"),
        peer(fixture::PEER),
        Limits::default(),
    )
}

fn join_frame() -> Vec<u8> {
    protocol::encode(&Message::Join {
        sender_id: peer(fixture::PEER),
        supported_protocol_versions: vec![protocol::PROTOCOL_VERSION.to_owned()],
        metadata: Some(PeerMetadata {
            storage_id: Some(StorageId::new("phone-storage").expect("valid storage id")),
            is_ephemeral: false,
        }),
    })
}

#[test]
fn frame_crashers_are_refused() {
    let inputs = inputs("frame_to_message");
    assert!(
        inputs.len() >= 10,
        "the hostile frame seeds are found ({})",
        inputs.len()
    );
    check_all(inputs, |name, frame| {
        let _ = protocol::decode(frame);
        let mut session = new_session();
        session
            .handle_frame(&join_frame(), &Permissive)
            .expect("a valid join");
        match session.handle_frame(frame, &Permissive) {
            Err(sync_core::engine::SessionError::Guard(e)) => {
                assert_guard_refusal(name, "handle_frame", &e);
                assert!(session.is_closed());
            }
            Err(_) => assert!(session.is_closed(), "{name}: session closed"),
            Ok(events) => {
                // Routed: then the document must refuse what it carries.
                let data: Vec<Vec<u8>> = events
                    .into_iter()
                    .filter_map(|e| match e {
                        SessionEvent::Sync { data, .. } => Some(data),
                        _ => None,
                    })
                    .collect();
                assert!(!data.is_empty(), "{name}: frame accepted");
                for data in data {
                    assert_sync_refused(name, &data);
                }
            }
        }
        while let Some(out) = session.poll_transmit() {
            protocol::decode(&out).expect("our own frames decode");
        }
    });
}

#[test]
fn sync_message_crashers_are_refused() {
    let inputs = inputs("sync_into_document");
    assert!(
        inputs.len() >= 10,
        "the hostile sync message seeds are found ({})",
        inputs.len()
    );
    check_all(inputs, assert_sync_refused);
}

#[test]
fn stored_bytes_crashers_are_refused() {
    let inputs = inputs("stored_bytes");
    assert!(
        inputs.len() >= 5,
        "the hostile stored-bytes seeds are found ({})",
        inputs.len()
    );
    let limits = Limits::default();
    check_all(inputs, |name, bytes| {
        match guard::load_document(bytes, &limits) {
            Ok(_) => panic!("{name}: loaded as a document"),
            Err(e) => assert_guard_refusal(name, "load_document", &e),
        }
        for (mut doc, seeded) in [
            (fixture::build_seeded_case(), true),
            (Automerge::new(), false),
        ] {
            let heads = doc.get_heads();
            match guard::load_changes(&mut doc, bytes, &limits) {
                // Into an empty document, a change whose dependencies are
                // missing is only held back by automerge: nothing is
                // applied, which is harmless. Into the seeded case (what
                // the fuzzer attacked) it must be refused.
                Ok(_) if !seeded && doc.get_heads() == heads => {}
                Ok(_) => panic!("{name}: loaded as changes"),
                Err(e) => {
                    assert_guard_refusal(name, "load_changes", &e);
                    if !matches!(e, GuardError::DocumentTooManyOps { .. }) {
                        assert_eq!(doc.get_heads(), heads, "{name}: document untouched");
                    }
                }
            }
        }
        match guard::decode_sync_state(bytes, &limits) {
            Ok(_) => panic!("{name}: decoded as a sync state"),
            Err(e) => assert_guard_refusal(name, "decode_sync_state", &e),
        }
    });
}

#[test]
fn first_message_crashers_are_refused() {
    let first_messages: Vec<(String, Vec<u8>)> = inputs("token_and_first_message")
        .into_iter()
        .filter_map(|(name, input)| match input.split_first() {
            Some((mode, frame)) if mode % 5 == MODE_FIRST_MESSAGE => Some((name, frame.to_vec())),
            _ => None,
        })
        .collect();
    assert!(
        first_messages.len() >= 3,
        "the hostile first-message seeds are found ({})",
        first_messages.len()
    );
    check_all(first_messages, |name, frame| {
        let mut session = new_session();
        match session.handle_frame(frame, &Permissive) {
            Ok(events) => panic!("{name}: first message accepted: {events:?}"),
            Err(sync_core::engine::SessionError::Guard(e)) => {
                assert_guard_refusal(name, "handle_frame", &e);
            }
            Err(_) => {}
        }
        assert!(session.is_closed(), "{name}: session closed");
    });
}

/// Crashers that reach a panic deep inside automerge 0.12's change
/// application (an internal `assert!` of its list/text untangler on
/// inconsistent operations), which no structural guard can see without
/// re-implementing automerge's semantics. They live in
/// `fuzz-crashers/<target>/backstop/`. The guarantee for them is the
/// backstop's: the message is refused (`AutomergePanicked` from
/// `catch_automerge`), the document is poisoned so the server drops it and
/// reloads it from storage (nothing of the message was stored), and the
/// refusal is an error, not a crash of the process. FUZZING.md lists them.
#[test]
fn backstop_crashers_are_refused_and_poison_the_document() {
    let mut seen = 0;
    for (name, frame) in backstop_inputs("frame_to_message") {
        let mut session = new_session();
        session
            .handle_frame(&join_frame(), &Permissive)
            .expect("a valid join");
        let events = session
            .handle_frame(&frame, &Permissive)
            .expect("the frame itself is well-formed");
        for event in events {
            if let SessionEvent::Sync { data, .. } = event {
                assert_backstop_sync(&name, &data);
                seen += 1;
            }
        }
    }
    for (name, data) in backstop_inputs("sync_into_document") {
        assert_backstop_sync(&name, &data);
        seen += 1;
    }
    let limits = Limits::default();
    for (name, bytes) in backstop_inputs("stored_bytes") {
        // A stored document automerge panics on is an error, never a
        // crash, and never a document.
        assert!(
            guard::load_document(&bytes, &limits).is_err(),
            "{name}: loaded as a document"
        );
        let mut doc = fixture::build_seeded_case();
        let heads = doc.get_heads();
        // After an error (`AutomergePanicked` too) the caller drops the
        // document; accepted, it must have changed nothing.
        if guard::load_changes(&mut doc, &bytes, &limits).is_ok() {
            assert_eq!(doc.get_heads(), heads, "{name}: loaded as changes");
        }
        seen += 1;
    }
    assert!(seen >= 3, "the backstop crashers are replayed ({seen})");
}

/// The inputs in `fuzz-crashers/<target>/backstop/`.
fn backstop_inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = repo_dir().join(format!("sync-core/tests/fuzz-crashers/{target}/backstop"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .map(|entry| {
            let path = entry.expect("entry").path();
            let bytes = std::fs::read(&path).expect("crasher");
            (path.display().to_string(), bytes)
        })
        .collect()
}

/// A sync message only the backstop refuses, into the seeded case: refused
/// (`AutomergePanicked`), the document poisoned, nothing to store; or
/// refused by a guard that has learned to see it (then move it up a level).
fn assert_backstop_sync(name: &str, data: &[u8]) {
    let (mut sync, p) = server_doc();
    let heads = sync.doc().get_heads();
    let r = sync.handle_sync(&p, data);
    match r {
        Err(DocSyncError::Guard(GuardError::AutomergePanicked | GuardError::NotReproducible)) => {
            assert!(sync.is_poisoned(), "{name}: the document is dropped");
            assert!(
                sync.take_persist_requests().is_empty(),
                "{name}: nothing stored"
            );
        }
        Err(DocSyncError::Guard(_)) => assert_eq!(sync.doc().get_heads(), heads),
        other => panic!("{name}: {other:?}"),
    }
}

/// A sync message (found by fuzzing a release build) whose change automerge
/// 0.12 accepts and then lists as other bytes: stored, it would reload as a
/// different change. Unguarded, the heads automerge reports are not what its
/// stored changes rebuild; `guard::new_changes` (which `DocSync` stores
/// through) refuses it, and the document is dropped with nothing stored.
#[test]
fn a_change_automerge_cannot_reproduce_is_not_stored() {
    use automerge::sync::{self, SyncDoc};
    let data = std::fs::read(
        repo_dir().join(
            "sync-core/tests/fuzz-crashers/sync_into_document/crash-6bdb6dabedf6d2e900541e91109c5544dad69e73",
        ),
    )
    .expect("checked-in crasher");
    let limits = Limits::default();

    let mut doc = fixture::build_seeded_case();
    let before = doc.get_heads();
    let message = sync::Message::decode(&data).expect("a sync message");
    doc.receive_sync_message(&mut sync::State::new(), message)
        .expect("automerge accepts it");
    assert_ne!(doc.get_heads(), before, "automerge applied a change");
    let listed = doc.get_changes(&before);
    let mut rebuilt = fixture::build_seeded_case();
    for change in &listed {
        guard::load_changes(&mut rebuilt, change.raw_bytes(), &limits).expect("reloads");
    }
    assert_ne!(
        rebuilt.get_heads(),
        doc.get_heads(),
        "what automerge lists for storage rebuilds another document"
    );
    assert_eq!(
        guard::new_changes(&doc, &before).err(),
        Some(GuardError::NotReproducible)
    );

    let (mut sync, p) = server_doc();
    assert!(matches!(
        sync.handle_sync(&p, &data),
        Err(DocSyncError::Guard(GuardError::NotReproducible))
    ));
    assert!(sync.is_poisoned());
    assert!(sync.take_persist_requests().is_empty());
}
