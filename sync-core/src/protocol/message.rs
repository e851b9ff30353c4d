//! automerge-repo's wire messages (protocol version "1") and their CBOR codec.
//!
//! Each WebSocket frame carries one CBOR map with a `type` key. Field names are
//! those of automerge-repo's `network/messages.ts`. Unknown keys are ignored so
//! that newer peers can add fields; unknown message types are an error value.
//!
//! The decoder works on bytes that already passed [`crate::guard::check_cbor`]
//! (depth and length caps), but it does not rely on that: every read is
//! bounds-checked by minicbor and every failure is a [`DecodeError`].

use std::collections::BTreeMap;

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

use crate::ids::{DocumentId, IdError, PeerId, StorageId};

/// The only protocol version casesync speaks.
pub const PROTOCOL_VERSION: &str = "1";

/// Metadata a peer sends about itself in `join` and `peer`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerMetadata {
    /// Present when the peer has persistent storage. Sync state is kept per
    /// storage id, so a reconnect costs what changed rather than everything.
    pub storage_id: Option<StorageId>,
    pub is_ephemeral: bool,
}

/// The heads a peer reports for a document in one storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteHeads {
    /// Change hashes, bs58check encoded as automerge-repo sends them (see
    /// [`encode_head`]).
    pub heads: Vec<String>,
    /// Milliseconds since the Unix epoch, as given by the sender.
    pub timestamp: u64,
}

/// Encodes a change hash as automerge-repo writes heads in
/// `remote-heads-changed`: bs58check of the 32 bytes.
pub fn encode_head(hash: &automerge::ChangeHash) -> String {
    bs58::encode(hash.0).with_check().into_string()
}

/// Decodes a head written by [`encode_head`]; `None` if it is not one.
pub fn decode_head(s: &str) -> Option<automerge::ChangeHash> {
    // 32 bytes + 4 checksum bytes is at most 50 base58 characters.
    if s.len() > 60 {
        return None;
    }
    let bytes = bs58::decode(s).with_check(None).into_vec().ok()?;
    let arr: [u8; 32] = bytes.as_slice().try_into().ok()?;
    Some(automerge::ChangeHash(arr))
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Join {
        sender_id: PeerId,
        supported_protocol_versions: Vec<String>,
        metadata: Option<PeerMetadata>,
    },
    Peer {
        sender_id: PeerId,
        target_id: PeerId,
        selected_protocol_version: String,
        metadata: Option<PeerMetadata>,
    },
    Error {
        sender_id: Option<PeerId>,
        target_id: Option<PeerId>,
        message: String,
    },
    Leave {
        sender_id: PeerId,
    },
    Request {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
        data: Vec<u8>,
    },
    Sync {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
        data: Vec<u8>,
    },
    DocUnavailable {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
    },
    Ephemeral {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
        count: u64,
        session_id: String,
        data: Vec<u8>,
    },
    RemoteSubscriptionChange {
        sender_id: PeerId,
        target_id: PeerId,
        add: Vec<StorageId>,
        remove: Vec<StorageId>,
    },
    RemoteHeadsChanged {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
        new_heads: BTreeMap<StorageId, RemoteHeads>,
    },
}

impl Message {
    /// The `type` string on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Join { .. } => "join",
            Message::Peer { .. } => "peer",
            Message::Error { .. } => "error",
            Message::Leave { .. } => "leave",
            Message::Request { .. } => "request",
            Message::Sync { .. } => "sync",
            Message::DocUnavailable { .. } => "doc-unavailable",
            Message::Ephemeral { .. } => "ephemeral",
            Message::RemoteSubscriptionChange { .. } => "remote-subscription-change",
            Message::RemoteHeadsChanged { .. } => "remote-heads-changed",
        }
    }

    /// The document this message is about, if any.
    pub fn document_id(&self) -> Option<&DocumentId> {
        match self {
            Message::Request { document_id, .. }
            | Message::Sync { document_id, .. }
            | Message::DocUnavailable { document_id, .. }
            | Message::Ephemeral { document_id, .. }
            | Message::RemoteHeadsChanged { document_id, .. } => Some(document_id),
            _ => None,
        }
    }

    /// The announced sender, if the message has one.
    pub fn sender_id(&self) -> Option<&PeerId> {
        match self {
            Message::Join { sender_id, .. }
            | Message::Peer { sender_id, .. }
            | Message::Leave { sender_id }
            | Message::Request { sender_id, .. }
            | Message::Sync { sender_id, .. }
            | Message::DocUnavailable { sender_id, .. }
            | Message::Ephemeral { sender_id, .. }
            | Message::RemoteSubscriptionChange { sender_id, .. }
            | Message::RemoteHeadsChanged { sender_id, .. } => Some(sender_id),
            Message::Error { sender_id, .. } => sender_id.as_ref(),
        }
    }
}

/// Why a frame could not be decoded into a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed CBOR: {0}")]
    Cbor(String),
    #[error("a message must be a CBOR map")]
    NotAMap,
    #[error("indefinite-length items are not accepted")]
    Indefinite,
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `{field}` has the wrong type, expected {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("field `{0}` appears twice")]
    Duplicate(String),
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("field `{field}`: {source}")]
    BadId {
        field: &'static str,
        #[source]
        source: IdError,
    },
    #[error("trailing bytes after the message")]
    Trailing,
    #[error("a number in `{0}` is out of range")]
    OutOfRange(&'static str),
}

impl From<minicbor::decode::Error> for DecodeError {
    fn from(e: minicbor::decode::Error) -> Self {
        DecodeError::Cbor(e.to_string())
    }
}

/// A decoded value of one of the fields we know. Kept borrowed so decoding
/// allocates only what the final message keeps.
#[derive(Debug)]
enum Field<'b> {
    Str(&'b str),
    Bytes(&'b [u8]),
    Uint(u64),
    StrList(Vec<&'b str>),
    Metadata(PeerMetadata),
    Heads(BTreeMap<StorageId, RemoteHeads>),
    Ignored,
}

fn definite(len: Option<u64>) -> Result<u64, DecodeError> {
    len.ok_or(DecodeError::Indefinite)
}

/// Reads a byte string, accepting the typed-array tag 64 that some CBOR
/// encoders put in front of a `Uint8Array`.
fn read_bytes<'b>(d: &mut Decoder<'b>, field: &'static str) -> Result<&'b [u8], DecodeError> {
    if d.datatype()? == Type::Tag {
        let tag = d.tag()?;
        if tag.as_u64() != 64 {
            return Err(DecodeError::WrongType {
                field,
                expected: "bytes",
            });
        }
    }
    match d.datatype()? {
        Type::Bytes => Ok(d.bytes()?),
        _ => Err(DecodeError::WrongType {
            field,
            expected: "bytes",
        }),
    }
}

fn read_str<'b>(d: &mut Decoder<'b>, field: &'static str) -> Result<&'b str, DecodeError> {
    match d.datatype()? {
        Type::String => Ok(d.str()?),
        _ => Err(DecodeError::WrongType {
            field,
            expected: "string",
        }),
    }
}

/// Reads a non-negative integer. JS encoders may write large integers (a
/// millisecond timestamp) as a float, so integral floats are accepted too.
fn read_uint(d: &mut Decoder<'_>, field: &'static str) -> Result<u64, DecodeError> {
    match d.datatype()? {
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => Ok(d.u64()?),
        Type::F16 | Type::F32 | Type::F64 => {
            let f = d.f64()?;
            // 2^53: the largest integer a JS number holds exactly.
            if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= 9_007_199_254_740_992.0 {
                // The checks above make the conversion exact.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(f as u64)
            } else {
                Err(DecodeError::OutOfRange(field))
            }
        }
        _ => Err(DecodeError::WrongType {
            field,
            expected: "unsigned integer",
        }),
    }
}

fn read_str_list<'b>(
    d: &mut Decoder<'b>,
    field: &'static str,
) -> Result<Vec<&'b str>, DecodeError> {
    if d.datatype()? != Type::Array {
        return Err(DecodeError::WrongType {
            field,
            expected: "array of strings",
        });
    }
    let n = definite(d.array()?)?;
    // The guard bounded container lengths; still never trust `n` for
    // preallocation beyond what the input could hold.
    let mut out = Vec::with_capacity(n.min(64) as usize);
    for _ in 0..n {
        out.push(read_str(d, field)?);
    }
    Ok(out)
}

fn read_metadata(d: &mut Decoder<'_>) -> Result<PeerMetadata, DecodeError> {
    const FIELD: &str = "peerMetadata";
    if d.datatype()? != Type::Map {
        return Err(DecodeError::WrongType {
            field: FIELD,
            expected: "map",
        });
    }
    let n = definite(d.map()?)?;
    let mut meta = PeerMetadata::default();
    for _ in 0..n {
        let key = read_str(d, FIELD)?;
        match key {
            "storageId" => match d.datatype()? {
                // automerge-repo writes `undefined` when a peer has no storage.
                Type::Undefined | Type::Null => d.skip()?,
                _ => {
                    let s = read_str(d, "peerMetadata.storageId")?;
                    meta.storage_id =
                        Some(StorageId::new(s).map_err(|source| DecodeError::BadId {
                            field: "peerMetadata.storageId",
                            source,
                        })?);
                }
            },
            "isEphemeral" => match d.datatype()? {
                Type::Bool => meta.is_ephemeral = d.bool()?,
                Type::Undefined | Type::Null => d.skip()?,
                _ => {
                    return Err(DecodeError::WrongType {
                        field: "peerMetadata.isEphemeral",
                        expected: "bool",
                    })
                }
            },
            _ => d.skip()?,
        }
    }
    Ok(meta)
}

fn read_new_heads(d: &mut Decoder<'_>) -> Result<BTreeMap<StorageId, RemoteHeads>, DecodeError> {
    const FIELD: &str = "newHeads";
    if d.datatype()? != Type::Map {
        return Err(DecodeError::WrongType {
            field: FIELD,
            expected: "map",
        });
    }
    let n = definite(d.map()?)?;
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let storage = read_str(d, FIELD)?;
        let storage = StorageId::new(storage).map_err(|source| DecodeError::BadId {
            field: FIELD,
            source,
        })?;
        if d.datatype()? != Type::Map {
            return Err(DecodeError::WrongType {
                field: FIELD,
                expected: "map of {heads, timestamp}",
            });
        }
        let m = definite(d.map()?)?;
        let mut heads = None;
        let mut timestamp = None;
        for _ in 0..m {
            match read_str(d, FIELD)? {
                "heads" => {
                    heads = Some(
                        read_str_list(d, "newHeads.heads")?
                            .into_iter()
                            .map(str::to_owned)
                            .collect(),
                    )
                }
                "timestamp" => timestamp = Some(read_uint(d, "newHeads.timestamp")?),
                _ => d.skip()?,
            }
        }
        out.insert(
            storage,
            RemoteHeads {
                heads: heads.ok_or(DecodeError::Missing("newHeads.heads"))?,
                timestamp: timestamp.ok_or(DecodeError::Missing("newHeads.timestamp"))?,
            },
        );
    }
    Ok(out)
}

/// Decodes one frame. The whole input must be exactly one message.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut d = Decoder::new(bytes);
    if d.datatype()? != Type::Map {
        return Err(DecodeError::NotAMap);
    }
    let n = definite(d.map()?)?;
    let mut fields: BTreeMap<&str, Field<'_>> = BTreeMap::new();
    for _ in 0..n {
        let key = read_str(&mut d, "<key>")?;
        if matches!(d.datatype()?, Type::Undefined | Type::Null) {
            // automerge-repo writes `undefined` for absent optional fields.
            d.skip()?;
            continue;
        }
        let value = match key {
            "type"
            | "senderId"
            | "targetId"
            | "documentId"
            | "selectedProtocolVersion"
            | "message"
            | "sessionId" => Field::Str(read_str(&mut d, static_name(key))?),
            "data" => match d.datatype()? {
                Type::Undefined | Type::Null => {
                    d.skip()?;
                    Field::Ignored
                }
                _ => Field::Bytes(read_bytes(&mut d, "data")?),
            },
            "count" => Field::Uint(read_uint(&mut d, "count")?),
            "supportedProtocolVersions" => {
                Field::StrList(read_str_list(&mut d, "supportedProtocolVersions")?)
            }
            "add" | "remove" => match d.datatype()? {
                Type::Undefined | Type::Null => {
                    d.skip()?;
                    Field::Ignored
                }
                _ => Field::StrList(read_str_list(&mut d, static_name(key))?),
            },
            "peerMetadata" => match d.datatype()? {
                Type::Undefined | Type::Null => {
                    d.skip()?;
                    Field::Ignored
                }
                _ => Field::Metadata(read_metadata(&mut d)?),
            },
            "newHeads" => Field::Heads(read_new_heads(&mut d)?),
            _ => {
                d.skip()?;
                Field::Ignored
            }
        };
        if matches!(value, Field::Ignored) {
            continue;
        }
        if fields.insert(key, value).is_some() {
            return Err(DecodeError::Duplicate(key.to_owned()));
        }
    }
    if d.position() != bytes.len() {
        return Err(DecodeError::Trailing);
    }
    Fields(fields).into_message()
}

/// Maps a known key to a `'static` name for error values.
fn static_name(key: &str) -> &'static str {
    match key {
        "type" => "type",
        "senderId" => "senderId",
        "targetId" => "targetId",
        "documentId" => "documentId",
        "selectedProtocolVersion" => "selectedProtocolVersion",
        "message" => "message",
        "sessionId" => "sessionId",
        "add" => "add",
        "remove" => "remove",
        _ => "<field>",
    }
}

struct Fields<'b>(BTreeMap<&'b str, Field<'b>>);

impl<'b> Fields<'b> {
    fn take(&mut self, key: &'static str) -> Option<Field<'b>> {
        self.0.remove(key)
    }

    fn str(&mut self, key: &'static str) -> Result<&'b str, DecodeError> {
        match self.take(key) {
            Some(Field::Str(s)) => Ok(s),
            Some(_) => Err(DecodeError::WrongType {
                field: key,
                expected: "string",
            }),
            None => Err(DecodeError::Missing(key)),
        }
    }

    fn opt_str(&mut self, key: &'static str) -> Result<Option<&'b str>, DecodeError> {
        match self.take(key) {
            None => Ok(None),
            Some(Field::Str(s)) => Ok(Some(s)),
            Some(_) => Err(DecodeError::WrongType {
                field: key,
                expected: "string",
            }),
        }
    }

    fn peer(&mut self, key: &'static str) -> Result<PeerId, DecodeError> {
        PeerId::new(self.str(key)?).map_err(|source| DecodeError::BadId { field: key, source })
    }

    fn opt_peer(&mut self, key: &'static str) -> Result<Option<PeerId>, DecodeError> {
        self.opt_str(key)?
            .map(|s| PeerId::new(s).map_err(|source| DecodeError::BadId { field: key, source }))
            .transpose()
    }

    fn document(&mut self) -> Result<DocumentId, DecodeError> {
        DocumentId::parse_url_or_id(self.str("documentId")?).map_err(|source| DecodeError::BadId {
            field: "documentId",
            source,
        })
    }

    fn bytes(&mut self, key: &'static str) -> Result<Vec<u8>, DecodeError> {
        match self.take(key) {
            Some(Field::Bytes(b)) => Ok(b.to_vec()),
            Some(_) => Err(DecodeError::WrongType {
                field: key,
                expected: "bytes",
            }),
            None => Err(DecodeError::Missing(key)),
        }
    }

    fn str_list(&mut self, key: &'static str) -> Result<Vec<&'b str>, DecodeError> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some(Field::StrList(l)) => Ok(l),
            Some(_) => Err(DecodeError::WrongType {
                field: key,
                expected: "array of strings",
            }),
        }
    }

    fn storage_list(&mut self, key: &'static str) -> Result<Vec<StorageId>, DecodeError> {
        self.str_list(key)?
            .into_iter()
            .map(|s| StorageId::new(s).map_err(|source| DecodeError::BadId { field: key, source }))
            .collect()
    }

    fn metadata(&mut self) -> Option<PeerMetadata> {
        match self.take("peerMetadata") {
            Some(Field::Metadata(m)) => Some(m),
            _ => None,
        }
    }

    fn into_message(mut self) -> Result<Message, DecodeError> {
        let ty = self.str("type")?;
        let msg = match ty {
            "join" => Message::Join {
                sender_id: self.peer("senderId")?,
                supported_protocol_versions: self
                    .str_list("supportedProtocolVersions")?
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
                metadata: self.metadata(),
            },
            "peer" => Message::Peer {
                sender_id: self.peer("senderId")?,
                target_id: self.peer("targetId")?,
                selected_protocol_version: self.str("selectedProtocolVersion")?.to_owned(),
                metadata: self.metadata(),
            },
            "error" => Message::Error {
                sender_id: self.opt_peer("senderId")?,
                target_id: self.opt_peer("targetId")?,
                message: self.opt_str("message")?.unwrap_or_default().to_owned(),
            },
            "leave" => Message::Leave {
                sender_id: self.peer("senderId")?,
            },
            "request" => Message::Request {
                sender_id: self.peer("senderId")?,
                target_id: self.peer("targetId")?,
                document_id: self.document()?,
                data: self.bytes("data")?,
            },
            "sync" => Message::Sync {
                sender_id: self.peer("senderId")?,
                target_id: self.peer("targetId")?,
                document_id: self.document()?,
                data: self.bytes("data")?,
            },
            "doc-unavailable" => Message::DocUnavailable {
                sender_id: self.peer("senderId")?,
                target_id: self.peer("targetId")?,
                document_id: self.document()?,
            },
            "ephemeral" => Message::Ephemeral {
                sender_id: self.peer("senderId")?,
                target_id: self.peer("targetId")?,
                document_id: self.document()?,
                count: match self.take("count") {
                    Some(Field::Uint(c)) => c,
                    Some(_) => {
                        return Err(DecodeError::WrongType {
                            field: "count",
                            expected: "unsigned integer",
                        })
                    }
                    None => return Err(DecodeError::Missing("count")),
                },
                session_id: self.str("sessionId")?.to_owned(),
                data: self.bytes("data")?,
            },
            "remote-subscription-change" => Message::RemoteSubscriptionChange {
                sender_id: self.peer("senderId")?,
                target_id: self.peer("targetId")?,
                add: self.storage_list("add")?,
                remove: self.storage_list("remove")?,
            },
            "remote-heads-changed" => Message::RemoteHeadsChanged {
                sender_id: self.peer("senderId")?,
                target_id: self.peer("targetId")?,
                document_id: self.document()?,
                new_heads: match self.take("newHeads") {
                    Some(Field::Heads(h)) => h,
                    _ => return Err(DecodeError::Missing("newHeads")),
                },
            },
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        };
        Ok(msg)
    }
}

/// Encodes a message as automerge-repo does: a definite-length map with string
/// keys, byte strings untagged, in the key order automerge-repo's own
/// encoder produces (so our frames are byte-identical to theirs).
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    let mut e = Encoder::new(&mut buf);
    let r: Result<(), minicbor::encode::Error<std::convert::Infallible>> = (|| {
        match msg {
            Message::Join {
                sender_id,
                supported_protocol_versions,
                metadata,
            } => {
                e.map(3 + u64::from(metadata.is_some()))?;
                e.str("type")?.str("join")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                if let Some(m) = metadata {
                    e.str("peerMetadata")?;
                    encode_metadata(&mut e, m)?;
                }
                e.str("supportedProtocolVersions")?;
                e.array(supported_protocol_versions.len() as u64)?;
                for v in supported_protocol_versions {
                    e.str(v)?;
                }
            }
            Message::Peer {
                sender_id,
                target_id,
                selected_protocol_version,
                metadata,
            } => {
                e.map(4 + u64::from(metadata.is_some()))?;
                e.str("type")?.str("peer")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                if let Some(m) = metadata {
                    e.str("peerMetadata")?;
                    encode_metadata(&mut e, m)?;
                }
                e.str("selectedProtocolVersion")?
                    .str(selected_protocol_version)?;
                e.str("targetId")?.str(target_id.as_str())?;
            }
            Message::Error {
                sender_id,
                target_id,
                message,
            } => {
                e.map(2 + u64::from(sender_id.is_some()) + u64::from(target_id.is_some()))?;
                e.str("type")?.str("error")?;
                if let Some(s) = sender_id {
                    e.str("senderId")?.str(s.as_str())?;
                }
                e.str("message")?.str(message)?;
                if let Some(t) = target_id {
                    e.str("targetId")?.str(t.as_str())?;
                }
            }
            Message::Leave { sender_id } => {
                e.map(2)?;
                e.str("type")?.str("leave")?;
                e.str("senderId")?.str(sender_id.as_str())?;
            }
            Message::Request {
                sender_id,
                target_id,
                document_id,
                data,
            }
            | Message::Sync {
                sender_id,
                target_id,
                document_id,
                data,
            } => {
                e.map(5)?;
                e.str("type")?.str(msg.type_name())?;
                e.str("documentId")?.str(&document_id.to_string())?;
                e.str("data")?.bytes(data)?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("targetId")?.str(target_id.as_str())?;
            }
            Message::DocUnavailable {
                sender_id,
                target_id,
                document_id,
            } => {
                e.map(4)?;
                e.str("type")?.str("doc-unavailable")?;
                e.str("documentId")?.str(&document_id.to_string())?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("targetId")?.str(target_id.as_str())?;
            }
            Message::Ephemeral {
                sender_id,
                target_id,
                document_id,
                count,
                session_id,
                data,
            } => {
                e.map(7)?;
                e.str("type")?.str("ephemeral")?;
                e.str("targetId")?.str(target_id.as_str())?;
                e.str("count")?.u64(*count)?;
                e.str("sessionId")?.str(session_id)?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("documentId")?.str(&document_id.to_string())?;
                e.str("data")?.bytes(data)?;
            }
            Message::RemoteSubscriptionChange {
                sender_id,
                target_id,
                add,
                remove,
            } => {
                e.map(3 + u64::from(!add.is_empty()) + u64::from(!remove.is_empty()))?;
                e.str("type")?.str("remote-subscription-change")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("targetId")?.str(target_id.as_str())?;
                for (key, list) in [("add", add), ("remove", remove)] {
                    if !list.is_empty() {
                        e.str(key)?.array(list.len() as u64)?;
                        for s in list {
                            e.str(s.as_str())?;
                        }
                    }
                }
            }
            Message::RemoteHeadsChanged {
                sender_id,
                target_id,
                document_id,
                new_heads,
            } => {
                e.map(5)?;
                e.str("type")?.str("remote-heads-changed")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("targetId")?.str(target_id.as_str())?;
                e.str("documentId")?.str(&document_id.to_string())?;
                e.str("newHeads")?.map(new_heads.len() as u64)?;
                for (storage, h) in new_heads {
                    e.str(storage.as_str())?.map(2)?;
                    e.str("heads")?.array(h.heads.len() as u64)?;
                    for head in &h.heads {
                        e.str(head)?;
                    }
                    e.str("timestamp")?.u64(h.timestamp)?;
                }
            }
        }
        Ok(())
    })();
    // minicbor only fails on a failing writer (a Vec never fails) or on a
    // custom `Encode` impl reporting an error (we use none).
    debug_assert!(r.is_ok(), "encoding into a Vec cannot fail");
    drop(r);
    buf
}

fn encode_metadata<W: minicbor::encode::Write>(
    e: &mut Encoder<W>,
    m: &PeerMetadata,
) -> Result<(), minicbor::encode::Error<W::Error>> {
    e.map(1 + u64::from(m.storage_id.is_some()))?;
    if let Some(s) = &m.storage_id {
        e.str("storageId")?.str(s.as_str())?;
    }
    e.str("isEphemeral")?.bool(m.is_ephemeral)?;
    Ok(())
}
