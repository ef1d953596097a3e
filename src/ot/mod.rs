//! Operational transformation: Realm's merge rules for concurrent changesets.
//!
//! Two peers that made changesets concurrently (neither had seen the other's) exchange them.
//! [`transform`] rewrites both sides so that each can be applied after the other and both
//! replicas reach the same state:
//!
//! - the ordering key of a changeset is its [`Discriminant`], (origin timestamp, origin file
//!   ident); larger is newer;
//! - deletes win, the last writer wins per field (a default-value write loses to any real
//!   write), equal primary keys are one object, list inserts at one index are ordered oldest
//!   first, an erase beats a concurrent set of the same element, the newer of two moves of one
//!   element wins, a clear beats concurrent element operations, counters add up;
//! - instructions are compared only within conflict groups (same object, joined through links
//!   and schema changes), which keeps merges of changesets on different objects near linear.
//!
//! [`ReciprocalHistory`] keeps the bookkeeping of realm-sync.md section 3.1: the transformed
//! ("reciprocal") form of each local changeset as seen by one remote peer. A client keeps one
//! (its peer is the server); the server keeps one per client file.
//!
//! Invariant violations (two list operations on one list that disagree about its size, two
//! schema instructions that define one thing differently) are a [`TransformError`].

mod history;
mod merge;
mod rules;
mod segments;

use std::fmt;

pub use history::{FormKey, ReciprocalHistory};
pub use merge::{ErasedTables, MergeReach};

use crate::changeset::Changeset;

/// The ordering key of a changeset: origin timestamp (milliseconds since
/// 2015-01-01T00:00:00Z), then origin file ident. Larger is newer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Discriminant {
    /// Milliseconds since 2015-01-01T00:00:00Z.
    pub timestamp: u64,
    /// Client file ident of the file that made the changeset.
    pub file_ident: u64,
}

impl Discriminant {
    /// The discriminant recorded in a changeset's metadata.
    ///
    /// A changeset's `origin_file_ident` must be the real ident of the file that made it (not
    /// 0 for "local"), or two peers would order their changesets differently.
    pub fn of(changeset: &Changeset) -> Self {
        Discriminant {
            timestamp: changeset.meta.origin_timestamp,
            file_ident: changeset.meta.origin_file_ident,
        }
    }
}

/// Concurrent changesets that cannot be merged: one of them breaks an invariant, so at least
/// one history is corrupt. Sync maps this to error 212 (bad changeset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransformError {
    /// Two list operations on one list were made on lists of different sizes.
    PriorSizeMismatch {
        /// Prior size of the local operation.
        left: u32,
        /// Prior size of the incoming operation.
        right: u32,
    },
    /// Two schema instructions define one table or column differently.
    SchemaMismatch {
        /// What differs.
        what: String,
    },
    /// An instruction refers to an intern string its changeset does not define.
    UndefinedString {
        /// The undefined index.
        index: u32,
    },
    /// A list instruction's index is out of range for the list it names: an insert's index
    /// above its prior size, or its prior size at `u32::MAX` (the list could not grow); an
    /// erase's, a set's or a move's index (or target) at or above its prior size; or a path
    /// step at index `u32::MAX`, which no list holds. Applying it would be refused too
    /// (`state::ApplyError::BadChangeset`); the merge refuses it first, since its index
    /// arithmetic is in `u32`.
    ListIndexOutOfRange {
        /// The index.
        index: u32,
        /// The list's size the instruction states (`None` for a step of a path).
        prior_size: Option<u32>,
    },
}

impl fmt::Display for TransformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransformError::PriorSizeMismatch { left, right } => write!(
                f,
                "concurrent list operations disagree about the list's size ({left} here, {right} \
                 incoming)"
            ),
            TransformError::SchemaMismatch { what } => write!(f, "schema mismatch: {what}"),
            TransformError::ListIndexOutOfRange {
                index,
                prior_size: Some(size),
            } => write!(
                f,
                "list index {index} is out of range for a list of {size} elements (an insert's \
                 index may be the size, in a list below 4294967295 elements)"
            ),
            TransformError::ListIndexOutOfRange {
                index,
                prior_size: None,
            } => write!(f, "path step at list index {index}, past any list's end"),
            TransformError::UndefinedString { index } => {
                write!(f, "instruction uses undefined intern string {index}")
            }
        }
    }
}

impl std::error::Error for TransformError {}

/// Transforms concurrent changesets against each other, in place.
///
/// `local` are this peer's changesets, in order, already applied here; `incoming` are the
/// remote peer's, in order, all made without knowledge of any of `local`. Afterwards
/// `incoming` can be applied here after `local`, and each `local[i]` is its reciprocal: what
/// the remote peer must apply after its `incoming` to reach the same state.
///
/// On error both slices are unchanged.
pub fn transform(
    local: &mut [Changeset],
    incoming: &mut [Changeset],
) -> Result<(), TransformError> {
    // `merge` changes nothing on error: it writes the results back only after every pair.
    merge::merge(local, incoming)
}

/// [`transform`] without conflict groups: every pair of instructions is compared. Same
/// results, quadratic cost; only for benchmarks, as the baseline the index is measured against.
#[doc(hidden)]
pub fn transform_unindexed(
    local: &mut [Changeset],
    incoming: &mut [Changeset],
) -> Result<(), TransformError> {
    merge::merge_with(local, incoming, false)
}
