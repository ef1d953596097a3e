//! The network side of the server: TLS 1.3 WebSocket listener, handshake (protocol version and
//! bearer token), and the per-connection session state machine on top of [`ServerFile`]s.
//!
//! One connection carries any number of sessions (BIND ... UNBIND), each bound to a server path.
//! Each path's [`ServerFile`] is shared by its sessions; after an upload is integrated, every
//! other session bound to that path is told, and sends the new history as DOWNLOAD. A protocol
//! violation gets an ERROR: connection-level codes (100-199) end the connection, session-level
//! ones (200-299) end that session. Nothing a client sends reaches another client unless it was
//! integrated and applied.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::Message;

use super::auth::{Authenticator, Claims};
use super::file::ServerFile;
use super::session::{downloads, error, handle, lock, Session};
use crate::protocol::{self, ErrorCode, Limits, ProtocolError};

/// Largest DOWNLOAD body in bytes (entry headers and changesets, before compression): what every
/// client accepts, [`protocol::limits::MAX_BODY_SIZE`]. A batch holds at least one entry, and one
/// entry always fits (the server refuses changesets over `MAX_CHANGESET_SIZE`).
pub const MAX_DOWNLOAD_BATCH: usize = protocol::limits::MAX_BODY_SIZE;

/// How the server runs.
#[derive(Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Directory for the server files (one SQLite file per server path).
    pub data_dir: PathBuf,
    /// Certificate chain and private key, PEM. `None` serves plain `ws://`, which needs
    /// `allow_plain_ws` (for local development only).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Allow serving without TLS.
    pub allow_plain_ws: bool,
    /// Verifies access tokens.
    pub auth: Authenticator,
    /// A connection that sends nothing (not even PING) for this long is closed.
    pub idle_timeout: Duration,
    /// Message size limits.
    pub limits: Limits,
    /// The App Services API and Realm sync endpoint (`--app-id`); `None` serves only Tandem's
    /// own handshake.
    pub app: Option<super::app::AppConfig>,
}

/// A running server.
pub struct RunningServer {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    shared: Arc<Shared>,
}

impl RunningServer {
    /// The materialized state of a server path, if a client has bound to it since start.
    pub fn state_of(&self, path: &str) -> Option<crate::state::State> {
        let files = self.shared.files.lock().unwrap_or_else(|e| e.into_inner());
        files.get(path).map(|f| lock(f).state().clone())
    }

    /// Stops accepting and ends every connection.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
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

/// What every connection of a running server shares.
pub(super) struct Shared {
    pub(super) config: ServerConfig,
    /// Open server files by path.
    pub(super) files: Mutex<HashMap<String, Arc<Mutex<ServerFile>>>>,
    /// Server paths that got new versions.
    pub(super) changed: broadcast::Sender<String>,
}

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
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None if config.allow_plain_ws => None,
        None => {
            return Err(StartError(
                "TLS certificate and key are required (or allow plain ws:// explicitly)".into(),
            ))
        }
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError(format!("listening on {}: {e}", config.listen)))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| StartError(e.to_string()))?;
    let (shutdown, mut stop) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared {
        config,
        files: Mutex::new(HashMap::new()),
        changed: broadcast::channel(1024).0,
    });
    let accept_shared = Arc::clone(&shared);
    tokio::spawn(async move {
        let shared = accept_shared;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else { continue };
                    let shared = Arc::clone(&shared);
                    let tls = tls.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        match tls {
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(tcp).await {
                                    serve_connection(shared, stream, stop).await;
                                }
                            }
                            None => serve_connection(shared, tcp, stop).await,
                        }
                    });
                }
            }
        }
    });
    Ok(RunningServer {
        local_addr,
        shutdown,
        shared,
    })
}

#[allow(clippy::result_large_err)]
fn reject(status: StatusCode, why: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(why.to_owned()));
    *response.status_mut() = status;
    response
}

async fn serve_connection<S>(
    shared: Arc<Shared>,
    stream: S,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut handshake_claims: Option<Result<Claims, ProtocolError>> = None;
    let auth = shared.config.auth.clone();
    // The handshake's error response is large by nature (an HTTP response); it is built once.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| {
        let offer = request
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let version =
            protocol::negotiate(offer).map_err(|e| reject(StatusCode::BAD_REQUEST, &e.message))?;
        let token = request
            .headers()
            .get("Authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(token) = token {
            let verified = auth.verify(token);
            if let Err(e) = &verified {
                return Err(reject(StatusCode::UNAUTHORIZED, &e.message));
            }
            handshake_claims = Some(verified);
        }
        let chosen = format!("{}{version}", protocol::PROTOCOL_PREFIX);
        if let Ok(value) = HeaderValue::from_str(&chosen) {
            response
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", value);
        }
        Ok(response)
    };
    // Whole messages up to the protocol's body limit are read even when this server's own limit
    // is lower, so that the parser answers 104 (limits exceeded) to what a client may send.
    let config = crate::client::websocket_config(
        shared
            .config
            .limits
            .max_body
            .max(protocol::limits::MAX_BODY_SIZE),
    );
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let mut changed = shared.changed.subscribe();
    let mut sessions: HashMap<u64, Session> = HashMap::new();
    let handshake_claims = Arc::new(handshake_claims);
    let idle = shared.config.idle_timeout;
    loop {
        // What to do with the server files; done on a blocking thread (SQLite with fsync), never
        // on the runtime's workers that drive every other connection.
        enum Work {
            Message(Vec<u8>),
            Changed(String),
        }
        let work = tokio::select! {
            _ = stop.changed() => return,
            path = changed.recv() => match path {
                Ok(path) => Work::Changed(path),
                Err(_) => continue,
            },
            message = tokio::time::timeout(idle, ws.next()) => {
                match message {
                    Err(_) => {
                        let _ = ws.send(Message::Binary(error(ErrorCode::ConnectionClosed, "no PING within the idle timeout", 0).encode().into())).await;
                        return;
                    }
                    Ok(Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(e)))) => {
                        // Over the body limit before it could be parsed: say so, like a parser.
                        let why = format!("message over the limit of {} bytes ({e})", crate::protocol::limits::max_frame_size(shared.config.limits.max_body));
                        let _ = ws.send(Message::Binary(error(ErrorCode::LimitsExceeded, &why, 0).encode().into())).await;
                        let _ = ws.close(None).await;
                        return;
                    }
                    Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return,
                    Ok(Some(Ok(Message::Binary(bytes)))) => Work::Message(bytes.into()),
                    Ok(Some(Ok(_))) => {
                        let e = ProtocolError::new(ErrorCode::BadSyntax, "sync messages are binary WebSocket messages");
                        let _ = ws.send(Message::Binary(error(e.code, &e.message, 0).encode().into())).await;
                        let _ = ws.close(None).await;
                        return;
                    }
                }
            }
        };
        let worker_shared = Arc::clone(&shared);
        let claims = Arc::clone(&handshake_claims);
        let mut owned = std::mem::take(&mut sessions);
        let done = tokio::task::spawn_blocking(move || {
            let outcome = match work {
                Work::Changed(path) => {
                    let mut out = Vec::new();
                    for (id, session) in owned
                        .iter_mut()
                        .filter(|(_, s)| s.path == path && !s.expired())
                    {
                        out.extend(downloads(*id, session, false));
                    }
                    Ok(out)
                }
                Work::Message(bytes) => handle(&worker_shared, &claims, &mut owned, &bytes),
            };
            (owned, outcome)
        })
        .await;
        let Ok((owned, outcome)) = done else {
            // The worker panicked: end this connection; its sessions' files are intact (every
            // change to them is one SQLite transaction).
            return;
        };
        sessions = owned;
        match outcome {
            Ok(replies) => {
                for reply in replies {
                    if ws
                        .send(Message::Binary(reply.encode().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Err((e, session)) => {
                let connection_level = e.code.is_connection_level() || session == 0;
                let session = if connection_level { 0 } else { session };
                let _ = ws
                    .send(Message::Binary(
                        error(e.code, &e.message, session).encode().into(),
                    ))
                    .await;
                if connection_level {
                    let _ = ws.close(None).await;
                    return;
                }
                sessions.remove(&session);
            }
        }
    }
}
