//! The Realm sync dialect over the network: a raw WebSocket client speaking what realm-core
//! 14.12 sends (`realm-client-spike.md` section 3), against a plain-ws server with an app.
#![cfg(feature = "server")]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tandem::protocol::{ClientMessage, Limits, ServerMessage, UploadEntry};
use tandem::server::app::AppConfig;
use tandem::server::realm::permissions::SyncPermissions;
use tandem::server::{start, Authenticator, RunningServer, ServerConfig, TokenSigner};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

const SECRET: &[u8] = b"realm dialect test secret";
const APP: &str = "tandem-test-app";
const WAIT: Duration = Duration::from_secs(20);
const OFFER: &str =
    "com.mongodb.realm-sync#14, com.mongodb.realm-sync#13, com.mongodb.realm-sync#12, \
    com.mongodb.realm-sync#11, com.mongodb.realm-sync#10, com.mongodb.realm-sync#9, \
    com.mongodb.realm-sync#8, com.mongodb.realm-sync#7, com.mongodb.realm-sync#6, \
    com.mongodb.realm-sync#5, com.mongodb.realm-sync#4, com.mongodb.realm-sync#3, \
    com.mongodb.realm-sync#2";

/// The 49-byte schema changeset realm-core 14.12 uploaded (Task: _id ObjectId PK, title
/// String, done Bool).
const SCHEMA: &str = "3f00045461736b3f01035f6964000000010a003f02057469746c653f03000600020300003f0404646f6e65060004020000";
/// The 104-byte object changeset it uploaded next (one Task).
const OBJECT: &str = "3f00045461736b02000a514be25efebe5b3fb32b2ecc3f01057469746c6504000a514be25efebe5b3fb32b2ecc0100031b68656c6c6f2066726f6d207265616c6d2d636f72652031342e3132003f0204646f6e6504000a514be25efebe5b3fb32b2ecc0200020000";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

struct Fixture {
    server: RunningServer,
    /// The server's scratch directory, removed on drop (after the server, the field before).
    _dir: tempfile::TempDir,
}

async fn fixture(name: &str, permissions: &str) -> Fixture {
    fixture_with(name, permissions, 1800, Limits::default()).await
}

/// A plain-ws server with the app `APP` (anonymous login, access tokens living
/// `access_lifetime` seconds), these partition rules and message limits.
async fn fixture_with(
    name: &str,
    permissions: &str,
    access_lifetime: u64,
    limits: Limits,
) -> Fixture {
    fixture_full(name, permissions, access_lifetime, limits, None).await
}

/// [`fixture_with`], with flexible sync rules (JSON) if given.
async fn fixture_full(
    name: &str,
    permissions: &str,
    access_lifetime: u64,
    limits: Limits,
    flx_rules: Option<&str>,
) -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-realm-{name}-"))
        .tempdir()
        .unwrap();
    let mut app = AppConfig::new(APP, TokenSigner::hs256(b"realm dialect app secret"));
    app.access_token_lifetime = Duration::from_secs(access_lifetime);
    app.sync_permissions = permissions.parse::<SyncPermissions>().unwrap();
    if let Some(rules) = flx_rules {
        app.flx_rules = tandem::server::realm::rules::FlxRules::from_json(rules).unwrap();
    }
    let server = start(ServerConfig {
        allow_plain_ws: true,
        limits,
        app: Some(app),
        ..ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().join("data"),
            Authenticator::hs256(SECRET),
        )
    })
    .await
    .unwrap();
    Fixture { server, _dir: dir }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A Tandem access token (the server's `auth` key) for these server paths.
fn tandem_token(paths: &[&str]) -> String {
    TokenSigner::hs256(SECRET)
        .sign("tandem-peer", (now() + 600) as u64, paths)
        .unwrap()
}

/// One HTTP/1.1 request over a fresh connection: the status and the body.
async fn http(
    f: &Fixture,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(f.server.local_addr).await.unwrap();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\
         Content-Type: application/json;charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Logs in a new anonymous user through the App Services API: its user id and access token.
async fn login(f: &Fixture) -> (String, String) {
    let (status, body) = http(
        f,
        "POST",
        &format!("/api/client/v2.0/app/{APP}/auth/providers/anon-user/login"),
        None,
        "{\"provider\":\"anon-user\",\"options\":{\"device\":{}}}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The JSON object (a chunked body has its chunk sizes around it).
    let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    (
        v["user_id"].as_str().unwrap().to_owned(),
        v["access_token"].as_str().unwrap().to_owned(),
    )
}

/// Opens the Realm sync route (or `path`) with an offer; the chosen protocol, or the HTTP status.
async fn open(
    f: &Fixture,
    path_and_query: &str,
    offer: &str,
    bearer: Option<&str>,
) -> Result<(Ws, String), u16> {
    let tcp = TcpStream::connect(f.server.local_addr).await.unwrap();
    let mut request = format!(
        "ws://127.0.0.1:{}{path_and_query}",
        f.server.local_addr.port()
    )
    .into_client_request()
    .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", offer.parse().unwrap());
    if let Some(b) = bearer {
        request
            .headers_mut()
            .insert("Authorization", format!("Bearer {b}").parse().unwrap());
    }
    match tokio_tungstenite::client_async(request, tcp).await {
        Ok((ws, response)) => {
            let chosen = response
                .headers()
                .get_all("Sec-WebSocket-Protocol")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>();
            assert_eq!(chosen.len(), 1, "exactly one protocol header: {chosen:?}");
            assert!(!chosen[0].contains(','), "one token: {chosen:?}");
            Ok((ws, chosen[0].clone()))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("handshake: {e}"),
    }
}

fn route(token: &str) -> String {
    format!("/api/client/v2.0/app/{APP}/realm-sync?baas_at={token}")
}

/// A logged-in Realm client's connection, and its user id.
async fn realm(f: &Fixture) -> (Ws, String) {
    let (user, token) = login(f).await;
    let ws = open(f, &route(&token), OFFER, None).await.unwrap().0;
    (ws, user)
}

async fn send(ws: &mut Ws, m: ClientMessage) {
    ws.send(Message::Binary(m.encode().into())).await.unwrap();
}

/// The next sync message, or the close code.
async fn next(ws: &mut Ws) -> Result<ServerMessage, Option<u16>> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no message in time")
        {
            Some(Ok(Message::Binary(b))) => {
                return Ok(ServerMessage::parse(&b, &Limits::default()).unwrap())
            }
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return Err(None),
        }
    }
}

async fn recv(ws: &mut Ws) -> ServerMessage {
    next(ws).await.expect("a sync message")
}

fn bind(session: u64, path: &str, need_ident: bool) -> ClientMessage {
    ClientMessage::Bind {
        session,
        path: path.into(),
        token: String::new(),
        need_client_file_ident: need_ident,
        is_subserver: false,
    }
}

fn ident(session: u64, ident: u64, salt: u64, progress: [u64; 4]) -> ClientMessage {
    ClientMessage::Ident {
        session,
        client_file_ident: ident,
        client_file_ident_salt: salt,
        download_server_version: progress[0],
        download_client_version: progress[1],
        latest_server_version: progress[2],
        latest_server_version_salt: progress[3],
        query: None,
    }
}

/// BIND (asking for an ident) and IDENT like a fresh realm-core file; returns the ident, its
/// salt and the first DOWNLOAD after IDENT (answering MARK 1, which must come after it).
async fn bind_fresh(ws: &mut Ws, session: u64, path: &str) -> (u64, u64, ServerMessage) {
    send(ws, bind(session, path, true)).await;
    let ServerMessage::Ident {
        session: s,
        client_file_ident,
        client_file_ident_salt,
    } = recv(ws).await
    else {
        panic!("IDENT expected")
    };
    assert_eq!(s, session);
    assert!(client_file_ident >= 1 && client_file_ident_salt != 0);
    send(
        ws,
        ident(session, client_file_ident, client_file_ident_salt, [0; 4]),
    )
    .await;
    send(
        ws,
        ClientMessage::Mark {
            session,
            request_ident: 1,
        },
    )
    .await;
    let download = recv(ws).await;
    assert!(
        matches!(download, ServerMessage::Download { .. }),
        "{download:?}"
    );
    assert_eq!(
        recv(ws).await,
        ServerMessage::Mark {
            session,
            request_ident: 1
        },
        "MARK only after the DOWNLOAD"
    );
    (client_file_ident, client_file_ident_salt, download)
}

fn upload(session: u64, progress_client_version: u64, changesets: &[(u64, &str)]) -> ClientMessage {
    ClientMessage::Upload {
        session,
        progress_client_version,
        progress_server_version: 0,
        locked_server_version: 0,
        entries: changesets
            .iter()
            .map(|(cv, cs)| UploadEntry {
                client_version: *cv,
                last_integrated_server_version: 0,
                origin_timestamp: 375958639338,
                origin_file_ident: 0,
                changeset: hex(cs),
            })
            .collect(),
    }
}

/// A JSON_ERROR's code and parsed body, checking the six keys realm-core requires.
fn json_error(m: ServerMessage, session: u64) -> (u64, serde_json::Value) {
    let ServerMessage::JsonError {
        code,
        session: s,
        json,
    } = m
    else {
        panic!("JSON_ERROR expected, got {m:?}")
    };
    assert_eq!(s, session);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["message"].is_string(), "{json}");
    assert!(v["tryAgain"].is_boolean(), "{json}");
    assert!(v["isRecoveryModeDisabled"].is_boolean(), "{json}");
    assert!(v["logURL"].is_string(), "{json}");
    assert!(v["shouldClientReset"].is_boolean(), "{json}");
    assert!(v["action"].is_string(), "{json}");
    (code, v)
}

/// PING and expect PONG with the same timestamp as the very next message.
async fn ping_pong(ws: &mut Ws, timestamp: u64) {
    send(ws, ClientMessage::Ping { timestamp, rtt: 3 }).await;
    assert_eq!(recv(ws).await, ServerMessage::Pong { timestamp });
}

#[tokio::test]
async fn the_handshake_echoes_exactly_one_offered_token() {
    let f = fixture("handshake", "all-authenticated").await;
    let (_, t) = login(&f).await;
    let (_, chosen) = open(&f, &route(&t), OFFER, None).await.unwrap();
    assert_eq!(chosen, "com.mongodb.realm-sync#14");
    let older = "com.mongodb.realm-sync#9, com.mongodb.realm-sync#8, com.mongodb.realm-sync#7";
    assert_eq!(
        open(&f, &route(&t), older, None).await.unwrap().1,
        "com.mongodb.realm-sync#9"
    );
    // Flexible sync version 14 is served; older flexible sync versions, or nothing in
    // common: refused with HTTP 400 (never a bad 101).
    let flx = OFFER.replace("realm-sync", "realm-query-sync");
    assert_eq!(
        open(&f, &route(&t), &flx, None).await.unwrap().1,
        "com.mongodb.realm-query-sync#14"
    );
    let old_flx = "com.mongodb.realm-query-sync#13, com.mongodb.realm-query-sync#12";
    assert_eq!(open(&f, &route(&t), old_flx, None).await.unwrap_err(), 400);
    let old = "com.mongodb.realm-sync#7, com.mongodb.realm-sync#6";
    assert_eq!(open(&f, &route(&t), old, None).await.unwrap_err(), 400);
    // The Realm route of another app id: 404, as App Services answers an unknown app (not
    // Tandem's dialect refusing the offer); Tandem's own dialect still works on other paths.
    let other = format!("/api/client/v2.0/app/other/realm-sync?baas_at={t}");
    assert_eq!(open(&f, &other, OFFER, None).await.unwrap_err(), 404);
    let tandem = tandem_token(&["*"]);
    let (_, chosen) = open(&f, "/sync", "com.tandem.sync#1", Some(&tandem))
        .await
        .unwrap();
    assert_eq!(chosen, "com.tandem.sync#1");
    // A plain HTTP request (no upgrade) to a path no App Services route serves: 404.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(f.server.local_addr).await.unwrap();
    tcp.write_all(b"GET /nothing/here HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

#[tokio::test]
async fn bad_or_expired_tokens_complete_the_upgrade_and_close_4001() {
    let f = fixture_with("badtoken", "all-authenticated", 1, Limits::default()).await;
    let (_, expired) = login(&f).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Signed with another key; and a Tandem token (no `typ` access, not this app's key).
    let forged = TokenSigner::hs256(b"some other secret key")
        .sign("u1", (now() + 600) as u64, &[])
        .unwrap();
    let no_token = format!("/api/client/v2.0/app/{APP}/realm-sync");
    for path in [
        route(&expired),
        route(&tandem_token(&["*"])),
        route(&forged),
        route("not.a.jwt"),
        no_token,
    ] {
        let (mut ws, chosen) = open(&f, &path, OFFER, None).await.unwrap();
        assert_eq!(chosen, "com.mongodb.realm-sync#14");
        assert_eq!(next(&mut ws).await.unwrap_err(), Some(4001), "{path}");
    }
}

#[tokio::test]
async fn the_connection_closes_4001_when_the_token_expires() {
    let f = fixture_with("expiry", "all-authenticated", 2, Limits::default()).await;
    let (_, token) = login(&f).await;
    let (mut ws, _) = open(&f, &route(&token), OFFER, None).await.unwrap();
    bind_fresh(&mut ws, 1, "\"p1\"").await;
    ping_pong(&mut ws, 77).await;
    let started = std::time::Instant::now();
    assert_eq!(next(&mut ws).await.unwrap_err(), Some(4001));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn uploads_are_integrated_acknowledged_and_fanned_out() {
    let f = fixture("roundtrip", "all-authenticated").await;
    let (mut a, _) = realm(&f).await;
    let (mut b, _) = realm(&f).await;
    let (_, _, first) = bind_fresh(&mut a, 1, "\"p1\"").await;
    // The session's first DOWNLOAD is empty and all zero, as realm-core's server sends it.
    let ServerMessage::Download {
        download_server_version: 0,
        upload_client_version: 0,
        upload_server_version: 0,
        ref entries,
        ..
    } = first
    else {
        panic!("{first:?}")
    };
    assert!(entries.is_empty());
    bind_fresh(&mut b, 7, "\"p1\"").await;
    send(&mut a, upload(1, 5, &[(2, SCHEMA), (4, OBJECT)])).await;
    // The acknowledgement: both changesets integrated (server versions 1, 2), upload progress
    // 5 acknowledged, none of the uploader's own changesets sent back.
    let ack = recv(&mut a).await;
    let ServerMessage::Download {
        session: 1,
        download_server_version: 2,
        download_client_version: 4,
        latest_server_version: 2,
        upload_client_version: 4,
        upload_server_version: 0,
        ref entries,
        ..
    } = ack
    else {
        panic!("{ack:?}")
    };
    assert!(entries.is_empty());
    // Fan-out to the other Realm client: both changesets, from the uploader's file.
    let ServerMessage::Download {
        session: 7,
        download_server_version: 2,
        entries,
        ..
    } = recv(&mut b).await
    else {
        panic!("DOWNLOAD expected")
    };
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries.iter().map(|e| e.server_version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(entries.iter().all(|e| e.origin_file_ident > 0));
    // The empty UPLOAD acknowledging server version 2, then MARK: DOWNLOAD progress and then
    // MARK, with upload_server_version never above the download cursor.
    send(
        &mut b,
        ClientMessage::Upload {
            session: 7,
            progress_client_version: 3,
            progress_server_version: 2,
            locked_server_version: 0,
            entries: Vec::new(),
        },
    )
    .await;
    let ServerMessage::Download {
        upload_server_version,
        download_server_version,
        ..
    } = recv(&mut b).await
    else {
        panic!("DOWNLOAD expected")
    };
    assert_eq!((upload_server_version, download_server_version), (2, 2));
    send(
        &mut b,
        ClientMessage::Mark {
            session: 7,
            request_ident: 2,
        },
    )
    .await;
    assert_eq!(
        recv(&mut b).await,
        ServerMessage::Mark {
            session: 7,
            request_ident: 2
        }
    );
    // A Tandem client on the mapped server path shares the file.
    let state = f
        .server
        .state_of("/\"p1\"")
        .expect("the partition's server file");
    assert!(format!("{state:?}").contains("hello from realm-core 14.12"));
    let tandem_token = tandem_token(&["/\"p1\""]);
    let (mut t, _) = open(&f, "/sync", "com.tandem.sync#1", Some(&tandem_token))
        .await
        .unwrap();
    let (_, _, download) = bind_fresh(&mut t, 3, "/\"p1\"").await;
    let ServerMessage::Download { entries, .. } = download else {
        unreachable!()
    };
    assert_eq!(entries.len(), 2);
    // The server stores changesets in their canonical encoding (intern strings first): the
    // same instructions.
    let decode = |bytes: &[u8]| {
        tandem::changeset::Changeset::decode(bytes)
            .unwrap()
            .instructions
    };
    assert_eq!(decode(&entries[0].changeset), decode(&hex(SCHEMA)));
    assert_eq!(decode(&entries[1].changeset), decode(&hex(OBJECT)));
}

#[tokio::test]
async fn bind_paths_are_extended_json_partitions() {
    let f = fixture("paths", "all-authenticated").await;
    let (mut a, _) = realm(&f).await;
    for (session, path, server_path) in [
        (1, "{\"$numberInt\":\"5\"}", "/{\"$numberInt\":\"5\"}"),
        (2, "null", "/null"),
        (
            3,
            "{ \"$oid\" : \"65a1b2c3d4e5f60718293a4b\" }",
            "/{\"$oid\":\"65a1b2c3d4e5f60718293a4b\"}",
        ),
    ] {
        bind_fresh(&mut a, session, path).await;
        send(&mut a, upload(session, 2, &[(2, SCHEMA)])).await;
        assert!(matches!(recv(&mut a).await, ServerMessage::Download { .. }));
        assert!(f.server.state_of(server_path).is_some(), "{server_path}");
    }
    // Not Extended JSON: 204 illegal_realm_path, ApplicationBug.
    send(&mut a, bind(9, "/tasks", true)).await;
    let (code, v) = json_error(recv(&mut a).await, 9);
    assert_eq!((code, v["action"].as_str()), (204, Some("ApplicationBug")));
}

#[tokio::test]
async fn session_errors_get_no_unbound_and_clean_unbinds_do() {
    let f = fixture("unbind", "all-authenticated").await;
    let (mut a, _) = realm(&f).await;
    send(&mut a, bind(1, "p1", true)).await;
    let (code, v) = json_error(recv(&mut a).await, 1);
    assert_eq!(code, 204);
    assert_eq!(v["tryAgain"], false);
    send(&mut a, ClientMessage::Unbind { session: 1 }).await;
    // Nothing answers that UNBIND: the next message is the PONG.
    ping_pong(&mut a, 1234).await;
    // The session id can be bound again; a clean UNBIND gets UNBOUND.
    bind_fresh(&mut a, 1, "\"p1\"").await;
    send(&mut a, ClientMessage::Unbind { session: 1 }).await;
    assert_eq!(recv(&mut a).await, ServerMessage::Unbound { session: 1 });
    // UNBIND of a session that never existed: nothing.
    send(&mut a, ClientMessage::Unbind { session: 42 }).await;
    ping_pong(&mut a, 5678).await;
}

#[tokio::test]
async fn a_client_json_error_gets_a_reset_and_no_unbound() {
    let f = fixture("clienterror", "all-authenticated").await;
    let (mut a, _) = realm(&f).await;
    bind_fresh(&mut a, 2, "\"p1\"").await;
    send(
        &mut a,
        ClientMessage::JsonError {
            code: 212,
            session: 2,
            json: "{\"message\":\"Bad changeset (DOWNLOAD)\"}".into(),
        },
    )
    .await;
    let (code, v) = json_error(recv(&mut a).await, 2);
    assert_eq!(code, 212);
    assert_eq!(v["action"], "ClientReset");
    assert_eq!(v["tryAgain"], false);
    send(&mut a, ClientMessage::Unbind { session: 2 }).await;
    ping_pong(&mut a, 9).await;
}

#[tokio::test]
async fn forbidden_partitions_get_206_without_logging_out() {
    let f = fixture("perm", "user-id,shared:team").await;
    let (mut a, user) = realm(&f).await;
    send(&mut a, bind(1, "\"someone-else\"", true)).await;
    let (code, v) = json_error(recv(&mut a).await, 1);
    assert_eq!(code, 206);
    assert_eq!(v["action"], "ApplicationBug");
    assert_eq!(v["tryAgain"], false);
    send(&mut a, ClientMessage::Unbind { session: 1 }).await;
    // A client file that already has an ident sends IDENT, MARK and UPLOAD right behind its
    // BIND: after the 206 they are ignored (no second error, no connection error), and the
    // UNBIND gets no UNBOUND.
    let (ident, salt, _) = bind_fresh(&mut a, 5, &format!("\"{user}\"")).await;
    send(&mut a, bind(6, "\"someone-else\"", false)).await;
    send(&mut a, ident_msg(6, ident, salt, [0; 4])).await;
    send(
        &mut a,
        ClientMessage::Mark {
            session: 6,
            request_ident: 1,
        },
    )
    .await;
    send(&mut a, upload(6, 2, &[(2, SCHEMA)])).await;
    let (code, _) = json_error(recv(&mut a).await, 6);
    assert_eq!(code, 206);
    send(&mut a, ClientMessage::Unbind { session: 6 }).await;
    ping_pong(&mut a, 66).await;
    bind_fresh(&mut a, 2, &format!("\"{user}\"")).await;
    bind_fresh(&mut a, 3, "\"team\"").await;
    send(&mut a, bind(4, "{\"$numberInt\":\"1\"}", true)).await;
    assert_eq!(json_error(recv(&mut a).await, 4).0, 206);
}

#[tokio::test]
async fn a_conflicting_schema_change_gets_225_and_integrates_nothing() {
    let f = fixture("schema", "all-authenticated").await;
    let (mut a, _) = realm(&f).await;
    let (mut b, _) = realm(&f).await;
    bind_fresh(&mut a, 1, "\"p1\"").await;
    bind_fresh(&mut b, 1, "\"p1\"").await;
    send(&mut a, upload(1, 2, &[(2, SCHEMA)])).await;
    assert!(matches!(recv(&mut a).await, ServerMessage::Download { .. }));
    let _fan_out = recv(&mut b).await;
    // Bob's Task.title is an Int: the same column with another type. Once based on Alice's
    // schema (applied to the state), once concurrent with it (merged).
    let int_title = SCHEMA.replace("060002030000", "060002000000");
    assert_ne!(int_title, SCHEMA);
    for base in [1, 0] {
        let mut message = upload(1, 3, &[(3, &int_title)]);
        if let ClientMessage::Upload { entries, .. } = &mut message {
            entries[0].last_integrated_server_version = base;
        }
        send(&mut b, message).await;
        let (code, v) = json_error(recv(&mut b).await, 1);
        assert_eq!(code, 225, "{v}");
        assert_eq!(v["action"], "ApplicationBug");
        send(&mut b, ClientMessage::Unbind { session: 1 }).await;
        ping_pong(&mut b, base).await;
        let state = f.server.state_of("/\"p1\"").unwrap();
        assert!(
            format!("{state:?}").contains("String"),
            "Alice's schema stays"
        );
        // Nothing was integrated: Alice's session hears of no new version.
        ping_pong(&mut a, 100 + base).await;
        if base == 1 {
            bind_fresh(&mut b, 1, "\"p1\"").await;
        }
    }
}

#[tokio::test]
async fn a_server_restored_from_an_older_backup_resets_the_client() {
    let f = fixture("restored", "all-authenticated").await;
    let (mut a, _) = realm(&f).await;
    let (ident, salt, download) = bind_fresh(&mut a, 1, "\"p1\"").await;
    assert!(matches!(download, ServerMessage::Download { .. }));
    send(&mut a, upload(1, 2, &[(2, SCHEMA)])).await;
    // Every server version has its own salt: the client keeps the one of the latest version
    // it heard of, from the acknowledging DOWNLOAD.
    let ServerMessage::Download {
        latest_server_version: 1,
        latest_server_version_salt: server_salt,
        ..
    } = recv(&mut a).await
    else {
        panic!("the upload's acknowledgement at server version 1")
    };
    // A client that has seen more than this server has (its download cursor, or the latest
    // version it heard of): 209; the server's history under another salt: 211; a client
    // file the server never allocated: 208. Each is a ClientReset.
    for (session, message, expected) in [
        (2, ident_msg(2, ident, salt, [5, 0, 5, server_salt]), 209),
        (3, ident_msg(3, ident, salt, [1, 2, 7, server_salt]), 209),
        (
            4,
            ident_msg(4, ident, salt, [1, 2, 1, server_salt ^ 1]),
            211,
        ),
        (5, ident_msg(5, 424242, 99, [0, 0, 0, 0]), 208),
    ] {
        send(&mut a, bind(session, "\"p1\"", false)).await;
        send(&mut a, message).await;
        let (code, v) = json_error(recv(&mut a).await, session);
        assert_eq!(code, expected, "{v}");
        assert_eq!(v["action"], "ClientReset");
        assert_eq!(v["shouldClientReset"], true);
    }
    // The real progress is still accepted.
    send(&mut a, bind(6, "\"p1\"", false)).await;
    send(&mut a, ident_msg(6, ident, salt, [1, 2, 1, server_salt])).await;
    assert!(matches!(
        recv(&mut a).await,
        ServerMessage::Download { session: 6, .. }
    ));
}

fn ident_msg(session: u64, client_file_ident: u64, salt: u64, progress: [u64; 4]) -> ClientMessage {
    ident(session, client_file_ident, salt, progress)
}

#[tokio::test]
async fn tandem_only_messages_are_not_realm_messages() {
    let f = fixture("tandemonly", "all-authenticated").await;
    let (mut a, _) = realm(&f).await;
    bind_fresh(&mut a, 1, "\"p1\"").await;
    send(
        &mut a,
        ClientMessage::StateRequest {
            session: 1,
            server_version: 0,
            offset: 0,
        },
    )
    .await;
    let ServerMessage::Error {
        code,
        try_again,
        session,
        ..
    } = recv(&mut a).await
    else {
        panic!("ERROR expected")
    };
    assert_eq!((code, try_again, session), (102, true, 0));
}

#[tokio::test]
async fn a_message_over_the_limits_closes_1009_never_104() {
    let limits = Limits {
        max_body: 1024,
        ..Limits::default()
    };
    let f = fixture_with("toobig", "all-authenticated", 1800, limits).await;
    let (mut a, _) = realm(&f).await;
    bind_fresh(&mut a, 1, "\"p1\"").await;
    // An UPLOAD body of more than 1024 bytes (the changeset bytes need not be valid: the size
    // is refused first).
    let big = "00".repeat(1100);
    send(&mut a, upload(1, 2, &[(2, &big)])).await;
    assert_eq!(next(&mut a).await.unwrap_err(), Some(1009));
}

// ---- Flexible sync (realm-wire-compat.md section 4) ----

const FLX_OFFER: &str = "com.mongodb.realm-query-sync#14, com.mongodb.realm-query-sync#13";
const FLX_BIND: &str = "{\"schemaVersion\":0,\"sessionReason\":0}";

/// A logged-in flexible sync client's connection.
async fn flx_client(f: &Fixture) -> Ws {
    flx_user(f).await.0
}

/// [`flx_client`] and its user id.
async fn flx_user(f: &Fixture) -> (Ws, String) {
    let (user, token) = login(f).await;
    let (ws, chosen) = open(f, &route(&token), FLX_OFFER, None).await.unwrap();
    assert_eq!(chosen, "com.mongodb.realm-query-sync#14");
    (ws, user)
}

fn flx_ident(
    session: u64,
    id: (u64, u64),
    progress: [u64; 4],
    version: u64,
    body: &str,
) -> ClientMessage {
    ClientMessage::Ident {
        session,
        client_file_ident: id.0,
        client_file_ident_salt: id.1,
        download_server_version: progress[0],
        download_client_version: progress[1],
        latest_server_version: progress[2],
        latest_server_version_salt: progress[3],
        query: Some(tandem::protocol::FlxQuery {
            version,
            body: body.into(),
        }),
    }
}

/// A new connection for the client file `id`: BIND without asking for an ident, IDENT with
/// these cursors and this active set, on session 1.
async fn flx_reconnect(
    f: &Fixture,
    id: (u64, u64),
    progress: [u64; 4],
    version: u64,
    body: &str,
) -> Ws {
    let mut ws = flx_client(f).await;
    send(&mut ws, bind(1, FLX_BIND, false)).await;
    send(&mut ws, flx_ident(1, id, progress, version, body)).await;
    ws
}

/// Every message until the MARK reply with `request_ident` (which is not included).
async fn until_mark(ws: &mut Ws, request_ident: u64) -> Vec<ServerMessage> {
    let mut out = Vec::new();
    loop {
        match recv(ws).await {
            ServerMessage::Mark {
                request_ident: r, ..
            } if r == request_ident => return out,
            m => out.push(m),
        }
    }
}

/// BIND and IDENT of a fresh file with the empty set (version 0), then MARK 1: the ident and
/// the messages before the MARK reply.
async fn flx_fresh(ws: &mut Ws, session: u64) -> ((u64, u64), Vec<ServerMessage>) {
    send(ws, bind(session, FLX_BIND, true)).await;
    let ServerMessage::Ident {
        client_file_ident,
        client_file_ident_salt,
        ..
    } = recv(ws).await
    else {
        panic!("IDENT expected")
    };
    let id = (client_file_ident, client_file_ident_salt);
    send(ws, flx_ident(session, id, [0; 4], 0, "{}")).await;
    send(
        ws,
        ClientMessage::Mark {
            session,
            request_ident: 1,
        },
    )
    .await;
    (id, until_mark(ws, 1).await)
}

/// A DOWNLOAD's flexible sync fields, entries decoded, and download server version.
fn flx_download(
    m: &ServerMessage,
) -> (
    tandem::protocol::FlxDownload,
    Vec<tandem::changeset::Changeset>,
    u64,
) {
    let ServerMessage::Download {
        flx: Some(flx),
        entries,
        download_server_version,
        ..
    } = m
    else {
        panic!("a flexible sync DOWNLOAD expected, got {m:?}")
    };
    let decoded = entries.iter().map(|e| e.to_changeset().unwrap()).collect();
    (*flx, decoded, *download_server_version)
}

/// The `(instruction kind, object key)` pairs of the Task instructions in `changesets`.
fn task_ops(changesets: &[tandem::changeset::Changeset]) -> Vec<String> {
    use tandem::changeset::{Instruction, PrimaryKey};
    let mut out = Vec::new();
    for cs in changesets {
        for i in &cs.instructions {
            let Some((_, PrimaryKey::ObjectId(id))) = i.object() else {
                continue;
            };
            let kind = match i {
                Instruction::CreateObject { .. } => "create".to_owned(),
                Instruction::EraseObject { .. } => "erase".to_owned(),
                Instruction::Update(u) => format!("set {}", cs.string(u.path.field).unwrap()),
                other => format!("{other:?}"),
            };
            out.push(format!("{kind} {:02x}", id.0[11]));
        }
    }
    out
}

/// A changeset on Task `n` (ObjectId ending in `n`): created first if `create`, then each
/// field written; as hex.
fn task_changeset(n: u8, create: bool, fields: &[(&str, tandem::changeset::Payload)]) -> String {
    use tandem::changeset::{Changeset, FieldPath, Instruction, PrimaryKey, Update};
    let mut cs = Changeset::new();
    let table = cs.intern("Task");
    let object = PrimaryKey::ObjectId(tandem::model::ObjectId([
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n,
    ]));
    if create {
        cs.push(Instruction::CreateObject {
            table,
            object: object.clone(),
        });
    }
    for (field, value) in fields {
        let field = cs.intern(field);
        cs.push(Instruction::Update(Update {
            path: FieldPath {
                table,
                object: object.clone(),
                field,
                path: Default::default(),
            },
            value: value.clone(),
            is_default: false,
            prior_size: 0,
        }));
    }
    cs.encode().iter().map(|b| format!("{b:02x}")).collect()
}

fn create_task(n: u8, title: &str, done: bool) -> String {
    use tandem::changeset::Payload;
    task_changeset(
        n,
        true,
        &[
            ("title", Payload::String(title.into())),
            ("done", Payload::Bool(done)),
        ],
    )
}

fn set_done(n: u8, done: bool) -> String {
    task_changeset(
        n,
        false,
        &[("done", tandem::changeset::Payload::Bool(done))],
    )
}

/// Sends MARK `request_ident` on session 1: the messages before its reply.
async fn marked(ws: &mut Ws, request_ident: u64) -> Vec<ServerMessage> {
    send(
        ws,
        ClientMessage::Mark {
            session: 1,
            request_ident,
        },
    )
    .await;
    until_mark(ws, request_ident).await
}

/// [`marked`]: the Task instructions of the DOWNLOADs before the reply.
async fn marked_ops(ws: &mut Ws, request_ident: u64) -> Vec<String> {
    marked(ws, request_ident)
        .await
        .iter()
        .flat_map(|m| task_ops(&flx_download(m).1))
        .collect()
}

fn query(session: u64, version: u64, body: &str) -> ClientMessage {
    ClientMessage::Query {
        session,
        query: tandem::protocol::FlxQuery {
            version,
            body: body.into(),
        },
    }
}

#[tokio::test]
async fn flexible_sync_bootstraps_each_set_and_moves_objects_in_and_out_of_views() {
    use tandem::protocol::BatchState;
    let f = fixture("flx", "all-authenticated").await;
    let mut a = flx_client(&f).await;
    let (a_id, first) = flx_fresh(&mut a, 1).await;
    // The history is empty: one steady-state DOWNLOAD for set 0, no bootstrap can be carried
    // yet, and MARK is answered.
    assert_eq!(first.len(), 1, "{first:?}");
    let (flx, entries, _) = flx_download(&first[0]);
    assert_eq!(
        (flx.query_version, flx.batch_state),
        (0, BatchState::SteadyState)
    );
    assert!(entries.is_empty());

    // A uploads the schema and two tasks; then set 0 is bootstrapped (one changeset, never
    // zero), with nothing of the Task class in it.
    let (t1, t2) = (create_task(1, "one", false), create_task(2, "two", true));
    send(&mut a, upload(1, 3, &[(1, SCHEMA), (2, &t1), (3, &t2)])).await;
    let got = marked(&mut a, 2).await;
    let boot: Vec<_> = got
        .iter()
        .map(flx_download)
        .filter(|(flx, _, _)| flx.batch_state != BatchState::SteadyState)
        .collect();
    assert_eq!(boot.len(), 1, "{got:?}");
    assert_eq!(
        (boot[0].0.query_version, boot[0].0.batch_state),
        (0, BatchState::LastInBatch)
    );
    assert_eq!(boot[0].1.len(), 1);
    assert!(task_ops(&boot[0].1).is_empty());
    for m in &got {
        if let ServerMessage::Download { entries, .. } = m {
            for e in entries {
                assert!(
                    e.origin_file_ident != 0
                        && e.origin_file_ident != a_id.0
                        && e.server_version > 0
                );
            }
        }
    }

    // Set 1 on A: the open task enters (whole: every field), the done one does not.
    send(&mut a, query(1, 1, "{\"Task\":\"(done == false )\"}")).await;
    let got = marked(&mut a, 3).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let (flx, entries, _) = flx_download(&got[0]);
    assert_eq!(
        (flx.query_version, flx.batch_state),
        (1, BatchState::LastInBatch)
    );
    assert_eq!(
        task_ops(&entries),
        ["create 01", "set done 01", "set title 01"]
    );

    // B subscribes to the done tasks.
    let mut b = flx_client(&f).await;
    let (b_id, got) = flx_fresh(&mut b, 1).await;
    // A fresh client skips the history (one empty DOWNLOAD to the latest version), then gets
    // its bootstrap of set 0. Version 4 is the empty changeset that gave A's bootstrap of
    // set 1, which copied a task, a version of its own (`ServerFile::flx_bootstrap`).
    let states: Vec<_> = got
        .iter()
        .map(|m| {
            let (flx, entries, cursor) = flx_download(m);
            (flx.batch_state, entries.len(), cursor)
        })
        .collect();
    assert_eq!(
        states,
        [
            (BatchState::SteadyState, 0, 4),
            (BatchState::LastInBatch, 1, 4)
        ]
    );
    send(&mut b, query(1, 1, "{\"Task\":\"done == true\"}")).await;
    let got = marked(&mut b, 2).await;
    let (_, entries, _) = flx_download(&got[0]);
    // B's latest server version and its salt (each version has its own).
    let b_salt = match &got[0] {
        ServerMessage::Download {
            latest_server_version: 5,
            latest_server_version_salt,
            ..
        } => *latest_server_version_salt,
        other => panic!("B's bootstrap at server version 5 expected, got {other:?}"),
    };
    assert_eq!(
        task_ops(&entries),
        ["create 02", "set done 02", "set title 02"]
    );

    // A marks task 1 done: it leaves A's view (erased there) and enters B's.
    let done = set_done(1, true);
    let mut up = upload(1, 4, &[(4, &done)]);
    if let ClientMessage::Upload {
        progress_server_version,
        entries,
        ..
    } = &mut up
    {
        *progress_server_version = 4;
        entries[0].last_integrated_server_version = 4;
    }
    send(&mut a, up).await;
    let ops = marked_ops(&mut a, 4).await;
    assert_eq!(ops, ["erase 01"]);
    let ops = marked_ops(&mut b, 3).await;
    assert_eq!(ops, ["create 01", "set done 01", "set title 01"]);

    // Sets the server cannot evaluate get QUERY_ERROR 226 and the session goes on.
    for (version, body) in [
        (2, "{\"Task\":\"nosuchfield == 1\"}"),
        (3, "{\"Task\":\"done == true SORT(title ASC)\"}"),
        (4, "[]"),
    ] {
        send(&mut a, query(1, version, body)).await;
        match recv(&mut a).await {
            ServerMessage::QueryError {
                code: 226,
                session: 1,
                query_version,
                message,
            } => assert!(query_version == version && !message.is_empty()),
            other => panic!("QUERY_ERROR expected for {body}, got {other:?}"),
        }
    }
    send(&mut a, query(1, 5, "{\"Task\":\"TRUEPREDICATE\"}")).await;
    let got = marked(&mut a, 5).await;
    let (flx, entries, latest) = flx_download(got.last().unwrap());
    let ServerMessage::Download {
        latest_server_version_salt: salt,
        ..
    } = got.last().unwrap()
    else {
        unreachable!()
    };
    assert_eq!(
        (flx.query_version, flx.batch_state),
        (5, BatchState::LastInBatch)
    );
    assert_eq!(
        task_ops(&entries),
        [
            "create 01",
            "set done 01",
            "set title 01",
            "create 02",
            "set done 02",
            "set title 02"
        ]
    );

    // A reconnects at its cursor with set 5 active: no new bootstrap, the MARK comes at once.
    drop(a);
    let mut a = flx_reconnect(
        &f,
        a_id,
        [latest, 4, latest, *salt],
        5,
        "{\"Task\":\"TRUEPREDICATE\"}",
    )
    .await;
    let got = marked(&mut a, 1).await;
    assert!(
        got.iter()
            .all(|m| flx_download(m).0.batch_state == BatchState::SteadyState),
        "{got:?}"
    );
    assert!(
        got.iter().all(|m| task_ops(&flx_download(m).1).is_empty()),
        "{got:?}"
    );

    // B lost the DOWNLOAD that brought task 1 into its view (it reconnects with the cursor of
    // its bootstrap, 5): the server rolls the view back and sends task 1 again.
    drop(b);
    let mut b = flx_reconnect(
        &f,
        b_id,
        [5, 0, 5, b_salt],
        1,
        "{\"Task\":\"done == true\"}",
    )
    .await;
    let ops = marked_ops(&mut b, 1).await;
    assert_eq!(ops, ["create 01", "set done 01", "set title 01"]);
}

#[tokio::test]
async fn flexible_sync_rules_filter_reads_and_revert_forbidden_writes() {
    use tandem::changeset::Payload;
    let rules = r#"{"default":{"read":false,"write":false},
        "classes":{"Task":{"read":"done == false","write":"title == %%user.id"}}}"#;
    let f = fixture_full(
        "flxrules",
        "all-authenticated",
        1800,
        Limits::default(),
        Some(rules),
    )
    .await;
    let (mut a, a_user) = flx_user(&f).await;
    flx_fresh(&mut a, 1).await;
    send(&mut a, upload(1, 1, &[(1, SCHEMA)])).await;
    send(&mut a, query(1, 1, "{\"Task\":\"TRUEPREDICATE\"}")).await;
    assert!(marked_ops(&mut a, 9).await.is_empty());
    // Task 1 is A's (its title is A's id); task 2 is not: its creation is reverted.
    let own = create_task(1, &a_user, false);
    let other = create_task(2, "someone else", false);
    let mut up = upload(1, 3, &[(2, &own), (3, &other)]);
    if let ClientMessage::Upload {
        progress_server_version,
        entries,
        ..
    } = &mut up
    {
        *progress_server_version = 1;
        for e in entries {
            e.last_integrated_server_version = 1;
        }
    }
    send(&mut a, up).await;
    let error = recv(&mut a).await;
    let (code, body) = json_error(error, 1);
    assert_eq!(code, 231, "{body}");
    assert_eq!(body["action"], "Warning");
    assert_eq!(body["rejectedClientVersion"], 3);
    let rejected = body["rejectedUpdates"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{body}");
    assert_eq!(rejected[0]["table"], "Task");
    // ObjectId 0...02: payload type 10, then its 12 bytes.
    assert_eq!(rejected[0]["pk"], "CgAAAAAAAAAAAAAAAg==");
    assert!(rejected[0]["reason"].as_str().unwrap().contains("Task"));
    let revert_at = body["compensatingWriteServerVersion"].as_u64().unwrap();
    // The next DOWNLOAD reaches the revert's version and erases task 2 on A; task 1, which A
    // created and nobody else can have written, joined A's view when it was integrated and is
    // not sent back.
    let ops = marked_ops(&mut a, 2).await;
    assert_eq!(ops, ["erase 02"]);

    // A may not take its own task's title away from itself: the old title comes back.
    let rename = task_changeset(1, false, &[("title", Payload::String("stolen".into()))]);
    let mut up = upload(1, 4, &[(4, &rename)]);
    if let ClientMessage::Upload {
        progress_server_version,
        entries,
        ..
    } = &mut up
    {
        *progress_server_version = revert_at;
        entries[0].last_integrated_server_version = revert_at;
    }
    send(&mut a, up).await;
    let (code, _) = json_error(recv(&mut a).await, 1);
    assert_eq!(code, 231);
    let ops = marked_ops(&mut a, 3).await;
    assert!(ops.contains(&"set title 01".to_owned()), "{ops:?}");

    // Reads: B subscribes to every task but sees only open ones; task 1 closed by A leaves
    // B's view.
    let mut b = flx_client(&f).await;
    flx_fresh(&mut b, 1).await;
    send(&mut b, query(1, 1, "{\"Task\":\"TRUEPREDICATE\"}")).await;
    assert_eq!(
        marked_ops(&mut b, 2).await,
        ["create 01", "set done 01", "set title 01"]
    );
}
