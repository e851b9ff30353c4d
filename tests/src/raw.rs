//! A WebSocket that sends exactly the bytes it is given: for hostile peers,
//! impostors and handshake tests. Nothing here goes through the engine.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sync_core::ids::{DocumentId, PeerId, StorageId};
use sync_core::protocol::{self, Message, PeerMetadata, PROTOCOL_VERSION};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::error::HarnessError;

/// A client WebSocket over plain TCP.
pub(crate) type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A failure guard for the TCP connect and the upgrade.
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the token goes on the upgrade request.
#[derive(Debug, Clone)]
pub enum WsAuth {
    /// No token at all.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Sec-WebSocket-Protocol: casesync.v1, casesync.bearer.<token>`.
    Subprotocol(String),
    /// `?token=<token>`.
    Query(String),
}

/// Something the server sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A protocol message.
    Message(Message),
    /// A binary frame that is not a protocol message.
    Undecodable(Vec<u8>),
    Text(String),
    /// A close frame (code and reason), or `None` for a close without one.
    Close(Option<(u16, String)>),
    /// The socket ended without a close frame (reset, EOF or error).
    Ended(String),
}

impl Received {
    /// True for an `error` protocol message.
    pub fn is_error_message(&self) -> bool {
        matches!(self, Received::Message(Message::Error { .. }))
    }

    /// True when this ends the connection.
    pub fn is_end(&self) -> bool {
        matches!(self, Received::Close(_) | Received::Ended(_))
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn request(
    url: &str,
    auth: &WsAuth,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, HarnessError> {
    let url = match auth {
        WsAuth::Query(token) => format!("{url}?token={}", percent_encode(token)),
        _ => url.to_owned(),
    };
    let mut req = url.into_client_request()?;
    let header =
        |v: String| HeaderValue::from_str(&v).map_err(|e| HarnessError::Unexpected(e.to_string()));
    match auth {
        WsAuth::Bearer(token) => {
            req.headers_mut()
                .insert("authorization", header(format!("Bearer {token}"))?);
        }
        WsAuth::Subprotocol(token) => {
            req.headers_mut().insert(
                "sec-websocket-protocol",
                header(format!("casesync.v1, casesync.bearer.{token}"))?,
            );
        }
        WsAuth::None | WsAuth::Query(_) => {}
    }
    Ok(req)
}

/// Tries a WebSocket upgrade and returns the HTTP status: 101 when it was
/// accepted (the socket is then closed), else the refusal's status.
pub async fn upgrade_status(url: &str, auth: &WsAuth) -> Result<u16, HarnessError> {
    match dial(url, auth).await {
        Ok(mut ws) => {
            let _ = ws.close(None).await;
            Ok(101)
        }
        Err(HarnessError::UpgradeRefused(status)) => Ok(status),
        Err(e) => Err(e),
    }
}

/// Opens a WebSocket to `url`; a refused upgrade is
/// [`HarnessError::UpgradeRefused`] with its HTTP status.
pub(crate) async fn dial(url: &str, auth: &WsAuth) -> Result<WsStream, HarnessError> {
    let connect = tokio_tungstenite::connect_async(request(url, auth)?);
    match tokio::time::timeout(DIAL_TIMEOUT, connect).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            Err(HarnessError::UpgradeRefused(resp.status().as_u16()))
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(HarnessError::Timeout {
            what: "the WebSocket handshake".into(),
            secs: DIAL_TIMEOUT.as_secs_f64(),
        }),
    }
}

/// A raw protocol connection.
#[derive(Debug)]
pub struct RawSocket {
    ws: WsStream,
}

impl RawSocket {
    pub async fn connect(url: &str, auth: &WsAuth) -> Result<Self, HarnessError> {
        Ok(Self {
            ws: dial(url, auth).await?,
        })
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), HarnessError> {
        Ok(self.ws.send(WsMessage::Binary(bytes.into())).await?)
    }

    pub async fn send_text(&mut self, text: &str) -> Result<(), HarnessError> {
        Ok(self.ws.send(WsMessage::text(text)).await?)
    }

    pub async fn send(&mut self, msg: &Message) -> Result<(), HarnessError> {
        self.send_binary(protocol::encode(msg)).await
    }

    /// Sends `join` as `peer` and returns the server's answer.
    pub async fn join(
        &mut self,
        peer: &PeerId,
        timeout: Duration,
    ) -> Result<Received, HarnessError> {
        let storage = StorageId::new(format!("raw-{}", rand::random::<u64>()))
            .map_err(|e| HarnessError::Unexpected(e.to_string()))?;
        self.send(&Message::Join {
            sender_id: peer.clone(),
            supported_protocol_versions: vec![PROTOCOL_VERSION.to_owned()],
            metadata: Some(PeerMetadata {
                storage_id: Some(storage),
                is_ephemeral: false,
            }),
        })
        .await?;
        self.recv(timeout).await
    }

    /// Sends `join` and expects `peer`; returns the server's peer id.
    pub async fn join_ok(
        &mut self,
        peer: &PeerId,
        timeout: Duration,
    ) -> Result<PeerId, HarnessError> {
        match self.join(peer, timeout).await? {
            Received::Message(Message::Peer { sender_id, .. }) => Ok(sender_id),
            other => Err(HarnessError::Unexpected(format!(
                "expected `peer`, got {other:?}"
            ))),
        }
    }

    /// A `request` for a document this peer does not have, carrying an
    /// automerge sync message from an empty document.
    pub async fn request_doc(
        &mut self,
        from: &PeerId,
        to: &PeerId,
        doc: DocumentId,
    ) -> Result<(), HarnessError> {
        let empty = automerge::Automerge::new();
        let mut state = automerge::sync::State::new();
        let data = automerge::sync::SyncDoc::generate_sync_message(&empty, &mut state)
            .map(|m| m.encode())
            .unwrap_or_default();
        self.send(&Message::Request {
            sender_id: from.clone(),
            target_id: to.clone(),
            document_id: doc,
            data,
        })
        .await
    }

    /// The next thing the server sends, or a timeout error.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Received, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| HarnessError::Timeout {
                    what: "a frame from the server".into(),
                    secs: timeout.as_secs_f64(),
                })?;
            return Ok(match next {
                Some(Ok(WsMessage::Binary(b))) => match protocol::decode(&b) {
                    Ok(m) => Received::Message(m),
                    Err(_) => Received::Undecodable(b.to_vec()),
                },
                Some(Ok(WsMessage::Text(t))) => Received::Text(t.to_string()),
                Some(Ok(WsMessage::Close(f))) => {
                    Received::Close(f.map(|f| (u16::from(f.code), f.reason.to_string())))
                }
                // Pings are answered by tungstenite; not interesting here.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => continue,
                Some(Err(e)) => Received::Ended(e.to_string()),
                None => Received::Ended("socket ended".into()),
            });
        }
    }

    /// Everything the server sends until the connection ends (included as
    /// the last item). Times out if it does not end.
    pub async fn recv_until_end(
        &mut self,
        timeout: Duration,
    ) -> Result<Vec<Received>, HarnessError> {
        let deadline = Instant::now() + timeout;
        let mut all = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let r = self.recv(remaining).await?;
            let end = r.is_end();
            all.push(r);
            if end {
                return Ok(all);
            }
        }
    }

    /// Receives until `pred` matches a frame, returning it; frames before it
    /// are dropped. A connection end before that is an error.
    pub async fn recv_matching(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Received) -> bool,
    ) -> Result<Received, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let r = self.recv(remaining).await?;
            if pred(&r) {
                return Ok(r);
            }
            if r.is_end() {
                return Err(HarnessError::Unexpected(format!(
                    "connection ended first: {r:?}"
                )));
            }
        }
    }
}
