//! The server's side of one connection: handshake, guards, authorization and
//! routing. Documents themselves live in [`super::DocSync`]s owned by the
//! driver (the server's document actors), so the session only decides where
//! each message goes.

use std::collections::{BTreeSet, VecDeque};

use crate::guard::{self, GuardError, Limits};
use crate::ids::{DocumentId, PeerId, StorageId};
use crate::protocol::{self, DecodeError, Message, PeerMetadata, RemoteHeads, PROTOCOL_VERSION};

/// What a peer may do with a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Not visible: answered with `doc-unavailable`, the same answer as for a
    /// document that does not exist.
    None,
    /// May receive the document; its changes are not applied.
    Read,
    /// May read and write.
    Write,
}

/// The server's authorization policy: "may this peer read or write this
/// document?". The server implements it over its membership tables.
pub trait Policy {
    fn access(&self, peer: &PeerId, doc: &DocumentId) -> Access;
}

/// Something the driver must act on after a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The handshake completed.
    Joined {
        peer: PeerId,
        storage_id: Option<StorageId>,
    },
    /// A `request` or `sync` for a document the peer may see. The driver
    /// passes `data` to that document's [`super::DocSync::handle_sync`].
    Sync {
        document: DocumentId,
        data: Vec<u8>,
        access: Access,
        /// `request` rather than `sync`: the peer does not have the document.
        is_request: bool,
    },
    /// An ephemeral message to forward to the document's other peers.
    Ephemeral {
        document: DocumentId,
        count: u64,
        session_id: String,
        data: Vec<u8>,
    },
    /// The peer changed which storages' heads it wants to hear about.
    RemoteSubscription {
        add: Vec<StorageId>,
        remove: Vec<StorageId>,
    },
    /// The peer reported an error.
    PeerError { message: String },
    /// The peer said goodbye.
    Left,
}

/// Why a session must end. The session has already queued a protocol `error`
/// frame for the peer; the driver sends it and closes.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("refused by the input guards: {0}")]
    Guard(#[from] GuardError),
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
    #[error("the first message must be `join`")]
    NotJoined,
    #[error("peer announced {announced} but its token is for {expected}")]
    PeerIdMismatch { announced: PeerId, expected: PeerId },
    #[error("message sender {0} is not this connection's peer")]
    SenderMismatch(PeerId),
    #[error("no common protocol version (we speak \"1\")")]
    UnsupportedVersion,
    #[error("unexpected `{0}` message")]
    Unexpected(&'static str),
}

#[derive(Debug)]
enum Phase {
    AwaitingJoin,
    Ready { storage_id: Option<StorageId> },
    Closed,
}

/// One server-side connection.
#[derive(Debug)]
pub struct ServerSession {
    server_peer: PeerId,
    server_storage: StorageId,
    /// The peer id the authenticated token allows (`user:<sub>:<device>`).
    expected_peer: PeerId,
    phase: Phase,
    limits: Limits,
    outbox: VecDeque<Vec<u8>>,
    remote_subscriptions: BTreeSet<StorageId>,
}

impl ServerSession {
    pub fn new(
        server_peer: PeerId,
        server_storage: StorageId,
        expected_peer: PeerId,
        limits: Limits,
    ) -> Self {
        Self {
            server_peer,
            server_storage,
            expected_peer,
            phase: Phase::AwaitingJoin,
            limits,
            outbox: VecDeque::new(),
            remote_subscriptions: BTreeSet::new(),
        }
    }

    pub fn peer(&self) -> &PeerId {
        &self.expected_peer
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.phase, Phase::Ready { .. })
    }

    /// The peer's storage id, once joined.
    pub fn peer_storage_id(&self) -> Option<&StorageId> {
        match &self.phase {
            Phase::Ready { storage_id } => storage_id.as_ref(),
            _ => None,
        }
    }

    /// True when the peer asked for our storage's heads (`remote-heads`
    /// gossip); the driver then calls [`Self::send_remote_heads`] when a
    /// document's durable heads move.
    pub fn wants_server_heads(&self) -> bool {
        self.remote_subscriptions.contains(&self.server_storage)
    }

    /// Handles one inbound frame. On error the session is closed and an
    /// `error` frame is queued.
    pub fn handle_frame<P: Policy + ?Sized>(
        &mut self,
        frame: &[u8],
        policy: &P,
    ) -> Result<Vec<SessionEvent>, SessionError> {
        let result = self.handle_frame_inner(frame, policy);
        if let Err(e) = &result {
            self.fail(e);
        }
        result
    }

    fn fail(&mut self, e: &SessionError) {
        // The message is ours, never the peer's input echoed back.
        let message = match e {
            SessionError::Guard(g) => format!("refused: {g}"),
            SessionError::Decode(_) => "malformed message".to_owned(),
            other => other.to_string(),
        };
        self.push(&Message::Error {
            sender_id: Some(self.server_peer.clone()),
            target_id: Some(self.expected_peer.clone()),
            message,
        });
        self.phase = Phase::Closed;
    }

    fn handle_frame_inner<P: Policy + ?Sized>(
        &mut self,
        frame: &[u8],
        policy: &P,
    ) -> Result<Vec<SessionEvent>, SessionError> {
        guard::check_frame_size(frame.len(), &self.limits)?;
        guard::check_cbor(frame, &self.limits)?;
        let msg = protocol::decode(frame)?;
        match &self.phase {
            Phase::Closed => return Err(SessionError::Unexpected("message after close")),
            Phase::AwaitingJoin => return self.handle_join(msg).map(|e| vec![e]),
            Phase::Ready { .. } => {}
        }
        if let Some(sender) = msg.sender_id() {
            if *sender != self.expected_peer {
                return Err(SessionError::SenderMismatch(sender.clone()));
            }
        }
        let events = match msg {
            Message::Request {
                document_id, data, ..
            } => self.route_sync(policy, document_id, data, true),
            Message::Sync {
                document_id, data, ..
            } => self.route_sync(policy, document_id, data, false),
            Message::Ephemeral {
                document_id,
                count,
                session_id,
                data,
                ..
            } => match policy.access(&self.expected_peer, &document_id) {
                Access::None => vec![],
                _ => vec![SessionEvent::Ephemeral {
                    document: document_id,
                    count,
                    session_id,
                    data,
                }],
            },
            Message::RemoteSubscriptionChange { add, remove, .. } => {
                for s in &remove {
                    self.remote_subscriptions.remove(s);
                }
                for s in &add {
                    // Bounded: a peer subscribes to a handful of storages.
                    if self.remote_subscriptions.len() < 64 {
                        self.remote_subscriptions.insert(s.clone());
                    }
                }
                vec![SessionEvent::RemoteSubscription { add, remove }]
            }
            // Gossip about other storages' heads is of no use to the server.
            Message::RemoteHeadsChanged { .. } | Message::DocUnavailable { .. } => vec![],
            Message::Error { message, .. } => vec![SessionEvent::PeerError {
                message: message.chars().take(256).collect(),
            }],
            Message::Leave { .. } => {
                self.phase = Phase::Closed;
                vec![SessionEvent::Left]
            }
            Message::Join { .. } => return Err(SessionError::Unexpected("join")),
            Message::Peer { .. } => return Err(SessionError::Unexpected("peer")),
        };
        Ok(events)
    }

    fn route_sync<P: Policy + ?Sized>(
        &mut self,
        policy: &P,
        document: DocumentId,
        data: Vec<u8>,
        is_request: bool,
    ) -> Vec<SessionEvent> {
        match policy.access(&self.expected_peer, &document) {
            Access::None => {
                self.send_doc_unavailable(document);
                vec![]
            }
            access => vec![SessionEvent::Sync {
                document,
                data,
                access,
                is_request,
            }],
        }
    }

    fn handle_join(&mut self, msg: Message) -> Result<SessionEvent, SessionError> {
        let Message::Join {
            sender_id,
            supported_protocol_versions,
            metadata,
        } = msg
        else {
            return Err(SessionError::NotJoined);
        };
        if sender_id != self.expected_peer {
            return Err(SessionError::PeerIdMismatch {
                announced: sender_id,
                expected: self.expected_peer.clone(),
            });
        }
        if !supported_protocol_versions
            .iter()
            .any(|v| v == PROTOCOL_VERSION)
        {
            return Err(SessionError::UnsupportedVersion);
        }
        let storage_id = metadata.and_then(|m| m.storage_id);
        self.push(&Message::Peer {
            sender_id: self.server_peer.clone(),
            target_id: self.expected_peer.clone(),
            selected_protocol_version: PROTOCOL_VERSION.to_owned(),
            metadata: Some(PeerMetadata {
                storage_id: Some(self.server_storage.clone()),
                is_ephemeral: false,
            }),
        });
        self.phase = Phase::Ready {
            storage_id: storage_id.clone(),
        };
        Ok(SessionEvent::Joined {
            peer: sender_id,
            storage_id,
        })
    }

    fn push(&mut self, msg: &Message) {
        self.outbox.push_back(protocol::encode(msg));
    }

    /// Queues a sync message for a document.
    pub fn send_sync(&mut self, document: DocumentId, data: Vec<u8>) {
        self.push(&Message::Sync {
            sender_id: self.server_peer.clone(),
            target_id: self.expected_peer.clone(),
            document_id: document,
            data,
        });
    }

    /// Queues `doc-unavailable`: the same answer whether the document does
    /// not exist or the peer may not see it.
    pub fn send_doc_unavailable(&mut self, document: DocumentId) {
        self.push(&Message::DocUnavailable {
            sender_id: self.server_peer.clone(),
            target_id: self.expected_peer.clone(),
            document_id: document,
        });
    }

    /// Queues an ephemeral message from another peer.
    pub fn send_ephemeral(
        &mut self,
        from: PeerId,
        document: DocumentId,
        count: u64,
        session_id: String,
        data: Vec<u8>,
    ) {
        self.push(&Message::Ephemeral {
            sender_id: from,
            target_id: self.expected_peer.clone(),
            document_id: document,
            count,
            session_id,
            data,
        });
    }

    /// Queues the server storage's durable heads for a document.
    pub fn send_remote_heads(&mut self, document: DocumentId, heads: Vec<String>, now_ms: u64) {
        let mut new_heads = std::collections::BTreeMap::new();
        new_heads.insert(
            self.server_storage.clone(),
            RemoteHeads {
                heads,
                timestamp: now_ms,
            },
        );
        self.push(&Message::RemoteHeadsChanged {
            sender_id: self.server_peer.clone(),
            target_id: self.expected_peer.clone(),
            document_id: document,
            new_heads,
        });
    }

    /// Queues an `error` message and closes the session (e.g. rate limits,
    /// revocation).
    pub fn close_with_error(&mut self, message: &str) {
        self.push(&Message::Error {
            sender_id: Some(self.server_peer.clone()),
            target_id: Some(self.expected_peer.clone()),
            message: message.to_owned(),
        });
        self.phase = Phase::Closed;
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outbox.pop_front()
    }
}
