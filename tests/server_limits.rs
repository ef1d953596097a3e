//! What a peer may cost the server before and around its sessions (issue 13, items 1, 2, 11,
//! 12, 13, 14): WebSocket message limits before authentication, connection / unauthenticated /
//! session caps, the handshake deadline, parser range checks, long server paths and errors
//! without server paths, client file ident caps and expiry, clock skew. Loopback only, with
//! small configured limits.
#![cfg(feature = "server")]

mod live;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tandem::changeset::Changeset;
use tandem::protocol::{self, ClientMessage, ErrorCode, Limits, ServerMessage, UploadEntry};
use tandem::server::{
    start, Authenticator, ConnectionLimits, RunningServer, ServerConfig, ServerFile, TokenSigner,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

const SECRET: &[u8] = b"limits test secret";
/// How long a test waits for something that must happen (a liveness bound, not a speed claim).
const WAIT: Duration = Duration::from_secs(20);

struct Fixture {
    server: RunningServer,
    /// The server's scratch directory, removed on drop (after the server is shut down).
    dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.shutdown();
    }
}

/// A scratch directory named after `name`, removed when the returned guard is dropped.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tandem-limits-{name}-"))
        .tempdir()
        .unwrap()
}

async fn fixture(name: &str, limits: Limits, connection_limits: ConnectionLimits) -> Fixture {
    let dir = scratch(name);
    let server = start(ServerConfig {
        allow_plain_ws: true,
        limits,
        connection_limits,
        ..ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().join("data"),
            Authenticator::hs256(SECRET),
        )
    })
    .await
    .unwrap();
    Fixture { server, dir }
}

fn token() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    TokenSigner::hs256(SECRET)
        .sign("tester", now + 3600, &["*"])
        .unwrap()
}

async fn connect(addr: SocketAddr, bearer: Option<&str>) -> Result<Ws, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut request = format!("ws://127.0.0.1:{}/", addr.port())
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        protocol::client_offer().parse().unwrap(),
    );
    if let Some(t) = bearer {
        headers.insert("Authorization", format!("Bearer {t}").parse().unwrap());
    }
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tcp))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

async fn send(ws: &mut Ws, m: ClientMessage) {
    ws.send(Message::Binary(m.encode().into())).await.unwrap();
}

/// The next sync message, or `None` when the connection ends first.
async fn recv(ws: &mut Ws) -> Option<ServerMessage> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no message")
        {
            Some(Ok(Message::Binary(b))) => {
                return Some(ServerMessage::parse(&b, &Limits::default()).unwrap())
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

fn bind(session: u64, path: &str, need_ident: bool) -> ClientMessage {
    ClientMessage::Bind {
        session,
        path: path.into(),
        token: token(),
        need_client_file_ident: need_ident,
        is_subserver: false,
    }
}

fn error_of(m: Option<ServerMessage>) -> (u64, String, bool, u64) {
    match m {
        Some(ServerMessage::Error {
            code,
            message,
            try_again,
            session,
        }) => (code, message, try_again, session),
        other => panic!("expected an ERROR, got {other:?}"),
    }
}

/// BIND session 1 with a new client file and send IDENT; returns the first DOWNLOAD.
async fn bind_and_ident(ws: &mut Ws, path: &str) -> ServerMessage {
    send(ws, bind(1, path, true)).await;
    let Some(ServerMessage::Ident {
        client_file_ident,
        client_file_ident_salt,
        ..
    }) = recv(ws).await
    else {
        panic!("no IDENT");
    };
    send(
        ws,
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
    recv(ws).await.expect("no DOWNLOAD")
}

/// Opens a WebSocket by hand (no token) and returns the raw stream after the 101.
async fn raw_websocket(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: {}\r\n\r\n",
        protocol::client_offer()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// A masked client frame header (`fin`, `opcode`) declaring `len` payload bytes.
fn frame_header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]); // masking key 0: the payload is sent as is
    out
}

/// Reads one unmasked server frame: its opcode and payload.
async fn read_frame(tcp: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await.ok()?;
    let len = match head[1] & 0x7F {
        126 => u64::from(tcp.read_u16().await.ok()?),
        127 => tcp.read_u64().await.ok()?,
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    tcp.read_exact(&mut payload).await.ok()?;
    Some((head[0] & 0x0F, payload))
}

/// Issue item 1: a connection with no token that declares a huge message gets 104 as soon as
/// the frame header (or the fragment crossing the limit) arrives; the server reads no more
/// than the configured limit, however much the peer says it will send.
#[tokio::test]
async fn huge_unauthenticated_messages_are_cut_off_at_the_configured_limit() {
    let max_body = 4096;
    let limits = Limits {
        max_body,
        ..Limits::default()
    };
    let f = fixture("huge", limits, ConnectionLimits::default()).await;
    let frame_limit = protocol::limits::max_frame_size(max_body);
    // One frame declaring 63 MiB, then silence: answered without waiting for the payload.
    let mut victims = Vec::new();
    for _ in 0..5 {
        let mut tcp = raw_websocket(f.server.local_addr).await;
        tcp.write_all(&frame_header(true, 2, 63 << 20))
            .await
            .unwrap();
        tcp.write_all(&[b'x'; 100]).await.unwrap();
        victims.push(tcp);
    }
    for tcp in &mut victims {
        let (opcode, payload) = tokio::time::timeout(WAIT, read_frame(tcp))
            .await
            .unwrap()
            .expect("an ERROR frame");
        assert_eq!(opcode, 2);
        let (code, message, _, session) = error_of(Some(
            ServerMessage::parse(&payload, &Limits::default()).unwrap(),
        ));
        assert_eq!((code, session), (104, 0), "{message}");
        assert!(message.contains(&frame_limit.to_string()), "{message}");
    }
    // Fragments of 1 KiB each: accepted up to the limit, 104 right after the fragment that
    // crosses it (the peer then sends nothing more).
    let mut tcp = raw_websocket(f.server.local_addr).await;
    let fragment = vec![b'y'; 1024];
    let fragments_in_limit = frame_limit / 1024;
    for i in 0..=fragments_in_limit {
        let opcode = if i == 0 { 2 } else { 0 };
        tcp.write_all(&frame_header(false, opcode, 1024))
            .await
            .unwrap();
        tcp.write_all(&fragment).await.unwrap();
    }
    let (_, payload) = tokio::time::timeout(WAIT, read_frame(&mut tcp))
        .await
        .unwrap()
        .expect("an ERROR frame");
    let (code, ..) = error_of(Some(
        ServerMessage::parse(&payload, &Limits::default()).unwrap(),
    ));
    assert_eq!(code, 104);
    // A message within the limit is read and answered from its header line: an UPLOAD for a
    // session that was never bound is 106 before its (oversized) body is even looked at (the
    // parser's 104 for a body over `--max-body` after BIND and IDENT is in tests/server_net.rs).
    let mut ws = connect(f.server.local_addr, Some(&token())).await.unwrap();
    ws.send(Message::Binary(
        format!("upload 1 0 {} 0 0 0 0\n", max_body + 1)
            .into_bytes()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(error_of(recv(&mut ws).await).0, 106);
}

/// A peer still sending a message over the limit when the server answers 104 receives that
/// ERROR: the server keeps reading (and discarding) for a moment before it closes, so its
/// close is not a TCP reset that breaks the peer's writes and destroys the ERROR in flight
/// (found under qemu: a client cut off mid-upload saw "connection reset" instead of 104).
#[tokio::test]
async fn a_peer_cut_off_mid_message_still_receives_the_error() {
    let max_body = 4096;
    let limits = Limits {
        max_body,
        ..Limits::default()
    };
    let f = fixture("linger", limits, ConnectionLimits::default()).await;
    let mut tcp = raw_websocket(f.server.local_addr).await;
    let total = 8usize << 20;
    tcp.write_all(&frame_header(true, 2, total as u64))
        .await
        .unwrap();
    let chunk = vec![b'z'; 64 << 10];
    for sent in (0..total).step_by(chunk.len()) {
        if let Err(e) = tcp.write_all(&chunk).await {
            panic!("write failed after {sent} of {total} bytes: {e}");
        }
    }
    let (opcode, payload) = tokio::time::timeout(WAIT, read_frame(&mut tcp))
        .await
        .unwrap()
        .expect("the ERROR frame, not a reset");
    assert_eq!(opcode, 2);
    let (code, message, _, session) = error_of(Some(
        ServerMessage::parse(&payload, &Limits::default()).unwrap(),
    ));
    assert_eq!((code, session), (104, 0), "{message}");
}

/// Issue item 1: the caps on open and on unauthenticated connections refuse the next one and
/// let new ones in once others close.
#[tokio::test]
async fn connection_caps_refuse_the_next_and_recover() {
    let caps = ConnectionLimits {
        max_connections: 3,
        max_unauthenticated: 2,
        ..ConnectionLimits::default()
    };
    let f = fixture("caps", Limits::default(), caps).await;
    let addr = f.server.local_addr;
    // Two connections that have not authenticated: the third is closed at accept.
    let a = connect(addr, None).await.unwrap();
    let b = connect(addr, None).await.unwrap();
    assert!(connect(addr, None).await.is_err());
    // Authenticated by the handshake token: no longer counted as unauthenticated.
    drop(b);
    let mut c = connect(addr, Some(&token())).await.unwrap();
    send(
        &mut c,
        ClientMessage::Ping {
            timestamp: 1,
            rtt: 0,
        },
    )
    .await;
    assert!(matches!(
        recv(&mut c).await,
        Some(ServerMessage::Pong { .. })
    ));
    // An unauthenticated one that authenticates with its first BIND.
    let mut d = eventually_connect(addr, None).await;
    send(&mut d, bind(1, "/caps", false)).await;
    send(
        &mut d,
        ClientMessage::Ping {
            timestamp: 2,
            rtt: 0,
        },
    )
    .await;
    assert!(matches!(
        recv(&mut d).await,
        Some(ServerMessage::Pong { .. })
    ));
    // Three open (a, c, d): the fourth is refused whatever its token.
    assert!(connect(addr, Some(&token())).await.is_err());
    drop(a);
    let mut e = eventually_connect(addr, Some(&token())).await;
    send(
        &mut e,
        ClientMessage::Ping {
            timestamp: 3,
            rtt: 0,
        },
    )
    .await;
    assert!(matches!(
        recv(&mut e).await,
        Some(ServerMessage::Pong { .. })
    ));
    let text = f.server.metrics().encode();
    assert!(
        text.contains("tandem_connections_refused_total{reason=\"unauthenticated_cap\"}"),
        "{text}"
    );
    assert!(
        text.contains("tandem_connections_refused_total{reason=\"connection_cap\"}"),
        "{text}"
    );
}

/// Connects, retrying while the server has not yet seen a closed connection go.
async fn eventually_connect(addr: SocketAddr, bearer: Option<&str>) -> Ws {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match connect(addr, bearer).await {
            Ok(ws) => return ws,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Issue item 1: a BIND beyond the sessions-per-connection cap is a session error (224); the
/// connection and its other sessions go on, and a session can be bound again after UNBIND.
#[tokio::test]
async fn sessions_per_connection_are_capped() {
    let caps = ConnectionLimits {
        max_sessions_per_connection: 2,
        ..ConnectionLimits::default()
    };
    let f = fixture("sessions", Limits::default(), caps).await;
    let mut ws = connect(f.server.local_addr, None).await.unwrap();
    send(&mut ws, bind(1, "/s/1", false)).await;
    send(&mut ws, bind(2, "/s/2", false)).await;
    send(&mut ws, bind(3, "/s/3", false)).await;
    let (code, _, _, session) = error_of(recv(&mut ws).await);
    assert_eq!((code, session), (224, 3));
    send(&mut ws, ClientMessage::Unbind { session: 1 }).await;
    assert_eq!(
        recv(&mut ws).await,
        Some(ServerMessage::Unbound { session: 1 })
    );
    send(&mut ws, bind(4, "/s/4", false)).await;
    send(
        &mut ws,
        ClientMessage::Ping {
            timestamp: 9,
            rtt: 0,
        },
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        Some(ServerMessage::Pong { timestamp: 9 })
    );
}

/// Issue item 2: connections that never finish an HTTP request (plain) are closed at the
/// handshake deadline, and new clients then get in although the unauthenticated cap was full.
#[tokio::test]
async fn silent_connections_are_closed_at_the_handshake_deadline() {
    let caps = ConnectionLimits {
        max_unauthenticated: 2,
        handshake_timeout: Duration::from_secs(1),
        ..ConnectionLimits::default()
    };
    let f = fixture("deadline", Limits::default(), caps).await;
    let addr = f.server.local_addr;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Both are closed by the server (EOF), not by this test.
    for tcp in [&mut silent, &mut partial] {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("the server kept a silent connection past its deadline");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    let mut ws = eventually_connect(addr, Some(&token())).await;
    send(
        &mut ws,
        ClientMessage::Ping {
            timestamp: 5,
            rtt: 0,
        },
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        Some(ServerMessage::Pong { timestamp: 5 })
    );
    let text = f.server.metrics().encode();
    assert!(
        text.contains("tandem_connections_refused_total{reason=\"upgrade_timeout\"} 2"),
        "{text}"
    );
}

/// Issue item 2 over TLS: a connection that never sends a ClientHello is closed at the
/// deadline.
#[tokio::test]
async fn tls_connections_without_a_client_hello_are_closed_at_the_deadline() {
    let tmp = scratch("tls");
    let dir = tmp.path();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let server = start(ServerConfig {
        tls: Some((dir.join("cert.pem"), dir.join("key.pem"))),
        connection_limits: ConnectionLimits {
            handshake_timeout: Duration::from_secs(1),
            ..ConnectionLimits::default()
        },
        ..ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.join("data"),
            Authenticator::hs256(SECRET),
        )
    })
    .await
    .unwrap();
    let mut tcp = TcpStream::connect(server.local_addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .expect("no ClientHello, yet the connection stayed open");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let text = server.metrics().encode();
    assert!(
        text.contains("tandem_connections_refused_total{reason=\"tls_timeout\"} 1"),
        "{text}"
    );
    server.shutdown();
}

/// Issue item 13: every decimal field of every client message above 2^63 - 1 is refused by the
/// parser (103 in a header line, 111 in an UPLOAD entry header); 2^63 - 1 itself is accepted.
#[test]
fn client_fields_above_i64_max_are_refused() {
    let limits = Limits::default();
    let max = i64::MAX as u64;
    let over = max + 1;
    // Header templates: fields as `{}` placeholders, one per field (sizes stay 0 or real).
    let templates: &[(&str, &[u64])] = &[
        ("bind {} 0 0 0 0\n", &[1]),
        ("ident {} {} {} {} {} {} {}\n", &[1, 2, 3, 4, 5, 6, 7]),
        ("upload {} 0 0 0 {} {} {}\n", &[1, 2, 3, 4]),
        ("mark {} {}\n", &[1, 2]),
        ("unbind {}\n", &[1]),
        ("ping {} {}\n", &[1, 2]),
        ("json_error {} 0 {}\n", &[1, 2]),
        ("refresh {} 0\n", &[1]),
        ("state_request {} {} {}\n", &[1, 2, 3]),
        ("client_version_request {} {} {}\n", &[1, 2, 3]),
        ("transact {} {} {} {} {} 0 0 0\n", &[1, 2, 3, 4, 5]),
    ];
    let fill = |template: &str, values: &[u64]| {
        let mut out = template.to_owned();
        for v in values {
            out = out.replacen("{}", &v.to_string(), 1);
        }
        out
    };
    let mut cases = 0;
    for (template, values) in templates {
        let ok = fill(template, &vec![max; values.len()]);
        ClientMessage::parse(ok.as_bytes(), &limits)
            .unwrap_or_else(|e| panic!("{ok:?}: {}", e.message));
        for i in 0..values.len() {
            let mut fields = values.to_vec();
            fields[i] = over;
            let text = fill(template, &fields);
            let e = ClientMessage::parse(text.as_bytes(), &limits).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadSyntax, "{text:?}: {}", e.message);
            assert!(
                e.message.contains("over the largest value"),
                "{}",
                e.message
            );
            cases += 1;
        }
    }
    assert_eq!(cases, 31);
    // UPLOAD entry headers: client version, base server version, timestamp, origin file.
    for i in 0..4 {
        let mut fields = [max; 4];
        fields[i] = over;
        let body = format!("{} {} {} {} 0 ", fields[0], fields[1], fields[2], fields[3]);
        let message = format!("upload 1 0 {} 0 0 0 0\n{body}", body.len());
        let e = ClientMessage::parse(message.as_bytes(), &limits).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadChangesetHeaderSyntax, "{}", e.message);
    }
    let body = format!("{max} {max} {max} {max} 0 ");
    let message = format!("upload 1 0 {} 0 0 0 0\n{body}", body.len());
    ClientMessage::parse(message.as_bytes(), &limits).unwrap();
}

/// Issue item 12: a server path of the protocol's 1,024 bytes binds and syncs.
#[tokio::test]
async fn a_1024_byte_server_path_binds_and_syncs() {
    let f = fixture("longpath", Limits::default(), ConnectionLimits::default()).await;
    let path = format!("/{}", "p".repeat(1023));
    assert_eq!(path.len(), 1024);
    let mut ws = connect(f.server.local_addr, None).await.unwrap();
    assert!(matches!(
        bind_and_ident(&mut ws, &path).await,
        ServerMessage::Download { .. }
    ));
    let changeset = Changeset::default().encode();
    send(
        &mut ws,
        ClientMessage::Upload {
            session: 1,
            progress_client_version: 1,
            progress_server_version: 0,
            locked_server_version: 0,
            entries: vec![UploadEntry {
                client_version: 1,
                last_integrated_server_version: 0,
                origin_timestamp: 1,
                origin_file_ident: 0,
                changeset,
            }],
        },
    )
    .await;
    match recv(&mut ws).await {
        Some(ServerMessage::Download {
            upload_client_version,
            latest_server_version,
            ..
        }) => assert_eq!((upload_client_version, latest_server_version), (1, 1)),
        other => panic!("{other:?}"),
    }
    // The path is stored in the file (meta `server_path`), whose name is fixed-length.
    let data = f.dir.path().join("data");
    let names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sqlite"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(names[0].len(), 64 + ".sqlite".len());
}

/// Issue item 12: a storage error's text names no server-side path.
#[tokio::test]
async fn storage_errors_do_not_show_server_paths() {
    let f = fixture(
        "storage-error",
        Limits::default(),
        ConnectionLimits::default(),
    )
    .await;
    // The data directory becomes a file: opening any server file fails.
    let data = f.dir.path().join("data");
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::write(&data, b"not a directory").unwrap();
    let mut ws = connect(f.server.local_addr, None).await.unwrap();
    send(&mut ws, bind(1, "/anything", true)).await;
    let (code, message, _, session) = error_of(recv(&mut ws).await);
    assert_eq!(session, 1);
    assert!(code >= 200, "{code}");
    assert_eq!(message, "server storage failed");
    let dir = f.dir.path().display().to_string();
    assert!(
        !message.contains(&dir) && !message.contains("sqlite"),
        "{message}"
    );
}

/// Issue item 14: one connection allocates at most the configured number of client file
/// idents (104 beyond, connection-level).
#[tokio::test]
async fn ident_allocations_per_connection_are_capped() {
    let caps = ConnectionLimits {
        max_ident_allocations_per_connection: 2,
        ..ConnectionLimits::default()
    };
    let f = fixture("idents", Limits::default(), caps).await;
    let mut ws = connect(f.server.local_addr, None).await.unwrap();
    for session in 1..=2 {
        send(&mut ws, bind(session, "/flood", true)).await;
        assert!(matches!(
            recv(&mut ws).await,
            Some(ServerMessage::Ident { .. })
        ));
    }
    send(&mut ws, bind(3, "/flood", true)).await;
    let (code, _, _, session) = error_of(recv(&mut ws).await);
    assert_eq!((code, session), (104, 0));
    assert!(recv(&mut ws).await.is_none(), "the connection ends");
    // A new connection may allocate again.
    let mut again = connect(f.server.local_addr, None).await.unwrap();
    send(&mut again, bind(1, "/flood", true)).await;
    assert!(matches!(
        recv(&mut again).await,
        Some(ServerMessage::Ident { .. })
    ));
}

/// Issue item 14: client file idents allocated and never used by an IDENT expire; used ones
/// stay.
#[test]
fn unused_client_file_idents_expire() {
    let tmp = scratch("expiry");
    let dir = tmp.path();
    let mut file = ServerFile::open(dir.join("f.sqlite")).unwrap();
    file.set_client_file_expiry(Duration::from_secs(1));
    let used = file.allocate_client_file().unwrap();
    file.check_ident(used.0, used.1, Some(0)).unwrap();
    for _ in 0..20 {
        file.allocate_client_file().unwrap();
    }
    assert_eq!(file.client_file_count().unwrap(), 21);
    std::thread::sleep(Duration::from_millis(2100));
    let fresh = file.allocate_client_file().unwrap();
    // The 20 unused ones are gone; the used one and the new one remain.
    assert_eq!(file.client_file_count().unwrap(), 2);
    file.check_ident(used.0, used.1, Some(0)).unwrap();
    file.check_ident(fresh.0, fresh.1, Some(0)).unwrap();
    drop(file);
}

/// Issue item 11: an upload stamped beyond the configured skew ahead of the server's clock is
/// refused with 101 (try again); one within it is integrated.
#[tokio::test]
async fn uploads_stamped_far_ahead_are_refused() {
    let caps = ConnectionLimits {
        max_clock_skew: Duration::from_secs(60),
        ..ConnectionLimits::default()
    };
    let f = fixture("skew", Limits::default(), caps).await;
    // Now, in origin timestamp units (ms since 2015-01-01).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 1_420_070_400_000;
    let upload = |version: u64, origin_timestamp: u64| ClientMessage::Upload {
        session: 1,
        progress_client_version: version,
        progress_server_version: 0,
        locked_server_version: 0,
        entries: vec![UploadEntry {
            client_version: version,
            last_integrated_server_version: 0,
            origin_timestamp,
            origin_file_ident: 0,
            changeset: Changeset::default().encode(),
        }],
    };
    let mut ws = connect(f.server.local_addr, None).await.unwrap();
    bind_and_ident(&mut ws, "/skew").await;
    send(&mut ws, upload(1, now + 30_000)).await;
    assert!(matches!(
        recv(&mut ws).await,
        Some(ServerMessage::Download {
            upload_client_version: 1,
            ..
        })
    ));
    let five_years = 5 * 365 * 24 * 3600 * 1000;
    send(&mut ws, upload(2, now + five_years)).await;
    let (code, message, try_again, session) = error_of(recv(&mut ws).await);
    assert_eq!((code, try_again, session), (101, true, 0), "{message}");
    assert!(message.contains("ahead of the server's clock"), "{message}");
}

/// Issue item 2, client side: a Tandem client pointed at a listener that accepts and never
/// answers (no TLS ServerHello; no WebSocket upgrade answer) reports a handshake timeout error,
/// and keeps retrying.
#[test]
fn a_client_reports_a_timeout_against_a_silent_listener() {
    use std::sync::{Arc, Mutex};
    use tandem::client::{SyncConfig, SyncTimeouts};
    use tandem::model::{ClassSchema, Property, PropertyType, Schema};
    use tandem::store::{Config, Database};

    let tmp = scratch("silent");
    let dir = tmp.path();
    let schema = Schema::new(vec![ClassSchema::top_level(
        "Item",
        "_id",
        vec![Property::new("_id", PropertyType::Int)],
    )])
    .unwrap();
    // Accepts connections and holds them open without a byte.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let holder = Arc::clone(&held);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            holder.lock().unwrap().push(stream);
        }
    });
    for (name, url, insecure) in [
        ("tls", format!("wss://localhost:{}/", addr.port()), false),
        ("plain", format!("ws://127.0.0.1:{}/", addr.port()), true),
    ] {
        let db = Arc::new(
            Database::open(
                dir.join(format!("{name}.sqlite")),
                &schema,
                Config::default(),
            )
            .unwrap(),
        );
        // Recorded from the session's first event: the first error is the first attempt's.
        let (session, events) = live::start_recording(
            &db,
            SyncConfig {
                url,
                path: "/silent".into(),
                token: token(),
                allow_insecure: insecure,
                timeouts: SyncTimeouts {
                    connect: Duration::from_secs(5),
                    handshake: Duration::from_millis(300),
                },
                ..SyncConfig::default()
            },
        );
        let error = live::wait_for_error(&events, WAIT.as_secs(), |_| true);
        assert_eq!(error.code, 0, "{name}");
        assert!(error.will_retry, "{name}");
        assert!(
            error.message.contains("handshake") && error.message.contains("300 ms"),
            "{name}: {}",
            error.message
        );
        session.stop();
    }
}

/// Issue item 11: a client whose changeset timestamps run five years ahead (its stored clock
/// correction says +5 years, as a device with a fast clock would stamp) learns the server's
/// clock at connect; what it commits from then on, offline too, is stamped by the server's
/// clock, so a correct client that wrote the same field later wins the conflict on both.
#[test]
fn a_fast_clock_does_not_win_after_the_client_learns_the_server_clock() {
    use tandem::model::{PrimaryKey, Value};
    use tandem::state::{Field, Val};

    let world = live::World::new("clock");
    let fast = world.open("fast.sqlite");
    let correct = world.open("correct.sqlite");
    let five_years: i64 = 5 * 365 * 24 * 3600 * 1000;
    fast.set_clock_offset(five_years).unwrap();
    let session = world.sync(&fast);
    live::eventually("the clock correction", 30, || {
        fast.clock_offset().unwrap() != five_years
    });
    assert!(fast.clock_offset().unwrap().abs() < 60_000);
    live::create_task(&fast, 1, "initial");
    let other = world.sync(&correct);
    live::eventually("the task on the correct client", 30, || {
        live::has_task(&correct, 1)
    });
    drop((session, other));
    std::thread::sleep(Duration::from_millis(50));
    let set_title = |db: &tandem::store::Database, title: &str| {
        let mut tx = db.begin_write().unwrap();
        tx.set(
            "Task",
            &PrimaryKey::Int(1),
            "title",
            Value::String(title.into()),
        )
        .unwrap();
        tx.commit().unwrap();
    };
    // Offline: the fast client first, the correct one 50 ms later.
    set_title(&fast, "fast, earlier");
    std::thread::sleep(Duration::from_millis(50));
    set_title(&correct, "correct, later");
    let stamped = fast
        .history()
        .unwrap()
        .last()
        .unwrap()
        .meta
        .origin_timestamp;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 1_420_070_400_000;
    assert!(
        stamped.abs_diff(now) < 60_000,
        "stamped {stamped}, now {now}"
    );
    let _a = world.sync(&fast);
    let _b = world.sync(&correct);
    let title = |db: &tandem::store::Database| {
        db.read()
            .unwrap()
            .object("Task", &PrimaryKey::Int(1))
            .unwrap()
            .map(|o| o.fields["title"].clone())
    };
    let later = Some(Field::Value(Val::String("correct, later".into())));
    live::eventually("both clients agree on the later write", 60, || {
        title(&fast) == later && title(&correct) == later
    });
}
