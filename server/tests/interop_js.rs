//! Interop with the stock JS client: `@automerge/automerge-repo` and its
//! `WebSocketClientAdapter` (pinned in tests/js/package.json), run by Node
//! (tests/js/interop-client.mjs), against a real casesync server, beside a
//! device built from sync-core's engine.
//!
//! In the edit round trip the order of events is fixed by what each side
//! waits for, never by sleeping:
//! 1. A case is created through `POST /api/cases`.
//! 2. The engine device sets `military.rank` and waits until the server
//!    acknowledges it as durable.
//! 3. Node finds the case (so it must see the rank), sets `military.unit`
//!    as a plain JS string and appends to `disappearance.circumstances` in
//!    one change. With storage, it waits until the server storage's heads
//!    (remote-heads-changed) include that change. Then it waits for
//!    `military.call_sign`.
//! 4. The engine device waits until Node's change arrives through the
//!    server, appends to the circumstances and sets the call sign.
//! 5. Node sees the call sign, prints what it read and exits.
//!
//! Node needs `npm ci` in tests/js first (scripts/test.sh runs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{json, Value};
use support::{at, EngineDevice, TestServer, WAIT};
use sync_core::ids::DocumentId;
use sync_core::model::{DisappearanceField, Edit, Field, FieldValue, MilitaryField};

const USER: &str = "olena";
const FAMILY_NAME: &str = "Коваль";
const CIRCUMSTANCES: &str = "Останній дзвінок 12 травня з позиції.";
const RANK: &str = "старший сержант";
const UNIT: &str = "3-тя окрема штурмова бригада";
const JS_TEXT: &str = " Побратими бачили його біля переправи.";
const ENGINE_TEXT: &str = " Запит до Червоного Хреста надіслано.";
const CALL_SIGN: &str = "Сокіл";

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/js")
}

/// The stock packages must be installed; say how when they are not.
fn check_node_modules() {
    let dir = js_dir();
    for package in [
        "@automerge/automerge-repo",
        "@automerge/automerge-repo-network-websocket",
        "@automerge/automerge",
    ] {
        assert!(
            dir.join("node_modules").join(package).is_dir(),
            "{} is missing from {}: run `npm ci` in tests/js first \
             (scripts/test.sh does this before cargo test)",
            package,
            dir.join("node_modules").display(),
        );
    }
}

/// Starts tests/js/interop-client.mjs with `config`, authenticated as
/// `user` on `device`. Killed if the test ends first.
fn spawn_node(
    server: &TestServer,
    user: &str,
    device: &str,
    config: &Value,
) -> tokio::process::Child {
    check_node_modules();
    tokio::process::Command::new("node")
        .arg("interop-client.mjs")
        .arg(config.to_string())
        .env("CASESYNC_TOKEN", server.token(user, device))
        .current_dir(js_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cannot run `node`: is Node.js installed and on PATH?")
}

/// The JSON line the client printed, or a panic with its stderr.
fn parse_node_output(output: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the stock JS client failed ({}):\nstderr:\n{stderr}\nstdout:\n{stdout}",
        output.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line on the JS client's stdout:\n{stdout}\n{stderr}"));
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("JS client printed bad JSON ({e}): {line}"))
}

async fn node_result(child: tokio::process::Child) -> Value {
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the JS client finished in time")
        .expect("node output");
    parse_node_output(&out)
}

/// Nothing the stock clients sent was refused, and nothing failed.
async fn assert_clean(server: &TestServer) {
    for name in [
        "casesync_rejected_inputs_total",
        "casesync_auth_failures_total",
        "casesync_document_actor_panics_total",
    ] {
        assert_eq!(server.metric(name).await, 0.0, "{name}");
    }
}

/// The round trip above; `storage` gives the JS client a storage adapter
/// (so it is a non-ephemeral peer with a storageId that gossips remote
/// heads), otherwise it is an ephemeral peer.
async fn edit_round_trip(storage: bool) {
    check_node_modules();
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

    // 2. The engine device's first edit, durable before Node starts.
    let mut phone = EngineDevice::connect(&server, USER, "phone").await;
    phone.find(doc).await;
    assert_eq!(at(&phone.view(doc), "person.family_name"), FAMILY_NAME);
    phone.edit(
        doc,
        &Edit::SetField {
            field: Field::Military(MilitaryField::Rank),
            value: FieldValue::Str(RANK.into()),
        },
    );
    phone.wait_acknowledged(doc).await;

    // 3. The stock JS client.
    let node_peer = format!("user:{USER}:node1");
    let config = json!({
        "wsUrl": server.ws_base(),
        "peerId": node_peer,
        "storage": storage,
        "docUrl": url,
        "set": { "military.unit": UNIT },
        "append": { "disappearance.circumstances": JS_TEXT },
        "waitFor": { "military.call_sign": CALL_SIGN },
        "timeoutMs": WAIT.as_millis() as u64,
    });
    let child = spawn_node(&server, USER, "node1", &config);
    let mut node = tokio::spawn(node_result(child));

    // 4. The engine device sees Node's change through the server, then
    // makes its second edit. If Node dies first, say why.
    tokio::select! {
        () = phone.pump_until("the JS client's unit", |d| {
            d.doc(&doc)
                .is_some_and(|am| at(&sync_core::view::to_json(am, None), "military.unit") == UNIT)
        }) => {}
        js = &mut node => {
            panic!(
                "the JS client exited before the engine device saw its edit: {}",
                js.expect("join")
            );
        }
    }
    let seen = phone.view(doc);
    assert_eq!(
        at(&seen, "disappearance.circumstances"),
        &format!("{CIRCUMSTANCES}{JS_TEXT}"),
        "the JS client's unit and text are one change"
    );
    let end = at(&seen, "disappearance.circumstances")
        .as_str()
        .unwrap()
        .chars()
        .count();
    // Text first, then the call sign: the call sign's change depends on
    // the text's, so whoever sees the call sign has the text too.
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

    // 5. What Node read.
    let js = node.await.expect("join");
    let full_text = format!("{CIRCUMSTANCES}{JS_TEXT}{ENGINE_TEXT}");
    assert_eq!(js["peerId"], node_peer);
    assert!(
        js["serverPeer"]
            .as_str()
            .is_some_and(|p| p.starts_with("casesync-server-")),
        "{js}"
    );
    assert_eq!(js["serverStorageId"], server.storage_id());
    if storage {
        // Announced through remote-heads-changed, so durable on the server.
        assert!(
            js["savedHeads"].as_array().is_some_and(|h| !h.is_empty()),
            "{js}"
        );
    }
    assert_eq!(at(&js, "before.person.family_name"), FAMILY_NAME);
    assert_eq!(
        at(&js, "before.military.rank"),
        RANK,
        "found: the engine device's acknowledged edit"
    );
    assert_eq!(at(&js, "before.disappearance.circumstances"), CIRCUMSTANCES);
    assert_eq!(at(&js, "after.military.unit"), UNIT);
    assert_eq!(at(&js, "after.military.rank"), RANK);
    assert_eq!(
        at(&js, "after.military.call_sign"),
        CALL_SIGN,
        "the engine device's later edit"
    );
    assert_eq!(at(&js, "after.disappearance.circumstances"), &full_text);

    // The server has both devices' edits, merged, with nothing in conflict,
    // and the JS client's document is the server's.
    let api = server.get_case(&web, &url).await;
    assert_eq!(at(&api, "case.military.unit"), UNIT);
    assert_eq!(at(&api, "case.military.rank"), RANK);
    assert_eq!(at(&api, "case.military.call_sign"), CALL_SIGN);
    assert_eq!(at(&api, "case.person.family_name"), FAMILY_NAME);
    assert_eq!(at(&api, "case.disappearance.circumstances"), &full_text);
    assert_eq!(api["conflicts"], json!([]), "{api}");
    assert_eq!(
        api["case"], js["after"],
        "the JS client's document is the server's"
    );
    assert_eq!(api["case"], phone.view(doc));
    assert_clean(&server).await;
    phone.close().await;

    // And it was stored, not only held in memory.
    let server = server.restart().await;
    let again = server.get_case(&web, &url).await;
    assert_eq!(again["case"], api["case"]);
    assert_eq!(again["heads"], api["heads"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_js_client_with_storage_and_engine_device_edit_a_case() {
    edit_round_trip(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_stock_js_client_and_engine_device_edit_a_case() {
    edit_round_trip(false).await;
}

/// Another family's stock client asks for Olena's case, its coordination
/// document and a document that does not exist: each is "unavailable",
/// with the same words, and its own case still loads afterwards on the same
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_js_client_cannot_tell_another_familys_case_from_none() {
    check_node_modules();
    let server = TestServer::start().await;
    let olena = server.token(USER, "web");
    let (case, coordination) = server
        .create_case_urls(&olena, json!({ "person.family_name": FAMILY_NAME }))
        .await;
    let ivan = server.token("ivan", "web");
    let own = server
        .create_case(&ivan, json!({ "person.family_name": "Шевченко" }))
        .await;
    let nobody = DocumentId::from_bytes([0x5a; 16]).to_url();

    let config = json!({
        "wsUrl": server.ws_base(),
        "peerId": "user:ivan:node1",
        "unavailable": [case, coordination, nobody],
        "docUrl": own,
        "timeoutMs": WAIT.as_millis() as u64,
    });
    let js = node_result(spawn_node(&server, "ivan", "node1", &config)).await;

    for url in [&case, &coordination, &nobody] {
        assert_eq!(
            js["unavailable"][url.as_str()],
            format!("Document {url} is unavailable"),
            "{js}"
        );
    }
    assert_eq!(at(&js, "before.person.family_name"), "Шевченко");
    assert_eq!(at(&js, "before.created_by"), "ivan");
    // One connection: the refusals did not close it.
    assert_eq!(server.metric("casesync_connections_total").await, 1.0);
    assert_clean(&server).await;

    // Olena's case is untouched and still hers alone.
    let api = server.get_case(&olena, &case).await;
    assert_eq!(at(&api, "case.person.family_name"), FAMILY_NAME);
    let (status, _) = server
        .http("GET", &format!("/api/cases/{case}"), &ivan, None)
        .await;
    assert_eq!(status, 404);
}

/// Ivan's stock client announces Olena's peer id: the server closes the
/// socket at the handshake, so asking for Olena's case gets nothing (the
/// stock client gives up with "unavailable" once its adapter stops
/// waiting for a peer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_js_client_announcing_another_peer_id_gets_nothing() {
    check_node_modules();
    let server = TestServer::start().await;
    let olena = server.token(USER, "web");
    let case = server
        .create_case(&olena, json!({ "person.family_name": FAMILY_NAME }))
        .await;

    let config = json!({
        "wsUrl": server.ws_base(),
        "peerId": format!("user:{USER}:node1"),
        "waitForServer": false,
        "unavailable": [case],
        "timeoutMs": WAIT.as_millis() as u64,
    });
    let js = node_result(spawn_node(&server, "ivan", "node1", &config)).await;
    assert_eq!(
        js["unavailable"][case.as_str()],
        format!("Document {case} is unavailable"),
        "{js}"
    );
    // The refusal is counted as a refused input, not a bad token.
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.metric("casesync_rejected_inputs_total").await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never refused the handshake"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(server.metric("casesync_auth_failures_total").await, 0.0);
}

/// A stock JS client that has nothing opens a case right after a restart,
/// before anything loaded it: the server answers from the stored snapshot
/// and change log (`engine::cold`), and the client, which runs automerge's
/// own sync, gets the whole case; its edit is then stored durably.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_js_client_opens_a_case_right_after_a_restart() {
    check_node_modules();
    let server = TestServer::start().await;
    let web = server.token(USER, "web");
    let url = server
        .create_case(&web, json!({ "person.family_name": FAMILY_NAME }))
        .await;
    let doc = DocumentId::parse_url_or_id(&url).unwrap();
    let mut phone = EngineDevice::connect(&server, USER, "phone").await;
    phone.find(doc).await;
    // Past the actor's snapshot (every 500 changes); the shutdown
    // before the restart snapshots the rest.
    for n in 0..520 {
        phone.edit(
            doc,
            &Edit::SpliceText {
                field: Field::Disappearance(DisappearanceField::Circumstances),
                pos: 0,
                delete: 0,
                insert: format!("{n} "),
            },
        );
        if n % 100 == 99 || n >= 510 {
            phone.wait_acknowledged(doc).await;
        }
    }
    phone.wait_acknowledged(doc).await;
    phone.close().await;
    let before = server.get_case(&web, &url).await;

    let server = server.restart().await;
    let node_peer = format!("user:{USER}:node-cold");
    let config = json!({
        "wsUrl": server.ws_base(),
        "peerId": node_peer,
        "storage": true,
        "docUrl": url,
        "set": { "military.unit": UNIT },
        "timeoutMs": WAIT.as_millis() as u64,
    });
    let js = node_result(spawn_node(&server, USER, "node-cold", &config)).await;
    assert_eq!(js["before"], before["case"], "the whole case, as stored");
    assert_eq!(
        server.metric("casesync_cold_replies_total").await,
        1.0,
        "answered from storage"
    );
    assert!(
        js["savedHeads"].as_array().is_some_and(|h| !h.is_empty()),
        "the server announced durable heads with the client's change: {js}"
    );
    let after = server.get_case(&web, &url).await;
    assert_eq!(at(&after, "case.military.unit"), UNIT);
    assert_clean(&server).await;
}
