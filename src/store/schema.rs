//! From the app's [`Schema`] to the instructions that bring a file's schema up to it.

use super::StoreError;
use crate::changeset::{
    AddColumn, AddTable, Changeset, CollectionType, ColumnCollection, ColumnType, Instruction,
    PayloadType, PrimaryKeySpec, TableKind,
};
use crate::model::{CollectionKind, Property, PropertyType, Schema};
use crate::state::{ColumnSpec, Schemas, TableSpec};

/// The payload type a property type is stored and synced as (mixed is `Null`).
pub(crate) fn payload_type(t: PropertyType) -> PayloadType {
    match t {
        PropertyType::Int => PayloadType::Int,
        PropertyType::Bool => PayloadType::Bool,
        PropertyType::String => PayloadType::String,
        PropertyType::Binary => PayloadType::Binary,
        PropertyType::Timestamp => PayloadType::Timestamp,
        PropertyType::Float => PayloadType::Float,
        PropertyType::Double => PayloadType::Double,
        PropertyType::Decimal => PayloadType::Decimal,
        PropertyType::ObjectId => PayloadType::ObjectId,
        PropertyType::Uuid => PayloadType::Uuid,
        PropertyType::Link => PayloadType::Link,
        PropertyType::Mixed => PayloadType::Null,
    }
}

fn column_spec(p: &Property) -> ColumnSpec {
    let (collection, key_type) = match p.collection {
        CollectionKind::Single => (CollectionType::Single, None),
        CollectionKind::List => (CollectionType::List, None),
        CollectionKind::Set => (CollectionType::Set, None),
        CollectionKind::Dictionary => (CollectionType::Dictionary, Some(PayloadType::String)),
    };
    ColumnSpec {
        value_type: payload_type(p.property_type),
        link_target: p.link_target.clone(),
        nullable: p.nullable,
        collection,
        key_type,
    }
}

/// The AddTable / AddColumn instructions that add what `schema` has and the file lacks.
/// Refuses changes to what both have.
pub(crate) fn migration(existing: &Schemas, schema: &Schema) -> Result<Changeset, StoreError> {
    let mut cs = Changeset::new();
    for class in schema.classes() {
        let spec = match (&class.primary_key, class.primary_key_property()) {
            (Some(name), Some(pk)) => TableSpec::TopLevel {
                pk_field: name.clone(),
                pk_type: payload_type(pk.property_type),
                pk_nullable: pk.nullable,
                asymmetric: false,
            },
            _ => TableSpec::Embedded,
        };
        match existing.get(&class.name) {
            Some(t) if t.spec == spec => {}
            Some(t) => {
                return Err(StoreError::DestructiveSchemaChange {
                    class: class.name.clone(),
                    property: class.primary_key.clone(),
                    reason: format!(
                        "the file declares it as {}, the schema as {}",
                        crate::state::checks::describe_table(&t.spec),
                        crate::state::checks::describe_table(&spec)
                    ),
                })
            }
            None => push_add_table(&mut cs, &class.name, &spec),
        }
    }
    for class in schema.classes() {
        for p in &class.properties {
            if class.primary_key.as_deref() == Some(p.name.as_str()) {
                continue;
            }
            let spec = column_spec(p);
            match existing
                .get(&class.name)
                .and_then(|t| t.columns.get(&p.name))
            {
                Some(c) if *c == spec => continue,
                Some(c) => {
                    return Err(StoreError::DestructiveSchemaChange {
                        class: class.name.clone(),
                        property: Some(p.name.clone()),
                        reason: format!("the file stores {c}, the schema asks for {spec}"),
                    })
                }
                None => {}
            }
            push_add_column(&mut cs, &class.name, &p.name, &spec);
        }
    }
    Ok(cs)
}

/// The AddTable / AddColumn instructions that bring `server` (a schema as a server snapshot
/// declares it) up to `local` (the file's schema): every table and column `local` has and
/// `server` lacks, in `local`'s order (tables first). What both have is left alone, even where
/// they differ (the reset's recovery rules judge those).
///
/// A client reset records them as its first local changeset, as realm-core's reset carries the
/// local schema over to the fresh state: the server may have lost the schema with the data (a
/// restore from a copy older than an app upgrade, a lost file), while the local history that
/// created it was rebuilt or trimmed long ago.
pub(crate) fn catch_up(server: &Schemas, local: &Schemas) -> Changeset {
    let mut cs = Changeset::new();
    for (name, table) in local {
        if server.contains_key(name) {
            continue;
        }
        push_add_table(&mut cs, name, &table.spec);
    }
    for (name, table) in local {
        for (column, spec) in &table.columns {
            if server
                .get(name)
                .is_some_and(|t| t.columns.contains_key(column))
            {
                continue;
            }
            push_add_column(&mut cs, name, column, spec);
        }
    }
    cs
}

/// Appends the AddColumn instruction that declares column `field` of `table` as `spec`.
fn push_add_column(cs: &mut Changeset, table: &str, field: &str, spec: &ColumnSpec) {
    let column_type = match (spec.value_type, &spec.link_target) {
        (PayloadType::Null, _) => ColumnType::Mixed,
        (PayloadType::Link, Some(target)) => ColumnType::Link {
            target_table: cs.intern(target),
        },
        (t, _) => ColumnType::Value(t),
    };
    let collection = match spec.collection {
        CollectionType::Single => ColumnCollection::Single,
        CollectionType::List => ColumnCollection::List,
        CollectionType::Set => ColumnCollection::Set,
        CollectionType::Dictionary => ColumnCollection::Dictionary {
            key_type: spec.key_type.unwrap_or(PayloadType::String),
        },
    };
    let table = cs.intern(table);
    let field = cs.intern(field);
    cs.push(Instruction::AddColumn(AddColumn {
        table,
        field,
        column_type,
        nullable: spec.nullable,
        collection,
    }));
}

/// Appends the AddTable instruction that declares table `table` as `spec`.
fn push_add_table(cs: &mut Changeset, table: &str, spec: &TableSpec) {
    let table = cs.intern(table);
    let kind = match spec {
        TableSpec::Embedded => TableKind::Embedded,
        TableSpec::TopLevel {
            pk_field,
            pk_type,
            pk_nullable,
            ..
        } => TableKind::TopLevel(PrimaryKeySpec {
            field: cs.intern(pk_field),
            key_type: *pk_type,
            nullable: *pk_nullable,
        }),
    };
    cs.push(Instruction::AddTable(AddTable { table, kind }));
}
