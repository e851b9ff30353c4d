//! Checksum repair for the fuzzers' custom mutators.
//!
//! Every automerge storage chunk carries the first four bytes of a SHA-256
//! over its contents, and automerge refuses a chunk whose checksum is wrong.
//! A mutation almost always breaks it, so without help the fuzzer would
//! stop at automerge's checksum test and never reach the column decoders
//! and op-set code behind it, which is exactly what the guards must protect.
//! An attacker computes checksums for free, so the targets' custom mutators
//! mutate as usual and then repair the checksums here, in place. The input
//! saved in the corpus or as a crash artifact is the repaired one, so it
//! replays through the plain entry points with no repair.

use std::io::Read;

use sha2::{Digest, Sha256};

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const COMPRESSED_CHANGE: u8 = 2;
/// Largest inflated compressed change we repair; bigger ones keep their
/// checksum (and test the guard's inflation cap instead).
const MAX_INFLATE: u64 = 1 << 20;

/// Reads an unsigned LEB128 at `*pos`.
fn uleb(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn push_uleb(mut value: u64, out: &mut Vec<u8>) {
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

fn checksum(chunk_type: u8, body: &[u8]) -> [u8; 4] {
    let mut prefix = vec![chunk_type];
    push_uleb(body.len() as u64, &mut prefix);
    let hash = Sha256::new()
        .chain_update(&prefix)
        .chain_update(body)
        .finalize();
    [hash[0], hash[1], hash[2], hash[3]]
}

/// Repairs the checksum of every chunk in `buf`, which holds concatenated
/// chunks (a document, change-log entries, or one sync-message change
/// entry). Stops at the first thing that is not a whole chunk.
pub fn chunks(buf: &mut [u8]) {
    let mut pos = 0;
    while buf.len() >= pos + 9 && buf[pos..pos + 4] == MAGIC {
        let chunk_type = buf[pos + 8];
        let mut body_start = pos + 9;
        let Some(len) = uleb(buf, &mut body_start) else {
            return;
        };
        let Some(body_end) = usize::try_from(len)
            .ok()
            .and_then(|len| body_start.checked_add(len))
            .filter(|end| *end <= buf.len())
        else {
            return;
        };
        let body = &buf[body_start..body_end];
        let sum = if chunk_type == COMPRESSED_CHANGE {
            let mut inflated = Vec::new();
            let read = flate2::read::DeflateDecoder::new(body)
                .take(MAX_INFLATE + 1)
                .read_to_end(&mut inflated);
            match read {
                Ok(n) if (n as u64) <= MAX_INFLATE => Some(checksum(1, &inflated)),
                _ => None,
            }
        } else {
            Some(checksum(chunk_type, body))
        };
        if let Some(sum) = sum {
            buf[pos + 4..pos + 8].copy_from_slice(&sum);
        }
        pos = body_end;
    }
}

/// Skips `count` 32-byte hashes.
fn hashes(buf: &[u8], pos: &mut usize) -> Option<()> {
    let count = usize::try_from(uleb(buf, pos)?).ok()?;
    *pos = pos.checked_add(count.checked_mul(32)?)?;
    (*pos <= buf.len()).then_some(())
}

/// The byte ranges of the change entries of an automerge sync message.
fn change_entries(buf: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut pos = 1;
    if !matches!(buf.first(), Some(0x42 | 0x43)) {
        return None;
    }
    hashes(buf, &mut pos)?; // heads
    hashes(buf, &mut pos)?; // need
    let haves = uleb(buf, &mut pos)?;
    for _ in 0..haves.min(1024) {
        hashes(buf, &mut pos)?; // last_sync
        let bloom = usize::try_from(uleb(buf, &mut pos)?).ok()?;
        pos = pos.checked_add(bloom).filter(|p| *p <= buf.len())?;
    }
    let count = uleb(buf, &mut pos)?;
    let mut out = Vec::new();
    for _ in 0..count.min(4096) {
        let len = usize::try_from(uleb(buf, &mut pos)?).ok()?;
        let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
        out.push((pos, end));
        pos = end;
    }
    Some(out)
}

/// Repairs the chunk checksums inside an automerge sync message.
pub fn sync_message(buf: &mut [u8]) {
    for (start, end) in change_entries(buf).unwrap_or_default() {
        chunks(&mut buf[start..end]);
    }
}

/// The byte range of the `data` byte string of a CBOR protocol message.
fn data_range(buf: &[u8]) -> Option<(usize, usize)> {
    let mut d = minicbor::Decoder::new(buf);
    let entries = d.map().ok()??;
    for _ in 0..entries.min(64) {
        let key = d.str().ok()?;
        if key == "data" {
            if d.datatype().ok()? == minicbor::data::Type::Tag {
                d.tag().ok()?;
            }
            let bytes = d.bytes().ok()?;
            let start = bytes.as_ptr() as usize - buf.as_ptr() as usize;
            return Some((start, start + bytes.len()));
        }
        d.skip().ok()?;
    }
    None
}

/// Repairs the chunk checksums inside the sync message a `sync` or
/// `request` frame carries.
pub fn frame(buf: &mut [u8]) {
    if let Some((start, end)) = data_range(buf) {
        sync_message(&mut buf[start..end]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds;

    #[test]
    fn repairs_what_a_mutation_broke() {
        for good in [
            seeds::run_length_op_bomb(10),
            seeds::compressed_change_bomb(100),
        ] {
            let mut broken = good.clone();
            broken[5] ^= 0xff;
            chunks(&mut broken);
            assert_eq!(broken, good);

            let message = seeds::sync_message_with_changes(vec![good.clone(), good.clone()]);
            let mut broken = message.clone();
            let last = broken.len() - good.len() + 4;
            broken[last] ^= 0x55;
            sync_message(&mut broken);
            assert_eq!(broken, message);

            let frame = seeds::sync_frame(message);
            let mut broken = frame.clone();
            let magic = broken
                .windows(4)
                .rposition(|w| w == MAGIC)
                .expect("a chunk in the frame");
            broken[magic + 6] ^= 0x01;
            self::frame(&mut broken);
            assert_eq!(broken, frame);
        }
    }
}
