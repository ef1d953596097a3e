//! The foreign facade called from Rust: the one operation list (`WriteOp`) through the batch
//! path (`Database::write`) and the recording `WriteTransaction`, collections inside embedded
//! objects, and reads of embedded objects.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tandem::ffi::{
    ClassSpec, Collection, Database, FieldValue, Key, PathStep, PropertySpec, PropertyType as T,
    TandemError, Value, WriteOp,
};

fn temp_db(name: &str) -> String {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("tandem-ffi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("db.sqlite").to_string_lossy().into_owned()
}

fn prop(name: &str, t: T, collection: Collection) -> PropertySpec {
    PropertySpec {
        name: name.into(),
        property_type: t,
        nullable: matches!(collection, Collection::Dictionary),
        collection,
        link_target: None,
    }
}

fn link(name: &str, target: &str, collection: Collection) -> PropertySpec {
    PropertySpec {
        nullable: matches!(collection, Collection::Single | Collection::Dictionary),
        link_target: Some(target.into()),
        ..prop(name, T::Link, collection)
    }
}

fn collections(mut props: Vec<PropertySpec>) -> Vec<PropertySpec> {
    props.extend([
        prop("tags", T::String, Collection::List),
        prop("lucky", T::Int, Collection::Set),
        prop("notes", T::String, Collection::Dictionary),
    ]);
    props
}

fn classes() -> Vec<ClassSpec> {
    vec![
        ClassSpec {
            name: "Task".into(),
            primary_key: Some("_id".into()),
            properties: collections(vec![
                prop("_id", T::Int, Collection::Single),
                prop("title", T::String, Collection::Single),
                prop("count", T::Int, Collection::Single),
                link("address", "Address", Collection::Single),
                link("addresses", "Address", Collection::List),
            ]),
        },
        ClassSpec {
            name: "Address".into(),
            primary_key: None,
            properties: collections(vec![prop("street", T::String, Collection::Single)]),
        },
    ]
}

fn open(name: &str) -> Arc<Database> {
    Database::open(temp_db(name), classes()).unwrap()
}

fn k(v: i64) -> Key {
    Key::Int { value: v }
}

fn s(v: &str) -> Value {
    Value::String { value: v.into() }
}

fn task(db: &Database, key: i64) -> Option<HashMap<String, FieldValue>> {
    db.object("Task".into(), k(key)).unwrap()
}

fn list(items: &[&str]) -> FieldValue {
    FieldValue::List {
        items: items.iter().map(|v| s(v)).collect(),
    }
}

fn create(key: i64, title: &str) -> WriteOp {
    WriteOp::Create {
        class_name: "Task".into(),
        key: k(key),
        values: HashMap::from([("title".into(), s(title))]),
    }
}

fn insert(key: i64, index: u64, v: &str) -> WriteOp {
    WriteOp::ListInsert {
        class_name: "Task".into(),
        key: k(key),
        property: "tags".into(),
        index,
        value: s(v),
        path: vec![],
    }
}

/// Every operation kind on the object's own collections, in one `write` crossing.
fn every_kind_of_op(key: i64) -> Vec<WriteOp> {
    let t = || "Task".to_string();
    let p = |name: &str| name.to_string();
    vec![
        create(key, "a"),
        WriteOp::Upsert {
            class_name: t(),
            key: k(key),
            values: HashMap::from([("count".into(), Value::Int { value: 1 })]),
        },
        WriteOp::Set {
            class_name: t(),
            key: k(key),
            property: p("title"),
            value: s("b"),
            path: vec![],
        },
        WriteOp::Add {
            class_name: t(),
            key: k(key),
            property: p("count"),
            amount: 41,
            path: vec![],
        },
        insert(key, 0, "x"),
        insert(key, 1, "y"),
        insert(key, 2, "z"),
        WriteOp::ListSet {
            class_name: t(),
            key: k(key),
            property: p("tags"),
            index: 1,
            value: s("Y"),
            path: vec![],
        },
        WriteOp::ListMove {
            class_name: t(),
            key: k(key),
            property: p("tags"),
            from: 0,
            to: 2,
            path: vec![],
        },
        WriteOp::ListErase {
            class_name: t(),
            key: k(key),
            property: p("tags"),
            index: 0,
            path: vec![],
        },
        WriteOp::SetInsert {
            class_name: t(),
            key: k(key),
            property: p("lucky"),
            value: Value::Int { value: 3 },
            path: vec![],
        },
        WriteOp::SetInsert {
            class_name: t(),
            key: k(key),
            property: p("lucky"),
            value: Value::Int { value: 4 },
            path: vec![],
        },
        WriteOp::SetErase {
            class_name: t(),
            key: k(key),
            property: p("lucky"),
            value: Value::Int { value: 3 },
            path: vec![],
        },
        WriteOp::DictSet {
            class_name: t(),
            key: k(key),
            property: p("notes"),
            entry: "e".into(),
            value: s("v"),
            path: vec![],
        },
        WriteOp::DictSet {
            class_name: t(),
            key: k(key),
            property: p("notes"),
            entry: "f".into(),
            value: s("w"),
            path: vec![],
        },
        WriteOp::DictErase {
            class_name: t(),
            key: k(key),
            property: p("notes"),
            entry: "e".into(),
            path: vec![],
        },
    ]
}

fn assert_every_kind_applied(db: &Database, key: i64) {
    let t = task(db, key).unwrap();
    assert_eq!(t["title"], FieldValue::Single { value: s("b") });
    assert_eq!(
        t["count"],
        FieldValue::Single {
            value: Value::Int { value: 42 }
        }
    );
    assert_eq!(t["tags"], list(&["z", "x"]));
    assert_eq!(
        t["lucky"],
        FieldValue::Set {
            items: vec![Value::Int { value: 4 }]
        }
    );
    assert_eq!(
        t["notes"],
        FieldValue::Dictionary {
            entries: HashMap::from([("f".into(), s("w"))])
        }
    );
}

#[test]
fn write_performs_every_kind_of_operation_in_one_call() {
    let db = open("batch");
    let version = db.write(every_kind_of_op(1)).unwrap();
    assert!(version.is_some());
    assert_every_kind_applied(&db, 1);
    // Clears, in a second batch.
    let clear = |op: fn(String, Key, String) -> WriteOp, p: &str| op("Task".into(), k(1), p.into());
    db.write(vec![
        clear(
            |class_name, key, property| WriteOp::ListClear {
                class_name,
                key,
                property,
                path: vec![],
            },
            "tags",
        ),
        clear(
            |class_name, key, property| WriteOp::SetClear {
                class_name,
                key,
                property,
                path: vec![],
            },
            "lucky",
        ),
        clear(
            |class_name, key, property| WriteOp::DictClear {
                class_name,
                key,
                property,
                path: vec![],
            },
            "notes",
        ),
    ])
    .unwrap();
    let t = task(&db, 1).unwrap();
    assert_eq!(t["tags"], list(&[]));
    assert_eq!(t["lucky"], FieldValue::Set { items: vec![] });
    assert_eq!(
        t["notes"],
        FieldValue::Dictionary {
            entries: HashMap::new()
        }
    );
    // Erase.
    db.write(vec![WriteOp::Erase {
        class_name: "Task".into(),
        key: k(1),
    }])
    .unwrap();
    assert_eq!(task(&db, 1), None);
    // An empty batch changes nothing.
    assert_eq!(db.write(vec![]).unwrap(), None);
}

#[test]
fn the_recording_transaction_and_the_batch_path_do_the_same() {
    let db = open("record");
    let tx = db.write_transaction();
    for op in every_kind_of_op(2) {
        tx.record(op).unwrap();
    }
    tx.commit().unwrap();
    assert_every_kind_applied(&db, 2);
    // The shorthand methods record the same operations.
    let tx = db.write_transaction();
    tx.create(
        "Task".into(),
        k(3),
        HashMap::from([("title".into(), s("a"))]),
    )
    .unwrap();
    for (i, v) in ["x", "y", "z"].into_iter().enumerate() {
        tx.list_insert("Task".into(), k(3), "tags".into(), i as u32, s(v), vec![])
            .unwrap();
    }
    tx.list_set("Task".into(), k(3), "tags".into(), 1, s("Y"), vec![])
        .unwrap();
    tx.list_move("Task".into(), k(3), "tags".into(), 0, 2, vec![])
        .unwrap();
    tx.list_erase("Task".into(), k(3), "tags".into(), 0, vec![])
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(task(&db, 3).unwrap()["tags"], list(&["z", "x"]));
    let tx = db.write_transaction();
    tx.list_clear("Task".into(), k(3), "tags".into(), vec![])
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(task(&db, 3).unwrap()["tags"], list(&[]));
    // A finished transaction refuses more work.
    let err = tx.record(create(4, "late")).unwrap_err();
    assert!(matches!(err, TandemError::InvalidArgument { .. }), "{err}");
    assert!(matches!(
        tx.commit(),
        Err(TandemError::InvalidArgument { .. })
    ));
}

#[test]
fn a_failing_operation_writes_nothing_and_is_named() {
    let db = open("atomic");
    db.write(vec![create(1, "kept")]).unwrap();
    let ops = vec![
        create(2, "lost"),
        insert(2, 0, "lost too"),
        // The object exists: creating it again fails.
        create(1, "again"),
    ];
    let err = db.write(ops).unwrap_err();
    let TandemError::InvalidArgument { message } = &err else {
        panic!("{err:?}");
    };
    assert!(message.starts_with("operation 2: "), "{message}");
    assert_eq!(task(&db, 2), None);
    assert_eq!(
        task(&db, 1).unwrap()["title"],
        FieldValue::Single { value: s("kept") }
    );
    // A position beyond u32 is refused, not truncated.
    let err = db.write(vec![insert(1, 1 << 32, "far")]).unwrap_err();
    assert!(
        matches!(&err, TandemError::InvalidArgument { message } if message.contains("4294967296")),
        "{err:?}"
    );
    // A malformed key is refused.
    let err = db
        .write(vec![WriteOp::Erase {
            class_name: "Task".into(),
            key: Key::ObjectId { bytes: vec![1, 2] },
        }])
        .unwrap_err();
    assert!(
        matches!(&err, TandemError::InvalidArgument { message } if message.contains("12 bytes")),
        "{err:?}"
    );
}

#[test]
fn collections_inside_embedded_objects_are_written_through_a_path() {
    let db = open("embedded");
    fn name(n: &str) -> PathStep {
        PathStep::Name { name: n.into() }
    }
    fn in_address(field: &str) -> Vec<PathStep> {
        vec![name(field)]
    }
    fn in_first(field: &str) -> Vec<PathStep> {
        vec![PathStep::Index { index: 0 }, name(field)]
    }
    let t = || "Task".to_string();
    let mut ops = vec![
        create(1, "a"),
        WriteOp::CreateEmbedded {
            class_name: t(),
            key: k(1),
            property: "address".into(),
            path: vec![],
        },
        WriteOp::ListInsertEmbedded {
            class_name: t(),
            key: k(1),
            property: "addresses".into(),
            index: 0,
            path: vec![],
        },
        WriteOp::Set {
            class_name: t(),
            key: k(1),
            property: "address".into(),
            value: s("Main St"),
            path: in_address("street"),
        },
    ];
    for (property, path) in [
        ("address", in_address as fn(&str) -> Vec<PathStep>),
        ("addresses", in_first),
    ] {
        ops.extend([
            WriteOp::ListInsert {
                class_name: t(),
                key: k(1),
                property: property.into(),
                index: 0,
                value: s("p"),
                path: path("tags"),
            },
            WriteOp::ListInsert {
                class_name: t(),
                key: k(1),
                property: property.into(),
                index: 1,
                value: s("q"),
                path: path("tags"),
            },
            WriteOp::ListMove {
                class_name: t(),
                key: k(1),
                property: property.into(),
                from: 0,
                to: 1,
                path: path("tags"),
            },
            WriteOp::SetInsert {
                class_name: t(),
                key: k(1),
                property: property.into(),
                value: Value::Int { value: 9 },
                path: path("lucky"),
            },
            WriteOp::DictSet {
                class_name: t(),
                key: k(1),
                property: property.into(),
                entry: "n".into(),
                value: s("v"),
                path: path("notes"),
            },
        ]);
    }
    db.write(ops).unwrap();
    let row = task(&db, 1).unwrap();
    let expect = |fields: &HashMap<String, FieldValue>| {
        assert_eq!(fields["tags"], list(&["q", "p"]));
        assert_eq!(
            fields["lucky"],
            FieldValue::Set {
                items: vec![Value::Int { value: 9 }]
            }
        );
        assert_eq!(
            fields["notes"],
            FieldValue::Dictionary {
                entries: HashMap::from([("n".into(), s("v"))])
            }
        );
    };
    match &row["address"] {
        FieldValue::Embedded {
            present: true,
            fields,
        } => {
            assert_eq!(
                fields["street"],
                FieldValue::Single {
                    value: s("Main St")
                }
            );
            expect(fields);
        }
        other => panic!("{other:?}"),
    }
    match &row["addresses"] {
        FieldValue::EmbeddedList { items } => {
            assert_eq!(items.len(), 1);
            expect(&items[0]);
        }
        other => panic!("{other:?}"),
    }
}
