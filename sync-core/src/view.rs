//! A case document as JSON, for the HTTP API and the JS client.
//!
//! This is the document tree as it stands (or stood at some heads): maps as
//! objects, `Text` as strings, scalars as JSON values, timestamps as
//! milliseconds. A register with concurrent values shows automerge's
//! deterministic winner here; every such register is also listed by
//! [`crate::model::conflicts`], and callers must show those, never hide
//! them. The tree carries its own `schema_version`.

use automerge::{Automerge, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, Value};
use serde_json::{json, Map, Value as Json};

/// Nesting below which the walk stops (a case is a few levels deep; a
/// hostile document is not allowed to recurse us off the stack).
const MAX_DEPTH: usize = 32;

/// The whole document as JSON, now or at `heads`.
pub fn to_json(doc: &Automerge, heads: Option<&[ChangeHash]>) -> Json {
    walk(doc, &ObjId::Root, ObjType::Map, heads, 0)
}

fn walk(
    doc: &Automerge,
    obj: &ObjId,
    ty: ObjType,
    heads: Option<&[ChangeHash]>,
    depth: usize,
) -> Json {
    if depth > MAX_DEPTH {
        return Json::Null;
    }
    match ty {
        ObjType::Text => Json::String(match heads {
            Some(h) => doc.text_at(obj, h).unwrap_or_default(),
            None => doc.text(obj).unwrap_or_default(),
        }),
        ObjType::Map | ObjType::Table => {
            let mut out = Map::new();
            let keys: Vec<String> = match heads {
                Some(h) => doc.keys_at(obj, h).collect(),
                None => doc.keys(obj).collect(),
            };
            for key in keys {
                let got = match heads {
                    Some(h) => doc.get_at(obj, key.as_str(), h),
                    None => doc.get(obj, key.as_str()),
                };
                if let Ok(Some((value, id))) = got {
                    out.insert(key, value_json(doc, value, &id, heads, depth));
                }
            }
            Json::Object(out)
        }
        ObjType::List => {
            let len = match heads {
                Some(h) => doc.length_at(obj, h),
                None => doc.length(obj),
            };
            let mut out = Vec::with_capacity(len.min(1024));
            for i in 0..len {
                let got = match heads {
                    Some(h) => doc.get_at(obj, i, h),
                    None => doc.get(obj, i),
                };
                if let Ok(Some((value, id))) = got {
                    out.push(value_json(doc, value, &id, heads, depth));
                }
            }
            Json::Array(out)
        }
    }
}

fn value_json(
    doc: &Automerge,
    value: Value<'_>,
    id: &ObjId,
    heads: Option<&[ChangeHash]>,
    depth: usize,
) -> Json {
    match value {
        Value::Object(ty) => walk(doc, id, ty, heads, depth + 1),
        Value::Scalar(s) => scalar_json(&s),
    }
}

/// One scalar as JSON.
pub fn scalar_json(s: &ScalarValue) -> Json {
    match s {
        ScalarValue::Str(s) => json!(s.as_str()),
        ScalarValue::Int(i) => json!(i),
        ScalarValue::Uint(u) => json!(u),
        ScalarValue::F64(f) => json!(f),
        ScalarValue::Counter(c) => json!(i64::from(c)),
        ScalarValue::Timestamp(t) => json!(t),
        ScalarValue::Boolean(b) => json!(b),
        ScalarValue::Null => Json::Null,
        ScalarValue::Bytes(b) => json!({ "$bytes_len": b.len() }),
        ScalarValue::Unknown { .. } => Json::Null,
    }
}
