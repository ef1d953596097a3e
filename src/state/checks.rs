//! The checks both appliers (the in-memory reference and the SQLite store) make before they
//! change anything, kept in one place so that they refuse exactly the same instructions.

use super::{ColumnSpec, Key, Schemas, TableSpec};
use crate::changeset::{
    AddColumn, AddTable, Changeset, CollectionType, ColumnCollection, ColumnType, InternString,
    PayloadType, PrimaryKey, TableKind,
};

/// Why an instruction is refused.
pub(crate) enum Refusal {
    /// It addresses something missing, or breaks a type rule (`BadChangeset`).
    Bad(String),
    /// It disagrees with the existing schema (`SchemaMismatch`).
    Schema(String),
}

fn string(cs: &Changeset, s: InternString) -> Result<String, Refusal> {
    cs.string(s)
        .map(str::to_owned)
        .ok_or_else(|| Refusal::Bad(format!("intern string {} is not defined", s.0)))
}

/// What an AddTable asks for. `Ok(None)` when an identical table exists.
pub(crate) fn new_table(
    schemas: &Schemas,
    cs: &Changeset,
    add: &AddTable,
) -> Result<Option<(String, TableSpec)>, Refusal> {
    let name = string(cs, add.table)?;
    let spec = match &add.kind {
        TableKind::Embedded => TableSpec::Embedded,
        TableKind::TopLevel(pk) | TableKind::TopLevelAsymmetric(pk) => TableSpec::TopLevel {
            pk_field: string(cs, pk.field)?,
            pk_type: pk.key_type,
            pk_nullable: pk.nullable,
            asymmetric: matches!(add.kind, TableKind::TopLevelAsymmetric(_)),
        },
    };
    match schemas.get(&name) {
        Some(existing) if existing.spec == spec => Ok(None),
        Some(existing) => Err(Refusal::Schema(format!(
            "table {name} exists as {:?}, not {spec:?}",
            existing.spec
        ))),
        None => Ok(Some((name, spec))),
    }
}

/// What an AddColumn asks for: (table, column name, declaration). `Ok(None)` when an identical
/// column exists.
pub(crate) fn new_column(
    schemas: &Schemas,
    cs: &Changeset,
    add: &AddColumn,
) -> Result<Option<(String, String, ColumnSpec)>, Refusal> {
    let table = string(cs, add.table)?;
    let field = string(cs, add.field)?;
    let (value_type, link_target) = match add.column_type {
        ColumnType::Mixed => (PayloadType::Null, None),
        ColumnType::Value(t) => (t, None),
        ColumnType::Link { target_table } => (PayloadType::Link, Some(string(cs, target_table)?)),
    };
    let (collection, key_type) = match add.collection {
        ColumnCollection::Single => (CollectionType::Single, None),
        ColumnCollection::List => (CollectionType::List, None),
        ColumnCollection::Set => (CollectionType::Set, None),
        ColumnCollection::Dictionary { key_type } => (CollectionType::Dictionary, Some(key_type)),
    };
    let column = ColumnSpec {
        value_type,
        link_target,
        nullable: add.nullable,
        collection,
        key_type,
    };
    if let Some(target) = &column.link_target {
        if !schemas.contains_key(target) {
            return Err(Refusal::Bad(format!(
                "AddColumn {table}.{field}: no target table {target}"
            )));
        }
    }
    let schema = schemas
        .get(&table)
        .ok_or_else(|| Refusal::Bad(format!("AddColumn: no table {table}")))?;
    if let TableSpec::TopLevel { pk_field, .. } = &schema.spec {
        if *pk_field == field {
            return Err(Refusal::Schema(format!(
                "AddColumn {table}.{field}: that is the primary key"
            )));
        }
    }
    match schema.columns.get(&field) {
        Some(existing) if *existing == column => Ok(None),
        Some(existing) => Err(Refusal::Schema(format!(
            "column {table}.{field} exists as {existing:?}, not {column:?}"
        ))),
        None => Ok(Some((table, field, column))),
    }
}

/// The table and key a CreateObject names, checked against the table's primary key.
pub(crate) fn create_target(
    schemas: &Schemas,
    cs: &Changeset,
    table: InternString,
    object: &PrimaryKey,
) -> Result<(String, Key), Refusal> {
    let table = string(cs, table)?;
    let key = Key::resolve(object, cs)
        .ok_or_else(|| Refusal::Bad("CreateObject: undefined string key".into()))?;
    let (pk_type, pk_nullable) = match schemas.get(&table).map(|s| &s.spec) {
        Some(TableSpec::TopLevel {
            pk_type,
            pk_nullable,
            ..
        }) => (*pk_type, *pk_nullable),
        Some(TableSpec::Embedded) => {
            return Err(Refusal::Bad(format!(
                "CreateObject in embedded table {table}"
            )))
        }
        None => return Err(Refusal::Bad(format!("CreateObject: no table {table}"))),
    };
    let fits = match key {
        Key::Null => pk_nullable,
        ref k => k.payload_type() == pk_type,
    };
    if fits {
        Ok((table, key))
    } else {
        Err(Refusal::Bad(format!(
            "CreateObject: key {key} does not fit the {pk_type:?} primary key of {table}"
        )))
    }
}
