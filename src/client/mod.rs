//! The sync client session (cargo feature `client`, on by default): keeps one local
//! [`Database`] in sync with one server path.
//!
//! The session runs on a tokio runtime the library owns (the app never sees it). It connects
//! over WebSocket and TLS 1.3 (rustls, trusting the configured CA, or else the operating
//! system's roots), sends BIND, on first contact stores the client file ident the server
//! allocates before anything else, sends IDENT with its cursors, uploads every local changeset
//! after the acknowledged one in client-version order (soft batches of 128 KiB, each changeset
//! once per connection), integrates every DOWNLOAD (OT rebase over its own unacknowledged
//! changesets, applied in one transaction, listeners notified), sends a PING every 54 s while
//! none is outstanding and treats a PONG missing 120 s after its PING as a dead connection.
//! After any disconnect it reconnects with exponential backoff (1 s doubling to 5 min, minus up
//! to a quarter of jitter) and resumes.
//!
//! The app observes it through listeners ([`SyncSession::on_event`]: state, progress, errors,
//! delivered on a notifier thread, never on the socket's), waits for it
//! ([`SyncSession::wait_for_upload`], [`SyncSession::wait_for_download`], a MARK round trip),
//! and may give a [`TokenProvider`] that the session asks for a new access token before the
//! current one expires and whenever the server says it has (the bound session sends REFRESH;
//! reconnects use the new token).
//!
//! - `connection`: one connection's life (connect, bind, upload, download, refresh, marks).
//! - `events`: the notifier thread and listener tokens.
//! - `token`: reading a token's expiry.
//! - `tls`: the TLS client configuration.

mod connection;
mod events;
mod tls;
mod token;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify};

#[cfg(feature = "server")]
pub(crate) use connection::websocket_config;
pub use events::{Event, ListenerToken};

use crate::store::{Database, StoreError, SubscriptionSet, SubscriptionSetState};

/// Soft limit of one UPLOAD's changesets.
pub const UPLOAD_BATCH: usize = 128 << 10;

/// The runtime all sessions share.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
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

/// Gives the session fresh access tokens. Implemented by the app (in any binding language).
///
/// Called on a worker thread, never while the session holds a lock; it may block (e.g. on an
/// HTTP request to the app's auth backend).
pub trait TokenProvider: Send + Sync {
    /// A new access token, or why there is none (the session reports it as an error event and
    /// tries again later).
    fn fetch_token(&self) -> Result<String, String>;
}

/// What a client reset does with local changes the server never integrated. A reset happens
/// when the server says this file's history can no longer sync (errors 208, 209, 210, 211, 217,
/// 222: the server lost the file, was restored from an older backup, or expired the file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientResetMode {
    /// Replace the local state with the server's; local changes the server never got are lost.
    DiscardLocal,
    /// Replace the local state with the server's and recover the local changes the server never
    /// integrated (found with CLIENT_VERSION), instruction by instruction with realm-core's
    /// recovery rules (`docs/client.md`, "Client reset"); the instructions the rules cannot
    /// recover go to the quarantine ([`Database::quarantine`]), each with its reason. If
    /// recovery fails twice, the session stops with an error.
    Recover,
    /// As `Recover`, but if recovery fails, discard instead.
    #[default]
    RecoverOrDiscard,
    /// Stop and tell the app (an error event with the code, `will_retry` false); the app decides,
    /// e.g. by starting a new session with another mode.
    Manual,
}

/// Where and how to sync. `SyncConfig::default()` fills what a struct literal leaves out.
#[derive(Clone, Default)]
pub struct SyncConfig {
    /// Server URL, `wss://host:port/...` (or `ws://` with `allow_insecure`).
    pub url: String,
    /// Server path (the server file) to sync with.
    pub path: String,
    /// Initial access token (may be empty when `token_provider` is set).
    pub token: String,
    /// CA certificate(s), PEM, that the server's certificate must chain to. `None` trusts the
    /// operating system's root certificates (a server with a certificate from a public CA).
    pub ca_file: Option<PathBuf>,
    /// Allow `ws://` without TLS (local development only).
    pub allow_insecure: bool,
    /// Asked for a new token before the current one expires and after the server says it
    /// expired. Without one, an expired token stops the session with an error.
    pub token_provider: Option<Arc<dyn TokenProvider>>,
    /// What a client reset does.
    pub client_reset: ClientResetMode,
    /// How long connecting may take.
    pub timeouts: SyncTimeouts,
    /// Flexible sync: the session downloads only what the database's subscription sets match
    /// ([`Database::update_subscriptions`]), as the server's rules allow, and waits for each
    /// set's bootstrap ([`SyncSession::wait_for_subscriptions`]). `path` is then the server's
    /// flexible sync file, `/flx` (`docs/flexible-sync.md`); a file that has synced one way
    /// cannot later sync the other.
    pub flexible: bool,
    /// Called with every [`Event`] of the session, from its very first to its last, on the
    /// session's notifier thread. A listener added with [`SyncSession::on_event`] after
    /// [`SyncSession::start`] returns can miss what happened in between (a failing token
    /// provider's first error, the first state change), and [`open_synced`] returns only once
    /// the first download is done (or fails); this one misses nothing. Realm's SDKs take their
    /// sync error handler in the configuration for the same reason. The session lets go of it
    /// once it has been handed the session's last event (after [`SyncSession::stop`], a drop
    /// of the session, or a stop for good); until then, a listener that holds its own session
    /// keeps that session running.
    pub on_event: Option<EventListener>,
}

/// A session listener: called with each [`Event`] on the session's notifier thread.
pub type EventListener = Arc<dyn Fn(&Event) + Send + Sync>;

/// Deadlines of each connection attempt; one that passes fails the attempt with an error
/// (`will_retry`: the session reconnects with backoff).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncTimeouts {
    /// TCP connect (default 10 s).
    pub connect: std::time::Duration,
    /// From TCP connected to the TLS handshake done and the server's WebSocket upgrade answer
    /// received (default 10 s).
    pub handshake: std::time::Duration,
}

impl Default for SyncTimeouts {
    fn default() -> Self {
        SyncTimeouts {
            connect: std::time::Duration::from_secs(10),
            handshake: std::time::Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncConfig")
            .field("url", &self.url)
            .field("path", &self.path)
            .field("token", &"<redacted>")
            .field("ca_file", &self.ca_file)
            .field("allow_insecure", &self.allow_insecure)
            .field("token_provider", &self.token_provider.is_some())
            .field("client_reset", &self.client_reset)
            .field("timeouts", &self.timeouts)
            .field("flexible", &self.flexible)
            .field("on_event", &self.on_event.is_some())
            .finish()
    }
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
    /// The session stopped for good; the message says why (a refused token, a forbidden path,
    /// an expired token with no provider).
    Error(String),
}

/// Bytes moved, for progress bars. Counted in changeset bytes (before compression) since the
/// session started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Local changeset bytes the server acknowledged.
    pub upload_transferred: u64,
    /// `upload_transferred` plus the local changeset bytes not yet acknowledged.
    pub upload_transferable: u64,
    /// Server changeset bytes received and integrated.
    pub download_transferred: u64,
    /// `download_transferred` plus what the server says is left to download.
    pub download_transferable: u64,
}

/// An error the session ran into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorInfo {
    /// The server's error code (see `docs/protocol.md`), or 0 for a local or network error.
    pub code: u64,
    /// What happened.
    pub message: String,
    /// Whether the session goes on by itself (reconnecting with backoff). `false`: it stopped
    /// and its state is [`SyncState::Error`].
    pub will_retry: bool,
}

/// What the server decided about a [`SyncSession::transact`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransactOutcome {
    /// Integrated as this server version.
    Accepted {
        /// The server version it became (when a client reset decided the verdict: the reset
        /// snapshot's server version, which includes it).
        server_version: u64,
    },
    /// Refused; the transaction was rolled back locally (listeners saw it disappear). Also
    /// the outcome when a client reset came before the verdict and the transaction was never
    /// sent, or the server still has this file's history (it expired the file, error 222) and
    /// says it never integrated it (`docs/client.md`, "Transactions checked by the server").
    Rejected {
        /// Why: the server's reason, or the client reset's.
        reason: String,
    },
    /// Unknown: the transaction was sent, then a client reset came before the verdict because
    /// the server lost history (restored from a backup, or its data gone: errors 208 to 211
    /// and 217), so its answer that it never integrated the transaction proves nothing: it may
    /// have integrated it and other clients may have downloaded it. The transaction was rolled
    /// back here like a rejected one (never uploaded unchecked); other clients' own recoveries
    /// may still bring back parts of it, such as list elements in a list they copy as a whole.
    InDoubt {
        /// What happened.
        reason: String,
    },
}

/// Why a session call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncError {
    /// The configuration cannot work (URL scheme, CA file, TLS setup).
    Config {
        /// What is wrong and what would work.
        message: String,
    },
    /// A wait did not complete within its timeout. Nothing is lost; sync goes on.
    Timeout {
        /// What was waited for.
        message: String,
    },
    /// The session stopped (dropped, or refused for good by the server) before the wait
    /// completed.
    Stopped {
        /// Why.
        message: String,
    },
    /// The local database failed.
    Store {
        /// The store's error.
        message: String,
        /// Its kind (a writer timeout, a destructive schema change, a size limit...).
        kind: crate::store::StoreErrorKind,
    },
    /// The call does not fit the session's state (a second transaction while one is pending,
    /// an empty transaction).
    InvalidState {
        /// What is wrong.
        message: String,
    },
    /// The server could not evaluate a subscription set (QUERY_ERROR): the set is in
    /// [`SubscriptionSetState::Error`] and the active set is unchanged; sync goes on.
    Subscription {
        /// The set's version.
        version: u64,
        /// The server's message.
        message: String,
    },
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Config { message } => write!(f, "sync configuration: {message}"),
            SyncError::Timeout { message } => write!(f, "timed out: {message}"),
            SyncError::Stopped { message } => write!(f, "sync stopped: {message}"),
            SyncError::Store { message, .. } => write!(f, "local database: {message}"),
            SyncError::InvalidState { message } => f.write_str(message),
            SyncError::Subscription { version, message } => {
                write!(
                    f,
                    "subscription set {version} refused by the server: {message}"
                )
            }
        }
    }
}

impl std::error::Error for SyncError {}

impl From<StoreError> for SyncError {
    fn from(e: StoreError) -> Self {
        SyncError::Store {
            message: e.to_string(),
            kind: e.kind(),
        }
    }
}

fn config_error(message: impl Into<String>) -> SyncError {
    SyncError::Config {
        message: message.into(),
    }
}

/// A pending `wait_for_download`: its MARK is (re)sent on every bound connection until the
/// server echoes it.
struct MarkWaiter {
    sent: bool,
    done: oneshot::Sender<()>,
}

/// What the session task and the app-facing handle share.
pub(crate) struct Shared {
    db: Arc<Database>,
    config: SyncConfig,
    /// The access token in use (replaced by the provider's).
    token: Mutex<String>,
    state: watch::Sender<SyncState>,
    listeners: events::Listeners,
    marks: Mutex<BTreeMap<u64, MarkWaiter>>,
    next_mark: AtomicU64,
    /// Wakes the session task: a local commit or a new MARK to send.
    wake: Notify,
    /// Bumped whenever the server acknowledges uploads or the session stops.
    acked: watch::Sender<u64>,
    progress: Mutex<Progress>,
    stop: watch::Sender<bool>,
    /// A reset (or first download of the server state) the next connection must do first.
    reset: Mutex<Option<ResetPlan>>,
    /// A STATE snapshot downloaded in part: kept across reconnects to resume by offset.
    partial_state: Mutex<Option<PartialState>>,
    /// Completed resets (and first-state downloads), for `open_synced` and tests.
    resets: watch::Sender<u64>,
    /// The transaction waiting for the server's verdict, if any.
    transact: Mutex<Option<PendingTransact>>,
    /// Reconnect at once, without the backoff (a rollback finished and its connection ends).
    reconnect_now: std::sync::atomic::AtomicBool,
    /// Bumped whenever a subscription set completes or fails (and when the session stops).
    subscription_states: watch::Sender<u64>,
    /// [`SyncConfig::on_event`]'s registration, released when the connection task ends.
    config_listener: Mutex<Option<ListenerToken>>,
    /// The local version the server had acknowledged (as the file recorded it) when the current
    /// connection began: see [`ResetPlan::own_acknowledgement`]. `u64::MAX` before the first
    /// connection (a reset the file recorded as pending keeps the version it recorded).
    acknowledged_at_connect: AtomicU64,
}

/// A transaction committed locally and waiting for TRANSACT_RESULT.
pub(crate) struct PendingTransact {
    /// Its local version; `None` while it is being committed (nothing is uploaded meanwhile).
    version: Option<u64>,
    /// Sent on the current connection.
    sent: bool,
    /// Sent on a connection that did not end in a reset error: the server may have integrated
    /// it. (A reset error answers IDENT or the TRANSACT itself; nothing else is uploaded while
    /// a transaction waits, so a transaction sent on a connection that ended in one was not
    /// integrated there.)
    maybe_integrated: bool,
    /// The server's reason, once it rejected the transaction (resolved after the rollback).
    rejected: Option<String>,
    /// Resolved with the verdict (after the local rollback, for a rejection).
    done: Option<oneshot::Sender<TransactOutcome>>,
}

/// Settles the transaction `transact` registered, when the blocking commit ends however it
/// ends: with `version`, it waits for the verdict under that version; without (nothing
/// written, an error, a panic), it is forgotten. Then the connection is woken to go on.
struct SettleTransact {
    shared: Arc<Shared>,
    version: Option<u64>,
}

impl Drop for SettleTransact {
    fn drop(&mut self) {
        let mut pending = lock(&self.shared.transact);
        match self.version {
            Some(version) => {
                if let Some(p) = pending.as_mut() {
                    p.version = Some(version);
                }
            }
            None => *pending = None,
        }
        drop(pending);
        self.shared.wake.notify_one();
    }
}

/// A reset the session has to carry out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ResetPlan {
    /// Re-apply local changes the server never integrated.
    recover: bool,
    /// The client file ident and salt the server may know the local changes by (0: none).
    old_ident: u64,
    old_salt: u64,
    /// Failed attempts so far: resets that got the snapshot and could not apply it or recover
    /// on top of it. A connection lost (or a server that went away) during a reset is not a
    /// failed attempt: the reset starts over on the next connection.
    failures: u32,
    /// This connection got as far as the reset itself.
    started: bool,
    /// This connection's reset failed in itself (`finish_reset`), not by the network.
    attempt_failed: bool,
    /// The server lost history this file had seen (any reset error but 222, a file the
    /// server expired): its CLIENT_VERSION cannot prove a transaction was never integrated.
    server_lost_history: bool,
    /// This file's own history went back (210, bad_client_version: it was restored from an
    /// older copy of itself): the server's CLIENT_VERSION counts changesets this copy never
    /// made, so recovery trusts only the acknowledgement the file had recorded when the
    /// connection that found it began (that connection's DOWNLOADs may have acknowledged the
    /// other copy's versions).
    own_acknowledgement: Option<u64>,
}

/// Segments of a STATE snapshot received so far.
pub(crate) struct PartialState {
    server_version: u64,
    server_version_salt: u64,
    total: u64,
    bytes: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn set_state(&self, state: SyncState) {
        let changed = self.state.send_if_modified(|s| {
            let differs = *s != state;
            *s = state.clone();
            differs
        });
        if changed {
            self.listeners.emit(Event::State(state));
        }
    }

    fn report(&self, code: u64, message: impl Into<String>, will_retry: bool) {
        self.listeners.emit(Event::Error(ErrorInfo {
            code,
            message: message.into(),
            will_retry,
        }));
    }

    fn update_progress(&self, f: impl FnOnce(&mut Progress)) {
        let snapshot = {
            let mut p = lock(&self.progress);
            let before = *p;
            f(&mut p);
            (*p != before).then_some(*p)
        };
        if let Some(p) = snapshot {
            self.listeners.emit(Event::Progress(p));
        }
    }

    fn token(&self) -> String {
        lock(&self.token).clone()
    }
}

/// Opens the database at `path` for syncing. A file that has never synced first downloads the
/// server's current state as one snapshot (STATE, in segments, resumed by offset after a
/// disconnect), applies it in one transaction and re-applies anything written locally before;
/// a file that has synced before waits for the server's newest versions instead. Either way the
/// returned database is up to date with the server as of the call, and the session keeps it so.
///
/// `timeout` bounds the wait (`None`: as long as it takes). On an error the session is stopped;
/// the file keeps what it had, and a later `open_synced` starts the snapshot again.
pub async fn open_synced(
    path: impl Into<PathBuf>,
    schema: crate::model::Schema,
    db_config: crate::store::Config,
    config: SyncConfig,
    timeout: Option<Duration>,
) -> Result<(Arc<Database>, SyncSession), SyncError> {
    let path = path.into();
    let opened = crate::sim::library_blocking(move || -> Result<_, StoreError> {
        let db = Arc::new(Database::open(path, &schema, db_config)?);
        let fresh = db.sync_progress()?.client_file_ident == 0;
        Ok((db, fresh))
    })
    .await
    .map_err(|e| SyncError::Stopped {
        message: e.to_string(),
    })?;
    let (db, fresh) = opened?;
    // A flexible sync file is never given the whole server state: its subscriptions' bootstraps
    // are what it downloads.
    let fresh = fresh && !config.flexible;
    let plan = fresh.then_some(ResetPlan {
        recover: true,
        old_ident: 0,
        old_salt: 0,
        failures: 0,
        started: false,
        attempt_failed: false,
        server_lost_history: false,
        own_acknowledgement: None,
    });
    let session = SyncSession::start_with(Arc::clone(&db), config, plan)?;
    if fresh {
        let shared = Arc::clone(&session.shared);
        let wait = async move {
            let mut resets = shared.resets.subscribe();
            tokio::select! {
                biased;
                done = resets.wait_for(|n| *n > 0) => done.map(|_| ()).map_err(|_| stopped(&shared)),
                _ = until_stopped(&shared) => Err(stopped(&shared)),
            }
        };
        with_timeout(wait, timeout, "the download of the server state").await?;
    } else {
        session.wait_for_download(timeout).await?;
    }
    Ok((db, session))
}

/// How long [`SyncSession::start`] waits for a stopped session on the same file to finish the
/// message it was integrating.
const STOPPING_WAIT: Duration = Duration::from_secs(10);

/// The lock file a sync session holds beside its client file, so that a session of another
/// process on the same file is refused: `<file>.sync-lock` (an empty SQLite file, made if
/// missing and never removed; `store::lock`).
pub const SYNC_LOCK_SUFFIX: &str = ".sync-lock";

/// A session's claim on its file, kept by its connection task until the task ends: two
/// sessions on one file would each integrate every DOWNLOAD, so that a counter's increments
/// were counted twice (found by a new user's trial). The lock file goes first when the claim
/// is dropped, then the hold in this process, so the next session here finds both free.
struct FileClaim {
    /// Across processes: the lock file (`None` if it could not be made; logged).
    _across: Option<rusqlite::Connection>,
    /// In this process, whatever the `Database` handle.
    _here: crate::store::SyncHold,
}

/// Claims `db`'s file for one sync session ([`FileClaim`]).
fn hold_file(db: &Database, stop: &watch::Sender<bool>) -> Result<FileClaim, SyncError> {
    use crate::store::lock::{hold_lock_file, LockFile};
    let stopping = stop.subscribe();
    let here = db
        .hold_for_sync(Box::new(move || *stopping.borrow()), STOPPING_WAIT)
        .map_err(|held| SyncError::InvalidState {
            message: format!(
                "a sync session {} on {}: stop it first (two sessions would integrate every \
                 download twice)",
                match held {
                    crate::store::SyncHeld::Running => "is already running",
                    crate::store::SyncHeld::Stopping => "is still stopping",
                },
                db.path().display()
            ),
        })?;
    // The file's canonical path: a symlink to it, or another relative path, finds the same lock
    // (found by a new user's trial).
    let file = std::fs::canonicalize(db.path()).unwrap_or_else(|_| db.path().to_path_buf());
    let mut lock_path = file.into_os_string();
    lock_path.push(SYNC_LOCK_SUFFIX);
    let lock_path = std::path::PathBuf::from(lock_path);
    let across = match hold_lock_file(&lock_path) {
        LockFile::Held(conn) => Some(conn),
        LockFile::Busy => {
            return Err(SyncError::InvalidState {
                message: format!(
                    "another process runs a sync session on {} (it holds {}): stop it first \
                     (two sessions would integrate every download twice)",
                    db.path().display(),
                    lock_path.display()
                ),
            })
        }
        LockFile::Unavailable(e) => {
            tracing::warn!(
                lock = %lock_path.display(),
                error = %e,
                "cannot take the sync lock file; another process's session on this file would \
                 not be seen"
            );
            None
        }
    };
    Ok(FileClaim {
        _across: across,
        _here: here,
    })
}

/// A running sync session. Dropping it stops syncing.
pub struct SyncSession {
    shared: Arc<Shared>,
}

impl SyncSession {
    /// Starts syncing `db` with the server in the background.
    ///
    /// # Errors
    /// [`SyncError::Config`] for a URL that is not `wss://` (or `ws://` with
    /// `allow_insecure`) or a CA file that does not load; [`SyncError::InvalidState`] when the
    /// file syncs with another server path ([`Database::synced_path`]), when another session
    /// of this process runs on the file (through any handle; one that was stopped is waited
    /// for, up to 10 s) or one of another process does (it holds the lock file beside the
    /// file, [`SYNC_LOCK_SUFFIX`]), or for a transaction of `transact` waiting for its verdict
    /// in a flexible sync file.
    pub fn start(db: Arc<Database>, config: SyncConfig) -> Result<SyncSession, SyncError> {
        Self::start_with(db, config, None)
    }

    fn start_with(
        db: Arc<Database>,
        config: SyncConfig,
        reset: Option<ResetPlan>,
    ) -> Result<SyncSession, SyncError> {
        let secure = config.url.starts_with("wss://");
        let plain_allowed = config.allow_insecure && config.url.starts_with("ws://");
        if !(secure || plain_allowed) {
            return Err(config_error(
                "the URL must be wss:// (ws:// only with allow_insecure)",
            ));
        }
        let tls = if secure {
            Some(tls::connector(&config.ca_file)?)
        } else {
            None
        };
        // A file that synced with one server path never syncs with another: its objects would
        // be uploaded there (into another user's data, say), and the server, which does not
        // know the file, would reset it to that path's state.
        if let Some(bound) = db.synced_path()? {
            if bound != config.path {
                return Err(SyncError::InvalidState {
                    message: format!(
                        "this file syncs with the server path {bound:?}, not {:?}: open \
                         another file for that path (Database::synced_path)",
                        config.path
                    ),
                });
            }
        }
        // A transaction of `transact` still waiting for its verdict when the last session
        // ended (a crash, or a session stopped first): gated and sent as TRANSACT again, or
        // rolled back if the server had already rejected it, never uploaded unchecked. It may
        // have been sent before, so it may have been integrated.
        let transact = db.pending_transact()?;
        if transact.is_some() && config.flexible {
            // Only `commit_transact` used directly can leave one in a flexible sync file.
            return Err(SyncError::InvalidState {
                message: "this file holds a transaction waiting for the server's verdict \
                          (Database::pending_transact), which a flexible sync session cannot \
                          send: open it with partition-based sync"
                    .into(),
            });
        }
        let transact = transact.map(|p| PendingTransact {
            version: Some(p.version),
            sent: false,
            maybe_integrated: true,
            rejected: p.rejected,
            done: None,
        });
        let (state, _) = watch::channel(SyncState::Disconnected);
        let (stop, _) = watch::channel(false);
        let claim = hold_file(&db, &stop)?;
        // Registered before the connection task exists: it cannot miss an event. Held by the
        // registry only, which lets go of it when the session ends (see `SyncConfig::on_event`).
        let mut config = config;
        let listeners = events::Listeners::start();
        let config_listener = config.on_event.take().map(|l| listeners.add(l));
        let shared = Arc::new(Shared {
            token: Mutex::new(config.token.clone()),
            db,
            config,
            state,
            listeners,
            marks: Mutex::new(BTreeMap::new()),
            next_mark: AtomicU64::new(1),
            wake: Notify::new(),
            acked: watch::channel(0).0,
            progress: Mutex::new(Progress::default()),
            stop,
            reset: Mutex::new(reset),
            partial_state: Mutex::new(None),
            resets: watch::channel(0).0,
            transact: Mutex::new(transact),
            reconnect_now: std::sync::atomic::AtomicBool::new(false),
            subscription_states: watch::channel(0).0,
            config_listener: Mutex::new(config_listener),
            acknowledged_at_connect: AtomicU64::new(u64::MAX),
        });
        let weak = Arc::downgrade(&shared);
        shared.db.on_local_commit(Arc::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.wake.notify_one();
            }
        }));
        let task = connection::run(Arc::clone(&shared), tls);
        crate::sim::spawn(async move {
            task.await;
            // Another session may start on the file now.
            drop(claim);
        });
        Ok(SyncSession { shared })
    }

    /// The current state.
    pub fn state(&self) -> SyncState {
        self.shared.state.borrow().clone()
    }

    /// Transfer progress so far.
    pub fn progress(&self) -> Progress {
        *lock(&self.shared.progress)
    }

    /// Calls `listener` with every later [`Event`] (state changes, progress, errors), on the
    /// session's notifier thread. Delivery stops when the token is cancelled or dropped. Events
    /// from before the call are not repeated: [`SyncConfig::on_event`] hears them all. If
    /// the session already stopped for good, `listener` is first handed the events that said
    /// so (the error with `will_retry == false`, the [`SyncState::Error`] state), once.
    pub fn on_event(&self, listener: impl Fn(&Event) + Send + Sync + 'static) -> ListenerToken {
        self.shared.listeners.add(Arc::new(listener))
    }

    /// Completes when the server has acknowledged every changeset committed before the call.
    /// `None` waits as long as it takes. Runs on the library's runtime, so it can be awaited
    /// from any executor.
    pub async fn wait_for_upload(&self, timeout: Option<Duration>) -> Result<(), SyncError> {
        let shared = Arc::clone(&self.shared);
        let wait = async move {
            let db = Arc::clone(&shared.db);
            let target = crate::sim::blocking(move || db.last_local_version())
                .await
                .map_err(|e| SyncError::Stopped {
                    message: e.to_string(),
                })??;
            let mut acked = shared.acked.subscribe();
            loop {
                let db = Arc::clone(&shared.db);
                let done = crate::sim::blocking(move || db.uploaded_through(target))
                    .await
                    .map_err(|e| SyncError::Stopped {
                        message: e.to_string(),
                    })??;
                if done {
                    return Ok(());
                }
                stopped_check(&shared)?;
                if acked.changed().await.is_err() {
                    return Err(stopped(&shared));
                }
            }
        };
        with_timeout(wait, timeout, "the upload of earlier changesets").await
    }

    /// Completes when every server version that existed at the call is integrated locally
    /// (one MARK round trip with the server, resent after reconnects). `None` waits as long as
    /// it takes.
    pub async fn wait_for_download(&self, timeout: Option<Duration>) -> Result<(), SyncError> {
        let shared = Arc::clone(&self.shared);
        let id = shared.next_mark.fetch_add(1, Ordering::Relaxed);
        let (done, echoed) = oneshot::channel();
        lock(&shared.marks).insert(id, MarkWaiter { sent: false, done });
        shared.wake.notify_one();
        let waiting = Arc::clone(&shared);
        let wait = async move {
            tokio::select! {
                biased;
                echoed = echoed => echoed.map_err(|_| stopped(&waiting)),
                _ = until_stopped(&waiting) => Err(stopped(&waiting)),
            }
        };
        let result = with_timeout(wait, timeout, "the download of the server's versions").await;
        lock(&shared.marks).remove(&id);
        result
    }

    /// Commits what `build` writes as one transaction that the server integrates only if no
    /// changeset it integrated since this file's last download touches the same objects (and
    /// the transaction changes no schema). Listeners see the write at once; nothing else is
    /// uploaded until the server decides; a rejected transaction is rolled back locally before
    /// this returns, by rebasing every later local change onto the server's latest state
    /// without it ([`crate::store::Database::roll_back_to_snapshot`]; what cannot be rebased
    /// goes to the quarantine). One at a time.
    /// Not on a flexible sync session ([`SyncError::InvalidState`]).
    pub async fn transact<F>(
        &self,
        build: F,
        timeout: Option<Duration>,
    ) -> Result<TransactOutcome, SyncError>
    where
        F: for<'a> FnOnce(&mut crate::store::WriteTransaction<'a>) -> Result<(), StoreError>
            + Send
            + 'static,
    {
        if self.shared.config.flexible {
            // The server has no compensating-write check for TRANSACT and refuses it there.
            return Err(SyncError::InvalidState {
                message: "transact is not available on a flexible sync session".into(),
            });
        }
        let (done, verdict) = oneshot::channel();
        {
            let mut pending = lock(&self.shared.transact);
            if pending.is_some() {
                return Err(SyncError::InvalidState {
                    message: "a transaction is already waiting for the server".into(),
                });
            }
            *pending = Some(PendingTransact {
                version: None,
                sent: false,
                maybe_integrated: false,
                rejected: None,
                done: Some(done),
            });
        }
        let shared = Arc::clone(&self.shared);
        let db = Arc::clone(&shared.db);
        // The waiting transaction is settled on the blocking thread, right after the commit
        // (or its failure, or a panic in `build`): this future may be dropped meanwhile (a
        // timeout, a cancelled FFI call), and a transaction left without its version would
        // hold every upload back for the rest of the session.
        let settle = SettleTransact {
            shared: Arc::clone(&shared),
            version: None,
        };
        let committed = crate::sim::library_blocking(move || -> Result<Option<u64>, StoreError> {
            let mut settle = settle;
            let mut tx = db.begin_write()?;
            build(&mut tx)?;
            let committed = tx.commit_transact()?;
            settle.version = committed;
            Ok(committed)
        })
        .await
        .map_err(|e| SyncError::Store {
            message: e.to_string(),
            kind: crate::store::StoreErrorKind::Internal,
        })
        .and_then(|r| r.map_err(SyncError::from));
        // Committed: `SettleTransact` gave it its version, and it waits for the verdict.
        if !matches!(committed, Ok(Some(_))) {
            return Err(committed.err().unwrap_or(SyncError::InvalidState {
                message: "the transaction wrote nothing".into(),
            }));
        }
        let waiting = Arc::clone(&shared);
        let wait = async move {
            tokio::select! {
                biased;
                verdict = verdict => verdict.map_err(|_| stopped(&waiting)),
                _ = until_stopped(&waiting) => Err(stopped(&waiting)),
            }
        };
        let result = with_timeout(wait, timeout, "the server's verdict on the transaction").await;
        if result.is_err() {
            // The verdict may still come; the session keeps the transaction and its gating.
            if let Some(p) = lock(&shared.transact).as_mut() {
                p.done = None;
            }
        }
        result
    }

    /// Completes when subscription set `version` (`None`: the latest when called) is no longer
    /// pending: returns it [`SubscriptionSetState::Complete`] (its bootstrap is integrated, the
    /// local file holds what it matches) or [`SubscriptionSetState::Superseded`] (a newer set
    /// completed first). Realm's `waitForSynchronization`.
    ///
    /// Errors: [`SyncError::Subscription`] when the server refused the set (QUERY_ERROR),
    /// [`SyncError::InvalidState`] on a session without [`SyncConfig::flexible`] or for a version
    /// that does not exist, [`SyncError::Timeout`], [`SyncError::Stopped`].
    pub async fn wait_for_subscriptions(
        &self,
        version: Option<u64>,
        timeout: Option<Duration>,
    ) -> Result<SubscriptionSet, SyncError> {
        if !self.shared.config.flexible {
            return Err(SyncError::InvalidState {
                message: "subscriptions need a flexible sync session (SyncConfig::flexible)".into(),
            });
        }
        let shared = Arc::clone(&self.shared);
        let wait = async move {
            let mut changed = shared.subscription_states.subscribe();
            // `None`: the latest set now, not one committed while waiting.
            let version = match version {
                Some(v) => v,
                None => {
                    let db = Arc::clone(&shared.db);
                    crate::sim::blocking(move || db.subscriptions())
                        .await
                        .map_err(|e| SyncError::Stopped {
                            message: e.to_string(),
                        })??
                        .version
                }
            };
            loop {
                let db = Arc::clone(&shared.db);
                let set = crate::sim::blocking(move || db.subscription_set(version))
                    .await
                    .map_err(|e| SyncError::Stopped {
                        message: e.to_string(),
                    })??
                    .ok_or_else(|| SyncError::InvalidState {
                        message: format!("there is no subscription set {version}"),
                    })?;
                match &set.state {
                    SubscriptionSetState::Complete | SubscriptionSetState::Superseded => {
                        return Ok(set)
                    }
                    SubscriptionSetState::Error(message) => {
                        return Err(SyncError::Subscription {
                            version: set.version,
                            message: message.clone(),
                        })
                    }
                    SubscriptionSetState::Pending => {}
                }
                stopped_check(&shared)?;
                if changed.changed().await.is_err() {
                    return Err(stopped(&shared));
                }
            }
        };
        with_timeout(wait, timeout, "the bootstrap of the subscription set").await
    }

    /// Stops syncing (also done by dropping the session).
    pub fn stop(&self) {
        self.shared.stop.send_replace(true);
        self.shared.acked.send_modify(|_| {});
        self.shared.subscription_states.send_modify(|_| {});
    }
}

fn stopped(shared: &Shared) -> SyncError {
    SyncError::Stopped {
        message: match &*shared.state.borrow() {
            SyncState::Error(why) => why.clone(),
            _ => "the session was stopped".into(),
        },
    }
}

/// Resolves when the app stops the session or the server refuses it for good.
async fn until_stopped(shared: &Shared) {
    let mut stop = shared.stop.subscribe();
    let mut state = shared.state.subscribe();
    tokio::select! {
        biased;
        _ = stop.wait_for(|s| *s) => {}
        _ = state.wait_for(|s| matches!(s, SyncState::Error(_))) => {}
    }
}

fn stopped_check(shared: &Shared) -> Result<(), SyncError> {
    if *shared.stop.borrow() || matches!(*shared.state.borrow(), SyncState::Error(_)) {
        return Err(stopped(shared));
    }
    Ok(())
}

/// Runs `wait` on the library's runtime (so callers need no tokio reactor), bounded by
/// `timeout`.
async fn with_timeout<T: Send + 'static>(
    wait: impl std::future::Future<Output = Result<T, SyncError>> + Send + 'static,
    timeout: Option<Duration>,
    what: &'static str,
) -> Result<T, SyncError> {
    let task = crate::sim::spawn(async move {
        match timeout {
            None => wait.await,
            Some(limit) => tokio::time::timeout(limit, wait).await.unwrap_or_else(|_| {
                Err(SyncError::Timeout {
                    message: format!("{what} did not complete within {limit:?}"),
                })
            }),
        }
    });
    task.await.map_err(|e| SyncError::Stopped {
        message: e.to_string(),
    })?
}

impl Drop for SyncSession {
    fn drop(&mut self) {
        self.stop();
    }
}
