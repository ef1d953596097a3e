//! Reciprocal history: the transformed form of this peer's changesets as one remote peer
//! will see them.
//!
//! When a changeset arrives from the remote peer, it is concurrent with the local changesets
//! the remote had not integrated when it was made. It is transformed against them, and they
//! are transformed against it; the transformed local changesets are what the *next* incoming
//! changeset from that peer must be merged with. This type stores those transformed forms,
//! keyed by local version, and forgets them once the remote peer has integrated them.

use std::collections::BTreeMap;

use super::{merge, MergeReach, TransformError};
use crate::changeset::Changeset;

/// Transformed forms of local changesets, for one remote peer.
#[derive(Clone, Debug, Default)]
pub struct ReciprocalHistory {
    transformed: BTreeMap<u64, Changeset>,
}

impl ReciprocalHistory {
    /// An empty reciprocal history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Transforms `incoming` (changesets from the remote peer, in order, all concurrent with
    /// every changeset of `concurrent`) so that it applies after `concurrent`, and records the
    /// transformed form of each concurrent local changeset.
    ///
    /// `concurrent` holds the original local changesets in version order (each with
    /// `meta.version` set); where this history holds a transformed form for a version, that
    /// form is used instead. On error nothing is changed.
    pub fn integrate(
        &mut self,
        incoming: &mut [Changeset],
        concurrent: &[&Changeset],
    ) -> Result<(), TransformError> {
        if concurrent.is_empty() {
            // Nothing the peer did not know of: the incoming changesets apply as they are.
            return Ok(());
        }
        let mut local: Vec<Changeset> = concurrent
            .iter()
            .map(|c| match self.transformed.get(&c.meta.version) {
                Some(t) => t.clone(),
                None => (*c).clone(),
            })
            .collect();
        let mut remote = incoming.to_vec();
        merge::merge(&mut local, &mut remote)?;
        for cs in local {
            self.transformed.insert(cs.meta.version, cs);
        }
        incoming.clone_from_slice(&remote);
        Ok(())
    }

    /// Whether `local` (an original local changeset concurrent with the incoming changesets
    /// whose reach is `incoming`, [`MergeReach::of`]) must be passed to
    /// [`integrate`](Self::integrate) with them: false when the merge would change neither,
    /// because no instruction of the two sides can meet in a conflict group
    /// ([`MergeReach::meets`], against the recorded transformed form of `local`'s version
    /// where there is one). Leaving such a changeset out is exact and records nothing for it.
    /// Build the reach once per batch of incoming changesets: each call is then linear in the
    /// size of `local` alone.
    ///
    /// It stays exact when the reach was built before the incoming changesets were merged with
    /// earlier concurrent changesets (so that a caller can merge them in batches): merging only
    /// discards and rewrites instructions on the objects they address, except that erasing a
    /// table adds erasures of the columns linking to it. So while any incoming changeset
    /// erases a table, everything is merged.
    pub fn needs_merge(&self, incoming: &MergeReach, local: &Changeset) -> bool {
        let form = self.transformed.get(&local.meta.version).unwrap_or(local);
        incoming.erases_table() || incoming.meets(form)
    }

    /// Records a transformed form (when loading a persisted reciprocal history).
    pub fn set(&mut self, changeset: Changeset) {
        self.transformed.insert(changeset.meta.version, changeset);
    }

    /// Every recorded form, by version.
    pub fn iter(&self) -> impl Iterator<Item = &Changeset> {
        self.transformed.values()
    }

    /// The transformed form of local `version`, if one is recorded.
    pub fn get(&self, version: u64) -> Option<&Changeset> {
        self.transformed.get(&version)
    }

    /// Drops the forms of versions up to and including `version`: the remote peer has
    /// integrated them and no later incoming changeset can be concurrent with them.
    pub fn forget_through(&mut self, version: u64) {
        match version.checked_add(1) {
            Some(next) => self.transformed = self.transformed.split_off(&next),
            None => self.transformed.clear(),
        }
    }

    /// Number of recorded forms.
    pub fn len(&self) -> usize {
        self.transformed.len()
    }

    /// Whether no form is recorded.
    pub fn is_empty(&self) -> bool {
        self.transformed.is_empty()
    }
}
