//! Decoding Realm-format changeset bytes into a [`Changeset`].
//!
//! The decoder is written for hostile input: it never panics, every loop consumes input, and no
//! allocation is larger than what the remaining input could fill (a declared length is checked
//! against the bytes left before anything is reserved).

use super::error::{ChangesetError, ChangesetErrorKind};
use super::instruction::*;
use super::varint::{self, VarintError, MAX_VARINT113_LEN};
use super::Changeset;
use crate::model::{Decimal128, ObjectId, Timestamp, Uuid};

/// Longest string value or intern string, in bytes: realm-core's `Table::max_string_size`.
pub const MAX_STRING_LEN: u64 = 0xFF_FFF8 - 8 - 1;

/// Errors are boxed inside the decoder so that every `Result` fits in two registers; they are
/// unboxed once, in [`decode_sharing`] (or [`InstructionStream::next_instruction`]).
type Result<T> = std::result::Result<T, Box<ChangesetError>>;

/// Input bytes per instruction assumed when reserving the instruction list (the changeset of
/// `benches/changeset.rs` takes 16.4). Every instruction takes at least 2 bytes, so this reserves
/// at most an eighth of what the input could hold; smaller instructions only grow the list.
const RESERVE_BYTES_PER_INSTRUCTION: usize = 16;

pub(super) fn decode(input: &[u8]) -> std::result::Result<Changeset, ChangesetError> {
    decode_sharing(input, None)
}

/// [`decode`], taking `earlier`'s string table (shared) when the input defines the same strings
/// in the same order: see [`Changeset::decode_sharing`](super::Changeset::decode_sharing).
pub(super) fn decode_sharing(
    input: &[u8],
    earlier: Option<&Changeset>,
) -> std::result::Result<Changeset, ChangesetError> {
    let mut reader = Reader::new(input);
    reader.earlier = earlier.map(Changeset::strings);
    let mut changeset = Changeset::new();
    // Exactly, and room for one below 16 bytes: `reserve` or a first `push` would give a
    // one-instruction changeset room for four.
    changeset.instructions.reserve_exact(
        (input.len() / RESERVE_BYTES_PER_INSTRUCTION).max(usize::from(!input.is_empty())),
    );
    while reader.pos < input.len() {
        reader.instruction(&mut changeset).map_err(|e| *e)?;
    }
    match (reader.earlier, earlier) {
        // Every string matched `earlier`'s, and there are as many.
        (Some(strings), Some(earlier)) if strings.len() == reader.strings as usize => {
            changeset.share_table_of(earlier);
        }
        // A prefix of them: the changeset's own table, made now.
        (Some(strings), _) => reader.own_strings(&mut changeset, strings),
        _ => {}
    }
    Ok(changeset)
}

/// Decodes a changeset one instruction at a time: see [`Changeset::stream`](super::Changeset::stream).
pub struct InstructionStream<'a> {
    reader: Reader<'a>,
    /// The intern strings defined so far, and at most the one instruction being returned.
    changeset: Changeset,
}

impl<'a> InstructionStream<'a> {
    pub(super) fn new(input: &'a [u8]) -> Self {
        InstructionStream {
            reader: Reader::new(input),
            changeset: Changeset::new(),
        }
    }

    /// The next instruction, or `None` at the end of the input.
    ///
    /// # Errors
    /// The error [`Changeset::decode`](super::Changeset::decode) reports for the same bytes;
    /// once one is returned the stream is at its end.
    pub fn next_instruction(&mut self) -> std::result::Result<Option<Instruction>, ChangesetError> {
        let reader = &mut self.reader;
        while reader.pos < reader.input.len() {
            if let Err(e) = reader.instruction(&mut self.changeset) {
                reader.pos = reader.input.len();
                return Err(*e);
            }
            if let Some(instruction) = self.changeset.instructions.pop() {
                return Ok(Some(instruction));
            }
        }
        Ok(None)
    }

    /// The intern strings defined so far (the changeset has no instructions): every string an
    /// instruction returned by [`next_instruction`](Self::next_instruction) names is in it.
    pub fn strings(&self) -> &Changeset {
        &self.changeset
    }
}

/// The decoder's position in its input. The changeset it decodes into is passed to the
/// instruction-level functions apart from it, so that an instruction can be pushed onto the
/// list first and its fields read into it where it lies (see [`Reader::path_instruction`]).
struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    /// Intern strings defined so far: the changeset's `string_count` once decoded.
    strings: u32,
    /// While every string defined so far is the one at the same index of these (the string
    /// table of a changeset decoded before, [`decode_sharing`]), they are not put into the
    /// changeset's own table: it takes that table at the end, or copies the matched ones into
    /// its own at the first string that differs.
    earlier: Option<&'a [String]>,
}

impl<'a> Reader<'a> {
    fn new(input: &'a [u8]) -> Self {
        Reader {
            input,
            pos: 0,
            strings: 0,
            earlier: None,
        }
    }

    /// Puts the strings matched so far in `earlier` into `changeset`'s own table, and stops
    /// matching.
    fn own_strings(&mut self, changeset: &mut Changeset, earlier: &[String]) {
        for s in &earlier[..self.strings as usize] {
            changeset.intern(s);
        }
        self.earlier = None;
    }

    #[cold]
    #[inline(never)]
    fn fail<T>(&self, at: usize, expected: &'static str, kind: ChangesetErrorKind) -> Result<T> {
        Err(Box::new(ChangesetError {
            offset: at,
            expected,
            kind,
        }))
    }

    fn rest(&self) -> &'a [u8] {
        &self.input[self.pos..]
    }

    /// The error for a varint at the current position.
    #[cold]
    #[inline(never)]
    fn varint_error<T>(&self, expected: &'static str, e: VarintError) -> Result<T> {
        let kind = match e {
            VarintError::Truncated => ChangesetErrorKind::Truncated,
            VarintError::TooLong => ChangesetErrorKind::VarintTooLong,
            VarintError::OutOfRange => ChangesetErrorKind::IntegerOutOfRange,
            VarintError::NonCanonical => ChangesetErrorKind::NonCanonicalVarint,
        };
        self.fail(self.pos, expected, kind)
    }

    /// The next byte if it is a whole varint (no continuation flag).
    #[inline(always)]
    fn single_byte(&self) -> Option<u8> {
        match self.input.get(self.pos) {
            Some(&byte) if byte & 0x80 == 0 => Some(byte),
            _ => None,
        }
    }

    #[inline(always)]
    fn i64(&mut self, expected: &'static str) -> Result<i64> {
        if let Some(byte) = self.single_byte() {
            self.pos += 1;
            let magnitude = i64::from(byte & 0x3F);
            return Ok(if byte & 0x40 != 0 {
                -magnitude - 1
            } else {
                magnitude
            });
        }
        self.i64_long(expected)
    }

    #[inline(never)]
    fn i64_long(&mut self, expected: &'static str) -> Result<i64> {
        match varint::read_i64(self.rest()) {
            Ok((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            Err(e) => self.varint_error(expected, e),
        }
    }

    #[inline(always)]
    fn unsigned(&mut self, expected: &'static str, max: u64) -> Result<u64> {
        // A single byte below 0x40 is a non-negative value below 64; every `max` used is larger.
        match self.single_byte() {
            Some(byte) if byte < 0x40 && u64::from(byte) <= max => {
                self.pos += 1;
                Ok(u64::from(byte))
            }
            _ => self.unsigned_long(expected, max),
        }
    }

    #[inline(never)]
    fn unsigned_long(&mut self, expected: &'static str, max: u64) -> Result<u64> {
        match varint::read_unsigned(self.rest(), max) {
            Ok((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            Err(e) => self.varint_error(expected, e),
        }
    }

    #[inline(always)]
    fn u64(&mut self, expected: &'static str) -> Result<u64> {
        self.unsigned(expected, u64::MAX)
    }

    #[inline(always)]
    fn u32(&mut self, expected: &'static str) -> Result<u32> {
        // The bound makes the conversion lossless.
        Ok(self.unsigned(expected, u64::from(u32::MAX))? as u32)
    }

    #[inline]
    fn bool(&mut self, expected: &'static str) -> Result<bool> {
        match self.input.get(self.pos) {
            Some(0) => {
                self.pos += 1;
                Ok(false)
            }
            Some(1) => {
                self.pos += 1;
                Ok(true)
            }
            _ => self.bool_long(expected),
        }
    }

    #[cold]
    #[inline(never)]
    fn bool_long(&mut self, expected: &'static str) -> Result<bool> {
        let at = self.pos;
        match self.u64(expected)? {
            0 => Ok(false),
            1 => Ok(true),
            other => self.fail(
                at,
                expected,
                ChangesetErrorKind::InvalidValue(format!("boolean must be 0 or 1, found {other}")),
            ),
        }
    }

    #[inline]
    fn bytes(&mut self, expected: &'static str, len: usize) -> Result<&'a [u8]> {
        let rest = self.rest();
        if rest.len() < len {
            return self.fail(self.pos, expected, ChangesetErrorKind::Truncated);
        }
        self.pos += len;
        Ok(&rest[..len])
    }

    #[inline]
    fn array<const N: usize>(&mut self, expected: &'static str) -> Result<[u8; N]> {
        let bytes = self.bytes(expected, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// A length-prefixed byte string, at most `limit` bytes.
    #[inline]
    fn sized(&mut self, expected: &'static str, limit: u64) -> Result<&'a [u8]> {
        let at = self.pos;
        let length = self.u64(expected)?;
        if length > limit {
            return self.fail(at, expected, ChangesetErrorKind::TooLong { length, limit });
        }
        let remaining = self.input.len() - self.pos;
        if length > remaining as u64 {
            return self.fail(
                at,
                expected,
                ChangesetErrorKind::LengthBeyondInput { length, remaining },
            );
        }
        self.bytes(expected, length as usize)
    }

    /// A length-prefixed UTF-8 string, borrowed from the input (the caller copies it where it
    /// goes: an intern string into the table, a value into its payload).
    #[inline]
    fn str(&mut self, expected: &'static str) -> Result<&'a str> {
        let at = self.pos;
        let bytes = self.sized(expected, MAX_STRING_LEN)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s),
            Err(_) => self.fail(at, expected, ChangesetErrorKind::InvalidUtf8),
        }
    }

    #[inline]
    fn intern(&mut self, expected: &'static str) -> Result<InternString> {
        let at = self.pos;
        let index = self.u64(expected)?;
        let defined = self.strings;
        if index >= u64::from(defined) {
            return self.fail(
                at,
                expected,
                ChangesetErrorKind::UndefinedInternString { index, defined },
            );
        }
        Ok(InternString(index as u32))
    }

    #[inline]
    fn payload_type(&mut self, expected: &'static str) -> Result<PayloadType> {
        let at = self.pos;
        let code = self.i64(expected)?;
        match PayloadType::from_code(code) {
            Some(t) => Ok(t),
            None => self.fail(at, expected, ChangesetErrorKind::UnknownPayloadType(code)),
        }
    }

    fn global_key(&mut self) -> Result<GlobalKey> {
        let hi = self.u64("global key high word")?;
        let lo = self.u64("global key low word")?;
        Ok(GlobalKey { hi, lo })
    }

    #[inline(always)]
    fn primary_key(&mut self, expected: &'static str) -> Result<PrimaryKey> {
        let at = self.pos;
        Ok(match self.payload_type(expected)? {
            PayloadType::Null => PrimaryKey::Null,
            PayloadType::Int => PrimaryKey::Int(self.i64("integer primary key")?),
            PayloadType::String => PrimaryKey::String(self.intern("string primary key")?),
            PayloadType::GlobalKey => PrimaryKey::GlobalKey(self.global_key()?),
            PayloadType::ObjectId => PrimaryKey::ObjectId(ObjectId(self.array("object id")?)),
            PayloadType::Uuid => PrimaryKey::Uuid(Uuid(self.array("UUID")?)),
            other => {
                return self.fail(
                    at,
                    expected,
                    ChangesetErrorKind::PayloadTypeNotAllowed(other.code()),
                )
            }
        })
    }

    fn timestamp(&mut self) -> Result<Timestamp> {
        let at = self.pos;
        let seconds = self.i64("timestamp seconds")?;
        let nanos = self.i64("timestamp nanoseconds")?;
        let checked = i32::try_from(nanos)
            .ok()
            .and_then(|n| Timestamp::new(seconds, n).ok());
        match checked {
            Some(t) => Ok(t),
            None => self.fail(
                at,
                "timestamp",
                ChangesetErrorKind::InvalidValue(format!(
                    "timestamp {seconds} s {nanos} ns: nanoseconds must be below one second and \
                     share the sign of the seconds"
                )),
            ),
        }
    }

    fn decimal(&mut self) -> Result<Decimal128> {
        let at = self.pos;
        let raw = match varint::read_raw(self.rest(), MAX_VARINT113_LEN) {
            Ok(raw) => raw,
            Err(e) => return self.varint_error("decimal128 coefficient", e),
        };
        if raw.negative {
            return self.fail(
                at,
                "decimal128 coefficient",
                ChangesetErrorKind::IntegerOutOfRange,
            );
        }
        self.pos += raw.len;
        let exponent = self.i64("decimal128 exponent")?;
        let sign = self.bool("decimal128 sign")?;
        let exponent = i32::try_from(exponent).unwrap_or(i32::MAX);
        match Decimal128::from_parts(raw.magnitude, exponent, sign) {
            Ok(d) => Ok(d),
            Err(e) => self.fail(
                at,
                "decimal128",
                ChangesetErrorKind::InvalidValue(e.to_string()),
            ),
        }
    }

    /// Reads a value into `slot`, each variant written where it lies (not built elsewhere and
    /// copied).
    #[inline(always)]
    fn payload_into(&mut self, slot: &mut Payload, expected: &'static str) -> Result<()> {
        match self.payload_type(expected)? {
            PayloadType::Set => *slot = Payload::Set,
            PayloadType::List => *slot = Payload::List,
            PayloadType::Erased => *slot = Payload::Erased,
            PayloadType::Dictionary => *slot = Payload::Dictionary,
            PayloadType::ObjectValue => *slot = Payload::ObjectValue,
            PayloadType::Null => *slot = Payload::Null,
            PayloadType::GlobalKey => *slot = Payload::GlobalKey(self.global_key()?),
            PayloadType::Int => *slot = Payload::Int(self.i64("integer value")?),
            PayloadType::Bool => *slot = Payload::Bool(self.bool("boolean value")?),
            // Up to 24 bytes (12 on 32-bit targets) without an allocation.
            PayloadType::String => {
                *slot = Payload::String(CompactString::new(self.str("string value")?))
            }
            PayloadType::Binary => {
                *slot = Payload::Binary(self.sized("binary value", u64::MAX)?.to_vec())
            }
            PayloadType::Timestamp => *slot = Payload::Timestamp(self.timestamp()?),
            PayloadType::Float => *slot = Payload::Float(f32::from_le_bytes(self.array("float")?)),
            PayloadType::Double => {
                *slot = Payload::Double(f64::from_le_bytes(self.array("double")?))
            }
            PayloadType::Decimal => *slot = Payload::Decimal(self.decimal()?),
            PayloadType::Link => {
                let target_table = self.intern("link target table")?;
                let target = self.primary_key("link target primary key")?;
                *slot = Payload::Link(Link {
                    target_table,
                    target,
                });
            }
            PayloadType::ObjectId => *slot = Payload::ObjectId(ObjectId(self.array("object id")?)),
            PayloadType::Uuid => *slot = Payload::Uuid(Uuid(self.array("UUID")?)),
        }
        Ok(())
    }

    /// Reads a field path's elements (its count, then each index, or -1 and a key) onto `path`,
    /// which is empty.
    #[inline(always)]
    fn path_elements(&mut self, path: &mut Path) -> Result<()> {
        let at = self.pos;
        let count = self.u32("path length")?;
        // Every element takes at least one byte: a count beyond the input is a lie, and must
        // not become an allocation.
        let remaining = self.input.len() - self.pos;
        if count as usize > remaining {
            return self.fail(
                at,
                "path length",
                ChangesetErrorKind::LengthBeyondInput {
                    length: u64::from(count),
                    remaining,
                },
            );
        }
        if count as usize > path.inline_size() {
            path.reserve_exact(count as usize);
        }
        for _ in 0..count {
            let element_at = self.pos;
            let element = self.i64("path element")?;
            if element >= 0 {
                match u32::try_from(element) {
                    Ok(i) => path.push(PathElement::Index(i)),
                    Err(_) => {
                        return self.fail(
                            element_at,
                            "path index",
                            ChangesetErrorKind::IntegerOutOfRange,
                        )
                    }
                }
            } else if element == -1 {
                path.push(PathElement::Key(self.intern("path key")?));
            } else {
                return self.fail(
                    element_at,
                    "path element (an index, or -1 then a key)",
                    ChangesetErrorKind::IntegerOutOfRange,
                );
            }
        }
        Ok(())
    }

    fn define_intern_string(&mut self, changeset: &mut Changeset) -> Result<()> {
        let at = self.pos;
        let index = self.u64("intern string index")?;
        let expected = self.strings;
        if index != u64::from(expected) {
            return self.fail(
                at,
                "intern string index",
                ChangesetErrorKind::UnexpectedInternIndex {
                    expected,
                    found: index,
                },
            );
        }
        let string_at = self.pos;
        if let Some(earlier) = self.earlier {
            let bytes = self.sized("intern string", MAX_STRING_LEN)?;
            // Equal bytes are valid UTF-8, and (the earlier table holding each string once)
            // not a string defined before.
            if earlier
                .get(index as usize)
                .is_some_and(|s| s.as_bytes() == bytes)
            {
                self.strings += 1;
                return Ok(());
            }
            // Read again below, as a string of this changeset's own.
            self.pos = string_at;
            self.own_strings(changeset, earlier);
        }
        let s = self.str("intern string")?;
        if changeset.find_string(s).is_some() {
            return self.fail(
                string_at,
                "intern string",
                ChangesetErrorKind::RepeatedInternString(s.to_owned()),
            );
        }
        changeset.intern(s);
        self.strings = changeset.string_count();
        Ok(())
    }

    fn table_kind(&mut self) -> Result<TableKind> {
        let at = self.pos;
        let code = self.u64("table type")?;
        let asymmetric = match code {
            0 => false,
            1 => return Ok(TableKind::Embedded),
            2 => true,
            other => {
                return self.fail(
                    at,
                    "table type",
                    ChangesetErrorKind::InvalidValue(format!(
                        "unknown table type {other} (expected 0 top-level, 1 embedded, 2 \
                         asymmetric)"
                    )),
                )
            }
        };
        let field = self.intern("primary key field")?;
        let type_at = self.pos;
        let key_type = self.payload_type("primary key type")?;
        if !key_type.is_valid_primary_key_type() {
            return self.fail(
                type_at,
                "primary key type",
                ChangesetErrorKind::PayloadTypeNotAllowed(key_type.code()),
            );
        }
        let spec = PrimaryKeySpec {
            field,
            key_type,
            nullable: self.bool("primary key nullable")?,
        };
        Ok(if asymmetric {
            TableKind::TopLevelAsymmetric(spec)
        } else {
            TableKind::TopLevel(spec)
        })
    }

    fn collection_type(&mut self) -> Result<CollectionType> {
        let at = self.pos;
        let code = self.u64("collection type")?;
        match CollectionType::from_code(code) {
            Some(t) => Ok(t),
            None => self.fail(
                at,
                "collection type",
                ChangesetErrorKind::InvalidValue(format!(
                    "unknown collection type {code} (expected 0 single, 1 list, 2 dictionary, \
                     3 set)"
                )),
            ),
        }
    }

    fn add_column(&mut self) -> Result<AddColumn> {
        let table = self.intern("table")?;
        let field = self.intern("column name")?;
        let type_at = self.pos;
        let wire_type = self.payload_type("column type")?;
        let nullable = self.bool("column nullable")?;
        let collection_type = self.collection_type()?;
        let column_type = match wire_type {
            PayloadType::Null => ColumnType::Mixed,
            PayloadType::Link => ColumnType::Link {
                target_table: self.intern("link target table")?,
            },
            PayloadType::Int
            | PayloadType::Bool
            | PayloadType::String
            | PayloadType::Binary
            | PayloadType::Timestamp
            | PayloadType::Float
            | PayloadType::Double
            | PayloadType::Decimal
            | PayloadType::ObjectId
            | PayloadType::Uuid => ColumnType::Value(wire_type),
            special => {
                return self.fail(
                    type_at,
                    "column type",
                    ChangesetErrorKind::PayloadTypeNotAllowed(special.code()),
                )
            }
        };
        let collection = match collection_type {
            CollectionType::Single => ColumnCollection::Single,
            CollectionType::List => ColumnCollection::List,
            CollectionType::Set => ColumnCollection::Set,
            CollectionType::Dictionary => ColumnCollection::Dictionary {
                key_type: self.payload_type("dictionary key type")?,
            },
        };
        Ok(AddColumn {
            table,
            field,
            column_type,
            nullable,
            collection,
        })
    }

    /// Reads one instruction onto `changeset` (an intern string into its string table).
    ///
    /// Each instruction is pushed where it is read, from its fields, so that it is written once,
    /// into the list, rather than built in a temporary and copied there: copying a value just
    /// written in parts stalls the processor (a load that spans several pending stores cannot be
    /// forwarded from them), and those copies took a third of the decoder's time.
    fn instruction(&mut self, changeset: &mut Changeset) -> Result<()> {
        let at = self.pos;
        let code = self.u64("instruction type")?;
        let instructions = &mut changeset.instructions;
        match code {
            opcode::INTERN_STRING => return self.define_intern_string(changeset),
            opcode::ADD_TABLE => {
                let table = self.intern("table")?;
                let kind = self.table_kind()?;
                instructions.push(Instruction::AddTable(AddTable { table, kind }));
            }
            opcode::ERASE_TABLE => {
                let table = self.intern("table")?;
                instructions.push(Instruction::EraseTable { table });
            }
            opcode::CREATE_OBJECT => {
                let table = self.intern("table")?;
                let object = self.primary_key("CreateObject primary key")?;
                instructions.push(Instruction::CreateObject { table, object });
            }
            opcode::ERASE_OBJECT => {
                let table = self.intern("table")?;
                let object = self.primary_key("EraseObject primary key")?;
                instructions.push(Instruction::EraseObject { table, object });
            }
            opcode::UPDATE
            | opcode::ADD_INTEGER
            | opcode::ARRAY_INSERT
            | opcode::ARRAY_MOVE
            | opcode::ARRAY_ERASE
            | opcode::CLEAR
            | opcode::SET_INSERT
            | opcode::SET_ERASE => return self.path_instruction(instructions, code),
            opcode::ADD_COLUMN => {
                let add = self.add_column()?;
                instructions.push(Instruction::AddColumn(add));
            }
            opcode::ERASE_COLUMN => {
                let table = self.intern("table")?;
                let field = self.intern("column name")?;
                instructions.push(Instruction::EraseColumn { table, field });
            }
            unknown => {
                return self.fail(
                    at,
                    "instruction type",
                    ChangesetErrorKind::UnknownInstruction(unknown),
                )
            }
        }
        Ok(())
    }

    /// An instruction that starts with a path: `code` is one of `UPDATE`, `ADD_INTEGER`,
    /// `ARRAY_INSERT`, `ARRAY_MOVE`, `ARRAY_ERASE`, `CLEAR`, `SET_INSERT` and `SET_ERASE`.
    ///
    /// The instruction is pushed with its table, object and field, an empty path and blank
    /// operands, which are then read into it where it lies (most instructions of a changeset
    /// take this way); if reading fails it is popped again.
    fn path_instruction(&mut self, instructions: &mut Vec<Instruction>, code: u64) -> Result<()> {
        let at = self.pos;
        let table = self.intern("table")?;
        let object = self.primary_key("object primary key")?;
        let field = self.intern("field")?;
        let path = FieldPath {
            table,
            object,
            field,
            path: Path::new(),
        };
        match code {
            opcode::UPDATE => instructions.push(Instruction::Update(Update {
                path,
                value: Payload::Null,
                is_default: false,
                prior_size: 0,
            })),
            opcode::ADD_INTEGER => {
                instructions.push(Instruction::AddInteger(AddInteger { path, value: 0 }))
            }
            opcode::ARRAY_INSERT => instructions.push(Instruction::ArrayInsert(ArrayInsert {
                path,
                value: Payload::Null,
                prior_size: 0,
            })),
            opcode::ARRAY_MOVE => instructions.push(Instruction::ArrayMove(ArrayMove {
                path,
                to: 0,
                prior_size: 0,
            })),
            opcode::ARRAY_ERASE => instructions.push(Instruction::ArrayErase(ArrayErase {
                path,
                prior_size: 0,
            })),
            opcode::CLEAR => instructions.push(Instruction::Clear(Clear {
                path,
                collection_type: CollectionType::Single,
            })),
            opcode::SET_INSERT => instructions.push(Instruction::SetInsert(SetValue {
                path,
                value: Payload::Null,
            })),
            _ => instructions.push(Instruction::SetErase(SetValue {
                path,
                value: Payload::Null,
            })),
        }
        let read = match instructions.last_mut() {
            Some(instruction) => self.path_operands(instruction, at),
            None => Ok(()),
        };
        if read.is_err() {
            instructions.pop();
        }
        read
    }

    /// Reads the rest of a path instruction pushed by [`path_instruction`](Self::path_instruction)
    /// into it: the path's elements, then the operands of its kind. `at` is where the
    /// instruction's path began.
    #[inline(always)]
    fn path_operands(&mut self, instruction: &mut Instruction, at: usize) -> Result<()> {
        match instruction {
            Instruction::Update(update) => {
                self.path_elements(&mut update.path.path)?;
                self.payload_into(&mut update.value, "Update value")?;
                if update.path.last_index().is_some() {
                    update.prior_size = self.u32("Update prior size")?;
                } else {
                    update.is_default = self.bool("Update is_default")?;
                }
            }
            Instruction::AddInteger(add) => {
                self.path_elements(&mut add.path.path)?;
                add.value = self.i64("AddInteger value")?;
            }
            Instruction::ArrayInsert(insert) => {
                self.path_elements(&mut insert.path.path)?;
                self.list_element(&insert.path, at)?;
                self.payload_into(&mut insert.value, "ArrayInsert value")?;
                insert.prior_size = self.u32("ArrayInsert prior size")?;
            }
            Instruction::ArrayMove(array_move) => {
                self.path_elements(&mut array_move.path.path)?;
                self.list_element(&array_move.path, at)?;
                array_move.to = self.u32("ArrayMove destination index")?;
                array_move.prior_size = self.u32("ArrayMove prior size")?;
            }
            Instruction::ArrayErase(erase) => {
                self.path_elements(&mut erase.path.path)?;
                self.list_element(&erase.path, at)?;
                erase.prior_size = self.u32("ArrayErase prior size")?;
            }
            Instruction::Clear(clear) => {
                self.path_elements(&mut clear.path.path)?;
                clear.collection_type = self.collection_type()?;
            }
            Instruction::SetInsert(set) => {
                self.path_elements(&mut set.path.path)?;
                self.payload_into(&mut set.value, "SetInsert value")?;
            }
            Instruction::SetErase(set) => {
                self.path_elements(&mut set.path.path)?;
                self.payload_into(&mut set.value, "SetErase value")?;
            }
            // `path_instruction` pushes only the kinds above.
            _ => {}
        }
        Ok(())
    }

    /// Fails unless `path` names a list element (ends in an index), as the `Array*`
    /// instructions' paths must; `at` is where the path began.
    #[inline(always)]
    fn list_element(&self, path: &FieldPath, at: usize) -> Result<()> {
        if path.last_index().is_none() {
            return self.fail(
                at,
                "list element path",
                ChangesetErrorKind::MissingArrayIndex,
            );
        }
        Ok(())
    }
}
