//! One server file: the history of one server path, the client files bound to it, and the
//! integration of their uploads.
//!
//! Everything is kept in one SQLite file with `synchronous=FULL`: an upload is acknowledged only
//! after the changesets it produced are on stable storage. Every integrated changeset is first
//! applied to the materialized state (SQLite tables in a sibling file, [`super::state`]), so a
//! changeset that does not apply is refused (error 212) before it can reach other clients; the
//! state is committed after the history and caught up from it at open.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::changeset::{Changeset, ChangesetMeta};
use crate::ot::{FormKey, MergeReach, ReciprocalHistory};
use crate::protocol::{limits, DownloadEntry, ErrorCode, ProtocolError, UploadEntry};
use crate::state::State;

pub mod flx;
#[cfg(feature = "postgres")]
pub mod mirror;
mod tail;

use super::disk::Disk;
use super::unix_now;

/// The storage settings of a running server (`tandem-server` flags in brackets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageConfig {
    /// Bytes of the reserve file kept in the data directory and released on a full disk
    /// (`--disk-reserve`, default 32 MiB; 0: none).
    pub disk_reserve: u64,
    /// Most changesets of other clients one uploaded changeset may be merged against
    /// (`--max-merge-window`, default 10,000). An upload based further back gets 222
    /// `client_file_expired` and the client resets.
    pub max_merge_window: u64,
    /// A server file with no bound session for this long is closed (`--file-idle-close`,
    /// default 60 s).
    pub file_idle_close: Duration,
    /// History older than this is compacted and client files that have not synced since are
    /// expired (`--history-horizon`, in days on the command line; `None`, the default: never).
    pub history_horizon: Option<Duration>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            disk_reserve: super::disk::DEFAULT_RESERVE,
            max_merge_window: DEFAULT_MAX_MERGE_WINDOW,
            file_idle_close: Duration::from_secs(60),
            history_horizon: None,
        }
    }
}

/// Default [`StorageConfig::max_merge_window`].
pub const DEFAULT_MAX_MERGE_WINDOW: u64 = 10_000;

use super::state::{state_path, ServerState, StateError};

/// A 64-bit random number from the operating system (ring's `SystemRandom`). If the system has
/// none to give, the server cannot allocate idents safely: that is a storage-level failure of
/// the session (error 201).
/// A new server version's salt: random, positive as an SQLite integer, never 0 (0 in the
/// history means "the file's salt").
fn fresh_version_salt() -> Result<u64, ProtocolError> {
    Ok((random_u64()? >> 1).max(1))
}

pub(super) fn random_u64() -> Result<u64, ProtocolError> {
    use ring::rand::{SecureRandom, SystemRandom};
    if let Some(n) = crate::sim::simulated_random() {
        return Ok(n);
    }
    let mut bytes = [0u8; 8];
    SystemRandom::new().fill(&mut bytes).map_err(|_| {
        ProtocolError::new(
            ErrorCode::OtherSessionError,
            "the operating system has no random numbers",
        )
    })?;
    Ok(u64::from_le_bytes(bytes))
}

/// A failed [`random_u64`] inside a SQLite transaction: it aborts the transaction and is
/// reported like a storage failure of the session (error 201).
fn random_failed(e: ProtocolError) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(e.message.into())
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

/// A client file's sync record (`client_sync`).
struct ClientSync {
    /// Unix seconds of its last sync; 0: expired.
    last_seen: u64,
    compacted_client_version: u64,
}

/// What [`ServerFile::compact`] did.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CompactionReport {
    /// Client files expired now (not seen since the horizon): they get 222.
    pub expired_client_files: u64,
    /// The history through this server version is one snapshot changeset (0: none).
    pub compacted_through: u64,
    /// Changesets removed from the history by this compaction.
    pub removed_changesets: u64,
    /// Bytes of stored changesets before and after.
    pub history_bytes_before: u64,
    /// See `history_bytes_before`.
    pub history_bytes_after: u64,
}

/// The history of one server path.
pub struct ServerFile {
    conn: Connection,
    state: ServerState,
    reciprocal: HashMap<u64, ReciprocalHistory>,
    salt: u64,
    latest: u64,
    /// The salt of `latest` ([`ServerFile::version_salt`]).
    latest_salt: u64,
    /// The last STATE snapshot built: its server version and encoded changeset. Kept so that a
    /// client resuming a download by offset gets the same bytes.
    snapshot: Option<(u64, std::sync::Arc<Vec<u8>>)>,
    /// Client file idents allocated but not used by an IDENT for this long are deleted.
    client_file_expiry: std::time::Duration,
    /// The data directory's reserve and fault accounting (`None`: faults are only logged).
    disk: Option<Arc<Disk>>,
    /// See [`StorageConfig::max_merge_window`].
    max_merge_window: u64,
    /// A write failed and the stored history could not be read back: the memory may be ahead
    /// of the disk, so nothing is served until a reload succeeds.
    stale: bool,
    /// The history through this version was compacted into one snapshot changeset stored at
    /// this version (0: never compacted). See [`ServerFile::compact`].
    compacted: u64,
    /// Rows of the history table.
    rows: u64,
    /// Flexible sync's compiled subscription queries (`flx::FilterCache`).
    filters: flx::FilterCache,
    /// Flexible sync: which session serves each client file now (`ServerFile::flx_claim`).
    flx_claims: flx::Claims,
    /// Flexible sync copies of messages that were not sent, whose rows could not be deleted
    /// (a storage fault): client file, `at`, `seq`. Kept across reloads, left out of the
    /// reciprocal histories, and deleted at the next chance (`ServerFile::flx_keep_copies`).
    flx_unsent: Vec<(u64, u64, u32)>,
    /// The newest origin timestamp in the history, once read (flexible sync copies carry it,
    /// `ServerFile::latest_timestamp`), kept up to date as changesets are appended; a reload
    /// forgets it.
    max_timestamp: std::cell::Cell<Option<u64>>,
    /// With `--database postgres://...`: this file is a working copy of the one in PostgreSQL
    /// ([`super::postgres`]).
    #[cfg(feature = "postgres")]
    replica: Option<Arc<super::postgres::Replica>>,
    /// Statements for the PostgreSQL transaction of the next integration, staged with its
    /// mirror rows (`mirror::ServerFile::stage_mirror`).
    #[cfg(feature = "postgres")]
    mirror_extra: Vec<super::mirror::Statement>,
    /// The newest history rows, for downloads assembled without reading SQLite
    /// ([`ServerFile::download_in_memory`]).
    tail: tail::Tail,
    /// Unique to this opening of the file and changed by every compaction
    /// ([`next_generation`]): a [`DownloadPoint`] holds only within the generation it was
    /// found in.
    generation: u64,
}

/// A fresh generation ([`ServerFile::generation`]): never the same twice in a process.
fn next_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// What a session learnt from its last DOWNLOAD batch ([`ServerFile::download`],
/// [`ServerFile::flx_download`], a flexible sync bootstrap): its download cursor, the client's
/// integrated client version there (`download_client_version`) and the file's generation
/// then. Rows at or before a cursor never change within a generation (only a compaction
/// rewrites them, and it starts a new one), nor does a client file's expiry (only a compaction
/// expires one, under the same lock), so the next batch from that cursor needs neither read
/// again. Everything that makes a point checks the client's expiry first: a point of an
/// expired client is never made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DownloadPoint {
    /// Server version.
    pub cursor: u64,
    /// The client's last version integrated at or before `cursor`.
    pub client_version: u64,
    /// [`ServerFile::generation`] when it was found.
    pub generation: u64,
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

/// At most this many instructions of concurrent changesets are merged with an upload at once
/// (one changeset larger than this is merged alone): what bounds an integration's memory.
const MERGE_BATCH_INSTRUCTIONS: usize = 50_000;

/// The encoded bytes of the uploaded entries one merge takes at most
/// ([`ServerFile::integrate_run`]); a single larger entry is merged alone.
const MERGE_BATCH_BYTES: usize = 1 << 20;

/// Why [`ServerFile::integrate_run`] did not integrate a whole run.
enum RunFailure {
    /// An entry failed its checks or the merge failed: nothing was changed.
    Untouched,
    /// Applying an entry failed with `error`; the entries before it are `integrated`.
    After {
        integrated: Vec<Changeset>,
        error: ProtocolError,
    },
}

/// A working copy's link to PostgreSQL; without the `postgres` feature, a type no value has.
#[cfg(feature = "postgres")]
use super::postgres::Replica;
#[cfg(not(feature = "postgres"))]
enum Replica {}

/// A PostgreSQL failure as the protocol reports it: a storage failure of the session (201,
/// try again).
#[cfg(feature = "postgres")]
fn pg_err(e: super::postgres::PostgresError) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::OtherSessionError,
        format!("server storage failed: {e}"),
    )
}

fn sql_err(e: rusqlite::Error) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::OtherSessionError,
        format!("server storage failed: {e}"),
    )
}

/// A state failure as the protocol reports it: a changeset that does not apply is 212 (225 for
/// a schema mismatch); storage faults are reported like the history's.
fn state_err(e: StateError) -> ProtocolError {
    match e {
        StateError::Rejected(e) => {
            let code = match e {
                crate::state::ApplyError::SchemaMismatch { .. } => ErrorCode::InvalidSchemaChange,
                _ => ErrorCode::BadChangeset,
            };
            ProtocolError::new(code, e.to_string())
        }
        StateError::Storage(e) => sql_err(e),
        StateError::Corrupt(why) => ProtocolError::new(ErrorCode::OtherSessionError, why),
    }
}

/// One row of the history table as read, still encoded: version, changeset bytes, origin file
/// ident, origin timestamp, client version.
type HistoryRow = (i64, Vec<u8>, i64, i64, i64);

/// The server versions of other clients' changesets after some base version
/// ([`ServerFile::others_after`]), as ranges of consecutive versions.
#[derive(Debug, Default)]
struct Others {
    /// `(start, end)`: versions `start..end`, ascending, none empty.
    ranges: Vec<(u64, u64)>,
    /// How many versions the ranges hold.
    total: u64,
}

impl Others {
    /// Adds versions `start..end` (nothing when empty).
    fn push(&mut self, start: u64, end: u64) {
        if start < end {
            self.ranges.push((start, end));
            self.total += end - start;
        }
    }

    /// How many of the versions are after `base`.
    fn count_after(&self, base: u64) -> u64 {
        let first = self.ranges.partition_point(|&(_, end)| end <= base + 1);
        let mut count: u64 = self.ranges[first..].iter().map(|(s, e)| e - s).sum();
        if let Some(&(start, _)) = self.ranges.get(first) {
            count -= (base + 1).saturating_sub(start);
        }
        count
    }
}

impl ServerFile {
    /// Opens (or creates) the server file at `path`, and its state file, which it brings up to
    /// date with the history (replaying what the state misses).
    pub fn open(path: impl AsRef<Path>) -> Result<ServerFile, ProtocolError> {
        ServerFile::open_inner(path.as_ref(), None)
    }

    /// Creates the tables of a server file on `conn` if missing (and adds the columns of newer
    /// versions to older files).
    fn create_schema(conn: &Connection) -> Result<(), ProtocolError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS history (
                 version INTEGER PRIMARY KEY,
                 changeset BLOB NOT NULL,
                 origin_file_ident INTEGER NOT NULL,
                 origin_timestamp INTEGER NOT NULL,
                 client_version INTEGER NOT NULL,
                 salt INTEGER NOT NULL DEFAULT 0
             );
             CREATE INDEX IF NOT EXISTS history_by_origin ON history (origin_file_ident, version);
             -- A resent client changeset's row, for the check of its origin timestamp
             -- (`check_resend`): one index look-up however long the client's history.
             CREATE INDEX IF NOT EXISTS history_by_client_version
                 ON history (origin_file_ident, client_version);
             CREATE TABLE IF NOT EXISTS client_file (ident INTEGER PRIMARY KEY, salt INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS reciprocal (
                 client_file_ident INTEGER NOT NULL,
                 version INTEGER NOT NULL,
                 changeset BLOB NOT NULL,
                 PRIMARY KEY (client_file_ident, version)
             );
             -- Flexible sync: the whole copies of objects entering a client's view, sent after
             -- history version `at` (the `seq`-th there) under subscription version
             -- `query_version`, in their current (reciprocal) form; the client's uploads made
             -- before it integrated them are merged against them (server::file::flx).
             CREATE TABLE IF NOT EXISTS flx_copies (
                 client_file_ident INTEGER NOT NULL,
                 at INTEGER NOT NULL,
                 seq INTEGER NOT NULL,
                 query_version INTEGER NOT NULL,
                 origin_timestamp INTEGER NOT NULL,
                 origin_file_ident INTEGER NOT NULL,
                 client_version INTEGER NOT NULL,
                 changeset BLOB NOT NULL,
                 PRIMARY KEY (client_file_ident, at, seq)
             );
             -- Per client file: the last_integrated_server_version of its last integrated
             -- changeset (realm-core's upload threshold) and when it last synced (Unix seconds).
             -- seen_version: the download cursor of its last IDENT; last_seen 0: expired (222).
             -- compacted_client_version: its last client version integrated in compacted history.
             CREATE TABLE IF NOT EXISTS client_sync (
                 ident INTEGER PRIMARY KEY,
                 base_version INTEGER NOT NULL,
                 last_seen INTEGER NOT NULL,
                 seen_version INTEGER NOT NULL DEFAULT 0,
                 uploaded INTEGER NOT NULL DEFAULT 0,
                 compacted_client_version INTEGER NOT NULL DEFAULT 0
             );",
        )
        .map_err(sql_err)?;
        conn.execute_batch(PENDING_CLIENT_FILES).map_err(sql_err)?;
        // Files from before per-version salts: their versions keep the file's salt (0 here).
        let salted: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('history') WHERE name = 'salt'",
                [],
                |r| r.get(0),
            )
            .map_err(sql_err)?;
        if salted == 0 {
            conn.execute_batch("ALTER TABLE history ADD COLUMN salt INTEGER NOT NULL DEFAULT 0")
                .map_err(sql_err)?;
        }
        conn.execute_batch(flx::SERVER_WRITER).map_err(sql_err)?;
        Ok(())
    }

    /// The tables of a server file, as [`super::postgres`] mirrors them.
    #[cfg(feature = "postgres")]
    pub(crate) fn mirrored_tables(
    ) -> Result<super::postgres::Tables, super::postgres::PostgresError> {
        let conn = Connection::open_in_memory()
            .map_err(|e| super::postgres::PostgresError::from_message(e.to_string()))?;
        ServerFile::create_schema(&conn)
            .map_err(|e| super::postgres::PostgresError::from_message(e.message))?;
        super::postgres::Tables::read(&conn, "tandem_")
    }

    /// Opens the working copy at `path` of the server path `server_path` kept in PostgreSQL:
    /// whatever is at `path` is removed first, then the copy is filled from the database (taking
    /// the file's lock for the time it takes) and the server path recorded.
    #[cfg(feature = "postgres")]
    pub(crate) fn open_replica(
        path: &Path,
        pg: &Arc<super::postgres::Postgres>,
        server_path: &str,
        disk: Arc<Disk>,
        config: &StorageConfig,
    ) -> Result<ServerFile, ProtocolError> {
        for p in [path.to_path_buf(), state_path(path)] {
            super::postgres::remove_working_copy(&p).map_err(|e| {
                ProtocolError::new(
                    ErrorCode::OtherSessionError,
                    format!("removing an old working copy: {e}"),
                )
            })?;
        }
        let tables = ServerFile::mirrored_tables().map_err(pg_err)?;
        let replica =
            super::postgres::Replica::new(pg, server_path, Arc::new(tables)).map_err(pg_err)?;
        let mut file = ServerFile::open_inner(path, Some(Arc::new(replica)))?;
        let recorded = file.record_server_path(server_path);
        file.release();
        recorded?;
        file.disk = Some(disk);
        file.max_merge_window = config.max_merge_window;
        Ok(file)
    }

    /// Brings a working copy up to PostgreSQL under the file's lock, which it keeps until
    /// [`ServerFile::release`]; nothing without `--database`. Errors (201): the database cannot
    /// be reached or refuses (the lock is not held then), or the copy could not be reread
    /// after catching up (it is stale until a reload succeeds).
    pub(crate) fn acquire(&mut self) -> Result<(), ProtocolError> {
        #[cfg(feature = "postgres")]
        if let Some(replica) = self.replica.clone() {
            if replica.acquire(&self.conn).map_err(pg_err)? == super::postgres::CatchUp::Changed {
                self.reload_after_catch_up()?;
            }
            if let Err(e) = self.mirror_backfill() {
                // Tried again at the next acquire; the held transaction is ended (rolled back
                // if a statement failed) with the lock.
                tracing::warn!(error = %e.message, "filling the mirror tables failed");
                self.release();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Rereads what memory holds of the working copy after rows were written to it; if that
    /// fails, the file is stale (nothing is served until a reload succeeds) and the database
    /// lock is let go.
    #[cfg(feature = "postgres")]
    fn reload_after_catch_up(&mut self) -> Result<(), ProtocolError> {
        self.snapshot = None;
        if let Err(e) = self.reload() {
            self.stale = true;
            self.release();
            return Err(e);
        }
        Ok(())
    }

    /// Brings a working copy up to PostgreSQL for reading, taking the file's lock there only
    /// if it is behind what this process has heard of, and not keeping it
    /// ([`super::postgres::Replica::refresh`]); nothing without `--database`. A write made
    /// afterwards is pushed only if no other process wrote meanwhile (else refused, 201).
    pub(crate) fn refresh(&mut self) -> Result<(), ProtocolError> {
        #[cfg(feature = "postgres")]
        if let Some(replica) = self.replica.clone() {
            if replica.refresh(&self.conn).map_err(pg_err)? == super::postgres::CatchUp::Changed {
                self.reload_after_catch_up()?;
            }
        }
        Ok(())
    }

    /// Releases what [`ServerFile::acquire`] took.
    pub(crate) fn release(&mut self) {
        #[cfg(feature = "postgres")]
        if let Some(replica) = &self.replica {
            replica.release(&self.conn);
        }
    }

    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    fn open_inner(path: &Path, replica: Option<Arc<Replica>>) -> Result<ServerFile, ProtocolError> {
        let state_file = state_path(path);
        let conn = Connection::open(path).map_err(sql_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql_err)?;
        // A working copy of a file in PostgreSQL is rebuilt from it at every start: the
        // database's commit is the durable one.
        let synchronous = match replica.is_some() {
            true => "OFF",
            false => "FULL",
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(sql_err)?;
        ServerFile::create_schema(&conn)?;
        #[cfg(feature = "postgres")]
        if let Some(r) = &replica {
            r.attach(&conn).map_err(pg_err)?;
            r.acquire(&conn).map_err(pg_err)?;
        }
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
        let latest: i64 = conn
            .query_row("SELECT COALESCE(MAX(version), 0) FROM history", [], |r| {
                r.get(0)
            })
            .map_err(sql_err)?;
        let mut file = ServerFile {
            conn,
            state: ServerState::open(state_file, salt).map_err(state_err)?,
            reciprocal: HashMap::new(),
            salt,
            latest: latest as u64,
            // Read from the history just below (0: not known yet).
            latest_salt: 0,
            snapshot: None,
            client_file_expiry: super::admission::DEFAULT_CLIENT_FILE_EXPIRY,
            disk: None,
            max_merge_window: DEFAULT_MAX_MERGE_WINDOW,
            stale: false,
            compacted: 0,
            rows: 0,
            filters: flx::FilterCache::default(),
            flx_claims: flx::Claims::default(),
            flx_unsent: Vec::new(),
            max_timestamp: std::cell::Cell::new(None),
            #[cfg(feature = "postgres")]
            replica,
            #[cfg(feature = "postgres")]
            mirror_extra: Vec::new(),
            tail: tail::Tail::default(),
            generation: next_generation(),
        };
        file.latest_salt = file.version_salt(file.latest)?;
        file.compacted = file
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'compacted'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map_err(sql_err)?
            .unwrap_or(0) as u64;
        file.rows = file
            .conn
            .query_row("SELECT COUNT(*) FROM history", [], |r| r.get::<_, i64>(0))
            .map_err(sql_err)? as u64;
        file.catch_up_state()?;
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
        file.load_copies()?;
        Ok(file)
    }

    /// [`ServerFile::open`] for a running server: storage faults go to `disk` (logged, counted,
    /// the reserve released on a full disk) and uploads are bounded by `config`.
    pub fn open_with(
        path: impl AsRef<Path>,
        disk: Arc<Disk>,
        config: &StorageConfig,
    ) -> Result<ServerFile, ProtocolError> {
        let path = path.as_ref();
        if let Err(e) = disk.admit(path, "open") {
            if !path.exists() {
                return Err(e); // creating a file needs room
            }
        }
        let mut file = ServerFile::open(path).inspect_err(|e| disk.open_failed(path, e))?;
        file.disk = Some(disk);
        file.max_merge_window = config.max_merge_window;
        Ok(file)
    }

    /// Sets [`StorageConfig::max_merge_window`] (tests and tools that open files directly).
    pub fn set_max_merge_window(&mut self, changesets: u64) {
        self.max_merge_window = changesets;
    }

    /// The SQLite file's path.
    pub fn path(&self) -> PathBuf {
        self.conn.path().map(PathBuf::from).unwrap_or_default()
    }

    /// Changesets stored in the history (below [`ServerFile::latest_version`] after a
    /// compaction). Kept in memory: no query.
    pub fn history_len(&self) -> u64 {
        self.rows
    }

    /// A storage fault of `operation`: logged and counted (through the disk when there is one),
    /// the reserve released on a full disk and the WAL checkpointed; the client's error.
    fn fault(&self, operation: &str, needed: u64, e: &rusqlite::Error) -> ProtocolError {
        let error = match &self.disk {
            Some(disk) => disk.fault(&self.path(), operation, needed, e),
            None => {
                let kind = super::disk::fault_kind(e);
                tracing::error!(server_file = %self.path().display(), operation, kind,
                    needed_bytes = needed, error = %e, "storage fault");
                super::disk::transient(kind)
            }
        };
        // With the reserve gone SQLite has room to move the WAL into the database.
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        error
    }

    /// Writes may go ahead: not waiting for disk space, not stale (reloaded first).
    fn ready_to_write(&mut self, operation: &str) -> Result<(), ProtocolError> {
        if let Some(disk) = &self.disk {
            disk.admit(&self.path(), operation)?;
        }
        if self.stale {
            self.reload()?;
        }
        Ok(())
    }

    /// Reloads the file if a storage fault left its memory ahead of the disk (`stale`): the
    /// first step of a session (IDENT) and of flexible sync's downloads, so that a file a
    /// fault left stale is served again once the disk allows, not only after a write (every
    /// session of a stale file failed at IDENT and none could upload; flexible seed 9117 of
    /// the simulation, docs/testing.md). 201 while the reload fails.
    pub fn reload_if_stale(&mut self) -> Result<(), ProtocolError> {
        if self.stale {
            self.reload()?;
        }
        Ok(())
    }

    /// The memory may be ahead of the disk until a reload succeeds (201, try again).
    fn check_fresh(&self) -> Result<(), ProtocolError> {
        match self.stale {
            true => Err(super::disk::transient("reload pending")),
            false => Ok(()),
        }
    }

    /// The latest client version the server integrated from client file `ident` (0 if none),
    /// after checking that `ident` and `salt` belong to this server file (208 otherwise). An
    /// expired client file is answered too: its reset recovers what was never integrated.
    pub fn client_version(&self, ident: u64, salt: u64) -> Result<u64, ProtocolError> {
        match self.check_ident(ident, salt, None) {
            Err(e) if e.code != ErrorCode::ClientFileExpired => return Err(e),
            _ => {}
        }
        self.integrated_client_version(ident, self.latest)
    }

    /// The encoded snapshot changeset that recreates the state at `version` (0: the latest).
    /// Only the latest state is materialized, so an older `version` is available only while
    /// its snapshot is the cached one; otherwise the latest is built and returned (the caller
    /// sees the version change and restarts from offset 0).
    /// Building it reads the state file (storage faults are errors).
    pub fn snapshot(
        &mut self,
        version: u64,
    ) -> Result<(u64, std::sync::Arc<Vec<u8>>), ProtocolError> {
        if let Some((v, bytes)) = &self.snapshot {
            // 0 asks for the latest: a cached snapshot of version 0 (built while the file was
            // empty) is not it once anything was integrated.
            if *v == self.latest || (version != 0 && *v == version) {
                return Ok((*v, std::sync::Arc::clone(bytes)));
            }
        }
        self.catch_up_state()?;
        let bytes = std::sync::Arc::new(self.state.snapshot_changeset().map_err(state_err)?);
        self.snapshot = Some((self.latest, std::sync::Arc::clone(&bytes)));
        Ok((self.latest, bytes))
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
        let mut conflict = None;
        self.each_from_except(last_integrated_server_version, client, |theirs| {
            if let Some(object) = touched_objects(&theirs).intersection(&touched).next() {
                conflict = Some(format!(
                    "{}[{}] was changed concurrently (server version {})",
                    object.0, object.1, theirs.meta.version
                ));
            }
            Ok(conflict.is_none())
        })?;
        Ok(conflict)
    }

    /// The latest server version.
    pub fn latest_version(&self) -> u64 {
        self.latest
    }

    /// The salt of this file's history (a restored backup gets a new one).
    pub fn salt(&self) -> u64 {
        self.salt
    }

    /// The salt of server version `version`: each version integrated gets its own random salt
    /// (realm-core's `version_salt`, one per history entry), so that a client that saw version
    /// `v` of this history can tell it from version `v` of a history restored from an older
    /// copy that has since grown again (`realm-sync.md`, "latest_server_version_salt"). Versions
    /// stored before per-version salts, version 0, and versions compacted away have the file's
    /// salt ([`ServerFile::salt`]).
    ///
    /// # Errors
    /// A storage fault reading the history (201).
    pub fn version_salt(&self, version: u64) -> Result<u64, ProtocolError> {
        if version == self.latest && self.latest_salt != 0 && version > 0 {
            return Ok(self.latest_salt);
        }
        let stored: Option<i64> = self
            .conn
            .query_row(
                "SELECT salt FROM history WHERE version = ?1",
                [version as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql_err)?;
        Ok(match stored {
            Some(s) if s != 0 => s as u64,
            _ => self.salt,
        })
    }

    /// The materialized state after the latest version, read from the state file into memory
    /// (for tests and inspection: it holds every object).
    pub fn state(&self) -> Result<State, ProtocolError> {
        self.state.export().map_err(state_err)
    }

    /// The state the stored history replays to, built in memory from the history alone (reads
    /// every changeset; for tests and consistency checks of the state file).
    pub fn replay(&self) -> Result<State, ProtocolError> {
        let mut state = State::new();
        let mut after = 0;
        while after < self.latest {
            for cs in self.history_batch(after, 1_000)? {
                state.apply(&cs).map_err(|e| {
                    ProtocolError::new(
                        ErrorCode::OtherSessionError,
                        format!("stored history does not apply: {e}"),
                    )
                })?;
                after = cs.meta.version;
            }
        }
        Ok(state)
    }

    /// Applies the stored history the state file does not have yet (after a crash between the
    /// history's commit and the state's), in batches of 1,000 changesets each committed with
    /// its `state_version`. A state ahead of the history (an older history put back under the
    /// same salt) is rebuilt from the start. Nothing to do (no I/O) when the state is at the
    /// latest version, so callers call it unconditionally.
    fn catch_up_state(&mut self) -> Result<(), ProtocolError> {
        if self.state.version() > self.latest {
            tracing::warn!(
                state_version = self.state.version(),
                latest = self.latest,
                "state file ahead of the history: rebuilding it"
            );
            self.state.reset(self.salt).map_err(state_err)?;
        }
        if self.state.version() < self.latest {
            tracing::info!(
                state_version = self.state.version(),
                latest = self.latest,
                "state file behind the history: replaying the rest"
            );
        }
        while self.state.version() < self.latest {
            let batch = self.history_batch(self.state.version(), 1_000)?;
            if batch.is_empty() {
                return Err(ProtocolError::new(
                    ErrorCode::OtherSessionError,
                    format!(
                        "the stored history ends at version {}, before {}",
                        self.state.version(),
                        self.latest
                    ),
                ));
            }
            for cs in batch {
                self.state.apply(&cs, cs.meta.version).map_err(|e| {
                    ProtocolError::new(
                        ErrorCode::OtherSessionError,
                        format!("stored history does not apply: {e}"),
                    )
                })?;
            }
            self.state.commit().map_err(state_err)?;
        }
        Ok(())
    }

    /// Sets how long an allocated client file ident may go unused by an IDENT before it is
    /// deleted (default 7 days).
    pub fn set_client_file_expiry(&mut self, expiry: std::time::Duration) {
        self.client_file_expiry = expiry;
    }

    /// The server path recorded in the server file at `file` (meta key `server_path`), read
    /// without creating or changing anything; `None` if it is not a server file or has no record.
    pub fn stored_server_path(file: &Path) -> Option<String> {
        let conn =
            Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
        conn.query_row(
            "SELECT value FROM meta WHERE key = 'server_path'",
            [],
            |r| r.get::<_, String>(0),
        )
        .ok()
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
        self.ready_to_write("allocate_client_file")?;
        let now = unix_now() as i64;
        let cutoff = now.saturating_sub(self.client_file_expiry.as_secs() as i64);
        let allocated = (|| {
            let tx = self.conn.transaction()?;
            let expired: Vec<i64> = {
                let mut stmt = tx.prepare(
                    "SELECT ident FROM client_file_pending WHERE allocated_at < ?1
                     ORDER BY allocated_at LIMIT ?2",
                )?;
                let idents = stmt
                    .query_map(params![cutoff, EXPIRE_BATCH], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                idents
            };
            for ident in expired {
                tx.execute("DELETE FROM client_file WHERE ident = ?1", [ident])?;
                tx.execute("DELETE FROM client_file_pending WHERE ident = ?1", [ident])?;
            }
            let allocated = loop {
                let ident = (random_u64().map_err(random_failed)? >> 1).max(1);
                let salt = random_u64().map_err(random_failed)? >> 1;
                let inserted = tx.execute(
                    "INSERT OR IGNORE INTO client_file (ident, salt) VALUES (?1, ?2)",
                    params![ident as i64, salt as i64],
                )?;
                if inserted == 1 {
                    tx.execute(
                        "INSERT INTO client_file_pending (ident, allocated_at) VALUES (?1, ?2)",
                        params![ident as i64, now],
                    )?;
                    break (ident, salt);
                }
            };
            tx.commit()?;
            Ok(allocated)
        })();
        allocated.map_err(|e: rusqlite::Error| self.fault("allocate_client_file", 64, &e))
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

    /// Checks an IDENT: the client file must be known here with that salt (else 208), its
    /// download cursor (`None`: not an IDENT, a CLIENT_VERSION request) must not be ahead of the
    /// history (else 209) nor behind the file's own uploads (`ServerFile::check_not_rewound`,
    /// 210), and the client file must not have expired (222).
    pub fn check_ident(
        &self,
        ident: u64,
        salt: u64,
        cursor: Option<u64>,
    ) -> Result<(), ProtocolError> {
        self.check_fresh()?;
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
        let Some(download_server_version) = cursor else {
            return self.check_not_expired(ident, 0);
        };
        if download_server_version > self.latest {
            return Err(ProtocolError::new(
                ErrorCode::BadServerVersion,
                format!(
                    "the client has server version {download_server_version}, the server only {}",
                    self.latest
                ),
            ));
        }
        // Before the compaction check: a restored copy's old cursor is inside a history that
        // was compacted for the original's sake, and 222 would not say that its own history
        // went back (its recovery would then trust the server's count of its versions).
        self.check_not_rewound(ident, download_server_version)?;
        self.check_not_expired(ident, download_server_version)
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

    /// Whether the client file's download cursor is where a file that made this server's
    /// changesets of `ident` can be: at or after the server version the last of them was based
    /// on (`client_sync.base_version`). A file's download cursor never goes back, so a cursor
    /// before that version means the file was restored from an older copy of itself: its next
    /// changesets would reuse client versions the server already integrated (and skip as
    /// resends), and the server's forms of its later changesets would never reach it (a server
    /// sends no client its own changesets). 210 (bad_client_version, which resets the file:
    /// the client's history is what went back; 211 is kept for a server's history that did).
    fn check_not_rewound(
        &self,
        ident: u64,
        download_server_version: u64,
    ) -> Result<(), ProtocolError> {
        let base = self.base_version(ident)?;
        if download_server_version < base {
            return Err(ProtocolError::new(
                ErrorCode::BadClientVersion,
                format!(
                    "the client file has server version {download_server_version}, older than \
                     the {base} its uploaded changesets were based on: it was restored from an \
                     older copy of itself"
                ),
            ));
        }
        Ok(())
    }

    /// 210 (bad_client_version) if the last entry of an upload that this server already
    /// integrated (client version at most `done`) has another origin timestamp than the
    /// changeset integrated under that client version: the client file was restored from an
    /// older copy of itself and made new changesets under versions it had used, which would
    /// otherwise be skipped as resends and acknowledged, and lost. Only the last such entry is
    /// checked: a restored file's versions differ from the first one it made after the copy on.
    /// One look-up per upload, in the `history_by_client_version` index. A version the server
    /// no longer has (compacted) or never stored (an empty changeset) is not checked.
    fn check_resend(
        &self,
        client: u64,
        entries: &[UploadEntry],
        done: u64,
    ) -> Result<(), ProtocolError> {
        let Some(entry) = entries.iter().rev().find(|e| e.client_version <= done) else {
            return Ok(());
        };
        let stored: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT origin_timestamp FROM history
                 WHERE origin_file_ident = ?1 AND client_version = ?2 LIMIT 1",
            )
            .map_err(sql_err)?
            .query_row(
                params![
                    client as i64,
                    entry.client_version.min(i64::MAX as u64) as i64
                ],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql_err)?;
        match stored {
            Some(timestamp) if timestamp as u64 != entry.origin_timestamp => {
                Err(ProtocolError::new(
                    ErrorCode::BadClientVersion,
                    format!(
                        "client version {} was integrated here with origin timestamp {timestamp}, \
                         resent with {}: the client file was restored from an older copy of \
                         itself and reused versions it had uploaded",
                        entry.client_version, entry.origin_timestamp
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    fn row_to_changeset(row: &rusqlite::Row<'_>) -> rusqlite::Result<HistoryRow> {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
        ))
    }

    fn decode(row: HistoryRow) -> Result<Changeset, ProtocolError> {
        Self::decode_after(row, None)
    }

    /// [`decode`](Self::decode) beside `earlier` (a changeset read before it, mostly the row
    /// before it), whose string table it shares if it names the same strings, in the same
    /// order (`Changeset::decode_sharing`).
    fn decode_after(
        row: HistoryRow,
        earlier: Option<&Changeset>,
    ) -> Result<Changeset, ProtocolError> {
        let (version, bytes, origin, timestamp, client_version) = row;
        let mut cs = Changeset::decode_sharing(&bytes, earlier).map_err(|e| {
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
        let mut all = Vec::new();
        // Client file idents are 1 to 2^63 - 1 and a compaction snapshot's origin is 0: -1 (as
        // stored) excludes nothing.
        self.each_from_except(after, u64::MAX, |cs| {
            all.push(cs);
            Ok(true)
        })?;
        Ok(all)
    }

    /// At most `limit` changesets of the history after `after`.
    fn history_batch(&self, after: u64, limit: u64) -> Result<Vec<Changeset>, ProtocolError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT version, changeset, origin_file_ident, origin_timestamp, client_version
                 FROM history WHERE version > ?1 ORDER BY version LIMIT ?2",
            )
            .map_err(sql_err)?;
        let rows = stmt
            .query_map(params![after as i64, limit as i64], Self::row_to_changeset)
            .map_err(sql_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err)?;
        rows.into_iter().map(Self::decode).collect()
    }

    /// Calls `each` with the changesets after `after` whose origin is not `except`, decoded one
    /// at a time in version order, until it returns `false`: only one is in memory at once.
    fn each_from_except(
        &self,
        after: u64,
        except: u64,
        each: impl FnMut(Changeset) -> Result<bool, ProtocolError>,
    ) -> Result<(), ProtocolError> {
        let others = self.others_after(except, after, u64::MAX)?;
        self.each_of(&others, after, each)
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
    /// After a compaction the versions through the compaction point are counted from
    /// `client_sync.compacted_client_version` (`at` is never below that point then).
    ///
    /// A client's changesets are integrated in the order of their client versions (an upload
    /// skips what is at or below the last one, `integrate_upload`), so the latest of its rows
    /// at or before `at` holds the largest: one step down the `history_by_origin` index,
    /// where `MAX(client_version)` read every row of the client, on every upload and every
    /// DOWNLOAD.
    fn integrated_client_version(&self, client: u64, at: u64) -> Result<u64, ProtocolError> {
        let v: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT client_version FROM history WHERE origin_file_ident = ?1 AND version <= ?2
                 ORDER BY version DESC LIMIT 1",
            )
            .map_err(sql_err)?
            .query_row(params![client as i64, at as i64], |r| r.get(0))
            .optional()
            .map_err(sql_err)?;
        let compacted = match self.compacted > 0 && at >= self.compacted {
            true => self
                .client_sync(client)?
                .map_or(0, |c| c.compacted_client_version),
            false => 0,
        };
        Ok((v.unwrap_or(0) as u64).max(compacted))
    }

    /// The `client_sync` row of `client`, if it has one.
    fn client_sync(&self, client: u64) -> Result<Option<ClientSync>, ProtocolError> {
        self.conn
            .prepare_cached(
                "SELECT last_seen, compacted_client_version FROM client_sync WHERE ident = ?1",
            )
            .map_err(sql_err)?
            .query_row([client as i64], |r| {
                Ok(ClientSync {
                    last_seen: r.get::<_, i64>(0)? as u64,
                    compacted_client_version: r.get::<_, i64>(1)? as u64,
                })
            })
            .optional()
            .map_err(sql_err)
    }

    /// 222 if client file `client` was expired by a compaction, or if `version` (a download
    /// cursor or an upload's base) is inside the compacted history (only 0, a fresh start, and
    /// versions from the compaction point on can be served).
    fn check_not_expired(&self, client: u64, version: u64) -> Result<(), ProtocolError> {
        if self.client_sync(client)?.is_some_and(|c| c.last_seen == 0) {
            return Err(ProtocolError::new(
                ErrorCode::ClientFileExpired,
                format!("client file {client} has not synced since the history horizon: reset it"),
            ));
        }
        if version > 0 && version < self.compacted {
            return Err(ProtocolError::new(
                ErrorCode::ClientFileExpired,
                format!(
                    "server version {version} is inside the compacted history (through {}): \
                     reset the client file",
                    self.compacted
                ),
            ));
        }
        Ok(())
    }

    /// Records that client file `ident` synced now with download cursor `download_server_version`
    /// (IDENT): what compaction keeps for it. Best effort: a failure (a full disk) is logged
    /// only, as the sync itself needs no write.
    pub fn mark_seen(&self, ident: u64, download_server_version: u64) {
        let now = unix_now() as i64;
        let done = self.conn.execute(
            "INSERT INTO client_sync (ident, base_version, last_seen, seen_version) VALUES (?1, 0, ?2, ?3)
             ON CONFLICT (ident) DO UPDATE SET last_seen = ?2, seen_version = MAX(seen_version, ?3)
             WHERE last_seen != 0 AND (last_seen < ?2 - 60 OR seen_version < ?3)",
            params![ident as i64, now, download_server_version as i64],
        );
        if let Err(e) = done {
            tracing::warn!(server_file = %self.path().display(), ident, error = %e,
                "cannot record when a client file synced");
        }
    }

    /// Compacts the history as Realm's server did, to what no live client can still need:
    ///
    /// 1. Client files whose last sync (IDENT or integrated upload) is before
    ///    `horizon_unix_secs` are expired: their IDENT and UPLOAD get 222 `client_file_expired`
    ///    (the client resets) and their reciprocal histories are deleted. A client file with no
    ///    record yet (allocated before this server version) counts as seen now.
    /// 2. The compaction point H is the oldest server version a live client file may still
    ///    refer to: for one that has uploaded, the base of its last integrated changeset (later
    ///    uploads may not be based earlier: 209); otherwise the download cursor of its last
    ///    IDENT. Without live client files, H is the latest version.
    /// 3. If H is past the previous point, the history through H is replaced by one changeset
    ///    at version H (origin file 0) that creates the state at H from nothing: a fresh client
    ///    downloading from 0 gets exactly the state it would have got from the full history.
    ///    What each client file had integrated through H is kept per client file (download
    ///    cursors and upload acknowledgements stay valid). Every changeset after H is kept as
    ///    it was. A download cursor or upload base inside (0, H) gets 222.
    ///
    /// Errors: storage faults (201, try again); nothing changes unless all of it is stored.
    pub fn compact(&mut self, horizon_unix_secs: u64) -> Result<CompactionReport, ProtocolError> {
        self.ready_to_write("compact")?;
        // Whatever this commits (expiries, a rewritten history), no download is assembled from
        // what sessions learnt before it.
        self.generation = next_generation();
        self.tail.clear(self.latest);
        let bytes = |conn: &Connection| -> Result<u64, ProtocolError> {
            conn.query_row(
                "SELECT COALESCE(SUM(length(changeset)), 0) FROM history",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sql_err)
        };
        let mut report = CompactionReport {
            history_bytes_before: bytes(&self.conn)?,
            ..CompactionReport::default()
        };
        let now = unix_now() as i64;
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.fault("compact", 0, &e))?;
        let step = |tx: &rusqlite::Transaction<'_>| -> rusqlite::Result<(u64, Option<u64>)> {
            tx.execute(
                "INSERT OR IGNORE INTO client_sync (ident, base_version, last_seen)
                 SELECT ident, 0, ?1 FROM client_file",
                [now],
            )?;
            let expired = tx.execute(
                "UPDATE client_sync SET last_seen = 0 WHERE last_seen != 0 AND last_seen < ?1",
                [horizon_unix_secs.min(i64::MAX as u64) as i64],
            )?;
            tx.execute(
                "DELETE FROM reciprocal WHERE client_file_ident IN
                 (SELECT ident FROM client_sync WHERE last_seen = 0)",
                [],
            )?;
            tx.execute(
                "DELETE FROM flx_copies WHERE client_file_ident IN
                 (SELECT ident FROM client_sync WHERE last_seen = 0)",
                [],
            )?;
            let need: Option<i64> = tx.query_row(
                "SELECT MIN(CASE WHEN uploaded != 0 THEN base_version ELSE seen_version END)
                 FROM client_sync WHERE last_seen != 0",
                [],
                |r| r.get(0),
            )?;
            Ok((expired as u64, need.map(|n| n as u64)))
        };
        let (expired, need) = step(&tx).map_err(|e| self.fault("compact", 0, &e))?;
        report.expired_client_files = expired;
        let point = need.unwrap_or(self.latest).min(self.latest);
        report.compacted_through = self.compacted.max(point);
        if point <= self.compacted || point == 0 {
            tx.commit().map_err(|e| self.fault("compact", 0, &e))?;
            report.history_bytes_after = report.history_bytes_before;
            self.reload()?;
            return Ok(report);
        }
        // The state at the point, from what is stored through it.
        let mut state = State::new();
        let mut timestamp = 0;
        for cs in self
            .history_from(0)?
            .into_iter()
            .take_while(|c| c.meta.version <= point)
        {
            timestamp = cs.meta.origin_timestamp;
            state.apply(&cs).map_err(|e| {
                ProtocolError::new(
                    ErrorCode::OtherSessionError,
                    format!("stored history does not apply: {e}"),
                )
            })?;
        }
        let snapshot = crate::state::snapshot(&state).encode();
        let write = |tx: &rusqlite::Transaction<'_>| -> rusqlite::Result<u64> {
            tx.execute(
                "UPDATE client_sync SET compacted_client_version = MAX(compacted_client_version,
                     COALESCE((SELECT MAX(client_version) FROM history
                               WHERE origin_file_ident = client_sync.ident AND version <= ?1), 0))",
                [point as i64],
            )?;
            let salt: i64 = tx.query_row(
                "SELECT COALESCE((SELECT salt FROM history WHERE version = ?1), 0)",
                [point as i64],
                |r| r.get(0),
            )?;
            let removed = tx.execute("DELETE FROM history WHERE version <= ?1", [point as i64])?;
            tx.execute(
                "INSERT INTO history (version, changeset, origin_file_ident, origin_timestamp, client_version, salt)
                 VALUES (?1, ?2, 0, ?3, 0, ?4)",
                params![point as i64, snapshot, timestamp as i64, salt],
            )?;
            tx.execute("DELETE FROM reciprocal WHERE version <= ?1", [point as i64])?;
            tx.execute("DELETE FROM flx_copies WHERE at <= ?1", [point as i64])?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('compacted', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = ?1",
                [point as i64],
            )?;
            Ok(removed as u64)
        };
        let removed = write(&tx).map_err(|e| self.fault("compact", snapshot.len() as u64, &e))?;
        tx.commit()
            .map_err(|e| self.fault("compact", snapshot.len() as u64, &e))?;
        report.removed_changesets = removed.saturating_sub(1);
        // Memory follows the disk: the state is rebuilt from the compacted history.
        self.reload()?;
        // Flexible sync's record of erasures is needed only above every upload threshold.
        if let Err(e) = self.state.forget_erasures_through(point) {
            tracing::warn!(error = %e, point, "cannot forget the erasures below the compaction point");
        }
        report.history_bytes_after = bytes(&self.conn)?;
        Ok(report)
    }

    /// Integrates an upload from `client`, entry by entry in effect (consecutive entries on one
    /// base are merged together, with the same result: `docs/ot.md`, "Runs of one base"), and
    /// stores what it produced in one durable transaction before returning. Entries already integrated (a resend after a
    /// reconnect) are skipped. An entry that does not decode, cannot be merged or does not apply
    /// is refused (212; 225 for a schema change that conflicts with the schema; 209 for a base
    /// version from the future): the entries before it are kept
    /// (and acknowledged the next time), it and the ones after it change nothing.
    pub fn integrate_upload(
        &mut self,
        client: u64,
        entries: &[UploadEntry],
    ) -> Result<Integrated, ProtocolError> {
        self.ready_to_write("integrate_upload")?;
        self.check_not_expired(client, 0)?;
        self.catch_up_state()?;
        let mut done = self.integrated_client_version(client, self.latest)?;
        self.check_resend(client, entries, done)?;
        // realm-core's upload threshold: a changeset not yet integrated must not be based on an
        // older server version than the last one integrated from this client file
        // (`ServerSession::receive_upload_message`, `are_mutually_consistent`): 209.
        let mut threshold = self.base_version(client)?;
        for entry in entries.iter().filter(|e| e.client_version > done) {
            if entry.last_integrated_server_version < threshold {
                return Err(ProtocolError::new(
                    ErrorCode::BadServerVersion,
                    format!(
                        "changeset {} is based on server version {}, older than the {} of an \
                         earlier changeset of this client file",
                        entry.client_version, entry.last_integrated_server_version, threshold
                    ),
                ));
            }
            threshold = entry.last_integrated_server_version;
        }
        // An upload with a dictionary key or a link realm-core refuses integrates nothing: a
        // realm-core replica that downloaded it would abort or reset
        // (crate::state::checks::realm_core_refusals).
        // The schema follows the upload's own schema instructions from entry to entry.
        let mut schemas = std::borrow::Cow::Borrowed(self.state.schemas());
        for entry in entries.iter().filter(|e| e.client_version > done) {
            let Ok(cs) = entry.to_changeset(client) else {
                break; // integrate_one refuses it
            };
            let changed =
                crate::state::checks::realm_core_refusals(&schemas, &cs, &cs.instructions)
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
        // The changesets of other clients after the oldest base of the entries to integrate
        // (bases only grow from entry to entry, checked above), found once for the upload.
        let first_base = entries
            .iter()
            .find(|e| e.client_version > done)
            .map_or(self.latest, |e| e.last_integrated_server_version);
        let others =
            self.others_after(client, first_base, self.max_merge_window.saturating_add(1))?;
        let mut reciprocal = self.reciprocal.remove(&client).unwrap_or_default();
        let mut appended: Vec<Changeset> = Vec::new();
        let mut refused = None;
        // Reciprocal forms this upload rewrote, and the base through which forms are forgotten:
        // only these rows are written (not the whole reciprocal history).
        let mut dirty = BTreeSet::new();
        let mut forget = 0;
        // Runs of consecutive entries based on one server version are merged together
        // (`integrate_run`), at most `MERGE_BATCH_BYTES` of encoded entries a run; a run that
        // fails before anything is applied is taken one entry at a time.
        let todo: Vec<&UploadEntry> = entries.iter().filter(|e| e.client_version > done).collect();
        let mut rest = &todo[..];
        'runs: while let Some(first) = rest.first() {
            let base = first.last_integrated_server_version;
            let mut len = 1;
            let mut size = first.changeset.len();
            while let Some(next) = rest.get(len) {
                size += next.changeset.len();
                if next.last_integrated_server_version != base || size > MERGE_BATCH_BYTES {
                    break;
                }
                len += 1;
            }
            let (run, after) = rest.split_at(len);
            rest = after;
            if run.len() > 1 {
                let before = reciprocal.clone();
                match self.integrate_run(client, run, &others, &mut reciprocal, &before, &mut dirty)
                {
                    Ok(integrated) => {
                        done = run[run.len() - 1].client_version;
                        forget = forget.max(base);
                        appended.extend(integrated);
                        continue;
                    }
                    Err(RunFailure::After { integrated, error }) => {
                        if let Some(last) = integrated.last() {
                            done = last.meta.last_integrated_remote_version;
                            forget = forget.max(base);
                        }
                        appended.extend(integrated);
                        refused = Some(error);
                        break;
                    }
                    Err(RunFailure::Untouched) => reciprocal = before,
                }
            }
            for entry in run {
                let before = reciprocal.clone();
                match self.integrate_one(client, entry, &others, &mut reciprocal, &mut dirty) {
                    Ok(integrated) => {
                        done = entry.client_version;
                        forget = forget.max(entry.last_integrated_server_version);
                        appended.push(integrated);
                    }
                    Err(e) => {
                        reciprocal = before;
                        refused = Some(e);
                        break 'runs;
                    }
                }
            }
        }
        // As stored: the same rows then join the tail kept in memory.
        let rows: Vec<HistoryRow> = appended
            .iter()
            .map(|cs| {
                (
                    cs.meta.version as i64,
                    cs.encode(),
                    client as i64,
                    cs.meta.origin_timestamp as i64,
                    cs.meta.last_integrated_remote_version as i64,
                )
            })
            .collect();
        let stored = if appended.is_empty() {
            Ok(())
        } else {
            let base = forget;
            let salts = appended
                .iter()
                .map(|_| fresh_version_salt())
                .collect::<Result<Vec<u64>, _>>();
            // With --database: the mirror rows of the touched objects go into the same
            // PostgreSQL transaction as the history.
            #[cfg(feature = "postgres")]
            let salts = salts.and_then(|salts| self.stage_mirror(&appended).map(|()| salts));
            match salts {
                Ok(salts) => self
                    .store(client, &rows, &salts, &reciprocal, &dirty, base)
                    .map(|()| {
                        if let Some(last) = salts.last() {
                            self.latest_salt = *last;
                        }
                    }),
                Err(e) => {
                    self.unstage_mirror();
                    self.reciprocal.insert(client, reciprocal);
                    self.state.rollback();
                    let _ = self.reload();
                    return Err(e);
                }
            }
        };
        self.reciprocal.insert(client, reciprocal);
        if let Err(e) = stored {
            // Nothing staged for a transaction that did not commit may go with a later one
            // (a failed BEGIN fires no rollback hook).
            self.unstage_mirror();
            let needed = rows.iter().map(|row| row.1.len() as u64).sum::<u64>() * 2;
            let error = self.fault("integrate_upload", needed, &e);
            self.state.rollback();
            // Memory ran ahead of the disk: start again from what is stored, and serve nothing
            // until that works.
            if let Err(reload) = self.reload() {
                tracing::error!(server_file = %self.path().display(), error = %reload,
                    "cannot reload the server file after a storage fault; it is served again once a reload succeeds");
                self.stale = true;
            }
            return Err(error);
        }
        self.rows += appended.len() as u64;
        for row in rows {
            self.tail.push(row);
        }
        // `changesets_integrated` is counted by the session that integrated them.
        if let Some(disk) = &self.disk {
            disk.metrics()
                .history_changesets
                .inc_by(appended.len() as i64);
        }
        if let Err(e) = self.state.commit() {
            tracing::warn!(error = %e, latest = self.latest, "state commit failed");
            // The history has the changesets; the state catches up from it (now, or before
            // the next upload or snapshot if this fails too).
            let _ = self.catch_up_state();
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
        others: &Others,
        reciprocal: &mut ReciprocalHistory,
        dirty: &mut BTreeSet<FormKey>,
    ) -> Result<Changeset, ProtocolError> {
        let incoming = self.check_entry(client, entry, others, None)?;
        // Entries of this upload appended so far are in memory only; they are the uploader's own
        // and never concurrent with it.
        let mut batch = [incoming];
        self.merge_concurrent(
            entry.last_integrated_server_version,
            others,
            &mut batch,
            reciprocal,
            dirty,
        )?;
        let [integrated] = batch;
        self.apply_integrated(entry, integrated, reciprocal)
    }

    /// Consecutive entries of one upload based on one server version, so concurrent with the
    /// same changesets of other clients, integrated with one merge: the same result as
    /// [`integrate_one`](Self::integrate_one) for each in turn, without reading and merging the
    /// window once an entry (an offline backlog of 1,000 changesets against 5,000 of another
    /// client took 2.2 s entry by entry, `benches/upload.rs`).
    ///
    /// When an entry fails its checks or the merge fails, nothing is changed but `dirty`
    /// ([`RunFailure::Untouched`]; `dirty` may name forms a partial merge rewrote, and the
    /// caller puts `before` back, so they are written as they were). The caller then takes the
    /// entries one at a time, to integrate those before the faulty one and refuse it as
    /// before. When applying entry `k` fails, the entries before it are integrated and the
    /// reciprocal history is made again from `before` with them alone ([`RunFailure::After`]).
    fn integrate_run(
        &mut self,
        client: u64,
        run: &[&UploadEntry],
        others: &Others,
        reciprocal: &mut ReciprocalHistory,
        before: &ReciprocalHistory,
        dirty: &mut BTreeSet<FormKey>,
    ) -> Result<Vec<Changeset>, RunFailure> {
        let base = run[0].last_integrated_server_version;
        let mut batch = Vec::with_capacity(run.len());
        for entry in run {
            let cs = self
                .check_entry(client, entry, others, batch.last())
                .map_err(|_| RunFailure::Untouched)?;
            batch.push(cs);
        }
        self.merge_concurrent(base, others, &mut batch, reciprocal, dirty)
            .map_err(|_| RunFailure::Untouched)?;
        let mut integrated = Vec::with_capacity(run.len());
        for (k, (entry, merged)) in run.iter().zip(batch).enumerate() {
            match self.apply_integrated(entry, merged, reciprocal) {
                Ok(cs) => integrated.push(cs),
                Err(error) => {
                    // The forms record the merge of every entry of the run: made again with
                    // the entries integrated (none: as they were).
                    *reciprocal = before.clone();
                    if k == 0 {
                        return Err(RunFailure::After { integrated, error });
                    }
                    // Decoded again as the checks decoded them (and passed) a moment ago.
                    let remerged = run[..k]
                        .iter()
                        .map(|entry| self.check_entry(client, entry, others, None))
                        .collect::<Result<Vec<_>, _>>()
                        .and_then(|mut again| {
                            self.merge_concurrent(base, others, &mut again, reciprocal, dirty)
                        });
                    if let Err(e) = remerged {
                        // It merged a moment ago; should it not, the error stands for both.
                        tracing::error!(error = %e, "merging the integrated part of a run again failed");
                    }
                    reciprocal.forget_through(base);
                    return Err(RunFailure::After { integrated, error });
                }
            }
        }
        Ok(integrated)
    }

    /// The checks an uploaded entry passes before it is merged, and the entry decoded.
    fn check_entry(
        &self,
        client: u64,
        entry: &UploadEntry,
        others: &Others,
        earlier: Option<&Changeset>,
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
            .to_changeset_after(client, earlier)
            .map_err(|e| ProtocolError::new(ErrorCode::BadChangeset, e.to_string()))?;
        let base = entry.last_integrated_server_version;
        self.check_not_expired(client, base)?;
        // The work is bounded: at most `max_merge_window` changesets of other clients are
        // merged against. A client further behind resets, as Realm resets one behind the
        // compaction horizon (222).
        let window = others.count_after(base);
        if window > self.max_merge_window {
            return Err(ProtocolError::new(
                ErrorCode::ClientFileExpired,
                format!(
                    "changeset {} is based on server version {base}, {window} changesets of \
                     other clients behind; this server merges at most {}: reset the client file",
                    entry.client_version, self.max_merge_window
                ),
            ));
        }
        Ok(incoming)
    }

    /// Applies an entry's merged changeset to the materialized state (atomically) and gives it
    /// its server version.
    fn apply_integrated(
        &mut self,
        entry: &UploadEntry,
        mut integrated: Changeset,
        reciprocal: &mut ReciprocalHistory,
    ) -> Result<Changeset, ProtocolError> {
        let base = entry.last_integrated_server_version;
        self.state
            .apply(&integrated, self.latest + 1)
            .map_err(state_err)?;
        reciprocal.forget_through(base);
        self.latest += 1;
        integrated.meta.version = self.latest;
        integrated.meta.last_integrated_remote_version = entry.client_version;
        Ok(integrated)
    }

    /// Merges `incoming` (based on server version `base`) with the changesets of other clients
    /// after `base`, read one at a time: those it cannot meet in a conflict group are left out
    /// (`ReciprocalHistory::needs_merge`), the others are merged in batches of at most
    /// [`MERGE_BATCH_INSTRUCTIONS`] instructions (or one larger changeset). The versions whose
    /// reciprocal forms were recorded are added to `dirty`.
    ///
    /// So memory is bounded by one batch, not by the window: a fresh client's schema
    /// changeset, based on version 0, no longer decodes and imports the whole history of bulk
    /// inserts it has nothing in common with (issue 18, first sync by history replay).
    fn merge_concurrent(
        &self,
        base: u64,
        others: &Others,
        incoming: &mut [Changeset],
        reciprocal: &mut ReciprocalHistory,
        dirty: &mut BTreeSet<FormKey>,
    ) -> Result<(), ProtocolError> {
        let transform_err = |e: crate::ot::TransformError| {
            let code = match e {
                crate::ot::TransformError::SchemaMismatch { .. } => ErrorCode::InvalidSchemaChange,
                _ => ErrorCode::BadChangeset,
            };
            ProtocolError::new(code, e.to_string())
        };
        let mut flush = |pending: &mut Vec<(FormKey, Changeset)>,
                         incoming: &mut [Changeset],
                         reciprocal: &mut ReciprocalHistory|
         -> Result<(), ProtocolError> {
            if pending.is_empty() {
                return Ok(());
            }
            let refs: Vec<(FormKey, &Changeset)> = pending.iter().map(|(k, c)| (*k, c)).collect();
            reciprocal
                .integrate_keyed(incoming, &refs)
                .map_err(transform_err)?;
            dirty.extend(pending.iter().map(|(k, _)| *k));
            pending.clear();
            Ok(())
        };
        // Built once: after a batch is merged the upload only shrinks, so this reach stays a
        // safe (if larger) answer for the rest of the window.
        let reach = MergeReach::of(&*incoming);
        let mut pending: Vec<(FormKey, Changeset)> = Vec::new();
        let mut pending_instructions = 0;
        // Flexible sync copies sent to this client after `base` (`server::file::flx`), each
        // after the history version whose download carried it; their recorded forms are
        // cloned only for those the upload meets.
        let extras: Vec<FormKey> = reciprocal.extras_after(base).map(|(k, _)| k).collect();
        let mut extras = extras.into_iter().peekable();
        // `local` is the history's row of `key`, still encoded; `None` for an extra (its
        // recorded form). A row is decoded only when the upload can meet it: a fresh client's
        // schema changeset is checked against a bulk insert of 100,000 objects instruction by
        // instruction, never holding it decoded (issue 18, first-sync memory).
        let mut push = |key: FormKey,
                        local: Option<HistoryRow>,
                        pending: &mut Vec<(FormKey, Changeset)>,
                        incoming: &mut [Changeset],
                        reciprocal: &mut ReciprocalHistory|
         -> Result<(), ProtocolError> {
            let local = match (local, reciprocal.form(key)) {
                (Some(row), _) if reciprocal.needs_merge_encoded(&reach, key, &row.1) => {
                    Self::decode_after(row, pending.last().map(|(_, c)| c))?
                }
                (None, Some(form)) if reciprocal.needs_merge_keyed(&reach, key, form) => {
                    form.clone()
                }
                _ => return Ok(()),
            };
            if pending_instructions + local.len() > MERGE_BATCH_INSTRUCTIONS {
                flush(pending, incoming, reciprocal)?;
                pending_instructions = 0;
            }
            pending_instructions += local.len();
            pending.push((key, local));
            Ok(())
        };
        self.each_row_of(others, base, |local| {
            let version = local.0 as u64;
            while let Some(&key @ FormKey::Extra { at, .. }) = extras.peek() {
                if at >= version {
                    break;
                }
                extras.next();
                push(key, None, &mut pending, incoming, reciprocal)?;
            }
            let key = FormKey::History(version);
            push(key, Some(local), &mut pending, incoming, reciprocal)?;
            Ok(true)
        })?;
        for key in extras {
            push(key, None, &mut pending, incoming, reciprocal)?;
        }
        flush(&mut pending, incoming, reciprocal)
    }

    /// The versions after `after` of the changesets of clients other than `client`: what an
    /// upload based on `after` is merged against. The client's own rows after `after` are read
    /// from the `history_by_origin` index (version numbers only), and the others are the gaps
    /// between them, so the table is not read at all.
    ///
    /// Found once per upload: a client that uploads many changesets on one old base (it
    /// commits faster than its acknowledgements come back, or it was offline) had every one of
    /// its own rows after that base read and skipped for each of them, O(n) rows for its n-th
    /// changeset (`cargo bench --features server --bench sync`, `SYNC_BENCH_ONLY=throughput`:
    /// 69% of the CPU). The gaps stop once they hold `limit` versions or more (an upload
    /// passes one more than `max_merge_window`: its first entry is refused past that anyway).
    fn others_after(&self, client: u64, after: u64, limit: u64) -> Result<Others, ProtocolError> {
        let mut others = Others::default();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT version FROM history WHERE origin_file_ident = ?1 AND version > ?2
                 ORDER BY version",
            )
            .map_err(sql_err)?;
        let mut own = stmt
            .query(params![client.min(i64::MAX as u64) as i64, after as i64])
            .map_err(sql_err)?;
        let mut next = after + 1;
        while let Some(row) = own.next().map_err(sql_err)? {
            let version = row.get::<_, i64>(0).map_err(sql_err)? as u64;
            others.push(next, version);
            next = version + 1;
            if others.total >= limit {
                return Ok(others);
            }
        }
        others.push(next, self.latest + 1);
        Ok(others)
    }

    /// Calls `each` with the changesets of `others` after `base`, decoded one at a time in
    /// version order, until it returns `false`: only one is in memory at once.
    fn each_of(
        &self,
        others: &Others,
        base: u64,
        mut each: impl FnMut(Changeset) -> Result<bool, ProtocolError>,
    ) -> Result<(), ProtocolError> {
        self.each_row_of(others, base, |row| each(Self::decode(row)?))
    }

    /// [`each_of`](Self::each_of) with each changeset still encoded (the row as
    /// [`row_to_changeset`](Self::row_to_changeset) reads it), for callers that decode only
    /// some of them.
    fn each_row_of(
        &self,
        others: &Others,
        base: u64,
        mut each: impl FnMut(HistoryRow) -> Result<bool, ProtocolError>,
    ) -> Result<(), ProtocolError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT version, changeset, origin_file_ident, origin_timestamp, client_version
                 FROM history WHERE version >= ?1 AND version < ?2 ORDER BY version",
            )
            .map_err(sql_err)?;
        for &(start, end) in &others.ranges {
            if end <= base + 1 {
                continue;
            }
            let start = start.max(base + 1);
            let mut rows = stmt
                .query(params![start as i64, end as i64])
                .map_err(sql_err)?;
            while let Some(row) = rows.next().map_err(sql_err)? {
                if !each(Self::row_to_changeset(row).map_err(sql_err)?)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The server version the last integrated changeset of `client` was based on (0: none).
    fn base_version(&self, client: u64) -> Result<u64, ProtocolError> {
        let v: Option<i64> = self
            .conn
            .prepare_cached("SELECT base_version FROM client_sync WHERE ident = ?1")
            .map_err(sql_err)?
            .query_row([client as i64], |r| r.get(0))
            .optional()
            .map_err(sql_err)?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// Writes appended changesets, the client's changed reciprocal forms (`dirty`; forms
    /// through `forget` are deleted) and its upload threshold in one transaction.
    fn store(
        &self,
        client: u64,
        appended: &[HistoryRow],
        salts: &[u64],
        reciprocal: &ReciprocalHistory,
        dirty: &BTreeSet<FormKey>,
        forget: u64,
    ) -> rusqlite::Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        for ((version, bytes, origin, timestamp, client_version), salt) in
            appended.iter().zip(salts)
        {
            tx.execute(
                "INSERT INTO history (version, changeset, origin_file_ident, origin_timestamp, client_version, salt)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![version, bytes, origin, timestamp, client_version, *salt as i64],
            )?;
        }
        tx.execute(
            "DELETE FROM reciprocal WHERE client_file_ident = ?1 AND version <= ?2",
            params![client as i64, forget as i64],
        )?;
        tx.execute(
            "DELETE FROM flx_copies WHERE client_file_ident = ?1 AND at <= ?2",
            params![client as i64, forget as i64],
        )?;
        for &key in dirty {
            match key {
                FormKey::History(version) if version > forget => {
                    match reciprocal.get(version) {
                        Some(cs) => tx.execute(
                            "INSERT OR REPLACE INTO reciprocal (client_file_ident, version, changeset)
                             VALUES (?1, ?2, ?3)",
                            params![client as i64, version as i64, cs.encode()],
                        )?,
                        None => tx.execute(
                            "DELETE FROM reciprocal WHERE client_file_ident = ?1 AND version = ?2",
                            params![client as i64, version as i64],
                        )?,
                    };
                }
                FormKey::Extra { at, seq } if at > forget => {
                    // Only the form changes; the row's other columns stay as recorded.
                    if let Some(cs) = reciprocal.form(key) {
                        tx.execute(
                            "UPDATE flx_copies SET changeset = ?4
                             WHERE client_file_ident = ?1 AND at = ?2 AND seq = ?3",
                            params![client as i64, at as i64, seq as i64, cs.encode()],
                        )?;
                    }
                }
                _ => {}
            }
        }
        tx.execute(
            "INSERT INTO client_sync (ident, base_version, last_seen, uploaded) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT (ident) DO UPDATE SET base_version = MAX(base_version, ?2), last_seen = ?3,
                 uploaded = 1",
            params![client as i64, forget as i64, unix_now() as i64],
        )?;
        tx.commit()?;
        if let Some(known) = self.max_timestamp.get() {
            let newest = appended.iter().map(|row| row.3 as u64);
            self.max_timestamp.set(Some(newest.fold(known, u64::max)));
        }
        Ok(())
    }

    /// Drops the mirror statements staged for an integration that did not commit.
    fn unstage_mirror(&self) {
        #[cfg(feature = "postgres")]
        if let Some(r) = &self.replica {
            r.unstage();
        }
    }

    /// Reopens the file: the version and reciprocal forms are read again from what is stored,
    /// and the state file catches up with the stored history.
    fn reload(&mut self) -> Result<(), ProtocolError> {
        #[cfg(feature = "postgres")]
        let replica = self.replica.clone();
        #[cfg(not(feature = "postgres"))]
        let replica = None;
        let mut file = ServerFile::open_inner(&self.path(), replica)?;
        file.disk = self.disk.take();
        file.max_merge_window = self.max_merge_window;
        file.client_file_expiry = self.client_file_expiry;
        // Sessions stay bound across a reload: their claims too.
        file.flx_claims = std::mem::take(&mut self.flx_claims);
        file.flx_unsent = std::mem::take(&mut self.flx_unsent);
        for &(client, at, seq) in &file.flx_unsent {
            if let Some(reciprocal) = file.reciprocal.get_mut(&client) {
                reciprocal.forget_extra(at, seq);
            }
        }
        *self = file;
        Ok(())
    }

    /// The history after `after` that `client` has not seen (its own changesets are skipped but
    /// advance the cursor), up to `max_bytes` of DOWNLOAD body (entry headers included), and at
    /// least one entry if there is any.
    ///
    /// The client's integrated client version at each entry is followed along the rows read
    /// (its own rows carry it) from one lookup at `after`, instead of a lookup per entry; and
    /// when the batch reaches the latest version, nothing is left to count. A fan-out of one
    /// change to 1,000 sessions runs this 1,000 times (issue 18, goal 5), unless
    /// [`ServerFile::download_in_memory`] can answer.
    pub fn download(
        &self,
        client: u64,
        after: u64,
        max_bytes: usize,
    ) -> Result<DownloadBatch, ProtocolError> {
        self.check_fresh()?;
        self.check_not_expired(client, after)?;
        // Followed from `after` only where compaction's floor cannot start inside the walk
        // (`integrated_client_version`); a client's versions rise with the server's, so its
        // latest own row so far is its integrated version.
        let follow = after >= self.compacted;
        let integrated = self.integrated_client_version(client, after)?;
        let integrated_at = |followed: u64, version: u64| match follow {
            true => Ok(followed),
            false => self.integrated_client_version(client, version),
        };
        // Stored changesets are already in their canonical encoding: they are served as they
        // are, never decoded, and only as many rows are read as the batch takes.
        let walk = self.with_rows_after(after, |rows| {
            assemble(rows, client, after, max_bytes, integrated, integrated_at)
        })?;
        let at_latest = walk.cursor >= self.latest;
        // Cached: every session runs this for every DOWNLOAD it sends that leaves something
        // behind (a fan-out to 1,000 sessions prepared it 1,000 times).
        let downloadable_bytes: Option<i64> = match at_latest {
            true => None,
            false => self
                .conn
                .prepare_cached(
                    "SELECT SUM(length(changeset)) FROM history WHERE version > ?1 AND origin_file_ident != ?2",
                )
                .and_then(|mut s| {
                    s.query_row(
                        params![walk.cursor.min(i64::MAX as u64) as i64, client as i64],
                        |r| r.get(0),
                    )
                })
                .map_err(sql_err)?,
        };
        let download_client_version = integrated_at(walk.integrated, walk.cursor)?;
        Ok(DownloadBatch {
            downloadable_bytes: downloadable_bytes.unwrap_or(0) as u64,
            entries: walk.entries,
            download_server_version: walk.cursor,
            download_client_version,
            latest_server_version: self.latest,
            latest_server_version_salt: self.latest_salt,
            upload_client_version: match at_latest {
                true => download_client_version,
                false => self.integrated_client_version(client, self.latest)?,
            },
        })
    }

    /// Hands `read` the history rows after `after`, oldest first, as stored: from the newest
    /// rows kept in memory when they hold all of them (`tail`), else from SQLite, each row read
    /// as `read` takes it. Errors: storage faults (201), and `read`'s own.
    pub(super) fn with_rows_after<R>(
        &self,
        after: u64,
        read: impl FnOnce(
            &mut dyn Iterator<Item = Result<HistoryRow, ProtocolError>>,
        ) -> Result<R, ProtocolError>,
    ) -> Result<R, ProtocolError> {
        if let Some(kept) = self.tail.after(after, self.latest) {
            return read(&mut kept.map(|row| Ok(row.clone())));
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT version, changeset, origin_file_ident, origin_timestamp, client_version
                 FROM history WHERE version > ?1 ORDER BY version",
            )
            .map_err(sql_err)?;
        let mut rows = stmt
            .query_map([after.min(i64::MAX as u64) as i64], Self::row_to_changeset)
            .map_err(sql_err)?
            .map(|row| row.map_err(sql_err));
        read(&mut rows)
    }

    /// [`ServerFile::download`] assembled from the newest rows kept in memory, without reading
    /// SQLite, so callable on an async task: the same batch, field for field
    /// (`download_in_memory_equals_download` checks it). `known` is what the previous batch
    /// from the same cursor found ([`DownloadBatch::point`]).
    ///
    /// `None` when it cannot answer, and [`ServerFile::download`] must: `known` is from another
    /// cursor or generation, the rows after `after` are no longer (or not yet) all in memory
    /// (`tail::TAIL_MAX_BYTES`), the cursor is inside the compacted history, the file is
    /// stale, or it is a working copy of a file in PostgreSQL (which may have to catch up
    /// first).
    pub fn download_in_memory(
        &self,
        client: u64,
        after: u64,
        max_bytes: usize,
        known: DownloadPoint,
    ) -> Option<DownloadBatch> {
        if !self.point_holds(known, after) {
            return None;
        }
        let rows = self.tail.after(after, self.latest)?;
        let walk = assemble(
            rows.clone().map(|row| Ok(row.clone())),
            client,
            after,
            max_bytes,
            known.client_version,
            |followed, _| Ok(followed),
        )
        .ok()?;
        // What is left after the batch: its bytes, and the client's own rows (the upload
        // acknowledgement is its integrated version at the latest).
        let (mut downloadable_bytes, mut at_latest) = (0, walk.integrated);
        for (version, changeset, origin, _, client_version) in rows {
            if *version as u64 <= walk.cursor {
                continue;
            }
            match *origin as u64 == client {
                true => at_latest = at_latest.max(*client_version as u64),
                false => downloadable_bytes += changeset.len() as u64,
            }
        }
        Some(DownloadBatch {
            downloadable_bytes,
            entries: walk.entries,
            download_server_version: walk.cursor,
            download_client_version: walk.integrated,
            latest_server_version: self.latest,
            latest_server_version_salt: self.latest_salt,
            upload_client_version: at_latest,
        })
    }

    /// Whether what a session learnt at `known` still serves a download from `after` without
    /// reading SQLite for the client's expiry and integrated client versions: the same cursor
    /// and generation ([`DownloadPoint`]), the cursor outside the compacted history, the file
    /// not stale, and not a working copy of a file in PostgreSQL (which may have to catch up
    /// first). The rows after `after` must still be in memory too (`tail::Tail::after`).
    pub(super) fn point_holds(&self, known: DownloadPoint, after: u64) -> bool {
        #[cfg(feature = "postgres")]
        if self.replica.is_some() {
            return false;
        }
        !self.stale
            && known.generation == self.generation
            && known.cursor == after
            && after >= self.compacted
    }

    /// The file's generation: see [`DownloadPoint`].
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl DownloadBatch {
    /// What the next batch after this one may start from ([`ServerFile::download_in_memory`]),
    /// for a file of `generation` ([`ServerFile::generation`]).
    pub fn point(&self, generation: u64) -> DownloadPoint {
        DownloadPoint {
            cursor: self.download_server_version,
            client_version: self.download_client_version,
            generation,
        }
    }
}

/// A DOWNLOAD batch's walk along the history rows after its cursor.
struct Walk {
    entries: Vec<DownloadEntry>,
    /// The cursor after the batch.
    cursor: u64,
    /// The client's integrated client version, followed along its own rows.
    integrated: u64,
}

/// Walks `rows` (the history after `after`, in order) for `client`: its own rows advance the
/// cursor and its integrated version, the others become entries until `max_bytes` of body
/// (at least one entry). `integrated` is the client's integrated version at `after`;
/// `integrated_at(followed, version)` gives an entry's `last_integrated_client_version`.
fn assemble(
    rows: impl Iterator<Item = Result<HistoryRow, ProtocolError>>,
    client: u64,
    after: u64,
    max_bytes: usize,
    mut integrated: u64,
    integrated_at: impl Fn(u64, u64) -> Result<u64, ProtocolError>,
) -> Result<Walk, ProtocolError> {
    let mut entries = Vec::new();
    let mut bytes = 0;
    let mut cursor = after;
    for row in rows {
        let (version, changeset, origin, timestamp, client_version) = row?;
        let version = version as u64;
        if origin as u64 == client {
            cursor = version;
            integrated = integrated.max(client_version as u64);
            continue;
        }
        let entry = DownloadEntry {
            server_version: version,
            last_integrated_client_version: integrated_at(integrated, version)?,
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
    Ok(Walk {
        entries,
        cursor,
        integrated,
    })
}

/// The top-level objects a changeset's data instructions touch, in order (so that a refusal
/// names the same object on every run).
fn touched_objects(cs: &Changeset) -> BTreeSet<(String, crate::state::Key)> {
    cs.instructions
        .iter()
        .filter_map(|i| instruction_object(cs, i))
        .collect()
}

/// The class and key of the top-level object instruction `i` of `cs` touches (`None` for a
/// schema instruction, or a table or key `cs` does not resolve).
pub(super) fn instruction_object(
    cs: &Changeset,
    i: &crate::changeset::Instruction,
) -> Option<(String, crate::state::Key)> {
    let (table, pk) = i.object()?;
    Some((
        cs.string(table)?.to_owned(),
        crate::state::Key::resolve(pk, cs)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::Others;

    #[test]
    fn others_count_the_versions_after_each_base() {
        let mut others = Others::default();
        others.push(3, 3); // empty: not kept
        others.push(2, 4); // 2, 3
        others.push(7, 8); // 7
        others.push(10, 13); // 10, 11, 12
        assert_eq!((others.ranges.len(), others.total), (3, 6));
        for (base, after) in [
            (0, 6),
            (1, 6),
            (2, 5),
            (3, 4),
            (6, 4),
            (7, 3),
            (9, 3),
            (10, 2),
            (12, 0),
            (100, 0),
        ] {
            assert_eq!(others.count_after(base), after, "after {base}");
        }
    }
}
