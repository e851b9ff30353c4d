//! The model's error type.

use automerge::AutomergeError;

/// Why a case or coordination document could not be read or edited.
///
/// Every variant names the document path it is about (dotted, such as
/// `military.unit` or `timeline.t1.title`), because documents come from the
/// network and a caller must be able to say which part was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: expected {expected}, found {found}")]
    WrongType {
        path: String,
        expected: &'static str,
        found: String,
    },
    #[error("{path}: {reason}")]
    InvalidValue { path: String, reason: String },
    #[error("{path} is missing; the template should have created it")]
    Missing { path: String },
    #[error("the document already holds a case or coordination template")]
    AlreadyInitialized,
    #[error("the document is not a {expected} document (kind {found:?})")]
    WrongDocument {
        expected: &'static str,
        found: Option<String>,
    },
    #[error("the document has schema version {found}, this build reads up to {supported}")]
    UnsupportedSchema { found: u64, supported: u64 },
    #[error("{path}: no such item")]
    NoSuchItem { path: String },
    #[error("{path}: an item with this id already exists")]
    ItemExists { path: String },
    #[error("{field} belongs to {field_collection}, not to {item_collection}")]
    FieldNotInCollection {
        field: &'static str,
        field_collection: &'static str,
        item_collection: &'static str,
    },
    #[error("{path} is a {kind} field; {hint}")]
    WrongFieldKind {
        path: String,
        kind: &'static str,
        hint: &'static str,
    },
    #[error("{path}: value of kind {given} given where {expected} is stored")]
    WrongValueKind {
        path: String,
        expected: &'static str,
        given: &'static str,
    },
    #[error("{path}: splice at {pos} deleting {delete} is outside a text of length {len}")]
    SpliceOutOfRange {
        path: String,
        pos: usize,
        delete: usize,
        len: usize,
    },
    #[error("invalid identifier {value:?}: {reason}")]
    InvalidId { value: String, reason: &'static str },
    #[error("invalid author: {reason}")]
    InvalidAuthor { reason: &'static str },
    #[error("heads name a change this document does not hold: {hash}")]
    UnknownHeads { hash: String },
    #[error("{path}: nested deeper than {max} levels")]
    TooDeep { path: String, max: usize },
    #[error("the edit wrote nothing where a change was required")]
    NothingWritten,
    #[error("automerge refused the operation at {path}: {source}")]
    Automerge {
        path: String,
        #[source]
        source: Box<AutomergeError>,
    },
}

impl ModelError {
    pub(crate) fn automerge(path: impl Into<String>) -> impl FnOnce(AutomergeError) -> ModelError {
        let path = path.into();
        move |source| ModelError::Automerge {
            path,
            source: Box::new(source),
        }
    }
}
