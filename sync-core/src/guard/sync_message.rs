//! Structural checks of automerge sync messages and persisted sync states.
//!
//! The layout follows `Message::parse` in automerge 0.12's `sync.rs`:
//!
//! ```text
//! type      u8: 0x42 (v1) or 0x43 (v2)
//! heads     uleb count, then count × 32-byte hashes
//! need      uleb count, then count × 32-byte hashes
//! have      uleb count, then per entry:
//!             last_sync  uleb count, then hashes
//!             bloom      uleb length, then that many bytes:
//!                          empty, or uleb num_entries, uleb bits_per_entry,
//!                          uleb num_probes, ceil(num_entries × bits_per_entry / 8) bytes
//! changes   uleb count, then per entry: uleb length, then that many bytes
//!           (whole storage chunks; v2 sends one document chunk here)
//! flags     optional, only if input remains: uleb length, then flag bytes
//! ```
//!
//! Automerge ignores bytes after the flags and after a Bloom filter's bits;
//! we refuse them.

use super::chunk::{check_chunks, ChunkBudget};
use super::reader::Reader;
use super::{GuardError, Limits};

const MESSAGE_TYPE_SYNC_V1: u8 = 0x42;
const MESSAGE_TYPE_SYNC_V2: u8 = 0x43;
const SYNC_STATE_TYPE: u8 = 0x43;

/// What a sync message that passed [`check_sync_message`] contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncMessageSummary {
    /// Whether the message used the v2 type byte.
    pub v2: bool,
    /// Number of heads the sender announced.
    pub heads: usize,
    /// Number of change hashes the sender asked for.
    pub needs: usize,
    /// Number of `have` entries (each with a Bloom filter).
    pub haves: usize,
    /// Number of change entries.
    pub changes: usize,
    /// Number of storage chunks inside the change entries.
    pub chunks: usize,
    /// Bytes of the change entries as sent.
    pub change_bytes: u64,
    /// Bytes of the change entries once every compressed part is inflated.
    /// This is what the document grows by, at most.
    pub expanded_change_bytes: u64,
    /// An upper bound on the operations the change entries declare (per
    /// chunk, its longest run-length decoded column).
    pub ops: u64,
    /// Whether the optional flags section was present.
    pub has_flags: bool,
}

/// Who wrote the changes a sync message carries, as far as the chunk
/// headers say (see [`sync_message_authors`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageAuthors {
    /// The author (actor id bytes) of each change chunk, in order.
    pub change_actors: Vec<Vec<u8>>,
    /// Document chunks carry many changes by many authors; the caller must
    /// load them to learn which are new (automerge's v2 messages send one
    /// when a peer is far behind).
    pub document_chunks: usize,
}

/// Checks a sync message like [`check_sync_message`] and returns the
/// authors of the changes it carries, so that a server can refuse changes
/// signed with an actor id bound to someone else before automerge applies
/// them.
pub fn sync_message_authors(bytes: &[u8], limits: &Limits) -> Result<MessageAuthors, GuardError> {
    let (_, budget) = walk_sync_message(bytes, limits)?;
    Ok(MessageAuthors {
        change_actors: budget
            .change_headers
            .into_iter()
            .map(|h| h.author)
            .collect(),
        document_chunks: budget.document_chunks,
    })
}

/// Checks an automerge sync message's structure against `limits` before
/// automerge decodes it: every count and length, every Bloom filter's
/// parameters, and every change chunk (header, body layout, and inflated
/// size against the decompression caps).
pub fn check_sync_message(bytes: &[u8], limits: &Limits) -> Result<SyncMessageSummary, GuardError> {
    walk_sync_message(bytes, limits).map(|(summary, _)| summary)
}

pub(crate) fn walk_sync_message(
    bytes: &[u8],
    limits: &Limits,
) -> Result<(SyncMessageSummary, ChunkBudget), GuardError> {
    super::check_frame_size(bytes.len(), limits)?;
    let mut r = Reader::new(bytes);
    let mut summary = SyncMessageSummary {
        v2: match r.u8("sync message type")? {
            MESSAGE_TYPE_SYNC_V1 => false,
            MESSAGE_TYPE_SYNC_V2 => true,
            _ => return Err(GuardError::Malformed("not an automerge sync message")),
        },
        ..SyncMessageSummary::default()
    };
    summary.heads = r.hashes("sync message heads (max_heads)", limits.max_heads)?;
    summary.needs = r.hashes("sync message need (max_needs)", limits.max_needs)?;
    // Each have entry takes at least two bytes (two empty lengths).
    summary.haves = r.count("sync message have (max_haves)", limits.max_haves, 2)?;
    for _ in 0..summary.haves {
        r.hashes("have last_sync (max_last_sync)", limits.max_last_sync)?;
        let bloom = r.length_prefixed("Bloom filter (max_bloom_bytes)", limits.max_bloom_bytes)?;
        check_bloom(bloom, limits)?;
    }
    summary.changes = r.count(
        "sync message changes (max_changes_per_message)",
        limits.max_changes_per_message,
        1,
    )?;
    let mut budget = ChunkBudget::new(
        limits.max_decompressed_message_bytes,
        "max_decompressed_message_bytes",
    );
    for _ in 0..summary.changes {
        let change = r.length_prefixed("sync message change", limits.max_frame_bytes)?;
        summary.change_bytes += change.len() as u64;
        check_chunks(change, limits, &mut budget)?;
    }
    summary.chunks = budget.chunks;
    summary.expanded_change_bytes = budget.expanded_bytes;
    summary.ops = budget.ops;
    if !r.is_empty() {
        summary.has_flags = true;
        r.length_prefixed("sync message flags", limits.max_frame_bytes)?;
    }
    if !r.is_empty() {
        return Err(GuardError::TrailingBytes {
            what: "sync message",
            count: r.remaining(),
        });
    }
    Ok((summary, budget))
}

/// Checks one encoded Bloom filter (the bytes inside a `have` entry).
///
/// Automerge 0.12's `BloomFilter::get_probes` computes `x % (8 * bits.len())`
/// and reserves `num_probes` `u32`s for every hash it tests, and it runs that
/// on the *next* `generate_sync_message`, not while receiving. So a filter
/// with `num_entries > 0` and `bits_per_entry == 0` (no bits) panics with a
/// division by zero, and `num_probes == u32::MAX` asks for 16 GiB.
fn check_bloom(bytes: &[u8], limits: &Limits) -> Result<(), GuardError> {
    if bytes.is_empty() {
        // Automerge's default filter: no entries.
        return Ok(());
    }
    let mut r = Reader::new(bytes);
    let num_entries = r.uleb_u32("Bloom filter num_entries")?;
    let bits_per_entry = r.uleb_u32("Bloom filter bits_per_entry")?;
    let num_probes = r.uleb_u32("Bloom filter num_probes")?;
    let insane = |reason| GuardError::BloomFilterInsane {
        reason,
        num_entries,
        bits_per_entry,
        num_probes,
        bits_len: r.remaining(),
    };
    if num_entries > limits.max_bloom_entries {
        return Err(insane("num_entries above max_bloom_entries"));
    }
    if bits_per_entry == 0 {
        return Err(insane("bits_per_entry is zero (automerge divides by zero)"));
    }
    if bits_per_entry > limits.max_bloom_bits_per_entry {
        return Err(insane("bits_per_entry above max_bloom_bits_per_entry"));
    }
    if num_probes == 0 {
        return Err(insane("num_probes is zero"));
    }
    if num_probes > limits.max_bloom_probes {
        return Err(insane("num_probes above max_bloom_probes"));
    }
    // The same arithmetic as automerge's `bits_capacity`; both factors are
    // now small, so the product is exact.
    let expected = (u64::from(num_entries) * u64::from(bits_per_entry)).div_ceil(8);
    if expected > limits.max_bloom_bytes as u64 {
        return Err(insane("bit array above max_bloom_bytes"));
    }
    if num_entries > 0 && expected as usize != r.remaining() {
        return Err(insane("bit array length does not match its parameters"));
    }
    if num_entries == 0 && r.remaining() != 0 {
        return Err(insane("an empty filter carries bits"));
    }
    Ok(())
}

/// Checks a persisted sync state (`State::encode`): the type byte, then a
/// LEB128 count of shared heads and the heads, and nothing after.
pub fn check_sync_state(bytes: &[u8], limits: &Limits) -> Result<usize, GuardError> {
    super::check_frame_size(bytes.len(), limits)?;
    let mut r = Reader::new(bytes);
    if r.u8("sync state type")? != SYNC_STATE_TYPE {
        return Err(GuardError::Malformed("not an automerge sync state"));
    }
    let heads = r.hashes("sync state shared heads (max_heads)", limits.max_heads)?;
    if !r.is_empty() {
        return Err(GuardError::TrailingBytes {
            what: "sync state",
            count: r.remaining(),
        });
    }
    Ok(heads)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_with_bloom(bloom: &[u8]) -> Vec<u8> {
        let mut bytes = vec![MESSAGE_TYPE_SYNC_V1, 0, 0, 1, 0, bloom.len() as u8];
        bytes.extend(bloom);
        bytes.push(0);
        bytes
    }

    #[test]
    fn the_smallest_message_passes() {
        let summary = check_sync_message(&[0x42, 0, 0, 0, 0], &Limits::default());
        assert_eq!(summary, Ok(SyncMessageSummary::default()));
    }

    #[test]
    fn bloom_parameters_are_bounded() {
        let limits = Limits::default();
        // Automerge's own filter for one hash: 1 entry, 10 bits, 7 probes, 2 bytes.
        assert!(check_sync_message(&message_with_bloom(&[1, 10, 7, 0, 0]), &limits).is_ok());
        for bloom in [
            &[1, 0, 7][..],
            &[1, 8, 0, 0],
            &[1, 8, 0xff, 0xff, 0xff, 0xff, 0x0f, 0],
            &[1, 8, 33, 0],
            &[1, 10, 7, 0],
            &[1, 10, 7, 0, 0, 0],
            &[0, 10, 7, 0],
        ] {
            assert!(
                matches!(
                    check_sync_message(&message_with_bloom(bloom), &limits),
                    Err(GuardError::BloomFilterInsane { .. })
                ),
                "{bloom:?}"
            );
        }
    }

    #[test]
    fn sync_state_is_checked() {
        let limits = Limits::default();
        assert_eq!(check_sync_state(&[0x43, 0], &limits), Ok(0));
        assert!(check_sync_state(&[0x43, 1], &limits).is_err());
        assert!(check_sync_state(&[0x42, 0], &limits).is_err());
        assert!(check_sync_state(&[0x43, 0, 0], &limits).is_err());
        assert!(matches!(
            check_sync_state(&[0x43, 0xff, 0xff, 0x03], &limits),
            Err(GuardError::TooMany { count: 65535, .. })
        ));
    }
}
