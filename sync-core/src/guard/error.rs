//! What a guard says when it refuses input.

/// Why a guard refused input.
///
/// Variants that come from a limit carry the name of the [`super::Limits`]
/// field (`limit_name`) or say which count they bound (`what`), the limit and,
/// where it is known without reading further, the value that was seen.
/// Messages never include the input's contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// The frame or message is larger than `Limits::max_frame_bytes`.
    #[error("frame of {size} bytes exceeds max_frame_bytes ({limit})")]
    FrameTooLarge { size: usize, limit: usize },

    /// The input ended inside an item.
    #[error("input ended while reading {what}")]
    Truncated { what: &'static str },

    /// A declared length or count needs more bytes than remain in the input.
    /// Refused before anything is allocated for it.
    #[error("{what} declares {declared} but only {remaining} bytes remain")]
    LengthExceedsInput {
        what: &'static str,
        declared: u64,
        remaining: usize,
    },

    /// A declared count is above its limit.
    #[error("{what}: {count} entries exceeds the limit of {limit}")]
    TooMany {
        what: &'static str,
        count: u64,
        limit: usize,
    },

    /// A declared length is above its limit.
    #[error("{what}: {len} bytes exceeds the limit of {limit}")]
    TooLong {
        what: &'static str,
        len: u64,
        limit: usize,
    },

    /// CBOR nests deeper than `Limits::max_cbor_depth`.
    #[error("CBOR nesting exceeds max_cbor_depth ({limit})")]
    CborTooDeep { limit: usize },

    /// Bytes follow the end of a complete item.
    #[error("{count} trailing bytes after {what}")]
    TrailingBytes { what: &'static str, count: usize },

    /// A Bloom filter in a sync message has parameters that automerge 0.12
    /// would panic on, allocate hugely for, or that exceed our bounds.
    #[error(
        "Bloom filter refused ({reason}): num_entries {num_entries}, \
         bits_per_entry {bits_per_entry}, num_probes {num_probes}, {bits_len} bytes of bits"
    )]
    BloomFilterInsane {
        reason: &'static str,
        num_entries: u32,
        bits_per_entry: u32,
        num_probes: u32,
        bits_len: usize,
    },

    /// Inflating compressed data would exceed a limit. Inflation stopped at
    /// the limit; the data was never fully expanded.
    #[error("decompressed data exceeds {limit_name} ({limit} bytes)")]
    DecompressedTooLarge {
        limit_name: &'static str,
        limit: usize,
    },

    /// The document would exceed `Limits::max_document_bytes`.
    #[error("document of {size} bytes would exceed max_document_bytes ({limit})")]
    DocumentTooLarge { size: u64, limit: usize },

    /// Applying the input could take the document past
    /// `Limits::max_document_ops`: `ops` is what it holds now plus an upper
    /// bound on what the input declares. Refused before automerge ran.
    #[error("document could reach {ops} operations, above max_document_ops ({limit})")]
    TooManyOps { ops: u64, limit: u64 },

    /// The document holds more operations than `Limits::max_document_ops`.
    /// When returned by a guarded entry point after automerge ran, the
    /// in-memory document already holds the changes: discard it and reload
    /// from storage.
    #[error(
        "document holds {ops} operations, above max_document_ops ({limit}); \
         discard the in-memory document and reload it from storage"
    )]
    DocumentTooManyOps { ops: u64, limit: u64 },

    /// The input is not well formed.
    #[error("malformed input: {0}")]
    Malformed(&'static str),

    /// Automerge panicked. The document and sync state it was working on may
    /// be inconsistent: discard both and reload the document from storage.
    #[error(
        "automerge panicked; discard the in-memory document and sync state \
         and reload the document from storage"
    )]
    AutomergePanicked,

    /// Automerge accepted a change that it cannot list again as the same
    /// bytes (see [`super::new_changes`]). The in-memory document holds it:
    /// discard the document and reload it from storage.
    #[error(
        "automerge accepted a change it cannot reproduce byte for byte; \
         discard the in-memory document and reload it from storage"
    )]
    NotReproducible,

    /// Automerge refused the input after the guards passed it.
    #[error("automerge refused the input: {0}")]
    Automerge(String),
}
