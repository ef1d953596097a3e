//! The sync server (cargo feature `server`).
//!
//! - [`ServerFile`]: one server path's durable history, client file idents, OT integration of
//!   uploads and download batches.
//! - [`start`]: the TLS 1.3 WebSocket listener and per-connection sessions driving them.
//! - [`Authenticator`]: HS256 access tokens.

mod auth;
mod file;
mod net;

pub use auth::{Authenticator, Claims, MAX_TOKEN_LEN};
pub use file::{DownloadBatch, Integrated, ServerFile};
pub use net::{start, RunningServer, ServerConfig, StartError, MAX_DOWNLOAD_BATCH};
