//! A plain in-memory replica: tables, objects, fields and collections, and the reference
//! applier of changesets with Realm's semantics.
//!
//! This is the oracle. It favours being obviously right over being fast: the SQLite store, the
//! server's materialized state and the OT harness are all checked against it.
//!
//! Semantics (realm-sync.md section 2.4):
//! - `CreateObject` and `EraseObject` are idempotent (creating an existing object, or erasing a
//!   missing one, does nothing).
//! - A path instruction on a missing table, object or field, an index out of range, or a
//!   `prior_size` that is not the container's size is [`ApplyError::BadChangeset`].
//! - `AddTable` / `AddColumn` of something that exists must match it exactly, otherwise
//!   [`ApplyError::SchemaMismatch`].
//! - Links are primary-key references. Applying `EraseObject` leaves links to it in place (as
//!   realm-core leaves links to a tombstone): such an *unresolved* link keeps its list
//!   position, is hidden from every read ([`State::read`], see `resolve`), and resolves again
//!   if the object is re-created. (A local erase through the store also removes the links,
//!   with explicit instructions, as realm-core's `Obj::remove` does.)
//! - A changeset applies atomically: on error the state is unchanged.

mod apply;
pub(crate) mod checks;
mod display;
mod resolve;
mod snapshot;
mod value;

use std::collections::BTreeMap;

pub use apply::ApplyError;
pub(crate) use apply::{check_scalar, embedded_target};
pub(crate) use resolve::is_top_level;
pub use resolve::{
    is_link_collection, is_unresolved, resolve_field, resolve_in_place, resolved, virtual_to_real,
};
#[cfg(feature = "postgres")]
pub(crate) use snapshot::given_fields;
pub use snapshot::snapshot;
pub(crate) use snapshot::write_list;
#[cfg(feature = "server")]
pub(crate) use snapshot::{snapshot_streamed, whole_objects};
pub use value::{Element, Field, Key, Object, Val};

use crate::changeset::{CollectionType, PayloadType};

/// How a table is declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableSpec {
    /// A top-level table; objects are keyed by their primary key.
    TopLevel {
        /// Name of the primary key field.
        pk_field: String,
        /// Primary key type.
        pk_type: PayloadType,
        /// Whether the null key is allowed.
        pk_nullable: bool,
        /// Asymmetric (upload-only) table.
        asymmetric: bool,
    },
    /// An embedded table: its objects live inside fields of other objects.
    Embedded,
}

/// How a column is declared. Displayed as Realm's schema spells a property's type, with a
/// trailing `?` when nullable: `"uuid"`, `"list of string?"`, `"link to Person?"`,
/// `"dictionary of mixed"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSpec {
    /// Element type; `Null` means mixed.
    pub value_type: PayloadType,
    /// Target table of a link column.
    pub link_target: Option<String>,
    /// Whether values may be null.
    pub nullable: bool,
    /// Single value or collection kind.
    pub collection: CollectionType,
    /// Key type of a dictionary column.
    pub key_type: Option<PayloadType>,
}

/// A table's declaration: its kind and its columns (the primary key is not a column here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSchema {
    /// Top-level or embedded.
    pub spec: TableSpec,
    /// Column name to declaration.
    pub columns: BTreeMap<String, ColumnSpec>,
}

/// The whole replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Table name to declaration.
    pub schemas: BTreeMap<String, TableSchema>,
    /// Table name to its top-level objects (embedded tables have no entry of their own).
    pub objects: BTreeMap<String, BTreeMap<Key, Object>>,
}

impl State {
    /// An empty replica.
    pub fn new() -> Self {
        Self::default()
    }

    /// The object with this key, if it exists.
    pub fn object(&self, table: &str, key: &Key) -> Option<&Object> {
        self.objects.get(table)?.get(key)
    }

    /// Number of top-level objects in all tables.
    pub fn object_count(&self) -> usize {
        self.objects.values().map(BTreeMap::len).sum()
    }

    /// A new object of `table` with every column at its default.
    pub fn new_object(&self, table: &str) -> Object {
        new_object(&self.schemas, table)
    }
}

/// Table name to declaration.
pub type Schemas = BTreeMap<String, TableSchema>;

fn is_embedded(schemas: &Schemas, table: &str) -> bool {
    matches!(
        schemas.get(table).map(|s| &s.spec),
        Some(TableSpec::Embedded)
    )
}

fn new_object(schemas: &Schemas, table: &str) -> Object {
    let mut object = Object::default();
    if let Some(schema) = schemas.get(table) {
        for (name, column) in &schema.columns {
            object
                .fields
                .insert(name.clone(), default_field(schemas, column));
        }
    }
    object
}

/// The content a new object (or a new column) starts with: an empty collection, no embedded
/// object, null, or the type's default (Realm's: 0, false, "", ...).
pub(crate) fn default_field(schemas: &Schemas, column: &ColumnSpec) -> Field {
    match column.collection {
        CollectionType::List => Field::List(Vec::new()),
        CollectionType::Set => Field::Set(Vec::new()),
        CollectionType::Dictionary => Field::Dictionary(BTreeMap::new()),
        CollectionType::Single => {
            let embedded = column
                .link_target
                .as_deref()
                .is_some_and(|t| is_embedded(schemas, t));
            if embedded {
                Field::Embedded(None)
            } else if column.nullable
                || matches!(column.value_type, PayloadType::Null | PayloadType::Link)
            {
                Field::Value(Val::Null)
            } else {
                Field::Value(Val::default_for(column.value_type))
            }
        }
    }
}

impl std::fmt::Display for ColumnSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::changeset::CollectionType;
        match self.collection {
            CollectionType::Single => {}
            CollectionType::List => f.write_str("list of ")?,
            CollectionType::Set => f.write_str("set of ")?,
            CollectionType::Dictionary => f.write_str("dictionary of ")?,
        }
        match &self.link_target {
            Some(target) => write!(f, "link to {target}")?,
            None => f.write_str(type_name(self.value_type))?,
        }
        if self.nullable {
            f.write_str("?")?;
        }
        Ok(())
    }
}

/// A value type's name as Realm's schema spells it, for messages (`"int"`, `"objectId"`,
/// `"decimal128"`; `"mixed"` for `Null`, the mixed column type).
pub(crate) fn type_name(t: crate::changeset::PayloadType) -> &'static str {
    use crate::changeset::PayloadType;
    match t {
        PayloadType::Null => "mixed",
        PayloadType::Int => "int",
        PayloadType::Bool => "bool",
        PayloadType::String => "string",
        PayloadType::Binary => "binary",
        PayloadType::Timestamp => "timestamp",
        PayloadType::Float => "float",
        PayloadType::Double => "double",
        PayloadType::Decimal => "decimal128",
        PayloadType::Link => "link",
        PayloadType::ObjectId => "objectId",
        PayloadType::Uuid => "uuid",
        _ => "collection",
    }
}

#[cfg(test)]
mod column_display_tests {
    use super::ColumnSpec;
    use crate::changeset::{CollectionType, PayloadType};

    /// Columns read in messages as Realm's schema spells property types.
    #[test]
    fn columns_display_as_property_types() {
        let column = |value_type, link: Option<&str>, nullable, collection| ColumnSpec {
            value_type,
            link_target: link.map(str::to_owned),
            nullable,
            collection,
            key_type: None,
        };
        for (spec, text) in [
            (
                column(PayloadType::Uuid, None, false, CollectionType::Single),
                "uuid",
            ),
            (
                column(PayloadType::String, None, true, CollectionType::List),
                "list of string?",
            ),
            (
                column(
                    PayloadType::Link,
                    Some("Person"),
                    true,
                    CollectionType::Single,
                ),
                "link to Person?",
            ),
            (
                column(PayloadType::Null, None, true, CollectionType::Dictionary),
                "dictionary of mixed?",
            ),
            (
                column(PayloadType::Decimal, None, false, CollectionType::Set),
                "set of decimal128",
            ),
        ] {
            assert_eq!(spec.to_string(), text);
        }
    }
}
