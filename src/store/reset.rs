//! Replacing the local state with the server's: a first open from a STATE snapshot, and client
//! reset.
//!
//! [`Database::reset_to_snapshot`] does it in one SQLite transaction: every object is removed,
//! the snapshot (one changeset that recreates the server state at a server version) is applied,
//! the history, reciprocal forms and cursors start again from that version under the client
//! file ident the server gave, and the local changesets to recover are re-applied on top as new
//! local changesets (to be uploaded). A changeset that no longer applies is not dropped: it goes
//! to the quarantine ([`Database::quarantine`]) with the reason, until the app clears it.
//! Listeners then see the difference as ordinary notifications.

use rusqlite::params;

use super::sync::{
    put, CLIENT_FILE_IDENT, CLIENT_FILE_IDENT_SALT, DOWNLOAD_CLIENT_VERSION,
    DOWNLOAD_SERVER_VERSION, LATEST_SERVER_VERSION, LATEST_SERVER_VERSION_SALT,
    UPLOAD_CLIENT_VERSION,
};
use super::{apply, write, Database, StoreError};
use crate::changeset::Changeset;

/// Where the local file stands with the server after a reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetBase {
    /// The client file ident to use from now on (a fresh one from the server).
    pub client_file_ident: u64,
    /// Its salt.
    pub client_file_ident_salt: u64,
    /// The server version the snapshot recreates.
    pub server_version: u64,
    /// The salt of the server's history.
    pub server_version_salt: u64,
}

/// A local changeset that could not be re-applied after a client reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    /// Its id in the quarantine (for [`Database::clear_quarantine`]).
    pub id: u64,
    /// The local version it had before the reset.
    pub original_version: u64,
    /// The changeset itself.
    pub changeset: Changeset,
    /// Why it did not apply.
    pub reason: String,
}

/// What a reset did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResetOutcome {
    /// Local changesets re-applied on top of the server state (and queued for upload).
    pub recovered: usize,
    /// Local changesets that did not apply and went to the quarantine.
    pub quarantined: usize,
}

impl Database {
    /// The non-empty local changesets with a version above `client_version`, oldest first: the
    /// ones a server that integrated up to `client_version` never saw.
    pub fn local_changes_after(&self, client_version: u64) -> Result<Vec<Changeset>, StoreError> {
        let read = self.read()?;
        Ok(
            write::read_history_after(read.connection(), client_version)?
                .into_iter()
                .filter(|c| !c.is_empty())
                .collect(),
        )
    }

    /// Replaces the local state with `snapshot` at `base`, then re-applies `recover` (local
    /// changesets, oldest first) as new local changesets; all in one transaction.
    pub fn reset_to_snapshot(
        &self,
        snapshot: &Changeset,
        base: ResetBase,
        recover: Vec<Changeset>,
    ) -> Result<ResetOutcome, StoreError> {
        let outcome = self.with_writer(|conn, schemas| {
            let data_tables: Vec<String> = conn
                .prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'table'
                     AND name NOT LIKE '\\_tandem\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
                )?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for table in data_tables {
                conn.execute(&format!("DELETE FROM \"{}\"", table.replace('"', "\"\"")), [])?;
            }
            conn.execute_batch("DELETE FROM _tandem_history; DELETE FROM _tandem_reciprocal;")?;
            put(conn, CLIENT_FILE_IDENT, base.client_file_ident)?;
            put(conn, CLIENT_FILE_IDENT_SALT, base.client_file_ident_salt)?;
            put(conn, DOWNLOAD_SERVER_VERSION, base.server_version)?;
            put(conn, DOWNLOAD_CLIENT_VERSION, 0)?;
            put(conn, LATEST_SERVER_VERSION, base.server_version)?;
            put(conn, LATEST_SERVER_VERSION_SALT, base.server_version_salt)?;
            put(conn, UPLOAD_CLIENT_VERSION, 0)?;
            apply::apply(conn, schemas, snapshot)?;
            let mut outcome = ResetOutcome::default();
            for changeset in recover {
                // `apply` is atomic (a savepoint): a refused changeset changes nothing.
                match apply::apply(conn, schemas, &changeset) {
                    Ok(()) => {
                        write::append_history(
                            conn,
                            changeset,
                            base.server_version,
                            base.client_file_ident,
                        )?;
                        outcome.recovered += 1;
                    }
                    Err(apply::ApplyFailure::Rejected(why)) => {
                        conn.execute(
                            "INSERT INTO _tandem_quarantine (original_version, changeset, reason)
                             VALUES (?1, ?2, ?3)",
                            params![
                                changeset.meta.version as i64,
                                changeset.encode(),
                                why.to_string()
                            ],
                        )?;
                        outcome.quarantined += 1;
                    }
                    Err(other) => return Err(other.into()),
                }
            }
            Ok(outcome)
        })?;
        // Everything may have changed: every listener re-reads and reports the difference.
        self.notify_everything();
        Ok(outcome)
    }

    /// The local changesets a client reset could not re-apply, oldest first.
    pub fn quarantine(&self) -> Result<Vec<Quarantined>, StoreError> {
        let read = self.read()?;
        let mut stmt = read.connection().prepare(
            "SELECT id, original_version, changeset, reason FROM _tandem_quarantine ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, version, bytes, reason)| {
                let changeset = Changeset::decode(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("quarantined changeset {id}: {e}")))?;
                Ok(Quarantined {
                    id: id as u64,
                    original_version: version as u64,
                    changeset,
                    reason,
                })
            })
            .collect()
    }

    /// Removes quarantined changesets: the one with `id`, or all of them for `None`.
    pub fn clear_quarantine(&self, id: Option<u64>) -> Result<(), StoreError> {
        self.with_writer(|conn, _| {
            match id {
                Some(id) => {
                    conn.execute("DELETE FROM _tandem_quarantine WHERE id = ?1", [id as i64])?
                }
                None => conn.execute("DELETE FROM _tandem_quarantine", [])?,
            };
            Ok(())
        })
    }
}
