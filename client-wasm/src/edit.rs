//! Edits as they arrive from JS (JSON), converted to `sync_core::model::Edit`.
//!
//! This is type conversion only: every rule about what an edit may do lives
//! in `sync_core::model`.

use serde::Deserialize;
use std::collections::BTreeMap;
use sync_core::ids::DocumentId;
use sync_core::model::{
    Collection, Edit, Field, FieldKind, FieldValue, FuzzyDate, ItemField, ItemId, ItemRef, Status,
};

/// The JSON shape of an edit, tagged by `op`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum EditDto {
    Set {
        path: String,
        value: serde_json::Value,
    },
    Splice {
        path: String,
        pos: usize,
        delete: usize,
        insert: String,
    },
    AddItem {
        collection: String,
        id: String,
        #[serde(default)]
        request: Option<String>,
        #[serde(default)]
        values: BTreeMap<String, serde_json::Value>,
    },
    SetItem {
        collection: String,
        id: String,
        #[serde(default)]
        request: Option<String>,
        field: String,
        value: serde_json::Value,
    },
    SpliceItem {
        collection: String,
        id: String,
        #[serde(default)]
        request: Option<String>,
        field: String,
        pos: usize,
        delete: usize,
        insert: String,
    },
    DeleteItem {
        collection: String,
        id: String,
        #[serde(default)]
        request: Option<String>,
    },
    RestoreItem {
        collection: String,
        id: String,
        #[serde(default)]
        request: Option<String>,
    },
    AddStatusClaim {
        id: String,
        status: String,
        claimed_by: String,
        #[serde(default)]
        as_of: Option<String>,
        statement: String,
        #[serde(default)]
        sources: Vec<String>,
    },
    CiteSource {
        collection: String,
        id: String,
        source: String,
    },
    UnciteSource {
        collection: String,
        id: String,
        source: String,
    },
    SetOfficialStatus {
        status: String,
        #[serde(default)]
        basis: Vec<String>,
    },
    LinkCoordination {
        coordination: String,
    },
}

/// Why an edit from JS could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("edit is not valid JSON of a known shape: {0}")]
    Json(String),
    #[error("unknown field `{0}`")]
    UnknownField(String),
    #[error("unknown collection `{0}`")]
    UnknownCollection(String),
    #[error("invalid value for `{field}`: {reason}")]
    Value { field: String, reason: String },
}

fn item_id(s: &str) -> Result<ItemId, EditError> {
    s.parse()
        .map_err(|e: sync_core::model::ModelError| EditError::Value {
            field: "id".into(),
            reason: e.to_string(),
        })
}

fn item_ref(collection: &str, id: &str, request: Option<&str>) -> Result<ItemRef, EditError> {
    let c = Collection::by_name(collection)
        .ok_or_else(|| EditError::UnknownCollection(collection.to_owned()))?;
    Ok(match (c, request) {
        (Collection::RequestReplies, Some(r)) => ItemRef::reply(item_id(r)?, item_id(id)?),
        _ => ItemRef::new(c, item_id(id)?),
    })
}

fn value_for(kind: FieldKind, field: &str, v: &serde_json::Value) -> Result<FieldValue, EditError> {
    let bad = |reason: &str| EditError::Value {
        field: field.to_owned(),
        reason: reason.to_owned(),
    };
    if v.is_null() {
        return Ok(FieldValue::Null);
    }
    match kind {
        FieldKind::Str | FieldKind::Text => v
            .as_str()
            .map(|s| FieldValue::Str(s.to_owned()))
            .ok_or_else(|| bad("expected a string")),
        FieldKind::Int => v
            .as_i64()
            .map(FieldValue::Int)
            .ok_or_else(|| bad("expected an integer")),
        FieldKind::Date => {
            let s = v.as_str().ok_or_else(|| bad("expected a date string"))?;
            s.parse::<FuzzyDate>()
                .map(FieldValue::Date)
                .map_err(|e| bad(&e.to_string()))
        }
        FieldKind::Status => {
            let s = v.as_str().ok_or_else(|| bad("expected a status"))?;
            s.parse::<Status>()
                .map(FieldValue::Status)
                .map_err(|e| bad(&e.to_string()))
        }
        FieldKind::SourceIds | FieldKind::Replies => Err(bad("not a register")),
    }
}

/// Parses one edit.
pub fn parse(json: &str) -> Result<Edit, EditError> {
    let dto: EditDto = serde_json::from_str(json).map_err(|e| EditError::Json(e.to_string()))?;
    Ok(match dto {
        EditDto::Set { path, value } => {
            let field = Field::by_path(&path).ok_or(EditError::UnknownField(path.clone()))?;
            Edit::SetField {
                field,
                value: value_for(field.kind(), &path, &value)?,
            }
        }
        EditDto::Splice {
            path,
            pos,
            delete,
            insert,
        } => Edit::SpliceText {
            field: Field::by_path(&path).ok_or(EditError::UnknownField(path))?,
            pos,
            delete,
            insert,
        },
        EditDto::AddItem {
            collection,
            id,
            request,
            values,
        } => {
            let item = item_ref(&collection, &id, request.as_deref())?;
            let mut out = Vec::new();
            for (key, v) in values {
                let f = ItemField::by_key(item.collection, &key)
                    .ok_or_else(|| EditError::UnknownField(format!("{collection}.{key}")))?;
                out.push((f, value_for(f.kind(), &key, &v)?));
            }
            Edit::AddItem { item, values: out }
        }
        EditDto::SetItem {
            collection,
            id,
            request,
            field,
            value,
        } => {
            let item = item_ref(&collection, &id, request.as_deref())?;
            let f = ItemField::by_key(item.collection, &field)
                .ok_or_else(|| EditError::UnknownField(format!("{collection}.{field}")))?;
            Edit::SetItemField {
                value: value_for(f.kind(), &field, &value)?,
                item,
                field: f,
            }
        }
        EditDto::SpliceItem {
            collection,
            id,
            request,
            field,
            pos,
            delete,
            insert,
        } => {
            let item = item_ref(&collection, &id, request.as_deref())?;
            let f = ItemField::by_key(item.collection, &field)
                .ok_or_else(|| EditError::UnknownField(format!("{collection}.{field}")))?;
            Edit::SpliceItemText {
                item,
                field: f,
                pos,
                delete,
                insert,
            }
        }
        EditDto::DeleteItem {
            collection,
            id,
            request,
        } => Edit::DeleteItem {
            item: item_ref(&collection, &id, request.as_deref())?,
        },
        EditDto::RestoreItem {
            collection,
            id,
            request,
        } => Edit::RestoreItem {
            item: item_ref(&collection, &id, request.as_deref())?,
        },
        EditDto::AddStatusClaim {
            id,
            status,
            claimed_by,
            as_of,
            statement,
            sources,
        } => Edit::AddStatusClaim {
            id: item_id(&id)?,
            status: status.parse().map_err(|e: String| EditError::Value {
                field: "status".into(),
                reason: e,
            })?,
            claimed_by,
            as_of: as_of
                .map(|s| {
                    s.parse::<FuzzyDate>().map_err(|e| EditError::Value {
                        field: "as_of".into(),
                        reason: e.to_string(),
                    })
                })
                .transpose()?,
            statement,
            sources: sources
                .iter()
                .map(|s| item_id(s))
                .collect::<Result<_, _>>()?,
        },
        EditDto::CiteSource {
            collection,
            id,
            source,
        } => Edit::CiteSource {
            item: item_ref(&collection, &id, None)?,
            source: item_id(&source)?,
        },
        EditDto::UnciteSource {
            collection,
            id,
            source,
        } => Edit::UnciteSource {
            item: item_ref(&collection, &id, None)?,
            source: item_id(&source)?,
        },
        EditDto::SetOfficialStatus { status, basis } => Edit::SetOfficialStatus {
            status: status.parse().map_err(|e: String| EditError::Value {
                field: "status".into(),
                reason: e,
            })?,
            basis: basis.iter().map(|s| item_id(s)).collect::<Result<_, _>>()?,
        },
        EditDto::LinkCoordination { coordination } => Edit::LinkCoordination {
            coordination: DocumentId::parse_url_or_id(&coordination).map_err(|e| {
                EditError::Value {
                    field: "coordination".into(),
                    reason: e.to_string(),
                }
            })?,
        },
    })
}
