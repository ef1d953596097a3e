//! Reads of one plain crossing, for typed layers whose generated calls cost more than the read
//! itself. A uniffi method call from Kotlin allocates JNA structures for every crossing it
//! makes (the call status, each string and list argument's buffer, the handle clone): a
//! primary-key lookup through `Database.query` + `Results.count` + release is eight crossings,
//! measured at 87.6 us a lookup in a loop on the JVM against about 5 us of it in Rust
//! (`bindings/kotlin/README.md`, "Benchmark"). These functions take the [`BatchWriter`] id
//! of the database (plain integer) and one borrowed byte range holding every argument, so the
//! caller can reuse its buffer and call status.
//!
//! # Request format
//!
//! A request is the arguments, in the order each function lists them, written one after
//! another in uniffi's own serialization of each type (the bytes the generated code writes
//! into a `RustBuffer` for a compound argument: a string is a big-endian `i32` length and its
//! UTF-8, a list is an `i32` count and its elements, an enum is an `i32` variant index, 1-based,
//! and its fields). In Kotlin that is `FfiConverterString.write`,
//! `FfiConverterSequenceTypeValue.write` and so on, into one buffer. Nothing may follow the
//! last argument.
//!
//! Errors: a request that does not decode, or has bytes left over, is
//! `TandemError::InvalidArgument`; every length and count in it is checked against the bytes
//! left before uniffi reads it (uniffi reserves a sequence's whole count first, so an unchecked
//! count of two billion would abort the process). Otherwise each function gives the errors of
//! the method it stands for.
//!
//! [`BatchWriter`]: super::BatchWriter

use std::collections::HashMap;

use uniffi::Lift;

use super::database::Results;
use super::python_batch::bound;
use super::types::{FieldValue, Key, ObjectRow, TandemError, Value};
use crate::UniFfiTag;

/// Reads each argument of a request in turn, then checks that nothing is left.
struct Request<'b> {
    rest: &'b [u8],
}

/// The shape of an argument in uniffi's serialization, for [`check`]: what the request's
/// length prefixes are checked against before uniffi reads them (uniffi reserves a sequence's
/// whole length before it reads its elements, so a count of two billion would ask for tens of
/// gigabytes).
#[derive(Clone, Copy)]
enum Shape {
    /// A string or bytes: an `i32` length, then that many bytes.
    Bytes,
    /// A sequence: an `i32` count, then the elements.
    List(&'static Shape),
    /// `u64`.
    U64,
    /// `Option<u64>`: a tag byte, then the value if it is 1.
    OptionU64,
    /// [`Value`].
    Value,
    /// [`Key`].
    Key,
}

/// A malformed request's error.
fn malformed(what: &str, why: impl std::fmt::Display) -> TandemError {
    TandemError::InvalidArgument {
        message: format!("malformed request: {what}: {why}"),
    }
}

/// Takes `n` bytes off `rest`.
fn skip<'b>(rest: &mut &'b [u8], n: usize) -> Result<&'b [u8], &'static str> {
    if rest.len() < n {
        return Err("ends early");
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

/// An `i32` length or count that is not negative.
fn length(rest: &mut &[u8]) -> Result<usize, &'static str> {
    let bytes = skip(rest, 4)?;
    let n = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    usize::try_from(n).map_err(|_| "negative length")
}

/// Walks one argument of `shape` off `rest`, checking every length against the bytes left:
/// a sequence's count may not exceed the bytes left divided by its elements' smallest size
/// (a string or list 4, a [`Value`] or [`Key`] 4, a `u64` 8), so uniffi's reservation is at
/// most a small multiple of the request's length. The variants of [`Value`] and [`Key`] are
/// numbered from 1 in declaration order, as uniffi numbers them.
fn check(rest: &mut &[u8], shape: Shape) -> Result<(), &'static str> {
    match shape {
        Shape::Bytes => {
            let n = length(rest)?;
            skip(rest, n).map(|_| ())
        }
        Shape::List(element) => {
            let n = length(rest)?;
            let smallest = match element {
                Shape::U64 => 8,
                Shape::OptionU64 => 1,
                _ => 4,
            };
            if n > rest.len() / smallest {
                return Err("count larger than the request");
            }
            (0..n).try_for_each(|_| check(rest, *element))
        }
        Shape::U64 => skip(rest, 8).map(|_| ()),
        Shape::OptionU64 => match skip(rest, 1)?[0] {
            0 => Ok(()),
            1 => skip(rest, 8).map(|_| ()),
            _ => Err("bad option tag"),
        },
        Shape::Value => match length(rest)? {
            // Null
            1 => Ok(()),
            // Int, Double
            2 | 8 => skip(rest, 8).map(|_| ()),
            // Bool
            3 => skip(rest, 1).map(|_| ()),
            // String, Binary, ObjectId, Uuid, Decimal
            4 | 5 | 9 | 10 | 11 => check(rest, Shape::Bytes),
            // Timestamp
            6 => skip(rest, 12).map(|_| ()),
            // Float
            7 => skip(rest, 4).map(|_| ()),
            // Link
            12 => {
                check(rest, Shape::Bytes)?;
                check(rest, Shape::Key)
            }
            _ => Err("unknown value variant"),
        },
        Shape::Key => match length(rest)? {
            // Null
            1 => Ok(()),
            // Int
            2 => skip(rest, 8).map(|_| ()),
            // String, ObjectId, Uuid
            3..=5 => check(rest, Shape::Bytes),
            _ => Err("unknown key variant"),
        },
    }
}

impl<'b> Request<'b> {
    fn new(bytes: &'b [u8]) -> Self {
        Request { rest: bytes }
    }

    /// The next argument, of type `T` and shape `shape`, named `what` in an error. The
    /// argument's lengths are checked (`check`) before uniffi reads it.
    fn next<T: Lift<UniFfiTag>>(&mut self, what: &str, shape: Shape) -> Result<T, TandemError> {
        let mut probe = self.rest;
        check(&mut probe, shape).map_err(|why| malformed(what, why))?;
        T::try_read(&mut self.rest).map_err(|e| malformed(what, e))
    }

    /// Fails if bytes are left after the last argument.
    fn end(self) -> Result<(), TandemError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(malformed(
                "end",
                format!("{} bytes after the last argument", self.rest.len()),
            ))
        }
    }
}

/// The results of the query a request starts with (`class_name: String`, `filter: String`,
/// `args: Vec<Value>`), on the database bound to `writer`, with what `rest` reads of the
/// arguments after it; nothing may follow those. Errors: a malformed request, an unknown
/// writer, an argument that is not a valid value.
fn query_results<T>(
    writer: u64,
    request: &[u8],
    rest: impl FnOnce(&mut Request<'_>) -> Result<T, TandemError>,
) -> Result<(Results, T), TandemError> {
    let (_, db) = bound(writer)?;
    let mut request = Request::new(request);
    let class_name = request.next("class name", Shape::Bytes)?;
    let filter = request.next("filter", Shape::Bytes)?;
    let args: Vec<Value> = request.next("arguments", Shape::List(&Shape::Value))?;
    let rest = rest(&mut request)?;
    request.end()?;
    Ok((db.results_unchecked(class_name, filter, &args)?, rest))
}

/// `Database.query(class_name, filter, args)` without keeping the results: compiles the query
/// and returns `Ok` if it would run. Request: `class_name: String`, `filter: String`,
/// `args: Vec<Value>`. Errors: those of `Database.query`.
#[uniffi::export]
pub fn batch_check_query(writer: u64, request: &[u8]) -> Result<(), TandemError> {
    query_results(writer, request, |_| Ok(()))?.0.check()
}

/// `Database.query(class_name, filter, args).count()` in one crossing: how many objects match
/// now. Request: `class_name: String`, `filter: String`, `args: Vec<Value>`. Errors: those of
/// `Database.query` and `Results.count`.
#[uniffi::export]
pub fn batch_count(writer: u64, request: &[u8]) -> Result<u64, TandemError> {
    query_results(writer, request, |_| Ok(()))?.0.count()
}

/// `Database.query(class_name, filter, args).rows(properties)` in one crossing, from position
/// `offset` (0-based), at most `limit` objects (`None`: all): the matching objects by position,
/// in order. Request: `class_name: String`, `filter: String`, `args: Vec<Value>`,
/// `properties: Vec<String>`, `offset: u64`, `limit: Option<u64>`. Errors: those of
/// `Database.query` and `Results.rows`.
#[uniffi::export]
pub fn batch_rows(writer: u64, request: &[u8]) -> Result<Vec<ObjectRow>, TandemError> {
    let (results, (properties, offset, limit)) = query_results(writer, request, |request| {
        let properties: Vec<String> = request.next("properties", Shape::List(&Shape::Bytes))?;
        let offset: u64 = request.next("offset", Shape::U64)?;
        let limit: Option<u64> = request.next("limit", Shape::OptionU64)?;
        Ok((properties, offset, limit))
    })?;
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    results.rows_range(&properties, size(offset), limit.map(size))
}

/// `Database.object(class_name, key)` in one crossing: the object's properties, or `None` if
/// there is none. Request: `class_name: String`, `key: Key`. Errors: those of
/// `Database.object`.
#[uniffi::export]
pub fn batch_object(
    writer: u64,
    request: &[u8],
) -> Result<Option<HashMap<String, FieldValue>>, TandemError> {
    let (_, db) = bound(writer)?;
    let mut request = Request::new(request);
    let class_name: String = request.next("class name", Shape::Bytes)?;
    let key: Key = request.next("key", Shape::Key)?;
    request.end()?;
    db.object(class_name, key)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uniffi::Lower;

    use super::*;
    use crate::ffi::types::{ClassSpec, PropertySpec, PropertyType};
    use crate::ffi::{BatchWriter, Database, RowCodec, WriteOp};

    /// Appends `value` to `out` in uniffi's serialization, as a foreign caller writes it.
    fn put<T: Lower<UniFfiTag>>(out: &mut Vec<u8>, value: T) {
        T::write(value, out);
    }

    fn query_request(class: &str, filter: &str, args: Vec<Value>) -> Vec<u8> {
        let mut out = Vec::new();
        put(&mut out, class.to_string());
        put(&mut out, filter.to_string());
        put(&mut out, args);
        out
    }

    fn open() -> (tempfile::TempDir, Arc<Database>, Arc<BatchWriter>) {
        let prop = PropertySpec::single;
        let classes = vec![ClassSpec {
            name: "Task".into(),
            primary_key: Some("_id".into()),
            properties: vec![
                prop("_id", PropertyType::Int),
                prop("title", PropertyType::String),
            ],
        }];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite").to_string_lossy().into_owned();
        let db = Database::open(path, classes.clone()).unwrap();
        let ops = (0..10)
            .map(|i| WriteOp::Create {
                class_name: "Task".into(),
                key: Key::Int { value: i },
                values: HashMap::from([(
                    "title".to_string(),
                    Value::String {
                        value: format!("t{}", i % 3),
                    },
                )]),
            })
            .collect();
        db.write(ops).unwrap();
        let writer = BatchWriter::new(RowCodec::new(classes).unwrap(), Arc::clone(&db));
        (dir, db, writer)
    }

    /// Each read gives what the methods it stands for give, for queries with and without
    /// arguments, matching none, one or several objects.
    #[test]
    fn reads_equal_the_methods_they_stand_for() {
        let (_dir, db, writer) = open();
        let id = writer.id();
        let cases: Vec<(&str, Vec<Value>)> = vec![
            ("TRUEPREDICATE", vec![]),
            ("_id == $0", vec![Value::Int { value: 4 }]),
            ("_id == $0", vec![Value::Int { value: 40 }]),
            (
                "title == $0 SORT(_id DESC)",
                vec![Value::String { value: "t1".into() }],
            ),
            (
                "_id >= $0 AND _id < $1",
                vec![Value::Int { value: 2 }, Value::Int { value: 7 }],
            ),
        ];
        for (filter, args) in cases {
            let results = db
                .query("Task".into(), filter.into(), args.clone())
                .unwrap();
            let request = query_request("Task", filter, args);
            batch_check_query(id, &request).unwrap();
            assert_eq!(
                batch_count(id, &request).unwrap(),
                results.count().unwrap(),
                "{filter}"
            );
            let properties = vec!["title".to_string(), "_id".to_string()];
            let all = results.rows(properties.clone()).unwrap();
            for (offset, limit) in [(0, None), (0, Some(1)), (2, Some(2)), (1, None), (99, None)] {
                let mut rows_request = request.clone();
                put(&mut rows_request, properties.clone());
                put(&mut rows_request, offset as u64);
                put(&mut rows_request, limit.map(|n: usize| n as u64));
                let expected: Vec<_> = all
                    .iter()
                    .skip(offset)
                    .take(limit.unwrap_or(usize::MAX))
                    .cloned()
                    .collect();
                assert_eq!(
                    batch_rows(id, &rows_request).unwrap(),
                    expected,
                    "{filter} from {offset}, at most {limit:?}"
                );
            }
        }
        for key in [3, 11] {
            let mut request = Vec::new();
            put(&mut request, "Task".to_string());
            put(&mut request, Key::Int { value: key });
            assert_eq!(
                batch_object(id, &request).unwrap(),
                db.object("Task".into(), Key::Int { value: key }).unwrap()
            );
        }
    }

    /// A query's own errors are the method's; a request that does not decode, has bytes left
    /// over, or names a released writer is refused with a message that says which.
    #[test]
    fn bad_requests_are_refused_and_say_why() {
        let (_dir, db, writer) = open();
        let id = writer.id();
        for filter in ["_id ==", "nosuch == 1"] {
            let request = query_request("Task", filter, vec![]);
            let expected = db
                .query("Task".into(), filter.into(), vec![])
                .err()
                .expect("the query is refused")
                .to_string();
            for got in [
                batch_check_query(id, &request).unwrap_err(),
                batch_count(id, &request).unwrap_err(),
            ] {
                assert_eq!(got.to_string(), expected);
            }
        }
        let request = query_request("Task", "TRUEPREDICATE", vec![]);
        for cut in [0, 3, request.len() - 1] {
            let err = batch_count(id, &request[..cut]).unwrap_err().to_string();
            assert!(err.contains("malformed request"), "{err}");
        }
        let mut longer = request.clone();
        longer.push(0);
        let err = batch_count(id, &longer).unwrap_err().to_string();
        assert!(err.contains("1 bytes after the last argument"), "{err}");
        // A length prefix larger than the request.
        let mut lying = Vec::new();
        put(&mut lying, i32::MAX);
        let err = batch_count(id, &lying).unwrap_err().to_string();
        assert!(err.contains("malformed request: class name"), "{err}");

        // A count no request could hold is refused before anything is reserved for it (uniffi
        // reserves a sequence's whole count first): the arguments' list, and a byte string
        // inside a value.
        let mut huge = Vec::new();
        put(&mut huge, "Task".to_string());
        put(&mut huge, "TRUEPREDICATE".to_string());
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        let err = batch_count(id, &huge).unwrap_err().to_string();
        assert!(
            err.contains("arguments: count larger than the request"),
            "{err}"
        );
        let mut huge = Vec::new();
        put(&mut huge, "Task".to_string());
        put(&mut huge, "_id == $0".to_string());
        huge.extend_from_slice(&1i32.to_be_bytes()); // one argument
        huge.extend_from_slice(&5i32.to_be_bytes()); // Value::Binary
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        let err = batch_count(id, &huge).unwrap_err().to_string();
        assert!(err.contains("arguments: ends early"), "{err}");
        let mut properties = query_request("Task", "TRUEPREDICATE", vec![]);
        properties.extend_from_slice(&i32::MAX.to_be_bytes());
        let err = batch_rows(id, &properties).unwrap_err().to_string();
        assert!(err.contains("properties: count larger"), "{err}");

        drop(writer);
        let err = batch_count(id, &request).unwrap_err().to_string();
        assert!(err.contains("is closed"), "{err}");
    }

    /// Every variant of `Value` and `Key`, written by uniffi, passes the length check and
    /// reads back as written; cut short anywhere, it is refused.
    #[test]
    fn the_length_check_follows_uniffis_serialization() {
        let key_variants = vec![
            Key::Null,
            Key::Int { value: -7 },
            Key::String { value: "k".into() },
            Key::ObjectId { bytes: vec![1; 12] },
            Key::Uuid { bytes: vec![2; 16] },
        ];
        let mut values = vec![
            Value::Null,
            Value::Int { value: 1 },
            Value::Bool { value: true },
            Value::String { value: "é".into() },
            Value::Binary {
                value: vec![0, 1, 2],
            },
            Value::Timestamp {
                seconds: -3,
                nanoseconds: -4,
            },
            Value::Float { value: 1.5 },
            Value::Double { value: -2.5 },
            Value::ObjectId { bytes: vec![3; 12] },
            Value::Uuid { bytes: vec![4; 16] },
            Value::Decimal {
                value: "1.25".into(),
            },
        ];
        for key in &key_variants {
            values.push(Value::Link {
                class_name: "Task".into(),
                key: key.clone(),
            });
        }
        let mut bytes = Vec::new();
        put(&mut bytes, values.clone());
        let mut request = Request::new(&bytes);
        let read: Vec<Value> = request
            .next("arguments", Shape::List(&Shape::Value))
            .unwrap();
        request.end().unwrap();
        assert_eq!(read, values);
        for cut in 0..bytes.len() {
            let mut rest = &bytes[..cut];
            assert!(
                check(&mut rest, Shape::List(&Shape::Value)).is_err(),
                "cut at {cut}"
            );
        }
        for key in key_variants {
            let mut bytes = Vec::new();
            put(&mut bytes, key.clone());
            let mut request = Request::new(&bytes);
            assert_eq!(request.next::<Key>("key", Shape::Key).unwrap(), key);
            request.end().unwrap();
        }
        let mut bytes = Vec::new();
        put(&mut bytes, Some(5u64));
        put(&mut bytes, None::<u64>);
        put(&mut bytes, vec!["a".to_string(), String::new()]);
        let mut request = Request::new(&bytes);
        assert_eq!(
            request.next::<Option<u64>>("a", Shape::OptionU64).unwrap(),
            Some(5)
        );
        assert_eq!(
            request.next::<Option<u64>>("b", Shape::OptionU64).unwrap(),
            None
        );
        let names: Vec<String> = request.next("c", Shape::List(&Shape::Bytes)).unwrap();
        assert_eq!(names, vec!["a".to_string(), String::new()]);
        request.end().unwrap();
    }
}
