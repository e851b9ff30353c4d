//! Checks automerge storage chunks (documents, changes, compressed changes,
//! bundles) before automerge parses them, and inflates DEFLATE data against
//! a hard cap.
//!
//! Automerge 0.12 inflates with `read_to_end` and no limit: a compressed
//! change chunk (type 2) in `storage/chunk.rs`, and DEFLATE-compressed
//! columns of document and bundle chunks in `storage/columns/raw_column.rs`.
//! DEFLATE expands up to about 1032:1, so a 64 KiB chunk can become 64 MiB.
//! Here every inflation reads through `.take(cap + 1)` into a sink: a bomb is
//! refused after at most `cap + 1` bytes of output and nothing is kept.
//!
//! Columns are run-length encoded, which is a second amplifier that no
//! decompression cap sees: a run is a count and one value, so a 49-byte
//! change chunk can declare a million operations (automerge 0.12 loads it,
//! one op at a time). Every column's logical length is therefore counted,
//! without materialising it, and bounded by `Limits::max_ops_per_change`
//! (change chunks) or `Limits::max_document_ops` (document and bundle chunks).

use std::collections::BTreeSet;
use std::io::Read;

use super::reader::Reader;
use super::{GuardError, Limits};

/// The four bytes that open every automerge chunk.
pub(crate) const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED: u8 = 2;
const CHUNK_BUNDLE: u8 = 3;

/// The deflate bit of a column specification.
const COLUMN_DEFLATE: u32 = 0b1000;

/// Counts what a run of chunks holds and what it will cost once inflated.
#[derive(Debug)]
pub(crate) struct ChunkBudget {
    /// Bytes the chunks occupy once every compressed part is inflated.
    pub(crate) expanded_bytes: u64,
    /// Number of chunks seen.
    pub(crate) chunks: usize,
    /// An upper bound on the operations the chunks hold: per chunk, the
    /// longest logical column.
    pub(crate) ops: u64,
    /// The header of every change chunk seen, in order.
    pub(crate) change_headers: Vec<ChangeHeader>,
    /// Number of document chunks seen.
    pub(crate) document_chunks: usize,
    /// The document chunks seen, whole (for the actor check, which loads
    /// them on a scratch document).
    pub(crate) document_bytes: Vec<Vec<u8>>,
    /// The most expanded bytes allowed in total, and the limit's name.
    total_limit: usize,
    total_limit_name: &'static str,
}

impl ChunkBudget {
    pub(crate) fn new(total_limit: usize, total_limit_name: &'static str) -> Self {
        Self {
            expanded_bytes: 0,
            chunks: 0,
            ops: 0,
            change_headers: Vec::new(),
            document_chunks: 0,
            document_bytes: Vec::new(),
            total_limit,
            total_limit_name,
        }
    }

    fn left(&self) -> u64 {
        (self.total_limit as u64).saturating_sub(self.expanded_bytes)
    }

    fn add(&mut self, bytes: u64) -> Result<(), GuardError> {
        self.expanded_bytes = self.expanded_bytes.saturating_add(bytes);
        if self.expanded_bytes > self.total_limit as u64 {
            return Err(GuardError::DecompressedTooLarge {
                limit_name: self.total_limit_name,
                limit: self.total_limit,
            });
        }
        Ok(())
    }

    /// The cap for one inflation: the per-change limit, or whatever is left
    /// of the total if that is smaller. Returns the cap and the name of the
    /// limit that set it.
    fn cap(&self, per_unit: Option<usize>) -> (u64, &'static str, usize) {
        match per_unit {
            Some(unit) if (unit as u64) <= self.left() => {
                (unit as u64, "max_decompressed_change_bytes", unit)
            }
            _ => (self.left(), self.total_limit_name, self.total_limit),
        }
    }
}

/// Checks that `bytes` is a sequence of whole, well-formed chunks, inflating
/// compressed parts against the caps in `limits` and `budget`.
pub(crate) fn check_chunks(
    bytes: &[u8],
    limits: &Limits,
    budget: &mut ChunkBudget,
) -> Result<(), GuardError> {
    let mut reader = Reader::new(bytes);
    if reader.is_empty() {
        return Err(GuardError::Malformed("empty chunk data"));
    }
    while !reader.is_empty() {
        if budget.chunks >= limits.max_chunks {
            return Err(GuardError::TooMany {
                what: "chunks (max_chunks)",
                count: budget.chunks as u64 + 1,
                limit: limits.max_chunks,
            });
        }
        budget.chunks += 1;
        check_one_chunk(&mut reader, limits, budget)?;
    }
    Ok(())
}

fn check_one_chunk(
    reader: &mut Reader<'_>,
    limits: &Limits,
    budget: &mut ChunkBudget,
) -> Result<(), GuardError> {
    let start = reader.remaining();
    let whole = reader.rest();
    let magic = reader.take(4, "chunk magic bytes")?;
    if magic != MAGIC {
        return Err(GuardError::Malformed(
            "chunk does not start with automerge's magic bytes",
        ));
    }
    reader.take(4, "chunk checksum")?;
    let chunk_type = reader.u8("chunk type")?;
    let body_len = reader.uleb("chunk length")?;
    let body = reader.take(body_len, "chunk body")?;
    let header_len = (start - reader.remaining()) as u64 - body_len;
    match chunk_type {
        CHUNK_CHANGE => {
            budget.add(header_len + body_len)?;
            let (ops, mut header) = check_change_body(body, limits)?;
            header.hash = change_hash(body);
            budget.ops = budget.ops.saturating_add(ops);
            budget.change_headers.push(header);
            Ok(())
        }
        CHUNK_COMPRESSED => {
            // Automerge rebuilds a change chunk around the inflated body.
            budget.add(header_len)?;
            let (cap, limit_name, limit) = budget.cap(Some(limits.max_decompressed_change_bytes));
            let inflated_len = inflated_size(body, cap, limit_name, limit)?;
            budget.add(inflated_len)?;
            // Within the cap: inflate for real (at most `cap` bytes) and check
            // the change inside.
            let mut inflated = Vec::new();
            flate2::bufread::DeflateDecoder::new(body)
                .take(cap)
                .read_to_end(&mut inflated)
                .map_err(|_| GuardError::Malformed("compressed change is not valid DEFLATE"))?;
            let (ops, mut header) = check_change_body(&inflated, limits)?;
            header.hash = change_hash(&inflated);
            budget.ops = budget.ops.saturating_add(ops);
            budget.change_headers.push(header);
            Ok(())
        }
        CHUNK_DOCUMENT => {
            budget.add(header_len)?;
            budget.document_chunks += 1;
            check_document_body(body, limits, budget)?;
            let len = start - reader.remaining();
            budget
                .document_bytes
                .push(whole.get(..len).unwrap_or_default().to_vec());
            Ok(())
        }
        CHUNK_BUNDLE => {
            budget.add(header_len)?;
            check_bundle_body(body, limits, budget)
        }
        _ => Err(GuardError::Malformed("unknown chunk type")),
    }
}

/// Inflates `compressed` into a sink and returns its size, refusing as soon
/// as the output passes `cap`. At most `cap + 1` bytes are produced and none
/// are kept.
pub(crate) fn inflated_size(
    compressed: &[u8],
    cap: u64,
    limit_name: &'static str,
    limit: usize,
) -> Result<u64, GuardError> {
    let mut decoder = flate2::bufread::DeflateDecoder::new(compressed).take(cap.saturating_add(1));
    let size = std::io::copy(&mut decoder, &mut std::io::sink())
        .map_err(|_| GuardError::Malformed("invalid DEFLATE data"))?;
    if size > cap {
        return Err(GuardError::DecompressedTooLarge { limit_name, limit });
    }
    Ok(size)
}

/// The body of a change chunk, as `Change::parse_following_header` reads it.
/// Who wrote a change chunk, at which seq, naming which other actors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChangeHeader {
    /// The change hash (SHA-256 of the uncompressed change chunk).
    pub(crate) hash: [u8; 32],
    pub(crate) deps: Vec<[u8; 32]>,
    pub(crate) author: Vec<u8>,
    pub(crate) seq: u64,
    pub(crate) others: Vec<Vec<u8>>,
}

/// Automerge's change hash: SHA-256 over the chunk type (1), the LEB128
/// length and the uncompressed body.
fn change_hash(body: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut prefix = vec![CHUNK_CHANGE];
    let mut len = body.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            prefix.push(byte);
            break;
        }
        prefix.push(byte | 0x80);
    }
    let mut hasher = Sha256::new();
    hasher.update(&prefix);
    hasher.update(body);
    hasher.finalize().into()
}

/// Returns an upper bound on its operations, and its header.
fn check_change_body(body: &[u8], limits: &Limits) -> Result<(u64, ChangeHeader), GuardError> {
    let mut r = Reader::new(body);
    let dep_count = r.hashes("change dependencies (max_heads)", limits.max_heads)?;
    let consumed = body.len() - r.remaining();
    let deps: Vec<[u8; 32]> = body
        .get(consumed - dep_count * 32..consumed)
        .unwrap_or_default()
        .chunks_exact(32)
        .filter_map(|h| h.try_into().ok())
        .collect();
    let author = r
        .length_prefixed(
            "change actor id (max_actor_id_bytes)",
            limits.max_actor_id_bytes,
        )?
        .to_vec();
    let seq = r.uleb("change seq")?;
    let start_op = r.uleb("change start op")?;
    if start_op == 0 {
        return Err(GuardError::Malformed("change start op is zero"));
    }
    r.sleb("change time")?;
    let message = r.length_prefixed(
        "change message (max_change_message_bytes)",
        limits.max_change_message_bytes,
    )?;
    if std::str::from_utf8(message).is_err() {
        return Err(GuardError::Malformed("change message is not UTF-8"));
    }
    let other_actors = r.count(
        "change actors (max_chunk_actors)",
        limits.max_chunk_actors,
        1,
    )?;
    let mut others = Vec::with_capacity(other_actors);
    for _ in 0..other_actors {
        others.push(
            r.length_prefixed(
                "change actor id (max_actor_id_bytes)",
                limits.max_actor_id_bytes,
            )?
            .to_vec(),
        );
    }
    let columns = read_columns(&mut r, limits)?;
    if columns.any_deflated {
        // Automerge refuses these too (`CompressedChangeCols`).
        return Err(GuardError::Malformed("change chunk has compressed columns"));
    }
    let cap = ItemCap {
        limit: limits.max_ops_per_change,
        what: "column items in a change (max_ops_per_change)",
    };
    // Actor index 0 is the change's author, 1.. its other actors.
    let actors = other_actors as u64 + 1;
    let mut scans = Vec::with_capacity(columns.columns.len());
    for &(spec, _, len) in &columns.columns {
        let data = r.take(len, "change column data")?;
        let scan = scan_column(spec, &mut slice_bytes(data), cap, actors)?;
        scans.push((spec, len, scan));
    }
    let ops = check_column_set(&scans, CHANGE_OP_COLUMNS)?;
    check_op_counters(start_op, ops, &scans)?;
    // Automerge 0.12 panics applying a change that lists an actor none of
    // its operations refer to (`import_ops` looks each one up and unwraps);
    // automerge itself only ever lists the actors its operations use.
    let mut referenced: BTreeSet<u64> = BTreeSet::new();
    for (_, _, scan) in &scans {
        referenced.extend(&scan.actors);
    }
    if (1..actors).any(|actor| !referenced.contains(&actor)) {
        return Err(GuardError::Malformed(
            "change lists an actor that none of its operations refers to",
        ));
    }
    // Automerge keeps bytes after the columns verbatim, as "extra bytes" for
    // formats to come; no automerge release writes them, and nothing here
    // would read them, so a change that carries some is refused.
    if !r.is_empty() {
        return Err(GuardError::TrailingBytes {
            what: "change chunk",
            count: r.remaining(),
        });
    }
    Ok((
        ops,
        ChangeHeader {
            hash: [0; 32],
            deps,
            author,
            seq,
            others,
        },
    ))
}

/// The columns of a change that hold operation counters: the object's
/// (unsigned), the key's and the predecessors' (both delta encoded).
const OBJ_CTR_COLUMN: u32 = 0x02;
const KEY_CTR_COLUMN: u32 = 0x13;
const PRED_CTR_COLUMN: u32 = 0x73;
const CHANGE_COUNTER_COLUMNS: &[u32] = &[OBJ_CTR_COLUMN, KEY_CTR_COLUMN, PRED_CTR_COLUMN];
/// The same in a document's operations: the object's, the key's, the
/// operation's own id and its successors'; and in its changes, each
/// change's largest operation counter.
const DOCUMENT_COUNTER_COLUMNS: &[u32] = &[OBJ_CTR_COLUMN, KEY_CTR_COLUMN, 0x23, 0x83];
const DOCUMENT_CHANGE_COUNTER_COLUMNS: &[u32] = &[0x13];

/// Refuses a change with an operation counter automerge cannot hold: it
/// keeps counters as `u32` and panics converting a larger one (`OpId::new`,
/// `types.rs`, found by fuzzing; caught, but then the whole document is
/// dropped and reloaded). The change's own operations are numbered from
/// `start_op`, and the counters it refers to are in three columns; a
/// negative one (a delta column run below zero) is refused too.
fn check_op_counters(
    start_op: u64,
    ops: u64,
    scans: &[(u32, u64, ColumnScan)],
) -> Result<(), GuardError> {
    let last = start_op.saturating_add(ops.saturating_sub(1));
    if last > u64::from(u32::MAX) {
        return Err(GuardError::Malformed(
            "change numbers its operations past 2^32",
        ));
    }
    check_counter_columns(scans, CHANGE_COUNTER_COLUMNS)
}

/// Refuses a counter outside 0..2^32 in any of `columns` (each unsigned or
/// delta encoded) of `scans`.
fn check_counter_columns(
    scans: &[(u32, u64, ColumnScan)],
    columns: &[u32],
) -> Result<(), GuardError> {
    for (spec, _, scan) in scans {
        let spec = spec & !COLUMN_DEFLATE;
        if !columns.contains(&spec) {
            continue;
        }
        let (lo, hi) = match spec & 0b111 {
            COLUMN_TYPE_UINT => (0, i128::from(scan.max)),
            COLUMN_TYPE_DELTA => scan.delta_range.unwrap_or((0, 0)),
            _ => continue,
        };
        if lo < 0 || hi > i128::from(u32::MAX) {
            return Err(GuardError::Malformed(
                "an operation counter outside 0..2^32",
            ));
        }
    }
    Ok(())
}

/// Column specifications (column id << 4 | type, without the deflate bit)
/// that automerge 0.12 writes, per kind of column set. A column it does not
/// know is ignored by automerge; one with a known id but another type makes
/// its decoders panic, so anything else is refused.
const CHANGE_OP_COLUMNS: &[u32] = &[
    0x01, 0x02, 0x11, 0x13, 0x15, 0x34, 0x42, 0x56, 0x57, 0x70, 0x71, 0x73, 0x94, 0xa5,
];
const DOCUMENT_OP_COLUMNS: &[u32] = &[
    0x01, 0x02, 0x11, 0x13, 0x15, 0x21, 0x23, 0x34, 0x42, 0x56, 0x57, 0x80, 0x81, 0x83, 0x94, 0xa5,
];
/// The document change column of dependency indexes (group 4, delta).
const DOCUMENT_DEPS_INDEX_COLUMN: u32 = 0x43;
const DOCUMENT_CHANGE_COLUMNS: &[u32] = &[0x01, 0x03, 0x13, 0x23, 0x35, 0x40, 0x43, 0x56, 0x57];

/// Checks what the columns of one set say about each other, and returns the
/// number of rows (operations or changes):
/// - every column is one automerge writes for this set (`allowed`), once;
/// - a value-metadata column's lengths add up to its raw value column's
///   length (automerge 0.12 panics slicing past the end otherwise);
/// - a group column's counts add up to the rows of its grouped columns;
/// - every other column has the same number of rows, or none (absent).
fn check_column_set(scans: &[(u32, u64, ColumnScan)], allowed: &[u32]) -> Result<u64, GuardError> {
    let spec_of = |spec: u32| spec & !COLUMN_DEFLATE;
    let mut seen = BTreeSet::new();
    for &(spec, _, _) in scans {
        if !allowed.contains(&spec_of(spec)) {
            return Err(GuardError::Malformed(
                "a column that automerge does not write, or with the wrong type",
            ));
        }
        if !seen.insert(spec_of(spec)) {
            return Err(GuardError::Malformed("a column appears twice"));
        }
    }
    let find = |spec: u32| scans.iter().find(|(s, _, _)| spec_of(*s) == spec);
    let grouped_ids: BTreeSet<u32> = scans
        .iter()
        .filter(|(s, _, _)| s & 0b111 == COLUMN_TYPE_GROUP)
        .map(|(s, _, _)| spec_of(*s) >> 4)
        .collect();
    let mut rows: Option<u64> = None;
    for (spec, expanded_len, scan) in scans {
        let spec = spec_of(*spec);
        let id = spec >> 4;
        match spec & 0b111 {
            COLUMN_TYPE_VALUE_META => {
                let raw_len = find((id << 4) | COLUMN_TYPE_VALUE).map_or(0, |(_, len, _)| *len);
                if scan.sum != raw_len {
                    return Err(GuardError::Malformed(
                        "value lengths do not add up to the raw value column",
                    ));
                }
            }
            COLUMN_TYPE_VALUE => {
                if find((id << 4) | COLUMN_TYPE_VALUE_META).is_none() && *expanded_len != 0 {
                    return Err(GuardError::Malformed(
                        "a raw value column without its metadata column",
                    ));
                }
                continue;
            }
            COLUMN_TYPE_GROUP => {
                // Deps have only a delta column; preds and succs have an
                // actor and a delta column.
                let members: Vec<u64> = [COLUMN_TYPE_ACTOR, COLUMN_TYPE_DELTA]
                    .into_iter()
                    .filter_map(|member| find((id << 4) | member).map(|(_, _, s)| s.items))
                    .collect();
                let matches = if members.is_empty() {
                    scan.sum == 0
                } else {
                    members.iter().all(|&items| items == scan.sum)
                };
                if !matches {
                    return Err(GuardError::Malformed(
                        "a group's counts do not match its grouped columns",
                    ));
                }
            }
            _ if grouped_ids.contains(&id) => continue,
            _ => {}
        }
        if scan.items == 0 {
            continue;
        }
        match rows {
            None => rows = Some(scan.items),
            Some(n) if n == scan.items => {}
            Some(_) => {
                return Err(GuardError::Malformed(
                    "columns disagree on the number of rows",
                ));
            }
        }
    }
    Ok(rows.unwrap_or(0))
}

/// The body of a document chunk, as `Document::parse` reads it.
fn check_document_body(
    body: &[u8],
    limits: &Limits,
    budget: &mut ChunkBudget,
) -> Result<(), GuardError> {
    let mut r = Reader::new(body);
    let prefix_start = r.remaining();
    let actors = r.count(
        "document actors (max_chunk_actors)",
        limits.max_chunk_actors,
        1,
    )?;
    for _ in 0..actors {
        r.length_prefixed(
            "document actor id (max_actor_id_bytes)",
            limits.max_actor_id_bytes,
        )?;
    }
    let heads = r.hashes("document heads (max_heads)", limits.max_heads)?;
    let change_columns = read_columns(&mut r, limits)?;
    let op_columns = read_columns(&mut r, limits)?;
    budget.add((prefix_start - r.remaining()) as u64)?;
    // A document's columns are inflated against the whole budget: one
    // document may legitimately hold more than one change's worth.
    let cap = document_item_cap(limits);
    let actors = actors as u64;
    let changes = check_column_data(&mut r, &change_columns, cap, actors, budget)?;
    let deps = changes
        .iter()
        .find(|(spec, _, _)| spec & !COLUMN_DEFLATE == DOCUMENT_DEPS_INDEX_COLUMN)
        .and_then(|(_, _, scan)| scan.delta_range);
    check_counter_columns(&changes, DOCUMENT_CHANGE_COUNTER_COLUMNS)?;
    let changes = check_column_set(&changes, DOCUMENT_CHANGE_COLUMNS)?;
    // A dependency is the index of another change of this document
    // (automerge 0.12 indexes its change list with it unchecked).
    if let Some((lo, hi)) = deps {
        if lo < 0 || hi >= i128::from(changes) {
            return Err(GuardError::Malformed(
                "a change's dependency index is past the document's changes",
            ));
        }
    }
    let ops = check_column_data(&mut r, &op_columns, cap, actors, budget)?;
    // automerge keeps counters as `u32` and panics converting a larger one
    // (`OpId::new`, `types.rs`), as for changes (`check_op_counters`).
    check_counter_columns(&ops, DOCUMENT_COUNTER_COLUMNS)?;
    let ops = check_column_set(&ops, DOCUMENT_OP_COLUMNS)?;
    budget.ops = budget.ops.saturating_add(changes.max(ops));
    // The suffix: one LEB128 index per head (absent in old JS documents).
    let suffix_start = r.remaining();
    if !r.is_empty() {
        for _ in 0..heads {
            r.uleb("document head index")?;
        }
    }
    budget.add((suffix_start - r.remaining()) as u64)?;
    if !r.is_empty() {
        return Err(GuardError::TrailingBytes {
            what: "document chunk",
            count: r.remaining(),
        });
    }
    Ok(())
}

/// The body of a bundle chunk, as `BundleStorage::parse_following_header` reads it.
fn check_bundle_body(
    body: &[u8],
    limits: &Limits,
    budget: &mut ChunkBudget,
) -> Result<(), GuardError> {
    let mut r = Reader::new(body);
    let prefix_start = r.remaining();
    r.hashes("bundle dependencies (max_heads)", limits.max_heads)?;
    let actors = r.count(
        "bundle actors (max_chunk_actors)",
        limits.max_chunk_actors,
        1,
    )?;
    for _ in 0..actors {
        r.length_prefixed(
            "bundle actor id (max_actor_id_bytes)",
            limits.max_actor_id_bytes,
        )?;
    }
    let change_columns = read_columns(&mut r, limits)?;
    budget.add((prefix_start - r.remaining()) as u64)?;
    let cap = document_item_cap(limits);
    let actors = actors as u64;
    let changes = longest(&check_column_data(
        &mut r,
        &change_columns,
        cap,
        actors,
        budget,
    )?);
    let ops_meta_start = r.remaining();
    let op_columns = read_columns(&mut r, limits)?;
    budget.add((ops_meta_start - r.remaining()) as u64)?;
    let ops = longest(&check_column_data(
        &mut r,
        &op_columns,
        cap,
        actors,
        budget,
    )?);
    budget.ops = budget.ops.saturating_add(changes.max(ops));
    if !r.is_empty() {
        return Err(GuardError::TrailingBytes {
            what: "bundle chunk",
            count: r.remaining(),
        });
    }
    Ok(())
}

/// Column metadata: the declared columns and their total data length.
#[derive(Debug)]
struct Columns {
    /// (specification, deflated, data length) per column.
    columns: Vec<(u32, bool, u64)>,
    any_deflated: bool,
}

fn read_columns(r: &mut Reader<'_>, limits: &Limits) -> Result<Columns, GuardError> {
    // Each column's metadata takes at least two bytes.
    let count = r.count("columns (max_chunk_columns)", limits.max_chunk_columns, 2)?;
    let mut columns = Vec::with_capacity(count);
    let mut total_len = 0u64;
    let mut any_deflated = false;
    for _ in 0..count {
        let spec = r.uleb_u32("column specification")?;
        let len = r.uleb("column length")?;
        let deflated = spec & COLUMN_DEFLATE != 0;
        any_deflated |= deflated;
        total_len = total_len.saturating_add(len);
        columns.push((spec, deflated, len));
    }
    if total_len > r.remaining() as u64 {
        return Err(GuardError::LengthExceedsInput {
            what: "column data",
            declared: total_len,
            remaining: r.remaining(),
        });
    }
    Ok(Columns {
        columns,
        any_deflated,
    })
}

/// Reads the data of `columns`, inflating compressed ones against the
/// budget, and scans each column against `cap` and the actor count.
/// Returns (specification, inflated length, scan) per column.
fn check_column_data(
    r: &mut Reader<'_>,
    columns: &Columns,
    cap: ItemCap,
    actors: u64,
    budget: &mut ChunkBudget,
) -> Result<Vec<(u32, u64, ColumnScan)>, GuardError> {
    let mut scans = Vec::with_capacity(columns.columns.len());
    for &(spec, deflated, len) in &columns.columns {
        let data = r.take(len, "column data")?;
        let (size, scan) = if deflated {
            let (byte_cap, limit_name, limit) = budget.cap(None);
            inflate_and_scan(data, spec, byte_cap, cap, actors, limit_name, limit)?
        } else {
            (len, scan_column(spec, &mut slice_bytes(data), cap, actors)?)
        };
        budget.add(size)?;
        scans.push((spec, size, scan));
    }
    Ok(scans)
}

/// The longest column's item count.
fn longest(scans: &[(u32, u64, ColumnScan)]) -> u64 {
    scans.iter().map(|(_, _, s)| s.items).max().unwrap_or(0)
}

fn document_item_cap(limits: &Limits) -> ItemCap {
    ItemCap {
        limit: limits.max_document_ops,
        what: "column items in a document or bundle (max_document_ops)",
    }
}

/// The most logical items one column may hold, and the limit's name.
#[derive(Debug, Clone, Copy)]
struct ItemCap {
    limit: u64,
    what: &'static str,
}

impl ItemCap {
    fn add(&self, items: &mut u64, more: u64) -> Result<(), GuardError> {
        *items = items.saturating_add(more);
        if *items > self.limit {
            return Err(GuardError::TooMany {
                what: self.what,
                count: *items,
                limit: usize::try_from(self.limit).unwrap_or(usize::MAX),
            });
        }
        Ok(())
    }
}

fn slice_bytes(data: &[u8]) -> impl Iterator<Item = Result<u8, GuardError>> + '_ {
    data.iter().map(|&byte| Ok(byte))
}

/// Inflates a compressed column through a small buffer, counting its items
/// as it streams past. Nothing is kept; at most `byte_cap + 1` bytes are
/// produced.
fn inflate_and_scan(
    compressed: &[u8],
    spec: u32,
    byte_cap: u64,
    item_cap: ItemCap,
    actors: u64,
    limit_name: &'static str,
    limit: usize,
) -> Result<(u64, ColumnScan), GuardError> {
    let decoder = flate2::bufread::DeflateDecoder::new(compressed).take(byte_cap.saturating_add(1));
    let mut produced = 0u64;
    let mut bytes = std::io::BufReader::new(decoder).bytes().map(|byte| {
        produced += 1;
        byte.map_err(|_| GuardError::Malformed("invalid DEFLATE data"))
    });
    let counted = scan_column(spec, &mut bytes, item_cap, actors);
    // Whatever the counter did not need still counts towards the size.
    let drained = bytes.try_fold((), |(), byte| byte.map(drop));
    drop(bytes);
    if produced > byte_cap {
        return Err(GuardError::DecompressedTooLarge { limit_name, limit });
    }
    drained?;
    Ok((produced, counted?))
}

/// Column types, from the low three bits of a column specification.
const COLUMN_TYPE_GROUP: u32 = 0;
const COLUMN_TYPE_ACTOR: u32 = 1;
const COLUMN_TYPE_UINT: u32 = 2;
const COLUMN_TYPE_DELTA: u32 = 3;
const COLUMN_TYPE_BOOLEAN: u32 = 4;
const COLUMN_TYPE_STRING: u32 = 5;

/// The operations' action column (id 4, unsigned), the same specification in
/// change, document and bundle chunks, and its value for a rich-text mark
/// (both the begin and the end anchor).
const ACTION_COLUMN: u32 = (4 << 4) | 2;
const ACTION_MARK: u64 = 7;
const COLUMN_TYPE_VALUE_META: u32 = 6;
const COLUMN_TYPE_VALUE: u32 = 7;

/// What a scan learned about one column.
#[derive(Debug, Default)]
struct ColumnScan {
    /// Logical items (rows).
    items: u64,
    /// Group columns: the sum of the counts. Value metadata columns: the sum
    /// of the value lengths they declare.
    sum: u64,
    /// Actor columns: the actor indexes used.
    actors: BTreeSet<u64>,
    /// Unsigned integer columns: the largest value.
    max: u64,
    /// Delta columns: the running (absolute) value, and the smallest and
    /// largest it reached, if any value was present.
    delta: i128,
    delta_range: Option<(i128, i128)>,
}

impl ColumnScan {
    /// Records `repeat` copies of the unsigned value `value` of a column of
    /// `column_type`.
    fn value(
        &mut self,
        column_type: u32,
        value: u64,
        repeat: u64,
        actors: u64,
    ) -> Result<(), GuardError> {
        match column_type {
            COLUMN_TYPE_ACTOR => {
                if value >= actors {
                    return Err(GuardError::Malformed("an actor index past the actor list"));
                }
                self.actors.insert(value);
            }
            COLUMN_TYPE_GROUP => self.sum = self.sum.saturating_add(value.saturating_mul(repeat)),
            COLUMN_TYPE_VALUE_META => {
                self.sum = self.sum.saturating_add((value >> 4).saturating_mul(repeat));
            }
            COLUMN_TYPE_UINT => self.max = self.max.max(value),
            _ => {}
        }
        Ok(())
    }

    /// Records `repeat` copies of the step `step` of a delta column.
    fn delta(&mut self, step: i64, repeat: u64) {
        let first = self.delta.saturating_add(i128::from(step));
        self.delta = self
            .delta
            .saturating_add(i128::from(step).saturating_mul(i128::from(repeat)));
        let (lo, hi) = (first.min(self.delta), first.max(self.delta));
        self.delta_range = Some(match self.delta_range {
            None => (lo, hi),
            Some((a, b)) => (a.min(lo), b.max(hi)),
        });
    }
}

/// Counts the logical items of one column without materialising them,
/// refusing as soon as the count passes `cap`.
///
/// Boolean columns are LEB128 run lengths, alternating false and true. Raw
/// value columns hold bytes whose count the byte caps already bound. Every
/// other column type is automerge's run-length encoding: a signed count `n`;
/// `n > 0` is a run of one value repeated `n` times, `n < 0` is `-n` literal
/// values, and `0` is followed by a count of nulls. Values are unsigned
/// LEB128, signed LEB128 (delta columns) or a length-prefixed string.
fn scan_column(
    spec: u32,
    bytes: &mut impl Iterator<Item = Result<u8, GuardError>>,
    cap: ItemCap,
    actors: u64,
) -> Result<ColumnScan, GuardError> {
    let column_type = spec & 0b111;
    // Marks are refused outright: the case schema has no rich text, and
    // automerge 0.12 applies a change's marks without the order check it
    // makes on documents (`MarkOrderValidator`). A mark end without its
    // begin then corrupts the mark index: a debug build panics twice and
    // aborts (`mark_index.rs:34`, then hexane's slab check in a destructor),
    // and a release build accepts a document whose `save()` does not load.
    let is_action = spec & !COLUMN_DEFLATE == ACTION_COLUMN;
    let mut scan = ColumnScan::default();
    match column_type {
        COLUMN_TYPE_VALUE => {}
        COLUMN_TYPE_BOOLEAN => {
            while let Some(run) = next_uleb(bytes)? {
                cap.add(&mut scan.items, run)?;
            }
        }
        _ => {
            while let Some(count) = next_sleb(bytes)? {
                if column_type == COLUMN_TYPE_DELTA && count != 0 {
                    // Delta values are kept (as a running sum) so that
                    // indexes stored as deltas can be checked.
                    cap.add(&mut scan.items, count.unsigned_abs())?;
                    let literals = if count > 0 { 1 } else { count.unsigned_abs() };
                    let repeat = if count > 0 { count.unsigned_abs() } else { 1 };
                    for _ in 0..literals {
                        let step = next_sleb(bytes)?.ok_or(GuardError::Truncated {
                            what: "column value",
                        })?;
                        scan.delta(step, repeat);
                    }
                } else if count > 0 {
                    cap.add(&mut scan.items, count.unsigned_abs())?;
                    if let Some(value) = read_value(column_type, bytes)? {
                        refuse_mark(is_action, value)?;
                        scan.value(column_type, value, count.unsigned_abs(), actors)?;
                    }
                } else if count < 0 {
                    // Checked before reading: each literal costs input bytes,
                    // but an absurd count is refused at once.
                    cap.add(&mut scan.items, count.unsigned_abs())?;
                    for _ in 0..count.unsigned_abs() {
                        if let Some(value) = read_value(column_type, bytes)? {
                            refuse_mark(is_action, value)?;
                            scan.value(column_type, value, 1, actors)?;
                        }
                    }
                } else {
                    let nulls =
                        next_uleb(bytes)?.ok_or(GuardError::Truncated { what: "null run" })?;
                    cap.add(&mut scan.items, nulls)?;
                }
            }
        }
    }
    Ok(scan)
}

fn refuse_mark(is_action: bool, value: u64) -> Result<(), GuardError> {
    if is_action && value == ACTION_MARK {
        return Err(GuardError::Malformed(
            "a rich-text mark operation (casesync documents have no marks)",
        ));
    }
    Ok(())
}

/// The number of items of one column (see [`scan_column`]).
#[cfg(test)]
fn count_items(
    spec: u32,
    bytes: &mut impl Iterator<Item = Result<u8, GuardError>>,
    cap: ItemCap,
) -> Result<u64, GuardError> {
    scan_column(spec, bytes, cap, u64::MAX).map(|scan| scan.items)
}

/// Reads one value of a run-length encoded column: the unsigned value for
/// the unsigned types, `None` for the delta and string types (skipped).
fn read_value(
    column_type: u32,
    bytes: &mut impl Iterator<Item = Result<u8, GuardError>>,
) -> Result<Option<u64>, GuardError> {
    const WHAT: &str = "column value";
    match column_type {
        COLUMN_TYPE_DELTA => next_sleb(bytes)?.map(|_| None),
        COLUMN_TYPE_STRING => {
            let len = next_uleb(bytes)?.ok_or(GuardError::Truncated { what: WHAT })?;
            for _ in 0..len {
                bytes
                    .next()
                    .transpose()?
                    .ok_or(GuardError::Truncated { what: WHAT })?;
            }
            Some(None)
        }
        _ => next_uleb(bytes)?.map(Some),
    }
    .ok_or(GuardError::Truncated { what: WHAT })
}

/// Unsigned LEB128 from a byte stream; `None` when the stream has ended.
fn next_uleb(
    bytes: &mut impl Iterator<Item = Result<u8, GuardError>>,
) -> Result<Option<u64>, GuardError> {
    let mut result = 0u64;
    let mut shift = 0u32;
    loop {
        let Some(byte) = bytes.next().transpose()? else {
            return if shift == 0 {
                Ok(None)
            } else {
                Err(GuardError::Truncated {
                    what: "column LEB128",
                })
            };
        };
        if shift > 63 {
            return Err(GuardError::Malformed("column LEB128 longer than 64 bits"));
        }
        result |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(Some(result));
        }
    }
}

/// Signed LEB128 from a byte stream; `None` when the stream has ended.
fn next_sleb(
    bytes: &mut impl Iterator<Item = Result<u8, GuardError>>,
) -> Result<Option<i64>, GuardError> {
    let mut result = 0i64;
    let mut shift = 0u32;
    loop {
        let Some(byte) = bytes.next().transpose()? else {
            return if shift == 0 {
                Ok(None)
            } else {
                Err(GuardError::Truncated {
                    what: "column LEB128",
                })
            };
        };
        if shift > 63 {
            return Err(GuardError::Malformed("column LEB128 longer than 64 bits"));
        }
        result |= i64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
        shift += 7;
        if byte & 0x80 == 0 {
            if shift < 64 && byte & 0x40 != 0 {
                result |= -1i64 << shift;
            }
            return Ok(Some(result));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> ChunkBudget {
        ChunkBudget::new(1 << 20, "max_decompressed_message_bytes")
    }

    #[test]
    fn change_hashes_are_automerges() {
        use automerge::transaction::Transactable;
        let mut doc = automerge::AutoCommit::new();
        doc.put(automerge::ROOT, "unit", "93rd brigade")
            .expect("a put");
        let change = doc.get_changes(&[]).remove(0);
        let limits = Limits::default();
        let mut budget = budget();
        check_chunks(change.raw_bytes(), &limits, &mut budget).expect("a real change");
        assert_eq!(budget.change_headers[0].hash, change.hash().0);
        assert!(budget.change_headers[0].deps.is_empty());
        assert_eq!(budget.change_headers[0].seq, 1);
        // The next change depends on the first.
        doc.put(automerge::ROOT, "rank", "sergeant").expect("a put");
        let second = doc.get_changes(&[change.hash()]).remove(0);
        let mut budget = super::tests::budget();
        check_chunks(second.raw_bytes(), &limits, &mut budget).expect("a real change");
        assert_eq!(budget.change_headers[0].hash, second.hash().0);
        assert_eq!(budget.change_headers[0].deps, vec![change.hash().0]);
    }

    fn uleb(value: u64, out: &mut Vec<u8>) {
        leb128::write::unsigned(out, value).expect("writing to a Vec");
    }

    fn sleb(value: i64, out: &mut Vec<u8>) {
        leb128::write::signed(out, value).expect("writing to a Vec");
    }

    /// A real one-operation change whose operations are renumbered from
    /// `start_op` (the chunk's checksum is left stale: the guard does not
    /// read it, automerge would refuse it).
    fn change_starting_at(start_op: u64) -> Vec<u8> {
        use automerge::transaction::Transactable;
        let mut doc = automerge::AutoCommit::new();
        doc.put(automerge::ROOT, "unit", "93rd brigade")
            .expect("a put");
        let raw = doc.get_changes(&[]).remove(0).raw_bytes().to_vec();
        // magic (4), checksum (4), type (1), body length (one byte: small).
        let (header, body) = raw.split_at(10);
        assert_eq!(header[8], CHUNK_CHANGE);
        assert_eq!(usize::from(header[9]), body.len());
        // No dependencies (0), the actor (16 bytes, length-prefixed), seq 1,
        // then the start op, 1.
        assert_eq!(&body[..2], &[0, 16]);
        assert_eq!(&body[18..20], &[1, 1]);
        let mut new_body = body[..19].to_vec();
        uleb(start_op, &mut new_body);
        new_body.extend_from_slice(&body[20..]);
        let mut chunk = header[..9].to_vec();
        uleb(new_body.len() as u64, &mut chunk);
        chunk.extend(new_body);
        chunk
    }

    #[test]
    fn refuses_operation_counters_past_32_bits() {
        let limits = Limits::default();
        // The rebuilt chunk itself is sound: numbered from 1, or so that
        // its one operation is the last counter automerge can hold.
        check_chunks(&change_starting_at(1), &limits, &mut budget()).expect("start op 1");
        check_chunks(
            &change_starting_at(u64::from(u32::MAX)),
            &limits,
            &mut budget(),
        )
        .expect("start op 2^32 - 1");
        assert_eq!(
            check_chunks(
                &change_starting_at(u64::from(u32::MAX) + 1),
                &limits,
                &mut budget()
            ),
            Err(GuardError::Malformed(
                "change numbers its operations past 2^32"
            ))
        );

        // Counters the operations refer to: a predecessor's (delta
        // encoded), too large or below zero, and an object's.
        let scan = |spec: u32, column: &[u8]| {
            let cap = ItemCap {
                limit: 10,
                what: "test",
            };
            let scan = scan_column(spec, &mut slice_bytes(column), cap, 1).expect("a column");
            (spec, column.len() as u64, scan)
        };
        let refused = Err(GuardError::Malformed(
            "an operation counter outside 0..2^32",
        ));
        // A run of 2 repeating one step reaches 2^32 - 2, a run of 3 more.
        let mut pred = vec![2];
        sleb((1 << 31) - 1, &mut pred);
        assert_eq!(
            check_op_counters(1, 2, &[scan(PRED_CTR_COLUMN, &pred)]),
            Ok(())
        );
        let mut pred = vec![3];
        sleb((1 << 31) - 1, &mut pred);
        assert_eq!(
            check_op_counters(1, 3, &[scan(PRED_CTR_COLUMN, &pred)]),
            refused
        );
        let mut key = vec![0x7f]; // one literal (-1)
        sleb(-5, &mut key);
        assert_eq!(
            check_op_counters(1, 1, &[scan(KEY_CTR_COLUMN, &key)]),
            refused
        );
        let mut obj = vec![1];
        uleb(u64::from(u32::MAX), &mut obj);
        assert_eq!(
            check_op_counters(1, 1, &[scan(OBJ_CTR_COLUMN, &obj)]),
            Ok(())
        );
        let mut obj = vec![1];
        uleb(u64::from(u32::MAX) + 1, &mut obj);
        assert_eq!(
            check_op_counters(1, 1, &[scan(OBJ_CTR_COLUMN, &obj)]),
            refused
        );
        // A document's own operation ids (delta encoded, deflated or not)
        // and its changes' largest counters.
        let mut ids = vec![2];
        sleb(1 << 31, &mut ids);
        let (_, len, id_scan) = scan(0x23, &ids);
        let doc_ops = [(0x23 | COLUMN_DEFLATE, len, id_scan)];
        assert_eq!(
            check_counter_columns(&doc_ops, DOCUMENT_COUNTER_COLUMNS),
            refused
        );
        assert_eq!(
            check_counter_columns(&[scan(0x13, &ids)], DOCUMENT_CHANGE_COUNTER_COLUMNS),
            refused
        );
        let mut ids = vec![2];
        sleb((1 << 31) - 1, &mut ids);
        assert_eq!(
            check_counter_columns(&[scan(0x23, &ids)], DOCUMENT_COUNTER_COLUMNS),
            Ok(())
        );
    }

    #[test]
    fn refuses_bad_headers() {
        let limits = Limits::default();
        assert!(matches!(
            check_chunks(b"not a chunk", &limits, &mut budget()),
            Err(GuardError::Malformed(_))
        ));
        let mut chunk = MAGIC.to_vec();
        chunk.extend([0, 0, 0, 0, 9, 0]);
        assert_eq!(
            check_chunks(&chunk, &limits, &mut budget()),
            Err(GuardError::Malformed("unknown chunk type"))
        );
        let mut chunk = MAGIC.to_vec();
        chunk.extend([0, 0, 0, 0, CHUNK_CHANGE, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(
            check_chunks(&chunk, &limits, &mut budget()),
            Err(GuardError::LengthExceedsInput {
                declared: 0xffff_ffff,
                ..
            })
        ));
    }

    #[test]
    fn inflation_stops_at_the_cap() {
        let zeros = vec![0u8; 1 << 20];
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut encoder, &zeros).expect("writing to a Vec");
        let compressed = encoder.finish().expect("writing to a Vec");
        assert_eq!(inflated_size(&compressed, 1 << 20, "x", 1), Ok(1 << 20));
        assert_eq!(
            inflated_size(
                &compressed,
                (1 << 20) - 1,
                "max_decompressed_change_bytes",
                7
            ),
            Err(GuardError::DecompressedTooLarge {
                limit_name: "max_decompressed_change_bytes",
                limit: 7
            })
        );
        assert!(matches!(
            inflated_size(&[0xff, 0xff], 100, "x", 1),
            Err(GuardError::Malformed(_))
        ));
    }

    fn items(spec: u32, column: &[u8], limit: u64) -> Result<u64, GuardError> {
        let cap = ItemCap {
            limit,
            what: "test",
        };
        count_items(spec, &mut slice_bytes(column), cap)
    }

    #[test]
    fn column_items_are_counted_without_expanding() {
        // Integer RLE: a run of 5 sevens, two literals, 3 nulls.
        assert_eq!(
            items(0x02, &[0x05, 0x07, 0x7e, 0x01, 0x02, 0x00, 0x03], 100),
            Ok(10)
        );
        // Delta RLE with a negative literal; string RLE: a run of 4 "ab".
        assert_eq!(items(0x03, &[0x7f, 0x7f], 100), Ok(1));
        assert_eq!(items(0x05, &[0x04, 0x02, b'a', b'b'], 100), Ok(4));
        // Booleans: 3 false, 2 true.
        assert_eq!(items(0x04, &[0x03, 0x02], 100), Ok(5));
        // Raw values are bounded by their bytes, not counted.
        assert_eq!(items(0x07, &[0xff; 10], 0), Ok(0));
        // A run of 2^40 is refused without expanding it.
        assert!(matches!(
            items(0x02, &[0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0x01], 1000),
            Err(GuardError::TooMany {
                count: 0x100_0000_0000,
                limit: 1000,
                ..
            })
        ));
        // A run without its value, a string shorter than declared.
        assert!(matches!(
            items(0x02, &[0x05], 100),
            Err(GuardError::Truncated { .. })
        ));
        assert!(matches!(
            items(0x05, &[0x01, 0x05, b'a'], 100),
            Err(GuardError::Truncated { .. })
        ));
    }
}
