//! Client history growth under sync: N synced, acknowledged writes to one object against a real
//! `tandem-server` (TLS loopback), waiting for the server every 1,000 writes. For each
//! `Config::recovery_window` (the default 1,000; 0, realm-core's trimming; and everything kept,
//! the untrimmed baseline) it prints the file size with its WAL after the first 1,000 writes and
//! after N, the ratio, the history entries left and the write rate, all in the same run.
//!
//! Run: `cargo bench --features server --bench history` (N = 100,000), or pass N:
//! `cargo bench --features server --bench history -- 20000`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::client::SyncSession;
use tandem::model::{ClassSchema, PrimaryKey, Property, PropertyType, Schema};
use tandem::store::{Config, Database, DEFAULT_RECOVERY_WINDOW};

#[path = "common/loopback.rs"]
mod loopback;
use loopback::{session, start_server};

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

/// Bytes of the database file and its WAL.
fn file_size(path: &Path) -> u64 {
    let wal = path.with_extension("sqlite-wal");
    [path.to_path_buf(), wal]
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

fn main() {
    let writes: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let loopback = start_server("historybench");
    let (dir, runtime, port) = (&loopback.dir, &loopback.runtime, loopback.port);

    println!("{writes} synced writes to one object (file + WAL):");
    println!(
        "  {:<28} {:>14} {:>14} {:>7} {:>9} {:>11}",
        "recovery_window", "after 1,000", "after N", "ratio", "entries", "writes/s"
    );
    let windows = [
        (
            format!("{DEFAULT_RECOVERY_WINDOW} (default)"),
            DEFAULT_RECOVERY_WINDOW,
        ),
        ("0 (realm-core)".to_string(), 0),
        ("everything (untrimmed)".to_string(), u64::MAX),
    ];
    for (i, (name, window)) in windows.into_iter().enumerate() {
        let path = dir.join(format!("client{i}.sqlite"));
        let config = Config {
            recovery_window: window,
            ..Config::default()
        };
        let db = Arc::new(Database::open(&path, &schema(), config).unwrap());
        let sync = session(dir, port, &db, &format!("/history{i}"));
        let wait = |s: &SyncSession| {
            runtime
                .block_on(s.wait_for_upload(Some(Duration::from_secs(600))))
                .unwrap();
            runtime
                .block_on(s.wait_for_download(Some(Duration::from_secs(600))))
                .unwrap();
        };
        let start = Instant::now();
        let mut after_first = 0;
        for n in 1..=writes {
            let mut w = db.begin_write().unwrap();
            if n == 1 {
                w.upsert("Item", PrimaryKey::Int(1), &[]).unwrap();
            }
            w.add("Item", &PrimaryKey::Int(1), "n", 1).unwrap();
            w.commit().unwrap();
            if n % 1_000 == 0 || n == writes {
                wait(&sync);
            }
            if n == 1_000 {
                after_first = file_size(&path);
            }
        }
        let elapsed = start.elapsed();
        let after = file_size(&path);
        let entries = db.history().unwrap().len();
        println!(
            "  {:<28} {:>14} {:>14} {:>6.2}x {:>9} {:>11.0}",
            name,
            after_first,
            after,
            after as f64 / after_first.max(1) as f64,
            entries,
            writes as f64 / elapsed.as_secs_f64()
        );
    }
    loopback.server.shutdown();
    // Dropping `loopback` removes its directory.
}
