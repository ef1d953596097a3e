//! tandem-server on PostgreSQL (cargo feature `postgres`, `--database postgres://...`): several
//! server processes sharing one database.
//!
//! PostgreSQL holds the truth. Each process keeps a working copy of every server file it has
//! open: the same SQLite file [`ServerFile`](super::ServerFile) uses with embedded storage, in
//! `<data dir>/postgres-cache/`, emptied at start. All of the server's logic (integration,
//! downloads, STATE, flexible sync) runs on that copy unchanged; this module keeps the copies
//! and the database equal:
//!
//! - **The file's tables in PostgreSQL.** Every table of a server file (`history`, `client_file`,
//!   `reciprocal`, `client_sync`, `client_file_pending`, `meta`, `server_writer`) has a
//!   PostgreSQL table `tandem_<name>`: the same columns (INTEGER as `bigint`, BLOB as `bytea`,
//!   TEXT as `text`, REAL as `double precision`) plus `file_id` (`tandem_file.id`) and `row_id`
//!   (the SQLite rowid), keyed by both. The App Services store (users, sessions, API keys) is
//!   kept the same way under the file name `app-services`.
//! - **One writer per file at a time, across processes.** Before a server file is used, its
//!   process takes the session-level advisory lock `pg_advisory_lock(tandem_file.id)` and
//!   catches its copy up (`Replica::acquire`); it holds the lock until the work is done
//!   (`Replica::release`).
//! - **A write is PostgreSQL's first.** SQLite's pre-update hook records every row a write
//!   changes; its commit hook writes them to PostgreSQL (the mirror rows, one entry of
//!   `tandem_file_log` and `tandem_file.seq + 1`) and commits there before SQLite commits. If
//!   PostgreSQL fails, the commit hook turns SQLite's COMMIT into a ROLLBACK: the server file
//!   method fails with 201 and nothing was acknowledged. A write made without the lock is
//!   refused the same way.
//! - **Catching up.** `tandem_file.seq` counts a file's committed writes. A copy behind it
//!   applies the log entries it misses (each the rows one write changed; the last 1,024 are
//!   kept), or, further behind, is rebuilt from the mirror tables.
//! - **Waking sessions.** Each push sends `NOTIFY tandem_changes` with the process's origin tag
//!   and the server path; every other process wakes its sessions on that path (`Postgres::listen`).
//!   After its listening connection is re-established, a process wakes every session, since
//!   notifications sent meanwhile are lost.
//!
//! - **Mirror tables of the synced objects** ([`super::mirror`]): rows staged by the server
//!   file (`Replica::stage`) go into the same PostgreSQL transaction as its history; the
//!   listening connection also hears of backend writes queued in them.
//!
//! A process killed at any point loses nothing acknowledged: an upload is acknowledged only
//! after its SQLite commit, which follows the PostgreSQL commit; an uncommitted PostgreSQL
//! transaction is rolled back and the advisory lock released when its connection closes.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use rusqlite::hooks::{Action, PreUpdateCase};
use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

use super::mirror::{QueueEntry, Statement};

/// The notification channel every process listens on. Payload: `<origin> <seq> <name>`: the
/// process that wrote (a random tag), the file's new `tandem_file.seq`, and the server path
/// (or `app-services`).
pub const CHANNEL: &str = "tandem_changes";

/// Entries of `tandem_file_log` kept per file: a copy further behind is rebuilt from the mirror
/// tables.
pub const LOG_KEEP: i64 = 1_024;

/// The directory of the data directory that holds a process's working copies; emptied at
/// start.
pub const CACHE_DIR: &str = "postgres-cache";

/// Removes the SQLite file at `path` and its `-wal`, `-shm` and `-journal` files, whichever
/// exist: a working copy left by an earlier run, rebuilt from the database instead.
pub(crate) fn remove_working_copy(path: &std::path::Path) -> std::io::Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Connects to `url` on a blocking thread, creates the schema if missing and empties the
/// working copies of `data_dir` ([`CACHE_DIR`]): what `tandem-server --database` does at start.
pub(crate) async fn start(
    url: String,
    data_dir: &std::path::Path,
) -> Result<Arc<Postgres>, super::StartError> {
    let cache = data_dir.join(CACHE_DIR);
    let failed = |e: PostgresError| super::StartError(format!("PostgreSQL (--database): {e}"));
    // One process per data directory: a second one would empty the first one's working
    // copies under it.
    std::fs::create_dir_all(data_dir)
        .map_err(|e| super::StartError(format!("creating {}: {e}", data_dir.display())))?;
    let lock_path = data_dir.join(format!("{CACHE_DIR}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| super::StartError(format!("{}: {e}", lock_path.display())))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        super::StartError(format!(
            "another tandem-server uses the data directory {} (each process needs its own with --database)",
            data_dir.display()
        ))
    })?;
    let pg = tokio::task::spawn_blocking(move || {
        let tables = super::ServerFile::mirrored_tables()?;
        let app = super::app::store::Store::mirrored_tables()?;
        Postgres::connect(&url, &[&tables, &app])
    })
    .await
    .map_err(|e| super::StartError(format!("PostgreSQL (--database): {e}")))?
    .map_err(failed)?;
    match std::fs::remove_dir_all(&cache) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(super::StartError(format!(
                "emptying {}: {e}",
                cache.display()
            )))
        }
    }
    std::fs::create_dir_all(&cache)
        .map_err(|e| super::StartError(format!("creating {}: {e}", cache.display())))?;
    *pg.cache_lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(lock);
    Ok(pg)
}

/// Longest wait for a file's advisory lock (PostgreSQL's `lock_timeout`).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest statement (`statement_timeout`).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest a connection may sit in an open transaction without a statement
/// (`idle_in_transaction_session_timeout`): a process that holds a file's lock and stops
/// talking loses it after this.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Most PostgreSQL connections one process opens (its pool).
pub const POOL_SIZE: usize = 32;

/// How long a server file operation waits for a pooled connection before failing with 201.
pub const POOL_WAIT: Duration = Duration::from_secs(30);

/// A PostgreSQL failure, or a working copy that cannot be kept equal to the database.
#[derive(Debug)]
pub struct PostgresError {
    message: String,
    source: Option<tokio_postgres::Error>,
}

impl PostgresError {
    fn new(message: impl Into<String>) -> PostgresError {
        PostgresError {
            message: message.into(),
            source: None,
        }
    }

    /// An error with only a message (a failure outside PostgreSQL: the working copy's SQLite).
    pub(crate) fn from_message(message: impl Into<String>) -> PostgresError {
        PostgresError::new(message)
    }
}

impl fmt::Display for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            // tokio-postgres's Display is terse ("db error"); its source has the server's text.
            Some(e) => match std::error::Error::source(e) {
                Some(inner) => write!(f, "{}: {e}: {inner}", self.message),
                None => write!(f, "{}: {e}", self.message),
            },
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for PostgresError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

fn pg(context: &str) -> impl FnOnce(tokio_postgres::Error) -> PostgresError + '_ {
    move |e| PostgresError {
        message: context.to_owned(),
        source: Some(e),
    }
}

fn sqlite(context: &str) -> impl FnOnce(rusqlite::Error) -> PostgresError + '_ {
    move |e| PostgresError::new(format!("{context}: {e}"))
}

/// A column's type: SQLite's declared type and the PostgreSQL type that mirrors it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ColumnType {
    /// INTEGER: `bigint`.
    Integer,
    /// REAL: `double precision`.
    Real,
    /// TEXT: `text`.
    Text,
    /// BLOB: `bytea`.
    Blob,
}

impl ColumnType {
    fn of_declared(declared: &str) -> ColumnType {
        // SQLite's affinity rules (https://sqlite.org/datatype3.html, section 3.1).
        let d = declared.to_ascii_uppercase();
        if d.contains("INT") {
            ColumnType::Integer
        } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
            ColumnType::Text
        } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
            ColumnType::Real
        } else {
            ColumnType::Blob
        }
    }

    fn postgres(self) -> &'static str {
        match self {
            ColumnType::Integer => "bigint",
            ColumnType::Real => "double precision",
            ColumnType::Text => "text",
            ColumnType::Blob => "bytea",
        }
    }
}

/// Columns declared INTEGER that also hold text, mirrored as `text`: integers are written as
/// their decimal digits, which SQLite's INTEGER affinity turns back into the same integers when
/// a working copy is rebuilt (<https://sqlite.org/datatype3.html>, section 3). `meta.value` holds
/// the salt and counters, and the server path.
const TEXT_MIRRORED: &[(&str, &str)] = &[("meta", "value")];

/// One replicated SQLite table.
#[derive(Debug)]
struct Table {
    /// `tandem_` for a server file's tables, `tandem_app_` for the App Services store's.
    prefix: &'static str,
    name: String,
    columns: Vec<(String, ColumnType)>,
    /// The column that is the rowid (`INTEGER PRIMARY KEY`), if any.
    rowid_column: Option<usize>,
}

impl Table {
    fn mirror(&self) -> String {
        format!("{}{}", self.prefix, self.name)
    }
}

/// The replicated tables of one kind of file (a server file, the App Services store), read from
/// a connection holding its schema.
#[derive(Debug)]
pub(crate) struct Tables {
    tables: Vec<Table>,
}

impl Tables {
    /// Every table of `conn` but SQLite's own, mirrored as `<prefix><name>`. A `WITHOUT ROWID`
    /// table cannot be replicated (rows are named by rowid) and is refused.
    pub(crate) fn read(conn: &Connection, prefix: &'static str) -> Result<Tables, PostgresError> {
        let names: Vec<(String, String)> = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get::<_, Option<String>>(1)?.unwrap_or_default())))?
                    .collect()
            })
            .map_err(sqlite("reading the schema"))?;
        let mut tables = Vec::new();
        for (name, sql) in names {
            if sql.to_ascii_uppercase().contains("WITHOUT ROWID") {
                return Err(PostgresError::new(format!(
                    "table {name} is WITHOUT ROWID and cannot be mirrored"
                )));
            }
            let cols: Vec<(String, String, i64)> = conn
                .prepare("SELECT name, type, pk FROM pragma_table_info(?1) ORDER BY cid")
                .and_then(|mut s| {
                    s.query_map([&name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect()
                })
                .map_err(sqlite("reading the schema"))?;
            let pk: Vec<usize> = (0..cols.len()).filter(|&i| cols[i].2 > 0).collect();
            let rowid_column = match pk.as_slice() {
                [i] if cols[*i].1.eq_ignore_ascii_case("INTEGER") => Some(*i),
                _ => None,
            };
            tables.push(Table {
                columns: cols
                    .into_iter()
                    .map(|(n, t, _)| {
                        let ty = match TEXT_MIRRORED.contains(&(name.as_str(), n.as_str())) {
                            true => ColumnType::Text,
                            false => ColumnType::of_declared(&t),
                        };
                        (n, ty)
                    })
                    .collect(),
                prefix,
                name,
                rowid_column,
            });
        }
        Ok(Tables { tables })
    }

    fn get(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// `CREATE TABLE IF NOT EXISTS` for every mirror table, and `ADD COLUMN IF NOT EXISTS` for
    /// every column (what a newer tandem-server added to a table stays additive).
    fn ddl(&self) -> String {
        let mut sql = String::new();
        for t in &self.tables {
            let m = t.mirror();
            sql.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS {m} (file_id bigint NOT NULL REFERENCES tandem_file (id) ON DELETE CASCADE, row_id bigint NOT NULL, PRIMARY KEY (file_id, row_id));\n"
            ));
            for (c, ty) in &t.columns {
                sql.push_str(&format!(
                    "ALTER TABLE {m} ADD COLUMN IF NOT EXISTS \"{c}\" {};\n",
                    ty.postgres()
                ));
            }
        }
        sql
    }
}

/// A row a write changed: the whole new row, or the deletion of one.
#[derive(Clone, Debug, PartialEq)]
enum RowChange {
    /// The row `rowid` of `table` is now `values` (every column, in order): a new row
    /// (`insert`) or an updated one.
    Put {
        table: String,
        rowid: i64,
        values: Vec<Value>,
        insert: bool,
    },
    /// Delete the row `rowid` of `table`.
    Delete { table: String, rowid: i64 },
}

impl RowChange {
    fn key(&self) -> (String, i64) {
        match self {
            RowChange::Put { table, rowid, .. } | RowChange::Delete { table, rowid } => {
                (table.clone(), *rowid)
            }
        }
    }

    /// The row's contents after the change (`None`: deleted).
    fn contents(&self) -> Option<Vec<Value>> {
        match self {
            RowChange::Put { values, .. } => Some(values.clone()),
            RowChange::Delete { .. } => None,
        }
    }
}

/// `tandem_file_log.changes`: the rows one write changed, in order. Per change: a tag byte
/// (0 update, 1 delete, 2 insert), the table name (u8 length + UTF-8), the rowid (i64 LE); a put then has
/// its column count (u16 LE) and each value as a tag byte (0 null, 1 integer i64 LE, 2 real f64
/// LE, 3 text, 4 blob; text and blob with a u32 LE length).
fn encode_changes(changes: &[RowChange]) -> Vec<u8> {
    let mut out = Vec::new();
    let put_name = |out: &mut Vec<u8>, name: &str| {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
    };
    for c in changes {
        match c {
            RowChange::Put {
                table,
                rowid,
                values,
                insert,
            } => {
                out.push(if *insert { 2 } else { 0 });
                put_name(&mut out, table);
                out.extend_from_slice(&rowid.to_le_bytes());
                out.extend_from_slice(&(values.len() as u16).to_le_bytes());
                for v in values {
                    match v {
                        Value::Null => out.push(0),
                        Value::Integer(i) => {
                            out.push(1);
                            out.extend_from_slice(&i.to_le_bytes());
                        }
                        Value::Real(r) => {
                            out.push(2);
                            out.extend_from_slice(&r.to_le_bytes());
                        }
                        Value::Text(s) => {
                            out.push(3);
                            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                            out.extend_from_slice(s.as_bytes());
                        }
                        Value::Blob(b) => {
                            out.push(4);
                            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                            out.extend_from_slice(b);
                        }
                    }
                }
            }
            RowChange::Delete { table, rowid } => {
                out.push(1);
                put_name(&mut out, table);
                out.extend_from_slice(&rowid.to_le_bytes());
            }
        }
    }
    out
}

/// The inverse of [`encode_changes`]; a truncated or malformed entry is an error, never a panic.
fn decode_changes(mut bytes: &[u8]) -> Result<Vec<RowChange>, PostgresError> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], PostgresError> {
        if bytes.len() < n {
            return Err(PostgresError::new("a tandem_file_log entry is truncated"));
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Ok(head)
    }
    fn array<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N], PostgresError> {
        let mut a = [0u8; N];
        a.copy_from_slice(take(bytes, N)?);
        Ok(a)
    }
    fn name(bytes: &mut &[u8]) -> Result<String, PostgresError> {
        let n = take(bytes, 1)?[0] as usize;
        String::from_utf8(take(bytes, n)?.to_vec())
            .map_err(|_| PostgresError::new("a tandem_file_log table name is not UTF-8"))
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let tag = take(&mut bytes, 1)?[0];
        let table = name(&mut bytes)?;
        let rowid = i64::from_le_bytes(array(&mut bytes)?);
        match tag {
            0 | 2 => {
                let n = u16::from_le_bytes(array(&mut bytes)?) as usize;
                let mut values = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    values.push(match take(&mut bytes, 1)?[0] {
                        0 => Value::Null,
                        1 => Value::Integer(i64::from_le_bytes(array(&mut bytes)?)),
                        2 => Value::Real(f64::from_le_bytes(array(&mut bytes)?)),
                        t @ (3 | 4) => {
                            let len = u32::from_le_bytes(array(&mut bytes)?) as usize;
                            let data = take(&mut bytes, len)?.to_vec();
                            match t {
                                3 => Value::Text(String::from_utf8(data).map_err(|_| {
                                    PostgresError::new("a tandem_file_log text value is not UTF-8")
                                })?),
                                _ => Value::Blob(data),
                            }
                        }
                        t => {
                            return Err(PostgresError::new(format!(
                                "a tandem_file_log value has the unknown tag {t}"
                            )))
                        }
                    });
                }
                out.push(RowChange::Put {
                    table,
                    rowid,
                    values,
                    insert: tag == 2,
                });
            }
            1 => out.push(RowChange::Delete { table, rowid }),
            t => {
                return Err(PostgresError::new(format!(
                    "a tandem_file_log change has the unknown tag {t}"
                )))
            }
        }
    }
    Ok(out)
}

/// What [`Postgres::listen`] calls: with a server path another process changed, or `None` when
/// every path must be looked at.
pub(crate) type Wake = Arc<dyn Fn(Option<&str>) + Send + Sync>;

/// One process's connection to PostgreSQL: a pool, and the tokio runtime its connections run
/// on (its own, so that the blocking threads of the server files can wait for it from anywhere).
pub struct Postgres {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    url: String,
    /// Names this process in notifications, so that it does not wake itself.
    origin: String,
    /// Per file name, the highest `tandem_file.seq` this process has heard of (notifications,
    /// its own reads): a working copy below it is behind.
    announced: Mutex<HashMap<String, i64>>,
    /// The exclusive `flock` on `<data dir>/postgres-cache.lock`, held while this lives.
    cache_lock: Mutex<Option<std::fs::File>>,
    /// Per mirror table (class), its columns, their types and its key as last read: a column
    /// missing here is created before it is written ([`Postgres::ensure_mirror`]).
    mirror_tables: Mutex<HashMap<String, super::mirror::TableInfo>>,
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The advisory lock key serializing schema creation across processes (any constant).
const SCHEMA_LOCK: i64 = 0x7461_6e64_656d; // "tandem"

impl Postgres {
    /// Connects to the database at `url` (a `postgres://` URL or a libpq key-value string) and
    /// creates the tables `tables` lists (each a schema read by [`Tables::read`]) if they are
    /// missing. Errors: a URL that does not parse, a database that cannot be reached, SQL that
    /// fails (privileges).
    pub(crate) fn connect(url: &str, schemas: &[&Tables]) -> Result<Arc<Postgres>, PostgresError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(pg("the --database URL does not parse"))?;
        // Bounds on what one process can make the others wait for: a lock wait or statement
        // over these fails (201, clients retry), a holder that stops talking inside a
        // transaction is cut off (its locks released), and a dead peer is noticed by TCP
        // keepalives within about half a minute instead of the system's two hours.
        let options = format!(
            "{} -c lock_timeout={}ms -c statement_timeout={}ms -c idle_in_transaction_session_timeout={}ms",
            config.get_options().unwrap_or(""),
            LOCK_TIMEOUT.as_millis(),
            STATEMENT_TIMEOUT.as_millis(),
            IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
        );
        config
            .options(options.trim())
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .connect_timeout(POOL_WAIT);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tandem-postgres")
            .enable_all()
            .build()
            .map_err(|e| PostgresError::new(format!("starting the PostgreSQL runtime: {e}")))?;
        let manager = deadpool_postgres::Manager::from_config(
            config,
            NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = {
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(POOL_WAIT))
                .create_timeout(Some(POOL_WAIT))
                .build()
                .map_err(|e| PostgresError::new(format!("creating the connection pool: {e}")))?
        };
        let origin = format!(
            "{:016x}",
            super::file::random_u64().map_err(|e| PostgresError::new(e.message))?
        );
        let me = Arc::new(Postgres {
            runtime: Some(runtime),
            pool,
            url: url.to_owned(),
            origin,
            announced: Mutex::new(HashMap::new()),
            cache_lock: Mutex::new(None),
            mirror_tables: Mutex::new(HashMap::new()),
        });
        let mut ddl = String::from(
            "CREATE TABLE IF NOT EXISTS tandem_file (
                 id bigserial PRIMARY KEY,
                 path text NOT NULL UNIQUE,
                 seq bigint NOT NULL DEFAULT 0
             );
             CREATE TABLE IF NOT EXISTS tandem_file_log (
                 file_id bigint NOT NULL REFERENCES tandem_file (id) ON DELETE CASCADE,
                 seq bigint NOT NULL,
                 changes bytea NOT NULL,
                 PRIMARY KEY (file_id, seq)
             );\n",
        );
        for s in schemas {
            ddl.push_str(&s.ddl());
        }
        ddl.push_str(super::mirror::DDL);
        let pool = me.pool.clone();
        me.block(async move {
            let mut client = get(&pool).await?;
            let tx = client
                .transaction()
                .await
                .map_err(pg("creating the schema"))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .await
                .map_err(pg("creating the schema"))?;
            tx.batch_execute(&ddl)
                .await
                .map_err(pg("creating the schema"))?;
            tx.commit().await.map_err(pg("creating the schema"))
        })??;
        Ok(me)
    }

    /// Runs `fut` on this connection's runtime and waits for it on the calling thread (a
    /// blocking thread of the server, or any thread outside a runtime).
    fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, PostgresError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| PostgresError::new("the PostgreSQL runtime has stopped"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| PostgresError::new("the PostgreSQL runtime has stopped"))
    }

    /// Makes the mirror tables of `classes` (those `schemas` gives a table) hold what `schemas`
    /// declares, unless this process already saw each with every column: under the mirror DDL
    /// lock, reads each table from the catalog, creates it or adds the columns it lacks
    /// ([`super::mirror::table_ddl`]), and records it as it then is. A table whose key is
    /// another property, or a column of another type, is recorded as it is and left alone (that
    /// property of this path is not mirrored; a warning is logged once per process).
    pub(crate) fn ensure_mirror(
        &self,
        schemas: &crate::state::Schemas,
        classes: &std::collections::BTreeSet<String>,
    ) -> Result<(), PostgresError> {
        use super::mirror::{table_ddl, wanted_columns, TableInfo, DDL_LOCK, TABLE_INFO};
        let todo: Vec<(String, Vec<String>)> = {
            let known = self.mirror_tables.lock().unwrap_or_else(|e| e.into_inner());
            classes
                .iter()
                .filter_map(|class| {
                    let wanted = wanted_columns(schemas, class)?;
                    let names: Vec<String> = wanted.into_iter().map(|(n, _, _)| n).collect();
                    let complete = known.get(class).is_some_and(|info| {
                        info.key.as_deref() != Some(names[0].as_str())
                            || names.iter().all(|n| info.columns.contains_key(n))
                    });
                    (!complete).then(|| (class.clone(), names))
                })
                .collect()
        };
        if todo.is_empty() {
            return Ok(());
        }
        let pool = self.pool.clone();
        let schemas = schemas.clone();
        let classes: Vec<String> = todo.iter().map(|(c, _)| c.clone()).collect();
        let read = |rows: Vec<tokio_postgres::Row>| -> Option<TableInfo> {
            if rows.is_empty() {
                return None;
            }
            let mut info = TableInfo::default();
            for r in rows {
                let (name, ty, key): (String, String, bool) = (r.get(0), r.get(1), r.get(2));
                if key {
                    info.key = Some(name.clone());
                }
                info.columns.insert(name, ty);
            }
            Some(info)
        };
        let tables = self.block(async move {
            let mut client = get(&pool).await?;
            let tx = client
                .transaction()
                .await
                .map_err(pg("creating mirror tables"))?;
            let (k1, k2) = DDL_LOCK;
            tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&k1, &k2])
                .await
                .map_err(pg("creating mirror tables"))?;
            let info = tx
                .prepare(TABLE_INFO)
                .await
                .map_err(pg("reading mirror tables"))?;
            let mut out = HashMap::new();
            for class in &classes {
                let have = read(
                    tx.query(&info, &[class])
                        .await
                        .map_err(pg("reading mirror tables"))?,
                );
                let ddl = table_ddl(&schemas, class, have.as_ref()).unwrap_or_default();
                let now = if ddl.is_empty() {
                    have
                } else {
                    tx.batch_execute(&ddl)
                        .await
                        .map_err(pg("creating mirror tables"))?;
                    read(
                        tx.query(&info, &[class])
                            .await
                            .map_err(pg("reading mirror tables"))?,
                    )
                };
                out.insert(class.clone(), now.unwrap_or_default());
            }
            tx.commit().await.map_err(pg("creating mirror tables"))?;
            Ok::<_, PostgresError>(out)
        })??;
        let mut known = self.mirror_tables.lock().unwrap_or_else(|e| e.into_inner());
        for (class, names) in todo {
            let Some(info) = tables.get(&class) else {
                continue;
            };
            if info.key.as_deref() != Some(names[0].as_str()) {
                tracing::warn!(class, key = %names[0], table_key = ?info.key,
                    "the mirror table of this class is keyed by another property: this path's objects are not mirrored");
            }
            known.insert(class, info.clone());
        }
        Ok(())
    }

    /// The mirror table of `class` as last read by [`Postgres::ensure_mirror`] (empty if never).
    pub(crate) fn mirror_table(&self, class: &str) -> super::mirror::TableInfo {
        self.mirror_tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(class)
            .cloned()
            .unwrap_or_default()
    }

    fn announce(&self, name: &str, seq: i64) {
        let mut a = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        match a.get_mut(name) {
            Some(s) => *s = (*s).max(seq),
            None => {
                a.insert(name.to_owned(), seq);
            }
        }
    }

    fn announced(&self, name: &str) -> i64 {
        let a = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        a.get(name).copied().unwrap_or(0)
    }

    /// The id of the file named `name` (a server path, or `app-services`), created if new.
    pub(crate) fn file_id(&self, name: &str) -> Result<i64, PostgresError> {
        let pool = self.pool.clone();
        let name = name.to_owned();
        self.block(async move {
            let client = get(&pool).await?;
            client
                .execute(
                    "INSERT INTO tandem_file (path) VALUES ($1) ON CONFLICT (path) DO NOTHING",
                    &[&name],
                )
                .await
                .map_err(pg("registering a file"))?;
            let row = client
                .query_one("SELECT id FROM tandem_file WHERE path = $1", &[&name])
                .await
                .map_err(pg("registering a file"))?;
            Ok(row.get::<_, i64>(0))
        })?
    }

    /// Listens for the changes other processes commit and calls `wake` with each server path
    /// changed (coalescing is the caller's), and with `None` after every (re)connection of the
    /// listening connection: whatever was sent while it was down is lost, so everything must be
    /// looked at. Reconnects after a second when the connection fails; stops when this
    /// [`Postgres`] is dropped.
    ///
    /// `mirror` is called with each server path a backend wrote to through the mirror tables
    /// (notification `tandem_mirror`), and after every (re)connection with each path whose
    /// queue holds writes ([`super::mirror`]).
    pub(crate) fn listen(self: &Arc<Self>, wake: Wake, mirror: Wake) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        let me: Weak<Postgres> = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let (url, origin) = match me.upgrade() {
                    Some(p) => (p.url.clone(), p.origin.clone()),
                    None => return,
                };
                if let Err(e) = listen_once(&me, &url, &origin, &wake, &mirror).await {
                    tracing::warn!(error = %e, "the PostgreSQL notification connection failed; reconnecting in 1 s");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

async fn listen_once(
    me: &Weak<Postgres>,
    url: &str,
    origin: &str,
    wake: &Wake,
    mirror: &Wake,
) -> Result<(), PostgresError> {
    use futures_util::StreamExt;
    let (client, mut connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(pg("connecting for notifications"))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    let queued = n.channel() == super::mirror::QUEUE_CHANNEL;
                    if tx.send((queued, n.payload().to_owned())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the PostgreSQL notification connection failed");
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!(
            "LISTEN {CHANNEL}; LISTEN {}",
            super::mirror::QUEUE_CHANNEL
        ))
        .await
        .map_err(pg("LISTEN"))?;
    // What was announced while no one listened: every file's sequence now.
    let rows = client
        .query("SELECT path, seq FROM tandem_file", &[])
        .await
        .map_err(pg("reading the files' sequences"))?;
    match me.upgrade() {
        Some(p) => {
            for r in rows {
                p.announce(r.get(0), r.get(1));
            }
        }
        None => return Ok(()),
    }
    wake(None);
    let pending = client
        .query(
            "SELECT DISTINCT f.path FROM tandem_mirror_queue q JOIN tandem_file f ON f.id = q.file_id
             WHERE q.error IS NULL",
            &[],
        )
        .await
        .map_err(pg("reading the mirror queue"))?;
    for r in pending {
        mirror(Some(r.get::<_, &str>(0)));
    }
    // Payload: `<origin> <seq> <name>`, or a server path on the queue's channel.
    while let Some((queued, payload)) = rx.recv().await {
        if queued {
            mirror(Some(&payload));
            continue;
        }
        let mut parts = payload.splitn(3, ' ');
        let (Some(from), Some(seq), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(seq) = seq.parse::<i64>() else {
            continue;
        };
        match me.upgrade() {
            Some(p) => p.announce(name, seq),
            None => break,
        }
        if from != origin {
            wake(Some(name));
        }
    }
    driver.abort();
    Ok(())
}

/// Takes the advisory lock of file `file_id`, opens a transaction and reads the file's
/// sequence: one round trip (the simple query protocol sends the three statements at once).
async fn lock_and_begin(client: &Object, file_id: i64) -> Result<i64, PostgresError> {
    let messages = client
        .simple_query(&format!(
            "SELECT pg_advisory_lock({file_id}); BEGIN; SELECT seq FROM tandem_file WHERE id = {file_id}"
        ))
        .await
        .map_err(pg("taking the file's lock"))?;
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0),
            _ => None,
        })
        .last()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| PostgresError::new(format!("file {file_id} is not in tandem_file")))
}

async fn get(pool: &Pool) -> Result<Object, PostgresError> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => PostgresError {
            message: "connecting to PostgreSQL".into(),
            source: Some(e),
        },
        e => PostgresError::new(format!("no PostgreSQL connection: {e}")),
    })
}

/// Per row (table, rowid), its contents after this process's last push of it (`None`: deleted).
type Probes = HashMap<(String, i64), Option<Vec<Value>>>;

/// What the hooks of a working copy and its [`Replica`] share.
struct Link {
    tables: Arc<Tables>,
    /// The file's `tandem_file.seq` the working copy holds.
    seq: i64,
    /// A pooled connection holding the file's advisory lock, in an open transaction.
    held: Option<Object>,
    /// The rows the open SQLite transaction changed.
    recorded: Vec<RowChange>,
    /// Statements pushed with the next write, in its PostgreSQL transaction: the mirror tables'
    /// rows and queue entries ([`Replica::stage`]).
    staged: Vec<Statement>,
    /// A change that cannot be mirrored (a table unknown to the schema): the commit is refused.
    refused: Option<String>,
    /// The working copy is being written from PostgreSQL: nothing is recorded or pushed.
    applying: bool,
    /// What the working copy must hold if the SQLite commits after this process's pushes went
    /// through: per row the pushes wrote (table, rowid), its last pushed contents (`None`:
    /// deleted), and `seq` before the first of those pushes. Checked before the copy is used
    /// again ([`Replica::verify`]): a commit that failed after its push leaves the copy behind
    /// the database, which catching up from that `seq` repairs.
    probes: Option<(i64, Probes)>,
    /// A push failed: the copy may be behind the database, and is caught up before its next
    /// use even by a read ([`Replica::refresh`]).
    stale: bool,
}

/// How a working copy stands after [`Replica::acquire`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CatchUp {
    /// It already held every committed write.
    Current,
    /// Rows were written to it: whatever was read from it into memory is stale.
    Changed,
}

/// The link between one working copy (a SQLite connection) and its file in PostgreSQL.
pub(crate) struct Replica {
    pg: Arc<Postgres>,
    file_id: i64,
    /// The server path (or `app-services`): the notification payload.
    name: String,
    link: Arc<Mutex<Link>>,
    /// The file's mirror rows are known to be filled ([`Replica::mirror_filled`]).
    mirror_filled: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Replica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replica")
            .field("name", &self.name)
            .field("file_id", &self.file_id)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// The replica of the file `name`, registered in `tandem_file` if new, whose working copy
    /// has the tables `tables` (created on the copy before [`Replica::attach`]).
    pub(crate) fn new(
        pg: &Arc<Postgres>,
        name: &str,
        tables: Arc<Tables>,
    ) -> Result<Replica, PostgresError> {
        Ok(Replica {
            file_id: pg.file_id(name)?,
            pg: Arc::clone(pg),
            name: name.to_owned(),
            mirror_filled: std::sync::atomic::AtomicBool::new(false),
            link: Arc::new(Mutex::new(Link {
                tables,
                seq: 0,
                held: None,
                recorded: Vec::new(),
                staged: Vec::new(),
                refused: None,
                applying: false,
                probes: None,
                stale: false,
            })),
        })
    }

    /// Installs the hooks that record `conn`'s writes and push them to PostgreSQL at commit.
    /// `conn` must hold the tables this replica was made with. Call again for every new
    /// connection to the working copy.
    pub(crate) fn attach(&self, conn: &Connection) -> Result<(), PostgresError> {
        let link = Arc::clone(&self.link);
        conn.preupdate_hook(Some(
            move |action: Action, db: &str, table: &str, case: &PreUpdateCase| {
                let mut l = link.lock().unwrap_or_else(|e| e.into_inner());
                if l.applying || db != "main" {
                    return;
                }
                if l.tables.get(table).is_none() {
                    l.refused = Some(format!("a write to table {table}, which is not mirrored"));
                    return;
                }
                let put = |a: &rusqlite::hooks::PreUpdateNewValueAccessor, insert: bool| {
                    let values = (0..a.get_column_count())
                        .map(|i| a.get_new_column_value(i).and_then(owned))
                        .collect::<Result<Vec<_>, _>>();
                    values.map(|values| RowChange::Put {
                        table: table.to_owned(),
                        rowid: a.get_new_row_id(),
                        values,
                        insert,
                    })
                };
                let change = match (action, case) {
                    (Action::SQLITE_INSERT, PreUpdateCase::Insert(new)) => {
                        put(new, true).map(|p| vec![p])
                    }
                    (Action::SQLITE_DELETE, PreUpdateCase::Delete(old)) => {
                        Ok(vec![RowChange::Delete {
                            table: table.to_owned(),
                            rowid: old.get_old_row_id(),
                        }])
                    }
                    (
                        Action::SQLITE_UPDATE,
                        PreUpdateCase::Update {
                            old_value_accessor: old,
                            new_value_accessor: new,
                        },
                    ) => put(new, old.get_old_row_id() != new.get_new_row_id()).map(|p| {
                        let mut v = Vec::with_capacity(2);
                        if old.get_old_row_id() != new.get_new_row_id() {
                            v.push(RowChange::Delete {
                                table: table.to_owned(),
                                rowid: old.get_old_row_id(),
                            });
                        }
                        v.push(p);
                        v
                    }),
                    _ => Err(rusqlite::Error::InvalidQuery),
                };
                match change {
                    Ok(c) => l.recorded.extend(c),
                    Err(e) => l.refused = Some(format!("an unreadable change of {table}: {e}")),
                }
            },
        ))
        .map_err(sqlite("installing the pre-update hook"))?;
        let link = Arc::clone(&self.link);
        let pg = Arc::clone(&self.pg);
        let (file_id, name) = (self.file_id, self.name.clone());
        conn.commit_hook(Some(move || {
            let mut l = link.lock().unwrap_or_else(|e| e.into_inner());
            if l.applying {
                return false;
            }
            if let Some(why) = l.refused.take() {
                l.recorded.clear();
                tracing::error!(file = %name, "refusing a write that cannot be mirrored: {why}");
                return true;
            }
            if l.recorded.is_empty() {
                l.staged.clear();
                return false;
            }
            // Under the file's lock (a write path), or without it (a read path's incidental
            // write, such as a client file's last sync): then the lock is taken for the push,
            // which succeeds only if no other process wrote since the copy caught up.
            let held = l.held.take();
            let changes = std::mem::take(&mut l.recorded);
            let staged = std::mem::take(&mut l.staged);
            let seq = l.seq;
            let tables = Arc::clone(&l.tables);
            // Probed: the last row of this push, and any probed row it changes again.
            let mut probes = l.probes.clone().unwrap_or_else(|| (seq, HashMap::new()));
            for (i, c) in changes.iter().enumerate() {
                let key = c.key();
                if i + 1 == changes.len() || probes.1.contains_key(&key) {
                    probes.1.insert(key, c.contents());
                }
            }
            let pushed = pg.block(push(
                pg.pool.clone(),
                held,
                file_id,
                seq,
                (changes, staged),
                tables,
                (pg.origin.clone(), name.clone()),
            ));
            match pushed {
                Ok(Ok(back)) => {
                    l.held = back;
                    l.probes = Some(probes);
                    l.seq = seq + 1;
                    false
                }
                Ok(Err(e)) | Err(e) => {
                    // The copy may be behind the database: the next use catches it up first.
                    l.stale = true;
                    tracing::error!(file = %name, error = %e, "a write could not be committed to PostgreSQL; refused");
                    true
                }
            }
        }))
        .map_err(sqlite("installing the commit hook"))?;
        let link = Arc::clone(&self.link);
        conn.rollback_hook(Some(move || {
            let mut l = link.lock().unwrap_or_else(|e| e.into_inner());
            l.recorded.clear();
            l.staged.clear();
            l.refused = None;
        }))
        .map_err(sqlite("installing the rollback hook"))?;
        Ok(())
    }

    /// Takes the file's advisory lock (waiting for any other process that holds it), opens a
    /// transaction and brings the working copy at `conn` up to the database: by the log entries
    /// it misses, or by copying every mirror row when the log no longer reaches back to it.
    /// Holding the lock already (a nested call), it does nothing.
    pub(crate) fn acquire(&self, conn: &Connection) -> Result<CatchUp, PostgresError> {
        self.verify(conn);
        let (seq, has_lock) = {
            let l = self.link.lock().unwrap_or_else(|e| e.into_inner());
            (l.seq, l.held.is_some())
        };
        if has_lock {
            return Ok(CatchUp::Current);
        }
        let pool = self.pg.pool.clone();
        let file_id = self.file_id;
        let fetched = self.pg.block(async move {
            let client = get(&pool).await?;
            let r = async {
                let now = lock_and_begin(&client, file_id).await?;
                if now == seq {
                    return Ok((now, None));
                }
                let statement = client
                    .prepare_cached(
                        "SELECT seq, changes FROM tandem_file_log WHERE file_id = $1 AND seq > $2 ORDER BY seq",
                    )
                    .await
                    .map_err(pg("reading the file's log"))?;
                let rows = client
                    .query(&statement, &[&file_id, &seq])
                    .await
                    .map_err(pg("reading the file's log"))?;
                let contiguous = now > seq
                    && rows.len() as i64 == now - seq
                    && rows.first().map(|r| r.get::<_, i64>(0)) == Some(seq + 1);
                if contiguous {
                    let entries: Vec<Vec<u8>> = rows.iter().map(|r| r.get(1)).collect();
                    return Ok((now, Some(Ok(entries))));
                }
                Ok((now, Some(Err(()))))
            }
            .await;
            match r {
                Ok(v) => Ok((client, v)),
                // A failed connection is not returned to the pool (it may hold the lock).
                Err(e) => {
                    drop(Object::take(client));
                    Err(e)
                }
            }
        })??;
        let (client, (now, work)) = fetched;
        self.announce(now);
        self.link.lock().unwrap_or_else(|e| e.into_inner()).held = Some(client);
        let result = match work {
            None => Ok(CatchUp::Current),
            Some(Ok(entries)) => match self.apply_entries(conn, &entries) {
                Ok(()) => Ok(CatchUp::Changed),
                Err(e) => {
                    tracing::warn!(file = %self.name, error = %e, "catching up from the log failed; rebuilding the working copy");
                    self.rebuild(conn).map(|()| CatchUp::Changed)
                }
            },
            Some(Err(())) => self.rebuild(conn).map(|()| CatchUp::Changed),
        };
        match result {
            Ok(c) => {
                let mut l = self.link.lock().unwrap_or_else(|e| e.into_inner());
                l.seq = now;
                l.stale = false;
                Ok(c)
            }
            Err(e) => {
                self.abandon();
                Err(e)
            }
        }
    }

    /// Brings the working copy at `conn` up to the database for reading: nothing if it holds
    /// every write announced to this process ([`Postgres::listen`]) and no push failed since;
    /// else [`Replica::acquire`] and, unless the lock was already held, release at once. A
    /// write made afterwards without the lock is validated when it is pushed.
    pub(crate) fn refresh(&self, conn: &Connection) -> Result<CatchUp, PostgresError> {
        self.verify(conn);
        let (seq, held, stale) = {
            let l = self.link.lock().unwrap_or_else(|e| e.into_inner());
            (l.seq, l.held.is_some(), l.stale)
        };
        if held || (!stale && seq >= self.pg.announced(&self.name)) {
            return Ok(CatchUp::Current);
        }
        let r = self.acquire(conn);
        self.release(conn);
        r
    }

    fn announce(&self, seq: i64) {
        self.pg.announce(&self.name, seq);
    }

    /// Whether this process filled the file's mirror rows, or saw them filled
    /// ([`ServerFile::mirror_backfill`](super::ServerFile)).
    pub(crate) fn mirror_filled(&self) -> bool {
        self.mirror_filled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records that the file's mirror rows are filled.
    pub(crate) fn set_mirror_filled(&self) {
        self.mirror_filled
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether `tandem_mirror_filled` records the file. Needs the file's lock.
    pub(crate) fn mirror_filled_in_database(&self) -> Result<bool, PostgresError> {
        let file_id = self.file_id;
        self.with_held(move |client| async move {
            let r = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM tandem_mirror_filled WHERE file_id = $1)",
                    &[&file_id],
                )
                .await
                .map(|row| row.get::<_, bool>(0))
                .map_err(pg("reading tandem_mirror_filled"));
            (client, r)
        })
    }

    /// The server path (or `app-services`) this replica keeps.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The database this replica writes to.
    pub(crate) fn postgres(&self) -> &Arc<Postgres> {
        &self.pg
    }

    /// Adds `statements` to the PostgreSQL transaction of the next write of the working copy
    /// (cleared if that write rolls back, or by [`Replica::unstage`]).
    pub(crate) fn stage(&self, statements: Vec<Statement>) {
        let mut l = self.link.lock().unwrap_or_else(|e| e.into_inner());
        l.staged.extend(statements);
    }

    /// Drops the statements staged for the next write.
    pub(crate) fn unstage(&self) {
        self.link
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .staged
            .clear();
    }

    /// The oldest `limit` backend writes queued for this file and not refused, in order. Needs
    /// the file's lock ([`Replica::acquire`]).
    pub(crate) fn mirror_queue(&self, limit: i64) -> Result<Vec<QueueEntry>, PostgresError> {
        let file_id = self.file_id;
        self.with_held(move |client| async move {
            let r = client
                .query(
                    "SELECT id, class, op, old::text, new::text FROM tandem_mirror_queue
                     WHERE file_id = $1 AND error IS NULL ORDER BY id LIMIT $2",
                    &[&file_id, &limit],
                )
                .await
                .map_err(pg("reading the mirror queue"))
                .map(|rows| {
                    rows.iter()
                        .map(|r| QueueEntry {
                            id: r.get(0),
                            class: r.get(1),
                            op: r.get(2),
                            old: r.get(3),
                            new: r.get(4),
                        })
                        .collect()
                });
            (client, r)
        })
    }

    /// Runs `statements` in the held transaction (committed when the lock is released, or with
    /// the next write).
    pub(crate) fn execute_held(&self, statements: Vec<Statement>) -> Result<(), PostgresError> {
        self.with_held(move |client| async move {
            let mut r = Ok(());
            for (sql, params) in &statements {
                let refs: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                if let Err(e) = client.execute(sql.as_str(), &refs).await {
                    r = Err(pg("writing mirror statements")(e));
                    break;
                }
            }
            (client, r)
        })
    }

    /// Checks that the SQLite commits after this process's pushes went through (the probed rows
    /// hold what was pushed); if one did not, the copy is behind the database by those pushes,
    /// and its `seq` is set back so that catching up applies them.
    fn verify(&self, conn: &Connection) {
        let (probes, tables) = {
            let mut l = self.link.lock().unwrap_or_else(|e| e.into_inner());
            (l.probes.take(), Arc::clone(&l.tables))
        };
        let Some((before, rows)) = probes else {
            return;
        };
        for ((table, rowid), expected) in rows {
            let Some(t) = tables.get(&table) else {
                continue;
            };
            let cols: Vec<String> = t.columns.iter().map(|(c, _)| format!("\"{c}\"")).collect();
            let sql = format!(
                "SELECT {} FROM \"{table}\" WHERE rowid = ?1",
                cols.join(", ")
            );
            let found: Result<Option<Vec<Value>>, rusqlite::Error> =
                conn.prepare_cached(&sql).and_then(|mut s| {
                    let mut rows = s.query([rowid])?;
                    match rows.next()? {
                        Some(r) => Ok(Some(
                            (0..cols.len())
                                .map(|i| r.get::<_, Value>(i))
                                .collect::<Result<Vec<_>, _>>()?,
                        )),
                        None => Ok(None),
                    }
                });
            if found.ok() != Some(expected) {
                tracing::warn!(file = %self.name, table, rowid, "a write committed to PostgreSQL is missing from the working copy (its SQLite commit failed); catching up");
                let mut l = self.link.lock().unwrap_or_else(|e| e.into_inner());
                l.seq = l.seq.min(before);
                l.stale = true;
                return;
            }
        }
    }

    /// Commits the open transaction and releases the advisory lock. A failure closes the
    /// connection instead (which releases both).
    pub(crate) fn release(&self, conn: &Connection) {
        self.verify(conn);
        let held = self
            .link
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .held
            .take();
        let Some(client) = held else {
            return;
        };
        let file_id = self.file_id;
        let done = self.pg.block(async move {
            let r = client
                .batch_execute(&format!("COMMIT; SELECT pg_advisory_unlock({file_id})"))
                .await;
            if let Err(e) = r {
                drop(Object::take(client));
                return Err(e);
            }
            Ok(())
        });
        if let Ok(Err(e)) = done {
            tracing::warn!(file = %self.name, error = %e, "releasing a file's PostgreSQL lock failed; its connection was closed");
        }
    }

    /// Drops the held connection without returning it to the pool: PostgreSQL rolls its
    /// transaction back and releases the lock.
    fn abandon(&self) {
        let held = self
            .link
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .held
            .take();
        if let Some(client) = held {
            let _ = self.pg.block(async move { drop(Object::take(client)) });
        }
    }

    fn apply_entries(&self, conn: &Connection, entries: &[Vec<u8>]) -> Result<(), PostgresError> {
        let mut changes = Vec::new();
        for e in entries {
            changes.extend(decode_changes(e)?);
        }
        self.write_locally(conn, |conn, tables| {
            for c in &changes {
                apply_change(conn, tables, c)?;
            }
            Ok(())
        })
    }

    /// Replaces every row of the working copy with the mirror rows.
    fn rebuild(&self, conn: &Connection) -> Result<(), PostgresError> {
        let tables = Arc::clone(&self.link.lock().unwrap_or_else(|e| e.into_inner()).tables);
        let file_id = self.file_id;
        let mut all = Vec::new();
        for t in &tables.tables {
            let cols: Vec<String> = t.columns.iter().map(|(c, _)| format!("\"{c}\"")).collect();
            let sql = format!(
                "SELECT row_id{}{} FROM {} WHERE file_id = $1 ORDER BY row_id",
                if cols.is_empty() { "" } else { ", " },
                cols.join(", "),
                t.mirror()
            );
            let types: Vec<ColumnType> = t.columns.iter().map(|(_, ty)| *ty).collect();
            let table = t.name.clone();
            let rows = self.with_held(move |client| async move {
                let r = async {
                    let rows = client
                        .query(&sql, &[&file_id])
                        .await
                        .map_err(pg("reading a mirror table"))?;
                    let mut out = Vec::with_capacity(rows.len());
                    for r in rows {
                        let mut values = Vec::with_capacity(types.len());
                        for (i, ty) in types.iter().enumerate() {
                            values.push(from_postgres(&r, i + 1, *ty)?);
                        }
                        out.push(RowChange::Put {
                            table: table.clone(),
                            rowid: r.get(0),
                            values,
                            insert: true,
                        });
                    }
                    Ok(out)
                }
                .await;
                (client, r)
            })?;
            all.push((t.name.clone(), rows));
        }
        self.write_locally(conn, |conn, tables| {
            for (name, _) in &all {
                conn.execute(&format!("DELETE FROM \"{name}\""), [])
                    .map_err(sqlite("emptying the working copy"))?;
            }
            for (_, rows) in &all {
                for r in rows {
                    apply_change(conn, tables, r)?;
                }
            }
            Ok(())
        })
    }

    /// Runs `f` on the held connection, which it gives back with its result.
    fn with_held<T, Fut>(&self, f: impl FnOnce(Object) -> Fut) -> Result<T, PostgresError>
    where
        T: Send + 'static,
        Fut: Future<Output = (Object, Result<T, PostgresError>)> + Send + 'static,
    {
        let client = self
            .link
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .held
            .take()
            .ok_or_else(|| PostgresError::new("the file's lock is not held"))?;
        let (client, r) = self.pg.block(f(client))?;
        self.link.lock().unwrap_or_else(|e| e.into_inner()).held = Some(client);
        r
    }

    /// Writes to the working copy without recording: one SQLite transaction.
    fn write_locally(
        &self,
        conn: &Connection,
        f: impl FnOnce(&Connection, &Tables) -> Result<(), PostgresError>,
    ) -> Result<(), PostgresError> {
        let tables = {
            let mut l = self.link.lock().unwrap_or_else(|e| e.into_inner());
            l.applying = true;
            Arc::clone(&l.tables)
        };
        let r = (|| {
            let tx = conn
                .unchecked_transaction()
                .map_err(sqlite("writing the working copy"))?;
            // Rows arrive in table order, children before their parents: foreign keys are
            // checked at commit.
            tx.pragma_update(None, "defer_foreign_keys", true)
                .map_err(sqlite("writing the working copy"))?;
            f(&tx, &tables)?;
            tx.commit().map_err(sqlite("writing the working copy"))
        })();
        self.link.lock().unwrap_or_else(|e| e.into_inner()).applying = false;
        r
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // Only a guard dropped mid-work holds the lock here: closing the connection releases
        // it (and rolls back anything not committed).
        self.abandon();
    }
}

/// A value of a row being written, owned; text that is not UTF-8 is an error.
fn owned(v: ValueRef<'_>) -> Result<Value, rusqlite::Error> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(
            std::str::from_utf8(t)
                .map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?
                .to_owned(),
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

/// Applies one change to the working copy (insert-or-replace by rowid, delete by rowid).
fn apply_change(conn: &Connection, tables: &Tables, c: &RowChange) -> Result<(), PostgresError> {
    match c {
        RowChange::Put {
            table,
            rowid,
            values,
            ..
        } => {
            let t = tables.get(table).ok_or_else(|| {
                PostgresError::new(format!(
                    "the log names table {table}, which this server does not have"
                ))
            })?;
            if values.len() != t.columns.len() {
                return Err(PostgresError::new(format!(
                    "the log has {} columns of {table}, which has {}",
                    values.len(),
                    t.columns.len()
                )));
            }
            // UPDATE, else INSERT: never INSERT OR REPLACE, whose delete would run the foreign
            // keys' ON DELETE CASCADE (the App Services store) on rows the write only updated.
            let sets: Vec<String> = t
                .columns
                .iter()
                .map(|(c, _)| format!("\"{c}\" = ?"))
                .collect();
            let mut params: Vec<&dyn rusqlite::ToSql> =
                values.iter().map(|v| v as &dyn rusqlite::ToSql).collect();
            params.push(rowid);
            let updated = if sets.is_empty() {
                0
            } else {
                conn.prepare_cached(&format!(
                    "UPDATE \"{table}\" SET {} WHERE rowid = ?",
                    sets.join(", ")
                ))
                .and_then(|mut s| s.execute(params.as_slice()))
                .map_err(sqlite("writing the working copy"))?
            };
            if updated == 0 {
                let mut cols: Vec<String> =
                    t.columns.iter().map(|(c, _)| format!("\"{c}\"")).collect();
                if t.rowid_column.is_some() {
                    params.pop();
                } else {
                    cols.push("rowid".into());
                }
                let marks = vec!["?"; cols.len()].join(", ");
                conn.prepare_cached(&format!(
                    "INSERT INTO \"{table}\" ({}) VALUES ({marks})",
                    cols.join(", ")
                ))
                .and_then(|mut s| s.execute(params.as_slice()))
                .map_err(sqlite("writing the working copy"))?;
            }
        }
        RowChange::Delete { table, rowid } => {
            conn.prepare_cached(&format!("DELETE FROM \"{table}\" WHERE rowid = ?1"))
                .and_then(|mut s| s.execute([rowid]))
                .map_err(sqlite("writing the working copy"))?;
        }
    }
    Ok(())
}

fn from_postgres(
    row: &tokio_postgres::Row,
    i: usize,
    ty: ColumnType,
) -> Result<Value, PostgresError> {
    let bad = |e| PostgresError {
        message: "reading a mirror row".into(),
        source: Some(e),
    };
    Ok(match ty {
        ColumnType::Integer => row
            .try_get::<_, Option<i64>>(i)
            .map_err(bad)?
            .map_or(Value::Null, Value::Integer),
        ColumnType::Real => row
            .try_get::<_, Option<f64>>(i)
            .map_err(bad)?
            .map_or(Value::Null, Value::Real),
        ColumnType::Text => row
            .try_get::<_, Option<String>>(i)
            .map_err(bad)?
            .map_or(Value::Null, Value::Text),
        ColumnType::Blob => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map_err(bad)?
            .map_or(Value::Null, Value::Blob),
    })
}

/// A SQLite value as the parameter of a mirror column of type `ty`. SQLite's flexible typing
/// can store a value of another type in a column; one that PostgreSQL's column cannot hold is
/// an error (the write is refused, never stored differently).
fn to_postgres(v: &Value, ty: ColumnType) -> Result<Box<dyn ToSql + Sync + Send>, PostgresError> {
    Ok(match (v, ty) {
        (Value::Null, ColumnType::Integer) => Box::new(None::<i64>),
        (Value::Null, ColumnType::Real) => Box::new(None::<f64>),
        (Value::Null, ColumnType::Text) => Box::new(None::<String>),
        (Value::Null, ColumnType::Blob) => Box::new(None::<Vec<u8>>),
        (Value::Integer(i), ColumnType::Integer) => Box::new(*i),
        (Value::Integer(i), ColumnType::Real) => Box::new(*i as f64),
        (Value::Real(r), ColumnType::Real) => Box::new(*r),
        (Value::Text(s), ColumnType::Text) => Box::new(s.clone()),
        (Value::Integer(i), ColumnType::Text) => Box::new(i.to_string()),
        (Value::Blob(b), ColumnType::Blob) => Box::new(b.clone()),
        (v, ty) => {
            return Err(PostgresError::new(format!(
                "a {:?} value in a column of type {}",
                ValueRef::from(v).data_type(),
                ty.postgres()
            )))
        }
    })
}

/// Writes one SQLite transaction's changes to PostgreSQL in the held transaction, commits it
/// and opens the next. `seq` is the sequence the working copy holds; anything else in the
/// database means a write was made without the lock (an error, nothing written). On failure
/// the connection is closed (its transaction rolled back, the lock released).
async fn push(
    pool: Pool,
    held: Option<Object>,
    file_id: i64,
    seq: i64,
    (changes, staged): (Vec<RowChange>, Vec<Statement>),
    tables: Arc<Tables>,
    (origin, name): (String, String),
) -> Result<Option<Object>, PostgresError> {
    let names = (origin.as_str(), name.as_str());
    let changes = (changes.as_slice(), staged.as_slice());
    match held {
        Some(client) => {
            match push_inner(
                &client,
                file_id,
                seq,
                changes,
                &tables,
                names,
                "COMMIT; BEGIN",
            )
            .await
            {
                Ok(()) => Ok(Some(client)),
                Err(e) => {
                    drop(Object::take(client));
                    Err(e)
                }
            }
        }
        None => {
            let client = get(&pool).await?;
            let r = async {
                let now = lock_and_begin(&client, file_id).await?;
                if now != seq {
                    return Err(PostgresError::new(format!(
                        "the working copy holds write {seq} of the file, the database {now}"
                    )));
                }
                let unlock = format!("COMMIT; SELECT pg_advisory_unlock({file_id})");
                push_inner(&client, file_id, seq, changes, &tables, names, &unlock).await
            }
            .await;
            match r {
                Ok(()) => Ok(None),
                Err(e) => {
                    drop(Object::take(client));
                    Err(e)
                }
            }
        }
    }
}

async fn push_inner(
    client: &Object,
    file_id: i64,
    seq: i64,
    (changes, staged): (&[RowChange], &[Statement]),
    tables: &Tables,
    (payload_origin, name): (&str, &str),
    then: &str,
) -> Result<(), PostgresError> {
    let next = seq + 1;
    // Statements and their parameters, sent pipelined (tokio-postgres sends the queries of
    // futures polled together without waiting for each answer).
    // The first advances the sequence only from the copy's: none other wrote meanwhile.
    let mut statements: Vec<(String, Vec<Box<dyn ToSql + Sync + Send>>)> = vec![(
        "UPDATE tandem_file SET seq = seq + 1 WHERE id = $1 AND seq = $2".into(),
        vec![Box::new(file_id), Box::new(seq)],
    )];
    statements.push((
        "INSERT INTO tandem_file_log (file_id, seq, changes) VALUES ($1, $2, $3)".into(),
        vec![
            Box::new(file_id),
            Box::new(next),
            Box::new(encode_changes(changes)),
        ],
    ));
    for c in changes {
        match c {
            RowChange::Put {
                table,
                rowid,
                values,
                insert,
            } => {
                let t = tables
                    .get(table)
                    .ok_or_else(|| PostgresError::new(format!("no mirror of table {table}")))?;
                if values.len() != t.columns.len() {
                    return Err(PostgresError::new(format!(
                        "{} values for the {} columns of {table}",
                        values.len(),
                        t.columns.len()
                    )));
                }
                let cols: Vec<String> = t.columns.iter().map(|(c, _)| format!("\"{c}\"")).collect();
                let marks: Vec<String> = (0..cols.len()).map(|i| format!("${}", i + 3)).collect();
                // Strict: an insert of a row that exists, or an update of one that does not,
                // changes no row and fails the push (the copy disagrees with the database).
                let sql = match (*insert, cols.is_empty()) {
                    (true, _) => format!(
                        "INSERT INTO {} (file_id, row_id{}{}) VALUES ($1, $2{}{}) ON CONFLICT DO NOTHING",
                        t.mirror(),
                        if cols.is_empty() { "" } else { ", " },
                        cols.join(", "),
                        if cols.is_empty() { "" } else { ", " },
                        marks.join(", "),
                    ),
                    (false, false) => format!(
                        "UPDATE {} SET {} WHERE file_id = $1 AND row_id = $2",
                        t.mirror(),
                        cols.iter()
                            .zip(&marks)
                            .map(|(c, m)| format!("{c} = {m}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    (false, true) => format!(
                        "SELECT 1 FROM {} WHERE file_id = $1 AND row_id = $2",
                        t.mirror()
                    ),
                };
                let mut params: Vec<Box<dyn ToSql + Sync + Send>> =
                    vec![Box::new(file_id), Box::new(*rowid)];
                for (v, (_, ty)) in values.iter().zip(&t.columns) {
                    params.push(to_postgres(v, *ty)?);
                }
                statements.push((sql, params));
            }
            RowChange::Delete { table, rowid } => {
                let t = tables
                    .get(table)
                    .ok_or_else(|| PostgresError::new(format!("no mirror of table {table}")))?;
                statements.push((
                    format!(
                        "DELETE FROM {} WHERE file_id = $1 AND row_id = $2",
                        t.mirror()
                    ),
                    vec![Box::new(file_id), Box::new(*rowid)],
                ));
            }
        }
    }
    statements.push((
        "SELECT pg_notify($1, $2)".into(),
        vec![
            Box::new(CHANNEL),
            Box::new(format!("{payload_origin} {next} {name}")),
        ],
    ));
    // Statements up to here change (or, for NOTIFY, return) exactly one row each.
    let strict = statements.len();
    if !staged.is_empty() {
        // The mirror rows this write changes: the queue trigger skips them (no echo).
        statements.push((super::mirror::AS_SERVER.into(), Vec::new()));
        for (sql, params) in staged {
            let params: Vec<Box<dyn ToSql + Sync + Send>> = params
                .iter()
                .map(|p| Box::new(p.clone()) as Box<dyn ToSql + Sync + Send>)
                .collect();
            statements.push((sql.clone(), params));
        }
    }
    if next % 64 == 0 {
        statements.push((
            "DELETE FROM tandem_file_log WHERE file_id = $1 AND seq <= $2".into(),
            vec![Box::new(file_id), Box::new(next - LOG_KEEP)],
        ));
    }
    let mut prepared = HashMap::new();
    for (sql, _) in &statements {
        if !prepared.contains_key(sql) {
            let s = client
                .prepare_cached(sql)
                .await
                .map_err(pg("preparing a mirror statement"))?;
            prepared.insert(sql.clone(), s);
        }
    }
    let runs = statements.iter().map(|(sql, params)| {
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let statement = &prepared[sql];
        async move { client.execute(statement, &refs).await }
    });
    let counts = futures_util::future::try_join_all(runs)
        .await
        .map_err(pg("writing the mirror rows"))?;
    if counts.first() != Some(&1) {
        return Err(PostgresError::new(format!(
            "the file's sequence is no longer {seq}: it was written without this process's lock"
        )));
    }
    if let Some(i) = counts[..strict].iter().position(|&n| n != 1) {
        return Err(PostgresError::new(format!(
            "the database disagrees with the working copy: {} changed {} rows, not 1",
            statements[i].0, counts[i]
        )));
    }
    client.batch_execute(then).await.map_err(pg("COMMIT"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_round_trip_and_a_truncated_one_is_an_error() {
        let changes = vec![
            RowChange::Put {
                table: "history".into(),
                rowid: 7,
                insert: true,
                values: vec![
                    Value::Integer(-3),
                    Value::Real(1.5),
                    Value::Text("ü".into()),
                    Value::Blob(vec![0, 1, 2]),
                    Value::Null,
                ],
            },
            RowChange::Delete {
                table: "meta".into(),
                rowid: i64::MIN,
            },
        ];
        let bytes = encode_changes(&changes);
        assert_eq!(decode_changes(&bytes).unwrap(), changes);
        // A cut between two changes is a shorter entry; anywhere else, an error.
        let mut errors = 0;
        for cut in 0..bytes.len() {
            match decode_changes(&bytes[..cut]) {
                Ok(prefix) => assert!(
                    prefix.len() < changes.len() && changes.starts_with(&prefix),
                    "cut at {cut}"
                ),
                Err(_) => errors += 1,
            }
        }
        assert_eq!(
            errors,
            bytes.len() - 2,
            "all but the two cuts between changes"
        );
        assert!(decode_changes(&[9, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    /// What the recording relies on: SQLite reports the rows REPLACE removes to the pre-update
    /// hook, for a rowid conflict and for another unique key alike.
    #[test]
    fn sqlite_reports_what_replace_removes() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE ipk (k INTEGER PRIMARY KEY, v TEXT);
             CREATE TABLE keyed (a INTEGER NOT NULL, b INTEGER NOT NULL, PRIMARY KEY (a));",
        )
        .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        conn.preupdate_hook(Some(
            move |action: Action, _: &str, table: &str, case: &PreUpdateCase| {
                let rowid = match case {
                    PreUpdateCase::Insert(n) => n.get_new_row_id(),
                    PreUpdateCase::Delete(o) => o.get_old_row_id(),
                    PreUpdateCase::Update {
                        new_value_accessor, ..
                    } => new_value_accessor.get_new_row_id(),
                    PreUpdateCase::Unknown => -1,
                };
                sink.lock().unwrap().push((action, table.to_owned(), rowid));
            },
        ))
        .unwrap();
        for sql in [
            "INSERT INTO ipk VALUES (1, 'x')",
            "INSERT OR REPLACE INTO ipk VALUES (1, 'y')",
            "INSERT INTO keyed VALUES (1, 1)",
            "INSERT OR REPLACE INTO keyed VALUES (1, 2)",
        ] {
            conn.execute(sql, []).unwrap();
        }
        let seen = seen.lock().unwrap().clone();
        let actions: Vec<(Action, &str)> = seen.iter().map(|(a, t, _)| (*a, t.as_str())).collect();
        assert_eq!(
            actions,
            vec![
                (Action::SQLITE_INSERT, "ipk"),
                (Action::SQLITE_DELETE, "ipk"),
                (Action::SQLITE_INSERT, "ipk"),
                (Action::SQLITE_INSERT, "keyed"),
                (Action::SQLITE_DELETE, "keyed"),
                (Action::SQLITE_INSERT, "keyed"),
            ],
            "{seen:?}"
        );
    }

    #[test]
    fn declared_types_follow_sqlite_affinity() {
        assert_eq!(ColumnType::of_declared("INTEGER"), ColumnType::Integer);
        assert_eq!(ColumnType::of_declared("BIGINT"), ColumnType::Integer);
        assert_eq!(ColumnType::of_declared("TEXT"), ColumnType::Text);
        assert_eq!(ColumnType::of_declared("VARCHAR(5)"), ColumnType::Text);
        assert_eq!(ColumnType::of_declared("BLOB"), ColumnType::Blob);
        assert_eq!(ColumnType::of_declared(""), ColumnType::Blob);
        assert_eq!(ColumnType::of_declared("DOUBLE"), ColumnType::Real);
    }

    #[test]
    fn a_value_postgres_cannot_hold_in_its_column_is_refused() {
        assert!(to_postgres(&Value::Text("x".into()), ColumnType::Integer).is_err());
        assert!(to_postgres(&Value::Blob(vec![1]), ColumnType::Text).is_err());
        assert!(to_postgres(&Value::Integer(1), ColumnType::Real).is_ok());
        assert!(to_postgres(&Value::Integer(-7), ColumnType::Text).is_ok());
        assert!(to_postgres(&Value::Null, ColumnType::Blob).is_ok());
    }
}
