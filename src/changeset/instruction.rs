//! The instruction set of a changeset, field for field as Realm's sync format defines it.
//!
//! Strings that name things (tables, fields, string primary keys, dictionary keys, link
//! targets) are [`InternString`] indices into the changeset's string table; string and binary
//! *values* are carried inline.

pub use compact_str::CompactString;

use crate::model::{Decimal128, ObjectId, Timestamp, Uuid};

/// Index of a string in a changeset's string table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct InternString(pub u32);

/// Identity of an object generated from a client file ident and a sequence number, used by
/// Realm for tables without a primary key. Tandem never creates such tables but decodes and
/// re-encodes their keys faithfully.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GlobalKey {
    /// High 64 bits.
    pub hi: u64,
    /// Low 64 bits.
    pub lo: u64,
}

/// Payload type codes, as written on the wire (a signed varint).
///
/// The negative codes are the special payloads: they carry no data (except `GlobalKey`) and
/// mean something to the applier (create an embedded object, erase a dictionary entry, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PayloadType {
    /// -6: an empty set created in a mixed property.
    Set,
    /// -5: an empty list created in a mixed property.
    List,
    /// -4: erase a dictionary entry.
    Erased,
    /// -3: an empty dictionary created in a mixed property.
    Dictionary,
    /// -2: create an embedded object (idempotent).
    ObjectValue,
    /// -1: a global key.
    GlobalKey,
    /// 0: null (as a column type: mixed).
    Null,
    /// 1
    Int,
    /// 2
    Bool,
    /// 3
    String,
    /// 4
    Binary,
    /// 5
    Timestamp,
    /// 6
    Float,
    /// 7
    Double,
    /// 8
    Decimal,
    /// 9
    Link,
    /// 10
    ObjectId,
    /// 11
    Uuid,
}

impl PayloadType {
    /// Every payload type, by ascending wire code.
    pub const ALL: [PayloadType; 18] = [
        PayloadType::Set,
        PayloadType::List,
        PayloadType::Erased,
        PayloadType::Dictionary,
        PayloadType::ObjectValue,
        PayloadType::GlobalKey,
        PayloadType::Null,
        PayloadType::Int,
        PayloadType::Bool,
        PayloadType::String,
        PayloadType::Binary,
        PayloadType::Timestamp,
        PayloadType::Float,
        PayloadType::Double,
        PayloadType::Decimal,
        PayloadType::Link,
        PayloadType::ObjectId,
        PayloadType::Uuid,
    ];

    /// The wire code.
    pub fn code(self) -> i64 {
        match self {
            PayloadType::Set => -6,
            PayloadType::List => -5,
            PayloadType::Erased => -4,
            PayloadType::Dictionary => -3,
            PayloadType::ObjectValue => -2,
            PayloadType::GlobalKey => -1,
            PayloadType::Null => 0,
            PayloadType::Int => 1,
            PayloadType::Bool => 2,
            PayloadType::String => 3,
            PayloadType::Binary => 4,
            PayloadType::Timestamp => 5,
            PayloadType::Float => 6,
            PayloadType::Double => 7,
            PayloadType::Decimal => 8,
            PayloadType::Link => 9,
            PayloadType::ObjectId => 10,
            PayloadType::Uuid => 11,
        }
    }

    /// The type with this wire code, if any.
    pub fn from_code(code: i64) -> Option<Self> {
        // Codes are dense from -6 to 11, so the table index is `code + 6`.
        let index = usize::try_from(code.checked_add(6)?).ok()?;
        PayloadType::ALL.get(index).copied()
    }

    /// Whether Realm accepts this type for a primary key (`AddTable`).
    pub fn is_valid_primary_key_type(self) -> bool {
        matches!(
            self,
            PayloadType::Int
                | PayloadType::String
                | PayloadType::ObjectId
                | PayloadType::Uuid
                | PayloadType::GlobalKey
        )
    }
}

/// The value an instruction writes.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Payload {
    /// Create an empty set in a mixed property.
    Set,
    /// Create an empty list in a mixed property.
    List,
    /// Erase a dictionary entry.
    Erased,
    /// Create an empty dictionary in a mixed property.
    Dictionary,
    /// Create an embedded object if there is none.
    ObjectValue,
    /// A global key (hi, lo). realm-core writes but never reads this as a payload; Tandem reads
    /// it too, so that every payload type round-trips.
    GlobalKey(GlobalKey),
    /// Null.
    Null,
    /// Integer.
    Int(i64),
    /// Boolean.
    Bool(bool),
    /// String, carried inline. Up to 24 bytes (12 on 32-bit targets) are held in the value
    /// itself, without an allocation ([`CompactString`]; it derefs to `str`, and `String` and
    /// `&str` convert into it with `into()`).
    String(CompactString),
    /// Bytes, carried inline.
    Binary(Vec<u8>),
    /// Timestamp.
    Timestamp(#[cfg_attr(feature = "serde", serde(with = "serde_timestamp"))] Timestamp),
    /// 32-bit float (compared by bits).
    Float(f32),
    /// 64-bit float (compared by bits).
    Double(f64),
    /// decimal128.
    Decimal(#[cfg_attr(feature = "serde", serde(with = "serde_decimal"))] Decimal128),
    /// Link to an object.
    Link(Link),
    /// Object id.
    ObjectId(#[cfg_attr(feature = "serde", serde(with = "serde_object_id"))] ObjectId),
    /// UUID.
    Uuid(#[cfg_attr(feature = "serde", serde(with = "serde_uuid"))] Uuid),
}

impl Payload {
    /// The payload's type code.
    pub fn payload_type(&self) -> PayloadType {
        match self {
            Payload::Set => PayloadType::Set,
            Payload::List => PayloadType::List,
            Payload::Erased => PayloadType::Erased,
            Payload::Dictionary => PayloadType::Dictionary,
            Payload::ObjectValue => PayloadType::ObjectValue,
            Payload::GlobalKey(_) => PayloadType::GlobalKey,
            Payload::Null => PayloadType::Null,
            Payload::Int(_) => PayloadType::Int,
            Payload::Bool(_) => PayloadType::Bool,
            Payload::String(_) => PayloadType::String,
            Payload::Binary(_) => PayloadType::Binary,
            Payload::Timestamp(_) => PayloadType::Timestamp,
            Payload::Float(_) => PayloadType::Float,
            Payload::Double(_) => PayloadType::Double,
            Payload::Decimal(_) => PayloadType::Decimal,
            Payload::Link(_) => PayloadType::Link,
            Payload::ObjectId(_) => PayloadType::ObjectId,
            Payload::Uuid(_) => PayloadType::Uuid,
        }
    }
}

impl PartialEq for Payload {
    /// Structural equality; floats compare by bit pattern so that a decoded payload always
    /// equals the one that was encoded, NaN included.
    fn eq(&self, other: &Self) -> bool {
        use Payload::*;
        match (self, other) {
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (Double(a), Double(b)) => a.to_bits() == b.to_bits(),
            (GlobalKey(a), GlobalKey(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (Bool(a), Bool(b)) => a == b,
            (String(a), String(b)) => a == b,
            (Binary(a), Binary(b)) => a == b,
            (Timestamp(a), Timestamp(b)) => a == b,
            (Decimal(a), Decimal(b)) => a == b,
            (Link(a), Link(b)) => a == b,
            (ObjectId(a), ObjectId(b)) => a == b,
            (Uuid(a), Uuid(b)) => a == b,
            (a, b) => {
                let data_free = |p: &Payload| {
                    matches!(p, Set | List | Erased | Dictionary | ObjectValue | Null)
                };
                data_free(a) && a.payload_type() == b.payload_type()
            }
        }
    }
}

impl Eq for Payload {}

/// A link payload: target table, then target primary key (Realm's wire order).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Link {
    /// The target table.
    pub target_table: InternString,
    /// The target object.
    pub target: PrimaryKey,
}

/// The primary key of the object an instruction addresses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PrimaryKey {
    /// Null key (nullable primary key).
    Null,
    /// Integer key.
    Int(i64),
    /// String key, interned.
    String(InternString),
    /// Global key of a table without a primary key.
    GlobalKey(GlobalKey),
    /// Object id key.
    ObjectId(#[cfg_attr(feature = "serde", serde(with = "serde_object_id"))] ObjectId),
    /// UUID key.
    Uuid(#[cfg_attr(feature = "serde", serde(with = "serde_uuid"))] Uuid),
}

/// One step of a path below a field: a list index, or an embedded-object field name or
/// dictionary key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PathElement {
    /// Position in a list.
    Index(u32),
    /// Field of an embedded object, or key in a dictionary.
    Key(InternString),
}

/// The steps of a [`FieldPath`] below its field, in order: a vector holding up to two
/// elements inline (one list index, or a key and an index, cover most paths), on the heap
/// beyond that. It derefs to `[PathElement]` and builds like a `Vec`: `Path::new()`,
/// `path.push(..)`, `Path::from(vec![..])` or `smallvec::smallvec![..]`.
pub type Path = smallvec::SmallVec<[PathElement; 2]>;

/// Where a path instruction acts: a field of a top-level object, then a path below it.
///
/// Embedded objects are always addressed through their top-level owner, for example
/// `Person[5].addresses[2].street`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FieldPath {
    /// Table of the top-level object.
    pub table: InternString,
    /// Its primary key.
    pub object: PrimaryKey,
    /// The field of the top-level object.
    pub field: InternString,
    /// Steps below the field (empty for the field itself).
    pub path: Path,
}

impl FieldPath {
    /// The index the path ends in, if it addresses a list element.
    pub fn last_index(&self) -> Option<u32> {
        match self.path.last() {
            Some(PathElement::Index(i)) => Some(*i),
            _ => None,
        }
    }
}

/// The primary key declaration of a top-level table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PrimaryKeySpec {
    /// Name of the primary key field.
    pub field: InternString,
    /// Its type (Int, String, ObjectId, UUID or GlobalKey).
    pub key_type: PayloadType,
    /// Whether the null key is allowed.
    pub nullable: bool,
}

/// What kind of table `AddTable` creates. Wire code: 0 top-level, 1 embedded, 2 top-level
/// asymmetric.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TableKind {
    /// A top-level table with a primary key.
    TopLevel(PrimaryKeySpec),
    /// A top-level asymmetric (write-only, upload-only) table.
    TopLevelAsymmetric(PrimaryKeySpec),
    /// An embedded table.
    Embedded,
}

/// The collection kind of a column (AddColumn) or of the container a `Clear` empties.
/// Wire codes: 0 single, 1 list, 2 dictionary, 3 set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CollectionType {
    /// One value (for `Clear`: a mixed field holding a collection).
    Single,
    /// List.
    List,
    /// Dictionary.
    Dictionary,
    /// Set.
    Set,
}

impl CollectionType {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            CollectionType::Single => 0,
            CollectionType::List => 1,
            CollectionType::Dictionary => 2,
            CollectionType::Set => 3,
        }
    }

    /// The collection type with this wire code, if any.
    pub fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => CollectionType::Single,
            1 => CollectionType::List,
            2 => CollectionType::Dictionary,
            3 => CollectionType::Set,
            _ => return None,
        })
    }
}

/// The value type of a column created by `AddColumn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ColumnType {
    /// Any value (wire type `Null`).
    Mixed,
    /// A plain value type (never one of the special payloads, `Null` or `Link`).
    Value(PayloadType),
    /// A link to the given table.
    Link {
        /// The target table.
        target_table: InternString,
    },
}

impl ColumnType {
    /// The payload type written on the wire for this column type.
    pub fn payload_type(self) -> PayloadType {
        match self {
            ColumnType::Mixed => PayloadType::Null,
            ColumnType::Value(t) => t,
            ColumnType::Link { .. } => PayloadType::Link,
        }
    }
}

/// The collection shape of a column created by `AddColumn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ColumnCollection {
    /// One value.
    Single,
    /// List.
    List,
    /// Set.
    Set,
    /// Dictionary with keys of this type (Realm only uses String).
    Dictionary {
        /// The key type.
        key_type: PayloadType,
    },
}

impl ColumnCollection {
    /// The collection type code written on the wire.
    pub fn collection_type(self) -> CollectionType {
        match self {
            ColumnCollection::Single => CollectionType::Single,
            ColumnCollection::List => CollectionType::List,
            ColumnCollection::Set => CollectionType::Set,
            ColumnCollection::Dictionary { .. } => CollectionType::Dictionary,
        }
    }
}

/// `AddTable`: create a table, or confirm an identical one exists.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AddTable {
    /// The table.
    pub table: InternString,
    /// Top-level (with its primary key) or embedded.
    pub kind: TableKind,
}

/// `AddColumn`: create a column, or confirm an identical one exists.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AddColumn {
    /// The table.
    pub table: InternString,
    /// The new column.
    pub field: InternString,
    /// Value type (with link target).
    pub column_type: ColumnType,
    /// Whether values may be null.
    pub nullable: bool,
    /// Single value or collection (with dictionary key type).
    pub collection: ColumnCollection,
}

/// `Update` (Realm's "Set"): write a value to a field, dictionary entry or list element.
///
/// On the wire exactly one of `is_default` and `prior_size` follows the value: `prior_size` when
/// the path ends in a list index (an element update), `is_default` otherwise. The other field
/// is not transmitted and must stay `false` / `0`; the decoder sets it so.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Update {
    /// What is written.
    pub path: FieldPath,
    /// The value.
    pub value: Payload,
    /// A "set default value" write, which loses to every non-default write in OT.
    pub is_default: bool,
    /// Size of the list before the write, for element updates.
    pub prior_size: u32,
}

impl Update {
    /// Whether this updates a list element (the path ends in an index).
    pub fn is_element_update(&self) -> bool {
        self.path.last_index().is_some()
    }
}

/// `AddInteger`: add to an integer field (a counter). Concurrent adds commute.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AddInteger {
    /// The integer field.
    pub path: FieldPath,
    /// The amount (wrapping).
    pub value: i64,
}

/// `ArrayInsert`: insert into a list at the index the path ends in.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ArrayInsert {
    /// The list, ending in the insertion index.
    pub path: FieldPath,
    /// The new element.
    pub value: Payload,
    /// List size before the insert.
    pub prior_size: u32,
}

/// `ArrayMove`: move the element at the index the path ends in to `to`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ArrayMove {
    /// The list, ending in the source index.
    pub path: FieldPath,
    /// Destination index (Realm's `ndx_2`).
    pub to: u32,
    /// List size before the move.
    pub prior_size: u32,
}

/// `ArrayErase`: remove the element at the index the path ends in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ArrayErase {
    /// The list, ending in the index.
    pub path: FieldPath,
    /// List size before the erase.
    pub prior_size: u32,
}

/// `Clear`: empty a list, set or dictionary.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Clear {
    /// The container.
    pub path: FieldPath,
    /// What kind of container it is.
    pub collection_type: CollectionType,
}

/// `SetInsert` / `SetErase`: add a value to, or remove it from, a set.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SetValue {
    /// The set.
    pub path: FieldPath,
    /// The element.
    pub value: Payload,
}

/// One instruction of a changeset. The discriminant order is the wire order (0x00 to 0x0D).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Instruction {
    /// 0x00: create a table.
    AddTable(AddTable),
    /// 0x01: erase a table.
    EraseTable {
        /// The table.
        table: InternString,
    },
    /// 0x02: create an object (idempotent).
    CreateObject {
        /// The table.
        table: InternString,
        /// The object's primary key.
        object: PrimaryKey,
    },
    /// 0x03: erase an object (idempotent).
    EraseObject {
        /// The table.
        table: InternString,
        /// The object's primary key.
        object: PrimaryKey,
    },
    /// 0x04: write a value.
    Update(Update),
    /// 0x05: add to an integer.
    AddInteger(AddInteger),
    /// 0x06: create a column.
    AddColumn(AddColumn),
    /// 0x07: erase a column.
    EraseColumn {
        /// The table.
        table: InternString,
        /// The column.
        field: InternString,
    },
    /// 0x08: insert into a list.
    ArrayInsert(ArrayInsert),
    /// 0x09: move within a list.
    ArrayMove(ArrayMove),
    /// 0x0A: erase from a list.
    ArrayErase(ArrayErase),
    /// 0x0B: empty a collection.
    Clear(Clear),
    /// 0x0C: add to a set.
    SetInsert(SetValue),
    /// 0x0D: remove from a set.
    SetErase(SetValue),
}

/// Wire codes of the instructions, and of the intern-string meta instruction.
pub mod opcode {
    /// AddTable.
    pub const ADD_TABLE: u64 = 0x00;
    /// EraseTable.
    pub const ERASE_TABLE: u64 = 0x01;
    /// CreateObject.
    pub const CREATE_OBJECT: u64 = 0x02;
    /// EraseObject.
    pub const ERASE_OBJECT: u64 = 0x03;
    /// Update.
    pub const UPDATE: u64 = 0x04;
    /// AddInteger.
    pub const ADD_INTEGER: u64 = 0x05;
    /// AddColumn.
    pub const ADD_COLUMN: u64 = 0x06;
    /// EraseColumn.
    pub const ERASE_COLUMN: u64 = 0x07;
    /// ArrayInsert.
    pub const ARRAY_INSERT: u64 = 0x08;
    /// ArrayMove.
    pub const ARRAY_MOVE: u64 = 0x09;
    /// ArrayErase.
    pub const ARRAY_ERASE: u64 = 0x0A;
    /// Clear.
    pub const CLEAR: u64 = 0x0B;
    /// SetInsert.
    pub const SET_INSERT: u64 = 0x0C;
    /// SetErase.
    pub const SET_ERASE: u64 = 0x0D;
    /// The meta instruction defining an intern string.
    pub const INTERN_STRING: u64 = 0x3F;
}

impl Instruction {
    /// The instruction's wire code.
    pub fn opcode(&self) -> u64 {
        match self {
            Instruction::AddTable(_) => opcode::ADD_TABLE,
            Instruction::EraseTable { .. } => opcode::ERASE_TABLE,
            Instruction::CreateObject { .. } => opcode::CREATE_OBJECT,
            Instruction::EraseObject { .. } => opcode::ERASE_OBJECT,
            Instruction::Update(_) => opcode::UPDATE,
            Instruction::AddInteger(_) => opcode::ADD_INTEGER,
            Instruction::AddColumn(_) => opcode::ADD_COLUMN,
            Instruction::EraseColumn { .. } => opcode::ERASE_COLUMN,
            Instruction::ArrayInsert(_) => opcode::ARRAY_INSERT,
            Instruction::ArrayMove(_) => opcode::ARRAY_MOVE,
            Instruction::ArrayErase(_) => opcode::ARRAY_ERASE,
            Instruction::Clear(_) => opcode::CLEAR,
            Instruction::SetInsert(_) => opcode::SET_INSERT,
            Instruction::SetErase(_) => opcode::SET_ERASE,
        }
    }

    /// Whether this changes the schema (these conflict with everything in OT).
    pub fn is_schema_change(&self) -> bool {
        matches!(
            self,
            Instruction::AddTable(_)
                | Instruction::EraseTable { .. }
                | Instruction::AddColumn(_)
                | Instruction::EraseColumn { .. }
        )
    }
}

#[cfg(feature = "serde")]
mod serde_timestamp {
    use crate::model::Timestamp;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        (t.seconds(), t.nanoseconds()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let (seconds, nanoseconds) = <(i64, i32)>::deserialize(d)?;
        Timestamp::new(seconds, nanoseconds).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "serde")]
mod serde_decimal {
    use crate::model::Decimal128;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(d: &Decimal128, s: S) -> Result<S::Ok, S::Error> {
        let bits = d.to_bits();
        ((bits >> 64) as u64, bits as u64).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal128, D::Error> {
        let (hi, lo) = <(u64, u64)>::deserialize(d)?;
        Ok(Decimal128::from_bits(
            (u128::from(hi) << 64) | u128::from(lo),
        ))
    }
}

#[cfg(feature = "serde")]
mod serde_object_id {
    use crate::model::ObjectId;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(id: &ObjectId, s: S) -> Result<S::Ok, S::Error> {
        id.0.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectId, D::Error> {
        <[u8; 12]>::deserialize(d).map(ObjectId)
    }
}

#[cfg(feature = "serde")]
mod serde_uuid {
    use crate::model::Uuid;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(id: &Uuid, s: S) -> Result<S::Ok, S::Error> {
        id.0.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        <[u8; 16]>::deserialize(d).map(Uuid)
    }
}

impl Instruction {
    /// Rewrites every intern-string index the instruction holds (table, field, string primary
    /// keys, path keys, link targets), for moving instructions between string tables.
    pub fn map_strings(&mut self, f: &mut impl FnMut(InternString) -> InternString) {
        fn key(pk: &mut PrimaryKey, f: &mut impl FnMut(InternString) -> InternString) {
            if let PrimaryKey::String(s) = pk {
                *s = f(*s);
            }
        }
        fn payload(p: &mut Payload, f: &mut impl FnMut(InternString) -> InternString) {
            if let Payload::Link(link) = p {
                link.target_table = f(link.target_table);
                key(&mut link.target, f);
            }
        }
        fn path(p: &mut FieldPath, f: &mut impl FnMut(InternString) -> InternString) {
            p.table = f(p.table);
            key(&mut p.object, f);
            p.field = f(p.field);
            for element in &mut p.path {
                if let PathElement::Key(k) = element {
                    *k = f(*k);
                }
            }
        }
        match self {
            Instruction::AddTable(add) => {
                add.table = f(add.table);
                if let TableKind::TopLevel(spec) | TableKind::TopLevelAsymmetric(spec) =
                    &mut add.kind
                {
                    spec.field = f(spec.field);
                }
            }
            Instruction::EraseTable { table } => *table = f(*table),
            Instruction::CreateObject { table, object }
            | Instruction::EraseObject { table, object } => {
                *table = f(*table);
                key(object, f);
            }
            Instruction::Update(u) => {
                path(&mut u.path, f);
                payload(&mut u.value, f);
            }
            Instruction::AddInteger(a) => path(&mut a.path, f),
            Instruction::AddColumn(add) => {
                add.table = f(add.table);
                add.field = f(add.field);
                if let ColumnType::Link { target_table } = &mut add.column_type {
                    *target_table = f(*target_table);
                }
            }
            Instruction::EraseColumn { table, field } => {
                *table = f(*table);
                *field = f(*field);
            }
            Instruction::ArrayInsert(a) => {
                path(&mut a.path, f);
                payload(&mut a.value, f);
            }
            Instruction::ArrayMove(m) => path(&mut m.path, f),
            Instruction::ArrayErase(e) => path(&mut e.path, f),
            Instruction::Clear(c) => path(&mut c.path, f),
            Instruction::SetInsert(s) | Instruction::SetErase(s) => {
                path(&mut s.path, f);
                payload(&mut s.value, f);
            }
        }
    }

    /// The field path of a path instruction (everything but schema and object instructions).
    pub fn field_path(&self) -> Option<&FieldPath> {
        match self {
            Instruction::Update(u) => Some(&u.path),
            Instruction::AddInteger(a) => Some(&a.path),
            Instruction::ArrayInsert(a) => Some(&a.path),
            Instruction::ArrayMove(m) => Some(&m.path),
            Instruction::ArrayErase(e) => Some(&e.path),
            Instruction::Clear(c) => Some(&c.path),
            Instruction::SetInsert(s) | Instruction::SetErase(s) => Some(&s.path),
            _ => None,
        }
    }

    /// Mutable access to the field path of a path instruction.
    pub fn field_path_mut(&mut self) -> Option<&mut FieldPath> {
        match self {
            Instruction::Update(u) => Some(&mut u.path),
            Instruction::AddInteger(a) => Some(&mut a.path),
            Instruction::ArrayInsert(a) => Some(&mut a.path),
            Instruction::ArrayMove(m) => Some(&mut m.path),
            Instruction::ArrayErase(e) => Some(&mut e.path),
            Instruction::Clear(c) => Some(&mut c.path),
            Instruction::SetInsert(s) | Instruction::SetErase(s) => Some(&mut s.path),
            _ => None,
        }
    }

    /// The (table, primary key) of the object a data instruction acts on.
    pub fn object(&self) -> Option<(InternString, &PrimaryKey)> {
        match self {
            Instruction::CreateObject { table, object }
            | Instruction::EraseObject { table, object } => Some((*table, object)),
            other => other.field_path().map(|p| (p.table, &p.object)),
        }
    }

    /// The value a data instruction writes, if it writes one.
    pub fn payload(&self) -> Option<&Payload> {
        match self {
            Instruction::Update(u) => Some(&u.value),
            Instruction::ArrayInsert(a) => Some(&a.value),
            Instruction::SetInsert(s) | Instruction::SetErase(s) => Some(&s.value),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoded changeset holds every instruction at this size (a bulk insert of 100,000
    /// objects holds 500,000 of them), so its growth is a cost to notice: 112 bytes while
    /// `Decimal128` held a `u128`, which aligned every payload to 16 bytes
    /// (`docs/performance.md`, "Store").
    #[test]
    fn an_instruction_takes_104_bytes_at_most() {
        assert!(std::mem::size_of::<Instruction>() <= 104);
        assert!(std::mem::align_of::<Payload>() <= 8);
    }
}
