//! The size limits both ends of the protocol agree on, and that decide whether a committed
//! change can ever reach the server.
//!
//! One set of numbers, used by the store (checked at commit: a change that could never be
//! uploaded is refused there, never committed), the client (upload batches, WebSocket frames,
//! what it parses) and the server (its default [`Limits`](super::Limits), what it accepts and
//! how it batches downloads). `docs/protocol.md` ("Bodies and limits") states them.
//!
//! ```
//! use tandem::protocol::limits::*;
//! // One changeset with its entry header always fits one message body.
//! assert!(MAX_CHANGESET_SIZE + MAX_ENTRY_HEADER_SIZE <= MAX_BODY_SIZE);
//! assert!(MAX_VALUE_SIZE < MAX_BODY_SIZE);
//! ```

/// Largest message body in bytes, 16 MiB: the declared uncompressed size and the compressed
/// size of an UPLOAD, DOWNLOAD, TRANSACT or STATE body. A body is compressed only when that
/// makes it strictly smaller, so a body within the limit before compression is within it after.
pub const MAX_BODY_SIZE: usize = 16 << 20;

/// Largest string or binary value in bytes (16 MiB - 17): realm-core's `Table::max_string_size`
/// and `max_binary_size` (`0xFFFFF8 - 8 - 1`), the same bound every changeset decoder applies to
/// a string, a binary value or an intern string.
pub const MAX_VALUE_SIZE: usize = crate::changeset::MAX_STRING_LEN as usize;

/// Largest encoded changeset in bytes, 15 MiB: what a client commits and a server accepts in an
/// upload. It leaves 1 MiB of a [`MAX_BODY_SIZE`] body for the entry header and for the growth a
/// changeset may see when the server transforms it before serving it in a DOWNLOAD.
pub const MAX_CHANGESET_SIZE: usize = 15 << 20;

/// Most bytes one UPLOAD or DOWNLOAD entry header takes: up to six decimal fields and the size,
/// each at most 20 digits and a space.
pub const MAX_ENTRY_HEADER_SIZE: usize = 7 * 21;

/// Longest header line of any message in bytes (names and up to eleven 20-digit numbers fit).
pub const MAX_HEADER_SIZE: usize = 512;

/// Largest value of any decimal field a client sends (header lines and UPLOAD entry headers):
/// 2^63 - 1, `i64::MAX`. The server stores versions, timestamps, file idents, salts and request
/// idents as SQLite INTEGERs (signed 64-bit); a larger value would come back negative.
/// `ClientMessage::parse` refuses one (103, or 111 in an entry header).
pub const MAX_FIELD_VALUE: u64 = i64::MAX as u64;

/// Largest WebSocket message (and frame) a peer with body limit `max_body` must accept: a
/// header line and the body.
pub const fn max_frame_size(max_body: usize) -> usize {
    max_body + MAX_HEADER_SIZE
}
