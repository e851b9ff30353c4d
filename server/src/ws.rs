//! `GET /sync`: the WebSocket driver around the engine's `ServerSession`.
//!
//! One task per connection. It authenticates before upgrading, runs every
//! inbound frame through the session (guards, handshake, policy), hands
//! document messages to the document actors, and writes what the actors send
//! back. Liveness: any inbound frame or pong counts, and any write of ours
//! that had to wait for the device's side to take in what was sent before
//! (it is most likely reading, only slowly); a socket is dropped once a
//! ping has gone `idle_timeout` without any of these, never for one late
//! pong, and once its writer queue has stayed full for `idle_timeout`.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use sync_core::engine::{ServerSession, SessionEvent};
use sync_core::ids::DocumentId;
use tokio::sync::mpsc;

use crate::acl::{Mode, Principal, UserPolicy};
use crate::app::{AppState, Revocation};
use crate::auth::{self, AuthRejection, Authenticated, Identity, WS_PROTOCOL};
use crate::docs::{EphemeralOut, Outbound, OutboundRx, OutboundTx, PeerHandle, Provenance};

/// WebSocket close code for a policy violation (RFC 6455).
const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code for "going away" (server shutdown).
const CLOSE_AWAY: u16 = 1001;
/// How long a closing socket waits for the peer's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Frames queued for a socket's writer task before the connection waits
/// for it (backpressure from a device that reads slowly).
const WRITE_QUEUE: usize = 64;

/// A socket's writer queue. Frames travel boxed, for the reason given at
/// [`OutboundTx`]: the channel's first block of 32 slots lives as long as
/// the connection.
type WriteTx = mpsc::Sender<Box<Message>>;

/// The writer task of one socket: sends frames in order, and notes when a
/// write completed after waiting for room in the socket: the device's side
/// took in bytes sent earlier, so it is alive and most likely reading, if
/// slowly (its pong may be stuck behind a backlog of ours). A write the
/// socket took at once says nothing: it fits in the kernel's buffer whether
/// or not anyone reads, so counting it (as this once did for every write
/// but pings) kept a device that vanished from a busy case connected until
/// TCP gave up, about 15 minutes later. Ends at the close frame, when the
/// queue closes, or when the socket fails.
async fn write_frames(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut frames: mpsc::Receiver<Box<Message>>,
    written: Arc<std::sync::Mutex<Instant>>,
) {
    while let Some(frame) = frames.recv().await {
        let closing = matches!(*frame, Message::Close(_));
        let send = sink.send(*frame);
        tokio::pin!(send);
        // Unconstrained: with tokio's per-task budget spent (a burst of
        // queued frames), the first poll would be Pending with room in the
        // socket.
        let sent = match futures_util::poll!(tokio::task::unconstrained(send.as_mut())) {
            Poll::Ready(sent) => sent,
            Poll::Pending => {
                let waiting_since = Instant::now();
                let sent = send.await;
                // A wait this short was the lock the sink shares with the
                // reading half, not a full socket.
                if sent.is_ok() && waiting_since.elapsed() >= SOCKET_WAIT {
                    *written.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
                }
                sent
            }
        };
        if sent.is_err() || closing {
            return;
        }
    }
}

/// The shortest wait of a write that counts as waiting for the device.
const SOCKET_WAIT: Duration = Duration::from_millis(1);

/// Why a frame could not be queued for the writer task.
const SEND_FAILED: &str = "send failed";
const NOT_READING: &str = "device not reading";
const WRITER_FAILED: &str = "device not reading, or its socket failed";

/// Queues `frame` for the socket's writer task, waiting at most `within`
/// for room. The queue stays full while the writer is blocked on a socket
/// the device does not read (or on one frame so large that the device's
/// link takes longer than `within` to carry it): after `within` of that,
/// the connection ends. Waiting without a bound kept this connection's
/// task blocked here, where it never got to its idle check.
async fn queue_frame(sink: &WriteTx, frame: Message, within: Duration) -> Result<(), &'static str> {
    match tokio::time::timeout(within, sink.send(Box::new(frame))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SEND_FAILED),
        Err(_) => Err(NOT_READING),
    }
}

pub async fn sync_socket(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    ws: WebSocketUpgrade,
) -> Response {
    let auth = match auth {
        Ok(a) => a,
        Err(rejection) => {
            state.inner.metrics.auth_failures.inc();
            state.inner.audit.auth_failed(&rejection.0, "/sync");
            return rejection.into_response();
        }
    };
    let config = &state.inner.config;
    ws.read_buffer_size(config.ws_read_buffer)
        .write_buffer_size(config.ws_read_buffer)
        .max_message_size(config.limits.max_frame_bytes)
        .max_frame_size(config.limits.max_frame_bytes)
        // Browsers offer `casesync.v1, casesync.bearer.<jwt>`; only the
        // non-secret one is ever selected and echoed.
        .protocols([WS_PROTOCOL])
        .on_upgrade(move |socket| {
            // A task of its own: axum's upgrade task would otherwise keep
            // its own state beside the connection's for as long as the
            // device stays connected.
            tokio::spawn(connection(state, auth.identity, socket));
            std::future::ready(())
        })
}

/// How long until a new connection's first ping: `interval`, then on to
/// the next whole second of the wall clock (`now`). Every connection's
/// pings then fall due on the same instants, and the runtime wakes once a
/// second for all of them instead of once for each: 10,000 idle devices
/// were 500 wake-ups a second, and the thread switches were most of the
/// server's idle CPU (BENCHMARKS.md, idle fleet). This holds for an
/// interval of whole seconds, as the default 20 s is. The wall clock sets
/// only the phase; a clock step moves it for later connections, nothing
/// else.
fn first_ping_in(interval: Duration, now: std::time::SystemTime) -> Duration {
    let into_second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    interval + Duration::from_nanos(u64::from(1_000_000_000 - into_second))
}

fn now_ms() -> i64 {
    auth::unix_now().saturating_mul(1000)
}

/// Sets up an upgraded connection and returns the future that serves it.
///
/// Not an `async fn`: that future lives as long as the device stays
/// connected, and an `async fn` would keep room for its arguments (the
/// unsplit socket alone is 368 bytes) in it all that time.
fn connection(
    state: AppState,
    identity: Identity,
    socket: WebSocket,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let inner = &state.inner;
    inner.metrics.connections.inc();
    inner.metrics.connections_total.inc();
    {
        let store = inner.identity.clone();
        let (user, device) = (identity.user().to_string(), identity.device().to_string());
        let now = now_ms();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.touch_device(&user, &device, now) {
                tracing::warn!(error = %e, "device not recorded");
            }
        });
    }
    let (mut conn, out_rx) = Conn::new(state.clone(), identity);
    let (sink, stream) = socket.split();
    // Writing has its own task, so that a device slow to read what we
    // send never stops us reading what it sends (its pongs among it):
    // with one task, a send blocked on a full socket stopped the reads,
    // the device's pongs went unread and it was closed as idle, and a
    // device blocked in its own send deadlocked with us until then (a
    // third of the 1,000 devices of the reconnect storm). Liveness is
    // now any frame or pong read, or a write that waited for the device
    // to read (`write_frames`).
    let (write_tx, write_rx) = mpsc::channel::<Box<Message>>(WRITE_QUEUE);
    let written = Arc::new(std::sync::Mutex::new(Instant::now()));
    let writer = tokio::spawn(write_frames(sink, write_rx, written.clone()));
    async move {
        let conn_id = conn.conn_id;
        let close = conn.run(stream, out_rx, write_tx, written, writer).await;
        Box::pin(conn.cleanup()).await;
        state.inner.metrics.connections.dec();
        tracing::debug!(conn = conn_id, reason = %close, "connection closed");
    }
}

/// One device's protocol session with the server, whatever carries its
/// frames: the WebSocket here, or the HTTP fallback (`http_sync`).
pub(crate) struct Conn {
    state: AppState,
    session: ServerSession,
    conn_id: u64,
    open: HashSet<DocumentId>,
    out_tx: Option<OutboundTx>,
    identity: Identity,
    rate: crate::ratelimit::ConnLimits,
    /// The WebSocket's writer queue (drained by its own task), for frames
    /// that must leave before this connection's next await (the reply from
    /// storage, sent before the document loads). None over HTTP, whose
    /// frames leave with the response. Reset to None when a frame could
    /// not be queued (see [`queue_frame`]); the connection then ends.
    direct: Option<WriteTx>,
}

/// The close reason (and HTTP fallback answer) for a device over a rate
/// limit.
pub(crate) const RATE_LIMITED: &str = "rate limit exceeded";

pub(crate) enum Flow {
    Continue,
    Close(u16, String),
}

impl Conn {
    /// A new session for `identity`, and the receiver of what the document
    /// actors send it.
    pub(crate) fn new(state: AppState, identity: Identity) -> (Self, OutboundRx) {
        let inner = &state.inner;
        let conn_id = inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let (out_tx, out_rx) = crate::docs::outbound_queue(256);
        let session = ServerSession::new(
            inner.server_peer.clone(),
            inner.storage_id.clone(),
            identity.peer_id().clone(),
            inner.config.limits.clone(),
        );
        let conn = Conn {
            state: state.clone(),
            session,
            conn_id,
            open: HashSet::new(),
            out_tx: Some(out_tx),
            identity,
            rate: inner.rate_limits.connection(),
            direct: None,
        };
        (conn, out_rx)
    }

    /// The next frame to send to the device.
    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.session.poll_transmit()
    }

    async fn run(
        &mut self,
        stream: futures_util::stream::SplitStream<WebSocket>,
        out_rx: OutboundRx,
        write_tx: WriteTx,
        written: Arc<std::sync::Mutex<Instant>>,
        writer: tokio::task::JoinHandle<()>,
    ) -> String {
        self.direct = Some(write_tx.clone());
        let reason = self.run_io(stream, out_rx, &write_tx, &written).await;
        self.direct = None;
        // Let the writer send what is queued (the close frame last), then
        // stop it.
        drop(write_tx);
        let abort = writer.abort_handle();
        if tokio::time::timeout(CLOSE_LINGER, writer).await.is_err() {
            abort.abort();
        }
        reason
    }

    async fn run_io(
        &mut self,
        mut stream: futures_util::stream::SplitStream<WebSocket>,
        mut out_rx: OutboundRx,
        sink: &WriteTx,
        written: &std::sync::Mutex<Instant>,
    ) -> String {
        // Only what the loop needs: this future lives as long as the
        // connection, so whatever it holds is held by every idle device.
        let (ping_interval, idle_timeout) = {
            let config = &self.state.inner.config;
            (config.ping_interval, config.idle_timeout)
        };
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now()
                + first_ping_in(ping_interval, std::time::SystemTime::now()),
            ping_interval,
        );
        // A tick missed while the connection was busy is skipped, not
        // delayed: later pings stay on the shared whole-second grid.
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_seen = Instant::now();
        // The first of our pings since the device last showed it is alive
        // (a frame or pong read, a write of ours that waited for it to
        // read). The device is dropped once that ping has gone
        // `idle_timeout` unanswered: never before it was asked, whatever
        // the first ping's phase.
        let mut unanswered_since: Option<Instant> = None;
        let mut shutdown = self.state.inner.shutdown.clone();
        let expires_in = Duration::from_secs(
            u64::try_from(self.identity.expires_at() - auth::unix_now()).unwrap_or(0),
        );
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        let mut revocations = self.state.inner.revocations.subscribe();

        loop {
            let flow = tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(Message::Binary(bytes))) => {
                        last_seen = Instant::now();
                        // Boxed: handling a frame can await a document's
                        // load, and its state inline would make every
                        // idle connection's task that much bigger.
                        Box::pin(self.handle_frame(&bytes)).await
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        last_seen = Instant::now();
                        Flow::Continue
                    }
                    Some(Ok(Message::Text(_))) => {
                        self.state.inner.metrics.rejected_inputs.inc();
                        self.session.close_with_error("protocol frames are binary CBOR");
                        Flow::Close(CLOSE_POLICY, "text frame".into())
                    }
                    Some(Ok(Message::Close(_))) | None => return "peer closed".into(),
                    Some(Err(e)) => {
                        // Oversized frames end here (tungstenite's caps).
                        self.state.inner.metrics.rejected_inputs.inc();
                        Flow::Close(CLOSE_POLICY, format!("bad frame: {e}"))
                    }
                },
                Some(out) = out_rx.recv() => self.handle_outbound(*out),
                _ = ping.tick() => {
                    let last_write = *written.lock().unwrap_or_else(PoisonError::into_inner);
                    let alive_at = last_seen.max(last_write);
                    if unanswered_since.is_some_and(|pinged| alive_at > pinged) {
                        unanswered_since = None;
                    }
                    match unanswered_since {
                        Some(pinged) if pinged.elapsed() > idle_timeout => {
                            Flow::Close(CLOSE_AWAY, "idle".into())
                        }
                        _ => {
                            // Not waited for: a ping behind a full queue
                            // would not be answered in time anyway, and
                            // waiting would stop us reading the device's
                            // pongs. It counts as asked all the same.
                            let ping = Box::new(Message::Ping(Default::default()));
                            if let Err(mpsc::error::TrySendError::Closed(_)) = sink.try_send(ping) {
                                return SEND_FAILED.into();
                            }
                            unanswered_since.get_or_insert_with(Instant::now);
                            Flow::Continue
                        }
                    }
                }
                _ = &mut expiry => {
                    self.session.close_with_error("token expired");
                    Flow::Close(CLOSE_POLICY, "token expired".into())
                }
                _ = shutdown.changed() => Flow::Close(CLOSE_AWAY, "server shutting down".into()),
                revocation = revocations.recv() => self.handle_revocation(revocation),
            };
            if self.direct.is_none() {
                return WRITER_FAILED.into();
            }
            // What goes out before a close (an `error` frame) waits only as
            // long as the close frame would.
            let within = match flow {
                Flow::Close(..) => CLOSE_LINGER,
                Flow::Continue => idle_timeout,
            };
            while let Some(frame) = self.session.poll_transmit() {
                let frame = Message::Binary(frame.into());
                if let Err(why) = queue_frame(sink, frame, within).await {
                    return why.into();
                }
            }
            if let Flow::Close(code, reason) = flow {
                let close = Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.chars().take(120).collect::<String>().into(),
                }));
                let _ = queue_frame(sink, close, CLOSE_LINGER).await;
                // Read (and drop) what the peer still sends until its close
                // reply. Closing a TCP socket with unread input makes the
                // kernel send a reset instead of a FIN, and a reset makes
                // the peer's kernel discard what it has not read yet: our
                // `error` and close frames, the reason the device needed.
                let _ = tokio::time::timeout(CLOSE_LINGER, async {
                    while let Some(Ok(msg)) = stream.next().await {
                        if matches!(msg, Message::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
                return reason;
            }
        }
    }

    pub(crate) async fn handle_frame(&mut self, frame: &[u8]) -> Flow {
        let inner = self.state.inner.clone();
        if let Err(exceeded) =
            inner
                .rate_limits
                .check(&self.rate, self.identity.user().as_str(), frame.len())
        {
            inner.metrics.rejected_inputs.inc();
            tracing::info!(
                conn = self.conn_id,
                limit = exceeded.as_str(),
                "rate limited"
            );
            inner.audit.record_coalesced(
                "rate_limited",
                crate::audit::AuditEvent::new(crate::audit::AuditKind::RateLimited)
                    .by(&self.identity)
                    .detail(serde_json::json!({ "limit": exceeded.as_str() })),
            );
            self.session
                .close_with_error(&format!("{RATE_LIMITED}: {}", exceeded.as_str()));
            return Flow::Close(CLOSE_POLICY, RATE_LIMITED.into());
        }
        let policy = UserPolicy {
            acl: &inner.acl,
            principal: Principal::of(&self.identity),
        };
        let events = match self.session.handle_frame(frame, &policy) {
            Ok(events) => events,
            Err(e) => {
                inner.metrics.rejected_inputs.inc();
                tracing::info!(conn = self.conn_id, error = %e, "session refused a frame");
                return Flow::Close(CLOSE_POLICY, "protocol error".into());
            }
        };
        for event in events {
            match event {
                SessionEvent::Joined { .. } => {}
                SessionEvent::Sync {
                    document,
                    data,
                    access,
                    ..
                } => {
                    if !self.open.contains(&document) {
                        let Some(tx) = self.out_tx.clone() else {
                            continue;
                        };
                        let mut peer = PeerHandle {
                            peer: self.identity.peer_id().clone(),
                            conn_id: self.conn_id,
                            sync_key: format!(
                                "{}|{}",
                                self.identity.peer_id(),
                                self.session
                                    .peer_storage_id()
                                    .map(|s| s.as_str())
                                    .unwrap_or("-")
                            ),
                            provenance: Provenance {
                                user: self.identity.user().to_string(),
                                device: self.identity.device().to_string(),
                            },
                            access,
                            quarantine: inner.acl.mode(&Principal::of(&self.identity), &document)
                                == Mode::Quarantine,
                            wants_heads: self.session.wants_server_heads(),
                            tx,
                            start_state: None,
                        };
                        // A device with nothing, and the case not loaded:
                        // answer from storage, and send it before the load.
                        let answered = match inner.docs.cold_reply(document, &peer, &data).await {
                            Some(reply) => {
                                peer.start_state = Some(reply.peer_state());
                                self.session.send_sync(document, reply.message);
                                self.flush_direct().await;
                                true
                            }
                            None => false,
                        };
                        match inner.docs.open(document, peer).await {
                            Ok(()) => {
                                self.open.insert(document);
                                if answered {
                                    continue;
                                }
                            }
                            Err(crate::docs::DocError::NotFound) => {
                                self.session.send_doc_unavailable(document);
                                continue;
                            }
                            Err(e) => {
                                tracing::warn!(document = %document, error = %e, "document unavailable");
                                self.session.send_doc_unavailable(document);
                                continue;
                            }
                        }
                    }
                    if inner
                        .docs
                        .sync(document, self.conn_id, data, now_ms())
                        .await
                        .is_err()
                    {
                        self.open.remove(&document);
                        return Flow::Close(CLOSE_AWAY, "document failed; reconnect".into());
                    }
                }
                SessionEvent::Ephemeral {
                    document,
                    count,
                    session_id,
                    data,
                } => {
                    if self.open.contains(&document) {
                        let _ = inner
                            .docs
                            .ephemeral(document, self.conn_id, count, session_id, data)
                            .await;
                    }
                }
                SessionEvent::RemoteSubscription { .. } => {
                    let wants = self.session.wants_server_heads();
                    for doc in &self.open {
                        inner.docs.wants_heads(*doc, self.conn_id, wants).await;
                    }
                }
                SessionEvent::PeerError { .. } => {}
                SessionEvent::Left => return Flow::Close(1000, "left".into()),
            }
        }
        Flow::Continue
    }

    /// A revocation somewhere: close if it concerns this device, or this
    /// user and a case open here. The device may reconnect; it then gets
    /// only what its new standing allows (quarantine for the case).
    pub(crate) fn handle_revocation(
        &mut self,
        revocation: Result<Revocation, tokio::sync::broadcast::error::RecvError>,
    ) -> Flow {
        let user = self.identity.user().as_str();
        let device = self.identity.device().as_str();
        let hit = match revocation {
            Ok(Revocation::Device { user: u, device: d }) => u == user && d == device,
            Ok(Revocation::Member { user: u, case }) => {
                u == user
                    && (self.open.contains(&case)
                        || self
                            .state
                            .inner
                            .acl
                            .coordination_of(&case)
                            .is_some_and(|c| self.open.contains(&c)))
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                // Missed some: look at our own standing instead.
                let acl = &self.state.inner.acl;
                acl.is_device_revoked(user, device)
                    || self.open.iter().any(|doc| {
                        !matches!(
                            acl.mode(&Principal::of(&self.identity), doc),
                            Mode::Read | Mode::Write
                        )
                    })
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => false,
        };
        if hit {
            self.session.close_with_error("access revoked");
            Flow::Close(CLOSE_POLICY, "access revoked".into())
        } else {
            Flow::Continue
        }
    }

    /// Writes what the session has queued now, on a WebSocket (the writer
    /// task drains the queue, so this waits only on the socket). Over HTTP
    /// it does nothing: the frames go out with the response.
    async fn flush_direct(&mut self) {
        let Some(writer) = self.direct.clone() else {
            return;
        };
        let within = self.state.inner.config.idle_timeout;
        while let Some(frame) = self.session.poll_transmit() {
            let frame = Message::Binary(frame.into());
            if queue_frame(&writer, frame, within).await.is_err() {
                self.direct = None;
                return;
            }
        }
    }

    pub(crate) fn handle_outbound(&mut self, out: Outbound) -> Flow {
        match out {
            Outbound::Sync { document, data } => self.session.send_sync(document, data),
            Outbound::RemoteHeads { document, heads } => {
                self.session.send_remote_heads(
                    document,
                    heads,
                    u64::try_from(now_ms()).unwrap_or(0),
                );
            }
            Outbound::Ephemeral(e) => {
                let EphemeralOut {
                    from,
                    document,
                    count,
                    session_id,
                    data,
                } = *e;
                self.session
                    .send_ephemeral(from, document, count, session_id, data)
            }
            Outbound::Refused { reason } => {
                self.session.close_with_error(&reason);
                return Flow::Close(CLOSE_POLICY, reason);
            }
            Outbound::Close { reason } => {
                self.session.close_with_error(&reason);
                return Flow::Close(CLOSE_AWAY, reason);
            }
        }
        Flow::Continue
    }

    pub(crate) async fn cleanup(&mut self) {
        for doc in self.open.drain() {
            self.state.inner.docs.close(doc, self.conn_id).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::first_ping_in;

    #[test]
    fn first_pings_of_connections_fall_on_the_same_whole_second() {
        let interval = Duration::from_secs(20);
        let base = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut due = Vec::new();
        for offset_ms in [1, 250, 999] {
            let now = base + Duration::from_millis(offset_ms);
            let wait = first_ping_in(interval, now);
            assert!(wait > interval && wait <= interval + Duration::from_secs(1));
            due.push(now + wait);
        }
        assert!(
            due.iter().all(|d| *d == base + Duration::from_secs(21)),
            "{due:?}"
        );
        // On a whole second already: one whole interval and one second.
        assert_eq!(
            first_ping_in(interval, base),
            interval + Duration::from_secs(1)
        );
        // A clock before 1970 still gives a wait, not a panic.
        let before = UNIX_EPOCH - Duration::from_millis(1500);
        assert!(first_ping_in(interval, before) >= interval);
    }
}
