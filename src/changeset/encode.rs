//! Encoding a [`Changeset`] into Realm-format bytes.
//!
//! The layout is the one realm-core's `ChangesetEncoder::encode_single` writes: every intern
//! string definition first (indices 0, 1, 2, ...), then the instructions. A changeset without
//! instructions encodes to zero bytes, string table or not.

use super::instruction::*;
use super::varint::{write_i64, write_u128, write_u64};
use super::Changeset;
use crate::model::Decimal128;

/// The bytes, and the length of the longest string or binary value written.
pub(super) fn encode(changeset: &Changeset) -> (Vec<u8>, usize) {
    if changeset.instructions.is_empty() {
        return (Vec::new(), 0);
    }
    let mut w = Writer {
        out: Vec::with_capacity(estimate_len(changeset)),
        largest: 0,
    };
    w.strings(changeset);
    for instruction in &changeset.instructions {
        w.instruction(instruction);
    }
    (w.out, w.largest)
}

/// Encodes a changeset while it is built: each instruction is written as it is pushed and not
/// kept, so a changeset of many instructions costs its encoded size (about 13 bytes per
/// instruction for a bulk insert) instead of its decoded one (112 bytes each). The server's
/// STATE snapshot is built this way. The bytes are those [`Changeset::encode`] gives.
///
/// ```
/// use tandem::changeset::{Changeset, Encoder, Instruction, PrimaryKey};
/// let (mut built, mut encoder) = (Changeset::new(), Encoder::new());
/// let table = (built.intern("Task"), encoder.intern("Task"));
/// built.push(Instruction::CreateObject { table: table.0, object: PrimaryKey::Int(1) });
/// encoder.push(Instruction::CreateObject { table: table.1, object: PrimaryKey::Int(1) });
/// assert_eq!(encoder.finish(), built.encode());
/// ```
pub struct Encoder {
    /// The string table (no instructions).
    strings: Changeset,
    /// The instructions encoded since the last full chunk.
    body: Writer,
    /// Full chunks of encoded instructions, each about [`ENCODER_CHUNK`] bytes: joined once by
    /// [`Encoder::finish`] into a buffer of the exact size, so a large changeset never sits in
    /// a buffer grown by doubling (up to twice its size, and both during a copy).
    chunks: Vec<Vec<u8>>,
    instructions: usize,
}

/// Bytes of encoded instructions an [`Encoder`] collects before it starts another chunk.
const ENCODER_CHUNK: usize = 1 << 20;

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            strings: Changeset::new(),
            body: Writer {
                out: Vec::new(),
                largest: 0,
            },
            chunks: Vec::new(),
            instructions: 0,
        }
    }
}

impl Encoder {
    /// An encoder with nothing in it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the index of `s`, adding it to the string table if it is new (as
    /// [`Changeset::intern`]).
    pub fn intern(&mut self, s: &str) -> InternString {
        self.strings.intern(s)
    }

    /// The string at `index`, if the table has one there.
    pub fn string(&self, index: InternString) -> Option<&str> {
        self.strings.string(index)
    }

    /// Encodes `instruction` after the ones before it. Its strings must be in the table.
    pub fn push(&mut self, instruction: Instruction) {
        self.body.instruction(&instruction);
        self.instructions += 1;
        if self.body.out.len() >= ENCODER_CHUNK {
            let next = Vec::with_capacity(ENCODER_CHUNK + ENCODER_CHUNK / 4);
            self.chunks
                .push(std::mem::replace(&mut self.body.out, next));
        }
    }

    /// The number of instructions pushed.
    pub fn len(&self) -> usize {
        self.instructions
    }

    /// Whether no instruction was pushed.
    pub fn is_empty(&self) -> bool {
        self.instructions == 0
    }

    /// The bytes: exactly what [`Changeset::encode`] gives for a changeset with the same
    /// string table and instructions (strings first, then the instructions; nothing for no
    /// instructions).
    pub fn finish(self) -> Vec<u8> {
        if self.instructions == 0 {
            return Vec::new();
        }
        let mut table = Writer {
            out: Vec::new(),
            largest: 0,
        };
        table.strings(&self.strings);
        let body: usize = self.chunks.iter().map(Vec::len).sum::<usize>() + self.body.out.len();
        let mut out = Vec::with_capacity(table.out.len() + body);
        out.extend_from_slice(&table.out);
        drop(table);
        for chunk in self.chunks {
            out.extend_from_slice(&chunk);
        }
        out.extend_from_slice(&self.body.out);
        out
    }
}

/// A cheap lower bound that saves most reallocations on large changesets.
fn estimate_len(changeset: &Changeset) -> usize {
    let strings: usize = changeset.strings().iter().map(|s| s.len() + 3).sum();
    strings + changeset.instructions.len() * 8
}

struct Writer {
    out: Vec<u8>,
    /// Longest length-prefixed value (string, binary, intern string) so far.
    largest: usize,
}

impl Writer {
    /// The intern string definitions of `changeset`'s table, in index order.
    fn strings(&mut self, changeset: &Changeset) {
        for (index, s) in changeset.strings().iter().enumerate() {
            self.u64(opcode::INTERN_STRING);
            self.u64(index as u64);
            self.bytes(s.as_bytes());
        }
    }

    fn u64(&mut self, v: u64) {
        write_u64(&mut self.out, v);
    }

    fn i64(&mut self, v: i64) {
        write_i64(&mut self.out, v);
    }

    fn bool(&mut self, v: bool) {
        self.out.push(u8::from(v));
    }

    fn intern(&mut self, s: InternString) {
        self.u64(u64::from(s.0));
    }

    fn bytes(&mut self, b: &[u8]) {
        self.largest = self.largest.max(b.len());
        self.u64(b.len() as u64);
        self.out.extend_from_slice(b);
    }

    fn payload_type(&mut self, t: PayloadType) {
        self.i64(t.code());
    }

    fn global_key(&mut self, key: GlobalKey) {
        self.u64(key.hi);
        self.u64(key.lo);
    }

    fn primary_key(&mut self, pk: &PrimaryKey) {
        match pk {
            PrimaryKey::Null => self.payload_type(PayloadType::Null),
            PrimaryKey::Int(v) => {
                self.payload_type(PayloadType::Int);
                self.i64(*v);
            }
            PrimaryKey::String(s) => {
                self.payload_type(PayloadType::String);
                self.intern(*s);
            }
            PrimaryKey::GlobalKey(key) => {
                self.payload_type(PayloadType::GlobalKey);
                self.global_key(*key);
            }
            PrimaryKey::ObjectId(id) => {
                self.payload_type(PayloadType::ObjectId);
                self.out.extend_from_slice(&id.0);
            }
            PrimaryKey::Uuid(id) => {
                self.payload_type(PayloadType::Uuid);
                self.out.extend_from_slice(&id.0);
            }
        }
    }

    fn decimal(&mut self, d: Decimal128) {
        let (coefficient, exponent, negative) = d.parts();
        write_u128(&mut self.out, coefficient);
        self.i64(i64::from(exponent));
        self.bool(negative);
    }

    fn payload(&mut self, p: &Payload) {
        self.payload_type(p.payload_type());
        match p {
            Payload::Set
            | Payload::List
            | Payload::Erased
            | Payload::Dictionary
            | Payload::ObjectValue
            | Payload::Null => {}
            Payload::GlobalKey(key) => self.global_key(*key),
            Payload::Int(v) => self.i64(*v),
            Payload::Bool(v) => self.bool(*v),
            Payload::String(s) => self.bytes(s.as_bytes()),
            Payload::Binary(b) => self.bytes(b),
            Payload::Timestamp(t) => {
                self.i64(t.seconds());
                self.i64(i64::from(t.nanoseconds()));
            }
            Payload::Float(v) => self.out.extend_from_slice(&v.to_le_bytes()),
            Payload::Double(v) => self.out.extend_from_slice(&v.to_le_bytes()),
            Payload::Decimal(d) => self.decimal(*d),
            Payload::Link(link) => {
                self.intern(link.target_table);
                self.primary_key(&link.target);
            }
            Payload::ObjectId(id) => self.out.extend_from_slice(&id.0),
            Payload::Uuid(id) => self.out.extend_from_slice(&id.0),
        }
    }

    fn path(&mut self, path: &FieldPath) {
        self.intern(path.table);
        self.primary_key(&path.object);
        self.intern(path.field);
        self.u64(path.path.len() as u64);
        for element in &path.path {
            match element {
                PathElement::Index(i) => self.u64(u64::from(*i)),
                PathElement::Key(key) => {
                    self.i64(-1);
                    self.intern(*key);
                }
            }
        }
    }

    fn instruction(&mut self, instruction: &Instruction) {
        self.u64(instruction.opcode());
        match instruction {
            Instruction::AddTable(add) => {
                self.intern(add.table);
                match &add.kind {
                    TableKind::Embedded => self.u64(1),
                    TableKind::TopLevel(spec) | TableKind::TopLevelAsymmetric(spec) => {
                        let asymmetric = matches!(add.kind, TableKind::TopLevelAsymmetric(_));
                        self.u64(if asymmetric { 2 } else { 0 });
                        self.intern(spec.field);
                        self.payload_type(spec.key_type);
                        self.bool(spec.nullable);
                    }
                }
            }
            Instruction::EraseTable { table } => self.intern(*table),
            Instruction::CreateObject { table, object }
            | Instruction::EraseObject { table, object } => {
                self.intern(*table);
                self.primary_key(object);
            }
            Instruction::Update(update) => {
                self.path(&update.path);
                self.payload(&update.value);
                if update.is_element_update() {
                    self.u64(u64::from(update.prior_size));
                } else {
                    self.bool(update.is_default);
                }
            }
            Instruction::AddInteger(add) => {
                self.path(&add.path);
                self.i64(add.value);
            }
            Instruction::AddColumn(add) => {
                self.intern(add.table);
                self.intern(add.field);
                self.payload_type(add.column_type.payload_type());
                self.bool(add.nullable);
                self.u64(u64::from(add.collection.collection_type().code()));
                if let ColumnType::Link { target_table } = add.column_type {
                    self.intern(target_table);
                }
                if let ColumnCollection::Dictionary { key_type } = add.collection {
                    self.payload_type(key_type);
                }
            }
            Instruction::EraseColumn { table, field } => {
                self.intern(*table);
                self.intern(*field);
            }
            Instruction::ArrayInsert(insert) => {
                self.path(&insert.path);
                self.payload(&insert.value);
                self.u64(u64::from(insert.prior_size));
            }
            Instruction::ArrayMove(mv) => {
                self.path(&mv.path);
                self.u64(u64::from(mv.to));
                self.u64(u64::from(mv.prior_size));
            }
            Instruction::ArrayErase(erase) => {
                self.path(&erase.path);
                self.u64(u64::from(erase.prior_size));
            }
            Instruction::Clear(clear) => {
                self.path(&clear.path);
                self.u64(u64::from(clear.collection_type.code()));
            }
            Instruction::SetInsert(set) | Instruction::SetErase(set) => {
                self.path(&set.path);
                self.payload(&set.value);
            }
        }
    }
}

#[cfg(test)]
mod encoder_tests {
    use super::super::{Changeset, Encoder};
    use super::*;

    /// A changeset of several chunks (and strings added between them) comes out of the
    /// encoder with exactly `Changeset::encode`'s bytes, in a buffer of exactly its size.
    #[test]
    fn an_encoder_of_many_chunks_writes_what_encode_writes() {
        let (mut built, mut encoder) = (Changeset::new(), Encoder::new());
        for i in 0..40_000i64 {
            let key = format!("key {i}");
            let (t, f) = (built.intern("Task"), built.intern("title"));
            let k = built.intern(&key);
            let (et, ef, ek) = (
                encoder.intern("Task"),
                encoder.intern("title"),
                encoder.intern(&key),
            );
            assert_eq!((t, f, k), (et, ef, ek));
            let update = |table, field, object| {
                Instruction::Update(Update {
                    path: FieldPath {
                        table,
                        object: PrimaryKey::String(object),
                        field,
                        path: Vec::new(),
                    },
                    value: Payload::String("x".repeat(64)),
                    is_default: false,
                    prior_size: 0,
                })
            };
            built.push(update(t, f, k));
            encoder.push(update(et, ef, ek));
        }
        assert!(encoder.chunks.len() >= 2, "{} chunks", encoder.chunks.len());
        let bytes = encoder.finish();
        assert_eq!(bytes.len(), bytes.capacity());
        assert_eq!(bytes, built.encode());
    }
}
