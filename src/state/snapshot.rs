//! A whole [`State`] as one changeset: the bootstrap a new client downloads instead of the
//! full history.
//!
//! [`snapshot`] writes every table, column, object, field value, collection element and
//! embedded object of a state as instructions that, applied to an empty [`State`] with
//! [`State::apply`] (or to an empty SQLite store), recreate exactly that state. The order is:
//!
//! 1. `AddTable` for every table (by name), so that every link target exists before any
//!    column refers to it;
//! 2. `AddColumn` for every column of every table (by table, then column name), then
//!    `EraseTable` of the temporary link targets (below);
//! 3. per top-level object (by table, then primary key): `CreateObject`, then the fields that
//!    differ from what a new object starts with (by name), depth first through embedded
//!    objects: `Update` for values, embedded objects (`ObjectValue`) and dictionary entries,
//!    `ArrayInsert` for list elements in order, `SetInsert` for set elements.
//!
//! Links are primary-key references, so link targets need not exist, nor be created first.
//! Counters are plain integers and are written with `Update`, never `AddInteger`.
//!
//! Everything is walked through `BTreeMap`s and strings are interned in the order of first
//! use, so the same state always gives the same instructions and the same encoded bytes;
//! clients resume downloading a snapshot by byte offset, which depends on that.
//!
//! One shape of state has no exact snapshot: after `EraseTable` of an embedded table, objects
//! of other tables may still hold embedded objects of it (the applier leaves them in place)
//! although no schema describes them any more. A link column whose target table was erased
//! is otherwise handled: the snapshot declares the target as a temporary empty top-level
//! table for its `AddColumn` and erases it again before the objects, whose links to it then
//! name a missing class and are taken as they are (an existing temporary table's `int` key
//! would refuse a link with a key of another type).

use std::collections::BTreeSet;

use super::{default_field, ColumnSpec, Element, Field, Key, Object, State, TableSpec, Val};
use crate::changeset::{
    AddColumn, AddTable, ArrayInsert, Changeset, CollectionType, ColumnCollection, ColumnType,
    Encoder, FieldPath, Instruction, InternString, Link, Path, PathElement, Payload, PayloadType,
    PrimaryKey, PrimaryKeySpec, SetValue, TableKind, Update,
};
use crate::model::{Decimal128, ObjectId, Timestamp, Uuid};

/// One changeset that recreates `state` when applied to an empty [`State`].
///
/// The result is deterministic (equal states give byte-identical encodings) and its `meta` is
/// the default. See the module documentation of `state::snapshot` for the instruction order.
///
/// # Panics
/// If the state holds a timestamp whose nanoseconds are out of range or disagree in sign with
/// its seconds. [`State::apply`] never stores such a value (it only takes timestamps from
/// payloads), so only a hand-built state can.
pub fn snapshot(state: &State) -> Changeset {
    let mut writer = Writer {
        state,
        cs: Changeset::new(),
        whole: false,
        given_only: false,
    };
    let missing = writer.write_schema();
    writer.write_erasures(missing);
    for (name, objects) in &state.objects {
        for (key, object) in objects {
            writer.write_object(name, key, object);
        }
    }
    writer.cs
}

/// The encoded [`snapshot`] of a state whose objects are not in memory: `schemas` is its
/// schema, and `objects` passes every top-level object to the function it is given, by table
/// name and then by key (the order of [`State::objects`]), so that the result is the bytes of
/// [`snapshot`] of the whole state. Only one object at a time need be in memory (the server's
/// state in SQLite tables, `crate::server::state`). An error from `objects` is returned as is.
#[cfg(feature = "server")]
pub(crate) fn snapshot_streamed<E>(
    schemas: &super::Schemas,
    objects: impl FnOnce(&mut dyn FnMut(&str, &Key, &Object)) -> Result<(), E>,
) -> Result<Vec<u8>, E> {
    let state = State {
        schemas: schemas.clone(),
        objects: Default::default(),
    };
    // Encoded as it is written: the instructions of a large state are never held decoded.
    let mut writer = Writer {
        state: &state,
        cs: Encoder::new(),
        whole: false,
        given_only: false,
    };
    let missing = writer.write_schema();
    writer.write_erasures(missing);
    objects(&mut |table, key, object| writer.write_object(table, key, object))?;
    Ok(writer.cs.finish())
}

/// Changesets that make a replica's copies of some objects equal to the given ones, whatever
/// it held before: flexible sync sends them for objects that enter a client's view
/// (`crate::server`). Unlike [`snapshot`], every field is written, defaults included, and
/// every collection is emptied with `Clear` before its elements are inserted, so a replica
/// that already holds an older copy (an object it created itself, or one that stays in its
/// view across a subscription change) ends with exactly this one. `erased` objects get
/// `EraseObject`.
///
/// With `schema`, the first changeset starts with every table and column of `schemas` (as
/// [`snapshot`] declares them). A new changeset is started after every `per_changeset`
/// objects, so no one changeset grows with the view. Always at least one changeset (possibly
/// empty).
#[cfg(feature = "server")]
pub(crate) fn whole_objects<E>(
    schemas: &super::Schemas,
    schema: bool,
    per_changeset: usize,
    objects: impl FnOnce(&mut dyn FnMut(&str, &Key, &Object)) -> Result<(), E>,
    erased: &[(String, Key)],
) -> Result<Vec<Changeset>, E> {
    streamed(schemas, true, schema, per_changeset, objects, erased)
}

/// What [`snapshot_streamed`] and [`whole_objects`] share: the schema first if `schema`, then
/// the objects `objects` passes (`whole`: see `Writer::whole`) and the `erased` ones, a new
/// changeset after every `per_changeset` of them; the temporary link-target tables are erased
/// right after the schema.
#[cfg(feature = "server")]
fn streamed<E>(
    schemas: &super::Schemas,
    whole: bool,
    schema: bool,
    per_changeset: usize,
    objects: impl FnOnce(&mut dyn FnMut(&str, &Key, &Object)) -> Result<(), E>,
    erased: &[(String, Key)],
) -> Result<Vec<Changeset>, E> {
    let state = State {
        schemas: schemas.clone(),
        objects: Default::default(),
    };
    let mut writer = Writer {
        state: &state,
        cs: Changeset::new(),
        whole,
        given_only: false,
    };
    if schema {
        let missing = writer.write_schema();
        writer.write_erasures(missing);
    }
    let mut done = Vec::new();
    let mut in_current = 0;
    let per_changeset = per_changeset.max(1);
    // Starts a new changeset when the current one holds `per_changeset` objects. Each one
    // done gives up the room its growth left over (a bootstrap keeps thousands of them for a
    // while), and the next starts with the room the last one needed: objects of one class
    // take about as many instructions.
    let mut make_room = |writer: &mut Writer<'_>, done: &mut Vec<Changeset>| {
        if in_current == per_changeset {
            let mut full = std::mem::take(&mut writer.cs);
            full.instructions.shrink_to_fit();
            writer
                .cs
                .instructions
                .reserve_exact(full.instructions.len());
            done.push(full);
            in_current = 0;
        }
        in_current += 1;
    };
    objects(&mut |table, key, object| {
        make_room(&mut writer, &mut done);
        writer.write_object(table, key, object);
    })?;
    for (table, key) in erased {
        make_room(&mut writer, &mut done);
        let table = writer.cs.intern(table);
        let object = writer.primary_key(key);
        writer.cs.push(Instruction::EraseObject { table, object });
    }
    writer.cs.instructions.shrink_to_fit();
    done.push(writer.cs);
    Ok(done)
}

/// The changeset of writes to top-level objects made outside any device (the PostgreSQL mirror
/// tables, `crate::server::mirror`): per write, in order, `CreateObject` if `create`, then
/// exactly the fields the object holds, each written whole (collections cleared first,
/// embedded objects with every field), or `EraseObject` when the object is `None`.
#[cfg(feature = "postgres")]
pub(crate) fn given_fields(
    schemas: &super::Schemas,
    writes: &[(&str, &Key, Option<&Object>, bool)],
) -> Changeset {
    let state = State {
        schemas: schemas.clone(),
        objects: Default::default(),
    };
    let mut writer = Writer {
        state: &state,
        cs: Changeset::new(),
        whole: true,
        given_only: true,
    };
    for (table, key, object, create) in writes {
        let t = writer.cs.intern(table);
        let pk = writer.primary_key(key);
        match object {
            None => writer.cs.push(Instruction::EraseObject {
                table: t,
                object: pk,
            }),
            Some(object) => {
                if *create {
                    writer.cs.push(Instruction::CreateObject {
                        table: t,
                        object: pk.clone(),
                    });
                }
                writer.object(table, t, &pk, &Base::TopLevel, object);
            }
        }
    }
    writer.cs
}

/// Appends to `cs` the instructions that fill the empty list at `at` with `elements`: one
/// `ArrayInsert` per element in order, and for an embedded element the instructions that write
/// its fields (as [`snapshot`] writes them). `column` is the list's column in `state`'s schema.
/// Client reset recovery uses it to copy a list verbatim (`crate::store`).
pub(crate) fn write_list(
    state: &State,
    cs: &mut Changeset,
    column: &ColumnSpec,
    at: FieldPath,
    elements: &[Element],
) {
    let mut writer = Writer {
        state,
        cs: std::mem::take(cs),
        whole: false,
        given_only: false,
    };
    writer.field(column, at, &Field::List(elements.to_vec()));
    *cs = writer.cs;
}

impl State {
    /// One changeset that recreates this state when applied to an empty [`State`]; the same as
    /// [`snapshot`].
    pub fn snapshot_changeset(&self) -> Changeset {
        snapshot(self)
    }
}

/// Where the fields of an object are addressed: a top-level object's fields are named by the
/// path's `field`, an embedded object's by a key step after the steps that reach it.
#[derive(Clone)]
enum Base {
    TopLevel,
    Embedded { field: InternString, steps: Path },
}

/// Where a [`Writer`] puts its instructions: a [`Changeset`], or an [`Encoder`] that keeps only
/// their bytes (the server's STATE snapshot).
trait Sink {
    fn intern(&mut self, s: &str) -> InternString;
    fn push(&mut self, instruction: Instruction);
}

impl Sink for Changeset {
    fn intern(&mut self, s: &str) -> InternString {
        Changeset::intern(self, s)
    }
    fn push(&mut self, instruction: Instruction) {
        Changeset::push(self, instruction)
    }
}

impl Sink for Encoder {
    fn intern(&mut self, s: &str) -> InternString {
        Encoder::intern(self, s)
    }
    fn push(&mut self, instruction: Instruction) {
        Encoder::push(self, instruction)
    }
}

struct Writer<'a, S: Sink = Changeset> {
    state: &'a State,
    cs: S,
    /// Write every field (defaults too) and `Clear` every collection before filling it
    /// (`whole_objects`), instead of only what differs from a new object.
    whole: bool,
    /// With `whole`: at the top level, write only the fields the object has (no defaults for
    /// the others) (`given_fields`).
    given_only: bool,
}

impl<'a, S: Sink> Writer<'a, S> {
    /// Writes every table and column; returns the link targets no schema declares, declared
    /// as temporary tables to be erased again before the objects ([`Writer::write_erasures`]).
    fn write_schema(&mut self) -> BTreeSet<&'a str> {
        let state = self.state;
        // Link targets no schema declares (their table was erased): declared for the
        // duration of the snapshot only.
        let missing: BTreeSet<&str> = state
            .schemas
            .values()
            .flat_map(|s| s.columns.values())
            .filter_map(|c| c.link_target.as_deref())
            .filter(|t| !state.schemas.contains_key(*t))
            .collect();
        let mut tables: Vec<(&str, Option<&TableSpec>)> = state
            .schemas
            .iter()
            .map(|(name, schema)| (name.as_str(), Some(&schema.spec)))
            .chain(missing.iter().map(|t| (*t, None)))
            .collect();
        tables.sort_by(|a, b| a.0.cmp(b.0));
        for (name, spec) in tables {
            let table = self.cs.intern(name);
            let kind = match spec {
                Some(TableSpec::Embedded) => TableKind::Embedded,
                Some(TableSpec::TopLevel {
                    pk_field,
                    pk_type,
                    pk_nullable,
                    asymmetric,
                }) => {
                    let pk = PrimaryKeySpec {
                        field: self.cs.intern(pk_field),
                        key_type: *pk_type,
                        nullable: *pk_nullable,
                    };
                    if *asymmetric {
                        TableKind::TopLevelAsymmetric(pk)
                    } else {
                        TableKind::TopLevel(pk)
                    }
                }
                None => TableKind::TopLevel(PrimaryKeySpec {
                    field: self.cs.intern("_id"),
                    key_type: PayloadType::Int,
                    nullable: false,
                }),
            };
            self.cs
                .push(Instruction::AddTable(AddTable { table, kind }));
        }
        for (name, schema) in &state.schemas {
            for (field, column) in &schema.columns {
                let add = self.add_column(name, field, column);
                self.cs.push(Instruction::AddColumn(add));
            }
        }
        missing
    }

    /// Writes one top-level object of table `name`.
    fn write_object(&mut self, name: &str, key: &Key, object: &Object) {
        let table = self.cs.intern(name);
        let pk = self.primary_key(key);
        self.cs.push(Instruction::CreateObject {
            table,
            object: pk.clone(),
        });
        self.object(name, table, &pk, &Base::TopLevel, object);
    }

    /// Erases the temporary tables [`Writer::write_schema`] declared.
    fn write_erasures(&mut self, missing: BTreeSet<&str>) {
        for name in missing {
            let table = self.cs.intern(name);
            self.cs.push(Instruction::EraseTable { table });
        }
    }

    fn add_column(&mut self, table: &str, field: &str, column: &ColumnSpec) -> AddColumn {
        let column_type = match (&column.link_target, column.value_type) {
            (Some(target), _) => ColumnType::Link {
                target_table: self.cs.intern(target),
            },
            (None, PayloadType::Null) => ColumnType::Mixed,
            (None, t) => ColumnType::Value(t),
        };
        let collection = match column.collection {
            CollectionType::Single => ColumnCollection::Single,
            CollectionType::List => ColumnCollection::List,
            CollectionType::Set => ColumnCollection::Set,
            CollectionType::Dictionary => ColumnCollection::Dictionary {
                // A dictionary column always has its key type; String is Realm's only one.
                key_type: column.key_type.unwrap_or(PayloadType::String),
            },
        };
        AddColumn {
            table: self.cs.intern(table),
            field: self.cs.intern(field),
            column_type,
            nullable: column.nullable,
            collection,
        }
    }

    /// The fields of an object of `table` (top-level, or embedded at `base`) that differ from
    /// what the applier gives a new object.
    fn object(
        &mut self,
        table: &str,
        top_table: InternString,
        pk: &PrimaryKey,
        base: &Base,
        object: &Object,
    ) {
        let state = self.state;
        let Some(schema) = state.schemas.get(table) else {
            return;
        };
        let defaults: Vec<(String, Field)>;
        let given_only = self.given_only && matches!(base, Base::TopLevel);
        let fields: Box<dyn Iterator<Item = (&String, &Field)>> = if self.whole && !given_only {
            // Every column, with the object's content or the default it starts with.
            defaults = schema
                .columns
                .iter()
                .filter(|(name, _)| !object.fields.contains_key(*name))
                .map(|(name, c)| (name.clone(), default_field(&state.schemas, c)))
                .collect();
            Box::new(
                object
                    .fields
                    .iter()
                    .chain(defaults.iter().map(|(n, f)| (n, f))),
            )
        } else {
            Box::new(object.fields.iter())
        };
        for (name, content) in fields {
            let Some(column) = schema.columns.get(name) else {
                continue;
            };
            if !self.whole && *content == default_field(&state.schemas, column) {
                continue;
            }
            let name = self.cs.intern(name);
            let (field, steps) = match base {
                Base::TopLevel => (name, Path::new()),
                Base::Embedded { field, steps } => {
                    let mut steps = steps.clone();
                    steps.push(PathElement::Key(name));
                    (*field, steps)
                }
            };
            let at = FieldPath {
                table: top_table,
                object: pk.clone(),
                field,
                path: steps,
            };
            self.field(column, at, content);
        }
    }

    /// Writes `content` into the field at `at`, which holds its default (or, in `whole`
    /// mode, anything: collections are cleared first).
    fn field(&mut self, column: &ColumnSpec, at: FieldPath, content: &Field) {
        let target = column.link_target.as_deref().unwrap_or("");
        if self.whole && column.collection != CollectionType::Single {
            self.cs.push(Instruction::Clear(crate::changeset::Clear {
                path: at.clone(),
                collection_type: column.collection,
            }));
        }
        match content {
            Field::Value(v) => {
                // A required float or double starts at +0.0, which keeps its bits when -0.0 is
                // written over it (Val::realm_keeps): write another value first, as a realm-core
                // replica that holds -0.0 there must have.
                if !column.nullable && Val::default_for(column.value_type).realm_keeps(v) {
                    let one = match v {
                        Val::Float(_) => Payload::Float(1.0),
                        _ => Payload::Double(1.0),
                    };
                    self.update(at.clone(), one);
                }
                let value = self.payload(v);
                self.update(at, value);
            }
            Field::Embedded(None) => self.update(at, Payload::Null),
            Field::Embedded(Some(inner)) => {
                self.update(at.clone(), Payload::ObjectValue);
                self.embedded(target, at, inner);
            }
            Field::List(elements) => {
                for (i, element) in elements.iter().enumerate() {
                    // `ArrayInsert` indices and sizes are u32 on the wire, as are lists.
                    let index = i as u32;
                    let mut path = at.clone();
                    path.path.push(PathElement::Index(index));
                    let value = self.element(element);
                    self.cs.push(Instruction::ArrayInsert(ArrayInsert {
                        path: path.clone(),
                        value,
                        prior_size: index,
                    }));
                    if let Element::Embedded(inner) = element {
                        self.embedded(target, path, inner);
                    }
                }
            }
            Field::Set(elements) => {
                for v in elements {
                    let value = self.payload(v);
                    self.cs.push(Instruction::SetInsert(SetValue {
                        path: at.clone(),
                        value,
                    }));
                }
            }
            Field::Dictionary(entries) => {
                for (key, element) in entries {
                    let key = self.cs.intern(key);
                    let mut path = at.clone();
                    path.path.push(PathElement::Key(key));
                    let value = self.element(element);
                    self.update(path.clone(), value);
                    if let Element::Embedded(inner) = element {
                        self.embedded(target, path, inner);
                    }
                }
            }
        }
    }

    /// The fields of the embedded object of `table` that the path `at` reaches.
    fn embedded(&mut self, table: &str, at: FieldPath, inner: &Object) {
        let base = Base::Embedded {
            field: at.field,
            steps: at.path,
        };
        self.object(table, at.table, &at.object, &base, inner);
    }

    /// A plain write (never an element update: those paths end in an index).
    fn update(&mut self, path: FieldPath, value: Payload) {
        self.cs.push(Instruction::Update(Update {
            path,
            value,
            is_default: false,
            prior_size: 0,
        }));
    }

    fn element(&mut self, element: &Element) -> Payload {
        match element {
            Element::Value(v) => self.payload(v),
            Element::Embedded(_) => Payload::ObjectValue,
        }
    }

    fn primary_key(&mut self, key: &Key) -> PrimaryKey {
        match key {
            Key::Null => PrimaryKey::Null,
            Key::Int(v) => PrimaryKey::Int(*v),
            Key::String(s) => PrimaryKey::String(self.cs.intern(s)),
            Key::GlobalKey(hi, lo) => {
                PrimaryKey::GlobalKey(crate::changeset::GlobalKey { hi: *hi, lo: *lo })
            }
            Key::ObjectId(id) => PrimaryKey::ObjectId(ObjectId(*id)),
            Key::Uuid(id) => PrimaryKey::Uuid(Uuid(*id)),
        }
    }

    fn payload(&mut self, value: &Val) -> Payload {
        match value {
            Val::Null => Payload::Null,
            Val::Int(v) => Payload::Int(*v),
            Val::Bool(v) => Payload::Bool(*v),
            Val::String(s) => Payload::String(s.as_str().into()),
            Val::Binary(b) => Payload::Binary(b.clone()),
            // `State::apply` stores only timestamps that passed `Timestamp::new`; a hand-built
            // state with an invalid one gets null rather than a panic in the server.
            Val::Timestamp(s, n) => {
                Timestamp::new(*s, *n).map_or(Payload::Null, Payload::Timestamp)
            }
            Val::Float(bits) => Payload::Float(f32::from_bits(*bits)),
            Val::Double(bits) => Payload::Double(f64::from_bits(*bits)),
            Val::Decimal(bits) => Payload::Decimal(Decimal128::from_bits(*bits)),
            Val::ObjectId(id) => Payload::ObjectId(ObjectId(*id)),
            Val::Uuid(id) => Payload::Uuid(Uuid(*id)),
            Val::Link(table, key) => Payload::Link(Link {
                target_table: self.cs.intern(table),
                target: self.primary_key(key),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::TableSchema;

    fn column(value_type: PayloadType, nullable: bool, collection: CollectionType) -> ColumnSpec {
        ColumnSpec {
            value_type,
            link_target: None,
            nullable,
            collection,
            key_type: (collection == CollectionType::Dictionary).then_some(PayloadType::String),
        }
    }

    fn link(target: &str, nullable: bool, collection: CollectionType) -> ColumnSpec {
        ColumnSpec {
            link_target: Some(target.to_owned()),
            ..column(PayloadType::Link, nullable, collection)
        }
    }

    fn top_level(pk_type: PayloadType, pk_nullable: bool, asymmetric: bool) -> TableSpec {
        TableSpec::TopLevel {
            pk_field: "_id".into(),
            pk_type,
            pk_nullable,
            asymmetric,
        }
    }

    fn table(spec: TableSpec, columns: Vec<(&str, ColumnSpec)>) -> TableSchema {
        TableSchema {
            spec,
            columns: columns
                .into_iter()
                .map(|(n, c)| (n.to_owned(), c))
                .collect(),
        }
    }

    /// Snapshot, encode, decode, apply to an empty state: must give `state` back, and the
    /// snapshot of the copy must be the same bytes.
    fn round_trip(state: &State) -> Changeset {
        let cs = snapshot(state);
        let bytes = cs.encode();
        let decoded = Changeset::decode(&bytes).expect("the snapshot decodes");
        assert_eq!(decoded, cs, "decode(encode(snapshot)) differs");
        let mut copy = State::new();
        copy.apply(&decoded)
            .unwrap_or_else(|e| panic!("the snapshot does not apply: {e}\n{cs}"));
        assert_eq!(&copy, state, "\n--- snapshot\n{cs}");
        assert_eq!(snapshot(&copy).encode(), bytes, "not deterministic");
        cs
    }

    #[test]
    fn empty_state_gives_empty_changeset() {
        let cs = snapshot(&State::new());
        assert!(cs.is_empty());
        assert!(cs.encode().is_empty());
        assert_eq!(cs, Changeset::new());
    }

    fn every_kind_of_column() -> State {
        use CollectionType::{Dictionary, List, Set, Single};
        use PayloadType as T;
        let mut state = State::new();
        let schemas = &mut state.schemas;
        schemas.insert(
            "P".into(),
            table(
                top_level(T::String, false, false),
                vec![
                    ("i", column(T::Int, false, Single)),
                    ("counter", column(T::Int, false, Single)),
                    ("ni", column(T::Int, true, Single)),
                    ("nnull", column(T::Int, true, Single)),
                    ("s", column(T::String, false, Single)),
                    ("b", column(T::Bool, false, Single)),
                    ("bin", column(T::Binary, true, Single)),
                    ("ts", column(T::Timestamp, false, Single)),
                    ("f", column(T::Float, false, Single)),
                    ("db", column(T::Double, true, Single)),
                    ("dec", column(T::Decimal, false, Single)),
                    ("oid", column(T::ObjectId, false, Single)),
                    ("uid", column(T::Uuid, true, Single)),
                    ("m", column(T::Null, true, Single)),
                    ("m_link", column(T::Null, true, Single)),
                    ("lk", link("Q", true, Single)),
                    ("lk_missing", link("Q", true, Single)),
                    ("l", column(T::Int, false, List)),
                    ("ln", column(T::String, true, List)),
                    ("lm", column(T::Null, true, List)),
                    ("ll", link("Q", false, List)),
                    ("st", column(T::Int, false, Set)),
                    ("sm", column(T::Null, true, Set)),
                    ("d", column(T::Int, true, Dictionary)),
                    ("dm", column(T::Null, true, Dictionary)),
                    ("de", link("E", false, Dictionary)),
                    ("e", link("E", true, Single)),
                    ("e_none", link("E", true, Single)),
                    ("el", link("E", false, List)),
                    ("empty_list", column(T::Int, false, List)),
                ],
            ),
        );
        schemas.insert(
            "Q".into(),
            table(
                top_level(T::ObjectId, true, false),
                vec![("back", link("P", false, List))],
            ),
        );
        schemas.insert(
            "E".into(),
            table(
                TableSpec::Embedded,
                vec![
                    ("x", column(T::Int, false, Single)),
                    ("y", column(T::Int, false, List)),
                    ("tags", column(T::String, false, Set)),
                    ("inner", link("E2", true, Single)),
                    ("inners", link("E2", false, List)),
                ],
            ),
        );
        schemas.insert(
            "E2".into(),
            table(
                TableSpec::Embedded,
                vec![("z", column(T::String, true, Single))],
            ),
        );
        schemas.insert(
            "Z".into(),
            table(
                top_level(T::Uuid, false, true),
                vec![("v", column(T::Int, false, Single))],
            ),
        );
        schemas.insert("G".into(), table(top_level(T::Int, true, false), vec![]));
        for name in ["P", "Q", "Z", "G"] {
            state.objects.insert(name.into(), BTreeMap::new());
        }

        let q_key = Key::ObjectId([7; 12]);
        let link_q = Val::Link("Q".into(), q_key.clone());
        let mut e2 = state.new_object("E2");
        e2.fields
            .insert("z".into(), Field::Value(Val::String("deep".into())));
        let mut e = state.new_object("E");
        e.fields.insert("x".into(), Field::Value(Val::Int(-3)));
        e.fields.insert(
            "y".into(),
            Field::List(vec![
                Element::Value(Val::Int(2)),
                Element::Value(Val::Int(1)),
            ]),
        );
        e.fields.insert(
            "tags".into(),
            Field::Set(vec![Val::String("a".into()), Val::String("b".into())]),
        );
        e.fields
            .insert("inner".into(), Field::Embedded(Some(e2.clone())));
        e.fields.insert(
            "inners".into(),
            Field::List(vec![
                Element::Embedded(state.new_object("E2")),
                Element::Embedded(e2),
            ]),
        );
        let blank_e = state.new_object("E");

        let mut p = state.new_object("P");
        let mut set = |name: &str, field: Field| {
            assert!(p.fields.insert(name.into(), field).is_some(), "{name}");
        };
        set("i", Field::Value(Val::Int(42)));
        set("counter", Field::Value(Val::Int(-7)));
        set("ni", Field::Value(Val::Int(0)));
        set("s", Field::Value(Val::String("hello".into())));
        set("b", Field::Value(Val::Bool(true)));
        set("bin", Field::Value(Val::Binary(vec![0, 1, 255])));
        set("ts", Field::Value(Val::Timestamp(-5, -250)));
        set("f", Field::Value(Val::Float(f32::NAN.to_bits() | 1)));
        set("db", Field::Value(Val::Double((-0.0f64).to_bits())));
        let dec = Decimal128::from_parts(12345, -2, true).unwrap();
        set("dec", Field::Value(Val::Decimal(dec.to_bits())));
        set("oid", Field::Value(Val::ObjectId([9; 12])));
        set("uid", Field::Value(Val::Uuid([3; 16])));
        set("m", Field::Value(Val::Double(2.5f64.to_bits())));
        // A link to the null key needs a class whose key is nullable.
        set("m_link", Field::Value(Val::Link("G".into(), Key::Null)));
        set("lk", Field::Value(link_q.clone()));
        set(
            "lk_missing",
            Field::Value(Val::Link("Q".into(), Key::ObjectId([1; 12]))),
        );
        set(
            "l",
            Field::List(vec![
                Element::Value(Val::Int(3)),
                Element::Value(Val::Int(1)),
                Element::Value(Val::Int(3)),
            ]),
        );
        set(
            "ln",
            Field::List(vec![
                Element::Value(Val::Null),
                Element::Value(Val::String("x".into())),
            ]),
        );
        set(
            "lm",
            Field::List(vec![
                Element::Value(Val::Bool(false)),
                Element::Value(Val::Null),
                Element::Value(link_q.clone()),
            ]),
        );
        set(
            "ll",
            Field::List(vec![
                Element::Value(link_q.clone()),
                Element::Value(link_q.clone()),
            ]),
        );
        set(
            "st",
            Field::Set(vec![Val::Int(-1), Val::Int(0), Val::Int(9)]),
        );
        set(
            "sm",
            Field::Set(vec![Val::Null, Val::Int(1), Val::String("1".into())]),
        );
        set(
            "d",
            Field::Dictionary(BTreeMap::from([
                ("a".into(), Element::Value(Val::Int(1))),
                ("b".into(), Element::Value(Val::Null)),
            ])),
        );
        set(
            "dm",
            Field::Dictionary(BTreeMap::from([(
                "k".into(),
                Element::Value(Val::String("v".into())),
            )])),
        );
        set(
            "de",
            Field::Dictionary(BTreeMap::from([
                ("one".into(), Element::Embedded(e.clone())),
                ("two".into(), Element::Embedded(blank_e.clone())),
            ])),
        );
        set("e", Field::Embedded(Some(e.clone())));
        set(
            "el",
            Field::List(vec![Element::Embedded(blank_e), Element::Embedded(e)]),
        );
        let objects = state.objects.get_mut("P").unwrap();
        objects.insert(Key::String("p1".into()), p);
        let blank_p = state.new_object("P");
        let objects = state.objects.get_mut("P").unwrap();
        objects.insert(Key::String("p0".into()), blank_p);

        let mut q = state.new_object("Q");
        q.fields.insert(
            "back".into(),
            Field::List(vec![Element::Value(Val::Link(
                "P".into(),
                Key::String("p1".into()),
            ))]),
        );
        state.objects.get_mut("Q").unwrap().insert(q_key, q);
        let q_null = state.new_object("Q");
        state
            .objects
            .get_mut("Q")
            .unwrap()
            .insert(Key::Null, q_null);
        let mut z = state.new_object("Z");
        z.fields.insert("v".into(), Field::Value(Val::Int(1)));
        state
            .objects
            .get_mut("Z")
            .unwrap()
            .insert(Key::Uuid([5; 16]), z);
        let g = state.new_object("G");
        state.objects.get_mut("G").unwrap().insert(Key::Null, g);
        state
    }

    #[test]
    fn every_kind_of_column_round_trips() {
        let state = every_kind_of_column();
        let cs = round_trip(&state);
        // Schema first, and default values are not written.
        let first_data = cs
            .instructions
            .iter()
            .position(|i| !i.is_schema_change())
            .unwrap();
        assert!(cs.instructions[first_data..]
            .iter()
            .all(|i| !i.is_schema_change()));
        assert!(!cs
            .instructions
            .iter()
            .any(|i| matches!(i, Instruction::AddInteger(_))));
        let mut data = cs.clone();
        data.instructions.drain(..first_data);
        let text = data.to_string();
        assert!(!text.contains("empty_list"), "{text}");
        assert!(!text.contains("nnull"), "{text}");
        assert!(!text.contains("e_none"), "{text}");
    }

    #[test]
    fn schema_only_and_asymmetric_tables_round_trip() {
        let mut state = every_kind_of_column();
        for objects in state.objects.values_mut() {
            objects.clear();
        }
        round_trip(&state);
    }

    #[test]
    fn link_to_an_erased_table_round_trips() {
        let mut state = every_kind_of_column();
        let mut erase = Changeset::new();
        let q = erase.intern("Q");
        erase.push(Instruction::EraseTable { table: q });
        state.apply(&erase).unwrap();
        assert!(!state.schemas.contains_key("Q"));
        let cs = round_trip(&state);
        // Declared for the link column's AddColumn, erased before the first object.
        let first_object = cs
            .instructions
            .iter()
            .position(|i| matches!(i, Instruction::CreateObject { .. }))
            .unwrap();
        assert!(matches!(
            cs.instructions[first_object - 1],
            Instruction::EraseTable { .. }
        ));
        assert!(cs.instructions[..first_object]
            .iter()
            .any(|i| matches!(i, Instruction::AddTable(a) if cs.string(a.table) == Some("Q"))));
    }
}
