//! The first reply to a device that has nothing, built from storage.
//!
//! A device that opens a case it has never seen sends a sync message with
//! no heads, no needs and no changes. automerge answers it with the whole
//! document (`save()`), which needs the document loaded: about 100 ms for a
//! 20,000-change case, then a save that deflates everything again. The
//! stored snapshot and the change log after it are already that answer:
//! this builds automerge's reply from them, so the server can send it
//! before (and while) the document loads.
//!
//! The reply is the message automerge's own `generate_sync_message` sends
//! such a peer (a v2 message whose changes are the whole document), except:
//! - the changes are the snapshot chunk followed by the tail's change
//!   chunks, which `load_incremental` (what `receive_sync_message` calls on
//!   the joined chunks) reads in one go;
//! - its `have` summary is the one automerge writes once both sides share
//!   the reply's heads: those heads as the last sync, and an empty Bloom
//!   filter (nothing since). automerge's summary for a fresh peer is a
//!   Bloom filter of every change in the case, which the device, having
//!   had nothing, does not need. A `have` there is not optional: without
//!   one, the device would send its next edits only when asked for them.
//!
//! Everything stored is durable, so the reply keeps the durability gate's
//! promise: no heads go out before the changes behind them are on disk.

use automerge::sync::{BloomFilter, ChunkList, Have, Message, MessageFlags, MessageVersion};
use automerge::ChangeHash;

use crate::guard::{self, GuardError, Limits};

/// Whether `message` (a peer's sync message, not yet applied) opens a sync
/// from nothing: no heads, no needs, no changes, and the flags section that
/// every peer able to read a whole-document (v2) reply sends. A message the
/// guards refuse is not.
///
/// A peer that says it is read-only (it applies nothing it receives) is
/// not: automerge sends such a peer no changes.
pub fn opens_from_nothing(message: &[u8], limits: &Limits) -> bool {
    // The type byte, then zero heads and zero needs, before the whole walk.
    if !matches!(message, [0x42 | 0x43, 0, 0, ..]) {
        return false;
    }
    let empty = matches!(
        guard::check_sync_message(message, limits),
        Ok(s) if s.heads == 0 && s.needs == 0 && s.changes == 0 && s.has_flags
    );
    empty
        && guard::catch_automerge(|| Message::decode(message))
            .ok()
            .and_then(Result::ok)
            .and_then(|m| m.flags)
            .is_some_and(|f| !f.contains(MessageFlags::READ_ONLY))
}

/// The reply to a device with nothing, and the heads it carries.
#[derive(Debug, Clone)]
pub struct ColdReply {
    /// The encoded sync message.
    pub message: Vec<u8>,
    /// The heads it tells the device, sorted.
    pub heads: Vec<ChangeHash>,
}

impl ColdReply {
    /// The sync state to start this peer from once the document is
    /// loaded: both sides share the reply's heads. A fresh state would
    /// make the first message after the reply carry a Bloom filter of
    /// every change in the case.
    pub fn peer_state(&self) -> Vec<u8> {
        let mut state = automerge::sync::State::new();
        state.shared_heads.clone_from(&self.heads);
        state.encode()
    }
}

/// The reply to a peer whose message [`opens_from_nothing`], from the
/// stored `snapshot` (if any) and the `changes` logged after it, in log
/// order. `read_only` is whether the server will not apply this peer's
/// changes (automerge's read-only flag, as `DocSync` sets it).
///
/// Refuses stored bytes the guards refuse, and a reply that would not fit in
/// one frame (`Limits::max_frame_bytes`); the caller then loads the
/// document and answers the usual way.
pub fn reply_from_storage(
    snapshot: Option<&[u8]>,
    changes: &[Vec<u8>],
    read_only: bool,
    limits: &Limits,
) -> Result<ColdReply, GuardError> {
    let size = snapshot.map_or(0, <[u8]>::len) + changes.iter().map(Vec::len).sum::<usize>();
    // Headroom for the message's own fields and the protocol envelope.
    guard::check_frame_size(size.saturating_add(64 * 1024), limits)?;
    let heads = guard::stored_heads(snapshot, changes, limits)?;
    let mut chunks = Vec::with_capacity(changes.len() + 1);
    if let Some(s) = snapshot {
        chunks.push(s.to_vec());
    }
    chunks.extend(changes.iter().cloned());
    let mut flags = MessageFlags::new();
    flags.set(MessageFlags::SUPPORTS_SYNC_RESET);
    if read_only {
        flags.set(MessageFlags::READ_ONLY);
    }
    let have = Have {
        last_sync: heads.clone(),
        bloom: BloomFilter::from_hashes(std::iter::empty::<ChangeHash>()),
    };
    let message = Message {
        heads: heads.clone(),
        need: Vec::new(),
        have: vec![have],
        changes: ChunkList::from(chunks),
        flags: Some(flags),
        version: MessageVersion::V2,
    };
    let message = guard::catch_automerge(|| message.encode())?;
    Ok(ColdReply { message, heads })
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::sync::{State, SyncDoc};
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, Automerge, ROOT};

    fn first_message_of_a_device_with_nothing() -> Vec<u8> {
        let empty = Automerge::new();
        let mut state = State::new();
        empty
            .generate_sync_message(&mut state)
            .expect("a first message")
            .encode()
    }

    #[test]
    fn only_a_peer_with_nothing_opens_from_nothing() {
        let limits = Limits::default();
        assert!(opens_from_nothing(
            &first_message_of_a_device_with_nothing(),
            &limits
        ));
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "k", 1).expect("put");
        let mut state = State::new();
        let has_something = doc
            .sync()
            .generate_sync_message(&mut state)
            .expect("a first message")
            .encode();
        assert!(!opens_from_nothing(&has_something, &limits));
        assert!(!opens_from_nothing(b"\x42garbage", &limits));
        assert!(!opens_from_nothing(&[], &limits));
        // A read-only peer with nothing: automerge would send it nothing.
        let mut read_only = State::new_read_only();
        let first = Automerge::new()
            .generate_sync_message(&mut read_only)
            .expect("a first message")
            .encode();
        assert!(!opens_from_nothing(&first, &limits));
    }

    #[test]
    fn the_peer_state_after_the_reply_shares_its_heads() {
        let limits = Limits::default();
        let mut server = AutoCommit::new();
        server.put(ROOT, "k", 1).expect("put");
        let reply = reply_from_storage(Some(&server.save()), &[], false, &limits).expect("reply");
        let state = State::decode(&reply.peer_state()).expect("decodes");
        assert_eq!(state.shared_heads, server.get_heads());
    }

    #[test]
    fn a_device_with_nothing_gets_the_whole_document_from_storage() {
        let limits = Limits::default();
        let mut server = AutoCommit::new();
        for i in 0..20 {
            server.put(ROOT, "k", i).expect("put");
            server.commit();
        }
        let snapshot = server.save();
        let covered = server.get_heads();
        for i in 0..5 {
            server.put(ROOT, "t", i).expect("put");
            server.commit();
        }
        let tail: Vec<Vec<u8>> = server
            .get_changes(&covered)
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        for (snapshot, tail) in [
            (Some(snapshot.as_slice()), tail.clone()),
            (None, {
                server
                    .get_changes(&[])
                    .iter()
                    .map(|c| c.raw_bytes().to_vec())
                    .collect()
            }),
        ] {
            let reply = reply_from_storage(snapshot, &tail, false, &limits).expect("reply");
            assert_eq!(reply.heads, server.get_heads());
            let mut device = Automerge::new();
            let mut state = State::new();
            let message = Message::decode(&reply.message).expect("decodes");
            assert_eq!(message.heads, server.get_heads());
            device
                .receive_sync_message(&mut state, message)
                .expect("applies");
            assert_eq!(device.get_heads(), server.get_heads());
            // The device's answer asks for nothing and offers nothing new.
            let answer = device.generate_sync_message(&mut state).expect("an answer");
            assert!(answer.need.is_empty());
            assert!(answer.changes.is_empty());
            assert_eq!(answer.heads, server.get_heads());
            // An edit made before the server says anything more goes out
            // in the device's next message, as after automerge's own reply.
            let mut device = AutoCommit::load(&device.save()).expect("reloads");
            device.put(ROOT, "d", 1).expect("put");
            device.commit();
            let edit = device
                .sync()
                .generate_sync_message(&mut state)
                .expect("the edit");
            assert_eq!(edit.changes.len(), 1, "the new change is sent unasked");
        }
    }

    #[test]
    fn read_only_peers_are_told_so() {
        let limits = Limits::default();
        let mut server = AutoCommit::new();
        server.put(ROOT, "k", 1).expect("put");
        let reply = reply_from_storage(Some(&server.save()), &[], true, &limits).expect("reply");
        let mut device = Automerge::new();
        let mut state = State::new();
        device
            .receive_sync_message(
                &mut state,
                Message::decode(&reply.message).expect("decodes"),
            )
            .expect("applies");
        assert!(state.is_peer_read_only());
    }

    #[test]
    fn a_reply_that_would_not_fit_in_a_frame_is_refused() {
        let mut server = AutoCommit::new();
        server.put(ROOT, "k", 1).expect("put");
        let snapshot = server.save();
        // The reply keeps 64 KiB of headroom for its envelope.
        let mut limits = Limits {
            max_frame_bytes: 64 * 1024 + snapshot.len() - 1,
            ..Limits::default()
        };
        assert!(reply_from_storage(Some(&snapshot), &[], false, &limits).is_err());
        limits.max_frame_bytes += 1;
        assert!(reply_from_storage(Some(&snapshot), &[], false, &limits).is_ok());
    }
}
