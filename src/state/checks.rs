//! The checks both appliers (the in-memory reference and the SQLite store) make before they
//! change anything, kept in one place so that they refuse exactly the same instructions.

use super::{ColumnSpec, Key, Schemas, TableSpec};
use crate::changeset::{
    AddColumn, AddTable, Changeset, CollectionType, ColumnCollection, ColumnType, FieldPath,
    Instruction, InternString, PathElement, Payload, PayloadType, PrimaryKey, TableKind,
};
use crate::model::check_dictionary_key;

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
            "table {name} exists as {}, not {}",
            describe_table(&existing.spec),
            describe_table(&spec)
        ))),
        None => match schemas.keys().find(|t| t.eq_ignore_ascii_case(&name)) {
            Some(other) => Err(Refusal::Schema(format!(
                "table {name} differs only in ASCII case from the table {other}, which Tandem \
                 cannot keep apart (SQLite's names ignore it)"
            ))),
            None => Ok(Some((name, spec))),
        },
    }
}

/// A table's kind as a schema says it: `embedded`, `top-level keyed by _id (objectId)`, with
/// `nullable`/`asymmetric` where they apply.
pub(crate) fn describe_table(spec: &TableSpec) -> String {
    match spec {
        TableSpec::Embedded => "embedded".into(),
        TableSpec::TopLevel {
            pk_field,
            pk_type,
            pk_nullable,
            asymmetric,
        } => format!(
            "{}top-level keyed by {pk_field} ({}{})",
            if *asymmetric { "asymmetric " } else { "" },
            super::type_name(*pk_type),
            if *pk_nullable { "?" } else { "" }
        ),
    }
}

/// The first schema instruction of `cs` that disagrees with `schemas` (an AddTable of an
/// existing table of another kind, an AddColumn of an existing column of another type): its
/// index and what differs. What is merely missing or malformed is not reported here.
pub(crate) fn schema_conflict(schemas: &Schemas, cs: &Changeset) -> Option<(usize, String)> {
    cs.instructions
        .iter()
        .enumerate()
        .find_map(|(i, instruction)| {
            let refused = match instruction {
                Instruction::AddTable(add) => new_table(schemas, cs, add).err(),
                Instruction::AddColumn(add) => new_column(schemas, cs, add).err(),
                _ => None,
            };
            match refused {
                Some(Refusal::Schema(why)) => Some((i, why)),
                _ => None,
            }
        })
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
            "column {table}.{field} exists as {existing}, not {column}"
        ))),
        None => {
            let pk = match &schema.spec {
                TableSpec::TopLevel { pk_field, .. } => Some(pk_field),
                TableSpec::Embedded => None,
            };
            if let Some(other) = schema
                .columns
                .keys()
                .chain(pk)
                .find(|c| c.eq_ignore_ascii_case(&field))
            {
                return Err(Refusal::Schema(format!(
                    "column {table}.{field} differs only in ASCII case from the column \
                     {table}.{other}, which Tandem cannot keep apart (SQLite's names ignore it)"
                )));
            }
            if let Some((name, other_table, other)) =
                collection_table_clash(schemas, &table, &field, column.collection)
            {
                return Err(Refusal::Schema(format!(
                    "column {table}.{field} would be stored in SQLite's table '{name}' as the \
                     column {other_table}.{other} is (class and column names are joined with \
                     ':', and SQLite ignores ASCII case)"
                )));
            }
            Ok(Some((table, field, column)))
        }
    }
}

/// For a new collection column `table.field` of kind `kind`: the SQLite table the store would
/// give it (`"l:"`, `"s:"` or `"d:"`, then `<table>:<field>`, `store::layout`) and the existing
/// column of the same kind already stored there, if any. With a `:` inside a name two columns
/// can spell one table name, ASCII case ignored as SQLite ignores it.
fn collection_table_clash<'a>(
    schemas: &'a Schemas,
    table: &str,
    field: &str,
    kind: CollectionType,
) -> Option<(String, &'a str, &'a str)> {
    use crate::store::layout::collection_table_name;
    // Two ways to spell one name need a `:` inside it, so in both pairs.
    if kind == CollectionType::Single || (!table.contains(':') && !field.contains(':')) {
        return None;
    }
    let name = collection_table_name(table, field, kind);
    let (t, c) = schemas
        .iter()
        .flat_map(|(t, schema)| schema.columns.iter().map(move |(c, spec)| (t, c, spec)))
        .find(|(t, c, spec)| {
            spec.collection == kind
                && (t.as_str(), c.as_str()) != (table, field)
                && collection_table_name(t, c, kind).eq_ignore_ascii_case(&name)
        })
        .map(|(t, c, _)| (t.as_str(), c.as_str()))?;
    Some((name, t, c))
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

/// Checks what the appliers take but realm-core would refuse (and abort on, when it arrives in
/// a download), so that none of it is ever written locally or accepted from an upload: every
/// dictionary key that `instructions` write, erase or pass through, against realm-core's rule
/// ([`crate::model::check_dictionary_key`]), and every link they write (`Update`,
/// `ArrayInsert`, `SetInsert`), which must name a top-level class of the schema (realm-core's
/// `InstructionApplier`: "Link with invalid target table"; the appliers take a link to a
/// missing class, which a state keeps after `EraseTable` of a link target) and a key of its
/// primary key's type (the appliers refuse that too, one changeset at a time). Used by the
/// store's local writes and by the server before it integrates an upload, so that such an
/// upload integrates none of its changesets.
///
/// A key step of a path is a dictionary key when it follows a dictionary property (the key
/// itself, even when the path goes on into an embedded object stored there) or lies anywhere
/// below a mixed property (realm-core's nested dictionaries); a key step inside an embedded
/// object names its field and is not checked. `schemas` is the schema before the
/// instructions; their own AddTable / AddColumn / EraseTable / EraseColumn are followed. A path
/// through a table or column the schema does not have is left to the applier, which refuses
/// it.
///
/// Ok holds the schema after the instructions when they change it (to check a following
/// changeset against); Err holds the index of the first offending instruction and the reason,
/// naming the table, field and key.
pub(crate) fn realm_core_refusals(
    schemas: &Schemas,
    cs: &Changeset,
    instructions: &[Instruction],
) -> Result<Option<Schemas>, (usize, String)> {
    // The schema as the instructions change it, copied only when one does.
    let mut changed: Option<Schemas> = None;
    for (index, instruction) in instructions.iter().enumerate() {
        let current = changed.as_ref().unwrap_or(schemas);
        match instruction {
            Instruction::AddTable(add) => {
                if let Ok(Some((name, spec))) = new_table(current, cs, add) {
                    let next = changed.get_or_insert_with(|| schemas.clone());
                    next.insert(
                        name,
                        super::TableSchema {
                            spec,
                            columns: Default::default(),
                        },
                    );
                }
            }
            Instruction::AddColumn(add) => {
                if let Ok(Some((table, field, column))) = new_column(current, cs, add) {
                    let next = changed.get_or_insert_with(|| schemas.clone());
                    if let Some(schema) = next.get_mut(&table) {
                        schema.columns.insert(field, column);
                    }
                }
            }
            Instruction::EraseTable { table } => {
                if let Some(name) = cs.string(*table) {
                    changed.get_or_insert_with(|| schemas.clone()).remove(name);
                }
            }
            Instruction::EraseColumn { table, field } => {
                if let (Some(table), Some(field)) = (cs.string(*table), cs.string(*field)) {
                    if let Some(schema) = changed
                        .get_or_insert_with(|| schemas.clone())
                        .get_mut(table)
                    {
                        schema.columns.remove(field);
                    }
                }
            }
            other => {
                if let Some(path) = other.field_path() {
                    path_keys(current, cs, path).map_err(|reason| (index, reason))?;
                }
                let written = match other {
                    Instruction::Update(u) => Some(&u.value),
                    Instruction::ArrayInsert(a) => Some(&a.value),
                    Instruction::SetInsert(s) => Some(&s.value),
                    _ => None,
                };
                if let Some(Payload::Link(link)) = written {
                    if let (Some(target), Some(key)) =
                        (cs.string(link.target_table), Key::resolve(&link.target, cs))
                    {
                        if !current.contains_key(target) {
                            let why = format!("a link to {target}, which is not a class");
                            return Err((index, why));
                        }
                        link_key_fits(current, target, &key).map_err(|why| (index, why))?;
                    }
                }
            }
        }
    }
    Ok(changed)
}

/// The dictionary keys of one path (see [`realm_core_refusals`]).
fn path_keys(schemas: &Schemas, cs: &Changeset, path: &FieldPath) -> Result<(), String> {
    let (Some(mut table), Some(mut field)) = (cs.string(path.table), cs.string(path.field)) else {
        return Ok(());
    };
    let mut steps = path.path.iter();
    loop {
        let Some(column) = schemas.get(table).and_then(|s| s.columns.get(field)) else {
            return Ok(());
        };
        let check = |step: &PathElement| match step {
            PathElement::Key(k) => match cs.string(*k) {
                Some(key) => check_dictionary_key(key).map_err(|e| format!("{table}.{field}: {e}")),
                None => Ok(()),
            },
            PathElement::Index(_) => Ok(()),
        };
        if column.value_type == PayloadType::Null {
            // Below a mixed property every key step is a key of a nested dictionary.
            return steps.try_for_each(check);
        }
        match column.collection {
            CollectionType::Dictionary | CollectionType::List => match steps.next() {
                Some(step) => check(step)?,
                None => return Ok(()),
            },
            CollectionType::Single | CollectionType::Set => {}
        }
        // What follows names a field of an embedded object stored here, if any.
        let Some(target) = column.link_target.as_deref() else {
            return Ok(());
        };
        match steps.next() {
            Some(PathElement::Key(k)) => match cs.string(*k) {
                Some(name) => {
                    table = target;
                    field = name;
                }
                None => return Ok(()),
            },
            _ => return Ok(()),
        }
    }
}

/// Whether `key` can name an object of `target` when that class exists (see
/// `state::apply::check_scalar`): a top-level class whose primary key has the key's type, or
/// is nullable for the null key. A class `schemas` does not have passes. The error says why
/// not.
pub(crate) fn link_key_fits(schemas: &Schemas, target: &str, key: &Key) -> Result<(), String> {
    match schemas.get(target).map(|s| &s.spec) {
        Some(TableSpec::TopLevel {
            pk_type,
            pk_nullable,
            ..
        }) => {
            let fits = match key {
                Key::Null => *pk_nullable,
                k => k.payload_type() == *pk_type,
            };
            if fits {
                Ok(())
            } else if *key == Key::Null {
                Err(format!(
                    "a link to the null key of {target}, whose {pk_type:?} primary key is required"
                ))
            } else {
                Err(format!(
                    "a link key {key} does not fit the {pk_type:?} primary key of {target}"
                ))
            }
        }
        Some(TableSpec::Embedded) => Err(format!("a link to the embedded class {target}")),
        None => Ok(()),
    }
}
