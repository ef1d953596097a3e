//! The sync server (cargo feature `server`).
//!
//! - [`ServerFile`]: one server path's durable history, client file idents, OT integration of
//!   uploads and download batches.
//! - [`config`]: `tandem-server`'s flags, environment variables and TOML file.
//! - [`start`]: the TLS 1.3 WebSocket listener and per-connection sessions driving them.
//! - [`Authenticator`] / [`TokenSigner`]: JWT access tokens (HS256, RS256, EdDSA).
//! - [`app`]: Realm's App Services HTTP API (`--app-id`): users, login, the server's own tokens.
//! - [`metrics`]: the Prometheus metrics every part of the server records.
//! - [`state`]: a server file's materialized state, in SQLite tables beside its history.
//! - [`ops`]: log output, and the `/metrics`, `/healthz` and `/readyz` listener.
//! - `postgres` (cargo feature `postgres`): several server processes on one PostgreSQL
//!   database (`--database postgres://...`).
//! - [`admin`]: `tandem-server admin ...`: list, print, back up, restore and compact server
//!   files.

pub mod admin;
mod admission;
pub mod app;
mod auth;
pub mod config;
pub mod disk;
mod file;
pub mod metrics;
#[cfg(feature = "postgres")]
pub mod mirror;
mod net;
pub mod ops;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod realm;
mod session;
mod shared;
pub mod state;

pub use admission::ConnectionLimits;
pub use auth::{Algorithm, Authenticator, Claims, JwtError, KeyError, TokenSigner, MAX_TOKEN_LEN};
pub use file::flx::{SteadyFilters, Subscription};
pub use file::{
    CompactionReport, DownloadBatch, DownloadPoint, Integrated, ServerFile, StorageConfig,
    DEFAULT_MAX_MERGE_WINDOW,
};
pub use net::{start, RunningServer, StartError};
pub use session::{file_name as server_file_name, STATE_SEGMENT};
pub use shared::{ServerConfig, SessionLimits, MAX_DOWNLOAD_BATCH};

/// Seconds since the Unix epoch by the system clock (0 if the clock is before 1970): the one
/// wall-clock reading the server stores and compares (token expiry, client file ages,
/// compaction horizons, sessions of the App Services API).
pub(crate) fn unix_now() -> u64 {
    crate::sim::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
