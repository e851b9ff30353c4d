//! Interop with samod, the Rust automerge-repo: a samod `Repo` dials a real
//! casesync server over WebSocket (token in `?token=`, as a client that can
//! only set the URL does), finds a case created through the HTTP API, edits
//! it with plain automerge calls, and reads the edits of a device built
//! from sync-core's engine.
//!
//! The order of events is fixed by what each side waits for, never by
//! sleeping:
//! 1. A case is created through `POST /api/cases`.
//! 2. The engine device sets `military.rank` and waits until the server
//!    acknowledges it as durable.
//! 3. samod is refused another family's case and a document nobody has
//!    (both "not found", on the same connection), then finds the case (so
//!    it must see the rank), sets `military.unit` and appends to
//!    `disappearance.circumstances` in one change.
//! 4. The engine device waits until samod's change arrives through the
//!    server, appends to the circumstances and sets the call sign.
//! 5. samod waits until it sees the call sign.
//!
//! samod's own `tungstenite` feature forces native-tls; the dialer here is
//! plain `ws://` on tokio-tungstenite, so no TLS library is built.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::sync::Arc;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, ObjId, ObjType, ReadDoc, Value, ROOT};
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use samod::{BackoffConfig, DialError, Dialer, PeerId, Repo, Transport};
use serde_json::json;
use support::{at, EngineDevice, TestServer, WAIT};
use sync_core::ids::DocumentId;
use sync_core::model::{DisappearanceField, Edit, Field, FieldValue, MilitaryField};
use tokio_tungstenite::tungstenite::{self, Message};

const USER: &str = "olena";
const FAMILY_NAME: &str = "Коваль";
const CIRCUMSTANCES: &str = "Останній дзвінок 12 травня з позиції.";
const RANK: &str = "старший сержант";
const UNIT: &str = "47-ма окрема механізована бригада";
const SAMOD_TEXT: &str = " Побратими бачили його біля переправи.";
const ENGINE_TEXT: &str = " Запит до Червоного Хреста надіслано.";
const CALL_SIGN: &str = "Сокіл";

/// Dials `ws://…/sync?token=…` with tokio-tungstenite. `url()` (which samod
/// logs) leaves the token out.
struct WsDialer {
    base: url::Url,
    with_token: String,
}

impl Dialer for WsDialer {
    type Error = Infallible;

    fn url(&self) -> url::Url {
        self.base.clone()
    }

    fn connect(&self) -> BoxFuture<'static, Result<Transport, DialError<Infallible>>> {
        let url = self.with_token.clone();
        Box::pin(async move {
            let (ws, _) = tokio_tungstenite::connect_async(url)
                .await
                .map_err(DialError::transient)?;
            let (sink, stream) = ws.split();
            // One binary frame per protocol message; control frames are
            // tungstenite's business.
            let stream = Box::pin(stream.filter_map(|msg| async move {
                match msg {
                    Ok(Message::Binary(bytes)) => Some(Ok(bytes.to_vec())),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            }));
            let sink = Box::pin(sink.with(|bytes: Vec<u8>| async move {
                Ok::<_, tungstenite::Error>(Message::Binary(bytes.into()))
            }));
            Ok(Transport::new(stream, sink))
        })
    }
}

fn map_at(doc: &Automerge, parent: &ObjId, key: &str, ty: ObjType) -> ObjId {
    match doc.get(parent, key).expect("get") {
        Some((Value::Object(t), id)) if t == ty => id,
        other => panic!("{key}: expected a {ty:?}, found {other:?}"),
    }
}

/// The call sign as samod's replica has it, if any.
fn call_sign(doc: &Automerge) -> Option<String> {
    let military = map_at(doc, &ROOT, "military", ObjType::Map);
    match doc.get(&military, "call_sign").expect("get") {
        Some((Value::Scalar(s), _)) => s.as_str().map(str::to_owned),
        Some((Value::Object(ObjType::Text), id)) => doc.text(&id).ok(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samod_and_engine_device_sync_a_case() {
    let server = TestServer::start().await;
    let web = server.token(USER, "web");
    let url = server
        .create_case(
            &web,
            json!({
                "person.family_name": FAMILY_NAME,
                "disappearance.circumstances": CIRCUMSTANCES,
            }),
        )
        .await;
    let doc = DocumentId::parse_url_or_id(&url).unwrap();
    let ivans_case = DocumentId::parse_url_or_id(
        &server
            .create_case(&server.token("ivan", "web"), json!({}))
            .await,
    )
    .unwrap();
    let nobody = DocumentId::from_bytes([0x5a; 16]);

    // 2. The engine device's first edit, durable before samod connects.
    let mut phone = EngineDevice::connect(&server, USER, "phone").await;
    phone.find(doc).await;
    phone.edit(
        doc,
        &Edit::SetField {
            field: Field::Military(MilitaryField::Rank),
            value: FieldValue::Str(RANK.into()),
        },
    );
    phone.wait_acknowledged(doc).await;

    // 3. samod connects, finds the case and edits it.
    let samod_peer = format!("user:{USER}:samod1");
    let repo = Repo::build_tokio()
        .with_peer_id(PeerId::from(samod_peer.as_str()))
        .load()
        .await;
    let dialer = WsDialer {
        base: url::Url::parse(&server.ws_base()).unwrap(),
        with_token: server.ws_url(&server.token(USER, "samod1")),
    };
    let dialing = repo
        .dial(BackoffConfig::default(), Arc::new(dialer))
        .expect("samod dial");
    let server_peer = tokio::time::timeout(WAIT, dialing.established())
        .await
        .expect("samod connected in time")
        .expect("samod connected");
    assert!(
        server_peer
            .peer_id
            .to_string()
            .starts_with("casesync-server-"),
        "{:?}",
        server_peer.peer_id
    );
    // (samod 0.16's `PeerInfo::storage_id` here is samod's own storage id,
    // not the server's, so there is nothing to check it against.)

    // Another family's case and a document nobody has are both "not
    // found", and the connection stays up for the next find.
    for other in [&ivans_case, &nobody] {
        let id: samod::DocumentId = other.to_string().parse().expect("samod document id");
        let found = tokio::time::timeout(WAIT, repo.find(id))
            .await
            .expect("samod's find answered in time")
            .expect("samod repo running");
        assert!(found.is_none(), "samod found {other}");
    }

    let samod_id: samod::DocumentId = doc.to_string().parse().expect("samod document id");
    let handle = tokio::time::timeout(WAIT, repo.find(samod_id))
        .await
        .expect("samod found the case in time")
        .expect("samod repo running")
        .expect("the server has the case for samod");

    let before = handle.with_document(|am| sync_core::view::to_json(am, None));
    assert_eq!(at(&before, "person.family_name"), FAMILY_NAME);
    assert_eq!(
        at(&before, "military.rank"),
        RANK,
        "found: the engine device's acknowledged edit"
    );
    assert_eq!(at(&before, "disappearance.circumstances"), CIRCUMSTANCES);

    // Subscribe before the other device can answer, so no change is missed.
    let mut changes = handle.changes();
    let now_s = casesync_server::auth::unix_now();
    handle.with_document(|am| {
        am.transact_with::<_, _, automerge::AutomergeError, _>(
            |_| {
                CommitOptions::default()
                    .with_message("samod: set military.unit, edit disappearance.circumstances")
                    .with_time(now_s)
            },
            |tx| {
                let military = match tx.get(ROOT, "military")? {
                    Some((Value::Object(ObjType::Map), id)) => id,
                    other => panic!("military: {other:?}"),
                };
                tx.put(&military, "unit", UNIT)?;
                let disappearance = match tx.get(ROOT, "disappearance")? {
                    Some((Value::Object(ObjType::Map), id)) => id,
                    other => panic!("disappearance: {other:?}"),
                };
                let circumstances = match tx.get(&disappearance, "circumstances")? {
                    Some((Value::Object(ObjType::Text), id)) => id,
                    other => panic!("circumstances: {other:?}"),
                };
                let end = tx.length(&circumstances);
                tx.splice_text(&circumstances, end, 0, SAMOD_TEXT)
            },
        )
        .expect("samod edit");
    });

    // 4. The engine device sees samod's change, then makes its own.
    phone
        .pump_until("samod's unit", |d| {
            d.doc(&doc)
                .is_some_and(|am| at(&sync_core::view::to_json(am, None), "military.unit") == UNIT)
        })
        .await;
    let seen = phone.view(doc);
    assert_eq!(
        at(&seen, "disappearance.circumstances"),
        &format!("{CIRCUMSTANCES}{SAMOD_TEXT}"),
        "samod's unit and text are one change"
    );
    let end = at(&seen, "disappearance.circumstances")
        .as_str()
        .unwrap()
        .chars()
        .count();
    // Text first: the call sign's change depends on it.
    phone.edit(
        doc,
        &Edit::SpliceText {
            field: Field::Disappearance(DisappearanceField::Circumstances),
            pos: end,
            delete: 0,
            insert: ENGINE_TEXT.into(),
        },
    );
    phone.edit(
        doc,
        &Edit::SetField {
            field: Field::Military(MilitaryField::CallSign),
            value: FieldValue::Str(CALL_SIGN.into()),
        },
    );
    phone.wait_acknowledged(doc).await;

    // 5. samod reads the engine device's edit.
    let deadline = tokio::time::Instant::now() + WAIT;
    while handle.with_document(|am| call_sign(am)).as_deref() != Some(CALL_SIGN) {
        tokio::time::timeout_at(deadline, changes.next())
            .await
            .expect("samod saw the engine device's call sign in time")
            .expect("samod's change stream is open");
    }
    let after = handle.with_document(|am| sync_core::view::to_json(am, None));
    let full_text = format!("{CIRCUMSTANCES}{SAMOD_TEXT}{ENGINE_TEXT}");
    assert_eq!(at(&after, "military.unit"), UNIT);
    assert_eq!(at(&after, "military.rank"), RANK);
    assert_eq!(at(&after, "military.call_sign"), CALL_SIGN);
    assert_eq!(at(&after, "disappearance.circumstances"), &full_text);

    // The server has both devices' edits, merged, with nothing in conflict,
    // and samod's replica is the server's.
    let api = server.get_case(&web, &url).await;
    assert_eq!(at(&api, "case.military.unit"), UNIT);
    assert_eq!(at(&api, "case.military.rank"), RANK);
    assert_eq!(at(&api, "case.military.call_sign"), CALL_SIGN);
    assert_eq!(at(&api, "case.person.family_name"), FAMILY_NAME);
    assert_eq!(at(&api, "case.disappearance.circumstances"), &full_text);
    assert_eq!(api["conflicts"], json!([]), "{api}");
    assert_eq!(api["case"], after, "samod's replica is the server's");
    let samod_heads: Vec<String> =
        handle.with_document(|am| am.get_heads().iter().map(ToString::to_string).collect());
    assert_eq!(api["heads"], json!(samod_heads));
    // Nothing samod sent was refused, and it used one connection.
    for name in [
        "casesync_rejected_inputs_total",
        "casesync_auth_failures_total",
        "casesync_document_actor_panics_total",
    ] {
        assert_eq!(server.metric(name).await, 0.0, "{name}");
    }
    assert_eq!(server.metric("casesync_connections_total").await, 2.0);

    phone.close().await;
    dialing.close();
    tokio::time::timeout(WAIT, repo.stop())
        .await
        .expect("samod stopped in time");

    // And it was stored, not only held in memory.
    let server = server.restart().await;
    let again = server.get_case(&web, &url).await;
    assert_eq!(again["case"], api["case"]);
    assert_eq!(again["heads"], api["heads"]);
}
