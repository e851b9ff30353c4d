//! Creating documents from the template, and edits as plain data.

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{Automerge, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue};

use crate::ids::DocumentId;

use super::date::FuzzyDate;
use super::error::ModelError;
use super::read::Reader;
use super::schema::{
    Collection, DocKind, Field, ItemField, ItemRef, Section, StatusClaimField, CASE_KEY,
    COORDINATION_KEY, CREATED_AT_KEY, CREATED_BY_KEY, DELETED_AT_KEY, DELETED_BY_KEY, KIND_KEY,
    SCHEMA_KEY, SCHEMA_VERSION,
};
use super::values::{FieldKind, FieldValue, ItemId, Status};

/// Longest string a register accepts, in bytes. Registers hold names,
/// numbers and dates; prose belongs in a narrative.
pub const MAX_REGISTER_BYTES: usize = 4 * 1024;
/// Most text one splice may insert, in bytes.
pub const MAX_SPLICE_BYTES: usize = 256 * 1024;
/// Longest author string, in bytes.
pub const MAX_AUTHOR_BYTES: usize = 256;

/// What the creator of a case document supplies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseInit {
    /// Who creates the case (a user id); stored as `created_by`.
    pub created_by: String,
    /// The case's coordination document, when it already exists.
    pub coordination: Option<DocumentId>,
}

/// What the creator of a coordination document supplies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinationInit {
    pub created_by: String,
    /// The case document this coordinates.
    pub case: DocumentId,
}

/// One edit of a case or coordination document, as plain data.
///
/// Text positions (`pos`, `delete`) count Unicode code points, the text
/// encoding of an `Automerge::new()` document. (A JS peer counts UTF-16 code
/// units; the JS glue converts.)
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Set (or, with [`FieldValue::Null`], clear) a register of a section.
    SetField {
        field: Field,
        value: FieldValue,
    },
    /// Edit a narrative of a section by splice.
    SpliceText {
        field: Field,
        pos: usize,
        delete: usize,
        insert: String,
    },
    /// Create an item under a fresh id, with its narratives and sets, and
    /// set some of its fields. A narrative's value (a
    /// [`FieldValue::Str`]) becomes its initial text.
    AddItem {
        item: ItemRef,
        values: Vec<(ItemField, FieldValue)>,
    },
    SetItemField {
        item: ItemRef,
        field: ItemField,
        value: FieldValue,
    },
    SpliceItemText {
        item: ItemRef,
        field: ItemField,
        pos: usize,
        delete: usize,
        insert: String,
    },
    /// Soft delete: sets `deleted_at` and `deleted_by`. The item and any
    /// edit racing the delete stay in the document.
    DeleteItem {
        item: ItemRef,
    },
    /// Undoes a soft delete.
    RestoreItem {
        item: ItemRef,
    },
    /// Add a status claim citing sources, in one change.
    AddStatusClaim {
        id: ItemId,
        status: Status,
        claimed_by: String,
        as_of: Option<FuzzyDate>,
        statement: String,
        sources: Vec<ItemId>,
    },
    /// Add a source to an item's `source_ids` (status claims, timeline).
    CiteSource {
        item: ItemRef,
        source: ItemId,
    },
    UnciteSource {
        item: ItemRef,
        source: ItemId,
    },
    /// Coordination document: set the official status and replace its
    /// basis (ids of sources in the case document).
    SetOfficialStatus {
        status: Status,
        basis: Vec<ItemId>,
    },
    /// Case document: set the coordination document link.
    LinkCoordination {
        coordination: DocumentId,
    },
}

impl Edit {
    /// The document this edit applies to.
    pub fn doc_kind(&self) -> DocKind {
        match self {
            Edit::SetField { field, .. } | Edit::SpliceText { field, .. } => field.section().doc(),
            Edit::AddItem { item, .. }
            | Edit::SetItemField { item, .. }
            | Edit::SpliceItemText { item, .. }
            | Edit::DeleteItem { item }
            | Edit::RestoreItem { item }
            | Edit::CiteSource { item, .. }
            | Edit::UnciteSource { item, .. } => item.collection.doc(),
            Edit::AddStatusClaim { .. } | Edit::LinkCoordination { .. } => DocKind::Case,
            Edit::SetOfficialStatus { .. } => DocKind::Coordination,
        }
    }

    /// The change message. It names what was touched and never carries
    /// case contents, so change lists can be shown and logged safely.
    pub fn message(&self) -> String {
        match self {
            Edit::SetField {
                field,
                value: FieldValue::Null,
            } => format!("clear {}", field.path()),
            Edit::SetField { field, .. } => format!("set {}", field.path()),
            Edit::SpliceText { field, .. } => format!("edit {}", field.path()),
            Edit::AddItem { item, .. } => format!("add {}", item.path()),
            Edit::SetItemField {
                item,
                field,
                value: FieldValue::Null,
            } => format!("clear {}.{}", item.path(), field.key()),
            Edit::SetItemField { item, field, .. } => {
                format!("set {}.{}", item.path(), field.key())
            }
            Edit::SpliceItemText { item, field, .. } => {
                format!("edit {}.{}", item.path(), field.key())
            }
            Edit::DeleteItem { item } => format!("delete {}", item.path()),
            Edit::RestoreItem { item } => format!("restore {}", item.path()),
            Edit::AddStatusClaim { id, .. } => format!("add status_claims.{id}"),
            Edit::CiteSource { item, source } => {
                format!("cite sources.{source} in {}", item.path())
            }
            Edit::UnciteSource { item, source } => {
                format!("uncite sources.{source} in {}", item.path())
            }
            Edit::SetOfficialStatus { .. } => "set official_status".to_owned(),
            Edit::LinkCoordination { .. } => "link coordination document".to_owned(),
        }
    }
}

/// Commit options for a change made at `now_ms`.
///
/// automerge's change `time` is in **seconds** since the Unix epoch: stock
/// JS automerge stamps `Math.floor(Date.now() / 1000)` and the Rust API
/// documents seconds. We follow it so that history from JS and Rust peers
/// lines up; times stored *inside* the document (`created_at`,
/// `deleted_at`) are milliseconds, as a JS `Date` is.
pub fn commit_options(message: String, now_ms: i64) -> CommitOptions {
    CommitOptions::default()
        .with_message(message)
        .with_time(now_ms.div_euclid(1000))
}

fn check_author(author: &str) -> Result<(), ModelError> {
    let reason = if author.is_empty() {
        Some("empty")
    } else if author.len() > MAX_AUTHOR_BYTES {
        Some("longer than 256 bytes")
    } else if author.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ModelError::InvalidAuthor { reason }),
        None => Ok(()),
    }
}

fn create_container(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    kind: FieldKind,
    path: &str,
) -> Result<(), ModelError> {
    let obj_type = match kind {
        FieldKind::Text => ObjType::Text,
        FieldKind::SourceIds | FieldKind::Replies => ObjType::Map,
        FieldKind::Str | FieldKind::Date | FieldKind::Int | FieldKind::Status => return Ok(()),
    };
    tx.put_object(obj, key, obj_type)
        .map(drop)
        .map_err(ModelError::automerge(format!("{path}.{key}")))
}

fn create_template(
    tx: &mut Transaction<'_>,
    doc_kind: DocKind,
    created_by: &str,
    now_ms: i64,
) -> Result<(), ModelError> {
    if tx.keys(ObjId::Root).next().is_some() {
        return Err(ModelError::AlreadyInitialized);
    }
    let root = ObjId::Root;
    let put = |tx: &mut Transaction<'_>, key: &str, value: ScalarValue| {
        tx.put(&root, key, value)
            .map_err(ModelError::automerge(key))
    };
    put(tx, KIND_KEY, doc_kind.tag().into())?;
    put(tx, SCHEMA_KEY, ScalarValue::Int(SCHEMA_VERSION as i64))?;
    put(tx, CREATED_AT_KEY, ScalarValue::Timestamp(now_ms))?;
    put(tx, CREATED_BY_KEY, created_by.into())?;
    for section in Section::ALL.into_iter().filter(|s| s.doc() == doc_kind) {
        let obj = tx
            .put_object(&root, section.key(), ObjType::Map)
            .map_err(ModelError::automerge(section.key()))?;
        for (key, kind) in section.field_specs() {
            create_container(tx, &obj, key, kind, section.key())?;
        }
    }
    for collection in Collection::ALL
        .into_iter()
        .filter(|c| c.in_template(doc_kind))
    {
        let path = collection.path();
        let Some((last, parents)) = path.split_last() else {
            continue;
        };
        let parent = Reader::now(&*tx)
            .map_path(parents)?
            .ok_or_else(|| ModelError::Missing {
                path: parents.join("."),
            })?;
        tx.put_object(&parent, *last, ObjType::Map)
            .map_err(ModelError::automerge(collection.name()))?;
    }
    Ok(())
}

fn commit_template(
    doc: &mut Automerge,
    kind: DocKind,
    created_by: &str,
    now_ms: i64,
    extra: impl FnOnce(&mut Transaction<'_>) -> Result<(), ModelError>,
) -> Result<ChangeHash, ModelError> {
    check_author(created_by)?;
    let message = format!("create {} from template v{SCHEMA_VERSION}", kind.name());
    let success = doc
        .transact_with(
            |_| commit_options(message, now_ms),
            |tx| {
                create_template(tx, kind, created_by, now_ms)?;
                extra(tx)
            },
        )
        .map_err(|failure| failure.error)?;
    success.hash.ok_or(ModelError::NothingWritten)
}

/// Creates every container of a case document, once, in one change.
/// Refuses a document that already has content.
pub fn create_case(
    doc: &mut Automerge,
    init: &CaseInit,
    now_ms: i64,
) -> Result<ChangeHash, ModelError> {
    commit_template(doc, DocKind::Case, &init.created_by, now_ms, |tx| {
        if let Some(coordination) = &init.coordination {
            tx.put(ObjId::Root, COORDINATION_KEY, coordination.to_string())
                .map_err(ModelError::automerge(COORDINATION_KEY))?;
        }
        Ok(())
    })
}

/// Creates every container of a coordination document, once.
pub fn create_coordination(
    doc: &mut Automerge,
    init: &CoordinationInit,
    now_ms: i64,
) -> Result<ChangeHash, ModelError> {
    commit_template(doc, DocKind::Coordination, &init.created_by, now_ms, |tx| {
        tx.put(ObjId::Root, CASE_KEY, init.case.to_string())
            .map_err(ModelError::automerge(CASE_KEY))
    })
}

/// Applies one edit as one change, stamped with `now_ms` (see
/// [`commit_options`] for the unit) and [`Edit::message`]. Returns `None`
/// when the edit changed nothing (an empty splice). On error nothing is
/// written.
pub fn apply_edit(
    doc: &mut Automerge,
    edit: &Edit,
    author: &str,
    now_ms: i64,
) -> Result<Option<ChangeHash>, ModelError> {
    check_author(author)?;
    let message = edit.message();
    doc.transact_with(
        |_| commit_options(message, now_ms),
        |tx| apply_in(tx, edit, author, now_ms),
    )
    .map(|success| success.hash)
    .map_err(|failure| failure.error)
}

fn apply_in(
    tx: &mut Transaction<'_>,
    edit: &Edit,
    author: &str,
    now_ms: i64,
) -> Result<(), ModelError> {
    Reader::now(&*tx).check_root(edit.doc_kind())?;
    match edit {
        Edit::SetField { field, value } => {
            let path = field.path();
            let section = section_obj(tx, field.section())?;
            let scalar = register_value(field.kind(), value, &path)?;
            put(tx, &section, field.key(), scalar, &path)
        }
        Edit::SpliceText {
            field,
            pos,
            delete,
            insert,
        } => {
            let path = field.path();
            if field.kind() != FieldKind::Text {
                return Err(not_a_narrative(path, field.kind()));
            }
            let section = section_obj(tx, field.section())?;
            splice(tx, &section, field.key(), *pos, *delete, insert, &path)
        }
        Edit::AddItem { item, values } => {
            let obj = add_item(tx, item, author, now_ms)?;
            for (field, value) in values {
                check_field_collection(item, *field)?;
                let path = format!("{}.{}", item.path(), field.key());
                if field.kind() == FieldKind::Text {
                    let FieldValue::Str(text) = value else {
                        return Err(ModelError::WrongValueKind {
                            path,
                            expected: "string",
                            given: value.kind_name(),
                        });
                    };
                    splice(tx, &obj, field.key(), 0, 0, text, &path)?;
                } else {
                    let scalar = register_value(field.kind(), value, &path)?;
                    put(tx, &obj, field.key(), scalar, &path)?;
                }
            }
            Ok(())
        }
        Edit::SetItemField { item, field, value } => {
            check_field_collection(item, *field)?;
            let path = format!("{}.{}", item.path(), field.key());
            let obj = item_obj(tx, item)?;
            let scalar = register_value(field.kind(), value, &path)?;
            put(tx, &obj, field.key(), scalar, &path)
        }
        Edit::SpliceItemText {
            item,
            field,
            pos,
            delete,
            insert,
        } => {
            check_field_collection(item, *field)?;
            let path = format!("{}.{}", item.path(), field.key());
            if field.kind() != FieldKind::Text {
                return Err(not_a_narrative(path, field.kind()));
            }
            let obj = item_obj(tx, item)?;
            splice(tx, &obj, field.key(), *pos, *delete, insert, &path)
        }
        Edit::DeleteItem { item } => {
            let obj = item_obj(tx, item)?;
            let path = item.path();
            put(
                tx,
                &obj,
                DELETED_AT_KEY,
                ScalarValue::Timestamp(now_ms),
                &path,
            )?;
            put(tx, &obj, DELETED_BY_KEY, author.into(), &path)
        }
        Edit::RestoreItem { item } => {
            let obj = item_obj(tx, item)?;
            let path = item.path();
            put(tx, &obj, DELETED_AT_KEY, ScalarValue::Null, &path)?;
            put(tx, &obj, DELETED_BY_KEY, ScalarValue::Null, &path)
        }
        Edit::AddStatusClaim {
            id,
            status,
            claimed_by,
            as_of,
            statement,
            sources,
        } => {
            let item = ItemRef::new(Collection::StatusClaims, id.clone());
            let mut values = vec![
                (
                    ItemField::StatusClaim(StatusClaimField::Status),
                    FieldValue::Status(*status),
                ),
                (
                    ItemField::StatusClaim(StatusClaimField::ClaimedBy),
                    FieldValue::Str(claimed_by.clone()),
                ),
                (
                    ItemField::StatusClaim(StatusClaimField::Statement),
                    FieldValue::Str(statement.clone()),
                ),
            ];
            if let Some(as_of) = as_of {
                values.push((
                    ItemField::StatusClaim(StatusClaimField::AsOf),
                    FieldValue::Date(as_of.clone()),
                ));
            }
            apply_in(
                tx,
                &Edit::AddItem {
                    item: item.clone(),
                    values,
                },
                author,
                now_ms,
            )?;
            for source in sources {
                cite(tx, &item, source, true)?;
            }
            Ok(())
        }
        Edit::CiteSource { item, source } => cite(tx, item, source, true),
        Edit::UnciteSource { item, source } => cite(tx, item, source, false),
        Edit::SetOfficialStatus { status, basis } => {
            let section = section_obj(tx, Section::OfficialStatus)?;
            let path = Section::OfficialStatus.key();
            put(tx, &section, "status", status.as_str().into(), path)?;
            put(tx, &section, "set_by", author.into(), path)?;
            put(tx, &section, "set_at", ScalarValue::Int(now_ms), path)?;
            let set_path = format!("{path}.basis");
            let set = Reader::now(&*tx)
                .map(&section, "basis", &set_path)?
                .ok_or_else(|| ModelError::Missing {
                    path: set_path.clone(),
                })?;
            let current = Reader::now(&*tx).keys(&set);
            for old in current
                .iter()
                .filter(|k| !basis.iter().any(|b| b.as_str() == k.as_str()))
            {
                tx.delete(&set, old.as_str())
                    .map_err(ModelError::automerge(set_path.clone()))?;
            }
            // Only ids that are not there yet are written, so two
            // coordinators agreeing on a source do not make a conflict.
            for id in basis
                .iter()
                .filter(|b| !current.iter().any(|k| k == b.as_str()))
            {
                put(tx, &set, id.as_str(), true.into(), &set_path)?;
            }
            Ok(())
        }
        Edit::LinkCoordination { coordination } => put(
            tx,
            &ObjId::Root,
            COORDINATION_KEY,
            coordination.to_string().into(),
            COORDINATION_KEY,
        ),
    }
}

fn not_a_narrative(path: String, kind: FieldKind) -> ModelError {
    ModelError::WrongFieldKind {
        path,
        kind: kind.name(),
        hint: "only narratives are edited by splice",
    }
}

fn put(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    value: ScalarValue,
    path: &str,
) -> Result<(), ModelError> {
    tx.put(obj, key, value).map_err(ModelError::automerge(path))
}

/// Checks that `value` fits a register of `kind` and converts it to what is
/// stored.
fn register_value(
    kind: FieldKind,
    value: &FieldValue,
    path: &str,
) -> Result<ScalarValue, ModelError> {
    let hint = match kind {
        FieldKind::Text => Some("narratives are edited by splice"),
        FieldKind::SourceIds => Some("cite or uncite sources instead"),
        FieldKind::Replies => Some("add replies as items"),
        FieldKind::Str | FieldKind::Date | FieldKind::Int | FieldKind::Status => None,
    };
    if let Some(hint) = hint {
        return Err(ModelError::WrongFieldKind {
            path: path.to_owned(),
            kind: kind.name(),
            hint,
        });
    }
    match (kind, value) {
        (_, FieldValue::Null) => Ok(ScalarValue::Null),
        (FieldKind::Str, FieldValue::Str(s)) => {
            if s.len() > MAX_REGISTER_BYTES {
                return Err(ModelError::InvalidValue {
                    path: path.to_owned(),
                    reason: format!("{} bytes is longer than {MAX_REGISTER_BYTES}", s.len()),
                });
            }
            Ok(s.as_str().into())
        }
        (FieldKind::Date, FieldValue::Date(d)) => {
            d.validate().map_err(|e| ModelError::InvalidValue {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            Ok(d.to_string().into())
        }
        (FieldKind::Int, FieldValue::Int(i)) => Ok(ScalarValue::Int(*i)),
        (FieldKind::Status, FieldValue::Status(s)) => Ok(s.as_str().into()),
        (kind, value) => Err(ModelError::WrongValueKind {
            path: path.to_owned(),
            expected: kind.name(),
            given: value.kind_name(),
        }),
    }
}

fn splice(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    pos: usize,
    delete: usize,
    insert: &str,
    path: &str,
) -> Result<(), ModelError> {
    if insert.len() > MAX_SPLICE_BYTES {
        return Err(ModelError::InvalidValue {
            path: path.to_owned(),
            reason: format!(
                "inserting {} bytes, more than {MAX_SPLICE_BYTES}",
                insert.len()
            ),
        });
    }
    // Never create a narrative here: only the template or the item's
    // creation does, so two devices cannot race to create it.
    let text = Reader::now(&*tx)
        .object(obj, key, path, ObjType::Text)?
        .ok_or_else(|| ModelError::Missing {
            path: path.to_owned(),
        })?;
    let len = tx.length(&text);
    let out_of_range = || ModelError::SpliceOutOfRange {
        path: path.to_owned(),
        pos,
        delete,
        len,
    };
    if pos > len || pos.checked_add(delete).is_none_or(|end| end > len) {
        return Err(out_of_range());
    }
    let delete = isize::try_from(delete).map_err(|_| out_of_range())?;
    tx.splice_text(&text, pos, delete, insert)
        .map_err(ModelError::automerge(path))
}

fn section_obj(tx: &Transaction<'_>, section: Section) -> Result<ObjId, ModelError> {
    let key = section.key();
    Reader::now(tx)
        .map(&ObjId::Root, key, key)?
        .ok_or_else(|| ModelError::Missing {
            path: key.to_owned(),
        })
}

fn check_field_collection(item: &ItemRef, field: ItemField) -> Result<(), ModelError> {
    if field.collection() == item.collection {
        Ok(())
    } else {
        Err(ModelError::FieldNotInCollection {
            field: field.key(),
            field_collection: field.collection().name(),
            item_collection: item.collection.name(),
        })
    }
}

/// The map holding the items of `item`'s collection.
fn collection_obj(tx: &Transaction<'_>, item: &ItemRef) -> Result<ObjId, ModelError> {
    let reader = Reader::now(tx);
    match (&item.parent, item.collection) {
        (Some(request), Collection::RequestReplies) => {
            let request_ref = ItemRef::new(Collection::Requests, request.clone());
            let request_obj = item_obj(tx, &request_ref)?;
            let path = format!("{}.replies", request_ref.path());
            reader
                .map(&request_obj, "replies", &path)?
                .ok_or(ModelError::Missing { path })
        }
        (None, Collection::RequestReplies) => Err(ModelError::InvalidValue {
            path: item.path(),
            reason: "a reply needs the id of its request".to_owned(),
        }),
        (Some(_), _) => Err(ModelError::InvalidValue {
            path: item.path(),
            reason: "only replies have a parent item".to_owned(),
        }),
        (None, collection) => {
            reader
                .map_path(collection.path())?
                .ok_or_else(|| ModelError::Missing {
                    path: collection.name().to_owned(),
                })
        }
    }
}

fn item_obj(tx: &Transaction<'_>, item: &ItemRef) -> Result<ObjId, ModelError> {
    let coll = collection_obj(tx, item)?;
    let path = item.path();
    Reader::now(tx)
        .map(&coll, item.id.as_str(), &path)?
        .ok_or(ModelError::NoSuchItem { path })
}

fn add_item(
    tx: &mut Transaction<'_>,
    item: &ItemRef,
    author: &str,
    now_ms: i64,
) -> Result<ObjId, ModelError> {
    let coll = collection_obj(tx, item)?;
    let path = item.path();
    let exists = !Reader::now(&*tx)
        .get_all(&coll, item.id.as_str(), &path)?
        .is_empty();
    if exists {
        return Err(ModelError::ItemExists { path });
    }
    let obj = tx
        .put_object(&coll, item.id.as_str(), ObjType::Map)
        .map_err(ModelError::automerge(path.clone()))?;
    put(
        tx,
        &obj,
        CREATED_AT_KEY,
        ScalarValue::Timestamp(now_ms),
        &path,
    )?;
    put(tx, &obj, CREATED_BY_KEY, author.into(), &path)?;
    for (key, kind) in item.collection.field_specs() {
        create_container(tx, &obj, key, kind, &path)?;
    }
    Ok(obj)
}

fn cite(
    tx: &mut Transaction<'_>,
    item: &ItemRef,
    source: &ItemId,
    add: bool,
) -> Result<(), ModelError> {
    let Some((key, _)) = item
        .collection
        .field_specs()
        .into_iter()
        .find(|(_, kind)| *kind == FieldKind::SourceIds)
    else {
        return Err(ModelError::InvalidValue {
            path: item.path(),
            reason: format!("{} items do not cite sources", item.collection.name()),
        });
    };
    let source_ref = ItemRef::new(Collection::Sources, source.clone());
    // A cited source must exist (it may be soft-deleted).
    item_obj(tx, &source_ref)?;
    let obj = item_obj(tx, item)?;
    let path = format!("{}.{key}", item.path());
    let set = Reader::now(&*tx)
        .map(&obj, key, &path)?
        .ok_or_else(|| ModelError::Missing { path: path.clone() })?;
    let present = !Reader::now(&*tx)
        .get_all(&set, source.as_str(), &path)?
        .is_empty();
    match (add, present) {
        (true, false) => put(tx, &set, source.as_str(), true.into(), &path),
        (false, true) => tx
            .delete(&set, source.as_str())
            .map_err(ModelError::automerge(path)),
        // Already as asked: write nothing, so no empty conflict appears.
        _ => Ok(()),
    }
}
