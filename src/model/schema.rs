//! The schema an app declares: classes, their properties and primary keys, and the rules a
//! schema must satisfy before any data is written with it.
//!
//! Validation happens once, in [`Schema::new`]; everything downstream (store, changesets, sync)
//! may assume a [`Schema`] is well formed.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

/// Longest class name, in bytes. Realm stores tables as `class_<name>` under a 63-byte limit.
pub const MAX_CLASS_NAME_LEN: usize = 57;
/// Longest property name, in bytes (Realm's column name limit).
pub const MAX_PROPERTY_NAME_LEN: usize = 63;

/// The type of a property, or of the elements of a collection property.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PropertyType {
    /// 64-bit signed integer.
    Int,
    /// Boolean.
    Bool,
    /// UTF-8 string.
    String,
    /// Bytes.
    Binary,
    /// Point in time.
    Timestamp,
    /// 32-bit float.
    Float,
    /// 64-bit float.
    Double,
    /// decimal128.
    Decimal,
    /// 12-byte object id.
    ObjectId,
    /// UUID.
    Uuid,
    /// Link to an object of another class (`link_target` names it).
    Link,
    /// Any value of the types above, or null.
    Mixed,
}

impl PropertyType {
    /// Every property type, in declaration order.
    pub const ALL: [PropertyType; 12] = [
        PropertyType::Int,
        PropertyType::Bool,
        PropertyType::String,
        PropertyType::Binary,
        PropertyType::Timestamp,
        PropertyType::Float,
        PropertyType::Double,
        PropertyType::Decimal,
        PropertyType::ObjectId,
        PropertyType::Uuid,
        PropertyType::Link,
        PropertyType::Mixed,
    ];

    /// The lower-case name used in schema declarations and messages (`"int"`, `"objectId"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            PropertyType::Int => "int",
            PropertyType::Bool => "bool",
            PropertyType::String => "string",
            PropertyType::Binary => "binary",
            PropertyType::Timestamp => "timestamp",
            PropertyType::Float => "float",
            PropertyType::Double => "double",
            PropertyType::Decimal => "decimal128",
            PropertyType::ObjectId => "objectId",
            PropertyType::Uuid => "uuid",
            PropertyType::Link => "link",
            PropertyType::Mixed => "mixed",
        }
    }

    /// Whether a property of this type may have a search index ([`Property::indexed`]).
    pub fn can_be_indexed(self) -> bool {
        matches!(
            self,
            PropertyType::Int
                | PropertyType::Bool
                | PropertyType::String
                | PropertyType::Timestamp
                | PropertyType::ObjectId
                | PropertyType::Uuid
        )
    }

    /// Whether a primary key may have this type.
    pub fn can_be_primary_key(self) -> bool {
        matches!(
            self,
            PropertyType::Int | PropertyType::String | PropertyType::ObjectId | PropertyType::Uuid
        )
    }
}

impl fmt::Display for PropertyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PropertyType {
    type Err = SchemaError;

    /// Parses the names [`PropertyType::name`] gives, case-insensitively (`"date"` is accepted
    /// for timestamp, `"decimal"` for decimal128, `"object"` for link, as Realm SDKs spell them).
    fn from_str(s: &str) -> Result<Self, SchemaError> {
        let lower = s.to_ascii_lowercase();
        let found = match lower.as_str() {
            "date" => Some(PropertyType::Timestamp),
            "decimal" => Some(PropertyType::Decimal),
            "object" => Some(PropertyType::Link),
            _ => PropertyType::ALL
                .into_iter()
                .find(|t| t.name().eq_ignore_ascii_case(&lower)),
        };
        found.ok_or_else(|| SchemaError::UnknownType {
            type_name: s.to_string(),
        })
    }
}

/// Whether a property holds one value or a collection of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CollectionKind {
    /// One value.
    Single,
    /// An ordered list, duplicates allowed.
    List,
    /// An unordered set of distinct values.
    Set,
    /// A map from string keys to values.
    Dictionary,
}

impl fmt::Display for CollectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CollectionKind::Single => "single",
            CollectionKind::List => "list",
            CollectionKind::Set => "set",
            CollectionKind::Dictionary => "dictionary",
        })
    }
}

/// One property of a class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    /// Property name, unique within its class.
    pub name: String,
    /// Value type (element type for collections).
    pub property_type: PropertyType,
    /// Whether the value (each element, for collections) may be null.
    pub nullable: bool,
    /// Single value, list, set or dictionary.
    pub collection: CollectionKind,
    /// The class a link property points to; `None` for every other type.
    pub link_target: Option<String>,
    /// Whether queries on it use a search index (Realm's `@Index` / `indexed: true`): only
    /// for a single `int`, `bool`, `string`, `timestamp`, `objectId` or `uuid` property, the
    /// types realm-core indexes (`Table::add_search_index`) but mixed, whose comparisons the
    /// store makes by a function no index can serve. The index is local
    /// to each file (Realm's changesets carry no index either); a primary key is always
    /// indexed. Adding or removing it on an existing property is an additive change: the file
    /// gets or drops the index at open.
    pub indexed: bool,
}

impl Property {
    /// A single, non-nullable property of a non-link type.
    pub fn new(name: impl Into<String>, property_type: PropertyType) -> Self {
        Property {
            name: name.into(),
            property_type,
            nullable: property_type == PropertyType::Mixed,
            collection: CollectionKind::Single,
            link_target: None,
            indexed: false,
        }
    }

    /// A single link to an object of `target` (nullable, as single links always are).
    pub fn link(name: impl Into<String>, target: impl Into<String>) -> Self {
        Property {
            name: name.into(),
            property_type: PropertyType::Link,
            nullable: true,
            collection: CollectionKind::Single,
            link_target: Some(target.into()),
            indexed: false,
        }
    }

    /// Makes the property nullable.
    pub fn nullable(mut self) -> Self {
        self.nullable = true;
        self
    }

    /// Gives the property a search index (see [`Property::indexed`]).
    pub fn indexed(mut self) -> Self {
        self.indexed = true;
        self
    }

    /// Turns the property into a collection of its type.
    pub fn collection(mut self, kind: CollectionKind) -> Self {
        self.collection = kind;
        if self.property_type == PropertyType::Link {
            // Links inside lists and sets are never null; a dictionary value may be.
            self.nullable = kind == CollectionKind::Dictionary || kind == CollectionKind::Single;
        }
        self
    }
}

/// One class (table) of a schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassSchema {
    /// Class name, unique within the schema.
    pub name: String,
    /// Embedded classes have no identity of their own: each object lives inside exactly one
    /// parent, reached through a link property of that parent.
    pub embedded: bool,
    /// Name of the primary key property. Every top-level class has one (sync identifies objects
    /// by it); an embedded class has none.
    pub primary_key: Option<String>,
    /// The properties, primary key included.
    pub properties: Vec<Property>,
}

impl ClassSchema {
    /// A top-level class with the given primary key property name.
    pub fn top_level(
        name: impl Into<String>,
        primary_key: impl Into<String>,
        properties: Vec<Property>,
    ) -> Self {
        ClassSchema {
            name: name.into(),
            embedded: false,
            primary_key: Some(primary_key.into()),
            properties,
        }
    }

    /// An embedded class.
    pub fn embedded(name: impl Into<String>, properties: Vec<Property>) -> Self {
        ClassSchema {
            name: name.into(),
            embedded: true,
            primary_key: None,
            properties,
        }
    }

    /// The property with this name, if any.
    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name == name)
    }

    /// The primary key property of a top-level class.
    pub fn primary_key_property(&self) -> Option<&Property> {
        self.primary_key.as_deref().and_then(|pk| self.property(pk))
    }
}

/// A validated set of classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    classes: Vec<ClassSchema>,
}

impl Schema {
    /// Validates the classes and builds a schema.
    ///
    /// ```
    /// use tandem::model::{ClassSchema, CollectionKind, Property, PropertyType, Schema};
    /// let schema = Schema::new(vec![
    ///     ClassSchema::top_level("Person", "_id", vec![
    ///         Property::new("_id", PropertyType::Int),
    ///         Property::new("name", PropertyType::String),
    ///         Property::link("dogs", "Dog").collection(CollectionKind::List),
    ///     ]),
    ///     ClassSchema::top_level("Dog", "_id", vec![Property::new("_id", PropertyType::String)]),
    /// ])
    /// .unwrap();
    /// assert!(schema.class("Dog").is_some());
    ///
    /// let err = Schema::new(vec![ClassSchema::top_level("Cat", "_id", vec![
    ///     Property::new("_id", PropertyType::Int),
    ///     Property::link("owner", "Nobody"),
    /// ])])
    /// .unwrap_err();
    /// assert_eq!(err.to_string(), "Cat.owner links to class 'Nobody', which is not in the schema");
    /// ```
    pub fn new(classes: Vec<ClassSchema>) -> Result<Self, SchemaError> {
        let mut names = HashSet::new();
        for class in &classes {
            check_name(&class.name, MAX_CLASS_NAME_LEN, || {
                SchemaError::InvalidClassName {
                    class: class.name.clone(),
                }
            })?;
            if !names.insert(class.name.as_str()) {
                return Err(SchemaError::DuplicateClass {
                    class: class.name.clone(),
                });
            }
        }
        if let Some((class, other)) = differing_in_case(classes.iter().map(|c| c.name.as_str())) {
            return Err(SchemaError::ClassNamesDifferInCaseOnly { class, other });
        }
        for class in &classes {
            validate_class(class, &classes)?;
        }
        if let Some(clash) = storage_name_clash(&classes) {
            return Err(clash);
        }
        Ok(Schema { classes })
    }

    /// The classes, in declaration order.
    pub fn classes(&self) -> &[ClassSchema] {
        &self.classes
    }

    /// The class with this name, if any.
    pub fn class(&self, name: &str) -> Option<&ClassSchema> {
        self.classes.iter().find(|c| c.name == name)
    }
}

/// The first two of `names` (distinct) that are equal ignoring ASCII case, in declaration order:
/// SQLite's table and column names ignore ASCII case (<https://www.sqlite.org/lang_keywords.html>),
/// so the store cannot keep such names apart, though Realm's are case-sensitive.
fn differing_in_case<'a>(names: impl Iterator<Item = &'a str>) -> Option<(String, String)> {
    let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for name in names {
        if let Some(first) = seen.insert(name.to_ascii_lowercase(), name) {
            return Some((first.to_owned(), name.to_owned()));
        }
    }
    None
}

/// The first two properties whose SQLite objects would share a name: the store names a
/// collection property's table `"l:"`, `"s:"` or `"d:"` and an indexed property's search index
/// `"x:"`, then `<Class>:<property>` (`store::layout`), so with a `:` inside a name two
/// properties of one kind can spell one name, ASCII case ignored as SQLite ignores it.
fn storage_name_clash(classes: &[ClassSchema]) -> Option<SchemaError> {
    let mut seen: std::collections::HashMap<String, (&str, &str)> = Default::default();
    for class in classes {
        for property in &class.properties {
            // Only names with a `:` inside can be spelled two ways.
            if !class.name.contains(':') && !property.name.contains(':') {
                continue;
            }
            use crate::changeset::CollectionType;
            use crate::store::layout::{collection_table_name, search_index_name};
            let (class_name, prop) = (class.name.as_str(), property.name.as_str());
            let table = match property.collection {
                CollectionKind::Single => None,
                CollectionKind::List => Some(CollectionType::List),
                CollectionKind::Set => Some(CollectionType::Set),
                CollectionKind::Dictionary => Some(CollectionType::Dictionary),
            };
            let table = table.map(|kind| collection_table_name(class_name, prop, kind));
            let is_key = class.primary_key.as_deref() == Some(prop);
            let index = (property.indexed && !is_key).then(|| search_index_name(class_name, prop));
            for name in table.into_iter().chain(index) {
                let here = (class_name, prop);
                if let Some((other_class, other_property)) =
                    seen.insert(name.to_ascii_lowercase(), here)
                {
                    return Some(SchemaError::StorageNamesClash {
                        class: other_class.to_owned(),
                        property: other_property.to_owned(),
                        other_class: class.name.clone(),
                        other_property: property.name.clone(),
                        name,
                    });
                }
            }
        }
    }
    None
}

fn check_name(name: &str, max: usize, err: impl Fn() -> SchemaError) -> Result<(), SchemaError> {
    if name.is_empty() || name.len() > max || name.chars().any(char::is_control) {
        Err(err())
    } else {
        Ok(())
    }
}

fn validate_class(class: &ClassSchema, all: &[ClassSchema]) -> Result<(), SchemaError> {
    let mut seen = HashSet::new();
    for property in &class.properties {
        check_name(&property.name, MAX_PROPERTY_NAME_LEN, || {
            SchemaError::InvalidPropertyName {
                class: class.name.clone(),
                property: property.name.clone(),
            }
        })?;
        if !seen.insert(property.name.as_str()) {
            return Err(SchemaError::DuplicateProperty {
                class: class.name.clone(),
                property: property.name.clone(),
            });
        }
        validate_property(class, property, all)?;
    }
    let names = class.properties.iter().map(|p| p.name.as_str());
    if let Some((property, other)) = differing_in_case(names) {
        return Err(SchemaError::PropertyNamesDifferInCaseOnly {
            class: class.name.clone(),
            property,
            other,
        });
    }
    match (class.embedded, &class.primary_key) {
        (true, Some(pk)) => Err(SchemaError::EmbeddedWithPrimaryKey {
            class: class.name.clone(),
            property: pk.clone(),
        }),
        (true, None) => Ok(()),
        (false, None) => Err(SchemaError::MissingPrimaryKey {
            class: class.name.clone(),
            property: None,
        }),
        (false, Some(primary_key)) => {
            let pk = class
                .property(primary_key)
                .ok_or_else(|| SchemaError::MissingPrimaryKey {
                    class: class.name.clone(),
                    property: Some(primary_key.clone()),
                })?;
            if !pk.property_type.can_be_primary_key() || pk.collection != CollectionKind::Single {
                return Err(SchemaError::InvalidPrimaryKeyType {
                    class: class.name.clone(),
                    property: pk.name.clone(),
                    property_type: pk.property_type,
                    collection: pk.collection,
                });
            }
            Ok(())
        }
    }
}

fn validate_property(
    class: &ClassSchema,
    property: &Property,
    all: &[ClassSchema],
) -> Result<(), SchemaError> {
    let err = |rule: &'static str| SchemaError::InvalidProperty {
        class: class.name.clone(),
        property: property.name.clone(),
        rule,
    };
    match (&property.link_target, property.property_type) {
        (None, PropertyType::Link) => return Err(err("a link property needs a target class")),
        (Some(_), t) if t != PropertyType::Link => {
            return Err(err("only link properties have a target class"))
        }
        (Some(target), _) => {
            let target_class = all.iter().find(|c| &c.name == target).ok_or_else(|| {
                SchemaError::MissingLinkTarget {
                    class: class.name.clone(),
                    property: property.name.clone(),
                    target: target.clone(),
                }
            })?;
            let embedded = target_class.embedded;
            match property.collection {
                CollectionKind::Single if !property.nullable => {
                    return Err(err(
                        "a single link must be nullable: deleting its target clears it",
                    ))
                }
                CollectionKind::List | CollectionKind::Set if property.nullable => {
                    return Err(err("links in a list or set cannot be null"))
                }
                CollectionKind::Set if embedded => {
                    return Err(err("a set cannot hold embedded objects"))
                }
                _ => {}
            }
        }
        (None, PropertyType::Mixed) if !property.nullable => {
            return Err(err("a mixed property is always nullable"))
        }
        (None, _) => {}
    }
    if property.indexed {
        if property.collection != CollectionKind::Single {
            return Err(err("only a single value can be indexed, not a collection"));
        }
        if !property.property_type.can_be_indexed() {
            return Err(err(
                "only int, bool, string, timestamp, objectId and uuid properties can be indexed",
            ));
        }
    }
    Ok(())
}

/// Why a schema was refused. Every variant names the class (and property) at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaError {
    /// A type name that is not one of [`PropertyType`]'s names.
    UnknownType {
        /// The name given.
        type_name: String,
    },
    /// Two classes share a name.
    DuplicateClass {
        /// The repeated name.
        class: String,
    },
    /// Two class names differ only in ASCII case (`Dog`, `dog`). Realm keeps them apart; the
    /// store's SQLite tables cannot, since SQLite's names ignore ASCII case.
    ClassNamesDifferInCaseOnly {
        /// The first declared.
        class: String,
        /// The other.
        other: String,
    },
    /// Two property names of one class differ only in ASCII case (`name`, `Name`), which the
    /// store's SQLite columns cannot keep apart.
    PropertyNamesDifferInCaseOnly {
        /// The class.
        class: String,
        /// The first declared.
        property: String,
        /// The other.
        other: String,
    },
    /// Two properties would be stored under one SQLite name: a collection's table or a search
    /// index is named by its class and property joined with `:` (`"l:A:b:c"` is both `A.b:c`'s
    /// list and `A:b.c`'s), ASCII case ignored.
    StorageNamesClash {
        /// The class of the first declared.
        class: String,
        /// The first declared.
        property: String,
        /// The class of the other.
        other_class: String,
        /// The other.
        other_property: String,
        /// The SQLite name both would have.
        name: String,
    },
    /// A class name is empty, too long or has control characters.
    InvalidClassName {
        /// The name given.
        class: String,
    },
    /// A property name is empty, too long or has control characters.
    InvalidPropertyName {
        /// The class.
        class: String,
        /// The name given.
        property: String,
    },
    /// Two properties of one class share a name.
    DuplicateProperty {
        /// The class.
        class: String,
        /// The repeated name.
        property: String,
    },
    /// A top-level class names no primary key, or one it does not have.
    MissingPrimaryKey {
        /// The class.
        class: String,
        /// The primary key name given, if any.
        property: Option<String>,
    },
    /// A primary key of a type that cannot be one, or a collection.
    InvalidPrimaryKeyType {
        /// The class.
        class: String,
        /// The primary key property.
        property: String,
        /// Its type.
        property_type: PropertyType,
        /// Its collection kind.
        collection: CollectionKind,
    },
    /// An embedded class declares a primary key.
    EmbeddedWithPrimaryKey {
        /// The class.
        class: String,
        /// The offending property.
        property: String,
    },
    /// A link property targets a class that is not in the schema.
    MissingLinkTarget {
        /// The class.
        class: String,
        /// The link property.
        property: String,
        /// The missing target.
        target: String,
    },
    /// A property breaks a rule about links, nullability or collections.
    InvalidProperty {
        /// The class.
        class: String,
        /// The property.
        property: String,
        /// The rule it breaks.
        rule: &'static str,
    },
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaError::UnknownType { type_name } => write!(
                f,
                "unknown property type '{type_name}'; expected one of: {}",
                PropertyType::ALL.map(PropertyType::name).join(", ")
            ),
            SchemaError::DuplicateClass { class } => {
                write!(f, "class '{class}' is declared twice")
            }
            SchemaError::ClassNamesDifferInCaseOnly { class, other } => write!(
                f,
                "classes '{class}' and '{other}' differ only in ASCII case, which Tandem cannot \
                 keep apart (SQLite's table names ignore it); rename one"
            ),
            SchemaError::PropertyNamesDifferInCaseOnly {
                class,
                property,
                other,
            } => write!(
                f,
                "{class}: properties '{property}' and '{other}' differ only in ASCII case, which \
                 Tandem cannot keep apart (SQLite's column names ignore it); rename one"
            ),
            SchemaError::StorageNamesClash {
                class,
                property,
                other_class,
                other_property,
                name,
            } => write!(
                f,
                "{class}.{property} and {other_class}.{other_property} would both be stored as \
                 SQLite's '{name}' (class and property names are joined with ':', and SQLite \
                 ignores ASCII case); rename one"
            ),
            SchemaError::InvalidClassName { class } => write!(
                f,
                "class name '{class}' must be 1 to {MAX_CLASS_NAME_LEN} bytes without control \
                 characters"
            ),
            SchemaError::InvalidPropertyName { class, property } => write!(
                f,
                "{class}: property name '{property}' must be 1 to {MAX_PROPERTY_NAME_LEN} bytes \
                 without control characters"
            ),
            SchemaError::DuplicateProperty { class, property } => {
                write!(f, "{class}.{property} is declared twice")
            }
            SchemaError::MissingPrimaryKey {
                class,
                property: Some(property),
            } => write!(
                f,
                "{class} names '{property}' as its primary key but has no such property"
            ),
            SchemaError::MissingPrimaryKey {
                class,
                property: None,
            } => write!(
                f,
                "{class} has no primary key; every top-level class needs one (int, string, \
                 objectId or uuid), or declare it embedded"
            ),
            SchemaError::InvalidPrimaryKeyType {
                class,
                property,
                property_type,
                collection,
            } => write!(
                f,
                "{class}.{property} cannot be a primary key: it is a {collection} of \
                 {property_type}; a primary key is a single int, string, objectId or uuid"
            ),
            SchemaError::EmbeddedWithPrimaryKey { class, property } => write!(
                f,
                "{class} is embedded but declares primary key '{property}'; embedded objects \
                 are identified by their parent"
            ),
            SchemaError::MissingLinkTarget {
                class,
                property,
                target,
            } => write!(
                f,
                "{class}.{property} links to class '{target}', which is not in the schema"
            ),
            SchemaError::InvalidProperty {
                class,
                property,
                rule,
            } => write!(f, "{class}.{property}: {rule}"),
        }
    }
}

impl std::error::Error for SchemaError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(props: Vec<Property>) -> ClassSchema {
        let mut all = vec![Property::new("_id", PropertyType::Int)];
        all.extend(props);
        ClassSchema::top_level("Person", "_id", all)
    }

    #[test]
    fn accepts_every_type_in_every_collection() {
        let mut props = Vec::new();
        for t in PropertyType::ALL {
            for kind in [
                CollectionKind::Single,
                CollectionKind::List,
                CollectionKind::Set,
                CollectionKind::Dictionary,
            ] {
                let name = format!("{t}_{kind}");
                let p = if t == PropertyType::Link {
                    Property::link(name, "Person").collection(kind)
                } else {
                    Property::new(name, t).collection(kind)
                };
                props.push(p);
            }
        }
        let schema = Schema::new(vec![person(props)]).unwrap();
        assert_eq!(schema.classes()[0].properties.len(), 1 + 12 * 4);
    }

    #[test]
    fn unknown_type_names_the_choices() {
        let err = "integer".parse::<PropertyType>().unwrap_err();
        assert!(err
            .to_string()
            .starts_with("unknown property type 'integer'; expected one of: int, bool"));
        assert_eq!(
            "objectid".parse::<PropertyType>().unwrap(),
            PropertyType::ObjectId
        );
        assert_eq!(
            "Date".parse::<PropertyType>().unwrap(),
            PropertyType::Timestamp
        );
    }

    #[test]
    fn duplicate_property_and_class() {
        let err = Schema::new(vec![person(vec![Property::new(
            "_id",
            PropertyType::String,
        )])])
        .unwrap_err();
        assert_eq!(err.to_string(), "Person._id is declared twice");
        let err = Schema::new(vec![person(vec![]), person(vec![])]).unwrap_err();
        assert_eq!(
            err,
            SchemaError::DuplicateClass {
                class: "Person".into()
            }
        );
    }

    /// Names equal but for ASCII case are refused by name; other case differences (`é`, `É`:
    /// SQLite folds ASCII only) and distinct names are not.
    /// Two properties whose collection tables or search indexes would share a SQLite name
    /// (names joined with `:`, ASCII case ignored) are refused by name; the same names in
    /// different kinds of object, or without a `:` to split differently, are not.
    #[test]
    fn properties_stored_under_one_sqlite_name_are_refused() {
        let class = |name: &str, property: Property| {
            ClassSchema::top_level(
                name,
                "_id",
                vec![Property::new("_id", PropertyType::Int), property],
            )
        };
        let list =
            |name: &str| Property::new(name, PropertyType::Int).collection(CollectionKind::List);
        let indexed = |name: &str| Property::new(name, PropertyType::String).indexed();
        let err = Schema::new(vec![class("A", list("b:c")), class("A:b", list("c"))]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "A.b:c and A:b.c would both be stored as SQLite's 'l:A:b:c' (class and property \
             names are joined with ':', and SQLite ignores ASCII case); rename one"
        );
        let err =
            Schema::new(vec![class("a:B", indexed("c")), class("A", indexed("b:C"))]).unwrap_err();
        assert_eq!(
            err,
            SchemaError::StorageNamesClash {
                class: "a:B".into(),
                property: "c".into(),
                other_class: "A".into(),
                other_property: "b:C".into(),
                name: "x:A:b:C".into(),
            }
        );
        let set = Property::new("c", PropertyType::Int).collection(CollectionKind::Set);
        assert!(Schema::new(vec![class("A", list("b:c")), class("A:b", set)]).is_ok());
        assert!(Schema::new(vec![class("A", list("b:c")), class("A:b", indexed("c"))]).is_ok());
        assert!(Schema::new(vec![class("A", list("bc")), class("Ab", list("c"))]).is_ok());
    }

    #[test]
    fn names_differing_only_in_ascii_case() {
        let dog = |name: &str| {
            ClassSchema::top_level(name, "_id", vec![Property::new("_id", PropertyType::Int)])
        };
        let err = Schema::new(vec![dog("Dog"), dog("Cat"), dog("dOG")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "classes 'Dog' and 'dOG' differ only in ASCII case, which Tandem cannot keep apart \
             (SQLite's table names ignore it); rename one"
        );
        let err = Schema::new(vec![person(vec![
            Property::new("name", PropertyType::String),
            Property::new("Name", PropertyType::String),
        ])])
        .unwrap_err();
        assert_eq!(
            err,
            SchemaError::PropertyNamesDifferInCaseOnly {
                class: "Person".into(),
                property: "name".into(),
                other: "Name".into(),
            }
        );
        assert!(Schema::new(vec![dog("É"), dog("é"), dog("Dogs")]).is_ok());
    }

    #[test]
    fn embedded_class_with_primary_key() {
        let mut address =
            ClassSchema::embedded("Address", vec![Property::new("_id", PropertyType::Int)]);
        assert!(Schema::new(vec![address.clone()]).is_ok());
        address.primary_key = Some("_id".into());
        let err = Schema::new(vec![address]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Address is embedded but declares primary key '_id'; embedded objects are \
             identified by their parent"
        );
    }

    #[test]
    fn top_level_class_without_primary_key() {
        let mut class = person(vec![]);
        class.primary_key = None;
        assert_eq!(
            Schema::new(vec![class]).unwrap_err(),
            SchemaError::MissingPrimaryKey {
                class: "Person".into(),
                property: None
            }
        );
    }

    #[test]
    fn primary_key_rules() {
        let missing = ClassSchema::top_level("A", "id", vec![]);
        assert!(matches!(
            Schema::new(vec![missing]).unwrap_err(),
            SchemaError::MissingPrimaryKey { .. }
        ));
        let bad =
            ClassSchema::top_level("A", "id", vec![Property::new("id", PropertyType::Double)]);
        assert_eq!(
            Schema::new(vec![bad]).unwrap_err().to_string(),
            "A.id cannot be a primary key: it is a single of double; a primary key is a single \
             int, string, objectId or uuid"
        );
        let nullable = ClassSchema::top_level(
            "A",
            "id",
            vec![Property::new("id", PropertyType::String).nullable()],
        );
        assert!(Schema::new(vec![nullable]).is_ok());
    }

    #[test]
    fn link_rules() {
        let no_target = Property {
            link_target: None,
            ..Property::link("l", "Person")
        };
        assert!(Schema::new(vec![person(vec![no_target])]).is_err());
        let mut required = Property::link("l", "Person");
        required.nullable = false;
        assert!(Schema::new(vec![person(vec![required])]).is_err());
        let embedded_set = Property::link("s", "Address").collection(CollectionKind::Set);
        let err = Schema::new(vec![
            person(vec![embedded_set]),
            ClassSchema::embedded(
                "Address",
                vec![Property::new("street", PropertyType::String)],
            ),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Person.s: a set cannot hold embedded objects"
        );
        let target_on_int = Property {
            link_target: Some("Person".into()),
            ..Property::new("i", PropertyType::Int)
        };
        assert!(Schema::new(vec![person(vec![target_on_int])]).is_err());
    }

    #[test]
    fn names_are_bounded() {
        let long = "x".repeat(MAX_CLASS_NAME_LEN + 1);
        let class =
            ClassSchema::top_level(long, "_id", vec![Property::new("_id", PropertyType::Int)]);
        assert!(matches!(
            Schema::new(vec![class]).unwrap_err(),
            SchemaError::InvalidClassName { .. }
        ));
        let mut mixed = Property::new("m", PropertyType::Mixed);
        mixed.nullable = false;
        assert!(Schema::new(vec![person(vec![mixed])]).is_err());
    }
}
