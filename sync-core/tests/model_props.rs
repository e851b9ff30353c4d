//! Property tests: random edits on three offline phones, synced at random
//! moments. Whatever the edits, applying them never panics, a refused edit
//! writes nothing, the phones converge, the merged case always reads, and
//! every register with concurrent values is listed by `conflicts`.

use automerge::legacy::OpType;
use automerge::{ActorId, Automerge};
use proptest::prelude::*;
use sync_core::ids::DocumentId;
use sync_core::model::*;

const T0: i64 = 1_700_000_000_000;

fn all_fields() -> Vec<Field> {
    let mut v = Vec::new();
    v.extend(PersonField::ALL.iter().map(|f| Field::Person(*f)));
    v.extend(MilitaryField::ALL.iter().map(|f| Field::Military(*f)));
    v.extend(
        DisappearanceField::ALL
            .iter()
            .map(|f| Field::Disappearance(*f)),
    );
    v.extend(BurialField::ALL.iter().map(|f| Field::Burial(*f)));
    v
}

fn all_item_fields() -> Vec<ItemField> {
    let mut v = Vec::new();
    v.extend(
        NameVariantField::ALL
            .iter()
            .map(|f| ItemField::NameVariant(*f)),
    );
    v.extend(
        DistinguishingMarkField::ALL
            .iter()
            .map(|f| ItemField::DistinguishingMark(*f)),
    );
    v.extend(
        MedicalDeviceField::ALL
            .iter()
            .map(|f| ItemField::MedicalDevice(*f)),
    );
    v.extend(
        PersonalEffectField::ALL
            .iter()
            .map(|f| ItemField::PersonalEffect(*f)),
    );
    v.extend(
        StatusClaimField::ALL
            .iter()
            .map(|f| ItemField::StatusClaim(*f)),
    );
    v.extend(SourceField::ALL.iter().map(|f| ItemField::Source(*f)));
    v.extend(RequestField::ALL.iter().map(|f| ItemField::Request(*f)));
    v.extend(ReplyField::ALL.iter().map(|f| ItemField::Reply(*f)));
    v.extend(
        ExternalRefField::ALL
            .iter()
            .map(|f| ItemField::ExternalRef(*f)),
    );
    v.extend(DnaSampleField::ALL.iter().map(|f| ItemField::Dna(*f)));
    v.extend(RemainsField::ALL.iter().map(|f| ItemField::Remains(*f)));
    v.extend(TimelineField::ALL.iter().map(|f| ItemField::Timeline(*f)));
    v.extend(
        AttachmentField::ALL
            .iter()
            .map(|f| ItemField::Attachment(*f)),
    );
    v.extend(LinkField::ALL.iter().map(|f| ItemField::Link(*f)));
    v
}

fn item_id() -> impl Strategy<Value = ItemId> {
    (0..3u8).prop_map(|n| ItemId::new(format!("i{n}")).expect("valid id"))
}

fn date() -> impl Strategy<Value = FuzzyDate> {
    prop_oneof![
        Just("2023-02-14".parse().expect("date")),
        Just("2023-02".parse().expect("date")),
        Just("~2022".parse().expect("date")),
        Just("2023-02-01/2023-03".parse().expect("date")),
        Just("2023-02-14T06:30Z".parse().expect("date")),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-zé ]{1,6}", Just("Київ".to_owned())]
}

/// Mostly a value of the field's kind, sometimes any value, so that both
/// accepted and refused edits are exercised.
fn value_for(kind: FieldKind) -> BoxedStrategy<FieldValue> {
    let fitting: BoxedStrategy<FieldValue> = match kind {
        FieldKind::Date => date().prop_map(FieldValue::Date).boxed(),
        FieldKind::Int => any::<i64>().prop_map(FieldValue::Int).boxed(),
        FieldKind::Status => prop::sample::select(Status::ALL.to_vec())
            .prop_map(FieldValue::Status)
            .boxed(),
        _ => text().prop_map(FieldValue::Str).boxed(),
    };
    prop_oneof![
        8 => fitting,
        1 => Just(FieldValue::Null),
        1 => text().prop_map(FieldValue::Str),
    ]
    .boxed()
}

fn item_ref_in(collection: Collection) -> BoxedStrategy<ItemRef> {
    if collection == Collection::RequestReplies {
        (item_id(), item_id())
            .prop_map(|(request, reply)| ItemRef::reply(request, reply))
            .boxed()
    } else {
        item_id()
            .prop_map(move |id| ItemRef::new(collection, id))
            .boxed()
    }
}

fn item_field_and_ref() -> impl Strategy<Value = (ItemField, ItemRef)> {
    prop::sample::select(all_item_fields())
        .prop_flat_map(|field| (Just(field), item_ref_in(field.collection())))
}

fn edit() -> impl Strategy<Value = Edit> {
    let set_field = prop::sample::select(all_fields())
        .prop_flat_map(|field| (Just(field), value_for(field.kind())))
        .prop_map(|(field, value)| Edit::SetField { field, value });
    let splice = (
        prop::sample::select(all_fields()),
        0..8usize,
        0..4usize,
        text(),
    )
        .prop_map(|(field, pos, delete, insert)| Edit::SpliceText {
            field,
            pos,
            delete,
            insert,
        });
    let add = item_field_and_ref()
        .prop_flat_map(|(field, item)| (Just(field), Just(item), value_for(field.kind())))
        .prop_map(|(field, item, value)| Edit::AddItem {
            item,
            values: vec![(field, value)],
        });
    let set_item = item_field_and_ref()
        .prop_flat_map(|(field, item)| (Just(field), Just(item), value_for(field.kind())))
        .prop_map(|(field, item, value)| Edit::SetItemField { item, field, value });
    let splice_item = (item_field_and_ref(), 0..8usize, 0..4usize, text()).prop_map(
        |((field, item), pos, delete, insert)| Edit::SpliceItemText {
            item,
            field,
            pos,
            delete,
            insert,
        },
    );
    let any_item = || item_field_and_ref().prop_map(|(_, item)| item);
    let claim = (
        item_id(),
        prop::sample::select(Status::ALL.to_vec()),
        text(),
        prop::option::of(date()),
        text(),
        prop::collection::vec(item_id(), 0..2),
    )
        .prop_map(
            |(id, status, claimed_by, as_of, statement, sources)| Edit::AddStatusClaim {
                id,
                status,
                claimed_by,
                as_of,
                statement,
                sources,
            },
        );
    let cited = prop_oneof![
        item_ref_in(Collection::Timeline),
        item_ref_in(Collection::StatusClaims)
    ];
    prop_oneof![
        4 => set_field,
        3 => splice,
        4 => add,
        4 => set_item,
        3 => splice_item,
        1 => any_item().prop_map(|item| Edit::DeleteItem { item }),
        1 => any_item().prop_map(|item| Edit::RestoreItem { item }),
        1 => claim,
        1 => (cited.clone(), item_id()).prop_map(|(item, source)| Edit::CiteSource { item, source }),
        1 => (cited, item_id()).prop_map(|(item, source)| Edit::UnciteSource { item, source }),
        1 => any::<[u8; 16]>().prop_map(|b| Edit::LinkCoordination { coordination: DocumentId::from_bytes(b) }),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Edit { phone: usize, edit: Edit },
    Sync { a: usize, b: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..3usize, edit()).prop_map(|(phone, edit)| Step::Edit { phone, edit }),
        1 => (0..3usize, 0..3usize).prop_map(|(a, b)| Step::Sync { a, b }),
    ]
}

fn register_paths(case: &Case) -> Vec<(String, usize)> {
    // A sample of registers from sections and items, enough to tie
    // `Register` and `conflicts` together.
    let mut out = vec![
        ("military.unit".to_owned(), case.military.unit.values.len()),
        (
            "person.given_name".to_owned(),
            case.person.given_name.values.len(),
        ),
        (
            "person.date_of_birth".to_owned(),
            case.person.date_of_birth.values.len(),
        ),
        (
            "person.height_cm".to_owned(),
            case.person.height_cm.values.len(),
        ),
    ];
    for (id, item) in &case.timeline {
        out.push((
            format!("timeline.{id}.title"),
            item.fields.title.values.len(),
        ));
        out.push((
            format!("timeline.{id}.deleted_at"),
            item.deleted_at.values.len(),
        ));
    }
    for (id, item) in &case.status_claims {
        out.push((
            format!("status_claims.{id}.status"),
            item.fields.status.values.len(),
        ));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_offline_edits_converge_and_always_read(steps in prop::collection::vec(step(), 1..40)) {
        let mut origin = Automerge::new().with_actor(ActorId::from([9; 16].as_slice()));
        create_case(&mut origin, &CaseInit { created_by: "user:server".into(), coordination: None }, T0)
            .expect("template");
        let mut phones: Vec<Automerge> = (1..=3u8)
            .map(|b| Automerge::load(&origin.save()).expect("load").with_actor(ActorId::from([b; 16].as_slice())))
            .collect();

        for (n, step) in steps.into_iter().enumerate() {
            match step {
                Step::Edit { phone, edit } => {
                    let doc = &mut phones[phone];
                    let before = doc.get_heads();
                    let now_ms = T0 + 1000 * n as i64;
                    match apply_edit(doc, &edit, "user:relative", now_ms) {
                        Ok(Some(hash)) => {
                            let meta = doc.get_change_meta_by_hash(&hash).expect("change");
                            let message = edit.message();
                            prop_assert_eq!(meta.message.as_deref(), Some(message.as_str()));
                            prop_assert_eq!(meta.timestamp, now_ms / 1000);
                        }
                        Ok(None) => prop_assert_eq!(doc.get_heads(), before),
                        Err(_) => prop_assert_eq!(doc.get_heads(), before, "a refused edit wrote"),
                    }
                }
                Step::Sync { a, b } if a != b => {
                    let mut other = phones[b].clone();
                    phones[a].merge(&mut other).expect("merge");
                    let mut first = phones[a].clone();
                    phones[b].merge(&mut first).expect("merge");
                }
                Step::Sync { .. } => {}
            }
        }

        let mut all = phones[0].clone();
        for phone in &mut phones[1..] {
            all.merge(phone).expect("merge");
        }
        for phone in &mut phones {
            phone.merge(&mut all.clone()).expect("merge");
            prop_assert_eq!(phone.get_heads(), all.get_heads());
        }
        let case = read_case(&all);
        prop_assert!(case.is_ok(), "merged case does not read: {:?}", case.err());
        let case = case.expect("checked above");
        for phone in &phones {
            prop_assert_eq!(&read_case(phone).expect("reads"), &case);
        }

        let conflicts = conflicts(&all);
        for (path, values) in register_paths(&case) {
            let listed = conflicts.iter().any(|c| c.path == path);
            prop_assert_eq!(listed, values > 1, "{} has {} values", path, values);
        }

        for change in all.get_changes(&[]) {
            for op in change.decode().operations {
                if let OpType::Make(_) = op.action {
                    prop_assert!(op.pred.is_empty(), "an object was put over {:?}", op.key);
                }
            }
        }
    }
}
