//! The relatives' day: three phones edit one case offline, come back at the
//! same moment, and nothing anyone typed is lost. A fourth device that
//! never went offline sees it all arrive live.
//!
//! Membership is "the creator of a case is its only member" until
//! invitations exist (server/src/acl.rs), so the family works from one
//! account (`olena`) on four devices.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use casesync_tests::{wait, ServerOptions, TestDevice, TestServer};
use common::{add_item, candidates, hex_heads, id, set, sorted, splice, PATIENCE};
use sync_core::engine::DeviceEvent;
use sync_core::model::{
    Collection, DisappearanceField, DnaSampleField, Edit, Field, FieldValue, ItemField, ItemRef,
    MilitaryField, PersonField, ReplyField, RequestField, SourceField, Status, TimelineField,
};

const UNIT: Field = Field::Military(MilitaryField::Unit);
const CIRCUMSTANCES: Field = Field::Disappearance(DisappearanceField::Circumstances);

fn text_len(device: &TestDevice, doc: &sync_core::ids::DocumentId) -> usize {
    device
        .read_case(doc)
        .unwrap()
        .disappearance
        .circumstances
        .unwrap_or_default()
        .chars()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relatives_edit_offline_and_converge_with_nothing_lost() {
    let server = TestServer::start(ServerOptions::default()).await.unwrap();
    let api = server.api().unwrap();

    // Step 1: Olena opens a case for her brother with what she knows.
    let owner = server.token("olena", "web").await.unwrap();
    let case = api
        .create_case(
            &owner,
            &[
                ("military.unit", "93rd brigade"),
                (
                    "disappearance.circumstances",
                    "Last call from near Bakhmut.",
                ),
            ],
        )
        .await
        .unwrap();
    let doc = case.id;

    // Step 2: four devices open it: Olena's phone, their mother's phone,
    // her sister's phone, and the family computer at home.
    let mut phone = TestDevice::minted(&server, "olena", "phone").await.unwrap();
    let mut mother = TestDevice::minted(&server, "olena", "mother-phone")
        .await
        .unwrap();
    let mut sister = TestDevice::minted(&server, "olena", "sister-phone")
        .await
        .unwrap();
    let mut home = TestDevice::minted(&server, "olena", "home-pc")
        .await
        .unwrap();
    for d in [&mut phone, &mut mother, &mut sister, &mut home] {
        d.open(doc);
        d.connect(&server).await.unwrap();
    }
    wait::until_converged(&[&phone, &mother, &sister, &home], &doc, PATIENCE)
        .await
        .unwrap();
    assert_eq!(
        phone.read_case(&doc).unwrap().military.unit.value(),
        Some(&"93rd brigade".to_owned())
    );

    // Step 3: the home computer adds a timeline entry while everyone is
    // still online; every phone has it before they lose signal.
    home.edit(
        &doc,
        &add_item(
            Collection::Timeline,
            "mobilized",
            &[(ItemField::Timeline(TimelineField::Title), "Mobilized")],
        ),
    )
    .unwrap();
    wait::until_converged(&[&phone, &mother, &sister, &home], &doc, PATIENCE)
        .await
        .unwrap();

    // Step 4: the three phones go offline.
    for d in [&mut phone, &mut mother, &mut sister] {
        d.disconnect().await;
        assert!(!d.is_online());
    }
    home.take_events();

    // Step 5: each edits registers, the narrative and collections offline.
    let len = text_len(&phone, &doc);
    let phone_edits = vec![
        set(UNIT, "93rd mechanized brigade"),
        set(Field::Military(MilitaryField::ServiceNumber), "AB-123456"),
        splice(
            CIRCUMSTANCES,
            len,
            " Comrade Petro says the unit withdrew at night.",
        ),
        add_item(
            Collection::Sources,
            "petro-account",
            &[
                (ItemField::Source(SourceField::Kind), "testimony"),
                (ItemField::Source(SourceField::Title), "Petro's account"),
            ],
        ),
        Edit::AddStatusClaim {
            id: id("claim-petro"),
            status: Status::Captured,
            claimed_by: "Petro, comrade".into(),
            as_of: None,
            statement: "Saw him taken near the river.".into(),
            sources: vec![id("petro-account")],
        },
        Edit::SetItemField {
            item: ItemRef::new(Collection::Timeline, id("mobilized")),
            field: ItemField::Timeline(TimelineField::Title),
            value: FieldValue::Str("Mobilized in Poltava".into()),
        },
    ];
    let mother_edits = vec![
        set(UNIT, "93 OMBr"),
        set(Field::Person(PersonField::GivenName), "Andriy"),
        splice(CIRCUMSTANCES, 0, "12 May: "),
        add_item(
            Collection::Requests,
            "icrc-request",
            &[
                (ItemField::Request(RequestField::Authority), "ICRC"),
                (ItemField::Request(RequestField::Subject), "Tracing request"),
            ],
        ),
        // A reply is an item of its request.
        Edit::AddItem {
            item: ItemRef::reply(id("icrc-request"), id("icrc-reply-1")),
            values: vec![(
                ItemField::Reply(ReplyField::Outcome),
                FieldValue::Str("registered".into()),
            )],
        },
        Edit::AddStatusClaim {
            id: id("claim-commander"),
            status: Status::Killed,
            claimed_by: "Unit commander".into(),
            as_of: None,
            statement: "Listed among the dead after the withdrawal.".into(),
            sources: vec![],
        },
    ];
    let len = text_len(&sister, &doc);
    let sister_edits = vec![
        set(UNIT, "93rd brigade, 2nd battalion"),
        set(Field::Person(PersonField::FamilyName), "Kovalenko"),
        splice(CIRCUMSTANCES, len, " Ministry letter pending."),
        add_item(
            Collection::Dna,
            "dna-sister",
            &[
                (ItemField::Dna(DnaSampleField::DonorRelation), "sister"),
                (ItemField::Dna(DnaSampleField::Lab), "Kyiv forensic lab"),
            ],
        ),
        // Racing the phone's retitling of the same entry.
        Edit::DeleteItem {
            item: ItemRef::new(Collection::Timeline, id("mobilized")),
        },
    ];
    for (device, edits) in [
        (&phone, &phone_edits),
        (&mother, &mother_edits),
        (&sister, &sister_edits),
    ] {
        for edit in edits {
            assert!(device.edit(&doc, edit).unwrap().is_some(), "{edit:?}");
        }
        assert!(device.unacknowledged(&doc) >= edits.len());
    }
    // The home computer, online, edits too.
    home.edit(
        &doc,
        &set(Field::Person(PersonField::PlaceOfBirth), "Poltava"),
    )
    .unwrap();
    home.wait_acknowledged(&doc, PATIENCE).await.unwrap();

    // Step 6: the three phones reconnect at the same moment.
    let (a, b, c) = tokio::join!(
        phone.connect(&server),
        mother.connect(&server),
        sister.connect(&server)
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();

    // Step 7: everyone converges, every change acknowledged as stored.
    let devices = [&phone, &mother, &sister, &home];
    let heads = wait::until_converged(&devices, &doc, PATIENCE)
        .await
        .unwrap();

    // Step 8: every device, and the server, shows every edit.
    for device in devices {
        let case = device.read_case(&doc).unwrap();
        let who = device.peer_id();
        assert_eq!(
            candidates(&case.military.unit),
            sorted(vec![
                "93 OMBr".into(),
                "93rd brigade, 2nd battalion".into(),
                "93rd mechanized brigade".into()
            ]),
            "{who}: the three concurrent units are all shown"
        );
        assert_eq!(
            case.military.service_number.value().map(String::as_str),
            Some("AB-123456")
        );
        assert_eq!(
            case.person.given_name.value().map(String::as_str),
            Some("Andriy")
        );
        assert_eq!(
            case.person.family_name.value().map(String::as_str),
            Some("Kovalenko")
        );
        assert_eq!(
            case.person.place_of_birth.value().map(String::as_str),
            Some("Poltava")
        );
        // Two phones appended at the same spot: both sentences are there,
        // in an order every replica agrees on.
        let text = case.disappearance.circumstances.clone().unwrap_or_default();
        let start = "12 May: Last call from near Bakhmut.";
        let petro = " Comrade Petro says the unit withdrew at night.";
        let letter = " Ministry letter pending.";
        assert!(
            text == format!("{start}{petro}{letter}") || text == format!("{start}{letter}{petro}"),
            "{who}: {text:?}"
        );
        let source = &case.sources[&id("petro-account")];
        assert_eq!(
            source.fields.title.value().map(String::as_str),
            Some("Petro's account")
        );
        let captured = &case.status_claims[&id("claim-petro")];
        assert_eq!(captured.fields.status.value(), Some(&Status::Captured));
        assert!(captured.fields.source_ids.contains(&id("petro-account")));
        let killed = &case.status_claims[&id("claim-commander")];
        assert_eq!(killed.fields.status.value(), Some(&Status::Killed));
        let request = &case.requests[&id("icrc-request")];
        assert_eq!(
            request.fields.authority.value().map(String::as_str),
            Some("ICRC")
        );
        let reply = &request.fields.replies[&id("icrc-reply-1")];
        assert_eq!(
            reply.fields.outcome.value().map(String::as_str),
            Some("registered")
        );
        let dna = &case.dna[&id("dna-sister")];
        assert_eq!(
            dna.fields.donor_relation.value().map(String::as_str),
            Some("sister")
        );
        // The deleted entry is still there, soft-deleted, with the title
        // the phone gave it at the same time.
        let entry = &case.timeline[&id("mobilized")];
        assert!(entry.is_deleted(), "{who}: sister's delete");
        assert_eq!(
            entry.fields.title.value().map(String::as_str),
            Some("Mobilized in Poltava"),
            "{who}: phone's concurrent retitling survives the delete"
        );
        assert_eq!(device.heads(&doc), heads);
    }

    // The server has the same document, and shows the conflict.
    let view = api.get_case(&owner, &doc).await.unwrap();
    assert_eq!(sorted(view.heads.clone()), hex_heads(&heads));
    assert_eq!(
        view.get("person.family_name").and_then(|v| v.as_str()),
        Some("Kovalenko")
    );
    let units: Vec<String> = view
        .conflict_values("military.unit")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        sorted(units),
        sorted(vec![
            "93 OMBr".into(),
            "93rd brigade, 2nd battalion".into(),
            "93rd mechanized brigade".into()
        ])
    );
    assert!(view
        .get("disappearance.circumstances")
        .and_then(|v| v.as_str())
        .is_some_and(|t| t.contains("Ministry letter pending.")));

    // Step 9: the home computer never went offline, and every phone's edits
    // reached it over its one connection, live.
    assert_eq!(home.inspect(|s| s.connections()), 1);
    assert!(home.closes().is_empty());
    assert!(home.take_events().contains(&DeviceEvent::DocChanged(doc)));
    for d in devices {
        assert!(
            d.inspect(|s| s.frame_errors().is_empty() && s.server_errors().is_empty()),
            "{}: no refused frames",
            d.peer_id()
        );
    }
    let applied = api.metric("casesync_changes_applied_total").await.unwrap();
    let edits = phone_edits.len() + mother_edits.len() + sister_edits.len() + 2;
    assert!(applied >= edits as f64, "{applied} < {edits}");
}
