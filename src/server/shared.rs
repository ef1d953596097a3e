//! What every connection of a running server shares: its configuration, the open server files,
//! the registry of connections to wake when a path changes, the per-user rate limits and the
//! metrics. Both the network side (`net`) and the message handlers (`session`) use it; neither
//! imports the other's internals through it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::app::AppServices;
use super::auth::Authenticator;
use super::file::ServerFile;
use super::realm::permissions::SyncPermissions;
use crate::protocol::{self, Limits};

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
    /// `--database`: a PostgreSQL URL (`postgres://user@host/db`) to keep the server files and
    /// the App Services store in, shared with other server processes (cargo feature
    /// `postgres`, `docs/scaling.md`); `None`, the default: embedded SQLite in `data_dir`.
    pub database: Option<String>,
    /// Certificate chain and private key, PEM. `None` serves plain `ws://`, which needs
    /// `allow_plain_ws` (for local development only).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Allow serving without TLS.
    pub allow_plain_ws: bool,
    /// Verifies access tokens.
    pub auth: Authenticator,
    /// A connection that sends nothing (not even PING) for this long is closed.
    pub idle_timeout: Duration,
    /// Message size limits. `max_body` also bounds every WebSocket frame and message
    /// ([`protocol::limits::max_frame_size`]), before and after authentication.
    pub limits: Limits,
    /// Connection, session and client-file caps, the pre-session deadline and the accepted
    /// clock skew.
    pub connection_limits: super::admission::ConnectionLimits,
    /// Disk reserve, upload bounds, idle server files and history compaction.
    pub storage: super::file::StorageConfig,
    /// The App Services API and Realm sync endpoint (`--app-id`); `None` serves only Tandem's
    /// own handshake.
    pub app: Option<super::app::AppConfig>,
    /// Deadlines and rate limits of the per-connection session loop.
    pub sessions: SessionLimits,
    /// Logging and the metrics and health listener ([`super::ops`]).
    pub observability: super::ops::Observability,
}

impl ServerConfig {
    /// A configuration with every other setting at its default (the defaults of
    /// `tandem-server`'s flags): TLS off and plain `ws://` refused (set `tls`, or
    /// `allow_plain_ws` for local development), a 600 s idle timeout, default limits, no App
    /// Services API, text logs at `info`, no metrics listener.
    ///
    /// ```
    /// # use tandem::server::{Authenticator, ServerConfig};
    /// let config = ServerConfig {
    ///     allow_plain_ws: true,
    ///     ..ServerConfig::new("127.0.0.1:0".parse().unwrap(), "data".into(), Authenticator::hs256(b"secret"))
    /// };
    /// assert!(config.tls.is_none());
    /// ```
    pub fn new(listen: SocketAddr, data_dir: PathBuf, auth: Authenticator) -> ServerConfig {
        ServerConfig {
            listen,
            data_dir,
            database: None,
            tls: None,
            allow_plain_ws: false,
            auth,
            idle_timeout: Duration::from_secs(600),
            limits: Limits::default(),
            connection_limits: Default::default(),
            storage: Default::default(),
            app: None,
            sessions: Default::default(),
            observability: Default::default(),
        }
    }
}

/// Deadlines and rate limits of a WebSocket connection's session loop (`docs/operations.md`,
/// "Sessions, delivery and fairness"). A rate of 0 means unlimited.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionLimits {
    /// A connection that has not bound an authenticated session this long after its upgrade is
    /// closed (`--bind-timeout`, default 30 s).
    pub bind_timeout: Duration,
    /// A message (one DOWNLOAD batch, STATE segment or reply) that cannot be written to the
    /// socket within this time ends the connection (`--send-timeout`, default 60 s).
    pub send_timeout: Duration,
    /// Bytes of sync messages one connection may send per second; more are read later
    /// (`--conn-bytes-per-second`, default 64 MiB/s).
    pub connection_bytes_per_second: u64,
    /// Messages one connection may send per second (`--conn-messages-per-second`, default 2,000).
    pub connection_messages_per_second: u64,
    /// Bytes of sync messages all connections of one user may send per second
    /// (`--user-bytes-per-second`, default 128 MiB/s).
    pub user_bytes_per_second: u64,
    /// Messages all connections of one user may send per second (`--user-messages-per-second`,
    /// default 10,000).
    pub user_messages_per_second: u64,
    /// Largest DOWNLOAD body a session builds at a time, in bytes (`--download-batch`, default
    /// and maximum [`MAX_DOWNLOAD_BATCH`]): with one STATE segment, what bounds the memory a
    /// connection holds for its downloads.
    pub download_batch: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            bind_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            connection_bytes_per_second: 64 << 20,
            connection_messages_per_second: 2_000,
            user_bytes_per_second: 128 << 20,
            user_messages_per_second: 10_000,
            download_batch: MAX_DOWNLOAD_BATCH,
        }
    }
}

/// A token bucket holding one second's worth of tokens: `take(n)` spends `n` and says how long
/// to wait before going on (the debt at `rate` tokens per second). Waiting, never dropping: the
/// reader is delayed, so TCP pushes back on the sender.
#[derive(Debug)]
pub(super) struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket of `rate` tokens per second (0: unlimited).
    pub(super) fn new(rate: u64) -> Bucket {
        Bucket {
            rate: rate as f64,
            tokens: rate as f64,
            at: Instant::now(),
        }
    }

    /// Spends `n` tokens; the wait before they are paid for.
    pub(super) fn take(&mut self, n: u64) -> Duration {
        if self.rate == 0.0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.at = now;
        self.tokens = (self.tokens + refill).min(self.rate) - n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Byte and message buckets of one connection or one user.
#[derive(Debug)]
pub(super) struct Rates {
    pub(super) bytes: Bucket,
    pub(super) messages: Bucket,
}

impl Rates {
    pub(super) fn new(bytes_per_second: u64, messages_per_second: u64) -> Rates {
        Rates {
            bytes: Bucket::new(bytes_per_second),
            messages: Bucket::new(messages_per_second),
        }
    }

    /// Spends one message of `bytes`; the wait and the limit that imposed it, if any.
    pub(super) fn take(&mut self, bytes: u64) -> (Duration, &'static str) {
        let b = self.bytes.take(bytes);
        let m = self.messages.take(1);
        if b >= m {
            (b, "bytes")
        } else {
            (m, "messages")
        }
    }
}

/// How a connection is told that a path it has a bound session on has new history: a coalescing
/// wake-up ([`Notify::notify_one`] stores a permit, so none is lost while the connection is busy)
/// and the set of paths that changed since it last looked.
#[derive(Default)]
pub(super) struct Waker {
    pub(super) notify: Notify,
    dirty: Mutex<BTreeSet<String>>,
    /// Paths whose latest version only advanced past an empty server changeset (a flexible
    /// sync bootstrap's, [`Shared::advanced`]): only sessions waiting for the latest version
    /// need to look.
    advanced: Mutex<BTreeSet<String>>,
    /// When the oldest unanswered wake-up happened: microseconds since [`Shared::epoch`] plus 1
    /// (0: none), for the fan-out latency metric.
    since: AtomicU64,
}

impl Waker {
    /// The paths announced by [`Shared::advanced`] since the last call.
    pub(super) fn take_advanced(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.advanced.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The paths that changed since the last call, and when the first of those changes was
    /// announced.
    pub(super) fn take(&self, epoch: Instant) -> (BTreeSet<String>, Option<Instant>) {
        let paths = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()));
        let since = match self.since.swap(0, Ordering::AcqRel) {
            0 => None,
            micros => Some(epoch + Duration::from_micros(micros - 1)),
        };
        (paths, since)
    }
}

/// What every connection of a running server shares.
pub(super) struct Shared {
    pub(super) config: ServerConfig,
    /// Open server files by path.
    pub(super) files: Mutex<BTreeMap<String, Arc<Mutex<ServerFile>>>>,
    /// Per path, the FIFO every piece of blocking work on it waits its turn in (tokio's mutex
    /// grants the lock in request order), so one flooding connection cannot starve another.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per path, the connections with a bound session on it (by connection id).
    subscribers: Mutex<BTreeMap<String, BTreeMap<u64, Arc<Waker>>>>,
    /// Per user, the rate limits all their connections share.
    users: Mutex<HashMap<String, Arc<Mutex<Rates>>>>,
    /// Connection ids.
    next_connection: AtomicU64,
    /// WebSocket connections being served now.
    pub(super) live: AtomicUsize,
    /// The origin of [`Waker`] timestamps.
    epoch: Instant,
    /// The App Services API and the Realm sync endpoint, when an app is configured.
    pub(super) app: Option<Arc<AppServices>>,
    /// Its HTTP routes.
    pub(super) app_router: Option<axum::Router>,
    /// Who may bind which partition (Realm dialect).
    pub(super) permissions: SyncPermissions,
    /// Flexible sync's read and write filters.
    pub(super) flx_rules: Arc<super::realm::rules::FlxRules>,
    /// Becomes true at shutdown.
    pub(super) stop: tokio::sync::watch::Receiver<bool>,
    /// What every part of the server records.
    pub(super) metrics: Arc<super::metrics::Metrics>,
    /// Connection counters and caps.
    pub(super) admission: Arc<super::admission::Admission>,
    /// The data directory's reserve and storage-fault accounting.
    pub(super) disk: Arc<super::disk::Disk>,
    /// The database every server file is kept in, with `--database`.
    #[cfg(feature = "postgres")]
    pub(super) postgres: Option<Arc<super::postgres::Postgres>>,
}

impl Shared {
    /// Everything a fresh server shares.
    pub(super) fn new(
        config: ServerConfig,
        app: Option<Arc<AppServices>>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Shared {
        let metrics = Arc::new(super::metrics::Metrics::new());
        let admission = super::admission::Admission::new(
            config.connection_limits.clone(),
            Arc::clone(&metrics),
        );
        let disk = super::disk::Disk::new(
            &config.data_dir,
            config.storage.disk_reserve,
            Arc::clone(&metrics),
        );
        Shared {
            flx_rules: Arc::new(
                config
                    .app
                    .as_ref()
                    .map(|a| a.flx_rules.clone())
                    .unwrap_or_default(),
            ),
            permissions: config
                .app
                .as_ref()
                .map(|a| a.sync_permissions.clone())
                .unwrap_or_default(),
            config,
            files: Mutex::new(BTreeMap::new()),
            turns: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(BTreeMap::new()),
            users: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
            live: AtomicUsize::new(0),
            epoch: Instant::now(),
            app_router: app.as_ref().map(|a| a.router()),
            app,
            stop,
            metrics,
            admission,
            disk,
            #[cfg(feature = "postgres")]
            postgres: None,
        }
    }

    /// A fresh connection id.
    pub(super) fn connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// The origin of wake-up timestamps.
    pub(super) fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The FIFO of blocking work on `path`.
    pub(super) fn turn(&self, path: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(turns.entry(path.to_owned()).or_default())
    }

    /// Wakes connection `id` when `path` changes.
    pub(super) fn subscribe(&self, path: &str, id: u64, waker: &Arc<Waker>) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.entry(path.to_owned())
            .or_default()
            .insert(id, Arc::clone(waker));
    }

    /// Stops waking connection `id` for `path`.
    pub(super) fn unsubscribe(&self, path: &str, id: u64) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(of_path) = subs.get_mut(path) {
            of_path.remove(&id);
            if of_path.is_empty() {
                subs.remove(path);
            }
        }
    }

    /// Tells every connection with a session bound to `path` that it has new history. Only
    /// those connections are woken; each wake-up is coalesced with any it has not handled yet.
    pub(super) fn changed(&self, path: &str) {
        let now = (self.epoch.elapsed().as_micros() as u64).saturating_add(1);
        let subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for waker in subs.get(path).into_iter().flat_map(|s| s.values()) {
            waker
                .dirty
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_owned());
            let _ = waker
                .since
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed);
            waker.notify.notify_one();
        }
    }

    /// Tells the connections with a session on `path` that its latest version advanced past an
    /// empty server changeset (a flexible sync bootstrap's): a session waiting for the latest
    /// version (its MARK, its own bootstrap) goes to fetch it, and the others leave it for
    /// their next download. Waking every session for it made binding N flexible sync sessions
    /// on one path cost N² DOWNLOADs (1,000 sessions: 38 s, `benches/flx.rs`).
    pub(super) fn advanced(&self, path: &str) {
        let subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for waker in subs.get(path).into_iter().flat_map(|s| s.values()) {
            waker
                .advanced
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_owned());
            waker.notify.notify_one();
        }
    }

    /// [`Shared::changed`] for every path a connection has a session bound to.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(super) fn changed_all(&self) {
        let paths: Vec<String> = self
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for p in paths {
            self.changed(&p);
        }
    }

    /// The rate limits shared by every connection of `user`.
    pub(super) fn user_rates(&self, user: &str) -> Arc<Mutex<Rates>> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let limits = &self.config.sessions;
        Arc::clone(users.entry(user.to_owned()).or_insert_with(|| {
            Arc::new(Mutex::new(Rates::new(
                limits.user_bytes_per_second,
                limits.user_messages_per_second,
            )))
        }))
    }

    /// Forgets the rate limits of `user` when no connection holds them any more.
    pub(super) fn release_user(&self, user: &str) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if users.get(user).is_some_and(|r| Arc::strong_count(r) == 1) {
            users.remove(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_delays_by_its_debt_and_zero_is_unlimited() {
        let mut b = Bucket::new(100);
        assert_eq!(b.take(100), Duration::ZERO, "one second's worth is free");
        let wait = b.take(50);
        // 50 tokens of debt at 100 per second: about half a second (less what refilled).
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        let mut unlimited = Bucket::new(0);
        assert_eq!(unlimited.take(u64::MAX), Duration::ZERO);
    }
}
