//! The named, configurable limits every guard checks against.

/// One MiB.
const MIB: usize = 1024 * 1024;

/// Every bound the input guards enforce.
///
/// The defaults suit casesync's documents: a case is text and small values,
/// attachments are metadata only, and the largest expected case has tens of
/// thousands of changes. An operator who raises a limit raises the memory and
/// CPU a single hostile peer can cost the server, so each field says what it
/// protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest WebSocket frame or HTTP body accepted, in bytes. Default 16 MiB.
    pub max_frame_bytes: usize,

    /// Deepest CBOR nesting (arrays, maps and tags each add a level). The
    /// automerge-repo messages are three levels deep. Default 16.
    pub max_cbor_depth: usize,
    /// Most items declared by one CBOR array or map (a map entry counts as one
    /// item). Default 4096.
    pub max_cbor_container_len: usize,
    /// Longest CBOR byte or text string, in bytes. Default 16 MiB (a sync
    /// message travels inside one byte string).
    pub max_cbor_string_bytes: usize,

    /// Most change hashes in a sync message's `heads`, in a persisted sync
    /// state, and in the dependencies or heads of one chunk. Default 1024.
    pub max_heads: usize,
    /// Most change hashes in a sync message's `need`. Default 65 536.
    pub max_needs: usize,
    /// Most `have` entries in a sync message. Automerge sends one. Default 8.
    pub max_haves: usize,
    /// Most `last_sync` hashes in one `have` entry. Default 1024.
    pub max_last_sync: usize,

    /// Largest encoded Bloom filter, in bytes. Also keeps automerge's
    /// `8 * bits.len() as u32` probe modulus from overflowing. Default 4 MiB.
    pub max_bloom_bytes: usize,
    /// Most entries a Bloom filter may claim. Default 4 000 000.
    pub max_bloom_entries: u32,
    /// Largest bits-per-entry. Zero is always refused: automerge 0.12 then
    /// builds an empty bit array and divides by zero. Automerge uses 10.
    /// Default 32.
    pub max_bloom_bits_per_entry: u32,
    /// Largest number of probes. Zero is always refused. Automerge 0.12
    /// reserves `4 * num_probes` bytes per hash it tests, so `u32::MAX` asks
    /// for 16 GiB. Automerge uses 7. Default 32.
    pub max_bloom_probes: u32,

    /// Most change entries in one sync message. Default 100 000.
    pub max_changes_per_message: usize,
    /// Most chunks inside one stored blob or one sync-message change entry.
    /// Default 100 000.
    pub max_chunks: usize,
    /// Most columns declared in one chunk's column metadata. Automerge writes
    /// about twenty. Default 128.
    pub max_chunk_columns: usize,
    /// Most actors listed by one chunk. Default 65 536.
    pub max_chunk_actors: usize,
    /// Longest actor id, in bytes. Automerge's are 16. Default 128.
    pub max_actor_id_bytes: usize,
    /// Longest commit message in a change, in bytes. Default 64 KiB.
    pub max_change_message_bytes: usize,

    /// Most operations one change may declare. A run-length encoded column
    /// can declare a million operations in 52 bytes, so every column's
    /// logical length is counted against this before automerge expands it.
    /// Automerge 0.12 allocates about 380 bytes per op while loading such a
    /// change (378 MB peak for a million, measured), though it keeps little.
    /// Pasting a narrative is one op per character. Default 100 000.
    pub max_ops_per_change: u64,

    /// Largest size of one compressed change chunk once inflated, in bytes.
    /// The DEFLATE columns of document and bundle chunks count against the
    /// per-message (or per-document) total instead. Default 16 MiB.
    pub max_decompressed_change_bytes: usize,
    /// Largest total size of everything in one sync message or one
    /// `load_changes` call once inflated, in bytes. Default 64 MiB.
    pub max_decompressed_message_bytes: usize,

    /// Largest document, in bytes (stored size plus incoming change bytes,
    /// and the inflated size of a document being loaded). Default 128 MiB.
    pub max_document_bytes: usize,
    /// Most operations a document may hold. Automerge keeps every op in
    /// memory, so this bounds a document's RAM. Incoming chunks are counted
    /// against it before automerge runs (an upper bound: the longest column
    /// of each chunk), and the document is measured again after. Also bounds
    /// the columns of one document or bundle chunk, which a peer may send in
    /// a v2 sync message: at automerge's ~380 bytes per op while loading, the
    /// default costs at most about 380 MB of transient allocation. The
    /// largest expected case (20 000 changes) holds a few hundred thousand
    /// ops. Because incoming ops are an upper bound, a document above half
    /// this limit may be refused a v2 whole-document message. Default
    /// 1 000 000.
    pub max_document_ops: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 16 * MIB,
            max_cbor_depth: 16,
            max_cbor_container_len: 4096,
            max_cbor_string_bytes: 16 * MIB,
            max_heads: 1024,
            max_needs: 65_536,
            max_haves: 8,
            max_last_sync: 1024,
            max_bloom_bytes: 4 * MIB,
            max_bloom_entries: 4_000_000,
            max_bloom_bits_per_entry: 32,
            max_bloom_probes: 32,
            max_changes_per_message: 100_000,
            max_chunks: 100_000,
            max_chunk_columns: 128,
            max_chunk_actors: 65_536,
            max_actor_id_bytes: 128,
            max_change_message_bytes: 64 * 1024,
            max_ops_per_change: 100_000,
            max_decompressed_change_bytes: 16 * MIB,
            max_decompressed_message_bytes: 64 * MIB,
            max_document_bytes: 128 * MIB,
            max_document_ops: 1_000_000,
        }
    }
}
