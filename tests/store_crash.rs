//! Crash safety: a child process commits transactions as fast as it can and is killed with
//! SIGKILL at random moments. After each kill the file is reopened and must hold every
//! transaction whose commit returned, none half-applied, with a gap-free history. Every other
//! child has the file `exclusive_to_process` (its WAL index in memory, not in the `-shm` file):
//! the parent's shared open after that kill rebuilds it from the WAL.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use tandem::model::{ClassSchema, PrimaryKey, Property, PropertyType, Schema, Value};
use tandem::state::State;
use tandem::store::{Config, Database};

fn schema() -> Schema {
    Schema::new(vec![ClassSchema::top_level(
        "Item",
        "_id",
        vec![
            Property::new("_id", PropertyType::Int),
            Property::new("n", PropertyType::Int),
            Property::new("payload", PropertyType::String),
        ],
    )])
    .unwrap()
}

/// The child's body: runs only when the parent test starts this binary with
/// `TANDEM_CRASH_CHILD` set; otherwise it returns at once.
#[test]
fn crash_child_writer() {
    let Ok(path) = std::env::var("TANDEM_CRASH_CHILD") else {
        return;
    };
    let config = Config {
        exclusive_to_process: std::env::var_os("TANDEM_CRASH_EXCLUSIVE").is_some(),
        ..Config::default()
    };
    let db = Database::open(&path, &schema(), config).unwrap();
    let start = db.history().unwrap().len() as i64;
    for i in start.. {
        let mut tx = db.begin_write().unwrap();
        tx.create(
            "Item",
            PrimaryKey::Int(i),
            &[("payload", Value::String("x".repeat(300)))],
        )
        .unwrap();
        tx.upsert("Item", PrimaryKey::Int(-1), &[]).unwrap();
        tx.add("Item", &PrimaryKey::Int(-1), "n", 1).unwrap();
        let version = tx.commit().unwrap().unwrap();
        // Only after commit returned: this is the promise the parent checks.
        println!("committed {version}");
    }
}

#[test]
fn killed_writers_lose_nothing_that_was_committed() {
    // Removed when the test ends; the children write to the file in it, the parent reopens it.
    let dir = tempfile::Builder::new()
        .prefix("tandem-crash-")
        .tempdir()
        .unwrap();
    let path: PathBuf = dir.path().join("db.sqlite");
    let kills: u64 = std::env::var("TANDEM_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut acknowledged = 0u64;
    for kill in 0..kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait_for = 1 + seed % 40;
        let mut child = Command::new(std::env::current_exe().unwrap());
        if kill % 2 == 1 {
            child.env("TANDEM_CRASH_EXCLUSIVE", "1");
        }
        let mut child = child
            .args([
                "crash_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TANDEM_CRASH_CHILD", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < wait_for {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(v) = line.strip_prefix("committed ") {
                acknowledged = acknowledged.max(v.trim().parse().unwrap());
                seen += 1;
            }
        }
        // Kill somewhere in the middle of the next commits.
        std::thread::sleep(std::time::Duration::from_micros(seed % 3000));
        child.kill().unwrap();
        let _ = child.wait();
        // Drain what the child printed before it died: those commits returned too.
        for line in lines.map_while(Result::ok) {
            if let Some(v) = line.strip_prefix("committed ") {
                acknowledged = acknowledged.max(v.trim().parse().unwrap());
                seen += 1;
            }
        }
        // Every child, exclusive ones included, opened the file and committed before its kill.
        assert!(
            seen > 0,
            "kill {kill}: the child (exclusive: {}) committed nothing",
            kill % 2 == 1
        );

        let db = Database::open(&path, &schema(), Config::default()).unwrap();
        let history = db.history().unwrap();
        for (i, cs) in history.iter().enumerate() {
            assert_eq!(
                cs.meta.version,
                i as u64 + 1,
                "kill {kill}: history has a gap"
            );
        }
        let last = history.last().map(|c| c.meta.version).unwrap_or(0);
        assert!(
            last >= acknowledged,
            "kill {kill}: version {acknowledged} was committed, file ends at {last}"
        );
        // No transaction is half-applied: replaying the history gives exactly the stored state.
        let mut replay = State::new();
        for cs in &history {
            replay.apply(cs).unwrap();
        }
        let stored = db.export_state().unwrap();
        assert_eq!(stored, replay, "kill {kill}: state and history disagree");
        let items = stored.objects.get("Item").map(|o| o.len()).unwrap_or(0) as u64;
        // One object per data transaction, plus the counter object.
        assert_eq!(items, if last > 1 { last } else { 0 }, "kill {kill}");
    }
    assert!(
        acknowledged >= kills,
        "the child committed too little to test anything"
    );
}
