//! Lock files: an SQLite file next to what it guards, held in exclusive locking mode for as
//! long as a connection to it lives. SQLite's own file locks hold across processes and between
//! connections of one process, on every platform SQLite runs on, so no other locking library
//! is needed. Used by `tandem-server` for its data directory and by a sync session for its
//! client file.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

/// The result of [`hold_lock_file`].
#[derive(Debug)]
pub(crate) enum LockFile {
    /// Held until the connection is dropped.
    Held(Connection),
    /// Held by another connection, in this process or another.
    Busy,
    /// Not taken for another reason (the file cannot be made: a full disk, a read-only
    /// directory); the error says why.
    Unavailable(rusqlite::Error),
}

/// Takes the lock file at `path`, making the file if missing. Nothing is written to it:
/// `BEGIN EXCLUSIVE` takes the exclusive lock, which exclusive locking mode keeps after the
/// transaction, so that a full disk only fails to make a missing file.
pub(crate) fn hold_lock_file(path: &Path) -> LockFile {
    let held = || {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::ZERO)?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;")?;
        Ok::<_, rusqlite::Error>(conn)
    };
    match held() {
        Ok(conn) => LockFile::Held(conn),
        Err(e)
            if matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ) =>
        {
            LockFile::Busy
        }
        Err(e) => LockFile::Unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_is_held_once_until_its_connection_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let first = match hold_lock_file(&path) {
            LockFile::Held(conn) => conn,
            other => panic!("expected Held, got {other:?}"),
        };
        assert!(matches!(hold_lock_file(&path), LockFile::Busy));
        drop(first);
        assert!(matches!(hold_lock_file(&path), LockFile::Held(_)));
        let missing = dir.path().join("no such directory").join("x.lock");
        assert!(matches!(hold_lock_file(&missing), LockFile::Unavailable(_)));
    }
}
