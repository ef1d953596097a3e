//! A file back from a long offline period integrates its first DOWNLOAD (issue 18, "merges of
//! long offline branches", through the store rather than `ReciprocalHistory` alone).
//!
//! The file made `N` local changesets the server has not seen (one upserted `Task` each, as a
//! user writing offline does); the DOWNLOAD carries `N` changesets of another file made
//! meanwhile (one upserted `Task` each, every one with `last_integrated_remote_version` 0: the
//! server had integrated nothing of this file). Timed: one [`Database::integrate_download`]
//! call, which merges, applies and commits it. Three scenarios:
//!
//! - `apart`: the server's objects are not the local ones, so nothing conflicts;
//! - `same`: the server wrote the same `N` objects, so every server changeset meets one local
//!   changeset (the later write wins, field by field);
//! - the baseline, `fresh`: the same DOWNLOAD into a file with no local change (nothing to
//!   merge: the cost of applying and committing alone).
//!
//! It prints each time in milliseconds, per changeset, and the growth exponent between
//! consecutive `N` (time ~ N^k). On 2026-12-06, before the store merged a DOWNLOAD's entries
//! in runs, every entry looked at the whole local history: `apart` grew quadratically.
//!
//! Run: `cargo bench --bench download` (`-- --quick` stops at N = 4,000;
//! `TANDEM_DOWNLOAD_SIZES=1000,16000` picks sizes).

use std::path::Path;
use std::time::Instant;

use tandem::changeset::{Changeset, ChangesetMeta};
use tandem::model::{ClassSchema, PrimaryKey, Property, PropertyType, Schema, Value};
use tandem::store::{Config, Database, DownloadCursors};

fn schema() -> Schema {
    Schema::new(vec![ClassSchema::top_level(
        "Task",
        "_id",
        vec![
            Property::new("_id", PropertyType::Int),
            Property::new("title", PropertyType::String),
        ],
    )])
    .expect("a valid schema")
}

/// Upserts `Task[key]`, one transaction each.
fn write(db: &Database, keys: std::ops::Range<i64>, title: &str) {
    for key in keys {
        let mut w = db.begin_write().expect("begin");
        w.upsert(
            "Task",
            PrimaryKey::Int(key),
            &[("title", Value::String(format!("{title} {key}")))],
        )
        .expect("upsert");
        w.commit().expect("commit");
    }
}

/// The other file's changesets as a DOWNLOAD carries them: server versions 1 to n, none of
/// this file's changesets integrated before them.
fn server_changesets(dir: &Path, keys: std::ops::Range<i64>) -> Vec<Changeset> {
    let server = Database::open(dir.join("other.sqlite"), &schema(), Config::default())
        .expect("open the other file");
    write(&server, keys, "server");
    let mut out = server.history().expect("history");
    for (i, cs) in out.iter_mut().enumerate() {
        cs.meta = ChangesetMeta {
            version: i as u64 + 1,
            last_integrated_remote_version: 0,
            origin_timestamp: cs.meta.origin_timestamp,
            origin_file_ident: 9,
        };
    }
    out
}

/// Milliseconds for one `integrate_download` of `incoming` into a file holding `local` (keys
/// written offline first).
fn measure(dir: &Path, name: &str, local: std::ops::Range<i64>, incoming: &[Changeset]) -> f64 {
    let db = Database::open(dir.join(name), &schema(), Config::default()).expect("open");
    write(&db, local, "local");
    let last = incoming.last().map_or(0, |c| c.meta.version);
    let cursors = DownloadCursors {
        download_server_version: last,
        download_client_version: 0,
        latest_server_version: last,
        latest_server_version_salt: 1,
        upload_client_version: 0,
    };
    let entries = incoming.to_vec();
    let start = Instant::now();
    db.integrate_download(entries, cursors).expect("integrate");
    start.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: Vec<i64> = match std::env::var("TANDEM_DOWNLOAD_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| s.trim().parse().expect("TANDEM_DOWNLOAD_SIZES: integers"))
            .collect(),
        Err(_) if quick => vec![1_000, 2_000, 4_000],
        Err(_) => vec![1_000, 2_000, 4_000, 8_000, 16_000],
    };
    println!("A file's first DOWNLOAD after N offline changesets (one Task upserted each) against N server changesets");
    println!(
        "{:>7} {:>12} {:>12} {:>12} {:>10} {:>10} {:>12}",
        "N", "fresh ms", "apart ms", "same ms", "apart k", "same k", "apart us/cs"
    );
    let mut previous: Option<(i64, f64, f64)> = None;
    for &n in &sizes {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let apart_incoming = server_changesets(dir.path(), n..2 * n);
        let fresh = measure(dir.path(), "fresh.sqlite", 0..0, &apart_incoming);
        let apart = measure(dir.path(), "apart.sqlite", 0..n, &apart_incoming);
        let same_dir = tempfile::TempDir::new().expect("temp dir");
        let same_incoming = server_changesets(same_dir.path(), 0..n);
        let same = measure(same_dir.path(), "same.sqlite", 0..n, &same_incoming);
        let growth = |t: f64, t0: f64, n0: i64| (t / t0).ln() / (n as f64 / n0 as f64).ln();
        let (ka, ks) = match previous {
            Some((n0, a0, s0)) => (
                format!("{:.2}", growth(apart, a0, n0)),
                format!("{:.2}", growth(same, s0, n0)),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{n:>7} {fresh:>12.1} {apart:>12.1} {same:>12.1} {ka:>10} {ks:>10} {:>12.1}",
            apart * 1e3 / n as f64
        );
        previous = Some((n, apart, same));
    }
}
