//! The network side of the server: the TLS 1.3 (or plain) listener, hyper's HTTP/1.1 server on
//! every connection, WebSocket upgrades for both sync dialects (Tandem's `com.tandem.sync#N`
//! with a bearer token; Realm's `com.mongodb.realm-sync#N` on the App Services route with
//! `baas_at`), the App Services routes for every other request, and the per-connection session
//! loop on top of [`ServerFile`](super::file::ServerFile)s.
//!
//! One connection carries any number of sessions (BIND ... UNBIND), each bound to a server path.
//! Each path's [`ServerFile`](super::file::ServerFile) is shared by its sessions; after an upload is integrated, every
//! other session bound to that path is told, and sends the new history as DOWNLOAD. A protocol
//! violation gets an ERROR (Realm clients: what [`realm::reply_to_error`] says):
//! connection-level codes (100-199) end the connection, session-level ones (200-299) end that
//! session. Nothing a client sends reaches another client unless it was integrated and applied.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::{BTreeSet, HashSet};
use std::convert::Infallible;

use axum::body::Body;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{
    AUTHORIZATION, CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::service::Service as _;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::admission::{self, Admitted, READ_BUFFER_SIZE, WRITE_BUFFER_SIZE};
use super::app::{AccessTokenError, AppServices, RequestTls};
use super::realm::{self, ErrorReply};
use super::session::{error, handle, lock_read, Connection, InMemory, Peer};
use super::shared::ServerConfig;
use super::shared::{Rates, Shared, Waker};
use super::unix_now;
use crate::protocol::ServerMessage;
use crate::protocol::{self, ErrorCode, ProtocolError};
use std::sync::atomic::Ordering;

/// A running server.
pub struct RunningServer {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: tokio::sync::watch::Sender<bool>,
    shared: Arc<Shared>,
    /// Stops the metrics listener when the server is dropped.
    _metrics: Option<super::ops::MetricsListener>,
    /// The data directory's lock, held while the server runs ([`lock_data_dir`]).
    _data_dir_lock: Option<rusqlite::Connection>,
}

/// The lock file in the data directory that one running server holds.
pub const DATA_DIR_LOCK: &str = "tandem-server.lock";

/// Takes the data directory for this server: an SQLite file in it held in exclusive locking
/// mode for as long as the returned connection lives (SQLite's own file locks, which hold
/// across processes and between connections of one process). A second server on the same
/// directory is refused at start: both would write the same server files, and the second's
/// writes failed with storage faults (found by a new user's trial). A lock that cannot be
/// taken for another reason (a full disk when the lock file must be made) is logged and the
/// server starts without it: a server starts on a full disk and recovers by itself.
fn lock_data_dir(dir: &std::path::Path) -> Result<Option<rusqlite::Connection>, StartError> {
    use crate::store::lock::{hold_lock_file, LockFile};
    let path = dir.join(DATA_DIR_LOCK);
    match hold_lock_file(&path) {
        LockFile::Held(conn) => Ok(Some(conn)),
        LockFile::Busy => Err(StartError(format!(
            "the data directory {} is in use by another tandem-server (it holds {}); \
             stop that one, or give this one another --data-dir",
            dir.display(),
            path.display()
        ))),
        LockFile::Unavailable(e) => {
            tracing::warn!(
                lock = %path.display(),
                error = %e,
                "cannot take the data directory's lock; starting without it"
            );
            Ok(None)
        }
    }
}

impl RunningServer {
    /// The server's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> &super::metrics::Metrics {
        &self.shared.metrics
    }

    /// The materialized state of a server path, if a client has bound to it since start (read
    /// from its state file; `None` also if that read fails).
    pub fn state_of(&self, path: &str) -> Option<crate::state::State> {
        let files = self.shared.files.lock().unwrap_or_else(|e| e.into_inner());
        files.get(path).and_then(|f| lock_read(f).state().ok())
    }

    /// Compacts every server file of the data directory now (what `--history-horizon` does
    /// hourly): client files not seen since `horizon_unix_secs` are expired, and the history no
    /// live client needs is compacted ([`super::ServerFile::compact`]). Blocking (SQLite,
    /// fsync): call it off the async runtime's workers.
    pub fn compact(
        &self,
        horizon_unix_secs: u64,
    ) -> Vec<(String, Result<super::file::CompactionReport, ProtocolError>)> {
        super::session::compact_all(&self.shared, horizon_unix_secs)
    }

    /// Stops accepting and ends every connection: each WebSocket connection finishes the
    /// message it is handling (an integration in flight is completed and acknowledged), then
    /// gets ERROR 100 (`try_again`; Realm clients: what [`realm::reply_to_error`] says) and a
    /// close frame. Returns at once; see [`RunningServer::shutdown_graceful`] to wait.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// [`RunningServer::shutdown`], then waits until every WebSocket connection is gone or
    /// `deadline` has passed; whether they are all gone.
    pub async fn shutdown_graceful(&self, deadline: Duration) -> bool {
        self.shutdown();
        let until = tokio::time::Instant::now() + deadline;
        while self.connections() > 0 {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// WebSocket connections being served now.
    pub fn connections(&self) -> usize {
        self.shared.live.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Why the server could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> Result<tokio_rustls::TlsAcceptor, StartError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StartError(format!("reading certificate {}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| StartError(format!("reading private key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| StartError(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError(format!("TLS certificate: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Starts listening; connections are served on the current tokio runtime.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError(format!("data directory {}: {e}", config.data_dir.display())))?;
    // With PostgreSQL the server files are in the database, which several servers share.
    let data_dir_lock = match config.database {
        None => lock_data_dir(&config.data_dir)?,
        Some(_) => None,
    };
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None if config.allow_plain_ws => None,
        None => {
            return Err(StartError(
                "TLS certificate and key are required (or allow plain ws:// explicitly)".into(),
            ))
        }
    };
    admission::raise_nofile_limit();
    let listener = crate::sim::Listener::bind(config.listen)
        .await
        .map_err(|e| StartError(format!("listening on {}: {e}", config.listen)))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| StartError(e.to_string()))?;
    if config.database.is_some() && config.storage.history_horizon.is_some() {
        return Err(StartError(
            "--history-horizon (compaction) is not supported with --database yet".into(),
        ));
    }
    #[cfg(feature = "postgres")]
    let postgres = match &config.database {
        Some(url) => Some(super::postgres::start(url.clone(), &config.data_dir).await?),
        None => None,
    };
    #[cfg(not(feature = "postgres"))]
    if config.database.is_some() {
        return Err(StartError(
            "--database needs a tandem-server built with the cargo feature postgres".into(),
        ));
    }
    let app = match &config.app {
        #[cfg(feature = "postgres")]
        Some(app) if postgres.is_some() => {
            let pg = postgres.as_ref().map(Arc::clone);
            let (app, cache) = (
                app.clone(),
                config.data_dir.join(super::postgres::CACHE_DIR),
            );
            let opened = tokio::task::spawn_blocking(move || {
                AppServices::open_replica(app, &cache, pg.as_ref().expect("checked above"))
            })
            .await
            .map_err(|e| StartError(format!("App Services store: {e}")))?;
            Some(Arc::new(opened.map_err(|e| {
                StartError(format!("App Services store: {}", e.0))
            })?))
        }
        Some(app) => Some(Arc::new(
            AppServices::open(app.clone(), &config.data_dir)
                .map_err(|e| StartError(format!("App Services store: {}", e.0)))?,
        )),
        None => None,
    };
    let (shutdown, stop) = tokio::sync::watch::channel(false);
    #[cfg_attr(not(feature = "postgres"), allow(unused_mut))]
    let mut shared = Shared::new(config, app, stop.clone());
    #[cfg(feature = "postgres")]
    {
        shared.postgres = postgres;
    }
    let shared = Arc::new(shared);
    #[cfg(feature = "postgres")]
    if let Some(pg) = &shared.postgres {
        let weak = Arc::downgrade(&shared);
        let mirror = super::mirror::start_worker(&shared);
        pg.listen(
            Arc::new(move |path: Option<&str>| {
                if let Some(shared) = weak.upgrade() {
                    match path {
                        Some(p) => shared.changed(p),
                        None => shared.changed_all(),
                    }
                }
            }),
            mirror,
        );
    }
    super::session::start_sweeper(&shared);
    crate::sim::spawn_task(accept_loop(Arc::clone(&shared), listener, tls, stop));
    let metrics = match shared.config.observability.metrics_listen {
        Some(addr) => {
            Some(super::ops::serve_metrics(Arc::clone(&shared), shutdown.subscribe(), addr).await?)
        }
        None => None,
    };
    Ok(RunningServer {
        local_addr,
        metrics_addr: metrics.as_ref().map(|m| m.local_addr),
        shutdown,
        shared,
        _metrics: metrics,
        _data_dir_lock: data_dir_lock,
    })
}

/// Accepts connections until shutdown. A connection over a cap is closed at once; an accept
/// error (EMFILE, ENFILE, ENOBUFS...) is logged (at most once per backoff round), counted as
/// `accept_error` and waited out with [`admission::accept_backoff`], never retried in a spin.
async fn accept_loop(
    shared: Arc<Shared>,
    listener: crate::sim::Listener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut errors = 0u32;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => {
                errors = 0;
                accepted
            }
            Err(e) => {
                let wait = admission::accept_backoff(errors);
                shared.metrics.refused("accept_error");
                // Logged on the first error of a run and then once per second of backoff.
                if errors == 0 || wait == Duration::from_secs(1) {
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "accept failed");
                }
                errors = errors.saturating_add(1);
                tokio::select! {
                    biased;
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        let Ok(admitted) = shared.admission.admit() else {
            drop(tcp);
            continue;
        };
        tracing::debug!(%peer, "connection accepted");
        let shared = Arc::clone(&shared);
        let tls = tls.clone();
        crate::sim::spawn_task(serve_connection(shared, tcp, tls, Arc::new(admitted)));
    }
}

/// One accepted TCP connection: the TLS handshake and the first HTTP request must be done
/// within the handshake timeout from accept.
async fn serve_connection(
    shared: Arc<Shared>,
    tcp: Box<dyn crate::sim::Io>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    admitted: Arc<Admitted>,
) {
    let deadline = tokio::time::Instant::now() + shared.config.connection_limits.handshake_timeout;
    match tls {
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => serve_http(shared, stream, true, admitted, deadline).await,
            Ok(Err(e)) => {
                shared.metrics.refused("tls_error");
                tracing::debug!(error = %e, "TLS handshake failed");
            }
            Err(_) => {
                shared.metrics.refused("tls_timeout");
                tracing::debug!("TLS handshake timed out");
            }
        },
        None => serve_http(shared, tcp, false, admitted, deadline).await,
    }
}

/// A plain-text HTTP response.
fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(text.to_owned()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// 404 with App Services' error JSON for an app id this server does not serve
/// (`Content-Type: application/json` exactly, as realm-core reads an error's code only then).
fn unknown_app(app_id: &str) -> Response<Body> {
    let body = serde_json::json!({
        "error": format!("cannot find app using Client App ID {app_id:?}"),
        "error_code": "InvalidParameter",
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Serves one accepted connection (TLS or plain) with hyper's HTTP/1.1 server: WebSocket
/// upgrades go to [`websocket`], every other request to the App Services routes (404 without
/// an app). Each request carries [`RequestTls`] in its extensions.
///
/// The first request's headers must be complete by `deadline` (the handshake timeout from
/// accept); every later request's within the handshake timeout (hyper's header read timeout).
/// Request headers are at most [`MAX_REQUEST_HEADERS`] bytes (431 beyond).
async fn serve_http<S>(
    shared: Arc<Shared>,
    stream: S,
    tls: bool,
    admitted: Arc<Admitted>,
    deadline: tokio::time::Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = shared.stop.clone();
    let service_shared = Arc::clone(&shared);
    let requested = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let service_requested = Arc::clone(&requested);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        service_requested.store(true, std::sync::atomic::Ordering::Release);
        request.extensions_mut().insert(RequestTls(tls));
        request.extensions_mut().insert(Arc::clone(&admitted));
        let shared = Arc::clone(&service_shared);
        async move { Ok::<_, Infallible>(route(shared, request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(shared.config.connection_limits.handshake_timeout)
        .max_buf_size(MAX_REQUEST_HEADERS)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let first_request = async {
        tokio::time::sleep_until(deadline).await;
        if requested.load(std::sync::atomic::Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        biased;
        _ = &mut connection => {
            // hyper's own header read timeout may end it first.
            let requested = requested.load(std::sync::atomic::Ordering::Acquire);
            if !requested && tokio::time::Instant::now() >= deadline {
                shared.metrics.refused("upgrade_timeout");
            }
        }
        _ = stop.changed() => {}
        _ = first_request => {
            shared.metrics.refused("upgrade_timeout");
            tracing::debug!("no complete HTTP request within the handshake timeout");
        }
    }
}

/// Largest HTTP request head (request line and headers) read, in bytes: hyper's read buffer
/// (its smallest allowed value is 8 KiB). Access tokens travel in headers or the query, at most
/// [`super::MAX_TOKEN_LEN`] bytes each.
pub const MAX_REQUEST_HEADERS: usize = 64 << 10;

/// Whether the request asks for a WebSocket (`Upgrade: websocket`).
fn wants_websocket(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn route(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    if wants_websocket(&request) {
        return websocket(shared, request);
    }
    match &shared.app_router {
        Some(router) => match TowerToHyperService::new(router.clone()).call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        None => plain(
            StatusCode::NOT_FOUND,
            "this is a Tandem sync server: connect with a WebSocket",
        ),
    }
}

/// A header's values, comma-joined (a client may split `Sec-WebSocket-Protocol` over lines).
fn header_list(request: &Request<Incoming>, name: &str) -> String {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
}

/// The value of query parameter `name` (not percent-decoded: JWTs need no escaping).
fn query_param<'a>(request: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// The upgrade request's dialect, chosen protocol token and peer; or the HTTP answer refusing
/// it. A peer of `Err((code, reason))` completes the upgrade and is closed with that code.
#[allow(clippy::type_complexity)]
fn handshake(
    shared: &Shared,
    request: &Request<Incoming>,
) -> Result<(String, Result<Peer, (u16, String)>), Box<Response<Body>>> {
    let offer = header_list(request, "Sec-WebSocket-Protocol");
    let realm_route = shared.app.as_ref().filter(|app| {
        request.uri().path() == format!("/api/client/v2.0/app/{}/realm-sync", app.app_id())
    });
    if let Some(app) = realm_route {
        // No common version: HTTP 400, which realm-core reports once as a
        // fatal SyncConnectFailed (the user stays logged in, the app keeps running); a 101
        // with a bad token would crash it (realm-client-spike.md section 6).
        let (token, _, mode) =
            realm::negotiate(&offer).map_err(|e| plain(StatusCode::BAD_REQUEST, &e.to_string()))?;
        // A bad or expired token: complete the upgrade and close with 4001, so that the client
        // refreshes its access token and reconnects (realm-wire-compat.md section 2.5).
        let peer = match query_param(request, "baas_at").map(|t| app.verify_access_token(t)) {
            Some(Ok(user)) => Ok(Peer::Realm {
                user,
                errored: HashSet::new(),
                flexible: mode == realm::Mode::Flexible,
            }),
            Some(Err(AccessTokenError::Expired)) => Err((
                realm::CLOSE_REFRESH_TOKEN,
                "the access token expired".to_owned(),
            )),
            Some(Err(AccessTokenError::Invalid(why))) => Err((
                realm::CLOSE_REFRESH_TOKEN,
                format!("bad access token: {why}"),
            )),
            // The user store is unavailable: 503 before the upgrade, which realm-core retries
            // with back-off without logging the user out (realm-wire-compat.md, HTTP statuses).
            Some(Err(AccessTokenError::Unavailable(why))) => {
                tracing::error!(error = %why, "a Realm client's token could not be checked");
                return Err(Box::new(plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the user store is unavailable; try again",
                )));
            }
            None => Err((
                realm::CLOSE_REFRESH_TOKEN,
                "no access token (baas_at)".to_owned(),
            )),
        };
        return Ok((token, peer));
    }
    // The Realm route of an app this server does not serve (a typo in the app id, or no
    // `--app-id`): the App Services answer for an unknown app, 404 `InvalidParameter`, rather
    // than Tandem's own dialect refusing a protocol it never offered.
    if let Some(other) = request
        .uri()
        .path()
        .strip_prefix("/api/client/v2.0/app/")
        .and_then(|rest| rest.strip_suffix("/realm-sync"))
    {
        return Err(Box::new(unknown_app(other)));
    }
    let version =
        protocol::negotiate(&offer).map_err(|e| plain(StatusCode::BAD_REQUEST, &e.message))?;
    let bearer = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let handshake = match bearer {
        Some(token) => match shared.config.auth.verify(token) {
            Ok(claims) => Some(Ok(claims)),
            Err(e) => return Err(Box::new(plain(StatusCode::UNAUTHORIZED, &e.message))),
        },
        None => None,
    };
    Ok((
        format!("{}{version}", protocol::PROTOCOL_PREFIX),
        Ok(Peer::Tandem { handshake }),
    ))
}

/// Answers a WebSocket upgrade by hand (RFC 6455 section 4.2; never permessage-deflate) and
/// serves the upgraded connection in its own task.
fn websocket(shared: Arc<Shared>, mut request: Request<Incoming>) -> Response<Body> {
    let headers = request.headers();
    let has_token = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let upgrade_ok = request.method() == Method::GET && has_token(CONNECTION, "upgrade");
    if !upgrade_ok {
        return plain(StatusCode::BAD_REQUEST, "not a WebSocket upgrade request");
    }
    if !has_token(SEC_WEBSOCKET_VERSION, "13") {
        let mut response = plain(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only");
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return plain(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key");
    };
    let accept = derive_accept_key(key.as_bytes());
    let (protocol_token, peer) = match handshake(&shared, &request) {
        Ok(chosen) => chosen,
        Err(refusal) => return *refusal,
    };
    let Some(admitted) = request.extensions().get::<Arc<Admitted>>().cloned() else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "connection not admitted");
    };
    // A token verified in the handshake authenticates the connection; otherwise its first
    // BIND with a valid token does.
    if matches!(
        peer,
        Ok(Peer::Realm { .. })
            | Ok(Peer::Tandem {
                handshake: Some(Ok(_))
            })
    ) {
        admitted.authenticated();
    }
    let (Ok(accept), Ok(protocol_token)) = (
        HeaderValue::from_str(&accept),
        HeaderValue::from_str(&protocol_token),
    ) else {
        return plain(StatusCode::BAD_REQUEST, "unusable WebSocket headers");
    };
    let upgrade = hyper::upgrade::on(&mut request);
    crate::sim::spawn_task(async move {
        let Ok(upgraded) = upgrade.await else { return };
        // Frames and messages up to `max_body` and a header line: a larger one is cut off
        // when its frame header (or the fragment that crosses the limit) arrives, and answered
        // with 104 like a parser would; nothing beyond the limit is ever buffered. Outbound:
        // one whole DOWNLOAD batch (or STATE segment) at most beside tungstenite's write buffer.
        let largest_send = shared
            .config
            .sessions
            .download_batch
            .max(super::session::STATE_SEGMENT);
        let config = crate::client::websocket_config(shared.config.limits.max_body)
            .read_buffer_size(READ_BUFFER_SIZE)
            .write_buffer_size(WRITE_BUFFER_SIZE)
            .max_write_buffer_size(
                WRITE_BUFFER_SIZE + protocol::limits::max_frame_size(largest_send),
            );
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        match peer {
            Ok(peer) => serve_websocket(shared, ws, peer, admitted).await,
            Err((code, reason)) => close(&mut ws, code, &reason).await,
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    headers.insert("Sec-WebSocket-Protocol", protocol_token);
    if crate::sim::in_simulation() {
        // hyper stamps `Date` by the system clock; a simulated host's clients read the
        // simulated one (`correct_clock`).
        if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(crate::sim::now())) {
            headers.insert(hyper::header::DATE, date);
        }
    }
    response
}

/// How long a close frame may take to be written to a peer that does not read.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long, and how many bytes, the server keeps reading (and discarding) from a client it
/// is closing: see [`linger`].
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 32 << 20;

/// Sends a close frame with `code` and `reason` (cut to the 123 bytes a frame allows), then
/// lingers so the frame is not lost to a TCP reset.
async fn close<S>(ws: &mut WebSocketStream<S>, code: u16, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason[..end].into(),
    };
    linger(ws, Some(frame)).await;
}

/// Ends a connection whose last message was written: sends a close frame (`frame`, or one
/// without a code), then reads and discards what the client still sends until it
/// closes, for at most [`LINGER_TIME`] and [`LINGER_BYTES`]. Closing a socket with unread
/// input makes the kernel send a TCP reset, and a reset can destroy the ERROR still in flight
/// in the client's receive buffer (a client cut off mid-upload by a message limit saw
/// "connection reset" instead of error 104). Reads below the WebSocket layer, so a stream
/// that already failed (a message over the limit) is drained too.
async fn linger<S>(ws: &mut WebSocketStream<S>, frame: Option<CloseFrame>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(frame)).await;
    let raw = ws.get_mut();
    let drain = async {
        // On the heap: an array here would be part of every connection's future (this one
        // is awaited inside it), 8 KiB per connection for as long as it lives, lingering or
        // not (found by `benches/load.rs`: 22.5 -> 31 KiB per session).
        let mut scratch = vec![0u8; 8 << 10];
        let mut total = 0;
        while total < LINGER_BYTES {
            match raw.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// What a connection holds in the shared registries (its wake-ups per path, its user's rate
/// limits, the session and connection counts), brought in line with its sessions by
/// [`Registration::sync`] and released on drop, whatever ends the connection.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
    waker: Arc<Waker>,
    /// Paths it is woken for: those of its bound sessions.
    paths: BTreeSet<String>,
    /// Sessions counted in `sessions_open`.
    sessions: usize,
    /// The connection's user and their shared rate limits.
    user: Option<(String, Arc<Mutex<Rates>>)>,
}

impl Registration {
    fn new(shared: Arc<Shared>) -> Registration {
        shared.live.fetch_add(1, Ordering::AcqRel);
        Registration {
            id: shared.connection_id(),
            shared,
            waker: Arc::default(),
            paths: BTreeSet::new(),
            sessions: 0,
            user: None,
        }
    }

    /// Subscribes to the paths of the connection's sessions (and only those) and counts them.
    fn sync(&mut self, connection: &Connection) {
        let paths: BTreeSet<String> = connection
            .sessions
            .values()
            .map(|s| s.path.clone())
            .collect();
        for added in paths.difference(&self.paths) {
            self.shared.subscribe(added, self.id, &self.waker);
        }
        for removed in self.paths.difference(&paths) {
            self.shared.unsubscribe(removed, self.id);
        }
        self.paths = paths;
        let open = &self.shared.metrics.sessions_open;
        open.inc_by(connection.sessions.len() as i64 - self.sessions as i64);
        self.sessions = connection.sessions.len();
        if let (None, Some(user)) = (&self.user, &connection.user) {
            self.user = Some((user.clone(), self.shared.user_rates(user)));
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        for path in &self.paths {
            self.shared.unsubscribe(path, self.id);
        }
        self.shared
            .metrics
            .sessions_open
            .dec_by(self.sessions as i64);
        if let Some((user, rates)) = self.user.take() {
            drop(rates);
            self.shared.release_user(&user);
        }
        self.shared.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends one message, counting it; false when the connection is gone or the send made no
/// progress within `--send-timeout` (the peer does not read).
async fn send<S>(ws: &mut WebSocketStream<S>, shared: &Shared, message: &ServerMessage) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let bytes = message.encode();
    let len = bytes.len() as u64;
    let timeout = shared.config.sessions.send_timeout;
    match tokio::time::timeout(timeout, ws.send(Message::Binary(bytes.into()))).await {
        Ok(Ok(())) => {
            shared.metrics.bytes_sent.inc_by(len);
            if matches!(message, ServerMessage::Download { .. }) {
                shared.metrics.downloads.inc();
            }
            true
        }
        Ok(Err(_)) => false,
        Err(_) => {
            shared.metrics.refused("send_timeout");
            tracing::warn!(
                seconds = timeout.as_secs_f64(),
                "a client did not read within the send timeout: connection closed"
            );
            false
        }
    }
}

/// Reports `e` (ending `session`, or the connection for 0) to the peer in its dialect; whether
/// the connection goes on.
async fn report<S>(
    ws: &mut WebSocketStream<S>,
    shared: &Shared,
    connection: &mut Connection,
    e: ProtocolError,
    session: u64,
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tracing::warn!(
        code = e.code.code(),
        session,
        user = connection.user.as_deref().unwrap_or(""),
        message = %e.message,
        "error sent to a client"
    );
    if matches!(connection.peer, Peer::Tandem { .. }) {
        shared.metrics.error(u64::from(e.code.code()));
        let connection_level = e.code.is_connection_level() || session == 0;
        let session = if connection_level { 0 } else { session };
        let sent = send(ws, shared, &error(e.code, &e.message, session)).await;
        if connection_level || !sent {
            linger(ws, None).await;
            return false;
        }
        connection.remove(session);
        return true;
    }
    match realm::reply_to_error(&e, session) {
        ErrorReply::Session(message) => {
            shared.metrics.error(u64::from(e.code.code()));
            connection.remove(session);
            if let Peer::Realm { errored, .. } = &mut connection.peer {
                errored.insert(session);
            }
            send(ws, shared, &message).await
        }
        ErrorReply::Connection(message) => {
            shared.metrics.error(u64::from(e.code.code()));
            send(ws, shared, &message).await;
            linger(ws, None).await;
            false
        }
        ErrorReply::Close(code, reason) => {
            shared.metrics.error(u64::from(code));
            close(ws, code, &reason).await;
            false
        }
    }
}

/// What woke a connection's loop.
enum Event {
    /// The server is shutting down.
    Stop,
    /// A Realm peer's access token expired.
    Expired,
    /// Nothing received within the idle timeout.
    Idle,
    /// No authenticated session bound within the bind timeout.
    BindTimeout,
    /// A path of one of its sessions changed.
    Woken,
    /// A session has something to send.
    Send,
    /// A session's failed download is due to be built again.
    Retry,
    /// The peer sent something (or left).
    Received(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
}

/// Runs one WebSocket connection's sessions until either side ends it.
///
/// One task per connection, one thing at a time: a message received is handled on a blocking
/// thread (after waiting its turn in its path's FIFO and its rate limits) and its replies sent;
/// between messages, sessions that are behind send one DOWNLOAD batch or STATE segment at a
/// time, round robin, each only after the previous one was written to the socket. A wake-up
/// from a path's change only marks that path's sessions as behind, so nothing is ever skipped.
async fn serve_websocket<S>(
    shared: Arc<Shared>,
    mut ws: WebSocketStream<S>,
    peer: Peer,
    admitted: Arc<Admitted>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut registration = Registration::new(Arc::clone(&shared));
    let waker = Arc::clone(&registration.waker);
    let mut stop = shared.stop.clone();
    // A Realm client never re-sends its token on a live connection: at the token's expiry the
    // connection is closed with 4001, so that it refreshes and reconnects
    // (realm-wire-compat.md section 2.6, choice (b)).
    let expiry = match &peer {
        Peer::Realm { user, .. } => Some(
            tokio::time::Instant::now() + Duration::from_secs(user.exp.saturating_sub(unix_now())),
        ),
        Peer::Tandem { .. } => None,
    };
    let expired = async move {
        match expiry {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    let realm = matches!(peer, Peer::Realm { .. });
    let mut connection = Connection::new(peer, admitted);
    let limits = shared.config.sessions.clone();
    let idle = shared.config.idle_timeout;
    let mut last_received = tokio::time::Instant::now();
    let bind_deadline = last_received + limits.bind_timeout;
    let mut authenticated = false;
    let mut rates = Rates::new(
        limits.connection_bytes_per_second,
        limits.connection_messages_per_second,
    );
    // When the oldest change not yet downloaded was announced (fan-out latency).
    let mut fanout_since = None;
    // Which of the three busy branches (a wake-up, a message to send, a message received) is
    // polled first: each in turn, so none starves the others, in an order that depends only
    // on the loop's own history (an unbiased `select!` picks at random, and a simulated run
    // must replay the same way: docs/testing.md).
    let mut turn = 0u8;
    loop {
        let sending = connection.sending();
        let retry = connection.next_retry();
        turn = (turn + 1) % 3;
        let event = tokio::select! {
            biased;
            _ = stop.changed() => Event::Stop,
            _ = &mut expired => Event::Expired,
            _ = tokio::time::sleep_until(last_received + idle) => Event::Idle,
            _ = tokio::time::sleep_until(bind_deadline), if !authenticated => Event::BindTimeout,
            // A failed download's retry is due: the next pass builds it again.
            _ = tokio::time::sleep_until(retry.unwrap_or(last_received)), if retry.is_some() && !sending => Event::Retry,
            _ = waker.notify.notified(), if turn == 0 => Event::Woken,
            _ = std::future::ready(()), if sending && turn != 2 => Event::Send,
            message = ws.next() => Event::Received(message),
            _ = waker.notify.notified(), if turn != 0 => Event::Woken,
            _ = std::future::ready(()), if sending && turn == 2 => Event::Send,
        };
        let bytes = match event {
            Event::Stop => {
                let e = ProtocolError::new(
                    ErrorCode::ConnectionClosed,
                    "the server is shutting down; try again later",
                );
                report(&mut ws, &shared, &mut connection, e, 0).await;
                return;
            }
            Event::Expired => {
                shared.metrics.error(u64::from(realm::CLOSE_REFRESH_TOKEN));
                close(
                    &mut ws,
                    realm::CLOSE_REFRESH_TOKEN,
                    "the access token expired",
                )
                .await;
                return;
            }
            deadline @ (Event::Idle | Event::BindTimeout) => {
                let (reason, why) = match deadline {
                    Event::Idle => (
                        "idle",
                        "nothing received (not even PING) within the idle timeout",
                    ),
                    _ => ("bind_timeout", "no session bound within the bind timeout"),
                };
                shared.metrics.refused(reason);
                let e = ProtocolError::new(ErrorCode::ConnectionClosed, why);
                report(&mut ws, &shared, &mut connection, e, 0).await;
                return;
            }
            Event::Retry => continue,
            Event::Woken => {
                let (paths, since) = waker.take(shared.epoch());
                connection.changed(&paths);
                connection.advanced(&waker.take_advanced());
                fanout_since = fanout_since.or(since);
                continue;
            }
            Event::Send => {
                let Some((id, turn)) = connection.next_behind() else {
                    continue;
                };
                // What a change on the path leaves to send is built here where that needs no
                // blocking work (`Session::outbound_in_memory`): no blocking thread, no turn in
                // the path's FIFO. A file locked by other work (most often another session's
                // in-memory download: a fan-out wakes every session of the path at once, and
                // the runtime's threads take them in parallel) is tried once more after a turn
                // in the FIFO, waited for without a thread, before the blocking path (a thread
                // handed the work and back costs more than the download).
                let mut built = connection.outbound_in_memory(id);
                let mut waited = None;
                if matches!(built, InMemory::Busy) {
                    waited = Some(Arc::clone(&turn).lock_owned().await);
                    built = connection.outbound_in_memory(id);
                }
                let message = match built {
                    InMemory::Built(message) => {
                        drop(waited);
                        message
                    }
                    InMemory::Busy | InMemory::Blocking => {
                        let turn = match waited {
                            Some(turn) => turn,
                            None => turn.lock_owned().await,
                        };
                        let owned = connection;
                        let Ok((owned, message)) = crate::sim::blocking(move || {
                            let mut owned = owned;
                            let message = owned.outbound(id);
                            (owned, message)
                        })
                        .await
                        else {
                            return;
                        };
                        drop(turn);
                        connection = owned;
                        let advanced: BTreeSet<String> =
                            connection.take_advanced().into_iter().collect();
                        // This connection's own sessions on the path look again, as for any
                        // change; the others only if they wait for the latest version.
                        connection.changed(&advanced);
                        for path in &advanced {
                            shared.advanced(path);
                        }
                        message
                    }
                };
                let Some(message) = message else { continue };
                if let (ServerMessage::Download { .. }, Some(since)) = (&message, fanout_since) {
                    shared
                        .metrics
                        .fanout_seconds
                        .observe(since.elapsed().as_secs_f64());
                    fanout_since = None;
                }
                if !send(&mut ws, &shared, &message).await {
                    return;
                }
                continue;
            }
            Event::Received(message) => {
                last_received = tokio::time::Instant::now();
                match message {
                    Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(e))) => {
                        // Over the body limit before it could be parsed: say so, like a parser.
                        let why = format!(
                            "message over the limit of {} bytes ({e})",
                            protocol::limits::max_frame_size(shared.config.limits.max_body)
                        );
                        if realm {
                            shared.metrics.error(u64::from(realm::CLOSE_TOO_BIG));
                            close(&mut ws, realm::CLOSE_TOO_BIG, &why).await;
                            return;
                        }
                        let e = ProtocolError::new(ErrorCode::LimitsExceeded, why);
                        report(&mut ws, &shared, &mut connection, e, 0).await;
                        return;
                    }
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    // tungstenite queued the pong when it read the ping: write it now.
                    Some(Ok(Message::Ping(_))) => {
                        let flushed = tokio::time::timeout(limits.send_timeout, ws.flush()).await;
                        if !matches!(flushed, Ok(Ok(()))) {
                            return;
                        }
                        continue;
                    }
                    Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Text(_))) => {
                        let e = ProtocolError::new(
                            ErrorCode::BadSyntax,
                            "sync messages are binary WebSocket messages",
                        );
                        report(&mut ws, &shared, &mut connection, e, 0).await;
                        return;
                    }
                }
            }
        };
        shared.metrics.bytes_received.inc_by(bytes.len() as u64);
        // Rate limits delay the reader (TCP then pushes back on the client); nothing is dropped.
        let len = bytes.len() as u64;
        let (mut wait, mut limit) = rates.take(len);
        if let Some((_, user)) = &registration.user {
            let (user_wait, user_limit) = user.lock().unwrap_or_else(|e| e.into_inner()).take(len);
            if user_wait > wait {
                (wait, limit) = (user_wait, user_limit);
            }
        }
        if !wait.is_zero() {
            shared
                .metrics
                .rate_limited
                .get_or_create(&vec![("limit", limit.to_owned())])
                .inc();
            tokio::time::sleep(wait).await;
        }
        // Work on a bound session's path waits its turn in that path's FIFO.
        let turn = protocol::ClientMessage::peek_session(&bytes)
            .and_then(|(_, id)| connection.sessions.get(&id))
            .map(|s| Arc::clone(&s.turn));
        let turn = match turn {
            Some(turn) => Some(turn.lock_owned().await),
            None => None,
        };
        let worker_shared = Arc::clone(&shared);
        let mut owned = connection;
        // What to do with the server files is done on a blocking thread (SQLite with fsync),
        // never on the runtime's workers that drive every other connection.
        let done = crate::sim::blocking(move || {
            let outcome = handle(&worker_shared, &mut owned, &bytes);
            (owned, outcome)
        })
        .await;
        drop(turn);
        let Ok((owned, outcome)) = done else {
            // The worker panicked: end this connection; its sessions' files are intact (every
            // change to them is one SQLite transaction).
            return;
        };
        connection = owned;
        registration.sync(&connection);
        authenticated |= !connection.sessions.is_empty();
        match outcome {
            Ok(replies) => {
                for reply in &replies {
                    if !send(&mut ws, &shared, reply).await {
                        return;
                    }
                }
            }
            Err((e, session)) => {
                let goes_on = report(&mut ws, &shared, &mut connection, e, session).await;
                registration.sync(&connection);
                if !goes_on {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`linger`] is awaited inside every connection's future, so what it holds across an
    /// await is part of every connection's memory for its whole life: its read buffer must be
    /// on the heap (an 8 KiB array there made every idle session 8 KiB larger,
    /// `benches/load.rs`).
    #[tokio::test]
    async fn lingering_adds_no_buffer_to_a_connections_future() {
        let (io, _client) = tokio::io::duplex(64);
        let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let lingering = linger(&mut ws, None);
        let size = std::mem::size_of_val(&lingering);
        assert!(size < 1024, "linger's future is {size} bytes");
    }
}
