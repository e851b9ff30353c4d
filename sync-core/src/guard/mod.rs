//! Input guards: every byte from a peer or from storage passes through here
//! before automerge sees it.
//!
//! Each guard checks a named field of [`Limits`] and refuses with a
//! [`GuardError`] that names the limit. The order for a WebSocket frame is:
//!
//! 1. [`check_frame_size`] on the frame length,
//! 2. [`check_cbor`] before the automerge-repo protocol decoder,
//! 3. [`receive_sync_message`] for the `data` of a `sync` message, which runs
//!    [`check_sync_message`] and then automerge inside [`catch_automerge`],
//! 4. [`generate_sync_message`] for the reply, also inside [`catch_automerge`],
//!    because automerge 0.12 acts on a received Bloom filter only when it
//!    generates the next message.
//!
//! Bytes from storage go through [`load_document`], [`load_changes`] and
//! [`decode_sync_state`].
//!
//! # After an error
//!
//! A guard that refuses input *before* automerge runs leaves the document and
//! sync state untouched. Two errors come from *after* automerge ran:
//! [`GuardError::AutomergePanicked`] (automerge may have been interrupted
//! half-way through updating its op set or change graph) and
//! [`GuardError::DocumentTooManyOps`] (the changes were applied). For both, the
//! caller must discard the in-memory document and its sync states and reload
//! the document from storage. Nothing from that message was persisted, because
//! the engine persists only after the guard returned `Ok`.
//!
//! # What this does not do
//!
//! The guards bound sizes, counts and shapes. They do not decide who may
//! write (actor binding, membership) and do not rate-limit; those belong to
//! the engine and the server.

mod actors;
mod cbor;
mod chunk;
mod error;
mod limits;
mod reader;
mod stored;
mod sync_message;

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, Change, ChangeHash, ReadDoc};

pub use actors::KnownActors;
pub use cbor::check_cbor;
pub use error::GuardError;
pub use limits::Limits;
pub use stored::stored_heads;
pub use sync_message::{
    check_sync_message, check_sync_state, sync_message_authors, MessageAuthors, SyncMessageSummary,
};

use chunk::{check_chunks, ChunkBudget};

/// Refuses a frame or message longer than `Limits::max_frame_bytes`. Call it
/// on the length the transport announces, before reading the body.
pub fn check_frame_size(len: usize, limits: &Limits) -> Result<(), GuardError> {
    if len > limits.max_frame_bytes {
        return Err(GuardError::FrameTooLarge {
            size: len,
            limit: limits.max_frame_bytes,
        });
    }
    Ok(())
}

/// Refuses growth past `Limits::max_document_bytes`. `current` is the
/// document's stored size and `incoming` the bytes about to be added (for a
/// sync message, [`SyncMessageSummary::expanded_change_bytes`]).
pub fn check_document_size(
    current: usize,
    incoming: usize,
    limits: &Limits,
) -> Result<(), GuardError> {
    let size = (current as u64).saturating_add(incoming as u64);
    if size > limits.max_document_bytes as u64 {
        return Err(GuardError::DocumentTooLarge {
            size,
            limit: limits.max_document_bytes,
        });
    }
    Ok(())
}

/// Runs `f`, turning a panic into [`GuardError::AutomergePanicked`].
///
/// Whatever `f` was mutating may be left inconsistent: discard it and reload
/// from storage. The panic hook still runs (and by default prints to
/// stderr); the server may install a quieter one. This only helps where
/// panics unwind: a `panic = "abort"` build (common for wasm32) aborts
/// instead, which is why the guards refuse the known panicking inputs before
/// automerge runs.
pub fn catch_automerge<T>(f: impl FnOnce() -> T) -> Result<T, GuardError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| GuardError::AutomergePanicked)
}

/// Checks a sync message from a peer, then decodes it and applies it to
/// `doc` and `state`, with automerge inside [`catch_automerge`].
///
/// Refuses before automerge runs when the message breaks a limit or could
/// take the document past `Limits::max_document_ops`
/// ([`GuardError::TooManyOps`]). After
/// automerge ran, [`GuardError::AutomergePanicked`] and
/// [`GuardError::DocumentTooManyOps`] mean `doc` and `state` must be
/// discarded and the document reloaded from storage. The caller should also
/// call [`check_document_size`] with the stored size it knows and
/// [`check_sync_message`]'s `expanded_change_bytes` when it persists.
pub fn receive_sync_message(
    doc: &mut Automerge,
    state: &mut sync::State,
    bytes: &[u8],
    limits: &Limits,
) -> Result<(), GuardError> {
    let mut known = KnownActors::from_doc(doc);
    receive_sync_message_known(doc, state, bytes, limits, &mut known)
}

/// [`receive_sync_message`] with the document's [`KnownActors`] kept by
/// the caller (and updated here), so a message costs no walk of the
/// document's history.
pub fn receive_sync_message_known(
    doc: &mut Automerge,
    state: &mut sync::State,
    bytes: &[u8],
    limits: &Limits,
    known: &mut KnownActors,
) -> Result<(), GuardError> {
    let (summary, budget) = sync_message::walk_sync_message(bytes, limits)?;
    check_document_size(0, saturating_usize(summary.expanded_change_bytes), limits)?;
    check_incoming_ops(doc, summary.ops, limits)?;
    check_actors(doc, &budget, limits, known)?;
    let heads = doc.get_heads();
    catch_automerge(|| {
        let message = sync::Message::decode(bytes).map_err(automerge_error)?;
        doc.receive_sync_message(state, message)
            .map_err(automerge_error)
    })??;
    catch_automerge(|| known.learn(doc, &heads))?;
    check_ops(doc, limits)
}

/// See the `actors` module: every actor a change names must be known.
fn check_actors(
    doc: &Automerge,
    budget: &ChunkBudget,
    limits: &Limits,
    known: &mut KnownActors,
) -> Result<(), GuardError> {
    let batch = actors::batch_changes(doc, &budget.change_headers, &budget.document_bytes, limits)?;
    actors::check_batch(doc, batch, known)
}

/// Generates the next sync message for the peer behind `state`, with
/// automerge inside [`catch_automerge`].
///
/// Automerge 0.12 tests its change hashes against the peer's Bloom filters
/// here, not when receiving them, so this is where a hostile filter that got
/// past the guards would panic. On [`GuardError::AutomergePanicked`], discard
/// `doc` and `state` and reload the document from storage.
pub fn generate_sync_message(
    doc: &Automerge,
    state: &mut sync::State,
) -> Result<Option<sync::Message>, GuardError> {
    catch_automerge(|| doc.generate_sync_message(state))
}

/// Loads a document from bytes (storage or a peer) after checking every
/// chunk's header and layout and that its inflated size stays within
/// `Limits::max_document_bytes`, then checks `Limits::max_document_ops`.
pub fn load_document(bytes: &[u8], limits: &Limits) -> Result<Automerge, GuardError> {
    check_document_size(bytes.len(), 0, limits)?;
    let mut budget = ChunkBudget::new(limits.max_document_bytes, "max_document_bytes");
    if !bytes.is_empty() {
        check_chunks(bytes, limits, &mut budget)?;
    }
    if budget.ops > limits.max_document_ops {
        return Err(GuardError::TooManyOps {
            ops: budget.ops,
            limit: limits.max_document_ops,
        });
    }
    let doc = catch_automerge(|| Automerge::load(bytes))?.map_err(automerge_error)?;
    check_ops(&doc, limits)?;
    Ok(doc)
}

/// Applies concatenated chunks (changes, compressed changes, bundles or
/// documents, from storage or a peer) to `doc`, after checking every chunk's
/// header and layout and that their inflated size stays within
/// `Limits::max_decompressed_message_bytes`. Returns the number of chunks.
///
/// After [`GuardError::AutomergePanicked`] or
/// [`GuardError::DocumentTooManyOps`], discard `doc` and reload from storage.
pub fn load_changes(
    doc: &mut Automerge,
    bytes: &[u8],
    limits: &Limits,
) -> Result<usize, GuardError> {
    let mut known = KnownActors::from_doc(doc);
    load_changes_known(doc, bytes, limits, &mut known)
}

/// [`load_changes`] with the document's [`KnownActors`] kept by the caller
/// (and updated here): loading a long change log costs no walk of the
/// history per change.
pub fn load_changes_known(
    doc: &mut Automerge,
    bytes: &[u8],
    limits: &Limits,
    known: &mut KnownActors,
) -> Result<usize, GuardError> {
    if bytes.len() > limits.max_decompressed_message_bytes {
        return Err(GuardError::TooLong {
            what: "changes to load (max_decompressed_message_bytes)",
            len: bytes.len() as u64,
            limit: limits.max_decompressed_message_bytes,
        });
    }
    let mut budget = ChunkBudget::new(
        limits.max_decompressed_message_bytes,
        "max_decompressed_message_bytes",
    );
    check_chunks(bytes, limits, &mut budget)?;
    check_incoming_ops(doc, budget.ops, limits)?;
    check_actors(doc, &budget, limits, known)?;
    let heads = doc.get_heads();
    catch_automerge(|| doc.load_incremental(bytes))?.map_err(automerge_error)?;
    catch_automerge(|| known.learn(doc, &heads))?;
    check_ops(doc, limits)?;
    Ok(budget.chunks)
}

/// Loads a stored change log (one entry per stored change, oldest first)
/// into `doc`, through the same checks as [`load_changes_known`].
///
/// automerge 0.12 rebuilds part of its op set on every `load_incremental`,
/// so a call costs time in proportion to the whole document: 500 stored
/// changes loaded one call each took 3.5 s on a 20,000-change case, and
/// 40 ms in one call (`examples/cold_probe.rs`). The log is therefore loaded
/// in as few calls as the limits allow: each batch stays within
/// `max_chunks` and holds at most a quarter of
/// `max_decompressed_message_bytes` of stored bytes, so a batch of
/// compressed changes still has room to inflate. A batch refused before
/// automerge ran (a size limit, say) is retried change by change, so the
/// error names the change at fault; a batch automerge failed on is not, as
/// the document must then be dropped anyway. Returns the number of chunks.
pub fn load_change_log(
    doc: &mut Automerge,
    changes: &[Vec<u8>],
    limits: &Limits,
    known: &mut KnownActors,
) -> Result<usize, GuardError> {
    let max_bytes = (limits.max_decompressed_message_bytes / 4).max(1);
    let max_count = limits.max_chunks.max(1);
    let mut loaded = 0;
    let mut rest = changes;
    while !rest.is_empty() {
        let mut count = 0;
        let mut bytes = 0usize;
        for c in rest {
            if count > 0 && (count >= max_count || bytes.saturating_add(c.len()) > max_bytes) {
                break;
            }
            count += 1;
            bytes = bytes.saturating_add(c.len());
        }
        let (batch, tail) = rest.split_at(count);
        rest = tail;
        if let [one] = batch {
            loaded += load_changes_known(doc, one, limits, known)?;
            continue;
        }
        match load_changes_known(doc, &batch.concat(), limits, known) {
            Ok(n) => loaded += n,
            Err(
                e @ (GuardError::AutomergePanicked
                | GuardError::DocumentTooManyOps { .. }
                | GuardError::Automerge(_)),
            ) => return Err(e),
            Err(_) => {
                for c in batch {
                    loaded += load_changes_known(doc, c, limits, known)?;
                }
            }
        }
    }
    Ok(loaded)
}

/// The changes `doc` holds beyond `heads_before`, as automerge lists them
/// for storage, checked against its change graph.
///
/// automerge 0.12 does not keep the changes it applies: it lists them by
/// rebuilding each from its operations. For some changes that it accepts
/// (found by fuzzing a release build) the rebuilt bytes differ from the
/// bytes it received, so they hash differently from the change its graph
/// and heads name. Stored, such a change would reload as another change:
/// the heads the peers were told would never come back, and every later
/// change that depends on the original would wait for it forever. So the
/// hashes of the listed changes must be exactly the hashes the graph holds
/// for them; otherwise this is a refusal after automerge ran (the caller
/// must drop the document and reload it, as after a panic).
pub fn new_changes(
    doc: &Automerge,
    heads_before: &[ChangeHash],
) -> Result<Vec<Change>, GuardError> {
    let changes = catch_automerge(|| doc.get_changes(heads_before))?;
    let in_graph: BTreeSet<ChangeHash> = catch_automerge(|| {
        doc.get_changes_meta(heads_before)
            .into_iter()
            .map(|meta| meta.hash)
            .collect()
    })?;
    let listed: BTreeSet<ChangeHash> = changes.iter().map(Change::hash).collect();
    if listed.len() != changes.len() || listed != in_graph {
        return Err(GuardError::NotReproducible);
    }
    Ok(changes)
}

/// Decodes a persisted sync state after checking its layout.
pub fn decode_sync_state(bytes: &[u8], limits: &Limits) -> Result<sync::State, GuardError> {
    check_sync_state(bytes, limits)?;
    catch_automerge(|| sync::State::decode(bytes))?.map_err(automerge_error)
}

/// Refuses input that could take `doc` past `Limits::max_document_ops`.
/// `incoming` is an upper bound (changes the document already has are
/// counted again), so a document within half the limit never trips it.
fn check_incoming_ops(doc: &Automerge, incoming: u64, limits: &Limits) -> Result<(), GuardError> {
    let ops = doc.stats().num_ops.saturating_add(incoming);
    if ops > limits.max_document_ops {
        return Err(GuardError::TooManyOps {
            ops,
            limit: limits.max_document_ops,
        });
    }
    Ok(())
}

fn check_ops(doc: &Automerge, limits: &Limits) -> Result<(), GuardError> {
    let ops = doc.stats().num_ops;
    if ops > limits.max_document_ops {
        return Err(GuardError::DocumentTooManyOps {
            ops,
            limit: limits.max_document_ops,
        });
    }
    Ok(())
}

fn automerge_error(error: impl std::fmt::Display) -> GuardError {
    GuardError::Automerge(error.to_string())
}

fn saturating_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}
