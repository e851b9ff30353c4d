//! The seed corpus: real traffic, the golden frames from stock JS, and the
//! hostile inputs of `sync-core/tests/guard_hostile.rs`. `make-seeds`
//! writes them to `fuzz/corpus/<target>/`.
//!
//! Names starting with `hostile-` are inputs every entry point must refuse;
//! `sync-core/tests/fuzz_regressions.rs` checks that they are.

use std::io::Write;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ObjType, ReadDoc, ROOT};
use sha2::{Digest, Sha256};
use sync_core::ids::{DocumentId, PeerId};
use sync_core::protocol::{self, Message};

use crate::token::{
    sign, EDDSA_KID, HS256_KID, MODE_FIRST_MESSAGE, MODE_REQUEST_HEAD, MODE_SIGNED_EDDSA,
    MODE_SIGNED_HS256, MODE_TOKEN, NOW,
};
use crate::{peer_id, seeded_case, DOCUMENT, PEER, SERVER_PEER};

pub const MIB: usize = 1024 * 1024;
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// One seed: a file name (without directory) and its bytes.
pub type Seed = (String, Vec<u8>);

/// Ten bytes that make automerge 0.12 divide by zero: a Bloom filter with
/// one entry and zero bits per entry.
pub const BLOOM_DIVIDE_BY_ZERO: [u8; 10] = [0x42, 0, 0, 1, 0, 3, 1, 0, 7, 0];
/// A Bloom filter with `num_probes = u32::MAX`: automerge 0.12 reserves
/// 16 GiB for every hash it tests.
pub const BLOOM_16_GIB: [u8; 15] = [
    0x42, 0, 0, 1, 0, 8, 1, 8, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0,
];

pub fn uleb(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

pub fn sleb(mut value: i64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if (value == 0 && byte & 0x40 == 0) || (value == -1 && byte & 0x40 != 0) {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The checksum automerge expects in a chunk header.
pub fn checksum(chunk_type: u8, body: &[u8]) -> [u8; 4] {
    let mut prefix = vec![chunk_type];
    uleb(body.len() as u64, &mut prefix);
    let hash = Sha256::new()
        .chain_update(&prefix)
        .chain_update(body)
        .finalize();
    [hash[0], hash[1], hash[2], hash[3]]
}

pub fn chunk(chunk_type: u8, body: &[u8], checksum: [u8; 4]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend(checksum);
    out.push(chunk_type);
    uleb(body.len() as u64, &mut out);
    out.extend(body);
    out
}

fn chunk_body(chunk: &[u8]) -> &[u8] {
    let mut pos = 9;
    let mut len = 0u64;
    let mut shift = 0;
    loop {
        let byte = chunk[pos];
        pos += 1;
        len |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    &chunk[pos..pos + len as usize]
}

pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

/// A peer's copy of the seeded case with its own edits.
pub fn peer_doc(actor: u8, edits: usize) -> Automerge {
    let mut doc = seeded_case().with_actor(ActorId::from([actor; 16].as_slice()));
    let mut tx = doc.transaction();
    let person = tx
        .get(ROOT, "person")
        .ok()
        .flatten()
        .map(|(_, id)| id)
        .expect("the template has a person section");
    for i in 0..edits {
        tx.put(&person, "family_name", format!("Коваленко {i}"))
            .expect("put");
    }
    let notes = tx
        .put_object(&person, "fuzz_notes", ObjType::Text)
        .expect("put text");
    tx.splice_text(&notes, 0, 0, "written by a peer")
        .expect("splice");
    tx.commit();
    doc
}

/// A real change whose compressed form inflates to `padding` bytes more than
/// it looks: automerge keeps bytes after a change's columns, and the
/// checksum is right, so automerge 0.12 accepts it.
pub fn compressed_change_bomb(padding: usize) -> Vec<u8> {
    let doc = peer_doc(0xb0, 1);
    let change = doc
        .get_changes(&seeded_case().get_heads())
        .pop()
        .expect("the peer made a change");
    let mut inflated = chunk_body(change.raw_bytes()).to_vec();
    inflated.resize(inflated.len() + padding, 0);
    chunk(2, &deflate(&inflated), checksum(1, &inflated))
}

/// A change chunk of about 50 bytes that declares `ops` operations through
/// run-length encoded columns.
pub fn run_length_op_bomb(ops: u64) -> Vec<u8> {
    let run = |value: &[u8]| {
        let mut column = Vec::new();
        sleb(ops as i64, &mut column);
        column.extend(value);
        column
    };
    let key = run(&[0x01, b'a']);
    let mut insert = Vec::new();
    uleb(ops, &mut insert);
    let action = run(&[0x01]);
    let value_meta = run(&[0x00]);
    let pred = run(&[0x00]);
    let mut body = vec![0x00, 0x01, b'x', 0x01, 0x01, 0x00, 0x00, 0x00, 0x05];
    let columns = [
        (0x15, &key),
        (0x34, &insert),
        (0x42, &action),
        (0x56, &value_meta),
        (0x70, &pred),
    ];
    for (spec, column) in columns {
        uleb(spec, &mut body);
        uleb(column.len() as u64, &mut body);
    }
    for (_, column) in columns {
        body.extend(column.iter());
    }
    chunk(1, &body, checksum(1, &body))
}

/// A document chunk with one DEFLATE-compressed ops column.
pub fn document_with_deflated_column(deflated: &[u8]) -> Vec<u8> {
    let mut body = vec![1, 1, 0xaa, 0, 0, 1];
    uleb(0x0a, &mut body);
    uleb(deflated.len() as u64, &mut body);
    body.extend(deflated);
    chunk(0, &body, checksum(0, &body))
}

/// A v1 sync message carrying `changes` and nothing else.
pub fn sync_message_with_changes(changes: Vec<Vec<u8>>) -> Vec<u8> {
    sync::Message {
        heads: Vec::new(),
        need: Vec::new(),
        have: Vec::new(),
        changes: changes.into(),
        flags: None,
        version: sync::MessageVersion::V1,
    }
    .encode()
}

/// A v1 sync message with one `have` whose Bloom filter is `bloom`.
pub fn sync_message_with_bloom(bloom: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x42, 0x00, 0x00, 0x01, 0x00];
    uleb(bloom.len() as u64, &mut bytes);
    bytes.extend(bloom);
    bytes.push(0x00);
    bytes
}

/// Hostile automerge sync messages (the `data` of a `sync` frame).
pub fn hostile_sync_messages() -> Vec<Seed> {
    let mut out: Vec<Seed> = vec![
        ("bloom-zero-bits".into(), BLOOM_DIVIDE_BY_ZERO.to_vec()),
        ("bloom-u32max-probes".into(), BLOOM_16_GIB.to_vec()),
    ];
    let blooms: [(&str, &[u8]); 6] = [
        ("bloom-zero-probes", &[0x01, 0x0a, 0x00, 0x00, 0x00]),
        (
            "bloom-u32max-entries-and-bits",
            &[
                0xff, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x07,
            ],
        ),
        ("bloom-4m-entries", &[0x80, 0x80, 0x80, 0x02, 0x0a, 0x07]),
        ("bloom-bits-mismatch", &[0x01, 0x0a, 0x07, 0x00]),
        ("bloom-trailing-bits", &[0x01, 0x0a, 0x07, 0x00, 0x00, 0x00]),
        (
            "bloom-over-u32",
            &[0x80, 0x80, 0x80, 0x80, 0x10, 0x0a, 0x07],
        ),
    ];
    out.extend(
        blooms
            .iter()
            .map(|(name, bloom)| (name.to_string(), sync_message_with_bloom(bloom))),
    );
    // 17 MiB from about 17 KiB: over max_decompressed_change_bytes (16 MiB).
    out.push((
        "deflate-bomb-17mib".into(),
        sync_message_with_changes(vec![compressed_change_bomb(17 * MIB)]),
    ));
    out.push((
        "rle-op-bomb-2pow40".into(),
        sync_message_with_changes(vec![run_length_op_bomb(1 << 40)]),
    ));
    out.push((
        "rle-op-bomb-200k".into(),
        sync_message_with_changes(vec![run_length_op_bomb(200_000)]),
    ));
    // Eleven changes of 100 000 ops each: every one within
    // max_ops_per_change, together over max_document_ops.
    out.push((
        "rle-op-bombs-over-document-cap".into(),
        sync_message_with_changes(vec![run_length_op_bomb(100_000); 11]),
    ));
    let mut column = Vec::new();
    sleb(1 << 40, &mut column);
    column.push(0x01);
    out.push((
        "document-deflated-rle-2pow40".into(),
        sync_message_with_changes(vec![document_with_deflated_column(&deflate(&column))]),
    ));
    // A change header claiming 2^60 bytes of body.
    let change = peer_doc(0xc0, 1)
        .get_changes(&seeded_case().get_heads())
        .pop()
        .expect("a change")
        .raw_bytes()
        .to_vec();
    let mut lying = change[..9].to_vec();
    uleb(1 << 60, &mut lying);
    out.push((
        "change-length-2pow60".into(),
        sync_message_with_changes(vec![lying]),
    ));
    out.push((
        "need-count-2pow63".into(),
        vec![
            0x42, 0x00, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
        ],
    ));
    out.push((
        "sync-state-as-message".into(),
        vec![0x43, 0x80, 0x80, 0x80, 0x80, 0x10],
    ));
    out.into_iter()
        .map(|(name, bytes)| (format!("hostile-{name}"), bytes))
        .collect()
}

/// Every message a device sends the server while two copies of the seeded
/// case sync: a fresh device, one with edits, and the server's own replies
/// (which a peer may echo back).
pub fn real_sync_messages() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut server = seeded_case();
    for (label, mut device) in [("fresh", Automerge::new()), ("edited", peer_doc(0x22, 3))] {
        let mut server_state = sync::State::new();
        let mut device_state = sync::State::new();
        for round in 0..6 {
            let to_server = device.generate_sync_message(&mut device_state);
            if let Some(message) = &to_server {
                let bytes = message.clone().encode();
                out.push((format!("real-{label}-device-{round}"), bytes.clone()));
                server
                    .receive_sync_message(&mut server_state, message.clone())
                    .expect("real traffic applies");
            }
            let to_device = server.generate_sync_message(&mut server_state);
            if let Some(message) = &to_device {
                out.push((
                    format!("real-{label}-server-{round}"),
                    message.clone().encode(),
                ));
                device
                    .receive_sync_message(&mut device_state, message.clone())
                    .expect("real traffic applies");
            }
            if to_server.is_none() && to_device.is_none() {
                break;
            }
        }
    }
    // A small compressed change automerge accepts (1 KiB of padding).
    out.push((
        "real-compressed-change".into(),
        sync_message_with_changes(vec![compressed_change_bomb(1024)]),
    ));
    out
}

/// The golden frames captured from stock JS automerge-repo.
pub fn golden_frames(golden_dir: &std::path::Path) -> Vec<Seed> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(golden_dir)
        .expect("the golden directory exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).expect("readable golden file");
        let bytes = hex::decode(text.trim()).expect("golden files are hex");
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a file name");
        out.push((format!("golden-{stem}"), bytes));
    }
    out
}

pub fn document_id() -> DocumentId {
    DocumentId::from_bytes(DOCUMENT)
}

/// A `sync` frame from [`PEER`] to the server carrying `data`.
pub fn sync_frame(data: Vec<u8>) -> Vec<u8> {
    protocol::encode(&Message::Sync {
        sender_id: peer_id(PEER),
        target_id: peer_id(SERVER_PEER),
        document_id: document_id(),
        data,
    })
}

/// A CBOR map with `type` and the given extra entries, as raw bytes.
fn cbor_frame(build: impl FnOnce(&mut minicbor::Encoder<&mut Vec<u8>>)) -> Vec<u8> {
    let mut out = Vec::new();
    build(&mut minicbor::Encoder::new(&mut out));
    out
}

/// Hostile frames: CBOR that is too deep, declares absurd lengths, or lies.
pub fn hostile_frames() -> Vec<Seed> {
    let mut out: Vec<Seed> = Vec::new();
    out.push(("cbor-deep-arrays".into(), vec![0x81; 64]));
    out.push((
        "cbor-map-2pow32-entries".into(),
        vec![0xba, 0xff, 0xff, 0xff, 0xff],
    ));
    out.push((
        "cbor-bytes-2pow63".into(),
        vec![0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ));
    out.push((
        "cbor-indefinite-unterminated".into(),
        vec![0xbf, 0x64, b't', b'y', b'p', b'e'],
    ));
    out.push(("cbor-tag-nest".into(), [0xd8, 0x40].repeat(40)));
    out.push((
        "sync-wrong-sender".into(),
        protocol::encode(&Message::Sync {
            sender_id: peer_id("user:mallory:phone"),
            target_id: peer_id(SERVER_PEER),
            document_id: document_id(),
            data: BLOOM_DIVIDE_BY_ZERO.to_vec(),
        }),
    ));
    out.push(("second-join".into(), crate::join_frame(PEER)));
    out.push((
        "sync-data-not-bytes".into(),
        cbor_frame(|e| {
            e.map(5)
                .and_then(|e| e.str("type")?.str("sync"))
                .and_then(|e| e.str("senderId")?.str(PEER))
                .and_then(|e| e.str("targetId")?.str(SERVER_PEER))
                .and_then(|e| e.str("documentId")?.str(&document_id().to_string()))
                .and_then(|e| e.str("data")?.array(1)?.u8(0))
                .map(|_| ())
                .expect("encoding into a Vec");
        }),
    ));
    for (name, data) in hostile_sync_messages() {
        let name = name.trim_start_matches("hostile-");
        out.push((format!("sync-{name}"), sync_frame(data)));
    }
    out.into_iter()
        .map(|(name, bytes)| (format!("hostile-{name}"), bytes))
        .collect()
}

/// Seeds for `frame_to_message`.
pub fn frame_seeds(golden_dir: &std::path::Path) -> Vec<Seed> {
    let mut out = golden_frames(golden_dir);
    for (name, data) in real_sync_messages() {
        out.push((format!("frame-{name}"), sync_frame(data)));
    }
    out.extend(hostile_frames());
    out
}

/// Seeds for `sync_into_document`.
pub fn sync_seeds(golden_dir: &std::path::Path) -> Vec<Seed> {
    let mut out = real_sync_messages();
    for (name, frame) in golden_frames(golden_dir) {
        if let Ok(Message::Sync { data, .. } | Message::Request { data, .. }) =
            protocol::decode(&frame)
        {
            out.push((format!("{name}-data"), data));
        }
    }
    out.extend(hostile_sync_messages());
    out
}

/// Seeds for `stored_bytes`.
pub fn stored_seeds() -> Vec<Seed> {
    let mut out: Vec<Seed> = Vec::new();
    let seeded = seeded_case();
    out.push(("snapshot-seeded-case".into(), seeded.save()));
    out.push(("snapshot-empty".into(), Automerge::new().save()));
    let peer = peer_doc(0x33, 2);
    out.push(("snapshot-peer".into(), peer.save()));
    out.push((
        "changes-incremental".into(),
        peer.save_after(&seeded.get_heads()),
    ));
    for (i, change) in seeded.get_changes(&[]).iter().enumerate().take(3) {
        out.push((format!("change-{i}"), change.raw_bytes().to_vec()));
    }
    out.push(("change-compressed".into(), compressed_change_bomb(1024)));
    out.push(("sync-state-new".into(), sync::State::new().encode()));
    let mut server = seeded.clone();
    let mut device = peer;
    let (mut s, mut d) = (sync::State::new(), sync::State::new());
    for _ in 0..6 {
        let a = server.generate_sync_message(&mut s);
        if let Some(m) = a.clone() {
            device
                .receive_sync_message(&mut d, m)
                .expect("real traffic");
        }
        let b = device.generate_sync_message(&mut d);
        if let Some(m) = b.clone() {
            server
                .receive_sync_message(&mut s, m)
                .expect("real traffic");
        }
        if a.is_none() && b.is_none() {
            break;
        }
    }
    out.push(("sync-state-after-sync".into(), s.encode()));

    let mut hostile: Vec<Seed> = vec![
        (
            "deflate-bomb-17mib".into(),
            compressed_change_bomb(17 * MIB),
        ),
        ("rle-op-bomb-2pow40".into(), run_length_op_bomb(1 << 40)),
        ("rle-op-bomb-200k".into(), run_length_op_bomb(200_000)),
        (
            "sync-state-2pow32-heads".into(),
            vec![0x43, 0x80, 0x80, 0x80, 0x80, 0x10],
        ),
        ("sync-message-as-state".into(), vec![0x42, 0, 0, 0, 0]),
    ];
    let mut column = Vec::new();
    sleb(1 << 40, &mut column);
    column.push(0x01);
    hostile.push((
        "document-deflated-rle-2pow40".into(),
        document_with_deflated_column(&deflate(&column)),
    ));
    let mut column = Vec::new();
    sleb(-(1 << 40), &mut column);
    hostile.push((
        "document-deflated-literals-2pow40".into(),
        document_with_deflated_column(&deflate(&column)),
    ));
    let change = seeded.get_changes(&[])[0].raw_bytes().to_vec();
    let mut lying = change[..9].to_vec();
    uleb(1 << 60, &mut lying);
    hostile.push(("change-length-2pow60".into(), lying));
    let mut wrong_type = change.clone();
    wrong_type[8] = 7;
    hostile.push(("chunk-type-7".into(), wrong_type));
    out.extend(
        hostile
            .into_iter()
            .map(|(name, bytes)| (format!("hostile-{name}"), bytes)),
    );
    out
}

fn with_mode(mode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend(payload);
    out
}

/// Seeds for `token_and_first_message`.
pub fn token_seeds(golden_dir: &std::path::Path) -> Vec<Seed> {
    let mut out: Vec<Seed> = Vec::new();
    let header = |alg: &str, kid: &str| format!(r#"{{"alg":"{alg}","kid":"{kid}","typ":"JWT"}}"#);
    let claims = |exp: i64| {
        format!(
            r#"{{"sub":"olena","device":"phone-1","role":"relative","exp":{exp},"iat":{},"aud":"casesync","iss":"casesync-dev","jti":"abc"}}"#,
            NOW - 10
        )
    };
    let valid = sign(
        header("EdDSA", EDDSA_KID).as_bytes(),
        claims(NOW + 3600).as_bytes(),
        false,
    );
    out.push((
        "token-valid".into(),
        with_mode(MODE_TOKEN, valid.as_bytes()),
    ));
    let expired = sign(
        header("EdDSA", EDDSA_KID).as_bytes(),
        claims(NOW - 3600).as_bytes(),
        false,
    );
    out.push((
        "token-expired".into(),
        with_mode(MODE_TOKEN, expired.as_bytes()),
    ));
    let hs = sign(
        header("HS256", HS256_KID).as_bytes(),
        claims(NOW + 3600).as_bytes(),
        true,
    );
    out.push(("token-hs256".into(), with_mode(MODE_TOKEN, hs.as_bytes())));
    out.push((
        "token-alg-none".into(),
        with_mode(
            MODE_TOKEN,
            b"eyJhbGciOiJub25lIiwia2lkIjoiZnV6ei1lZDI1NTE5In0.eyJzdWIiOiJvbGVuYSJ9.",
        ),
    ));

    let heads: [(&str, String); 5] = [
        ("query", format!("/sync?token={valid}")),
        ("bearer", format!("/sync\nAuthorization: Bearer {valid}")),
        (
            "subprotocol",
            format!("/sync\nSec-WebSocket-Protocol: casesync.v1, casesync.bearer.{valid}"),
        ),
        (
            "ambiguous",
            format!("/sync?token={valid}&token=x\nAuthorization: bearer {valid}"),
        ),
        ("percent", "/sync?token=%E2%82%AC%00&x=1".to_string()),
    ];
    for (name, head) in heads {
        out.push((
            format!("head-{name}"),
            with_mode(MODE_REQUEST_HEAD, head.as_bytes()),
        ));
    }

    // Only a join from the token's peer may come first.
    for (name, frame) in golden_frames(golden_dir) {
        let name = if name == "golden-join-1" {
            format!("first-{name}")
        } else {
            format!("hostile-first-{name}")
        };
        out.push((name, with_mode(MODE_FIRST_MESSAGE, &frame)));
    }
    out.push((
        "hostile-first-cbor-deep-arrays".into(),
        with_mode(MODE_FIRST_MESSAGE, &[0x81; 64]),
    ));
    let mallory = protocol::encode(&Message::Join {
        sender_id: PeerId::new("user:mallory:phone").expect("valid"),
        supported_protocol_versions: vec!["1".into()],
        metadata: None,
    });
    out.push((
        "hostile-first-join-other-peer".into(),
        with_mode(MODE_FIRST_MESSAGE, &mallory),
    ));

    let signed: [(&str, String, String); 6] = [
        ("valid", header("EdDSA", EDDSA_KID), claims(NOW + 3600)),
        (
            "float-exp",
            header("EdDSA", EDDSA_KID),
            r#"{"sub":"olena","device":"phone-1","exp":1750003600.5,"aud":["x","casesync"],"iss":"casesync-dev"}"#.into(),
        ),
        (
            "device-with-colon",
            header("EdDSA", EDDSA_KID),
            r#"{"sub":"olena","device":"a:b","exp":1750003600,"aud":"casesync","iss":"casesync-dev"}"#.into(),
        ),
        (
            "jku",
            format!(r#"{{"alg":"EdDSA","kid":"{EDDSA_KID}","jku":"https://evil.example/keys"}}"#),
            claims(NOW + 3600),
        ),
        (
            "control-chars",
            header("EdDSA", EDDSA_KID),
            r#"{"sub":"ol\u0000ena","device":"phone\n1","exp":1750003600,"aud":"casesync","iss":"casesync-dev","nbf":-9223372036854775808}"#.into(),
        ),
        (
            "huge-exp",
            header("EdDSA", EDDSA_KID),
            r#"{"sub":"olena","device":"phone-1","exp":9223372036854775807,"aud":"casesync","iss":"casesync-dev","role":"admin"}"#.into(),
        ),
    ];
    for (name, header, claims) in &signed {
        let payload = format!("{header}\n{claims}");
        out.push((
            format!("signed-eddsa-{name}"),
            with_mode(MODE_SIGNED_EDDSA, payload.as_bytes()),
        ));
    }
    let payload = format!("{}\n{}", header("HS256", HS256_KID), claims(NOW + 3600));
    out.push((
        "signed-hs256-valid".into(),
        with_mode(MODE_SIGNED_HS256, payload.as_bytes()),
    ));
    out
}
