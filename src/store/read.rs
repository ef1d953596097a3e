//! Reading objects back out of the SQLite layout, as [`crate::state`] values.

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::apply::read_mixed_link;
use super::codec::{self, EMBEDDED_KIND};
use super::layout::{collection_table, kind_column, object_table, value_column};
use super::{from_key, layout, query, to_key, Database, StoreError};
use crate::changeset::{CollectionType, PayloadType};
use crate::model::{PrimaryKey, Value};
use crate::state::{
    embedded_target, ColumnSpec, Element, Field, Key, Object, Schemas, State, TableSchema,
    TableSpec, Val,
};

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

/// The target table and key type of a link column.
fn link_info<'a>(schemas: &'a Schemas, column: &'a ColumnSpec) -> Option<(&'a str, PayloadType)> {
    let target = column.link_target.as_deref()?;
    match schemas.get(target).map(|s| &s.spec) {
        Some(TableSpec::TopLevel { pk_type, .. }) => Some((target, *pk_type)),
        _ => None,
    }
}

/// Decodes a stored value of a column, given its kind.
fn value_of(
    schemas: &Schemas,
    column: &ColumnSpec,
    raw: ValueRef<'_>,
    kind: i64,
) -> Result<Val, StoreError> {
    let t = PayloadType::from_code(kind).ok_or_else(|| corrupt(format!("kind {kind}")))?;
    if t == PayloadType::Link && column.value_type == PayloadType::Null {
        return match raw {
            ValueRef::Blob(b) => read_mixed_link(b).ok_or_else(|| corrupt("mixed link")),
            _ => Err(corrupt("mixed link")),
        };
    }
    codec::decode(raw, t, link_info(schemas, column))
        .ok_or_else(|| corrupt(format!("value of kind {kind}")))
}

/// Every top-level object of every class, as a [`State`] (with `schemas` as its schema).
pub(crate) fn export(conn: &Connection, schemas: &Schemas) -> Result<State, StoreError> {
    let mut state = State::new();
    state.schemas = schemas.clone();
    for (class, schema) in schemas {
        if matches!(schema.spec, TableSpec::TopLevel { .. }) {
            state.objects.insert(class.clone(), Default::default());
        }
    }
    for_each_object(conn, schemas, &mut |class, key, object| {
        if let Some(objects) = state.objects.get_mut(class) {
            objects.insert(key, object);
        }
    })?;
    Ok(state)
}

/// Calls `f` with every top-level object of every class, by class name and then by key (the
/// order of [`State::objects`]), reading one object at a time: only the keys of one class are
/// held in memory.
pub(crate) fn for_each_object(
    conn: &Connection,
    schemas: &Schemas,
    f: &mut dyn FnMut(&str, Key, Object),
) -> Result<(), StoreError> {
    for (class, schema) in schemas {
        let TableSpec::TopLevel { pk_type, .. } = schema.spec else {
            continue;
        };
        // A required int key that is the rowid (`layout`): rowid order is key order, and the
        // keys need not be gathered first (a million of them took 40 MB of a server's STATE
        // answer).
        if key_is_rowid(conn, class)? {
            let singles = singles(schema);
            let mut stmt = conn.prepare(&scan_sql(class, &singles))?;
            let mut scan = stmt.query([])?;
            while let Some(row) = scan.next()? {
                let rowid: i64 = row.get(0)?;
                let object = object_of_row(conn, schemas, class, schema, &singles, row, 1, rowid)?;
                f(class, Key::Int(rowid), object);
            }
            continue;
        }
        let mut stmt = conn.prepare(&format!("SELECT rowid, _pk FROM {}", object_table(class)))?;
        let mut rows = stmt
            .query_map([], |r| {
                let id: i64 = r.get(0)?;
                let key = codec::decode_key(r.get_ref(1)?, pk_type);
                Ok((key, id))
            })?
            .map(|row| {
                let (key, id) = row?;
                let key = key.ok_or_else(|| corrupt(format!("primary key of {class}")))?;
                Ok((key, id))
            })
            .collect::<Result<Vec<(Key, i64)>, StoreError>>()?;
        rows.sort_unstable();
        // In key order the rowids usually ascend too (always for a required int key, which
        // is the rowid): then one scan of the table in rowid order reads every object's
        // single-valued columns, instead of a statement per object (which took most of the
        // server's time answering a STATE request for 100,000 objects). A rowid the scan does
        // not reach in step is read on its own.
        if rows.windows(2).all(|w| w[0].1 < w[1].1) {
            let singles = singles(schema);
            let mut stmt = conn.prepare(&scan_sql(class, &singles))?;
            let mut scan = stmt.query([])?;
            let mut keys = rows.into_iter().peekable();
            while let Some(row) = scan.next()? {
                let rowid: i64 = row.get(0)?;
                while let Some((key, id)) = keys.next_if(|(_, id)| *id < rowid) {
                    f(class, key, read_object(conn, schemas, class, id)?);
                }
                match keys.next_if(|(_, id)| *id == rowid) {
                    Some((key, id)) => {
                        let object =
                            object_of_row(conn, schemas, class, schema, &singles, row, 1, id)?;
                        f(class, key, object);
                    }
                    None if keys.peek().is_none() => break,
                    None => {}
                }
            }
            for (key, id) in keys {
                f(class, key, read_object(conn, schemas, class, id)?);
            }
        } else {
            for (key, id) in rows {
                f(class, key, read_object(conn, schemas, class, id)?);
            }
        }
    }
    Ok(())
}

/// Whether the object table of `class` keeps its primary key as the rowid
/// (`_pk INTEGER PRIMARY KEY`, `layout`'s form for a required `int` key).
fn key_is_rowid(conn: &Connection, class: &str) -> Result<bool, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info(?1)
         WHERE name = '_pk' AND pk = 1 AND upper(type) = 'INTEGER'",
        [format!("t:{class}")],
        |r| r.get(0),
    )?;
    Ok(n == 1)
}

/// The scan of every row of `class` in rowid order: the rowid, then `singles` as
/// [`select_singles`] reads them.
fn scan_sql(class: &str, singles: &[(&String, &ColumnSpec)]) -> String {
    if singles.is_empty() {
        format!("SELECT rowid FROM {} ORDER BY rowid", object_table(class))
    } else {
        format!(
            "SELECT rowid, {} FROM {} ORDER BY rowid",
            select_singles(singles, ""),
            object_table(class)
        )
    }
}

/// The single-valued columns of a class, in the order [`select_singles`] reads them.
fn singles(schema: &TableSchema) -> Vec<(&String, &ColumnSpec)> {
    schema
        .columns
        .iter()
        .filter(|(_, c)| c.collection == CollectionType::Single)
        .collect()
}

/// The SELECT list reading `singles` of the table aliased `alias`: for each column its value
/// and its kind (a kind column for mixed, the type's code otherwise), two result columns each.
fn select_singles(singles: &[(&String, &ColumnSpec)], alias: &str) -> String {
    let mut columns = String::new();
    for (prop, column) in singles {
        if !columns.is_empty() {
            columns.push_str(", ");
        }
        columns.push_str(alias);
        columns.push_str(&value_column(prop));
        columns.push_str(", ");
        if column.value_type == PayloadType::Null {
            columns.push_str(alias);
            columns.push_str(&kind_column(prop));
        } else {
            columns.push_str(&column.value_type.code().to_string());
        }
    }
    columns
}

/// How to read the single-valued `column` whose value [`select_singles`] put in result column
/// `at` (its kind in `at + 1`): what depends on the column alone (its embedded target, its
/// link target's class and key type) looked up once, for reading it from many rows.
struct SingleRead<'s> {
    column: &'s ColumnSpec,
    at: usize,
    embedded: Option<&'s str>,
    link: Option<(&'s str, PayloadType)>,
}

impl<'s> SingleRead<'s> {
    fn new(schemas: &'s Schemas, column: &'s ColumnSpec, at: usize) -> Self {
        SingleRead {
            column,
            at,
            embedded: embedded_target(schemas, column),
            link: link_info(schemas, column),
        }
    }

    /// The field in `row`; an embedded object is read whole.
    fn read(
        &self,
        conn: &Connection,
        schemas: &Schemas,
        row: &rusqlite::Row<'_>,
    ) -> Result<Field, StoreError> {
        let (column, at) = (self.column, self.at);
        if let Some(target) = self.embedded {
            return Ok(match row.get::<_, Option<i64>>(at)? {
                Some(child) => Field::Embedded(Some(read_object(conn, schemas, target, child)?)),
                None => Field::Embedded(None),
            });
        }
        let raw = row.get_ref(at)?;
        // Only a mixed column's kind varies by row; the others' is the literal that
        // `select_singles` put in `at + 1`, the column's own type.
        let value = if column.value_type == PayloadType::Null {
            value_of(schemas, column, raw, row.get(at + 1)?)?
        } else {
            codec::decode(raw, column.value_type, self.link)
                .ok_or_else(|| corrupt(format!("value of kind {}", column.value_type.code())))?
        };
        Ok(Field::Value(value))
    }
}

/// The collection property `prop` (declared by `column`, not single-valued) of row `id` of
/// `class`.
fn read_collection(
    conn: &Connection,
    schemas: &Schemas,
    class: &str,
    prop: &str,
    column: &ColumnSpec,
    id: i64,
) -> Result<Field, StoreError> {
    let embedded = embedded_target(schemas, column);
    let kind = column.collection;
    let table = collection_table(class, prop, kind);
    let order = match kind {
        CollectionType::List => "ORDER BY pos",
        CollectionType::Dictionary => "ORDER BY key",
        _ => "",
    };
    let key_col = if kind == CollectionType::Dictionary {
        "key"
    } else {
        "NULL"
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT v, k, {key_col} FROM {table} WHERE owner = ?1 {order}"
    ))?;
    let mut rows = stmt.query([id])?;
    let mut elements = Vec::new();
    while let Some(row) = rows.next()? {
        let k: i64 = row.get(1)?;
        let element = match (embedded, k) {
            (Some(target), EMBEDDED_KIND) => {
                Element::Embedded(read_object(conn, schemas, target, row.get(0)?)?)
            }
            _ => Element::Value(value_of(schemas, column, row.get_ref(0)?, k)?),
        };
        let key: Option<String> = row.get(2)?;
        elements.push((key, element));
    }
    Ok(match kind {
        CollectionType::List => Field::List(elements.into_iter().map(|(_, e)| e).collect()),
        CollectionType::Dictionary => Field::Dictionary(
            elements
                .into_iter()
                .map(|(k, e)| (k.unwrap_or_default(), e))
                .collect(),
        ),
        _ => {
            let mut values: Vec<Val> = elements
                .into_iter()
                .filter_map(|(_, e)| match e {
                    Element::Value(v) => Some(v),
                    Element::Embedded(_) => None,
                })
                .collect();
            values.sort();
            Field::Set(values)
        }
    })
}

/// One row of `class`, with its collections and embedded objects.
pub(crate) fn read_object(
    conn: &Connection,
    schemas: &Schemas,
    class: &str,
    id: i64,
) -> Result<Object, StoreError> {
    let schema = schemas
        .get(class)
        .ok_or_else(|| corrupt(format!("class {class}")))?;
    let mut object = Object::default();
    // Every single-valued column in one SELECT (one statement per object, not per property:
    // reading a result of many objects is dominated by statement executions).
    let singles = singles(schema);
    if !singles.is_empty() {
        let sql = format!(
            "SELECT {} FROM {} WHERE rowid = ?1",
            select_singles(&singles, ""),
            object_table(class)
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([id])?;
        let row = rows
            .next()?
            .ok_or_else(|| corrupt(format!("row {id} of {class}")))?;
        object = object_of_row(conn, schemas, class, schema, &singles, row, 0, id)?;
    } else {
        collections_of(conn, schemas, class, schema, id, &mut object)?;
    }
    Ok(object)
}

/// The object whose single-valued columns `row` holds from result column `at` on (as
/// [`select_singles`] lists them), with its collections read by row id `id`.
#[allow(clippy::too_many_arguments)]
fn object_of_row(
    conn: &Connection,
    schemas: &Schemas,
    class: &str,
    schema: &TableSchema,
    singles: &[(&String, &ColumnSpec)],
    row: &rusqlite::Row<'_>,
    at: usize,
    id: i64,
) -> Result<Object, StoreError> {
    let mut object = Object::default();
    for (i, (prop, column)) in singles.iter().enumerate() {
        let field = SingleRead::new(schemas, column, at + 2 * i).read(conn, schemas, row)?;
        object.fields.insert((*prop).clone(), field);
    }
    collections_of(conn, schemas, class, schema, id, &mut object)?;
    Ok(object)
}

/// Adds the collection properties of the object at row `id` to `object`.
fn collections_of(
    conn: &Connection,
    schemas: &Schemas,
    class: &str,
    schema: &TableSchema,
    id: i64,
    object: &mut Object,
) -> Result<(), StoreError> {
    for (prop, column) in &schema.columns {
        if column.collection != CollectionType::Single {
            let field = read_collection(conn, schemas, class, prop, column, id)?;
            object.fields.insert(prop.clone(), field);
        }
    }
    Ok(())
}

/// Calls `f` with the key and stored object (links as stored, as [`read_object`]) of every
/// object of top-level `class` that a compiled query's `tail` (`FROM <table> o WHERE …`, with
/// `params`) selects, in its order: one statement over the matches, plus one per collection
/// property of each (the server's flexible sync bootstraps).
#[cfg(feature = "server")]
pub(crate) fn for_each_match(
    conn: &Connection,
    schemas: &Schemas,
    class: &str,
    tail: &str,
    params: &[rusqlite::types::Value],
    f: &mut dyn FnMut(Key, Object),
) -> Result<(), StoreError> {
    let schema = schemas
        .get(class)
        .ok_or_else(|| corrupt(format!("class {class}")))?;
    let TableSpec::TopLevel { pk_type, .. } = schema.spec else {
        return Err(corrupt(format!("{class} is not a top-level class")));
    };
    let singles = singles(schema);
    let sql = match singles.is_empty() {
        true => format!("SELECT o.rowid, o._pk {tail}"),
        false => format!(
            "SELECT o.rowid, o._pk, {} {tail}",
            select_singles(&singles, "o.")
        ),
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let key = codec::decode_key(row.get_ref(1)?, pk_type)
            .ok_or_else(|| corrupt(format!("primary key of {class}")))?;
        f(
            key,
            object_of_row(conn, schemas, class, schema, &singles, row, 2, id)?,
        );
    }
    Ok(())
}

/// Hides unresolved links in `fields` (each with the column declaring it), as
/// [`read_resolved`] does.
fn resolve<'f>(
    conn: &Connection,
    schemas: &Schemas,
    fields: impl IntoIterator<Item = (Option<&'f ColumnSpec>, &'f mut Field)>,
) -> Result<(), StoreError> {
    let mut failure = None;
    let mut exists = |table: &str, key: &Key| match target_exists(conn, schemas, table, key) {
        Ok(found) => found,
        Err(e) => {
            failure.get_or_insert(e);
            true
        }
    };
    for (column, field) in fields {
        crate::state::resolve_field(schemas, column, field, &mut exists);
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One object of `class` as apps read it: [`read_object`] with unresolved links (links to
/// objects that do not exist) hidden, as [`crate::state::resolved`] describes.
pub(crate) fn read_resolved(
    conn: &Connection,
    schemas: &Schemas,
    class: &str,
    id: i64,
) -> Result<Object, StoreError> {
    let mut object = read_object(conn, schemas, class, id)?;
    let columns = schemas.get(class).map(|s| &s.columns);
    resolve(
        conn,
        schemas,
        object
            .fields
            .iter_mut()
            .map(|(name, field)| (columns.and_then(|c| c.get(name)), field)),
    )?;
    Ok(object)
}

/// Whether the link target `table[key]` exists.
pub(crate) fn target_exists(
    conn: &Connection,
    schemas: &Schemas,
    table: &str,
    key: &Key,
) -> Result<bool, StoreError> {
    if !crate::state::is_top_level(schemas, table) {
        return Ok(false);
    }
    Ok(layout::row_id(conn, table, key)?.is_some())
}

/// A read transaction: a consistent snapshot of the database as of its start.
pub struct ReadTransaction<'db> {
    db: &'db Database,
    conn: Option<Connection>,
    /// The schema and the file's search indexes, as of this snapshot.
    snapshot: layout::Snapshot,
}

impl<'db> ReadTransaction<'db> {
    pub(crate) fn begin(db: &'db Database, conn: Connection) -> Result<Self, StoreError> {
        conn.prepare_cached("BEGIN")?.execute([])?;
        // The first read fixes the snapshot; the schema is the snapshot's (the database keeps
        // the last one loaded: `layout::SchemaCache`).
        let snapshot = match db.read_schemas.get(&conn) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        Ok(ReadTransaction {
            db,
            conn: Some(conn),
            snapshot,
        })
    }

    fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("open until dropped")
    }

    pub(crate) fn connection(&self) -> &Connection {
        self.conn()
    }

    /// The schema as of this snapshot.
    pub(crate) fn schemas(&self) -> &Schemas {
        &self.snapshot.schemas
    }

    /// The object of `class` with this primary key, if it exists, as apps see it: links to
    /// objects that do not exist (erased on another device, or not synced yet) read as null
    /// in single and mixed properties, lists of mixed and dictionaries, and are left out of
    /// lists and sets of links, as in realm-core (see [`crate::state::resolved`]).
    /// [`export_state`](Self::export_state) shows the stored replica with them.
    pub fn object(&self, class: &str, key: &PrimaryKey) -> Result<Option<Object>, StoreError> {
        match self.schemas().get(class).map(|s| &s.spec) {
            Some(TableSpec::TopLevel { .. }) => {}
            _ => {
                return Err(StoreError::InvalidArgument(format!(
                    "no top-level class {class}"
                )))
            }
        }
        let id = layout::row_id(self.conn(), class, &to_key(key))?;
        match id {
            Some(id) => Ok(Some(read_resolved(self.conn(), self.schemas(), class, id)?)),
            None => Ok(None),
        }
    }

    /// The primary keys of the objects of `class` matching `query`, in its order. `args` are
    /// the values of `$0`, `$1`, ... (see the query language in this module's parent docs).
    pub fn query(
        &self,
        class: &str,
        query: &str,
        args: &[Value],
    ) -> Result<Vec<PrimaryKey>, StoreError> {
        let compiled = self
            .db
            .queries
            .compile(&self.snapshot, class, query, args)?;
        let pk_type = self.top_level_pk_type(class)?;
        let mut stmt = self.conn().prepare_cached(&compiled.sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(compiled.params.iter()), |r| {
            Ok(codec::decode_key(r.get_ref(1)?, pk_type))
        })?;
        let mut keys = Vec::new();
        for key in rows {
            keys.push(from_key(
                key?.ok_or_else(|| corrupt(format!("primary key of {class}")))?,
            ));
        }
        Ok(keys)
    }

    /// How many objects of `class` match `query` ([`query`](Self::query)'s matches, its
    /// `LIMIT` included), counted by SQLite without reading their keys out.
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub fn count(&self, class: &str, query: &str, args: &[Value]) -> Result<u64, StoreError> {
        let compiled = self
            .db
            .queries
            .compile(&self.snapshot, class, query, args)?;
        self.top_level_pk_type(class)?;
        // Unless only the first matches are kept, the count needs no order at all (an order
        // SQLite cannot take from the table would sort every match first).
        let sql = if compiled.limits() {
            format!("SELECT count(*) FROM ({})", compiled.sql)
        } else {
            format!("SELECT count(*) {}", compiled.matches())
        };
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let n: i64 = stmt.query_row(rusqlite::params_from_iter(compiled.params.iter()), |r| {
            r.get(0)
        })?;
        Ok(n as u64)
    }

    /// Checks that `query` compiles for `class` with `args` (the errors [`query`](Self::query)
    /// would give for the query itself), without running it.
    ///
    /// # Errors
    /// [`StoreError::Query`] for an unknown property, a query that does not parse, or
    /// arguments that do not fit it; [`StoreError::InvalidArgument`] for a class that is not a
    /// top-level one.
    pub fn check_query(&self, class: &str, query: &str, args: &[Value]) -> Result<(), StoreError> {
        self.db
            .queries
            .compile(&self.snapshot, class, query, args)?;
        self.top_level_pk_type(class).map(drop)
    }

    /// The primary key type of top-level `class`; [`StoreError::InvalidArgument`] for any
    /// other class (embedded objects are queried through the objects that hold them).
    fn top_level_pk_type(&self, class: &str) -> Result<PayloadType, StoreError> {
        match self.schemas().get(class).map(|s| &s.spec) {
            Some(TableSpec::TopLevel { pk_type, .. }) => Ok(*pk_type),
            _ => Err(StoreError::InvalidArgument(format!(
                "no top-level class {class}"
            ))),
        }
    }

    /// How SQLite runs `query` on `class` ([`query`](Self::query)): the lines of its `EXPLAIN
    /// QUERY PLAN`, one per plan step, indented by depth, e.g. `SEARCH o USING INDEX
    /// x:Task:owner (p:owner=?)` where an indexed property serves the query
    /// ([`crate::model::Property::indexed`]) or `SCAN o` where every object is read. Errors as
    /// [`query`](Self::query).
    pub fn query_plan(
        &self,
        class: &str,
        query: &str,
        args: &[Value],
    ) -> Result<Vec<String>, StoreError> {
        let compiled = self
            .db
            .queries
            .compile(&self.snapshot, class, query, args)?;
        let mut stmt = self
            .conn()
            .prepare(&format!("EXPLAIN QUERY PLAN {}", compiled.sql))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(compiled.params.iter()), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut depth: Vec<(i64, usize)> = Vec::new();
        let mut lines = Vec::new();
        for row in rows {
            let (id, parent, detail) = row?;
            let level = depth
                .iter()
                .find(|(i, _)| *i == parent)
                .map_or(0, |(_, l)| l + 1);
            depth.push((id, level));
            lines.push(format!("{}{detail}", "  ".repeat(level)));
        }
        Ok(lines)
    }

    /// The objects of `class` matching `query`, in its order, with their primary keys: what
    /// [`query`](Self::query) and then [`object`](Self::object) for each key give, read by one
    /// SQL statement over the matches (plus one per collection property and embedded object of
    /// each match) instead of one lookup per key. Only the matches from position `offset` on,
    /// at most `limit` of them (`None`: all), are read; the ones before are stepped over
    /// undecoded. Errors as [`query`](Self::query).
    ///
    /// ```
    /// # fn f(db: &tandem::store::Database) -> Result<(), tandem::store::StoreError> {
    /// let read = db.read()?;
    /// // The first ten open tasks, keys and objects.
    /// let page = read.query_objects("Task", "done == false", &[], 0, Some(10))?;
    /// # Ok(()) }
    /// ```
    pub fn query_objects(
        &self,
        class: &str,
        query: &str,
        args: &[Value],
        offset: usize,
        limit: Option<usize>,
    ) -> Result<Vec<(PrimaryKey, Object)>, StoreError> {
        let names: Vec<&str> = match self.schemas().get(class) {
            Some(schema) => schema.columns.keys().map(String::as_str).collect(),
            None => Vec::new(), // query_rows refuses the class
        };
        let rows = self.query_rows(class, query, args, &names, offset, limit)?;
        Ok(rows
            .into_iter()
            .map(|(key, fields)| {
                let fields = names.iter().map(|n| (*n).to_owned()).zip(fields).collect();
                (key, Object { fields })
            })
            .collect())
    }

    /// [`query_objects`](Self::query_objects) by position: for each match, its primary key
    /// and the fields of `properties` in that order (the primary key property as a
    /// `Field::Value`; a property may repeat). Nothing else of an object is read, and no map is
    /// built per object. `offset` and `limit` as in [`query_objects`](Self::query_objects).
    /// Errors: `InvalidArgument` naming a property the class does not have; otherwise as
    /// [`query`](Self::query).
    pub fn query_rows(
        &self,
        class: &str,
        query: &str,
        args: &[Value],
        properties: &[&str],
        offset: usize,
        limit: Option<usize>,
    ) -> Result<Vec<(PrimaryKey, Vec<Field>)>, StoreError> {
        let mut out = Vec::new();
        self.for_each_row(
            class,
            query,
            args,
            properties,
            offset,
            limit,
            |key, fields| {
                out.push((key, fields.collect()));
            },
        )?;
        Ok(out)
    }

    /// [`query_rows`](Self::query_rows) without collecting: `f` gets each match's primary key
    /// and its fields, in order, as it is read (a caller converting the rows into its own form,
    /// as the bindings do, allocates no row of its own in between).
    ///
    /// # Errors
    /// As [`query_rows`](Self::query_rows).
    #[allow(clippy::too_many_arguments)]
    pub fn for_each_row(
        &self,
        class: &str,
        query: &str,
        args: &[Value],
        properties: &[&str],
        offset: usize,
        limit: Option<usize>,
        mut f: impl FnMut(PrimaryKey, &mut dyn Iterator<Item = Field>),
    ) -> Result<(), StoreError> {
        let compiled = self
            .db
            .queries
            .compile(&self.snapshot, class, query, args)?;
        let no_class = || StoreError::InvalidArgument(format!("no top-level class {class}"));
        let schema = self.schemas().get(class).ok_or_else(no_class)?;
        let TableSpec::TopLevel {
            pk_type, pk_field, ..
        } = &schema.spec
        else {
            return Err(no_class());
        };
        /// Where each asked property comes from.
        enum Source<'s> {
            Key,
            Single(SingleRead<'s>),
            Collection(&'s str, &'s ColumnSpec),
        }
        let mut singles: Vec<(&String, &ColumnSpec)> = Vec::new();
        let mut sources = Vec::with_capacity(properties.len());
        for &p in properties {
            if p == pk_field {
                sources.push(Source::Key);
                continue;
            }
            let (name, column) = schema.columns.get_key_value(p).ok_or_else(|| {
                StoreError::InvalidArgument(format!("{class} has no property {p}"))
            })?;
            if column.collection == CollectionType::Single {
                let at = 2 + 2 * singles.len();
                sources.push(Source::Single(SingleRead::new(self.schemas(), column, at)));
                singles.push((name, column));
            } else {
                sources.push(Source::Collection(name, column));
            }
        }
        let sql = if singles.is_empty() {
            compiled.sql.clone()
        } else {
            format!(
                "SELECT o.rowid, o._pk, {} {}",
                select_singles(&singles, "o."),
                compiled.tail
            )
        };
        let has_links = properties.iter().any(|p| {
            schema.columns.get(*p).is_some_and(|c| {
                c.value_type == PayloadType::Link
                    || c.value_type == PayloadType::Null
                    || embedded_target(self.schemas(), c).is_some()
            })
        });
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(compiled.params.iter()))?;
        let mut skip = offset;
        let mut taken = 0usize;
        let mut fields = Vec::with_capacity(sources.len());
        while let Some(row) = rows.next()? {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            if limit.is_some_and(|n| taken >= n) {
                break;
            }
            taken += 1;
            let id: i64 = row.get(0)?;
            let stored = codec::decode_key(row.get_ref(1)?, *pk_type)
                .ok_or_else(|| corrupt(format!("primary key of {class}")))?;
            fields.clear();
            for source in &sources {
                let field = match *source {
                    Source::Key => Field::Value(
                        stored
                            .to_val()
                            .ok_or_else(|| corrupt(format!("primary key of {class}")))?,
                    ),
                    Source::Single(ref single) => single.read(conn, self.schemas(), row)?,
                    Source::Collection(prop, column) => {
                        read_collection(conn, self.schemas(), class, prop, column, id)?
                    }
                };
                fields.push(field);
            }
            if has_links {
                let columns = properties.iter().map(|p| schema.columns.get(*p));
                resolve(conn, self.schemas(), columns.zip(fields.iter_mut()))?;
            }
            f(from_key(stored), &mut fields.drain(..));
        }
        Ok(())
    }

    /// The whole database as an in-memory [`State`]: the stored replica, including links to
    /// objects that do not exist (unresolved links) at their list positions. [`State::read`]
    /// gives an object of it as apps see it.
    pub fn export_state(&self) -> Result<State, StoreError> {
        export(self.conn(), self.schemas())
    }

    /// The client history, oldest first.
    pub fn history(&self) -> Result<Vec<crate::changeset::Changeset>, StoreError> {
        super::history::read_history(self.conn())
    }
}

impl Drop for ReadTransaction<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let ended = conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]));
            if ended.is_ok() {
                self.db.return_reader(conn);
            }
        }
    }
}

/// Runs a compiled query; the primary keys of the matches, in order.
pub(crate) fn run_query(
    conn: &Connection,
    schemas: &Schemas,
    class: &str,
    compiled: &query::Compiled,
) -> Result<Vec<PrimaryKey>, StoreError> {
    let pk_type = match schemas.get(class).map(|s| &s.spec) {
        Some(TableSpec::TopLevel { pk_type, .. }) => *pk_type,
        _ => {
            return Err(StoreError::InvalidArgument(format!(
                "no top-level class {class}"
            )))
        }
    };
    let mut stmt = conn.prepare_cached(&compiled.sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(compiled.params.iter()), |r| {
        Ok(codec::decode_key(r.get_ref(1)?, pk_type))
    })?;
    let mut keys = Vec::new();
    for key in rows {
        keys.push(from_key(
            key?.ok_or_else(|| corrupt(format!("primary key of {class}")))?,
        ));
    }
    Ok(keys)
}
