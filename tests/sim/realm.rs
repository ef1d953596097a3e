//! A realm-core-style partition session in the simulation ([`Shape::realm`](crate::plan::Shape),
//! `SIM_REALM=1`): a read-only peer that does what a realm-core 14 app's sync client does on the
//! wire, against the same server and the same server file as the Tandem clients. It logs in
//! through the App Services API (`POST .../auth/providers/anon-user/login`, over the simulated
//! network), opens the Realm sync route (`/api/client/v2.0/app/<app>/realm-sync?baas_at=<access
//! token>`, protocol `com.mongodb.realm-sync#14`), binds the partition `"sim"` (server path
//! `/"sim"`, `src/server/realm/partition.rs`), sends IDENT with its progress, and applies every
//! DOWNLOAD to an in-memory replica ([`tandem::state::State`]). It obeys what realm-core obeys:
//! WebSocket close 4001 logs in again, a JSON_ERROR whose `action` is `ClientReset` (or
//! `ClientResetNoRecovery`) starts the file again from nothing, an ERROR or a dropped
//! connection reconnects. An error realm-core could not survive (`ApplicationBug`,
//! `ProtocolViolation`, a message it cannot parse, a DOWNLOAD that does not apply) is noted as
//! broken and fails the seed.
//!
//! Read-only: it uploads nothing, so its replica needs no merge (what realm-core's uploads do is
//! covered by the realm-core compatibility suite, `tests/realm-compat`). At quiescence its
//! replica must equal the server's, with its download cursor at the latest version.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tandem::protocol::{BatchState, ClientMessage, FlxQuery, Limits, ServerMessage};
use tandem::state::State;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The App Services app id the simulated server serves.
pub const APP: &str = "sim-app";
/// The partition value the observer binds (a string, as Extended JSON: the BIND path).
pub const PARTITION: &str = "\"sim\"";
/// The Tandem server path of [`PARTITION`]: the file the Tandem clients share with it.
pub const PATH: &str = "/\"sim\"";
/// The Realm sync protocol a partition-based observer offers (realm-core 14).
const OFFER: &str = "com.mongodb.realm-sync#14";
/// The one a flexible sync observer offers (realm-core 14).
const FLX_OFFER: &str = "com.mongodb.realm-query-sync#14";
/// A flexible sync BIND path: realm-core's JSON (every flexible session binds the server's
/// flexible sync file).
const FLX_BIND: &str = r#"{"schemaVersion":0,"sessionReason":0}"#;
/// The flexible sync observer's subscription set (version 1): every object of every class the
/// clients write.
const FLX_ALL: &str =
    r#"{"Entry":"TRUEPREDICATE","Journal":"TRUEPREDICATE","Task":"TRUEPREDICATE"}"#;
/// How often it sends PING on an open connection (realm-core: every 60 s).
const PING_EVERY: Duration = Duration::from_secs(60);
/// How long it waits before connecting again after a connection ends.
const RECONNECT_AFTER: Duration = Duration::from_millis(1000);
/// How long a login or a handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(30);

/// The observer's file: what realm-core keeps in its realm and sync metadata.
#[derive(Default)]
pub struct Observer {
    /// A flexible sync session (subscribed to everything) instead of a partition-based one.
    pub flexible: bool,
    /// Flexible sync: the version of the set whose bootstrap it integrated (0: the empty set).
    pub active: Cell<u64>,
    /// Flexible sync: the changesets of the bootstrap being received, applied with its last
    /// batch (realm-core's pending bootstrap store).
    staged: RefCell<Vec<tandem::changeset::Changeset>>,
    /// The replica the DOWNLOADs built.
    pub state: RefCell<State>,
    /// Its client file ident and salt, once the server allocated them.
    pub ident: Cell<Option<(u64, u64)>>,
    /// Download server version, latest server version and its salt, as of the last DOWNLOAD.
    pub progress: Cell<(u64, u64, u64)>,
    /// Its App Services access token, while it has one.
    token: RefCell<Option<String>>,
    /// Whether its session got a DOWNLOAD since it last connected (false while none is open).
    pub connected: Cell<bool>,
    /// How many times it started its file again (client resets).
    pub resets: Cell<u32>,
    /// What realm-core could not have survived.
    pub broken: RefCell<Vec<String>>,
    /// The run's trace (shared with the world).
    pub trace: Rc<RefCell<Vec<String>>>,
}

/// Why a connection ended.
enum End {
    /// Connect again.
    Retry(String),
    /// Log in again, then connect (close 4001).
    Login(String),
    /// Start the file again from nothing, then connect (a client reset).
    Reset(String),
    /// Realm-core would have stopped (or crashed): noted, and the observer stops.
    Broken(String),
}

impl Observer {
    /// A fresh file (no ident yet) that notes into `trace`; `flexible` for a flexible sync
    /// session subscribed to every object.
    pub fn new(trace: Rc<RefCell<Vec<String>>>, flexible: bool) -> Observer {
        Observer {
            trace,
            flexible,
            ..Observer::default()
        }
    }

    /// Whether it holds the server's `state` with its download cursor at the latest version
    /// the server told it of.
    pub fn caught_up(&self, state: &State) -> bool {
        let (download, latest, _) = self.progress.get();
        self.ident.get().is_some()
            && (!self.flexible || self.active.get() == 1)
            && download == latest
            && self.state.borrow().objects == state.objects
    }

    /// A line for a failure's description.
    pub fn describe(&self) -> String {
        format!(
            "realm observer: ident {:?}, progress {:?}, {} resets, connected {}, objects {:?}",
            self.ident.get(),
            self.progress.get(),
            self.resets.get(),
            self.connected.get(),
            self.state.borrow().objects
        )
    }

    /// Drops its replica, a bootstrap half received and its token (what its host allocated),
    /// before the leak check.
    pub fn forget(&self) {
        *self.state.borrow_mut() = State::default();
        *self.staged.borrow_mut() = Vec::new();
        *self.token.borrow_mut() = None;
    }

    /// A trace line stamped with the simulated time (charged to no host: the test's note).
    fn log(&self, line: String) {
        let at = turmoil::sim_elapsed().unwrap_or_default().as_millis();
        tandem::sim::untagged(|| {
            self.trace
                .borrow_mut()
                .push(format!("{at} ms: realm observer: {line}"))
        });
    }

    fn note_broken(&self, why: String) {
        tandem::sim::untagged(|| {
            self.broken
                .borrow_mut()
                .push(format!("realm observer: {why}"))
        });
    }

    /// Forgets everything: a fresh file (realm-core's client reset, discarding local: it has
    /// no local changes).
    fn reset(&self) {
        *self.state.borrow_mut() = State::default();
        self.ident.set(None);
        self.progress.set((0, 0, 0));
        self.active.set(0);
        self.staged.borrow_mut().clear();
        self.resets.set(self.resets.get() + 1);
    }
}

/// The observer's host: sessions one after another, as long as the simulation runs.
pub async fn run(observer: Rc<Observer>) -> Result<(), Box<dyn std::error::Error>> {
    loop {
        let end = session(&observer).await;
        observer.connected.set(false);
        match end {
            End::Retry(why) => observer.log(format!("reconnects ({why})")),
            End::Login(why) => {
                observer.log(format!("logs in again ({why})"));
                *observer.token.borrow_mut() = None;
            }
            End::Reset(why) => {
                observer.log(format!("client reset ({why})"));
                observer.reset();
            }
            End::Broken(why) => {
                observer.log(format!("stopped: {why}"));
                observer.note_broken(why);
                return Ok(());
            }
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// An anonymous login through the App Services API: the access token.
async fn login() -> Result<String, String> {
    let body = r#"{"provider":"anon-user","options":{"device":{}}}"#;
    let request = format!(
        "POST /api/client/v2.0/app/{APP}/auth/providers/anon-user/login HTTP/1.1\r\n\
         Host: server\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut tcp = turmoil::net::TcpStream::connect(("server", crate::world::PORT))
            .await
            .map_err(|e| format!("login: connect: {e}"))?;
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("login: send: {e}"))?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer)
            .await
            .map_err(|e| format!("login: read: {e}"))?;
        Ok::<_, String>(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(HANDSHAKE, exchange)
        .await
        .map_err(|_| "login: timed out".to_owned())??;
    let status = answer.get(9..12).unwrap_or("");
    if status != "200" {
        return Err(format!("login: HTTP {status}"));
    }
    // The JSON object (a chunked body has its chunk sizes around it).
    let json = match (answer.find('{'), answer.rfind('}')) {
        (Some(a), Some(b)) if a < b => &answer[a..=b],
        _ => return Err("login: no JSON body".into()),
    };
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("login: {e}"))?;
    value["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "login: no access_token".into())
}

fn encode(m: ClientMessage) -> Message {
    Message::Binary(m.encode().into())
}

/// One connection: log in if needed, open the Realm route, BIND and IDENT, then apply
/// DOWNLOADs until it ends.
async fn session(o: &Observer) -> End {
    let known = o.token.borrow().clone();
    let token = match known {
        Some(token) => token,
        None => match login().await {
            Ok(token) => {
                *o.token.borrow_mut() = Some(token.clone());
                token
            }
            Err(why) => return End::Retry(why),
        },
    };
    let url = format!(
        "ws://server:{}/api/client/v2.0/app/{APP}/realm-sync?baas_at={token}",
        crate::world::PORT
    );
    let mut request = match url.into_client_request() {
        Ok(r) => r,
        Err(e) => return End::Broken(format!("request: {e}")),
    };
    let offer = if o.flexible { FLX_OFFER } else { OFFER };
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        offer.parse().expect("a header value"),
    );
    let open = async {
        let tcp = turmoil::net::TcpStream::connect(("server", crate::world::PORT))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tokio_tungstenite::client_async(request, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))
    };
    let mut ws = match tokio::time::timeout(HANDSHAKE, open).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(why)) => return End::Retry(why),
        Err(_) => return End::Retry("handshake timed out".into()),
    };
    let need_ident = o.ident.get().is_none();
    let bind = ClientMessage::Bind {
        session: 1,
        path: if o.flexible { FLX_BIND } else { PARTITION }.into(),
        token: String::new(),
        need_client_file_ident: need_ident,
        is_subserver: false,
    };
    if let Err(e) = ws.send(encode(bind)).await {
        return End::Retry(format!("send BIND: {e}"));
    }
    let mut identified = false;
    if !need_ident {
        if let Err(end) = ident(o, &mut ws).await {
            return end;
        }
        identified = true;
    }
    let limits = Limits::default();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        let frame = tokio::select! {
            frame = ws.next() => frame,
            _ = ping.tick() => {
                let at = turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64;
                if let Err(e) = ws.send(encode(ClientMessage::Ping { timestamp: at, rtt: 0 })).await {
                    return End::Retry(format!("send PING: {e}"));
                }
                continue;
            }
        };
        let bytes = match frame {
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Close(frame))) => {
                let (code, why) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((0, String::new()));
                return match code {
                    4001 => End::Login(format!("closed 4001: {why}")),
                    1009 => End::Reset(format!("closed 1009: {why}")),
                    _ => End::Retry(format!("closed {code}: {why}")),
                };
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return End::Retry(format!("connection: {e}")),
            None => return End::Retry("connection ended".into()),
        };
        let message = match ServerMessage::parse(&bytes, &limits) {
            Ok(m) => m,
            Err(e) => return End::Broken(format!("a message it cannot parse: {e}")),
        };
        match message {
            ServerMessage::Ident {
                client_file_ident,
                client_file_ident_salt,
                ..
            } if !identified => {
                o.ident
                    .set(Some((client_file_ident, client_file_ident_salt)));
                if let Err(end) = ident(o, &mut ws).await {
                    return end;
                }
                identified = true;
            }
            ServerMessage::Download {
                download_server_version,
                latest_server_version,
                latest_server_version_salt,
                entries,
                flx,
                ..
            } => {
                let mut changesets = Vec::with_capacity(entries.len());
                for entry in &entries {
                    match entry.to_changeset() {
                        Ok(cs) => changesets.push(cs),
                        Err(e) => {
                            return End::Broken(format!(
                                "server version {} does not decode: {e}",
                                entry.server_version
                            ))
                        }
                    }
                }
                // A bootstrap's batches are applied together with its last one.
                let bootstrap = flx.filter(|f| f.batch_state != BatchState::SteadyState);
                if let Some(f) = bootstrap {
                    o.staged.borrow_mut().extend(changesets);
                    if f.batch_state == BatchState::MoreToCome {
                        continue;
                    }
                    changesets = std::mem::take(&mut *o.staged.borrow_mut());
                }
                let mut state = o.state.borrow_mut();
                for cs in &changesets {
                    if let Err(e) = state.apply(cs) {
                        return End::Broken(format!(
                            "server version {} does not apply: {e}",
                            cs.meta.version
                        ));
                    }
                }
                drop(state);
                if let Some(f) = bootstrap {
                    o.active.set(f.query_version);
                }
                o.progress.set((
                    download_server_version,
                    latest_server_version,
                    latest_server_version_salt,
                ));
                o.connected.set(true);
            }
            ServerMessage::Mark { .. } | ServerMessage::Pong { .. } => {}
            ServerMessage::QueryError { code, message, .. } => {
                return End::Broken(format!("QUERY_ERROR {code}: {message}"))
            }
            ServerMessage::Unbound { .. } => return End::Retry("UNBOUND".into()),
            ServerMessage::Error { code, message, .. } => {
                return End::Retry(format!("ERROR {code}: {message}"))
            }
            ServerMessage::JsonError { code, json, .. } => {
                let value: serde_json::Value = match serde_json::from_str(&json) {
                    Ok(v) => v,
                    Err(e) => return End::Broken(format!("JSON_ERROR {code} is not JSON: {e}")),
                };
                let action = value["action"].as_str().unwrap_or("").to_owned();
                return match action.as_str() {
                    "ClientReset" | "ClientResetNoRecovery" => {
                        End::Reset(format!("JSON_ERROR {code} {action}"))
                    }
                    "Warning" => continue,
                    "ApplicationBug" | "ProtocolViolation" | "" => {
                        End::Broken(format!("JSON_ERROR {code} with action {action:?}: {json}"))
                    }
                    _ => End::Retry(format!("JSON_ERROR {code} {action}")),
                };
            }
            other => {
                return End::Broken(format!(
                    "a message a partition session never gets: {other:?}"
                ))
            }
        }
    }
}

/// IDENT with the file's ident and progress (realm-core's `SessionImpl::send_ident_message`).
async fn ident<S>(o: &Observer, ws: &mut S) -> Result<(), End>
where
    S: futures_util::Sink<Message> + Unpin,
    S::Error: std::fmt::Display,
{
    let Some((client_file_ident, client_file_ident_salt)) = o.ident.get() else {
        return Err(End::Broken("IDENT without an ident".into()));
    };
    let (download, latest, salt) = o.progress.get();
    // Flexible sync: the active set (the empty set 0, or everything once its bootstrap was
    // integrated); a bootstrap half received is received again.
    o.staged.borrow_mut().clear();
    let query = o.flexible.then(|| FlxQuery {
        version: o.active.get(),
        body: if o.active.get() == 0 { "{}" } else { FLX_ALL }.into(),
    });
    ws.send(encode(ClientMessage::Ident {
        session: 1,
        client_file_ident,
        client_file_ident_salt,
        download_server_version: download,
        download_client_version: 0,
        latest_server_version: latest,
        latest_server_version_salt: salt,
        query,
    }))
    .await
    .map_err(|e| End::Retry(format!("send IDENT: {e}")))?;
    // Its one subscription set, sent until its bootstrap is integrated.
    if o.flexible && o.active.get() == 0 {
        ws.send(encode(ClientMessage::Query {
            session: 1,
            query: FlxQuery {
                version: 1,
                body: FLX_ALL.into(),
            },
        }))
        .await
        .map_err(|e| End::Retry(format!("send QUERY: {e}")))?;
    }
    Ok(())
}
