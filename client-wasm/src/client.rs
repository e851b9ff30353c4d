//! The client as plain Rust: a `Device` plus type conversion. The wasm
//! wrapper in `lib.rs` only turns these errors into JS errors.

use std::collections::BTreeSet;

use automerge::{ActorId, Automerge};
use base64::Engine as _;
use serde_json::{json, Value};
use sync_core::engine::{Device, DeviceEvent, DeviceStore};
use sync_core::guard::Limits;
use sync_core::ids::{DeviceId, DocumentId, PeerId, StorageId, UserId};
use sync_core::model;

use crate::edit;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("token is not a readable JWT")]
    BadToken,
    #[error("bad document id: {0}")]
    BadDocument(String),
    #[error("unknown document {0}")]
    UnknownDocument(String),
    #[error("actor id must be 16 random bytes")]
    BadActor,
    #[error("{0}")]
    Edit(#[from] edit::EditError),
    #[error("{0}")]
    Model(#[from] model::ModelError),
    #[error("{0}")]
    Device(#[from] sync_core::engine::DeviceError),
    #[error("{0}")]
    Id(#[from] sync_core::ids::IdError),
}

/// Reads `sub` and `device` from a token's payload. The server verifies
/// the token; the client only needs to know which peer id to announce.
pub fn peer_id_from_token(token: &str) -> Result<(UserId, PeerId), ClientError> {
    let payload = token.split('.').nth(1).ok_or(ClientError::BadToken)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| ClientError::BadToken)?;
    let claims: Value = serde_json::from_slice(&bytes).map_err(|_| ClientError::BadToken)?;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or(ClientError::BadToken)?;
    let device = claims
        .get("device")
        .and_then(Value::as_str)
        .ok_or(ClientError::BadToken)?;
    let user = UserId::new(sub)?;
    let peer = PeerId::for_device(&user, &DeviceId::new(device)?);
    Ok((user, peer))
}

/// One signed-in device.
#[derive(Debug)]
pub struct Client {
    device: Device,
    user: UserId,
    actor: ActorId,
    dirty: BTreeSet<DocumentId>,
    events: Vec<Value>,
}

fn doc_id(url: &str) -> Result<DocumentId, ClientError> {
    DocumentId::parse_url_or_id(url).map_err(|e| ClientError::BadDocument(e.to_string()))
}

impl Client {
    /// `actor` is 16 random bytes the device drew once and keeps;
    /// `storage_id` names its local storage (IndexedDB).
    pub fn new(token: &str, storage_id: &str, actor: &[u8]) -> Result<Self, ClientError> {
        let (user, peer) = peer_id_from_token(token)?;
        let actor: [u8; 16] = actor.try_into().map_err(|_| ClientError::BadActor)?;
        Ok(Self {
            device: Device::new(peer, Some(StorageId::new(storage_id)?), Limits::default()),
            user,
            actor: ActorId::from(actor),
            dirty: BTreeSet::new(),
            events: Vec::new(),
        })
    }

    pub fn peer_id(&self) -> String {
        self.device.peer_id().to_string()
    }

    pub fn user(&self) -> String {
        self.user.to_string()
    }

    /// Opens a case this device does not have yet; the server sends it.
    pub fn open_new(&mut self, url: &str) -> Result<(), ClientError> {
        let id = doc_id(url)?;
        if self.device.doc(&id).is_none() {
            self.device
                .open(id, Automerge::new().with_actor(self.actor.clone()), None);
        }
        Ok(())
    }

    /// Opens a case from local storage.
    pub fn open_saved(
        &mut self,
        url: &str,
        bytes: &[u8],
        sync_state: Option<Vec<u8>>,
    ) -> Result<(), ClientError> {
        let id = doc_id(url)?;
        let (state, acked) = match sync_state {
            Some(blob) => {
                let (state, acked) = unwrap_state(&blob);
                (Some(state), acked)
            }
            None => (None, Vec::new()),
        };
        self.device.open_saved(id, bytes, state)?;
        self.device.acknowledge_heads(&id, &acked);
        // Keep this device's actor for its own edits.
        let actor = self.actor.clone();
        self.device.edit(&id, |d| {
            d.set_actor(actor);
        })?;
        Ok(())
    }

    pub fn documents(&self) -> Vec<String> {
        self.device.documents().map(|d| d.to_url()).collect()
    }

    pub fn connected(&mut self) {
        self.device.connect();
    }

    pub fn disconnected(&mut self) {
        self.device.disconnect();
        self.drain_store();
    }

    pub fn is_connected(&self) -> bool {
        self.device.is_connected()
    }

    pub fn receive(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        let before: Vec<(DocumentId, Vec<automerge::ChangeHash>)> = self
            .device
            .documents()
            .map(|d| (*d, self.device.acked_heads(d).to_vec()))
            .collect();
        self.device.handle_frame(frame)?;
        // A new acknowledgement must reach local storage too, or a restart
        // would count the change as unsaved again.
        for (d, acked) in before {
            if self.device.acked_heads(&d) != acked.as_slice() {
                self.dirty.insert(d);
            }
        }
        self.drain_events();
        Ok(())
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let out = self.device.poll_transmit();
        self.drain_store();
        out
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.device.poll_event() {
            let v = match ev {
                DeviceEvent::Connected { .. } => json!({ "type": "connected" }),
                DeviceEvent::DocChanged(d) => {
                    self.dirty.insert(d);
                    json!({ "type": "changed", "document": d.to_url() })
                }
                DeviceEvent::DocUnavailable(d) => {
                    json!({ "type": "unavailable", "document": d.to_url() })
                }
                DeviceEvent::ServerError(m) => json!({ "type": "error", "message": m }),
            };
            self.events.push(v);
        }
    }

    fn drain_store(&mut self) {
        while let Some(rec) = self.device.poll_store() {
            match rec {
                DeviceStore::Changes { document, .. } | DeviceStore::SyncState { document, .. } => {
                    self.dirty.insert(document);
                }
            }
        }
    }

    /// Events since the last call (JSON objects).
    pub fn take_events(&mut self) -> Vec<Value> {
        self.drain_events();
        std::mem::take(&mut self.events)
    }

    /// Documents whose bytes or sync state changed since the last call:
    /// the glue saves them to IndexedDB.
    pub fn take_dirty(&mut self) -> Vec<String> {
        self.drain_store();
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|d| d.to_url())
            .collect()
    }

    /// The document's bytes, for local storage.
    pub fn save(&self, url: &str) -> Result<Vec<u8>, ClientError> {
        let id = doc_id(url)?;
        self.device
            .doc(&id)
            .map(Automerge::save)
            .ok_or_else(|| ClientError::UnknownDocument(url.to_owned()))
    }

    /// The sync state to keep with the document in local storage.
    ///
    /// Besides automerge's sync state it keeps the heads the server has
    /// acknowledged, which the sync state alone does not always record (an
    /// acknowledgement can come through remote heads only).
    pub fn sync_state(&self, url: &str) -> Result<Option<Vec<u8>>, ClientError> {
        let id = doc_id(url)?;
        Ok(self
            .device
            .sync_state(&id)
            .map(|state| wrap_state(&state, self.device.acked_heads(&id))))
    }

    /// Applies an edit (JSON, see `edit::EditDto`). Returns the change hash,
    /// or `None` if the edit changed nothing.
    pub fn edit(
        &mut self,
        url: &str,
        edit_json: &str,
        now_ms: i64,
    ) -> Result<Option<String>, ClientError> {
        let id = doc_id(url)?;
        let edit = edit::parse(edit_json)?;
        let author = self.user.to_string();
        let hash = self
            .device
            .edit(&id, |d| model::apply_edit(d, &edit, &author, now_ms))??;
        self.dirty.insert(id);
        Ok(hash.map(|h| h.to_string()))
    }

    /// The case as JSON, with its conflicts and who wrote each value.
    pub fn read(&self, url: &str) -> Result<Value, ClientError> {
        let id = doc_id(url)?;
        let doc = self
            .device
            .doc(&id)
            .ok_or_else(|| ClientError::UnknownDocument(url.to_owned()))?;
        let conflicts: Vec<Value> = model::conflicts(doc)
            .iter()
            .map(|c| {
                json!({
                    "path": c.path,
                    "values": c.values.iter().map(|v| json!({
                        "value": v.value.as_ref().map(raw_json).unwrap_or(Value::Null),
                        "actor": v.actor,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        Ok(json!({
            "id": id.to_url(),
            "heads": doc.get_heads().iter().map(|h| h.to_string()).collect::<Vec<_>>(),
            "loaded": !doc.get_heads().is_empty(),
            "case": sync_core::view::to_json(doc, None),
            "conflicts": conflicts,
            "unacknowledged": self.device.unacknowledged(&id),
        }))
    }

    /// Online or not, and how many changes the server has not yet reported
    /// durable.
    pub fn status(&self) -> Value {
        json!({
            "online": self.device.is_connected(),
            "unacknowledged": self.device.unacknowledged_total(),
        })
    }

    /// This device's actor id (hex), to tell "my" values in conflicts.
    pub fn actor(&self) -> String {
        self.actor.to_hex_string()
    }
}

/// The names and kinds of every section field and collection, so that a UI
/// can render every part of the case generically. Read straight from
/// `sync_core::model`; nothing here decides what a field is.
pub fn schema() -> Value {
    use model::{Collection, Field, ItemField, Section, Status};
    let sections: Vec<Value> = Section::ALL
        .iter()
        .map(|s| {
            let fields: Vec<Value> = Field::all()
                .into_iter()
                .filter(|f| f.section() == *s)
                .map(|f| json!({ "key": f.key(), "path": f.path(), "kind": f.kind().name() }))
                .collect();
            json!({ "key": s.key(), "doc": s.doc().name(), "fields": fields })
        })
        .collect();
    let collections: Vec<Value> = Collection::ALL
        .iter()
        .map(|c| {
            let fields: Vec<Value> = ItemField::all()
                .into_iter()
                .filter(|f| f.collection() == *c)
                .map(|f| json!({ "key": f.key(), "kind": f.kind().name() }))
                .collect();
            json!({
                "name": c.name(),
                "path": c.path(),
                "doc": c.doc().name(),
                "fields": fields,
            })
        })
        .collect();
    json!({
        "version": model::SCHEMA_VERSION,
        "statuses": Status::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "sections": sections,
        "collections": collections,
    })
}

fn raw_json(v: &model::RawValue) -> Value {
    use model::RawValue;
    match v {
        RawValue::Str(s) | RawValue::Text(s) => json!(s),
        RawValue::Int(i) | RawValue::Timestamp(i) | RawValue::Counter(i) => json!(i),
        RawValue::Uint(u) => json!(u),
        RawValue::F64(f) => json!(f),
        RawValue::Bool(b) => json!(b),
        RawValue::Bytes(b) => json!({ "$bytes_len": b.len() }),
        RawValue::Map => json!({}),
        RawValue::List => json!([]),
        RawValue::Unknown => Value::Null,
    }
}

/// Marks a stored sync state that carries acknowledged heads.
const STATE_MAGIC: &[u8; 4] = b"CSS1";

/// `CSS1`, a u16 count of heads, the heads (32 bytes each), then
/// automerge's sync state.
fn wrap_state(state: &[u8], acked: &[automerge::ChangeHash]) -> Vec<u8> {
    let n = acked.len().min(usize::from(u16::MAX));
    let mut out = Vec::with_capacity(6 + 32 * n + state.len());
    out.extend_from_slice(STATE_MAGIC);
    // `n` is capped to u16 above.
    out.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes());
    for h in &acked[..n] {
        out.extend_from_slice(&h.0);
    }
    out.extend_from_slice(state);
    out
}

/// Splits what [`wrap_state`] wrote; a plain automerge state (older
/// storage) comes back with no heads. Malformed input gives no heads and the
/// rest as the state, which the engine's guards then check.
fn unwrap_state(blob: &[u8]) -> (Vec<u8>, Vec<automerge::ChangeHash>) {
    let Some(rest) = blob.strip_prefix(STATE_MAGIC) else {
        return (blob.to_vec(), Vec::new());
    };
    let Some((count, rest)) = rest.split_at_checked(2) else {
        return (Vec::new(), Vec::new());
    };
    let n = usize::from(u16::from_be_bytes([count[0], count[1]]));
    let Some((heads, state)) = rest.split_at_checked(32 * n) else {
        return (Vec::new(), Vec::new());
    };
    let heads = heads
        .chunks_exact(32)
        .filter_map(|c| <[u8; 32]>::try_from(c).ok())
        .map(automerge::ChangeHash)
        .collect();
    (state.to_vec(), heads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_sync_state_keeps_acknowledged_heads() {
        let heads = vec![
            automerge::ChangeHash([7; 32]),
            automerge::ChangeHash([9; 32]),
        ];
        let blob = wrap_state(b"state", &heads);
        assert_eq!(unwrap_state(&blob), (b"state".to_vec(), heads));
        // Older storage: a plain state.
        assert_eq!(unwrap_state(b"plain"), (b"plain".to_vec(), vec![]));
        // Truncated: nothing trusted.
        assert_eq!(unwrap_state(&blob[..10]), (vec![], vec![]));
    }
}
