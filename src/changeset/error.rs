//! The error the changeset decoder returns: where it stopped, what it was reading, and why.

use std::fmt;

/// What went wrong at the offset a [`ChangesetError`] names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangesetErrorKind {
    /// The input ended in the middle of a value.
    Truncated,
    /// A varint with more bytes than its type can use.
    VarintTooLong,
    /// A varint longer than its value needs (Realm encoders never write these).
    NonCanonicalVarint,
    /// An integer outside the range of the field (for example a negative length or an index
    /// above `u32::MAX`).
    IntegerOutOfRange,
    /// An instruction code that is none of 0x00..=0x0D or 0x3F.
    UnknownInstruction(u64),
    /// A payload type code outside -6..=11.
    UnknownPayloadType(i64),
    /// A payload type that is valid in general but not in this position.
    PayloadTypeNotAllowed(i64),
    /// An intern string definition out of order: indices must be 0, 1, 2, ...
    UnexpectedInternIndex {
        /// The next index a definition may use.
        expected: u32,
        /// The index found.
        found: u64,
    },
    /// The same string defined twice as an intern string.
    RepeatedInternString(String),
    /// A reference to an intern string not defined (yet).
    UndefinedInternString {
        /// The index used.
        index: u64,
        /// How many intern strings were defined at that point.
        defined: u32,
    },
    /// A length above the limit for its kind of value.
    TooLong {
        /// The declared length.
        length: u64,
        /// The limit.
        limit: u64,
    },
    /// A length longer than the input that is left.
    LengthBeyondInput {
        /// The declared length.
        length: u64,
        /// Bytes remaining.
        remaining: usize,
    },
    /// A string that is not UTF-8.
    InvalidUtf8,
    /// A value that breaks a rule of its type (a bool of 2, a table type of 7, ...).
    InvalidValue(String),
    /// An array instruction whose path does not end in a list index.
    MissingArrayIndex,
}

impl fmt::Display for ChangesetErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ChangesetErrorKind::*;
        match self {
            Truncated => f.write_str("input ends too early"),
            VarintTooLong => f.write_str("integer has too many bytes"),
            NonCanonicalVarint => f.write_str("integer is not in its shortest encoding"),
            IntegerOutOfRange => f.write_str("integer out of range"),
            UnknownInstruction(code) => write!(f, "unknown instruction type {code:#04x}"),
            UnknownPayloadType(code) => {
                write!(f, "unknown payload type {code} (expected -6..=11)")
            }
            PayloadTypeNotAllowed(code) => write!(f, "payload type {code} is not allowed here"),
            UnexpectedInternIndex { expected, found } => {
                write!(f, "unexpected intern index {found} (expected {expected})")
            }
            RepeatedInternString(s) => write!(f, "unexpected intern string {s:?}: already defined"),
            UndefinedInternString { index, defined } => write!(
                f,
                "intern string {index} is not defined ({defined} defined so far)"
            ),
            TooLong { length, limit } => {
                write!(f, "length {length} is above the limit of {limit}")
            }
            LengthBeyondInput { length, remaining } => write!(
                f,
                "length {length} is beyond the end of the input ({remaining} bytes left)"
            ),
            InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            InvalidValue(why) => f.write_str(why),
            MissingArrayIndex => f.write_str("path does not end in a list index"),
        }
    }
}

/// A changeset that could not be decoded.
///
/// `offset` is the byte where the faulty item starts, `expected` names what the decoder was
/// reading there, for example `"CreateObject primary key"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangesetError {
    /// Byte offset of the faulty item in the input.
    pub offset: usize,
    /// What the decoder expected to find at that offset.
    pub expected: &'static str,
    /// What was wrong.
    pub kind: ChangesetErrorKind,
}

impl fmt::Display for ChangesetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad changeset at byte {} (reading {}): {}",
            self.offset, self.expected, self.kind
        )
    }
}

impl std::error::Error for ChangesetError {}
