//! Protocol error codes (realm-sync.md section 8) and the error a malformed message gives.

use std::fmt;

/// An error code of the sync protocol. 100-199 end the connection, 200-299 one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
#[allow(missing_docs)]
pub enum ErrorCode {
    ConnectionClosed = 100,
    OtherError = 101,
    UnknownMessage = 102,
    BadSyntax = 103,
    LimitsExceeded = 104,
    WrongProtocolVersion = 105,
    BadSessionIdent = 106,
    ReuseOfSessionIdent = 107,
    BoundInOtherSession = 108,
    BadMessageOrder = 109,
    BadDecompression = 110,
    BadChangesetHeaderSyntax = 111,
    BadChangesetSize = 112,
    SwitchToFlxSync = 113,
    SwitchToPbs = 114,
    SessionClosed = 200,
    OtherSessionError = 201,
    TokenExpired = 202,
    BadAuthentication = 203,
    IllegalRealmPath = 204,
    NoSuchRealm = 205,
    PermissionDenied = 206,
    BadServerFileIdent = 207,
    BadClientFileIdent = 208,
    BadServerVersion = 209,
    BadClientVersion = 210,
    DivergingHistories = 211,
    BadChangeset = 212,
    PartialSyncDisabled = 214,
    UnsupportedSessionFeature = 215,
    BadOriginFileIdent = 216,
    BadClientFile = 217,
    ServerFileDeleted = 218,
    ClientFileBlacklisted = 219,
    UserBlacklisted = 220,
    TransactBeforeUpload = 221,
    ClientFileExpired = 222,
    UserMismatch = 223,
    TooManySessions = 224,
    InvalidSchemaChange = 225,
    BadQuery = 226,
    ObjectAlreadyExists = 227,
    ServerPermissionsChanged = 228,
    InitialSyncNotCompleted = 229,
    WriteNotAllowed = 230,
    CompensatingWrite = 231,
    MigrateToFlx = 232,
    BadProgress = 233,
    RevertToPbs = 234,
    BadSchemaVersion = 235,
    SchemaVersionChanged = 236,
}

impl ErrorCode {
    const ALL: [ErrorCode; 51] = {
        use ErrorCode::*;
        [
            ConnectionClosed,
            OtherError,
            UnknownMessage,
            BadSyntax,
            LimitsExceeded,
            WrongProtocolVersion,
            BadSessionIdent,
            ReuseOfSessionIdent,
            BoundInOtherSession,
            BadMessageOrder,
            BadDecompression,
            BadChangesetHeaderSyntax,
            BadChangesetSize,
            SwitchToFlxSync,
            SwitchToPbs,
            SessionClosed,
            OtherSessionError,
            TokenExpired,
            BadAuthentication,
            IllegalRealmPath,
            NoSuchRealm,
            PermissionDenied,
            BadServerFileIdent,
            BadClientFileIdent,
            BadServerVersion,
            BadClientVersion,
            DivergingHistories,
            BadChangeset,
            PartialSyncDisabled,
            UnsupportedSessionFeature,
            BadOriginFileIdent,
            BadClientFile,
            ServerFileDeleted,
            ClientFileBlacklisted,
            UserBlacklisted,
            TransactBeforeUpload,
            ClientFileExpired,
            UserMismatch,
            TooManySessions,
            InvalidSchemaChange,
            BadQuery,
            ObjectAlreadyExists,
            ServerPermissionsChanged,
            InitialSyncNotCompleted,
            WriteNotAllowed,
            CompensatingWrite,
            MigrateToFlx,
            BadProgress,
            RevertToPbs,
            BadSchemaVersion,
            SchemaVersionChanged,
        ]
    };

    /// The numeric code.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The code with this number, if it is one.
    pub fn from_code(code: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|c| u64::from(c.code()) == code)
    }

    /// Whether the error ends the whole connection (100-199) rather than one session.
    pub fn is_connection_level(self) -> bool {
        self.code() < 200
    }

    /// The ERROR message's `try_again` flag the server sends with this code: whether the client
    /// should reconnect (with its backoff) and retry, rather than stop for good. True for the
    /// transient conditions: the connection closed (100), another error (101; storage faults
    /// and clock skew), an expired token (202: the client refreshes and retries) and another
    /// session error (201; storage faults). Every other code says the client itself is at
    /// fault or must reset, so retrying unchanged would fail again.
    pub fn try_again(self) -> bool {
        use ErrorCode::*;
        matches!(
            self,
            ConnectionClosed | OtherError | TokenExpired | OtherSessionError
        )
    }

    /// Whether the client must reset its file (discard or recover local state) to go on.
    pub fn requires_client_reset(self) -> bool {
        use ErrorCode::*;
        matches!(
            self,
            BadClientFileIdent
                | BadServerVersion
                | BadClientVersion
                | DivergingHistories
                | BadClientFile
                | ClientFileExpired
        )
    }
}

/// A message that could not be parsed: the protocol error code to answer with, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    /// The code to send back in ERROR.
    pub code: ErrorCode,
    /// What was wrong, for the log and the ERROR message.
    pub message: String,
}

impl ProtocolError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "protocol error {} ({:?}): {}",
            self.code.code(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ProtocolError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_codes_ask_the_client_to_try_again() {
        let retried: Vec<u16> = ErrorCode::ALL
            .into_iter()
            .filter(|c| c.try_again())
            .map(ErrorCode::code)
            .collect();
        assert_eq!(retried, [100, 101, 201, 202]);
        // A code that makes the client reset is never "try again unchanged".
        assert!(ErrorCode::ALL
            .into_iter()
            .all(|c| !(c.try_again() && c.requires_client_reset())));
    }
}
