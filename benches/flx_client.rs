//! Flexible sync bootstrap with Tandem's own client, the server in its own process, so that
//! the server's and the client's peak memory are measured apart (issue 15's benchmark: "server
//! and client peak memory, bytes on the wire").
//!
//! `tandem-server` (the release binary cargo builds for this bench) runs as a child process on
//! loopback (plain ws, `--metrics-listen` for its byte counters). In this process:
//!
//! 1. **Fill.** A flexible sync Tandem client subscribed to every `Item` (waiting until that
//!    set is complete) writes `FLX_CLIENT_OBJECTS` objects (`_id` Int, `n` Int 0.., `group` String `g<n % 10>`,
//!    `payload` String of 32 bytes) in transactions of 10,000 and waits for the upload.
//! 2. **Baseline.** A fresh full-sync Tandem client of a server path holding just the objects
//!    the subscription below matches (`/items`, filled the same way with `FLX_CLIENT_MATCH`
//!    objects) first-opens with `open_synced` (one STATE snapshot), the fastest way a Tandem
//!    client gets those objects; the same figures are reported.
//! 3. **Bootstrap.** The server's peak-memory counter is reset (`/proc/<pid>/clear_refs` 5),
//!    then a fresh flexible sync client subscribes to `n < FLX_CLIENT_MATCH` and starts its
//!    session, in a process of its own (this bench run again with `FLX_CLIENT_ROLE`), so that
//!    its peak memory is its own; reported: start to the set `Complete` (the bootstrap
//!    integrated and queryable), objects present after it, changeset bytes received, bytes the
//!    server sent on the wire (its `tandem_sent_bytes_total` before and after), the server's
//!    `VmHWM` over the bootstrap and the client process's `VmHWM`. The baseline's client runs
//!    in a process of its own too.
//!
//! Run (quick, about a minute after the build):
//!
//! ```text
//! FLX_CLIENT_OBJECTS=100000 FLX_CLIENT_MATCH=10000 nice cargo bench --features server --bench flx_client
//! ```
//!
//! `FLX_CLIENT_SERVER_BIN=<path>` runs that `tandem-server` binary instead of this build's
//! (to compare two versions of the server with the same clients).
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
    /// `None` in a client process, which only connects.
    child: Option<Child>,
    port: u16,
    metrics_port: u16,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let secret = dir.join("jwt-secret");
        std::fs::write(&secret, SECRET).expect("the secret is written");
        let (port, metrics_port) = (free_port(), free_port());
        // `FLX_CLIENT_SERVER_BIN` runs another build of the server (a before/after comparison).
        let bin = std::env::var("FLX_CLIENT_SERVER_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tandem-server").to_owned());
        let mut child = Command::new(bin)
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
            child: Some(child),
            port,
            metrics_port,
        }
    }

    fn pid(&self) -> String {
        self.child.as_ref().map_or(0, Child::id).to_string()
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
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
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

/// The client side of step 2 or 3 in this process: `FLX_CLIENT_ROLE` is `flexible` or `full`,
/// `FLX_CLIENT_DB` the file, `FLX_CLIENT_PORT` the server's, `FLX_CLIENT_MATCH` the matches.
/// Prints one line: seconds, objects, changeset bytes received, `VmHWM` in MiB.
fn client_role(role: &str) {
    let db_path = std::env::var("FLX_CLIENT_DB").expect("FLX_CLIENT_DB");
    let port: u16 = env("FLX_CLIENT_PORT", 0) as u16;
    let matching = env("FLX_CLIENT_MATCH", 100_000);
    let server = Server {
        child: None,
        port,
        metrics_port: 0,
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let started = Instant::now();
    let (db, session) = if role == "flexible" {
        let db = Arc::new(Database::open(&db_path, &schema(), Config::default()).expect("open"));
        db.update_subscriptions(|m| {
            m.add(Some("some"), "Item", "n < $0", &[Value::Int(matching)])
                .map(drop)
        })
        .expect("the subscription");
        let session =
            SyncSession::start(Arc::clone(&db), server.config("/flx", true)).expect("a session");
        let set = runtime
            .block_on(session.wait_for_subscriptions(None, WAIT))
            .expect("the bootstrap");
        assert_eq!(set.state, SubscriptionSetState::Complete);
        (db, session)
    } else {
        runtime
            .block_on(open_synced(
                &db_path,
                schema(),
                Config::default(),
                server.config("/items", false),
                WAIT,
            ))
            .expect("open_synced")
    };
    let took = started.elapsed();
    println!(
        "{} {} {} {}",
        took.as_secs_f64(),
        count(&db),
        session.progress().download_transferred,
        vm("self", "VmHWM:")
    );
}

/// Runs [`client_role`] in a child process; its figures.
fn run_client(role: &str, db: &Path, server: &Server, matching: i64) -> (f64, i64, f64, f64) {
    let out = Command::new(std::env::current_exe().expect("this bench"))
        .env("FLX_CLIENT_ROLE", role)
        .env("FLX_CLIENT_DB", db)
        .env("FLX_CLIENT_PORT", server.port.to_string())
        .env("FLX_CLIENT_MATCH", matching.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("the client process");
    assert!(out.status.success(), "the {role} client failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text
        .split_whitespace()
        .map(|v| v.parse().expect("a number"))
        .collect();
    (f[0], f[1] as i64, f[2], f[3])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and `cargo test --benches` probe with flags
    }
    if let Ok(role) = std::env::var("FLX_CLIENT_ROLE") {
        return client_role(&role);
    }
    let objects = env("FLX_CLIENT_OBJECTS", 1_000_000);
    let matching = env("FLX_CLIENT_MATCH", 100_000).min(objects);
    let tmp = tempfile::Builder::new()
        .prefix("tandem-flx-client-bench-")
        .tempdir()
        .expect("the bench directory");
    let dir = tmp.path().to_path_buf();
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
    // As an app does before writing (realm-kotlin's `waitForSynchronization`): objects written
    // while the set is pending are outside the active set, erased here and sent back by the
    // bootstrap.
    runtime
        .block_on(writer_session.wait_for_subscriptions(None, WAIT))
        .expect("the writer's subscription");
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

    // 2. Baseline: a fresh full-sync client of /items (STATE), in its own process.
    let pid = server.pid();
    reset_peak(&pid);
    let sent_before = sent_bytes(server.metrics_port);
    let (baseline, baseline_count, _, baseline_client_peak) =
        run_client("full", &dir.join("baseline.sqlite"), &server, matching);
    let baseline_sent = sent_bytes(server.metrics_port) - sent_before;
    let baseline_server_peak = vm(&pid, "VmHWM:");
    assert_eq!(baseline_count, matching, "the baseline has every object");

    // 3. A fresh flexible sync client subscribing to `matching` of them, in its own process.
    let server_before = vm(&pid, "VmRSS:");
    reset_peak(&pid);
    let sent_before = sent_bytes(server.metrics_port);
    let (took, got, transferred, client_peak) =
        run_client("flexible", &dir.join("reader.sqlite"), &server, matching);
    let sent = sent_bytes(server.metrics_port) - sent_before;
    let server_peak = vm(&pid, "VmHWM:");
    assert_eq!(got, matching, "the bootstrap brought exactly the matches");
    println!(
        "bootstrap: {matching} of {objects} objects queryable in {took:.3} s; {:.2} MiB of \
         changesets, {:.2} MiB sent on the wire; peak memory server {server_peak:.1} MiB (RSS \
         before {server_before:.1}), client process {client_peak:.1} MiB",
        transferred / (1 << 20) as f64,
        sent / (1 << 20) as f64,
    );
    println!(
        "baseline: full-sync open_synced of a file of the same {matching} objects in \
         {baseline:.3} s; {:.2} MiB sent on the wire; peak memory server \
         {baseline_server_peak:.1} MiB, client process {baseline_client_peak:.1} MiB",
        baseline_sent / (1 << 20) as f64,
    );
    drop(server);
}
