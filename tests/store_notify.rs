//! Change notifications: object and results listeners, exact Realm-style indices for inserts,
//! deletes, moves and modifications in sorted results, cancelling, and listeners that call
//! back into the database.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

use tandem::model::{ClassSchema, PrimaryKey, Property, PropertyType, Schema, Value};
use tandem::store::{Config, Database, ObjectChange, ResultsChange};

/// Generous: a notification normally arrives in microseconds; this only bounds a failing test.
const WAIT: Duration = Duration::from_secs(30);

fn db(name: &str) -> Arc<Database> {
    let dir = std::env::temp_dir().join(format!("tandem-notify-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("db.sqlite");
    let schema = Schema::new(vec![ClassSchema::top_level(
        "P",
        "_id",
        vec![
            Property::new("_id", PropertyType::Int),
            Property::new("age", PropertyType::Int),
            Property::new("name", PropertyType::String),
        ],
    )])
    .unwrap();
    Arc::new(Database::open(path, &schema, Config::default()).unwrap())
}

fn put(db: &Database, id: i64, age: i64) {
    let mut tx = db.begin_write().unwrap();
    tx.upsert("P", PrimaryKey::Int(id), &[("age", Value::Int(age))])
        .unwrap();
    tx.commit().unwrap();
}

fn next<T>(rx: &Receiver<T>) -> T {
    rx.recv_timeout(WAIT).expect("no notification")
}

#[test]
fn object_listener_reports_changed_properties_then_deletion() {
    let db = db("object");
    put(&db, 1, 10);
    let (tx, rx) = channel();
    let _token = db
        .observe_object("P", &PrimaryKey::Int(1), move |c| tx.send(c).unwrap())
        .unwrap();
    let mut w = db.begin_write().unwrap();
    w.set("P", &PrimaryKey::Int(1), "name", Value::String("x".into()))
        .unwrap();
    w.commit().unwrap();
    assert_eq!(
        next(&rx),
        ObjectChange::Modified {
            properties: vec!["name".into()]
        }
    );
    put(&db, 2, 5); // another object: no notification for 1
    let mut w = db.begin_write().unwrap();
    w.erase("P", &PrimaryKey::Int(1)).unwrap();
    w.commit().unwrap();
    assert_eq!(next(&rx), ObjectChange::Deleted);
}

fn ints(keys: &[PrimaryKey]) -> Vec<i64> {
    keys.iter()
        .map(|k| match k {
            PrimaryKey::Int(v) => *v,
            _ => panic!(),
        })
        .collect()
}

#[test]
fn results_listener_indices_for_inserts_deletes_moves_and_modifications() {
    let db = db("results");
    for (id, age) in [(1, 10), (2, 20), (3, 30)] {
        put(&db, id, age);
    }
    let (tx, rx) = channel::<ResultsChange>();
    let _token = db
        .observe_query("P", "age > 0 SORT(age ASC)", &[], move |c| {
            tx.send(c.clone()).unwrap()
        })
        .unwrap();

    put(&db, 4, 15); // [1, 4, 2, 3]
    let c = next(&rx);
    assert_eq!(
        (c.deletions.clone(), c.insertions.clone()),
        (vec![], vec![1])
    );
    assert_eq!(ints(&c.keys), [1, 4, 2, 3]);

    let mut w = db.begin_write().unwrap();
    w.erase("P", &PrimaryKey::Int(2)).unwrap();
    w.commit().unwrap(); // [1, 4, 3]
    let c = next(&rx);
    assert_eq!(
        (c.deletions.clone(), c.insertions.clone()),
        (vec![2], vec![])
    );

    put(&db, 1, 40); // 1 moves to the end: [4, 3, 1]
    let c = next(&rx);
    assert_eq!(ints(&c.keys), [4, 3, 1]);
    assert_eq!(
        (c.deletions.clone(), c.insertions.clone()),
        (vec![0], vec![2])
    );
    assert!(
        c.modifications.is_empty(),
        "a moved object is reported as moved"
    );

    let mut w = db.begin_write().unwrap();
    w.set("P", &PrimaryKey::Int(3), "name", Value::String("n".into()))
        .unwrap();
    w.commit().unwrap();
    let c = next(&rx);
    assert_eq!(
        (c.modifications.clone(), c.modifications_new.clone()),
        (vec![1], vec![1])
    );
    assert!(c.deletions.is_empty() && c.insertions.is_empty());

    put(&db, 5, -1); // filtered out: no notification; the next one proves it was skipped
    put(&db, 6, 1); // [6, 4, 3, 1]
    let c = next(&rx);
    assert_eq!(
        (c.deletions.clone(), c.insertions.clone()),
        (vec![], vec![0])
    );
}

#[test]
fn cancelled_and_dropped_tokens_stop_delivery() {
    let db = db("cancel");
    put(&db, 1, 1);
    let (tx1, rx1) = channel();
    let first = db
        .observe_query("P", "TRUEPREDICATE", &[], move |_| tx1.send(()).unwrap())
        .unwrap();
    let (tx2, rx2) = channel();
    let second = db
        .observe_query("P", "TRUEPREDICATE", &[], move |_| tx2.send(()).unwrap())
        .unwrap();
    first.cancel();
    put(&db, 2, 2);
    next(&rx2);
    assert!(rx1.try_recv().is_err(), "a cancelled listener was called");
    drop(second);
    let (tx3, rx3) = channel();
    let _third = db
        .observe_query("P", "TRUEPREDICATE", &[], move |_| tx3.send(()).unwrap())
        .unwrap();
    put(&db, 3, 3);
    next(&rx3);
    assert!(rx2.try_recv().is_err(), "a dropped listener was called");
}

#[test]
fn a_listener_may_read_and_write_the_database() {
    let db = db("reentrant");
    put(&db, 1, 1);
    let (tx, rx) = channel();
    let inner = Arc::clone(&db);
    let _token = db
        .observe_object("P", &PrimaryKey::Int(1), move |_| {
            let age = inner
                .read()
                .unwrap()
                .object("P", &PrimaryKey::Int(1))
                .unwrap();
            let mut w = inner.begin_write().unwrap();
            w.upsert("P", PrimaryKey::Int(100), &[]).unwrap();
            w.commit().unwrap();
            tx.send(age.is_some()).unwrap();
        })
        .unwrap();
    put(&db, 1, 2);
    assert!(next(&rx));
    assert!(db
        .read()
        .unwrap()
        .object("P", &PrimaryKey::Int(100))
        .unwrap()
        .is_some());
}
