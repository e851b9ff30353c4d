//! A Rust test device: `sync_core::engine::Device` driven over a real
//! WebSocket.
//!
//! The engine sits behind a std `Mutex` shared by the test and the
//! connection task. The lock is held only to call the engine (never across
//! an `.await`): the task locks to hand it an inbound frame or to take the
//! frames it must send, the test locks to edit or read. A `watch` counter
//! ticks after every change of state, so waits wake up instead of polling.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use automerge::{ActorId, Automerge, ChangeHash};
use futures_util::{SinkExt, StreamExt};
use sync_core::engine::{Device, DeviceEvent, DeviceStore};
use sync_core::guard::Limits;
use sync_core::ids::{DeviceId, DocumentId, PeerId, StorageId, UserId};
use sync_core::model::{self, Case, Edit};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::error::HarnessError;
use crate::raw::{dial, WsAuth, WsStream};
use crate::server::TestServer;
use crate::wait;

/// A failure guard for the handshake (`join` answered by `peer`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a closing handshake may take before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a connection ended, as the device saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRecord {
    /// The close code the server sent, if it sent a close frame.
    pub code: Option<u16>,
    /// The close reason, or what ended the socket.
    pub reason: String,
    /// True when the test closed it ([`TestDevice::disconnect`]).
    pub by_us: bool,
}

/// The device's state, as predicates and inspections see it.
#[derive(Debug)]
pub struct DeviceState {
    engine: Device,
    events: Vec<DeviceEvent>,
    frame_errors: Vec<String>,
    closes: Vec<CloseRecord>,
    /// Connections opened so far.
    connections: usize,
    /// A connection task is running.
    linked: bool,
    /// The last sync state per document the engine asked us to store.
    sync_states: BTreeMap<DocumentId, Vec<u8>>,
    /// Local changes handed to "local storage".
    stored_changes: usize,
}

impl DeviceState {
    pub fn engine(&self) -> &Device {
        &self.engine
    }

    /// Every event since the device was made (or since the last
    /// [`TestDevice::take_events`]).
    pub fn events(&self) -> &[DeviceEvent] {
        &self.events
    }

    /// Frames the engine refused.
    pub fn frame_errors(&self) -> &[String] {
        &self.frame_errors
    }

    /// How each connection ended.
    pub fn closes(&self) -> &[CloseRecord] {
        &self.closes
    }

    /// `error` messages the server sent.
    pub fn server_errors(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match e {
                DeviceEvent::ServerError(m) => Some(m.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Changes the engine handed to "local storage" (edits and received
    /// changes), as a phone would write them to IndexedDB.
    pub fn stored_changes(&self) -> usize {
        self.stored_changes
    }

    pub fn connections(&self) -> usize {
        self.connections
    }

    /// A connection task is running (the socket may still be joining).
    pub fn is_linked(&self) -> bool {
        self.linked
    }

    /// Joined: the server answered our `join`.
    pub fn is_online(&self) -> bool {
        self.linked && self.engine.is_connected()
    }

    pub fn doc(&self, doc: &DocumentId) -> Option<&Automerge> {
        self.engine.doc(doc)
    }

    pub fn heads(&self, doc: &DocumentId) -> Vec<ChangeHash> {
        self.engine
            .doc(doc)
            .map(Automerge::get_heads)
            .unwrap_or_default()
    }

    pub fn unacknowledged(&self, doc: &DocumentId) -> usize {
        self.engine.unacknowledged(doc)
    }

    pub fn is_unavailable(&self, doc: &DocumentId) -> bool {
        self.events.contains(&DeviceEvent::DocUnavailable(*doc))
    }

    fn drain_engine(&mut self) {
        while let Some(event) = self.engine.poll_event() {
            self.events.push(event);
        }
        while let Some(record) = self.engine.poll_store() {
            match record {
                DeviceStore::SyncState {
                    document, state, ..
                } => {
                    self.sync_states.insert(document, state);
                }
                DeviceStore::Changes { changes, .. } => self.stored_changes += changes.len(),
            }
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<DeviceState>,
    changed: watch::Sender<u64>,
}

impl Shared {
    /// Locks the state. A panic while holding the lock (a failed assertion
    /// in a predicate) poisons it; the state is still what it was, so use it.
    fn lock(&self) -> MutexGuard<'_, DeviceState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[derive(Debug)]
struct Link {
    task: JoinHandle<()>,
    kick: Arc<Notify>,
    stop: Option<oneshot::Sender<()>>,
}

/// One phone: its documents, its engine and (while online) its socket.
#[derive(Debug)]
pub struct TestDevice {
    user: UserId,
    peer_id: PeerId,
    token: String,
    shared: Arc<Shared>,
    link: Option<Link>,
}

fn random_actor() -> ActorId {
    ActorId::from(rand::random::<[u8; 16]>())
}

impl TestDevice {
    /// A device for `user`/`device` that will authenticate with `token`.
    /// Its storage id is random, as a fresh install's would be.
    pub fn new(user: &str, device: &str, token: String) -> Result<Self, HarnessError> {
        let user = UserId::new(user).map_err(|e| HarnessError::Unexpected(e.to_string()))?;
        let device = DeviceId::new(device).map_err(|e| HarnessError::Unexpected(e.to_string()))?;
        let peer_id = PeerId::for_device(&user, &device);
        let storage: String = rand::random::<[u8; 16]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let storage =
            StorageId::new(storage).map_err(|e| HarnessError::Unexpected(e.to_string()))?;
        let engine = Device::new(peer_id.clone(), Some(storage), Limits::default());
        let (changed, _) = watch::channel(0);
        Ok(Self {
            user,
            peer_id,
            token,
            shared: Arc::new(Shared {
                state: Mutex::new(DeviceState {
                    engine,
                    events: Vec::new(),
                    frame_errors: Vec::new(),
                    closes: Vec::new(),
                    connections: 0,
                    linked: false,
                    sync_states: BTreeMap::new(),
                    stored_changes: 0,
                }),
                changed,
            }),
            link: None,
        })
    }

    /// A device with a token minted by the server's `casesync token`.
    pub async fn minted(
        server: &TestServer,
        user: &str,
        device: &str,
    ) -> Result<Self, HarnessError> {
        let token = server.token(user, device).await?;
        Self::new(user, device, token)
    }

    pub fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }

    pub fn user(&self) -> &str {
        self.user.as_str()
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Runs `f` on the locked state. Keep it short: the connection task
    /// waits for the lock.
    pub fn inspect<T>(&self, f: impl FnOnce(&DeviceState) -> T) -> T {
        f(&self.shared.lock())
    }

    /// A receiver that changes whenever the device's state does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    fn kick(&self) {
        if let Some(link) = &self.link {
            link.kick.notify_one();
        }
        self.shared.bump();
    }

    /// Opens a document this device does not have yet (the server sends
    /// it), with a fresh actor id and a fresh sync state: a saved sync
    /// state only goes with the saved document it describes.
    pub fn open(&self, doc: DocumentId) {
        let mut state = self.shared.lock();
        state.sync_states.remove(&doc);
        state
            .engine
            .open(doc, Automerge::new().with_actor(random_actor()), None);
        drop(state);
        self.kick();
    }

    /// Applies a case edit as this device's user, stamped now.
    pub fn edit(&self, doc: &DocumentId, edit: &Edit) -> Result<Option<ChangeHash>, HarnessError> {
        let author = self.user.as_str().to_owned();
        let result = self.shared.lock().engine.edit(doc, |am| {
            model::apply_edit(am, edit, &author, crate::now_ms())
        });
        self.kick();
        Ok(result??)
    }

    /// Runs an arbitrary change on a document.
    pub fn edit_raw<T>(
        &self,
        doc: &DocumentId,
        f: impl FnOnce(&mut Automerge) -> T,
    ) -> Result<T, HarnessError> {
        let result = self.shared.lock().engine.edit(doc, f);
        self.kick();
        Ok(result?)
    }

    /// The typed case as this device has it.
    pub fn read_case(&self, doc: &DocumentId) -> Result<Case, HarnessError> {
        let state = self.shared.lock();
        let am = state
            .engine
            .doc(doc)
            .ok_or_else(|| HarnessError::Unexpected(format!("{doc} is not open")))?;
        Ok(model::read_case(am)?)
    }

    /// A copy of a document.
    pub fn doc(&self, doc: &DocumentId) -> Option<Automerge> {
        self.shared.lock().engine.doc(doc).cloned()
    }

    pub fn heads(&self, doc: &DocumentId) -> Vec<ChangeHash> {
        self.inspect(|s| s.heads(doc))
    }

    pub fn unacknowledged(&self, doc: &DocumentId) -> usize {
        self.inspect(|s| s.unacknowledged(doc))
    }

    pub fn acked_heads(&self, doc: &DocumentId) -> Vec<ChangeHash> {
        self.inspect(|s| s.engine.acked_heads(doc).to_vec())
    }

    /// Drains the event log.
    pub fn take_events(&self) -> Vec<DeviceEvent> {
        std::mem::take(&mut self.shared.lock().events)
    }

    pub fn closes(&self) -> Vec<CloseRecord> {
        self.inspect(|s| s.closes.clone())
    }

    pub fn is_online(&self) -> bool {
        self.inspect(DeviceState::is_online)
    }

    /// Connects to the server and waits until it answered our `join`.
    pub async fn connect(&mut self, server: &TestServer) -> Result<(), HarnessError> {
        self.connect_url(&server.ws_url()?).await
    }

    /// Like [`Self::connect`], to `ws://…/sync`.
    pub async fn connect_url(&mut self, url: &str) -> Result<(), HarnessError> {
        self.disconnect().await;
        let ws = dial(url, &WsAuth::Bearer(self.token.clone())).await?;
        {
            let mut state = self.shared.lock();
            state.engine.connect();
            state.connections += 1;
            state.linked = true;
        }
        let kick = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run_link(self.shared.clone(), ws, kick.clone(), stop_rx));
        self.link = Some(Link {
            task,
            kick,
            stop: Some(stop_tx),
        });
        self.shared.bump();
        wait::until(
            &[&*self],
            CONNECT_TIMEOUT,
            "the server's `peer` answer",
            || self.inspect(|s| s.is_online() || !s.linked),
        )
        .await?;
        if self.is_online() {
            Ok(())
        } else {
            Err(HarnessError::Unexpected(format!(
                "the connection ended before the handshake: {:?}",
                self.closes().last()
            )))
        }
    }

    /// Closes the socket (a close frame, as an app going offline would) and
    /// waits for the connection task to end. Does nothing when offline.
    pub async fn disconnect(&mut self) {
        let Some(mut link) = self.link.take() else {
            return;
        };
        if let Some(stop) = link.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(CLOSE_TIMEOUT * 2, &mut link.task)
            .await
            .is_err()
        {
            link.task.abort();
            let _ = link.task.await;
            link_ended(&self.shared, None, "aborted".into(), true);
        }
    }

    /// Waits until the connection task has ended (the server went away).
    pub async fn wait_offline(&self, timeout: Duration) -> Result<(), HarnessError> {
        wait::until(&[self], timeout, "the connection to end", || {
            self.inspect(|s| !s.linked)
        })
        .await
    }

    /// Waits until `pred` holds on this device's state.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&DeviceState) -> bool,
    ) -> Result<(), HarnessError> {
        wait::until(&[self], timeout, what, || self.inspect(&mut pred)).await
    }

    /// Waits until the server has acknowledged every change of `doc`.
    pub async fn wait_acknowledged(
        &self,
        doc: &DocumentId,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        self.wait_until(timeout, "every change acknowledged", |s| {
            s.unacknowledged(doc) == 0
        })
        .await
    }

    /// Waits until the typed case satisfies `pred`.
    pub async fn wait_case(
        &self,
        doc: &DocumentId,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&Case) -> bool,
    ) -> Result<(), HarnessError> {
        self.wait_until(timeout, what, |s| {
            s.doc(doc)
                .and_then(|am| model::read_case(am).ok())
                .is_some_and(|case| pred(&case))
        })
        .await
    }
}

impl Drop for TestDevice {
    fn drop(&mut self) {
        if let Some(link) = self.link.take() {
            link.task.abort();
        }
    }
}

fn link_ended(shared: &Shared, code: Option<u16>, reason: String, by_us: bool) {
    let mut state = shared.lock();
    state.engine.disconnect();
    state.drain_engine();
    state.linked = false;
    state.closes.push(CloseRecord {
        code,
        reason,
        by_us,
    });
    drop(state);
    shared.bump();
}

/// What the connection task does next.
enum Step {
    Stop,
    Kick,
    Inbound(Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>),
}

/// The connection task: moves frames between the socket and the engine
/// until the socket ends or the test asks it to stop.
async fn run_link(
    shared: Arc<Shared>,
    mut ws: WsStream,
    kick: Arc<Notify>,
    mut stop: oneshot::Receiver<()>,
) {
    // Set once a send failed: the server is gone or going. Frames it sent
    // before that may still be buffered (its acknowledgements, its close
    // frame and reason), so they are read before the link counts as ended.
    let mut send_failed: Option<String> = None;
    let (code, reason, by_us) = loop {
        if send_failed.is_none() {
            let outgoing: Vec<Vec<u8>> = {
                let mut state = shared.lock();
                let mut frames = Vec::new();
                while let Some(frame) = state.engine.poll_transmit() {
                    frames.push(frame);
                }
                state.drain_engine();
                frames
            };
            for frame in outgoing {
                if let Err(e) = ws.feed(WsMessage::Binary(frame.into())).await {
                    send_failed = Some(e.to_string());
                    break;
                }
            }
            if send_failed.is_none() {
                if let Err(e) = ws.flush().await {
                    send_failed = Some(e.to_string());
                }
            }
        }
        let step = if send_failed.is_some() {
            match tokio::time::timeout(CLOSE_TIMEOUT, ws.next()).await {
                Ok(next) => Step::Inbound(next),
                Err(_) => Step::Inbound(None),
            }
        } else {
            tokio::select! {
                _ = &mut stop => Step::Stop,
                next = ws.next() => Step::Inbound(next),
                _ = kick.notified() => Step::Kick,
            }
        };
        let ended = |what: String| match &send_failed {
            Some(e) => format!("send failed: {e}; then {what}"),
            None => what,
        };
        match step {
            Step::Kick => {}
            Step::Stop => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    let _ = ws.close(None).await;
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                break (None, "closed by the device".into(), true);
            }
            Step::Inbound(Some(Ok(WsMessage::Binary(bytes)))) => {
                let mut state = shared.lock();
                if let Err(e) = state.engine.handle_frame(&bytes) {
                    state.frame_errors.push(e.to_string());
                }
                state.drain_engine();
                drop(state);
                shared.bump();
            }
            Step::Inbound(Some(Ok(WsMessage::Close(frame)))) => {
                // tungstenite answers the close; drain until it is done.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                break match frame {
                    Some(f) => (Some(u16::from(f.code)), f.reason.to_string(), false),
                    None => (None, "close frame without a code".into(), false),
                };
            }
            Step::Inbound(Some(Ok(WsMessage::Text(_)))) => {
                shared
                    .lock()
                    .frame_errors
                    .push("text frame from the server".into());
            }
            Step::Inbound(Some(Ok(_))) => {}
            Step::Inbound(Some(Err(e))) => {
                break (None, ended(format!("socket error: {e}")), false)
            }
            Step::Inbound(None) => break (None, ended("socket ended".into()), false),
        }
    };
    link_ended(&shared, code, reason, by_us);
}
