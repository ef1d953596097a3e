//! The client history is trimmed once the server has integrated its entries and no rebase can
//! need them (issue 11, item 7), keeping `Config::recovery_window` of them for client reset
//! recovery, against a real server: the history stops growing, versions never repeat (also
//! across a reopen), concurrent changes still merge, and the file (with its WAL) stays within
//! twice its size after the first 1,000 synced writes.

mod live;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use live::{eventually, World};
use tandem::client::SyncSession;
use tandem::model::PrimaryKey;
use tandem::state::{Field, Val};
use tandem::store::{Config, Database};

fn open(world: &World, name: &str, recovery_window: u64) -> Arc<Database> {
    let config = Config {
        recovery_window,
        ..Config::default()
    };
    Arc::new(Database::open(world.dir.join(name), &live::schema(), config).unwrap())
}

/// Adds `by` to task 1's count (creating the task first if it is missing).
fn add(db: &Database, by: i64) {
    let mut tx = db.begin_write().unwrap();
    if !live::has_task(db, 1) {
        tx.upsert("Task", PrimaryKey::Int(1), &[]).unwrap();
    }
    tx.add("Task", &PrimaryKey::Int(1), "count", by).unwrap();
    tx.commit().unwrap();
}

fn count(db: &Database) -> i64 {
    let object = db
        .read()
        .unwrap()
        .object("Task", &PrimaryKey::Int(1))
        .unwrap()
        .unwrap();
    match object.fields.get("count") {
        Some(Field::Value(Val::Int(n))) => *n,
        other => panic!("count is {other:?}"),
    }
}

fn synced(world: &World, session: &SyncSession) {
    world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(120))))
        .unwrap();
    world
        .block_on(session.wait_for_download(Some(Duration::from_secs(120))))
        .unwrap();
}

/// `writes` synced writes to one object, waiting for the server every 100.
fn write_synced(world: &World, db: &Database, session: &SyncSession, writes: usize) {
    for i in 0..writes {
        add(db, 1);
        if i % 100 == 99 {
            synced(world, session);
        }
    }
    synced(world, session);
}

/// Bytes of the database file and its WAL.
fn file_size(path: &Path) -> u64 {
    let wal = path.with_extension("sqlite-wal");
    [path.to_path_buf(), wal]
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

#[test]
fn three_thousand_acknowledged_writes_leave_the_recovery_window() {
    let world = World::new("history-window");
    let a = open(&world, "a.sqlite", 10);
    let session = world.sync(&a);
    write_synced(&world, &a, &session, 3_000);
    // The open's schema changeset is version 1; the writes are 2..=3001.
    assert_eq!(a.last_local_version().unwrap(), 3_001);
    eventually("the history to be trimmed to the window", 60, || {
        a.history().unwrap().len() == 10
    });
    let versions: Vec<u64> = a
        .history()
        .unwrap()
        .iter()
        .map(|c| c.meta.version)
        .collect();
    assert_eq!(versions, (2_992..=3_001).collect::<Vec<_>>());
    assert_eq!(a.trimmed_through().unwrap(), 2_991);
    // The next write continues the numbering and reaches another client.
    add(&a, 1);
    assert_eq!(a.last_local_version().unwrap(), 3_002);
    synced(&world, &session);
    let b = world.open("b.sqlite");
    let sb = world.sync(&b);
    synced(&world, &sb);
    assert_eq!(count(&b), 3_001);
}

#[test]
fn without_a_recovery_window_the_history_empties_and_versions_go_on_after_a_reopen() {
    let world = World::new("history-empty");
    let path = world.dir.join("a.sqlite");
    {
        let a = open(&world, "a.sqlite", 0);
        let session = world.sync(&a);
        write_synced(&world, &a, &session, 200);
        eventually("the history to be empty", 60, || {
            a.history().unwrap().is_empty()
        });
        assert_eq!(a.last_local_version().unwrap(), 201);
        assert!(a.latest_version().unwrap().is_none());
        session.stop();
    }
    let a = Arc::new(Database::open(&path, &live::schema(), Config::default()).unwrap());
    assert_eq!(a.last_local_version().unwrap(), 201);
    add(&a, 5);
    assert_eq!(a.last_local_version().unwrap(), 202);
    let session = world.sync(&a);
    synced(&world, &session);
    let b = world.open("b.sqlite");
    let sb = world.sync(&b);
    synced(&world, &sb);
    assert_eq!(count(&b), 205);
}

/// Two clients that trim everything the server integrated keep merging each other's concurrent
/// increments: no rebase needed a trimmed entry.
#[test]
fn trimmed_clients_still_merge_concurrent_changes() {
    let world = World::new("history-merge");
    let a = open(&world, "a.sqlite", 0);
    let b = open(&world, "b.sqlite", 0);
    let sa = world.sync(&a);
    let sb = world.sync(&b);
    add(&a, 0);
    synced(&world, &sa);
    synced(&world, &sb);
    let writer = |db: Arc<Database>| {
        std::thread::spawn(move || {
            for _ in 0..300 {
                add(&db, 1);
            }
        })
    };
    let (ta, tb) = (writer(Arc::clone(&a)), writer(Arc::clone(&b)));
    ta.join().unwrap();
    tb.join().unwrap();
    for _ in 0..2 {
        synced(&world, &sa);
        synced(&world, &sb);
    }
    assert_eq!(count(&a), 600);
    assert_eq!(count(&b), 600);
    eventually("both histories to be trimmed", 60, || {
        a.history().unwrap().is_empty() && b.history().unwrap().is_empty()
    });
}

/// The file (with its WAL) after 5,000 synced writes to one object is within twice its size
/// after the first 1,000, with the default recovery window. `benches/history.rs` measures
/// 100,000.
#[test]
fn the_file_stays_within_twice_its_size_after_the_first_thousand_writes() {
    let world = World::new("history-size");
    let a = open(&world, "a.sqlite", tandem::store::DEFAULT_RECOVERY_WINDOW);
    let path = world.dir.join("a.sqlite");
    let session = world.sync(&a);
    write_synced(&world, &a, &session, 1_000);
    let first = file_size(&path);
    write_synced(&world, &a, &session, 4_000);
    let last = file_size(&path);
    assert!(
        last <= 2 * first,
        "{last} bytes after 5,000 writes, {first} after 1,000"
    );
    assert!(a.history().unwrap().len() as u64 <= tandem::store::DEFAULT_RECOVERY_WINDOW + 100);
}
