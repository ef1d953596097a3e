//! The foreign facade called from Rust: the one operation list (`WriteOp`) through the batch
//! path (`Database::write`) and the recording `WriteTransaction`, collections inside embedded
//! objects, and reads of embedded objects.

use std::collections::HashMap;
use std::sync::Arc;

use tandem::ffi::{
    open_synced_blocking, CancelToken, ClassSpec, ClientResetMode, Collection, Database,
    FieldValue, Key, PathStep, PropertySpec, PropertyType as T, SyncOptions, TandemError, Value,
    WriteOp,
};

/// A scratch directory (removed when the returned guard is dropped) and a database path in it.
fn temp_db(name: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-ffi-{name}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().join("db.sqlite").to_string_lossy().into_owned();
    (dir, path)
}

fn prop(name: &str, t: T, collection: Collection) -> PropertySpec {
    PropertySpec {
        name: name.into(),
        property_type: t,
        nullable: matches!(collection, Collection::Dictionary),
        collection,
        link_target: None,
        indexed: false,
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

/// A database in a scratch directory, and the guard that removes the directory.
fn open(name: &str) -> (tempfile::TempDir, Arc<Database>) {
    let (dir, path) = temp_db(name);
    (dir, Database::open(path, classes()).unwrap())
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
        path: Default::default(),
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
            path: Default::default(),
        },
        WriteOp::Add {
            class_name: t(),
            key: k(key),
            property: p("count"),
            amount: 41,
            path: Default::default(),
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
            path: Default::default(),
        },
        WriteOp::ListMove {
            class_name: t(),
            key: k(key),
            property: p("tags"),
            from: 0,
            to: 2,
            path: Default::default(),
        },
        WriteOp::ListErase {
            class_name: t(),
            key: k(key),
            property: p("tags"),
            index: 0,
            path: Default::default(),
        },
        WriteOp::SetInsert {
            class_name: t(),
            key: k(key),
            property: p("lucky"),
            value: Value::Int { value: 3 },
            path: Default::default(),
        },
        WriteOp::SetInsert {
            class_name: t(),
            key: k(key),
            property: p("lucky"),
            value: Value::Int { value: 4 },
            path: Default::default(),
        },
        WriteOp::SetErase {
            class_name: t(),
            key: k(key),
            property: p("lucky"),
            value: Value::Int { value: 3 },
            path: Default::default(),
        },
        WriteOp::DictSet {
            class_name: t(),
            key: k(key),
            property: p("notes"),
            entry: "e".into(),
            value: s("v"),
            path: Default::default(),
        },
        WriteOp::DictSet {
            class_name: t(),
            key: k(key),
            property: p("notes"),
            entry: "f".into(),
            value: s("w"),
            path: Default::default(),
        },
        WriteOp::DictErase {
            class_name: t(),
            key: k(key),
            property: p("notes"),
            entry: "e".into(),
            path: Default::default(),
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
    let (_dir, db) = open("batch");
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
                path: Default::default(),
            },
            "tags",
        ),
        clear(
            |class_name, key, property| WriteOp::SetClear {
                class_name,
                key,
                property,
                path: Default::default(),
            },
            "lucky",
        ),
        clear(
            |class_name, key, property| WriteOp::DictClear {
                class_name,
                key,
                property,
                path: Default::default(),
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
    let (_dir, db) = open("record");
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
    let (_dir, db) = open("atomic");
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
    let (_dir, db) = open("embedded");
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
            path: Default::default(),
        },
        WriteOp::ListInsertEmbedded {
            class_name: t(),
            key: k(1),
            property: "addresses".into(),
            index: 0,
            path: Default::default(),
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

/// Each store failure maps to the FFI variant an app handles it by, keeping the message.
#[test]
fn each_store_error_maps_to_its_variant() {
    use std::time::Duration;
    use tandem::state::ApplyError;
    use tandem::store::{SizeLimit, StoreError};
    let sqlite = |code: i32, text: Option<&str>| {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            text.map(Into::into),
        ))
    };
    let cases: Vec<(StoreError, &str)> = vec![
        (
            StoreError::DestructiveSchemaChange {
                class: "Task".into(),
                property: Some("title".into()),
                reason: "type changed".into(),
            },
            "Schema",
        ),
        (
            StoreError::Rejected(ApplyError::SchemaMismatch {
                instruction: 0,
                reason: "column differs".into(),
            }),
            "Schema",
        ),
        (
            StoreError::WriterTimeout(Duration::from_secs(10)),
            "Timeout",
        ),
        (sqlite(rusqlite::ffi::SQLITE_BUSY, None), "Timeout"),
        (
            sqlite(rusqlite::ffi::SQLITE_IOERR, Some("disk I/O error")),
            "Store",
        ),
        (
            StoreError::FormatTooNew {
                found: 9,
                supported: 3,
            },
            "Store",
        ),
        (StoreError::Corrupt("bad row".into()), "Store"),
        (
            StoreError::Rejected(ApplyError::BadChangeset {
                instruction: 0,
                reason: "no such object".into(),
            }),
            "InvalidArgument",
        ),
        (
            StoreError::InvalidArgument("no class X".into()),
            "InvalidArgument",
        ),
        (
            StoreError::TooLarge {
                limit: SizeLimit::Value,
                size: 20_000_000,
                max: 16_777_199,
            },
            "TooLarge",
        ),
    ];
    for (e, want) in cases {
        let message = e.to_string();
        let mapped = TandemError::from(e);
        let got = format!("{mapped:?}");
        assert!(got.starts_with(want), "{message} mapped to {got}");
        assert!(
            mapped.to_string().contains(&message),
            "{mapped} lost {message}"
        );
    }
    // The cause's own message follows (SQLite's description of the code).
    let mapped = TandemError::from(sqlite(rusqlite::ffi::SQLITE_IOERR, Some("short write")));
    assert!(
        mapped.to_string().contains("short write") && mapped.to_string().contains("I/O"),
        "{mapped}"
    );
    // TooLarge keeps its figures.
    let mapped = TandemError::from(StoreError::TooLarge {
        limit: SizeLimit::Changeset,
        size: 16_000_000,
        max: 15_728_640,
    });
    assert!(matches!(
        mapped,
        TandemError::TooLarge {
            limit: tandem::ffi::SizeLimit::Changeset,
            size: 16_000_000,
            max: 15_728_640,
            ..
        }
    ));
}

/// A session error keeps the store failure's kind: a writer timeout during a sync call is a
/// timeout, a destructive schema change a schema error.
#[test]
fn each_sync_error_maps_to_its_variant() {
    use tandem::client::SyncError;
    use tandem::store::StoreErrorKind;
    let store = |kind| SyncError::Store {
        message: "m".into(),
        kind,
    };
    let cases = [
        (store(StoreErrorKind::WriterTimeout), "Timeout"),
        (store(StoreErrorKind::Busy), "Timeout"),
        (store(StoreErrorKind::DestructiveSchemaChange), "Schema"),
        (store(StoreErrorKind::InvalidArgument), "InvalidArgument"),
        (store(StoreErrorKind::Sqlite), "Store"),
        (
            SyncError::Timeout {
                message: "upload".into(),
            },
            "Timeout",
        ),
        (
            SyncError::Stopped {
                message: "dropped".into(),
            },
            "Stopped",
        ),
        (
            SyncError::Config {
                message: "ws:// needs allow_insecure".into(),
            },
            "Sync",
        ),
        (
            SyncError::InvalidState {
                message: "pending".into(),
            },
            "Sync",
        ),
    ];
    for (e, want) in cases {
        let message = e.to_string();
        let got = TandemError::from(e);
        assert!(format!("{got:?}").starts_with(want), "{message} -> {got:?}");
        assert!(got.to_string().contains(&message));
    }
}

/// The same mappings, end to end: opening with a changed property type, a write blocked by
/// another connection beyond the writer timeout, a query that does not parse.
#[test]
fn errors_from_real_calls_have_the_right_variant() {
    let (_dir, path) = temp_db("errors");
    let db = Database::open(path.clone(), classes()).unwrap();
    drop(db);
    let mut changed = classes();
    changed[0].properties[1].property_type = T::Int;
    let err = Database::open(path.clone(), changed).err().unwrap();
    assert!(matches!(err, TandemError::Schema { .. }), "{err:?}");

    let db = Database::open_with_options(
        path.clone(),
        classes(),
        tandem::ffi::OpenOptions {
            durability: tandem::ffi::Durability::Full,
            writer_timeout_ms: 100,
            recovery_window: 10,
            exclusive_to_process: false,
        },
    )
    .unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = db.write(vec![create(1, "blocked")]).unwrap_err();
    assert!(matches!(err, TandemError::Timeout { .. }), "{err:?}");
    other.execute_batch("ROLLBACK").unwrap();
    db.write(vec![create(1, "after")]).unwrap();

    let err = db
        .query("Task".into(), "title ==".into(), vec![])
        .err()
        .unwrap();
    assert!(
        matches!(err, TandemError::InvalidArgument { .. }),
        "{err:?}"
    );
}

#[test]
fn quarantine_reads_and_clears() {
    let (_dir, path) = temp_db("quarantine");
    let db = Database::open(path.clone(), classes()).unwrap();
    assert!(db.quarantine().unwrap().is_empty());
    // Two records as a client reset writes them (tandem::store::reset).
    let conn = rusqlite::Connection::open(&path).unwrap();
    let empty = tandem::changeset::Changeset::new().encode();
    for (id, version) in [(1, 7), (2, 9)] {
        conn.execute(
            "INSERT INTO _tandem_quarantine (id, original_version, changeset, reason) \
             VALUES (?1, ?2, ?3, 'Task[1] was deleted on the server')",
            rusqlite::params![id, version, empty],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO _tandem_quarantine_instruction \
             (quarantine_id, position, original_index, instruction, reason) \
             VALUES (?1, 0, 3, 'Update Task[1].title = \"x\"', 'gone')",
            [id],
        )
        .unwrap();
    }
    let q = db.quarantine().unwrap();
    assert_eq!(q.len(), 2);
    assert_eq!((q[0].id, q[0].original_version), (1, 7));
    assert_eq!(q[1].original_version, 9);
    assert_eq!(q[0].reason, "Task[1] was deleted on the server");
    assert_eq!(
        q[0].instructions,
        [tandem::ffi::QuarantinedInstruction {
            index: 3,
            instruction: "Update Task[1].title = \"x\"".into(),
            reason: "gone".into(),
        }]
    );
    db.clear_quarantine(Some(1)).unwrap();
    assert_eq!(
        db.quarantine()
            .unwrap()
            .iter()
            .map(|q| q.id)
            .collect::<Vec<_>>(),
        [2]
    );
    db.clear_quarantine(None).unwrap();
    assert!(db.quarantine().unwrap().is_empty());
}

struct Collect(std::sync::Mutex<Vec<(tandem::ffi::LogLevel, String, String)>>);

impl tandem::ffi::LogListener for Collect {
    fn on_log(
        &self,
        level: tandem::ffi::LogLevel,
        target: String,
        message: String,
    ) -> Result<(), tandem::ffi::CallbackError> {
        self.0.lock().unwrap().push((level, target, message));
        Ok(())
    }
}

struct Throwing;

impl tandem::ffi::ObjectListener for Throwing {
    fn on_change(&self, _: tandem::ffi::ObjectChange) -> Result<(), tandem::ffi::CallbackError> {
        Err(tandem::ffi::CallbackError::Failed {
            message: "app bug".into(),
        })
    }
}

/// The library's warnings reach the app's log listener with level, target and message; events
/// below the level are not sent.
#[test]
fn the_log_listener_gets_the_library_events() {
    use tandem::ffi::LogLevel;
    let logs = Arc::new(Collect(Default::default()));
    tandem::ffi::set_log_listener(logs.clone(), LogLevel::Warn).unwrap();
    tracing::info!(target: "tandem::test", "below the level");
    tracing::warn!(target: "tandem::test", attempt = 2, "at the level");
    // A listener that throws is a library warning.
    let (_dir, db) = open("log");
    db.write(vec![create(1, "a")]).unwrap();
    let _handle = db
        .observe_object("Task".into(), k(1), Arc::new(Throwing), vec![])
        .unwrap();
    db.write(vec![WriteOp::Set {
        class_name: "Task".into(),
        key: k(1),
        property: "title".into(),
        value: s("b"),
        path: Default::default(),
    }])
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let seen = |what: &str| {
        logs.0
            .lock()
            .unwrap()
            .iter()
            .any(|(_, _, m)| m.contains(what))
    };
    while !seen("app bug") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let events = logs.0.lock().unwrap().clone();
    assert!(
        events.contains(&(
            LogLevel::Warn,
            "tandem::test".into(),
            "at the level attempt=2".into()
        )),
        "{events:?}"
    );
    assert!(!seen("below the level"), "{events:?}");
    assert!(
        events
            .iter()
            .any(|(level, target, m)| *level == LogLevel::Warn
                && target == "tandem::ffi::database"
                && m.contains("object listener threw: app bug")),
        "{events:?}"
    );
    tandem::ffi::clear_log_listener();
}

/// Decimals cross as exact text both ways; malformed text is `InvalidArgument` and writes
/// nothing.
#[test]
fn decimals_cross_as_exact_text() {
    let (_dir, path) = temp_db("decimal");
    let db = Database::open(
        path,
        vec![ClassSpec {
            name: "Price".into(),
            primary_key: Some("_id".into()),
            properties: vec![
                prop("_id", T::Int, Collection::Single),
                PropertySpec {
                    nullable: true,
                    ..prop("amount", T::Decimal, Collection::Single)
                },
            ],
        }],
    )
    .unwrap();
    let dec = |text: &str| Value::Decimal { value: text.into() };
    let put = |key: i64, value: Value| WriteOp::Upsert {
        class_name: "Price".into(),
        key: k(key),
        values: HashMap::from([("amount".into(), value)]),
    };
    db.write(vec![
        put(1, dec("123.45")),
        put(2, dec("-123456789012345678901234567890.12")),
        put(3, dec("1e3")),
    ])
    .unwrap();
    let amount = |key: i64| db.object("Price".into(), k(key)).unwrap().unwrap()["amount"].clone();
    assert_eq!(
        amount(1),
        FieldValue::Single {
            value: dec("12345E-2")
        }
    );
    assert_eq!(
        amount(2),
        FieldValue::Single {
            value: dec("-12345678901234567890123456789012E-2")
        }
    );
    assert_eq!(amount(3), FieldValue::Single { value: dec("1E3") });
    for bad in ["1.2.3", "", "99999999999999999999999999999999999"] {
        let err = db
            .write(vec![put(1, Value::Null), put(4, dec(bad))])
            .unwrap_err();
        assert!(
            matches!(err, TandemError::InvalidArgument { .. }),
            "{bad:?}: {err:?}"
        );
    }
    assert_eq!(
        amount(1),
        FieldValue::Single {
            value: dec("12345E-2")
        }
    );
    assert!(db.object("Price".into(), k(4)).unwrap().is_none());
}

/// `Results.entries()` pairs each matching object with its key, in query order.
#[test]
fn results_entries_carry_keys_in_order() {
    let (_dir, db) = open("entries");
    db.write(vec![create(2, "b"), create(1, "a"), create(3, "c")])
        .unwrap();
    let results = db
        .query(
            "Task".into(),
            "_id >= $0 SORT(_id DESC)".into(),
            vec![Value::Int { value: 2 }],
        )
        .unwrap();
    let entries = results.entries().unwrap();
    assert_eq!(
        entries.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
        vec![k(3), k(2)]
    );
    assert_eq!(
        entries[0].fields["title"],
        FieldValue::Single { value: s("c") }
    );
    assert_eq!(
        entries[1].fields["title"],
        FieldValue::Single { value: s("b") }
    );
}

#[test]
fn results_rows_give_the_properties_asked_for_by_position() {
    let (_dir, db) = open("rows");
    let mut ops = every_kind_of_op(1);
    ops.extend([create(2, "b"), create(3, "c")]);
    db.write(ops).unwrap();
    let results = db
        .query("Task".into(), "SORT(_id DESC)".into(), vec![])
        .unwrap();
    let entries = results.entries().unwrap();
    // Every property, the primary key first, and one twice: each row holds exactly what the
    // entries hold under those names, in that order.
    let asked: Vec<String> = ["_id", "title", "tags", "lucky", "notes", "address"]
        .into_iter()
        .chain(["addresses", "count", "title"])
        .map(String::from)
        .collect();
    let rows = results.rows(asked.clone()).unwrap();
    assert_eq!(rows.len(), 3);
    for (row, entry) in rows.iter().zip(&entries) {
        assert_eq!(row.key, entry.key);
        assert_eq!(row.values.len(), asked.len());
        for (name, value) in asked.iter().zip(&row.values) {
            let expected = match name.as_str() {
                "_id" => FieldValue::Single {
                    value: match &entry.key {
                        Key::Int { value } => Value::Int { value: *value },
                        other => panic!("key {other:?}"),
                    },
                },
                _ => entry.fields[name].clone(),
            };
            assert_eq!(value, &expected, "{name} of {:?}", row.key);
        }
    }
    assert_eq!(rows[0].key, k(3));
    assert_eq!(rows[2].key, k(1));
    assert_eq!(rows[2].values[1], FieldValue::Single { value: s("b") });
    assert_eq!(
        rows[2].values[7],
        FieldValue::Single {
            value: Value::Int { value: 42 }
        }
    );
    // An empty selection gives the keys alone; an unknown property is refused by name.
    let keys_only = results.rows(vec![]).unwrap();
    assert!(keys_only.iter().all(|r| r.values.is_empty()));
    match results.rows(vec!["title".into(), "nope".into()]) {
        Err(TandemError::InvalidArgument { message }) => assert!(message.contains("nope")),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

/// Options for a server that is never there (a closed loopback port): waits never complete.
fn unreachable_server() -> SyncOptions {
    SyncOptions {
        url: "ws://127.0.0.1:9/".into(),
        path: "/nowhere".into(),
        token: "t".into(),
        ca_file: None,
        allow_insecure: true,
        client_reset: ClientResetMode::Manual,
        connect_timeout_ms: 10_000,
        handshake_timeout_ms: 10_000,
        flexible: false,
    }
}

/// Runs `call` with a fresh `CancelToken` on another thread, checks it is still waiting after
/// a while, cancels it and returns its result (which must come promptly).
fn cancelled<R: Send + 'static>(
    call: impl FnOnce(Arc<CancelToken>) -> Result<R, TandemError> + Send + 'static,
) -> Result<R, TandemError> {
    let token = CancelToken::new();
    let given = Arc::clone(&token);
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(call(given));
    });
    let still_waiting = result.recv_timeout(std::time::Duration::from_millis(200));
    assert!(still_waiting.is_err(), "returned before it was cancelled");
    assert!(!token.is_cancelled());
    token.cancel();
    assert!(token.is_cancelled());
    result
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("a cancelled call returns promptly")
}

/// Records what an `ErrorListener` is told.
#[derive(Default)]
struct Errors(std::sync::Mutex<Vec<(u64, String, bool)>>);

impl tandem::ffi::ErrorListener for Errors {
    fn on_error(
        &self,
        code: u64,
        message: String,
        will_retry: bool,
    ) -> Result<(), tandem::ffi::CallbackError> {
        self.0.lock().unwrap().push((code, message, will_retry));
        Ok(())
    }
}

/// Fails every call, numbering them.
#[derive(Default)]
struct FailingTokens(std::sync::atomic::AtomicUsize);

impl tandem::ffi::TokenProvider for FailingTokens {
    fn fetch_token(&self) -> Result<String, tandem::ffi::CallbackError> {
        let call = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(tandem::ffi::CallbackError::Failed {
            message: format!("no token (call {call})"),
        })
    }
}

/// The error listener a session starts with is told of its very first error (the token
/// provider's first failure, before any connection), which `observe_errors` after the start
/// can miss; `open_synced_blocking`'s is told of the errors while it waits.
#[test]
fn the_error_listener_given_at_the_start_hears_the_first_error() {
    let (_dir, db) = open("first-error");
    let errors = Arc::new(Errors::default());
    let options = SyncOptions {
        token: String::new(),
        ..unreachable_server()
    };
    let session = db
        .sync(
            options.clone(),
            Some(Arc::new(FailingTokens::default())),
            Some(errors.clone()),
        )
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while errors.0.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no error reported");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    session.stop();
    let (code, message, will_retry) = errors.0.lock().unwrap()[0].clone();
    assert_eq!(code, 0);
    assert!(message.contains("no token (call 0)"), "{message}");
    assert!(will_retry);

    let (_open_dir, path) = temp_db("first-error-open");
    let opening = Arc::new(Errors::default());
    let err = open_synced_blocking(
        path,
        classes(),
        unreachable_server(),
        None,
        Some(300),
        None,
        Some(opening.clone()),
        None,
    )
    .err()
    .expect("the server is unreachable");
    assert!(matches!(err, TandemError::Timeout { .. }), "{err:?}");
    // The session was dropped with the timeout: what it had queued is still delivered, and
    // then the listener is let go of (only this test holds it then).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while Arc::strong_count(&opening) > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener was kept"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let heard = opening.0.lock().unwrap();
    assert!(
        heard
            .first()
            .is_some_and(|(code, _, retry)| *code == 0 && *retry),
        "{heard:?}"
    );
}

/// The blocking twins of the async calls (what the Python package awaits on a thread of its
/// own): they time out like the async ones, and a `CancelToken` ends them from another thread
/// with `Stopped`.
#[test]
fn blocking_waits_time_out_and_are_cancelled() {
    let (_dir, db) = open("blocking");
    db.write(vec![create(1, "never uploaded")]).unwrap();
    let session = db.sync(unreachable_server(), None, None).unwrap();

    let err = Arc::clone(&session)
        .wait_for_upload_blocking(Some(50), None)
        .unwrap_err();
    assert!(matches!(err, TandemError::Timeout { .. }), "{err:?}");
    let err = Arc::clone(&session)
        .wait_for_download_blocking(Some(50), None)
        .unwrap_err();
    assert!(matches!(err, TandemError::Timeout { .. }), "{err:?}");

    let s = Arc::clone(&session);
    let err = cancelled(move |token| s.wait_for_upload_blocking(None, Some(token))).unwrap_err();
    assert!(matches!(err, TandemError::Stopped { .. }), "{err:?}");
    let s = Arc::clone(&session);
    let err = cancelled(move |token| s.wait_for_download_blocking(None, Some(token))).unwrap_err();
    assert!(matches!(err, TandemError::Stopped { .. }), "{err:?}");
    let s = Arc::clone(&session);
    let err =
        cancelled(move |token| s.transact_blocking(vec![create(2, "cas")], None, Some(token)))
            .unwrap_err();
    assert!(matches!(err, TandemError::Stopped { .. }), "{err:?}");
    // The transaction was committed locally before the wait for the verdict was cancelled.
    assert!(task(&db, 2).is_some());

    // An already cancelled token ends the call at once; stopping the session ends a wait too.
    let token = CancelToken::new();
    token.cancel();
    let err = Arc::clone(&session)
        .wait_for_upload_blocking(None, Some(token))
        .unwrap_err();
    assert!(matches!(err, TandemError::Stopped { .. }), "{err:?}");
    let s = Arc::clone(&session);
    let waiter = std::thread::spawn(move || s.wait_for_upload_blocking(None, None));
    std::thread::sleep(std::time::Duration::from_millis(100));
    session.stop();
    let err = waiter.join().unwrap().unwrap_err();
    assert!(matches!(err, TandemError::Stopped { .. }), "{err:?}");

    let (_open_dir, path) = temp_db("blocking-open");
    let err = cancelled(move |token| {
        open_synced_blocking(
            path,
            classes(),
            unreachable_server(),
            None,
            None,
            None,
            None,
            Some(token),
        )
    })
    .err()
    .expect("cancelled");
    assert!(matches!(err, TandemError::Stopped { .. }), "{err:?}");
}
