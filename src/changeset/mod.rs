//! Changesets: the instructions one write transaction produced, in Realm's sync format.
//!
//! A [`Changeset`] holds its [`Instruction`]s and the string table they index into. Its binary
//! form ([`Changeset::encode`], [`Changeset::decode`]) is byte-compatible with realm-core: the
//! sign-bit varints of [`varint`], intern-string definitions (`0x3F index length bytes`), inline
//! string and binary values, raw little-endian floats, raw object id and UUID bytes, decimal128
//! as coefficient/exponent/sign, and links as table then primary key.
//!
//! The history metadata (version, last integrated remote version, origin timestamp and origin
//! file ident) travels beside the instructions in [`ChangesetMeta`]; it is not part of the
//! encoded bytes, which is how the sync protocol carries it too (in each entry's header).
//!
//! ```
//! use tandem::changeset::{Changeset, Instruction, PrimaryKey};
//!
//! let mut cs = Changeset::new();
//! let person = cs.intern("Person");
//! cs.push(Instruction::CreateObject { table: person, object: PrimaryKey::Int(5) });
//! let bytes = cs.encode();
//! assert_eq!(bytes, [0x3F, 0x00, 0x06, b'P', b'e', b'r', b's', b'o', b'n', 0x02, 0x00, 0x01, 0x05]);
//! let back = Changeset::decode(&bytes).unwrap();
//! assert_eq!(back, cs);
//! assert_eq!(back.to_string(), "CreateObject Person[5]\n");
//! ```

pub mod compression;
mod decode;
mod display;
mod encode;
mod error;
mod instruction;
pub mod varint;

use std::collections::HashMap;
use std::sync::Arc;

pub use decode::{InstructionStream, MAX_STRING_LEN};
pub use encode::Encoder;
pub use error::{ChangesetError, ChangesetErrorKind};
pub use instruction::*;

/// Up to this many strings, the string table is searched by a scan instead of a hash index.
const SCANNED_STRINGS: usize = 8;

/// Where a changeset sits in a history, and where it came from. Not part of the encoded bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChangesetMeta {
    /// Version this changeset produced in the history that holds it.
    pub version: u64,
    /// The last version of the peer's history integrated before this changeset was made.
    pub last_integrated_remote_version: u64,
    /// Milliseconds since 2015-01-01T00:00:00Z when the changeset was made (the OT clock).
    pub origin_timestamp: u64,
    /// Client file ident of the file that made it (0 for "this file").
    pub origin_file_ident: u64,
}

/// Instructions and the string table they refer to.
///
/// Strings are interned: every distinct name appears once in the table and instructions refer
/// to it by [`InternString`] index. Equality compares strings, instructions and metadata.
///
/// The string table is shared between clones (copied on the first [`intern`](Self::intern)
/// that adds to a shared one), so that a clone, or a changeset made again with
/// [`with_strings_of`](Self::with_strings_of), allocates no strings: a merge that rewrites
/// 500,000 one-keystroke changesets built each one's table again (`benches/branches.rs`).
#[derive(Clone, Debug, Default)]
pub struct Changeset {
    /// `None` for an empty table (so that an empty changeset allocates nothing).
    table: Option<Arc<StringTable>>,
    /// The instructions, in order.
    pub instructions: Vec<Instruction>,
    /// Where this changeset sits in a history.
    pub meta: ChangesetMeta,
}

/// A changeset's string table.
#[derive(Clone, Debug, Default)]
struct StringTable {
    strings: Vec<String>,
    /// The index of every string once the table holds more than [`SCANNED_STRINGS`]; empty
    /// before that, when [`Changeset::find_string`] scans `strings` instead (a one-object
    /// transaction interns about five names: hashing and a second copy of each cost more than
    /// the scan, measured with callgrind on `TANDEM_BENCH_ONLY=single cargo bench --bench store`).
    index: HashMap<String, InternString>,
}

impl PartialEq for Changeset {
    fn eq(&self, other: &Self) -> bool {
        self.strings() == other.strings()
            && self.instructions == other.instructions
            && self.meta == other.meta
    }
}

impl Eq for Changeset {}

impl Changeset {
    /// An empty changeset.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes Realm-format changeset bytes.
    ///
    /// Malformed input is an error naming the byte offset and what was expected there; it is
    /// never a panic, and nothing is allocated beyond what the input's own length justifies.
    /// The metadata of the result is zero: it travels beside the bytes, not in them.
    pub fn decode(bytes: &[u8]) -> Result<Changeset, ChangesetError> {
        decode::decode(bytes)
    }

    /// [`decode`](Self::decode), holding `earlier`'s string table (shared, not copied) when the
    /// bytes define the same strings in the same order: the same changeset, errors and offsets
    /// as `decode`, and no table of its own allocated. With `None`, `decode`.
    ///
    /// For changesets read one after another (a history's rows, a DOWNLOAD's or an UPLOAD's
    /// entries), whose tables are mostly equal (one class, object and field), each decoded with
    /// the one before it: a run of them holds one table, and a merge maps that table once by a
    /// pointer comparison, where it compared every changeset's strings through cache misses
    /// (`ot::merge`, `benches/branches.rs`).
    ///
    /// ```
    /// use tandem::changeset::{Changeset, Instruction, PrimaryKey};
    ///
    /// let mut cs = Changeset::new();
    /// let table = cs.intern("Doc");
    /// cs.push(Instruction::CreateObject { table, object: PrimaryKey::Int(1) });
    /// let bytes = cs.encode();
    /// let first = Changeset::decode(&bytes).unwrap();
    /// let second = Changeset::decode_sharing(&bytes, Some(&first)).unwrap();
    /// assert!(second.shares_strings_with(&first));
    /// assert_eq!(second.strings(), ["Doc"]);
    /// assert_eq!(second, first);
    /// ```
    pub fn decode_sharing(
        bytes: &[u8],
        earlier: Option<&Changeset>,
    ) -> Result<Changeset, ChangesetError> {
        decode::decode_sharing(bytes, earlier)
    }

    /// Decodes Realm-format changeset bytes one instruction at a time, so that a large
    /// changeset is applied or inspected without holding all its instructions (104 bytes each)
    /// at once. The bytes, errors and offsets are those of [`decode`](Self::decode).
    ///
    /// ```
    /// use tandem::changeset::{Changeset, Instruction, PrimaryKey};
    /// let mut cs = Changeset::new();
    /// let table = cs.intern("Task");
    /// cs.push(Instruction::CreateObject { table, object: PrimaryKey::Int(1) });
    /// let bytes = cs.encode();
    /// let mut stream = Changeset::stream(&bytes);
    /// let first = stream.next_instruction().unwrap().unwrap();
    /// assert_eq!(first, cs.instructions[0]);
    /// assert_eq!(stream.strings().string(table), Some("Task"));
    /// assert!(stream.next_instruction().unwrap().is_none());
    /// ```
    pub fn stream(bytes: &[u8]) -> InstructionStream<'_> {
        InstructionStream::new(bytes)
    }

    /// Encodes the changeset: all intern strings first, then the instructions, as realm-core
    /// does. A changeset without instructions encodes to no bytes at all.
    pub fn encode(&self) -> Vec<u8> {
        encode::encode(self).0
    }

    /// Encodes the changeset like [`Changeset::encode`] and also returns the length in bytes of
    /// its largest string, binary value or intern string (0 if it has none): what a decoder
    /// checks against [`MAX_STRING_LEN`].
    pub fn encode_measured(&self) -> (Vec<u8>, usize) {
        encode::encode(self)
    }

    /// Returns the index of `s`, adding it to the string table if it is new.
    ///
    /// # Panics
    /// If the table already holds `u32::MAX` strings (the wire limit).
    pub fn intern(&mut self, s: &str) -> InternString {
        if let Some(existing) = self.find_string(s) {
            return existing;
        }
        let table = Arc::make_mut(self.table.get_or_insert_with(Default::default));
        let index = InternString(
            u32::try_from(table.strings.len())
                .expect("string table is limited to u32::MAX entries"),
        );
        table.strings.push(s.to_owned());
        if table.strings.len() > SCANNED_STRINGS {
            if table.index.is_empty() {
                table.index = table
                    .strings
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.clone(), InternString(i as u32)))
                    .collect();
            } else {
                table.index.insert(s.to_owned(), index);
            }
        }
        index
    }

    /// The index of `s`, if it is in the string table.
    pub fn find_string(&self, s: &str) -> Option<InternString> {
        let table = self.table.as_deref()?;
        if table.strings.len() <= SCANNED_STRINGS {
            return table
                .strings
                .iter()
                .position(|t| t == s)
                .map(|i| InternString(i as u32));
        }
        table.index.get(s).copied()
    }

    /// The string at `index`, if there is one.
    pub fn string(&self, index: InternString) -> Option<&str> {
        self.strings().get(index.0 as usize).map(String::as_str)
    }

    /// The string table, in index order.
    pub fn strings(&self) -> &[String] {
        self.table.as_deref().map_or(&[], |t| &t.strings)
    }

    /// A changeset with no instructions, `self`'s metadata and `self`'s string table (shared,
    /// not copied): for making a changeset again from instructions that name only strings of
    /// `self`.
    pub fn with_strings_of(&self) -> Changeset {
        Changeset {
            table: self.table.clone(),
            instructions: Vec::new(),
            meta: self.meta,
        }
    }

    /// Makes `self` hold `earlier`'s string table, shared (the decoder, once every string it
    /// read matched).
    fn share_table_of(&mut self, earlier: &Changeset) {
        self.table = earlier.table.clone();
    }

    /// Whether `self` and `other` hold the same string table (one shared, not two equal ones),
    /// or neither holds a string: a cheap test before comparing the strings.
    pub fn shares_strings_with(&self, other: &Changeset) -> bool {
        match (&self.table, &other.table) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// Number of strings in the table.
    pub fn string_count(&self) -> u32 {
        // `intern` keeps the table within u32.
        self.strings().len() as u32
    }

    /// Appends an instruction.
    pub fn push(&mut self, instruction: Instruction) {
        self.instructions.push(instruction);
    }

    /// Makes room for at least `additional` more instructions (as `Vec::reserve`), so a
    /// writer that knows how many it will push grows the list once.
    pub fn reserve(&mut self, additional: usize) {
        self.instructions.reserve(additional);
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.instructions.len()
    }

    /// Whether there are no instructions (such a changeset encodes to no bytes).
    pub fn is_empty(&self) -> bool {
        self.instructions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Changeset;

    #[test]
    fn a_shared_string_table_is_copied_on_write() {
        let mut original = Changeset::new();
        assert!(original.strings().is_empty());
        let task = original.intern("Task");
        let mut copy = original.clone();
        assert!(copy.shares_strings_with(&original));
        // Interning a string the shared table holds changes nothing.
        assert_eq!(copy.intern("Task"), task);
        assert!(copy.shares_strings_with(&original));
        let title = copy.intern("title");
        assert!(!copy.shares_strings_with(&original));
        assert_eq!(copy.strings(), ["Task", "title"]);
        assert_eq!(original.strings(), ["Task"]);
        assert_eq!(original.find_string("title"), None);
        assert_eq!(copy.find_string("title"), Some(title));

        // Past the scanned size the index is copied with the table.
        for n in 0..20 {
            original.intern(&format!("s{n}"));
        }
        let mut again = original.with_strings_of();
        assert!(again.instructions.is_empty());
        assert_eq!(again.strings(), original.strings());
        let extra = again.intern("extra");
        assert_eq!(again.find_string("s19"), original.find_string("s19"));
        assert_eq!(again.find_string("extra"), Some(extra));
        assert_eq!(original.find_string("extra"), None);
        assert_eq!(original.string_count(), 21);
        assert_eq!(again.string_count(), 22);
    }
}
