//! The case model: typed access to a case document and its coordination
//! document over automerge, following DESIGN.md section 3.
//!
//! - [`create_case`] and [`create_coordination`] build every container once
//!   from the versioned template ([`SCHEMA_VERSION`]).
//! - [`Edit`] is every operation a client can make, as plain data;
//!   [`apply_edit`] turns one into one change with a message and a time.
//! - [`read_case`] / [`read_coordination`] read into typed structs, and
//!   [`conflicts`] lists every key with concurrent values.
//!
//! Merge rules the model keeps (and `tests/model_*.rs` checks):
//! - Collections are maps keyed by an id the caller draws, never lists.
//! - Deletion is soft (`deleted_at`, `deleted_by`), so an edit racing a
//!   delete survives.
//! - Narratives are `Text`, edited by splice and merged by character.
//! - Short values are registers; a read returns every concurrent value
//!   ([`Register`]), never a silently chosen one.
//! - Dates carry their precision ([`FuzzyDate`]).
//! - Edits only write into containers the template created, or create a
//!   new item under a fresh id; they never `put_object` over an existing
//!   key.
//!
//! Document layout (case):
//!
//! ```text
//! kind: "casesync.case", schema_version: 1, created_at, created_by,
//! coordination: "<document id>"
//! person { registers, description: Text,
//!          name_variants {}, distinguishing_marks {}, medical_devices {},
//!          personal_effects {} }
//! military { registers }
//! disappearance { registers, circumstances: Text, last_contact_details: Text }
//! burial { registers, notes: Text }
//! status_claims {}, sources {}, requests { <id>: { ..., replies {} } },
//! external_refs {}, dna {}, remains {}, timeline {}, attachments {}, links {}
//! ```
//!
//! Every item holds `created_at`, `created_by`, and once deleted
//! `deleted_at`, `deleted_by`, beside its fields. The coordination document
//! holds `case`, `official_status { status, set_by, set_at, note, basis {} }`,
//! `closure`, `source_verification {}` and `duplicates {}`.
//!
//! This module does no IO and reads no clock: `now_ms`, ids and authors are
//! parameters.

mod date;
mod edit;
mod error;
mod read;
mod schema;
mod values;

pub use date::{CalendarDate, DateError, DatePrecision, FuzzyDate};
pub use edit::{
    apply_edit, commit_options, create_case, create_coordination, CaseInit, CoordinationInit, Edit,
    MAX_AUTHOR_BYTES, MAX_REGISTER_BYTES, MAX_SPLICE_BYTES,
};
pub use error::ModelError;
pub use read::{
    conflicts, conflicts_at, read_case, read_case_at, read_coordination, read_coordination_at,
    Conflict, RawValue, MAX_WALK_DEPTH,
};
pub use schema::*;
pub use values::{FieldKind, FieldValue, ItemId, Register, Status, Versioned, MAX_ITEM_ID_LEN};
