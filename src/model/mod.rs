//! The data model: value types, primary keys and the schema an app declares.
//!
//! Nothing here knows about storage or the wire; the changeset, store and sync layers build on
//! these types.

mod dictionary_key;
mod schema;
mod value;

pub use dictionary_key::{check_dictionary_key, DictionaryKeyRule, InvalidDictionaryKey};
pub use schema::{
    ClassSchema, CollectionKind, Property, PropertyType, Schema, SchemaError, MAX_CLASS_NAME_LEN,
    MAX_PROPERTY_NAME_LEN,
};
pub use value::{Decimal128, Link, ObjectId, PrimaryKey, Timestamp, Uuid, Value, ValueError};
