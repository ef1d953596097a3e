//! Sync messages and their framing: one binary WebSocket message each, an ASCII header line of
//! single-space-separated decimal fields ended by `\n`, then the body the header sizes.
//!
//! Field order is realm-core's (`protocol_codec.hpp`), so its codec test strings encode and
//! parse byte for byte. Parsers never panic; every malformation maps to the protocol error code
//! the peer should answer with.

use super::error::{ErrorCode, ProtocolError};
use crate::changeset::compression::{compress_body, decompress_body};
use crate::changeset::{Changeset, ChangesetError, ChangesetMeta};

/// Size limits a receiver enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message body, compressed or inflated (default
    /// [`MAX_BODY_SIZE`](super::limits::MAX_BODY_SIZE)).
    pub max_body: usize,
    /// Longest server path in BIND.
    pub max_path: usize,
    /// Longest access token in BIND and REFRESH.
    pub max_token: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: super::limits::MAX_BODY_SIZE,
            max_path: 1024,
            max_token: 2048,
        }
    }
}

use super::limits::MAX_FIELD_VALUE;
use super::limits::MAX_HEADER_SIZE as MAX_HEADER;

/// One changeset in an UPLOAD body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadEntry {
    /// Client version the changeset produced.
    pub client_version: u64,
    /// Last server version integrated before it was made.
    pub last_integrated_server_version: u64,
    /// Origin timestamp (ms since 2015-01-01).
    pub origin_timestamp: u64,
    /// Origin file ident (0 = the uploading file).
    pub origin_file_ident: u64,
    /// Encoded changeset.
    pub changeset: Vec<u8>,
}

impl UploadEntry {
    /// The entry for a local changeset (its `meta` holds client version, base server version
    /// and origin timestamp); the origin file ident is 0, "the uploading file".
    pub fn from_changeset(cs: &Changeset) -> Self {
        UploadEntry {
            client_version: cs.meta.version,
            last_integrated_server_version: cs.meta.last_integrated_remote_version,
            origin_timestamp: cs.meta.origin_timestamp,
            origin_file_ident: 0,
            changeset: cs.encode(),
        }
    }

    /// The entry's header fields, in wire order.
    fn header_fields(&self) -> [u64; 5] {
        [
            self.client_version,
            self.last_integrated_server_version,
            self.origin_timestamp,
            self.origin_file_ident,
            self.changeset.len() as u64,
        ]
    }

    /// Bytes the entry takes in an UPLOAD body (header fields and changeset), before compression.
    pub fn encoded_len(&self) -> usize {
        entry_len(&self.header_fields(), &self.changeset)
    }

    /// The uploaded changeset, decoded, with its metadata (`origin_file_ident` is the uploader).
    pub fn to_changeset(&self, uploader: u64) -> Result<Changeset, ChangesetError> {
        self.to_changeset_after(uploader, None)
    }

    /// [`to_changeset`](Self::to_changeset) beside `earlier` (the entry decoded before it),
    /// whose string table it shares if it names the same strings
    /// ([`Changeset::decode_sharing`]).
    pub fn to_changeset_after(
        &self,
        uploader: u64,
        earlier: Option<&Changeset>,
    ) -> Result<Changeset, ChangesetError> {
        let mut cs = Changeset::decode_sharing(&self.changeset, earlier)?;
        cs.meta = ChangesetMeta {
            version: self.client_version,
            last_integrated_remote_version: self.last_integrated_server_version,
            origin_timestamp: self.origin_timestamp,
            origin_file_ident: uploader,
        };
        Ok(cs)
    }
}

/// One changeset in a DOWNLOAD body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadEntry {
    /// Server version it produced.
    pub server_version: u64,
    /// Last version of the receiving client's history the server had integrated then.
    pub last_integrated_client_version: u64,
    /// Origin timestamp (ms since 2015-01-01).
    pub origin_timestamp: u64,
    /// Client file ident of the file that made it.
    pub origin_file_ident: u64,
    /// Size before any server-side compaction (used for progress).
    pub original_changeset_size: u64,
    /// Encoded changeset.
    pub changeset: Vec<u8>,
}

impl DownloadEntry {
    /// The entry's header fields, in wire order.
    fn header_fields(&self) -> [u64; 6] {
        [
            self.server_version,
            self.last_integrated_client_version,
            self.origin_timestamp,
            self.origin_file_ident,
            self.original_changeset_size,
            self.changeset.len() as u64,
        ]
    }

    /// Bytes the entry takes in a DOWNLOAD body (header fields and changeset), before
    /// compression.
    pub fn encoded_len(&self) -> usize {
        entry_len(&self.header_fields(), &self.changeset)
    }

    /// The downloaded changeset, decoded; its `meta.version` is the server version and
    /// `meta.last_integrated_remote_version` the receiver's last version the server had
    /// integrated when it made it.
    pub fn to_changeset(&self) -> Result<Changeset, ChangesetError> {
        let mut cs = Changeset::decode(&self.changeset)?;
        cs.meta = ChangesetMeta {
            version: self.server_version,
            last_integrated_remote_version: self.last_integrated_client_version,
            origin_timestamp: self.origin_timestamp,
            origin_file_ident: self.origin_file_ident,
        };
        Ok(cs)
    }
}

/// A flexible sync subscription set as the client sends it in IDENT and QUERY.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlxQuery {
    /// The set's version (0: the empty set of a fresh file).
    pub version: u64,
    /// Its body: `{}` or `{"<Class>":"(<q1>) OR (<q2>)", ...}`, each query in realm-core's
    /// serialized form (`Query::get_description`; `realm-wire-compat.md` sections 4.2, 4.8).
    pub body: String,
}

/// A flexible sync DOWNLOAD's extra fields (`realm-wire-compat.md` section 4.5), which take the
/// place of `downloadable_bytes` in the header.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlxDownload {
    /// The subscription set the changesets belong to.
    pub query_version: u64,
    /// Where the message stands in a bootstrap.
    pub batch_state: BatchState,
    /// How far the download is, in [0, 1] (realm-core parses it with `std::stod` and refuses
    /// anything outside that range).
    pub progress_estimate: f64,
}

/// A flexible sync DOWNLOAD's place in a bootstrap (realm-core's `DownloadBatchState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchState {
    /// A bootstrap batch with more to come (0).
    MoreToCome,
    /// The last batch of a bootstrap (1): the client integrates the staged batches.
    LastInBatch,
    /// An ordinary download after bootstraps (2).
    SteadyState,
}

impl BatchState {
    /// The wire value: 0, 1 or 2.
    pub fn code(self) -> u64 {
        match self {
            BatchState::MoreToCome => 0,
            BatchState::LastInBatch => 1,
            BatchState::SteadyState => 2,
        }
    }

    /// The state of a wire value, `None` outside 0..=2.
    pub fn from_code(code: u64) -> Option<BatchState> {
        match code {
            0 => Some(BatchState::MoreToCome),
            1 => Some(BatchState::LastInBatch),
            2 => Some(BatchState::SteadyState),
            _ => None,
        }
    }
}

/// Messages a client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// Starts a session on a server path.
    Bind {
        /// Client-chosen session ident.
        session: u64,
        /// Server path (the "server file").
        path: String,
        /// Access token.
        token: String,
        /// Whether the server must allocate a client file ident first.
        need_client_file_ident: bool,
        /// Subserver flag (always false for Tandem clients).
        is_subserver: bool,
    },
    /// The client's identity and cursors.
    Ident {
        /// Session.
        session: u64,
        /// Client file ident.
        client_file_ident: u64,
        /// Its salt.
        client_file_ident_salt: u64,
        /// Download cursor: server version.
        download_server_version: u64,
        /// Download cursor: client version integrated by the server at that point.
        download_client_version: u64,
        /// Latest server version the client has heard of.
        latest_server_version: u64,
        /// Its salt.
        latest_server_version_salt: u64,
        /// Flexible sync only: the client's active subscription set (`realm-wire-compat.md`
        /// section 4.2); `None` in partition-based sync and Tandem's dialect.
        query: Option<FlxQuery>,
    },
    /// Flexible sync: a new subscription set (`query <session> <version> <size>\n<json>`,
    /// realm-core's `Session::send_query_change_message`).
    Query {
        /// Session.
        session: u64,
        /// The subscription set's version.
        query: FlxQuery,
    },
    /// Local changesets.
    Upload {
        /// Session.
        session: u64,
        /// Upload progress: client version.
        progress_client_version: u64,
        /// Upload progress: server version.
        progress_server_version: u64,
        /// Oldest server version the client still needs.
        locked_server_version: u64,
        /// The changesets.
        entries: Vec<UploadEntry>,
    },
    /// Asks the server to echo once everything before it is processed.
    Mark {
        /// Session.
        session: u64,
        /// Request ident to echo.
        request_ident: u64,
    },
    /// Ends a session.
    Unbind {
        /// Session.
        session: u64,
    },
    /// Keep-alive.
    Ping {
        /// Client clock, ms.
        timestamp: u64,
        /// Previous round-trip time, ms.
        rtt: u64,
    },
    /// An error report with a JSON body.
    JsonError {
        /// Error code.
        code: u64,
        /// Session.
        session: u64,
        /// JSON text.
        json: String,
    },
    /// A new access token for a bound session, extending its authorization (Tandem addition).
    Refresh {
        /// Session.
        session: u64,
        /// The new access token.
        token: String,
    },
    /// Asks for the whole server state as STATE segments (Tandem addition).
    StateRequest {
        /// Session.
        session: u64,
        /// Snapshot version to resume, or 0 for a new snapshot at the latest version.
        server_version: u64,
        /// Byte offset into that snapshot to resume from (0 for a new snapshot).
        offset: u64,
    },
    /// Asks for the latest client version the server integrated from a client file (Tandem
    /// addition).
    ClientVersionRequest {
        /// Session.
        session: u64,
        /// Client file ident.
        client_file_ident: u64,
        /// Its salt.
        client_file_ident_salt: u64,
    },
    /// One changeset the server must integrate only if nothing concurrent touched the same
    /// objects (Tandem addition).
    Transact {
        /// Session.
        session: u64,
        /// Client-chosen ident the TRANSACT_RESULT echoes.
        request_ident: u64,
        /// Client version the changeset produced.
        client_version: u64,
        /// Last server version integrated before it was made.
        last_integrated_server_version: u64,
        /// Origin timestamp (ms since 2015-01-01).
        origin_timestamp: u64,
        /// Encoded changeset (Realm binary format).
        changeset: Vec<u8>,
    },
}

/// Messages a server sends.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerMessage {
    /// The allocated client file ident.
    Ident {
        /// Session.
        session: u64,
        /// Client file ident.
        client_file_ident: u64,
        /// Its salt.
        client_file_ident_salt: u64,
    },
    /// Server changesets and progress.
    Download {
        /// Session.
        session: u64,
        /// Download cursor after these changesets: server version.
        download_server_version: u64,
        /// ... and the client version integrated at that point.
        download_client_version: u64,
        /// Latest server version.
        latest_server_version: u64,
        /// Its salt.
        latest_server_version_salt: u64,
        /// Upload acknowledgement: client version.
        upload_client_version: u64,
        /// Upload acknowledgement: server version.
        upload_server_version: u64,
        /// Bytes left to download (partition-based sync and Tandem; not sent in flexible sync).
        downloadable_bytes: u64,
        /// Flexible sync only: subscription set, bootstrap state and progress, sent in place of
        /// `downloadable_bytes`.
        flx: Option<FlxDownload>,
        /// The changesets.
        entries: Vec<DownloadEntry>,
    },
    /// Flexible sync: the server cannot evaluate a subscription set
    /// (`query_error <code> <size> <session> <version>\n<message>`, `realm-wire-compat.md`
    /// section 4.6). The set goes to state Error; the session goes on with the previous one.
    QueryError {
        /// Error code (226 `bad_query`).
        code: u64,
        /// Session.
        session: u64,
        /// The subscription set's version.
        query_version: u64,
        /// Why, in plain text.
        message: String,
    },
    /// Echo of a client MARK.
    Mark {
        /// Session.
        session: u64,
        /// The request ident.
        request_ident: u64,
    },
    /// Acknowledges UNBIND.
    Unbound {
        /// Session.
        session: u64,
    },
    /// An error; session 0 means the connection.
    Error {
        /// Error code.
        code: u64,
        /// Message.
        message: String,
        /// Whether the client may retry.
        try_again: bool,
        /// Session, or 0.
        session: u64,
    },
    /// An error with a JSON body.
    JsonError {
        /// Error code.
        code: u64,
        /// Session.
        session: u64,
        /// JSON text.
        json: String,
    },
    /// Keep-alive answer.
    Pong {
        /// The PING's timestamp.
        timestamp: u64,
    },
    /// One segment of a snapshot of the whole server state, answering STATE_REQUEST (Tandem
    /// addition).
    State {
        /// Session.
        session: u64,
        /// Server version the snapshot recreates.
        server_version: u64,
        /// Its salt.
        server_version_salt: u64,
        /// Offset in the snapshot of the segment's first byte.
        begin_offset: u64,
        /// Offset in the snapshot just past the segment's last byte.
        end_offset: u64,
        /// Size of the whole snapshot.
        total_size: u64,
        /// The snapshot bytes `[begin_offset, end_offset)`.
        segment: Vec<u8>,
    },
    /// Answers CLIENT_VERSION_REQUEST (Tandem addition).
    ClientVersion {
        /// Session.
        session: u64,
        /// Latest client version the server integrated from that client file, 0 if none.
        client_version: u64,
    },
    /// Answers TRANSACT (Tandem addition).
    TransactResult {
        /// Session.
        session: u64,
        /// The TRANSACT's request ident.
        request_ident: u64,
        /// Whether the changeset was integrated.
        accepted: bool,
        /// Server version the changeset produced if accepted.
        server_version: u64,
        /// Why it was rejected (empty when accepted).
        reason: String,
    },
}

fn header(out: &mut Vec<u8>, name: &str, fields: &[u64]) {
    out.extend_from_slice(name.as_bytes());
    for f in fields {
        out.push(b' ');
        out.extend_from_slice(f.to_string().as_bytes());
    }
    out.push(b'\n');
}

/// Bytes of one entry: each field in decimal and a space, then the changeset.
fn entry_len(fields: &[u64], changeset: &[u8]) -> usize {
    let digits = |v: u64| v.checked_ilog10().map_or(1, |d| d as usize + 1);
    fields.iter().map(|f| digits(*f) + 1).sum::<usize>() + changeset.len()
}

fn entry_body<'a>(entries: impl Iterator<Item = (Vec<u64>, &'a [u8])>) -> Vec<u8> {
    let mut body = Vec::new();
    for (fields, bytes) in entries {
        for f in fields {
            body.extend_from_slice(f.to_string().as_bytes());
            body.push(b' ');
        }
        body.extend_from_slice(bytes);
    }
    body
}

impl ClientMessage {
    /// The message as sent: header line and body (UPLOAD and TRANSACT bodies compressed when
    /// that helps).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            ClientMessage::Bind {
                session,
                path,
                token,
                need_client_file_ident,
                is_subserver,
            } => {
                header(
                    &mut out,
                    "bind",
                    &[
                        *session,
                        path.len() as u64,
                        token.len() as u64,
                        u64::from(*need_client_file_ident),
                        u64::from(*is_subserver),
                    ],
                );
                out.extend_from_slice(path.as_bytes());
                out.extend_from_slice(token.as_bytes());
            }
            ClientMessage::Ident {
                session,
                client_file_ident,
                client_file_ident_salt,
                download_server_version,
                download_client_version,
                latest_server_version,
                latest_server_version_salt,
                query,
            } => {
                let mut fields = vec![
                    *session,
                    *client_file_ident,
                    *client_file_ident_salt,
                    *download_server_version,
                    *download_client_version,
                    *latest_server_version,
                    *latest_server_version_salt,
                ];
                if let Some(q) = query {
                    fields.extend([q.version, q.body.len() as u64]);
                }
                header(&mut out, "ident", &fields);
                if let Some(q) = query {
                    out.extend_from_slice(q.body.as_bytes());
                }
            }
            ClientMessage::Query { session, query } => {
                header(
                    &mut out,
                    "query",
                    &[*session, query.version, query.body.len() as u64],
                );
                out.extend_from_slice(query.body.as_bytes());
            }
            ClientMessage::Upload {
                session,
                progress_client_version,
                progress_server_version,
                locked_server_version,
                entries,
            } => {
                let body = compress_body(entry_body(
                    entries
                        .iter()
                        .map(|e| (e.header_fields().to_vec(), e.changeset.as_slice())),
                ));
                header(
                    &mut out,
                    "upload",
                    &[
                        *session,
                        u64::from(body.compressed),
                        body.uncompressed_size as u64,
                        body.compressed_size() as u64,
                        *progress_client_version,
                        *progress_server_version,
                        *locked_server_version,
                    ],
                );
                out.extend_from_slice(&body.data);
            }
            ClientMessage::Mark {
                session,
                request_ident,
            } => header(&mut out, "mark", &[*session, *request_ident]),
            ClientMessage::Unbind { session } => header(&mut out, "unbind", &[*session]),
            ClientMessage::Ping { timestamp, rtt } => header(&mut out, "ping", &[*timestamp, *rtt]),
            ClientMessage::JsonError {
                code,
                session,
                json,
            } => {
                header(
                    &mut out,
                    "json_error",
                    &[*code, json.len() as u64, *session],
                );
                out.extend_from_slice(json.as_bytes());
            }
            ClientMessage::Refresh { session, token } => {
                header(&mut out, "refresh", &[*session, token.len() as u64]);
                out.extend_from_slice(token.as_bytes());
            }
            ClientMessage::StateRequest {
                session,
                server_version,
                offset,
            } => header(
                &mut out,
                "state_request",
                &[*session, *server_version, *offset],
            ),
            ClientMessage::ClientVersionRequest {
                session,
                client_file_ident,
                client_file_ident_salt,
            } => header(
                &mut out,
                "client_version_request",
                &[*session, *client_file_ident, *client_file_ident_salt],
            ),
            ClientMessage::Transact {
                session,
                request_ident,
                client_version,
                last_integrated_server_version,
                origin_timestamp,
                changeset,
            } => {
                let body = compress_body(changeset.clone());
                header(
                    &mut out,
                    "transact",
                    &[
                        *session,
                        *request_ident,
                        *client_version,
                        *last_integrated_server_version,
                        *origin_timestamp,
                        u64::from(body.compressed),
                        body.uncompressed_size as u64,
                        body.compressed_size() as u64,
                    ],
                );
                out.extend_from_slice(&body.data);
            }
        }
        out
    }

    /// A client message's name and session read from its header line alone, without looking
    /// at its body (let alone inflating it): a server checks the session before it parses the
    /// body (issue 13: authenticate before inflating). `None` for PING (no session) and for a
    /// header line that [`ClientMessage::parse`] will refuse anyway.
    ///
    /// ```
    /// use tandem::protocol::ClientMessage;
    /// assert_eq!(ClientMessage::peek_session(b"upload 7 1 10 5 0 0 0\nxxxxx"), Some(("upload", 7)));
    /// assert_eq!(ClientMessage::peek_session(b"json_error 231 2 3\n{}"), Some(("json_error", 3)));
    /// assert_eq!(ClientMessage::peek_session(b"ping 1 2\n"), None);
    /// ```
    pub fn peek_session(message: &[u8]) -> Option<(&str, u64)> {
        let end = message.iter().take(MAX_HEADER).position(|b| *b == b'\n')?;
        let mut fields = message[..end].split(|b| *b == b' ');
        let name = std::str::from_utf8(fields.next()?).ok()?;
        let index = match name {
            "bind"
            | "ident"
            | "upload"
            | "mark"
            | "unbind"
            | "refresh"
            | "state_request"
            | "client_version_request"
            | "transact"
            | "query" => 0,
            "json_error" => 2,
            _ => return None,
        };
        Some((name, decimal(fields.nth(index)?)?))
    }

    /// Whether a message of this name may carry a compressed body (UPLOAD, TRANSACT).
    pub fn has_compressed_body(name: &str) -> bool {
        matches!(name, "upload" | "transact")
    }

    /// Parses a message a client sent (server side).
    ///
    /// Every decimal field, in the header line and in UPLOAD entry headers, must be at most
    /// [`MAX_FIELD_VALUE`] (2^63 - 1): the server stores them as SQLite INTEGERs. A larger header
    /// field is 103 (bad syntax), a larger entry field 111 (bad changeset header syntax).
    pub fn parse(message: &[u8], limits: &Limits) -> Result<ClientMessage, ProtocolError> {
        let mut p = Parser::new(message)?;
        p.max_field = MAX_FIELD_VALUE;
        let msg = match p.name.as_str() {
            "bind" => {
                let [session, path_size, token_size, need, sub] = p.fields("bind")?;
                if path_size > limits.max_path as u64 || token_size > limits.max_token as u64 {
                    return Err(ProtocolError::new(
                        ErrorCode::LimitsExceeded,
                        format!(
                            "BIND path of {path_size} or token of {token_size} bytes is over the limit \
                             ({} / {})",
                            limits.max_path, limits.max_token
                        ),
                    ));
                }
                let path = p.text(path_size, "server path")?;
                let token = p.text(token_size, "token")?;
                ClientMessage::Bind {
                    session,
                    path,
                    token,
                    need_client_file_ident: flag(need)?,
                    is_subserver: flag(sub)?,
                }
            }
            "ident" => {
                let (fields, query) = if p.fields.len() == 9 {
                    let [session, ident, salt, dsv, dcv, lsv, lsvs, version, size] =
                        p.fields("ident")?;
                    p.check_size(size, limits)?;
                    let body = p.text(size, "query body")?;
                    (
                        [session, ident, salt, dsv, dcv, lsv, lsvs],
                        Some(FlxQuery { version, body }),
                    )
                } else {
                    (p.fields("ident")?, None)
                };
                let [session, ident, salt, dsv, dcv, lsv, lsvs] = fields;
                ClientMessage::Ident {
                    session,
                    client_file_ident: ident,
                    client_file_ident_salt: salt,
                    download_server_version: dsv,
                    download_client_version: dcv,
                    latest_server_version: lsv,
                    latest_server_version_salt: lsvs,
                    query,
                }
            }
            "query" => {
                let [session, version, size] = p.fields("query")?;
                p.check_size(size, limits)?;
                let body = p.text(size, "query body")?;
                ClientMessage::Query {
                    session,
                    query: FlxQuery { version, body },
                }
            }
            "upload" => {
                let [session, compressed, uncompressed_size, compressed_size, pcv, psv, lsv] =
                    p.fields("upload")?;
                let body = p.body(
                    flag(compressed)?,
                    uncompressed_size,
                    compressed_size,
                    limits,
                )?;
                let mut entries = Vec::new();
                let mut r = EntryReader {
                    body: &body,
                    pos: 0,
                    max_field: MAX_FIELD_VALUE,
                };
                while !r.done() {
                    let [cv, lisv, ts, ofi] = r.numbers()?;
                    let changeset = r.changeset()?;
                    entries.push(UploadEntry {
                        client_version: cv,
                        last_integrated_server_version: lisv,
                        origin_timestamp: ts,
                        origin_file_ident: ofi,
                        changeset,
                    });
                }
                ClientMessage::Upload {
                    session,
                    progress_client_version: pcv,
                    progress_server_version: psv,
                    locked_server_version: lsv,
                    entries,
                }
            }
            "mark" => {
                let [session, request_ident] = p.fields("mark")?;
                ClientMessage::Mark {
                    session,
                    request_ident,
                }
            }
            "unbind" => {
                let [session] = p.fields("unbind")?;
                ClientMessage::Unbind { session }
            }
            "ping" => {
                let [timestamp, rtt] = p.fields("ping")?;
                ClientMessage::Ping { timestamp, rtt }
            }
            "json_error" => {
                let [code, size, session] = p.fields("json_error")?;
                p.check_size(size, limits)?;
                let json = p.text(size, "JSON body")?;
                ClientMessage::JsonError {
                    code,
                    session,
                    json,
                }
            }
            "refresh" => {
                let [session, token_size] = p.fields("refresh")?;
                if token_size > limits.max_token as u64 {
                    return Err(ProtocolError::new(
                        ErrorCode::LimitsExceeded,
                        format!(
                            "REFRESH token of {token_size} bytes is over the limit ({})",
                            limits.max_token
                        ),
                    ));
                }
                let token = p.text(token_size, "token")?;
                ClientMessage::Refresh { session, token }
            }
            "state_request" => {
                let [session, server_version, offset] = p.fields("state_request")?;
                ClientMessage::StateRequest {
                    session,
                    server_version,
                    offset,
                }
            }
            "client_version_request" => {
                let [session, ident, salt] = p.fields("client_version_request")?;
                ClientMessage::ClientVersionRequest {
                    session,
                    client_file_ident: ident,
                    client_file_ident_salt: salt,
                }
            }
            "transact" => {
                let [session, request_ident, cv, lisv, ts, compressed, uncompressed_size, compressed_size] =
                    p.fields("transact")?;
                let changeset = p.body(
                    flag(compressed)?,
                    uncompressed_size,
                    compressed_size,
                    limits,
                )?;
                ClientMessage::Transact {
                    session,
                    request_ident,
                    client_version: cv,
                    last_integrated_server_version: lisv,
                    origin_timestamp: ts,
                    changeset,
                }
            }
            other => {
                return Err(ProtocolError::new(
                    ErrorCode::UnknownMessage,
                    format!("unknown message type {other:?}"),
                ))
            }
        };
        p.finish()?;
        Ok(msg)
    }
}

impl ServerMessage {
    /// The message as sent (DOWNLOAD and STATE bodies compressed when that helps).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            ServerMessage::Ident {
                session,
                client_file_ident,
                client_file_ident_salt,
            } => header(
                &mut out,
                "ident",
                &[*session, *client_file_ident, *client_file_ident_salt],
            ),
            ServerMessage::Download {
                session,
                download_server_version,
                download_client_version,
                latest_server_version,
                latest_server_version_salt,
                upload_client_version,
                upload_server_version,
                downloadable_bytes,
                flx,
                entries,
            } => {
                let body = compress_body(entry_body(
                    entries
                        .iter()
                        .map(|e| (e.header_fields().to_vec(), e.changeset.as_slice())),
                ));
                let progress = [
                    *session,
                    *download_server_version,
                    *download_client_version,
                    *latest_server_version,
                    *latest_server_version_salt,
                    *upload_client_version,
                    *upload_server_version,
                ];
                let sizes = [
                    u64::from(body.compressed),
                    body.uncompressed_size as u64,
                    body.compressed_size() as u64,
                ];
                match flx {
                    None => {
                        let mut fields = progress.to_vec();
                        fields.push(*downloadable_bytes);
                        fields.extend(sizes);
                        header(&mut out, "download", &fields);
                    }
                    Some(f) => {
                        // The estimate is a decimal fraction (`std::stod` reads it), never
                        // NaN or infinite, clamped into [0, 1].
                        let estimate = if f.progress_estimate.is_finite() {
                            f.progress_estimate.clamp(0.0, 1.0)
                        } else {
                            1.0
                        };
                        let mut line = b"download".to_vec();
                        for v in progress
                            .iter()
                            .chain([f.query_version, f.batch_state.code()].iter())
                        {
                            line.extend_from_slice(format!(" {v}").as_bytes());
                        }
                        line.extend_from_slice(format!(" {estimate}").as_bytes());
                        for v in sizes {
                            line.extend_from_slice(format!(" {v}").as_bytes());
                        }
                        line.push(b'\n');
                        out.extend_from_slice(&line);
                    }
                }
                out.extend_from_slice(&body.data);
            }
            ServerMessage::QueryError {
                code,
                session,
                query_version,
                message,
            } => {
                header(
                    &mut out,
                    "query_error",
                    &[*code, message.len() as u64, *session, *query_version],
                );
                out.extend_from_slice(message.as_bytes());
            }
            ServerMessage::Mark {
                session,
                request_ident,
            } => header(&mut out, "mark", &[*session, *request_ident]),
            ServerMessage::Unbound { session } => header(&mut out, "unbound", &[*session]),
            ServerMessage::Error {
                code,
                message,
                try_again,
                session,
            } => {
                header(
                    &mut out,
                    "error",
                    &[*code, message.len() as u64, u64::from(*try_again), *session],
                );
                out.extend_from_slice(message.as_bytes());
            }
            ServerMessage::JsonError {
                code,
                session,
                json,
            } => {
                header(
                    &mut out,
                    "json_error",
                    &[*code, json.len() as u64, *session],
                );
                out.extend_from_slice(json.as_bytes());
            }
            ServerMessage::Pong { timestamp } => header(&mut out, "pong", &[*timestamp]),
            ServerMessage::State {
                session,
                server_version,
                server_version_salt,
                begin_offset,
                end_offset,
                total_size,
                segment,
            } => {
                let body = compress_body(segment.clone());
                header(
                    &mut out,
                    "state",
                    &[
                        *session,
                        *server_version,
                        *server_version_salt,
                        *begin_offset,
                        *end_offset,
                        *total_size,
                        u64::from(body.compressed),
                        body.uncompressed_size as u64,
                        body.compressed_size() as u64,
                    ],
                );
                out.extend_from_slice(&body.data);
            }
            ServerMessage::ClientVersion {
                session,
                client_version,
            } => header(&mut out, "client_version", &[*session, *client_version]),
            ServerMessage::TransactResult {
                session,
                request_ident,
                accepted,
                server_version,
                reason,
            } => {
                header(
                    &mut out,
                    "transact_result",
                    &[
                        *session,
                        *request_ident,
                        u64::from(*accepted),
                        *server_version,
                        reason.len() as u64,
                    ],
                );
                out.extend_from_slice(reason.as_bytes());
            }
        }
        out
    }

    /// Parses a message a server sent (client side).
    pub fn parse(message: &[u8], limits: &Limits) -> Result<ServerMessage, ProtocolError> {
        let mut p = Parser::new(message)?;
        let msg = match p.name.as_str() {
            "ident" => {
                let [session, ident, salt] = p.fields("ident")?;
                ServerMessage::Ident {
                    session,
                    client_file_ident: ident,
                    client_file_ident_salt: salt,
                }
            }
            "download" => {
                let (fields, flx) = if p.fields.len() == 13 {
                    // Flexible sync: query version, batch state and a decimal progress
                    // estimate in place of downloadable bytes.
                    let estimate = std::str::from_utf8(p.fields.remove(9))
                        .ok()
                        .and_then(|t| t.parse::<f64>().ok())
                        .filter(|e| (0.0..=1.0).contains(e))
                        .ok_or_else(|| {
                            ProtocolError::new(
                                ErrorCode::BadSyntax,
                                "DOWNLOAD progress estimate is not a number in [0, 1]",
                            )
                        })?;
                    let [session, dsv, dcv, lsv, lsvs, ucv, usv, qv, bs, compressed, us, cs] =
                        p.fields("download")?;
                    let batch_state = BatchState::from_code(bs).ok_or_else(|| {
                        ProtocolError::new(
                            ErrorCode::BadSyntax,
                            format!("DOWNLOAD batch state {bs} is not 0, 1 or 2"),
                        )
                    })?;
                    (
                        [
                            session, dsv, dcv, lsv, lsvs, ucv, usv, 0, compressed, us, cs,
                        ],
                        Some(FlxDownload {
                            query_version: qv,
                            batch_state,
                            progress_estimate: estimate,
                        }),
                    )
                } else {
                    (p.fields("download")?, None)
                };
                let [session, dsv, dcv, lsv, lsvs, ucv, usv, downloadable, compressed, uncompressed_size, compressed_size] =
                    fields;
                let body = p.body(
                    flag(compressed)?,
                    uncompressed_size,
                    compressed_size,
                    limits,
                )?;
                let mut entries = Vec::new();
                let mut r = EntryReader {
                    body: &body,
                    pos: 0,
                    max_field: u64::MAX,
                };
                while !r.done() {
                    let [sv, licv, ts, ofi, original] = r.numbers()?;
                    let changeset = r.changeset()?;
                    entries.push(DownloadEntry {
                        server_version: sv,
                        last_integrated_client_version: licv,
                        origin_timestamp: ts,
                        origin_file_ident: ofi,
                        original_changeset_size: original,
                        changeset,
                    });
                }
                ServerMessage::Download {
                    session,
                    download_server_version: dsv,
                    download_client_version: dcv,
                    latest_server_version: lsv,
                    latest_server_version_salt: lsvs,
                    upload_client_version: ucv,
                    upload_server_version: usv,
                    downloadable_bytes: downloadable,
                    flx,
                    entries,
                }
            }
            "mark" => {
                let [session, request_ident] = p.fields("mark")?;
                ServerMessage::Mark {
                    session,
                    request_ident,
                }
            }
            "unbound" => {
                let [session] = p.fields("unbound")?;
                ServerMessage::Unbound { session }
            }
            "error" => {
                let [code, size, try_again, session] = p.fields("error")?;
                p.check_size(size, limits)?;
                let message = p.text(size, "error message")?;
                ServerMessage::Error {
                    code,
                    message,
                    try_again: flag(try_again)?,
                    session,
                }
            }
            "json_error" => {
                let [code, size, session] = p.fields("json_error")?;
                p.check_size(size, limits)?;
                let json = p.text(size, "JSON body")?;
                ServerMessage::JsonError {
                    code,
                    session,
                    json,
                }
            }
            "query_error" => {
                let [code, size, session, query_version] = p.fields("query_error")?;
                p.check_size(size, limits)?;
                let message = p.text(size, "query error message")?;
                ServerMessage::QueryError {
                    code,
                    session,
                    query_version,
                    message,
                }
            }
            "pong" => {
                let [timestamp] = p.fields("pong")?;
                ServerMessage::Pong { timestamp }
            }
            "state" => {
                let [session, sv, svs, begin, end, total, compressed, uncompressed_size, compressed_size] =
                    p.fields("state")?;
                if begin > end || end > total {
                    return Err(ProtocolError::new(
                        ErrorCode::BadSyntax,
                        format!("STATE segment [{begin}, {end}) is not within 0..{total}"),
                    ));
                }
                let segment = p.body(
                    flag(compressed)?,
                    uncompressed_size,
                    compressed_size,
                    limits,
                )?;
                if segment.len() as u64 != end - begin {
                    return Err(ProtocolError::new(
                        ErrorCode::BadSyntax,
                        format!(
                            "STATE segment of {} bytes does not span [{begin}, {end})",
                            segment.len()
                        ),
                    ));
                }
                ServerMessage::State {
                    session,
                    server_version: sv,
                    server_version_salt: svs,
                    begin_offset: begin,
                    end_offset: end,
                    total_size: total,
                    segment,
                }
            }
            "client_version" => {
                let [session, client_version] = p.fields("client_version")?;
                ServerMessage::ClientVersion {
                    session,
                    client_version,
                }
            }
            "transact_result" => {
                let [session, request_ident, accepted, server_version, size] =
                    p.fields("transact_result")?;
                let accepted = flag(accepted)?;
                p.check_size(size, limits)?;
                let reason = p.text(size, "reason")?;
                ServerMessage::TransactResult {
                    session,
                    request_ident,
                    accepted,
                    server_version,
                    reason,
                }
            }
            other => {
                return Err(ProtocolError::new(
                    ErrorCode::UnknownMessage,
                    format!("unknown message type {other:?}"),
                ))
            }
        };
        p.finish()?;
        Ok(msg)
    }
}

fn flag(v: u64) -> Result<bool, ProtocolError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(ProtocolError::new(
            ErrorCode::BadSyntax,
            format!("a flag must be 0 or 1, not {other}"),
        )),
    }
}

/// A decimal field: digits only, no sign, no leading zero (except "0"), fits in u64.
fn decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || (text.len() > 1 && text[0] == b'0') {
        return None;
    }
    let mut v: u64 = 0;
    for &b in text {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Reads the header line, then the body.
struct Parser<'a> {
    name: String,
    fields: Vec<&'a [u8]>,
    rest: &'a [u8],
    /// Largest value a header field may hold (`u64::MAX`, or [`MAX_FIELD_VALUE`] for what a
    /// client sends).
    max_field: u64,
}

impl<'a> Parser<'a> {
    fn new(message: &'a [u8]) -> Result<Self, ProtocolError> {
        let end = message
            .iter()
            .take(MAX_HEADER)
            .position(|b| *b == b'\n')
            .ok_or_else(|| {
                ProtocolError::new(
                    ErrorCode::BadSyntax,
                    format!("no header line ending within {MAX_HEADER} bytes"),
                )
            })?;
        let line = &message[..end];
        let mut parts = line.split(|b| *b == b' ');
        let name = parts.next().unwrap_or_default();
        if name.is_empty() || !name.iter().all(|b| b.is_ascii_lowercase() || *b == b'_') {
            return Err(ProtocolError::new(ErrorCode::BadSyntax, "bad message name"));
        }
        Ok(Parser {
            name: String::from_utf8_lossy(name).into_owned(),
            fields: parts.collect(),
            rest: &message[end + 1..],
            max_field: u64::MAX,
        })
    }

    fn fields<const N: usize>(&self, what: &str) -> Result<[u64; N], ProtocolError> {
        if self.fields.len() != N {
            return Err(ProtocolError::new(
                ErrorCode::BadSyntax,
                format!(
                    "{what} has {} header fields, expected {N}",
                    self.fields.len()
                ),
            ));
        }
        let mut out = [0u64; N];
        for (i, f) in self.fields.iter().enumerate() {
            out[i] = decimal(f).ok_or_else(|| {
                ProtocolError::new(
                    ErrorCode::BadSyntax,
                    format!("{what} header field {} is not a decimal number", i + 1),
                )
            })?;
            if out[i] > self.max_field {
                return Err(ProtocolError::new(
                    ErrorCode::BadSyntax,
                    format!(
                        "{what} header field {} is {}, over the largest value {}",
                        i + 1,
                        out[i],
                        self.max_field
                    ),
                ));
            }
        }
        Ok(out)
    }

    fn check_size(&self, size: u64, limits: &Limits) -> Result<(), ProtocolError> {
        if size > limits.max_body as u64 {
            return Err(ProtocolError::new(
                ErrorCode::LimitsExceeded,
                format!(
                    "body of {size} bytes is over the limit of {}",
                    limits.max_body
                ),
            ));
        }
        Ok(())
    }

    fn take(&mut self, size: u64, what: &str) -> Result<&'a [u8], ProtocolError> {
        if size > self.rest.len() as u64 {
            return Err(ProtocolError::new(
                ErrorCode::BadSyntax,
                format!(
                    "{what} of {size} bytes is longer than the {} bytes left",
                    self.rest.len()
                ),
            ));
        }
        let (taken, rest) = self.rest.split_at(size as usize);
        self.rest = rest;
        Ok(taken)
    }

    fn text(&mut self, size: u64, what: &str) -> Result<String, ProtocolError> {
        let bytes = self.take(size, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| ProtocolError::new(ErrorCode::BadSyntax, format!("{what} is not UTF-8")))
    }

    /// The body of an UPLOAD, DOWNLOAD, TRANSACT or STATE, inflated if it is compressed.
    fn body(
        &mut self,
        compressed: bool,
        uncompressed_size: u64,
        compressed_size: u64,
        limits: &Limits,
    ) -> Result<Vec<u8>, ProtocolError> {
        self.check_size(uncompressed_size, limits)?;
        if !compressed {
            if compressed_size != 0 {
                return Err(ProtocolError::new(
                    ErrorCode::BadSyntax,
                    "an uncompressed body declares a compressed size",
                ));
            }
            return Ok(self.take(uncompressed_size, "body")?.to_vec());
        }
        self.check_size(compressed_size, limits)?;
        let data = self.take(compressed_size, "compressed body")?;
        decompress_body(data, uncompressed_size as usize, limits.max_body)
            .map_err(|e| ProtocolError::new(ErrorCode::BadDecompression, e.to_string()))
    }

    fn finish(self) -> Result<(), ProtocolError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::new(
                ErrorCode::BadSyntax,
                format!("{} bytes follow the end of the message", self.rest.len()),
            ))
        }
    }
}

/// Reads changeset entries: N decimal fields each followed by one space, then a size and a
/// space, then that many bytes.
struct EntryReader<'a> {
    body: &'a [u8],
    pos: usize,
    /// Largest value an entry header field may hold.
    max_field: u64,
}

impl EntryReader<'_> {
    fn done(&self) -> bool {
        self.pos >= self.body.len()
    }

    fn number(&mut self) -> Result<u64, ProtocolError> {
        let rest = &self.body[self.pos..];
        let space = rest
            .iter()
            .take(21)
            .position(|b| *b == b' ')
            .ok_or_else(|| {
                ProtocolError::new(
                    ErrorCode::BadChangesetHeaderSyntax,
                    "changeset header field does not end in a space",
                )
            })?;
        let v = decimal(&rest[..space]).ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::BadChangesetHeaderSyntax,
                "changeset header field is not a decimal number",
            )
        })?;
        if v > self.max_field {
            return Err(ProtocolError::new(
                ErrorCode::BadChangesetHeaderSyntax,
                format!(
                    "changeset header field is {v}, over the largest value {}",
                    self.max_field
                ),
            ));
        }
        self.pos += space + 1;
        Ok(v)
    }

    fn numbers<const N: usize>(&mut self) -> Result<[u64; N], ProtocolError> {
        let mut out = [0u64; N];
        for slot in &mut out {
            *slot = self.number()?;
        }
        Ok(out)
    }

    fn changeset(&mut self) -> Result<Vec<u8>, ProtocolError> {
        let size = self.number()?;
        let left = (self.body.len() - self.pos) as u64;
        if size > left {
            return Err(ProtocolError::new(
                ErrorCode::BadChangesetSize,
                format!("changeset of {size} bytes, {left} left in the body"),
            ));
        }
        let bytes = self.body[self.pos..self.pos + size as usize].to_vec();
        self.pos += size as usize;
        Ok(bytes)
    }
}
