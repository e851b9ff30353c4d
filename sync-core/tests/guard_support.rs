//! Helpers shared by the guard tests: real automerge documents and crafted
//! hostile chunks and sync messages. Included with `mod guard_support;`.
#![allow(dead_code)]

use std::io::Write;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Automerge, ObjType, ScalarValue, ROOT};
use sha2::{Digest, Sha256};

pub const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
pub const MIB: usize = 1024 * 1024;

/// A document with `n` changes: a text narrative and a map of sources.
pub fn doc_with_changes(actor: &[u8], n: usize) -> Automerge {
    let mut doc = Automerge::new().with_actor(automerge::ActorId::from(actor));
    let mut tx = doc.transaction();
    let text = tx
        .put_object(ROOT, "circumstances", ObjType::Text)
        .expect("put text");
    let sources = tx
        .put_object(ROOT, "sources", ObjType::Map)
        .expect("put map");
    tx.commit();
    for i in 0..n {
        let mut tx = doc.transaction();
        tx.splice_text(&text, 0, 0, &format!("note {i}. "))
            .expect("splice");
        tx.put(&sources, format!("s{i}"), i as i64).expect("put");
        tx.commit();
    }
    doc
}

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

/// Splits a chunk into (type, body).
pub fn chunk_body(chunk: &[u8]) -> (u8, &[u8]) {
    assert_eq!(chunk[..4], MAGIC);
    let chunk_type = chunk[8];
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
    (chunk_type, &chunk[pos..pos + len as usize])
}

/// The checksum automerge expects in a chunk header: the first four bytes of
/// SHA-256 over the chunk type, the LEB128 body length and the body.
pub fn checksum(chunk_type: u8, body: &[u8]) -> [u8; 4] {
    let mut hasher = Sha256::new();
    let mut prefix = vec![chunk_type];
    uleb(body.len() as u64, &mut prefix);
    hasher.update(&prefix);
    hasher.update(body);
    let hash = hasher.finalize();
    [hash[0], hash[1], hash[2], hash[3]]
}

pub fn chunk(chunk_type: u8, checksum: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend(checksum);
    out.push(chunk_type);
    uleb(body.len() as u64, &mut out);
    out.extend(body);
    out
}

pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

/// A compressed change chunk (type 2) that inflates to more than `padding`
/// bytes: a real automerge change setting one key to `padding` zero bytes,
/// which DEFLATE shrinks about a thousandfold. It is a valid change that
/// automerge 0.12 accepts; only its inflated size makes it a bomb.
pub fn compressed_change_bomb(padding: usize) -> Vec<u8> {
    let mut doc = AutoCommit::new();
    doc.set_actor(ActorId::from(b"bomb-actor".as_slice()));
    doc.put(ROOT, "padding", ScalarValue::Bytes(vec![0; padding]))
        .expect("a put on a fresh document");
    let change = doc.get_changes(&[]).remove(0);
    let (chunk_type, body) = chunk_body(change.raw_bytes());
    assert_eq!(chunk_type, 1);
    // The checksum covers the uncompressed change chunk.
    chunk(2, checksum(1, body), &deflate(body))
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

/// Runs the sync protocol between two documents until neither has anything
/// to send, delivering each encoded message through `deliver`. Fails the
/// test after `max_rounds`. Returns the number of messages delivered.
pub fn sync_until_quiet(
    a: &mut Automerge,
    b: &mut Automerge,
    max_rounds: usize,
    mut deliver: impl FnMut(&mut Automerge, &mut sync::State, &[u8]),
) -> usize {
    let mut a_state = sync::State::new();
    let mut b_state = sync::State::new();
    let mut delivered = 0;
    for _ in 0..max_rounds {
        let a_to_b = a.generate_sync_message(&mut a_state).map(|m| m.encode());
        if let Some(bytes) = &a_to_b {
            deliver(b, &mut b_state, bytes);
            delivered += 1;
        }
        let b_to_a = b.generate_sync_message(&mut b_state).map(|m| m.encode());
        if let Some(bytes) = &b_to_a {
            deliver(a, &mut a_state, bytes);
            delivered += 1;
        }
        if a_to_b.is_none() && b_to_a.is_none() {
            return delivered;
        }
    }
    panic!("sync did not converge within {max_rounds} rounds");
}

/// 64 MiB of zeros, DEFLATE-compressed (about 64 KiB), computed once.
pub fn deflated_zeros_64_mib() -> &'static [u8] {
    static ZEROS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    ZEROS.get_or_init(|| {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let block = vec![0u8; MIB];
        for _ in 0..64 {
            encoder.write_all(&block).expect("writing to a Vec");
        }
        encoder.finish().expect("writing to a Vec")
    })
}

/// A document chunk (type 0) with one actor and one DEFLATE-compressed ops
/// column whose data is `deflated`.
pub fn document_with_deflated_column(deflated: &[u8]) -> Vec<u8> {
    let mut body = vec![1, 1, 0xaa]; // one actor id, one byte long
    body.push(0); // no heads
    body.push(0); // no change columns
    body.push(1); // one ops column:
    uleb(0x0a, &mut body); // id 0, integer, deflate bit set
    uleb(deflated.len() as u64, &mut body);
    body.extend(deflated);
    chunk(0, checksum(0, &body), &body)
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

/// A change chunk (type 1, valid checksum) of about 50 bytes that declares
/// `ops` operations, each `put(ROOT, "a", null)`: every op column is one
/// run-length encoded run. Automerge 0.12 loads it and expands every op.
pub fn run_length_op_bomb(ops: u64) -> Vec<u8> {
    let run = |value: &[u8]| {
        let mut column = Vec::new();
        sleb(ops as i64, &mut column);
        column.extend(value);
        column
    };
    let key = run(&[0x01, b'a']); // a run of the one-byte string "a"
    let mut insert = Vec::new(); // boolean: a run of `ops` falses
    uleb(ops, &mut insert);
    let action = run(&[0x01]); // a run of action 1 (set)
    let value_meta = run(&[0x00]); // a run of null values
    let pred = run(&[0x00]); // a run of empty pred groups
    let mut body = vec![
        0x00, // no dependencies
        0x01, b'x', // actor id "x"
        0x01, // seq 1
        0x01, // start op 1
        0x00, // time 0
        0x00, // no message
        0x00, // no other actors
        0x05, // five columns:
    ];
    let columns = [
        (0x15, &key), // key string
        (0x34, &insert),
        (0x42, &action),
        (0x56, &value_meta),
        (0x70, &pred), // pred group
    ];
    for (spec, column) in columns {
        uleb(spec, &mut body);
        uleb(column.len() as u64, &mut body);
    }
    for (_, column) in columns {
        body.extend(column.iter());
    }
    chunk(1, checksum(1, &body), &body)
}
