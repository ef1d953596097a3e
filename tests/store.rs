//! The SQLite store: opening and migrating, write transactions, history, reads and queries.

use std::path::PathBuf;
use std::time::Duration;

use tandem::changeset::Instruction;
use tandem::model::{
    ClassSchema, CollectionKind, Link, PrimaryKey, Property, PropertyType, Schema, Value,
};
use tandem::state::{Element, Field, Val};
use tandem::store::{Config, Database, StoreError};

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-store-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("db.sqlite")
}

fn schema() -> Schema {
    Schema::new(vec![
        ClassSchema::top_level(
            "Person",
            "_id",
            vec![
                Property::new("_id", PropertyType::Int),
                Property::new("name", PropertyType::String),
                Property::new("age", PropertyType::Int).nullable(),
                Property::new("score", PropertyType::Double),
                Property::link("dog", "Dog"),
                Property::new("tags", PropertyType::String).collection(CollectionKind::List),
                Property::link("dogs", "Dog").collection(CollectionKind::List),
                Property::new("lucky", PropertyType::Int).collection(CollectionKind::Set),
                Property::new("notes", PropertyType::String)
                    .collection(CollectionKind::Dictionary)
                    .nullable(),
                Property::link("address", "Address"),
            ],
        ),
        ClassSchema::top_level(
            "Dog",
            "_id",
            vec![
                Property::new("_id", PropertyType::String),
                Property::new("name", PropertyType::String),
            ],
        ),
        ClassSchema::embedded(
            "Address",
            vec![Property::new("street", PropertyType::String)],
        ),
    ])
    .unwrap()
}

fn open(path: &PathBuf) -> Database {
    Database::open(path, &schema(), Config::default()).unwrap()
}

fn int(v: i64) -> PrimaryKey {
    PrimaryKey::Int(v)
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

fn dog(k: &str) -> Value {
    Value::Link(Link {
        class: "Dog".into(),
        key: PrimaryKey::String(k.into()),
    })
}

#[test]
fn opening_records_the_schema_once_and_reopening_changes_nothing() {
    let path = temp_db("open");
    let db = open(&path);
    let history = db.history().unwrap();
    assert_eq!(history.len(), 1);
    let schema_ops = &history[0].instructions;
    assert!(schema_ops.iter().all(Instruction::is_schema_change));
    assert_eq!(
        schema_ops.len(),
        3 + 9 + 1 + 1,
        "three tables; columns: nine of Person, one of Dog, one of Address"
    );
    drop(db);
    let db = open(&path);
    assert_eq!(
        db.history().unwrap().len(),
        1,
        "reopening with the same schema records nothing"
    );
}

#[test]
fn adding_a_property_migrates_and_changing_one_is_refused() {
    let path = temp_db("migrate");
    drop(open(&path));
    let mut classes = schema().classes().to_vec();
    classes[1]
        .properties
        .push(Property::new("age", PropertyType::Int).nullable());
    let db = Database::open(
        &path,
        &Schema::new(classes.clone()).unwrap(),
        Config::default(),
    )
    .unwrap();
    let history = db.history().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].to_string().trim(), "AddColumn Dog.age: Int?");
    drop(db);

    classes[1].properties[1] = Property::new("name", PropertyType::Int);
    let err = Database::open(&path, &Schema::new(classes).unwrap(), Config::default())
        .err()
        .unwrap();
    match &err {
        StoreError::DestructiveSchemaChange {
            class, property, ..
        } => {
            assert_eq!(class, "Dog");
            assert_eq!(property.as_deref(), Some("name"));
        }
        other => panic!("{other}"),
    }
    assert!(err
        .to_string()
        .starts_with("schema change to Dog.name refused"));
}

#[test]
fn a_file_from_a_newer_format_is_refused_untouched() {
    let path = temp_db("newer");
    drop(open(&path));
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = Database::open(&path, &schema(), Config::default())
        .err()
        .unwrap();
    assert!(
        matches!(err, StoreError::FormatTooNew { found: 99, .. }),
        "{err}"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 99);
}

#[test]
fn writes_commit_state_and_history_together() {
    let path = temp_db("writes");
    let db = open(&path);
    let mut tx = db.begin_write().unwrap();
    tx.create(
        "Dog",
        PrimaryKey::String("rex".into()),
        &[("name", s("Rex"))],
    )
    .unwrap();
    tx.create(
        "Person",
        int(1),
        &[
            ("name", s("Ann")),
            ("age", Value::Int(30)),
            ("dog", dog("rex")),
        ],
    )
    .unwrap();
    tx.list_insert("Person", &int(1), "tags", 0, s("a"))
        .unwrap();
    tx.list_insert("Person", &int(1), "tags", 1, s("b"))
        .unwrap();
    tx.list_insert("Person", &int(1), "tags", 0, s("c"))
        .unwrap();
    tx.list_move("Person", &int(1), "tags", 0, 2).unwrap();
    tx.list_set("Person", &int(1), "tags", 0, s("A")).unwrap();
    tx.set_insert("Person", &int(1), "lucky", Value::Int(7))
        .unwrap();
    tx.set_insert("Person", &int(1), "lucky", Value::Int(7))
        .unwrap();
    tx.dict_set("Person", &int(1), "notes", "x", s("y"))
        .unwrap();
    tx.add("Person", &int(1), "age", 2).unwrap();
    tx.create_embedded("Person", &int(1), "address").unwrap();
    let version = tx.commit().unwrap();
    assert_eq!(version, Some(2));

    let read = db.read().unwrap();
    let ann = read.object("Person", &int(1)).unwrap().unwrap();
    assert_eq!(ann.fields["age"], Field::Value(Val::Int(32)));
    assert_eq!(
        ann.fields["tags"],
        Field::List(vec![
            Element::Value(Val::String("A".into())),
            Element::Value(Val::String("b".into())),
            Element::Value(Val::String("c".into())),
        ])
    );
    assert_eq!(ann.fields["lucky"], Field::Set(vec![Val::Int(7)]));
    assert!(matches!(ann.fields["address"], Field::Embedded(Some(_))));
    let history = db.history().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].meta.version, 2);
    assert!(history[1].len() >= 12);
    // The history replays to the same state.
    let mut replay = tandem::state::State::new();
    for cs in &history {
        replay.apply(cs).unwrap();
    }
    assert_eq!(replay, db.export_state().unwrap());
}

#[test]
fn type_errors_write_nothing() {
    let path = temp_db("types");
    let db = open(&path);
    let mut tx = db.begin_write().unwrap();
    tx.create("Person", int(1), &[]).unwrap();
    let err = tx.set("Person", &int(1), "age", s("old")).unwrap_err();
    assert!(matches!(err, StoreError::Rejected(_)), "{err}");
    assert!(
        tx.set("Person", &int(1), "name", Value::Null).is_err(),
        "null into a required string"
    );
    assert!(tx
        .set(
            "Person",
            &int(1),
            "dog",
            Value::Link(Link {
                class: "Person".into(),
                key: int(1)
            })
        )
        .is_err());
    assert!(tx.set("Person", &int(1), "nope", Value::Int(1)).is_err());
    assert!(
        tx.create("Person", int(1), &[]).is_err(),
        "creating an existing key"
    );
    tx.upsert("Person", int(1), &[("name", s("ok"))]).unwrap();
    assert_eq!(
        tx.changeset().len(),
        3,
        "create, create (upsert) and the one good set"
    );
    tx.commit().unwrap();
    let p = db
        .read()
        .unwrap()
        .object("Person", &int(1))
        .unwrap()
        .unwrap();
    assert_eq!(p.fields["age"], Field::Value(Val::Null));
    assert_eq!(p.fields["name"], Field::Value(Val::String("ok".into())));
}

#[test]
fn rollback_and_drop_discard_everything() {
    let path = temp_db("rollback");
    let db = open(&path);
    let mut tx = db.begin_write().unwrap();
    tx.create("Person", int(1), &[]).unwrap();
    tx.rollback();
    {
        let mut tx = db.begin_write().unwrap();
        tx.create("Person", int(2), &[]).unwrap();
    }
    let read = db.read().unwrap();
    assert!(read.object("Person", &int(1)).unwrap().is_none());
    assert!(read.object("Person", &int(2)).unwrap().is_none());
    assert_eq!(db.history().unwrap().len(), 1);
}

#[test]
fn a_second_writer_waits_then_times_out() {
    let path = temp_db("writers");
    let config = Config {
        writer_timeout: Duration::from_millis(100),
        ..Config::default()
    };
    let db = Database::open(&path, &schema(), config).unwrap();
    let tx = db.begin_write().unwrap();
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| db.begin_write().map(|_| ()));
        let result = waiter.join().unwrap();
        assert!(matches!(result, Err(StoreError::WriterTimeout(_))));
    });
    // Readers are not blocked by the writer.
    assert!(db
        .read()
        .unwrap()
        .object("Person", &int(1))
        .unwrap()
        .is_none());
    drop(tx);
    assert!(db.begin_write().is_ok());
}

#[test]
fn erasing_an_object_clears_links_and_list_entries_to_it() {
    let path = temp_db("erase");
    let db = open(&path);
    let mut tx = db.begin_write().unwrap();
    tx.create("Dog", PrimaryKey::String("rex".into()), &[])
        .unwrap();
    tx.create("Dog", PrimaryKey::String("max".into()), &[])
        .unwrap();
    tx.create("Person", int(1), &[("dog", dog("rex"))]).unwrap();
    for (i, d) in ["rex", "max", "rex"].into_iter().enumerate() {
        tx.list_insert("Person", &int(1), "dogs", i as u32, dog(d))
            .unwrap();
    }
    tx.commit().unwrap();
    let mut tx = db.begin_write().unwrap();
    tx.erase("Dog", &PrimaryKey::String("rex".into())).unwrap();
    tx.commit().unwrap();
    let p = db
        .read()
        .unwrap()
        .object("Person", &int(1))
        .unwrap()
        .unwrap();
    assert_eq!(p.fields["dog"], Field::Value(Val::Null));
    assert_eq!(
        p.fields["dogs"],
        Field::List(vec![Element::Value(Val::Link(
            "Dog".into(),
            tandem::state::Key::String("max".into())
        ))])
    );
}

fn people(db: &Database) {
    let mut tx = db.begin_write().unwrap();
    for (id, name, age, score) in [
        (1, "Ann", Some(30), 1.5),
        (2, "bob", None, 2.5),
        (3, "Bea", Some(25), -1.0),
        (4, "Carl", Some(30), 0.0),
        (5, "ann-marie", Some(41), 9.0),
    ] {
        let age = age.map(Value::Int).unwrap_or(Value::Null);
        tx.create(
            "Person",
            int(id),
            &[
                ("name", s(name)),
                ("age", age),
                ("score", Value::Double(score)),
            ],
        )
        .unwrap();
    }
    tx.create(
        "Dog",
        PrimaryKey::String("rex".into()),
        &[("name", s("Rex"))],
    )
    .unwrap();
    tx.set("Person", &int(1), "dog", dog("rex")).unwrap();
    tx.set("Person", &int(3), "dog", dog("rex")).unwrap();
    for i in 0..3 {
        tx.list_insert("Person", &int(5), "tags", i, s("t"))
            .unwrap();
    }
    tx.commit().unwrap();
}

fn ids(db: &Database, q: &str, args: &[Value]) -> Vec<i64> {
    db.read()
        .unwrap()
        .query("Person", q, args)
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .into_iter()
        .map(|k| match k {
            PrimaryKey::Int(v) => v,
            other => panic!("{other}"),
        })
        .collect()
}

#[test]
fn queries_cover_every_operator() {
    let path = temp_db("query");
    let db = open(&path);
    people(&db);
    assert_eq!(ids(&db, "age == 30", &[]), [1, 4]);
    assert_eq!(ids(&db, "age = 30 AND name != 'Carl'", &[]), [1]);
    assert_eq!(ids(&db, "age > 25 && age <= 30", &[]), [1, 4]);
    assert_eq!(ids(&db, "age >= 41 || age < 26", &[]), [3, 5]);
    assert_eq!(ids(&db, "age == nil", &[]), [2]);
    assert_eq!(ids(&db, "age != null", &[]), [1, 3, 4, 5]);
    assert_eq!(
        ids(&db, "NOT (age == 30)", &[]),
        [2, 3, 5],
        "null is not 30"
    );
    assert_eq!(ids(&db, "name BEGINSWITH 'B'", &[]), [3]);
    assert_eq!(ids(&db, "name BEGINSWITH[c] 'b'", &[]), [2, 3]);
    assert_eq!(ids(&db, "name ENDSWITH 'e'", &[]), [5]);
    assert_eq!(ids(&db, "name CONTAINS[c] 'AN'", &[]), [1, 5]);
    assert_eq!(ids(&db, "name LIKE 'a*-?arie'", &[]), [5]);
    assert_eq!(ids(&db, "name LIKE[c] 'A??'", &[]), [1]);
    assert_eq!(ids(&db, "name ==[c] 'BOB'", &[]), [2]);
    assert_eq!(ids(&db, "name IN {'Ann', 'Carl', 'x'}", &[]), [1, 4]);
    assert_eq!(
        ids(&db, "score > 0", &[]),
        [1, 2, 5],
        "ints compare with doubles"
    );
    assert_eq!(ids(&db, "score < 0.5 AND score >= -1", &[]), [3, 4]);
    assert_eq!(ids(&db, "dog.name == 'Rex'", &[]), [1, 3]);
    assert_eq!(ids(&db, "dog == $0", &[dog("rex")]), [1, 3]);
    assert_eq!(ids(&db, "tags.@count > 2", &[]), [5]);
    assert_eq!(ids(&db, "tags.@size == 0", &[]), [1, 2, 3, 4]);
    assert_eq!(
        ids(&db, "age == $0 OR name == $1", &[Value::Int(25), s("bob")]),
        [2, 3]
    );
    assert_eq!(ids(&db, "_id IN {2, 4}", &[]), [2, 4]);
    assert_eq!(ids(&db, "30 == age", &[]), [1, 4]);
    assert_eq!(ids(&db, "TRUEPREDICATE", &[]), [1, 2, 3, 4, 5]);
    assert_eq!(ids(&db, "FALSEPREDICATE", &[]), Vec::<i64>::new());
}

#[test]
fn queries_sort_stably_and_limit() {
    let path = temp_db("sort");
    let db = open(&path);
    people(&db);
    assert_eq!(
        ids(&db, "TRUEPREDICATE SORT(age DESC)", &[]),
        [5, 1, 4, 3, 2],
        "ties keep insertion order"
    );
    assert_eq!(
        ids(&db, "SORT(age ASC)", &[]),
        [2, 3, 1, 4, 5],
        "null sorts first"
    );
    assert_eq!(
        ids(&db, "age > 0 SORT(age ASC, name DESC) LIMIT(2)", &[]),
        [3, 4]
    );
    assert_eq!(ids(&db, "LIMIT(1)", &[]), [1]);
}

#[test]
fn malformed_queries_say_where_and_what() {
    let path = temp_db("badquery");
    let db = open(&path);
    let read = db.read().unwrap();
    let err = |q: &str, args: &[Value]| match read.query("Person", q, args) {
        Err(StoreError::Query(e)) => (e.position, e.message),
        other => panic!("{q}: {other:?}"),
    };
    assert_eq!(err("age >", &[]).0, 5);
    assert!(err("age >", &[])
        .1
        .starts_with("expected a property or a value"));
    assert_eq!(
        err("nope == 1", &[]),
        (0, "Person has no property 'nope'".into())
    );
    assert_eq!(err("age == 1 AND", &[]).0, 12);
    assert!(err("age ~ 1", &[]).1.contains("unexpected character"));
    assert!(err("age == $3", &[])
        .1
        .contains("parameter $3 was not given"));
    assert!(err("name == 'open", &[]).1.contains("unterminated string"));
    assert!(err("age BEGINSWITH 'x'", &[])
        .1
        .contains("needs a string property"));
    assert!(err("tags == 'x'", &[]).1.contains("compare its @count"));
    assert!(err("age == 1 SORT(age", &[])
        .1
        .contains("expected ',' or ')'"));
    assert!(err("age == 1 LIMIT(x)", &[])
        .1
        .contains("expected a number in LIMIT"));
    assert!(err("age == 1 name", &[])
        .1
        .starts_with("expected AND, OR, SORT, LIMIT or the end"));
}

#[test]
fn writes_inside_embedded_objects() {
    use tandem::store::PathStep;
    let path = temp_db("embedded");
    let db = open(&path);
    let mut tx = db.begin_write().unwrap();
    tx.create("Person", int(1), &[]).unwrap();
    tx.create_embedded("Person", &int(1), "address").unwrap();
    tx.set_at(
        "Person",
        &int(1),
        "address",
        &[PathStep::Name("street".into())],
        s("Main"),
    )
    .unwrap();
    assert!(tx
        .set_at(
            "Person",
            &int(1),
            "address",
            &[PathStep::Name("nope".into())],
            s("x")
        )
        .is_err());
    tx.commit().unwrap();
    let p = db
        .read()
        .unwrap()
        .object("Person", &int(1))
        .unwrap()
        .unwrap();
    match &p.fields["address"] {
        Field::Embedded(Some(a)) => {
            assert_eq!(a.fields["street"], Field::Value(Val::String("Main".into())))
        }
        other => panic!("{other:?}"),
    }
    // Setting the embedded property to null removes the object.
    let mut tx = db.begin_write().unwrap();
    tx.set("Person", &int(1), "address", Value::Null).unwrap();
    tx.commit().unwrap();
    let p = db
        .read()
        .unwrap()
        .object("Person", &int(1))
        .unwrap()
        .unwrap();
    assert_eq!(p.fields["address"], Field::Embedded(None));
}

/// A counter add from the app on a mixed property: adds to an integer, leaves null as null, and
/// is refused (nothing written) when the property holds another type. A remote changeset's add
/// meeting a non-integer is a no-op instead (docs/ot.md), but an app calling `add` on a string
/// is a mistake it should hear about.
#[test]
fn add_on_a_mixed_property_needs_an_integer() {
    let schema = Schema::new(vec![ClassSchema::top_level(
        "Counter",
        "_id",
        vec![
            Property::new("_id", PropertyType::Int),
            Property::new("value", PropertyType::Mixed),
        ],
    )])
    .unwrap();
    let db = Database::open(temp_db("mixed-add"), &schema, Config::default()).unwrap();
    let mut tx = db.begin_write().unwrap();
    for (key, value) in [
        (1, Value::Int(40)),
        (2, Value::Null),
        (3, Value::String("x".into())),
    ] {
        tx.create("Counter", int(key), &[("value", value)]).unwrap();
    }
    tx.add("Counter", &int(1), "value", 2).unwrap();
    tx.add("Counter", &int(2), "value", 2).unwrap();
    let err = tx.add("Counter", &int(3), "value", 2).unwrap_err();
    assert!(
        matches!(&err, StoreError::InvalidArgument(m) if m.contains("Counter") && m.contains("value")),
        "{err}"
    );
    tx.commit().unwrap();
    let read = db.read().unwrap();
    let value = |k| read.object("Counter", &int(k)).unwrap().unwrap().fields["value"].clone();
    assert_eq!(value(1), Field::Value(Val::Int(42)));
    assert_eq!(value(2), Field::Value(Val::Null));
    assert_eq!(value(3), Field::Value(Val::String("x".into())));
}

/// Bytes of the file at `path` (0 if it does not exist).
fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// How many `Person` objects the database holds.
fn person_count(db: &Database) -> usize {
    let read = db.read().unwrap();
    read.query("Person", "TRUEPREDICATE", &[]).unwrap().len()
}

/// Commits `n` one-object transactions of about 1 KiB each, from `first` on.
fn write_people(db: &Database, first: i64, n: i64) {
    let filler = "x".repeat(1000);
    for i in first..first + n {
        let mut tx = db.begin_write().unwrap();
        tx.create("Person", int(i), &[("name", s(&filler))])
            .unwrap();
        tx.commit().unwrap();
    }
}

#[test]
fn the_background_checkpoint_copies_the_log_into_the_database_file() {
    // Below the inline limit (4,000 pages) only the background thread checkpoints: after
    // more than 1,000 pages of commits the rows reach the database file itself.
    let path = temp_db("checkpoint-background");
    let db = open(&path);
    let before = file_len(&path);
    write_people(&db, 0, 1_200); // ~2 pages per commit: object row and history entry
    let wal = path.with_extension("sqlite-wal");
    assert!(file_len(&wal) > 1_000 * 4096, "the commits went to the log");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while file_len(&path) < before + 1_000 * 1000 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint within 30 s: database file {} bytes, was {before}",
            file_len(&path)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(db);
    let db = open(&path);
    assert_eq!(person_count(&db), 1_200);
}

#[test]
fn the_log_stays_bounded_under_a_steady_stream_of_commits() {
    // Back-to-back commits leave the background checkpoint no moment to rewind the log; the
    // inline checkpoint at 4,000 pages must, so the log does not grow with the data.
    let path = temp_db("checkpoint-bounded");
    let db = open(&path);
    write_people(&db, 0, 12_000); // ~24,000 pages, ~100 MB, written in all
    let wal = path.with_extension("sqlite-wal");
    // 4,000 pages plus one transaction's (a few), with frame headers.
    let limit = 4_100 * 4_120;
    assert!(
        file_len(&wal) < limit,
        "log of {} bytes after ~100 MB of commits",
        file_len(&wal)
    );
    assert_eq!(person_count(&db), 12_000);
}

/// The CREATE statement SQLite keeps for an object table.
fn table_sql(path: &PathBuf, table: &str) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get(0),
    )
    .unwrap()
}

/// The same writes on any file: every kind of property, keys at the edges of `i64`, links by
/// key, erase and re-create (the rowid reused), and the reads that find rows by key.
fn exercise(db: &Database) -> Vec<Vec<PrimaryKey>> {
    let mut tx = db.begin_write().unwrap();
    tx.create(
        "Dog",
        PrimaryKey::String("rex".into()),
        &[("name", s("Rex"))],
    )
    .unwrap();
    for k in [i64::MIN, -5, 0, 7, 3, i64::MAX] {
        tx.create(
            "Person",
            int(k),
            &[("name", s(&format!("p{k}"))), ("dog", dog("rex"))],
        )
        .unwrap();
        tx.list_insert("Person", &int(k), "tags", 0, s("t"))
            .unwrap();
        tx.set_insert("Person", &int(k), "lucky", Value::Int(k))
            .unwrap();
        tx.dict_set("Person", &int(k), "notes", "n", s("v"))
            .unwrap();
        tx.create_embedded("Person", &int(k), "address").unwrap();
    }
    tx.commit().unwrap();
    let err = db
        .begin_write()
        .unwrap()
        .create("Person", int(7), &[("name", s("again"))])
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
    let mut tx = db.begin_write().unwrap();
    tx.erase("Person", &int(i64::MAX)).unwrap();
    tx.erase("Person", &int(3)).unwrap();
    tx.create("Person", int(3), &[("name", s("back"))]).unwrap();
    tx.upsert("Person", int(-5), &[("age", Value::Int(40))])
        .unwrap();
    tx.commit().unwrap();
    let read = db.read().unwrap();
    let back = read.object("Person", &int(3)).unwrap().unwrap();
    assert_eq!(
        back.fields["name"],
        Field::Value(Val::String("back".into()))
    );
    assert_eq!(back.fields["tags"], Field::List(vec![]));
    assert!(read.object("Person", &int(i64::MAX)).unwrap().is_none());
    [
        "TRUEPREDICATE SORT(_id ASC)",
        "_id > 0 SORT(_id DESC)",
        "_id == $0",
        "dog.name == 'Rex' AND age == nil SORT(_id ASC)",
        "lucky.@count == 1 AND name BEGINSWITH 'p-' SORT(_id ASC)",
    ]
    .iter()
    .map(|q| {
        read.query("Person", q, &[Value::Int(i64::MIN)])
            .unwrap_or_else(|e| panic!("{q}: {e}"))
    })
    .collect()
}

#[test]
fn a_required_int_key_is_the_rowid_and_the_older_layout_still_works() {
    // A new file: Person's required int key is the rowid; Dog's string key keeps its own
    // unique index (the layout module's header).
    let new = temp_db("rowid-new");
    let new_results = exercise(&open(&new));
    let person = table_sql(&new, "t:Person");
    assert!(
        person.contains("_pk INTEGER PRIMARY KEY") && !person.contains("_id"),
        "{person}"
    );
    let dog_sql = table_sql(&new, "t:Dog");
    assert!(
        dog_sql.contains("_id INTEGER PRIMARY KEY, _pk UNIQUE"),
        "{dog_sql}"
    );

    // A file whose int-keyed table has the layout files had before: every read and write
    // works on it and gives the same results.
    let old = temp_db("rowid-old");
    drop(open(&old));
    {
        let conn = rusqlite::Connection::open(&old).unwrap();
        let sql = table_sql(&old, "t:Person").replace(
            "_pk INTEGER PRIMARY KEY",
            "_id INTEGER PRIMARY KEY, _pk UNIQUE",
        );
        conn.execute_batch(&format!("DROP TABLE \"t:Person\"; {sql}"))
            .unwrap();
    }
    let user_version = |path: &PathBuf| -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(user_version(&new), 2, "a new file is format 2");
    // As a file written before format 2: it stays 1 (readable by older Tandems) while it
    // gains no table of the new form.
    rusqlite::Connection::open(&old)
        .unwrap()
        .pragma_update(None, "user_version", 1)
        .unwrap();
    let db = open(&old);
    let old_results = exercise(&db);
    assert!(table_sql(&old, "t:Person").contains("_pk UNIQUE"));
    assert_eq!(user_version(&old), 1);
    assert_eq!(old_results, new_results);
    assert_eq!(
        new_results[0],
        [i64::MIN, -5, 0, 3, 7].map(int).to_vec(),
        "every object, by key"
    );
    assert_eq!(new_results[1], [7, 3].map(int).to_vec());
    assert_eq!(new_results[2], vec![int(i64::MIN)]);
    assert_eq!(new_results[4], vec![int(i64::MIN), int(-5)]);
    let new_db = open(&new);
    assert_eq!(
        db.export_state().unwrap(),
        new_db.export_state().unwrap(),
        "the same objects, fields and collections"
    );
    drop(db);

    // A key of another type finds nothing in either form, though SQLite would take the text
    // '7' for the integer 7 in an INTEGER PRIMARY KEY column.
    for (db, what) in [(open(&old), "old form"), (new_db, "new form")] {
        let read = db.read().unwrap();
        for text in ["7", "07", "7.0", " 7"] {
            let key = PrimaryKey::String(text.into());
            assert!(
                read.object("Person", &key).unwrap().is_none(),
                "{what}: {text:?}"
            );
        }
        drop(read);
        let mut tx = db.begin_write().unwrap();
        let _ = tx.set(
            "Person",
            &PrimaryKey::String("7".into()),
            "name",
            s("wrong"),
        );
        let _ = tx.erase("Person", &PrimaryKey::String("7".into()));
        drop(tx);
        let read = db.read().unwrap();
        let seven = read
            .object("Person", &int(7))
            .unwrap()
            .expect("Person 7 is untouched");
        assert_eq!(
            seven.fields["name"],
            Field::Value(Val::String("p7".into())),
            "{what}"
        );
    }

    // A file of format 1 that gains a class with a required int key becomes format 2.
    let mut classes = schema().classes().to_vec();
    classes.push(ClassSchema::top_level(
        "Counter",
        "_id",
        vec![Property::new("_id", PropertyType::Int)],
    ));
    let more = Schema::new(classes).unwrap();
    drop(Database::open(&old, &more, Config::default()).unwrap());
    assert_eq!(user_version(&old), 2);
    assert!(table_sql(&old, "t:Counter").contains("_pk INTEGER PRIMARY KEY"));
}
