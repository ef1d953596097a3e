//! Admission control: what a peer may cost the server before and around its sessions.
//!
//! - Caps on open connections and on connections with no authenticated session yet (from TCP
//!   accept until a verified handshake token, a Realm `baas_at` check or the first
//!   authenticated BIND), refused at accept; a cap on sessions per connection (BIND beyond it:
//!   224 `too_many_sessions`, session-level); a cap on client file idents allocated per
//!   connection (104, connection-level).
//! - The deadline for everything before the first HTTP request is complete (TCP accept, TLS
//!   handshake, request headers).
//! - Accept-error backoff (EMFILE, ENFILE, ENOBUFS...: 10 ms doubling to 1 s, never a spin).
//! - Raising `RLIMIT_NOFILE` to the hard limit at start.
//! - The clock-skew check of uploaded origin timestamps.
//!
//! Every refusal is counted in [`Metrics::refused`] and logged. `docs/operations.md` ("Limits
//! and timeouts") lists every setting with its default.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::metrics::Metrics;
use crate::protocol::{ErrorCode, ProtocolError, UploadEntry};

/// Default [`ConnectionLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// Default [`ConnectionLimits::max_unauthenticated`].
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 2_000;
/// Default [`ConnectionLimits::max_sessions_per_connection`].
pub const DEFAULT_MAX_SESSIONS_PER_CONNECTION: usize = 256;
/// Default [`ConnectionLimits::handshake_timeout`]: 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ConnectionLimits::max_ident_allocations_per_connection`].
pub const DEFAULT_MAX_IDENT_ALLOCATIONS: u32 = 16;
/// Default [`ConnectionLimits::client_file_expiry`]: 7 days.
pub const DEFAULT_CLIENT_FILE_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default [`ConnectionLimits::max_clock_skew`]: 5 minutes.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Bytes of outbound data tungstenite gathers before it writes to the socket: 16 KiB, one TLS
/// record. Its default (128 KiB) keeps its capacity after the first large send on every idle
/// connection.
pub const WRITE_BUFFER_SIZE: usize = 16 << 10;

/// Bytes tungstenite reads from the socket at a time, into a buffer allocated eagerly for each
/// connection: 4 KiB. Its default (128 KiB) was most of the memory of an idle session (134 KiB
/// per session in `benches/load.rs`, 26 KiB at 16 KiB, 14 KiB at 4 KiB); larger messages are
/// read in more chunks (TLS records are gathered by rustls, not here). tungstenite zero-fills
/// that much of the buffer before every read attempt, data or not: at 16 KiB that was 6% of
/// the server's CPU in a 1,000-session fan-out (`docs/performance.md`).
pub const READ_BUFFER_SIZE: usize = 4 << 10;

/// What one peer may hold: connection and session caps, the pre-session deadline, client file
/// allocation and expiry, and the accepted clock skew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once, from TCP accept to close (`--max-connections`). The next
    /// one is closed right after accept.
    pub max_connections: usize,
    /// Most connections open at once with no authenticated session yet
    /// (`--max-unauthenticated`): from accept until a verified token in the WebSocket handshake
    /// (Tandem's `Authorization: Bearer`, Realm's `baas_at`) or the first BIND with a valid
    /// token. Plain HTTP connections (App Services API) count for their whole life.
    pub max_unauthenticated: usize,
    /// Most sessions bound at once on one connection (`--max-sessions-per-connection`); a BIND
    /// beyond gets ERROR 224 (`too_many_sessions`) for that session.
    pub max_sessions_per_connection: usize,
    /// Deadline from TCP accept until the TLS handshake is done and the first HTTP request
    /// (normally the WebSocket upgrade) has been read (`--handshake-timeout`); also hyper's
    /// header read timeout of every later request.
    pub handshake_timeout: Duration,
    /// Most client file idents one connection may have allocated (BIND with
    /// `need_client_file_ident`, `--max-ident-allocations-per-connection`); beyond: ERROR 104,
    /// and the connection ends.
    pub max_ident_allocations_per_connection: u32,
    /// A client file ident that was allocated but never used by an IDENT is deleted after this
    /// long (`--client-file-expiry`); a client coming back with it later gets 208 and resets.
    pub client_file_expiry: Duration,
    /// An UPLOAD or TRANSACT changeset whose `origin_timestamp` is more than this far ahead of
    /// the server's clock is refused with ERROR 101 (`try_again`) (`--max-clock-skew`).
    pub max_clock_skew: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_unauthenticated: DEFAULT_MAX_UNAUTHENTICATED,
            max_sessions_per_connection: DEFAULT_MAX_SESSIONS_PER_CONNECTION,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_ident_allocations_per_connection: DEFAULT_MAX_IDENT_ALLOCATIONS,
            client_file_expiry: DEFAULT_CLIENT_FILE_EXPIRY,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
        }
    }
}

/// The server's connection counters, shared by the accept loop and every connection.
pub(super) struct Admission {
    limits: ConnectionLimits,
    open: AtomicUsize,
    unauthenticated: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Admission {
    pub(super) fn new(limits: ConnectionLimits, metrics: Arc<Metrics>) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            open: AtomicUsize::new(0),
            unauthenticated: AtomicUsize::new(0),
            metrics,
        })
    }

    /// Takes a slot for a just-accepted connection, or says which cap refuses it (the
    /// `reason` label of `tandem_connections_refused_total`).
    pub(super) fn admit(self: &Arc<Self>) -> Result<Admitted, &'static str> {
        if !take(&self.open, self.limits.max_connections) {
            return Err(self.refuse("connection_cap"));
        }
        if !take(&self.unauthenticated, self.limits.max_unauthenticated) {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refuse("unauthenticated_cap"));
        }
        self.metrics.connections_accepted.inc();
        self.metrics.connections_open.inc();
        self.metrics.connections_unauthenticated.inc();
        Ok(Admitted {
            admission: Arc::clone(self),
            authenticated: AtomicBool::new(false),
            ident_allocations: AtomicU32::new(0),
        })
    }

    fn refuse(&self, reason: &'static str) -> &'static str {
        self.metrics.refused(reason);
        tracing::warn!(
            reason,
            open = self.open.load(Ordering::Relaxed),
            unauthenticated = self.unauthenticated.load(Ordering::Relaxed),
            "connection refused at accept"
        );
        reason
    }
}

/// Increments `counter` unless it is at `max`.
fn take(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// One admitted connection's slot: released when the last holder (the HTTP connection, the
/// upgraded WebSocket task) drops it.
pub(super) struct Admitted {
    admission: Arc<Admission>,
    authenticated: AtomicBool,
    ident_allocations: AtomicU32,
}

impl Admitted {
    /// The connection now has an authenticated peer: it no longer counts as unauthenticated.
    pub(super) fn authenticated(&self) {
        if !self.authenticated.swap(true, Ordering::AcqRel) {
            self.admission
                .unauthenticated
                .fetch_sub(1, Ordering::AcqRel);
            self.admission.metrics.connections_unauthenticated.dec();
        }
    }

    /// Checks a BIND against the session cap, given the sessions bound now on the connection.
    pub(super) fn check_session_cap(&self, bound: usize) -> Result<(), ProtocolError> {
        let max = self.admission.limits.max_sessions_per_connection;
        if bound >= max {
            self.admission
                .metrics
                .refused("sessions_per_connection_cap");
            return Err(ProtocolError::new(
                ErrorCode::TooManySessions,
                format!("this connection already has {bound} sessions, the most allowed is {max}"),
            ));
        }
        Ok(())
    }

    /// Counts a client file ident allocation; over the cap, 104 (the connection ends).
    pub(super) fn allocate_ident(&self) -> Result<(), ProtocolError> {
        let max = self.admission.limits.max_ident_allocations_per_connection;
        let before = self.ident_allocations.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            self.admission.metrics.refused("ident_allocation_cap");
            tracing::warn!(
                max,
                "client file ident allocations over the per-connection cap"
            );
            return Err(ProtocolError::new(
                ErrorCode::LimitsExceeded,
                format!(
                    "this connection already allocated {max} client file idents, the most allowed"
                ),
            ));
        }
        Ok(())
    }

    /// Refuses uploaded changesets stamped more than the configured skew ahead of `now_ms`
    /// (milliseconds since 2015-01-01, the origin timestamp's epoch).
    pub(super) fn check_clock_skew(
        &self,
        timestamps: impl IntoIterator<Item = u64>,
        now_ms: u64,
    ) -> Result<(), ProtocolError> {
        check_clock_skew(timestamps, now_ms, self.admission.limits.max_clock_skew)
            .inspect_err(|_| self.admission.metrics.refused("clock_skew"))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.authenticated();
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
        self.admission.metrics.connections_open.dec();
    }
}

/// The origin timestamps of an UPLOAD's entries.
pub(super) fn timestamps(entries: &[UploadEntry]) -> impl Iterator<Item = u64> + '_ {
    entries.iter().map(|e| e.origin_timestamp)
}

/// Milliseconds since 2015-01-01T00:00:00Z (Realm's origin timestamp epoch) by the server's
/// clock.
pub(super) fn now_ms() -> u64 {
    crate::store::changeset_timestamp()
}

/// Refuses a timestamp more than `max_skew` ahead of `now_ms` with 101 (`other_error`,
/// `try_again`): the connection ends and the client retries later.
pub(super) fn check_clock_skew(
    timestamps: impl IntoIterator<Item = u64>,
    now_ms: u64,
    max_skew: Duration,
) -> Result<(), ProtocolError> {
    let limit = now_ms.saturating_add(max_skew.as_millis() as u64);
    match timestamps.into_iter().find(|ts| *ts > limit) {
        None => Ok(()),
        Some(ts) => Err(ProtocolError::new(
            ErrorCode::OtherError,
            format!(
                "a changeset's origin_timestamp is {} ms ahead of the server's clock, more than \
                 the {} ms allowed: correct the device clock",
                ts - now_ms,
                max_skew.as_millis()
            ),
        )),
    }
}

/// Backoff after `n` accept errors in a row: 10 ms doubling to 1 s.
pub(super) fn accept_backoff(n: u32) -> Duration {
    Duration::from_millis(10u64 << n.min(7)).min(Duration::from_secs(1))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs both values; returns the new soft
/// limit (`None` when the platform has no such limit or the call failed, which is logged).
pub(super) fn raise_nofile_limit() -> Option<u64> {
    let before = match rlimit::Resource::NOFILE.get() {
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the file descriptor limit (RLIMIT_NOFILE)");
            return None;
        }
    };
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(after) => {
            tracing::info!(before, after, "file descriptor limit (RLIMIT_NOFILE)");
            Some(after)
        }
        Err(e) => {
            tracing::warn!(before, error = %e, "cannot raise the file descriptor limit (RLIMIT_NOFILE)");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_from_10_ms_to_1_s() {
        let waits: Vec<u64> = (0..10)
            .map(|n| accept_backoff(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
    }

    #[test]
    fn caps_refuse_and_release() {
        let limits = ConnectionLimits {
            max_connections: 3,
            max_unauthenticated: 2,
            ..ConnectionLimits::default()
        };
        let metrics = Arc::new(Metrics::new());
        let admission = Admission::new(limits, Arc::clone(&metrics));
        let a = admission.admit().unwrap();
        let b = admission.admit().unwrap();
        assert_eq!(admission.admit().err(), Some("unauthenticated_cap"));
        a.authenticated();
        let c = admission.admit().unwrap();
        assert_eq!(admission.admit().err(), Some("connection_cap"));
        drop(b);
        let d = admission.admit().unwrap();
        assert_eq!(metrics.connections_open.get(), 3);
        assert_eq!(metrics.connections_unauthenticated.get(), 2);
        drop((a, c, d));
        assert_eq!(metrics.connections_open.get(), 0);
        assert_eq!(metrics.connections_unauthenticated.get(), 0);
        let text = metrics.encode();
        assert!(text.contains("reason=\"connection_cap\"} 1"), "{text}");
        assert!(text.contains("reason=\"unauthenticated_cap\"} 1"), "{text}");
    }

    #[test]
    fn clock_skew_refuses_only_beyond_the_limit() {
        let skew = Duration::from_secs(300);
        let now = 1_000_000_000;
        assert!(check_clock_skew([now, now + 300_000], now, skew).is_ok());
        let e = check_clock_skew([now, now + 300_001], now, skew).unwrap_err();
        assert_eq!(e.code, ErrorCode::OtherError);
        assert!(e.message.contains("300001 ms ahead"), "{}", e.message);
    }
}
