//! The SQLite layout: which tables and columns hold which classes and properties, and the
//! metadata tables beside them.
//!
//! - `"t:<Class>"`: one row per object, identified within the file by its SQLite `rowid`, with
//!   `_pk` (top-level classes, unique) and one column `"p:<prop>"` per single-valued property
//!   (plus `"k:<prop>"`, the value's kind, for mixed properties). A class whose primary key is
//!   a required `int` is `(_pk INTEGER PRIMARY KEY, ...)`: the key is the rowid, so the table
//!   is one B-tree (one page written per one-object commit instead of two). Other top-level
//!   classes are `(_id INTEGER PRIMARY KEY, _pk UNIQUE, ...)`, and embedded classes
//!   `(_id INTEGER PRIMARY KEY, ...)`; files created before the integer form keep the second
//!   form for every class. SQL therefore names rows by `rowid` (an alias in every form) and
//!   primary keys by `_pk`, never by `_id`. An embedded-object property holds the child's
//!   rowid.
//! - `"x:<Class>:<prop>"`: the search index of an indexed property (`Property::indexed`), on
//!   its `"p:<prop>"` column; created and dropped at open to follow the app's schema.
//! - `"l:<Class>:<prop>"` (owner, pos, v, k): list elements at positions 0..n-1.
//! - `"s:<Class>:<prop>"` (owner, v, k): set elements.
//! - `"d:<Class>:<prop>"` (owner, key, v, k): dictionary entries.
//! - `_tandem_table`, `_tandem_column`: the schema as the file knows it.
//! - `_tandem_history`: the client history, one row per local changeset.
//! - `_tandem_sync`: sync metadata (client file ident and salt, download and upload cursors,
//!   latest server version and salt, the version the history is trimmed through).
//! - `_tandem_sync_path`: the server path this file syncs with (one row, once a server first
//!   answered a session's IDENT), so that a session with another path is refused.
//! - `_tandem_reciprocal`: the reciprocal (transformed) forms of local changesets the server
//!   has not integrated yet, for OT.
//! - `_tandem_inherited`: the inherited window, local changesets the server had integrated
//!   under an earlier client file ident when a client reset started the history afresh (their
//!   ident, salt, version, changeset and meta), kept so that a later reset whose server lost
//!   them recovers them.
//! - `_tandem_subscription_set`: flexible sync subscription sets, one row per version (its
//!   state, the server's error, the subscriptions as JSON, the last local version committed
//!   before it).
//! - `_tandem_transact`: the local changeset committed by `SyncSession::transact` that waits
//!   for the server's verdict (at most one row: its version, and the server's reason once it
//!   rejected it), so a crash before the verdict or the rollback never turns it into an
//!   ordinary upload.
//! - `_tandem_quarantine`: per local changeset, the instructions a client reset could not
//!   recover, kept until the app clears them; `_tandem_quarantine_instruction` names each
//!   (index in the original changeset, rendering, reason).
//!
//! Value columns are declared without a type, so SQLite keeps every value exactly as bound
//! (no affinity conversions) while comparisons and indexes still work.

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;
use crate::changeset::{CollectionType, PayloadType};
use crate::state::{ColumnSpec, Schemas, TableSchema, TableSpec};

/// Version of this layout, kept in `PRAGMA user_version`. Files with a larger number were
/// written by a newer Tandem and are refused. A file is raised to a version only by the first
/// write that needs it, so it stays readable by older Tandems until then.
///
/// - 1: every top-level class in `(_id INTEGER PRIMARY KEY, _pk UNIQUE, ...)`.
/// - 2: a class with a required `int` key may be `(_pk INTEGER PRIMARY KEY, ...)`, which a
///   Tandem reading version 1 cannot use. New files start at 2; a version-1 file is raised to 2
///   when its first such table is created.
/// - 3: a link to the object whose primary key is null is stored as an empty BLOB (the `codec`
///   module), which a Tandem reading version 2 would take for a corrupt value (it stored such
///   links as NULL, losing them, so no older file holds one). A file is raised to 3 by the
///   write that stores its first such link in a link column or a collection of links.
/// - 4: `_tandem_transact` may hold a transaction of `SyncSession::transact` waiting for the
///   server's verdict, which a Tandem reading version 3 knows nothing of: it would upload that
///   transaction as an ordinary changeset, unchecked. A file is raised to 4 by the commit that
///   records its first such transaction.
pub const FORMAT_VERSION: i64 = 4;

/// The format version new files start at ([`FORMAT_VERSION`]).
const NEW_FILE_FORMAT: i64 = 2;

/// The format version that introduced the integer-key table form ([`FORMAT_VERSION`]).
const ROWID_KEY_FORMAT: i64 = 2;

/// The format version that introduced links to the null key ([`FORMAT_VERSION`]).
const NULL_KEY_LINK_FORMAT: i64 = 3;

/// The format version that introduced transactions waiting for a verdict ([`FORMAT_VERSION`]).
const PENDING_TRANSACT_FORMAT: i64 = 4;

/// Raises the file's format version to `version` (in the caller's transaction) unless it is
/// there already.
fn raise_format(conn: &Connection, version: i64) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current < version {
        conn.pragma_update(None, "user_version", version)?;
    }
    Ok(())
}

/// Raises the file to the format that stores links to the null key, in the transaction that
/// stores one ([`FORMAT_VERSION`] 3).
pub(crate) fn allow_null_key_links(conn: &Connection) -> rusqlite::Result<()> {
    raise_format(conn, NULL_KEY_LINK_FORMAT)
}

/// Raises the file to the format that may hold a transaction waiting for the server's verdict,
/// in the commit that records one ([`FORMAT_VERSION`] 4).
pub(crate) fn allow_pending_transact(conn: &Connection) -> rusqlite::Result<()> {
    raise_format(conn, PENDING_TRANSACT_FORMAT)
}

/// The file's format version (`PRAGMA user_version`, 0 for a new file), or
/// [`StoreError::FormatTooNew`] if this build cannot read it. Only reads: a connection checks
/// it before it changes anything (the journal mode), so a refused file is left as it was.
pub(crate) fn readable_version(conn: &Connection) -> Result<i64, StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > FORMAT_VERSION {
        return Err(StoreError::FormatTooNew {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(version)
}

/// Quotes an identifier for SQL.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub(crate) fn object_table(class: &str) -> String {
    quote(&format!("t:{class}"))
}

/// The quoted name of the search index of a class's property (`"x:<Class>:<prop>"`,
/// [`crate::model::Property::indexed`]).
pub(crate) fn search_index(class: &str, prop: &str) -> String {
    quote(&search_index_name(class, prop))
}

/// [`search_index`] unquoted: `x:<Class>:<prop>`. Class and property are joined with `:`,
/// which names may hold, so two properties can spell one name (`Schema::new` and the opens
/// refuse that).
pub(crate) fn search_index_name(class: &str, prop: &str) -> String {
    format!("x:{class}:{prop}")
}

/// Gives each class of `schema` the search indexes it declares
/// ([`crate::model::Property::indexed`]): creates the missing ones on the property's column and
/// drops those of the properties it declares without an index. Classes and properties `schema`
/// does not name keep theirs, as they keep their tables and columns. A primary key needs none (`_pk` is the rowid or unique). Run at open, in the
/// migration's transaction; the indexes are local to the file, like realm-core's.
pub(crate) fn search_indexes(
    conn: &Connection,
    schema: &crate::model::Schema,
) -> Result<(), StoreError> {
    // Every class's drops before any class's creates: an index a schema drops from one class
    // frees its name for another class's (names can clash, `refuse_index_name_clash`).
    let mut creates = Vec::new();
    for class in schema.classes() {
        let prefix = format!("x:{}:", class.name);
        let existing: Vec<String> = conn
            .prepare_cached(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1
                 AND substr(name, 1, length(?2)) = ?2",
            )?
            .query_map(params![format!("t:{}", class.name), prefix], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let wanted = class
            .properties
            .iter()
            .filter(|p| p.indexed && class.primary_key.as_deref() != Some(p.name.as_str()))
            .map(|p| p.name.as_str());
        for name in &existing {
            let prop = &name[prefix.len()..];
            // Only a property the schema declares unindexed loses its index: one it omits
            // stays as it is, like its column (an older app version, another handle).
            let declared = class.properties.iter().any(|p| p.name == prop);
            if declared && !wanted.clone().any(|w| w == prop) {
                conn.execute_batch(&format!("DROP INDEX {}", quote(name)))?;
            }
        }
        for prop in wanted {
            if !existing.iter().any(|e| &e[prefix.len()..] == prop) {
                creates.push((class.name.as_str(), prop));
            }
        }
    }
    for (class, prop) in creates {
        refuse_index_name_clash(conn, class, prop)?;
        conn.execute_batch(&format!(
            "CREATE INDEX {} ON {} ({})",
            search_index(class, prop),
            object_table(class),
            value_column(prop)
        ))?;
    }
    Ok(())
}

/// [`StoreError::InvalidArgument`] naming both properties if the file already has an index
/// named as `class.prop`'s search index would be, on another class's table: index names join
/// class and property with `:` (`"x:Q:x:y"` is both `Q.x:y`'s and `Q:x.y`'s), and SQLite
/// ignores ASCII case in them. `Schema::new` refuses such a pair within one schema; this is
/// the pair of one schema and a file an earlier one left.
fn refuse_index_name_clash(conn: &Connection, class: &str, prop: &str) -> Result<(), StoreError> {
    let name = search_index_name(class, prop);
    let other: Option<(String, String)> = conn
        .query_row(
            "SELECT name, tbl_name FROM sqlite_master
             WHERE type = 'index' AND name = ?1 COLLATE NOCASE",
            [&name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((index, table)) = other else {
        return Ok(());
    };
    // `t:<Class>` and `x:<Class>:<prop>`: the other class and property, as the file names them.
    let other_class = table.strip_prefix("t:").unwrap_or(&table);
    let other_prop = index.get(other_class.len() + 3..).unwrap_or(&index);
    Err(StoreError::InvalidArgument(format!(
        "{class}.{prop} cannot be indexed: its search index would be SQLite's '{name}', the \
         name of the index of {other_class}.{other_prop} in the file (class and property names \
         are joined with ':', and SQLite ignores ASCII case); rename one"
    )))
}

pub(crate) fn value_column(prop: &str) -> String {
    quote(&format!("p:{prop}"))
}

pub(crate) fn kind_column(prop: &str) -> String {
    quote(&format!("k:{prop}"))
}

/// The `INSERT` of a new object of `class` with the single-valued `properties` (each with
/// whether it is mixed, so its kind column is written too): `_pk` then, in order, each
/// property's value column (and kind column), bound as `?1`, `?2`, ... in that order.
pub(crate) fn insert_object_sql<'p>(
    class: &str,
    properties: impl IntoIterator<Item = (&'p str, bool)>,
) -> String {
    let mut columns = String::from("_pk");
    let mut count = 1;
    for (prop, mixed) in properties {
        columns.push_str(", ");
        columns.push_str(&value_column(prop));
        count += 1;
        if mixed {
            columns.push_str(", ");
            columns.push_str(&kind_column(prop));
            count += 1;
        }
    }
    let placeholders = (1..=count)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {} ({columns}) VALUES ({placeholders})",
        object_table(class)
    )
}

/// Whether an `INSERT` of an object failed because its primary key is taken (the key's
/// `INTEGER PRIMARY KEY` or its `UNIQUE` constraint refused the row).
pub(crate) fn is_key_taken(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

pub(crate) fn collection_table(class: &str, prop: &str, kind: CollectionType) -> String {
    quote(&collection_table_name(class, prop, kind))
}

/// [`collection_table`] unquoted: `l:`, `s:` or `d:` by kind, then `<Class>:<prop>`. Class and
/// property are joined with `:`, which names may hold, so two properties can spell one name
/// (`Schema::new` and `state::checks` refuse that).
pub(crate) fn collection_table_name(class: &str, prop: &str, kind: CollectionType) -> String {
    let tag = match kind {
        CollectionType::List => "l",
        CollectionType::Set => "s",
        CollectionType::Dictionary => "d",
        CollectionType::Single => "x",
    };
    format!("{tag}:{class}:{prop}")
}

/// SQL that is true when the primary-key column `pk` holds the key `value` (an SQL expression:
/// a parameter, a link column), compared with `op` (`IS`, or `=` where a NULL must match
/// nothing), and of the same type. The type check keeps both table forms alike: an
/// `INTEGER PRIMARY KEY` would otherwise take the text `'5'` for the integer 5 (its affinity
/// converts numeric text), where the untyped `_pk UNIQUE` never did. Every comparison of `_pk`
/// with a key goes through here, and with a stored link through [`link_matches`] (which uses
/// it); the `pk` side still drives the lookup.
pub(crate) fn key_matches(pk: &str, op: &str, value: &str) -> String {
    format!("{pk} {op} {value} AND typeof({pk}) = typeof({value})")
}

/// SQL that is true when the primary-key column `pk` holds the key that the stored link `link`
/// (an SQL expression: a link column, a collection's `v`) names, as [`key_matches`] with `IS`
/// but for a stored link: NULL (no link) names nothing, and the empty BLOB names the null key
/// (the `codec` module), which `pk` holds as NULL. `pk IS nullif(link, X'')` keeps the `pk`
/// side an index lookup.
pub(crate) fn link_matches(pk: &str, link: &str) -> String {
    format!(
        "({link} IS NOT NULL AND {})",
        key_matches(pk, "IS", &format!("nullif({link}, X'')"))
    )
}

/// The row id of the top-level object of `class` with primary key `key`, if it exists (an
/// indexed lookup on `_pk`; a key of another type finds nothing, [`key_matches`]).
pub(crate) fn row_id(
    conn: &Connection,
    class: &str,
    key: &crate::state::Key,
) -> rusqlite::Result<Option<i64>> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached(&format!(
        "SELECT rowid FROM {} WHERE {}",
        object_table(class),
        key_matches("_pk", "IS", "?1")
    ))?
    .query_row([super::codec::encode_key(key)], |r| r.get(0))
    .optional()
}

/// Creates the metadata tables of a new file, or checks the format of an existing one.
pub(crate) fn init(conn: &Connection) -> Result<(), StoreError> {
    let version = readable_version(conn)?;
    if version == 0 {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS _tandem_table (
                 name TEXT PRIMARY KEY,
                 embedded INTEGER NOT NULL,
                 pk_field TEXT,
                 pk_type INTEGER,
                 pk_nullable INTEGER,
                 asymmetric INTEGER
             );
             CREATE TABLE IF NOT EXISTS _tandem_column (
                 class TEXT NOT NULL,
                 name TEXT NOT NULL,
                 value_type INTEGER NOT NULL,
                 link_target TEXT,
                 nullable INTEGER NOT NULL,
                 collection INTEGER NOT NULL,
                 key_type INTEGER,
                 PRIMARY KEY (class, name)
             );
             CREATE TABLE IF NOT EXISTS _tandem_history (
                 version INTEGER PRIMARY KEY,
                 changeset BLOB NOT NULL,
                 last_integrated_server_version INTEGER NOT NULL,
                 origin_timestamp INTEGER NOT NULL,
                 origin_file_ident INTEGER NOT NULL
             );",
        )?;
        conn.pragma_update(None, "user_version", NEW_FILE_FORMAT)?;
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _tandem_sync (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS _tandem_sync_path (id INTEGER PRIMARY KEY CHECK (id = 1), path TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS _tandem_reciprocal (version INTEGER PRIMARY KEY, changeset BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS _tandem_inherited (
             seq INTEGER PRIMARY KEY,
             ident INTEGER NOT NULL,
             salt INTEGER NOT NULL,
             version INTEGER NOT NULL,
             changeset BLOB NOT NULL,
             last_integrated_server_version INTEGER NOT NULL,
             origin_timestamp INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS _tandem_quarantine (
             id INTEGER PRIMARY KEY,
             original_version INTEGER NOT NULL,
             changeset BLOB NOT NULL,
             reason TEXT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS _tandem_quarantine_instruction (
             quarantine_id INTEGER NOT NULL,
             position INTEGER NOT NULL,
             original_index INTEGER NOT NULL,
             instruction TEXT NOT NULL,
             reason TEXT NOT NULL,
             PRIMARY KEY (quarantine_id, position)
         );
         CREATE TABLE IF NOT EXISTS _tandem_transact (version INTEGER PRIMARY KEY, rejected TEXT);
         CREATE TABLE IF NOT EXISTS _tandem_subscription_set (
             version INTEGER PRIMARY KEY,
             state TEXT NOT NULL,
             error TEXT,
             subscriptions TEXT NOT NULL,
             snapshot_version INTEGER NOT NULL
         );",
    )?;
    Ok(())
}

/// The schema of a read snapshot, and its search indexes, loaded again only when SQLite's
/// schema cookie (`PRAGMA schema_version`) differs from the one they were last loaded at.
///
/// Sound because every change to the schema tables (`_tandem_table`, `_tandem_column`) is
/// made in the transaction of the DDL that goes with it ([`create_table`], [`add_column`],
/// [`drop_column`], [`drop_table`]), and SQLite changes the cookie with every committed DDL
/// (`CREATE INDEX` and `DROP INDEX` included), whichever connection or process commits it.
/// Loading the schema was most of a primary-key lookup (two statements parsed and every
/// schema row read per read transaction; issue 18, goal 2) and of every round of the notifier.
#[derive(Default)]
pub(crate) struct SchemaCache(std::sync::Mutex<Option<(i64, Snapshot)>>);

/// A snapshot's schema and search indexes ([`SchemaCache`]); clones share them.
#[derive(Clone)]
pub(crate) struct Snapshot {
    pub(crate) schemas: std::sync::Arc<Schemas>,
    pub(crate) indexes: std::sync::Arc<Indexes>,
}

impl SchemaCache {
    /// The schema and indexes of the snapshot of `conn`'s open read transaction (whose first
    /// read this may be: it then fixes the snapshot).
    pub(crate) fn get(&self, conn: &Connection) -> Result<Snapshot, StoreError> {
        let cookie: i64 = conn
            .prepare_cached("PRAGMA schema_version")?
            .query_row([], |r| r.get(0))?;
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, snapshot)) = &*kept {
            if *at == cookie {
                return Ok(snapshot.clone());
            }
        }
        let snapshot = Snapshot {
            schemas: std::sync::Arc::new(load(conn)?.schemas),
            indexes: std::sync::Arc::new(Indexes::load(conn)?),
        };
        *kept = Some((cookie, snapshot.clone()));
        Ok(snapshot)
    }
}

/// Which columns lead a search index in the file, by table (unquoted SQL names: `t:Task` ->
/// `p:owner` for an indexed property, [`crate::model::Property::indexed`]; `_pk` for a
/// `_pk UNIQUE` key; a required int key is the rowid and has no index). Read from
/// SQLite's own catalog (`sqlite_master` and `pragma_index_info`), so an index made by another
/// schema or process counts too. What can serve a query's filter (`query::compile_with`).
#[derive(Debug, Default)]
pub(crate) struct Indexes(std::collections::HashMap<String, Vec<String>>);

impl Indexes {
    /// The indexes of the file `conn` reads (as of its snapshot, if a read is open).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] if the catalog cannot be read.
    pub(crate) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut stmt = conn.prepare(
            // `main` named: an index of the same name in `temp` would be found first.
            "SELECT m.tbl_name, i.name FROM main.sqlite_master m, pragma_index_info(m.name, 'main') i
             WHERE m.type = 'index' AND i.seqno = 0",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        let mut leading: std::collections::HashMap<String, Vec<String>> = Default::default();
        for row in rows {
            // An index on an expression has no column name.
            if let (table, Some(column)) = row? {
                leading.entry(table).or_default().push(column);
            }
        }
        Ok(Indexes(leading))
    }

    /// Indexes led by these (table, column) pairs (unquoted SQL names).
    #[cfg(test)]
    pub(crate) fn of(pairs: &[(&str, &str)]) -> Self {
        let mut leading: std::collections::HashMap<String, Vec<String>> = Default::default();
        for &(table, column) in pairs {
            leading
                .entry(table.to_owned())
                .or_default()
                .push(column.to_owned());
        }
        Indexes(leading)
    }

    /// Whether an index of `table` starts with `column` (both unquoted SQL names).
    pub(crate) fn leads(&self, table: &str, column: &str) -> bool {
        self.0
            .get(table)
            .is_some_and(|columns| columns.iter().any(|c| c == column))
    }
}

/// Loads the schema recorded in the file.
pub(crate) fn load(conn: &Connection) -> Result<crate::state::State, StoreError> {
    let mut state = crate::state::State::new();
    let mut tables = conn.prepare(
        "SELECT name, embedded, pk_field, pk_type, pk_nullable, asymmetric FROM _tandem_table",
    )?;
    let rows = tables.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, bool>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, Option<bool>>(4)?,
            r.get::<_, Option<bool>>(5)?,
        ))
    })?;
    for row in rows {
        let (name, embedded, pk_field, pk_type, pk_nullable, asymmetric) = row?;
        let spec = if embedded {
            TableSpec::Embedded
        } else {
            TableSpec::TopLevel {
                pk_field: pk_field.unwrap_or_default(),
                pk_type: payload_type(pk_type.unwrap_or(0))?,
                pk_nullable: pk_nullable.unwrap_or(false),
                asymmetric: asymmetric.unwrap_or(false),
            }
        };
        state.schemas.insert(
            name,
            TableSchema {
                spec,
                columns: Default::default(),
            },
        );
    }
    let mut columns = conn.prepare(
        "SELECT class, name, value_type, link_target, nullable, collection, key_type
         FROM _tandem_column",
    )?;
    let rows = columns.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, bool>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, Option<i64>>(6)?,
        ))
    })?;
    for row in rows {
        let (class, name, value_type, link_target, nullable, collection, key_type) = row?;
        let column = ColumnSpec {
            value_type: payload_type(value_type)?,
            link_target,
            nullable,
            collection: CollectionType::from_code(collection as u64)
                .ok_or_else(|| StoreError::Corrupt(format!("collection code {collection}")))?,
            key_type: key_type.map(payload_type).transpose()?,
        };
        match state.schemas.get_mut(&class) {
            Some(t) => {
                t.columns.insert(name, column);
            }
            None => {
                return Err(StoreError::Corrupt(format!(
                    "column of unknown class {class}"
                )))
            }
        }
    }
    Ok(state)
}

fn payload_type(code: i64) -> Result<PayloadType, StoreError> {
    PayloadType::from_code(code).ok_or_else(|| StoreError::Corrupt(format!("payload type {code}")))
}

/// Creates the table of a new class and records it.
pub(crate) fn create_table(
    conn: &Connection,
    name: &str,
    spec: &TableSpec,
) -> Result<(), StoreError> {
    let table = object_table(name);
    match spec {
        TableSpec::Embedded => {
            conn.execute_batch(&format!("CREATE TABLE {table} (_id INTEGER PRIMARY KEY)"))?;
            conn.execute(
                "INSERT INTO _tandem_table (name, embedded) VALUES (?1, 1)",
                params![name],
            )?;
        }
        TableSpec::TopLevel {
            pk_field,
            pk_type,
            pk_nullable,
            asymmetric,
        } => {
            // A required integer key is the rowid itself (the module header); a null key could
            // not be (SQLite gives a NULL rowid a fresh number), nor can other types.
            let columns = if *pk_type == PayloadType::Int && !*pk_nullable {
                // The first table of this form raises the file to the format version that
                // introduced it, in the same transaction.
                raise_format(conn, ROWID_KEY_FORMAT)?;
                "_pk INTEGER PRIMARY KEY"
            } else {
                "_id INTEGER PRIMARY KEY, _pk UNIQUE"
            };
            conn.execute_batch(&format!("CREATE TABLE {table} ({columns})"))?;
            conn.execute(
                "INSERT INTO _tandem_table (name, embedded, pk_field, pk_type, pk_nullable, asymmetric)
                 VALUES (?1, 0, ?2, ?3, ?4, ?5)",
                params![name, pk_field, pk_type.code(), pk_nullable, asymmetric],
            )?;
        }
    }
    Ok(())
}

/// Adds a property's storage to a class and records it. `default` is the SQL literal new rows
/// (and existing ones) start with for a single-valued property.
pub(crate) fn add_column(
    conn: &Connection,
    class: &str,
    name: &str,
    column: &ColumnSpec,
    default: &str,
    embedded_single: bool,
) -> Result<(), StoreError> {
    let table = object_table(class);
    match column.collection {
        CollectionType::Single => {
            let default = if embedded_single { "NULL" } else { default };
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {} DEFAULT {default}",
                value_column(name)
            ))?;
            if column.value_type == PayloadType::Null {
                conn.execute_batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN {} DEFAULT 0",
                    kind_column(name)
                ))?;
            }
        }
        CollectionType::List => conn.execute_batch(&format!(
            "CREATE TABLE {} (owner INTEGER NOT NULL, pos INTEGER NOT NULL, v, k INTEGER NOT NULL,
             PRIMARY KEY (owner, pos)) WITHOUT ROWID",
            collection_table(class, name, CollectionType::List)
        ))?,
        CollectionType::Set => conn.execute_batch(&format!(
            "CREATE TABLE {} (owner INTEGER NOT NULL, v, k INTEGER NOT NULL,
             PRIMARY KEY (owner, k, v)) WITHOUT ROWID",
            collection_table(class, name, CollectionType::Set)
        ))?,
        CollectionType::Dictionary => conn.execute_batch(&format!(
            "CREATE TABLE {} (owner INTEGER NOT NULL, key TEXT NOT NULL, v, k INTEGER NOT NULL,
             PRIMARY KEY (owner, key)) WITHOUT ROWID",
            collection_table(class, name, CollectionType::Dictionary)
        ))?,
    }
    conn.execute(
        "INSERT INTO _tandem_column (class, name, value_type, link_target, nullable, collection, key_type)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            class,
            name,
            column.value_type.code(),
            column.link_target,
            column.nullable,
            i64::from(column.collection.code()),
            column.key_type.map(PayloadType::code),
        ],
    )?;
    Ok(())
}

/// Removes a property's storage and record.
pub(crate) fn drop_column(
    conn: &Connection,
    class: &str,
    name: &str,
    column: &ColumnSpec,
) -> Result<(), StoreError> {
    let table = object_table(class);
    match column.collection {
        CollectionType::Single => {
            // SQLite refuses to drop a column an index covers.
            conn.execute_batch(&format!(
                "DROP INDEX IF EXISTS {}",
                search_index(class, name)
            ))?;
            conn.execute_batch(&format!(
                "ALTER TABLE {table} DROP COLUMN {}",
                value_column(name)
            ))?;
            if column.value_type == PayloadType::Null {
                conn.execute_batch(&format!(
                    "ALTER TABLE {table} DROP COLUMN {}",
                    kind_column(name)
                ))?;
            }
        }
        kind => conn.execute_batch(&format!(
            "DROP TABLE {}",
            collection_table(class, name, kind)
        ))?,
    }
    conn.execute(
        "DELETE FROM _tandem_column WHERE class = ?1 AND name = ?2",
        params![class, name],
    )?;
    Ok(())
}

/// Removes a class's tables and records.
pub(crate) fn drop_table(
    conn: &Connection,
    name: &str,
    schema: &TableSchema,
) -> Result<(), StoreError> {
    for (prop, column) in &schema.columns {
        if column.collection != CollectionType::Single {
            conn.execute_batch(&format!(
                "DROP TABLE {}",
                collection_table(name, prop, column.collection)
            ))?;
        }
    }
    conn.execute_batch(&format!("DROP TABLE {}", object_table(name)))?;
    conn.execute("DELETE FROM _tandem_column WHERE class = ?1", params![name])?;
    conn.execute("DELETE FROM _tandem_table WHERE name = ?1", params![name])?;
    Ok(())
}

/// The value of `key` in `_tandem_sync` (sync metadata), if set and readable.
pub(crate) fn get(conn: &Connection, key: &str) -> Option<u64> {
    use rusqlite::OptionalExtension;
    // Cached: a commit reads several of these keys, and parsing the SQL each time was a
    // measurable part of a one-object transaction.
    conn.prepare_cached("SELECT value FROM _tandem_sync WHERE key = ?1")
        .ok()?
        .query_row([key], |r| r.get::<_, i64>(0))
        .optional()
        .ok()
        .flatten()
        .map(|v| v as u64)
}

/// Sets `key` in `_tandem_sync` to `value`.
pub(crate) fn put(conn: &Connection, key: &str, value: u64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO _tandem_sync (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value as i64])?;
    Ok(())
}
