//! Owned, totally ordered values as the in-memory state stores them.
//!
//! Strings are resolved (no intern indices), floats are kept as bit patterns so that values
//! have a total order and `NaN == NaN`, and links are primary-key references: a link to an
//! object that does not exist is kept as written (it reads as null and resolves again if the
//! object is re-created), so erasing an object never needs to touch other objects.

use std::collections::BTreeMap;
use std::fmt;

use crate::changeset::{self, Changeset, Payload};
use crate::model::{Decimal128, ObjectId, Timestamp, Uuid};

/// A primary key with its string resolved.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// Null key.
    Null,
    /// Integer key.
    Int(i64),
    /// String key.
    String(String),
    /// Global key (hi, lo).
    GlobalKey(u64, u64),
    /// Object id key.
    ObjectId([u8; 12]),
    /// UUID key.
    Uuid([u8; 16]),
}

impl Key {
    /// The key as a value of its primary key property's type (`Null` for the null key);
    /// `None` for a global key, which has no value form.
    pub fn to_val(&self) -> Option<Val> {
        Some(match self {
            Key::Null => Val::Null,
            Key::Int(i) => Val::Int(*i),
            Key::String(s) => Val::String(s.clone()),
            Key::ObjectId(id) => Val::ObjectId(*id),
            Key::Uuid(id) => Val::Uuid(*id),
            Key::GlobalKey(..) => return None,
        })
    }

    /// Resolves a changeset primary key against the changeset's string table.
    pub fn resolve(pk: &changeset::PrimaryKey, cs: &Changeset) -> Option<Key> {
        Some(match pk {
            changeset::PrimaryKey::Null => Key::Null,
            changeset::PrimaryKey::Int(v) => Key::Int(*v),
            changeset::PrimaryKey::String(s) => Key::String(cs.string(*s)?.to_owned()),
            changeset::PrimaryKey::GlobalKey(k) => Key::GlobalKey(k.hi, k.lo),
            changeset::PrimaryKey::ObjectId(id) => Key::ObjectId(id.0),
            changeset::PrimaryKey::Uuid(id) => Key::Uuid(id.0),
        })
    }

    /// The payload type code of this key.
    pub fn payload_type(&self) -> changeset::PayloadType {
        use changeset::PayloadType as T;
        match self {
            Key::Null => T::Null,
            Key::Int(_) => T::Int,
            Key::String(_) => T::String,
            Key::GlobalKey(..) => T::GlobalKey,
            Key::ObjectId(_) => T::ObjectId,
            Key::Uuid(_) => T::Uuid,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Null => f.write_str("null"),
            Key::Int(v) => write!(f, "{v}"),
            Key::String(s) => write!(f, "{s:?}"),
            Key::GlobalKey(hi, lo) => write!(f, "GlobalKey({hi}, {lo})"),
            Key::ObjectId(id) => write!(f, "ObjectId({})", ObjectId(*id)),
            Key::Uuid(id) => write!(f, "UUID({})", Uuid(*id)),
        }
    }
}

/// A scalar value (or link) in the state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Val {
    /// Null.
    Null,
    /// Integer.
    Int(i64),
    /// Boolean.
    Bool(bool),
    /// String.
    String(String),
    /// Bytes.
    Binary(Vec<u8>),
    /// Timestamp as (seconds, nanoseconds).
    Timestamp(i64, i32),
    /// Float, by bit pattern.
    Float(u32),
    /// Double, by bit pattern.
    Double(u64),
    /// decimal128 bits.
    Decimal(u128),
    /// Object id.
    ObjectId([u8; 12]),
    /// UUID.
    Uuid([u8; 16]),
    /// Link to (table, key).
    Link(String, Key),
}

impl Val {
    /// Converts a plain payload; `None` for the special payloads (ObjectValue, Erased, List,
    /// Dictionary, Set, GlobalKey) and for unresolvable intern indices.
    pub fn from_payload(p: &Payload, cs: &Changeset) -> Option<Val> {
        Some(match p {
            Payload::Null => Val::Null,
            Payload::Int(v) => Val::Int(*v),
            Payload::Bool(v) => Val::Bool(*v),
            Payload::String(s) => Val::String(s.to_string()),
            Payload::Binary(b) => Val::Binary(b.clone()),
            Payload::Timestamp(t) => Val::Timestamp(t.seconds(), t.nanoseconds()),
            Payload::Float(v) => Val::Float(v.to_bits()),
            Payload::Double(v) => Val::Double(v.to_bits()),
            Payload::Decimal(d) => Val::Decimal(d.to_bits()),
            Payload::ObjectId(id) => Val::ObjectId(id.0),
            Payload::Uuid(id) => Val::Uuid(id.0),
            Payload::Link(link) => Val::Link(
                cs.string(link.target_table)?.to_owned(),
                Key::resolve(&link.target, cs)?,
            ),
            Payload::Set
            | Payload::List
            | Payload::Erased
            | Payload::Dictionary
            | Payload::ObjectValue
            | Payload::GlobalKey(_) => return None,
        })
    }

    /// The payload type code of this value.
    pub fn payload_type(&self) -> changeset::PayloadType {
        use changeset::PayloadType as T;
        match self {
            Val::Null => T::Null,
            Val::Int(_) => T::Int,
            Val::Bool(_) => T::Bool,
            Val::String(_) => T::String,
            Val::Binary(_) => T::Binary,
            Val::Timestamp(..) => T::Timestamp,
            Val::Float(_) => T::Float,
            Val::Double(_) => T::Double,
            Val::Decimal(_) => T::Decimal,
            Val::ObjectId(_) => T::ObjectId,
            Val::Uuid(_) => T::Uuid,
            Val::Link(..) => T::Link,
        }
    }

    /// Whether realm-core, asked to overwrite the stored value `self` with `new`, keeps `self`.
    ///
    /// realm-core skips a write whose value compares equal to the stored one: its float and
    /// double leaves (`BasicArray<T>::set`: `if (get(ndx) == value) return;`, also under
    /// `BasicArrayNull`), `Lst<T>::set` (`if (old != value)`), and, for values of the same type,
    /// `Obj::set<Mixed>`, `Lst<Mixed>::set` and `Dictionary::insert` over an existing key
    /// (`value.is_same_type(old) && value == old`). IEEE equality makes +0.0 and -0.0 equal,
    /// so a set of ±0.0 over ∓0.0 keeps the stored sign: a required float or double starts at
    /// +0.0, and `realm_set_value(-0.0)` on it reads back +0.0. Any other equal pair has the same
    /// bits (NaN never compares equal in a leaf; in a mixed, NaNs are equal only bit for bit),
    /// so this is true only for the two zeros of one type (realm-core 14.12,
    /// src/realm/array_basic_tpl.hpp, list.hpp, obj.cpp, dictionary.cpp).
    pub(crate) fn realm_keeps(&self, new: &Val) -> bool {
        match (self, new) {
            (Val::Float(old), Val::Float(new)) => {
                old != new && f32::from_bits(*old) == 0.0 && f32::from_bits(*new) == 0.0
            }
            (Val::Double(old), Val::Double(new)) => {
                old != new && f64::from_bits(*old) == 0.0 && f64::from_bits(*new) == 0.0
            }
            _ => false,
        }
    }

    /// The other zero of a float or double zero (+0.0 for -0.0 and back), which realm-core's
    /// sets treat as the same element (`Set<T>::insert` and `erase` find by `==`); `None` for
    /// any other value.
    pub(crate) fn other_zero(&self) -> Option<Val> {
        match self {
            Val::Float(b) if f32::from_bits(*b) == 0.0 => Some(Val::Float(b ^ (1 << 31))),
            Val::Double(b) if f64::from_bits(*b) == 0.0 => Some(Val::Double(b ^ (1 << 63))),
            _ => None,
        }
    }

    /// The value a non-nullable column of this type starts with.
    pub fn default_for(t: changeset::PayloadType) -> Val {
        use changeset::PayloadType as T;
        match t {
            T::Int => Val::Int(0),
            T::Bool => Val::Bool(false),
            T::String => Val::String(String::new()),
            T::Binary => Val::Binary(Vec::new()),
            T::Timestamp => Val::Timestamp(0, 0),
            T::Float => Val::Float(0f32.to_bits()),
            T::Double => Val::Double(0f64.to_bits()),
            T::Decimal => Val::Decimal(
                Decimal128::from_parts(0, 0, false)
                    .expect("zero is a valid decimal")
                    .to_bits(),
            ),
            T::ObjectId => Val::ObjectId([0; 12]),
            T::Uuid => Val::Uuid([0; 16]),
            _ => Val::Null,
        }
    }
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Null => f.write_str("null"),
            Val::Int(v) => write!(f, "{v}"),
            Val::Bool(v) => write!(f, "{v}"),
            Val::String(s) => write!(f, "{s:?}"),
            Val::Binary(b) => write!(f, "Binary({})", b.len()),
            Val::Timestamp(s, n) => match Timestamp::new(*s, *n) {
                Ok(t) => write!(f, "Timestamp({}, {})", t.seconds(), t.nanoseconds()),
                Err(_) => write!(f, "Timestamp({s}, {n})"),
            },
            Val::Float(b) => write!(f, "{:?}f", f32::from_bits(*b)),
            Val::Double(b) => write!(f, "{:?}", f64::from_bits(*b)),
            Val::Decimal(b) => write!(f, "Decimal({})", Decimal128::from_bits(*b)),
            Val::ObjectId(id) => write!(f, "ObjectId({})", ObjectId(*id)),
            Val::Uuid(id) => write!(f, "UUID({})", Uuid(*id)),
            Val::Link(t, k) => write!(f, "Link({t}[{k}])"),
        }
    }
}

/// One object's fields (an embedded object has no key of its own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Object {
    /// Field name to content.
    pub fields: BTreeMap<String, Field>,
}

/// An element of a list or a dictionary value: a scalar or an embedded object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Element {
    /// A scalar or link.
    Value(Val),
    /// An embedded object.
    Embedded(Object),
}

/// What a field holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// A scalar or link (or null).
    Value(Val),
    /// An embedded object, or none.
    Embedded(Option<Object>),
    /// A list.
    List(Vec<Element>),
    /// A set (kept sorted, so equal sets compare equal).
    Set(Vec<Val>),
    /// A dictionary.
    Dictionary(BTreeMap<String, Element>),
}
