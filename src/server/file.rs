//! One server file: the history of one server path, the client files bound to it, and the
//! integration of their uploads.
//!
//! Everything is kept in one SQLite file with `synchronous=FULL`: an upload is acknowledged only
//! after the changesets it produced are on stable storage. The materialized state is rebuilt
//! from the history on open and every integrated changeset is applied to it first, so a
//! changeset that does not apply is refused (error 212) before it can reach other clients.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::changeset::{Changeset, ChangesetMeta};
use crate::ot::ReciprocalHistory;
use crate::protocol::{limits, DownloadEntry, ErrorCode, ProtocolError, UploadEntry};
use crate::state::State;

/// A 64-bit random number from the operating system (ring's `SystemRandom`). If the system has
/// none to give, the server cannot allocate idents safely: that is a storage-level failure of
/// the session (error 201).
pub(super) fn random_u64() -> Result<u64, ProtocolError> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 8];
    SystemRandom::new().fill(&mut bytes).map_err(|_| {
        ProtocolError::new(
            ErrorCode::OtherSessionError,
            "the operating system has no random numbers",
        )
    })?;
    Ok(u64::from_le_bytes(bytes))
}

/// What an upload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Integrated {
    /// Server versions the upload produced (empty if everything was already integrated).
    pub versions: Vec<u64>,
    /// The last client version of the uploader now integrated.
    pub client_version: u64,
}

/// A batch of history for one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadBatch {
    /// Changesets the client has not seen, excluding its own.
    pub entries: Vec<DownloadEntry>,
    /// Download cursor after the batch: server version.
    pub download_server_version: u64,
    /// ... and the client's last version integrated by the server at that point.
    pub download_client_version: u64,
    /// The latest server version.
    pub latest_server_version: u64,
    /// Salt of the server file's history.
    pub latest_server_version_salt: u64,
    /// The client's last version the server has integrated (upload acknowledgement).
    pub upload_client_version: u64,
    /// Changeset bytes after this batch that the client has still to download.
    pub downloadable_bytes: u64,
}

/// The history of one server path.
pub struct ServerFile {
    conn: Connection,
    state: State,
    reciprocal: HashMap<u64, ReciprocalHistory>,
    salt: u64,
    latest: u64,
    /// The last STATE snapshot built: its server version and encoded changeset. Kept so that a
    /// client resuming a download by offset gets the same bytes.
    snapshot: Option<(u64, std::sync::Arc<Vec<u8>>)>,
    /// Client file idents allocated but not used by an IDENT for this long are deleted.
    client_file_expiry: std::time::Duration,
}

/// Client file idents allocated and not yet used by an IDENT, with their allocation time
/// (seconds since the Unix epoch): what [`ServerFile::allocate_client_file`] expires.
const PENDING_CLIENT_FILES: &str = "CREATE TABLE IF NOT EXISTS client_file_pending (
        ident INTEGER PRIMARY KEY,
        allocated_at INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS client_file_pending_by_age ON client_file_pending (allocated_at);";

/// Most expired client file idents deleted by one allocation (bounded work per BIND).
const EXPIRE_BATCH: i64 = 64;

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn sql_err(e: rusqlite::Error) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::OtherSessionError,
        format!("server storage failed: {e}"),
    )
}

impl ServerFile {
    /// Opens (or creates) the server file at `path` and rebuilds its state from the history.
    pub fn open(path: impl AsRef<Path>) -> Result<ServerFile, ProtocolError> {
        let conn = Connection::open(path).map_err(sql_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql_err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS history (
                 version INTEGER PRIMARY KEY,
                 changeset BLOB NOT NULL,
                 origin_file_ident INTEGER NOT NULL,
                 origin_timestamp INTEGER NOT NULL,
                 client_version INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS history_by_origin ON history (origin_file_ident, version);
             CREATE TABLE IF NOT EXISTS client_file (ident INTEGER PRIMARY KEY, salt INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS reciprocal (
                 client_file_ident INTEGER NOT NULL,
                 version INTEGER NOT NULL,
                 changeset BLOB NOT NULL,
                 PRIMARY KEY (client_file_ident, version)
             );",
        )
        .map_err(sql_err)?;
        conn.execute_batch(PENDING_CLIENT_FILES).map_err(sql_err)?;
        let salt: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'salt'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql_err)?;
        let salt = match salt {
            Some(s) => s as u64,
            None => {
                let s = random_u64()? >> 1;
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('salt', ?1)",
                    [s as i64],
                )
                .map_err(sql_err)?;
                s
            }
        };
        let mut file = ServerFile {
            conn,
            state: State::new(),
            reciprocal: HashMap::new(),
            salt,
            latest: 0,
            snapshot: None,
            client_file_expiry: super::admission::DEFAULT_CLIENT_FILE_EXPIRY,
        };
        for cs in file.history_from(0)? {
            file.state.apply(&cs).map_err(|e| {
                ProtocolError::new(
                    ErrorCode::OtherSessionError,
                    format!("stored history does not apply: {e}"),
                )
            })?;
            file.latest = cs.meta.version;
        }
        let rows: Vec<(i64, i64, Vec<u8>)> = {
            let mut stmt = file
                .conn
                .prepare("SELECT client_file_ident, version, changeset FROM reciprocal")
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(sql_err)?
                .collect::<Result<_, _>>()
                .map_err(sql_err)?;
            rows
        };
        for (client, version, bytes) in rows {
            let mut cs = Changeset::decode(&bytes).map_err(|e| {
                ProtocolError::new(
                    ErrorCode::OtherSessionError,
                    format!("stored reciprocal changeset: {e}"),
                )
            })?;
            let original = file.entry(version as u64)?;
            cs.meta = original.meta;
            file.reciprocal.entry(client as u64).or_default().set(cs);
        }
        Ok(file)
    }

    /// The latest client version the server integrated from client file `ident` (0 if none),
    /// after checking that `ident` and `salt` belong to this server file (208 otherwise).
    pub fn client_version(&self, ident: u64, salt: u64) -> Result<u64, ProtocolError> {
        self.check_ident(ident, salt, 0)?;
        self.integrated_client_version(ident, self.latest)
    }

    /// The encoded snapshot changeset that recreates the state at `version` (0: the latest).
    /// Only the latest state is materialized, so an older `version` is available only while
    /// its snapshot is the cached one; otherwise the latest is built and returned (the caller
    /// sees the version change and restarts from offset 0).
    pub fn snapshot(&mut self, version: u64) -> (u64, std::sync::Arc<Vec<u8>>) {
        if let Some((v, bytes)) = &self.snapshot {
            if *v == version || (version == 0 && *v == self.latest) {
                return (*v, std::sync::Arc::clone(bytes));
            }
        }
        let bytes = std::sync::Arc::new(crate::state::snapshot(&self.state).encode());
        self.snapshot = Some((self.latest, std::sync::Arc::clone(&bytes)));
        (self.latest, bytes)
    }

    /// Why a TRANSACT from `client` must be refused, if it must: its changeset touches an
    /// object that a changeset of another client integrated after
    /// `last_integrated_server_version` also touched, or it changes the schema. `None`: it may
    /// be integrated.
    pub fn transact_conflict(
        &self,
        client: u64,
        changeset: &[u8],
        last_integrated_server_version: u64,
    ) -> Result<Option<String>, ProtocolError> {
        if last_integrated_server_version > self.latest {
            return Err(ProtocolError::new(
                ErrorCode::BadServerVersion,
                format!(
                    "the transaction's base is server version {last_integrated_server_version}, \
                     the server has {}",
                    self.latest
                ),
            ));
        }
        let mine = Changeset::decode(changeset)
            .map_err(|e| ProtocolError::new(ErrorCode::BadChangeset, e.to_string()))?;
        if mine.instructions.iter().any(|i| i.is_schema_change()) {
            return Ok(Some("a transaction cannot change the schema".into()));
        }
        let touched = touched_objects(&mine);
        for theirs in self.history_from_except(last_integrated_server_version, client)? {
            if let Some(object) = touched_objects(&theirs).intersection(&touched).next() {
                return Ok(Some(format!(
                    "{}[{}] was changed concurrently (server version {})",
                    object.0, object.1, theirs.meta.version
                )));
            }
        }
        Ok(None)
    }

    /// The latest server version.
    pub fn latest_version(&self) -> u64 {
        self.latest
    }

    /// The salt of this file's history (a restored backup gets a new one).
    pub fn salt(&self) -> u64 {
        self.salt
    }

    /// The materialized state after the latest version.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Sets how long an allocated client file ident may go unused by an IDENT before it is
    /// deleted (default 7 days).
    pub fn set_client_file_expiry(&mut self, expiry: std::time::Duration) {
        self.client_file_expiry = expiry;
    }

    /// Records the server path this file holds (meta key `server_path`), for the admin tools:
    /// file names are a hash of the path.
    pub fn record_server_path(&self, path: &str) -> Result<(), ProtocolError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('server_path', ?1)",
                [path],
            )
            .map_err(sql_err)?;
        Ok(())
    }

    /// Allocates a new client file ident (random, 1 to 2^63 - 1, unique here) and its salt.
    ///
    /// First deletes up to 64 idents allocated more than the client file expiry ago and never
    /// used by an IDENT ([`ServerFile::check_ident`] marks them used), so a BIND flood leaves
    /// a bounded number of rows behind.
    pub fn allocate_client_file(&mut self) -> Result<(u64, u64), ProtocolError> {
        let now = unix_seconds();
        let cutoff = now.saturating_sub(self.client_file_expiry.as_secs() as i64);
        let tx = self.conn.transaction().map_err(sql_err)?;
        let expired: Vec<i64> = {
            let mut stmt = tx
                .prepare(
                    "SELECT ident FROM client_file_pending WHERE allocated_at < ?1
                     ORDER BY allocated_at LIMIT ?2",
                )
                .map_err(sql_err)?;
            let idents = stmt
                .query_map(params![cutoff, EXPIRE_BATCH], |r| r.get(0))
                .map_err(sql_err)?
                .collect::<Result<_, _>>()
                .map_err(sql_err)?;
            idents
        };
        for ident in expired {
            tx.execute("DELETE FROM client_file WHERE ident = ?1", [ident])
                .map_err(sql_err)?;
            tx.execute("DELETE FROM client_file_pending WHERE ident = ?1", [ident])
                .map_err(sql_err)?;
        }
        let allocated = loop {
            let ident = (random_u64()? >> 1).max(1);
            let salt = random_u64()? >> 1;
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO client_file (ident, salt) VALUES (?1, ?2)",
                    params![ident as i64, salt as i64],
                )
                .map_err(sql_err)?;
            if inserted == 1 {
                tx.execute(
                    "INSERT INTO client_file_pending (ident, allocated_at) VALUES (?1, ?2)",
                    params![ident as i64, now],
                )
                .map_err(sql_err)?;
                break (ident, salt);
            }
        };
        tx.commit().map_err(sql_err)?;
        Ok(allocated)
    }

    /// Client file idents known here (allocated and not expired).
    pub fn client_file_count(&self) -> Result<u64, ProtocolError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM client_file", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(sql_err)
    }

    /// Checks an IDENT: the client file must be known here with that salt (else 208), and its
    /// download cursor must not be ahead of the history (else 209).
    pub fn check_ident(
        &self,
        ident: u64,
        salt: u64,
        download_server_version: u64,
    ) -> Result<(), ProtocolError> {
        let known: Option<i64> = self
            .conn
            .query_row(
                "SELECT salt FROM client_file WHERE ident = ?1",
                [ident as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql_err)?;
        if known != Some(salt as i64) {
            return Err(ProtocolError::new(
                ErrorCode::BadClientFileIdent,
                format!("client file {ident} is not known to this server file"),
            ));
        }
        // Used: it no longer expires.
        self.conn
            .execute(
                "DELETE FROM client_file_pending WHERE ident = ?1",
                [ident as i64],
            )
            .map_err(sql_err)?;
        if download_server_version > self.latest {
            return Err(ProtocolError::new(
                ErrorCode::BadServerVersion,
                format!(
                    "the client has server version {download_server_version}, the server only {}",
                    self.latest
                ),
            ));
        }
        Ok(())
    }

    /// Whether the client's download cursor describes this server's history: at
    /// `download_server_version` the server must have integrated exactly up to the client's
    /// `download_client_version`. A server restored from an older backup that has since taken
    /// new changesets reaches the same version numbers with other contents (211).
    pub fn check_cursor(
        &self,
        ident: u64,
        download_server_version: u64,
        download_client_version: u64,
    ) -> Result<(), ProtocolError> {
        let integrated = self.integrated_client_version(ident, download_server_version)?;
        if integrated != download_client_version {
            return Err(ProtocolError::new(
                ErrorCode::DivergingHistories,
                format!(
                    "at server version {download_server_version} this server integrated client \
                     version {integrated} of this file, the client believes \
                     {download_client_version}: the server's history was restored or replaced"
                ),
            ));
        }
        Ok(())
    }

    fn row_to_changeset(
        row: &rusqlite::Row<'_>,
    ) -> rusqlite::Result<(i64, Vec<u8>, i64, i64, i64)> {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
        ))
    }

    fn decode(row: (i64, Vec<u8>, i64, i64, i64)) -> Result<Changeset, ProtocolError> {
        let (version, bytes, origin, timestamp, client_version) = row;
        let mut cs = Changeset::decode(&bytes).map_err(|e| {
            ProtocolError::new(
                ErrorCode::OtherSessionError,
                format!("stored changeset {version}: {e}"),
            )
        })?;
        cs.meta = ChangesetMeta {
            version: version as u64,
            last_integrated_remote_version: client_version as u64,
            origin_timestamp: timestamp as u64,
            origin_file_ident: origin as u64,
        };
        Ok(cs)
    }

    fn history_from(&self, after: u64) -> Result<Vec<Changeset>, ProtocolError> {
        self.history_from_except(after, 0)
    }

    /// The history after `after`, without the changesets of client file `except` (0: none).
    fn history_from_except(
        &self,
        after: u64,
        except: u64,
    ) -> Result<Vec<Changeset>, ProtocolError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT version, changeset, origin_file_ident, origin_timestamp, client_version
                 FROM history WHERE version > ?1 AND origin_file_ident != ?2 ORDER BY version",
            )
            .map_err(sql_err)?;
        let rows = stmt
            .query_map(params![after as i64, except as i64], Self::row_to_changeset)
            .map_err(sql_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err)?;
        rows.into_iter().map(Self::decode).collect()
    }

    fn entry(&self, version: u64) -> Result<Changeset, ProtocolError> {
        let row = self
            .conn
            .query_row(
                "SELECT version, changeset, origin_file_ident, origin_timestamp, client_version
                 FROM history WHERE version = ?1",
                [version as i64],
                Self::row_to_changeset,
            )
            .map_err(sql_err)?;
        Self::decode(row)
    }

    /// The last version of `client` integrated at or before server version `at`.
    fn integrated_client_version(&self, client: u64, at: u64) -> Result<u64, ProtocolError> {
        let v: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT MAX(client_version) FROM history WHERE origin_file_ident = ?1 AND version <= ?2",
            )
            .map_err(sql_err)?
            .query_row(params![client as i64, at as i64], |r| r.get(0))
            .map_err(sql_err)?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// Integrates an upload from `client`, entry by entry, and stores what it produced in one
    /// durable transaction before returning. Entries already integrated (a resend after a
    /// reconnect) are skipped. An entry that does not decode, cannot be merged or does not apply
    /// is refused (212; 225 for a schema change that conflicts with the schema; 209 for a base
    /// version from the future): the entries before it are kept
    /// (and acknowledged the next time), it and the ones after it change nothing.
    pub fn integrate_upload(
        &mut self,
        client: u64,
        entries: &[UploadEntry],
    ) -> Result<Integrated, ProtocolError> {
        let mut done = self.integrated_client_version(client, self.latest)?;
        // An upload with a dictionary key realm-core refuses integrates nothing: a realm-core
        // replica that downloaded the key would abort (crate::model::check_dictionary_key).
        // The schema follows the upload's own schema instructions from entry to entry.
        let mut schemas = std::borrow::Cow::Borrowed(&self.state.schemas);
        for entry in entries.iter().filter(|e| e.client_version > done) {
            let Ok(cs) = entry.to_changeset(client) else {
                break; // integrate_one refuses it
            };
            let changed = crate::state::checks::dictionary_keys(&schemas, &cs, &cs.instructions)
                .map_err(|(index, reason)| {
                    ProtocolError::new(
                        ErrorCode::BadChangeset,
                        format!(
                            "changeset {} instruction {index}: {reason}",
                            entry.client_version
                        ),
                    )
                })?;
            if let Some(changed) = changed {
                schemas = std::borrow::Cow::Owned(changed);
            }
        }
        let mut reciprocal = self.reciprocal.remove(&client).unwrap_or_default();
        let mut appended: Vec<Changeset> = Vec::new();
        let mut refused = None;
        for entry in entries {
            if entry.client_version <= done {
                continue;
            }
            let before = reciprocal.clone();
            match self.integrate_one(client, entry, &mut reciprocal) {
                Ok(integrated) => {
                    done = entry.client_version;
                    appended.push(integrated);
                }
                Err(e) => {
                    reciprocal = before;
                    refused = Some(e);
                    break;
                }
            }
        }
        let stored = if appended.is_empty() {
            Ok(())
        } else {
            self.store(client, &appended, &reciprocal)
        };
        self.reciprocal.insert(client, reciprocal);
        if let Err(e) = stored {
            // Memory ran ahead of the disk: start again from what is stored.
            let reopened = self.reload();
            return Err(reopened.err().unwrap_or(e));
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(Integrated {
                versions: appended.iter().map(|c| c.meta.version).collect(),
                client_version: done,
            }),
        }
    }

    /// Transforms one uploaded changeset and applies it to the materialized state (atomically).
    fn integrate_one(
        &mut self,
        client: u64,
        entry: &UploadEntry,
        reciprocal: &mut ReciprocalHistory,
    ) -> Result<Changeset, ProtocolError> {
        if entry.changeset.len() > limits::MAX_CHANGESET_SIZE {
            // What a Tandem client refuses at commit; no client could download it.
            return Err(ProtocolError::new(
                ErrorCode::LimitsExceeded,
                format!(
                    "changeset {} of {} bytes is over MAX_CHANGESET_SIZE ({} bytes)",
                    entry.client_version,
                    entry.changeset.len(),
                    limits::MAX_CHANGESET_SIZE
                ),
            ));
        }
        if entry.last_integrated_server_version > self.latest {
            return Err(ProtocolError::new(
                ErrorCode::BadServerVersion,
                format!(
                    "changeset {} claims server version {}, the server has {}",
                    entry.client_version, entry.last_integrated_server_version, self.latest
                ),
            ));
        }
        let incoming = entry
            .to_changeset(client)
            .map_err(|e| ProtocolError::new(ErrorCode::BadChangeset, e.to_string()))?;
        let base = entry.last_integrated_server_version;
        // Entries of this upload appended so far are in memory only; they are the uploader's own
        // and never concurrent with it.
        let concurrent: Vec<Changeset> = self.history_from_except(base, client)?;
        let refs: Vec<&Changeset> = concurrent.iter().collect();
        let mut batch = [incoming];
        reciprocal.integrate(&mut batch, &refs).map_err(|e| {
            let code = match e {
                crate::ot::TransformError::SchemaMismatch { .. } => ErrorCode::InvalidSchemaChange,
                _ => ErrorCode::BadChangeset,
            };
            ProtocolError::new(code, e.to_string())
        })?;
        let [mut integrated] = batch;
        self.state.apply(&integrated).map_err(|e| {
            let code = match e {
                crate::state::ApplyError::SchemaMismatch { .. } => ErrorCode::InvalidSchemaChange,
                _ => ErrorCode::BadChangeset,
            };
            ProtocolError::new(code, e.to_string())
        })?;
        reciprocal.forget_through(base);
        self.latest += 1;
        integrated.meta.version = self.latest;
        integrated.meta.last_integrated_remote_version = entry.client_version;
        Ok(integrated)
    }

    /// Writes appended changesets and the client's reciprocal forms in one transaction.
    fn store(
        &self,
        client: u64,
        appended: &[Changeset],
        reciprocal: &ReciprocalHistory,
    ) -> Result<(), ProtocolError> {
        let tx = self.conn.unchecked_transaction().map_err(sql_err)?;
        for cs in appended {
            tx.execute(
                "INSERT INTO history (version, changeset, origin_file_ident, origin_timestamp, client_version)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    cs.meta.version as i64,
                    cs.encode(),
                    client as i64,
                    cs.meta.origin_timestamp as i64,
                    cs.meta.last_integrated_remote_version as i64
                ],
            )
            .map_err(sql_err)?;
        }
        tx.execute(
            "DELETE FROM reciprocal WHERE client_file_ident = ?1",
            [client as i64],
        )
        .map_err(sql_err)?;
        for cs in reciprocal.iter() {
            tx.execute(
                "INSERT INTO reciprocal (client_file_ident, version, changeset) VALUES (?1, ?2, ?3)",
                params![client as i64, cs.meta.version as i64, cs.encode()],
            )
            .map_err(sql_err)?;
        }
        tx.commit().map_err(sql_err)
    }

    /// Rebuilds the in-memory state, version and reciprocal forms from the stored history.
    fn reload(&mut self) -> Result<(), ProtocolError> {
        let path = self
            .conn
            .path()
            .map(std::path::PathBuf::from)
            .unwrap_or_default();
        *self = ServerFile::open(path)?;
        Ok(())
    }

    /// The history after `after` that `client` has not seen (its own changesets are skipped but
    /// advance the cursor), up to `max_bytes` of DOWNLOAD body (entry headers included), and at
    /// least one entry if there is any.
    pub fn download(
        &self,
        client: u64,
        after: u64,
        max_bytes: usize,
    ) -> Result<DownloadBatch, ProtocolError> {
        // Stored changesets are already in their canonical encoding: they are served as they
        // are, never decoded, and only as many rows are read as the batch takes.
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut cursor = after;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT version, changeset, origin_file_ident, origin_timestamp, client_version
                 FROM history WHERE version > ?1 ORDER BY version",
            )
            .map_err(sql_err)?;
        let mut rows = stmt
            .query_map([after.min(i64::MAX as u64) as i64], Self::row_to_changeset)
            .map_err(sql_err)?;
        loop {
            let Some(row) = rows.next() else { break };
            let (version, changeset, origin, timestamp, _) = row.map_err(sql_err)?;
            let version = version as u64;
            if origin as u64 == client {
                cursor = version;
                continue;
            }
            let entry = DownloadEntry {
                server_version: version,
                last_integrated_client_version: self.integrated_client_version(client, version)?,
                origin_timestamp: timestamp as u64,
                origin_file_ident: origin as u64,
                original_changeset_size: changeset.len() as u64,
                changeset,
            };
            // Never past `max_bytes` of body, except for a batch of one entry.
            if !entries.is_empty() && bytes + entry.encoded_len() > max_bytes {
                break;
            }
            cursor = version;
            bytes += entry.encoded_len();
            entries.push(entry);
        }
        let downloadable_bytes: Option<i64> = self
            .conn
            .query_row(
                "SELECT SUM(length(changeset)) FROM history WHERE version > ?1 AND origin_file_ident != ?2",
                params![cursor.min(i64::MAX as u64) as i64, client as i64],
                |r| r.get(0),
            )
            .map_err(sql_err)?;
        Ok(DownloadBatch {
            downloadable_bytes: downloadable_bytes.unwrap_or(0) as u64,
            entries,
            download_server_version: cursor,
            download_client_version: self.integrated_client_version(client, cursor)?,
            latest_server_version: self.latest,
            latest_server_version_salt: self.salt,
            upload_client_version: self.integrated_client_version(client, self.latest)?,
        })
    }
}

/// The top-level objects a changeset's data instructions touch.
fn touched_objects(cs: &Changeset) -> std::collections::HashSet<(String, crate::state::Key)> {
    cs.instructions
        .iter()
        .filter_map(|i| i.object())
        .filter_map(|(table, pk)| {
            Some((
                cs.string(table)?.to_owned(),
                crate::state::Key::resolve(pk, cs)?,
            ))
        })
        .collect()
}
