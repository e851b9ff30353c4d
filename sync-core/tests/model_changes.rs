//! Every change the model makes carries the message and the time it was
//! given, and none overwrites an existing key with a new object.

use automerge::legacy::OpType;
use automerge::{ActorId, Automerge, ChangeHash};
use sync_core::ids::DocumentId;
use sync_core::model::*;

const T0: i64 = 1_700_000_000_123;

fn id(s: &str) -> ItemId {
    ItemId::new(s).expect("test ids are valid")
}

/// One edit of every kind, in an order where each applies.
fn one_of_each_case_edit() -> Vec<(Edit, &'static str)> {
    let t1 = ItemRef::new(Collection::Timeline, id("t1"));
    vec![
        (
            Edit::SetField {
                field: Field::Military(MilitaryField::Unit),
                value: FieldValue::Str("72 OMBr".into()),
            },
            "set military.unit",
        ),
        (
            Edit::SetField {
                field: Field::Person(PersonField::DateOfBirth),
                value: FieldValue::Date("1994-07-03".parse().expect("date")),
            },
            "set person.date_of_birth",
        ),
        (
            Edit::SetField {
                field: Field::Person(PersonField::HeightCm),
                value: FieldValue::Int(181),
            },
            "set person.height_cm",
        ),
        (
            Edit::SetField {
                field: Field::Burial(BurialField::Place),
                value: FieldValue::Null,
            },
            "clear burial.place",
        ),
        (
            Edit::SpliceText {
                field: Field::Disappearance(DisappearanceField::Circumstances),
                pos: 0,
                delete: 0,
                insert: "Near the river.".into(),
            },
            "edit disappearance.circumstances",
        ),
        (
            Edit::AddItem {
                item: ItemRef::new(Collection::Sources, id("s1")),
                values: vec![(
                    ItemField::Source(SourceField::Summary),
                    FieldValue::Str("A letter".into()),
                )],
            },
            "add sources.s1",
        ),
        (
            Edit::AddItem {
                item: t1.clone(),
                values: vec![],
            },
            "add timeline.t1",
        ),
        (
            Edit::SetItemField {
                item: t1.clone(),
                field: ItemField::Timeline(TimelineField::Title),
                value: FieldValue::Str("Call".into()),
            },
            "set timeline.t1.title",
        ),
        (
            Edit::SpliceItemText {
                item: t1.clone(),
                field: ItemField::Timeline(TimelineField::Description),
                pos: 0,
                delete: 0,
                insert: "He called at night.".into(),
            },
            "edit timeline.t1.description",
        ),
        (
            Edit::CiteSource {
                item: t1.clone(),
                source: id("s1"),
            },
            "cite sources.s1 in timeline.t1",
        ),
        (
            Edit::UnciteSource {
                item: t1.clone(),
                source: id("s1"),
            },
            "uncite sources.s1 in timeline.t1",
        ),
        (Edit::DeleteItem { item: t1.clone() }, "delete timeline.t1"),
        (Edit::RestoreItem { item: t1 }, "restore timeline.t1"),
        (
            Edit::AddStatusClaim {
                id: id("c1"),
                status: Status::Captured,
                claimed_by: "comrade".into(),
                as_of: None,
                statement: "Taken".into(),
                sources: vec![id("s1")],
            },
            "add status_claims.c1",
        ),
        (
            Edit::AddItem {
                item: ItemRef::new(Collection::Requests, id("r1")),
                values: vec![],
            },
            "add requests.r1",
        ),
        (
            Edit::AddItem {
                item: ItemRef::reply(id("r1"), id("a1")),
                values: vec![],
            },
            "add requests.r1.replies.a1",
        ),
        (
            Edit::SpliceItemText {
                item: ItemRef::reply(id("r1"), id("a1")),
                field: ItemField::Reply(ReplyField::Summary),
                pos: 0,
                delete: 0,
                insert: "No data".into(),
            },
            "edit requests.r1.replies.a1.summary",
        ),
        (
            Edit::AddItem {
                item: ItemRef::new(Collection::NameVariants, id("n1")),
                values: vec![(
                    ItemField::NameVariant(NameVariantField::Name),
                    FieldValue::Str("Andrii".into()),
                )],
            },
            "add person.name_variants.n1",
        ),
        (
            Edit::LinkCoordination {
                coordination: DocumentId::from_bytes([4; 16]),
            },
            "link coordination document",
        ),
    ]
}

fn assert_stamped(doc: &Automerge, hash: ChangeHash, message: &str, now_ms: i64) {
    let meta = doc
        .get_change_meta_by_hash(&hash)
        .expect("the change is in the document");
    assert_eq!(meta.message.as_deref(), Some(message));
    // Seconds, as stock JS automerge stamps `Math.floor(Date.now() / 1000)`.
    assert_eq!(meta.timestamp, now_ms.div_euclid(1000), "{message}");
}

#[test]
fn every_change_carries_the_message_and_time_it_was_given() {
    let mut doc = Automerge::new().with_actor(ActorId::from([1; 16].as_slice()));
    let hash = create_case(
        &mut doc,
        &CaseInit {
            created_by: "user:olena".into(),
            coordination: None,
        },
        T0,
    )
    .expect("template");
    assert_stamped(&doc, hash, "create case from template v1", T0);

    for (n, (edit, message)) in one_of_each_case_edit().into_iter().enumerate() {
        assert_eq!(edit.message(), message);
        let now_ms = T0 + 60_000 * n as i64;
        let hash = apply_edit(&mut doc, &edit, "user:olena", now_ms)
            .unwrap_or_else(|e| panic!("{edit:?}: {e}"))
            .expect("the edit wrote a change");
        assert_stamped(&doc, hash, message, now_ms);
    }

    // The coordination document too.
    let mut coordination = Automerge::new().with_actor(ActorId::from([2; 16].as_slice()));
    let hash = create_coordination(
        &mut coordination,
        &CoordinationInit {
            created_by: "user:coordinator".into(),
            case: DocumentId::from_bytes([3; 16]),
        },
        T0,
    )
    .expect("template");
    assert_stamped(
        &coordination,
        hash,
        "create coordination from template v1",
        T0,
    );
    let coordination_edits = [
        (
            Edit::SetOfficialStatus {
                status: Status::Missing,
                basis: vec![id("s1"), id("s2")],
            },
            "set official_status",
        ),
        (
            Edit::SetField {
                field: Field::Closure(ClosureField::State),
                value: FieldValue::Str("open".into()),
            },
            "set closure.state",
        ),
        (
            Edit::AddItem {
                item: ItemRef::new(Collection::SourceVerification, id("v1")),
                values: vec![(
                    ItemField::SourceVerification(SourceVerificationField::SourceId),
                    FieldValue::Str("s1".into()),
                )],
            },
            "add source_verification.v1",
        ),
        (
            Edit::AddItem {
                item: ItemRef::new(Collection::Duplicates, id("d1")),
                values: vec![],
            },
            "add duplicates.d1",
        ),
    ];
    for (edit, message) in coordination_edits {
        let hash = apply_edit(&mut coordination, &edit, "user:coordinator", -1)
            .unwrap_or_else(|e| panic!("{edit:?}: {e}"))
            .expect("a change");
        // A time before 1970 still floors to whole seconds.
        assert_stamped(&coordination, hash, message, -1);
        assert_eq!(
            doc.get_change_meta_by_hash(&hash).map(|m| m.timestamp),
            None,
            "documents are separate"
        );
    }
    let coord = read_coordination(&coordination).expect("reads");
    assert_eq!(coord.official_status.basis.len(), 2);
    assert_eq!(coord.source_verification.len(), 1);
    assert_eq!(
        coord.case.value().map(String::as_str),
        Some(DocumentId::from_bytes([3; 16]).to_string().as_str())
    );

    // An edit that changes nothing makes no change.
    let none = apply_edit(
        &mut doc,
        &Edit::SpliceText {
            field: Field::Burial(BurialField::Notes),
            pos: 0,
            delete: 0,
            insert: String::new(),
        },
        "user:olena",
        T0,
    )
    .expect("empty splice");
    assert_eq!(none, None);
}

#[test]
fn no_change_puts_an_object_over_an_existing_key() {
    let mut doc = Automerge::new().with_actor(ActorId::from([1; 16].as_slice()));
    create_case(
        &mut doc,
        &CaseInit {
            created_by: "user:olena".into(),
            coordination: None,
        },
        T0,
    )
    .expect("template");
    for (edit, _) in one_of_each_case_edit() {
        apply_edit(&mut doc, &edit, "user:olena", T0).unwrap_or_else(|e| panic!("{edit:?}: {e}"));
    }
    let mut makes = 0;
    for change in doc.get_changes(&[]) {
        for op in change.decode().operations {
            if let OpType::Make(_) = op.action {
                makes += 1;
                // A make with predecessors replaced what was there: the
                // subtree a concurrent device wrote into would vanish.
                assert!(op.pred.is_empty(), "{:?} overwrote {:?}", op.key, op.pred);
            }
        }
    }
    assert!(makes > 30, "only {makes} objects were created");
    let case = read_case(&doc).expect("reads");
    assert_eq!(
        case.requests[&id("r1")].fields.replies[&id("a1")]
            .fields
            .summary
            .as_deref(),
        Some("No data")
    );
    assert_eq!(case.status_claims[&id("c1")].fields.source_ids.len(), 1);
    assert!(case.timeline[&id("t1")].fields.source_ids.is_empty());
    assert!(!case.timeline[&id("t1")].is_deleted());
}
