//! `Config::exclusive_to_process`: while one process has the file open exclusively, another
//! process is refused with a clear `Busy` error and nothing is lost; in the process that holds
//! it, readers, listeners, checkpoints and a second database on the same file work as usual.
//! The other process is this test binary started again with `TANDEM_EXCLUSIVE_PROBE` set.

use std::path::Path;
use std::process::Command;
use std::sync::mpsc::channel;
use std::time::Duration;

use tandem::model::{ClassSchema, PrimaryKey, Property, PropertyType, Schema, Value};
use tandem::store::{Config, Database, StoreErrorKind};

fn schema() -> Schema {
    Schema::new(vec![ClassSchema::top_level(
        "Item",
        "_id",
        vec![
            Property::new("_id", PropertyType::Int),
            Property::new("n", PropertyType::Int),
        ],
    )])
    .unwrap()
}

fn config(exclusive: bool) -> Config {
    Config {
        exclusive_to_process: exclusive,
        writer_timeout: Duration::from_millis(200),
        ..Config::default()
    }
}

/// How many `Item`s the database holds.
fn count(db: &Database) -> usize {
    db.read()
        .unwrap()
        .query("Item", "TRUEPREDICATE", &[])
        .unwrap()
        .len()
}

fn create(db: &Database, key: i64) {
    let mut tx = db.begin_write().unwrap();
    tx.create("Item", PrimaryKey::Int(key), &[("n", Value::Int(key))])
        .unwrap();
    tx.commit().unwrap();
}

/// The other process's body: runs only when a test starts this binary with
/// `TANDEM_EXCLUSIVE_PROBE` set (the file) and `TANDEM_EXCLUSIVE_PROBE_MODE` (`exclusive` or
/// `shared`); prints what it saw on one line.
#[test]
fn exclusive_probe_child() {
    let Ok(path) = std::env::var("TANDEM_EXCLUSIVE_PROBE") else {
        return;
    };
    let exclusive = std::env::var("TANDEM_EXCLUSIVE_PROBE_MODE").as_deref() == Ok("exclusive");
    match Database::open(&path, &schema(), config(exclusive)) {
        Ok(db) => {
            println!("PROBE opened, {} objects", count(&db));
            if std::env::var_os("TANDEM_EXCLUSIVE_PROBE_HOLD").is_some() {
                // Holds the file open (idle) until the parent closes this process's stdin.
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
            }
        }
        Err(e) => println!("PROBE refused, {:?}: {e}", e.kind()),
    }
}

/// The command that runs [`exclusive_probe_child`] in another process on `path`, opening it
/// in `mode` (`shared` or `exclusive`).
fn probe_command(path: &Path, mode: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "exclusive_probe_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TANDEM_EXCLUSIVE_PROBE", path)
        .env("TANDEM_EXCLUSIVE_PROBE_MODE", mode);
    command
}

/// What the probe printed, opening `path` from another process in the given mode.
fn probe(path: &Path, mode: &str) -> String {
    let out = probe_command(path, mode).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once("PROBE ").map(|(_, seen)| seen))
        .unwrap_or_else(|| panic!("the probe printed no result: {stdout}"))
        .to_owned()
}

#[cfg(unix)]
#[test]
fn another_process_is_refused_while_the_file_is_open_exclusively_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let db = Database::open(&path, &schema(), config(true)).unwrap();
    create(&db, 1);
    create(&db, 2);
    // Each opener is told why in its own terms, with the file's name.
    for (mode, why) in [
        (
            "shared",
            "is locked by another process: one that has it open exclusive_to_process",
        ),
        ("exclusive", "is open in another process"),
    ] {
        let seen = probe(&path, mode);
        assert!(
            seen.starts_with("refused, Busy: "),
            "{mode} probe while held: {seen}"
        );
        assert!(
            seen.contains(&format!("{} {why}", path.display())),
            "the error says why and names the file: {seen}"
        );
    }
    // The holder is untouched by the refusals.
    create(&db, 3);
    assert_eq!(count(&db), 3);
    drop(db);
    // Once it closes, anyone may open the file and sees every commit.
    assert_eq!(probe(&path, "shared"), "opened, 3 objects");
    assert_eq!(probe(&path, "exclusive"), "opened, 3 objects");
}

/// An exclusive open while another process merely has the file open (idle, shared) waits its
/// timeout and fails with a message that says so; once that process is gone it succeeds.
#[cfg(unix)]
#[test]
fn an_exclusive_open_is_refused_while_another_process_has_the_file_open() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    create(&Database::open(&path, &schema(), config(false)).unwrap(), 1);
    let mut holder = probe_command(&path, "shared")
        .env("TANDEM_EXCLUSIVE_PROBE_HOLD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let opened = lines
        .find_map(|l| l.ok().filter(|l| l.contains("PROBE ")))
        .unwrap();
    assert!(opened.contains("PROBE opened, 1 objects"), "{opened}");
    let err = Database::open(&path, &schema(), config(true))
        .err()
        .unwrap();
    assert_eq!(err.kind(), StoreErrorKind::Busy, "{err}");
    assert!(
        err.to_string().contains("is open in another process")
            && err.to_string().contains("close it there first"),
        "{err}"
    );
    drop(holder.stdin.take()); // EOF: the holder closes the file and exits
    assert!(holder.wait().unwrap().success());
    let db = Database::open(&path, &schema(), config(true)).unwrap();
    assert_eq!(count(&db), 1);
}

/// The other order: a file open shared here cannot be opened exclusively here as well (the
/// flag would be silently ignored), and nothing changes for the open database.
#[test]
fn a_file_open_shared_in_this_process_is_not_opened_exclusively_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let shared = Database::open(&path, &schema(), config(false)).unwrap();
    create(&shared, 1);
    let err = Database::open(&path, &schema(), config(true))
        .err()
        .unwrap();
    assert_eq!(err.kind(), StoreErrorKind::InvalidArgument, "{err}");
    assert!(
        err.to_string().contains("exclusive_to_process = false"),
        "{err}"
    );
    create(&shared, 2);
    assert_eq!(count(&shared), 2);
    drop(shared);
    // Closed: it may now be opened either way.
    let exclusive = Database::open(&path, &schema(), config(true)).unwrap();
    assert_eq!(count(&exclusive), 2);
}

#[cfg(unix)]
#[test]
fn a_shared_file_is_not_locked_against_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let db = Database::open(&path, &schema(), config(false)).unwrap();
    create(&db, 1);
    assert_eq!(probe(&path, "shared"), "opened, 1 objects");
    create(&db, 2);
    assert_eq!(count(&db), 2);
}

/// The holder's own machinery under the exclusive lock: a listener sees every one of 600
/// commits (about 1,200 WAL pages: past the background checkpointer's 1,000-page trigger),
/// another `Database` opened the same way on the same file in this process reads and writes
/// (one opened shared is refused while the file is held), the last exclusive close leaves the
/// WAL checkpointed into the main file, and reopening shared afterwards sees it all.
#[test]
fn in_the_holding_process_everything_works_as_with_a_shared_file() {
    const COMMITS: i64 = 600;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let db = Database::open(&path, &schema(), config(true)).unwrap();
    let (tx, rx) = channel();
    let _token = db
        .observe_query("Item", "n >= 0", &[], move |change| {
            tx.send(change.keys.len()).unwrap();
        })
        .unwrap();
    let mut last = 0;
    for key in 0..COMMITS {
        create(&db, key);
        // Each commit reaches the listener (it may batch several into one call).
        while last < key as usize + 1 {
            last = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
    }
    // Another database on the file in this process opens it the same way; the other way is
    // refused, naming the file and the setting it is open with.
    let err = Database::open(&path, &schema(), config(false))
        .err()
        .unwrap();
    assert_eq!(err.kind(), StoreErrorKind::InvalidArgument, "{err}");
    assert!(
        err.to_string()
            .contains("already open in this process with exclusive_to_process = true"),
        "{err}"
    );
    let second = Database::open(&path, &schema(), config(true)).unwrap();
    assert_eq!(count(&second), COMMITS as usize);
    create(&second, COMMITS);
    assert_eq!(count(&db), COMMITS as usize + 1);
    drop(second);
    drop(_token);
    drop(db);
    // The last (exclusive) connection's close checkpointed the WAL into the main file and
    // removed it.
    let wal = dir.path().join("db.sqlite-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "the WAL was left with frames"
    );
    let main =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let rows: i64 = main
        .query_row("SELECT count(*) FROM \"t:Item\"", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, COMMITS + 1, "the rows are in the main file");
    drop(main);
    let again = Database::open(&path, &schema(), config(false)).unwrap();
    let read = again.read().unwrap();
    assert_eq!(
        read.query("Item", "n >= 0", &[]).unwrap().len(),
        COMMITS as usize + 1
    );
    let last = read
        .object("Item", &PrimaryKey::Int(COMMITS))
        .unwrap()
        .unwrap();
    assert_eq!(
        format!("{:?}", last.fields["n"]),
        format!("Value(Int({COMMITS}))")
    );
}
