//! tandem-server on PostgreSQL beside embedded SQLite, in one run, over TLS loopback:
//!
//! - latency from a commit on client A to the results listener on client B running (p50, p99
//!   over 500 changes);
//! - 5,000 small changesets committed on C and received by D (changesets per second end to end);
//!
//! each for three set-ups: one process on SQLite (the baseline), one process on PostgreSQL, and
//! two processes on one PostgreSQL with the writer on one and the reader on the other (the
//! change crosses by NOTIFY).
//!
//! Run: `cargo bench --features postgres --bench postgres`. The database: `TANDEM_TEST_POSTGRES`
//! (a URL), else the throwaway cluster `tests/postgres/start.sh` starts.

use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::client::{SyncConfig, SyncSession};
use tandem::model::{ClassSchema, PrimaryKey, Property, PropertyType, Schema, Value};
use tandem::server::{start, Authenticator, RunningServer, ServerConfig, TokenSigner};
use tandem::store::{Config, Database};

#[path = "../tests/postgres/cluster.rs"]
mod cluster;
use cluster::database;

const SECRET: &[u8] = b"benchmark secret, benchmark secret";

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

struct Setup {
    /// `_scratch`'s path.
    dir: std::path::PathBuf,
    servers: Vec<RunningServer>,
    /// The scratch directory, removed on drop (the last field: after the servers stop).
    _scratch: tempfile::TempDir,
}

impl Setup {
    fn new(
        runtime: &tokio::runtime::Runtime,
        name: &str,
        processes: usize,
        database: Option<String>,
    ) -> Setup {
        let scratch = tempfile::Builder::new()
            .prefix(&format!("tandem-pgbench-{name}-"))
            .tempdir()
            .unwrap();
        let dir = scratch.path().to_path_buf();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        let servers = (0..processes)
            .map(|i| {
                runtime
                    .block_on(start(ServerConfig {
                        tls: Some((dir.join("cert.pem"), dir.join("key.pem"))),
                        database: database.clone(),
                        ..ServerConfig::new(
                            "127.0.0.1:0".parse().unwrap(),
                            dir.join(format!("server-{i}")),
                            Authenticator::hs256(SECRET),
                        )
                    }))
                    .unwrap()
            })
            .collect();
        Setup {
            dir,
            servers,
            _scratch: scratch,
        }
    }

    fn open(&self, name: &str) -> Arc<Database> {
        Arc::new(Database::open(self.dir.join(name), &schema(), Config::default()).unwrap())
    }

    /// A session of `db` on `path` through process `process`.
    fn session(&self, process: usize, db: &Arc<Database>, path: &str) -> SyncSession {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        SyncSession::start(
            Arc::clone(db),
            SyncConfig {
                url: format!(
                    "wss://localhost:{}/",
                    self.servers[process].local_addr.port()
                ),
                path: path.into(),
                token: TokenSigner::hs256(SECRET)
                    .sign("bench", now + 3600, &["*"])
                    .unwrap(),
                ca_file: Some(self.dir.join("cert.pem")),
                ..SyncConfig::default()
            },
        )
        .unwrap()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for s in self.servers.drain(..) {
            s.shutdown();
        }
        // `_scratch` removes the directory.
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn count(db: &Database) -> usize {
    db.read()
        .unwrap()
        .query("Item", "TRUEPREDICATE", &[])
        .unwrap()
        .len()
}

/// The two measurements through `setup`, the writer on process 0 and the reader on the last.
fn measure(label: &str, setup: &Setup) {
    let reader_process = setup.servers.len() - 1;
    let a = setup.open("a.sqlite");
    let b = setup.open("b.sqlite");
    let _sa = setup.session(0, &a, "/latency");
    let _sb = setup.session(reader_process, &b, "/latency");
    let (tx, rx) = channel::<Instant>();
    let _token = b
        .observe_query("Item", "TRUEPREDICATE", &[], move |_| {
            let _ = tx.send(Instant::now());
        })
        .unwrap();
    // Both sessions bound and idle before timing.
    let mut w = a.begin_write().unwrap();
    w.upsert("Item", PrimaryKey::Int(-1), &[("n", Value::Int(0))])
        .unwrap();
    w.commit().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&b) < 1 {
        assert!(Instant::now() < deadline, "{label}: B never synced");
        std::thread::sleep(Duration::from_millis(5));
    }
    while rx.try_recv().is_ok() {}
    let mut samples = Vec::new();
    for i in 0..500 {
        let mut w = a.begin_write().unwrap();
        w.upsert("Item", PrimaryKey::Int(i), &[("n", Value::Int(i))])
            .unwrap();
        let start = Instant::now();
        w.commit().unwrap();
        let seen = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("B was notified");
        samples.push(seen.saturating_duration_since(start));
        while rx.try_recv().is_ok() {}
    }
    let p50 = percentile(&mut samples, 0.5);
    let p99 = percentile(&mut samples, 0.99);

    let c = setup.open("c.sqlite");
    let d = setup.open("d.sqlite");
    let _sc = setup.session(0, &c, "/throughput");
    let _sd = setup.session(reader_process, &d, "/throughput");
    let start = Instant::now();
    for i in 0..5_000 {
        let mut w = c.begin_write().unwrap();
        w.upsert("Item", PrimaryKey::Int(i), &[("n", Value::Int(i))])
            .unwrap();
        w.commit().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while count(&d) < 5_000 {
        assert!(
            Instant::now() < deadline,
            "{label}: D never received everything"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let received = start.elapsed();
    println!(
        "{label:<44} commit->listener p50 {:>9.3} ms  p99 {:>9.3} ms   5,000 changesets C->D {:>6.2} s = {:>6.0}/s",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        received.as_secs_f64(),
        5_000.0 / received.as_secs_f64()
    );
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let one_pg = database(&runtime, "bench_one");
    let two_pg = database(&runtime, "bench_two");
    println!("TLS loopback, release build; each line one set-up, same run:");
    measure(
        "SQLite, one process (baseline)",
        &Setup::new(&runtime, "sqlite", 1, None),
    );
    measure(
        "PostgreSQL, one process",
        &Setup::new(&runtime, "pg1", 1, Some(one_pg)),
    );
    measure(
        "PostgreSQL, two processes (A on 1, B on 2)",
        &Setup::new(&runtime, "pg2", 2, Some(two_pg)),
    );
}
