//! Query comparison and sort semantics per property type (Realm's rules, `docs/store.md`
//! "Queries"), checked against the store and against an independent model written here.
//!
//! The table below states, for every property type (and a mixed property holding each type),
//! the values a class holds *in Realm's ascending sort order* (null first, ties in insertion
//! order), and the arguments to compare them with. For every value, every argument and every
//! operator (==, !=, <, <=, >, >=, BETWEEN) the store's answer must equal the model's, and
//! SORT ASC / DESC must give the model's order, which must be the listed order.

use std::cmp::Ordering;
use std::path::PathBuf;

use tandem::model::{
    ClassSchema, Decimal128, Link, ObjectId, PrimaryKey, Property, PropertyType, Schema, Timestamp,
    Uuid, Value,
};
use tandem::store::{Config, Database, StoreError};

/// A scratch directory (removed when the returned guard is dropped) and a path in it.
fn temp_db(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-qsem-{name}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().join("db.sqlite");
    (dir, path)
}

fn schema() -> Schema {
    let p = |name: &str, t| Property::new(name, t).nullable();
    Schema::new(vec![
        ClassSchema::top_level(
            "T",
            "_id",
            vec![
                Property::new("_id", PropertyType::Int),
                p("int", PropertyType::Int),
                p("bool", PropertyType::Bool),
                p("string", PropertyType::String),
                p("binary", PropertyType::Binary),
                p("timestamp", PropertyType::Timestamp),
                p("float", PropertyType::Float),
                p("double", PropertyType::Double),
                p("decimal", PropertyType::Decimal),
                p("oid", PropertyType::ObjectId),
                p("uuid", PropertyType::Uuid),
                Property::new("mixed", PropertyType::Mixed),
                Property::link("link", "L"),
            ],
        ),
        ClassSchema::top_level("L", "_id", vec![Property::new("_id", PropertyType::Int)]),
    ])
    .unwrap()
}

/// A new database in a scratch directory, and the guard that removes the directory.
fn open(name: &str) -> (tempfile::TempDir, Database) {
    let (dir, path) = temp_db(name);
    (
        dir,
        Database::open(path, &schema(), Config::default()).unwrap(),
    )
}

fn dec(text: &str) -> Value {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (coefficient, exponent) = body.split_once('E').unwrap_or((body, "0"));
    Value::Decimal(
        Decimal128::from_parts(
            coefficient.parse().unwrap(),
            exponent.parse().unwrap(),
            negative,
        )
        .unwrap(),
    )
}

fn decimal_nan() -> Value {
    Value::Decimal(Decimal128::from_bits(
        0x7c00_0000_0000_0000_0000_0000_0000_0000,
    ))
}

fn ts(s: i64, n: i32) -> Value {
    Value::Timestamp(Timestamp::new(s, n).unwrap())
}

fn l(id: i64) -> Value {
    Value::Link(Link {
        class: "L".into(),
        key: PrimaryKey::Int(id),
    })
}

// ---------------------------------------------------------------------------------------
// The model: Realm's rules, written independently of `src/store/compare.rs`.
// ---------------------------------------------------------------------------------------

/// A number scaled by 10^9, for the decimal comparisons (test values have few digits).
fn scaled(text: &str) -> i128 {
    // `text` is Rust's `{:e}` form or a decimal's `cEe`.
    let lower = text.to_ascii_lowercase();
    let (mantissa, exponent) = lower.split_once('e').unwrap_or((&lower, "0"));
    let exponent: i32 = exponent.parse().unwrap();
    let negative = mantissa.starts_with('-');
    let mantissa = mantissa.trim_start_matches('-');
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: i128 = format!("{whole}{fraction}").parse().unwrap();
    let shift = exponent - fraction.len() as i32 + 9;
    let v = if shift >= 0 {
        digits * 10i128.pow(shift as u32)
    } else {
        digits / 10i128.pow((-shift) as u32)
    };
    if negative {
        -v
    } else {
        v
    }
}

/// A number as Realm converts it when it meets a decimal: `None` for NaN.
fn as_decimal(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(i128::from(*i) * 1_000_000_000),
        Value::Double(_) | Value::Float(_) if as_f64(v)?.is_infinite() => {
            Some(if as_f64(v)? < 0.0 {
                i128::MIN
            } else {
                i128::MAX
            })
        }
        // Decimal128(double) keeps 15 significant digits, Decimal128(float) 7.
        Value::Double(d) if !d.is_nan() => Some(scaled(&format!("{:.14e}", d))),
        Value::Float(f) if !f.is_nan() => Some(scaled(&format!("{:.6e}", f64::from(*f)))),
        Value::Decimal(d) => {
            let (c, e, negative) = d.parts();
            if d.to_bits() >> 122 & 0x1f == 0x1f {
                return None;
            }
            let v = scaled(&format!("{c}E{e}"));
            Some(if negative { -v } else { v })
        }
        _ => None,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(f64::from(*f)),
        Value::Double(d) => Some(*d),
        _ => None,
    }
}

fn is_number(v: &Value) -> bool {
    matches!(
        v,
        Value::Int(_) | Value::Float(_) | Value::Double(_) | Value::Decimal(_)
    )
}

fn is_nan(v: &Value) -> bool {
    match v {
        Value::Float(f) => f.is_nan(),
        Value::Double(d) => d.is_nan(),
        Value::Decimal(_) => as_decimal(v).is_none(),
        _ => false,
    }
}

/// Realm's `Mixed::compare` for comparable values; `None` when not comparable.
fn realm_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    use Value::*;
    if is_number(a) && is_number(b) {
        // NaN is below every number; two NaNs are equal here (the tests hold one NaN each).
        return Some(match (is_nan(a), is_nan(b)) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            _ if matches!(a, Decimal(_)) || matches!(b, Decimal(_)) => {
                as_decimal(a)?.cmp(&as_decimal(b)?)
            }
            (false, false) => match (a, b) {
                (Int(x), Int(y)) => x.cmp(y),
                _ => as_f64(a)?.partial_cmp(&as_f64(b)?)?,
            },
        });
    }
    Some(match (a, b) {
        (Bool(x), Bool(y)) => x.cmp(y),
        (String(x), String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Binary(x), Binary(y)) => x.cmp(y),
        (Timestamp(x), Timestamp(y)) => {
            (x.seconds(), x.nanoseconds()).cmp(&(y.seconds(), y.nanoseconds()))
        }
        (ObjectId(x), ObjectId(y)) => x.0.cmp(&y.0),
        (Uuid(x), Uuid(y)) => x.0.cmp(&y.0),
        // Links are equal or not; no order between two links holds.
        (Link(x), Link(y)) if x == y => Ordering::Equal,
        _ => return None,
    })
}

/// Realm's sort: null first, then kinds by `sorting_rank`, then [`realm_cmp`].
fn sort_cmp(a: &Value, b: &Value) -> Ordering {
    let rank = |v: &Value| match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Int(_) | Value::Float(_) | Value::Double(_) | Value::Decimal(_) => 2,
        Value::String(_) => 3,
        Value::Binary(_) => 4,
        Value::Timestamp(_) => 5,
        Value::ObjectId(_) => 6,
        Value::Uuid(_) => 7,
        Value::Link(_) => 8,
    };
    rank(a)
        .cmp(&rank(b))
        .then_with(|| realm_cmp(a, b).unwrap_or(Ordering::Equal))
}

/// Whether `stored op arg` holds for a property of type `prop`.
fn model_matches(prop: PropertyType, stored: &Value, op: &str, arg: &Value) -> bool {
    let null = |v: &Value| matches!(v, Value::Null);
    if null(arg) || null(stored) {
        let both = null(arg) && null(stored);
        return match op {
            "==" | "<=" | ">=" => both,
            "!=" => !both,
            _ => false,
        };
    }
    // A typed float/double property against a non-decimal number: IEEE comparison.
    let ieee = matches!(prop, PropertyType::Float | PropertyType::Double)
        && !matches!(arg, Value::Decimal(_));
    let ordering = if ieee {
        as_f64(stored).unwrap().partial_cmp(&as_f64(arg).unwrap())
    } else {
        realm_cmp(stored, arg)
    };
    match (op, ordering) {
        ("!=", o) => o != Some(Ordering::Equal),
        (_, None) => false,
        ("==", Some(o)) => o == Ordering::Equal,
        ("<", Some(o)) => o == Ordering::Less,
        ("<=", Some(o)) => o != Ordering::Greater,
        (">", Some(o)) => o == Ordering::Greater,
        (">=", Some(o)) => o != Ordering::Less,
        _ => unreachable!("{op}"),
    }
}

// ---------------------------------------------------------------------------------------
// The table.
// ---------------------------------------------------------------------------------------

struct Case {
    prop: &'static str,
    prop_type: PropertyType,
    /// Stored values, in Realm's ascending sort order.
    values: Vec<Value>,
    /// Further arguments (the stored values are arguments too).
    extra_args: Vec<Value>,
    /// Arguments of another kind, which a typed property refuses.
    refused: Vec<Value>,
}

fn cases() -> Vec<Case> {
    let f = Value::Float;
    let d = Value::Double;
    vec![
        Case {
            prop: "int",
            prop_type: PropertyType::Int,
            values: vec![
                Value::Null,
                Value::Int(i64::MIN),
                Value::Int(-3),
                Value::Int(0),
                Value::Int(10),
                Value::Int(10),
                Value::Int(i64::MAX),
            ],
            extra_args: vec![
                d(9.5),
                d(10.0),
                f(-3.0),
                dec("1E1"),
                dec("25E-1"),
                d(f64::NAN),
                d(f64::INFINITY),
            ],
            refused: vec![Value::String("10".into()), Value::Bool(true)],
        },
        Case {
            prop: "bool",
            prop_type: PropertyType::Bool,
            values: vec![Value::Null, Value::Bool(false), Value::Bool(true)],
            extra_args: vec![],
            refused: vec![Value::Int(1), Value::String("true".into())],
        },
        Case {
            prop: "string",
            prop_type: PropertyType::String,
            values: ["", "A", "B", "Zürich", "a", "ab", "b", "é", "日本"]
                .iter()
                .map(|s| Value::String((*s).into()))
                .fold(vec![Value::Null], |mut v, s| {
                    v.push(s);
                    v
                }),
            extra_args: vec![Value::String("aa".into()), Value::String("Z".into())],
            refused: vec![Value::Int(1), Value::Binary(b"a".to_vec())],
        },
        Case {
            prop: "binary",
            prop_type: PropertyType::Binary,
            values: vec![
                Value::Null,
                Value::Binary(vec![]),
                Value::Binary(vec![0]),
                Value::Binary(vec![0, 1]),
                Value::Binary(vec![1]),
                Value::Binary(vec![255]),
            ],
            extra_args: vec![Value::Binary(vec![0, 0])],
            refused: vec![Value::String("a".into())],
        },
        Case {
            prop: "timestamp",
            prop_type: PropertyType::Timestamp,
            values: vec![
                Value::Null,
                ts(-1, -5),
                ts(0, 0),
                ts(0, 1),
                ts(1, 0),
                ts(1_700_000_000, 5),
            ],
            extra_args: vec![ts(-1, 0), ts(0, 999_999_999)],
            refused: vec![Value::Int(0)],
        },
        Case {
            prop: "float",
            prop_type: PropertyType::Float,
            values: vec![
                Value::Null,
                f(f32::NAN),
                f(f32::NEG_INFINITY),
                f(-3.5),
                f(0.0),
                f(0.1),
                f(0.5),
                f(2.5),
                f(f32::INFINITY),
            ],
            extra_args: vec![
                Value::Int(0),
                Value::Int(-3),
                d(0.5),
                d(0.1),
                dec("5E-1"),
                dec("1E-1"),
                d(f64::NAN),
            ],
            refused: vec![Value::String("0.5".into())],
        },
        Case {
            prop: "double",
            prop_type: PropertyType::Double,
            values: vec![
                Value::Null,
                d(f64::NAN),
                d(f64::NEG_INFINITY),
                d(-3.0),
                d(0.0),
                d(0.1),
                d(0.5),
                d(25.0),
                d(f64::INFINITY),
            ],
            extra_args: vec![
                Value::Int(0),
                Value::Int(25),
                f(0.5),
                f(0.1),
                dec("1E-1"),
                dec("25"),
                dec("-30E-1"),
                decimal_nan(),
            ],
            refused: vec![Value::Bool(false)],
        },
        Case {
            prop: "decimal",
            prop_type: PropertyType::Decimal,
            // The issue's prices, NaN and a tie (1E0 and 10E-1 are the same number).
            values: vec![
                Value::Null,
                decimal_nan(),
                dec("-3"),
                dec("5E-1"),
                dec("10E-1"),
                dec("1E0"),
                dec("1E1"),
                dec("25"),
            ],
            extra_args: vec![
                Value::Int(10),
                Value::Int(-3),
                Value::Int(0),
                d(0.5),
                d(20.0),
                f(0.5),
                d(f64::NAN),
                dec("2E1"),
                dec("100E-1"),
            ],
            refused: vec![Value::String("25".into())],
        },
        Case {
            prop: "oid",
            prop_type: PropertyType::ObjectId,
            values: vec![
                Value::Null,
                Value::ObjectId(ObjectId([0; 12])),
                Value::ObjectId(ObjectId([1; 12])),
                Value::ObjectId(ObjectId([255; 12])),
            ],
            extra_args: vec![],
            refused: vec![Value::Uuid(Uuid([1; 16]))],
        },
        Case {
            prop: "uuid",
            prop_type: PropertyType::Uuid,
            values: vec![
                Value::Null,
                Value::Uuid(Uuid([0; 16])),
                Value::Uuid(Uuid([1; 16])),
                Value::Uuid(Uuid([255; 16])),
            ],
            extra_args: vec![],
            refused: vec![Value::ObjectId(ObjectId([1; 12]))],
        },
        Case {
            prop: "mixed",
            prop_type: PropertyType::Mixed,
            values: vec![
                Value::Null,
                Value::Bool(false),
                Value::Bool(true),
                d(f64::NAN),
                dec("-3"),
                Value::Int(-1),
                d(0.1),
                f(0.5),
                dec("1E0"),
                Value::Int(1),
                d(2.5),
                Value::String("".into()),
                Value::String("a".into()),
                Value::Binary(vec![]),
                Value::Binary(vec![1]),
                ts(0, 0),
                ts(5, 0),
                Value::ObjectId(ObjectId([1; 12])),
                Value::Uuid(Uuid([1; 16])),
                l(1),
            ],
            extra_args: vec![
                dec("1E-1"),
                d(1.0),
                Value::Int(0),
                dec("25E-1"),
                Value::String("b".into()),
                l(2),
                decimal_nan(),
            ],
            refused: vec![],
        },
    ]
}

/// The ids `query` finds. On every query of this file, `count` gives as many and
/// `check_query` accepts it, or both refuse it as `query` does.
fn ids(db: &Database, query: &str, args: &[Value]) -> Result<Vec<i64>, StoreError> {
    let read = db.read()?;
    let found = read.query("T", query, args);
    match &found {
        Ok(keys) => {
            assert_eq!(read.count("T", query, args)?, keys.len() as u64, "{query}");
            read.check_query("T", query, args)?;
        }
        Err(e) => {
            let refused = |r: Result<(), StoreError>| r.map_err(|e| e.to_string());
            assert_eq!(
                refused(read.check_query("T", query, args)),
                Err(e.to_string())
            );
            assert_eq!(
                refused(read.count("T", query, args).map(drop)),
                Err(e.to_string())
            );
        }
    }
    Ok(found?
        .into_iter()
        .map(|k| match k {
            PrimaryKey::Int(v) => v,
            other => panic!("{other}"),
        })
        .collect())
}

/// Asserts that `query` is refused with a message containing `says`.
fn assert_refused(db: &Database, query: &str, args: &[Value], says: &str) {
    match ids(db, query, args) {
        Err(StoreError::Query(e)) => assert!(e.message.contains(says), "{query}: {e}"),
        other => panic!("{query} with {args:?}: {other:?}"),
    }
}

fn fill(db: &Database, prop: &str, values: &[Value]) {
    let mut tx = db.begin_write().unwrap();
    for id in 1..=2 {
        tx.create("L", PrimaryKey::Int(id), &[]).unwrap();
    }
    for (i, v) in values.iter().enumerate() {
        tx.create("T", PrimaryKey::Int(i as i64 + 1), &[(prop, v.clone())])
            .unwrap();
    }
    tx.commit().unwrap();
}

const OPS: [&str; 6] = ["==", "!=", "<", "<=", ">", ">="];

#[test]
fn every_type_compares_and_sorts_as_realm_does() {
    let mut checked = 0usize;
    for case in cases() {
        let (_dir, db) = open(case.prop);
        fill(&db, case.prop, &case.values);
        let expect = |pred: &dyn Fn(&Value) -> bool| -> Vec<i64> {
            (1..=case.values.len() as i64)
                .filter(|id| pred(&case.values[*id as usize - 1]))
                .collect()
        };
        // The listed order is the model's sort order.
        for pair in case.values.windows(2) {
            assert_ne!(
                sort_cmp(&pair[0], &pair[1]),
                Ordering::Greater,
                "{}: the table lists {:?} before {:?}",
                case.prop,
                pair[0],
                pair[1]
            );
        }
        let mut args = vec![Value::Null];
        args.extend(case.values.iter().cloned());
        args.extend(case.extra_args.iter().cloned());
        for arg in &args {
            for op in OPS {
                let query = format!("{} {op} $0", case.prop);
                let got = ids(&db, &query, std::slice::from_ref(arg))
                    .unwrap_or_else(|e| panic!("{query} with {arg:?}: {e}"));
                let want = expect(&|v| model_matches(case.prop_type, v, op, arg));
                assert_eq!(got, want, "{query} with $0 = {arg:?}");
                checked += 1;
            }
        }
        for low in &args {
            for high in &args {
                let query = format!("{} BETWEEN {{$0, $1}}", case.prop);
                let got = ids(&db, &query, &[low.clone(), high.clone()])
                    .unwrap_or_else(|e| panic!("{query}: {e}"));
                let want = expect(&|v| {
                    model_matches(case.prop_type, v, ">=", low)
                        && model_matches(case.prop_type, v, "<=", high)
                });
                assert_eq!(got, want, "{query} with {low:?}, {high:?}");
                checked += 1;
            }
        }
        // Sort: the model's stable order (ties keep insertion order), ascending and descending.
        let mut asc: Vec<i64> = (1..=case.values.len() as i64).collect();
        asc.sort_by(|a, b| sort_cmp(&case.values[*a as usize - 1], &case.values[*b as usize - 1]));
        let mut desc: Vec<i64> = (1..=case.values.len() as i64).collect();
        desc.sort_by(|a, b| sort_cmp(&case.values[*b as usize - 1], &case.values[*a as usize - 1]));
        assert_eq!(
            asc,
            (1..=case.values.len() as i64).collect::<Vec<_>>(),
            "{}",
            case.prop
        );
        assert_eq!(
            ids(&db, &format!("SORT({} ASC)", case.prop), &[]).unwrap(),
            asc,
            "{} ASC",
            case.prop
        );
        assert_eq!(
            ids(&db, &format!("SORT({} DESC)", case.prop), &[]).unwrap(),
            desc,
            "{} DESC",
            case.prop
        );
        checked += 2;
        for arg in &case.refused {
            for op in OPS {
                let query = format!("{} {op} $0", case.prop);
                assert_refused(&db, &query, std::slice::from_ref(arg), "cannot compare");
                checked += 1;
            }
        }
    }
    println!("query semantics: {checked} comparisons and sorts checked against the model");
    assert!(checked > 2000, "{checked}");
}

#[test]
fn links_compare_by_identity_only() {
    let (_dir, db) = open("links");
    fill(&db, "link", &[Value::Null, l(1), l(2), l(1)]);
    assert_eq!(ids(&db, "link == $0", &[l(1)]).unwrap(), [2, 4]);
    assert_eq!(ids(&db, "link != $0", &[l(1)]).unwrap(), [1, 3]);
    assert_eq!(ids(&db, "link == nil", &[]).unwrap(), [1]);
    assert_eq!(ids(&db, "link != nil", &[]).unwrap(), [2, 3, 4]);
    assert_eq!(
        ids(&db, "link IN {$0, $1}", &[l(2), Value::Null]).unwrap(),
        [1, 3]
    );
    for op in ["<", "<=", ">", ">="] {
        assert_refused(&db, &format!("link {op} $0"), &[l(1)], "only == and !=");
    }
    assert_refused(&db, "SORT(link ASC)", &[], "cannot sort by a link");
}

/// The issue's input, as query text with literals and with arguments.
#[test]
fn decimal_prices_compare_by_value() {
    let (_dir, db) = open("prices");
    fill(
        &db,
        "decimal",
        &[dec("25"), dec("1E1"), dec("-3"), dec("10E-1"), dec("5E-1")],
    );
    assert_eq!(ids(&db, "decimal > 2E1", &[]).unwrap(), [1]);
    assert_eq!(ids(&db, "decimal == 1E0", &[]).unwrap(), [4]);
    assert_eq!(ids(&db, "decimal == 1.0", &[]).unwrap(), [4]);
    assert_eq!(ids(&db, "decimal >= 10", &[]).unwrap(), [1, 2]);
    assert_eq!(
        ids(&db, "decimal >= $0", &[Value::Int(10)]).unwrap(),
        [1, 2]
    );
    assert_eq!(
        ids(&db, "decimal >= $0", &[Value::Double(10.0)]).unwrap(),
        [1, 2]
    );
    assert_eq!(ids(&db, "decimal < $0", &[dec("5E-1")]).unwrap(), [3]);
    assert_eq!(ids(&db, "decimal < 0.0000001", &[]).unwrap(), [3]);
    assert_eq!(
        ids(&db, "decimal BETWEEN {0.5, 10}", &[]).unwrap(),
        [2, 4, 5]
    );
    assert_eq!(ids(&db, "decimal IN {1, 25, 7}", &[]).unwrap(), [1, 4]);
    assert_eq!(ids(&db, "SORT(decimal ASC)", &[]).unwrap(), [3, 5, 4, 2, 1]);
    assert_eq!(
        ids(&db, "SORT(decimal DESC)", &[]).unwrap(),
        [1, 2, 4, 5, 3]
    );
    assert_eq!(ids(&db, "decimal > -1E6000", &[]).unwrap(), [1, 2, 3, 4, 5]);
    assert_refused(
        &db,
        "decimal == 1234567890123456789012345678901234567",
        &[],
        "34 digits",
    );
}

#[test]
fn unicode_case_and_diacritic_modifiers() {
    let (_dir, db) = open("unicode");
    let names = [
        "Zürich",
        "Éjszakai",
        "zurich",
        "ZÜRICH",
        "Σίσυφος",
        "Straße",
    ];
    let values: Vec<Value> = names.iter().map(|s| Value::String((*s).into())).collect();
    fill(&db, "string", &values);
    let q = |query: &str| ids(&db, query, &[]).unwrap_or_else(|e| panic!("{query}: {e}"));
    assert_eq!(q("string ==[c] 'ZÜRICH'"), [1, 4]);
    assert_eq!(q("string ==[c] 'zürich'"), [1, 4]);
    assert_eq!(q("string !=[c] 'zürich'"), [2, 3, 5, 6]);
    assert_eq!(q("string CONTAINS[c] 'éj'"), [2]);
    assert_eq!(q("string BEGINSWITH[c] 'zü'"), [1, 4]);
    assert_eq!(q("string ENDSWITH[c] 'ÜRICH'"), [1, 4]);
    assert_eq!(q("string LIKE[c] 'z?rich'"), [1, 3, 4]);
    assert_eq!(q("string LIKE[c] '*SZAK*'"), [2]);
    assert_eq!(
        q("string ==[c] 'ΣΊΣΥΦΟΣ'"),
        [5],
        "final sigma folds to sigma"
    );
    assert_eq!(
        q("string ==[c] 'STRASSE'"),
        Vec::<i64>::new(),
        "simple folding keeps ß"
    );
    assert_eq!(
        q("string ==[c] 'STRAẞE'"),
        [6],
        "capital sharp s folds to ß"
    );
    assert_eq!(q("string ==[d] 'Zurich'"), [1]);
    assert_eq!(q("string ==[d] 'ZURICH'"), [4]);
    assert_eq!(q("string ==[cd] 'zurich'"), [1, 3, 4]);
    assert_eq!(q("string ==[dc] 'ZURICH'"), [1, 3, 4]);
    assert_eq!(q("string !=[cd] 'zurich'"), [2, 5, 6]);
    assert_eq!(q("string CONTAINS[d] 'Ejsz'"), [2]);
    assert_eq!(q("string CONTAINS[cd] 'EJSZ'"), [2]);
    assert_eq!(q("string BEGINSWITH[d] 'Zu'"), [1]);
    assert_eq!(q("string BEGINSWITH[cd] 'ej'"), [2]);
    assert_eq!(q("string ENDSWITH[d] 'URICH'"), [4]);
    assert_eq!(q("string ENDSWITH[cd] 'Urich'"), [1, 3, 4]);
    assert_eq!(q("string LIKE[d] 'Z?rich'"), [1]);
    assert_eq!(q("string LIKE[cd] '*URI*'"), [1, 3, 4]);
    assert_eq!(q("string ==[d] 'Σισυφος'"), [5]);
    // Without a modifier nothing is folded.
    assert_eq!(q("string == 'zurich'"), [3]);
    assert_eq!(q("string CONTAINS 'ü'"), [1]);
    assert_refused(&db, "string <[c] 'a'", &[], "[c] applies to ==");
    assert_refused(&db, "int ==[c] 'a'", &[], "needs a string property");
}

#[test]
fn string_operators_on_mixed_match_only_strings() {
    let (_dir, db) = open("mixedstrings");
    let values = [
        Value::String("Zürich".into()),
        Value::Int(12),
        Value::Binary(b"zurich".to_vec()),
        Value::String("ZURICH".into()),
        Value::Null,
    ];
    fill(&db, "mixed", &values);
    let q = |query: &str| ids(&db, query, &[]).unwrap_or_else(|e| panic!("{query}: {e}"));
    assert_eq!(q("mixed ==[cd] 'zurich'"), [1, 4]);
    assert_eq!(q("mixed CONTAINS '1'"), Vec::<i64>::new());
    assert_eq!(q("mixed BEGINSWITH[c] 'z'"), [1, 4]);
    assert_eq!(q("mixed LIKE[c] '*'"), [1, 4]);
    assert_eq!(q("mixed !=[c] 'zürich'"), [2, 3, 4, 5]);
    assert_eq!(q("mixed == 12"), [2]);
    assert_eq!(q("mixed == 12.0"), [2]);
    assert_eq!(q("mixed == '12'"), Vec::<i64>::new());
}

// ---------------------------------------------------------------------------------------
// realm-core's serialized queries (`Query::get_description()`): what a realm-core 14 client
// sends as a flexible-sync subscription. The forms are core's `util/serializer.cpp`.
// ---------------------------------------------------------------------------------------

const OID_A: [u8; 12] = [0x65, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xa1];
const OID_B: [u8; 12] = [0x65, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xb2];
const UUID_A: [u8; 16] = [
    0x3b, 0x24, 0x11, 0x01, 0xe2, 0xbb, 0x42, 0x55, 0x8c, 0xaf, 0x41, 0x36, 0xc5, 0x66, 0xa9, 0x62,
];
const UUID_B: [u8; 16] = [0xff; 16];

/// Five objects with several properties each (ids 1 to 5); object 5 is all null. With the
/// guard that removes the database's directory.
fn serialized_forms_db(name: &str) -> (tempfile::TempDir, Database) {
    let (dir, db) = open(name);
    let s = |v: &str| Value::String(v.into());
    let rows: [Vec<(&str, Value)>; 5] = [
        vec![
            ("string", s("say \"hi\"")),
            ("int", Value::Int(1)),
            ("bool", Value::Bool(true)),
            ("timestamp", ts(100, 0)),
            ("oid", Value::ObjectId(ObjectId(OID_A))),
            ("uuid", Value::Uuid(Uuid(UUID_A))),
            ("double", Value::Double(1.5)),
            ("float", Value::Float(0.1)),
            ("decimal", dec("10")),
            ("binary", Value::Binary(vec![0x00, 0xff])),
            ("mixed", Value::Int(1)),
        ],
        vec![
            ("string", s("Zürich")),
            ("int", Value::Int(2)),
            ("bool", Value::Bool(false)),
            ("timestamp", ts(200, 0)),
            ("oid", Value::ObjectId(ObjectId(OID_B))),
            ("uuid", Value::Uuid(Uuid(UUID_B))),
            ("double", Value::Double(f64::NAN)),
            ("float", Value::Float(0.25)),
            ("decimal", dec("123456789012345678901234567890123")),
            ("binary", Value::Binary(b"ab".to_vec())),
            ("mixed", Value::String("a".into())),
        ],
        vec![
            ("string", s("back\\slash")),
            ("int", Value::Int(3)),
            ("bool", Value::Bool(false)),
            ("timestamp", ts(-1, -500_000_000)),
            ("double", Value::Double(-2.0)),
            ("decimal", dec("-3")),
            ("mixed", Value::String("A".into())),
        ],
        vec![
            ("string", s("Plain")),
            ("bool", Value::Bool(true)),
            ("timestamp", ts(200, 0)),
            ("mixed", Value::Double(1.0)),
        ],
        vec![],
    ];
    let mut tx = db.begin_write().unwrap();
    for (i, values) in rows.iter().enumerate() {
        tx.create("T", PrimaryKey::Int(i as i64 + 1), values)
            .unwrap();
    }
    tx.commit().unwrap();
    (dir, db)
}

#[test]
fn realm_core_serialized_queries_select_the_expected_objects() {
    let (_dir, db) = serialized_forms_db("serialized");
    let q = |query: &str| ids(&db, query, &[]).unwrap_or_else(|e| panic!("{query}: {e}"));
    let none = Vec::<i64>::new();
    assert_eq!(q("TRUEPREDICATE"), [1, 2, 3, 4, 5]);
    assert_eq!(q("FALSEPREDICATE"), none);
    // B64: core's form of a string with a quote (`say "hi"`), a backslash, non-ASCII.
    assert_eq!(q(r#"string == B64"c2F5ICJoaSI=""#), [1]);
    assert_eq!(q(r#"string != B64"c2F5ICJoaSI=""#), [2, 3, 4, 5]);
    assert_eq!(q(r#"string == B64"YmFja1xzbGFzaA==""#), [3]);
    assert_eq!(q(r#"string ==[c] B64"WsOcUklDSA==""#), [2], "ZÜRICH, [c]");
    assert_eq!(
        q(r#"string == B64"WsOcUklDSA==""#),
        none,
        "ZÜRICH without [c]"
    );
    assert_eq!(
        q(r#"string CONTAINS B64"ImhpIg==""#),
        [1],
        "contains \"hi\""
    );
    // Plain strings and the string operators with and without [c].
    assert_eq!(q(r#"string == "Plain""#), [4]);
    assert_eq!(q(r#"string ==[c] "plain""#), [4]);
    assert_eq!(q(r#"string !=[c] "plain""#), [1, 2, 3, 5]);
    assert_eq!(q(r#"string BEGINSWITH "Pl""#), [4]);
    assert_eq!(q(r#"string BEGINSWITH[c] "pl""#), [4]);
    assert_eq!(q(r#"string ENDSWITH[c] "ICH""#), [2]);
    assert_eq!(q(r#"string CONTAINS[c] "SLA""#), [3]);
    assert_eq!(q(r#"string LIKE[c] "p*N""#), [4]);
    assert_eq!(q(r#"string LIKE "p*N""#), none);
    // Timestamps `T<s>:<ns>`, negative ones included; core's own test example.
    assert_eq!(q("timestamp > T150:0"), [2, 4]);
    assert_eq!(q("timestamp < T0:0"), [3]);
    assert_eq!(q("timestamp == T-1:-500000000"), [3]);
    assert_eq!(q("timestamp >= T-1:-499999999"), [1, 2, 4]);
    assert_eq!(q("timestamp between {T0:0, T200:0}"), [1, 2, 4]);
    assert_eq!(
        q("timestamp == T200:0 and (int == 2 or int == NULL)"),
        [2, 4]
    );
    // ObjectId and UUID literals (the properties are called oid and uuid, too).
    assert_eq!(q("oid == oid(651f000000000000000000a1)"), [1]);
    assert_eq!(q("oid == oid(651F000000000000000000B2)"), [2]);
    assert_eq!(
        q("oid IN {oid(651f000000000000000000a1), oid(651f000000000000000000b2)}"),
        [1, 2]
    );
    assert_eq!(q("oid != NULL"), [1, 2]);
    assert_eq!(q("uuid == uuid(3b241101-e2bb-4255-8caf-4136c566a962)"), [1]);
    assert_eq!(
        q("uuid != uuid(3b241101-e2bb-4255-8caf-4136c566a962)"),
        [2, 3, 4, 5]
    );
    assert_eq!(q("uuid > uuid(3b241101-e2bb-4255-8caf-4136c566a962)"), [2]);
    // Null.
    assert_eq!(q("int == NULL"), [4, 5]);
    assert_eq!(q("int != NULL"), [1, 2, 3]);
    // Negation, conjunction and disjunction as core writes them.
    assert_eq!(q("!(int == 1)"), [2, 3, 4, 5]);
    assert_eq!(q("!(int == 1 or int == 2)"), [3, 4, 5]);
    assert_eq!(q("!(bool == true) and int > 1"), [2, 3]);
    assert_eq!(q("(bool == false )"), [2, 3]);
    assert_eq!(q("int == 1 and bool == true"), [1]);
    assert_eq!(q("int == 2 and bool == true"), none);
    assert_eq!(q("(int == 1 or int == 3)"), [1, 3]);
    assert_eq!(q("(int == 1 or int == 3) and bool == false"), [3]);
    assert_eq!(
        q("int == 1 or int == 3 and bool == true"),
        [1],
        "and binds tighter"
    );
    // IN and BETWEEN.
    assert_eq!(q("int IN {1, 3, 7}"), [1, 3]);
    assert_eq!(q(r#"string IN {"Plain", B64"c2F5ICJoaSI="}"#), [1, 4]);
    assert_eq!(q("int between {2, 3}"), [2, 3]);
    assert_eq!(q("int BETWEEN {2, 3}"), [2, 3]);
    // A mixed property's IN is `== {…}` in core.
    assert_eq!(q(r#"mixed == {1, "a"}"#), [1, 2, 4], "1.0 equals 1");
    assert_eq!(q(r#"mixed ==[c] {"a"}"#), [2, 3]);
    // Numbers in core's forms: max_digits10, signed, nan / inf, decimals exactly.
    assert_eq!(q("double == 1.5"), [1]);
    assert_eq!(q("double > -inf"), [1, 3]);
    assert_eq!(q("double == nan"), none, "NaN equals nothing");
    assert_eq!(q("float == 0.100000001"), [1]);
    assert_eq!(q("float < 0.25"), [1]);
    assert_eq!(q("decimal == 1E1"), [1]);
    assert_eq!(q("decimal == +123456789012345678901234567890123E0"), [2]);
    assert_eq!(q("decimal == 123456789012345678901234567890122"), none);
    assert_eq!(q("decimal < -Inf"), none);
    assert_eq!(q("decimal > -Inf"), [1, 2, 3]);
    assert_eq!(q("int > -1 and int < +3"), [1, 2]);
    // Binary literals.
    assert_eq!(q(r#"binary == binary(B64"AP8=")"#), [1]);
    assert_eq!(q(r#"binary == binary("ab")"#), [2]);
    // The ordering suffix.
    assert_eq!(q("TRUEPREDICATE SORT(int DESC) LIMIT(2)"), [3, 2]);
    assert_eq!(q("int != NULL SORT(bool ASC, int DESC)"), [3, 2, 1]);
}

#[test]
fn unsupported_realm_core_constructs_are_refused_by_name() {
    let (_dir, db) = serialized_forms_db("serialized_refused");
    let refused = |query: &str, says: &str| assert_refused(&db, query, &[], says);
    refused(
        "TRUEPREDICATE DISTINCT(int)",
        "DISTINCT(…) is not supported",
    );
    refused(
        "int > 0 SORT(int ASC) DISTINCT(string) LIMIT(1)",
        "DISTINCT(…) is not supported",
    );
    // What realm-core sends for a flexible sync subscription with an ordering.
    refused(
        r#"(string == "a" DISTINCT(int))"#,
        "DISTINCT(…) inside parentheses",
    );
    refused(r#"(int > 1 SORT(int ASC))"#, "SORT(…) inside parentheses");
    refused("@links.L.x.@count > 0", "backlinks (@links");
    refused("@links.@count == 0", "backlinks (@links");
    refused(r#"link == obj("class_L", 1)"#, "link target literals obj(");
    refused("link == O12", "object key literals (O12)");
    refused("link == L3:12", "typed link literals");
    refused(
        "ANY link.x == 1",
        "ANY (a comparison over a list) is not supported",
    );
    refused(
        "ALL link.x == 1",
        "ALL (a comparison over a list) is not supported",
    );
    refused(
        "NONE link.x == 1",
        "NONE (a comparison over a list) is not supported",
    );
    refused("int == ALL {1, 2}", "ALL {…} is not supported");
    refused(
        "SUBQUERY(link, $x, $x._id == 1).@count > 0",
        "SUBQUERY(…) is not supported",
    );
    refused("int.@min > 1", "the aggregate @min is not supported");
    refused("int.@max > 1", "the aggregate @max is not supported");
    refused("int.@sum > 1", "the aggregate @sum is not supported");
    refused("int.@avg > 1", "the aggregate @avg is not supported");
    refused("mixed.@type == 'int'", "@type is not supported");
    refused("(int + 1) > 2", "arithmetic (+)");
    refused("int != {1, 2}", "!= does not take a list");
    refused(
        "string TEXT 'a'",
        "TEXT (full-text search) is not supported",
    );
    refused("timestamp == 2020-01-01@00:00:00", "date literals");
    refused("timestamp == T1:-5", "invalid timestamp T1:-5");
    refused("oid == oid(651f)", "oid(…) takes an ObjectId");
    refused("uuid == uuid(nope)", "uuid(…) takes a UUID");
    refused(r#"string == B64"c2F5ICJoaSI""#, "invalid base64");
    refused(r#"string == B64"//4=""#, "is not UTF-8");
    // A literal of the wrong type is refused as before.
    refused(
        "timestamp == oid(651f000000000000000000a1)",
        "cannot compare",
    );
    refused("oid == T1:0", "cannot compare");
}
