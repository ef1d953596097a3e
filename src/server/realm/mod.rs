//! The Realm sync dialect: what an unmodified realm-core 14.x client (partition-based or
//! flexible sync) needs from the WebSocket endpoint `/api/client/v2.0/app/<app-id>/realm-sync`, beyond the
//! message codec it shares with Tandem's own dialect.
//!
//! - [`negotiate`]: picks one `com.mongodb.realm-sync#N` or `com.mongodb.realm-query-sync#14`
//!   token the client offered.
//! - [`reply_to_error`]: turns a protocol error into what a Realm client survives: a session
//!   JSON_ERROR with all six keys and an `action`, a connection ERROR, or a WebSocket close
//!   code. Codes that terminate the client (`realm-wire-compat.md` section 5.3) are never sent.
//! - [`partition`] and [`permissions`]: BIND paths (partition values) to server paths, and who
//!   may bind them. Flexible sync sessions all bind [`FLX_SERVER_PATH`]; what each gets is
//!   decided by its subscriptions (`crate::server::file::flx`).
//!
//! Sources: `realm-wire-compat.md` sections 2, 3, 5 and 6; realm-core v14.12.0
//! (`Connection::websocket_connected_handler`, `SyncSession::handle_error`,
//! `protocol_error_to_status`).

pub mod partition;
pub mod permissions;
pub mod rules;

use crate::protocol::{ErrorCode, ProtocolError, ServerMessage};

/// Prefix of partition-based sync tokens: `com.mongodb.realm-sync#<version>`.
pub const PBS_PREFIX: &str = "com.mongodb.realm-sync#";
/// Prefix of flexible sync tokens: `com.mongodb.realm-query-sync#<version>`.
pub const FLX_PREFIX: &str = "com.mongodb.realm-query-sync#";
/// Oldest Realm protocol version served: 8 (WebSocket close codes for auth, `#` tokens; the
/// JSON_ERROR actions the client obeys since 7).
pub const OLDEST_VERSION: u32 = 8;
/// Newest Realm protocol version served: 14 (realm-core 14.x). The PBS messages did not change
/// between 8 and 14 (`realm-sync.md` section 1.1).
pub const NEWEST_VERSION: u32 = 14;
/// The only flexible sync version served: 14, the one `realm-wire-compat.md` section 4
/// describes (realm-core 14.x). Older flexible sync clients are refused at negotiation.
pub const FLX_VERSION: u32 = 14;
/// The server path of an app's flexible sync data: one server file holds every object, and
/// each client gets what its subscriptions match. Partition paths are `/` and Extended JSON,
/// which `flx` is not, so the two never collide.
pub const FLX_SERVER_PATH: &str = "/flx";

/// WebSocket close code: the access token is missing, invalid or expired; the client refreshes
/// it (POST /auth/session) and reconnects (`realm-wire-compat.md` section 2.5).
pub const CLOSE_REFRESH_TOKEN: u16 = 4001;
/// WebSocket close code: a message was too big; the client resets its file.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// The offer could not be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NegotiationError {
    /// Only flexible sync tokens were offered, none of version [`FLX_VERSION`].
    FlexibleSync,
    /// No partition-based version in [`OLDEST_VERSION`, `NEWEST_VERSION`].
    NoCommonVersion,
}

impl std::fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NegotiationError::FlexibleSync => write!(
                f,
                "no flexible sync version in common: this server speaks \
                 {FLX_PREFIX}{FLX_VERSION} (realm-core 14.x)"
            ),
            NegotiationError::NoCommonVersion => write!(
                f,
                "no protocol version in common: this server speaks {PBS_PREFIX}{OLDEST_VERSION} \
                 to {PBS_PREFIX}{NEWEST_VERSION}"
            ),
        }
    }
}

/// Which sync a Realm client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Partition-based sync: BIND paths are partition values.
    Partition,
    /// Flexible sync: subscriptions ([`FLX_SERVER_PATH`]).
    Flexible,
}

/// Picks one token of the client's `Sec-WebSocket-Protocol` offer (tokens separated by commas,
/// possibly over several header lines joined with `,`): the highest partition-based version
/// served, else flexible sync version [`FLX_VERSION`]. Returns the token exactly as offered
/// (the 101 must echo one offered token, or the client crashes: `realm-client-spike.md`
/// section 6), its version and the mode.
pub fn negotiate(offer: &str) -> Result<(String, u32, Mode), NegotiationError> {
    let tokens: Vec<&str> = offer.split(',').map(str::trim).collect();
    let best = tokens
        .iter()
        .filter_map(|t| Some((*t, t.strip_prefix(PBS_PREFIX)?.parse::<u32>().ok()?)))
        .filter(|(_, v)| (OLDEST_VERSION..=NEWEST_VERSION).contains(v))
        .max_by_key(|(_, v)| *v);
    if let Some((token, version)) = best {
        return Ok((token.to_owned(), version, Mode::Partition));
    }
    let flexible = tokens.iter().find(|t| {
        t.strip_prefix(FLX_PREFIX)
            .and_then(|v| v.parse::<u32>().ok())
            == Some(FLX_VERSION)
    });
    match flexible {
        Some(token) => Ok(((*token).to_owned(), FLX_VERSION, Mode::Flexible)),
        None if tokens.iter().any(|t| t.starts_with(FLX_PREFIX)) => {
            Err(NegotiationError::FlexibleSync)
        }
        None => Err(NegotiationError::NoCommonVersion),
    }
}

/// The JSON_ERROR 231 of a compensating write (`realm-wire-compat.md` section 4.7): the six
/// keys with action `Warning` (the session goes on), `rejectedUpdates` (table, primary key as
/// realm-core's `parse_base64_encoded_primary_key` reads it, reason), `rejectedClientVersion`
/// and `compensatingWriteServerVersion`. Objects with a GlobalKey are left out of
/// `rejectedUpdates` (realm-core cannot read one there).
pub fn compensating_write(
    c: &crate::server::file::flx::Compensation,
    session: u64,
) -> ServerMessage {
    let message = match c.rejected.as_slice() {
        [(class, _, reason)] => format!("a write to {class} was reverted: {reason}"),
        many => format!("writes to {} objects were reverted", many.len()),
    };
    let ServerMessage::JsonError { code, json, .. } =
        json_error(ErrorCode::CompensatingWrite, &message, session, "Warning")
    else {
        unreachable!("json_error makes a JSON_ERROR")
    };
    let mut body: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    body["tryAgain"] = true.into();
    body["rejectedUpdates"] = c
        .rejected
        .iter()
        .filter_map(|(table, key, reason)| {
            Some(serde_json::json!({
                "table": table,
                "pk": inline_primary_key(key)?,
                "reason": reason,
            }))
        })
        .collect::<Vec<_>>()
        .into();
    body["rejectedClientVersion"] = c.client_version.into();
    body["compensatingWriteServerVersion"] = c.server_version.into();
    ServerMessage::JsonError {
        code,
        session,
        json: body.to_string(),
    }
}

/// A primary key as `rejectedUpdates[].pk`: base64 of the payload type (a varint), then the
/// value, a string inline (its length, then its bytes), as in the changeset format
/// (`realm-sync.md` section 2.2). Only Null, Int, String, ObjectId and UUID; `None` for a
/// GlobalKey.
pub fn inline_primary_key(key: &crate::state::Key) -> Option<String> {
    use crate::changeset::varint::{write_i64, write_u64};
    use crate::changeset::PayloadType;
    use crate::state::Key;
    use base64::Engine;
    let mut out = Vec::new();
    match key {
        Key::Null => write_i64(&mut out, PayloadType::Null.code()),
        Key::Int(v) => {
            write_i64(&mut out, PayloadType::Int.code());
            write_i64(&mut out, *v);
        }
        Key::String(s) => {
            write_i64(&mut out, PayloadType::String.code());
            write_u64(&mut out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Key::ObjectId(id) => {
            write_i64(&mut out, PayloadType::ObjectId.code());
            out.extend_from_slice(id);
        }
        Key::Uuid(id) => {
            write_i64(&mut out, PayloadType::Uuid.code());
            out.extend_from_slice(id);
        }
        Key::GlobalKey(..) => return None,
    }
    Some(base64::engine::general_purpose::STANDARD.encode(out))
}

/// What a Realm client is sent for an error.
#[derive(Clone, Debug, PartialEq)]
pub enum ErrorReply {
    /// A session-level JSON_ERROR; the session ends (the client answers UNBIND, which gets no
    /// UNBOUND).
    Session(ServerMessage),
    /// A connection-level ERROR (session 0), then the connection ends.
    Connection(ServerMessage),
    /// Close the WebSocket with this code and reason.
    Close(u16, String),
}

/// The `action` realm-core takes for a session error code we send (`SyncSession::handle_error`).
fn action(code: ErrorCode) -> &'static str {
    use ErrorCode::*;
    match code {
        // The server cannot continue this client file's history: reset it.
        BadClientFileIdent | BadServerVersion | BadClientVersion | DivergingHistories
        | BadClientFile | ClientFileExpired => "ClientReset",
        // Retrying cannot help until the app or the server configuration changes; the
        // session goes inactive, the user stays logged in.
        IllegalRealmPath | PermissionDenied | BadChangeset | UserMismatch | InvalidSchemaChange
        | BadQuery | ObjectAlreadyExists => "ApplicationBug",
        BadOriginFileIdent | BadProgress => "ProtocolViolation",
        _ => "Transient",
    }
}

/// The code a Realm client receives for `code`: the codes realm-core terminates on
/// (`realm-wire-compat.md` section 5.3) are replaced by a safe one.
fn safe_session_code(code: ErrorCode) -> ErrorCode {
    use ErrorCode::*;
    match code {
        NoSuchRealm => IllegalRealmPath,
        BadServerFileIdent
        | PartialSyncDisabled
        | UnsupportedSessionFeature
        | ServerFileDeleted
        | ClientFileBlacklisted
        | UserBlacklisted
        | TransactBeforeUpload
        | TooManySessions => OtherSessionError,
        other => other,
    }
}

/// A session JSON_ERROR with the six keys realm-core requires (`message`, `tryAgain`,
/// `isRecoveryModeDisabled`, `logURL`, `shouldClientReset`, `action`), plus the backoff keys
/// for transient errors (`realm-wire-compat.md` section 5.6).
pub fn json_error(code: ErrorCode, message: &str, session: u64, action: &str) -> ServerMessage {
    let transient = action == "Transient";
    let mut json = serde_json::json!({
        "message": message,
        "tryAgain": transient,
        "isRecoveryModeDisabled": false,
        "logURL": "",
        "shouldClientReset": matches!(action, "ClientReset" | "ClientResetNoRecovery"),
        "action": action,
    });
    if transient {
        json["backoffIntervalSec"] = 5.into();
        json["backoffMaxDelaySec"] = 300.into();
        json["backoffMultiplier"] = 2.into();
    }
    ServerMessage::JsonError {
        code: u64::from(code.code()),
        session,
        json: json.to_string(),
    }
}

/// What to send a Realm client for `error` on `session` (0: the connection).
pub fn reply_to_error(error: &ProtocolError, session: u64) -> ErrorReply {
    use ErrorCode::*;
    match error.code {
        LimitsExceeded => return ErrorReply::Close(CLOSE_TOO_BIG, error.message.clone()),
        TokenExpired | BadAuthentication => {
            return ErrorReply::Close(CLOSE_REFRESH_TOKEN, error.message.clone())
        }
        _ => {}
    }
    if session == 0 || error.code.is_connection_level() {
        let code = if error.code.is_connection_level() {
            error.code
        } else {
            OtherError
        };
        // tryAgain: the client reconnects with backoff (false would stop it for good).
        return ErrorReply::Connection(ServerMessage::Error {
            code: u64::from(code.code()),
            message: error.message.clone(),
            try_again: true,
            session: 0,
        });
    }
    let code = safe_session_code(error.code);
    ErrorReply::Session(json_error(code, &error.message, session, action(code)))
}

/// The answer to a client's JSON_ERROR (it failed to integrate a download, stopped uploading
/// and ignores downloads): a session JSON_ERROR that resets the client file, with the client's
/// code when it is one a client accepts, else 212 `bad_changeset` (`realm-wire-compat.md`
/// section 5.5).
pub fn answer_client_error(code: u64, session: u64) -> ServerMessage {
    let code = ErrorCode::from_code(code)
        .filter(|c| !c.is_connection_level() && safe_session_code(*c) == *c)
        .filter(|c| !matches!(c, ErrorCode::TokenExpired | ErrorCode::BadAuthentication))
        .unwrap_or(ErrorCode::BadChangeset);
    json_error(
        code,
        "the client could not integrate the server's changes; its file is reset",
        session,
        "ClientReset",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEVER: [u16; 12] = [104, 202, 203, 205, 207, 214, 215, 218, 219, 220, 221, 224];

    fn offer(prefix: &str, versions: std::ops::RangeInclusive<u32>) -> String {
        versions
            .rev()
            .map(|v| format!("{prefix}{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    #[test]
    fn rejected_primary_keys_are_inline_payloads_in_base64() {
        use crate::state::Key;
        use base64::Engine;
        let raw = |k: &Key| {
            base64::engine::general_purpose::STANDARD
                .decode(inline_primary_key(k).unwrap())
                .unwrap()
        };
        // Payload types: Null 0, Int 1, String 3, ObjectId 10, UUID 11 (realm-sync.md 2.2);
        // values in the changeset format's varint.
        assert_eq!(raw(&Key::Null), [0x00]);
        assert_eq!(raw(&Key::Int(5)), [0x01, 0x05]);
        assert_eq!(raw(&Key::Int(-1)), [0x01, 0x40]);
        assert_eq!(raw(&Key::String("ab".into())), [0x03, 0x02, b'a', b'b']);
        let mut oid = vec![0x0a];
        oid.extend([7u8; 12]);
        assert_eq!(raw(&Key::ObjectId([7; 12])), oid);
        let mut uuid = vec![0x0b];
        uuid.extend([9u8; 16]);
        assert_eq!(raw(&Key::Uuid([9; 16])), uuid);
        assert_eq!(inline_primary_key(&Key::GlobalKey(1, 2)), None);
    }

    #[test]
    fn negotiation_echoes_one_offered_token() {
        assert_eq!(
            negotiate(&offer(PBS_PREFIX, 2..=14)).unwrap(),
            ("com.mongodb.realm-sync#14".to_owned(), 14, Mode::Partition)
        );
        assert_eq!(negotiate(&offer(PBS_PREFIX, 2..=16)).unwrap().1, 14);
        assert_eq!(negotiate(&offer(PBS_PREFIX, 2..=9)).unwrap().1, 9);
        assert_eq!(
            negotiate(&offer(PBS_PREFIX, 2..=7)),
            Err(NegotiationError::NoCommonVersion)
        );
        assert_eq!(
            negotiate(&offer(FLX_PREFIX, 2..=14)).unwrap(),
            (
                "com.mongodb.realm-query-sync#14".to_owned(),
                14,
                Mode::Flexible
            )
        );
        assert_eq!(
            negotiate(&offer(FLX_PREFIX, 2..=13)),
            Err(NegotiationError::FlexibleSync)
        );
        assert_eq!(
            negotiate(&offer(FLX_PREFIX, 15..=16)),
            Err(NegotiationError::FlexibleSync)
        );
        assert_eq!(negotiate(""), Err(NegotiationError::NoCommonVersion));
        assert_eq!(
            negotiate("com.tandem.sync#1"),
            Err(NegotiationError::NoCommonVersion)
        );
    }

    #[test]
    fn no_error_code_reaches_a_realm_client_as_a_crashing_code() {
        for raw in 100..300u64 {
            let Some(code) = ErrorCode::from_code(raw) else {
                continue;
            };
            for session in [0, 7] {
                match reply_to_error(&ProtocolError::new(code, "x"), session) {
                    ErrorReply::Session(ServerMessage::JsonError {
                        code: sent, json, ..
                    }) => {
                        assert!(!NEVER.contains(&(sent as u16)), "{raw} -> {sent}");
                        assert!((200..300).contains(&sent));
                        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                        assert!(v["message"].is_string() && v["logURL"].is_string());
                        assert!(v["tryAgain"].is_boolean() && v["shouldClientReset"].is_boolean());
                        assert!(v["isRecoveryModeDisabled"].is_boolean());
                        assert!(v["action"].is_string());
                    }
                    ErrorReply::Connection(ServerMessage::Error {
                        code: sent,
                        try_again,
                        session,
                        ..
                    }) => {
                        assert!(!NEVER.contains(&(sent as u16)), "{raw} -> {sent}");
                        assert!((100..200).contains(&sent) && try_again && session == 0);
                    }
                    ErrorReply::Close(close, _) => assert!(close == 1009 || close == 4001),
                    other => panic!("{raw}: {other:?}"),
                }
            }
        }
        for raw in [0, 104, 202, 203, 212, 233, 299, 1000] {
            let ServerMessage::JsonError { code, json, .. } = answer_client_error(raw, 3) else {
                unreachable!()
            };
            assert!(!NEVER.contains(&(code as u16)) && (200..300).contains(&code));
            assert!(json.contains("\"action\":\"ClientReset\""));
        }
    }

    #[test]
    fn reset_codes_reset_and_permission_errors_do_not_log_out() {
        let action_of = |code| match reply_to_error(&ProtocolError::new(code, "x"), 1) {
            ErrorReply::Session(ServerMessage::JsonError { json, .. }) => {
                serde_json::from_str::<serde_json::Value>(&json).unwrap()["action"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
            other => panic!("{other:?}"),
        };
        for code in [208, 209, 210, 211, 217, 222] {
            assert_eq!(
                action_of(ErrorCode::from_code(code).unwrap()),
                "ClientReset"
            );
        }
        assert_eq!(action_of(ErrorCode::PermissionDenied), "ApplicationBug");
        assert_eq!(action_of(ErrorCode::InvalidSchemaChange), "ApplicationBug");
        assert_eq!(action_of(ErrorCode::OtherSessionError), "Transient");
    }
}
