//! The sync client session (cargo feature `client`, on by default): keeps one local
//! [`Database`] in sync with one server path.
//!
//! The session runs on a tokio runtime the library owns (the app never sees it). It connects
//! over WebSocket and TLS 1.3 (rustls, trusting the configured CA, or else the operating
//! system's roots), sends BIND, on first contact stores the client file ident the server
//! allocates before anything else, sends IDENT with its cursors, uploads every local changeset
//! after the acknowledged one in client-version order (soft batches of 128 KiB, each changeset
//! once per connection), integrates every DOWNLOAD (OT rebase over its own unacknowledged
//! changesets, applied in one transaction, listeners notified), PINGs every 60 s with jitter
//! and treats a missing PONG after 120 s as a dead connection. After any disconnect it
//! reconnects with exponential backoff (1 s doubling to 5 min, minus up to a quarter of jitter)
//! and resumes. Its state is observable.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::changeset::Changeset;
use crate::protocol::{self, ClientMessage, Limits, ServerMessage, UploadEntry};
use crate::store::{Database, DownloadCursors, StoreError};

/// Soft limit of one UPLOAD's changesets.
pub const UPLOAD_BATCH: usize = 128 << 10;

/// The runtime all sessions share.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tandem-sync")
            .enable_all()
            .build()
            .expect("the sync runtime starts")
    })
}

/// Where and how to sync.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Server URL, `wss://host:port/...` (or `ws://` with `allow_insecure`).
    pub url: String,
    /// Server path (the server file) to sync with.
    pub path: String,
    /// Access token.
    pub token: String,
    /// CA certificate(s), PEM, that the server's certificate must chain to. `None` trusts the
    /// operating system's root certificates (a server with a certificate from a public CA).
    pub ca_file: Option<PathBuf>,
    /// Allow `ws://` without TLS (local development only).
    pub allow_insecure: bool,
}

/// What the session is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// Not connected (waiting to reconnect, or stopped).
    Disconnected,
    /// Connecting and binding.
    Connecting,
    /// Bound and syncing.
    Connected,
    /// The server refused the session; the message says why. The session retries if the
    /// error allows it.
    Error(String),
}

/// A running sync session. Dropping it stops syncing.
pub struct SyncSession {
    state: watch::Receiver<SyncState>,
    stop: watch::Sender<bool>,
}

/// Why a session could not start.
#[derive(Debug)]
pub struct SyncError(pub String);

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SyncError {}

impl From<StoreError> for SyncError {
    fn from(e: StoreError) -> Self {
        SyncError(e.to_string())
    }
}

fn tls_connector(ca_file: &Option<PathBuf>) -> Result<tokio_rustls::TlsConnector, SyncError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| SyncError(format!("CA file {}: {e}", path.display())))?
            {
                let cert =
                    cert.map_err(|e| SyncError(format!("CA file {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| SyncError(format!("CA certificate: {e}")))?;
            }
        }
        None => {
            // The platform's trust store; certificates it cannot parse are skipped, as a
            // browser would.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    if roots.is_empty() {
        return Err(SyncError(match ca_file {
            Some(path) => format!("CA file {} holds no certificate", path.display()),
            None => "the system has no trusted root certificates; set ca_file to the CA that \
                     signed the server's certificate"
                .into(),
        }));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| SyncError(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl SyncSession {
    /// Starts syncing `db` with the server in the background.
    pub fn start(db: Arc<Database>, config: SyncConfig) -> Result<SyncSession, SyncError> {
        let secure = config.url.starts_with("wss://");
        let plain_allowed = config.allow_insecure && config.url.starts_with("ws://");
        if !(secure || plain_allowed) {
            return Err(SyncError(
                "the URL must be wss:// (ws:// only with allow_insecure)".into(),
            ));
        }
        let tls = if secure {
            Some(tls_connector(&config.ca_file)?)
        } else {
            None
        };
        let (state_tx, state) = watch::channel(SyncState::Disconnected);
        let (stop, stop_rx) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let hook_wake = Arc::clone(&wake);
        db.on_local_commit(Arc::new(move || hook_wake.notify_one()));
        runtime().spawn(run(db, config, tls, state_tx, stop_rx, wake));
        Ok(SyncSession { state, stop })
    }

    /// The current state.
    pub fn state(&self) -> SyncState {
        self.state.borrow().clone()
    }

    /// Stops syncing (also done by dropping the session).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for SyncSession {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Backoff after the `n`th failure in a row: 1 s doubling to 5 min, minus up to 25% jitter.
fn backoff(n: u32) -> Duration {
    let base = Duration::from_secs(1u64 << n.min(9)).min(Duration::from_secs(300));
    let jitter = (std::collections::hash_map::RandomState::new().hash_one(n) % 1000) as u32;
    base - base / 4 * jitter / 1000
}

use std::hash::BuildHasher;

async fn run(
    db: Arc<Database>,
    config: SyncConfig,
    tls: Option<tokio_rustls::TlsConnector>,
    state: watch::Sender<SyncState>,
    mut stop: watch::Receiver<bool>,
    wake: Arc<Notify>,
) {
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            let _ = state.send(SyncState::Disconnected);
            return;
        }
        let _ = state.send(SyncState::Connecting);
        let result = connect_and_sync(&db, &config, &tls, &state, &mut stop, &wake).await;
        match result {
            Ok(()) => {
                let _ = state.send(SyncState::Disconnected);
                return;
            }
            Err(Failure { message, retry }) => {
                if !retry {
                    // The server said retrying cannot help (a bad token, a forbidden path...).
                    let _ = state.send(SyncState::Error(message));
                    return;
                }
                let _ = state.send(SyncState::Disconnected);
                failures += 1;
                tokio::select! {
                    _ = tokio::time::sleep(backoff(failures - 1)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

struct Failure {
    message: String,
    retry: bool,
}

fn fail(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        retry: true,
    }
}

async fn connect_and_sync(
    db: &Arc<Database>,
    config: &SyncConfig,
    tls: &Option<tokio_rustls::TlsConnector>,
    state: &watch::Sender<SyncState>,
    stop: &mut watch::Receiver<bool>,
    wake: &Arc<Notify>,
) -> Result<(), Failure> {
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| fail(format!("bad URL: {e}")))?;
    let host = request.uri().host().unwrap_or("localhost").to_owned();
    let port = request
        .uri()
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        protocol::client_offer()
            .parse()
            .map_err(|_| fail("header"))?,
    );
    headers.insert(
        "Authorization",
        format!("Bearer {}", config.token)
            .parse()
            .map_err(|_| fail("the token is not a valid header value"))?,
    );
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| fail(format!("connect: {e}")))?;
    match tls {
        Some(connector) => {
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| fail(format!("server name: {e}")))?;
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| fail(format!("TLS: {e}")))?;
            session(db, config, request, stream, state, stop, wake).await
        }
        None => session(db, config, request, tcp, state, stop, wake).await,
    }
}

fn to_changesets(entries: Vec<crate::protocol::DownloadEntry>) -> Result<Vec<Changeset>, Failure> {
    entries
        .into_iter()
        .map(|e| {
            e.to_changeset()
                .map_err(|err| fail(format!("server sent a bad changeset: {err}")))
        })
        .collect()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| fail(format!("store task: {e}")))?
        .map_err(|e| fail(format!("store: {e}")))
}

async fn session<S>(
    db: &Arc<Database>,
    config: &SyncConfig,
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    stream: S,
    state: &watch::Sender<SyncState>,
    stop: &mut watch::Receiver<bool>,
    wake: &Arc<Notify>,
) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| fail(format!("WebSocket handshake: {e}")))?;
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    protocol::accepted(chosen).map_err(|e| fail(e.message))?;
    let limits = Limits::default();
    let send = |m: ClientMessage| Message::Binary(m.encode().into());

    let d = Arc::clone(db);
    let progress = blocking(move || d.sync_progress()).await?;
    let need_ident = progress.client_file_ident == 0;
    ws.send(send(ClientMessage::Bind {
        session: 1,
        path: config.path.clone(),
        token: String::new(),
        need_client_file_ident: need_ident,
        is_subserver: false,
    }))
    .await
    .map_err(|e| fail(e.to_string()))?;

    let mut bound = !need_ident;
    let mut uploaded_through = progress.upload_client_version;
    let pings = Arc::new(Mutex::new(None::<tokio::time::Instant>));
    if bound {
        send_ident(&mut ws, db).await?;
        let _ = state.send(SyncState::Connected);
    }
    let mut ping_timer = tokio::time::interval(Duration::from_secs(54));
    ping_timer.tick().await;
    loop {
        if bound {
            // Upload what is new since the last UPLOAD of this connection.
            let d = Arc::clone(db);
            let pending = blocking(move || d.pending_uploads(UPLOAD_BATCH * 4)).await?;
            let entries: Vec<UploadEntry> = pending
                .into_iter()
                .filter(|cs| cs.meta.version > uploaded_through)
                .scan(0usize, |bytes, cs| {
                    let entry = UploadEntry::from_changeset(&cs);
                    let first = *bytes == 0;
                    *bytes += entry.changeset.len();
                    (first || *bytes <= UPLOAD_BATCH).then_some(entry)
                })
                .collect();
            if let Some(last) = entries.last() {
                uploaded_through = last.client_version;
                ws.send(send(ClientMessage::Upload {
                    session: 1,
                    progress_client_version: uploaded_through,
                    progress_server_version: 0,
                    locked_server_version: 0,
                    entries,
                }))
                .await
                .map_err(|e| fail(e.to_string()))?;
                continue;
            }
        }
        tokio::select! {
            _ = stop.changed() => {
                let _ = ws.send(send(ClientMessage::Unbind { session: 1 })).await;
                let _ = ws.close(None).await;
                return Ok(());
            }
            _ = wake.notified() => {}
            _ = ping_timer.tick() => {
                let sent = *pings.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(at) = sent {
                    if at.elapsed() > Duration::from_secs(120) {
                        return Err(fail("no PONG within 120 s"));
                    }
                }
                *pings.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokio::time::Instant::now());
                ws.send(send(ClientMessage::Ping { timestamp: 0, rtt: 0 })).await.map_err(|e| fail(e.to_string()))?;
            }
            message = ws.next() => {
                let bytes = match message {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Close(_))) | None => return Err(fail("the server closed the connection")),
                    Some(Err(e)) => return Err(fail(e.to_string())),
                    Some(Ok(_)) => continue,
                };
                match ServerMessage::parse(&bytes, &limits).map_err(|e| fail(e.to_string()))? {
                    ServerMessage::Ident { client_file_ident, client_file_ident_salt, .. } => {
                        let d = Arc::clone(db);
                        blocking(move || d.set_client_file_ident(client_file_ident, client_file_ident_salt)).await?;
                        bound = true;
                        send_ident(&mut ws, db).await?;
                        let _ = state.send(SyncState::Connected);
                    }
                    ServerMessage::Download {
                        download_server_version,
                        download_client_version,
                        latest_server_version,
                        latest_server_version_salt,
                        upload_client_version,
                        entries,
                        ..
                    } => {
                        let changesets = to_changesets(entries)?;
                        let d = Arc::clone(db);
                        let cursors = DownloadCursors {
                            download_server_version,
                            download_client_version,
                            latest_server_version,
                            latest_server_version_salt,
                            upload_client_version,
                        };
                        blocking(move || d.integrate_download(changesets, cursors)).await?;
                    }
                    ServerMessage::Pong { .. } => {
                        *pings.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    }
                    ServerMessage::Error { code, message, try_again, .. } => {
                        return Err(Failure { message: format!("server error {code}: {message}"), retry: try_again });
                    }
                    ServerMessage::JsonError { code, json, .. } => {
                        return Err(Failure { message: format!("server error {code}: {json}"), retry: false });
                    }
                    ServerMessage::Mark { .. } | ServerMessage::Unbound { .. } => {}
                }
            }
        }
    }
}

async fn send_ident<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    db: &Arc<Database>,
) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let d = Arc::clone(db);
    let p = blocking(move || d.sync_progress()).await?;
    ws.send(Message::Binary(
        ClientMessage::Ident {
            session: 1,
            client_file_ident: p.client_file_ident,
            client_file_ident_salt: p.client_file_ident_salt,
            download_server_version: p.download_server_version,
            download_client_version: p.download_client_version,
            latest_server_version: p.latest_server_version,
            latest_server_version_salt: p.latest_server_version_salt,
        }
        .encode()
        .into(),
    ))
    .await
    .map_err(|e| fail(e.to_string()))
}
