//! Reading documents into typed structs, leniently where stock JS writes
//! differently, strictly (an error, never a panic) where a type is wrong.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Automerge, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, Value};

use super::date::FuzzyDate;
use super::error::ModelError;
use super::schema::{
    Attachment, Burial, Case, CaseLink, Closure, Collection, Coordination, Disappearance,
    DistinguishingMark, DnaSample, DocKind, DuplicateLink, ExternalRef, Item, MedicalDevice,
    Military, NameVariant, OfficialStatus, Person, PersonalEffect, RemainsReport, Request, Section,
    Source, SourceVerification, StatusClaim, TimelineEntry, CASE_KEY, COORDINATION_KEY,
    CREATED_AT_KEY, CREATED_BY_KEY, DELETED_AT_KEY, DELETED_BY_KEY, KIND_KEY, SCHEMA_KEY,
    SCHEMA_VERSION,
};
use super::values::{ItemId, Register, Status, Versioned};

/// How deep [`conflicts`] descends. The template is four levels deep
/// (`requests.<id>.replies.<id>.field`); anything deeper was not written by
/// this model and is not walked, so a hostile document cannot make the walk
/// arbitrarily long through nesting alone.
pub const MAX_WALK_DEPTH: usize = 8;

/// Reads a document, now or as it stood at some heads. Generic over
/// `ReadDoc` so edits can read inside their transaction.
#[derive(Debug)]
pub(crate) struct Reader<'a, D: ReadDoc> {
    pub(crate) doc: &'a D,
    pub(crate) heads: Option<&'a [ChangeHash]>,
}

impl<'a, D: ReadDoc> Reader<'a, D> {
    pub(crate) fn now(doc: &'a D) -> Self {
        Self { doc, heads: None }
    }

    pub(crate) fn get_all(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Result<Vec<(Value<'a>, ObjId)>, ModelError> {
        match self.heads {
            Some(heads) => self.doc.get_all_at(obj, key, heads),
            None => self.doc.get_all(obj, key),
        }
        .map_err(ModelError::automerge(path))
    }

    pub(crate) fn keys(&self, obj: &ObjId) -> Vec<String> {
        match self.heads {
            Some(heads) => self.doc.keys_at(obj, heads).collect(),
            None => self.doc.keys(obj).collect(),
        }
    }

    pub(crate) fn text(&self, obj: &ObjId, path: &str) -> Result<String, ModelError> {
        match self.heads {
            Some(heads) => self.doc.text_at(obj, heads),
            None => self.doc.text(obj),
        }
        .map_err(ModelError::automerge(path))
    }

    /// The object under `key`, which must be of type `want` (a table passes
    /// for a map). `None` when the key is absent.
    pub(crate) fn object(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
        want: ObjType,
    ) -> Result<Option<ObjId>, ModelError> {
        let mut values = self.get_all(obj, key, path)?;
        match values.pop() {
            None => Ok(None),
            Some((Value::Object(found), id))
                if found == want || (want == ObjType::Map && found == ObjType::Table) =>
            {
                Ok(Some(id))
            }
            Some((value, _)) => Err(ModelError::WrongType {
                path: path.to_owned(),
                expected: obj_type_name(want),
                found: describe(&value),
            }),
        }
    }

    pub(crate) fn map(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Result<Option<ObjId>, ModelError> {
        self.object(obj, key, path, ObjType::Map)
    }

    /// A string register value: a scalar string, or a `Text` object (which
    /// is how stock JS automerge stores a plain string). `None` for null.
    fn string_value(
        &self,
        value: &Value<'_>,
        id: &ObjId,
        path: &str,
    ) -> Result<Option<String>, ModelError> {
        match value {
            Value::Scalar(s) => match s.as_ref() {
                ScalarValue::Str(s) => Ok(Some(s.to_string())),
                ScalarValue::Null => Ok(None),
                other => Err(wrong(path, "a string", &scalar_name(other))),
            },
            Value::Object(ObjType::Text) => self.text(id, path).map(Some),
            Value::Object(t) => Err(wrong(path, "a string", obj_type_name(*t))),
        }
    }

    fn register<T>(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
        mut convert: impl FnMut(&Value<'a>, &ObjId, &str) -> Result<Option<T>, ModelError>,
    ) -> Result<Register<T>, ModelError> {
        let path = format!("{path}.{key}");
        let values = self
            .get_all(obj, key, &path)?
            .into_iter()
            .map(|(value, id)| {
                Ok(Versioned {
                    value: convert(&value, &id, &path)?,
                    actor: actor_hex(&id),
                    op: id.to_string(),
                })
            })
            .collect::<Result<_, ModelError>>()?;
        Ok(Register { values })
    }

    pub(crate) fn str_register(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Result<Register<String>, ModelError> {
        self.register(obj, key, path, |v, id, p| self.string_value(v, id, p))
    }

    pub(crate) fn date_register(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Result<Register<FuzzyDate>, ModelError> {
        self.register(obj, key, path, |v, id, p| {
            self.string_value(v, id, p)?
                .map(|s| {
                    s.parse().map_err(|e| ModelError::InvalidValue {
                        path: p.to_owned(),
                        reason: format!("{e}"),
                    })
                })
                .transpose()
        })
    }

    pub(crate) fn status_register(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Result<Register<Status>, ModelError> {
        self.register(obj, key, path, |v, id, p| {
            self.string_value(v, id, p)?
                .map(|s| {
                    s.parse().map_err(|reason| ModelError::InvalidValue {
                        path: p.to_owned(),
                        reason,
                    })
                })
                .transpose()
        })
    }

    pub(crate) fn int_register(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Result<Register<i64>, ModelError> {
        self.register(obj, key, path, |v, _, p| int_value(v, p))
    }

    /// A narrative: a `Text` object, or a scalar string from a writer that
    /// stored it as one. `None` when absent.
    pub(crate) fn narrative(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Result<Option<String>, ModelError> {
        let path = format!("{path}.{key}");
        let mut values = self.get_all(obj, key, &path)?;
        match values.pop() {
            None => Ok(None),
            Some((value, id)) => self.string_value(&value, &id, &path),
        }
    }

    /// A set of ids: the keys of a map. Values are not looked at, since a
    /// key is only ever put to add the id.
    pub(crate) fn source_ids(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Result<BTreeSet<ItemId>, ModelError> {
        let path = format!("{path}.{key}");
        let Some(set) = self.map(obj, key, &path)? else {
            return Ok(BTreeSet::new());
        };
        self.keys(&set)
            .into_iter()
            .map(|k| item_id(k, &path))
            .collect()
    }

    /// The first value of a register that is read as one value (creation
    /// time and author, written once).
    fn single<T>(register: Register<T>) -> Option<T> {
        register.values.into_iter().last().and_then(|v| v.value)
    }

    pub(crate) fn timestamp_register(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Result<Register<i64>, ModelError> {
        self.register(obj, key, path, |v, _, p| int_value(v, p))
    }

    pub(crate) fn collection<T>(
        &self,
        obj: &ObjId,
        key: &str,
        path: &str,
        read: fn(&Reader<'a, D>, &ObjId, &str) -> Result<T, ModelError>,
    ) -> Result<BTreeMap<ItemId, Item<T>>, ModelError> {
        let path = if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        };
        let Some(coll) = self.map(obj, key, &path)? else {
            return Ok(BTreeMap::new());
        };
        let mut items = BTreeMap::new();
        for key in self.keys(&coll) {
            let item_path = format!("{path}.{key}");
            let id = item_id(key, &path)?;
            let Some(item) = self.map(&coll, id.as_str(), &item_path)? else {
                continue;
            };
            let fields = read(self, &item, &item_path)?;
            items.insert(
                id.clone(),
                Item {
                    id,
                    created_at: Self::single(self.timestamp_register(
                        &item,
                        CREATED_AT_KEY,
                        &item_path,
                    )?),
                    created_by: Self::single(self.str_register(
                        &item,
                        CREATED_BY_KEY,
                        &item_path,
                    )?),
                    deleted_at: self.timestamp_register(&item, DELETED_AT_KEY, &item_path)?,
                    deleted_by: self.str_register(&item, DELETED_BY_KEY, &item_path)?,
                    fields,
                },
            );
        }
        Ok(items)
    }

    /// Reads a section with `read`; a missing section reads as empty.
    fn section<T: Default>(
        &self,
        section: Section,
        read: fn(&Reader<'a, D>, &ObjId, &str) -> Result<T, ModelError>,
    ) -> Result<T, ModelError> {
        let path = section.key();
        match self.map(&ObjId::Root, path, path)? {
            Some(obj) => read(self, &obj, path),
            None => Ok(T::default()),
        }
    }

    /// Checks the root's kind and schema version.
    pub(crate) fn check_root(&self, want: DocKind) -> Result<u64, ModelError> {
        let kind = Self::single(self.str_register(&ObjId::Root, KIND_KEY, "")?);
        if let Some(kind) = &kind {
            if kind != want.tag() {
                return Err(ModelError::WrongDocument {
                    expected: want.name(),
                    found: Some(kind.clone()),
                });
            }
        }
        let version = Self::single(self.int_register(&ObjId::Root, SCHEMA_KEY, "")?);
        let Some(version) = version else {
            return Err(ModelError::WrongDocument {
                expected: want.name(),
                found: kind,
            });
        };
        let version = u64::try_from(version).map_err(|_| ModelError::InvalidValue {
            path: SCHEMA_KEY.to_owned(),
            reason: format!("negative schema version {version}"),
        })?;
        if version > SCHEMA_VERSION {
            return Err(ModelError::UnsupportedSchema {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(version)
    }

    /// Resolves a map by its path of keys from the root.
    pub(crate) fn map_path(&self, keys: &[&str]) -> Result<Option<ObjId>, ModelError> {
        let mut obj = ObjId::Root;
        let mut path = String::new();
        for key in keys {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            match self.map(&obj, key, &path)? {
                Some(next) => obj = next,
                None => return Ok(None),
            }
        }
        Ok(Some(obj))
    }

    fn nested_collection<T>(
        &self,
        collection: Collection,
        read: fn(&Reader<'a, D>, &ObjId, &str) -> Result<T, ModelError>,
    ) -> Result<BTreeMap<ItemId, Item<T>>, ModelError> {
        let keys = collection.path();
        let Some((last, parents)) = keys.split_last() else {
            return Ok(BTreeMap::new());
        };
        match self.map_path(parents)? {
            Some(parent) => self.collection(&parent, last, &parents.join("."), read),
            None => Ok(BTreeMap::new()),
        }
    }

    fn case(&self) -> Result<Case, ModelError> {
        let schema_version = self.check_root(DocKind::Case)?;
        let root = ObjId::Root;
        Ok(Case {
            schema_version,
            created_at: Self::single(self.timestamp_register(&root, CREATED_AT_KEY, "")?),
            created_by: Self::single(self.str_register(&root, CREATED_BY_KEY, "")?),
            coordination: self.str_register(&root, COORDINATION_KEY, "")?,
            person: self.section(Section::Person, Person::read)?,
            name_variants: self.nested_collection(Collection::NameVariants, NameVariant::read)?,
            distinguishing_marks: self
                .nested_collection(Collection::DistinguishingMarks, DistinguishingMark::read)?,
            medical_devices: self
                .nested_collection(Collection::MedicalDevices, MedicalDevice::read)?,
            personal_effects: self
                .nested_collection(Collection::PersonalEffects, PersonalEffect::read)?,
            military: self.section(Section::Military, Military::read)?,
            disappearance: self.section(Section::Disappearance, Disappearance::read)?,
            status_claims: self.nested_collection(Collection::StatusClaims, StatusClaim::read)?,
            sources: self.nested_collection(Collection::Sources, Source::read)?,
            requests: self.nested_collection(Collection::Requests, Request::read)?,
            external_refs: self.nested_collection(Collection::ExternalRefs, ExternalRef::read)?,
            dna: self.nested_collection(Collection::Dna, DnaSample::read)?,
            remains: self.nested_collection(Collection::Remains, RemainsReport::read)?,
            burial: self.section(Section::Burial, Burial::read)?,
            timeline: self.nested_collection(Collection::Timeline, TimelineEntry::read)?,
            attachments: self.nested_collection(Collection::Attachments, Attachment::read)?,
            links: self.nested_collection(Collection::Links, CaseLink::read)?,
        })
    }

    fn coordination(&self) -> Result<Coordination, ModelError> {
        let schema_version = self.check_root(DocKind::Coordination)?;
        let root = ObjId::Root;
        Ok(Coordination {
            schema_version,
            created_at: Self::single(self.timestamp_register(&root, CREATED_AT_KEY, "")?),
            created_by: Self::single(self.str_register(&root, CREATED_BY_KEY, "")?),
            case: self.str_register(&root, CASE_KEY, "")?,
            official_status: self.section(Section::OfficialStatus, OfficialStatus::read)?,
            closure: self.section(Section::Closure, Closure::read)?,
            source_verification: self
                .nested_collection(Collection::SourceVerification, SourceVerification::read)?,
            duplicates: self.nested_collection(Collection::Duplicates, DuplicateLink::read)?,
        })
    }
}

fn item_id(key: String, path: &str) -> Result<ItemId, ModelError> {
    ItemId::new(key).map_err(|e| ModelError::InvalidValue {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn int_value(value: &Value<'_>, path: &str) -> Result<Option<i64>, ModelError> {
    match value {
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Ok(Some(*i)),
            ScalarValue::Uint(u) => i64::try_from(*u)
                .map(Some)
                .map_err(|_| wrong(path, "an integer", "an unsigned integer beyond i64")),
            // JS numbers may arrive as floats; accept them when whole.
            ScalarValue::F64(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                Ok(Some(*f as i64))
            }
            ScalarValue::Null => Ok(None),
            other => Err(wrong(path, "an integer", &scalar_name(other))),
        },
        Value::Object(t) => Err(wrong(path, "an integer", obj_type_name(*t))),
    }
}

fn wrong(path: &str, expected: &'static str, found: &str) -> ModelError {
    ModelError::WrongType {
        path: path.to_owned(),
        expected,
        found: found.to_owned(),
    }
}

pub(crate) fn obj_type_name(t: ObjType) -> &'static str {
    match t {
        ObjType::Map => "a map",
        ObjType::Table => "a table",
        ObjType::List => "a list",
        ObjType::Text => "a text",
    }
}

fn scalar_name(s: &ScalarValue) -> String {
    match s {
        ScalarValue::Bytes(_) => "bytes",
        ScalarValue::Str(_) => "a string",
        ScalarValue::Int(_) => "an integer",
        ScalarValue::Uint(_) => "an unsigned integer",
        ScalarValue::F64(_) => "a float",
        ScalarValue::Counter(_) => "a counter",
        ScalarValue::Timestamp(_) => "a timestamp",
        ScalarValue::Boolean(_) => "a boolean",
        ScalarValue::Unknown { .. } => "an unknown scalar",
        ScalarValue::Null => "null",
    }
    .to_owned()
}

pub(crate) fn describe(value: &Value<'_>) -> String {
    match value {
        Value::Object(t) => obj_type_name(*t).to_owned(),
        Value::Scalar(s) => scalar_name(s),
    }
}

pub(crate) fn actor_hex(id: &ObjId) -> String {
    match id {
        ObjId::Root => String::new(),
        ObjId::Id(_, actor, _) => actor.to_hex_string(),
    }
}

fn check_heads(doc: &Automerge, heads: &[ChangeHash]) -> Result<(), ModelError> {
    for hash in heads {
        if doc.get_change_meta_by_hash(hash).is_none() {
            return Err(ModelError::UnknownHeads {
                hash: hash.to_string(),
            });
        }
    }
    Ok(())
}

/// Reads the case document as it is now.
pub fn read_case(doc: &Automerge) -> Result<Case, ModelError> {
    Reader::now(doc).case()
}

/// Reads the case document as it stood at `heads`. Every head must be a
/// change the document holds.
pub fn read_case_at(doc: &Automerge, heads: &[ChangeHash]) -> Result<Case, ModelError> {
    check_heads(doc, heads)?;
    Reader {
        doc,
        heads: Some(heads),
    }
    .case()
}

/// Reads the coordination document as it is now.
pub fn read_coordination(doc: &Automerge) -> Result<Coordination, ModelError> {
    Reader::now(doc).coordination()
}

/// Reads the coordination document as it stood at `heads`.
pub fn read_coordination_at(
    doc: &Automerge,
    heads: &[ChangeHash],
) -> Result<Coordination, ModelError> {
    check_heads(doc, heads)?;
    Reader {
        doc,
        heads: Some(heads),
    }
    .coordination()
}

/// A value as stored, for showing a conflict.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    Str(String),
    /// The content of a `Text` object.
    Text(String),
    Int(i64),
    Uint(u64),
    F64(f64),
    Bool(bool),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Counter(i64),
    Bytes(Vec<u8>),
    Map,
    List,
    /// A scalar type from a newer automerge.
    Unknown,
}

/// A key holding more than one concurrent value.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// Dotted path, such as `military.unit` or `timeline.t1.title`.
    pub path: String,
    /// The same path as keys, for ids that might contain dots (keys written
    /// by other clients are not checked).
    pub keys: Vec<String>,
    /// Every concurrent value, with the actor that wrote it. A value of
    /// `None` is a clear (`null`).
    pub values: Vec<Versioned<RawValue>>,
}

fn raw_value<D: ReadDoc>(
    r: &Reader<'_, D>,
    value: &Value<'_>,
    id: &ObjId,
    path: &str,
) -> Option<RawValue> {
    match value {
        Value::Object(ObjType::Text) => Some(RawValue::Text(r.text(id, path).unwrap_or_default())),
        Value::Object(ObjType::Map | ObjType::Table) => Some(RawValue::Map),
        Value::Object(ObjType::List) => Some(RawValue::List),
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => Some(RawValue::Str(s.to_string())),
            ScalarValue::Int(i) => Some(RawValue::Int(*i)),
            ScalarValue::Uint(u) => Some(RawValue::Uint(*u)),
            ScalarValue::F64(f) => Some(RawValue::F64(*f)),
            ScalarValue::Boolean(b) => Some(RawValue::Bool(*b)),
            ScalarValue::Timestamp(t) => Some(RawValue::Timestamp(*t)),
            ScalarValue::Counter(c) => Some(RawValue::Counter(i64::from(c))),
            ScalarValue::Bytes(b) => Some(RawValue::Bytes(b.clone())),
            ScalarValue::Unknown { .. } => Some(RawValue::Unknown),
            ScalarValue::Null => None,
        },
    }
}

fn walk<D: ReadDoc>(
    r: &Reader<'_, D>,
    obj: &ObjId,
    keys: &mut Vec<String>,
    out: &mut Vec<Conflict>,
) {
    if keys.len() >= MAX_WALK_DEPTH {
        return;
    }
    for key in r.keys(obj) {
        keys.push(key);
        let path = keys.join(".");
        let values = r
            .get_all(obj, keys.last().map_or("", String::as_str), &path)
            .unwrap_or_default();
        if values.len() > 1 {
            out.push(Conflict {
                path: path.clone(),
                keys: keys.clone(),
                values: values
                    .iter()
                    .map(|(value, id)| Versioned {
                        value: raw_value(r, value, id, &path),
                        actor: actor_hex(id),
                        op: id.to_string(),
                    })
                    .collect(),
            });
        }
        // Descend into the winning map only: a losing map's subtree is not
        // what a reader sees, and the conflict above already reports it.
        if let Some((Value::Object(ObjType::Map | ObjType::Table), id)) = values.last() {
            walk(r, id, keys, out);
        }
        keys.pop();
    }
}

/// Every key with concurrent values in the document (case or
/// coordination), in document order: registers set concurrently, and also
/// any container two clients created over each other. Parts that cannot be
/// read are skipped rather than failing the whole list.
pub fn conflicts(doc: &Automerge) -> Vec<Conflict> {
    let mut out = Vec::new();
    walk(&Reader::now(doc), &ObjId::Root, &mut Vec::new(), &mut out);
    out
}

/// [`conflicts`] as the document stood at `heads`.
pub fn conflicts_at(doc: &Automerge, heads: &[ChangeHash]) -> Result<Vec<Conflict>, ModelError> {
    check_heads(doc, heads)?;
    let mut out = Vec::new();
    let reader = Reader {
        doc,
        heads: Some(heads),
    };
    walk(&reader, &ObjId::Root, &mut Vec::new(), &mut out);
    Ok(out)
}
