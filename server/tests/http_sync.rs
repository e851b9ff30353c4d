//! The HTTP fallback (`POST /sync/http`) against a real server on a real
//! socket: two relatives whose networks break WebSockets still converge,
//! with the same authentication and authorization as the socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use automerge::{ActorId, Automerge};
use casesync_server::auth::{mint_token, unix_now, DevKeys, Role};
use casesync_server::http_sync::{decode_frames, encode_frames};
use casesync_server::{AppState, Config};
use sync_core::engine::{Device, DeviceEvent};
use sync_core::guard::Limits;
use sync_core::ids::{DeviceId, DocumentId, StorageId, UserId};
use sync_core::model::{self, DisappearanceField, Edit, Field, FieldValue, MilitaryField};

struct Server {
    base: String,
    keys: DevKeys,
    _dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = Config::new(addr, dir.path().to_owned());
    config.app_dir = None;
    let state = AppState::open(config).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(casesync_server::app::serve(listener, state, async move {
        let _ = rx.await;
    }));
    let keys = DevKeys::load_or_create(dir.path()).unwrap();
    Server {
        base: format!("http://{addr}"),
        keys,
        _dir: dir,
        shutdown: Some(tx),
    }
}

impl Server {
    fn token(&self, user: &str, device: &str) -> String {
        mint_token(
            &self.keys,
            &UserId::new(user).unwrap(),
            &DeviceId::new(device).unwrap(),
            Role::Relative,
            Duration::from_secs(600),
            unix_now(),
        )
        .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A device that can only do HTTP.
struct HttpDevice {
    engine: Device,
    token: String,
    events: Vec<DeviceEvent>,
}

impl HttpDevice {
    fn new(token: String, user: &str, device: &str) -> Self {
        let peer = sync_core::ids::PeerId::for_device(
            &UserId::new(user).unwrap(),
            &DeviceId::new(device).unwrap(),
        );
        let mut engine = Device::new(
            peer,
            Some(StorageId::new(format!("{device}-storage")).unwrap()),
            Limits::default(),
        );
        engine.connect();
        Self {
            engine,
            token,
            events: Vec::new(),
        }
    }

    /// One request: everything pending goes up, the replies come down.
    async fn exchange(&mut self, http: &reqwest::Client, base: &str, wait_ms: u64) -> usize {
        let mut up = Vec::new();
        while let Some(f) = self.engine.poll_transmit() {
            up.push(f);
        }
        let resp = http
            .post(format!("{base}/sync/http?wait={wait_ms}"))
            .bearer_auth(&self.token)
            .body(encode_frames(&up))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.bytes().await.unwrap();
        let frames = decode_frames(&body, 1 << 24).unwrap();
        let n = frames.len();
        for f in frames {
            self.engine.handle_frame(f).unwrap();
        }
        while let Some(e) = self.engine.poll_event() {
            self.events.push(e);
        }
        while self.engine.poll_store().is_some() {}
        n
    }

    /// Exchanges until `done` holds, failing after a bound.
    async fn until(
        &mut self,
        http: &reqwest::Client,
        base: &str,
        mut done: impl FnMut(&Device) -> bool,
    ) {
        for _ in 0..60 {
            self.exchange(http, base, 200).await;
            if done(&self.engine) {
                return;
            }
        }
        panic!("condition not reached over HTTP");
    }
}

fn set(doc: &mut Automerge, field: Field, value: &str, who: &str) {
    model::apply_edit(
        doc,
        &Edit::SetField {
            field,
            value: FieldValue::Str(value.into()),
        },
        who,
        1_700_000_000_000,
    )
    .unwrap();
}

#[tokio::test]
async fn two_relatives_converge_over_the_http_fallback() {
    let server = start().await;
    let http = reqwest::Client::new();
    let olena_token = server.token("olena", "phone-1");

    // Step 1: Olena creates the case through the API.
    let created: serde_json::Value = http
        .post(format!("{}/api/cases", server.base))
        .bearer_auth(&olena_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let case = DocumentId::parse_url_or_id(created["id"].as_str().unwrap()).unwrap();

    // Step 2: her phone, behind a proxy that breaks WebSockets, fetches it
    // over HTTP.
    let mut phone = HttpDevice::new(olena_token.clone(), "olena", "phone-1");
    phone.engine.open(
        case,
        Automerge::new().with_actor(ActorId::from([1u8; 16])),
        None,
    );
    phone
        .until(&http, &server.base, |d| {
            d.doc(&case).is_some_and(|doc| !doc.get_heads().is_empty())
        })
        .await;

    // Step 3: she records the unit; the server reports it durable.
    phone
        .engine
        .edit(&case, |d| {
            set(
                d,
                Field::Military(MilitaryField::Unit),
                "93rd brigade",
                "olena",
            )
        })
        .unwrap();
    assert_eq!(phone.engine.unacknowledged(&case), 1);
    phone
        .until(&http, &server.base, |d| d.unacknowledged(&case) == 0)
        .await;

    // Step 4: her second device (a laptop, same user) also on HTTP, sees it
    // and writes the circumstances.
    let mut laptop = HttpDevice::new(server.token("olena", "laptop"), "olena", "laptop");
    laptop.engine.open(
        case,
        Automerge::new().with_actor(ActorId::from([2u8; 16])),
        None,
    );
    laptop
        .until(&http, &server.base, |d| {
            d.doc(&case).is_some_and(|doc| {
                model::read_case(doc)
                    .map(|c| c.military.unit.value().map(String::as_str) == Some("93rd brigade"))
                    .unwrap_or(false)
            })
        })
        .await;
    laptop
        .engine
        .edit(&case, |d| {
            model::apply_edit(
                d,
                &Edit::SpliceText {
                    field: Field::Disappearance(DisappearanceField::Circumstances),
                    pos: 0,
                    delete: 0,
                    insert: "last call near Bakhmut".into(),
                },
                "olena",
                1_700_000_000_000,
            )
            .unwrap();
        })
        .unwrap();
    laptop
        .until(&http, &server.base, |d| d.unacknowledged(&case) == 0)
        .await;

    // Step 5: the phone long-polls and receives the laptop's edit.
    phone
        .until(&http, &server.base, |d| {
            d.doc(&case).is_some_and(|doc| {
                model::read_case(doc)
                    .map(|c| {
                        c.disappearance
                            .circumstances
                            .is_some_and(|t| t.contains("Bakhmut"))
                    })
                    .unwrap_or(false)
            })
        })
        .await;
    assert_eq!(
        phone.engine.doc(&case).unwrap().get_heads(),
        laptop.engine.doc(&case).unwrap().get_heads()
    );

    // Step 6: the server has both edits.
    let got: serde_json::Value = http
        .get(format!("{}/api/cases/{}", server.base, case))
        .bearer_auth(&olena_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["case"]["military"]["unit"], "93rd brigade");
    assert_eq!(
        got["case"]["disappearance"]["circumstances"],
        "last call near Bakhmut"
    );
}

#[tokio::test]
async fn the_http_fallback_has_the_sockets_auth_and_authorization() {
    let server = start().await;
    let http = reqwest::Client::new();
    let olena = server.token("olena", "phone-1");
    let created: serde_json::Value = http
        .post(format!("{}/api/cases", server.base))
        .bearer_auth(&olena)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let case = DocumentId::parse_url_or_id(created["id"].as_str().unwrap()).unwrap();

    // No token: 401, nothing processed.
    let resp = http
        .post(format!("{}/sync/http", server.base))
        .body(Vec::<u8>::new())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Broken framing: a clear 400.
    let resp = http
        .post(format!("{}/sync/http", server.base))
        .bearer_auth(&olena)
        .body(vec![0u8, 0, 0, 9, 1])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");

    // Another family's member asks for the case: doc-unavailable, exactly
    // as for a case that does not exist.
    let mut mallory = HttpDevice::new(server.token("mallory", "m1"), "mallory", "m1");
    mallory.engine.open(
        case,
        Automerge::new().with_actor(ActorId::from([3u8; 16])),
        None,
    );
    let missing = DocumentId::from_bytes([7u8; 16]);
    mallory.engine.open(
        missing,
        Automerge::new().with_actor(ActorId::from([3u8; 16])),
        None,
    );
    for _ in 0..5 {
        mallory.exchange(&http, &server.base, 100).await;
    }
    let unavailable: Vec<DocumentId> = mallory
        .events
        .iter()
        .filter_map(|e| match e {
            DeviceEvent::DocUnavailable(d) => Some(*d),
            _ => None,
        })
        .collect();
    assert!(unavailable.contains(&case), "{:?}", mallory.events);
    assert!(unavailable.contains(&missing));
    assert!(mallory
        .engine
        .doc(&case)
        .is_some_and(|d| d.get_heads().is_empty()));
}
