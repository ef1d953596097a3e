//! The records, enums and errors that cross the foreign boundary, and their conversions.

use std::collections::HashMap;

use crate::client::SyncError;
use crate::model::{self, CollectionKind, PropertyType as CorePropertyType};
use crate::state::{Element, Field, Key as StateKey, Object, Val};
use crate::store::{StoreError, StoreErrorKind};

/// Why a call failed. Each variant carries a message that says what went wrong and what to do.
#[derive(Debug, uniffi::Error)]
pub enum TandemError {
    /// The schema is invalid.
    Schema {
        /// What is wrong.
        message: String,
    },
    /// An argument is wrong (unknown class or property, wrong type, missing object...).
    InvalidArgument {
        /// What is wrong.
        message: String,
    },
    /// The database file failed.
    Store {
        /// What failed.
        message: String,
    },
    /// Sync configuration or session failure.
    Sync {
        /// What failed.
        message: String,
    },
    /// A wait did not complete in time (nothing is lost; sync goes on).
    Timeout {
        /// What was waited for.
        message: String,
    },
    /// The session was stopped before the call completed.
    Stopped {
        /// Why.
        message: String,
    },
    /// A commit was refused because the transaction could never reach the server: it is over a
    /// sync size limit (`tandem::protocol::limits`). Nothing was written; split the work or
    /// store large payloads elsewhere.
    TooLarge {
        /// Which limit.
        limit: SizeLimit,
        /// The size found, in bytes.
        size: u64,
        /// The limit, in bytes.
        max: u64,
        /// What to do about it.
        message: String,
    },
}

/// A sync size limit a commit can be refused for (`tandem::store::SizeLimit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SizeLimit {
    /// One string or binary value: at most 16,777,199 bytes (realm-core's largest string).
    Value,
    /// The transaction's encoded changeset: at most 15 MiB (15,728,640 bytes).
    Changeset,
}

impl From<crate::store::SizeLimit> for SizeLimit {
    fn from(l: crate::store::SizeLimit) -> Self {
        match l {
            crate::store::SizeLimit::Value => SizeLimit::Value,
            crate::store::SizeLimit::Changeset => SizeLimit::Changeset,
        }
    }
}

impl std::fmt::Display for TandemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, message) = match self {
            TandemError::Schema { message } => ("schema", message),
            TandemError::InvalidArgument { message } => ("invalid argument", message),
            TandemError::Store { message } => ("store", message),
            TandemError::Sync { message } => ("sync", message),
            TandemError::Timeout { message } => ("timeout", message),
            TandemError::Stopped { message } => ("stopped", message),
            TandemError::TooLarge { message, .. } => ("too large", message),
        };
        write!(f, "{kind}: {message}")
    }
}

impl std::error::Error for TandemError {}

impl TandemError {
    /// The same error with `what: ` put before its message (the variant and its other fields
    /// are kept).
    pub fn context(mut self, what: &str) -> Self {
        let message = match &mut self {
            TandemError::Schema { message }
            | TandemError::InvalidArgument { message }
            | TandemError::Store { message }
            | TandemError::Sync { message }
            | TandemError::Timeout { message }
            | TandemError::Stopped { message }
            | TandemError::TooLarge { message, .. } => message,
        };
        *message = format!("{what}: {message}");
        self
    }
}

/// `e`'s message followed by each cause's (`std::error::Error::source`) that it does not
/// already contain, joined by `: `.
fn message_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = c.source();
    }
    message
}

impl TandemError {
    /// The variant for a store failure of `kind`: a destructive schema change or a schema that
    /// disagrees is `Schema`; a writer timeout or SQLite staying busy is `Timeout`; a bad
    /// value, name or query is `InvalidArgument`; a sync size limit is `TooLarge`; anything
    /// else about the file is `Store`.
    fn from_store(kind: StoreErrorKind, message: String) -> Self {
        match kind {
            StoreErrorKind::DestructiveSchemaChange | StoreErrorKind::SchemaMismatch => {
                TandemError::Schema { message }
            }
            StoreErrorKind::WriterTimeout | StoreErrorKind::Busy => {
                TandemError::Timeout { message }
            }
            StoreErrorKind::InvalidArgument | StoreErrorKind::Query | StoreErrorKind::Rejected => {
                TandemError::InvalidArgument { message }
            }
            StoreErrorKind::TooLarge { limit, size, max } => TandemError::TooLarge {
                limit: limit.into(),
                size,
                max,
                message,
            },
            StoreErrorKind::Sqlite
            | StoreErrorKind::FormatTooNew
            | StoreErrorKind::Corrupt
            | StoreErrorKind::Internal => TandemError::Store { message },
        }
    }
}

impl From<StoreError> for TandemError {
    fn from(e: StoreError) -> Self {
        TandemError::from_store(e.kind(), message_chain(&e))
    }
}

impl From<model::SchemaError> for TandemError {
    fn from(e: model::SchemaError) -> Self {
        TandemError::Schema {
            message: message_chain(&e),
        }
    }
}

impl From<SyncError> for TandemError {
    fn from(e: SyncError) -> Self {
        let message = message_chain(&e);
        match e {
            SyncError::Timeout { .. } => TandemError::Timeout { message },
            SyncError::Stopped { .. } => TandemError::Stopped { message },
            SyncError::Store { kind, .. } => TandemError::from_store(kind, message),
            SyncError::Config { .. }
            | SyncError::InvalidState { .. }
            | SyncError::Subscription { .. } => TandemError::Sync { message },
        }
    }
}

/// What a foreign listener or token provider may throw. Thrown exceptions are caught, logged,
/// and do not stop other listeners.
#[derive(Debug, uniffi::Error)]
pub enum CallbackError {
    /// The callback failed.
    Failed {
        /// Its message.
        message: String,
    },
}

impl std::fmt::Display for CallbackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let CallbackError::Failed { message } = self;
        f.write_str(message)
    }
}

impl std::error::Error for CallbackError {}

impl From<uniffi::UnexpectedUniFFICallbackError> for CallbackError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        CallbackError::Failed { message: e.reason }
    }
}

/// A primary key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum Key {
    /// The null key (nullable primary keys only).
    Null,
    /// An integer key.
    Int {
        /// The key.
        value: i64,
    },
    /// A string key.
    String {
        /// The key.
        value: String,
    },
    /// An object id key (12 bytes).
    ObjectId {
        /// The 12 bytes.
        bytes: Vec<u8>,
    },
    /// A UUID key (16 bytes).
    Uuid {
        /// The 16 bytes.
        bytes: Vec<u8>,
    },
}

/// A property value.
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum Value {
    /// Null.
    Null,
    /// An integer.
    Int {
        /// The value.
        value: i64,
    },
    /// A boolean.
    Bool {
        /// The value.
        value: bool,
    },
    /// A string.
    String {
        /// The value.
        value: String,
    },
    /// Bytes.
    Binary {
        /// The value.
        value: Vec<u8>,
    },
    /// A point in time.
    Timestamp {
        /// Seconds since the Unix epoch.
        seconds: i64,
        /// Nanoseconds (same sign as `seconds`).
        nanoseconds: i32,
    },
    /// A 32-bit float.
    Float {
        /// The value.
        value: f32,
    },
    /// A 64-bit float.
    Double {
        /// The value.
        value: f64,
    },
    /// An object id (12 bytes).
    ObjectId {
        /// The 12 bytes.
        bytes: Vec<u8>,
    },
    /// A UUID (16 bytes).
    Uuid {
        /// The 16 bytes.
        bytes: Vec<u8>,
    },
    /// A decimal128 as exact text: read as `coefficientEexponent` (`12345E-2`); written as
    /// that or the plain forms (`123.45`, `-0.5`, `1e3`). Malformed text or a value beyond
    /// decimal128 (a coefficient over 113 bits, an exponent outside -6176..=6111 after scaling) is
    /// `InvalidArgument`. Kotlin's `BigDecimal(text)`, Swift's `Decimal(string:)` and Python's
    /// `decimal.Decimal(text)` read it.
    Decimal {
        /// The decimal text.
        value: String,
    },
    /// A link to an object.
    Link {
        /// The target class.
        class_name: String,
        /// The target's primary key.
        key: Key,
    },
}

/// What one property of an object holds.
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum FieldValue {
    /// A single value.
    Single {
        /// The value.
        value: Value,
    },
    /// A list of values.
    List {
        /// The elements, in order.
        items: Vec<Value>,
    },
    /// A set.
    Set {
        /// The elements, sorted.
        items: Vec<Value>,
    },
    /// A dictionary of values.
    Dictionary {
        /// Key to value.
        entries: HashMap<String, Value>,
    },
    /// A single embedded-object property.
    Embedded {
        /// Whether the object is there.
        present: bool,
        /// Its properties (empty when it is not there), embedded objects included.
        fields: HashMap<String, FieldValue>,
    },
    /// A list of embedded objects.
    EmbeddedList {
        /// Each object's properties, in order.
        items: Vec<HashMap<String, FieldValue>>,
    },
    /// A dictionary of embedded objects.
    EmbeddedDictionary {
        /// Key to the object's properties (`None` for a null entry).
        entries: HashMap<String, Option<HashMap<String, FieldValue>>>,
    },
}

/// A property's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum PropertyType {
    /// 64-bit integer.
    Int,
    /// Boolean.
    Bool,
    /// UTF-8 string.
    String,
    /// Bytes.
    Binary,
    /// Timestamp.
    Timestamp,
    /// 32-bit float.
    Float,
    /// 64-bit float.
    Double,
    /// 128-bit decimal.
    Decimal,
    /// Object id.
    ObjectId,
    /// UUID.
    Uuid,
    /// A link to another class (give `link_target`).
    Link,
    /// Any value.
    Mixed,
}

/// A property's collection shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Collection {
    /// One value.
    Single,
    /// An ordered list.
    List,
    /// A set.
    Set,
    /// A dictionary with string keys.
    Dictionary,
}

/// One property of a class.
#[derive(Clone, Debug, uniffi::Record)]
pub struct PropertySpec {
    /// Its name.
    pub name: String,
    /// Its type.
    pub property_type: PropertyType,
    /// Whether it may be null.
    #[uniffi(default = false)]
    pub nullable: bool,
    /// Single value or collection.
    pub collection: Collection,
    /// The target class of a link.
    #[uniffi(default = None)]
    pub link_target: Option<String>,
    /// Whether it has a search index (Realm's `@Index`): a single int, bool, string,
    /// timestamp, objectId or uuid property (`tandem::model::Property::indexed`; any other is a
    /// schema error).
    #[uniffi(default = false)]
    pub indexed: bool,
}

#[cfg(test)]
impl PropertySpec {
    /// A single, required, unindexed property of `property_type` (the tests' building block).
    pub(crate) fn single(name: &str, property_type: PropertyType) -> Self {
        PropertySpec {
            name: name.into(),
            property_type,
            nullable: false,
            collection: Collection::Single,
            link_target: None,
            indexed: false,
        }
    }
}

/// One class (table).
#[derive(Clone, Debug, uniffi::Record)]
pub struct ClassSpec {
    /// Its name.
    pub name: String,
    /// The primary key property (top-level classes); `None` for an embedded class.
    pub primary_key: Option<String>,
    /// Its properties, primary key included.
    pub properties: Vec<PropertySpec>,
}

/// How an object changed.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ObjectChange {
    /// It was deleted.
    Deleted,
    /// These properties changed.
    Modified {
        /// Their names, sorted.
        properties: Vec<String>,
    },
}

/// One object of a query result with its primary key: what `Results.entries()` returns, so a
/// typed layer can build objects without a second crossing per object.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct ObjectEntry {
    /// The object's primary key.
    pub key: Key,
    /// Its properties by name, as `Database.object` returns them (the primary key property is
    /// not among them).
    pub fields: HashMap<String, FieldValue>,
}

/// One object of a query result by position: what `Results.rows(properties)` returns.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct ObjectRow {
    /// The object's primary key.
    pub key: Key,
    /// The values of the properties asked for, in the order asked (the primary key property
    /// as a `Single` value too).
    pub values: Vec<FieldValue>,
}

/// How query results changed, Realm style.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct ResultsChange {
    /// Indices in the old results of objects no longer there.
    pub deletions: Vec<u64>,
    /// Indices in the new results of objects that are new there.
    pub insertions: Vec<u64>,
    /// Indices in the new results of objects whose content changed.
    pub modifications: Vec<u64>,
    /// The new results' keys, in order.
    pub keys: Vec<Key>,
}

pub(crate) fn schema(classes: Vec<ClassSpec>) -> Result<model::Schema, TandemError> {
    let classes = classes
        .into_iter()
        .map(|c| {
            let properties = c.properties.into_iter().map(property).collect();
            match c.primary_key {
                Some(pk) => model::ClassSchema::top_level(c.name, pk, properties),
                None => model::ClassSchema::embedded(c.name, properties),
            }
        })
        .collect();
    Ok(model::Schema::new(classes)?)
}

fn property(p: PropertySpec) -> model::Property {
    let mut property = match (p.property_type, p.link_target) {
        (PropertyType::Link, Some(target)) | (_, Some(target)) => {
            model::Property::link(p.name, target)
        }
        (t, None) => model::Property::new(p.name, core_type(t)),
    };
    if p.nullable {
        property = property.nullable();
    }
    if p.indexed {
        property = property.indexed();
    }
    match p.collection {
        Collection::Single => property,
        Collection::List => property.collection(CollectionKind::List),
        Collection::Set => property.collection(CollectionKind::Set),
        Collection::Dictionary => property.collection(CollectionKind::Dictionary),
    }
}

fn core_type(t: PropertyType) -> CorePropertyType {
    match t {
        PropertyType::Int => CorePropertyType::Int,
        PropertyType::Bool => CorePropertyType::Bool,
        PropertyType::String => CorePropertyType::String,
        PropertyType::Binary => CorePropertyType::Binary,
        PropertyType::Timestamp => CorePropertyType::Timestamp,
        PropertyType::Float => CorePropertyType::Float,
        PropertyType::Double => CorePropertyType::Double,
        PropertyType::Decimal => CorePropertyType::Decimal,
        PropertyType::ObjectId => CorePropertyType::ObjectId,
        PropertyType::Uuid => CorePropertyType::Uuid,
        PropertyType::Link => CorePropertyType::Link,
        PropertyType::Mixed => CorePropertyType::Mixed,
    }
}

fn bytes<const N: usize>(b: &[u8], what: &str) -> Result<[u8; N], TandemError> {
    b.try_into().map_err(|_| TandemError::InvalidArgument {
        message: format!("{what} takes exactly {N} bytes, not {}", b.len()),
    })
}

pub(crate) fn core_key(key: &Key) -> Result<model::PrimaryKey, TandemError> {
    Ok(match key {
        Key::Null => model::PrimaryKey::Null,
        Key::Int { value } => model::PrimaryKey::Int(*value),
        Key::String { value } => model::PrimaryKey::String(value.clone()),
        Key::ObjectId { bytes: b } => {
            model::PrimaryKey::ObjectId(model::ObjectId(bytes(b, "an object id")?))
        }
        Key::Uuid { bytes: b } => model::PrimaryKey::Uuid(model::Uuid(bytes(b, "a UUID")?)),
    })
}

pub(crate) fn ffi_key(key: &model::PrimaryKey) -> Key {
    match key {
        model::PrimaryKey::Null => Key::Null,
        model::PrimaryKey::Int(v) => Key::Int { value: *v },
        model::PrimaryKey::String(s) => Key::String { value: s.clone() },
        model::PrimaryKey::ObjectId(id) => Key::ObjectId {
            bytes: id.0.to_vec(),
        },
        model::PrimaryKey::Uuid(id) => Key::Uuid {
            bytes: id.0.to_vec(),
        },
    }
}

fn state_key(key: &StateKey) -> Key {
    match key {
        StateKey::Null | StateKey::GlobalKey(..) => Key::Null,
        StateKey::Int(v) => Key::Int { value: *v },
        StateKey::String(s) => Key::String { value: s.clone() },
        StateKey::ObjectId(id) => Key::ObjectId { bytes: id.to_vec() },
        StateKey::Uuid(id) => Key::Uuid { bytes: id.to_vec() },
    }
}

pub(crate) fn core_value(value: &Value) -> Result<model::Value, TandemError> {
    Ok(match value {
        Value::Null => model::Value::Null,
        Value::Int { value } => model::Value::Int(*value),
        Value::Bool { value } => model::Value::Bool(*value),
        Value::String { value } => model::Value::String(value.clone()),
        Value::Binary { value } => model::Value::Binary(value.clone()),
        Value::Timestamp {
            seconds,
            nanoseconds,
        } => {
            model::Value::Timestamp(model::Timestamp::new(*seconds, *nanoseconds).map_err(|e| {
                TandemError::InvalidArgument {
                    message: e.to_string(),
                }
            })?)
        }
        Value::Float { value } => model::Value::Float(*value),
        Value::Double { value } => model::Value::Double(*value),
        Value::ObjectId { bytes: b } => {
            model::Value::ObjectId(model::ObjectId(bytes(b, "an object id")?))
        }
        Value::Uuid { bytes: b } => model::Value::Uuid(model::Uuid(bytes(b, "a UUID")?)),
        Value::Decimal { value } => {
            model::Value::Decimal(value.parse().map_err(|e: model::ValueError| {
                TandemError::InvalidArgument {
                    message: e.to_string(),
                }
            })?)
        }
        Value::Link { class_name, key } => model::Value::Link(model::Link {
            class: class_name.clone(),
            key: core_key(key)?,
        }),
    })
}

/// [`core_value`] of an owned value, for the write paths, which own theirs: strings, binaries
/// and link class names are moved, not copied.
pub(crate) fn into_core_value(value: Value) -> Result<model::Value, TandemError> {
    Ok(match value {
        Value::String { value } => model::Value::String(value),
        Value::Binary { value } => model::Value::Binary(value),
        Value::Link { class_name, key } => model::Value::Link(model::Link {
            class: class_name,
            key: core_key(&key)?,
        }),
        other => return core_value(&other),
    })
}

fn ffi_val(v: &Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Int(v) => Value::Int { value: *v },
        Val::Bool(v) => Value::Bool { value: *v },
        Val::String(s) => Value::String { value: s.clone() },
        Val::Binary(b) => Value::Binary { value: b.clone() },
        Val::Timestamp(s, n) => Value::Timestamp {
            seconds: *s,
            nanoseconds: *n,
        },
        Val::Float(bits) => Value::Float {
            value: f32::from_bits(*bits),
        },
        Val::Double(bits) => Value::Double {
            value: f64::from_bits(*bits),
        },
        // Decimals cross as their exact text, which every language can parse.
        Val::Decimal(bits) => Value::Decimal {
            value: model::Decimal128::from_bits(*bits).to_string(),
        },
        Val::ObjectId(id) => Value::ObjectId { bytes: id.to_vec() },
        Val::Uuid(id) => Value::Uuid { bytes: id.to_vec() },
        Val::Link(table, key) => Value::Link {
            class_name: table.clone(),
            key: state_key(key),
        },
    }
}

fn element(e: &Element) -> Option<Value> {
    match e {
        Element::Value(v) => Some(ffi_val(v)),
        Element::Embedded(_) => None,
    }
}

fn embedded(e: &Element) -> Option<HashMap<String, FieldValue>> {
    match e {
        Element::Embedded(o) => Some(fields(o)),
        Element::Value(_) => None,
    }
}

/// An object's properties as foreign code reads them. A list or dictionary whose elements are
/// embedded objects reads as `EmbeddedList` / `EmbeddedDictionary` (a dictionary of embedded
/// objects may also hold nulls); an empty one (or a dictionary holding only nulls) reads as
/// `List` / `Dictionary`, since nothing in it says which it is.
pub(crate) fn fields(object: &Object) -> HashMap<String, FieldValue> {
    object
        .fields
        .iter()
        .map(|(name, field)| (name.clone(), field_value(field)))
        .collect()
}

/// One property's content as foreign code reads it (see [`fields`]).
/// [`field_value`] of a field the caller no longer needs: its string and bytes are moved,
/// not copied (results of 100,000 objects cross this way).
pub(crate) fn field_value_owned(field: Field) -> FieldValue {
    match field {
        Field::Value(Val::String(value)) => FieldValue::Single {
            value: Value::String { value },
        },
        Field::Value(Val::Binary(value)) => FieldValue::Single {
            value: Value::Binary { value },
        },
        other => field_value(&other),
    }
}

pub(crate) fn field_value(field: &Field) -> FieldValue {
    match field {
        Field::Value(v) => FieldValue::Single { value: ffi_val(v) },
        Field::Embedded(o) => FieldValue::Embedded {
            present: o.is_some(),
            fields: o.as_ref().map(fields).unwrap_or_default(),
        },
        Field::List(items) => match items.iter().map(element).collect() {
            Some(items) => FieldValue::List { items },
            None => FieldValue::EmbeddedList {
                items: items.iter().filter_map(embedded).collect(),
            },
        },
        Field::Set(items) => FieldValue::Set {
            items: items.iter().map(ffi_val).collect(),
        },
        Field::Dictionary(entries) => {
            if entries.values().all(|e| matches!(e, Element::Value(_))) {
                FieldValue::Dictionary {
                    entries: entries
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), element(v)?)))
                        .collect(),
                }
            } else {
                FieldValue::EmbeddedDictionary {
                    entries: entries
                        .iter()
                        .map(|(k, v)| (k.clone(), embedded(v)))
                        .collect(),
                }
            }
        }
    }
}
