//! realm-core's value rules that Tandem must follow so that every replica reads what realm-core
//! reads: the dictionary key rule (src/realm/dictionary.cpp `validate_key_value`) and the ±0.0
//! rule of float and double writes (src/realm/array_basic_tpl.hpp `BasicArray::set`,
//! list.hpp `Lst::set`, obj.cpp `Obj::set<Mixed>`, dictionary.cpp `Dictionary::insert`).
//! Each case checks the SQLite store (local writes) and the in-memory reference applier
//! (replaying the store's history), which the server's state is.

use std::path::PathBuf;

use tandem::model::{
    ClassSchema, CollectionKind, PrimaryKey, Property, PropertyType, Schema, Value,
};
use tandem::state::{Element, Field, Key, State, Val};
use tandem::store::{Config, Database, PathStep, StoreError};

/// A scratch directory (removed when the returned guard is dropped) and a path in it.
fn temp_db(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-rules-{name}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().join("db.sqlite");
    (dir, path)
}

fn schema() -> Schema {
    use CollectionKind::*;
    use PropertyType::*;
    Schema::new(vec![
        ClassSchema::top_level(
            "T",
            "_id",
            vec![
                Property::new("_id", Int),
                Property::new("f", Float),
                Property::new("d", Double),
                Property::new("of", Float).nullable(),
                Property::new("od", Double).nullable(),
                Property::new("m", Mixed).nullable(),
                Property::new("fl", Float).collection(List),
                Property::new("odl", Double).collection(List).nullable(),
                Property::new("ml", Mixed).collection(List).nullable(),
                Property::new("fs", Float).collection(Set),
                Property::new("ds", Double).collection(Set),
                Property::new("dd", Double).collection(Dictionary),
                Property::new("md", Mixed).collection(Dictionary).nullable(),
                Property::new("sd", String).collection(Dictionary),
                Property::link("e", "E"),
                Property::link("el", "E").collection(List),
                Property::link("ed", "E").collection(Dictionary).nullable(),
            ],
        ),
        ClassSchema::embedded(
            "E",
            vec![Property::new("inner", String).collection(Dictionary)],
        ),
    ])
    .unwrap()
}

const K: PrimaryKey = PrimaryKey::Int(1);

/// A new database in a scratch directory, and the guard that removes the directory.
fn open(name: &str) -> (tempfile::TempDir, Database) {
    let (dir, path) = temp_db(name);
    let db = Database::open(path, &schema(), Config::default()).unwrap();
    let mut tx = db.begin_write().unwrap();
    tx.create("T", K, &[]).unwrap();
    tx.commit().unwrap();
    (dir, db)
}

/// The store's state, checked equal to the reference applier's replay of the store's history.
fn state(db: &Database) -> State {
    let stored = db.export_state().unwrap();
    let mut replayed = State::new();
    for cs in db.history().unwrap() {
        replayed.apply(&cs).unwrap();
    }
    assert_eq!(replayed, stored, "reference applier and store disagree");
    stored
}

fn field(db: &Database, name: &str) -> Field {
    state(db).objects["T"][&Key::Int(1)].fields[name].clone()
}

fn name(s: &str) -> PathStep {
    PathStep::Name(s.into())
}

fn write(db: &Database, f: impl FnOnce(&mut tandem::store::WriteTransaction<'_>)) {
    let mut tx = db.begin_write().unwrap();
    f(&mut tx);
    tx.commit().unwrap();
}

const PZ: u64 = 0;
const NZ: u64 = 1 << 63;
const PZF: u32 = 0;
const NZF: u32 = 1 << 31;

fn d(bits: u64) -> Val {
    Val::Double(bits)
}

fn f(bits: u32) -> Val {
    Val::Float(bits)
}

#[test]
fn required_float_and_double_read_plus_zero_after_a_minus_zero_set() {
    let (_dir, db) = open("required");
    write(&db, |tx| {
        tx.set("T", &K, "f", Value::Float(-0.0)).unwrap();
        tx.set("T", &K, "d", Value::Double(-0.0)).unwrap();
    });
    // realm_set_value(-0.0) on a required float / double reads back +0.0 (the default is +0.0).
    assert_eq!(field(&db, "f"), Field::Value(f(PZF)));
    assert_eq!(field(&db, "d"), Field::Value(d(PZ)));
    // The changeset still carries -0.0, as realm-core's replication writes it.
    let last = db.history().unwrap().pop().unwrap();
    assert!(format!("{last:?}").contains("-0.0"), "{last:?}");
    // Over a non-zero value -0.0 is written and kept; +0.0 over it then keeps -0.0.
    write(&db, |tx| {
        tx.set("T", &K, "d", Value::Double(1.0)).unwrap();
        tx.set("T", &K, "d", Value::Double(-0.0)).unwrap();
    });
    assert_eq!(field(&db, "d"), Field::Value(d(NZ)));
    write(&db, |tx| tx.set("T", &K, "d", Value::Double(0.0)).unwrap());
    assert_eq!(field(&db, "d"), Field::Value(d(NZ)));
    // Creating an object with the values (one INSERT) reads as CreateObject then Update does.
    let k2 = PrimaryKey::Int(2);
    write(&db, |tx| {
        let values = [
            ("f", Value::Float(-0.0)),
            ("d", Value::Double(-0.0)),
            ("of", Value::Float(-0.0)),
            ("m", Value::Double(-0.0)),
        ];
        tx.create("T", k2.clone(), &values).unwrap()
    });
    let fields = &state(&db).objects["T"][&Key::Int(2)].fields;
    assert_eq!(fields["f"], Field::Value(f(PZF)));
    assert_eq!(fields["d"], Field::Value(d(PZ)));
    assert_eq!(fields["of"], Field::Value(f(NZF)));
    assert_eq!(fields["m"], Field::Value(d(NZ)));
}

#[test]
fn nullable_and_mixed_keep_minus_zero_written_over_null() {
    let (_dir, db) = open("nullable");
    write(&db, |tx| {
        tx.set("T", &K, "of", Value::Float(-0.0)).unwrap();
        tx.set("T", &K, "od", Value::Double(-0.0)).unwrap();
        tx.set("T", &K, "m", Value::Double(-0.0)).unwrap();
    });
    assert_eq!(field(&db, "of"), Field::Value(f(NZF)));
    assert_eq!(field(&db, "od"), Field::Value(d(NZ)));
    assert_eq!(field(&db, "m"), Field::Value(d(NZ)));
    // Over the other zero of the same type the stored one stays (BasicArrayNull, Obj::set<Mixed>).
    write(&db, |tx| {
        tx.set("T", &K, "od", Value::Double(0.0)).unwrap();
        tx.set("T", &K, "m", Value::Double(0.0)).unwrap();
    });
    assert_eq!(field(&db, "od"), Field::Value(d(NZ)));
    assert_eq!(field(&db, "m"), Field::Value(d(NZ)));
    // A mixed of another type is replaced: float +0.0 over double -0.0 is written.
    write(&db, |tx| tx.set("T", &K, "m", Value::Float(0.0)).unwrap());
    assert_eq!(field(&db, "m"), Field::Value(f(PZF)));
}

#[test]
fn list_elements_keep_inserted_minus_zero_and_a_set_keeps_the_stored_zero() {
    let (_dir, db) = open("lists");
    write(&db, |tx| {
        tx.list_insert("T", &K, "fl", 0, Value::Float(-0.0))
            .unwrap();
        tx.list_insert("T", &K, "fl", 1, Value::Float(0.0)).unwrap();
        tx.list_insert("T", &K, "odl", 0, Value::Double(-0.0))
            .unwrap();
        tx.list_insert("T", &K, "ml", 0, Value::Double(0.0))
            .unwrap();
    });
    let list = |db: &Database, name: &str| match field(db, name) {
        Field::List(l) => l,
        other => panic!("{other:?}"),
    };
    let v = Element::Value;
    assert_eq!(list(&db, "fl"), vec![v(f(NZF)), v(f(PZF))]);
    assert_eq!(list(&db, "odl"), vec![v(d(NZ))]);
    // Lst::set skips a value == the stored one.
    write(&db, |tx| {
        tx.list_set("T", &K, "fl", 0, Value::Float(0.0)).unwrap();
        tx.list_set("T", &K, "fl", 1, Value::Float(-0.0)).unwrap();
        tx.list_set("T", &K, "odl", 0, Value::Double(0.0)).unwrap();
        tx.list_set("T", &K, "ml", 0, Value::Double(-0.0)).unwrap();
    });
    assert_eq!(list(&db, "fl"), vec![v(f(NZF)), v(f(PZF))]);
    assert_eq!(list(&db, "odl"), vec![v(d(NZ))]);
    assert_eq!(list(&db, "ml"), vec![v(d(PZ))]);
    // A null in a nullable list, then -0.0 over it, is written.
    write(&db, |tx| {
        tx.list_set("T", &K, "odl", 0, Value::Null).unwrap();
        tx.list_set("T", &K, "odl", 0, Value::Double(-0.0)).unwrap();
        tx.list_set("T", &K, "ml", 0, Value::Float(-0.0)).unwrap();
    });
    assert_eq!(list(&db, "odl"), vec![v(d(NZ))]);
    assert_eq!(list(&db, "ml"), vec![v(f(NZF))]);
}

#[test]
fn dictionary_values_keep_the_stored_zero_of_an_existing_key() {
    let (_dir, db) = open("dicts");
    write(&db, |tx| {
        tx.dict_set("T", &K, "dd", "n", Value::Double(-0.0))
            .unwrap();
        tx.dict_set("T", &K, "dd", "p", Value::Double(0.0)).unwrap();
        tx.dict_set("T", &K, "md", "n", Value::Double(-0.0))
            .unwrap();
    });
    let dict = |db: &Database, name: &str| match field(db, name) {
        Field::Dictionary(m) => m,
        other => panic!("{other:?}"),
    };
    let dd = dict(&db, "dd");
    assert_eq!(dd["n"], Element::Value(d(NZ)));
    assert_eq!(dd["p"], Element::Value(d(PZ)));
    write(&db, |tx| {
        tx.dict_set("T", &K, "dd", "n", Value::Double(0.0)).unwrap();
        tx.dict_set("T", &K, "dd", "p", Value::Double(-0.0))
            .unwrap();
        tx.dict_set("T", &K, "md", "n", Value::Double(0.0)).unwrap();
    });
    let dd = dict(&db, "dd");
    assert_eq!(dd["n"], Element::Value(d(NZ)));
    assert_eq!(dd["p"], Element::Value(d(PZ)));
    assert_eq!(dict(&db, "md")["n"], Element::Value(d(NZ)));
    // Erased and set again: a new entry takes the written bits.
    write(&db, |tx| {
        tx.dict_erase("T", &K, "dd", "p").unwrap();
        tx.dict_set("T", &K, "dd", "p", Value::Double(-0.0))
            .unwrap();
    });
    assert_eq!(dict(&db, "dd")["p"], Element::Value(d(NZ)));
}

#[test]
fn sets_hold_one_zero_and_find_it_by_either_sign() {
    let (_dir, db) = open("sets");
    write(&db, |tx| {
        tx.set_insert("T", &K, "fs", Value::Float(-0.0)).unwrap();
        tx.set_insert("T", &K, "fs", Value::Float(0.0)).unwrap();
        tx.set_insert("T", &K, "ds", Value::Double(0.0)).unwrap();
        tx.set_insert("T", &K, "ds", Value::Double(-0.0)).unwrap();
        tx.set_insert("T", &K, "ds", Value::Double(2.0)).unwrap();
    });
    assert_eq!(field(&db, "fs"), Field::Set(vec![f(NZF)]));
    assert_eq!(field(&db, "ds"), Field::Set(vec![d(PZ), d(2f64.to_bits())]));
    write(&db, |tx| {
        tx.set_erase("T", &K, "fs", Value::Float(0.0)).unwrap();
        tx.set_erase("T", &K, "ds", Value::Double(-0.0)).unwrap();
    });
    assert_eq!(field(&db, "fs"), Field::Set(vec![]));
    assert_eq!(field(&db, "ds"), Field::Set(vec![d(2f64.to_bits())]));
}

#[test]
fn dictionary_keys_realm_core_refuses_are_refused_and_write_nothing() {
    let (_dir, db) = open("keys");
    write(&db, |tx| {
        tx.create_embedded("T", &K, "e").unwrap();
        tx.list_push_embedded("T", &K, "el").unwrap();
        tx.create_embedded_at("T", &K, "ed", &[PathStep::Name("ok".into())])
            .unwrap();
        // Keys realm-core allows: empty, '$' not first, other dots.
        for key in ["", "a$", "x y", "\u{2024}"] {
            tx.dict_set("T", &K, "sd", key, Value::String(key.into()))
                .unwrap();
        }
    });
    let before = state(&db);
    let history = db.history().unwrap().len();
    let mut tx = db.begin_write().unwrap();
    let instructions = tx.changeset().instructions.len();
    type Op = Box<dyn Fn(&mut tandem::store::WriteTransaction<'_>, &str) -> Result<(), StoreError>>;
    let ops: Vec<(&str, Op)> = vec![
        (
            "dict_set",
            Box::new(|tx, k| tx.dict_set("T", &K, "sd", k, Value::String("v".into()))),
        ),
        (
            "dict_set mixed",
            Box::new(|tx, k| tx.dict_set("T", &K, "md", k, Value::Int(1))),
        ),
        (
            "dict_erase",
            Box::new(|tx, k| tx.dict_erase("T", &K, "sd", k)),
        ),
        (
            "embedded dict",
            Box::new(|tx, k| tx.create_embedded_at("T", &K, "ed", &[name(k)])),
        ),
        (
            "dict in an embedded object",
            Box::new(|tx, k| {
                tx.set_at(
                    "T",
                    &K,
                    "e",
                    &[name("inner"), name(k)],
                    Value::String("v".into()),
                )
            }),
        ),
        (
            "dict in a list's embedded object",
            Box::new(|tx, k| {
                tx.set_at(
                    "T",
                    &K,
                    "el",
                    &[PathStep::Index(0), name("inner"), name(k)],
                    Value::String("v".into()),
                )
            }),
        ),
        (
            "path through a dictionary key",
            Box::new(|tx, k| {
                tx.set_at(
                    "T",
                    &K,
                    "ed",
                    &[name(k), name("inner"), name("x")],
                    Value::String("v".into()),
                )
            }),
        ),
    ];
    let mut cases = 0;
    for (what, op) in &ops {
        for (key, rule) in [
            ("$a", "must not start with '$'"),
            ("b.c", "must not contain '.'"),
            (".", "must not contain '.'"),
            ("$", "must not start with '$'"),
        ] {
            match op(&mut tx, key) {
                Err(StoreError::InvalidArgument(message)) => {
                    assert!(message.contains(&format!("{key:?}")), "{what}: {message}");
                    assert!(message.contains(rule), "{what}: {message}");
                }
                other => panic!("{what} {key:?}: {other:?}"),
            }
            assert_eq!(tx.changeset().instructions.len(), instructions, "{what}");
            cases += 1;
        }
    }
    assert_eq!(cases, 28);
    tx.commit().unwrap();
    assert_eq!(state(&db), before);
    assert_eq!(db.history().unwrap().len(), history);
    // A field name of an embedded object is no dictionary key: ordinary writes still work.
    write(&db, |tx| {
        tx.set_at(
            "T",
            &K,
            "ed",
            &[name("ok"), name("inner"), name("k")],
            Value::String("v".into()),
        )
        .unwrap()
    });
}
