//! Encoding a [`Changeset`] into Realm-format bytes.
//!
//! The layout is the one realm-core's `ChangesetEncoder::encode_single` writes: every intern
//! string definition first (indices 0, 1, 2, ...), then the instructions. A changeset without
//! instructions encodes to zero bytes, string table or not.

use super::instruction::*;
use super::varint::{put_magnitude64, put_u128, signed_magnitude, MAX_VARINT64_LEN};
use super::Changeset;
use crate::model::Decimal128;

/// The bytes, and the length of the longest string or binary value written.
pub(super) fn encode(changeset: &Changeset) -> (Vec<u8>, usize) {
    if changeset.instructions.is_empty() {
        return (Vec::new(), 0);
    }
    let mut w = Writer::with_capacity(estimate_len(changeset));
    w.strings(changeset);
    for instruction in &changeset.instructions {
        w.instruction(instruction);
    }
    let largest = w.largest;
    (w.finish(), largest)
}

/// Encodes a changeset while it is built: each instruction is written as it is pushed and not
/// kept, so a changeset of many instructions costs its encoded size (about 13 bytes per
/// instruction for a bulk insert) instead of its decoded one (104 bytes each). The server's
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
            body: Writer::with_capacity(0),
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
        if self.body.len >= ENCODER_CHUNK {
            let next = Writer::with_capacity(ENCODER_CHUNK + ENCODER_CHUNK / 4);
            self.chunks
                .push(std::mem::replace(&mut self.body, next).finish());
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
        let mut table = Writer::with_capacity(0);
        table.strings(&self.strings);
        let table = table.finish();
        let body = self.body.finish();
        let len: usize = self.chunks.iter().map(Vec::len).sum::<usize>() + body.len();
        let mut out = Vec::with_capacity(table.len() + len);
        out.extend_from_slice(&table);
        drop(table);
        for chunk in self.chunks {
            out.extend_from_slice(&chunk);
        }
        out.extend_from_slice(&body);
        out
    }
}

/// A cheap estimate of the encoded size, so that most changesets are written without growing
/// the buffer (each growth zeroes the new room and copies the bytes before it): the strings,
/// and 16 bytes per instruction (a bulk insert takes about 13, the codec benchmark's mix 16.4).
fn estimate_len(changeset: &Changeset) -> usize {
    let strings: usize = changeset.strings().iter().map(|s| s.len() + 3).sum();
    strings + changeset.instructions.len() * 16
}

/// Most bytes an instruction takes besides its path elements and the bytes of a string or
/// binary value: a path instruction's opcode, table, primary key (a type and a global key's
/// two varints), field and element count take at most 70, its payload at most 50 (a type and
/// a link: a table and a primary key), and what follows at most 20 (an `ArrayMove`'s two
/// sizes). Schema instructions take less. Rounded up.
const FIXED_BOUND: usize = 160;

/// Most bytes one path element takes: a key is -1 and an intern string.
const PATH_ELEMENT_BOUND: usize = 2 * MAX_VARINT64_LEN;

/// Most bytes `instruction` can encode to ([`FIXED_BOUND`], then what varies).
#[inline(always)]
fn encoded_len_bound(instruction: &Instruction) -> usize {
    let elements = instruction.field_path().map_or(0, |p| p.path.len());
    let value = match instruction.payload() {
        Some(Payload::String(s)) => s.len(),
        Some(Payload::Binary(b)) => b.len(),
        _ => 0,
    };
    FIXED_BOUND + elements * PATH_ELEMENT_BOUND + value
}

/// An output buffer written through a plain slice: the bytes are `buf[..len]`, and the rest
/// of `buf` is zeroed room. Before each instruction the room is made large enough for the
/// instruction's [`encoded_len_bound`], and the instruction is then written by a [`Cursor`]
/// whose position lives in a register. (A `Vec` push per byte checked the capacity and stored
/// the length each time, and a staging buffer with its count beside it in memory reloaded the
/// count after every byte it stored, since the two might alias: a 100,000-instruction
/// changeset took 3.3 ms to encode that way.)
struct Writer {
    buf: Vec<u8>,
    /// Bytes written: `buf[..len]`.
    len: usize,
    /// Longest length-prefixed value (string, binary, intern string) so far.
    largest: usize,
}

impl Writer {
    /// A writer with `capacity` bytes of room (zeroed, which a fresh allocation of that size
    /// from the kernel already is).
    fn with_capacity(capacity: usize) -> Writer {
        Writer {
            buf: vec![0; capacity],
            len: 0,
            largest: 0,
        }
    }

    /// The bytes written.
    fn finish(mut self) -> Vec<u8> {
        self.buf.truncate(self.len);
        self.buf
    }

    /// A cursor at the end of the bytes written, with room for `n` bytes at least.
    #[inline(always)]
    fn cursor(&mut self, n: usize) -> Cursor<'_> {
        if self.buf.len() - self.len < n {
            self.grow(n);
        }
        Cursor {
            buf: &mut self.buf[self.len..],
            at: 0,
            largest: self.largest,
        }
    }

    /// Makes room for `n` more bytes, at least doubling the buffer.
    #[cold]
    fn grow(&mut self, n: usize) {
        let size = (self.len + n).max(self.buf.len() * 2);
        self.buf.resize(size, 0);
    }

    /// Takes in what `cursor` wrote.
    #[inline(always)]
    fn advance(&mut self, (written, largest): (usize, usize)) {
        self.len += written;
        self.largest = largest;
    }

    /// The intern string definitions of `changeset`'s table, in index order.
    fn strings(&mut self, changeset: &Changeset) {
        for (index, s) in changeset.strings().iter().enumerate() {
            let mut c = self.cursor(3 * MAX_VARINT64_LEN + s.len());
            c.u64(opcode::INTERN_STRING);
            c.u64(index as u64);
            c.bytes(s.as_bytes());
            let written = c.done();
            self.advance(written);
        }
    }

    /// Appends `instruction`.
    #[inline]
    fn instruction(&mut self, instruction: &Instruction) {
        let written = self
            .cursor(encoded_len_bound(instruction))
            .instruction(instruction);
        self.advance(written);
    }
}

/// Writes at `buf[at..]`. Made with room for what it writes, so an index past the end is a
/// bound computed wrong (a panic, never a short write).
struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
    largest: usize,
}

impl Cursor<'_> {
    /// (bytes written, longest length-prefixed value so far).
    #[inline(always)]
    fn done(self) -> (usize, usize) {
        (self.at, self.largest)
    }

    #[inline(always)]
    fn magnitude(&mut self, v: u64, negative: bool) {
        if v < 64 {
            self.buf[self.at] = v as u8 | if negative { 0x40 } else { 0 };
            self.at += 1;
        } else {
            self.at += put_magnitude64(&mut self.buf[self.at..], v, negative);
        }
    }

    #[inline(always)]
    fn u64(&mut self, v: u64) {
        self.magnitude(v, false);
    }

    #[inline(always)]
    fn i64(&mut self, v: i64) {
        let (magnitude, negative) = signed_magnitude(v);
        self.magnitude(magnitude, negative);
    }

    #[inline(always)]
    fn bool(&mut self, v: bool) {
        self.buf[self.at] = u8::from(v);
        self.at += 1;
    }

    #[inline(always)]
    fn intern(&mut self, s: InternString) {
        self.u64(u64::from(s.0));
    }

    /// Appends `b` as it is.
    #[inline(always)]
    fn raw(&mut self, b: &[u8]) {
        self.buf[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }

    /// A length-prefixed string or binary value.
    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) {
        self.largest = self.largest.max(b.len());
        self.u64(b.len() as u64);
        self.raw(b);
    }

    #[inline(always)]
    fn payload_type(&mut self, t: PayloadType) {
        self.i64(t.code());
    }

    #[inline(always)]
    fn global_key(&mut self, key: GlobalKey) {
        self.u64(key.hi);
        self.u64(key.lo);
    }

    #[inline(always)]
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
                self.raw(&id.0);
            }
            PrimaryKey::Uuid(id) => {
                self.payload_type(PayloadType::Uuid);
                self.raw(&id.0);
            }
        }
    }

    fn decimal(&mut self, d: Decimal128) {
        let (coefficient, exponent, negative) = d.parts();
        self.at += put_u128(&mut self.buf[self.at..], coefficient);
        self.i64(i64::from(exponent));
        self.bool(negative);
    }

    #[inline(always)]
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
            Payload::Float(v) => self.raw(&v.to_le_bytes()),
            Payload::Double(v) => self.raw(&v.to_le_bytes()),
            Payload::Decimal(d) => self.decimal(*d),
            Payload::Link(link) => {
                self.intern(link.target_table);
                self.primary_key(&link.target);
            }
            Payload::ObjectId(id) => self.raw(&id.0),
            Payload::Uuid(id) => self.raw(&id.0),
        }
    }

    #[inline(always)]
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

    /// Writes `instruction`; returns what [`Cursor::done`] does. Takes the cursor by value, so
    /// that its position is a local the compiler keeps in a register.
    fn instruction(mut self, instruction: &Instruction) -> (usize, usize) {
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
        self.done()
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
                        path: Path::new(),
                    },
                    value: Payload::String("x".repeat(64).into()),
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

    /// Each kind of instruction at its widest (every varint at its longest, the widest
    /// primary key and payload, a path of a few keys, none, or 120 elements) fits the room
    /// [`encoded_len_bound`] gives it,
    /// written into a buffer of exactly that room: a bound too small would panic here.
    #[test]
    fn the_widest_instructions_fit_their_bound() {
        let s = InternString(u32::MAX);
        let key = PrimaryKey::GlobalKey(GlobalKey {
            hi: u64::MAX,
            lo: u64::MAX,
        });
        let mut path = Path::new();
        for _ in 0..5 {
            path.push(PathElement::Key(s));
        }
        path.push(PathElement::Index(u32::MAX));
        let field_path = FieldPath {
            table: s,
            object: key.clone(),
            field: s,
            path,
        };
        let wide = Decimal128::from_parts((1 << 113) - 1, -6176, true).unwrap();
        let widest_values = [
            Payload::Link(Link {
                target_table: s,
                target: key.clone(),
            }),
            Payload::Decimal(wide),
            Payload::GlobalKey(GlobalKey {
                hi: u64::MAX,
                lo: u64::MAX,
            }),
            Payload::Timestamp(crate::model::Timestamp::new(i64::MIN, -999_999_999).unwrap()),
            Payload::String("s".repeat(300).into()),
            Payload::Binary(vec![7; 300]),
            Payload::Int(i64::MIN),
        ];
        let mut instructions = vec![
            Instruction::AddTable(AddTable {
                table: s,
                kind: TableKind::TopLevelAsymmetric(PrimaryKeySpec {
                    field: s,
                    key_type: PayloadType::Decimal,
                    nullable: true,
                }),
            }),
            Instruction::AddColumn(AddColumn {
                table: s,
                field: s,
                column_type: ColumnType::Link { target_table: s },
                nullable: true,
                collection: ColumnCollection::Dictionary {
                    key_type: PayloadType::Decimal,
                },
            }),
            Instruction::EraseColumn { table: s, field: s },
            Instruction::EraseObject {
                table: s,
                object: key.clone(),
            },
            Instruction::AddInteger(AddInteger {
                path: field_path.clone(),
                value: i64::MIN,
            }),
            Instruction::ArrayMove(ArrayMove {
                path: field_path.clone(),
                to: u32::MAX,
                prior_size: u32::MAX,
            }),
        ];
        for value in widest_values {
            instructions.push(Instruction::Update(Update {
                path: field_path.clone(),
                value: value.clone(),
                is_default: false,
                prior_size: u32::MAX,
            }));
            instructions.push(Instruction::ArrayInsert(ArrayInsert {
                path: field_path.clone(),
                value: value.clone(),
                prior_size: u32::MAX,
            }));
            instructions.push(Instruction::SetInsert(SetValue {
                path: field_path.clone(),
                value,
            }));
        }
        // The same without a path below the field: all of the bound but the fixed part is then
        // the value's bytes.
        let short: Vec<Instruction> = instructions
            .iter()
            .filter_map(|instruction| {
                let mut instruction = instruction.clone();
                instruction.field_path_mut()?.path.clear();
                Some(instruction)
            })
            .collect();
        // And with a long path (60 keys, then 60 indices): all of the bound but the fixed part
        // and the value is then the path's.
        let long: Vec<Instruction> = instructions
            .iter()
            .filter_map(|instruction| {
                let mut instruction = instruction.clone();
                let path = &mut instruction.field_path_mut()?.path;
                path.clear();
                path.extend((0..60).map(|_| PathElement::Key(s)));
                path.extend((0..60).map(|_| PathElement::Index(u32::MAX)));
                Some(instruction)
            })
            .collect();
        for instruction in instructions.iter().chain(&short).chain(&long) {
            let bound = encoded_len_bound(instruction);
            let mut w = Writer::with_capacity(0);
            w.instruction(instruction);
            assert_eq!(w.buf.len(), bound, "{instruction:?}");
            assert!(w.len <= bound, "{} > {bound}: {instruction:?}", w.len);
        }
    }

    /// Values of every length around the fixed room an instruction gets, and fixed-size values
    /// at every offset from the end of the room before them, encode to what a writer appending
    /// byte by byte gives (the sign-bit varints of `varint`, the values as they are) and decode
    /// back.
    #[test]
    fn cursor_bytes_are_the_bytes_of_a_plain_writer() {
        use super::super::varint::{write_i64, write_u64};
        let mut cs = Changeset::new();
        let (t, f) = (cs.intern("T"), cs.intern("f"));
        let mut expected = Vec::new();
        for (index, s) in ["T", "f"].iter().enumerate() {
            write_u64(&mut expected, opcode::INTERN_STRING);
            write_u64(&mut expected, index as u64);
            write_u64(&mut expected, s.len() as u64);
            expected.extend_from_slice(s.as_bytes());
        }
        let mut values = Vec::new();
        for len in 0..=2 * FIXED_BOUND + 3 {
            values.push(Payload::String("s".repeat(len).into()));
            values.push(Payload::Binary(vec![len as u8; len]));
            values.push(Payload::ObjectId(crate::model::ObjectId([len as u8; 12])));
            values.push(Payload::Uuid(crate::model::Uuid([len as u8; 16])));
            values.push(Payload::Int(i64::MIN + len as i64));
            values.push(Payload::Double(len as f64 / 3.0));
            values.push(Payload::Float(len as f32 / 3.0));
            values.push(Payload::Timestamp(
                crate::model::Timestamp::new((len as i64) << 40, len as i32).unwrap(),
            ));
        }
        // The widest varint: a decimal's 113-bit coefficient takes 17 bytes.
        let wide = Decimal128::from_parts((1 << 113) - 1, -6176, true).unwrap();
        values.push(Payload::Decimal(wide));
        for (n, value) in values.into_iter().enumerate() {
            // Keys of growing varint lengths shift where each value starts in its room.
            let key = (1i64 << (n % 63)) - 1;
            write_u64(&mut expected, opcode::UPDATE);
            write_u64(&mut expected, u64::from(t.0));
            write_i64(&mut expected, PayloadType::Int.code());
            write_i64(&mut expected, key);
            write_u64(&mut expected, u64::from(f.0));
            write_u64(&mut expected, 0);
            write_i64(&mut expected, value.payload_type().code());
            match &value {
                Payload::String(s) => {
                    write_u64(&mut expected, s.len() as u64);
                    expected.extend_from_slice(s.as_bytes());
                }
                Payload::Binary(b) => {
                    write_u64(&mut expected, b.len() as u64);
                    expected.extend_from_slice(b);
                }
                Payload::ObjectId(id) => expected.extend_from_slice(&id.0),
                Payload::Uuid(id) => expected.extend_from_slice(&id.0),
                Payload::Int(v) => write_i64(&mut expected, *v),
                Payload::Double(v) => expected.extend_from_slice(&v.to_le_bytes()),
                Payload::Float(v) => expected.extend_from_slice(&v.to_le_bytes()),
                Payload::Timestamp(t) => {
                    write_i64(&mut expected, t.seconds());
                    write_i64(&mut expected, i64::from(t.nanoseconds()));
                }
                Payload::Decimal(d) => {
                    let (coefficient, exponent, negative) = d.parts();
                    super::super::varint::write_u128(&mut expected, coefficient);
                    write_i64(&mut expected, i64::from(exponent));
                    expected.push(u8::from(negative));
                }
                _ => unreachable!(),
            }
            expected.push(0); // not a default write
            cs.push(Instruction::Update(Update {
                path: FieldPath {
                    table: t,
                    object: PrimaryKey::Int(key),
                    field: f,
                    path: Path::new(),
                },
                value,
                is_default: false,
                prior_size: 0,
            }));
        }
        let bytes = cs.encode();
        assert_eq!(bytes, expected);
        assert_eq!(
            Changeset::decode(&bytes).unwrap().instructions,
            cs.instructions
        );
    }
}
