//! The reference applier: one changeset onto a [`State`], with Realm's rules.

use std::collections::BTreeMap;
use std::fmt;

use super::checks::{create_target, link_key_fits, new_column, new_table, Refusal};
use super::{
    default_field, is_embedded, new_object, ColumnSpec, Element, Field, Key, Object, Schemas,
    State, TableSchema, TableSpec, Val,
};
use crate::changeset::{
    AddColumn, Changeset, CollectionType, FieldPath, Instruction, InternString, PathElement,
    Payload, PayloadType,
};

/// Why a changeset could not be applied. The state is left unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// An instruction addresses something missing or out of range, or breaks a type rule.
    BadChangeset {
        /// Index of the instruction in the changeset.
        instruction: usize,
        /// What was wrong.
        reason: String,
    },
    /// `AddTable` or `AddColumn` disagrees with what exists.
    SchemaMismatch {
        /// Index of the instruction in the changeset.
        instruction: usize,
        /// What differs.
        reason: String,
    },
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::BadChangeset {
                instruction,
                reason,
            } => write!(f, "bad changeset: instruction {instruction}: {reason}"),
            ApplyError::SchemaMismatch {
                instruction,
                reason,
            } => write!(f, "schema mismatch: instruction {instruction}: {reason}"),
        }
    }
}

impl std::error::Error for ApplyError {}

/// Internal error before the instruction index is attached.
enum Fault {
    Bad(String),
    Schema(String),
}

impl From<Refusal> for Fault {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Bad(why) => Fault::Bad(why),
            Refusal::Schema(why) => Fault::Schema(why),
        }
    }
}

type Res<T> = Result<T, Fault>;

fn bad<T>(reason: impl Into<String>) -> Res<T> {
    Err(Fault::Bad(reason.into()))
}

/// A path element with its string resolved.
#[derive(Clone, Debug)]
enum Step {
    Index(u32),
    Key(String),
}

/// What [`State::apply`] needs to put the state back when an instruction fails: the prior
/// version of every object the changeset touched before its first change, and a copy of the
/// whole state taken just before its first schema instruction (schema instructions can touch
/// every object of a table). Rolling back restores the copy first, then the objects changed
/// before it was taken, newest first, so the result is the state before the changeset whatever
/// the position of the failing instruction.
#[derive(Default)]
struct Undo {
    objects: Vec<(String, Key, Option<super::Object>)>,
    seen: std::collections::HashSet<(String, Key)>,
    before_schema_change: Option<Box<State>>,
}

impl Undo {
    /// Records what `instruction` may change, before it runs.
    fn record(&mut self, state: &State, cs: &Changeset, instruction: &Instruction) {
        if self.before_schema_change.is_some() {
            return; // the copy covers everything from here on
        }
        if instruction.is_schema_change() {
            self.before_schema_change = Some(Box::new(state.clone()));
        } else if let Some((table, pk)) = instruction.object() {
            if let (Some(name), Some(key)) = (cs.string(table), Key::resolve(pk, cs)) {
                if self.seen.insert((name.to_owned(), key.clone())) {
                    let prior = state.objects.get(name).and_then(|o| o.get(&key)).cloned();
                    self.objects.push((name.to_owned(), key, prior));
                }
            }
        }
    }

    /// Puts `state` back to what it was before the first recorded instruction.
    fn roll_back(self, state: &mut State) {
        if let Some(copy) = self.before_schema_change {
            *state = *copy;
        }
        for (table, key, prior) in self.objects.into_iter().rev() {
            if let Some(objects) = state.objects.get_mut(&table) {
                match prior {
                    Some(object) => {
                        objects.insert(key, object);
                    }
                    None => {
                        objects.remove(&key);
                    }
                }
            }
        }
    }
}

impl State {
    /// Applies a changeset atomically: all instructions, or on error none of them.
    ///
    /// # Errors
    /// [`ApplyError`] names the first instruction that does not apply (by index) and why; the
    /// state is then exactly what it was before the call, whichever instruction failed.
    pub fn apply(&mut self, changeset: &Changeset) -> Result<(), ApplyError> {
        let mut undo = Undo::default();
        for (index, instruction) in changeset.instructions.iter().enumerate() {
            undo.record(self, changeset, instruction);
            if let Err(fault) = self.apply_one(changeset, instruction) {
                undo.roll_back(self);
                return Err(match fault {
                    Fault::Bad(reason) => ApplyError::BadChangeset {
                        instruction: index,
                        reason,
                    },
                    Fault::Schema(reason) => ApplyError::SchemaMismatch {
                        instruction: index,
                        reason,
                    },
                });
            }
        }
        Ok(())
    }

    fn apply_one(&mut self, cs: &Changeset, instruction: &Instruction) -> Res<()> {
        let name = |s: InternString| -> Res<String> {
            match cs.string(s) {
                Some(v) => Ok(v.to_owned()),
                None => bad(format!("intern string {} is not defined", s.0)),
            }
        };
        match instruction {
            Instruction::AddTable(add) => {
                if let Some((table, spec)) = new_table(&self.schemas, cs, add)? {
                    if matches!(spec, TableSpec::TopLevel { .. }) {
                        self.objects.insert(table.clone(), BTreeMap::new());
                    }
                    self.schemas.insert(
                        table,
                        TableSchema {
                            spec,
                            columns: BTreeMap::new(),
                        },
                    );
                }
                Ok(())
            }
            Instruction::EraseTable { table } => {
                let table = name(*table)?;
                if self.schemas.remove(&table).is_none() {
                    return bad(format!("EraseTable: no table {table}"));
                }
                self.objects.remove(&table);
                Ok(())
            }
            Instruction::AddColumn(add) => self.add_column(cs, add),
            Instruction::EraseColumn { table, field } => {
                let table = name(*table)?;
                let field = name(*field)?;
                let schema = match self.schemas.get_mut(&table) {
                    Some(s) => s,
                    None => return bad(format!("EraseColumn: no table {table}")),
                };
                if schema.columns.remove(&field).is_none() {
                    return bad(format!("EraseColumn: no column {table}.{field}"));
                }
                let State { schemas, objects } = self;
                for_each_object_of(schemas, objects, &table, &mut |o| {
                    o.fields.remove(&field);
                });
                Ok(())
            }
            Instruction::CreateObject { table, object } => {
                let (table, key) = create_target(&self.schemas, cs, *table, object)?;
                if !self.objects[&table].contains_key(&key) {
                    let object = new_object(&self.schemas, &table);
                    if let Some(objects) = self.objects.get_mut(&table) {
                        objects.insert(key, object);
                    }
                }
                Ok(())
            }
            Instruction::EraseObject { table, object } => {
                let table = name(*table)?;
                let key = match Key::resolve(object, cs) {
                    Some(k) => k,
                    None => return bad("EraseObject: undefined string key"),
                };
                match self.objects.get_mut(&table) {
                    Some(objects) => {
                        objects.remove(&key);
                        Ok(())
                    }
                    None => bad(format!("EraseObject: no top-level table {table}")),
                }
            }
            Instruction::Update(update) => {
                let value = &update.value;
                self.at_path(cs, &update.path, &mut |schemas, slot| match slot {
                    Slot::Field { field, column } => set_field(schemas, field, column, value, cs),
                    Slot::Element {
                        list,
                        index,
                        column,
                    } => {
                        check_size(list.len(), update.prior_size)?;
                        let i = index as usize;
                        if i >= list.len() {
                            return bad(format!("Update: index {i} out of range {}", list.len()));
                        }
                        if matches!(value, Payload::ObjectValue)
                            && matches!(list[i], Element::Embedded(_))
                        {
                            return Ok(());
                        }
                        let element = element_from(schemas, column, value, cs)?;
                        if !keeps(&list[i], &element) {
                            list[i] = element;
                        }
                        Ok(())
                    }
                    Slot::Entry { dict, key, column } => {
                        match value {
                            Payload::Erased => {
                                dict.remove(&key);
                            }
                            Payload::ObjectValue
                                if matches!(dict.get(&key), Some(Element::Embedded(_))) => {}
                            _ => {
                                let element = element_from(schemas, column, value, cs)?;
                                if !dict.get(&key).is_some_and(|old| keeps(old, &element)) {
                                    dict.insert(key, element);
                                }
                            }
                        }
                        Ok(())
                    }
                })
            }
            Instruction::AddInteger(add) => {
                let amount = add.value;
                self.at_path(cs, &add.path, &mut |_, slot| {
                    let (target, column) = match slot {
                        Slot::Field {
                            field: Field::Value(v),
                            column,
                        } => (v, column),
                        Slot::Element {
                            list,
                            index,
                            column,
                        } => match list.get_mut(index as usize) {
                            Some(Element::Value(v)) => (v, column),
                            _ => return bad("AddInteger: no integer element there"),
                        },
                        Slot::Entry { dict, key, column } => match dict.get_mut(&key) {
                            Some(Element::Value(v)) => (v, column),
                            Some(_) => return bad("AddInteger: no integer entry there"),
                            // Erased by a concurrent write the add was merged with: a no-op,
                            // like null (docs/ot.md, AddInteger vs Update).
                            None => return Ok(()),
                        },
                        Slot::Field { .. } => return bad("AddInteger on a non-scalar field"),
                    };
                    match target {
                        Val::Int(v) => {
                            *v = v.wrapping_add(amount);
                            Ok(())
                        }
                        // Null, or a non-integer a concurrent write left in a mixed slot: no-op.
                        Val::Null => Ok(()),
                        _ if column.value_type == PayloadType::Null => Ok(()),
                        other => bad(format!("AddInteger on non-integer value {other}")),
                    }
                })
            }
            Instruction::ArrayInsert(insert) => {
                self.at_path(cs, &insert.path, &mut |schemas, slot| match slot {
                    Slot::Element {
                        list,
                        index,
                        column,
                    } => {
                        check_size(list.len(), insert.prior_size)?;
                        if index as usize > list.len() {
                            return bad(format!(
                                "ArrayInsert: index {index} beyond size {}",
                                list.len()
                            ));
                        }
                        let element = element_from(schemas, column, &insert.value, cs)?;
                        list.insert(index as usize, element);
                        Ok(())
                    }
                    _ => bad("ArrayInsert: not a list"),
                })
            }
            Instruction::ArrayMove(mv) => self.at_path(cs, &mv.path, &mut |_, slot| match slot {
                Slot::Element { list, index, .. } => {
                    check_size(list.len(), mv.prior_size)?;
                    let (from, to) = (index as usize, mv.to as usize);
                    if from >= list.len() || to >= list.len() {
                        return bad(format!(
                            "ArrayMove {from} -> {to} out of range {}",
                            list.len()
                        ));
                    }
                    let element = list.remove(from);
                    list.insert(to, element);
                    Ok(())
                }
                _ => bad("ArrayMove: not a list"),
            }),
            Instruction::ArrayErase(erase) => {
                self.at_path(cs, &erase.path, &mut |_, slot| match slot {
                    Slot::Element { list, index, .. } => {
                        check_size(list.len(), erase.prior_size)?;
                        if index as usize >= list.len() {
                            return bad(format!(
                                "ArrayErase: index {index} out of range {}",
                                list.len()
                            ));
                        }
                        list.remove(index as usize);
                        Ok(())
                    }
                    _ => bad("ArrayErase: not a list"),
                })
            }
            Instruction::Clear(clear) => {
                let kind = clear.collection_type;
                self.at_path(cs, &clear.path, &mut |_, slot| match (slot, kind) {
                    (
                        Slot::Field {
                            field: Field::List(l),
                            ..
                        },
                        CollectionType::List,
                    ) => {
                        l.clear();
                        Ok(())
                    }
                    (
                        Slot::Field {
                            field: Field::Set(s),
                            ..
                        },
                        CollectionType::Set,
                    ) => {
                        s.clear();
                        Ok(())
                    }
                    (
                        Slot::Field {
                            field: Field::Dictionary(d),
                            ..
                        },
                        CollectionType::Dictionary,
                    ) => {
                        d.clear();
                        Ok(())
                    }
                    _ => bad(format!("Clear: not a {kind:?}")),
                })
            }
            Instruction::SetInsert(set) | Instruction::SetErase(set) => {
                let insert = matches!(instruction, Instruction::SetInsert(_));
                self.at_path(cs, &set.path, &mut |schemas, slot| match slot {
                    Slot::Field {
                        field: Field::Set(elements),
                        column,
                    } => {
                        let v = scalar_for(schemas, column, &set.value, cs)?;
                        // realm-core's sets find elements by `==`: a ±0.0 finds a stored ∓0.0.
                        let found = match v.other_zero() {
                            Some(twin) => elements
                                .binary_search(&twin)
                                .or_else(|_| elements.binary_search(&v)),
                            None => elements.binary_search(&v),
                        };
                        match (found, insert) {
                            (Err(at), true) => elements.insert(at, v),
                            (Ok(at), false) => {
                                elements.remove(at);
                            }
                            _ => {}
                        }
                        Ok(())
                    }
                    _ => bad("SetInsert/SetErase: not a set"),
                })
            }
        }
    }

    fn add_column(&mut self, cs: &Changeset, add: &AddColumn) -> Res<()> {
        let Some((table, field, column)) = new_column(&self.schemas, cs, add)? else {
            return Ok(());
        };
        let initial = default_field(&self.schemas, &column);
        if let Some(schema) = self.schemas.get_mut(&table) {
            schema.columns.insert(field.clone(), column);
        }
        let State { schemas, objects } = self;
        for_each_object_of(schemas, objects, &table, &mut |o| {
            o.fields.insert(field.clone(), initial.clone());
        });
        Ok(())
    }

    /// Resolves a path and runs `f` on the slot it ends at.
    fn at_path(
        &mut self,
        cs: &Changeset,
        path: &FieldPath,
        f: &mut dyn FnMut(&Schemas, Slot<'_>) -> Res<()>,
    ) -> Res<()> {
        let table = match cs.string(path.table) {
            Some(t) => t.to_owned(),
            None => return bad("undefined table string"),
        };
        let key = match Key::resolve(&path.object, cs) {
            Some(k) => k,
            None => return bad("undefined string key"),
        };
        let field = match cs.string(path.field) {
            Some(t) => t.to_owned(),
            None => return bad("undefined field string"),
        };
        let mut steps = Vec::with_capacity(path.path.len());
        for element in &path.path {
            steps.push(match element {
                PathElement::Index(i) => Step::Index(*i),
                PathElement::Key(k) => match cs.string(*k) {
                    Some(s) => Step::Key(s.to_owned()),
                    None => return bad("undefined path key string"),
                },
            });
        }
        let State { schemas, objects } = self;
        let object = match objects.get_mut(&table).and_then(|o| o.get_mut(&key)) {
            Some(o) => o,
            None => return bad(format!("no object {table}[{key}]")),
        };
        walk(schemas, &table, object, &field, &steps, f)
    }
}

/// Where a path ends.
enum Slot<'a> {
    /// A field of an object (top-level or embedded).
    Field {
        field: &'a mut Field,
        column: &'a ColumnSpec,
    },
    /// A position in a list (possibly one past the end, for inserts).
    Element {
        list: &'a mut Vec<Element>,
        index: u32,
        column: &'a ColumnSpec,
    },
    /// A key of a dictionary (possibly absent).
    Entry {
        dict: &'a mut BTreeMap<String, Element>,
        key: String,
        column: &'a ColumnSpec,
    },
}

fn walk(
    schemas: &Schemas,
    table: &str,
    object: &mut Object,
    field_name: &str,
    steps: &[Step],
    f: &mut dyn FnMut(&Schemas, Slot<'_>) -> Res<()>,
) -> Res<()> {
    let column = match schemas.get(table).and_then(|s| s.columns.get(field_name)) {
        Some(c) => c,
        None => return bad(format!("no column {table}.{field_name}")),
    };
    let field = match object.fields.get_mut(field_name) {
        Some(v) => v,
        None => return bad(format!("object has no field {field_name}")),
    };
    let (first, rest) = match steps.split_first() {
        None => return f(schemas, Slot::Field { field, column }),
        Some(split) => split,
    };
    let target = column.link_target.as_deref().unwrap_or("");
    match (field, first) {
        (Field::List(list), Step::Index(i)) => {
            if rest.is_empty() {
                return f(
                    schemas,
                    Slot::Element {
                        list,
                        index: *i,
                        column,
                    },
                );
            }
            match list.get_mut(*i as usize) {
                Some(Element::Embedded(inner)) => descend(schemas, target, inner, rest, f),
                _ => bad(format!("{field_name}[{i}] is not an embedded object")),
            }
        }
        (Field::Dictionary(dict), Step::Key(k)) => {
            if rest.is_empty() {
                return f(
                    schemas,
                    Slot::Entry {
                        dict,
                        key: k.clone(),
                        column,
                    },
                );
            }
            match dict.get_mut(k) {
                Some(Element::Embedded(inner)) => descend(schemas, target, inner, rest, f),
                _ => bad(format!("{field_name}[{k:?}] is not an embedded object")),
            }
        }
        (Field::Embedded(Some(inner)), Step::Key(_)) => descend(schemas, target, inner, steps, f),
        _ => bad(format!("path does not fit field {field_name}")),
    }
}

/// Continues a path inside an embedded object: the next step names its field.
fn descend(
    schemas: &Schemas,
    table: &str,
    object: &mut Object,
    steps: &[Step],
    f: &mut dyn FnMut(&Schemas, Slot<'_>) -> Res<()>,
) -> Res<()> {
    match steps.split_first() {
        Some((Step::Key(field), rest)) => walk(schemas, table, object, field, rest, f),
        _ => bad("expected a field name inside an embedded object"),
    }
}

fn check_size(actual: usize, prior_size: u32) -> Res<()> {
    if actual == prior_size as usize {
        Ok(())
    } else {
        bad(format!("prior_size {prior_size} but the list has {actual}"))
    }
}

/// Checks a plain value against a column and converts it.
fn scalar_for(
    schemas: &Schemas,
    column: &ColumnSpec,
    payload: &Payload,
    cs: &Changeset,
) -> Res<Val> {
    check_scalar(schemas, column, payload, cs).map_err(Fault::Bad)
}

/// Checks a plain value against a column and converts it; the error says why it does not fit.
/// Shared with the SQLite store so both appliers accept exactly the same values.
///
/// A link, in a link column or a mixed one, to a class of `schemas` must name a top-level class
/// (the column's target, for a link column) and a key of that class's primary key type, or the
/// null key when that key is nullable: realm-core's `InstructionApplier` refuses an embedded
/// target and a key of another type as a bad changeset, and a link Tandem stored anyway could
/// never resolve and would make its object unreadable. A link to a class `schemas` does not
/// have is taken and stays unresolved: a link column keeps its target after `EraseTable` of
/// it (and a concurrent write can still link there), and snapshots of such a state write
/// those links after erasing the target again (`state::snapshot`). New links to a missing
/// class are refused before they reach an applier, in local writes and uploads
/// ([`super::checks::realm_core_refusals`]).
pub(crate) fn check_scalar(
    schemas: &Schemas,
    column: &ColumnSpec,
    payload: &Payload,
    cs: &Changeset,
) -> Result<Val, String> {
    let value = match Val::from_payload(payload, cs) {
        Some(v) => v,
        None => return Err(format!("{:?} is not a plain value", payload.payload_type())),
    };
    let fits = match (&value, column.value_type) {
        (Val::Null, _) => column.nullable || column.value_type == PayloadType::Null,
        (Val::Link(t, key), PayloadType::Link) => {
            if column.link_target.as_deref() != Some(t.as_str()) {
                false
            } else {
                link_key_fits(schemas, t, key)?;
                true
            }
        }
        (Val::Link(t, key), PayloadType::Null) => {
            link_key_fits(schemas, t, key)?;
            true
        }
        (_, PayloadType::Null) => true,
        (v, t) => v.payload_type() == t,
    };
    if fits {
        Ok(value)
    } else {
        Err(format!("value {value} does not fit a column of {column}"))
    }
}

pub(crate) fn embedded_target<'a>(schemas: &Schemas, column: &'a ColumnSpec) -> Option<&'a str> {
    column
        .link_target
        .as_deref()
        .filter(|t| is_embedded(schemas, t))
}

/// A list element or dictionary value from a payload.
fn element_from(
    schemas: &Schemas,
    column: &ColumnSpec,
    payload: &Payload,
    cs: &Changeset,
) -> Res<Element> {
    match (embedded_target(schemas, column), payload) {
        (Some(table), Payload::ObjectValue) => Ok(Element::Embedded(new_object(schemas, table))),
        // A dictionary of embedded objects holds null values (realm-core's link dictionaries
        // are nullable, and its applier inserts the null); a list of them does not.
        (Some(_), Payload::Null) if column.nullable => Ok(Element::Value(Val::Null)),
        (Some(_), _) => bad("an embedded collection takes ObjectValue"),
        (None, _) => Ok(Element::Value(scalar_for(schemas, column, payload, cs)?)),
    }
}

fn set_field(
    schemas: &Schemas,
    field: &mut Field,
    column: &ColumnSpec,
    value: &Payload,
    cs: &Changeset,
) -> Res<()> {
    if column.collection != CollectionType::Single {
        return bad("Update on a whole collection field");
    }
    match (embedded_target(schemas, column), value) {
        (Some(table), Payload::ObjectValue) => {
            if !matches!(field, Field::Embedded(Some(_))) {
                *field = Field::Embedded(Some(new_object(schemas, table)));
            }
            Ok(())
        }
        (Some(_), Payload::Null) => {
            *field = Field::Embedded(None);
            Ok(())
        }
        (Some(_), _) => bad("an embedded object field takes ObjectValue or null"),
        (None, _) => {
            let new = scalar_for(schemas, column, value, cs)?;
            if !matches!(field, Field::Value(old) if old.realm_keeps(&new)) {
                *field = Field::Value(new);
            }
            Ok(())
        }
    }
}

/// Whether an Update of a list element or dictionary value keeps the stored element
/// ([`Val::realm_keeps`]: realm-core's `Lst::set` and `Dictionary::insert` skip equal values).
fn keeps(old: &Element, new: &Element) -> bool {
    matches!((old, new), (Element::Value(old), Element::Value(new)) if old.realm_keeps(new))
}

/// Runs `f` on every object of `table`, top-level or embedded anywhere.
fn for_each_object_of(
    schemas: &Schemas,
    objects: &mut BTreeMap<String, BTreeMap<Key, Object>>,
    table: &str,
    f: &mut dyn FnMut(&mut Object),
) {
    for (owner_table, owned) in objects.iter_mut() {
        for object in owned.values_mut() {
            visit(schemas, owner_table, object, table, f);
        }
    }
}

fn visit(
    schemas: &Schemas,
    object_table: &str,
    object: &mut Object,
    wanted: &str,
    f: &mut dyn FnMut(&mut Object),
) {
    // Children first: `f` may change this object's field set.
    if let Some(schema) = schemas.get(object_table) {
        for (name, column) in &schema.columns {
            let Some(target) = embedded_target(schemas, column) else {
                continue;
            };
            match object.fields.get_mut(name) {
                Some(Field::Embedded(Some(inner))) => visit(schemas, target, inner, wanted, f),
                Some(Field::List(list)) => {
                    for element in list {
                        if let Element::Embedded(inner) = element {
                            visit(schemas, target, inner, wanted, f);
                        }
                    }
                }
                Some(Field::Dictionary(dict)) => {
                    for element in dict.values_mut() {
                        if let Element::Embedded(inner) = element {
                            visit(schemas, target, inner, wanted, f);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if object_table == wanted {
        f(object);
    }
}
