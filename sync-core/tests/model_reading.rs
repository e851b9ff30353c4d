//! Reading is lenient where stock JS writes differently, and strict (an
//! error naming the path, never a panic) where a type is wrong. Edits that
//! do not fit the document are refused without writing anything.

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, AutomergeError, ObjId, ObjType, ScalarValue, ROOT};
use sync_core::ids::DocumentId;
use sync_core::model::*;

const T0: i64 = 1_700_000_000_000;

fn actor(byte: u8) -> ActorId {
    ActorId::from([byte; 16].as_slice())
}

fn id(s: &str) -> ItemId {
    ItemId::new(s).expect("test ids are valid")
}

/// Writes `value` the way stock JS automerge writes a plain string: as a
/// `Text` object.
fn js_string(tx: &mut impl Transactable, obj: &ObjId, key: &str, value: &str) {
    let text = tx.put_object(obj, key, ObjType::Text).expect("put text");
    tx.splice_text(&text, 0, 0, value).expect("splice");
}

fn new_case() -> Automerge {
    let mut doc = Automerge::new().with_actor(actor(1));
    create_case(
        &mut doc,
        &CaseInit {
            created_by: "user:olena".into(),
            coordination: None,
        },
        T0,
    )
    .expect("template");
    doc
}

/// Builds a case the way a stock JS automerge-repo client would: every
/// string a `Text` object, integers as JS numbers, a `Date`, some keys this
/// build does not know, and sections it never wrote.
fn js_written_case() -> Automerge {
    let mut doc = Automerge::new().with_actor(actor(5));
    doc.transact::<_, _, AutomergeError>(|tx| {
        js_string(tx, &ROOT, "kind", "casesync.case");
        tx.put(&ROOT, "schema_version", 1_i64)?;
        tx.put(&ROOT, "created_at", ScalarValue::Timestamp(T0))?;
        js_string(tx, &ROOT, "created_by", "user:js");
        js_string(
            tx,
            &ROOT,
            "coordination",
            "automerge:2j9sFpvW8zQq5aU1Z3xQk3u4Ksmc",
        );
        let ui = tx.put_object(&ROOT, "ui_state", ObjType::Map)?;
        tx.put(&ui, "tab", "timeline")?;

        let person = tx.put_object(&ROOT, "person", ObjType::Map)?;
        js_string(tx, &person, "given_name", "Андрій");
        js_string(tx, &person, "date_of_birth", "1994-07");
        tx.put(&person, "height_cm", ScalarValue::F64(181.0))?;
        js_string(tx, &person, "favourite_song", "Stefania");
        js_string(tx, &person, "description", "Tall, a scar on the left hand.");

        let military = tx.put_object(&ROOT, "military", ObjType::Map)?;
        js_string(tx, &military, "unit", "72 OMBr");
        tx.put(&military, "rank", "sergeant")?; // an ImmutableString: a scalar

        let timeline = tx.put_object(&ROOT, "timeline", ObjType::Map)?;
        let t1 = tx.put_object(&timeline, "t1", ObjType::Map)?;
        js_string(tx, &t1, "title", "Last call");
        js_string(tx, &t1, "date", "2023-02-14T06:30Z");
        js_string(tx, &t1, "created_by", "user:js");
        tx.put(&t1, "created_at", ScalarValue::Timestamp(T0 + 1))?;
        let cited = tx.put_object(&t1, "source_ids", ObjType::Map)?;
        tx.put(&cited, "s1", true)?;

        let claims = tx.put_object(&ROOT, "status_claims", ObjType::Map)?;
        let c1 = tx.put_object(&claims, "c1", ObjType::Map)?;
        js_string(tx, &c1, "status", "captured");
        tx.put(&c1, "deleted_at", ScalarValue::Timestamp(T0 + 2))?;
        Ok(())
    })
    .expect("js-style document");
    doc
}

#[test]
fn a_case_written_like_stock_js_reads_correctly() {
    let doc = js_written_case();
    let case = read_case(&doc).expect("a JS-written case reads");

    assert_eq!(case.schema_version, 1);
    assert_eq!(case.created_by.as_deref(), Some("user:js"));
    assert_eq!(case.created_at, Some(T0));
    assert_eq!(
        case.coordination.value().map(String::as_str),
        Some("automerge:2j9sFpvW8zQq5aU1Z3xQk3u4Ksmc")
    );
    assert_eq!(
        case.person.given_name.value().map(String::as_str),
        Some("Андрій")
    );
    assert_eq!(
        case.person.date_of_birth.value(),
        Some(&FuzzyDate::Known(
            CalendarDate::month(1994, 7).expect("date")
        ))
    );
    assert_eq!(case.person.height_cm.value(), Some(&181));
    assert_eq!(
        case.person.description.as_deref(),
        Some("Tall, a scar on the left hand.")
    );
    assert_eq!(
        case.military.unit.value().map(String::as_str),
        Some("72 OMBr")
    );
    assert_eq!(
        case.military.rank.value().map(String::as_str),
        Some("sergeant")
    );
    // Missing fields and sections read as empty.
    assert_eq!(case.military.branch.value(), None);
    assert_eq!(case.disappearance.circumstances, None);
    assert!(case.sources.is_empty());
    assert_eq!(case.burial, Burial::default());

    let t1 = &case.timeline[&id("t1")];
    assert_eq!(
        t1.fields.title.value().map(String::as_str),
        Some("Last call")
    );
    assert_eq!(
        t1.fields.date.value().map(FuzzyDate::precision),
        Some(DatePrecision::Exact)
    );
    assert_eq!(t1.created_by.as_deref(), Some("user:js"));
    assert!(t1.fields.source_ids.contains(&id("s1")));
    let c1 = &case.status_claims[&id("c1")];
    assert_eq!(c1.fields.status.value(), Some(&Status::Captured));
    assert!(c1.is_deleted());

    // A JS-written register that is a `Text` object shows in a conflict
    // with its text.
    let mut ours = Automerge::load(&doc.save())
        .expect("load")
        .with_actor(actor(6));
    let mut theirs = Automerge::load(&doc.save())
        .expect("load")
        .with_actor(actor(7));
    apply_edit(
        &mut ours,
        &Edit::SetField {
            field: Field::Military(MilitaryField::Unit),
            value: FieldValue::Str("72nd".into()),
        },
        "user:rust",
        T0,
    )
    .expect("edit");
    theirs
        .transact::<_, _, AutomergeError>(|tx| {
            let (_, military) = automerge::ReadDoc::get(tx, &ROOT, "military")?.expect("military");
            js_string(tx, &military, "unit", "72 brigade");
            Ok(())
        })
        .expect("js edit");
    ours.merge(&mut theirs).expect("merge");
    let unit = read_case(&ours).expect("reads").military.unit;
    let mut values: Vec<_> = unit.candidates().cloned().collect();
    values.sort();
    assert_eq!(values, vec!["72 brigade".to_owned(), "72nd".to_owned()]);
    let conflict = conflicts(&ours)
        .into_iter()
        .find(|c| c.path == "military.unit")
        .expect("conflict");
    assert!(conflict
        .values
        .iter()
        .any(|v| v.value == Some(RawValue::Text("72 brigade".into()))));
}

#[test]
fn edits_work_on_a_js_written_case_but_never_create_missing_containers() {
    let mut doc = js_written_case();
    apply_edit(
        &mut doc,
        &Edit::SpliceText {
            field: Field::Person(PersonField::Description),
            pos: 0,
            delete: 0,
            insert: "Very ".into(),
        },
        "user:rust",
        T0,
    )
    .expect("splice into a JS text");
    let case = read_case(&doc).expect("reads");
    assert_eq!(
        case.person.description.as_deref(),
        Some("Very Tall, a scar on the left hand.")
    );

    // `sources` was never created: the model refuses rather than racing
    // another device to create it.
    let heads = doc.get_heads();
    let err = apply_edit(
        &mut doc,
        &Edit::AddItem {
            item: ItemRef::new(Collection::Sources, id("s1")),
            values: vec![],
        },
        "user:rust",
        T0,
    )
    .expect_err("no sources container");
    assert!(
        matches!(err, ModelError::Missing { ref path } if path == "sources"),
        "{err}"
    );
    // Nor is a missing section created.
    let err = apply_edit(
        &mut doc,
        &Edit::SpliceText {
            field: Field::Disappearance(DisappearanceField::Circumstances),
            pos: 0,
            delete: 0,
            insert: "x".into(),
        },
        "user:rust",
        T0,
    )
    .expect_err("no disappearance section");
    assert!(
        matches!(err, ModelError::Missing { ref path } if path == "disappearance"),
        "{err}"
    );
    assert_eq!(doc.get_heads(), heads, "a refused edit wrote something");
}

/// Builds a case with the template, then lets `corrupt` write something a
/// hostile or buggy client might.
fn corrupted(
    corrupt: impl FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<(), AutomergeError>,
) -> Automerge {
    let mut doc = new_case();
    doc.transact(corrupt).expect("corrupting write");
    doc
}

fn section(tx: &automerge::transaction::Transaction<'_>, key: &str) -> ObjId {
    automerge::ReadDoc::get(tx, &ROOT, key)
        .expect("get")
        .expect("section exists")
        .1
}

#[test]
fn wrong_types_are_errors_that_name_the_path() {
    let cases: Vec<(&str, Automerge, &str)> = vec![
        (
            "a number where a string belongs",
            corrupted(|tx| {
                let m = section(tx, "military");
                tx.put(&m, "unit", 72_i64)
            }),
            "military.unit: expected a string, found an integer",
        ),
        (
            "a list where a collection belongs",
            corrupted(|tx| tx.put_object(&ROOT, "timeline", ObjType::List).map(drop)),
            "timeline: expected a map, found a list",
        ),
        (
            "a text where a section belongs",
            corrupted(|tx| tx.put_object(&ROOT, "military", ObjType::Text).map(drop)),
            "military: expected a map, found a text",
        ),
        (
            "an item that is not a map",
            corrupted(|tx| {
                let t = section(tx, "timeline");
                tx.put(&t, "t1", "oops")
            }),
            "timeline.t1: expected a map, found a string",
        ),
        (
            "an item id with a dot",
            corrupted(|tx| {
                let t = section(tx, "timeline");
                tx.put_object(&t, "a.b", ObjType::Map).map(drop)
            }),
            "timeline: invalid identifier",
        ),
        (
            "a date that is not a date",
            corrupted(|tx| {
                let p = section(tx, "person");
                tx.put(&p, "date_of_birth", "yesterday")
            }),
            "person.date_of_birth: not a date",
        ),
        (
            "an unknown status",
            corrupted(|tx| {
                let c = section(tx, "status_claims");
                let c1 = tx.put_object(&c, "c1", ObjType::Map)?;
                tx.put(&c1, "status", "zombie")
            }),
            "status_claims.c1.status: unknown status",
        ),
        (
            "a narrative that is a number",
            corrupted(|tx| {
                let d = section(tx, "disappearance");
                tx.put(&d, "circumstances", 1.5)
            }),
            "disappearance.circumstances: expected a string, found a float",
        ),
        (
            "a newer schema",
            corrupted(|tx| tx.put(&ROOT, "schema_version", 99_i64)),
            "schema version 99",
        ),
        (
            "another kind of document",
            corrupted(|tx| tx.put(&ROOT, "kind", "casesync.coordination")),
            "not a case document",
        ),
    ];
    for (what, doc, expected) in cases {
        let err = read_case(&doc).expect_err(what);
        assert!(
            err.to_string().contains(expected),
            "{what}: {err} does not contain {expected:?}"
        );
    }
    let empty = Automerge::new();
    assert!(matches!(
        read_case(&empty),
        Err(ModelError::WrongDocument {
            expected: "case",
            found: None
        })
    ));
    // Conflicts never fail: they are listed from whatever can be read.
    let doc = corrupted(|tx| tx.put_object(&ROOT, "timeline", ObjType::List).map(drop));
    assert!(conflicts(&doc).is_empty());
}

#[test]
fn a_case_reads_as_it_stood_at_earlier_heads() {
    let mut doc = new_case();
    let unit = Field::Military(MilitaryField::Unit);
    apply_edit(
        &mut doc,
        &Edit::SetField {
            field: unit,
            value: FieldValue::Str("first".into()),
        },
        "user:olena",
        T0,
    )
    .expect("edit");
    let then = doc.get_heads();
    let case_then = read_case(&doc).expect("reads");
    apply_edit(
        &mut doc,
        &Edit::SetField {
            field: unit,
            value: FieldValue::Str("second".into()),
        },
        "user:olena",
        T0 + 1,
    )
    .expect("edit");
    apply_edit(
        &mut doc,
        &Edit::AddItem {
            item: ItemRef::new(Collection::Links, id("l1")),
            values: vec![],
        },
        "user:olena",
        T0 + 2,
    )
    .expect("edit");

    assert_eq!(
        read_case_at(&doc, &then).expect("reads at heads"),
        case_then
    );
    assert_eq!(
        read_case(&doc)
            .expect("reads")
            .military
            .unit
            .value()
            .map(String::as_str),
        Some("second")
    );
    assert!(conflicts_at(&doc, &then)
        .expect("conflicts at heads")
        .is_empty());

    let unknown = automerge::ChangeHash([9; 32]);
    assert!(matches!(
        read_case_at(&doc, &[unknown]),
        Err(ModelError::UnknownHeads { .. })
    ));
}

#[test]
fn edits_that_do_not_fit_are_refused_without_writing() {
    let mut doc = new_case();
    let t1 = ItemRef::new(Collection::Timeline, id("t1"));
    apply_edit(
        &mut doc,
        &Edit::AddItem {
            item: t1.clone(),
            values: vec![],
        },
        "user:olena",
        T0,
    )
    .expect("add");
    let heads = doc.get_heads();

    let refused: Vec<(Edit, &str, &str)> = vec![
        (
            Edit::SetField {
                field: Field::Disappearance(DisappearanceField::Circumstances),
                value: FieldValue::Str("x".into()),
            },
            "user:olena",
            "narratives are edited by splice",
        ),
        (
            Edit::SetField {
                field: Field::Person(PersonField::DateOfBirth),
                value: FieldValue::Str("1990".into()),
            },
            "user:olena",
            "value of kind string given where date is stored",
        ),
        (
            Edit::SpliceText {
                field: Field::Military(MilitaryField::Unit),
                pos: 0,
                delete: 0,
                insert: "x".into(),
            },
            "user:olena",
            "only narratives are edited by splice",
        ),
        (
            Edit::SpliceText {
                field: Field::Disappearance(DisappearanceField::Circumstances),
                pos: 1,
                delete: 0,
                insert: "x".into(),
            },
            "user:olena",
            "outside a text of length 0",
        ),
        (
            Edit::SpliceItemText {
                item: t1.clone(),
                field: ItemField::Timeline(TimelineField::Description),
                pos: 0,
                delete: usize::MAX,
                insert: String::new(),
            },
            "user:olena",
            "outside a text",
        ),
        (
            Edit::AddItem {
                item: t1.clone(),
                values: vec![],
            },
            "user:olena",
            "already exists",
        ),
        (
            Edit::SetItemField {
                item: t1.clone(),
                field: ItemField::Source(SourceField::Title),
                value: FieldValue::Str("x".into()),
            },
            "user:olena",
            "belongs to sources, not to timeline",
        ),
        (
            Edit::SetItemField {
                item: ItemRef::new(Collection::Timeline, id("t2")),
                field: ItemField::Timeline(TimelineField::Title),
                value: FieldValue::Str("x".into()),
            },
            "user:olena",
            "timeline.t2: no such item",
        ),
        (
            Edit::CiteSource {
                item: t1.clone(),
                source: id("s404"),
            },
            "user:olena",
            "sources.s404: no such item",
        ),
        (
            Edit::CiteSource {
                item: ItemRef::new(Collection::Links, id("l1")),
                source: id("s1"),
            },
            "user:olena",
            "links items do not cite sources",
        ),
        (
            Edit::SetField {
                field: Field::Military(MilitaryField::Unit),
                value: FieldValue::Str("x".repeat(MAX_REGISTER_BYTES + 1)),
            },
            "user:olena",
            "longer than",
        ),
        (
            Edit::DeleteItem { item: t1.clone() },
            "",
            "invalid author: empty",
        ),
        (
            Edit::DeleteItem { item: t1.clone() },
            "user:\u{7}",
            "control character",
        ),
        (
            Edit::LinkCoordination {
                coordination: DocumentId::from_bytes([1; 16]),
            },
            "user:olena\n",
            "control character",
        ),
    ];
    for (edit, author, expected) in refused {
        let err = apply_edit(&mut doc, &edit, author, T0).expect_err(expected);
        assert!(
            err.to_string().contains(expected),
            "{edit:?}: {err} does not contain {expected:?}"
        );
        assert_eq!(doc.get_heads(), heads, "{edit:?} wrote despite failing");
    }

    assert!(matches!(
        create_case(
            &mut doc,
            &CaseInit {
                created_by: "user:x".into(),
                coordination: None
            },
            T0
        ),
        Err(ModelError::AlreadyInitialized)
    ));
    assert!(ItemId::new("a.b").is_err());
    assert!(ItemId::new("").is_err());
    assert!(ItemId::new("x".repeat(65)).is_err());
    assert!(ItemId::new("01HF-abc_9").is_ok());
}
