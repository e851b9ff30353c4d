//! Stories of families working on a case from several phones, often
//! offline. Each phone is an automerge document with its own actor id;
//! "syncing" is a merge (or a save and load, as a new phone would do).

use automerge::{ActorId, Automerge};
use sync_core::ids::DocumentId;
use sync_core::model::*;

const T0: i64 = 1_700_000_000_000;

fn actor(byte: u8) -> ActorId {
    ActorId::from([byte; 16].as_slice())
}

fn hex(byte: u8) -> String {
    actor(byte).to_hex_string()
}

/// A phone that received the document by sync: a fresh load with its own
/// actor.
fn phone_from(doc: &Automerge, byte: u8) -> Automerge {
    Automerge::load(&doc.save())
        .expect("a saved document loads")
        .with_actor(actor(byte))
}

/// Both phones come back online and exchange everything.
fn sync(a: &mut Automerge, b: &mut Automerge) {
    a.merge(b).expect("merge into a");
    b.merge(a).expect("merge into b");
    assert_eq!(a.get_heads(), b.get_heads(), "phones did not converge");
}

fn id(s: &str) -> ItemId {
    ItemId::new(s).expect("test ids are valid")
}

fn edit(doc: &mut Automerge, edit: Edit, author: &str, now_ms: i64) {
    apply_edit(doc, &edit, author, now_ms).unwrap_or_else(|e| panic!("{edit:?} failed: {e}"));
}

fn olena_creates_a_case() -> Automerge {
    let mut doc = Automerge::new().with_actor(actor(1));
    create_case(
        &mut doc,
        &CaseInit {
            created_by: "user:olena".to_owned(),
            coordination: Some(DocumentId::from_bytes([7; 16])),
        },
        T0,
    )
    .expect("template");
    doc
}

fn splice_circumstances(doc: &mut Automerge, pos: usize, insert: &str, who: &str) {
    edit(
        doc,
        Edit::SpliceText {
            field: Field::Disappearance(DisappearanceField::Circumstances),
            pos,
            delete: 0,
            insert: insert.to_owned(),
        },
        who,
        T0,
    );
}

#[test]
fn two_relatives_edit_the_circumstances_offline_and_both_edits_are_kept() {
    // Step 1: Olena creates the case and writes what she knows.
    let mut olena = olena_creates_a_case();
    splice_circumstances(
        &mut olena,
        0,
        "He was last seen near Bakhmut.",
        "user:olena",
    );

    // Step 2: his sister Iryna joins; her phone syncs the case.
    let mut iryna = phone_from(&olena, 2);

    // Step 3: both go offline. Olena adds the date at the start; Iryna
    // adds what a comrade told her at the end.
    splice_circumstances(&mut olena, 0, "On 14 February ", "user:olena");
    edit(
        &mut olena,
        Edit::SpliceText {
            field: Field::Disappearance(DisappearanceField::Circumstances),
            pos: 15,
            delete: 1,
            insert: "h".to_owned(),
        },
        "user:olena",
        T0,
    );
    let len = "He was last seen near Bakhmut.".chars().count();
    splice_circumstances(&mut iryna, len, " His position was shelled.", "user:iryna");

    // Step 4: they reconnect. Both edits are in the text, merged by
    // character, on both phones.
    sync(&mut olena, &mut iryna);
    let expected = "On 14 February he was last seen near Bakhmut. His position was shelled.";
    for doc in [&olena, &iryna] {
        let case = read_case(doc).expect("case reads");
        assert_eq!(case.disappearance.circumstances.as_deref(), Some(expected));
    }
    // A narrative merged by character is not a conflict.
    assert!(conflicts(&olena).is_empty(), "{:?}", conflicts(&olena));
}

#[test]
fn both_relatives_add_timeline_entries_and_sources_and_nothing_is_lost() {
    // Step 1: Olena creates the case; Iryna's phone syncs it.
    let mut olena = olena_creates_a_case();
    let mut iryna = phone_from(&olena, 2);

    // Step 2: offline, each records a source and a timeline entry citing it.
    for (doc, who, n, title) in [
        (&mut olena, "user:olena", "1", "Last phone call"),
        (&mut iryna, "user:iryna", "2", "Message from a comrade"),
    ] {
        edit(
            doc,
            Edit::AddItem {
                item: ItemRef::new(Collection::Sources, id(&format!("s{n}"))),
                values: vec![
                    (
                        ItemField::Source(SourceField::Kind),
                        FieldValue::Str("testimony".into()),
                    ),
                    (
                        ItemField::Source(SourceField::Title),
                        FieldValue::Str(title.into()),
                    ),
                    (
                        ItemField::Source(SourceField::Provenance),
                        FieldValue::Str("told to me directly".into()),
                    ),
                ],
            },
            who,
            T0 + 1000,
        );
        edit(
            doc,
            Edit::AddItem {
                item: ItemRef::new(Collection::Timeline, id(&format!("t{n}"))),
                values: vec![
                    (
                        ItemField::Timeline(TimelineField::Title),
                        FieldValue::Str(title.into()),
                    ),
                    (
                        ItemField::Timeline(TimelineField::Date),
                        FieldValue::Date("2023-02-14".parse().expect("date")),
                    ),
                ],
            },
            who,
            T0 + 2000,
        );
        edit(
            doc,
            Edit::CiteSource {
                item: ItemRef::new(Collection::Timeline, id(&format!("t{n}"))),
                source: id(&format!("s{n}")),
            },
            who,
            T0 + 3000,
        );
    }

    // Step 3: they sync. Both phones hold both sources and both entries.
    sync(&mut olena, &mut iryna);
    let case = read_case(&olena).expect("case reads");
    assert_eq!(case, read_case(&iryna).expect("case reads"));
    assert_eq!(case.sources.len(), 2);
    assert_eq!(case.timeline.len(), 2);
    let t2 = &case.timeline[&id("t2")];
    assert_eq!(
        t2.fields.title.value().map(String::as_str),
        Some("Message from a comrade")
    );
    assert_eq!(t2.created_by.as_deref(), Some("user:iryna"));
    assert_eq!(t2.created_at, Some(T0 + 2000));
    assert_eq!(
        t2.fields.source_ids.iter().collect::<Vec<_>>(),
        vec![&id("s2")]
    );
    assert_eq!(
        case.sources[&id("s1")].fields.provenance.as_deref(),
        Some("told to me directly")
    );
    assert!(conflicts(&olena).is_empty());
}

#[test]
fn captured_and_killed_claims_from_two_comrades_both_stay_visible() {
    // Step 1: Olena records a comrade's testimony that he was captured.
    let mut olena = olena_creates_a_case();
    edit(
        &mut olena,
        Edit::AddItem {
            item: ItemRef::new(Collection::Sources, id("petro")),
            values: vec![(
                ItemField::Source(SourceField::Kind),
                FieldValue::Str("testimony".into()),
            )],
        },
        "user:olena",
        T0,
    );
    let mut iryna = phone_from(&olena, 2);
    edit(
        &mut olena,
        Edit::AddStatusClaim {
            id: id("c1"),
            status: Status::Captured,
            claimed_by: "comrade Petro".into(),
            as_of: Some("~2023-02-15".parse().expect("date")),
            statement: "Saw him taken away in a truck.".into(),
            sources: vec![id("petro")],
        },
        "user:olena",
        T0 + 1000,
    );

    // Step 2: at the same time Iryna records another comrade, who says he
    // was killed.
    edit(
        &mut iryna,
        Edit::AddItem {
            item: ItemRef::new(Collection::Sources, id("vasyl")),
            values: vec![],
        },
        "user:iryna",
        T0 + 1000,
    );
    edit(
        &mut iryna,
        Edit::AddStatusClaim {
            id: id("c2"),
            status: Status::Killed,
            claimed_by: "comrade Vasyl".into(),
            as_of: None,
            statement: "Heard he died in the shelling.".into(),
            sources: vec![id("vasyl")],
        },
        "user:iryna",
        T0 + 1500,
    );

    // Step 3: after sync both claims are there, each with its own source.
    // Contradicting claims are normal: nothing is merged or resolved.
    sync(&mut olena, &mut iryna);
    let case = read_case(&iryna).expect("case reads");
    let claims: Vec<_> = case
        .status_claims
        .values()
        .map(|c| {
            (
                c.fields.status.value().copied(),
                c.fields.claimed_by.value().cloned(),
                c.fields.source_ids.iter().cloned().collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        claims,
        vec![
            (
                Some(Status::Captured),
                Some("comrade Petro".into()),
                vec![id("petro")]
            ),
            (
                Some(Status::Killed),
                Some("comrade Vasyl".into()),
                vec![id("vasyl")]
            ),
        ]
    );
    assert_eq!(
        case.status_claims[&id("c1")]
            .fields
            .as_of
            .value()
            .map(|d| d.precision()),
        Some(DatePrecision::Approximate)
    );
    assert!(conflicts(&iryna).is_empty());

    // Step 4: the coordinator reviews the claims and sets the official
    // status on the coordination document, citing one source. The claims
    // in the case document are untouched.
    let mut coordination = Automerge::new().with_actor(actor(9));
    create_coordination(
        &mut coordination,
        &CoordinationInit {
            created_by: "user:coordinator".into(),
            case: DocumentId::from_bytes([3; 16]),
        },
        T0,
    )
    .expect("coordination template");
    edit(
        &mut coordination,
        Edit::SetOfficialStatus {
            status: Status::Captured,
            basis: vec![id("petro")],
        },
        "user:coordinator",
        T0 + 5000,
    );
    let coord = read_coordination(&coordination).expect("coordination reads");
    assert_eq!(
        coord.official_status.status.value(),
        Some(&Status::Captured)
    );
    assert_eq!(
        coord.official_status.set_by.value().map(String::as_str),
        Some("user:coordinator")
    );
    assert_eq!(coord.official_status.set_at.value(), Some(&(T0 + 5000)));
    assert_eq!(
        coord.official_status.basis.iter().collect::<Vec<_>>(),
        vec![&id("petro")]
    );
    assert_eq!(
        read_case(&iryna).expect("case reads").status_claims.len(),
        2
    );

    // A relative's phone cannot apply a coordination edit to the case
    // document: the edit names its document kind.
    let err = apply_edit(
        &mut olena,
        &Edit::SetOfficialStatus {
            status: Status::Killed,
            basis: vec![],
        },
        "user:olena",
        T0,
    )
    .expect_err("coordination edit on a case document");
    assert!(
        matches!(
            err,
            ModelError::WrongDocument {
                expected: "coordination",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn concurrent_register_edits_are_reported_with_both_values_and_their_writers() {
    // Step 1: Olena creates the case and a timeline entry; Iryna syncs.
    let mut olena = olena_creates_a_case();
    edit(
        &mut olena,
        Edit::AddItem {
            item: ItemRef::new(Collection::Timeline, id("t1")),
            values: vec![],
        },
        "user:olena",
        T0,
    );
    let mut iryna = phone_from(&olena, 2);

    // Step 2: offline, each writes the unit as she remembers it, and a
    // different title for the same entry.
    let unit = Field::Military(MilitaryField::Unit);
    edit(
        &mut olena,
        Edit::SetField {
            field: unit,
            value: FieldValue::Str("72nd brigade".into()),
        },
        "user:olena",
        T0,
    );
    edit(
        &mut iryna,
        Edit::SetField {
            field: unit,
            value: FieldValue::Str("72 OMBr, 1st battalion".into()),
        },
        "user:iryna",
        T0,
    );
    let title = ItemField::Timeline(TimelineField::Title);
    let t1 = ItemRef::new(Collection::Timeline, id("t1"));
    edit(
        &mut olena,
        Edit::SetItemField {
            item: t1.clone(),
            field: title,
            value: FieldValue::Str("Call".into()),
        },
        "user:olena",
        T0,
    );
    edit(
        &mut iryna,
        Edit::SetItemField {
            item: t1,
            field: title,
            value: FieldValue::Null,
        },
        "user:iryna",
        T0,
    );

    // Step 3: after sync, neither value silently wins: the read shows both,
    // and `conflicts` lists both registers with who wrote what.
    sync(&mut olena, &mut iryna);
    let case = read_case(&olena).expect("case reads");
    assert!(case.military.unit.is_conflicted());
    let mut by_actor: Vec<_> = case
        .military
        .unit
        .values
        .iter()
        .map(|v| (v.actor.clone(), v.value.clone()))
        .collect();
    by_actor.sort();
    assert_eq!(
        by_actor,
        vec![
            (hex(1), Some("72nd brigade".to_owned())),
            (hex(2), Some("72 OMBr, 1st battalion".to_owned())),
        ]
    );

    let found = conflicts(&iryna);
    let paths: Vec<_> = found.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, vec!["military.unit", "timeline.t1.title"]);
    let mut unit_values: Vec<_> = found[0]
        .values
        .iter()
        .map(|v| (v.actor.clone(), v.value.clone()))
        .collect();
    unit_values.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        unit_values,
        vec![
            (hex(1), Some(RawValue::Str("72nd brigade".into()))),
            (hex(2), Some(RawValue::Str("72 OMBr, 1st battalion".into()))),
        ]
    );
    // Iryna's clear is shown as a value of its own (None), not dropped.
    let title_values: Vec<_> = found[1]
        .values
        .iter()
        .map(|v| (v.actor.clone(), v.value.clone()))
        .collect();
    assert!(title_values.contains(&(hex(1), Some(RawValue::Str("Call".into())))));
    assert!(title_values.contains(&(hex(2), None)));
    assert_eq!(found[1].keys, vec!["timeline", "t1", "title"]);

    // Step 4: Olena resolves the unit by writing it again; the conflict
    // is gone once the resolution has synced.
    edit(
        &mut olena,
        Edit::SetField {
            field: unit,
            value: FieldValue::Str("72 OMBr".into()),
        },
        "user:olena",
        T0 + 60_000,
    );
    sync(&mut olena, &mut iryna);
    let case = read_case(&iryna).expect("case reads");
    assert!(!case.military.unit.is_conflicted());
    assert_eq!(
        case.military.unit.value().map(String::as_str),
        Some("72 OMBr")
    );
    assert_eq!(
        conflicts(&iryna)
            .iter()
            .map(|c| c.path.as_str())
            .collect::<Vec<_>>(),
        vec!["timeline.t1.title"]
    );
}

#[test]
fn a_soft_delete_racing_an_edit_keeps_the_edit_and_marks_the_item_deleted() {
    // Step 1: Olena adds a timeline entry; Iryna syncs it.
    let mut olena = olena_creates_a_case();
    let t1 = ItemRef::new(Collection::Timeline, id("t1"));
    edit(
        &mut olena,
        Edit::AddItem {
            item: t1.clone(),
            values: vec![
                (
                    ItemField::Timeline(TimelineField::Title),
                    FieldValue::Str("Rumour".into()),
                ),
                (
                    ItemField::Timeline(TimelineField::Description),
                    FieldValue::Str("Someone said".into()),
                ),
            ],
        },
        "user:olena",
        T0,
    );
    let mut iryna = phone_from(&olena, 2);

    // Step 2: Olena thinks it is a rumour and deletes it, while Iryna,
    // offline, confirms it and improves it.
    edit(
        &mut olena,
        Edit::DeleteItem { item: t1.clone() },
        "user:olena",
        T0 + 10_000,
    );
    edit(
        &mut iryna,
        Edit::SetItemField {
            item: t1.clone(),
            field: ItemField::Timeline(TimelineField::Title),
            value: FieldValue::Str("Confirmed sighting".into()),
        },
        "user:iryna",
        T0 + 20_000,
    );
    edit(
        &mut iryna,
        Edit::SpliceItemText {
            item: t1.clone(),
            field: ItemField::Timeline(TimelineField::Description),
            pos: 12,
            delete: 0,
            insert: " he was in hospital in Donetsk".into(),
        },
        "user:iryna",
        T0 + 20_000,
    );

    // Step 3: after sync the item is still there with Iryna's edits, and
    // marked deleted by Olena, so the family can see and undo it.
    sync(&mut olena, &mut iryna);
    let case = read_case(&olena).expect("case reads");
    let entry = &case.timeline[&id("t1")];
    assert!(entry.is_deleted());
    assert_eq!(entry.deleted_at.value(), Some(&(T0 + 10_000)));
    assert_eq!(
        entry.deleted_by.value().map(String::as_str),
        Some("user:olena")
    );
    assert_eq!(
        entry.fields.title.value().map(String::as_str),
        Some("Confirmed sighting")
    );
    assert_eq!(
        entry.fields.description.as_deref(),
        Some("Someone said he was in hospital in Donetsk")
    );

    // Step 4: Iryna restores it.
    edit(
        &mut iryna,
        Edit::RestoreItem { item: t1 },
        "user:iryna",
        T0 + 30_000,
    );
    sync(&mut olena, &mut iryna);
    assert!(!read_case(&olena).expect("case reads").timeline[&id("t1")].is_deleted());
}

#[test]
fn a_request_and_its_replies_arrive_from_two_phones() {
    // Step 1: Olena records a request to the ministry; Iryna syncs it.
    let mut olena = olena_creates_a_case();
    let request = ItemRef::new(Collection::Requests, id("r1"));
    edit(
        &mut olena,
        Edit::AddItem {
            item: request,
            values: vec![
                (
                    ItemField::Request(RequestField::Authority),
                    FieldValue::Str("Ministry of Defence".into()),
                ),
                (
                    ItemField::Request(RequestField::SentOn),
                    FieldValue::Date("2023-03-01".parse().expect("date")),
                ),
            ],
        },
        "user:olena",
        T0,
    );
    let mut iryna = phone_from(&olena, 2);

    // Step 2: two replies arrive and each woman records the one she got.
    for (doc, who, reply, outcome) in [
        (&mut olena, "user:olena", "a1", "no information"),
        (&mut iryna, "user:iryna", "a2", "forwarded to ICRC"),
    ] {
        edit(
            doc,
            Edit::AddItem {
                item: ItemRef::reply(id("r1"), id(reply)),
                values: vec![(
                    ItemField::Reply(ReplyField::Outcome),
                    FieldValue::Str(outcome.into()),
                )],
            },
            who,
            T0 + 1000,
        );
    }
    sync(&mut olena, &mut iryna);

    let case = read_case(&olena).expect("case reads");
    let replies = &case.requests[&id("r1")].fields.replies;
    let outcomes: Vec<_> = replies
        .values()
        .map(|r| r.fields.outcome.value().cloned())
        .collect();
    assert_eq!(
        outcomes,
        vec![
            Some("no information".to_owned()),
            Some("forwarded to ICRC".to_owned())
        ]
    );
    // A reply cannot be added to a request that does not exist.
    let err = apply_edit(
        &mut olena,
        &Edit::AddItem {
            item: ItemRef::reply(id("nope"), id("a3")),
            values: vec![],
        },
        "user:olena",
        T0,
    )
    .expect_err("no such request");
    assert!(
        matches!(err, ModelError::NoSuchItem { ref path } if path == "requests.nope"),
        "{err}"
    );
}
