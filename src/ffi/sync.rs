//! `SyncSession`, `open_synced` and the sync listeners for foreign code.
//!
//! The async functions run on the library's own runtime (foreign event loops only await the
//! result). Each has a blocking twin (`..._blocking`, cancellable with a [`CancelToken`]) for a
//! caller that waits on a thread of its own: the Python package awaits those in an executor
//! thread, so that no library thread calls into Python to resume an await (see
//! `super::foreign`). Listeners run on the session's notifier thread, never on the socket's.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::database::{report, Database, ListenerHandle, OpenOptions};
use super::foreign::Foreign;
use super::ops::{apply, WriteOp};
use super::types::{schema, CallbackError, ClassSpec, TandemError};
use crate::client::{self, Event};

/// Where and how to sync.
#[derive(Clone, Debug, uniffi::Record)]
pub struct SyncOptions {
    /// Server URL, `wss://host:port/` (`ws://` only with `allow_insecure`).
    pub url: String,
    /// The server path to sync with.
    pub path: String,
    /// Access token (may be empty with a token provider).
    pub token: String,
    /// CA certificate file (PEM) the server's certificate must chain to; `None` trusts the
    /// operating system's roots.
    #[uniffi(default = None)]
    pub ca_file: Option<String>,
    /// Allow plain `ws://` (local development only).
    #[uniffi(default = false)]
    pub allow_insecure: bool,
    /// What a client reset does.
    pub client_reset: ClientResetMode,
    /// Milliseconds a TCP connect may take before the attempt fails and is retried.
    #[uniffi(default = 10000)]
    pub connect_timeout_ms: u64,
    /// Milliseconds from TCP connected to TLS and the WebSocket upgrade done.
    #[uniffi(default = 10000)]
    pub handshake_timeout_ms: u64,
    /// Flexible sync: download only what the database's subscriptions match (`path` is then
    /// the server's flexible sync file, `/flx`).
    #[uniffi(default = false)]
    pub flexible: bool,
}

/// What a client reset does with local changes the server never integrated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ClientResetMode {
    /// Replace the local state with the server's.
    DiscardLocal,
    /// Re-apply local changes on the server's state; what no longer applies is quarantined.
    Recover,
    /// Recover, or discard if recovery fails.
    RecoverOrDiscard,
    /// Stop and let the app decide.
    Manual,
}

/// The connection state.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SyncState {
    /// Not connected.
    Disconnected,
    /// Connecting.
    Connecting,
    /// Bound and syncing.
    Connected,
    /// Stopped for good.
    Error {
        /// Why.
        message: String,
    },
}

/// Transfer progress in changeset bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Record)]
pub struct SyncProgress {
    /// Local bytes the server acknowledged.
    pub upload_transferred: u64,
    /// That plus local bytes still to upload.
    pub upload_transferable: u64,
    /// Server bytes received.
    pub download_transferred: u64,
    /// That plus what the server says is left.
    pub download_transferable: u64,
}

/// Told about connection state changes.
#[uniffi::export(foreign)]
pub trait SyncStateListener: Send + Sync {
    /// The state changed.
    fn on_state(&self, state: SyncState) -> Result<(), CallbackError>;
}

/// Told about transfer progress.
#[uniffi::export(foreign)]
pub trait ProgressListener: Send + Sync {
    /// Progress changed.
    fn on_progress(&self, progress: SyncProgress) -> Result<(), CallbackError>;
}

/// Told about errors; `will_retry` says whether sync goes on by itself.
#[uniffi::export(foreign)]
pub trait ErrorListener: Send + Sync {
    /// An error happened. `code` is the server's error code, or 0 for a local or network one.
    fn on_error(&self, code: u64, message: String, will_retry: bool) -> Result<(), CallbackError>;
}

/// Gives the session fresh access tokens (called on a worker thread; may block).
#[uniffi::export(foreign)]
pub trait TokenProvider: Send + Sync {
    /// A new access token.
    fn fetch_token(&self) -> Result<String, CallbackError>;
}

struct ForeignTokens(Foreign<dyn TokenProvider>);

impl client::TokenProvider for ForeignTokens {
    fn fetch_token(&self) -> Result<String, String> {
        match self.0.call(|t| t.fetch_token()) {
            Some(token) => token.map_err(|e| e.to_string()),
            None => Err("the app is shutting down (close_callbacks)".into()),
        }
    }
}

/// The session's Rust configuration. `errors` is registered before the session starts
/// (`client::SyncConfig::on_event`), so it is told even of the first error.
fn config(
    options: SyncOptions,
    tokens: Option<Arc<dyn TokenProvider>>,
    errors: Option<Arc<dyn ErrorListener>>,
) -> client::SyncConfig {
    client::SyncConfig {
        url: options.url,
        path: options.path,
        token: options.token,
        ca_file: options.ca_file.map(Into::into),
        allow_insecure: options.allow_insecure,
        token_provider: tokens
            .map(|t| Arc::new(ForeignTokens(Foreign::new(t))) as Arc<dyn client::TokenProvider>),
        client_reset: match options.client_reset {
            ClientResetMode::DiscardLocal => client::ClientResetMode::DiscardLocal,
            ClientResetMode::Recover => client::ClientResetMode::Recover,
            ClientResetMode::RecoverOrDiscard => client::ClientResetMode::RecoverOrDiscard,
            ClientResetMode::Manual => client::ClientResetMode::Manual,
        },
        timeouts: client::SyncTimeouts {
            connect: std::time::Duration::from_millis(options.connect_timeout_ms),
            handshake: std::time::Duration::from_millis(options.handshake_timeout_ms),
        },
        flexible: options.flexible,
        on_event: errors.map(|l| Arc::new(error_events(l)) as client::EventListener),
    }
}

/// Hands `listener` each [`Event::Error`] (for `SyncSession::observe_errors` and the error
/// listener a session starts with).
fn error_events(listener: Arc<dyn ErrorListener>) -> impl Fn(&Event) + Send + Sync + 'static {
    let listener = Foreign::new(listener);
    move |e| {
        if let Event::Error(info) = e {
            report(
                "error listener",
                listener.call(|l| l.on_error(info.code, info.message.clone(), info.will_retry)),
            );
        }
    }
}

fn state(s: client::SyncState) -> SyncState {
    match s {
        client::SyncState::Disconnected => SyncState::Disconnected,
        client::SyncState::Connecting => SyncState::Connecting,
        client::SyncState::Connected => SyncState::Connected,
        client::SyncState::Error(message) => SyncState::Error { message },
    }
}

fn progress(p: client::Progress) -> SyncProgress {
    SyncProgress {
        upload_transferred: p.upload_transferred,
        upload_transferable: p.upload_transferable,
        download_transferred: p.download_transferred,
        download_transferable: p.download_transferable,
    }
}

fn timeout(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

/// Cancels blocking calls (`SyncSession.wait_for_upload_blocking`...) from another thread: each
/// call given this token returns `Stopped` once it is cancelled. A token stays cancelled.
#[derive(uniffi::Object)]
pub struct CancelToken {
    pub(super) cancelled: watch::Sender<bool>,
}

#[uniffi::export]
impl CancelToken {
    /// A token not cancelled yet.
    #[uniffi::constructor]
    pub fn new() -> Arc<Self> {
        Arc::new(CancelToken {
            cancelled: watch::channel(false).0,
        })
    }

    /// Makes the calls waiting with this token (and any later one) return `Stopped`.
    pub fn cancel(&self) {
        self.cancelled.send_replace(true);
    }

    /// Whether `cancel()` was called.
    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }
}

/// Runs `work` on the library's runtime and blocks the calling thread until it completes or
/// `cancel` is cancelled; then `work` is dropped, as an abandoned `await` drops it. The result
/// crosses back through a channel, so this works on any thread (unlike `Runtime::block_on`,
/// which panics on a thread of a runtime).
pub(super) fn block_on<T: Send + 'static>(
    work: impl Future<Output = Result<T, TandemError>> + Send + 'static,
    cancel: Option<Arc<CancelToken>>,
) -> Result<T, TandemError> {
    let (done, result) = std::sync::mpsc::sync_channel(1);
    client::runtime().spawn(async move {
        let outcome = match cancel {
            None => work.await,
            Some(cancel) => {
                let mut cancelled = cancel.cancelled.subscribe();
                tokio::select! {
                    biased;
                    outcome = work => outcome,
                    _ = cancelled.wait_for(|c| *c) => Err(TandemError::Stopped {
                        message: "the call was cancelled".into(),
                    }),
                }
            }
        };
        let _ = done.send(outcome);
    });
    result.recv().unwrap_or_else(|_| {
        Err(TandemError::Stopped {
            message: "the library's runtime dropped the call".into(),
        })
    })
}

/// A running sync session. `stop()` (or dropping it) stops syncing.
#[derive(uniffi::Object)]
pub struct SyncSession {
    pub(super) inner: client::SyncSession,
}

#[uniffi::export]
impl Database {
    /// Starts syncing this database in the background. `error_listener` is told of every
    /// error of the session from the first (as Realm's sync error handler, given in its
    /// configuration), and let go of after the session's last event (it stopped);
    /// `SyncSession.observe_errors` after this call can miss the earliest.
    #[uniffi::method(default(error_listener = None))]
    pub fn sync(
        &self,
        options: SyncOptions,
        token_provider: Option<Arc<dyn TokenProvider>>,
        error_listener: Option<Arc<dyn ErrorListener>>,
    ) -> Result<Arc<SyncSession>, TandemError> {
        let config = config(options, token_provider, error_listener);
        let inner = client::SyncSession::start(Arc::clone(&self.inner), config)?;
        Ok(Arc::new(SyncSession { inner }))
    }
}

#[uniffi::export]
impl SyncSession {
    /// The current state.
    pub fn state(&self) -> SyncState {
        state(self.inner.state())
    }

    /// Progress so far.
    pub fn progress(&self) -> SyncProgress {
        progress(self.inner.progress())
    }

    /// Completes when the server has every change committed before the call.
    pub async fn wait_for_upload(&self, timeout_ms: Option<u64>) -> Result<(), TandemError> {
        Ok(self.inner.wait_for_upload(timeout(timeout_ms)).await?)
    }

    /// `wait_for_upload`, blocking the calling thread; `cancel` ends the wait from another
    /// thread (`Stopped`).
    #[uniffi::method(default(cancel = None))]
    pub fn wait_for_upload_blocking(
        self: Arc<Self>,
        timeout_ms: Option<u64>,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<(), TandemError> {
        block_on(
            async move { Ok(self.inner.wait_for_upload(timeout(timeout_ms)).await?) },
            cancel,
        )
    }

    /// Completes when every server change that existed at the call is here.
    pub async fn wait_for_download(&self, timeout_ms: Option<u64>) -> Result<(), TandemError> {
        Ok(self.inner.wait_for_download(timeout(timeout_ms)).await?)
    }

    /// `wait_for_download`, blocking the calling thread; `cancel` ends the wait from another
    /// thread (`Stopped`).
    #[uniffi::method(default(cancel = None))]
    pub fn wait_for_download_blocking(
        self: Arc<Self>,
        timeout_ms: Option<u64>,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<(), TandemError> {
        block_on(
            async move { Ok(self.inner.wait_for_download(timeout(timeout_ms)).await?) },
            cancel,
        )
    }

    /// Calls `listener` on every state change.
    pub fn observe_state(&self, listener: Arc<dyn SyncStateListener>) -> Arc<ListenerHandle> {
        let listener = Foreign::new(listener);
        ListenerHandle::new(self.inner.on_event(move |e| {
            if let Event::State(s) = e {
                report(
                    "state listener",
                    listener.call(|l| l.on_state(state(s.clone()))),
                );
            }
        }))
    }

    /// Calls `listener` whenever progress changes.
    pub fn observe_progress(&self, listener: Arc<dyn ProgressListener>) -> Arc<ListenerHandle> {
        let listener = Foreign::new(listener);
        ListenerHandle::new(self.inner.on_event(move |e| {
            if let Event::Progress(p) = e {
                report(
                    "progress listener",
                    listener.call(|l| l.on_progress(progress(*p))),
                );
            }
        }))
    }

    /// Calls `listener` on every later error. An error from before the call (a failing token
    /// provider's first, an unreachable server's) is not repeated: to be told of every error,
    /// give the listener when the session starts (`Database.sync`, `open_synced`). Errors
    /// that stopped the session for good are handed to a late listener too.
    pub fn observe_errors(&self, listener: Arc<dyn ErrorListener>) -> Arc<ListenerHandle> {
        ListenerHandle::new(self.inner.on_event(error_events(listener)))
    }

    /// Commits `ops` as one transaction that the server integrates only if no changeset it
    /// integrated since this file's last download touches the same objects (and the ops
    /// change no schema): a compare-and-set across devices. Listeners see the write at once;
    /// a rejected transaction is rolled back locally before this returns. One at a time
    /// (a second is `Sync`); an empty transaction is `Sync`; a failing operation fails the
    /// call with its own error (named `operation i`) and writes nothing. `Timeout` means the
    /// verdict did not come in time: the transaction stays pending and may still be accepted.
    pub async fn transact(
        &self,
        ops: Vec<WriteOp>,
        timeout_ms: Option<u64>,
    ) -> Result<TransactOutcome, TandemError> {
        transact(&self.inner, ops, timeout_ms).await
    }

    /// `transact`, blocking the calling thread; `cancel` ends the wait for the verdict from
    /// another thread (`Stopped`; as with `Timeout`, the transaction may still be accepted).
    #[uniffi::method(default(cancel = None))]
    pub fn transact_blocking(
        self: Arc<Self>,
        ops: Vec<WriteOp>,
        timeout_ms: Option<u64>,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<TransactOutcome, TandemError> {
        block_on(
            async move { transact(&self.inner, ops, timeout_ms).await },
            cancel,
        )
    }

    /// Stops syncing.
    pub fn stop(&self) {
        self.inner.stop();
    }
}

/// `SyncSession.transact` and `transact_blocking`.
async fn transact(
    session: &client::SyncSession,
    ops: Vec<WriteOp>,
    timeout_ms: Option<u64>,
) -> Result<TransactOutcome, TandemError> {
    let failed: Arc<std::sync::Mutex<Option<TandemError>>> = Arc::default();
    let slot = Arc::clone(&failed);
    let outcome = session
        .transact(
            move |tx| {
                for (i, op) in ops.into_iter().enumerate() {
                    if let Err(e) = apply(tx, op) {
                        let e = e.context(&format!("operation {i}"));
                        let message = e.to_string();
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return Err(crate::store::StoreError::InvalidArgument(message));
                    }
                }
                Ok(())
            },
            timeout(timeout_ms),
        )
        .await;
    // An operation's own error keeps its variant (the session only carries its message).
    let taken = failed.lock().unwrap_or_else(|p| p.into_inner()).take();
    match (outcome, taken) {
        (Err(_), Some(e)) => Err(e),
        (outcome, _) => Ok(match outcome? {
            client::TransactOutcome::Accepted { server_version } => {
                TransactOutcome::Accepted { server_version }
            }
            client::TransactOutcome::Rejected { reason } => TransactOutcome::Rejected { reason },
            client::TransactOutcome::InDoubt { reason } => TransactOutcome::InDoubt { reason },
        }),
    }
}

/// The server's verdict on a `SyncSession.transact`.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum TransactOutcome {
    /// Integrated as this server version.
    Accepted {
        /// The server version it became.
        server_version: u64,
    },
    /// Refused; the transaction was rolled back locally (listeners saw it disappear).
    Rejected {
        /// Why, in the server's words (or the client reset's, when one came first).
        reason: String,
    },
    /// Unknown: the server lost history (a restore) before its verdict reached this client,
    /// so it may have integrated the transaction and other clients may hold parts of it. It
    /// was rolled back here like a rejected one.
    InDoubt {
        /// What happened.
        reason: String,
    },
}

/// A database opened by `open_synced`, with its session.
#[derive(uniffi::Record)]
pub struct SyncedDatabase {
    /// The database, up to date with the server as of the call.
    pub database: Arc<Database>,
    /// Its running session.
    pub session: Arc<SyncSession>,
}

/// Opens `path` for syncing: a never-synced file first downloads the server's state (one
/// snapshot, resumable), a synced one waits for the server's news; then it keeps syncing.
/// `open_options` (durability, writer timeout, recovery window) defaults to the defaults.
/// `error_listener` is told of every error of the session from the first, including those
/// while this call waits (a failing token provider, an unreachable server: the session
/// retries them until `timeout_ms`).
#[uniffi::export(default(open_options = None, error_listener = None))]
pub async fn open_synced(
    path: String,
    classes: Vec<ClassSpec>,
    options: SyncOptions,
    token_provider: Option<Arc<dyn TokenProvider>>,
    timeout_ms: Option<u64>,
    open_options: Option<OpenOptions>,
    error_listener: Option<Arc<dyn ErrorListener>>,
) -> Result<SyncedDatabase, TandemError> {
    let config = config(options, token_provider, error_listener);
    synced(path, classes, config, timeout_ms, open_options).await
}

/// `open_synced`, blocking the calling thread; `cancel` ends the wait from another thread
/// (`Stopped`; the session is stopped, the file keeps what it had).
#[uniffi::export(default(open_options = None, error_listener = None, cancel = None))]
#[allow(clippy::too_many_arguments)] // the foreign signature: `open_synced`'s, plus `cancel`
pub fn open_synced_blocking(
    path: String,
    classes: Vec<ClassSpec>,
    options: SyncOptions,
    token_provider: Option<Arc<dyn TokenProvider>>,
    timeout_ms: Option<u64>,
    open_options: Option<OpenOptions>,
    error_listener: Option<Arc<dyn ErrorListener>>,
    cancel: Option<Arc<CancelToken>>,
) -> Result<SyncedDatabase, TandemError> {
    let config = config(options, token_provider, error_listener);
    block_on(
        synced(path, classes, config, timeout_ms, open_options),
        cancel,
    )
}

/// `open_synced` and `open_synced_blocking`.
async fn synced(
    path: String,
    classes: Vec<ClassSpec>,
    config: client::SyncConfig,
    timeout_ms: Option<u64>,
    open_options: Option<OpenOptions>,
) -> Result<SyncedDatabase, TandemError> {
    let schema = schema(classes)?;
    let (db, session) = client::open_synced(
        path,
        schema,
        open_options.map(Into::into).unwrap_or_default(),
        config,
        timeout(timeout_ms),
    )
    .await?;
    Ok(SyncedDatabase {
        database: Arc::new(Database { inner: db }),
        session: Arc::new(SyncSession { inner: session }),
    })
}
