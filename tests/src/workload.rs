//! Random but valid case edits, drawn from a caller's (seeded) RNG: what a
//! relative might do on a phone. Used by the crash test and by load
//! generators.

use rand::Rng;
use sync_core::model::{
    Case, Collection, DisappearanceField, Edit, Field, FieldValue, ItemField, ItemId, ItemRef,
    MilitaryField, ModelError, PersonField, SourceField, Status, TimelineField,
};

const REGISTERS: [Field; 6] = [
    Field::Military(MilitaryField::Unit),
    Field::Military(MilitaryField::Rank),
    Field::Military(MilitaryField::CallSign),
    Field::Person(PersonField::GivenName),
    Field::Person(PersonField::FamilyName),
    Field::Disappearance(DisappearanceField::Place),
];

const NARRATIVES: [Field; 3] = [
    Field::Disappearance(DisappearanceField::Circumstances),
    Field::Disappearance(DisappearanceField::LastContactDetails),
    Field::Person(PersonField::Description),
];

const WORDS: [&str; 8] = [
    "checkpoint",
    "convoy",
    "night",
    "river",
    "comrade",
    "letter",
    "hospital",
    "village",
];

fn narrative(case: &Case, field: Field) -> Option<&String> {
    match field {
        Field::Disappearance(DisappearanceField::Circumstances) => {
            case.disappearance.circumstances.as_ref()
        }
        Field::Disappearance(DisappearanceField::LastContactDetails) => {
            case.disappearance.last_contact_details.as_ref()
        }
        Field::Person(PersonField::Description) => case.person.description.as_ref(),
        _ => None,
    }
}

/// A fresh item id: `tag` plus random digits (`tag` must be ASCII letters,
/// digits, `-` or `_`).
pub fn fresh_id<R: Rng>(rng: &mut R, tag: &str) -> Result<ItemId, ModelError> {
    ItemId::new(format!("{tag}-{:016x}", rng.random::<u64>()))
}

/// One random edit of `case` (as the device currently has it). `tag` marks
/// the values and ids this writer creates.
pub fn random_edit<R: Rng>(rng: &mut R, case: &Case, tag: &str) -> Result<Edit, ModelError> {
    let live_timeline: Vec<&ItemId> = case
        .timeline
        .iter()
        .filter(|(_, item)| !item.is_deleted())
        .map(|(id, _)| id)
        .collect();
    let pick = rng.random_range(0..10u32);
    Ok(match pick {
        0..=2 => Edit::SetField {
            field: REGISTERS[rng.random_range(0..REGISTERS.len())],
            value: FieldValue::Str(format!("{tag} {}", rng.random_range(0..1000u32))),
        },
        3..=5 => {
            let field = NARRATIVES[rng.random_range(0..NARRATIVES.len())];
            let len = narrative(case, field).map_or(0, |t| t.chars().count());
            Edit::SpliceText {
                field,
                pos: rng.random_range(0..=len),
                delete: 0,
                insert: format!(" {} ", WORDS[rng.random_range(0..WORDS.len())]),
            }
        }
        6 | 7 => Edit::AddItem {
            item: ItemRef::new(Collection::Timeline, fresh_id(rng, tag)?),
            values: vec![
                (
                    ItemField::Timeline(TimelineField::Title),
                    FieldValue::Str(format!("{tag} event")),
                ),
                (
                    ItemField::Timeline(TimelineField::Description),
                    FieldValue::Str(WORDS[rng.random_range(0..WORDS.len())].to_owned()),
                ),
            ],
        },
        8 if !live_timeline.is_empty() => {
            let id = live_timeline[rng.random_range(0..live_timeline.len())].clone();
            if rng.random_bool(0.2) {
                Edit::DeleteItem {
                    item: ItemRef::new(Collection::Timeline, id),
                }
            } else {
                Edit::SetItemField {
                    item: ItemRef::new(Collection::Timeline, id),
                    field: ItemField::Timeline(TimelineField::Place),
                    value: FieldValue::Str(format!("{tag} place")),
                }
            }
        }
        8 => Edit::AddItem {
            item: ItemRef::new(Collection::Sources, fresh_id(rng, tag)?),
            values: vec![(
                ItemField::Source(SourceField::Title),
                FieldValue::Str(format!("{tag} source")),
            )],
        },
        _ => Edit::AddStatusClaim {
            id: fresh_id(rng, tag)?,
            status: Status::ALL[rng.random_range(0..Status::ALL.len())],
            claimed_by: format!("{tag} witness"),
            as_of: None,
            statement: WORDS[rng.random_range(0..WORDS.len())].to_owned(),
            sources: vec![],
        },
    })
}
