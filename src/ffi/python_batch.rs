//! The row codec: whole transactions and whole query results cross the foreign boundary as one
//! JSON document each, encoded and decoded against the schema. It exists for Python, where
//! uniffi lowers every record and enum field in pure Python (about 56 us per `create` of three
//! values, measured in `bindings/python/bench`), while the standard library's `json` module is
//! written in C. Any binding may use it; the typed Python layer (`tandem.models`) does.
//!
//! The codec adds no operations of its own: each operation of a write batch is decoded into
//! the [`WriteOp`]s it stands for and performed by [`ops::apply`], as every write of the
//! foreign API is (`ffi::ops`), so a batch records exactly the instructions of those
//! operations.
//!
//! # Format (UTF-8 JSON)
//!
//! Values are encoded by the type of the property they are written to or read from (the
//! codec knows the schema, so no value carries a type tag):
//!
//! | property type | JSON |
//! |---|---|
//! | int | integer |
//! | bool | `true` / `false` |
//! | string | string |
//! | binary | string, standard base64 with padding |
//! | timestamp | `[seconds, nanoseconds]` since the Unix epoch; on writes the two may have different signs (Python's floor convention), they are normalized; reads give both with one sign |
//! | float, double | number, or the strings `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | decimal | string `[-]digits[.digits][(e\|E)[+\|-]digits]` on writes; reads give `[-]coefficientEexponent` |
//! | object id | string, 24 hex digits |
//! | uuid | string, 32 hex digits (dashes allowed on writes) |
//! | link | the target's primary key, encoded by the target's key type; the link to the object whose primary key is null is `[null]`; writes also take any key as a one-element array `[key]` |
//! | embedded object | writes: an object `{property: value}`; reads: an array of the class's property values in schema order |
//! | null (nullable properties, absent embedded objects, no link) | `null` |
//! | list, set | array of elements |
//! | dictionary | object, entry to element |
//!
//! A link's `null` is "no link", never the null primary key: realm-core allows one object
//! with a null primary key in a class whose key is nullable, and a link to it is a link like
//! any other (`docs/store.md`, "Layout"), so it has a spelling of its own, `[null]`, both ways.
//!
//! Mixed properties are not supported by the codec (use the untyped API).
//!
//! A **write batch** is an array of operations, performed in order in one store transaction
//! (all or nothing). `key` is a primary key encoded as above; `class` and `prop` are names:
//!
//! - `["create", class, {prop: value, ...}]` (the primary key property is among the values)
//! - `["upsert", class, {prop: value, ...}]`: creates, or writes these properties of the existing
//!   object; a collection given replaces the whole collection
//! - `["rows", class, [prop, ...], [[value, ...], ...]]`: one create per row (the fast path for
//!   many objects with the same properties: the store's `create_rows` when every property is a
//!   plain single value); an error names the row (`row <i>: ...`)
//! - `["upsert_rows", class, [prop, ...], [[value, ...], ...]]`: one upsert per row, the same
//!   way (`upsert_rows`; Kotlin's typed `add` of many objects)
//! - `["set", class, key, prop, value]`, `["erase", class, key]`, `["add", class, key, prop, amount]`
//! - `["list_insert", class, key, prop, index, value]`, `["list_set", class, key, prop, index, value]`,
//!   `["list_move", class, key, prop, from, to]`, `["list_erase", class, key, prop, index]`,
//!   `["list_clear", class, key, prop]`
//! - `["set_insert", class, key, prop, value]`, `["set_erase", class, key, prop, value]`,
//!   `["set_clear", class, key, prop]`
//! - `["dict_set", class, key, prop, entry, value]`, `["dict_erase", class, key, prop, entry]`,
//!   `["dict_clear", class, key, prop]`
//!
//! **Query results** (`RowCodec::query`) are an array of objects, each an array of its
//! property values in the order of the class's `ClassSpec`. `RowCodec::object` gives one such
//! array or `null`.
//!
//! Errors: a malformed document, an unknown class or property, or a value that does not fit
//! its property is `TandemError::InvalidArgument` naming the class and property; nothing of
//! the batch is written.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::Value as Json;

use super::database::Database;
use super::ops::{self, PathStep, WriteOp};
use super::types::{core_key, core_value, schema, ClassSpec, Key, TandemError, Value};
use crate::model::{
    self, CollectionKind, Decimal128, PrimaryKey, Property, PropertyType, Timestamp,
};
use crate::state::{Element, Field, Key as StateKey, Object, Val};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn invalid(message: impl Into<String>) -> TandemError {
    TandemError::InvalidArgument {
        message: message.into(),
    }
}

/// Encodes and decodes write batches and query results as JSON, directed by a schema (see the
/// module documentation for the format). Build it from the same classes the database was
/// opened with.
#[derive(uniffi::Object)]
pub struct RowCodec {
    schema: model::Schema,
}

#[uniffi::export]
impl RowCodec {
    /// A codec for these classes. Errors: `Schema` if they do not form a valid schema.
    #[uniffi::constructor]
    pub fn new(classes: Vec<ClassSpec>) -> Result<Arc<Self>, TandemError> {
        Ok(Arc::new(RowCodec {
            schema: schema(classes)?,
        }))
    }

    /// Performs a write batch (a JSON array of operations, UTF-8) in one transaction. Returns
    /// the new local version, or 0 if nothing changed (local versions start at 1). On an error
    /// nothing is written; an error in an operation names it (`operation 2: ...`, counted from
    /// 0) and keeps its kind, as `Database::write` does.
    ///
    /// The batch is borrowed, not copied, and the version crosses as a plain integer: each
    /// copy, buffer and `Option` costs Python's generated code extra calls on every
    /// transaction (`bindings/python/README.md`, "Benchmark").
    pub fn write(&self, db: Arc<Database>, batch: &[u8]) -> Result<u64, TandemError> {
        let ops: Vec<Json> = serde_json::from_slice(batch)
            .map_err(|e| invalid(format!("malformed write batch: {e}")))?;
        let mut tx = db.inner.begin_write()?;
        let mut decoded = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let in_op = |e: TandemError| e.context(&format!("operation {i}"));
            self.decode(op, &mut decoded).map_err(in_op)?;
            for op in decoded.drain(..) {
                ops::apply(&mut tx, op).map_err(in_op)?;
            }
        }
        Ok(tx.commit()?.unwrap_or(0))
    }

    /// The objects of `class_name` matching `filter` (Realm's query language; `$0`, `$1`... are
    /// `args`), from position `offset`, at most `limit` of them (`None`: all), as a JSON array
    /// of property-value arrays. One read transaction, one crossing.
    pub fn query(
        &self,
        db: Arc<Database>,
        class_name: String,
        filter: String,
        args: Vec<Value>,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<Vec<u8>, TandemError> {
        let class = self.class(&class_name)?;
        let args = args.iter().map(core_value).collect::<Result<Vec<_>, _>>()?;
        let limit = limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let names: Vec<&str> = class.properties.iter().map(|p| p.name.as_str()).collect();
        let rows: Vec<Json> = db
            .inner
            .read()?
            .query_rows(&class_name, &filter, &args, &names, offset, limit)?
            .iter()
            .map(|(_, fields)| {
                Json::Array(
                    class
                        .properties
                        .iter()
                        .zip(fields)
                        .map(|(p, field)| self.cell(p, field))
                        .collect(),
                )
            })
            .collect();
        Ok(serde_json::to_vec(&Json::Array(rows)).expect("JSON values serialize"))
    }

    /// The object of `class_name` whose primary key is `key` (JSON, encoded as above), as a
    /// property-value array, or `null` if there is none.
    pub fn object(
        &self,
        db: Arc<Database>,
        class_name: String,
        key: Vec<u8>,
    ) -> Result<Vec<u8>, TandemError> {
        let class = self.class(&class_name)?;
        let key: Json =
            serde_json::from_slice(&key).map_err(|e| invalid(format!("malformed key: {e}")))?;
        let key = core_key(&self.key(&class_name, &key)?)?;
        let object = db.inner.read()?.object(&class_name, &key)?;
        let row = object.map_or(Json::Null, |o| self.row(class, &o, Some(&key)));
        Ok(serde_json::to_vec(&row).expect("JSON values serialize"))
    }
}

/// A [`RowCodec`] bound to one [`Database`] for [`batch_write`]: the write path of one crossing
/// with plain arguments. A method call costs Python's generated code a handle clone per object
/// argument (two more crossings) plus its argument checks; measured in
/// `bindings/python/bench`, that was a quarter of a one-object transaction.
///
/// The binding lives as long as this object: `batch_write` with the `id` of a dropped one is
/// `TandemError::InvalidArgument`. Ids are never reused within a process.
#[derive(uniffi::Object)]
pub struct BatchWriter {
    id: u64,
}

/// The bound pairs by id. A map lookup under a mutex costs tens of nanoseconds against the
/// tens of microseconds of a commit.
static BATCH_WRITERS: Mutex<BTreeMap<u64, Bound>> = Mutex::new(BTreeMap::new());

/// A codec and the database it writes to.
pub(super) type Bound = (Arc<RowCodec>, Arc<Database>);
static NEXT_BATCH_WRITER: AtomicU64 = AtomicU64::new(1);

#[uniffi::export]
impl BatchWriter {
    /// Binds `codec` to `db`; pass [`BatchWriter::id`] to [`batch_write`].
    #[uniffi::constructor]
    pub fn new(codec: Arc<RowCodec>, db: Arc<Database>) -> Arc<Self> {
        let id = NEXT_BATCH_WRITER.fetch_add(1, Ordering::Relaxed);
        BATCH_WRITERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (codec, db));
        Arc::new(BatchWriter { id })
    }

    /// The id [`batch_write`] takes.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for BatchWriter {
    fn drop(&mut self) {
        BATCH_WRITERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// [`RowCodec::write`] through the [`BatchWriter`] with id `writer`: performs the write batch
/// (UTF-8 JSON, the module's format) in one transaction and returns the new local version, or
/// 0 if nothing changed. Errors: those of `RowCodec::write`, and `InvalidArgument` if no live
/// `BatchWriter` has this id.
#[uniffi::export]
pub fn batch_write(writer: u64, batch: &[u8]) -> Result<u64, TandemError> {
    let (codec, db) = bound(writer)?;
    codec.write(db, batch)
}

/// The codec and database bound to the [`BatchWriter`] with id `writer`. Errors:
/// `InvalidArgument` if no live `BatchWriter` has this id.
pub(super) fn bound(writer: u64) -> Result<Bound, TandemError> {
    BATCH_WRITERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&writer)
        .cloned()
        .ok_or_else(|| {
            invalid(format!(
                "batch writer {writer} is closed (its BatchWriter was released)"
            ))
        })
}

/// How a decoded value is stored: as a plain value, or as an embedded object to create.
enum Decoded<'j> {
    Value(Value),
    Embedded(&'j serde_json::Map<String, Json>),
}

/// A path below a property, as [`WriteOp`]s take it.
type Path = Vec<PathStep>;

fn with_step(path: &[PathStep], step: PathStep) -> Path {
    let mut longer = Vec::with_capacity(path.len() + 1);
    longer.extend_from_slice(path);
    longer.push(step);
    longer
}

/// The object property an operation works on: each method is the [`WriteOp`] of that name
/// there, at `path` below the property.
struct Target<'a> {
    class: &'a str,
    key: &'a Key,
    prop: &'a str,
}

impl Target<'_> {
    fn set(&self, path: Path, value: Value) -> WriteOp {
        WriteOp::Set {
            class_name: self.class.to_string(),
            key: self.key.clone(),
            property: self.prop.to_string(),
            value,
            path,
        }
    }

    fn create_embedded(&self, path: Path) -> WriteOp {
        WriteOp::CreateEmbedded {
            class_name: self.class.to_string(),
            key: self.key.clone(),
            property: self.prop.to_string(),
            path,
        }
    }

    fn list_insert(&self, path: Path, index: u64, value: Value) -> WriteOp {
        WriteOp::ListInsert {
            class_name: self.class.to_string(),
            key: self.key.clone(),
            property: self.prop.to_string(),
            index,
            value,
            path,
        }
    }

    fn list_insert_embedded(&self, path: Path, index: u64) -> WriteOp {
        WriteOp::ListInsertEmbedded {
            class_name: self.class.to_string(),
            key: self.key.clone(),
            property: self.prop.to_string(),
            index,
            path,
        }
    }

    fn set_insert(&self, path: Path, value: Value) -> WriteOp {
        WriteOp::SetInsert {
            class_name: self.class.to_string(),
            key: self.key.clone(),
            property: self.prop.to_string(),
            value,
            path,
        }
    }

    fn dict_set(&self, path: Path, entry: &str, value: Value) -> WriteOp {
        WriteOp::DictSet {
            class_name: self.class.to_string(),
            key: self.key.clone(),
            property: self.prop.to_string(),
            entry: entry.to_string(),
            value,
            path,
        }
    }

    fn dict_erase(&self, path: Path, entry: &str) -> WriteOp {
        WriteOp::DictErase {
            class_name: self.class.to_string(),
            key: self.key.clone(),
            property: self.prop.to_string(),
            entry: entry.to_string(),
            path,
        }
    }

    /// The clear of the collection (of kind `kind`) at `path`.
    fn clear(&self, kind: CollectionKind, path: Path) -> WriteOp {
        let (class_name, key, property) = (
            self.class.to_string(),
            self.key.clone(),
            self.prop.to_string(),
        );
        match kind {
            CollectionKind::List => WriteOp::ListClear {
                class_name,
                key,
                property,
                path,
            },
            CollectionKind::Set => WriteOp::SetClear {
                class_name,
                key,
                property,
                path,
            },
            _ => WriteOp::DictClear {
                class_name,
                key,
                property,
                path,
            },
        }
    }
}

/// The decoder: each JSON operation becomes the [`WriteOp`]s it stands for, performed by
/// `ops::apply` like every other write of the foreign API.
impl RowCodec {
    fn class(&self, name: &str) -> Result<&model::ClassSchema, TandemError> {
        self.schema
            .class(name)
            .ok_or_else(|| invalid(format!("no class {name} in the schema")))
    }

    fn property<'s>(
        &self,
        class: &'s model::ClassSchema,
        name: &str,
    ) -> Result<&'s Property, TandemError> {
        class
            .property(name)
            .ok_or_else(|| invalid(format!("{} has no property {name}", class.name)))
    }

    fn key(&self, class_name: &str, json: &Json) -> Result<Key, TandemError> {
        let class = self.class(class_name)?;
        let pk = class
            .primary_key_property()
            .ok_or_else(|| invalid(format!("{class_name} is embedded: it has no primary key")))?;
        let what = format!("the primary key of {class_name}");
        Ok(match scalar(pk.property_type, json, &what)? {
            Value::Null => Key::Null,
            Value::Int { value } => Key::Int { value },
            Value::String { value } => Key::String { value },
            Value::ObjectId { bytes } => Key::ObjectId { bytes },
            Value::Uuid { bytes } => Key::Uuid { bytes },
            _ => return Err(invalid(format!("{what} has a type keys cannot have"))),
        })
    }

    /// One element (or single value) of `prop`.
    fn element<'j>(
        &self,
        class: &model::ClassSchema,
        prop: &Property,
        json: &'j Json,
    ) -> Result<Decoded<'j>, TandemError> {
        let what = || format!("{}.{}", class.name, prop.name);
        if json.is_null() {
            if prop.nullable || prop.property_type == PropertyType::Link {
                return Ok(Decoded::Value(Value::Null));
            }
            return Err(invalid(format!("{} is not nullable", what())));
        }
        match prop.property_type {
            PropertyType::Link => {
                let target = prop.link_target.as_deref().unwrap_or_default();
                if self.class(target)?.embedded {
                    return match json {
                        Json::Object(map) => Ok(Decoded::Embedded(map)),
                        _ => Err(invalid(format!(
                            "{} takes an embedded {target} as an object",
                            what()
                        ))),
                    };
                }
                // `[key]`: the link's key wrapped, so that `[null]` is the link to the object
                // whose key is null where `null` is no link.
                let key = match json {
                    Json::Array(items) if items.len() == 1 => &items[0],
                    Json::Array(_) => {
                        return Err(invalid(format!(
                            "{} takes a link as its target's key or [key], not {json}",
                            what()
                        )))
                    }
                    _ => json,
                };
                Ok(Decoded::Value(Value::Link {
                    class_name: target.to_string(),
                    key: self.key(target, key)?,
                }))
            }
            PropertyType::Mixed => Err(invalid(format!(
                "{} is mixed: the row codec does not take mixed values; use the untyped API",
                what()
            ))),
            t => Ok(Decoded::Value(scalar(t, json, &what())?)),
        }
    }

    fn value(
        &self,
        class: &model::ClassSchema,
        prop: &Property,
        json: &Json,
    ) -> Result<Value, TandemError> {
        match self.element(class, prop, json)? {
            Decoded::Value(v) => Ok(v),
            Decoded::Embedded(_) => Err(invalid(format!(
                "{}.{}: this operation does not take embedded objects",
                class.name, prop.name
            ))),
        }
    }

    /// Appends the [`WriteOp`]s that the batch operation `op` stands for to `out`.
    fn decode(&self, op: &Json, out: &mut Vec<WriteOp>) -> Result<(), TandemError> {
        let parts = op
            .as_array()
            .filter(|a| a.len() >= 2)
            .ok_or_else(|| invalid(format!("an operation is [name, class, ...], not {op}")))?;
        let name = parts[0].as_str().unwrap_or_default();
        let class_name = str_arg(&parts[1], "class")?;
        let class = self.class(class_name)?;
        let arg = |i: usize| {
            parts
                .get(i)
                .ok_or_else(|| invalid(format!("{name} takes more arguments than {op}")))
        };
        match name {
            "create" | "upsert" => {
                let values = arg(2)?
                    .as_object()
                    .ok_or_else(|| invalid(format!("{name} takes an object of values")))?;
                let pairs: Vec<(&str, &Json)> =
                    values.iter().map(|(k, v)| (k.as_str(), v)).collect();
                return self.put(out, class, &pairs, name == "upsert");
            }
            "rows" | "upsert_rows" => {
                let upsert = name == "upsert_rows";
                let names = arg(2)?
                    .as_array()
                    .ok_or_else(|| invalid("rows takes an array of property names"))?
                    .iter()
                    .map(|n| str_arg(n, "property"))
                    .collect::<Result<Vec<_>, _>>()?;
                let rows = arg(3)?
                    .as_array()
                    .ok_or_else(|| invalid("rows takes an array of rows"))?;
                if let Some(op) = self.plain_rows(class, &names, rows, upsert)? {
                    out.push(op);
                    return Ok(());
                }
                for row in rows {
                    let row = row
                        .as_array()
                        .filter(|r| r.len() == names.len())
                        .ok_or_else(|| {
                            invalid(format!("each row has {} values: {row}", names.len()))
                        })?;
                    let pairs: Vec<(&str, &Json)> = names.iter().copied().zip(row.iter()).collect();
                    self.put(out, class, &pairs, upsert)?;
                }
                return Ok(());
            }
            _ => {}
        }
        let key = self.key(class_name, arg(2)?)?;
        if name == "erase" {
            out.push(WriteOp::Erase {
                class_name: class.name.clone(),
                key,
            });
            return Ok(());
        }
        let prop = self.property(class, str_arg(arg(3)?, "property")?)?;
        let index = |i: usize| -> Result<u64, TandemError> {
            arg(i)?
                .as_u64()
                .filter(|v| u32::try_from(*v).is_ok())
                .ok_or_else(|| invalid(format!("{name}: a list index is a number 0..2^32")))
        };
        let t = Target {
            class: &class.name,
            key: &key,
            prop: &prop.name,
        };
        let (class_name, property) = (class.name.clone(), prop.name.clone());
        let key = key.clone();
        let path = Vec::new();
        out.push(match name {
            "set" => return self.assign(out, class, prop, &t, path, arg(4)?),
            "add" => WriteOp::Add {
                amount: arg(4)?
                    .as_i64()
                    .ok_or_else(|| invalid("add takes an integer amount"))?,
                class_name,
                key,
                property,
                path,
            },
            "list_insert" => {
                let i = index(4)?;
                return self.list_insert(out, class, prop, &t, path, i, arg(5)?);
            }
            "list_set" => WriteOp::ListSet {
                index: index(4)?,
                value: self.value(class, prop, arg(5)?)?,
                class_name,
                key,
                property,
                path,
            },
            "list_move" => WriteOp::ListMove {
                from: index(4)?,
                to: index(5)?,
                class_name,
                key,
                property,
                path,
            },
            "list_erase" => WriteOp::ListErase {
                index: index(4)?,
                class_name,
                key,
                property,
                path,
            },
            "list_clear" => t.clear(CollectionKind::List, path),
            "set_insert" => t.set_insert(path, self.value(class, prop, arg(4)?)?),
            "set_erase" => WriteOp::SetErase {
                value: self.value(class, prop, arg(4)?)?,
                class_name,
                key,
                property,
                path,
            },
            "set_clear" => t.clear(CollectionKind::Set, path),
            "dict_set" => {
                let entry = str_arg(arg(4)?, "dictionary key")?;
                return self.dict_set(out, class, prop, &t, path, entry, arg(5)?);
            }
            "dict_erase" => t.dict_erase(path, str_arg(arg(4)?, "entry")?),
            "dict_clear" => t.clear(CollectionKind::Dictionary, path),
            _ => return Err(invalid(format!("unknown operation {name:?}"))),
        });
        Ok(())
    }

    /// The rows of a `rows` (`upsert_rows`) operation as one `WriteOp::CreateRows`
    /// (`UpsertRows`: the store's `create_rows`, one prepared `INSERT`) when every property is
    /// a plain single value; `None` when one is a collection or an embedded object (or the
    /// names lack the primary key), which `put` decodes row by row. Both record the same
    /// instructions.
    fn plain_rows(
        &self,
        class: &model::ClassSchema,
        names: &[&str],
        rows: &[Json],
        upsert: bool,
    ) -> Result<Option<WriteOp>, TandemError> {
        let Some(pk_name) = class.primary_key.as_deref() else {
            return Ok(None);
        };
        let Some(pk_at) = names.iter().position(|n| *n == pk_name) else {
            return Ok(None);
        };
        let mut props = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            if i == pk_at {
                continue;
            }
            let prop = self.property(class, name)?;
            if prop.collection != CollectionKind::Single {
                return Ok(None);
            }
            props.push((i, prop));
        }
        let mut keys = Vec::with_capacity(rows.len());
        let mut values = Vec::with_capacity(rows.len() * props.len());
        for row in rows {
            let row = row
                .as_array()
                .filter(|r| r.len() == names.len())
                .ok_or_else(|| invalid(format!("each row has {} values: {row}", names.len())))?;
            keys.push(self.key(&class.name, &row[pk_at])?);
            for &(i, prop) in &props {
                match self.element(class, prop, &row[i])? {
                    Decoded::Value(v) => values.push(v),
                    Decoded::Embedded(_) => return Ok(None),
                }
            }
        }
        let (class_name, properties) = (
            class.name.clone(),
            props.iter().map(|&(i, _)| names[i].to_string()).collect(),
        );
        Ok(Some(if upsert {
            WriteOp::UpsertRows {
                class_name,
                properties,
                keys,
                values,
            }
        } else {
            WriteOp::CreateRows {
                class_name,
                properties,
                keys,
                values,
            }
        }))
    }

    /// Creates (or upserts) an object from `(property, value)` pairs: plain single values in
    /// one `Create` (`Upsert`), then collections and embedded objects one by one. An upsert
    /// replaces a collection whole.
    fn put(
        &self,
        out: &mut Vec<WriteOp>,
        class: &model::ClassSchema,
        pairs: &[(&str, &Json)],
        upsert: bool,
    ) -> Result<(), TandemError> {
        let pk_name = class
            .primary_key
            .as_deref()
            .ok_or_else(|| invalid(format!("{} is embedded: create its owner", class.name)))?;
        let key_json = pairs
            .iter()
            .find(|(n, _)| *n == pk_name)
            .ok_or_else(|| invalid(format!("a {} needs its primary key {pk_name}", class.name)))?
            .1;
        let key = self.key(&class.name, key_json)?;
        let mut plain = HashMap::with_capacity(pairs.len());
        let mut rest = Vec::new();
        for &(name, json) in pairs {
            if name == pk_name {
                continue;
            }
            let prop = self.property(class, name)?;
            if prop.collection != CollectionKind::Single {
                rest.push((prop, json));
                continue;
            }
            match self.element(class, prop, json)? {
                Decoded::Value(v) => {
                    plain.insert(name.to_string(), v);
                }
                Decoded::Embedded(_) => rest.push((prop, json)),
            }
        }
        let (class_name, values) = (class.name.clone(), plain);
        out.push(if upsert {
            WriteOp::Upsert {
                class_name,
                key: key.clone(),
                values,
            }
        } else {
            WriteOp::Create {
                class_name,
                key: key.clone(),
                values,
            }
        });
        for (prop, json) in rest {
            let t = Target {
                class: &class.name,
                key: &key,
                prop: &prop.name,
            };
            match prop.collection {
                CollectionKind::Single => self.assign(out, class, prop, &t, Vec::new(), json)?,
                kind => {
                    if upsert {
                        out.push(t.clear(kind, Vec::new()));
                    }
                    self.fill_collection(out, &t, &[], class, prop, json)?;
                }
            }
        }
        Ok(())
    }

    /// Sets a single property (at `path` below `t.prop`): a value, or an embedded object,
    /// which replaces the old one whole (no field of it survives).
    fn assign(
        &self,
        out: &mut Vec<WriteOp>,
        class: &model::ClassSchema,
        prop: &Property,
        t: &Target<'_>,
        path: Path,
        json: &Json,
    ) -> Result<(), TandemError> {
        if prop.collection != CollectionKind::Single {
            return Err(invalid(format!(
                "{}.{} is a collection: set it whole with upsert, or edit it",
                class.name, prop.name
            )));
        }
        match self.element(class, prop, json)? {
            Decoded::Value(v) => out.push(t.set(path, v)),
            Decoded::Embedded(map) => {
                out.push(t.set(path.clone(), Value::Null));
                out.push(t.create_embedded(path.clone()));
                self.fill(out, t, &path, prop, map)?;
            }
        }
        Ok(())
    }

    /// Inserts `json` at `index` of the list `prop` of `class`, found at `path` below `t.prop`
    /// (empty: the property itself).
    #[allow(clippy::too_many_arguments)]
    fn list_insert(
        &self,
        out: &mut Vec<WriteOp>,
        class: &model::ClassSchema,
        prop: &Property,
        t: &Target<'_>,
        path: Path,
        index: u64,
        json: &Json,
    ) -> Result<(), TandemError> {
        match self.element(class, prop, json)? {
            Decoded::Value(v) => out.push(t.list_insert(path, index, v)),
            Decoded::Embedded(map) => {
                let element = with_step(&path, PathStep::Index { index });
                out.push(t.list_insert_embedded(path, index));
                self.fill(out, t, &element, prop, map)?;
            }
        }
        Ok(())
    }

    /// Sets `entry` of the dictionary `prop` of `class`, found at `path` below `t.prop`
    /// (empty: the property itself), to `json`; an embedded object replaces the entry whole.
    #[allow(clippy::too_many_arguments)]
    fn dict_set(
        &self,
        out: &mut Vec<WriteOp>,
        class: &model::ClassSchema,
        prop: &Property,
        t: &Target<'_>,
        path: Path,
        entry: &str,
        json: &Json,
    ) -> Result<(), TandemError> {
        match self.element(class, prop, json)? {
            Decoded::Value(v) => out.push(t.dict_set(path, entry, v)),
            Decoded::Embedded(map) => {
                let value_at = with_step(
                    &path,
                    PathStep::Name {
                        name: entry.to_string(),
                    },
                );
                out.push(t.dict_erase(path, entry));
                out.push(t.create_embedded(value_at.clone()));
                self.fill(out, t, &value_at, prop, map)?;
            }
        }
        Ok(())
    }

    /// Writes the fields of the embedded object (of `prop`'s target class) that exists at
    /// `path` below `t.prop`.
    fn fill(
        &self,
        out: &mut Vec<WriteOp>,
        t: &Target<'_>,
        path: &[PathStep],
        prop: &Property,
        map: &serde_json::Map<String, Json>,
    ) -> Result<(), TandemError> {
        let embedded = self.class(prop.link_target.as_deref().unwrap_or_default())?;
        for (name, json) in map {
            let field = self.property(embedded, name)?;
            let at = with_step(path, PathStep::Name { name: name.clone() });
            if field.collection != CollectionKind::Single {
                // The embedded object is new: its collections are empty and are filled in
                // order, each element or entry through the path to the collection.
                self.fill_collection(out, t, &at, embedded, field, json)?;
                continue;
            }
            match self.element(embedded, field, json)? {
                Decoded::Value(v) => out.push(t.set(at, v)),
                Decoded::Embedded(inner) => {
                    out.push(t.create_embedded(at.clone()));
                    self.fill(out, t, &at, field, inner)?;
                }
            }
        }
        Ok(())
    }

    /// Fills the empty collection `field` of an object of `class` (the top-level object, or an
    /// embedded one found at `path` below `t.prop`) with the elements (list, set) or entries
    /// (dictionary) of `json`.
    fn fill_collection(
        &self,
        out: &mut Vec<WriteOp>,
        t: &Target<'_>,
        path: &[PathStep],
        class: &model::ClassSchema,
        field: &Property,
        json: &Json,
    ) -> Result<(), TandemError> {
        match field.collection {
            CollectionKind::Single => unreachable!("only collections are filled"),
            CollectionKind::List => {
                for (i, item) in collection(json, "a list", field)?.iter().enumerate() {
                    let index = u32::try_from(i)
                        .map_err(|_| invalid("a list holds at most 2^32 elements"))?;
                    self.list_insert(out, class, field, t, path.to_vec(), index.into(), item)?;
                }
            }
            CollectionKind::Set => {
                for item in collection(json, "a set", field)? {
                    let v = self.value(class, field, item)?;
                    out.push(t.set_insert(path.to_vec(), v));
                }
            }
            CollectionKind::Dictionary => {
                let entries = json.as_object().ok_or_else(|| {
                    invalid(format!(
                        "{}.{} is a dictionary: give an object",
                        class.name, field.name
                    ))
                })?;
                for (entry, item) in entries {
                    self.dict_set(out, class, field, t, path.to_vec(), entry, item)?;
                }
            }
        }
        Ok(())
    }

    /// An object as an array of its property values, in the class's property order (the
    /// primary key, which the object's fields do not hold, from `key`).
    fn row(&self, class: &model::ClassSchema, object: &Object, key: Option<&PrimaryKey>) -> Json {
        Json::Array(
            class
                .properties
                .iter()
                .map(|p| match object.fields.get(&p.name) {
                    None if class.primary_key.as_deref() == Some(p.name.as_str()) => {
                        key.map_or(Json::Null, key_json)
                    }
                    None => Json::Null,
                    Some(field) => self.cell(p, field),
                })
                .collect(),
        )
    }

    /// One property's value in a row.
    fn cell(&self, p: &Property, field: &Field) -> Json {
        match field {
            Field::Value(v) => self.read_val(v),
            Field::Embedded(o) => self.read_embedded(p, o.as_ref()),
            Field::List(items) => {
                Json::Array(items.iter().map(|e| self.read_element(p, e)).collect())
            }
            Field::Set(items) => Json::Array(items.iter().map(|v| self.read_val(v)).collect()),
            Field::Dictionary(entries) => Json::Object(
                entries
                    .iter()
                    .map(|(k, e)| (k.clone(), self.read_element(p, e)))
                    .collect(),
            ),
        }
    }

    fn read_element(&self, prop: &Property, e: &Element) -> Json {
        match e {
            Element::Value(v) => self.read_val(v),
            Element::Embedded(o) => self.read_embedded(prop, Some(o)),
        }
    }

    fn read_embedded(&self, prop: &Property, object: Option<&Object>) -> Json {
        match (
            object,
            prop.link_target
                .as_deref()
                .and_then(|t| self.schema.class(t)),
        ) {
            (Some(o), Some(class)) => self.row(class, o, None),
            _ => Json::Null,
        }
    }

    fn read_val(&self, v: &Val) -> Json {
        match v {
            Val::Null => Json::Null,
            Val::Int(i) => Json::from(*i),
            Val::Bool(b) => Json::Bool(*b),
            Val::String(s) => Json::String(s.clone()),
            Val::Binary(b) => Json::String(B64.encode(b)),
            Val::Timestamp(s, n) => Json::Array(vec![Json::from(*s), Json::from(*n)]),
            Val::Float(bits) => float(f64::from(f32::from_bits(*bits))),
            Val::Double(bits) => float(f64::from_bits(*bits)),
            Val::Decimal(bits) => Json::String(Decimal128::from_bits(*bits).to_string()),
            Val::ObjectId(id) => Json::String(hex(id)),
            Val::Uuid(id) => Json::String(hex(id)),
            Val::Link(_, key) => match key {
                // The link to the object whose key is null; `null` is no link.
                StateKey::Null => Json::Array(vec![Json::Null]),
                StateKey::GlobalKey(..) => Json::Null,
                StateKey::Int(i) => Json::from(*i),
                StateKey::String(s) => Json::String(s.clone()),
                StateKey::ObjectId(id) => Json::String(hex(id)),
                StateKey::Uuid(id) => Json::String(hex(id)),
            },
        }
    }
}

fn key_json(key: &PrimaryKey) -> Json {
    match key {
        PrimaryKey::Null => Json::Null,
        PrimaryKey::Int(i) => Json::from(*i),
        PrimaryKey::String(s) => Json::String(s.clone()),
        PrimaryKey::ObjectId(id) => Json::String(hex(&id.0)),
        PrimaryKey::Uuid(id) => Json::String(hex(&id.0)),
    }
}

fn str_arg<'j>(json: &'j Json, what: &str) -> Result<&'j str, TandemError> {
    json.as_str()
        .ok_or_else(|| invalid(format!("a {what} name is a string, not {json}")))
}

fn collection<'j>(
    json: &'j Json,
    what: &str,
    prop: &Property,
) -> Result<&'j Vec<Json>, TandemError> {
    json.as_array()
        .ok_or_else(|| invalid(format!("{} is {what}: give an array", prop.name)))
}

fn float(f: f64) -> Json {
    if f.is_nan() {
        Json::String("NaN".into())
    } else if f.is_infinite() {
        Json::String(if f > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        Json::from(f)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex<const N: usize>(s: &str, what: &str) -> Result<[u8; N], TandemError> {
    let digits: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    let bad = || invalid(format!("{what} takes {} hex digits, not {s:?}", N * 2));
    if digits.len() != N * 2 {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(text, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A plain (non-link, non-mixed) value of type `t`.
fn scalar(t: PropertyType, json: &Json, what: &str) -> Result<Value, TandemError> {
    let wrong = |expected: &str| invalid(format!("{what} takes {expected}, not {json}"));
    if json.is_null() {
        return Ok(Value::Null);
    }
    Ok(match t {
        PropertyType::Int => Value::Int {
            value: json.as_i64().ok_or_else(|| match json {
                // serde_json reads an integer beyond i64 as u64 or as a float: say which
                // integers fit, not the float it became.
                Json::Number(n) if n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
                    invalid(format!(
                        "{what} takes a 64-bit integer ({} to {}); this one is out of range",
                        i64::MIN,
                        i64::MAX
                    ))
                }
                _ => wrong("an integer"),
            })?,
        },
        PropertyType::Bool => Value::Bool {
            value: json.as_bool().ok_or_else(|| wrong("a bool"))?,
        },
        PropertyType::String => Value::String {
            value: json.as_str().ok_or_else(|| wrong("a string"))?.to_string(),
        },
        PropertyType::Binary => {
            let text = json.as_str().ok_or_else(|| wrong("base64 bytes"))?;
            Value::Binary {
                value: B64.decode(text).map_err(|_| wrong("base64 bytes"))?,
            }
        }
        PropertyType::Timestamp => {
            let pair = json
                .as_array()
                .filter(|a| a.len() == 2)
                .ok_or_else(|| wrong("[seconds, nanoseconds]"))?;
            let (Some(s), Some(n)) = (pair[0].as_i64(), pair[1].as_i64()) else {
                return Err(wrong("[seconds, nanoseconds]"));
            };
            // Normalize to one sign (truncation toward zero), as Timestamp requires.
            let total = i128::from(s) * 1_000_000_000 + i128::from(n);
            let seconds =
                i64::try_from(total / 1_000_000_000).map_err(|_| wrong("a timestamp in range"))?;
            let nanos = (total % 1_000_000_000) as i32;
            Timestamp::new(seconds, nanos).map_err(|e| invalid(format!("{what}: {e}")))?;
            Value::Timestamp {
                seconds,
                nanoseconds: nanos,
            }
        }
        PropertyType::Float | PropertyType::Double => {
            let f = match json {
                Json::Number(n) => n.as_f64().ok_or_else(|| wrong("a number"))?,
                Json::String(s) if s == "NaN" => f64::NAN,
                Json::String(s) if s == "Infinity" => f64::INFINITY,
                Json::String(s) if s == "-Infinity" => f64::NEG_INFINITY,
                _ => return Err(wrong("a number")),
            };
            if t == PropertyType::Float {
                Value::Float { value: f as f32 }
            } else {
                Value::Double { value: f }
            }
        }
        PropertyType::Decimal => {
            let text = json.as_str().ok_or_else(|| wrong("a decimal string"))?;
            decimal(text).ok_or_else(|| wrong("a finite decimal128"))?;
            Value::Decimal {
                value: text.to_string(),
            }
        }
        PropertyType::ObjectId => Value::ObjectId {
            bytes: unhex::<12>(json.as_str().ok_or_else(|| wrong("an object id"))?, what)?.to_vec(),
        },
        PropertyType::Uuid => Value::Uuid {
            bytes: unhex::<16>(json.as_str().ok_or_else(|| wrong("a UUID"))?, what)?.to_vec(),
        },
        PropertyType::Link | PropertyType::Mixed => return Err(wrong("a plain value")),
    })
}

/// Parses decimal text exactly (see `Decimal128`'s `FromStr`): `None` if malformed or out of
/// decimal128's range.
fn decimal(text: &str) -> Option<Decimal128> {
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `rows` operation of plain properties (the store's `create_rows`) and one with an
    /// embedded object (created row by row) record exactly the instructions of the same
    /// objects written by `create` operations, and a taken key names its row.
    #[test]
    fn rows_record_what_creates_do() {
        use crate::ffi::types::{PropertySpec, PropertyType as T};
        let prop = PropertySpec::single;
        let classes = vec![
            ClassSpec {
                name: "Task".into(),
                primary_key: Some("_id".into()),
                properties: vec![
                    prop("_id", T::Int),
                    prop("title", T::String),
                    prop("count", T::Int),
                    PropertySpec {
                        nullable: true,
                        link_target: Some("Address".into()),
                        ..prop("address", T::Link)
                    },
                ],
            },
            ClassSpec {
                name: "Address".into(),
                primary_key: None,
                properties: vec![prop("street", T::String)],
            },
        ];
        let history = |batch: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db.sqlite").to_string_lossy().into_owned();
            let db = Database::open(path, classes.clone()).unwrap();
            let codec = RowCodec::new(classes.clone()).unwrap();
            codec.write(Arc::clone(&db), batch.as_bytes()).unwrap();
            let history = db.inner.read().unwrap().history().unwrap();
            history.iter().map(|c| c.encode()).collect::<Vec<_>>()
        };
        let creates = r#"[["create", "Task", {"_id": 1, "count": 2, "title": "a"}],
                          ["create", "Task", {"_id": 2, "count": 3, "title": "b"}]]"#;
        let rows = r#"[["rows", "Task", ["_id", "count", "title"], [[1, 2, "a"], [2, 3, "b"]]]]"#;
        assert_eq!(history(rows), history(creates));
        let creates = r#"[["create", "Task", {"_id": 1, "address": {"street": "x"}, "title": "a"}],
                          ["create", "Task", {"_id": 2, "address": null, "title": "b"}]]"#;
        let rows = r#"[["rows", "Task", ["_id", "address", "title"],
                        [[1, {"street": "x"}, "a"], [2, null, "b"]]]]"#;
        assert_eq!(history(rows), history(creates));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite").to_string_lossy().into_owned();
        let db = Database::open(path, classes.clone()).unwrap();
        let codec = RowCodec::new(classes.clone()).unwrap();
        // upsert_rows: new objects are created, existing ones get the row's values.
        let upserts =
            r#"[["upsert_rows", "Task", ["_id", "count", "title"], [[1, 5, "x"], [7, 8, "y"]]]]"#;
        let codec_up = RowCodec::new(classes.clone()).unwrap();
        let dir_up = tempfile::tempdir().unwrap();
        let path_up = dir_up
            .path()
            .join("db.sqlite")
            .to_string_lossy()
            .into_owned();
        let db_up = Database::open(path_up, classes.clone()).unwrap();
        codec_up
            .write(
                Arc::clone(&db_up),
                br#"[["create", "Task", {"_id": 1, "count": 2, "title": "a"}]]"#,
            )
            .unwrap();
        codec_up
            .write(Arc::clone(&db_up), upserts.as_bytes())
            .unwrap();
        let read = db_up.inner.read().unwrap();
        for (key, count, title) in [(1, 5, "x"), (7, 8, "y")] {
            let object = read.object("Task", &PrimaryKey::Int(key)).unwrap().unwrap();
            assert_eq!(
                object.fields["count"],
                crate::state::Field::Value(crate::state::Val::Int(count))
            );
            assert_eq!(
                object.fields["title"],
                crate::state::Field::Value(crate::state::Val::String(title.into()))
            );
        }
        drop(read);

        let before = db.inner.read().unwrap().history().unwrap().len();
        let taken = r#"[["rows", "Task", ["_id", "title"], [[1, "a"], [1, "b"]]]]"#;
        let err = codec.write(Arc::clone(&db), taken.as_bytes()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("row 1") && message.contains("already exists"),
            "{message}"
        );
        assert_eq!(db.inner.read().unwrap().history().unwrap().len(), before);
    }

    /// The schema of `batches_are_the_one_operation_list`: every collection kind at the top
    /// level and inside embedded objects.
    fn rich_classes() -> Vec<ClassSpec> {
        use crate::ffi::types::{Collection, PropertySpec, PropertyType as T};
        let prop = |name: &str, property_type: T, collection: Collection| PropertySpec {
            name: name.into(),
            property_type,
            nullable: false,
            collection,
            link_target: None,
            indexed: false,
        };
        let embedded = |name: &str, collection: Collection| PropertySpec {
            nullable: collection == Collection::Single,
            link_target: Some("Address".into()),
            ..prop(name, T::Link, collection)
        };
        vec![
            ClassSpec {
                name: "Task".into(),
                primary_key: Some("_id".into()),
                properties: vec![
                    prop("_id", T::Int, Collection::Single),
                    prop("title", T::String, Collection::Single),
                    prop("count", T::Int, Collection::Single),
                    prop("tags", T::String, Collection::List),
                    prop("labels", T::String, Collection::Set),
                    prop("meta", T::String, Collection::Dictionary),
                    embedded("address", Collection::Single),
                    embedded("stops", Collection::List),
                    embedded("places", Collection::Dictionary),
                ],
            },
            ClassSpec {
                name: "Address".into(),
                primary_key: None,
                properties: vec![
                    prop("street", T::String, Collection::Single),
                    prop("codes", T::Int, Collection::List),
                ],
            },
        ]
    }

    /// A write batch records exactly the instructions of the `WriteOp`s it stands for, spelled
    /// out by hand below: every operation name, collections at the top level and inside
    /// embedded objects, an upsert's replacement of a collection, `rows` and `upsert_rows`.
    #[test]
    fn batches_are_the_one_operation_list() {
        use crate::ffi::ops::{PathStep as P, WriteOp as W};
        use crate::ffi::types::Key;
        use std::collections::HashMap;
        let classes = rich_classes();
        let open = || {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db.sqlite").to_string_lossy().into_owned();
            (Database::open(path, classes.clone()).unwrap(), dir)
        };
        let history = |db: &Database| {
            let history = db.inner.read().unwrap().history().unwrap();
            history.iter().map(|c| c.encode()).collect::<Vec<_>>()
        };
        let batch = r#"[
            ["create", "Task", {"_id": 1, "title": "a", "count": 2, "tags": ["x", "y"],
                "labels": ["p"], "meta": {"k": "v"},
                "address": {"street": "s", "codes": [1, 2]},
                "stops": [{"street": "t"}],
                "places": {"home": {"street": "h", "codes": [3]}}}],
            ["upsert", "Task", {"_id": 1, "tags": ["z"], "title": "b"}],
            ["set", "Task", 1, "count", 5],
            ["add", "Task", 1, "count", 2],
            ["list_insert", "Task", 1, "tags", 0, "w"],
            ["list_set", "Task", 1, "tags", 1, "q"],
            ["list_move", "Task", 1, "tags", 0, 1],
            ["list_erase", "Task", 1, "tags", 0],
            ["set_insert", "Task", 1, "labels", "r"],
            ["set_erase", "Task", 1, "labels", "p"],
            ["dict_set", "Task", 1, "meta", "j", "u"],
            ["dict_erase", "Task", 1, "meta", "k"],
            ["set", "Task", 1, "address", {"street": "new"}],
            ["list_insert", "Task", 1, "stops", 1, {"street": "u", "codes": [7]}],
            ["dict_set", "Task", 1, "places", "work", {"street": "w"}],
            ["rows", "Task", ["_id", "title"], [[2, "r"], [3, "s"]]],
            ["upsert_rows", "Task", ["_id", "count", "title"], [[2, 9, "u"], [4, 1, "n"]]],
            ["rows", "Task", ["_id", "tags"], [[5, ["m"]]]],
            ["list_clear", "Task", 1, "tags"],
            ["set_clear", "Task", 1, "labels"],
            ["dict_clear", "Task", 1, "meta"],
            ["erase", "Task", 3]
        ]"#;
        let (by_batch, _dir) = open();
        let codec = RowCodec::new(classes.clone()).unwrap();
        codec
            .write(Arc::clone(&by_batch), batch.as_bytes())
            .unwrap();

        let one = Key::Int { value: 1 };
        let s = |v: &str| Value::String { value: v.into() };
        let int = |v: i64| Value::Int { value: v };
        let name = |n: &str| P::Name { name: n.into() };
        let at = |property: &str, path: Vec<P>, value: Value| W::Set {
            class_name: "Task".into(),
            key: one.clone(),
            property: property.into(),
            value,
            path,
        };
        let insert = |property: &str, path: Vec<P>, index: u64, value: Value| W::ListInsert {
            class_name: "Task".into(),
            key: one.clone(),
            property: property.into(),
            index,
            value,
            path,
        };
        let embed = |property: &str, path: Vec<P>| W::CreateEmbedded {
            class_name: "Task".into(),
            key: one.clone(),
            property: property.into(),
            path,
        };
        let values = |pairs: &[(&str, Value)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<HashMap<_, _>>()
        };
        let create = |key: i64, pairs: &[(&str, Value)], upsert: bool| {
            let (class_name, key, values) = ("Task".into(), Key::Int { value: key }, values(pairs));
            if upsert {
                W::Upsert {
                    class_name,
                    key,
                    values,
                }
            } else {
                W::Create {
                    class_name,
                    key,
                    values,
                }
            }
        };
        let task = |f: &dyn Fn(String, Key) -> W| f("Task".into(), one.clone());
        let ops = vec![
            create(1, &[("count", int(2)), ("title", s("a"))], false),
            at("address", vec![], Value::Null),
            embed("address", vec![]),
            insert("address", vec![name("codes")], 0, int(1)),
            insert("address", vec![name("codes")], 1, int(2)),
            at("address", vec![name("street")], s("s")),
            task(&|class_name, key| W::SetInsert {
                class_name,
                key,
                property: "labels".into(),
                value: s("p"),
                path: vec![],
            }),
            task(&|class_name, key| W::DictSet {
                class_name,
                key,
                property: "meta".into(),
                entry: "k".into(),
                value: s("v"),
                path: vec![],
            }),
            task(&|class_name, key| W::DictErase {
                class_name,
                key,
                property: "places".into(),
                entry: "home".into(),
                path: vec![],
            }),
            embed("places", vec![name("home")]),
            insert("places", vec![name("home"), name("codes")], 0, int(3)),
            at("places", vec![name("home"), name("street")], s("h")),
            task(&|class_name, key| W::ListInsertEmbedded {
                class_name,
                key,
                property: "stops".into(),
                index: 0,
                path: vec![],
            }),
            at("stops", vec![P::Index { index: 0 }, name("street")], s("t")),
            insert("tags", vec![], 0, s("x")),
            insert("tags", vec![], 1, s("y")),
            create(1, &[("title", s("b"))], true),
            task(&|class_name, key| W::ListClear {
                class_name,
                key,
                property: "tags".into(),
                path: vec![],
            }),
            insert("tags", vec![], 0, s("z")),
            at("count", vec![], int(5)),
            task(&|class_name, key| W::Add {
                class_name,
                key,
                property: "count".into(),
                amount: 2,
                path: vec![],
            }),
            insert("tags", vec![], 0, s("w")),
            task(&|class_name, key| W::ListSet {
                class_name,
                key,
                property: "tags".into(),
                index: 1,
                value: s("q"),
                path: vec![],
            }),
            task(&|class_name, key| W::ListMove {
                class_name,
                key,
                property: "tags".into(),
                from: 0,
                to: 1,
                path: vec![],
            }),
            task(&|class_name, key| W::ListErase {
                class_name,
                key,
                property: "tags".into(),
                index: 0,
                path: vec![],
            }),
            task(&|class_name, key| W::SetInsert {
                class_name,
                key,
                property: "labels".into(),
                value: s("r"),
                path: vec![],
            }),
            task(&|class_name, key| W::SetErase {
                class_name,
                key,
                property: "labels".into(),
                value: s("p"),
                path: vec![],
            }),
            task(&|class_name, key| W::DictSet {
                class_name,
                key,
                property: "meta".into(),
                entry: "j".into(),
                value: s("u"),
                path: vec![],
            }),
            task(&|class_name, key| W::DictErase {
                class_name,
                key,
                property: "meta".into(),
                entry: "k".into(),
                path: vec![],
            }),
            at("address", vec![], Value::Null),
            embed("address", vec![]),
            at("address", vec![name("street")], s("new")),
            task(&|class_name, key| W::ListInsertEmbedded {
                class_name,
                key,
                property: "stops".into(),
                index: 1,
                path: vec![],
            }),
            insert(
                "stops",
                vec![P::Index { index: 1 }, name("codes")],
                0,
                int(7),
            ),
            at("stops", vec![P::Index { index: 1 }, name("street")], s("u")),
            task(&|class_name, key| W::DictErase {
                class_name,
                key,
                property: "places".into(),
                entry: "work".into(),
                path: vec![],
            }),
            embed("places", vec![name("work")]),
            at("places", vec![name("work"), name("street")], s("w")),
            W::CreateRows {
                class_name: "Task".into(),
                properties: vec!["title".into()],
                keys: vec![Key::Int { value: 2 }, Key::Int { value: 3 }],
                values: vec![s("r"), s("s")],
            },
            create(2, &[("count", int(9)), ("title", s("u"))], true),
            create(4, &[("count", int(1)), ("title", s("n"))], true),
            create(5, &[], false),
            W::ListInsert {
                class_name: "Task".into(),
                key: Key::Int { value: 5 },
                property: "tags".into(),
                index: 0,
                value: s("m"),
                path: vec![],
            },
            task(&|class_name, key| W::ListClear {
                class_name,
                key,
                property: "tags".into(),
                path: vec![],
            }),
            task(&|class_name, key| W::SetClear {
                class_name,
                key,
                property: "labels".into(),
                path: vec![],
            }),
            task(&|class_name, key| W::DictClear {
                class_name,
                key,
                property: "meta".into(),
                path: vec![],
            }),
            W::Erase {
                class_name: "Task".into(),
                key: Key::Int { value: 3 },
            },
        ];
        let (by_ops, _dir2) = open();
        crate::ffi::ops::write(&by_ops.inner, ops).unwrap();
        let (a, b) = (history(&by_batch), history(&by_ops));
        assert_eq!(a.len(), 2, "the schema's changeset and the batch's");
        assert_eq!(a, b);
    }

    #[test]
    fn decimals_parse_exactly() {
        let parts = |s: &str| decimal(s).map(|d| d.parts());
        assert_eq!(parts("123.45"), Some((12345, -2, false)));
        assert_eq!(parts("-1E+5"), Some((1, 5, true)));
        assert_eq!(parts("0.000"), Some((0, -3, false)));
        assert_eq!(parts("12345E-2"), Some((12345, -2, false)));
        assert_eq!(parts(".5"), Some((5, -1, false)));
        assert_eq!(parts("NaN"), None);
        assert_eq!(parts("1.2.3"), None);
        assert_eq!(parts(""), None);
    }

    #[test]
    fn hex_round_trips_and_rejects_bad_digits() {
        let id = [0xab_u8; 12];
        assert_eq!(unhex::<12>(&hex(&id), "id").unwrap(), id);
        assert!(unhex::<12>("zz", "id").is_err());
        let uuid = unhex::<16>("12345678-1234-5678-1234-567812345678", "uuid").unwrap();
        assert_eq!(hex(&uuid), "12345678123456781234567812345678");
    }

    /// Every finite double and float, written as the shortest decimal that reads back as
    /// itself (what Python's `repr`, Java's `toString` and serde_json's writer produce), is
    /// decoded to exactly that value. A sample of bit patterns, drawn by a fixed xorshift.
    #[test]
    fn floats_parse_exactly() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let parse = |t: PropertyType, text: &str| {
            let json: Json = serde_json::from_str(text).unwrap();
            scalar(t, &json, "f").unwrap()
        };
        let mut doubles: Vec<f64> = vec![-1.5e-300, 5e-324, f64::MAX, f64::MIN_POSITIVE, 0.1];
        doubles.extend((0..100_000).map(|_| f64::from_bits(next())));
        for d in doubles.into_iter().filter(|d| d.is_finite()) {
            for text in [format!("{d}"), format!("{d:e}"), float(d).to_string()] {
                match parse(PropertyType::Double, &text) {
                    Value::Double { value: back } => {
                        assert_eq!(back.to_bits(), d.to_bits(), "{text}")
                    }
                    other => panic!("{text}: {other:?}"),
                }
            }
        }
        let mut floats: Vec<f32> = vec![f32::MAX, f32::MIN_POSITIVE, 1e-45, 3.4028235e38, 0.1];
        floats.extend((0..100_000).map(|_| f32::from_bits(next() as u32)));
        for f in floats.into_iter().filter(|f| f.is_finite()) {
            for text in [format!("{f}"), format!("{f:e}")] {
                match parse(PropertyType::Float, &text) {
                    Value::Float { value: back } => {
                        assert_eq!(back.to_bits(), f.to_bits(), "{text}")
                    }
                    other => panic!("{text}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn an_integer_beyond_64_bits_is_refused_as_out_of_range() {
        for text in [
            "18446744073709551616",
            "9223372036854775808",
            "-9223372036854775809",
        ] {
            let json: Json = serde_json::from_str(text).unwrap();
            let err = scalar(PropertyType::Int, &json, "Task.count").unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains("Task.count takes a 64-bit integer") && !message.contains("e+"),
                "{text}: {message}"
            );
        }
        let json: Json = serde_json::from_str("1.5").unwrap();
        let message = scalar(PropertyType::Int, &json, "Task.count")
            .unwrap_err()
            .to_string();
        assert!(message.contains("takes an integer, not 1.5"), "{message}");
    }

    #[test]
    fn timestamps_normalize_to_one_sign() {
        let v = scalar(
            PropertyType::Timestamp,
            &serde_json::json!([-2, 500_000_000]),
            "t",
        );
        assert_eq!(
            v.unwrap(),
            Value::Timestamp {
                seconds: -1,
                nanoseconds: -500_000_000
            }
        );
    }
}
