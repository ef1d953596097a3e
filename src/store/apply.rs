//! Applying a changeset to the SQLite layout, with exactly the semantics of the in-memory
//! reference applier (`crate::state`): the same instructions succeed, the same ones fail with
//! `BadChangeset` or `SchemaMismatch`, and the resulting state is the same.
//!
//! Local writes go through here too: a write transaction builds instructions and applies them
//! one by one, so the store has a single path that changes data.

use std::borrow::Cow;

use rusqlite::types::{Value as Sql, ValueRef};
use rusqlite::{params, Connection, OptionalExtension};

use super::codec::{self, EMBEDDED_KIND};
use super::layout::{self, collection_table, kind_column, object_table, value_column};
use crate::changeset::{
    AddColumn, Changeset, CollectionType, FieldPath, Instruction, InternString, PathElement,
    Payload, PayloadType,
};
use crate::state::checks::{create_target, new_column, new_table, Refusal};
use crate::state::{
    check_scalar, embedded_target, ApplyError, ColumnSpec, Key, Schemas, TableSchema, TableSpec,
    Val,
};

/// Why an instruction failed, before its index is attached.
pub(crate) enum Fault {
    Bad(String),
    Schema(String),
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for Fault {
    fn from(e: rusqlite::Error) -> Self {
        Fault::Sql(e)
    }
}

impl From<Refusal> for Fault {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Bad(why) => Fault::Bad(why),
            Refusal::Schema(why) => Fault::Schema(why),
        }
    }
}

impl From<super::StoreError> for Fault {
    fn from(e: super::StoreError) -> Self {
        match e {
            super::StoreError::Sqlite(e) => Fault::Sql(e),
            other => Fault::Bad(other.to_string()),
        }
    }
}

type Res<T> = Result<T, Fault>;

fn bad<T>(reason: impl Into<String>) -> Res<T> {
    Err(Fault::Bad(reason.into()))
}

/// The outcome of applying a changeset.
pub(crate) enum ApplyFailure {
    Rejected(ApplyError),
    Sql(rusqlite::Error),
}

/// Applies `cs` atomically (a savepoint): on failure the database and `schemas` are unchanged.
pub(crate) fn apply(
    conn: &Connection,
    schemas: &mut Schemas,
    cs: &Changeset,
) -> Result<(), ApplyFailure> {
    apply_instructions(conn, schemas, cs, &cs.instructions)
}

/// Applies `instructions` (whose strings are in `cs`) atomically.
pub(crate) fn apply_instructions(
    conn: &Connection,
    schemas: &mut Schemas,
    cs: &Changeset,
    instructions: &[Instruction],
) -> Result<(), ApplyFailure> {
    let mut source = Slice {
        strings: cs,
        rest: instructions.iter(),
    };
    apply_each(conn, schemas, &mut source, |_, _| {}).map_err(|failure| match failure {
        Failed::Apply(failure) => failure,
        Failed::Source(never) => match never {},
    })
}

/// What [`apply_stream`] failed on.
pub(crate) enum StreamFailure {
    /// The bytes do not decode (nothing was applied).
    Decode(crate::changeset::ChangesetError),
    /// An instruction failed, as in [`apply`] (nothing was applied).
    Apply(ApplyFailure),
}

/// [`apply`] for a changeset still encoded: each instruction is applied as it is decoded
/// ([`Changeset::stream`]), so that a large server changeset is never held decoded (a fresh
/// client's first download; issue 18). `each` sees every instruction, with its strings, before
/// it is applied. Atomic as [`apply`] is: on failure the database and `schemas` are unchanged.
pub(crate) fn apply_stream(
    conn: &Connection,
    schemas: &mut Schemas,
    bytes: &[u8],
    each: impl FnMut(&Changeset, &Instruction),
) -> Result<(), StreamFailure> {
    apply_each(conn, schemas, &mut Changeset::stream(bytes), each).map_err(
        |failure| match failure {
            Failed::Apply(failure) => StreamFailure::Apply(failure),
            Failed::Source(e) => StreamFailure::Decode(e),
        },
    )
}

/// Where [`apply_each`] takes its instructions from: a decoded changeset's slice, or a stream
/// decoding them one at a time.
trait Source<'a> {
    /// Why the next instruction could not be had.
    type Error;
    /// The next instruction (borrowed from the slice, or decoded), or `None` after the last.
    fn next(&mut self) -> Result<Option<Cow<'a, Instruction>>, Self::Error>;
    /// The changeset holding the strings of the instructions given so far.
    fn strings(&self) -> &Changeset;
}

/// The instructions of a decoded changeset.
struct Slice<'a> {
    strings: &'a Changeset,
    rest: std::slice::Iter<'a, Instruction>,
}

impl<'a> Source<'a> for Slice<'a> {
    type Error = std::convert::Infallible;
    fn next(&mut self) -> Result<Option<Cow<'a, Instruction>>, Self::Error> {
        Ok(self.rest.next().map(Cow::Borrowed))
    }
    fn strings(&self) -> &Changeset {
        self.strings
    }
}

impl<'a> Source<'a> for crate::changeset::InstructionStream<'_> {
    type Error = crate::changeset::ChangesetError;
    fn next(&mut self) -> Result<Option<Cow<'a, Instruction>>, Self::Error> {
        Ok(self.next_instruction()?.map(Cow::Owned))
    }
    fn strings(&self) -> &Changeset {
        crate::changeset::InstructionStream::strings(self)
    }
}

/// How [`apply_each`] failed: its source, or an instruction.
enum Failed<E> {
    Source(E),
    Apply(ApplyFailure),
}

/// Applies every instruction of `source` in a savepoint, calling `each` before each one; on
/// any failure rolls the database and `schemas` back (`schemas` is copied before the first
/// schema instruction, the only kind that changes it) and names the instruction.
fn apply_each<'a, S: Source<'a>>(
    conn: &Connection,
    schemas: &mut Schemas,
    source: &mut S,
    mut each: impl FnMut(&Changeset, &Instruction),
) -> Result<(), Failed<S::Error>> {
    conn.execute_batch("SAVEPOINT tandem_apply")
        .map_err(|e| Failed::Apply(ApplyFailure::Sql(e)))?;
    let mut saved: Option<Schemas> = None;
    let mut applier = Applier::new(conn, schemas);
    let mut index: usize = 0;
    let failed = loop {
        let next = match source.next() {
            Ok(next) => next,
            Err(e) => break Err(e),
        };
        let done = match &next {
            Some(instruction) => {
                if saved.is_none() && instruction.is_schema_change() {
                    saved = Some(applier.schemas.clone());
                }
                each(source.strings(), instruction);
                applier.instruction(source.strings(), instruction)
            }
            // The object still pending after the last instruction; its failure (an SQL error
            // only) is reported at that instruction.
            None => applier.flush(source.strings()),
        };
        match done {
            Err(fault) if next.is_none() => break Ok((fault, index.saturating_sub(1))),
            Err(fault) => break Ok((fault, index)),
            Ok(()) if next.is_none() => {
                return conn
                    .execute_batch("RELEASE tandem_apply")
                    .map_err(|e| Failed::Apply(ApplyFailure::Sql(e)));
            }
            Ok(()) => index += 1,
        }
    };
    Err(match failed {
        Ok((fault, index)) => Failed::Apply(undo(conn, schemas, saved, fault, index)),
        Err(e) => {
            roll_back(conn, schemas, saved);
            Failed::Source(e)
        }
    })
}

/// Rolls the database back to the apply's savepoint and, if saved, `schemas` to `saved`.
fn roll_back(conn: &Connection, schemas: &mut Schemas, saved: Option<Schemas>) {
    let _ = conn.execute_batch("ROLLBACK TO tandem_apply; RELEASE tandem_apply");
    if let Some(saved) = saved {
        *schemas = saved;
    }
}

/// Rolls back a failed apply (its savepoint and, if saved, `schemas`) and names the failure
/// with the index of the instruction it happened at.
fn undo(
    conn: &Connection,
    schemas: &mut Schemas,
    saved: Option<Schemas>,
    fault: Fault,
    index: usize,
) -> ApplyFailure {
    roll_back(conn, schemas, saved);
    match fault {
        Fault::Bad(reason) => ApplyFailure::Rejected(ApplyError::BadChangeset {
            instruction: index,
            reason,
        }),
        Fault::Schema(reason) => ApplyFailure::Rejected(ApplyError::SchemaMismatch {
            instruction: index,
            reason,
        }),
        Fault::Sql(e) => ApplyFailure::Sql(e),
    }
}

/// The collection or single-valued property a path names (no trailing list index or dictionary
/// key): its owner's class and row, the property, and its column. Used by local writes to find
/// a list's length and stored positions wherever the list is (a top-level object or an embedded
/// object below it).
///
/// # Errors
/// `InvalidArgument` (with the applier's reason) when the path leads nowhere, or ends in an
/// element or entry rather than a property.
pub(crate) fn locate(
    conn: &Connection,
    schemas: &mut Schemas,
    cs: &Changeset,
    path: &FieldPath,
) -> Result<(String, i64, String, ColumnSpec), super::StoreError> {
    let applier = Applier::new(conn, schemas);
    match applier.resolve(cs, path) {
        Ok(Loc::Column {
            class,
            row,
            prop,
            column,
        }) => Ok((class, row, prop, column)),
        Ok(_) => Err(super::StoreError::InvalidArgument(
            "the path ends in an element, not a property".into(),
        )),
        Err(Fault::Sql(e)) => Err(super::StoreError::Sqlite(e)),
        Err(Fault::Bad(why) | Fault::Schema(why)) => Err(super::StoreError::InvalidArgument(why)),
    }
}

/// Where a path ends.
enum Loc {
    /// A single-valued property of a row.
    Column {
        class: String,
        row: i64,
        prop: String,
        column: ColumnSpec,
    },
    /// A position in a list (possibly one past the end).
    Element {
        class: String,
        prop: String,
        owner: i64,
        index: u32,
        column: ColumnSpec,
    },
    /// A key of a dictionary (possibly absent).
    Entry {
        class: String,
        prop: String,
        owner: i64,
        key: String,
        column: ColumnSpec,
    },
}

struct Applier<'a> {
    conn: &'a Connection,
    schemas: &'a mut Schemas,
    /// The top-level object an instruction of this call last found or created, and its rowid:
    /// a changeset addresses one object in a run of instructions (`CreateObject`, then one
    /// `Update` per property), and looking its rowid up for each took 38% of applying a
    /// download of new objects (callgrind, `SYNC_BENCH_ONLY=first-sync`). A rowid stays the
    /// object's until `EraseObject` or `EraseTable`, which forget it; the applier lives for one
    /// call, inside one savepoint.
    last_row: std::cell::RefCell<Option<(String, Key, i64)>>,
    /// The object of the last `CreateObject` that did not exist, not inserted yet: the
    /// `Update`s of its plain single-valued properties that follow it are gathered here and
    /// the object is inserted with them in one `INSERT` (see [`Pending`]).
    pending: Option<Pending>,
    /// The last `INSERT` [`flush`](Applier::flush) built.
    insert_shape: Option<InsertShape>,
}

/// A created object whose row is not written yet, and the plain single-valued properties set
/// since its `CreateObject`, in the order first set: their stored values, and the kind of a
/// mixed one. A changeset of new objects is a `CreateObject` and one `Update` per property for
/// each; writing the row with `INSERT (_pk)` and then one `UPDATE` per property took 3 of an
/// object's statements where one does. Any instruction other than such an `Update` of this
/// object writes the row first ([`Applier::flush`]), so every other instruction sees exactly
/// the rows it saw before. An `Update` to a float or double zero is not gathered: whether
/// realm-core keeps the other zero depends on the stored value (`Val::realm_keeps`), so it goes
/// through the general path after the row is written.
struct Pending {
    class: String,
    key: Key,
    /// Each gathered property (by its name in the changeset), its stored value, and the kind
    /// of a mixed one.
    columns: Vec<(InternString, Sql, Option<i64>)>,
}

/// The `INSERT` of the last object [`Applier::flush`] wrote, and what it was for (its class, and
/// its properties with whether each has a kind column): the objects of one changeset are
/// written with the same properties, so the statement is built once for all of them.
struct InsertShape {
    class: String,
    columns: Vec<(InternString, bool)>,
    sql: String,
}

fn string(cs: &Changeset, s: InternString) -> Res<String> {
    match cs.string(s) {
        Some(v) => Ok(v.to_owned()),
        None => bad(format!("intern string {} is not defined", s.0)),
    }
}

/// An SQL literal, for column defaults.
fn literal(v: &Sql) -> String {
    match v {
        Sql::Null => "NULL".into(),
        Sql::Integer(i) => i.to_string(),
        Sql::Real(f) => format!("{f:?}"),
        Sql::Text(t) => format!("'{}'", t.replace('\'', "''")),
        Sql::Blob(b) => format!(
            "X'{}'",
            b.iter().map(|x| format!("{x:02X}")).collect::<String>()
        ),
    }
}

/// A link stored in a mixed column: table name, NUL, key type code, key bytes (none for the
/// null key, whose type code is Null's).
fn mixed_link(table: &str, key: &Key) -> Sql {
    let mut out = table.as_bytes().to_vec();
    out.push(0);
    out.push(key.payload_type().code() as u8);
    match codec::encode_key(key) {
        Sql::Integer(i) => out.extend_from_slice(&i.to_be_bytes()),
        Sql::Text(t) => out.extend_from_slice(t.as_bytes()),
        Sql::Blob(b) => out.extend_from_slice(&b),
        _ => {}
    }
    Sql::Blob(out)
}

pub(crate) fn read_mixed_link(bytes: &[u8]) -> Option<Val> {
    let nul = bytes.iter().position(|b| *b == 0)?;
    let table = std::str::from_utf8(&bytes[..nul]).ok()?.to_owned();
    let code = *bytes.get(nul + 1)?;
    let rest = &bytes[nul + 2..];
    let t = PayloadType::from_code(i64::from(code))?;
    let key = match t {
        PayloadType::Null => Key::Null,
        PayloadType::Int => Key::Int(i64::from_be_bytes(rest.try_into().ok()?)),
        PayloadType::String => Key::String(String::from_utf8(rest.to_vec()).ok()?),
        other => codec::decode_key(ValueRef::Blob(rest), other)?,
    };
    Some(Val::Link(table, key))
}

/// A value as stored for `column`: (SQL value, kind).
pub(crate) fn store_value(column: &ColumnSpec, v: &Val) -> (Sql, i64) {
    match v {
        Val::Link(table, key) if column.value_type == PayloadType::Null => {
            (mixed_link(table, key), PayloadType::Link.code())
        }
        other => codec::encode(other),
    }
}

impl<'a> Applier<'a> {
    fn new(conn: &'a Connection, schemas: &'a mut Schemas) -> Self {
        Applier {
            conn,
            schemas,
            last_row: Default::default(),
            pending: None,
            insert_shape: None,
        }
    }
}

impl Applier<'_> {
    /// Raises the file's format where `stored` (a value about to be written) needs it: a link
    /// to the null key ([`codec::is_null_key_link`]).
    fn allow(&self, stored: &(Sql, i64)) -> Res<()> {
        if codec::is_null_key_link(stored) {
            layout::allow_null_key_links(self.conn)?;
        }
        Ok(())
    }

    fn top_level_row(&self, class: &str, key: &Key) -> Res<Option<i64>> {
        if let Some((c, k, row)) = &*self.last_row.borrow() {
            if c == class && k == key {
                return Ok(Some(*row));
            }
        }
        let row = layout::row_id(self.conn, class, key)?;
        if let Some(row) = row {
            *self.last_row.borrow_mut() = Some((class.to_owned(), key.clone(), row));
        }
        Ok(row)
    }

    /// Gathers `instruction` into the pending object if it is an `Update` of one of its plain
    /// single-valued properties ([`Pending`]); whether it did.
    fn gather(&mut self, cs: &Changeset, instruction: &Instruction) -> Res<bool> {
        let (Some(pending), Instruction::Update(update)) = (&self.pending, instruction) else {
            return Ok(false);
        };
        if !update.path.path.is_empty()
            || cs.string(update.path.table) != Some(pending.class.as_str())
            || Key::resolve(&update.path.object, cs).as_ref() != Some(&pending.key)
        {
            return Ok(false);
        }
        let field = update.path.field;
        let Some(column) = cs
            .string(field)
            .and_then(|prop| self.schemas.get(&pending.class)?.columns.get(prop))
        else {
            return Ok(false);
        };
        if column.collection != CollectionType::Single
            || embedded_target(self.schemas, column).is_some()
        {
            return Ok(false);
        }
        let v = check_scalar(self.schemas, column, &update.value, cs).map_err(Fault::Bad)?;
        if v.other_zero().is_some() {
            return Ok(false);
        }
        let stored = store_value(column, &v);
        self.allow(&stored)?;
        let (sql, kind) = stored;
        let kind = (column.value_type == PayloadType::Null).then_some(kind);
        let pending = self.pending.as_mut().expect("checked above");
        match pending.columns.iter_mut().find(|(f, _, _)| *f == field) {
            Some(set) => *set = (field, sql, kind),
            None => pending.columns.push((field, sql, kind)),
        }
        Ok(true)
    }

    /// Writes the stored value of the single-valued property `prop` of row `row` of `table`,
    /// and its kind if the property is mixed (`kind` is then `Some`).
    fn write_column(
        &self,
        table: &str,
        prop: &str,
        row: i64,
        value: &Sql,
        kind: Option<i64>,
    ) -> Res<()> {
        match kind {
            Some(kind) => self
                .conn
                .prepare_cached(&format!(
                    "UPDATE {table} SET {} = ?1, {} = ?2 WHERE rowid = ?3",
                    value_column(prop),
                    kind_column(prop)
                ))?
                .execute(params![value, kind, row])?,
            None => self
                .conn
                .prepare_cached(&format!(
                    "UPDATE {table} SET {} = ?1 WHERE rowid = ?2",
                    value_column(prop)
                ))?
                .execute(params![value, row])?,
        };
        Ok(())
    }

    /// Writes the pending object's row, if there is one, with the properties gathered for it.
    /// The object's `CreateObject` did not look it up: the `INSERT` is the existence check, and
    /// an object that already exists (the primary key's constraint refuses the row) gets the
    /// gathered properties by `UPDATE` instead, as `CreateObject` (idempotent) and the
    /// `Update`s would have done.
    fn flush(&mut self, cs: &Changeset) -> Res<()> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        let same_shape = self.insert_shape.as_ref().is_some_and(|shape| {
            shape.class == pending.class
                && shape.columns.len() == pending.columns.len()
                && shape
                    .columns
                    .iter()
                    .zip(&pending.columns)
                    .all(|((f, mixed), (g, _, kind))| f == g && *mixed == kind.is_some())
        });
        if !same_shape {
            let mut columns = Vec::with_capacity(pending.columns.len());
            for (field, _, kind) in &pending.columns {
                columns.push((string(cs, *field)?, kind.is_some()));
            }
            let sql = layout::insert_object_sql(
                &pending.class,
                columns.iter().map(|(prop, mixed)| (prop.as_str(), *mixed)),
            );
            self.insert_shape = Some(InsertShape {
                class: pending.class.clone(),
                columns: pending
                    .columns
                    .iter()
                    .map(|(f, _, kind)| (*f, kind.is_some()))
                    .collect(),
                sql,
            });
        }
        let sql = &self.insert_shape.as_ref().expect("built above").sql;
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut at = 1;
        stmt.raw_bind_parameter(at, codec::encode_key(&pending.key))?;
        for (_, value, kind) in &pending.columns {
            at += 1;
            stmt.raw_bind_parameter(at, value)?;
            if let Some(kind) = kind {
                at += 1;
                stmt.raw_bind_parameter(at, kind)?;
            }
        }
        match stmt.raw_execute() {
            Ok(_) => {
                let row = self.conn.last_insert_rowid();
                *self.last_row.borrow_mut() = Some((pending.class, pending.key, row));
                Ok(())
            }
            Err(e) if layout::is_key_taken(&e) => {
                drop(stmt);
                let row = self
                    .top_level_row(&pending.class, &pending.key)?
                    .ok_or_else(|| Fault::Bad("CreateObject: the key is taken".into()))?;
                let table = object_table(&pending.class);
                for (field, value, kind) in &pending.columns {
                    self.write_column(&table, &string(cs, *field)?, row, value, *kind)?;
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn instruction(&mut self, cs: &Changeset, instruction: &Instruction) -> Res<()> {
        if self.gather(cs, instruction)? {
            return Ok(());
        }
        self.flush(cs)?;
        match instruction {
            Instruction::AddTable(add) => {
                if let Some((name, spec)) = new_table(self.schemas, cs, add)? {
                    layout::create_table(self.conn, &name, &spec)?;
                    self.schemas.insert(
                        name,
                        TableSchema {
                            spec,
                            columns: Default::default(),
                        },
                    );
                }
                Ok(())
            }
            Instruction::EraseTable { table } => {
                self.last_row.borrow_mut().take();
                let name = string(cs, *table)?;
                let schema = match self.schemas.remove(&name) {
                    Some(s) => s,
                    None => return bad(format!("EraseTable: no table {name}")),
                };
                layout::drop_table(self.conn, &name, &schema)?;
                Ok(())
            }
            Instruction::AddColumn(add) => self.add_column(cs, add),
            Instruction::EraseColumn { table, field } => {
                let class = string(cs, *table)?;
                let name = string(cs, *field)?;
                let schema = match self.schemas.get_mut(&class) {
                    Some(s) => s,
                    None => return bad(format!("EraseColumn: no table {class}")),
                };
                let column = match schema.columns.remove(&name) {
                    Some(c) => c,
                    None => return bad(format!("EraseColumn: no column {class}.{name}")),
                };
                // Embedded children held by the column go with it.
                if embedded_target(self.schemas, &column).is_some() {
                    let rows: Vec<i64> = self.all_rows(&class)?;
                    for row in rows {
                        self.delete_children(&class, row, &name, &column)?;
                    }
                }
                layout::drop_column(self.conn, &class, &name, &column)?;
                Ok(())
            }
            Instruction::CreateObject { table, object } => {
                let (class, key) = create_target(self.schemas, cs, *table, object)?;
                // Written by the next instruction that is not one of its `Update`s. A null key
                // is looked up first: `_pk UNIQUE` lets several NULLs in.
                if key != Key::Null || self.top_level_row(&class, &key)?.is_none() {
                    self.pending = Some(Pending {
                        class,
                        key,
                        columns: Vec::new(),
                    });
                }
                Ok(())
            }
            Instruction::EraseObject { table, object } => {
                let class = string(cs, *table)?;
                let key = match Key::resolve(object, cs) {
                    Some(k) => k,
                    None => return bad("EraseObject: undefined string key"),
                };
                match self.schemas.get(&class).map(|s| &s.spec) {
                    Some(TableSpec::TopLevel { .. }) => {}
                    _ => return bad(format!("EraseObject: no top-level table {class}")),
                }
                if let Some(row) = self.top_level_row(&class, &key)? {
                    self.delete_row(&class, row)?;
                    // After the lookup, which remembered the row it found.
                    self.last_row.borrow_mut().take();
                }
                Ok(())
            }
            Instruction::Update(update) => {
                let loc = self.resolve(cs, &update.path)?;
                self.update(cs, loc, &update.value, update.prior_size)
            }
            Instruction::AddInteger(add) => {
                let loc = self.resolve(cs, &add.path)?;
                self.add_integer(loc, add.value)
            }
            Instruction::ArrayInsert(insert) => match self.resolve(cs, &insert.path)? {
                Loc::Element {
                    class,
                    prop,
                    owner,
                    index,
                    column,
                } => {
                    let table = collection_table(&class, &prop, CollectionType::List);
                    let size = self.list_size(&table, owner)?;
                    check_size(size, insert.prior_size)?;
                    if i64::from(index) > size {
                        return bad(format!("ArrayInsert: index {index} beyond size {size}"));
                    }
                    let (v, k) = self.element_value(cs, &column, &insert.value)?;
                    self.shift(&table, owner, i64::from(index), 1)?;
                    self.conn
                        .prepare_cached(&format!(
                            "INSERT INTO {table} (owner, pos, v, k) VALUES (?1, ?2, ?3, ?4)"
                        ))?
                        .execute(params![owner, index, v, k])?;
                    Ok(())
                }
                _ => bad("ArrayInsert: not a list"),
            },
            Instruction::ArrayMove(mv) => match self.resolve(cs, &mv.path)? {
                Loc::Element {
                    class,
                    prop,
                    owner,
                    index,
                    ..
                } => {
                    let table = collection_table(&class, &prop, CollectionType::List);
                    let size = self.list_size(&table, owner)?;
                    check_size(size, mv.prior_size)?;
                    let (from, to) = (i64::from(index), i64::from(mv.to));
                    if from >= size || to >= size {
                        return bad(format!("ArrayMove {from} -> {to} out of range {size}"));
                    }
                    if from != to {
                        // Park the element at -1, close the gap, open the new one, put it back.
                        self.set_pos(&table, owner, from, -1)?;
                        self.shift(&table, owner, from + 1, -1)?;
                        self.shift(&table, owner, to, 1)?;
                        self.set_pos(&table, owner, -1, to)?;
                    }
                    Ok(())
                }
                _ => bad("ArrayMove: not a list"),
            },
            Instruction::ArrayErase(erase) => match self.resolve(cs, &erase.path)? {
                Loc::Element {
                    class,
                    prop,
                    owner,
                    index,
                    column,
                } => {
                    let table = collection_table(&class, &prop, CollectionType::List);
                    let size = self.list_size(&table, owner)?;
                    check_size(size, erase.prior_size)?;
                    if i64::from(index) >= size {
                        return bad(format!("ArrayErase: index {index} out of range {size}"));
                    }
                    self.delete_list_element(&class, &prop, &column, owner, i64::from(index))?;
                    self.shift(&table, owner, i64::from(index) + 1, -1)?;
                    Ok(())
                }
                _ => bad("ArrayErase: not a list"),
            },
            Instruction::Clear(clear) => match self.resolve(cs, &clear.path)? {
                Loc::Column {
                    class,
                    row,
                    prop,
                    column,
                } if column.collection == clear.collection_type
                    && column.collection != CollectionType::Single =>
                {
                    self.clear_collection(&class, row, &prop, &column)
                }
                _ => bad(format!("Clear: not a {:?}", clear.collection_type)),
            },
            Instruction::SetInsert(set) | Instruction::SetErase(set) => {
                let insert = matches!(instruction, Instruction::SetInsert(_));
                match self.resolve(cs, &set.path)? {
                    Loc::Column {
                        class,
                        row,
                        prop,
                        column,
                    } if column.collection == CollectionType::Set => {
                        let v = check_scalar(self.schemas, &column, &set.value, cs)
                            .map_err(Fault::Bad)?;
                        let stored = store_value(&column, &v);
                        if insert {
                            self.allow(&stored)?;
                        }
                        let (sql, kind) = codec::set_element(stored);
                        let table = collection_table(&class, &prop, CollectionType::Set);
                        if insert {
                            self.conn
                                .prepare_cached(&format!("INSERT OR IGNORE INTO {table} (owner, v, k) VALUES (?1, ?2, ?3)"))?
                                .execute(params![row, sql, kind])?;
                        } else {
                            self.conn
                                .prepare_cached(&format!(
                                    "DELETE FROM {table} WHERE owner = ?1 AND k = ?2 AND v IS ?3"
                                ))?
                                .execute(params![row, kind, sql])?;
                        }
                        Ok(())
                    }
                    _ => bad("SetInsert/SetErase: not a set"),
                }
            }
        }
    }

    fn add_column(&mut self, cs: &Changeset, add: &AddColumn) -> Res<()> {
        let Some((class, name, column)) = new_column(self.schemas, cs, add)? else {
            return Ok(());
        };
        let embedded_single = embedded_target(self.schemas, &column).is_some();
        let default = match &column {
            c if c.nullable || matches!(c.value_type, PayloadType::Null | PayloadType::Link) => {
                "NULL".to_owned()
            }
            c => literal(&codec::encode(&Val::default_for(c.value_type)).0),
        };
        layout::add_column(self.conn, &class, &name, &column, &default, embedded_single)?;
        if let Some(schema) = self.schemas.get_mut(&class) {
            schema.columns.insert(name, column);
        }
        Ok(())
    }

    fn all_rows(&self, class: &str) -> Res<Vec<i64>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT rowid FROM {}", object_table(class)))?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        Ok(rows)
    }

    /// Resolves a path, as the reference applier's walk does.
    fn resolve(&self, cs: &Changeset, path: &FieldPath) -> Res<Loc> {
        let mut class = string(cs, path.table)?;
        let key = match Key::resolve(&path.object, cs) {
            Some(k) => k,
            None => return bad("undefined string key"),
        };
        let mut field = string(cs, path.field)?;
        let mut steps: Vec<(Option<u32>, Option<String>)> = Vec::with_capacity(path.path.len());
        for element in &path.path {
            steps.push(match element {
                PathElement::Index(i) => (Some(*i), None),
                PathElement::Key(k) => (None, Some(string(cs, *k)?)),
            });
        }
        if !matches!(
            self.schemas.get(&class).map(|s| &s.spec),
            Some(TableSpec::TopLevel { .. })
        ) {
            return bad(format!("no object {class}[{key}]"));
        }
        let mut row = match self.top_level_row(&class, &key)? {
            Some(r) => r,
            None => return bad(format!("no object {class}[{key}]")),
        };
        let mut rest: &[(Option<u32>, Option<String>)] = &steps;
        loop {
            let column = match self.schemas.get(&class).and_then(|s| s.columns.get(&field)) {
                Some(c) => c.clone(),
                None => {
                    return bad(match self.schemas.get(&class).map(|s| &s.spec) {
                        Some(TableSpec::TopLevel { pk_field, .. }) if *pk_field == field => {
                            format!(
                                "{class}.{field} is the primary key, which cannot be changed \
                                 once the object exists (as in Realm)"
                            )
                        }
                        _ => format!("no column {class}.{field}"),
                    })
                }
            };
            let Some((first, tail)) = rest.split_first() else {
                return Ok(Loc::Column {
                    class,
                    row,
                    prop: field,
                    column,
                });
            };
            let target = column.link_target.clone().unwrap_or_default();
            let child: Option<i64> = match (column.collection, first) {
                (CollectionType::List, (Some(i), None)) => {
                    if tail.is_empty() {
                        return Ok(Loc::Element {
                            class,
                            prop: field,
                            owner: row,
                            index: *i,
                            column,
                        });
                    }
                    let table = collection_table(&class, &field, CollectionType::List);
                    self.embedded_child(
                        &format!("SELECT v, k FROM {table} WHERE owner = ?1 AND pos = ?2"),
                        params![row, i],
                    )?
                }
                (CollectionType::Dictionary, (None, Some(k))) => {
                    if tail.is_empty() {
                        return Ok(Loc::Entry {
                            class,
                            prop: field,
                            owner: row,
                            key: k.clone(),
                            column,
                        });
                    }
                    let table = collection_table(&class, &field, CollectionType::Dictionary);
                    self.embedded_child(
                        &format!("SELECT v, k FROM {table} WHERE owner = ?1 AND key = ?2"),
                        params![row, k],
                    )?
                }
                (CollectionType::Single, (None, Some(_)))
                    if embedded_target(self.schemas, &column).is_some() =>
                {
                    let id: Option<i64> = self.conn.query_row(
                        &format!(
                            "SELECT {} FROM {} WHERE rowid = ?1",
                            value_column(&field),
                            object_table(&class)
                        ),
                        [row],
                        |r| r.get(0),
                    )?;
                    // The step names a field of the embedded object: do not consume it.
                    match id {
                        Some(child) => {
                            let Some((_, Some(next))) = rest.first() else {
                                return bad("expected a field name inside an embedded object");
                            };
                            class = target;
                            row = child;
                            field = next.clone();
                            rest = tail;
                            continue;
                        }
                        None => return bad(format!("path does not fit field {field}")),
                    }
                }
                _ => return bad(format!("path does not fit field {field}")),
            };
            let Some(child) = child else {
                return bad(format!("{field}: element is not an embedded object"));
            };
            match tail.split_first() {
                Some(((None, Some(next)), after)) => {
                    class = target;
                    row = child;
                    field = next.clone();
                    rest = after;
                }
                _ => return bad("expected a field name inside an embedded object"),
            }
        }
    }

    fn embedded_child(&self, sql: &str, params: impl rusqlite::Params) -> Res<Option<i64>> {
        let found: Option<(Option<i64>, i64)> = self
            .conn
            .prepare_cached(sql)?
            .query_row(params, |r| Ok((r.get(0).ok(), r.get(1)?)))
            .optional()?;
        Ok(match found {
            Some((Some(id), EMBEDDED_KIND)) => Some(id),
            _ => None,
        })
    }

    /// A new embedded row of `class`, all columns at their defaults.
    fn new_embedded(&self, class: &str) -> Res<i64> {
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO {} DEFAULT VALUES",
                object_table(class)
            ))?
            .execute([])?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The stored form of a list element or dictionary value.
    fn element_value(
        &self,
        cs: &Changeset,
        column: &ColumnSpec,
        value: &Payload,
    ) -> Res<(Sql, i64)> {
        match (embedded_target(self.schemas, column), value) {
            (Some(table), Payload::ObjectValue) => {
                let table = table.to_owned();
                Ok((Sql::Integer(self.new_embedded(&table)?), EMBEDDED_KIND))
            }
            // As in the reference applier: a null value in a dictionary of embedded objects.
            (Some(_), Payload::Null) if column.nullable => Ok(store_value(column, &Val::Null)),
            (Some(_), _) => bad("an embedded collection takes ObjectValue"),
            (None, _) => {
                let v = check_scalar(self.schemas, column, value, cs).map_err(Fault::Bad)?;
                let stored = store_value(column, &v);
                self.allow(&stored)?;
                Ok(stored)
            }
        }
    }

    /// Whether realm-core keeps the stored value over `new` ([`Val::realm_keeps`]). `select`
    /// reads (value, kind code) of the stored value; it runs only when `new` is a float or
    /// double zero, the only values realm-core can keep over different bits.
    fn keeps_stored(&self, new: &Val, select: &str, params: impl rusqlite::Params) -> Res<bool> {
        if new.other_zero().is_none() {
            return Ok(false);
        }
        let stored = self
            .conn
            .prepare_cached(select)?
            .query_row(params, |r| {
                let kind = PayloadType::from_code(r.get(1)?);
                let raw = r.get_ref(0)?;
                Ok(kind.and_then(|k| codec::decode(raw, k, None)))
            })
            .optional()?
            .flatten();
        Ok(stored.is_some_and(|old| old.realm_keeps(new)))
    }

    /// [`keeps_stored`](Self::keeps_stored) for a list element's or dictionary value's payload
    /// (an embedded object or an unfit value is never kept: `element_value` judges those).
    fn keeps_stored_payload(
        &self,
        cs: &Changeset,
        value: &Payload,
        select: &str,
        params: impl rusqlite::Params,
    ) -> Res<bool> {
        match Val::from_payload(value, cs) {
            Some(new) => self.keeps_stored(&new, select, params),
            None => Ok(false),
        }
    }

    fn update(&self, cs: &Changeset, loc: Loc, value: &Payload, prior_size: u32) -> Res<()> {
        match loc {
            Loc::Column {
                class,
                row,
                prop,
                column,
            } => {
                if column.collection != CollectionType::Single {
                    return bad("Update on a whole collection field");
                }
                let table = object_table(&class);
                match (
                    embedded_target(self.schemas, &column).map(str::to_owned),
                    value,
                ) {
                    (Some(target), Payload::ObjectValue) => {
                        let current: Option<i64> = self.conn.query_row(
                            &format!(
                                "SELECT {} FROM {table} WHERE rowid = ?1",
                                value_column(&prop)
                            ),
                            [row],
                            |r| r.get(0),
                        )?;
                        if current.is_none() {
                            let child = self.new_embedded(&target)?;
                            self.conn.execute(
                                &format!(
                                    "UPDATE {table} SET {} = ?1 WHERE rowid = ?2",
                                    value_column(&prop)
                                ),
                                params![child, row],
                            )?;
                        }
                        Ok(())
                    }
                    (Some(_), Payload::Null) => {
                        self.delete_children(&class, row, &prop, &column)?;
                        self.conn.execute(
                            &format!(
                                "UPDATE {table} SET {} = NULL WHERE rowid = ?1",
                                value_column(&prop)
                            ),
                            [row],
                        )?;
                        Ok(())
                    }
                    (Some(_), _) => bad("an embedded object field takes ObjectValue or null"),
                    (None, _) => {
                        let v =
                            check_scalar(self.schemas, &column, value, cs).map_err(Fault::Bad)?;
                        let kind_sql = match column.value_type {
                            PayloadType::Null => kind_column(&prop),
                            t => t.code().to_string(),
                        };
                        let stored = format!(
                            "SELECT {}, {kind_sql} FROM {table} WHERE rowid = ?1",
                            value_column(&prop)
                        );
                        if self.keeps_stored(&v, &stored, [row])? {
                            return Ok(());
                        }
                        let stored = store_value(&column, &v);
                        self.allow(&stored)?;
                        let (sql, kind) = stored;
                        let kind = (column.value_type == PayloadType::Null).then_some(kind);
                        self.write_column(&table, &prop, row, &sql, kind)
                    }
                }
            }
            Loc::Element {
                class,
                prop,
                owner,
                index,
                column,
            } => {
                let table = collection_table(&class, &prop, CollectionType::List);
                let size = self.list_size(&table, owner)?;
                check_size(size, prior_size)?;
                if i64::from(index) >= size {
                    return bad(format!("Update: index {index} out of range {size}"));
                }
                let kind: i64 = self.conn.query_row(
                    &format!("SELECT k FROM {table} WHERE owner = ?1 AND pos = ?2"),
                    params![owner, index],
                    |r| r.get(0),
                )?;
                if matches!(value, Payload::ObjectValue) && kind == EMBEDDED_KIND {
                    return Ok(());
                }
                let stored = format!("SELECT v, k FROM {table} WHERE owner = ?1 AND pos = ?2");
                if self.keeps_stored_payload(cs, value, &stored, params![owner, index])? {
                    return Ok(());
                }
                let (v, k) = self.element_value(cs, &column, value)?;
                self.delete_list_element(&class, &prop, &column, owner, i64::from(index))?;
                self.conn
                    .prepare_cached(&format!(
                        "INSERT INTO {table} (owner, pos, v, k) VALUES (?1, ?2, ?3, ?4)"
                    ))?
                    .execute(params![owner, index, v, k])?;
                Ok(())
            }
            Loc::Entry {
                class,
                prop,
                owner,
                key,
                column,
            } => {
                let table = collection_table(&class, &prop, CollectionType::Dictionary);
                let current: Option<(Option<i64>, i64)> = self
                    .conn
                    .query_row(
                        &format!("SELECT v, k FROM {table} WHERE owner = ?1 AND key = ?2"),
                        params![owner, key],
                        |r| Ok((r.get(0).ok(), r.get(1)?)),
                    )
                    .optional()?;
                let is_embedded = matches!(current, Some((_, EMBEDDED_KIND)));
                match value {
                    Payload::Erased => {
                        self.delete_entry(&class, &prop, &column, owner, &key)?;
                        Ok(())
                    }
                    Payload::ObjectValue if is_embedded => Ok(()),
                    _ if current.is_some()
                        && self.keeps_stored_payload(
                            cs,
                            value,
                            &format!("SELECT v, k FROM {table} WHERE owner = ?1 AND key = ?2"),
                            params![owner, key],
                        )? =>
                    {
                        Ok(())
                    }
                    _ => {
                        let (v, k) = self.element_value(cs, &column, value)?;
                        self.delete_entry(&class, &prop, &column, owner, &key)?;
                        self.conn
                            .prepare_cached(&format!(
                                "INSERT INTO {table} (owner, key, v, k) VALUES (?1, ?2, ?3, ?4)"
                            ))?
                            .execute(params![owner, key, v, k])?;
                        Ok(())
                    }
                }
            }
        }
    }

    fn add_integer(&self, loc: Loc, amount: i64) -> Res<()> {
        // What the reference applier does too: an absent dictionary entry, null, and a
        // non-integer in a mixed slot are no-ops (docs/ot.md, AddInteger vs Update).
        let (mixed, entry) = match &loc {
            Loc::Column { column, .. } | Loc::Element { column, .. } => {
                (column.value_type == PayloadType::Null, false)
            }
            Loc::Entry { column, .. } => (column.value_type == PayloadType::Null, true),
        };
        let (select, update, args): (String, String, Vec<Sql>) = match &loc {
            Loc::Column {
                class,
                row,
                prop,
                column,
            } => {
                if column.collection != CollectionType::Single
                    || embedded_target(self.schemas, column).is_some()
                {
                    return bad("AddInteger on a non-scalar field");
                }
                let kind = if column.value_type == PayloadType::Null {
                    kind_column(prop)
                } else {
                    column.value_type.code().to_string()
                };
                let t = object_table(class);
                (
                    format!(
                        "SELECT {}, {kind} FROM {t} WHERE rowid = ?1",
                        value_column(prop)
                    ),
                    format!(
                        "UPDATE {t} SET {} = ?2 WHERE rowid = ?1",
                        value_column(prop)
                    ),
                    vec![Sql::Integer(*row)],
                )
            }
            Loc::Element {
                class,
                prop,
                owner,
                index,
                ..
            } => {
                let t = collection_table(class, prop, CollectionType::List);
                (
                    format!("SELECT v, k FROM {t} WHERE owner = ?1 AND pos = ?3"),
                    format!("UPDATE {t} SET v = ?2 WHERE owner = ?1 AND pos = ?3"),
                    vec![Sql::Integer(*owner), Sql::Integer(i64::from(*index))],
                )
            }
            Loc::Entry {
                class,
                prop,
                owner,
                key,
                ..
            } => {
                let t = collection_table(class, prop, CollectionType::Dictionary);
                (
                    format!("SELECT v, k FROM {t} WHERE owner = ?1 AND key = ?3"),
                    format!("UPDATE {t} SET v = ?2 WHERE owner = ?1 AND key = ?3"),
                    vec![Sql::Integer(*owner), Sql::Text(key.clone())],
                )
            }
        };
        let mut select_args = vec![args[0].clone()];
        if let Some(extra) = args.get(1) {
            select_args.push(Sql::Null);
            select_args.push(extra.clone());
        }
        let current: Option<(Sql, i64)> = self
            .conn
            .query_row(
                &select,
                rusqlite::params_from_iter(select_args.iter()),
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match current {
            None if entry => Ok(()),
            Some((_, EMBEDDED_KIND)) | None => bad("AddInteger: no integer there"),
            Some((Sql::Null, _)) => Ok(()),
            Some((Sql::Integer(v), kind)) if kind == PayloadType::Int.code() => {
                let mut update_args = vec![args[0].clone(), Sql::Integer(v.wrapping_add(amount))];
                if let Some(extra) = args.get(1) {
                    update_args.push(extra.clone());
                }
                self.conn
                    .execute(&update, rusqlite::params_from_iter(update_args.iter()))?;
                Ok(())
            }
            Some(_) if mixed => Ok(()),
            Some(_) => bad("AddInteger on a non-integer value"),
        }
    }

    fn list_size(&self, table: &str, owner: i64) -> Res<i64> {
        Ok(self
            .conn
            .prepare_cached(&format!("SELECT COUNT(*) FROM {table} WHERE owner = ?1"))?
            .query_row([owner], |r| r.get(0))?)
    }

    /// Moves positions `>= from` by `delta`, through negative positions so that the primary key
    /// never sees two rows at one position. Position -1 (a parked element) is left alone.
    fn shift(&self, table: &str, owner: i64, from: i64, delta: i64) -> Res<()> {
        self.conn
            .prepare_cached(&format!(
                "UPDATE {table} SET pos = -(pos + ?3) - 2 WHERE owner = ?1 AND pos >= ?2"
            ))?
            .execute(params![owner, from, delta])?;
        self.conn
            .prepare_cached(&format!(
                "UPDATE {table} SET pos = -pos - 2 WHERE owner = ?1 AND pos <= -2"
            ))?
            .execute(params![owner])?;
        Ok(())
    }

    fn set_pos(&self, table: &str, owner: i64, from: i64, to: i64) -> Res<()> {
        self.conn
            .prepare_cached(&format!(
                "UPDATE {table} SET pos = ?3 WHERE owner = ?1 AND pos = ?2"
            ))?
            .execute(params![owner, from, to])?;
        Ok(())
    }

    fn delete_list_element(
        &self,
        class: &str,
        prop: &str,
        column: &ColumnSpec,
        owner: i64,
        pos: i64,
    ) -> Res<()> {
        let table = collection_table(class, prop, CollectionType::List);
        self.delete_slot(&table, column, owner, "pos", &pos)
    }

    fn delete_entry(
        &self,
        class: &str,
        prop: &str,
        column: &ColumnSpec,
        owner: i64,
        key: &str,
    ) -> Res<()> {
        let table = collection_table(class, prop, CollectionType::Dictionary);
        self.delete_slot(&table, column, owner, "key", &key)
    }

    /// Deletes the list element or dictionary entry of `owner` whose `slot` column ("pos" or
    /// "key") is `at`, with the embedded object it holds.
    fn delete_slot(
        &self,
        table: &str,
        column: &ColumnSpec,
        owner: i64,
        slot: &str,
        at: &dyn rusqlite::ToSql,
    ) -> Res<()> {
        if let Some(target) = embedded_target(self.schemas, column) {
            let child: Option<i64> = self
                .conn
                .query_row(
                    &format!("SELECT v FROM {table} WHERE owner = ?1 AND {slot} = ?2 AND k = ?3"),
                    params![owner, at, EMBEDDED_KIND],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(child) = child {
                self.delete_row(target, child)?;
            }
        }
        self.conn
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE owner = ?1 AND {slot} = ?2"
            ))?
            .execute(params![owner, at])?;
        Ok(())
    }

    fn clear_collection(&self, class: &str, row: i64, prop: &str, column: &ColumnSpec) -> Res<()> {
        self.delete_children(class, row, prop, column)?;
        let table = collection_table(class, prop, column.collection);
        self.conn
            .execute(&format!("DELETE FROM {table} WHERE owner = ?1"), [row])?;
        Ok(())
    }

    /// Deletes the embedded objects property `prop` of row `row` holds.
    fn delete_children(&self, class: &str, row: i64, prop: &str, column: &ColumnSpec) -> Res<()> {
        let Some(target) = embedded_target(self.schemas, column).map(str::to_owned) else {
            return Ok(());
        };
        let children: Vec<i64> = match column.collection {
            CollectionType::Single => {
                let id: Option<i64> = self.conn.query_row(
                    &format!(
                        "SELECT {} FROM {} WHERE rowid = ?1",
                        value_column(prop),
                        object_table(class)
                    ),
                    [row],
                    |r| r.get(0),
                )?;
                id.into_iter().collect()
            }
            kind => {
                let table = collection_table(class, prop, kind);
                let mut stmt = self.conn.prepare(&format!(
                    "SELECT v FROM {table} WHERE owner = ?1 AND k = ?2"
                ))?;
                let ids = stmt
                    .query_map(params![row, EMBEDDED_KIND], |r| r.get(0))?
                    .collect::<Result<Vec<i64>, _>>()?;
                ids
            }
        };
        for child in children {
            self.delete_row(&target, child)?;
        }
        Ok(())
    }

    /// Deletes a row with its collections and embedded children.
    fn delete_row(&self, class: &str, row: i64) -> Res<()> {
        let columns: Vec<(String, ColumnSpec)> = match self.schemas.get(class) {
            Some(s) => s
                .columns
                .iter()
                .map(|(n, c)| (n.clone(), c.clone()))
                .collect(),
            None => return Ok(()),
        };
        for (prop, column) in &columns {
            self.delete_children(class, row, prop, column)?;
            if column.collection != CollectionType::Single {
                let table = collection_table(class, prop, column.collection);
                self.conn
                    .prepare_cached(&format!("DELETE FROM {table} WHERE owner = ?1"))?
                    .execute([row])?;
            }
        }
        self.conn
            .prepare_cached(&format!(
                "DELETE FROM {} WHERE rowid = ?1",
                object_table(class)
            ))?
            .execute([row])?;
        Ok(())
    }
}

fn check_size(actual: i64, prior_size: u32) -> Res<()> {
    if actual == i64::from(prior_size) {
        Ok(())
    } else {
        bad(format!("prior_size {prior_size} but the list has {actual}"))
    }
}
