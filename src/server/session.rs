//! One connection's sessions on the server: what each client message does to the server files
//! and which messages answer it. Runs on blocking threads (the server files are SQLite with
//! `synchronous=FULL`); the network side lives in `net`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::admission::{self, Admitted};
use super::app::AppUser;
use super::auth::Claims;
use super::file::ServerFile;
use super::net::{Shared, MAX_DOWNLOAD_BATCH};
use super::realm;

/// Largest STATE segment.
pub const STATE_SEGMENT: usize = 1 << 20;
use crate::protocol::{ClientMessage, ErrorCode, ProtocolError, ServerMessage};

/// Who is on the other end of a connection, from its WebSocket handshake.
pub(super) enum Peer {
    /// Tandem's own dialect (`com.tandem.sync#N`): the handshake's bearer token, if any (BIND
    /// may carry its own).
    Tandem {
        handshake: Option<Result<Claims, ProtocolError>>,
    },
    /// A Realm client (`com.mongodb.realm-sync#N` on the App Services sync route): the user of
    /// its `baas_at` token. The connection is closed with 4001 when that token expires.
    Realm {
        user: AppUser,
        /// Sessions that were sent a session error: their UNBIND gets no UNBOUND.
        errored: HashSet<u64>,
    },
}

/// One connection's peer and bound sessions.
pub(super) struct Connection {
    pub(super) peer: Peer,
    pub(super) sessions: HashMap<u64, Session>,
    /// The connection's admission slot: session and ident caps, authentication.
    pub(super) admitted: Arc<Admitted>,
}

/// One bound session on a connection.
pub(super) struct Session {
    pub(super) path: String,
    /// When the session's access token expires (seconds since the Unix epoch); REFRESH moves it.
    /// Realm sessions never expire here: their connection is closed at the token's expiry.
    expires: u64,
    file: Arc<Mutex<ServerFile>>,
    /// Set by IDENT.
    client_file_ident: Option<u64>,
    /// Last server version sent to (or known by) the client.
    cursor: u64,
    /// A Realm client's session: DOWNLOAD's `upload_server_version` is then the server version
    /// its uploads were based on (`progress_server_version`, never above the download cursor),
    /// as realm-core checks (`Session::check_received_sync_progress`).
    realm: bool,
    /// The highest `progress_server_version` the client reported in an UPLOAD.
    upload_server_version: u64,
}

/// The session `id`, if it exists and its token has not expired (202 then: the client refreshes
/// its token with REFRESH or reconnects with a new one).
fn bound(
    sessions: &mut HashMap<u64, Session>,
    id: u64,
) -> Result<&mut Session, (ProtocolError, u64)> {
    let session = sessions.get_mut(&id).ok_or_else(|| {
        (
            ProtocolError::new(ErrorCode::BadSessionIdent, format!("no session {id}")),
            0,
        )
    })?;
    if session.expires <= now() {
        return Err((
            ProtocolError::new(
                ErrorCode::TokenExpired,
                "the access token expired; send REFRESH with a new one",
            ),
            id,
        ));
    }
    Ok(session)
}

impl Session {
    /// Whether the session's token has expired (it gets no downloads until REFRESH).
    pub(super) fn expired(&self) -> bool {
        self.expires <= now()
    }
}

/// Seconds since the Unix epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) fn lock(file: &Mutex<ServerFile>) -> std::sync::MutexGuard<'_, ServerFile> {
    file.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn error(code: ErrorCode, message: &str, session: u64) -> ServerMessage {
    ServerMessage::Error {
        code: u64::from(code.code()),
        message: message.to_owned(),
        try_again: matches!(
            code,
            ErrorCode::ConnectionClosed | ErrorCode::OtherError | ErrorCode::TokenExpired
        ),
        session,
    }
}

/// DOWNLOAD messages bringing `session` up to date (`force`: send one even if empty, as an
/// upload acknowledgement).
pub(super) fn downloads(id: u64, session: &mut Session, force: bool) -> Vec<ServerMessage> {
    let Some(ident) = session.client_file_ident else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let file = lock(&session.file);
    while let Ok(batch) = file.download(ident, session.cursor, MAX_DOWNLOAD_BATCH) {
        let progressed = batch.download_server_version > session.cursor;
        let owed_ack = force && out.is_empty();
        if !(progressed || owed_ack) {
            break;
        }
        session.cursor = batch.download_server_version;
        let upload_server_version = if session.realm {
            session
                .upload_server_version
                .min(batch.download_server_version)
        } else {
            batch.latest_server_version
        };
        out.push(ServerMessage::Download {
            session: id,
            download_server_version: batch.download_server_version,
            download_client_version: batch.download_client_version,
            latest_server_version: batch.latest_server_version,
            latest_server_version_salt: batch.latest_server_version_salt,
            upload_client_version: batch.upload_client_version,
            upload_server_version,
            downloadable_bytes: batch.downloadable_bytes,
            entries: batch.entries,
        });
        if !progressed {
            break;
        }
    }
    out
}

/// A server path as a file name: the SHA-256 of its bytes in hex and `.sqlite` (71 bytes for
/// any path up to the protocol's 1,024 bytes; no path can escape the data directory).
pub(super) fn file_name(path: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, path.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.sqlite")
}

/// The file name servers before issue 13 used: the hex of the path's bytes (too long for paths
/// over 123 bytes). An existing file under this name is still opened.
pub(super) fn legacy_file_name(path: &str) -> String {
    let hex: String = path.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.sqlite")
}

/// The path of a server path's file in `data_dir`: the legacy hex name if such a file exists
/// (servers before issue 13), else [`file_name`].
pub(super) fn file_path(data_dir: &std::path::Path, path: &str) -> std::path::PathBuf {
    let legacy = legacy_file_name(path);
    // 255 bytes is the longest file name of common file systems; longer legacy names never
    // existed.
    if legacy.len() <= 255 {
        let legacy = data_dir.join(legacy);
        if legacy.exists() {
            return legacy;
        }
    }
    data_dir.join(file_name(path))
}

/// The open server file of `path`, opened (or created) on first use. A storage failure is
/// logged in full and reported to the client without server-side file names: "server storage
/// failed" with the error's code.
pub(super) fn open_file(
    shared: &Shared,
    path: &str,
) -> Result<Arc<Mutex<ServerFile>>, ProtocolError> {
    let mut files = shared.files.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = files.get(path) {
        return Ok(Arc::clone(f));
    }
    let file_path = file_path(&shared.config.data_dir, path);
    let opened = ServerFile::open(&file_path).and_then(|mut file| {
        file.record_server_path(path)?;
        file.set_client_file_expiry(shared.config.connection_limits.client_file_expiry);
        Ok(file)
    });
    let file = opened.map_err(|e| {
        tracing::error!(
            server_path = path,
            file = %file_path.display(),
            code = e.code.code(),
            error = %e.message,
            "opening a server file failed"
        );
        ProtocolError::new(e.code, "server storage failed")
    })?;
    let file = Arc::new(Mutex::new(file));
    files.insert(path.to_owned(), Arc::clone(&file));
    Ok(file)
}

/// Tandem-only messages are unknown messages (102) in the Realm dialect.
fn tandem_only(name: &str) -> Result<Vec<ServerMessage>, (ProtocolError, u64)> {
    Err((
        ProtocolError::new(
            ErrorCode::UnknownMessage,
            format!("{name} is not part of the Realm sync protocol"),
        ),
        0,
    ))
}

/// Where a BIND goes: the server path, when its authorization ends, and whether it is a Realm
/// session. Tandem: the path as sent, authorized by the BIND's or the handshake's token. Realm:
/// the partition's server path ([`realm::partition`]), if the permission rules allow the user.
fn bind_target(
    shared: &Shared,
    peer: &Peer,
    path: String,
    token: &str,
) -> Result<(String, u64, bool), ProtocolError> {
    match peer {
        Peer::Realm { user, .. } => {
            let partition = realm::partition::partition(&path)?;
            if !shared.permissions.allows(&user.user_id, &partition) {
                return Err(ProtocolError::new(
                    ErrorCode::PermissionDenied,
                    format!("user {} may not sync partition {path}", user.user_id),
                ));
            }
            Ok((partition.server_path, u64::MAX, true))
        }
        Peer::Tandem { handshake } => {
            if !path.starts_with('/') || path.contains('\0') {
                return Err(ProtocolError::new(
                    ErrorCode::IllegalRealmPath,
                    format!("illegal server path {path:?}"),
                ));
            }
            let claims = if token.is_empty() {
                match handshake {
                    Some(Ok(c)) => c.clone(),
                    _ => {
                        return Err(ProtocolError::new(
                            ErrorCode::BadAuthentication,
                            "no access token",
                        ))
                    }
                }
            } else {
                shared.config.auth.verify(token)?
            };
            if !claims.allows(&path) {
                return Err(ProtocolError::new(
                    ErrorCode::PermissionDenied,
                    format!("the token does not allow {path}"),
                ));
            }
            Ok((path, claims.exp, false))
        }
    }
}

/// Checks a Realm client's claim about the latest server version it has seen: a server
/// restored from an older backup does not have it (209), or has it with another salt (211).
/// Both reset the client (`realm-sync.md` section 8; realm-core's server uses the same codes).
fn check_latest(
    file: &ServerFile,
    latest_server_version: u64,
    latest_server_version_salt: u64,
) -> Result<(), ProtocolError> {
    if latest_server_version > file.latest_version() {
        return Err(ProtocolError::new(
            ErrorCode::BadServerVersion,
            format!(
                "the client has seen server version {latest_server_version}, this server only has \
                 {}: it was restored from an older backup",
                file.latest_version()
            ),
        ));
    }
    if latest_server_version > 0 && latest_server_version_salt != file.salt() {
        return Err(ProtocolError::new(
            ErrorCode::DivergingHistories,
            "the client's server version salt is not this server's: the history was replaced",
        ));
    }
    Ok(())
}

/// The session of a message that needs a bound session (not BIND, UNBIND or PING).
fn after_bind_session(message: &ClientMessage) -> Option<u64> {
    match message {
        ClientMessage::Ident { session, .. }
        | ClientMessage::Upload { session, .. }
        | ClientMessage::Mark { session, .. }
        | ClientMessage::JsonError { session, .. }
        | ClientMessage::Refresh { session, .. }
        | ClientMessage::StateRequest { session, .. }
        | ClientMessage::ClientVersionRequest { session, .. }
        | ClientMessage::Transact { session, .. } => Some(*session),
        ClientMessage::Bind { .. } | ClientMessage::Unbind { .. } | ClientMessage::Ping { .. } => {
            None
        }
    }
}

/// Handles one message of a connection: what it does to the server files and the replies, or
/// the error to report and the session it ends (0: the connection).
pub(super) fn handle(
    shared: &Shared,
    connection: &mut Connection,
    bytes: &[u8],
) -> Result<Vec<ServerMessage>, (ProtocolError, u64)> {
    let message = ClientMessage::parse(bytes, &shared.config.limits).map_err(|e| (e, 0))?;
    let Connection {
        peer,
        sessions,
        admitted,
    } = connection;
    let is_realm = matches!(peer, Peer::Realm { .. });
    // After a session error, realm-core's server ignores the session's messages until UNBIND
    // (the client may have sent IDENT, MARK and UPLOAD right behind its BIND).
    if let (Peer::Realm { errored, .. }, Some(id)) = (&*peer, after_bind_session(&message)) {
        if errored.contains(&id) {
            return Ok(Vec::new());
        }
    }
    match message {
        ClientMessage::Bind {
            session,
            path,
            token,
            need_client_file_ident,
            ..
        } => {
            if session == 0 || sessions.contains_key(&session) {
                return Err((
                    ProtocolError::new(
                        ErrorCode::ReuseOfSessionIdent,
                        format!("session {session} is in use"),
                    ),
                    0,
                ));
            }
            if let Peer::Realm { errored, .. } = peer {
                errored.remove(&session);
            }
            admitted
                .check_session_cap(sessions.len())
                .map_err(|e| (e, session))?;
            let (path, expires, realm) =
                bind_target(shared, peer, path, &token).map_err(|e| (e, session))?;
            admitted.authenticated();
            let file = open_file(shared, &path).map_err(|e| (e, session))?;
            let mut replies = Vec::new();
            if need_client_file_ident {
                admitted.allocate_ident().map_err(|e| (e, 0))?;
                let (ident, salt) = lock(&file)
                    .allocate_client_file()
                    .map_err(|e| (e, session))?;
                replies.push(ServerMessage::Ident {
                    session,
                    client_file_ident: ident,
                    client_file_ident_salt: salt,
                });
            }
            sessions.insert(
                session,
                Session {
                    path,
                    expires,
                    file,
                    client_file_ident: None,
                    cursor: 0,
                    realm,
                    upload_server_version: 0,
                },
            );
            Ok(replies)
        }
        ClientMessage::Ident {
            session,
            client_file_ident,
            client_file_ident_salt,
            download_server_version,
            download_client_version,
            latest_server_version,
            latest_server_version_salt,
        } => {
            let s = bound(sessions, session)?;
            if s.client_file_ident.is_some() {
                return Err((
                    ProtocolError::new(ErrorCode::BadMessageOrder, "IDENT sent twice"),
                    0,
                ));
            }
            {
                let file = lock(&s.file);
                file.check_ident(
                    client_file_ident,
                    client_file_ident_salt,
                    download_server_version,
                )
                .and_then(|()| {
                    file.check_cursor(
                        client_file_ident,
                        download_server_version,
                        download_client_version,
                    )
                })
                .and_then(|()| match s.realm {
                    true => check_latest(&file, latest_server_version, latest_server_version_salt),
                    false => Ok(()),
                })
                .map_err(|e| (e, session))?;
            }
            s.client_file_ident = Some(client_file_ident);
            s.cursor = download_server_version;
            Ok(downloads(session, s, true))
        }
        ClientMessage::Upload {
            session,
            progress_server_version,
            entries,
            ..
        } => {
            let s = bound(sessions, session)?;
            s.upload_server_version = s.upload_server_version.max(progress_server_version);
            let Some(ident) = s.client_file_ident else {
                return Err((
                    ProtocolError::new(ErrorCode::BadMessageOrder, "UPLOAD before IDENT"),
                    0,
                ));
            };
            admitted
                .check_clock_skew(admission::timestamps(&entries), admission::now_ms())
                .map_err(|e| (e, 0))?;
            let integrated = lock(&s.file)
                .integrate_upload(ident, &entries)
                .map_err(|e| (e, session))?;
            if !integrated.versions.is_empty() {
                let _ = shared.changed.send(s.path.clone());
            }
            Ok(downloads(session, s, true))
        }
        ClientMessage::Mark {
            session,
            request_ident,
        } => {
            let s = bound(sessions, session)?;
            let mut replies = downloads(session, s, false);
            replies.push(ServerMessage::Mark {
                session,
                request_ident,
            });
            Ok(replies)
        }
        ClientMessage::Refresh { .. } if is_realm => tandem_only("REFRESH"),
        ClientMessage::StateRequest { .. } if is_realm => tandem_only("STATE_REQUEST"),
        ClientMessage::ClientVersionRequest { .. } if is_realm => {
            tandem_only("CLIENT_VERSION_REQUEST")
        }
        ClientMessage::Transact { .. } if is_realm => tandem_only("TRANSACT"),
        ClientMessage::Refresh { session, token } => {
            // An expired session may refresh: look it up without the expiry check.
            let s = sessions.get_mut(&session).ok_or_else(|| {
                (
                    ProtocolError::new(ErrorCode::BadSessionIdent, format!("no session {session}")),
                    0,
                )
            })?;
            let claims = shared
                .config
                .auth
                .verify(&token)
                .map_err(|e| (e, session))?;
            if !claims.allows(&s.path) {
                return Err((
                    ProtocolError::new(
                        ErrorCode::PermissionDenied,
                        format!("the new token does not allow {}", s.path),
                    ),
                    session,
                ));
            }
            s.expires = claims.exp;
            // Whatever was withheld while the token was expired.
            Ok(downloads(session, s, false))
        }
        ClientMessage::ClientVersionRequest {
            session,
            client_file_ident,
            client_file_ident_salt,
        } => {
            let s = bound(sessions, session)?;
            // A file this server does not know (or knows under another salt) had nothing
            // integrated here: 0, so a recovering client re-applies all its changes.
            let client_version = lock(&s.file)
                .client_version(client_file_ident, client_file_ident_salt)
                .or_else(|e| match e.code {
                    ErrorCode::BadClientFileIdent => Ok(0),
                    _ => Err(e),
                })
                .map_err(|e| (e, session))?;
            Ok(vec![ServerMessage::ClientVersion {
                session,
                client_version,
            }])
        }
        ClientMessage::StateRequest {
            session,
            server_version,
            offset,
        } => {
            let s = bound(sessions, session)?;
            let (salt, (version, bytes)) = {
                let mut file = lock(&s.file);
                (file.salt(), file.snapshot(server_version))
            };
            let total = bytes.len() as u64;
            // Resume only the snapshot asked for; anything else starts over at offset 0.
            let mut begin = if version == server_version {
                offset.min(total)
            } else {
                0
            };
            let mut replies = Vec::new();
            loop {
                let end = (begin + STATE_SEGMENT as u64).min(total);
                replies.push(ServerMessage::State {
                    session,
                    server_version: version,
                    server_version_salt: salt,
                    begin_offset: begin,
                    end_offset: end,
                    total_size: total,
                    segment: bytes[begin as usize..end as usize].to_vec(),
                });
                begin = end;
                if begin >= total {
                    break;
                }
            }
            Ok(replies)
        }
        ClientMessage::Transact {
            session,
            request_ident,
            client_version,
            last_integrated_server_version,
            origin_timestamp,
            changeset,
        } => {
            let s = bound(sessions, session)?;
            let Some(ident) = s.client_file_ident else {
                return Err((
                    ProtocolError::new(ErrorCode::BadMessageOrder, "TRANSACT before IDENT"),
                    0,
                ));
            };
            admitted
                .check_clock_skew([origin_timestamp], admission::now_ms())
                .map_err(|e| (e, 0))?;
            let (verdict, server_version) = {
                let mut file = lock(&s.file);
                let conflict = file
                    .transact_conflict(ident, &changeset, last_integrated_server_version)
                    .map_err(|e| (e, session))?;
                match conflict {
                    Some(reason) => (Err(reason), file.latest_version()),
                    None => {
                        let entry = crate::protocol::UploadEntry {
                            client_version,
                            last_integrated_server_version,
                            origin_timestamp,
                            origin_file_ident: 0,
                            changeset,
                        };
                        file.integrate_upload(ident, &[entry])
                            .map_err(|e| (e, session))?;
                        (Ok(()), file.latest_version())
                    }
                }
            };
            let accepted = verdict.is_ok();
            let mut replies = vec![ServerMessage::TransactResult {
                session,
                request_ident,
                accepted,
                server_version,
                reason: verdict.err().unwrap_or_default(),
            }];
            if accepted {
                let _ = shared.changed.send(s.path.clone());
                // The acknowledgement, as for an UPLOAD.
                replies.extend(downloads(session, s, true));
            }
            Ok(replies)
        }
        ClientMessage::Unbind { session } => {
            let existed = sessions.remove(&session).is_some();
            match peer {
                Peer::Tandem { .. } => Ok(vec![ServerMessage::Unbound { session }]),
                // UNBOUND only for a session that is live and had no error: realm-core treats
                // any other UNBOUND as a protocol violation.
                Peer::Realm { errored, .. } => {
                    let had_error = errored.remove(&session);
                    Ok(match existed && !had_error {
                        true => vec![ServerMessage::Unbound { session }],
                        false => Vec::new(),
                    })
                }
            }
        }
        ClientMessage::Ping { timestamp, .. } => Ok(vec![ServerMessage::Pong { timestamp }]),
        ClientMessage::JsonError { session, code, .. } => {
            let existed = sessions.remove(&session).is_some();
            match peer {
                Peer::Tandem { .. } => Ok(vec![ServerMessage::Unbound { session }]),
                // The client stopped the session without UNBIND: UNBOUND would be a protocol
                // violation. A session JSON_ERROR resets its file; it then sends UNBIND.
                Peer::Realm { errored, .. } => {
                    if !existed {
                        return Ok(Vec::new());
                    }
                    errored.insert(session);
                    Ok(vec![realm::answer_client_error(code, session)])
                }
            }
        }
    }
}
