//! History queries over one case or coordination document, for
//! coordinators (DESIGN.md section 7): what a change touched, the readable
//! difference between two points, who wrote each span of a narrative, and
//! which change wrote a value.
//!
//! Everything here is pure: the caller hands in the document (a copy, read
//! from the server's actor) and the heads to look at. Who delivered a change
//! and when is not in the document; the server joins that in from its
//! change log by change hash.
//!
//! The readable difference walks the document at both points, guided by the
//! schema: registers show their values (`disappearance.place: 'Kharkiv
//! Oblast' → 'near Izium'`), every concurrent value included; narratives
//! show how many characters went in and out (`disappearance.circumstances:
//! text edited, +84 −12 characters`, counted from automerge's patches of
//! that text); collections show items added (`timeline: +1 item`), deleted
//! and restored; source-id sets show the ids added and removed.
//!
//! Every automerge call that walks the document runs inside
//! [`catch_automerge`]: the document was merged from devices, and a panic
//! must become an error, not a dead server thread.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::iter::{DocItem, Span};
use automerge::{
    Automerge, Change, ChangeHash, ObjId, ObjType, Patch, PatchAction, Prop, ReadDoc, ScalarValue,
    Value, ValueRef,
};
use serde_json::{json, Value as Json};

use crate::guard::catch_automerge;
use crate::model::{Collection, Conflict, FieldKind, RawValue, Section, Versioned, MAX_WALK_DEPTH};
use crate::view::scalar_json;

/// Item bookkeeping keys: not fields, shown as "added", "deleted" and
/// "restored" instead.
const CREATED_AT: &str = "created_at";
const CREATED_BY: &str = "created_by";
const DELETED_AT: &str = "deleted_at";
const DELETED_BY: &str = "deleted_by";

/// The order of the root keys in a readable difference: as the case reads,
/// not alphabetically.
const ROOT_ORDER: &[&str] = &[
    "kind",
    "schema_version",
    "created_at",
    "created_by",
    "coordination",
    "case",
    "person",
    "military",
    "disappearance",
    "status_claims",
    "sources",
    "requests",
    "external_refs",
    "dna",
    "remains",
    "burial",
    "timeline",
    "attachments",
    "links",
    "official_status",
    "closure",
    "source_verification",
    "duplicates",
];

/// Longest text shown for one register value in a readable line; longer
/// values end with `…` (registers hold at most 4 KiB, but a line is read by
/// a person).
pub const MAX_SHOWN_CHARS: usize = 200;

/// Why a history query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("change {hash} is not in the document")]
    UnknownChange { hash: String },
    #[error("automerge failed while reading the document")]
    AutomergeFailed,
    #[error("nothing at `{path}`")]
    NoSuchPath { path: String },
    #[error("`{path}` is not a narrative")]
    NotText { path: String },
    #[error("`{path}` has no value {op}")]
    NoSuchValue { path: String, op: String },
    #[error("`{path}`: {reason}")]
    CannotResolve { path: String, reason: &'static str },
}

fn caught<T>(f: impl FnOnce() -> T) -> Result<T, HistoryError> {
    catch_automerge(f).map_err(|_| HistoryError::AutomergeFailed)
}

/// Every hash must be a change of `doc`.
pub fn check_heads(doc: &Automerge, heads: &[ChangeHash]) -> Result<(), HistoryError> {
    for hash in heads {
        if doc.get_change_meta_by_hash(hash).is_none() {
            return Err(HistoryError::UnknownChange {
                hash: hash.to_string(),
            });
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ schema

/// What a path of keys names, according to the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Root,
    Section(Section),
    Collection(Collection),
    Item(Collection),
    Field(FieldKind),
    /// `created_at`, `created_by`, `deleted_at`, `deleted_by` of an item.
    Bookkeeping,
    /// Not in the schema (written by another client, or a root key).
    Other,
}

fn is_bookkeeping(key: &str) -> bool {
    matches!(key, CREATED_AT | CREATED_BY | DELETED_AT | DELETED_BY)
}

fn classify<S: AsRef<str>>(keys: &[S]) -> Node {
    let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
    if keys.is_empty() {
        return Node::Root;
    }
    // Replies live inside each request: requests.<id>.replies.<id>.<field>.
    if keys.len() >= 3 && keys[0] == "requests" && keys[2] == "replies" {
        return item_node(Collection::RequestReplies, &keys[3..]);
    }
    for collection in Collection::ALL {
        if collection == Collection::RequestReplies {
            continue;
        }
        let path = collection.path();
        if keys.len() >= path.len() && keys[..path.len()] == *path {
            return item_node(collection, &keys[path.len()..]);
        }
    }
    for section in Section::ALL {
        if keys[0] != section.key() {
            continue;
        }
        return match keys.len() {
            1 => Node::Section(section),
            2 => section
                .field_specs()
                .into_iter()
                .find(|(key, _)| *key == keys[1])
                .map_or(Node::Other, |(_, kind)| Node::Field(kind)),
            _ => Node::Other,
        };
    }
    Node::Other
}

/// `rest` is what follows a collection's path.
fn item_node(collection: Collection, rest: &[&str]) -> Node {
    match rest {
        [] => Node::Collection(collection),
        [_] => Node::Item(collection),
        [_, key] if is_bookkeeping(key) => Node::Bookkeeping,
        [_, key] => collection
            .field_specs()
            .into_iter()
            .find(|(k, _)| k == key)
            .map_or(Node::Other, |(_, kind)| Node::Field(kind)),
        _ => Node::Other,
    }
}

/// Keys in reading order: the schema's order where it has one, the rest
/// alphabetically after.
fn ordered(node: Node, keys: BTreeSet<String>) -> Vec<String> {
    let preferred: Vec<&str> = match node {
        Node::Root => ROOT_ORDER.to_vec(),
        Node::Section(section) => {
            let mut order: Vec<&str> = section.field_specs().iter().map(|(k, _)| *k).collect();
            for c in Collection::ALL {
                if c.path().len() == 2 && c.path()[0] == section.key() {
                    order.push(c.path()[1]);
                }
            }
            order
        }
        Node::Item(collection) => collection.field_specs().iter().map(|(k, _)| *k).collect(),
        _ => Vec::new(),
    };
    let mut keys: Vec<String> = keys.into_iter().collect();
    keys.sort_by_key(|k| {
        (
            preferred
                .iter()
                .position(|p| *p == k.as_str())
                .unwrap_or(usize::MAX),
            k.clone(),
        )
    });
    keys
}

fn prop_key(prop: &Prop) -> String {
    match prop {
        Prop::Map(key) => key.clone(),
        Prop::Seq(index) => index.to_string(),
    }
}

// ------------------------------------------------------------ ops summary

/// What one change touched, for the change list. Paths are dotted keys
/// (`disappearance.place`, `timeline.t1`), each listed once, in the order
/// the change first touched it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpsSummary {
    /// Number of operations in the change.
    pub ops: usize,
    /// Top-level keys touched: `disappearance`, `timeline`, ...
    pub sections: Vec<String>,
    /// Registers, narratives and source-id sets written, outside the items
    /// this change added.
    pub fields: Vec<String>,
    /// Items created (`timeline.t1`).
    pub added: Vec<String>,
    /// Items soft-deleted.
    pub deleted: Vec<String>,
    /// Items restored after a soft delete.
    pub restored: Vec<String>,
}

fn push_once(list: &mut Vec<String>, value: String) {
    if !list.contains(&value) {
        list.push(value);
    }
}

/// The path of an object of `doc` named by a change's op id. `None` when
/// the object is not in the document.
fn object_path(doc: &Automerge, obj: &automerge::legacy::ObjectId) -> Option<Vec<String>> {
    let id = match obj {
        automerge::legacy::ObjectId::Root => return Some(Vec::new()),
        automerge::legacy::ObjectId::Id(op) => format!("{}@{}", op.counter(), op.actor()),
    };
    let exid = doc.import_obj(&id).ok()?;
    let parents = doc.parents(&exid).ok()?;
    Some(parents.path().iter().map(|(_, p)| prop_key(p)).collect())
}

/// What `change` (a change of `doc`) touched. The paths are resolved in
/// `doc`, so they name where the objects are now.
pub fn summarize_change(doc: &Automerge, change: &Change) -> Result<OpsSummary, HistoryError> {
    use automerge::legacy::{Key, OpType};
    caught(|| {
        let expanded = change.decode();
        let mut summary = OpsSummary {
            ops: expanded.operations.len(),
            ..OpsSummary::default()
        };
        let mut paths: HashMap<automerge::legacy::ObjectId, Option<Vec<String>>> = HashMap::new();
        for op in &expanded.operations {
            let path = paths
                .entry(op.obj.clone())
                .or_insert_with(|| object_path(doc, &op.obj))
                .clone();
            let Some(mut keys) = path else {
                continue;
            };
            let in_sequence = match &op.key {
                Key::Map(key) => {
                    keys.push(key.to_string());
                    false
                }
                Key::Seq(_) => true,
            };
            if let Some(first) = keys.first() {
                push_once(&mut summary.sections, first.clone());
            }
            let node = classify(&keys);
            match (&op.action, node) {
                (OpType::Make(ObjType::Map | ObjType::Table), Node::Item(_)) => {
                    push_once(&mut summary.added, keys.join("."));
                }
                // Containers made by the template or with an item.
                (OpType::Make(_), _) if !in_sequence => {}
                (OpType::Put(value), Node::Bookkeeping)
                    if keys.last().map(String::as_str) == Some(DELETED_AT) =>
                {
                    let item = keys[..keys.len() - 1].join(".");
                    if matches!(value, ScalarValue::Null) {
                        push_once(&mut summary.restored, item);
                    } else {
                        push_once(&mut summary.deleted, item);
                    }
                }
                (_, Node::Bookkeeping) => {}
                _ => {
                    // A member of a source-id set counts as the set.
                    let set = keys.len() > 1
                        && classify(&keys[..keys.len() - 1]) == Node::Field(FieldKind::SourceIds);
                    if set && !in_sequence {
                        keys.pop();
                    }
                    push_once(&mut summary.fields, keys.join("."));
                }
            }
        }
        // Fields of items added by this same change are part of "added".
        let added: Vec<String> = summary.added.iter().map(|a| format!("{a}.")).collect();
        summary
            .fields
            .retain(|f| !added.iter().any(|a| f.starts_with(a.as_str())));
        summary
    })
}

// -------------------------------------------------------------- snapshots

/// Deepest nesting a snapshot expands, as [`crate::view::to_json`]: a case
/// is a few levels deep, and a hostile document must not recurse us off the
/// stack.
const MAX_DEPTH: usize = 32;

/// A value of the document as a snapshot holds it.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Scalar(ScalarValue),
    Map {
        id: ObjId,
        entries: BTreeMap<String, Entry>,
    },
    List(Vec<Entry>),
    Text {
        id: ObjId,
        text: String,
    },
    /// Nested deeper than [`MAX_DEPTH`]: not expanded.
    Cut,
}

/// A key's (or list element's) winning value.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    val: Val,
    /// Other values are held concurrently.
    conflict: bool,
}

/// What automerge's document iterator yields for one object.
#[derive(Debug, Clone, PartialEq)]
enum Items {
    Map(BTreeMap<String, Item>),
    List(Vec<Item>),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Item {
    value: Result<ScalarValue, (ObjType, ObjId)>,
    conflict: bool,
}

/// The whole document as it stood at some heads, read in one pass of
/// automerge's document iterator (far cheaper than a `get` per key), with
/// every key that holds concurrent values flagged.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    root: Val,
    heads: Option<Vec<ChangeHash>>,
    /// What the iterator yielded, by object: the difference reads from it.
    objects: HashMap<ObjId, Items>,
}

impl Snapshot {
    /// The document now (`None`) or at `heads`.
    pub fn read(doc: &Automerge, heads: Option<&[ChangeHash]>) -> Result<Self, HistoryError> {
        let objects = read_objects(doc, heads)?;
        Ok(Snapshot {
            root: build(&objects, ObjType::Map, ObjId::Root, 0),
            heads: heads.map(<[ChangeHash]>::to_vec),
            objects,
        })
    }

    /// The document as JSON, exactly as [`crate::view::to_json`] gives it.
    pub fn to_json(&self) -> Json {
        val_json(&self.root)
    }

    /// Every key with concurrent values, as [`crate::model::conflicts`]
    /// lists them; only those keys are read value by value.
    pub fn conflicts(&self, doc: &Automerge) -> Result<Vec<Conflict>, HistoryError> {
        caught(|| {
            let mut out = Vec::new();
            self.collect_conflicts(doc, &self.root, &mut Vec::new(), &mut out);
            out
        })
    }

    fn collect_conflicts(
        &self,
        doc: &Automerge,
        val: &Val,
        keys: &mut Vec<String>,
        out: &mut Vec<Conflict>,
    ) {
        // The same depth as `model::conflicts`.
        if keys.len() >= MAX_WALK_DEPTH {
            return;
        }
        let Val::Map { id, entries } = val else {
            return;
        };
        for (key, entry) in entries {
            keys.push(key.clone());
            if entry.conflict {
                let values = match &self.heads {
                    Some(h) => doc.get_all_at(id, key.as_str(), h),
                    None => doc.get_all(id, key.as_str()),
                }
                .unwrap_or_default();
                let text = |obj: &ObjId| {
                    match &self.heads {
                        Some(h) => doc.text_at(obj, h),
                        None => doc.text(obj),
                    }
                    .unwrap_or_default()
                };
                out.push(Conflict {
                    path: keys.join("."),
                    keys: keys.clone(),
                    values: values
                        .iter()
                        .map(|(value, op)| Versioned {
                            value: raw_value(value, op, text),
                            actor: actor_of(op),
                            op: op.to_string(),
                        })
                        .collect(),
                });
            }
            self.collect_conflicts(doc, &entry.val, keys, out);
            keys.pop();
        }
    }

    /// The entry at a path of keys.
    fn entry(&self, keys: &[&str]) -> Option<&Entry> {
        let (last, parents) = keys.split_last()?;
        let mut val = &self.root;
        for key in parents {
            match val {
                Val::Map { entries, .. } => val = &entries.get(*key)?.val,
                _ => return None,
            }
        }
        match val {
            Val::Map { entries, .. } => entries.get(*last),
            _ => None,
        }
    }

    /// The text of a narrative (or string register) at a path.
    pub fn text(&self, keys: &[&str]) -> Option<String> {
        match &self.entry(keys)?.val {
            Val::Text { text, .. } => Some(text.clone()),
            Val::Scalar(ScalarValue::Str(s)) => Some(s.to_string()),
            _ => None,
        }
    }
}

/// What automerge's document iterator yields at `heads` (now for
/// `None`), by object, in one pass (far cheaper than a `get` per key).
fn read_objects(
    doc: &Automerge,
    heads: Option<&[ChangeHash]>,
) -> Result<HashMap<ObjId, Items>, HistoryError> {
    if let Some(h) = heads {
        check_heads(doc, h)?;
    }
    caught(|| {
        let mut objects: HashMap<ObjId, Items> = HashMap::new();
        let mut current: Option<(std::sync::Arc<ObjId>, Items)> = None;
        for item in doc.iter_at(ObjId::Root, heads) {
            // An object's items come together; the map is touched once
            // per object, not per item.
            if current.as_ref().is_none_or(|(obj, _)| *obj != item.obj) {
                if let Some((obj, items)) = current.take() {
                    objects.insert((*obj).clone(), items);
                }
                let items = match &item.item {
                    DocItem::Map(_) => Items::Map(BTreeMap::new()),
                    DocItem::List(_) => Items::List(Vec::new()),
                    DocItem::Text(_) => Items::Text(String::new()),
                };
                current = Some((item.obj.clone(), items));
            }
            let Some((_, items)) = current.as_mut() else {
                continue;
            };
            let entry = |value: &ValueRef<'_>, id: ObjId, conflict: bool| Item {
                value: match value {
                    ValueRef::Scalar(s) => Ok(ScalarValue::from(s.clone())),
                    ValueRef::Object(t) => Err((*t, id)),
                },
                conflict,
            };
            match (items, item.item) {
                (Items::Map(v), DocItem::Map(m)) => {
                    v.insert(m.key.to_string(), entry(&m.value, m.id(), m.conflict));
                }
                (Items::List(v), DocItem::List(l)) => {
                    v.push(entry(&l.value, l.id(), l.conflict));
                }
                (Items::Text(t), DocItem::Text(Span::Text { text, .. })) => t.push_str(&text),
                (Items::Text(t), DocItem::Text(Span::Block(_))) => t.push('\u{fffc}'),
                _ => {}
            }
        }
        if let Some((obj, items)) = current.take() {
            objects.insert((*obj).clone(), items);
        }
        objects
    })
}

/// One point of a wide difference read whole, in one pass of automerge's
/// document iterator: what [`Snapshot`] reads, without building the
/// document tree (the difference reads the objects by id). See
/// [`difference_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct PointReading {
    objects: HashMap<ObjId, Items>,
}

impl PointReading {
    /// The document at `heads` (which must be known to it).
    pub fn read(doc: &Automerge, heads: &[ChangeHash]) -> Result<Self, HistoryError> {
        Ok(PointReading {
            objects: read_objects(doc, Some(heads))?,
        })
    }
}

fn raw_value(value: &Value<'_>, id: &ObjId, text: impl Fn(&ObjId) -> String) -> Option<RawValue> {
    Some(match value {
        Value::Object(ObjType::Text) => RawValue::Text(text(id)),
        Value::Object(ObjType::Map | ObjType::Table) => RawValue::Map,
        Value::Object(ObjType::List) => RawValue::List,
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => RawValue::Str(s.to_string()),
            ScalarValue::Int(i) => RawValue::Int(*i),
            ScalarValue::Uint(u) => RawValue::Uint(*u),
            ScalarValue::F64(f) => RawValue::F64(*f),
            ScalarValue::Boolean(b) => RawValue::Bool(*b),
            ScalarValue::Timestamp(t) => RawValue::Timestamp(*t),
            ScalarValue::Counter(c) => RawValue::Counter(i64::from(c)),
            ScalarValue::Bytes(b) => RawValue::Bytes(b.clone()),
            ScalarValue::Unknown { .. } => RawValue::Unknown,
            ScalarValue::Null => return None,
        },
    })
}

fn build(objects: &HashMap<ObjId, Items>, ty: ObjType, id: ObjId, depth: usize) -> Val {
    if depth > MAX_DEPTH {
        return Val::Cut;
    }
    let child = |item: &Item| Entry {
        val: match &item.value {
            Ok(s) => Val::Scalar(s.clone()),
            Err((t, obj)) => build(objects, *t, obj.clone(), depth + 1),
        },
        conflict: item.conflict,
    };
    match (ty, objects.get(&id)) {
        (ObjType::Text, Some(Items::Text(text))) => Val::Text {
            id,
            text: text.clone(),
        },
        (ObjType::Text, _) => Val::Text {
            id,
            text: String::new(),
        },
        (ObjType::List, Some(Items::List(items))) => Val::List(items.iter().map(child).collect()),
        (ObjType::List, _) => Val::List(Vec::new()),
        (_, Some(Items::Map(items))) => Val::Map {
            entries: items
                .iter()
                .map(|(k, item)| (k.clone(), child(item)))
                .collect(),
            id,
        },
        (_, _) => Val::Map {
            id,
            entries: BTreeMap::new(),
        },
    }
}

fn val_json(val: &Val) -> Json {
    match val {
        Val::Scalar(s) => scalar_json(s),
        Val::Map { entries, .. } => Json::Object(
            entries
                .iter()
                .map(|(k, e)| (k.clone(), val_json(&e.val)))
                .collect(),
        ),
        Val::List(items) => Json::Array(items.iter().map(|e| val_json(&e.val)).collect()),
        Val::Text { text, .. } => Json::String(text.clone()),
        Val::Cut => Json::Null,
    }
}

// ------------------------------------------------------- readable diff

/// One line of a readable difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    /// The dotted path the line is about.
    pub path: String,
    /// The whole line, path included.
    pub text: String,
}

/// One side of a difference: the document as it stood at `heads`, read
/// key by key (only where the patches say something changed).
#[derive(Clone, Copy)]
struct Side<'a> {
    doc: &'a Automerge,
    heads: &'a [ChangeHash],
    /// For a wide difference, the whole side read in one pass; keys in
    /// conflict are still read value by value.
    snapshot: Option<&'a PointReading>,
}

impl<'a> Side<'a> {
    fn map_items(&self, obj: &ObjId) -> Option<&'a BTreeMap<String, Item>> {
        match self.snapshot?.objects.get(obj) {
            Some(Items::Map(m)) => Some(m),
            _ => None,
        }
    }

    fn keys(&self, obj: Option<&ObjId>) -> BTreeSet<String> {
        let Some(obj) = obj else {
            return BTreeSet::new();
        };
        match self.snapshot {
            Some(_) => self
                .map_items(obj)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            None => self.doc.keys_at(obj, self.heads).collect(),
        }
    }

    fn values(&self, obj: Option<&ObjId>, key: &str) -> Vec<(Value<'a>, ObjId)> {
        let Some(obj) = obj else {
            return Vec::new();
        };
        if self.snapshot.is_some() {
            match self.map_items(obj).and_then(|m| m.get(key)) {
                None => return Vec::new(),
                Some(item) if !item.conflict => {
                    return vec![match &item.value {
                        // A scalar's op id is not needed by the difference.
                        Ok(s) => (
                            Value::Scalar(std::borrow::Cow::Owned(s.clone())),
                            ObjId::Root,
                        ),
                        Err((t, id)) => (Value::Object(*t), id.clone()),
                    }];
                }
                Some(_) => {}
            }
        }
        self.doc
            .get_all_at(obj, key, self.heads)
            .unwrap_or_default()
    }

    fn text(&self, obj: &ObjId) -> String {
        if let Some(Items::Text(t)) = self.snapshot.and_then(|s| s.objects.get(obj)) {
            return t.clone();
        }
        self.doc.text_at(obj, self.heads).unwrap_or_default()
    }

    /// Whether the item `obj` is soft-deleted here.
    fn is_deleted(&self, obj: Option<&ObjId>) -> bool {
        matches!(
            self.values(obj, DELETED_AT).last(),
            Some((Value::Scalar(s), _)) if !matches!(s.as_ref(), ScalarValue::Null)
        )
    }

    /// Every concurrent value of a register, as shown in a line (`None`
    /// for a clear).
    fn shown(&self, values: &[(Value<'_>, ObjId)]) -> Vec<Option<String>> {
        values
            .iter()
            .map(|(value, id)| match value {
                Value::Scalar(s) => show_scalar(s),
                Value::Object(ObjType::Text) => Some(quote(&self.text(id))),
                Value::Object(ObjType::List) => Some("[…]".to_owned()),
                Value::Object(_) => Some("{…}".to_owned()),
            })
            .collect()
    }
}

fn quote(s: &str) -> String {
    let mut shown: String = s.chars().take(MAX_SHOWN_CHARS).collect();
    if s.chars().nth(MAX_SHOWN_CHARS).is_some() {
        shown.push('…');
    }
    format!("'{shown}'")
}

fn show_scalar(s: &ScalarValue) -> Option<String> {
    Some(match s {
        ScalarValue::Null => return None,
        ScalarValue::Str(s) => quote(s),
        ScalarValue::Bytes(b) => format!("<{} bytes>", b.len()),
        ScalarValue::Int(i) | ScalarValue::Timestamp(i) => i.to_string(),
        ScalarValue::Uint(u) => u.to_string(),
        ScalarValue::F64(f) => f.to_string(),
        ScalarValue::Counter(c) => i64::from(c).to_string(),
        ScalarValue::Boolean(b) => b.to_string(),
        ScalarValue::Unknown { .. } => "<unknown value>".to_owned(),
    })
}

/// `'a'`, `conflict between 'a' and 'b'`, `conflict between (cleared), 'a'
/// and 'b'`. Concurrent values are listed sorted, so a line does not depend
/// on the actor ids that decide automerge's order.
fn describe(values: &[Option<String>]) -> String {
    let mut shown: Vec<String> = values
        .iter()
        .map(|v| v.clone().unwrap_or_else(|| "(cleared)".to_owned()))
        .collect();
    shown.sort();
    match shown.as_slice() {
        [] => "(empty)".to_owned(),
        [one] => one.clone(),
        [init @ .., last] => format!("conflict between {} and {last}", init.join(", ")),
    }
}

/// A register's line, or `None` when it did not change.
fn register_line(
    path: &str,
    before: &[Option<String>],
    after: &[Option<String>],
) -> Option<String> {
    if before == after {
        return None;
    }
    let unset = |v: &[Option<String>]| v.iter().all(Option::is_none);
    Some(match (before.len(), after.len()) {
        (_, 1) if unset(after) && !unset(before) => format!("{path}: {} cleared", describe(before)),
        (_, 1) if unset(before) => format!("{path}: set to {}", describe(after)),
        (_, 0) => format!("{path}: {} removed", describe(before)),
        _ if before.is_empty() || (before.len() == 1 && unset(before)) => {
            format!("{path}: {}", describe(after))
        }
        _ => format!("{path}: {} → {}", describe(before), describe(after)),
    })
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Inserted and deleted characters between two strings when no patches
/// apply (the text object itself changed): everything between the common
/// prefix and suffix.
fn trimmed_counts(before: &str, after: &str) -> (usize, usize) {
    let b: Vec<char> = before.chars().collect();
    let a: Vec<char> = after.chars().collect();
    let prefix = b.iter().zip(&a).take_while(|(x, y)| x == y).count();
    let suffix = b[prefix..]
        .iter()
        .rev()
        .zip(a[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    (a.len() - prefix - suffix, b.len() - prefix - suffix)
}

/// The paths automerge's patches name, as a tree of keys: the walk only
/// goes where something changed.
#[derive(Debug, Default)]
struct Touched(BTreeMap<String, Touched>);

impl Touched {
    /// Number of paths, counting every prefix.
    fn size(&self) -> usize {
        self.0.values().map(|t| 1 + t.size()).sum()
    }

    /// The node below this one at `key`, made if missing. Looked up by
    /// reference first: a wide difference names the same few paths
    /// thousands of times, and an owned key for each was most of the time
    /// spent here.
    fn child(&mut self, key: Cow<'_, str>) -> &mut Touched {
        if !self.0.contains_key(key.as_ref()) {
            self.0.insert(key.as_ref().to_owned(), Touched::default());
        }
        match self.0.get_mut(key.as_ref()) {
            Some(node) => node,
            None => unreachable!("inserted above"),
        }
    }
}

/// [`prop_key`] without a copy for map keys.
fn prop_key_ref(prop: &Prop) -> Cow<'_, str> {
    match prop {
        Prop::Map(key) => Cow::Borrowed(key.as_str()),
        Prop::Seq(index) => Cow::Owned(index.to_string()),
    }
}

/// Nothing changed below.
static UNTOUCHED: Touched = Touched(BTreeMap::new());

/// Characters inserted and deleted per text object, from the patches.
type TextCounts = HashMap<ObjId, (usize, usize)>;

fn touched_by(patches: &[Patch]) -> (Touched, TextCounts) {
    let mut touched = Touched::default();
    let mut counts = TextCounts::new();
    let mut last_obj: Option<&ObjId> = None;
    for patch in patches {
        let last = match &patch.action {
            PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => {
                Some(Cow::Borrowed(key.as_str()))
            }
            PatchAction::Conflict { prop } | PatchAction::Increment { prop, .. } => {
                Some(prop_key_ref(prop))
            }
            PatchAction::SpliceText { value, .. } => {
                counts.entry(patch.obj.clone()).or_default().0 +=
                    value.make_string().chars().count();
                None
            }
            PatchAction::DeleteSeq { length, .. } => {
                counts.entry(patch.obj.clone()).or_default().1 += length;
                None
            }
            PatchAction::PutSeq { .. } | PatchAction::Insert { .. } | PatchAction::Mark { .. } => {
                None
            }
        };
        // Patches into one object share its path: the thousands of splices
        // into one narrative walk it once.
        if last.is_none() && last_obj == Some(&patch.obj) {
            continue;
        }
        last_obj = Some(&patch.obj);
        let mut node = &mut touched;
        for (_, prop) in &patch.path {
            node = node.child(prop_key_ref(prop));
        }
        if let Some(key) = last {
            node.child(key);
        }
    }
    (touched, counts)
}

struct Differ<'a> {
    before: Side<'a>,
    after: Side<'a>,
    counts: &'a TextCounts,
    lines: Vec<DiffLine>,
}

impl Differ<'_> {
    fn line(&mut self, keys: &[String], text: String) {
        self.lines.push(DiffLine {
            path: keys.join("."),
            text,
        });
    }

    /// The maps `before` and `after` at `keys`, where `touched` says what
    /// changed below them (`None`: read everything).
    fn map(
        &mut self,
        keys: &mut Vec<String>,
        before: Option<&ObjId>,
        after: Option<&ObjId>,
        touched: Option<&Touched>,
    ) {
        if keys.len() > MAX_WALK_DEPTH {
            return;
        }
        let node = classify(keys);
        if let Node::Collection(_) = node {
            return self.collection(keys, before, after, touched);
        }
        let all: BTreeSet<String> = match touched {
            Some(t) => t.0.keys().cloned().collect(),
            None => {
                let mut all = self.before.keys(before);
                all.extend(self.after.keys(after));
                all
            }
        };
        for key in ordered(node, all) {
            let b = self.before.values(before, &key);
            let a = self.after.values(after, &key);
            let below = touched.map(|t| t.0.get(&key).unwrap_or(&UNTOUCHED));
            keys.push(key);
            self.entry(keys, &b, &a, below);
            keys.pop();
        }
    }

    fn entry(
        &mut self,
        keys: &mut Vec<String>,
        before: &[(Value<'_>, ObjId)],
        after: &[(Value<'_>, ObjId)],
        touched: Option<&Touched>,
    ) {
        let node = classify(keys);
        if node == Node::Bookkeeping {
            return;
        }
        let kind = |v: &[(Value<'_>, ObjId)]| match v.last() {
            Some((Value::Object(t), id)) => Some((*t, id.clone())),
            _ => None,
        };
        let is_map = |k: &Option<(ObjType, ObjId)>| {
            matches!(k, None | Some((ObjType::Map | ObjType::Table, _)))
        };
        let path = keys.join(".");
        let (bk, ak) = (kind(before), kind(after));
        match (&bk, &ak) {
            (Some((ObjType::Text, b)), Some((ObjType::Text, a))) => {
                let counted = if a == b {
                    self.counts.get(a).copied()
                } else {
                    None
                };
                let (ins, del) = match counted {
                    Some(c) => c,
                    None => {
                        let (old, new) = (self.before.text(b), self.after.text(a));
                        if old == new {
                            (0, 0)
                        } else {
                            trimmed_counts(&old, &new)
                        }
                    }
                };
                if ins > 0 || del > 0 {
                    self.line(
                        keys,
                        format!("{path}: text edited, +{ins} −{del} characters"),
                    );
                }
            }
            (None, Some((ObjType::Text, a))) if before.is_empty() => {
                let n = self.after.text(a).chars().count();
                if n > 0 {
                    self.line(keys, format!("{path}: text edited, +{n} −0 characters"));
                }
            }
            _ if is_map(&bk) && is_map(&ak) && (bk.is_some() || ak.is_some()) => {
                let (b, a) = (bk.map(|(_, id)| id), ak.map(|(_, id)| id));
                if node == Node::Field(FieldKind::SourceIds) {
                    self.source_ids(keys, b.as_ref(), a.as_ref());
                } else {
                    // A map that appeared, went away or was replaced is
                    // read whole.
                    let whole = b != a;
                    self.map(
                        keys,
                        b.as_ref(),
                        a.as_ref(),
                        if whole { None } else { touched },
                    );
                }
            }
            _ => {
                let (b, a) = (self.before.shown(before), self.after.shown(after));
                if let Some(text) = register_line(&path, &b, &a) {
                    self.line(keys, text);
                }
            }
        }
    }

    fn source_ids(&mut self, keys: &[String], before: Option<&ObjId>, after: Option<&ObjId>) {
        let (b, a) = (self.before.keys(before), self.after.keys(after));
        let added: Vec<&str> = a.difference(&b).map(String::as_str).collect();
        let removed: Vec<&str> = b.difference(&a).map(String::as_str).collect();
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!("added {}", added.join(", ")));
        }
        if !removed.is_empty() {
            parts.push(format!("removed {}", removed.join(", ")));
        }
        if !parts.is_empty() {
            let path = keys.join(".");
            self.line(keys, format!("{path}: {}", parts.join("; ")));
        }
    }

    fn collection(
        &mut self,
        keys: &mut Vec<String>,
        before: Option<&ObjId>,
        after: Option<&ObjId>,
        touched: Option<&Touched>,
    ) {
        // Only items the patches name can have appeared or gone; a large
        // collection is not listed whole for that.
        let (b, a): (BTreeSet<String>, BTreeSet<String>) = match touched {
            Some(t) => {
                let exists = |side: &Side<'_>, obj: Option<&ObjId>| -> BTreeSet<String> {
                    t.0.keys()
                        .filter(|id| !side.values(obj, id).is_empty())
                        .cloned()
                        .collect()
                };
                (exists(&self.before, before), exists(&self.after, after))
            }
            None => (self.before.keys(before), self.after.keys(after)),
        };
        let path = keys.join(".");
        let added = a.difference(&b).count();
        if added > 0 {
            self.line(keys, format!("{path}: +{}", plural(added, "item", "items")));
        }
        let removed = b.difference(&a).count();
        if removed > 0 {
            self.line(
                keys,
                format!("{path}: −{}", plural(removed, "item", "items")),
            );
        }
        let ids: Vec<&String> = b.intersection(&a).collect();
        for id in ids {
            let bi = winner_map(&self.before.values(before, id));
            let ai = winner_map(&self.after.values(after, id));
            keys.push(id.clone());
            let was = self.before.is_deleted(bi.as_ref());
            let is = self.after.is_deleted(ai.as_ref());
            let item = keys.join(".");
            if !was && is {
                self.line(keys, format!("{item}: deleted"));
            } else if was && !is {
                self.line(keys, format!("{item}: restored"));
            }
            let below = touched.map(|t| t.0.get(id).unwrap_or(&UNTOUCHED));
            let whole = bi != ai;
            self.map(
                keys,
                bi.as_ref(),
                ai.as_ref(),
                if whole { None } else { below },
            );
            keys.pop();
        }
    }
}

/// A readable difference with automerge's patches, computed together: the
/// patches say which paths changed, and only those are read.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub lines: Vec<DiffLine>,
    /// automerge's patches; [`write_patches_json`] writes them as JSON (see
    /// [`patches`] for the shape).
    pub patches: Vec<Patch>,
}

/// The readable, field-by-field difference between the document at
/// `before` and at `after` (either may be empty: before anything was
/// written), and automerge's patches between them. Registers with
/// concurrent values list them all.
pub fn difference(
    doc: &Automerge,
    before: &[ChangeHash],
    after: &[ChangeHash],
) -> Result<Difference, HistoryError> {
    difference_in(doc, before, after, None)
}

/// Above this many changed paths, both sides are read whole in one pass
/// each ([`PointReading`]) instead of key by key.
const WIDE_DIFFERENCE: usize = 256;

/// automerge's patches from `before` to `after`: the first half of
/// [`difference_with`], which a caller may run beside reading both points.
pub fn diff_patches(
    doc: &Automerge,
    before: &[ChangeHash],
    after: &[ChangeHash],
) -> Result<Vec<Patch>, HistoryError> {
    check_heads(doc, before)?;
    check_heads(doc, after)?;
    caught(|| doc.diff(before, after))
}

/// [`difference`] from its parts: `patches` from [`diff_patches`] for the
/// same points, and, for a difference the caller expects to be wide, both
/// points already read whole (the caller can read them while automerge
/// diffs: they do not depend on each other). Without readings, both points
/// are read whole only when the patches name more than
/// [`WIDE_DIFFERENCE`] paths. The lines are the same either way.
pub fn difference_with(
    doc: &Automerge,
    before: &[ChangeHash],
    after: &[ChangeHash],
    patches: Vec<Patch>,
    readings: Option<(PointReading, PointReading)>,
) -> Result<Difference, HistoryError> {
    let (touched, counts) = touched_by(&patches);
    let readings = match readings {
        Some(r) => Some(r),
        None if touched.size() > WIDE_DIFFERENCE => Some((
            PointReading::read(doc, before)?,
            PointReading::read(doc, after)?,
        )),
        None => None,
    };
    let lines = readable_lines(doc, before, after, &touched, &counts, readings.as_ref())?;
    Ok(Difference { lines, patches })
}

/// [`difference`], reading whole points when `wide` says so (or, for
/// `None`, when the patches name more than [`WIDE_DIFFERENCE`] paths).
fn difference_in(
    doc: &Automerge,
    before: &[ChangeHash],
    after: &[ChangeHash],
    wide: Option<bool>,
) -> Result<Difference, HistoryError> {
    let patches = diff_patches(doc, before, after)?;
    let readings = match wide {
        Some(true) => Some((
            PointReading::read(doc, before)?,
            PointReading::read(doc, after)?,
        )),
        Some(false) => {
            let (touched, counts) = touched_by(&patches);
            let lines = readable_lines(doc, before, after, &touched, &counts, None)?;
            return Ok(Difference { lines, patches });
        }
        None => None,
    };
    difference_with(doc, before, after, patches, readings)
}

fn readable_lines(
    doc: &Automerge,
    before: &[ChangeHash],
    after: &[ChangeHash],
    touched: &Touched,
    counts: &TextCounts,
    readings: Option<&(PointReading, PointReading)>,
) -> Result<Vec<DiffLine>, HistoryError> {
    caught(|| {
        let mut differ = Differ {
            before: Side {
                doc,
                heads: before,
                snapshot: readings.map(|r| &r.0),
            },
            after: Side {
                doc,
                heads: after,
                snapshot: readings.map(|r| &r.1),
            },
            counts,
            lines: Vec::new(),
        };
        differ.map(
            &mut Vec::new(),
            Some(&ObjId::Root),
            Some(&ObjId::Root),
            Some(touched),
        );
        differ.lines
    })
}

/// The readable lines of [`difference`].
pub fn readable_diff(
    doc: &Automerge,
    before: &[ChangeHash],
    after: &[ChangeHash],
) -> Result<Vec<DiffLine>, HistoryError> {
    difference(doc, before, after).map(|d| d.lines)
}

/// The readable difference found by reading the whole document at both
/// points, without patches: what [`difference`] must agree with.
#[cfg(test)]
fn full_diff(doc: &Automerge, before: &[ChangeHash], after: &[ChangeHash]) -> Vec<DiffLine> {
    let counts = TextCounts::new();
    let mut differ = Differ {
        before: Side {
            doc,
            heads: before,
            snapshot: None,
        },
        after: Side {
            doc,
            heads: after,
            snapshot: None,
        },
        counts: &counts,
        lines: Vec::new(),
    };
    differ.map(
        &mut Vec::new(),
        Some(&ObjId::Root),
        Some(&ObjId::Root),
        None,
    );
    differ.lines
}

/// automerge's patches from `before` to `after`, as JSON in the shape
/// automerge-js uses (`{action, path, value, ...}`, the path as keys and
/// indexes from the root).
pub fn patches(
    doc: &Automerge,
    before: &[ChangeHash],
    after: &[ChangeHash],
) -> Result<Json, HistoryError> {
    check_heads(doc, before)?;
    check_heads(doc, after)?;
    caught(|| Json::Array(doc.diff(before, after).iter().map(patch_json).collect()))
}

fn value_json(value: &Value<'_>) -> Json {
    match value {
        Value::Scalar(s) => scalar_json(s),
        Value::Object(ObjType::Text) => json!(""),
        Value::Object(ObjType::List) => json!([]),
        Value::Object(_) => json!({}),
    }
}

fn patch_json(patch: &Patch) -> Json {
    let mut path: Vec<Json> = patch
        .path
        .iter()
        .map(|(_, prop)| match prop {
            Prop::Map(k) => json!(k),
            Prop::Seq(i) => json!(i),
        })
        .collect();
    let mut at = |p: Json| {
        path.push(p);
        Json::Array(std::mem::take(&mut path))
    };
    match &patch.action {
        PatchAction::PutMap {
            key,
            value,
            conflict,
        } => json!({
            "action": "put", "path": at(json!(key)),
            "value": value_json(&value.0), "conflict": conflict,
        }),
        PatchAction::PutSeq {
            index,
            value,
            conflict,
        } => json!({
            "action": "put", "path": at(json!(index)),
            "value": value_json(&value.0), "conflict": conflict,
        }),
        PatchAction::Insert { index, values } => json!({
            "action": "insert", "path": at(json!(index)),
            "values": values.iter().map(|(v, _, _)| value_json(v)).collect::<Vec<_>>(),
        }),
        PatchAction::SpliceText { index, value, .. } => json!({
            "action": "splice", "path": at(json!(index)), "value": value.make_string(),
        }),
        PatchAction::Increment { prop, value } => json!({
            "action": "inc", "path": at(json!(prop_key(prop))), "value": value,
        }),
        PatchAction::Conflict { prop } => json!({
            "action": "conflict", "path": at(json!(prop_key(prop))),
        }),
        PatchAction::DeleteMap { key } => json!({
            "action": "del", "path": at(json!(key)),
        }),
        PatchAction::DeleteSeq { index, length } => json!({
            "action": "del", "path": at(json!(index)), "length": length,
        }),
        PatchAction::Mark { marks } => json!({
            "action": "mark", "path": Json::Array(std::mem::take(&mut path)),
            "marks": marks.iter().map(|m| json!({
                "name": m.name(), "value": scalar_json(m.value()),
                "start": m.start, "end": m.end,
            })).collect::<Vec<_>>(),
        }),
    }
}

/// Writes `patches` to `out` as the JSON array [`patches`] gives (the same
/// values, keys in the same sorted order), without building a JSON tree
/// first: a wide difference has tens of thousands of patches, and the tree
/// cost more to build, serialize and free than the writing itself.
pub fn write_patches_json(patches: &[Patch], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, patch) in patches.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_patch(patch, out);
    }
    out.push(b']');
}

/// `s` as a JSON string.
fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec does not fail, and a str always serializes.
    serde_json::to_writer(&mut *out, s).ok();
}

fn write_json(out: &mut Vec<u8>, value: &Json) {
    serde_json::to_writer(&mut *out, value).ok();
}

fn write_number(out: &mut Vec<u8>, n: impl std::fmt::Display) {
    use std::io::Write as _;
    write!(out, "{n}").ok();
}

fn write_value(out: &mut Vec<u8>, value: &Value<'_>) {
    match value {
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => write_str(out, s),
            other => write_json(out, &scalar_json(other)),
        },
        Value::Object(ObjType::Text) => out.extend_from_slice(b"\"\""),
        Value::Object(ObjType::List) => out.extend_from_slice(b"[]"),
        Value::Object(_) => out.extend_from_slice(b"{}"),
    }
}

/// The last key of a patch's path: the key or index it is about.
enum Last<'a> {
    Key(&'a str),
    Index(usize),
}

/// `"path":[...]`: the patch's path from the root, then `last`.
fn write_path(out: &mut Vec<u8>, patch: &Patch, last: Last<'_>) {
    out.extend_from_slice(b"\"path\":[");
    for (_, prop) in &patch.path {
        match prop {
            Prop::Map(k) => write_str(out, k),
            Prop::Seq(n) => write_number(out, n),
        }
        out.push(b',');
    }
    match last {
        Last::Key(k) => write_str(out, k),
        Last::Index(n) => write_number(out, n),
    }
    out.push(b']');
}

/// A `put` patch, without its closing brace.
fn write_put(out: &mut Vec<u8>, patch: &Patch, last: Last<'_>, value: &Value<'_>, conflict: bool) {
    out.extend_from_slice(b"{\"action\":\"put\",\"conflict\":");
    out.extend_from_slice(if conflict { b"true," } else { b"false," });
    write_path(out, patch, last);
    out.extend_from_slice(b",\"value\":");
    write_value(out, value);
}

fn write_patch(patch: &Patch, out: &mut Vec<u8>) {
    match &patch.action {
        PatchAction::PutMap {
            key,
            value,
            conflict,
        } => write_put(out, patch, Last::Key(key), &value.0, *conflict),
        PatchAction::PutSeq {
            index,
            value,
            conflict,
        } => write_put(out, patch, Last::Index(*index), &value.0, *conflict),
        PatchAction::Insert { index, values } => {
            out.extend_from_slice(b"{\"action\":\"insert\",");
            write_path(out, patch, Last::Index(*index));
            out.extend_from_slice(b",\"values\":[");
            for (i, (v, _, _)) in values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, v);
            }
            out.push(b']');
        }
        PatchAction::SpliceText { index, value, .. } => {
            out.extend_from_slice(b"{\"action\":\"splice\",");
            write_path(out, patch, Last::Index(*index));
            out.extend_from_slice(b",\"value\":");
            write_str(out, &value.make_string());
        }
        PatchAction::Increment { prop, value } => {
            out.extend_from_slice(b"{\"action\":\"inc\",");
            write_path(out, patch, Last::Key(&prop_key(prop)));
            out.extend_from_slice(b",\"value\":");
            write_number(out, value);
        }
        PatchAction::Conflict { prop } => {
            out.extend_from_slice(b"{\"action\":\"conflict\",");
            write_path(out, patch, Last::Key(&prop_key(prop)));
        }
        PatchAction::DeleteMap { key } => {
            out.extend_from_slice(b"{\"action\":\"del\",");
            write_path(out, patch, Last::Key(key));
        }
        PatchAction::DeleteSeq { index, length } => {
            out.extend_from_slice(b"{\"action\":\"del\",\"length\":");
            write_number(out, length);
            out.push(b',');
            write_path(out, patch, Last::Index(*index));
        }
        PatchAction::Mark { .. } => {
            // Rare (no edit of the case writes marks): the JSON tree.
            write_json(out, &patch_json(patch));
            return;
        }
    }
    out.push(b'}');
}

// ----------------------------------------------------------------- blame

/// A run of characters of a narrative written by one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlameSpan {
    /// Position of the first character, in characters.
    pub start: usize,
    /// Length in characters.
    pub length: usize,
    pub text: String,
    /// The actor that wrote it, in hex.
    pub actor: String,
    /// The change that wrote it.
    pub change: Option<ChangeHash>,
}

/// Resolves `keys` from the root to the object or value at the last key:
/// the winning value there and its id.
fn resolve<'a>(
    doc: &'a Automerge,
    heads: Option<&[ChangeHash]>,
    keys: &[&str],
) -> Option<(Value<'a>, ObjId)> {
    let mut obj = ObjId::Root;
    let (last, parents) = keys.split_last()?;
    for key in parents {
        let got = match heads {
            Some(h) => doc.get_at(&obj, *key, h),
            None => doc.get(&obj, *key),
        };
        match got.ok()? {
            Some((Value::Object(ObjType::Map | ObjType::Table), id)) => obj = id,
            _ => return None,
        }
    }
    match heads {
        Some(h) => doc.get_at(&obj, *last, h),
        None => doc.get(&obj, *last),
    }
    .ok()?
}

/// The winning value's object, if it is a map.
fn winner_map(values: &[(Value<'_>, ObjId)]) -> Option<ObjId> {
    match values.last() {
        Some((Value::Object(ObjType::Map | ObjType::Table), id)) => Some(id.clone()),
        _ => None,
    }
}

fn actor_of(id: &ObjId) -> String {
    match id {
        ObjId::Root => String::new(),
        ObjId::Id(_, actor, _) => actor.to_hex_string(),
    }
}

/// Who wrote each span of the narrative at `keys` (now, or at `heads`):
/// consecutive characters written by the same change form one span. A
/// narrative stored as a plain string (stock JS) is one span.
pub fn blame(
    doc: &Automerge,
    heads: Option<&[ChangeHash]>,
    keys: &[&str],
) -> Result<Vec<BlameSpan>, HistoryError> {
    if let Some(h) = heads {
        check_heads(doc, h)?;
    }
    let path = keys.join(".");
    let found = caught(|| resolve(doc, heads, keys).map(|(v, id)| (v.into_owned(), id)))?;
    let (value, id) = found.ok_or_else(|| HistoryError::NoSuchPath { path: path.clone() })?;
    match value {
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(text) => {
                let change = caught(|| doc.hash_for_opid(&id))?;
                Ok(vec![BlameSpan {
                    start: 0,
                    length: text.chars().count(),
                    text: text.to_string(),
                    actor: actor_of(&id),
                    change,
                }])
            }
            _ => Err(HistoryError::NotText { path }),
        },
        Value::Object(ObjType::Text) => caught(|| text_blame(doc, heads, &id)),
        Value::Object(_) => Err(HistoryError::NotText { path }),
    }
}

fn text_blame(doc: &Automerge, heads: Option<&[ChangeHash]>, text: &ObjId) -> Vec<BlameSpan> {
    let items = match heads {
        Some(h) => doc.list_range_at(text, .., h),
        None => doc.list_range(text, ..),
    };
    let mut spans: Vec<BlameSpan> = Vec::new();
    let mut position = 0;
    // The change of the previous character and the op counters it covers:
    // characters typed in one splice have consecutive counters, so most
    // characters need no lookup.
    let mut current: Option<(ObjId, u64, u64, Option<ChangeHash>)> = None;
    for item in items {
        let id = item.id();
        let chunk = match &item.value {
            ValueRef::Scalar(automerge::ScalarValueRef::Str(s)) => s.to_string(),
            _ => "\u{fffc}".to_owned(),
        };
        let chars = chunk.chars().count();
        let (counter, same_actor) = match (&id, &current) {
            (ObjId::Id(ctr, actor, _), Some((ObjId::Id(_, cur, _), start, end, _))) => {
                (*ctr, actor == cur && (*start..=*end).contains(ctr))
            }
            (ObjId::Id(ctr, _, _), None) => (*ctr, false),
            _ => (0, false),
        };
        if !same_actor {
            let change = doc.hash_for_opid(&id);
            let (start, end) = change
                .and_then(|h| doc.get_change_meta_by_hash(&h))
                .map_or((counter, counter), |m| (m.start_op, m.max_op));
            current = Some((id.clone(), start, end, change));
        }
        let change = current.as_ref().and_then(|c| c.3);
        match spans.last_mut() {
            Some(last) if last.change == change && change.is_some() => {
                last.text.push_str(&chunk);
                last.length += chars;
            }
            _ => spans.push(BlameSpan {
                start: position,
                length: chars,
                text: chunk,
                actor: actor_of(&id),
                change,
            }),
        }
        position += chars;
    }
    spans
}

// -------------------------------------------------------- value origins

/// The change that wrote the op `op` (`counter@actor`, as in
/// [`crate::model::Versioned::op`]).
pub fn change_of_op(doc: &Automerge, op: &str) -> Option<ChangeHash> {
    let (counter, actor) = op.split_once('@')?;
    // Checked here: automerge's parser unwraps the hex.
    if counter.parse::<u64>().is_err()
        || actor.is_empty()
        || actor.len() % 2 != 0
        || !actor.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    caught(|| {
        let id = doc.import_obj(op).ok()?;
        doc.hash_for_opid(&id)
    })
    .ok()
    .flatten()
}

/// Where a value came from: the register at `path` holds a value written
/// by `change`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueOrigin {
    pub path: String,
    pub change: ChangeHash,
    /// Another value is held concurrently.
    pub conflicted: bool,
}

/// The change behind every current register value (every concurrent value
/// of it), in reading order. Narratives are left to [`blame`]; item
/// bookkeeping is included (who created and deleted what).
pub fn value_origins(doc: &Automerge) -> Result<Vec<ValueOrigin>, HistoryError> {
    fn walk(doc: &Automerge, obj: &ObjId, keys: &mut Vec<String>, out: &mut Vec<ValueOrigin>) {
        if keys.len() > MAX_WALK_DEPTH {
            return;
        }
        let node = classify(keys);
        for key in ordered(node, doc.keys(obj).collect()) {
            let values = doc.get_all(obj, key.as_str()).unwrap_or_default();
            keys.push(key);
            let conflicted = values.len() > 1;
            for (value, id) in &values {
                if let Value::Scalar(_) = value {
                    if let Some(change) = doc.hash_for_opid(id) {
                        out.push(ValueOrigin {
                            path: keys.join("."),
                            change,
                            conflicted,
                        });
                    }
                }
            }
            if let Some(map) = winner_map(&values) {
                walk(doc, &map, keys, out);
            }
            keys.pop();
        }
    }
    caught(|| {
        let mut out = Vec::new();
        walk(doc, &ObjId::Root, &mut Vec::new(), &mut out);
        out
    })
}

// ------------------------------------------------------------ resolving

/// Resolves a conflict: writes the value `op` currently held at `keys` over
/// every concurrent value, in one change of `doc`'s actor stamped with
/// `message` and `now_ms`. Only plain values can be chosen; a clear
/// (`null`) can be.
///
/// When the chosen value is automerge's winner, automerge 0.12 writes the
/// change as deletes of the other values, so the value keeps its writer's
/// op (and [`value_origins`] still names that writer); otherwise the
/// change puts the value anew, under `doc`'s actor.
pub fn resolve_conflict(
    doc: &mut Automerge,
    keys: &[&str],
    op: &str,
    message: String,
    now_ms: i64,
) -> Result<ChangeHash, HistoryError> {
    use automerge::transaction::Transactable;
    let path = keys.join(".");
    let (last, parents) = keys
        .split_last()
        .ok_or_else(|| HistoryError::NoSuchPath { path: path.clone() })?;
    let parent = if parents.is_empty() {
        Some(ObjId::Root)
    } else {
        caught(|| resolve(doc, None, parents))?.and_then(|(v, id)| match v {
            Value::Object(ObjType::Map | ObjType::Table) => Some(id),
            _ => None,
        })
    }
    .ok_or_else(|| HistoryError::NoSuchPath { path: path.clone() })?;
    let values = caught(|| doc.get_all(&parent, *last).unwrap_or_default())?;
    if values.len() < 2 {
        return Err(HistoryError::CannotResolve {
            path,
            reason: "there is no conflict here",
        });
    }
    let chosen = values
        .iter()
        .find(|(_, id)| id.to_string() == op)
        .ok_or_else(|| HistoryError::NoSuchValue {
            path: path.clone(),
            op: op.to_owned(),
        })?;
    let scalar = match &chosen.0 {
        Value::Scalar(s) => s.clone().into_owned(),
        Value::Object(_) => {
            return Err(HistoryError::CannotResolve {
                path,
                reason: "only plain values can be chosen; a container cannot be rewritten",
            })
        }
    };
    let key = (*last).to_owned();
    caught(move || {
        doc.transact_with::<_, _, automerge::AutomergeError, _>(
            |_| crate::model::commit_options(message, now_ms),
            |tx| tx.put(&parent, key, scalar),
        )
        .ok()
        .and_then(|success| success.hash)
    })?
    .ok_or(HistoryError::CannotResolve {
        path: keys.join("."),
        reason: "the value could not be written",
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ids::DocumentId;
    use crate::model::{
        apply_edit, create_case, CaseInit, DisappearanceField, Edit, Field, FieldValue, ItemField,
        ItemId, ItemRef, MilitaryField, TimelineField,
    };
    use automerge::ActorId;

    const PLACE: Field = Field::Disappearance(DisappearanceField::Place);
    const CIRCUMSTANCES: Field = Field::Disappearance(DisappearanceField::Circumstances);
    const UNIT: Field = Field::Military(MilitaryField::Unit);

    fn actor(n: u8) -> ActorId {
        ActorId::from([n; 16])
    }

    fn new_case() -> Automerge {
        let mut doc = Automerge::new().with_actor(actor(1));
        create_case(
            &mut doc,
            &CaseInit {
                created_by: "server".into(),
                coordination: Some(DocumentId::from_bytes([7; 16])),
            },
            1_000,
        )
        .unwrap();
        doc
    }

    fn fork(doc: &Automerge, n: u8) -> Automerge {
        doc.fork().with_actor(actor(n))
    }

    fn edit(doc: &mut Automerge, edit: &Edit) -> ChangeHash {
        apply_edit(doc, edit, "someone", 2_000).unwrap().unwrap()
    }

    fn set(field: Field, value: &str) -> Edit {
        Edit::SetField {
            field,
            value: FieldValue::Str(value.into()),
        }
    }

    fn splice(field: Field, pos: usize, delete: usize, insert: &str) -> Edit {
        Edit::SpliceText {
            field,
            pos,
            delete,
            insert: insert.into(),
        }
    }

    fn timeline(id: &str) -> ItemRef {
        ItemRef::new(Collection::Timeline, ItemId::new(id).unwrap())
    }

    fn add_entry(id: &str, title: &str) -> Edit {
        Edit::AddItem {
            item: timeline(id),
            values: vec![(
                ItemField::Timeline(TimelineField::Title),
                FieldValue::Str(title.into()),
            )],
        }
    }

    fn lines(doc: &Automerge, before: &[ChangeHash], after: &[ChangeHash]) -> Vec<String> {
        readable_diff(doc, before, after)
            .unwrap()
            .into_iter()
            .map(|l| l.text)
            .collect()
    }

    fn change(doc: &Automerge, hash: ChangeHash) -> Change {
        doc.get_change_by_hash(&hash).unwrap()
    }

    #[test]
    fn a_register_change_is_one_readable_line() {
        let mut doc = new_case();
        edit(&mut doc, &set(PLACE, "Kharkiv Oblast"));
        let before = doc.get_heads();
        edit(&mut doc, &set(PLACE, "near Izium"));
        assert_eq!(
            lines(&doc, &before, &doc.get_heads()),
            ["disappearance.place: 'Kharkiv Oblast' → 'near Izium'"]
        );
        // Backwards, the same change reads the other way.
        assert_eq!(
            lines(&doc, &doc.get_heads(), &before),
            ["disappearance.place: 'near Izium' → 'Kharkiv Oblast'"]
        );
    }

    #[test]
    fn set_clear_items_text_and_conflicts_read_as_lines() {
        let mut doc = new_case();
        edit(
            &mut doc,
            &splice(CIRCUMSTANCES, 0, 0, "Contact lost on 3 March."),
        );
        edit(&mut doc, &add_entry("t0", "Enlisted"));
        let start = doc.get_heads();
        edit(&mut doc, &set(PLACE, "Kharkiv Oblast"));
        edit(&mut doc, &add_entry("t1", "Last call"));
        edit(&mut doc, &splice(CIRCUMSTANCES, 0, 8, "Radio contact"));
        edit(
            &mut doc,
            &Edit::DeleteItem {
                item: timeline("t0"),
            },
        );
        // Two relatives set the unit concurrently.
        let mut a = fork(&doc, 2);
        let mut b = fork(&doc, 3);
        edit(&mut a, &set(UNIT, "72nd"));
        edit(&mut b, &set(UNIT, "93rd"));
        doc.merge(&mut a).unwrap();
        doc.merge(&mut b).unwrap();
        assert_eq!(
            lines(&doc, &start, &doc.get_heads()),
            [
                "military.unit: conflict between '72nd' and '93rd'",
                "disappearance.place: set to 'Kharkiv Oblast'",
                "disappearance.circumstances: text edited, +13 −8 characters",
                "timeline: +1 item",
                "timeline.t0: deleted",
            ]
        );
        let middle = doc.get_heads();
        edit(
            &mut doc,
            &Edit::SetField {
                field: PLACE,
                value: FieldValue::Null,
            },
        );
        edit(&mut doc, &set(UNIT, "93rd"));
        assert_eq!(
            lines(&doc, &middle, &doc.get_heads()),
            [
                "military.unit: conflict between '72nd' and '93rd' → '93rd'",
                "disappearance.place: 'Kharkiv Oblast' cleared",
            ]
        );
        assert!(lines(&doc, &middle, &middle).is_empty());
    }

    #[test]
    fn the_difference_from_nothing_lists_what_was_written() {
        let mut doc = new_case();
        edit(&mut doc, &set(PLACE, "Bakhmut"));
        let got = lines(&doc, &[], &doc.get_heads());
        assert!(
            got.contains(&"disappearance.place: set to 'Bakhmut'".to_owned()),
            "{got:?}"
        );
        assert!(
            got.contains(&"kind: set to 'casesync.case'".to_owned()),
            "{got:?}"
        );
        assert!(matches!(
            readable_diff(&doc, &[ChangeHash([9; 32])], &doc.get_heads()),
            Err(HistoryError::UnknownChange { .. })
        ));
    }

    #[test]
    fn summaries_name_sections_fields_and_items() {
        let mut doc = new_case();
        let template = doc.get_heads()[0];
        let place = edit(&mut doc, &set(PLACE, "Kharkiv Oblast"));
        let text = edit(&mut doc, &splice(CIRCUMSTANCES, 0, 0, "Lost."));
        let added = edit(&mut doc, &add_entry("t1", "Last call"));
        let deleted = edit(
            &mut doc,
            &Edit::DeleteItem {
                item: timeline("t1"),
            },
        );
        let restored = edit(
            &mut doc,
            &Edit::RestoreItem {
                item: timeline("t1"),
            },
        );

        let s = summarize_change(&doc, &change(&doc, place)).unwrap();
        assert_eq!(s.sections, ["disappearance"]);
        assert_eq!(s.fields, ["disappearance.place"]);
        assert_eq!(s.ops, 1);
        let s = summarize_change(&doc, &change(&doc, text)).unwrap();
        assert_eq!(s.fields, ["disappearance.circumstances"]);
        assert_eq!(s.ops, 5);
        let s = summarize_change(&doc, &change(&doc, added)).unwrap();
        assert_eq!(s.sections, ["timeline"]);
        assert_eq!(s.added, ["timeline.t1"]);
        assert!(s.fields.is_empty(), "{s:?}");
        let s = summarize_change(&doc, &change(&doc, deleted)).unwrap();
        assert_eq!(s.deleted, ["timeline.t1"]);
        assert!(s.fields.is_empty(), "{s:?}");
        let s = summarize_change(&doc, &change(&doc, restored)).unwrap();
        assert_eq!(s.restored, ["timeline.t1"]);
        let s = summarize_change(&doc, &change(&doc, template)).unwrap();
        assert!(s.sections.contains(&"person".to_owned()), "{s:?}");
        assert!(s.added.is_empty(), "{s:?}");
    }

    #[test]
    fn blame_names_the_change_behind_each_span() {
        let mut doc = new_case();
        let first = edit(&mut doc, &splice(CIRCUMSTANCES, 0, 0, "Lost near Bakhmut."));
        let mut sister = fork(&doc, 5);
        let second = edit(
            &mut sister,
            &splice(CIRCUMSTANCES, 18, 0, " Seen on 5 May."),
        );
        doc.merge(&mut sister).unwrap();
        let third = edit(&mut doc, &splice(CIRCUMSTANCES, 5, 4, "by"));
        let spans = blame(&doc, None, &["disappearance", "circumstances"]).unwrap();
        let got: Vec<(&str, Option<ChangeHash>, usize)> = spans
            .iter()
            .map(|s| (s.text.as_str(), s.change, s.start))
            .collect();
        assert_eq!(
            got,
            [
                ("Lost ", Some(first), 0),
                ("by", Some(third), 5),
                (" Bakhmut.", Some(first), 7),
                (" Seen on 5 May.", Some(second), 16),
            ]
        );
        assert_eq!(spans[3].actor, actor(5).to_hex_string());
        // As it stood before the third change.
        let old = blame(&doc, Some(&[second]), &["disappearance", "circumstances"]).unwrap();
        assert_eq!(old.len(), 2);
        assert_eq!(old[0].text, "Lost near Bakhmut.");
        // A register is one span; a map is not a narrative.
        edit(&mut doc, &set(PLACE, "Izium"));
        let place = blame(&doc, None, &["disappearance", "place"]).unwrap();
        assert_eq!(place[0].text, "Izium");
        assert!(matches!(
            blame(&doc, None, &["disappearance"]),
            Err(HistoryError::NotText { .. })
        ));
        assert!(matches!(
            blame(&doc, None, &["disappearance", "nothing"]),
            Err(HistoryError::NoSuchPath { .. })
        ));
    }

    #[test]
    fn a_conflict_is_resolved_by_a_change_that_supersedes_every_value() {
        let mut doc = new_case();
        let mut a = fork(&doc, 2);
        let mut b = fork(&doc, 3);
        let from_a = edit(&mut a, &set(UNIT, "72nd"));
        edit(&mut b, &set(UNIT, "93rd"));
        doc.merge(&mut a).unwrap();
        doc.merge(&mut b).unwrap();
        let conflict = crate::model::conflicts(&doc)
            .into_iter()
            .find(|c| c.path == "military.unit")
            .unwrap();
        let chosen = conflict
            .values
            .iter()
            .find(|v| v.value == Some(crate::model::RawValue::Str("72nd".into())))
            .unwrap();
        assert_eq!(change_of_op(&doc, &chosen.op), Some(from_a));
        assert_eq!(change_of_op(&doc, "1@zz"), None);
        assert_eq!(change_of_op(&doc, "nonsense"), None);

        let mut coordinator = fork(&doc, 9);
        let bad = resolve_conflict(
            &mut coordinator,
            &["military", "unit"],
            "1@00",
            "x".into(),
            5,
        );
        assert!(matches!(bad, Err(HistoryError::NoSuchValue { .. })));
        let hash = resolve_conflict(
            &mut coordinator,
            &["military", "unit"],
            &chosen.op,
            "resolve military.unit".into(),
            3_000_000,
        )
        .unwrap();
        assert!(crate::model::conflicts(&coordinator).is_empty());
        let meta = coordinator.get_change_meta_by_hash(&hash).unwrap();
        assert_eq!(meta.message.as_deref(), Some("resolve military.unit"));
        assert_eq!(meta.timestamp, 3_000);
        let unit = crate::model::read_case(&coordinator).unwrap().military.unit;
        assert_eq!(unit.value().map(String::as_str), Some("72nd"));
        assert!(matches!(
            resolve_conflict(
                &mut coordinator,
                &["military", "unit"],
                &chosen.op,
                "x".into(),
                5
            ),
            Err(HistoryError::CannotResolve { .. })
        ));
        // '72nd' was not automerge's winner: the resolution wrote it anew,
        // so the value's origin is the resolving change.
        let origins = value_origins(&coordinator).unwrap();
        let unit = origins.iter().find(|o| o.path == "military.unit").unwrap();
        assert_eq!(unit.change, hash);
        assert!(!unit.conflicted);

        // Choosing the winner ('93rd', actor 3 > actor 2) deletes the other
        // value instead: the value keeps its writer.
        let winner = conflict.values.last().unwrap();
        assert_eq!(
            winner.value,
            Some(crate::model::RawValue::Str("93rd".into()))
        );
        let from_b = change_of_op(&doc, &winner.op).unwrap();
        let mut coordinator = fork(&doc, 9);
        resolve_conflict(
            &mut coordinator,
            &["military", "unit"],
            &winner.op,
            "r".into(),
            5,
        )
        .unwrap();
        assert!(crate::model::conflicts(&coordinator).is_empty());
        let origins = value_origins(&coordinator).unwrap();
        let unit = origins.iter().find(|o| o.path == "military.unit").unwrap();
        assert_eq!(unit.change, from_b);
    }

    #[test]
    fn patches_are_json_with_paths_from_the_root() {
        let mut doc = new_case();
        let before = doc.get_heads();
        edit(&mut doc, &set(PLACE, "Izium"));
        edit(&mut doc, &splice(CIRCUMSTANCES, 0, 0, "Lost."));
        let got = patches(&doc, &before, &doc.get_heads()).unwrap();
        let got = got.as_array().unwrap();
        assert!(got.contains(&json!({
            "action": "put", "path": ["disappearance", "place"], "value": "Izium", "conflict": false,
        })), "{got:?}");
        assert!(
            got.contains(&json!({
                "action": "splice", "path": ["disappearance", "circumstances", 0], "value": "Lost.",
            })),
            "{got:?}"
        );
    }

    #[test]
    fn written_patches_are_the_patches_json_of_every_action() {
        use automerge::transaction::Transactable;
        let mut doc = Automerge::new().with_actor(actor(1));
        let mut points = vec![Vec::new()];
        let mut tx = doc.transaction();
        let list = tx
            .put_object(automerge::ROOT, "list", ObjType::List)
            .unwrap();
        let text = tx
            .put_object(automerge::ROOT, "text", ObjType::Text)
            .unwrap();
        tx.put_object(automerge::ROOT, "map", ObjType::Map).unwrap();
        tx.put(automerge::ROOT, "n", ScalarValue::counter(1))
            .unwrap();
        tx.put(automerge::ROOT, "gone", "soon \"quoted\" \u{1F600}\n")
            .unwrap();
        tx.put(automerge::ROOT, "f", 1.5).unwrap();
        tx.put(automerge::ROOT, "bytes", vec![1u8, 2, 3]).unwrap();
        tx.insert(&list, 0, "a").unwrap();
        tx.insert(&list, 1, 7_i64).unwrap();
        tx.insert_object(&list, 2, ObjType::Map).unwrap();
        tx.splice_text(&text, 0, 0, "hello wörld").unwrap();
        tx.commit();
        points.push(doc.get_heads());
        let mut other = doc.fork().with_actor(actor(2));
        let mut tx = doc.transaction();
        tx.increment(automerge::ROOT, "n", 5).unwrap();
        tx.delete(automerge::ROOT, "gone").unwrap();
        tx.put(&list, 0, "b").unwrap();
        tx.delete(&list, 1).unwrap();
        tx.splice_text(&text, 1, 3, "").unwrap();
        tx.mark(
            &text,
            automerge::marks::Mark::new("bold".to_owned(), true, 0, 2),
            automerge::marks::ExpandMark::None,
        )
        .unwrap();
        tx.put(automerge::ROOT, "f", "mine").unwrap();
        tx.commit();
        let mut tx = other.transaction();
        tx.put(automerge::ROOT, "f", "theirs").unwrap();
        tx.commit();
        points.push(doc.get_heads());
        doc.merge(&mut other).unwrap();
        points.push(doc.get_heads());
        let mut actions = BTreeSet::new();
        for before in &points {
            for after in &points {
                let got = diff_patches(&doc, before, after).unwrap();
                let mut written = Vec::new();
                write_patches_json(&got, &mut written);
                let written: Json = serde_json::from_slice(&written).unwrap();
                assert_eq!(
                    written,
                    patches(&doc, before, after).unwrap(),
                    "{before:?} -> {after:?}"
                );
                for p in written.as_array().unwrap() {
                    actions.insert(p["action"].as_str().unwrap().to_owned());
                }
            }
        }
        assert_eq!(
            actions.into_iter().collect::<Vec<_>>(),
            ["conflict", "del", "inc", "insert", "mark", "put", "splice"]
        );
    }

    #[test]
    fn a_snapshot_reads_like_view_and_model_at_every_point() {
        let mut doc = new_case();
        let mut points = vec![doc.get_heads()];
        edit(&mut doc, &splice(CIRCUMSTANCES, 0, 0, "Lost near Bakhmut."));
        edit(&mut doc, &add_entry("t1", "Last call"));
        points.push(doc.get_heads());
        let mut a = fork(&doc, 2);
        let mut b = fork(&doc, 3);
        edit(&mut a, &set(UNIT, "72nd"));
        edit(&mut a, &splice(CIRCUMSTANCES, 0, 4, "Gone"));
        edit(&mut b, &set(UNIT, "93rd"));
        edit(
            &mut b,
            &Edit::DeleteItem {
                item: timeline("t1"),
            },
        );
        points.push(a.get_heads());
        doc.merge(&mut a).unwrap();
        doc.merge(&mut b).unwrap();
        points.push(doc.get_heads());
        // A concurrent clear and set of an item's field, and a stock-JS
        // style scalar string where a narrative would be.
        let mut c = fork(&doc, 4);
        edit(
            &mut c,
            &Edit::SetItemField {
                item: timeline("t1"),
                field: ItemField::Timeline(TimelineField::Place),
                value: FieldValue::Null,
            },
        );
        edit(
            &mut doc,
            &Edit::SetItemField {
                item: timeline("t1"),
                field: ItemField::Timeline(TimelineField::Place),
                value: FieldValue::Str("Izium".into()),
            },
        );
        doc.merge(&mut c).unwrap();
        points.push(doc.get_heads());
        for heads in &points {
            let snapshot = Snapshot::read(&doc, Some(heads)).unwrap();
            assert_eq!(snapshot.to_json(), crate::view::to_json(&doc, Some(heads)));
            assert_eq!(
                snapshot.conflicts(&doc).unwrap(),
                crate::model::conflicts_at(&doc, heads).unwrap()
            );
        }
        let now = Snapshot::read(&doc, None).unwrap();
        assert_eq!(now.to_json(), crate::view::to_json(&doc, None));
        assert_eq!(now.conflicts(&doc).unwrap(), crate::model::conflicts(&doc));
        assert_eq!(now.conflicts(&doc).unwrap().len(), 2);
        assert_eq!(
            now.text(&["disappearance", "circumstances"]).as_deref(),
            Some("Gone near Bakhmut.")
        );
    }

    #[test]
    fn the_patch_guided_difference_agrees_with_reading_everything() {
        let mut doc = new_case();
        let mut points = vec![Vec::new(), doc.get_heads()];
        edit(&mut doc, &splice(CIRCUMSTANCES, 0, 0, "Lost near Bakhmut."));
        edit(&mut doc, &add_entry("t1", "Last call"));
        edit(&mut doc, &add_entry("t2", "Letter"));
        edit(
            &mut doc,
            &Edit::AddItem {
                item: ItemRef::new(Collection::Sources, ItemId::new("s1").unwrap()),
                values: Vec::new(),
            },
        );
        points.push(doc.get_heads());
        let mut a = fork(&doc, 2);
        let mut b = fork(&doc, 3);
        edit(&mut a, &set(UNIT, "72nd"));
        edit(&mut a, &splice(CIRCUMSTANCES, 0, 4, "Gone"));
        edit(&mut a, &add_entry("t3", "Rumour"));
        edit(&mut b, &set(UNIT, "93rd"));
        edit(
            &mut b,
            &Edit::DeleteItem {
                item: timeline("t1"),
            },
        );
        edit(
            &mut b,
            &Edit::CiteSource {
                item: timeline("t2"),
                source: ItemId::new("s1").unwrap(),
            },
        );
        points.push(a.get_heads());
        points.push(b.get_heads());
        doc.merge(&mut a).unwrap();
        doc.merge(&mut b).unwrap();
        points.push(doc.get_heads());
        edit(
            &mut doc,
            &Edit::RestoreItem {
                item: timeline("t1"),
            },
        );
        edit(&mut doc, &set(UNIT, "93rd"));
        edit(
            &mut doc,
            &Edit::SetField {
                field: PLACE,
                value: FieldValue::Null,
            },
        );
        points.push(doc.get_heads());
        for before in &points {
            for after in &points {
                let full = full_diff(&doc, before, after);
                for wide in [false, true] {
                    let got = difference_in(&doc, before, after, Some(wide)).unwrap();
                    assert_eq!(got.lines, full, "{before:?} -> {after:?}, wide: {wide}");
                    let mut written = Vec::new();
                    write_patches_json(&got.patches, &mut written);
                    assert_eq!(
                        serde_json::from_slice::<Json>(&written).unwrap(),
                        patches(&doc, before, after).unwrap()
                    );
                }
            }
        }
    }

    #[test]
    fn the_schema_classifies_paths() {
        assert_eq!(classify::<&str>(&[]), Node::Root);
        assert_eq!(classify(&["person"]), Node::Section(Section::Person));
        assert_eq!(
            classify(&["person", "name_variants"]),
            Node::Collection(Collection::NameVariants)
        );
        assert_eq!(
            classify(&["person", "name_variants", "n1"]),
            Node::Item(Collection::NameVariants)
        );
        assert_eq!(
            classify(&["disappearance", "circumstances"]),
            Node::Field(FieldKind::Text)
        );
        assert_eq!(
            classify(&["timeline", "t1", "deleted_at"]),
            Node::Bookkeeping
        );
        assert_eq!(
            classify(&["timeline", "t1", "source_ids"]),
            Node::Field(FieldKind::SourceIds)
        );
        assert_eq!(
            classify(&["requests", "r1", "replies", "a1"]),
            Node::Item(Collection::RequestReplies)
        );
        assert_eq!(
            classify(&["requests", "r1", "replies"]),
            Node::Collection(Collection::RequestReplies)
        );
        assert_eq!(
            classify(&["official_status", "basis"]),
            Node::Field(FieldKind::SourceIds)
        );
        assert_eq!(classify(&["nonsense"]), Node::Other);
    }
}
