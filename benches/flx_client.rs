//! Flexible sync bootstrap with Tandem's own client, the server in its own process, so that
//! the server's and the client's peak memory are measured apart (issue 15's benchmark: "server
//! and client peak memory, bytes on the wire").
//!
//! `tandem-server` (the release binary cargo builds for this bench) runs as a child process on
//! loopback (plain ws, `--metrics-listen` for its byte counters). In this process:
//!
//! 1. **Fill.** A flexible sync Tandem client subscribed to every `Item` writes
//!    `FLX_CLIENT_OBJECTS` objects (`_id` Int, `n` Int 0.., `group` String `g<n % 10>`,
//!    `payload` String of 32 bytes) in transactions of 10,000 and waits for the upload.
//! 2. **Baseline.** A fresh full-sync Tandem client of a server path holding just the objects
//!    the subscription below matches (`/items`, filled the same way with `FLX_CLIENT_MATCH`
//!    objects) first-opens with `open_synced` (one STATE snapshot), the fastest way a Tandem
//!    client gets those objects; the same figures are reported.
//! 3. **Bootstrap.** The peak-memory counters of the server process and of this process are
//!    reset (`/proc/<pid>/clear_refs` 5), then a fresh flexible sync client subscribes to
//!    `n < FLX_CLIENT_MATCH` and starts its session; reported: start to the set `Complete`
//!    (the bootstrap integrated and queryable), objects present after it, changeset bytes
//!    received, bytes the server sent on the wire (its `tandem_sent_bytes_total` before and
//!    after), the server's `VmHWM` over the bootstrap and this process's (the client, plus
//!    the idle writer sessions).
//!
//! Run (quick, about a minute after the build):
//!
//! ```text
//! FLX_CLIENT_OBJECTS=100000 FLX_CLIENT_MATCH=10000 nice cargo bench --features server --bench flx_client
//! ```
//!
//! Full size (the defaults: 1,000,000 objects, 100,000 matching):
//!
//! ```text
//! nice cargo bench --features server --bench flx_client
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tandem::client::{open_synced, SyncConfig, SyncSession};
use tandem::model::{ClassSchema, PrimaryKey, Property, PropertyType, Schema, Value};
use tandem::server::TokenSigner;
use tandem::store::{Config, Database, SubscriptionSetState};

const SECRET: &[u8] = b"flexible sync client bench secret";
const WAIT: Option<Duration> = Some(Duration::from_secs(3600));
const BATCH: i64 = 10_000;

fn env(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn schema() -> Schema {
    Schema::new(vec![ClassSchema::top_level(
        "Item",
        "_id",
        vec![
            Property::new("_id", PropertyType::Int),
            Property::new("n", PropertyType::Int),
            Property::new("group", PropertyType::String),
            Property::new("payload", PropertyType::String),
        ],
    )])
    .expect("the schema is valid")
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `VmHWM` or `VmRSS` of process `pid` (`self` for this one), MiB.
fn vm(pid: &str, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Resets the peak resident set of process `pid` to its current one (Linux 4.0+).
fn reset_peak(pid: &str) {
    if let Err(e) = std::fs::write(format!("/proc/{pid}/clear_refs"), "5") {
        eprintln!("cannot reset the peak memory of {pid}: {e}");
    }
}

/// `tandem_sent_bytes_total` from the server's `/metrics`.
fn sent_bytes(metrics_port: u16) -> f64 {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", metrics_port)).expect("the metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("a metrics request");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("the metrics");
    body.lines()
        .find_map(|l| l.strip_prefix("tandem_sent_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("tandem_sent_bytes_total in /metrics")
}

struct Server {
    child: Child,
    port: u16,
    metrics_port: u16,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let secret = dir.join("jwt-secret");
        std::fs::write(&secret, SECRET).expect("the secret is written");
        let (port, metrics_port) = (free_port(), free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .arg("--insecure-ws")
            .args(["--jwt-secret-file", secret.to_str().expect("a UTF-8 path")])
            .args([
                "--data-dir",
                dir.join("data").to_str().expect("a UTF-8 path"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tandem-server starts");
        // Its log (stderr) says when it listens.
        let log = child.stderr.take().expect("its stderr");
        let mut lines = BufReader::new(log).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening on") => break,
                Some(_) => {}
                None => panic!("tandem-server exited before listening"),
            }
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server {
            child,
            port,
            metrics_port,
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn config(&self, path: &str, flexible: bool) -> SyncConfig {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        SyncConfig {
            url: format!("ws://127.0.0.1:{}/", self.port),
            path: path.into(),
            token: TokenSigner::hs256(SECRET)
                .sign("bench", now + 86_400, &[path])
                .expect("a token"),
            allow_insecure: true,
            flexible,
            ..SyncConfig::default()
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count(db: &Database) -> usize {
    db.read()
        .expect("a read")
        .query("Item", "TRUEPREDICATE", &[])
        .expect("the count")
        .len()
}

/// Writes `objects` Items in transactions of [`BATCH`] and waits until the server has them.
fn fill(runtime: &tokio::runtime::Runtime, db: &Database, session: &SyncSession, objects: i64) {
    let payload = "x".repeat(32);
    for start in (0..objects).step_by(BATCH as usize) {
        let mut tx = db.begin_write().expect("a write");
        for n in start..(start + BATCH).min(objects) {
            tx.create(
                "Item",
                PrimaryKey::Int(n),
                &[
                    ("n", Value::Int(n)),
                    ("group", Value::String(format!("g{}", n % 10))),
                    ("payload", Value::String(payload.clone())),
                ],
            )
            .expect("a create");
        }
        tx.commit().expect("the commit");
    }
    runtime
        .block_on(session.wait_for_upload(WAIT))
        .expect("the upload");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and `cargo test --benches` probe with flags
    }
    let objects = env("FLX_CLIENT_OBJECTS", 1_000_000);
    let matching = env("FLX_CLIENT_MATCH", 100_000).min(objects);
    let dir = std::env::temp_dir().join(format!("tandem-flx-client-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the bench directory");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let server = Server::start(&dir);
    let open = |name: &str| {
        Arc::new(Database::open(dir.join(name), &schema(), Config::default()).expect("open"))
    };
    println!("flx_client: {objects} objects, subscription matching {matching}");

    // 1. Fill /flx (flexible, subscribed to everything) and /items (full sync).
    let started = Instant::now();
    let writer = open("writer.sqlite");
    writer
        .update_subscriptions(|m| m.add(Some("all"), "Item", "TRUEPREDICATE", &[]).map(drop))
        .expect("the writer's subscription");
    let writer_session =
        SyncSession::start(Arc::clone(&writer), server.config("/flx", true)).expect("a session");
    fill(&runtime, &writer, &writer_session, objects);
    let flx_fill = started.elapsed();
    let started = Instant::now();
    let full = open("full-writer.sqlite");
    let full_session =
        SyncSession::start(Arc::clone(&full), server.config("/items", false)).expect("a session");
    fill(&runtime, &full, &full_session, matching);
    println!(
        "fill: /flx {:.1} s ({:.0} objects/s), /items {:.1} s",
        flx_fill.as_secs_f64(),
        objects as f64 / flx_fill.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop((writer_session, full_session));

    // 2. Baseline: a fresh full-sync client of /items (STATE).
    let (pid, own) = (server.pid(), "self".to_owned());
    reset_peak(&pid);
    reset_peak(&own);
    let sent_before = sent_bytes(server.metrics_port);
    let started = Instant::now();
    let (baseline_db, baseline_session) = runtime
        .block_on(open_synced(
            dir.join("baseline.sqlite"),
            schema(),
            Config::default(),
            server.config("/items", false),
            WAIT,
        ))
        .expect("open_synced");
    let baseline = started.elapsed();
    let baseline_count = count(&baseline_db);
    let baseline_sent = sent_bytes(server.metrics_port) - sent_before;
    let (baseline_server_peak, baseline_client_peak) = (vm(&pid, "VmHWM:"), vm(&own, "VmHWM:"));
    drop(baseline_session);
    assert_eq!(
        baseline_count as i64, matching,
        "the baseline has every object"
    );

    // 3. A fresh flexible sync client subscribing to `matching` of them.
    let reader = open("reader.sqlite");
    reader
        .update_subscriptions(|m| {
            m.add(Some("some"), "Item", "n < $0", &[Value::Int(matching)])
                .map(drop)
        })
        .expect("the reader's subscription");
    let server_before = vm(&pid, "VmRSS:");
    let client_before = vm(&own, "VmRSS:");
    reset_peak(&pid);
    reset_peak(&own);
    let sent_before = sent_bytes(server.metrics_port);
    let started = Instant::now();
    let session =
        SyncSession::start(Arc::clone(&reader), server.config("/flx", true)).expect("a session");
    let set = runtime
        .block_on(session.wait_for_subscriptions(None, WAIT))
        .expect("the bootstrap");
    let took = started.elapsed();
    assert_eq!(set.state, SubscriptionSetState::Complete);
    let got = count(&reader);
    let sent = sent_bytes(server.metrics_port) - sent_before;
    let (server_peak, client_peak) = (vm(&pid, "VmHWM:"), vm(&own, "VmHWM:"));
    assert_eq!(
        got as i64, matching,
        "the bootstrap brought exactly the matches"
    );
    println!(
        "bootstrap: {matching} of {objects} objects queryable in {:.3} s; {:.2} MiB of changesets, \
         {:.2} MiB sent on the wire; peak memory server {:.1} MiB (RSS before {:.1}), client \
         process {:.1} MiB (RSS before {:.1})",
        took.as_secs_f64(),
        session.progress().download_transferred as f64 / (1 << 20) as f64,
        sent / (1 << 20) as f64,
        server_peak,
        server_before,
        client_peak,
        client_before,
    );
    println!(
        "baseline: full-sync open_synced of a file of the same {matching} objects in {:.3} s; \
         {:.2} MiB sent on the wire; peak memory server {:.1} MiB, client process {:.1} MiB",
        baseline.as_secs_f64(),
        baseline_sent / (1 << 20) as f64,
        baseline_server_peak,
        baseline_client_peak,
    );
    drop(session);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
