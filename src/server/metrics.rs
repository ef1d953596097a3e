//! The server's Prometheus metrics (served as OpenMetrics text on `/metrics` of the metrics
//! listener): connections, sessions, uploads and downloads, bytes, integration latency, errors
//! by code, storage faults and history sizes.
//!
//! Every metric lives in one [`Metrics`] shared by all connections; its fields are the
//! `prometheus-client` handles (atomic counters, gauges, histograms), so recording is a relaxed
//! atomic add and never takes a lock. Names follow Prometheus conventions: a `tandem_` prefix,
//! base units (seconds, bytes) and `_total` on counters (added by the encoder).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a counter family: `(name, value)` pairs, e.g. `[("code", "202")]`.
pub type Labels = Vec<(&'static str, String)>;

/// All of the server's metrics.
pub struct Metrics {
    registry: Registry,
    /// Accepted TCP connections (`tandem_connections_accepted_total`).
    pub connections_accepted: Counter,
    /// Connections refused or closed early, by `reason` (`connection_cap`,
    /// `unauthenticated_cap`, `tls_timeout`, `upgrade_timeout`, `bind_timeout`, `idle`, ...).
    pub connections_refused: Family<Labels, Counter>,
    /// Connections open now, from accept to close (`tandem_connections_open`).
    pub connections_open: Gauge,
    /// Upgraded WebSocket connections that have not yet bound an authenticated session.
    pub connections_unauthenticated: Gauge,
    /// Sessions bound now (`tandem_sessions_open`).
    pub sessions_open: Gauge,
    /// Sessions bound since start.
    pub sessions_bound: Counter,
    /// UPLOAD and TRANSACT messages received.
    pub uploads: Counter,
    /// Changesets integrated into server histories.
    pub changesets_integrated: Counter,
    /// Bytes of sync messages received (WebSocket payloads, before inflation).
    pub bytes_received: Counter,
    /// DOWNLOAD messages sent.
    pub downloads: Counter,
    /// Bytes of sync messages sent (encoded, after compression).
    pub bytes_sent: Counter,
    /// Seconds to integrate one UPLOAD (transform, apply, fsync), per upload message.
    pub integration_seconds: Histogram,
    /// Seconds from a change's integration to its DOWNLOAD being handed to another session's
    /// connection (fan-out latency).
    pub fanout_seconds: Histogram,
    /// ERROR messages and close codes sent to clients, by `code`.
    pub errors: Family<Labels, Counter>,
    /// Storage faults (SQLite errors: full disk, I/O), by `kind`.
    pub storage_faults: Family<Labels, Counter>,
    /// Messages delayed or refused by rate limits, by `limit`.
    pub rate_limited: Family<Labels, Counter>,
    /// Server files open now.
    pub server_files_open: Gauge,
    /// Changesets in the histories of the open server files.
    pub history_changesets: Gauge,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tandem");
        let m = Metrics {
            connections_accepted: Counter::default(),
            connections_refused: Family::default(),
            connections_open: Gauge::default(),
            connections_unauthenticated: Gauge::default(),
            sessions_open: Gauge::default(),
            sessions_bound: Counter::default(),
            uploads: Counter::default(),
            changesets_integrated: Counter::default(),
            bytes_received: Counter::default(),
            downloads: Counter::default(),
            bytes_sent: Counter::default(),
            // 100 us .. ~52 s.
            integration_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 20)),
            fanout_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 20)),
            errors: Family::default(),
            storage_faults: Family::default(),
            rate_limited: Family::default(),
            server_files_open: Gauge::default(),
            history_changesets: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "connections_accepted",
            "TCP connections accepted",
            m.connections_accepted.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused or closed before a session, by reason",
            m.connections_refused.clone(),
        );
        r.register(
            "connections_open",
            "Connections open now",
            m.connections_open.clone(),
        );
        r.register(
            "connections_unauthenticated",
            "Connections open now with no authenticated session",
            m.connections_unauthenticated.clone(),
        );
        r.register(
            "sessions_open",
            "Sessions bound now",
            m.sessions_open.clone(),
        );
        r.register(
            "sessions_bound",
            "Sessions bound since start",
            m.sessions_bound.clone(),
        );
        r.register(
            "uploads",
            "UPLOAD and TRANSACT messages received",
            m.uploads.clone(),
        );
        r.register(
            "changesets_integrated",
            "Changesets integrated into server histories",
            m.changesets_integrated.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes of sync messages received",
            m.bytes_received.clone(),
        );
        r.register("downloads", "DOWNLOAD messages sent", m.downloads.clone());
        r.register(
            "sent_bytes",
            "Bytes of sync messages sent",
            m.bytes_sent.clone(),
        );
        r.register(
            "integration_seconds",
            "Seconds to integrate one upload message",
            m.integration_seconds.clone(),
        );
        r.register(
            "fanout_seconds",
            "Seconds from integration to the DOWNLOAD of another session",
            m.fanout_seconds.clone(),
        );
        r.register(
            "errors",
            "Errors sent to clients, by code",
            m.errors.clone(),
        );
        r.register(
            "storage_faults",
            "Storage faults, by kind",
            m.storage_faults.clone(),
        );
        r.register(
            "rate_limited",
            "Messages delayed by rate limits, by limit",
            m.rate_limited.clone(),
        );
        r.register(
            "server_files_open",
            "Server files open now",
            m.server_files_open.clone(),
        );
        r.register(
            "history_changesets",
            "Changesets in the histories of the open server files",
            m.history_changesets.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts an error sent to a client (`code`: the protocol error code or close code).
    pub fn error(&self, code: u64) {
        self.errors
            .get_or_create(&vec![("code", code.to_string())])
            .inc();
    }

    /// Counts a connection refused or closed early for `reason`.
    pub fn refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// The OpenMetrics text exposition of every metric (`Content-Type:
    /// application/openmetrics-text; version=1.0.0; charset=utf-8`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_with_labels() {
        let m = Metrics::new();
        m.connections_accepted.inc();
        m.error(202);
        m.error(202);
        let text = m.encode();
        assert!(
            text.contains("tandem_connections_accepted_total 1"),
            "{text}"
        );
        assert!(
            text.contains("tandem_errors_total{code=\"202\"} 2"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
