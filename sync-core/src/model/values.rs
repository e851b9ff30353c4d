//! Plain values: item ids, statuses, the values an edit carries and the
//! registers a read returns.

use std::fmt;
use std::str::FromStr;

use super::date::FuzzyDate;
use super::error::ModelError;

/// Longest item id accepted.
pub const MAX_ITEM_ID_LEN: usize = 64;

/// The key of an item in a collection (a timeline entry, a source, ...).
///
/// The caller draws it (this crate has no randomness); a UUID or 16 random
/// bytes in base58 are both fine. Ids are limited to ASCII letters, digits,
/// `-` and `_` so that they are safe in paths, messages and URLs.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId(String);

impl ItemId {
    pub fn new(s: impl Into<String>) -> Result<Self, ModelError> {
        let s = s.into();
        let reason = if s.is_empty() {
            Some("empty")
        } else if s.len() > MAX_ITEM_ID_LEN {
            Some("longer than 64 bytes")
        } else if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            Some("only ASCII letters, digits, '-' and '_' are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(ModelError::InvalidId { value: s, reason }),
            None => Ok(Self(s)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ItemId {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ItemId({})", self.0)
    }
}

/// What someone says happened to the missing person. Used by status claims
/// (what a comrade or a document says) and by the official status (what a
/// coordinator has established).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Whereabouts unknown.
    Missing,
    Alive,
    Wounded,
    Captured,
    Killed,
    /// Remains found and identified.
    RemainsIdentified,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Missing,
        Status::Alive,
        Status::Wounded,
        Status::Captured,
        Status::Killed,
        Status::RemainsIdentified,
    ];

    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Missing => "missing",
            Status::Alive => "alive",
            Status::Wounded => "wounded",
            Status::Captured => "captured",
            Status::Killed => "killed",
            Status::RemainsIdentified => "remains_identified",
        }
    }
}

impl FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?}"))
    }
}

/// What kind of value a field stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// A short string register.
    Str,
    /// A [`FuzzyDate`] register, stored as its string form.
    Date,
    /// An integer register.
    Int,
    /// A [`Status`] register, stored as its string form.
    Status,
    /// A narrative: a `Text` object edited by splice.
    Text,
    /// A set of source ids: a map from id to `true`.
    SourceIds,
    /// The replies of a request: a collection.
    Replies,
}

impl FieldKind {
    pub fn name(self) -> &'static str {
        match self {
            FieldKind::Str => "string",
            FieldKind::Date => "date",
            FieldKind::Int => "integer",
            FieldKind::Status => "status",
            FieldKind::Text => "narrative",
            FieldKind::SourceIds => "source-id set",
            FieldKind::Replies => "reply collection",
        }
    }

    /// Registers hold a scalar; every other kind is a container the
    /// template or the item's creation made.
    pub fn is_register(self) -> bool {
        matches!(
            self,
            FieldKind::Str | FieldKind::Date | FieldKind::Int | FieldKind::Status
        )
    }
}

/// A value an edit writes into a register (or, in [`super::Edit::AddItem`],
/// the initial content of a narrative).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Str(String),
    Date(FuzzyDate),
    Int(i64),
    Status(Status),
    /// Clears the register. It is stored as `null` rather than deleted, so
    /// that a clear racing a set shows up as a conflict instead of losing.
    Null,
}

impl FieldValue {
    pub fn kind_name(&self) -> &'static str {
        match self {
            FieldValue::Str(_) => "string",
            FieldValue::Date(_) => "date",
            FieldValue::Int(_) => "integer",
            FieldValue::Status(_) => "status",
            FieldValue::Null => "null",
        }
    }
}

/// One of the concurrent values of a register.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// `None` when this writer cleared the register.
    pub value: Option<T>,
    /// The writer's actor id, in hex.
    pub actor: String,
    /// The op id, `counter@actor`.
    pub op: String,
}

/// A register as read: every concurrent value, so that nothing is silently
/// resolved. Empty when the field was never written.
#[derive(Debug, Clone, PartialEq)]
pub struct Register<T> {
    /// In automerge's order; the last one is the value automerge's `get`
    /// would pick.
    pub values: Vec<Versioned<T>>,
}

impl<T> Default for Register<T> {
    fn default() -> Self {
        Self { values: Vec::new() }
    }
}

impl<T> Register<T> {
    /// The value automerge picks deterministically, or `None` when the
    /// register is unset or cleared. Check [`Register::is_conflicted`]
    /// before showing it as *the* value.
    pub fn value(&self) -> Option<&T> {
        self.values.last().and_then(|v| v.value.as_ref())
    }

    /// True when two or more writers set the register concurrently.
    pub fn is_conflicted(&self) -> bool {
        self.values.len() > 1
    }

    /// Every distinct value that is set, winner last.
    pub fn candidates(&self) -> impl Iterator<Item = &T> {
        self.values.iter().filter_map(|v| v.value.as_ref())
    }
}
