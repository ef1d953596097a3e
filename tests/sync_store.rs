//! Two local databases syncing through a server file, with every message going through the
//! wire format: offline conflicting edits of every kind, convergence of both files with the
//! server, and a client closed and reopened between uploading and downloading.
#![cfg(feature = "server")]

use std::path::{Path, PathBuf};

use tandem::model::{
    ClassSchema, CollectionKind, PrimaryKey, Property, PropertyType, Schema, Value,
};
use tandem::server::ServerFile;
use tandem::state::{Element, Field, Key, Val};
use tandem::store::{Config, Database};

mod wire;
use wire::{download, upload};

/// A scratch directory: the guard that removes it when dropped, and its path.
fn dir(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-sync-{name}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

fn schema() -> Schema {
    Schema::new(vec![ClassSchema::top_level(
        "Task",
        "_id",
        vec![
            Property::new("_id", PropertyType::Int),
            Property::new("title", PropertyType::String),
            Property::new("count", PropertyType::Int),
            Property::new("tags", PropertyType::String).collection(CollectionKind::List),
        ],
    )])
    .unwrap()
}

fn open(path: &Path) -> Database {
    Database::open(path, &schema(), Config::default()).unwrap()
}

fn task(db: &Database, id: i64) -> Option<tandem::state::Object> {
    db.read()
        .unwrap()
        .object("Task", &PrimaryKey::Int(id))
        .unwrap()
}

#[test]
fn offline_conflicting_edits_converge() {
    let (_dir, d) = dir("converge");
    let mut server = ServerFile::open(d.join("server.sqlite")).unwrap();
    let a_path = d.join("a.sqlite");
    let a = open(&a_path);
    let b = open(&d.join("b.sqlite"));

    // A shared starting point.
    let mut tx = a.begin_write().unwrap();
    for id in 1..=3 {
        tx.create(
            "Task",
            PrimaryKey::Int(id),
            &[
                ("title", Value::String(format!("t{id}"))),
                ("count", Value::Int(10)),
            ],
        )
        .unwrap();
    }
    tx.list_insert(
        "Task",
        &PrimaryKey::Int(1),
        "tags",
        0,
        Value::String("x".into()),
    )
    .unwrap();
    tx.commit().unwrap();
    upload(&a, &mut server);
    download(&b, &mut server);
    upload(&b, &mut server);
    download(&a, &mut server);
    assert_eq!(
        a.export_state().unwrap().objects,
        b.export_state().unwrap().objects
    );

    // Offline, conflicting. A edits first, B later (B's field write is newer).
    let mut tx = a.begin_write().unwrap();
    tx.set(
        "Task",
        &PrimaryKey::Int(1),
        "title",
        Value::String("from A".into()),
    )
    .unwrap();
    tx.add("Task", &PrimaryKey::Int(1), "count", 5).unwrap();
    tx.list_insert(
        "Task",
        &PrimaryKey::Int(1),
        "tags",
        0,
        Value::String("a".into()),
    )
    .unwrap();
    tx.erase("Task", &PrimaryKey::Int(2)).unwrap();
    tx.commit().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let mut tx = b.begin_write().unwrap();
    tx.set(
        "Task",
        &PrimaryKey::Int(1),
        "title",
        Value::String("from B".into()),
    )
    .unwrap();
    tx.add("Task", &PrimaryKey::Int(1), "count", 7).unwrap();
    tx.list_insert(
        "Task",
        &PrimaryKey::Int(1),
        "tags",
        0,
        Value::String("b".into()),
    )
    .unwrap();
    tx.set(
        "Task",
        &PrimaryKey::Int(2),
        "title",
        Value::String("edited".into()),
    )
    .unwrap();
    tx.create("Task", PrimaryKey::Int(4), &[]).unwrap();
    tx.commit().unwrap();

    // A uploads, then is closed and reopened before it downloads.
    upload(&a, &mut server);
    drop(a);
    let a = open(&a_path);
    upload(&b, &mut server);
    download(&a, &mut server);
    download(&b, &mut server);
    upload(&a, &mut server);
    upload(&b, &mut server);
    download(&a, &mut server);
    download(&b, &mut server);

    let sa = a.export_state().unwrap();
    let sb = b.export_state().unwrap();
    assert_eq!(sa.objects, sb.objects, "the two files diverged");
    assert_eq!(
        sa.objects,
        server.state().unwrap().objects,
        "a file diverged from the server"
    );

    let t1 = task(&a, 1).unwrap();
    assert_eq!(
        t1.fields["title"],
        Field::Value(Val::String("from B".into())),
        "last writer wins"
    );
    assert_eq!(
        t1.fields["count"],
        Field::Value(Val::Int(22)),
        "counters add up"
    );
    let tags: Vec<Element> = match &t1.fields["tags"] {
        Field::List(items) => items.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(tags.len(), 3, "both inserts kept: {tags:?}");
    assert_eq!(
        tags[0],
        Element::Value(Val::String("a".into())),
        "older insert first"
    );
    assert!(
        task(&a, 2).is_none(),
        "delete wins over a concurrent update"
    );
    assert!(task(&a, 4).is_some());
    assert!(sa.objects["Task"].contains_key(&Key::Int(4)));

    // Nothing acknowledged is pending; nothing duplicated on the server.
    assert!(a.pending_uploads(1 << 20).unwrap().is_empty());
    assert!(b.pending_uploads(1 << 20).unwrap().is_empty());
    let before = server.latest_version();
    upload(&a, &mut server);
    upload(&b, &mut server);
    assert_eq!(server.latest_version(), before);
}

/// `pending_uploads` gives the unacknowledged changesets oldest first, about `max_bytes` of
/// them (at least one), and the rest once those are acknowledged: a backlog is uploaded in
/// bounded batches, in order, none skipped or repeated.
#[test]
fn pending_uploads_come_in_bounded_batches_in_order() {
    let (_dir, d) = dir("pending-batches");
    let db = open(&d.join("a.sqlite"));
    for i in 0..50 {
        let mut tx = db.begin_write().unwrap();
        tx.create(
            "Task",
            PrimaryKey::Int(i),
            &[("title", Value::String("x".repeat(100)))],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let size = |cs: &tandem::changeset::Changeset| cs.encode().len();
    let all = db.pending_uploads(usize::MAX).unwrap();
    assert_eq!(all.len(), 51, "the schema changeset and 50 creations");
    let one = size(&all[1]);
    let mut seen = Vec::new();
    let mut batches = 0;
    loop {
        let batch = db.pending_uploads(3 * one).unwrap();
        if batch.is_empty() {
            break;
        }
        // Stops once the batch holds `max_bytes`: without its last changeset it is under.
        let bytes: usize = batch.iter().map(size).sum();
        assert!(
            bytes - size(batch.last().unwrap()) < 3 * one,
            "{bytes} bytes"
        );
        assert!(batch.len() <= 4, "{} changesets in a batch", batch.len());
        batches += 1;
        seen.extend(batch.iter().map(|c| c.meta.version));
        db.acknowledge_upload(batch.last().unwrap().meta.version)
            .unwrap();
    }
    let expected: Vec<u64> = all.iter().map(|c| c.meta.version).collect();
    assert_eq!(seen, expected);
    assert!(
        batches >= 17,
        "{batches} batches for 51 changesets of about a third each"
    );
}
