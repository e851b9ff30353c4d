//! Inputs shared by the engine benchmarks: a case document with history,
//! and the sync messages a real exchange produces for it.

#![allow(dead_code)]

use automerge::sync::{self, SyncDoc};
use automerge::{ActorId, Automerge};
use sync_core::ids::{DocumentId, PeerId};
use sync_core::model::{self, CaseInit, DisappearanceField, Edit, Field, FieldValue, PersonField};
use sync_core::protocol::{self, Message};

pub const NOW: i64 = 1_700_000_000_000;

pub fn actor(n: u8) -> ActorId {
    ActorId::from([n; 16])
}

pub fn peer(n: usize) -> PeerId {
    PeerId::new(format!("user:u{n}:phone")).expect("valid peer id")
}

pub fn doc_id() -> DocumentId {
    DocumentId::from_bytes([7; 16])
}

/// A case created by the server, then `edits` edits by `actor`.
pub fn case_with_edits(edits: usize, actor_byte: u8) -> Automerge {
    let mut doc = Automerge::new().with_actor(actor(1));
    model::create_case(
        &mut doc,
        &CaseInit {
            created_by: "owner".into(),
            coordination: None,
        },
        NOW,
    )
    .expect("template");
    let mut doc = doc.fork().with_actor(actor(actor_byte));
    add_edits(&mut doc, edits, 0);
    doc
}

/// `n` edits alternating between a register and a narrative splice.
pub fn add_edits(doc: &mut Automerge, n: usize, start: usize) {
    for i in start..start + n {
        let edit = if i % 2 == 0 {
            Edit::SetField {
                field: Field::Person(PersonField::GivenName),
                value: FieldValue::Str(format!("name {i}")),
            }
        } else {
            Edit::SpliceText {
                field: Field::Disappearance(DisappearanceField::Circumstances),
                pos: 0,
                delete: 0,
                insert: format!("word {i} "),
            }
        };
        model::apply_edit(doc, &edit, "relative", NOW + i as i64).expect("edit");
    }
}

/// Runs the sync protocol between two documents until both are quiet,
/// returning both sync states.
pub fn sync_pair(a: &mut Automerge, b: &mut Automerge) -> (sync::State, sync::State) {
    let mut sa = sync::State::new();
    let mut sb = sync::State::new();
    for _ in 0..20 {
        let ma = a.generate_sync_message(&mut sa);
        let mb = b.generate_sync_message(&mut sb);
        if ma.is_none() && mb.is_none() {
            break;
        }
        if let Some(m) = ma {
            b.receive_sync_message(&mut sb, m).expect("b receives");
        }
        if let Some(m) = mb {
            a.receive_sync_message(&mut sa, m).expect("a receives");
        }
    }
    (sa, sb)
}

/// The sync message a writer sends after making `new_changes` changes on
/// top of `base`, once it knows the server's heads: it carries them all.
/// Returns the server's document (at `base`), the server's persisted sync
/// state for the writer, and the message.
pub fn batch_message(base: &Automerge, new_changes: usize) -> (Automerge, Vec<u8>, Vec<u8>) {
    let mut server = base.clone();
    let mut writer = base.fork().with_actor(actor(9));
    let (server_state, mut writer_state) = sync_pair(&mut server, &mut writer);
    add_edits(&mut writer, new_changes, 10_000);
    let msg = writer
        .generate_sync_message(&mut writer_state)
        .expect("a message with the new changes");
    (server, server_state.encode(), msg.encode())
}

/// A `sync` frame as a device sends it.
pub fn sync_frame(data: Vec<u8>) -> Vec<u8> {
    protocol::encode(&Message::Sync {
        sender_id: peer(1),
        target_id: PeerId::new("server").expect("valid"),
        document_id: doc_id(),
        data,
    })
}
