//! How values are stored in SQLite columns.
//!
//! Typed columns hold the natural SQLite type (INTEGER, REAL, TEXT, BLOB), so that SQL
//! comparisons and indexes work on them. Where a column can hold several types (mixed
//! properties, collection tables) a second column holds the kind: the payload type code.
//!
//! | value | stored as |
//! |---|---|
//! | null | NULL (in a set table, where the value is part of the primary key and SQLite refuses NULL there: an empty BLOB with kind 0) |
//! | int, bool | INTEGER |
//! | string | TEXT |
//! | binary | BLOB |
//! | timestamp | 12-byte BLOB, big-endian seconds then nanoseconds with the sign bits flipped, so byte order is time order |
//! | float, double | REAL (a NaN, which SQLite cannot store as REAL, as its raw bits in a BLOB) |
//! | decimal128 | 16-byte BLOB (BID bits, big-endian) |
//! | object id, UUID | 12- / 16-byte BLOB |
//! | link (a link column, or an element of kind Link in a collection of links) | the target's primary key, encoded as above; the null key (the one object of a class whose `int` or `string` key is nullable may have it) as an empty BLOB, since NULL there is no link ([`encode_link`]) |
//! | link in a mixed column or collection (kind Link) | BLOB: the target's class name, NUL, the key's type code, the key's bytes (none for the null key) |
//! | embedded object | INTEGER row id of the child row |
//!
//! No key of any type is an empty BLOB (an int is INTEGER, a string TEXT even when empty, an
//! object id 12 bytes, a UUID or global key 16), so the empty BLOB names only the null key; in
//! a set table it is told apart from a null element (also an empty BLOB) by the kind column,
//! which the table's primary key includes. Files written before this encoding hold no such
//! links (a link to the null key was stored as NULL and read back as no link), so they need
//! no migration; the first link to a null key stored raises the file to format 3 (the
//! `layout` module's `FORMAT_VERSION`).

use rusqlite::types::{Value as Sql, ValueRef};

use crate::changeset::PayloadType;
use crate::state::{Key, Val};

/// The kind code stored beside a value in mixed columns and collection tables: the payload
/// type code, with -2 (ObjectValue) for an embedded object.
pub(crate) const EMBEDDED_KIND: i64 = -2;

pub(crate) fn timestamp_bytes(seconds: i64, nanos: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&((seconds as u64) ^ (1 << 63)).to_be_bytes());
    out.extend_from_slice(&((nanos as u32) ^ (1 << 31)).to_be_bytes());
    out
}

fn timestamp_from(bytes: &[u8]) -> Option<(i64, i32)> {
    if bytes.len() != 12 {
        return None;
    }
    let s = u64::from_be_bytes(bytes[..8].try_into().ok()?) ^ (1 << 63);
    let n = u32::from_be_bytes(bytes[8..].try_into().ok()?) ^ (1 << 31);
    Some((s as i64, n as i32))
}

/// A set element as (SQL value, kind code): as [`encode`], except that null is an empty BLOB
/// of kind 0 (Null), since a set table's value column is part of its WITHOUT ROWID primary key,
/// which cannot hold NULL.
pub(crate) fn set_element((sql, kind): (Sql, i64)) -> (Sql, i64) {
    match sql {
        Sql::Null => (Sql::Blob(Vec::new()), PayloadType::Null.code()),
        other => (other, kind),
    }
}

/// A value as (SQL value, kind code).
pub(crate) fn encode(v: &Val) -> (Sql, i64) {
    let kind = v.payload_type().code();
    let sql = match v {
        Val::Null => Sql::Null,
        Val::Int(i) => Sql::Integer(*i),
        Val::Bool(b) => Sql::Integer(i64::from(*b)),
        Val::String(s) => Sql::Text(s.clone()),
        Val::Binary(b) => Sql::Blob(b.clone()),
        Val::Timestamp(s, n) => Sql::Blob(timestamp_bytes(*s, *n)),
        Val::Float(bits) => {
            let f = f32::from_bits(*bits);
            if f.is_nan() {
                Sql::Blob(bits.to_be_bytes().to_vec())
            } else {
                Sql::Real(f64::from(f))
            }
        }
        Val::Double(bits) => {
            let f = f64::from_bits(*bits);
            if f.is_nan() {
                Sql::Blob(bits.to_be_bytes().to_vec())
            } else {
                Sql::Real(f)
            }
        }
        Val::Decimal(bits) => Sql::Blob(bits.to_be_bytes().to_vec()),
        Val::ObjectId(id) => Sql::Blob(id.to_vec()),
        Val::Uuid(id) => Sql::Blob(id.to_vec()),
        Val::Link(_, key) => encode_link(key),
    };
    (sql, kind)
}

/// The stored form of a link to the object with primary key `key` in a link column or a
/// collection of links: [`encode_key`], except that the null key is an empty BLOB (NULL in a
/// link column means no link, and no key of any type is an empty BLOB).
pub(crate) fn encode_link(key: &Key) -> Sql {
    match key {
        Key::Null => Sql::Blob(Vec::new()),
        other => encode_key(other),
    }
}

/// Whether a stored (SQL value, kind code) pair is a link to the null key as [`encode_link`]
/// stores it: the form that needs format 3 (the `layout` module's `FORMAT_VERSION`). A link in
/// a mixed column is never an empty BLOB, so it never is.
pub(crate) fn is_null_key_link((sql, kind): &(Sql, i64)) -> bool {
    *kind == PayloadType::Link.code() && matches!(sql, Sql::Blob(b) if b.is_empty())
}

/// A primary key as an SQL value.
pub(crate) fn encode_key(key: &Key) -> Sql {
    match key {
        Key::Null => Sql::Null,
        Key::Int(i) => Sql::Integer(*i),
        Key::String(s) => Sql::Text(s.clone()),
        Key::GlobalKey(hi, lo) => {
            let mut b = hi.to_be_bytes().to_vec();
            b.extend_from_slice(&lo.to_be_bytes());
            Sql::Blob(b)
        }
        Key::ObjectId(id) => Sql::Blob(id.to_vec()),
        Key::Uuid(id) => Sql::Blob(id.to_vec()),
    }
}

/// Reads a primary key of type `t`.
pub(crate) fn decode_key(raw: ValueRef<'_>, t: PayloadType) -> Option<Key> {
    Some(match (raw, t) {
        (ValueRef::Null, _) => Key::Null,
        (ValueRef::Integer(i), PayloadType::Int) => Key::Int(i),
        (ValueRef::Text(s), PayloadType::String) => {
            Key::String(String::from_utf8(s.to_vec()).ok()?)
        }
        (ValueRef::Blob(b), PayloadType::ObjectId) => Key::ObjectId(b.try_into().ok()?),
        (ValueRef::Blob(b), PayloadType::Uuid) => Key::Uuid(b.try_into().ok()?),
        (ValueRef::Blob(b), PayloadType::GlobalKey) if b.len() == 16 => Key::GlobalKey(
            u64::from_be_bytes(b[..8].try_into().ok()?),
            u64::from_be_bytes(b[8..].try_into().ok()?),
        ),
        _ => return None,
    })
}

/// Reads a value stored with kind `kind` (a payload type code). Links need the target table
/// and its key type; an empty BLOB is a link to the null key ([`encode_link`]).
pub(crate) fn decode(
    raw: ValueRef<'_>,
    kind: PayloadType,
    link: Option<(&str, PayloadType)>,
) -> Option<Val> {
    Some(match (kind, raw) {
        (_, ValueRef::Null) | (PayloadType::Null, _) => Val::Null,
        (PayloadType::Int, ValueRef::Integer(i)) => Val::Int(i),
        (PayloadType::Bool, ValueRef::Integer(i)) => Val::Bool(i != 0),
        (PayloadType::String, ValueRef::Text(s)) => {
            Val::String(String::from_utf8(s.to_vec()).ok()?)
        }
        (PayloadType::Binary, ValueRef::Blob(b)) => Val::Binary(b.to_vec()),
        (PayloadType::Timestamp, ValueRef::Blob(b)) => {
            let (s, n) = timestamp_from(b)?;
            Val::Timestamp(s, n)
        }
        (PayloadType::Float, ValueRef::Real(f)) => Val::Float((f as f32).to_bits()),
        (PayloadType::Float, ValueRef::Blob(b)) => {
            Val::Float(u32::from_be_bytes(b.try_into().ok()?))
        }
        (PayloadType::Double, ValueRef::Real(f)) => Val::Double(f.to_bits()),
        (PayloadType::Double, ValueRef::Blob(b)) => {
            Val::Double(u64::from_be_bytes(b.try_into().ok()?))
        }
        (PayloadType::Decimal, ValueRef::Blob(b)) => {
            Val::Decimal(u128::from_be_bytes(b.try_into().ok()?))
        }
        (PayloadType::ObjectId, ValueRef::Blob(b)) => Val::ObjectId(b.try_into().ok()?),
        (PayloadType::Uuid, ValueRef::Blob(b)) => Val::Uuid(b.try_into().ok()?),
        (PayloadType::Link, ValueRef::Blob([])) => Val::Link(link?.0.to_owned(), Key::Null),
        (PayloadType::Link, raw) => {
            let (table, key_type) = link?;
            Val::Link(table.to_owned(), decode_key(raw, key_type)?)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_sort_as_bytes() {
        let mut stamps = vec![
            (-5, -1),
            (-5, 0),
            (0, 0),
            (0, 7),
            (1, 0),
            (i64::MAX, 999),
            (i64::MIN, 0),
        ];
        let mut by_bytes = stamps.clone();
        stamps.sort();
        by_bytes.sort_by_key(|(s, n)| timestamp_bytes(*s, *n));
        assert_eq!(stamps, by_bytes);
        for (s, n) in stamps {
            assert_eq!(timestamp_from(&timestamp_bytes(s, n)), Some((s, n)));
        }
    }

    #[test]
    fn every_value_round_trips() {
        let values = [
            Val::Null,
            Val::Int(-3),
            Val::Bool(true),
            Val::String("x".into()),
            Val::Binary(vec![0, 1]),
            Val::Timestamp(-2, -3),
            Val::Float(1.5f32.to_bits()),
            Val::Float(f32::NAN.to_bits() | 1),
            Val::Double((-0.0f64).to_bits()),
            Val::Double(f64::NAN.to_bits()),
            Val::Decimal(7 << 100),
            Val::ObjectId([3; 12]),
            Val::Uuid([4; 16]),
        ];
        for v in values {
            let (sql, kind) = encode(&v);
            let kind = PayloadType::from_code(kind).unwrap();
            let raw = ValueRef::from(&sql);
            assert_eq!(decode(raw, kind, None), Some(v.clone()), "{v:?}");
        }
        let link = Val::Link("T".into(), Key::String("k".into()));
        let (sql, _) = encode(&link);
        assert_eq!(
            decode(
                ValueRef::from(&sql),
                PayloadType::Link,
                Some(("T", PayloadType::String))
            ),
            Some(link)
        );
    }

    #[test]
    fn a_link_to_the_null_key_is_an_empty_blob_unlike_no_link_and_every_other_key() {
        let null_key = Val::Link("T".into(), Key::Null);
        let stored = encode(&null_key);
        assert_eq!(stored, (Sql::Blob(Vec::new()), PayloadType::Link.code()));
        assert!(is_null_key_link(&stored));
        for key_type in [PayloadType::Int, PayloadType::String] {
            let raw = ValueRef::from(&stored.0);
            assert_eq!(
                decode(raw, PayloadType::Link, Some(("T", key_type))),
                Some(null_key.clone())
            );
            // NULL is still no link.
            assert_eq!(
                decode(ValueRef::Null, PayloadType::Link, Some(("T", key_type))),
                Some(Val::Null)
            );
        }
        for key in [
            Key::Int(0),
            Key::String(String::new()),
            Key::ObjectId([0; 12]),
            Key::Uuid([0; 16]),
            Key::GlobalKey(0, 0),
        ] {
            let other = encode(&Val::Link("T".into(), key.clone()));
            assert!(!is_null_key_link(&other), "{key:?}");
            assert_ne!(other.0, stored.0, "{key:?}");
        }
        // A null set element is an empty BLOB too, of another kind: the set table's primary key
        // (owner, k, v) keeps the two apart.
        let null_element = set_element(encode(&Val::Null));
        assert_eq!(null_element.0, stored.0);
        assert_ne!(null_element.1, stored.1);
        assert!(!is_null_key_link(&null_element));
        assert_eq!(set_element(stored.clone()), stored);
    }
}
