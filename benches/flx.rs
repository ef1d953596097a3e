//! Flexible sync (FLX) benchmark: `tandem-server` in this process (plain `ws://` on loopback, an
//! App Services app with anonymous login) and raw clients speaking Realm's FLX wire protocol
//! (`com.mongodb.realm-query-sync#14`, `realm-wire-compat.md` section 4) with
//! `tandem::protocol::{ClientMessage, ServerMessage}`, as `tests/realm_dialect.rs` does.
//!
//! 1. **Bootstrap.** One FLX client fills the server's FLX file with `FLX_BENCH_OBJECTS` objects
//!    of class `Task` (`_id` ObjectId, `owner` String, `title` String, `done` Bool; 10 owners
//!    `u0`..`u9`) in large UPLOADs (5,000 objects per changeset, as many changesets per UPLOAD as
//!    fit the 16 MiB body limit of `src/protocol/limits.rs`). A fresh client binds with the empty
//!    set (version 0, which walks the whole history once), then sends QUERY version 1
//!    `owner == "u3"` (10% of the objects) and MARK. Reported: QUERY sent to MARK reply, the
//!    DOWNLOAD messages, bytes on the wire (sum of WebSocket message sizes, bodies compressed
//!    as sent) and uncompressed changeset bytes, objects received (`CreateObject`s), and
//!    `VmHWM`/`VmRSS` of this process (server *and* bench clients) before filling, after
//!    filling and after the bootstrap. Baseline: partition-based sync (PBS), a fresh client
//!    downloading a partition that holds the same number of objects (IDENT + MARK sent to
//!    MARK reply). Message bodies are only parsed after the MARK, so the times are the
//!    server's delivery, not the client's integration.
//! 2. **Fan-out.** On a second server, a FLX file of `FLX_BENCH_FANOUT_OBJECTS` objects and
//!    `FLX_BENCH_SESSIONS` sessions, each on its own WebSocket connection with its own
//!    anonymous user and client file, each subscribed to `owner == "o<k>"`; every even one to
//!    `(owner == "o<k>") OR (done == false)` (a second subscription, as realm-core joins them).
//!    One writer updates one object's title, `FLX_BENCH_WRITES` times per case: (a) an object
//!    only one session's query matches, (b) an object half of the sessions' queries match
//!    (`done == false`). Reported per case: UPLOAD sent to the last matching session receiving
//!    the DOWNLOAD carrying the change, and to the last session's download cursor passing it
//!    (non-matching sessions get an empty DOWNLOAD), p50/p99; the writer's acknowledgement; and
//!    the server's CPU time per write (user + system time of the server runtime's threads,
//!    `/proc/self/task/*/stat`, 10 ms ticks, summed over the writes). Baseline: the same with
//!    PBS sessions all bound to one partition holding the same objects (every session gets the
//!    change). Beside them, the transport's floor: as many plain WebSocket connections, one task
//!    each on the server's runtime, woken at once to write a DOWNLOAD of the PBS case's size
//!    (no sync, no storage); the time from the wake-up to the last read, and the runtime's CPU.
//!
//! The server's runtime (threads `tandem-srv`) and the clients' (`bench-cli`) are separate;
//! the machine's cores are shared. Nothing is retried: an ERROR, JSON_ERROR, QUERY_ERROR, close
//! or a 120 s silence ends the run with the last messages of that connection.
//!
//! Run, quick sizes (about 30 s on two cores, after the build):
//!
//! ```text
//! FLX_BENCH_OBJECTS=100000 FLX_BENCH_SESSIONS=100 nice cargo bench --features server --bench flx
//! ```
//!
//! Full sizes (the defaults: 1,000,000 objects, 1,000 sessions; about 4 minutes):
//!
//! ```text
//! nice cargo bench --features server --bench flx
//! ```
//!
//! Other knobs: `FLX_BENCH_FANOUT_OBJECTS` (10,000), `FLX_BENCH_WRITES` (writes per case, 20),
//! `FLX_BENCH_CONNECT` (concurrent logins and handshakes while connecting sessions, 32).

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{self, SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tandem::changeset::{
    AddColumn, AddTable, Changeset, ColumnCollection, ColumnType, FieldPath, Instruction, Payload,
    PayloadType, PrimaryKey, PrimaryKeySpec, TableKind, Update,
};
use tandem::model::ObjectId;
use tandem::protocol::limits::{max_frame_size, MAX_BODY_SIZE, MAX_ENTRY_HEADER_SIZE};
use tandem::protocol::{
    BatchState, ClientMessage, DownloadEntry, FlxQuery, Limits, ServerMessage, UploadEntry,
};
use tandem::server::app::AppConfig;
use tandem::server::{start, Authenticator, RunningServer, ServerConfig, TokenSigner};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

const APP: &str = "tandem-flx-bench";
const FLX_OFFER: &str = "com.mongodb.realm-query-sync#14";
const PBS_OFFER: &str = "com.mongodb.realm-sync#14";
/// realm-core's FLX BIND body.
const FLX_BIND: &str = "{\"schemaVersion\":0,\"sessionReason\":0}";
/// The PBS partitions (BIND paths: the partition value as Extended JSON).
const PBS_BOOTSTRAP: &str = "\"bench\"";
const PBS_FANOUT: &str = "\"fanout\"";
/// Owners of the bootstrap file's objects; the query takes one of them: 10%.
const OWNERS: u64 = 10;
/// Objects per uploaded changeset.
const OBJECTS_PER_CHANGESET: u64 = 5_000;
/// Objects of the fan-out file with `done == false` (owner `shared`): case (b) writes these.
const SHARED: u64 = 64;
/// Longest silence on a connection before the run is failed.
const WAIT: Duration = Duration::from_secs(120);
/// The server runtime's thread name (its CPU time is what "server CPU" counts).
const SERVER_THREADS: &str = "tandem-srv";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Milliseconds since 2015-01-01 (changeset origin timestamps).
fn origin_timestamp() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    ms.saturating_sub(1_420_070_400_000)
}

// ---- The process: memory and the server threads' CPU time ----

/// `VmHWM` and `VmRSS` of this process in KiB.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// User + system CPU seconds of the server runtime's threads (workers and blocking pool, kept
/// alive so that none exits with its time).
fn server_cpu() -> f64 {
    let mut ticks = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != SERVER_THREADS {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split(' ').collect();
        ticks += fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    }
    ticks as f64 / 100.0
}

// ---- The server ----

struct Server {
    server: RunningServer,
    runtime: tokio::runtime::Runtime,
    /// The server's scratch directory, removed when the server is dropped (after the runtime).
    _dir: tempfile::TempDir,
}

impl Server {
    /// A server with the app `APP` (anonymous login, `all-authenticated` partitions) on its own
    /// runtime, in a fresh temp directory.
    fn start(name: &str) -> Server {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tandem-{name}-"))
            .tempdir()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(SERVER_THREADS)
            .thread_keep_alive(Duration::from_secs(24 * 3600))
            .enable_all()
            .build()
            .unwrap();
        let app = AppConfig::new(
            APP,
            TokenSigner::hs256(b"flx benchmark app secret, 32 bytes"),
        );
        let server = runtime
            .block_on(start(ServerConfig {
                allow_plain_ws: true,
                app: Some(app),
                ..ServerConfig::new(
                    "127.0.0.1:0".parse().unwrap(),
                    dir.path().join("data"),
                    Authenticator::hs256(b"flx benchmark tandem secret, 32 bytes"),
                )
            }))
            .unwrap();
        Server {
            server,
            runtime,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr
    }

    fn stop(self) {
        self.server.shutdown();
        self.runtime.shutdown_timeout(Duration::from_secs(5));
        // The rest of `self` goes now: `_dir` removes the directory.
    }
}

// ---- Connections ----

/// Logs in a new anonymous user: its access token.
async fn login(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = "{\"provider\":\"anon-user\",\"options\":{\"device\":{}}}";
    let request = format!(
        "POST /api/client/v2.0/app/{APP}/auth/providers/anon-user/login HTTP/1.1\r\n\
         Host: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut tcp = TcpStream::connect(addr).await.expect("connect for login");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut answer))
        .await
        .expect("login answered in time")
        .expect("login answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "login: {answer}");
    let json = &answer[answer.find('{').unwrap()..=answer.rfind('}').unwrap()];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

/// The first line of a message, for traces.
fn header(bytes: &[u8]) -> &str {
    let end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end.min(300)]).unwrap_or("<not UTF-8>")
}

/// A message as traced: its header line, and the body too for errors.
fn trace_line(dir: &str, bytes: &[u8]) -> String {
    let h = header(bytes);
    if h.starts_with("error") || h.starts_with("json_error") || h.starts_with("query_error") {
        format!(
            "{dir} {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(600)])
        )
    } else {
        format!("{dir} {h} ({} bytes)", bytes.len())
    }
}

/// One client connection (one session, id 1), with the last messages it saw.
struct Conn {
    ws: Ws,
    name: String,
    trace: VecDeque<String>,
}

impl Conn {
    /// Logs in a new user and opens the Realm sync route with `offer`.
    async fn open(addr: SocketAddr, offer: &str, name: String) -> Conn {
        let token = login(addr).await;
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut request =
            format!("ws://{addr}/api/client/v2.0/app/{APP}/realm-sync?baas_at={token}")
                .into_client_request()
                .unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", offer.parse().unwrap());
        let config = WebSocketConfig::default()
            .read_buffer_size(16 << 10)
            .write_buffer_size(0)
            .max_message_size(Some(max_frame_size(MAX_BODY_SIZE)))
            .max_frame_size(Some(max_frame_size(MAX_BODY_SIZE)));
        let (ws, response) =
            tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
                .await
                .unwrap_or_else(|e| panic!("{name}: WebSocket upgrade: {e}"));
        let chosen = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert_eq!(chosen, offer, "{name}: negotiated protocol");
        Conn {
            ws,
            name,
            trace: VecDeque::new(),
        }
    }

    fn note(&mut self, line: String) {
        if self.trace.len() == 16 {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn fail(&self, why: &str) -> ! {
        let trace: Vec<&str> = self.trace.iter().map(String::as_str).collect();
        panic!(
            "{}: {why}\nlast messages (> sent, < received):\n  {}",
            self.name,
            trace.join("\n  ")
        )
    }

    async fn send(&mut self, m: &ClientMessage) {
        let bytes = m.encode();
        self.note(trace_line(">", &bytes));
        if let Err(e) = self.ws.send(Message::Binary(bytes.into())).await {
            self.fail(&format!("send: {e}"));
        }
    }

    /// The next binary message as received; an error message fails the run.
    async fn recv_raw(&mut self) -> Vec<u8> {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next()).await;
            match next {
                Err(_) => self.fail("no message for 120 s"),
                Ok(Some(Ok(Message::Binary(b)))) => {
                    self.note(trace_line("<", &b));
                    let h = header(&b);
                    if h.starts_with("error")
                        || h.starts_with("json_error")
                        || h.starts_with("query_error")
                    {
                        self.fail("the server sent an error");
                    }
                    return b.to_vec();
                }
                Ok(Some(Ok(Message::Close(frame)))) => self.fail(&format!("closed: {frame:?}")),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => self.fail(&format!("receive: {e}")),
                Ok(None) => self.fail("the connection ended"),
            }
        }
    }

    async fn recv(&mut self) -> ServerMessage {
        let bytes = self.recv_raw().await;
        ServerMessage::parse(&bytes, &Limits::default())
            .unwrap_or_else(|e| self.fail(&format!("unparsable message: {e}")))
    }

    /// Every message (as received) until the MARK reply `request_ident` of session 1.
    async fn until_mark_raw(&mut self, request_ident: u64) -> Vec<Vec<u8>> {
        let mark = format!("mark 1 {request_ident}");
        let mut out = Vec::new();
        loop {
            let b = self.recv_raw().await;
            if header(&b) == mark {
                return out;
            }
            out.push(b);
        }
    }
}

fn bind(path: &str, need_ident: bool) -> ClientMessage {
    ClientMessage::Bind {
        session: 1,
        path: path.into(),
        token: String::new(),
        need_client_file_ident: need_ident,
        is_subserver: false,
    }
}

fn ident(id: (u64, u64), query: Option<FlxQuery>) -> ClientMessage {
    ClientMessage::Ident {
        session: 1,
        client_file_ident: id.0,
        client_file_ident_salt: id.1,
        download_server_version: 0,
        download_client_version: 0,
        latest_server_version: 0,
        latest_server_version_salt: 0,
        query,
    }
}

fn mark(request_ident: u64) -> ClientMessage {
    ClientMessage::Mark {
        session: 1,
        request_ident,
    }
}

fn query(version: u64, body: &str) -> ClientMessage {
    ClientMessage::Query {
        session: 1,
        query: FlxQuery {
            version,
            body: body.into(),
        },
    }
}

/// A subscription set body with one query on Task.
fn task_set(q: &str) -> String {
    serde_json::json!({ "Task": q }).to_string()
}

/// BIND asking for an ident; the ident and salt.
async fn bind_fresh(c: &mut Conn, path: &str) -> (u64, u64) {
    c.send(&bind(path, true)).await;
    match c.recv().await {
        ServerMessage::Ident {
            client_file_ident,
            client_file_ident_salt,
            ..
        } => (client_file_ident, client_file_ident_salt),
        other => c.fail(&format!("IDENT expected, got {other:?}")),
    }
}

/// The largest download cursor of these messages (DOWNLOAD header field 2), read from the
/// header lines alone.
fn cursor_of(messages: &[Vec<u8>]) -> u64 {
    messages
        .iter()
        .filter_map(|b| {
            let h = header(b);
            h.starts_with("download ")
                .then(|| h.split(' ').nth(2)?.parse::<u64>().ok())
                .flatten()
        })
        .max()
        .unwrap_or(0)
}

/// A fresh FLX client file with the empty set (version 0), MARK 1 answered: the messages
/// before the MARK reply.
async fn flx_fresh(c: &mut Conn) -> Vec<Vec<u8>> {
    let id = bind_fresh(c, FLX_BIND).await;
    c.send(&ident(
        id,
        Some(FlxQuery {
            version: 0,
            body: "{}".into(),
        }),
    ))
    .await;
    c.send(&mark(1)).await;
    c.until_mark_raw(1).await
}

/// A fresh PBS client file of `partition`, downloaded (MARK 1 answered): the messages before
/// the MARK reply.
async fn pbs_fresh(c: &mut Conn, partition: &str) -> Vec<Vec<u8>> {
    let id = bind_fresh(c, partition).await;
    c.send(&ident(id, None)).await;
    c.send(&mark(1)).await;
    c.until_mark_raw(1).await
}

// ---- Changesets ----

fn oid(i: u64) -> PrimaryKey {
    let mut id = [0u8; 12];
    id[4..].copy_from_slice(&i.to_be_bytes());
    PrimaryKey::ObjectId(ObjectId(id))
}

fn schema() -> Changeset {
    let mut cs = Changeset::new();
    let task = cs.intern("Task");
    let id = cs.intern("_id");
    cs.push(Instruction::AddTable(AddTable {
        table: task,
        kind: TableKind::TopLevel(PrimaryKeySpec {
            field: id,
            key_type: PayloadType::ObjectId,
            nullable: false,
        }),
    }));
    for (name, ty) in [
        ("owner", PayloadType::String),
        ("title", PayloadType::String),
        ("done", PayloadType::Bool),
    ] {
        let field = cs.intern(name);
        cs.push(Instruction::AddColumn(AddColumn {
            table: task,
            field,
            column_type: ColumnType::Value(ty),
            nullable: false,
            collection: ColumnCollection::Single,
        }));
    }
    cs
}

fn set(cs: &mut Changeset, i: u64, field: &str, value: Payload) {
    let table = cs.intern("Task");
    let field = cs.intern(field);
    cs.push(Instruction::Update(Update {
        path: FieldPath {
            table,
            object: oid(i),
            field,
            path: Default::default(),
        },
        value,
        is_default: false,
        prior_size: 0,
    }));
}

/// Objects `range` created whole, each `(owner, done)` by `shape`.
fn objects(range: std::ops::Range<u64>, shape: &dyn Fn(u64) -> (String, bool)) -> Vec<u8> {
    let mut cs = Changeset::new();
    let table = cs.intern("Task");
    for i in range {
        let (owner, done) = shape(i);
        cs.push(Instruction::CreateObject {
            table,
            object: oid(i),
        });
        set(&mut cs, i, "owner", Payload::String(owner.into()));
        set(
            &mut cs,
            i,
            "title",
            Payload::String(format!("task number {i}").into()),
        );
        set(&mut cs, i, "done", Payload::Bool(done));
    }
    cs.encode()
}

/// The title of object `i` set to the write marker `w#<id>`.
fn retitle(i: u64, id: u64) -> Vec<u8> {
    let mut cs = Changeset::new();
    set(
        &mut cs,
        i,
        "title",
        Payload::String(format!("w#{id}").into()),
    );
    cs.encode()
}

/// What some DOWNLOADs carried.
#[derive(Default)]
struct Received {
    downloads: usize,
    wire: usize,
    uncompressed: usize,
    changesets: usize,
    objects: usize,
    /// FLX: (query version, batch state) of each DOWNLOAD.
    batches: Vec<(u64, BatchState)>,
}

/// Parses messages received as they came (bodies compressed) and counts them.
fn count(messages: &[Vec<u8>]) -> Received {
    let mut r = Received::default();
    for bytes in messages {
        r.wire += bytes.len();
        let Ok(ServerMessage::Download { flx, entries, .. }) =
            ServerMessage::parse(bytes, &Limits::default())
        else {
            continue;
        };
        r.downloads += 1;
        if let Some(f) = flx {
            r.batches.push((f.query_version, f.batch_state));
        }
        for e in &entries {
            r.uncompressed += e.changeset.len();
            r.changesets += 1;
            let cs = Changeset::decode(&e.changeset).expect("a changeset the server sent decodes");
            r.objects += cs
                .instructions
                .iter()
                .filter(|i| matches!(i, Instruction::CreateObject { .. }))
                .count();
        }
    }
    r
}

/// The write markers (`w#<id>` titles) the DOWNLOAD `m` carries.
fn markers(m: &ServerMessage) -> Vec<u64> {
    let ServerMessage::Download { entries, .. } = m else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        let Ok(cs) = Changeset::decode(&e.changeset) else {
            continue;
        };
        for i in &cs.instructions {
            if let Instruction::Update(Update {
                value: Payload::String(s),
                ..
            }) = i
            {
                if let Some(id) = s.strip_prefix("w#").and_then(|n| n.parse().ok()) {
                    out.push(id);
                }
            }
        }
    }
    out
}

// ---- Writing ----

/// A client that uploads: its connection, last client version and download cursor.
struct Writer {
    conn: Conn,
    version: u64,
    cursor: u64,
}

/// How a fill went.
struct Filled {
    seconds: f64,
    uploads: usize,
    changesets: usize,
    bytes: usize,
}

impl Writer {
    /// A writer on a new connection with `offer`: a fresh client file bound to `partition`
    /// (`None`: flexible sync, the empty set), its first download done.
    async fn open(addr: SocketAddr, offer: &str, name: &str, partition: Option<&str>) -> Writer {
        let mut conn = Conn::open(addr, offer, name.into()).await;
        let before = match partition {
            None => flx_fresh(&mut conn).await,
            Some(p) => pbs_fresh(&mut conn, p).await,
        };
        Writer {
            conn,
            version: 0,
            cursor: cursor_of(&before),
        }
    }

    /// One UPLOAD entry for `changeset`, at the next client version.
    fn entry(&mut self, changeset: Vec<u8>) -> UploadEntry {
        self.version += 1;
        UploadEntry {
            client_version: self.version,
            last_integrated_server_version: self.cursor,
            origin_timestamp: origin_timestamp(),
            origin_file_ident: 0,
            changeset,
        }
    }

    fn upload(&self, entries: Vec<UploadEntry>) -> ClientMessage {
        ClientMessage::Upload {
            session: 1,
            progress_client_version: entries.last().map_or(0, |e| e.client_version),
            progress_server_version: self.cursor,
            locked_server_version: 0,
            entries,
        }
    }

    /// Reads until the acknowledgement of client version `version`: the latest server version
    /// it reports.
    async fn ack(&mut self, version: u64) -> u64 {
        loop {
            if let ServerMessage::Download {
                upload_client_version,
                download_server_version,
                latest_server_version,
                ..
            } = self.conn.recv().await
            {
                self.cursor = self.cursor.max(download_server_version);
                if upload_client_version >= version {
                    return latest_server_version;
                }
            }
        }
    }

    /// Uploads the schema (if `with_schema`) and objects `range`, at most two UPLOADs
    /// unacknowledged.
    async fn fill(
        &mut self,
        with_schema: bool,
        range: std::ops::Range<u64>,
        shape: &dyn Fn(u64) -> (String, bool),
    ) -> Filled {
        // A body holds the entries; keep a little room for rounding.
        let budget = MAX_BODY_SIZE - 4096;
        let started = Instant::now();
        let mut filled = Filled {
            seconds: 0.0,
            uploads: 0,
            changesets: 0,
            bytes: 0,
        };
        let mut in_flight: VecDeque<u64> = VecDeque::new();
        let mut entries: Vec<UploadEntry> = Vec::new();
        let mut body = 0;
        if with_schema {
            let e = self.entry(schema().encode());
            body += e.changeset.len() + MAX_ENTRY_HEADER_SIZE;
            entries.push(e);
        }
        let mut start = range.start;
        loop {
            let chunk = (start < range.end).then(|| {
                let end = (start + OBJECTS_PER_CHANGESET).min(range.end);
                let bytes = objects(start..end, shape);
                start = end;
                bytes
            });
            let flush = match &chunk {
                None => !entries.is_empty(),
                Some(bytes) => {
                    !entries.is_empty() && body + bytes.len() + MAX_ENTRY_HEADER_SIZE > budget
                }
            };
            if flush {
                while in_flight.len() >= 2 {
                    let v = in_flight.pop_front().unwrap();
                    self.ack(v).await;
                }
                let batch = std::mem::take(&mut entries);
                filled.uploads += 1;
                filled.changesets += batch.len();
                filled.bytes += batch.iter().map(|e| e.changeset.len()).sum::<usize>();
                in_flight.push_back(batch.last().unwrap().client_version);
                let m = self.upload(batch);
                self.conn.send(&m).await;
                body = 0;
            }
            let Some(bytes) = chunk else { break };
            body += bytes.len() + MAX_ENTRY_HEADER_SIZE;
            let e = self.entry(bytes);
            entries.push(e);
        }
        while let Some(v) = in_flight.pop_front() {
            self.ack(v).await;
        }
        filled.seconds = started.elapsed().as_secs_f64();
        filled
    }
}

// ---- Fan-out ----

/// A DOWNLOAD one fan-out session received: when, its cursor, the write markers it carried.
struct Event {
    session: usize,
    at: Instant,
    cursor: u64,
    markers: Vec<u64>,
}

/// A fan-out session: its sending half (kept open) and its receiving task.
struct Subscriber {
    _tx: SplitSink<Ws, Message>,
    task: tokio::task::JoinHandle<()>,
    cursor: u64,
    /// Objects received when it subscribed.
    objects: usize,
}

/// Reads session `session`'s messages for ever and reports each DOWNLOAD; anything else than
/// a DOWNLOAD or the end of the connection is printed.
async fn receive(mut rx: SplitStream<Ws>, session: usize, events: UnboundedSender<Event>) {
    while let Some(message) = rx.next().await {
        let bytes = match message {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Close(frame)) => {
                println!("  ! fan-out session {session} closed: {frame:?}");
                return;
            }
            Ok(_) => continue,
            Err(_) => return,
        };
        let at = Instant::now();
        match ServerMessage::parse(&bytes, &Limits::default()) {
            Ok(
                m @ ServerMessage::Download {
                    download_server_version,
                    ..
                },
            ) => {
                let _ = events.send(Event {
                    session,
                    at,
                    cursor: download_server_version,
                    markers: markers(&m),
                });
            }
            _ => println!(
                "  ! fan-out session {session} received {}",
                trace_line("<", &bytes)
            ),
        }
    }
}

/// Connects fan-out session `k`: FLX with `set` subscribed (version 1), or PBS bound to
/// `PBS_FANOUT` (`set` `None`); downloads, then hands its messages to [`receive`].
async fn subscriber(
    addr: SocketAddr,
    k: usize,
    set: Option<String>,
    events: UnboundedSender<Event>,
) -> Subscriber {
    let flx = set.is_some();
    let offer = if flx { FLX_OFFER } else { PBS_OFFER };
    let mut c = Conn::open(addr, offer, format!("fan-out session {k}")).await;
    let (cursor, objects) = match set {
        Some(body) => {
            let before = flx_fresh(&mut c).await;
            c.send(&query(1, &body)).await;
            c.send(&mark(2)).await;
            let got = c.until_mark_raw(2).await;
            (cursor_of(&before).max(cursor_of(&got)), count(&got).objects)
        }
        None => {
            let got = pbs_fresh(&mut c, PBS_FANOUT).await;
            // The partition's history is not parsed: only its objects would be counted.
            (cursor_of(&got), 0)
        }
    };
    let (tx, rx) = c.ws.split();
    Subscriber {
        _tx: tx,
        task: tokio::spawn(receive(rx, k, events)),
        cursor,
        objects,
    }
}

async fn subscribers(
    addr: SocketAddr,
    sessions: usize,
    concurrency: usize,
    set: impl Fn(usize) -> Option<String>,
    events: &UnboundedSender<Event>,
) -> Vec<Subscriber> {
    let mut subs: Vec<(usize, Subscriber)> = stream::iter(0..sessions)
        .map(|k| {
            let s = subscriber(addr, k, set(k), events.clone());
            async move { (k, s.await) }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    subs.sort_by_key(|(k, _)| *k);
    subs.into_iter().map(|(_, s)| s).collect()
}

/// One fan-out case's figures.
#[derive(Default)]
struct FanOut {
    /// UPLOAD sent to the last matching session receiving the change, ms.
    last_match: Vec<f64>,
    /// UPLOAD sent to the last session's cursor passing it, ms.
    last_cursor: Vec<f64>,
    /// UPLOAD sent to the writer's acknowledgement, ms.
    ack: Vec<f64>,
    /// Server CPU seconds over all writes.
    cpu: f64,
    /// Deliveries to sessions whose query does not match the object.
    unexpected: usize,
    /// Writes not delivered everywhere within 60 s, with what was missing.
    incomplete: Vec<String>,
}

/// `writes` writes by `writer`, each retitling the object `target(w)` names, which the
/// sessions in its set should receive; the others only see their cursor move.
async fn fan_out(
    writer: &mut Writer,
    events: &mut UnboundedReceiver<Event>,
    cursors: &mut [u64],
    writes: usize,
    next_id: &mut u64,
    target: impl Fn(usize) -> (u64, HashSet<usize>),
) -> FanOut {
    let sessions = cursors.len();
    let mut out = FanOut::default();
    let cpu = server_cpu();
    for w in 0..writes {
        let (object, expected) = target(w);
        *next_id += 1;
        let id = *next_id;
        let entry = writer.entry(retitle(object, id));
        let version = entry.client_version;
        let m = writer.upload(vec![entry]);
        let sent = Instant::now();
        writer.conn.send(&m).await;
        let latest = writer.ack(version).await;
        out.ack.push(sent.elapsed().as_secs_f64() * 1e3);
        let mut matched: Vec<Option<Instant>> = vec![None; sessions];
        let mut reached: Vec<Option<Instant>> = (0..sessions)
            .map(|k| (cursors[k] >= latest).then_some(sent))
            .collect();
        let (mut n_matched, mut n_reached) = (0, reached.iter().flatten().count());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while n_matched < expected.len() || n_reached < sessions {
            let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.recv()).await else {
                let missing: Vec<usize> = expected
                    .iter()
                    .copied()
                    .filter(|k| matched[*k].is_none())
                    .take(10)
                    .collect();
                out.incomplete.push(format!(
                    "write {w} (object {object}, server version {latest}): {n_matched} of {} \
                     matching sessions received it (missing e.g. {missing:?}), {n_reached} of \
                     {sessions} cursors reached it",
                    expected.len()
                ));
                break;
            };
            if e.cursor > cursors[e.session] {
                cursors[e.session] = e.cursor;
            }
            if e.cursor >= latest && reached[e.session].is_none() {
                reached[e.session] = Some(e.at);
                n_reached += 1;
            }
            if e.markers.contains(&id) {
                if !expected.contains(&e.session) {
                    out.unexpected += 1;
                } else if matched[e.session].is_none() {
                    matched[e.session] = Some(e.at);
                    n_matched += 1;
                }
            }
        }
        let last = |v: &[Option<Instant>]| {
            v.iter()
                .flatten()
                .max()
                .map(|t| t.saturating_duration_since(sent).as_secs_f64() * 1e3)
        };
        if let Some(ms) = last(&matched) {
            out.last_match.push(ms);
        }
        if let Some(ms) = last(&reached) {
            out.last_cursor.push(ms);
        }
    }
    out.cpu = server_cpu() - cpu;
    out
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

/// The transport's floor under the fan-out: `sessions` WebSocket connections on loopback
/// (plain, tokio-tungstenite as the server uses it), each served by its own task on the
/// server's runtime `server` that waits for a wake-up (a `watch` channel, as a server
/// connection waits on its `Notify`) and writes one DOWNLOAD as the PBS case sends it (one
/// retitle). The bench's runtime reads them. No sync, no storage, no parsing: what the same
/// wake-ups and writes cost on this machine, `rounds` times. Only `last_match` (and `cpu`)
/// are filled: the time from the wake-up to the last connection's read.
async fn transport_floor(
    server: &tokio::runtime::Handle,
    sessions: usize,
    rounds: usize,
    concurrency: usize,
) -> FanOut {
    let message = ServerMessage::Download {
        session: 1,
        download_server_version: 1_000,
        download_client_version: 0,
        latest_server_version: 1_000,
        latest_server_version_salt: 1 << 40,
        upload_client_version: 0,
        upload_server_version: 1_000,
        downloadable_bytes: 0,
        flx: None,
        entries: vec![DownloadEntry {
            server_version: 1_000,
            last_integrated_client_version: 0,
            origin_timestamp: 1 << 40,
            origin_file_ident: 2,
            original_changeset_size: 0,
            changeset: retitle(0, 1),
        }],
    }
    .encode();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (wake, woken) = tokio::sync::watch::channel(0u64);
    let acceptor = server.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (message, mut woken) = (message.clone(), woken.clone());
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while woken.changed().await.is_ok() {
                    if ws
                        .send(Message::Binary(message.clone().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let (events, mut arrivals) = unbounded_channel::<Instant>();
    // Each reader keeps its connection's sending half and reports every message it reads.
    let connections: Vec<Ws> = stream::iter(0..sessions)
        .map(|_| async move {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
                .await
                .expect("WebSocket upgrade");
            ws
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let readers: Vec<tokio::task::JoinHandle<()>> = connections
        .into_iter()
        .map(|ws| {
            let events = events.clone();
            tokio::spawn(async move {
                let (_tx, mut rx) = ws.split();
                while let Some(Ok(_)) = rx.next().await {
                    let _ = events.send(Instant::now());
                }
            })
        })
        .collect();
    let mut out = FanOut::default();
    let cpu = server_cpu();
    for round in 1..=rounds {
        let sent = Instant::now();
        wake.send_replace(round as u64);
        let mut last = sent;
        for _ in 0..sessions {
            match tokio::time::timeout(Duration::from_secs(60), arrivals.recv()).await {
                Ok(Some(at)) => last = last.max(at),
                _ => {
                    out.incomplete
                        .push(format!("round {round}: not every read arrived"));
                    break;
                }
            }
        }
        out.last_match.push((last - sent).as_secs_f64() * 1e3);
    }
    out.cpu = server_cpu() - cpu;
    acceptor.abort();
    for r in readers {
        r.abort();
    }
    out
}

fn print_fan_out(label: &str, f: &FanOut, writes: usize) {
    println!("  {label}:");
    println!(
        "    UPLOAD -> last matching session has the DOWNLOAD: p50 {:8.2} ms  p99 {:8.2} ms  \
         (n = {})",
        percentile(&f.last_match, 0.5),
        percentile(&f.last_match, 0.99),
        f.last_match.len()
    );
    println!(
        "    UPLOAD -> every session's cursor past it:         p50 {:8.2} ms  p99 {:8.2} ms",
        percentile(&f.last_cursor, 0.5),
        percentile(&f.last_cursor, 0.99)
    );
    println!(
        "    UPLOAD -> writer's acknowledgement:               p50 {:8.2} ms  p99 {:8.2} ms",
        percentile(&f.ack, 0.5),
        percentile(&f.ack, 0.99)
    );
    println!(
        "    server CPU per write: {:.1} ms ({:.2} s over {writes} writes)",
        f.cpu * 1e3 / writes as f64,
        f.cpu
    );
    if f.unexpected > 0 {
        println!(
            "    ! {} deliveries to sessions whose query does not match",
            f.unexpected
        );
    }
    for line in &f.incomplete {
        println!("    ! incomplete: {line}");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (a filter) is ignored.
    let n = env("FLX_BENCH_OBJECTS", 1_000_000) as u64;
    let sessions = env("FLX_BENCH_SESSIONS", 1_000).max(2);
    let fan_objects = (env("FLX_BENCH_FANOUT_OBJECTS", 10_000) as u64).max(SHARED + 1);
    let writes = env("FLX_BENCH_WRITES", 20).clamp(1, SHARED as usize);
    assert!(
        (sessions as u64) <= fan_objects - SHARED,
        "FLX_BENCH_FANOUT_OBJECTS must exceed FLX_BENCH_SESSIONS by {SHARED}: every session's \
         owner needs an object"
    );
    let concurrency = env("FLX_BENCH_CONNECT", 32).max(1);
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-cli")
        .enable_all()
        .build()
        .unwrap();
    println!(
        "flexible sync benchmark: tandem-server in this process (plain ws:// on loopback), \
         {n} objects to bootstrap from, {sessions} fan-out sessions over {fan_objects} objects, \
         {writes} writes per case"
    );

    // ---- 1. Bootstrap ----
    let server = Server::start("flx-bench-bootstrap");
    let addr = server.addr();
    let mem_before = memory();
    let matched = n.div_ceil(OWNERS);
    let owner_of = |i: u64| format!("u{}", i % OWNERS);
    client.block_on(async {
        let mut filler = Writer::open(addr, FLX_OFFER, "FLX filler", None).await;
        let shape = |i: u64| (owner_of(i), i % 2 == 0);
        let filled = filler.fill(true, 0..n, &shape).await;
        let mem_filled = memory();
        println!("1. bootstrap");
        println!(
            "  FLX fill: {n} objects in {:.1} s ({:.0} objects/s): {} UPLOADs, {} changesets, \
             {:.1} MiB of changesets",
            filled.seconds,
            n as f64 / filled.seconds,
            filled.uploads,
            filled.changesets,
            filled.bytes as f64 / (1 << 20) as f64
        );
        drop(filler);

        // A fresh FLX client: the empty set first (it walks the history), then the query.
        let mut reader = Conn::open(addr, FLX_OFFER, "FLX bootstrap client".into()).await;
        let started = Instant::now();
        let fresh = flx_fresh(&mut reader).await;
        let fresh_seconds = started.elapsed().as_secs_f64();
        let fresh = count(&fresh);
        let set = task_set("owner == \"u3\"");
        let started = Instant::now();
        reader.send(&query(1, &set)).await;
        reader.send(&mark(2)).await;
        let got = reader.until_mark_raw(2).await;
        let flx_seconds = started.elapsed().as_secs_f64();
        let mem_bootstrap = memory();
        let flx = count(&got);
        drop(reader);

        // Baseline: a PBS partition holding as many objects, downloaded by a fresh client.
        let mut pbs_filler = Writer::open(addr, PBS_OFFER, "PBS filler", Some(PBS_BOOTSTRAP)).await;
        let pbs_shape = |i: u64| ("u3".to_owned(), i % 2 == 0);
        let pbs_filled = pbs_filler.fill(true, 0..matched, &pbs_shape).await;
        drop(pbs_filler);
        let mut pbs_reader = Conn::open(addr, PBS_OFFER, "PBS download client".into()).await;
        let id = bind_fresh(&mut pbs_reader, PBS_BOOTSTRAP).await;
        let started = Instant::now();
        pbs_reader.send(&ident(id, None)).await;
        pbs_reader.send(&mark(1)).await;
        let got = pbs_reader.until_mark_raw(1).await;
        let pbs_seconds = started.elapsed().as_secs_f64();
        let mem_pbs = memory();
        let pbs = count(&got);
        drop(pbs_reader);

        println!(
            "  fresh FLX client, empty set (version 0): BIND -> MARK reply in {:.2} s \
             ({} DOWNLOADs, {:.1} MiB on the wire: the history walked before any bootstrap)",
            fresh_seconds,
            fresh.downloads,
            fresh.wire as f64 / (1 << 20) as f64
        );
        println!(
            "  PBS fill: {matched} objects in {:.1} s ({} UPLOADs, {} changesets)",
            pbs_filled.seconds, pbs_filled.uploads, pbs_filled.changesets
        );
        println!(
            "  {:<38} {:>22} {:>22}",
            "", "FLX bootstrap", "PBS fresh download"
        );
        println!(
            "  {:<38} {:>22} {:>22}",
            "what",
            "QUERY owner == \"u3\"",
            format!("partition {PBS_BOOTSTRAP}")
        );
        println!(
            "  {:<38} {:>20.3} s {:>20.3} s",
            "request -> MARK reply", flx_seconds, pbs_seconds
        );
        println!(
            "  {:<38} {:>22} {:>22}",
            "DOWNLOAD messages", flx.downloads, pbs.downloads
        );
        println!(
            "  {:<38} {:>22} {:>22}",
            "changesets", flx.changesets, pbs.changesets
        );
        println!(
            "  {:<38} {:>22} {:>22}",
            "objects received (CreateObject)", flx.objects, pbs.objects
        );
        println!(
            "  {:<38} {:>18.2} MiB {:>18.2} MiB",
            "bytes on the wire (WebSocket msgs)",
            flx.wire as f64 / (1 << 20) as f64,
            pbs.wire as f64 / (1 << 20) as f64
        );
        println!(
            "  {:<38} {:>18.2} MiB {:>18.2} MiB",
            "changeset bytes, uncompressed",
            flx.uncompressed as f64 / (1 << 20) as f64,
            pbs.uncompressed as f64 / (1 << 20) as f64
        );
        if flx.objects as u64 != matched {
            println!(
                "  ! the FLX bootstrap carried {} objects, {matched} match the query",
                flx.objects
            );
        }
        if pbs.objects as u64 != matched {
            println!(
                "  ! the PBS download carried {} objects, the partition holds {matched}",
                pbs.objects
            );
        }
        let states: Vec<String> = flx
            .batches
            .iter()
            .map(|(v, s)| format!("v{v}:{s:?}"))
            .collect();
        let last_ok = flx.batches.last() == Some(&(1, BatchState::LastInBatch))
            && flx.batches[..flx.batches.len() - 1]
                .iter()
                .all(|b| *b == (1, BatchState::MoreToCome));
        if !last_ok {
            println!("  ! FLX bootstrap batch states: {}", states.join(" "));
        }
        println!("  memory of this whole process (server and the bench's clients), VmHWM / VmRSS:");
        for (label, (hwm, rss)) in [
            ("before filling", mem_before),
            ("after filling", mem_filled),
            ("after the FLX bootstrap", mem_bootstrap),
            ("after the PBS download", mem_pbs),
        ] {
            println!(
                "    {label:<26} peak {:7.1} MiB  resident {:7.1} MiB",
                mib(hwm),
                mib(rss)
            );
        }
    });
    server.stop();

    // ---- 2. Fan-out ----
    let server = Server::start("flx-bench-fanout");
    let addr = server.addr();
    let normal = fan_objects - SHARED;
    // Object i < normal: owner o<i % sessions>, done; the last SHARED: owner "shared", open.
    let fan_shape = move |i: u64| {
        if i < normal {
            (format!("o{}", i % sessions as u64), true)
        } else {
            ("shared".to_owned(), false)
        }
    };
    let flx_set = |k: usize| {
        Some(if k % 2 == 0 {
            task_set(&format!("(owner == \"o{k}\") OR (done == false)"))
        } else {
            task_set(&format!("owner == \"o{k}\""))
        })
    };
    let expected_objects = |k: usize| {
        let own = (0..normal)
            .filter(|i| i % sessions as u64 == k as u64)
            .count();
        own + if k % 2 == 0 { SHARED as usize } else { 0 }
    };
    client.block_on(async {
        println!("2. fan-out: one writer retitles one object, {writes} times per case");
        let mut writer = Writer::open(addr, FLX_OFFER, "FLX writer", None).await;
        let filled = writer.fill(true, 0..fan_objects, &fan_shape).await;
        // The writer retitles objects it must see: a write outside a client's view is reverted
        // by a compensating write (docs/flexible-sync.md).
        writer
            .conn
            .send(&query(1, &task_set("TRUEPREDICATE")))
            .await;
        writer.conn.send(&mark(2)).await;
        let got = writer.conn.until_mark_raw(2).await;
        writer.cursor = writer.cursor.max(cursor_of(&got));
        let (events_tx, mut events) = unbounded_channel();
        let started = Instant::now();
        let subs = subscribers(addr, sessions, concurrency, flx_set, &events_tx).await;
        let setup = started.elapsed().as_secs_f64();
        let wrong: Vec<String> = subs
            .iter()
            .enumerate()
            .filter(|(k, s)| s.objects != expected_objects(*k))
            .take(5)
            .map(|(k, s)| format!("session {k}: {} of {}", s.objects, expected_objects(k)))
            .collect();
        let (hwm, rss) = memory();
        println!(
            "  FLX: {fan_objects} objects filled in {:.1} s; {sessions} sessions (one WebSocket \
             connection and anonymous user each) bound and bootstrapped in {setup:.1} s; \
             process peak {:.0} MiB, resident {:.0} MiB",
            filled.seconds,
            mib(hwm),
            mib(rss)
        );
        if !wrong.is_empty() {
            println!("  ! bootstraps with the wrong number of objects: {wrong:?}");
        }
        let mut cursors: Vec<u64> = subs.iter().map(|s| s.cursor).collect();
        let mut next_id = 0;
        // (a) One session's object: o<k> owns object k (k < normal), done, so only session k.
        let one = fan_out(
            &mut writer,
            &mut events,
            &mut cursors,
            writes,
            &mut next_id,
            |w| {
                let k = (w * 7919 + 1) % sessions;
                (k as u64, HashSet::from([k]))
            },
        )
        .await;
        // (b) A shared open object: the even sessions' `done == false`.
        let half = fan_out(
            &mut writer,
            &mut events,
            &mut cursors,
            writes,
            &mut next_id,
            |w| {
                (
                    normal + w as u64,
                    (0..sessions).filter(|k| k % 2 == 0).collect(),
                )
            },
        )
        .await;
        print_fan_out(
            &format!("FLX (a) object matching 1 of {sessions} sessions' queries"),
            &one,
            writes,
        );
        print_fan_out(
            &format!(
                "FLX (b) object matching {} of {sessions} sessions' queries",
                sessions.div_ceil(2)
            ),
            &half,
            writes,
        );
        for s in &subs {
            s.task.abort();
        }
        drop(subs);
        drop(writer);
        while events.try_recv().is_ok() {}

        // Baseline: PBS, every session bound to one partition holding the same objects.
        let mut writer = Writer::open(addr, PBS_OFFER, "PBS writer", Some(PBS_FANOUT)).await;
        let filled = writer.fill(true, 0..fan_objects, &fan_shape).await;
        let started = Instant::now();
        let subs = subscribers(addr, sessions, concurrency, |_| None, &events_tx).await;
        let setup = started.elapsed().as_secs_f64();
        let (hwm, rss) = memory();
        println!(
            "  PBS: {fan_objects} objects filled in {:.1} s; {sessions} sessions bound to \
             partition {PBS_FANOUT} and downloaded in {setup:.1} s; process peak {:.0} MiB, \
             resident {:.0} MiB",
            filled.seconds,
            mib(hwm),
            mib(rss)
        );
        let mut cursors: Vec<u64> = subs.iter().map(|s| s.cursor).collect();
        let all = fan_out(
            &mut writer,
            &mut events,
            &mut cursors,
            writes,
            &mut next_id,
            |w| (w as u64, (0..sessions).collect()),
        )
        .await;
        print_fan_out(
            &format!("PBS baseline: all {sessions} sessions on one partition"),
            &all,
            writes,
        );
        for s in &subs {
            s.task.abort();
        }
        drop(subs);
        let floor = transport_floor(server.runtime.handle(), sessions, writes, concurrency).await;
        println!(
            "  transport floor: {sessions} WebSocket connections on loopback, one task each on \
             the server's runtime, woken to write one DOWNLOAD of the PBS case's size:"
        );
        println!(
            "    wake-up -> last connection has read it:          p50 {:8.2} ms  p99 {:8.2} ms  \
             (n = {})",
            percentile(&floor.last_match, 0.5),
            percentile(&floor.last_match, 0.99),
            floor.last_match.len()
        );
        println!(
            "    server runtime CPU per round: {:.1} ms",
            floor.cpu * 1e3 / writes as f64
        );
        for line in &floor.incomplete {
            println!("    ! incomplete: {line}");
        }
    });
    server.stop();
    client.shutdown_timeout(Duration::from_secs(1));
}
