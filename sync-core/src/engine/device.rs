//! The device's side: many documents, one server, reconnecting now and then.
//!
//! A [`Device`] keeps every open document and, per document, the persistable
//! part of its sync state with the server, so that a reconnect costs what
//! changed rather than the whole history. The driver (the wasm client, or a
//! test harness) moves frames and storage records; nothing here does IO.

use std::collections::{BTreeMap, VecDeque};

use automerge::{Automerge, Change, ChangeHash};

use super::doc::DocSync;
use crate::guard::{self, GuardError, Limits};
use crate::ids::{DocumentId, PeerId, StorageId};
use crate::protocol::{self, DecodeError, Message, PeerMetadata, PROTOCOL_VERSION};

/// Something the app should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// The server accepted our `join`.
    Connected { server: PeerId },
    /// A document changed because of the server's sync message.
    DocChanged(DocumentId),
    /// The server has no such document, or we may not see it.
    DocUnavailable(DocumentId),
    /// The server closed the session with an error message.
    ServerError(String),
}

/// Something the driver must store locally (IndexedDB on phones).
#[derive(Debug)]
pub enum DeviceStore {
    /// New changes of a document, to append to its local log.
    Changes {
        document: DocumentId,
        changes: Vec<Change>,
    },
    /// The persistable part of the sync state with one server storage.
    SyncState {
        document: DocumentId,
        server_storage: Option<StorageId>,
        state: Vec<u8>,
    },
}

/// Why a frame from the server was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("refused by the input guards: {0}")]
    Guard(#[from] GuardError),
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
    #[error("unknown document {0}")]
    UnknownDocument(DocumentId),
    #[error("not connected")]
    NotConnected,
}

#[derive(Debug)]
enum Link {
    Offline,
    Joining,
    Ready {
        server: PeerId,
        server_storage: Option<StorageId>,
    },
}

#[derive(Debug)]
struct DeviceDoc {
    sync: DocSync,
    /// Persisted sync state with the server, kept across connections.
    saved_state: Option<Vec<u8>>,
    /// Heads the server has acknowledged (shared heads); local changes not
    /// in their history are "not yet saved to the server".
    acked_heads: Vec<ChangeHash>,
    unavailable: bool,
}

impl DeviceDoc {
    /// Adds hashes the server reported durable. Unknown hashes (changes we
    /// have not received yet) say nothing about ours and are skipped; hashes
    /// that are dependencies of others are pruned to keep the set small.
    fn acknowledge(&mut self, hashes: impl IntoIterator<Item = ChangeHash>) {
        let doc = self.sync.doc();
        let mut set: std::collections::BTreeSet<ChangeHash> =
            self.acked_heads.iter().copied().collect();
        set.extend(
            hashes
                .into_iter()
                .filter(|h| doc.get_change_meta_by_hash(h).is_some()),
        );
        let deps: std::collections::BTreeSet<ChangeHash> = set
            .iter()
            .filter_map(|h| doc.get_change_meta_by_hash(h))
            .flat_map(|m| m.deps.to_vec())
            .collect();
        self.acked_heads = set.into_iter().filter(|h| !deps.contains(h)).collect();
    }
}

/// A device's replica of its cases.
#[derive(Debug)]
pub struct Device {
    peer_id: PeerId,
    storage_id: Option<StorageId>,
    limits: Limits,
    docs: BTreeMap<DocumentId, DeviceDoc>,
    link: Link,
    outbox: VecDeque<Vec<u8>>,
    events: VecDeque<DeviceEvent>,
    store: VecDeque<DeviceStore>,
}

impl Device {
    pub fn new(peer_id: PeerId, storage_id: Option<StorageId>, limits: Limits) -> Self {
        Self {
            peer_id,
            storage_id,
            limits,
            docs: BTreeMap::new(),
            link: Link::Offline,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            store: VecDeque::new(),
        }
    }

    pub fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Ready { .. })
    }

    /// Adds a document from local storage (or an empty one to fetch from the
    /// server). `sync_state` is the last persisted sync state, if any.
    pub fn open(&mut self, document: DocumentId, doc: Automerge, sync_state: Option<Vec<u8>>) {
        let acked_heads = sync_state
            .as_deref()
            .and_then(|b| guard::decode_sync_state(b, &self.limits).ok())
            .map(|s| s.shared_heads)
            .unwrap_or_default();
        let mut entry = DeviceDoc {
            sync: DocSync::new(doc, self.limits.clone()),
            saved_state: sync_state,
            acked_heads,
            unavailable: false,
        };
        if let Link::Ready { server, .. } = &self.link {
            entry
                .sync
                .add_peer(server.clone(), entry.saved_state.as_deref(), false);
        }
        self.docs.insert(document, entry);
    }

    /// Loads a document from its saved bytes, through the guards.
    pub fn open_saved(
        &mut self,
        document: DocumentId,
        bytes: &[u8],
        sync_state: Option<Vec<u8>>,
    ) -> Result<(), DeviceError> {
        let doc = guard::load_document(bytes, &self.limits)?;
        self.open(document, doc, sync_state);
        Ok(())
    }

    pub fn close(&mut self, document: &DocumentId) {
        self.docs.remove(document);
    }

    pub fn documents(&self) -> impl Iterator<Item = &DocumentId> {
        self.docs.keys()
    }

    pub fn doc(&self, document: &DocumentId) -> Option<&Automerge> {
        self.docs.get(document).map(|d| d.sync.doc())
    }

    /// Runs a local edit on a document.
    pub fn edit<T>(
        &mut self,
        document: &DocumentId,
        f: impl FnOnce(&mut Automerge) -> T,
    ) -> Result<T, DeviceError> {
        let entry = self
            .docs
            .get_mut(document)
            .ok_or(DeviceError::UnknownDocument(*document))?;
        Ok(entry.sync.edit(f))
    }

    /// Changes of this document the server has not acknowledged yet.
    pub fn unacknowledged(&self, document: &DocumentId) -> usize {
        self.docs
            .get(document)
            .map(|d| d.sync.doc().get_changes(&d.acked_heads).len())
            .unwrap_or(0)
    }

    /// The persistable sync state with the server for a document: the live
    /// one while connected, else the one kept from the last connection.
    pub fn sync_state(&self, document: &DocumentId) -> Option<Vec<u8>> {
        let d = self.docs.get(document)?;
        if let Link::Ready { server, .. } = &self.link {
            if let Some(state) = d.sync.encode_peer_state(server) {
                return Some(state);
            }
        }
        d.saved_state.clone()
    }

    /// Restores acknowledgements kept in local storage (for example ones
    /// the server gave only through remote heads, which the sync state
    /// does not record). Unknown hashes are ignored.
    pub fn acknowledge_heads(&mut self, document: &DocumentId, heads: &[ChangeHash]) {
        if let Some(d) = self.docs.get_mut(document) {
            d.acknowledge(heads.iter().copied());
        }
    }

    /// Heads of the document the server has acknowledged as stored.
    pub fn acked_heads(&self, document: &DocumentId) -> &[ChangeHash] {
        self.docs
            .get(document)
            .map(|d| d.acked_heads.as_slice())
            .unwrap_or(&[])
    }

    /// Total of [`Self::unacknowledged`] over every document.
    pub fn unacknowledged_total(&self) -> usize {
        self.docs.keys().map(|d| self.unacknowledged(d)).sum()
    }

    /// The connection opened: queues our `join`.
    pub fn connect(&mut self) {
        self.link = Link::Joining;
        self.outbox.clear();
        self.outbox.push_back(protocol::encode(&Message::Join {
            sender_id: self.peer_id.clone(),
            supported_protocol_versions: vec![PROTOCOL_VERSION.to_owned()],
            metadata: Some(PeerMetadata {
                storage_id: self.storage_id.clone(),
                is_ephemeral: false,
            }),
        }));
    }

    /// The connection is gone. Sync states shrink to what automerge keeps
    /// across connections and are handed to the driver for storage.
    pub fn disconnect(&mut self) {
        let server_storage = match &self.link {
            Link::Ready {
                server,
                server_storage,
            } => Some((server.clone(), server_storage.clone())),
            _ => None,
        };
        self.link = Link::Offline;
        self.outbox.clear();
        let Some((server, server_storage)) = server_storage else {
            return;
        };
        for (id, d) in self.docs.iter_mut() {
            if let Some(state) = d.sync.remove_peer(&server) {
                d.saved_state = Some(state.clone());
                self.store.push_back(DeviceStore::SyncState {
                    document: *id,
                    server_storage: server_storage.clone(),
                    state,
                });
            }
        }
    }

    /// Handles one frame from the server.
    pub fn handle_frame(&mut self, frame: &[u8]) -> Result<(), DeviceError> {
        guard::check_frame_size(frame.len(), &self.limits)?;
        guard::check_cbor(frame, &self.limits)?;
        let msg = protocol::decode(frame)?;
        match msg {
            Message::Peer {
                sender_id,
                metadata,
                ..
            } => {
                let server_storage = metadata.and_then(|m| m.storage_id);
                // Ask for the server storage's heads: the server announces
                // them once changes are durable, which is how the device
                // knows its edits are saved even when no sync reply follows.
                if let Some(storage) = &server_storage {
                    self.outbox
                        .push_back(protocol::encode(&Message::RemoteSubscriptionChange {
                            sender_id: self.peer_id.clone(),
                            target_id: sender_id.clone(),
                            add: vec![storage.clone()],
                            remove: vec![],
                        }));
                }
                for d in self.docs.values_mut() {
                    d.sync
                        .add_peer(sender_id.clone(), d.saved_state.as_deref(), false);
                }
                self.link = Link::Ready {
                    server: sender_id.clone(),
                    server_storage,
                };
                self.events
                    .push_back(DeviceEvent::Connected { server: sender_id });
            }
            Message::Sync {
                sender_id,
                document_id,
                data,
                ..
            }
            | Message::Request {
                sender_id,
                document_id,
                data,
                ..
            } => {
                let Link::Ready { server, .. } = &self.link else {
                    return Err(DeviceError::NotConnected);
                };
                if sender_id != *server {
                    return Ok(());
                }
                let server = server.clone();
                let entry = self
                    .docs
                    .get_mut(&document_id)
                    .ok_or(DeviceError::UnknownDocument(document_id))?;
                let before = entry.sync.doc().get_heads();
                entry
                    .sync
                    .handle_sync(&server, &data)
                    .map_err(|e| match e {
                        super::doc::DocSyncError::Guard(g) => DeviceError::Guard(g),
                        super::doc::DocSyncError::UnknownPeer(_) => DeviceError::NotConnected,
                    })?;
                entry.unavailable = false;
                // The server only sends heads that are durable, so shared
                // heads are acknowledged ones.
                if let Some(shared) = entry.sync.shared_heads(&server) {
                    let shared = shared.to_vec();
                    entry.acknowledge(shared);
                }
                if entry.sync.doc().get_heads() != before {
                    self.events.push_back(DeviceEvent::DocChanged(document_id));
                }
            }
            Message::DocUnavailable { document_id, .. } => {
                if let Some(d) = self.docs.get_mut(&document_id) {
                    d.unavailable = true;
                }
                self.events
                    .push_back(DeviceEvent::DocUnavailable(document_id));
            }
            Message::Error { message, .. } => {
                self.events.push_back(DeviceEvent::ServerError(message));
            }
            Message::RemoteHeadsChanged {
                sender_id,
                document_id,
                new_heads,
                ..
            } => {
                let Link::Ready {
                    server,
                    server_storage: Some(storage),
                } = &self.link
                else {
                    return Ok(());
                };
                if sender_id != *server {
                    return Ok(());
                }
                let (Some(heads), Some(entry)) =
                    (new_heads.get(storage), self.docs.get_mut(&document_id))
                else {
                    return Ok(());
                };
                let known = heads.heads.iter().filter_map(|h| protocol::decode_head(h));
                entry.acknowledge(known);
            }
            // Presence is not used by the device engine yet.
            Message::Ephemeral { .. }
            | Message::RemoteSubscriptionChange { .. }
            | Message::Join { .. }
            | Message::Leave { .. } => {}
        }
        Ok(())
    }

    /// The next frame to send to the server, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if let Some(f) = self.outbox.pop_front() {
            return Some(f);
        }
        self.flush_store();
        let Link::Ready { server, .. } = &self.link else {
            return None;
        };
        let server = server.clone();
        for (id, d) in self.docs.iter_mut() {
            if d.unavailable {
                continue;
            }
            if let Some(data) = d.sync.poll_outgoing_for(&server) {
                // A device that has nothing of the document asks for it.
                let msg = if d.sync.doc().get_heads().is_empty() {
                    Message::Request {
                        sender_id: self.peer_id.clone(),
                        target_id: server.clone(),
                        document_id: *id,
                        data,
                    }
                } else {
                    Message::Sync {
                        sender_id: self.peer_id.clone(),
                        target_id: server.clone(),
                        document_id: *id,
                        data,
                    }
                };
                self.outbox.push_back(protocol::encode(&msg));
            }
        }
        self.outbox.pop_front()
    }

    /// Moves persist requests of the documents into the store queue. On a
    /// device, local storage is the durability layer, and the gate opens as
    /// soon as the driver has the records: a phone's edits must reach the
    /// server even if its own storage is slow.
    fn flush_store(&mut self) {
        for (id, d) in self.docs.iter_mut() {
            for req in d.sync.take_persist_requests() {
                d.sync.handle_persisted(req.token);
                self.store.push_back(DeviceStore::Changes {
                    document: *id,
                    changes: req.changes,
                });
            }
        }
    }

    /// Records the driver must write to local storage.
    pub fn poll_store(&mut self) -> Option<DeviceStore> {
        self.flush_store();
        self.store.pop_front()
    }

    /// Things the app should know about.
    pub fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.events.pop_front()
    }
}
