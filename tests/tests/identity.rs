//! Identity stories (issue 4): invitations, actor squatting, revocation
//! and the quarantine, on a real `casesync serve` with real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::ActorId;
use casesync_tests::{wait, Api, ServerOptions, TestDevice, TestServer, TokenRequest};
use common::{splice, PATIENCE};
use serde_json::{json, Value};
use sync_core::ids::DocumentId;
use sync_core::model::{DisappearanceField, Field};

const CIRCUMSTANCES: Field = Field::Disappearance(DisappearanceField::Circumstances);
const POLICY_VIOLATION: u16 = 1008;
/// The promise: a revoked device's sockets close within a second.
const REVOCATION_DEADLINE: Duration = Duration::from_secs(1);

fn circumstances(device: &TestDevice, doc: &DocumentId) -> String {
    device
        .read_case(doc)
        .unwrap()
        .disappearance
        .circumstances
        .unwrap_or_default()
}

/// Opens the case on a connected device and waits until it has it.
async fn open(device: &TestDevice, doc: DocumentId) {
    device.open(doc);
    device
        .wait_case(&doc, PATIENCE, "the case to arrive", |_| true)
        .await
        .unwrap();
}

/// Appends `line` to the case's circumstances on `device`.
fn append(device: &TestDevice, doc: &DocumentId, line: &str) {
    let len = circumstances(device, doc).chars().count();
    device.edit(doc, &splice(CIRCUMSTANCES, len, line)).unwrap();
}

/// (user, device) of every change of `actor` in the server's change log.
fn logged_authors(server: &TestServer, doc: &DocumentId, actor: &[u8]) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open_with_flags(
        server.data_dir().join("casesync.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare("SELECT user_id, device_id FROM changes WHERE doc_id = ?1 AND actor = ?2 ORDER BY log_seq")
        .unwrap();
    stmt.query_map(rusqlite::params![doc.as_bytes().as_slice(), actor], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

async fn status(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> u16 {
    api.call(method, path, Some(token), body).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_are_single_use_expiring_and_revocable() {
    let server = TestServer::start(ServerOptions::default()).await.unwrap();
    let api = server.api().unwrap();
    let olena = server.token("olena", "phone").await.unwrap();
    let ivan = server.token("ivan", "phone").await.unwrap();
    let maria = server.token("maria", "phone").await.unwrap();
    let case = api.create_case(&olena, &[]).await.unwrap().id;
    let case_path = format!("/api/cases/{}", case.to_url());

    // Step 1: before an invitation, Ivan cannot see the case at all.
    assert_eq!(api.get_json(&case_path, &ivan).await.unwrap().0, 404);
    assert!(api.list_cases(&ivan).await.unwrap().is_empty());

    // Step 2: Olena invites; Ivan accepts and now sees the case.
    let (_, code) = api.invite(&olena, &case, json!({})).await.unwrap();
    assert_eq!(api.accept(&ivan, &code).await.unwrap(), 200);
    assert_eq!(api.get_json(&case_path, &ivan).await.unwrap().0, 200);
    assert_eq!(api.list_cases(&ivan).await.unwrap(), vec![case]);

    // Step 3: the same code again, by Maria: already used.
    assert_eq!(api.accept(&maria, &code).await.unwrap(), 410);
    assert_eq!(api.get_json(&case_path, &maria).await.unwrap().0, 404);

    // Step 4: a revoked invitation.
    let (id, code) = api.invite(&olena, &case, json!({})).await.unwrap();
    let path = format!("{case_path}/invitations/{id}");
    assert_eq!(
        status(&api, reqwest::Method::DELETE, &path, &olena, None).await,
        204
    );
    assert_eq!(api.accept(&maria, &code).await.unwrap(), 410);
    // Revoking it twice, or someone else's case's invitation: not found.
    assert_eq!(
        status(&api, reqwest::Method::DELETE, &path, &olena, None).await,
        404
    );
    assert_eq!(
        status(&api, reqwest::Method::DELETE, &path, &maria, None).await,
        404
    );

    // Step 5: an expired invitation.
    let (_, code) = api
        .invite(&olena, &case, json!({ "expires_in_secs": 1 }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(api.accept(&maria, &code).await.unwrap(), 410);

    // Step 6: a code that never existed, and nonsense lifetimes.
    assert_eq!(api.accept(&maria, "no-such-code").await.unwrap(), 404);
    for body in [
        json!({ "expires_in_secs": 0 }),
        json!({ "expires_in_hours": 100000 }),
        json!({ "expires_in_secs": 5, "expires_in_hours": 1 }),
        json!({ "role": "admin" }),
    ] {
        let path = format!("{case_path}/invitations");
        let got = status(
            &api,
            reqwest::Method::POST,
            &path,
            &olena,
            Some(body.clone()),
        )
        .await;
        assert_eq!(got, 400, "{body}");
    }
    assert_eq!(api.get_json(&case_path, &maria).await.unwrap().0, 404);

    // Step 7: the invitation list shows what happened, and no codes.
    let (s, list) = api
        .get_json(&format!("{case_path}/invitations"), &olena)
        .await
        .unwrap();
    assert_eq!(s, 200);
    let list = list["invitations"].as_array().unwrap().clone();
    assert_eq!(list.len(), 3);
    assert_eq!(list.iter().filter(|i| i["used_by"] == "ivan").count(), 1);
    assert_eq!(
        list.iter().filter(|i| i["revoked_at_ms"].is_i64()).count(),
        1
    );
    assert!(list.iter().all(|i| i.get("code").is_none()));

    // Step 8: the audit log recorded the invitations and the refusals.
    let admin = server
        .token_with(&TokenRequest {
            role: "admin",
            ..TokenRequest::new("root", "laptop")
        })
        .await
        .unwrap();
    let (s, audit) = api.get_json("/api/audit?limit=1000", &admin).await.unwrap();
    assert_eq!(s, 200, "{audit}");
    let kinds: Vec<&str> = audit["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for kind in [
        "invitation_created",
        "invitation_accepted",
        "invitation_revoked",
        "invitation_refused",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }

    // Step 9: `casesync check` accepts a database with invited members.
    let report = server.check().await.unwrap();
    assert!(report.starts_with("ok"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_copies_anothers_actor_id_is_refused_and_the_victim_syncs_on() {
    let server = TestServer::start(ServerOptions::default()).await.unwrap();
    let api = server.api().unwrap();
    let mut alice = TestDevice::minted(&server, "alice", "phone").await.unwrap();
    let mut mallory = TestDevice::minted(&server, "mallory", "phone")
        .await
        .unwrap();
    let case = api.create_case(alice.token(), &[]).await.unwrap().id;
    api.join_case(alice.token(), mallory.token(), &case)
        .await
        .unwrap();

    // Step 1: both phones sync the case; Alice writes a line.
    alice.connect(&server).await.unwrap();
    mallory.connect(&server).await.unwrap();
    open(&alice, case).await;
    open(&mallory, case).await;
    append(&alice, &case, "Last call from Bakhmut on 12 May.");
    wait::until_converged(&[&alice, &mallory], &case, PATIENCE)
        .await
        .unwrap();
    let alice_actor: ActorId = alice.doc(&case).unwrap().get_actor().clone();

    // Step 2: Mallory copies Alice's actor id and writes a change in her
    // name (with the next seq, which would also block Alice's phone).
    mallory
        .edit_raw(&case, |doc| {
            doc.set_actor(alice_actor.clone());
            let mut tx = doc.transaction();
            tx.put(automerge::ROOT, "forged", "Alice says the case is closed")
                .unwrap();
            tx.commit();
        })
        .unwrap();

    // Step 3: the server refuses it and closes Mallory's socket with a
    // protocol error; the forged change is nowhere.
    mallory.wait_offline(PATIENCE).await.unwrap();
    let close = mallory.closes().last().cloned().unwrap();
    assert_eq!(close.code, Some(POLICY_VIOLATION), "{close:?}");
    assert!(
        mallory.inspect(|s| s.server_errors().iter().any(|e| e.contains("actor"))),
        "{:?}",
        mallory.inspect(|s| s
            .server_errors()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>())
    );

    // Step 4: Alice never noticed: her next real change syncs on the same
    // socket and is acknowledged.
    append(&alice, &case, " Her brother confirmed it.");
    alice.wait_acknowledged(&case, PATIENCE).await.unwrap();
    assert!(alice.is_online());
    assert!(alice.closes().is_empty(), "{:?}", alice.closes());
    let view = api.get_case(alice.token(), &case).await.unwrap();
    assert!(view.get("forged").is_none(), "{:?}", view.case);
    assert!(circumstances(&alice, &case).ends_with("Her brother confirmed it."));

    // Step 5: the history holds only Alice's own changes under her actor,
    // all from her phone.
    let authors = logged_authors(&server, &case, alice_actor.to_bytes());
    assert_eq!(authors.len(), 2, "{authors:?}");
    assert!(
        authors.iter().all(|(u, d)| u == "alice" && d == "phone"),
        "{authors:?}"
    );

    // Step 6: Mallory may come back, but the forged change is refused again
    // every time she tries to deliver it.
    mallory.connect(&server).await.unwrap();
    mallory.wait_offline(PATIENCE).await.unwrap();
    assert_eq!(
        mallory.closes().last().unwrap().code,
        Some(POLICY_VIOLATION)
    );
    let view = api.get_case(alice.token(), &case).await.unwrap();
    assert!(view.get("forged").is_none());

    // Step 7: the refusals are in the audit log.
    let admin = server
        .token_with(&TokenRequest {
            role: "admin",
            ..TokenRequest::new("root", "laptop")
        })
        .await
        .unwrap();
    let (_, audit) = api.get_json("/api/audit?limit=1000", &admin).await.unwrap();
    let refused = audit["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "actor_refused")
        .count();
    // Refusals are coalesced per second: at least the first is a row.
    assert!(refused >= 1, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_devices_and_members_are_cut_off_and_their_late_edits_quarantined() {
    let server = TestServer::start(ServerOptions::default()).await.unwrap();
    let api = server.api().unwrap();
    let mut phone = TestDevice::minted(&server, "olena", "phone").await.unwrap();
    let mut tablet = TestDevice::minted(&server, "olena", "tablet")
        .await
        .unwrap();
    let mut ivan = TestDevice::minted(&server, "ivan", "phone").await.unwrap();
    let admin = server
        .token_with(&TokenRequest {
            role: "admin",
            ..TokenRequest::new("root", "laptop")
        })
        .await
        .unwrap();
    let coordinator = server
        .token_with(&TokenRequest {
            role: "coordinator",
            ..TokenRequest::new("natalia", "laptop")
        })
        .await
        .unwrap();
    let case = api.create_case(phone.token(), &[]).await.unwrap().id;
    let case_path = format!("/api/cases/{}", case.to_url());
    api.join_case(phone.token(), ivan.token(), &case)
        .await
        .unwrap();
    let assign = format!("{case_path}/coordinators/natalia");
    assert_eq!(
        status(&api, reqwest::Method::PUT, &assign, &admin, None).await,
        204
    );

    for d in [&mut phone, &mut tablet, &mut ivan] {
        d.connect(&server).await.unwrap();
        open(d, case).await;
    }
    append(&phone, &case, "Unit 93, last seen near Klishchiivka.");
    wait::until_converged(&[&phone, &tablet, &ivan], &case, PATIENCE)
        .await
        .unwrap();

    // Step 1: the tablet is seized. Olena revokes it from her phone: its
    // open socket closes within a second.
    let (s, devices) = api.get_json("/api/devices", phone.token()).await.unwrap();
    assert_eq!(s, 200);
    assert!(devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["device"] == "tablet"));
    let revoked_at = Instant::now();
    assert_eq!(
        status(
            &api,
            reqwest::Method::DELETE,
            "/api/devices/tablet",
            phone.token(),
            None
        )
        .await,
        204
    );
    tablet.wait_offline(PATIENCE).await.unwrap();
    let took = revoked_at.elapsed();
    assert!(took <= REVOCATION_DEADLINE, "closed after {took:?}");
    assert_eq!(tablet.closes().last().unwrap().code, Some(POLICY_VIOLATION));
    // The phone and Ivan were not touched.
    assert!(phone.is_online() && ivan.is_online());

    // Step 2: the tablet's token is refused on every API route from now on.
    assert_eq!(
        api.get_json("/api/cases", tablet.token()).await.unwrap().0,
        401
    );
    assert_eq!(
        api.get_json(&case_path, tablet.token()).await.unwrap().0,
        401
    );

    // Step 3: whoever holds the tablet types offline and reconnects: the
    // edit is quarantined, not merged, and the tablet learns nothing new.
    append(&phone, &case, " Seen in a list of prisoners.");
    phone.wait_acknowledged(&case, PATIENCE).await.unwrap();
    append(&tablet, &case, " TABLET: late offline note.");
    tablet.connect(&server).await.unwrap();
    let quarantine_path = format!("{case_path}/quarantine");
    let pending = wait_quarantined(&api, &quarantine_path, &coordinator, 1).await;
    assert_eq!(pending[0]["user"], "olena");
    assert_eq!(pending[0]["device"], "tablet");
    assert!(!circumstances(&tablet, &case).contains("prisoners"));
    let view = api.get_case(phone.token(), &case).await.unwrap();
    assert!(!view.case.to_string().contains("TABLET"));

    // Step 4: relatives may not review the quarantine; the coordinator
    // accepts the tablet's note, and it merges under the tablet's name.
    assert_eq!(
        api.get_json(&quarantine_path, phone.token())
            .await
            .unwrap()
            .0,
        403
    );
    let ids: Vec<i64> = pending.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    let (s, body) = api
        .call(
            reqwest::Method::POST,
            &format!("{quarantine_path}/accept"),
            Some(&coordinator),
            Some(json!({ "ids": ids })),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    phone
        .wait_case(&case, PATIENCE, "the accepted note", |c| {
            c.disappearance
                .circumstances
                .as_deref()
                .is_some_and(|t| t.contains("TABLET: late offline note."))
        })
        .await
        .unwrap();
    let tablet_actor = tablet.doc(&case).unwrap().get_actor().to_bytes().to_vec();
    let authors = logged_authors(&server, &case, &tablet_actor);
    assert!(!authors.is_empty());
    assert!(
        authors.iter().all(|(u, d)| u == "olena" && d == "tablet"),
        "{authors:?}"
    );
    assert!(wait_quarantined(&api, &quarantine_path, &coordinator, 0)
        .await
        .is_empty());

    // Step 5: the coordinator revokes Ivan's membership: his socket closes
    // within a second, and the case is gone for him.
    let revoked_at = Instant::now();
    let path = format!("{case_path}/members/ivan");
    assert_eq!(
        status(&api, reqwest::Method::DELETE, &path, &coordinator, None).await,
        204
    );
    ivan.wait_offline(PATIENCE).await.unwrap();
    let took = revoked_at.elapsed();
    assert!(took <= REVOCATION_DEADLINE, "closed after {took:?}");
    assert_eq!(api.get_json(&case_path, ivan.token()).await.unwrap().0, 404);
    assert!(api.list_cases(ivan.token()).await.unwrap().is_empty());
    // A relative cannot revoke members; Olena's phone is still online.
    let path = format!("{case_path}/members/olena");
    assert_eq!(
        status(&api, reqwest::Method::DELETE, &path, ivan.token(), None).await,
        404
    );
    assert!(phone.is_online());

    // Step 6: Ivan's late offline edit is quarantined too; the coordinator
    // discards it, and it never reaches the case.
    append(&ivan, &case, " IVAN: after revocation.");
    ivan.connect(&server).await.unwrap();
    let pending = wait_quarantined(&api, &quarantine_path, &coordinator, 1).await;
    assert_eq!(pending[0]["user"], "ivan");
    let ids: Vec<i64> = pending.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    let (s, _) = api
        .call(
            reqwest::Method::POST,
            &format!("{quarantine_path}/discard"),
            Some(&coordinator),
            Some(json!({ "ids": ids })),
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert!(wait_quarantined(&api, &quarantine_path, &coordinator, 0)
        .await
        .is_empty());
    let view = api.get_case(phone.token(), &case).await.unwrap();
    assert!(!view.case.to_string().contains("IVAN"));
}

/// Polls the quarantine list until it holds `n` undecided changes.
async fn wait_quarantined(api: &Api, path: &str, token: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (s, body) = api.get_json(path, token).await.unwrap();
        assert_eq!(s, 200, "{body}");
        let items = body["quarantine"].as_array().cloned().unwrap_or_default();
        if items.len() >= n && (n > 0 || items.is_empty()) {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "quarantine never held {n}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
