//! The authorization matrix (issue 4): every HTTP route and every protocol
//! message type, for every kind of principal, each cell with the outcome it
//! must have. `the_matrix_lists_every_route` fails when the router gains a
//! route this file does not list.
//!
//! Principals: anonymous; malformed, expired, wrong-audience and
//! wrong-issuer tokens; a relative of the case; a relative of another case;
//! the assigned coordinator; an unassigned coordinator; an admin; a revoked
//! device of a relative of the case; a revoked member of the case.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use casesync_tests::{
    upgrade_status, Api, RawSocket, Received, ServerOptions, TestServer, TokenRequest, WsAuth,
};
use common::forge::{unix_now, Forge};
use common::PATIENCE;
use reqwest::Method;
use serde_json::{json, Value};
use sync_core::ids::{DocumentId, PeerId};
use sync_core::protocol::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum P {
    Anonymous,
    Malformed,
    Expired,
    WrongAudience,
    WrongIssuer,
    Family,
    OtherFamily,
    Coordinator,
    UnassignedCoordinator,
    Admin,
    RevokedDevice,
    RevokedMember,
}

const ALL: [P; 12] = [
    P::Anonymous,
    P::Malformed,
    P::Expired,
    P::WrongAudience,
    P::WrongIssuer,
    P::Family,
    P::OtherFamily,
    P::Coordinator,
    P::UnassignedCoordinator,
    P::Admin,
    P::RevokedDevice,
    P::RevokedMember,
];

/// The principals that hold a valid signed token, in the column order of
/// the route table.
const VALID: [P; 7] = [
    P::Family,
    P::OtherFamily,
    P::Coordinator,
    P::UnassignedCoordinator,
    P::Admin,
    P::RevokedDevice,
    P::RevokedMember,
];

/// Who may use a route.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// No authentication: this status for everyone.
    Public(u16),
    /// Not a JSON route (static files): never 401, whoever asks.
    Static,
    /// 401 for the five without a valid token; for the valid ones, in the
    /// order of [`VALID`].
    Authed([u16; 7]),
}

/// One route of the router: method, path as written in `app.rs`, the
/// concrete path and body to call it with, and the outcomes.
struct Route {
    method: &'static str,
    path: &'static str,
    call: &'static str,
    body: Option<fn() -> Value>,
    expect: Expect,
}

const NOT_FAMILY: [u16; 7] = [200, 404, 200, 404, 200, 401, 404];

/// Every route. Placeholders in `call` are filled per cell:
/// `{case}` the case, `{other}` another family's case, `{inv}` a fresh
/// invitation of the case, `{code}` a fresh invitation code of a fresh case,
/// `{member}` a fresh relative of the case, `{stranger}` a fresh user,
/// `{assigned}` a fresh coordinator assigned to the case, `{device}` a
/// fresh device name, `{frame}` (body) a `join` for the caller, `{head}` a
/// change hash of the case.
const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/healthz",
        call: "/healthz",
        body: None,
        expect: Expect::Public(200),
    },
    Route {
        method: "GET",
        path: "/metrics",
        call: "/metrics",
        body: None,
        expect: Expect::Public(200),
    },
    Route {
        method: "GET",
        path: "/app",
        call: "/app",
        body: None,
        expect: Expect::Static,
    },
    Route {
        method: "NEST",
        path: "/app/",
        call: "/app/",
        body: None,
        expect: Expect::Static,
    },
    // `/sync` is the WebSocket. A plain GET without the upgrade is a bad
    // request for anyone; the upgrade itself, with every principal, is
    // `every_protocol_message_for_every_principal`.
    Route {
        method: "GET",
        path: "/sync",
        call: "/sync",
        body: None,
        expect: Expect::Public(400),
    },
    Route {
        method: "POST",
        path: "/sync/http",
        call: "/sync/http",
        body: None,
        // A revoked device may still deliver its late edits, into
        // quarantine (and learns nothing new).
        expect: Expect::Authed([200, 200, 200, 200, 200, 200, 200]),
    },
    Route {
        method: "POST",
        path: "/api/cases",
        call: "/api/cases",
        body: Some(|| json!({})),
        expect: Expect::Authed([201, 201, 201, 201, 201, 401, 201]),
    },
    Route {
        method: "GET",
        path: "/api/cases",
        call: "/api/cases",
        body: None,
        expect: Expect::Authed([200, 200, 200, 200, 200, 401, 200]),
    },
    Route {
        method: "GET",
        path: "/api/cases/{id}",
        call: "/api/cases/{case}",
        body: None,
        expect: Expect::Authed(NOT_FAMILY),
    },
    Route {
        method: "POST",
        path: "/api/cases/{id}/invitations",
        call: "/api/cases/{case}/invitations",
        body: Some(|| json!({})),
        expect: Expect::Authed([201, 404, 201, 404, 201, 401, 404]),
    },
    Route {
        method: "GET",
        path: "/api/cases/{id}/invitations",
        call: "/api/cases/{case}/invitations",
        body: None,
        expect: Expect::Authed(NOT_FAMILY),
    },
    Route {
        method: "DELETE",
        path: "/api/cases/{id}/invitations/{invitation}",
        call: "/api/cases/{case}/invitations/{inv}",
        body: None,
        expect: Expect::Authed([204, 404, 204, 404, 204, 401, 404]),
    },
    Route {
        method: "POST",
        path: "/api/invitations/{code}/accept",
        call: "/api/invitations/{code}/accept",
        body: None,
        expect: Expect::Authed([200, 200, 200, 200, 200, 401, 200]),
    },
    Route {
        method: "GET",
        path: "/api/cases/{id}/members",
        call: "/api/cases/{case}/members",
        body: None,
        expect: Expect::Authed(NOT_FAMILY),
    },
    Route {
        method: "DELETE",
        path: "/api/cases/{id}/members/{user}",
        call: "/api/cases/{case}/members/{member}",
        body: None,
        expect: Expect::Authed([403, 404, 204, 404, 204, 401, 404]),
    },
    Route {
        method: "PUT",
        path: "/api/cases/{id}/coordinators/{user}",
        call: "/api/cases/{case}/coordinators/{stranger}",
        body: None,
        expect: Expect::Authed([404, 404, 404, 404, 204, 401, 404]),
    },
    Route {
        method: "DELETE",
        path: "/api/cases/{id}/coordinators/{user}",
        call: "/api/cases/{case}/coordinators/{assigned}",
        body: None,
        expect: Expect::Authed([404, 404, 404, 404, 204, 401, 404]),
    },
    Route {
        method: "GET",
        path: "/api/devices",
        call: "/api/devices",
        body: None,
        expect: Expect::Authed([200, 200, 200, 200, 200, 401, 200]),
    },
    Route {
        method: "DELETE",
        path: "/api/devices/{device}",
        call: "/api/devices/{device}",
        body: None,
        expect: Expect::Authed([204, 204, 204, 204, 204, 401, 204]),
    },
    Route {
        method: "DELETE",
        path: "/api/users/{user}/devices/{device}",
        call: "/api/users/{member}/devices/{device}",
        body: None,
        expect: Expect::Authed([404, 404, 204, 404, 204, 401, 404]),
    },
    Route {
        method: "GET",
        path: "/api/cases/{id}/quarantine",
        call: "/api/cases/{case}/quarantine",
        body: None,
        expect: Expect::Authed([403, 404, 200, 404, 200, 401, 404]),
    },
    Route {
        method: "POST",
        path: "/api/cases/{id}/quarantine/accept",
        call: "/api/cases/{case}/quarantine/accept",
        body: Some(|| json!({ "ids": [] })),
        expect: Expect::Authed([403, 404, 400, 404, 400, 401, 404]),
    },
    Route {
        method: "POST",
        path: "/api/cases/{id}/quarantine/discard",
        call: "/api/cases/{case}/quarantine/discard",
        body: Some(|| json!({ "ids": [] })),
        expect: Expect::Authed([403, 404, 400, 404, 400, 401, 404]),
    },
    Route {
        method: "GET",
        path: "/api/audit",
        call: "/api/audit",
        body: None,
        expect: Expect::Authed([404, 404, 404, 404, 200, 401, 404]),
    },
    // The history API (issue 6): the case's coordinators and admins; the
    // family sees the case, so 403 for them; everyone else 404.
    Route {
        method: "GET",
        path: "/api/cases/{id}/history",
        call: "/api/cases/{case}/history",
        body: None,
        expect: Expect::Authed(COORDINATORS_ONLY),
    },
    Route {
        method: "GET",
        path: "/api/cases/{id}/at/{change_hash}",
        call: "/api/cases/{case}/at/{head}",
        body: None,
        expect: Expect::Authed(COORDINATORS_ONLY),
    },
    Route {
        method: "GET",
        path: "/api/cases/{id}/diff",
        call: "/api/cases/{case}/diff?from={head}",
        body: None,
        expect: Expect::Authed(COORDINATORS_ONLY),
    },
    Route {
        method: "GET",
        path: "/api/cases/{id}/blame",
        call: "/api/cases/{case}/blame?path=disappearance.circumstances",
        body: None,
        expect: Expect::Authed(COORDINATORS_ONLY),
    },
    Route {
        method: "GET",
        path: "/api/cases/{id}/conflicts",
        call: "/api/cases/{case}/conflicts",
        body: None,
        expect: Expect::Authed(COORDINATORS_ONLY),
    },
    Route {
        method: "POST",
        path: "/api/cases/{id}/conflicts/resolve",
        call: "/api/cases/{case}/conflicts/resolve",
        // There is no conflict to resolve: a bad request, once allowed.
        body: Some(|| json!({ "path": "military.unit", "op": "1@00" })),
        expect: Expect::Authed([403, 404, 400, 404, 400, 401, 404]),
    },
    Route {
        method: "GET",
        path: "/api/cases/{id}/export",
        call: "/api/cases/{case}/export?format=json",
        body: None,
        expect: Expect::Authed(COORDINATORS_ONLY),
    },
    Route {
        method: "POST",
        path: "/api/cases/{id}/official-status",
        call: "/api/cases/{case}/official-status",
        body: Some(|| json!({ "status": "missing", "basis": [] })),
        expect: Expect::Authed(COORDINATORS_ONLY),
    },
    Route {
        method: "GET",
        path: "/api/coordinator/cases",
        call: "/api/coordinator/cases",
        body: None,
        // Relatives have no such list; an unassigned coordinator's is empty.
        expect: Expect::Authed([404, 404, 200, 200, 200, 401, 404]),
    },
    Route {
        method: "GET",
        path: "/admin",
        call: "/admin",
        body: None,
        expect: Expect::Static,
    },
    Route {
        method: "NEST",
        path: "/admin/",
        call: "/admin/",
        body: None,
        expect: Expect::Static,
    },
];

const COORDINATORS_ONLY: [u16; 7] = [403, 404, 200, 404, 200, 401, 404];

/// The server with the case, its people and one token per principal.
struct World {
    server: TestServer,
    api: Api,
    case: DocumentId,
    coordination: DocumentId,
    other: DocumentId,
    tokens: Vec<(P, Option<String>)>,
    family: String,
    admin: String,
    fresh: std::cell::Cell<u32>,
}

impl World {
    async fn new() -> Self {
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
        let family = token("olena", "phone", "relative").await;
        let other_family = token("ivan", "phone", "relative").await;
        let coordinator = token("natalia", "laptop", "coordinator").await;
        let unassigned = token("oksana", "laptop", "coordinator").await;
        let admin = token("root", "laptop", "admin").await;
        let old_phone = token("olena", "old-phone", "relative").await;
        let revoked_member = token("petro", "phone", "relative").await;

        let created = api.create_case(&family, &[]).await.unwrap();
        let other = api.create_case(&other_family, &[]).await.unwrap().id;
        let case = created.id;
        let case_path = format!("/api/cases/{}", case.to_url());
        let ok = |s: u16, what: &str| assert!((200..300).contains(&s), "{what}: {s}");
        ok(
            api.call(
                Method::PUT,
                &format!("{case_path}/coordinators/natalia"),
                Some(&admin),
                None,
            )
            .await
            .unwrap()
            .0,
            "assign",
        );
        api.join_case(&family, &revoked_member, &case)
            .await
            .unwrap();
        ok(
            api.call(
                Method::DELETE,
                &format!("{case_path}/members/petro"),
                Some(&coordinator),
                None,
            )
            .await
            .unwrap()
            .0,
            "revoke member",
        );
        ok(
            api.call(
                Method::DELETE,
                "/api/devices/old-phone",
                Some(&family),
                None,
            )
            .await
            .unwrap()
            .0,
            "revoke device",
        );

        let forge = Forge::new(&server, &family);
        let now = unix_now();
        let mut expired = forge.claims_for("olena", "phone");
        expired["exp"] = json!(now - 3600);
        let mut wrong_aud = forge.claims_for("olena", "phone");
        wrong_aud["aud"] = json!("another-service");
        let mut wrong_iss = forge.claims_for("olena", "phone");
        wrong_iss["iss"] = json!("https://evil.example");
        let tokens = vec![
            (P::Anonymous, None),
            (P::Malformed, Some("not.a.jwt".to_owned())),
            (P::Expired, Some(forge.sign(&expired))),
            (P::WrongAudience, Some(forge.sign(&wrong_aud))),
            (P::WrongIssuer, Some(forge.sign(&wrong_iss))),
            (P::Family, Some(family.clone())),
            (P::OtherFamily, Some(other_family)),
            (P::Coordinator, Some(coordinator)),
            (P::UnassignedCoordinator, Some(unassigned)),
            (P::Admin, Some(admin.clone())),
            (P::RevokedDevice, Some(old_phone)),
            (P::RevokedMember, Some(revoked_member)),
        ];
        World {
            server,
            api,
            case,
            coordination: created.coordination,
            other,
            tokens,
            family,
            admin,
            fresh: std::cell::Cell::new(0),
        }
    }

    fn token(&self, p: P) -> Option<&str> {
        self.tokens
            .iter()
            .find(|(q, _)| *q == p)
            .and_then(|(_, t)| t.as_deref())
    }

    fn peer(p: P) -> PeerId {
        let s = match p {
            P::OtherFamily => "user:ivan:phone",
            P::Coordinator => "user:natalia:laptop",
            P::UnassignedCoordinator => "user:oksana:laptop",
            P::Admin => "user:root:laptop",
            P::RevokedDevice => "user:olena:old-phone",
            P::RevokedMember => "user:petro:phone",
            _ => "user:olena:phone",
        };
        s.parse().unwrap()
    }

    fn next(&self, prefix: &str) -> String {
        let n = self.fresh.get() + 1;
        self.fresh.set(n);
        format!("{prefix}{n}")
    }

    /// Fills the placeholders of `call`, creating what they name.
    async fn concrete(&self, call: &str) -> String {
        let case_path = format!("/api/cases/{}", self.case.to_url());
        let mut path = call
            .replace("{case}", &self.case.to_url())
            .replace("{other}", &self.other.to_url());
        if path.contains("{inv}") {
            let (id, _) = self
                .api
                .invite(&self.family, &self.case, json!({}))
                .await
                .unwrap();
            path = path.replace("{inv}", &id);
        }
        if path.contains("{code}") {
            let throwaway = self.api.create_case(&self.family, &[]).await.unwrap().id;
            let (_, code) = self
                .api
                .invite(&self.family, &throwaway, json!({}))
                .await
                .unwrap();
            path = path.replace("{code}", &code);
        }
        if path.contains("{member}") {
            let user = self.next("member");
            let token = self.server.token(&user, "phone").await.unwrap();
            self.api
                .join_case(&self.family, &token, &self.case)
                .await
                .unwrap();
            path = path.replace("{member}", &user);
        }
        if path.contains("{stranger}") {
            path = path.replace("{stranger}", &self.next("stranger"));
        }
        if path.contains("{assigned}") {
            let user = self.next("coord");
            let (s, body) = self
                .api
                .call(
                    Method::PUT,
                    &format!("{case_path}/coordinators/{user}"),
                    Some(&self.admin),
                    None,
                )
                .await
                .unwrap();
            assert_eq!(s, 204, "{body}");
            path = path.replace("{assigned}", &user);
        }
        if path.contains("{device}") {
            path = path.replace("{device}", &self.next("device"));
        }
        if path.contains("{head}") {
            let heads = self
                .api
                .get_case(&self.family, &self.case)
                .await
                .unwrap()
                .heads;
            path = path.replace("{head}", &heads[0]);
        }
        path
    }
}

/// A `join` frame for `/sync/http`, length-prefixed.
fn join_body(peer: &PeerId) -> Vec<u8> {
    let frame = sync_core::protocol::encode(&Message::Join {
        sender_id: peer.clone(),
        supported_protocol_versions: vec!["1".into()],
        metadata: None,
    });
    let mut body = u32::try_from(frame.len()).unwrap().to_be_bytes().to_vec();
    body.extend(frame);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_for_every_principal() {
    let world = World::new().await;
    let mut failures = Vec::new();
    let mut cells = 0;
    for route in ROUTES {
        for p in ALL {
            let path = world.concrete(route.call).await;
            let method = match route.method {
                "NEST" => Method::GET,
                m => Method::from_bytes(m.as_bytes()).unwrap(),
            };
            let mut req = world.api.request(method, &path);
            if let Some(token) = world.token(p) {
                req = req.bearer_auth(token);
            }
            if route.path == "/sync/http" {
                req = req.body(join_body(&World::peer(p)));
            } else if let Some(body) = route.body {
                req = req.json(&body());
            }
            let got = req.send().await.unwrap().status().as_u16();
            cells += 1;
            let ok = match route.expect {
                Expect::Public(s) => got == s,
                Expect::Static => got != 401,
                Expect::Authed(valid) => match VALID.iter().position(|q| *q == p) {
                    Some(i) => got == valid[i],
                    None => got == 401,
                },
            };
            if !ok {
                failures.push(format!(
                    "{} {} as {p:?}: got {got}, expected {:?}",
                    route.method, route.path, route.expect
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // What the lists hold, not only their status.
    let family_cases = world.api.list_cases(&world.family).await.unwrap();
    assert!(family_cases.contains(&world.case));
    assert!(!family_cases.contains(&world.other));
    for p in [P::OtherFamily, P::UnassignedCoordinator, P::RevokedMember] {
        let cases = world.api.list_cases(world.token(p).unwrap()).await.unwrap();
        assert!(!cases.contains(&world.case), "{p:?} lists the case");
    }
    for p in [P::Coordinator, P::Admin] {
        let cases = world.api.list_cases(world.token(p).unwrap()).await.unwrap();
        assert!(cases.contains(&world.case), "{p:?} does not list the case");
    }
}

/// What the server answers to a document message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doc {
    /// A sync reply that carries the document's changes.
    Data,
    /// A sync reply with nothing in it: the quarantine's private fork.
    Nothing,
    /// `doc-unavailable`, the same as for a document that does not exist.
    Unavailable,
}

/// The first reply to a message about `doc`: sync or doc-unavailable.
async fn doc_reply(raw: &mut RawSocket, doc: DocumentId) -> Doc {
    let got = raw
        .recv_matching(PATIENCE, |r| match r {
            Received::Message(Message::Sync { document_id, .. })
            | Received::Message(Message::DocUnavailable { document_id, .. }) => *document_id == doc,
            _ => false,
        })
        .await
        .unwrap();
    match got {
        Received::Message(Message::Sync { data, .. }) => {
            let message = automerge::sync::Message::decode(&data).unwrap();
            if message.heads.is_empty() {
                Doc::Nothing
            } else {
                Doc::Data
            }
        }
        _ => Doc::Unavailable,
    }
}

fn empty_sync_data() -> Vec<u8> {
    let empty = automerge::Automerge::new();
    let mut state = automerge::sync::State::new();
    automerge::sync::SyncDoc::generate_sync_message(&empty, &mut state)
        .map(|m| m.encode())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_message_for_every_principal() {
    let world = World::new().await;
    let ws = world.server.ws_url().unwrap();
    let nonexistent = DocumentId::from_bytes([9; 16]);
    let mut failures = Vec::new();

    for p in ALL {
        let Some(token) = world.token(p) else {
            assert_eq!(upgrade_status(&ws, &WsAuth::None).await.unwrap(), 401);
            continue;
        };
        let auth = WsAuth::Bearer(token.to_owned());
        if !VALID.contains(&p) {
            // No protocol message is processed without a valid token.
            assert_eq!(upgrade_status(&ws, &auth).await.unwrap(), 401, "{p:?}");
            continue;
        }
        let me = World::peer(p);
        let mut raw = RawSocket::connect(&ws, &auth).await.unwrap();
        // `join` (and the server's `peer` reply).
        let server_peer = raw.join_ok(&me, PATIENCE).await.unwrap();

        // `request` for the case, the coordination document and nothing.
        let expect_case = match p {
            P::Family | P::Coordinator | P::Admin => Doc::Data,
            P::RevokedDevice | P::RevokedMember => Doc::Nothing,
            _ => Doc::Unavailable,
        };
        let expect_coordination = match p {
            P::Family | P::Coordinator | P::Admin => Doc::Data,
            _ => Doc::Unavailable,
        };
        for (what, doc, expect) in [
            ("request case", world.case, expect_case),
            (
                "request coordination",
                world.coordination,
                expect_coordination,
            ),
            (
                "request other family's case",
                world.other,
                match p {
                    P::OtherFamily | P::Admin => Doc::Data,
                    _ => Doc::Unavailable,
                },
            ),
            ("request nonexistent", nonexistent, Doc::Unavailable),
        ] {
            raw.request_doc(&me, &server_peer, doc).await.unwrap();
            let got = doc_reply(&mut raw, doc).await;
            if got != expect {
                failures.push(format!("{p:?} {what}: got {got:?}, expected {expect:?}"));
            }
        }

        // `sync` without a `request` first, on a second socket.
        let mut second = RawSocket::connect(&ws, &auth).await.unwrap();
        second.join_ok(&me, PATIENCE).await.unwrap();
        second
            .send(&Message::Sync {
                sender_id: me.clone(),
                target_id: server_peer.clone(),
                document_id: world.case,
                data: empty_sync_data(),
            })
            .await
            .unwrap();
        let got = doc_reply(&mut second, world.case).await;
        if got != expect_case {
            failures.push(format!(
                "{p:?} sync case: got {got:?}, expected {expect_case:?}"
            ));
        }

        // `ephemeral` and `remote-subscription-change`: no error, and the
        // socket stays usable (a request still gets its answer).
        raw.send(&Message::Ephemeral {
            sender_id: me.clone(),
            target_id: server_peer.clone(),
            count: 1,
            session_id: "matrix".into(),
            document_id: world.case,
            data: vec![0xa0],
        })
        .await
        .unwrap();
        raw.send(&Message::RemoteSubscriptionChange {
            sender_id: me.clone(),
            target_id: server_peer.clone(),
            add: vec![],
            remove: vec![],
        })
        .await
        .unwrap();
        raw.request_doc(&me, &server_peer, nonexistent)
            .await
            .unwrap();
        assert_eq!(
            doc_reply(&mut raw, nonexistent).await,
            Doc::Unavailable,
            "{p:?}"
        );

        // `leave`: a normal close.
        raw.send(&Message::Leave {
            sender_id: me.clone(),
        })
        .await
        .unwrap();
        let got = raw.recv_until_end(PATIENCE).await.unwrap();
        if !matches!(got.last(), Some(Received::Close(Some((1000, _))))) {
            failures.push(format!("{p:?} leave: {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A relative's change to the coordination document (coordinators only)
    // is not applied: its log gains nothing.
    let count = |doc: DocumentId| {
        let conn = rusqlite::Connection::open_with_flags(
            world.server.data_dir().join("casesync.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        conn.query_row(
            "SELECT count(*) FROM changes WHERE doc_id = ?1",
            [doc.as_bytes().as_slice()],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
    };
    let before = count(world.coordination);
    let mut family = casesync_tests::TestDevice::new(
        "olena",
        "phone",
        world.token(P::Family).unwrap().to_owned(),
    )
    .unwrap();
    family.connect(&world.server).await.unwrap();
    family.open(world.coordination);
    family
        .wait_until(PATIENCE, "the coordination document", |s| {
            s.doc(&world.coordination).is_some()
        })
        .await
        .unwrap();
    family
        .edit_raw(&world.coordination, |doc| {
            use automerge::transaction::Transactable;
            let mut tx = doc.transaction();
            tx.put(automerge::ROOT, "official_status", "closed by a relative")
                .unwrap();
            tx.commit();
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(world.coordination), before);
    assert!(family.unacknowledged(&world.coordination) > 0);
}

/// The route inventory: every `.route(...)` and `nest_service(...)` in the
/// router's source is listed in [`ROUTES`] with the same methods, and the
/// matrix lists nothing the router lacks.
#[test]
fn the_matrix_lists_every_route() {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../server/src/app.rs"))
            .unwrap();
    let mut in_router = BTreeSet::new();
    for (marker, nest) in [(".route(", false), (".nest_service(", true)] {
        for (at, _) in source.match_indices(marker) {
            let rest = &source[at + marker.len()..];
            let open = rest.find('"').unwrap();
            let close = open + 1 + rest[open + 1..].find('"').unwrap();
            let path = &rest[open + 1..close];
            if nest {
                in_router.insert(("NEST".to_owned(), path.to_owned()));
                continue;
            }
            // The method router: up to the `)` that closes `.route(`.
            let mut depth = 1;
            let mut end = 0;
            for (i, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let args = &rest[close..end];
            for method in ["get", "post", "put", "delete", "patch"] {
                let call = format!("{method}(");
                let found = args.match_indices(&call).any(|(i, _)| {
                    i == 0
                        || !args.as_bytes()[i - 1].is_ascii_alphanumeric()
                            && args.as_bytes()[i - 1] != b'_'
                });
                if found {
                    in_router.insert((method.to_uppercase(), path.to_owned()));
                }
            }
        }
    }
    let in_matrix: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    let missing: Vec<_> = in_router.difference(&in_matrix).collect();
    let stale: Vec<_> = in_matrix.difference(&in_router).collect();
    assert!(
        missing.is_empty(),
        "routes the authorization matrix does not cover: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "matrix rows for routes that do not exist: {stale:?}"
    );
    assert!(
        in_router.len() >= 20,
        "the parser found the routes: {in_router:?}"
    );
}
