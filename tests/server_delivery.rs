//! The per-connection session loop under hostile and unlucky clients (issue 13): delivery that
//! never loses a change, downloads streamed with back-pressure, per-connection idle timeout,
//! the BIND deadline, no inflation before authentication, WebSocket pings, rate limits and
//! fairness, graceful shutdown. Plain `ws://` on loopback, small configurable limits.
#![cfg(feature = "server")]

mod server_log;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tandem::changeset::{
    AddColumn, AddTable, Changeset, ColumnCollection, ColumnType, FieldPath, Instruction, Payload,
    PayloadType, PrimaryKey, PrimaryKeySpec, TableKind, Update,
};
use tandem::protocol::{self, ClientMessage, Limits, ServerMessage, UploadEntry};
use tandem::server::{start, Authenticator, RunningServer, ServerConfig, TokenSigner};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

const SECRET: &[u8] = b"delivery test secret";
/// Longest wait for one expected message: generous, as 6 processes share 2 cores.
const WAIT: Duration = Duration::from_secs(60);

struct Fixture {
    server: RunningServer,
    /// The server's scratch directory, removed on drop (after the server, the field before).
    _dir: tempfile::TempDir,
}

/// A scratch directory named after `name`, removed when the returned guard is dropped.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tandem-delivery-{name}-"))
        .tempdir()
        .unwrap()
}

async fn fixture(name: &str, tweak: impl FnOnce(&mut ServerConfig)) -> Fixture {
    let dir = scratch(name);
    let mut config = ServerConfig {
        allow_plain_ws: true,
        ..ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().join("data"),
            Authenticator::hs256(SECRET),
        )
    };
    tweak(&mut config);
    Fixture {
        server: start(config).await.unwrap(),
        _dir: dir,
    }
}

fn token(subject: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    TokenSigner::hs256(SECRET)
        .sign(subject, now + 3600, &["*"])
        .expect("HS256 signing cannot fail")
}

/// An upgraded connection with a bearer token for `subject`; `receive_buffer`: a small
/// SO_RCVBUF (which also stops the kernel from growing it), so that a client that does not
/// read fills its buffers after a few KiB.
async fn connect_as(f: &Fixture, subject: &str, receive_buffer: Option<u32>) -> Ws {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let tcp = socket.connect(f.server.local_addr).await.unwrap();
    upgrade(tcp, subject).await
}

/// The WebSocket upgrade of `tcp` with a bearer token for `subject`.
async fn upgrade(tcp: TcpStream, subject: &str) -> Ws {
    let mut request = format!("ws://{}/sync", tcp.peer_addr().unwrap())
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        protocol::client_offer().parse().unwrap(),
    );
    headers.insert(
        "Authorization",
        format!("Bearer {}", token(subject)).parse().unwrap(),
    );
    tokio_tungstenite::client_async(request, tcp)
        .await
        .unwrap()
        .0
}

async fn connect(f: &Fixture) -> Ws {
    connect_as(f, "tester", None).await
}

async fn send(ws: &mut Ws, m: ClientMessage) {
    ws.send(Message::Binary(m.encode().into())).await.unwrap();
}

/// The next sync message.
async fn recv(ws: &mut Ws) -> ServerMessage {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no message in time")
            .expect("connection closed")
            .expect("connection failed");
        if let Message::Binary(b) = m {
            return ServerMessage::parse(&b, &Limits::default()).unwrap();
        }
    }
}

/// The next ERROR (skipping DOWNLOADs): its code and `try_again`.
async fn recv_error(ws: &mut Ws) -> (u64, bool) {
    loop {
        match recv(ws).await {
            ServerMessage::Error {
                code, try_again, ..
            } => return (code, try_again),
            ServerMessage::Download { .. } => continue,
            other => panic!("expected ERROR, got {other:?}"),
        }
    }
}

/// BIND `session` to `path` with a fresh client file, IDENT; returns the first DOWNLOAD.
async fn bind(ws: &mut Ws, session: u64, path: &str) -> ServerMessage {
    send(
        ws,
        ClientMessage::Bind {
            session,
            path: path.into(),
            token: String::new(),
            need_client_file_ident: true,
            is_subserver: false,
        },
    )
    .await;
    let ServerMessage::Ident {
        client_file_ident,
        client_file_ident_salt,
        ..
    } = recv(ws).await
    else {
        panic!("expected IDENT")
    };
    send(
        ws,
        ClientMessage::Ident {
            session,
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
    let reply = recv(ws).await;
    assert!(matches!(reply, ServerMessage::Download { .. }), "{reply:?}");
    reply
}

/// A changeset creating object `key` of table `T` with string field `s` = `text`.
fn change(key: i64, text: &str) -> Vec<u8> {
    let mut cs = Changeset::new();
    let t = cs.intern("T");
    let id = cs.intern("_id");
    let s = cs.intern("s");
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
        field: s,
        column_type: ColumnType::Value(PayloadType::String),
        nullable: false,
        collection: ColumnCollection::Single,
    }));
    cs.push(Instruction::CreateObject {
        table: t,
        object: PrimaryKey::Int(key),
    });
    cs.push(Instruction::Update(Update {
        path: FieldPath {
            table: t,
            object: PrimaryKey::Int(key),
            field: s,
            path: Default::default(),
        },
        value: Payload::String(text.into()),
        is_default: false,
        prior_size: 0,
    }));
    cs.encode()
}

/// `len` printable ASCII characters from a xorshift generator (compresses poorly).
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b' ' + (x % 95) as u8)
        })
        .collect()
}

fn upload(session: u64, client_version: u64, changeset: Vec<u8>) -> ClientMessage {
    ClientMessage::Upload {
        session,
        progress_client_version: client_version,
        progress_server_version: 0,
        locked_server_version: 0,
        entries: vec![UploadEntry {
            client_version,
            last_integrated_server_version: 0,
            origin_timestamp: client_version,
            origin_file_ident: 0,
            changeset,
        }],
    }
}

/// Uploads `count` changes on `session` (client versions 1 to `count`) one after the other,
/// each after the acknowledgement of the one before (or until `stop`); returns how many were
/// acknowledged.
async fn write(ws: &mut Ws, session: u64, count: u64, text: usize, stop: &AtomicBool) -> u64 {
    for cv in 1..=count {
        if stop.load(Ordering::Acquire) {
            return cv - 1;
        }
        send(ws, upload(session, cv, change(cv as i64, &noise(cv, text)))).await;
        loop {
            match recv(ws).await {
                ServerMessage::Download {
                    upload_client_version,
                    ..
                } if upload_client_version >= cv => break,
                ServerMessage::Download { .. } => {}
                other => panic!("expected the acknowledgement of {cv}, got {other:?}"),
            }
        }
    }
    count
}

/// Reads DOWNLOADs until the download cursor reaches `latest`; the server versions received,
/// in order.
async fn read_until(ws: &mut Ws, latest: u64) -> Vec<u64> {
    let mut versions = Vec::new();
    loop {
        let ServerMessage::Download {
            download_server_version,
            entries,
            ..
        } = recv(ws).await
        else {
            continue;
        };
        versions.extend(entries.iter().map(|e| e.server_version));
        if download_server_version >= latest {
            return versions;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_session_gets_every_change_of_its_path_beside_idle_connections_and_a_flood() {
    const CHANGES: u64 = 1_100; // more than the 1,024 slots of the old broadcast channel
    let f = fixture("slow", |_| {}).await;
    // Idle upgraded connections, bound to nothing: never woken.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(connect(&f).await);
    }
    let mut reader = connect_as(&f, "reader", Some(8 << 10)).await;
    bind(&mut reader, 1, "/a").await;
    let stop = Arc::new(AtomicBool::new(false));
    // A flood on another path for as long as the test runs.
    let flooded = {
        let mut flood = connect_as(&f, "flood", None).await;
        bind(&mut flood, 1, "/b").await;
        let stop = Arc::clone(&stop);
        tokio::spawn(async move { write(&mut flood, 1, 100_000, 16, &stop).await })
    };
    // The writer on /a; the reader does not read meanwhile.
    let mut writer = connect(&f).await;
    bind(&mut writer, 1, "/a").await;
    let written = write(&mut writer, 1, CHANGES, 2_000, &AtomicBool::new(false)).await;
    assert_eq!(written, CHANGES);
    let versions = read_until(&mut reader, CHANGES).await;
    stop.store(true, Ordering::Release);
    let flood_changes = flooded.await.unwrap();
    assert_eq!(
        versions,
        (1..=CHANGES).collect::<Vec<_>>(),
        "every change of /a, in order"
    );
    assert!(flood_changes > 0, "the flood ran beside it");
    let m = f.server.metrics();
    let text = m.encode();
    assert!(
        text.contains("tandem_fanout_seconds_count ")
            && !text.contains("tandem_fanout_seconds_count 0\n"),
        "fan-out latency recorded: {text}"
    );
    // The reader's and the writer's, once the server has seen the flood's connection end.
    let until = std::time::Instant::now() + WAIT;
    while m.sessions_open.get() != 2 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(m.sessions_open.get(), 2);
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_stream_one_bounded_batch_at_a_time_to_a_client_that_does_not_read() {
    const CHANGES: u64 = 64;
    const TEXT: usize = 256 << 10; // 64 x 256 KiB: 16 MiB of history
    let f = fixture("stream", |c| c.sessions.download_batch = 64 << 10).await;
    let mut writer = connect(&f).await;
    bind(&mut writer, 1, "/big").await;
    write(&mut writer, 1, CHANGES, TEXT, &AtomicBool::new(false)).await;

    let m = f.server.metrics();
    let before = m.bytes_sent.get();
    let mut reader = connect_as(&f, "reader", Some(16 << 10)).await;
    let ServerMessage::Download {
        entries: first,
        download_server_version,
        ..
    } = bind(&mut reader, 1, "/big").await
    else {
        unreachable!()
    };
    assert_eq!(first.len(), 1, "a 64 KiB batch holds one 256 KiB entry");
    assert_eq!(download_server_version, 1);
    // The reader stops reading: the server stops producing once the socket is full.
    let mut stalled = m.bytes_sent.get();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = m.bytes_sent.get();
        if now == stalled {
            break;
        }
        stalled = now;
    }
    // Now it reads everything, in order.
    let mut versions = vec![1];
    versions.extend(read_until(&mut reader, CHANGES).await);
    assert_eq!(versions, (1..=CHANGES).collect::<Vec<_>>());
    let total = m.bytes_sent.get() - before;
    let held = stalled - before;
    eprintln!("sent while the client did not read: {held} of {total} bytes");
    assert!(
        held < total / 2,
        "the server kept producing for a client that did not read: {held} of {total} bytes"
    );
    assert!(m.downloads.get() >= CHANGES, "one batch per change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_is_the_connections_own_not_restarted_by_a_busy_path() {
    let f = fixture("idle", |c| c.idle_timeout = Duration::from_secs(1)).await;
    let mut silent = connect(&f).await;
    bind(&mut silent, 1, "/busy").await;
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let mut writer = connect(&f).await;
        bind(&mut writer, 1, "/busy").await;
        let stop = Arc::clone(&stop);
        // Keeps the path busy (and itself alive) until the silent connection is closed.
        tokio::spawn(async move { write(&mut writer, 1, 100_000, 8, &stop).await })
    };
    // Downloads keep arriving for /busy, yet the silent connection times out.
    let (code, try_again) = recv_error(&mut silent).await;
    assert_eq!((code, try_again), (100, true));
    assert!(!busy.is_finished(), "the path was busy all along");
    stop.store(true, Ordering::Release);
    busy.await.unwrap();
    let text = f.server.metrics().encode();
    assert!(
        text.contains("tandem_connections_refused_total{reason=\"idle\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_binds_no_session_is_closed_at_the_bind_deadline() {
    let f = fixture("bind-deadline", |c| {
        c.sessions.bind_timeout = Duration::from_secs(1)
    })
    .await;
    let mut lingering = connect(&f).await;
    // PINGs keep it from being idle, not from binding nothing.
    let closed = async {
        loop {
            send(
                &mut lingering,
                ClientMessage::Ping {
                    timestamp: 1,
                    rtt: 0,
                },
            )
            .await;
            match recv(&mut lingering).await {
                ServerMessage::Pong { .. } => {}
                ServerMessage::Error {
                    code, try_again, ..
                } => return (code, try_again),
                other => panic!("{other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(closed.await, (100, true));
    // A connection that binds in time stays.
    let mut bound = connect(&f).await;
    bind(&mut bound, 1, "/p").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    send(
        &mut bound,
        ClientMessage::Ping {
            timestamp: 2,
            rtt: 0,
        },
    )
    .await;
    assert!(matches!(
        recv(&mut bound).await,
        ServerMessage::Pong { timestamp: 2 }
    ));
    let text = f.server.metrics().encode();
    assert!(
        text.contains("tandem_connections_refused_total{reason=\"bind_timeout\"} 1"),
        "{text}"
    );
}

/// An UPLOAD or TRANSACT header declaring `declared` inflated bytes, with a zlib stream that
/// inflates to 1 MiB of zeros (a bomb: inflating it is refused as 110 only after the work).
fn bomb(name: &str, declared: u64) -> Vec<u8> {
    let zeros = tandem::changeset::compression::compress(&vec![0u8; 1 << 20]);
    let header = match name {
        "upload" => format!("upload 1 1 {declared} {} 0 0 0\n", zeros.len()),
        _ => format!("transact 1 7 1 0 0 1 {declared} {}\n", zeros.len()),
    };
    let mut m = header.into_bytes();
    m.extend_from_slice(&zeros);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_are_inflated_only_for_an_authenticated_session() {
    let f = fixture("inflate", |_| {}).await;
    for name in ["upload", "transact"] {
        // No session: 106, not the 110 inflating would give.
        let mut ws = connect(&f).await;
        ws.send(Message::Binary(bomb(name, 100).into()))
            .await
            .unwrap();
        assert_eq!(recv_error(&mut ws).await.0, 106, "{name} without BIND");
        // A bound session before IDENT: 109.
        let mut ws = connect(&f).await;
        send(
            &mut ws,
            ClientMessage::Bind {
                session: 1,
                path: "/i".into(),
                token: String::new(),
                need_client_file_ident: true,
                is_subserver: false,
            },
        )
        .await;
        assert!(matches!(recv(&mut ws).await, ServerMessage::Ident { .. }));
        ws.send(Message::Binary(bomb(name, 100).into()))
            .await
            .unwrap();
        assert_eq!(recv_error(&mut ws).await.0, 109, "{name} before IDENT");
        // A session that sent IDENT: the body is inflated, and the bomb refused.
        let mut ws = connect(&f).await;
        bind(&mut ws, 1, "/i").await;
        ws.send(Message::Binary(bomb(name, 100).into()))
            .await
            .unwrap();
        assert_eq!(recv_error(&mut ws).await.0, 110, "{name} after IDENT");
    }
    let text = f.server.metrics().encode();
    for (code, count) in [(106, 2), (109, 2), (110, 2)] {
        assert!(
            text.contains(&format!("tandem_errors_total{{code=\"{code}\"}} {count}")),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_ping_frames_are_answered_with_pongs() {
    let f = fixture("ping", |_| {}).await;
    let mut ws = connect(&f).await;
    for payload in [&b"proxy"[..], b"", b"0123456789"] {
        ws.send(Message::Ping(payload.to_vec().into()))
            .await
            .unwrap();
        let answer = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no pong")
            .expect("closed")
            .unwrap();
        assert_eq!(answer, Message::Pong(payload.to_vec().into()));
    }
    // The connection is still good for syncing.
    bind(&mut ws, 1, "/ping").await;
    assert_eq!(
        f.server
            .metrics()
            .errors
            .get_or_create(&vec![("code", "103".into())])
            .get(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_slowed_and_another_client_on_its_path_still_syncs() {
    let f = fixture("fair", |c| {
        c.sessions.connection_messages_per_second = 20;
        c.sessions.user_messages_per_second = 40;
    })
    .await;
    let mut observer = connect_as(&f, "observer", None).await;
    bind(&mut observer, 1, "/shared").await;
    let flood_sent = Arc::new(AtomicU64::new(0));
    let acknowledged = Arc::new(AtomicU64::new(0));
    // The flood: UPLOADs pipelined as fast as the socket takes them, acknowledgements read
    // beside them.
    let flood = {
        let mut ws = connect_as(&f, "flood", None).await;
        bind(&mut ws, 1, "/shared").await;
        let (mut sink, mut stream) = ws.split();
        let acknowledged = Arc::clone(&acknowledged);
        let reader = tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                if let Message::Binary(b) = m {
                    if let Ok(ServerMessage::Download {
                        upload_client_version,
                        ..
                    }) = ServerMessage::parse(&b, &Limits::default())
                    {
                        acknowledged.fetch_max(upload_client_version, Ordering::AcqRel);
                    }
                }
            }
        });
        let sent = Arc::clone(&flood_sent);
        let writer = tokio::spawn(async move {
            for cv in 1.. {
                let m = upload(1, cv, change(1_000_000 + cv as i64, "flood"));
                if sink.send(Message::Binary(m.encode().into())).await.is_err() {
                    break;
                }
                sent.store(cv, Ordering::Release);
            }
        });
        (reader, writer)
    };
    // Let the flood get going past its burst (20 messages), then a normal client writes once.
    while acknowledged.load(Ordering::Acquire) < 25 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut normal = connect_as(&f, "normal", None).await;
    bind(&mut normal, 1, "/shared").await;
    send(&mut normal, upload(1, 1, change(7, "normal"))).await;
    let mine = loop {
        match recv(&mut normal).await {
            ServerMessage::Download {
                upload_client_version: 1,
                latest_server_version,
                ..
            } => break latest_server_version,
            ServerMessage::Download { .. } => {}
            other => panic!("{other:?}"),
        }
    };
    // The observer gets the normal client's change while the flood goes on.
    let seen = read_until(&mut observer, mine).await;
    assert!(
        seen.contains(&mine),
        "the normal client's change was delivered"
    );
    assert!(!flood.1.is_finished(), "the flood was still running");
    // The flood's writer may be blocked on a full socket the server drains at 20 messages a
    // second: stop it rather than wait.
    flood.1.abort();
    flood.0.abort();
    let sent = flood_sent.load(Ordering::Acquire);
    let limited = f
        .server
        .metrics()
        .rate_limited
        .get_or_create(&vec![("limit", "messages".into())])
        .get();
    assert!(limited > 0, "the flood ({sent} uploads) was delayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_acknowledges_the_integration_in_flight_then_closes() {
    const ENTRIES: u64 = 300;
    let f = fixture("shutdown", |_| {}).await;
    let mut ws = connect(&f).await;
    bind(&mut ws, 1, "/s").await;
    let mut idle = connect(&f).await;
    bind(&mut idle, 1, "/other").await;
    // One UPLOAD of many entries: its integration takes a while.
    let entries = (1..=ENTRIES)
        .map(|cv| UploadEntry {
            client_version: cv,
            last_integrated_server_version: 0,
            origin_timestamp: cv,
            origin_file_ident: 0,
            changeset: change(cv as i64, &noise(cv, 64)),
        })
        .collect();
    send(
        &mut ws,
        ClientMessage::Upload {
            session: 1,
            progress_client_version: ENTRIES,
            progress_server_version: 0,
            locked_server_version: 0,
            entries,
        },
    )
    .await;
    // Shut down once the server has started on it.
    let m = f.server.metrics();
    while m.uploads.get() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let shutdown = f.server.shutdown_graceful(WAIT);
    let client = async {
        let ack = recv(&mut ws).await;
        let error = recv(&mut ws).await;
        // Then the close frame.
        let end = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
        (ack, error, end)
    };
    let (all_gone, (ack, error, end)) = tokio::join!(shutdown, client);
    assert!(
        matches!(
            ack,
            ServerMessage::Download {
                upload_client_version: ENTRIES,
                ..
            }
        ),
        "the upload in flight was integrated and acknowledged: {ack:?}"
    );
    assert!(
        matches!(
            error,
            ServerMessage::Error {
                code: 100,
                try_again: true,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(matches!(
        end,
        None | Some(Ok(Message::Close(_))) | Some(Err(_))
    ));
    assert_eq!(recv_error(&mut idle).await, (100, true));
    assert!(all_gone, "every connection ended");
    assert_eq!(f.server.connections(), 0);
    // No new connection is accepted.
    assert!(
        TcpStream::connect(f.server.local_addr).await.is_err()
            || tokio_tungstenite::client_async(
                format!("ws://127.0.0.1:{}/", f.server.local_addr.port()),
                TcpStream::connect(f.server.local_addr).await.unwrap(),
            )
            .await
            .is_err()
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_tandem_server_down_gracefully() {
    let dir = scratch("sigterm");
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tandem-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--insecure-ws",
            "--jwt-secret-file",
        ])
        .arg(dir.path().join("secret"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_clear()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = server_log::listening_addr(child.stderr.take().unwrap());
    let mut ws = upgrade(TcpStream::connect(addr).await.unwrap(), "tester").await;
    bind(&mut ws, 1, "/term").await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(recv_error(&mut ws).await, (100, true));
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}
