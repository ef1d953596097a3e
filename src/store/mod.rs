//! The local object store: one SQLite file per database (WAL), holding the objects, the
//! schema and the client history.
//!
//! - [`Database::open`] creates or opens the file, checks its format version, and migrates it
//!   to the app's schema when that only adds classes or properties (recording the AddTable /
//!   AddColumn instructions as a changeset in the history). Anything destructive is refused.
//! - [`Database::begin_write`] gives the one [`WriteTransaction`] (a second writer waits, then
//!   times out). Every operation is an instruction applied through the same code that applies
//!   remote changesets; [`WriteTransaction::commit`] writes the state and the changeset to the
//!   history in one SQLite transaction.
//! - [`Database::apply_remote`] applies a changeset that OT produced, with exactly the
//!   semantics of the in-memory reference applier ([`crate::state`]).
//!
//! Durability: WAL with `synchronous=NORMAL` by default, so a committed transaction survives any
//! crash of the app (the OS still has it); [`Durability::Full`] (`synchronous=FULL`) also
//! survives power loss, at the cost of an fsync per commit.

mod apply;
mod checkpoint;
mod codec;
mod compare;
mod deep;
mod history;
pub(crate) mod layout;
#[cfg(any(feature = "client", feature = "server"))]
pub(crate) mod lock;
mod notify;
mod query;
mod read;
mod recover;
mod reset;
mod rollback;
mod schema;
mod subscriptions;
mod sync;
#[cfg(test)]
pub(crate) mod test_support;
mod write;

/// The SQLite layout and its applier for a connection another module owns (the server's
/// materialized state, `crate::server::state`): the same tables, rules and errors as a
/// [`Database`], without its writer gate, client history or listeners.
#[cfg_attr(not(feature = "server"), allow(unused_imports))]
pub(crate) mod tables {
    pub(crate) use super::apply::{apply, ApplyFailure};
    #[cfg(feature = "server")]
    pub(crate) use super::codec::encode_key;
    #[cfg(feature = "server")]
    pub(crate) use super::compare::register as register_functions;
    pub(crate) use super::layout::{init, load};
    #[cfg(feature = "server")]
    pub(crate) use super::layout::{key_matches, object_table, row_id};
    #[cfg(feature = "server")]
    pub(crate) use super::query::{compile, Unsubscribable};
    pub(crate) use super::read::{export, for_each_object};
    #[cfg(feature = "server")]
    pub(crate) use super::read::{for_each_match, read_object};
}

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use deep::MAX_DEPTH as MAX_LINK_DEPTH;
#[cfg(feature = "server")]
pub(crate) use history::changeset_timestamp;
pub use layout::FORMAT_VERSION;
pub use notify::{ListenerToken, ObjectChange, ResultsChange};
#[cfg(feature = "client")]
pub(crate) use notify::{SyncHeld, SyncHold};
pub use query::QueryError;
pub use read::ReadTransaction;
pub use reset::{
    Acknowledged, Quarantined, QuarantinedInstruction, ResetBase, ResetOutcome, ResetRecovery,
    SnapshotRollback, MAX_INHERITED_IDENTS,
};
pub use subscriptions::{
    MutableSubscriptionSet, Subscription, SubscriptionSet, SubscriptionSetState,
};
#[cfg(feature = "client")]
pub(crate) use sync::Incoming;
pub use sync::{DownloadCursors, PendingTransact, SyncProgress};
pub use write::{CreateRowsError, PathStep, PropertyPath, WriteTransaction};

use crate::changeset::{Changeset, ChangesetMeta};
use crate::model::{ObjectId, PrimaryKey, Schema, Uuid};
use crate::state::{ApplyError, Key, Schemas, State};

/// How hard a commit works to survive failures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL` in WAL: survives any crash of the app; the last commits can be lost
    /// if the machine loses power.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is on stable storage before it returns.
    Full,
}

/// Options for [`Database::open`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Commit durability.
    pub durability: Durability,
    /// How long [`Database::begin_write`] waits for another writer before failing.
    pub writer_timeout: Duration,
    /// The file ident recorded as the origin of local changesets (0 until sync assigns one).
    pub file_ident: u64,
    /// How many local changesets the history keeps after the server has integrated them and no
    /// rebase can need them any more (newest first). Older ones are trimmed, as realm-core trims
    /// its client history; the ones kept let a client reset in Recover mode re-apply changes a
    /// server restored from an older backup has lost. 0 keeps only what sync needs (realm-core's
    /// behaviour). Default [`DEFAULT_RECOVERY_WINDOW`].
    pub recovery_window: u64,
    /// Whether the file is this process's alone while it is open (default `false`).
    ///
    /// `true` opens every connection through SQLite's `unix-excl` VFS
    /// (<https://sqlite.org/vfs.html>): the process takes a lock on the file the first time it
    /// reads and keeps it until its last connection closes, and its connections share the WAL
    /// index in memory instead of through the `-shm` file. Beginning and ending a transaction
    /// then takes no file lock (`fcntl`) at all: a primary-key lookup in its own read
    /// transaction takes about two thirds of the time, a one-object commit about three
    /// quarters (`docs/performance.md`, "One process").
    ///
    /// The cost: while the file is open here, any other process (another Tandem, the `sqlite3`
    /// shell, a backup tool) that reads or writes it gets [`StoreErrorKind::Busy`] (an open
    /// waits [`Config::writer_timeout`] for the lock first); and opening the file exclusively
    /// while any other process has it open fails the same way (SQLite keeps a lock on a WAL
    /// file for as long as a connection has it open). The holder's own connections (readers,
    /// the notifier, the checkpointer, other databases it opens on the file the same way) are
    /// unaffected. Opening the file with the other setting while a database of this process
    /// has it open is [`StoreError::InvalidArgument`]: a file open shared here cannot become
    /// exclusive (SQLite would go on using the `-shm` file and its locks, the flag silently
    /// ignored), and a shared open beside an exclusive one would silently be exclusive too. The file stays an ordinary SQLite file, and a crash
    /// loses nothing either way: the WAL index is rebuilt from the WAL at the next open.
    ///
    /// On platforms without the `unix-excl` VFS (Windows) the flag has no effect at all: the
    /// file stays shared, and opens with either setting are the same.
    pub exclusive_to_process: bool,
}

impl Config {
    /// Whether [`Config::exclusive_to_process`] takes effect here: it asks for it and the
    /// platform has SQLite's `unix-excl` VFS.
    pub(crate) fn exclusive_in_effect(&self) -> bool {
        self.exclusive_to_process && cfg!(unix)
    }
}

/// Default [`Config::recovery_window`]: 1,000 changesets (about 110 KB for small writes).
pub const DEFAULT_RECOVERY_WINDOW: u64 = 1_000;

impl Default for Config {
    fn default() -> Self {
        Config {
            durability: Durability::Normal,
            writer_timeout: Duration::from_secs(10),
            file_ident: 0,
            recovery_window: DEFAULT_RECOVERY_WINDOW,
            exclusive_to_process: false,
        }
    }
}

/// Everything the store can fail with.
#[derive(Debug)]
pub enum StoreError {
    /// SQLite failed (I/O, disk full, locked beyond the busy timeout, ...).
    Sqlite(rusqlite::Error),
    /// The file was written by a newer version of Tandem.
    FormatTooNew {
        /// The file's format version.
        found: i64,
        /// The newest this build reads.
        supported: i64,
    },
    /// The app's schema changes the file's schema in a way that would lose data.
    DestructiveSchemaChange {
        /// The class.
        class: String,
        /// The property, if the change is about one.
        property: Option<String>,
        /// What changed.
        reason: String,
    },
    /// The file's contents do not make sense (edited by hand, or a bug).
    Corrupt(String),
    /// Another write transaction did not finish within the writer timeout.
    WriterTimeout(Duration),
    /// A changeset (local or remote) does not apply: it is refused and nothing changes.
    Rejected(ApplyError),
    /// A value or name the operation cannot take (wrong type, unknown class or property, ...).
    InvalidArgument(String),
    /// A query that does not parse or does not fit its class.
    Query(QueryError),
    /// The transaction could never reach the server: it is over one of the sync size limits
    /// ([`crate::protocol::limits`]) and was refused at commit; nothing was written.
    TooLarge {
        /// Which limit.
        limit: SizeLimit,
        /// The size found, in bytes.
        size: u64,
        /// The limit, in bytes.
        max: u64,
    },
}

/// A size limit that decides whether a committed change can reach the server
/// ([`crate::protocol::limits`], the same numbers the client and the server use).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SizeLimit {
    /// One string or binary value (or a name): [`MAX_VALUE_SIZE`](crate::protocol::limits::MAX_VALUE_SIZE),
    /// realm-core's largest string.
    Value,
    /// The transaction's encoded changeset:
    /// [`MAX_CHANGESET_SIZE`](crate::protocol::limits::MAX_CHANGESET_SIZE). With its entry header it
    /// always fits one message body ([`MAX_BODY_SIZE`](crate::protocol::limits::MAX_BODY_SIZE)),
    /// before and after compression, so this check also enforces the body limit.
    Changeset,
}

impl SizeLimit {
    /// The constant's name in [`crate::protocol::limits`].
    pub fn name(self) -> &'static str {
        match self {
            SizeLimit::Value => "MAX_VALUE_SIZE",
            SizeLimit::Changeset => "MAX_CHANGESET_SIZE",
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Sqlite(e) => write!(f, "SQLite error: {e}"),
            StoreError::FormatTooNew { found, supported } => write!(
                f,
                "the file has format version {found}, newer than this build reads ({supported}); \
                 open it with a newer Tandem"
            ),
            StoreError::DestructiveSchemaChange {
                class,
                property,
                reason,
            } => match property {
                Some(p) => write!(f, "schema change to {class}.{p} refused: {reason}"),
                None => write!(f, "schema change to {class} refused: {reason}"),
            },
            StoreError::Corrupt(what) => write!(f, "the database file is inconsistent: {what}"),
            StoreError::WriterTimeout(d) => {
                write!(f, "another write transaction is still open after {d:?}")
            }
            StoreError::Rejected(e) => write!(f, "{e}"),
            StoreError::InvalidArgument(why) => f.write_str(why),
            StoreError::Query(e) => write!(f, "{e}"),
            StoreError::TooLarge { limit, size, max } => {
                let (what, fix) = match limit {
                    SizeLimit::Value => (
                        "a string or binary value",
                        "store large payloads outside the database and keep a reference",
                    ),
                    SizeLimit::Changeset => (
                        "the transaction's changeset",
                        "split the work into several smaller transactions",
                    ),
                };
                write!(
                    f,
                    "transaction refused: {what} of {size} bytes is over the sync limit {} of \
                     {max} bytes, so it could never be uploaded; {fix}",
                    limit.name()
                )
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Sqlite(e) => Some(e),
            StoreError::Rejected(e) => Some(e),
            StoreError::Query(e) => Some(e),
            _ => None,
        }
    }
}

/// What kind of failure a [`StoreError`] is, without its details: `Copy` and comparable, so
/// errors that carry only a message (e.g. `client::SyncError::Store`) keep it and callers can
/// still tell a timeout from a schema problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// SQLite failed (I/O, disk full...).
    Sqlite,
    /// SQLite stayed busy (locked by another process) beyond its busy timeout (`SQLITE_BUSY`).
    Busy,
    /// [`StoreError::FormatTooNew`].
    FormatTooNew,
    /// [`StoreError::DestructiveSchemaChange`].
    DestructiveSchemaChange,
    /// [`StoreError::Corrupt`].
    Corrupt,
    /// [`StoreError::WriterTimeout`].
    WriterTimeout,
    /// [`StoreError::Rejected`] with [`ApplyError::BadChangeset`].
    Rejected,
    /// [`StoreError::Rejected`] with [`ApplyError::SchemaMismatch`].
    SchemaMismatch,
    /// [`StoreError::InvalidArgument`].
    InvalidArgument,
    /// [`StoreError::Query`].
    Query,
    /// Not a `StoreError`: the work did not finish (the thread running it panicked).
    Internal,
    /// [`StoreError::TooLarge`], with its figures.
    TooLarge {
        /// Which limit.
        limit: SizeLimit,
        /// The size found, in bytes.
        size: u64,
        /// The limit, in bytes.
        max: u64,
    },
}

impl StoreError {
    /// The kind of this error.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            StoreError::Sqlite(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) =>
            {
                StoreErrorKind::Busy
            }
            StoreError::Sqlite(_) => StoreErrorKind::Sqlite,
            StoreError::FormatTooNew { .. } => StoreErrorKind::FormatTooNew,
            StoreError::DestructiveSchemaChange { .. } => StoreErrorKind::DestructiveSchemaChange,
            StoreError::Corrupt(_) => StoreErrorKind::Corrupt,
            StoreError::WriterTimeout(_) => StoreErrorKind::WriterTimeout,
            StoreError::Rejected(ApplyError::SchemaMismatch { .. }) => {
                StoreErrorKind::SchemaMismatch
            }
            StoreError::Rejected(_) => StoreErrorKind::Rejected,
            StoreError::InvalidArgument(_) => StoreErrorKind::InvalidArgument,
            StoreError::Query(_) => StoreErrorKind::Query,
            StoreError::TooLarge { limit, size, max } => StoreErrorKind::TooLarge {
                limit: *limit,
                size: *size,
                max: *max,
            },
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

impl From<QueryError> for StoreError {
    fn from(e: QueryError) -> Self {
        StoreError::Query(e)
    }
}

/// A model primary key as the state layer spells it.
pub(crate) fn to_key(key: &PrimaryKey) -> Key {
    match key {
        PrimaryKey::Null => Key::Null,
        PrimaryKey::Int(v) => Key::Int(*v),
        PrimaryKey::String(s) => Key::String(s.clone()),
        PrimaryKey::ObjectId(id) => Key::ObjectId(id.0),
        PrimaryKey::Uuid(id) => Key::Uuid(id.0),
    }
}

/// The model primary key of a state key (a global key has none; it maps to null).
pub(crate) fn from_key(key: Key) -> PrimaryKey {
    match key {
        Key::Int(v) => PrimaryKey::Int(v),
        Key::String(s) => PrimaryKey::String(s),
        Key::ObjectId(b) => PrimaryKey::ObjectId(ObjectId(b)),
        Key::Uuid(b) => PrimaryKey::Uuid(Uuid(b)),
        Key::Null | Key::GlobalKey(..) => PrimaryKey::Null,
    }
}

impl From<apply::ApplyFailure> for StoreError {
    fn from(e: apply::ApplyFailure) -> Self {
        match e {
            apply::ApplyFailure::Rejected(e) => StoreError::Rejected(e),
            apply::ApplyFailure::Sql(e) => StoreError::Sqlite(e),
        }
    }
}

/// One entry of the client history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The changeset, with its metadata (`meta.version` is the client version).
    pub changeset: Changeset,
}

/// Admits one writer at a time, with a timeout.
struct WriterGate {
    state: Mutex<GateState>,
    freed: Condvar,
}

/// Whether a writer holds the gate, and how many wait for it.
#[derive(Default)]
struct GateState {
    busy: bool,
    /// Writers blocked in [`WriterGate::acquire`]: a release wakes one only if there is one,
    /// since a `Condvar` notification is a system call even with nobody waiting (one per
    /// commit, measured with `strace -c`).
    waiting: u32,
}

impl WriterGate {
    fn acquire(&self, timeout: Duration) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.busy {
            state.waiting += 1;
            let (waited, result) = self
                .freed
                .wait_timeout_while(state, timeout, |s| s.busy)
                .unwrap_or_else(|e| e.into_inner());
            state = waited;
            state.waiting -= 1;
            if result.timed_out() && state.busy {
                return Err(StoreError::WriterTimeout(timeout));
            }
        }
        state.busy = true;
        Ok(())
    }

    fn release(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.busy = false;
        if state.waiting > 0 {
            self.freed.notify_one();
        }
    }
}

/// State shared by the database handle and its transactions.
struct Shared {
    /// The connection writes go through, and the schema as the file knows it.
    writer: Mutex<(Connection, Schemas)>,
    gate: WriterGate,
    /// What the last local commit appended to the history, for the next one
    /// (`history::AppendCache`); only touched while the writer is held.
    append_cache: Mutex<Option<history::AppendCache>>,
}

/// A local database file.
pub struct Database {
    path: PathBuf,
    config: Config,
    shared: Shared,
    /// Idle read connections.
    readers: Mutex<Vec<Connection>>,
    notifier: Arc<notify::Notifier>,
    /// Called after every local commit (see [`Database::on_local_commit`]).
    commit_hooks: Mutex<Vec<Arc<dyn Fn() + Send + Sync>>>,
    /// Runs WAL checkpoints off the commit path (see the `checkpoint` module).
    checkpointer: checkpoint::Checkpointer,
    /// The SQL of the INSERTs `WriteTransaction::create` builds, by class and property list
    /// (names joined by NUL, with each mixed property's marker): kept across transactions,
    /// so a one-object transaction does not format it again. At most [`INSERT_SQL_CACHE`]
    /// entries; the names are quoted into the SQL, which never goes stale (a property that no
    /// longer exists is refused before its SQL is looked up).
    insert_sql: Mutex<HashMap<String, Arc<str>>>,
    /// The schema read transactions last loaded ([`layout::SchemaCache`]).
    pub(crate) read_schemas: layout::SchemaCache,
    /// The queries read transactions compiled last ([`query::CompiledCache`]).
    pub(crate) queries: query::CompiledCache,
}

/// The most INSERT statements [`Database`] keeps the SQL of (cleared when full).
pub(crate) const INSERT_SQL_CACHE: usize = 256;

impl Drop for Database {
    fn drop(&mut self) {
        self.checkpointer.shutdown();
        self.notifier.shutdown();
    }
}

/// The identity (device, inode) of the file at `path`, on platforms that have one.
pub(crate) fn file_identity(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// The file a database opened: every further connection (readers, the notifier) must reach
/// this same file, never one created or swapped in at its path since.
#[derive(Clone, Debug)]
pub(crate) struct DbFile {
    pub(crate) path: PathBuf,
    pub(crate) config: Config,
    identity: Option<(u64, u64)>,
}

impl DbFile {
    /// Opens another connection to the file. A file that was deleted, or replaced by another
    /// file at the same path, since the database opened it is a `SQLITE_CANTOPEN` error
    /// naming the path: a connection to another file would read other data (and a listener
    /// would never see this database's commits).
    pub(crate) fn connect(&self) -> Result<Connection, StoreError> {
        let conn = connect(&self.path, &self.config, false)?;
        if self.identity.is_some() && file_identity(&self.path) != self.identity {
            return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!(
                    "{} is no longer the file this database opened: it was deleted or \
                     replaced while open; close the database and open it again",
                    self.path.display()
                )),
            )));
        }
        Ok(conn)
    }
}

pub(crate) fn open_connection(path: &Path, config: &Config) -> Result<Connection, StoreError> {
    connect(path, config, true)
}

fn connect(path: &Path, config: &Config, create: bool) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = if config.exclusive_in_effect() {
        Connection::open_with_flags_and_vfs(path, flags, c"unix-excl")?
    } else {
        Connection::open_with_flags(path, flags)?
    };
    // A lock another process holds is waited for as long as a writer would be.
    conn.busy_timeout(config.writer_timeout)?;
    // Before anything that writes (switching to WAL does): a file from a newer Tandem is
    // refused untouched. The first read is also where another process's exclusive lock shows.
    layout::readable_version(&conn)
        .map_err(|e| locked_at_open(e, path, config.exclusive_in_effect()))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match config.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    compare::register(&conn)?;
    // Room for every statement a write or a sync step runs (rusqlite's default is 16; a
    // transaction over a few classes plus the history and cursor statements exceeded it, and
    // an evicted statement is parsed again).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    Ok(conn)
}

/// `e`, or for `SQLITE_BUSY` on the first read of a file, the same code with a message that
/// says why. Opening shared, in WAL mode only a lock held by another process refuses a read:
/// one that has the file [`Config::exclusive_to_process`], or a tool holding an exclusive lock.
/// Opening exclusively, any other process that has the file open refuses it: SQLite keeps a
/// shared lock on a WAL file for as long as a connection has it open.
fn locked_at_open(e: StoreError, path: &Path, exclusive: bool) -> StoreError {
    match e {
        StoreError::Sqlite(s)
            if s.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) =>
        {
            let why = if exclusive {
                "is open in another process, and a file opened exclusive_to_process must be \
                 open nowhere else (SQLite keeps a lock on a WAL file for as long as any \
                 connection has it open); close it there first"
            } else {
                "is locked by another process: one that has it open exclusive_to_process (it \
                 stays locked until that process closes it), or a tool holding an exclusive \
                 lock on it"
            };
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some(format!(
                    "{} {why}; nothing was read or written",
                    path.display()
                )),
            ))
        }
        e => e,
    }
}

/// Prepared statements kept per connection (see [`connect`]).
const STATEMENT_CACHE_CAPACITY: usize = 128;

/// Runs one parameterless statement through the connection's statement cache (`BEGIN
/// IMMEDIATE`, `COMMIT`): `execute_batch` parses its SQL on every call.
pub(crate) fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.raw_execute().map(|_| ())
}

/// `BEGIN IMMEDIATE` on a writer connection, whose busy timeout is `timeout` (the writer
/// timeout): SQLite waits that long for another connection's write transaction (another
/// handle on the file, or another process) and then gives up, which is
/// [`StoreError::WriterTimeout`] as for a second writer on one handle.
pub(crate) fn begin_immediate(conn: &Connection, timeout: Duration) -> Result<(), StoreError> {
    exec_cached(conn, "BEGIN IMMEDIATE").map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy) => StoreError::WriterTimeout(timeout),
        _ => e.into(),
    })
}

impl Database {
    /// Opens (or creates) the database at `path` with the app's schema.
    ///
    /// New classes and properties are added to the file and recorded in the history as one
    /// changeset of AddTable / AddColumn instructions. A change that would lose data (another
    /// type, nullability, collection kind or link target for a property; another primary key
    /// for a class) is [`StoreError::DestructiveSchemaChange`], naming the class and property.
    /// Classes and properties the file has but the schema omits are kept, untouched.
    pub fn open(
        path: impl AsRef<Path>,
        schema: &Schema,
        config: Config,
    ) -> Result<Database, StoreError> {
        let path = path.as_ref().to_path_buf();
        // Checked again when the database joins the file's others (`Notifier::new`), for an
        // open of the other mode that races this one.
        if let Some(open_as) = notify::open_mode_conflict(&path, config.exclusive_in_effect()) {
            return Err(notify::mode_conflict_error(&path, open_as));
        }
        let conn = open_connection(&path, &config)?;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let prepared = (|| {
            layout::init(&conn)?;
            let mut schemas = layout::load(&conn)?.schemas;
            let migration = schema::migration(&schemas, schema)?;
            if !migration.is_empty() {
                apply::apply(&conn, &mut schemas, &migration)?;
                // Based on the last server version this file integrated, like any local write:
                // a schema addition by a new app version on a file that has synced is not
                // "older" than the changesets before it (the server refuses that with 209).
                history::append_local(
                    &conn,
                    &migration.encode(),
                    config.file_ident,
                    None,
                    conn.total_changes(),
                )?;
            }
            layout::search_indexes(&conn, schema)?;
            Ok::<_, StoreError>(schemas)
        })();
        let schemas = match prepared {
            Ok(s) => {
                conn.execute_batch("COMMIT")?;
                s
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        checkpoint::install(&conn);
        let file = DbFile {
            identity: file_identity(&path),
            path: path.clone(),
            config: config.clone(),
        };
        Ok(Database {
            checkpointer: checkpoint::Checkpointer::new(file.clone()),
            insert_sql: Mutex::new(HashMap::new()),
            read_schemas: layout::SchemaCache::default(),
            queries: query::CompiledCache::default(),
            shared: Shared {
                writer: Mutex::new((conn, schemas)),
                gate: WriterGate {
                    state: Mutex::new(GateState::default()),
                    freed: Condvar::new(),
                },
                append_cache: Mutex::new(None),
            },
            readers: Mutex::new(Vec::new()),
            notifier: notify::Notifier::new(file)?,
            commit_hooks: Mutex::new(Vec::new()),
            path,
            config,
        })
    }

    /// Calls `listener` on the notifier thread whenever the object changes (which properties)
    /// or is erased, after the commit that did it. A change to an object reached through its
    /// links, up to [`MAX_LINK_DEPTH`] levels deep, names the link property it was reached
    /// through (Realm's rule). Keep the token: dropping it stops delivery.
    pub fn observe_object(
        &self,
        class: &str,
        key: &PrimaryKey,
        listener: impl Fn(ObjectChange) + Send + 'static,
    ) -> Result<ListenerToken, StoreError> {
        self.observe_object_key_paths(class, key, &[], listener)
    }

    /// Like [`Database::observe_object`], narrowed to `key_paths` (Realm's key-path filter):
    /// each is a dotted path of property names from `class` on (`"name"`, `"dog.name"`,
    /// `"dogs.*"`, `*` meaning every property at that level), followed at any depth. Only a
    /// change on one of them is reported, naming the path's first property. An empty slice
    /// means no filter. A path naming an unknown property, or going on after a property that
    /// is not a link or embedded object, is [`StoreError::InvalidArgument`].
    pub fn observe_object_key_paths(
        &self,
        class: &str,
        key: &PrimaryKey,
        key_paths: &[&str],
        listener: impl Fn(ObjectChange) + Send + 'static,
    ) -> Result<ListenerToken, StoreError> {
        let key_paths = {
            let read = self.read()?;
            read.object(class, key)?; // the class must exist
            deep::parse_key_paths(read.schemas(), class, key_paths)?
        };
        self.notifier
            .observe_object(class, key, key_paths, Box::new(listener), || {
                self.read()?.object(class, key)
            })
    }

    /// Calls `listener` on the notifier thread whenever the results of `query` on `class`
    /// change, with Realm-style index changes. An object in the results counts as modified
    /// when it was written or an object reached through its links, up to
    /// [`MAX_LINK_DEPTH`] levels deep, was. Keep the token: dropping it stops delivery.
    pub fn observe_query(
        &self,
        class: &str,
        query: &str,
        args: &[crate::model::Value],
        listener: impl Fn(&ResultsChange) + Send + 'static,
    ) -> Result<ListenerToken, StoreError> {
        self.observe_query_key_paths(class, query, args, &[], listener)
    }

    /// Like [`Database::observe_query`], with modifications narrowed to `key_paths` (see
    /// [`Database::observe_object_key_paths`]). Insertions and deletions are always reported.
    pub fn observe_query_key_paths(
        &self,
        class: &str,
        query: &str,
        args: &[crate::model::Value],
        key_paths: &[&str],
        listener: impl Fn(&ResultsChange) + Send + 'static,
    ) -> Result<ListenerToken, StoreError> {
        self.observe_query_with_initial(class, query, args, key_paths, listener)
            .map(|(token, _)| token)
    }

    /// Like [`Database::observe_query_key_paths`], and also returns the results the listener
    /// starts from (primary keys in the query's order): the first change it is given is
    /// relative to them, however many commits run meanwhile. Reading the results before or
    /// after registering instead can miss or double a concurrent commit. Realm gives the same
    /// through its initial notification.
    pub fn observe_query_with_initial(
        &self,
        class: &str,
        query: &str,
        args: &[crate::model::Value],
        key_paths: &[&str],
        listener: impl Fn(&ResultsChange) + Send + 'static,
    ) -> Result<(ListenerToken, Vec<PrimaryKey>), StoreError> {
        let key_paths = {
            let read = self.read()?;
            read.query(class, query, args)?; // a bad query fails here, not in the notifier
            deep::parse_key_paths(read.schemas(), class, key_paths)?
        };
        let mut start = Vec::new();
        let token = self.notifier.observe_results(
            class,
            query,
            args,
            key_paths,
            Box::new(listener),
            || {
                let now = self.read()?.query(class, query, args)?;
                start.clone_from(&now);
                Ok(now)
            },
        )?;
        Ok((token, start))
    }

    /// Registers `hook`, called on the committing thread right after every local write
    /// transaction commits (not for remote changesets). It must return quickly: the sync
    /// session uses it to wake its uploader.
    pub fn on_local_commit(&self, hook: Arc<dyn Fn() + Send + Sync>) {
        self.commit_hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    pub(crate) fn run_commit_hooks(&self) {
        let hooks = self
            .commit_hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for hook in hooks {
            hook();
        }
    }

    /// Tells every listener to re-read: after a reset, anything may have changed.
    pub(crate) fn notify_everything(&self) {
        if self.notifier.has_watches() {
            self.notifier.committed(None);
        }
    }

    pub(crate) fn notify_committed(&self, changeset: &Changeset) {
        if self.notifier.has_watches() {
            self.notifier.committed(notify::touched(changeset));
        }
    }

    /// Starts a read transaction: a consistent snapshot of the last commit, on its own
    /// connection, so it neither waits for nor blocks the writer.
    pub fn read(&self) -> Result<ReadTransaction<'_>, StoreError> {
        let pooled = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.notifier.file().connect()?,
        };
        ReadTransaction::begin(self, conn)
    }

    pub(crate) fn return_reader(&self, conn: Connection) {
        let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 4 {
            pool.push(conn);
        }
    }

    /// Holds the file for one sync session in this process (through any handle on it) until
    /// the returned hold is dropped; `stopping` says whether that session is stopping. Another
    /// session's hold: refused while it runs, waited for up to `wait` while it stops.
    #[cfg(feature = "client")]
    pub(crate) fn hold_for_sync(
        &self,
        stopping: notify::SyncStopping,
        wait: std::time::Duration,
    ) -> Result<notify::SyncHold, notify::SyncHeld> {
        self.notifier.hold_for_sync(stopping, wait)
    }

    /// The file this database lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_writer(&self) -> MutexGuard<'_, (Connection, Schemas)> {
        self.shared.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the write transaction, waiting up to [`Config::writer_timeout`] for another one
    /// to finish.
    pub fn begin_write(&self) -> Result<WriteTransaction<'_>, StoreError> {
        self.shared.gate.acquire(self.config.writer_timeout)?;
        let guard = self.lock_writer();
        WriteTransaction::begin(self, guard)
    }

    /// The INSERT SQL cached under `key` (the `insert_sql` field), built by `build` on a miss.
    pub(crate) fn insert_sql(&self, key: &str, build: impl FnOnce() -> String) -> Arc<str> {
        let mut cache = self.insert_sql.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sql) = cache.get(key) {
            return Arc::clone(sql);
        }
        if cache.len() >= INSERT_SQL_CACHE {
            cache.clear();
        }
        let sql: Arc<str> = build().into();
        cache.insert(key.to_owned(), Arc::clone(&sql));
        sql
    }

    fn release_writer(&self) {
        self.shared.gate.release();
    }

    /// Runs `f` in its own write transaction (waiting for the writer like
    /// [`Database::begin_write`]); commits if it succeeds, rolls back if not.
    pub(crate) fn with_writer<T>(
        &self,
        f: impl FnOnce(&Connection, &mut Schemas) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.shared.gate.acquire(self.config.writer_timeout)?;
        let result = (|| {
            let mut guard = self.lock_writer();
            let (conn, schemas) = &mut *guard;
            begin_immediate(conn, self.config.writer_timeout)?;
            let saved = schemas.clone();
            // A panic in `f` (a bug: OT and the applier return errors for bad input) must not
            // leave the SQLite transaction open and the writer gate shut: every later write
            // would wait out its timeout and fail. Roll back, open the gate, then go on
            // unwinding. Found by the simulation (docs/testing.md).
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn, schemas)));
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(panic) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    *schemas = saved;
                    drop(guard);
                    self.release_writer();
                    std::panic::resume_unwind(panic);
                }
            };
            match outcome {
                Ok(value) => match exec_cached(conn, "COMMIT") {
                    Ok(()) => {
                        self.checkpointer.committed(conn);
                        Ok(value)
                    }
                    Err(e) => {
                        let _ = conn.execute_batch("ROLLBACK");
                        *schemas = saved;
                        Err(e.into())
                    }
                },
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    *schemas = saved;
                    Err(e)
                }
            }
        })();
        self.release_writer();
        result
    }

    /// Applies a changeset from the server (already transformed by OT) in its own SQLite
    /// transaction. A changeset the reference applier would refuse is refused the same way
    /// ([`StoreError::Rejected`]) and changes nothing.
    pub fn apply_remote(&self, changeset: &Changeset) -> Result<(), StoreError> {
        self.with_writer(|conn, schemas| Ok(apply::apply(conn, schemas, changeset)?))?;
        self.notify_committed(changeset);
        Ok(())
    }

    /// The whole database as an in-memory [`State`] (for tests and inspection): the stored
    /// replica, unresolved links included (see [`ReadTransaction::export_state`]).
    pub fn export_state(&self) -> Result<State, StoreError> {
        self.read()?.export_state()
    }

    /// The client history still kept, oldest first: entries the server has integrated are
    /// trimmed beyond [`Config::recovery_window`] (see [`Database::trimmed_through`]).
    pub fn history(&self) -> Result<Vec<Changeset>, StoreError> {
        self.read()?.history()
    }

    /// Metadata of the newest history entry, if any (`None` also when trimming removed every
    /// entry; [`Database::last_local_version`] is the newest version ever given out).
    pub fn latest_version(&self) -> Result<Option<ChangesetMeta>, StoreError> {
        Ok(self.history()?.last().map(|c| c.meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClassSchema, PrimaryKey, Property, PropertyType};

    /// Found by the simulation with a broken OT rule: a panic inside `with_writer` (the path of
    /// downloads and replays) left `BEGIN IMMEDIATE` open and the writer gate shut, so every
    /// later write failed with `WriterTimeout`.
    #[test]
    fn a_panic_inside_a_write_rolls_back_and_frees_the_writer() {
        let dir = tempfile::Builder::new()
            .prefix("tandem-writer-panic-")
            .tempdir()
            .unwrap();
        let schema = crate::model::Schema::new(vec![ClassSchema::top_level(
            "Task",
            "_id",
            vec![Property::new("_id", PropertyType::Int)],
        )])
        .unwrap();
        let config = Config {
            writer_timeout: Duration::from_millis(200),
            ..Config::default()
        };
        let db = Database::open(dir.path().join("a.sqlite"), &schema, config).unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            db.with_writer(|conn, _| -> Result<(), StoreError> {
                conn.execute_batch("CREATE TABLE scratch(x)").unwrap();
                panic!("a bug inside a write")
            })
        }));
        assert!(panicked.is_err());
        // The writer is free at once, and what the panicking write did is gone.
        let mut tx = db
            .begin_write()
            .expect("the writer is free after the panic");
        tx.create("Task", PrimaryKey::Int(1), &[]).unwrap();
        tx.commit().unwrap();
        let scratch: i64 = db
            .read()
            .unwrap()
            .connection()
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'scratch'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(scratch, 0);
        drop(db);
    }
}
