//! Small helpers shared by the story tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod forge;

use std::time::Duration;

use sync_core::model::{Collection, Edit, Field, FieldValue, ItemField, ItemId, ItemRef, Register};

/// Failure guard for every wait: far above what any step takes, so a
/// timeout means "never", not "slow".
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn id(s: &str) -> ItemId {
    ItemId::new(s).expect("valid item id")
}

pub fn set(field: Field, value: &str) -> Edit {
    Edit::SetField {
        field,
        value: FieldValue::Str(value.to_owned()),
    }
}

pub fn splice(field: Field, pos: usize, insert: &str) -> Edit {
    Edit::SpliceText {
        field,
        pos,
        delete: 0,
        insert: insert.to_owned(),
    }
}

pub fn add_item(collection: Collection, item: &str, values: &[(ItemField, &str)]) -> Edit {
    Edit::AddItem {
        item: ItemRef::new(collection, id(item)),
        values: values
            .iter()
            .map(|(f, v)| (*f, FieldValue::Str((*v).to_owned())))
            .collect(),
    }
}

/// Every value of a register, sorted.
pub fn candidates(register: &Register<String>) -> Vec<String> {
    let mut all: Vec<String> = register.candidates().cloned().collect();
    all.sort();
    all
}

/// Hex change hashes, sorted, as `GET /api/cases/{id}` lists heads.
pub fn hex_heads(heads: &[automerge::ChangeHash]) -> Vec<String> {
    let mut all: Vec<String> = heads.iter().map(ToString::to_string).collect();
    all.sort();
    all
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}
