//! Golden vectors: frames captured from the stock JS automerge-repo 2.5.6
//! (see `tests/golden/README.md` for exactly how), decoded by our codec and
//! compared field by field with cbor-x's own decoding of the same bytes.
//! Then a round-trip property test for every message type.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use sync_core::ids::{DocumentId, PeerId, StorageId};
use sync_core::protocol::{self, Message, PeerMetadata, RemoteHeads};

/// Our decoded message, written the way automerge-repo names its fields.
fn to_wire_json(m: &Message) -> Value {
    let mut o = Map::new();
    o.insert("type".into(), json!(m.type_name()));
    let b = |bytes: &[u8]| json!({ "$bytes": hex::encode(bytes) });
    let meta = |md: &Option<PeerMetadata>| {
        md.as_ref().map(|md| {
            let mut o = Map::new();
            if let Some(s) = &md.storage_id {
                o.insert("storageId".into(), json!(s.as_str()));
            }
            o.insert("isEphemeral".into(), json!(md.is_ephemeral));
            Value::Object(o)
        })
    };
    match m {
        Message::Join {
            sender_id,
            supported_protocol_versions,
            metadata,
        } => {
            o.insert("senderId".into(), json!(sender_id.as_str()));
            o.insert(
                "supportedProtocolVersions".into(),
                json!(supported_protocol_versions),
            );
            if let Some(md) = meta(metadata) {
                o.insert("peerMetadata".into(), md);
            }
        }
        Message::Peer {
            sender_id,
            target_id,
            selected_protocol_version,
            metadata,
        } => {
            o.insert("senderId".into(), json!(sender_id.as_str()));
            o.insert("targetId".into(), json!(target_id.as_str()));
            o.insert(
                "selectedProtocolVersion".into(),
                json!(selected_protocol_version),
            );
            if let Some(md) = meta(metadata) {
                o.insert("peerMetadata".into(), md);
            }
        }
        Message::Error {
            sender_id,
            target_id,
            message,
        } => {
            if let Some(s) = sender_id {
                o.insert("senderId".into(), json!(s.as_str()));
            }
            if let Some(t) = target_id {
                o.insert("targetId".into(), json!(t.as_str()));
            }
            o.insert("message".into(), json!(message));
        }
        Message::Leave { sender_id } => {
            o.insert("senderId".into(), json!(sender_id.as_str()));
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
            o.insert("senderId".into(), json!(sender_id.as_str()));
            o.insert("targetId".into(), json!(target_id.as_str()));
            o.insert("documentId".into(), json!(document_id.to_string()));
            o.insert("data".into(), b(data));
        }
        Message::DocUnavailable {
            sender_id,
            target_id,
            document_id,
        } => {
            o.insert("senderId".into(), json!(sender_id.as_str()));
            o.insert("targetId".into(), json!(target_id.as_str()));
            o.insert("documentId".into(), json!(document_id.to_string()));
        }
        Message::Ephemeral {
            sender_id,
            target_id,
            document_id,
            count,
            session_id,
            data,
        } => {
            o.insert("senderId".into(), json!(sender_id.as_str()));
            o.insert("targetId".into(), json!(target_id.as_str()));
            o.insert("documentId".into(), json!(document_id.to_string()));
            o.insert("count".into(), json!(count));
            o.insert("sessionId".into(), json!(session_id));
            o.insert("data".into(), b(data));
        }
        Message::RemoteSubscriptionChange {
            sender_id,
            target_id,
            add,
            remove,
        } => {
            o.insert("senderId".into(), json!(sender_id.as_str()));
            o.insert("targetId".into(), json!(target_id.as_str()));
            if !add.is_empty() {
                o.insert(
                    "add".into(),
                    json!(add.iter().map(StorageId::as_str).collect::<Vec<_>>()),
                );
            }
            if !remove.is_empty() {
                o.insert(
                    "remove".into(),
                    json!(remove.iter().map(StorageId::as_str).collect::<Vec<_>>()),
                );
            }
        }
        Message::RemoteHeadsChanged {
            sender_id,
            target_id,
            document_id,
            new_heads,
        } => {
            o.insert("senderId".into(), json!(sender_id.as_str()));
            o.insert("targetId".into(), json!(target_id.as_str()));
            o.insert("documentId".into(), json!(document_id.to_string()));
            let mut nh = Map::new();
            for (k, v) in new_heads {
                nh.insert(
                    k.as_str().into(),
                    json!({ "heads": v.heads, "timestamp": v.timestamp }),
                );
            }
            o.insert("newHeads".into(), Value::Object(nh));
        }
    }
    Value::Object(o)
}

/// cbor-x's decoding with `undefined` fields dropped (we treat them as
/// absent) and float timestamps as integers.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, v)| v.get("$undefined").is_none())
                .map(|(k, v)| (k.clone(), normalize(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Number(n) if n.is_f64() => json!(n.as_f64().unwrap() as u64),
        other => other.clone(),
    }
}

fn vectors() -> Vec<(String, Vec<u8>, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("hex") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let bytes = hex::decode(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(path.with_extension("json")).unwrap())
                .unwrap();
        out.push((name, bytes, json));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_message_type_has_a_golden_vector() {
    let names: Vec<String> = vectors().into_iter().map(|v| v.0).collect();
    for ty in [
        "join",
        "peer",
        "request",
        "sync",
        "doc-unavailable",
        "ephemeral",
        "error",
        "leave",
        "remote-subscription-change",
        "remote-heads-changed",
    ] {
        assert!(
            names
                .iter()
                .any(|n| n.rsplit_once('-').map(|x| x.0) == Some(ty)),
            "no golden vector for {ty}: {names:?}"
        );
    }
}

#[test]
fn golden_vectors_decode_to_what_cbor_x_decodes() {
    let vs = vectors();
    assert!(vs.len() >= 20);
    for (name, bytes, json) in vs {
        let msg = protocol::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(to_wire_json(&msg), normalize(&json), "{name}");
        // Our encoding of it decodes to the same message.
        let again = protocol::decode(&protocol::encode(&msg)).unwrap();
        assert_eq!(again, msg, "{name} round trip");
    }
}

#[test]
fn golden_sync_data_is_a_real_automerge_sync_message() {
    for (name, bytes, _) in vectors() {
        if let Message::Sync { data, .. } | Message::Request { data, .. } =
            protocol::decode(&bytes).unwrap()
        {
            automerge::sync::Message::decode(&data)
                .unwrap_or_else(|e| panic!("{name}: sync data does not decode: {e}"));
        }
    }
}

#[test]
fn golden_heads_are_bs58check_change_hashes() {
    let (_, bytes, _) = vectors()
        .into_iter()
        .find(|v| v.0 == "remote-heads-changed-2")
        .unwrap();
    let Message::RemoteHeadsChanged { new_heads, .. } = protocol::decode(&bytes).unwrap() else {
        panic!("not remote-heads-changed");
    };
    let heads = &new_heads.values().next().unwrap().heads;
    let hash = protocol::decode_head(&heads[0]).expect("a change hash");
    assert_eq!(protocol::encode_head(&hash), heads[0]);
}

// ---- round trip of every message type -----------------------------------

fn peer() -> impl Strategy<Value = PeerId> {
    "[a-z0-9:_-]{1,40}".prop_map(|s| PeerId::new(s).unwrap())
}
fn storage() -> impl Strategy<Value = StorageId> {
    "[a-f0-9-]{1,36}".prop_map(|s| StorageId::new(s).unwrap())
}
fn doc() -> impl Strategy<Value = DocumentId> {
    any::<[u8; 16]>().prop_map(DocumentId::from_bytes)
}
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..200)
}
fn metadata() -> impl Strategy<Value = Option<PeerMetadata>> {
    proptest::option::of((proptest::option::of(storage()), any::<bool>()).prop_map(
        |(storage_id, is_ephemeral)| PeerMetadata {
            storage_id,
            is_ephemeral,
        },
    ))
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            peer(),
            proptest::collection::vec("[0-9]{1,3}", 0..4),
            metadata()
        )
            .prop_map(
                |(sender_id, supported_protocol_versions, metadata)| Message::Join {
                    sender_id,
                    supported_protocol_versions,
                    metadata
                }
            ),
        (peer(), peer(), "[0-9]{1,3}", metadata()).prop_map(|(s, t, v, metadata)| {
            Message::Peer {
                sender_id: s,
                target_id: t,
                selected_protocol_version: v,
                metadata,
            }
        }),
        (
            proptest::option::of(peer()),
            proptest::option::of(peer()),
            ".{0,50}"
        )
            .prop_map(|(sender_id, target_id, message)| Message::Error {
                sender_id,
                target_id,
                message
            }),
        peer().prop_map(|sender_id| Message::Leave { sender_id }),
        (peer(), peer(), doc(), bytes()).prop_map(|(s, t, d, data)| Message::Request {
            sender_id: s,
            target_id: t,
            document_id: d,
            data
        }),
        (peer(), peer(), doc(), bytes()).prop_map(|(s, t, d, data)| Message::Sync {
            sender_id: s,
            target_id: t,
            document_id: d,
            data
        }),
        (peer(), peer(), doc()).prop_map(|(s, t, d)| Message::DocUnavailable {
            sender_id: s,
            target_id: t,
            document_id: d
        }),
        (
            peer(),
            peer(),
            doc(),
            any::<u32>(),
            "[a-z0-9]{1,20}",
            bytes()
        )
            .prop_map(|(s, t, d, count, session_id, data)| Message::Ephemeral {
                sender_id: s,
                target_id: t,
                document_id: d,
                count: u64::from(count),
                session_id,
                data
            }),
        (
            peer(),
            peer(),
            proptest::collection::vec(storage(), 0..3),
            proptest::collection::vec(storage(), 0..3)
        )
            .prop_map(|(s, t, add, remove)| Message::RemoteSubscriptionChange {
                sender_id: s,
                target_id: t,
                add,
                remove
            }),
        (
            peer(),
            peer(),
            doc(),
            proptest::collection::btree_map(
                storage(),
                (
                    proptest::collection::vec(any::<[u8; 32]>(), 0..3),
                    any::<u32>()
                ),
                0..3
            )
        )
            .prop_map(|(s, t, d, heads)| Message::RemoteHeadsChanged {
                sender_id: s,
                target_id: t,
                document_id: d,
                new_heads: heads
                    .into_iter()
                    .map(|(k, (hs, ts))| (
                        k,
                        RemoteHeads {
                            heads: hs
                                .into_iter()
                                .map(|h| protocol::encode_head(&automerge::ChangeHash(h)))
                                .collect(),
                            timestamp: u64::from(ts) * 1000,
                        }
                    ))
                    .collect::<BTreeMap<_, _>>(),
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_message_type_round_trips(msg in message()) {
        let bytes = protocol::encode(&msg);
        prop_assert_eq!(protocol::decode(&bytes).unwrap(), msg);
    }

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = protocol::decode(&bytes);
    }
}
