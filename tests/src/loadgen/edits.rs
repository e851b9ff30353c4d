//! Edits that need no read of the case first ("blind" edits): a register
//! set, a word spliced at the start of a narrative, a timeline item. The
//! generator makes tens of thousands of them for the cold-load case and
//! hundreds a second for the fan-out, where reading the whole case before
//! every edit would cost the generator more than the server.

use casesync_tests::workload::fresh_id;
use rand::Rng;
use sync_core::model::{
    Collection, DisappearanceField, Edit, Field, FieldValue, ItemField, ItemRef, MilitaryField,
    ModelError, PersonField, TimelineField,
};

const REGISTERS: [Field; 4] = [
    Field::Military(MilitaryField::Unit),
    Field::Military(MilitaryField::Rank),
    Field::Person(PersonField::GivenName),
    Field::Disappearance(DisappearanceField::Place),
];

const NARRATIVES: [Field; 2] = [
    Field::Disappearance(DisappearanceField::Circumstances),
    Field::Person(PersonField::Description),
];

const WORDS: [&str; 6] = ["convoy", "night", "river", "letter", "hospital", "village"];

/// One edit valid on any case, whatever it holds.
pub fn blind_edit<R: Rng>(rng: &mut R, tag: &str) -> Result<Edit, ModelError> {
    Ok(match rng.random_range(0..10u32) {
        0..=4 => Edit::SetField {
            field: REGISTERS[rng.random_range(0..REGISTERS.len())],
            value: FieldValue::Str(format!("{tag} {}", rng.random_range(0..1000u32))),
        },
        5..=7 => Edit::SpliceText {
            field: NARRATIVES[rng.random_range(0..NARRATIVES.len())],
            pos: 0,
            delete: 0,
            insert: format!("{} ", WORDS[rng.random_range(0..WORDS.len())]),
        },
        _ => Edit::AddItem {
            item: ItemRef::new(Collection::Timeline, fresh_id(rng, tag)?),
            values: vec![(
                ItemField::Timeline(TimelineField::Title),
                FieldValue::Str(format!("{tag} event")),
            )],
        },
    })
}
