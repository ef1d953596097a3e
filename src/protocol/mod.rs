//! The sync protocol: every message, its framing, version negotiation and error codes.
//!
//! Shared by the client session and the server, so both ends speak exactly one format. Framing
//! and field order are realm-core's (realm-sync.md section 1.2): one binary WebSocket message
//! per sync message, an ASCII header line of single-space-separated decimal fields, then a body
//! whose sizes the header gives. UPLOAD and DOWNLOAD bodies are zlib-compressed when larger than
//! 1 KiB and smaller compressed; every inflation is capped at the declared size.
//!
//! ```
//! use tandem::protocol::{ClientMessage, Limits};
//! let bind = ClientMessage::Bind {
//!     session: 888234,
//!     path: String::new(),
//!     token: "token".into(),
//!     need_client_file_ident: true,
//!     is_subserver: false,
//! };
//! assert_eq!(bind.encode(), b"bind 888234 0 5 1 0\ntoken");
//! assert_eq!(ClientMessage::parse(&bind.encode(), &Limits::default()).unwrap(), bind);
//! ```

mod error;
pub mod limits;
mod message;
#[cfg(feature = "client")]
pub(crate) mod socket;

pub use error::{ErrorCode, ProtocolError};
pub use message::{
    BatchState, ClientMessage, DownloadEntry, FlxDownload, FlxQuery, Limits, ServerMessage,
    UploadEntry,
};

/// Prefix of Tandem's `Sec-WebSocket-Protocol` tokens: `com.tandem.sync#<version>`.
pub const PROTOCOL_PREFIX: &str = "com.tandem.sync#";
/// Oldest protocol version this build speaks.
pub const OLDEST_VERSION: u32 = 1;
/// Newest protocol version this build speaks.
pub const CURRENT_VERSION: u32 = 1;

/// The `Sec-WebSocket-Protocol` value a client sends: every version it speaks, newest first.
pub fn client_offer() -> String {
    (OLDEST_VERSION..=CURRENT_VERSION)
        .rev()
        .map(|v| format!("{PROTOCOL_PREFIX}{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Server side: the newest version both ends speak, from the client's offer. Tokens of other
/// protocols are ignored; no shared version is an error (the handshake is refused).
pub fn negotiate(offer: &str) -> Result<u32, ProtocolError> {
    offer
        .split(',')
        .filter_map(|token| token.trim().strip_prefix(PROTOCOL_PREFIX))
        .filter_map(|v| v.parse::<u32>().ok())
        .filter(|v| (OLDEST_VERSION..=CURRENT_VERSION).contains(v))
        .max()
        .ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::WrongProtocolVersion,
                format!(
                    "no protocol version in common: the client offers {offer:?}, the server speaks \
                     {PROTOCOL_PREFIX}{OLDEST_VERSION} to {PROTOCOL_PREFIX}{CURRENT_VERSION}"
                ),
            )
        })
}

/// Client side: the version the server chose, checked against what the client offered.
pub fn accepted(answer: &str) -> Result<u32, ProtocolError> {
    answer
        .trim()
        .strip_prefix(PROTOCOL_PREFIX)
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|v| (OLDEST_VERSION..=CURRENT_VERSION).contains(v))
        .ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::WrongProtocolVersion,
                format!("the server answered {answer:?}, which this client did not offer"),
            )
        })
}
