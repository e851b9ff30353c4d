//! The coordinator's view of a case's history (issue 6), over a story on a
//! real `casesync serve` with real sockets: three relatives edit a case,
//! some of them offline for hours, two of them disagree; their coordinator
//! reads who changed what and when, looks at the case as it was, compares
//! two points, sees who wrote each part of the circumstances, resolves the
//! disagreement, sets the official status and exports the case.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use casesync_tests::{Api, ServerOptions, TestDevice, TestServer, TokenRequest};
use common::{add_item, set, PATIENCE};
use reqwest::Method;
use serde_json::{json, Value};
use sync_core::ids::DocumentId;
use sync_core::model::{
    self, Collection, DisappearanceField, Edit, Field, ItemField, MilitaryField, SourceField,
    TimelineField,
};

const HOUR_MS: i64 = 3_600_000;
const CIRCUMSTANCES: Field = Field::Disappearance(DisappearanceField::Circumstances);
const PLACE: Field = Field::Disappearance(DisappearanceField::Place);
const UNIT: Field = Field::Military(MilitaryField::Unit);
const RANK: Field = Field::Military(MilitaryField::Rank);
/// What Ivan wrote on his phone, three hours before it reached the server.
const IVAN: &str = "Last call on 3 March from near Izium.";

/// An edit made on `device` as its user, stamped `hours` before now (the
/// phone's clock when its owner typed it).
fn edit_hours_ago(device: &TestDevice, doc: &DocumentId, edit: &Edit, hours: i64) {
    let author = device.user().to_owned();
    let when = casesync_tests::now_ms() - hours * HOUR_MS;
    device
        .edit_raw(doc, |am| model::apply_edit(am, edit, &author, when))
        .unwrap()
        .unwrap();
}

async fn get(api: &Api, token: &str, path: &str) -> Value {
    let (status, body) = api.get_json(path, token).await.unwrap();
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

async fn post(api: &Api, token: &str, path: &str, body: Value) -> (u16, Value) {
    api.call(Method::POST, path, Some(token), Some(body))
        .await
        .unwrap()
}

/// The connected device opens the case and waits until it has it.
async fn open(device: &TestDevice, doc: DocumentId) {
    device.open(doc);
    device
        .wait_case(&doc, PATIENCE, "the case to arrive", |_| true)
        .await
        .unwrap();
}

async fn acked(device: &TestDevice, doc: &DocumentId) {
    device.wait_acknowledged(doc, PATIENCE).await.unwrap();
}

/// `(doc, user, device, message)` of each change, in order.
fn who_what(changes: &[Value]) -> Vec<(String, String, String, String)> {
    changes
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("doc"), s("user"), s("device"), s("message"))
        })
        .collect()
}

fn row(doc: &str, user: &str, device: &str, message: &str) -> (String, String, String, String) {
    (doc.into(), user.into(), device.into(), message.into())
}

fn hash_of(changes: &[Value], i: usize) -> String {
    changes[i]["hash"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_reads_merged_history_resolves_a_conflict_and_exports() {
    let server = TestServer::start(ServerOptions::default()).await.unwrap();
    let api = server.api().unwrap();
    let token = |user: &'static str, device: &'static str, role: &'static str| {
        let server = &server;
        async move {
            server
                .token_with(&TokenRequest {
                    role,
                    ..TokenRequest::new(user, device)
                })
                .await
                .unwrap()
        }
    };
    let natalia = token("natalia", "laptop", "coordinator").await;
    let oksana = token("oksana", "laptop", "coordinator").await;
    let admin = token("root", "laptop", "admin").await;
    let mut olena = TestDevice::minted(&server, "olena", "phone").await.unwrap();
    let mut ivan = TestDevice::minted(&server, "ivan", "phone").await.unwrap();
    let mut maria = TestDevice::minted(&server, "maria", "phone").await.unwrap();

    // Step 1: Olena, his mother, opens the case; an admin assigns Natalia
    // as its coordinator; Ivan (brother) and Maria (wife) join.
    let created = api
        .create_case(
            olena.token(),
            &[
                ("person.given_name", "Taras"),
                ("person.family_name", "Melnyk"),
                ("disappearance.place", "Kharkiv Oblast"),
            ],
        )
        .await
        .unwrap();
    let case = created.id;
    let base = format!("/api/cases/{}", case.to_url());
    let (s, body) = api
        .call(
            Method::PUT,
            &format!("{base}/coordinators/natalia"),
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 204, "{body}");
    api.join_case(olena.token(), ivan.token(), &case)
        .await
        .unwrap();
    api.join_case(olena.token(), maria.token(), &case)
        .await
        .unwrap();
    for device in [&mut olena, &mut ivan, &mut maria] {
        device.connect(&server).await.unwrap();
        open(device, case).await;
    }

    // Step 2: Olena adds the unit and the commander's call as a source.
    olena.edit(&case, &set(UNIT, "72nd brigade")).unwrap();
    acked(&olena, &case).await;
    olena
        .edit(
            &case,
            &add_item(
                Collection::Sources,
                "s1",
                &[(
                    ItemField::Source(SourceField::Title),
                    "Call from his commander",
                )],
            ),
        )
        .unwrap();
    acked(&olena, &case).await;
    ivan.wait_case(&case, PATIENCE, "the source", |c| !c.sources.is_empty())
        .await
        .unwrap();

    // Step 3: Ivan is in a village without signal. He writes down the last
    // call there, three hours before his phone reaches the server.
    ivan.disconnect().await;
    edit_hours_ago(
        &ivan,
        &case,
        &Edit::SpliceText {
            field: CIRCUMSTANCES,
            pos: 0,
            delete: 0,
            insert: IVAN.into(),
        },
        3,
    );

    // Step 4: meanwhile Maria adds a timeline entry and Olena corrects the
    // place. This is the middle point the coordinator will look at.
    maria
        .edit(
            &case,
            &add_item(
                Collection::Timeline,
                "t1",
                &[(ItemField::Timeline(TimelineField::Title), "Last phone call")],
            ),
        )
        .unwrap();
    acked(&maria, &case).await;
    olena.edit(&case, &set(PLACE, "near Izium")).unwrap();
    acked(&olena, &case).await;
    let then = api.get_case(olena.token(), &case).await.unwrap();

    // Step 5: Ivan's phone finds a signal and delivers.
    ivan.connect(&server).await.unwrap();
    acked(&ivan, &case).await;
    for device in [&olena, &maria] {
        device
            .wait_case(&case, PATIENCE, "Ivan's text", |c| {
                c.disappearance.circumstances.as_deref() == Some(IVAN)
            })
            .await
            .unwrap();
    }

    // Step 6: Olena and Maria, both offline, write different ranks.
    olena.disconnect().await;
    maria.disconnect().await;
    edit_hours_ago(&olena, &case, &set(RANK, "sergeant"), 1);
    edit_hours_ago(&maria, &case, &set(RANK, "junior sergeant"), 2);
    olena.connect(&server).await.unwrap();
    acked(&olena, &case).await;
    maria.connect(&server).await.unwrap();
    acked(&maria, &case).await;

    // Step 7: Maria corrects the date in Ivan's text.
    maria
        .wait_case(&case, PATIENCE, "both ranks", |c| {
            c.military.rank.values.len() == 2
        })
        .await
        .unwrap();
    maria
        .edit(
            &case,
            &Edit::SpliceText {
                field: CIRCUMSTANCES,
                pos: 10,
                delete: 10,
                insert: "on the night of 3 March".into(),
            },
        )
        .unwrap();
    acked(&maria, &case).await;

    // Step 8: the change list, exactly: who, from which device, in the
    // order the server received it, across both documents of the case.
    let history = get(&api, &natalia, &format!("{base}/history")).await;
    let changes = history["changes"].as_array().unwrap().clone();
    assert_eq!(history["total"], 13);
    assert_eq!(
        who_what(&changes),
        [
            row("case", "olena", "phone", "create case from template v1"),
            row("case", "olena", "phone", "set disappearance.place"),
            row("case", "olena", "phone", "set person.family_name"),
            row("case", "olena", "phone", "set person.given_name"),
            row(
                "coordination",
                "olena",
                "phone",
                "create coordination from template v1"
            ),
            row("case", "olena", "phone", "set military.unit"),
            row("case", "olena", "phone", "add sources.s1"),
            row("case", "maria", "phone", "add timeline.t1"),
            row("case", "olena", "phone", "set disappearance.place"),
            row("case", "ivan", "phone", "edit disappearance.circumstances"),
            row("case", "olena", "phone", "set military.rank"),
            row("case", "maria", "phone", "set military.rank"),
            row("case", "maria", "phone", "edit disappearance.circumstances"),
        ]
    );
    // How long each phone held its change before delivering it.
    let offline = |i: usize| changes[i]["offline_ms"].as_i64().unwrap();
    for (i, hours) in [(9, 3), (10, 1), (11, 2)] {
        assert!(
            (hours * HOUR_MS..hours * HOUR_MS + 300_000).contains(&offline(i)),
            "change {i}: offline {} ms",
            offline(i)
        );
    }
    for i in [5, 6, 7, 8, 12] {
        assert!(
            offline(i) < 60_000,
            "change {i} was sent at once: {}",
            offline(i)
        );
    }
    assert!(changes[9]["received_at_ms"].as_i64() >= changes[8]["received_at_ms"].as_i64());
    // What each change touched.
    assert_eq!(
        changes[8]["summary"]["fields"],
        json!(["disappearance.place"])
    );
    assert_eq!(changes[7]["summary"]["added"], json!(["timeline.t1"]));
    assert_eq!(changes[7]["summary"]["sections"], json!(["timeline"]));
    assert_eq!(
        changes[9]["summary"]["fields"],
        json!(["disappearance.circumstances"])
    );
    // Pages of four, followed to the end, give the same list; newest first
    // starts at the end.
    let mut paged = Vec::new();
    let mut next = format!("{base}/history?limit=4");
    loop {
        let page = get(&api, &natalia, &next).await;
        paged.extend(page["changes"].as_array().unwrap().clone());
        match page["next"]["after"].as_i64() {
            Some(after) => next = format!("{base}/history?limit=4&after={after}"),
            None => break,
        }
    }
    assert_eq!(paged, changes);
    let newest = get(
        &api,
        &natalia,
        &format!("{base}/history?order=desc&limit=2"),
    )
    .await;
    assert_eq!(newest["changes"][0], changes[12]);
    assert_eq!(newest["changes"][1], changes[11]);

    // Step 9: the case at the middle point is what the case was then.
    let middle = hash_of(&changes, 8);
    let at = get(&api, &natalia, &format!("{base}/at/{middle}")).await;
    assert_eq!(at["doc"], "case");
    assert_eq!(at["state"], then.case);
    assert_eq!(at["state"]["disappearance"]["circumstances"], "");
    // As Ivan's phone saw it when he wrote: the old place, no timeline.
    let ivans = hash_of(&changes, 9);
    let seen = get(&api, &natalia, &format!("{base}/at/{ivans}?view=author")).await;
    assert_eq!(seen["state"]["disappearance"]["place"], "Kharkiv Oblast");
    assert_eq!(seen["state"]["disappearance"]["circumstances"], IVAN);
    assert_eq!(seen["state"]["timeline"], json!({}));
    assert_eq!(seen["state"]["military"]["unit"], "72nd brigade");

    // Step 10: what changed between two visits, line by line.
    let created_end = hash_of(&changes, 3);
    let diff = get(
        &api,
        &natalia,
        &format!("{base}/diff?from={created_end}&to={middle}"),
    )
    .await;
    assert_eq!(
        diff["lines"],
        json!([
            "military.unit: set to '72nd brigade'",
            "disappearance.place: 'Kharkiv Oblast' → 'near Izium'",
            "sources: +1 item",
            "timeline: +1 item",
        ])
    );
    assert!(diff["patches"].as_array().unwrap().contains(&json!({
        "action": "put", "path": ["disappearance", "place"],
        "value": "near Izium", "conflict": false,
    })));
    let last = hash_of(&changes, 12);
    let diff = get(
        &api,
        &natalia,
        &format!("{base}/diff?from={ivans}&to={last}"),
    )
    .await;
    assert_eq!(
        diff["lines"],
        json!([
            "military.rank: conflict between 'junior sergeant' and 'sergeant'",
            "disappearance.circumstances: text edited, +23 −10 characters",
        ])
    );

    // Step 11: who wrote which part of the circumstances.
    let blame = get(
        &api,
        &natalia,
        &format!("{base}/blame?path=disappearance.circumstances"),
    )
    .await;
    let spans: Vec<(String, String, String)> = blame["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let change = s["change"].as_str().unwrap();
            (
                s["text"].as_str().unwrap().to_owned(),
                blame["authors"][change]["user"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                change.to_owned(),
            )
        })
        .collect();
    assert_eq!(
        spans,
        [
            ("Last call ".to_owned(), "ivan".to_owned(), ivans.clone()),
            (
                "on the night of 3 March".to_owned(),
                "maria".to_owned(),
                last.clone()
            ),
            (
                " from near Izium.".to_owned(),
                "ivan".to_owned(),
                ivans.clone()
            ),
        ]
    );
    assert_eq!(
        blame["text"],
        "Last call on the night of 3 March from near Izium."
    );

    // Step 12: the disagreement, with who said what; Natalia chooses.
    let listed = get(&api, &natalia, &format!("{base}/conflicts")).await;
    let conflicts = listed["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{listed}");
    assert_eq!(conflicts[0]["path"], "military.rank");
    let mut values: Vec<(String, String, String)> = conflicts[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap().to_owned(),
                v["author"]["user"].as_str().unwrap().to_owned(),
                v["author"]["device"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    values.sort();
    assert_eq!(
        values,
        [
            (
                "junior sergeant".to_owned(),
                "maria".to_owned(),
                "phone".to_owned()
            ),
            (
                "sergeant".to_owned(),
                "olena".to_owned(),
                "phone".to_owned()
            ),
        ]
    );
    let chosen = conflicts[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["value"] == "junior sergeant")
        .unwrap()["op"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, resolved) = post(
        &api,
        &natalia,
        &format!("{base}/conflicts/resolve"),
        json!({ "path": "military.rank", "op": chosen }),
    )
    .await;
    assert_eq!(s, 200, "{resolved}");
    let listed = get(&api, &natalia, &format!("{base}/conflicts")).await;
    assert_eq!(listed["conflicts"], json!([]));
    // A second resolution has nothing to resolve.
    let (s, _) = post(
        &api,
        &natalia,
        &format!("{base}/conflicts/resolve"),
        json!({ "path": "military.rank", "op": chosen }),
    )
    .await;
    assert_eq!(s, 400);
    // The phones get the choice like any other change.
    olena
        .wait_case(&case, PATIENCE, "the resolution", |c| {
            c.military.rank.values.len() == 1
                && c.military.rank.value().map(String::as_str) == Some("junior sergeant")
        })
        .await
        .unwrap();

    // Step 13: the official status, on the commander's call.
    let (s, body) = post(
        &api,
        &natalia,
        &format!("{base}/official-status"),
        json!({ "status": "captured", "basis": ["nonexistent"] }),
    )
    .await;
    assert_eq!(s, 400, "a basis must be a source of the case: {body}");
    let (s, body) = post(
        &api,
        &natalia,
        &format!("{base}/official-status"),
        json!({
            "status": "captured",
            "basis": ["s1"],
            "note": "Confirmed by his commander's call.",
        }),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let history = get(
        &api,
        &natalia,
        &format!("{base}/history?after={}", changes[12]["log_seq"]),
    )
    .await;
    let tail = history["changes"].as_array().unwrap();
    assert_eq!(
        who_what(tail),
        [
            row(
                "case",
                "natalia",
                "laptop",
                "resolve conflict at military.rank"
            ),
            row("coordination", "natalia", "laptop", "set official_status"),
            row(
                "coordination",
                "natalia",
                "laptop",
                "edit official_status.note"
            ),
        ]
    );
    assert_eq!(tail[0]["hash"], resolved["hash"]);

    // Step 14: the export holds the case with who wrote what.
    let export = get(&api, &natalia, &format!("{base}/export?format=json")).await;
    assert_eq!(export["format"], "casesync-export");
    assert_eq!(export["exported_by"]["user"], "natalia");
    assert_eq!(
        export["case"]["state"]["military"]["rank"],
        "junior sergeant"
    );
    assert_eq!(
        export["coordination"]["state"]["official_status"]["status"],
        "captured"
    );
    let exported = export["changes"].as_array().unwrap();
    assert_eq!(exported.len(), 16);
    for (e, c) in exported.iter().zip(changes.iter()) {
        for key in [
            "hash",
            "user",
            "device",
            "received_at_ms",
            "committed_at_ms",
            "message",
        ] {
            assert_eq!(e[key], c[key], "{key}");
        }
    }
    let origin = |part: &str, path: &str| {
        export[part]["value_origins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["path"] == path)
            .map(|o| {
                (
                    o["author"]["user"].as_str().unwrap().to_owned(),
                    o["author"]["device"].as_str().unwrap().to_owned(),
                )
            })
            .unwrap()
    };
    // The rank's value is Maria's op when it was automerge's winner (the
    // resolution then only deleted Olena's), else a new op of Natalia's:
    // which one depends on the random actor ids.
    let rank = origin("case", "military.rank");
    assert!(
        rank == ("maria".into(), "phone".into()) || rank == ("natalia".into(), "laptop".into()),
        "{rank:?}"
    );
    assert_eq!(
        origin("case", "disappearance.place"),
        ("olena".into(), "phone".into())
    );
    assert_eq!(
        origin("case", "timeline.t1.title"),
        ("maria".into(), "phone".into())
    );
    assert_eq!(
        origin("coordination", "official_status.status"),
        ("natalia".into(), "laptop".into())
    );
    let contributors: Vec<(&str, &str, u64)> = export["contributors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["user"].as_str().unwrap(),
                c["device"].as_str().unwrap(),
                c["changes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        contributors,
        [
            ("ivan", "phone", 1),
            ("maria", "phone", 3),
            ("natalia", "laptop", 3),
            ("olena", "phone", 9),
        ]
    );
    let resp = api
        .request(Method::GET, &format!("{base}/export?format=html"))
        .bearer_auth(&natalia)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = resp.text().await.unwrap();
    for text in [
        "<h1>Taras Melnyk</h1>",
        "Captured",
        "Call from his commander (s1)",
        "junior sergeant",
        "set by natalia",
        "entered by olena (phone)",
        "Last call on the night of 3 March from near Izium.",
        "olena (phone)",
    ] {
        assert!(html.contains(text), "{text} in the report");
    }

    // Step 15: the coordinator's case list.
    let list = get(&api, &natalia, "/api/coordinator/cases").await;
    let listed = &list["cases"][0];
    assert_eq!(listed["id"], case.to_url());
    assert_eq!(listed["title"], "Taras Melnyk");
    assert_eq!(listed["official_status"], "captured");
    assert_eq!(listed["conflicts"], 0);
    assert_eq!(listed["changes"], 16);

    // Step 16: the relatives and an unassigned coordinator cannot use it.
    for (who, expect) in [
        (olena.token(), 403),
        (ivan.token(), 403),
        (oksana.as_str(), 404),
    ] {
        for path in [
            format!("{base}/history"),
            format!("{base}/at/{middle}"),
            format!("{base}/diff?from={created_end}"),
            format!("{base}/blame?path=disappearance.circumstances"),
            format!("{base}/conflicts"),
            format!("{base}/export?format=html"),
        ] {
            assert_eq!(api.get_json(&path, who).await.unwrap().0, expect, "{path}");
        }
        let (s, _) = post(
            &api,
            who,
            &format!("{base}/conflicts/resolve"),
            json!({ "path": "military.rank", "op": chosen }),
        )
        .await;
        assert_eq!(s, expect);
    }
    assert_eq!(
        api.get_json("/api/coordinator/cases", olena.token())
            .await
            .unwrap()
            .0,
        404
    );

    // Step 17: the audit log has Natalia's reads, coalesced into one row
    // for this case, and each export on its own.
    let audit = get(&api, &admin, "/api/audit?limit=1000").await;
    let rows = audit["rows"].as_array().unwrap();
    let of = |kind: &str| {
        rows.iter()
            .filter(|r| r["kind"] == kind && r["user"] == "natalia" && r["doc"] == case.to_url())
            .count()
    };
    assert_eq!(of("coordinator_read"), 1, "{audit}");
    assert_eq!(of("export"), 2);
}
