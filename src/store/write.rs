//! Write transactions.
//!
//! Every operation of a [`WriteTransaction`] becomes one or more instructions, applied at once
//! through the store's applier (so type errors are caught before anything is written, and local
//! and remote changes take one path) and collected into the transaction's changeset.
//! [`WriteTransaction::commit`] appends that changeset to the history (`history`) in the same
//! SQLite transaction as the data.

use std::sync::MutexGuard;

use rusqlite::Connection;

use super::apply::{apply_instructions, store_value};
use super::codec;
use super::history::{append_local, remember_append};
use super::layout::{
    collection_table, insert_object_sql, is_key_taken, kind_column, link_matches, object_table,
    value_column,
};
use super::{from_key, to_key, Database, SizeLimit, StoreError};
use crate::changeset::{
    AddInteger, ArrayErase, ArrayInsert, ArrayMove, Changeset, Clear, CollectionType, FieldPath,
    Instruction, Link, Path, PathElement, Payload, PayloadType, PrimaryKey as WireKey, SetValue,
    Update,
};
use crate::model::{PrimaryKey, Value};
use crate::protocol::limits;
use crate::state::{check_scalar, embedded_target, Field, Key, Schemas, TableSpec, Val};

// One changeset and its UPLOAD entry header always fit one message body, so refusing changesets
// over MAX_CHANGESET_SIZE at commit also keeps every upload within MAX_BODY_SIZE.
const _: () =
    assert!(limits::MAX_CHANGESET_SIZE + limits::MAX_ENTRY_HEADER_SIZE <= limits::MAX_BODY_SIZE);

/// Encodes a transaction's changeset and checks it against the limits that decide whether it can
/// ever reach the server ([`limits`]): every string and binary value, then the whole changeset.
pub(crate) fn encode_within_limits(changeset: &Changeset) -> Result<Vec<u8>, StoreError> {
    let (encoded, largest_value) = changeset.encode_measured();
    if largest_value > limits::MAX_VALUE_SIZE {
        return Err(StoreError::TooLarge {
            limit: SizeLimit::Value,
            size: largest_value as u64,
            max: limits::MAX_VALUE_SIZE as u64,
        });
    }
    if encoded.len() > limits::MAX_CHANGESET_SIZE {
        return Err(StoreError::TooLarge {
            limit: SizeLimit::Changeset,
            size: encoded.len() as u64,
            max: limits::MAX_CHANGESET_SIZE as u64,
        });
    }
    Ok(encoded)
}

/// One step of a path below a property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathStep {
    /// A list position.
    Index(u32),
    /// A field of an embedded object, or a dictionary key.
    Name(String),
}

/// Where a property is: a property of the top-level object, then the steps from it down to a
/// property of an embedded object, as [`PathStep`]s (the same steps as
/// [`WriteTransaction::set_at`]). Every collection operation takes one, so lists, sets and
/// dictionaries inside embedded objects are reached like the object's own:
///
/// - `"tags"` (a `&str` converts): the object's own `tags`;
/// - `("address", &[Name("tags")][..])`: `tags` of the embedded object in `address`;
/// - `("addresses", &[Index(0), Name("tags")][..])`: `tags` of the first embedded object of the
///   list `addresses`; `("byName", &[Name("home"), Name("tags")][..])`: of the dictionary
///   entry `home`.
///
/// The steps become the instruction's Realm path (`field` = `property`, `path` = the steps,
/// then the element's index or the entry's key), so the change syncs like any other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PropertyPath<'a> {
    /// The top-level object's property.
    pub property: &'a str,
    /// The steps below it; empty for the property itself.
    pub steps: &'a [PathStep],
}

impl<'a> From<&'a str> for PropertyPath<'a> {
    fn from(property: &'a str) -> Self {
        PropertyPath {
            property,
            steps: &[],
        }
    }
}

impl<'a> From<&'a String> for PropertyPath<'a> {
    fn from(property: &'a String) -> Self {
        property.as_str().into()
    }
}

impl<'a> From<(&'a str, &'a [PathStep])> for PropertyPath<'a> {
    fn from((property, steps): (&'a str, &'a [PathStep])) -> Self {
        PropertyPath { property, steps }
    }
}

/// A list found by [`WriteTransaction::list`]: its path, its stored length, and the stored
/// positions of its links to objects that do not exist (empty for any other list).
struct ListAt {
    path: FieldPath,
    len: u32,
    unresolved: Vec<usize>,
}

impl ListAt {
    /// The stored position of app position `index` (realm-core's `LnkLst::virtual2real`).
    fn real(&self, index: u32) -> u32 {
        if self.unresolved.is_empty() {
            index
        } else {
            crate::state::virtual_to_real(&self.unresolved, index as usize) as u32
        }
    }

    /// The path of the element at stored position `index`.
    fn element(&self, index: u32) -> FieldPath {
        let mut path = self.path.clone();
        path.path.push(PathElement::Index(index));
        path
    }
}

/// A prepared INSERT of new objects with one set of properties, and the intern indices of its
/// names in the transaction's changeset.
struct InsertPlan {
    sql: std::sync::Arc<str>,
    table: crate::changeset::InternString,
    fields: Vec<crate::changeset::InternString>,
}

/// The open write transaction. Dropping it without [`commit`](WriteTransaction::commit) rolls
/// it back.
pub struct WriteTransaction<'db> {
    db: &'db Database,
    guard: Option<MutexGuard<'db, (Connection, Schemas)>>,
    changeset: Changeset,
    /// INSERT statements of [`WriteTransaction::insert_new`], by class and column list.
    /// Shared, so that a hit costs a reference count, not a copy of the field list.
    insert_sql: std::collections::HashMap<String, std::rc::Rc<InsertPlan>>,
    /// The writer connection's `total_changes()` when the transaction began: whether the
    /// history's append context cached by the last local commit still holds
    /// (`history::AppendCache`).
    changes_at_begin: u64,
}

impl<'db> WriteTransaction<'db> {
    pub(crate) fn begin(
        db: &'db Database,
        guard: MutexGuard<'db, (Connection, Schemas)>,
    ) -> Result<Self, StoreError> {
        if let Err(e) = super::begin_immediate(&guard.0, db.config.writer_timeout) {
            drop(guard);
            db.release_writer();
            return Err(e);
        }
        let changes_at_begin = guard.0.total_changes();
        Ok(WriteTransaction {
            db,
            guard: Some(guard),
            changeset: Changeset::new(),
            insert_sql: std::collections::HashMap::new(),
            changes_at_begin,
        })
    }

    fn parts(&mut self) -> (&Connection, &mut Schemas) {
        let guard = self
            .guard
            .as_mut()
            .expect("transaction is open until commit or rollback");
        let (conn, schemas) = &mut **guard;
        (conn, schemas)
    }

    fn conn(&self) -> &Connection {
        &self
            .guard
            .as_ref()
            .expect("transaction is open until commit or rollback")
            .0
    }

    fn schemas(&self) -> &Schemas {
        &self
            .guard
            .as_ref()
            .expect("transaction is open until commit or rollback")
            .1
    }

    /// Applies instructions built into `self.changeset`'s string table and keeps them.
    ///
    /// What realm-core refuses and the appliers take (dictionary keys, links to a missing
    /// class: `state::checks::realm_core_refusals`) is refused first, as `InvalidArgument`, and
    /// nothing is written.
    fn run(&mut self, instructions: Vec<Instruction>) -> Result<(), StoreError> {
        crate::state::checks::realm_core_refusals(self.schemas(), &self.changeset, &instructions)
            .map_err(|(_, reason)| StoreError::InvalidArgument(reason))?;
        let changeset = std::mem::take(&mut self.changeset);
        let (conn, schemas) = self.parts();
        let result = apply_instructions(conn, schemas, &changeset, &instructions);
        self.changeset = changeset;
        result?;
        self.changeset.instructions.extend(instructions);
        Ok(())
    }

    fn wire_key(&mut self, key: &PrimaryKey) -> WireKey {
        wire_key_in(&mut self.changeset, key)
    }

    fn payload(&mut self, value: &Value) -> Payload {
        payload_in(&mut self.changeset, value.clone())
    }

    fn path(&mut self, class: &str, key: &PrimaryKey, prop: &str, steps: Path) -> FieldPath {
        FieldPath {
            table: self.changeset.intern(class),
            object: self.wire_key(key),
            field: self.changeset.intern(prop),
            path: steps,
        }
    }

    fn row_of(&self, class: &str, key: &PrimaryKey) -> Result<Option<i64>, StoreError> {
        if !matches!(
            self.schemas().get(class).map(|s| &s.spec),
            Some(TableSpec::TopLevel { .. })
        ) {
            return Err(StoreError::InvalidArgument(format!(
                "no top-level class {class}"
            )));
        }
        Ok(super::layout::row_id(self.conn(), class, &to_key(key))?)
    }

    /// The path of the property `at` of (class, key).
    fn path_at(&mut self, class: &str, key: &PrimaryKey, at: PropertyPath<'_>) -> FieldPath {
        let steps = self.path_steps(at.steps);
        self.path(class, key, at.property, steps)
    }

    /// The property a path names: its owner's class and row, its name and column
    /// ([`super::apply::locate`]).
    fn locate(
        &mut self,
        path: &FieldPath,
    ) -> Result<(String, i64, String, crate::state::ColumnSpec), StoreError> {
        let changeset = std::mem::take(&mut self.changeset);
        let (conn, schemas) = self.parts();
        let located = super::apply::locate(conn, schemas, &changeset, path);
        self.changeset = changeset;
        located
    }

    /// The list at `at` of (class, key), wherever it is (the object's own or an embedded
    /// object's): its path, length, and the stored positions of unresolved links.
    ///
    /// # Errors
    /// `InvalidArgument` if there is no such object, the path leads nowhere, or it names no
    /// list.
    fn list(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        at: PropertyPath<'_>,
    ) -> Result<ListAt, StoreError> {
        self.row_of(class, key)?
            .ok_or_else(|| StoreError::InvalidArgument(format!("no object {class}[{key}]")))?;
        let path = self.path_at(class, key, at);
        let located = self.locate(&path);
        let (owner_class, row, prop, column) = located?;
        if column.collection != CollectionType::List {
            return Err(StoreError::InvalidArgument(format!(
                "{owner_class}.{prop} is not a list"
            )));
        }
        let conn = self.conn();
        let len: i64 = conn
            .prepare_cached(&format!(
                "SELECT COUNT(*) FROM {} WHERE owner = ?1",
                collection_table(&owner_class, &prop, CollectionType::List)
            ))?
            .query_row([row], |r| r.get(0))?;
        // In a list of links, links to objects that do not exist are invisible to apps, so app
        // positions skip them; in any other list the two are the same. Only an element of the
        // link kind is a link.
        let unresolved = match column.link_target.as_deref() {
            Some(target) if crate::state::is_link_collection(self.schemas(), &column) => conn
                .prepare_cached(&format!(
                    "SELECT l.pos FROM {} l WHERE l.owner = ?1 AND l.k = {} \
                     AND NOT EXISTS (SELECT 1 FROM {} t WHERE {}) ORDER BY l.pos",
                    collection_table(&owner_class, &prop, CollectionType::List),
                    PayloadType::Link.code(),
                    object_table(target),
                    link_matches("t._pk", "l.v")
                ))?
                .query_map([row], |r| r.get::<_, i64>(0).map(|p| p as usize))?
                .collect::<Result<Vec<_>, _>>()?,
            _ => Vec::new(),
        };
        Ok(ListAt {
            path,
            len: len as u32,
            unresolved,
        })
    }

    /// Creates an object with the given property values; creating one whose key exists is an
    /// error.
    pub fn create(
        &mut self,
        class: &str,
        key: PrimaryKey,
        values: &[(&str, Value)],
    ) -> Result<(), StoreError> {
        let exists = || already_exists(class, &key);
        // The primary key's UNIQUE index is the existence check of the fast path (it lets
        // several NULLs in, so a null key is checked first).
        if key == PrimaryKey::Null && self.row_of(class, &key)?.is_some() {
            return Err(exists());
        }
        match self.insert_new(class, &key, values) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(exists())
            }
            Err(e) => return Err(e),
        }
        if self.row_of(class, &key)?.is_some() {
            return Err(exists());
        }
        self.write_object(class, key, values)
    }

    /// Creates one object per row of `rows`, each as [`create`](Self::create) would with its
    /// values named by `properties` in that order, so the changeset holds the same
    /// instructions. Each row is its primary key and one value per property.
    ///
    /// This is the bulk path (the bindings' typed adds of many objects of one class arrive
    /// here): when every property is a plain single-valued one (no collection, no embedded
    /// object, no mixed value), the class, the columns and the `INSERT` are resolved once for
    /// all rows and each row is one execution of one prepared statement, its values moved
    /// into the changeset instead of copied. A row the prepared statement cannot take (a
    /// null primary key, a link, a value of another type) goes through `create`, with the
    /// same result and the same errors.
    ///
    /// ```no_run
    /// # use tandem::store::Database;
    /// # use tandem::model::{PrimaryKey, Value};
    /// # fn f(db: &Database) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = db.begin_write()?;
    /// let rows = (0..1_000).map(|i| {
    ///     (PrimaryKey::Int(i), vec![Value::String(format!("task {i}")), Value::Bool(false)])
    /// });
    /// tx.create_rows("Task", &["title", "done"], rows)?;
    /// tx.commit()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`CreateRowsError`]: the index of the first row that failed and `create`'s error for
    /// it, or [`StoreError::InvalidArgument`] if the row does not have one value per
    /// property. The rows before it stay written in the transaction; drop it (or call
    /// [`rollback`](Self::rollback)) to discard them, as the bindings do.
    pub fn create_rows<R>(
        &mut self,
        class: &str,
        properties: &[&str],
        rows: R,
    ) -> Result<(), CreateRowsError>
    where
        R: IntoIterator<Item = (PrimaryKey, Vec<Value>)>,
    {
        self.write_rows(class, properties, rows, false)
    }

    /// [`create_rows`](Self::create_rows) with [`upsert`](Self::upsert) of each row instead
    /// of `create`: a row whose object exists gets its values written (through `upsert`, so
    /// the same instructions), a new one is created by the prepared `INSERT`, which is also
    /// the existence check. Kotlin's typed `add` of many objects arrives here.
    ///
    /// # Errors
    /// As `create_rows`, with `upsert`'s errors (an object that exists is not one).
    pub fn upsert_rows<R>(
        &mut self,
        class: &str,
        properties: &[&str],
        rows: R,
    ) -> Result<(), CreateRowsError>
    where
        R: IntoIterator<Item = (PrimaryKey, Vec<Value>)>,
    {
        self.write_rows(class, properties, rows, true)
    }

    fn write_rows<R>(
        &mut self,
        class: &str,
        properties: &[&str],
        rows: R,
        upsert: bool,
    ) -> Result<(), CreateRowsError>
    where
        R: IntoIterator<Item = (PrimaryKey, Vec<Value>)>,
    {
        let plan = self.rows_plan(class, properties);
        let mut rows = rows.into_iter().enumerate();
        // A CreateObject and an Update per property for each row, up to 2^20 instructions
        // (104 MiB) reserved at once: beyond that the list grows as usual.
        let expected = rows.size_hint().0.saturating_mul(properties.len() + 1);
        self.changeset.reserve(expected.min(1 << 20));
        // The index of the next row, for an error before it is taken.
        let mut next = 0;
        loop {
            // Rows through the prepared statement until one needs `create`.
            let slow = match &plan {
                Some(plan) => {
                    let guard = self
                        .guard
                        .as_ref()
                        .expect("transaction is open until commit or rollback");
                    let conn = &guard.0;
                    let changeset = &mut self.changeset;
                    let mut stmt = conn
                        .prepare_cached(&plan.insert.sql)
                        .map_err(|e| CreateRowsError::new(next, e.into()))?;
                    let mut slow = None;
                    for (i, (key, values)) in rows.by_ref() {
                        if values.len() != properties.len() {
                            return Err(CreateRowsError::new(i, wrong_width(&values, properties)));
                        }
                        let fast = match insert_row(&mut stmt, plan, &key, &values) {
                            Ok(fast) => fast,
                            // The object exists: `upsert` writes its values.
                            Err(e) if upsert && is_key_taken(&e) => false,
                            Err(e) => {
                                return Err(CreateRowsError::new(i, row_error(e, class, &key)))
                            }
                        };
                        if !fast {
                            slow = Some((i, key, values));
                            break;
                        }
                        let table = plan.insert.table;
                        let object = wire_key_in(changeset, &key);
                        changeset.push(Instruction::CreateObject {
                            table,
                            object: object.clone(),
                        });
                        for (value, field) in values.into_iter().zip(&plan.insert.fields) {
                            let payload = payload_in(changeset, value);
                            let path = FieldPath {
                                table,
                                object: object.clone(),
                                field: *field,
                                path: Path::new(),
                            };
                            changeset.push(set_field(path, payload));
                        }
                    }
                    slow
                }
                None => rows.next().map(|(i, (key, values))| (i, key, values)),
            };
            let Some((i, key, values)) = slow else {
                return Ok(());
            };
            next = i + 1;
            if values.len() != properties.len() {
                return Err(CreateRowsError::new(i, wrong_width(&values, properties)));
            }
            let named: Vec<(&str, Value)> = properties.iter().copied().zip(values).collect();
            let written = if upsert {
                self.upsert(class, key, &named)
            } else {
                self.create(class, key, &named)
            };
            written.map_err(|e| CreateRowsError::new(i, e))?;
        }
    }

    /// What [`create_rows`](Self::create_rows) needs to insert rows of `properties` with one
    /// prepared statement, or `None` if they need the general path (a property that is not a
    /// plain single value, a mixed one, one named twice, an unknown class or property).
    fn rows_plan(&mut self, class: &str, properties: &[&str]) -> Option<RowsPlan> {
        let schema = self.schemas().get(class)?;
        let TableSpec::TopLevel { pk_type, .. } = &schema.spec else {
            return None;
        };
        let pk_type = *pk_type;
        let mut columns = Vec::with_capacity(properties.len());
        // The key of `insert_new`'s statement cache for the same columns (the SQL is the
        // same), so a one-row call, as each typed one-object transaction makes, formats no SQL.
        let mut cache_key = String::with_capacity(64);
        cache_key.push_str(class);
        for (i, prop) in properties.iter().enumerate() {
            let column = schema.columns.get(*prop)?;
            if column.collection != CollectionType::Single
                || column.value_type == PayloadType::Null
                || embedded_target(self.schemas(), column).is_some()
                || properties[..i].contains(prop)
            {
                return None;
            }
            cache_key.push('\0');
            cache_key.push_str(prop);
            columns.push(column.clone());
        }
        let sql = self.db.insert_sql(&cache_key, || {
            insert_object_sql(class, properties.iter().map(|p| (*p, false)))
        });
        let insert = InsertPlan {
            sql,
            table: self.changeset.intern(class),
            fields: properties
                .iter()
                .map(|p| self.changeset.intern(p))
                .collect(),
        };
        Some(RowsPlan {
            insert,
            columns,
            pk_type,
        })
    }

    /// Creates the object if it does not exist, then sets the given property values.
    pub fn upsert(
        &mut self,
        class: &str,
        key: PrimaryKey,
        values: &[(&str, Value)],
    ) -> Result<(), StoreError> {
        if self.row_of(class, &key)?.is_none() && self.insert_new(class, &key, values)? {
            return Ok(());
        }
        self.write_object(class, key, values)
    }

    /// CreateObject (idempotent) and one Update per value, through the applier.
    fn write_object(
        &mut self,
        class: &str,
        key: PrimaryKey,
        values: &[(&str, Value)],
    ) -> Result<(), StoreError> {
        let table = self.changeset.intern(class);
        let object = self.wire_key(&key);
        let mut instructions = vec![Instruction::CreateObject { table, object }];
        for (prop, value) in values {
            let path = self.path(class, &key, prop, smallvec::smallvec![]);
            let value = self.payload(value);
            instructions.push(set_field(path, value));
        }
        self.run(instructions)
    }

    /// A new object whose given values are all plain single-valued properties, in one INSERT.
    /// Produces the same instructions as the general path; returns `false` (having written
    /// nothing) when that path is needed, which also reports any error.
    fn insert_new(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        values: &[(&str, Value)],
    ) -> Result<bool, StoreError> {
        let state_key = to_key(key);
        let fits_key = match self.schemas().get(class).map(|s| &s.spec) {
            Some(TableSpec::TopLevel {
                pk_type,
                pk_nullable,
                ..
            }) => match state_key {
                Key::Null => *pk_nullable,
                ref k => k.payload_type() == *pk_type,
            },
            _ => false,
        };
        if !fits_key {
            return Ok(false);
        }
        let mut payloads = Vec::with_capacity(values.len());
        for (prop, value) in values {
            payloads.push((*prop, self.payload(value)));
        }
        // The class and property names key the cache of INSERT statements; the SQL itself
        // (quoting every name) is only built on a miss.
        let mut cache_key = String::with_capacity(64);
        cache_key.push_str(class);
        // Sized up front: growing them cost three reallocations per object (callgrind,
        // `TANDEM_BENCH_ONLY=bulk`), a tenth of an insert's instructions outside SQLite.
        let mut args = Vec::with_capacity(1 + 2 * payloads.len());
        args.push(codec::encode_key(&state_key));
        let mut mixed = Vec::with_capacity(payloads.len());
        // Whether a value is a link to the null key, which needs format 3 (`layout`).
        let mut null_key_link = false;
        {
            let schema = &self.schemas()[class];
            for (i, (prop, payload)) in payloads.iter().enumerate() {
                let Some(column) = schema.columns.get(*prop) else {
                    return Ok(false);
                };
                if column.collection != CollectionType::Single
                    || embedded_target(self.schemas(), column).is_some()
                    || payloads[..i].iter().any(|(p, _)| p == prop)
                {
                    return Ok(false);
                }
                let Ok(v) = check_scalar(self.schemas(), column, payload, &self.changeset) else {
                    return Ok(false);
                };
                // A link to a missing class: the general path refuses it
                // (`realm_core_refusals`).
                if matches!(&v, Val::Link(target, _) if !self.schemas().contains_key(target)) {
                    return Ok(false);
                }
                let stored = store_value(column, &new_object_value(column, v));
                null_key_link |= codec::is_null_key_link(&stored);
                let (sql, kind) = stored;
                cache_key.push('\0');
                cache_key.push_str(prop);
                args.push(sql);
                let is_mixed = column.value_type == crate::changeset::PayloadType::Null;
                mixed.push(is_mixed);
                if is_mixed {
                    // The SQL differs (a kind column too), and a property can change type
                    // between transactions: the key says which form it is.
                    cache_key.push('\u{1}');
                    args.push(rusqlite::types::Value::Integer(kind));
                }
            }
        }
        let plan = match self.insert_sql.get(&cache_key) {
            Some(plan) => plan.clone(),
            None => {
                let sql = self.db.insert_sql(&cache_key, || {
                    let columns = payloads.iter().zip(&mixed);
                    insert_object_sql(class, columns.map(|((prop, _), m)| (*prop, *m)))
                });
                let plan = std::rc::Rc::new(InsertPlan {
                    sql,
                    table: self.changeset.intern(class),
                    fields: payloads
                        .iter()
                        .map(|(p, _)| self.changeset.intern(p))
                        .collect(),
                });
                self.insert_sql.insert(cache_key, std::rc::Rc::clone(&plan));
                plan
            }
        };
        self.conn()
            .prepare_cached(&plan.sql)?
            .execute(rusqlite::params_from_iter(args.iter()))?;
        if null_key_link {
            super::layout::allow_null_key_links(self.conn())?;
        }
        let object = self.wire_key(key);
        self.changeset.push(Instruction::CreateObject {
            table: plan.table,
            object: object.clone(),
        });
        for ((_, payload), field) in payloads.into_iter().zip(plan.fields.iter()) {
            let path = FieldPath {
                table: plan.table,
                object: object.clone(),
                field: *field,
                path: Path::new(),
            };
            self.changeset.push(set_field(path, payload));
        }
        Ok(true)
    }

    /// Sets a single-valued property.
    pub fn set(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        value: Value,
    ) -> Result<(), StoreError> {
        let path = self.path(class, key, prop, smallvec::smallvec![]);
        let value = self.payload(&value);
        self.run(vec![set_field(path, value)])
    }

    /// Sets a value below a property: a field of an embedded object, a list element's field, a
    /// dictionary entry's field... `steps` are list indices or names (embedded-object fields and
    /// dictionary keys), as Realm's paths are. `Value::Null` on an embedded-object field
    /// removes the object.
    ///
    /// ```no_run
    /// # use tandem::store::{Database, PathStep};
    /// # use tandem::model::{PrimaryKey, Value};
    /// # fn f(db: &Database) -> Result<(), tandem::store::StoreError> {
    /// let mut tx = db.begin_write()?;
    /// // Person[1].addresses[0].street = "Main St"
    /// tx.set_at("Person", &PrimaryKey::Int(1), "addresses",
    ///           &[PathStep::Index(0), PathStep::Name("street".into())],
    ///           Value::String("Main St".into()))?;
    /// tx.commit()?;
    /// # Ok(()) }
    /// ```
    pub fn set_at(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        steps: &[PathStep],
        value: Value,
    ) -> Result<(), StoreError> {
        let path_steps = self.path_steps(steps);
        let path = self.path(class, key, prop, path_steps);
        let value = self.payload(&value);
        let mut update = set_field(path, value);
        if let Instruction::Update(u) = &mut update {
            if u.path.last_index().is_some() {
                return Err(StoreError::InvalidArgument(
                    "set_at cannot end in a list index; use list_set".into(),
                ));
            }
        }
        self.run(vec![update])
    }

    /// Creates the embedded object of a single embedded-object property, if it has none.
    pub fn create_embedded(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
    ) -> Result<(), StoreError> {
        self.create_embedded_at(class, key, prop, &[])
    }

    /// Creates the embedded object at a path below a property, if there is none: a dictionary
    /// entry of a dictionary of embedded objects (`[Name(key)]`), an embedded-object field of an
    /// embedded object (`[Name(field)]`, `[Index(i), Name(field)]`...). The instruction is
    /// realm-core's: `Update` with the `ObjectValue` payload, which creates the object if it does
    /// not exist and otherwise leaves it as it is. List elements are inserted with
    /// [`list_push_embedded`](Self::list_push_embedded) instead.
    ///
    /// # Errors
    /// `InvalidArgument` if `steps` ends in a list index; the applier's errors (`Rejected`) if
    /// the path does not lead to an embedded-object slot.
    pub fn create_embedded_at(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        steps: &[PathStep],
    ) -> Result<(), StoreError> {
        if let Some(PathStep::Index(_)) = steps.last() {
            return Err(StoreError::InvalidArgument(
                "create_embedded_at cannot end in a list index; use list_push_embedded".into(),
            ));
        }
        let path_steps = self.path_steps(steps);
        let path = self.path(class, key, prop, path_steps);
        self.run(vec![set_field(path, Payload::ObjectValue)])
    }

    fn path_steps(&mut self, steps: &[PathStep]) -> Path {
        steps
            .iter()
            .map(|s| match s {
                PathStep::Index(i) => PathElement::Index(*i),
                PathStep::Name(n) => PathElement::Key(self.changeset.intern(n)),
            })
            .collect()
    }

    /// Adds to an integer property (a counter; concurrent adds from other devices add up).
    /// Adding to null leaves null.
    ///
    /// # Errors
    /// `InvalidArgument` when a mixed property holds something other than an integer or null
    /// (a remote changeset's add meeting such a value is a no-op instead, `docs/ot.md`); the
    /// applier's errors (`Rejected`) for anything else that is not an integer property.
    pub fn add<'p>(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: impl Into<PropertyPath<'p>>,
        amount: i64,
    ) -> Result<(), StoreError> {
        let path = self.path_at(class, key, prop.into());
        // A path that leads nowhere is left to the applier, which refuses it.
        let located = self.locate(&path);
        if let Ok((owner, row, prop, column)) = located {
            if column.value_type == PayloadType::Null {
                let object = super::read::read_object(self.conn(), self.schemas(), &owner, row)?;
                match object.fields.get(&prop) {
                    None | Some(Field::Value(Val::Int(_) | Val::Null)) => {}
                    Some(other) => {
                        return Err(StoreError::InvalidArgument(format!(
                            "{class}[{key}].{prop} holds no integer ({other:?}); add needs one"
                        )))
                    }
                }
            }
        }
        self.run(vec![Instruction::AddInteger(AddInteger {
            path,
            value: amount,
        })])
    }

    /// Erases an object. Links to it held by top-level objects are removed first, with
    /// explicit instructions so every replica does the same, as realm-core's `Obj::remove`
    /// does (`nullify_incoming_links`): a single link or mixed property becomes null
    /// (`Update` null), a list element is erased (`ArrayErase`, lowest position first, each at
    /// its position at that moment), a set element is erased (`SetErase`), a dictionary value
    /// becomes null (`Update` null at its key). Its embedded objects go with it. Erasing a
    /// missing object does nothing. (An `EraseObject` from another device leaves the links in
    /// place as unresolved links; see [`crate::state::resolved`].)
    pub fn erase(&mut self, class: &str, key: &PrimaryKey) -> Result<(), StoreError> {
        if self.row_of(class, key)?.is_none() {
            return Ok(());
        }
        let mut instructions = self.unlink(class, key)?;
        let table = self.changeset.intern(class);
        let object = self.wire_key(key);
        instructions.push(Instruction::EraseObject { table, object });
        self.run(instructions)
    }

    /// Instructions that remove the links to (class, key) held by top-level objects.
    fn unlink(&mut self, class: &str, key: &PrimaryKey) -> Result<Vec<Instruction>, StoreError> {
        let link = Val::Link(class.to_owned(), to_key(key));
        // (holder class, its pk type, property, collection kind, the stored link, mixed?)
        let mut holders = Vec::new();
        for (holder, schema) in self.schemas() {
            let TableSpec::TopLevel { pk_type, .. } = schema.spec else {
                continue;
            };
            for (prop, column) in &schema.columns {
                let mixed = column.value_type == PayloadType::Null;
                if mixed || column.link_target.as_deref() == Some(class) {
                    let (stored, _) = store_value(column, &link);
                    holders.push((
                        holder.clone(),
                        pk_type,
                        prop.clone(),
                        column.collection,
                        stored,
                        mixed,
                    ));
                }
            }
        }
        let link_kind = PayloadType::Link.code();
        let mut instructions = Vec::new();
        for (holder, pk_type, prop, collection, stored, mixed) in holders {
            let sql = match collection {
                CollectionType::Single if mixed => format!(
                    "SELECT _pk, NULL FROM {} WHERE {} = {link_kind} AND {} = ?1 ORDER BY rowid",
                    object_table(&holder),
                    kind_column(&prop),
                    value_column(&prop)
                ),
                CollectionType::Single => format!(
                    "SELECT _pk, NULL FROM {} WHERE {} = ?1 ORDER BY rowid",
                    object_table(&holder),
                    value_column(&prop)
                ),
                CollectionType::List => format!(
                    "SELECT o._pk, l.pos FROM {} l JOIN {} o ON o.rowid = l.owner \
                     WHERE l.k = {link_kind} AND l.v IS ?1 ORDER BY o.rowid, l.pos",
                    collection_table(&holder, &prop, collection),
                    object_table(&holder)
                ),
                CollectionType::Set => format!(
                    "SELECT o._pk, NULL FROM {} c JOIN {} o ON o.rowid = c.owner \
                     WHERE c.k = {link_kind} AND c.v IS ?1 ORDER BY o.rowid",
                    collection_table(&holder, &prop, collection),
                    object_table(&holder)
                ),
                CollectionType::Dictionary => format!(
                    "SELECT o._pk, c.key FROM {} c JOIN {} o ON o.rowid = c.owner \
                     WHERE c.k = {link_kind} AND c.v IS ?1 ORDER BY o.rowid, c.key",
                    collection_table(&holder, &prop, collection),
                    object_table(&holder)
                ),
            };
            let mut stmt = self.conn().prepare(&sql)?;
            let rows = stmt
                .query_map([&stored], |r| {
                    Ok((
                        codec::decode_key(r.get_ref(0)?, pk_type),
                        r.get::<_, Option<rusqlite::types::Value>>(1)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            drop(stmt);
            // How many elements of the current owner's list were erased before this one.
            let mut erased_before: Option<(PrimaryKey, u32)> = None;
            for (owner, slot) in rows {
                let owner = from_key(owner.unwrap_or(Key::Null));
                let instruction = match (collection, slot) {
                    (CollectionType::List, Some(rusqlite::types::Value::Integer(pos))) => {
                        let before = match &erased_before {
                            Some((o, n)) if *o == owner => *n,
                            _ => 0,
                        };
                        let prior_size = self.list(&holder, &owner, (&prop).into())?.len - before;
                        erased_before = Some((owner.clone(), before + 1));
                        // realm-core erases the first occurrence each time, so each position
                        // is where the element is once the earlier ones are gone.
                        let index = pos as u32 - before;
                        let path = self.path(
                            &holder,
                            &owner,
                            &prop,
                            smallvec::smallvec![PathElement::Index(index)],
                        );
                        Instruction::ArrayErase(ArrayErase { path, prior_size })
                    }
                    (CollectionType::Set, _) => {
                        let path = self.path(&holder, &owner, &prop, smallvec::smallvec![]);
                        let value = self.payload(&Value::Link(crate::model::Link {
                            class: class.to_owned(),
                            key: key.clone(),
                        }));
                        Instruction::SetErase(SetValue { path, value })
                    }
                    (CollectionType::Dictionary, Some(rusqlite::types::Value::Text(entry))) => {
                        let entry = self.changeset.intern(&entry);
                        let path = self.path(
                            &holder,
                            &owner,
                            &prop,
                            smallvec::smallvec![PathElement::Key(entry)],
                        );
                        set_field(path, Payload::Null)
                    }
                    (CollectionType::Single, _) => {
                        let path = self.path(&holder, &owner, &prop, smallvec::smallvec![]);
                        set_field(path, Payload::Null)
                    }
                    _ => {
                        return Err(StoreError::Corrupt(format!(
                            "{holder}.{prop}: unexpected position of a link"
                        )))
                    }
                };
                instructions.push(instruction);
            }
        }
        Ok(instructions)
    }

    /// Inserts into a list at `index` (0 to its length). Positions in a list of links count
    /// only the links apps can read (see [`ReadTransaction::object`](super::ReadTransaction::object));
    /// the instruction (`ArrayInsert`) carries the stored position, as realm-core's does.
    /// `prop` is a property name or a [`PropertyPath`] into an embedded object.
    pub fn list_insert<'p>(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: impl Into<PropertyPath<'p>>,
        index: u32,
        value: Value,
    ) -> Result<(), StoreError> {
        let list = self.list(class, key, prop.into())?;
        let path = list.element(list.real(index));
        let value = self.payload(&value);
        self.run(vec![Instruction::ArrayInsert(ArrayInsert {
            path,
            value,
            prior_size: list.len,
        })])
    }

    /// Inserts a new, empty embedded object into a list of embedded objects at `index` (0 to
    /// its length): `ArrayInsert` with the `ObjectValue` payload, as realm-core's.
    pub fn list_insert_embedded<'p>(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: impl Into<PropertyPath<'p>>,
        index: u32,
    ) -> Result<(), StoreError> {
        let list = self.list(class, key, prop.into())?;
        self.run(vec![Instruction::ArrayInsert(ArrayInsert {
            path: list.element(index),
            value: Payload::ObjectValue,
            prior_size: list.len,
        })])
    }

    /// Appends an embedded object to a list of embedded objects.
    pub fn list_push_embedded<'p>(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: impl Into<PropertyPath<'p>>,
    ) -> Result<(), StoreError> {
        let list = self.list(class, key, prop.into())?;
        self.run(vec![Instruction::ArrayInsert(ArrayInsert {
            path: list.element(list.len),
            value: Payload::ObjectValue,
            prior_size: list.len,
        })])
    }

    /// Replaces the list element at `index` (an app position, as in
    /// [`list_insert`](Self::list_insert)): `Update` at the element's path, with the list's
    /// size as `prior_size`, as realm-core's `Lst::set`.
    pub fn list_set<'p>(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: impl Into<PropertyPath<'p>>,
        index: u32,
        value: Value,
    ) -> Result<(), StoreError> {
        let list = self.list(class, key, prop.into())?;
        let path = list.element(list.real(index));
        let value = self.payload(&value);
        self.run(vec![Instruction::Update(Update {
            path,
            value,
            is_default: false,
            prior_size: list.len,
        })])
    }

    /// Moves the list element at `from` so that it ends up at `to` (app positions, as in
    /// [`list_insert`](Self::list_insert)): `ArrayMove`.
    pub fn list_move<'p>(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: impl Into<PropertyPath<'p>>,
        from: u32,
        to: u32,
    ) -> Result<(), StoreError> {
        let list = self.list(class, key, prop.into())?;
        self.run(vec![Instruction::ArrayMove(ArrayMove {
            path: list.element(list.real(from)),
            to: list.real(to),
            prior_size: list.len,
        })])
    }

    /// Removes the list element at `index` (an app position, as in
    /// [`list_insert`](Self::list_insert)): `ArrayErase`.
    pub fn list_erase<'p>(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: impl Into<PropertyPath<'p>>,
        index: u32,
    ) -> Result<(), StoreError> {
        let list = self.list(class, key, prop.into())?;
        self.run(vec![Instruction::ArrayErase(ArrayErase {
            path: list.element(list.real(index)),
            prior_size: list.len,
        })])
    }

    fn clear(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        at: PropertyPath<'_>,
        collection_type: CollectionType,
    ) -> Result<(), StoreError> {
        let path = self.path_at(class, key, at);
        // A property of another kind is refused here, naming it (the applier would say only
        // "Clear: not a List"). A mixed property may hold a collection of any kind; a path that
        // leads nowhere is left to the applier's message.
        if let Ok((owner_class, _, prop, column)) = self.locate(&path) {
            let mixed = column.collection == CollectionType::Single
                && column.value_type == PayloadType::Null;
            if column.collection != collection_type && !mixed {
                let is = match column.collection {
                    CollectionType::Single => "a single value".to_owned(),
                    other => format!("a {other:?}"),
                };
                return Err(StoreError::InvalidArgument(format!(
                    "{owner_class}.{prop} is {is}, not a {collection_type:?}: nothing to clear"
                )));
            }
        }
        self.run(vec![Instruction::Clear(Clear {
            path,
            collection_type,
        })])
    }

    /// Empties a list: `Clear` with collection type List.
    pub fn list_clear<'p>(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: impl Into<PropertyPath<'p>>,
    ) -> Result<(), StoreError> {
        self.clear(class, key, prop.into(), CollectionType::List)
    }

    /// Adds a value to a set (nothing happens if it is there): `SetInsert`.
    pub fn set_insert<'p>(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: impl Into<PropertyPath<'p>>,
        value: Value,
    ) -> Result<(), StoreError> {
        let path = self.path_at(class, key, prop.into());
        let value = self.payload(&value);
        self.run(vec![Instruction::SetInsert(SetValue { path, value })])
    }

    /// Removes a value from a set (nothing happens if it is not there): `SetErase`.
    pub fn set_erase<'p>(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: impl Into<PropertyPath<'p>>,
        value: Value,
    ) -> Result<(), StoreError> {
        let path = self.path_at(class, key, prop.into());
        let value = self.payload(&value);
        self.run(vec![Instruction::SetErase(SetValue { path, value })])
    }

    /// Empties a set: `Clear` with collection type Set.
    pub fn set_clear<'p>(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: impl Into<PropertyPath<'p>>,
    ) -> Result<(), StoreError> {
        self.clear(class, key, prop.into(), CollectionType::Set)
    }

    /// Sets a dictionary entry: `Update` at the entry's key.
    pub fn dict_set<'p>(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: impl Into<PropertyPath<'p>>,
        entry: &str,
        value: Value,
    ) -> Result<(), StoreError> {
        let mut path = self.path_at(class, key, prop.into());
        path.path
            .push(PathElement::Key(self.changeset.intern(entry)));
        let value = self.payload(&value);
        self.run(vec![set_field(path, value)])
    }

    /// Removes a dictionary entry (nothing happens if it is not there): `Update` with the
    /// `Erased` payload.
    pub fn dict_erase<'p>(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: impl Into<PropertyPath<'p>>,
        entry: &str,
    ) -> Result<(), StoreError> {
        let mut path = self.path_at(class, key, prop.into());
        path.path
            .push(PathElement::Key(self.changeset.intern(entry)));
        self.run(vec![set_field(path, Payload::Erased)])
    }

    /// Empties a dictionary: `Clear` with collection type Dictionary.
    pub fn dict_clear<'p>(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: impl Into<PropertyPath<'p>>,
    ) -> Result<(), StoreError> {
        self.clear(class, key, prop.into(), CollectionType::Dictionary)
    }

    /// The instructions this transaction has made so far.
    pub fn changeset(&self) -> &Changeset {
        &self.changeset
    }

    /// Writes the data and the transaction's changeset (as the next client version) in one
    /// SQLite commit. Returns the new client version, or `None` if nothing was written.
    pub fn commit(self) -> Result<Option<u64>, StoreError> {
        self.commit_with(false)
    }

    /// [`commit`](Self::commit) for `SyncSession::transact`: in the same SQLite commit, the
    /// new version is recorded as the transaction waiting for the server's verdict
    /// ([`Database::pending_transact`]), so that it survives a crash and is never uploaded as
    /// an ordinary changeset. Returns the new client version, or `None` (nothing written, and
    /// nothing recorded).
    ///
    /// # Errors
    /// As `commit`, and [`StoreError::InvalidArgument`] if another transaction is already
    /// waiting (nothing is written).
    pub fn commit_transact(self) -> Result<Option<u64>, StoreError> {
        self.commit_with(true)
    }

    fn commit_with(mut self, transact: bool) -> Result<Option<u64>, StoreError> {
        let changeset = std::mem::take(&mut self.changeset);
        let file_ident = self.db.config.file_ident;
        // What changed is only worked out when someone listens.
        let wrote = !changeset.is_empty();
        let touched =
            (wrote && self.db.notifier.has_watches()).then(|| super::notify::touched(&changeset));
        let conn = self.conn();
        // Taken out for the commit, put back (updated) only if it succeeds.
        let cache = self
            .db
            .shared
            .append_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let appended = if changeset.is_empty() {
            None
        } else {
            let appended = encode_within_limits(&changeset)
                .and_then(|encoded| {
                    append_local(conn, &encoded, file_ident, cache, self.changes_at_begin)
                })
                .and_then(|(version, appended)| {
                    if transact {
                        super::sync::record_transact(conn, version)?;
                    }
                    Ok((version, appended))
                });
            match appended {
                Ok(v) => Some(v),
                Err(e) => {
                    self.finish(false);
                    return Err(e);
                }
            }
        };
        let committed = super::exec_cached(conn, "COMMIT");
        if committed.is_ok() {
            let mut kept = self
                .db
                .shared
                .append_cache
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match appended {
                Some((_, appended)) => remember_append(conn, &mut kept, appended),
                // Nothing appended: what was cached still holds if nothing else was written.
                None => *kept = cache,
            }
            drop(kept);
            self.db.checkpointer.committed(conn);
        }
        let version = appended.map(|(v, _)| v);
        self.finish(committed.is_ok());
        committed?;
        match touched {
            Some(touched) => self.db.notifier.committed(touched),
            // A listener registered while this transaction ran may have read its first
            // snapshot before this commit: tell it that anything may have changed.
            None if wrote => self.db.notifier.committed(None),
            None => {}
        }
        if version.is_some() {
            self.db.run_commit_hooks();
        }
        Ok(version)
    }

    /// Discards everything the transaction wrote.
    pub fn rollback(mut self) {
        self.finish(false);
    }

    fn finish(&mut self, committed: bool) {
        if let Some(guard) = self.guard.take() {
            if !committed {
                let _ = guard.0.execute_batch("ROLLBACK");
            }
            drop(guard);
            self.db.release_writer();
        }
    }
}

impl Drop for WriteTransaction<'_> {
    fn drop(&mut self) {
        self.finish(false);
    }
}

/// The value a new object stores for `v` in `column`, as its `CreateObject` and then an
/// `Update` would leave it: a required float or double starts at +0.0, which realm-core keeps
/// over a -0.0 (`Val::realm_keeps`).
fn new_object_value(column: &crate::state::ColumnSpec, v: Val) -> Val {
    if !column.nullable {
        let default = Val::default_for(column.value_type);
        if default.realm_keeps(&v) {
            return default;
        }
    }
    v
}

/// `create`'s error for a key that is taken.
fn already_exists(class: &str, key: &PrimaryKey) -> StoreError {
    StoreError::InvalidArgument(format!(
        "{class}[{key}] already exists; use upsert to write to it"
    ))
}

/// A row of [`WriteTransaction::create_rows`] whose width is not the properties'.
fn wrong_width(values: &[Value], properties: &[&str]) -> StoreError {
    StoreError::InvalidArgument(format!(
        "a row has {} values for {} properties",
        values.len(),
        properties.len()
    ))
}

/// A prepared statement's failure on a row, as `create` reports it: a taken primary key is
/// `InvalidArgument`.
fn row_error(e: rusqlite::Error, class: &str, key: &PrimaryKey) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            already_exists(class, key)
        }
        e => e.into(),
    }
}

/// The failure of [`WriteTransaction::create_rows`]: which row, and `create`'s error for it.
#[derive(Debug)]
pub struct CreateRowsError {
    /// The index of the row in the rows given, from 0.
    pub row: usize,
    /// What `create` of that row failed with.
    pub error: StoreError,
}

impl CreateRowsError {
    fn new(row: usize, error: StoreError) -> Self {
        CreateRowsError { row, error }
    }
}

impl std::fmt::Display for CreateRowsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "row {}: {}", self.row, self.error)
    }
}

impl std::error::Error for CreateRowsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<CreateRowsError> for StoreError {
    /// The row's error; its index is in the message of `InvalidArgument` and `Corrupt`.
    fn from(e: CreateRowsError) -> Self {
        match e.error {
            StoreError::InvalidArgument(m) => {
                StoreError::InvalidArgument(format!("row {}: {m}", e.row))
            }
            other => other,
        }
    }
}

/// [`WriteTransaction::create_rows`]'s statement and what it checks each row against.
struct RowsPlan {
    insert: InsertPlan,
    /// The column of each property, in the rows' order.
    columns: Vec<crate::state::ColumnSpec>,
    pk_type: PayloadType,
}

/// Binds and executes one row of [`WriteTransaction::create_rows`], if the prepared
/// statement takes it: returns `Ok(false)` (nothing written) for a row `create` must handle
/// (a null or mistyped key, a link, a value that does not fit its column). The values bound
/// are those `insert_new` stores.
fn insert_row(
    stmt: &mut rusqlite::CachedStatement<'_>,
    plan: &RowsPlan,
    key: &PrimaryKey,
    values: &[Value],
) -> Result<bool, rusqlite::Error> {
    let state_key = to_key(key);
    if matches!(state_key, Key::Null) || state_key.payload_type() != plan.pk_type {
        return Ok(false);
    }
    stmt.raw_bind_parameter(1, codec::encode_key(&state_key))?;
    for (i, (value, column)) in values.iter().zip(&plan.columns).enumerate() {
        let at = i + 2;
        let fits = |t: PayloadType| column.value_type == t;
        match value {
            Value::Null if column.nullable => stmt.raw_bind_parameter(at, rusqlite::types::Null)?,
            Value::Int(v) if fits(PayloadType::Int) => stmt.raw_bind_parameter(at, *v)?,
            Value::Bool(v) if fits(PayloadType::Bool) => {
                stmt.raw_bind_parameter(at, i64::from(*v))?
            }
            Value::String(s) if fits(PayloadType::String) => {
                stmt.raw_bind_parameter(at, s.as_str())?
            }
            Value::Null | Value::Int(_) | Value::Bool(_) | Value::String(_) | Value::Link(_) => {
                return Ok(false)
            }
            other => {
                let v = match other {
                    Value::Binary(b) => Val::Binary(b.clone()),
                    Value::Timestamp(t) => Val::Timestamp(t.seconds(), t.nanoseconds()),
                    Value::Float(f) => Val::Float(f.to_bits()),
                    Value::Double(f) => Val::Double(f.to_bits()),
                    Value::Decimal(d) => Val::Decimal(d.to_bits()),
                    Value::ObjectId(id) => Val::ObjectId(id.0),
                    Value::Uuid(id) => Val::Uuid(id.0),
                    _ => unreachable!("matched above"),
                };
                if v.payload_type() != column.value_type {
                    return Ok(false);
                }
                stmt.raw_bind_parameter(at, codec::encode(&new_object_value(column, v)).0)?;
            }
        }
    }
    stmt.raw_execute()?;
    Ok(true)
}

/// The wire form of `key`, its string interned in `changeset` (a changeset borrowed apart from
/// its transaction, as [`WriteTransaction::create_rows`] needs).
fn wire_key_in(changeset: &mut Changeset, key: &PrimaryKey) -> WireKey {
    match key {
        PrimaryKey::Null => WireKey::Null,
        PrimaryKey::Int(v) => WireKey::Int(*v),
        PrimaryKey::String(s) => WireKey::String(changeset.intern(s)),
        PrimaryKey::ObjectId(id) => WireKey::ObjectId(*id),
        PrimaryKey::Uuid(id) => WireKey::Uuid(*id),
    }
}

/// `value` as a payload, moved into it (a link's class and string key interned in
/// `changeset`).
fn payload_in(changeset: &mut Changeset, value: Value) -> Payload {
    match value {
        Value::Null => Payload::Null,
        Value::Int(v) => Payload::Int(v),
        Value::Bool(v) => Payload::Bool(v),
        Value::String(s) => Payload::String(s.into()),
        Value::Binary(b) => Payload::Binary(b),
        Value::Timestamp(t) => Payload::Timestamp(t),
        Value::Float(v) => Payload::Float(v),
        Value::Double(v) => Payload::Double(v),
        Value::Decimal(d) => Payload::Decimal(d),
        Value::ObjectId(id) => Payload::ObjectId(id),
        Value::Uuid(id) => Payload::Uuid(id),
        Value::Link(link) => Payload::Link(Link {
            target_table: changeset.intern(&link.class),
            target: wire_key_in(changeset, &link.key),
        }),
    }
}

fn set_field(path: FieldPath, value: Payload) -> Instruction {
    Instruction::Update(Update {
        path,
        value,
        is_default: false,
        prior_size: 0,
    })
}
