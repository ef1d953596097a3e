//! One session's life on the network: connect (TCP, TLS, WebSocket), BIND, IDENT, then upload,
//! download, MARK, REFRESH and PING until the connection ends; reconnect with backoff.
//!
//! This task never calls app code: state, progress and errors go to the notifier thread
//! through [`Shared`], store work runs on blocking threads, and the token provider is called
//! on a blocking thread too.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::{
    lock, token, ClientResetMode, PartialState, ResetPlan, Shared, SyncState, TransactOutcome,
    UPLOAD_BATCH,
};
use crate::changeset::{Changeset, ChangesetMeta};
use crate::protocol::{
    self, limits, BatchState, ClientMessage, ErrorCode, FlxQuery, Limits, ServerMessage,
    UploadEntry,
};
use crate::store::{
    Acknowledged, Database, DownloadCursors, Incoming, ResetBase, ResetRecovery, SnapshotRollback,
    StoreError,
};

/// Server errors that mean this file's history can no longer sync as it is: client reset.
const RESET_CODES: [u64; 6] = [208, 209, 210, 211, 217, 222];

/// Most changeset bytes of one flexible sync bootstrap the session stages before integrating it.
const MAX_BOOTSTRAP_BYTES: usize = 128 << 20;

/// Backoff after the `n`th failure in a row: 1 s doubling to 5 min, minus up to 25% jitter.
fn backoff(n: u32) -> Duration {
    let base = Duration::from_secs(1u64 << n.min(9)).min(Duration::from_secs(300));
    // The operating system's random numbers; if they are unavailable the jitter is 0.
    let jitter = match crate::sim::simulated_random() {
        Some(n) => (n % 1000) as u32,
        None => getrandom::u32().unwrap_or(0) % 1000,
    };
    base - base / 4 * jitter / 1000
}

/// The entries of the next UPLOAD: the changesets in order, as many as fit `max_body` bytes of
/// body (entry headers included), and always at least one. A single changeset is at most
/// [`limits::MAX_CHANGESET_SIZE`] (the store refuses larger ones at commit), so with its header
/// it fits [`limits::MAX_BODY_SIZE`]; with `max_body` at most that, so does every batch.
fn upload_batch<'a>(
    changesets: impl Iterator<Item = &'a Changeset>,
    max_body: usize,
) -> Vec<UploadEntry> {
    let mut body = 0usize;
    let mut entries = Vec::new();
    for cs in changesets {
        let entry = UploadEntry::from_changeset(cs);
        let size = entry.encoded_len();
        if !entries.is_empty() && body + size > max_body {
            break;
        }
        body += size;
        entries.push(entry);
    }
    entries
}

/// Why a connection ended.
struct Failure {
    /// Server error code, or 0.
    code: u64,
    message: String,
    retry: bool,
}

/// A message over the protocol limits: it would come again on every connection, so the session
/// stops with error code 104 (limits exceeded) instead of retrying.
fn over_limit(what: String) -> Failure {
    Failure {
        code: u64::from(ErrorCode::LimitsExceeded.code()),
        message: format!(
            "{what}; this client accepts bodies up to {} bytes (protocol::limits::MAX_BODY_SIZE): \
             the server must send smaller DOWNLOAD batches",
            limits::MAX_BODY_SIZE
        ),
        retry: false,
    }
}

/// WebSocket limits for a peer whose message bodies may reach `max_body` bytes: one frame may
/// carry a whole message (header line and body).
pub(crate) fn websocket_config(
    max_body: usize,
) -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    let max = limits::max_frame_size(max_body);
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

fn fail(message: impl Into<String>) -> Failure {
    Failure {
        code: 0,
        message: message.into(),
        retry: true,
    }
}

/// Runs the session until it is stopped or refused for good.
pub(super) async fn run(shared: Arc<Shared>, tls: Option<tokio_rustls::TlsConnector>) {
    // Last, however the task ends (returns, panics, or is dropped unfinished): the
    // configuration's listener gets the session's last event, then is let go of (it may hold
    // the session, which would otherwise never be freed).
    let _release = ReleaseConfigListener(&shared);
    let mut stop = shared.stop.subscribe();
    let mut failures = 0u32;
    // A file whose own history went back and whose client reset did not finish (the app ended
    // first): the session starts with that reset. Its next connections might not find the
    // divergence again, as the file's record of acknowledged versions may count the other
    // copy's by now.
    let d = Arc::clone(&shared.db);
    let mut diverged = match crate::sim::blocking(move || d.history_diverged()).await {
        Ok(Ok(Some(_))) if lock(&shared.reset).is_none() => Some(Failure {
            code: u64::from(ErrorCode::BadClientVersion.code()),
            message: "this file was restored from an older copy of itself and its client reset \
                      has not finished"
                .into(),
            retry: true,
        }),
        _ => None,
    };
    loop {
        if *stop.borrow() {
            shared.set_state(SyncState::Disconnected);
            break;
        }
        shared.set_state(SyncState::Connecting);
        let failure = match diverged.take() {
            Some(failure) => failure,
            None => match connect_and_sync(&shared, &tls, &mut stop).await {
                Err(failure) => failure,
                Ok(()) => {
                    shared.set_state(SyncState::Disconnected);
                    break;
                }
            },
        };
        if let Some(p) = lock(&shared.transact).as_mut() {
            p.maybe_integrated |= p.sent && !RESET_CODES.contains(&failure.code);
        }
        if let Some(plan) = lock(&shared.reset).as_mut().filter(|p| p.started) {
            plan.started = false;
        }
        if let Some(plan) = lock(&shared.reset).as_mut().filter(|p| p.attempt_failed) {
            // The reset itself failed (not the network or the server during it: a connection
            // lost mid-reset, or a server that crashed, starts it over without counting).
            plan.attempt_failed = false;
            plan.failures += 1;
            if plan.failures >= 2 {
                if plan.recover && shared.config.client_reset == ClientResetMode::RecoverOrDiscard {
                    plan.recover = false;
                    plan.failures = 0;
                    shared.report(
                        failure.code,
                        "client reset: recovery failed twice; discarding local changes instead",
                        true,
                    );
                } else {
                    let message = format!("client reset failed twice: {}", failure.message);
                    shared.report(failure.code, &message, false);
                    shared.set_state(SyncState::Error(message));
                    break;
                }
            }
        }
        if RESET_CODES.contains(&failure.code) {
            // The file's own history went back: recorded in the file first, so that its reset
            // recovers the right changesets even after a restart, in any mode.
            let own = match diverged_acknowledgement(&shared, &failure).await {
                Ok(own) => own,
                Err(message) => {
                    shared.report(0, &message, false);
                    shared.set_state(SyncState::Error(message));
                    break;
                }
            };
            match shared.config.client_reset {
                _ if shared.config.flexible => {
                    let message = format!(
                        "client reset required, which flexible sync sessions do not do yet: {} \
                         (open a new file and subscribe again)",
                        failure.message
                    );
                    shared.report(failure.code, &message, false);
                    shared.set_state(SyncState::Error(message));
                    break;
                }
                ClientResetMode::Manual => {
                    let message = format!("client reset required: {}", failure.message);
                    shared.report(failure.code, &message, false);
                    shared.set_state(SyncState::Error(message));
                    break;
                }
                mode => {
                    let db = Arc::clone(&shared.db);
                    let progress = crate::sim::blocking(move || db.sync_progress()).await;
                    let Ok(Ok(progress)) = progress else {
                        shared.report(0, "client reset: cannot read the local file", false);
                        shared.set_state(SyncState::Error(
                            "client reset: cannot read the local file".into(),
                        ));
                        break;
                    };
                    let mut plan = lock(&shared.reset);
                    if plan.is_none() {
                        *plan = Some(ResetPlan {
                            recover: mode != ClientResetMode::DiscardLocal,
                            old_ident: progress.client_file_ident,
                            old_salt: progress.client_file_ident_salt,
                            failures: 0,
                            started: false,
                            attempt_failed: false,
                            server_lost_history: false,
                            own_acknowledgement: None,
                        });
                    }
                    if let Some(plan) = plan.as_mut() {
                        plan.server_lost_history |=
                            failure.code != u64::from(ErrorCode::ClientFileExpired.code());
                        if let Some(own) = own {
                            plan.own_acknowledgement =
                                Some(plan.own_acknowledgement.map_or(own, |o| o.min(own)));
                        }
                    }
                    drop(plan);
                    shared.report(
                        failure.code,
                        format!("client reset: {}", failure.message),
                        true,
                    );
                    failures = 0;
                    continue;
                }
            }
        }
        if shared
            .reconnect_now
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            // A rollback finished and ended its connection to download from its snapshot on:
            // reconnect now. Only once: a connection that then fails backs off as any other.
            failures = 0;
            continue;
        }
        let expired = failure.code == u64::from(ErrorCode::TokenExpired.code());
        let retry = failure.retry && (!expired || shared.config.token_provider.is_some());
        if !retry {
            shared.report(failure.code, &failure.message, false);
            shared.set_state(SyncState::Error(failure.message));
            break;
        }
        shared.report(failure.code, &failure.message, true);
        shared.set_state(SyncState::Disconnected);
        if expired {
            // The next connection asks the provider first; no need to wait long.
            *lock(&shared.token) = String::new();
            failures = 0;
        } else {
            failures += 1;
        }
        tokio::select! {
            biased;
            _ = stop.changed() => {}
            _ = tokio::time::sleep(backoff(failures.saturating_sub(1))) => {}
        }
    }
    // Wake every waiter: their futures see the stop or the error state.
    lock(&shared.marks).clear();
    shared.acked.send_modify(|_| {});
    shared.subscription_states.send_modify(|_| {});
}

/// Releases [`SyncConfig::on_event`](super::SyncConfig::on_event)'s listener when dropped, in
/// turn after every event queued before ([`super::events::Listeners::release`]).
struct ReleaseConfigListener<'a>(&'a Shared);

impl Drop for ReleaseConfigListener<'_> {
    fn drop(&mut self) {
        if let Some(token) = lock(&self.0.config_listener).take() {
            self.0.listeners.release(token);
        }
    }
}

/// Asks the provider for a token on a blocking thread.
async fn fetch_token(shared: &Arc<Shared>) -> Result<String, String> {
    let Some(provider) = shared.config.token_provider.clone() else {
        return Err("no token provider".into());
    };
    let fetched = crate::sim::blocking(move || provider.fetch_token())
        .await
        .map_err(|e| format!("the token provider panicked: {e}"))?;
    let token = fetched.map_err(|e| format!("the token provider failed: {e}"))?;
    if token.is_empty() {
        return Err("the token provider returned an empty token".into());
    }
    *lock(&shared.token) = token.clone();
    Ok(token)
}

/// Seconds before expiry at which to refresh a token that expires in `remaining` seconds.
fn refresh_delay(remaining: u64) -> Duration {
    Duration::from_secs(remaining - (remaining / 5).max(1).min(remaining))
}

/// When to ask for the next token, if there is a provider and the token says when it expires.
fn refresh_deadline(shared: &Shared, token: &str) -> Option<tokio::time::Instant> {
    shared.config.token_provider.as_ref()?;
    let exp = token::expiry(token)?;
    let remaining = exp.saturating_sub(token::now());
    Some(tokio::time::Instant::now() + refresh_delay(remaining))
}

async fn connect_and_sync(
    shared: &Arc<Shared>,
    tls: &Option<tokio_rustls::TlsConnector>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Failure> {
    let mut token = shared.token();
    let stale =
        token.is_empty() || token::expiry(&token).is_some_and(|exp| exp <= token::now() + 1);
    if stale && shared.config.token_provider.is_some() {
        token = fetch_token(shared).await.map_err(fail)?;
    }
    let mut request = shared
        .config
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
        format!("Bearer {token}")
            .parse()
            .map_err(|_| fail("the token is not a valid header value"))?,
    );
    let timeouts = shared.config.timeouts;
    // Connecting and the TLS handshake end at a stop too (not only at their timeouts), so that
    // the file's next session need not wait for them (`SyncClaim`).
    let connect = tokio::time::timeout(timeouts.connect, crate::sim::connect(host.as_str(), port));
    let Some(tcp) = unless_stopped(stop, connect).await else {
        return Ok(());
    };
    let tcp = tcp
        .map_err(|_| {
            fail(format!(
                "connect: timed out after {} ms",
                timeouts.connect.as_millis()
            ))
        })?
        .map_err(|e| fail(format!("connect: {e}")))?;
    // TLS and the WebSocket upgrade share one deadline.
    let deadline = tokio::time::Instant::now() + timeouts.handshake;
    match tls {
        Some(connector) => {
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| fail(format!("server name: {e}")))?;
            let handshake = tokio::time::timeout_at(deadline, connector.connect(name, tcp));
            let Some(stream) = unless_stopped(stop, handshake).await else {
                return Ok(());
            };
            let stream = stream
                .map_err(|_| handshake_timeout(timeouts.handshake))?
                .map_err(|e| tls_failure(&shared.config.ca_file, e))?;
            session(shared, request, stream, stop, token, deadline).await
        }
        None => session(shared, request, tcp, stop, token, deadline).await,
    }
}

/// `work`'s output, or `None` if the session is stopped first.
async fn unless_stopped<T>(
    stop: &mut watch::Receiver<bool>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = stop.wait_for(|stopped| *stopped) => None,
        out = work => Some(out),
    }
}

/// A failed TLS handshake. A certificate this client does not accept (an unknown issuer, an
/// expired certificate, another host's name) is a configuration fault no retry mends: the
/// session stops and says what to set, as realm-core stops on a rejected server certificate.
/// Anything else (the connection reset during the handshake) is retried.
fn tls_failure(ca_file: &Option<std::path::PathBuf>, e: std::io::Error) -> Failure {
    let rejected = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<tokio_rustls::rustls::Error>())
        .and_then(|inner| match inner {
            tokio_rustls::rustls::Error::InvalidCertificate(why) => Some(why.clone()),
            _ => None,
        });
    let Some(why) = rejected else {
        return fail(format!("TLS: {e}"));
    };
    use tokio_rustls::rustls::CertificateError as Why;
    let advice = match (ca_file, &why) {
        (
            _,
            Why::Expired
            | Why::ExpiredContext { .. }
            | Why::NotValidYet
            | Why::NotValidYetContext { .. },
        ) => "the certificate is outside its validity period (or this device's clock is wrong)"
            .to_string(),
        (_, Why::NotValidForName | Why::NotValidForNameContext { .. }) => {
            "the certificate is not issued for the host in the server URL".to_string()
        }
        // webpki's refusal of a CA certificate presented as the server's own (a self-signed
        // certificate made without `basicConstraints=critical,CA:FALSE`).
        (_, Why::Other(other)) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
            "it is a CA certificate (basicConstraints CA:TRUE), which TLS clients refuse as a \
             server's own; issue the server a certificate with basicConstraints=critical,CA:FALSE \
             (README, \"Running the server\")"
                .to_string()
        }
        (None, Why::UnknownIssuer | Why::BadSignature) => {
            "it does not chain to a root this system trusts; for a self-signed or private-CA \
             certificate, set ca_file to that CA certificate (PEM)"
                .to_string()
        }
        (Some(path), Why::UnknownIssuer | Why::BadSignature) => format!(
            "it does not chain to the CA in ca_file ({})",
            path.display()
        ),
        (_, other) => format!("{other}"),
    };
    Failure {
        code: 0,
        message: format!("TLS: the server's certificate was rejected: {advice} (rustls: {why:?})"),
        retry: false,
    }
}

/// The TLS handshake and WebSocket upgrade did not finish within `timeout`.
fn handshake_timeout(timeout: Duration) -> Failure {
    fail(format!(
        "handshake: no TLS and WebSocket upgrade within {} ms",
        timeout.as_millis()
    ))
}

/// How long a PING may go unanswered before the connection counts as dead (realm-core's
/// `pong_keepalive_timeout`, 120 s).
const PONG_TIMEOUT: Duration = Duration::from_secs(120);

/// Smallest measured clock difference that is corrected: the `Date` header has whole seconds.
const MIN_CLOCK_CORRECTION_MS: i64 = 2_000;

/// Learns the server's clock from the `Date` header of its upgrade answer and stores the
/// difference to this device's clock ([`crate::store::Database::set_clock_offset`]): local
/// changesets committed from now on, online or offline, are stamped by the server's clock, so a
/// device whose clock runs ahead does not win every conflict. Differences under 2 s count as
/// none (the header has whole seconds). No or an unreadable `Date`: nothing changes.
async fn correct_clock(
    shared: &Arc<Shared>,
    response: &tokio_tungstenite::tungstenite::handshake::client::Response,
) -> Result<(), Failure> {
    let Some(server) = response
        .headers()
        .get("Date")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return Ok(());
    };
    let millis = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    };
    // The header truncates to the second: the server's clock is half a second later on average.
    let measured = millis(server) + 500 - millis(crate::sim::now());
    let offset = if measured.abs() < MIN_CLOCK_CORRECTION_MS {
        0
    } else {
        measured
    };
    let db = Arc::clone(&shared.db);
    if blocking(move || db.clock_offset()).await? != offset {
        tracing::info!(offset_ms = offset, "clock offset to the server");
        let db = Arc::clone(&shared.db);
        blocking(move || db.set_clock_offset(offset)).await?;
    }
    Ok(())
}

/// A DOWNLOAD's entries as the store takes them: still encoded, each decoded (or applied as it
/// is decoded) inside the store's transaction, so that a large download is never held decoded
/// whole (`Database::integrate_download_encoded`).
fn to_incoming(entries: Vec<crate::protocol::DownloadEntry>) -> Vec<Incoming> {
    entries
        .into_iter()
        .map(|e| Incoming::Encoded {
            meta: ChangesetMeta {
                version: e.server_version,
                last_integrated_remote_version: e.last_integrated_client_version,
                origin_timestamp: e.origin_timestamp,
                origin_file_ident: e.origin_file_ident,
            },
            bytes: e.changeset,
        })
        .collect()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Failure> {
    crate::sim::blocking(f)
        .await
        .map_err(|e| fail(format!("store task: {e}")))?
        .map_err(store_failure)
}

/// A store error as the session's failure: a server changeset whose schema disagrees with this
/// database's cannot be merged by trying again (225, no retry: the app must change its schema
/// or reset); anything else may pass (a busy file, a full disk), so the session retries.
fn store_failure(e: StoreError) -> Failure {
    match e.kind() {
        crate::store::StoreErrorKind::SchemaMismatch => Failure {
            code: u64::from(ErrorCode::InvalidSchemaChange.code()),
            message: format!("store: {e}"),
            retry: false,
        },
        _ => fail(format!("store: {e}")),
    }
}

fn encode(message: ClientMessage) -> Message {
    Message::Binary(message.encode().into())
}

async fn session<S>(
    shared: &Arc<Shared>,
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    stream: S,
    stop: &mut watch::Receiver<bool>,
    token: String,
    handshake_deadline: tokio::time::Instant,
) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let upgrade = tokio_tungstenite::client_async_with_config(
        request,
        stream,
        Some(websocket_config(limits::MAX_BODY_SIZE)),
    );
    let (mut ws, response) = tokio::time::timeout_at(handshake_deadline, upgrade)
        .await
        .map_err(|_| handshake_timeout(shared.config.timeouts.handshake))?
        .map_err(|e| {
            let mut message = format!("WebSocket handshake: {e}");
            let mut refused = false;
            if let tokio_tungstenite::tungstenite::Error::Http(response) = &e {
                // 401: the server refused the token in the handshake.
                refused = response.status() == 401;
                // The server's reason for a refusal (a token that does not verify, a path the
                // token does not grant), at most 300 bytes of it.
                let body = response.body().as_deref().unwrap_or_default();
                let reason = String::from_utf8_lossy(&body[..body.len().min(300)]);
                if !reason.trim().is_empty() {
                    message = format!("{message}: {}", reason.trim());
                }
            }
            match refused {
                true => Failure {
                    code: if token::expiry(&token).is_some_and(|exp| exp <= token::now()) {
                        u64::from(ErrorCode::TokenExpired.code())
                    } else {
                        u64::from(ErrorCode::BadAuthentication.code())
                    },
                    message,
                    retry: false,
                },
                false => fail(message),
            }
        })?;
    correct_clock(shared, &response).await?;
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    protocol::accepted(chosen).map_err(|e| fail(e.message))?;
    let limits = Limits::default();
    let db = &shared.db;

    let d = Arc::clone(db);
    let progress = blocking(move || d.sync_progress()).await?;
    let resetting = lock(&shared.reset).is_some();
    let need_ident = progress.client_file_ident == 0 || resetting;
    ws.send(encode(ClientMessage::Bind {
        session: 1,
        path: shared.config.path.clone(),
        token: token.clone(),
        need_client_file_ident: need_ident,
        is_subserver: false,
    }))
    .await
    .map_err(|e| fail(e.to_string()))?;

    shared.acknowledged_at_connect.store(
        progress.upload_client_version,
        std::sync::atomic::Ordering::SeqCst,
    );
    let mut conn = Connection {
        bound: false,
        uploaded_through: progress.upload_client_version,
        in_flight: VecDeque::new(),
        ping_sent: None,
        new_ident: None,
        path_recorded: false,
        asked_current: false,
        asked_inherited: 0,
        client_versions: Vec::new(),
        queries_sent: 0,
        bootstrap: None,
        rollback: None,
    };
    let mut refresh_at = refresh_deadline(shared, &token);
    if let Some(pending) = lock(&shared.transact).as_mut() {
        pending.sent = false;
    }
    // Every MARK is sent again on this connection.
    for waiter in lock(&shared.marks).values_mut() {
        waiter.sent = false;
    }
    if !need_ident {
        conn.queries_sent = send_ident(&mut ws, shared).await?;
        conn.bound = true;
        shared.set_state(SyncState::Connected);
        start_rollback(shared, &mut ws, &mut conn).await?;
    }
    let mut ping_timer = tokio::time::interval(Duration::from_secs(54));
    let mut wake_first = false;
    ping_timer.tick().await;
    loop {
        if conn.bound {
            // MARKs not yet sent on this connection.
            let unsent: Vec<u64> = lock(&shared.marks)
                .iter_mut()
                .filter(|(_, w)| !w.sent)
                .map(|(id, w)| {
                    w.sent = true;
                    *id
                })
                .collect();
            for request_ident in unsent {
                ws.send(encode(ClientMessage::Mark {
                    session: 1,
                    request_ident,
                }))
                .await
                .map_err(|e| fail(e.to_string()))?;
            }
            // Flexible sync: the newest subscription set committed since the last one sent, once
            // the uploads of what was committed before it are sent (the server then knows what
            // it names; checked on every pass, so a steady stream of commits cannot hold it).
            if shared.config.flexible {
                let (after, uploaded) = (conn.queries_sent, conn.uploaded_through);
                let d = Arc::clone(db);
                if let Some(set) =
                    blocking(move || d.next_subscription_set(after, uploaded)).await?
                {
                    conn.queries_sent = set.version;
                    // Older pending sets were superseded.
                    shared.subscription_states.send_modify(|n| *n += 1);
                    ws.send(encode(ClientMessage::Query {
                        session: 1,
                        query: FlxQuery {
                            version: set.version,
                            body: set.wire_body(),
                        },
                    }))
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                }
            }
            // A pending transaction: nothing at or after it is uploaded; once everything before
            // it is acknowledged, it goes alone as TRANSACT.
            let gate = lock(&shared.transact)
                .as_ref()
                .map(|p| (p.version.unwrap_or(0), p.sent || p.rejected.is_some()));
            // Upload what is new since the last UPLOAD of this connection.
            let d = Arc::clone(db);
            let pending = blocking(move || d.pending_uploads(UPLOAD_BATCH * 4)).await?;
            if let Some((version, false)) = gate {
                let first = pending.first();
                if version > 0
                    && conn.in_flight.is_empty()
                    && first.is_some_and(|cs| cs.meta.version == version)
                {
                    let entry = UploadEntry::from_changeset(&pending[0]);
                    if let Some(p) = lock(&shared.transact).as_mut() {
                        p.sent = true;
                    }
                    conn.uploaded_through = version;
                    ws.send(encode(ClientMessage::Transact {
                        session: 1,
                        request_ident: version,
                        client_version: entry.client_version,
                        last_integrated_server_version: entry.last_integrated_server_version,
                        origin_timestamp: entry.origin_timestamp,
                        changeset: entry.changeset,
                    }))
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                    continue;
                }
            }
            let limit = match gate {
                Some((version, _)) => version,
                None => u64::MAX,
            };
            let entries = upload_batch(
                pending.iter().filter(|cs| {
                    cs.meta.version > conn.uploaded_through && cs.meta.version < limit
                }),
                UPLOAD_BATCH,
            );
            if let Some(last) = entries.last() {
                conn.uploaded_through = last.client_version;
                conn.in_flight.extend(
                    entries
                        .iter()
                        .map(|e| (e.client_version, e.changeset.len() as u64)),
                );
                let d = Arc::clone(db);
                let (pending_bytes, integrated) = blocking(move || {
                    Ok((
                        d.pending_upload_bytes()?,
                        d.sync_progress()?.download_server_version,
                    ))
                })
                .await?;
                shared.update_progress(|p| {
                    p.upload_transferable = p.upload_transferred + pending_bytes;
                });
                ws.send(encode(ClientMessage::Upload {
                    session: 1,
                    progress_client_version: conn.uploaded_through,
                    // The last server version integrated here (realm-core's download progress):
                    // the server forgets what this file's view no longer needs.
                    progress_server_version: integrated,
                    locked_server_version: 0,
                    entries,
                }))
                .await
                .map_err(|e| fail(e.to_string()))?;
                // Take what the server sent meanwhile before uploading more: a steady stream of
                // local commits must not starve downloads (acknowledgements, bootstraps).
                while let Some(message) = ws.next().now_or_never() {
                    receive(shared, message, &mut ws, &mut conn, &limits).await?;
                }
                continue;
            }
        }
        let refresh = async {
            match refresh_at {
                Some(at) if conn.bound => tokio::time::sleep_until(at).await,
                _ => std::future::pending().await,
            }
        };
        // A connection whose PONG is 120 s late is dead (Realm's pong keepalive timeout),
        // however quiet it otherwise is.
        let pong_overdue = async {
            match conn.ping_sent {
                Some(at) => tokio::time::sleep_until(at + PONG_TIMEOUT).await,
                None => std::future::pending().await,
            }
        };
        // Biased, so that a simulated run replays the same way (an unbiased `select!` picks
        // at random: docs/testing.md); a wake-up and a message received take turns first.
        wake_first = !wake_first;
        tokio::select! {
            biased;
            _ = stop.changed() => {
                let _ = ws.send(encode(ClientMessage::Unbind { session: 1 })).await;
                let _ = ws.close(None).await;
                return Ok(());
            }
            _ = refresh => {
                match fetch_token(shared).await {
                    Ok(token) => {
                        refresh_at = refresh_deadline(shared, &token);
                        ws.send(encode(ClientMessage::Refresh { session: 1, token }))
                            .await
                            .map_err(|e| fail(e.to_string()))?;
                    }
                    Err(why) => {
                        shared.report(0, why, true);
                        refresh_at = Some(tokio::time::Instant::now() + Duration::from_secs(10));
                    }
                }
            }
            _ = pong_overdue => return Err(fail("no PONG within 120 s")),
            _ = ping_timer.tick(), if conn.ping_sent.is_none() => {
                // One PING outstanding at a time: its send time is what the PONG deadline
                // counts from (re-stamping it on every tick would move the deadline forever).
                conn.ping_sent = Some(tokio::time::Instant::now());
                ws.send(encode(ClientMessage::Ping { timestamp: 0, rtt: 0 })).await.map_err(|e| fail(e.to_string()))?;
            }
            _ = shared.wake.notified(), if wake_first => {}
            message = ws.next() => receive(shared, message, &mut ws, &mut conn, &limits).await?,
            _ = shared.wake.notified(), if !wake_first => {}
        }
    }
}

/// Handles one WebSocket message from the server.
async fn receive<S>(
    shared: &Arc<Shared>,
    message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    conn: &mut Connection,
    limits: &Limits,
) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let bytes = match message {
        Some(Ok(Message::Binary(b))) => b,
        Some(Ok(Message::Close(_))) | None => return Err(fail("the server closed the connection")),
        Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(e))) => {
            return Err(over_limit(format!(
                "a message from the server is too large ({e})"
            )));
        }
        Some(Err(e)) => return Err(fail(e.to_string())),
        Some(Ok(_)) => return Ok(()),
    };
    let message = ServerMessage::parse(&bytes, limits).map_err(|e| {
        if e.code == ErrorCode::LimitsExceeded {
            over_limit(format!(
                "a message from the server is too large: {}",
                e.message
            ))
        } else {
            // Reported with its code each time; retried with backoff.
            Failure {
                code: u64::from(e.code.code()),
                message: format!("the server sent a bad message: {}", e.message),
                retry: true,
            }
        }
    })?;
    handle(shared, message, ws, conn).await
}

/// One connection's progress.
struct Connection {
    /// IDENT sent: uploads and MARKs may flow.
    bound: bool,
    /// The server answered for this connection's path (its IDENT, or a DOWNLOAD after the
    /// client's IDENT), and the file recorded it as the path it syncs with
    /// (`Database::bind_synced_path`).
    path_recorded: bool,
    /// Last client version uploaded on this connection.
    uploaded_through: u64,
    /// Uploaded and not yet acknowledged: (client version, changeset bytes).
    in_flight: VecDeque<(u64, u64)>,
    ping_sent: Option<tokio::time::Instant>,
    /// During a reset: the ident the server just allocated, stored with the snapshot.
    new_ident: Option<(u64, u64)>,
    /// During a recovering reset: whether CLIENT_VERSION was asked about the current ident
    /// (first), the inherited idents asked about next (`Database::inherited_idents`), and the
    /// answers as they arrive (in the order asked).
    asked_current: bool,
    asked_inherited: usize,
    client_versions: Vec<u64>,
    /// Flexible sync: the newest subscription set sent (IDENT's active set, then QUERYs).
    queries_sent: u64,
    /// Flexible sync: the bootstrap being received (its set version, its batches' entries as
    /// received and their changeset bytes), integrated as one when its last batch arrives.
    bootstrap: Option<(u64, Vec<crate::protocol::DownloadEntry>, usize)>,
    /// A rejected transaction being rolled back on this connection: STATE was asked for, and
    /// the snapshot, once complete, waits here until the download cursor reaches its version
    /// (DOWNLOADs past that version are cut at it meanwhile).
    rollback: Option<RollbackState>,
}

/// A rollback by rebase in progress ([`Database::roll_back_to_snapshot`]).
struct RollbackState {
    /// The snapshot's server version, once its first segment arrived.
    target: Option<u64>,
    /// The complete snapshot, decoded once (the rollback waits for the download cursor over
    /// several DOWNLOADs).
    snapshot: Option<RollbackSnapshot>,
}

/// A complete STATE snapshot for a rollback: the server's state at `server_version`.
struct RollbackSnapshot {
    changeset: Arc<Changeset>,
    server_version: u64,
    server_version_salt: u64,
}

/// For a 210 (bad_client_version: this file's own history went back), records the divergence
/// in the file ([`Database::mark_history_diverged`]) with the acknowledgement the file had
/// recorded when the connection began, and returns the version kept (the lowest recorded);
/// `None` for any other failure. The error's message if the file cannot record it.
async fn diverged_acknowledgement(
    shared: &Arc<Shared>,
    failure: &Failure,
) -> Result<Option<u64>, String> {
    if failure.code != u64::from(ErrorCode::BadClientVersion.code()) {
        return Ok(None);
    }
    let at_connect = shared
        .acknowledged_at_connect
        .load(std::sync::atomic::Ordering::SeqCst);
    let d = Arc::clone(&shared.db);
    let recorded = match crate::sim::blocking(move || d.mark_history_diverged(at_connect)).await {
        Ok(recorded) => recorded.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    recorded.map(Some).map_err(|e| {
        format!("client reset: cannot record in the file that its history went back: {e}")
    })
}

/// 210 (bad_client_version, a client reset) if the server says it integrated local version
/// `acknowledged` of a file whose history ends before it: the file was restored from an older
/// copy of itself, and the server holds changesets this copy never made (they never come back:
/// a server sends no client its own). Checked before the DOWNLOAD is integrated, so the file's
/// own record of what was acknowledged stays what this copy uploaded.
async fn check_acknowledgement(db: &Arc<Database>, acknowledged: u64) -> Result<(), Failure> {
    let d = Arc::clone(db);
    let last = blocking(move || d.last_local_version()).await?;
    if acknowledged > last {
        return Err(Failure {
            code: u64::from(ErrorCode::BadClientVersion.code()),
            message: format!(
                "the server integrated local version {acknowledged} of this file, whose history \
                 ends at {last}: the file was restored from an older copy of itself"
            ),
            retry: true,
        });
    }
    Ok(())
}

/// Records the connection's path as the one the file syncs with, once per connection
/// (`Database::bind_synced_path`).
async fn record_path(shared: &Arc<Shared>, conn: &mut Connection) -> Result<(), Failure> {
    if !conn.path_recorded {
        let (db, path) = (Arc::clone(&shared.db), shared.config.path.clone());
        blocking(move || db.bind_synced_path(&path)).await?;
        conn.path_recorded = true;
    }
    Ok(())
}

async fn handle<S>(
    shared: &Arc<Shared>,
    message: ServerMessage,
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    conn: &mut Connection,
) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let db = &shared.db;
    match message {
        ServerMessage::Ident {
            client_file_ident,
            client_file_ident_salt,
            ..
        } => {
            // The server answered for this path: the file syncs with it from now on.
            record_path(shared, conn).await?;
            let plan = lock(&shared.reset).as_mut().map(|p| {
                p.started = true;
                *p
            });
            let Some(plan) = plan else {
                let d = Arc::clone(db);
                blocking(move || {
                    d.set_client_file_ident(client_file_ident, client_file_ident_salt)
                })
                .await?;
                conn.queries_sent = send_ident(ws, shared).await?;
                conn.bound = true;
                shared.set_state(SyncState::Connected);
                start_rollback(shared, ws, conn).await?;
                return Ok(());
            };
            // A reset (or a first open): the new ident is stored with the snapshot.
            conn.new_ident = Some((client_file_ident, client_file_ident_salt));
            // CLIENT_VERSION says which local changes the server integrated: what recovery
            // re-applies, and whether a transaction waiting for its verdict was integrated.
            let verdict_pending = lock(&shared.transact)
                .as_ref()
                .is_some_and(|p| p.version.is_some());
            let mut asked = Vec::new();
            if (plan.recover || verdict_pending) && plan.old_ident != 0 {
                asked.push((plan.old_ident, plan.old_salt));
                conn.asked_current = true;
            }
            if plan.recover {
                // The inherited window's idents: what the server still has of the changesets
                // it integrated before earlier resets (`Database::inherited_idents`).
                let d = Arc::clone(db);
                let inherited = blocking(move || d.inherited_idents()).await?;
                conn.asked_inherited = inherited.len();
                asked.extend(inherited);
            }
            for (ident, salt) in asked {
                ws.send(encode(ClientMessage::ClientVersionRequest {
                    session: 1,
                    client_file_ident: ident,
                    client_file_ident_salt: salt,
                }))
                .await
                .map_err(|e| fail(e.to_string()))?;
            }
            let (server_version, offset) = lock(&shared.partial_state)
                .as_ref()
                .map_or((0, 0), |p| (p.server_version, p.bytes.len() as u64));
            ws.send(encode(ClientMessage::StateRequest {
                session: 1,
                server_version,
                offset,
            }))
            .await
            .map_err(|e| fail(e.to_string()))?;
        }
        ServerMessage::ClientVersion { client_version, .. } => {
            // Answers come in the order asked; more than asked is the server's mistake.
            if conn.client_versions.len() < usize::from(conn.asked_current) + conn.asked_inherited {
                conn.client_versions.push(client_version);
            }
        }
        ServerMessage::State {
            server_version,
            server_version_salt,
            begin_offset,
            total_size,
            segment,
            ..
        } => {
            let complete = {
                let mut partial = lock(&shared.partial_state);
                let continues = partial.as_ref().is_some_and(|p| {
                    p.server_version == server_version && p.bytes.len() as u64 == begin_offset
                });
                if !continues {
                    if begin_offset != 0 {
                        *partial = None;
                        return Err(fail("the server resumed a STATE snapshot it no longer has"));
                    }
                    *partial = Some(PartialState {
                        server_version,
                        server_version_salt,
                        total: total_size,
                        bytes: Vec::with_capacity(total_size.min(64 << 20) as usize),
                    });
                }
                let p = partial.as_mut().expect("set above");
                if let Some(rollback) = conn.rollback.as_mut() {
                    rollback.target = Some(server_version);
                }
                p.bytes.extend_from_slice(&segment);
                let left = p.total.saturating_sub(p.bytes.len() as u64);
                shared.update_progress(|progress| {
                    progress.download_transferred += segment.len() as u64;
                    progress.download_transferable = progress.download_transferred + left;
                });
                if left == 0 {
                    partial.take()
                } else {
                    None
                }
            };
            if let Some(done) = complete {
                match conn.rollback.as_mut() {
                    Some(rollback) if lock(&shared.reset).is_none() => {
                        let changeset = Changeset::decode(&done.bytes).map_err(|e| {
                            fail(format!("the server sent a bad STATE snapshot: {e}"))
                        })?;
                        rollback.snapshot = Some(RollbackSnapshot {
                            changeset: Arc::new(changeset),
                            server_version: done.server_version,
                            server_version_salt: done.server_version_salt,
                        });
                        try_roll_back(shared, ws, conn).await?;
                    }
                    _ => finish_reset(shared, ws, conn, done).await?,
                }
            }
        }
        ServerMessage::Download {
            download_server_version,
            download_client_version,
            latest_server_version,
            latest_server_version_salt,
            upload_client_version,
            downloadable_bytes,
            mut entries,
            flx,
            ..
        } => {
            // A file that had its ident before it recorded a path (an older version of
            // Tandem): the server took its IDENT for this path.
            record_path(shared, conn).await?;
            // The server says it integrated more than this connection sent (changesets
            // integrated before a disconnect): it must not count versions this file never made.
            // Its count at the download cursor is checked too, as a Tandem server acknowledges
            // only versions the session has checked (`Session::verified_upload`).
            let claimed = upload_client_version.max(download_client_version);
            if claimed > conn.uploaded_through {
                check_acknowledgement(db, claimed).await?;
            }
            let (mut download_server_version, mut download_client_version) =
                (download_server_version, download_client_version);
            if let Some(target) = conn.rollback.as_ref().and_then(|r| r.target) {
                // Nothing past the snapshot a rollback rebases onto; what is cut is downloaded
                // again on the next connection. Every changeset of this client the server
                // integrated up to the target came before the transaction, so the client
                // version integrated there is the one integrated at the latest.
                // The server's acknowledgement counts only versions this session checked; the
                // ones acknowledged before it are counted by the file.
                if download_server_version > target {
                    entries.retain(|e| e.server_version <= target);
                    download_server_version = target;
                    download_client_version = upload_client_version.max(
                        shared
                            .acknowledged_at_connect
                            .load(std::sync::atomic::Ordering::SeqCst),
                    );
                }
            }
            let received: u64 = entries.iter().map(|e| e.changeset.len() as u64).sum();
            let d = Arc::clone(db);
            let cursors = DownloadCursors {
                download_server_version,
                download_client_version,
                latest_server_version,
                latest_server_version_salt,
                // The file records as acknowledged only versions this connection sent (or that
                // were acknowledged before it): a restored copy of the file must not take the
                // other copy's versions for its own, which would stop it uploading its own
                // changesets at those versions, and trim them, before the server could find
                // the divergence among its resends. After a lost acknowledgement, the
                // changesets are sent again and acknowledged then.
                upload_client_version: upload_client_version.min(conn.uploaded_through),
            };
            match flx.filter(|f| f.batch_state != BatchState::SteadyState) {
                Some(f) => {
                    // A bootstrap batch: staged until its last one (realm-core's pending
                    // bootstrap), then integrated with the set's completion in one transaction.
                    let (version, staged, bytes) = conn
                        .bootstrap
                        .get_or_insert_with(|| (f.query_version, Vec::new(), 0));
                    if *version != f.query_version {
                        return Err(fail(format!(
                            "the server mixed the bootstraps of subscription sets {version} and {}",
                            f.query_version
                        )));
                    }
                    *bytes += received as usize;
                    if *bytes > MAX_BOOTSTRAP_BYTES {
                        let version = f.query_version;
                        conn.bootstrap = None;
                        let why = format!(
                            "its bootstrap is over {} MiB of changesets: subscribe to less at a time",
                            MAX_BOOTSTRAP_BYTES >> 20
                        );
                        let d = Arc::clone(db);
                        let message = why.clone();
                        blocking(move || d.fail_subscription_set(version, &message)).await?;
                        shared.subscription_states.send_modify(|n| *n += 1);
                        return Err(Failure {
                            code: u64::from(ErrorCode::LimitsExceeded.code()),
                            message: format!("subscription set {version} refused here: {why}"),
                            retry: true,
                        });
                    }
                    staged.extend(entries);
                    if f.batch_state == BatchState::MoreToCome {
                        shared.update_progress(|p| p.download_transferred += received);
                        return Ok(());
                    }
                    let (version, staged, _) = conn.bootstrap.take().expect("staged above");
                    let changesets = to_incoming(staged);
                    blocking(move || d.integrate_bootstrap(changesets, cursors, version)).await?;
                    shared.subscription_states.send_modify(|n| *n += 1);
                }
                None => {
                    if let Some((version, ..)) = &conn.bootstrap {
                        return Err(fail(format!(
                            "the server sent a DOWNLOAD in the middle of the bootstrap of \
                             subscription set {version}"
                        )));
                    }
                    let changesets = to_incoming(entries);
                    blocking(move || d.integrate_download_encoded(changesets, cursors)).await?;
                }
            }
            let mut acknowledged = 0;
            while conn
                .in_flight
                .front()
                .is_some_and(|(v, _)| *v <= upload_client_version)
            {
                acknowledged += conn.in_flight.pop_front().map_or(0, |(_, size)| size);
            }
            let d = Arc::clone(db);
            let pending_bytes = blocking(move || d.pending_upload_bytes()).await?;
            shared.update_progress(|p| {
                p.upload_transferred += acknowledged;
                p.upload_transferable = p.upload_transferred + pending_bytes;
                p.download_transferred += received;
                p.download_transferable = p.download_transferred + downloadable_bytes;
            });
            shared.acked.send_modify(|n| *n += 1);
            // A transaction sent before a disconnect whose verdict was lost: the server's
            // acknowledgement says it was integrated.
            let resolved = lock(&shared.transact)
                .as_ref()
                .filter(|p| p.rejected.is_none())
                .and_then(|p| p.version)
                .filter(|&v| v <= upload_client_version);
            if let Some(version) = resolved {
                accept_transact(shared, version, latest_server_version).await?;
            }
            // A rollback waiting for the cursor to reach its snapshot (a no-op otherwise).
            try_roll_back(shared, ws, conn).await?;
        }
        ServerMessage::TransactResult {
            request_ident,
            accepted,
            server_version,
            reason,
            ..
        } => {
            if lock(&shared.transact).as_ref().and_then(|p| p.version) != Some(request_ident) {
                return Ok(()); // a verdict for a transaction already resolved
            }
            if accepted {
                accept_transact(shared, request_ident, server_version).await?;
                shared.wake.notify_one();
            } else {
                // The rejection is stored before it is acted on: after a crash the transaction
                // is rolled back, never uploaded.
                let d = Arc::clone(db);
                let why = reason.clone();
                blocking(move || d.reject_transact(request_ident, &why)).await?;
                if let Some(p) = lock(&shared.transact).as_mut() {
                    p.rejected = Some(reason);
                }
                // Rolled back by rebasing the later local changesets onto the server's state
                // (`start_rollback`), on this connection and the next ones until it is done.
                start_rollback(shared, ws, conn).await?;
            }
        }
        ServerMessage::Mark { request_ident, .. } => {
            if let Some(waiter) = lock(&shared.marks).remove(&request_ident) {
                let _ = waiter.done.send(());
            }
        }
        ServerMessage::Pong { .. } => conn.ping_sent = None,
        ServerMessage::Error {
            code,
            message,
            try_again,
            ..
        } => {
            let advice = if code == u64::from(ErrorCode::LimitsExceeded.code()) {
                // The store keeps every changeset within the protocol limits, and batches stay
                // within them too: a server that refuses one has a lower limit configured.
                format!(
                    "; the server's message size limit is below the protocol's ({} bytes): \
                     raise the server's max_body to at least that, then restart the session",
                    limits::MAX_BODY_SIZE
                )
            } else {
                String::new()
            };
            return Err(Failure {
                code,
                message: format!("server error {code}: {message}{advice}"),
                retry: try_again,
            });
        }
        ServerMessage::JsonError { code, json, .. }
            if code == u64::from(ErrorCode::CompensatingWrite.code()) =>
        {
            // The server reverted writes this user may not make; the DOWNLOAD that follows
            // carries the revert. The session goes on.
            shared.report(code, format!("compensating write: {json}"), true);
        }
        ServerMessage::JsonError { code, json, .. } => {
            return Err(Failure {
                code,
                message: format!("server error {code}: {json}"),
                retry: false,
            });
        }
        ServerMessage::Unbound { .. } => {}
        ServerMessage::QueryError {
            code,
            message,
            query_version,
            ..
        } if shared.config.flexible => {
            // The server keeps the previous set; so does this file.
            let d = Arc::clone(db);
            let why = message.clone();
            blocking(move || d.fail_subscription_set(query_version, &why)).await?;
            shared.subscription_states.send_modify(|n| *n += 1);
            shared.report(
                code,
                format!("subscription set {query_version} refused: {message}"),
                true,
            );
        }
        ServerMessage::QueryError { code, message, .. } => {
            // A session that is not flexible sends no subscriptions, so a QUERY_ERROR means
            // the server broke the protocol.
            return Err(Failure {
                code: u64::from(ErrorCode::BadMessageOrder.code()),
                message: format!("the server sent QUERY_ERROR {code} ({message}) to a session with no subscriptions"),
                retry: false,
            });
        }
    }
    Ok(())
}

/// The server integrated the waiting transaction `version` (its TRANSACT_RESULT, or an upload
/// acknowledgement that covers it): its record is dropped first, so that a crash from then on
/// finds nothing waiting and does not send it as TRANSACT again (until the next DOWNLOAD stores
/// the upload cursor it may be uploaded once more as it is, which the server skips as
/// integrated); then `transact` gets `Accepted` with `server_version`.
async fn accept_transact(
    shared: &Arc<Shared>,
    version: u64,
    server_version: u64,
) -> Result<(), Failure> {
    let d = Arc::clone(&shared.db);
    blocking(move || d.resolve_transact(version)).await?;
    let mut pending = lock(&shared.transact);
    if pending.as_ref().and_then(|p| p.version) == Some(version) {
        if let Some(done) = pending.take().and_then(|p| p.done) {
            let _ = done.send(TransactOutcome::Accepted { server_version });
        }
    }
    Ok(())
}

/// Starts (or resumes, on a new connection) the rollback of a transaction the server rejected:
/// asks for a STATE snapshot of the server's latest state on this bound session. Downloads go
/// on, cut at the snapshot's version; once the download cursor is there, the store rebases
/// the later local changesets onto the snapshot without the transaction
/// ([`try_roll_back`]). Nothing at or after the transaction is uploaded meanwhile.
async fn start_rollback<S>(
    shared: &Arc<Shared>,
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    conn: &mut Connection,
) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let rejected = lock(&shared.transact)
        .as_ref()
        .is_some_and(|p| p.rejected.is_some() && p.version.is_some());
    if !rejected || conn.rollback.is_some() {
        return Ok(());
    }
    let (server_version, offset) = lock(&shared.partial_state)
        .as_ref()
        .map_or((0, 0), |p| (p.server_version, p.bytes.len() as u64));
    conn.rollback = Some(RollbackState {
        target: (server_version != 0).then_some(server_version),
        snapshot: None,
    });
    ws.send(encode(ClientMessage::StateRequest {
        session: 1,
        server_version,
        offset,
    }))
    .await
    .map_err(|e| fail(e.to_string()))
}

/// Finishes a rollback once its snapshot is complete and the download cursor reached it: the
/// store rebases ([`Database::roll_back_to_snapshot`]), the transaction is reported
/// `Rejected` (what could not be rebased is reported as an error event with `will_retry`, and
/// is in the quarantine), and the connection starts over at once (the DOWNLOADs cut at the
/// snapshot are fetched again). A snapshot older than the download cursor ends the connection
/// with an error; the next connection asks again.
async fn try_roll_back<S>(
    shared: &Arc<Shared>,
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    conn: &mut Connection,
) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(snapshot) = conn.rollback.as_mut().and_then(|r| r.snapshot.take()) else {
        return Ok(());
    };
    let Some((version, reason)) = lock(&shared.transact)
        .as_ref()
        .and_then(|p| Some((p.version?, p.rejected.clone()?)))
    else {
        conn.rollback = None;
        return Ok(());
    };
    let d = Arc::clone(&shared.db);
    let changeset = Arc::clone(&snapshot.changeset);
    let (server_version, salt) = (snapshot.server_version, snapshot.server_version_salt);
    let outcome =
        blocking(move || d.roll_back_to_snapshot(&changeset, server_version, salt, version))
            .await?;
    let outcome = match outcome {
        SnapshotRollback::RolledBack(outcome) => outcome,
        SnapshotRollback::CursorBehind { .. } => {
            // More to download first.
            if let Some(r) = conn.rollback.as_mut() {
                r.snapshot = Some(snapshot);
            }
            return Ok(());
        }
        SnapshotRollback::SnapshotOlder {
            download_server_version,
        } => {
            // The latest state cannot be older than what this file downloaded (a server
            // restored from an older copy refuses the file at IDENT). Asked again after the
            // backoff, on the next connection, not at once: a server that keeps sending it must
            // not spin us.
            conn.rollback = None;
            return Err(fail(format!(
                "the server's STATE snapshot (server version {server_version}) is older than \
                 this file's download cursor (server version {download_server_version}); the \
                 rollback asks again on the next connection"
            )));
        }
    };
    if outcome.quarantined > 0 {
        shared.report(
            0,
            format!(
                "transaction rollback: {} instructions of {} later local changesets could not \
                 be rebased without the transaction and were quarantined (Database::quarantine)",
                outcome.instructions_not_recovered, outcome.quarantined
            ),
            true,
        );
    }
    if let Some(done) = lock(&shared.transact).take().and_then(|p| p.done) {
        let _ = done.send(TransactOutcome::Rejected { reason });
    }
    conn.rollback = None;
    shared
        .reconnect_now
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = ws.send(encode(ClientMessage::Unbind { session: 1 })).await;
    Err(fail(
        "transaction rolled back; reconnecting to download from the snapshot",
    ))
}

/// Applies a complete STATE snapshot: the reset (or first open) in one transaction, then
/// normal sync from the snapshot's server version.
async fn finish_reset<S>(
    shared: &Arc<Shared>,
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    conn: &mut Connection,
    done: PartialState,
) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let applied = apply_reset(shared, conn, done).await;
    if applied.is_err() {
        if let Some(plan) = lock(&shared.reset).as_mut() {
            plan.attempt_failed = true;
        }
    }
    applied?;
    send_ident(ws, shared).await?;
    conn.bound = true;
    shared.set_state(SyncState::Connected);
    Ok(())
}

/// The reset of [`finish_reset`] on the store, with its outcome reported: any error is a failed
/// attempt (a bad snapshot, a store that refuses it or cannot recover).
async fn apply_reset(
    shared: &Arc<Shared>,
    conn: &mut Connection,
    done: PartialState,
) -> Result<(), Failure> {
    let (ident, salt) = conn
        .new_ident
        .ok_or_else(|| fail("the server sent STATE before IDENT"))?;
    // Applied as it is decoded, inside the reset's transaction (a bad snapshot changes
    // nothing): a large snapshot is never held decoded.
    let snapshot = done.bytes;
    let (recover, server_lost_history, own_acknowledgement) = lock(&shared.reset)
        .as_ref()
        .map_or((false, false, None), |p| {
            (p.recover, p.server_lost_history, p.own_acknowledgement)
        });
    let base = ResetBase {
        client_file_ident: ident,
        client_file_ident_salt: salt,
        server_version: done.server_version,
        server_version_salt: done.server_version_salt,
    };
    let (current, inherited) = conn
        .client_versions
        .split_at(usize::from(conn.asked_current).min(conn.client_versions.len()));
    let mut through = current.first().copied().unwrap_or(0);
    if let Some(own) = own_acknowledgement {
        // The server's count includes versions another copy of this file made: only what this
        // copy had recorded as acknowledged is known to be in the server's history. Later local
        // changesets are recovered (one the server integrated before this copy recorded its
        // acknowledgement is applied twice; docs/client.md).
        through = through.min(own);
    }
    let acknowledged = recover.then(|| Acknowledged {
        through,
        inherited: inherited.to_vec(),
    });
    let snapshot_version = done.server_version;
    // A transaction waiting for its verdict is decided by the reset: if the server integrated
    // it (CLIENT_VERSION says so), it is in the snapshot and accepted; otherwise it is rolled
    // back with the reset (never re-applied, so never uploaded unchecked), rejected when the
    // server has its history and in doubt when it lost some. Its old local version must not
    // be matched against the re-recorded changesets afterwards.
    let waiting = lock(&shared.transact).as_ref().and_then(|p| p.version);
    let integrated = waiting.is_some_and(|v| v <= through);
    let exclude = waiting.filter(|_| !integrated);
    let d = Arc::clone(&shared.db);
    let (outcome, trimmed) = blocking(move || {
        let trimmed = d.trimmed_through()?;
        let replay = if recover {
            d.local_changes_after(through)?
        } else {
            Vec::new()
        };
        let outcome = d.reset_to_snapshot_encoded(
            &snapshot,
            base,
            ResetRecovery {
                changesets: replay,
                rolled_back: exclude,
                acknowledged,
            },
        )?;
        Ok((outcome, trimmed))
    })
    .await?;
    if recover && through < trimmed {
        // The server lost local changesets (a restore from a backup) that were acknowledged
        // long enough ago to have left the recovery window.
        shared.report(
            0,
            format!(
                "client reset: the server no longer has local versions {}..={trimmed}, which this \
                 file had already trimmed from its history after the server acknowledged them; \
                 they cannot be recovered (a larger store Config::recovery_window keeps more)",
                through + 1
            ),
            true,
        );
    }
    *lock(&shared.reset) = None;
    conn.uploaded_through = 0;
    conn.in_flight.clear();
    shared.resets.send_modify(|n| *n += 1);
    if waiting.is_some() {
        let decided = lock(&shared.transact).take();
        if let Some(p) = decided {
            if let Some(done) = p.done {
                let _ = done.send(match p.rejected {
                    _ if integrated => TransactOutcome::Accepted {
                        server_version: snapshot_version,
                    },
                    Some(reason) => TransactOutcome::Rejected { reason },
                    None if server_lost_history && p.maybe_integrated => TransactOutcome::InDoubt {
                        reason: "a client reset came before the server's verdict: the server \
                                 lost history (restored or emptied), so it may have integrated \
                                 the transaction and other clients may hold parts of it; it was \
                                 rolled back here"
                            .into(),
                    },
                    None if p.maybe_integrated => TransactOutcome::Rejected {
                        reason: "a client reset came before the server's verdict (the server \
                                 expired this file's history) and the server never integrated \
                                 it; the transaction was rolled back"
                            .into(),
                    },
                    None => TransactOutcome::Rejected {
                        reason: "a client reset came before the server could have integrated \
                                 the transaction (it was never sent, or refused with the reset \
                                 error); it was rolled back"
                            .into(),
                    },
                });
            }
        }
    }
    if outcome.quarantined > 0 {
        shared.report(
            0,
            format!(
                "client reset: {} instructions of {} local changesets could not be recovered \
                 and were quarantined (Database::quarantine)",
                outcome.instructions_not_recovered, outcome.quarantined
            ),
            true,
        );
    }
    Ok(())
}

/// Sends IDENT (with the active subscription set in flexible sync); returns that set's version.
async fn send_ident<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    shared: &Arc<Shared>,
) -> Result<u64, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let d = Arc::clone(&shared.db);
    let flexible = shared.config.flexible;
    let (p, active) = blocking(move || {
        let active = match flexible {
            true => Some(d.active_subscriptions()?),
            false => None,
        };
        Ok((d.sync_progress()?, active))
    })
    .await?;
    let active_version = active.as_ref().map_or(0, |a| a.version);
    ws.send(encode(ClientMessage::Ident {
        session: 1,
        client_file_ident: p.client_file_ident,
        client_file_ident_salt: p.client_file_ident_salt,
        download_server_version: p.download_server_version,
        download_client_version: p.download_client_version,
        latest_server_version: p.latest_server_version,
        latest_server_version_salt: p.latest_server_version_salt,
        query: active.map(|a| FlxQuery {
            version: a.version,
            body: a.wire_body(),
        }),
    }))
    .await
    .map_err(|e| fail(e.to_string()))?;
    Ok(active_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes_with_bounded_jitter() {
        for n in 0..20 {
            let base = Duration::from_secs(1u64 << n.min(9)).min(Duration::from_secs(300));
            let b = backoff(n);
            assert!(b <= base && b >= base * 3 / 4, "{n}: {b:?}");
        }
    }

    /// A changeset of `len` bytes (one AddTable with a name of about that length).
    fn changeset(version: u64, len: usize) -> Changeset {
        let mut cs = Changeset::new();
        let name = cs.intern(&"n".repeat(len));
        cs.instructions
            .push(crate::changeset::Instruction::EraseTable { table: name });
        cs.meta.version = version;
        cs
    }

    #[test]
    fn upload_batches_stay_under_the_body_limit_with_their_headers() {
        // 1,000 changesets of ~100 bytes: batches split below 4 KiB of body, headers counted.
        let small: Vec<Changeset> = (1..=1_000).map(|v| changeset(v, 100)).collect();
        let mut rest = &small[..];
        let mut batches = 0;
        while !rest.is_empty() {
            let batch = upload_batch(rest.iter(), 4096);
            let body: usize = batch.iter().map(UploadEntry::encoded_len).sum();
            let encoded = ClientMessage::Upload {
                session: 1,
                progress_client_version: 0,
                progress_server_version: 0,
                locked_server_version: 0,
                entries: batch.clone(),
            };
            assert!(!batch.is_empty() && body <= 4096, "{body}");
            // The counted size is the real uncompressed body: the header declares it.
            let header = String::from_utf8_lossy(&encoded.encode()[..60]).into_owned();
            assert_eq!(
                header.split(' ').nth(3),
                Some(body.to_string().as_str()),
                "{header}"
            );
            rest = &rest[batch.len()..];
            batches += 1;
        }
        assert!(batches >= 1_000 * 100 / 4096, "{batches}");
        // One changeset over the batch limit still goes, alone.
        let big = [changeset(1, 10_000), changeset(2, 10)];
        assert_eq!(upload_batch(big.iter(), 4096).len(), 1);
    }

    #[test]
    fn refresh_happens_before_expiry() {
        assert_eq!(refresh_delay(3600), Duration::from_secs(2880));
        assert_eq!(refresh_delay(5), Duration::from_secs(4));
        assert_eq!(refresh_delay(1), Duration::from_secs(0));
        assert_eq!(refresh_delay(0), Duration::from_secs(0));
    }
}
