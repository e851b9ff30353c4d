//! The fixed peers and the seeded case document every target starts from.
//!
//! `sync-core/tests/fuzz_regressions.rs` includes this file with `#[path]`,
//! so crashers replay there against the very same document. It may use only
//! `std`, `automerge` and `sync_core`.

use automerge::{ActorId, Automerge};
use sync_core::model::{self, CaseInit, Edit, Field, FieldValue, ItemRef};

/// The device on the other end of the connection. The golden frames in
/// `sync-core/tests/golden` were sent by this peer.
pub const PEER: &str = "user:olena:phone-1";
/// A second device, connected read-only.
pub const READER: &str = "user:olena:laptop-1";
/// The server's peer id in the golden frames.
pub const SERVER_PEER: &str = "casesync-golden-server";
pub const SERVER_STORAGE: &str = "casesync-fuzz-storage";
/// The document id in the seeded sync frames.
pub const DOCUMENT: [u8; 16] = [0x5e; 16];
/// Commit time of the seeded case, in milliseconds.
pub const T0: i64 = 1_700_000_000_000;

/// Builds the seeded case document: the template and a few edits, written
/// by a fixed actor so that every run starts from the same bytes.
pub fn build_seeded_case() -> Automerge {
    let mut doc = Automerge::new().with_actor(ActorId::from([0x01; 16].as_slice()));
    let author = "user:olena";
    model::create_case(
        &mut doc,
        &CaseInit {
            created_by: author.into(),
            coordination: None,
        },
        T0,
    )
    .expect("the template applies to an empty document");
    let source = model::ItemId::new("s1").expect("valid item id");
    let edits = [
        Edit::SetField {
            field: Field::Person(model::PersonField::GivenName),
            value: FieldValue::Str("Андрій".into()),
        },
        Edit::SetField {
            field: Field::Military(model::MilitaryField::Unit),
            value: FieldValue::Str("72 OMBr".into()),
        },
        Edit::SpliceText {
            field: Field::Disappearance(model::DisappearanceField::Circumstances),
            pos: 0,
            delete: 0,
            insert: "Last call on 14 February, near Vuhledar.".into(),
        },
        Edit::AddItem {
            item: ItemRef::new(model::Collection::Sources, source),
            values: vec![(
                model::ItemField::Source(model::SourceField::Title),
                FieldValue::Str("What a comrade said".into()),
            )],
        },
    ];
    for (i, edit) in edits.iter().enumerate() {
        model::apply_edit(&mut doc, edit, author, T0 + 1 + i as i64)
            .expect("the seeded edits fit the template");
    }
    doc
}
