//! A rejected transaction rolled back by rebase (`Database::roll_back_to_snapshot`) on the store
//! alone: the server's snapshot is an empty state at server version 0 (the local file has
//! downloaded nothing), so every local changeset is re-applied onto it, the transaction is left
//! out, and the later changesets are rebased over its absence. Each case checks the local
//! result, what was quarantined and why, and that the re-recorded changesets, applied to the
//! snapshot, give exactly the local state (they are what the server merges next).

use tandem::model::{
    ClassSchema, CollectionKind, PrimaryKey, Property, PropertyType, Schema, Value,
};
use tandem::state::{Element, Field, State, Val};
use tandem::store::{Config, Database, DownloadCursors, SnapshotRollback, WriteTransaction};

fn schema() -> Schema {
    Schema::new(vec![ClassSchema::top_level(
        "Task",
        "_id",
        vec![
            Property::new("_id", PropertyType::Int),
            Property::new("title", PropertyType::String),
            Property::new("tags", PropertyType::String).collection(CollectionKind::List),
        ],
    )])
    .unwrap()
}

struct Local {
    db: Database,
    /// The scratch directory, removed on drop (after `db` is closed: the field before).
    _dir: tempfile::TempDir,
}

fn open(name: &str) -> Local {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-rollback-{name}-"))
        .tempdir()
        .unwrap();
    let db = Database::open(
        dir.path().join("local.sqlite"),
        &schema(),
        Config::default(),
    )
    .unwrap();
    Local { db, _dir: dir }
}

fn pk(id: i64) -> PrimaryKey {
    PrimaryKey::Int(id)
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

/// Commits one transaction; returns its local version.
fn write(db: &Database, f: impl FnOnce(&mut WriteTransaction<'_>)) -> u64 {
    let mut tx = db.begin_write().unwrap();
    f(&mut tx);
    tx.commit()
        .unwrap()
        .expect("the transaction wrote something")
}

/// Task 1 with tags `tags`.
fn base(db: &Database, tags: &[&str]) {
    write(db, |tx| {
        tx.create("Task", pk(1), &[("title", s("base"))]).unwrap();
        for (i, tag) in tags.iter().enumerate() {
            tx.list_insert("Task", &pk(1), "tags", i as u32, s(tag))
                .unwrap();
        }
    });
}

fn tags(db: &Database) -> Vec<String> {
    let object = db.read().unwrap().object("Task", &pk(1)).unwrap().unwrap();
    match object.fields.get("tags") {
        Some(Field::List(items)) => items
            .iter()
            .map(|e| match e {
                Element::Value(Val::String(s)) => s.clone(),
                other => panic!("not a string tag: {other:?}"),
            })
            .collect(),
        None => Vec::new(),
        other => panic!("tags is not a list: {other:?}"),
    }
}

fn title(db: &Database, id: i64) -> Option<Field> {
    let object = db.read().unwrap().object("Task", &pk(id)).unwrap()?;
    object.fields.get("title").cloned()
}

/// Rolls back local version `transaction` onto an empty server state at version 0 and checks
/// that the re-recorded changesets give the server the local state.
fn roll_back(db: &Database, transaction: u64) -> tandem::store::ResetOutcome {
    let snapshot = State::new().snapshot_changeset();
    let outcome = match db
        .roll_back_to_snapshot(&snapshot, 0, 1, transaction)
        .unwrap()
    {
        SnapshotRollback::RolledBack(outcome) => outcome,
        other => panic!("the download cursor is at the snapshot: {other:?}"),
    };
    let mut server = State::new();
    for changeset in db.local_changes_after(0).unwrap() {
        server.apply(&changeset).unwrap();
    }
    let local = db.export_state().unwrap();
    assert_eq!(
        server.objects, local.objects,
        "the uploads give the local state"
    );
    outcome
}

#[test]
fn later_list_inserts_keep_their_places_without_the_transaction_elements() {
    let l = open("places");
    base(&l.db, &["x"]);
    let t = write(&l.db, |tx| {
        tx.list_insert("Task", &pk(1), "tags", 1, s("t")).unwrap();
    });
    write(&l.db, |tx| {
        // [x, t] -> [x, t, l] -> [m, x, t, l]
        tx.list_insert("Task", &pk(1), "tags", 2, s("l")).unwrap();
        tx.list_insert("Task", &pk(1), "tags", 0, s("m")).unwrap();
        tx.set("Task", &pk(1), "title", s("later")).unwrap();
    });
    assert_eq!(tags(&l.db), ["m", "x", "t", "l"]);
    let outcome = roll_back(&l.db, t);
    assert_eq!(tags(&l.db), ["m", "x", "l"]);
    assert_eq!(
        title(&l.db, 1),
        Some(Field::Value(Val::String("later".into())))
    );
    assert_eq!(outcome.quarantined, 0);
    assert!(l.db.quarantine().unwrap().is_empty());
}

#[test]
fn erasing_or_moving_a_transaction_element_later_is_dropped_with_it() {
    let l = open("own-erase");
    base(&l.db, &["x", "y"]);
    let t = write(&l.db, |tx| {
        tx.list_insert("Task", &pk(1), "tags", 1, s("t")).unwrap();
        tx.list_insert("Task", &pk(1), "tags", 3, s("u")).unwrap();
    });
    write(&l.db, |tx| {
        // [x, t, y, u] -> [x, y, u] -> [u, x, y] -> [u, x, y, z]
        tx.list_erase("Task", &pk(1), "tags", 1).unwrap();
        tx.list_move("Task", &pk(1), "tags", 2, 0).unwrap();
        tx.list_insert("Task", &pk(1), "tags", 3, s("z")).unwrap();
    });
    assert_eq!(tags(&l.db), ["u", "x", "y", "z"]);
    let outcome = roll_back(&l.db, t);
    assert_eq!(tags(&l.db), ["x", "y", "z"]);
    assert_eq!(outcome.quarantined, 0);
}

#[test]
fn a_later_move_of_an_older_element_is_moved_past_the_transaction_elements() {
    let l = open("move");
    base(&l.db, &["x", "y", "z"]);
    let t = write(&l.db, |tx| {
        tx.list_insert("Task", &pk(1), "tags", 0, s("t")).unwrap();
    });
    write(&l.db, |tx| {
        // [t, x, y, z] -> [t, y, z, x]
        tx.list_move("Task", &pk(1), "tags", 1, 3).unwrap();
    });
    roll_back(&l.db, t);
    assert_eq!(tags(&l.db), ["y", "z", "x"]);
}

#[test]
fn a_later_write_to_a_transaction_element_is_quarantined_with_the_reason() {
    let l = open("own-write");
    base(&l.db, &["x"]);
    let t = write(&l.db, |tx| {
        tx.list_insert("Task", &pk(1), "tags", 0, s("t")).unwrap();
    });
    let later = write(&l.db, |tx| {
        tx.list_set("Task", &pk(1), "tags", 0, s("t2")).unwrap();
        tx.set("Task", &pk(1), "title", s("kept")).unwrap();
    });
    let outcome = roll_back(&l.db, t);
    assert_eq!(tags(&l.db), ["x"]);
    assert_eq!(
        title(&l.db, 1),
        Some(Field::Value(Val::String("kept".into())))
    );
    assert_eq!(outcome.quarantined, 1);
    assert_eq!(outcome.instructions_not_recovered, 1);
    let q = l.db.quarantine().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].original_version, later);
    assert_eq!(q[0].instructions.len(), 1);
    assert_eq!(q[0].instructions[0].index, 0);
    assert_eq!(
        q[0].instructions[0].reason,
        "it changes a list element the rolled-back transaction inserted"
    );
}

#[test]
fn a_list_whose_older_elements_the_transaction_erased_takes_no_later_position() {
    let l = open("unrestorable");
    base(&l.db, &["x", "y"]);
    let t = write(&l.db, |tx| {
        tx.list_erase("Task", &pk(1), "tags", 0).unwrap();
    });
    write(&l.db, |tx| {
        // [y] -> [y, l]: without the transaction, index 1 is between x and y, or after y?
        tx.list_insert("Task", &pk(1), "tags", 1, s("l")).unwrap();
        tx.set("Task", &pk(1), "title", s("kept")).unwrap();
    });
    let outcome = roll_back(&l.db, t);
    // The transaction's erase is undone; the insert whose place is unknown is quarantined.
    assert_eq!(tags(&l.db), ["x", "y"]);
    assert_eq!(
        title(&l.db, 1),
        Some(Field::Value(Val::String("kept".into())))
    );
    assert_eq!(outcome.instructions_not_recovered, 1);
    let q = l.db.quarantine().unwrap();
    assert!(
        q[0].instructions[0]
            .reason
            .starts_with("the rolled-back transaction erased, moved or replaced elements of the list Task[1].tags"),
        "{}",
        q[0].instructions[0].reason
    );
}

#[test]
fn writes_to_an_object_only_the_transaction_created_are_quarantined() {
    let l = open("created");
    base(&l.db, &[]);
    let t = write(&l.db, |tx| {
        tx.create("Task", pk(2), &[("title", s("new"))]).unwrap();
    });
    write(&l.db, |tx| {
        tx.set("Task", &pk(2), "title", s("edited")).unwrap();
        tx.set("Task", &pk(1), "title", s("kept")).unwrap();
    });
    let outcome = roll_back(&l.db, t);
    assert_eq!(title(&l.db, 2), None);
    assert_eq!(
        title(&l.db, 1),
        Some(Field::Value(Val::String("kept".into())))
    );
    assert_eq!(outcome.instructions_not_recovered, 1);
    assert_eq!(l.db.quarantine().unwrap()[0].instructions[0].index, 0);
}

#[test]
fn re_recorded_changesets_keep_their_origin_timestamps() {
    let l = open("timestamps");
    base(&l.db, &["x"]);
    let t = write(&l.db, |tx| {
        tx.list_insert("Task", &pk(1), "tags", 1, s("t")).unwrap();
    });
    write(&l.db, |tx| {
        tx.list_insert("Task", &pk(1), "tags", 2, s("l")).unwrap();
    });
    let stamps = |db: &Database| -> Vec<u64> {
        db.local_changes_after(0)
            .unwrap()
            .iter()
            .filter(|c| !c.instructions.iter().all(|i| i.is_schema_change()))
            .map(|c| c.meta.origin_timestamp)
            .collect()
    };
    let before = stamps(&l.db);
    roll_back(&l.db, t);
    let after = stamps(&l.db);
    // The base and the later write stay; the transaction is gone.
    assert_eq!(after, [before[0], before[2]]);
}

#[test]
fn nothing_changes_unless_the_download_cursor_is_at_the_snapshot() {
    let l = open("cursor");
    base(&l.db, &["x"]);
    let t = write(&l.db, |tx| {
        tx.list_insert("Task", &pk(1), "tags", 1, s("t")).unwrap();
    });
    let snapshot = State::new().snapshot_changeset();
    let before = l.db.export_state().unwrap();
    let history = l.db.history().unwrap();
    // The cursor (0) is behind a snapshot at 5: download first.
    assert_eq!(
        l.db.roll_back_to_snapshot(&snapshot, 5, 1, t).unwrap(),
        SnapshotRollback::CursorBehind {
            download_server_version: 0
        }
    );
    assert_eq!(l.db.export_state().unwrap().objects, before.objects);
    assert_eq!(tags(&l.db), ["x", "t"]);
    // The cursor moves past it (a download of nothing up to server version 7): the snapshot
    // is older than what the file downloaded, so a newer one is needed.
    l.db.integrate_download(
        Vec::new(),
        DownloadCursors {
            download_server_version: 7,
            download_client_version: 0,
            latest_server_version: 7,
            latest_server_version_salt: 1,
            upload_client_version: 0,
        },
    )
    .unwrap();
    assert_eq!(
        l.db.roll_back_to_snapshot(&snapshot, 5, 1, t).unwrap(),
        SnapshotRollback::SnapshotOlder {
            download_server_version: 7
        }
    );
    assert_eq!(l.db.export_state().unwrap().objects, before.objects);
    assert_eq!(l.db.history().unwrap(), history, "the history is untouched");
    assert_eq!(
        l.db.pending_transact().unwrap(),
        None,
        "no transaction was recorded here"
    );
}
