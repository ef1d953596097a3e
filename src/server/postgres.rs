//! tandem-server on PostgreSQL (cargo feature `postgres`, `--database postgres://...`): several
//! server processes sharing one database.
//!
//! PostgreSQL holds the truth. Each process keeps a working copy of every server file it has
//! open: the same SQLite file [`ServerFile`](super::ServerFile) uses with embedded storage, in
//! `<data dir>/postgres-cache/`, emptied at start. All of the server's logic (integration,
//! downloads, STATE, flexible sync) runs on that copy unchanged; this module keeps the copies
//! and the database equal:
//!
//! - **Mirror of the file's tables.** Every table of a server file (`history`, `client_file`,
//!   `reciprocal`, `client_sync`, `client_file_pending`, `meta`, `server_writer`) has a
//!   PostgreSQL table `tandem_<name>`: the same columns (INTEGER as `bigint`, BLOB as `bytea`,
//!   TEXT as `text`, REAL as `double precision`) plus `file_id` (`tandem_file.id`) and `row_id`
//!   (the SQLite rowid), keyed by both. The App Services store (users, sessions, API keys) is
//!   kept the same way under the file name `app-services`.
//! - **One writer per file at a time, across processes.** Before a server file is used, its
//!   process takes the session-level advisory lock `pg_advisory_lock(tandem_file.id)` and
//!   catches its copy up ([`Replica::acquire`]); it holds the lock until the work is done
//!   ([`Replica::release`]).
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
//!   and the server path; every other process wakes its sessions on that path ([`Postgres::listen`]).
//!   After its listening connection is re-established, a process wakes every session, since
//!   notifications sent meanwhile are lost.
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

/// The notification channel every process listens on. Payload: `<origin> <server path>`.
pub const CHANNEL: &str = "tandem_changes";

/// Entries of `tandem_file_log` kept per file: a copy further behind is rebuilt from the mirror
/// tables.
pub const LOG_KEEP: i64 = 1_024;

/// The directory of the data directory that holds a process's working copies; emptied at
/// start.
pub const CACHE_DIR: &str = "postgres-cache";

/// Connects to `url` on a blocking thread, creates the schema if missing and empties the
/// working copies of `data_dir` ([`CACHE_DIR`]): what `tandem-server --database` does at start.
pub(crate) async fn start(
    url: String,
    data_dir: &std::path::Path,
) -> Result<Arc<Postgres>, super::StartError> {
    let cache = data_dir.join(CACHE_DIR);
    let failed = |e: PostgresError| super::StartError(format!("PostgreSQL (--database): {e}"));
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
    Ok(pg)
}

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
/// a working copy is rebuilt (https://sqlite.org/datatype3.html, section 3). `meta.value` holds
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
    /// Insert or replace the row `rowid` of `table` with `values` (every column, in order).
    Put {
        table: String,
        rowid: i64,
        values: Vec<Value>,
    },
    /// Delete the row `rowid` of `table`.
    Delete { table: String, rowid: i64 },
}

/// `tandem_file_log.changes`: the rows one write changed, in order. Per change: a tag byte
/// (0 put, 1 delete), the table name (u8 length + UTF-8), the rowid (i64 LE); a put then has
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
            } => {
                out.push(0);
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
            0 => {
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
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(pg("the --database URL does not parse"))?;
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
    pub(crate) fn listen(self: &Arc<Self>, wake: Wake) {
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
                if let Err(e) = listen_once(&url, &origin, &wake).await {
                    tracing::warn!(error = %e, "the PostgreSQL notification connection failed; reconnecting in 1 s");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

async fn listen_once(url: &str, origin: &str, wake: &Wake) -> Result<(), PostgresError> {
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
                    if tx.send(n.payload().to_owned()).is_err() {
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
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(pg("LISTEN"))?;
    wake(None);
    while let Some(payload) = rx.recv().await {
        if let Some((from, path)) = payload.split_once(' ') {
            if from != origin {
                wake(Some(path));
            }
        }
    }
    driver.abort();
    Ok(())
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

/// What the hooks of a working copy and its [`Replica`] share.
struct Link {
    tables: Arc<Tables>,
    /// The file's `tandem_file.seq` the working copy holds.
    seq: i64,
    /// A pooled connection holding the file's advisory lock, in an open transaction.
    held: Option<Object>,
    /// The rows the open SQLite transaction changed.
    recorded: Vec<RowChange>,
    /// A change that cannot be mirrored (a table unknown to the schema): the commit is refused.
    refused: Option<String>,
    /// The working copy is being written from PostgreSQL: nothing is recorded or pushed.
    applying: bool,
    /// `seq` before the last push whose SQLite commit has not been seen to succeed.
    pushed: Option<i64>,
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
            link: Arc::new(Mutex::new(Link {
                tables,
                seq: 0,
                held: None,
                recorded: Vec::new(),
                refused: None,
                applying: false,
                pushed: None,
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
                // A new write began: the last push's commit went through.
                l.pushed = None;
                if l.tables.get(table).is_none() {
                    l.refused = Some(format!("a write to table {table}, which is not mirrored"));
                    return;
                }
                let put = |a: &rusqlite::hooks::PreUpdateNewValueAccessor| {
                    let values = (0..a.get_column_count())
                        .map(|i| a.get_new_column_value(i).and_then(owned))
                        .collect::<Result<Vec<_>, _>>();
                    values.map(|values| RowChange::Put {
                        table: table.to_owned(),
                        rowid: a.get_new_row_id(),
                        values,
                    })
                };
                let change = match (action, case) {
                    (Action::SQLITE_INSERT, PreUpdateCase::Insert(new)) => {
                        put(new).map(|p| vec![p])
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
                    ) => put(new).map(|p| {
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
                return false;
            }
            let Some(client) = l.held.take() else {
                l.recorded.clear();
                tracing::error!(file = %name, "refusing a write made without the file's PostgreSQL lock");
                return true;
            };
            let changes = std::mem::take(&mut l.recorded);
            let seq = l.seq;
            let tables = Arc::clone(&l.tables);
            let payload = format!("{} {name}", pg.origin);
            match pg.block(push(client, file_id, seq, changes, tables, payload)) {
                Ok(Ok(client)) => {
                    l.held = Some(client);
                    l.pushed = Some(seq);
                    l.seq = seq + 1;
                    false
                }
                Ok(Err(e)) | Err(e) => {
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
            l.refused = None;
            // A push whose SQLite commit then failed: the copy is behind the database; catching
            // up applies that entry again (applying entries is idempotent).
            if let Some(before) = l.pushed.take() {
                l.seq = before;
            }
        }))
        .map_err(sqlite("installing the rollback hook"))?;
        Ok(())
    }

    /// Takes the file's advisory lock (waiting for any other process that holds it), opens a
    /// transaction and brings the working copy at `conn` up to the database: by the log entries
    /// it misses, or by copying every mirror row when the log no longer reaches back to it.
    /// Holding the lock already (a nested call), it does nothing.
    pub(crate) fn acquire(&self, conn: &Connection) -> Result<CatchUp, PostgresError> {
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
                client
                    .execute("SELECT pg_advisory_lock($1)", &[&file_id])
                    .await
                    .map_err(pg("taking the file's lock"))?;
                client
                    .batch_execute("BEGIN")
                    .await
                    .map_err(pg("BEGIN"))?;
                let now: i64 = client
                    .query_one("SELECT seq FROM tandem_file WHERE id = $1", &[&file_id])
                    .await
                    .map_err(pg("reading the file's sequence"))?
                    .get(0);
                if now == seq {
                    return Ok((now, None));
                }
                let rows = client
                    .query(
                        "SELECT seq, changes FROM tandem_file_log WHERE file_id = $1 AND seq > $2 ORDER BY seq",
                        &[&file_id, &seq],
                    )
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
        self.link.lock().unwrap_or_else(|e| e.into_inner()).held = Some(client);
        let result = match work {
            None => Ok(CatchUp::Current),
            Some(Ok(entries)) => self
                .apply_entries(conn, &entries)
                .map(|()| CatchUp::Changed),
            Some(Err(())) => self.rebuild(conn).map(|()| CatchUp::Changed),
        };
        match result {
            Ok(c) => {
                self.link.lock().unwrap_or_else(|e| e.into_inner()).seq = now;
                Ok(c)
            }
            Err(e) => {
                self.abandon();
                Err(e)
            }
        }
    }

    /// Commits the open transaction and releases the advisory lock. A failure closes the
    /// connection instead (which releases both).
    pub(crate) fn release(&self) {
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
            let r = async {
                client.batch_execute("COMMIT").await?;
                client
                    .execute("SELECT pg_advisory_unlock($1)", &[&file_id])
                    .await
                    .map(|_| ())
            }
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
        self.release();
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
    client: Object,
    file_id: i64,
    seq: i64,
    changes: Vec<RowChange>,
    tables: Arc<Tables>,
    payload: String,
) -> Result<Object, PostgresError> {
    let r = push_inner(&client, file_id, seq, &changes, &tables, &payload).await;
    match r {
        Ok(()) => Ok(client),
        Err(e) => {
            drop(Object::take(client));
            Err(e)
        }
    }
}

async fn push_inner(
    client: &Object,
    file_id: i64,
    seq: i64,
    changes: &[RowChange],
    tables: &Tables,
    payload: &str,
) -> Result<(), PostgresError> {
    let next: i64 = client
        .query_one(
            "UPDATE tandem_file SET seq = seq + 1 WHERE id = $1 RETURNING seq",
            &[&file_id],
        )
        .await
        .map_err(pg("advancing the file's sequence"))?
        .get(0);
    if next != seq + 1 {
        return Err(PostgresError::new(format!(
            "the file's sequence is {}, its working copy's {seq}: written without the lock",
            next - 1
        )));
    }
    // Statements and their parameters, sent pipelined (tokio-postgres sends the queries of
    // futures polled together without waiting for each answer).
    let mut statements: Vec<(String, Vec<Box<dyn ToSql + Sync + Send>>)> = Vec::new();
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
                let sets: Vec<String> =
                    cols.iter().map(|c| format!("{c} = EXCLUDED.{c}")).collect();
                let sql = format!(
                    "INSERT INTO {} (file_id, row_id{}{}) VALUES ($1, $2{}{}) ON CONFLICT (file_id, row_id) DO {}",
                    t.mirror(),
                    if cols.is_empty() { "" } else { ", " },
                    cols.join(", "),
                    if cols.is_empty() { "" } else { ", " },
                    marks.join(", "),
                    if sets.is_empty() { "NOTHING".to_owned() } else { format!("UPDATE SET {}", sets.join(", ")) }
                );
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
    futures_util::future::try_join_all(runs)
        .await
        .map_err(pg("writing the mirror rows"))?;
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
        .await
        .map_err(pg("NOTIFY"))?;
    if next % 64 == 0 {
        client
            .execute(
                "DELETE FROM tandem_file_log WHERE file_id = $1 AND seq <= $2",
                &[&file_id, &(next - LOG_KEEP)],
            )
            .await
            .map_err(pg("trimming the file's log"))?;
    }
    client
        .batch_execute("COMMIT; BEGIN")
        .await
        .map_err(pg("COMMIT"))?;
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
