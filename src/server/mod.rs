//! The sync server's core (cargo feature `server`): server files that own a path's history,
//! allocate client file idents, integrate uploads with OT and serve downloads.
//!
//! The network side (`tandem-server`: TLS WebSocket listener, tokens, sessions) is not built
//! yet; this is the part it will drive, tested by driving it with protocol messages directly.

mod file;

pub use file::{DownloadBatch, Integrated, ServerFile};
