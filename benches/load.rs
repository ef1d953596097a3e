//! Load benchmark (issue 13, "Prove it"): one release-built `tandem-server` process (spawned,
//! plain `ws://` on loopback) and, in this process, raw protocol clients:
//!
//! 1. `IDLE` authenticated sessions and `ACTIVE` ones, spread over `PATHS` server paths (every
//!    session binds one path with a fresh client file and downloads it);
//! 2. steady load: one change per second per path, uploaded in turn by that path's active
//!    clients (`CreateObject` + `Update` of an integer holding the send time in microseconds);
//!    every other session of the path receives it as DOWNLOAD;
//! 3. the same with a flood client uploading to path 0 as fast as its acknowledgements come;
//! 4. the same with `SLOW` unauthenticated connections beside them, each trickling an HTTP
//!    upgrade request one byte every few seconds.
//!
//! Reported per phase: changes sent, downloads expected and received, fan-out latency p50/p99
//! (upload sent to DOWNLOAD arrival at another session of the path), the server's CPU
//! (user + system time over wall time, /proc) and resident memory; and memory per session
//! (resident memory after the sessions are bound minus before, over the sessions).
//!
//! Run: `cargo bench --features server --bench load`, sized by environment variables:
//! `TANDEM_LOAD_IDLE` (default 200), `TANDEM_LOAD_ACTIVE` (40), `TANDEM_LOAD_PATHS` (10),
//! `TANDEM_LOAD_SLOW` (100), `TANDEM_LOAD_SECONDS` per phase (10), `TANDEM_LOAD_CONNECT`
//! (concurrent handshakes while connecting, 64), `TANDEM_LOAD_SERVER_ARGS` (extra server flags,
//! space-separated), `TANDEM_LOAD_PROCESSES` (server processes, 1; more need
//! `--database postgres://...` in `TANDEM_LOAD_SERVER_ARGS`: sessions are spread over them in
//! turn, the schema uploads and the flood client use the first, and memory and CPU are the sum
//! over all). The size: IDLE=10000 ACTIVE=2000 PATHS=100 SLOW=1000 (needs about
//! 13,000 descriptors in each process).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{self, SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tandem::changeset::{
    AddColumn, AddTable, Changeset, ColumnCollection, ColumnType, FieldPath, Instruction, Payload,
    PayloadType, PrimaryKey, PrimaryKeySpec, TableKind, Update,
};
use tandem::protocol::{self, ClientMessage, Limits, ServerMessage, UploadEntry};
use tandem::server::TokenSigner;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const SECRET: &str = "load benchmark secret, 32 bytes";

type Ws = WebSocketStream<TcpStream>;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Milliseconds since 2015-01-01 (changeset timestamps).
fn origin_timestamp() -> u64 {
    (micros() / 1000).saturating_sub(1_420_070_400_000)
}

/// Phases: 0 setup, 1 steady, 2 with a flood client, 3 with slow connections.
const PHASES: usize = 4;

/// Object keys carry the phase they were sent in, above this many bits.
const PHASE_SHIFT: u32 = 40;

/// What the clients record.
struct Stats {
    phase: AtomicUsize,
    /// Per phase of sending: fan-out latencies in microseconds.
    latencies: Mutex<Vec<Vec<u64>>>,
    /// Per phase of sending: changes received by other sessions.
    received: Vec<AtomicU64>,
    /// Per phase, per path: changes acknowledged.
    sent: Vec<Vec<AtomicU64>>,
    next_key: AtomicU64,
}

impl Stats {
    /// A fresh object key, tagged with the current phase.
    fn key(&self) -> (usize, i64) {
        let phase = self.phase.load(Ordering::Relaxed);
        let n = self.next_key.fetch_add(1, Ordering::Relaxed);
        (phase, ((phase as u64) << PHASE_SHIFT | n) as i64)
    }

    fn record(&self, key: i64, latency: u64) {
        let phase = ((key as u64) >> PHASE_SHIFT) as usize;
        if phase < PHASES {
            self.received[phase].fetch_add(1, Ordering::Relaxed);
            self.latencies.lock().unwrap()[phase].push(latency);
        }
    }
}

/// The server process: its pid's /proc figures.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// User + system CPU time in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }
}

/// The servers together: memory and CPU summed.
struct Servers(Vec<Server>);

impl Servers {
    fn rss_kib(&self) -> u64 {
        self.0.iter().map(Server::rss_kib).sum()
    }

    fn cpu_seconds(&self) -> f64 {
        self.0.iter().map(Server::cpu_seconds).sum()
    }
}

fn start_server(dir: &std::path::Path, index: usize) -> Server {
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let extra = std::env::var("TANDEM_LOAD_SERVER_ARGS").unwrap_or_default();
    let child = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
        .args(["--insecure-ws", "--listen", &addr.to_string()])
        .args([
            "--data-dir",
            &dir.join(format!("data-{index}")).display().to_string(),
        ])
        .args(["--jwt-secret-file", &secret.display().to_string()])
        .args(["--log-level", "warn"])
        .args(extra.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tandem-server runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, addr }
}

async fn connect(addr: SocketAddr, token: &str) -> Ws {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        protocol::client_offer().parse().unwrap(),
    );
    headers.insert("Authorization", format!("Bearer {token}").parse().unwrap());
    // Small buffers: thousands of these live in this process.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
        .await
        .expect("upgrade")
        .0
}

async fn send(ws: &mut SplitSink<Ws, Message>, m: ClientMessage) {
    ws.send(Message::Binary(m.encode().into()))
        .await
        .expect("send");
}

async fn recv(ws: &mut SplitStream<Ws>) -> Option<ServerMessage> {
    loop {
        match ws.next().await? {
            Ok(Message::Binary(b)) => return ServerMessage::parse(&b, &Limits::default()).ok(),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// A bound session: BIND with a fresh file, IDENT, the first DOWNLOAD.
async fn bind(
    addr: SocketAddr,
    token: &str,
    path: &str,
) -> (SplitSink<Ws, Message>, SplitStream<Ws>, u64) {
    let (mut tx, mut rx) = connect(addr, token).await.split();
    send(
        &mut tx,
        ClientMessage::Bind {
            session: 1,
            path: path.into(),
            token: String::new(),
            need_client_file_ident: true,
            is_subserver: false,
        },
    )
    .await;
    let Some(ServerMessage::Ident {
        client_file_ident,
        client_file_ident_salt,
        ..
    }) = recv(&mut rx).await
    else {
        panic!("expected IDENT for {path}")
    };
    send(
        &mut tx,
        ClientMessage::Ident {
            session: 1,
            client_file_ident,
            client_file_ident_salt,
            download_server_version: 0,
            download_client_version: 0,
            latest_server_version: 0,
            latest_server_version_salt: 0,
            query: None,
        },
    )
    .await;
    let mut cursor = 0;
    loop {
        match recv(&mut rx).await {
            Some(ServerMessage::Download {
                download_server_version,
                downloadable_bytes,
                ..
            }) => {
                cursor = cursor.max(download_server_version);
                if downloadable_bytes == 0 {
                    break;
                }
            }
            Some(_) => {}
            None => panic!("closed while binding {path}"),
        }
    }
    (tx, rx, cursor)
}

fn schema() -> Changeset {
    let mut cs = Changeset::new();
    let t = cs.intern("T");
    let id = cs.intern("_id");
    let n = cs.intern("n");
    cs.push(Instruction::AddTable(AddTable {
        table: t,
        kind: TableKind::TopLevel(PrimaryKeySpec {
            field: id,
            key_type: PayloadType::Int,
            nullable: false,
        }),
    }));
    cs.push(Instruction::AddColumn(AddColumn {
        table: t,
        field: n,
        column_type: ColumnType::Value(PayloadType::Int),
        nullable: false,
        collection: ColumnCollection::Single,
    }));
    cs
}

/// `CreateObject T[key]`, `Update T[key].n = now in microseconds`.
fn change(key: i64) -> Vec<u8> {
    let mut cs = Changeset::new();
    let t = cs.intern("T");
    let n = cs.intern("n");
    cs.push(Instruction::CreateObject {
        table: t,
        object: PrimaryKey::Int(key),
    });
    cs.push(Instruction::Update(Update {
        path: FieldPath {
            table: t,
            object: PrimaryKey::Int(key),
            field: n,
            path: Default::default(),
        },
        value: Payload::Int(micros() as i64),
        is_default: false,
        prior_size: 0,
    }));
    cs.encode()
}

/// The (key, send time) of each change in a DOWNLOAD.
fn sent_at(entries: &[protocol::DownloadEntry]) -> Vec<(i64, u64)> {
    let mut out = Vec::new();
    for entry in entries {
        let Ok(cs) = Changeset::decode(&entry.changeset) else {
            continue;
        };
        for i in &cs.instructions {
            if let Instruction::Update(Update {
                path:
                    FieldPath {
                        object: PrimaryKey::Int(key),
                        ..
                    },
                value: Payload::Int(t),
                ..
            }) = i
            {
                out.push((*key, *t as u64));
            }
        }
    }
    out
}

fn upload(version: u64, base: u64, key: i64) -> ClientMessage {
    ClientMessage::Upload {
        session: 1,
        progress_client_version: version,
        progress_server_version: base,
        locked_server_version: 0,
        entries: vec![UploadEntry {
            client_version: version,
            last_integrated_server_version: base,
            origin_timestamp: origin_timestamp(),
            origin_file_ident: 0,
            changeset: change(key),
        }],
    }
}

/// Reads a session's messages for ever, recording the latency of other clients' changes.
/// `acks` (active clients) receives this client's upload acknowledgements and cursors.
async fn receive(
    mut rx: SplitStream<Ws>,
    stats: Arc<Stats>,
    acks: Option<tokio::sync::mpsc::UnboundedSender<(u64, u64)>>,
) {
    while let Some(message) = recv(&mut rx).await {
        if let ServerMessage::Download {
            entries,
            upload_client_version,
            download_server_version,
            ..
        } = message
        {
            let now = micros();
            for (key, t) in sent_at(&entries) {
                stats.record(key, now.saturating_sub(t));
            }
            if let Some(acks) = &acks {
                let _ = acks.send((upload_client_version, download_server_version));
            }
        }
    }
}

/// A bound session that uploads: its sending half, its acknowledgements and download cursor
/// (from its receiving task), and its last client version.
struct Uploader {
    tx: SplitSink<Ws, Message>,
    acks: tokio::sync::mpsc::UnboundedReceiver<(u64, u64)>,
    base: u64,
    version: u64,
}

impl Uploader {
    /// Binds to `path`; its downloads are recorded in `stats`.
    async fn bind(addr: SocketAddr, token: &str, path: &str, stats: &Arc<Stats>) -> Uploader {
        let (tx, rx, base) = bind(addr, token, path).await;
        let (ack_tx, acks) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(receive(rx, Arc::clone(stats), Some(ack_tx)));
        Uploader {
            tx,
            acks,
            base,
            version: 0,
        }
    }

    /// Takes in the cursors received so far.
    fn catch_up(&mut self) {
        while let Ok((_, cursor)) = self.acks.try_recv() {
            self.base = self.base.max(cursor);
        }
    }

    /// Uploads one change and waits for its acknowledgement; counts it for `path_index` in the
    /// phase it was sent in. `false` if the connection ended.
    async fn change(&mut self, stats: &Stats, path_index: usize) -> bool {
        self.catch_up();
        self.version += 1;
        let (phase, key) = stats.key();
        send(&mut self.tx, upload(self.version, self.base, key)).await;
        loop {
            match self.acks.recv().await {
                Some((acked, cursor)) => {
                    self.base = self.base.max(cursor);
                    if acked >= self.version {
                        break;
                    }
                }
                None => return false,
            }
        }
        stats.sent[phase][path_index].fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// An active client: binds (counted in `bound`), then uploads one change every `period`,
/// starting after `offset`, while `running`.
#[allow(clippy::too_many_arguments)]
async fn active(
    addr: SocketAddr,
    token: String,
    path: String,
    path_index: usize,
    period: Duration,
    offset: Duration,
    stats: Arc<Stats>,
    running: Arc<std::sync::atomic::AtomicBool>,
    bound: Arc<AtomicUsize>,
) {
    let mut client = Uploader::bind(addr, &token, &path, &stats).await;
    bound.fetch_add(1, Ordering::Relaxed);
    while !running.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(offset).await;
    let mut ticks = tokio::time::interval(period);
    loop {
        ticks.tick().await;
        if !running.load(Ordering::Relaxed) || !client.change(&stats, path_index).await {
            return;
        }
    }
}

/// Binds to `path` (then sends `bound`), and while `flooding` uploads back to back, each
/// change after the previous acknowledgement. Stays bound afterwards.
async fn flood(
    addr: SocketAddr,
    token: String,
    path: String,
    stats: Arc<Stats>,
    flooding: Arc<std::sync::atomic::AtomicBool>,
    bound: tokio::sync::oneshot::Sender<()>,
) {
    let mut client = Uploader::bind(addr, &token, &path, &stats).await;
    let _ = bound.send(());
    while !flooding.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.catch_up();
    }
    while flooding.load(Ordering::Relaxed) {
        if !client.change(&stats, 0).await {
            return;
        }
    }
    // Keep the session bound (it still receives path 0's changes).
    std::future::pending::<()>().await
}

/// An unauthenticated connection that trickles an upgrade request, one byte per `every`.
async fn slow(addr: SocketAddr, every: Duration) {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return;
    };
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    for byte in request.iter().cycle() {
        if tcp.write_all(&[*byte]).await.is_err() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (a filter) is ignored.
    let idle = env("TANDEM_LOAD_IDLE", 200);
    let active_n = env("TANDEM_LOAD_ACTIVE", 40).max(1);
    let paths = env("TANDEM_LOAD_PATHS", 10).clamp(1, active_n);
    let slow_n = env("TANDEM_LOAD_SLOW", 100);
    let seconds = env("TANDEM_LOAD_SECONDS", 10) as u64;
    let concurrency = env("TANDEM_LOAD_CONNECT", 64).max(1);

    let tmp = tempfile::Builder::new()
        .prefix("tandem-load-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let processes = env("TANDEM_LOAD_PROCESSES", 1).max(1);
    let mut server = Servers((0..processes).map(|i| start_server(&dir, i)).collect());
    let addrs: Vec<SocketAddr> = server.0.iter().map(|s| s.addr).collect();
    let addr = addrs[0];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let token = TokenSigner::hs256(SECRET.as_bytes())
        .sign(
            "load",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 24 * 3600,
            &["*"],
        )
        .unwrap();
    let path_name = |i: usize| format!("/load/{i}");
    let stats = Arc::new(Stats {
        phase: AtomicUsize::new(0),
        latencies: Mutex::new(vec![Vec::new(); PHASES]),
        received: (0..PHASES).map(|_| AtomicU64::new(0)).collect(),
        sent: (0..PHASES)
            .map(|_| (0..paths).map(|_| AtomicU64::new(0)).collect())
            .collect(),
        next_key: AtomicU64::new(1),
    });
    println!(
        "load: {idle} idle + {active_n} active sessions over {paths} paths and {processes} \
         server process(es), {slow_n} slow connections, {seconds} s per phase"
    );
    runtime.block_on(async {
        // Each path's schema first, so that sessions download it at bind.
        for i in 0..paths {
            let (mut tx, mut rx, _) = bind(addr, &token, &path_name(i)).await;
            let cs = schema();
            send(
                &mut tx,
                ClientMessage::Upload {
                    session: 1,
                    progress_client_version: 1,
                    progress_server_version: 0,
                    locked_server_version: 0,
                    entries: vec![UploadEntry {
                        client_version: 1,
                        last_integrated_server_version: 0,
                        origin_timestamp: origin_timestamp(),
                        origin_file_ident: 0,
                        changeset: cs.encode(),
                    }],
                },
            )
            .await;
            while let Some(m) = recv(&mut rx).await {
                if matches!(
                    m,
                    ServerMessage::Download {
                        upload_client_version: 1,
                        ..
                    }
                ) {
                    break;
                }
            }
        }
    });
    let rss_before = server.rss_kib();

    // Idle sessions.
    let started = Instant::now();
    let sessions_per_path: Arc<Mutex<HashMap<usize, u64>>> = Arc::default();
    runtime.block_on(async {
        let stats = Arc::clone(&stats);
        let counts = Arc::clone(&sessions_per_path);
        stream::iter(0..idle)
            .map(|i| {
                let addrs = addrs.clone();
                let token = token.clone();
                let stats = Arc::clone(&stats);
                let counts = Arc::clone(&counts);
                async move {
                    let path = i % paths;
                    let at = addrs[(i / paths) % processes];
                    let (tx, rx, _) = bind(at, &token, &path_name(path)).await;
                    *counts.lock().unwrap().entry(path).or_default() += 1;
                    tokio::spawn(async move {
                        let _keep = tx;
                        receive(rx, stats, None).await;
                    });
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<()>>()
            .await;
    });
    let bind_seconds = started.elapsed().as_secs_f64();
    let rss_idle = server.rss_kib();

    // Active sessions: each path gets one change per second, from its clients in turn.
    let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let per_path = active_n.div_ceil(paths);
    let period = Duration::from_secs(per_path as u64);
    let bound = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    for i in 0..active_n {
        let path = i % paths;
        let turn = i / paths;
        *sessions_per_path.lock().unwrap().entry(path).or_default() += 1;
        runtime.spawn(active(
            addrs[turn % processes],
            token.clone(),
            path_name(path),
            path,
            period,
            Duration::from_secs(turn as u64),
            Arc::clone(&stats),
            Arc::clone(&running),
            Arc::clone(&bound),
        ));
        if i % concurrency == concurrency - 1 {
            // Let the handshakes of this batch through before the next.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Wait until every active session is bound.
    while bound.load(Ordering::Relaxed) < active_n {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {} of {active_n} active sessions bound",
            bound.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let bind_active_seconds = started.elapsed().as_secs_f64();
    let rss_bound = server.rss_kib();
    let sessions = (idle + active_n) as f64;
    println!(
        "bound {idle} idle sessions in {bind_seconds:.1} s, {active_n} active in \
         {bind_active_seconds:.1} s; server RSS {} MiB before, {} MiB with idle sessions, {} MiB \
         with all: {:.1} KiB per session",
        rss_before / 1024,
        rss_idle / 1024,
        rss_bound / 1024,
        (rss_bound.saturating_sub(rss_before)) as f64 / sessions
    );

    // The flood client binds to path 0 now and floods in phase 2 only.
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    runtime.spawn(flood(
        addr,
        token.clone(),
        path_name(0),
        Arc::clone(&stats),
        Arc::clone(&flooding),
        bound_tx,
    ));
    runtime.block_on(bound_rx).expect("the flood client binds");
    *sessions_per_path.lock().unwrap().entry(0).or_default() += 1;

    // The phases. Each change is attributed to the phase it was sent in, so the counts of a
    // phase are complete once every sender has stopped and deliveries have drained.
    running.store(true, Ordering::Relaxed);
    let names = [
        String::new(),
        "steady".to_owned(),
        "with a flood client on path 0".to_owned(),
        format!("with {slow_n} slow unauthenticated connections"),
    ];
    let mut measured = [(0.0, 0); PHASES];
    for (phase, measured) in measured.iter_mut().enumerate().skip(1) {
        stats.phase.store(phase, Ordering::Relaxed);
        flooding.store(phase == 2, Ordering::Relaxed);
        if phase == 3 {
            for i in 0..slow_n {
                runtime.spawn(slow(addrs[i % processes], Duration::from_secs(5)));
            }
        }
        let cpu = server.cpu_seconds();
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(seconds));
        let cpu = (server.cpu_seconds() - cpu) / t.elapsed().as_secs_f64();
        *measured = (cpu, server.rss_kib());
    }
    running.store(false, Ordering::Relaxed);
    flooding.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(3));
    let counts = sessions_per_path.lock().unwrap().clone();
    for phase in 1..PHASES {
        let sent: Vec<u64> = stats.sent[phase]
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect();
        let expected: u64 = sent
            .iter()
            .enumerate()
            .map(|(p, n)| n * counts.get(&p).copied().unwrap_or(1).saturating_sub(1))
            .sum();
        let mut latencies = std::mem::take(&mut stats.latencies.lock().unwrap()[phase]);
        latencies.sort_unstable();
        let (cpu, rss) = measured[phase];
        println!(
            "{}: {} changes ({} on path 0), {} of {} downloads received, fan-out p50 {:.2} ms \
             p99 {:.2} ms max {:.2} ms, server CPU {:.0}% of one core, RSS {} MiB",
            names[phase],
            sent.iter().sum::<u64>(),
            sent[0],
            stats.received[phase].load(Ordering::Relaxed),
            expected,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
            100.0 * cpu,
            rss / 1024
        );
    }

    for s in &mut server.0 {
        let _ = s.child.kill();
        let _ = s.child.wait();
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
}
