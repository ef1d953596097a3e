//! A state as one changeset: what STATE sends a client that opens a synced file or resets.
//!
//! [`snapshot`] lists every table (AddTable, then AddColumn for every column), then every
//! top-level object (CreateObject) with each field that differs from a new object's default
//! (Update; ArrayInsert for lists, SetInsert for sets, Update per dictionary key; embedded
//! objects as ObjectValue followed by their own fields, one path step deeper). Applied to an
//! empty state it recreates the state exactly. The output is deterministic (tables, objects,
//! fields and keys in sorted order), because clients resume its download by byte offset.

use super::value::{Element, Field, Key, Object, Val};
use super::{ColumnSpec, State, TableSpec};
use crate::changeset::{
    AddColumn, AddTable, ArrayInsert, Changeset, CollectionType, ColumnCollection, ColumnType,
    FieldPath, GlobalKey, Instruction, Link, PathElement, Payload, PayloadType, PrimaryKey,
    PrimaryKeySpec, SetValue, TableKind, Update,
};
use crate::model::{Decimal128, ObjectId, Timestamp, Uuid};

/// One changeset that recreates `state` from an empty state.
pub fn snapshot(state: &State) -> Changeset {
    let mut out = Changeset::new();
    for (name, schema) in &state.schemas {
        let table = out.intern(name);
        let kind = match &schema.spec {
            TableSpec::Embedded => TableKind::Embedded,
            TableSpec::TopLevel {
                pk_field,
                pk_type,
                pk_nullable,
                asymmetric,
            } => {
                let spec = PrimaryKeySpec {
                    field: out.intern(pk_field),
                    key_type: *pk_type,
                    nullable: *pk_nullable,
                };
                if *asymmetric {
                    TableKind::TopLevelAsymmetric(spec)
                } else {
                    TableKind::TopLevel(spec)
                }
            }
        };
        out.push(Instruction::AddTable(AddTable { table, kind }));
    }
    for (name, schema) in &state.schemas {
        for (column, spec) in &schema.columns {
            let instruction = add_column(&mut out, name, column, spec);
            out.push(instruction);
        }
    }
    for (table_name, objects) in &state.objects {
        for (key, object) in objects {
            let table = out.intern(table_name);
            let pk = primary_key(&mut out, key);
            out.push(Instruction::CreateObject {
                table,
                object: pk.clone(),
            });
            let default = state.new_object(table_name);
            let base = Base { table, object: pk };
            write_fields(&mut out, &base, &[], object, Some(&default));
        }
    }
    out
}

fn add_column(out: &mut Changeset, table: &str, column: &str, spec: &ColumnSpec) -> Instruction {
    let column_type = match (&spec.link_target, spec.value_type) {
        (Some(target), _) => ColumnType::Link {
            target_table: out.intern(target),
        },
        (None, PayloadType::Null) => ColumnType::Mixed,
        (None, t) => ColumnType::Value(t),
    };
    let collection = match spec.collection {
        CollectionType::Single => ColumnCollection::Single,
        CollectionType::List => ColumnCollection::List,
        CollectionType::Set => ColumnCollection::Set,
        CollectionType::Dictionary => ColumnCollection::Dictionary {
            key_type: spec.key_type.unwrap_or(PayloadType::String),
        },
    };
    Instruction::AddColumn(AddColumn {
        table: out.intern(table),
        field: out.intern(column),
        column_type,
        nullable: spec.nullable,
        collection,
    })
}

/// The top-level object every path starts at.
struct Base {
    table: crate::changeset::InternString,
    object: PrimaryKey,
}

fn path(out: &mut Changeset, base: &Base, prefix: &[PathElement], field: &str) -> FieldPath {
    // The first step is the top-level field; the rest are path elements below it.
    let mut steps = prefix.to_vec();
    let name = out.intern(field);
    let (field, rest) = match steps.first() {
        Some(PathElement::Key(top)) => {
            let top = *top;
            steps.remove(0);
            steps.push(PathElement::Key(name));
            (top, steps)
        }
        _ => (name, steps),
    };
    FieldPath {
        table: base.table,
        object: base.object.clone(),
        field,
        path: rest,
    }
}

/// Writes `object`'s fields at `prefix` (empty: the top-level object). Fields equal to
/// `default` (a new object's) are skipped.
fn write_fields(
    out: &mut Changeset,
    base: &Base,
    prefix: &[PathElement],
    object: &Object,
    default: Option<&Object>,
) {
    for (name, field) in &object.fields {
        if default.and_then(|d| d.fields.get(name)) == Some(field) {
            continue;
        }
        let here = path(out, base, prefix, name);
        let mut below = prefix.to_vec();
        below.push(PathElement::Key(out.intern(name)));
        match field {
            Field::Value(v) => {
                let value = payload(out, v);
                out.push(update(here, value));
            }
            Field::Embedded(None) => out.push(update(here, Payload::Null)),
            Field::Embedded(Some(child)) => {
                out.push(update(here, Payload::ObjectValue));
                write_fields(out, base, &below, child, None);
            }
            Field::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    let mut at = here.clone();
                    at.path.push(PathElement::Index(i as u32));
                    let value = element_payload(out, item);
                    out.push(Instruction::ArrayInsert(ArrayInsert {
                        path: at,
                        value,
                        prior_size: i as u32,
                    }));
                    if let Element::Embedded(child) = item {
                        let mut deeper = below.clone();
                        deeper.push(PathElement::Index(i as u32));
                        write_fields(out, base, &deeper, child, None);
                    }
                }
            }
            Field::Set(items) => {
                for item in items {
                    let value = payload(out, item);
                    out.push(Instruction::SetInsert(SetValue {
                        path: here.clone(),
                        value,
                    }));
                }
            }
            Field::Dictionary(entries) => {
                for (key, item) in entries {
                    let mut at = here.clone();
                    let key = out.intern(key);
                    at.path.push(PathElement::Key(key));
                    let value = element_payload(out, item);
                    out.push(update(at, value));
                    if let Element::Embedded(child) = item {
                        let mut deeper = below.clone();
                        deeper.push(PathElement::Key(key));
                        write_fields(out, base, &deeper, child, None);
                    }
                }
            }
        }
    }
}

fn update(path: FieldPath, value: Payload) -> Instruction {
    Instruction::Update(Update {
        path,
        value,
        is_default: false,
        prior_size: 0,
    })
}

fn element_payload(out: &mut Changeset, element: &Element) -> Payload {
    match element {
        Element::Value(v) => payload(out, v),
        Element::Embedded(_) => Payload::ObjectValue,
    }
}

fn primary_key(out: &mut Changeset, key: &Key) -> PrimaryKey {
    match key {
        Key::Null => PrimaryKey::Null,
        Key::Int(v) => PrimaryKey::Int(*v),
        Key::String(s) => PrimaryKey::String(out.intern(s)),
        Key::GlobalKey(hi, lo) => PrimaryKey::GlobalKey(GlobalKey { hi: *hi, lo: *lo }),
        Key::ObjectId(id) => PrimaryKey::ObjectId(ObjectId(*id)),
        Key::Uuid(id) => PrimaryKey::Uuid(Uuid(*id)),
    }
}

fn payload(out: &mut Changeset, value: &Val) -> Payload {
    match value {
        Val::Null => Payload::Null,
        Val::Int(v) => Payload::Int(*v),
        Val::Bool(v) => Payload::Bool(*v),
        Val::String(s) => Payload::String(s.clone()),
        Val::Binary(b) => Payload::Binary(b.clone()),
        // The state only holds timestamps that passed `Timestamp::new` on the way in.
        Val::Timestamp(s, n) => Timestamp::new(*s, *n).map_or(Payload::Null, Payload::Timestamp),
        Val::Float(bits) => Payload::Float(f32::from_bits(*bits)),
        Val::Double(bits) => Payload::Double(f64::from_bits(*bits)),
        Val::Decimal(bits) => Payload::Decimal(Decimal128::from_bits(*bits)),
        Val::ObjectId(id) => Payload::ObjectId(ObjectId(*id)),
        Val::Uuid(id) => Payload::Uuid(Uuid(*id)),
        Val::Link(table, key) => {
            let target_table = out.intern(table);
            let target = primary_key(out, key);
            Payload::Link(Link {
                target_table,
                target,
            })
        }
    }
}
