//! What an operator sees of a running server: the log output of `tandem-server` and the
//! metrics and health listener.
//!
//! - Logs: [`init_logging`] installs a `tracing-subscriber` formatter writing to stderr, one
//!   human-readable line per event ([`LogFormat::Text`]) or one JSON object per line
//!   ([`LogFormat::Json`]), at or above a [`LogLevel`]. Library code only emits events
//!   (`tracing`); an application embedding the library installs its own subscriber.
//! - Metrics and health: with [`Observability::metrics_listen`] set, [`start`](super::start)
//!   serves plain HTTP on its own listener (axum): `GET /metrics` (the OpenMetrics text of
//!   [`Metrics`](super::metrics::Metrics)), `GET /healthz` (200 while the process runs) and
//!   `GET /readyz` (200 once the sync listener is up and the data directory takes a write; 503
//!   during shutdown or while the data directory cannot be written). Keep it on a private
//!   interface: it has no authentication.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use super::net::StartError;
use super::shared::Shared;

/// `Content-Type` of `/metrics` (OpenMetrics 1.0 text exposition).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bytes written (and removed) by each `/readyz` probe of the data directory: one filesystem
/// block, so that a full disk fails the probe rather than only a later SQLite write.
const PROBE_BYTES: usize = 4096;

/// How log events are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-01-02T03:04:05.678901Z  INFO tandem::server: message key=value` lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (`message` and the
    /// event's structured fields).
    Json,
}

/// The least severe events written (`--log-level`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogLevel {
    /// Only errors.
    Error,
    /// Errors and warnings.
    Warn,
    /// ... and informational events: start-up, connections refused, storage faults.
    #[default]
    Info,
    /// ... and per-session events.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The level named `name` (`error`, `warn`, `info`, `debug` or `trace`).
    pub fn from_name(name: &str) -> Option<LogLevel> {
        Some(match name {
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }

    fn tracing(self) -> tracing::Level {
        match self {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

/// Logging and the metrics listener (`--log-format`, `--log-level`, `--metrics-listen`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observability {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (plain HTTP); `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// How `tandem-server` writes its log (the library itself only emits events).
    pub log_format: LogFormat,
    /// The least severe events `tandem-server` writes.
    pub log_level: LogLevel,
}

/// Installs the process-wide log subscriber: `format` lines on stderr, events at `level` or
/// more severe. Does nothing if a subscriber is already installed (a second call, or an
/// embedding application's own).
pub fn init_logging(format: LogFormat, level: LogLevel) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level.tracing())
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The metrics listener's task; stopped when dropped (with the [`RunningServer`] holding it).
///
/// [`RunningServer`]: super::RunningServer
pub(super) struct MetricsListener {
    /// The address it listens on.
    pub(super) local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Health {
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` for `shared` until the returned
/// listener is dropped. `stop` becomes true at shutdown (`/readyz` answers 503 from then on).
pub(super) async fn serve_metrics(
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    addr: SocketAddr,
) -> Result<MetricsListener, StartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StartError(format!("metrics listener on {addr}: {e}")))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| StartError(format!("metrics listener: {e}")))?;
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Health { shared, stop });
    let task = crate::sim::spawn_task(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    tracing::info!(%local_addr, "metrics and health listener (/metrics, /healthz, /readyz)");
    Ok(MetricsListener { local_addr, task })
}

async fn metrics(State(health): State<Health>) -> Response {
    (
        [(CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        health.shared.metrics.encode(),
    )
        .into_response()
}

async fn readyz(State(health): State<Health>) -> Response {
    if *health.stop.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let dir = health.shared.config.data_dir.clone();
    let probe = crate::sim::blocking(move || probe_writable(&dir)).await;
    match probe {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the data directory cannot be written");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the data directory cannot be written: {e}\n"),
            )
                .into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "readiness probe failed\n").into_response(),
    }
}

/// Writes [`PROBE_BYTES`] to a scratch file in `dir` and removes it.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(format!(".tandem-readyz-{}", std::process::id()));
    let written = std::fs::write(&path, [0u8; PROBE_BYTES]);
    let removed = std::fs::remove_file(&path);
    written.and(removed)
}
