//! Sync benchmark over loopback with TLS 1.3, a real `tandem-server` and real client sessions.
//!
//! - latency from a commit on client A to the results listener on client B running (p50, p99
//!   over 1,000 changes);
//! - 10,000 small changesets committed on A and received by B (changesets per second);
//! - offline backlogs (10,000 changesets of one object, 20 of 5,000) uploaded: time until all
//!   acknowledged, peak heap growth;
//! - a fresh client downloading 100,000 objects (`SYNC_BENCH_OBJECTS=<n>` for another number;
//!   they are written in transactions of 100,000, as one transaction's changeset is limited to
//!   15 MiB): time until queryable, peak heap of the process while it downloads, and bytes
//!   uncompressed and on the wire (through a counting proxy);
//! - the same state fetched as one STATE snapshot by `open_synced`, beside the history replay.
//!
//! Run: `cargo bench --features server --bench sync`; `SYNC_BENCH_ONLY=first-sync` runs only the
//! two fresh-client parts, `SYNC_BENCH_ONLY=backlog` only the offline backlog, `latency` and
//! `throughput` only parts 1 and 2.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::client::SyncConfig;
use tandem::model::{ClassSchema, PrimaryKey, Property, PropertyType, Schema, Value};
use tandem::server::TokenSigner;
use tandem::store::{Config, Database};

#[path = "common/counting.rs"]
mod counting;
use counting::{Counting, LIVE, PEAK};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[path = "common/loopback.rs"]
mod loopback;
use loopback::{session, start_server, SECRET};

fn schema() -> Schema {
    Schema::new(vec![ClassSchema::top_level(
        "Item",
        "_id",
        vec![
            Property::new("_id", PropertyType::Int),
            Property::new("name", PropertyType::String),
            Property::new("n", PropertyType::Int),
        ],
    )])
    .unwrap()
}

fn count(db: &Database) -> usize {
    db.read()
        .unwrap()
        .query("Item", "TRUEPREDICATE", &[])
        .unwrap()
        .len()
}

/// A database in `dir` with the benchmark's schema and default options.
fn open(dir: &std::path::Path, name: impl AsRef<std::path::Path>) -> Arc<Database> {
    Arc::new(Database::open(dir.join(name), &schema(), Config::default()).unwrap())
}

fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "benchmark step did not finish in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A loopback TCP proxy in front of the server that counts the bytes the server sends through
/// it: the wire size (TLS records of compressed bodies) of what a client downloads.
fn counting_proxy(runtime: &tokio::runtime::Runtime, server_port: u16) -> (u16, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let counted = Arc::new(AtomicUsize::new(0));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let total = Arc::clone(&counted);
    runtime.spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", server_port)).await
            else {
                continue;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            let total = Arc::clone(&total);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = server_read.read(&mut buf).await {
                    if n == 0 || client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    total.fetch_add(n, Ordering::Relaxed);
                }
            });
        }
    });
    (port, counted)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let loopback = start_server("syncbench");
    let (dir, runtime, port) = (&loopback.dir, &loopback.runtime, loopback.port);

    // `SYNC_BENCH_ONLY=first-sync` runs parts 3 and 4 alone (for a heap profile of them),
    // `SYNC_BENCH_ONLY=backlog` part 2b alone, `SYNC_BENCH_ONLY=latency` part 1 and
    // `SYNC_BENCH_ONLY=throughput` part 2.
    let only = std::env::var("SYNC_BENCH_ONLY").ok();
    let run = |part: &str| match only.as_deref() {
        None => true,
        Some(o) => o == part,
    };
    if run("latency") {
        // 1. Latency: commit on A until B's results listener runs.
        let a = open(dir, "a.sqlite");
        let b = open(dir, "b.sqlite");
        let _sa = session(dir, port, &a, "/latency");
        let _sb = session(dir, port, &b, "/latency");
        let (tx, rx) = channel::<Instant>();
        let _token = b
            .observe_query("Item", "TRUEPREDICATE", &[], move |_| {
                let _ = tx.send(Instant::now());
            })
            .unwrap();
        let mut samples = Vec::new();
        for i in 0..1_000 {
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
        println!("commit on A -> listener on B, 1,000 changes over TLS loopback:");
        println!(
            "  p50 {:?}  p99 {:?}",
            percentile(&mut samples, 0.5),
            percentile(&mut samples, 0.99)
        );
    }
    if run("throughput") {
        // 2. Throughput: 10,000 small changesets from A received by B.
        let c = open(dir, "c.sqlite");
        let d = open(dir, "d.sqlite");
        let _sc = session(dir, port, &c, "/throughput");
        let _sd = session(dir, port, &d, "/throughput");
        let start = Instant::now();
        for i in 0..10_000 {
            let mut w = c.begin_write().unwrap();
            w.upsert("Item", PrimaryKey::Int(i), &[("n", Value::Int(i))])
                .unwrap();
            w.commit().unwrap();
        }
        let committed = start.elapsed();
        // Downloads apply in the server's order, which is C's commit order: once the last
        // object is on D, every one is (checked after). Polling a 10,000-row query instead
        // took 13% of the run's CPU (perf), on the cores the sync shares.
        wait_for(|| {
            d.read()
                .unwrap()
                .object("Item", &PrimaryKey::Int(9_999))
                .unwrap()
                .is_some()
        });
        let received = start.elapsed();
        assert_eq!(count(&d), 10_000, "every changeset arrived");
        println!("10,000 small changesets, committed on C and received by D:");
        println!(
            "  committed in {:.2} s, all received in {:.2} s: {:.0} changesets/s end to end",
            committed.as_secs_f64(),
            received.as_secs_f64(),
            10_000.0 / received.as_secs_f64()
        );
    }

    // 2b. Offline backlogs: changesets committed before the session starts, uploaded in
    // bounded batches. Small ones (10,000 of one object) and large ones (20 of 5,000 objects),
    // with the process's peak heap growth while they upload.
    if run("backlog") {
        for (name, changesets, objects) in [("small", 10_000i64, 1i64), ("large", 20, 5_000)] {
            let h = open(dir, format!("h-{name}.sqlite"));
            for c in 0..changesets {
                let mut w = h.begin_write().unwrap();
                for o in 0..objects {
                    let i = c * objects + o;
                    w.upsert("Item", PrimaryKey::Int(i), &[("n", Value::Int(i))])
                        .unwrap();
                }
                w.commit().unwrap();
            }
            let last = h.last_local_version().unwrap();
            let base = LIVE.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            let start = Instant::now();
            let _sh = session(dir, port, &h, &format!("/backlog-{name}"));
            // Polled on the upload cursor alone (a few key lookups, nothing decoded).
            wait_for(|| h.sync_progress().unwrap().upload_client_version >= last);
            let uploaded = start.elapsed();
            let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
            println!(
                "{changesets} changesets of {objects} object(s) committed offline, then uploaded:"
            );
            println!(
                "  all acknowledged {:.2} s after the session started ({:.0} changesets/s); \
                 peak heap growth {:.1} MiB",
                uploaded.as_secs_f64(),
                changesets as f64 / uploaded.as_secs_f64(),
                peak as f64 / (1024.0 * 1024.0)
            );
        }
    }

    if !run("first-sync") {
        loopback.server.shutdown();
        // Dropping `loopback` removes its directory.
        return;
    }

    // 3. A fresh client downloading 100,000 objects (or `SYNC_BENCH_OBJECTS`).
    let objects: i64 = std::env::var("SYNC_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let e = open(dir, "e.sqlite");
    for start in (0..objects).step_by(100_000) {
        let mut w = e.begin_write().unwrap();
        for i in start..(start + 100_000).min(objects) {
            w.create(
                "Item",
                PrimaryKey::Int(i),
                &[
                    ("name", Value::String(format!("item {i}"))),
                    ("n", Value::Int(i)),
                ],
            )
            .unwrap();
        }
        w.commit().unwrap();
    }
    let history_bytes: usize = e.history().unwrap().iter().map(|c| c.encode().len()).sum();
    let _se = session(dir, port, &e, "/bulk");
    wait_for(|| e.pending_uploads(1).unwrap().is_empty());
    drop(_se);
    let (proxy_port, wire_bytes) = counting_proxy(runtime, port);
    let f = open(dir, "f.sqlite");
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let target = e.sync_progress().unwrap().latest_server_version;
    let start = Instant::now();
    let _sf = session(dir, proxy_port, &f, "/bulk");
    // Poll the (cheap) download cursor, not a 100,000-row query: the download is applied in one
    // transaction, so once the cursor moves every object is queryable.
    wait_for(|| f.sync_progress().unwrap().download_server_version >= target);
    let elapsed = start.elapsed();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    assert_eq!(count(&f), objects as usize, "every object is queryable");
    println!("fresh client downloading {objects} objects:");
    println!(
        "  queryable after {:.2} s (goal 0.4 s per 100,000); peak heap growth of the process {:.1} MiB",
        elapsed.as_secs_f64(),
        peak as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  changesets {history_bytes} bytes uncompressed; {} bytes on the wire from the server \
         (TLS, compressed bodies, handshake included): {:.2}:1",
        wire_bytes.load(Ordering::Relaxed),
        history_bytes as f64 / wire_bytes.load(Ordering::Relaxed).max(1) as f64
    );

    // 4. The same state through STATE: `open_synced` on an empty file.
    let (proxy_port, wire_bytes) = counting_proxy(runtime, port);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let config = SyncConfig {
        url: format!("wss://localhost:{proxy_port}/"),
        path: "/bulk".into(),
        token: TokenSigner::hs256(SECRET)
            .sign("bench", now + 3600, &["*"])
            .expect("HS256 signing cannot fail"),
        ca_file: Some(dir.join("cert.pem")),
        ..SyncConfig::default()
    };
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let start = Instant::now();
    let (g, _sg) = runtime
        .block_on(tandem::client::open_synced(
            dir.join("g.sqlite"),
            schema(),
            Config::default(),
            config,
            None,
        ))
        .unwrap();
    let state_elapsed = start.elapsed();
    let state_peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    assert_eq!(count(&g), objects as usize, "every object is queryable");
    println!("the same {objects} objects through STATE (open_synced on an empty file):");
    println!(
        "  queryable after {:.2} s (history replay above: {:.2} s); peak heap growth {:.1} MiB; \
         {} bytes on the wire",
        state_elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        state_peak as f64 / (1024.0 * 1024.0),
        wire_bytes.load(Ordering::Relaxed)
    );
    loopback.server.shutdown();
    // Dropping `loopback` removes its directory.
}
