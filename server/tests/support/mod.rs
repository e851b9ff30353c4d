//! Shared pieces of the interop tests: a real server on a real socket, a
//! tiny HTTP client for the case API, and a device built from sync-core's
//! engine (`Device`) over tokio-tungstenite, to stand beside the stock
//! clients under test.
//!
//! Every wait here is bounded by [`WAIT`] and ends in a panic that says what
//! was awaited; nothing asserts on elapsed time.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use automerge::Automerge;
use casesync_server::app::{serve, AppState};
use casesync_server::auth::{mint_token, unix_now, DevKeys, Role};
use casesync_server::Config;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use sync_core::engine::{Device, DeviceEvent};
use sync_core::guard::Limits;
use sync_core::ids::{DeviceId, DocumentId, PeerId, UserId};
use sync_core::model::{self, Edit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single wait in these tests may take before it fails.
/// Generous: it only bounds a hang, and a passing run is far below it.
pub const WAIT: Duration = Duration::from_secs(20);

/// A casesync server running in this process on 127.0.0.1, port 0.
pub struct TestServer {
    pub addr: SocketAddr,
    data_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        let data_dir = tempfile::tempdir().expect("temp data dir");
        Self::start_in(data_dir).await
    }

    /// A server whose storage backend is `wrap`ped (fault injection).
    pub async fn start_wrapped(
        wrap: impl FnOnce(
                std::sync::Arc<dyn casesync_server::store::Storage>,
            ) -> std::sync::Arc<dyn casesync_server::store::Storage>
            + Send
            + 'static,
    ) -> Self {
        let data_dir = tempfile::tempdir().expect("temp data dir");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = AppState::open_wrapped(Config::new(addr, data_dir.path().to_owned()), wrap)
            .await
            .expect("open server state");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, state, async move {
                let _ = stopped.await;
            })
            .await
            .expect("server ran and shut down cleanly");
        });
        Self {
            addr,
            data_dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A server whose storage is wrapped in a [`FaultyStorage`], and the
    /// wrapper, to fail or slow its writes.
    ///
    /// [`FaultyStorage`]: casesync_server::store::faults::FaultyStorage
    pub async fn start_faulty() -> (
        Self,
        std::sync::Arc<casesync_server::store::faults::FaultyStorage>,
    ) {
        use casesync_server::store::faults::FaultyStorage;
        use casesync_server::store::Storage;
        use std::sync::{Arc, OnceLock};
        let faulty: Arc<OnceLock<Arc<FaultyStorage>>> = Arc::default();
        let slot = faulty.clone();
        let server = Self::start_wrapped(move |inner| {
            let wrapped = Arc::new(FaultyStorage::new(inner));
            let _ = slot.set(wrapped.clone());
            wrapped as Arc<dyn Storage>
        })
        .await;
        let faulty = faulty.get().expect("the storage was wrapped").clone();
        (server, faulty)
    }

    /// A server whose configuration `adjust` changed (limits, timeouts).
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().expect("temp data dir");
        Self::start_configured(data_dir, adjust).await
    }

    /// A server on an existing data directory (a restored backup).
    pub async fn start_in_dir(data_dir: tempfile::TempDir) -> Self {
        Self::start_in(data_dir).await
    }

    async fn start_in(data_dir: tempfile::TempDir) -> Self {
        Self::start_configured(data_dir, |_| {}).await
    }

    async fn start_configured(
        data_dir: tempfile::TempDir,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let mut config = Config::new(addr, data_dir.path().to_owned());
        adjust(&mut config);
        let state = AppState::open(config).await.expect("open server state");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, state, async move {
                let _ = stopped.await;
            })
            .await
            .expect("server ran and shut down cleanly");
        });
        Self {
            addr,
            data_dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Shuts the server down gracefully (connections closed, store
    /// flushed) and starts a new one on the same data directory, on a new
    /// port. What the new server shows is what was durably stored.
    pub async fn restart(mut self) -> Self {
        self.shutdown().await;
        let data_dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir().expect("tmp"));
        Self::start_in(data_dir).await
    }

    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("server shut down in time")
                .expect("server task did not panic");
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.path().to_owned()
    }

    /// A development token for `user` on `device`, signed with this
    /// server's key (the same one `casesync token` prints).
    pub fn token(&self, user: &str, device: &str) -> String {
        let keys = DevKeys::load_or_create(self.data_dir.path()).expect("dev keys");
        mint_token(
            &keys,
            &UserId::new(user).expect("user id"),
            &DeviceId::new(device).expect("device id"),
            Role::Relative,
            Duration::from_secs(3600),
            unix_now(),
        )
        .expect("mint token")
    }

    /// `ws://…/sync` with no token (safe to log).
    pub fn ws_base(&self) -> String {
        format!("ws://{}/sync", self.addr)
    }

    /// `ws://…/sync?token=…`: how stock clients, which can only set the
    /// URL, authenticate.
    pub fn ws_url(&self, token: &str) -> String {
        format!("{}?token={token}", self.ws_base())
    }

    /// One HTTP/1.1 request over a fresh connection; the status and the
    /// JSON body (`Null` when the body is empty).
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let (status, body) = self.http_raw(method, path, token, body).await;
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!(
                    "{method} {path}: status {status}, body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&body)
                )
            })
        };
        (status, json)
    }

    /// One HTTP/1.1 request over a fresh connection; the status and the
    /// body's bytes. An empty `token` sends no `Authorization`.
    pub async fn http_raw(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (u16, Vec<u8>) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = if token.is_empty() {
            String::new()
        } else {
            format!("Authorization: Bearer {token}\r\n")
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut raw = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
            .await
            .expect("HTTP response in time")
            .expect("read response");
        parse_response(&raw)
    }

    /// `POST /api/cases` with initial `values`; the case's `automerge:` URL.
    pub async fn create_case(&self, token: &str, values: Value) -> String {
        self.create_case_urls(token, values).await.0
    }

    /// `POST /api/cases` with no initial values; the new case's id.
    pub async fn new_case(&self, token: &str) -> DocumentId {
        DocumentId::parse_url_or_id(&self.create_case(token, serde_json::json!({})).await)
            .expect("case id")
    }

    /// `POST /api/cases` with initial `values`; the `automerge:` URLs of the
    /// case document and of its coordination document.
    pub async fn create_case_urls(&self, token: &str, values: Value) -> (String, String) {
        let (status, body) = self
            .http(
                "POST",
                "/api/cases",
                token,
                Some(&serde_json::json!({ "values": values })),
            )
            .await;
        assert_eq!(status, 201, "POST /api/cases: {body}");
        let url = |key: &str| {
            body[key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key} in {body}"))
                .to_owned()
        };
        (url("id"), url("coordination"))
    }

    /// One value of `GET /metrics` (Prometheus text), e.g.
    /// `casesync_rejected_inputs_total`.
    pub async fn metric(&self, name: &str) -> f64 {
        let (status, body) = self.http_raw("GET", "/metrics", "", None).await;
        assert_eq!(status, 200, "GET /metrics");
        let text = String::from_utf8(body).expect("UTF-8 metrics");
        text.lines()
            .find_map(|l| {
                let (n, v) = l.split_once(' ')?;
                (n == name).then(|| v.trim().parse().expect("metric value"))
            })
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }

    /// The storage id the server announces in its `peer` message.
    pub fn storage_id(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("storage-id"))
            .expect("storage-id in the data dir")
            .trim()
            .to_owned()
    }

    /// `GET /api/cases/{id}`: `{"case", "heads", "conflicts"}`.
    pub async fn get_case(&self, token: &str, url: &str) -> Value {
        let (status, body) = self
            .http("GET", &format!("/api/cases/{url}"), token, None)
            .await;
        assert_eq!(status, 200, "GET /api/cases/{url}: {body}");
        body
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn parse_response(raw: &[u8]) -> (u16, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).expect("ASCII headers");
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_hex = std::str::from_utf8(&raw[..eol]).expect("chunk size");
        let size = usize::from_str_radix(size_hex.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex chunk size");
        raw = &raw[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Reads `a.b.c` out of a JSON tree; `Null` when any step is missing.
pub fn at<'a>(tree: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .try_fold(tree, |v, key| v.get(key))
        .unwrap_or(&Value::Null)
}

/// A new case, and Olena's phone and tablet, each connected and synced with
/// it (the phone first).
pub async fn phone_and_tablet_on_a_new_case(
    server: &TestServer,
) -> (DocumentId, EngineDevice, EngineDevice) {
    let token = server.token("olena", "phone");
    let case = server.new_case(&token).await;
    let mut phone = EngineDevice::connect(server, "olena", "phone").await;
    phone.find(case).await;
    let mut tablet = EngineDevice::connect(server, "olena", "tablet").await;
    tablet.find(case).await;
    (case, phone, tablet)
}

/// A device built from sync-core's engine, driven over a real WebSocket:
/// what the field app does, minus the browser.
pub struct EngineDevice {
    pub device: Device,
    user: String,
    device_name: String,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl EngineDevice {
    /// Connects as `user:<user>:<device>` and waits for the server's `peer`.
    pub async fn connect(server: &TestServer, user: &str, device: &str) -> Self {
        let token = server.token(user, device);
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url(&token))
            .await
            .expect("engine device: WebSocket upgrade");
        let peer = PeerId::new(format!("user:{user}:{device}")).expect("peer id");
        let device_name = device.to_owned();
        let mut device = Device::new(peer, None, Limits::default());
        device.connect();
        let mut me = Self {
            device,
            user: user.to_owned(),
            device_name,
            ws,
        };
        me.pump_until("the server's `peer` reply", |d| d.is_connected())
            .await;
        me
    }

    /// Opens `doc` empty and waits until the server has sent its content.
    pub async fn find(&mut self, doc: DocumentId) {
        self.device.open(doc, Automerge::new(), None);
        self.pump_until("the case's content from the server", |d| {
            d.doc(&doc).is_some_and(|am| !am.get_heads().is_empty())
        })
        .await;
    }

    /// The document as JSON (the same view as `GET /api/cases/{id}`).
    pub fn view(&self, doc: DocumentId) -> Value {
        sync_core::view::to_json(self.device.doc(&doc).expect("open document"), None)
    }

    /// Applies a model edit as one change, stamped now.
    pub fn edit(&mut self, doc: DocumentId, edit: &Edit) {
        let user = self.user.clone();
        let now_ms = unix_now().saturating_mul(1000);
        self.device
            .edit(&doc, |am| model::apply_edit(am, edit, &user, now_ms))
            .expect("open document")
            .expect("edit applies");
    }

    /// Sends what is pending and waits until the server has acknowledged
    /// every local change of `doc` as durably stored.
    pub async fn wait_acknowledged(&mut self, doc: DocumentId) {
        self.pump_until("the server's acknowledgement of our changes", |d| {
            d.unacknowledged(&doc) == 0
        })
        .await;
    }

    /// Sends what is pending, then handles frames until `done` holds.
    pub async fn pump_until(&mut self, what: &str, mut done: impl FnMut(&Device) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            self.flush().await;
            if done(&self.device) {
                return;
            }
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("engine device: timed out waiting for {what}"));
            match next {
                Some(Ok(Message::Binary(frame))) => self
                    .device
                    .handle_frame(&frame)
                    .unwrap_or_else(|e| panic!("engine device refused a server frame: {e}")),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(t))) => panic!("server sent a text frame: {t}"),
                Some(Ok(Message::Close(c))) => {
                    panic!(
                        "server closed the engine device's socket ({c:?}) while waiting for {what}"
                    )
                }
                Some(Err(e)) => panic!("engine device socket error while waiting for {what}: {e}"),
                None => panic!("engine device socket ended while waiting for {what}"),
            }
        }
    }

    async fn flush(&mut self) {
        while let Some(frame) = self.device.poll_transmit() {
            self.ws
                .send(Message::Binary(frame.into()))
                .await
                .expect("engine device: send");
        }
        // Local storage is not under test: drop the records.
        while self.device.poll_store().is_some() {}
        while let Some(event) = self.device.poll_event() {
            match event {
                DeviceEvent::DocUnavailable(doc) => panic!("server: {doc} is unavailable"),
                DeviceEvent::ServerError(e) => panic!("server error: {e}"),
                DeviceEvent::Connected { .. } | DeviceEvent::DocChanged(_) => {}
            }
        }
    }

    /// Waits for the next frame from the server and hands it to the engine
    /// without sending anything back (a device that reads but has not
    /// answered yet); the frame's bytes, or `None` if none came `within`.
    pub async fn next_frame_unanswered(&mut self, within: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match next {
                Some(Ok(Message::Binary(frame))) => {
                    self.device
                        .handle_frame(&frame)
                        .unwrap_or_else(|e| panic!("engine device refused a server frame: {e}"));
                    return Some(frame.to_vec());
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                other => panic!("engine device: socket ended or sent text: {other:?}"),
            }
        }
    }

    /// Handles frames until the server closes the socket; the close code.
    pub async fn wait_closed(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let _ = self.try_flush().await;
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("engine device: the server never closed the socket"));
            match next {
                Some(Ok(Message::Binary(frame))) => {
                    let _ = self.device.handle_frame(&frame);
                }
                Some(Ok(Message::Close(c))) => return c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Reconnects after the server closed the socket, keeping every open
    /// document and the sync state (as the phone does).
    pub async fn reconnect(&mut self, server: &TestServer) {
        self.device.disconnect();
        let token = server.token(&self.user, &self.device_name);
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url(&token))
            .await
            .expect("engine device: WebSocket upgrade");
        self.ws = ws;
        self.device.connect();
        self.pump_until("the server's `peer` reply", |d| d.is_connected())
            .await;
    }

    async fn try_flush(&mut self) -> Result<(), ()> {
        while let Some(frame) = self.device.poll_transmit() {
            self.ws
                .send(Message::Binary(frame.into()))
                .await
                .map_err(drop)?;
        }
        while self.device.poll_store().is_some() {}
        while self.device.poll_event().is_some() {}
        Ok(())
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
